//! Corpus statistics for the base, gathered once: unigram counts and pair
//! counts at distances 1..=k (distance 1 is the bigram; distance k + 1 feeds
//! the lag-k attention head). The smoothed log-ratio matrices built from
//! them are never stored densely: they are "sparse + rank one" operators,
//! so a 15K vocabulary costs memory in proportion to the pairs seen.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::counts::{unigram_counts, PairCounts};

/// Unigram and pair counts of a token stream.
pub struct Stats {
    pub vocab: usize,
    pub n_tokens: usize,
    pub unigram: Vec<u64>,
    /// `pairs[j]` counts pairs at distance `j + 1`.
    pub pairs: Vec<PairCounts>,
}

impl Stats {
    /// One pass per distance over `tokens` (the distances run in parallel).
    pub fn collect(tokens: &[u32], vocab: usize, max_distance: usize) -> Self {
        let pairs = (1..=max_distance.max(1))
            .into_par_iter()
            .map(|k| PairCounts::count(tokens, vocab, k))
            .collect();
        Stats {
            vocab,
            n_tokens: tokens.len(),
            unigram: unigram_counts(tokens, vocab),
            pairs,
        }
    }

    /// Add-alpha unigram probabilities.
    pub fn unigram_probs(&self, alpha: f64) -> Vec<f64> {
        let denom = self.n_tokens as f64 + alpha * self.vocab as f64;
        self.unigram
            .iter()
            .map(|&c| (c as f64 + alpha) / denom)
            .collect()
    }
}

/// The smoothed log-ratio `M[a, b] = ln P_d(b | a) - ln p(b)` at one
/// distance `d`, with add-alpha smoothing, centred so its low-rank
/// approximation spends no rank on constants: columns lose their
/// frequency-weighted mean (`sum_a p(a) M[a, b]`, which goes into the output
/// bias) and rows their plain mean (softmax ignores a per-row constant).
///
/// With `D[a, b] = ln(c_ab + alpha) - ln alpha` (zero where the pair was
/// never seen), `M = D + rho 1^T - 1 ln p^T`, and the centred matrix is
/// `M_c = (D - 1 w^T) J` with `w = D^T p` and `J = I - 1 1^T / V`.
pub struct LogRatio {
    pub vocab: usize,
    pub distance: usize,
    row_start: Vec<usize>,
    cols: Vec<u32>,
    dvals: Vec<f64>,
    /// `w = D^T p`: the frequency-weighted column mean of `D`.
    w: Vec<f64>,
    /// `sum_a p(a) ln P_d(b | a)`, centred: the part of every row's log-probs
    /// that does not depend on the previous token.
    bias: Vec<f64>,
}

impl LogRatio {
    pub fn new(stats: &Stats, distance: usize, alpha: f64) -> Self {
        let pc = &stats.pairs[distance - 1];
        let v = stats.vocab;
        let p = stats.unigram_probs(alpha);
        let dvals: Vec<f64> = pc
            .vals
            .iter()
            .map(|&c| (c as f64 + alpha).ln() - alpha.ln())
            .collect();
        let mut w = vec![0f64; v];
        for a in 0..v {
            for i in pc.row_start[a]..pc.row_start[a + 1] {
                w[pc.cols[i] as usize] += p[a] * dvals[i];
            }
        }
        // bias_b = sum_a p(a) ln P(b|a) = w_b + sum_a p(a) rho_a (a constant).
        let mean_w = w.iter().sum::<f64>() / v as f64;
        let bias = w.iter().map(|x| x - mean_w).collect();
        LogRatio {
            vocab: v,
            distance,
            row_start: pc.row_start.clone(),
            cols: pc.cols.clone(),
            dvals,
            w,
            bias,
        }
    }

    /// The output bias this statistic implies (centred).
    pub fn bias(&self) -> &[f64] {
        &self.bias
    }

