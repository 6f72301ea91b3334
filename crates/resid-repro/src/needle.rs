//! The needle test: add back part of the residual to the start point and see
//! how much of the training gain returns. Top-p% by |r| tests the study's
//! claim that a few large entries carry the gain; a seeded random p% is the
//! control that carries no position information, shown both as is and with
//! DARE's 1/p rescale (which keeps the expected residual but multiplies its
//! noise, and so blows up at small p).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(name, shape, values)` in a fixed order, as resid-lm uses.
pub type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

/// |r| threshold keeping the largest `frac` of all residual entries (global).
fn threshold(start: &Named, trained: &Named, frac: f64) -> (f32, usize) {
    let mut mags: Vec<f32> = start
        .iter()
        .zip(trained)
        .flat_map(|(s, t)| s.2.iter().zip(&t.2).map(|(a, b)| (b - a).abs()))
        .collect();
    let n = mags.len();
    let keep = ((frac * n as f64).round() as usize).min(n);
    if keep == 0 {
        return (f32::INFINITY, 0);
    }
    let k = n - keep;
    let (_, t, _) = mags.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    (*t, keep)
}

/// Start + the top `frac` of residual entries by magnitude; returns the
/// weights and the number of entries added back (ties at the threshold are
/// broken by order so exactly `round(frac * n)` are kept).
pub fn top_fraction(start: &Named, trained: &Named, frac: f64) -> (Named, usize) {
    let (t, keep) = threshold(start, trained, frac);
    let above: usize = start
        .iter()
        .zip(trained)
        .map(|(s, w)| {
            s.2.iter()
                .zip(&w.2)
                .filter(|(a, b)| (*b - *a).abs() > t)
                .count()
        })
        .sum();
    let mut ties_left = keep.saturating_sub(above);
    let mut out = start.clone();
    for (o, w) in out.iter_mut().zip(trained) {
        for (x, y) in o.2.iter_mut().zip(&w.2) {
            let m = (y - *x).abs();
            if m > t || (m == t && ties_left > 0 && keep > 0) {
                if m == t {
                    ties_left -= 1;
                }
                *x = *y;
            }
        }
    }
    (out, keep)
}

/// How a random selection's entries are added back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescale {
    /// Each kept entry as it is (the same treatment as top-p%).
    None,
    /// Each kept entry times 1/frac, so the expected residual is unchanged
    /// (DARE's rescale).
    Dare,
}

/// Start + a seeded random `frac` of residual entries. The mask depends on
/// the seed alone, so both [`Rescale`]s pick the same entries.
pub fn random_fraction(
    start: &Named,
    trained: &Named,
    frac: f64,
    seed: u64,
    rescale: Rescale,
) -> Named {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = match rescale {
        Rescale::None => 1.0,
        Rescale::Dare if frac > 0.0 => (1.0 / frac) as f32,
        Rescale::Dare => 0.0,
    };
    let mut out = start.clone();
    for (o, w) in out.iter_mut().zip(trained) {
        for (x, y) in o.2.iter_mut().zip(&w.2) {
            if rng.random::<f64>() < frac {
                *x += (y - *x) * scale;
            }
        }
    }
    out
}

/// Share of the training gain recovered: `(L_start - L_p) / (L_start - L_trained)`.
pub fn gain_recovered(l_start: f64, l_p: f64, l_trained: f64) -> f64 {
    (l_start - l_p) / (l_start - l_trained)
}

/// Bits per parameter to store a top-`frac` selection: the mask's entropy
/// (where the entries are) plus `value_bits` for each kept value. A seeded
/// random mask costs no position bits.
pub fn top_bits_per_param(frac: f64, value_bits: f64) -> f64 {
    let h = if frac <= 0.0 || frac >= 1.0 {
        0.0
    } else {
        -(frac * frac.log2() + (1.0 - frac) * (1.0 - frac).log2())
    };
    h + frac * value_bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Named, Named) {
        let s = vec![
            ("a".to_string(), vec![2, 3], vec![0.0; 6]),
            ("b".to_string(), vec![2], vec![1.0, 1.0]),
        ];
        let t = vec![
            (
                "a".to_string(),
                vec![2, 3],
                vec![0.1, -5.0, 0.2, 3.0, 0.0, -0.3],
            ),
            ("b".to_string(), vec![2], vec![1.0, 0.5]),
        ];
        (s, t)
    }

    #[test]
    fn top_fraction_keeps_the_largest_entries() {
        let (s, t) = pair();
        let (w, k) = top_fraction(&s, &t, 0.25);
        assert_eq!(k, 2);
        assert_eq!(w[0].2, vec![0.0, -5.0, 0.0, 3.0, 0.0, 0.0]);
        assert_eq!(w[1].2, vec![1.0, 1.0]);
        assert_eq!(top_fraction(&s, &t, 1.0).0, t);
        assert_eq!(top_fraction(&s, &t, 0.0).0, s);
    }

    #[test]
    fn random_fraction_is_unbiased() {
        let s = vec![("a".to_string(), vec![20000], vec![0.0; 20000])];
        let t = vec![("a".to_string(), vec![20000], vec![1.0; 20000])];
        let w = random_fraction(&s, &t, 0.1, 3, Rescale::Dare);
        let mean: f64 = w[0].2.iter().map(|&x| x as f64).sum::<f64>() / 20000.0;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
        assert_eq!(random_fraction(&s, &t, 1.0, 3, Rescale::Dare), t);
    }

    #[test]
    fn unscaled_random_keeps_the_same_entries_as_they_are() {
        let s = vec![("a".to_string(), vec![20000], vec![0.0; 20000])];
        let t = vec![("a".to_string(), vec![20000], vec![1.0; 20000])];
        let plain = random_fraction(&s, &t, 0.1, 3, Rescale::None);
        let dare = random_fraction(&s, &t, 0.1, 3, Rescale::Dare);
        let kept: Vec<bool> = plain[0].2.iter().map(|&x| x != 0.0).collect();
        assert_eq!(
            kept,
            dare[0].2.iter().map(|&x| x != 0.0).collect::<Vec<_>>()
        );
        // Kept entries are the trained values; about a tenth are kept.
        assert!(plain[0].2.iter().all(|&x| x == 0.0 || x == 1.0));
        let share = kept.iter().filter(|&&k| k).count() as f64 / 20000.0;
        assert!((share - 0.1).abs() < 0.01, "{share}");
        assert!(dare[0]
            .2
            .iter()
            .all(|&x| x == 0.0 || (x - 10.0).abs() < 1e-5));
    }

    #[test]
    fn bits_and_gain_have_their_closed_forms() {
        assert!((top_bits_per_param(0.5, 16.0) - 9.0).abs() < 1e-12);
        assert_eq!(top_bits_per_param(0.0, 16.0), 0.0);
        assert!((gain_recovered(3.0, 2.5, 2.0) - 0.5).abs() < 1e-12);
    }
}
