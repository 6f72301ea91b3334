//! Reading a PEFT adapter folder (`adapter_config.json` +
//! `adapter_model.safetensors`) as the residual ΔW it adds to each module
//! of its base: scaling · B·A for LoRA linears (transposed with
//! fan-in-fan-out), scaling · (B·A)^T for LoRA embeddings, and the trained
//! value minus the base's for `modules_to_save`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use resid_io::Checkpoint;

use crate::config::LoraConfig;
use crate::error::{LoraError, Result};

/// The tensor file PEFT writes.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The pickle file older PEFT versions write; refused (reading it would run pickle code).
pub const PICKLE_FILE: &str = "adapter_model.bin";
/// The prefix PEFT puts before the base model's own module names.
pub const PREFIX: &str = "base_model.model.";

/// How a module's ΔW is laid out against its base weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// `nn.Linear` (or Conv1D with fan-in-fan-out): A is (r, in), B is (out, r).
    Linear,
    /// `nn.Embedding`: A is (r, num_embeddings), B is (dim, r); ΔW = (B·A)^T.
    Embedding,
    /// Stored whole (`modules_to_save`): the trained tensor itself.
    Whole,
}

impl ModuleKind {
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Linear => "linear",
            ModuleKind::Embedding => "embedding",
            ModuleKind::Whole => "modules_to_save",
        }
    }
}

/// One adapted base tensor.
#[derive(Clone, Debug)]
pub struct Module {
    /// The module's name in the base model (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// The base tensor it changes (`<module>.weight`, or the saved tensor's name).
    pub tensor: String,
    pub kind: ModuleKind,
    /// LoRA rank (0 for [`ModuleKind::Whole`]).
    pub rank: usize,
    /// ΔW = scaling · B·A (1 for whole tensors).
    pub scaling: f64,
    /// Names of the A and B tensors (or the whole tensor, twice) in the adapter file.
    a: String,
    b: String,
    /// A whole weight the adapter stores for the module's base layer
    /// (`<module>.base_layer.weight`: PEFT saves targeted embeddings so):
    /// it replaces the base's before ΔW is added.
    replaced: Option<String>,
}

/// An opened adapter: its settings, its tensors, and what each adapts.
pub struct Adapter {
    dir: PathBuf,
    pub config: LoraConfig,
    weights: Checkpoint,
    modules: Vec<Module>,
}

impl Adapter {
    /// Opens an adapter folder, checking every tensor against the config:
    /// A and B pair up, their rank agrees with the config's (rank_pattern
    /// included), and nothing in the file is left unexplained.
    pub fn open(dir: &Path) -> Result<Adapter> {
        let config = LoraConfig::read(dir)?;
        let file = dir.join(WEIGHTS_FILE);
        if !file.exists() && dir.join(PICKLE_FILE).exists() {
            return Err(LoraError::Unsupported {
                path: dir.join(PICKLE_FILE),
                feature: "a pickled adapter",
                detail: "reading it would run pickle code; convert it to adapter_model.safetensors \
                         (PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True))"
                    .into(),
            });
        }
        let weights = Checkpoint::open(&file)?;
        let modules = modules_of(&file, &config, &weights)?;
        Ok(Adapter {
            dir: dir.to_path_buf(),
            config,
            weights,
            modules,
        })
    }

