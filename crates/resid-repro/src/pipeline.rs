//! The reproduction's steps in order; each result cached under `out/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use resid_corpus::config::GptConfig;
use resid_corpus::corpus::CorpusError;
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
    /// Also the fine-tune regime: the corpus-base model fine-tuned on a
    /// second corpus at a tenth of the learning rate and tokens.
    pub finetune: bool,
    /// The fine-tune corpus; the shipped King James New Testament when `None`.
    pub finetune_corpus: Option<PathBuf>,
    /// Shares of the gain for which the smallest residual file is searched
    /// (empty: no search).
    pub budget_targets: Vec<f64>,
    /// Also the long runs: layer-wise and layer-parallel training.
    pub full: bool,
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
            rates: vec![2.0, 1.0, 0.5, 0.25, 0.1],
            finetune: true,
            finetune_corpus: None,
            budget_targets: vec![0.90, 0.95, 0.99],
            full: false,
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
    /// Random p% with DARE's 1/p rescale.
    pub random_loss: f64,
    pub random_gain: f64,
    /// The same random entries added back as they are.
    pub random_plain_loss: f64,
    pub random_plain_gain: f64,
}

/// Everything `resid repro` measured; `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReproReport {
    pub preset: String,
    /// The pretraining corpus: its path, or the shipped one's name.
    #[serde(default)]
    pub corpus: String,
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
    /// The fine-tune's residual coded by each published peer at the bytes
    /// of resid's file at each rate, scored the same way.
    #[serde(default)]
    pub peers: BTreeMap<String, Vec<crate::peers::PeerRow>>,
    /// Per run name: the gain of each layer's residual alone and left out.
    pub additivity: BTreeMap<String, crate::additivity::Additivity>,
    /// Per run name: the information budget.
    pub budget: BTreeMap<String, Budget>,
    /// The fine-tune regime's before/after on both corpora.
    pub finetune: Option<Finetune>,
    /// Layer-wise and layer-parallel training (`full` runs only).
    pub layers: Option<LayerTraining>,
    /// Amplitude-only fine-tunes (with the fine-tune regime).
    pub amplitude: Vec<AmplitudeRun>,
}

/// One amplitude-only fine-tune: the pretrained corpus-base model's
/// per-row and per-column scales (plus norms and biases) trained on the
/// second corpus with the fine-tune's steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AmplitudeRun {
    pub lr: f64,
    pub steps: usize,
    pub trainable: usize,
    pub params: usize,
    /// Held-out nats/byte on the second and first corpus after it.
    pub second_after: f64,
    pub first_after: f64,
    /// Share of the full fine-tune's gain on the second corpus.
    pub gain_vs_full: f64,
}

/// How many bits one residual takes: its entropy at a storage step, and the
/// smallest residual files that rebuild 90/95/99% of its gain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Budget {
    pub entropy: crate::budget::EntropyBudget,
    pub smallest: Vec<crate::budget::Smallest>,
    /// Every file the search made, by rate.
    pub probes: Vec<crate::budget::Probe>,
}

/// The fine-tune regime: the corpus-base model after pretraining, then
/// fine-tuned on a second corpus; held-out nats/byte on both.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finetune {
    pub corpus: String,
    pub steps: usize,
    pub lr: f64,
    pub tokens: usize,
    pub pretrain_steps: usize,
    pub pretrain_lr: f64,
    /// The first corpus, before and after fine-tuning (forgetting).
    pub first_before: f64,
    pub first_after: f64,
    /// The second corpus, before and after (the gain on the new domain).
    pub second_before: f64,
    pub second_after: f64,
    /// The bigram count model on the second corpus, for scale.
    pub second_bigram: f64,
    pub second_heldout_bytes: usize,
}

