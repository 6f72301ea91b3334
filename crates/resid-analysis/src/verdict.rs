//! The four hypotheses of the study, each judged by one measure against its
//! null with a stated, configurable margin; the margin is printed with the
//! verdict so a reader can see how close each call was.

use serde::{Deserialize, Serialize};

use crate::sparsity::GAUSSIAN_TOP1PCT_ENERGY;

/// Thresholds of the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Margins {
    /// Sparse: pooled excess kurtosis (all tensors) above this (Gaussian: 0) ...
    pub sparse_kurtosis: f64,
    /// ... and the top 1% of entries by |r| holding more than this many times
    /// the Gaussian's share of the energy (8.45%). (The share beyond 3 std is
    /// reported but not used: a very sparse residual, say 0.5% non-zero, has
    /// fewer entries beyond 3 std than a Gaussian.)
    pub sparse_top1_factor: f64,
    /// Smooth: low-frequency power ratio to the null above this (white noise: 1).
    pub smooth_ratio: f64,
    /// Coordinated: |mean adjacent r| above this ...
    pub coordinated_r: f64,
    /// ... and above this many null half-bands (2/sqrt(n)).
    pub coordinated_bands: f64,
    /// Clustered: k-means VE above the shuffled null's by more than this, at the best K.
    pub clustered_excess_ve: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Margins {
            sparse_kurtosis: 3.0,
            sparse_top1_factor: 2.0,
            smooth_ratio: 1.5,
            coordinated_r: 0.1,
            coordinated_bands: 2.0,
            clustered_excess_ve: 0.05,
        }
    }
}

/// One hypothesis: is the measure past its null by the margin?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub supported: bool,
    /// The measure (None when no tensor could be measured).
    pub measure: Option<f64>,
    /// The same measure on the Gaussian null.
    pub null: Option<f64>,
    /// The threshold the measure had to pass.
    pub margin: f64,
    /// The rule in words, with the figures.
    pub rule: String,
}

/// The verdict on the four hypotheses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub smooth: Hypothesis,
    pub coordinated: Hypothesis,
    pub sparse: Hypothesis,
    pub clustered: Hypothesis,
}

/// The model-level figures the verdict reads.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub kurtosis_pooled: Option<f64>,
    pub top1pct_energy: Option<f64>,
    pub lowfreq_ratio: Option<f64>,
    pub mean_adjacent_r: Option<f64>,
    pub null_band: Option<f64>,
    /// (K, mean VE, mean null VE) at the K with the largest excess; the
    /// null here is the shuffled residual (same values, positions permuted),
    /// which keeps heavy tails: k-means isolates outlier rows of any
    /// heavy-tailed matrix, and a Gaussian null would call that clustering.
    pub best_k: Option<(usize, f64, f64)>,
}

/// Judges the four hypotheses.
pub fn judge(e: &Evidence, m: &Margins) -> Verdict {
    let top1_min = m.sparse_top1_factor * GAUSSIAN_TOP1PCT_ENERGY;
    let sparse = {
        let ok = matches!((e.kurtosis_pooled, e.top1pct_energy),
            (Some(k), Some(s)) if k > m.sparse_kurtosis && s > top1_min);
        Hypothesis {
            supported: ok,
            measure: e.kurtosis_pooled,
            null: Some(0.0),
            margin: m.sparse_kurtosis,
            rule: format!(
                "pooled excess kurtosis {} > {} and top-1% energy share {} > {:.1}% ({}x Gaussian)",
                fmt(e.kurtosis_pooled),
                m.sparse_kurtosis,
                e.top1pct_energy
                    .map_or("n/a".into(), |s| format!("{:.1}%", s * 100.0)),
                top1_min * 100.0,
                m.sparse_top1_factor
            ),
        }
    };
    let smooth = Hypothesis {
        supported: e.lowfreq_ratio.is_some_and(|r| r > m.smooth_ratio),
        measure: e.lowfreq_ratio,
        null: Some(1.0),
        margin: m.smooth_ratio,
        rule: format!(
            "low-frequency power ratio to null {} > {}",
            fmt(e.lowfreq_ratio),
            m.smooth_ratio
        ),
    };
    let threshold = m
        .coordinated_r
        .max(m.coordinated_bands * e.null_band.unwrap_or(0.0));
    let coordinated = Hypothesis {
        supported: e.mean_adjacent_r.is_some_and(|r| r.abs() > threshold),
        measure: e.mean_adjacent_r,
        null: Some(0.0),
        margin: threshold,
        rule: format!(
            "|mean adjacent-layer r| {} > max({}, {} x null band {})",
            fmt(e.mean_adjacent_r.map(f64::abs)),
            m.coordinated_r,
            m.coordinated_bands,
            fmt(e.null_band)
        ),
    };
    let clustered = Hypothesis {
        supported: e
            .best_k
            .is_some_and(|(_, ve, vn)| ve - vn > m.clustered_excess_ve),
        measure: e.best_k.map(|b| b.1),
        null: e.best_k.map(|b| b.2),
        margin: m.clustered_excess_ve,
        rule: match e.best_k {
            Some((k, ve, vn)) => format!(
                "k-means VE excess over shuffled null at best K={k}: {:.4} - {:.4} = {:.4} > {}",
                ve,
                vn,
                ve - vn,
                m.clustered_excess_ve
            ),
            None => format!(
                "no 2-D tensor to cluster (excess VE must be > {})",
                m.clustered_excess_ve
            ),
        },
    };
    Verdict {
        smooth,
        coordinated,
        sparse,
        clustered,
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_decide() {
        let m = Margins::default();
        let mut e = Evidence {
            kurtosis_pooled: Some(33.0),
            top1pct_energy: Some(0.5),
            lowfreq_ratio: Some(0.96),
            mean_adjacent_r: Some(0.007),
            null_band: Some(0.004),
            best_k: Some((16, 0.10, 0.09)),
        };
        let v = judge(&e, &m);
        assert!(v.sparse.supported && !v.smooth.supported);
        assert!(!v.coordinated.supported && !v.clustered.supported);
        e.top1pct_energy = Some(0.1);
        e.lowfreq_ratio = Some(2.0);
        e.mean_adjacent_r = Some(-0.5);
        e.best_k = Some((4, 0.5, 0.1));
        let v = judge(&e, &m);
        assert!(!v.sparse.supported && v.smooth.supported);
        assert!(v.coordinated.supported && v.clustered.supported);
        assert!(judge(&Evidence::default(), &m).rule_free());
    }

    impl Verdict {
        fn rule_free(&self) -> bool {
            !self.sparse.supported
                && !self.smooth.supported
                && !self.coordinated.supported
                && !self.clustered.supported
        }
    }
}
