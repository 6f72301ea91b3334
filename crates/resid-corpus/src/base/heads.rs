//! First-layer attention heads that look a fixed number of tokens back.
//!
//! Head `h` attends from position `t` to `t - k` with `k = h + 1`: its query
//! is the sinusoidal position of `t` rotated back by `k` steps and its key
//! the position of `s`, so the score is `beta * mean_j cos(w_j (t - k - s))`,
//! maximal exactly at `s = t - k`; `beta` is the smallest sharpness that puts
//! the target share of attention there at every position. Its OV circuit is
//! the ridge solution that makes the head's output, read through the final
//! LayerNorm and the unembedding, add `weight * (ln P_{k+1}(b | a) - ln p(b))`
//! (the lag statistic, centred) to the logits: a product-of-experts
//! "bigram + lags" model, cut to the head's rank.

use faer::Mat;

use super::embedding::EmbeddingFit;
use super::linalg::{ridge_normal, svd_dense};
use super::stats::LogRatio;
use crate::config::GptConfig;

/// Smallest share of attention the score `beta * f(t - k - s)` puts on
/// `s = t - k`, over all query positions `t` in `k..context`.
pub fn min_attention_on_lag(freqs: &[f64], k: usize, context: usize, beta: f64) -> f64 {
    let f = |delta: f64| freqs.iter().map(|w| (w * delta).cos()).sum::<f64>() / freqs.len() as f64;
    let mut worst = 1.0f64;
    for t in k..context {
        let scores: Vec<f64> = (0..=t)
            .map(|s| beta * f(t as f64 - k as f64 - s as f64))
            .collect();
        let m = scores.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
        worst = worst.min((scores[t - k] - m).exp() / z);
    }
    worst
}

