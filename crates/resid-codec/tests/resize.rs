//! Resized vocabularies (FORMAT.md 2.6): a trained embedding (and the tied
//! head that grows with it) with more or fewer rows than the base's. The
//! shared rows are coded as a residual, the added rows stored as they are,
//! so adding tokens costs about the added rows' own bytes.

use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use resid_codec::{pack, unpack, Mode, PackOptions, ResidFile};
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::{Checkpoint, Dtype};

const D: usize = 64;
const V: usize = 1000;

fn write(path: &Path, ts: &[(&str, usize, &[f32])], dtype: Dtype) {
    let specs = ts
        .iter()
        .map(|(n, rows, _)| TensorSpec {
            name: n.to_string(),
            dtype_name: dtype.name().into(),
            shape: vec![*rows, D],
        })
        .collect();
    let mut w = SafetensorsWriter::create(path, specs, &BTreeMap::new()).unwrap();
    let mut b = Vec::new();
    for (n, _, v) in ts {
        dtype.from_f32(v, &mut b);
        w.write_tensor(n, &b).unwrap();
    }
    w.finish().unwrap();
}

/// The base embedding (V x D, N(0, 0.02)), and the fine-tuned one resized
/// to `rows` as `resize_token_embeddings(V + added, pad_to_multiple_of=64)`
/// makes it: the shared rows changed a little by training, each new row the
/// mean of the old rows plus what training added to it.
fn embeddings(rows: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n = Normal::new(0.0f32, 1.0).unwrap();
    let base: Vec<f32> = (0..V * D).map(|_| 0.02 * n.sample(&mut rng)).collect();
    let mut mean = [0f32; D];
    for r in 0..V {
        for c in 0..D {
            mean[c] += base[r * D + c] / V as f32;
        }
    }
    let trained: Vec<f32> = (0..rows * D)
        .map(|i| {
            let old = if i < V * D { base[i] } else { mean[i % D] };
            old + 1e-3 * n.sample(&mut rng)
        })
        .collect();
    (base, trained[..rows * D].to_vec())
}

/// Packs base (V rows) against a trained embedding and tied head of `rows`
/// rows; returns the file's size and checks the rebuild (bit-exact when
/// lossless, the added rows bit-exact when lossy).
fn pack_resized(dir: &Path, rows: usize, mode: Mode, dtype: Dtype) -> u64 {
    let (b, t) = embeddings(rows.max(V));
    let t = &t[..rows * D];
    let bp = dir.join("base.safetensors");
    let tp = dir.join(format!("trained-{rows}.safetensors"));
    write(
        &bp,
        &[("embed.weight", V, &b), ("lm_head.weight", V, &b)],
        dtype,
    );
    write(
        &tp,
        &[("embed.weight", rows, t), ("lm_head.weight", rows, t)],
        dtype,
    );
    let base = Checkpoint::open(&bp).unwrap();
    let trained = Checkpoint::open(&tp).unwrap();
    let f = dir.join(format!("r{rows}.resid"));
    let opts = PackOptions {
        mode,
        chunk: 4096,
        ..Default::default()
    };
    let rep = pack(&base, &trained, &f, &opts).unwrap();
    let rf = ResidFile::open(&f).unwrap();
    for th in &rf.header.tensors {
        let rz = th.resize.as_ref();
        if rows == V {
            assert!(rz.is_none());
        } else {
            assert_eq!(rz.unwrap().base_rows, V as u64, "{}", th.name);
        }
    }
    let out = dir.join(format!("out-{rows}.safetensors"));
    let _ = std::fs::remove_file(&out); // unpack keeps existing files
    unpack(&base, &f, &out).unwrap();
    let got = Checkpoint::open(&out).unwrap();
    for name in ["embed.weight", "lm_head.weight"] {
        let want = trained.bytes(trained.get(name).unwrap());
        let have = got.bytes(got.get(name).unwrap());
        assert_eq!(want.len(), have.len());
        let shared = V.min(rows) * D * dtype.size();
        if mode == Mode::Lossless {
            assert_eq!(want, have, "{name} not bit-exact");
        } else {
            assert_eq!(
                want[shared..],
                have[shared..],
                "{name}: added rows not exact"
            );
            assert_ne!(
                want[..shared],
                have[..shared],
                "lossy shared rows bit-exact?"
            );
        }
    }
    rep.file_bytes
}

#[test]
fn added_tokens_cost_about_their_own_bytes() {
    for dtype in [Dtype::BF16, Dtype::F32] {
        let tmp = tempfile::tempdir().unwrap();
        let plain = pack_resized(tmp.path(), V, Mode::Lossless, dtype);
        // 8 tokens added, padded to a multiple of 64: 24 new rows.
        let grown = pack_resized(tmp.path(), 1024, Mode::Lossless, dtype);
        let raw_added = (2 * 24 * D * dtype.size()) as u64;
        let whole = (2 * 1024 * D * dtype.size()) as u64;
        let extra = grown as i64 - plain as i64;
        // About the added rows' bytes (entropy coding may take some off; the
        // header grows by a few records), far from storing the tensors whole.
        assert!(
            extra > 0 && extra as u64 <= raw_added + 600,
            "{dtype}: +{extra} bytes for {raw_added} bytes of added rows"
        );
        assert!(
            (extra as u64) < whole / 10,
            "{dtype}: +{extra} of {whole} bytes"
        );
        eprintln!("{dtype}: plain {plain}, grown {grown}: +{extra} for {raw_added} raw");
    }
}

#[test]
fn cut_and_grown_vocabularies_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    // Rows removed: only the shared rows are stored, the base's others are
    // recorded by base_rows.
    let cut = pack_resized(tmp.path(), 990, Mode::Lossless, Dtype::BF16);
    let same = pack_resized(tmp.path(), V, Mode::Lossless, Dtype::BF16);
    assert!(cut <= same, "cut {cut} > {same}");
    pack_resized(tmp.path(), 1024, Mode::BitsPerParam(2.0), Dtype::BF16);
    pack_resized(tmp.path(), 1024, Mode::Keep(0.05), Dtype::F32);
    pack_resized(tmp.path(), 900, Mode::Keep(0.05), Dtype::F16);
}
