//! Several residuals of one base (checkpoints of one run, or fine-tunes of
//! one base): for each pair of residuals and each tensor, the cosine of R_a
//! and R_b, the agreement of their signs, and TIES-style agreement among the
//! entries both keep (docs/MEASURES.md, "Several residuals"). These are the
//! figures merging methods decide by: TIES keeps each residual's largest
//! entries and drops those whose signs disagree.

use std::collections::BTreeMap;

use rayon::prelude::*;
use resid_io::{Checkpoint, Component, IoError, Layout};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aggregate::Report;

/// Share of each residual's entries (largest |R| first) that TIES keeps: its
/// paper's default trim (Yadav et al. 2023, k = 20%).
pub const TIES_KEEP: f64 = 0.2;

/// Agreement counts of one pair over some entries; the shares are derived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairFigures {
    /// Entries compared.
    pub numel: u64,
    /// <R_a, R_b> / (|R_a| |R_b|); None where either residual is zero.
    pub cosine: Option<f64>,
    /// Entries that both residuals changed (R != 0).
    pub both_changed: u64,
    /// Share of `both_changed` whose signs agree (0.5 for independent
    /// residuals; 1/2 + asin(rho)/pi for jointly Gaussian ones of correlation rho).
    pub sign_agreement: Option<f64>,
    /// Entries in both residuals' top [`TIES_KEEP`] by magnitude (per tensor).
    pub ties_kept_both: u64,
    /// Share of `ties_kept_both` whose signs agree: what TIES's sign
    /// election would not have to drop.
    pub ties_agreement: Option<f64>,
    #[serde(skip)]
    #[schemars(skip)]
    sums: Sums,
}

/// The additive part of [`PairFigures`], merged over chunks and tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sums {
    dot: f64,
    aa: f64,
    bb: f64,
    agree: u64,
    ties_agree: u64,
}

impl PairFigures {
    fn from_counts(numel: u64, both: u64, kept: u64, s: Sums) -> Self {
        let share = |x: u64, of: u64| (of > 0).then(|| x as f64 / of as f64);
        PairFigures {
            numel,
            cosine: (s.aa > 0.0 && s.bb > 0.0).then(|| s.dot / (s.aa.sqrt() * s.bb.sqrt())),
            both_changed: both,
            sign_agreement: share(s.agree, both),
            ties_kept_both: kept,
            ties_agreement: share(s.ties_agree, kept),
            sums: s,
        }
    }

    fn merge(&self, o: &PairFigures) -> PairFigures {
        let s = Sums {
            dot: self.sums.dot + o.sums.dot,
            aa: self.sums.aa + o.sums.aa,
            bb: self.sums.bb + o.sums.bb,
            agree: self.sums.agree + o.sums.agree,
            ties_agree: self.sums.ties_agree + o.sums.ties_agree,
        };
        PairFigures::from_counts(
            self.numel + o.numel,
            self.both_changed + o.both_changed,
            self.ties_kept_both + o.ties_kept_both,
            s,
        )
    }
}

/// One tensor of one pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairTensor {
    pub name: String,
    pub layer: Option<usize>,
    #[schemars(schema_with = "crate::json::component_schema")]
    pub component: Component,
    pub role: String,
    #[serde(flatten)]
    pub figures: PairFigures,
}

/// One pair of residuals (indices into [`Several::residuals`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairRecord {
    pub a: usize,
    pub b: usize,
    /// Over every tensor the pair shares (cosine of the whole residuals).
    pub all: PairFigures,
    /// Per component name (attention, mlp, expert, router, ...).
    pub components: BTreeMap<String, PairFigures>,
    pub tensors: Vec<PairTensor>,
}

/// The record of `resid analyze` with several `--trained`: one report per
/// residual (each against the same base) and the pairs between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Several {
    /// [`crate::json::SCHEMA_VERSION`]; the JSON Schema is
    /// docs/several.schema.json.
    pub schema_version: u32,
    pub base: String,
    pub residuals: Vec<Report>,
    pub pairs: Vec<PairRecord>,
}

