//! Unpack rebuilds tensors in spans of at most a batch (issue 21: bounded
//! working set): a tensor larger than the batch is decoded chunk by chunk
//! and written in parts. Whatever the batch size, the rebuilt file must be
//! byte-identical to the trained file (lossless) or to the one-batch
//! rebuild (lossy).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use resid_codec::{pack, unpack_with, Mode, PackOptions, ResidFile, UnpackOptions};
use resid_io::write::{write_raw_checkpoint, RawTensor};
use resid_io::{Checkpoint, Dtype};

fn write(path: &Path, ts: &[RawTensor]) {
    write_raw_checkpoint(path, ts, &BTreeMap::new()).unwrap();
}

fn floats(d: Dtype, v: &[f32]) -> Vec<u8> {
    let mut b = Vec::new();
    d.from_f32(v, &mut b);
    b
}

/// A base and a trained checkpoint holding every kind of entry: an
/// unchanged tensor ('same'), changed floats (xor planes or lossy), a
/// trained-only integer tensor (plain planes), a resized embedding (shared
/// rows plus added rows), an empty and a 0-D tensor; most are several
/// 4096-element chunks long.
fn pair(dir: &Path) -> (Checkpoint, Checkpoint) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let mut normal = |n: usize, s: f32| -> Vec<f32> {
        (0..n).map(|_| s * (rng.random::<f32>() - 0.5)).collect()
    };
    let same = normal(50 * 200, 1.0);
    let w = normal(3000 * 7, 0.1);
    let w2: Vec<f32> = w.iter().map(|x| x + 1e-3 * x.signum()).collect();
    let emb = normal(300 * 48, 0.02);
    let mut emb2: Vec<f32> = emb.iter().map(|x| x * 1.01).collect();
    emb2.extend(normal(400 * 48, 0.02));
    let ints: Vec<u8> = (0..9000u64 * 8).map(|i| (i * 7 % 251) as u8).collect();
    let bp = dir.join("base.safetensors");
    let tp = dir.join("trained.safetensors");
    write(
        &bp,
        &[
            ("same", "F32", vec![50, 200], floats(Dtype::F32, &same)),
            ("w", "BF16", vec![3000, 7], floats(Dtype::BF16, &w)),
            ("embed", "F32", vec![300, 48], floats(Dtype::F32, &emb)),
            ("scalar", "F16", vec![], floats(Dtype::F16, &[0.5])),
        ],
    );
    write(
        &tp,
        &[
            ("same", "F32", vec![50, 200], floats(Dtype::F32, &same)),
            ("w", "BF16", vec![3000, 7], floats(Dtype::BF16, &w2)),
            ("embed", "F32", vec![700, 48], floats(Dtype::F32, &emb2)),
            ("empty", "F32", vec![0, 4], vec![]),
            ("ints", "I64", vec![9000], ints),
            ("scalar", "F16", vec![], floats(Dtype::F16, &[0.75])),
        ],
    );
    (
        Checkpoint::open(&bp).unwrap(),
        Checkpoint::open(&tp).unwrap(),
    )
}

/// Unpacks `f` with a batch of `batch` bytes into a fresh file; its bytes.
fn rebuild(dir: &Path, base: &Checkpoint, f: &Path, batch: usize) -> Vec<u8> {
    let out = dir.join(format!("out-{batch}.safetensors"));
    let opts = UnpackOptions {
        batch_bytes: batch,
        force: true,
    };
    let rep = unpack_with(base, f, &out, &opts, &|_| {}).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(rep.tensors, 6);
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// The pair packed in `mode` with 4096-element chunks; the file's path and
/// header.
fn packed(dir: &Path, mode: Mode) -> (Checkpoint, Checkpoint, PathBuf, ResidFile) {
    let (base, trained) = pair(dir);
    let f = dir.join("x.resid");
    let opts = PackOptions {
        chunk: 4096,
        mode,
        ..Default::default()
    };
    pack(&base, &trained, &f, &opts).unwrap();
    let rf = ResidFile::open(&f).unwrap();
    (base, trained, f, rf)
}

#[test]
fn lossless_rebuild_is_the_trained_file_whatever_the_batch() {
    let d = tempfile::tempdir().unwrap();
    let (base, trained, f, rf) = packed(d.path(), Mode::Lossless);
    let mut kinds: Vec<String> = rf
        .header
        .tensors
        .iter()
        .map(|t| t.encoding.label() + if t.resize.is_some() { "+resize" } else { "" })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "planes",
            "planes",
            "same",
            "xor-planes",
            "xor-planes",
            "xor-planes+resize"
        ],
        "the pair covers every lossless kind"
    );
    let want = std::fs::read(trained.path()).unwrap();
    // 1 byte: every unit alone; 5000: a chunk and a bit; then a few chunks;
    // then everything in one batch.
    for batch in [1, 5000, 50_000, 1 << 30] {
        assert!(rebuild(d.path(), &base, &f, batch) == want, "batch {batch}");
    }
}

#[test]
fn lossy_rebuild_does_not_depend_on_the_batch() {
    let d = tempfile::tempdir().unwrap();
    let (base, trained, f, rf) = packed(d.path(), Mode::BitsPerParam(3.0));
    assert!(rf
        .header
        .tensors
        .iter()
        .any(|t| t.resize.is_some() && t.encoding.label() != "xor-planes"));
    let whole = rebuild(d.path(), &base, &f, 1 << 30);
    let got = |b| rebuild(d.path(), &base, &f, b);
    for batch in [1, 5000, 50_000] {
        assert!(got(batch) == whole, "batch {batch}");
    }
    // The trained-only and added rows are exact in a lossy file too.
    let out = d.path().join("lossy.safetensors");
    std::fs::write(&out, &whole).unwrap();
    let ck = Checkpoint::open(&out).unwrap();
    let t = trained.get("ints").unwrap();
    assert_eq!(ck.bytes(ck.get("ints").unwrap()), trained.bytes(t));
    let e = ck.bytes(ck.get("embed").unwrap());
    let te = trained.bytes(trained.get("embed").unwrap());
    assert_eq!(e[300 * 48 * 4..], te[300 * 48 * 4..]);
}
