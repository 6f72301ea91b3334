//! Token and position embeddings of the base.
//!
//! The residual stream is split into blocks of coordinates, each carrying
//! features along zero-mean directions so LayerNorm's mean removal leaves
//! them alone: the token block (the truncated SVD of the centred bigram
//! log-ratio, Levy & Goldberg's PMI-SVD), a two-coordinate "slack" block, and
//! a position block (sinusoids, Vaswani et al., with a constant norm).
//!
//! The slack coordinate tops every token's squared norm up to the same `K`,
//! so `LayerNorm(tok_emb[a] + pos_emb[p])` is exactly `alpha0 * (tok_emb[a] +
//! pos_emb[p])` for one constant `alpha0`: the final LayerNorm becomes a
//! linear map on the zero-layer path, which is what lets a linear
//! unembedding reproduce the low-rank bigram model.
//!
//! Tied heads (`paper` preset) can only express symmetric bilinear forms,
//! so there the token block holds the top eigenvectors of the symmetric
//! part of the log-ratio, positive and negative eigenvalues in two separate
//! blocks (the final LayerNorm's gains carry the signs).

use faer::Mat;

use super::linalg::{svd_dense, svd_randomized, zero_mean_basis};
use super::stats::LogRatio;
use crate::config::GptConfig;

/// Coordinate blocks of the residual stream, each with an orthonormal,
/// zero-mean basis (columns are `d`-vectors).
pub struct Space {
    pub d: usize,
    /// Token directions: first `r_pos` carry positive-weight components, the
    /// rest (tied heads only) negative ones.
    pub tok: Mat<f64>,
    pub r_pos: usize,
    pub slack: Mat<f64>,
    pub pos: Mat<f64>,
    /// Coordinate ranges of the positive and negative token blocks.
    pub pos_block: std::ops::Range<usize>,
    pub neg_block: std::ops::Range<usize>,
}

fn place(d: usize, start: usize, len: usize, k: usize) -> Mat<f64> {
    let b = zero_mean_basis(len, k);
    Mat::from_fn(d, k, |i, j| {
        if (start..start + len).contains(&i) {
            b[(i - start, j)]
        } else {
            0.0
        }
    })
}

impl Space {
    /// `d_pos` position directions; token rank `r_pos + r_neg` takes the rest.
    pub fn new(d: usize, d_pos: usize, r_pos: usize, r_neg: usize) -> Self {
        let mut at = 0;
        let pos_block = at..at + r_pos + 1;
        at += r_pos + 1;
        let neg_block = if r_neg > 0 {
            at..at + r_neg + 1
        } else {
            at..at
        };
        at += neg_block.len();
        let slack_at = at;
        at += 2;
        let pos_at = at;
        at += d_pos + 1;
        assert!(at <= d, "blocks need {at} coordinates, d_model is {d}");
        let tp = place(d, pos_block.start, pos_block.len(), r_pos);
        let tok = if r_neg > 0 {
            let tn = place(d, neg_block.start, neg_block.len(), r_neg);
            Mat::from_fn(d, r_pos + r_neg, |i, j| {
                if j < r_pos {
                    tp[(i, j)]
                } else {
                    tn[(i, j - r_pos)]
                }
            })
        } else {
            tp
        };
        Space {
            d,
            tok,
            r_pos,
            slack: place(d, slack_at, 2, 1),
            pos: place(d, pos_at, d_pos + 1, d_pos),
            pos_block,
            neg_block,
        }
    }

    pub fn rank(&self) -> usize {
        self.tok.ncols()
    }
}

/// Frequencies of the sinusoidal positions: geometric from period 3 to
/// period `4 * context`, so nearby offsets are told apart and far ones never alias.
pub fn frequencies(n_f: usize, context: usize) -> Vec<f64> {
    let (hi, lo) = (
        2.0 * std::f64::consts::PI / 3.0,
        2.0 * std::f64::consts::PI / (4.0 * context as f64),
    );
    (0..n_f)
        .map(|j| {
            if n_f == 1 {
                hi
            } else {
                hi * (lo / hi).powf(j as f64 / (n_f - 1) as f64)
            }
        })
        .collect()
}

/// The embeddings and what the later stages need to know about them.
pub struct EmbeddingFit {
    pub space: Space,
    /// `[V, d]`.
    pub tok_emb: Mat<f64>,
    /// `[context, d]`.
    pub pos_emb: Mat<f64>,
    /// Token coordinates `[V, r]` (the part of `tok_emb` in `space.tok`).
    pub coords: Mat<f64>,
    /// The fitted target `L = left * right^T` (`[V, V]`, never formed for big V).
    pub left: Mat<f64>,
    pub right: Mat<f64>,
    pub freqs: Vec<f64>,
    /// Norm of every position vector.
    pub pos_norm: f64,
    /// LayerNorm's scale on layer-0 inputs: `sqrt(d / (K + pos_norm^2))`.
    pub alpha0: f64,
    /// Singular (or |eigen-|) values kept.
    pub spectrum: Vec<f64>,
    pub scale_c: f64,
}

