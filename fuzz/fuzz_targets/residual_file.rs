//! Any bytes given to the residual-file reader give a file (then decoded,
//! tensor by tensor, against a fixed base) or an error: never a panic, a
//! hang, or an allocation beyond what the file's size and the base allow.
//!
//! The reader maps files, so each input is written to a scratch file first.
//! The base is the one the seeds in `fuzz/seeds/residual_file/` were packed
//! against, so mutated seeds get past the base fingerprints into decoding.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use resid_codec::ResidFile;
use resid_io::Checkpoint;

static BASE: &[u8] = include_bytes!("../seeds/residual_file_inputs/base.safetensors");

struct Env {
    input: PathBuf,
    base: Checkpoint,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("resid-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let bp = dir.join("base.safetensors");
        std::fs::write(&bp, BASE).expect("base written");
        Env {
            input: dir.join("input.resid"),
            base: Checkpoint::open(&bp).expect("base opens"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    std::fs::write(&e.input, data).expect("scratch write");
    let _ = resid_codec::inspect(&e.input);
    if let Ok(rf) = ResidFile::open(&e.input) {
        for ti in 0..rf.header.tensors.len() {
            let _ = resid_codec::decode_tensor(&rf, &e.base, ti);
        }
    }
});
