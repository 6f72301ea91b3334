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

use common::{bin, exit, fails_with, golden, ok, run, s, small_pair, tree};
use resid::codec::container::{header_json, replace_header};

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

/// The golden folder file with its stored `tokenizer.json` renamed to
/// `name` (the other names as they were, checksums fixed up).
fn folder_file_naming(dir: &Path, name: &str) -> PathBuf {
    let good = std::fs::read(golden("lossless-folder.resid")).unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&header_json(&good).unwrap()).unwrap();
    let f = h["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == "tokenizer.json")
        .unwrap();
    f["path"] = serde_json::json!(name);
    let p = dir.join("named.resid");
    std::fs::write(&p, replace_header(&good, &serde_json::to_vec(&h).unwrap())).unwrap();
    p
}

#[test]
fn every_stored_name_leaving_or_clashing_in_the_folder_is_refused_with_nothing_written() {
    // FORMAT.md 2.4's refusals, one name each, through the binary.
    let cases = [
        ("/x", "absolute path"),
        ("", "empty name"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("./x", "'..' or '.' component"),
        ("a/../../x", "'..' or '.' component"),
        (
            "a\\..\\x",
            "backslash, NUL, ':' or control character in the name",
        ),
        (
            "C:x",
            "backslash, NUL, ':' or control character in the name",
        ),
        (
            "x\ny",
            "backslash, NUL, ':' or control character in the name",
        ),
        (
            "CONFIG.JSON",
            "names the same file as another entry (names compared ignoring ASCII case)",
        ),
        (
            "Model.safetensors",
            "names a checkpoint shard or a folder holding a stored file",
        ),
        // Reported on the entry that lies inside it.
        (
            "1_pooling",
            "names a checkpoint shard or a folder holding a stored file",
        ),
        (
            "model.safetensors/x",
            "names a checkpoint shard or a folder holding a stored file",
        ),
    ];
    let base = golden("py/base.safetensors");
    for (name, problem) in cases {
        let d = tempfile::tempdir().unwrap();
        let f = folder_file_naming(d.path(), name);
        std::fs::create_dir(d.path().join("box")).unwrap();
        let out = d.path().join("box").join("out");
        let before = tree(d.path());
        let e = fails_with(
            &run(&["unpack", "--base", s(&base), s(&f), "-o", s(&out), "-q"]),
            exit::MISMATCH,
        );
        let named = if name == "1_pooling" {
            "1_Pooling/config.json"
        } else {
            name
        };
        let want = format!("named.resid: stored file '{named}': {problem}");
        assert!(e.contains(&want), "{name:?}: {e}");
        assert_eq!(tree(d.path()), before, "{name:?}: something was written");
    }
}

/// Runs the binary, killed after a minute: a pipe opened for writing with
/// no reader would block forever.
fn run_bounded(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(60) {
            c.kill().unwrap();
            panic!("resid {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

#[test]
fn a_symlink_or_pipe_in_the_output_folder_is_refused_even_when_forced() {
    let base = golden("py/base.safetensors");
    let f = golden("lossless-folder.resid");
    for (what, path, kind) in [
        ("symlink", "1_Pooling", "symlink"),
        ("symlinked file", "config.json", "symlink"),
        ("pipe", "config.json", "device, pipe or socket"),
        (
            "pipe as a shard",
            "model.safetensors",
            "device, pipe or socket",
        ),
    ] {
        for force in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let (out, elsewhere) = (d.path().join("out"), d.path().join("elsewhere"));
            std::fs::create_dir(&out).unwrap();
            std::fs::create_dir(&elsewhere).unwrap();
            let p = out.join(path);
            if what.starts_with("pipe") {
                let c = std::ffi::CString::new(s(&p)).unwrap();
                // SAFETY: a valid C string; mkfifo only creates the node.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            } else {
                let target = if path == "1_Pooling" {
                    elsewhere.clone()
                } else {
                    elsewhere.join("c")
                };
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
            let before = tree(d.path());
            let mut args = vec!["unpack", "--base", s(&base), s(&f), "-o", s(&out), "-q"];
            if force {
                args.push("--force");
            }
            let e = fails_with(&run_bounded(&args), exit::USAGE);
            let want = format!("{}: a {kind} is in the way", p.display());
            assert!(e.contains(&want), "{what} (force {force}): {e}");
            assert!(!e.contains("--force"), "{e}: no hint that cannot help");
            assert_eq!(tree(d.path()), before, "{what} (force {force})");
        }
    }
}

#[test]
fn a_stored_file_whose_block_expands_past_its_size_is_refused_early() {
    // tokenizer.json's block replaced by one zstd frame of 1 GiB of zeros
    // (about 40 KB), its size and sha256 left as they were: the stream
    // stops one byte past the declared size, and nothing is left behind.
    let good = std::fs::read(golden("lossless-folder.resid")).unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&header_json(&good).unwrap()).unwrap();
    let mut bomb = vec![2u8]; // FORMAT.md 4.4: kind 2, then the frame
    bomb.extend(
        zstd::stream::encode_all(std::io::Read::take(std::io::repeat(0), 1 << 30), 3).unwrap(),
    );
    let (body, blocks) = resid::codec::container::append_blocks(&good, &[&bomb]);
    let f = h["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == "tokenizer.json")
        .unwrap();
    let size = f["size"].as_u64().unwrap();
    f["block"] = serde_json::json!(resid::codec::container::Block {
        n: size,
        ..blocks[0].clone()
    });
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("bomb.resid");
    std::fs::write(
        &file,
        replace_header(&body, &serde_json::to_vec(&h).unwrap()),
    )
    .unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() < 1 << 20);
    let out = d.path().join("out");
    let before = tree(d.path());
    let base = golden("py/base.safetensors");
    let e = fails_with(
        &run(&["unpack", "--base", s(&base), s(&file), "-o", s(&out), "-q"]),
        exit::MISMATCH,
    );
    let want = format!(
        "stored file 'tokenizer.json': decodes to {} bytes, the header says {size}",
        size + 1
    );
    assert!(e.contains(&want), "{e}");
    assert_eq!(tree(d.path()), before);
}
