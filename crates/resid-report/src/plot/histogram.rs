//! Value histogram on a log-count axis, with the Gaussian of the same mean
//! and standard deviation overlaid and the 3-std tails marked.

use plotters::prelude::*;

use super::{
    ensure_font, fmt_num, PlotError, Result, Size, FONT, LABEL_PT, LEGEND_PT, TICK_PT, TITLE_PT,
};

/// Binned values: equal-width bins over `[lo, hi]`; values outside the
/// range (only possible for [`HistogramData::from_grid`]) are counted in the edge
/// bins, so `counts` always sums to `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramData {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    /// Number of values binned (the sum of `counts`).
    pub n: u64,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Values with |x - mean| > 3 std, counted exactly (not from the bins).
    pub beyond_3std: u64,
    /// Smallest and largest value seen.
    pub min: f64,
    pub max: f64,
}

impl HistogramData {
    /// Bins `values` into `bins` equal-width bins over [min, max], with
    /// moments accumulated in f64. Non-finite values are skipped.
    pub fn from_values(values: &[f32], bins: usize) -> Self {
        let bins = bins.max(1);
        let (mut n, mut sum, mut sumsq) = (0u64, 0f64, 0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let v = v as f64;
            n += 1;
            sum += v;
            sumsq += v * v;
            min = min.min(v);
            max = max.max(v);
        }
        if n == 0 {
            return HistogramData {
                lo: 0.0,
                hi: 1.0,
                counts: vec![0; bins],
                n: 0,
                mean: 0.0,
                std: 0.0,
                beyond_3std: 0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mean = sum / n as f64;
        // Second pass for a stable variance.
        let mut m2 = 0f64;
        for &v in values {
            if v.is_finite() {
                let d = v as f64 - mean;
                m2 += d * d;
            }
        }
        let _ = sumsq;
        let std = (m2 / n as f64).sqrt();
        let (lo, hi) = if max > min {
            (min, max)
        } else {
            (min - 0.5, max + 0.5)
        };
        let mut counts = vec![0u64; bins];
        let mut beyond = 0u64;
        let w = (hi - lo) / bins as f64;
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let v = v as f64;
            let i = (((v - lo) / w) as isize).clamp(0, bins as isize - 1) as usize;
            counts[i] += 1;
            if (v - mean).abs() > 3.0 * std {
                beyond += 1;
            }
        }
        HistogramData {
            lo,
            hi,
            counts,
            n,
            mean,
            std,
            beyond_3std: beyond,
            min,
            max,
        }
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len().max(1) as f64
    }

    /// Lower edge of bin `i`.
    pub fn edge(&self, i: usize) -> f64 {
        self.lo + i as f64 * self.bin_width()
    }

    /// The count a Gaussian of the same mean, std and size expects in each
    /// bin (exact bin probabilities from the normal CDF).
    pub fn gaussian_expected(&self) -> Vec<f64> {
        (0..self.counts.len())
            .map(|i| {
                if self.std <= 0.0 {
                    return 0.0;
                }
                let a = (self.edge(i) - self.mean) / self.std;
                let b = (self.edge(i + 1) - self.mean) / self.std;
                self.n as f64 * (normal_cdf(b) - normal_cdf(a))
            })
            .collect()
    }

    /// Share of values beyond 3 std (Gaussian: 0.27%).
    pub fn share_beyond_3std(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.beyond_3std as f64 / self.n as f64
        }
    }
}

/// Standard normal CDF (erfc-based, absolute error below 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes erfcc (Chebyshev), relative error < 1.2e-7.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Half-width of a drawn histogram at most, in std: values past it are
/// counted in the edge bins.
pub const MAX_HALF_RANGE_STD: f64 = 64.0;

