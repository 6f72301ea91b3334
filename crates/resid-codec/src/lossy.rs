//! Lossy coding of a residual `r = trained - base`: a low-rank part (truncated
//! randomized SVD, factors uniformly quantized) plus a sparse remainder
//! (dead-zone uniform quantizer: entries below the dead zone are dropped, so
//! the kept set is the top-|r| entries; kept levels and the zero runs between
//! them are entropy-coded as one symbol stream, which codes positions as gaps
//! at the entropy of the mask).
//!
//! One global rule spreads the rate: every tensor uses the same quantizer
//! step, so the marginal distortion per bit, `ln2 * step^2 / 6`, is equal
//! across tensors; each tensor's rank is then the one minimising
//! `D + lambda * R` at that slope. Rate control searches the step.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::SeedableRng;
use rand_distr_free::normal;

use crate::lossless::CodedBlock;
use crate::rans;

/// Share of the factor quantisation noise in the quantizer noise budget.
const GAMMA: f64 = 0.25;
/// Default dead zone (in steps): entries with |x| < DEAD_ZONE * step are dropped.
pub const DEAD_ZONE: f64 = 0.62;
/// Reconstruction levels stored as centroids.
pub const RECON_LEVELS: usize = 16;
const HIST_BINS_PER_OCTAVE: f64 = 32.0;
const HIST_MIN_EXP: f64 = -48.0;
const HIST_BINS: usize = 80 * 32;

