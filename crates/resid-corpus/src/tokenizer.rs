//! Tokenizers: byte-level (V = 256) and a byte-level BPE trained on the corpus.
//!
//! Why byte-level BPE: every byte string round-trips exactly (no unknown
//! token), and the vocabulary is a deterministic function of the corpus and
//! the target size, so the study's ~15K-entry vocabulary can be rebuilt
//! anywhere. The vocabulary is saved as [`FILE_NAME`] beside a model.
//!
//! Training counts pairs once over the distinct pre-tokens (words), then
//! updates the counts incrementally for the words a merge touches only, with
//! a lazy max-heap; ties break on the smaller pair so results never depend on
//! hash order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors loading or saving a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a resid tokenizer: {msg}")]
    Invalid { path: String, msg: String },
}

impl resid_io::Classify for TokenizerError {
    fn class(&self) -> resid_io::ErrorClass {
        match self {
            TokenizerError::Io { .. } => resid_io::ErrorClass::Io,
            TokenizerError::Invalid { .. } => resid_io::ErrorClass::BadInput,
        }
    }
}

/// The tokenizer's file beside a model. Not `tokenizer.json`: Hugging Face
/// tooling takes a file of that name for its own tokenizers format.
pub const FILE_NAME: &str = "resid-tokenizer.json";

/// The name resid wrote before [`FILE_NAME`]; still read from older folders.
pub const LEGACY_FILE_NAME: &str = "tokenizer.json";

/// The tokenizer file in `dir`: [`FILE_NAME`], else [`LEGACY_FILE_NAME`].
pub fn find_in(dir: &Path) -> Option<PathBuf> {
    [FILE_NAME, LEGACY_FILE_NAME]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// What kind of vocabulary a [`Tokenizer`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Byte,
    Bpe,
}

/// On-disk form ([`FILE_NAME`]): ids 0..256 are bytes, id `256 + i` is
/// the concatenation of the two ids of merge `i`.
#[derive(Serialize, Deserialize)]
struct TokenizerFile {
    kind: Kind,
    vocab_size: usize,
    #[serde(default)]
    merges: Vec<[u32; 2]>,
}

/// A byte-level tokenizer, optionally with BPE merges.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    kind: Kind,
    merges: Vec<[u32; 2]>,
    ranks: HashMap<(u32, u32), u32>,
    pieces: Vec<Vec<u8>>,
}

impl PartialEq for Tokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.merges == other.merges
    }
}

/// Splits text into pre-tokens that BPE never merges across: an optional
/// single space followed by a run of letters (bytes >= 0x80 count as
/// letters), a run of digits, a run of whitespace, or one other byte.
/// The pieces concatenate to the input exactly.
pub fn pretokenize(text: &[u8]) -> Vec<&[u8]> {
    fn letter(b: u8) -> bool {
        b.is_ascii_alphabetic() || b >= 0x80 || b == b'\''
    }
    let mut out = Vec::new();
    let n = text.len();
    let mut i = 0;
    while i < n {
        let start = i;
        let b = text[i];
        if b == b' ' && i + 1 < n && letter(text[i + 1]) {
            i += 1;
            while i < n && letter(text[i]) {
                i += 1;
            }
        } else if letter(b) {
            while i < n && letter(text[i]) {
                i += 1;
            }
        } else if b.is_ascii_digit() {
            while i < n && text[i].is_ascii_digit() {
                i += 1;
            }
        } else if b.is_ascii_whitespace() {
            while i < n && text[i].is_ascii_whitespace() {
                // Leave a final space to lead the next word.
                if text[i] == b' ' && i + 1 < n && letter(text[i + 1]) && i > start {
                    break;
                }
                i += 1;
            }
        } else {
            i += 1;
        }
        out.push(&text[start..i]);
    }
    out
}

impl Tokenizer {
    /// One token per byte, V = 256.
    pub fn byte() -> Self {
        Self::from_merges(Kind::Byte, Vec::new())
    }

    fn from_merges(kind: Kind, merges: Vec<[u32; 2]>) -> Self {
        let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (r, &[a, b]) in merges.iter().enumerate() {
            let mut p = pieces[a as usize].clone();
            p.extend_from_slice(&pieces[b as usize]);
            pieces.push(p);
            ranks.insert((a, b), r as u32);
        }
        Tokenizer {
            kind,
            merges,
            ranks,
            pieces,
        }
    }

