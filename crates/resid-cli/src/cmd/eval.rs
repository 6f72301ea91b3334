//! `resid eval`: held-out loss of a trained model, in nats per token and per byte.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use resid_lm::data::byte_tokens;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder (model.safetensors + model.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Corpus whose last 10% is scored; the shipped Shakespeare when absent.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Score at most this many held-out tokens (default: all).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the figures as JSON; `-` for stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    super::train::set_threads(a.threads);
    let ck = resid_lm::load_checkpoint(&a.model)
        .with_context(|| format!("loading {}", a.model.display()))?;
    if ck.meta.tokenizer != "byte" {
        bail!("{}: tokenizer {} is not supported by eval yet", a.model.display(), ck.meta.tokenizer);
    }
    let corpus = resid_corpus::corpus::load(a.corpus.as_deref())?;
    let (_, ho) = resid_corpus::corpus::split(&corpus);
    let ho = byte_tokens(ho);
    let weights: BTreeMap<String, Vec<f32>> =
        ck.weights.into_iter().map(|(n, _, d)| (n, d)).collect();
    let t0 = std::time::Instant::now();
    let r = resid_lm::eval_weights(&ck.meta.config, &weights, &ho, 1.0, a.max_tokens.unwrap_or(usize::MAX))?;
    let secs = t0.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "model": a.model.display().to_string(),
        "preset": ck.meta.config.preset,
        "step": ck.meta.step,
        "heldout_nats_per_token": r.nats_per_token,
        "heldout_nats_per_byte": r.nats_per_byte,
        "heldout_tokens": r.tokens,
        "uniform_nats_per_token": (ck.meta.config.vocab_size as f64).ln(),
        "seconds": secs,
    });
    let to_stdout = a.json.as_ref().is_some_and(|j| j.as_os_str() == "-");
    if !to_stdout {
        println!(
            "{}: held-out {:.4} nats/token, {:.4} nats/byte over {} tokens (uniform {:.3})",
            a.model.display(),
            r.nats_per_token,
            r.nats_per_byte,
            r.tokens,
            (ck.meta.config.vocab_size as f64).ln()
        );
    }
    if let Some(j) = &a.json {
        let s = serde_json::to_string_pretty(&out)?;
        if to_stdout {
            println!("{s}");
        } else {
            std::fs::write(j, s).with_context(|| format!("{}", j.display()))?;
        }
    }
    Ok(())
}
