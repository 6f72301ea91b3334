//! Lossy coding of a residual `r = trained - base` (FORMAT.md 3.3): a
//! low-rank part (truncated randomized SVD, factors uniformly quantized) plus
//! a sparse remainder (dead-zone uniform quantizer: entries below the dead
//! zone are dropped, so the kept set is the top-|r| entries; kept levels and
//! the zero runs between them are entropy-coded as one symbol stream, which
//! codes positions as gaps at the entropy of the mask).
//!
//! Pass 1 ([`plan_tensor`]) learns each tensor's singular values and the
//! remainder histograms the [`crate::rate`] model needs; pass 2
//! ([`encode_tensor`]) codes at the step and rank rate control chose.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::SeedableRng;
use rand_distr_free::normal;

use resid_io::{Checkpoint, Dtype};

use super::lossless::code_lossless;
use super::{Coded, CodedBlock, CodedTensor, Pairing, TensorCoder};
use crate::decode::tensor::{level_value, subtract_product};
use crate::error::Result;
use crate::rans;
use crate::rate::{self, LogHist};

/// Default dead zone (in steps): entries with |x| < DEAD_ZONE * step are dropped.
pub const DEAD_ZONE: f64 = 0.62;
/// Reconstruction levels stored as centroids (FORMAT.md 3.3 allows up to 16).
pub const RECON_LEVELS: usize = 16;

mod rand_distr_free {
    use rand::Rng;
    /// A standard normal draw (Box-Muller), so no extra dependency is needed.
    pub fn normal<R: Rng>(rng: &mut R) -> f32 {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// What pass 1 learns about one lossy tensor.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub rows: usize,
    pub cols: usize,
    pub sumsq: f64,
    /// Singular values of the top `kmax` components.
    pub sigma: Vec<f64>,
    /// `A` (rows x kmax, row-major) and `B` (kmax x cols, row-major).
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub kmax: usize,
    /// (rank, histogram of the remainder after that rank).
    pub cands: Vec<(usize, LogHist)>,
}

/// Largest rank tried for a rows x cols matrix (0: no low-rank part).
pub fn max_rank(rows: usize, cols: usize) -> usize {
    let m = rows.min(cols);
    if m < 32 {
        0
    } else {
        (m / 4).min(64)
    }
}

fn mat_from(v: &[f32], rows: usize, cols: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(v, rows, cols)
}

/// Pass 1 for one tensor: residual statistics, randomized SVD (sequential and
/// seeded, so results do not depend on threads), remainder histograms.
pub fn plan_tensor(r: &[f32], rows: usize, cols: usize, seed: u64) -> TensorPlan {
    let sumsq: f64 = r.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let kmax = if sumsq > 0.0 { max_rank(rows, cols) } else { 0 };
    let mut h0 = LogHist::new();
    h0.add(r);
    let mut cands = vec![(0usize, h0)];
    if kmax == 0 {
        return TensorPlan {
            rows,
            cols,
            sumsq,
            sigma: vec![],
            a: vec![],
            b: vec![],
            kmax: 0,
            cands,
        };
    }
    let (sigma, a, b) = rsvd(r, rows, cols, kmax, seed);
    let mut rem = r.to_vec();
    let mut done = 0;
    let mut ks: Vec<usize> = vec![kmax / 8, kmax / 4, kmax / 2, kmax];
    ks.retain(|&k| k > 0);
    ks.dedup();
    for k in ks {
        subtract_product(&mut rem, &a, &b, rows, cols, kmax, done, k);
        done = k;
        let mut h = LogHist::new();
        h.add(&rem);
        cands.push((k, h));
    }
    TensorPlan {
        rows,
        cols,
        sumsq,
        sigma,
        a,
        b,
        kmax,
        cands,
    }
}

/// Truncated SVD by randomized subspace iteration: (sigma, A = U sqrt(S), B = sqrt(S) V^T).
fn rsvd(
    r: &[f32],
    rows: usize,
    cols: usize,
    k: usize,
    seed: u64,
) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    let l = (k + 8).min(rows.min(cols));
    let rm = mat_from(r, rows, cols);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let omega = Mat::<f32>::from_fn(cols, l, |_, _| normal(&mut rng));
    let mut y = Mat::<f32>::zeros(rows, l);
    matmul(
        y.as_mut(),
        Accum::Replace,
        rm,
        omega.as_ref(),
        1.0,
        Par::Seq,
    );
    let mut z = Mat::<f32>::zeros(cols, l);
    for _ in 0..2 {
        let q = y.qr().compute_thin_Q();
        matmul(
            z.as_mut(),
            Accum::Replace,
            rm.transpose(),
            q.as_ref(),
            1.0,
            Par::Seq,
        );
        let q2 = z.qr().compute_thin_Q();
        matmul(y.as_mut(), Accum::Replace, rm, q2.as_ref(), 1.0, Par::Seq);
    }
    let q = y.qr().compute_thin_Q();
    let mut bm = Mat::<f32>::zeros(l, cols);
    matmul(
        bm.as_mut(),
        Accum::Replace,
        q.transpose(),
        rm,
        1.0,
        Par::Seq,
    );
    let svd = match bm.thin_svd() {
        Ok(s) => s,
        Err(_) => return (vec![0.0; k], vec![0.0; rows * k], vec![0.0; k * cols]),
    };
    let mut u = Mat::<f32>::zeros(rows, l);
    matmul(
        u.as_mut(),
        Accum::Replace,
        q.as_ref(),
        svd.U(),
        1.0,
        Par::Seq,
    );
    let s = svd.S().column_vector();
    let v = svd.V();
    // The top k by value, not the first k: faer's order is not relied on
    // (with pulp's AVX-512 paths its SVD once came back unsorted).
    let mut order: Vec<usize> = (0..s.nrows()).collect();
    order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
    let sigma: Vec<f64> = order[..k].iter().map(|&j| s[j].max(0.0) as f64).collect();
    let mut a = vec![0f32; rows * k];
    let mut b = vec![0f32; k * cols];
    for (jj, &j) in order[..k].iter().enumerate() {
        let sq = (sigma[jj] as f32).sqrt();
        for i in 0..rows {
            a[i * k + jj] = u[(i, j)] * sq;
        }
        for c in 0..cols {
            b[jj * cols + c] = v[(c, j)] * sq;
        }
    }
    (sigma, a, b)
}

