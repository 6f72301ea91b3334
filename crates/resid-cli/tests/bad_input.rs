//! The bad-input suite: the real binary on damaged or hostile inputs. Each case
//! expects a non-zero exit, one line on stderr naming the file and the
//! problem, and nothing left behind at the output path (nor a temporary file
//! beside it). Cases already covered elsewhere are listed in TESTING.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{bin, exit, fails_with, ok, run, s};

/// Checks a refusal: exit status `code` (not a signal, not a panic), exactly
/// one stderr line, naming `file` and containing `problem`. Returns the line.
fn refused(o: &Output, code: i32, file: &Path, problem: &str) -> String {
    let e = fails_with(o, code);
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {e:?}");
    assert!(
        lines[0].contains(s(file)),
        "does not name {}: {e}",
        file.display()
    );
    assert!(lines[0].contains(problem), "does not say '{problem}': {e}");
    lines[0].to_string()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

/// A safetensors file from a header text and a data section.
fn raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(data);
    v
}

/// A well-formed safetensors file.
fn st(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut h = String::from("{");
    let mut data = Vec::new();
    for (i, (n, d, shape, b)) in tensors.iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        h.push_str(&format!(
            r#""{n}":{{"dtype":"{d}","shape":{shape:?},"data_offsets":[{},{}]}}"#,
            data.len(),
            data.len() + b.len()
        ));
        data.extend_from_slice(b);
    }
    h.push('}');
    raw(h.as_bytes(), &data)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vals(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * 0.618 + seed as f32).sin() * 0.1)
        .collect()
}

/// A small good base / trained pair (two F32 matrices) in `dir`.
fn pair(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let (b, t) = (
        dir.join("base.safetensors"),
        dir.join("trained.safetensors"),
    );
    let bw = vals(n * 16, 1);
    let tw: Vec<f32> = bw
        .iter()
        .enumerate()
        .map(|(i, x)| x + ((i * 7) as f32).cos() * 1e-3)
        .collect();
    let bias = vals(16, 2);
    let shape = vec![n as u64, 16];
    std::fs::write(
        &b,
        st(&[
            ("w", "F32", shape.clone(), f32s(&bw)),
            ("bias", "F32", vec![16], f32s(&bias)),
        ]),
    )
    .unwrap();
    std::fs::write(
        &t,
        st(&[
            ("w", "F32", shape, f32s(&tw)),
            ("bias", "F32", vec![16], f32s(&bias)),
        ]),
    )
    .unwrap();
    (b, t)
}

fn pack(base: &Path, trained: &Path, out: &Path, mode: &[&str]) -> Output {
    let mut a = vec![
        "pack",
        "--base",
        s(base),
        "--trained",
        s(trained),
        "-o",
        s(out),
        "-q",
    ];
    a.extend_from_slice(mode);
    run(&a)
}

fn unpack(base: &Path, file: &Path, out: &Path) -> Output {
    run(&["unpack", "--base", s(base), s(file), "-o", s(out), "-q"])
}

