//! Tensor name -> layer index, component and role, for the naming schemes of
//! GPT-2, Llama/Mistral/Qwen, BERT, GPT-NeoX, resid's own GPT and the
//! mixture-of-experts layouts of Mixtral and Qwen-MoE, with an override file
//! for anything else. Analysis aggregates by these.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoError, Result};

/// The part of a transformer a tensor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Attention,
    Mlp,
    Embedding,
    Norm,
    /// A routed expert's MLP (Mixtral `block_sparse_moe.experts.E.w1`,
    /// Qwen-MoE `mlp.experts.E.up_proj`): apart from the dense MLP because
    /// each expert sees only the tokens routed to it.
    Expert,
    /// A mixture-of-experts router (`block_sparse_moe.gate`, `mlp.gate`,
    /// `mlp.shared_expert_gate`).
    Router,
    Other,
}

impl Component {
    /// Lower-case name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Component::Attention => "attention",
            Component::Mlp => "mlp",
            Component::Embedding => "embedding",
            Component::Norm => "norm",
            Component::Expert => "expert",
            Component::Router => "router",
            Component::Other => "other",
        }
    }
    /// All components in report order.
    pub const ALL: [Component; 7] = [
        Component::Attention,
        Component::Mlp,
        Component::Embedding,
        Component::Norm,
        Component::Expert,
        Component::Router,
        Component::Other,
    ];
}

/// Where a tensor sits in the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub layer: Option<usize>,
    pub component: Component,
    /// q, k, v, o, qkv, up, gate, down, tok, pos, head, norm, bias, ... or "other".
    pub role: String,
    pub shape: Vec<usize>,
}

/// One override rule: names containing `contains` get this component and role.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LayoutRule {
    pub contains: String,
    pub component: Component,
    #[serde(default)]
    pub role: Option<String>,
}

/// Name classifier: user rules first (first match wins), then built-in patterns.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    rules: Vec<LayoutRule>,
}

const LAYER_KEYS: [&str; 6] = ["layers", "layer", "h", "blocks", "block", "encoder_layer"];

impl Layout {
    /// Built-in patterns only.
    pub fn builtin() -> Self {
        Layout::default()
    }

    /// Reads override rules from a JSON file: `[{"contains": "...",
    /// "component": "attention|mlp|embedding|norm|expert|router|other",
    /// "role": "q"}, ...]`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| IoError::io(path, e))?;
        let rules: Vec<LayoutRule> =
            serde_json::from_str(&text).map_err(|e| IoError::BadLayout {
                path: path.into(),
                reason: e.to_string(),
            })?;
        Ok(Layout { rules })
    }

    /// Classifies a tensor name.
    pub fn classify(&self, name: &str, shape: &[usize]) -> TensorMeta {
        let layer = layer_index(name);
        let (component, role) = self
            .rules
            .iter()
            .find(|r| name.contains(&r.contains))
            .map(|r| {
                (
                    r.component,
                    r.role.clone().unwrap_or_else(|| "other".into()),
                )
            })
            .unwrap_or_else(|| builtin_role(name, shape));
        TensorMeta {
            name: name.to_string(),
            layer,
            component,
            role,
            shape: shape.to_vec(),
        }
    }
}

/// The first numeric path segment after a layer key (`layers.3`, `h.3`, `blocks.3`).
fn layer_index(name: &str) -> Option<usize> {
    let segs: Vec<&str> = name.split('.').collect();
    for w in segs.windows(2) {
        if LAYER_KEYS.contains(&w[0]) {
            if let Ok(i) = w[1].parse() {
                return Some(i);
            }
        }
    }
    None
}

