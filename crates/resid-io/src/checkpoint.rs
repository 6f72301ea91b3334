//! Reading checkpoints: one `.safetensors` file, or a folder holding
//! `model.safetensors` or `model.safetensors.index.json` with its shards.
//! Files are memory-mapped; tensors are converted to f32 one at a time into
//! buffers the caller reuses, so memory stays bounded by the largest tensor.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::Dtype;
use crate::error::{IoError, Result};
use crate::header::{dtype_size, RawHeader, MAX_HEADER};

/// One tensor of a checkpoint: where its bytes are and what they mean.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// The header's dtype spelling (e.g. "BF16", "I64").
    pub dtype_name: String,
    /// The dtype when resid can read it as floats.
    pub dtype: Option<Dtype>,
    pub shape: Vec<usize>,
    /// Index of the shard file holding it.
    pub shard: usize,
    /// Absolute byte range in that file.
    pub start: usize,
    pub end: usize,
}

impl TensorEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Number of bytes.
    pub fn nbytes(&self) -> usize {
        self.end - self.start
    }
}

struct Shard {
    path: PathBuf,
    map: Option<Mmap>,
    metadata: BTreeMap<String, String>,
}

/// An opened checkpoint (single file or sharded).
pub struct Checkpoint {
    root: PathBuf,
    shards: Vec<Shard>,
    tensors: Vec<TensorEntry>,
    by_name: HashMap<String, usize>,
    sharded: bool,
}

