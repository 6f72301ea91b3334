//! Helpers every integration test uses: the real binary, run with arguments,
//! and the checks on its exit. (Each test file compiles this module on its
//! own, so a file may leave some of it unused.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `resid` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_resid")
}

/// Runs the binary with `args` and collects its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("runs resid")
}

/// Runs the binary in `dir` with the Hugging Face cache variables cleared,
/// then `env` set.
pub fn run_env(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.current_dir(dir).args(args);
    for k in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("runs resid")
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a zero exit, showing what the binary printed otherwise.
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The documented exit codes (README.md, `resid --help`), written out here
/// rather than taken from resid-io so that a change in the mapping fails.
pub mod exit {
    pub const USAGE: i32 = 2;
    pub const BAD_INPUT: i32 = 3;
    pub const MISMATCH: i32 = 4;
    pub const IO: i32 = 5;
}

/// Asserts exit status `code`, no panic, and a `resid: error:` line on stderr;
/// returns stderr.
pub fn fails_with(o: &Output, code: i32) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}: {e}",
        o.status
    );
    assert!(!e.contains("panicked"), "panic: {e}");
    e
}

/// Writes F32 tensors `(name, shape, values)` as a safetensors file.
pub fn write_f32(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap();
            (n.to_string(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A deterministic stream of values in [-1, 1) (an LCG), so that tests need
/// no RNG crate.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A small base / trained pair (`base.safetensors`, `trained.safetensors` in
/// `dir`): a 32x24 matrix with a dense small residual and an unchanged bias;
/// `seed` varies the base.
pub fn small_pair(dir: &Path, seed: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let w: Vec<f32> = (0..32 * 24)
        .map(|i| ((i as f32 + 1.0) * 0.618 + seed as f32).sin() * 0.1)
        .collect();
    let t: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, x)| x + ((i * 7) as f32).cos() * 1e-3)
        .collect();
    let bias: Vec<f32> = (0..24).map(|i| i as f32 * 0.01).collect();
    let (b, tr) = (
        dir.join("base.safetensors"),
        dir.join("trained.safetensors"),
    );
    write_f32(
        &b,
        &[("w", vec![32, 24], w), ("bias", vec![24], bias.clone())],
    );
    write_f32(&tr, &[("w", vec![32, 24], t), ("bias", vec![24], bias)]);
    (b, tr)
}

/// [`small_pair`] and its lossless residual file `r.resid` in `dir`:
/// `(base, trained, file)`.
pub fn packed_pair(dir: &Path, seed: u32) -> (PathBuf, PathBuf, PathBuf) {
    let (b, t) = small_pair(dir, seed);
    let f = dir.join("r.resid");
    ok(&run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&f),
        "--lossless",
        "-q",
    ]));
    (b, t, f)
}

/// A file of the codec's golden set, version 2 (`../v1/...` reaches version 1).
pub fn golden(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resid-codec/tests/golden/v2")
        .join(p)
}

/// Every path under `d`, relative, sorted (folders end in `/`).
pub fn tree(d: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut v = Vec::new();
    walk(d, d, &mut v);
    v.sort();
    v
}
