//! Codec properties: bit-exact lossless round trips for any tensor, lossy
//! within the requested error, rate control within 5%, the error at a fixed
//! rate falling as the residual gets sparser, an all-zero residual costing
//! almost nothing, lossy beating the baselines at equal bits, and the file
//! within 3% of the Shannon bound of its symbol streams.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, StudentT};
use resid_codec::baselines;
use resid_codec::{pack, unpack, Mode, PackOptions};
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::{Checkpoint, Dtype};

type T = (String, Dtype, Vec<usize>, Vec<f32>);

fn write(path: &Path, ts: &[T]) {
    let specs = ts
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.clone(),
            dtype_name: d.name().into(),
            shape: s.clone(),
        })
        .collect();
    let mut w = SafetensorsWriter::create(path, specs, &BTreeMap::new()).unwrap();
    let mut b = Vec::new();
    for (n, d, _, v) in ts {
        d.from_f32(v, &mut b);
        w.write_tensor(n, &b).unwrap();
    }
    w.finish().unwrap();
}

/// Base N(0, 0.02); residual: a fraction `dense` of entries heavy-tailed
/// (Student-t 2) of scale `scale`, the rest tiny Gaussian noise.
fn sparse_pair(
    dir: &Path,
    mats: usize,
    dense: f64,
    seed: u64,
    dtype: Dtype,
) -> (Checkpoint, Checkpoint) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n01 = Normal::new(0.0f32, 1.0).unwrap();
    let st = StudentT::new(2.0f32).unwrap();
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for i in 0..mats {
        let (m, n) = (256, 256);
        let b: Vec<f32> = (0..m * n).map(|_| 0.02 * n01.sample(&mut rng)).collect();
        let t: Vec<f32> = b
            .iter()
            .map(|x| {
                let r = if rng.random::<f64>() < dense {
                    1e-3 * st.sample(&mut rng)
                } else {
                    1e-6 * n01.sample(&mut rng)
                };
                x + r
            })
            .collect();
        base.push((format!("m{i}"), dtype, vec![m, n], b));
        trained.push((format!("m{i}"), dtype, vec![m, n], t));
    }
    write(&dir.join("b.safetensors"), &base);
    write(&dir.join("t.safetensors"), &trained);
    (
        Checkpoint::open(&dir.join("b.safetensors")).unwrap(),
        Checkpoint::open(&dir.join("t.safetensors")).unwrap(),
    )
}

/// Relative residual error of a rebuilt checkpoint.
fn rel_error(base: &Checkpoint, trained: &Checkpoint, rebuilt: &Path) -> f64 {
    let r = Checkpoint::open(rebuilt).unwrap();
    let (mut e, mut n) = (0.0, 0.0);
    let (mut w, mut b, mut h) = (Vec::new(), Vec::new(), Vec::new());
    for t in trained.tensors() {
        let Some(bt) = base.get(&t.name) else {
            continue;
        };
        trained.read_f32(t, &mut w).unwrap();
        base.read_f32(bt, &mut b).unwrap();
        r.read_f32(r.get(&t.name).unwrap(), &mut h).unwrap();
        for i in 0..w.len() {
            e += ((h[i] - w[i]) as f64).powi(2);
            n += ((w[i] - b[i]) as f64).powi(2);
        }
    }
    (e / n.max(1e-300)).sqrt()
}

fn lossy(mode: Mode) -> PackOptions {
    PackOptions {
        mode,
        seed: 5,
        ..Default::default()
    }
}

/// A small model (48 tensors of 32 x 64, 98k parameters), where the header
/// is a large share of a 0.25 bits/param file: the rate reached counts it
/// (dry runs build and compress the real header), so the file lands within
/// 3% of the target instead of the 11% below it that estimating the header
/// by constants gave.
#[test]
fn rate_control_counts_the_header_of_a_small_model() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(25);
    let n01 = Normal::new(0.0f32, 1.0).unwrap();
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for i in 0..48 {
        let b: Vec<f32> = (0..32 * 64).map(|_| 0.02 * n01.sample(&mut rng)).collect();
        let t: Vec<f32> = b.iter().map(|x| x + 1e-3 * n01.sample(&mut rng)).collect();
        base.push((format!("layer.{i}.weight"), Dtype::F32, vec![32, 64], b));
        trained.push((format!("layer.{i}.weight"), Dtype::F32, vec![32, 64], t));
    }
    write(&d.path().join("b.safetensors"), &base);
    write(&d.path().join("t.safetensors"), &trained);
    let b = Checkpoint::open(&d.path().join("b.safetensors")).unwrap();
    let t = Checkpoint::open(&d.path().join("t.safetensors")).unwrap();
    let f = d.path().join("x.resid");
    // (At 0.1 the header alone, 1.6 kB, is 0.13 bits/param: out of reach.)
    for target in [0.25, 0.5, 1.0] {
        let r = pack(&b, &t, &f, &lossy(Mode::BitsPerParam(target))).unwrap();
        let actual = std::fs::metadata(&f).unwrap().len() as f64 * 8.0 / r.params as f64;
        let header = r.file_bytes - r.coded_bytes;
        assert!(
            (actual - target).abs() / target < 0.03,
            "target {target}, got {actual} (header {header} of {} bytes)",
            r.file_bytes
        );
    }
}

