//! `resid unpack`: rebuild the trained checkpoint from the base and a residual file.

use std::io::Write;
use std::path::PathBuf;

/// Arguments of `resid unpack`.
#[derive(clap::Args)]
pub struct Args {
    /// Base checkpoint the residual was made against: a file, a folder, or
    /// a repo id org/name[@revision] in the local Hugging Face cache.
    #[arg(long)]
    pub base: PathBuf,
    /// Residual file.
    pub file: PathBuf,
    /// Output: a .safetensors file, or a folder when the trained side was sharded.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "PATH"
    )]
    pub output: PathBuf,
    /// Replace files that exist at the output (shards, stored files, the
    /// index). Without it unpack refuses before writing anything.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory budget for tensors in flight, e.g. 2G or 512M (default: a
    /// quarter of the memory available now, at most 1G).
    #[arg(long, value_parser = super::pack::parse_bytes)]
    pub max_memory: Option<usize>,
    /// Write what was rebuilt as JSON here ('-' for stdout; the summary then goes to stderr).
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
    let base = crate::input::open(&args.base, args.quiet)?;
    base.advise_sequential();
    let pb = crate::progress::bytes_bar(0, "unpack", args.quiet);
    let t0 = std::time::Instant::now();
    let opts = resid::codec::UnpackOptions {
        batch_bytes: super::pack::batch_bytes(args.max_memory),
        force: args.force,
    };
    let rep = resid::codec::unpack_with(&base, &args.file, &args.output, &opts, &|n| pb.inc(n))
        .map_err(|e| {
            // The library does not speak of flags: the hint is added here.
            let hint = match e {
                resid::codec::CodecError::OutputExists { .. } => " (pass --force to replace it)",
                _ => "",
            };
            anyhow::Error::new(e).context(format!("unpacking {}{hint}", args.file.display()))
        })?;
    pb.finish_and_clear();
    let s = t0.elapsed().as_secs_f64();
    let mb_s = rep.bytes as f64 / 1e6 / s.max(1e-9);
    writeln!(
        crate::output::human(args.json.as_deref()),
        "{}: {} tensors, {} bytes in {:.2} s ({:.0} MB/s)",
        rep.outputs.join(", "),
        rep.tensors,
        rep.bytes,
        s,
        mb_s
    )?;
    if let Some(j) = &args.json {
        let doc = serde_json::json!({
            "file": args.file.display().to_string(),
            "base": args.base.display().to_string(),
            "outputs": rep.outputs,
            "tensors": rep.tensors,
            "bytes": rep.bytes,
            "seconds": s,
            "mb_per_s": mb_s,
        });
        crate::output::write_json(j, &serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
