//! A matrix of values (correlations) as coloured cells, each with its value
//! written in it, and a colour scale beside it.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ensure_font, PlotError, Result, Size, FONT, LABEL_PT, TICK_PT, TITLE_PT};

/// A heatmap: `cells[row][col]`, None for a blank (grey) cell.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatmapData {
    /// What is compared.
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub cells: Vec<Vec<Option<f64>>>,
    /// What the colour means, with units, e.g. "Pearson r".
    pub value_label: String,
    /// Colour scale `[-limit, +limit]` (diverging, white at 0); None:
    /// the largest |value|.
    pub limit: Option<f64>,
    /// Decimals written in each cell.
    pub decimals: usize,
}

impl HeatmapData {
    /// The text written in cell (row, col).
    pub fn cell_text(&self, v: f64) -> String {
        format!("{:.*}", self.decimals, v)
    }

    /// The colour scale's half-range.
    pub fn scale_limit(&self) -> f64 {
        let m = self.limit.unwrap_or_else(|| {
            self.cells
                .iter()
                .flatten()
                .flatten()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |a, v| a.max(v.abs()))
        });
        if m > 0.0 && m.is_finite() {
            m
        } else {
            1.0
        }
    }
}

/// Diverging blue-white-red colour of `t` in [-1, 1].
pub fn diverging(t: f64) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let white = (247.0, 247.0, 247.0);
    let end = if t < 0.0 {
        (33.0, 102.0, 172.0)
    } else {
        (178.0, 24.0, 43.0)
    };
    let a = t.abs();
    let mix = |w: f64, e: f64| (w + (e - w) * a).round() as u8;
    RGBColor(
        mix(white.0, end.0),
        mix(white.1, end.1),
        mix(white.2, end.2),
    )
}

const BLANK: RGBColor = RGBColor(215, 215, 215);

/// Draws the heatmap with a colour bar on the right.
pub fn render(d: &HeatmapData, size: Size) -> Result<String> {
    let title = d.title.as_str();
    let nr = d.cells.len();
    let nc = d.cells.iter().map(Vec::len).max().unwrap_or(0);
    if nr == 0 || nc == 0 {
        return super::empty_figure(title, "no values", size);
    }
    ensure_font();
    let err = |e: &dyn std::fmt::Display| PlotError::new(title, e);
    let lim = d.scale_limit();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root.titled(title, (FONT, TITLE_PT)).map_err(|e| err(&e))?;
        let (main, bar) = root.split_horizontally(size.width.saturating_sub(130));
        let rl = d.row_labels.clone();
        let cl = d.col_labels.clone();
        let label_w = rl.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u32 * 10 + 40;
        let mut chart = ChartBuilder::on(&main)
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(label_w.clamp(60, 220))
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
            .map_err(|e| err(&e))?;
        let stepc = nc.div_ceil(20).max(1);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(d.x_label.as_str())
            .y_desc(d.y_label.as_str())
            .axis_desc_style((FONT, LABEL_PT))
            .label_style((FONT, TICK_PT))
            .x_labels(2 * nc + 1)
            .y_labels(2 * nr + 1)
            .x_label_formatter(&|v| centre_label(*v, &cl, stepc))
            .y_label_formatter(&|v| centre_label(nr as f64 - *v, &rl, 1))
            .draw()
            .map_err(|e| err(&e))?;
        // Cells; row 0 at the top.
        let font_px = cell_font(size, nr, nc);
        for (r, row) in d.cells.iter().enumerate() {
            let y1 = (nr - r) as f64;
            for c in 0..nc {
                let v = row.get(c).copied().flatten().filter(|v| v.is_finite());
                let fill = v.map(|v| diverging(v / lim)).unwrap_or(BLANK);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(c as f64, y1 - 1.0), (c as f64 + 1.0, y1)],
                        fill.filled(),
                    )))
                    .map_err(|e| err(&e))?;
                if let Some(v) = v {
                    if font_px >= 9 {
                        let ink = if (v / lim).abs() > 0.6 { WHITE } else { BLACK };
                        let style = (FONT, font_px)
                            .into_font()
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center));
                        chart
                            .draw_series(std::iter::once(Text::new(
                                d.cell_text(v),
                                (c as f64 + 0.5, y1 - 0.5),
                                style,
                            )))
                            .map_err(|e| err(&e))?;
                    }
                }
            }
        }
        // Colour bar.
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(10)
            .margin_bottom(70)
            .margin_right(10)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..1.0, -lim..lim)
            .map_err(|e| err(&e))?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc(d.value_label.as_str())
            .axis_desc_style((FONT, LABEL_PT))
            .label_style((FONT, TICK_PT))
            .y_labels(5)
            // One more decimal than the cells, so the two never read alike.
            .y_label_formatter(&|v| format!("{:.*}", d.decimals + 1, v))
            .draw()
            .map_err(|e| err(&e))?;
        let steps = 64;
        cb.draw_series((0..steps).map(|k| {
            let a = -lim + 2.0 * lim * k as f64 / steps as f64;
            let b = -lim + 2.0 * lim * (k + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                diverging((a + b) / (2.0 * lim)).filled(),
            )
        }))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