/// Layer independence tested by training: each run's held-out loss on the
/// same slice, all from the corpus base with the same step budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerTraining {
    pub start: f64,
    /// Every parameter trained together (the `csb` run).
    pub joint: f64,
    /// Only the blocks trained, together (embeddings and head frozen as in
    /// the layer runs): the fair control.
    pub joint_blocks: f64,
    /// One block at a time, others frozen, steps split evenly.
    pub layer_wise: f64,
    /// Each block trained alone from the start (all steps each), then the
    /// trained blocks put together.
    pub layer_parallel: f64,
    /// Each block's own run, scored alone.
    pub parallel_alone: Vec<f64>,
    pub steps: usize,
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
    let first = Data::new(&tok, train_text, heldout_text);
    first.check_heldout(
        &cfg,
        "corpus",
        &corpus_label(opts.corpus.as_deref(), SHIPPED),
    )?;
    // The fine-tune corpus, tokenized with the pretraining vocabulary.
    let second = if opts.finetune {
        let mut c = match &opts.finetune_corpus {
            Some(p) => resid_corpus::corpus::load(Some(p))
                .map_err(|e| ReproError::at("finetune corpus", e))?,
            None => resid_corpus::corpus::kjv_new_testament(),
        };
        if let Some(n) = opts.corpus_bytes {
            c.truncate(n);
        }
        let (a, b) = resid_corpus::corpus::split(&c);
        let d = Data::new(&tok, a, b);
        let label = corpus_label(opts.finetune_corpus.as_deref(), SHIPPED_FINETUNE);
        d.check_heldout(&cfg, "finetune corpus", &label)?;
        Some(d)
    } else {
        None
    };

    on(ReproEvent::Step {
        name: "baselines".into(),
        cached: false,
    });
    let (baselines, _) = cached(out, "baselines", || Ok(first.baselines(cfg.vocab_size)))?;

    // The corpus-derived base.
    let base_dir = out.join("base");
    let (_, was) = cached(out, "base", || {
        let base = resid_corpus::base::derive_base(&first.train, &cfg, opts.seed);
        resid_corpus::base::write_base(&base_dir, &base, &cfg, &tok)
            .map_err(|e| ReproError::at("base", e))?;
        Ok(base_dir.clone())
    })?;
    on(ReproEvent::Step {
        name: "base".into(),
        cached: was,
    });

    // Training runs: corpus base, random control, optionally mimetic, then
    // the fine-tune of the corpus-base model.
    let mut plan: Vec<Planned> = vec![
        Planned::new("csb", InitKind::Path(base_dir.clone()), cfg.clone(), false),
        Planned::new("random", InitKind::Random, cfg.clone(), false),
    ];
    if opts.mimetic {
        plan.push(Planned::new(
            "mimetic",
            InitKind::Mimetic,
            cfg.clone(),
            false,
        ));
    }
    if second.is_some() {
        plan.push(Planned::new(
            FINETUNE,
            InitKind::Path(out.join("train-csb")),
            finetune_config(&cfg),
            true,
        ));
    }
    let layer_plan = if opts.full {
        layer_runs(&cfg, &base_dir, out)
    } else {
        Vec::new()
    };
    let to_train: Vec<&Planned> = plan
        .iter()
        .chain(&layer_plan)
        .filter(|p| !out.join(format!("train-{}.json", p.name)).exists())
        .collect();
    if !to_train.is_empty() {
        on(ReproEvent::Note(estimate(
            opts,
            &cfg,
            &to_train,
            plan.len(),
        )?));
    }
    let data_of = |p: &Planned| {
        if p.second {
            second.as_ref().expect("planned with a second corpus")
        } else {
            &first
        }
    };
    let mut runs = Vec::new();
    for p in &plan {
        runs.push(train_run(out, p, opts, data_of(p), &mut on)?);
    }
    let data_for = |name: &str| {
        if name == FINETUNE {
            second.as_ref().expect("a fine-tune run has its corpus")
        } else {
            &first
        }
    };

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
            // The residual's own report, beside the reproduction's: its
            // figures are gathered in the analysis pass (one read).
            let (rep, figs) = resid::analysis::analyze_with_figures(
                &start,
                &trained,
                &o,
                &resid::analysis::FigureOptions::default(),
                &|_| {},
            )
            .map_err(|e| ReproError::at(&step, e))?;
            analysis_report(out, &step, &rep, &figs)
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
            let (rep, figs) = resid::analysis::analyze_subspace_with_figures(
                &trained,
                &sub,
                &o,
                &resid::analysis::FigureOptions::default(),
                &|_| {},
            )
            .map_err(|e| ReproError::at(&step, e))?;
            analysis_report(out, &step, &rep, &figs)
        })?;
        analysis.insert("csb-subspace".to_string(), v);
    }

    // Start and trained losses on the scored slice, once per run: the codec
    // rows and the needle test both divide by them.
    let mut ends: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in &runs {
        let step = format!("ends-{}", r.name);
        let d = data_for(&r.name);
        let (v, _) = cached(out, &step, || {
            let score =
                |dir: &Path| d.eval(&cfg, &load(dir, &cfg, &step)?, opts.eval_tokens, &step);
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
        let d = data_for(&r.name);
        let (rows, _) = cached(out, &step, || {
            use resid::codec::pack::Mode;
            let (l0, l1) = ends[&r.name];
            let mut modes = vec![(String::from("lossless"), Mode::Lossless, None)];
            for &b in &opts.rates {
                modes.push((format!("{b} bits/param"), Mode::BitsPerParam(b), Some(b)));
            }
            let mut rows = Vec::new();
            for (label, mode, req) in modes {
                let tag = label.replace([' ', '/'], "-");
                let file = files.join(format!("{}-{tag}.resid", r.name));
                let (rep, l) = pack_and_score(r, &cfg, d, opts, mode, &file, &step)?;
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

    // The published peers at resid's bytes, on the fine-tune (the residual
    // users ship); scored like resid's files.
    let mut peers = BTreeMap::new();
    if let Some(r) = runs.iter().find(|r| r.name == FINETUNE) {
        let step = format!("peers-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let d = data_for(&r.name);
        let (rows, _) = cached(out, &step, || {
            let start = load(&r.dir.join("step-0"), &cfg, &step)?;
            let trained = load(&r.dir, &cfg, &step)?;
            let (l0, l1) = ends[&r.name];
            crate::peers::score(
                &start,
                &trained,
                &codec[&r.name],
                opts.seed,
                |w| d.eval(&cfg, w, opts.eval_tokens, &step),
                |l| needle::gain_recovered(l0, l, l1),
            )
        })?;
        peers.insert(r.name.clone(), rows);
    }

    // The information budget: entropy at the storage step, and the
    // smallest file that rebuilds each share of the gain.
    let mut budget = BTreeMap::new();
    for r in &runs {
        let step = format!("budget-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let d = data_for(&r.name);
        let (v, _) = cached(out, &step, || {
            use resid::codec::pack::Mode;
            let (l0, l1) = ends[&r.name];
            let file = files.join(format!("{}-search.resid", r.name));
            let (smallest, probes) = crate::budget::smallest_files(
                &opts.budget_targets,
                BUDGET_RATES.0,
                BUDGET_RATES.1,
                BUDGET_TOLERANCE,
                |rate| {
                    let (rep, l) =
                        pack_and_score(r, &cfg, d, opts, Mode::BitsPerParam(rate), &file, &step)?;
                    Ok(crate::budget::Probe {
                        requested: rate,
                        bits_per_param: rep.bits_per_param,
                        file_bytes: rep.file_bytes,
                        gain: needle::gain_recovered(l0, l, l1),
                    })
                },
            )?;
            let _ = std::fs::remove_file(&file);
            Ok(Budget {
                entropy: crate::budget::EntropyBudget::of(&analysis[&r.name]),
                smallest,
                probes,
            })
        })?;
        budget.insert(r.name.clone(), v);
    }

    // The needle test on each run's residual.
    let mut needle_rows = BTreeMap::new();
    for r in &runs {
        let step = format!("needle-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let d = data_for(&r.name);
        let (rows, _) = cached(out, &step, || {
            let start = load(&r.dir.join("step-0"), &cfg, &step)?;
            let trained = load(&r.dir, &cfg, &step)?;
            let eval = |w: &Named| d.eval(&cfg, w, opts.eval_tokens, &step);
            let (l0, l1) = ends[&r.name];
            let mut rows = Vec::new();
            for &p in &opts.needle_fracs {
                let (top, _) = needle::top_fraction(&start, &trained, p);
                let lt = eval(&top)?;
                let random = |rescale| {
                    needle::random_fraction(&start, &trained, p, opts.seed ^ 0x5EED, rescale)
                };
                let lr = eval(&random(needle::Rescale::Dare))?;
                let lp = eval(&random(needle::Rescale::None))?;
                on(ReproEvent::Note(format!(
                    "{}: p = {:.1}%: top {lt:.3}, random {lp:.3}, random rescaled {lr:.3} nats/byte",
                    r.name,
                    p * 100.0,
                )));
                rows.push(NeedleRow {
                    frac: p,
                    top_loss: lt,
                    top_gain: needle::gain_recovered(l0, lt, l1),
                    top_bits_per_param: needle::top_bits_per_param(p, 16.0),
                    random_loss: lr,
                    random_gain: needle::gain_recovered(l0, lr, l1),
                    random_plain_loss: lp,
                    random_plain_gain: needle::gain_recovered(l0, lp, l1),
                });
            }
            Ok(rows)
        })?;
        needle_rows.insert(r.name.clone(), rows);
    }

    // Additivity: each layer's residual alone, and the whole without it.
    let mut additivity = BTreeMap::new();
    for r in &runs {
        let step = format!("additivity-{}", r.name);
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let d = data_for(&r.name);
        let (v, _) = cached(out, &step, || {
            use crate::additivity::{add_back, part_of, Additivity, PartRow};
            let start = load(&r.dir.join("step-0"), &cfg, &step)?;
            let trained = load(&r.dir, &cfg, &step)?;
            let (l0, l1) = ends[&r.name];
            let gain = |w: &Named| -> Result<f64> {
                Ok(needle::gain_recovered(
                    l0,
                    d.eval(&cfg, w, opts.eval_tokens, &step)?,
                    l1,
                ))
            };
            let mut rows = Vec::new();
            for (part, params) in crate::additivity::parts(&start) {
                let alone = gain(&add_back(&start, &trained, |n| part_of(n) == part))?;
                let without = gain(&add_back(&start, &trained, |n| part_of(n) != part))?;
                rows.push(PartRow {
                    part,
                    params,
                    gain_alone: alone,
                    gain_without: without,
                });
            }
            Ok(Additivity::new(rows))
        })?;
        additivity.insert(r.name.clone(), v);
    }

    // The fine-tune regime's before/after on both corpora.
    let finetune = match (&second, runs.iter().find(|r| r.name == FINETUNE)) {
        (Some(d2), Some(ft)) => {
            let (v, _) = cached(out, "finetune", || {
                let step = "finetune";
                let after = load(&ft.dir, &cfg, step)?;
                let (second_before, second_after) = ends[FINETUNE];
                let fcfg = finetune_config(&cfg);
                Ok(Finetune {
                    corpus: corpus_label(opts.finetune_corpus.as_deref(), SHIPPED_FINETUNE),
                    steps: fcfg.steps,
                    lr: fcfg.lr,
                    tokens: fcfg.steps * fcfg.batch_size * fcfg.context,
                    pretrain_steps: cfg.steps,
                    pretrain_lr: cfg.lr,
                    first_before: ends["csb"].1,
                    first_after: first.eval(&cfg, &after, opts.eval_tokens, step)?,
                    second_before,
                    second_after,
                    second_bigram: d2.baselines(cfg.vocab_size).bigram,
                    second_heldout_bytes: d2.heldout_bytes,
                })
            })?;
            Some(v)
        }
        _ => None,
    };

    // Layer-wise and layer-parallel training (the long runs).
    let layers = if opts.full {
        let mut trained = BTreeMap::new();
        for p in &layer_plan {
            let r = train_run(out, p, opts, &first, &mut on)?;
            trained.insert(p.name.clone(), r);
        }
        let (v, _) = cached(out, "layers", || {
            let step = "layers";
            let score = |w: &Named| first.eval(&cfg, w, opts.eval_tokens, step);
            let start = load(&base_dir, &cfg, step)?;
            let mut combined = start.clone();
            let mut alone = Vec::new();
            for l in 0..cfg.n_layer {
                let w = load(&trained[&format!("parallel-{l}")].dir, &cfg, step)?;
                alone.push(score(&w)?);
                let part = format!("blocks.{l}");
                combined = crate::additivity::add_back(&combined, &w, |n| {
                    crate::additivity::part_of(n) == part
                });
            }
            let last = &trained[&format!("layerwise-{}", cfg.n_layer - 1)];
            Ok(LayerTraining {
                start: ends["csb"].0,
                joint: ends["csb"].1,
                joint_blocks: score(&load(&trained["joint-blocks"].dir, &cfg, step)?)?,
                layer_wise: score(&load(&last.dir, &cfg, step)?)?,
                layer_parallel: score(&combined)?,
                parallel_alone: alone,
                steps: cfg.steps,
            })
        })?;
        Some(v)
    } else {
        None
    };

    // Amplitude-only fine-tunes: at the fine-tune's learning rate and at
    // pretraining's (a scale moves by lr per step, a tenth of which may
    // not be the fairest budget for it).
    let mut amplitude = Vec::new();
    if let (Some(d2), Some(f)) = (&second, &finetune) {
        let fcfg = finetune_config(&cfg);
        for lr in [fcfg.lr, cfg.lr] {
            let step = format!("amplitude-lr{lr}");
            on(ReproEvent::Step {
                name: step.clone(),
                cached: false,
            });
            let (v, _) = cached(out, &step, || {
                let mut c = fcfg.clone();
                c.lr = lr;
                let start = load(&out.join("train-csb"), &cfg, &step)?;
                let (w, s) =
                    resid_lm::amplitude::train_amplitudes(&c, &start, &d2.train, opts.seed)
                        .map_err(|e| ReproError::at(&step, e))?;
                let second_after = d2.eval(&cfg, &w, opts.eval_tokens, &step)?;
                Ok(AmplitudeRun {
                    lr,
                    steps: s.steps,
                    trainable: s.trainable,
                    params: s.params,
                    second_after,
                    first_after: first.eval(&cfg, &w, opts.eval_tokens, &step)?,
                    gain_vs_full: needle::gain_recovered(
                        f.second_before,
                        second_after,
                        f.second_after,
                    ),
                })
            })?;
            amplitude.push(v);
        }
    }

    let report = ReproReport {
        preset: cfg.preset.clone(),
        corpus: corpus_label(opts.corpus.as_deref(), SHIPPED),
        n_params: cfg.n_params(),
        config: cfg,
        seed: opts.seed,
        baselines,
        runs,
        needle: needle_rows,
        analysis,
        codec,
        peers,
        additivity,
        budget,
        finetune,
        layers,
        amplitude,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| ReproError::at("report", e))?;
    resid::io::atomic::write_atomic(&out.join("report.json"), text.as_bytes())
        .map_err(|e| ReproError::at("report", e))?;
    crate::report::write(out, &report)?;
    Ok(report)
}

/// The fine-tune run's name.
pub const FINETUNE: &str = "finetune";

/// Rates (bits per parameter) between which the smallest file is searched,
/// and the bracket's ratio at which the search stops.
const BUDGET_RATES: (f64, f64) = (0.25, 8.0);
const BUDGET_TOLERANCE: f64 = 0.1;

/// A fine-tune's budget: a tenth of pretraining's peak learning rate and of
/// its tokens (the ceiling for a typical fine-tune).
pub fn finetune_config(cfg: &GptConfig) -> GptConfig {
    let mut c = cfg.clone();
    c.steps = (cfg.steps / 10).max(1);
    c.lr = cfg.lr / 10.0;
    c.warmup_steps = (c.steps / 10).max(1);
    c
}

/// A corpus split and tokenized.
struct Data {
    train: Vec<u32>,
    heldout: Vec<u32>,
    bytes_per_token: f64,
    heldout_bytes: usize,
}

/// Names of the shipped corpora, as the report prints them.
const SHIPPED: &str = "Shakespeare, complete works (shipped)";
const SHIPPED_FINETUNE: &str = "King James Version, New Testament (shipped)";

/// A corpus as the report and its errors name it: its path, or the shipped
/// one's name.
fn corpus_label(path: Option<&Path>, shipped: &str) -> String {
    path.map_or_else(|| shipped.to_string(), |p| p.display().to_string())
}

impl Data {
    fn new(tok: &Tokenizer, train: &[u8], heldout: &[u8]) -> Self {
        let h = tok.encode(heldout);
        Data {
            train: tok.encode(train),
            bytes_per_token: heldout.len() as f64 / h.len().max(1) as f64,
            heldout: h,
            heldout_bytes: heldout.len(),
        }
    }

    fn baselines(&self, v: usize) -> Baselines {
        let uni = counts::unigram_loss(&self.train, &self.heldout, v, 1.0);
        let bi = counts::bigram_loss(&self.train, &self.heldout, v, 0.5);
        Baselines {
            uniform: (v as f64).ln() / self.bytes_per_token,
            unigram: uni.per_byte(self.heldout_bytes),
            bigram: bi.per_byte(self.heldout_bytes),
            heldout_bytes: self.heldout_bytes,
            heldout_tokens: self.heldout.len(),
        }
    }

    /// A held-out tenth shorter than one context window would score nothing
    /// (a loss of 0 over no windows): refused, naming the corpus.
    fn check_heldout(&self, cfg: &GptConfig, step: &str, label: &str) -> Result<()> {
        if self.heldout.len() > cfg.context {
            return Ok(());
        }
        Err(ReproError::Corpus {
            step: step.into(),
            source: CorpusError::TooShort {
                path: label.into(),
                tokens: self.heldout.len(),
                bytes: self.heldout_bytes,
                context: cfg.context,
            },
        })
    }

    /// Held-out nats per byte of `w` on the first `max_tokens` tokens.
    fn eval(&self, cfg: &GptConfig, w: &Named, max_tokens: usize, step: &str) -> Result<f64> {
        eval(
            cfg,
            w,
            &self.heldout,
            self.bytes_per_token,
            max_tokens,
            step,
        )
    }
}

/// A training run to make: its name, start, config and corpus.
struct Planned {
    name: String,
    init: InitKind,
    cfg: GptConfig,
    /// Trains on the second (fine-tune) corpus.
    second: bool,
    frozen: Vec<String>,
}

impl Planned {
    fn new(name: &str, init: InitKind, cfg: GptConfig, second: bool) -> Self {
        Planned {
            name: name.into(),
            init,
            cfg,
            second,
            frozen: Vec::new(),
        }
    }
}

/// The `full` runs: every block trained together with the rest frozen
/// (the control), one block at a time in order, and each block alone.
fn layer_runs(cfg: &GptConfig, base: &Path, out: &Path) -> Vec<Planned> {
    let names: Vec<String> = cfg.param_specs().into_iter().map(|(n, _)| n).collect();
    let all_but = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        names.iter().filter(|n| !keep(n)).cloned().collect()
    };
    let block = |l: usize| move |n: &str| n.starts_with(&format!("blocks.{l}."));
    let mut v = Vec::new();
    let mut joint = Planned::new(
        "joint-blocks",
        InitKind::Path(base.into()),
        cfg.clone(),
        false,
    );
    joint.frozen = all_but(&|n| n.starts_with("blocks."));
    v.push(joint);
    let mut c = cfg.clone();
    c.steps = (cfg.steps / cfg.n_layer.max(1)).max(1);
    c.warmup_steps = c.warmup_steps.min(c.steps / 5);
    for l in 0..cfg.n_layer {
        let from = if l == 0 {
            base.to_path_buf()
        } else {
            out.join(format!("train-layerwise-{}", l - 1))
        };
        let mut p = Planned::new(
            &format!("layerwise-{l}"),
            InitKind::Path(from),
            c.clone(),
            false,
        );
        p.frozen = all_but(&block(l));
        v.push(p);
    }
    for l in 0..cfg.n_layer {
        let mut p = Planned::new(
            &format!("parallel-{l}"),
            InitKind::Path(base.into()),
            cfg.clone(),
            false,
        );
        p.frozen = all_but(&block(l));
        v.push(p);
    }
    v
}

/// Trains (or resumes, or finds finished) one planned run.
fn train_run(
    out: &Path,
    p: &Planned,
    opts: &ReproOptions,
    data: &Data,
    on: &mut dyn FnMut(ReproEvent),
) -> Result<RunResult> {
    let step = format!("train-{}", p.name);
    let dir = out.join(&step);
    let cfg = &p.cfg;
    let mut fresh = false;
    let (r, _) = cached(out, &step, || {
        fresh = true;
        on(ReproEvent::Step {
            name: step.clone(),
            cached: false,
        });
        let mut o = TrainOptions::new(cfg.clone(), &dir);
        o.init = p.init.clone();
        o.seed = opts.seed;
        o.frozen = p.frozen.clone();
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
        let s = resid_lm::train(&o, &data.train, &data.heldout, data.bytes_per_token, |pr| {
            on(ReproEvent::Train {
                run: p.name.clone(),
                progress: pr.clone(),
            })
        })
        .map_err(|e| ReproError::at(&step, e))?;
        Ok(RunResult {
            name: p.name.clone(),
            init: p.init.to_string(),
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
            name: step,
            cached: true,
        });
    }
    Ok(r)
}

/// Packs run `r`'s residual into `file` at `mode`, rebuilds start + file,
/// and scores it on `d`'s held-out slice.
fn pack_and_score(
    r: &RunResult,
    cfg: &GptConfig,
    d: &Data,
    opts: &ReproOptions,
    mode: resid::codec::pack::Mode,
    file: &Path,
    step: &str,
) -> Result<(resid::codec::pack::PackReport, f64)> {
    use resid::codec::pack::PackOptions;
    let open = |p: PathBuf| resid::io::Checkpoint::open(&p).map_err(|e| ReproError::at(step, e));
    let start = open(r.dir.join("step-0").join("model.safetensors"))?;
    let trained = open(r.dir.join("model.safetensors"))?;
    let po = PackOptions {
        mode,
        seed: opts.seed,
        ..Default::default()
    };
    let rep = resid::codec::pack::pack(&start, &trained, file, &po)
        .map_err(|e| ReproError::at(step, e))?;
    let rebuilt = file.with_extension("safetensors");
    // The repro's own scratch: one left by an interrupted run goes first
    // (unpack never replaces a file it did not create).
    let _ = std::fs::remove_file(&rebuilt);
    resid::codec::pack::unpack(&start, file, &rebuilt).map_err(|e| ReproError::at(step, e))?;
    let w = load(&rebuilt, cfg, step)?;
    let _ = std::fs::remove_file(&rebuilt);
    Ok((rep, d.eval(cfg, &w, opts.eval_tokens, step)?))
}

/// Seconds the steps other than training and scoring take in the default
/// tiny run (tokenizer, corpus base, analyses, report): 14 s in the idle run
/// of BENCHMARKS.md ("Reproduction", session 7), rounded up.
const OTHER_STEPS_S: f64 = 20.0;

/// Residual files the budget search makes per run, about (two ends, then
/// bisection steps shared by the targets).
const BUDGET_PROBES: f64 = 10.0;

/// A line saying how long the run will take: this model's training speed
/// measured now (four steps after a warm-up one), times the tokens to train
/// and to score.
fn estimate(
    opts: &ReproOptions,
    cfg: &GptConfig,
    to_train: &[&Planned],
    runs: usize,
) -> Result<String> {
    let kind = resid_lm::EngineKind::default();
    let tps = resid_lm::engine::measure_tokens_per_s(kind, cfg, 4)
        .map_err(|e| ReproError::at("estimate", e))?;
    let per = |c: &GptConfig| c.steps * c.batch_size * c.context;
    let mut tokens: usize = to_train.iter().map(|p| per(&p.cfg)).sum();
    if opts.finetune {
        // The two amplitude-only fine-tunes.
        tokens += 2 * per(&finetune_config(cfg));
    }
    let train_s = tokens as f64 / tps;
    // Held-out tokens scored per run: eleven evals of half the slice while
    // training, then the ends, every residual file, the budget search, the
    // needle test's three variants and the additivity test's two per part.
    let evals = 5.5
        + 1.0
        + 2.0
        + (1 + opts.rates.len()) as f64
        + if opts.budget_targets.is_empty() {
            0.0
        } else {
            BUDGET_PROBES
        }
        + 3.0 * opts.needle_fracs.len() as f64
        + 2.0 * (cfg.n_layer + 1) as f64;
    // A forward pass costs about a third of a training step.
    let score_s = runs as f64 * evals * opts.eval_tokens as f64 / (3.0 * tps);
    let total = train_s + score_s + OTHER_STEPS_S;
    Ok(format!(
        "about {:.1} min: {} training run(s), {:.1}M tokens at {:.0} tokens/s (measured now) {:.0} s, scoring {:.0} s, base and analyses ~{:.0} s",
        total / 60.0,
        to_train.len(),
        tokens as f64 / 1e6,
        tps,
        train_s,
        score_s,
        OTHER_STEPS_S
    ))
}

/// The tokenizer for the preset, trained once and kept in `out/resid-tokenizer.json`
/// (an older run's `out/tokenizer.json` is reused).
/// Writes one residual's analysis report into `out/step` and returns it
/// for the reproduction's own.
fn analysis_report(
    out: &Path,
    step: &str,
    rep: &resid::analysis::Report,
    figs: &resid::report::analysis::FigureData,
) -> Result<resid::analysis::Report> {
    resid::report::analysis::write_analysis_report(&out.join(step), rep, Some(figs))
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
