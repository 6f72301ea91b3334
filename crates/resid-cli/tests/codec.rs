//! The residual file through the real binary: pack, unpack, inspect, and the
//! refusals (wrong base, flipped bit, truncated file, newer version, NaN).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use resid::io::write::{SafetensorsWriter, TensorSpec};
use resid::io::{Checkpoint, Dtype};

mod common;
use common::{ok, run, s};

fn refused(o: &Output, needles: &[&str]) -> String {
    assert!(
        !o.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(e.trim_end().lines().count(), 1, "one-line error: {e}");
    for n in needles {
        assert!(e.contains(n), "error lacks '{n}': {e}");
    }
    e
}

/// A deterministic pseudo-random stream (xorshift), Gaussian-ish by summing.
struct Rng(u64);
impl Rng {
    fn u(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn g(&mut self) -> f32 {
        ((0..4).map(|_| self.u()).sum::<f64>() - 2.0) as f32 * 1.7
    }
}

type T = (String, String, Vec<usize>, Vec<u8>);

fn write(path: &Path, tensors: &[T]) {
    let specs = tensors
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.clone(),
            dtype_name: d.clone(),
            shape: s.clone(),
        })
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut w = SafetensorsWriter::create(path, specs, &meta).unwrap();
    for (n, _, _, b) in tensors {
        w.write_tensor(n, b).unwrap();
    }
    w.finish().unwrap();
}

fn float(name: &str, d: Dtype, shape: &[usize], v: &[f32]) -> T {
    let mut b = Vec::new();
    d.from_f32(v, &mut b);
    (name.into(), d.name().into(), shape.to_vec(), b)
}

/// Base and trained pair: every float dtype, an I64 tensor, one tensor only
/// in trained, one unchanged tensor.
fn pair(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let mut r = Rng(seed | 1);
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for (i, d) in [Dtype::F32, Dtype::F16, Dtype::BF16]
        .into_iter()
        .enumerate()
    {
        let (m, n) = (96, 80 + i * 8);
        let b: Vec<f32> = (0..m * n).map(|_| 0.02 * r.g()).collect();
        let t: Vec<f32> = b
            .iter()
            .map(|x| {
                x + if r.u() < 0.1 {
                    0.01 * r.g()
                } else {
                    1e-5 * r.g()
                }
            })
            .collect();
        base.push(float(&format!("w{i}"), d, &[m, n], &b));
        trained.push(float(&format!("w{i}"), d, &[m, n], &t));
    }
    let ints: Vec<u8> = (0..64i64).flat_map(|x| (x * 3).to_le_bytes()).collect();
    let ints2: Vec<u8> = (0..64i64)
        .flat_map(|x| (x * 3 + (x % 5 == 0) as i64).to_le_bytes())
        .collect();
    base.push(("ids".into(), "I64".into(), vec![64], ints));
    trained.push(("ids".into(), "I64".into(), vec![64], ints2));
    let same: Vec<f32> = (0..500).map(|_| r.g()).collect();
    base.push(float("same", Dtype::BF16, &[500], &same));
    trained.push(float("same", Dtype::BF16, &[500], &same));
    let extra: Vec<f32> = (0..300).map(|_| r.g()).collect();
    trained.push(float("new_head", Dtype::F16, &[300], &extra));
    let b = dir.join("base.safetensors");
    let t = dir.join("trained.safetensors");
    write(&b, &base);
    write(&t, &trained);
    (b, t)
}

fn same_tensors(a: &Path, b: &Path) {
    let a = Checkpoint::open(a).unwrap();
    let b = Checkpoint::open(b).unwrap();
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.dtype_name, y.dtype_name);
        assert_eq!(x.shape, y.shape);
        assert_eq!(a.bytes(x), b.bytes(y), "tensor {}", x.name);
    }
    assert_eq!(a.metadata(0), b.metadata(0));
}

