//! The GPT's forward and backward on the CPU, for one share of a batch.
//!
//! Weights, gradients and AdamW moments are each one flat `f32` buffer in
//! torch layout, tensor after tensor in `GptConfig::param_specs()` order;
//! [`Layout`] says where each tensor lies. A [`Worker`] owns every
//! activation the backward needs for up to `seqs` sequences, allocated once.
//! The model is the one of `crate::model` (pre-LayerNorm blocks, separate
//! q/k/v/o without bias, GELU MLP with biases, learned positions, optional
//! tied head), written out as straight-line code.

use std::collections::HashMap;

use resid_corpus::config::GptConfig;

use super::ops::{self, HeadGrads, LinearGrads, LnOut};
use crate::kernels::{attention_slot_backward, attention_slot_forward, AttnShape};

/// One tensor's place in the flat buffers.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Index in `param_specs()` order.
    pub index: usize,
    pub off: usize,
    pub len: usize,
}

impl Span {
    pub fn of<'a>(&self, buf: &'a [f32]) -> &'a [f32] {
        &buf[self.off..self.off + self.len]
    }
}

/// A transformer block's tensors.
#[derive(Clone, Copy, Debug)]
pub struct BlockSpans {
    pub ln1_w: Span,
    pub ln1_b: Span,
    pub q: Span,
    pub k: Span,
    pub v: Span,
    pub o: Span,
    pub ln2_w: Span,
    pub ln2_b: Span,
    pub up_w: Span,
    pub up_b: Span,
    pub down_w: Span,
    pub down_b: Span,
}

/// Where every parameter lies, and which ones train.
#[derive(Clone, Debug)]
pub struct Layout {
    pub cfg: GptConfig,
    pub tok_emb: Span,
    pub pos_emb: Span,
    pub blocks: Vec<BlockSpans>,
    pub lnf_w: Span,
    pub lnf_b: Span,
    /// `None`: the head is `tok_emb`.
    pub head_w: Option<Span>,
    pub head_b: Span,
    /// All spans in `param_specs()` order.
    pub spans: Vec<Span>,
    /// Per parameter: whether it gets a gradient and an update.
    pub trainable: Vec<bool>,
    /// Total floats.
    pub len: usize,
}

impl Layout {
    /// The layout of `cfg` with every parameter trainable.
    pub fn new(cfg: &GptConfig) -> Self {
        let specs = cfg.param_specs();
        let mut spans = Vec::with_capacity(specs.len());
        let mut by_name = HashMap::new();
        let mut off = 0;
        for (index, (name, shape)) in specs.iter().enumerate() {
            let len = shape.iter().product();
            let s = Span { index, off, len };
            spans.push(s);
            by_name.insert(name.clone(), s);
            off += len;
        }
        let at = |n: &str| by_name[n];
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let p = |n: &str| at(&format!("blocks.{i}.{n}"));
                BlockSpans {
                    ln1_w: p("ln1.weight"),
                    ln1_b: p("ln1.bias"),
                    q: p("attn.q.weight"),
                    k: p("attn.k.weight"),
                    v: p("attn.v.weight"),
                    o: p("attn.o.weight"),
                    ln2_w: p("ln2.weight"),
                    ln2_b: p("ln2.bias"),
                    up_w: p("mlp.up.weight"),
                    up_b: p("mlp.up.bias"),
                    down_w: p("mlp.down.weight"),
                    down_b: p("mlp.down.bias"),
                }
            })
            .collect();
        Layout {
            cfg: cfg.clone(),
            tok_emb: at("tok_emb.weight"),
            pos_emb: at("pos_emb.weight"),
            blocks,
            lnf_w: at("ln_f.weight"),
            lnf_b: at("ln_f.bias"),
            head_w: (!cfg.tied_head).then(|| at("head.weight")),
            head_b: at("head.bias"),
            trainable: vec![true; spans.len()],
            spans,
            len: off,
        }
    }

    /// The gradient slot of `s`, or `None` when `s` is frozen.
    fn grad<'a>(&self, g: &'a mut [f32], s: Span) -> Option<&'a mut [f32]> {
        self.trainable[s.index].then(|| &mut g[s.off..s.off + s.len])
    }
}

/// Activations of one block, saved for the backward.
struct BlockActs {
    /// LayerNorm outputs and statistics.
    ln1: Vec<f32>,
    ln1_stats: (Vec<f32>, Vec<f32>),
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention's log-sum-exp per (sequence, head, position).
    lse: Vec<f32>,
    /// Attention output before the `o` projection.
    att: Vec<f32>,
    /// The residual stream after attention.
    mid: Vec<f32>,
    ln2: Vec<f32>,
    ln2_stats: (Vec<f32>, Vec<f32>),
    /// MLP pre-activation and GELU output.
    up: Vec<f32>,
    act: Vec<f32>,
}

