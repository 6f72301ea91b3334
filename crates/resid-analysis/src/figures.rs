//! Figure data gathered during the analysis pass (docs/MEASURES.md,
//! "Figures"): value histograms on the bf16 grid, the singular values of a
//! few matrices (the exact Gram's eigenvalues the PR already computed), and
//! the power map of the matrix with the highest low-frequency ratio beside
//! the verdict's own null. The report draws these and never reads a
//! checkpoint; every number a caption quotes comes from the record.

use std::collections::BTreeMap;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use resid_io::Component;

use crate::aggregate::{Report, TensorRecord};
use crate::participation;

/// Which figures to gather.
#[derive(Clone, Debug)]
pub struct FigureOptions {
    /// Matrices whose spectra are kept (at most).
    pub spectra: usize,
}

impl Default for FigureOptions {
    fn default() -> Self {
        FigureOptions { spectra: 3 }
    }
}

/// Bins of [`ValueHistogram`]: one per value of the top 16 bits of an f32
/// (sign, exponent, 7 mantissa bits), i.e. per bf16 value.
pub const GRID_BINS: usize = 1 << 16;

/// A histogram of values on the bf16 grid: scale-free (bins of relative
/// width 2^-7), so tensors of any scale merge exactly and no range has to
/// be known before the pass. [`ValueHistogram::linear`] rebins onto equal
/// widths for drawing.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueHistogram {
    counts: Vec<u64>,
    n: u64,
}

impl Default for ValueHistogram {
    fn default() -> Self {
        ValueHistogram {
            counts: vec![0; GRID_BINS],
            n: 0,
        }
    }
}

/// The (bin, count) pairs of `x`'s finite values, bins ascending.
pub fn grid_counts(x: &[f32]) -> Vec<(u16, u64)> {
    let finite = |v: &f32| v.is_finite();
    if x.len() < 1 << 14 {
        let mut b: Vec<u16> = x.iter().filter(|v| finite(v)).map(|v| bin_of(*v)).collect();
        b.sort_unstable();
        return b
            .chunk_by(|a, c| a == c)
            .map(|r| (r[0], r.len() as u64))
            .collect();
    }
    let parts = (x.len() >> 20).clamp(1, 2 * rayon::current_num_threads());
    let tables: Vec<Vec<u32>> = x
        .par_chunks(x.len().div_ceil(parts))
        .map(|part| {
            let mut t = vec![0u32; GRID_BINS];
            for v in part.iter().filter(|v| finite(v)) {
                t[bin_of(*v) as usize] += 1;
            }
            t
        })
        .collect();
    (0..GRID_BINS)
        .filter_map(|i| {
            let c: u64 = tables.iter().map(|t| t[i] as u64).sum();
            (c > 0).then_some((i as u16, c))
        })
        .collect()
}

#[inline]
fn bin_of(v: f32) -> u16 {
    (v.to_bits() >> 16) as u16
}

/// The values a grid bin holds: `[lo, hi)` (for a negative bin, `(lo, hi]`).
pub fn bin_range(b: u16) -> (f64, f64) {
    let mag = (b & 0x7fff) as u32;
    let a = f32::from_bits(mag << 16) as f64;
    let c = f32::from_bits((mag + 1) << 16) as f64;
    if b & 0x8000 != 0 {
        (-c, -a)
    } else {
        (a, c)
    }
}

impl ValueHistogram {
    pub fn add(&mut self, counts: &[(u16, u64)]) {
        for &(b, c) in counts {
            self.counts[b as usize] += c;
            self.n += c;
        }
    }

    /// Values counted.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Counts in `bins` equal-width bins over `[lo, hi]`: each grid bin's
    /// count is spread over the bins its range overlaps (uniformly), values
    /// outside go to the edge bins, and the cumulative sum is rounded so the
    /// counts stay integers summing to [`ValueHistogram::n`].
    pub fn linear(&self, lo: f64, hi: f64, bins: usize) -> Vec<u64> {
        let bins = bins.max(1);
        let w = (hi - lo) / bins as f64;
        let mut frac = vec![0.0f64; bins];
        let idx = |v: f64| -> f64 {
            if w > 0.0 {
                ((v - lo) / w).clamp(0.0, bins as f64)
            } else {
                0.0
            }
        };
        for (b, &c) in self.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let (a, z) = bin_range(b as u16);
            let (ia, iz) = (idx(a), idx(z));
            let c = c as f64;
            if iz - ia < 1e-12 {
                let k = (ia.floor() as usize).min(bins - 1);
                frac[k] += c;
                continue;
            }
            let mut k = ia.floor() as usize;
            while k < bins && (k as f64) < iz {
                let overlap = (iz.min(k as f64 + 1.0) - ia.max(k as f64)).max(0.0);
                frac[k] += c * overlap / (iz - ia);
                k += 1;
            }
        }
        let mut out = Vec::with_capacity(bins);
        let (mut cum, mut prev) = (0.0f64, 0u64);
        for (k, f) in frac.into_iter().enumerate() {
            cum += f;
            let r = if k + 1 == bins {
                self.n
            } else {
                (cum.round() as u64).clamp(prev, self.n)
            };
            out.push(r - prev);
            prev = r;
        }
        out
    }
}

