//! Generic x/y curves: k-means VE against K (residual vs null),
//! rate-distortion curves, needle-test curves.

use plotters::prelude::*;

use super::{
    ensure_font, fmt_tick, padded, series_color, PlotError, Result, Size, FONT, LABEL_PT,
    LEGEND_PT, TICK_PT, TITLE_PT,
};

/// One curve.
#[derive(Clone, Debug, PartialEq)]
pub struct LineSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed (for nulls and references).
    pub dashed: bool,
    /// Marks each point with a dot.
    pub markers: bool,
    /// Colour index in the palette; None: the series' position.
    pub color: Option<usize>,
}

/// Curves on one pair of axes.
#[derive(Clone, Debug, PartialEq)]
pub struct LinesData {
    /// What is compared.
    pub title: String,
    /// Axis names with units.
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<LineSeries>,
    /// Fixed y range; None: fitted to the points.
    pub y_range: Option<(f64, f64)>,
    /// Where the legend goes.
    pub legend: Legend,
}

/// Corner of the legend box.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Legend {
    #[default]
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

impl LinesData {
    /// Points that can be drawn (finite, positive on log axes).
    pub fn drawable(&self, s: &LineSeries) -> Vec<(f64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|&(x, y)| {
                x.is_finite()
                    && y.is_finite()
                    && (!self.log_x || x > 0.0)
                    && (!self.log_y || y > 0.0)
            })
            .collect()
    }
}

/// Draws the curves with a legend.
pub fn render(d: &LinesData, size: Size) -> Result<String> {
    let title = d.title.as_str();
    let pts: Vec<(f64, f64)> = d.series.iter().flat_map(|s| d.drawable(s)).collect();
    if pts.is_empty() {
        return super::empty_figure(title, "no values", size);
    }
    ensure_font();
    let err = |e: &dyn std::fmt::Display| PlotError::new(title, e);
    let (xmin, xmax) = minmax(pts.iter().map(|p| p.0));
    let (ymin, ymax) = minmax(pts.iter().map(|p| p.1));
    let xr = if d.log_x {
        (xmin / 1.2, xmax * 1.2)
    } else {
        padded(xmin, xmax, 0.04)
    };
    let yr = if let Some(r) = d.y_range {
        r
    } else if d.log_y {
        (ymin / 1.5, ymax * 3.0)
    } else {
        let (a, b) = padded(ymin, ymax, 0.06);
        (a, b + (b - a) * 0.25)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut cb = ChartBuilder::on(&root);
        cb.caption(title, (FONT, TITLE_PT))
            .margin(12)
            .x_label_area_size(56)
            .y_label_area_size(80);
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(d.x_label.as_str())
                    .y_desc(d.y_label.as_str())
                    .axis_desc_style((FONT, LABEL_PT))
                    .label_style((FONT, TICK_PT))
                    .x_label_formatter(&|v| fmt_tick(*v, xr.1 - xr.0))
                    .y_label_formatter(&|v| fmt_tick(*v, yr.1 - yr.0))
                    .light_line_style(BLACK.mix(0.06))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (i, s) in d.series.iter().enumerate() {
                    let c = series_color(s.color.unwrap_or(i));
                    let p = d.drawable(s);
                    let style = c.stroke_width(3);
                    let anno = if s.dashed {
                        chart
                            .draw_series(DashedLineSeries::new(p.clone(), 8, 5, style))
                            .map_err(|e| err(&e))?
                    } else {
                        chart
                            .draw_series(plotters::series::LineSeries::new(p.clone(), style))
                            .map_err(|e| err(&e))?
                    };
                    let dashed = s.dashed;
                    anno.label(s.name.as_str()).legend(move |(x, y)| {
                        if dashed {
                            PathElement::new([(x, y), (x + 7, y)], c.stroke_width(3))
                        } else {
                            PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3))
                        }
                    });
                    if s.markers {
                        chart
                            .draw_series(p.iter().map(|&q| Circle::new(q, 4, c.filled())))
                            .map_err(|e| err(&e))?;
                    }
                }
                chart
                    .configure_series_labels()
                    .position(match d.legend {
                        Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                        Legend::UpperRight => SeriesLabelPosition::UpperRight,
                        Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
                        Legend::LowerRight => SeriesLabelPosition::LowerRight,
                    })
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .label_font((FONT, LEGEND_PT))
                    .draw()
                    .map_err(|e| err(&e))?;
            }};
        }
        match (d.log_x, d.log_y) {
            (false, false) => body!(cb
                .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
                .map_err(|e| err(&e))?),
            (true, false) => body!(cb
                .build_cartesian_2d((xr.0..xr.1).log_scale(), yr.0..yr.1)
                .map_err(|e| err(&e))?),
            (false, true) => body!(cb
                .build_cartesian_2d(xr.0..xr.1, (yr.0..yr.1).log_scale())
                .map_err(|e| err(&e))?),
            (true, true) => body!(cb
                .build_cartesian_2d((xr.0..xr.1).log_scale(), (yr.0..yr.1).log_scale())
                .map_err(|e| err(&e))?),
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

fn minmax(it: impl Iterator<Item = f64>) -> (f64, f64) {
    it.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    })
}

