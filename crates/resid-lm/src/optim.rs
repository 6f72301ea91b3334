//! AdamW with global-norm gradient clipping and a warmup + cosine schedule.
//!
//! Written here rather than taken from burn-optim because burn clips each
//! tensor's gradient by its own norm, while GPT training (and the PyTorch
//! reference) clips by the norm over all parameters; owning the state also
//! makes it a plain list of tensors that checkpoints save and resume restores.
//! Weight decay applies to 2-D weights only (matrices and embeddings), as in
//! nanoGPT; biases and LayerNorm parameters are not decayed.

use burn::prelude::ToElement;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::model::{from_burn_layout, to_burn_layout};
use crate::NamedTensors;

/// Learning rate at `step` (0-based): linear warmup to `lr` over `warmup`
/// steps, then cosine decay to 0 at `total`.
pub fn lr_at(step: usize, lr: f64, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= total {
        return 0.0;
    }
    let p = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// AdamW state over a model's parameter list (burn layout, same order).
pub struct AdamW<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Which parameters decay (torch-shape rank 2).
    pub decay: Vec<bool>,
    /// Which parameters stay as they are (no update, no part in the norm).
    pub frozen: Vec<bool>,
    /// Steps taken (bias correction).
    pub t: usize,
    m: Vec<Tensor<B, 2>>,
    v: Vec<Tensor<B, 2>>,
}

impl<B: Backend> AdamW<B> {
    /// Fresh state (zero moments) for parameters of the given burn shapes.
    pub fn new(
        shapes: &[[usize; 2]],
        decay: Vec<bool>,
        weight_decay: f64,
        device: &B::Device,
    ) -> Self {
        let zeros = || shapes.iter().map(|s| Tensor::zeros(*s, device)).collect();
        AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
            frozen: vec![false; decay.len()],
            decay,
            t: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    /// One update. `params` are the autodiff leaves the loss was computed
    /// from; returns the new leaves (tracking gradients) and the global
    /// gradient norm before clipping.
    pub fn step<AB>(
        &mut self,
        params: Vec<Tensor<AB, 2>>,
        grads: &AB::Gradients,
        lr: f64,
        clip: f64,
    ) -> (Vec<Tensor<AB, 2>>, f64)
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let gs: Vec<Tensor<B, 2>> = params
            .iter()
            .zip(&self.frozen)
            .map(|(p, &frozen)| match p.grad(grads) {
                Some(g) if !frozen => g,
                _ => p.clone().inner().zeros_like(),
            })
            .collect();
        // Global L2 norm with one device->host sync.
        let sq: Vec<Tensor<B, 1>> = gs.iter().map(|g| g.clone().powi_scalar(2).sum()).collect();
        let norm = Tensor::cat(sq, 0).sum().into_scalar().to_f64().sqrt();
        let scale = if clip > 0.0 && norm > clip {
            clip / (norm + 1e-6)
        } else {
            1.0
        };
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        let step_size = lr / bc1;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.into_iter().zip(gs).enumerate() {
            if self.frozen[i] {
                out.push(p);
                continue;
            }
            let g = if scale != 1.0 { g.mul_scalar(scale) } else { g };
            let m =
                self.m[i].clone().mul_scalar(self.beta1) + g.clone().mul_scalar(1.0 - self.beta1);
            let v = self.v[i].clone().mul_scalar(self.beta2)
                + g.powi_scalar(2).mul_scalar(1.0 - self.beta2);
            let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(self.eps);
            let mut w = p.inner();
            if self.decay[i] && self.weight_decay > 0.0 {
                w = w.mul_scalar(1.0 - lr * self.weight_decay);
            }
            let w = w - (m.clone() / denom).mul_scalar(step_size);
            self.m[i] = m;
            self.v[i] = v;
            out.push(Tensor::from_inner(w).require_grad());
        }
        (out, norm)
    }

    /// The moments as named host tensors `m.<name>` / `v.<name>` in torch
    /// layout and shape (`specs`: `param_specs()`), as the native path saves them.
    pub fn to_named(&self, specs: &[(String, Vec<usize>)]) -> NamedTensors {
        let mut out = Vec::new();
        for (prefix, list) in [("m", &self.m), ("v", &self.v)] {
            for ((n, shape), t) in specs.iter().zip(list) {
                let data = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32");
                let data = from_burn_layout(n, shape, data);
                out.push((format!("{prefix}.{n}"), shape.clone(), data));
            }
        }
        out
    }

    /// Restores moments saved by [`AdamW::to_named`]; `t` comes from the sidecar.
    pub fn load_named(
        &mut self,
        specs: &[(String, Vec<usize>)],
        saved: &NamedTensors,
        t: usize,
        device: &B::Device,
    ) -> crate::Result<()> {
        let find = |key: &str| saved.iter().find(|(n, _, _)| n == key);
        for (i, (n, shape)) in specs.iter().enumerate() {
            for (prefix, list) in [("m", &mut self.m), ("v", &mut self.v)] {
                let key = format!("{prefix}.{n}");
                let (_, got, data) = find(&key)
                    .ok_or_else(|| crate::LmError::Shape(format!("optimizer state lacks {key}")))?;
                if got != shape {
                    return Err(crate::LmError::Shape(format!(
                        "optimizer {key}: shape {got:?}, the model needs {shape:?}"
                    )));
                }
                let (d, s) = to_burn_layout(n, shape, data.clone());
                list[i] = Tensor::from_data(TensorData::new(d, s), device);
            }
        }
        self.t = t;
        Ok(())
    }
}
