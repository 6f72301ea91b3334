//! The published delta methods scored by what the model does: at each rate,
//! every lossy peer of `bench-codec` gets the bytes resid's own file took,
//! rebuilds start + its residual, and the held-out loss of that model is
//! turned into the share of the training gain it keeps.

use resid::codec::baselines::{code_model, Peer};
use serde::{Deserialize, Serialize};

use crate::needle::Named;
use crate::pipeline::CodecRow;
use crate::Result;

/// One peer's file at one of resid's rates, scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// The rate resid was asked for (its row in the codec table).
    pub rate: f64,
    pub method: String,
    /// Bits per parameter the peer spent (resid's file bytes were its
    /// budget; BitDelta's 1 bit/param is fixed).
    pub bits_per_param: f64,
    pub loss: f64,
    pub gain: f64,
}

/// (rows, cols) of a tensor as the codec sees it: 1-D tensors are one row.
fn dims(shape: &[usize]) -> (usize, usize) {
    resid::codec::encode::lossy::matrix_dims(shape)
}

/// Start + each peer's rebuilt residual at each of resid's lossy rates in
/// `codec`, budgeted at the bytes resid's file took; `score` gives a
/// model's held-out loss, `gain` turns a loss into the share of the gain.
/// BitDelta, whose rate is fixed, is scored once (rate 1).
pub fn score(
    start: &Named,
    trained: &Named,
    codec: &[CodecRow],
    seed: u64,
    mut score: impl FnMut(&Named) -> Result<f64>,
    gain: impl Fn(f64) -> f64,
) -> Result<Vec<PeerRow>> {
    let residuals: Vec<Vec<f32>> = start
        .iter()
        .zip(trained)
        .map(|(s, t)| t.2.iter().zip(&s.2).map(|(a, b)| a - b).collect())
        .collect();
    let views: Vec<(&[f32], usize, usize)> = residuals
        .iter()
        .zip(start)
        .map(|(r, s)| {
            let (m, n) = dims(&s.1);
            (r.as_slice(), m, n)
        })
        .collect();
    let params: usize = residuals.iter().map(Vec::len).sum();
    let mut rows = Vec::new();
    for c in codec {
        let Some(rate) = c.requested_bits_per_param else {
            continue;
        };
        let bpp = c.file_bytes as f64 * 8.0 / params.max(1) as f64;
        for peer in Peer::ALL {
            if peer == Peer::BitDelta && rate != 1.0 {
                continue;
            }
            let (rebuilt, bits) = code_model(peer, &views, bpp, seed);
            let mut w = start.clone();
            for (x, rh) in w.iter_mut().zip(&rebuilt) {
                for (v, d) in x.2.iter_mut().zip(rh) {
                    *v += d;
                }
            }
            let loss = score(&w)?;
            rows.push(PeerRow {
                rate,
                method: peer.name().into(),
                bits_per_param: bits as f64 / params.max(1) as f64,
                loss,
                gain: gain(loss),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(vals: &[Vec<f32>], shapes: &[Vec<usize>]) -> Named {
        vals.iter()
            .zip(shapes)
            .enumerate()
            .map(|(i, (v, s))| (format!("t{i}"), s.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn every_peer_is_scored_at_resids_bytes_and_the_loss_is_of_start_plus_its_residual() {
        // A rank-1 residual on a 32 x 32 matrix and a bias.
        let shapes = vec![vec![32, 32], vec![32]];
        let start = named(&[vec![0.0; 1024], vec![0.0; 32]], &shapes);
        let r: Vec<f32> = (0..1024)
            .map(|k| ((k / 32) as f32 - 15.5) * ((k % 32) as f32 - 15.5) * 1e-3)
            .collect();
        let trained = named(&[r.clone(), vec![0.01; 32]], &shapes);
        let row = |rate: f64, bytes: u64| CodecRow {
            mode: format!("{rate} bits/param"),
            requested_bits_per_param: Some(rate),
            bits_per_param: rate,
            file_bytes: bytes,
            residual_rel_error: 0.0,
            loss: 0.0,
            gain: 0.0,
        };
        let codec = vec![row(1.0, 1056 / 8), row(4.0, 1056 / 2)];
        // The "loss": squared distance of the matrix to the trained one.
        let dist = |w: &Named| -> Result<f64> {
            Ok(w[0]
                .2
                .iter()
                .zip(&r)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum())
        };
        let full = dist(&start).unwrap();
        let rows = score(&start, &trained, &codec, 0, dist, |l| 1.0 - l / full).unwrap();
        // BitDelta once, the other four at both rates.
        assert_eq!(rows.len(), 1 + 4 * 2);
        for x in &rows {
            match x.method.as_str() {
                // Never over their budget.
                "low-rank fp16" | "Delta-CoMe (no calibration)" => {
                    assert!(x.bits_per_param <= x.rate, "{x:?}")
                }
                // A seeded mask or zstd decide: near it.
                "DARE" | "top-k fp16+u32+zstd" => {
                    assert!((x.bits_per_param / x.rate - 1.0).abs() < 0.2, "{x:?}")
                }
                m => assert_eq!(m, "BitDelta"),
            }
        }
        // A rank-1 residual: the SVD peers at 4 bits/param keep nearly all.
        for m in ["low-rank fp16", "Delta-CoMe (no calibration)"] {
            let x = rows
                .iter()
                .find(|x| x.method == m && x.rate == 4.0)
                .unwrap();
            assert!(x.gain > 0.99, "{x:?}");
        }
    }
}
