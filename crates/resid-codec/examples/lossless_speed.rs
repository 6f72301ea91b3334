//! Lossless coder speed on one core, in memory: resid's byte-plane rANS
//! encode and decode beside BitX (the same XOR planes, zstd-3) on a real pair.
//!
//! `lossless_speed BASE TRAINED [REPEATS]` codes every same-dtype tensor pair
//! in chunks of 2^18 elements (the pack default), then times decode of the
//! whole set REPEATS times (best run kept). MB/s are of trained bytes. No
//! file, no fsync, no threads: the coder alone.

use std::path::Path;
use std::time::Instant;

use resid_codec::decode::tensor::decode_plane_chunk;
use resid_codec::encode::lossless::encode_chunk;
use resid_io::Checkpoint;

const CHUNK: usize = 1 << 18;

struct Chunk {
    blocks: Vec<Vec<u8>>,
    bitx: Vec<Vec<u8>>,
    base: Vec<u8>,
    trained: Vec<u8>,
    size: usize,
}

fn best<F: FnMut()>(repeats: usize, mut f: F) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: lossless_speed BASE TRAINED [REPEATS]");
        std::process::exit(2);
    }
    let base = Checkpoint::open(Path::new(&a[1])).expect("base");
    let trained = Checkpoint::open(Path::new(&a[2])).expect("trained");
    let repeats: usize = a.get(3).map_or(5, |r| r.parse().expect("REPEATS"));
    let mut chunks = Vec::new();
    let t0 = Instant::now();
    for t in trained.tensors() {
        let Some(b) = base.get(&t.name) else { continue };
        if b.dtype_name != t.dtype_name || b.nbytes() != t.nbytes() || t.numel() == 0 {
            continue;
        }
        let size = t.nbytes() / t.numel();
        let (tb, bb) = (trained.bytes(t), base.bytes(b));
        for ci in 0..t.numel().div_ceil(CHUNK) {
            let blocks = encode_chunk(tb, Some(bb), size, CHUNK, ci)
                .into_iter()
                .map(|c| c.bytes)
                .collect();
            let (s, e) = (ci * CHUNK * size, ((ci + 1) * CHUNK * size).min(tb.len()));
            chunks.push(Chunk {
                blocks,
                bitx: Vec::new(),
                base: bb[s..e].to_vec(),
                trained: tb[s..e].to_vec(),
                size,
            });
        }
    }
    let build = t0.elapsed().as_secs_f64();
    let total: usize = chunks.iter().map(|c| c.trained.len()).sum();
    let mb = total as f64 / 1e6;
    // BitX: the XOR planes of each chunk, each zstd-3 (its published layout).
    let planes = |c: &Chunk| -> Vec<Vec<u8>> {
        let n = c.trained.len() / c.size;
        (0..c.size)
            .map(|p| {
                (0..n)
                    .map(|i| c.trained[i * c.size + p] ^ c.base[i * c.size + p])
                    .collect()
            })
            .collect()
    };
    for c in &mut chunks {
        c.bitx = planes(c)
            .iter()
            .map(|p| zstd::bulk::compress(p, 3).unwrap())
            .collect();
    }
    let encode = best(repeats.min(3), || {
        for c in &chunks {
            let n = c.trained.len() / c.size;
            std::hint::black_box(encode_chunk(&c.trained, Some(&c.base), c.size, n, 0));
        }
    });
    let bitx_encode = best(repeats.min(3), || {
        for c in &chunks {
            for p in planes(c) {
                std::hint::black_box(zstd::bulk::compress(&p, 3).unwrap());
            }
        }
    });
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let decode = best(repeats, || {
        for c in &chunks {
            out.resize(c.trained.len(), 0);
            let refs: Vec<&[u8]> = c.blocks.iter().map(|b| b.as_slice()).collect();
            decode_plane_chunk(&refs, Some(&c.base), c.size, &mut out, &mut scratch).unwrap();
            std::hint::black_box(&out);
        }
    });
    // Correctness of what was timed: every chunk rebuilds byte-identical.
    for c in &chunks {
        out.resize(c.trained.len(), 0);
        let refs: Vec<&[u8]> = c.blocks.iter().map(|b| b.as_slice()).collect();
        decode_plane_chunk(&refs, Some(&c.base), c.size, &mut out, &mut scratch).unwrap();
        assert_eq!(out, c.trained, "decode differs");
    }
    let mut dec = zstd::bulk::Decompressor::new().unwrap();
    let bitx_decode = best(repeats, || {
        for c in &chunks {
            let n = c.trained.len() / c.size;
            out.resize(c.trained.len(), 0);
            for (p, z) in c.bitx.iter().enumerate() {
                let plane = dec.decompress(z, n).unwrap();
                for i in 0..n {
                    out[i * c.size + p] = plane[i] ^ c.base[i * c.size + p];
                }
            }
            std::hint::black_box(&out);
        }
    });
    let ours: usize = chunks.iter().flat_map(|c| &c.blocks).map(|b| b.len()).sum();
    let theirs: usize = chunks.iter().flat_map(|c| &c.bitx).map(|b| b.len()).sum();
    println!(
        "{{\"trained_mb\": {mb:.1}, \"chunks\": {}, \"setup_s\": {build:.2}, \
         \"resid_bytes\": {ours}, \"bitx_zstd3_bytes\": {theirs}, \
         \"resid_encode_mb_s\": {:.0}, \"bitx_encode_mb_s\": {:.0}, \
         \"resid_decode_mb_s\": {:.0}, \"bitx_decode_mb_s\": {:.0}}}",
        chunks.len(),
        mb / encode,
        mb / bitx_encode,
        mb / decode,
        mb / bitx_decode
    );
}
