//! The best rank-r PEFT adapter for a full fine-tune: each 2-D weight's
//! residual R = W_trained - W_base truncated to its top r singular triplets
//! (Eckart-Young: the least Frobenius error of any rank-r matrix), written as
//! LoRA factors B = U_r·sqrt(S_r), A = sqrt(S_r)·V_r^T with alpha = r, so
//! PEFT's ΔW = (alpha/r)·B·A is exactly the truncation. Token and position
//! embeddings become `lora_embedding_A/B`; GPT-2's Conv1D weights, stored
//! (in, out), get the factors of R^T and `fan_in_fan_out: true`, as PEFT
//! builds them. The error of each layer is the norm of the singular values
//! left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faer::Mat;
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::{Checkpoint, Component, Layout};
use serde::Serialize;

use crate::adapter::{ModuleKind, PREFIX, WEIGHTS_FILE};
use crate::config::{WrittenConfig, CONFIG_FILE};
use crate::error::{LoraError, Result};
use crate::orientation::{self, WeightLayout, CONV1D_MODULES};

/// What to extract.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// The LoRA rank of every module (smaller matrices are padded with zero
    /// factors, so one rank holds for all and PEFT needs no rank_pattern).
    pub rank: usize,
    /// Also give token and position embeddings LoRA factors (PEFT supports them).
    pub embeddings: bool,
    /// Written into the config as `base_model_name_or_path`.
    pub base_name: Option<String>,
    /// How the linear weights are stored (detected by default).
    pub layout: WeightLayout,
}

/// One layer of the written adapter, with its truncation error.
#[derive(Clone, Debug, Serialize)]
pub struct LayerError {
    pub tensor: String,
    pub module: String,
    /// "linear", "conv1d" (weight stored (in, out)) or "embedding".
    pub kind: &'static str,
    pub shape: Vec<usize>,
    /// Singular triplets kept: min(rank, rows, cols).
    pub rank: usize,
    /// ||R||_F.
    pub residual_norm: f64,
    /// ||R - R_r||_F: the norm of the singular values left out.
    pub error_norm: f64,
    /// error_norm / residual_norm (0 for a residual of rank <= r).
    pub relative_error: f64,
}

/// A tensor that changed but is not in the adapter, and why.
#[derive(Clone, Debug, Serialize)]
pub struct LeftOut {
    pub tensor: String,
    pub reason: String,
    /// ||W_trained - W_base||_F over the shared shape (null when shapes differ).
    pub residual_norm: Option<f64>,
}

/// What `extract` wrote and how well it fits.
#[derive(Clone, Debug, Serialize)]
pub struct ExtractReport {
    pub adapter: PathBuf,
    pub rank: usize,
    pub layers: Vec<LayerError>,
    /// Tensors whose residual the adapter does not carry (norms, biases,
    /// resized or non-float tensors).
    pub left_out: Vec<LeftOut>,
    /// Unchanged tensors (residual exactly zero), not adapted.
    pub unchanged: usize,
    /// Bytes of adapter_model.safetensors.
    pub adapter_bytes: u64,
    /// sqrt(sum of error_norm^2) / sqrt(sum of residual_norm^2) over the adapted layers.
    pub relative_error: f64,
    /// The config's `fan_in_fan_out`: some adapted weight is Conv1D's (in, out).
    pub fan_in_fan_out: bool,
    /// How the weight layout was decided ("asked for", or what [`orientation::detect`] saw).
    pub layout: String,
}

/// A truncated residual: B (out × rank), A (rank × in), both f32 row-major.
struct Factors {
    layer: LayerError,
    a: (Vec<usize>, Vec<f32>),
    b: (Vec<usize>, Vec<f32>),
    kind: ModuleKind,
}

