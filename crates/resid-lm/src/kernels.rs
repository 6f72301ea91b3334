//! Host (CPU) kernels for the three operations where burn's decomposed
//! autodiff graph is slowest on 2 cores: causal multi-head attention,
//! LayerNorm and softmax cross-entropy. Each has a forward and a backward on
//! plain `f32` slices; `fused.rs` wires them into burn as single autodiff
//! nodes. Attention works directly on the `[batch * t, d]` projections (head
//! `h` is columns `h*hd..(h+1)*hd`), so no head transposes are materialised,
//! and recomputes the probabilities in the backward from the saved
//! log-sum-exp (FlashAttention's trade: one extra `QK^T` instead of storing
//! `batch * heads * t * t` floats).

use gemm::{gemm, Parallelism};

use crate::cpu::math::exp;
use crate::cpu::ops::{
    column_sums, layer_norm, layer_norm_backward as layer_norm_backward_rows, LnOut,
};
use rayon::prelude::*;

/// A raw pointer that may cross threads; each task writes a disjoint region.
#[derive(Clone, Copy)]
struct Ptr(*mut f32);
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// Taking `self` makes closures capture the whole (Send) wrapper.
    fn at(self, off: usize) -> *mut f32 {
        unsafe { self.0.add(off) }
    }
}

/// `dst[m x n] = lhs[m x k] * rhs[k x n]` (`acc`: add to dst), with explicit
/// row/column strides for each operand.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    (d_rs, d_cs): (usize, usize),
    lhs: *const f32,
    (l_rs, l_cs): (usize, usize),
    rhs: *const f32,
    (r_rs, r_cs): (usize, usize),
    acc: bool,
) {
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            d_cs as isize,
            d_rs as isize,
            acc,
            lhs,
            l_cs as isize,
            l_rs as isize,
            rhs,
            r_cs as isize,
            r_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Shape of an attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub t: usize,
    pub n_head: usize,
    pub d: usize,
}

impl AttnShape {
    fn hd(&self) -> usize {
        self.d / self.n_head
    }
    fn scale(&self) -> f32 {
        1.0 / (self.hd() as f32).sqrt()
    }
    /// Offset of (batch b, head h) in a `[batch * t, d]` buffer.
    fn off(&self, slot: usize) -> usize {
        let (b, h) = (slot / self.n_head, slot % self.n_head);
        b * self.t * self.d + h * self.hd()
    }
}

/// Rows of the causal triangle are handled in blocks of this many: rows
/// `[r0, r1)` need columns `[0, r1)` only, so the products skip most of the
/// masked half (3/8 of the square at t = 128, 7/16 at t = 512).
const BLOCK: usize = 32;

/// Row blocks `(r0, r1)` of a `t x t` causal matrix.
fn row_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t)
        .step_by(BLOCK)
        .map(move |r0| (r0, (r0 + BLOCK).min(t)))
}

/// The columns row `i` of a blocked causal matrix holds (`[0, r1)`).
fn row_end(i: usize, t: usize) -> usize {
    ((i / BLOCK + 1) * BLOCK).min(t)
}

/// `m[i, j] = a[i] . b[j]` for the causal blocks (`m` is `t x t`, `a`, `b`
/// are one head's columns of `[t, d]` buffers).
unsafe fn scores(s: &AttnShape, m: *mut f32, a: *const f32, b: *const f32) {
    let (t, d, hd) = (s.t, s.d, s.hd());
    for (r0, r1) in row_blocks(t) {
        unsafe {
            mm(
                r1 - r0,
                r1,
                hd,
                m.add(r0 * t),
                (t, 1),
                a.add(r0 * d),
                (d, 1),
                b,
                (1, d),
                false,
            )
        };
    }
}

/// `out = m b` over the causal blocks of `m` (`out`, `b`: one head of `[t, d]`).
unsafe fn causal_times(s: &AttnShape, out: *mut f32, m: *const f32, b: *const f32) {
    let (t, d, hd) = (s.t, s.d, s.hd());
    for (r0, r1) in row_blocks(t) {
        unsafe {
            mm(
                r1 - r0,
                hd,
                r1,
                out.add(r0 * d),
                (d, 1),
                m.add(r0 * t),
                (t, 1),
                b,
                (d, 1),
                false,
            )
        };
    }
}

