//! Fused operations as single burn autodiff nodes.
//!
//! burn 0.21's autodiff runs attention, LayerNorm and cross-entropy as chains
//! of small generic ops (scale, mask, exp, sum, divide, transposes...), each a
//! pass over memory with its own backward node; on 2 CPU cores that chain,
//! not the matrix products, dominated a training step. [`Fused`] gives each
//! of the three one forward and one backward ([`crate::kernels`]) on backends
//! whose tensors live in host memory (`HOST = true`: burn's Flex), and falls
//! back to burn's own ops elsewhere (CUDA), so the model code is the same.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};

use crate::kernels::{self, AttnShape};

/// Backends the GPT runs on.
pub trait Fused: Backend {
    /// Whether tensors are host memory, so the CPU kernels apply.
    const HOST: bool = false;

    /// Causal multi-head attention on `[batch * t, d]` projections.
    fn fused_attention(
        q: Tensor<Self, 2>,
        k: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        batch: usize,
        n_head: usize,
    ) -> Tensor<Self, 2> {
        attention_reference(q, k, v, batch, n_head)
    }
    /// LayerNorm over the last dim with `[1, d]` scale and shift.
    fn fused_layer_norm(
        x: Tensor<Self, 2>,
        w: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        layer_norm_reference(x, w, b)
    }
    /// Mean cross-entropy of logits `[n, v]` against targets `[n]`.
    fn fused_cross_entropy(
        logits: Tensor<Self, 2>,
        targets: Tensor<Self, 1, Int>,
    ) -> Tensor<Self, 1> {
        cross_entropy_reference(logits, targets)
    }
}

/// burn's own causal attention (used off-host and by the tests as reference).
pub fn attention_reference<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    batch: usize,
    n_head: usize,
) -> Tensor<B, 2> {
    let [bt, d] = q.dims();
    let (t, hd) = (bt / batch, d / n_head);
    let heads = |x: Tensor<B, 2>| x.reshape([batch, t, n_head, hd]).swap_dims(1, 2);
    let opts = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    attention(heads(q), heads(k), heads(v), None, None, opts)
        .swap_dims(1, 2)
        .reshape([bt, d])
}

/// LayerNorm from elementary ops (eps 1e-5).
pub fn layer_norm_reference<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let mean = x.clone().mean_dim(1);
    let xc = x - mean;
    let var = xc.clone().powi_scalar(2).mean_dim(1);
    xc / (var + 1e-5).sqrt() * w + b
}

/// Cross-entropy from `log_softmax` and `gather`.
pub fn cross_entropy_reference<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [n] = targets.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([n, 1]))
        .mean()
        .neg()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

fn host_prim<B: Backend>(p: FloatTensor<B>) -> Vec<f32> {
    host(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(p)))
}

fn to_dev<B: Backend, const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn targets_host<B: Backend>(t: Tensor<B, 1, Int>) -> Vec<i32> {
    t.into_data()
        .convert::<i32>()
        .into_vec::<i32>()
        .expect("i32 data")
}

impl Fused for burn::backend::Flex {
    const HOST: bool = true;

    fn fused_attention(
        q: Tensor<Self, 2>,
        k: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        batch: usize,
        n_head: usize,
    ) -> Tensor<Self, 2> {
        let [bt, d] = q.dims();
        let dev = q.device();
        let s = AttnShape {
            batch,
            t: bt / batch,
            n_head,
            d,
        };
        let (y, _) = kernels::attention_forward(s, &host(q), &host(k), &host(v));
        to_dev(y, [bt, d], &dev)
    }

    fn fused_layer_norm(
        x: Tensor<Self, 2>,
        w: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        let [n, d] = x.dims();
        let dev = x.device();
        let (y, _, _) = kernels::layer_norm_forward(&host(x), &host(w), &host(b), d);
        to_dev(y, [n, d], &dev)
    }

    fn fused_cross_entropy(
        logits: Tensor<Self, 2>,
        targets: Tensor<Self, 1, Int>,
    ) -> Tensor<Self, 1> {
        let [_, v] = logits.dims();
        let dev = logits.device();
        let l = kernels::cross_entropy_forward(&host(logits), &targets_host(targets), v);
        to_dev(vec![l], [1], &dev)
    }
}

#[cfg(feature = "cuda")]
impl Fused for burn::backend::Cuda {}