/// The singular values of one matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Spectrum {
    /// The tensor's name.
    pub tensor: String,
    pub rows: usize,
    pub cols: usize,
    /// Population std of the matrix's entries (the null's std).
    pub std: f64,
    /// Singular values, largest first: square roots of the eigenvalues of
    /// the exact f32 Gram the PR was computed from (tiny values below the
    /// f32 resolution of `s_max^2` read as 0).
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
        let k = self.scale();
        self.singular_values
            .iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, if k > 0.0 { v / k } else { 0.0 }))
            .collect()
    }

    /// The null's normalised singular values, largest first: the
    /// Marchenko-Pastur quantiles ([`participation::mp_singular_values`]).
    pub fn null_normalised(&self) -> Vec<(f64, f64)> {
        let q = self.rows.max(self.cols) as f64;
        participation::mp_singular_values(self.rows, self.cols, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, v / q.sqrt()))
            .collect()
    }
}

/// Largest block a power map shows; bigger matrices are drawn from their
/// top-left corner of this size (the verdict's share is of the whole).
pub const MAP_SIDE: usize = 512;

/// A power map: mean power per block of frequencies, over the half plane
/// row frequency in [-1/2, 1/2), column frequency in [0, 1/2] (cycles per
/// entry), normalised so that the mean power of a non-DC frequency is 1.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerMap {
    /// Shape drawn (after cropping).
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
}

/// The power map of the smoothest matrix and of the verdict's null for
/// its shape (the same Gaussian rows [`crate::lowfreq::null_share`] measures).
#[derive(Clone, Debug, PartialEq)]
pub struct PowerMaps {
    pub tensor: String,
    pub residual: PowerMap,
    pub null: PowerMap,
}

/// Blocks a side of a power map.
pub const MAP_GRID: usize = 64;

