//! Low-frequency power (smoothness): the share of the 2-D spectrum's power,
//! DC excluded, at |f_row| <= rows/8 and |f_col| <= cols/8, of the
//! mean-removed matrix. Rows are transformed one at a time with a real FFT
//! and only the kept column frequencies are stored (rows x (cols/8 + 1)
//! complex), then those columns get a complex FFT; total power comes from
//! Parseval, so the full spectrum is never held. A smooth matrix gives a
//! ratio to the white-noise null well above 1; white noise gives about 1.

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::RealFftPlanner;
use rustfft::FftPlanner;

/// Low-frequency power share of a rows x cols matrix whose rows `fill_row(r, out)`
/// writes (already mean-removed; finite).
pub fn low_freq_share<F>(rows: usize, cols: usize, fill_row: F) -> f64
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if rows < 2 || cols < 2 {
        return f64::NAN;
    }
    let kc = (cols / 8).min(cols / 2);
    let nk = kc + 1;
    let r2c = RealFftPlanner::<f32>::new().plan_fft_forward(cols);
    let mut y = vec![Complex::<f32>::new(0.0, 0.0); rows * nk];
    let energy: f64 = y
        .par_chunks_mut(nk)
        .enumerate()
        .map_init(
            || {
                (
                    vec![0.0f32; cols],
                    r2c.make_output_vec(),
                    r2c.make_scratch_vec(),
                )
            },
            |(row, spec, scratch), (r, out)| {
                fill_row(r, row);
                let e = sum_squares(row);
                r2c.process_with_scratch(row, spec, scratch)
                    .expect("fft lengths");
                out.copy_from_slice(&spec[..nk]);
                e
            },
        )
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    let total = energy * rows as f64 * cols as f64;
    if total <= 0.0 {
        return f64::NAN;
    }
    let fft = FftPlanner::<f32>::new().plan_fft_forward(rows);
    let kr = rows / 8;
    let cols_len = cols;
    // Columns are gathered B at a time: a row of y holds them side by side,
    // so each row is read as one contiguous run instead of B cache misses
    // a row apart (the one-column gather was a fifth of analyze's time).
    const B: usize = 16;
    let per_col: Vec<f64> = (0..nk.div_ceil(B))
        .into_par_iter()
        .map_init(
            || vec![Complex::<f32>::new(0.0, 0.0); B * rows],
            |cols, blk| {
                let c0 = blk * B;
                let nb = B.min(nk - c0);
                for r in 0..rows {
                    let src = &y[r * nk + c0..r * nk + c0 + nb];
                    for (j, v) in src.iter().enumerate() {
                        cols[j * rows + r] = *v;
                    }
                }
                (0..nb)
                    .map(|j| {
                        let fc = c0 + j;
                        let col = &mut cols[j * rows..(j + 1) * rows];
                        fft.process(col);
                        let mult = if fc == 0 || 2 * fc == cols_len {
                            1.0
                        } else {
                            2.0
                        };
                        let mut p = 0.0f64;
                        for (i, c) in col.iter().enumerate() {
                            let f = if i <= rows / 2 { i } else { rows - i };
                            if f <= kr && !(fc == 0 && i == 0) {
                                p += (c.re as f64).powi(2) + (c.im as f64).powi(2);
                            }
                        }
                        p * mult
                    })
                    .collect::<Vec<f64>>()
            },
        )
        .flatten_iter()
        .collect();
    let low: f64 = per_col.iter().sum();
    low / total
}

/// `sum v^2` in f64 over eight lanes, which the compiler vectorises (an
/// in-order sum cannot be).
fn sum_squares(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let c = v.chunks_exact(8);
    let tail: f64 = c.remainder().iter().map(|&a| (a as f64) * (a as f64)).sum();
    for x in c {
        for l in 0..8 {
            acc[l] += (x[l] as f64) * (x[l] as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Share for a row-major slice, removing `mean`.
pub fn share_of(x: &[f32], rows: usize, cols: usize, mean: f64) -> f64 {
    let m = mean as f32;
    low_freq_share(rows, cols, |r, out| {
        for (o, &v) in out.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *o = v - m;
        }
    })
}

/// Share for the Gaussian null of this shape, rows generated from the seed.
/// The null's mean is 0 by construction (its sample mean carries about 1/n of
/// the power, and the DC term is excluded anyway), so no mean is removed.
pub fn null_share(rows: usize, cols: usize, seed: u64) -> f64 {
    low_freq_share(rows, cols, |r, out| {
        crate::null::fill_chunk(out, 1.0, seed, r as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_noise_near_its_bin_share_and_smooth_far_above() {
        let (rows, cols) = (128, 256);
        let x = crate::null::gaussian_vec(rows * cols, 1.0, 11);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let s = share_of(&x, rows, cols, mean);
        // Bins in the low band: (2*16+1) * (2*32+1) - 1 of rows*cols - 1.
        let expect =
            ((2 * (rows / 8) + 1) * (2 * (cols / 8) + 1) - 1) as f64 / (rows * cols - 1) as f64;
        assert!((s / expect - 1.0).abs() < 0.1, "{s} vs {expect}");
        let n = null_share(rows, cols, 5);
        assert!((n / expect - 1.0).abs() < 0.1, "{n} vs {expect}");
        let smooth: Vec<f32> = (0..rows * cols)
            .map(|k| {
                let (i, j) = ((k / cols) as f32, (k % cols) as f32);
                (i * 0.05).sin() * (j * 0.03).cos() + 0.01 * x[k]
            })
            .collect();
        let ms = smooth.iter().map(|&v| v as f64).sum::<f64>() / smooth.len() as f64;
        let s = share_of(&smooth, rows, cols, ms);
        assert!(s > 0.9, "{s}");
    }
}
