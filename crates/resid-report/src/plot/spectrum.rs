//! Singular-value spectra against the Marchenko-Pastur null: the singular
//! values a Gaussian matrix of the same shape and entry std would have.

use super::lines::{self, LinesData};
use super::{Result, Size};

/// The singular values of one matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Spectrum {
    /// e.g. "layers.0.attn.q (512 x 512)".
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Population std of the matrix's entries (the null's std).
    pub std: f64,
    /// Singular values, any order.
    pub singular_values: Vec<f64>,
}

impl Spectrum {
    /// The scale that puts every shape's null on the same footing:
    /// s / (std sqrt(max side)); Marchenko-Pastur's bulk then spans
    /// [1 - sqrt(c), 1 + sqrt(c)], c = min/max side.
    pub fn scale(&self) -> f64 {
        self.std * (self.rows.max(self.cols) as f64).sqrt()
    }

    /// (rank, normalised singular value), largest first; rank from 1.
    pub fn normalised(&self) -> Vec<(f64, f64)> {
        let mut s = self.singular_values.clone();
        s.sort_by(|a, b| b.total_cmp(a));
        let k = self.scale();
        s.iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, if k > 0.0 { v / k } else { 0.0 }))
            .collect()
    }

    /// The null's normalised singular values, largest first.
    pub fn null_normalised(&self) -> Vec<(f64, f64)> {
        let p = self.rows.min(self.cols);
        let q = self.rows.max(self.cols);
        marchenko_pastur_singular_values(p, q, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, v / (q as f64).sqrt()))
            .collect()
    }
}

/// The expected sorted singular values (largest first, `min(rows, cols)`
/// of them) of a `rows x cols` matrix of i.i.d. entries with std `std`:
/// the quantiles `(k + 1/2) / p` of the Marchenko-Pastur law.
pub fn marchenko_pastur_singular_values(rows: usize, cols: usize, std: f64) -> Vec<f64> {
    let p = rows.min(cols);
    let q = rows.max(cols);
    if p == 0 {
        return Vec::new();
    }
    let c = p as f64 / q as f64;
    // Eigenvalues of X X^T / q (sigma = 1) lie in [a, b]. Substituting
    // lambda = a + (b - a)(1 - cos t)/2 makes the density smooth in t.
    let a = (1.0 - c.sqrt()).powi(2);
    let b = (1.0 + c.sqrt()).powi(2);
    let n = 20_000;
    let h = std::f64::consts::PI / n as f64;
    let lam = |t: f64| a + (b - a) * (1.0 - t.cos()) / 2.0;
    let dens = |t: f64| {
        let l = lam(t);
        let r = (b - a) / 2.0 * t.sin();
        if l <= 0.0 {
            // Only when c = 1 (a = 0) at t = 0, where r^2 / l -> b.
            return b / (2.0 * std::f64::consts::PI * c);
        }
        r * r / (2.0 * std::f64::consts::PI * c * l)
    };
    let mut cdf = vec![0.0f64; n + 1];
    let mut prev = dens(0.0);
    for k in 1..=n {
        let d = dens(k as f64 * h);
        cdf[k] = cdf[k - 1] + 0.5 * (prev + d) * h;
        prev = d;
    }
    let total = cdf[n];
    let mut out = Vec::with_capacity(p);
    let mut j = 0usize;
    // Ascending quantiles, then reversed.
    for k in 0..p {
        let target = (k as f64 + 0.5) / p as f64 * total;
        while j < n && cdf[j + 1] < target {
            j += 1;
        }
        let (c0, c1) = (cdf[j], cdf[(j + 1).min(n)]);
        let f = if c1 > c0 {
            (target - c0) / (c1 - c0)
        } else {
            0.0
        };
        let t = (j as f64 + f) * h;
        out.push(std * (q as f64 * lam(t)).sqrt());
    }
    out.reverse();
    out
}

