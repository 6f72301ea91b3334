//! Property tests beyond those in `codec.rs` (which cover 1-D F32/F16/BF16
//! lossless and F32 256x256 lossy at `--max-error`): every dtype, shapes of
//! any rank crossing chunk boundaries, a base that lacks the tensor or holds
//! it with another dtype or shape, and lossy coding of F16/BF16/F64 matrices
//! of any small shape in every rate mode.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use resid_codec::{pack, unpack, Mode, PackOptions};
use resid_io::write::{write_raw_checkpoint, RawTensor};
use resid_io::{Checkpoint, Dtype};

fn write(path: &Path, tensors: &[RawTensor]) {
    write_raw_checkpoint(path, tensors, &BTreeMap::new()).unwrap();
}

const DTYPES: [(&str, usize); 9] = [
    ("F64", 8),
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("I64", 8),
    ("I32", 4),
    ("I16", 2),
    ("U8", 1),
    ("BOOL", 1),
];

/// How the base holds the tensor.
#[derive(Clone, Copy, Debug)]
enum BaseKind {
    Same,
    Absent,
    OtherDtype,
    OtherShape,
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![]),
        (1usize..9000).prop_map(|n| vec![n]),
        (1usize..100, 1usize..100).prop_map(|(a, b)| vec![a, b]),
        (1usize..20, 1usize..20, 1usize..20).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any dtype, any shape, any relation to the base: bit-exact.
    #[test]
    fn lossless_is_bit_exact_for_every_dtype_shape_and_base(
        d in 0usize..DTYPES.len(),
        shape in shape(),
        kind in prop_oneof![Just(BaseKind::Same), Just(BaseKind::Absent),
                            Just(BaseKind::OtherDtype), Just(BaseKind::OtherShape)],
        seed in any::<u64>(),
        flips in 0.0f64..1.0,
    ) {
        let (dt, size) = DTYPES[d];
        let n = numel(&shape) * size;
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let base: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        // Trained: the base with a fraction of its bytes changed.
        let trained: Vec<u8> = base.iter().map(|&b| {
            if (next() % 1000) as f64 / 1000.0 < flips { next() as u8 } else { b }
        }).collect();
        let dir = tempfile::tempdir().unwrap();
        let (bp, tp) = (dir.path().join("b.safetensors"), dir.path().join("t.safetensors"));
        let other = vec![7u8; 12];
        let mut bt = vec![("keep", "U8", vec![3], vec![1, 2, 3])];
        match kind {
            BaseKind::Same => bt.push(("x", dt, shape.clone(), base)),
            BaseKind::Absent => {}
            BaseKind::OtherDtype => {
                let od = if dt == "F32" { "I32" } else { "F32" };
                bt.push(("x", od, shape.clone(), (0..numel(&shape) * 4).map(|i| i as u8).collect()));
            }
            BaseKind::OtherShape => bt.push(("x", "U8", vec![12], other)),
        }
        write(&bp, &bt);
        write(&tp, &[("keep", "U8", vec![3], vec![1, 2, 3]), ("x", dt, shape.clone(), trained)]);
        let b = Checkpoint::open(&bp).unwrap();
        let t = Checkpoint::open(&tp).unwrap();
        let f = dir.path().join("x.resid");
        let opts = PackOptions { allow_nonfinite: true, chunk: 1 << 12, ..Default::default() };
        pack(&b, &t, &f, &opts).unwrap();
        let o = dir.path().join("o.safetensors");
        unpack(&b, &f, &o).unwrap();
        let oc = Checkpoint::open(&o).unwrap();
        for tt in t.tensors() {
            let r = oc.get(&tt.name).unwrap();
            prop_assert_eq!(&r.dtype_name, &tt.dtype_name);
            prop_assert_eq!(&r.shape, &tt.shape);
            prop_assert_eq!(oc.bytes(r), t.bytes(tt), "{} {:?} {:?}", dt, shape, kind);
        }
    }

    /// Lossy at a requested error, for the half and double precision dtypes
    /// and any small matrix shape: the relative error of the residual
    /// (measured on the rebuilt file, rounding to the dtype included) stays
    /// within the request, up to the dtype's own rounding of the weights.
    #[test]
    fn lossy_max_error_holds_for_any_float_dtype_and_shape(
        d in 0usize..3,
        rows in 1usize..48,
        cols in 1usize..48,
        e in 0.05f64..0.5,
        seed in any::<u64>(),
    ) {
        let dt = [Dtype::F16, Dtype::BF16, Dtype::F64][d];
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5 };
        let n = rows * cols;
        let bv: Vec<f32> = (0..n).map(|_| next()).collect();
        // A residual of the order of the weights, low-rank plus noise.
        let u: Vec<f32> = (0..rows).map(|_| next()).collect();
        let v: Vec<f32> = (0..cols).map(|_| next()).collect();
        let tv: Vec<f32> = (0..n).map(|i| bv[i] + 0.5 * u[i / cols] * v[i % cols] + 0.1 * next()).collect();
        let enc = |v: &[f32]| { let mut o = Vec::new(); dt.from_f32(v, &mut o); o };
        let dir = tempfile::tempdir().unwrap();
        let (bp, tp) = (dir.path().join("b.safetensors"), dir.path().join("t.safetensors"));
        write(&bp, &[("m", dt.name(), vec![rows, cols], enc(&bv))]);
        write(&tp, &[("m", dt.name(), vec![rows, cols], enc(&tv))]);
        let b = Checkpoint::open(&bp).unwrap();
        let t = Checkpoint::open(&tp).unwrap();
        let f = dir.path().join("x.resid");
        let opts = PackOptions { mode: Mode::MaxError(e), chunk: 1 << 12, ..Default::default() };
        pack(&b, &t, &f, &opts).unwrap();
        let o = dir.path().join("o.safetensors");
        unpack(&b, &f, &o).unwrap();
        let oc = Checkpoint::open(&o).unwrap();
        let (mut bw, mut tw, mut ow) = (Vec::new(), Vec::new(), Vec::new());
        b.read_f32(&b.tensors()[0], &mut bw).unwrap();
        t.read_f32(&t.tensors()[0], &mut tw).unwrap();
        let r = oc.get("m").unwrap();
        prop_assert_eq!(&r.shape, &vec![rows, cols]);
        prop_assert_eq!(&r.dtype_name, dt.name());
        oc.read_f32(r, &mut ow).unwrap();
        let (mut err, mut norm, mut ulp) = (0.0f64, 0.0f64, 0.0f64);
        let eps = match dt { Dtype::F16 => 2f64.powi(-11), Dtype::BF16 => 2f64.powi(-8), _ => 2f64.powi(-24) };
        for i in 0..n {
            err += ((ow[i] - tw[i]) as f64).powi(2);
            norm += ((tw[i] - bw[i]) as f64).powi(2);
            ulp += (eps * tw[i].abs() as f64).powi(2);
        }
        let rel = (err / norm.max(1e-300)).sqrt();
        let slack = (ulp / norm.max(1e-300)).sqrt();
        prop_assert!(rel <= e * 1.001 + slack, "{:?} {}x{}: asked {}, got {} (rounding slack {})", dt, rows, cols, e, rel, slack);
    }

    /// Every rate mode gives a file that unpacks to the trained names,
    /// dtypes and shapes, with finite values.
    #[test]
    fn every_lossy_mode_rebuilds_a_well_formed_checkpoint(
        mode in prop_oneof![(0.5f64..8.0).prop_map(Mode::BitsPerParam),
                            (0.01f64..1.0).prop_map(Mode::Keep),
                            (0.05f64..0.9).prop_map(Mode::MaxError)],
        rows in 1usize..40,
        cols in 1usize..40,
        seed in any::<u64>(),
    ) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5 };
        let n = rows * cols;
        let bv: Vec<f32> = (0..n).map(|_| next()).collect();
        let tv: Vec<f32> = bv.iter().map(|b| b + 0.01 * next()).collect();
        let f32b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let dir = tempfile::tempdir().unwrap();
        let (bp, tp) = (dir.path().join("b.safetensors"), dir.path().join("t.safetensors"));
        write(&bp, &[("m", "F32", vec![rows, cols], f32b(&bv)), ("same", "F32", vec![cols], f32b(&bv[..cols]))]);
        write(&tp, &[("m", "F32", vec![rows, cols], f32b(&tv)), ("same", "F32", vec![cols], f32b(&bv[..cols])),
                     ("new", "F32", vec![rows], f32b(&tv[..rows]))]);
        let b = Checkpoint::open(&bp).unwrap();
        let t = Checkpoint::open(&tp).unwrap();
        let f = dir.path().join("x.resid");
        let opts = PackOptions { mode, chunk: 1 << 12, ..Default::default() };
        pack(&b, &t, &f, &opts).unwrap();
        let o = dir.path().join("o.safetensors");
        unpack(&b, &f, &o).unwrap();
        let oc = Checkpoint::open(&o).unwrap();
        prop_assert_eq!(oc.tensors().len(), 3);
        for tt in t.tensors() {
            let r = oc.get(&tt.name).unwrap();
            prop_assert_eq!(&r.shape, &tt.shape);
            let mut v = Vec::new();
            oc.read_f32(r, &mut v).unwrap();
            prop_assert!(v.iter().all(|x| x.is_finite()));
            if tt.name != "m" {
                // Unchanged and new tensors are stored losslessly.
                prop_assert_eq!(oc.bytes(r), t.bytes(tt), "{}", tt.name);
            }
        }
    }
}
