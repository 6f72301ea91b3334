//! Any bytes as a checkpoint argument (before the first NUL) and as the
//! cache's `refs/main` (after it) resolve to a snapshot inside a fixed fake
//! cache or give an error: never a panic, a hang, or a path outside the cache.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A cache with `org/name`: refs/main, one snapshot linking into blobs/.
fn cache() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let c = std::env::temp_dir().join(format!("resid-fuzz-cache-{}", std::process::id()));
        let m = c.join("models--org--name");
        std::fs::create_dir_all(m.join("refs")).unwrap();
        std::fs::create_dir_all(m.join("blobs")).unwrap();
        let snap = m.join("snapshots").join(COMMIT);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(m.join("blobs").join("f00d"), b"{}").unwrap();
        std::os::unix::fs::symlink("../../blobs/f00d", snap.join("config.json")).unwrap();
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let c = cache();
    let (arg, refs) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, COMMIT.as_bytes()),
    };
    let refs_main = c.join("models--org--name").join("refs").join("main");
    std::fs::write(&refs_main, refs).unwrap();
    let Ok(arg) = std::str::from_utf8(arg) else {
        return;
    };
    // Only repo-id-shaped arguments reach the cache; a path that exists is
    // returned as is (never opened here).
    if let Ok(resid_io::hub::Location::Hub(r)) = resid_io::hub::locate_in(Path::new(arg), Some(c)) {
        let snap = r.snapshot.canonicalize().unwrap();
        assert!(
            snap.starts_with(c.canonicalize().unwrap()),
            "{snap:?} left the cache"
        );
    }
});
