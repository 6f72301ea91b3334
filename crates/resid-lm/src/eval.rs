//! Held-out loss: nats per token and per byte, for a model in memory or for
//! any set of torch-layout weights (the needle test and `resid repro` call
//! [`eval_weights`] many times, so it runs forward-only on the inner backend).

use std::collections::BTreeMap;

use crate::fused::Fused;
use burn::prelude::ToElement;
use resid_corpus::config::GptConfig;
use serde::{Deserialize, Serialize};

use crate::backend::{self, Infer};
use crate::data::eval_batches;
use crate::model::Gpt;
use crate::Result;

/// A held-out measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub nats_per_token: f64,
    pub nats_per_byte: f64,
    /// Tokens scored.
    pub tokens: usize,
}

/// Held-out loss of `model` on the first `max_tokens` predicted tokens of
/// `tokens`, scored in non-overlapping windows of the model's context.
/// `bytes_per_token` converts to nats per byte (1.0 for the byte tokenizer).
pub fn heldout_loss<B: Fused>(
    model: &Gpt<B>,
    tokens: &[u32],
    bytes_per_token: f64,
    batch: usize,
    max_tokens: usize,
    device: &B::Device,
) -> EvalReport {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for hb in eval_batches(tokens, batch, model.cfg.context, max_tokens) {
        let (x, y) = hb.to_device::<B>(device);
        let loss = model.loss(x, y).into_scalar().to_f64();
        let k = hb.batch * hb.t;
        sum += loss * k as f64;
        n += k;
    }
    let nats_per_token = sum / n.max(1) as f64;
    EvalReport {
        nats_per_token,
        nats_per_byte: nats_per_token / bytes_per_token,
        tokens: n,
    }
}

/// Held-out loss of arbitrary weights (torch layout, name -> values; shapes
/// from `cfg.param_specs()`), forward-only on the default device.
pub fn eval_weights(
    cfg: &GptConfig,
    weights: &BTreeMap<String, Vec<f32>>,
    tokens: &[u32],
    bytes_per_token: f64,
    max_tokens: usize,
) -> Result<EvalReport> {
    let device = backend::device();
    let shapes: BTreeMap<String, Vec<usize>> = cfg.param_specs().into_iter().collect();
    let model = Gpt::<Infer>::from_weights(
        cfg,
        |name| {
            let shape = shapes.get(name)?.clone();
            weights.get(name).map(|d| (shape, d.clone()))
        },
        &device,
    )?;
    Ok(heldout_loss(
        &model,
        tokens,
        bytes_per_token,
        16,
        max_tokens,
        &device,
    ))
}
