//! Layer independence tested by addition: the gain of the start plus one
//! layer's residual, for each layer, beside the gain of the whole residual
//! and of the whole residual without that layer. Independent layers' gains
//! add up to the whole; interacting ones do not.

use serde::{Deserialize, Serialize};

use crate::needle::Named;

/// One part of the residual: a transformer block, or everything outside
/// the blocks (embeddings, final norm, head).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartRow {
    pub part: String,
    /// Parameters in the part.
    pub params: usize,
    /// Gain recovered by start + this part's residual alone.
    pub gain_alone: f64,
    /// Gain recovered by start + the whole residual except this part.
    pub gain_without: f64,
}

/// The additivity test of one residual.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Additivity {
    pub parts: Vec<PartRow>,
    /// Sum over parts of `gain_alone` (1 when the parts add up).
    pub sum_alone: f64,
    /// Sum over parts of `1 - gain_without`: each part's loss when it alone
    /// is left out (1 when the parts add up).
    pub sum_dropped: f64,
}

impl Additivity {
    pub fn new(parts: Vec<PartRow>) -> Self {
        Additivity {
            sum_alone: parts.iter().map(|p| p.gain_alone).sum(),
            sum_dropped: parts.iter().map(|p| 1.0 - p.gain_without).sum(),
            parts,
        }
    }
}

/// The name of the part a parameter belongs to: `blocks.N` for the blocks,
/// `rest` otherwise.
pub fn part_of(name: &str) -> String {
    match name.strip_prefix("blocks.") {
        Some(tail) => format!("blocks.{}", tail.split('.').next().unwrap_or_default()),
        None => "rest".into(),
    }
}

/// The parts of a model in order (`blocks.0`, `blocks.1`, ..., `rest`)
/// with their parameter counts.
pub fn parts(w: &Named) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for (n, _, d) in w {
        let p = part_of(n);
        match out.iter_mut().find(|x| x.0 == p) {
            Some(x) => x.1 += d.len(),
            None => out.push((p, d.len())),
        }
    }
    // `rest` last, whatever the tensor order.
    out.sort_by_key(|(p, _)| (p == "rest", p.clone()));
    out
}

/// Start with the residual of the parameters `keep` names added back.
pub fn add_back(start: &Named, trained: &Named, keep: impl Fn(&str) -> bool) -> Named {
    start
        .iter()
        .zip(trained)
        .map(|(s, t)| if keep(&s.0) { t.clone() } else { s.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(v: f32) -> Named {
        [
            "tok_emb.weight",
            "blocks.0.attn.q.weight",
            "blocks.1.mlp.up.bias",
            "blocks.10.ln1.weight",
            "head.bias",
        ]
        .iter()
        .map(|n| (n.to_string(), vec![2], vec![v; 2]))
        .collect()
    }

    #[test]
    fn parts_are_the_blocks_then_the_rest() {
        let p = parts(&model(0.0));
        let names: Vec<&str> = p.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["blocks.0", "blocks.1", "blocks.10", "rest"]);
        assert_eq!(p[3].1, 4);
        assert_eq!(part_of("blocks.1.mlp.up.bias"), "blocks.1");
    }

    #[test]
    fn add_back_swaps_only_the_named_part() {
        let w = add_back(&model(0.0), &model(1.0), |n| part_of(n) == "blocks.1");
        let ones: Vec<&str> = w
            .iter()
            .filter(|x| x.2[0] == 1.0)
            .map(|x| x.0.as_str())
            .collect();
        assert_eq!(ones, ["blocks.1.mlp.up.bias"]);
    }

    #[test]
    fn additive_parts_sum_to_one() {
        // A loss linear in the residual: each part's gain is its share, and
        // leaving it out loses exactly that share.
        let a = Additivity::new(vec![
            PartRow {
                part: "a".into(),
                params: 1,
                gain_alone: 0.25,
                gain_without: 0.75,
            },
            PartRow {
                part: "b".into(),
                params: 1,
                gain_alone: 0.75,
                gain_without: 0.25,
            },
        ]);
        assert!((a.sum_alone - 1.0).abs() < 1e-12 && (a.sum_dropped - 1.0).abs() < 1e-12);
    }
}