#[test]
fn lossless_round_trip_is_bit_exact_and_inspectable() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 7);
    let f = d.path().join("x.resid");
    let o = run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&f),
        "--lossless",
        "-q",
    ]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("bits/param") && out.contains("smaller"),
        "{out}"
    );
    let r = d.path().join("r.safetensors");
    ok(&run(&["unpack", "--base", s(&b), s(&f), "-o", s(&r), "-q"]));
    same_tensors(&r, &t);
    let j = d.path().join("i.json");
    let o = run(&["inspect", s(&f), "--json", s(&j)]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["mode"], "lossless");
    assert_eq!(v["original_headers"], 1);
    // Version 2 keeps the trained header: the rebuilt file is the original.
    assert_eq!(std::fs::read(&r).unwrap(), std::fs::read(&t).unwrap());
    let enc: Vec<String> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["encoding"].as_str().unwrap().to_string())
        .collect();
    assert!(enc.contains(&"same".to_string()), "{enc:?}");
    assert!(
        enc.contains(&"planes".to_string()),
        "absent from base: {enc:?}"
    );
    assert!(enc.contains(&"xor-planes".to_string()), "{enc:?}");
}

#[test]
fn lossy_round_trip_keeps_names_dtypes_and_reports_error() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 11);
    let f = d.path().join("y.resid");
    for mode in [
        ["--bits-per-param", "2"],
        ["--keep", "0.1"],
        ["--max-error", "0.2"],
    ] {
        let mut a = vec![
            "pack",
            "--base",
            s(&b),
            "--trained",
            s(&t),
            "-o",
            s(&f),
            "-q",
        ];
        a.extend(mode);
        let o = run(&a);
        ok(&o);
        assert!(String::from_utf8_lossy(&o.stdout).contains("relative error"));
        let r = d.path().join(format!("r{}.safetensors", mode[1]));
        ok(&run(&["unpack", "--base", s(&b), s(&f), "-o", s(&r), "-q"]));
        let rc = Checkpoint::open(&r).unwrap();
        let tc = Checkpoint::open(&t).unwrap();
        let names: Vec<_> = rc
            .tensors()
            .iter()
            .map(|x| (&x.name, &x.dtype_name))
            .collect();
        let want: Vec<_> = tc
            .tensors()
            .iter()
            .map(|x| (&x.name, &x.dtype_name))
            .collect();
        assert_eq!(names, want);
        // Lossless parts (integers, unchanged, absent from base) stay exact.
        for n in ["ids", "same", "new_head"] {
            assert_eq!(
                rc.bytes(rc.get(n).unwrap()),
                tc.bytes(tc.get(n).unwrap()),
                "{n}"
            );
        }
    }
}

#[test]
fn sharded_trained_side_unpacks_to_shards_and_index() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = pair(d.path(), 3);
    let tdir = d.path().join("trained");
    std::fs::create_dir(&tdir).unwrap();
    let mut r = Rng(5);
    let v1: Vec<f32> = (0..96 * 80).map(|_| r.g()).collect();
    let v2: Vec<f32> = (0..96 * 88).map(|_| r.g()).collect();
    write(
        &tdir.join("model-00001-of-00002.safetensors"),
        &[float("w0", Dtype::F32, &[96, 80], &v1)],
    );
    write(
        &tdir.join("model-00002-of-00002.safetensors"),
        &[float("w1", Dtype::F16, &[96, 88], &v2)],
    );
    let idx = serde_json::json!({"metadata": {}, "weight_map": {"w0": "model-00001-of-00002.safetensors", "w1": "model-00002-of-00002.safetensors"}});
    std::fs::write(tdir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    let f = d.path().join("z.resid");
    ok(&run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&tdir),
        "-o",
        s(&f),
        "--lossless",
        "-q",
    ]));
    let out = d.path().join("rebuilt");
    ok(&run(&[
        "unpack",
        "--base",
        s(&b),
        s(&f),
        "-o",
        s(&out),
        "-q",
    ]));
    assert!(out.join("model.safetensors.index.json").is_file());
    for n in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        same_tensors(&out.join(n), &tdir.join(n));
    }
}