/// The sharpness reaching `target` (bisection on [1, 1000]; 1000 if none does).
pub fn sharpness(freqs: &[f64], k: usize, context: usize, target: f64) -> f64 {
    if k >= context || min_attention_on_lag(freqs, k, context, 1000.0) < target {
        return 1000.0;
    }
    let (mut lo, mut hi) = (1.0f64, 1000.0f64);
    if min_attention_on_lag(freqs, k, context, lo) >= target {
        return lo;
    }
    for _ in 0..30 {
        let mid = (lo * hi).sqrt();
        if min_attention_on_lag(freqs, k, context, mid) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Layer-0 attention weights (torch layout `[d, d]`) and what was chosen.
pub struct HeadsFit {
    pub wq: Mat<f64>,
    pub wk: Mat<f64>,
    pub wv: Mat<f64>,
    pub wo: Mat<f64>,
    pub lags: Vec<usize>,
    pub beta: Vec<f64>,
    /// Predicted least attention on `t - k` (from the positions alone).
    pub min_attention: Vec<f64>,
    /// Share of each head's fitted OV map kept by its rank (Frobenius).
    pub ov_energy_kept: Vec<f64>,
}

/// Builds the lag heads. `lag_stats[h]` is the log-ratio at distance
/// `h + 2` (lag `h + 1`); `readout` maps `ln_f`'s normalised input to logits.
pub fn fit(
    cfg: &GptConfig,
    emb: &EmbeddingFit,
    readout: &Mat<f64>,
    lag_stats: &[LogRatio],
    lag_weight: f64,
    target_attention: f64,
    ridge_rel: f64,
) -> HeadsFit {
    let (d, nh) = (cfg.d_model, cfg.n_head);
    let hd = d / nh;
    let n_f = emb.freqs.len();
    assert!(
        2 * n_f <= hd,
        "position features ({}) exceed the head dimension {hd}",
        2 * n_f
    );
    let mut wq = Mat::<f64>::zeros(d, d);
    let mut wk = Mat::<f64>::zeros(d, d);
    let mut wv = Mat::<f64>::zeros(d, d);
    let mut wo = Mat::<f64>::zeros(d, d);
    let amp = emb.alpha0 * emb.pos_norm / (n_f as f64).sqrt();
    let b = &emb.space.pos;
    let bt = &emb.space.tok;
    let r = bt.ncols();
    // Token coordinates of the LayerNormed layer-0 input, and of the readout.
    let xt = Mat::from_fn(emb.coords.nrows(), r, |a, j| {
        emb.coords[(a, j)] * emb.alpha0
    });
    let ht = readout * bt; // [V, r]
    let gx = xt.transpose() * &xt;
    let gh = ht.transpose() * &ht;
    let lx = ridge_rel * (0..r).map(|i| gx[(i, i)]).sum::<f64>() / r as f64;
    let lh = ridge_rel * (0..r).map(|i| gh[(i, i)]).sum::<f64>() / r as f64;
    let (mut lags, mut betas, mut mins, mut kept) = (vec![], vec![], vec![], vec![]);
    for h in 0..nh {
        let k = h + 1;
        let beta = sharpness(&emb.freqs, k, cfg.context, target_attention);
        let gamma = (beta * (hd as f64).sqrt() / (amp * amp * n_f as f64)).sqrt();
        for j in 0..n_f {
            let (c, s) = (
                (emb.freqs[j] * k as f64).cos(),
                (emb.freqs[j] * k as f64).sin(),
            );
            let (r0, r1) = (h * hd + 2 * j, h * hd + 2 * j + 1);
            for i in 0..d {
                let (b0, b1) = (b[(i, 2 * j)], b[(i, 2 * j + 1)]);
                wq[(r0, i)] = gamma * (c * b0 + s * b1);
                wq[(r1, i)] = gamma * (-s * b0 + c * b1);
                wk[(r0, i)] = gamma * b0;
                wk[(r1, i)] = gamma * b1;
            }
        }
        // OV: W^T = (Xt^T Xt + lx)^-1 Xt^T (w T) Ht (Ht^T Ht + lh)^-1 / alpha_f.
        if let Some(t) = lag_stats.get(h) {
            let th = t.apply(ht.as_ref()); // [V, r]
            let core = xt.transpose() * &th * faer::Scale(lag_weight / emb.alpha0); // [r, r]
            let left = ridge_normal(gx.clone(), core, lx); // (Gx)^-1 core
            let wt = ridge_normal(gh.clone(), left.transpose().to_owned(), lh)
                .transpose()
                .to_owned(); // left (Gh)^-1
                             // wt = W^T; W maps input coords to output coords.
            let w = wt.transpose().to_owned();
            let (p, sv, q) = svd_dense(w.as_ref(), hd);
            let total: f64 = w.norm_l2().powi(2);
            kept.push(if total > 0.0 {
                sv.iter().map(|x| x * x).sum::<f64>() / total
            } else {
                1.0
            });
            let v_rows = Mat::from_fn(hd, r, |i, j| q[(j, i)] * sv[i].sqrt()) * bt.transpose(); // [hd, d]
            let o_cols = bt * Mat::from_fn(r, hd, |j, i| p[(j, i)] * sv[i].sqrt()); // [d, hd]
            for i in 0..hd {
                for c in 0..d {
                    wv[(h * hd + i, c)] = v_rows[(i, c)];
                    wo[(c, h * hd + i)] = o_cols[(c, i)];
                }
            }
        } else {
            kept.push(0.0);
        }
        lags.push(k);
        betas.push(beta);
        mins.push(min_attention_on_lag(&emb.freqs, k, cfg.context, beta));
    }
    HeadsFit {
        wq,
        wk,
        wv,
        wo,
        lags,
        beta: betas,
        min_attention: mins,
        ov_energy_kept: kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::embedding::frequencies;

    #[test]
    fn sharper_scores_concentrate_on_the_lag() {
        let f = frequencies(8, 64);
        let a1 = min_attention_on_lag(&f, 3, 64, 1.0);
        let beta = sharpness(&f, 3, 64, 0.9);
        let a2 = min_attention_on_lag(&f, 3, 64, beta);
        assert!(a1 < 0.5 && a2 >= 0.9, "{a1} {a2} at beta {beta}");
    }
}
