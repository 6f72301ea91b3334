//! Times training steps of a preset on the shipped corpus (no checkpoints).
//! `cargo run --release -p resid-lm --example step_speed -- tiny 30`

use std::time::Instant;

use resid_corpus::config::{GptConfig, TokenizerKind};
use resid_lm::backend::{self, Infer, Train};
use resid_lm::data::{byte_tokens, sample_batch};
use resid_lm::optim::AdamW;
use resid_lm::train::inference_view;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = GptConfig::preset(args.get(1).map_or("tiny", |s| s.as_str())).unwrap();
    let steps: usize = args.get(2).map_or(20, |s| s.parse().unwrap());
    if let Some(b) = args.get(3) {
        cfg.batch_size = b.parse().unwrap();
    }
    cfg.tokenizer = TokenizerKind::Byte;
    cfg.vocab_size = 256;
    let dev = backend::device();
    let c = resid_corpus::corpus::shakespeare();
    let toks = byte_tokens(&c);
    let w = resid_lm::random_weights(&cfg, 0);
    let map: std::collections::BTreeMap<_, _> = w
        .iter()
        .map(|(n, s, d)| (n.clone(), (s.clone(), d.clone())))
        .collect();
    let m0 = resid_lm::Gpt::<Infer>::from_weights(&cfg, |n| map.get(n).cloned(), &dev).unwrap();
    let mut model = resid_lm::Gpt::<Train>::from_params(
        cfg.clone(),
        m0.params()
            .into_iter()
            .map(|p| burn::tensor::Tensor::from_inner(p).require_grad())
            .collect(),
    );
    let shapes: Vec<[usize; 2]> = model.params().iter().map(|p| p.dims()).collect();
    let decay = cfg
        .param_specs()
        .iter()
        .map(|(_, s)| s.len() == 2)
        .collect();
    let mut opt = AdamW::<Infer>::new(&shapes, decay, 0.1, &dev);
    let (mut tf, mut tb, mut to) = (0.0, 0.0, 0.0);
    let t_all = Instant::now();
    for step in 0..steps {
        let hb = sample_batch(&toks, cfg.batch_size, cfg.context, 0, step as u64);
        let (x, y) = hb.to_device::<Train>(&dev);
        let t = Instant::now();
        let loss = model.loss(x, y);
        let l: f32 = loss.clone().into_scalar();
        tf += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = loss.backward();
        tb += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (p, _) = opt.step(model.params(), &g, 1e-3, 1.0);
        model = resid_lm::Gpt::from_params(cfg.clone(), p);
        to += t.elapsed().as_secs_f64();
        if step == 0 || step + 1 == steps {
            eprintln!("step {step} loss {l:.4}");
        }
    }
    let el = t_all.elapsed().as_secs_f64();
    let tok = (steps * cfg.batch_size * cfg.context) as f64;
    println!(
        "{} params {} batch {} ctx {}: {:.0} tok/s, per step fwd {:.3}s bwd {:.3}s opt {:.3}s",
        cfg.preset,
        cfg.n_params(),
        cfg.batch_size,
        cfg.context,
        tok / el,
        tf / steps as f64,
        tb / steps as f64,
        to / steps as f64
    );
    let t = Instant::now();
    let r = resid_lm::eval::heldout_loss(
        &inference_view(&model),
        &toks[..65_537],
        1.0,
        16,
        65_536,
        &dev,
    );
    println!(
        "eval 64K tokens: {:.2}s ({:.0} tok/s) loss {:.3}",
        t.elapsed().as_secs_f64(),
        65536.0 / t.elapsed().as_secs_f64(),
        r.nats_per_token
    );
}