/// `out = m^T b` over the causal blocks of `m`: column block `[c0, c1)` of
/// `m` is nonzero in rows `c0..t` only.
unsafe fn causal_transpose_times(s: &AttnShape, out: *mut f32, m: *const f32, b: *const f32) {
    let (t, d, hd) = (s.t, s.d, s.hd());
    for (c0, c1) in row_blocks(t) {
        unsafe {
            mm(
                c1 - c0,
                hd,
                t - c0,
                out.add(c0 * d),
                (d, 1),
                m.add(c0 * t + c0),
                (1, t),
                b.add(c0 * d),
                (d, 1),
                false,
            )
        };
    }
}

/// Scores `S = scale * Q K^T` for one slot, then the causal softmax in place
/// (on the causal blocks of `p`, `t x t`, zero above the diagonal); fills
/// `lse` (`t`) when given, or uses the `saved` one.
unsafe fn probs(
    s: &AttnShape,
    q: *const f32,
    k: *const f32,
    p: &mut [f32],
    lse: Option<&mut [f32]>,
    saved: Option<&[f32]>,
) {
    let t = s.t;
    unsafe { scores(s, p.as_mut_ptr(), q, k) };
    let scale = s.scale();
    let mut lse = lse;
    crate::cpu::math::vectorized(|| {
        for i in 0..t {
            let row = &mut p[i * t..i * t + row_end(i, t)];
            let (live, dead) = row.split_at_mut(i + 1);
            dead.fill(0.0);
            let l = match saved {
                Some(sv) => sv[i],
                None => {
                    let m = live
                        .iter()
                        .fold(f32::NEG_INFINITY, |a, &x| a.max(x * scale));
                    let z: f32 = live.iter().map(|&x| exp(x * scale - m)).sum();
                    m + z.ln()
                }
            };
            for x in live.iter_mut() {
                *x = exp(*x * scale - l);
            }
            if let Some(ls) = lse.as_deref_mut() {
                ls[i] = l;
            }
        }
    })
}

/// Forward of one (sequence, head) slot: writes that head's columns of `y`
/// and the slot's `t` log-sum-exps; `p` is `t * t` scratch.
///
/// # Safety
/// `q`, `k`, `v` and `y` point to `[batch * t, d]` buffers of shape `s`.
pub unsafe fn attention_slot_forward(
    s: &AttnShape,
    slot: usize,
    (q, k, v): (*const f32, *const f32, *const f32),
    y: *mut f32,
    lse: &mut [f32],
    p: &mut [f32],
) {
    let o = s.off(slot);
    unsafe {
        probs(s, q.add(o), k.add(o), p, Some(lse), None);
        causal_times(s, y.add(o), p.as_ptr(), v.add(o));
    }
}

/// Backward of one slot: writes that head's columns of `dq`, `dk`, `dv`;
/// `p` and `dp` are `t * t` scratch.
///
/// # Safety
/// Every pointer is a `[batch * t, d]` buffer of shape `s`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_slot_backward(
    s: &AttnShape,
    slot: usize,
    (q, k, v): (*const f32, *const f32, *const f32),
    lse: &[f32],
    dy: *const f32,
    (dq, dk, dv): (*mut f32, *mut f32, *mut f32),
    p: &mut [f32],
    dp: &mut [f32],
) {
    let t = s.t;
    let o = s.off(slot);
    let scale = s.scale();
    unsafe {
        let (qo, ko, vo, dyo) = (q.add(o), k.add(o), v.add(o), dy.add(o));
        probs(s, qo, ko, p, None, Some(lse));
        // dV = P^T dY ; dP = dY V^T
        causal_transpose_times(s, dv.add(o), p.as_ptr(), dyo);
        scores(s, dp.as_mut_ptr(), dyo, vo);
    }
    // dS = P * (dP - rowsum(P * dP)) * scale, zero above the diagonal.
    crate::cpu::math::vectorized(|| {
        for i in 0..t {
            let (pr, dpr) = (
                &p[i * t..i * t + i + 1],
                &mut dp[i * t..i * t + row_end(i, t)],
            );
            let di: f32 = pr.iter().zip(dpr.iter()).map(|(a, b)| a * b).sum();
            let (live, dead) = dpr.split_at_mut(i + 1);
            for (x, &pj) in live.iter_mut().zip(pr) {
                *x = pj * (*x - di) * scale;
            }
            dead.fill(0.0);
        }
    });
    unsafe {
        // dQ = dS K ; dK = dS^T Q
        causal_times(s, dq.add(o), dp.as_ptr(), k.add(o));
        causal_transpose_times(s, dk.add(o), dp.as_ptr(), q.add(o));
    }
}