/// Damaged safetensors files: (name, bytes, the problem the error must state).
fn bad_checkpoints() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = st(&[("w", "F32", vec![4, 16], f32s(&vals(64, 1)))]);
    let mut past = good.clone();
    past[..8].copy_from_slice(&(good.len() as u64 * 4).to_le_bytes());
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut not_utf8 = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.to_vec();
    not_utf8[3] = 0xff;
    vec![
        ("tiny", vec![1, 2, 3], "shorter than the 8-byte header length"),
        ("truncated", good[..good.len() - 9].to_vec(), "outside"),
        ("past-end", past, "runs past the end"),
        ("huge-header", huge, "exceeds the"),
        ("not-json", raw(b"{\"w\": [1, 2", &[0; 16]), "not valid JSON"),
        ("not-utf8", raw(&not_utf8, &[0; 16]), "not UTF-8"),
        (
            "not-object",
            raw(b"[1, 2, 3]", &[0; 16]),
            "not valid JSON",
        ),
        (
            "overlap",
            raw(
                br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                &[0; 32],
            ),
            "overlaps tensor 'a'",
        ),
        (
            "outside",
            raw(
                br#"{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#,
                &[0; 16],
            ),
            "lie outside the 16-byte data section",
        ),
        (
            "backwards",
            raw(
                br#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}}"#,
                &[0; 16],
            ),
            "end before they start",
        ),
        (
            "size-mismatch",
            raw(
                br#"{"a":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            "needs 24 bytes but its offsets [0, 16] give 16",
        ),
        (
            "shape-overflow",
            raw(
                br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            "overflows",
        ),
        (
            "duplicate",
            raw(
                br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
                &[0; 32],
            ),
            "duplicate tensor name 'a'",
        ),
        (
            "unknown-dtype",
            raw(
                br#"{"a":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            "unknown dtype 'Q4_K'",
        ),
        (
            "unknown-field",
            raw(
                br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"scale":2}}"#,
                &[0; 16],
            ),
            "unknown field",
        ),
    ]
}

#[test]
fn damaged_checkpoints_are_refused_by_pack_unpack_and_analyze() {
    for (name, bytes, problem) in bad_checkpoints() {
        let d = tempfile::tempdir().unwrap();
        let (b, t) = pair(d.path(), 4);
        let bad = d.path().join(format!("{name}.safetensors"));
        std::fs::write(&bad, &bytes).unwrap();
        let before = listing(d.path());
        let out = d.path().join("out.resid");
        let json = d.path().join("out.json");
        // As the trained side, then as the base side of pack.
        refused(
            &pack(&b, &bad, &out, &["--lossless"]),
            exit::BAD_INPUT,
            &bad,
            problem,
        );
        refused(
            &pack(&bad, &t, &out, &["--keep", "0.5"]),
            exit::BAD_INPUT,
            &bad,
            problem,
        );
        // As either side of analyze.
        for (x, y) in [(&b, &bad), (&bad, &t)] {
            let o = run(&[
                "analyze",
                "--base",
                s(x),
                "--trained",
                s(y),
                "--json",
                s(&json),
                "-q",
            ]);
            refused(&o, exit::BAD_INPUT, &bad, problem);
        }
        // As the base of an unpack (of a good file).
        let good = d.path().join("good.resid");
        ok(&pack(&b, &t, &good, &["--lossless"]));
        let rebuilt = d.path().join("rebuilt.safetensors");
        refused(
            &unpack(&bad, &good, &rebuilt),
            exit::BAD_INPUT,
            &bad,
            problem,
        );
        std::fs::remove_file(&good).unwrap();
        assert_eq!(listing(d.path()), before, "{name}: files left behind");
    }
}

#[test]
fn nonfinite_values_pack_only_with_allow_nonfinite_and_stay_bit_exact() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = pair(d.path(), 4);
    let t = d.path().join("nan.safetensors");
    let mut w = vals(64, 1);
    w[3] = f32::NAN;
    w[40] = f32::NEG_INFINITY;
    let bias = vals(16, 2);
    std::fs::write(
        &t,
        st(&[
            ("w", "F32", vec![4, 16], f32s(&w)),
            ("bias", "F32", vec![16], f32s(&bias)),
        ]),
    )
    .unwrap();
    let out = d.path().join("nan.resid");
    for mode in [&["--lossless"][..], &["--max-error", "0.1"][..]] {
        let e = refused(&pack(&b, &t, &out, mode), exit::BAD_INPUT, &t, "NaN or Inf");
        assert!(e.contains("tensor 'w'"), "{e}");
        assert!(!out.exists());
    }
    ok(&pack(
        &b,
        &t,
        &out,
        &["--max-error", "0.1", "--allow-nonfinite"],
    ));
    let r = d.path().join("r.safetensors");
    ok(&unpack(&b, &out, &r));
    // The non-finite tensor went lossless: its bytes come back exactly (NaN
    // payload included), so the whole data section equals the trained one.
    let got = std::fs::read(&r).unwrap();
    let want = std::fs::read(&t).unwrap();
    assert_eq!(&got[got.len() - 320..], &want[want.len() - 320..]);
}

