//! The 2-D spatial-frequency power of a matrix beside the power of its
//! Gaussian null: smooth matrices put their power near the origin.

use plotters::prelude::*;

use super::{ensure_font, PlotError, Result, Size, FONT, TICK_PT, TITLE_PT};

pub use resid_analysis::figures::{PowerMap, MAP_SIDE};

/// Perceptual dark-blue -> yellow colour of t in [0, 1] (viridis-like).
pub fn sequential(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    } * 4.0;
    let k = (t.floor() as usize).min(3);
    let f = t - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws `residual` and `null` side by side on one colour scale
/// (log10 of normalised power), the low-frequency box outlined; `shares`
/// are the record's low-frequency shares of the whole residual and of its
/// null (the verdict's numbers, not re-measured on the drawn block).
pub fn render(
    title: &str,
    residual: &PowerMap,
    null: &PowerMap,
    shares: (f64, f64),
    size: Size,
) -> Result<String> {
    ensure_font();
    let err = |e: &dyn std::fmt::Display| PlotError::new(title, e);
    let logs = |m: &PowerMap| -> Vec<f64> {
        m.power
            .iter()
            .map(|&p| if p > 0.0 { p.log10() } else { f64::NAN })
            .collect()
    };
    let (lr, ln) = (logs(residual), logs(null));
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in lr.iter().chain(&ln).filter(|v| v.is_finite()) {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    if !lo.is_finite() {
        return super::empty_figure(title, "no power (constant matrix)", size);
    }
    lo = lo.max(hi - 6.0);
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let ratio = if shares.1 > 0.0 {
        shares.0 / shares.1
    } else {
        f64::NAN
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root.titled(title, (FONT, TITLE_PT)).map_err(|e| err(&e))?;
        let (maps, bar) = root.split_horizontally(size.width.saturating_sub(130));
        let halves = maps.split_evenly((1, 2));
        let crop = if residual.rows < residual.full_rows || residual.cols < residual.full_cols {
            format!(", top-left {}x{}", residual.rows, residual.cols)
        } else {
            String::new()
        };
        let panels = [
            (
                format!(
                    "residual{crop}: {:.1}% low-freq ({:.2}x)",
                    100.0 * shares.0,
                    ratio
                ),
                residual,
                &lr,
            ),
            (
                format!("Gaussian null: {:.1}% low-freq", 100.0 * shares.1),
                null,
                &ln,
            ),
        ];
        for (area, (name, m, l)) in halves.iter().zip(panels.iter()) {
            let mut chart = ChartBuilder::on(area)
                .caption(name.as_str(), (FONT, TICK_PT))
                .margin(8)
                .x_label_area_size(50)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..0.5, -0.5f64..0.5)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("column frequency (cycles/entry)")
                .y_desc("row frequency (cycles/entry)")
                .axis_desc_style((FONT, TICK_PT))
                .label_style((FONT, TICK_PT))
                .x_labels(3)
                .y_labels(5)
                .x_label_formatter(&|v| format!("{v:.2}"))
                .y_label_formatter(&|v| {
                    let t = format!("{v:.2}");
                    if t == "-0.00" {
                        "0.00".into()
                    } else {
                        t
                    }
                })
                .draw()
                .map_err(|e| err(&e))?;
            let (gr, gc) = (m.grid_rows, m.grid_cols);
            chart
                .draw_series((0..gr).flat_map(|bi| (0..gc).map(move |bj| (bi, bj))).map(
                    |(bi, bj)| {
                        let v = l[bi * gc + bj];
                        let y0 = -0.5 + bi as f64 / gr as f64;
                        let x0 = 0.5 * bj as f64 / gc as f64;
                        let col = sequential((v - lo) / (hi - lo));
                        Rectangle::new(
                            [(x0, y0), (x0 + 0.5 / gc as f64, y0 + 1.0 / gr as f64)],
                            col.filled(),
                        )
                    },
                ))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, -0.125), (0.125, 0.125)],
                    RED.stroke_width(2),
                )))
                .map_err(|e| err(&e))?;
        }
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(40)
            .margin_bottom(60)
            .margin_right(8)
            .y_label_area_size(84)
            .build_cartesian_2d(0f64..1.0, lo..hi)
            .map_err(|e| err(&e))?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("log10 power / mean power")
            .axis_desc_style((FONT, TICK_PT))
            .label_style((FONT, TICK_PT))
            .y_labels(6)
            .y_label_formatter(&|v| format!("{:.1}", v + 0.0).replace("-0.0", "0.0"))
            .draw()
            .map_err(|e| err(&e))?;
        let steps = 48;
        cb.draw_series((0..steps).map(|k| {
            let a = lo + (hi - lo) * k as f64 / steps as f64;
            let b = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                sequential((k as f64 + 0.5) / steps as f64).filled(),
            )
        }))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{svg_texts, DEFAULT_SIZE};
    use resid_analysis::figures::power_maps;

    #[test]
    fn large_matrices_are_cropped_and_the_figure_says_so() {
        let m = resid_analysis::null::gaussian_vec(600 * 40, 1.0, 2);
        let p = power_maps(&m, 600, 40, "t", 0);
        assert_eq!((p.residual.rows, p.residual.cols), (MAP_SIDE, 40));
        let svg = render(
            "power map: test vs null",
            &p.residual,
            &p.null,
            (0.07, 0.0625),
            DEFAULT_SIZE,
        )
        .unwrap();
        let t = svg_texts(&svg);
        assert!(t.iter().any(|s| s.contains("top-left 512x40")), "{t:?}");
        assert!(
            t.iter().any(|s| s.contains("7.0% low-freq (1.12x)")),
            "{t:?}"
        );
        assert!(t.iter().any(|s| s.starts_with("Gaussian null: 6.2")));
    }
}