mod rand_distr_free {
    use rand::Rng;
    /// A standard normal draw (Box-Muller), so no extra dependency is needed.
    pub fn normal<R: Rng>(rng: &mut R) -> f32 {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Magnitude histogram on a log scale: counts and sums of squares per bin.
#[derive(Clone, Debug)]
pub struct LogHist {
    pub counts: Vec<u64>,
    pub sumsq: Vec<f64>,
}

impl LogHist {
    pub fn new() -> Self {
        LogHist {
            counts: vec![0; HIST_BINS],
            sumsq: vec![0.0; HIST_BINS],
        }
    }
    pub fn add(&mut self, xs: &[f32]) {
        for &x in xs {
            let a = x.abs() as f64;
            let b = if a > 0.0 {
                ((a.log2() - HIST_MIN_EXP) * HIST_BINS_PER_OCTAVE)
                    .clamp(0.0, (HIST_BINS - 1) as f64) as usize
            } else {
                0
            };
            self.counts[b] += 1;
            self.sumsq[b] += a * a;
        }
    }
    fn center(b: usize) -> f64 {
        ((b as f64 + 0.5) / HIST_BINS_PER_OCTAVE + HIST_MIN_EXP).exp2()
    }
}

impl Default for LogHist {
    fn default() -> Self {
        Self::new()
    }
}

/// Estimated (bits, distortion, kept entries) of quantizing a histogrammed
/// stream of `n` values with step `step` and dead zone `z`.
pub fn estimate(h: &LogHist, n: u64, step: f64, z: f64, chunk: u64) -> (f64, f64, f64) {
    let mut levels = vec![0f64; 128];
    let mut dist = 0.0;
    let mut kept = 0.0;
    let mut esc_bits = 0.0;
    for b in 0..HIST_BINS {
        let c = h.counts[b];
        if c == 0 {
            continue;
        }
        let m = LogHist::center(b);
        if m < z * step {
            levels[0] += c as f64;
            dist += h.sumsq[b];
        } else {
            let kf = (m / step - z).floor() + 1.0;
            let k = kf.clamp(1.0, 127.0) as usize;
            levels[k] += c as f64;
            if kf >= 127.0 {
                // Escaped: a zigzag varint, about 2 log2(level) bits after zstd.
                esc_bits += c as f64 * (2.0 * kf.log2() + 2.0);
            }
            kept += c as f64;
            dist += c as f64 * step * step / 12.0;
        }
    }
    if kept == 0.0 {
        // A remainder of zeros is not stored at all.
        return (0.0, dist, 0.0);
    }
    let nf = n as f64;
    let mut bits = kept + esc_bits; // signs and escapes
    let mut distinct = 0;
    for &c in &levels {
        if c > 0.0 {
            bits -= c * (c / nf).log2();
            distinct += 1;
        }
    }
    let chunks = n.div_ceil(chunk) as f64;
    bits += chunks * (3.0 + 3.0 * (2 * distinct).min(256) as f64) * 8.0;
    (bits, dist, kept)
}

/// Bits of uniformly quantizing Gaussian entries of standard deviation `s`
/// with step `d` (a smooth approximation of the discrete entropy).
fn gauss_bits(s: f64, d: f64) -> f64 {
    let r = s / d;
    0.5 * (1.0 + 2.0 * std::f64::consts::PI * std::f64::consts::E * r * r).log2()
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

/// Factor step for `rank` components at quantizer step `step`.
pub fn factor_step(p: &TensorPlan, rank: usize, step: f64) -> f64 {
    let ssum: f64 = p.sigma[..rank].iter().sum();
    let k = ssum * (1.0 / p.rows as f64 + 1.0 / p.cols as f64);
    if k <= 0.0 {
        return step;
    }
    step * (GAMMA / k).sqrt()
}

/// Estimated (bits, distortion, kept) of coding with candidate `ci` at `step`.
pub fn cost(p: &TensorPlan, ci: usize, step: f64, z: f64, chunk: u64) -> (f64, f64, f64) {
    let (k, h) = &p.cands[ci];
    let n = (p.rows * p.cols) as u64;
    let (mut bits, mut dist, kept) = estimate(h, n, step, z, chunk);
    if *k > 0 {
        let fs = factor_step(p, *k, step);
        for j in 0..*k {
            let s = p.sigma[j];
            bits += p.rows as f64 * gauss_bits((s / p.rows as f64).sqrt(), fs)
                + p.cols as f64 * gauss_bits((s / p.cols as f64).sqrt(), fs);
        }
        dist += GAMMA * step * step / 12.0 * (n as f64 - kept) / 4.0;
    }
    (bits, dist, kept)
}

/// The candidate (index into `cands`) chosen at `step` with its estimated
/// (bits, distortion, kept): the one minimising `D + lambda R`.
pub fn choose(p: &TensorPlan, step: f64, z: f64, chunk: u64) -> (usize, f64, f64, f64) {
    let lambda = std::f64::consts::LN_2 * step * step / 6.0;
    let mut best = (0usize, 0.0, f64::INFINITY, 0.0, f64::INFINITY);
    for ci in 0..p.cands.len() {
        let (bits, dist, kept) = cost(p, ci, step, z, chunk);
        let j = dist + lambda * bits;
        if j < best.4 {
            best = (ci, bits, dist, kept, j);
        }
    }
    (best.0, best.1, best.2, best.3)
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

/// `rem -= A[:, k0..k1] * B[k0..k1, :]` with a fixed summation order.
#[allow(clippy::too_many_arguments)]
pub fn subtract_product(
    rem: &mut [f32],
    a: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    lda: usize,
    k0: usize,
    k1: usize,
) {
    for i in 0..rows {
        let row = &mut rem[i * cols..(i + 1) * cols];
        for j in k0..k1 {
            let s = a[i * lda + j];
            if s == 0.0 {
                continue;
            }
            let br = &b[j * cols..(j + 1) * cols];
            for (o, &x) in row.iter_mut().zip(br) {
                *o -= s * x;
            }
        }
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
    let sigma: Vec<f64> = (0..k).map(|j| s[j].max(0.0) as f64).collect();
    let mut a = vec![0f32; rows * k];
    let mut b = vec![0f32; k * cols];
    for j in 0..k {
        let sq = (sigma[j] as f32).sqrt();
        for i in 0..rows {
            a[i * k + j] = u[(i, j)] * sq;
        }
        for c in 0..cols {
            b[j * cols + c] = v[(c, j)] * sq;
        }
    }
    (sigma, a, b)
}

/// Signed level to symbol (zigzag; 255 = escape).
#[inline]
fn to_symbol(q: i32, esc: &mut Vec<i64>) -> u8 {
    let z = ((q as i64) << 1) ^ ((q as i64) >> 63);
    if z < 255 {
        z as u8
    } else {
        esc.push(q as i64);
        255
    }
}

#[inline]
fn from_zigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
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
        fstep = factor_step(p, rank, step);
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
            let mut z = ((q << 1) ^ (q >> 63)) as u64;
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

#[inline]
fn level_value(q: i32, recon: &[f64], step: f64, z: f64) -> f32 {
    if q == 0 {
        return 0.0;
    }
    let k = q.unsigned_abs() as usize;
    let m = if k <= recon.len() {
        recon[k - 1]
    } else {
        (z + k as f64 - 0.5) * step
    };
    (if q < 0 { -m } else { m }) as f32
}

/// Decodes the escapes block into levels.
pub fn decode_escapes(block: &[u8], n: u64) -> Result<Vec<i64>, String> {
    if block.first() != Some(&rans::KIND_ZSTD) {
        return Err("escape block is not a zstd block".into());
    }
    let cap = (16 * n + 16) as usize;
    let raw = zstd::bulk::decompress(&block[1..], cap).map_err(|e| format!("escape block: {e}"))?;
    let mut out = Vec::with_capacity(n as usize);
    let mut z = 0u64;
    let mut shift = 0;
    for &b in &raw {
        if shift >= 64 {
            return Err("escape varint too long".into());
        }
        z |= ((b & 0x7f) as u64) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            out.push(from_zigzag(z));
            z = 0;
            shift = 0;
        }
    }
    if shift != 0 || out.len() as u64 != n {
        return Err(format!(
            "escape block holds {} values, header says {n}",
            out.len()
        ));
    }
    Ok(out)
}

/// Turns decoded symbols into levels, drawing escapes in order.
pub fn symbols_to_levels(
    sym: &[u8],
    esc: &[i64],
    next: &mut usize,
    out: &mut Vec<i32>,
) -> Result<(), String> {
    out.clear();
    out.reserve(sym.len());
    for &s in sym {
        if s == 255 {
            let Some(&q) = esc.get(*next) else {
                return Err("more escape symbols than escaped values".into());
            };
            *next += 1;
            if q.unsigned_abs() > (i32::MAX / 2) as u64 {
                return Err("escaped level out of range".into());
            }
            out.push(q as i32);
        } else {
            out.push(from_zigzag(s as u64) as i32);
        }
    }
    Ok(())
}

/// Rebuilds the residual from decoded levels.
#[allow(clippy::too_many_arguments)]
pub fn rebuild(
    rows: usize,
    cols: usize,
    rank: usize,
    fstep: f64,
    qa: &[i32],
    qb: &[i32],
    rem: Option<&[i32]>,
    recon: &[f64],
    step: f64,
    z: f64,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    if rank > 0 {
        let a: Vec<f32> = qa.iter().map(|&q| (q as f64 * fstep) as f32).collect();
        let b: Vec<f32> = qb.iter().map(|&q| (q as f64 * fstep) as f32).collect();
        subtract_product(&mut out, &a, &b, rows, cols, rank, 0, rank);
        for x in out.iter_mut() {
            *x = -*x;
        }
    }
    if let Some(rem) = rem {
        for (o, &q) in out.iter_mut().zip(rem) {
            *o += level_value(q, recon, step, z);
        }
    }
    out
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