/// Signed level to symbol (zigzag; 255 = escape).
#[inline]
fn to_symbol(q: i32, esc: &mut Vec<i64>) -> u8 {
    let z = rans::to_zigzag(q as i64);
    if z < 255 {
        z as u8
    } else {
        esc.push(q as i64);
        255
    }
}

/// A lossy tensor ready to write, with what it reaches.
#[derive(Clone, Debug)]
pub struct LossyCoded {
    pub rank: usize,
    pub factor_step: f64,
    pub recon: Vec<f64>,
    pub factors: Vec<CodedBlock>,
    pub remainder: Vec<CodedBlock>,
    pub escapes: Option<CodedBlock>,
    /// Kept (non-zero) remainder entries.
    pub kept: u64,
    /// ||r_hat - r||^2 in f32 (before rounding to the dtype).
    pub dist: f64,
}

impl LossyCoded {
    pub fn coded_bytes(&self) -> u64 {
        self.factors
            .iter()
            .chain(&self.remainder)
            .chain(&self.escapes)
            .map(|b| b.bytes.len() as u64)
            .sum()
    }
}

fn code_stream(sym: &[u8], chunk: usize, out: &mut Vec<CodedBlock>) {
    for c in sym.chunks(chunk) {
        let mut bytes = Vec::new();
        let bits = rans::encode_block(c, &mut bytes);
        out.push(CodedBlock {
            bytes,
            n: c.len() as u64,
            bits,
        });
    }
}

