//! `resid verify`: check a residual file against its base (and the original
//! trained checkpoint) without writing anything.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `resid verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Residual file.
    pub file: PathBuf,
    /// Base checkpoint the residual was made against: a file, a folder, or
    /// a repo id org/name[@revision] in the local Hugging Face cache.
    #[arg(long)]
    pub base: PathBuf,
    /// The original trained checkpoint: bit-exact tensors must equal its own.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Write a JSON report here ('-' for stdout; the summary then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let base = crate::input::open(&args.base, args.quiet)?;
    let against = args
        .against
        .as_deref()
        .map(|a| crate::input::open(a, args.quiet))
        .transpose()?;
    let pb = crate::progress::bytes_bar(0, "verify", args.quiet);
    let rep = resid::codec::verify(
        &base,
        &args.file,
        against.as_ref(),
        super::pack::batch_bytes(None),
        &|n| pb.inc(n),
    )
    .with_context(|| format!("verifying {}", args.file.display()))?;
    pb.finish_and_clear();
    let mut o = crate::output::human(args.json.as_deref());
    writeln!(
        o,
        "{}: ok: format version {}, {} mode, {} tensors ({} bit-exact, {} lossy), {} bytes rebuilt and checked; {} shard files byte-identical to the original (sha256), {} stored files checked",
        rep.file,
        rep.version,
        rep.mode,
        rep.tensors,
        rep.bit_exact,
        rep.lossy,
        rep.bytes,
        rep.original_files,
        rep.stored_files
    )?;
    if let Some(a) = &rep.against {
        writeln!(
            o,
            "against {}: {} bit-exact tensors identical; lossy relative error {:.4e}",
            a.checkpoint, a.identical, a.lossy_rel_error
        )?;
    }
    if let Some(j) = &args.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&rep)?)?;
    }
    Ok(())
}
