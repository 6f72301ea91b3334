//! FORMAT.md section 3: rebuilding one tensor's raw bytes from its blocks
//! and the base — "same" (3.1), byte planes (3.2), lossy (3.3) with its
//! symbol streams (3.4) and its fixed reconstruction arithmetic (3.5).

use rayon::prelude::*;

use resid_io::Checkpoint;

use super::block::{decode_escapes, decode_symbols};
use super::ResidFile;
use crate::container::*;
use crate::error::{BlockProblem, CodecError, Result, TensorLayout};
use crate::rans::from_zigzag;

/// FORMAT.md 2.3: "`base`: fingerprint of the base tensor it was made
/// against: `{dtype, shape, xxh3}`. Unpack recomputes it and refuses a base
/// that differs, naming the tensor." Returns the base tensor's raw bytes.
pub fn checked_base<'a>(
    rf: &ResidFile,
    base: &'a Checkpoint,
    t: &TensorHeader,
) -> Result<Option<&'a [u8]>> {
    let Some(fp) = &t.base else { return Ok(None) };
    let Some(b) = base.get(&t.name) else {
        return Err(CodecError::BaseLacksTensor {
            path: rf.path.clone(),
            tensor: t.name.clone(),
            base: base.path().into(),
        });
    };
    let shape: Vec<u64> = b.shape.iter().map(|&x| x as u64).collect();
    if b.dtype_name != fp.dtype.name() || shape != fp.shape {
        return Err(CodecError::BaseTensorDiffers {
            path: rf.path.clone(),
            tensor: t.name.clone(),
            got: Box::new(TensorLayout {
                dtype: b.dtype_name.clone(),
                shape,
            }),
            want: Box::new(TensorLayout {
                dtype: fp.dtype.name().into(),
                shape: fp.shape.clone(),
            }),
        });
    }
    let bytes = base.bytes(b);
    if hex(xxh3(bytes)) != fp.xxh3 {
        return Err(CodecError::BaseFingerprint {
            path: rf.path.clone(),
            tensor: t.name.clone(),
            base_file: base.file_of(b).into(),
        });
    }
    Ok(Some(bytes))
}

fn corrupt(rf: &ResidFile, t: &TensorHeader, block: usize, problem: BlockProblem) -> CodecError {
    CodecError::CorruptBlock {
        path: rf.path.clone(),
        tensor: t.name.clone(),
        block,
        problem,
    }
}

/// FORMAT.md 3.2: "chunk `c`, byte plane `p in 0..s` is the sequence of byte
/// `p` of each element's `X`; blocks are listed chunk-major: `blocks[c * s +
/// p]`"; `T[i] = X[i] XOR B[i]` when `xor` (else `T = X`). Decodes one chunk
/// into `out` (the chunk's bytes); `base` is the base chunk when `xor`.
/// `planes` is scratch.
pub fn decode_plane_chunk(
    blocks: &[&[u8]],
    base: Option<&[u8]>,
    size: usize,
    out: &mut [u8],
    planes: &mut Vec<u8>,
) -> std::result::Result<(), (usize, BlockProblem)> {
    let n = out.len() / size;
    planes.clear();
    planes.resize(n * size, 0);
    for (p, b) in blocks.iter().enumerate() {
        decode_symbols(b, &mut planes[p * n..(p + 1) * n]).map_err(|e| (p, e))?;
    }
    // Interleave the planes back into elements; the common sizes have
    // straight-line loops the compiler vectorises.
    match (base, size) {
        (Some(b), 2) => {
            let (p0, p1) = planes.split_at(n);
            for i in 0..n {
                out[2 * i] = p0[i] ^ b[2 * i];
                out[2 * i + 1] = p1[i] ^ b[2 * i + 1];
            }
        }
        (None, 2) => {
            let (p0, p1) = planes.split_at(n);
            for i in 0..n {
                out[2 * i] = p0[i];
                out[2 * i + 1] = p1[i];
            }
        }
        (Some(b), 4) => {
            let (p0, rest) = planes.split_at(n);
            let (p1, rest) = rest.split_at(n);
            let (p2, p3) = rest.split_at(n);
            for i in 0..n {
                out[4 * i] = p0[i] ^ b[4 * i];
                out[4 * i + 1] = p1[i] ^ b[4 * i + 1];
                out[4 * i + 2] = p2[i] ^ b[4 * i + 2];
                out[4 * i + 3] = p3[i] ^ b[4 * i + 3];
            }
        }
        _ => {
            for i in 0..n {
                for p in 0..size {
                    out[i * size + p] = planes[p * n + i] ^ base.map_or(0, |b| b[i * size + p]);
                }
            }
        }
    }
    Ok(())
}

