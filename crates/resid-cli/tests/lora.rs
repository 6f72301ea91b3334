//! `resid extract-lora` and `resid analyze --adapter`, through the real
//! binary: residuals built here as U·diag(s)·V^T (orthonormal U, V by
//! Gram-Schmidt in this file) have a known best rank-r approximation, so the
//! extracted adapter's error and the analysed ΔW's energy and stable rank
//! are analytic.

mod common;

use std::path::Path;

use common::{exit, fails_with, ok, run, s, write_f32, Lcg};

fn orthonormal(n: usize, k: usize, g: &mut Lcg) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    while out.len() < k {
        let mut v: Vec<f64> = (0..n).map(|_| g.next()).collect();
        for u in &out {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        out.push(v);
    }
    out
}

const LAYERS: [(&str, usize, usize); 3] = [
    ("model.layers.0.self_attn.q_proj.weight", 24, 16),
    ("model.layers.0.mlp.up_proj.weight", 20, 16),
    ("model.layers.1.self_attn.q_proj.weight", 24, 16),
];
const S: [f64; 5] = [0.4, 0.2, 0.05, 0.02, 0.01];

/// Base and trained checkpoints whose residuals have singular values S;
/// the trained side also changes a norm (which no LoRA carries).
fn pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut g = Lcg(42);
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for (name, rows, cols) in LAYERS {
        let (u, v) = (orthonormal(rows, 5, &mut g), orthonormal(cols, 5, &mut g));
        let w: Vec<f32> = (0..rows * cols).map(|_| g.next() as f32).collect();
        let mut t = w.clone();
        for i in 0..rows {
            for c in 0..cols {
                let r: f64 = (0..5).map(|j| S[j] * u[j][i] * v[j][c]).sum();
                t[i * cols + c] = (w[i * cols + c] as f64 + r) as f32;
            }
        }
        base.push((name, vec![rows, cols], w));
        trained.push((name, vec![rows, cols], t));
    }
    base.push(("model.norm.weight", vec![16], vec![1.0; 16]));
    trained.push(("model.norm.weight", vec![16], vec![1.1; 16]));
    let (b, t) = (
        dir.join("base.safetensors"),
        dir.join("trained.safetensors"),
    );
    write_f32(&b, &base);
    write_f32(&t, &trained);
    (b, t)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn extract_then_analyze_adapter_is_the_truncated_svd() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, t) = pair(tmp.path());
    let ad = tmp.path().join("lora");
    let ex = tmp.path().join("extract.json");
    ok(&run(&[
        "extract-lora",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "--rank",
        "2",
        "-o",
        s(&ad),
        "--json",
        s(&ex),
        "-q",
    ]));
    let ex = json(&ex);
    let total = S.iter().map(|x| x * x).sum::<f64>();
    let tail = S[2..].iter().map(|x| x * x).sum::<f64>();
    let layers = ex["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for l in layers {
        assert_eq!(l["rank"], 2);
        let rel = l["relative_error"].as_f64().unwrap();
        assert!((rel - (tail / total).sqrt()).abs() < 1e-4, "{l}");
    }
    assert_eq!(ex["left_out"][0]["tensor"], "model.norm.weight");
    // adapter_model.safetensors holds 3 x rank 2 x (rows + cols) f32 and a header.
    let params: u64 = LAYERS.iter().map(|(_, r, c)| 2 * (r + c) as u64).sum();
    let bytes = ex["adapter_bytes"].as_u64().unwrap();
    assert!(bytes > 4 * params && bytes < 4 * params + 2048, "{bytes}");
    let cfg = json(&ad.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(
        (cfg["r"].as_u64(), cfg["lora_alpha"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 3);

    // The analysis of the adapter sees exactly the rank-2 truncation.
    let aj = tmp.path().join("analyze.json");
    ok(&run(&[
        "analyze",
        "--base",
        s(&b),
        "--adapter",
        s(&ad),
        "--json",
        s(&aj),
        "-q",
    ]));
    let rep = json(&aj);
    let tensors = rep["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3, "only the adapted modules");
    let kept = S[0] * S[0] + S[1] * S[1];
    for r in tensors {
        let e = r["energy"].as_f64().unwrap();
        assert!(
            (e - kept).abs() < 1e-4 * kept,
            "{}: energy {e} vs {kept}",
            r["name"]
        );
        let sr = r["stable_rank"].as_f64().unwrap();
        let want = kept / (S[0] * S[0]);
        assert!(
            (sr - want).abs() < 1e-3 * want,
            "{}: stable rank {sr} vs {want}",
            r["name"]
        );
        assert_eq!(r["energy_rank_99"], 2, "{}", r["name"]);
    }
    assert!(rep["trained"].as_str().unwrap().contains("+ adapter"));

    // An existing adapter is not overwritten without --force.
    let o = run(&[
        "extract-lora",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "--rank",
        "1",
        "-o",
        s(&ad),
        "-q",
    ]);
    let e = fails_with(&o, exit::USAGE);
    assert!(e.contains("adapter_config.json exists"), "{e}");
    ok(&run(&[
        "extract-lora",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "--rank",
        "1",
        "-o",
        s(&ad),
        "-q",
        "--force",
    ]));
    assert_eq!(json(&ad.join("adapter_config.json"))["r"], 1);
}

#[test]
fn adapter_errors_exit_by_class_and_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, t) = pair(tmp.path());
    let ad = tmp.path().join("lora");
    ok(&run(&[
        "extract-lora",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "--rank",
        "2",
        "-o",
        s(&ad),
        "-q",
    ]));
    // Against another base (no such modules): 4, naming the module.
    let other = tmp.path().join("other.safetensors");
    write_f32(
        &other,
        &[(
            "model.layers.0.mlp.down_proj.weight",
            vec![4, 4],
            vec![0.0; 16],
        )],
    );
    let e = fails_with(
        &run(&["analyze", "--base", s(&other), "--adapter", s(&ad), "-q"]),
        exit::MISMATCH,
    );
    assert!(
        e.contains("module 'model.layers.0.mlp.up_proj' has no tensor"),
        "{e}"
    );
    // DoRA: 3, by name.
    let cfg = std::fs::read_to_string(ad.join("adapter_config.json")).unwrap();
    let dora = cfg.replace("\"use_dora\": false", "\"use_dora\": true");
    assert_ne!(cfg, dora);
    std::fs::write(ad.join("adapter_config.json"), dora).unwrap();
    let e = fails_with(
        &run(&["analyze", "--base", s(&b), "--adapter", s(&ad), "-q"]),
        exit::BAD_INPUT,
    );
    assert!(
        e.contains("adapter_config.json: DoRA is not supported"),
        "{e}"
    );
    // A missing adapter folder: 5, naming the config it looked for.
    let e = fails_with(
        &run(&[
            "analyze",
            "--base",
            s(&b),
            "--adapter",
            s(&tmp.path().join("none")),
            "-q",
        ]),
        exit::IO,
    );
    assert!(e.contains("none/adapter_config.json"), "{e}");
    // --adapter with --trained: usage.
    fails_with(
        &run(&[
            "analyze",
            "--base",
            s(&b),
            "--trained",
            s(&t),
            "--adapter",
            s(&ad),
        ]),
        exit::USAGE,
    );
    fails_with(
        &run(&[
            "extract-lora",
            "--base",
            s(&b),
            "--trained",
            s(&t),
            "--rank",
            "0",
            "-o",
            s(&ad),
        ]),
        exit::USAGE,
    );
}