#[test]
fn rate_control_lands_within_five_percent() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = sparse_pair(d.path(), 24, 0.1, 1, Dtype::BF16);
    let f = d.path().join("x.resid");
    for target in [0.5, 1.0, 2.0] {
        let r = pack(&b, &t, &f, &lossy(Mode::BitsPerParam(target))).unwrap();
        let actual = std::fs::metadata(&f).unwrap().len() as f64 * 8.0 / r.params as f64;
        assert!(
            (actual - target).abs() / target < 0.05,
            "target {target}, got {actual}"
        );
        assert!(
            (r.coded_bytes as f64) < r.entropy_bytes * 1.03,
            "coded {} vs Shannon {} at {target}",
            r.coded_bytes,
            r.entropy_bytes
        );
    }
    let r = pack(&b, &t, &f, &lossy(Mode::Keep(0.05))).unwrap();
    assert!(
        (r.kept_fraction - 0.05).abs() / 0.05 < 0.05,
        "keep {}",
        r.kept_fraction
    );
}

#[test]
fn lossless_file_is_near_its_shannon_bound_and_bit_exact() {
    let d = tempfile::tempdir().unwrap();
    for dt in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let (b, t) = sparse_pair(d.path(), 8, 0.1, 2, dt);
        let f = d.path().join("x.resid");
        let r = pack(&b, &t, &f, &PackOptions::default()).unwrap();
        assert!(
            (r.coded_bytes as f64) < r.entropy_bytes * 1.03,
            "{dt}: {} vs {}",
            r.coded_bytes,
            r.entropy_bytes
        );
        let o = d.path().join("o.safetensors");
        let _ = std::fs::remove_file(&o); // unpack keeps existing files
        unpack(&b, &f, &o).unwrap();
        let oc = Checkpoint::open(&o).unwrap();
        for x in t.tensors() {
            assert_eq!(oc.bytes(oc.get(&x.name).unwrap()), t.bytes(x));
        }
    }
}

#[test]
fn error_at_fixed_rate_falls_as_the_residual_gets_sparser() {
    let d = tempfile::tempdir().unwrap();
    let mut errs = Vec::new();
    for dense in [0.5, 0.1, 0.02] {
        let (b, t) = sparse_pair(d.path(), 8, dense, 3, Dtype::F32);
        let f = d.path().join("x.resid");
        pack(&b, &t, &f, &lossy(Mode::BitsPerParam(1.0))).unwrap();
        let o = d.path().join("o.safetensors");
        let _ = std::fs::remove_file(&o); // unpack keeps existing files
        unpack(&b, &f, &o).unwrap();
        errs.push(rel_error(&b, &t, &o));
    }
    assert!(errs[0] > errs[1] && errs[1] > errs[2], "{errs:?}");
}

#[test]
fn an_all_zero_residual_costs_almost_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = sparse_pair(d.path(), 8, 0.1, 4, Dtype::BF16);
    let f = d.path().join("x.resid");
    for mode in [Mode::Lossless, Mode::BitsPerParam(1.0), Mode::MaxError(0.1)] {
        let r = pack(&b, &b, &f, &lossy(mode)).unwrap();
        // Only the header: no blocks, a few hundred bytes per tensor.
        assert_eq!(r.coded_bytes, 0, "{mode:?}");
        assert!(r.file_bytes < 8 * 400, "{mode:?}: {} bytes", r.file_bytes);
        let o = d.path().join("o.safetensors");
        let _ = std::fs::remove_file(&o); // unpack keeps existing files
        unpack(&b, &f, &o).unwrap();
        assert_eq!(rel_error(&b, &b, &o), 0.0);
    }
}