impl Checkpoint {
    /// Opens a `.safetensors` file or a checkpoint folder, validating every
    /// header: lengths, offsets, dtype x shape against byte counts, names.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let meta = std::fs::metadata(path).map_err(|e| IoError::io(path, e))?;
        let (files, map) = if meta.is_dir() {
            let single = path.join("model.safetensors");
            let index = path.join("model.safetensors.index.json");
            // A name that exists but does not resolve (a symlink loop, a
            // dangling link) is an error about that name, not "no checkpoint".
            for p in [&index, &single] {
                if std::fs::symlink_metadata(p).is_ok() {
                    std::fs::metadata(p).map_err(|e| IoError::io(p, e))?;
                }
            }
            if index.is_file() {
                shards_from_index(&index)?
            } else if single.is_file() {
                (vec![single], None)
            } else if let Some(p) = ["pytorch_model.bin.index.json", "pytorch_model.bin"]
                .iter()
                .map(|n| path.join(n))
                .find(|p| p.exists())
            {
                return Err(IoError::PickleCheckpoint { path: p });
            } else {
                return Err(IoError::NoCheckpoint { path: path.into() });
            }
        } else if is_index(path) {
            shards_from_index(path)?
        } else {
            (vec![path.to_path_buf()], None)
        };
        let mut ck = Checkpoint {
            root: path.to_path_buf(),
            shards: Vec::new(),
            tensors: Vec::new(),
            by_name: HashMap::new(),
            sharded: map.is_some(),
        };
        for (i, f) in files.iter().enumerate() {
            let (shard, entries) = open_shard(f, i)?;
            for e in entries {
                if ck.by_name.contains_key(&e.name) {
                    return Err(IoError::BadTensor {
                        path: f.clone(),
                        tensor: e.name,
                        reason: "appears in more than one shard".into(),
                    });
                }
                ck.by_name.insert(e.name.clone(), ck.tensors.len());
                ck.tensors.push(e);
            }
            ck.shards.push(shard);
        }
        if let Some((index, map)) = &map {
            ck.check_weight_map(index, map)?;
        }
        Ok(ck)
    }

    /// Every tensor of the index's weight map lies in the shard it names,
    /// and every tensor of the shards is in the map.
    fn check_weight_map(&self, index: &Path, map: &BTreeMap<String, String>) -> Result<()> {
        let bad = |reason: String| IoError::BadIndex {
            path: index.to_path_buf(),
            reason,
        };
        if let Some(t) = self.tensors.iter().find(|t| !map.contains_key(&t.name)) {
            return Err(bad(format!(
                "tensor '{}' of {} is missing from the weight map",
                t.name,
                self.file_of(t).display()
            )));
        }
        for (name, file) in map {
            let Some(t) = self.get(name) else {
                return Err(bad(format!(
                    "tensor '{name}' is mapped to {file}, which does not hold it"
                )));
            };
            let holder = self.file_of(t);
            if holder.file_name().is_none_or(|f| f != file.as_str()) {
                return Err(bad(format!(
                    "tensor '{name}' is mapped to {file} but lies in {}",
                    holder.display()
                )));
            }
        }
        Ok(())
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether it came from a shard index.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Shard file paths, in index order.
    pub fn shard_paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The file holding a tensor.
    pub fn file_of(&self, t: &TensorEntry) -> &Path {
        &self.shards[t.shard].path
    }

    /// All tensors, shard by shard, in data order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// Position of a tensor in [`tensors`](Self::tensors).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The `__metadata__` of a shard (the first for single files).
    pub fn metadata(&self, shard: usize) -> &BTreeMap<String, String> {
        &self.shards[shard].metadata
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.nbytes()).sum()
    }

    /// The raw little-endian bytes of a tensor (memory-mapped, no copy).
    pub fn bytes(&self, t: &TensorEntry) -> &[u8] {
        match &self.shards[t.shard].map {
            Some(m) => &m[t.start..t.end],
            None => &[],
        }
    }

    /// Converts a tensor to f32 into `out` (resized; reuse it across calls).
    pub fn read_f32(&self, t: &TensorEntry, out: &mut Vec<f32>) -> Result<()> {
        let Some(d) = t.dtype else {
            return Err(IoError::UnsupportedDtype {
                path: self.file_of(t).to_path_buf(),
                tensor: t.name.clone(),
                dtype: t.dtype_name.clone(),
            });
        };
        d.to_f32(self.bytes(t), out);
        Ok(())
    }

    /// Drops a tensor's pages from this process's mapping once it has been
    /// read (`MADV_DONTNEED`; they stay in the page cache and fault back in
    /// if read again), so resident memory follows the tensors in flight,
    /// not the bytes read so far.
    pub fn release(&self, t: &TensorEntry) {
        #[cfg(unix)]
        if let Some(m) = &self.shards[t.shard].map {
            if t.end > t.start {
                // SAFETY: the map is a read-only shared file mapping, so
                // dropping its pages loses nothing: a later access faults
                // the same file bytes back in.
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        t.start,
                        t.end - t.start,
                    )
                };
            }
        }
    }

    /// Asks the kernel to start reading `len` bytes of a tensor from `offset`
    /// into the page cache (`MADV_WILLNEED`; returns before the read ends).
    /// Linux reads at most `read_ahead_kb` (often 128 KiB-8 MiB) per call,
    /// so the range is advised in 2 MiB pieces: one call for a whole tensor
    /// would load only its first few MiB.
    pub fn will_need(&self, t: &TensorEntry, offset: usize, len: usize) {
        const PIECE: usize = 2 << 20;
        #[cfg(unix)]
        if let Some(m) = &self.shards[t.shard].map {
            let start = t.start + offset;
            let end = start + len.min(t.end.saturating_sub(start));
            let mut at = start;
            while at < end {
                let n = PIECE.min(end - at);
                let _ = m.advise_range(memmap2::Advice::WillNeed, at, n);
                at += n;
            }
        }
    }

    /// Hints the kernel that a tensor will be read once, front to back.
    pub fn advise_sequential(&self) {
        #[cfg(unix)]
        for s in &self.shards {
            if let Some(m) = &s.map {
                let _ = m.advise(memmap2::Advice::Sequential);
            }
        }
    }
}

fn is_index(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
}

