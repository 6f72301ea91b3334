//! resid's CPU training path against independent references: finite
//! differences of its own loss, burn's autodiff on the same weights, and a
//! burn-trained run from the same seed.

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use resid_corpus::config::{GptConfig, TokenizerKind};
use resid_lm::backend::{self, Infer, Train};
use resid_lm::cpu::Native;
use resid_lm::data::byte_tokens;
use resid_lm::model::Gpt;
use resid_lm::{load_checkpoint, random_weights, train, EngineKind, NamedTensors, TrainOptions};

fn small(tied: bool) -> GptConfig {
    GptConfig {
        preset: "test".into(),
        tokenizer: TokenizerKind::Byte,
        vocab_size: 11,
        n_layer: 2,
        n_head: 2,
        d_model: 8,
        d_ff: 12,
        context: 5,
        tied_head: tied,
        batch_size: 3,
        steps: 20,
        lr: 3e-3,
        warmup_steps: 5,
        weight_decay: 0.1,
        grad_clip: 1.0,
    }
}

/// Random weights made larger and every bias and LayerNorm non-trivial, so
/// every path carries gradient.
fn lively_weights(cfg: &GptConfig) -> NamedTensors {
    let mut w = random_weights(cfg, 3);
    let mut k = 0u32;
    for (_, _, d) in &mut w {
        for x in d.iter_mut() {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *x = *x * 4.0 + ((k >> 16) % 1000) as f32 / 5000.0 - 0.1;
        }
    }
    w
}

fn tokens() -> (Vec<i32>, Vec<i32>) {
    let x = vec![1, 4, 9, 2, 7, 3, 3, 10, 0, 5, 6, 6, 1, 8, 2];
    let y = vec![4, 9, 2, 7, 6, 3, 10, 0, 5, 8, 6, 1, 8, 2, 9];
    (x, y)
}

/// burn's autodiff gradient of the same loss, torch layout, flat.
fn burn_gradient(cfg: &GptConfig, w: &NamedTensors, x: &[i32], y: &[i32]) -> (f64, Vec<f32>) {
    let dev = backend::device();
    let map: BTreeMap<_, _> = w
        .iter()
        .map(|(n, s, d)| (n.clone(), (s.clone(), d.clone())))
        .collect();
    let m = Gpt::<Train>::from_weights(cfg, |n| map.get(n).cloned(), &dev).unwrap();
    let params: Vec<_> = m.params().into_iter().map(|p| p.require_grad()).collect();
    let m = Gpt::<Train>::from_params(cfg.clone(), params);
    let b = x.len() / cfg.context;
    let toks = |v: &[i32]| Tensor::from_data(TensorData::new(v.to_vec(), [b, cfg.context]), &dev);
    let loss = m.loss(toks(x), toks(y));
    let grads = loss.backward();
    let g = Gpt::<Infer>::from_params(
        cfg.clone(),
        m.params().iter().map(|p| p.grad(&grads).unwrap()).collect(),
    )
    .to_weights();
    let l: f32 = loss.into_scalar();
    (l as f64, g.into_iter().flat_map(|(_, _, d)| d).collect())
}

