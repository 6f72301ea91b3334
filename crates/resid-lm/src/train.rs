//! The training loop: seeded batches from the train split, AdamW with warmup
//! and cosine decay, global-norm clipping, periodic held-out eval, and
//! checkpoints at step 0, every `save_every` steps, and at the end.
//!
//! Output folder layout: `OUT/step-0/` (the init), `OUT/step-N/` (periodic,
//! with optimizer state), and the final model in `OUT/` itself, so
//! `resid eval --model OUT` works. `OUT/curve.json` holds the loss curve.
//! Resuming from any of these (they all carry `optimizer.safetensors`)
//! restores weights, AdamW moments and the step, and continues the same
//! batch sequence, so an interrupted run ends where an uninterrupted one does.

use std::path::{Path, PathBuf};
use std::time::Instant;

use resid_corpus::config::GptConfig;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_checkpoint, save_checkpoint, CheckpointMeta};
use crate::data::sample_batch;
use crate::engine::{Engine, EngineKind};
use crate::eval::EvalReport;
use crate::init::{initial_weights, InitKind};
use crate::optim::lr_at;
use crate::{LmError, Result};

/// What to train and where to write it.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Shape and hyper-parameters (`steps` is the planned total).
    pub cfg: GptConfig,
    pub init: InitKind,
    pub seed: u64,
    pub out: PathBuf,
    /// Held-out eval every this many steps (0: only at start and end).
    pub eval_every: usize,
    /// Held-out tokens for periodic evals (the final eval uses `final_eval_tokens`).
    pub eval_tokens: usize,
    pub final_eval_tokens: usize,
    /// Extra checkpoints every this many steps (0: none).
    pub save_every: usize,
    /// Resume from this checkpoint folder (its config and seed win).
    pub resume: Option<PathBuf>,
    /// Stop after this many steps in this invocation (tests of resume; None: run to the end).
    pub stop_after: Option<usize>,
    /// Tokenizer file text written into every checkpoint folder (None: byte-level, nothing written).
    pub tokenizer_json: Option<String>,
    /// Parameters left as they start: exact names of `param_specs()` or
    /// prefixes ending in a dot (`blocks.0.` freezes the first block). A
    /// resumed run keeps the set its checkpoint recorded.
    pub frozen: Vec<String>,
    /// Which implementation trains (resid's CPU path unless built with `cuda`).
    pub engine: EngineKind,
}

impl TrainOptions {
    /// Defaults for a config: eval every 100 steps on 64K held-out tokens,
    /// final eval on the whole held-out split.
    pub fn new(cfg: GptConfig, out: impl Into<PathBuf>) -> Self {
        TrainOptions {
            cfg,
            init: InitKind::Random,
            seed: 0,
            out: out.into(),
            eval_every: 100,
            eval_tokens: 65_536,
            final_eval_tokens: usize::MAX,
            save_every: 0,
            resume: None,
            stop_after: None,
            tokenizer_json: None,
            frozen: Vec::new(),
            engine: EngineKind::default(),
        }
    }
}

/// Reported to the caller's callback after every step.
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    /// Set on steps that ran a held-out eval.
    pub heldout: Option<EvalReport>,
}

/// One point of the loss curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    pub lr: f64,
    /// Mean training loss since the previous point.
    pub train_loss: Option<f64>,
    pub heldout_nats_per_token: Option<f64>,
    pub heldout_nats_per_byte: Option<f64>,
}

/// What a run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub tokens_seen: u64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub initial_heldout: Option<EvalReport>,
    pub final_heldout: EvalReport,
    pub final_train_loss: Option<f64>,
    pub curve: Vec<CurvePoint>,
    pub backend: String,
}

