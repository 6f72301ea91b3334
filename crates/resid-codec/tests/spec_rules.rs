//! Rules FORMAT.md states that no golden error file breaks (the gaps an
//! independent reader found, tools/specdecode/SPEC-GAPS.md): each golden file
//! edited to break one rule, every checksum fixed up, must be refused under
//! that rule, naming the file.

use std::path::{Path, PathBuf};

use resid_codec::container::{encode_header, footer, header_json, hex, xxh3};
use resid_codec::unpack;
use resid_io::Checkpoint;
use serde_json::{json, Value};

fn golden(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/v2")
        .join(p)
}

fn header_offset(file: &[u8]) -> usize {
    let n = file.len();
    u64::from_le_bytes(file[n - 32..n - 24].try_into().unwrap()) as usize
}

/// The file's data section, then `extra` bytes appended to it (at the old
/// header offset), then the header `h` and a correct footer.
fn rebuild(file: &[u8], extra: &[u8], h: &Value) -> (Vec<u8>, u64) {
    let hoff = header_offset(file);
    let mut out = file[..hoff].to_vec();
    out.extend_from_slice(extra);
    let text = encode_header(2, &serde_json::to_vec(h).unwrap());
    let new_hoff = out.len() as u64;
    out.extend_from_slice(&text);
    out.extend_from_slice(&footer(new_hoff, &text));
    (out, hoff as u64)
}

fn header(file: &[u8]) -> Value {
    serde_json::from_slice(&header_json(file).unwrap()).unwrap()
}

fn block(offset: u64, body: &[u8], n: u64) -> Value {
    json!({"offset": offset, "len": body.len(), "xxh3": hex(xxh3(body)), "n": n, "bits": 0.0})
}

/// Unpacks the crafted bytes against the golden `base`; returns the message.
fn refused(bytes: &[u8], base: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("crafted.resid");
    std::fs::write(&p, bytes).unwrap();
    let base = Checkpoint::open(&golden(base)).unwrap();
    let out = tmp.path().join("out");
    let e = unpack(&base, &p, &out)
        .expect_err("the crafted file was accepted")
        .to_string();
    assert!(
        e.contains(p.to_str().unwrap()),
        "{e} does not name the file"
    );
    assert!(!out.exists(), "output left behind");
    e
}

fn tensor<'a>(h: &'a mut Value, name: &str) -> &'a mut Value {
    h["tensors"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == name)
        .unwrap()
}

/// A varint stream's zstd escape block body (FORMAT.md 4.4).
fn escape_body(raw: &[u8]) -> Vec<u8> {
    let mut b = vec![2u8];
    b.extend(zstd::bulk::compress(raw, 3).unwrap());
    b
}

#[test]
fn a_zstd_block_is_exactly_one_frame() {
    let file = std::fs::read(golden("lossy-f16.resid")).unwrap();
    let h = header(&file);
    let esc = h["tensors"][0]["encoding"]["escapes"].clone();
    let (o, l) = (
        esc["offset"].as_u64().unwrap() as usize,
        esc["len"].as_u64().unwrap() as usize,
    );
    let body = &file[o..o + l];
    let skippable = [0x50, 0x2A, 0x4D, 0x18, 1, 0, 0, 0, 0];
    for (what, crafted, want) in [
        (
            "trailing bytes",
            [body, &[0, 0][..]].concat(),
            "bytes after the frame",
        ),
        (
            "a skippable frame first",
            [&body[..1], &skippable[..], &body[1..]].concat(),
            "bad magic",
        ),
        (
            "a second frame",
            [body, &body[1..]].concat(),
            "bytes after the frame",
        ),
    ] {
        let mut h2 = h.clone();
        let at = header_offset(&file) as u64;
        tensor(&mut h2, "w")["encoding"]["escapes"] =
            block(at, &crafted, esc["n"].as_u64().unwrap());
        let (bytes, _) = rebuild(&file, &crafted, &h2);
        let e = refused(&bytes, "../v1/base-f16.safetensors");
        assert!(e.contains(want), "{what}: {e}");
    }
}

