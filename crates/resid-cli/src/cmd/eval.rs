//! `resid eval`: held-out loss of a trained model, in nats per token and per byte.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use resid_corpus::tokenizer::Tokenizer;

/// Smoothing of the bigram baseline (add-alpha).
const BIGRAM_ALPHA: f64 = 0.1;

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
    /// Accepted for uniformity: eval shows no progress.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    super::train::set_threads(a.threads);
    let ck = resid_lm::load_checkpoint(&a.model)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let tokenizer = if let Some(p) = resid_corpus::tokenizer::find_in(&a.model) {
        Tokenizer::load(&p)?
    } else if ck.meta.tokenizer == "byte" {
        Tokenizer::byte()
    } else {
        return Err(resid::io::IoError::Io {
            path: a.model.join(resid_corpus::tokenizer::FILE_NAME),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("a {} model needs its tokenizer file", ck.meta.tokenizer),
            ),
        }
        .into());
    };
    let corpus = resid_corpus::corpus::load(a.corpus.as_deref())?;
    let (tr, ho) = resid_corpus::corpus::split(&corpus);
    let ho_bytes = ho.len();
    let (tr, ho) = (tokenizer.encode(tr), tokenizer.encode(ho));
    let bytes_per_token = ho_bytes as f64 / ho.len().max(1) as f64;
    let weights: BTreeMap<String, Vec<f32>> =
        ck.weights.into_iter().map(|(n, _, d)| (n, d)).collect();
    let t0 = std::time::Instant::now();
    let r = resid_lm::eval_weights(
        &ck.meta.config,
        &weights,
        &ho,
        1.0,
        a.max_tokens.unwrap_or(usize::MAX),
    )?;
    let secs = t0.elapsed().as_secs_f64();
    // Count-model yardsticks on the same split and tokens, per byte.
    let v = ck.meta.config.vocab_size;
    let per_byte = |l: resid_corpus::counts::CountLoss| l.per_token() / bytes_per_token;
    let unigram = per_byte(resid_corpus::counts::unigram_loss(&tr, &ho, v, 1.0));
    let bigram = per_byte(resid_corpus::counts::bigram_loss(&tr, &ho, v, BIGRAM_ALPHA));
    let out = serde_json::json!({
        "model": a.model.display().to_string(),
        "preset": ck.meta.config.preset,
        "step": ck.meta.step,
        "heldout_nats_per_token": r.nats_per_token,
        "heldout_nats_per_byte": r.nats_per_byte,
        "heldout_tokens": r.tokens,
        "uniform_nats_per_token": (v as f64).ln(),
        "bytes_per_token": bytes_per_token,
        "unigram_nats_per_byte": unigram,
        "bigram_nats_per_byte": bigram,
        "bigram_alpha": BIGRAM_ALPHA,
        "seconds": secs,
    });
    let to_stdout = a.json.as_ref().is_some_and(|j| j.as_os_str() == "-");
    if !to_stdout {
        println!(
            "{}: held-out {:.4} nats/token, {:.4} nats/byte over {} tokens",
            a.model.display(),
            r.nats_per_token,
            r.nats_per_byte,
            r.tokens,
        );
        println!(
            "  baselines (nats/byte): uniform {:.3}, unigram {:.3}, add-{BIGRAM_ALPHA} bigram {:.3}",
            (v as f64).ln() / bytes_per_token,
            unigram,
            bigram
        );
    }
    if let Some(j) = &a.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
