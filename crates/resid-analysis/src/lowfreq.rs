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
    // a row apart (the one-column gather was the hottest spot of this stage,
    // itself about a fifth of analyze's time at 7B).
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

/// Largest prime factor of n (n >= 1).
fn largest_prime_factor(mut n: usize) -> usize {
    let mut f = 2;
    let mut largest = 1;
    while f * f <= n {
        while n.is_multiple_of(f) {
            largest = f;
            n /= f;
        }
        f += 1;
    }
    largest.max(n)
}

/// Whether to transform the columns first. The first stage transforms every
/// line, the second only an eighth of them, so an awkward length (a large
/// prime factor: 11008 = 2^8 * 43 in a 7B MLP, which needs Rader's
/// algorithm) is best left to the second stage. The band and so the share
/// are the same either way; only rounding differs.
pub fn columns_first(rows: usize, cols: usize) -> bool {
    largest_prime_factor(cols) > largest_prime_factor(rows).max(7)
}

/// Share for a row-major slice, removing `mean`. `scratch` holds the
/// transposed matrix when the columns go first (see [`columns_first`]).
pub fn share_of(x: &[f32], rows: usize, cols: usize, mean: f64, scratch: &mut Vec<f32>) -> f64 {
    let m = mean as f32;
    if !columns_first(rows, cols) {
        return low_freq_share(rows, cols, |r, out| {
            for (o, &v) in out.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
                *o = v - m;
            }
        });
    }
    // Transpose in 32-column strips (each row of a strip is one or two
    // cache lines), then transform the transposed matrix row-first.
    const T: usize = 32;
    scratch.clear();
    scratch.resize(rows * cols, 0.0);
    scratch
        .par_chunks_mut(T * rows)
        .enumerate()
        .for_each(|(b, out)| {
            let c0 = b * T;
            let nc = out.len() / rows;
            for r in 0..rows {
                let src = &x[r * cols + c0..r * cols + c0 + nc];
                for (j, &v) in src.iter().enumerate() {
                    out[j * rows + r] = v - m;
                }
            }
        });
    let t: &[f32] = scratch;
    low_freq_share(cols, rows, |r, out| {
        out.copy_from_slice(&t[r * rows..(r + 1) * rows]);
    })
}

/// The seed of the null of a shape (`seed`: the run's): the verdict's null
/// and the power-map figure draw the same rows from it.
pub fn null_seed(seed: u64, rows: usize, cols: usize) -> u64 {
    crate::null::mix(
        seed,
        crate::null::hash_str(&format!("lowfreq-null:{rows}x{cols}")),
    )
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
        let s = share_of(&x, rows, cols, mean, &mut Vec::new());
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
        let s = share_of(&smooth, rows, cols, ms, &mut Vec::new());
        assert!(s > 0.9, "{s}");
    }

    /// The band's share by the definition: a direct 2-D DFT, O(n^2).
    fn brute(x: &[f32], rows: usize, cols: usize) -> f64 {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let (kr, kc) = (rows / 8, cols / 8);
        let (mut low, mut total) = (0.0, 0.0);
        for fr in 0..rows {
            for fc in 0..cols {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for r in 0..rows {
                    for c in 0..cols {
                        let a = -2.0
                            * std::f64::consts::PI
                            * ((fr * r) as f64 / rows as f64 + (fc * c) as f64 / cols as f64);
                        let v = x[r * cols + c] as f64 - mean;
                        re += v * a.cos();
                        im += v * a.sin();
                    }
                }
                let p = re * re + im * im;
                total += p;
                let (dr, dc) = (fr.min(rows - fr), fc.min(cols - fc));
                if dr <= kr && dc <= kc && !(fr == 0 && fc == 0) {
                    low += p;
                }
            }
        }
        low / total
    }

    #[test]
    fn either_axis_first_gives_the_definition() {
        // 16 x 43: the columns go first (43 is prime); 43 x 16: the rows.
        let x: Vec<f32> = crate::null::gaussian_vec(16 * 43, 1.0, 3)
            .iter()
            .enumerate()
            .map(|(k, &v)| v + ((k / 43) as f32 * 0.3).sin() + ((k % 43) as f32 * 0.2).cos())
            .collect();
        assert!(columns_first(16, 43) && !columns_first(43, 16));
        assert!(!columns_first(4096, 11008 / 43 * 8) && columns_first(4096, 11008));
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let want = brute(&x, 16, 43);
        let got = share_of(&x, 16, 43, mean, &mut Vec::new());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let xt: Vec<f32> = (0..43 * 16).map(|k| x[(k % 16) * 43 + k / 16]).collect();
        let got_t = share_of(&xt, 43, 16, mean, &mut Vec::new());
        assert!((got_t - want).abs() < 1e-5, "{got_t} vs {want}");
    }
}