/// The figure's data as curves: each spectrum solid, its null dashed in
/// the same colour.
pub fn to_lines(title: &str, spectra: &[Spectrum]) -> LinesData {
    let mut series = Vec::new();
    for (i, s) in spectra.iter().enumerate() {
        series.push(lines::LineSeries {
            name: s.name.clone(),
            points: s.normalised(),
            dashed: false,
            markers: false,
            color: Some(i),
        });
        series.push(lines::LineSeries {
            name: format!("Marchenko-Pastur null, {} x {}", s.rows, s.cols),
            points: s.null_normalised(),
            dashed: true,
            markers: false,
            color: Some(i),
        });
    }
    LinesData {
        title: title.to_string(),
        x_label: "rank of singular value (1 = largest, log scale)".into(),
        y_label: "singular value / (std · √max side), log".into(),
        log_x: true,
        log_y: true,
        y_range: Some(y_range(&series)),
        legend: lines::Legend::LowerLeft,
        series,
    }
}

/// From a little under the smallest null value kept (the last 2% of ranks
/// of a square matrix fall towards 0 and would stretch the axis) to above
/// the largest value.
fn y_range(series: &[lines::LineSeries]) -> (f64, f64) {
    let mut hi = 0f64;
    let mut lo = f64::INFINITY;
    for s in series {
        let n = s.points.len();
        for (i, &(_, y)) in s.points.iter().enumerate() {
            if y > 0.0 && y.is_finite() {
                hi = hi.max(y);
                if i < n - n / 50 {
                    lo = lo.min(y);
                }
            }
        }
    }
    if !(lo.is_finite() && hi > 0.0) {
        return (0.01, 10.0);
    }
    (lo / 2.0, hi * 2.0)
}

/// Draws the spectra (log-log) with their nulls.
pub fn render(title: &str, spectra: &[Spectrum], size: Size) -> Result<String> {
    lines::render(&to_lines(title, spectra), size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn mp_quantiles_have_the_right_energy_and_edge() {
        for (p, q) in [(100, 400), (300, 300), (64, 1000)] {
            let s = marchenko_pastur_singular_values(p, q, 0.5);
            assert_eq!(s.len(), p);
            assert!(s.windows(2).all(|w| w[0] >= w[1]));
            // E ||X||_F^2 = p q std^2.
            let e: f64 = s.iter().map(|v| v * v).sum();
            let want = (p * q) as f64 * 0.25;
            assert!((e / want - 1.0).abs() < 0.01, "{p}x{q}: {e} vs {want}");
            // Largest near std (sqrt p + sqrt q).
            let edge = 0.5 * ((p as f64).sqrt() + (q as f64).sqrt());
            assert!(
                s[0] < edge * 1.001 && s[0] > edge * 0.93,
                "{} vs {edge}",
                s[0]
            );
        }
    }

    #[test]
    fn mp_quantiles_match_a_gaussian_matrix_svd() {
        let (p, q) = (120usize, 300usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let d = Normal::new(0.0f64, 1.0).unwrap();
        let m = faer::Mat::<f64>::from_fn(p, q, |_, _| d.sample(&mut rng));
        let mut sv: Vec<f64> = m.singular_values().unwrap();
        sv.sort_by(|a, b| b.total_cmp(a));
        let mp = marchenko_pastur_singular_values(p, q, 1.0);
        // Bulk quantiles agree within a few percent.
        for k in (5..p - 5).step_by(10) {
            let rel = (sv[k] - mp[k]).abs() / mp[k];
            assert!(rel < 0.05, "k={k}: svd {} vs mp {}", sv[k], mp[k]);
        }
    }

    #[test]
    fn normalised_null_of_a_square_matrix_spans_zero_to_two() {
        let s = Spectrum {
            name: "x".into(),
            rows: 200,
            cols: 200,
            std: 3.0,
            singular_values: vec![1.0; 200],
        };
        let n = s.null_normalised();
        assert!(n[0].1 > 1.9 && n[0].1 <= 2.0 + 1e-9, "{}", n[0].1);
        assert!(n[199].1 < 0.05);
        let v = s.normalised();
        assert!((v[0].1 - 1.0 / (3.0 * 200f64.sqrt())).abs() < 1e-12);
    }
}
