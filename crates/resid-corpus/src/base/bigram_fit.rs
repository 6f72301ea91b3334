//! The low-rank bigram fitted by cross-entropy: `logits(b | a) = bias_b +
//! e_a^T W e_b` with one token matrix `E [V, r]` on both sides (a tied head)
//! and a free core `W [r, r]`, trained by Adam on the full softmax over the
//! bigram counts, contexts drawn by their count (docs/BASE.md, "Tied heads").
//!
//! Why not only the SVD of the smoothed log-ratio: its Frobenius fit spends
//! rank on the log of unseen pairs. On the shipped corpus at V = 15000, rank
//! 219, it gives 2.160 nats/byte held-out (bigram count model 1.698); this
//! fit, started there, reaches 1.62 at rank 110 (the paper preset's paired rank) in 400 steps of 1024 contexts
//! (`cargo run --release -p resid-corpus --example bigram_targets`). Hand-written
//! Adam: a dozen lines over three flat buffers, where burn would bring the
//! ML framework into this framework-free crate.

use faer::{Accum, MatMut, MatRef, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::counts::PairCounts;

/// Knobs of the fit.
#[derive(Clone, Debug, PartialEq)]
pub struct CeOptions {
    pub steps: usize,
    /// Contexts per step, drawn with probability proportional to their count.
    pub batch: usize,
    /// Adam step of `E` and the bias; the core takes `0.3 * lr`.
    pub lr: f64,
    pub seed: u64,
}

impl Default for CeOptions {
    fn default() -> Self {
        CeOptions {
            steps: 400,
            batch: 1024,
            lr: 3e-3,
            seed: 0,
        }
    }
}

/// The fitted bilinear bigram: `E [V, r]` and `W [r, r]` row-major, and the bias.
#[derive(Clone, Debug)]
pub struct Bilinear {
    pub vocab: usize,
    pub rank: usize,
    pub e: Vec<f32>,
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Bilinear {
    /// Mean training cross-entropy (nats per token) over every bigram of `pc`.
    pub fn train_loss(&self, pc: &PairCounts) -> f64 {
        let (v, r) = (self.vocab, self.rank);
        let ctx: Vec<u32> = (0..v as u32)
            .filter(|&a| pc.row_total[a as usize] > 0)
            .collect();
        let ew = mm(&self.e, v, r, &self.w, r, false);
        let (mut nats, mut n) = (0f64, 0u64);
        for ch in ctx.chunks(1024) {
            let h = gather(&ew, ch, r);
            let z = mm(&h, ch.len(), r, &self.e, v, true);
            for (i, &a) in ch.iter().enumerate() {
                let zr: Vec<f64> = z[i * v..(i + 1) * v]
                    .iter()
                    .zip(&self.bias)
                    .map(|(x, b)| (x + b) as f64)
                    .collect();
                let m = zr.iter().cloned().fold(f64::MIN, f64::max);
                let lse = m + zr.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                let a = a as usize;
                for k in pc.row_start[a]..pc.row_start[a + 1] {
                    let c = pc.vals[k] as f64;
                    nats += c * (lse - zr[pc.cols[k] as usize]);
                }
                n += pc.row_total[a];
            }
        }
        nats / n.max(1) as f64
    }
}

/// Adam on the mean bigram cross-entropy, from `start`.
pub fn fit(pc: &PairCounts, start: Bilinear, opt: &CeOptions) -> Bilinear {
    let (v, r) = (start.vocab, start.rank);
    let Bilinear {
        mut e,
        mut w,
        mut bias,
        ..
    } = start;
    let ctx: Vec<u32> = (0..v as u32)
        .filter(|&a| pc.row_total[a as usize] > 0)
        .collect();
    let mut cum = Vec::with_capacity(ctx.len());
    let mut total = 0u64;
    for &a in &ctx {
        total += pc.row_total[a as usize];
        cum.push(total);
    }
    if total == 0 {
        return Bilinear {
            vocab: v,
            rank: r,
            e,
            w,
            bias,
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opt.seed);
    let mut ae = Adam::new(v * r);
    let mut aw = Adam::new(r * r);
    let mut ab = Adam::new(v);
    let bsz = opt.batch;
    let inv = 1.0 / bsz as f32;
    for step in 1..=opt.steps {
        let idx: Vec<u32> = (0..bsz)
            .map(|_| {
                let u = rng.random_range(0..total);
                ctx[cum.partition_point(|&c| c <= u)]
            })
            .collect();
        let ec = gather(&e, &idx, r);
        let h = mm(&ec, bsz, r, &w, r, false);
        // dz = (softmax - empirical next-token distribution) / batch.
        let mut dz = mm(&h, bsz, r, &e, v, true);
        for (i, &a) in idx.iter().enumerate() {
            let zr = &mut dz[i * v..(i + 1) * v];
            for (x, b) in zr.iter_mut().zip(&bias) {
                *x += b;
            }
            let m = zr.iter().cloned().fold(f32::MIN, f32::max);
            let mut s = 0f32;
            for x in zr.iter_mut() {
                *x = (*x - m).exp();
                s += *x;
            }
            for x in zr.iter_mut() {
                *x *= inv / s;
            }
            let a = a as usize;
            let n = pc.row_total[a] as f32;
            for k in pc.row_start[a]..pc.row_start[a + 1] {
                zr[pc.cols[k] as usize] -= inv * pc.vals[k] as f32 / n;
            }
        }
        let dh = mm(&dz, bsz, v, &e, r, false);
        let mut de = vec![0f32; v * r];
        matmul(
            &mut de,
            v,
            r,
            view(&dz, bsz, v).transpose(),
            view(&h, bsz, r),
        );
        let mut dw = vec![0f32; r * r];
        matmul(
            &mut dw,
            r,
            r,
            view(&ec, bsz, r).transpose(),
            view(&dh, bsz, r),
        );
        let dec = mm(&dh, bsz, r, &w, r, true);
        for (i, &a) in idx.iter().enumerate() {
            let row = &mut de[a as usize * r..(a as usize + 1) * r];
            for (x, g) in row.iter_mut().zip(&dec[i * r..(i + 1) * r]) {
                *x += g;
            }
        }
        let mut db = vec![0f32; v];
        for row in dz.chunks_exact(v) {
            for (x, g) in db.iter_mut().zip(row) {
                *x += g;
            }
        }
        let lr = opt.lr as f32;
        ae.step(&mut e, &de, lr, step);
        aw.step(&mut w, &dw, 0.3 * lr, step);
        ab.step(&mut bias, &db, lr, step);
    }
    Bilinear {
        vocab: v,
        rank: r,
        e,
        w,
        bias,
    }
}

/// Rows `idx` of row-major `x [_, r]`.
fn gather(x: &[f32], idx: &[u32], r: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * r);
    for &a in idx {
        out.extend_from_slice(&x[a as usize * r..(a as usize + 1) * r]);
    }
    out
}

fn view(x: &[f32], rows: usize, cols: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(x, rows, cols)
}

fn matmul(out: &mut [f32], m: usize, n: usize, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    faer::linalg::matmul::matmul(dst, Accum::Replace, a, b, 1.0f32, Par::rayon(0));
}

/// `a [m, k] @ b`, with `b` read as `[k, n]` or (`bt`) as `[n, k]` transposed.
fn mm(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, bt: bool) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let rhs = if bt {
        view(b, n, k).transpose()
    } else {
        view(b, k, n)
    };
    matmul(&mut out, m, n, view(a, m, k), rhs);
    out
}

/// Adam moments of one parameter tensor (beta 0.9 / 0.999, eps 1e-8).
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32, t: usize) {
        let (b1, b2) = (0.9f32, 0.999f32);
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An asymmetric source (`b` follows `a` as `a + 1 mod V`, mostly): a
    /// symmetric form cannot say which way the chain runs (it gives `a - 1`
    /// the same logit), so only a free core reaches the source's entropy.
    #[test]
    fn a_free_core_learns_the_direction_of_a_chain() {
        let v = 12;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut toks = vec![0u32];
        for _ in 0..20_000 {
            let a = *toks.last().unwrap();
            let b = if rng.random_range(0..10) < 9 {
                (a + 1) % v as u32
            } else {
                rng.random_range(0..v as u32)
            };
            toks.push(b);
        }
        let pc = PairCounts::count(&toks, v, 1);
        let r = v;
        let start = Bilinear {
            vocab: v,
            rank: r,
            e: (0..v * r)
                .map(|i| ((i * 7919) % 13) as f32 * 0.02 - 0.12)
                .collect(),
            w: (0..r * r)
                .map(|i| if i % (r + 1) == 0 { 1.0 } else { 0.0 })
                .collect(),
            bias: vec![0.0; v],
        };
        let before = start.train_loss(&pc);
        let opt = CeOptions {
            steps: 300,
            batch: 64,
            lr: 3e-2,
            seed: 1,
        };
        let after = fit(&pc, start, &opt);
        let got = after.train_loss(&pc);
        // The source's entropy: 0.9 + 0.1/12 on the successor, 0.1/12 elsewhere.
        let p_hit = 0.9 + 0.1 / v as f64;
        let p_miss = 0.1 / v as f64;
        let h = -(p_hit * p_hit.ln() + (v - 1) as f64 * p_miss * p_miss.ln());
        assert!(before > 2.0, "start {before}");
        assert!(got < h + 0.1, "fitted {got} vs source entropy {h}");
    }
}
