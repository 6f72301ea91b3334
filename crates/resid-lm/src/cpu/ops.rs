//! The CPU path's building blocks on plain `f32` slices, each with its
//! backward: linear layers (over the `gemm` crate), LayerNorm, GELU, and the
//! output head fused with softmax cross-entropy. Every function writes into
//! buffers the caller owns, so a training step allocates nothing; all of them
//! run on the calling thread (the trainer parallelises over sequences).

use super::math::{self, vectorized};
use crate::kernels::mm;

/// `y[rows, out] = x[rows, in] W^T (+ b)` with `W` in torch layout `[out, in]`;
/// `acc`: add to `y` instead of overwriting it (the residual stream).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    n_in: usize,
    n_out: usize,
    acc: bool,
) {
    assert!(y.len() >= rows * n_out && x.len() >= rows * n_in && w.len() == n_in * n_out);
    // SAFETY: the asserts bound every access of the strided product.
    unsafe {
        mm(
            rows,
            n_out,
            n_in,
            y.as_mut_ptr(),
            (n_out, 1),
            x.as_ptr(),
            (n_in, 1),
            w.as_ptr(),
            (1, n_in),
            acc,
        )
    };
    if let Some(b) = b {
        vectorized(|| {
            for row in y[..rows * n_out].chunks_exact_mut(n_out) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        });
    }
}

/// Where [`linear_backward`] puts its gradients (`None`: not wanted, e.g. frozen).
pub struct LinearGrads<'a> {
    /// `dx = dy W` (`.1`: add to it).
    pub dx: Option<(&'a mut [f32], bool)>,
    /// `dW += dy^T x`.
    pub dw: Option<&'a mut [f32]>,
    /// `db += column sums of dy`.
    pub db: Option<&'a mut [f32]>,
}

/// Backward of [`linear`].
pub fn linear_backward(
    g: LinearGrads,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    n_in: usize,
    n_out: usize,
) {
    assert!(dy.len() >= rows * n_out && x.len() >= rows * n_in && w.len() == n_in * n_out);
    if let Some((dx, acc)) = g.dx {
        assert!(dx.len() >= rows * n_in);
        // SAFETY: bounds asserted above.
        unsafe {
            mm(
                rows,
                n_in,
                n_out,
                dx.as_mut_ptr(),
                (n_in, 1),
                dy.as_ptr(),
                (n_out, 1),
                w.as_ptr(),
                (n_in, 1),
                acc,
            )
        };
    }
    if let Some(dw) = g.dw {
        assert!(dw.len() == n_in * n_out);
        // SAFETY: bounds asserted above.
        unsafe {
            mm(
                n_out,
                n_in,
                rows,
                dw.as_mut_ptr(),
                (n_in, 1),
                dy.as_ptr(),
                (1, n_out),
                x.as_ptr(),
                (n_in, 1),
                true,
            )
        };
    }
    if let Some(db) = g.db {
        column_sums(db, &dy[..rows * n_out]);
    }
}

/// `acc[j] += sum_r m[r, j]` for a row-major `m` with `acc.len()` columns.
pub fn column_sums(acc: &mut [f32], m: &[f32]) {
    vectorized(|| {
        for row in m.chunks_exact(acc.len()) {
            acc.iter_mut().zip(row).for_each(|(a, x)| *a += x);
        }
    });
}

/// LayerNorm's saved statistics and output for `rows` rows.
pub struct LnOut<'a> {
    pub y: &'a mut [f32],
    pub mean: &'a mut [f32],
    pub rstd: &'a mut [f32],
}

/// LayerNorm over rows of width `d` (eps 1e-5, as torch's default).
pub fn layer_norm(o: LnOut, x: &[f32], w: &[f32], b: &[f32]) {
    let d = w.len();
    vectorized(|| {
        for (((xr, yr), mean), rstd) in x
            .chunks_exact(d)
            .zip(o.y.chunks_exact_mut(d))
            .zip(o.mean.iter_mut())
            .zip(o.rstd.iter_mut())
        {
            let m = xr.iter().sum::<f32>() / d as f32;
            let var = xr.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / d as f32;
            let r = 1.0 / (var + 1e-5).sqrt();
            for j in 0..d {
                yr[j] = (xr[j] - m) * r * w[j] + b[j];
            }
            (*mean, *rstd) = (m, r);
        }
    });
}

