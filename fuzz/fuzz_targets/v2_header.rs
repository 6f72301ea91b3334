//! The version-2 header and files section (shared with the untrusted-files
//! issue): any bytes, taken as the decompressed JSON header of a real
//! version-2 file (a model folder with stored files and an original
//! safetensors header), give an error or a rebuild that writes only inside
//! its output folder: never a panic, a hang, an allocation beyond the
//! limits, or a file outside the box.
//!
//! Inputs whose first byte is odd are also tried as the stored (compressed)
//! header bytes themselves, which fuzzes the zstd path of FORMAT.md 1.3.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use resid_codec::container::replace_header;
use resid_io::Checkpoint;

static FILE: &[u8] =
    include_bytes!("../../crates/resid-codec/tests/golden/v2/lossless-folder.resid");
static BASE: &[u8] = include_bytes!("../../crates/resid-codec/tests/golden/v2/py/base.safetensors");

struct Env {
    root: PathBuf,
    input: PathBuf,
    base: Checkpoint,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("resid-fuzz-v2-{}", std::process::id()));
        std::fs::create_dir_all(root.join("box")).expect("scratch folder");
        let bp = root.join("base.safetensors");
        std::fs::write(&bp, BASE).expect("base written");
        Env {
            input: root.join("input.resid"),
            base: Checkpoint::open(&bp).expect("base opens"),
            root,
        }
    })
}

fn listing(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn run(e: &Env, file: &[u8]) {
    std::fs::write(&e.input, file).expect("scratch write");
    let bx = e.root.join("box");
    let before = (listing(&e.root), listing(&bx));
    let out = bx.join("out");
    let _ = resid_codec::inspect(&e.input);
    let _ = resid_codec::unpack(&e.base, &e.input, &out);
    // Nothing outside the output folder: not beside it, not above it.
    let mut after = (listing(&e.root), listing(&bx));
    after.1.retain(|n| n != "out");
    assert_eq!(after, before);
    let _ = std::fs::remove_dir_all(&out);
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    run(e, &replace_header(FILE, data));
    if data.first().is_some_and(|b| b & 1 == 1) {
        // The bytes as the stored header: replace_header compresses, so
        // splice them in by hand with a correct footer.
        let n = FILE.len();
        let hoff = u64::from_le_bytes(FILE[n - 32..n - 24].try_into().unwrap()) as usize;
        let mut f = FILE[..hoff].to_vec();
        f.extend_from_slice(data);
        f.extend_from_slice(&resid_codec::container::footer(hoff as u64, data));
        run(e, &f);
    }
});
