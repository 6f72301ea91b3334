//! Inter-layer coordination: Pearson r between the flattened residuals of the
//! same tensor (same name pattern, role and shape) in adjacent layers, and
//! between its first and last layer. Streaming: each tensor leaves a
//! fixed-seed stratified sample of at most `MAX_SAMPLE` entries (the same
//! positions for every tensor of that size, so entries correspond), and a
//! sample is dropped as soon as both neighbours have used it (first and last
//! layers are kept for the first-last r). Tensors up to `MAX_SAMPLE` entries
//! are used whole, so r is exact for them. Null band: +-2/sqrt(n) with n the
//! entries compared (docs/MEASURES.md, "Coordination").
//!
//! Weight matrices and 1-D parameters (norm weights, biases) are reported
//! apart: a 384-entry norm's r has a null band of +-0.10 beside a matrix's
//! +-0.005, and norms move together in every layer (a shared shift), so a
//! mean over all roles says more about the norms than about the matrices.
//! The verdict reads the matrices; the pooled mean is kept as the study's
//! figure.
//!
//! Beside r, each matrix pair carries the overlap of its top singular
//! subspaces on the residual-stream side ([`crate::overlap`]), which a
//! reordering of hidden units cannot hide.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Entries kept per tensor for r (1 MiB of f32).
pub const MAX_SAMPLE: usize = 1 << 18;

/// Stratified sample positions: one per stratum of n/m entries, from a seed
/// that depends only on (seed, n), so same-size tensors share positions.
pub fn sample_positions(n: usize, seed: u64) -> Option<Vec<usize>> {
    if n <= MAX_SAMPLE {
        return None;
    }
    let m = MAX_SAMPLE;
    let mut rng = ChaCha8Rng::seed_from_u64(crate::null::mix(seed, n as u64));
    Some(
        (0..m)
            .map(|i| {
                let lo = (i as u128 * n as u128 / m as u128) as usize;
                let hi = ((i + 1) as u128 * n as u128 / m as u128) as usize;
                rng.random_range(lo..hi.max(lo + 1))
            })
            .collect(),
    )
}

/// The sample of `x` used for r (non-finite entries become 0).
pub fn take_sample(x: &[f32], seed: u64) -> Vec<f32> {
    let clean = |v: f32| if v.is_finite() { v } else { 0.0 };
    match sample_positions(x.len(), seed) {
        None => x.iter().map(|&v| clean(v)).collect(),
        Some(p) => p.iter().map(|&i| clean(x[i])).collect(),
    }
}

/// Pearson correlation in f64 (NaN when either side is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return f64::NAN;
    }
    let ma = a[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let mb = b[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let (x, y) = (a[i] as f64 - ma, b[i] as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}

/// Whether a parameter is a weight matrix or a 1-D vector (norm weight, bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    Matrix,
    Vector,
}

impl ParamKind {
    /// Matrix when the shape has a 2-D view (see [`crate::driver::matrix_view`]).
    pub fn of(shape: &[usize]) -> ParamKind {
        if crate::driver::matrix_view(shape).is_some() {
            ParamKind::Matrix
        } else {
            ParamKind::Vector
        }
    }
}

/// One correlation between two layers of one tensor pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LayerPair {
    pub role: String,
    pub kind: ParamKind,
    /// Name pattern with the layer index as `*`.
    pub tensor: String,
    pub a: usize,
    pub b: usize,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub r: f64,
    /// Entries compared.
    pub n: usize,
    /// Overlap of the two top-k singular subspaces on the residual-stream
    /// side (mean cos^2 of the principal angles; matrices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    /// Its null: the mean overlap of random k-dim subspaces, k / dim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_null: Option<f64>,
    /// Null std of one pair's overlap (closed form, [`crate::overlap::overlap_null`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_null_std: Option<f64>,
}

impl LayerPair {
    /// This pair's own null band, 2/sqrt(n).
    pub fn band(&self) -> f64 {
        2.0 / (self.n.max(1) as f64).sqrt()
    }
}

/// Coordination of one kind of parameter (matrices or vectors).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KindCoordination {
    /// Adjacent-layer pairs of this kind.
    pub pairs: usize,
    pub mean_adjacent_r: Option<f64>,
    /// Null band of that mean (as [`band_of_mean`]).
    pub null_band: Option<f64>,
    /// Pairs whose |r| exceeds their own band 2/sqrt(n) (about 5% under the null).
    pub pairs_beyond_band: usize,
    /// Mean subspace overlap of the pairs that have one, and its null.
    #[serde(default)]
    pub mean_overlap: Option<f64>,
    #[serde(default)]
    pub mean_overlap_null: Option<f64>,
    /// Pairs whose overlap exceeds its null by more than 2 null std.
    #[serde(default)]
    pub pairs_overlap_beyond_band: usize,
}

