//! `resid repro` with a corpus too short to score: refused as bad input,
//! naming the file, before any training.
#![cfg(feature = "lm")]

mod common;
use common::{fails_with, run, s};

#[test]
fn a_corpus_too_short_to_score_exits_as_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("short.txt");
    std::fs::write(
        &corpus,
        "to be or not to be, that is the question. ".repeat(20),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "repro",
        "--corpus",
        s(&corpus),
        "--steps",
        "2",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let e = fails_with(&o, 3);
    assert!(e.contains("short.txt"), "{e}");
    assert!(e.contains("fewer than one context window"), "{e}");
    assert!(!out.join("train-csb.json").exists());
}