/// The blocks of a residual file, from its header: (offset, len).
fn blocks(file: &[u8]) -> Vec<(usize, usize)> {
    let json = resid::codec::container::header_json(file).unwrap();
    let h: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<(usize, usize)>) {
        match v {
            serde_json::Value::Object(m) => {
                if let (Some(o), Some(l), Some(_)) = (m.get("offset"), m.get("len"), m.get("xxh3"))
                {
                    out.push((o.as_u64().unwrap() as usize, l.as_u64().unwrap() as usize));
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&h, &mut out);
    out
}

#[test]
fn any_flipped_bit_in_a_residual_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 64);
    for mode in [&["--lossless"][..], &["--keep", "0.3"][..]] {
        let f = d.path().join("x.resid");
        ok(&pack(&b, &t, &f, mode));
        let good = std::fs::read(&f).unwrap();
        let bl = blocks(&good);
        assert!(!bl.is_empty(), "{mode:?}: {bl:?}");
        // Every block (first, middle and last byte), then positions spread
        // over the preamble, the header and the footer.
        let mut pos: Vec<usize> = bl
            .iter()
            .flat_map(|&(o, l)| [o, o + l / 2, o + l - 1])
            .collect();
        let n = good.len();
        pos.extend([0, 7, 8, 11, 12, 15, n - 32, n - 25, n - 24, n - 17, n - 16]);
        pos.extend([n - 9, n - 8, n - 1]);
        let hoff = u64::from_le_bytes(good[n - 32..n - 24].try_into().unwrap()) as usize;
        pos.extend((0..8).map(|k| hoff + k * (n - 32 - hoff) / 8));
        let g = d.path().join("flip.resid");
        let out = d.path().join("out.safetensors");
        std::fs::write(&g, &good).unwrap();
        let before = listing(d.path());
        for (k, &p) in pos.iter().enumerate() {
            let mut bad = good.clone();
            bad[p] ^= 1 << (k % 8);
            std::fs::write(&g, &bad).unwrap();
            // A flip in the magic makes it no residual file (bad input).
            let code = if p < 8 {
                exit::BAD_INPUT
            } else {
                exit::MISMATCH
            };
            let e = refused(&unpack(&b, &g, &out), code, &g, "");
            let region = if p < 16 {
                "preamble"
            } else if p < hoff {
                "block"
            } else {
                "header or footer"
            };
            assert!(
                [
                    "checksum",
                    "not a residual file",
                    "version",
                    "flags",
                    "truncated",
                    "header"
                ]
                .iter()
                .any(|w| e.contains(w)),
                "{mode:?} byte {p} ({region}): {e}"
            );
            if region == "block" {
                assert!(e.contains("tensor '") && e.contains("checksum"), "{e}");
            }
            assert_eq!(listing(d.path()), before, "byte {p}: output left behind");
        }
    }
}

#[test]
fn truncated_residual_files_are_refused_by_inspect_and_unpack() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 16);
    let f = d.path().join("x.resid");
    ok(&pack(&b, &t, &f, &["--lossless"]));
    let good = std::fs::read(&f).unwrap();
    let n = good.len();
    let g = d.path().join("cut.resid");
    let out = d.path().join("out.safetensors");
    for len in [0, 1, 8, 16, 40, 47, 48, n / 2, n - 33, n - 32, n - 1] {
        std::fs::write(&g, &good[..len]).unwrap();
        // Without its 8-byte magic it is not a residual file (bad input);
        // with it, a damaged one.
        let (problem, code) = if len < 8 {
            ("not a residual file", exit::BAD_INPUT)
        } else {
            ("truncated", exit::MISMATCH)
        };
        refused(&run(&["inspect", s(&g)]), code, &g, problem);
        refused(&unpack(&b, &g, &out), code, &g, problem);
        assert!(!out.exists());
    }
    // Extra bytes after the footer: not a whole file either.
    let mut long = good.clone();
    long.extend_from_slice(&[0; 5]);
    std::fs::write(&g, &long).unwrap();
    refused(
        &run(&["inspect", s(&g)]),
        exit::MISMATCH,
        &g,
        "truncated or damaged",
    );
}