/// Forward: `y = softmax(causal(scale Q K^T)) V` per head; returns `(y, lse)`
/// with `lse` laid out `[batch * n_head, t]`.
pub fn attention_forward(s: AttnShape, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let t = s.t;
    let mut y = vec![0.0f32; s.batch * t * s.d];
    let mut lse = vec![0.0f32; s.batch * s.n_head * t];
    let yp = Ptr(y.as_mut_ptr());
    lse.par_chunks_mut(t).enumerate().for_each_init(
        || vec![0.0f32; t * t],
        |p, (slot, lse)| unsafe {
            attention_slot_forward(
                &s,
                slot,
                (q.as_ptr(), k.as_ptr(), v.as_ptr()),
                yp.at(0),
                lse,
                p,
            )
        },
    );
    (y, lse)
}

/// Backward: `(dq, dk, dv)` from `dy` and the forward's inputs and `lse`.
pub fn attention_backward(
    s: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t = s.t;
    let n = s.batch * t * s.d;
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let (dqp, dkp, dvp) = (
        Ptr(dq.as_mut_ptr()),
        Ptr(dk.as_mut_ptr()),
        Ptr(dv.as_mut_ptr()),
    );
    (0..s.batch * s.n_head).into_par_iter().for_each_init(
        || (vec![0.0f32; t * t], vec![0.0f32; t * t]),
        |(p, dp), slot| unsafe {
            attention_slot_backward(
                &s,
                slot,
                (q.as_ptr(), k.as_ptr(), v.as_ptr()),
                &lse[slot * t..(slot + 1) * t],
                dy.as_ptr(),
                (dqp.at(0), dkp.at(0), dvp.at(0)),
                p,
                dp,
            )
        },
    );
    (dq, dk, dv)
}

/// LayerNorm forward over rows of `x` (`[n, d]`): returns `(y, mean, rstd)`.
pub fn layer_norm_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = x.len() / d;
    let (mut y, mut mean, mut rstd) = (vec![0.0f32; x.len()], vec![0.0f32; n], vec![0.0f32; n]);
    const ROWS: usize = 64;
    y.par_chunks_mut(d * ROWS)
        .zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))
        .zip(x.par_chunks(d * ROWS))
        .for_each(|((y, (mean, rstd)), x)| layer_norm(LnOut { y, mean, rstd }, x, w, b));
    (y, mean, rstd)
}

/// LayerNorm backward: `(dx, dw, db)`.
pub fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    const ROWS: usize = 64;
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(d * ROWS)
        .enumerate()
        .map(|(c, dxc)| {
            let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
            let (r0, r1) = (c * ROWS, c * ROWS + dxc.len() / d);
            layer_norm_backward_rows(
                dxc,
                Some(&mut dw),
                Some(&mut db),
                &dy[r0 * d..r1 * d],
                &x[r0 * d..r1 * d],
                w,
                &mean[r0..r1],
                &rstd[r0..r1],
            );
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
    for (pw, pb) in partial {
        column_sums(&mut dw, &pw);
        column_sums(&mut db, &pb);
    }
    (dx, dw, db)
}

/// Mean softmax cross-entropy of `logits` (`[n, v]`) against `targets`.
pub fn cross_entropy_forward(logits: &[f32], targets: &[i32], v: usize) -> f32 {
    let sum: f64 = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(row, &y)| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let z: f32 = row.iter().map(|&x| (x - m).exp()).sum();
            (m + z.ln() - row[y as usize]) as f64
        })
        .sum();
    (sum / targets.len() as f64) as f32
}

/// Gradient of the mean cross-entropy times the upstream scalar `g`.
pub fn cross_entropy_backward(logits: &[f32], targets: &[i32], v: usize, g: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; logits.len()];
    let k = g / targets.len() as f32;
    out.par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter())
        .for_each(|((o, row), &y)| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let mut z = 0.0f32;
            for (oj, &x) in o.iter_mut().zip(row) {
                *oj = (x - m).exp();
                z += *oj;
            }
            let inv = k / z;
            o.iter_mut().for_each(|x| *x *= inv);
            o[y as usize] -= k;
        });
    out
}
