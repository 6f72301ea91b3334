//! `resid unpack --tensors GLOB`: only the matching tensors, bit-exact, in
//! one safetensors file; a selection that matches nothing, or an output that
//! exists, is refused with nothing written.

mod common;

use std::path::Path;
use std::process::Output;

use common::{fails_with, ok, packed_pair, run, s};

fn tensor(path: &std::path::Path, name: &str) -> Option<(Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).ok()?;
    Some((t.shape().to_vec(), t.data().to_vec()))
}

/// `resid unpack --base b f -o out` with `extra` arguments after it.
fn unpack(b: &Path, f: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["unpack", "--base", s(b), s(f), "-o", s(out)];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn selected_tensors_are_rebuilt_alone_and_bit_exact() {
    let d = tempfile::tempdir().unwrap();
    let (b, t, f) = packed_pair(d.path(), 3);
    let out = d.path().join("w.safetensors");
    ok(&unpack(&b, &f, &out, &["--tensors", "w*", "-q"]));
    assert_eq!(tensor(&out, "w"), tensor(&t, "w"));
    assert_eq!(tensor(&out, "bias"), None, "bias was not asked for");
    // Two globs select both.
    let both = d.path().join("both.safetensors");
    ok(&unpack(
        &b,
        &f,
        &both,
        &["--tensors", "w", "--tensors", "b?as", "-q"],
    ));
    assert_eq!(tensor(&both, "bias"), tensor(&t, "bias"));
    assert_eq!(tensor(&both, "w"), tensor(&t, "w"));
}

#[test]
fn no_match_and_existing_output_are_refused_with_nothing_written() {
    let d = tempfile::tempdir().unwrap();
    let (b, t, f) = packed_pair(d.path(), 4);
    let out = d.path().join("none.safetensors");
    let e = fails_with(&unpack(&b, &f, &out, &["--tensors", "nope*"]), 2);
    assert!(e.contains("no tensor of this residual file matches"), "{e}");
    assert!(!out.exists());
    let e = fails_with(&unpack(&b, &f, &out, &["--tensors", "[w"]), 2);
    assert!(e.contains("--tensors '[w'"), "{e}");
    // An existing output is kept unless --force.
    std::fs::write(&out, b"mine").unwrap();
    let e = fails_with(&unpack(&b, &f, &out, &["--tensors", "w"]), 2);
    assert!(e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    ok(&unpack(&b, &f, &out, &["--tensors", "w", "--force", "-q"]));
    assert_eq!(tensor(&out, "w"), tensor(&t, "w"));
    let mut left: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "base.safetensors",
            "none.safetensors",
            "r.resid",
            "trained.safetensors"
        ],
        "no temporary left"
    );
}