/// The map of the top-left (at most [`MAP_SIDE`] square) block of the
/// `rows x cols` row-major matrix that `row(r)` yields, its mean removed.
pub fn power_map<'a>(
    rows: usize,
    cols: usize,
    grid: usize,
    row: impl Fn(usize) -> std::borrow::Cow<'a, [f32]>,
) -> PowerMap {
    let r = rows.min(MAP_SIDE);
    let c = cols.min(MAP_SIDE);
    let block: Vec<f64> = (0..r)
        .flat_map(|i| row(i)[..c].iter().map(|&v| v as f64).collect::<Vec<_>>())
        .collect();
    let mean = block.iter().sum::<f64>() / (r * c).max(1) as f64;
    let hc = c / 2 + 1;
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let rfft = planner.plan_fft_forward(c);
    let mut spec = vec![Complex::new(0.0, 0.0); r * hc];
    let mut line = vec![0f64; c];
    let mut out = rfft.make_output_vec();
    for i in 0..r {
        for (d, &v) in line.iter_mut().zip(&block[i * c..(i + 1) * c]) {
            *d = v - mean;
        }
        rfft.process(&mut line, &mut out).expect("rfft sizes");
        spec[i * hc..(i + 1) * hc].copy_from_slice(&out);
    }
    let fft = rustfft::FftPlanner::<f64>::new().plan_fft_forward(r);
    let mut col = vec![Complex::new(0.0, 0.0); r];
    let mut power = vec![0f64; r * hc];
    for j in 0..hc {
        for i in 0..r {
            col[i] = spec[i * hc + j];
        }
        fft.process(&mut col);
        for i in 0..r {
            power[i * hc + j] = col[i].norm_sqr();
        }
    }
    // Conjugate symmetry: the half plane stands for the full one.
    let weight = |j: usize| {
        if j == 0 || (c.is_multiple_of(2) && j == c / 2) {
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
    let (mut total, mut count) = (0f64, 0f64);
    for i in 0..r {
        for j in 0..hc {
            if i != 0 || j != 0 {
                total += power[i * hc + j] * weight(j);
                count += weight(j);
            }
        }
    }
    let norm = if total > 0.0 { total / count } else { 1.0 };
    let gr = grid.clamp(1, r.max(1));
    let gc = grid.div_ceil(2).clamp(1, hc);
    let mut sum = vec![0f64; gr * gc];
    let mut n = vec![0usize; gr * gc];
    for i in 0..r {
        let shifted = (signed(i) + (r as i64) / 2) as usize;
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
    PowerMap {
        rows: r,
        cols: c,
        full_rows: rows,
        full_cols: cols,
        grid_rows: gr,
        grid_cols: gc,
        power: sum
            .iter()
            .zip(&n)
            .map(|(s, &k)| if k > 0 { s / k as f64 } else { 0.0 })
            .collect(),
    }
}

/// The maps of a residual matrix and of the verdict's null of its shape.
pub fn power_maps(x: &[f32], rows: usize, cols: usize, name: &str, seed: u64) -> PowerMaps {
    let nseed = crate::lowfreq::null_seed(seed, rows, cols);
    let residual = power_map(rows, cols, MAP_GRID, |r| {
        std::borrow::Cow::Borrowed(&x[r * cols..(r + 1) * cols])
    });
    let null = power_map(rows, cols, MAP_GRID, |r| {
        let mut v = vec![0.0f32; cols];
        crate::null::fill_chunk(&mut v, 1.0, nseed, r as u64);
        std::borrow::Cow::Owned(v)
    });
    PowerMaps {
        tensor: name.to_string(),
        residual,
        null,
    }
}

/// Everything the report draws that is not a number of the record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Per component name ("attention", "mlp", ...) and "all".
    pub histograms: BTreeMap<String, ValueHistogram>,
    pub spectra: Vec<Spectrum>,
    pub powermap: Option<PowerMaps>,
}

/// A tensor as the figure choice sees it.
pub struct Candidate<'a> {
    pub name: &'a str,
    pub layer: Option<usize>,
    pub component: Component,
    /// The 2-D view, when its Gram is exact (only those spectra are kept).
    pub exact_matrix: Option<(usize, usize)>,
}

/// The matrices whose spectra are drawn: an attention and an MLP matrix of
/// the first layer, an MLP and an attention matrix of the last, then any,
/// up to `n`; by name within each, so the choice does not depend on the
/// order of the candidates.
pub fn spectrum_choice(cands: &[Candidate], n: usize) -> Vec<String> {
    let mut ok: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.exact_matrix.is_some_and(|(a, b)| a.min(b) >= 2))
        .collect();
    ok.sort_by_key(|c| c.name);
    let first = cands.iter().filter_map(|c| c.layer).min();
    let last = cands.iter().filter_map(|c| c.layer).max();
    let mut names: Vec<String> = Vec::new();
    for (layer, comp) in [
        (first, Component::Attention),
        (first, Component::Mlp),
        (last, Component::Mlp),
        (last, Component::Attention),
    ] {
        if let Some(c) = ok
            .iter()
            .find(|c| c.layer == layer && c.component == comp && !names.iter().any(|n| n == c.name))
        {
            names.push(c.name.to_string());
        }
    }
    for c in &ok {
        if names.len() >= n {
            break;
        }
        if !names.iter().any(|x| x == c.name) {
            names.push(c.name.to_string());
        }
    }
    names.truncate(n);
    names
}

impl Figures {
    /// Adds a tensor's grid counts to its component's histogram and "all".
    pub fn add_values(&mut self, component: Component, counts: &[(u16, u64)]) {
        for key in ["all", component.name()] {
            self.histograms
                .entry(key.to_string())
                .or_default()
                .add(counts);
        }
    }

    /// Puts the spectra in the order of `names`.
    pub fn order_spectra(&mut self, names: &[String]) {
        self.spectra
            .sort_by_key(|s| names.iter().position(|n| *n == s.tensor));
    }
}

/// The spectrum of a matrix from its exact Gram's eigenvalues.
pub fn spectrum_of(rec: &TensorRecord, eigs: &[f64]) -> Option<Spectrum> {
    let (rows, cols) = rec.matrix?;
    let mut sv: Vec<f64> = eigs.iter().map(|e| e.max(0.0).sqrt()).collect();
    sv.sort_by(|a, b| b.total_cmp(a));
    Some(Spectrum {
        tensor: rec.name.clone(),
        rows,
        cols,
        std: rec.std,
        singular_values: sv,
    })
}

