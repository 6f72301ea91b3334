//! How each tensor of a base was made, and how big it is beside a standard
//! random init of the same shape: written as `base.json` so anyone reading a
//! residual can tell which part of the base came from the corpus, which from
//! a rule, and which from seeded noise.

use serde::{Deserialize, Serialize};

use super::linalg::{rms, spectral_norm};

/// One tensor's derivation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TensorProvenance {
    pub name: String,
    pub shape: Vec<usize>,
    /// Short method tag, e.g. `svd-log-ratio`, `ridge-through-ln_f`, `mimetic-qk`, `kmeans`, `random`, `const`.
    pub method: String,
    /// Which corpus statistic it was fitted to, if any.
    pub statistic: Option<String>,
    /// Rank of the statistic's approximation, if truncated.
    pub rank: Option<usize>,
    /// Scale factor chosen by the derivation (meaning depends on `method`).
    pub scale: Option<f64>,
    /// Standard deviation of seeded Gaussian noise added (0 when none).
    pub noise_std: f64,
    pub noise_seed: Option<u64>,
    pub note: Option<String>,
    pub rms: f64,
    /// Largest singular value (2-D tensors only).
    pub spectral_norm: Option<f64>,
    /// The same two figures for a standard random init of this shape.
    pub random_rms: f64,
    pub random_spectral_norm: Option<f64>,
}

/// A whole base's provenance (`base.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `csb`, `mimetic` or `random`.
    pub kind: String,
    pub preset: String,
    pub seed: u64,
    pub vocab_size: usize,
    /// Tokens the statistics were counted on (0 for inits that read no corpus).
    pub train_tokens: usize,
    /// Smoothing and other choices, as `key -> value`.
    pub options: std::collections::BTreeMap<String, String>,
    pub tensors: Vec<TensorProvenance>,
    /// Seconds spent per stage.
    pub timings: Vec<(String, f64)>,
    pub notes: Vec<String>,
}

impl TensorProvenance {
    /// A record with only the method filled in.
    pub fn method(method: &str) -> Self {
        TensorProvenance {
            method: method.into(),
            ..Default::default()
        }
    }

    pub fn stat(mut self, s: impl Into<String>) -> Self {
        self.statistic = Some(s.into());
        self
    }

    pub fn rank(mut self, r: usize) -> Self {
        self.rank = Some(r);
        self
    }

    pub fn scale(mut self, s: f64) -> Self {
        self.scale = Some(s);
        self
    }

    pub fn noise(mut self, std: f64, seed: u64) -> Self {
        self.noise_std = std;
        self.noise_seed = Some(seed);
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }

    /// Fills in name, shape and the size figures of `data` and of `random`.
    pub fn measure(&mut self, name: &str, shape: &[usize], data: &[f32], random: &[f32]) {
        self.name = name.into();
        self.shape = shape.to_vec();
        self.rms = rms(data);
        self.random_rms = rms(random);
        if shape.len() == 2 {
            self.spectral_norm = Some(spectral_norm(data, shape[0], shape[1]));
            self.random_spectral_norm = Some(spectral_norm(random, shape[0], shape[1]));
        }
    }
}

impl Provenance {
    /// A plain-text table: name, method, statistic, rank, RMS vs random, spectral norm vs random.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<28} {:<22} {:<16} {:>5} {:>9} {:>9} {:>9} {:>9}\n",
            "tensor", "method", "statistic", "rank", "rms", "rand rms", "spec", "rand spec"
        );
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        for t in &self.tensors {
            s.push_str(&format!(
                "{:<28} {:<22} {:<16} {:>5} {:>9.4} {:>9.4} {:>9} {:>9}\n",
                t.name,
                t.method,
                t.statistic.as_deref().unwrap_or("-"),
                t.rank.map_or("-".to_string(), |r| r.to_string()),
                t.rms,
                t.random_rms,
                f(t.spectral_norm),
                f(t.random_spectral_norm),
            ));
        }
        s
    }
}