/// Pass 2: codes the residual `r` at `step` and rank `rank`. Leaves the
/// rebuilt residual in `r` (so the caller can measure the weights' error).
pub fn encode_tensor(
    r: &mut [f32],
    p: &TensorPlan,
    rank: usize,
    step: f64,
    z: f64,
    chunk: usize,
) -> LossyCoded {
    let (rows, cols) = (p.rows, p.cols);
    let mut esc: Vec<i64> = Vec::new();
    let mut factors = Vec::new();
    let mut fstep = 0.0;
    let mut approx = vec![0f32; 0];
    if rank > 0 {
        fstep = rate::factor_step(p, rank, step);
        let mut qa = vec![0f32; rows * rank];
        let mut sa = vec![0u8; rows * rank];
        for i in 0..rows {
            for j in 0..rank {
                let q = (p.a[i * p.kmax + j] as f64 / fstep).round() as i32;
                sa[i * rank + j] = to_symbol(q, &mut esc);
                qa[i * rank + j] = (q as f64 * fstep) as f32;
            }
        }
        let mut qb = vec![0f32; rank * cols];
        let mut sb = vec![0u8; rank * cols];
        for j in 0..rank {
            for c in 0..cols {
                let q = (p.b[j * cols + c] as f64 / fstep).round() as i32;
                sb[j * cols + c] = to_symbol(q, &mut esc);
                qb[j * cols + c] = (q as f64 * fstep) as f32;
            }
        }
        code_stream(&sa, chunk, &mut factors);
        code_stream(&sb, chunk, &mut factors);
        approx = vec![0f32; rows * cols];
        subtract_product(&mut approx, &qa, &qb, rows, cols, rank, 0, rank);
        // approx holds -A B; the remainder is r + approx.
        for (x, &l) in r.iter_mut().zip(&approx) {
            *x += l;
        }
    }
    // Quantize the remainder (now in r).
    let inv = 1.0 / step;
    let mut levels = vec![0i32; r.len()];
    let mut csum = [0f64; RECON_LEVELS];
    let mut ccount = [0u64; RECON_LEVELS];
    let mut kept = 0u64;
    for (x, q) in r.iter().zip(levels.iter_mut()) {
        let a = (x.abs() as f64) * inv;
        if a >= z {
            let k = ((a - z).floor() as i64 + 1).min(i32::MAX as i64 / 2) as i32;
            *q = if *x < 0.0 { -k } else { k };
            kept += 1;
            if (k as usize) <= RECON_LEVELS {
                csum[k as usize - 1] += x.abs() as f64;
                ccount[k as usize - 1] += 1;
            }
        }
    }
    let recon: Vec<f64> = (0..RECON_LEVELS)
        .map(|i| {
            if ccount[i] > 0 {
                // Stored as f32 precision so encoder and decoder agree.
                (csum[i] / ccount[i] as f64) as f32 as f64
            } else {
                (z + i as f64 + 0.5) * step
            }
        })
        .collect();
    let mut remainder = Vec::new();
    if kept > 0 {
        let sym: Vec<u8> = levels.iter().map(|&q| to_symbol(q, &mut esc)).collect();
        code_stream(&sym, chunk, &mut remainder);
    }
    // Rebuild exactly as the decoder will, and measure.
    let mut dist = 0.0;
    for (i, x) in r.iter_mut().enumerate() {
        let v = level_value(levels[i], &recon, step, z);
        let l = if rank > 0 { -approx[i] } else { 0.0 };
        let rebuilt = l + v;
        let orig = *x - if rank > 0 { approx[i] } else { 0.0 };
        let d = (rebuilt - orig) as f64;
        dist += d * d;
        *x = rebuilt;
    }
    let escapes = (!esc.is_empty()).then(|| {
        let mut raw = Vec::new();
        for q in &esc {
            let mut z = rans::to_zigzag(*q);
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    raw.push(b);
                    break;
                }
                raw.push(b | 0x80);
            }
        }
        let mut bytes = vec![rans::KIND_ZSTD];
        bytes.extend(zstd::bulk::compress(&raw, 3).expect("zstd in memory"));
        CodedBlock {
            bytes,
            n: esc.len() as u64,
            bits: raw.len() as f64 * 8.0,
        }
    });
    LossyCoded {
        rank,
        factor_step: fstep,
        recon,
        factors,
        remainder,
        escapes,
        kept,
        dist,
    }
}

/// Truncated SVD factors of rank `k`: (A rows x k, B k x cols), for the
/// plain low-rank baseline.
pub fn plan_for_rank(
    r: &[f32],
    rows: usize,
    cols: usize,
    k: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let (_, a, b) = rsvd(r, rows, cols, k, seed);
    (a, b)
}

/// The residual of a lossy pairing in f32 (trained - base).
pub fn residual(base: &Checkpoint, trained: &Checkpoint, it: &Pairing) -> Vec<f32> {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi.expect("lossy pairings have a base")];
    let mut tv = Vec::new();
    let mut bv = Vec::new();
    float(&t.dtype_name).to_f32(trained.bytes(t), &mut tv);
    float(&b.dtype_name).to_f32(base.bytes(b), &mut bv);
    for (x, y) in tv.iter_mut().zip(&bv) {
        *x -= y;
    }
    tv
}

