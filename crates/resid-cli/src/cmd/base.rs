//! `resid base`: derive the corpus-derived weight base (CSB) for the small
//! GPT, or write the mimetic / random init, as a checkpoint folder
//! (`model.safetensors`, `base.json`, `resid-config.json`, `model.json`,
//! `resid-tokenizer.json`), and print how each tensor was made and the step-0
//! held-out loss beside the count models.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use resid_corpus::base::{self, forward};
use resid_corpus::{config::GptConfig, corpus, counts, tokenizer::Tokenizer};

/// Arguments of `resid base`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Corpus file (text, or .gz); the shipped Shakespeare when absent.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Model shape: tiny or paper.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Which weights: csb (corpus-derived), mimetic or random.
    #[arg(long, default_value = "csb")]
    pub init: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "DIR"
    )]
    pub out: PathBuf,
    /// Held-out windows (of context + 1 tokens) for the step-0 loss; 0 skips it.
    #[arg(long, default_value_t = 32)]
    pub eval_windows: usize,
    /// Write the provenance and step-0 figures as JSON; `-` for stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print nothing but errors (and the JSON asked for).
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let Some(mut cfg) = GptConfig::preset(&a.preset) else {
        crate::exit::usage_bail!("unknown preset '{}' (tiny or paper)", a.preset);
    };
    let to_stdout = a.json.as_deref() == Some(std::path::Path::new("-"));
    let say = |s: String| {
        if !a.quiet {
            if to_stdout {
                eprintln!("{s}");
            } else {
                println!("{s}");
            }
        }
    };
    let text = corpus::load(a.corpus.as_deref()).context("reading the corpus")?;
    let (train, held) = corpus::split(&text);
    let t0 = Instant::now();
    let tok = Tokenizer::for_config(&cfg, train);
    cfg.vocab_size = tok.vocab_size();
    let (tr, he) = (tok.encode(train), tok.encode(held));
    say(format!(
        "tokenizer {:?}: V = {}, {} train / {} held-out tokens ({:.1}s)",
        tok.kind(),
        cfg.vocab_size,
        tr.len(),
        he.len(),
        t0.elapsed().as_secs_f64()
    ));
    let t0 = Instant::now();
    let b = match a.init.as_str() {
        "csb" => base::derive_base(&tr, &cfg, a.seed),
        "mimetic" => base::mimetic_init(&cfg, a.seed),
        "random" => base::random_init(&cfg, a.seed),
        other => crate::exit::usage_bail!("unknown init '{other}' (csb, mimetic or random)"),
    };
    say(format!(
        "{} weights in {:.1}s",
        a.init,
        t0.elapsed().as_secs_f64()
    ));
    say(b.provenance.table());
    base::write_base(&a.out, &b, &cfg, &tok)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let mut figures = serde_json::Map::new();
    if a.eval_windows > 0 {
        let windows = forward::even_windows(&he, cfg.context + 1, a.eval_windows);
        if windows.is_empty() {
            return Err(crate::exit::bad_input(
                "held-out split shorter than one context window",
            ));
        }
        let n: usize = windows.iter().map(|w| w.len() - 1).sum();
        let bytes: usize = windows
            .iter()
            .map(|w| {
                w[1..]
                    .iter()
                    .map(|&t| tok.token_bytes(t).len())
                    .sum::<usize>()
            })
            .sum();
        let alpha = base::BaseOptions::for_config(&cfg).alpha;
        let pc = counts::PairCounts::count(&tr, cfg.vocab_size, 1);
        let bigram: f64 = windows
            .iter()
            .flat_map(|w| w.windows(2))
            .map(|p| -pc.ln_cond(p[0], p[1], alpha))
            .sum();
        let uniform = (cfg.vocab_size as f64).ln() * n as f64;
        let e = forward::eval_windows(&forward::Weights::new(&cfg, &b.tensors), &windows);
        say(format!(
            "step-0 held-out loss on {n} tokens ({bytes} bytes):"
        ));
        for (name, nats) in [
            (a.init.as_str(), e.total_nats),
            ("bigram", bigram),
            ("uniform", uniform),
        ] {
            say(format!(
                "  {name:<8} {:.4} nats/token  {:.4} nats/byte",
                nats / n as f64,
                nats / bytes as f64
            ));
            figures.insert(
                format!("{name}_nats_per_byte"),
                (nats / bytes as f64).into(),
            );
        }
        say(format!(
            "  residual stream RMS per layer: {:?}",
            e.resid_rms
        ));
        figures.insert("resid_rms".into(), serde_json::json!(e.resid_rms));
        figures.insert("eval_tokens".into(), n.into());
    }
    if let Some(p) = &a.json {
        let doc = serde_json::json!({ "provenance": b.provenance, "step0": figures });
        crate::output::write_json(p, &serde_json::to_string_pretty(&doc)?)?;
    }
    say(format!("wrote {}", a.out.display()));
    Ok(())
}
