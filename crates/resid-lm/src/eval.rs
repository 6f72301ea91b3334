//! Held-out loss: nats per token and per byte, for a model in memory or for
//! any set of torch-layout weights (the needle test and `resid repro` call
//! [`eval_weights`] many times, so it runs forward-only on the inner backend).

use std::collections::BTreeMap;

use crate::fused::Fused;
use burn::prelude::ToElement;
use resid_corpus::config::GptConfig;
use serde::{Deserialize, Serialize};

use crate::backend::{self, Infer};
use crate::cpu::Native;
use crate::data::{eval_batches, HostBatch};
use crate::engine::{native_heldout, EngineKind};
use crate::model::Gpt;
use crate::{LmError, Result};

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
    let windows = eval_batches(tokens, batch, model.cfg.context, max_tokens);
    mean_loss(windows, bytes_per_token, |hb| {
        let (x, y) = hb.to_device::<B>(device);
        model.loss(x, y).into_scalar().to_f64()
    })
}

/// The token-weighted mean of `loss` (a batch's mean loss) over `batches`.
pub fn mean_loss(
    batches: Vec<HostBatch>,
    bytes_per_token: f64,
    mut loss: impl FnMut(&HostBatch) -> f64,
) -> EvalReport {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for hb in &batches {
        let k = hb.batch * hb.t;
        sum += loss(hb) * k as f64;
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
/// from `cfg.param_specs()`), forward-only: on resid's CPU path, or on burn's
/// device when built with `cuda`.
pub fn eval_weights(
    cfg: &GptConfig,
    weights: &BTreeMap<String, Vec<f32>>,
    tokens: &[u32],
    bytes_per_token: f64,
    max_tokens: usize,
) -> Result<EvalReport> {
    if EngineKind::default() == EngineKind::Native {
        let named = cfg
            .param_specs()
            .into_iter()
            .map(|(n, s)| match weights.get(&n) {
                Some(d) => Ok((n, s, d.clone())),
                None => Err(LmError::Shape(format!("missing tensor {n}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Native::inference(cfg, &named, 16)?;
        return Ok(native_heldout(
            &mut model,
            tokens,
            bytes_per_token,
            max_tokens,
        ));
    }
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
