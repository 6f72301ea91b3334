//! Times training steps of a preset on the shipped corpus (byte tokens, no
//! checkpoints): `cargo run --release -p resid-lm --example step_speed -- tiny 30 [batch] [native|burn]`.
//! Prints one JSON line with tokens/s, so `bench/train-speed.sh` can set it beside PyTorch.

use std::time::Instant;

use resid_corpus::config::{GptConfig, TokenizerKind};
use resid_lm::data::{byte_tokens, sample_batch};
use resid_lm::engine::Engine;
use resid_lm::EngineKind;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map_or("tiny", |s| s.as_str());
    let mut cfg = GptConfig::preset(preset).expect("preset: tiny or paper");
    let steps: usize = args.get(2).map_or(20, |s| s.parse().expect("steps"));
    if let Some(b) = args.get(3).filter(|s| *s != "-") {
        cfg.batch_size = b.parse().expect("batch");
    }
    let kind = match args.get(4).map(|s| s.as_str()) {
        Some("burn") => EngineKind::Burn,
        _ => EngineKind::Native,
    };
    cfg.tokenizer = TokenizerKind::Byte;
    cfg.vocab_size = 256;
    let toks = byte_tokens(&resid_corpus::corpus::shakespeare());
    let w = resid_lm::random_weights(&cfg, 0);
    let frozen = vec![false; w.len()];
    let mut engine = Engine::new(kind, &cfg, &w, &frozen, None).expect("engine");
    // One warm-up step (first-touch of the buffers), not timed.
    let hb = sample_batch(&toks, cfg.batch_size, cfg.context, 0, 0);
    engine.step(&hb, 1e-3, 1.0);
    let t0 = Instant::now();
    let mut last = 0.0;
    for step in 1..=steps {
        let hb = sample_batch(&toks, cfg.batch_size, cfg.context, 0, step as u64);
        last = engine.step(&hb, 1e-3, 1.0).0;
    }
    let el = t0.elapsed().as_secs_f64();
    let tok = (steps * cfg.batch_size * cfg.context) as f64;
    println!(
        "{{\"preset\":\"{preset}\",\"engine\":\"{}\",\"params\":{},\"batch\":{},\"context\":{},\"steps\":{steps},\"seconds\":{el:.3},\"tokens_per_s\":{:.0},\"last_loss\":{last:.4}}}",
        kind.describe(),
        cfg.n_params(),
        cfg.batch_size,
        cfg.context,
        tok / el
    );
}
