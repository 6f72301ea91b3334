//! Derives a base on the shipped corpus and measures it: step-0 held-out
//! loss (base, mimetic, random) beside the count models on the same targets,
//! residual RMS per layer, lag-head attention, zero-layer correlation, time.
//! `cargo run --release -p resid-corpus --example base_check -- tiny|paper [windows] [out_dir]`
use resid_corpus::base::{self, forward};
use resid_corpus::{config::GptConfig, corpus, counts, tokenizer::Tokenizer};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("tiny");
    let nwin: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let mut cfg = GptConfig::preset(preset).expect("preset");
    let text = corpus::shakespeare();
    let (train, held) = corpus::split(&text);
    let t0 = Instant::now();
    let tok = Tokenizer::for_config(&cfg, train);
    cfg.vocab_size = tok.vocab_size();
    let t_tok = t0.elapsed().as_secs_f64();
    let (tr, he) = (tok.encode(train), tok.encode(held));
    let t0 = Instant::now();
    let mut opt = base::BaseOptions::for_config(&cfg);
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(x) = env("DOWN_STD") {
        opt.down_std = x;
    }
    if let Some(x) = env("LAG_W") {
        opt.lag_weight = x;
    }
    if let Some(x) = env("VO") {
        opt.vo = (x, x);
    }
    if let Some(x) = env("MLP_GAIN") {
        opt.mlp_gain = x;
    }
    if let Some(x) = env("STREAM_RMS") {
        opt.stream_rms = x;
    }
    let b = base::derive_base_with(&tr, &cfg, 0, &opt);
    let t_base = t0.elapsed().as_secs_f64();
    println!("{}", b.provenance.table());
    println!("timings {:?}", b.provenance.timings);
    println!("notes {:?}", b.provenance.notes);
    println!(
        "tokenizer {t_tok:.1}s, base {t_base:.1}s, V {}",
        cfg.vocab_size
    );
    let windows = forward::even_windows(&he, cfg.context + 1, nwin);
    let bytes: usize = windows
        .iter()
        .map(|w| {
            w[1..]
                .iter()
                .map(|&t| tok.token_bytes(t).len())
                .sum::<usize>()
        })
        .sum();
    // Count models on the same targets.
    let alpha = base::BaseOptions::for_config(&cfg).alpha;
    let pc = counts::PairCounts::count(&tr, cfg.vocab_size, 1);
    let uni = counts::unigram_counts(&tr, cfg.vocab_size);
    let (mut big, mut un) = (0.0, 0.0);
    for w in &windows {
        for p in w.windows(2) {
            big -= pc.ln_cond(p[0], p[1], alpha);
            un -= ((uni[p[1] as usize] as f64 + alpha)
                / (tr.len() as f64 + alpha * cfg.vocab_size as f64))
                .ln();
        }
    }
    println!(
        "targets {} tokens, {} bytes",
        windows.len() * cfg.context,
        bytes
    );
    println!(
        "uniform      {:.4} nats/token {:.4} nats/byte",
        (cfg.vocab_size as f64).ln(),
        (cfg.vocab_size as f64).ln() * (windows.len() * cfg.context) as f64 / bytes as f64
    );
    println!(
        "unigram      {:.4} nats/token {:.4} nats/byte",
        un / (windows.len() * cfg.context) as f64,
        un / bytes as f64
    );
    println!(
        "bigram       {:.4} nats/token {:.4} nats/byte",
        big / (windows.len() * cfg.context) as f64,
        big / bytes as f64
    );
    for (name, m) in [
        ("csb", b.clone()),
        ("mimetic", base::mimetic_init(&cfg, 0)),
        ("random", base::random_init(&cfg, 0)),
    ] {
        let t0 = Instant::now();
        let w = forward::Weights::new(&cfg, &m.tensors);
        let e = forward::eval_windows(&w, &windows);
        println!(
            "{name:<12} {:.4} nats/token {:.4} nats/byte  resid rms {:?}  ({:.1}s)",
            e.per_token(),
            e.total_nats / bytes as f64,
            e.resid_rms
                .iter()
                .map(|x| (x * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            t0.elapsed().as_secs_f64()
        );
    }
    if std::env::var("ABLATE").is_ok() {
        // Which part of the base costs what: attention outputs off, then
        // also the k-means units' down noise off (linear units kept).
        let mut m = b.clone();
        for (n, _, d) in m.tensors.iter_mut() {
            if n.ends_with("attn.v.weight") {
                d.iter_mut().for_each(|x| *x = 0.0);
            }
        }
        let e = forward::eval_windows(&forward::Weights::new(&cfg, &m.tensors), &windows);
        println!(
            "no attention output  {:.4} nats/byte",
            e.total_nats / bytes as f64
        );
        let last = format!("blocks.{}.mlp.down.weight", cfg.n_layer - 1);
        for (n, _, d) in m.tensors.iter_mut() {
            if n.ends_with("mlp.down.weight") && *n != last {
                d.iter_mut().for_each(|x| *x = 0.0);
            }
        }
        let e = forward::eval_windows(&forward::Weights::new(&cfg, &m.tensors), &windows);
        println!(
            "... and no k-means units  {:.4} nats/byte",
            e.total_nats / bytes as f64
        );
    }
    let lw = forward::even_windows(&he, cfg.context, 8);
    println!(
        "lag attention (layer 0, lags 1..): {:?}",
        base::lag_attention(&b, &cfg, &lw)
    );
    let pairs: Vec<(u32, u32)> = he.windows(2).take(20_000).map(|p| (p[0], p[1])).collect();
    let t0 = Instant::now();
    // A tied head's zero-layer path is not the whole bigram (the last MLP
    // rotates the token block), so the comparison holds for untied heads only.
    if !cfg.tied_head {
        println!(
            "zero-layer correlation on {} held-out bigrams: {:.4} ({:.1}s)",
            pairs.len(),
            base::zero_layer_correlation(&b, &cfg, &tr, &pairs),
            t0.elapsed().as_secs_f64()
        );
    }
    if let Some(dir) = args.get(3) {
        base::write_base(std::path::Path::new(dir), &b, &cfg, &tok).expect("write");
        println!("wrote {dir}");
    }
}