/// The polyline vertices of colour `color` in an SVG (for tests).
pub fn svg_polylines(svg: &str, color: &str) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    for tag in svg.split("<polyline").skip(1) {
        let tag = &tag[..tag.find("/>").unwrap_or(tag.len())];
        if !tag.contains(&format!("stroke=\"{color}\"")) {
            continue;
        }
        let Some(i) = tag.find("points=\"") else {
            continue;
        };
        let pts = &tag[i + 8..];
        let pts = &pts[..pts.find('"').unwrap_or(pts.len())];
        out.push(
            pts.split_whitespace()
                .filter_map(|p| {
                    let (x, y) = p.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{hex, svg_texts, DEFAULT_SIZE};

    #[test]
    fn curves_go_through_their_points() {
        let ve = vec![(2.0, 0.10), (4.0, 0.18), (8.0, 0.30), (16.0, 0.42)];
        let null = vec![(2.0, 0.08), (4.0, 0.15), (8.0, 0.26), (16.0, 0.38)];
        let d = LinesData {
            title: "k-means variance explained vs K: residual vs null".into(),
            x_label: "K (clusters, log scale)".into(),
            y_label: "variance explained".into(),
            log_x: true,
            log_y: false,
            y_range: None,
            legend: Legend::UpperLeft,
            series: vec![
                LineSeries {
                    name: "residual".into(),
                    points: ve.clone(),
                    dashed: false,
                    markers: true,
                    color: None,
                },
                LineSeries {
                    name: "Gaussian null".into(),
                    points: null,
                    dashed: true,
                    markers: false,
                    color: None,
                },
            ],
        };
        let svg = render(&d, DEFAULT_SIZE).unwrap();
        let lines = svg_polylines(&svg, &hex(series_color(0)));
        let line = lines
            .iter()
            .find(|l| l.len() == ve.len())
            .expect("residual polyline");
        // Log x: equal ratios -> equal pixel steps; linear y: pixel steps ∝ value steps.
        let dx: Vec<f64> = line.windows(2).map(|p| p[1].0 - p[0].0).collect();
        assert!(dx.iter().all(|s| (s - dx[0]).abs() <= 1.0), "{dx:?}");
        let scale = (line[1].1 - line[0].1) / (ve[1].1 - ve[0].1);
        for k in 1..ve.len() {
            let want = line[0].1 + scale * (ve[k].1 - ve[0].1);
            assert!(
                (line[k].1 - want).abs() <= 1.5,
                "{k}: {} vs {want}",
                line[k].1
            );
        }
        let texts = svg_texts(&svg);
        assert!(texts.iter().any(|t| t == "Gaussian null"));
        assert!(texts.iter().any(|t| t.starts_with("K (clusters")));
    }

    #[test]
    fn log_axes_drop_non_positive_points() {
        let d = LinesData {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            log_y: true,
            y_range: None,
            legend: Legend::UpperLeft,
            series: vec![LineSeries {
                name: "s".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0), (2.0, f64::NAN), (3.0, 10.0)],
                dashed: false,
                markers: false,
                color: None,
            }],
        };
        assert_eq!(d.drawable(&d.series[0]), vec![(1.0, 1.0), (3.0, 10.0)]);
        render(&d, DEFAULT_SIZE).unwrap();
    }
}
