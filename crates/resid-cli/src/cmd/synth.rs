//! `resid synth`: generate a base/trained pair with a real model's shapes.

use std::path::PathBuf;

use anyhow::Context;
use resid::io::synth::{write_pair, Arch, ResidualKind, SynthOptions};
use resid::io::Dtype;

/// Arguments of `resid synth`.
#[derive(clap::Args)]
pub struct Args {
    /// Architecture: llama-25m, llama-0.1b, llama-250m, llama-1b, llama-7b,
    /// llama-13b, llama-70b, or custom:LAYERS,D_MODEL,D_FF,VOCAB.
    #[arg(long, default_value = "llama-25m")]
    shape: String,
    /// Stored dtype: f32, f16, bf16.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// What training added: sparse (5% of entries, Laplace tails), dense, lowrank (rank 8).
    #[arg(long, default_value = "sparse")]
    residual: String,
    /// Residual RMS relative to the base weights' RMS.
    #[arg(long, default_value_t = 0.01)]
    scale: f32,
    /// Largest shard, in GB.
    #[arg(long, default_value_t = 5.0)]
    shard_gb: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder; `base/` and `trained/` are written inside it.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "DIR"
    )]
    out: PathBuf,
    /// Write what was generated as JSON here ('-' for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let Some(arch) = Arch::named(&a.shape) else {
        crate::exit::usage_bail!("unknown --shape '{}'", a.shape)
    };
    let dtype = match a.dtype.to_ascii_lowercase().as_str() {
        "f32" => Dtype::F32,
        "f16" => Dtype::F16,
        "bf16" => Dtype::BF16,
        d => crate::exit::usage_bail!("--dtype '{d}': choose f32, f16 or bf16"),
    };
    let Some(residual) = ResidualKind::parse(&a.residual) else {
        crate::exit::usage_bail!(
            "--residual '{}': choose sparse, dense or lowrank",
            a.residual
        )
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let o = SynthOptions {
        arch,
        dtype,
        residual,
        scale: a.scale,
        seed: a.seed,
        shard_bytes: (a.shard_gb * 1e9) as usize,
    };
    let pb = crate::progress::bytes_bar(0, "synth", a.quiet);
    write_pair(&a.out, &o, |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    if !a.quiet {
        eprintln!(
            "wrote {} parameters ({}) to {}/base and {}/trained",
            o.arch.n_params(),
            dtype,
            a.out.display(),
            a.out.display()
        );
    }
    if let Some(j) = &a.json {
        let doc = serde_json::json!({
            "shape": a.shape,
            "params": o.arch.n_params(),
            "dtype": dtype.to_string(),
            "residual": a.residual,
            "scale": a.scale,
            "seed": a.seed,
            "base": a.out.join("base").display().to_string(),
            "trained": a.out.join("trained").display().to_string(),
        });
        crate::output::write_json(j, &serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
