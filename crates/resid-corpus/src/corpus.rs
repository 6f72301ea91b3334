//! The built-in corpora (Shakespeare's complete works; the King James New
//! Testament for the fine-tune regime; both public domain, data/README.md)
//! and the held-out split. The gzips ship inside the binary so resid works
//! anywhere.

use std::io::Read;
use std::path::Path;

/// Shakespeare's complete works, gzip-compressed (5,057,282 bytes unpacked).
pub static SHAKESPEARE_GZ: &[u8] = include_bytes!("../../../data/shakespeare-complete.txt.gz");

/// The King James Version's New Testament, gzip-compressed (952,776 bytes
/// unpacked): the fine-tune regime's second corpus, prose of another genre.
pub static KJV_NEW_TESTAMENT_GZ: &[u8] = include_bytes!("../../../data/kjv-new-testament.txt.gz");

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
    /// The held-out tenth holds no full context window, so it would score
    /// nothing (a loss of 0 over no windows).
    #[error(
        "{path}: its held-out last tenth is {tokens} tokens ({bytes} bytes), fewer than one \
         context window of {context} + 1; give a longer corpus"
    )]
    TooShort {
        path: String,
        tokens: usize,
        bytes: usize,
        context: usize,
    },
}

impl resid_io::Classify for CorpusError {
    fn class(&self) -> resid_io::ErrorClass {
        match self {
            CorpusError::Io { .. } => resid_io::ErrorClass::Io,
            CorpusError::Empty { .. } | CorpusError::TooShort { .. } => {
                resid_io::ErrorClass::BadInput
            }
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

/// The shipped fine-tune corpus, unpacked.
pub fn kjv_new_testament() -> Vec<u8> {
    let mut out = Vec::with_capacity(960_000);
    flate2::read::GzDecoder::new(KJV_NEW_TESTAMENT_GZ)
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
    fn fine_tune_corpus_has_its_documented_size_and_text() {
        let t = kjv_new_testament();
        assert_eq!(t.len(), 952_776);
        let s = std::str::from_utf8(&t).unwrap();
        assert!(s.starts_with("\nMatthew 1\n\nThe book of the generation of Jesus Christ"));
        assert!(s
            .trim_end()
            .ends_with("The grace of our Lord Jesus Christ be with you all. Amen."));
        // 260 chapters, each heading a line alone between blank lines.
        let l: Vec<&str> = s.split('\n').collect();
        let headings = (1..l.len() - 1)
            .filter(|&i| l[i - 1].is_empty() && l[i + 1].is_empty() && !l[i].is_empty())
            .count();
        assert_eq!(headings, 260);
    }

    #[test]
    fn split_holds_out_the_last_tenth() {
        let c = vec![0u8; 1000];
        let (a, b) = split(&c);
        assert_eq!((a.len(), b.len()), (900, 100));
    }
}
