//! A plain f32 forward pass of resid's GPT, framework-free, so the base can
//! be checked (step-0 held-out loss, residual-stream RMS per layer, where
//! the first-layer heads look) without burn, and so the burn model has an
//! independent reference.
//!
//! The model: `x = tok_emb[t] + pos_emb[p]`; per block
//! `x += o(attn(ln1(x)))` (causal multi-head, heads split `d_model` evenly,
//! scale `1/sqrt(head_dim)`, no q/k/v/o biases) and
//! `x += down(gelu(up(ln2(x))))` (exact erf GELU); then
//! `logits = ln_f(x) @ head^T + head.bias` (`head = tok_emb` when tied).
//! LayerNorm uses eps 1e-5 and the population variance, as torch does.

use std::collections::HashMap;

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::linalg::mm_bt_into;
use crate::config::GptConfig;

/// LayerNorm epsilon (torch and burn default).
pub const LN_EPS: f32 = 1e-5;

/// Borrowed view of a checkpoint's tensors by name.
pub struct Weights<'a> {
    pub cfg: &'a GptConfig,
    map: HashMap<&'a str, &'a [f32]>,
}

impl<'a> Weights<'a> {
    /// Looks tensors up by the names of [`GptConfig::param_specs`]; panics
    /// naming the first one missing or of the wrong size.
    pub fn new(cfg: &'a GptConfig, tensors: &'a [(String, Vec<usize>, Vec<f32>)]) -> Self {
        let map: HashMap<&str, &[f32]> = tensors
            .iter()
            .map(|(n, _, d)| (n.as_str(), d.as_slice()))
            .collect();
        for (name, shape) in cfg.param_specs() {
            let n: usize = shape.iter().product();
            let got = map.get(name.as_str()).map(|d| d.len());
            assert_eq!(got, Some(n), "tensor {name}: want {n} values");
        }
        Weights { cfg, map }
    }

    pub fn get(&self, name: &str) -> &'a [f32] {
        self.map[name]
    }

    fn head(&self) -> &'a [f32] {
        if self.cfg.tied_head {
            self.get("tok_emb.weight")
        } else {
            self.get("head.weight")
        }
    }
}

/// What to record besides the logits.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// Keep the first layer's attention probabilities, per head `[n, n]`.
    pub attn_layer0: bool,
    /// Keep the MLP input (`ln2(x)`, `[n, d]`) of this layer.
    pub ln2_layer: Option<usize>,
    /// Keep the final LayerNorm's input `[n, d]`.
    pub final_input: bool,
}

/// Output of one sequence.
pub struct SeqOut {
    /// `[n, V]` row-major.
    pub logits: Vec<f32>,
    /// RMS of the residual stream after the embedding and after each block.
    pub resid_rms: Vec<f64>,
    pub attn0: Vec<Vec<f32>>,
    pub ln2: Vec<f32>,
    pub final_input: Vec<f32>,
}

/// Row-wise LayerNorm of `x [n, d]`.
pub fn layer_norm(x: &[f32], d: usize, g: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + LN_EPS as f64).sqrt();
        for i in 0..d {
            o[i] = ((row[i] as f64 - mean) * inv) as f32 * g[i] + b[i];
        }
    }
    out
}

/// The error function, |error| < 1.2e-7 (Numerical Recipes' erfc).
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - r
    } else {
        r - 1.0
    }
}

/// Exact (erf) GELU.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

fn rms(x: &[f32]) -> f64 {
    super::linalg::rms(x)
}

