//! A model folder's non-tensor files (FORMAT.md 2.4): found at pack, written
//! back at unpack, inside the output folder only.

use std::path::{Path, PathBuf};

use resid_io::Checkpoint;

use crate::error::{CodecError, Result};

/// Folders never stored: version control and caches.
const SKIPPED_DIRS: [&str; 3] = [".git", ".cache", ".huggingface"];

/// The folder a checkpoint was opened from, when it was a folder (or a
/// shard index inside one).
pub fn model_folder(ck: &Checkpoint) -> Option<PathBuf> {
    let p = ck.path();
    if p.is_dir() {
        Some(p.to_path_buf())
    } else if ck.is_sharded() {
        p.parent().map(Path::to_path_buf)
    } else {
        None
    }
}

/// Every regular file under `root` (symlinks to files followed, symlinked
/// folders not entered), as (`/`-separated relative path, full path), sorted,
/// leaving out the checkpoint's shard files.
pub fn collect(root: &Path, shards: &[&Path]) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| CodecError::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| CodecError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| CodecError::io(&path, e))?;
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_str()) {
                    stack.push((r, path));
                }
            } else if path.is_file() && !shards.iter().any(|s| same_file(s, &path)) {
                out.push((r, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The path of a stored file inside `out`. The name was validated when the
/// file was opened (no absolute path, no `..`); a component that is already
/// a symlink in the output folder is refused, so nothing lands outside it.
pub fn output_path(out: &Path, rel: &str) -> Result<PathBuf> {
    let mut p = out.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(CodecError::OutputInTheWay {
                path: p,
                kind: crate::error::SpecialFile::Symlink,
            });
        }
    }
    Ok(p)
}