/// FORMAT.md 3.4: "A signed level `q` is the symbol `zigzag(q)` when that is
/// `< 255`; otherwise symbol 255 (escape) and `q` is taken, in order, from
/// the tensor's `escapes` block." Levels beyond `±(2^30 - 1)` are refused.
pub fn symbols_to_levels(
    sym: &[u8],
    esc: &[i64],
    next: &mut usize,
    out: &mut Vec<i32>,
) -> std::result::Result<(), BlockProblem> {
    out.clear();
    out.reserve(sym.len());
    for &s in sym {
        if s == 255 {
            let Some(&q) = esc.get(*next) else {
                return Err(BlockProblem::MissingEscape);
            };
            *next += 1;
            if q.unsigned_abs() > (i32::MAX / 2) as u64 {
                return Err(BlockProblem::EscapeRange);
            }
            out.push(q as i32);
        } else {
            out.push(from_zigzag(s as u64) as i32);
        }
    }
    Ok(())
}

/// FORMAT.md 3.5: the remainder level's value, "`recon[k-1]` for `k = |q| <=
/// recon.len()`, else `(dead_zone + k - 0.5) * step`, in f64, negated for `q
/// < 0`, then rounded to f32; level 0 is +0.0".
#[inline]
pub fn level_value(q: i32, recon: &[f64], step: f64, z: f64) -> f32 {
    if q == 0 {
        return 0.0;
    }
    let k = q.unsigned_abs() as usize;
    let m = if k <= recon.len() {
        recon[k - 1]
    } else {
        (z + k as f64 - 0.5) * step
    };
    (if q < 0 { -m } else { m }) as f32
}

/// FORMAT.md 3.5: "`acc[i][c] = 0`; for `j = 0..rank` in order, skipping
/// `a = A[i][j] == 0`: `acc -= a * B[j][c]`, each product and difference
/// rounded to f32 (no fused multiply-add)". Here from `k0` to `k1`, on an
/// accumulator the caller provides; `lda` is A's row stride.
#[allow(clippy::too_many_arguments)]
pub fn subtract_product(
    acc: &mut [f32],
    a: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    lda: usize,
    k0: usize,
    k1: usize,
) {
    for i in 0..rows {
        let row = &mut acc[i * cols..(i + 1) * cols];
        for j in k0..k1 {
            let s = a[i * lda + j];
            if s == 0.0 {
                continue;
            }
            let br = &b[j * cols..(j + 1) * cols];
            for (o, &x) in row.iter_mut().zip(br) {
                *o -= s * x;
            }
        }
    }
}

/// FORMAT.md 3.5: the rebuilt residual in f32: factor entries `f32(level *
/// factor_step)`, `r = -acc` (3.5's product) then `r += level_value(Q)`
/// when a remainder is stored.
#[allow(clippy::too_many_arguments)]
pub fn rebuild_residual(
    rows: usize,
    cols: usize,
    rank: usize,
    fstep: f64,
    qa: &[i32],
    qb: &[i32],
    rem: Option<&[i32]>,
    recon: &[f64],
    step: f64,
    z: f64,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    if rank > 0 {
        let a: Vec<f32> = qa.iter().map(|&q| (q as f64 * fstep) as f32).collect();
        let b: Vec<f32> = qb.iter().map(|&q| (q as f64 * fstep) as f32).collect();
        subtract_product(&mut out, &a, &b, rows, cols, rank, 0, rank);
        for x in out.iter_mut() {
            *x = -*x;
        }
    }
    if let Some(rem) = rem {
        for (o, &q) in out.iter_mut().zip(rem) {
            *o += level_value(q, recon, step, z);
        }
    }
    out
}

