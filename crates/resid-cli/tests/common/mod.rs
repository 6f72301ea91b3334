//! Helpers every integration test uses: the real binary, run with arguments,
//! and the checks on its exit. (Each test file compiles this module on its
//! own, so a file may leave some of it unused.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Path of the `resid` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_resid")
}

/// Runs the binary with `args` and collects its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("runs resid")
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
