//! The 2-D spatial-frequency power of a matrix beside the power of its
//! Gaussian null: smooth matrices put their power near the origin.

use plotters::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use realfft::num_complex::Complex;

use super::{ensure_font, PlotError, Result, Size, FONT, TICK_PT, TITLE_PT};

/// Largest block analysed; bigger matrices are cropped to their top-left
/// corner of this size (said in the figure).
pub const MAX_SIDE: usize = 512;

/// A power map: mean power per block of frequencies, over the half plane
/// row frequency in [-1/2, 1/2), column frequency in [0, 1/2] (cycles per
/// entry), normalised so that the mean power of a non-DC frequency is 1.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerMap {
    /// Shape analysed (after cropping).
    pub rows: usize,
    pub cols: usize,
    /// Shape before cropping.
    pub full_rows: usize,
    pub full_cols: usize,
    /// Blocks: `grid_rows x grid_cols`, row 0 = most negative row frequency.
    pub grid_rows: usize,
    pub grid_cols: usize,
    /// Mean normalised power per block, row-major.
    pub power: Vec<f64>,
    /// Share of power (DC excluded) with |f_row| <= rows/8 and
    /// |f_col| <= cols/8 (in frequency indices), over the full spectrum.
    pub lowfreq_share: f64,
}

/// Computes the map of the `rows x cols` row-major matrix `m` (mean
/// removed; cropped to [`MAX_SIDE`]), with at most `grid` blocks a side.
pub fn power_map(m: &[f32], rows: usize, cols: usize, grid: usize) -> PowerMap {
    assert_eq!(m.len(), rows * cols, "matrix size");
    let r = rows.min(MAX_SIDE);
    let c = cols.min(MAX_SIDE);
    let mut mean = 0f64;
    for i in 0..r {
        for &v in &m[i * cols..i * cols + c] {
            mean += v as f64;
        }
    }
    mean /= (r * c).max(1) as f64;
    let hc = c / 2 + 1;
    // Row transforms (real), then column transforms (complex).
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let rfft = planner.plan_fft_forward(c);
    let mut spec = vec![Complex::new(0.0, 0.0); r * hc];
    let mut row = vec![0f64; c];
    let mut out = rfft.make_output_vec();
    for i in 0..r {
        for (d, &v) in row.iter_mut().zip(&m[i * cols..i * cols + c]) {
            *d = v as f64 - mean;
        }
        rfft.process(&mut row, &mut out).expect("rfft sizes");
        spec[i * hc..(i + 1) * hc].copy_from_slice(&out);
    }
    let fft = rustfft::FftPlanner::<f64>::new().plan_fft_forward(r);
    let mut col = vec![Complex::new(0.0, 0.0); r];
    let mut power = vec![0f64; r * hc]; // [k_row][k_col], k_row unshifted
    for j in 0..hc {
        for i in 0..r {
            col[i] = spec[i * hc + j];
        }
        fft.process(&mut col);
        for i in 0..r {
            power[i * hc + j] = col[i].norm_sqr();
        }
    }
    // Conjugate-symmetry weights: the half plane stands for the full one.
    let weight = |j: usize| {
        if j == 0 || (c.rem_euclid(2) == 0 && j == c / 2) {
            1.0
        } else {
            2.0
        }
    };
    let signed = |i: usize| {
        if i <= r / 2 {
            i as i64
        } else {
            i as i64 - r as i64
        }
    };
    let (mut total, mut low, mut count) = (0f64, 0f64, 0f64);
    for i in 0..r {
        for j in 0..hc {
            if i == 0 && j == 0 {
                continue;
            }
            let p = power[i * hc + j] * weight(j);
            total += p;
            count += weight(j);
            if signed(i).unsigned_abs() as usize * 8 <= r && j * 8 <= c {
                low += p;
            }
        }
    }
    let lowfreq_share = if total > 0.0 { low / total } else { 0.0 };
    let norm = if total > 0.0 { total / count } else { 1.0 };
    // Blocks over shifted row frequencies (most negative first).
    let gr = grid.clamp(1, r.max(1));
    let gc = grid.div_ceil(2).clamp(1, hc);
    let mut sum = vec![0f64; gr * gc];
    let mut n = vec![0usize; gr * gc];
    for i in 0..r {
        let shifted = (signed(i) + (r as i64) / 2) as usize; // 0..r
        let bi = (shifted * gr / r).min(gr - 1);
        for j in 0..hc {
            if i == 0 && j == 0 {
                continue;
            }
            let bj = (j * gc / hc).min(gc - 1);
            sum[bi * gc + bj] += power[i * hc + j] / norm;
            n[bi * gc + bj] += 1;
        }
    }
    let power = sum
        .iter()
        .zip(&n)
        .map(|(s, &k)| if k > 0 { s / k as f64 } else { 0.0 })
        .collect();
    PowerMap {
        rows: r,
        cols: c,
        full_rows: rows,
        full_cols: cols,
        grid_rows: gr,
        grid_cols: gc,
        power,
        lowfreq_share,
    }
}

