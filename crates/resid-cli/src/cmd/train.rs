//! `resid train`: train the small GPT on a corpus (the shipped Shakespeare by
//! default) and write checkpoints; progress on stderr.

use std::path::PathBuf;

use anyhow::Context;

use indicatif::{ProgressBar, ProgressStyle};
use resid_corpus::config::{GptConfig, TokenizerKind};
use resid_corpus::tokenizer::Tokenizer;
use resid_lm::{InitKind, TrainOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Corpus file (plain text or .gz); the shipped Shakespeare when absent.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Model shape and training defaults: tiny or paper.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Start from: random, mimetic, or a folder holding model.safetensors of the same shape.
    #[arg(long, default_value = "random")]
    pub init: String,
    /// Resume from a checkpoint folder written by an earlier run (its config wins).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Output folder: final model in it, step-0/ and step-N/ below it.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "DIR"
    )]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub grad_clip: Option<f64>,
    #[arg(long)]
    pub context: Option<usize>,
    #[arg(long)]
    pub n_layer: Option<usize>,
    #[arg(long)]
    pub n_head: Option<usize>,
    #[arg(long)]
    pub d_model: Option<usize>,
    #[arg(long)]
    pub d_ff: Option<usize>,
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Tie the head to the token embedding (true/false).
    #[arg(long)]
    pub tied_head: Option<bool>,
    /// Tokenizer: byte or bpe.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Held-out eval every N steps (0: start and end only).
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Held-out tokens for the periodic evals (the final eval uses the whole split).
    #[arg(long, default_value_t = 65_536)]
    pub eval_tokens: usize,
    /// Keep the parameters whose names match GLOB as they start (repeatable;
    /// e.g. 'tok_emb.*' or 'blocks.[12].*'; names look like
    /// blocks.0.attn.q.weight, see `resid inspect`). A resumed run keeps the
    /// set it was started with.
    #[arg(long, value_name = "GLOB")]
    pub freeze: Vec<String>,
    /// Extra checkpoint every N steps (0: none).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the run summary (curve, tokens/s, losses) as JSON; `-` for stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar or notes on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The config after the preset and every override.
pub fn config_from(a: &Args) -> anyhow::Result<GptConfig> {
    let Some(mut c) = GptConfig::preset(&a.preset) else {
        crate::exit::usage_bail!("unknown preset {:?} (tiny or paper)", a.preset);
    };
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = a.$f { c.$f = v; })* };
    }
    set!(
        steps,
        batch_size,
        lr,
        warmup_steps,
        weight_decay,
        grad_clip,
        context,
        n_layer,
        n_head,
        d_model,
        d_ff,
        vocab_size,
        tied_head
    );
    if let Some(t) = &a.tokenizer {
        c.tokenizer = match t.as_str() {
            "byte" => TokenizerKind::Byte,
            "bpe" => TokenizerKind::Bpe,
            o => crate::exit::usage_bail!("unknown tokenizer {o:?} (byte or bpe)"),
        };
        if c.tokenizer == TokenizerKind::Byte && a.vocab_size.is_none() {
            c.vocab_size = 256;
        }
    }
    if c.d_model % c.n_head != 0 {
        crate::exit::usage_bail!(
            "d_model {} is not a multiple of n_head {}",
            c.d_model,
            c.n_head
        );
    }
    Ok(c)
}

