//! resid's own CPU trainer: a fixed-shape forward and backward over the
//! `gemm` crate with every buffer allocated once, the batch split across the
//! cores by sequence (each core runs the whole model on its share and keeps
//! its own gradient sum, so nothing waits on anything until the sum), and a
//! fused AdamW.
//!
//! Why not burn on the CPU: its autodiff graph is a chain of small ops with
//! an allocation and a pass over memory each, and during a step the two
//! cores idled much of the time (load average ~1.4 of 2); this path runs the
//! same model at PyTorch's speed or better (BENCHMARKS.md). burn stays for
//! CUDA (`backend`) and as the independent reference the tests compare with.

pub mod math;
pub mod model;
pub mod ops;

use rayon::prelude::*;
use resid_corpus::config::GptConfig;

use crate::{LmError, NamedTensors, Result};
pub use model::{Layout, Worker};

/// Weights, gradients and AdamW state of one model, with per-core workers.
pub struct Native {
    pub lay: Layout,
    /// Weights, flat in torch layout (see [`Layout`]).
    pub w: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// AdamW steps taken.
    pub t: usize,
    workers: Vec<Worker>,
    /// Per parameter: whether weight decay applies (2-D tensors).
    decay: Vec<bool>,
    pub weight_decay: f32,
}

/// Sequences `[lo, hi)` of `n` that worker `i` of `k` takes.
fn share(n: usize, k: usize, i: usize) -> (usize, usize) {
    (i * n / k, (i + 1) * n / k)
}

impl Native {
    /// A model of `cfg` with `weights` (torch layout, `param_specs()` order),
    /// buffers for batches of `cfg.batch_size`, and `frozen[i]` parameters
    /// left out of the gradient and the update.
    pub fn new(cfg: &GptConfig, weights: &NamedTensors, frozen: &[bool]) -> Result<Self> {
        Self::build(cfg, weights, frozen, cfg.batch_size, true)
    }

    /// A forward-only model (no gradient or optimizer buffers) for
    /// [`Native::loss`] in rounds of `batch` sequences.
    pub fn inference(cfg: &GptConfig, weights: &NamedTensors, batch: usize) -> Result<Self> {
        let frozen = vec![true; cfg.param_specs().len()];
        Self::build(cfg, weights, &frozen, batch, false)
    }

    fn build(
        cfg: &GptConfig,
        weights: &NamedTensors,
        frozen: &[bool],
        batch: usize,
        train: bool,
    ) -> Result<Self> {
        let mut lay = Layout::new(cfg);
        if weights.len() != lay.spans.len() || frozen.len() != lay.spans.len() {
            return Err(LmError::Shape(format!(
                "{} tensors given, the model has {}",
                weights.len(),
                lay.spans.len()
            )));
        }
        let mut w = Vec::with_capacity(lay.len);
        for ((name, shape), (n, s, d)) in cfg.param_specs().iter().zip(weights) {
            if name != n || shape != s || d.len() != shape.iter().product::<usize>() {
                return Err(LmError::Shape(format!(
                    "{n} {s:?} where {name} {shape:?} was expected"
                )));
            }
            w.extend_from_slice(d);
        }
        lay.trainable = frozen.iter().map(|f| !f).collect();
        let k = rayon::current_num_threads().clamp(1, batch.max(1));
        let per = batch.div_ceil(k).max(1);
        let workers = (0..k).map(|_| Worker::new(&lay, per, train)).collect();
        let decay = cfg
            .param_specs()
            .iter()
            .map(|(_, s)| s.len() == 2)
            .collect();
        let state = || {
            if train {
                vec![0.0; lay.len]
            } else {
                Vec::new()
            }
        };
        Ok(Native {
            m: state(),
            v: state(),
            w,
            t: 0,
            workers,
            decay,
            weight_decay: cfg.weight_decay as f32,
            lay,
        })
    }

    /// Mean loss over `x`/`y` (`n * context` tokens each) without gradients.
    pub fn loss(&mut self, x: &[i32], y: &[i32]) -> f64 {
        let t = self.lay.cfg.context;
        let n = x.len() / t;
        let k = self.workers.len();
        let per = self.workers[0].capacity();
        let (lay, w) = (&self.lay, &self.w);
        let mut sum = 0.0;
        // Rounds of at most `k * per` sequences, split across the workers.
        for r0 in (0..n).step_by(k * per) {
            let r1 = (r0 + k * per).min(n);
            let parts: Vec<f64> = self
                .workers
                .par_iter_mut()
                .enumerate()
                .map(|(i, wk)| {
                    let (a, b) = share(r1 - r0, k, i);
                    let (a, b) = ((r0 + a) * t, (r0 + b) * t);
                    if a == b {
                        0.0
                    } else {
                        wk.run(lay, w, &x[a..b], &y[a..b], None)
                    }
                })
                .collect();
            sum += parts.iter().sum::<f64>();
        }
        sum / (n * t).max(1) as f64
    }

