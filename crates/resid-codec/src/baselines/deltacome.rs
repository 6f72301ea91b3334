//! Delta-CoMe (Ping et al., NeurIPS 2024), run without calibration data: the
//! residual's truncated SVD, each singular vector pair quantized at a width
//! that falls with its singular value: the paper's 8 bits for the first 2, 3
//! bits for the next 32, 2 bits for the rest, as many as the budget buys.
//!
//! The paper quantizes with GPTQ on calibration activations; without them
//! GPTQ's update has no Hessian to use, so each group is rounded to nearest
//! on a min/max grid (the data-free form). The factors are really packed
//! into bytes and decoded back from them, so the size is the bytes written.

use half::f16;

/// Entries sharing one (min, step) pair in fp16.
pub const GROUP: usize = 128;

/// Bits of a group's (min, step) header.
const GROUP_HEADER_BITS: u64 = 32;

/// Bits of the per-matrix header: the rank as a u32.
const MATRIX_HEADER_BITS: u64 = 32;

/// The paper's widths: (how many singular vectors, bits), in singular-value
/// order; those after the listed tiers get [`REST_BITS`].
const TIERS: [(usize, u32); 2] = [(2, 8), (32, 3)];
const REST_BITS: u32 = 2;

/// The width of singular vector `j` (0 = largest).
pub fn width_of(j: usize) -> u32 {
    let mut first = 0;
    for (n, b) in TIERS {
        if j < first + n {
            return b;
        }
        first += n;
    }
    REST_BITS
}

/// Bits one pair (a column of A, `rows` entries, and a row of B, `cols`
/// entries) costs at `bits` per entry, group headers included.
pub fn pair_bits(rows: usize, cols: usize, bits: u32) -> u64 {
    let groups = rows.div_ceil(GROUP) + cols.div_ceil(GROUP);
    bits as u64 * (rows + cols) as u64 + GROUP_HEADER_BITS * groups as u64
}

/// The widths of the pairs a `rows x cols` matrix stores within
/// `budget_bits`: tiers in order, stopping at the first pair that no longer
/// fits (or at full rank). Empty when not even the header and one pair fit.
pub fn plan(rows: usize, cols: usize, budget_bits: u64) -> Vec<u32> {
    let mut widths = Vec::new();
    // The header, and up to 7 bits of padding to the last byte.
    let Some(mut left) = budget_bits.checked_sub(MATRIX_HEADER_BITS + 7) else {
        return widths;
    };
    for j in 0..rows.min(cols) {
        let c = pair_bits(rows, cols, width_of(j));
        if c > left {
            break;
        }
        left -= c;
        widths.push(width_of(j));
    }
    widths
}

/// Appends bits to a byte buffer, least significant first.
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, v: u32, bits: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

/// Reads what [`BitWriter`] wrote.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl BitReader<'_> {
    fn get(&mut self, bits: u32) -> u32 {
        while self.n < bits {
            self.acc |= (self.bytes[self.pos] as u64) << self.n;
            self.pos += 1;
            self.n += 8;
        }
        let v = (self.acc & ((1u64 << bits) - 1)) as u32;
        self.acc >>= bits;
        self.n -= bits;
        v
    }
}

/// Rounds `x` to the nearest of `2^bits` levels on its groups' min/max
/// grid, writing (min, step) as fp16 and then the codes.
fn quantize(x: &[f32], bits: u32, w: &mut BitWriter) {
    let top = ((1u32 << bits) - 1) as f32;
    for g in x.chunks(GROUP) {
        let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // The grid the decoder sees: both numbers rounded to fp16 first.
        let lo16 = f16::from_f32(lo);
        let step16 = f16::from_f32((hi - lo16.to_f32()) / top);
        w.put(lo16.to_bits() as u32, 16);
        w.put(step16.to_bits() as u32, 16);
        let (l, s) = (lo16.to_f32(), step16.to_f32());
        for &v in g {
            let q = if s > 0.0 {
                ((v - l) / s).round().clamp(0.0, top) as u32
            } else {
                0
            };
            w.put(q, bits);
        }
    }
}

