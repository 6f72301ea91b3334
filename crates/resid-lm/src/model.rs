//! A pre-LayerNorm GPT, written out like nanoGPT's `model.py`.
//!
//! Every parameter is a plain 2-D burn tensor (biases and LayerNorm scales are
//! `[1, n]` rows so they broadcast over `[tokens, n]`), which keeps the model,
//! the optimizer and the checkpoint code free of burn's module machinery.
//! Linear weights are stored the way burn multiplies them, `[in, out]`
//! (`y = x W`); `params()` lists them in `GptConfig::param_specs()` order and
//! `checkpoint`/`init` transpose to and from torch's `[out, in]`.

use burn::tensor::activation::gelu;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor, TensorData};
use resid_corpus::config::GptConfig;

use crate::fused::Fused;
use crate::{LmError, NamedTensors, Result};

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + 1e-5) * w + b`.
#[derive(Clone, Debug)]
pub struct LayerNorm<B: Fused> {
    pub weight: Tensor<B, 2>,
    pub bias: Tensor<B, 2>,
}

impl<B: Fused> LayerNorm<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        B::fused_layer_norm(x, self.weight.clone(), self.bias.clone())
    }
}

/// One transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Clone, Debug)]
pub struct Block<B: Fused> {
    pub ln1: LayerNorm<B>,
    /// Attention projections, `[d, d]` in burn layout, no bias.
    pub q: Tensor<B, 2>,
    pub k: Tensor<B, 2>,
    pub v: Tensor<B, 2>,
    pub o: Tensor<B, 2>,
    pub ln2: LayerNorm<B>,
    pub up_w: Tensor<B, 2>,
    pub up_b: Tensor<B, 2>,
    pub down_w: Tensor<B, 2>,
    pub down_b: Tensor<B, 2>,
}

impl<B: Fused> Block<B> {
    fn forward(&self, x: Tensor<B, 2>, batch: usize, n_head: usize) -> Tensor<B, 2> {
        // Causal self-attention with separate q, k, v, o projections.
        let h = self.ln1.forward(x.clone());
        let proj = |w: &Tensor<B, 2>| h.clone().matmul(w.clone());
        let y = B::fused_attention(proj(&self.q), proj(&self.k), proj(&self.v), batch, n_head);
        let x = x + y.matmul(self.o.clone());
        // MLP: up (bias), GELU, down (bias).
        let h = self.ln2.forward(x.clone());
        let h = gelu(h.matmul(self.up_w.clone()) + self.up_b.clone());
        x + h.matmul(self.down_w.clone()) + self.down_b.clone()
    }
}

/// The GPT. `head_w` is `None` when the head is tied to `tok_emb`.
#[derive(Clone, Debug)]
pub struct Gpt<B: Fused> {
    pub cfg: GptConfig,
    /// `[vocab, d]`.
    pub tok_emb: Tensor<B, 2>,
    /// `[context, d]`.
    pub pos_emb: Tensor<B, 2>,
    pub blocks: Vec<Block<B>>,
    pub ln_f: LayerNorm<B>,
    /// `[d, vocab]` in burn layout.
    pub head_w: Option<Tensor<B, 2>>,
    /// `[1, vocab]`.
    pub head_b: Tensor<B, 2>,
}

impl<B: Fused> Gpt<B> {
    /// Logits `[batch * t, vocab]` for token ids `[batch, t]`, t <= context.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = idx.dims();
        let d = self.cfg.d_model;
        let tok = embedding(self.tok_emb.clone(), idx); // [b, t, d]
        let pos = self.pos_emb.clone().narrow(0, 0, t).unsqueeze::<3>(); // [1, t, d]
        let mut x = (tok + pos).reshape([b * t, d]);
        for block in &self.blocks {
            x = block.forward(x, b, self.cfg.n_head);
        }
        let x = self.ln_f.forward(x);
        let w = match &self.head_w {
            Some(w) => w.clone(),
            None => self.tok_emb.clone().transpose(),
        };
        x.matmul(w) + self.head_b.clone()
    }

    /// Mean next-token cross-entropy (nats) of `targets` `[batch, t]`.
    pub fn loss(&self, idx: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [b, t] = targets.dims();
        B::fused_cross_entropy(self.forward(idx), targets.reshape([b * t]))
    }

    /// Every parameter, in `param_specs()` order (burn layout).
    pub fn params(&self) -> Vec<Tensor<B, 2>> {
        let mut out = vec![self.tok_emb.clone(), self.pos_emb.clone()];
        for bl in &self.blocks {
            out.extend([
                bl.ln1.weight.clone(),
                bl.ln1.bias.clone(),
                bl.q.clone(),
                bl.k.clone(),
                bl.v.clone(),
                bl.o.clone(),
                bl.ln2.weight.clone(),
                bl.ln2.bias.clone(),
                bl.up_w.clone(),
                bl.up_b.clone(),
                bl.down_w.clone(),
                bl.down_b.clone(),
            ]);
        }
        out.extend([self.ln_f.weight.clone(), self.ln_f.bias.clone()]);
        if let Some(w) = &self.head_w {
            out.push(w.clone());
        }
        out.push(self.head_b.clone());
        out
    }

    /// The inverse of [`Gpt::params`].
    pub fn from_params(cfg: GptConfig, params: Vec<Tensor<B, 2>>) -> Self {
        assert_eq!(params.len(), cfg.param_specs().len(), "parameter count");
        let mut it = params.into_iter();
        let mut next = || it.next().expect("counted above");
        let tok_emb = next();
        let pos_emb = next();
        let blocks = (0..cfg.n_layer)
            .map(|_| Block {
                ln1: LayerNorm {
                    weight: next(),
                    bias: next(),
                },
                q: next(),
                k: next(),
                v: next(),
                o: next(),
                ln2: LayerNorm {
                    weight: next(),
                    bias: next(),
                },
                up_w: next(),
                up_b: next(),
                down_w: next(),
                down_b: next(),
            })
            .collect();
        let ln_f = LayerNorm {
            weight: next(),
            bias: next(),
        };
        let head_w = (!cfg.tied_head).then(&mut next);
        let head_b = next();
        Gpt {
            cfg,
            tok_emb,
            pos_emb,
            blocks,
            ln_f,
            head_w,
            head_b,
        }
    }

    /// Builds the model from named torch-layout weights (any order; every
    /// name of `param_specs()` must be present with its exact shape).
    pub fn from_weights(
        cfg: &GptConfig,
        mut get: impl FnMut(&str) -> Option<(Vec<usize>, Vec<f32>)>,
        device: &B::Device,
    ) -> Result<Self> {
        let mut params = Vec::new();
        for (name, shape) in cfg.param_specs() {
            let (got_shape, data) =
                get(&name).ok_or_else(|| LmError::Shape(format!("missing tensor {name}")))?;
            if got_shape != shape || data.len() != shape.iter().product::<usize>() {
                return Err(LmError::Shape(format!(
                    "{name}: shape {got_shape:?}, expected {shape:?}"
                )));
            }
            let (data, burn_shape) = to_burn_layout(&name, &shape, data);
            params.push(Tensor::from_data(TensorData::new(data, burn_shape), device));
        }
        Ok(Self::from_params(cfg.clone(), params))
    }

    /// The weights in torch layout, named and ordered as `param_specs()`.
    pub fn to_weights(&self) -> NamedTensors {
        self.cfg
            .param_specs()
            .into_iter()
            .zip(self.params())
            .map(|((name, shape), t)| {
                let data = t
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32");
                let data = from_burn_layout(&name, &shape, data);
                (name, shape, data)
            })
            .collect()
    }
}

/// Whether a tensor is a Linear weight, stored transposed in burn.
fn is_linear(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && !name.starts_with("tok_emb") && !name.starts_with("pos_emb")
}

/// Torch layout -> burn's 2-D layout.
pub(crate) fn to_burn_layout(
    name: &str,
    shape: &[usize],
    data: Vec<f32>,
) -> (Vec<f32>, [usize; 2]) {
    match shape {
        [n] => (data, [1, *n]),
        [r, c] if is_linear(name, shape) => (transpose(&data, *r, *c), [*c, *r]),
        [r, c] => (data, [*r, *c]),
        _ => unreachable!("GPT parameters are 1-D or 2-D"),
    }
}

/// Burn's 2-D layout -> torch layout (`shape` is the torch shape).
pub(crate) fn from_burn_layout(name: &str, shape: &[usize], data: Vec<f32>) -> Vec<f32> {
    match shape {
        [r, c] if is_linear(name, shape) => transpose(&data, *c, *r),
        _ => data,
    }
}

/// Row-major `[r, c]` -> `[c, r]`.
fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = a[i * c + j];
        }
    }
    out
}
