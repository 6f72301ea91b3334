//! The report of `resid bench-codec`: rate-distortion curves of resid's
//! residual file beside the published delta methods, and the full table.
//! Generic rows, so this crate need not depend on the codec.

use crate::document::{Block, Document, Figure, ReportError, Section, Table};
use crate::plot::lines::{self, Legend, LineSeries, LinesData};
use crate::plot::DEFAULT_SIZE;

/// One method at one setting, measured on one pair.
#[derive(Clone, Debug, PartialEq)]
pub struct RatePoint {
    pub method: String,
    pub setting: String,
    pub bits_per_param: f64,
    /// ||r_hat - r|| / ||r||; 0 for lossless methods.
    pub rel_error: f64,
    pub weight_cosine: f64,
    pub encode_mb_s: f64,
    pub decode_mb_s: f64,
}

/// One curve per method, points in order of rate. Lossless rows (error 0)
/// cannot sit on a log error axis: they are left to the table.
pub fn rate_series(points: &[RatePoint]) -> Vec<LineSeries> {
    let mut methods: Vec<&str> = Vec::new();
    for p in points {
        if !methods.contains(&p.method.as_str()) {
            methods.push(&p.method);
        }
    }
    methods
        .iter()
        .filter_map(|m| {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.method == *m && p.rel_error > 0.0 && p.bits_per_param > 0.0)
                .filter(|p| p.rel_error.is_finite() && p.bits_per_param.is_finite())
                .map(|p| (p.bits_per_param, p.rel_error))
                .collect();
            if pts.is_empty() {
                return None;
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Some(LineSeries {
                name: m.to_string(),
                points: pts,
                dashed: !m.starts_with("resid"),
                markers: true,
                color: None,
            })
        })
        .collect()
}

fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".into()
    }
}

/// The document: the curve, then every row.
pub fn rate_document(inputs: &[String], points: &[RatePoint]) -> Result<Document, ReportError> {
    let series = rate_series(points);
    // Headroom above the worst method for the legend (log axis).
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, 0f64), |(a, b), y| (a.min(y), b.max(y)));
    let y_range = (lo.is_finite() && hi > 0.0).then(|| (lo / 2.0, hi * 20.0));
    let data = LinesData {
        title: "Residual error vs stored bits: resid and the published delta methods".into(),
        x_label: "bits per parameter (log scale)".into(),
        y_label: "relative residual error ||r_hat - r|| / ||r|| (log scale)".into(),
        log_x: true,
        log_y: true,
        series,
        y_range,
        legend: Legend::UpperRight,
    };
    let svg = lines::render(&data, DEFAULT_SIZE)?;
    let rows = points
        .iter()
        .map(|p| {
            vec![
                p.method.clone(),
                p.setting.clone(),
                num(p.bits_per_param, 4),
                num(p.rel_error, 4),
                num(p.weight_cosine, 6),
                num(p.encode_mb_s, 0),
                num(p.decode_mb_s, 0),
            ]
        })
        .collect();
    Ok(Document {
        title: "resid bench-codec: residual files at each rate".into(),
        subtitle: inputs.to_vec(),
        verdict: Vec::new(),
        sections: vec![
            Section {
                title: "Rate and distortion".into(),
                blocks: vec![
                    Block::Figure(Figure {
                        id: "rate-distortion".into(),
                        svg,
                        caption: "Lower left is better. Lossless rows (error 0) are in the table only.".into(),
                    }),
                ],
            },
            Section {
                title: "Every method and setting".into(),
                blocks: vec![Block::Table(Table {
                    caption: "Measured in one run on the same pair; MB/s of the trained checkpoint's bytes.".into(),
                    header: [
                        "method",
                        "setting",
                        "bits/param",
                        "rel. residual error",
                        "weight cosine",
                        "encode MB/s",
                        "decode MB/s",
                    ]
                    .map(String::from)
                    .to_vec(),
                    rows,
                })],
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, bits: f64, err: f64) -> RatePoint {
        RatePoint {
            method: method.into(),
            setting: format!("{bits}"),
            bits_per_param: bits,
            rel_error: err,
            weight_cosine: 1.0,
            encode_mb_s: 10.0,
            decode_mb_s: f64::NAN,
        }
    }

    #[test]
    fn each_lossy_row_is_one_point_of_its_method_and_lossless_rows_stay_out() {
        let rows = vec![
            p("resid lossless", 2.6, 0.0),
            p("resid lossy", 2.0, 0.01),
            p("resid lossy", 0.5, 0.2),
            p("BitDelta", 1.0, 0.99),
            p("resid lossy", 1.0, 0.05),
        ];
        let s = rate_series(&rows);
        assert_eq!(s.len(), 2, "lossless method has no curve");
        assert_eq!(s[0].name, "resid lossy");
        assert_eq!(s[0].points, vec![(0.5, 0.2), (1.0, 0.05), (2.0, 0.01)]);
        assert!(!s[0].dashed && s[1].dashed);
        assert_eq!(s[1].points, vec![(1.0, 0.99)]);
        let total: usize = s.iter().map(|x| x.points.len()).sum();
        assert_eq!(total, rows.iter().filter(|r| r.rel_error > 0.0).count());
    }

    #[test]
    fn the_table_holds_every_row_and_the_figure_renders() {
        let rows = vec![p("resid lossless", 2.6, 0.0), p("resid lossy", 1.0, 0.05)];
        let d = rate_document(&["base: a".into()], &rows).unwrap();
        let figs: Vec<_> = d.figures().collect();
        assert_eq!(figs.len(), 1);
        assert!(figs[0].svg.contains("<svg"));
        let Block::Table(t) = &d.sections[1].blocks[0] else {
            panic!("no table")
        };
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][3], "0.0000");
        assert_eq!(t.rows[1][6], "-", "no decode speed is a dash");
    }
}
