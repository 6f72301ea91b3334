//! `resid train --freeze`: the parameters a glob names stay bit for bit as
//! they start, the others move; a glob that names nothing is a usage error.
#![cfg(feature = "lm")]

mod common;
use common::{fails_with, ok, run, s};

/// Tensors of a safetensors file by name (raw bytes).
fn tensors(p: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn frozen_globs_keep_their_parameters_and_typos_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("c.txt");
    let text: String = (0..4000)
        .map(|i| format!("line {i} of a small corpus. "))
        .collect();
    std::fs::write(&corpus, text).unwrap();
    let out = d.path().join("run");
    let o = run(&[
        "train",
        "--corpus",
        s(&corpus),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--context",
        "16",
        "--eval-every",
        "0",
        "--eval-tokens",
        "64",
        "--freeze",
        "blocks.0.*",
        "--freeze",
        "tok_emb.*",
        "-o",
        s(&out),
        "-q",
    ]);
    ok(&o);
    let start = tensors(&out.join("step-0").join("model.safetensors"));
    let end = tensors(&out.join("model.safetensors"));
    assert_eq!(start.len(), end.len());
    for ((n, a), (m, b)) in start.iter().zip(&end) {
        assert_eq!(n, m);
        let frozen = n.starts_with("blocks.0.") || n.starts_with("tok_emb.");
        // Every trained matrix moves in 3 steps (biases too: AdamW's first
        // step moves every parameter with a non-zero gradient by ~lr).
        if frozen || n.ends_with("weight") {
            assert_eq!(a == b, frozen, "{n}");
        }
    }
    let meta = std::fs::read_to_string(out.join("model.json")).unwrap();
    assert!(
        meta.contains("blocks.0.attn.q.weight"),
        "the set is recorded"
    );

    let bad = run(&[
        "train",
        "--corpus",
        s(&corpus),
        "--steps",
        "1",
        "--freeze",
        "block.0.*",
        "-o",
        s(&d.path().join("bad")),
        "-q",
    ]);
    let msg = fails_with(&bad, 2);
    assert!(
        msg.contains("block.0.*") && msg.contains("matches no parameter"),
        "{msg}"
    );
}