#[test]
fn an_escape_varint_over_64_bits_is_refused_and_an_overlong_one_accepted() {
    let file = std::fs::read(golden("lossy-f16.resid")).unwrap();
    let h = header(&file);
    // Ten bytes whose last holds the value 2: bit 64.
    let mut raw = vec![0xffu8; 9];
    raw.push(0x02);
    let body = escape_body(&raw);
    let mut h2 = h.clone();
    let at = header_offset(&file) as u64;
    tensor(&mut h2, "w")["encoding"]["escapes"] = block(at, &body, 1);
    let (bytes, _) = rebuild(&file, &body, &h2);
    let e = refused(&bytes, "../v1/base-f16.safetensors");
    assert!(e.contains("longer than 64 bits"), "{e}");

    // The same escapes with one needless zero group each (`.. 80 00`):
    // accepted, and the tensor rebuilds to the same bytes.
    let esc = &h["tensors"][0]["encoding"]["escapes"];
    let (o, l) = (
        esc["offset"].as_u64().unwrap() as usize,
        esc["len"].as_u64().unwrap() as usize,
    );
    let raw = zstd::bulk::decompress(&file[o + 1..o + l], 1 << 20).unwrap();
    let mut long = Vec::new();
    for &b in &raw {
        if b & 0x80 == 0 {
            long.extend([b | 0x80, 0]);
        } else {
            long.push(b);
        }
    }
    let body = escape_body(&long);
    let mut h3 = h.clone();
    tensor(&mut h3, "w")["encoding"]["escapes"] = block(at, &body, esc["n"].as_u64().unwrap());
    let (bytes, _) = rebuild(&file, &body, &h3);
    let tmp = tempfile::tempdir().unwrap();
    let (p, q) = (tmp.path().join("long.resid"), tmp.path().join("orig.resid"));
    std::fs::write(&p, &bytes).unwrap();
    std::fs::write(&q, &file).unwrap();
    let base = Checkpoint::open(&golden("../v1/base-f16.safetensors")).unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    unpack(&base, &p, &a).unwrap();
    unpack(&base, &q, &b).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn shard_names_that_collide_are_refused() {
    let file = std::fs::read(golden("lossless-folder.resid")).unwrap();
    let mut h = header(&file);
    h["trained"]["shards"][0]["file"] = json!("MODEL.safetensors.index.json");
    let (bytes, _) = rebuild(&file, &[], &h);
    let e = refused(&bytes, "py/base.safetensors");
    assert!(e.contains("names the same file as another shard"), "{e}");
}

#[test]
fn a_lossy_base_of_non_float_dtype_is_refused() {
    let file = std::fs::read(golden("lossy-f32.resid")).unwrap();
    let mut h = header(&file);
    tensor(&mut h, "w")["base"]["dtype"] = json!("I32");
    let (bytes, _) = rebuild(&file, &[], &h);
    let e = refused(&bytes, "../v1/base-f32.safetensors");
    assert!(e.contains("against a base of non-float dtype I32"), "{e}");
}

#[test]
fn a_lossy_rebuild_that_is_not_finite_is_refused() {
    let file = std::fs::read(golden("lossy-f32.resid")).unwrap();
    let mut h = header(&file);
    // Levels whose magnitude rounds to an infinite f32 (FORMAT.md 3.5 step 3).
    tensor(&mut h, "w")["encoding"]["recon"] = json!(vec![1e300; 16]);
    let (bytes, _) = rebuild(&file, &[], &h);
    let e = refused(&bytes, "../v1/base-f32.safetensors");
    assert!(e.contains("tensor 'w': lossy rebuild of element"), "{e}");
    assert!(e.contains("is not finite"), "{e}");
}

#[test]
fn a_header_with_bytes_after_its_frame_is_refused() {
    let file = std::fs::read(golden("lossless-f32.resid")).unwrap();
    let hoff = header_offset(&file);
    let n = file.len();
    let hlen = u64::from_le_bytes(file[n - 24..n - 16].try_into().unwrap()) as usize;
    let mut stored = file[hoff..hoff + hlen].to_vec();
    stored.extend_from_slice(&[0u8; 3]);
    let mut out = file[..hoff].to_vec();
    out.extend_from_slice(&stored);
    out.extend_from_slice(&footer(hoff as u64, &stored));
    let e = refused(&out, "../v1/base-f32.safetensors");
    assert!(e.contains("compressed header does not decode"), "{e}");
    assert!(e.contains("bytes after the frame"), "{e}");
}