fn centre_label(v: f64, labels: &[String], step: usize) -> String {
    let k = v - 0.5;
    let r = k.round();
    if (k - r).abs() > 1e-6
        || r < 0.0
        || r as usize >= labels.len()
        || (r as usize).rem_euclid(step) != 0
    {
        String::new()
    } else {
        labels[r as usize].clone()
    }
}

fn cell_font(size: Size, nr: usize, nc: usize) -> u32 {
    let cw = (size.width as f64 - 330.0) / nc as f64;
    let ch = (size.height as f64 - 160.0) / nr as f64;
    ((cw / 4.0).min(ch * 0.6)).clamp(0.0, 18.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{hex, svg_rects, svg_texts, DEFAULT_SIZE};

    #[test]
    fn every_cell_shows_its_value_and_colour() {
        let cells = vec![
            vec![Some(0.012), Some(-0.034), Some(0.5)],
            vec![Some(-0.25), None, Some(0.0071)],
        ];
        let d = HeatmapData {
            title: "adjacent-layer correlation per role".into(),
            x_label: "layer pair".into(),
            y_label: "role".into(),
            row_labels: vec!["q".into(), "up".into()],
            col_labels: vec!["0-1".into(), "1-2".into(), "2-3".into()],
            cells: cells.clone(),
            value_label: "Pearson r".into(),
            limit: None,
            decimals: 3,
        };
        let svg = render(&d, DEFAULT_SIZE).unwrap();
        let texts = svg_texts(&svg);
        let lim = d.scale_limit();
        assert_eq!(lim, 0.5);
        for v in cells.iter().flatten().flatten() {
            let t = d.cell_text(*v);
            assert!(texts.contains(&t), "cell {t} missing");
            assert!(
                !svg_rects(&svg, &hex(diverging(v / lim))).is_empty(),
                "colour of {v}"
            );
        }
        assert!(!svg_rects(&svg, &hex(BLANK)).is_empty(), "blank cell");
        // The numbers in the cells are exactly the five values, no others.
        let nums: Vec<f64> = texts
            .iter()
            .filter(|t| t.len() >= 5 && t.contains('.') && t.parse::<f64>().is_ok())
            .filter(|t| t.split('.').nth(1).map(str::len) == Some(3))
            .map(|t| t.parse().unwrap())
            .collect();
        let mut want: Vec<f64> = cells.iter().flatten().flatten().copied().collect();
        let mut got = nums.clone();
        want.sort_by(f64::total_cmp);
        got.sort_by(f64::total_cmp);
        let want: Vec<f64> = want
            .iter()
            .map(|v| d.cell_text(*v).parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
}