    /// Trains a byte-level BPE with at most `vocab_size` entries (256 bytes
    /// plus merges). Stops early when no pair occurs twice.
    pub fn train_bpe(text: &[u8], vocab_size: usize) -> Self {
        let n_merges = vocab_size.saturating_sub(256);
        // Distinct words and their counts, in first-seen order (deterministic).
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut words: Vec<Vec<u32>> = Vec::new();
        let mut counts: Vec<i64> = Vec::new();
        for w in pretokenize(text) {
            let id = *index.entry(w).or_insert_with(|| {
                words.push(w.iter().map(|&b| b as u32).collect());
                counts.push(0);
                words.len() - 1
            });
            counts[id] += 1;
        }
        let mut pair_count: HashMap<(u32, u32), i64> = HashMap::new();
        let mut where_: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for (wi, w) in words.iter().enumerate() {
            for p in w.windows(2) {
                let key = (p[0], p[1]);
                *pair_count.entry(key).or_default() += counts[wi];
                where_.entry(key).or_default().push(wi as u32);
            }
        }
        let mut heap: BinaryHeap<(i64, Reverse<(u32, u32)>)> =
            pair_count.iter().map(|(&k, &c)| (c, Reverse(k))).collect();
        let mut merges = Vec::with_capacity(n_merges);
        while merges.len() < n_merges {
            let Some((stored, Reverse(pair))) = heap.pop() else {
                break;
            };
            let current = pair_count.get(&pair).copied().unwrap_or(0);
            if stored != current {
                if current > 0 {
                    heap.push((current, Reverse(pair)));
                }
                continue;
            }
            if current < 2 {
                break;
            }
            let new_id = 256 + merges.len() as u32;
            merges.push([pair.0, pair.1]);
            let mut affected = where_.remove(&pair).unwrap_or_default();
            affected.sort_unstable();
            affected.dedup();
            for wi in affected {
                let wi = wi as usize;
                let w = &words[wi];
                if !w.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                let c = counts[wi];
                for p in w.windows(2) {
                    *pair_count.get_mut(&(p[0], p[1])).expect("counted pair") -= c;
                }
                let mut merged = Vec::with_capacity(w.len());
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && (w[i], w[i + 1]) == pair {
                        merged.push(new_id);
                        i += 2;
                    } else {
                        merged.push(w[i]);
                        i += 1;
                    }
                }
                for p in merged.windows(2) {
                    let key = (p[0], p[1]);
                    let e = pair_count.entry(key).or_default();
                    *e += c;
                    heap.push((*e, Reverse(key)));
                    where_.entry(key).or_default().push(wi as u32);
                }
                words[wi] = merged;
            }
            pair_count.remove(&pair);
        }
        Self::from_merges(Kind::Bpe, merges)
    }

    /// The tokenizer a preset asks for, trained on `train_text` when it is BPE.
    pub fn for_config(cfg: &crate::config::GptConfig, train_text: &[u8]) -> Self {
        match cfg.tokenizer {
            crate::config::TokenizerKind::Byte => Self::byte(),
            crate::config::TokenizerKind::Bpe => Self::train_bpe(train_text, cfg.vocab_size),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Number of token ids (256 + merges).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The merges in rank order.
    pub fn merges(&self) -> &[[u32; 2]] {
        &self.merges
    }

    /// The bytes a token stands for.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        &self.pieces[id as usize]
    }

    fn encode_word(&self, w: &[u8], out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = w.iter().map(|&b| b as u32).collect();
        loop {
            let best = syms
                .windows(2)
                .filter_map(|p| self.ranks.get(&(p[0], p[1])).copied())
                .min();
            let Some(r) = best else { break };
            let [a, b] = self.merges[r as usize];
            let id = 256 + r;
            let mut merged = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                    merged.push(id);
                    i += 2;
                } else {
                    merged.push(syms[i]);
                    i += 1;
                }
            }
            syms = merged;
        }
        out.extend_from_slice(&syms);
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &[u8]) -> Vec<u32> {
        if self.kind == Kind::Byte {
            return text.iter().map(|&b| b as u32).collect();
        }
        let mut out = Vec::with_capacity(text.len() / 3);
        let mut cache: HashMap<&[u8], (usize, usize)> = HashMap::new();
        for w in pretokenize(text) {
            if let Some(&(s, e)) = cache.get(w) {
                out.extend_from_within(s..e);
                continue;
            }
            let s = out.len();
            self.encode_word(w, &mut out);
            cache.insert(w, (s, out.len()));
        }
        out
    }

    /// The bytes of a token sequence.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 3);
        for &t in ids {
            out.extend_from_slice(&self.pieces[t as usize]);
        }
        out
    }

    /// JSON text of the tokenizer file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&TokenizerFile {
            kind: self.kind,
            vocab_size: self.vocab_size(),
            merges: self.merges.clone(),
        })
        .expect("tokenizer serialises")
    }

    /// Parses the tokenizer file's text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, TokenizerError> {
        let invalid = |msg: String| TokenizerError::Invalid {
            path: origin.to_string(),
            msg,
        };
        let f: TokenizerFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if f.kind == Kind::Byte && !f.merges.is_empty() {
            return Err(invalid("a byte tokenizer has no merges".into()));
        }
        for (i, &[a, b]) in f.merges.iter().enumerate() {
            if a as usize >= 256 + i || b as usize >= 256 + i {
                return Err(invalid(format!("merge {i} refers to a later token")));
            }
        }
        if f.vocab_size != 256 + f.merges.len() {
            return Err(invalid(format!(
                "vocab_size {} but {} merges",
                f.vocab_size,
                f.merges.len()
            )));
        }
        Ok(Self::from_merges(f.kind, f.merges))
    }

    /// Writes the JSON text to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        resid_io::atomic::write_atomic(path, self.to_json().as_bytes()).map_err(|e| {
            TokenizerError::Io {
                path: path.display().to_string(),
                source: match e {
                    resid_io::IoError::Io { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            }
        })
    }

    /// Reads a tokenizer saved by [`Tokenizer::save`].
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"To be, or not to be, that is the question:\n\
        Whether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,\n\
        Or to take arms against a sea of troubles\nAnd by opposing end them. 1599 \xc3\xa9t\xc3\xa9";

    #[test]
    fn pretokens_concatenate_to_the_input() {
        let p = pretokenize(TEXT);
        assert_eq!(p.concat(), TEXT);
        assert!(p.contains(&&b" question"[..]));
        assert!(p.contains(&&b"1599"[..]));
    }

    #[test]
    fn byte_tokenizer_is_identity() {
        let t = Tokenizer::byte();
        assert_eq!(t.vocab_size(), 256);
        let ids = t.encode(TEXT);
        assert_eq!(ids.len(), TEXT.len());
        assert_eq!(t.decode(&ids), TEXT);
    }

    #[test]
    fn bpe_first_merge_is_the_most_frequent_pair() {
        // "ab" occurs 3 times inside words, everything else less.
        let t = Tokenizer::train_bpe(b"ab ab ab cd", 257);
        assert_eq!(t.merges(), &[[b'a' as u32, b'b' as u32]]);
        assert_eq!(t.encode(b"ab"), vec![256]);
    }

    #[test]
    fn bpe_round_trips_and_compresses() {
        let corpus: Vec<u8> = TEXT.repeat(20);
        let t = Tokenizer::train_bpe(&corpus, 400);
        assert!(t.vocab_size() > 256 && t.vocab_size() <= 400);
        let ids = t.encode(&corpus);
        assert_eq!(t.decode(&ids), corpus);
        assert!(ids.len() * 2 < corpus.len(), "{} tokens", ids.len());
        // Unseen text round-trips too.
        let other = b"Something wicked this way comes \x00\xff";
        assert_eq!(t.decode(&t.encode(other)), other);
        // Deterministic.
        assert_eq!(t, Tokenizer::train_bpe(&corpus, 400));
    }

    #[test]
    fn json_round_trip_and_rejects_bad_merges() {
        let t = Tokenizer::train_bpe(&TEXT.repeat(5), 300);
        let back = Tokenizer::from_json(&t.to_json(), "mem").unwrap();
        assert_eq!(back, t);
        assert_eq!(back.encode(TEXT), t.encode(TEXT));
        let bad = r#"{"kind":"bpe","vocab_size":257,"merges":[[256,1]]}"#;
        assert!(Tokenizer::from_json(bad, "mem").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        t.save(&p).unwrap();
        assert_eq!(Tokenizer::load(&p).unwrap(), t);
    }

    #[test]
    fn the_new_name_wins_and_the_old_one_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_in(dir.path()), None);
        let old = dir.path().join(LEGACY_FILE_NAME);
        Tokenizer::byte().save(&old).unwrap();
        assert_eq!(find_in(dir.path()), Some(old));
        let new = dir.path().join(FILE_NAME);
        Tokenizer::train_bpe(&TEXT.repeat(5), 300)
            .save(&new)
            .unwrap();
        assert_eq!(find_in(dir.path()), Some(new));
    }
}
