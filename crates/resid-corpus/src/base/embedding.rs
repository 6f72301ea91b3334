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
//! A tied head alone can only express symmetric bilinear forms. [`fit`]
//! gives the top eigenvectors of the symmetric part of the log-ratio,
//! positive and negative eigenvalues in two blocks (the final LayerNorm's
//! gains carry the signs); [`from_bilinear`] takes a cross-entropy fit with
//! a free core instead, whose asymmetric part a rotation of the token block
//! by the last MLP carries (docs/BASE.md, "Tied heads").

use faer::Mat;

use super::bigram_fit::Bilinear;
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

    /// Every direction on its own pair of coordinates, `(e_2j - e_2j+1) /
    /// sqrt 2`: `r` token directions, then the slack, then the positions'
    /// zero-mean block. Per-coordinate gains then act on each token direction
    /// alone (`S^T diag(g) S` is diagonal), which a free bilinear core needs.
    pub fn paired(d: usize, d_pos: usize, r: usize) -> Self {
        let pos_at = 2 * r + 2;
        assert!(
            pos_at + d_pos < d,
            "paired blocks need {} coordinates, d_model is {d}",
            pos_at + d_pos + 1
        );
        let pair = |j: usize| {
            let h = std::f64::consts::FRAC_1_SQRT_2;
            move |i: usize| {
                if i == 2 * j {
                    h
                } else if i == 2 * j + 1 {
                    -h
                } else {
                    0.0
                }
            }
        };
        Space {
            d,
            tok: Mat::from_fn(d, r, |i, j| pair(j)(i)),
            r_pos: r,
            slack: Mat::from_fn(d, 1, |i, _| pair(r)(i)),
            pos: place(d, pos_at, d_pos + 1, d_pos),
            pos_block: 0..2 * r,
            neg_block: 2 * r..2 * r,
        }
    }

    /// Token directions that [`Space::paired`] fits into `d` coordinates.
    pub fn paired_rank(d: usize, d_pos: usize) -> usize {
        d.saturating_sub(d_pos + 3) / 2
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
    /// Tied heads fitted by cross-entropy: the rotation `B [r, r]` of the
    /// token coordinates that the last MLP's linear units apply.
    pub rotation: Option<Mat<f64>>,
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
    // If everything was negative (never in practice), keep one empty positive slot.
    let rr = r_pos.max(1) + r_neg;
    let raw = Mat::from_fn(v, rr, |a, j| {
        order.get(j).map_or(0.0, |&i| u[(a, i)] * s[i].sqrt())
    });
    // Target factors: L = U S V^T (untied) or U diag(sign * s) U^T (tied).
    let left = Mat::from_fn(v, rr, |a, j| {
        order.get(j).map_or(0.0, |&i| u[(a, i)] * s[i] * signs[i])
    });
    let right = Mat::from_fn(v, rr, |b, j| {
        order
            .get(j)
            .map_or(0.0, |&i| if cfg.tied_head { u[(b, i)] } else { vv[(b, i)] })
    });
    let spectrum = order.iter().map(|&i| s[i]).collect();
    let space = Space::new(d, opt.d_pos, r_pos.max(1), r_neg);
    assemble(cfg, opt, space, raw, left, right, spectrum, None)
}

/// The tied-head embedding of a cross-entropy-fitted bilinear bigram
/// `e_a^T W e_b` ([`super::bigram_fit`]). With `W = U S V^T`, token
/// coordinates `c = kappa E V` and the rotation `B = U^T V`, the logits
/// `c_b^T (S / kappa^2) B c_a` equal the fit: the gains carry `S` (all
/// positive, one token block) and the last MLP's linear units rotate the
/// token block by `B` ([`EmbeddingFit::rotation`]). A rotation keeps every
/// token's norm, so the final LayerNorm stays linear on the zero-layer path.
pub fn from_bilinear(cfg: &GptConfig, fit: &Bilinear, opt: &EmbedOptions) -> EmbeddingFit {
    let (v, r) = (fit.vocab, fit.rank);
    let e = Mat::from_fn(v, r, |a, j| fit.e[a * r + j] as f64);
    let w = Mat::from_fn(r, r, |i, j| fit.w[i * r + j] as f64);
    let (uw, sw, vw) = svd_dense(w.as_ref(), r);
    let raw = &e * &vw;
    let rotation = uw.transpose() * &vw;
    let left = &e * &w;
    let space = Space::paired(cfg.d_model, opt.d_pos, r);
    assemble(cfg, opt, space, raw, left, e, sw, Some(rotation))
}

