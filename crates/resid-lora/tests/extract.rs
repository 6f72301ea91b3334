//! Extraction against an analytic truncated SVD: residuals built here as
//! U·diag(s)·V^T with orthonormal U, V (Gram-Schmidt, in this file) have
//! the known best rank-r approximation U_r·diag(s_r)·V_r^T and the known
//! error sqrt(sum of the left-out s^2).

use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_io::Checkpoint;
use resid_lora::{extract, Adapter, ExtractOptions, WeightLayout};
use safetensors::tensor::{Dtype, TensorView};

fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// `k` orthonormal columns of length `n` (column-major: k vectors).
fn orthonormal(n: usize, k: usize, rng: &mut impl Rng) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    while out.len() < k {
        let mut v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
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

/// R = sum over j < keep of s_j u_j v_j^T (rows × cols, row-major).
fn low_rank(u: &[Vec<f64>], s: &[f64], v: &[Vec<f64>], keep: usize) -> Vec<f64> {
    let (rows, cols) = (u[0].len(), v[0].len());
    let mut r = vec![0.0; rows * cols];
    for j in 0..keep {
        for i in 0..rows {
            for c in 0..cols {
                r[i * cols + c] += s[j] * u[j][i] * v[j][c];
            }
        }
    }
    r
}

struct Case {
    name: &'static str,
    rows: usize,
    cols: usize,
    s: Vec<f64>,
    u: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
}

/// Cases with random orthonormal singular vectors for the given spectra.
fn cases(spec: Vec<(&'static str, usize, usize, Vec<f64>)>, rng: &mut impl Rng) -> Vec<Case> {
    spec.into_iter()
        .map(|(name, rows, cols, s)| Case {
            name,
            rows,
            cols,
            u: orthonormal(rows, s.len(), rng),
            v: orthonormal(cols, s.len(), rng),
            s,
        })
        .collect()
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A random base per case and trained = base + the case's residual.
fn pair_of(cases: &[Case], rng: &mut impl Rng) -> (Tensors, Tensors) {
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for c in cases {
        let w: Vec<f32> = (0..c.rows * c.cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let r = low_rank(&c.u, &c.s, &c.v, c.s.len());
        let t: Vec<f32> = w
            .iter()
            .zip(&r)
            .map(|(w, r)| (*w as f64 + r) as f32)
            .collect();
        base.push((c.name.to_string(), vec![c.rows, c.cols], w));
        trained.push((c.name.to_string(), vec![c.rows, c.cols], t));
    }
    (base, trained)
}

#[test]
fn extract_is_the_truncated_svd_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let cases = cases(
        vec![
            (
                "model.layers.0.self_attn.q_proj.weight",
                8,
                6,
                vec![3.0, 2.0, 0.5, 0.25, 0.1, 0.05],
            ),
            (
                "model.layers.0.mlp.down_proj.weight",
                5,
                9,
                vec![1.5, 1.0, 0.75, 0.2, 0.1],
            ),
            ("model.embed_tokens.weight", 12, 4, vec![0.8, 0.4, 0.2, 0.1]),
            // Rank 1 < the requested 2: padded with a zero factor, error 0.
            ("model.layers.0.self_attn.o_proj.weight", 3, 3, vec![0.7]),
        ],
        &mut rng,
    );
    let (mut base, mut trained) = pair_of(&cases, &mut rng);
    // A norm that changed (left out, named) and a weight that did not.
    base.push(("model.norm.weight".into(), vec![4], vec![1.0; 4]));
    trained.push((
        "model.norm.weight".into(),
        vec![4],
        vec![1.0, 1.5, 1.0, 1.0],
    ));
    base.push((
        "model.layers.0.self_attn.k_proj.weight".into(),
        vec![2, 2],
        vec![0.5; 4],
    ));
    trained.push((
        "model.layers.0.self_attn.k_proj.weight".into(),
        vec![2, 2],
        vec![0.5; 4],
    ));
    write(&tmp.path().join("base.safetensors"), &base);
    write(&tmp.path().join("trained.safetensors"), &trained);
    let b = Checkpoint::open(&tmp.path().join("base.safetensors")).unwrap();
    let t = Checkpoint::open(&tmp.path().join("trained.safetensors")).unwrap();
    let out = tmp.path().join("lora");
    let opts = ExtractOptions {
        rank: 2,
        embeddings: true,
        base_name: Some("org/base".into()),
        layout: WeightLayout::Detect,
    };
    let rep = extract(&b, &t, &out, &opts, &|_, _, _| {}).unwrap();
    assert!(
        !rep.fan_in_fan_out,
        "Llama names: nn.Linear ({})",
        rep.layout
    );
    assert_eq!(rep.unchanged, 1);
    assert_eq!(rep.left_out.len(), 1, "{:?}", rep.left_out);
    assert_eq!(rep.left_out[0].tensor, "model.norm.weight");
    assert!((rep.left_out[0].residual_norm.unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(rep.layers.len(), cases.len());

    let ad = Adapter::open(&out).unwrap();
    assert_eq!(ad.config.r, 2);
    assert_eq!(
        ad.config.base_model_name_or_path.as_deref(),
        Some("org/base")
    );
    for c in &cases {
        let layer = rep.layers.iter().find(|l| l.tensor == c.name).unwrap();
        let total = c.s.iter().map(|s| s * s).sum::<f64>().sqrt();
        let tail = c.s.iter().skip(2).map(|s| s * s).sum::<f64>().sqrt();
        // The residual went through f32 (base + R, then - base).
        assert!(
            (layer.residual_norm - total).abs() < 1e-5 * total,
            "{}",
            c.name
        );
        assert!(
            (layer.error_norm - tail).abs() < 1e-5 * total,
            "{}: {} vs {tail}",
            c.name,
            layer.error_norm
        );
        assert_eq!(layer.rank, 2.min(c.rows).min(c.cols));
        let m = ad.modules().iter().find(|m| m.tensor == c.name).unwrap();
        assert_eq!(m.rank, 2);
        let (shape, d) = ad.delta(m, &b).unwrap();
        assert_eq!(shape, [c.rows, c.cols]);
        let want = low_rank(&c.u, &c.s, &c.v, c.s.len().min(2));
        for (g, w) in d.iter().zip(&want) {
            assert!(
                (*g as f64 - w).abs() < 1e-5 * c.s[0],
                "{}: {g} vs {w}",
                c.name
            );
        }
    }
    let kinds: Vec<_> = ad.modules().iter().map(|m| m.kind.name()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "embedding").count(), 1);

    // The analysis pair: trained - base is ΔW.
    let pair_dir = tmp.path().join("pair");
    std::fs::create_dir(&pair_dir).unwrap();
    let p = resid_lora::apply::write_pair(&ad, &b, &pair_dir, &|_, _| {}).unwrap();
    let (pb, pt) = (
        Checkpoint::open(&p.base).unwrap(),
        Checkpoint::open(&p.trained).unwrap(),
    );
    for m in ad.modules() {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        pb.read_f32(pb.get(&m.tensor).unwrap(), &mut x).unwrap();
        pt.read_f32(pt.get(&m.tensor).unwrap(), &mut y).unwrap();
        let mut w = Vec::new();
        b.read_f32(b.get(&m.tensor).unwrap(), &mut w).unwrap();
        assert_eq!(x, w, "the pair's base is the base");
        let (_, d) = ad.delta(m, &b).unwrap();
        for ((y, x), d) in y.iter().zip(&x).zip(&d) {
            assert!((y - x - d).abs() <= 1e-6 * (1.0 + x.abs()));
        }
    }

    // Rank 0 is a usage error.
    let e = extract(
        &b,
        &t,
        &out,
        &ExtractOptions { rank: 0, ..opts },
        &|_, _, _| {},
    );
    assert_eq!(
        resid_io::Classify::class(&e.unwrap_err()),
        resid_io::ErrorClass::Usage
    );
}

/// The raw tensors of an adapter file, by name: (shape, values).
fn adapter_tensors(dir: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let x = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, (v.shape().to_vec(), x))
        })
        .collect()
}

/// GPT-2 stores its attention and MLP weights as transformers' Conv1D,
/// (in, out). PEFT's LoRA on a Conv1D has lora_A (r, in) and lora_B
/// (out, r), with B·A = ΔW^T, and `fan_in_fan_out: true`; lm_head stays an
/// nn.Linear (out, in). Checked on the raw file (shapes, B·A against the
/// analytic truncation, transposed) and through resid's own reader, with
/// the layout found from config.json, from the names alone, and overridden.
#[test]
fn gpt2_conv1d_weights_get_fan_in_fan_out_factors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // (name, rows, cols) as stored: Conv1D (in, out), lm_head (out, in).
    let cases = cases(
        vec![
            (
                "transformer.h.0.attn.c_attn.weight",
                6,
                18,
                vec![2.0, 1.0, 0.5, 0.1],
            ),
            // Square: only the config's fan_in_fan_out tells the reader which way.
            (
                "transformer.h.0.attn.c_proj.weight",
                6,
                6,
                vec![1.5, 0.7, 0.3],
            ),
            (
                "transformer.h.0.mlp.c_fc.weight",
                6,
                24,
                vec![1.0, 0.5, 0.2],
            ),
            (
                "transformer.h.0.mlp.c_proj.weight",
                24,
                6,
                vec![0.9, 0.6, 0.1],
            ),
            ("lm_head.weight", 10, 6, vec![0.8, 0.3, 0.05]),
            ("transformer.wte.weight", 10, 6, vec![0.4, 0.2, 0.1]),
        ],
        &mut rng,
    );
    let (base, trained) = pair_of(&cases, &mut rng);
    let conv1d = |name: &str| name.contains(".attn.") || name.contains(".mlp.");
    // With config.json (model_type gpt2) in the folders; then bare files.
    let (bd, td) = (tmp.path().join("base"), tmp.path().join("trained"));
    for (d, t) in [(&bd, &base), (&td, &trained)] {
        std::fs::create_dir(d).unwrap();
        write(&d.join("model.safetensors"), t);
        std::fs::write(d.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    }
    write(&tmp.path().join("base.safetensors"), &base);
    write(&tmp.path().join("trained.safetensors"), &trained);
    let rank = 2;
    for (label, b, t, layout, want_fifo, want_why) in [
        (
            "config",
            &bd,
            &td,
            WeightLayout::Detect,
            true,
            "model_type 'gpt2'",
        ),
        (
            "names",
            &tmp.path().join("base.safetensors"),
            &tmp.path().join("trained.safetensors"),
            WeightLayout::Detect,
            true,
            "GPT-2 module name",
        ),
        (
            "override",
            &bd,
            &td,
            WeightLayout::Linear,
            false,
            "asked for",
        ),
    ] {
        let (b, t) = (Checkpoint::open(b).unwrap(), Checkpoint::open(t).unwrap());
        let out = tmp.path().join(format!("lora-{label}"));
        let opts = ExtractOptions {
            rank,
            embeddings: true,
            base_name: None,
            layout,
        };
        let rep = extract(&b, &t, &out, &opts, &|_, _, _| {}).unwrap();
        assert_eq!(rep.fan_in_fan_out, want_fifo, "{label}");
        assert!(rep.layout.contains(want_why), "{label}: {}", rep.layout);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["fan_in_fan_out"], want_fifo, "{label}");
        let raw = adapter_tensors(&out);
        let ad = Adapter::open(&out).unwrap();
        for c in &cases {
            let m = c.name.strip_suffix(".weight").unwrap();
            let want = low_rank(&c.u, &c.s, &c.v, rank);
            let layer = rep.layers.iter().find(|l| l.tensor == c.name).unwrap();
            let tail = c.s[rank..].iter().map(|s| s * s).sum::<f64>().sqrt();
            assert!(
                (layer.error_norm - tail).abs() < 1e-5 * c.s[0],
                "{label} {m}"
            );
            // PEFT's factor shapes, and B·A in the orientation PEFT multiplies.
            let emb = m.ends_with("wte");
            let transposed = emb || (want_fifo && conv1d(m));
            assert_eq!(
                layer.kind,
                if emb {
                    "embedding"
                } else if transposed {
                    "conv1d"
                } else {
                    "linear"
                },
                "{label} {m}"
            );
            let (ka, kb) = if emb {
                ("lora_embedding_A", "lora_embedding_B")
            } else {
                ("lora_A.weight", "lora_B.weight")
            };
            let (sa, a) = &raw[&format!("base_model.model.{m}.{ka}")];
            let (sb, bm) = &raw[&format!("base_model.model.{m}.{kb}")];
            let (p, q) = if transposed {
                (c.cols, c.rows)
            } else {
                (c.rows, c.cols)
            };
            assert_eq!(
                (sa.as_slice(), sb.as_slice()),
                ([rank, q].as_slice(), [p, rank].as_slice()),
                "{label} {m}"
            );
            for i in 0..p {
                for j in 0..q {
                    let ba: f64 = (0..rank)
                        .map(|k| bm[i * rank + k] as f64 * a[k * q + j] as f64)
                        .sum();
                    let w = if transposed {
                        want[j * c.cols + i]
                    } else {
                        want[i * c.cols + j]
                    };
                    assert!(
                        (ba - w).abs() < 1e-5 * c.s[0],
                        "{label} {m} ({i},{j}): {ba} vs {w}"
                    );
                }
            }
            // resid's reader gives ΔW back in the stored orientation.
            let md = ad.modules().iter().find(|x| x.tensor == c.name).unwrap();
            let (shape, d) = ad.delta(md, &b).unwrap();
            assert_eq!(shape, [c.rows, c.cols]);
            for (g, w) in d.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() < 1e-5 * c.s[0],
                    "{label} {m}: {g} vs {w}"
                );
            }
        }
    }
}
