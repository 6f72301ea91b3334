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
    /// Mimetic init (`W_Q W_K^T ~ I`, small `W_V W_O`): reserved, not yet built.
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
        InitKind::Mimetic => Err(LmError::Config(
            "--init mimetic is not implemented yet; use random or a checkpoint folder".into(),
        )),
    }
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
