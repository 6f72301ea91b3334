//! Per-tensor records and their aggregates: components (pooled moments and
//! means over tensors), layers, the model. Group entropies are the
//! numel-weighted mean of the tensors' entropies (a histogram over a pooled
//! [min, max] would be set by the single largest outlier of the whole model;
//! the study's per-layer entropies 3.36-3.90 beside its overall 3.62 read as
//! averages). Kurtosis is pooled: central moments merged over all entries.

use std::collections::BTreeMap;

use resid_io::Component;
use serde::Serialize;

use crate::interlayer::Interlayer;
use crate::moments::Moments;
use crate::verdict::{judge, Evidence, Margins, Verdict};

/// k-means variance explained at one K, with the null's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KmeansFigure {
    pub k: usize,
    pub ve: f64,
    pub ve_null: f64,
    /// VE of the same rows with their entries shuffled (the verdict's null).
    pub ve_shuffled: f64,
}

/// The sampling behind a tensor's matrix measures (see `participation` and
/// `kmeans` for the estimators); each part is absent when exact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sampling {
    /// PR and stable rank from the Gram of a sample of the long side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<crate::participation::PrSample>,
    /// k-means on a row sample and/or with fewer restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmeans: Option<KmeansSample>,
}

/// k-means on `rows` of `of` rows (seeded sample), best of `restarts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KmeansSample {
    pub rows: usize,
    pub of: usize,
    pub restarts: usize,
}

/// Everything measured on one residual tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorRecord {
    pub name: String,
    pub layer: Option<usize>,
    pub component: Component,
    pub role: String,
    pub shape: Vec<usize>,
    pub numel: u64,
    /// Finite entries measured.
    pub finite: u64,
    pub nan: u64,
    pub inf: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub kurtosis: f64,
    /// Sum of r^2.
    pub energy: f64,
    pub entropy_bits: f64,
    pub entropy_null_bits: f64,
    pub entropy_step_bits: f64,
    pub share_above_3std: f64,
    pub top1pct_energy: f64,
    pub top10pct_energy: f64,
    pub hoyer: f64,
    pub gini: f64,
    /// 2-D view (rows, cols) used for the matrix measures; None for 1-D.
    pub matrix: Option<(usize, usize)>,
    pub pr: Option<f64>,
    pub pr_null: Option<f64>,
    pub stable_rank: Option<f64>,
    pub lowfreq_share: Option<f64>,
    pub lowfreq_null_share: Option<f64>,
    pub lowfreq_ratio: Option<f64>,
    /// Rows clustered (sampled).
    pub kmeans_rows: Option<usize>,
    pub kmeans: Option<Vec<KmeansFigure>>,
    /// What was sampled to bound the cost on a large matrix; absent when
    /// every matrix measure was exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// Why something was skipped, or what was unusual.
    pub note: Option<String>,
    #[serde(skip)]
    pub moments: Moments,
}

/// One component (or "all").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentSummary {
    pub tensors: usize,
    pub numel: u64,
    pub kurtosis_pooled: f64,
    pub kurtosis_mean: f64,
    pub entropy_bits: f64,
    pub entropy_null_bits: f64,
    pub entropy_step_bits: f64,
    pub share_above_3std: f64,
    pub top1pct_energy: f64,
    pub pr_mean: Option<f64>,
    pub pr_null_mean: Option<f64>,
    pub lowfreq_ratio: Option<f64>,
    pub energy_share: f64,
}

/// One layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub tensors: usize,
    pub numel: u64,
    pub entropy_bits: f64,
    pub entropy_null_bits: f64,
    pub kurtosis_pooled: f64,
    pub pr_mean: Option<f64>,
    /// Share of the model's sum r^2 in this layer.
    pub norm_share: f64,
}

/// Names present on one side only.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Unmatched {
    pub only_base: Vec<String>,
    pub only_trained: Vec<String>,
    /// Paired tensors that are not floats (integer ids, masks), not measured.
    pub skipped: Vec<String>,
}

/// The whole analysis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub base: String,
    pub trained: String,
    pub seed: u64,
    pub tensors: Vec<TensorRecord>,
    pub components: BTreeMap<String, ComponentSummary>,
    pub layers: Vec<LayerSummary>,
    pub interlayer: Interlayer,
    pub verdict: Verdict,
    pub margins: Margins,
    pub unmatched: Unmatched,
    /// Set in subspace mode (`--subspace-of`): the projection that was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subspace: Option<crate::subspace::SubspaceRecord>,
}

fn wmean<'a>(rs: impl Iterator<Item = &'a TensorRecord>, f: impl Fn(&TensorRecord) -> f64) -> f64 {
    let (mut s, mut w) = (0.0, 0.0);
    for r in rs {
        let v = f(r);
        if v.is_finite() && r.finite > 0 {
            s += v * r.finite as f64;
            w += r.finite as f64;
        }
    }
    if w > 0.0 {
        s / w
    } else {
        f64::NAN
    }
}

fn mean_opt<'a>(
    rs: impl Iterator<Item = &'a TensorRecord>,
    f: impl Fn(&TensorRecord) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = rs.filter_map(f).filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn pooled<'a>(rs: impl Iterator<Item = &'a TensorRecord>) -> Moments {
    rs.fold(Moments::default(), |m, r| m.merge(&r.moments))
}