    /// The folder it was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The adapted base tensors, in name order.
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// ΔW of `m` against `base` (row-major, the base tensor's shape), in f32.
    /// Whole tensors give trained - base. Fails when the base lacks the
    /// tensor or its shape differs from what the adapter makes.
    pub fn delta(&self, m: &Module, base: &Checkpoint) -> Result<(Vec<usize>, Vec<f32>)> {
        let wrong = |reason: String| LoraError::WrongBase {
            adapter: self.dir.clone(),
            module: m.module.clone(),
            base: base.path().to_path_buf(),
            reason,
        };
        let Some(be) = base.get(&m.tensor) else {
            return Err(wrong(format!("has no tensor '{}'", m.tensor)));
        };
        let shape = be.shape.clone();
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let e = self.weights.get(name).expect("checked at open");
            let mut v = Vec::new();
            self.weights.read_f32(e, &mut v)?;
            Ok((e.shape.clone(), v))
        };
        if m.kind == ModuleKind::Whole {
            let (s, mut t) = read(&m.a)?;
            if s != shape {
                return Err(wrong(format!(
                    "is stored whole as {s:?} but '{}' is {shape:?}",
                    m.tensor
                )));
            }
            let mut b = Vec::new();
            base.read_f32(be, &mut b)?;
            t.iter_mut().zip(&b).for_each(|(t, b)| *t -= b);
            return Ok((shape, t));
        }
        let (sa, a) = read(&m.a)?;
        let (sb, b) = read(&m.b)?;
        // B·A is (sb[0], sa[1]); which way it lies on the base weight:
        let ba = (sb[0], sa[1]);
        let transposed = match m.kind {
            ModuleKind::Embedding => true,
            // PEFT decides by the module's type (Conv1D or Linear); the
            // shapes decide here, the config only when both fit (square).
            _ => {
                let direct = shape == [ba.0, ba.1];
                let trans = shape == [ba.1, ba.0];
                if direct && trans {
                    self.config.fan_in_fan_out
                } else {
                    trans
                }
            }
        };
        let want = if transposed {
            [ba.1, ba.0]
        } else {
            [ba.0, ba.1]
        };
        if shape != want {
            return Err(wrong(format!(
                "gets a ΔW of shape {want:?} but '{}' is {shape:?}",
                m.tensor
            )));
        }
        let d = product(&b, &a, ba.0, m.rank, ba.1, m.scaling);
        let mut d = if transposed {
            transpose(&d, ba.0, ba.1)
        } else {
            d
        };
        if let Some(r) = &m.replaced {
            let (s, w) = read(r)?;
            if s != shape {
                return Err(wrong(format!(
                    "has its base layer stored as {s:?} but '{}' is {shape:?}",
                    m.tensor
                )));
            }
            let mut bw = Vec::new();
            base.read_f32(be, &mut bw)?;
            d.iter_mut()
                .zip(w.iter().zip(&bw))
                .for_each(|(d, (w, b))| *d += w - b);
        }
        Ok((shape, d))
    }

    /// Bytes of the adapter's tensors.
    pub fn data_bytes(&self) -> usize {
        self.weights.data_bytes()
    }
}

/// scaling · B·A for B (m × r) and A (r × n), accumulated in f64.
fn product(b: &[f32], a: &[f32], m: usize, r: usize, n: usize, scaling: f64) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let mut acc = vec![0f64; n];
            for k in 0..r {
                let bik = b[i * r + k] as f64;
                if bik == 0.0 {
                    continue;
                }
                for (acc, &akj) in acc.iter_mut().zip(&a[k * n..(k + 1) * n]) {
                    *acc += bik * akj as f64;
                }
            }
            for (o, acc) in row.iter_mut().zip(&acc) {
                *o = (acc * scaling) as f32;
            }
        });
    out
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = x[i * cols + j];
        }
    }
    t
}

/// What one key of the adapter file is.
enum Part {
    A,
    B,
    EmbA,
    EmbB,
}

