//! Amplitude-only training: every matrix is held at its start W0 up to a
//! per-row and a per-column scale, W = diag(a) W0 diag(b), and only those
//! scales train (with the 1-D parameters, norms and biases, as they are).
//! It tests the study's claim that training amplitudes alone suffices.
//!
//! It runs on the native trainer's forward and backward: each step writes
//! W into the model, takes the full gradient G, and reduces it to the
//! scales' gradients, dL/da_i = sum_j G_ij W0_ij b_j and
//! dL/db_j = sum_i G_ij a_i W0_ij; AdamW (no decay: a scale decays to 0,
//! not to 1) with the trainer's clip and schedule updates them.

use resid_corpus::config::GptConfig;
use serde::{Deserialize, Serialize};

use crate::cpu::model::Span;
use crate::cpu::Native;
use crate::data::sample_batch;
use crate::optim::lr_at;
use crate::{NamedTensors, Result};

/// What an amplitude run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AmplitudeSummary {
    pub steps: usize,
    /// Trainable numbers: the scales plus the 1-D parameters.
    pub trainable: usize,
    pub params: usize,
    /// Mean training loss of each step.
    pub losses: Vec<f64>,
}

/// Where each parameter's trainable numbers sit in the flat vector.
enum Slot {
    /// A matrix `[rows, cols]`: row scales at `off`, column scales after.
    Matrix {
        off: usize,
        rows: usize,
        cols: usize,
    },
    /// A 1-D parameter trained as it is.
    Plain { off: usize, len: usize },
}

/// The trainable vector of `start` at the identity scales, and its slots.
fn slots_of(start: &NamedTensors) -> (Vec<Slot>, Vec<f32>) {
    let mut slots = Vec::with_capacity(start.len());
    let mut theta: Vec<f32> = Vec::new();
    for (_, shape, d) in start {
        let off = theta.len();
        if let [rows, cols] = shape[..] {
            theta.extend(std::iter::repeat_n(1.0, rows + cols));
            slots.push(Slot::Matrix { off, rows, cols });
        } else {
            theta.extend_from_slice(d);
            slots.push(Slot::Plain { off, len: d.len() });
        }
    }
    (slots, theta)
}

/// Writes W = diag(a) W0 diag(b) (and the 1-D parameters) into the flat
/// weights `w` of the native model.
fn write_weights(
    slots: &[Slot],
    theta: &[f32],
    start: &NamedTensors,
    spans: &[Span],
    w: &mut [f32],
) {
    for ((slot, s), (_, _, w0)) in slots.iter().zip(spans).zip(start) {
        let w = &mut w[s.off..s.off + s.len];
        match *slot {
            Slot::Matrix { off, rows, cols } => {
                let (a, b) = theta[off..off + rows + cols].split_at(rows);
                for i in 0..rows {
                    for j in 0..cols {
                        w[i * cols + j] = a[i] * w0[i * cols + j] * b[j];
                    }
                }
            }
            Slot::Plain { off, len } => w.copy_from_slice(&theta[off..off + len]),
        }
    }
}

/// The gradient of the trainable vector from the full gradient `full`.
fn scale_grads(
    slots: &[Slot],
    theta: &[f32],
    start: &NamedTensors,
    spans: &[Span],
    full: &[f32],
    g: &mut [f32],
) {
    for ((slot, s), (_, _, w0)) in slots.iter().zip(spans).zip(start) {
        let gw = &full[s.off..s.off + s.len];
        match *slot {
            Slot::Matrix { off, rows, cols } => {
                let (a, b) = theta[off..off + rows + cols].split_at(rows);
                let (ga, gb) = g[off..off + rows + cols].split_at_mut(rows);
                ga.fill(0.0);
                gb.fill(0.0);
                for i in 0..rows {
                    for j in 0..cols {
                        let gx = gw[i * cols + j] * w0[i * cols + j];
                        ga[i] += gx * b[j];
                        gb[j] += gx * a[i];
                    }
                }
            }
            Slot::Plain { off, len } => g[off..off + len].copy_from_slice(gw),
        }
    }
}

/// Trains the amplitudes of `start` for `cfg.steps` steps (peak `cfg.lr`,
/// `cfg.warmup_steps`, cosine, clip `cfg.grad_clip`) on batches drawn as
/// the trainer draws them; returns the weights W and the run's summary.
pub fn train_amplitudes(
    cfg: &GptConfig,
    start: &NamedTensors,
    train_tokens: &[u32],
    seed: u64,
) -> Result<(NamedTensors, AmplitudeSummary)> {
    let mut model = Native::new(cfg, start, &vec![false; start.len()])?;
    let spans = model.lay.spans.clone();
    let (slots, mut theta) = slots_of(start);
    let (mut m, mut v) = (vec![0f32; theta.len()], vec![0f32; theta.len()]);
    let mut g = vec![0f32; theta.len()];
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        write_weights(&slots, &theta, start, &spans, &mut model.w);
        let hb = sample_batch(train_tokens, cfg.batch_size, cfg.context, seed, step as u64);
        let (loss, _) = model.loss_and_grad(&hb.x, &hb.y);
        losses.push(loss);
        scale_grads(&slots, &theta, start, &spans, model.grad(), &mut g);
        let norm = g
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        let clip = if cfg.grad_clip > 0.0 && norm > cfg.grad_clip {
            (cfg.grad_clip / (norm + 1e-6)) as f32
        } else {
            1.0
        };
        let lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps) as f32;
        let t = (step + 1) as i32;
        let (bc1, bc2) = (1.0 - 0.9f32.powi(t), 1.0 - 0.95f32.powi(t));
        for (((p, m), v), &gi) in theta.iter_mut().zip(&mut m).zip(&mut v).zip(&g) {
            let gi = gi * clip;
            *m = 0.9 * *m + 0.1 * gi;
            *v = 0.95 * *v + 0.05 * gi * gi;
            *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + 1e-8);
        }
    }
    // The final weights.
    write_weights(&slots, &theta, start, &spans, &mut model.w);
    let out = model.weights();
    let summary = AmplitudeSummary {
        steps: cfg.steps,
        trainable: theta.len(),
        params: cfg.n_params(),
        losses,
    };
    Ok((out, summary))
}