fn summarize(rs: &[&TensorRecord], total_energy: f64) -> ComponentSummary {
    let it = || rs.iter().copied();
    let kurts: Vec<f64> = it().map(|r| r.kurtosis).filter(|k| k.is_finite()).collect();
    let energy: f64 = it().map(|r| r.energy).sum();
    ComponentSummary {
        tensors: rs.len(),
        numel: it().map(|r| r.numel).sum(),
        kurtosis_pooled: pooled(it()).kurtosis(),
        kurtosis_mean: if kurts.is_empty() {
            f64::NAN
        } else {
            kurts.iter().sum::<f64>() / kurts.len() as f64
        },
        entropy_bits: wmean(it(), |r| r.entropy_bits),
        entropy_null_bits: wmean(it(), |r| r.entropy_null_bits),
        entropy_step_bits: wmean(it(), |r| r.entropy_step_bits),
        share_above_3std: wmean(it(), |r| r.share_above_3std),
        top1pct_energy: wmean(it(), |r| r.top1pct_energy),
        pr_mean: mean_opt(it(), |r| r.pr),
        pr_null_mean: mean_opt(it(), |r| r.pr_null),
        lowfreq_ratio: lowfreq_ratio(it()),
        energy_share: if total_energy > 0.0 {
            energy / total_energy
        } else {
            f64::NAN
        },
    }
}

/// Numel-weighted mean of the tensors' low-frequency ratios.
fn lowfreq_ratio<'a>(rs: impl Iterator<Item = &'a TensorRecord>) -> Option<f64> {
    let (mut s, mut w) = (0.0, 0.0);
    for r in rs {
        if let Some(x) = r.lowfreq_ratio.filter(|x| x.is_finite()) {
            s += x * r.numel as f64;
            w += r.numel as f64;
        }
    }
    (w > 0.0).then(|| s / w)
}

/// Aggregates per-tensor records into the report.
pub fn aggregate(
    base: String,
    trained: String,
    seed: u64,
    mut tensors: Vec<TensorRecord>,
    interlayer: Interlayer,
    margins: Margins,
    unmatched: Unmatched,
) -> Report {
    tensors.sort_by(|a, b| {
        (a.layer.is_none(), a.layer, &a.name).cmp(&(b.layer.is_none(), b.layer, &b.name))
    });
    let total_energy: f64 = tensors.iter().map(|r| r.energy).sum();
    let mut components = BTreeMap::new();
    for c in Component::ALL {
        let rs: Vec<&TensorRecord> = tensors.iter().filter(|r| r.component == c).collect();
        if !rs.is_empty() {
            components.insert(c.name().to_string(), summarize(&rs, total_energy));
        }
    }
    let all: Vec<&TensorRecord> = tensors.iter().collect();
    let all_summary = summarize(&all, total_energy);
    let mut by_layer: BTreeMap<usize, Vec<&TensorRecord>> = BTreeMap::new();
    for r in &tensors {
        if let Some(l) = r.layer {
            by_layer.entry(l).or_default().push(r);
        }
    }
    let layers = by_layer
        .iter()
        .map(|(&l, rs)| {
            let it = || rs.iter().copied();
            LayerSummary {
                layer: l,
                tensors: rs.len(),
                numel: it().map(|r| r.numel).sum(),
                entropy_bits: wmean(it(), |r| r.entropy_bits),
                entropy_null_bits: wmean(it(), |r| r.entropy_null_bits),
                kurtosis_pooled: pooled(it()).kurtosis(),
                pr_mean: mean_opt(it(), |r| r.pr),
                norm_share: if total_energy > 0.0 {
                    it().map(|r| r.energy).sum::<f64>() / total_energy
                } else {
                    f64::NAN
                },
            }
        })
        .collect();
    // Clustering evidence: per K, mean VE and null VE over clustered tensors.
    let mut best_k: Option<(usize, f64, f64)> = None;
    for (i, &k) in crate::kmeans::KS.iter().enumerate() {
        let figs: Vec<KmeansFigure> = tensors
            .iter()
            .filter_map(|r| r.kmeans.as_ref().and_then(|v| v.get(i).copied()))
            .filter(|f| f.ve.is_finite() && f.ve_shuffled.is_finite())
            .collect();
        if figs.is_empty() {
            continue;
        }
        let ve = figs.iter().map(|f| f.ve).sum::<f64>() / figs.len() as f64;
        let vn = figs.iter().map(|f| f.ve_shuffled).sum::<f64>() / figs.len() as f64;
        if best_k.is_none_or(|(_, a, b)| ve - vn > a - b) {
            best_k = Some((k, ve, vn));
        }
    }
    let evidence = Evidence {
        kurtosis_pooled: Some(all_summary.kurtosis_pooled).filter(|k| k.is_finite()),
        top1pct_energy: Some(all_summary.top1pct_energy).filter(|k| k.is_finite()),
        lowfreq_ratio: all_summary.lowfreq_ratio,
        mean_adjacent_r: interlayer.mean_adjacent_r,
        null_band: interlayer.null_band,
        best_k,
    };
    components.insert("all".to_string(), all_summary);
    let verdict = judge(&evidence, &margins);
    Report {
        base,
        trained,
        seed,
        tensors,
        components,
        layers,
        interlayer,
        verdict,
        margins,
        unmatched,
        subspace: None,
    }
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
}