fn no_output_left(dir: &Path, name: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn another_base_is_refused_naming_the_tensor() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 13);
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
    let other = tempfile::tempdir().unwrap();
    let (b2, _) = pair(other.path(), 99);
    let o = run(&[
        "unpack",
        "--base",
        s(&b2),
        s(&f),
        "-o",
        s(&d.path().join("out.safetensors")),
        "-q",
    ]);
    refused(&o, &["tensor 'w0'", "another base"]);
    no_output_left(d.path(), "out.safetensors");
}

#[test]
fn flipped_bit_truncation_and_newer_version_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 17);
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
    let good = std::fs::read(&f).unwrap();
    let out = d.path().join("out.safetensors");
    // A flipped bit inside the first block (just after the 16-byte preamble).
    let mut bad = good.clone();
    bad[20] ^= 0x10;
    let g = d.path().join("flip.resid");
    std::fs::write(&g, &bad).unwrap();
    let e = refused(
        &run(&["unpack", "--base", s(&b), s(&g), "-o", s(&out), "-q"]),
        &["checksum"],
    );
    assert!(e.contains("tensor '") && e.contains("block"), "{e}");
    no_output_left(d.path(), "out.safetensors");
    // A flipped bit in the header.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 40] ^= 0x01;
    std::fs::write(&g, &bad).unwrap();
    refused(
        &run(&["unpack", "--base", s(&b), s(&g), "-o", s(&out), "-q"]),
        &["flip.resid"],
    );
    // Truncated.
    std::fs::write(&g, &good[..good.len() / 2]).unwrap();
    refused(
        &run(&["unpack", "--base", s(&b), s(&g), "-o", s(&out), "-q"]),
        &["truncated"],
    );
    refused(&run(&["inspect", s(&g)]), &["truncated"]);
    // Newer version.
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&g, &bad).unwrap();
    refused(
        &run(&["unpack", "--base", s(&b), s(&g), "-o", s(&out), "-q"]),
        &["version 3 is newer"],
    );
    // Not a residual file at all.
    refused(&run(&["inspect", s(&b)]), &["not a residual file"]);
    no_output_left(d.path(), "out.safetensors");
}

#[test]
fn nonfinite_values_need_allow_nonfinite() {
    let d = tempfile::tempdir().unwrap();
    let v: Vec<f32> = (0..256).map(|i| i as f32 * 0.01).collect();
    let mut w = v.clone();
    w[10] = f32::NAN;
    w[11] = f32::INFINITY;
    let b = d.path().join("b.safetensors");
    let t = d.path().join("t.safetensors");
    write(&b, &[float("x", Dtype::BF16, &[256], &v)]);
    write(&t, &[float("x", Dtype::BF16, &[256], &w)]);
    let f = d.path().join("n.resid");
    let o = run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&f),
        "--bits-per-param",
        "1",
        "-q",
    ]);
    refused(&o, &["tensor 'x'", "NaN"]);
    assert!(!f.exists());
    ok(&run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&f),
        "--bits-per-param",
        "1",
        "--allow-nonfinite",
        "-q",
    ]));
    let r = d.path().join("r.safetensors");
    ok(&run(&["unpack", "--base", s(&b), s(&f), "-o", s(&r), "-q"]));
    same_tensors(&r, &t);
}

#[test]
fn exactly_one_mode_is_required() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 19);
    let f = d.path().join("x.resid");
    let o = run(&["pack", "--base", s(&b), "--trained", s(&t), "-o", s(&f)]);
    assert!(!o.status.success());
    let o = run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&f),
        "--lossless",
        "--keep",
        "0.1",
    ]);
    assert!(!o.status.success());
    assert!(!f.exists());
}