fn dequantize(n: usize, bits: u32, r: &mut BitReader, out: &mut [f32]) {
    for g in out[..n].chunks_mut(GROUP) {
        let l = f16::from_bits(r.get(16) as u16).to_f32();
        let s = f16::from_bits(r.get(16) as u16).to_f32();
        for v in g {
            *v = l + s * r.get(bits) as f32;
        }
    }
}

/// One matrix coded: its bytes and the widths they were written with.
pub struct Coded {
    pub bytes: Vec<u8>,
    pub widths: Vec<u32>,
}

/// Codes the `rows x cols` residual `r` within `budget_bits`.
pub fn encode(r: &[f32], rows: usize, cols: usize, budget_bits: u64, seed: u64) -> Coded {
    let widths = plan(rows, cols, budget_bits);
    let mut w = BitWriter {
        bytes: Vec::new(),
        acc: 0,
        n: 0,
    };
    w.put(widths.len() as u32, 32);
    if !widths.is_empty() {
        let k = widths.len();
        // A = U sqrt(S) (rows x k), B = sqrt(S) V^T (k x cols).
        let (a, b) = crate::encode::lossy::plan_for_rank(r, rows, cols, k, seed);
        let mut col = vec![0.0f32; rows];
        for (j, &bits) in widths.iter().enumerate() {
            for (i, c) in col.iter_mut().enumerate() {
                *c = a[i * k + j];
            }
            quantize(&col, bits, &mut w);
            quantize(&b[j * cols..(j + 1) * cols], bits, &mut w);
        }
    }
    Coded {
        bytes: w.finish(),
        widths,
    }
}

/// Rebuilds the residual from [`encode`]'s bytes alone: the rank is read
/// from them, the widths follow from the rank (tiers in order).
pub fn decode(bytes: &[u8], rows: usize, cols: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(rows * cols, 0.0);
    let mut r = BitReader {
        bytes,
        pos: 0,
        acc: 0,
        n: 0,
    };
    let k = r.get(32) as usize;
    if k == 0 {
        return;
    }
    let mut a = vec![0.0f32; rows * k];
    let mut b = vec![0.0f32; k * cols];
    let mut col = vec![0.0f32; rows];
    for j in 0..k {
        let bits = width_of(j);
        dequantize(rows, bits, &mut r, &mut col);
        for (i, c) in col.iter().enumerate() {
            a[i * k + j] = *c;
        }
        dequantize(cols, bits, &mut r, &mut b[j * cols..(j + 1) * cols]);
    }
    crate::decode::tensor::subtract_product(out, &a, &b, rows, cols, k, 0, k);
    for x in out.iter_mut() {
        *x = -*x;
    }
}

