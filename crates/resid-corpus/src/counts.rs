//! Count-model baselines on token streams: unigram, add-alpha bigram and
//! "bigram + lags" held-out losses. They are the yardsticks a trained (or
//! corpus-derived) model is compared with: a model that cannot beat the
//! bigram has learnt nothing a table could not hold.
//!
//! Pair counts are held as a CSR matrix (rows = earlier token), built by one
//! sort, so a 15K vocabulary costs memory in proportion to the pairs seen,
//! not V^2; the corpus-derived base reuses them.

use rayon::prelude::*;

/// Total negative log-likelihood over a number of predictions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountLoss {
    pub total_nats: f64,
    pub predictions: usize,
}

impl CountLoss {
    /// Mean nats per predicted token.
    pub fn per_token(&self) -> f64 {
        self.total_nats / self.predictions as f64
    }

    /// Nats per byte, given how many bytes the predicted tokens stand for.
    pub fn per_byte(&self, bytes: usize) -> f64 {
        self.total_nats / bytes as f64
    }
}

/// Occurrences of each token id.
pub fn unigram_counts(tokens: &[u32], vocab: usize) -> Vec<u64> {
    let mut c = vec![0u64; vocab];
    for &t in tokens {
        c[t as usize] += 1;
    }
    c
}

/// Counts of pairs `(tokens[i], tokens[i + lag])` as a sparse CSR matrix.
#[derive(Clone, Debug)]
pub struct PairCounts {
    pub vocab: usize,
    pub lag: usize,
    /// Row `a`'s entries are `row_start[a]..row_start[a + 1]`.
    pub row_start: Vec<usize>,
    pub cols: Vec<u32>,
    pub vals: Vec<u32>,
    /// Sum of row `a` (how often `a` is followed, at this lag, by anything).
    pub row_total: Vec<u64>,
}

impl PairCounts {
    /// Counts all pairs at distance `lag >= 1` (lag 1 = bigram).
    pub fn count(tokens: &[u32], vocab: usize, lag: usize) -> Self {
        assert!(lag >= 1, "lag must be at least 1");
        let v = vocab as u64;
        let mut keys: Vec<u64> = if tokens.len() > lag {
            tokens[..tokens.len() - lag]
                .par_iter()
                .zip(tokens[lag..].par_iter())
                .map(|(&a, &b)| a as u64 * v + b as u64)
                .collect()
        } else {
            Vec::new()
        };
        keys.par_sort_unstable();
        let mut row_start = vec![0usize; vocab + 1];
        let mut cols = Vec::new();
        let mut vals: Vec<u32> = Vec::new();
        let mut row_total = vec![0u64; vocab];
        let mut i = 0;
        while i < keys.len() {
            let k = keys[i];
            let mut j = i;
            while j < keys.len() && keys[j] == k {
                j += 1;
            }
            let (a, b) = ((k / v) as usize, (k % v) as u32);
            row_start[a + 1] += 1;
            cols.push(b);
            vals.push((j - i) as u32);
            row_total[a] += (j - i) as u64;
            i = j;
        }
        for a in 0..vocab {
            row_start[a + 1] += row_start[a];
        }
        PairCounts {
            vocab,
            lag,
            row_start,
            cols,
            vals,
            row_total,
        }
    }

    /// Count of pair `(a, b)`.
    pub fn get(&self, a: u32, b: u32) -> u32 {
        let r = self.row_start[a as usize]..self.row_start[a as usize + 1];
        match self.cols[r.clone()].binary_search(&b) {
            Ok(i) => self.vals[r.start + i],
            Err(_) => 0,
        }
    }

    /// Number of distinct pairs seen.
    pub fn nnz(&self) -> usize {
        self.cols.len()
    }

    /// Add-alpha conditional `ln P(b | a)`.
    pub fn ln_cond(&self, a: u32, b: u32, alpha: f64) -> f64 {
        ((self.get(a, b) as f64 + alpha)
            / (self.row_total[a as usize] as f64 + alpha * self.vocab as f64))
            .ln()
    }
}

/// Add-alpha unigram loss on `heldout[1..]` (the same targets the bigram predicts).
pub fn unigram_loss(train: &[u32], heldout: &[u32], vocab: usize, alpha: f64) -> CountLoss {
    let c = unigram_counts(train, vocab);
    let denom = train.len() as f64 + alpha * vocab as f64;
    let total: f64 = heldout
        .iter()
        .skip(1)
        .map(|&t| -((c[t as usize] as f64 + alpha) / denom).ln())
        .sum();
    CountLoss {
        total_nats: total,
        predictions: heldout.len().saturating_sub(1),
    }
}

/// Add-alpha bigram loss `-ln P(t_{i+1} | t_i)` over consecutive held-out pairs.
pub fn bigram_loss(train: &[u32], heldout: &[u32], vocab: usize, alpha: f64) -> CountLoss {
    let pc = PairCounts::count(train, vocab, 1);
    let total: f64 = heldout
        .par_windows(2)
        .map(|w| -pc.ln_cond(w[0], w[1], alpha))
        .sum();
    CountLoss {
        total_nats: total,
        predictions: heldout.len().saturating_sub(1),
    }
}

