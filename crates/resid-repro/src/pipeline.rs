//! The reproduction's steps in order; each result cached under `out/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use resid_corpus::config::GptConfig;
use resid_corpus::counts;
use resid_corpus::tokenizer::Tokenizer;
use resid_lm::{InitKind, TrainOptions};
use serde::{Deserialize, Serialize};

use crate::needle::{self, Named};
use crate::steps::cached;
use crate::{ReproError, Result};

/// Training steps per run of the `tiny` reproduction unless told otherwise.
pub const TINY_REPRO_STEPS: usize = 250;

/// Embedding directions projected out for the subspace residual (the
/// issue's `--k 8`).
pub const SUBSPACE_K: usize = 8;

/// What to reproduce and where.
#[derive(Clone, Debug)]
pub struct ReproOptions {
    /// Corpus file; the shipped Shakespeare when `None`.
    pub corpus: Option<PathBuf>,
    /// Use only the first this many bytes of the corpus (tests, quick looks).
    pub corpus_bytes: Option<usize>,
    pub preset: String,
    pub out: PathBuf,
    /// Training steps per run (default: the preset's).
    pub steps: Option<usize>,
    pub seed: u64,
    /// Also train from the mimetic init.
    pub mimetic: bool,
    /// Held-out tokens used to score every variant (the same slice for all).
    pub eval_tokens: usize,
    /// Needle-test fractions of residual entries added back.
    pub needle_fracs: Vec<f64>,
    /// Lossy rates (bits per parameter) at which residuals are packed.
    pub rates: Vec<f64>,
}

impl ReproOptions {
    /// The defaults of `resid repro`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        ReproOptions {
            corpus: None,
            corpus_bytes: None,
            preset: "tiny".into(),
            out: out.into(),
            steps: None,
            seed: 0,
            mimetic: false,
            eval_tokens: 32_768,
            needle_fracs: vec![0.001, 0.01, 0.05, 0.10, 0.25],
            rates: vec![2.0, 1.0, 0.5, 0.25],
        }
    }
}

/// What the caller is told as the run goes.
#[derive(Clone, Debug)]
pub enum ReproEvent {
    /// A step begins (`cached`: its result was found and is reused).
    Step { name: String, cached: bool },
    /// A training step of run `run`.
    Train {
        run: String,
        progress: resid_lm::train::Progress,
    },
    /// A line worth showing.
    Note(String),
}

/// Held-out losses in nats per byte.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Baselines {
    pub uniform: f64,
    pub unigram: f64,
    pub bigram: f64,
    pub heldout_bytes: usize,
    pub heldout_tokens: usize,
}

/// One training run: where it started and ended, and its losses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub init: String,
    pub dir: PathBuf,
    pub start_loss: f64,
    pub trained_loss: f64,
    pub steps: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// (step, held-out nats/byte) along the way.
    pub curve: Vec<(usize, f64)>,
}

/// One needle-test row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NeedleRow {
    pub frac: f64,
    pub top_loss: f64,
    pub top_gain: f64,
    /// Bits per parameter of storing the top entries (mask entropy + fp16 values).
    pub top_bits_per_param: f64,
    pub random_loss: f64,
    pub random_gain: f64,
}

/// Everything `resid repro` measured; `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReproReport {
    pub preset: String,
    pub config: GptConfig,
    pub seed: u64,
    pub n_params: usize,
    pub baselines: Baselines,
    pub runs: Vec<RunResult>,
    /// Per run name: the needle test.
    pub needle: BTreeMap<String, Vec<NeedleRow>>,
    /// Per run name: `resid analyze` of trained minus start.
    pub analysis: BTreeMap<String, resid::analysis::Report>,
    /// Per run name: each residual file's rate and the loss of base + file.
    pub codec: BTreeMap<String, Vec<CodecRow>>,
}

/// One residual file of a run, unpacked and scored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CodecRow {
    /// "lossless" or "X bits/param".
    pub mode: String,
    pub requested_bits_per_param: Option<f64>,
    pub bits_per_param: f64,
    pub file_bytes: u64,
    pub residual_rel_error: f64,
    pub loss: f64,
    pub gain: f64,
}