/// Scales raw token coordinates to the stream's size, tops their norms up
/// with the slack coordinate and adds the positions.
#[allow(clippy::too_many_arguments)]
fn assemble(
    cfg: &GptConfig,
    opt: &EmbedOptions,
    space: Space,
    raw: Mat<f64>,
    left: Mat<f64>,
    right: Mat<f64>,
    spectrum: Vec<f64>,
    rotation: Option<Mat<f64>>,
) -> EmbeddingFit {
    let (v, d) = (raw.nrows(), cfg.d_model);
    let rr = space.rank();
    let n_f = opt.d_pos / 2;
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
        spectrum,
        scale_c: c,
        rotation,
    }
}

impl EmbeddingFit {
    /// The map the stream goes through between the embedding and the final
    /// LayerNorm on the zero-layer path, `[d, d]` acting on column vectors:
    /// `I + S (B - I) S^T` with `S` the token directions (the identity
    /// without a rotation).
    pub fn stream_map(&self) -> Mat<f64> {
        let d = self.space.d;
        let mut t = Mat::<f64>::identity(d, d);
        if let Some(b) = &self.rotation {
            let s = &self.space.tok;
            let r = b.nrows();
            let bm = Mat::from_fn(r, r, |i, j| b[(i, j)] - if i == j { 1.0 } else { 0.0 });
            t += s * bm * s.transpose();
        }
        t
    }

    /// The bilinear bigram these embeddings start from (tied heads): `E =
    /// U sqrt|lambda|` and `W = diag(sign lambda)` over the `rank` largest
    /// `|lambda|`, so `E W E^T` is the symmetric low-rank target cut there.
    pub fn symmetric_bilinear(&self, bias: &[f64], rank: usize) -> Bilinear {
        let v = self.right.nrows();
        let mut keep: Vec<usize> = (0..self.right.ncols()).collect();
        keep.sort_by(|&i, &j| self.spectrum[j].total_cmp(&self.spectrum[i]));
        keep.truncate(rank);
        let r = keep.len();
        let mut e = Vec::with_capacity(v * r);
        let mut w = vec![0f32; r * r];
        let scale: Vec<f64> = keep
            .iter()
            .enumerate()
            .map(|(k, &j)| {
                let dot: f64 = (0..v).map(|a| self.left[(a, j)] * self.right[(a, j)]).sum();
                w[k * r + k] = if dot >= 0.0 { 1.0 } else { -1.0 };
                self.spectrum[j].sqrt()
            })
            .collect();
        for a in 0..v {
            for (k, &j) in keep.iter().enumerate() {
                e.push((self.right[(a, j)] * scale[k]) as f32);
            }
        }
        Bilinear {
            vocab: v,
            rank: r,
            e,
            w,
            bias: bias.iter().map(|&x| x as f32).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_directions_take_per_coordinate_gains_one_by_one() {
        let (d, d_pos) = (40, 6);
        let r = Space::paired_rank(d, d_pos);
        let s = Space::paired(d, d_pos, r);
        assert_eq!((r, s.rank()), (15, 15));
        let all = Mat::from_fn(d, r + 1 + d_pos, |i, j| match j {
            j if j < r => s.tok[(i, j)],
            j if j == r => s.slack[(i, 0)],
            j => s.pos[(i, j - r - 1)],
        });
        let g = all.transpose() * &all;
        for i in 0..g.nrows() {
            let col_sum: f64 = (0..d).map(|k| all[(k, i)]).sum();
            assert!(col_sum.abs() < 1e-12);
            for j in 0..g.ncols() {
                assert!((g[(i, j)] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // Gains equal on each pair act on that direction alone.
        let gains: Vec<f64> = (0..d).map(|i| 1.0 + (i / 2) as f64).collect();
        let sg = Mat::from_fn(d, r, |i, j| s.tok[(i, j)] * gains[i]);
        let core = s.tok.transpose() * sg;
        for i in 0..r {
            for j in 0..r {
                let want = if i == j { 1.0 + i as f64 } else { 0.0 };
                assert!((core[(i, j)] - want).abs() < 1e-12, "{i} {j}");
            }
        }
    }

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
