//! The hypotheses, each judged by one measure against its null with a
//! stated, configurable margin (docs/MEASURES.md, "Verdict"); the margin is
//! printed with the verdict so a reader can see how close each call was.
//! The study's four (sparse, smooth, coordinated, clustered) and what real
//! residuals turned out to be (low-rank, row- or column-sparse, decay-like).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sparsity::GAUSSIAN_TOP1PCT_ENERGY;

/// Thresholds of the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Coordinated: |mean adjacent r of the weight matrices| above this ...
    pub coordinated_r: f64,
    /// ... and above this many null half-bands (2/sqrt(n)).
    pub coordinated_bands: f64,
    /// Clustered: k-means VE above the larger of the shuffled and the
    /// same-covariance null's by more than this, at the best K.
    pub clustered_excess_ve: f64,
    /// Low-rank: PR / Marchenko-Pastur PR below this (energy-weighted over
    /// matrices; Gaussian: about 1).
    #[serde(default = "default_low_rank")]
    pub low_rank_pr_ratio: f64,
    /// Row- / column-sparse: the top 10% of rows (columns) holding more than
    /// this share of the energy (Gaussian: a little over 0.10).
    #[serde(default = "default_line_sparse")]
    pub line_sparse_top10: f64,
    /// Decay-like: the share of the energy along -W_base above this
    /// (independent of the base: about 1/n).
    #[serde(default = "default_decay")]
    pub decay_share: f64,
}

fn default_low_rank() -> f64 {
    0.5
}
fn default_line_sparse() -> f64 {
    0.5
}
fn default_decay() -> f64 {
    0.5
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
            low_rank_pr_ratio: default_low_rank(),
            line_sparse_top10: default_line_sparse(),
            decay_share: default_decay(),
        }
    }
}

/// How many tensors pass a hypothesis's rule on their own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tally {
    pub passing: usize,
    /// Tensors measured.
    pub of: usize,
    /// Share of the residual's energy (sum r^2 over the measured tensors)
    /// in the passing ones.
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub energy_share: f64,
}

/// One hypothesis: is the measure past its null by the margin?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hypothesis {
    pub supported: bool,
    /// The measure (None when no tensor could be measured).
    pub measure: Option<f64>,
    /// The same measure on the null.
    pub null: Option<f64>,
    /// The threshold the measure had to pass.
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub margin: f64,
    /// The rule in words, with the figures.
    pub rule: String,
    /// Tensors passing the same rule one by one (hypotheses measured per tensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Tally>,
}

/// The verdict on every hypothesis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    pub smooth: Hypothesis,
    pub coordinated: Hypothesis,
    pub sparse: Hypothesis,
    pub clustered: Hypothesis,
    pub low_rank: Hypothesis,
    pub row_sparse: Hypothesis,
    pub column_sparse: Hypothesis,
    pub decay_like: Hypothesis,
}

impl Verdict {
    /// (name, hypothesis) in report order: what real residuals are first.
    pub fn all(&self) -> [(&'static str, &Hypothesis); 8] {
        [
            ("low-rank", &self.low_rank),
            ("row-sparse", &self.row_sparse),
            ("column-sparse", &self.column_sparse),
            ("decay-like", &self.decay_like),
            ("sparse", &self.sparse),
            ("smooth", &self.smooth),
            ("coordinated", &self.coordinated),
            ("clustered", &self.clustered),
        ]
    }
}

/// A model-level figure with its null and the per-tensor tally.
#[derive(Clone, Copy, Debug, Default)]
pub struct Weighted {
    pub measure: Option<f64>,
    pub null: Option<f64>,
    pub tally: Option<Tally>,
}

/// The model-level figures the verdict reads.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub kurtosis_pooled: Option<f64>,
    pub top1pct_energy: Option<f64>,
    pub lowfreq_ratio: Option<f64>,
    /// Mean adjacent-layer r of the weight matrices and its null band.
    pub mean_adjacent_r: Option<f64>,
    pub null_band: Option<f64>,
    /// (K, mean VE, mean null VE) at the K with the largest excess; the
    /// null is, per tensor and K, the larger of the shuffled residual's VE
    /// (same values: k-means isolates outlier rows of any heavy-tailed
    /// matrix) and the same-covariance Gaussian's (same spectrum: low rank
    /// alone raises VE).
    pub best_k: Option<(usize, f64, f64)>,
    /// Energy-weighted mean of PR / PR_null over matrices (null 1).
    pub low_rank: Weighted,
    /// Energy-weighted mean top-10% row (column) share and its null.
    pub row_sparse: Weighted,
    pub column_sparse: Weighted,
    /// Energy-weighted share of R along -W_base and its null (1/n).
    pub decay: Weighted,
}

/// The comparison a measure made with its margin, as the rule text shows
/// it: the sign that held, so a reason never reads as the opposite.
fn gt(x: Option<f64>, t: f64) -> &'static str {
    match x {
        Some(v) if v > t => ">",
        Some(_) => "<=",
        None => "vs",
    }
}

fn lt(x: Option<f64>, t: f64) -> &'static str {
    match x {
        Some(v) if v < t => "<",
        Some(_) => ">=",
        None => "vs",
    }
}

