//! The unembedding, fitted by ridge least squares *through the final
//! LayerNorm*: the zero-layer path `tok_emb -> ln_f -> head + bias` is made
//! to reproduce the low-rank bigram log-probabilities the embedding was cut
//! from. The output bias is the bigram's token-independent part
//! (`sum_a p(a) ln P(b | a)`, centred: the log unigram plus the weighted
//! column mean of the log-ratio).
//!
//! Untied head: `head.weight` is the ridge solution on the LayerNormed
//! embeddings, restricted to the token and slack directions so position
//! never shifts the logits. Tied head: the unembedding is `tok_emb` itself,
//! so the fit is over the final LayerNorm's per-coordinate gains instead.

use faer::Mat;

use super::embedding::EmbeddingFit;
use super::linalg::ridge_normal;
use crate::config::GptConfig;

/// The fitted output side.
pub struct Unembed {
    /// `[V, d]`, untied heads only.
    pub head: Option<Mat<f64>>,
    /// `ln_f.weight` (all ones for untied heads).
    pub ln_f_weight: Vec<f64>,
    pub bias: Vec<f64>,
    pub lambda: f64,
}

impl Unembed {
    /// The matrix that maps `ln_f`'s normalised input to logits (`[V, d]`):
    /// `head` (untied) or `tok_emb * diag(ln_f.weight)` (tied).
    pub fn readout(&self, emb: &EmbeddingFit) -> Mat<f64> {
        match &self.head {
            Some(h) => h.clone(),
            None => Mat::from_fn(emb.tok_emb.nrows(), emb.tok_emb.ncols(), |b, i| {
                emb.tok_emb[(b, i)] * self.ln_f_weight[i]
            }),
        }
    }
}

/// Exact LayerNorm (eps 1e-5, gain 1, bias 0) of each row.
pub fn ln_rows(x: &Mat<f64>) -> Mat<f64> {
    let d = x.ncols();
    Mat::from_fn(x.nrows(), d, |a, i| {
        let mean = (0..d).map(|j| x[(a, j)]).sum::<f64>() / d as f64;
        let var = (0..d).map(|j| (x[(a, j)] - mean).powi(2)).sum::<f64>() / d as f64;
        (x[(a, i)] - mean) / (var + super::forward::LN_EPS as f64).sqrt()
    })
}

/// Fits the head (or the final gains) with ridge weight `ridge_rel` times
/// the mean diagonal of the normal matrix.
pub fn fit(cfg: &GptConfig, emb: &EmbeddingFit, bias: &[f64], ridge_rel: f64) -> Unembed {
    let (v, d) = (cfg.vocab_size, cfg.d_model);
    let x_in = Mat::from_fn(v, d, |a, i| emb.tok_emb[(a, i)] + emb.pos_emb[(0, i)]);
    // What reaches the final LayerNorm on the zero-layer path (rows).
    let x = ln_rows(&(x_in * emb.stream_map().transpose()));
    if !cfg.tied_head {
        // Coordinates in the token + slack directions only.
        let r = emb.space.rank();
        let basis = Mat::from_fn(d, r + 1, |i, j| {
            if j < r {
                emb.space.tok[(i, j)]
            } else {
                emb.space.slack[(i, 0)]
            }
        });
        let xc = &x * &basis; // [V, r+1]
        let g = xc.transpose() * &xc;
        let lambda = ridge_rel * (0..r + 1).map(|i| g[(i, i)]).sum::<f64>() / (r + 1) as f64;
        // X^T L = (X^T left) right^T.
        let rhs = (xc.transpose() * &emb.left) * emb.right.transpose(); // [r+1, V]
        let w = ridge_normal(g, rhs, lambda); // [r+1, V]
        let head = w.transpose() * basis.transpose(); // [V, d]
        Unembed {
            head: Some(head),
            ln_f_weight: vec![1.0; d],
            bias: bias.to_vec(),
            lambda,
        }
    } else if emb.rotation.is_some() {
        // Paired token directions (`Space::paired`): direction j's logit term
        // is g_j alpha0 (B c_a)_j c_bj, and the fit is `e_a^T W e_b` with
        // `c = kappa V^T e`, so g_j = s_j / (kappa^2 alpha0) on its pair,
        // exactly. (A ridge fit here would be swamped by the slack's size.)
        let mut g = vec![0.0; d];
        let k2 = emb.scale_c * emb.scale_c * emb.alpha0;
        for (j, s) in emb.spectrum.iter().enumerate() {
            g[2 * j] = s / k2;
            g[2 * j + 1] = s / k2;
        }
        Unembed {
            head: None,
            ln_f_weight: g,
            bias: bias.to_vec(),
            lambda: 0.0,
        }
    } else {
        // logits_ab = sum_i g_i X_ai E_bi: normal matrix (X^T X) o (E^T E).
        let e = &emb.tok_emb;
        let xtx = x.transpose() * &x;
        let ete = e.transpose() * e;
        let a = Mat::from_fn(d, d, |i, j| xtx[(i, j)] * ete[(i, j)]);
        let le = &emb.left * (emb.right.transpose() * e); // [V, d] = L E
        let rhs = Mat::from_fn(d, 1, |i, _| {
            (0..v).map(|b| x[(b, i)] * le[(b, i)]).sum::<f64>()
        });
        let lambda = ridge_rel * (0..d).map(|i| a[(i, i)]).sum::<f64>() / d as f64;
        let g = ridge_normal(a, rhs, lambda);
        Unembed {
            head: None,
            ln_f_weight: (0..d).map(|i| g[(i, 0)]).collect(),
            bias: bias.to_vec(),
            lambda,
        }
    }
}
