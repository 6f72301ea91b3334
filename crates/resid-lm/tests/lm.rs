//! The small GPT's correctness tests, on tiny shapes so they run in seconds.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};
use resid_corpus::config::{GptConfig, TokenizerKind};
use resid_lm::backend::{self, Infer, Train};
use resid_lm::data::byte_tokens;
use resid_lm::model::Gpt;
use resid_lm::{eval_weights, load_checkpoint, random_weights, train, TrainOptions};

fn tiny_cfg() -> GptConfig {
    GptConfig {
        preset: "test".into(),
        tokenizer: TokenizerKind::Byte,
        vocab_size: 256,
        n_layer: 2,
        n_head: 2,
        d_model: 32,
        d_ff: 64,
        context: 16,
        tied_head: false,
        batch_size: 8,
        steps: 50,
        lr: 3e-3,
        warmup_steps: 5,
        weight_decay: 0.1,
        grad_clip: 1.0,
    }
}

fn corpus_split() -> (Vec<u32>, Vec<u32>) {
    let c = resid_corpus::corpus::shakespeare();
    let (tr, ho) = resid_corpus::corpus::split(&c);
    (byte_tokens(&tr[..40_000]), byte_tokens(&ho[..4_096]))
}

fn as_map(w: &resid_lm::NamedTensors) -> BTreeMap<String, Vec<f32>> {
    w.iter().map(|(n, _, d)| (n.clone(), d.clone())).collect()
}

fn model_of<B: resid_lm::fused::Fused>(
    cfg: &GptConfig,
    w: &resid_lm::NamedTensors,
    dev: &B::Device,
) -> Gpt<B> {
    let map: BTreeMap<_, _> = w
        .iter()
        .map(|(n, s, d)| (n.clone(), (s.clone(), d.clone())))
        .collect();
    Gpt::<B>::from_weights(cfg, |n| map.get(n).cloned(), dev).unwrap()
}

#[test]
fn heldout_loss_at_init_is_ln_vocab() {
    let cfg = tiny_cfg();
    let (_, ho) = corpus_split();
    let w = random_weights(&cfg, 1);
    let r = eval_weights(&cfg, &as_map(&w), &ho, 1.0, 4096).unwrap();
    let ln_v = (cfg.vocab_size as f64).ln();
    assert!(
        (r.nats_per_token - ln_v).abs() < 0.1,
        "{} vs {ln_v}",
        r.nats_per_token
    );
    assert!(r.tokens >= 4000);
}

#[test]
fn changing_a_later_token_never_changes_an_earlier_logit() {
    let mut cfg = tiny_cfg();
    cfg.vocab_size = 256;
    let dev = backend::device();
    // Larger weights than the default init so any leak would be visible.
    let mut w = random_weights(&cfg, 7);
    for (_, s, d) in &mut w {
        if s.len() == 2 {
            d.iter_mut().for_each(|x| *x *= 20.0);
        }
    }
    let m = model_of::<Infer>(&cfg, &w, &dev);
    let t = cfg.context;
    let base: Vec<i32> = (0..t as i32).map(|i| (i * 37 + 11) % 256).collect();
    let logits = |toks: &Vec<i32>| -> Vec<f32> {
        let x = Tensor::<Infer, 2, Int>::from_data(TensorData::new(toks.clone(), [1, t]), &dev);
        m.forward(x).into_data().into_vec::<f32>().unwrap()
    };
    let a = logits(&base);
    for changed in [t - 1, t / 2, 1] {
        let mut other = base.clone();
        other[changed] = (other[changed] + 101) % 256;
        let b = logits(&other);
        let v = cfg.vocab_size;
        for pos in 0..t {
            let diff = (0..v)
                .map(|j| (a[pos * v + j] - b[pos * v + j]).abs())
                .fold(0.0, f32::max);
            if pos < changed {
                assert!(
                    diff == 0.0,
                    "position {pos} changed by {diff} when token {changed} changed"
                );
            } else if pos == changed {
                assert!(
                    diff > 1e-4,
                    "the changed position's own logits did not move"
                );
            }
        }
    }
}