fn builtin_role(name: &str, shape: &[usize]) -> (Component, String) {
    use Component::*;
    let lower = name.to_ascii_lowercase();
    let segs: Vec<&str> = lower.split('.').collect();
    let has = |s: &str| segs.contains(&s);
    let last = segs
        .iter()
        .rev()
        .find(|s| !matches!(**s, "weight" | "bias" | "scale" | "g" | "b"))
        .copied()
        .unwrap_or("");
    let is_bias = segs.last() == Some(&"bias");
    let in_attn = segs.iter().any(|s| {
        matches!(
            *s,
            "attn" | "attention" | "self_attn" | "self_attention" | "selfattention"
        )
    });
    let r = |c: Component, role: &str| (c, role.to_string());

    // Norms first: their names also contain "attention" in BERT.
    if last.contains("norm")
        || last.starts_with("ln")
        || matches!(last, "layernorm" | "rms_norm" | "final_layer_norm")
    {
        return r(Norm, "norm");
    }
    // Embeddings and the head.
    match last {
        "wte" | "embed_tokens" | "word_embeddings" | "tok_emb" | "embed_in" | "tok_embeddings" => {
            return r(Embedding, "tok")
        }
        "wpe" | "position_embeddings" | "pos_emb" => return r(Embedding, "pos"),
        "token_type_embeddings" => return r(Embedding, "type"),
        "lm_head" | "embed_out" | "head" | "output"
            if !in_attn && !has("mlp") && segs.len() <= 3 && !has("intermediate") =>
        {
            return r(Embedding, "head")
        }
        _ => {}
    }
    // Attention projections.
    let attn_role = match last {
        "q_proj" | "query" | "q" | "wq" => Some("q"),
        "k_proj" | "key" | "k" | "wk" => Some("k"),
        "v_proj" | "value" | "v" | "wv" => Some("v"),
        "o_proj" | "out_proj" | "o" | "wo" => Some("o"),
        "c_attn" | "query_key_value" | "qkv" | "qkv_proj" | "w_pack" | "wqkv" => Some("qkv"),
        "c_proj" | "dense" if in_attn => Some("o"),
        _ => None,
    };
    if let Some(role) = attn_role {
        if in_attn || matches!(role, "qkv") || layer_index(name).is_some() {
            return r(Attention, role);
        }
    }
    // Mixture of experts: the router is a gate directly under the MoE block
    // (a dense MLP's gate is `gate_proj`/`w1`); Qwen-MoE's always-on shared
    // expert stays a dense MLP, its scalar gate is routing.
    let parent = segs
        .iter()
        .rposition(|s| *s == last)
        .and_then(|p| p.checked_sub(1))
        .map(|p| segs[p]);
    let moe_block = has("block_sparse_moe") || has("moe");
    if last == "shared_expert_gate" || (last == "gate" && (moe_block || parent == Some("mlp"))) {
        return r(Router, "router");
    }
    let routed = has("experts") && !has("shared_expert");
    // MLP projections.
    let mlp_role = match last {
        "gate_proj" | "w1" | "gate" => Some("gate"),
        "up_proj" | "c_fc" | "fc1" | "dense_h_to_4h" | "w3" | "up" | "fc_in" => Some("up"),
        "down_proj" | "fc2" | "dense_4h_to_h" | "w2" | "down" | "fc_out" => Some("down"),
        "c_proj" if has("mlp") => Some("down"),
        "dense" if has("intermediate") => Some("up"),
        // BERT: layer.N.output.dense is the MLP's down projection.
        "dense" if has("output") && !in_attn => Some("down"),
        _ => None,
    };
    if let Some(role) = mlp_role {
        return r(if routed { Expert } else { Mlp }, role);
    }
    if is_bias && shape.len() == 1 {
        if in_attn {
            return r(Attention, "bias");
        }
        if has("mlp") || has("intermediate") {
            return r(Mlp, "bias");
        }
    }
    if in_attn {
        return r(Attention, "other");
    }
    if has("mlp") || has("feed_forward") || has("ffn") {
        return r(Mlp, "other");
    }
    if lower.contains("embed") {
        return r(Embedding, "other");
    }
    r(Other, "other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Component::*;

    fn c(name: &str) -> (Option<usize>, Component, String) {
        let m = Layout::builtin().classify(name, &[4, 4]);
        (m.layer, m.component, m.role)
    }

    #[test]
    fn gpt2_names() {
        assert_eq!(
            c("h.3.attn.c_attn.weight"),
            (Some(3), Attention, "qkv".into())
        );
        assert_eq!(
            c("transformer.h.3.attn.c_proj.weight"),
            (Some(3), Attention, "o".into())
        );
        assert_eq!(c("h.0.mlp.c_fc.weight"), (Some(0), Mlp, "up".into()));
        assert_eq!(c("h.0.mlp.c_proj.weight"), (Some(0), Mlp, "down".into()));
        assert_eq!(c("h.0.ln_1.weight"), (Some(0), Norm, "norm".into()));
        assert_eq!(c("wte.weight"), (None, Embedding, "tok".into()));
        assert_eq!(c("wpe.weight"), (None, Embedding, "pos".into()));
    }

    #[test]
    fn llama_names() {
        assert_eq!(
            c("model.layers.7.self_attn.q_proj.weight"),
            (Some(7), Attention, "q".into())
        );
        assert_eq!(
            c("model.layers.7.self_attn.o_proj.weight"),
            (Some(7), Attention, "o".into())
        );
        assert_eq!(
            c("model.layers.7.mlp.gate_proj.weight"),
            (Some(7), Mlp, "gate".into())
        );
        assert_eq!(
            c("model.layers.7.mlp.down_proj.weight"),
            (Some(7), Mlp, "down".into())
        );
        assert_eq!(
            c("model.layers.7.input_layernorm.weight"),
            (Some(7), Norm, "norm".into())
        );
        assert_eq!(
            c("model.embed_tokens.weight"),
            (None, Embedding, "tok".into())
        );
        assert_eq!(c("lm_head.weight"), (None, Embedding, "head".into()));
        assert_eq!(c("model.norm.weight"), (None, Norm, "norm".into()));
    }

    #[test]
    fn bert_names() {
        let p = "bert.encoder.layer.2";
        assert_eq!(
            c(&format!("{p}.attention.self.query.weight")),
            (Some(2), Attention, "q".into())
        );
        assert_eq!(
            c(&format!("{p}.attention.output.dense.weight")),
            (Some(2), Attention, "o".into())
        );
        assert_eq!(
            c(&format!("{p}.attention.output.LayerNorm.weight")),
            (Some(2), Norm, "norm".into())
        );
        assert_eq!(
            c(&format!("{p}.intermediate.dense.weight")),
            (Some(2), Mlp, "up".into())
        );
        assert_eq!(
            c(&format!("{p}.output.dense.weight")),
            (Some(2), Mlp, "down".into())
        );
        assert_eq!(
            c("bert.embeddings.word_embeddings.weight"),
            (None, Embedding, "tok".into())
        );
    }

    #[test]
    fn neox_names() {
        let p = "gpt_neox.layers.1";
        assert_eq!(
            c(&format!("{p}.attention.query_key_value.weight")),
            (Some(1), Attention, "qkv".into())
        );
        assert_eq!(
            c(&format!("{p}.attention.dense.weight")),
            (Some(1), Attention, "o".into())
        );
        assert_eq!(
            c(&format!("{p}.mlp.dense_h_to_4h.weight")),
            (Some(1), Mlp, "up".into())
        );
        assert_eq!(
            c(&format!("{p}.mlp.dense_4h_to_h.weight")),
            (Some(1), Mlp, "down".into())
        );
        assert_eq!(c("embed_out.weight"), (None, Embedding, "head".into()));
    }

    #[test]
    fn resid_gpt_names() {
        assert_eq!(
            c("blocks.2.attn.q.weight"),
            (Some(2), Attention, "q".into())
        );
        assert_eq!(
            c("blocks.2.attn.o.weight"),
            (Some(2), Attention, "o".into())
        );
        assert_eq!(c("blocks.2.mlp.up.weight"), (Some(2), Mlp, "up".into()));
        assert_eq!(c("blocks.2.mlp.down.bias"), (Some(2), Mlp, "down".into()));
        assert_eq!(c("blocks.2.ln1.weight"), (Some(2), Norm, "norm".into()));
        assert_eq!(c("tok_emb.weight"), (None, Embedding, "tok".into()));
        assert_eq!(c("head.weight"), (None, Embedding, "head".into()));
        assert_eq!(c("ln_f.bias"), (None, Norm, "norm".into()));
    }

    #[test]
    fn mixtral_names() {
        let p = "model.layers.5.block_sparse_moe";
        for (w, role) in [("w1", "gate"), ("w2", "down"), ("w3", "up")] {
            assert_eq!(
                c(&format!("{p}.experts.3.{w}.weight")),
                (Some(5), Expert, role.into())
            );
        }
        assert_eq!(
            c(&format!("{p}.gate.weight")),
            (Some(5), Router, "router".into())
        );
        assert_eq!(
            c("model.layers.5.self_attn.q_proj.weight"),
            (Some(5), Attention, "q".into())
        );
    }

    #[test]
    fn qwen_moe_names() {
        let p = "model.layers.2.mlp";
        assert_eq!(
            c(&format!("{p}.experts.7.down_proj.weight")),
            (Some(2), Expert, "down".into())
        );
        assert_eq!(
            c(&format!("{p}.experts.7.gate_proj.weight")),
            (Some(2), Expert, "gate".into())
        );
        assert_eq!(
            c(&format!("{p}.gate.weight")),
            (Some(2), Router, "router".into())
        );
        assert_eq!(
            c(&format!("{p}.shared_expert.up_proj.weight")),
            (Some(2), Mlp, "up".into())
        );
        assert_eq!(
            c(&format!("{p}.shared_expert_gate.weight")),
            (Some(2), Router, "router".into())
        );
        // A dense model's gate projection is still the MLP's.
        assert_eq!(
            c("model.layers.2.mlp.gate_proj.weight"),
            (Some(2), Mlp, "gate".into())
        );
    }

    #[test]
    fn override_rules_win() {
        let l = Layout {
            rules: vec![LayoutRule {
                contains: "mixer".into(),
                component: Mlp,
                role: Some("mix".into()),
            }],
        };
        let m = l.classify("layers.4.mixer.in_proj.weight", &[2, 2]);
        assert_eq!(
            (m.layer, m.component, m.role.as_str()),
            (Some(4), Mlp, "mix")
        );
    }
}