/// Extracts the adapter into `out` (created; its two files written atomically).
pub fn extract(
    base: &Checkpoint,
    trained: &Checkpoint,
    out: &Path,
    opts: &ExtractOptions,
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> Result<ExtractReport> {
    if opts.rank == 0 {
        return Err(LoraError::Usage("the LoRA rank must be at least 1".into()));
    }
    let layout = Layout::builtin();
    let (family_conv1d, layout_why) = match opts.layout {
        WeightLayout::Detect => {
            let d = orientation::detect(trained, base);
            (d.conv1d, d.why)
        }
        WeightLayout::Linear => (false, "asked for: every weight (out, in)".to_string()),
        WeightLayout::Conv1D => (
            true,
            "asked for: every adapted weight (in, out)".to_string(),
        ),
    };
    // A detected Conv1D model's other linears (lm_head) stay nn.Linear.
    let is_conv1d = |name: &str| match opts.layout {
        WeightLayout::Detect => {
            family_conv1d && orientation::leaf(name).is_some_and(|l| CONV1D_MODULES.contains(&l))
        }
        WeightLayout::Linear => false,
        WeightLayout::Conv1D => true,
    };
    let pairing = resid_io::pair_all(base, trained);
    let mut left_out: Vec<LeftOut> = Vec::new();
    for r in &pairing.resized {
        left_out.push(LeftOut {
            tensor: trained.tensors()[r.trained].name.clone(),
            reason: format!(
                "resized ({} -> {} rows): a LoRA factor cannot add rows",
                r.base_rows, r.trained_rows
            ),
            residual_norm: None,
        });
    }
    for m in &pairing.mismatched {
        left_out.push(LeftOut {
            tensor: trained.tensors()[m.trained].name.clone(),
            reason: "its shape differs from the base's".into(),
            residual_norm: None,
        });
    }
    for n in &pairing.only_trained {
        left_out.push(LeftOut {
            tensor: n.clone(),
            reason: "not in the base".into(),
            residual_norm: None,
        });
    }
    let total = pairing.pairs.len();
    let mut factors = Vec::new();
    let mut unchanged = 0;
    let (mut wb, mut wt) = (Vec::new(), Vec::new());
    for (i, &(bi, ti)) in pairing.pairs.iter().enumerate() {
        let (be, te) = (&base.tensors()[bi], &trained.tensors()[ti]);
        progress(i, total, &te.name);
        if be.dtype.is_none() || te.dtype.is_none() {
            if base.bytes(be) != trained.bytes(te) {
                left_out.push(LeftOut {
                    tensor: te.name.clone(),
                    reason: format!("dtype {}: not a float tensor", te.dtype_name),
                    residual_norm: None,
                });
            } else {
                unchanged += 1;
            }
            continue;
        }
        base.read_f32(be, &mut wb)?;
        trained.read_f32(te, &mut wt)?;
        let norm = wt
            .iter()
            .zip(&wb)
            .map(|(t, b)| ((t - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            unchanged += 1;
            continue;
        }
        let module = te.name.strip_suffix(".weight");
        let meta = layout.classify(&te.name, &te.shape);
        let is_emb = meta.component == Component::Embedding
            && matches!(meta.role.as_str(), "tok" | "pos" | "type");
        let (Some(module), 2) = (module, te.shape.len()) else {
            left_out.push(LeftOut {
                tensor: te.name.clone(),
                reason: if te.shape.len() == 2 {
                    "not a module's weight".into()
                } else {
                    format!("{}-D: LoRA adapts 2-D weights", te.shape.len())
                },
                residual_norm: Some(norm),
            });
            continue;
        };
        if is_emb && !opts.embeddings {
            left_out.push(LeftOut {
                tensor: te.name.clone(),
                reason: "an embedding, and embeddings were not asked for".into(),
                residual_norm: Some(norm),
            });
            continue;
        }
        let (rows, cols) = (te.shape[0], te.shape[1]);
        let r: Vec<f64> = wt.iter().zip(&wb).map(|(t, b)| (t - b) as f64).collect();
        // Embedding and Conv1D ΔW = (B·A)^T: factor R^T, so B is (cols, r)
        // and A is (r, rows) (embedding: (dim, r), (r, num); Conv1D: (out, r), (r, in)).
        let kind = if is_emb {
            ModuleKind::Embedding
        } else {
            ModuleKind::Linear
        };
        let conv1d = !is_emb && is_conv1d(&te.name);
        let f = truncate(&r, rows, cols, is_emb || conv1d, opts.rank).map_err(|reason| {
            LoraError::BadTensor {
                path: trained.file_of(te).to_path_buf(),
                tensor: te.name.clone(),
                reason,
            }
        })?;
        factors.push(Factors {
            layer: LayerError {
                tensor: te.name.clone(),
                module: module.to_string(),
                kind: if conv1d { "conv1d" } else { kind.name() },
                shape: te.shape.clone(),
                rank: f.kept,
                residual_norm: norm,
                error_norm: f.error,
                relative_error: f.error / norm,
            },
            a: f.a,
            b: f.b,
            kind,
        });
    }
    progress(total, total, "");
    std::fs::create_dir_all(out).map_err(|source| LoraError::File {
        path: out.to_path_buf(),
        source,
    })?;
    let adapter_bytes = write_weights(&out.join(WEIGHTS_FILE), &factors)?;
    let fan_in_fan_out = factors.iter().any(|f| f.layer.kind == "conv1d");
    write_config(out, &factors, opts, fan_in_fan_out)?;
    let (e2, r2) = factors.iter().fold((0.0, 0.0), |(e, r), f| {
        (
            e + f.layer.error_norm.powi(2),
            r + f.layer.residual_norm.powi(2),
        )
    });
    Ok(ExtractReport {
        adapter: out.to_path_buf(),
        rank: opts.rank,
        layers: factors.into_iter().map(|f| f.layer).collect(),
        left_out,
        unchanged,
        adapter_bytes,
        relative_error: if r2 > 0.0 { (e2 / r2).sqrt() } else { 0.0 },
        fan_in_fan_out,
        layout: layout_why,
    })
}

struct Truncated {
    a: (Vec<usize>, Vec<f32>),
    b: (Vec<usize>, Vec<f32>),
    kept: usize,
    error: f64,
}

/// Top-`rank` SVD of R (rows × cols), or of R^T when `transpose`: B = U·sqrt(S)
/// (m × rank), A = sqrt(S)·V^T (rank × n), zero-padded past min(m, n).
fn truncate(
    r: &[f64],
    rows: usize,
    cols: usize,
    transpose: bool,
    rank: usize,
) -> std::result::Result<Truncated, String> {
    let (m, n) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mat = Mat::<f64>::from_fn(m, n, |i, j| {
        if transpose {
            r[j * cols + i]
        } else {
            r[i * cols + j]
        }
    });
    if r.iter().any(|x| !x.is_finite()) {
        return Err("the residual holds NaN or Inf".into());
    }
    let svd = mat
        .thin_svd()
        .map_err(|e| format!("the SVD did not converge: {e:?}"))?;
    let s = svd.S().column_vector();
    let (u, v) = (svd.U(), svd.V());
    let kept = rank.min(m.min(n));
    let mut a = vec![0f32; rank * n];
    let mut b = vec![0f32; m * rank];
    for j in 0..kept {
        let sq = s[j].max(0.0).sqrt();
        for i in 0..m {
            b[i * rank + j] = (u[(i, j)] * sq) as f32;
        }
        for c in 0..n {
            a[j * n + c] = (v[(c, j)] * sq) as f32;
        }
    }
    let error = (kept..m.min(n)).map(|j| s[j] * s[j]).sum::<f64>().sqrt();
    Ok(Truncated {
        a: (vec![rank, n], a),
        b: (vec![m, rank], b),
        kept,
        error,
    })
}

fn key_names(f: &Factors) -> (String, String) {
    let m = &f.layer.module;
    match f.kind {
        ModuleKind::Embedding => (
            format!("{PREFIX}{m}.lora_embedding_A"),
            format!("{PREFIX}{m}.lora_embedding_B"),
        ),
        _ => (
            format!("{PREFIX}{m}.lora_A.weight"),
            format!("{PREFIX}{m}.lora_B.weight"),
        ),
    }
}

fn write_weights(path: &Path, factors: &[Factors]) -> Result<u64> {
    let mut specs = Vec::new();
    for f in factors {
        let (ka, kb) = key_names(f);
        for (k, (shape, _)) in [(ka, &f.a), (kb, &f.b)] {
            specs.push(TensorSpec {
                name: k,
                dtype_name: "F32".into(),
                shape: shape.clone(),
            });
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let mut w = SafetensorsWriter::create(path, specs, &meta)?;
    for f in factors {
        let (ka, kb) = key_names(f);
        w.write_tensor(&ka, bytemuck::cast_slice(&f.a.1))?;
        w.write_tensor(&kb, bytemuck::cast_slice(&f.b.1))?;
    }
    w.finish()?;
    Ok(std::fs::metadata(path)
        .map_err(|source| LoraError::File {
            path: path.to_path_buf(),
            source,
        })?
        .len())
}

fn write_config(
    out: &Path,
    factors: &[Factors],
    opts: &ExtractOptions,
    fan_in_fan_out: bool,
) -> Result<()> {
    let cfg = WrittenConfig {
        peft_type: "LORA",
        task_type: None,
        base_model_name_or_path: opts.base_name.clone(),
        r: opts.rank,
        lora_alpha: opts.rank,
        lora_dropout: 0.0,
        bias: "none",
        fan_in_fan_out,
        use_rslora: false,
        use_dora: false,
        target_modules: factors.iter().map(|f| f.layer.module.clone()).collect(),
        modules_to_save: None,
        rank_pattern: BTreeMap::new(),
        alpha_pattern: BTreeMap::new(),
        init_lora_weights: true,
        inference_mode: true,
    };
    let text = serde_json::to_string_pretty(&cfg).expect("config serialises");
    resid_io::atomic::write_atomic(&out.join(CONFIG_FILE), text.as_bytes())?;
    Ok(())
}