    fn centre_cols(x: MatRef<'_, f64>) -> Mat<f64> {
        let n = x.nrows() as f64;
        let means: Vec<f64> = (0..x.ncols())
            .map(|j| (0..x.nrows()).map(|i| x[(i, j)]).sum::<f64>() / n)
            .collect();
        Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - means[j])
    }

    /// `M_c X` for `X [V, l]`.
    pub fn apply(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let xc = Self::centre_cols(x);
        let l = x.ncols();
        let wx: Vec<f64> = (0..l)
            .map(|j| (0..self.vocab).map(|b| self.w[b] * xc[(b, j)]).sum())
            .collect();
        let rows: Vec<Vec<f64>> = (0..self.vocab)
            .into_par_iter()
            .map(|a| {
                let mut r: Vec<f64> = wx.iter().map(|v| -v).collect();
                for i in self.row_start[a]..self.row_start[a + 1] {
                    let (b, dv) = (self.cols[i] as usize, self.dvals[i]);
                    for (j, rj) in r.iter_mut().enumerate() {
                        *rj += dv * xc[(b, j)];
                    }
                }
                r
            })
            .collect();
        Mat::from_fn(self.vocab, l, |i, j| rows[i][j])
    }

    /// `M_c^T Y` for `Y [V, l]`.
    pub fn apply_t(&self, y: MatRef<'_, f64>) -> Mat<f64> {
        let l = y.ncols();
        let mut out = vec![0f64; self.vocab * l];
        for a in 0..self.vocab {
            for i in self.row_start[a]..self.row_start[a + 1] {
                let (b, dv) = (self.cols[i] as usize, self.dvals[i]);
                let row = &mut out[b * l..(b + 1) * l];
                for (j, o) in row.iter_mut().enumerate() {
                    *o += dv * y[(a, j)];
                }
            }
        }
        let ysum: Vec<f64> = (0..l)
            .map(|j| (0..self.vocab).map(|a| y[(a, j)]).sum())
            .collect();
        let m = Mat::from_fn(self.vocab, l, |b, j| out[b * l + j] - self.w[b] * ysum[j]);
        Self::centre_cols(m.as_ref())
    }

    /// The whole centred matrix (small vocabularies and tests only).
    pub fn dense(&self) -> Mat<f64> {
        let eye = Mat::<f64>::identity(self.vocab, self.vocab);
        self.apply(eye.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_matches_the_definition() {
        let tokens: Vec<u32> = (0..300u32).map(|i| (i * i + 3 * i) % 7 % 5).collect();
        let v = 5;
        let alpha = 0.5;
        let st = Stats::collect(&tokens, v, 2);
        let lr = LogRatio::new(&st, 2, alpha);
        let p = st.unigram_probs(alpha);
        let pc = &st.pairs[1];
        // Direct: M[a,b] = ln P(b|a) - ln p(b); subtract weighted column mean, then row mean.
        let mut m = Mat::from_fn(v, v, |a, b| {
            pc.ln_cond(a as u32, b as u32, alpha) - p[b].ln()
        });
        for b in 0..v {
            let cm: f64 = (0..v).map(|a| p[a] * m[(a, b)]).sum::<f64>() / p.iter().sum::<f64>();
            for a in 0..v {
                m[(a, b)] -= cm;
            }
        }
        // The weighted column mean uses p that sums to 1 up to smoothing; our
        // operator uses w = D^T p exactly, which differs from cm by a constant
        // per column only through sum(p) = 1.
        for a in 0..v {
            let rm: f64 = (0..v).map(|b| m[(a, b)]).sum::<f64>() / v as f64;
            for b in 0..v {
                m[(a, b)] -= rm;
            }
        }
        let got = lr.dense();
        assert!((&got - &m).norm_l2() < 1e-9, "{:?}\n{:?}", got, m);
        // Transpose operator agrees with the dense transpose.
        let y = Mat::from_fn(v, 3, |i, j| (i as f64 - j as f64 * 0.7).sin());
        assert!((lr.apply_t(y.as_ref()) - m.transpose() * &y).norm_l2() < 1e-9);
        // bias + centred ratio rows give back ln P(b|a) up to a per-row constant.
        for a in 0..v {
            let row: Vec<f64> = (0..v)
                .map(|b| lr.bias()[b] + got[(a, b)] - pc.ln_cond(a as u32, b as u32, alpha))
                .collect();
            for x in &row {
                assert!((x - row[0]).abs() < 1e-9);
            }
        }
    }
}
