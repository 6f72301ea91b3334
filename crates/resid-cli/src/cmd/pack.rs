//! `resid pack`: store the residual between a base and a trained checkpoint.

use std::path::PathBuf;

use anyhow::Context;
use resid::codec::{Mode, PackOptions};
use resid::io::Checkpoint;

/// Arguments of `resid pack`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).multiple(false)
    .args(["lossless", "bits_per_param", "keep", "max_error"])))]
pub struct Args {
    /// Base checkpoint (file or folder).
    #[arg(long)]
    pub base: PathBuf,
    /// Trained checkpoint (file or folder).
    #[arg(long)]
    pub trained: PathBuf,
    /// Output residual file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Bit-exact rebuild.
    #[arg(long)]
    pub lossless: bool,
    /// Lossy: target bits per parameter of the whole file.
    #[arg(long)]
    pub bits_per_param: Option<f64>,
    /// Lossy: fraction of residual entries kept in the sparse part.
    #[arg(long)]
    pub keep: Option<f64>,
    /// Lossy: largest relative Frobenius error of the residual (whole model).
    #[arg(long)]
    pub max_error: Option<f64>,
    /// Seed of every random choice (recorded in the file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores). The file does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Store NaN / Inf values (losslessly) instead of refusing them.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Print a JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    let mode = if args.lossless {
        Mode::Lossless
    } else if let Some(x) = args.bits_per_param {
        Mode::BitsPerParam(x)
    } else if let Some(x) = args.keep {
        Mode::Keep(x)
    } else if let Some(x) = args.max_error {
        Mode::MaxError(x)
    } else {
        anyhow::bail!("give one of --lossless, --bits-per-param, --keep, --max-error")
    };
    let base = Checkpoint::open(&args.base)?;
    let trained = Checkpoint::open(&args.trained)?;
    base.advise_sequential();
    trained.advise_sequential();
    let opts = PackOptions {
        mode,
        seed: args.seed,
        allow_nonfinite: args.allow_nonfinite,
        ..Default::default()
    };
    let pb = crate::progress::bytes_bar(trained.data_bytes() as u64, "pack", args.quiet);
    let rep =
        resid::codec::pack_with_progress(&base, &trained, &args.output, &opts, &|n| pb.inc(n))
            .with_context(|| format!("packing {}", args.output.display()))?;
    pb.finish_and_clear();
    println!(
        "{}: {} mode, {} params, {} bytes: {:.4} bits/param, {:.2}x smaller than the trained checkpoint ({} bytes)",
        args.output.display(),
        rep.mode,
        rep.params,
        rep.file_bytes,
        rep.bits_per_param,
        rep.ratio,
        rep.trained_bytes
    );
    println!(
        "entropy bound of the coded streams {:.0} bytes, coded {} bytes ({:+.2}%)",
        rep.entropy_bytes,
        rep.coded_bytes,
        if rep.entropy_bytes > 0.0 {
            (rep.coded_bytes as f64 / rep.entropy_bytes - 1.0) * 100.0
        } else {
            0.0
        }
    );
    println!(
        "relative error: residual {:.4e}, weights {:.4e}; kept fraction {:.4}",
        rep.residual_rel_error, rep.weight_rel_error, rep.kept_fraction
    );
    if let Some(j) = &args.json {
        resid::io::atomic::write_atomic(j, serde_json::to_string_pretty(&rep)?.as_bytes())?;
    }
    Ok(())
}
