//! The small GPT's shape, its presets, and the names and shapes of its
//! parameters. One source of truth shared by the trainer (`resid-lm`), the
//! corpus-derived base and resid's layout patterns.

use serde::{Deserialize, Serialize};

/// The [`GptConfig`]'s file in a model folder. Not `config.json`: Hugging
/// Face tooling reads a file of that name as a transformers config.
pub const FILE_NAME: &str = "resid-config.json";

/// Which tokenizer a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One token per byte, V = 256.
    Byte,
    /// A subword vocabulary trained on the corpus, saved beside the model.
    Bpe,
}

/// Shape and training hyper-parameters of a pre-LayerNorm GPT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub preset: String,
    pub tokenizer: TokenizerKind,
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub context: usize,
    /// Tied head: the unembedding is `tok_emb.weight` and `head.weight` is absent.
    pub tied_head: bool,
    // Training defaults (overridable from the command line).
    pub batch_size: usize,
    pub steps: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
}

impl GptConfig {
    /// About 0.9M parameters (the 1.3M-parameter anchor shape of ANCHORS.md
    /// with its fused attention biases dropped), byte-level; trains to a useful loss in minutes on 2 cores.
    pub fn tiny() -> Self {
        GptConfig {
            preset: "tiny".into(),
            tokenizer: TokenizerKind::Byte,
            vocab_size: 256,
            n_layer: 4,
            n_head: 4,
            d_model: 128,
            d_ff: 512,
            context: 128,
            tied_head: false,
            batch_size: 32,
            steps: 900,
            lr: 1e-3,
            warmup_steps: 50,
            weight_decay: 0.1,
            grad_clip: 1.0,
        }
    }

    /// The study's shape: 8 layers, d_model 256, 8 heads, d_ff 1024, ~15K
    /// subword vocabulary, context 512, tied head (about 10.2M parameters).
    pub fn paper() -> Self {
        GptConfig {
            preset: "paper".into(),
            tokenizer: TokenizerKind::Bpe,
            vocab_size: 15_000,
            n_layer: 8,
            n_head: 8,
            d_model: 256,
            d_ff: 1024,
            context: 512,
            tied_head: true,
            batch_size: 16,
            steps: 5000,
            lr: 6e-4,
            warmup_steps: 200,
            weight_decay: 0.1,
            grad_clip: 1.0,
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "paper" => Some(Self::paper()),
            _ => None,
        }
    }

    /// Every parameter's name and shape, in checkpoint order. Shapes follow
    /// torch's `Linear` layout `[out, in]`, which resid's analysis expects.
    pub fn param_specs(&self) -> Vec<(String, Vec<usize>)> {
        let (v, d, f, c) = (self.vocab_size, self.d_model, self.d_ff, self.context);
        let mut out = vec![
            ("tok_emb.weight".to_string(), vec![v, d]),
            ("pos_emb.weight".to_string(), vec![c, d]),
        ];
        for i in 0..self.n_layer {
            let p = format!("blocks.{i}");
            out.push((format!("{p}.ln1.weight"), vec![d]));
            out.push((format!("{p}.ln1.bias"), vec![d]));
            for r in ["q", "k", "v", "o"] {
                out.push((format!("{p}.attn.{r}.weight"), vec![d, d]));
            }
            out.push((format!("{p}.ln2.weight"), vec![d]));
            out.push((format!("{p}.ln2.bias"), vec![d]));
            out.push((format!("{p}.mlp.up.weight"), vec![f, d]));
            out.push((format!("{p}.mlp.up.bias"), vec![f]));
            out.push((format!("{p}.mlp.down.weight"), vec![d, f]));
            out.push((format!("{p}.mlp.down.bias"), vec![d]));
        }
        out.push(("ln_f.weight".to_string(), vec![d]));
        out.push(("ln_f.bias".to_string(), vec![d]));
        if !self.tied_head {
            out.push(("head.weight".to_string(), vec![v, d]));
        }
        out.push(("head.bias".to_string(), vec![v]));
        out
    }

    /// Total parameter count.
    pub fn n_params(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_preset_has_the_studys_size() {
        // The study reports 10.2M parameters for this shape with a ~15K vocabulary.
        let n = GptConfig::paper().n_params() as f64 / 1e6;
        assert!((9.9..10.6).contains(&n), "{n}M");
    }

    #[test]
    fn tiny_preset_is_about_a_million() {
        let n = GptConfig::tiny().n_params();
        assert!((800_000..2_000_000).contains(&n), "{n}");
    }
}
