//! Byte-symbol entropy coding: a static (per block) model and 4-way
//! interleaved 32-bit rANS with 16-bit renormalisation and 15-bit
//! probabilities, decoded through a 32 KiB symbol lookup table.
//!
//! Written by hand rather than through constriction's generic coders because
//! unpack must reach hundreds of MB/s on 2 cores: the interleaved states give
//! the CPU independent work, and the table decoder avoids a search per symbol.
//! The block layout is specified in FORMAT.md section 4; the decoder is
//! [`crate::decode::block`], which shares [`frequencies`] with the encoder.

/// Probability precision in bits.
pub const PROB_BITS: u32 = 15;
/// Frequencies sum to M.
pub const M: u32 = 1 << PROB_BITS;
/// Lower bound of a normalised state.
pub const L: u32 = 1 << 16;

/// Block kinds (first byte).
pub const KIND_CONST: u8 = 0;
pub const KIND_RANS: u8 = 1;
pub const KIND_ZSTD: u8 = 2;

/// Symbol counts of a stream.
pub fn histogram(symbols: &[u8]) -> [u64; 256] {
    // Four sub-histograms break the store-to-load dependency on runs.
    let mut h = [[0u32; 256]; 4];
    let mut it = symbols.chunks_exact(4);
    for c in &mut it {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &s in it.remainder() {
        h[0][s as usize] += 1;
    }
    let mut out = [0u64; 256];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h.iter().map(|x| x[i] as u64).sum();
    }
    out
}

/// Shannon entropy in bits of a stream with these counts (empirical model).
pub fn entropy_bits(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64) * (c as f64 / nf).log2())
        .sum()
}

/// FORMAT.md 4.3: scales counts to frequencies summing to 2^15, every present
/// symbol >= 1: `f[s] = max(1, round(c[s] * 2^15 / sum c))`, then the
/// difference to 2^15 is spread over the symbols in decreasing order of
/// frequency (ties by symbol), in passes, as written out in FORMAT.md.
fn normalize(counts: &[u64; 256]) -> [u32; 256] {
    let n: u64 = counts.iter().sum();
    let mut f = [0u32; 256];
    let mut total: i64 = 0;
    for s in 0..256 {
        if counts[s] > 0 {
            let v = ((counts[s] as f64) * (M as f64) / (n as f64)).round() as u32;
            f[s] = v.max(1);
            total += f[s] as i64;
        }
    }
    let mut diff = M as i64 - total;
    // Give or take the difference from the largest frequencies first, which
    // changes their code lengths the least.
    let mut order: Vec<usize> = (0..256).filter(|&s| f[s] > 0).collect();
    order.sort_by(|&a, &b| f[b].cmp(&f[a]).then(a.cmp(&b)));
    while diff != 0 {
        let mut changed = false;
        for &s in &order {
            if diff > 0 {
                let add = ((diff as u64 * f[s] as u64 / M as u64) as i64)
                    .max(1)
                    .min(diff);
                f[s] += add as u32;
                diff -= add;
                changed = true;
            } else if diff < 0 && f[s] > 1 {
                let take = ((-diff) as u64)
                    .min(f[s] as u64 - 1)
                    .min(((-diff) as u64 * f[s] as u64 / M as u64).max(1))
                    as i64;
                f[s] -= take as u32;
                diff += take;
                changed = true;
            }
            if diff == 0 {
                break;
            }
        }
        assert!(changed, "normalisation cannot fail with <= 256 symbols");
    }
    f
}

/// FORMAT.md 4.3: the frequencies of a block from its table's log-scale
/// weights of the present symbols, `w[s] = round(2^(q[s]/16) * 256)`, then
/// normalised. Writer and reader both call this, so they agree exactly.
#[allow(clippy::needless_range_loop)]
pub fn frequencies(present: &[bool; 256], q: &[u8; 256]) -> [u32; 256] {
    let mut w = [0u64; 256];
    for s in 0..256 {
        if present[s] {
            w[s] = weight(q[s]);
        }
    }
    normalize(&w)
}