/// Backward of [`layer_norm`]: `dx += ...`; `dw`, `db` accumulate when given.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dx: &mut [f32],
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
) {
    let d = w.len();
    let (mut dw, mut db) = (dw, db);
    vectorized(|| {
        for (i, ((dxr, dyr), xr)) in dx
            .chunks_exact_mut(d)
            .zip(dy.chunks_exact(d))
            .zip(x.chunks_exact(d))
            .enumerate()
        {
            let (m, r) = (mean[i], rstd[i]);
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for j in 0..d {
                let g = dyr[j] * w[j];
                s1 += g;
                s2 += g * (xr[j] - m) * r;
            }
            let (s1, s2) = (s1 / d as f32, s2 / d as f32);
            for j in 0..d {
                let xh = (xr[j] - m) * r;
                dxr[j] += r * (dyr[j] * w[j] - s1 - xh * s2);
            }
            if let Some(dw) = dw.as_deref_mut() {
                for j in 0..d {
                    dw[j] += dyr[j] * (xr[j] - m) * r;
                }
            }
            if let Some(db) = db.as_deref_mut() {
                db.iter_mut().zip(dyr).for_each(|(a, g)| *a += g);
            }
        }
    });
}

/// `a = gelu(u)` elementwise.
pub fn gelu(a: &mut [f32], u: &[f32]) {
    vectorized(|| a.iter_mut().zip(u).for_each(|(a, &u)| *a = math::gelu(u)));
}

/// `du = da * gelu'(u)` elementwise (in place: `d` holds `da` and becomes `du`).
pub fn gelu_backward(d: &mut [f32], u: &[f32]) {
    vectorized(|| {
        d.iter_mut()
            .zip(u)
            .for_each(|(d, &u)| *d *= math::gelu_grad(u))
    });
}

/// The head's gradients, wanted when training.
pub struct HeadGrads<'a> {
    /// Multiplies every row's gradient: 1 / (tokens in the whole batch).
    pub scale: f32,
    /// `dL/dh` (overwritten).
    pub dh: &'a mut [f32],
    pub dw: Option<&'a mut [f32]>,
    pub db: Option<&'a mut [f32]>,
}

/// Summed cross-entropy (nats) of `logits = h W^T + b` (`W` `[vocab, d]`)
/// against `targets`, in chunks of `scratch.len() / vocab` rows so the full
/// `[rows, vocab]` logits never exist; with `grad`, also the backward of
/// `scale * sum`, chunk by chunk while the chunk's softmax is at hand.
pub fn head_cross_entropy(
    h: &[f32],
    targets: &[i32],
    w: &[f32],
    b: &[f32],
    scratch: &mut [f32],
    mut grad: Option<HeadGrads>,
) -> f64 {
    let v = b.len();
    let d = w.len() / v;
    let chunk = (scratch.len() / v).max(1);
    let mut total = 0.0f64;
    for (c, ys) in targets.chunks(chunk).enumerate() {
        let (r0, n) = (c * chunk, ys.len());
        let hc = &h[r0 * d..(r0 + n) * d];
        let logits = &mut scratch[..n * v];
        linear(logits, hc, w, Some(b), n, d, v, false);
        let scale = grad.as_ref().map_or(0.0, |g| g.scale);
        total += vectorized(|| {
            let mut sum = 0.0f64;
            for (row, &y) in logits.chunks_exact_mut(v).zip(ys) {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let target = row[y as usize];
                let mut z = 0.0f32;
                for x in row.iter_mut() {
                    *x = math::exp(*x - m);
                    z += *x;
                }
                sum += (m + z.ln() - target) as f64;
                // Softmax minus one-hot, times scale: the gradient of the logits.
                let k = scale / z;
                row.iter_mut().for_each(|x| *x *= k);
                row[y as usize] -= scale;
            }
            sum
        });
        if let Some(g) = grad.as_mut() {
            let lg = LinearGrads {
                dx: Some((&mut g.dh[r0 * d..(r0 + n) * d], false)),
                dw: g.dw.as_deref_mut(),
                db: g.db.as_deref_mut(),
            };
            linear_backward(lg, logits, hc, w, n, d, v);
        }
    }
    total
}