#[test]
fn output_in_a_missing_folder_is_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 4);
    let missing = d.path().join("no-such-folder");
    let out = missing.join("x.resid");
    refused(&pack(&b, &t, &out, &["--lossless"]), exit::IO, &missing, "");
    let f = d.path().join("x.resid");
    ok(&pack(&b, &t, &f, &["--lossless"]));
    let r = missing.join("r.safetensors");
    refused(&unpack(&b, &f, &r), exit::IO, &missing, "");
    assert!(!missing.exists());
}

/// Runs resid under a file-size limit of `kb` KiB with SIGXFSZ ignored, so
/// that a write past the limit fails with EFBIG as it would on a full disk.
fn limited(kb: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            kb * 2
        ))
        .arg(bin())
        .args(args)
        .output()
        .expect("sh runs")
}

#[test]
fn a_full_file_system_fails_cleanly_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    // 64 KiB of parameters: the lossless file cannot fit in 16 KiB.
    let (b, t) = pair(d.path(), 1024);
    let before = listing(d.path());
    let out = d.path().join("x.resid");
    let o = limited(
        16,
        &[
            "pack",
            "--base",
            s(&b),
            "--trained",
            s(&t),
            "-o",
            s(&out),
            "--lossless",
            "-q",
        ],
    );
    refused(&o, exit::IO, &out, "File too large");
    assert_eq!(listing(d.path()), before, "partial file left behind");
    // Unpack onto a full disk: the rebuilt file is 64 KiB.
    ok(&pack(&b, &t, &out, &["--lossless"]));
    let before = listing(d.path());
    let r = d.path().join("r.safetensors");
    let o = limited(16, &["unpack", "--base", s(&b), s(&out), "-o", s(&r), "-q"]);
    refused(&o, exit::IO, &r, "File too large");
    assert_eq!(listing(d.path()), before, "partial file left behind");
}