/// Runs (or resumes) the reproduction.
pub fn run(opts: &ReproOptions, mut on: impl FnMut(ReproEvent)) -> Result<ReproReport> {
    let out = &opts.out;
    std::fs::create_dir_all(out)
        .map_err(|e| ReproError::at("setup", format!("{}: {e}", out.display())))?;
    let mut cfg = GptConfig::preset(&opts.preset).ok_or_else(|| {
        ReproError::at(
            "setup",
            format!("unknown preset '{}' (tiny or paper)", opts.preset),
        )
    })?;
    match opts.steps {
        Some(s) => cfg.steps = s,
        // Two tiny runs of 250 steps (1M tokens, about one pass over the
        // training split, each) keep the whole reproduction under 20
        // minutes on 2 cores (BENCHMARKS.md, "resid repro").
        None if cfg.preset == "tiny" => cfg.steps = TINY_REPRO_STEPS,
        None => {}
    }

    // Corpus, split and tokens.
    let mut corpus = resid_corpus::corpus::load(opts.corpus.as_deref())
        .map_err(|e| ReproError::at("corpus", e))?;
    if let Some(n) = opts.corpus_bytes {
        corpus.truncate(n);
    }
    let (train_text, heldout_text) = resid_corpus::corpus::split(&corpus);
    let tok = tokenizer(out, &cfg, train_text)?;
    cfg.vocab_size = tok.vocab_size();
    let train_tokens = tok.encode(train_text);
    let heldout_tokens = tok.encode(heldout_text);
    let bytes_per_token = heldout_text.len() as f64 / heldout_tokens.len().max(1) as f64;

    on(ReproEvent::Step {
        name: "baselines".into(),
        cached: false,
    });
    let (baselines, _) = cached(out, "baselines", || {
        let v = cfg.vocab_size;
        let uni = counts::unigram_loss(&train_tokens, &heldout_tokens, v, 1.0);
        let bi = counts::bigram_loss(&train_tokens, &heldout_tokens, v, 0.5);
        Ok(Baselines {
            uniform: (v as f64).ln() / bytes_per_token,
            unigram: uni.per_byte(heldout_text.len()),
            bigram: bi.per_byte(heldout_text.len()),
            heldout_bytes: heldout_text.len(),
            heldout_tokens: heldout_tokens.len(),
        })
    })?;

    // The corpus-derived base.
    let base_dir = out.join("base");
    let (_, was) = cached(out, "base", || {
        let base = resid_corpus::base::derive_base(&train_tokens, &cfg, opts.seed);
        resid_corpus::base::write_base(&base_dir, &base, &cfg, &tok)
            .map_err(|e| ReproError::at("base", e))?;
        Ok(base_dir.clone())
    })?;
    on(ReproEvent::Step {
        name: "base".into(),
        cached: was,
    });

    // Training runs: corpus base, random control, optionally mimetic.
    let mut inits = vec![
        ("csb", InitKind::Path(base_dir.clone())),
        ("random", InitKind::Random),
    ];
    if opts.mimetic {
        inits.push(("mimetic", InitKind::Mimetic));
    }
    let to_train = inits
        .iter()
        .filter(|(n, _)| !out.join(format!("train-{n}.json")).exists())
        .count();
    if to_train > 0 {
        on(ReproEvent::Note(estimate(
            opts,
            &cfg,
            to_train,
            inits.len(),
        )?));
    }
    let mut runs = Vec::new();
    for (name, init) in inits {
        let step = format!("train-{name}");
        let dir = out.join(&step);
        let mut fresh = false;
        let (r, _) = cached(out, &step, || {
            fresh = true;
            on(ReproEvent::Step {
                name: step.clone(),
                cached: false,
            });
            let mut o = TrainOptions::new(cfg.clone(), &dir);
            o.init = init.clone();
            o.seed = opts.seed;
            o.eval_tokens = (opts.eval_tokens / 2).max(1);
            o.final_eval_tokens = opts.eval_tokens;
            o.eval_every = (cfg.steps / 10).max(1);
            if dir.join("model.json").exists() || dir.join("step-0").exists() {
                // An interrupted run: resume from its latest checkpoint if any.
                if let Some(last) = latest_checkpoint(&dir) {
                    o.resume = Some(last);
                }
            }
            o.save_every = (cfg.steps / 4).max(1);
            let s = resid_lm::train(&o, &train_tokens, &heldout_tokens, bytes_per_token, |p| {
                on(ReproEvent::Train {
                    run: name.to_string(),
                    progress: p.clone(),
                })
            })
            .map_err(|e| ReproError::at(&step, e))?;
            Ok(RunResult {
                name: name.to_string(),
                init: init.to_string(),
                dir: dir.clone(),
                start_loss: s
                    .initial_heldout
                    .map(|e| e.nats_per_byte)
                    .unwrap_or(f64::NAN),
                trained_loss: s.final_heldout.nats_per_byte,
                steps: s.steps,
                seconds: s.seconds,
                tokens_per_s: s.tokens_per_s,
                curve: s
                    .curve
                    .iter()
                    .filter_map(|c| c.heldout_nats_per_byte.map(|l| (c.step, l)))
                    .collect(),
            })
        })?;
        if !fresh {
            on(ReproEvent::Step {
                name: step.clone(),
                cached: true,
            });
        }
        runs.push(r);
    }

    // Analysis of each residual: trained minus its own start point.
    let mut analysis = BTreeMap::new();
    for r in &runs {
        let step = format!("analysis-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let (v, _) = cached(out, &step, || {
            let open =
                |p: PathBuf| resid::io::Checkpoint::open(&p).map_err(|e| ReproError::at(&step, e));
            let start = open(r.dir.join("step-0").join("model.safetensors"))?;
            let trained = open(r.dir.join("model.safetensors"))?;
            let o = resid::analysis::Options {
                seed: opts.seed,
                ..Default::default()
            };
            let rep = resid::analysis::analyze(&start, &trained, &o, &|_| {})
                .map_err(|e| ReproError::at(&step, e))?;
            // The residual's own report (figures from the tensors), beside
            // the reproduction's.
            let figs = resid::report::analysis::collect_figure_data(
                &start,
                &trained,
                &rep,
                &figure_options(opts),
            );
            analysis_report(out, &step, &rep, figs)
        })?;
        analysis.insert(r.name.clone(), v);
    }

    // The subspace residual of the study's predecessor: the CSB-trained
    // weights with the top-8 directions of their own token embedding
    // projected out (base = 0).
    if let Some(r) = runs.iter().find(|r| r.name == "csb") {
        let step = "analysis-csb-subspace".to_string();
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let (v, _) = cached(out, &step, || {
            let trained = resid::io::Checkpoint::open(&r.dir.join("model.safetensors"))
                .map_err(|e| ReproError::at(&step, e))?;
            let o = resid::analysis::Options {
                seed: opts.seed,
                ..Default::default()
            };
            let sub = resid::analysis::Subspace::from_checkpoint(&trained, &o.layout, SUBSPACE_K)
                .map_err(|e| ReproError::at(&step, e))?;
            let rep = resid::analysis::analyze_subspace(&trained, &sub, &o, &|_| {})
                .map_err(|e| ReproError::at(&step, e))?;
            let figs = resid::report::analysis::collect_subspace_figure_data(
                &trained,
                &sub,
                &rep,
                &figure_options(opts),
            );
            analysis_report(out, &step, &rep, figs)
        })?;
        analysis.insert("csb-subspace".to_string(), v);
    }

    // Start and trained losses on the scored slice, once per run: the codec
    // rows and the needle test both divide by them.
    let mut ends: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in &runs {
        let step = format!("ends-{}", r.name);
        let (v, _) = cached(out, &step, || {
            let score = |dir: &Path| {
                eval(
                    &cfg,
                    &load(dir, &cfg, &step)?,
                    &heldout_tokens,
                    bytes_per_token,
                    opts.eval_tokens,
                    &step,
                )
            };
            Ok((score(&r.dir.join("step-0"))?, score(&r.dir)?))
        })?;
        ends.insert(r.name.clone(), v);
    }

    // Residual files: lossless and at each rate; base + file scored.
    let mut codec = BTreeMap::new();
    let files = out.join("files");
    std::fs::create_dir_all(&files)
        .map_err(|e| ReproError::at("codec", format!("{}: {e}", files.display())))?;
    for r in &runs {
        let step = format!("codec-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let (rows, _) = cached(out, &step, || {
            use resid::codec::pack::{Mode, PackOptions};
            let open =
                |p: PathBuf| resid::io::Checkpoint::open(&p).map_err(|e| ReproError::at(&step, e));
            let start = open(r.dir.join("step-0").join("model.safetensors"))?;
            let trained = open(r.dir.join("model.safetensors"))?;
            // Scored on the same held-out slice as every variant.
            let (l0, l1) = ends[&r.name];
            let mut modes = vec![(String::from("lossless"), Mode::Lossless, None)];
            for &b in &opts.rates {
                modes.push((format!("{b} bits/param"), Mode::BitsPerParam(b), Some(b)));
            }
            let mut rows = Vec::new();
            for (label, mode, req) in modes {
                let tag = label.replace([' ', '/'], "-");
                let file = files.join(format!("{}-{tag}.resid", r.name));
                let po = PackOptions {
                    mode,
                    seed: opts.seed,
                    ..Default::default()
                };
                let rep = resid::codec::pack::pack(&start, &trained, &file, &po)
                    .map_err(|e| ReproError::at(&step, e))?;
                let rebuilt = files.join(format!("{}-{tag}.safetensors", r.name));
                resid::codec::pack::unpack(&start, &file, &rebuilt)
                    .map_err(|e| ReproError::at(&step, e))?;
                let w = load(&rebuilt, &cfg, &step)?;
                let _ = std::fs::remove_file(&rebuilt);
                let l = eval(
                    &cfg,
                    &w,
                    &heldout_tokens,
                    bytes_per_token,
                    opts.eval_tokens,
                    &step,
                )?;
                on(ReproEvent::Note(format!(
                    "{}: {label}: {:.3} bits/param, held-out {l:.3} nats/byte",
                    r.name, rep.bits_per_param
                )));
                rows.push(CodecRow {
                    mode: label,
                    requested_bits_per_param: req,
                    bits_per_param: rep.bits_per_param,
                    file_bytes: rep.file_bytes,
                    residual_rel_error: rep.residual_rel_error,
                    loss: l,
                    gain: needle::gain_recovered(l0, l, l1),
                });
            }
            Ok(rows)
        })?;
        codec.insert(r.name.clone(), rows);
    }

    // The needle test on each run's residual.
    let mut needle_rows = BTreeMap::new();
    for r in &runs {
        let step = format!("needle-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let (rows, _) = cached(out, &step, || {
            let start = load(&r.dir.join("step-0"), &cfg, &step)?;
            let trained = load(&r.dir, &cfg, &step)?;
            let eval = |w: &Named| {
                eval(
                    &cfg,
                    w,
                    &heldout_tokens,
                    bytes_per_token,
                    opts.eval_tokens,
                    &step,
                )
            };
            let (l0, l1) = ends[&r.name];
            let mut rows = Vec::new();
            for &p in &opts.needle_fracs {
                let (top, _) = needle::top_fraction(&start, &trained, p);
                let lt = eval(&top)?;
                let rnd = needle::random_fraction(&start, &trained, p, opts.seed ^ 0x5EED);
                let lr = eval(&rnd)?;
                on(ReproEvent::Note(format!(
                    "{}: p = {:.1}%: top {:.3}, random {:.3} nats/byte",
                    r.name,
                    p * 100.0,
                    lt,
                    lr
                )));
                rows.push(NeedleRow {
                    frac: p,
                    top_loss: lt,
                    top_gain: needle::gain_recovered(l0, lt, l1),
                    top_bits_per_param: needle::top_bits_per_param(p, 16.0),
                    random_loss: lr,
                    random_gain: needle::gain_recovered(l0, lr, l1),
                });
            }
            Ok(rows)
        })?;
        needle_rows.insert(r.name.clone(), rows);
    }

    let report = ReproReport {
        preset: cfg.preset.clone(),
        n_params: cfg.n_params(),
        config: cfg,
        seed: opts.seed,
        baselines,
        runs,
        needle: needle_rows,
        analysis,
        codec,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| ReproError::at("report", e))?;
    resid::io::atomic::write_atomic(&out.join("report.json"), text.as_bytes())
        .map_err(|e| ReproError::at("report", e))?;
    crate::report::write(out, &report)?;
    Ok(report)
}