/// Trainable numbers of an amplitude run of `cfg`: rows + cols per matrix,
/// every entry of the 1-D parameters.
pub fn trainable_count(cfg: &GptConfig) -> usize {
    cfg.param_specs()
        .iter()
        .map(|(_, s)| match s[..] {
            [r, c] => r + c,
            _ => s.iter().product(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GptConfig {
        let mut c = GptConfig::tiny();
        (
            c.n_layer,
            c.d_model,
            c.n_head,
            c.d_ff,
            c.context,
            c.batch_size,
        ) = (1, 16, 2, 32, 8, 2);
        c
    }

    #[test]
    fn scale_gradients_match_finite_differences_of_the_loss() {
        let cfg = small();
        let start = crate::random_weights(&cfg, 1);
        let mut model = Native::new(&cfg, &start, &vec![false; start.len()]).unwrap();
        let spans = model.lay.spans.clone();
        let (slots, mut theta) = slots_of(&start);
        // Scales away from 1 so both factors matter.
        for (i, t) in theta.iter_mut().enumerate().take(400) {
            *t *= 1.0 + 0.1 * ((i % 7) as f32 - 3.0) / 3.0;
        }
        let tokens: Vec<u32> = (0..200u32).map(|i| (i * 37 + i / 3) % 256).collect();
        let hb = sample_batch(&tokens, 2, cfg.context, 0, 0);
        write_weights(&slots, &theta, &start, &spans, &mut model.w);
        model.loss_and_grad(&hb.x, &hb.y);
        let mut g = vec![0f32; theta.len()];
        scale_grads(&slots, &theta, &start, &spans, model.grad(), &mut g);
        let mut loss_at = |th: &[f32]| {
            write_weights(&slots, th, &start, &spans, &mut model.w);
            model.loss(&hb.x, &hb.y)
        };
        // Row and column scales of the first matrices (tok_emb, pos_emb, q).
        let mut checked = 0;
        for k in [0usize, 5, 255, 256, 260, 300, 400, 410] {
            let h = 1e-2f32;
            let (mut up, mut dn) = (theta.clone(), theta.clone());
            up[k] += h;
            dn[k] -= h;
            let fd = (loss_at(&up) - loss_at(&dn)) / (2.0 * h as f64);
            let scale = g.iter().map(|x| x.abs()).fold(0f32, f32::max) as f64;
            assert!(
                (fd - g[k] as f64).abs() < 2e-3 * scale + 1e-5,
                "{k}: fd {fd} vs {}",
                g[k]
            );
            checked += 1;
        }
        assert_eq!(checked, 8);
    }

    #[test]
    fn only_the_scales_move_and_the_loss_falls() {
        let mut cfg = small();
        cfg.steps = 30;
        cfg.lr = 3e-2;
        cfg.warmup_steps = 2;
        let start = crate::random_weights(&cfg, 2);
        // A corpus a model learns fast: a repeated short phrase.
        let tokens: Vec<u32> = b"the cat sat on the mat. "
            .iter()
            .cycle()
            .take(4000)
            .map(|&b| b as u32)
            .collect();
        let (w, s) = train_amplitudes(&cfg, &start, &tokens, 0).unwrap();
        assert_eq!(s.trainable, trainable_count(&cfg));
        assert!(
            s.trainable * 5 < s.params,
            "{} of {}",
            s.trainable,
            s.params
        );
        let first: f64 = s.losses[..5].iter().sum::<f64>() / 5.0;
        let last: f64 = s.losses[25..].iter().sum::<f64>() / 5.0;
        assert!(last < first - 0.1, "{first} -> {last}");
        // Every matrix is its start times a rank-one ratio: r_ij r_kl = r_il r_kj.
        for ((n, shape, w0), (_, _, w1)) in start.iter().zip(&w) {
            if let [rows, cols] = shape[..] {
                let r = |i: usize, j: usize| (w1[i * cols + j] / w0[i * cols + j]) as f64;
                let (i, k, j, l) = (0, rows - 1, 1, cols - 1);
                let lhs = r(i, j) * r(k, l);
                let rhs = r(i, l) * r(k, j);
                assert!(
                    (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                    "{n}: {lhs} vs {rhs}"
                );
            }
        }
    }
}