/// The parameter names of `cfg` that the `--freeze` globs match; a glob
/// that matches nothing is a usage error (a typo would silently train all).
pub fn frozen_names(cfg: &GptConfig, globs: &[String]) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = cfg.param_specs().into_iter().map(|(n, _)| n).collect();
    let mut out = Vec::new();
    for g in globs {
        let p = match glob::Pattern::new(g) {
            Ok(p) => p,
            Err(e) => crate::exit::usage_bail!("--freeze {g:?}: {e}"),
        };
        let hits: Vec<&String> = names.iter().filter(|n| p.matches(n)).collect();
        if hits.is_empty() {
            crate::exit::usage_bail!(
                "--freeze {g:?} matches no parameter of the model (names look like {})",
                names
                    .get(4)
                    .map_or("blocks.0.attn.q.weight", |s| s.as_str())
            );
        }
        for n in hits {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    Ok(out)
}

/// Sets the rayon pool size (burn's CPU backend runs on the global pool).
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    set_threads(a.threads);
    let cfg = config_from(&a)?;
    let corpus =
        resid_corpus::corpus::load(a.corpus.as_deref()).with_context(|| "reading the corpus")?;
    let (tr_bytes, ho_bytes) = resid_corpus::corpus::split(&corpus);
    // The vocabulary: the one beside the checkpoint we resume or start from,
    // else byte-level or a BPE trained on the train split.
    let beside = a
        .resume
        .clone()
        .or_else(|| (a.init != "random" && a.init != "mimetic").then(|| PathBuf::from(&a.init)));
    let beside_tok = beside.and_then(|d| {
        let parent = d.parent().and_then(resid_corpus::tokenizer::find_in);
        resid_corpus::tokenizer::find_in(&d).or(parent)
    });
    let tokenizer = match beside_tok {
        Some(p) => Tokenizer::load(&p).with_context(|| format!("{}", p.display()))?,
        None if a.resume.is_some() => Tokenizer::byte(),
        None => {
            if cfg.tokenizer == TokenizerKind::Bpe && !a.quiet {
                eprintln!(
                    "training a {}-entry BPE vocabulary on the train split...",
                    cfg.vocab_size
                );
            }
            Tokenizer::for_config(&cfg, tr_bytes)
        }
    };
    if a.resume.is_none() && tokenizer.vocab_size() != cfg.vocab_size {
        crate::exit::usage_bail!(
            "the tokenizer has {} entries but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            cfg.vocab_size
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let tok_path = a.out.join(resid_corpus::tokenizer::FILE_NAME);
    tokenizer
        .save(&tok_path)
        .with_context(|| format!("{}", tok_path.display()))?;
    let (tr, ho) = (tokenizer.encode(tr_bytes), tokenizer.encode(ho_bytes));
    let bytes_per_token = ho_bytes.len() as f64 / ho.len().max(1) as f64;
    let init: InitKind = a.init.parse().map_err(anyhow::Error::msg)?;
    if a.resume.is_some() && !a.freeze.is_empty() {
        crate::exit::usage_bail!(
            "--freeze with --resume: a resumed run keeps the frozen set it was started with"
        );
    }
    let frozen = frozen_names(&cfg, &a.freeze)?;
    let opts = TrainOptions {
        init,
        seed: a.seed,
        eval_every: a.eval_every,
        eval_tokens: a.eval_tokens,
        save_every: a.save_every,
        resume: a.resume.clone(),
        frozen,
        tokenizer_json: (tokenizer.kind() == resid_corpus::tokenizer::Kind::Bpe)
            .then(|| tokenizer.to_json()),
        ..TrainOptions::new(cfg.clone(), a.out.clone())
    };
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.steps as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("valid template"),
    );
    if !a.quiet {
        if !opts.frozen.is_empty() {
            eprintln!("frozen: {}", opts.frozen.join(", "));
        }
        eprintln!(
            "training {} ({} params, {}) on {} train / {} held-out tokens -> {}",
            cfg.preset,
            cfg.n_params(),
            opts.engine.describe(),
            tr.len(),
            ho.len(),
            a.out.display()
        );
    }
    let mut last_heldout = None;
    let summary = resid_lm::train(&opts, &tr, &ho, bytes_per_token, |p| {
        pb.set_length(p.total as u64);
        pb.set_position(p.step as u64);
        if let Some(h) = p.heldout {
            last_heldout = Some(h.nats_per_byte);
        }
        let held = last_heldout.map_or(String::new(), |h| format!(" held-out {h:.3}"));
        pb.set_message(format!(
            "loss {:.3}{held} | {:.0} tok/s | eta {:.0}s",
            p.loss, p.tokens_per_s, p.eta_s
        ));
    })
    .with_context(|| format!("training into {}", a.out.display()))?;
    pb.finish_and_clear();
    if !a.quiet {
        eprintln!(
            "done: {} steps, {:.0} tok/s, held-out {:.4} nats/byte ({} tokens); model in {}",
            summary.steps,
            summary.tokens_per_s,
            summary.final_heldout.nats_per_byte,
            summary.final_heldout.tokens,
            a.out.display()
        );
    }
    if let Some(j) = &a.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