impl<B: Fused, C: CheckpointStrategy> Fused for Autodiff<B, C> {
    fn fused_attention(
        q: Tensor<Self, 2>,
        k: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        batch: usize,
        n_head: usize,
    ) -> Tensor<Self, 2> {
        if !B::HOST {
            return attention_reference(q, k, v, batch, n_head);
        }
        #[derive(Debug)]
        struct Attn;
        impl<B: Backend> Backward<B, 3> for Attn {
            type State = (AttnShape, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, B::Device);
            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (s, q, k, v, lse, dev) = ops.state;
                let dy = host_prim::<B>(grads.consume::<B>(&ops.node));
                let (dq, dk, dv) = kernels::attention_backward(s, &q, &k, &v, &lse, &dy);
                let shape = [s.batch * s.t, s.d];
                for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, prim(to_dev::<B, 2>(g, shape, &dev)));
                    }
                }
            }
        }
        let [bt, d] = q.dims();
        let dev = q.device();
        let s = AttnShape {
            batch,
            t: bt / batch,
            n_head,
            d,
        };
        let (q, k, v) = (
            q.into_primitive().tensor(),
            k.into_primitive().tensor(),
            v.into_primitive().tensor(),
        );
        let (qh, kh, vh) = (
            host_prim::<B>(q.primitive.clone()),
            host_prim::<B>(k.primitive.clone()),
            host_prim::<B>(v.primitive.clone()),
        );
        let (y, lse) = kernels::attention_forward(s, &qh, &kh, &vh);
        let y = prim(to_dev::<B, 2>(y, [bt, d], &dev));
        let out = match Attn
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((s, qh, kh, vh, lse, dev.clone()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn fused_layer_norm(
        x: Tensor<Self, 2>,
        w: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        if !B::HOST {
            return layer_norm_reference(x, w, b);
        }
        #[derive(Debug)]
        struct Ln;
        impl<B: Backend> Backward<B, 3> for Ln {
            type State = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, usize, B::Device);
            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (x, w, mean, rstd, d, dev) = ops.state;
                let dy = host_prim::<B>(grads.consume::<B>(&ops.node));
                let (dx, dw, db) = kernels::layer_norm_backward(&x, &w, &mean, &rstd, &dy, d);
                let n = x.len() / d;
                let [px, pw, pb] = ops.parents;
                for (parent, g, shape) in [(px, dx, [n, d]), (pw, dw, [1, d]), (pb, db, [1, d])] {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, prim(to_dev::<B, 2>(g, shape, &dev)));
                    }
                }
            }
        }
        let [n, d] = x.dims();
        let dev = x.device();
        let (x, w, b) = (
            x.into_primitive().tensor(),
            w.into_primitive().tensor(),
            b.into_primitive().tensor(),
        );
        let (xh, wh, bh) = (
            host_prim::<B>(x.primitive.clone()),
            host_prim::<B>(w.primitive.clone()),
            host_prim::<B>(b.primitive.clone()),
        );
        let (y, mean, rstd) = kernels::layer_norm_forward(&xh, &wh, &bh, d);
        let y = prim(to_dev::<B, 2>(y, [n, d], &dev));
        let out = match Ln
            .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((xh, wh, mean, rstd, d, dev), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn fused_cross_entropy(
        logits: Tensor<Self, 2>,
        targets: Tensor<Self, 1, Int>,
    ) -> Tensor<Self, 1> {
        if !B::HOST {
            return cross_entropy_reference(logits, targets);
        }
        #[derive(Debug)]
        struct Ce;
        impl<B: Backend> Backward<B, 1> for Ce {
            type State = (Vec<f32>, Vec<i32>, [usize; 2], B::Device);
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (logits, targets, shape, dev) = ops.state;
                let g = host_prim::<B>(grads.consume::<B>(&ops.node))[0];
                let dl = kernels::cross_entropy_backward(&logits, &targets, shape[1], g);
                let [p] = ops.parents;
                if let Some(node) = p {
                    grads.register::<B>(node.id, prim(to_dev::<B, 2>(dl, shape, &dev)));
                }
            }
        }
        let shape = logits.dims();
        let dev = logits.device();
        let t = targets_host(targets);
        let logits = logits.into_primitive().tensor();
        let lh = host_prim::<B>(logits.primitive.clone());
        let l = kernels::cross_entropy_forward(&lh, &t, shape[1]);
        let y = prim(to_dev::<B, 1>(vec![l], [1], &dev));
        let out = match Ce
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((lh, t, shape, dev), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}