/// FORMAT.md 3.4: one symbol stream (factor A, factor B or remainder) from
/// its blocks, numbered from `first` within the tensor.
fn decode_stream(
    rf: &ResidFile,
    t: &TensorHeader,
    blocks: &[Block],
    first: usize,
    esc: &[i64],
    next: &mut usize,
) -> Result<Vec<i32>> {
    let mut levels = Vec::new();
    let mut sym = Vec::new();
    let mut part = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let bytes = rf.block(&t.name, first + i, b)?;
        sym.clear();
        sym.resize(b.n as usize, 0);
        decode_symbols(bytes, &mut sym).map_err(|e| corrupt(rf, t, first + i, e))?;
        symbols_to_levels(&sym, esc, next, &mut part).map_err(|e| corrupt(rf, t, first + i, e))?;
        levels.extend_from_slice(&part);
    }
    Ok(levels)
}

/// FORMAT.md 3.3: "rebuilt as `dtype(f32(base) + r_hat)` (round to nearest
/// even)"; the escapes are read first; "the escape count must equal the
/// number of 255 symbols".
fn decode_lossy(rf: &ResidFile, base: &Checkpoint, t: &TensorHeader) -> Result<Vec<u8>> {
    let Encoding::Lossy {
        rows,
        cols,
        rank,
        factor_step,
        step,
        recon,
        factors,
        remainder,
        escapes,
    } = &t.encoding
    else {
        unreachable!("called for lossy tensors")
    };
    let z = rf
        .header
        .settings
        .rate
        .as_ref()
        .expect("validated: a lossy file has rate settings")
        .dead_zone;
    let (rows, cols, rank) = (*rows as usize, *cols as usize, *rank as usize);
    let esc_index = factors.len() + remainder.len();
    let esc = match escapes {
        Some(b) => {
            let bytes = rf.block(&t.name, esc_index, b)?;
            decode_escapes(bytes, b.n).map_err(|e| corrupt(rf, t, esc_index, e))?
        }
        None => Vec::new(),
    };
    let mut next = 0;
    let fa = (rows * rank).div_ceil(rf.header.settings.chunk as usize);
    let qa = decode_stream(rf, t, &factors[..fa], 0, &esc, &mut next)?;
    let qb = decode_stream(rf, t, &factors[fa..], fa, &esc, &mut next)?;
    let rem = if remainder.is_empty() {
        None
    } else {
        Some(decode_stream(
            rf,
            t,
            remainder,
            factors.len(),
            &esc,
            &mut next,
        )?)
    };
    if next != esc.len() {
        return Err(corrupt(rf, t, esc_index, BlockProblem::UnusedEscapes));
    }
    let r = rebuild_residual(
        rows,
        cols,
        rank,
        *factor_step,
        &qa,
        &qb,
        rem.as_deref(),
        recon,
        *step,
        z,
    );
    let b = base.get(&t.name).expect("fingerprint checked");
    let mut bv = Vec::new();
    base.read_f32(b, &mut bv)?;
    // FORMAT.md 2.6: against the base's first rows only.
    bv.truncate(rows * cols);
    for (x, y) in bv.iter_mut().zip(&r) {
        *x += y;
    }
    // FORMAT.md 3.5 step 4: "every `y` must be finite": IEEE 754 fixes the
    // bits of every finite result, not those of a NaN.
    if let Some(i) = bv.iter().position(|y| !y.is_finite()) {
        return Err(CodecError::NonFiniteRebuild {
            path: rf.path.clone(),
            tensor: t.name.clone(),
            index: i as u64,
        });
    }
    let mut out = Vec::new();
    t.dtype
        .float()
        .expect("validated: lossy tensors are floats")
        .from_f32(&bv, &mut out);
    Ok(out)
}

