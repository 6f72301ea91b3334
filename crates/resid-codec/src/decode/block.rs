//! FORMAT.md section 4: block bodies. "Block body, first byte `kind`":
//! 0 constant, 1 rANS, 2 zstd (escapes only).

use crate::error::BlockProblem;
use crate::rans::{self, KIND_CONST, KIND_RANS, KIND_ZSTD, L, M, PROB_BITS};

/// FORMAT.md 4: decodes a symbol block (kind 0 or 1) of `out.len()` symbols.
/// A zstd block is not a symbol block ([`decode_escapes`]).
pub fn decode_symbols(block: &[u8], out: &mut [u8]) -> Result<(), BlockProblem> {
    let Some(&kind) = block.first() else {
        return Err(BlockProblem::Empty);
    };
    match kind {
        KIND_CONST => decode_constant(block, out),
        KIND_RANS => decode_rans(block, out),
        k => Err(BlockProblem::UnknownKind(k)),
    }
}

/// FORMAT.md 4.1: "`0` constant: `kind, u8 symbol` (len 2). All `n` symbols
/// equal `symbol`."
fn decode_constant(block: &[u8], out: &mut [u8]) -> Result<(), BlockProblem> {
    if block.len() != 2 {
        return Err(BlockProblem::ConstantLength(block.len()));
    }
    out.fill(block[1]);
    Ok(())
}

/// FORMAT.md 4.2: "a 32-byte presence bitmap (bit `s % 8` of byte `s / 8`
/// set when symbol `s` occurs; at least 2 set), then one byte `q[s]` per
/// present symbol in increasing symbol order" — the frequency table (4.3).
fn read_table(block: &[u8]) -> Result<([u32; 256], usize), BlockProblem> {
    if block.len() < 33 {
        return Err(BlockProblem::ShortTable);
    }
    let mut present = [false; 256];
    let mut m = 0;
    for (s, p) in present.iter_mut().enumerate() {
        if block[1 + s / 8] & (1 << (s % 8)) != 0 {
            *p = true;
            m += 1;
        }
    }
    if m < 2 {
        return Err(BlockProblem::TableSymbols(m));
    }
    let tab_end = 33 + m;
    if block.len() < tab_end {
        return Err(BlockProblem::ShortTable);
    }
    let mut q = [0u8; 256];
    let mut k = 33;
    for s in 0..256 {
        if present[s] {
            q[s] = block[k];
            k += 1;
        }
    }
    Ok((rans::frequencies(&present, &q), tab_end))
}

/// FORMAT.md 4.2: "then `u16` words to the end of the block (the remainder
/// must be even and hold at least the 8 state words). 4 interleaved 32-bit
/// rANS states, symbol `i` uses state `i mod 4`; each state is initialised
/// from two words (high then low), states 0..3 in order; decode of a symbol
/// with state `x`: `slot = x & 0x7fff`, symbol `s` with `start[s] <= slot <
/// start[s]+f[s]`, `x = f[s] * (x >> 15) + slot - start[s]`, and if `x <
/// 2^16`, `x = (x << 16) | next word`. At the end every state must equal
/// `2^16` and every word must have been consumed." A word read past the end
/// reads as 0 (and then fails the end check).
fn decode_rans(block: &[u8], out: &mut [u8]) -> Result<(), BlockProblem> {
    let lane = Lane::new(block)?;
    let (mut st, mut pos) = lane.start();
    let mut groups = out.chunks_exact_mut(4);
    for g in &mut groups {
        lane.group(&mut st, &mut pos, g);
    }
    lane.finish(st, pos, groups.into_remainder())
}

/// What decoding one rANS block (FORMAT.md 4.2) reads: its symbol table
/// and its words. The four states and the word position are the caller's
/// locals, so they stay in registers. Measured with `examples/lossless_speed`
/// (BENCHMARKS.md): about 1.07x the former loop (a branch per renormalisation,
/// a bounds test per word and per slot); decoding two planes in one loop, for
/// eight independent states, measured no faster (register spills), so it is
/// not done.
struct Lane<'a> {
    /// Slot to symbol; fixed-size, so a masked slot needs no bounds test.
    table: Box<[u8; M as usize]>,
    /// `f[s] << 16 | start[s]`: both in one load per step.
    fs: [u32; 256],
    data: &'a [u8],
    nw: usize,
}

