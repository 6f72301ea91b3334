//! Checkpoints: `model.safetensors` (F32, torch layout, names from
//! `param_specs()`), a JSON sidecar `model.json` (config, tokenizer, seed,
//! step, tokens seen, losses), and for resumable runs `optimizer.safetensors`
//! (AdamW moments, named `m.<param>` / `v.<param>`). Every file is written to
//! a temporary file in the same folder and renamed, so a crash never leaves a
//! half-written checkpoint behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use resid_corpus::config::GptConfig;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::{LmError, NamedTensors, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const META_FILE: &str = "model.json";
pub const OPTIM_FILE: &str = "optimizer.safetensors";

/// The JSON sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always "resid-gpt".
    pub format: String,
    pub config: GptConfig,
    /// "byte" or "bpe" (the vocabulary file lies beside the model).
    pub tokenizer: String,
    pub seed: u64,
    /// How the run started: "random", "mimetic" or a path.
    pub init: String,
    /// Optimizer steps taken.
    pub step: usize,
    /// Steps the run was planned for (the LR schedule depends on it).
    pub total_steps: usize,
    pub tokens_seen: u64,
    /// Mean training loss over the last logging window (nats/token).
    pub train_loss: Option<f64>,
    /// Held-out loss, nats per token and per byte.
    pub heldout_loss: Option<f64>,
    pub heldout_nats_per_byte: Option<f64>,
    /// Held-out tokens the loss was measured on.
    pub heldout_tokens: Option<usize>,
    /// Parameters the run keeps frozen (names or dot-ended prefixes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
}

/// A checkpoint read back.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub weights: NamedTensors,
    /// AdamW state when saved (`m.<name>`, `v.<name>`).
    pub optimizer: Option<NamedTensors>,
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> LmError {
    LmError::File {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// Writes `bytes` to `path` atomically (resid-io's temp-file-and-rename,
/// which also syncs and cleans up after a failed write).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    resid_io::atomic::write_atomic(path, bytes).map_err(|e| file_err(path, e))
}

/// Serialises named F32 tensors to safetensors bytes.
pub fn to_safetensors(tensors: &NamedTensors, meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| LmError::Shape(format!("{n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| LmError::Shape(e.to_string()))
}

/// Reads every tensor of a safetensors file as F32 (F32, F16 and BF16 accepted),
/// in file order.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, e))?;
    let mut out = Vec::new();
    for (name, view) in st.iter() {
        let d = view.data();
        let vals: Vec<f32> = match view.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => {
                return Err(file_err(
                    path,
                    format!("{name}: dtype {other:?} not supported"),
                ))
            }
        };
        out.push((name.to_string(), view.shape().to_vec(), vals));
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => return if sign != 0 { -1.0 } else { 1.0 } * man as f32 * 2f32.powi(-24),
        31 => sign | 0x7f80_0000 | (man << 13),
        e => sign | (((e - 15 + 127) as u32) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// The `model.safetensors` inside `path` (or `path` itself when it is a file).
pub fn model_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(MODEL_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Reads weights and orders them as `cfg.param_specs()`, checking names and shapes.
pub fn load_weights_for(path: &Path, cfg: &GptConfig) -> Result<NamedTensors> {
    let file = model_file(path);
    let mut by_name: HashMap<String, (Vec<usize>, Vec<f32>)> = read_safetensors(&file)?
        .into_iter()
        .map(|(n, s, d)| (n, (s, d)))
        .collect();
    cfg.param_specs()
        .into_iter()
        .map(|(name, shape)| {
            let (s, d) = by_name
                .remove(&name)
                .ok_or_else(|| file_err(&file, format!("missing tensor {name}")))?;
            if s != shape {
                return Err(file_err(
                    &file,
                    format!("{name}: shape {s:?}, the model needs {shape:?}"),
                ));
            }
            Ok((name, s, d))
        })
        .collect()
}

/// Saves a checkpoint into folder `dir` (created if needed).
pub fn save_checkpoint(
    dir: &Path,
    weights: &NamedTensors,
    meta: &CheckpointMeta,
    optimizer: Option<&NamedTensors>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut st_meta = HashMap::new();
    st_meta.insert("format".to_string(), "pt".to_string());
    st_meta.insert("resid".to_string(), meta.format.clone());
    st_meta.insert("step".to_string(), meta.step.to_string());
    write_atomic(&dir.join(MODEL_FILE), &to_safetensors(weights, st_meta)?)?;
    if let Some(opt) = optimizer {
        write_atomic(&dir.join(OPTIM_FILE), &to_safetensors(opt, HashMap::new())?)?;
    }
    let json = serde_json::to_vec_pretty(meta).expect("meta serialises");
    write_atomic(&dir.join(META_FILE), &json)
}

/// Loads a checkpoint folder written by [`save_checkpoint`].
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let meta_path = dir.join(META_FILE);
    let raw = std::fs::read(&meta_path).map_err(|e| file_err(&meta_path, e))?;
    let meta: CheckpointMeta = serde_json::from_slice(&raw).map_err(|e| file_err(&meta_path, e))?;
    let weights = load_weights_for(dir, &meta.config)?;
    let opt_path = dir.join(OPTIM_FILE);
    let optimizer = if opt_path.exists() {
        Some(read_safetensors(&opt_path)?)
    } else {
        None
    };
    Ok(Checkpoint {
        meta,
        weights,
        optimizer,
    })
}
