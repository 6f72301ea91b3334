//! `resid inspect`: describe a residual file.

use std::io::Write;
use std::path::PathBuf;

/// Arguments of `resid inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Residual file.
    pub file: PathBuf,
    /// Write the description as JSON here ('-' for stdout; the summary then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Accepted for uniformity: inspect shows no progress.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let r = resid::codec::inspect(&args.file)?;
    let mut o = crate::output::human(args.json.as_deref());
    writeln!(
        o,
        "{}: resid format version {}, {} mode, {} bytes",
        r.file, r.version, r.mode, r.file_bytes
    )?;
    writeln!(
        o,
        "settings: chunk {}, seed {}{}",
        r.settings.chunk,
        r.settings.seed,
        match &r.settings.rate {
            Some(x) => format!(
                ", rate {} = {} (global step {:.4e}, dead zone {})",
                x.kind, x.target, x.step, x.dead_zone
            ),
            None => String::new(),
        }
    )?;
    writeln!(o,
        "{} params, {:.4} bits/param; coded streams {} bytes vs Shannon bound {:.0} bytes ({:+.2}%)",
        r.params,
        r.bits_per_param,
        r.coded_bytes,
        r.entropy_bytes,
        r.entropy_overhead * 100.0
    )?;
    if r.mode == resid::codec::container::FileMode::Lossy {
        writeln!(
            o,
            "relative error reached: residual {:.4e}, weights {:.4e}",
            r.residual_rel_error, r.weight_rel_error
        )?;
    }
    if let Some(p) = &r.provenance {
        let from = |repo: &Option<String>, rev: &Option<String>| match (repo, rev) {
            (Some(r), Some(c)) => format!("{r}@{c}"),
            (Some(r), None) => r.clone(),
            _ => "a local path".to_string(),
        };
        writeln!(
            o,
            "made by resid {} from base {} and trained {}",
            p.resid_version,
            from(&p.base_repo, &p.base_revision),
            from(&p.trained_repo, &p.trained_revision)
        )?;
    }
    writeln!(
        o,
        "trained side: {} ({})",
        if r.sharded { "sharded" } else { "single file" },
        r.shards.join(", ")
    )?;
    writeln!(
        o,
        "{:<40} {:>6} {:>18} {:>12} {:>10} {:>16}",
        "tensor", "dtype", "encoding", "bytes", "bits/param", "base xxh3"
    )?;
    for t in &r.tensors {
        writeln!(
            o,
            "{:<40} {:>6} {:>18} {:>12} {:>10.4} {:>16}",
            t.name,
            t.dtype,
            t.encoding,
            t.coded_bytes,
            t.bits_per_param,
            t.base_xxh3.as_deref().unwrap_or("-")
        )?;
    }
    if let Some(j) = &args.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&r)?)?;
    }
    Ok(())
}