/// Runs one sequence (`tokens.len() <= context`) through the model.
pub fn forward_seq(w: &Weights, tokens: &[u32], cap: &Capture) -> SeqOut {
    let cfg = w.cfg;
    let (n, d, f, v) = (tokens.len(), cfg.d_model, cfg.d_ff, cfg.vocab_size);
    assert!(
        n <= cfg.context,
        "sequence of {n} longer than context {}",
        cfg.context
    );
    let (nh, hd) = (cfg.n_head, cfg.d_model / cfg.n_head);
    let par = Par::Seq;
    let tok = w.get("tok_emb.weight");
    let pos = w.get("pos_emb.weight");
    let mut x = vec![0f32; n * d];
    for (p, &t) in tokens.iter().enumerate() {
        let (e, pe) = (&tok[t as usize * d..][..d], &pos[p * d..][..d]);
        for i in 0..d {
            x[p * d + i] = e[i] + pe[i];
        }
    }
    let mut out = SeqOut {
        logits: Vec::new(),
        resid_rms: vec![rms(&x)],
        attn0: Vec::new(),
        ln2: Vec::new(),
        final_input: Vec::new(),
    };
    let scale = 1.0 / (hd as f32).sqrt();
    let mut q = vec![0f32; n * d];
    let mut k = vec![0f32; n * d];
    let mut vv = vec![0f32; n * d];
    let mut z = vec![0f32; n * d];
    let mut y = vec![0f32; n * d];
    let mut s = vec![0f32; n * n];
    let mut hidden = vec![0f32; n * f];
    for l in 0..cfg.n_layer {
        let p = |r: &str| format!("blocks.{l}.{r}");
        let h = layer_norm(&x, d, w.get(&p("ln1.weight")), w.get(&p("ln1.bias")));
        mm_bt_into(&mut q, &h, n, d, w.get(&p("attn.q.weight")), d, par);
        mm_bt_into(&mut k, &h, n, d, w.get(&p("attn.k.weight")), d, par);
        mm_bt_into(&mut vv, &h, n, d, w.get(&p("attn.v.weight")), d, par);
        for hh in 0..nh {
            let qh = MatRef::from_row_major_slice_with_stride(&q[hh * hd..], n, hd, d);
            let kh = MatRef::from_row_major_slice_with_stride(&k[hh * hd..], n, hd, d);
            let vh = MatRef::from_row_major_slice_with_stride(&vv[hh * hd..], n, hd, d);
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_mut(&mut s, n, n),
                Accum::Replace,
                qh,
                kh.transpose(),
                scale,
                par,
            );
            for i in 0..n {
                let row = &mut s[i * n..(i + 1) * n];
                let m = row[..=i].iter().cloned().fold(f32::MIN, f32::max);
                let mut sum = 0f32;
                for r in row[..=i].iter_mut() {
                    *r = (*r - m).exp();
                    sum += *r;
                }
                for r in row[..=i].iter_mut() {
                    *r /= sum;
                }
                row[i + 1..].fill(0.0);
            }
            if l == 0 && cap.attn_layer0 {
                out.attn0.push(s.clone());
            }
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_with_stride_mut(&mut z[hh * hd..], n, hd, d),
                Accum::Replace,
                MatRef::from_row_major_slice(&s, n, n),
                vh,
                1.0f32,
                par,
            );
        }
        mm_bt_into(&mut y, &z, n, d, w.get(&p("attn.o.weight")), d, par);
        for (a, b) in x.iter_mut().zip(&y) {
            *a += b;
        }
        let h = layer_norm(&x, d, w.get(&p("ln2.weight")), w.get(&p("ln2.bias")));
        if cap.ln2_layer == Some(l) {
            out.ln2 = h.clone();
        }
        mm_bt_into(&mut hidden, &h, n, d, w.get(&p("mlp.up.weight")), f, par);
        let ub = w.get(&p("mlp.up.bias"));
        for row in hidden.chunks_exact_mut(f) {
            for (a, b) in row.iter_mut().zip(ub) {
                *a = gelu(*a + b);
            }
        }
        mm_bt_into(&mut y, &hidden, n, f, w.get(&p("mlp.down.weight")), d, par);
        let db = w.get(&p("mlp.down.bias"));
        for (row, yr) in x.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
            for i in 0..d {
                row[i] += yr[i] + db[i];
            }
        }
        out.resid_rms.push(rms(&x));
    }
    if cap.final_input {
        out.final_input = x.clone();
    }
    let h = layer_norm(&x, d, w.get("ln_f.weight"), w.get("ln_f.bias"));
    let mut logits = vec![0f32; n * v];
    mm_bt_into(&mut logits, &h, n, d, w.head(), v, par);
    let hb = w.get("head.bias");
    for row in logits.chunks_exact_mut(v) {
        for (a, b) in row.iter_mut().zip(hb) {
            *a += b;
        }
    }
    out.logits = logits;
    out
}

/// `-ln softmax(row)[target]`.
pub fn cross_entropy(row: &[f32], target: u32) -> f64 {
    let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let lse = m + row.iter().map(|&l| (l as f64 - m).exp()).sum::<f64>().ln();
    lse - row[target as usize] as f64
}

/// Held-out loss over windows and the residual RMS per layer.
#[derive(Clone, Debug)]
pub struct EvalOut {
    pub total_nats: f64,
    pub predictions: usize,
    /// Mean over windows; index 0 = after the embedding, `l + 1` = after block `l`.
    pub resid_rms: Vec<f64>,
}

impl EvalOut {
    pub fn per_token(&self) -> f64 {
        self.total_nats / self.predictions as f64
    }
}

/// Mean cross-entropy of predicting `w[1..]` from `w[..len - 1]` for each
/// window (each at most `context + 1` tokens), windows in parallel.
pub fn eval_windows(w: &Weights, windows: &[&[u32]]) -> EvalOut {
    let v = w.cfg.vocab_size;
    let parts: Vec<(f64, usize, Vec<f64>)> = windows
        .par_iter()
        .map(|win| {
            let (inp, tgt) = (&win[..win.len() - 1], &win[1..]);
            let o = forward_seq(w, inp, &Capture::default());
            let nats: f64 = tgt
                .iter()
                .enumerate()
                .map(|(i, &t)| cross_entropy(&o.logits[i * v..(i + 1) * v], t))
                .sum();
            (nats, tgt.len(), o.resid_rms)
        })
        .collect();
    let mut rms = vec![0f64; w.cfg.n_layer + 1];
    for (_, _, r) in &parts {
        for (a, b) in rms.iter_mut().zip(r) {
            *a += b / parts.len() as f64;
        }
    }
    EvalOut {
        total_nats: parts.iter().map(|p| p.0).sum(),
        predictions: parts.iter().map(|p| p.1).sum(),
        resid_rms: rms,
    }
}

/// `count` windows of `len` tokens spread evenly over `tokens` (deterministic).
pub fn even_windows(tokens: &[u32], len: usize, count: usize) -> Vec<&[u32]> {
    if tokens.len() < len || count == 0 {
        return Vec::new();
    }
    let span = tokens.len() - len;
    (0..count)
        .map(|i| {
            let s = if count == 1 {
                0
            } else {
                span * i / (count - 1)
            };
            &tokens[s..s + len]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_gelu_known_values() {
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 2e-7);
        assert!((erf(-1.5) + 0.966_105_146_475_310_7).abs() < 2e-7);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let y = layer_norm(&x, 4, &[1.0; 4], &[0.0; 4]);
        let mean: f32 = y.iter().sum::<f32>() / 4.0;
        let var: f32 = y.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4);
    }

    #[test]
    fn windows_cover_start_and_end() {
        let t: Vec<u32> = (0..100).collect();
        let w = even_windows(&t, 10, 3);
        assert_eq!((w[0][0], w[2][9], w[1].len()), (0, 99, 10));
    }
}
