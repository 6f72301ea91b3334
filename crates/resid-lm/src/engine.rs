//! What a training run steps: resid's own CPU path ([`crate::cpu`]) or burn
//! (the CUDA backend, and on the CPU the reference the tests compare with).
//! The loop in `train` sees only [`Engine`].

use burn::prelude::ToElement;
use burn::tensor::{Tensor, TensorData};
use resid_corpus::config::GptConfig;

use crate::backend::{self, Infer, Train};
use crate::cpu::Native;
use crate::data::{eval_batches, HostBatch};
use crate::eval::{heldout_loss, mean_loss, EvalReport};
use crate::model::{to_burn_layout, Gpt};
use crate::optim::AdamW;
use crate::{NamedTensors, Result};

/// Which implementation trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// resid's CPU forward/backward (the default without the `cuda` feature).
    #[cfg_attr(not(feature = "cuda"), default)]
    Native,
    /// burn on `backend::Infer` (the default with `cuda`).
    #[cfg_attr(feature = "cuda", default)]
    Burn,
}

impl EngineKind {
    /// A one-line description for logs.
    pub fn describe(self) -> &'static str {
        match self {
            EngineKind::Native => "resid native CPU (gemm)",
            EngineKind::Burn => backend::NAME,
        }
    }
}

/// A model with its optimizer, ready to step.
pub enum Engine {
    Native(Box<Native>),
    Burn(Box<BurnEngine>),
}

/// burn's model, AdamW and device.
pub struct BurnEngine {
    model: Gpt<Train>,
    opt: AdamW<Infer>,
    device: backend::Device,
}

impl Engine {
    /// Builds `kind` from torch-layout `weights`; `frozen[i]`: parameter `i`
    /// of `param_specs()` is not updated; `opt`: AdamW state after `t` steps.
    pub fn new(
        kind: EngineKind,
        cfg: &GptConfig,
        weights: &NamedTensors,
        frozen: &[bool],
        opt: Option<(&NamedTensors, usize)>,
    ) -> Result<Self> {
        Ok(match kind {
            EngineKind::Native => {
                let mut n = Native::new(cfg, weights, frozen)?;
                if let Some((st, t)) = opt {
                    n.load_optimizer_state(st, t)?;
                }
                Engine::Native(Box::new(n))
            }
            EngineKind::Burn => {
                let device = backend::device();
                let params = weights
                    .iter()
                    .map(|(name, shape, data)| {
                        let (d, s) = to_burn_layout(name, shape, data.clone());
                        Tensor::<Train, 2>::from_data(TensorData::new(d, s), &device).require_grad()
                    })
                    .collect();
                let model = Gpt::from_params(cfg.clone(), params);
                let shapes: Vec<[usize; 2]> = model.params().iter().map(|p| p.dims()).collect();
                let decay = cfg
                    .param_specs()
                    .iter()
                    .map(|(_, s)| s.len() == 2)
                    .collect();
                let mut o = AdamW::<Infer>::new(&shapes, decay, cfg.weight_decay, &device);
                o.frozen = frozen.to_vec();
                if let Some((st, t)) = opt {
                    o.load_named(&cfg.param_specs(), st, t, &device)?;
                }
                Engine::Burn(Box::new(BurnEngine {
                    model,
                    opt: o,
                    device,
                }))
            }
        })
    }

    /// One optimizer step on `batch`: `(loss, gradient norm before clipping)`.
    pub fn step(&mut self, batch: &HostBatch, lr: f64, clip: f64) -> (f64, f64) {
        match self {
            Engine::Native(n) => n.step(&batch.x, &batch.y, lr, clip),
            Engine::Burn(b) => {
                let (x, y) = batch.to_device::<Train>(&b.device);
                let loss = b.model.loss(x, y);
                let grads = loss.backward();
                let loss_v = loss.into_scalar().to_f64();
                let (params, gnorm) = b.opt.step(b.model.params(), &grads, lr, clip);
                b.model = Gpt::from_params(b.model.cfg.clone(), params);
                (loss_v, gnorm)
            }
        }
    }

    /// Held-out loss on the first `max_tokens` predicted tokens of `tokens`.
    pub fn heldout(
        &mut self,
        tokens: &[u32],
        bytes_per_token: f64,
        max_tokens: usize,
    ) -> EvalReport {
        match self {
            Engine::Native(n) => native_heldout(n, tokens, bytes_per_token, max_tokens),
            Engine::Burn(b) => heldout_loss(
                &inference_view(&b.model),
                tokens,
                bytes_per_token,
                16,
                max_tokens,
                &b.device,
            ),
        }
    }

    /// The weights in torch layout, `param_specs()` order.
    pub fn weights(&self) -> NamedTensors {
        match self {
            Engine::Native(n) => n.weights(),
            Engine::Burn(b) => inference_view(&b.model).to_weights(),
        }
    }

    /// AdamW moments, `m.<name>` / `v.<name>`, torch layout and shapes.
    pub fn optimizer_state(&self) -> NamedTensors {
        match self {
            Engine::Native(n) => n.optimizer_state(),
            Engine::Burn(b) => b.opt.to_named(&b.model.cfg.param_specs()),
        }
    }
}

/// Held-out loss on the native path, in the windows `heldout_loss` uses.
pub fn native_heldout(
    n: &mut Native,
    tokens: &[u32],
    bytes_per_token: f64,
    max_tokens: usize,
) -> EvalReport {
    let windows = eval_batches(tokens, 16, n.lay.cfg.context, max_tokens);
    mean_loss(windows, bytes_per_token, |hb| n.loss(&hb.x, &hb.y))
}

/// The forward-only view of a training model (shares storage).
pub fn inference_view(model: &Gpt<Train>) -> Gpt<Infer> {
    Gpt::from_params(
        model.cfg.clone(),
        model.params().into_iter().map(|p| p.inner()).collect(),
    )
}

/// Training tokens per second of `kind` on `cfg`'s shape, measured on `steps`
/// steps of random weights and tokens after one untimed warm-up step (about
/// `steps + 1` training steps of work), for estimating how long a run takes.
pub fn measure_tokens_per_s(kind: EngineKind, cfg: &GptConfig, steps: usize) -> Result<f64> {
    let w = crate::init::random_weights(cfg, 0);
    let frozen = vec![false; w.len()];
    let mut e = Engine::new(kind, cfg, &w, &frozen, None)?;
    let n = cfg.batch_size * cfg.context;
    let v = cfg.vocab_size as u64;
    let batch = |s: u64| {
        let tok = |i: usize| ((i as u64 * 2_654_435_761 + s) % v) as i32;
        HostBatch {
            batch: cfg.batch_size,
            t: cfg.context,
            x: (0..n).map(tok).collect(),
            y: (1..=n).map(tok).collect(),
        }
    };
    e.step(&batch(0), 0.0, 1.0);
    let t0 = std::time::Instant::now();
    for s in 1..=steps.max(1) {
        e.step(&batch(s as u64), 0.0, 1.0);
    }
    Ok((steps.max(1) * n) as f64 / t0.elapsed().as_secs_f64().max(1e-9))
}