/// Buffers for one share of a batch: forward activations, backward scratch
/// and this share's gradient sum.
pub struct Worker {
    seqs: usize,
    /// Residual stream entering each block, and leaving the last.
    xs: Vec<Vec<f32>>,
    blocks: Vec<BlockActs>,
    lnf: Vec<f32>,
    lnf_stats: (Vec<f32>, Vec<f32>),
    logits: Vec<f32>,
    // Backward scratch.
    dx: Vec<f32>,
    dh: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    datt: Vec<f32>,
    dup: Vec<f32>,
    p: Vec<f32>,
    dp: Vec<f32>,
    /// Gradient of this share's loss (already scaled to the whole batch).
    pub grad: Vec<f32>,
}

/// Rows of logits held at once by the fused head.
const HEAD_ROWS: usize = 256;

impl Worker {
    /// Buffers for up to `seqs` sequences of `cfg.context` tokens
    /// (`train`: also the gradient buffer).
    pub fn new(lay: &Layout, seqs: usize, train: bool) -> Self {
        let c = &lay.cfg;
        let rows = seqs * c.context;
        let (d, f, t) = (c.d_model, c.d_ff, c.context);
        let z = |n: usize| vec![0.0f32; n];
        let stats = || (z(rows), z(rows));
        let blocks = (0..c.n_layer)
            .map(|_| BlockActs {
                ln1: z(rows * d),
                ln1_stats: stats(),
                q: z(rows * d),
                k: z(rows * d),
                v: z(rows * d),
                lse: z(seqs * c.n_head * t),
                att: z(rows * d),
                mid: z(rows * d),
                ln2: z(rows * d),
                ln2_stats: stats(),
                up: z(rows * f),
                act: z(rows * f),
            })
            .collect();
        let bw = |n: usize| if train { z(n) } else { Vec::new() };
        Worker {
            seqs,
            xs: (0..=c.n_layer).map(|_| z(rows * d)).collect(),
            blocks,
            lnf: z(rows * d),
            lnf_stats: stats(),
            logits: z(HEAD_ROWS.min(rows) * c.vocab_size),
            dx: bw(rows * d),
            dh: bw(rows * d),
            dq: bw(rows * d),
            dk: bw(rows * d),
            dv: bw(rows * d),
            datt: bw(rows * d),
            dup: bw(rows * f),
            p: z(t * t),
            dp: bw(t * t),
            grad: bw(lay.len),
        }
    }

    /// Sequences this worker holds.
    pub fn capacity(&self) -> usize {
        self.seqs
    }

    /// Summed loss (nats) of `targets` given `tokens` (`n * context` each,
    /// `n <= seqs`); with `grad_scale`, also adds `grad_scale *` its gradient
    /// to `self.grad` for every trainable parameter.
    pub fn run(
        &mut self,
        lay: &Layout,
        w: &[f32],
        tokens: &[i32],
        targets: &[i32],
        grad_scale: Option<f32>,
    ) -> f64 {
        let c = &lay.cfg;
        let (t, d) = (c.context, c.d_model);
        let n = tokens.len() / t;
        assert!(n <= self.seqs && tokens.len() == n * t && targets.len() == tokens.len());
        let rows = n * t;
        self.forward(lay, w, tokens, n);
        let head_w = lay.head_w.unwrap_or(lay.tok_emb);
        let Some(scale) = grad_scale else {
            return ops::head_cross_entropy(
                &self.lnf[..rows * d],
                targets,
                head_w.of(w),
                lay.head_b.of(w),
                &mut self.logits,
                None,
            );
        };
        // The head's backward runs with its forward, a chunk of rows at a time.
        let (g, dh) = (&mut self.grad, &mut self.dh);
        let (dw, db) = split2(g, head_w, lay.head_b, lay);
        let loss = ops::head_cross_entropy(
            &self.lnf[..rows * d],
            targets,
            head_w.of(w),
            lay.head_b.of(w),
            &mut self.logits,
            Some(HeadGrads {
                scale,
                dh: &mut dh[..rows * d],
                dw,
                db,
            }),
        );
        self.backward(lay, w, tokens, n);
        loss
    }