/// The index's weight map (tensor name -> shard file name), each shard name
/// a plain file name inside the index's folder.
fn weight_map(index: &Path) -> Result<BTreeMap<String, String>> {
    let bad = |reason: String| IoError::BadIndex {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| IoError::io(index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut out = BTreeMap::new();
    for (name, f) in map {
        let f = f
            .as_str()
            .ok_or_else(|| bad(format!("tensor '{name}' maps to a non-string")))?;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f == "." || f == ".." {
            return Err(bad(format!("shard name '{f}' is not a plain file name")));
        }
        out.insert(name.clone(), f.to_string());
    }
    if out.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(out)
}

/// The index's shards (sorted, each once) and the index with its weight map.
type Sharding = (Vec<PathBuf>, Option<(PathBuf, BTreeMap<String, String>)>);

fn shards_from_index(index: &Path) -> Result<Sharding> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let map = weight_map(index)?;
    let mut files: Vec<&String> = map.values().collect();
    files.sort();
    files.dedup();
    let files = files.into_iter().map(|f| dir.join(f)).collect();
    Ok((files, Some((index.to_path_buf(), map))))
}

fn open_shard(path: &Path, shard: usize) -> Result<(Shard, Vec<TensorEntry>)> {
    let file = File::open(path).map_err(|e| IoError::io(path, e))?;
    if is_pickle(&file, path) {
        return Err(IoError::PickleCheckpoint {
            path: path.to_path_buf(),
        });
    }
    let len = file.metadata().map_err(|e| IoError::io(path, e))?.len();
    if len < 8 {
        return Err(IoError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("file is {len} bytes, shorter than the 8-byte header length"),
        });
    }
    // SAFETY: the map is read-only; resid never writes to its inputs. A file
    // changed by another process while mapped is outside what it can guard.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| IoError::io(path, e))?;
    let (metadata, entries) = parse_layout(path, &map, shard)?;
    Ok((
        Shard {
            path: path.to_path_buf(),
            map: Some(map),
            metadata,
        },
        entries,
    ))
}

/// Whether a file is a PyTorch checkpoint rather than safetensors: a zip
/// (torch.save since 1.6) or a bare pickle (protocol 2-5), by its first bytes.
fn is_pickle(mut file: &File, path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    let zip = file.read_exact(&mut head).is_ok() && &head == b"PK\x03\x04";
    let pickle = head[0] == 0x80 && (2..=5).contains(&head[1]);
    let named = path
        .extension()
        .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
    zip || (pickle && named)
}

/// Parses and checks a whole safetensors file's header against its length:
/// the fuzz target's entry point. `path` only names the file in errors.
pub fn parse_layout(
    path: &Path,
    file: &[u8],
    shard: usize,
) -> Result<(BTreeMap<String, String>, Vec<TensorEntry>)> {
    let bad = |reason: String| IoError::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    let len = file.len() as u64;
    if len < 8 {
        return Err(bad(format!(
            "file is {len} bytes, shorter than the 8-byte header length"
        )));
    }
    let n = u64::from_le_bytes(file[..8].try_into().unwrap());
    if n > MAX_HEADER {
        return Err(bad(format!(
            "header length {n} exceeds the {MAX_HEADER}-byte limit"
        )));
    }
    if 8 + n > len {
        return Err(bad(format!(
            "header length {n} runs past the end of the {len}-byte file (truncated?)"
        )));
    }
    let hdr = std::str::from_utf8(&file[8..8 + n as usize])
        .map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let raw: RawHeader = serde_json::from_str(hdr.trim_end_matches(' '))
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_start = 8 + n;
    let data_len = len - data_start;
    let mut entries = Vec::with_capacity(raw.tensors.len());
    for (name, e) in raw.tensors {
        let tbad = |reason: String| IoError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let size =
            dtype_size(&e.dtype).ok_or_else(|| tbad(format!("unknown dtype '{}'", e.dtype)))?;
        let numel = e
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tbad(format!("shape {:?} overflows", e.shape)))?;
        let want = numel
            .checked_mul(size)
            .ok_or_else(|| tbad(format!("shape {:?} overflows", e.shape)))?;
        let (s, t) = e.data_offsets;
        if t < s {
            return Err(tbad(format!(
                "data offsets [{s}, {t}] end before they start"
            )));
        }
        if t > data_len {
            return Err(tbad(format!(
                "data offsets [{s}, {t}] lie outside the {data_len}-byte data section (truncated file?)"
            )));
        }
        if t - s != want {
            return Err(tbad(format!(
                "{} x {:?} needs {want} bytes but its offsets [{s}, {t}] give {}",
                e.dtype,
                e.shape,
                t - s
            )));
        }
        entries.push(TensorEntry {
            dtype: Dtype::parse(&e.dtype),
            dtype_name: e.dtype,
            shape: e.shape.iter().map(|&d| d as usize).collect(),
            shard,
            start: (data_start + s) as usize,
            end: (data_start + t) as usize,
            name,
        });
    }
    entries.sort_by_key(|e| e.start);
    for w in entries.windows(2) {
        if w[1].start < w[0].end {
            return Err(IoError::BadTensor {
                path: path.to_path_buf(),
                tensor: w[1].name.clone(),
                reason: format!("its data overlaps tensor '{}'", w[0].name),
            });
        }
    }
    Ok((raw.metadata, entries))
}
