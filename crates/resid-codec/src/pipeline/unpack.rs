//! `unpack`: base and residual file in, the trained checkpoint out.

use std::path::{Path, PathBuf};

use serde::Serialize;

use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::Checkpoint;

use crate::container::{FileMode, OriginalHeader, INDEX_FILE};
use crate::decode::tensor::{span_batches, SpanDecoder};
use crate::decode::ResidFile;
use crate::error::{CodecError, Result, SpecialFile};
use resid_io::atomic::AtomicFile;

/// What an unpack did.
#[derive(Clone, Debug, Serialize)]
pub struct UnpackReport {
    pub tensors: usize,
    pub bytes: u64,
    pub outputs: Vec<String>,
}

/// How an unpack writes its output.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Trained bytes decoded together (memory bound).
    pub batch_bytes: usize,
    /// Replace files that exist at the output (else they are refused before
    /// anything is written).
    pub force: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            batch_bytes: 64 << 20,
            force: false,
        }
    }
}

/// Rebuilds the trained checkpoint from `base` and the residual file at
/// `resid` into `out` (a file, or a folder when the trained side was sharded).
pub fn unpack(base: &Checkpoint, resid: &Path, out: &Path) -> Result<UnpackReport> {
    unpack_with(base, resid, out, &UnpackOptions::default(), &|_| {})
}

/// [`unpack`] with a batch size and a progress callback (bytes written).
pub fn unpack_with_progress(
    base: &Checkpoint,
    resid: &Path,
    out: &Path,
    batch_bytes: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<UnpackReport> {
    let opts = UnpackOptions {
        batch_bytes,
        force: false,
    };
    unpack_with(base, resid, out, &opts, progress)
}

/// Bytes the rebuild will write, from the header alone: every tensor, every
/// stored file, each shard's safetensors header and the index (their text
/// estimated from the names when not recorded).
pub fn output_bytes(h: &crate::container::Header) -> u64 {
    let tensors: u64 = h.tensors.iter().map(|t| t.nbytes()).sum();
    let files: u64 = h.files.iter().map(|f| f.size).sum();
    let headers: u64 = h
        .trained
        .shards
        .iter()
        .map(|s| match &s.original {
            Some(o) => 8 + o.header.len() as u64,
            None => {
                8 + 64
                    + s.metadata
                        .iter()
                        .map(|(k, v)| (k.len() + v.len() + 6) as u64)
                        .sum::<u64>()
            }
        })
        .sum::<u64>()
        + h.tensors
            .iter()
            .map(|t| t.name.len() as u64 + 96)
            .sum::<u64>();
    let index = if h.trained.sharded {
        64 + h
            .tensors
            .iter()
            .map(|t| (t.name.len() + h.trained.shards[t.shard as usize].file.len() + 10) as u64)
            .sum::<u64>()
    } else {
        0
    };
    tensors + files + headers + index
}

/// FORMAT.md 6: "the total a file expands to, known from its header, is
/// checked against the free space of the output's file system before
/// anything is written".
fn check_space(out: &Path, need: u64) -> Result<()> {
    let Some(dir) = out
        .ancestors()
        .skip(if out.is_dir() { 0 } else { 1 })
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.is_dir())
    else {
        return Ok(());
    };
    if let Some(free) = free_space(dir) {
        if need > free {
            return Err(CodecError::NoSpace {
                path: out.into(),
                need,
                free,
                fs: dir.into(),
            });
        }
    }
    Ok(())
}

/// Bytes available to this user on the file system holding `dir`
/// (statvfs's `f_bavail * f_frsize`), when the system says.
#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// An exclusive advisory lock on the output folder, held for the whole
/// unpack: two unpacks into one folder run one after the other, so the
/// second sees the first's complete output (and refuses to overwrite it
/// unless forced) instead of mixing files with it.
struct FolderLock {
    #[cfg(unix)]
    _dir: std::fs::File,
}