/// Options that set the embeddings' size.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// RMS of the layer-0 residual stream entries.
    pub stream_rms: f64,
    /// Share of its squared norm held by the position block.
    pub pos_share: f64,
    /// Position directions (even; two per frequency).
    pub d_pos: usize,
    pub seed: u64,
}

/// Fits the embeddings to the bigram log-ratio `m` (distance 1).
pub fn fit(cfg: &GptConfig, m: &LogRatio, opt: &EmbedOptions) -> EmbeddingFit {
    let (v, d) = (cfg.vocab_size, cfg.d_model);
    let n_f = opt.d_pos / 2;
    let reserved = opt.d_pos + 1 + 2 + 1 + usize::from(cfg.tied_head);
    let r = (d - reserved).min(v - 1);
    let dense = v <= 2048;
    // Left/right factors and per-component weights (sign for tied heads).
    let (u, s, vv) = if cfg.tied_head {
        let op = |x: faer::MatRef<'_, f64>| (m.apply(x) + m.apply_t(x)) * faer::Scale(0.5);
        if dense {
            let eye = Mat::<f64>::identity(v, v);
            svd_dense(op(eye.as_ref()).as_ref(), r)
        } else {
            svd_randomized(v, v, r, 2, opt.seed, &op, &op)
        }
    } else if dense {
        svd_dense(m.dense().as_ref(), r)
    } else {
        svd_randomized(v, v, r, 2, opt.seed, &|x| m.apply(x), &|y| m.apply_t(y))
    };
    // For a symmetric matrix, U and V agree up to the eigenvalue's sign.
    let signs: Vec<f64> = (0..r)
        .map(|i| {
            if cfg.tied_head {
                let dot: f64 = (0..v).map(|a| u[(a, i)] * vv[(a, i)]).sum();
                if dot >= 0.0 {
                    1.0
                } else {
                    -1.0
                }
            } else {
                1.0
            }
        })
        .collect();
    // Order components: positive first, then negative (stable).
    let mut order: Vec<usize> = (0..r).filter(|&i| signs[i] > 0.0).collect();
    let r_pos = order.len();
    order.extend((0..r).filter(|&i| signs[i] < 0.0));
    let r_neg = r - r_pos;
    let space = Space::new(d, opt.d_pos, r_pos.max(1), r_neg);
    // If everything was negative (never in practice), keep one empty positive slot.
    let rr = space.rank();
    let raw = Mat::from_fn(v, rr, |a, j| {
        order.get(j).map_or(0.0, |&i| u[(a, i)] * s[i].sqrt())
    });
    let max_norm = (0..v)
        .map(|a| (0..rr).map(|j| raw[(a, j)].powi(2)).sum::<f64>().sqrt())
        .fold(0.0, f64::max)
        .max(1e-12);
    let total = d as f64 * opt.stream_rms.powi(2);
    let k = (1.0 - opt.pos_share) * total;
    let pos_norm = (opt.pos_share * total).sqrt();
    let c = k.sqrt() / max_norm;
    let coords = Mat::from_fn(v, rr, |a, j| raw[(a, j)] * c);
    let slack: Vec<f64> = (0..v)
        .map(|a| {
            (k - (0..rr).map(|j| coords[(a, j)].powi(2)).sum::<f64>())
                .max(0.0)
                .sqrt()
        })
        .collect();
    let tok_emb = &coords * space.tok.transpose()
        + Mat::from_fn(v, 1, |a, _| slack[a]) * space.slack.transpose();
    let freqs = frequencies(n_f, cfg.context);
    let amp = pos_norm / (n_f as f64).sqrt();
    let pcoords = Mat::from_fn(cfg.context, opt.d_pos, |t, i| {
        let w = freqs[i / 2] * t as f64;
        amp * if i % 2 == 0 { w.cos() } else { w.sin() }
    });
    let pos_emb = &pcoords * space.pos.transpose();
    // Target factors: L = U S V^T (untied) or U diag(sign * s) U^T (tied).
    let left = Mat::from_fn(v, rr, |a, j| {
        order.get(j).map_or(0.0, |&i| u[(a, i)] * s[i] * signs[i])
    });
    let right = Mat::from_fn(v, rr, |b, j| {
        order
            .get(j)
            .map_or(0.0, |&i| if cfg.tied_head { u[(b, i)] } else { vv[(b, i)] })
    });
    EmbeddingFit {
        alpha0: (d as f64 / total).sqrt(),
        space,
        tok_emb,
        pos_emb,
        coords,
        left,
        right,
        freqs,
        pos_norm,
        spectrum: order.iter().map(|&i| s[i]).collect(),
        scale_c: c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_blocks_are_orthonormal_and_disjoint() {
        let s = Space::new(64, 8, 40, 10);
        let all = Mat::from_fn(64, 59, |i, j| match j {
            0..50 => s.tok[(i, j)],
            50 => s.slack[(i, 0)],
            _ => s.pos[(i, j - 51)],
        });
        let g = all.transpose() * &all;
        for i in 0..59 {
            let col_sum: f64 = (0..64).map(|r| all[(r, i)]).sum();
            assert!(col_sum.abs() < 1e-12);
            for j in 0..59 {
                assert!((g[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
