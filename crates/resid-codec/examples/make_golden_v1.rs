//! Wrote the version-1 golden files of `tests/golden/v1` (run once, with the
//! version-1 writer, before version 2 existed; kept as the record of how they
//! were made). The files are frozen: `tests/golden.rs` decodes them forever.
//!
//! `cargo run -p resid-codec --example make_golden_v1 -- OUT_DIR`

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_codec::{pack, unpack, Mode, PackOptions};
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::Checkpoint;
use serde_json::json;
use sha2::{Digest, Sha256};

/// (name, dtype, shape, raw bytes)
type T = (String, String, Vec<usize>, Vec<u8>);

fn write(path: &Path, ts: &[T], meta: &BTreeMap<String, String>) {
    let specs = ts
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.clone(),
            dtype_name: d.clone(),
            shape: s.clone(),
        })
        .collect();
    let mut w = SafetensorsWriter::create(path, specs, meta).unwrap();
    for (n, _, _, b) in ts {
        w.write_tensor(n, b).unwrap();
    }
    w.finish().unwrap();
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn floats(d: resid_io::Dtype, v: &[f32]) -> Vec<u8> {
    let mut b = Vec::new();
    d.from_f32(v, &mut b);
    b
}

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("OUT_DIR"));
    std::fs::create_dir_all(&out).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let mut g = move || -> f32 {
        // Sum of uniforms: a cheap bell shape.
        (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>()
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for d in [
        resid_io::Dtype::F32,
        resid_io::Dtype::F16,
        resid_io::Dtype::BF16,
        resid_io::Dtype::F64,
    ] {
        let dn = d.name().to_lowercase();
        let (rows, cols) = (40, 36);
        let wb: Vec<f32> = (0..rows * cols).map(|_| 0.05 * g()).collect();
        // A rank-2 residual plus small noise and one outlier (an escaped level).
        let u: Vec<f32> = (0..rows * 2).map(|_| g()).collect();
        let v: Vec<f32> = (0..2 * cols).map(|_| g()).collect();
        let mut wt = wb.clone();
        for i in 0..rows {
            for j in 0..cols {
                wt[i * cols + j] +=
                    0.004 * (u[2 * i] * v[j] + u[2 * i + 1] * v[cols + j]) + 0.0005 * g();
            }
        }
        wt[77] += 0.5;
        let bb: Vec<f32> = (0..cols).map(|_| 0.01 * g()).collect();
        let bt: Vec<f32> = bb.iter().map(|x| x + 0.001 * g()).collect();
        let same: Vec<f32> = (0..16).map(|_| g()).collect();
        // A residual far below any step: a lossy tensor that stores no blocks.
        let tb: Vec<f32> = (0..64).map(|_| 0.5 + 0.1 * g()).collect();
        let tt: Vec<f32> = tb.iter().map(|x| x * (1.0 + 1e-7)).collect();
        let head: Vec<f32> = (0..8 * 5).map(|_| 0.1 * g()).collect();
        let pos: Vec<u8> = (0..8i64).flat_map(|i| i.to_le_bytes()).collect();
        let pos_t: Vec<u8> = (0..8i64).flat_map(|i| (i + 1).to_le_bytes()).collect();
        let mut base: Vec<T> = vec![
            (
                "w".into(),
                d.name().into(),
                vec![rows, cols],
                floats(d, &wb),
            ),
            ("bias".into(), d.name().into(), vec![cols], floats(d, &bb)),
            ("same".into(), d.name().into(), vec![16], floats(d, &same)),
            ("tiny".into(), d.name().into(), vec![64], floats(d, &tb)),
            ("pos".into(), "I64".into(), vec![8], pos),
            ("empty".into(), d.name().into(), vec![0, 4], vec![]),
        ];
        let mut trained: Vec<T> = vec![
            (
                "w".into(),
                d.name().into(),
                vec![rows, cols],
                floats(d, &wt),
            ),
            ("bias".into(), d.name().into(), vec![cols], floats(d, &bt)),
            ("same".into(), d.name().into(), vec![16], floats(d, &same)),
            ("tiny".into(), d.name().into(), vec![64], floats(d, &tt)),
            ("pos".into(), "I64".into(), vec![8], pos_t),
            ("empty".into(), d.name().into(), vec![0, 4], vec![]),
            ("head".into(), d.name().into(), vec![8, 5], floats(d, &head)),
        ];
        if d == resid_io::Dtype::BF16 {
            // More than one chunk (2^12 elements).
            let lb: Vec<f32> = (0..4500).map(|_| 0.02 * g()).collect();
            let lt: Vec<f32> = lb.iter().map(|x| x + 0.002 * g()).collect();
            base.push(("long".into(), "BF16".into(), vec![4500], floats(d, &lb)));
            trained.push(("long".into(), "BF16".into(), vec![4500], floats(d, &lt)));
        }
        let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bp = out.join(format!("base-{dn}.safetensors"));
        let tmp = tempfile::tempdir().unwrap();
        let tp = tmp.path().join("trained.safetensors");
        write(&bp, &base, &BTreeMap::new());
        write(&tp, &trained, &meta);
        let b = Checkpoint::open(&bp).unwrap();
        let t = Checkpoint::open(&tp).unwrap();
        // Each rate kind; targets that make the low-rank part, the sparse
        // remainder and its escapes all appear.
        let lossy = match d {
            resid_io::Dtype::F32 => Mode::MaxError(0.05),
            resid_io::Dtype::F16 => Mode::Keep(0.3),
            resid_io::Dtype::BF16 => Mode::MaxError(0.1),
            resid_io::Dtype::F64 => Mode::Keep(0.5),
        };
        for (label, mode) in [("lossless", Mode::Lossless), ("lossy", lossy)] {
            let name = format!("{label}-{dn}.resid");
            let f = out.join(&name);
            let opts = PackOptions {
                mode,
                chunk: 1 << 12,
                ..PackOptions::default()
            };
            pack(&b, &t, &f, &opts).unwrap();
            let r = tmp.path().join(format!("{label}.safetensors"));
            unpack(&b, &f, &r).unwrap();
            let rebuilt = Checkpoint::open(&r).unwrap();
            let tensors: serde_json::Map<String, serde_json::Value> = rebuilt
                .tensors()
                .iter()
                .map(|e| (e.name.clone(), json!(sha(rebuilt.bytes(e)))))
                .collect();
            let rebuilt_sha = sha(&std::fs::read(&r).unwrap());
            if label == "lossless" {
                assert_eq!(rebuilt_sha, sha(&std::fs::read(&tp).unwrap()));
            }
            cases.push(json!({
                "file": name,
                "base": format!("base-{dn}.safetensors"),
                "mode": label,
                "dtype": d.name(),
                "rebuilt_sha256": rebuilt_sha,
                "tensor_sha256": tensors,
            }));
        }
    }
    // Error files, each made from the F32 lossless file.
    let good = std::fs::read(out.join("lossless-f32.resid")).unwrap();
    let n = good.len();
    let foot = |f: &[u8]| -> (usize, usize) {
        let f = &f[f.len() - 32..];
        (
            u64::from_le_bytes(f[0..8].try_into().unwrap()) as usize,
            u64::from_le_bytes(f[8..16].try_into().unwrap()) as usize,
        )
    };
    let (hoff, hlen) = foot(&good);
    let with_header = |text: &[u8]| -> Vec<u8> {
        let mut v = good[..hoff].to_vec();
        v.extend_from_slice(text);
        v.extend_from_slice(&(hoff as u64).to_le_bytes());
        v.extend_from_slice(&(text.len() as u64).to_le_bytes());
        v.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(text).to_le_bytes());
        v.extend_from_slice(b"RESIDEND");
        v
    };
    let header: serde_json::Value = serde_json::from_slice(&good[hoff..hoff + hlen]).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let mut h = header.clone();
        f(&mut h);
        with_header(&serde_json::to_vec(&h).unwrap())
    };
    let mut bad: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut v = good.clone();
    v[0] = b'X';
    bad.push(("bad-magic", v, "not a residual file"));
    bad.push(("truncated", good[..n - 7].to_vec(), "truncated"));
    let mut v = good.clone();
    v[8..12].copy_from_slice(&99u32.to_le_bytes());
    bad.push(("future-version", v, "format version 99 is newer"));
    let mut v = good.clone();
    v[12] = 1;
    bad.push(("flags", v, "reserved flags"));
    let mut v = good.clone();
    v[hoff + 3] ^= 0x20;
    bad.push(("header-checksum", v, "header checksum mismatch"));
    let mut v = good.clone();
    v[16 + 1] ^= 1;
    bad.push(("block-checksum", v, "fails its checksum"));
    bad.push((
        "unknown-field",
        edit(&|h| {
            h["surprise"] = json!(1);
        }),
        "unknown field",
    ));
    bad.push((
        "duplicate-name",
        edit(&|h| {
            let t = h["tensors"][0].clone();
            h["tensors"].as_array_mut().unwrap().push(t);
        }),
        "empty or duplicate name",
    ));
    bad.push((
        "block-outside",
        edit(&|h| {
            h["tensors"][0]["encoding"]["blocks"][0]["offset"] = json!(n as u64);
        }),
        "outside the data section",
    ));
    bad.push((
        "bad-chunk",
        edit(&|h| {
            h["settings"]["chunk"] = json!(1000);
        }),
        "not a power of two",
    ));
    for (name, bytes, msg) in bad {
        let file = format!("error-{name}.resid");
        std::fs::write(out.join(&file), bytes).unwrap();
        errors.push(json!({"file": file, "base": "base-f32.safetensors", "error": msg}));
    }
    // A good file against another base: refused by its fingerprints.
    errors.push(json!({
        "file": "lossless-f32.resid",
        "base": "base-bf16.safetensors",
        "error": "another base",
    }));
    let manifest = json!({"version": 1, "cases": cases, "errors": errors});
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}
