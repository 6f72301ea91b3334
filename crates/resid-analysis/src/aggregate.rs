//! Per-tensor records and their aggregates: components (pooled moments and
//! means over tensors), layers, the model. Group entropies are the
//! numel-weighted mean of the tensors' entropies (a histogram over a pooled
//! [min, max] would be set by the single largest outlier of the whole model;
//! the study's per-layer entropies 3.36-3.90 beside its overall 3.62 read as
//! averages). Kurtosis is pooled: central moments merged over all entries.

use std::collections::BTreeMap;

use resid_io::Component;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::interlayer::Interlayer;
use crate::moments::Moments;
use crate::verdict::{judge, Evidence, Margins, Tally, Verdict, Weighted};

/// k-means variance explained at one K, with the null's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KmeansFigure {
    pub k: usize,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub ve: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub ve_null: f64,
    /// VE of the same rows with their entries shuffled (keeps the values'
    /// tails, destroys low rank).
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub ve_shuffled: f64,
    /// VE of Gaussian rows with the rows' own covariance (keeps the
    /// spectrum, has no types).
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub ve_same_cov: f64,
}

impl KmeansFigure {
    /// The clustering null: the larger of the shuffled and same-covariance VE.
    pub fn ve_null_max(&self) -> f64 {
        self.ve_shuffled.max(self.ve_same_cov)
    }
}

/// The sampling behind a tensor's matrix measures (see `participation` and
/// `kmeans` for the estimators); each part is absent when exact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Sampling {
    /// PR and stable rank from the Gram of a sample of the long side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<crate::participation::PrSample>,
    /// k-means on a row sample and/or with fewer restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmeans: Option<KmeansSample>,
}

/// k-means on `rows` of `of` rows (seeded sample), best of `restarts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KmeansSample {
    pub rows: usize,
    pub of: usize,
    pub restarts: usize,
}

/// Everything measured on one residual tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TensorRecord {
    pub name: String,
    pub layer: Option<usize>,
    #[schemars(schema_with = "crate::json::component_schema")]
    pub component: Component,
    pub role: String,
    pub shape: Vec<usize>,
    pub numel: u64,
    /// Finite entries measured.
    pub finite: u64,
    pub nan: u64,
    pub inf: u64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub mean: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub std: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub min: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub max: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub kurtosis: f64,
    /// Sum of r^2.
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub energy: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_null_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_step_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub share_above_3std: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top1pct_energy: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top10pct_energy: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub hoyer: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub gini: f64,
    /// 2-D view (rows, cols) used for the matrix measures; None for 1-D.
    pub matrix: Option<(usize, usize)>,
    pub pr: Option<f64>,
    pub pr_null: Option<f64>,
    pub stable_rank: Option<f64>,
    /// Stable rank of an i.i.d. matrix of the shape.
    pub stable_rank_null: Option<f64>,
    /// Fewest singular directions holding 90% / 99% of the energy, and the
    /// Marchenko-Pastur expectation of the same.
    pub energy_rank_90: Option<usize>,
    pub energy_rank_99: Option<usize>,
    pub energy_rank_90_null: Option<f64>,
    pub energy_rank_99_null: Option<f64>,
    /// Energy shares of the top rows / columns, against the Gaussian null.
    pub row_shares: Option<crate::lines::LineShares>,
    pub col_shares: Option<crate::lines::LineShares>,
    /// R against W_base (absent without a base).
    pub decay: Option<crate::lines::Decay>,
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
    /// Central moments of the finite entries, so groups can be pooled
    /// exactly by whoever reads the record.
    pub moments: Moments,
}

/// One component (or "all").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentSummary {
    pub tensors: usize,
    pub numel: u64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub kurtosis_pooled: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub kurtosis_mean: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_null_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_step_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub share_above_3std: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top1pct_energy: f64,
    pub pr_mean: Option<f64>,
    pub pr_null_mean: Option<f64>,
    pub lowfreq_ratio: Option<f64>,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub energy_share: f64,
}

