//! Wrote the resized-vocabulary golden files of `tests/golden/v2`
//! (`resize-*`, FORMAT.md 2.6) and appended their cases to its
//! `manifest.json` (run once; the files are frozen). Besides growing and
//! cutting rows they reach what no earlier golden file did (SPEC-GAPS.md D):
//! a lossy base of another dtype (F16 base, F32 trained), an F64 base that
//! is not f32-exact, remainder levels beyond the 16 reconstruction levels
//! and escapes in a remainder stream.
//!
//! `cargo run -p resid-codec --example make_golden_v2_resize -- tests/golden/v2`

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_codec::{pack, unpack, Mode, PackOptions, ResidFile};
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::{Checkpoint, Dtype};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

type T = (&'static str, Dtype, Vec<usize>, Vec<f32>);

fn write(path: &Path, ts: &[T]) {
    let specs = ts
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.to_string(),
            dtype_name: d.name().into(),
            shape: s.clone(),
        })
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut w = SafetensorsWriter::create(path, specs, &meta).unwrap();
    let mut b = Vec::new();
    for (n, d, _, v) in ts {
        d.from_f32(v, &mut b);
        w.write_tensor(n, &b).unwrap();
    }
    w.finish().unwrap();
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("OUT_DIR"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(216);
    let mut g = move || -> f32 { (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() };
    let mut cases = Vec::new();
    for (tag, d, mode) in [
        ("lossless-bf16", Dtype::BF16, Mode::Lossless),
        ("lossy-f32", Dtype::F32, Mode::BitsPerParam(3.0)),
        ("lossy-f64", Dtype::F64, Mode::Keep(0.2)),
    ] {
        let (v, k) = (40, 16);
        let eb: Vec<f32> = (0..v * k).map(|_| 0.05 * g()).collect();
        let mut mean = vec![0f32; k];
        for (i, x) in eb.iter().enumerate() {
            mean[i % k] += x / v as f32;
        }
        // 8 rows added (48): the new ones start at the mean of the old.
        let et: Vec<f32> = (0..48 * k)
            .map(|i| if i < v * k { eb[i] } else { mean[i % k] } + 0.002 * g())
            .collect();
        let cb: Vec<f32> = (0..v * k).map(|_| 0.05 * g()).collect();
        let ct: Vec<f32> = cb[..30 * k].iter().map(|x| x + 0.002 * g()).collect();
        let wb: Vec<f32> = (0..64 * 64).map(|_| 0.05 * g()).collect();
        let mut wt: Vec<f32> = wb.iter().map(|x| x + 0.001 * g()).collect();
        // Outliers far beyond the step: remainder levels above 16, escaped.
        for (j, i) in [5usize, 900, 2000, 4000].into_iter().enumerate() {
            wt[i] += 0.3 * (j as f32 + 1.0) * if j % 2 == 0 { 1.0 } else { -1.0 };
        }
        let mut base: Vec<T> = vec![
            ("embed.weight", d, vec![v, k], eb.clone()),
            ("cut.weight", d, vec![v, k], cb),
            ("lm_head.weight", d, vec![v, k], eb),
            ("w", d, vec![64, 64], wb.clone()),
        ];
        let mut trained: Vec<T> = vec![
            ("embed.weight", d, vec![48, k], et.clone()),
            ("cut.weight", d, vec![30, k], ct),
            ("lm_head.weight", d, vec![48, k], et),
            ("w", d, vec![64, 64], wt.clone()),
        ];
        if d == Dtype::F32 {
            // A lossy tensor against a base of another dtype (F16).
            let w16: Vec<f32> = wt.iter().map(|x| x + 0.001 * g()).collect();
            base.push(("w16", Dtype::F16, vec![64, 64], wb));
            trained.push(("w16", d, vec![64, 64], w16));
        }
        let bp = out.join(format!(
            "resize-base-{}.safetensors",
            d.name().to_lowercase()
        ));
        let tmp = tempfile::tempdir().unwrap();
        let tp = tmp.path().join("model.safetensors");
        if d == Dtype::F64 {
            // f32 values widened to f64 are f32-exact: write the base in f64
            // arithmetic so that it is not.
            let specs = base
                .iter()
                .map(|(n, d, s, _)| TensorSpec {
                    name: n.to_string(),
                    dtype_name: d.name().into(),
                    shape: s.clone(),
                })
                .collect();
            let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
            let mut w = SafetensorsWriter::create(&bp, specs, &meta).unwrap();
            for (n, _, _, vals) in &base {
                let b: Vec<u8> = vals
                    .iter()
                    .flat_map(|&x| (x as f64 * (1.0 + 3e-9)).to_le_bytes())
                    .collect();
                w.write_tensor(n, &b).unwrap();
            }
            w.finish().unwrap();
        } else {
            write(&bp, &base);
        }
        write(&tp, &trained);
        let b = Checkpoint::open(&bp).unwrap();
        let t = Checkpoint::open(&tp).unwrap();
        let file = format!("resize-{tag}.resid");
        let opts = PackOptions {
            mode,
            chunk: 4096,
            ..Default::default()
        };
        pack(&b, &t, &out.join(&file), &opts).unwrap();
        let rebuilt = tmp.path().join("rebuilt.safetensors");
        unpack(&b, &out.join(&file), &rebuilt).unwrap();
        let rebuilt_sha = sha(&std::fs::read(&rebuilt).unwrap());
        if mode == Mode::Lossless {
            assert_eq!(rebuilt_sha, sha(&std::fs::read(&tp).unwrap()));
        }
        let rf = ResidFile::open(&out.join(&file)).unwrap();
        let mut ts = serde_json::Map::new();
        for (ti, th) in rf.header.tensors.iter().enumerate() {
            let bytes = resid_codec::decode_tensor(&rf, &b, ti).unwrap();
            ts.insert(th.name.clone(), json!(sha(&bytes)));
            eprintln!(
                "{file} {} {} resize {:?}",
                th.name,
                th.encoding.label(),
                th.resize.as_ref().map(|r| r.base_rows)
            );
        }
        cases.push(json!({
            "file": file,
            "base": bp.file_name().unwrap().to_string_lossy(),
            "mode": if mode == Mode::Lossless { "lossless" } else { "lossy" },
            "dtype": d.name(),
            "rebuilt_sha256": rebuilt_sha,
            "tensor_sha256": ts,
        }));
    }
    let mp = out.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    m["cases"].as_array_mut().unwrap().extend(cases);
    std::fs::write(&mp, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
}