/// Per parameter of `cfg`: whether a pattern of `frozen` names it.
pub fn frozen_mask(cfg: &GptConfig, frozen: &[String]) -> Result<Vec<bool>> {
    let names: Vec<String> = cfg.param_specs().into_iter().map(|(n, _)| n).collect();
    let hits = |p: &String, n: &String| n == p || (p.ends_with('.') && n.starts_with(p.as_str()));
    if let Some(p) = frozen.iter().find(|p| !names.iter().any(|n| hits(p, n))) {
        return Err(LmError::Config(format!(
            "frozen parameter {p:?} names no parameter of the model (names look like blocks.0.attn.q.weight; a prefix ends in '.')"
        )));
    }
    Ok(names
        .iter()
        .map(|n| frozen.iter().any(|p| hits(p, n)))
        .collect())
}

/// Trains. `train_tokens` / `heldout_tokens` are the two splits already
/// tokenized; `bytes_per_token` converts held-out nats/token to nats/byte.
pub fn train(
    opts: &TrainOptions,
    train_tokens: &[u32],
    heldout_tokens: &[u32],
    bytes_per_token: f64,
    mut on_progress: impl FnMut(&Progress),
) -> Result<TrainSummary> {
    // Start: fresh or resumed.
    let (cfg, seed, init_name, start_step, mut tokens_seen, weights, opt_state, total, frozen) =
        match &opts.resume {
            Some(dir) => {
                let ck = load_checkpoint(dir)?;
                let m = ck.meta;
                (
                    m.config,
                    m.seed,
                    m.init,
                    m.step,
                    m.tokens_seen,
                    ck.weights,
                    ck.optimizer,
                    m.total_steps,
                    m.frozen,
                )
            }
            None => {
                let w = initial_weights(&opts.cfg, &opts.init, opts.seed)?;
                (
                    opts.cfg.clone(),
                    opts.seed,
                    opts.init.to_string(),
                    0,
                    0,
                    w,
                    None,
                    opts.cfg.steps,
                    opts.frozen.clone(),
                )
            }
        };
    if cfg.vocab_size < 256 && cfg.tokenizer == resid_corpus::config::TokenizerKind::Byte {
        return Err(LmError::Config(
            "byte tokenizer needs vocab_size >= 256".into(),
        ));
    }
    let mask = frozen_mask(&cfg, &frozen)?;
    let opt = opt_state.as_ref().map(|st| (st, start_step));
    let mut engine = Engine::new(opts.engine, &cfg, &weights, &mask, opt)?;
    let tokenizer = match cfg.tokenizer {
        resid_corpus::config::TokenizerKind::Byte => "byte",
        resid_corpus::config::TokenizerKind::Bpe => "bpe",
    };
    let mut meta = CheckpointMeta {
        format: "resid-gpt".into(),
        config: cfg.clone(),
        tokenizer: tokenizer.into(),
        seed,
        init: init_name,
        step: start_step,
        total_steps: total,
        tokens_seen,
        train_loss: None,
        heldout_loss: None,
        heldout_nats_per_byte: None,
        heldout_tokens: None,
        frozen,
    };
    let eval = |e: &mut Engine, max: usize| e.heldout(heldout_tokens, bytes_per_token, max);
    let mut curve = Vec::new();
    let t0 = Instant::now();
    let mut initial_heldout = None;
    if opts.resume.is_none() {
        let r = eval(&mut engine, opts.eval_tokens);
        initial_heldout = Some(r);
        set_eval(&mut meta, &r);
        save(&opts.out.join("step-0"), &engine, &meta, opts)?;
        curve.push(point(0, 0, 0.0, 0.0, None, Some(r)));
    }
    let end = opts
        .stop_after
        .map_or(total, |k| (start_step + k).min(total));
    let tokens_per_step = (cfg.batch_size * cfg.context) as u64;
    let (mut win_sum, mut win_n, mut last_train) = (0.0, 0usize, None);
    let train_start = Instant::now();
    for step in start_step..end {
        let lr = lr_at(step, cfg.lr, cfg.warmup_steps, total);
        let hb = sample_batch(train_tokens, cfg.batch_size, cfg.context, seed, step as u64);
        let (loss_v, gnorm) = engine.step(&hb, lr, cfg.grad_clip);
        tokens_seen += tokens_per_step;
        win_sum += loss_v;
        win_n += 1;
        let done = step + 1;
        let is_last = done == end;
        let heldout = (opts.eval_every > 0 && done % opts.eval_every == 0 && !is_last)
            .then(|| eval(&mut engine, opts.eval_tokens));
        let elapsed = train_start.elapsed().as_secs_f64();
        let steps_run = done - start_step;
        let tps = (steps_run as u64 * tokens_per_step) as f64 / elapsed.max(1e-9);
        if heldout.is_some() || is_last {
            last_train = Some(win_sum / win_n as f64);
            curve.push(point(
                done,
                tokens_seen,
                t0.elapsed().as_secs_f64(),
                lr,
                last_train,
                heldout,
            ));
            (win_sum, win_n) = (0.0, 0);
        }
        on_progress(&Progress {
            step: done,
            total,
            loss: loss_v,
            lr,
            grad_norm: gnorm,
            tokens_per_s: tps,
            elapsed_s: elapsed,
            eta_s: elapsed / steps_run as f64 * (end - done) as f64,
            heldout,
        });
        if opts.save_every > 0 && done % opts.save_every == 0 && !is_last {
            meta.step = done;
            meta.tokens_seen = tokens_seen;
            meta.train_loss = last_train;
            save(&opts.out.join(format!("step-{done}")), &engine, &meta, opts)?;
        }
    }
    let seconds = train_start.elapsed().as_secs_f64();
    let final_heldout = eval(&mut engine, opts.final_eval_tokens);
    if let Some(p) = curve.last_mut() {
        if p.step == end {
            p.heldout_nats_per_token = Some(final_heldout.nats_per_token);
            p.heldout_nats_per_byte = Some(final_heldout.nats_per_byte);
        }
    }
    meta.step = end;
    meta.tokens_seen = tokens_seen;
    meta.train_loss = last_train;
    set_eval(&mut meta, &final_heldout);
    save(&opts.out, &engine, &meta, opts)?;
    let steps_run = end - start_step;
    let summary = TrainSummary {
        steps: end,
        tokens_seen,
        seconds,
        tokens_per_s: (steps_run as u64 * tokens_per_step) as f64 / seconds.max(1e-9),
        initial_heldout,
        final_heldout,
        final_train_loss: last_train,
        curve,
        backend: opts.engine.describe().into(),
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    crate::checkpoint::write_atomic(&opts.out.join("curve.json"), &json)?;
    Ok(summary)
}

fn set_eval(meta: &mut CheckpointMeta, r: &EvalReport) {
    meta.heldout_loss = Some(r.nats_per_token);
    meta.heldout_nats_per_byte = Some(r.nats_per_byte);
    meta.heldout_tokens = Some(r.tokens);
}

fn point(
    step: usize,
    tokens: u64,
    t: f64,
    lr: f64,
    train: Option<f64>,
    h: Option<EvalReport>,
) -> CurvePoint {
    CurvePoint {
        step,
        tokens_seen: tokens,
        elapsed_s: t,
        lr,
        train_loss: train,
        heldout_nats_per_token: h.map(|r| r.nats_per_token),
        heldout_nats_per_byte: h.map(|r| r.nats_per_byte),
    }
}

fn save(dir: &Path, engine: &Engine, meta: &CheckpointMeta, opts: &TrainOptions) -> Result<()> {
    save_checkpoint(
        dir,
        &engine.weights(),
        meta,
        Some(&engine.optimizer_state()),
    )?;
    if let Some(t) = &opts.tokenizer_json {
        crate::checkpoint::write_atomic(
            &dir.join(resid_corpus::tokenizer::FILE_NAME),
            t.as_bytes(),
        )?;
    }
    Ok(())
}