impl Several {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("record serializes")
    }

    /// Reads a record written by [`Several::to_json`], refusing one of
    /// another schema version.
    pub fn from_json(text: &str) -> Result<Several, crate::json::ReportJsonError> {
        crate::json::from_str_versioned(text)
    }
}

/// The threshold on |R| that keeps the top [`TIES_KEEP`] of `r`'s entries
/// (0 when fewer than that are nonzero: then every changed entry is kept).
fn ties_threshold(r: &[f32]) -> f32 {
    let n = r.len();
    let keep = ((TIES_KEEP * n as f64).ceil() as usize).min(n);
    if keep == 0 {
        return f32::INFINITY;
    }
    let mut a: Vec<f32> = r.iter().map(|v| v.abs()).collect();
    let (_, t, _) = a.select_nth_unstable_by(n - keep, |x, y| x.total_cmp(y));
    *t
}

/// The figures of one tensor pair; `ta`, `tb` from [`ties_threshold`].
/// Non-finite entries are left out of every count.
pub fn pair_figures(a: &[f32], b: &[f32], ta: f32, tb: f32) -> PairFigures {
    const CHUNK: usize = 1 << 16;
    let zero = || (0u64, 0u64, 0u64, Sums::default());
    let (numel, both, kept, s) = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(ca, cb)| {
            let (mut n, mut both, mut kept, mut s) = zero();
            for (&x, &y) in ca.iter().zip(cb) {
                if !(x.is_finite() && y.is_finite()) {
                    continue;
                }
                n += 1;
                let (x64, y64) = (x as f64, y as f64);
                s.dot += x64 * y64;
                s.aa += x64 * x64;
                s.bb += y64 * y64;
                if x != 0.0 && y != 0.0 {
                    both += 1;
                    let same = (x > 0.0) == (y > 0.0);
                    s.agree += same as u64;
                    if x.abs() >= ta && y.abs() >= tb {
                        kept += 1;
                        s.ties_agree += same as u64;
                    }
                }
            }
            (n, both, kept, s)
        })
        .reduce(zero, |p, q| {
            (
                p.0 + q.0,
                p.1 + q.1,
                p.2 + q.2,
                Sums {
                    dot: p.3.dot + q.3.dot,
                    aa: p.3.aa + q.3.aa,
                    bb: p.3.bb + q.3.bb,
                    agree: p.3.agree + q.3.agree,
                    ties_agree: p.3.ties_agree + q.3.ties_agree,
                },
            )
        });
    PairFigures::from_counts(numel, both, kept, s)
}