#[test]
fn lossy_beats_the_baselines_at_equal_bits() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = sparse_pair(d.path(), 12, 0.05, 6, Dtype::F32);
    let rows = baselines::bench(&b, &t, &[0.5, 1.0, 2.0], 1, d.path()).unwrap();
    for row in rows.iter().filter(|r| r.method == "resid lossy") {
        for other in rows.iter().filter(|r| {
            [
                "DARE",
                "top-k fp16+u32+zstd",
                "low-rank fp16",
                "Delta-CoMe (no calibration)",
                "BitDelta",
            ]
            .contains(&r.method.as_str())
                && r.bits_per_param <= row.bits_per_param * 1.05
        }) {
            assert!(
                row.residual_rel_error < other.residual_rel_error,
                "resid {:?} vs {:?}",
                row,
                other
            );
        }
    }
    let bd = rows.iter().find(|r| r.method == "BitDelta").unwrap();
    let at1 = rows
        .iter()
        .find(|r| r.method == "resid lossy" && r.setting.ends_with(" 1"))
        .unwrap();
    assert!(at1.bits_per_param <= bd.bits_per_param * 1.05);
    assert!(
        at1.residual_rel_error < bd.residual_rel_error,
        "{at1:?} vs {bd:?}"
    );
    let bitx = rows.iter().find(|r| r.method == "BitX").unwrap();
    let ours = rows.iter().find(|r| r.method == "resid lossless").unwrap();
    assert!(
        ours.bits_per_param < bitx.bits_per_param,
        "{ours:?} vs {bitx:?}"
    );
}

fn any_tensor() -> impl Strategy<Value = (usize, Vec<u32>, Vec<u32>)> {
    (0usize..3, 1usize..3000).prop_flat_map(|(d, n)| {
        (
            Just(d),
            proptest::collection::vec(any::<u32>(), n),
            proptest::collection::vec(any::<u32>(), n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any bit patterns, NaN included, come back bit-exact.
    #[test]
    fn lossless_is_bit_exact_for_any_tensor((d, bb, tb) in any_tensor()) {
        let dt = [Dtype::F32, Dtype::F16, Dtype::BF16][d];
        let dir = tempfile::tempdir().unwrap();
        let bytes = |v: &[u32]| -> Vec<u8> {
            v.iter().flat_map(|x| x.to_le_bytes()[..dt.size()].to_vec()).collect()
        };
        let n = bb.len();
        let spec = vec![TensorSpec { name: "x".into(), dtype_name: dt.name().into(), shape: vec![n] }];
        for (p, v) in [("b", &bb), ("t", &tb)] {
            let mut w = SafetensorsWriter::create(&dir.path().join(p), spec.clone(), &BTreeMap::new()).unwrap();
            w.write_tensor("x", &bytes(v)).unwrap();
            w.finish().unwrap();
        }
        let b = Checkpoint::open(&dir.path().join("b")).unwrap();
        let t = Checkpoint::open(&dir.path().join("t")).unwrap();
        let f = dir.path().join("x.resid");
        let opts = PackOptions { allow_nonfinite: true, chunk: 1 << 12, ..Default::default() };
        pack(&b, &t, &f, &opts).unwrap();
        let o = dir.path().join("o");
        let _ = std::fs::remove_file(&o); // unpack keeps existing files
        unpack(&b, &f, &o).unwrap();
        let oc = Checkpoint::open(&o).unwrap();
        prop_assert_eq!(oc.bytes(&oc.tensors()[0]), t.bytes(&t.tensors()[0]));
    }

    /// Lossy rebuilds stay within the requested error.
    #[test]
    fn lossy_stays_within_the_requested_error(e in 0.02f64..0.5, seed in 0u64..1000, dense in 0.01f64..0.9) {
        let dir = tempfile::tempdir().unwrap();
        let (b, t) = sparse_pair(dir.path(), 2, dense, seed, Dtype::F32);
        let f = dir.path().join("x.resid");
        pack(&b, &t, &f, &lossy(Mode::MaxError(e))).unwrap();
        let o = dir.path().join("o.safetensors");
        let _ = std::fs::remove_file(&o); // unpack keeps existing files
        unpack(&b, &f, &o).unwrap();
        let got = rel_error(&b, &t, &o);
        prop_assert!(got <= e * 1.001, "asked {}, got {}", e, got);
    }
}