/// Seconds the steps other than training and scoring took in the default
/// tiny run (corpus base, analyses, residual files; BENCHMARKS.md).
const OTHER_STEPS_S: f64 = 60.0;

/// A line saying how long the run will take: this model's training speed
/// measured now (three steps), times the tokens to train and to score.
fn estimate(opts: &ReproOptions, cfg: &GptConfig, to_train: usize, runs: usize) -> Result<String> {
    let kind = resid_lm::EngineKind::default();
    let tps = resid_lm::engine::measure_tokens_per_s(kind, cfg, 2)
        .map_err(|e| ReproError::at("estimate", e))?;
    let per_run = (cfg.steps * cfg.batch_size * cfg.context) as f64;
    let train_s = to_train as f64 * per_run / tps;
    // Held-out tokens scored per run: eleven evals of half the slice while
    // training, then the ends, every residual file and both needle variants.
    let evals =
        5.5 + 1.0 + 2.0 + (1 + opts.rates.len()) as f64 + 2.0 * opts.needle_fracs.len() as f64;
    // A forward pass costs about a third of a training step.
    let score_s = runs as f64 * evals * opts.eval_tokens as f64 / (3.0 * tps);
    let total = train_s + score_s + OTHER_STEPS_S;
    Ok(format!(
        "about {:.1} min: {to_train} training run(s) of {} steps at {:.0} tokens/s (measured now) {:.0} s, scoring {:.0} s, base and analyses ~{:.0} s",
        total / 60.0,
        cfg.steps,
        tps,
        train_s,
        score_s,
        OTHER_STEPS_S
    ))
}