/// One layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LayerSummary {
    pub layer: usize,
    pub tensors: usize,
    pub numel: u64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub entropy_null_bits: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub kurtosis_pooled: f64,
    pub pr_mean: Option<f64>,
    /// Share of the model's sum r^2 in this layer.
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub norm_share: f64,
}

/// Names present on one side only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Unmatched {
    pub only_base: Vec<String>,
    pub only_trained: Vec<String>,
    /// Paired tensors that are not floats (integer ids, masks), not measured.
    pub skipped: Vec<String>,
}

/// Figures as the study computed them, kept for its tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StudyFigures {
    /// Mean adjacent-layer r over every role, matrices and 1-D parameters
    /// alike (confounded by norms and biases; the verdict reads the matrices).
    pub mean_adjacent_r_pooled: Option<f64>,
    /// k-means VE excess over the entry-shuffled null alone, at its best K
    /// (low rank alone raises it; the verdict also beats a same-covariance null).
    pub kmeans_best_k_shuffled: Option<usize>,
    pub kmeans_excess_ve_shuffled: Option<f64>,
}

/// The per-component summaries: every tensor ("all") and each component
/// that has tensors (written in this order, as a JSON object keyed by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Components {
    pub all: ComponentSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<ComponentSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<ComponentSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp: Option<ComponentSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<ComponentSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert: Option<ComponentSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<ComponentSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<ComponentSummary>,
}

impl Components {
    /// The summary of one component (None: no tensor of it).
    pub fn get(&self, c: Component) -> Option<&ComponentSummary> {
        self.slot(c).as_ref()
    }

    fn slot(&self, c: Component) -> &Option<ComponentSummary> {
        match c {
            Component::Attention => &self.attention,
            Component::Mlp => &self.mlp,
            Component::Embedding => &self.embedding,
            Component::Norm => &self.norm,
            Component::Expert => &self.expert,
            Component::Router => &self.router,
            Component::Other => &self.other,
        }
    }

    fn set(&mut self, c: Component, v: ComponentSummary) {
        let slot = match c {
            Component::Attention => &mut self.attention,
            Component::Mlp => &mut self.mlp,
            Component::Embedding => &mut self.embedding,
            Component::Norm => &mut self.norm,
            Component::Expert => &mut self.expert,
            Component::Router => &mut self.router,
            Component::Other => &mut self.other,
        };
        *slot = Some(v);
    }

    /// ("all", summary), then each present component by name, in JSON order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &ComponentSummary)> {
        let mut by: Vec<(&'static str, &ComponentSummary)> = Component::ALL
            .iter()
            .filter_map(|&c| self.get(c).map(|s| (c.name(), s)))
            .collect();
        by.sort_by_key(|(n, _)| *n);
        std::iter::once(("all", &self.all)).chain(by)
    }
}

