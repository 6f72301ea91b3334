//! Extraction against an analytic truncated SVD: residuals built here as
//! U·diag(s)·V^T with orthonormal U, V (Gram-Schmidt, in this file) have
//! the known best rank-r approximation U_r·diag(s_r)·V_r^T and the known
//! error sqrt(sum of the left-out s^2).

use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_io::Checkpoint;
use resid_lora::{extract, Adapter, ExtractOptions};
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

#[test]
fn extract_is_the_truncated_svd_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut cases = Vec::new();
    for (name, rows, cols, s) in [
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
    ] {
        let k = s.len();
        cases.push(Case {
            name,
            rows,
            cols,
            u: orthonormal(rows, k, &mut rng),
            v: orthonormal(cols, k, &mut rng),
            s,
        });
    }
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for c in &cases {
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
    };
    let rep = extract(&b, &t, &out, &opts, &|_, _, _| {}).unwrap();
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