/// Delta-CoMe at `bpp` bits per entry of this matrix: rebuilt residual in
/// `out`, bits spent returned (the bytes written; 0 for a vector, which
/// like plain low-rank it does not code).
pub fn deltacome(
    r: &[f32],
    rows: usize,
    cols: usize,
    bpp: f64,
    seed: u64,
    out: &mut Vec<f32>,
) -> u64 {
    if rows < 2 || cols < 2 {
        out.clear();
        out.resize(r.len(), 0.0);
        return 0;
    }
    let budget = (bpp * (rows * cols) as f64).floor() as u64;
    let c = encode(r, rows, cols, budget, seed);
    if c.widths.is_empty() {
        out.clear();
        out.resize(r.len(), 0.0);
        return 0;
    }
    decode(&c.bytes, rows, cols, out);
    c.bytes.len() as u64 * 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    /// `rows x cols` residual `sum_j s_j u_j v_j^T` with Gaussian u, v.
    fn planted(rows: usize, cols: usize, s: &[f32], seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut g = || -> f32 { StandardNormal.sample(&mut rng) };
        let mut r = vec![0.0f32; rows * cols];
        for &sj in s {
            let u: Vec<f32> = (0..rows).map(|_| g()).collect();
            let v: Vec<f32> = (0..cols).map(|_| g()).collect();
            for i in 0..rows {
                for c in 0..cols {
                    r[i * cols + c] += sj * u[i] * v[c] * 1e-3;
                }
            }
        }
        r
    }

    fn rel(r: &[f32], h: &[f32]) -> f64 {
        let e: f64 = r.iter().zip(h).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let n: f64 = r.iter().map(|a| (*a as f64).powi(2)).sum();
        (e / n).sqrt()
    }

    #[test]
    fn widths_follow_the_papers_tiers() {
        let w: Vec<u32> = (0..40).map(width_of).collect();
        assert_eq!(&w[..2], &[8, 8]);
        assert!(w[2..34].iter().all(|&b| b == 3));
        assert!(w[34..].iter().all(|&b| b == 2));
    }

    #[test]
    fn a_planted_low_rank_residual_comes_back_nearly_exactly() {
        // Rank 2: both pairs land in the 8-bit tier at a generous budget.
        let (m, n) = (96, 80);
        let r = planted(m, n, &[3.0, 1.5], 7);
        let mut h = Vec::new();
        let bits = deltacome(&r, m, n, 8.0, 1, &mut h);
        assert!(bits > 0);
        let e = rel(&r, &h);
        // 8-bit min/max rounding of each factor: about 0.3% per factor.
        assert!(e < 0.01, "relative error {e}");
    }

    #[test]
    fn its_size_is_the_bytes_its_plan_says_and_within_the_budget() {
        let r = planted(130, 200, &[2.0, 1.0, 0.5, 0.25, 0.1], 3);
        for bpp in [0.05, 0.25, 0.5, 1.0, 2.0] {
            let budget = (bpp * (130 * 200) as f64).floor() as u64;
            let c = encode(&r, 130, 200, budget, 0);
            // Independent count: header, each pair's codes and group
            // headers (130 entries: 2 groups; 200: 2 groups), padded.
            let payload: u64 = c
                .widths
                .iter()
                .map(|&b| b as u64 * 330 + 4 * 32)
                .sum::<u64>()
                + 32;
            assert_eq!(c.bytes.len() as u64, payload.div_ceil(8), "bpp {bpp}");
            assert!(c.bytes.len() as u64 * 8 <= budget, "bpp {bpp}");
            // The widths are the tiers' first ones, as many as fit.
            let next = pair_bits(130, 200, width_of(c.widths.len()));
            assert!(payload + 7 + next > budget, "bpp {bpp}: one more pair fits");
            let mut h = Vec::new();
            decode(&c.bytes, 130, 200, &mut h);
            assert_eq!(h.len(), 130 * 200);
        }
    }

    #[test]
    fn more_bits_never_hurt_and_a_tiny_budget_stores_nothing() {
        let r = planted(64, 64, &[4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05], 5);
        let mut h = Vec::new();
        assert_eq!(deltacome(&r, 64, 64, 0.001, 0, &mut h), 0);
        assert!(h.iter().all(|&x| x == 0.0));
        let mut errs = Vec::new();
        for bpp in [0.5, 1.0, 2.0, 4.0] {
            deltacome(&r, 64, 64, bpp, 0, &mut h);
            errs.push(rel(&r, &h));
        }
        assert!(
            errs.windows(2).all(|w| w[1] <= w[0] * (1.0 + 1e-6)),
            "{errs:?}"
        );
        // 0.5 bits/entry buys one 8-bit pair (error about 0.49); 4 bits buy
        // all seven planted ones, five of them at 3 bits.
        assert!(errs[3] < 0.5 * errs[0], "{errs:?}");
    }
}
