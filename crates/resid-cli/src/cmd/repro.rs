//! `resid repro`: the study end to end on the shipped corpus (see `resid-repro`).

use std::io::Write;
use std::path::PathBuf;

use indicatif::ProgressBar;
use resid_repro::{ReproEvent, ReproOptions};

/// Arguments of `resid repro`.
#[derive(clap::Args)]
pub struct Args {
    /// Corpus file (plain text or .gz); the shipped Shakespeare when absent.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Use only the first N bytes of the corpus (quick looks, tests).
    #[arg(long)]
    corpus_bytes: Option<usize>,
    /// Model shape: tiny (minutes on 2 cores) or paper (the study's 10.2M shape; hours on CPU).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Output folder; finished steps found there are reused (resume).
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "DIR",
        default_value = "repro-out"
    )]
    out: PathBuf,
    /// Training steps per run (default: 250 for tiny, the preset's for paper).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also train from the mimetic init.
    #[arg(long)]
    mimetic: bool,
    /// Fine-tune corpus (plain text or .gz) for the fine-tune regime; the
    /// shipped King James New Testament when absent.
    #[arg(long, value_name = "FILE")]
    finetune_corpus: Option<PathBuf>,
    /// Skip the fine-tune regime.
    #[arg(long)]
    no_finetune: bool,
    /// Shares of the training gain whose smallest residual file is searched
    /// (comma-separated; empty: no search).
    #[arg(long, value_delimiter = ',', default_value = "0.9,0.95,0.99")]
    budget_targets: Vec<f64>,
    /// Lossy rates (bits per parameter) at which each residual is packed
    /// and scored, comma-separated (default: 2, 1, 0.5, 0.25 and 0.1).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Also the long runs: layer-wise and layer-parallel training from the
    /// corpus base (2 + 2 x layers more training runs).
    #[arg(long)]
    full: bool,
    /// Held-out tokens scored for every variant (the same slice for all;
    /// the periodic evals while training use half).
    #[arg(long, default_value_t = 32_768)]
    eval_tokens: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the report (report.json's content) here ('-' for stdout;
    /// the summary then goes to stderr).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bars or notes on stderr.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(n) = a.threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let mut o = ReproOptions::new(&a.out);
    o.corpus = a.corpus;
    o.corpus_bytes = a.corpus_bytes;
    o.preset = a.preset;
    o.steps = a.steps;
    o.seed = a.seed;
    o.mimetic = a.mimetic;
    o.finetune = !a.no_finetune;
    o.finetune_corpus = a.finetune_corpus;
    if let Some(t) = a.budget_targets.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        crate::exit::usage_bail!("--budget-targets: {t} is not a share between 0 and 1");
    }
    o.budget_targets = a.budget_targets;
    o.full = a.full;
    if !a.rates.is_empty() {
        o.rates = a.rates;
    }
    o.eval_tokens = a.eval_tokens;
    let quiet = a.quiet;
    let mut bar: Option<(String, ProgressBar)> = None;
    let report = resid_repro::run(&o, |ev| match ev {
        ReproEvent::Step { name, cached } => {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            if !quiet {
                eprintln!("{} {name}", if cached { "reused" } else { "step  " });
            }
        }
        ReproEvent::Train { run, progress: p } => {
            let same = matches!(&bar, Some((r, _)) if *r == run);
            if !same {
                if let Some((_, b)) = bar.take() {
                    b.finish_and_clear();
                }
                let b = crate::progress::bar(p.total as u64, &format!("train {run}"), quiet);
                bar = Some((run.clone(), b));
            }
            let b = &bar.as_ref().expect("set above").1;
            b.set_position(p.step as u64);
            b.set_message(format!(
                "loss {:.3}  {:.0} tok/s  eta {:.0}s",
                p.loss, p.tokens_per_s, p.eta_s
            ));
        }
        ReproEvent::Note(s) => {
            if !quiet {
                match &bar {
                    Some((_, b)) => b.println(s),
                    None => eprintln!("  {s}"),
                }
            }
        }
    })?;
    if let Some((_, b)) = bar.take() {
        b.finish_and_clear();
    }
    writeln!(
        crate::output::human(a.json.as_deref()),
        "{}",
        resid_repro::summary::terminal(&report)
    )?;
    if !quiet {
        eprintln!(
            "report: {0}/index.html (open in a browser), {0}/REPORT.md, {0}/report.json; each residual's analysis in {0}/analysis-*/",
            a.out.display()
        );
    }
    if let Some(j) = &a.json {
        crate::output::write_json(j, &serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
