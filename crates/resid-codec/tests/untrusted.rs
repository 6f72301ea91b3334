//! The version-2 header and files section given hostile edits (the CI side of
//! `fuzz/fuzz_targets/v2_header.rs`): stored names that try to leave the
//! output folder, and random byte damage to the header JSON with every
//! checksum fixed up. Each must give an error or a rebuild inside the output
//! folder — never a panic or a file outside it.

use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_codec::container::{append_blocks, header_json, replace_header, Block};
use resid_codec::{decode_tensor, unpack, CodecError, ResidFile};
use resid_io::Checkpoint;

fn golden(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/v2")
        .join(p)
}

fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Unpacks `file` into `root/box/out`; returns whether it was accepted, and
/// checks that nothing appeared in `root` outside `box`.
fn try_unpack(root: &Path, base: &Checkpoint, file: &[u8]) -> bool {
    let input = root.join("input.resid");
    std::fs::write(&input, file).unwrap();
    let bx = root.join("box");
    std::fs::create_dir_all(&bx).unwrap();
    let before = listing(root);
    let out = bx.join("out");
    let ok = unpack(base, &input, &out).is_ok();
    let _ = resid_codec::inspect(&input);
    assert_eq!(
        listing(root),
        before,
        "something was written outside the box"
    );
    if !ok {
        assert!(listing(&bx).is_empty(), "a refused unpack left output");
    }
    let _ = std::fs::remove_dir_all(&bx);
    ok
}

#[test]
fn stored_names_never_leave_the_output_folder() {
    let good = std::fs::read(golden("lossless-folder.resid")).unwrap();
    let base = Checkpoint::open(&golden("py/base.safetensors")).unwrap();
    let h: serde_json::Value = serde_json::from_slice(&header_json(&good).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let outside = tmp.path().join("x");
    let refused = [
        "../x",
        "../../x",
        "a/../../x",
        "./x",
        "/x",
        "//x",
        "a//b",
        "a\\..\\x",
        "C:x",
        "",
        "a/",
        "x\0y",
        "model.safetensors",
        "MODEL.SAFETENSORS",
        "CONFIG.JSON",
        "1_pooling",
        "model.safetensors/x",
    ];
    for name in refused {
        let mut e = h.clone();
        // Renaming tokenizer.json: the other names stay as they were.
        let i = e["files"]
            .as_array()
            .unwrap()
            .iter()
            .position(|f| f["path"] == "tokenizer.json")
            .unwrap();
        e["files"][i]["path"] = serde_json::json!(name);
        let f = replace_header(&good, &serde_json::to_vec(&e).unwrap());
        assert!(!try_unpack(&root, &base, &f), "'{name}' was accepted");
        assert!(!outside.exists());
    }
    for name in ["a/b/c.txt", "tokenizer (copy).json", "ü.json", "..x", "x.."] {
        let mut e = h.clone();
        let i = e["files"]
            .as_array()
            .unwrap()
            .iter()
            .position(|f| f["path"] == "tokenizer.json")
            .unwrap();
        e["files"][i]["path"] = serde_json::json!(name);
        let f = replace_header(&good, &serde_json::to_vec(&e).unwrap());
        assert!(try_unpack(&root, &base, &f), "'{name}' was refused");
    }
}

#[test]
fn damaged_headers_give_errors_not_panics() {
    let good = std::fs::read(golden("lossless-folder.resid")).unwrap();
    let base = Checkpoint::open(&golden("py/base.safetensors")).unwrap();
    let json = header_json(&good).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let mut accepted = 0;
    for _ in 0..300 {
        let mut j = json.clone();
        for _ in 0..rng.random_range(1..4) {
            let p = rng.random_range(0..j.len());
            match rng.random_range(0..3) {
                0 => j[p] = rng.random(),
                1 => j[p] = b"0123456789/.\"-"[rng.random_range(0..14)],
                _ => j.truncate(p),
            }
        }
        accepted += try_unpack(&root, &base, &replace_header(&good, &j)) as usize;
    }
    // Most damage is refused; what passes rebuilt inside the box.
    assert!(accepted < 300, "{accepted}");
}

/// A small file claiming a 1 TiB trained-only tensor (65,536 constant
/// blocks): decoding it whole, as a caller asking for one tensor does (the
/// Python package's `get_tensor`), is refused before allocating, naming
/// both figures; unpack refuses it at the free-space check.
#[test]
fn a_tensor_too_large_to_hold_is_refused_before_allocating() {
    let good = std::fs::read(golden("lossless-f32.resid")).unwrap();
    let base = Checkpoint::open(&golden("../v1/base-f32.safetensors")).unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&header_json(&good).unwrap()).unwrap();
    let (chunk, bytes) = (1u64 << 24, 1u64 << 40);
    let count = (bytes / chunk) as usize;
    let (body, blocks) = append_blocks(&good, &vec![&[0u8, 7][..]; count]);
    let blocks: Vec<Block> = blocks
        .into_iter()
        .map(|b| Block { n: chunk, ..b })
        .collect();
    h["settings"]["chunk"] = serde_json::json!(chunk);
    h["trained"]["shards"][0]
        .as_object_mut()
        .unwrap()
        .remove("original");
    h["tensors"] = serde_json::json!([{
        "name": "claim", "dtype": "U64", "shape": [bytes / 8], "shard": 0, "base": null,
        "trained_xxh3": "0000000000000000",
        "encoding": {"kind": "planes", "xor": false, "blocks": blocks},
    }]);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("claim.resid");
    std::fs::write(&f, replace_header(&body, &serde_json::to_vec(&h).unwrap())).unwrap();
    assert!(std::fs::metadata(&f).unwrap().len() < 1 << 20);
    let rf = ResidFile::open(&f).unwrap();
    let e = decode_tensor(&rf, &base, 0).unwrap_err();
    match &e {
        CodecError::TensorTooLarge {
            tensor, bytes: b, ..
        } => assert_eq!((tensor.as_str(), *b), ("claim", bytes)),
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("claim.resid: tensor 'claim': holding 1099511627776 bytes"),
        "{msg}"
    );
    let out = tmp.path().join("out.safetensors");
    assert!(matches!(
        unpack(&base, &f, &out),
        Err(CodecError::NoSpace { .. })
    ));
    assert!(!out.exists());
}