/// The pairs of every two residuals `trained[i] - base`, over the tensors
/// that all of them share with the base at one shape. One tensor at a time
/// (memory: `trained.len() + 2` copies of the largest tensor, as f32), each
/// tensor's work spread over the threads of the current rayon pool.
pub fn compare(
    base: &Checkpoint,
    trained: &[&Checkpoint],
    layout: &Layout,
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> Result<Vec<PairRecord>, IoError> {
    let n = trained.len();
    let mut pairs: Vec<PairRecord> = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .map(|(a, b)| PairRecord {
            a,
            b,
            all: PairFigures::default(),
            components: BTreeMap::new(),
            tensors: Vec::new(),
        })
        .collect();
    // Float tensors every residual has, in the first trained's order.
    let shared: Vec<&resid_io::TensorEntry> = trained
        .first()
        .map(|t0| {
            t0.tensors()
                .iter()
                .filter(|e| e.dtype.is_some())
                .filter(|e| {
                    let same = |c: &Checkpoint| {
                        c.get(&e.name)
                            .is_some_and(|o| o.shape == e.shape && o.dtype.is_some())
                    };
                    same(base) && trained.iter().all(|&c| same(c))
                })
                .collect()
        })
        .unwrap_or_default();
    let (mut bbuf, mut res) = (Vec::new(), vec![Vec::new(); n]);
    for (done, e) in shared.iter().enumerate() {
        progress(done, shared.len(), &e.name);
        base.read_f32(base.get(&e.name).expect("filtered"), &mut bbuf)?;
        for (c, r) in trained.iter().zip(res.iter_mut()) {
            c.read_f32(c.get(&e.name).expect("filtered"), r)?;
            r.iter_mut().zip(&bbuf).for_each(|(t, b)| *t -= *b);
        }
        let th: Vec<f32> = res.iter().map(|r| ties_threshold(r)).collect();
        let meta = layout.classify(&e.name, &e.shape);
        for p in pairs.iter_mut() {
            let f = pair_figures(&res[p.a], &res[p.b], th[p.a], th[p.b]);
            p.all = p.all.merge(&f);
            let c = p
                .components
                .entry(meta.component.name().into())
                .or_default();
            *c = c.merge(&f);
            p.tensors.push(PairTensor {
                name: e.name.clone(),
                layer: meta.layer,
                component: meta.component,
                role: meta.role.clone(),
                figures: f,
            });
        }
    }
    progress(shared.len(), shared.len(), "");
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::null::gaussian_vec;

    /// Two residuals sharing half their variance: cosine 0.5, and sign
    /// agreement 1/2 + asin(0.5)/pi = 2/3 (Sheppard's formula for a
    /// bivariate Gaussian); TIES keeps the large entries, which agree more.
    #[test]
    fn shared_half_has_cosine_half_and_sheppard_sign_agreement() {
        let n = 400_000;
        let s = gaussian_vec(n, 1.0, 1);
        let (u, v) = (gaussian_vec(n, 1.0, 2), gaussian_vec(n, 1.0, 3));
        let a: Vec<f32> = s.iter().zip(&u).map(|(x, y)| x + y).collect();
        let b: Vec<f32> = s.iter().zip(&v).map(|(x, y)| x + y).collect();
        let f = pair_figures(&a, &b, ties_threshold(&a), ties_threshold(&b));
        assert_eq!(f.numel, n as u64);
        assert!((f.cosine.unwrap() - 0.5).abs() < 0.005, "{:?}", f.cosine);
        let want = 0.5 + 0.5f64.asin() / std::f64::consts::PI;
        assert!((f.sign_agreement.unwrap() - want).abs() < 0.003, "{f:?}");
        assert!(f.ties_agreement.unwrap() > want + 0.1, "{f:?}");
        // Each keeps 20%; correlated magnitudes make both-kept more than 4%.
        let kept = f.ties_kept_both as f64 / n as f64;
        assert!(kept > 0.04 && kept < 0.2, "{kept}");
    }

    #[test]
    fn independent_residuals_agree_by_chance_and_zeros_are_not_signs() {
        let n = 200_000;
        let mut a = gaussian_vec(n, 1.0, 4);
        let b = gaussian_vec(n, 1.0, 5);
        // Half of a unchanged: those entries are not compared for sign.
        a[..n / 2].iter_mut().for_each(|x| *x = 0.0);
        let f = pair_figures(&a, &b, ties_threshold(&a), ties_threshold(&b));
        assert_eq!(f.both_changed, (n / 2) as u64);
        assert!((f.sign_agreement.unwrap() - 0.5).abs() < 0.01, "{f:?}");
        assert!((f.ties_agreement.unwrap() - 0.5).abs() < 0.03, "{f:?}");
        assert!(f.cosine.unwrap().abs() < 0.01);
        // Opposite residuals: cosine -1, no sign agrees.
        let neg: Vec<f32> = b.iter().map(|x| -x).collect();
        let g = pair_figures(&b, &neg, ties_threshold(&b), ties_threshold(&neg));
        assert!((g.cosine.unwrap() + 1.0).abs() < 1e-9);
        assert_eq!(g.sign_agreement, Some(0.0));
        // A zero residual has no cosine.
        let z = vec![0.0f32; n];
        assert_eq!(pair_figures(&z, &b, 0.0, 1.0).cosine, None);
    }

    #[test]
    fn ties_threshold_keeps_the_top_fifth() {
        // |r|: 0..30 twice, then 31..69 once: the top 20 are 50..69.
        let r: Vec<f32> = (0..100).map(|i| i as f32 - 30.0).collect();
        let t = ties_threshold(&r);
        assert_eq!(r.iter().filter(|v| v.abs() >= t).count(), 20);
    }
}
