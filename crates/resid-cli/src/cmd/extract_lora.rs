//! `resid extract-lora`: the best rank-r PEFT adapter for a full fine-tune
//! (each 2-D weight's residual truncated to its top r singular triplets),
//! with the error it leaves per layer.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use resid_lora::{extract, ExtractOptions, WeightLayout};

/// Arguments of `resid extract-lora`.
#[derive(clap::Args)]
pub struct Args {
    /// Base checkpoint: a file, a folder, or a repo id org/name[@revision]
    /// in the local Hugging Face cache.
    #[arg(long)]
    pub base: PathBuf,
    /// Trained checkpoint (same forms as --base).
    #[arg(long)]
    pub trained: PathBuf,
    /// LoRA rank of every adapted layer.
    #[arg(long, short = 'r')]
    pub rank: usize,
    /// Output adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "DIR"
    )]
    pub output: PathBuf,
    /// Leave token and position embeddings out of the adapter (by default
    /// they get LoRA factors, which PEFT supports).
    #[arg(long)]
    pub no_embeddings: bool,
    /// How the weights are stored, which decides the factors' orientation and
    /// the config's fan_in_fan_out: `auto` reads config.json's model_type
    /// (GPT-2 and kin use transformers' Conv1D, stored (in, out)), else
    /// GPT-2's module names; `true` takes every adapted weight as (in, out),
    /// `false` every weight as nn.Linear's (out, in).
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub fan_in_fan_out: FanInFanOut,
    /// Replace an adapter already in the output folder.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: all cores). The adapter does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the per-layer errors as JSON here ('-' for stdout; the table then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--fan-in-fan-out`, named after PEFT's config field.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FanInFanOut {
    Auto,
    True,
    False,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    if args.rank == 0 {
        crate::exit::usage_bail!("--rank must be at least 1");
    }
    for f in [
        resid_lora::config::CONFIG_FILE,
        resid_lora::adapter::WEIGHTS_FILE,
    ] {
        let p = args.output.join(f);
        if !args.force && std::fs::symlink_metadata(&p).is_ok() {
            crate::exit::usage_bail!(
                "{} exists; pass --force to replace it, or choose another --out",
                p.display()
            );
        }
    }
    let base = crate::input::open(&args.base, args.quiet)?;
    let trained = crate::input::open(&args.trained, args.quiet)?;
    let opts = ExtractOptions {
        rank: args.rank,
        embeddings: !args.no_embeddings,
        base_name: Some(args.base.display().to_string()),
        layout: match args.fan_in_fan_out {
            FanInFanOut::Auto => WeightLayout::Detect,
            FanInFanOut::True => WeightLayout::Conv1D,
            FanInFanOut::False => WeightLayout::Linear,
        },
    };
    let pb = crate::progress::bar(0, "extract-lora", args.quiet);
    let rep = extract(&base, &trained, &args.output, &opts, &|i, n, name| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
        pb.set_message(name.to_string());
    })
    .with_context(|| format!("extracting a LoRA adapter into {}", args.output.display()))?;
    pb.finish_and_clear();
    let mut o = crate::output::human(args.json.as_deref());
    writeln!(
        o,
        "{:<48} {:>12} {:>5} {:>12} {:>10}",
        "layer", "shape", "rank", "|R|", "rel error"
    )?;
    for l in &rep.layers {
        let shape = format!("{}x{}", l.shape[0], l.shape[1]);
        writeln!(
            o,
            "{:<48} {:>12} {:>5} {:>12.4e} {:>10.4}",
            l.tensor, shape, l.rank, l.residual_norm, l.relative_error
        )?;
    }
    for l in &rep.left_out {
        let norm = l
            .residual_norm
            .map_or_else(String::new, |n| format!(" (|R| {n:.4e})"));
        writeln!(o, "not in the adapter: {}: {}{norm}", l.tensor, l.reason)?;
    }
    writeln!(
        o,
        "{}: rank {}, {} layers, {} bytes; relative error of the adapted residual {:.4}; {} tensors unchanged",
        rep.adapter.display(),
        rep.rank,
        rep.layers.len(),
        rep.adapter_bytes,
        rep.relative_error,
        rep.unchanged
    )?;
    writeln!(o, "fan_in_fan_out: {} ({})", rep.fan_in_fan_out, rep.layout)?;
    if let Some(j) = &args.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&rep)?)?;
    }
    Ok(())
}
