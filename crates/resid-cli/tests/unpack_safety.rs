//! Untrusted residual files and outputs that are already there (issue 21,
//! codec side), through the real binary: unpack never replaces a file it
//! did not create unless `--force`, refuses a rebuild that would not fit the
//! output's file system before writing anything, and concurrent packs or
//! unpacks to one output leave one complete output, never a mixture. Each
//! refusal is checked for its exit status, its message, and that nothing
//! was left behind inside or outside the output folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, exit, fails_with, ok, run, s, small_pair};
use resid::codec::container::{header_json, replace_header};

fn golden(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resid-codec/tests/golden/v2")
        .join(p)
}

/// Every path under `d`, relative, sorted (folders end in `/`).
fn tree(d: &Path) -> Vec<String> {
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

fn sha(p: &Path) -> String {
    use sha2_free::hex_sha256;
    hex_sha256(&std::fs::read(p).unwrap())
}

/// sha256 by the system's `sha256sum`, so the test does not lean on the
/// codec's own hashing.
mod sha2_free {
    pub fn hex_sha256(b: &[u8]) -> String {
        use std::io::Write;
        let mut c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        c.stdin.take().unwrap().write_all(b).unwrap();
        let o = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout)[..64].to_string()
    }
}

/// The golden model folder's expected files (manifest `outputs`).
fn folder_outputs() -> Vec<(String, String)> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden("manifest.json")).unwrap()).unwrap();
    let c = m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["file"] == "lossless-folder.resid")
        .unwrap();
    let mut v: Vec<(String, String)> = c["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

fn unpack_folder(out: &Path, extra: &[&str]) -> std::process::Output {
    let (b, f) = (
        golden("py/base.safetensors"),
        golden("lossless-folder.resid"),
    );
    let mut a = vec!["unpack", "--base", s(&b), s(&f), "-o", s(out), "-q"];
    a.extend(extra);
    run(&a)
}

fn assert_complete_folder(out: &Path) {
    for (rel, want) in folder_outputs() {
        assert_eq!(sha(&out.join(&rel)), want, "{rel}");
    }
    let files: Vec<String> = tree(out)
        .into_iter()
        .filter(|p| !p.ends_with('/'))
        .collect();
    assert_eq!(files.len(), folder_outputs().len(), "{files:?}");
}

#[test]
fn an_existing_output_file_is_kept_unless_forced() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = small_pair(d.path(), 1);
    let f = d.path().join("x.resid");
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
    let r = d.path().join("mine.safetensors");
    std::fs::write(&r, b"my own file").unwrap();
    let before = tree(d.path());
    let e = fails_with(
        &run(&["unpack", "--base", s(&b), s(&f), "-o", s(&r), "-q"]),
        exit::USAGE,
    );
    assert!(e.contains("mine.safetensors: already exists"), "{e}");
    assert!(e.contains("pass --force"), "{e}");
    assert_eq!(std::fs::read(&r).unwrap(), b"my own file");
    assert_eq!(tree(d.path()), before, "something was written");
    ok(&run(&[
        "unpack",
        "--base",
        s(&b),
        s(&f),
        "-o",
        s(&r),
        "-q",
        "--force",
    ]));
    assert_eq!(std::fs::read(&r).unwrap(), std::fs::read(&t).unwrap());
    assert_eq!(tree(d.path()), before, "a temporary was left");
}

#[test]
fn an_existing_shard_or_stored_file_in_the_output_folder_is_kept_unless_forced() {
    for existing in ["model.safetensors", "config.json", "1_Pooling/config.json"] {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let p = out.join(existing);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"mine").unwrap();
        let before = tree(d.path());
        let e = fails_with(&unpack_folder(&out, &[]), exit::USAGE);
        assert!(
            e.contains(&format!("{existing}: already exists")),
            "{existing}: {e}"
        );
        assert_eq!(tree(d.path()), before, "{existing}: something was written");
        assert_eq!(std::fs::read(&p).unwrap(), b"mine");
        ok(&unpack_folder(&out, &["--force"]));
        assert_complete_folder(&out);
    }
}

