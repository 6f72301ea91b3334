//! Any bytes as a folder's `model.safetensors.index.json`, beside two valid
//! shards, give a checkpoint or an error naming the index: never a panic, a
//! hang, a read outside the folder, or an allocation beyond the input's size.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A scratch folder holding two shards (tensors `a` and `b`), made once.
fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("resid-fuzz-folder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, name) in ["a", "b"].iter().enumerate() {
            let h = format!(r#"{{"{name}":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#);
            let mut f = (h.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(h.as_bytes());
            f.extend_from_slice(&[0u8; 8]);
            std::fs::write(
                dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
                f,
            )
            .unwrap();
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    std::fs::write(dir.join("model.safetensors.index.json"), data).unwrap();
    let _ = resid_io::Checkpoint::open(dir);
});
