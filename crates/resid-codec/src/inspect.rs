//! `inspect`: what a residual file holds, from its validated header.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::container::*;
use crate::decode::ResidFile;
use crate::error::Result;

/// `inspect`: the header plus per-tensor figures.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub file: String,
    pub version: u32,
    pub mode: FileMode,
    pub file_bytes: u64,
    pub settings: Settings,
    pub params: u64,
    pub bits_per_param: f64,
    pub entropy_bytes: f64,
    pub coded_bytes: u64,
    pub entropy_overhead: f64,
    pub residual_rel_error: f64,
    pub weight_rel_error: f64,
    pub sharded: bool,
    pub shards: Vec<String>,
    /// Shards kept with their original safetensors header (byte-identical rebuild).
    pub original_headers: usize,
    /// Stored non-tensor files of the model folder.
    pub files: Vec<String>,
    pub provenance: Option<Provenance>,
    pub tensors: Vec<InspectTensor>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectTensor {
    pub name: String,
    pub dtype: ElementType,
    pub shape: Vec<u64>,
    pub encoding: String,
    pub blocks: usize,
    pub coded_bytes: u64,
    pub entropy_bytes: f64,
    pub bits_per_param: f64,
    pub base_xxh3: Option<String>,
    pub trained_xxh3: Option<String>,
}

/// Describes a residual file (header validated; block checksums not read).
pub fn inspect(path: &Path) -> Result<InspectReport> {
    let rf = ResidFile::open(path)?;
    let h = &rf.header;
    let mut tensors = Vec::new();
    let mut coded = 0u64;
    let mut ent = 0.0;
    for t in &h.tensors {
        let bl = t.blocks();
        let c: u64 = bl.iter().map(|b| b.len).sum();
        let e: f64 = bl.iter().map(|b| b.bits / 8.0).sum();
        coded += c;
        ent += e;
        tensors.push(InspectTensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            encoding: t.encoding.label(),
            blocks: bl.len(),
            coded_bytes: c,
            entropy_bytes: e,
            bits_per_param: if t.numel() > 0 {
                c as f64 * 8.0 / t.numel() as f64
            } else {
                0.0
            },
            base_xxh3: t.base.as_ref().map(|b| b.xxh3.clone()),
            trained_xxh3: t.trained_xxh3.clone(),
        });
    }
    let params: u64 = h.tensors.iter().map(|t| t.numel()).sum();
    Ok(InspectReport {
        file: path.display().to_string(),
        version: h.version,
        mode: h.mode,
        file_bytes: rf.file_len,
        settings: h.settings.clone(),
        params,
        bits_per_param: rf.file_len as f64 * 8.0 / params.max(1) as f64,
        entropy_bytes: ent,
        coded_bytes: coded,
        entropy_overhead: if ent > 0.0 {
            coded as f64 / ent - 1.0
        } else {
            0.0
        },
        residual_rel_error: h.stats.residual_rel_error,
        weight_rel_error: h.stats.weight_rel_error,
        sharded: h.trained.sharded,
        shards: h.trained.shards.iter().map(|s| s.file.clone()).collect(),
        original_headers: h
            .trained
            .shards
            .iter()
            .filter(|s| s.original.is_some())
            .count(),
        files: h.files.iter().map(|f| f.path.clone()).collect(),
        provenance: h.provenance.clone(),
        tensors,
    })
}

/// Metadata of every shard, for callers that rebuild in memory.
pub fn shard_metadata(rf: &ResidFile) -> Vec<BTreeMap<String, String>> {
    rf.header
        .trained
        .shards
        .iter()
        .map(|s| s.metadata.clone())
        .collect()
}