impl HistogramData {
    /// The drawn histogram of values gathered on the bf16 grid during the
    /// analysis pass: `bins` equal bins, symmetric about `mean` (so the
    /// Gaussian overlay reads evenly), wide enough for [min, max] up to
    /// [`MAX_HALF_RANGE_STD`]. The moments and the count beyond 3 std are
    /// the record's, passed in, not re-estimated from bins.
    pub fn from_grid(
        grid: &resid_analysis::figures::ValueHistogram,
        mean: f64,
        std: f64,
        (min, max): (f64, f64),
        beyond_3std: u64,
        bins: usize,
    ) -> HistogramData {
        let mut half = (max - mean).max(mean - min);
        if std > 0.0 {
            half = half.min(MAX_HALF_RANGE_STD * std);
        }
        if !(half > 0.0 && half.is_finite()) {
            half = if std > 0.0 {
                std
            } else {
                mean.abs().max(1e-30)
            };
        }
        let (lo, hi) = (mean - half, mean + half);
        HistogramData {
            lo,
            hi,
            counts: grid.linear(lo, hi, bins),
            n: grid.n(),
            mean,
            std,
            beyond_3std,
            min,
            max,
        }
    }
}

/// What to write on the figure.
#[derive(Clone, Debug)]
pub struct HistogramLabels {
    /// What is compared, e.g. "MLP residual values vs a Gaussian of the same std".
    pub title: String,
    /// The x axis, with units, e.g. "residual value (weight units)".
    pub x_label: String,
    /// Name of the data series in the legend, e.g. "MLP residual".
    pub series: String,
}

/// Draws `h` as bars on a log-count axis, the Gaussian's expected counts as
/// a line, and dashed lines at mean +- 3 std.
pub fn render(h: &HistogramData, labels: &HistogramLabels, size: Size) -> Result<String> {
    let title = labels.title.as_str();
    if h.n == 0 {
        return super::empty_figure(title, "no finite values", size);
    }
    ensure_font();
    let err = |e: &dyn std::fmt::Display| PlotError::new(title, e);
    let expected = h.gaussian_expected();
    let ymax = h
        .counts
        .iter()
        .map(|&c| c as f64)
        .fold(1.0f64, f64::max)
        .max(expected.iter().cloned().fold(1.0, f64::max))
        * 60.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, TITLE_PT))
            .margin(12)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(h.lo..h.hi, (0.5f64..ymax).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(labels.x_label.as_str())
            .y_desc("entries per bin (log scale)")
            .axis_desc_style((FONT, LABEL_PT))
            .label_style((FONT, TICK_PT))
            .x_labels(7)
            .x_label_formatter(&|v| fmt_num(*v))
            .y_label_formatter(&|v| fmt_count(*v))
            .draw()
            .map_err(|e| err(&e))?;

        let bar = super::series_color(0);
        let w = h.bin_width();
        chart
            .draw_series(
                h.counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c > 0)
                    .map(|(i, &c)| {
                        let x0 = h.lo + i as f64 * w;
                        Rectangle::new([(x0, 0.5), (x0 + w, c as f64)], bar.mix(0.75).filled())
                    }),
            )
            .map_err(|e| err(&e))?
            .label(format!("{} (n = {})", labels.series, fmt_count(h.n as f64)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], bar.filled()));

        // Gaussian curve: expected count per bin, evaluated finely.
        if h.std > 0.0 {
            let steps = 400;
            let pts: Vec<(f64, f64)> = (0..=steps)
                .map(|k| {
                    let x = h.lo + (h.hi - h.lo) * k as f64 / steps as f64;
                    let z = (x - h.mean) / h.std;
                    let pdf = (-0.5 * z * z).exp() / (h.std * (2.0 * std::f64::consts::PI).sqrt());
                    (x, h.n as f64 * pdf * w)
                })
                .filter(|&(_, y)| y >= 0.5)
                .collect();
            let g = RGBColor(20, 20, 20);
            chart
                .draw_series(LineSeries::new(pts, g.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label("Gaussian, same mean and std")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], g.stroke_width(2)));

            let tail = super::series_color(4);
            let share = 100.0 * h.share_beyond_3std();
            for s in [-3.0, 3.0] {
                let x = h.mean + s * h.std;
                if x > h.lo && x < h.hi {
                    chart
                        .draw_series(DashedLineSeries::new(
                            [(x, 0.5), (x, ymax)],
                            6,
                            4,
                            tail.stroke_width(2),
                        ))
                        .map_err(|e| err(&e))?;
                }
            }
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(h.mean, 0.5), (h.mean, 0.5)],
                    tail.stroke_width(2),
                )))
                .map_err(|e| err(&e))?
                .label(format!(
                    "±3 std: {} beyond ({share:.2}%; Gaussian 0.27%)",
                    fmt_count(h.beyond_3std as f64)
                ))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], tail.stroke_width(2))
                });
        }

        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, LEGEND_PT))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// 1, 10, 100, 1k, 10k, 1M ...