impl<'a> Lane<'a> {
    #[allow(clippy::needless_range_loop)]
    fn new(block: &'a [u8]) -> Result<Self, BlockProblem> {
        let (freq, tab_end) = read_table(block)?;
        // `start[s]` is the running sum of the frequencies in symbol order;
        // the lookup table maps each slot to its symbol.
        let mut table = Box::new([0u8; M as usize]);
        let mut fs = [0u32; 256];
        let mut acc = 0u32;
        for s in 0..256 {
            fs[s] = (freq[s] << 16) | acc;
            table[acc as usize..(acc + freq[s]) as usize].fill(s as u8);
            acc += freq[s];
        }
        let data = &block[tab_end..];
        if !data.len().is_multiple_of(2) || data.len() < 16 {
            return Err(BlockProblem::Words);
        }
        Ok(Lane {
            table,
            fs,
            data,
            nw: data.len() / 2,
        })
    }

    /// The initial states (two words each, high then low) and the position
    /// of the first data word.
    fn start(&self) -> ([u32; 4], usize) {
        let st = std::array::from_fn(|j| (self.word(2 * j) << 16) | self.word(2 * j + 1));
        (st, 8)
    }

    /// Word `p`, or 0 past the end.
    #[inline(always)]
    fn word(&self, p: usize) -> u32 {
        if p < self.nw {
            u16::from_le_bytes([self.data[2 * p], self.data[2 * p + 1]]) as u32
        } else {
            0
        }
    }

    /// One decode step of state `x`; `w` is the next word, consumed (1
    /// returned) only when the state renormalises, without a branch.
    #[inline(always)]
    fn step(&self, x: &mut u32, w: u32) -> (u8, usize) {
        let slot = *x & (M - 1);
        let s = self.table[slot as usize];
        let e = self.fs[s as usize];
        let y = (e >> 16) * (*x >> PROB_BITS) + slot - (e & 0xffff);
        let need = y < L;
        let renormed = (y << 16) | w;
        *x = if need { renormed } else { y };
        (s, need as usize)
    }

    /// Four symbols, one per state. While four more words exist they are
    /// read from one fixed-size window: no bounds test per word.
    #[inline(always)]
    fn group(&self, st: &mut [u32; 4], pos: &mut usize, out: &mut [u8]) {
        if *pos + 4 > self.nw {
            for (x, o) in st.iter_mut().zip(out) {
                let (s, k) = self.step(x, self.word(*pos));
                *o = s;
                *pos += k;
            }
            return;
        }
        let p = 2 * *pos;
        let win: [u8; 8] = self.data[p..p + 8].try_into().unwrap();
        let at = |k: usize| u16::from_le_bytes([win[(2 * k) & 7], win[(2 * k + 1) & 7]]) as u32;
        let mut k = 0;
        for (x, o) in st.iter_mut().zip(out) {
            let (s, used) = self.step(x, at(k));
            *o = s;
            k += used;
        }
        *pos += k;
    }

    /// The last `out.len() < 4` symbols, then the end check.
    fn finish(&self, mut st: [u32; 4], mut pos: usize, out: &mut [u8]) -> Result<(), BlockProblem> {
        for (x, o) in st.iter_mut().zip(out) {
            let (s, k) = self.step(x, self.word(pos));
            *o = s;
            pos += k;
        }
        if pos != self.nw || st.iter().any(|&x| x != L) {
            return Err(BlockProblem::StreamEnd);
        }
        Ok(())
    }
}

