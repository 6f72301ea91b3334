//! `resid bench-codec`: resid's codec beside the published delta methods.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `resid bench-codec`.
#[derive(clap::Args)]
pub struct Args {
    /// Base checkpoint: a file, a folder, or a repo id org/name[@revision]
    /// in the local Hugging Face cache.
    #[arg(long)]
    pub base: PathBuf,
    /// Trained checkpoint (same forms as --base).
    #[arg(long)]
    pub trained: PathBuf,
    /// Lossy rates (bits per parameter), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2")]
    pub rates: Vec<f64>,
    /// Seed (resid's SVD, DARE's masks).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for the temporary packed files (default: the system's).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Write the rows as JSON here ('-' for stdout; the table then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write a report folder: index.html (self-contained), report.md
    /// with the rate-distortion figure, and report.json (the rows).
    #[arg(short = 'o', long = "out", visible_aliases = ["output", "report"], value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress spinner.
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
    let trained = crate::input::open(&args.trained, args.quiet)?;
    let dir = match &args.tmp {
        Some(p) => tempfile_in(p)?,
        None => tempfile_in(&std::env::temp_dir())?,
    };
    let sp = crate::progress::spinner("bench-codec: every method, every rate", args.quiet);
    let rows = resid::codec::baselines::bench(&base, &trained, &args.rates, args.seed, &dir);
    sp.finish_and_clear();
    let rows = rows?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = crate::output::human(args.json.as_deref());
    writeln!(o,
        "| method | setting | bits/param | rel. residual error | weight cosine | encode MB/s | decode MB/s | entropy bound bits/param |"
    )?;
    writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for r in &rows {
        writeln!(
            o,
            "| {} | {} | {:.4} | {:.4} | {:.6} | {:.0} | {} | {} |",
            r.method,
            r.setting,
            r.bits_per_param,
            r.residual_rel_error,
            r.weight_cosine,
            r.encode_mb_s,
            if r.decode_mb_s.is_finite() {
                format!("{:.0}", r.decode_mb_s)
            } else {
                "-".into()
            },
            r.entropy_bits_per_param
                .map_or("-".into(), |x| format!("{x:.4}"))
        )?;
    }
    let json = serde_json::to_string_pretty(&rows)?;
    if let Some(j) = &args.json {
        crate::output::write_json(j, &json)?;
    }
    if let Some(dir) = &args.report {
        let points: Vec<_> = rows
            .iter()
            .map(|r| resid::report::rate::RatePoint {
                method: r.method.clone(),
                setting: r.setting.clone(),
                bits_per_param: r.bits_per_param,
                rel_error: r.residual_rel_error,
                weight_cosine: r.weight_cosine,
                encode_mb_s: r.encode_mb_s,
                decode_mb_s: r.decode_mb_s,
            })
            .collect();
        let inputs = vec![
            format!("base: {}", args.base.display()),
            format!("trained: {}", args.trained.display()),
            format!(
                "{} parameters, seed {}",
                trained.tensors().iter().map(|t| t.numel()).sum::<usize>(),
                args.seed
            ),
        ];
        let doc = resid::report::rate::rate_document(&inputs, &points)?;
        resid::report::document::write_document(dir, &doc, Some(&json))
            .with_context(|| format!("writing the report in {}", dir.display()))?;
        if !args.quiet {
            eprintln!("wrote {}", dir.join("index.html").display());
        }
    }
    Ok(())
}

fn tempfile_in(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    let d = p.join(format!("resid-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