/// FORMAT.md 4.3: `W[q] = round(2^(q/16) * 256)`, the table written out there.
pub fn weight(q: u8) -> u64 {
    ((q as f64 / 16.0).exp2() * 256.0).round() as u64
}

/// Codes `symbols` as one block appended to `out`; returns the Shannon
/// entropy of the symbols (bits) under their empirical distribution.
#[allow(clippy::needless_range_loop)]
pub fn encode_block(symbols: &[u8], out: &mut Vec<u8>) -> f64 {
    let counts = histogram(symbols);
    let bits = entropy_bits(&counts);
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    if distinct <= 1 {
        out.push(KIND_CONST);
        out.push(symbols.first().copied().unwrap_or(0));
        return bits;
    }
    // The table: presence bitmap, then one byte per present symbol, a
    // log-scale weight (2^(q/16)); both sides normalise the weights alike.
    let mut q = [0u8; 256];
    let target = normalize(&counts);
    for s in 0..256 {
        if counts[s] > 0 {
            q[s] = ((target[s] as f64).log2() * 16.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    let present: [bool; 256] = std::array::from_fn(|s| counts[s] > 0);
    let freq = frequencies(&present, &q);
    let mut start = [0u32; 256];
    let mut acc = 0;
    for s in 0..256 {
        start[s] = acc;
        acc += freq[s];
    }
    // Exact division by multiplication: floor(x / f) = (x * ceil(2^48 / f)) >> 48
    // for x < 2^32 and f < 2^15 (the rounding error stays below 2^-16).
    let mut rcp = [0u64; 256];
    for s in 0..256 {
        if freq[s] > 0 {
            rcp[s] = (1u64 << 48).div_ceil(freq[s] as u64);
        }
    }
    out.push(KIND_RANS);
    let mut bitmap = [0u8; 32];
    for s in 0..256 {
        if counts[s] > 0 {
            bitmap[s / 8] |= 1 << (s % 8);
        }
    }
    out.extend_from_slice(&bitmap);
    for s in 0..256 {
        if counts[s] > 0 {
            out.push(q[s]);
        }
    }
    let mut words: Vec<u16> = Vec::with_capacity(symbols.len() / 4 + 16);
    // Symbol i goes to state i mod 4, coded from the last symbol back. One
    // table entry per symbol keeps a step to one cache line.
    let mut tab = [(0u32, 0u32, 0u64); 256];
    for s in 0..256 {
        tab[s] = (freq[s], start[s], rcp[s]);
    }
    let step = |x: &mut u32, s: u8, words: &mut Vec<u16>| {
        let (f, c, r) = tab[s as usize];
        let x_max = (f as u64) << 17; // ((L >> PROB_BITS) << 16) * f
        if *x as u64 >= x_max {
            words.push(*x as u16);
            *x >>= 16;
        }
        let q = ((*x as u128 * r as u128) >> 48) as u32;
        *x = (q << PROB_BITS) + (*x - q * f) + c;
    };
    let mut st = [L; 4];
    let whole = symbols.len() & !3;
    for i in (whole..symbols.len()).rev() {
        step(&mut st[i & 3], symbols[i], &mut words);
    }
    // Groups of four with the states in registers: four independent chains.
    let [mut x0, mut x1, mut x2, mut x3] = st;
    for g in symbols[..whole].rchunks_exact(4) {
        step(&mut x3, g[3], &mut words);
        step(&mut x2, g[2], &mut words);
        step(&mut x1, g[1], &mut words);
        step(&mut x0, g[0], &mut words);
    }
    let st = [x0, x1, x2, x3];
    for j in (0..4).rev() {
        words.push(st[j] as u16);
        words.push((st[j] >> 16) as u16);
    }
    out.reserve(words.len() * 2);
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    bits
}

/// Signed level to its zigzag code `2|q| - (q < 0)` (FORMAT.md 3.4).
#[inline]
pub fn to_zigzag(q: i64) -> u64 {
    ((q << 1) ^ (q >> 63)) as u64
}

/// Inverse of [`to_zigzag`].
#[inline]
pub fn from_zigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::block::decode_symbols as decode_block;
    use rand::{Rng, SeedableRng};

    fn round_trip(sym: &[u8]) -> usize {
        let mut b = Vec::new();
        encode_block(sym, &mut b);
        let mut back = vec![0u8; sym.len()];
        decode_block(&b, &mut back).unwrap();
        assert_eq!(back, sym);
        b.len()
    }

    #[test]
    fn round_trips_and_nears_entropy() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in [0usize, 1, 2, 3, 5, 17, 1000, 100_000] {
            let sym: Vec<u8> = (0..n)
                .map(|_| {
                    let u: f64 = rng.random();
                    (-(u.ln()) * 3.0).min(255.0) as u8
                })
                .collect();
            let len = round_trip(&sym);
            if n >= 100_000 {
                let h = entropy_bits(&histogram(&sym)) / 8.0;
                assert!((len as f64) < h * 1.01 + 200.0, "{len} vs {h}");
            }
        }
        round_trip(&vec![7u8; 1000]);
        let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        round_trip(&all);
    }

    #[test]
    fn skewed_stream_costs_near_its_entropy() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let sym: Vec<u8> = (0..1 << 18)
            .map(|_| {
                if rng.random::<f64>() < 0.995 {
                    0
                } else {
                    rng.random_range(1..16)
                }
            })
            .collect();
        let mut b = Vec::new();
        let h = encode_block(&sym, &mut b) / 8.0;
        assert!((b.len() as f64) < h * 1.03 + 64.0, "{} vs {h}", b.len());
    }

    /// The weight table and both worked examples of FORMAT.md 4.3.
    #[test]
    fn frequency_table_matches_format_md() {
        let spec = include_str!("../../../FORMAT.md");
        let table = spec
            .split("```weights\n")
            .nth(1)
            .and_then(|t| t.split("```").next())
            .expect("FORMAT.md has the weight table");
        let w: Vec<u64> = table
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(w, (0..=255u8).map(weight).collect::<Vec<_>>());
        let mut present = [false; 256];
        let mut q = [0u8; 256];
        for (s, qs) in [(0, 232), (1, 203), (2, 175), (3, 159), (255, 134)] {
            present[s] = true;
            q[s] = qs;
        }
        let f = frequencies(&present, &q);
        assert_eq!(
            [f[0], f[1], f[2], f[3], f[255]],
            [22980, 6542, 1945, 972, 329]
        );
        // The writer's side of the example: these counts give those q.
        let mut sym = vec![0u8; 700];
        for (s, n) in [(1u8, 200), (2, 60), (3, 30), (255, 10)] {
            sym.extend(std::iter::repeat_n(s, n));
        }
        let mut b = Vec::new();
        encode_block(&sym, &mut b);
        assert_eq!(&b[33..38], &[232, 203, 175, 159, 134]);
        let mut present = [false; 256];
        let mut q = [0u8; 256];
        present[..10].fill(true);
        present[200] = true;
        q[200] = 255;
        let f = frequencies(&present, &q);
        assert_eq!((f[0], f[9], f[200]), (1, 1, 32758));
    }

    #[test]
    fn corruption_is_detected() {
        let sym: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 13) as u8).collect();
        let mut b = Vec::new();
        encode_block(&sym, &mut b);
        let mut out = vec![0u8; sym.len()];
        assert!(decode_block(&b[..b.len() - 2], &mut out).is_err());
        let mut out = vec![0u8; sym.len() + 1];
        assert!(decode_block(&b, &mut out).is_err());
    }
}