#[test]
fn gradient_agrees_with_finite_differences() {
    let cfg = GptConfig {
        vocab_size: 11,
        n_layer: 1,
        n_head: 2,
        d_model: 8,
        d_ff: 12,
        context: 5,
        ..tiny_cfg()
    };
    let dev = backend::device();
    let mut w = random_weights(&cfg, 3);
    // Non-trivial LayerNorm and bias values and larger weights, so every path
    // carries gradient (but attention is not saturated, where f32 central
    // differences lose accuracy).
    let mut k = 0u32;
    for (_, _, d) in &mut w {
        for x in d.iter_mut() {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *x = *x * 4.0 + ((k >> 16) % 1000) as f32 / 5000.0 - 0.1;
        }
    }
    let x: Vec<i32> = vec![1, 4, 9, 2, 7, 3, 3, 10, 0, 5];
    let y: Vec<i32> = vec![4, 9, 2, 7, 6, 3, 10, 0, 5, 8];
    let toks = |v: &Vec<i32>| TensorData::new(v.clone(), [2, 5]);
    let loss_of = |w: &resid_lm::NamedTensors| -> f64 {
        let m = model_of::<Infer>(&cfg, w, &dev);
        m.loss(
            Tensor::from_data(toks(&x), &dev),
            Tensor::from_data(toks(&y), &dev),
        )
        .into_scalar() as f64
    };
    // Analytic gradient via autodiff; compare in torch layout through to_weights.
    let m = model_of::<Train>(&cfg, &w, &dev);
    let params: Vec<_> = m.params().into_iter().map(|p| p.require_grad()).collect();
    let m = Gpt::<Train>::from_params(cfg.clone(), params);
    let loss = m.loss(
        Tensor::from_data(toks(&x), &dev),
        Tensor::from_data(toks(&y), &dev),
    );
    let grads = loss.backward();
    let gmodel = Gpt::<Infer>::from_params(
        cfg.clone(),
        m.params().iter().map(|p| p.grad(&grads).unwrap()).collect(),
    );
    let g = gmodel.to_weights();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (ti, (name, _, gd)) in g.iter().enumerate() {
        // The entry with the largest gradient and two fixed others.
        let imax = (0..gd.len())
            .max_by(|&a, &b| gd[a].abs().total_cmp(&gd[b].abs()))
            .unwrap();
        for i in [imax, gd.len() / 3, gd.len() - 1] {
            let mut wp = w.clone();
            wp[ti].2[i] += eps;
            let mut wm = w.clone();
            wm[ti].2[i] -= eps;
            let fd = (loss_of(&wp) - loss_of(&wm)) / (2.0 * eps as f64);
            let an = gd[i] as f64;
            assert!(
                (fd - an).abs() <= 2e-3 + 0.05 * an.abs(),
                "{name}[{i}]: autodiff {an}, finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * cfg.param_specs().len());
}

#[test]
fn save_load_and_resume_reproduce_the_loss() {
    let cfg = GptConfig {
        steps: 6,
        ..tiny_cfg()
    };
    let (tr, ho) = corpus_split();
    let dir = tempfile::tempdir().unwrap();
    let opts = |out: &str| TrainOptions {
        eval_every: 0,
        eval_tokens: 1024,
        final_eval_tokens: 1024,
        ..TrainOptions::new(cfg.clone(), dir.path().join(out))
    };
    // Uninterrupted.
    let full = train(&opts("full"), &tr, &ho, 1.0, |_| {}).unwrap();
    // Interrupted after 3 steps, then resumed from the saved checkpoint.
    let half = TrainOptions {
        stop_after: Some(3),
        ..opts("half")
    };
    train(&half, &tr, &ho, 1.0, |_| {}).unwrap();
    let resumed = TrainOptions {
        resume: Some(dir.path().join("half")),
        ..opts("resumed")
    };
    let res = train(&resumed, &tr, &ho, 1.0, |_| {}).unwrap();
    assert_eq!(res.steps, 6);
    let (a, b) = (
        full.final_heldout.nats_per_token,
        res.final_heldout.nats_per_token,
    );
    assert!((a - b).abs() < 1e-5, "uninterrupted {a}, resumed {b}");
    // Loading the saved weights gives the loss recorded at save time.
    let ck = load_checkpoint(&dir.path().join("full")).unwrap();
    assert_eq!(ck.meta.step, 6);
    let again = eval_weights(&cfg, &as_map(&ck.weights), &ho, 1.0, 1024).unwrap();
    assert!(
        (again.nats_per_token - a).abs() < 1e-5,
        "{} vs {a}",
        again.nats_per_token
    );
    // The weights moved (the test would pass trivially otherwise).
    let init = load_checkpoint(&dir.path().join("full/step-0")).unwrap();
    assert_ne!(init.weights[2].2, ck.weights[2].2);
    // Names and shapes are the config's.
    let names: Vec<_> = ck
        .weights
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    assert_eq!(names, cfg.param_specs());
}

#[test]
fn loss_falls_over_50_steps() {
    let cfg = tiny_cfg();
    let (tr, ho) = corpus_split();
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        eval_every: 0,
        eval_tokens: 2048,
        final_eval_tokens: 2048,
        ..TrainOptions::new(cfg, dir.path())
    };
    let mut losses = Vec::new();
    let s = train(&opts, &tr, &ho, 1.0, |p| losses.push(p.loss)).unwrap();
    let before = s.initial_heldout.unwrap().nats_per_token;
    let after = s.final_heldout.nats_per_token;
    assert_eq!(losses.len(), 50);
    assert!(after < before - 1.0, "held-out {before} -> {after}");
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[45..].iter().sum::<f64>() / 5.0;
    assert!(last < first - 1.0, "train {first} -> {last}");
}

#[test]
fn fused_kernels_match_burns_own_ops() {
    // One block of the causal triangle, and several with a partial last one.
    for (b, t, h, d) in [(3, 7, 2, 8), (2, 70, 2, 8)] {
        fused_kernels_match_at(b, t, h, d);
    }
}

fn fused_kernels_match_at(b: usize, t: usize, h: usize, d: usize) {
    use resid_lm::fused::{
        attention_reference, cross_entropy_reference, layer_norm_reference, Fused,
    };
    let dev = backend::device();
    let r = |n: usize, s: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(s) >> 8) % 1000) as f32
                    / 250.0
                    - 2.0
            })
            .collect()
    };
    let mk = |v: Vec<f32>, s: [usize; 2]| {
        Tensor::<Train, 2>::from_data(TensorData::new(v, s), &dev).require_grad()
    };
    let (q, k, v) = (
        mk(r(b * t * d, 1), [b * t, d]),
        mk(r(b * t * d, 2), [b * t, d]),
        mk(r(b * t * d, 3), [b * t, d]),
    );
    let (w, bias) = (mk(r(d, 4), [1, d]), mk(r(d, 5), [1, d]));
    let targets = Tensor::<Train, 1, Int>::from_data(
        TensorData::new(
            (0..(b * t) as i32)
                .map(|i| i % d as i32)
                .collect::<Vec<_>>(),
            [b * t],
        ),
        &dev,
    );
    // Same scalar through the fused and the reference graph; compare value and every gradient.
    let run = |fused: bool| {
        let x = if fused {
            let a = Train::fused_attention(q.clone(), k.clone(), v.clone(), b, h);
            let n = Train::fused_layer_norm(a, w.clone(), bias.clone());
            Train::fused_cross_entropy(n, targets.clone())
        } else {
            let a = attention_reference(q.clone(), k.clone(), v.clone(), b, h);
            let n = layer_norm_reference(a, w.clone(), bias.clone());
            cross_entropy_reference(n, targets.clone())
        };
        let g = x.backward();
        let val: f32 = x.into_scalar();
        let grads: Vec<Vec<f32>> = [&q, &k, &v, &w, &bias]
            .iter()
            .map(|p| p.grad(&g).unwrap().into_data().into_vec::<f32>().unwrap())
            .collect();
        (val, grads)
    };
    let (fv, fg) = run(true);
    let (rv, rg) = run(false);
    assert!((fv - rv).abs() < 1e-5, "loss {fv} vs {rv}");
    for (i, (a, b)) in fg.iter().zip(&rg).enumerate() {
        let m = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let scale = b.iter().map(|x| x.abs()).fold(0.0, f32::max);
        assert!(
            scale > 1e-4 && m < 1e-4 * scale.max(1.0),
            "gradient {i}: max diff {m} (scale {scale})"
        );
    }
}