/// Coordination of one tensor pattern (a role at one shape) across layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleCoordination {
    pub role: String,
    /// Name pattern with the layer index as `*`.
    pub tensor: String,
    pub kind: ParamKind,
    /// Entries compared per pair.
    pub n: usize,
    pub pairs: usize,
    pub mean_adjacent_r: Option<f64>,
    /// Null band of that mean for its own n and pair count.
    pub null_band: Option<f64>,
    /// Mean subspace overlap of its pairs, and its null.
    #[serde(default)]
    pub mean_overlap: Option<f64>,
    #[serde(default)]
    pub mean_overlap_null: Option<f64>,
}

/// The interlayer section of the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Interlayer {
    /// Adjacent-layer pairs.
    pub pairs: Vec<LayerPair>,
    /// First-last pairs, one per pattern.
    pub first_last: Vec<LayerPair>,
    /// The study's figure: mean adjacent r over every pair, matrices and
    /// vectors alike (unweighted). The verdict reads `matrices` instead.
    pub mean_adjacent_r: Option<f64>,
    pub first_last_r: Option<f64>,
    /// Null band of `mean_adjacent_r`: each pair's r has null std
    /// 1/sqrt(n_i), so their mean over N pairs has `sqrt(sum 1/n_i) / N`;
    /// the band is twice that (+-2/sqrt(n) when there is one pair).
    pub null_band: Option<f64>,
    /// Weight matrices only (the verdict's evidence).
    #[serde(default)]
    pub matrices: KindCoordination,
    /// 1-D parameters only (norm weights, biases).
    #[serde(default)]
    pub vectors: KindCoordination,
    /// Per tensor pattern, in name order.
    #[serde(default)]
    pub roles: Vec<RoleCoordination>,
}

fn mean_of<'a>(
    v: impl Iterator<Item = &'a LayerPair>,
    f: impl Fn(&LayerPair) -> Option<f64>,
) -> Option<f64> {
    let x: Vec<f64> = v.filter_map(f).filter(|r| r.is_finite()).collect();
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

fn mean_r<'a>(v: impl Iterator<Item = &'a LayerPair>) -> Option<f64> {
    let f: Vec<f64> = v.map(|p| p.r).filter(|r| r.is_finite()).collect();
    (!f.is_empty()).then(|| f.iter().sum::<f64>() / f.len() as f64)
}

/// The coordination of the pairs of one kind.
pub fn of_kind(pairs: &[LayerPair], kind: ParamKind) -> KindCoordination {
    let ps: Vec<LayerPair> = pairs.iter().filter(|p| p.kind == kind).cloned().collect();
    KindCoordination {
        pairs: ps.len(),
        mean_adjacent_r: mean_r(ps.iter()),
        null_band: band_of_mean(&ps),
        pairs_beyond_band: ps
            .iter()
            .filter(|p| p.r.is_finite() && p.r.abs() > p.band())
            .count(),
        mean_overlap: mean_of(ps.iter(), |p| p.overlap),
        mean_overlap_null: mean_of(ps.iter(), |p| p.overlap.and(p.overlap_null)),
        pairs_overlap_beyond_band: ps
            .iter()
            .filter(|p| match (p.overlap, p.overlap_null, p.overlap_null_std) {
                (Some(o), Some(m), Some(sd)) => o > m + 2.0 * sd,
                _ => false,
            })
            .count(),
    }
}

/// Per tensor pattern: its pairs' mean r and the band for its own n.
pub fn by_role(pairs: &[LayerPair]) -> Vec<RoleCoordination> {
    let mut groups: BTreeMap<&str, Vec<LayerPair>> = BTreeMap::new();
    for p in pairs {
        groups.entry(p.tensor.as_str()).or_default().push(p.clone());
    }
    groups
        .into_iter()
        .map(|(t, ps)| RoleCoordination {
            role: ps[0].role.clone(),
            tensor: t.to_string(),
            kind: ps[0].kind,
            n: ps.iter().map(|p| p.n).max().unwrap_or(0),
            pairs: ps.len(),
            mean_adjacent_r: mean_r(ps.iter()),
            null_band: band_of_mean(&ps),
            mean_overlap: mean_of(ps.iter(), |p| p.overlap),
            mean_overlap_null: mean_of(ps.iter(), |p| p.overlap.and(p.overlap_null)),
        })
        .collect()
}

