//! The standard random init and mimetic attention weights
//! (Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers",
//! 2023: trained heads have `W_Q W_K^T` near a positive multiple of I and
//! `W_V W_O` near a negative one, and starting there helps).
//!
//! Random init is what a GPT-2/nanoGPT-style trainer draws: N(0, 0.02) for
//! every matrix and embedding, residual projections (`attn.o`, `mlp.down`)
//! scaled by `1/sqrt(2 n_layer)`, LayerNorm weight 1 and bias 0, biases 0.
//! Each tensor draws from its own ChaCha stream (`seed`, stream = its index
//! in `param_specs()`), so a tensor's noise does not depend on the others.

use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::linalg::{from_mat, gaussian, svd_dense};
use super::provenance::TensorProvenance;
use crate::config::GptConfig;

/// Std of the standard init.
pub const INIT_STD: f64 = 0.02;

/// Is `name` a residual-stream output projection (scaled down at init)?
pub fn is_residual_proj(name: &str) -> bool {
    name.ends_with("attn.o.weight") || name.ends_with("mlp.down.weight")
}

/// The rng of tensor `index` under `seed`.
pub fn tensor_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(index as u64 + 1);
    r
}

/// One tensor of the standard random init, with its provenance.
pub fn random_tensor(
    cfg: &GptConfig,
    name: &str,
    n: usize,
    seed: u64,
    index: usize,
) -> (Vec<f32>, TensorProvenance) {
    let is_ln = name.contains("ln1.") || name.contains("ln2.") || name.starts_with("ln_f.");
    if is_ln && name.ends_with(".weight") {
        return (vec![1.0; n], TensorProvenance::method("const").scale(1.0));
    }
    if name.ends_with(".bias") {
        return (vec![0.0; n], TensorProvenance::method("const").scale(0.0));
    }
    let std = if is_residual_proj(name) {
        INIT_STD / (2.0 * cfg.n_layer as f64).sqrt()
    } else {
        INIT_STD
    };
    let mut rng = tensor_rng(seed, index);
    let data = (0..n)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            (z * std) as f32
        })
        .collect();
    (data, TensorProvenance::method("random").noise(std, seed))
}

/// Query and key weights `[d, d]` (torch layout) for one layer whose heads
/// each get `W_q,h^T W_k,h ~ kappa (alpha Z + beta I)`, the best rank-`hd`
/// approximation (SVD), `Z ~ N(0, 1/d)`. `kappa = sqrt(hd) / d` makes the
/// self-score of a LayerNormed input about `beta` after the `1/sqrt(hd)` scale.
pub fn mimetic_qk(
    d: usize,
    n_head: usize,
    alpha: f64,
    beta: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<f32>) {
    let hd = d / n_head;
    let kappa = (hd as f64).sqrt() / d as f64;
    let mut wq = Mat::<f64>::zeros(d, d);
    let mut wk = Mat::<f64>::zeros(d, d);
    for h in 0..n_head {
        let mut m = gaussian(d, d, alpha / (d as f64).sqrt(), rng);
        for i in 0..d {
            m[(i, i)] += beta;
        }
        let (u, s, v) = svd_dense(m.as_ref(), hd);
        for r in 0..hd {
            let sq = (s[r] * kappa).sqrt();
            for c in 0..d {
                wq[(h * hd + r, c)] = u[(c, r)] * sq;
                wk[(h * hd + r, c)] = v[(c, r)] * sq;
            }
        }
    }
    (from_mat(wq.as_ref()), from_mat(wk.as_ref()))
}

/// Value and output weights `[d, d]` whose per-head product
/// `W_o[:, h] W_v,h ~ alpha Z_h / sqrt(n_head) - beta P_h` (rank `hd`,
/// `P_h` = projector on head h's block of coordinates), so the heads
/// together give `W_o W_v ~ alpha Z - beta I`.
pub fn mimetic_vo(
    d: usize,
    n_head: usize,
    alpha: f64,
    beta: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<f32>) {
    let hd = d / n_head;
    let mut wv = Mat::<f64>::zeros(d, d);
    let mut wo = Mat::<f64>::zeros(d, d);
    for h in 0..n_head {
        let mut m = gaussian(d, d, alpha / ((d * n_head) as f64).sqrt(), rng);
        for i in h * hd..(h + 1) * hd {
            m[(i, i)] -= beta;
        }
        // out = M x: M = U S V^T; W_o[:, h] = U S^1/2, W_v,h = S^1/2 V^T.
        let (u, s, v) = svd_dense(m.as_ref(), hd);
        for r in 0..hd {
            let sq = s[r].sqrt();
            for c in 0..d {
                wv[(h * hd + r, c)] = v[(c, r)] * sq;
                wo[(c, h * hd + r)] = u[(c, r)] * sq;
            }
        }
    }
    (from_mat(wv.as_ref()), from_mat(wo.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product_qk(wq: &[f32], wk: &[f32], d: usize, rows: std::ops::Range<usize>) -> Mat<f64> {
        Mat::from_fn(d, d, |i, j| {
            rows.clone()
                .map(|r| wq[r * d + i] as f64 * wk[r * d + j] as f64)
                .sum()
        })
    }

    #[test]
    fn mimetic_qk_has_a_positive_diagonal() {
        let d = 32;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (wq, wk) = mimetic_qk(d, 4, 0.7, 0.7, &mut rng);
        let m = product_qk(&wq, &wk, d, 0..8);
        let diag: f64 = (0..d).map(|i| m[(i, i)]).sum::<f64>() / d as f64;
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| m[(i, j)].abs())
            .sum::<f64>()
            / (d * d - d) as f64;
        assert!(diag > 3.0 * off, "diag {diag} off {off}");
    }

    #[test]
    fn mimetic_vo_sums_to_minus_beta_identity_plus_noise() {
        let d = 32;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (wv, wo) = mimetic_vo(d, 4, 0.0, 0.3, &mut rng);
        // alpha = 0: each head's target is exactly rank hd, so W_o W_v = -0.3 I.
        let m = Mat::from_fn(d, d, |i, j| {
            (0..d)
                .map(|r| wo[i * d + r] as f64 * wv[r * d + j] as f64)
                .sum::<f64>()
        });
        for i in 0..d {
            for j in 0..d {
                let want = if i == j { -0.3 } else { 0.0 };
                assert!((m[(i, j)] - want).abs() < 1e-5, "{i},{j}: {}", m[(i, j)]);
            }
        }
    }

    #[test]
    fn random_tensor_follows_the_standard_init() {
        let cfg = GptConfig::tiny();
        let (w, p) = random_tensor(&cfg, "blocks.0.mlp.down.weight", 40_000, 1, 5);
        let std = super::super::linalg::rms(&w);
        assert!((std - 0.02 / 8f64.sqrt()).abs() < 2e-4, "{std}");
        assert_eq!(p.method, "random");
        let (w, _) = random_tensor(&cfg, "blocks.0.ln1.weight", 4, 1, 6);
        assert_eq!(w, vec![1.0; 4]);
        // Deterministic per (seed, index).
        assert_eq!(
            random_tensor(&cfg, "tok_emb.weight", 10, 9, 0).0,
            random_tensor(&cfg, "tok_emb.weight", 10, 9, 0).0
        );
    }
}