    fn forward(&mut self, lay: &Layout, w: &[f32], tokens: &[i32], n: usize) {
        let c = &lay.cfg;
        let (t, d, f) = (c.context, c.d_model, c.d_ff);
        let rows = n * t;
        // Token plus position embedding.
        let (tok, pos) = (lay.tok_emb.of(w), lay.pos_emb.of(w));
        for (r, x) in self.xs[0].chunks_exact_mut(d).take(rows).enumerate() {
            let (id, p) = (tokens[r] as usize, r % t);
            let (te, pe) = (&tok[id * d..(id + 1) * d], &pos[p * d..(p + 1) * d]);
            x.iter_mut()
                .zip(te.iter().zip(pe))
                .for_each(|(x, (a, b))| *x = a + b);
        }
        let shape = AttnShape {
            batch: n,
            t,
            n_head: c.n_head,
            d,
        };
        for (l, (bs, a)) in lay.blocks.iter().zip(&mut self.blocks).enumerate() {
            let (before, after) = self.xs.split_at_mut(l + 1);
            let (x, x_next) = (&before[l][..rows * d], &mut after[0][..rows * d]);
            // Attention: x + o(attn(q, k, v of ln1(x))).
            ops::layer_norm(
                LnOut {
                    y: &mut a.ln1,
                    mean: &mut a.ln1_stats.0,
                    rstd: &mut a.ln1_stats.1,
                },
                x,
                bs.ln1_w.of(w),
                bs.ln1_b.of(w),
            );
            for (out, s) in [(&mut a.q, bs.q), (&mut a.k, bs.k), (&mut a.v, bs.v)] {
                ops::linear(out, &a.ln1, s.of(w), None, rows, d, d, false);
            }
            for slot in 0..n * c.n_head {
                // SAFETY: q, k, v and att are `[n * t, d]` buffers of `shape`.
                unsafe {
                    attention_slot_forward(
                        &shape,
                        slot,
                        (a.q.as_ptr(), a.k.as_ptr(), a.v.as_ptr()),
                        a.att.as_mut_ptr(),
                        &mut a.lse[slot * t..(slot + 1) * t],
                        &mut self.p,
                    )
                };
            }
            a.mid[..rows * d].copy_from_slice(x);
            ops::linear(&mut a.mid, &a.att, bs.o.of(w), None, rows, d, d, true);
            // MLP: mid + down(gelu(up(ln2(mid)))).
            ops::layer_norm(
                LnOut {
                    y: &mut a.ln2,
                    mean: &mut a.ln2_stats.0,
                    rstd: &mut a.ln2_stats.1,
                },
                &a.mid[..rows * d],
                bs.ln2_w.of(w),
                bs.ln2_b.of(w),
            );
            let (up, b_up) = (bs.up_w.of(w), Some(bs.up_b.of(w)));
            ops::linear(&mut a.up, &a.ln2, up, b_up, rows, d, f, false);
            ops::gelu(&mut a.act[..rows * f], &a.up[..rows * f]);
            x_next.copy_from_slice(&a.mid[..rows * d]);
            let (down, b_down) = (bs.down_w.of(w), Some(bs.down_b.of(w)));
            ops::linear(x_next, &a.act, down, b_down, rows, f, d, true);
        }
        ops::layer_norm(
            LnOut {
                y: &mut self.lnf,
                mean: &mut self.lnf_stats.0,
                rstd: &mut self.lnf_stats.1,
            },
            &self.xs[c.n_layer][..rows * d],
            lay.lnf_w.of(w),
            lay.lnf_b.of(w),
        );
    }

