//! Round trips and bad inputs for checkpoint reading and writing.

use std::collections::BTreeMap;
use std::path::Path;

use resid_io::write::{write_f32_checkpoint, write_index, SafetensorsWriter, TensorSpec};
use resid_io::{pair, Checkpoint, Dtype};

fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    vec![
        ("a.weight".into(), vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
        ("b.bias".into(), vec![3], vec![-1., 0.5, 0.25]),
    ]
}

fn raw_file(path: &Path, header: &str, data: &[u8]) {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

#[test]
fn f32_round_trip_with_metadata() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_f32_checkpoint(&p, &tensors(), &meta).unwrap();
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.metadata(0), &meta);
    let mut buf = Vec::new();
    for (n, s, v) in tensors() {
        let t = ck.get(&n).unwrap();
        assert_eq!(t.shape, s);
        ck.read_f32(t, &mut buf).unwrap();
        assert_eq!(buf, v);
    }
    // The safetensors crate reads what we wrote.
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2);
}

#[test]
fn bf16_and_f16_are_read_as_f32() {
    let d = tempfile::tempdir().unwrap();
    for dt in [Dtype::BF16, Dtype::F16, Dtype::F64] {
        let p = d.path().join(format!("{dt}.safetensors"));
        let v = [1.0f32, -0.5, 3.0, 0.0];
        let mut bytes = Vec::new();
        dt.from_f32(&v, &mut bytes);
        let spec = TensorSpec {
            name: "x".into(),
            dtype_name: dt.name().into(),
            shape: vec![4],
        };
        let mut w = SafetensorsWriter::create(&p, vec![spec], &BTreeMap::new()).unwrap();
        w.write_tensor("x", &bytes).unwrap();
        w.finish().unwrap();
        let ck = Checkpoint::open(&p).unwrap();
        let mut out = Vec::new();
        ck.read_f32(ck.get("x").unwrap(), &mut out).unwrap();
        assert_eq!(out, v);
    }
}

#[test]
fn sharded_folder_is_read_through_its_index() {
    let d = tempfile::tempdir().unwrap();
    let t = tensors();
    write_f32_checkpoint(
        &d.path().join("model-00001-of-00002.safetensors"),
        &t[..1],
        &BTreeMap::new(),
    )
    .unwrap();
    write_f32_checkpoint(
        &d.path().join("model-00002-of-00002.safetensors"),
        &t[1..],
        &BTreeMap::new(),
    )
    .unwrap();
    write_index(
        &d.path().join("model.safetensors.index.json"),
        &[
            ("a.weight".into(), "model-00001-of-00002.safetensors".into()),
            ("b.bias".into(), "model-00002-of-00002.safetensors".into()),
        ],
        36,
    )
    .unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    assert!(ck.is_sharded());
    assert_eq!(ck.tensors().len(), 2);
    let mut out = Vec::new();
    ck.read_f32(ck.get("b.bias").unwrap(), &mut out).unwrap();
    assert_eq!(out, t[1].2);
}

fn open_err(path: &Path) -> String {
    Checkpoint::open(path)
        .err()
        .expect("should fail")
        .to_string()
}

#[test]
fn bad_inputs_name_the_file_and_problem() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.safetensors");
    let ps = p.display().to_string();

    std::fs::write(&p, [1, 2, 3]).unwrap();
    let e = open_err(&p);
    assert!(e.contains(&ps) && e.contains("shorter than"), "{e}");

    std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
    let e = open_err(&p);
    assert!(e.contains("past the end"), "{e}");

    raw_file(&p, "not json", &[]);
    assert!(open_err(&p).contains("not valid JSON"));

    std::fs::write(&p, [&(2u64).to_le_bytes()[..], &[0xff, 0xfe]].concat()).unwrap();
    assert!(open_err(&p).contains("not UTF-8"));

    raw_file(
        &p,
        r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        &[0; 8],
    );
    let e = open_err(&p);
    assert!(e.contains("'x'") && e.contains("outside"), "{e}");

    raw_file(
        &p,
        r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let e = open_err(&p);
    assert!(e.contains("needs 12 bytes"), "{e}");

    raw_file(
        &p,
        r#"{"x":{"dtype":"Q4","shape":[3],"data_offsets":[0,3]}}"#,
        &[0; 3],
    );
    assert!(open_err(&p).contains("unknown dtype 'Q4'"));

    raw_file(
        &p,
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    );
    assert!(open_err(&p).contains("duplicate tensor name 'x'"));

    raw_file(
        &p,
        r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    assert!(open_err(&p).contains("overlaps"));

    let e = open_err(&d.path().join("missing.safetensors"));
    assert!(e.contains("missing.safetensors"), "{e}");
    let e = open_err(d.path());
    assert!(e.contains("no model.safetensors"), "{e}");
}

#[test]
fn integer_tensors_open_but_refuse_float_reads() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("i.safetensors");
    raw_file(
        &p,
        r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let ck = Checkpoint::open(&p).unwrap();
    let e = ck
        .read_f32(ck.get("ids").unwrap(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("I64") && e.contains("ids"), "{e}");
}

#[test]
fn pairing_lists_unmatched_and_rejects_shape_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.safetensors");
    let b = d.path().join("b.safetensors");
    let mut t = tensors();
    write_f32_checkpoint(&a, &t, &BTreeMap::new()).unwrap();
    t.push(("extra".into(), vec![1], vec![0.0]));
    write_f32_checkpoint(&b, &t, &BTreeMap::new()).unwrap();
    let p = pair(
        &Checkpoint::open(&a).unwrap(),
        &Checkpoint::open(&b).unwrap(),
    )
    .unwrap();
    assert_eq!(p.pairs.len(), 2);
    assert_eq!(p.only_trained, vec!["extra".to_string()]);
    t[0] = ("a.weight".into(), vec![3, 2], vec![0.0; 6]);
    write_f32_checkpoint(&b, &t, &BTreeMap::new()).unwrap();
    let e = pair(
        &Checkpoint::open(&a).unwrap(),
        &Checkpoint::open(&b).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[2, 3]") && e.contains("[3, 2]") && e.contains("a.weight"),
        "{e}"
    );
}

/// Mutated files (bit flips, truncations, random header bytes) either open
/// or fail with an error; none panics. A bounded, seeded stand-in for the
/// fuzz target `fuzz/fuzz_targets/safetensors_header.rs`, run on every test.
#[test]
fn mutated_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.safetensors");
    write_f32_checkpoint(&good, &tensors(), &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let p = d.path().join("m.safetensors");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut buf = Vec::new();
    for i in 0..1500 {
        let mut b = bytes.clone();
        match i % 3 {
            0 => {
                let k = rng.random_range(0..b.len());
                b[k] ^= 1 << rng.random_range(0..8);
            }
            1 => b.truncate(rng.random_range(0..b.len())),
            _ => {
                let k = rng.random_range(0..b.len().min(120));
                b[k] = rng.random();
            }
        }
        std::fs::write(&p, &b).unwrap();
        if let Ok(ck) = Checkpoint::open(&p) {
            for t in ck.tensors() {
                let _ = ck.read_f32(t, &mut buf);
            }
        }
    }
}
