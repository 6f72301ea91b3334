//! How many bits training adds, measured two ways: the residual's entropy
//! at a storage step (std/16) times its entries, and the size of the
//! smallest residual file that rebuilds a share of the training gain
//! (bisection over the codec's rate, each file scored by held-out loss).

use serde::{Deserialize, Serialize};

use crate::Result;

/// The entropy side of the budget, summed over tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntropyBudget {
    pub entries: u64,
    /// Sum over tensors of (bits per entry at step std/16) x entries.
    pub bits_at_step: f64,
    /// Entries more than 3 std from their tensor's mean (Gaussian: 0.27%).
    pub beyond_3std: f64,
}

impl EntropyBudget {
    /// From an analysis report's per-tensor records (tensors whose measure
    /// is not finite are left out of the sums, and so of `entries`).
    pub fn of(rep: &resid::analysis::Report) -> Self {
        let mut b = EntropyBudget {
            entries: 0,
            bits_at_step: 0.0,
            beyond_3std: 0.0,
        };
        for t in &rep.tensors {
            if t.entropy_step_bits.is_finite() && t.share_above_3std.is_finite() {
                b.entries += t.finite;
                b.bits_at_step += t.entropy_step_bits * t.finite as f64;
                b.beyond_3std += t.share_above_3std * t.finite as f64;
            }
        }
        b
    }
}

/// One residual file made and scored while searching.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Rate asked of the codec (bits per parameter).
    pub requested: f64,
    /// Rate the file has.
    pub bits_per_param: f64,
    pub file_bytes: u64,
    pub gain: f64,
}

/// The smallest file found that recovers `target` of the gain, and the
/// largest one below it that does not (the bracket of the search).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Smallest {
    pub target: f64,
    /// None: not reached at the highest rate searched.
    pub passing: Option<Probe>,
    /// None: the lowest rate searched already passes.
    pub failing: Option<Probe>,
}

/// Searches rates in `[lo, hi]` (geometric bisection until the bracket's
/// ratio is below `1 + tol`) for each target in turn, reusing every probe.
/// Assumes gain rises with rate; where it does not, the bracket is still
/// two real files, the smallest passing one and the largest failing one
/// below it.
pub fn smallest_files(
    targets: &[f64],
    lo: f64,
    hi: f64,
    tol: f64,
    mut probe: impl FnMut(f64) -> Result<Probe>,
) -> Result<(Vec<Smallest>, Vec<Probe>)> {
    let mut seen: Vec<Probe> = Vec::new();
    let mut get = |rate: f64, seen: &mut Vec<Probe>| -> Result<Probe> {
        if let Some(p) = seen.iter().find(|p| p.requested == rate) {
            return Ok(*p);
        }
        let p = probe(rate)?;
        seen.push(p);
        Ok(p)
    };
    get(lo, &mut seen)?;
    get(hi, &mut seen)?;
    let mut out = Vec::new();
    for &target in targets {
        loop {
            let passing = seen
                .iter()
                .filter(|p| p.gain >= target)
                .min_by(|a, b| a.requested.total_cmp(&b.requested))
                .copied();
            let failing = seen
                .iter()
                .filter(|p| p.gain < target && passing.is_none_or(|q| p.requested < q.requested))
                .max_by(|a, b| a.requested.total_cmp(&b.requested))
                .copied();
            match (passing, failing) {
                (Some(p), Some(f)) if p.requested / f.requested > 1.0 + tol => {
                    get((p.requested * f.requested).sqrt(), &mut seen)?;
                }
                _ => {
                    out.push(Smallest {
                        target,
                        passing,
                        failing,
                    });
                    break;
                }
            }
        }
    }
    seen.sort_by(|a, b| a.requested.total_cmp(&b.requested));
    Ok((out, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(rate: f64) -> Probe {
        // Gain 1 - 2^-rate: the share reached at `rate` bits per parameter.
        Probe {
            requested: rate,
            bits_per_param: rate,
            file_bytes: (rate * 1000.0) as u64,
            gain: 1.0 - (-rate).exp2(),
        }
    }

    #[test]
    fn bisection_brackets_the_analytic_rate() {
        let (s, seen) =
            smallest_files(&[0.9, 0.95, 0.99], 0.25, 16.0, 0.02, |r| Ok(probe(r))).unwrap();
        for (x, want) in s.iter().zip([0.9f64, 0.95, 0.99]) {
            let exact = -(1.0 - want).log2();
            let (p, f) = (x.passing.unwrap(), x.failing.unwrap());
            assert!(p.gain >= want && f.gain < want, "{x:?}");
            assert!(
                f.requested < exact && exact <= p.requested,
                "{x:?} vs {exact}"
            );
            assert!(p.requested / f.requested <= 1.02, "{x:?}");
        }
        // Probes are shared between targets: far fewer than three searches.
        assert!(seen.len() < 3 * 10, "{}", seen.len());
    }

    #[test]
    fn a_target_out_of_range_says_so() {
        let (s, _) = smallest_files(&[0.1, 0.9999], 0.25, 4.0, 0.05, |r| Ok(probe(r))).unwrap();
        assert!(s[0].failing.is_none() && s[0].passing.unwrap().requested == 0.25);
        assert!(s[1].passing.is_none() && s[1].failing.unwrap().requested == 4.0);
    }
}
