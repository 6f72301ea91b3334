//! Singular-value spectra against the Marchenko-Pastur null: the singular
//! values a Gaussian matrix of the same shape and entry std would have.

use super::lines::{self, LinesData};
use super::{Result, Size};

pub use resid_analysis::figures::Spectrum;

/// The figure's data as curves: each spectrum solid, its null dashed in
/// the same colour.
pub fn to_lines(title: &str, spectra: &[Spectrum]) -> LinesData {
    let mut series = Vec::new();
    for (i, s) in spectra.iter().enumerate() {
        series.push(lines::LineSeries {
            name: format!(
                "{} ({} x {})",
                crate::analysis::short_name(&s.tensor),
                s.rows,
                s.cols
            ),
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

    #[test]
    fn normalised_null_of_a_square_matrix_spans_zero_to_two() {
        let s = Spectrum {
            tensor: "x".into(),
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