/// The whole analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Version of this record's layout ([`crate::json::SCHEMA_VERSION`]);
    /// the JSON Schema is docs/report.schema.json.
    pub schema_version: u32,
    pub base: String,
    pub trained: String,
    pub seed: u64,
    pub tensors: Vec<TensorRecord>,
    pub components: Components,
    pub layers: Vec<LayerSummary>,
    pub interlayer: Interlayer,
    pub verdict: Verdict,
    /// The study's own figures, measured as the study measured them (the
    /// verdict uses the fixed measures instead).
    pub study: StudyFigures,
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
    let mut components = Components::default();
    for c in Component::ALL {
        let rs: Vec<&TensorRecord> = tensors.iter().filter(|r| r.component == c).collect();
        if !rs.is_empty() {
            components.set(c, summarize(&rs, total_energy));
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
    let best_k = best_k_of(&tensors, KmeansFigure::ve_null_max);
    let study_k = best_k_of(&tensors, |f| f.ve_shuffled);
    let evidence = Evidence {
        kurtosis_pooled: Some(all_summary.kurtosis_pooled).filter(|k| k.is_finite()),
        top1pct_energy: Some(all_summary.top1pct_energy).filter(|k| k.is_finite()),
        lowfreq_ratio: all_summary.lowfreq_ratio,
        mean_adjacent_r: interlayer.matrices.mean_adjacent_r,
        null_band: interlayer.matrices.null_band,
        best_k,
        low_rank: weighted(
            &tensors,
            |r| Some((r.pr? / r.pr_null?, 1.0)),
            |x| x < margins.low_rank_pr_ratio,
        ),
        row_sparse: weighted(
            &tensors,
            |r| r.row_shares.map(|s| (s.top10pct, s.top10pct_null)),
            |x| x > margins.line_sparse_top10,
        ),
        column_sparse: weighted(
            &tensors,
            |r| r.col_shares.map(|s| (s.top10pct, s.top10pct_null)),
            |x| x > margins.line_sparse_top10,
        ),
        decay: weighted(
            &tensors,
            |r| r.decay.map(|d| (d.share, 1.0 / r.finite.max(1) as f64)),
            |x| x > margins.decay_share,
        ),
    };
    let study = StudyFigures {
        mean_adjacent_r_pooled: interlayer.mean_adjacent_r,
        kmeans_best_k_shuffled: study_k.map(|b| b.0),
        kmeans_excess_ve_shuffled: study_k.map(|b| b.1 - b.2),
    };
    components.all = all_summary;
    let verdict = judge(&evidence, &margins);
    Report {
        schema_version: crate::json::SCHEMA_VERSION,
        base,
        trained,
        seed,
        tensors,
        components,
        layers,
        interlayer,
        verdict,
        study,
        margins,
        unmatched,
        subspace: None,
    }
}

/// (K, mean VE, mean null VE) at the K whose mean excess over `null` is
/// largest, over the tensors clustered at that K.
fn best_k_of(
    tensors: &[TensorRecord],
    null: impl Fn(&KmeansFigure) -> f64,
) -> Option<(usize, f64, f64)> {
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, &k) in crate::kmeans::KS.iter().enumerate() {
        let figs: Vec<(f64, f64)> = tensors
            .iter()
            .filter_map(|r| r.kmeans.as_ref().and_then(|v| v.get(i)))
            .map(|f| (f.ve, null(f)))
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .collect();
        if figs.is_empty() {
            continue;
        }
        let ve = figs.iter().map(|f| f.0).sum::<f64>() / figs.len() as f64;
        let vn = figs.iter().map(|f| f.1).sum::<f64>() / figs.len() as f64;
        if best.is_none_or(|(_, a, b)| ve - vn > a - b) {
            best = Some((k, ve, vn));
        }
    }
    best
}

/// Energy-weighted mean of a per-tensor (measure, null) over the tensors
/// that have it, with the tally of tensors whose measure passes `rule`.
fn weighted(
    tensors: &[TensorRecord],
    of: impl Fn(&TensorRecord) -> Option<(f64, f64)>,
    rule: impl Fn(f64) -> bool,
) -> Weighted {
    let (mut sm, mut sn, mut w, mut wp) = (0.0, 0.0, 0.0, 0.0);
    let (mut passing, mut n) = (0, 0);
    for r in tensors {
        let Some((m, nl)) = of(r).filter(|(m, nl)| m.is_finite() && nl.is_finite()) else {
            continue;
        };
        let e = r.energy;
        if !(e.is_finite() && e > 0.0) {
            continue;
        }
        n += 1;
        sm += m * e;
        sn += nl * e;
        w += e;
        if rule(m) {
            passing += 1;
            wp += e;
        }
    }
    if n == 0 {
        return Weighted::default();
    }
    Weighted {
        measure: Some(sm / w),
        null: Some(sn / w),
        tally: Some(Tally {
            passing,
            of: n,
            energy_share: wp / w,
        }),
    }
}

impl Report {
    /// The report as pretty JSON (NaN, a measure not taken, as null).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// Reads a report written by [`Report::to_json`], refusing one of
    /// another schema version.
    pub fn from_json(text: &str) -> Result<Report, crate::json::ReportJsonError> {
        crate::json::from_str(text)
    }
}
