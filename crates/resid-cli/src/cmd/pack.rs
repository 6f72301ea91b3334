//! `resid pack`: store the residual between a base and a trained checkpoint.

use std::io::Write;
use std::path::PathBuf;

use resid::codec::{Mode, PackOptions};

/// Arguments of `resid pack`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).multiple(false)
    .args(["lossless", "bits_per_param", "keep", "max_error"])))]
pub struct Args {
    /// Base checkpoint: a file, a folder, or a repo id org/name[@revision]
    /// in the local Hugging Face cache.
    #[arg(long)]
    pub base: PathBuf,
    /// Trained checkpoint (same forms as --base).
    #[arg(long)]
    pub trained: PathBuf,
    /// Output residual file.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "PATH"
    )]
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
    /// Memory budget for tensors in flight, e.g. 2G or 512M (default: a
    /// quarter of the memory available now, at most 1G).
    #[arg(long, value_parser = parse_bytes)]
    pub max_memory: Option<usize>,
    /// Write a JSON report here ('-' for stdout; the summary then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
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
        crate::exit::usage_bail!("give one of --lossless, --bits-per-param, --keep, --max-error")
    };
    let (base, base_from) = crate::input::open_located(&args.base, args.quiet)?;
    let (trained, trained_from) = crate::input::open_located(&args.trained, args.quiet)?;
    base.advise_sequential();
    trained.advise_sequential();
    let opts = PackOptions {
        mode,
        seed: args.seed,
        allow_nonfinite: args.allow_nonfinite,
        batch_bytes: batch_bytes(args.max_memory),
        ..Default::default()
    };
    // Repo ids given on the command line are recorded with their commits.
    let mut opts = opts;
    (opts.provenance.base_repo, opts.provenance.base_revision) = base_from.unzip();
    (
        opts.provenance.trained_repo,
        opts.provenance.trained_revision,
    ) = trained_from.unzip();
    let pb = crate::progress::bytes_bar(trained.data_bytes() as u64, "pack", args.quiet);
    let rep =
        resid::codec::pack_with_progress(&base, &trained, &args.output, &opts, &|n| pb.inc(n))
            .map_err(|e| {
                // The library does not speak of flags: the hint is added here.
                let hint = match e {
                    resid::codec::CodecError::NonFinite { .. } => {
                        " (pass --allow-nonfinite to store such tensors losslessly)"
                    }
                    _ => "",
                };
                anyhow::Error::new(e).context(format!("packing {}{hint}", args.output.display()))
            })?;
    pb.finish_and_clear();
    let mut o = crate::output::human(args.json.as_deref());
    writeln!(o,
        "{}: {} mode, {} params, {} bytes: {:.4} bits/param, {:.2}x smaller than the trained checkpoint ({} bytes)",
        args.output.display(),
        rep.mode,
        rep.params,
        rep.file_bytes,
        rep.bits_per_param,
        rep.ratio,
        rep.trained_bytes
    )?;
    writeln!(
        o,
        "entropy bound of the coded streams {:.0} bytes, coded {} bytes ({:+.2}%)",
        rep.entropy_bytes,
        rep.coded_bytes,
        if rep.entropy_bytes > 0.0 {
            (rep.coded_bytes as f64 / rep.entropy_bytes - 1.0) * 100.0
        } else {
            0.0
        }
    )?;
    writeln!(
        o,
        "relative error: residual {:.4e}, weights {:.4e}; kept fraction {:.4}",
        rep.residual_rel_error, rep.weight_rel_error, rep.kept_fraction
    )?;
    if let Some(j) = &args.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&rep)?)?;
    }
    Ok(())
}

/// Parses a byte count: a number with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("'{s}': unknown unit (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count like 2G or 512M"))?;
    if !(x.is_finite() && x > 0.0) {
        return Err(format!("'{s}' must be positive"));
    }
    Ok((x * mul as f64) as usize)
}

/// `--max-memory`'s default and batch size: the facade's, shared with Python.
pub use resid::budget::batch_bytes;
