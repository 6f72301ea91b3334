//! Count-model baselines and tokenizer timing on the shipped corpus.
//! `cargo run --release -p resid-corpus --example baselines [bpe_vocab]`
use resid_corpus::{corpus, counts, tokenizer::Tokenizer};
use std::time::Instant;

fn main() {
    let text = corpus::shakespeare();
    let (train, held) = corpus::split(&text);
    let tok = Tokenizer::byte();
    let (tr, he) = (tok.encode(train), tok.encode(held));
    let bytes = held.len() - 1;
    let u = counts::unigram_loss(&tr, &he, 256, 0.1);
    println!("byte unigram: {:.4} nats/byte", u.per_byte(bytes));
    for alpha in [0.01, 0.05, 0.1, 0.5, 1.0] {
        let b = counts::bigram_loss(&tr, &he, 256, alpha);
        println!(
            "byte bigram alpha {alpha}: {:.4} nats/byte",
            b.per_byte(bytes)
        );
    }
    for w in [0.2, 0.3, 0.5] {
        let l = counts::bigram_lags_loss(&tr, &he, 256, 0.1, &[2, 3, 4, 5, 6], w);
        println!(
            "byte bigram+lags 2-6 w {w}: {:.4} nats/byte (per prediction)",
            l.per_token()
        );
    }
    let v: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15_000);
    let t0 = Instant::now();
    let bpe = Tokenizer::train_bpe(train, v);
    let t_train = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (tr, he) = (bpe.encode(train), bpe.encode(held));
    let t_enc = t0.elapsed().as_secs_f64();
    assert_eq!(bpe.decode(&he), held);
    let vv = bpe.vocab_size();
    println!(
        "bpe: V {vv}, train {t_train:.1}s, encode {t_enc:.1}s, {:.3} bytes/token",
        text.len() as f64 / (tr.len() + he.len()) as f64
    );
    let u = counts::unigram_loss(&tr, &he, vv, 0.1);
    let held_bytes = held.len() - bpe.token_bytes(he[0]).len();
    println!(
        "bpe unigram: {:.4} nats/token {:.4} nats/byte",
        u.per_token(),
        u.per_byte(held_bytes)
    );
    for alpha in [0.001, 0.01, 0.1] {
        let b = counts::bigram_loss(&tr, &he, vv, alpha);
        println!(
            "bpe bigram alpha {alpha}: {:.4} nats/token {:.4} nats/byte",
            b.per_token(),
            b.per_byte(held_bytes)
        );
    }
}