impl FolderLock {
    #[cfg(unix)]
    fn take(dir: &Path) -> Result<FolderLock> {
        let f = std::fs::File::open(dir).map_err(|e| CodecError::io(dir, e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| CodecError::io(dir, e.into()))?;
        Ok(FolderLock { _dir: f })
    }

    #[cfg(not(unix))]
    fn take(_dir: &Path) -> Result<FolderLock> {
        Ok(FolderLock {})
    }
}

/// A target of the unpack: refused when something is there already, unless
/// forced (FORMAT.md 6). `given` is the output path the caller named: a
/// device or pipe there is written (`-o /dev/null`); inside an output
/// folder one is refused, forced or not, as a symlink is.
fn check_target(p: &Path, force: bool, given: bool) -> Result<()> {
    let m = match std::fs::symlink_metadata(p) {
        Err(_) => return Ok(()),
        Ok(m) => m,
    };
    let special = !m.is_file() && !m.is_dir() && !m.file_type().is_symlink();
    if special && given {
        return Ok(());
    }
    if !given && (special || m.file_type().is_symlink()) {
        let kind = if special {
            SpecialFile::Device
        } else {
            SpecialFile::Symlink
        };
        return Err(CodecError::OutputInTheWay {
            path: p.into(),
            kind,
        });
    }
    if force && !m.is_dir() {
        return Ok(());
    }
    Err(CodecError::OutputExists { path: p.into() })
}

/// [`unpack`] with its options and a progress callback (bytes written).
/// Nothing is written unless the whole rebuild fits the output's file
/// system and no target exists (or `force`); files appear by atomic rename
/// once every tensor and file passed its checks, and a failure removes
/// what this unpack created.
pub fn unpack_with(
    base: &Checkpoint,
    resid: &Path,
    out: &Path,
    opts: &UnpackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<UnpackReport> {
    let rf = ResidFile::open(resid)?;
    let h = &rf.header;
    let force = opts.force;
    let shards = &h.trained.shards;
    let folder = h.trained.sharded || h.trained.folder;
    check_space(out, output_bytes(h))?;
    let mut paths = Vec::new();
    // Folders this unpack made (the output folder and its missing
    // ancestors, stored files' subfolders), removed again on failure.
    let mut made: Vec<PathBuf> = Vec::new();
    let mut _lock = None;
    if folder {
        if std::fs::symlink_metadata(out).is_ok_and(|m| !m.is_dir() && !out.is_dir()) {
            return Err(CodecError::OutputExists { path: out.into() });
        }
        let mut missing: Vec<&Path> = out
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .collect();
        missing.reverse();
        for m in missing {
            match std::fs::create_dir(m) {
                Ok(()) => made.push(m.to_path_buf()),
                // Another unpack made it first: share it under the lock.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    remove_made(&made);
                    return Err(CodecError::io(m, e));
                }
            }
        }
        _lock = Some(FolderLock::take(out).inspect_err(|_| remove_made(&made))?);
        for s in shards {
            paths.push(out.join(&s.file));
        }
    } else {
        paths.push(out.to_path_buf());
    }
    let mut committed: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<UnpackReport> {
        let write_index = h.trained.sharded && !h.files.iter().any(|f| f.path == INDEX_FILE);
        // Every target checked before anything is written.
        let stored_paths: Vec<PathBuf> = h
            .files
            .iter()
            .map(|f| super::folder::output_path(out, &f.path))
            .collect::<Result<_>>()?;
        for p in &paths {
            check_target(p, force, !folder)?;
        }
        for p in &stored_paths {
            check_target(p, force, false)?;
        }
        if write_index {
            check_target(&out.join(INDEX_FILE), force, false)?;
        }
        let atomic = |p: &Path| -> Result<AtomicFile> {
            let a = AtomicFile::create(p)?;
            Ok(if force { a } else { a.no_replace() })
        };
        // Stored files first, to temporaries: a damaged one stops the unpack
        // before any shard is in place.
        let mut stored = Vec::new();
        for (f, p) in h.files.iter().zip(&stored_paths) {
            if let Some(dir) = p.parent() {
                let mut missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
                missing.reverse();
                for m in missing {
                    std::fs::create_dir(m).map_err(|e| CodecError::io(m, e))?;
                    made.push(m.to_path_buf());
                }
            }
            let mut a = atomic(p)?;
            crate::decode::files::decode_file_into(&rf, f, &mut a, p)?;
            stored.push((a, p.clone()));
        }
        let mut writers: Vec<ShardWriter> = Vec::new();
        for (si, s) in shards.iter().enumerate() {
            let specs = h
                .tensors
                .iter()
                .filter(|t| t.shard == si as u64)
                .map(|t| TensorSpec {
                    name: t.name.clone(),
                    dtype_name: t.dtype.name().into(),
                    shape: t.shape.iter().map(|&x| x as usize).collect(),
                })
                .collect();
            let p = &paths[si.min(paths.len() - 1)];
            writers.push(match &s.original {
                Some(o) => ShardWriter::original(atomic(p)?, p, o, h.mode == FileMode::Lossless)?,
                None => {
                    let w = SafetensorsWriter::create(p, specs, &s.metadata)?;
                    ShardWriter::Canonical(if force { w } else { w.no_replace() })
                }
            });
        }
        let batch_bytes = opts.batch_bytes;
        // Tensors are rebuilt in spans of at most a batch (a large tensor
        // in several), so memory follows the budget whatever the header
        // declares. Decoding batch k+1 (and reading its base from disk)
        // overlaps writing batch k on a writer thread; at most one decoded
        // batch waits between them.
        let all = span_batches(h, batch_bytes as u64);
        let (total, writers) = std::thread::scope(|s| -> Result<(u64, Vec<ShardWriter>)> {
            type Decoded = (usize, Vec<Result<Vec<u8>>>);
            let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(1);
            let all = &all;
            let writer = s.spawn(move || -> Result<(u64, Vec<ShardWriter>)> {
                let mut writers = writers;
                let mut total = 0u64;
                for (k, outs) in rx {
                    for (sp, o) in all[k].iter().zip(outs) {
                        let bytes = o?;
                        let t = &h.tensors[sp.ti];
                        writers[t.shard as usize].write_part(&t.name, &bytes)?;
                        if sp.end == t.nbytes() {
                            if let Some(b) = base.get(&t.name) {
                                base.release(b);
                            }
                        }
                        total += bytes.len() as u64;
                        progress(bytes.len() as u64);
                    }
                }
                Ok((total, writers))
            });
            // The read-ahead thread loads the next batch's base tensors.
            let ahead: Vec<resid_io::Ahead> = all
                .iter()
                .enumerate()
                .flat_map(|(pos, b)| {
                    b.iter().filter(|sp| sp.start == 0).filter_map(move |sp| {
                        base.get(&h.tensors[sp.ti].name)
                            .map(|tensor| resid_io::Ahead {
                                pos,
                                ck: base,
                                tensor,
                            })
                    })
                })
                .collect();
            resid_io::with_readahead(&ahead, 2 * batch_bytes, |ra| {
                let mut dec = SpanDecoder::default();
                for (k, spans) in all.iter().enumerate() {
                    ra.reached(k);
                    let outs = dec.decode(&rf, base, spans);
                    // A failed span ends the rebuild: the writer reports it.
                    let failed = outs.iter().any(|o| o.is_err());
                    if tx.send((k, outs)).is_err() || failed {
                        break;
                    }
                }
            });
            drop(tx);
            writer.join().expect("writer thread")
        })?;
        for (w, p) in writers.into_iter().zip(&paths) {
            w.finish(&rf.path)?;
            committed.push(p.clone());
        }
        for (a, p) in stored {
            a.commit()?;
            committed.push(p);
        }
        if write_index {
            let map: Vec<(String, String)> = h
                .tensors
                .iter()
                .map(|t| (t.name.clone(), shards[t.shard as usize].file.clone()))
                .collect();
            // Under the folder lock, after the check above.
            resid_io::write::write_index(&out.join(INDEX_FILE), &map, total as usize)?;
        }
        Ok(UnpackReport {
            tensors: h.tensors.len(),
            bytes: total,
            outputs: paths.iter().map(|p| p.display().to_string()).collect(),
        })
    })();
    if result.is_err() {
        // What this unpack put in place, then the folders it made.
        for p in &committed {
            let _ = std::fs::remove_file(p);
        }
        remove_made(&made);
    }
    result
}

