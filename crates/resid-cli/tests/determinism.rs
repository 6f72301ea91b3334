//! Determinism: the same inputs and settings give the same residual file
//! bytes, the same rebuilt checkpoint and the same analysis figures on one
//! and on two threads. (`codec.rs` checks pack bytes for `--lossless` and
//! `--bits-per-param`; this adds the other modes, unpack and analyze.)

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{ok, run, s};

fn st(path: &Path, tensors: &[(String, Vec<u64>, Vec<f32>)]) {
    let mut h = String::from("{");
    let mut data = Vec::new();
    for (i, (n, shape, v)) in tensors.iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        h.push_str(&format!(
            r#""{n}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{},{}]}}"#,
            data.len(),
            data.len() + b.len()
        ));
        data.extend_from_slice(&b);
    }
    h.push('}');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// A small GPT-like pair: three layers of attention, MLP and LayerNorm, with
/// a residual that is partly low-rank and partly heavy-tailed.
fn pair(dir: &Path) -> (PathBuf, PathBuf) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for l in 0..3 {
        for (part, shape) in [
            ("attn.c_attn.weight", vec![24u64, 72]),
            ("mlp.c_fc.weight", vec![96, 24]),
            ("ln_1.weight", vec![24]),
        ] {
            let n = shape.iter().product::<u64>() as usize;
            let cols = *shape.last().unwrap() as usize;
            let b: Vec<f32> = (0..n).map(|_| 0.1 * next()).collect();
            let u: Vec<f32> = (0..n / cols).map(|_| next()).collect();
            let v: Vec<f32> = (0..cols).map(|_| next()).collect();
            let t: Vec<f32> = (0..n)
                .map(|i| {
                    let spike = next();
                    let spike = if spike.abs() > 0.49 { spike } else { 0.0 };
                    b[i] + 0.01 * u[i / cols] * v[i % cols] + 0.02 * spike
                })
                .collect();
            let name = format!("h.{l}.{part}");
            base.push((name.clone(), shape.clone(), b));
            trained.push((name, shape, t));
        }
    }
    let (bp, tp) = (
        dir.join("base.safetensors"),
        dir.join("trained.safetensors"),
    );
    st(&bp, &base);
    st(&tp, &trained);
    (bp, tp)
}

#[test]
fn pack_and_unpack_give_the_same_bytes_on_one_and_two_threads() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path());
    let modes: [&[&str]; 4] = [
        &["--lossless"],
        &["--keep", "0.05"],
        &["--max-error", "0.2", "--seed", "7"],
        &["--bits-per-param", "2"],
    ];
    let mut files_per_mode = Vec::new();
    for (m, mode) in modes.iter().enumerate() {
        let mut files = Vec::new();
        let mut rebuilt = Vec::new();
        for th in ["1", "2"] {
            let f = d.path().join(format!("m{m}-t{th}.resid"));
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
            a.extend_from_slice(mode);
            ok(&run(&a));
            files.push(std::fs::read(&f).unwrap());
            let r = d.path().join(format!("m{m}-t{th}.safetensors"));
            ok(&run(&[
                "unpack",
                "--base",
                s(&b),
                s(&f),
                "-o",
                s(&r),
                "-q",
                "--threads",
                th,
            ]));
            rebuilt.push(std::fs::read(&r).unwrap());
        }
        assert_eq!(files[0], files[1], "pack {mode:?}");
        assert_eq!(rebuilt[0], rebuilt[1], "unpack {mode:?}");
        files_per_mode.push(files.swap_remove(0));
    }
    // The modes really differ (the comparison above is not vacuous).
    for i in 0..files_per_mode.len() {
        for j in 0..i {
            assert_ne!(files_per_mode[i], files_per_mode[j], "modes {i} and {j}");
        }
    }
}

/// Drops fields that describe the run rather than the inputs (timings,
/// thread counts, paths).
fn figures(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| {
                    let k = k.to_lowercase();
                    !["time", "elapsed", "seconds", "thread", "wall", "path"]
                        .iter()
                        .any(|w| k.contains(w))
                });
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn count_numbers(v: &Value) -> usize {
    match v {
        Value::Number(_) => 1,
        Value::Object(m) => m.values().map(count_numbers).sum(),
        Value::Array(a) => a.iter().map(count_numbers).sum(),
        _ => 0,
    }
}

#[test]
fn analyze_gives_the_same_figures_on_one_and_two_threads() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = pair(d.path());
    let mut out = Vec::new();
    for th in ["1", "2"] {
        let j = d.path().join(format!("a{th}.json"));
        ok(&run(&[
            "analyze",
            "--base",
            s(&b),
            "--trained",
            s(&t),
            "--json",
            s(&j),
            "-q",
            "--threads",
            th,
            "--seed",
            "3",
        ]));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        out.push(figures(v));
    }
    assert!(
        count_numbers(&out[0]) > 50,
        "too few figures to compare: {}",
        out[0]
    );
    if out[0] != out[1] {
        let (a, b) = (out[0].to_string(), out[1].to_string());
        let at = a
            .bytes()
            .zip(b.bytes())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        panic!(
            "figures differ near: {} | {}",
            &a[at.saturating_sub(80)..(at + 80).min(a.len())],
            &b[at.saturating_sub(80)..(at + 80).min(b.len())]
        );
    }
}
