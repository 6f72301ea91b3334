//! Wrote the version-2 golden files of `tests/golden/v2` (run once with the
//! version-2 writer; the files are frozen: `tests/golden.rs` decodes them
//! forever). The per-dtype pairs are those of version 1 (their bases are
//! `tests/golden/v1/base-*.safetensors`); the model folder is the one
//! `tests/golden/v2/py/make.py` wrote with the Python `safetensors` library.
//!
//! `cargo run -p resid-codec --example make_golden_v2 -- tests/golden/v2`

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
        let tmp = tempfile::tempdir().unwrap();
        let bp = tmp.path().join("base.safetensors");
        let tp = tmp.path().join("trained.safetensors");
        write(&bp, &base, &BTreeMap::new());
        write(&tp, &trained, &meta);
        let v1_base = format!("../v1/base-{dn}.safetensors");
        assert_eq!(
            std::fs::read(&bp).unwrap(),
            std::fs::read(out.join(&v1_base)).unwrap(),
            "the pairs are version 1's"
        );
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
                // Version 2 keeps the trained header: the original file back.
                assert_eq!(rebuilt_sha, sha(&std::fs::read(&tp).unwrap()));
            }
            cases.push(json!({
                "file": name,
                "base": v1_base,
                "mode": label,
                "dtype": d.name(),
                "rebuilt_sha256": rebuilt_sha,
                "tensor_sha256": tensors,
            }));
        }
    }
    // The model folder written by the Python safetensors library.
    let py = out.join("py");
    let pb = Checkpoint::open(&py.join("base.safetensors")).unwrap();
    let pt = Checkpoint::open(&py.join("trained")).unwrap();
    for (label, mode) in [("lossless", Mode::Lossless), ("lossy", Mode::Keep(0.5))] {
        let name = format!("{label}-folder.resid");
        let f = out.join(&name);
        let opts = PackOptions {
            mode,
            chunk: 1 << 12,
            provenance: resid_codec::container::Provenance {
                base_repo: Some("resid/golden-base".into()),
                base_revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
                ..Default::default()
            },
            ..PackOptions::default()
        };
        pack(&pb, &pt, &f, &opts).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("out");
        unpack(&pb, &f, &r).unwrap();
        let mut outputs = serde_json::Map::new();
        for rel in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "chat_template.jinja",
            "1_Pooling/config.json",
        ] {
            let got = std::fs::read(r.join(rel)).unwrap();
            if label == "lossless" || rel != "model.safetensors" {
                assert_eq!(
                    got,
                    std::fs::read(py.join("trained").join(rel)).unwrap(),
                    "{rel}"
                );
            }
            outputs.insert(rel.into(), json!(sha(&got)));
        }
        let rebuilt = Checkpoint::open(&r).unwrap();
        let tensors: serde_json::Map<String, serde_json::Value> = rebuilt
            .tensors()
            .iter()
            .map(|e| (e.name.clone(), json!(sha(rebuilt.bytes(e)))))
            .collect();
        cases.push(json!({
            "file": name,
            "base": "py/base.safetensors",
            "mode": label,
            "dtype": "F32,F16,I64",
            "outputs": outputs,
            "tensor_sha256": tensors,
        }));
    }
    // Error files, each made from the lossless folder file, the header edited
    // and every checksum fixed up so that only the edited rule can refuse it.
    let good = std::fs::read(out.join("lossless-folder.resid")).unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&resid_codec::container::header_json(&good).unwrap()).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let mut h = header.clone();
        f(&mut h);
        resid_codec::container::replace_header(&good, &serde_json::to_vec(&h).unwrap())
    };
    let file_index = |h: &serde_json::Value, p: &str| -> usize {
        h["files"]
            .as_array()
            .unwrap()
            .iter()
            .position(|f| f["path"] == p)
            .unwrap()
    };
    let mut bad: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    bad.push((
        "dotdot-name",
        edit(&|h| {
            let i = file_index(h, "config.json");
            h["files"][i]["path"] = json!("../x");
        }),
        "stored file '../x': '..' or '.' component",
    ));
    bad.push((
        "absolute-name",
        edit(&|h| {
            let i = file_index(h, "config.json");
            h["files"][i]["path"] = json!("/tmp/resid-golden-x");
        }),
        "absolute path",
    ));
    bad.push((
        "case-duplicate-name",
        edit(&|h| {
            let i = file_index(h, "config.json");
            let j = file_index(h, "tokenizer.json");
            h["files"][j]["path"] = json!("CONFIG.json");
            let _ = i;
        }),
        "names the same file",
    ));
    bad.push((
        "file-sha256",
        edit(&|h| {
            let i = file_index(h, "config.json");
            h["files"][i]["sha256"] = json!("0".repeat(64));
        }),
        "fails its sha256",
    ));
    bad.push((
        "original-header",
        edit(&|h| {
            let s = h["trained"]["shards"][0]["original"]["header"]
                .as_str()
                .unwrap()
                .replace("\"F16\"", "\"BF16\"");
            h["trained"]["shards"][0]["original"]["header"] = json!(s);
        }),
        "original header",
    ));
    let n = good.len();
    let hoff = u64::from_le_bytes(good[n - 32..n - 24].try_into().unwrap()) as usize;
    let mut garbage = good[..hoff].to_vec();
    let junk = b"this is not a zstd frame";
    garbage.extend_from_slice(junk);
    garbage.extend_from_slice(&resid_codec::container::footer(hoff as u64, junk));
    bad.push((
        "header-not-zstd",
        garbage,
        "compressed header does not decode",
    ));
    for (name, bytes, msg) in bad {
        let file = format!("error-{name}.resid");
        std::fs::write(out.join(&file), bytes).unwrap();
        errors.push(json!({"file": file, "base": "py/base.safetensors", "error": msg}));
    }
    // A version-2 field in a version-1 file.
    let v1 = std::fs::read(out.join("../v1/lossless-f32.resid")).unwrap();
    let mut h: serde_json::Value =
        serde_json::from_slice(&resid_codec::container::header_json(&v1).unwrap()).unwrap();
    h["provenance"] = json!({"resid_version": "0.0.0"});
    std::fs::write(
        out.join("error-v1-with-provenance.resid"),
        resid_codec::container::replace_header(&v1, &serde_json::to_vec(&h).unwrap()),
    )
    .unwrap();
    errors.push(json!({
        "file": "error-v1-with-provenance.resid",
        "base": "../v1/base-f32.safetensors",
        "error": "'provenance' is not part of format version 1",
    }));
    let manifest = json!({"version": 2, "cases": cases, "errors": errors});
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}
