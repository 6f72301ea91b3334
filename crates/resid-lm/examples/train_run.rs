//! Trains a preset on the shipped corpus through the library API and prints
//! the curve (what `resid train` does, without the CLI). Used for
//! bench/results/train-*.md.
//! `cargo run --release -p resid-lm --example train_run -- OUT [steps] [lr] [batch] [preset]`

use resid_corpus::config::{GptConfig, TokenizerKind};
use resid_lm::data::byte_tokens;
use resid_lm::{train, TrainOptions};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let out = a.get(1).expect("OUT folder");
    let mut cfg = GptConfig::preset(a.get(5).map_or("tiny", |s| s.as_str())).unwrap();
    cfg.tokenizer = TokenizerKind::Byte;
    cfg.vocab_size = 256;
    if let Some(s) = a.get(2) {
        cfg.steps = s.parse().unwrap();
    }
    if let Some(s) = a.get(3) {
        cfg.lr = s.parse().unwrap();
    }
    if let Some(s) = a.get(4) {
        cfg.batch_size = s.parse().unwrap();
    }
    let c = resid_corpus::corpus::shakespeare();
    let (tr, ho) = resid_corpus::corpus::split(&c);
    let (tr, ho) = (byte_tokens(tr), byte_tokens(ho));
    let opts = TrainOptions {
        eval_every: (cfg.steps / 10).max(1),
        eval_tokens: 32_768,
        ..TrainOptions::new(cfg.clone(), out)
    };
    eprintln!("{cfg:?}");
    let s = train(&opts, &tr, &ho, 1.0, |p| {
        if p.step % 25 == 0 || p.heldout.is_some() {
            eprintln!(
                "step {:5} loss {:.4} lr {:.2e} gnorm {:.2} {:.0} tok/s {:.0}s eta {:.0}s{}",
                p.step,
                p.loss,
                p.lr,
                p.grad_norm,
                p.tokens_per_s,
                p.elapsed_s,
                p.eta_s,
                p.heldout.map_or(String::new(), |h| format!(
                    " held-out {:.4}",
                    h.nats_per_byte
                ))
            );
        }
    })
    .unwrap();
    println!(
        "steps {} tokens {} train {:.1}s {:.0} tok/s final held-out {:.4} nats/byte over {} tokens",
        s.steps,
        s.tokens_seen,
        s.seconds,
        s.tokens_per_s,
        s.final_heldout.nats_per_byte,
        s.final_heldout.tokens
    );
}
