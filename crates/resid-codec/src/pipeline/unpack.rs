//! `unpack`: base and residual file in, the trained checkpoint out.

use std::path::Path;

use serde::Serialize;

use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::Checkpoint;

use super::batches;
use crate::container::{FileMode, OriginalHeader};
use crate::decode::tensor::decode_batch;
use crate::decode::ResidFile;
use crate::error::{CodecError, Result};
use resid_io::atomic::AtomicFile;

/// What an unpack did.
#[derive(Clone, Debug, Serialize)]
pub struct UnpackReport {
    pub tensors: usize,
    pub bytes: u64,
    pub outputs: Vec<String>,
}

/// Rebuilds the trained checkpoint from `base` and the residual file at
/// `resid` into `out` (a file, or a folder when the trained side was sharded).
pub fn unpack(base: &Checkpoint, resid: &Path, out: &Path) -> Result<UnpackReport> {
    unpack_with_progress(base, resid, out, 64 << 20, &|_| {})
}

/// [`unpack`] with a batch size and a progress callback (bytes written).
pub fn unpack_with_progress(
    base: &Checkpoint,
    resid: &Path,
    out: &Path,
    batch_bytes: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<UnpackReport> {
    let rf = ResidFile::open(resid)?;
    let h = &rf.header;
    let shards = &h.trained.shards;
    let mut paths = Vec::new();
    let mut created_dir = false;
    if h.trained.sharded || h.trained.folder {
        if !out.exists() {
            std::fs::create_dir_all(out).map_err(|e| CodecError::io(out, e))?;
            created_dir = true;
        }
        for s in shards {
            paths.push(out.join(&s.file));
        }
    } else {
        paths.push(out.to_path_buf());
    }
    // Folders made for stored files, removed again if the unpack fails.
    let mut made: Vec<std::path::PathBuf> = Vec::new();
    let result = (|| -> Result<UnpackReport> {
        // Stored files first, to temporaries: a damaged one stops the unpack
        // before any shard is in place.
        let mut stored = Vec::new();
        for f in &h.files {
            let p = super::folder::output_path(out, &f.path)?;
            if p.exists() {
                return Err(CodecError::OutputExists { path: p });
            }
            let bytes = crate::decode::files::decode_file(&rf, f)?;
            if let Some(dir) = p.parent() {
                let mut missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
                missing.reverse();
                for m in missing {
                    std::fs::create_dir(m).map_err(|e| CodecError::io(m, e))?;
                    made.push(m.to_path_buf());
                }
            }
            let mut a = AtomicFile::create(&p)?;
            a.write_all(&bytes)?;
            stored.push(a);
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
                Some(o) => ShardWriter::original(p, o, h.mode == FileMode::Lossless)?,
                None => ShardWriter::Canonical(SafetensorsWriter::create(p, specs, &s.metadata)?),
            });
        }
        let sizes: Vec<usize> = h.tensors.iter().map(|t| t.nbytes() as usize).collect();
        // Decoding batch k+1 (and reading its base from disk) overlaps
        // writing batch k on a writer thread; at most one decoded batch
        // waits between them.
        let all = batches(&sizes, batch_bytes);
        let (total, writers) = std::thread::scope(|s| -> Result<(u64, Vec<ShardWriter>)> {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<(std::ops::Range<usize>, Vec<Result<Vec<u8>>>)>(1);
            let writer = s.spawn(move || -> Result<(u64, Vec<ShardWriter>)> {
                let mut writers = writers;
                let mut total = 0u64;
                for (r, outs) in rx {
                    for (ti, o) in r.zip(outs) {
                        let bytes = o?;
                        let t = &h.tensors[ti];
                        writers[t.shard as usize].write_tensor(&t.name, &bytes)?;
                        if let Some(b) = base.get(&t.name) {
                            base.release(b);
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
                .flat_map(|(pos, r)| {
                    h.tensors[r.clone()].iter().filter_map(move |t| {
                        base.get(&t.name).map(|tensor| resid_io::Ahead {
                            pos,
                            ck: base,
                            tensor,
                        })
                    })
                })
                .collect();
            resid_io::with_readahead(&ahead, 2 * batch_bytes, |ra| {
                for (k, r) in all.iter().enumerate() {
                    ra.reached(k);
                    let outs = decode_batch(&rf, base, r.clone());
                    if tx.send((r.clone(), outs)).is_err() {
                        break; // the writer stopped on an error; join reports it
                    }
                }
            });
            drop(tx);
            writer.join().expect("writer thread")
        })?;
        for w in writers {
            w.finish(&rf.path)?;
        }
        for a in stored {
            a.commit()?;
        }
        let index_stored = h
            .files
            .iter()
            .any(|f| f.path == crate::container::INDEX_FILE);
        if h.trained.sharded && !index_stored {
            let map: Vec<(String, String)> = h
                .tensors
                .iter()
                .map(|t| (t.name.clone(), shards[t.shard as usize].file.clone()))
                .collect();
            resid_io::write::write_index(
                &out.join(crate::container::INDEX_FILE),
                &map,
                total as usize,
            )?;
        }
        Ok(UnpackReport {
            tensors: h.tensors.len(),
            bytes: total,
            outputs: paths.iter().map(|p| p.display().to_string()).collect(),
        })
    })();
    if result.is_err() {
        for m in made.iter().rev() {
            let _ = std::fs::remove_dir(m);
        }
        if created_dir {
            let _ = std::fs::remove_dir(out);
        }
    }
    result
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
    fn original(path: &Path, o: &OriginalHeader, lossless: bool) -> Result<Self> {
        use sha2::Digest;
        let mut file = AtomicFile::create(path)?;
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

    fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            ShardWriter::Canonical(w) => Ok(w.write_tensor(name, bytes)?),
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