#[test]
fn an_interrupted_pack_leaves_no_file_taken_for_whole() {
    let d = tempfile::tempdir().unwrap();
    // 4 MiB of parameters, so that a pack takes long enough to be killed.
    let (b, t) = pair(d.path(), 1 << 16);
    let out = d.path().join("x.resid");
    ok(&pack(&b, &t, &out, &["--lossless"]));
    let reference = std::fs::read(&out).unwrap();
    let mut interrupted = 0;
    for delay_ms in [0u64, 5, 20, 50, 100, 200, 400] {
        let _ = std::fs::remove_file(&out);
        let mut child = Command::new(bin())
            .args([
                "pack",
                "--base",
                s(&b),
                "--trained",
                s(&t),
                "-o",
                s(&out),
                "--lossless",
                "-q",
                "--threads",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no clean-up code runs.
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
            assert!(
                !out.exists(),
                "killed after {delay_ms} ms, yet {out:?} exists"
            );
        }
        // Whatever the kill left (a hidden temporary beside the output), no
        // file there is accepted as a residual file.
        for name in listing(d.path()) {
            let p = d.path().join(&name);
            if name.ends_with(".resid") {
                ok(&run(&["inspect", s(&p)]));
            } else if name.ends_with(".tmp") {
                // Killed between the last write and the rename, a temporary
                // may be whole; then it must equal a finished pack's bytes.
                let o = run(&["inspect", s(&p)]);
                if o.status.success() {
                    assert_eq!(std::fs::read(&p).unwrap(), reference, "{name}");
                } else {
                    let no_magic = std::fs::read(&p).unwrap().len() < 8
                        || !reference.starts_with(&std::fs::read(&p).unwrap()[..8]);
                    let code = if no_magic {
                        exit::BAD_INPUT
                    } else {
                        exit::MISMATCH
                    };
                    let e = refused(&o, code, &p, "");
                    assert!(
                        e.contains("truncated") || e.contains("not a residual file"),
                        "{e}"
                    );
                }
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    assert!(interrupted > 0, "no pack was interrupted");
}

/// Rewrites a residual file's header through `edit`, with a correct header
/// checksum and footer, so that only the header's own checks can refuse it.
fn with_header(file: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let json = resid::codec::container::header_json(file).unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&json).unwrap();
    edit(&mut h);
    resid::codec::container::replace_header(file, &serde_json::to_vec(&h).unwrap())
}

/// A crafted lossy tensor without a base and with no blocks at all once made
/// unpack allocate its claimed 4 TiB (an abort) or look up a base tensor that
/// is not there (a panic). Found while writing the residual_file fuzz target.
#[test]
fn a_lossy_tensor_without_its_base_is_refused_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 16);
    let f = d.path().join("x.resid");
    ok(&pack(&b, &t, &f, &["--keep", "0.5"]));
    let good = std::fs::read(&f).unwrap();
    let g = d.path().join("crafted.resid");
    let out = d.path().join("out.safetensors");
    let huge = |h: &mut serde_json::Value| {
        let w = h["tensors"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|x| x["name"] == "w")
            .unwrap();
        w["shape"] = serde_json::json!([1u64 << 20, 1u64 << 20]);
        let e = &mut w["encoding"];
        assert_eq!(e["kind"], "lossy", "{e}");
        e["rows"] = serde_json::json!(1u64 << 20);
        e["cols"] = serde_json::json!(1u64 << 20);
        e["rank"] = serde_json::json!(0);
        e["factors"] = serde_json::json!([]);
        e["remainder"] = serde_json::json!([]);
        e["escapes"] = serde_json::Value::Null;
    };
    for base_null in [true, false] {
        std::fs::write(
            &g,
            with_header(&good, |h| {
                huge(h);
                if base_null {
                    let w = h["tensors"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .find(|x| x["name"] == "w")
                        .unwrap();
                    w["base"] = serde_json::Value::Null;
                }
            }),
        )
        .unwrap();
        let e = refused(&unpack(&b, &g, &out), exit::MISMATCH, &g, "tensor 'w'");
        assert!(e.contains("base"), "{e}");
        refused(&run(&["inspect", s(&g)]), exit::MISMATCH, &g, "tensor 'w'");
        assert!(!out.exists());
    }
    // The same edit with the true shape passes the header checks: the
    // refusal above is about the base, not about the rewriting.
    std::fs::write(&g, with_header(&good, |_| {})).unwrap();
    ok(&run(&["inspect", s(&g)]));
}

/// A lying index: its name, weight map, exit status and message.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    i32,
    &'static str,
);

/// A sharded folder: `a` in shard 1, `b` in shard 2, and an index whose
/// weight map is `map` (tensor -> shard file name).
fn sharded(dir: &Path, map: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let one = dir.join("model-00001-of-00002.safetensors");
    let two = dir.join("model-00002-of-00002.safetensors");
    std::fs::write(&one, st(&[("a", "F32", vec![4, 4], f32s(&vals(16, 1)))])).unwrap();
    std::fs::write(&two, st(&[("b", "F32", vec![4, 4], f32s(&vals(16, 2)))])).unwrap();
    let m: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": m});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_folders_whose_index_lies_are_refused_naming_the_file() {
    const ONE: &str = "model-00001-of-00002.safetensors";
    const TWO: &str = "model-00002-of-00002.safetensors";
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good");
    sharded(&good, &[("a", ONE), ("b", TWO)]);
    let out = d.path().join("x.resid");
    ok(&pack(&good, &good, &out, &["--lossless"]));
    std::fs::remove_file(&out).unwrap();
    let index = |dir: &Path| dir.join("model.safetensors.index.json");
    // (case, weight map, exit status, what the message says)
    let cases: [Case; 5] = [
        (
            "outside",
            vec![("a", "../x.safetensors"), ("b", TWO)],
            exit::BAD_INPUT,
            "not a plain file name",
        ),
        (
            "missing",
            vec![("a", ONE), ("b", "model-00003-of-00002.safetensors")],
            exit::IO,
            "",
        ),
        (
            "moved",
            vec![("a", TWO), ("b", ONE)],
            exit::BAD_INPUT,
            "is mapped to",
        ),
        (
            "absent",
            vec![("a", ONE), ("b", TWO), ("c", TWO)],
            exit::BAD_INPUT,
            "does not hold it",
        ),
        (
            "unlisted",
            vec![("a", ONE), ("x", TWO)],
            exit::BAD_INPUT,
            "missing from the weight map",
        ),
    ];
    for (name, map, code, problem) in cases {
        let dir = d.path().join(name);
        sharded(&dir, &map);
        let named = if name == "missing" {
            dir.join("model-00003-of-00002.safetensors")
        } else {
            index(&dir)
        };
        let e = refused(
            &pack(&dir, &good, &out, &["--lossless"]),
            code,
            &named,
            problem,
        );
        assert!(!out.exists(), "{name}: {e}");
    }
    // model.safetensors that is a symlink loop: named, not "no checkpoint".
    #[cfg(unix)]
    {
        let dir = d.path().join("loop");
        std::fs::create_dir_all(&dir).unwrap();
        let m = dir.join("model.safetensors");
        std::os::unix::fs::symlink(dir.join("other"), &m).unwrap();
        std::os::unix::fs::symlink(&m, dir.join("other")).unwrap();
        refused(
            &pack(&dir, &good, &out, &["--lossless"]),
            exit::IO,
            &m,
            "symbolic links",
        );
    }
}

#[test]
fn pytorch_pickle_checkpoints_are_refused_naming_the_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, _) = pair(tmp.path(), 64);
    // A torch.save zip (its first bytes are all resid looks at) in a folder,
    // as a sharded index, and given as a file.
    let zip = b"PK\x03\x04\x00\x00\x08\x08archive/data.pkl".to_vec();
    let folder = tmp.path().join("pt");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pytorch_model.bin"), &zip).unwrap();
    std::fs::write(folder.join("config.json"), "{}").unwrap();
    let sharded = tmp.path().join("pt-sharded");
    std::fs::create_dir(&sharded).unwrap();
    std::fs::write(sharded.join("pytorch_model.bin.index.json"), "{}").unwrap();
    // A bare pickle (protocol 2) named .pt.
    let bare = tmp.path().join("model.pt");
    std::fs::write(&bare, b"\x80\x02}q\x00.").unwrap();
    let out = tmp.path().join("x.resid");
    for (arg, named) in [
        (folder.clone(), folder.join("pytorch_model.bin")),
        (
            sharded.clone(),
            sharded.join("pytorch_model.bin.index.json"),
        ),
        (
            folder.join("pytorch_model.bin"),
            folder.join("pytorch_model.bin"),
        ),
        (bare.clone(), bare.clone()),
    ] {
        let e = refused(
            &pack(&b, &arg, &out, &["--lossless"]),
            exit::BAD_INPUT,
            &named,
            "a PyTorch pickle checkpoint, which resid does not read",
        );
        assert!(
            e.contains("save_pretrained(folder, safe_serialization=True)"),
            "{e}"
        );
        assert!(!out.exists());
        let o = run(&["analyze", "--base", s(&arg), "--trained", s(&b), "-q"]);
        refused(&o, exit::BAD_INPUT, &named, "PyTorch pickle");
    }
}
