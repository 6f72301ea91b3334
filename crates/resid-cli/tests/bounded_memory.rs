//! Issue 21, scope 2: "decoding never allocates more than the bounded
//! working set, whatever the file claims". A few hundred bytes of crafted
//! residual file claim a 512 MiB tensor (constant blocks, checksums fixed up
//! so every header rule holds); the real binary must rebuild it in spans of
//! its batch, so its peak resident memory stays far below the claim, and the
//! wrong trained checksum at the end must leave nothing behind.
//!
//! Peak memory is the children's `ru_maxrss` (getrusage): the largest
//! resident set of any child this test process has waited for. Every child
//! spawned in this file is a crafted unpack, so the figure is theirs.

mod common;

use std::path::Path;

use common::{exit, fails_with, golden, run, s, tree};
use resid::codec::container::{append_blocks, header_json, replace_header, Block};
use serde_json::{json, Value};

/// The claim: 512 MiB of rebuilt bytes.
const CLAIM: u64 = 512 << 20;
/// The bound asserted: half the claim. With `--max-memory 64M` (16 MiB
/// batches) and 16 MiB chunks the working set is about five chunks (the
/// batch decoding, its planes scratch, one batch queued, one being
/// written, the read-ahead) plus the binary itself.
const BOUND: u64 = CLAIM / 2;

/// The golden version-2 lossless file's preamble and blocks with one
/// constant block (`00 41`) appended per entry of `ns`, its header as JSON,
/// and the appended blocks' header entries (`ns[i]` symbols each).
fn with_constant_blocks(ns: &[u64]) -> (Vec<u8>, Value, Vec<Value>) {
    let good = std::fs::read(golden("lossless-f32.resid")).unwrap();
    let h: Value = serde_json::from_slice(&header_json(&good).unwrap()).unwrap();
    let bodies = vec![&[0u8, 0x41][..]; ns.len()];
    let (body, blocks) = append_blocks(&good, &bodies);
    let blocks = blocks
        .into_iter()
        .zip(ns)
        .map(|(b, &n)| json!(Block { n, ..b }))
        .collect();
    (body, h, blocks)
}

/// `body` (from [`with_constant_blocks`]) with `h` as its header, rebuilt
/// in the canonical layout (no original header to agree with).
fn finish(dir: &Path, body: Vec<u8>, mut h: Value) -> std::path::PathBuf {
    h["trained"]["shards"][0]
        .as_object_mut()
        .unwrap()
        .remove("original");
    let f = dir.join("claim.resid");
    std::fs::write(&f, replace_header(&body, &serde_json::to_vec(&h).unwrap())).unwrap();
    assert!(
        std::fs::metadata(&f).unwrap().len() < 8 << 10,
        "not a small file"
    );
    f
}

/// The largest resident set, in bytes, of any child waited for so far.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    ru.ru_maxrss as u64 * 1024 // Linux reports KiB
}

/// Unpacks the crafted file in a fresh box: refused at the trained checksum
/// with nothing left inside or beside the output, peak memory under the
/// bound.
fn unpack_claim(dir: &Path, f: &Path, tensor: &str) {
    let out = dir.join("box").join("out.safetensors");
    std::fs::create_dir(dir.join("box")).unwrap();
    let before = tree(dir);
    let base = golden("../v1/base-f32.safetensors");
    let args = [
        "unpack",
        "--base",
        s(&base),
        s(f),
        "-o",
        s(&out),
        "-q",
        "--max-memory",
        "64M",
        "--threads",
        "2",
    ];
    let e = fails_with(&run(&args), exit::MISMATCH);
    assert!(
        e.contains(&format!(
            "tensor '{tensor}': rebuilt bytes fail the trained checksum"
        )),
        "{e}"
    );
    assert_eq!(tree(dir), before, "something was left behind");
    let peak = children_peak_rss();
    assert!(
        peak < BOUND,
        "peak resident memory {peak} bytes for a {CLAIM}-byte claim (bound {BOUND})"
    );
    eprintln!(
        "{tensor}: peak rss {} MiB for a {} MiB claim",
        peak >> 20,
        CLAIM >> 20
    );
}

#[test]
fn a_small_file_claiming_a_large_trained_only_tensor_unpacks_in_bounded_memory() {
    // U8 planes without XOR and without a base: one block per 2^24-symbol chunk.
    let chunk = 1u64 << 24;
    let (body, mut h, blocks) = with_constant_blocks(&vec![chunk; (CLAIM / chunk) as usize]);
    h["settings"]["chunk"] = json!(chunk);
    h["tensors"] = json!([{
        "name": "claim", "dtype": "U8", "shape": [CLAIM], "shard": 0, "base": null,
        "trained_xxh3": "0000000000000000",
        "encoding": {"kind": "planes", "xor": false, "blocks": blocks},
    }]);
    let d = tempfile::tempdir().unwrap();
    let f = finish(d.path(), body, h);
    unpack_claim(d.path(), &f, "claim");
}

#[test]
fn a_small_file_claiming_many_added_rows_unpacks_in_bounded_memory() {
    // The golden 40 x 36 F32 tensor 'w' resized to about CLAIM bytes: its
    // 40 shared rows as packed, the added rows four constant planes per
    // 2^22-element chunk (16 MiB of F32).
    let chunk = 1u64 << 22;
    let row = 36u64;
    let rows = 40 + CLAIM / 4 / row;
    let added = (rows - 40) * row;
    // Chunk-major, four planes per chunk.
    let ns: Vec<u64> = (0..added.div_ceil(chunk))
        .flat_map(|c| [chunk.min(added - c * chunk); 4])
        .collect();
    let (body, mut h, blocks) = with_constant_blocks(&ns);
    h["settings"]["chunk"] = json!(chunk);
    let mut w = h["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "w")
        .unwrap()
        .clone();
    assert_eq!(w["shape"], json!([40, 36]));
    w["shape"] = json!([rows, row]);
    w["resize"] = json!({"base_rows": 40, "added": blocks});
    h["tensors"] = json!([w]);
    let d = tempfile::tempdir().unwrap();
    let f = finish(d.path(), body, h);
    unpack_claim(d.path(), &f, "w");
}