    /// Mean loss of one batch (at most `batch_size` sequences) and its
    /// gradient (then in [`Native::grad`]); returns `(loss, global gradient norm)`.
    pub fn loss_and_grad(&mut self, x: &[i32], y: &[i32]) -> (f64, f64) {
        let t = self.lay.cfg.context;
        let n = x.len() / t;
        let k = self.workers.len();
        assert!(
            n <= k * self.workers[0].capacity(),
            "batch larger than planned"
        );
        let scale = 1.0 / (n * t) as f32;
        let (lay, w) = (&self.lay, &self.w);
        let parts: Vec<f64> = self
            .workers
            .par_iter_mut()
            .enumerate()
            .map(|(i, wk)| {
                wk.grad.fill(0.0);
                let (a, b) = share(n, k, i);
                if a == b {
                    0.0
                } else {
                    wk.run(lay, w, &x[a * t..b * t], &y[a * t..b * t], Some(scale))
                }
            })
            .collect();
        let loss = parts.iter().sum::<f64>() / (n * t) as f64;
        // Sum the workers' gradients into the first, with the squared norm.
        let (first, rest) = self.workers.split_at_mut(1);
        const CHUNK: usize = 1 << 15;
        let sq: Vec<f64> = first[0]
            .grad
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(c, g)| {
                for other in rest.iter() {
                    let o = &other.grad[c * CHUNK..c * CHUNK + g.len()];
                    math::vectorized(|| g.iter_mut().zip(o).for_each(|(a, b)| *a += b));
                }
                math::vectorized(|| g.iter().map(|&x| (x * x) as f64).sum::<f64>())
            })
            .collect();
        (loss, sq.iter().sum::<f64>().sqrt())
    }

    /// One training step: loss, gradient, global-norm clip to `clip` (0: none)
    /// and AdamW at `lr`. Returns `(loss, gradient norm before clipping)`.
    pub fn step(&mut self, x: &[i32], y: &[i32], lr: f64, clip: f64) -> (f64, f64) {
        let (loss, norm) = self.loss_and_grad(x, y);
        let clip_scale = if clip > 0.0 && norm > clip {
            (clip / (norm + 1e-6)) as f32
        } else {
            1.0
        };
        self.t += 1;
        let h = AdamHyper {
            lr: lr as f32,
            clip_scale,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            bc1: 1.0 - 0.9f64.powi(self.t as i32) as f32,
            bc2: 1.0 - 0.95f64.powi(self.t as i32) as f32,
        };
        // Tasks of at most CHUNK floats within one trainable tensor.
        const CHUNK: usize = 1 << 15;
        let mut tasks = Vec::new();
        for s in self
            .lay
            .spans
            .iter()
            .filter(|s| self.lay.trainable[s.index])
        {
            let wd = if self.decay[s.index] {
                self.weight_decay
            } else {
                0.0
            };
            for o in (0..s.len).step_by(CHUNK) {
                tasks.push((s.off + o, CHUNK.min(s.len - o), wd));
            }
        }
        let g = &self.workers[0].grad;
        let (wp, mp, vp) = (
            SendPtr(self.w.as_mut_ptr()),
            SendPtr(self.m.as_mut_ptr()),
            SendPtr(self.v.as_mut_ptr()),
        );
        tasks.par_iter().for_each(|&(off, len, wd)| {
            // SAFETY: tasks cover disjoint ranges of the three buffers.
            let (w, m, v) = unsafe { (wp.slice(off, len), mp.slice(off, len), vp.slice(off, len)) };
            adamw(w, m, v, &g[off..off + len], wd, &h);
        });
        (loss, norm)
    }

    /// The gradient of the last [`Native::loss_and_grad`] (flat, torch layout;
    /// zero for frozen parameters).
    pub fn grad(&self) -> &[f32] {
        &self.workers[0].grad
    }

    /// The weights, named and shaped as `param_specs()`.
    pub fn weights(&self) -> NamedTensors {
        self.named(&self.w, "")
    }

    /// AdamW moments as `m.<name>` / `v.<name>` in torch layout and shape.
    pub fn optimizer_state(&self) -> NamedTensors {
        let mut out = self.named(&self.m, "m.");
        out.extend(self.named(&self.v, "v."));
        out
    }

    /// Restores what [`Native::optimizer_state`] saved, after `t` steps.
    pub fn load_optimizer_state(&mut self, saved: &NamedTensors, t: usize) -> Result<()> {
        for ((name, shape), s) in self.lay.cfg.param_specs().iter().zip(&self.lay.spans) {
            for (prefix, buf) in [("m.", &mut self.m), ("v.", &mut self.v)] {
                let key = format!("{prefix}{name}");
                let (_, got, data) = saved
                    .iter()
                    .find(|(n, _, _)| *n == key)
                    .ok_or_else(|| LmError::Shape(format!("optimizer state lacks {key}")))?;
                if got != shape || data.len() != s.len {
                    return Err(LmError::Shape(format!(
                        "optimizer {key}: shape {got:?}, the model needs {shape:?}"
                    )));
                }
                buf[s.off..s.off + s.len].copy_from_slice(data);
            }
        }
        self.t = t;
        Ok(())
    }

    fn named(&self, buf: &[f32], prefix: &str) -> NamedTensors {
        self.lay
            .cfg
            .param_specs()
            .into_iter()
            .zip(&self.lay.spans)
            .map(|((n, shape), s)| (format!("{prefix}{n}"), shape, s.of(buf).to_vec()))
            .collect()
    }
}

/// AdamW's per-step constants.
struct AdamHyper {
    lr: f32,
    clip_scale: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// Bias corrections `1 - beta^t`.
    bc1: f32,
    bc2: f32,
}

/// The update of one range: clip-scaled gradient, moments, decoupled decay.
fn adamw(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], wd: f32, h: &AdamHyper) {
    let (step, decay) = (h.lr / h.bc1, 1.0 - h.lr * wd);
    math::vectorized(|| {
        for i in 0..w.len() {
            let g = g[i] * h.clip_scale;
            m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g;
            v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
            let denom = (v[i] / h.bc2).sqrt() + h.eps;
            w[i] = w[i] * decay - step * m[i] / denom;
        }
    });
}

/// A pointer shared by tasks that write disjoint ranges.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// # Safety
    /// No two live slices may overlap, and the range must be in bounds.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
}
