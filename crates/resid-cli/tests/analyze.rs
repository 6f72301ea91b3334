//! `resid analyze` end to end: the real binary on small safetensors files the
//! tests write (f32, f16, bf16, sharded), and bad inputs, each of which must
//! give one line naming the file and the problem, a non-zero exit and no
//! JSON file.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::Value;

mod common;
use common::{run, s};

const LAYERS: usize = 4;

/// (name, shape) of a small GPT-2-like model.
fn shapes() -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("wte.weight".to_string(), vec![50, 16])];
    for l in 0..LAYERS {
        v.push((format!("h.{l}.attn.c_attn.weight"), vec![16, 48]));
        v.push((format!("h.{l}.mlp.c_fc.weight"), vec![64, 16]));
        v.push((format!("h.{l}.ln_1.weight"), vec![16]));
    }
    v
}

/// Deterministic pseudo-random values (xorshift), heavy-tailed when `spiky`.
fn values(n: usize, seed: u64, scale: f32, spiky: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
            if spiky && i % 37 == 0 {
                u * scale * 40.0
            } else {
                u * scale
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Dt {
    F32,
    F16,
    Bf16,
}

fn encode(v: &[f32], dt: Dt) -> (String, Vec<u8>) {
    match dt {
        Dt::F32 => (
            "F32".into(),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Dt::F16 => (
            "F16".into(),
            v.iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect(),
        ),
        Dt::Bf16 => (
            "BF16".into(),
            v.iter()
                .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                .collect(),
        ),
    }
}

/// The values a reader sees after the dtype round trip.
fn decoded(v: &[f32], dt: Dt) -> Vec<f32> {
    match dt {
        Dt::F32 => v.to_vec(),
        Dt::F16 => v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
        Dt::Bf16 => v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect(),
    }
}

/// A raw safetensors file: (name, dtype, shape, bytes).
fn write_raw(path: &Path, tensors: &[(String, String, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// A file with a given header text and data bytes.
fn write_header(path: &Path, header: &str, data: &[u8]) {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// Base and trained value sets for the model.
fn model(seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for (i, (_, shape)) in shapes().iter().enumerate() {
        let n: usize = shape.iter().product();
        let b = values(n, seed + i as u64, 0.1, false);
        let r = values(n, seed + 100 + i as u64, 0.01, true);
        trained.push(b.iter().zip(&r).map(|(x, y)| x + y).collect());
        base.push(b);
    }
    (base, trained)
}

fn write_model(path: &Path, vals: &[Vec<f32>], dt: Dt) {
    let t: Vec<_> = shapes()
        .into_iter()
        .zip(vals)
        .map(|((name, shape), v)| {
            let (d, bytes) = encode(v, dt);
            (name, d, shape, bytes)
        })
        .collect();
    write_raw(path, &t);
}

fn analyze_json(base: &Path, trained: &Path, json: &Path) -> Value {
    let out = run(&[
        "analyze",
        "--base",
        s(base),
        "--trained",
        s(trained),
        "--json",
        s(json),
        "--quiet",
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("Verdict") && stdout.contains("Kurtosis (overall)"),
        "{stdout}"
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn excess_kurtosis(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let m2 = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
    let m4 = x.iter().map(|v| (v - m).powi(4)).sum::<f64>() / n;
    m4 / (m2 * m2) - 3.0
}

fn tensor<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

fn check_against_direct(j: &Value, base: &[Vec<f32>], trained: &[Vec<f32>], dt: Dt) {
    let mut pooled = Vec::new();
    for (i, (name, shape)) in shapes().iter().enumerate() {
        let (b, t) = (decoded(&base[i], dt), decoded(&trained[i], dt));
        let r: Vec<f64> = t.iter().zip(&b).map(|(x, y)| (*x - *y) as f64).collect();
        let rec = tensor(j, name);
        assert_eq!(rec["numel"].as_u64().unwrap() as usize, r.len());
        let shape_json: Vec<usize> = rec["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(&shape_json, shape);
        let k = excess_kurtosis(&r);
        let got = rec["kurtosis"].as_f64().unwrap();
        assert!(
            (got - k).abs() < 1e-6 * k.abs().max(1.0),
            "{name}: {got} vs {k}"
        );
        pooled.extend(r);
    }
    let all = j["components"]["all"]["kurtosis_pooled"].as_f64().unwrap();
    let k = excess_kurtosis(&pooled);
    assert!((all - k).abs() < 1e-6 * k.abs(), "{all} vs {k}");
}

#[test]
fn f32_pair_json_schema_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = model(1);
    let (bp, tp, jp) = (
        dir.path().join("b.safetensors"),
        dir.path().join("t.safetensors"),
        dir.path().join("r.json"),
    );
    write_model(&bp, &b, Dt::F32);
    write_model(&tp, &t, Dt::F32);
    let j = analyze_json(&bp, &tp, &jp);
    for key in [
        "tensors",
        "components",
        "layers",
        "interlayer",
        "verdict",
        "unmatched",
    ] {
        assert!(j.get(key).is_some(), "missing {key}");
    }
    let rec = tensor(&j, "h.1.attn.c_attn.weight");
    for key in [
        "name",
        "layer",
        "component",
        "role",
        "shape",
        "numel",
        "mean",
        "std",
        "kurtosis",
        "entropy_bits",
        "entropy_null_bits",
        "entropy_step_bits",
        "share_above_3std",
        "top1pct_energy",
        "top10pct_energy",
        "pr",
        "pr_null",
        "stable_rank",
        "lowfreq_ratio",
        "kmeans",
    ] {
        assert!(rec.get(key).is_some(), "tensor record lacks {key}");
    }
    assert_eq!(rec["layer"], 1);
    assert_eq!(rec["component"], "attention");
    assert_eq!(rec["role"], "qkv");
    let km = rec["kmeans"].as_array().unwrap();
    assert_eq!(
        km.iter()
            .map(|k| k["k"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 4, 8, 16]
    );
    // 16 rows: K = 16 cannot be fitted (null), the others can.
    assert!(km[..3]
        .iter()
        .all(|k| k["ve"].is_f64() && k["ve_null"].is_f64() && k["ve_shuffled"].is_f64()));
    assert!(km[3]["ve"].is_null());
    let mlp = tensor(&j, "h.1.mlp.c_fc.weight");
    assert!(mlp["kmeans"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["ve"].is_f64()));
    let norm = tensor(&j, "h.1.ln_1.weight");
    assert!(norm["pr"].is_null() && norm["kmeans"].is_null() && norm["lowfreq_ratio"].is_null());
    for c in ["attention", "mlp", "embedding", "norm", "all"] {
        let comp = &j["components"][c];
        for key in [
            "numel",
            "kurtosis_pooled",
            "kurtosis_mean",
            "entropy_bits",
            "entropy_null_bits",
            "pr_mean",
            "pr_null_mean",
        ] {
            assert!(comp.get(key).is_some(), "{c} lacks {key}");
        }
    }
    assert_eq!(j["layers"].as_array().unwrap().len(), LAYERS);
    for key in ["layer", "entropy_bits", "kurtosis_pooled", "pr_mean"] {
        assert!(j["layers"][0].get(key).is_some());
    }
    let il = &j["interlayer"];
    assert_eq!(il["pairs"].as_array().unwrap().len(), 3 * (LAYERS - 1));
    for key in ["role", "a", "b", "r"] {
        assert!(il["pairs"][0].get(key).is_some());
    }
    assert!(
        il["mean_adjacent_r"].is_f64() && il["first_last_r"].is_f64() && il["null_band"].is_f64()
    );
    for h in ["smooth", "coordinated", "sparse", "clustered"] {
        for key in ["supported", "measure", "null", "margin"] {
            assert!(
                j["verdict"][h].get(key).is_some(),
                "verdict.{h} lacks {key}"
            );
        }
    }
    // Spikes on every 37th entry: heavy tails, judged sparse; independent layers.
    assert_eq!(j["verdict"]["sparse"]["supported"], true);
    assert_eq!(j["verdict"]["coordinated"]["supported"], false);
    check_against_direct(&j, &b, &t, Dt::F32);
}

#[test]
fn f16_and_bf16_pairs() {
    for dt in [Dt::F16, Dt::Bf16] {
        let dir = tempfile::tempdir().unwrap();
        let (b, t) = model(2);
        let (bp, tp, jp) = (
            dir.path().join("b.safetensors"),
            dir.path().join("t.safetensors"),
            dir.path().join("r.json"),
        );
        write_model(&bp, &b, dt);
        write_model(&tp, &t, dt);
        let j = analyze_json(&bp, &tp, &jp);
        check_against_direct(&j, &b, &t, dt);
    }
}

#[test]
fn sharded_equals_single_and_json_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = model(3);
    let (bp, jp1) = (
        dir.path().join("b.safetensors"),
        dir.path().join("one.json"),
    );
    write_model(&bp, &b, Dt::F32);
    let single = dir.path().join("t.safetensors");
    write_model(&single, &t, Dt::F32);
    // The trained side as a folder with two shards and an index.
    let folder = dir.path().join("trained");
    std::fs::create_dir(&folder).unwrap();
    let all: Vec<_> = shapes().into_iter().zip(&t).collect();
    let (first, second) = all.split_at(all.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (k, part) in [first, second].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let raw: Vec<_> = part
            .iter()
            .map(|((n, shape), v)| {
                weight_map.insert(n.clone(), Value::String(file.clone()));
                let (d, bytes) = encode(v, Dt::F32);
                (n.clone(), d, shape.clone(), bytes)
            })
            .collect();
        write_raw(&folder.join(&file), &raw);
    }
    std::fs::write(
        folder.join("model.safetensors.index.json"),
        serde_json::to_string(&serde_json::json!({"metadata": {}, "weight_map": weight_map}))
            .unwrap(),
    )
    .unwrap();
    let one = analyze_json(&bp, &single, &jp1);
    let out = run(&[
        "analyze",
        "--base",
        s(&bp),
        "--trained",
        s(&folder),
        "--json",
        "-",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sharded: Value = serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    assert_eq!(one["tensors"], sharded["tensors"]);
    assert_eq!(one["components"], sharded["components"]);
    assert_eq!(one["verdict"], sharded["verdict"]);
    assert_eq!(one["interlayer"], sharded["interlayer"]);
}

#[test]
fn unmatched_names_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = model(4);
    let (bp, tp, jp) = (
        dir.path().join("b.safetensors"),
        dir.path().join("t.safetensors"),
        dir.path().join("r.json"),
    );
    write_model(&bp, &b, Dt::F32);
    let mut raw: Vec<_> = shapes()
        .into_iter()
        .zip(&t)
        .map(|((n, shape), v)| {
            let (d, bytes) = encode(v, Dt::F32);
            (n, d, shape, bytes)
        })
        .collect();
    raw.retain(|r| r.0 != "h.3.ln_1.weight");
    raw.push((
        "lm_extra.weight".into(),
        "F32".into(),
        vec![2, 2],
        vec![0; 16],
    ));
    raw.push(("position_ids".into(), "I64".into(), vec![4], vec![0; 32]));
    write_raw(&tp, &raw);
    let mut braw: Vec<_> = shapes()
        .into_iter()
        .zip(&b)
        .map(|((n, shape), v)| {
            let (d, bytes) = encode(v, Dt::F32);
            (n, d, shape, bytes)
        })
        .collect();
    braw.push(("position_ids".into(), "I64".into(), vec![4], vec![0; 32]));
    write_raw(&bp, &braw);
    let j = analyze_json(&bp, &tp, &jp);
    assert_eq!(
        j["unmatched"]["only_base"],
        serde_json::json!(["h.3.ln_1.weight"])
    );
    assert_eq!(
        j["unmatched"]["only_trained"],
        serde_json::json!(["lm_extra.weight"])
    );
    assert_eq!(j["tensors"].as_array().unwrap().len(), shapes().len() - 1);
    assert_eq!(j["unmatched"]["skipped"].as_array().unwrap().len(), 1);
    assert!(j["unmatched"]["skipped"][0]
        .as_str()
        .unwrap()
        .starts_with("position_ids"));
}

/// Runs analyze expecting failure; checks one line naming `file` and `problem`, no JSON left.
fn expect_error(base: &Path, trained: &Path, file: &Path, problem: &str) {
    expect_error_with(base, trained, file, problem, &[]);
}

fn expect_error_with(base: &Path, trained: &Path, file: &Path, problem: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("out.json");
    let mut args = vec![
        "analyze",
        "--base",
        s(base),
        "--trained",
        s(trained),
        "--json",
        s(&jp),
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure for {problem}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err:?}");
    assert!(
        lines[0].contains(s(file)),
        "does not name {}: {err}",
        file.display()
    );
    assert!(
        lines[0].contains(problem),
        "does not say '{problem}': {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!jp.exists(), "JSON left behind");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file left behind"
    );
}

fn good_pair(dir: &Path) -> (PathBuf, PathBuf, Vec<Vec<f32>>) {
    let (b, t) = model(5);
    let (bp, tp) = (dir.join("b.safetensors"), dir.join("t.safetensors"));
    write_model(&bp, &b, Dt::F32);
    write_model(&tp, &t, Dt::F32);
    (bp, tp, t)
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (bp, tp, t) = good_pair(dir.path());
    let bytes = std::fs::read(&tp).unwrap();

    let missing = dir.path().join("nope.safetensors");
    expect_error(&bp, &missing, &missing, "No such file");

    let trunc = dir.path().join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..bytes.len() - 10]).unwrap();
    expect_error(&bp, &trunc, &trunc, "outside");

    let past = dir.path().join("past.safetensors");
    let mut p = bytes.clone();
    p[..8].copy_from_slice(&(bytes.len() as u64 * 2).to_le_bytes());
    std::fs::write(&past, &p).unwrap();
    expect_error(&bp, &past, &past, "past the end");

    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, [1u8, 2, 3]).unwrap();
    expect_error(&tiny, &tp, &tiny, "shorter than");

    let outside = dir.path().join("outside.safetensors");
    write_header(
        &outside,
        r#"{"h.0.ln_1.weight":{"dtype":"F32","shape":[16],"data_offsets":[64,128]}}"#,
        &[0; 64],
    );
    expect_error(&bp, &outside, &outside, "outside");

    let backwards = dir.path().join("backwards.safetensors");
    write_header(
        &backwards,
        r#"{"h.0.ln_1.weight":{"dtype":"F32","shape":[16],"data_offsets":[64,0]}}"#,
        &[0; 64],
    );
    expect_error(&bp, &backwards, &backwards, "end before they start");

    let notjson = dir.path().join("notjson.safetensors");
    write_header(&notjson, "{not json", &[0; 64]);
    expect_error(&bp, &notjson, &notjson, "not valid JSON");

    let disagree = dir.path().join("disagree.safetensors");
    write_raw(
        &disagree,
        &[(
            "h.0.ln_1.weight".into(),
            "F32".into(),
            vec![17],
            vec![0; 64],
        )],
    );
    expect_error(&bp, &disagree, &disagree, "needs 68 bytes");

    let bf = dir.path().join("dtype.safetensors");
    write_raw(
        &bf,
        &[(
            "h.0.ln_1.weight".into(),
            "BF16".into(),
            vec![16],
            vec![0; 64],
        )],
    );
    expect_error(&bp, &bf, &bf, "needs 32 bytes");

    let fp8 = dir.path().join("fp8.safetensors");
    write_raw(
        &fp8,
        &[(
            "h.0.ln_1.weight".into(),
            "F8_E4M3".into(),
            vec![16],
            vec![0; 16],
        )],
    );
    expect_error(&fp8, &fp8, &fp8, "F8_E4M3");

    // Shape mismatch: names both shapes.
    let shape = dir.path().join("shape.safetensors");
    write_raw(
        &shape,
        &[(
            "h.0.ln_1.weight".into(),
            "F32".into(),
            vec![4, 4],
            vec![0; 64],
        )],
    );
    expect_error(&bp, &shape, &shape, "[4, 4]");

    // NaN / Inf: refused with --deny-nonfinite, naming the file and tensor...
    let nan = dir.path().join("nan.safetensors");
    let mut tv = t.clone();
    let idx = shapes()
        .iter()
        .position(|(n, _)| n == "h.2.mlp.c_fc.weight")
        .unwrap();
    tv[idx][5] = f32::NAN;
    tv[idx][9] = f32::INFINITY;
    write_model(&nan, &tv, Dt::F32);
    expect_error_with(
        &bp,
        &nan,
        &nan,
        "'h.2.mlp.c_fc.weight' holds 1 NaN and 1 infinite",
        &["--deny-nonfinite"],
    );

    // ...and by default measured over the finite entries, reported per
    // tensor in the JSON and warned about on stderr.
    let jp = dir.path().join("nan.json");
    let out = run(&[
        "analyze",
        "--base",
        s(&bp),
        "--trained",
        s(&nan),
        "--json",
        s(&jp),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: tensor 'h.2.mlp.c_fc.weight'") && err.contains("1 NaN"),
        "no warning naming the tensor: {err}"
    );
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&jp).unwrap()).unwrap();
    let rec = tensor(&j, "h.2.mlp.c_fc.weight");
    assert_eq!(rec["nan"], 1);
    assert_eq!(rec["inf"], 1);
    assert_eq!(
        rec["finite"].as_u64().unwrap(),
        rec["numel"].as_u64().unwrap() - 2
    );
    assert!(rec["kurtosis"].as_f64().unwrap().is_finite());
    assert!(rec["pr"].is_null(), "matrix measures skipped");
    assert!(rec["note"].as_str().unwrap().contains("NaN"));
    let clean = tensor(&j, "h.1.mlp.c_fc.weight");
    assert_eq!(clean["nan"], 0);
    assert!(clean["pr"].is_f64());

    // A JSON path in a missing folder fails before any work.
    let out = run(&[
        "analyze",
        "--base",
        s(&bp),
        "--trained",
        s(&tp),
        "--json",
        "/nonexistent-dir/x.json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/x.json"));
}

#[test]
fn report_folder_holds_html_markdown_figures_and_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let (bp, tp, _) = good_pair(dir.path());
    let rd = dir.path().join("nested").join("report");
    let jp = dir.path().join("r.json");
    let out = run(&[
        "analyze",
        "--base",
        s(&bp),
        "--trained",
        s(&tp),
        "--json",
        s(&jp),
        "--report",
        s(&rd),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // report.json is the --json output (which ends in a newline).
    let rj = std::fs::read_to_string(rd.join("report.json")).unwrap();
    let jj = std::fs::read_to_string(&jp).unwrap();
    assert!(
        rj.trim_end() == jj.trim_end(),
        "report.json differs from --json"
    );
    let html = std::fs::read_to_string(rd.join("index.html")).unwrap();
    let md = std::fs::read_to_string(rd.join("report.md")).unwrap();
    // Self-contained: figures inline, nothing fetched.
    assert!(!html.contains("src=\"http"), "fetches from the network");
    assert!(!html.contains("<script src"), "external script");
    let svgs_inline = html.matches("<svg").count();
    // Every figure the Markdown references exists beside it, non-empty,
    // and the HTML carries the same figures inline.
    let refs: Vec<&str> = md
        .match_indices("](fig-")
        .map(|(i, _)| {
            let rest = &md[i + 2..];
            &rest[..rest.find(')').unwrap()]
        })
        .collect();
    assert!(refs.len() >= 6, "only {} figures: {refs:?}", refs.len());
    assert!(svgs_inline >= refs.len(), "{svgs_inline} inline svgs");
    for r in &refs {
        let svg = std::fs::read_to_string(rd.join(r)).unwrap();
        assert!(svg.starts_with("<svg") && svg.len() > 500, "{r} is empty");
    }
    for needle in ["histogram", "kurtosis", "Marchenko", "k-means"] {
        assert!(
            html.to_lowercase().contains(&needle.to_lowercase()),
            "no {needle} in the HTML"
        );
    }
}

/// Several `--trained`: one report per residual, and each pair's figures
/// recomputed here from the files (cosine over every shared tensor, sign
/// agreement over the entries both changed); the report folder holds the
/// pairs page and one report per residual.
#[test]
fn several_trained_give_a_record_per_residual_and_the_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, t1) = model(1);
    let (_, t2) = model(2);
    let paths: Vec<PathBuf> = ["b", "t1", "t2"]
        .iter()
        .map(|n| tmp.path().join(format!("{n}.safetensors")))
        .collect();
    for (p, v) in paths.iter().zip([&base, &t1, &t2]) {
        write_model(p, v, Dt::F32);
    }
    let (json, dir) = (tmp.path().join("r.json"), tmp.path().join("report"));
    let out = run(&[
        "analyze",
        "--base",
        s(&paths[0]),
        "--trained",
        s(&paths[1]),
        "--trained",
        s(&paths[2]),
        "--json",
        s(&json),
        "--report",
        s(&dir),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("residual 1:") && stdout.contains("sign agreement"),
        "{stdout}"
    );
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["residuals"].as_array().unwrap().len(), 2);
    assert_eq!(j["residuals"][1]["trained"], s(&paths[2]));
    let pair = &j["pairs"][0];
    assert_eq!((pair["a"].as_u64(), pair["b"].as_u64()), (Some(0), Some(1)));
    let (mut dot, mut aa, mut bb, mut both, mut agree) = (0.0f64, 0.0f64, 0.0f64, 0u64, 0u64);
    for i in 0..shapes().len() {
        for ((x, y), b) in t1[i].iter().zip(&t2[i]).zip(&base[i]) {
            let (r1, r2) = (x - b, y - b);
            dot += (r1 * r2) as f64;
            aa += (r1 * r1) as f64;
            bb += (r2 * r2) as f64;
            if r1 != 0.0 && r2 != 0.0 {
                both += 1;
                agree += u64::from((r1 > 0.0) == (r2 > 0.0));
            }
        }
    }
    let cos = pair["all"]["cosine"].as_f64().unwrap();
    assert!((cos - dot / (aa * bb).sqrt()).abs() < 1e-6, "{cos}");
    assert_eq!(pair["all"]["both_changed"].as_u64(), Some(both));
    let sa = pair["all"]["sign_agreement"].as_f64().unwrap();
    assert!((sa - agree as f64 / both as f64).abs() < 1e-12);
    for f in [
        "index.html",
        "report.json",
        "residual-0/index.html",
        "residual-1/index.html",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    // Several --trained need a base.
    let out = run(&[
        "analyze",
        "--subspace-of",
        s(&paths[0]),
        "--trained",
        s(&paths[1]),
        "--trained",
        s(&paths[2]),
        "--quiet",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--base"));
}