fn check_gradient(tied: bool) {
    let cfg = small(tied);
    let w = lively_weights(&cfg);
    let (x, y) = tokens();
    let frozen = vec![false; w.len()];
    let mut nat = Native::new(&cfg, &w, &frozen).unwrap();
    let (loss, _) = nat.loss_and_grad(&x, &y);
    let g = nat.grad().to_vec();
    // burn's autodiff: the same loss and gradient.
    let (bl, bg) = burn_gradient(&cfg, &w, &x, &y);
    assert!(
        (loss - bl).abs() < 1e-5 * bl.abs(),
        "loss {loss} vs burn {bl}"
    );
    let scale = bg.iter().fold(0.0f32, |a, x| a.max(x.abs()));
    let diff = g
        .iter()
        .zip(&bg)
        .fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
    assert!(
        diff < 1e-4 * scale,
        "max gradient difference {diff} (scale {scale})"
    );
    // Central finite differences of the native loss itself, three entries per tensor.
    let eps = 1e-2f32;
    let mut off = 0;
    for (name, _, d) in &w {
        let gd = &g[off..off + d.len()];
        let imax = (0..d.len())
            .max_by(|&a, &b| gd[a].abs().total_cmp(&gd[b].abs()))
            .unwrap();
        for i in [imax, d.len() / 3, d.len() - 1] {
            let mut at = |delta: f32| {
                nat.w[off + i] += delta;
                let l = nat.loss(&x, &y);
                nat.w[off + i] -= delta;
                l
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            let an = gd[i] as f64;
            assert!(
                (fd - an).abs() <= 2e-3 + 0.05 * an.abs(),
                "{name}[{i}]: analytic {an}, finite difference {fd}"
            );
        }
        off += d.len();
    }
}

#[test]
fn native_gradient_matches_burn_and_finite_differences() {
    check_gradient(false);
}

#[test]
fn native_gradient_with_tied_head_matches_burn_and_finite_differences() {
    check_gradient(true);
}

fn corpus() -> (Vec<u32>, Vec<u32>) {
    let c = resid_corpus::corpus::shakespeare();
    let (tr, ho) = resid_corpus::corpus::split(&c);
    (byte_tokens(&tr[..40_000]), byte_tokens(&ho[..4_096]))
}

fn train_cfg() -> GptConfig {
    GptConfig {
        vocab_size: 256,
        d_model: 32,
        d_ff: 64,
        context: 16,
        batch_size: 8,
        ..small(false)
    }
}

#[test]
fn native_and_burn_trainers_agree_over_20_steps() {
    let cfg = train_cfg();
    let (tr, ho) = corpus();
    let dir = tempfile::tempdir().unwrap();
    let run = |engine: EngineKind| {
        let opts = TrainOptions {
            eval_every: 0,
            eval_tokens: 2048,
            final_eval_tokens: 2048,
            engine,
            ..TrainOptions::new(cfg.clone(), dir.path().join(format!("{engine:?}")))
        };
        let mut losses = Vec::new();
        let s = train(&opts, &tr, &ho, 1.0, |p| losses.push(p.loss)).unwrap();
        (losses, s.final_heldout.nats_per_token)
    };
    let (native, nh) = run(EngineKind::Native);
    let (burn, bh) = run(EngineKind::Burn);
    assert_eq!(native.len(), 20);
    for (i, (a, b)) in native.iter().zip(&burn).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * b.abs(),
            "step {i}: native {a}, burn {b}"
        );
    }
    assert!(
        (nh - bh).abs() <= 1e-3 * bh,
        "held-out: native {nh}, burn {bh}"
    );
    // They trained: the loss fell.
    assert!(
        native[19] < native[0] - 0.5,
        "{} -> {}",
        native[0],
        native[19]
    );
}

#[test]
fn frozen_parameters_stay_and_the_set_survives_resume() {
    let cfg = GptConfig {
        steps: 6,
        ..train_cfg()
    };
    let (tr, ho) = corpus();
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        eval_every: 0,
        eval_tokens: 1024,
        final_eval_tokens: 1024,
        frozen: vec!["blocks.0.".into(), "tok_emb.weight".into()],
        stop_after: Some(3),
        ..TrainOptions::new(cfg.clone(), dir.path().join("a"))
    };
    train(&opts, &tr, &ho, 1.0, |_| {}).unwrap();
    let resumed = TrainOptions {
        resume: Some(dir.path().join("a")),
        frozen: Vec::new(),
        stop_after: None,
        ..opts.clone()
    };
    train(
        &TrainOptions {
            out: dir.path().join("b"),
            ..resumed
        },
        &tr,
        &ho,
        1.0,
        |_| {},
    )
    .unwrap();
    let init = load_checkpoint(&dir.path().join("a/step-0")).unwrap();
    let end = load_checkpoint(&dir.path().join("b")).unwrap();
    assert_eq!(end.meta.step, 6);
    assert_eq!(end.meta.frozen, opts.frozen);
    for ((name, _, a), (_, _, b)) in init.weights.iter().zip(&end.weights) {
        let frozen = name.starts_with("blocks.0.") || name == "tok_emb.weight";
        // Every trainable tensor moves (LayerNorm and biases included: they get gradient).
        assert_eq!(
            a == b,
            frozen,
            "{name}: frozen {frozen}, unchanged {}",
            a == b
        );
    }
    // A name that matches nothing is refused.
    let bad = TrainOptions {
        frozen: vec!["blocks.9.".into()],
        ..TrainOptions::new(cfg, dir.path().join("c"))
    };
    let e = train(&bad, &tr, &ho, 1.0, |_| {}).unwrap_err();
    assert!(e.to_string().contains("blocks.9."), "{e}");
}