fn below(name: &str, w: &Weighted, margin: f64, what: &str) -> Hypothesis {
    Hypothesis {
        supported: w.measure.is_some_and(|m| m < margin),
        measure: w.measure,
        null: w.null,
        margin,
        rule: format!(
            "{name}: {what} {} {} {margin}",
            fmt(w.measure),
            lt(w.measure, margin)
        ),
        tensors: w.tally,
    }
}

fn above(name: &str, w: &Weighted, margin: f64, what: &str) -> Hypothesis {
    Hypothesis {
        supported: w.measure.is_some_and(|m| m > margin),
        measure: w.measure,
        null: w.null,
        margin,
        rule: format!(
            "{name}: {what} {} {} {margin} (null {})",
            fmt(w.measure),
            gt(w.measure, margin),
            fmt(w.null)
        ),
        tensors: w.tally,
    }
}

/// Judges every hypothesis.
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
                "pooled excess kurtosis {} {} {} and top-1% energy share {} {} {:.1}% ({}x Gaussian)",
                fmt(e.kurtosis_pooled),
                gt(e.kurtosis_pooled, m.sparse_kurtosis),
                m.sparse_kurtosis,
                e.top1pct_energy
                    .map_or("n/a".into(), |s| format!("{:.1}%", s * 100.0)),
                gt(e.top1pct_energy, top1_min),
                top1_min * 100.0,
                m.sparse_top1_factor
            ),
            tensors: None,
        }
    };
    let smooth = Hypothesis {
        supported: e.lowfreq_ratio.is_some_and(|r| r > m.smooth_ratio),
        measure: e.lowfreq_ratio,
        null: Some(1.0),
        margin: m.smooth_ratio,
        rule: format!(
            "low-frequency power ratio to null {} {} {}",
            fmt(e.lowfreq_ratio),
            gt(e.lowfreq_ratio, m.smooth_ratio),
            m.smooth_ratio
        ),
        tensors: None,
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
            "|mean adjacent-layer r of the weight matrices| {} {} max({}, {} x null band {})",
            fmt(e.mean_adjacent_r.map(f64::abs)),
            gt(e.mean_adjacent_r.map(f64::abs), threshold),
            m.coordinated_r,
            m.coordinated_bands,
            fmt(e.null_band)
        ),
        tensors: None,
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
                "k-means VE excess over the larger of the shuffled and same-covariance nulls at best K={k}: {:.4} - {:.4} = {:.4} {} {}",
                ve,
                vn,
                ve - vn,
                gt(Some(ve - vn), m.clustered_excess_ve),
                m.clustered_excess_ve
            ),
            None => format!(
                "no 2-D tensor to cluster (excess VE must be > {})",
                m.clustered_excess_ve
            ),
        },
        tensors: None,
    };
    Verdict {
        smooth,
        coordinated,
        sparse,
        clustered,
        low_rank: below(
            "low-rank",
            &e.low_rank,
            m.low_rank_pr_ratio,
            "energy-weighted PR / Marchenko-Pastur PR over matrices",
        ),
        row_sparse: above(
            "row-sparse",
            &e.row_sparse,
            m.line_sparse_top10,
            "energy-weighted share of energy in the top 10% of rows",
        ),
        column_sparse: above(
            "column-sparse",
            &e.column_sparse,
            m.line_sparse_top10,
            "energy-weighted share of energy in the top 10% of columns",
        ),
        decay_like: above(
            "decay-like",
            &e.decay,
            m.decay_share,
            "share of the energy along -W_base",
        ),
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
            ..Default::default()
        };
        let v = judge(&e, &m);
        assert!(v.sparse.supported && !v.smooth.supported);
        // The rule shows the comparison that held, either way.
        assert!(v.sparse.rule.contains("33.0000 > 3"), "{}", v.sparse.rule);
        assert!(v.smooth.rule.contains("0.9600 <= 1.5"), "{}", v.smooth.rule);
        assert!(!v.coordinated.supported && !v.clustered.supported);
        e.top1pct_energy = Some(0.1);
        e.lowfreq_ratio = Some(2.0);
        e.mean_adjacent_r = Some(-0.5);
        e.best_k = Some((4, 0.5, 0.1));
        let v = judge(&e, &m);
        assert!(!v.sparse.supported && v.smooth.supported);
        assert!(v.coordinated.supported && v.clustered.supported);
        assert!(judge(&Evidence::default(), &m)
            .all()
            .iter()
            .all(|(_, h)| !h.supported));
        let w = |x: f64| Weighted {
            measure: Some(x),
            null: None,
            tally: None,
        };
        e.low_rank = w(0.1);
        e.row_sparse = w(0.9);
        e.column_sparse = w(0.12);
        e.decay = w(0.99);
        let v = judge(&e, &m);
        assert!(v.low_rank.supported && v.row_sparse.supported && v.decay_like.supported);
        assert!(!v.column_sparse.supported);
        e.low_rank = w(0.9);
        e.decay = w(0.01);
        let v = judge(&e, &m);
        assert!(!v.low_rank.supported && !v.decay_like.supported);
    }
}