impl Interlayer {
    /// Fills the per-kind and per-role figures from the pairs (called again
    /// after the pairs' tensor names are rewritten to patterns).
    pub fn summarize(&mut self) {
        self.matrices = of_kind(&self.pairs, ParamKind::Matrix);
        self.vectors = of_kind(&self.pairs, ParamKind::Vector);
        self.roles = by_role(&self.pairs);
    }
}

/// Twice the null std of the mean of the pairs' r.
pub fn band_of_mean(pairs: &[LayerPair]) -> Option<f64> {
    let ns: Vec<f64> = pairs
        .iter()
        .filter(|p| p.r.is_finite() && p.n > 0)
        .map(|p| p.n as f64)
        .collect();
    (!ns.is_empty()).then(|| 2.0 * ns.iter().map(|n| 1.0 / n).sum::<f64>().sqrt() / ns.len() as f64)
}

/// The name with its layer index segment replaced by `*`.
pub fn pattern(name: &str, layer: usize) -> String {
    let l = layer.to_string();
    let mut done = false;
    name.split('.')
        .map(|s| {
            if !done && s == l {
                done = true;
                "*"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What a tensor leaves for its neighbours: the entries r compares and,
/// for a matrix, its residual-stream basis.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub values: Vec<f32>,
    pub basis: Option<crate::overlap::Basis>,
}

impl Sample {
    /// The pair of two layers' samples.
    fn pair(
        &self,
        other: &Sample,
        role: &str,
        kind: ParamKind,
        key: &str,
        a: usize,
        b: usize,
    ) -> LayerPair {
        let ov = self
            .basis
            .as_ref()
            .zip(other.basis.as_ref())
            .map(|(x, y)| {
                (
                    crate::overlap::overlap(x, y),
                    crate::overlap::overlap_null(x.k, x.dim),
                )
            })
            .filter(|(o, _)| o.is_finite());
        LayerPair {
            role: role.to_string(),
            kind,
            tensor: key.to_string(),
            a,
            b,
            r: pearson(&self.values, &other.values),
            n: self.values.len().min(other.values.len()),
            overlap: ov.map(|o| o.0),
            overlap_null: ov.map(|o| o.1 .0),
            overlap_null_std: ov.map(|o| o.1 .1),
        }
    }
}

struct Group {
    role: String,
    kind: ParamKind,
    layers: Vec<usize>,
    seen: BTreeSet<usize>,
    samples: BTreeMap<usize, Sample>,
}

/// Collects samples as tensors finish (in any order) and computes r.
#[derive(Default)]
pub struct Tracker {
    groups: HashMap<String, Group>,
    pairs: Vec<LayerPair>,
}

impl Tracker {
    /// `members`: (pattern key, role, kind, layer) of every layered tensor
    /// to come. Patterns present in fewer than two layers are ignored.
    pub fn new(members: impl IntoIterator<Item = (String, String, ParamKind, usize)>) -> Self {
        let mut groups: HashMap<String, Group> = HashMap::new();
        for (key, role, kind, layer) in members {
            let g = groups.entry(key).or_insert_with(|| Group {
                role,
                kind,
                layers: Vec::new(),
                seen: BTreeSet::new(),
                samples: BTreeMap::new(),
            });
            g.layers.push(layer);
        }
        groups.retain(|_, g| {
            g.layers.sort_unstable();
            g.layers.dedup();
            g.layers.len() >= 2
        });
        Tracker {
            groups,
            pairs: Vec::new(),
        }
    }

    /// Whether tensors of this pattern are tracked (so a sample is needed).
    pub fn wants(&self, key: &str) -> bool {
        self.groups.contains_key(key)
    }

    /// Samples currently held (for tests of the bound).
    pub fn held(&self) -> usize {
        self.groups.values().map(|g| g.samples.len()).sum()
    }

    /// Adds the entries of `key` at `layer` (no basis).
    pub fn add(&mut self, key: &str, layer: usize, values: Vec<f32>) {
        self.add_sample(
            key,
            layer,
            Sample {
                values,
                basis: None,
            },
        )
    }

    /// Adds the sample of `key` at `layer`.
    pub fn add_sample(&mut self, key: &str, layer: usize, sample: Sample) {
        let Some(g) = self.groups.get_mut(key) else {
            return;
        };
        let Ok(i) = g.layers.binary_search(&layer) else {
            return;
        };
        g.seen.insert(layer);
        g.samples.insert(layer, sample);
        let last = g.layers.len() - 1;
        for j in [i.checked_sub(1), (i < last).then_some(i + 1)]
            .into_iter()
            .flatten()
        {
            let other = g.layers[j];
            if let Some(o) = g.samples.get(&other) {
                let (a, b) = if j < i {
                    (other, layer)
                } else {
                    (layer, other)
                };
                let s = &g.samples[&layer];
                let (x, y) = if j < i { (o, s) } else { (s, o) };
                self.pairs.push(x.pair(y, &g.role, g.kind, key, a, b));
            }
        }
        // Drop samples both of whose neighbours have been seen.
        for j in [i.checked_sub(1), Some(i), (i < last).then_some(i + 1)]
            .into_iter()
            .flatten()
        {
            if j == 0 || j == last {
                continue;
            }
            if g.seen.contains(&g.layers[j - 1]) && g.seen.contains(&g.layers[j + 1]) {
                g.samples.remove(&g.layers[j]);
            }
        }
    }

    /// Finishes: first-last r per pattern, means and the null band.
    pub fn finish(mut self) -> Interlayer {
        let mut first_last = Vec::new();
        let mut keys: Vec<&String> = self.groups.keys().collect();
        keys.sort();
        for key in keys {
            let g = &self.groups[key];
            let (f, l) = (g.layers[0], *g.layers.last().expect("two layers"));
            if let (Some(a), Some(b)) = (g.samples.get(&f), g.samples.get(&l)) {
                first_last.push(a.pair(b, &g.role, g.kind, key, f, l));
            }
        }
        self.pairs
            .sort_by(|x, y| (x.a, x.b, &x.tensor).cmp(&(y.a, y.b, &y.tensor)));
        let mut out = Interlayer {
            mean_adjacent_r: mean_r(self.pairs.iter()),
            first_last_r: mean_r(first_last.iter()),
            null_band: band_of_mean(&self.pairs),
            pairs: self.pairs,
            first_last,
            ..Default::default()
        };
        out.summarize();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_known_values() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &[-1.0, -2.0, -3.0, -4.0]) + 1.0).abs() < 1e-12);
        let x = crate::null::gaussian_vec(100_000, 1.0, 1);
        let y = crate::null::gaussian_vec(100_000, 1.0, 2);
        assert!(pearson(&x, &y).abs() < 2.0 / (1e5f64).sqrt() * 2.0);
    }

    #[test]
    fn tracker_any_order_bounded_and_complete() {
        let layers = 8;
        let key = "h.*.attn.w".to_string();
        let mut t =
            Tracker::new((0..layers).map(|l| (key.clone(), "q".into(), ParamKind::Matrix, l)));
        let base = crate::null::gaussian_vec(1000, 1.0, 3);
        let mut max_held = 0;
        for &l in &[3usize, 0, 1, 2, 7, 5, 4, 6] {
            let noise = crate::null::gaussian_vec(1000, 1.0, 10 + l as u64);
            let s: Vec<f32> = base.iter().zip(&noise).map(|(a, b)| a + b).collect();
            t.add(&key, l, s);
            max_held = max_held.max(t.held());
        }
        assert!(t.held() <= 2, "{}", t.held());
        assert!(max_held <= 5, "{max_held}");
        let out = t.finish();
        assert_eq!(out.pairs.len(), layers - 1);
        let got: Vec<(usize, usize)> = out.pairs.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(got, (0..7).map(|l| (l, l + 1)).collect::<Vec<_>>());
        // Shared component of equal variance: r about 0.5.
        assert!((out.mean_adjacent_r.unwrap() - 0.5).abs() < 0.1);
        assert_eq!(out.first_last.len(), 1);
        // Seven pairs of 1000 entries: 2 sqrt(7/1000) / 7.
        assert!((out.null_band.unwrap() - 2.0 * (7.0f64 / 1000.0).sqrt() / 7.0).abs() < 1e-12);
    }

    #[test]
    fn patterns_and_samples() {
        assert_eq!(
            pattern("model.layers.3.mlp.up.weight", 3),
            "model.layers.*.mlp.up.weight"
        );
        assert!(sample_positions(1000, 1).is_none());
        let p = sample_positions(MAX_SAMPLE * 3 + 5, 1).unwrap();
        assert_eq!(p.len(), MAX_SAMPLE);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p, sample_positions(MAX_SAMPLE * 3 + 5, 1).unwrap());
    }
}