/// "Bigram + lags": a log-linear (product-of-experts) model
/// `P(b | ctx) ∝ P(b | t_i) * prod_k (P_k(b | t_{i+1-k}) / p(b))^weight`
/// over lags `k` in `lags` (k = 2 is the token before the current one),
/// each factor add-alpha smoothed, renormalised over the vocabulary.
/// Dense tables: only for vocabularies up to 2048.
pub fn bigram_lags_loss(
    train: &[u32],
    heldout: &[u32],
    vocab: usize,
    alpha: f64,
    lags: &[usize],
    weight: f64,
) -> CountLoss {
    assert!(vocab <= 2048, "bigram_lags_loss uses dense V x V tables");
    let uni = unigram_counts(train, vocab);
    let ln_p: Vec<f64> = uni
        .iter()
        .map(|&c| ((c as f64 + alpha) / (train.len() as f64 + alpha * vocab as f64)).ln())
        .collect();
    let dense = |lag: usize| -> Vec<f64> {
        let pc = PairCounts::count(train, vocab, lag);
        let mut t = vec![0f64; vocab * vocab];
        for a in 0..vocab {
            for b in 0..vocab {
                t[a * vocab + b] = pc.ln_cond(a as u32, b as u32, alpha);
            }
        }
        t
    };
    let big = dense(1);
    let lag_tables: Vec<(usize, Vec<f64>)> = lags
        .iter()
        .map(|&k| {
            let mut t = dense(k);
            for a in 0..vocab {
                for b in 0..vocab {
                    t[a * vocab + b] -= ln_p[b];
                }
            }
            (k, t)
        })
        .collect();
    let max_lag = lags.iter().copied().max().unwrap_or(1).max(1);
    // Predict heldout[i + 1] from heldout[..=i], for i >= max_lag - 1 so every lag exists.
    let start = max_lag - 1;
    let n = heldout.len().saturating_sub(1).saturating_sub(start);
    let total: f64 = (start..start + n)
        .into_par_iter()
        .map(|i| {
            let target = heldout[i + 1] as usize;
            let a = heldout[i] as usize;
            let mut logits: Vec<f64> = big[a * vocab..(a + 1) * vocab].to_vec();
            for (k, t) in &lag_tables {
                let c = heldout[i + 1 - k] as usize;
                for (l, x) in logits.iter_mut().zip(&t[c * vocab..(c + 1) * vocab]) {
                    *l += weight * x;
                }
            }
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            lse - logits[target]
        })
        .sum();
    CountLoss {
        total_nats: total,
        predictions: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAIN: [u32; 5] = [0, 1, 0, 1, 1];
    const HELD: [u32; 3] = [1, 0, 1];

    #[test]
    fn unigram_matches_hand_computation() {
        // c0 = 2, c1 = 3, N = 5, alpha = 1: p0 = 3/7, p1 = 4/7; targets [0, 1].
        let l = unigram_loss(&TRAIN, &HELD, 2, 1.0);
        let want = -((3.0f64 / 7.0).ln() + (4.0f64 / 7.0).ln()) / 2.0;
        assert_eq!(l.predictions, 2);
        assert!((l.per_token() - want).abs() < 1e-12);
    }

    #[test]
    fn bigram_matches_hand_computation() {
        // Pairs (0,1) x2, (1,0), (1,1). Row totals 2, 2. alpha = 1, V = 2:
        // P(0|1) = 2/4, P(1|0) = 3/4.
        let pc = PairCounts::count(&TRAIN, 2, 1);
        assert_eq!(
            (pc.get(0, 1), pc.get(0, 0), pc.get(1, 0), pc.get(1, 1)),
            (2, 0, 1, 1)
        );
        assert_eq!(pc.row_total, vec![2, 2]);
        let l = bigram_loss(&TRAIN, &HELD, 2, 1.0);
        let want = -(0.5f64.ln() + 0.75f64.ln()) / 2.0;
        assert!((l.per_token() - want).abs() < 1e-12);
        assert!((l.per_byte(4) - want * 2.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn lags_with_zero_weight_equal_the_bigram_on_the_same_targets() {
        let train: Vec<u32> = (0..400u32).map(|i| (i * 7 + i / 3) % 5).collect();
        let held: Vec<u32> = (0..50u32).map(|i| (i * 3 + 1) % 5).collect();
        let l = bigram_lags_loss(&train, &held, 5, 0.5, &[2, 3], 0.0);
        let b = bigram_loss(&train, &held[2..], 5, 0.5);
        assert_eq!(l.predictions, b.predictions);
        assert!((l.per_token() - b.per_token()).abs() < 1e-9);
    }

    #[test]
    fn lag_counts_pair_tokens_at_distance() {
        let pc = PairCounts::count(&[1, 2, 3, 1, 2, 3], 4, 2);
        // (1,3), (2,1), (3,2), (1,3)
        assert_eq!(pc.get(1, 3), 2);
        assert_eq!(pc.get(2, 1), 1);
        assert_eq!(pc.nnz(), 3);
    }
}