fn float(dtype: &str) -> Dtype {
    Dtype::parse(dtype).expect("lossy pairings are floats")
}

/// The (rows, cols) a tensor is coded as: 1-D tensors are one row.
pub fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (1, shape[0]),
        _ => (shape[0], shape[1..].iter().product()),
    }
}

/// Squared norm of a float tensor (0 for other dtypes).
fn sumsq(trained: &Checkpoint, t: &resid_io::TensorEntry) -> f64 {
    let Some(d) = Dtype::parse(&t.dtype_name) else {
        return 0.0;
    };
    let mut v = Vec::new();
    d.to_f32(trained.bytes(t), &mut v);
    v.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// Squared error of the rebuilt weights (rounded to the trained dtype) and
/// squared norm of the trained weights.
fn weight_error(base: &Checkpoint, trained: &Checkpoint, it: &Pairing, rhat: &[f32]) -> (f64, f64) {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi.expect("lossy pairings have a base")];
    let d = float(&t.dtype_name);
    let mut tv = Vec::new();
    let mut bv = Vec::new();
    d.to_f32(trained.bytes(t), &mut tv);
    float(&b.dtype_name).to_f32(base.bytes(b), &mut bv);
    for (x, r) in bv.iter_mut().zip(rhat) {
        *x += r;
    }
    let mut bytes = Vec::new();
    d.from_f32(&bv, &mut bytes);
    d.to_f32(&bytes, &mut bv);
    let mut e = 0.0;
    let mut s = 0.0;
    for (x, y) in bv.iter().zip(&tv) {
        let dd = (*x - *y) as f64;
        e += dd * dd;
        s += (*y as f64) * (*y as f64);
    }
    (e, s)
}

/// The coder of a lossy pack: every lossy pairing at the global `step` and its
/// chosen rank; the others (no float base of the same shape, NaN/Inf) lossless.
pub struct Lossy<'a> {
    pub plans: &'a [Option<TensorPlan>],
    /// Rank per pairing (indexed like `plans`).
    pub ranks: &'a [usize],
    pub step: f64,
    pub dead_zone: f64,
    pub chunk: usize,
    /// Index of the batch's first pairing in `plans`.
    pub offset: usize,
}

impl Lossy<'_> {
    fn code_one(
        &self,
        base: &Checkpoint,
        trained: &Checkpoint,
        k: usize,
        it: &Pairing,
    ) -> Result<CodedTensor> {
        let t = &trained.tensors()[it.ti];
        if !it.lossy {
            let coded = code_lossless(base, trained, std::slice::from_ref(it), self.chunk)
                .pop()
                .expect("one tensor in, one out");
            return Ok(CodedTensor {
                coded,
                err_sumsq: 0.0,
                weight_sumsq: sumsq(trained, t),
            });
        }
        let b = &base.tensors()[it.bi.expect("lossy pairings have a base")];
        if b.dtype_name == t.dtype_name && base.bytes(b) == trained.bytes(t) {
            return Ok(CodedTensor {
                coded: Coded::Same,
                err_sumsq: 0.0,
                weight_sumsq: sumsq(trained, t),
            });
        }
        let i = self.offset + k;
        let plan = self.plans[i].as_ref().expect("lossy pairings have plans");
        let mut r = residual(base, trained, it);
        let lc = encode_tensor(
            &mut r,
            plan,
            self.ranks[i],
            self.step,
            self.dead_zone,
            self.chunk,
        );
        let (e, ws) = weight_error(base, trained, it, &r);
        Ok(CodedTensor {
            coded: Coded::Lossy(Box::new(lc)),
            err_sumsq: e,
            weight_sumsq: ws,
        })
    }
}

impl TensorCoder for Lossy<'_> {
    fn code_batch(
        &self,
        base: &Checkpoint,
        trained: &Checkpoint,
        items: &[Pairing],
    ) -> Vec<Result<CodedTensor>> {
        use rayon::prelude::*;
        items
            .par_iter()
            .enumerate()
            .map(|(k, it)| self.code_one(base, trained, k, it))
            .collect()
    }
}