/// The figures of a finished report from its residuals, for callers that
/// hold a report but ran the analysis without figures: `residual` fills
/// the residual of a record (false: skip it). The same code as the
/// analysis pass, over a second read of the inputs.
pub fn collect<E>(
    report: &Report,
    opts: &FigureOptions,
    mut residual: impl FnMut(&TensorRecord, &mut Vec<f32>) -> Result<bool, E>,
) -> Result<Figures, E> {
    let cands: Vec<Candidate> = report
        .tensors
        .iter()
        .map(|r| Candidate {
            name: &r.name,
            layer: r.layer,
            component: r.component,
            exact_matrix: r
                .matrix
                .filter(|_| r.sampling.as_ref().is_none_or(|s| s.pr.is_none())),
        })
        .collect();
    let names = spectrum_choice(&cands, opts.spectra);
    let power = report
        .tensors
        .iter()
        .filter(|r| r.matrix.is_some() && r.lowfreq_ratio.is_some_and(f64::is_finite))
        .max_by(|a, b| smoother(a, b))
        .map(|r| r.name.clone());
    let mut figs = Figures::default();
    let mut buf = Vec::new();
    for r in &report.tensors {
        if !residual(r, &mut buf)? {
            continue;
        }
        figs.add_values(r.component, &grid_counts(&buf));
        let Some((rows, cols)) = r.matrix else {
            continue;
        };
        if buf.iter().any(|v| !v.is_finite()) || r.std == 0.0 {
            continue;
        }
        if names.contains(&r.name) {
            let g = participation::gram(&buf, rows, cols);
            if let Some(s) = spectrum_of(r, &participation::eigenvalues(g.as_ref())) {
                figs.spectra.push(s);
            }
        }
        if power.as_deref() == Some(r.name.as_str()) {
            figs.powermap = Some(power_maps(&buf, rows, cols, &r.name, report.seed));
        }
    }
    figs.order_spectra(&names);
    Ok(figs)
}

/// Order of the power-map choice: the higher low-frequency ratio, then the
/// name (so ties do not depend on the order tensors finish in).
pub fn smoother(a: &TensorRecord, b: &TensorRecord) -> std::cmp::Ordering {
    let ra = a.lowfreq_ratio.unwrap_or(f64::NAN);
    let rb = b.lowfreq_ratio.unwrap_or(f64::NAN);
    ra.total_cmp(&rb).then_with(|| b.name.cmp(&a.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_bins_hold_their_values_and_rebin_to_direct_counts() {
        let x = crate::null::gaussian_vec(50_000, 0.02, 7);
        let counts = grid_counts(&x);
        assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 50_000);
        for &v in &x[..1000] {
            let (lo, hi) = bin_range(bin_of(v));
            let v = v as f64;
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
        }
        // The small-tensor path gives the same counts.
        let small = &x[..5000];
        let mut h1 = ValueHistogram::default();
        h1.add(&grid_counts(small));
        let mut direct = vec![0u64; GRID_BINS];
        small.iter().for_each(|&v| direct[bin_of(v) as usize] += 1);
        assert_eq!(h1.counts, direct);
        // Rebinned onto 40 bins over +-4 std: within a count or two of
        // binning the values directly (only values near an edge can move).
        let mut h = ValueHistogram::default();
        h.add(&counts);
        let (lo, hi, bins) = (-0.08, 0.08, 40);
        let got = h.linear(lo, hi, bins);
        assert_eq!(got.iter().sum::<u64>(), 50_000);
        let mut want = vec![0i64; bins];
        for &v in &x {
            let k = (((v as f64 - lo) / (hi - lo) * bins as f64).floor() as i64)
                .clamp(0, bins as i64 - 1);
            want[k as usize] += 1;
        }
        for (g, w) in got.iter().zip(&want) {
            let tol = 2 + (*w as f64 * 0.02) as i64;
            assert!((*g as i64 - w).abs() <= tol, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn white_noise_map_is_flat_and_a_smooth_one_peaks_at_the_origin() {
        let (r, c) = (128, 96);
        let m = crate::null::gaussian_vec(r * c, 0.1, 1);
        let p = power_map(r, c, 32, |i| {
            std::borrow::Cow::Borrowed(&m[i * c..(i + 1) * c])
        });
        let mean = p.power.iter().sum::<f64>() / p.power.len() as f64;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
        let (r, c) = (64, 80);
        let s: Vec<f32> = (0..r * c)
            .map(|k| {
                let (i, j) = ((k / c) as f32, (k % c) as f32);
                (i * 0.07).sin() * (j * 0.05).cos() + 0.3 * (i * 0.02 + j * 0.03).sin()
            })
            .collect();
        let p = power_map(r, c, 16, |i| {
            std::borrow::Cow::Borrowed(&s[i * c..(i + 1) * c])
        });
        let origin = p.power[(p.grid_rows / 2) * p.grid_cols];
        assert!(p.power.iter().all(|&v| v <= origin + 1e-9));
        let big = crate::null::gaussian_vec(600 * 40, 1.0, 2);
        let p = power_maps(&big, 600, 40, "t", 0);
        assert_eq!(
            (p.residual.rows, p.residual.cols, p.residual.full_rows),
            (MAP_SIDE, 40, 600)
        );
    }
}