    /// Backward from `self.dh` (the gradient at the final LayerNorm's output).
    fn backward(&mut self, lay: &Layout, w: &[f32], tokens: &[i32], n: usize) {
        let c = &lay.cfg;
        let (t, d, f) = (c.context, c.d_model, c.d_ff);
        let rows = n * t;
        let g = &mut self.grad;
        // dx: gradient of the loss at the residual stream, walked down the blocks.
        let dx = &mut self.dx[..rows * d];
        dx.fill(0.0);
        let (dw, db) = split2(g, lay.lnf_w, lay.lnf_b, lay);
        ops::layer_norm_backward(
            dx,
            dw,
            db,
            &self.dh[..rows * d],
            &self.xs[c.n_layer][..rows * d],
            lay.lnf_w.of(w),
            &self.lnf_stats.0,
            &self.lnf_stats.1,
        );
        let shape = AttnShape {
            batch: n,
            t,
            n_head: c.n_head,
            d,
        };
        for (l, (bs, a)) in lay.blocks.iter().zip(&self.blocks).enumerate().rev() {
            // MLP: dx flows through unchanged and into down, gelu, up, ln2.
            let dup = &mut self.dup[..rows * f];
            let (dw, db) = split2(g, bs.down_w, bs.down_b, lay);
            let lg = LinearGrads {
                dx: Some((dup, false)),
                dw,
                db,
            };
            ops::linear_backward(lg, dx, &a.act, bs.down_w.of(w), rows, f, d);
            ops::gelu_backward(&mut self.dup[..rows * f], &a.up[..rows * f]);
            let dh = &mut self.dh[..rows * d];
            let (dw, db) = split2(g, bs.up_w, bs.up_b, lay);
            let lg = LinearGrads {
                dx: Some((dh, false)),
                dw,
                db,
            };
            ops::linear_backward(lg, &self.dup[..rows * f], &a.ln2, bs.up_w.of(w), rows, d, f);
            let (dw, db) = split2(g, bs.ln2_w, bs.ln2_b, lay);
            ops::layer_norm_backward(
                dx,
                dw,
                db,
                &self.dh[..rows * d],
                &a.mid[..rows * d],
                bs.ln2_w.of(w),
                &a.ln2_stats.0,
                &a.ln2_stats.1,
            );
            // Attention: dx flows through and into o, attention, q/k/v, ln1.
            let lg = LinearGrads {
                dx: Some((&mut self.datt[..rows * d], false)),
                dw: lay.grad(g, bs.o),
                db: None,
            };
            ops::linear_backward(lg, dx, &a.att, bs.o.of(w), rows, d, d);
            for slot in 0..n * c.n_head {
                // SAFETY: every buffer is `[n * t, d]` of `shape`.
                unsafe {
                    attention_slot_backward(
                        &shape,
                        slot,
                        (a.q.as_ptr(), a.k.as_ptr(), a.v.as_ptr()),
                        &a.lse[slot * t..(slot + 1) * t],
                        self.datt.as_ptr(),
                        (
                            self.dq.as_mut_ptr(),
                            self.dk.as_mut_ptr(),
                            self.dv.as_mut_ptr(),
                        ),
                        &mut self.p,
                        &mut self.dp,
                    )
                };
            }
            let dh = &mut self.dh[..rows * d];
            for (i, (dy, s)) in [(&self.dq, bs.q), (&self.dk, bs.k), (&self.dv, bs.v)]
                .into_iter()
                .enumerate()
            {
                let lg = LinearGrads {
                    dx: Some((&mut *dh, i > 0)),
                    dw: lay.grad(g, s),
                    db: None,
                };
                ops::linear_backward(lg, dy, &a.ln1, s.of(w), rows, d, d);
            }
            let x = &self.xs[l][..rows * d];
            let (dw, db) = split2(g, bs.ln1_w, bs.ln1_b, lay);
            ops::layer_norm_backward(
                dx,
                dw,
                db,
                &self.dh[..rows * d],
                x,
                bs.ln1_w.of(w),
                &a.ln1_stats.0,
                &a.ln1_stats.1,
            );
        }
        // Embeddings: scatter the residual gradient into the rows used.
        let (mut dtok, mut dpos) = split2(g, lay.tok_emb, lay.pos_emb, lay);
        for (r, dxr) in dx.chunks_exact(d).enumerate() {
            let (id, p) = (tokens[r] as usize, r % t);
            if let Some(dt) = dtok.as_deref_mut() {
                dt[id * d..(id + 1) * d]
                    .iter_mut()
                    .zip(dxr)
                    .for_each(|(a, b)| *a += b);
            }
            if let Some(dp) = dpos.as_deref_mut() {
                dp[p * d..(p + 1) * d]
                    .iter_mut()
                    .zip(dxr)
                    .for_each(|(a, b)| *a += b);
            }
        }
    }
}

/// The gradient slots of two distinct tensors at once (each `None` when frozen).
fn split2<'a>(
    g: &'a mut [f32],
    a: Span,
    b: Span,
    lay: &Layout,
) -> (Option<&'a mut [f32]>, Option<&'a mut [f32]>) {
    assert!(
        a.off + a.len <= b.off || b.off + b.len <= a.off,
        "overlapping spans"
    );
    let (lo, hi, swap) = if a.off < b.off {
        (a, b, false)
    } else {
        (b, a, true)
    };
    let (first, second) = g.split_at_mut(hi.off);
    let lo_s = lay.trainable[lo.index].then(|| &mut first[lo.off..lo.off + lo.len]);
    let hi_s = lay.trainable[hi.index].then(|| &mut second[..hi.len]);
    if swap {
        (hi_s, lo_s)
    } else {
        (lo_s, hi_s)
    }
}
