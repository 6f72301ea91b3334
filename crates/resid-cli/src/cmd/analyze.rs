//! `resid analyze`: the structure of the residual between two checkpoints,
//! as the study's tables (terminal) and one JSON object (`--json`). With
//! `--subspace-of` instead of `--base`: the trained weights with the top-K
//! directions of a token embedding projected out, measured the same way.
//! With `--adapter` instead of `--trained`: the ΔW a PEFT LoRA adapter adds
//! to `--base`, laid out as a base/trained pair in a temporary folder.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use resid::analysis::{
    analyze, analyze_subspace, analyze_subspace_with_figures, analyze_with_figures, FigureOptions,
    Margins, Options, Subspace,
};
use resid::io::atomic::AtomicFile;
use resid::io::Layout;

/// Arguments of `resid analyze`.
#[derive(clap::Args)]
pub struct Args {
    /// Base checkpoint: a .safetensors file, a folder with model.safetensors
    /// or model.safetensors.index.json, or a repo id org/name[@revision]
    /// found in the local Hugging Face cache (a path that exists wins).
    #[arg(
        long,
        required_unless_present = "subspace_of",
        conflicts_with = "subspace_of"
    )]
    pub base: Option<PathBuf>,
    /// Trained checkpoint (same forms as --base). Give it several times
    /// (checkpoints of one run, fine-tunes of one base) for one analysis per
    /// residual plus, per pair, cosine, sign and TIES agreement per tensor.
    #[arg(long, required_unless_present = "adapter", conflicts_with = "adapter")]
    pub trained: Vec<PathBuf>,
    /// Instead of --trained: a PEFT LoRA adapter folder (adapter_config.json +
    /// adapter_model.safetensors); analyses the ΔW = (alpha/r)·B·A it adds
    /// to each module of --base. Needs 8 bytes of temporary disk per adapted
    /// parameter (TMPDIR).
    #[arg(
        long,
        value_name = "DIR",
        requires = "base",
        conflicts_with = "subspace_of"
    )]
    pub adapter: Option<PathBuf>,
    /// Instead of a base: project each weight matrix of --trained off the
    /// top --k eigenvectors of E^T E of this checkpoint's token embedding
    /// (mean removed) and analyse what is left (base = 0).
    #[arg(long, value_name = "PATH")]
    pub subspace_of: Option<PathBuf>,
    /// Directions projected out with --subspace-of [default: 8].
    // Checked in `run`: clap drops `requires` when the required arg
    // conflicts with one present (--base).
    #[arg(long)]
    pub k: Option<usize>,
    /// Write the report as JSON here ('-' for stdout, and then nothing else on stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write a report folder: index.html (self-contained, figures
    /// inline), report.md with its SVG figures, and report.json.
    #[arg(short = 'o', long = "out", visible_aliases = ["output", "report"], value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of every null and sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Layout override file (JSON rules: [{"contains": "...", "component": "attention", "role": "q"}]).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// Fail on the first tensor holding NaN/Inf. By default such tensors are
    /// measured over their finite entries, counted per tensor and warned about.
    #[arg(long)]
    pub deny_nonfinite: bool,
    /// Sparse: pooled kurtosis must exceed this.
    #[arg(long, default_value_t = Margins::default().sparse_kurtosis)]
    pub sparse_kurtosis: f64,
    /// Sparse: the top 1% of entries must hold more than this many times a Gaussian's energy share (8.45%).
    #[arg(long, default_value_t = Margins::default().sparse_top1_factor)]
    pub sparse_top1_factor: f64,
    /// Smooth: low-frequency power ratio to the null must exceed this.
    #[arg(long, default_value_t = Margins::default().smooth_ratio)]
    pub smooth_ratio: f64,
    /// Coordinated: the weight matrices' |mean adjacent-layer r| must exceed this (and the null band).
    #[arg(long, default_value_t = Margins::default().coordinated_r)]
    pub coordinated_r: f64,
    /// Clustered: k-means VE must exceed the larger of the shuffled and same-covariance nulls' by this.
    #[arg(long, default_value_t = Margins::default().clustered_excess_ve)]
    pub clustered_excess_ve: f64,
    /// Low-rank: PR / Marchenko-Pastur PR (energy-weighted over matrices) must be below this.
    #[arg(long, default_value_t = Margins::default().low_rank_pr_ratio)]
    pub low_rank_pr_ratio: f64,
    /// Row- / column-sparse: the top 10% of rows (columns) must hold more than this share of the energy.
    #[arg(long, default_value_t = Margins::default().line_sparse_top10)]
    pub line_sparse_top10: f64,
    /// Decay-like: the share of the energy along -W_base must exceed this.
    #[arg(long, default_value_t = Margins::default().decay_share)]
    pub decay_share: f64,
    /// Memory budget for tensors in flight, e.g. 2G or 512M (default: a
    /// quarter of the memory available now, at most 1G; one tensor always runs).
    #[arg(long, value_parser = super::pack::parse_bytes)]
    pub max_memory: Option<usize>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.k.is_some() && args.subspace_of.is_none() {
        crate::exit::usage_bail!(
            "--k sets the directions of --subspace-of; it means nothing with --base"
        );
    }
    let layout = match &args.layout {
        Some(p) => Layout::from_file(p)?,
        None => Layout::builtin(),
    };
    let base = args
        .base
        .as_deref()
        .map(|b| crate::input::open(b, args.quiet))
        .transpose()?;
    // With an adapter, the pair is written to `_applied` (removed on drop).
    let (base, trained, _applied) = match (&args.adapter, base) {
        (Some(dir), Some(b)) => {
            let (pb, pt, tmp) = apply_adapter(dir, &b, args.quiet)?;
            (Some(pb), pt, Some(tmp))
        }
        (_, base) => {
            let t = args.trained.first().expect("clap: --trained or --adapter");
            (base, crate::input::open(t, args.quiet)?, None)
        }
    };
    let subspace = match &args.subspace_of {
        Some(p) => {
            let ck = crate::input::open(p, args.quiet)?;
            Some(Subspace::from_checkpoint(
                &ck,
                &layout,
                args.k.unwrap_or(8),
            )?)
        }
        None => None,
    };
    let json_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    // Create the output first, so a bad path fails before the work; it
    // appears only on commit.
    let mut out = match &args.json {
        Some(p) if !json_stdout => Some(AtomicFile::create(p)?),
        _ => None,
    };
    let opts = Options {
        threads: args.threads.unwrap_or(0),
        seed: args.seed,
        layout,
        margins: Margins {
            sparse_kurtosis: args.sparse_kurtosis,
            sparse_top1_factor: args.sparse_top1_factor,
            smooth_ratio: args.smooth_ratio,
            coordinated_r: args.coordinated_r,
            clustered_excess_ve: args.clustered_excess_ve,
            low_rank_pr_ratio: args.low_rank_pr_ratio,
            line_sparse_top10: args.line_sparse_top10,
            decay_share: args.decay_share,
            ..Margins::default()
        },
        allow_nonfinite: !args.deny_nonfinite,
        memory_budget: Some(resid::budget::memory_budget(args.max_memory)),
        ..Options::default()
    };
    if args.trained.len() > 1 {
        let Some(base) = base else {
            crate::exit::usage_bail!("several --trained need --base (not --subspace-of)");
        };
        return run_several(&args, &opts, &base, trained, json_stdout, out);
    }
    let total = match &base {
        Some(b) => resid::io::pair(b, &trained)?.pairs.len() as u64,
        None => trained.tensors().len() as u64,
    };
    let pb = crate::progress::bar(total, "analyze", args.quiet);
    let on = |p: &resid::analysis::Progress| {
        pb.set_position(p.done as u64);
        pb.set_message(p.name.to_string());
    };
    // With --report, the figure data is gathered in the same pass.
    let figs = args.report.is_some().then(FigureOptions::default);
    let run = match (&base, &subspace, &figs) {
        (Some(b), _, Some(f)) => analyze_with_figures(b, &trained, &opts, f, &on).map(some),
        (Some(b), _, None) => analyze(b, &trained, &opts, &on).map(|r| (r, None)),
        (None, Some(s), Some(f)) => {
            analyze_subspace_with_figures(&trained, s, &opts, f, &on).map(some)
        }
        (None, Some(s), None) => analyze_subspace(&trained, s, &opts, &on).map(|r| (r, None)),
        (None, None, _) => unreachable!("clap requires --base or --subspace-of"),
    };
    pb.finish_and_clear();
    let (mut report, figs) = run?;
    if let (Some(dir), Some(b)) = (&args.adapter, &args.base) {
        report.base = b.display().to_string();
        report.trained = format!("{} + adapter {}", b.display(), dir.display());
    }
    // Non-finite values are data problems the user must hear about even
    // with --quiet; the JSON carries the same counts per tensor.
    for r in report.tensors.iter().filter(|r| r.nan + r.inf > 0) {
        let why = r.note.as_deref().unwrap_or("non-finite values");
        eprintln!("warning: tensor '{}': {why}", r.name);
    }
    let json = report.to_json();
    if json_stdout {
        let mut so = std::io::stdout().lock();
        so.write_all(json.as_bytes())
            .and_then(|_| so.write_all(b"\n"))
            .context("stdout")?;
    } else {
        print!("{}", resid::report::terminal::render(&report));
    }
    if let Some(dir) = &args.report {
        let sp = crate::progress::spinner("writing the report", args.quiet);
        resid::report::analysis::write_analysis_report(dir, &report, figs.as_ref())
            .with_context(|| format!("writing the report in {}", dir.display()))?;
        sp.finish_and_clear();
        if !args.quiet {
            eprintln!("wrote {}", dir.join("index.html").display());
        }
    }
    if let Some(mut f) = out.take() {
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.commit()?;
        if !args.quiet {
            eprintln!("wrote {}", args.json.as_ref().expect("json path").display());
        }
    }
    Ok(())
}