/// The magic number that opens a Zstandard frame (RFC 8878 3.1.1), as stored.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// FORMAT.md 4.4 (and 1.3): "exactly one Zstandard frame (RFC 8878 3.1.1,
/// not a skippable frame), nothing before or after it". Checked before
/// anything is decoded, so a reader that stops after the first frame and
/// one that reads on agree.
pub fn one_zstd_frame(stream: &[u8]) -> Result<(), String> {
    if stream.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err("not a Zstandard frame (bad magic)".into());
    }
    match zstd::zstd_safe::find_frame_compressed_size(stream) {
        Ok(n) if n == stream.len() => Ok(()),
        Ok(n) => Err(format!("{} bytes after the frame's {n}", stream.len() - n)),
        Err(code) => Err(format!(
            "incomplete or damaged frame ({})",
            zstd::zstd_safe::get_error_name(code)
        )),
    }
}

/// FORMAT.md 4.4 and 3.4: "`2` zstd: `kind`, then one zstd frame; its
/// decoded size must not exceed `16 * n + 16` bytes" and it holds "LEB128
/// zigzag varints" of at most 64 bits ("a tenth byte holds at most the value
/// 1"); "the escape count must equal" `n`. The frame is decoded as a stream
/// and at most `n` values are kept, so a frame that expands far beyond what
/// the header declares costs time, never memory.
pub fn decode_escapes(block: &[u8], n: u64) -> Result<Vec<i64>, BlockProblem> {
    use std::io::Read;
    if block.first() != Some(&KIND_ZSTD) {
        return Err(BlockProblem::EscapesNotZstd);
    }
    one_zstd_frame(&block[1..]).map_err(BlockProblem::EscapesZstd)?;
    let zerr = |e: std::io::Error| BlockProblem::EscapesZstd(e.to_string());
    let cap = 16 * n + 16;
    let mut dec = zstd::stream::read::Decoder::new(&block[1..])
        .map_err(zerr)?
        .take(cap + 1);
    // `n` is at most the tensor's symbol count (FORMAT.md 3.3), itself tied
    // to the base tensor's size.
    let mut out = Vec::with_capacity((n as usize).min(1 << 20));
    let (mut count, mut read) = (0usize, 0u64);
    let mut z = 0u64;
    let mut shift = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = dec.read(&mut buf).map_err(zerr)?;
        if k == 0 {
            break;
        }
        read += k as u64;
        if read > cap {
            return Err(BlockProblem::EscapesZstd(format!(
                "decodes to more than {cap} bytes"
            )));
        }
        for &b in &buf[..k] {
            if shift > 63 || (shift == 63 && b & 0x7f > 1) {
                return Err(BlockProblem::EscapeVarint);
            }
            z |= ((b & 0x7f) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                if (count as u64) < n {
                    out.push(rans::from_zigzag(z));
                }
                count += 1;
                z = 0;
                shift = 0;
            }
        }
    }
    if shift != 0 || count as u64 != n {
        return Err(BlockProblem::EscapeCount {
            got: count,
            want: n,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An escapes block: kind 2 and one zstd frame of `raw`.
    fn escapes(raw: &[u8]) -> Vec<u8> {
        let mut b = vec![KIND_ZSTD];
        b.extend(zstd::bulk::compress(raw, 19).unwrap());
        b
    }

    #[test]
    fn an_escapes_frame_expanding_past_its_count_is_refused_early() {
        // 64 MiB of zero bytes (64 Mi one-byte varints) claimed as 4 values:
        // refused once the decoded bytes pass 16 * 4 + 16, never held.
        let bomb = escapes(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 8 << 10, "{}", bomb.len());
        assert_eq!(
            decode_escapes(&bomb, 4),
            Err(BlockProblem::EscapesZstd(
                "decodes to more than 80 bytes".into()
            ))
        );
        // Within the bound but more values than declared: counted, not kept.
        assert_eq!(
            decode_escapes(&escapes(&[0; 10]), 4),
            Err(BlockProblem::EscapeCount { got: 10, want: 4 })
        );
        // zigzag: 0, -1, 1, -2 as one-byte varints; 300 as two bytes.
        assert_eq!(
            decode_escapes(&escapes(&[0, 1, 2, 3, 0xd8, 0x04]), 5),
            Ok(vec![0, -1, 1, -2, 300])
        );
    }
}
