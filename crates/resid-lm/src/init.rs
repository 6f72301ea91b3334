//! Initial weights, produced as plain torch-layout `f32` so that an init is
//! reproducible from its seed alone (independent of burn's RNG) and can be
//! saved, analysed and diffed like any checkpoint.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resid_corpus::config::GptConfig;

use crate::{LmError, NamedTensors, Result};

/// Where a training run starts.
#[derive(Clone, Debug, PartialEq)]
pub enum InitKind {
    /// nanoGPT's init from `--seed`: N(0, 0.02) weights and embeddings, the
    /// two residual-stream output projections (`attn.o`, `mlp.down`) scaled by
    /// 1/sqrt(2 n_layer), zero biases, LayerNorm 1/0.
    Random,
    /// A folder (or file) holding `model.safetensors` of the same shape, e.g.
    /// the corpus-derived base.
    Path(PathBuf),
    /// Mimetic init (Trockman & Kolter 2023): the random init of
    /// `resid_corpus::base::mimetic_init`, with `W_Q W_K^T ~ I` and
    /// `W_V W_O ~ -I` per layer; the structured baseline that owes nothing to the corpus.
    Mimetic,
}

impl std::str::FromStr for InitKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "random" => InitKind::Random,
            "mimetic" => InitKind::Mimetic,
            p => InitKind::Path(PathBuf::from(p)),
        })
    }
}

impl std::fmt::Display for InitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitKind::Random => f.write_str("random"),
            InitKind::Mimetic => f.write_str("mimetic"),
            InitKind::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The initial weights for `kind`.
pub fn initial_weights(cfg: &GptConfig, kind: &InitKind, seed: u64) -> Result<NamedTensors> {
    match kind {
        InitKind::Random => Ok(random_weights(cfg, seed)),
        InitKind::Path(p) => crate::checkpoint::load_weights_for(p, cfg),
        InitKind::Mimetic => mimetic_weights(cfg, seed),
    }
}

/// The mimetic init of `resid_corpus::base`, checked against `param_specs()`
/// so a training run gets exactly the names and shapes it gets from random or a base folder.
pub fn mimetic_weights(cfg: &GptConfig, seed: u64) -> Result<NamedTensors> {
    if cfg.n_head == 0 || !cfg.d_model.is_multiple_of(cfg.n_head) {
        return Err(LmError::Config(format!(
            "mimetic init: d_model {} is not a multiple of n_head {}",
            cfg.d_model, cfg.n_head
        )));
    }
    let w = resid_corpus::base::mimetic_init(cfg, seed).tensors;
    for ((n, s), (wn, ws, wd)) in cfg.param_specs().iter().zip(&w) {
        if n != wn || s != ws || wd.len() != s.iter().product::<usize>() {
            return Err(LmError::Shape(format!(
                "mimetic init: {wn} {ws:?} where {n} {s:?} was expected"
            )));
        }
    }
    Ok(w)
}

/// nanoGPT-style random init, reproducible from `seed`.
pub fn random_weights(cfg: &GptConfig, seed: u64) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let std = 0.02f32;
    let proj_std = std / ((2 * cfg.n_layer) as f32).sqrt();
    cfg.param_specs()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if shape.len() == 2 {
                let s = if name.ends_with("attn.o.weight") || name.ends_with("mlp.down.weight") {
                    proj_std
                } else {
                    std
                };
                let normal = Normal::new(0.0f32, s).expect("positive std");
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            } else if name.contains("ln") && name.ends_with(".weight") {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            (name, shape, data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use resid_corpus::config::TokenizerKind;

    fn tiny() -> GptConfig {
        GptConfig {
            preset: "test".into(),
            tokenizer: TokenizerKind::Byte,
            vocab_size: 256,
            n_layer: 2,
            n_head: 2,
            d_model: 32,
            d_ff: 64,
            context: 16,
            tied_head: false,
            batch_size: 8,
            steps: 12,
            lr: 3e-3,
            warmup_steps: 2,
            weight_decay: 0.1,
            grad_clip: 1.0,
        }
    }

    #[test]
    fn mimetic_init_has_the_names_and_shapes_of_random_init() {
        let cfg = tiny();
        let r = initial_weights(&cfg, &InitKind::Random, 3).unwrap();
        let m = initial_weights(&cfg, &InitKind::Mimetic, 3).unwrap();
        let names = |w: &NamedTensors| -> Vec<(String, Vec<usize>, usize)> {
            w.iter()
                .map(|(n, s, d)| (n.clone(), s.clone(), d.len()))
                .collect()
        };
        assert_eq!(names(&r), names(&m));
        // It is not the random init: the attention weights differ and are finite.
        let q = |w: &NamedTensors| {
            w.iter()
                .find(|t| t.0 == "blocks.1.attn.q.weight")
                .unwrap()
                .2
                .clone()
        };
        assert_ne!(q(&r), q(&m));
        assert!(m.iter().all(|t| t.2.iter().all(|x| x.is_finite())));
        // Seeded: the same seed gives the same weights.
        assert_eq!(m, initial_weights(&cfg, &InitKind::Mimetic, 3).unwrap());
    }

    #[test]
    fn mimetic_init_starts_finite_and_trains() {
        let cfg = tiny();
        let c = resid_corpus::corpus::shakespeare();
        let (tr, ho) = resid_corpus::corpus::split(&c);
        let tr = crate::data::byte_tokens(&tr[..20_000]);
        let ho = crate::data::byte_tokens(&ho[..2_048]);
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::TrainOptions {
            init: InitKind::Mimetic,
            eval_every: 0,
            eval_tokens: 1024,
            final_eval_tokens: 1024,
            ..crate::TrainOptions::new(cfg, dir.path())
        };
        let s = crate::train(&opts, &tr, &ho, 1.0, |_| {}).unwrap();
        let before = s.initial_heldout.unwrap().nats_per_token;
        let after = s.final_heldout.nats_per_token;
        assert!(before.is_finite(), "step-0 held-out loss {before}");
        assert!(after < before - 0.1, "held-out {before} -> {after}");
        // The run records where it started.
        let ck = crate::load_checkpoint(&dir.path().join("step-0")).unwrap();
        assert_eq!(ck.meta.init, "mimetic");
    }
}