#[test]
fn same_inputs_give_same_bytes_on_one_and_two_threads() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 23);
    for mode in [vec!["--lossless"], vec!["--bits-per-param", "1.5"]] {
        let mut files = Vec::new();
        for th in ["1", "2"] {
            let f = d.path().join(format!("t{th}.resid"));
            let mut a = vec![
                "pack",
                "--base",
                s(&b),
                "--trained",
                s(&t),
                "-o",
                s(&f),
                "-q",
                "--threads",
                th,
            ];
            a.extend(mode.iter().copied());
            ok(&run(&a));
            files.push(std::fs::read(&f).unwrap());
        }
        assert_eq!(files[0], files[1], "{mode:?}");
    }
}

#[test]
fn bench_codec_report_lists_every_row_and_draws_the_lossy_ones() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 11);
    let rd = d.path().join("bench-report");
    let jp = d.path().join("rows.json");
    let o = run(&[
        "bench-codec",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "--rates",
        "1",
        "--json",
        s(&jp),
        "--report",
        s(&rd),
        "--tmp",
        s(d.path()),
    ]);
    ok(&o);
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jp).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(rows.len() >= 3, "{rows:?}");
    let html = std::fs::read_to_string(rd.join("index.html")).unwrap();
    let md = std::fs::read_to_string(rd.join("report.md")).unwrap();
    // One table row per measured row, in the Markdown and in the HTML.
    for r in rows {
        let m = r["method"].as_str().unwrap();
        assert!(md.contains(&format!("| {m} |")), "{m} not in report.md");
        assert!(html.contains(m), "{m} not in index.html");
    }
    let svg = std::fs::read_to_string(rd.join("fig-rate-distortion.svg")).unwrap();
    assert!(svg.contains("resid lossy"), "resid's curve is drawn");
    assert_eq!(html.matches("<svg").count(), 1);
    assert_eq!(
        std::fs::read_to_string(rd.join("report.json"))
            .unwrap()
            .trim_end(),
        std::fs::read_to_string(&jp).unwrap().trim_end()
    );
}

#[test]
fn json_dash_puts_nothing_but_json_on_stdout() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 12);
    let f = d.path().join("x.resid");
    let o = run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "--lossless",
        "-o",
        s(&f),
        "--json",
        "-",
        "--quiet",
    ]);
    ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON");
    assert_eq!(
        j["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&f).unwrap().len()
    );
    assert!(!d.path().join("-").exists(), "no file named '-'");
    let o = run(&["inspect", s(&f), "--json", "-"]);
    ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON");
    assert_eq!(j["mode"], "lossless");
    assert!(String::from_utf8_lossy(&o.stderr).contains("resid format version"));
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn verify_checks_everything_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path(), 11);
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
    let before = listing(d.path());
    let o = run(&["verify", s(&f), "--base", s(&b), "--against", s(&t), "-q"]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("6 bit-exact") && out.contains("6 bit-exact tensors identical"),
        "{out}"
    );
    assert_eq!(listing(d.path()), before, "verify wrote something");
    // Another original: the first differing tensor is named.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, t2) = pair(&other, 12);
    let e = refused(
        &run(&["verify", s(&f), "--base", s(&b), "--against", s(&t2), "-q"]),
        &["tensor '", "differ"],
    );
    assert!(e.contains(s(&f)), "{e}");
    // Another base, and a damaged block, are refused as unpack refuses them.
    refused(
        &run(&["verify", s(&f), "--base", s(&t), "-q"]),
        &["another base"],
    );
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[20] ^= 1;
    let g = d.path().join("bad.resid");
    std::fs::write(&g, &bytes).unwrap();
    refused(
        &run(&["verify", s(&g), "--base", s(&b), "-q"]),
        &["checksum"],
    );
    // Lossy files verify too, reporting their error against the original.
    let l = d.path().join("l.resid");
    ok(&run(&[
        "pack",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&l),
        "--max-error",
        "0.2",
        "-q",
    ]));
    let o = run(&["verify", s(&l), "--base", s(&b), "--against", s(&t), "-q"]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("lossy relative error"));
}