#[test]
fn a_rebuild_larger_than_the_free_space_is_refused_before_writing() {
    // A crafted header: one 'same' tensor declaring 2^44 F32 elements
    // (64 TiB), valid by every header rule; the base is never consulted.
    let good = std::fs::read(golden("lossless-f32.resid")).unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&header_json(&good).unwrap()).unwrap();
    let t = h["tensors"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["encoding"]["kind"] == "same")
        .unwrap();
    t["shape"] = serde_json::json!([1u64 << 44]);
    t["base"]["shape"] = serde_json::json!([1u64 << 44]);
    // Rebuilt in the canonical layout: no original header to agree with.
    h["trained"]["shards"][0]
        .as_object_mut()
        .unwrap()
        .remove("original");
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("huge.resid");
    std::fs::write(&f, replace_header(&good, &serde_json::to_vec(&h).unwrap())).unwrap();
    for out in [
        d.path().join("out.safetensors"),
        d.path().join("sub/out.safetensors"),
    ] {
        if out.parent().unwrap() != d.path() {
            std::fs::create_dir(out.parent().unwrap()).unwrap();
        }
        let before = tree(d.path());
        let base = golden("../v1/base-f32.safetensors");
        let e = fails_with(
            &run(&["unpack", "--base", s(&base), s(&f), "-o", s(&out), "-q"]),
            exit::IO,
        );
        let need = format!("needs {} bytes", output_bytes_of(&f));
        assert!(e.contains(&need), "{e}");
        assert!(e.contains("bytes free; nothing was written"), "{e}");
        assert!(
            e.contains(s(out.parent().unwrap())),
            "{e} does not name the file system"
        );
        assert_eq!(tree(d.path()), before);
    }
}

/// The rebuild size the header declares, as the library computes it.
fn output_bytes_of(f: &Path) -> u64 {
    let rf = resid::codec::ResidFile::open(f).unwrap();
    let n = resid::codec::pipeline::output_bytes(&rf.header);
    assert!(n > 1 << 46, "{n}");
    n
}

#[test]
fn a_stored_name_leaving_the_folder_is_refused_with_nothing_written_anywhere() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("box").join("out");
    std::fs::create_dir(d.path().join("box")).unwrap();
    let before = tree(d.path());
    let (b, f) = (
        golden("py/base.safetensors"),
        golden("error-dotdot-name.resid"),
    );
    let e = fails_with(
        &run(&["unpack", "--base", s(&b), s(&f), "-o", s(&out), "-q"]),
        exit::MISMATCH,
    );
    assert!(
        e.contains("stored file '../x': '..' or '.' component"),
        "{e}"
    );
    assert_eq!(tree(d.path()), before);
}

#[test]
fn two_unpacks_into_one_folder_leave_one_complete_output() {
    for force in [false, true] {
        for _ in 0..3 {
            let d = tempfile::tempdir().unwrap();
            let out = d.path().join("out");
            let (b, f) = (
                golden("py/base.safetensors"),
                golden("lossless-folder.resid"),
            );
            let spawn = || {
                let mut c = Command::new(bin());
                c.args(["unpack", "--base", s(&b), s(&f), "-o", s(&out), "-q"]);
                if force {
                    c.arg("--force");
                }
                c.spawn().unwrap()
            };
            let (mut x, mut y) = (spawn(), spawn());
            let (a, b2) = (x.wait().unwrap(), y.wait().unwrap());
            let wins = [a, b2].iter().filter(|s| s.success()).count();
            if force {
                assert_eq!(wins, 2);
            } else {
                // The second, run after the first under the folder lock,
                // finds the complete output and leaves it alone.
                assert_eq!(wins, 1, "{a:?} {b2:?}");
                assert!([a, b2].iter().any(|s| s.code() == Some(exit::USAGE)));
            }
            assert_complete_folder(&out);
            assert_eq!(
                tree(d.path()).iter().filter(|p| p.contains(".tmp")).count(),
                0
            );
        }
    }
}

#[test]
fn two_packs_to_one_file_leave_one_complete_file_and_readers_never_see_half() {
    let d = tempfile::tempdir().unwrap();
    // A pair large enough that a pack takes a while.
    let pair = d.path().join("pair");
    ok(&run(&[
        "synth",
        "--shape",
        "custom:2,256,256,512",
        "--out",
        s(&pair),
        "-q",
    ]));
    let (b, t) = (pair.join("base"), pair.join("trained"));
    let f = d.path().join("x.resid");
    let pack = |mode: &[&str]| {
        let mut c = Command::new(bin());
        c.args([
            "pack",
            "--base",
            s(&b),
            "--trained",
            s(&t),
            "-o",
            s(&f),
            "-q",
        ]);
        c.args(mode);
        c.spawn().unwrap()
    };
    let (mut x, mut y) = (pack(&["--lossless"]), pack(&["--bits-per-param", "1"]));
    // A reader while they write: nothing, or a whole file.
    let mut seen = (0, 0);
    loop {
        let done = x.try_wait().unwrap().is_some() && y.try_wait().unwrap().is_some();
        let o = run(&["inspect", s(&f)]);
        if o.status.success() {
            seen.1 += 1;
        } else {
            let e = fails_with(&o, exit::IO);
            assert!(
                e.contains("No such file"),
                "a reader saw a partial file: {e}"
            );
            seen.0 += 1;
        }
        if done {
            break;
        }
    }
    assert!(x.wait().unwrap().success() && y.wait().unwrap().success());
    ok(&run(&["verify", s(&f), "--base", s(&b)]));
    let left: Vec<String> = tree(d.path())
        .into_iter()
        .filter(|p| p.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    eprintln!(
        "inspect saw nothing {} times, a whole file {} times",
        seen.0, seen.1
    );
}
