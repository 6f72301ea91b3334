//! Grouped bars per category (per layer): several series side by side
//! (attention vs MLP), each with an optional null drawn as a dashed line
//! across its bar.

use plotters::prelude::*;

use super::{
    ensure_font, fmt_num, padded, series_color, PlotError, Result, Size, FONT, LABEL_PT, LEGEND_PT,
    TICK_PT, TITLE_PT,
};

/// One series of bars: a value per category (None: no bar).
#[derive(Clone, Debug, PartialEq)]
pub struct BarSeries {
    pub name: String,
    pub values: Vec<Option<f64>>,
    /// The null's value per category, drawn as a dashed line over the bar.
    pub null: Option<Vec<Option<f64>>>,
}

/// Grouped bars.
#[derive(Clone, Debug, PartialEq)]
pub struct BarsData {
    /// What is compared.
    pub title: String,
    /// Category axis, e.g. "layer".
    pub x_label: String,
    /// Value axis with units, e.g. "excess kurtosis (Gaussian = 0)".
    pub y_label: String,
    /// Category names, e.g. layer numbers.
    pub categories: Vec<String>,
    pub series: Vec<BarSeries>,
    /// Legend name of the null lines, e.g. "Gaussian null".
    pub null_label: String,
}

/// Group width as a share of one category slot.
const GROUP: f64 = 0.8;

/// Draws the bars; bar `s` of category `c` spans
/// `[c - 0.4 + s w, c - 0.4 + (s + 1) w]` with `w = 0.8 / series`.
pub fn render(d: &BarsData, size: Size) -> Result<String> {
    let title = d.title.as_str();
    let ncat = d.categories.len();
    let all = d
        .series
        .iter()
        .flat_map(|s| s.values.iter().chain(s.null.iter().flatten()))
        .flatten()
        .copied()
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = (0.0f64, f64::NEG_INFINITY);
    for v in all {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if ncat == 0 || d.series.is_empty() || !hi.is_finite() {
        return super::empty_figure(title, "no values", size);
    }
    ensure_font();
    let err = |e: &dyn std::fmt::Display| PlotError::new(title, e);
    let (ylo, yhi) = padded(lo, hi.max(0.0), 0.08);
    let ylo = if lo >= 0.0 { 0.0 } else { ylo };
    let yhi = yhi + (yhi - ylo) * 0.35; // room for the legend
    let ns = d.series.len();
    let w = GROUP / ns as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let cats = d.categories.clone();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, TITLE_PT))
            .margin(12)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..ncat as f64 - 0.5, ylo..yhi)
            .map_err(|e| err(&e))?;
        let step = ncat.div_ceil(24).max(1);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(d.x_label.as_str())
            .y_desc(d.y_label.as_str())
            .axis_desc_style((FONT, LABEL_PT))
            .label_style((FONT, TICK_PT))
            .x_labels(ncat + 1)
            .x_label_formatter(&|v| {
                let r = v.round();
                if (v - r).abs() > 1e-6
                    || r < 0.0
                    || r as usize >= cats.len()
                    || (r as usize).rem_euclid(step) != 0
                {
                    String::new()
                } else {
                    cats[r as usize].clone()
                }
            })
            .y_label_formatter(&|v| fmt_num(*v))
            .draw()
            .map_err(|e| err(&e))?;
        let base = 0.0f64.clamp(ylo, yhi);
        for (si, s) in d.series.iter().enumerate() {
            let c = series_color(si);
            chart
                .draw_series(s.values.iter().enumerate().filter_map(|(ci, v)| {
                    let v = (*v)?;
                    if !v.is_finite() {
                        return None;
                    }
                    let x0 = ci as f64 - GROUP / 2.0 + si as f64 * w;
                    Some(Rectangle::new([(x0, base), (x0 + w, v)], c.filled()))
                }))
                .map_err(|e| err(&e))?
                .label(s.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        }
        let mut null_legend = false;
        for (si, s) in d.series.iter().enumerate() {
            let Some(null) = &s.null else { continue };
            let c = series_color(si);
            let dark = RGBColor(c.0 / 3, c.1 / 3, c.2 / 3);
            for (ci, v) in null.iter().enumerate() {
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    continue;
                };
                let x0 = ci as f64 - GROUP / 2.0 + si as f64 * w;
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x0 - 0.02, v), (x0 + w + 0.02, v)],
                        5,
                        3,
                        dark.stroke_width(3),
                    ))
                    .map_err(|e| err(&e))?;
            }
            if !null_legend {
                null_legend = true;
                chart
                    .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                    .map_err(|e| err(&e))?
                    .label(d.null_label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(3))
                    });
            }
        }
        if base > ylo {
            chart
                .draw_series(LineSeries::new(
                    [(-0.5, base), (ncat as f64 - 0.5, base)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, LEGEND_PT))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{hex, svg_rects, svg_texts, DEFAULT_SIZE};

    #[test]
    fn bar_heights_are_proportional_to_values() {
        let d = BarsData {
            title: "kurtosis per layer, attention vs MLP".into(),
            x_label: "layer".into(),
            y_label: "excess kurtosis".into(),
            categories: (0..6).map(|i| i.to_string()).collect(),
            series: vec![
                BarSeries {
                    name: "attention".into(),
                    values: vec![
                        Some(10.0),
                        Some(5.0),
                        Some(2.5),
                        None,
                        Some(20.0),
                        Some(1.0),
                    ],
                    null: Some(vec![Some(0.1); 6]),
                },
                BarSeries {
                    name: "MLP".into(),
                    values: vec![
                        Some(4.0),
                        Some(8.0),
                        Some(12.0),
                        Some(16.0),
                        Some(0.5),
                        Some(3.0),
                    ],
                    null: None,
                },
            ],
            null_label: "Gaussian null".into(),
        };
        let svg = render(&d, DEFAULT_SIZE).unwrap();
        for (si, s) in d.series.iter().enumerate() {
            let rects = svg_rects(&svg, &hex(series_color(si)));
            let want: Vec<f64> = s.values.iter().flatten().copied().collect();
            // bars plus one legend swatch
            assert_eq!(rects.len(), want.len() + 1, "series {}", s.name);
            let bars = &rects[..want.len()];
            let px_per_unit = bars[0].h / want[0];
            for (r, v) in bars.iter().zip(&want) {
                assert!(
                    (r.h - v * px_per_unit).abs() <= 1.5,
                    "{} vs {}",
                    r.h,
                    v * px_per_unit
                );
            }
            // Bars sit left to right in category order.
            assert!(bars.windows(2).all(|p| p[0].x < p[1].x));
        }
        let texts = svg_texts(&svg);
        for t in [
            "attention",
            "MLP",
            "Gaussian null",
            "layer",
            "excess kurtosis",
        ] {
            assert!(texts.iter().any(|x| x == t), "missing text {t}");
        }
    }

    #[test]
    fn empty_input_gives_a_titled_figure() {
        let d = BarsData {
            title: "nothing".into(),
            x_label: "layer".into(),
            y_label: "y".into(),
            categories: vec![],
            series: vec![],
            null_label: "null".into(),
        };
        let svg = render(&d, DEFAULT_SIZE).unwrap();
        assert!(svg_texts(&svg).iter().any(|t| t == "nothing"));
    }
}