/// The tokenizer for the preset, trained once and kept in `out/resid-tokenizer.json`
/// (an older run's `out/tokenizer.json` is reused).
/// Figure options of the analysis reports the reproduction writes.
fn figure_options(opts: &ReproOptions) -> resid::report::analysis::FigureOptions {
    resid::report::analysis::FigureOptions {
        seed: opts.seed,
        ..Default::default()
    }
}

/// Writes one residual's analysis report into `out/step` and returns it
/// for the reproduction's own.
fn analysis_report(
    out: &Path,
    step: &str,
    rep: &resid::analysis::Report,
    figs: std::result::Result<
        resid::report::analysis::FigureData,
        resid::report::document::ReportError,
    >,
) -> Result<resid::analysis::Report> {
    let figs = figs.map_err(|e| ReproError::at(step, e))?;
    resid::report::analysis::write_analysis_report(&out.join(step), rep, Some(&figs))
        .map_err(|e| ReproError::at(step, e))?;
    Ok(rep.clone())
}

fn tokenizer(out: &Path, cfg: &GptConfig, train_text: &[u8]) -> Result<Tokenizer> {
    if let Some(path) = resid_corpus::tokenizer::find_in(out) {
        return Tokenizer::load(&path).map_err(|e| ReproError::at("tokenizer", e));
    }
    let path = out.join(resid_corpus::tokenizer::FILE_NAME);
    let t = Tokenizer::for_config(cfg, train_text);
    t.save(&path).map_err(|e| ReproError::at("tokenizer", e))?;
    Ok(t)
}

/// The most advanced checkpoint folder of an interrupted training run.
fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            if n > 0
                && e.path().join("optimizer.safetensors").exists()
                && best.as_ref().is_none_or(|b| n > b.0)
            {
                best = Some((n, e.path()));
            }
        }
    }
    best.map(|b| b.1)
}

fn load(dir: &Path, cfg: &GptConfig, step: &str) -> Result<Named> {
    resid_lm::checkpoint::load_weights_for(dir, cfg).map_err(|e| ReproError::at(step, e))
}

fn eval(
    cfg: &GptConfig,
    w: &Named,
    tokens: &[u32],
    bpt: f64,
    max_tokens: usize,
    step: &str,
) -> Result<f64> {
    let map: BTreeMap<String, Vec<f32>> =
        w.iter().map(|(n, _, d)| (n.clone(), d.clone())).collect();
    resid_lm::eval_weights(cfg, &map, tokens, bpt, max_tokens)
        .map(|e| e.nats_per_byte)
        .map_err(|e| ReproError::at(step, e))
}
