//! Token streams and seeded batch sampling.
//!
//! Batch `step` of a run depends only on `(seed, step)`: each step gets its own
//! ChaCha stream, so a resumed run sees exactly the batches the uninterrupted
//! run would have seen.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Byte-level tokens: byte `b` is token `b` (V = 256).
pub fn byte_tokens(bytes: &[u8]) -> Vec<u32> {
    bytes.iter().map(|&b| b as u32).collect()
}

/// One batch as host vectors: inputs and next-token targets, `[batch * t]`.
pub struct HostBatch {
    pub batch: usize,
    pub t: usize,
    pub x: Vec<i32>,
    pub y: Vec<i32>,
}

impl HostBatch {
    /// Moves the batch to `device` as `[batch, t]` int tensors.
    pub fn to_device<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let mk = |v: &Vec<i32>| {
            Tensor::from_data(TensorData::new(v.clone(), [self.batch, self.t]), device)
        };
        (mk(&self.x), mk(&self.y))
    }
}

/// Random windows of `t + 1` tokens from `tokens` for training step `step`.
pub fn sample_batch(tokens: &[u32], batch: usize, t: usize, seed: u64, step: u64) -> HostBatch {
    assert!(
        tokens.len() > t + 1,
        "corpus shorter than one context window"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    let (mut x, mut y) = (Vec::with_capacity(batch * t), Vec::with_capacity(batch * t));
    for _ in 0..batch {
        let s = rng.random_range(0..tokens.len() - t);
        x.extend(tokens[s..s + t].iter().map(|&v| v as i32));
        y.extend(tokens[s + 1..s + t + 1].iter().map(|&v| v as i32));
    }
    HostBatch { batch, t, x, y }
}

/// Consecutive non-overlapping windows over `tokens` (at most `max_tokens`
/// predicted tokens), grouped into batches of up to `batch` rows. Used for
/// held-out loss: deterministic, and every scored token is scored once.
pub fn eval_batches(tokens: &[u32], batch: usize, t: usize, max_tokens: usize) -> Vec<HostBatch> {
    let n_windows = ((tokens.len().saturating_sub(1)) / t).min(max_tokens.div_ceil(t).max(1));
    let mut out = Vec::new();
    let mut w = 0;
    while w < n_windows {
        let rows = batch.min(n_windows - w);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for r in 0..rows {
            let s = (w + r) * t;
            x.extend(tokens[s..s + t].iter().map(|&v| v as i32));
            y.extend(tokens[s + 1..s + t + 1].iter().map(|&v| v as i32));
        }
        out.push(HostBatch {
            batch: rows,
            t,
            x,
            y,
        });
        w += rows;
    }
    out
}