/// Removes folders this unpack made, deepest first (only when empty).
fn remove_made(made: &[PathBuf]) {
    let mut m = made.to_vec();
    m.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in m {
        let _ = std::fs::remove_dir(d);
    }
}

/// A rebuilt shard being written: in the canonical layout (FORMAT.md 6), or
/// behind the trained file's own header (2.2), then checked against the
/// original's sha256 when the file is lossless.
enum ShardWriter {
    Canonical(SafetensorsWriter),
    Original {
        file: AtomicFile,
        hash: Option<(sha2::Sha256, String)>,
        name: String,
    },
}

impl ShardWriter {
    fn original(
        mut file: AtomicFile,
        path: &Path,
        o: &OriginalHeader,
        lossless: bool,
    ) -> Result<Self> {
        use sha2::Digest;
        let len = (o.header.len() as u64).to_le_bytes();
        file.write_all(&len)?;
        file.write_all(o.header.as_bytes())?;
        let hash = match (&o.sha256, lossless) {
            (Some(want), true) => {
                let mut h = sha2::Sha256::new();
                h.update(len);
                h.update(o.header.as_bytes());
                Some((h, want.clone()))
            }
            _ => None,
        };
        Ok(ShardWriter::Original {
            file,
            hash,
            name: path.display().to_string(),
        })
    }

    /// Appends bytes of tensor `name`, written in order (a tensor may come
    /// in several parts).
    fn write_part(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            ShardWriter::Canonical(w) => Ok(w.write_part(name, bytes)?),
            ShardWriter::Original { file, hash, .. } => {
                if let Some((h, _)) = hash {
                    sha2::Digest::update(h, bytes);
                }
                Ok(file.write_all(bytes)?)
            }
        }
    }

    fn finish(self, resid: &Path) -> Result<()> {
        match self {
            ShardWriter::Canonical(w) => Ok(w.finish()?),
            ShardWriter::Original { file, hash, name } => {
                if let Some((h, want)) = hash {
                    let got = crate::decode::files::hex_bytes(&sha2::Digest::finalize(h));
                    if got != want {
                        return Err(CodecError::OriginalChecksum {
                            path: resid.into(),
                            shard: name,
                        });
                    }
                }
                Ok(file.commit()?)
            }
        }
    }
}