pub fn fmt_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn gaussian(n: usize, std: f32, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = Normal::new(0.0f32, std).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    #[test]
    fn counts_sum_to_size_and_match_direct_binning() {
        let v = gaussian(10_007, 0.02, 1);
        let h = HistogramData::from_values(&v, 50);
        assert_eq!(h.counts.iter().sum::<u64>(), v.len() as u64);
        assert_eq!(h.n, v.len() as u64);
        // Recount bin 25 directly.
        let (a, b) = (h.edge(25), h.edge(26));
        let direct = v
            .iter()
            .filter(|&&x| (x as f64) >= a && (x as f64) < b)
            .count() as u64;
        assert!(
            direct.abs_diff(h.counts[25]) <= 1,
            "{direct} vs {}",
            h.counts[25]
        );
        assert_eq!(
            h.min,
            v.iter().cloned().fold(f32::INFINITY, f32::min) as f64
        );
    }

    #[test]
    fn gaussian_expectation_fits_gaussian_data() {
        let v = gaussian(200_000, 1.0, 2);
        let h = HistogramData::from_values(&v, 40);
        let e = h.gaussian_expected();
        let total: f64 = e.iter().sum();
        assert!((total - 200_000.0).abs() < 200.0, "{total}");
        let mid = h.counts.len() / 2;
        let rel = (h.counts[mid] as f64 - e[mid]).abs() / e[mid];
        assert!(rel < 0.05, "{rel}");
        let share = h.share_beyond_3std();
        assert!((share - 0.0027).abs() < 0.0006, "{share}");
    }

    #[test]
    fn svg_draws_one_bar_per_nonempty_bin_with_log_heights() {
        let v = gaussian(5000, 1.0, 4);
        let h = HistogramData::from_values(&v, 30);
        let labels = HistogramLabels {
            title: "test values vs Gaussian".into(),
            x_label: "value (units)".into(),
            series: "test".into(),
        };
        let svg = render(&h, &labels, super::super::DEFAULT_SIZE).unwrap();
        let fill = super::super::hex(super::super::series_color(0));
        // Legend swatch is one extra rect of the same colour.
        let rects = super::super::svg_rects(&svg, &fill);
        let nonempty = h.counts.iter().filter(|&&c| c > 0).count();
        assert_eq!(rects.len(), nonempty + 1, "bars drawn");
        // Bars stand on the axis floor (count 0.5): the most common bottom.
        let bottom = |r: &super::super::SvgRect| (r.y + r.h).round() as i64;
        let mut bottoms: Vec<i64> = rects.iter().map(bottom).collect();
        bottoms.sort();
        let floor = bottoms[bottoms.len() / 2];
        let bars: Vec<_> = rects.iter().filter(|r| bottom(r) == floor).collect();
        assert_eq!(bars.len(), nonempty);
        // On a log axis, height ∝ ln(count / 0.5): check every bar against
        // the tallest, in bin order.
        let tallest = bars.iter().map(|r| r.h).fold(0.0, f64::max);
        let cmax = *h.counts.iter().max().unwrap() as f64;
        let nonzero: Vec<u64> = h.counts.iter().copied().filter(|&c| c > 0).collect();
        for (r, &c) in bars.iter().zip(&nonzero) {
            let want = tallest * (c as f64 / 0.5).ln() / (cmax / 0.5).ln();
            assert!((r.h - want).abs() <= 2.5, "count {c}: {} px vs {want}", r.h);
        }
        let texts = super::super::svg_texts(&svg);
        assert!(texts.iter().any(|t| t == "test values vs Gaussian"));
        assert!(texts.iter().any(|t| t.contains("entries per bin")));
        assert!(texts.iter().any(|t| t.contains("±3 std")));
    }
}