/// Decodes one tensor to its raw bytes, every check included (fingerprint,
/// block checksums, trained checksum), without rebuilding the others.
pub fn decode_tensor(rf: &ResidFile, base: &Checkpoint, ti: usize) -> Result<Vec<u8>> {
    decode_batch(rf, base, ti..ti + 1)
        .pop()
        .expect("one tensor in, one out")
}

/// Decodes one named tensor (see [`decode_tensor`]); `None` when the file has
/// no tensor of that name.
pub fn decode_named(rf: &ResidFile, base: &Checkpoint, name: &str) -> Option<Result<Vec<u8>>> {
    rf.tensor_index(name).map(|ti| decode_tensor(rf, base, ti))
}

/// A run of one tensor's rebuilt bytes, `start..end`: the unit unpack
/// decodes, checks and writes, so that memory follows the batch budget and
/// not the sizes a file declares. Its ends lie on chunk boundaries
/// (FORMAT.md 3.2), or at the part's ends; a lossy part (3.3), rebuilt
/// whole, lies inside one span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub ti: usize,
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// The tensors' bytes as consecutive batches of spans, each batch at most
/// `limit` bytes unless one unit is larger: a chunk's bytes (at most
/// 2^24 elements of 8 bytes, FORMAT.md 2.1) or a lossy tensor's shared part,
/// whose size the base tensor bounds (its fingerprint is checked before it
/// is decoded). An empty tensor is one empty span.
pub(crate) fn span_batches(h: &Header, limit: u64) -> Vec<Vec<Span>> {
    let chunk = h.settings.chunk;
    let mut out = Vec::new();
    let mut cur: Vec<Span> = Vec::new();
    let mut acc = 0u64;
    for (ti, t) in h.tensors.iter().enumerate() {
        let shared = t.shared_numel() * t.dtype.size();
        let unit = chunk * t.dtype.size();
        let mut cuts = Vec::new();
        if !matches!(t.encoding, Encoding::Lossy { .. }) {
            cuts.extend((1..shared.div_ceil(unit)).map(|c| c * unit));
        }
        if shared > 0 && shared < t.nbytes() {
            cuts.push(shared);
        }
        cuts.extend((1..(t.nbytes() - shared).div_ceil(unit)).map(|c| shared + c * unit));
        cuts.push(t.nbytes());
        let mut start = 0;
        for end in cuts {
            if acc > 0 && acc + (end - start) > limit {
                out.push(std::mem::take(&mut cur));
                acc = 0;
            }
            match cur.last_mut() {
                Some(sp) if sp.ti == ti => sp.end = end,
                _ => cur.push(Span { ti, start, end }),
            }
            acc += end - start;
            start = end;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Rebuilds spans batch after batch, carrying the trained checksum (FORMAT.md
/// 2.3, of the whole tensor) of a tensor cut across batches from one to the
/// next.
#[derive(Default)]
pub(crate) struct SpanDecoder {
    carry: Option<(usize, xxhash_rust::xxh3::Xxh3Default)>,
}

type Prepared<'a> = Result<(Option<&'a [u8]>, Vec<u8>)>;

/// One chunk of byte planes to decode: the span (index in the batch), the
/// number of its chunk's first block, the chunk's `s` blocks, the output
/// bytes and the base bytes to XOR with.
struct ChunkJob<'a> {
    k: usize,
    first: usize,
    blocks: &'a [Block],
    out: &'a mut [u8],
    base: Option<&'a [u8]>,
}

/// The chunks of a byte-plane part (3.2) that fall in a span: the part holds
/// the tensor's bytes `part.start..part.end`, coded by `blocks` (numbered
/// from `n0`) against `base`; `buf` holds the span's bytes from `at`.
#[allow(clippy::too_many_arguments)]
fn plane_jobs<'a>(
    jobs: &mut Vec<ChunkJob<'a>>,
    k: usize,
    part: std::ops::Range<u64>,
    at: u64,
    buf: &'a mut [u8],
    unit: u64,
    size: usize,
    blocks: &'a [Block],
    n0: usize,
    base: Option<&'a [u8]>,
) {
    let (lo, hi) = (part.start.max(at), part.end.min(at + buf.len() as u64));
    if lo >= hi {
        return;
    }
    let mine = &mut buf[(lo - at) as usize..(hi - at) as usize];
    let c0 = ((lo - part.start) / unit) as usize;
    for (i, sl) in mine.chunks_mut(unit as usize).enumerate() {
        let c = c0 + i;
        let from = c * unit as usize;
        jobs.push(ChunkJob {
            k,
            first: n0 + c * size,
            blocks: &blocks[c * size..(c + 1) * size],
            base: base.map(|x| &x[from..from + sl.len()]),
            out: sl,
        });
    }
}

/// Spans up to this size are allocated without asking how much memory is
/// available (the batch budget is at most 1 GiB).
const MAY_HOLD: u64 = 1 << 30;

/// A zeroed buffer of `n` bytes for tensor `t`, or a typed refusal when `n`
/// exceeds the memory available (`available`, when known) or the allocator
/// refuses it: a crafted header can claim any size, and an abort would take
/// the caller (the Python interpreter) down with it.
fn zeroed(rf: &ResidFile, t: &TensorHeader, n: u64, available: Option<u64>) -> Result<Vec<u8>> {
    let refuse = |available: u64| CodecError::TensorTooLarge {
        path: rf.path.clone(),
        tensor: t.name.clone(),
        bytes: n,
        available,
    };
    if n <= MAY_HOLD {
        // calloc: fresh pages come zeroed, with no pass over them here.
        return Ok(vec![0u8; n as usize]);
    }
    if let Some(a) = available.filter(|&a| n > a) {
        return Err(refuse(a));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n as usize)
        .map_err(|_| refuse(available.unwrap_or(0)))?;
    v.resize(n as usize, 0);
    Ok(v)
}

impl SpanDecoder {
    /// Decodes one batch of spans (from [`span_batches`], in order): chunks
    /// in parallel across the batch, lossy parts in parallel; the base's
    /// fingerprint checked at a tensor's first span, its trained checksum at
    /// its last. Spans of a tensor cut across batches must come in order,
    /// and a batch holding an error ends the decoding.
    pub fn decode(
        &mut self,
        rf: &ResidFile,
        base: &Checkpoint,
        spans: &[Span],
    ) -> Vec<Result<Vec<u8>>> {
        let h = &rf.header;
        let chunk = h.settings.chunk;
        // Read only when a span is large enough to matter.
        let big = spans.iter().any(|sp| sp.len() > MAY_HOLD);
        let available = big.then(resid_io::memory::available).flatten();
        let mut bufs: Vec<Prepared> = spans
            .par_iter()
            .map(|sp| {
                let t = &h.tensors[sp.ti];
                // FORMAT.md 2.6: the encoding codes the base's first rows.
                let shared = (t.shared_numel() * t.dtype.size()) as usize;
                let b = if sp.start == 0 {
                    checked_base(rf, base, t)?
                } else {
                    t.base
                        .as_ref()
                        .and_then(|_| base.get(&t.name))
                        .map(|b| base.bytes(b))
                };
                let b = b.map(|b| &b[..shared.min(b.len())]);
                Ok((b, zeroed(rf, t, sp.len(), available)?))
            })
            .collect();
        let mut jobs: Vec<ChunkJob> = Vec::new();
        for (k, (b, sp)) in bufs.iter_mut().zip(spans).enumerate() {
            let t = &h.tensors[sp.ti];
            let Ok((bb, buf)) = b else { continue };
            let size = t.dtype.size() as usize;
            let unit = chunk * t.dtype.size();
            let shared = t.shared_numel() * t.dtype.size();
            // Split so the shared part's and the added rows' jobs borrow
            // disjoint bytes.
            let cut = shared.clamp(sp.start, sp.end) - sp.start;
            let (first, rest) = buf.split_at_mut(cut as usize);
            if let Encoding::Planes { xor, blocks } = &t.encoding {
                let bb = if *xor { *bb } else { None };
                plane_jobs(
                    &mut jobs,
                    k,
                    0..shared,
                    sp.start,
                    first,
                    unit,
                    size,
                    blocks,
                    0,
                    bb,
                );
            }
            // FORMAT.md 2.6: the added rows, plain byte planes numbered after
            // the encoding's blocks.
            if let Some(rz) = &t.resize {
                let n0 = t.encoding.blocks().len();
                let part = shared..t.nbytes();
                let at = sp.start.max(shared);
                plane_jobs(
                    &mut jobs, k, part, at, rest, unit, size, &rz.added, n0, None,
                );
            }
        }
        let errs: Vec<Option<(usize, CodecError)>> = jobs
            .into_par_iter()
            .map_init(Vec::new, |planes, j| {
                let t = &h.tensors[spans[j.k].ti];
                let size = t.dtype.size() as usize;
                let mut raw = Vec::with_capacity(size);
                for (p, b) in j.blocks.iter().enumerate() {
                    match rf.block(&t.name, j.first + p, b) {
                        Ok(x) => raw.push(x),
                        Err(e) => return Some((j.k, e)),
                    }
                }
                decode_plane_chunk(&raw, j.base, size, j.out, planes)
                    .err()
                    .map(|(p, e)| (j.k, corrupt(rf, t, j.first + p, e)))
            })
            .collect();
        for (k, e) in errs.into_iter().flatten() {
            if bufs[k].is_ok() {
                bufs[k] = Err(e);
            }
        }
        // The running checksums: a tensor's first span starts one, the
        // batch's first span may continue the previous batch's.
        let mut hashers: Vec<_> = spans
            .iter()
            .map(|sp| {
                let t = &h.tensors[sp.ti];
                t.trained_xxh3.as_ref()?;
                if sp.start == 0 {
                    return Some(xxhash_rust::xxh3::Xxh3Default::new());
                }
                match self.carry.take() {
                    Some((ti, x)) if ti == sp.ti => Some(x),
                    _ => panic!("spans of '{}' decoded out of order", t.name),
                }
            })
            .collect();
        let outs: Vec<Result<Vec<u8>>> = bufs
            .into_par_iter()
            .zip(spans)
            .zip(&mut hashers)
            .map(|((b, sp), hasher)| {
                let t = &h.tensors[sp.ti];
                let (bb, mut buf) = b?;
                let shared = t.shared_numel() * t.dtype.size();
                match &t.encoding {
                    // FORMAT.md 3.1: "The trained bytes equal the base bytes."
                    Encoding::Same => {
                        let bb = bb.expect("validated: 'same' has a base");
                        let hi = sp.end.min(shared);
                        if sp.start < hi {
                            let src = &bb[sp.start as usize..hi as usize];
                            buf[..src.len()].copy_from_slice(src)
                        }
                    }
                    Encoding::Planes { .. } => {}
                    Encoding::Lossy { .. } if sp.start == 0 && shared > 0 => {
                        let l = decode_lossy(rf, base, t)?;
                        buf[..l.len()].copy_from_slice(&l)
                    }
                    Encoding::Lossy { .. } => {}
                }
                if let Some(x) = hasher {
                    x.update(&buf);
                    if sp.end == t.nbytes() {
                        let want = t.trained_xxh3.as_ref().expect("hashed only when present");
                        if &hex(x.digest()) != want {
                            return Err(CodecError::TrainedChecksum {
                                path: rf.path.clone(),
                                tensor: t.name.clone(),
                            });
                        }
                    }
                }
                Ok(buf)
            })
            .collect();
        if let (Some(sp), Some(Some(x))) = (spans.last(), hashers.pop()) {
            if sp.end < h.tensors[sp.ti].nbytes() {
                self.carry = Some((sp.ti, x));
            }
        }
        outs
    }
}

/// Decodes tensors `r` of the file whole (one span each), every check
/// included; memory is the tensors' bytes (unpack streams instead,
/// [`span_batches`]).
pub fn decode_batch(
    rf: &ResidFile,
    base: &Checkpoint,
    r: std::ops::Range<usize>,
) -> Vec<Result<Vec<u8>>> {
    let spans: Vec<Span> = r
        .map(|ti| Span {
            ti,
            start: 0,
            end: rf.header.tensors[ti].nbytes(),
        })
        .collect();
    SpanDecoder::default().decode(rf, base, &spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tensor's bytes covered once, in order, by spans whose ends are
    /// chunk boundaries of its parts (or a lossy part's ends), batches within
    /// the limit unless they hold one unit.
    #[test]
    fn spans_cover_each_tensor_once_on_chunk_boundaries() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v2/");
        let mut any_cut = false;
        for name in ["resize-lossless-bf16", "resize-lossy-f32", "lossless-f64"] {
            let rf = ResidFile::open(std::path::Path::new(&format!("{dir}{name}.resid"))).unwrap();
            let h = &rf.header;
            for limit in [1, 4096, 100_000, u64::MAX] {
                let batches = span_batches(h, limit);
                let all: Vec<&Span> = batches.iter().flatten().collect();
                let mut next = (0, 0);
                for sp in &all {
                    let t = &h.tensors[sp.ti];
                    if (sp.ti, sp.start) != next {
                        assert_eq!(
                            (sp.ti, sp.start, next.1),
                            (next.0 + 1, 0, h.tensors[next.0].nbytes())
                        );
                    }
                    let shared = t.shared_numel() * t.dtype.size();
                    let unit = h.settings.chunk * t.dtype.size();
                    let lossy = matches!(t.encoding, Encoding::Lossy { .. });
                    for at in [sp.start, sp.end] {
                        let on_cut = at == 0
                            || at == shared
                            || at == t.nbytes()
                            || (at < shared && !lossy && at.is_multiple_of(unit))
                            || (at > shared && (at - shared).is_multiple_of(unit));
                        assert!(on_cut, "{name}: span {sp:?} cuts inside a chunk");
                    }
                    next = (sp.ti, sp.end);
                }
                assert_eq!(
                    next,
                    (h.tensors.len() - 1, h.tensors.last().unwrap().nbytes())
                );
                for b in &batches {
                    let bytes: u64 = b.iter().map(|s| s.len()).sum();
                    assert!(
                        bytes <= limit.max(unit_max(h)),
                        "{name}: batch of {bytes} > {limit}"
                    );
                    if limit == u64::MAX {
                        assert_eq!(batches.len(), 1);
                    }
                }
            }
            // A tensor is cut inside when a part of it spans more than one
            // chunk (a lossy shared part never is) or it has both parts.
            let inner = h.tensors.iter().any(|t| {
                let shared = t.shared_numel() * t.dtype.size();
                let unit = h.settings.chunk * t.dtype.size();
                let lossy = matches!(t.encoding, Encoding::Lossy { .. });
                (!lossy && shared > unit)
                    || t.nbytes() - shared > unit
                    || (shared > 0 && shared < t.nbytes())
            });
            let cut = span_batches(h, 1).len() > h.tensors.len();
            assert_eq!(cut, inner, "{name}: cut inside a tensor");
            any_cut |= cut;
        }
        assert!(any_cut, "no golden file was cut: the test checks nothing");
    }

    /// The largest unit a span cannot split: a chunk's bytes, or a lossy
    /// tensor's shared part.
    fn unit_max(h: &Header) -> u64 {
        h.tensors
            .iter()
            .map(|t| match t.encoding {
                Encoding::Lossy { .. } => t.shared_numel() * t.dtype.size(),
                _ => h.settings.chunk * t.dtype.size(),
            })
            .max()
            .unwrap()
    }
}
