//! Atomic output: write to a temporary file in the destination's folder,
//! then rename over the destination. A crash, a full disk or an error leaves
//! the destination untouched and no half-written file behind.
//!
//! A destination that exists and is not a regular file (`/dev/null`, a FIFO,
//! `/dev/stdout`) is written directly: renaming over it would replace the
//! device node with a plain file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoError, Result};

/// A file being written; it appears at its path only on [`AtomicFile::commit`].
/// Dropping it uncommitted deletes the temporary file.
pub struct AtomicFile {
    path: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
    writer: Option<BufWriter<File>>,
    /// Refuse to replace a file that appeared at the path (see [`no_replace`](Self::no_replace)).
    keep_existing: bool,
}

impl AtomicFile {
    /// Starts writing `path`. Fails, naming the path, when its folder does
    /// not exist or is not writable.
    pub fn create(path: &Path) -> Result<Self> {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| IoError::io(path, e))?;
            return Ok(AtomicFile {
                path: path.to_path_buf(),
                tmp: None,
                writer: Some(BufWriter::with_capacity(1 << 20, file)),
                keep_existing: false,
            });
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(IoError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("output folder {} does not exist", parent.display()),
                ),
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // Ordinary file permissions, not tempfile's private 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let tmp = builder
            .tempfile_in(&parent)
            .map_err(|e| IoError::io(path, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| IoError::io(path, e))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp: Some(tmp),
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            keep_existing: false,
        })
    }

    /// Makes [`commit`](Self::commit) fail (`AlreadyExists`) rather than
    /// replace a file that exists at the path by then: the rename is
    /// `RENAME_NOREPLACE`, so two writers racing for one path cannot both win.
    pub fn no_replace(mut self) -> Self {
        self.keep_existing = true;
        self
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.writer.as_mut().expect("writer present until commit");
        w.write_all(bytes).map_err(|e| IoError::io(&self.path, e))
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let path = self.path.clone();
        let mut w = self.writer.take().expect("writer present until commit");
        w.flush().map_err(|e| IoError::io(&path, e))?;
        let file = w
            .into_inner()
            .map_err(|e| IoError::io(&path, e.into_error()))?;
        // A device or pipe written directly: nothing to sync or rename.
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        file.sync_all().map_err(|e| IoError::io(&path, e))?;
        if self.keep_existing {
            tmp.persist_noclobber(&path)
        } else {
            tmp.persist(&path)
        }
        .map_err(|e| IoError::io(&path, e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.as_mut().expect("writer").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("writer").flush()
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(&p, b"whole").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_written_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        write_atomic(Path::new("/dev/null"), b"discarded").unwrap();
        let m = std::fs::metadata("/dev/null").unwrap();
        assert!(m.file_type().is_char_device(), "/dev/null replaced");
    }

    #[test]
    fn no_replace_keeps_a_file_that_appeared() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        let mut f = AtomicFile::create(&p).unwrap().no_replace();
        f.write_all(b"new").unwrap();
        std::fs::write(&p, b"theirs").unwrap();
        let e = f.commit().err().unwrap();
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope/x.bin");
        let e = AtomicFile::create(&p).err().unwrap().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