/// Sorts the file's tensors into modules, refusing what resid cannot read.
fn modules_of(file: &Path, config: &LoraConfig, w: &Checkpoint) -> Result<Vec<Module>> {
    let bad = |tensor: &str, reason: String| LoraError::BadTensor {
        path: file.to_path_buf(),
        tensor: tensor.to_string(),
        reason,
    };
    let mut lora: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
    let mut kinds: BTreeMap<String, ModuleKind> = BTreeMap::new();
    let mut replaced: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for t in w.tensors() {
        let key = t.name.as_str();
        let name = key.strip_prefix(PREFIX).unwrap_or(key);
        if name.contains("lora_magnitude_vector") {
            return Err(LoraError::Unsupported {
                path: file.to_path_buf(),
                feature: "DoRA",
                detail: format!("tensor '{key}' is a DoRA magnitude vector"),
            });
        }
        let found = [
            (".lora_A", Part::A),
            (".lora_B", Part::B),
            (".lora_embedding_A", Part::EmbA),
            (".lora_embedding_B", Part::EmbB),
        ]
        .into_iter()
        .find_map(|(tag, p)| name.find(tag).map(|i| (i, tag, p)));
        let Some((i, tag, part)) = found else {
            if let Some(module) = name.strip_suffix(".base_layer.weight") {
                replaced.insert(module.to_string(), key.to_string());
                continue;
            }
            if name.contains("lora_") {
                return Err(bad(
                    key,
                    "a LoRA tensor of a kind resid does not read".into(),
                ));
            }
            // modules_to_save: the whole trained tensor, under the base's name.
            let module = name.rsplit_once('.').map_or(name, |(m, _)| m);
            if !config.saves_whole(module) {
                return Err(bad(
                    key,
                    "not a LoRA tensor, and its module is not in modules_to_save".into(),
                ));
            }
            out.push(Module {
                module: module.to_string(),
                tensor: name.to_string(),
                kind: ModuleKind::Whole,
                rank: 0,
                scaling: 1.0,
                a: key.to_string(),
                b: key.to_string(),
                replaced: None,
            });
            continue;
        };
        let module = &name[..i];
        let rest = &name[i + tag.len()..];
        // `.weight` (linear) or nothing (embedding), maybe after an adapter name.
        let rest_ok = match part {
            Part::A | Part::B => rest == ".weight" || rest.ends_with(".weight"),
            Part::EmbA | Part::EmbB => !rest.ends_with(".bias"),
        };
        if !rest_ok || rest.ends_with(".bias") {
            return Err(LoraError::Unsupported {
                path: file.to_path_buf(),
                feature: "a LoRA bias or an unknown LoRA parameter",
                detail: format!("tensor '{key}'"),
            });
        }
        if t.shape.len() != 2 {
            return Err(bad(
                key,
                format!(
                    "has shape {:?}; resid reads LoRA on linear and embedding layers (2-D factors), not convolutions",
                    t.shape
                ),
            ));
        }
        if t.dtype.is_none() {
            return Err(bad(
                key,
                format!("dtype {} is not a float resid reads", t.dtype_name),
            ));
        }
        let kind = match part {
            Part::A | Part::B => ModuleKind::Linear,
            _ => ModuleKind::Embedding,
        };
        if *kinds.entry(module.to_string()).or_insert(kind) != kind {
            return Err(bad(
                key,
                "the module has both linear and embedding LoRA tensors".into(),
            ));
        }
        let slot = lora.entry(module.to_string()).or_default();
        let side = matches!(part, Part::B | Part::EmbB) as usize;
        if slot[side].replace(key.to_string()).is_some() {
            return Err(bad(
                key,
                "a second tensor for the same LoRA factor (more than one adapter in the file?)"
                    .into(),
            ));
        }
    }
    for (module, [a, b]) in lora {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => return Err(bad(&a, "has no B factor".into())),
            (None, Some(b)) => return Err(bad(&b, "has no A factor".into())),
            (None, None) => unreachable!("an entry exists only once a factor was seen"),
        };
        let kind = kinds[&module];
        let (sa, sb) = (
            &w.get(&a).expect("listed").shape,
            &w.get(&b).expect("listed").shape,
        );
        // Linear: A (r, in), B (out, r). Embedding: A (r, num), B (dim, r).
        let rank = sa[0];
        if sb[1] != rank {
            return Err(bad(
                &b,
                format!("has shape {sb:?} but its A factor '{a}' is {sa:?}: the ranks differ"),
            ));
        }
        let (r, alpha) = config.rank_alpha(&module);
        if r != rank {
            return Err(bad(
                &a,
                format!("has rank {rank} but the config gives module '{module}' rank {r}"),
            ));
        }
        let stored = replaced.remove(module.as_str());
        out.push(Module {
            tensor: format!("{module}.weight"),
            module,
            kind,
            rank,
            scaling: config.scaling(rank, alpha),
            replaced: stored,
            a,
            b,
        });
    }
    // A stored base layer without LoRA factors: the module's weight, whole.
    for (module, key) in replaced {
        out.push(Module {
            tensor: format!("{module}.weight"),
            module,
            kind: ModuleKind::Whole,
            rank: 0,
            scaling: 1.0,
            a: key.clone(),
            b: key,
            replaced: None,
        });
    }
    if out.is_empty() {
        return Err(bad("", "the adapter holds no LoRA tensors".into()));
    }
    out.sort_by(|x, y| x.tensor.cmp(&y.tensor));
    for w2 in out.windows(2) {
        if w2[0].tensor == w2[1].tensor {
            return Err(bad(
                &w2[1].tensor,
                "is both adapted by LoRA and stored whole".into(),
            ));
        }
    }
    Ok(out)
}
