//! Which way a checkpoint stores its linear weights. `nn.Linear` keeps
//! (out, in); transformers' `Conv1D` (GPT-2 and its kin) keeps (in, out),
//! and PEFT then wants factors of ΔW^T with `fan_in_fan_out: true`. A
//! safetensors file does not say which class wrote a tensor, so the model's
//! `config.json` (model_type) decides, else GPT-2's own module names.

use std::path::{Path, PathBuf};

use resid_io::Checkpoint;
use serde::Serialize;

/// transformers model types whose blocks are `Conv1D` (`pytorch_utils.Conv1D`).
pub const CONV1D_MODEL_TYPES: &[&str] = &["gpt2", "openai-gpt", "imagegpt", "decision_transformer"];
/// The `Conv1D` modules of those models (attention c_attn/q_attn/c_proj, MLP
/// c_fc/c_proj); their other 2-D weights (lm_head, embeddings) are not.
pub const CONV1D_MODULES: &[&str] = &["c_attn", "q_attn", "c_proj", "c_fc"];

/// The weight layout to write factors for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightLayout {
    /// Decide from config.json, else from the tensor names ([`detect`]).
    #[default]
    Detect,
    /// Every weight is `nn.Linear`'s (out, in).
    Linear,
    /// Every adapted non-embedding weight is `Conv1D`'s (in, out).
    Conv1D,
}

/// What [`detect`] found, and from what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// The model is of the Conv1D family: its [`CONV1D_MODULES`] are (in, out).
    pub conv1d: bool,
    /// Why, in words ("config.json model_type 'gpt2'", ...).
    pub why: String,
}

/// The `config.json` beside a checkpoint: in its folder, or beside its file.
fn config_path(ck: &Checkpoint) -> PathBuf {
    let p = ck.path();
    if p.is_dir() {
        p.join("config.json")
    } else {
        p.parent().unwrap_or(Path::new(".")).join("config.json")
    }
}

/// The model_type of the config.json beside `ck`, when there is one that says.
fn model_type(ck: &Checkpoint) -> Option<(PathBuf, String)> {
    let path = config_path(ck);
    let text = std::fs::read_to_string(&path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let t = v.get("model_type")?.as_str()?.to_string();
    Some((path, t))
}

/// The leaf module name of a weight (`transformer.h.0.attn.c_attn.weight` -> `c_attn`).
pub fn leaf(tensor: &str) -> Option<&str> {
    tensor.strip_suffix(".weight")?.rsplit('.').next()
}

/// Whether `ck` (the trained side, else `base`) is of the Conv1D family:
/// config.json's model_type when either has one, else GPT-2's names (a
/// 2-D `c_attn` or `c_fc` weight).
pub fn detect(trained: &Checkpoint, base: &Checkpoint) -> Detected {
    if let Some((path, t)) = model_type(trained).or_else(|| model_type(base)) {
        let conv1d = CONV1D_MODEL_TYPES.contains(&t.as_str());
        return Detected {
            conv1d,
            why: format!("{} model_type '{t}'", path.display()),
        };
    }
    let named = trained
        .tensors()
        .iter()
        .find(|t| t.shape.len() == 2 && matches!(leaf(&t.name), Some("c_attn") | Some("c_fc")));
    match named {
        Some(t) => Detected {
            conv1d: true,
            why: format!("GPT-2 module name '{}' (no config.json)", t.name),
        },
        None => Detected {
            conv1d: false,
            why: "no config.json and no GPT-2 module names".into(),
        },
    }
}