/// A Gaussian matrix of the given shape and std, from a fixed seed.
pub fn gaussian_null(rows: usize, cols: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let std = if std.is_finite() && std > 0.0 {
        std
    } else {
        1.0
    };
    let d = Normal::new(0.0, std).expect("finite std");
    (0..rows * cols)
        .map(|_| d.sample(&mut rng) as f32)
        .collect()
}

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
/// (log10 of normalised power), the low-frequency box outlined.
pub fn render(title: &str, residual: &PowerMap, null: &PowerMap, size: Size) -> Result<String> {
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
    let ratio = if null.lowfreq_share > 0.0 {
        residual.lowfreq_share / null.lowfreq_share
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
                    100.0 * residual.lowfreq_share,
                    ratio
                ),
                residual,
                &lr,
            ),
            (
                format!("Gaussian null: {:.1}% low-freq", 100.0 * null.lowfreq_share),
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

    #[test]
    fn white_noise_puts_a_sixteenth_in_the_low_box() {
        let (r, c) = (128, 96);
        let m = gaussian_null(r, c, 0.1, 1);
        let p = power_map(&m, r, c, 32);
        // |k_r| <= 16 of 128 and |k_c| <= 12 of 96: (33/128)(25/96) = 0.067
        let want = (33.0 / 128.0) * (25.0 / 96.0);
        assert!(
            (p.lowfreq_share - want).abs() < 0.012,
            "{} vs {want}",
            p.lowfreq_share
        );
        // Normalised: the mean block power is about 1.
        let mean = p.power.iter().sum::<f64>() / p.power.len() as f64;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
    }

    #[test]
    fn smooth_matrix_concentrates_power_at_low_frequency() {
        let (r, c) = (64, 80);
        let m: Vec<f32> = (0..r * c)
            .map(|k| {
                let (i, j) = ((k / c) as f32, (k % c) as f32);
                (i * 0.07).sin() * (j * 0.05).cos() + 0.3 * (i * 0.02 + j * 0.03).sin()
            })
            .collect();
        let p = power_map(&m, r, c, 16);
        assert!(p.lowfreq_share > 0.9, "{}", p.lowfreq_share);
        // The block holding the origin is the brightest.
        let (bi0, bj0) = (p.grid_rows / 2, 0);
        let origin = p.power[bi0 * p.grid_cols + bj0];
        assert!(p.power.iter().all(|&v| v <= origin + 1e-9));
    }

    #[test]
    fn large_matrices_are_cropped_and_the_figure_says_so() {
        let m = gaussian_null(600, 40, 1.0, 2);
        let p = power_map(&m, 600, 40, 32);
        assert_eq!((p.rows, p.cols, p.full_rows), (MAX_SIDE, 40, 600));
        let n = power_map(&gaussian_null(MAX_SIDE, 40, 1.0, 3), MAX_SIDE, 40, 32);
        let svg = render("power map: test vs null", &p, &n, DEFAULT_SIZE).unwrap();
        let t = svg_texts(&svg);
        assert!(t.iter().any(|s| s.contains("top-left 512x40")), "{t:?}");
        assert!(t.iter().any(|s| s.starts_with("Gaussian null: ")));
    }
}
