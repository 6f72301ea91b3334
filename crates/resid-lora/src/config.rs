//! `adapter_config.json`: the PEFT LoRA settings that decide what ΔW an
//! adapter's tensors stand for (rank, alpha, rsLoRA, fan-in-fan-out, the
//! per-module rank and alpha patterns), and those resid refuses by name.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{LoraError, Result};

/// The file PEFT writes the settings to.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// The settings of a LoRA adapter that change its ΔW.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    /// Scale by alpha/sqrt(r) instead of alpha/r (rsLoRA).
    pub use_rslora: bool,
    /// The base stores the weight as (in, out) (GPT-2's Conv1D): ΔW = (B·A)^T.
    pub fan_in_fan_out: bool,
    /// Module-name pattern -> rank, for modules whose rank is not `r`.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Module-name pattern -> alpha, for modules whose alpha is not `lora_alpha`.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Modules stored whole in the adapter (their trained value replaces the base's).
    pub modules_to_save: Vec<String>,
    /// The base the adapter was made for, as PEFT records it.
    pub base_model_name_or_path: Option<String>,
}

impl LoraConfig {
    /// Reads and checks `dir/adapter_config.json`.
    pub fn read(dir: &Path) -> Result<LoraConfig> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| LoraError::File {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &text)
    }

    /// Parses a config's text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<LoraConfig> {
        let bad = |reason: String| LoraError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let unsupported = |feature: &'static str, detail: String| LoraError::Unsupported {
            path: path.to_path_buf(),
            feature,
            detail,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        if let Some(t) = obj.get("peft_type").and_then(Value::as_str) {
            if t != "LORA" {
                return Err(unsupported(
                    "a PEFT method other than LoRA",
                    format!("peft_type is '{t}'; resid reads LORA adapters"),
                ));
            }
        }
        let truthy = |k: &str| obj.get(k).is_some_and(|v| v.as_bool() == Some(true));
        if truthy("use_dora") {
            return Err(unsupported(
                "DoRA",
                "use_dora is true: the magnitude vectors rescale W + ΔW column by column, \
                 which is not an additive residual"
                    .into(),
            ));
        }
        if truthy("lora_bias") {
            return Err(unsupported(
                "a LoRA bias",
                "lora_bias is true (lora_B carries a bias)".into(),
            ));
        }
        if obj.get("layer_replication").is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                "layer_replication",
                "the adapter duplicates base layers".into(),
            ));
        }
        let uint = |k: &str, v: &Value| -> Result<usize> {
            v.as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("{k} must be a positive integer, got {v}")))
        };
        let num = |k: &str, v: &Value| -> Result<f64> {
            v.as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{k} must be a number, got {v}")))
        };
        let r = uint("r", obj.get("r").unwrap_or(&Value::from(8)))?;
        let lora_alpha = num(
            "lora_alpha",
            obj.get("lora_alpha").unwrap_or(&Value::from(8)),
        )?;
        let flag = |k: &str| -> Result<bool> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(bad(format!("{k} must be true or false, got {v}"))),
            }
        };
        let map = |k: &str| -> Result<Vec<(String, Value)>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(m)) => {
                    Ok(m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                }
                Some(v) => Err(bad(format!("{k} must be an object, got {v}"))),
            }
        };
        let mut rank_pattern = BTreeMap::new();
        for (p, v) in map("rank_pattern")? {
            rank_pattern.insert(p.clone(), uint(&format!("rank_pattern['{p}']"), &v)?);
        }
        let mut alpha_pattern = BTreeMap::new();
        for (p, v) in map("alpha_pattern")? {
            alpha_pattern.insert(p.clone(), num(&format!("alpha_pattern['{p}']"), &v)?);
        }
        for p in rank_pattern.keys().chain(alpha_pattern.keys()) {
            pattern_regex(p).map_err(|e| bad(format!("pattern '{p}' is not a regex: {e}")))?;
        }
        let modules_to_save = match obj.get("modules_to_save") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|m| {
                    m.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("modules_to_save holds {m}, not a name")))
                })
                .collect::<Result<_>>()?,
            Some(v) => return Err(bad(format!("modules_to_save must be a list, got {v}"))),
        };
        Ok(LoraConfig {
            r,
            lora_alpha,
            use_rslora: flag("use_rslora")?,
            fan_in_fan_out: flag("fan_in_fan_out")?,
            rank_pattern,
            alpha_pattern,
            modules_to_save,
            base_model_name_or_path: obj
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// The rank and alpha PEFT gives `module`: the first pattern matching
    /// it (PEFT's `get_pattern_key`), else `r` and `lora_alpha`.
    pub fn rank_alpha(&self, module: &str) -> (usize, f64) {
        let r = first_match(self.rank_pattern.iter(), module).unwrap_or(self.r);
        let a = first_match(self.alpha_pattern.iter(), module).unwrap_or(self.lora_alpha);
        (r, a)
    }

    /// The factor ΔW = scaling · B·A of a module of rank `r` and alpha `alpha`.
    pub fn scaling(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }

    /// Whether `module` is one of `modules_to_save` (PEFT matches the
    /// whole name or its last dotted part(s)).
    pub fn saves_whole(&self, module: &str) -> bool {
        self.modules_to_save
            .iter()
            .any(|m| module == m || module.ends_with(&format!(".{m}")))
    }
}

/// PEFT's pattern semantics: a key matches a module name when the name is
/// the key, or ends in `.key`, the key read as a regex (`^...` anchors it
/// at the start instead).
fn pattern_regex(key: &str) -> std::result::Result<Regex, regex::Error> {
    if let Some(rest) = key.strip_prefix('^') {
        Regex::new(&format!("^(?:{rest})$"))
    } else {
        Regex::new(&format!("^(?:.*\\.)?(?:{key})$"))
    }
}

fn first_match<'a, T: Copy + 'a>(
    patterns: impl Iterator<Item = (&'a String, &'a T)>,
    module: &str,
) -> Option<T> {
    // Patterns were checked when the config was read.
    patterns
        .filter(|(k, _)| pattern_regex(k).is_ok_and(|re| re.is_match(module)))
        .map(|(_, v)| *v)
        .next()
}

/// The config `extract` writes: rank `r` everywhere with alpha = r
/// (scaling 1), the adapted modules named in full.
#[derive(Serialize, Deserialize)]
pub(crate) struct WrittenConfig {
    pub peft_type: &'static str,
    pub task_type: Option<String>,
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: usize,
    pub lora_dropout: f64,
    pub bias: &'static str,
    pub fan_in_fan_out: bool,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub target_modules: Vec<String>,
    pub modules_to_save: Option<Vec<String>>,
    pub rank_pattern: BTreeMap<String, usize>,
    pub alpha_pattern: BTreeMap<String, usize>,
    pub init_lora_weights: bool,
    pub inference_mode: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoraConfig> {
        LoraConfig::parse(Path::new("a/adapter_config.json"), text)
    }

    #[test]
    fn scaling_follows_rslora() {
        let c = parse(r#"{"peft_type":"LORA","r":16,"lora_alpha":32}"#).unwrap();
        assert_eq!(c.scaling(16, 32.0), 2.0);
        let c = parse(r#"{"r":16,"lora_alpha":32,"use_rslora":true}"#).unwrap();
        assert_eq!(c.scaling(16, 32.0), 8.0);
    }

    #[test]
    fn patterns_match_like_peft() {
        let c = parse(
            r#"{"r":8,"lora_alpha":16,
                "rank_pattern":{"q_proj":4,"^model\\.layers\\.1\\..*v_proj":2},
                "alpha_pattern":{"layers\\.0\\.self_attn\\.k_proj":3}}"#,
        )
        .unwrap();
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.q_proj"), (4, 16.0));
        assert_eq!(c.rank_alpha("model.layers.1.self_attn.v_proj"), (2, 16.0));
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.v_proj"), (8, 16.0));
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.k_proj"), (8, 3.0));
        // A key matches whole dotted parts only: "q_proj" is not "xq_proj".
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.xq_proj"), (8, 16.0));
    }

    #[test]
    fn refuses_by_name() {
        let e = parse(r#"{"r":8,"use_dora":true}"#).unwrap_err();
        assert!(e.to_string().contains("DoRA is not supported"), "{e}");
        let e = parse(r#"{"peft_type":"IA3"}"#).unwrap_err();
        assert!(e.to_string().contains("IA3"), "{e}");
        let e = parse(r#"{"r":8,"lora_bias":true}"#).unwrap_err();
        assert!(e.to_string().contains("LoRA bias"), "{e}");
        let e = parse(r#"{"r":0}"#).unwrap_err();
        assert!(e.to_string().contains("positive integer"), "{e}");
        let e = parse(r#"{"r":4,"rank_pattern":{"(":2}}"#).unwrap_err();
        assert!(e.to_string().contains("not a regex"), "{e}");
    }

    #[test]
    fn modules_to_save_match_by_suffix() {
        let c = parse(r#"{"modules_to_save":["score","lm_head"]}"#).unwrap();
        assert!(c.saves_whole("score"));
        assert!(c.saves_whole("model.score"));
        assert!(!c.saves_whole("model.xscore"));
    }
}
