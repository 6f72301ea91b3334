//! Golden files: residual files written by earlier versions of resid, with
//! their base and the sha256 of what they rebuild (`tests/golden/*/manifest.json`).
//! Every one must decode to the same bytes forever; every error file must be
//! refused with its message.

use std::path::{Path, PathBuf};

use resid_codec::{decode_tensor, unpack, ResidFile};
use resid_io::Checkpoint;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn golden(version: &str) -> (PathBuf, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(version);
    let m = std::fs::read(dir.join("manifest.json")).unwrap();
    (dir, serde_json::from_slice(&m).unwrap())
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn decodes_byte_identically(version: &str) {
    let (dir, m) = golden(version);
    let cases = m["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    for c in cases {
        let file = dir.join(c["file"].as_str().unwrap());
        let base = Checkpoint::open(&dir.join(c["base"].as_str().unwrap())).unwrap();
        let out = tmp.path().join(c["file"].as_str().unwrap());
        unpack(&base, &file, &out).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        match c.get("outputs") {
            // A model folder: every file it holds.
            Some(outputs) => {
                for (rel, want) in outputs.as_object().unwrap() {
                    let got = sha(&std::fs::read(out.join(rel)).unwrap());
                    assert_eq!(&got, want, "{} {rel}", file.display());
                }
            }
            None => {
                let got = sha(&std::fs::read(&out).unwrap());
                assert_eq!(got, c["rebuilt_sha256"], "{}", file.display());
            }
        }
        // Each tensor alone, through the single-tensor decoder.
        let rf = ResidFile::open(&file).unwrap();
        let want = c["tensor_sha256"].as_object().unwrap();
        assert_eq!(rf.header.tensors.len(), want.len());
        for (ti, t) in rf.header.tensors.iter().enumerate() {
            let bytes = decode_tensor(&rf, &base, ti).unwrap();
            assert_eq!(sha(&bytes), want[&t.name], "{} {}", file.display(), t.name);
        }
    }
}

fn errors_are_refused(version: &str) {
    let (dir, m) = golden(version);
    let errors = m["errors"].as_array().unwrap();
    assert!(!errors.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    for e in errors {
        let file = dir.join(e["file"].as_str().unwrap());
        let base = Checkpoint::open(&dir.join(e["base"].as_str().unwrap())).unwrap();
        let out = tmp.path().join("out.safetensors");
        let err = unpack(&base, &file, &out)
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", file.display()))
            .to_string();
        let want = e["error"].as_str().unwrap();
        assert!(
            err.contains(want),
            "{}: '{err}' lacks '{want}'",
            file.display()
        );
        assert!(
            err.contains(file.to_str().unwrap()),
            "{err} does not name the file"
        );
        assert!(!out.exists());
    }
}

#[test]
fn version_1_files_decode_byte_identically() {
    decodes_byte_identically("v1");
}

#[test]
fn version_1_error_files_are_refused_with_their_message() {
    errors_are_refused("v1");
}

#[test]
fn version_2_files_decode_byte_identically() {
    decodes_byte_identically("v2");
}

#[test]
fn version_2_error_files_are_refused_with_their_message() {
    errors_are_refused("v2");
}

/// A file written by the Python `safetensors` library (tests/golden/v2/py,
/// its own key order, tensor order and metadata) comes back byte-identical
/// from a lossless pack of today's writer, beside the folder's other files.
#[test]
fn a_python_safetensors_folder_is_rebuilt_byte_identically() {
    let (dir, _) = golden("v2");
    let py = dir.join("py");
    let base = Checkpoint::open(&py.join("base.safetensors")).unwrap();
    let trained = Checkpoint::open(&py.join("trained")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("x.resid");
    resid_codec::pack(&base, &trained, &f, &resid_codec::PackOptions::default()).unwrap();
    let out = tmp.path().join("out");
    unpack(&base, &f, &out).unwrap();
    let mut n = 0;
    for e in walk(&py.join("trained")) {
        let rel = e.strip_prefix(py.join("trained")).unwrap();
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            std::fs::read(&e).unwrap(),
            "{}",
            rel.display()
        );
        n += 1;
    }
    assert_eq!(n, 5);
    assert_eq!(walk(&out).len(), n, "nothing more is written");
    let v = resid_codec::verify(&base, &f, Some(&trained), 1 << 20, &|_| {}).unwrap();
    assert_eq!((v.bit_exact, v.original_files, v.stored_files), (5, 1, 4));
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
