//! `resid analyze --subspace-of` end to end: the real binary on a small
//! Llama-named checkpoint whose token embedding has known dominant
//! directions, with matrices built inside and outside that subspace.

use std::collections::BTreeMap;

use serde_json::Value;

mod common;
use common::{run, s};

const V: usize = 80;
const D: usize = 16;
const K: usize = 4;

/// Deterministic standard normals (xorshift + Box-Muller).
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn vec(&mut self, n: usize, std: f64) -> Vec<f64> {
        (0..n).map(|_| self.normal() * std).collect()
    }
}

/// `k` orthonormal directions of length `d`.
fn orthonormal(d: usize, k: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    while out.len() < k {
        let mut v = rng.vec(d, 1.0);
        for q in &out {
            let dot: f64 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(q).for_each(|(a, b)| *a -= dot * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        out.push(v);
    }
    out
}

/// `rows` rows, each a random combination of `dirs` (std 1 each) plus noise.
fn rows_in_span(rows: usize, dirs: &[Vec<f64>], noise: f64, rng: &mut Rng) -> Vec<f64> {
    let d = dirs[0].len();
    let mut w = rng.vec(rows * d, noise);
    for row in w.chunks_exact_mut(d) {
        for (j, q) in dirs.iter().enumerate() {
            let a = rng.normal() * (3.0 - 0.5 * j as f64);
            row.iter_mut().zip(q).for_each(|(x, u)| *x += a * u);
        }
    }
    w
}

fn transpose(w: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows)
        .map(|i| w[(i % rows) * cols + i / rows])
        .collect()
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum()
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// The test checkpoint and the original energy of each tensor.
fn model(rng: &mut Rng) -> Tensors {
    let dirs = orthonormal(D, K, rng);
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    // A shared offset that mean removal must take out, then the K directions.
    let offset = rng.vec(D, 4.0);
    let mut emb = rows_in_span(V, &dirs, 0.05, rng);
    for row in emb.chunks_exact_mut(D) {
        row.iter_mut().zip(&offset).for_each(|(x, o)| *x += o);
    }
    vec![
        ("model.embed_tokens.weight".into(), vec![V, D], f(emb)),
        (
            "model.layers.0.mlp.up_proj.weight".into(),
            vec![32, D],
            f(rows_in_span(32, &dirs, 0.001, rng)),
        ),
        (
            "model.layers.0.mlp.down_proj.weight".into(),
            vec![D, 32],
            f(transpose(&rows_in_span(32, &dirs, 0.001, rng), 32, D)),
        ),
        (
            "model.layers.1.mlp.up_proj.weight".into(),
            vec![32, D],
            f(rng.vec(32 * D, 1.0)),
        ),
        (
            "model.layers.0.mlp.gate_proj.weight".into(),
            vec![24, 20],
            f(rng.vec(24 * 20, 1.0)),
        ),
        (
            "model.layers.0.input_layernorm.weight".into(),
            vec![D],
            f(rng.vec(D, 1.0)),
        ),
    ]
}

#[test]
fn subspace_mode_removes_the_embedding_subspace() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("model.safetensors");
    let tensors = model(&mut Rng(0x5eed));
    resid::io::write::write_f32_checkpoint(&ck, &tensors, &BTreeMap::new()).unwrap();
    let out = dir.path().join("out.json");
    let rep = dir.path().join("report");
    let o = run(&[
        "analyze",
        "--trained",
        s(&ck),
        "--subspace-of",
        s(&ck),
        "--k",
        &K.to_string(),
        "--json",
        s(&out),
        "--report",
        s(&rep),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let sub = &j["subspace"];
    assert_eq!(sub["k"], K);
    assert_eq!(sub["d"], D);
    assert_eq!(sub["embedding"], "model.embed_tokens.weight");
    assert_eq!(sub["source"], s(&ck));
    let share = sub["eigenvalue_share"].as_f64().unwrap();
    assert!(share > 0.95 && share <= 1.0, "share {share}");
    let side = |n: &str| sub["projection"][n].as_str().unwrap().to_string();
    assert_eq!(side("model.layers.0.mlp.up_proj.weight"), "rows");
    assert_eq!(side("model.layers.0.mlp.down_proj.weight"), "cols");
    assert_eq!(side("model.embed_tokens.weight"), "rows");
    assert_eq!(side("model.layers.0.mlp.gate_proj.weight"), "none");
    assert_eq!(side("model.layers.0.input_layernorm.weight"), "none");

    let after: BTreeMap<String, f64> = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["energy"].as_f64().unwrap(),
            )
        })
        .collect();
    let ratio = |n: &str| {
        let before = energy(&tensors.iter().find(|t| t.0 == n).unwrap().2);
        after[n] / before
    };
    // Rows (or columns) in the embedding's top subspace: almost nothing left.
    assert!(ratio("model.layers.0.mlp.up_proj.weight") < 1e-3);
    assert!(ratio("model.layers.0.mlp.down_proj.weight") < 1e-3);
    // The embedding itself keeps its mean (offset) and noise only.
    assert!(ratio("model.embed_tokens.weight") < 0.9);
    // A random matrix loses about K/D of its energy.
    let r = ratio("model.layers.1.mlp.up_proj.weight");
    assert!((0.55..0.95).contains(&r), "random matrix kept {r}");
    // Tensors with no side of length d are measured unchanged.
    let g = ratio("model.layers.0.mlp.gate_proj.weight");
    assert!((g - 1.0).abs() < 1e-6, "{g}");
    assert!((ratio("model.layers.0.input_layernorm.weight") - 1.0).abs() < 1e-6);

    // The report folder is written, with the figures drawn from the
    // projected tensors, and nothing else beside them.
    assert!(rep.join("index.html").exists());
    assert!(rep.join("report.json").exists());
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(html.matches("<svg").count() >= 5, "figures missing");
    for e in std::fs::read_dir(&rep).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            n == "index.html" || n == "report.md" || n == "report.json" || n.starts_with("fig-"),
            "stray file {n}"
        );
    }
}

#[test]
fn subspace_mode_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("model.safetensors");
    let tensors = model(&mut Rng(7));
    resid::io::write::write_f32_checkpoint(&ck, &tensors, &BTreeMap::new()).unwrap();
    // No token embedding in the --subspace-of checkpoint.
    let bare = dir.path().join("bare.safetensors");
    resid::io::write::write_f32_checkpoint(&bare, &tensors[1..], &BTreeMap::new()).unwrap();
    let out = dir.path().join("out.json");
    let o = run(&[
        "analyze",
        "--trained",
        s(&ck),
        "--subspace-of",
        s(&bare),
        "--json",
        s(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(s(&bare)) && err.contains("token embedding"),
        "{err}"
    );
    assert!(!out.exists());
    // k above d.
    let o = run(&[
        "analyze",
        "--trained",
        s(&ck),
        "--subspace-of",
        s(&ck),
        "--k",
        "17",
        "--json",
        s(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(s(&ck)) && err.contains("exceeds"), "{err}");
    assert!(!out.exists());
    // Neither --base nor --subspace-of.
    let o = run(&["analyze", "--trained", s(&ck)]);
    assert!(!o.status.success());
    // --k belongs to --subspace-of; --base and --subspace-of exclude each other.
    let o = run(&["analyze", "--trained", s(&ck), "--base", s(&ck), "--k", "3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--subspace-of"));
    let o = run(&[
        "analyze",
        "--trained",
        s(&ck),
        "--base",
        s(&ck),
        "--subspace-of",
        s(&ck),
    ]);
    assert_eq!(o.status.code(), Some(2));
}