/// Several `--trained` against one base: each residual analysed as a single
/// one is, then every pair compared; one JSON record (`Several`).
fn run_several(
    args: &Args,
    opts: &Options,
    base: &resid::io::Checkpoint,
    first: resid::io::Checkpoint,
    json_stdout: bool,
    out: Option<AtomicFile>,
) -> anyhow::Result<()> {
    let mut trained = vec![first];
    for t in &args.trained[1..] {
        trained.push(crate::input::open(t, args.quiet)?);
    }
    let (mut residuals, mut figures) = (Vec::new(), Vec::new());
    for (i, t) in trained.iter().enumerate() {
        let total = resid::io::pair(base, t)?.pairs.len() as u64;
        let pb = crate::progress::bar(total, &format!("analyze {i}"), args.quiet);
        let on = |p: &resid::analysis::Progress| {
            pb.set_position(p.done as u64);
            pb.set_message(p.name.to_string());
        };
        let (r, f) = match &args.report {
            Some(_) => {
                analyze_with_figures(base, t, opts, &FigureOptions::default(), &on).map(some)?
            }
            None => (analyze(base, t, opts, &on)?, None),
        };
        pb.finish_and_clear();
        residuals.push(r);
        figures.push(f);
    }
    let refs: Vec<&resid::io::Checkpoint> = trained.iter().collect();
    let pb = crate::progress::bar(0, "compare", args.quiet);
    let pairs = resid::analysis::compare::compare(base, &refs, &opts.layout, &|done, of, name| {
        pb.set_length(of as u64);
        pb.set_position(done as u64);
        pb.set_message(name.to_string());
    })?;
    pb.finish_and_clear();
    let rec = resid::analysis::Several {
        schema_version: resid::analysis::SCHEMA_VERSION,
        base: args.base.as_ref().expect("checked").display().to_string(),
        residuals,
        pairs,
    };
    let json = rec.to_json();
    if json_stdout {
        let mut so = std::io::stdout().lock();
        so.write_all(json.as_bytes())
            .and_then(|_| so.write_all(b"\n"))
            .context("stdout")?;
    } else {
        print!("{}", resid::report::terminal::render_several(&rec));
    }
    if let Some(dir) = &args.report {
        resid::report::several::write_several_report(dir, &rec, &figures)
            .with_context(|| format!("writing the report in {}", dir.display()))?;
        if !args.quiet {
            eprintln!("wrote {}", dir.join("index.html").display());
        }
    }
    if let Some(mut f) = out {
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.commit()?;
    }
    Ok(())
}

/// Opens the adapter and writes its base/trained pair into a temporary
/// folder (kept alive by the returned handle).
fn apply_adapter(
    dir: &std::path::Path,
    base: &resid::io::Checkpoint,
    quiet: bool,
) -> anyhow::Result<(
    resid::io::Checkpoint,
    resid::io::Checkpoint,
    tempfile::TempDir,
)> {
    let adapter = resid_lora::Adapter::open(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("resid-adapter")
        .tempdir()
        .context("a temporary folder for the adapter's residual")?;
    let pb = crate::progress::bar(adapter.modules().len() as u64, "apply adapter", quiet);
    let pair = resid_lora::apply::write_pair(&adapter, base, tmp.path(), &|i, name| {
        pb.set_position(i as u64);
        pb.set_message(name.to_string());
    })?;
    pb.finish_and_clear();
    Ok((
        resid::io::Checkpoint::open(&pair.base)?,
        resid::io::Checkpoint::open(&pair.trained)?,
        tmp,
    ))
}

fn some<R, F>((r, f): (R, F)) -> (R, Option<F>) {
    (r, Some(f))
}
