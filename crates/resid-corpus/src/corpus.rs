//! The built-in corpus (Shakespeare's complete works, public domain) and the
//! held-out split. The gzip ships inside the binary so resid works anywhere.

use std::io::Read;
use std::path::Path;

/// Shakespeare's complete works, gzip-compressed (5,057,282 bytes unpacked).
pub static SHAKESPEARE_GZ: &[u8] = include_bytes!("../../../data/shakespeare-complete.txt.gz");

/// Errors reading a corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: corpus is empty")]
    Empty { path: String },
}

impl resid_io::Classify for CorpusError {
    fn class(&self) -> resid_io::ErrorClass {
        match self {
            CorpusError::Io { .. } => resid_io::ErrorClass::Io,
            CorpusError::Empty { .. } => resid_io::ErrorClass::BadInput,
        }
    }
}

/// The shipped corpus, unpacked.
pub fn shakespeare() -> Vec<u8> {
    let mut out = Vec::with_capacity(5_100_000);
    flate2::read::GzDecoder::new(SHAKESPEARE_GZ)
        .read_to_end(&mut out)
        .expect("the shipped corpus is a valid gzip");
    out
}

/// Reads a corpus file (plain text, or gzip when it ends in `.gz`), or the
/// shipped corpus when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Vec<u8>, CorpusError> {
    let Some(path) = path else {
        return Ok(shakespeare());
    };
    let err = |source| CorpusError::Io {
        path: path.display().to_string(),
        source,
    };
    let raw = std::fs::read(path).map_err(err)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(err)?;
        out
    } else {
        raw
    };
    if bytes.is_empty() {
        return Err(CorpusError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(bytes)
}

/// Split point: the first 90% trains, the last 10% is held out.
pub fn split(corpus: &[u8]) -> (&[u8], &[u8]) {
    let cut = corpus.len() - corpus.len() / 10;
    corpus.split_at(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_corpus_has_its_documented_size() {
        assert_eq!(shakespeare().len(), 5_057_282);
    }

    #[test]
    fn split_holds_out_the_last_tenth() {
        let c = vec![0u8; 1000];
        let (a, b) = split(&c);
        assert_eq!((a.len(), b.len()), (900, 100));
    }
}
