//! MLP input weights from the data: each hidden unit's input weight is a
//! k-means centroid of the layer's actual inputs (`ln2(x)` on training
//! text), so at step 0 every unit fires on one recurring kind of context
//! instead of on a random direction (data-dependent init in the spirit of
//! Krähenbühl et al. 2016 and k-means feature learning, Coates & Ng 2012).

use faer::{Mat, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::linalg::mm_bt;

/// k-means++ seeding then `iters` Lloyd steps on `points [n, d]`; returns
/// `k` centroids `[k, d]`. Empty clusters are re-seeded from the point
/// farthest from its centroid. Deterministic for a seed.
pub fn kmeans(points: &[f32], d: usize, k: usize, iters: usize, seed: u64) -> Vec<f32> {
    let n = points.len() / d;
    assert!(n >= 1 && k >= 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let row = |i: usize| &points[i * d..(i + 1) * d];
    let dist2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut cent = Vec::with_capacity(k * d);
    let first = rng.random_range(0..n);
    cent.extend_from_slice(row(first));
    let mut best: Vec<f32> = (0..n).map(|i| dist2(row(i), row(first))).collect();
    for _ in 1..k {
        let total: f64 = best.iter().map(|&x| x as f64).sum();
        let pick = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut u = rng.random::<f64>() * total;
            let mut p = n - 1;
            for (i, &b) in best.iter().enumerate() {
                u -= b as f64;
                if u <= 0.0 {
                    p = i;
                    break;
                }
            }
            p
        };
        let c = row(pick).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(dist2(row(i), &c));
        }
        cent.extend_from_slice(&c);
    }
    let mut assign = vec![0usize; n];
    for _ in 0..iters {
        // argmin |x - c|^2 = argmax x.c - |c|^2 / 2.
        let dots = mm_bt(points, n, d, &cent, k, Par::rayon(0));
        let half: Vec<f32> = cent
            .chunks_exact(d)
            .map(|c| c.iter().map(|v| v * v).sum::<f32>() / 2.0)
            .collect();
        for i in 0..n {
            let r = &dots[i * k..(i + 1) * k];
            let mut bi = 0;
            let mut bv = f32::MIN;
            for j in 0..k {
                let s = r[j] - half[j];
                if s > bv {
                    bv = s;
                    bi = j;
                }
            }
            assign[i] = bi;
        }
        let mut sums = vec![0f64; k * d];
        let mut counts = vec![0usize; k];
        for i in 0..n {
            counts[assign[i]] += 1;
            for (s, &x) in sums[assign[i] * d..(assign[i] + 1) * d]
                .iter_mut()
                .zip(row(i))
            {
                *s += x as f64;
            }
        }
        let mut far: Vec<(f32, usize)> = (0..n)
            .map(|i| (dist2(row(i), &cent[assign[i] * d..(assign[i] + 1) * d]), i))
            .collect();
        far.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut next_far = 0;
        for j in 0..k {
            if counts[j] == 0 {
                let p = far[next_far.min(n - 1)].1;
                next_far += 1;
                cent[j * d..(j + 1) * d].copy_from_slice(row(p));
            } else {
                for (c, s) in cent[j * d..(j + 1) * d]
                    .iter_mut()
                    .zip(&sums[j * d..(j + 1) * d])
                {
                    *c = (*s / counts[j] as f64) as f32;
                }
            }
        }
    }
    cent
}

/// Up-projection from centroids: row `j` is `gain * c_j / (|c_j| sqrt(d))`
/// and its bias `-gain * threshold`, so for a LayerNormed input (norm
/// `sqrt(d)`) the pre-activation is `gain * (cos(x, c_j) - threshold)`.
pub fn up_from_centroids(
    cent: &[f32],
    d: usize,
    gain: f64,
    threshold: f64,
) -> (Vec<f32>, Vec<f32>) {
    let k = cent.len() / d;
    let mut w = Vec::with_capacity(cent.len());
    for c in cent.chunks_exact(d) {
        let norm = c
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        w.extend(
            c.iter()
                .map(|v| (gain * *v as f64 / (norm * (d as f64).sqrt())) as f32),
        );
    }
    (w, vec![(-gain * threshold) as f32; k])
}

/// MLP units that compute a linear map: `down(gelu(up x + bias))` with the
/// pre-activation held near `bias` (30), where GELU is the identity, and
/// the constant taken back by the down bias.
pub struct LinearUnits {
    /// `[r, d]`: row `j` reads token direction `j`.
    pub up: Vec<f32>,
    pub up_bias: Vec<f32>,
    /// `[d, r]` row-major: the columns of these units in `mlp.down.weight`.
    pub down: Vec<f32>,
    pub down_bias: Vec<f32>,
}

/// Units adding `S (B - I) S^T h` to a stream `h` whose LayerNorm scale is
/// `scale` (the MLP sees `scale * h`), with `S [d, r]` orthonormal,
/// zero-mean token directions and `B [r, r]` a rotation of their coordinates.
pub fn linear_units(tok: &Mat<f64>, rot: &Mat<f64>, scale: f64, bias: f64) -> LinearUnits {
    let (d, r) = (tok.nrows(), tok.ncols());
    let mut up = Vec::with_capacity(r * d);
    for j in 0..r {
        up.extend((0..d).map(|i| tok[(i, j)] as f32));
    }
    let bm = Mat::from_fn(r, r, |i, j| rot[(i, j)] - if i == j { 1.0 } else { 0.0 });
    let dm = tok * bm * faer::Scale(1.0 / scale);
    let act = super::forward::gelu(bias as f32) as f64;
    let down: Vec<f32> = (0..d * r).map(|k| dm[(k / r, k % r)] as f32).collect();
    let down_bias = (0..d)
        .map(|i| (-act * (0..r).map(|j| dm[(i, j)]).sum::<f64>()) as f32)
        .collect();
    LinearUnits {
        up,
        up_bias: vec![bias as f32; r],
        down,
        down_bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_clusters() {
        let centres = [[5.0f32, 0.0], [-5.0, 0.0], [0.0, 7.0]];
        let mut pts = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for i in 0..300 {
            let c = centres[i % 3];
            pts.push(c[0] + rng.random_range(-0.5..0.5));
            pts.push(c[1] + rng.random_range(-0.5..0.5));
        }
        let got = kmeans(&pts, 2, 3, 10, 1);
        for c in centres {
            let near = got
                .chunks_exact(2)
                .any(|g| (g[0] - c[0]).abs() < 0.2 && (g[1] - c[1]).abs() < 0.2);
            assert!(near, "{c:?} not found in {got:?}");
        }
        assert_eq!(got, kmeans(&pts, 2, 3, 10, 1));
    }

    #[test]
    fn linear_units_apply_the_rotation() {
        use crate::base::forward::gelu;
        use crate::base::linalg::zero_mean_basis;
        let (d, r, scale) = (16, 5, 2.7);
        let s = Mat::from_fn(d, r, |i, j| {
            if i < r + 1 {
                zero_mean_basis(r + 1, r)[(i, j)]
            } else {
                0.0
            }
        });
        // A rotation: Givens rotations in three planes, one after another.
        let eye = Mat::<f64>::identity(r, r);
        let mut rot = eye.clone();
        for (a, b, t) in [(0, 1, 0.7f64), (2, 3, -1.1), (1, 4, 2.0)] {
            let mut g = eye.clone();
            (g[(a, a)], g[(a, b)], g[(b, a)], g[(b, b)]) = (t.cos(), -t.sin(), t.sin(), t.cos());
            rot = g * &rot;
        }
        let err = (rot.transpose() * &rot - &eye).norm_l2();
        assert!(err < 1e-9, "not orthogonal: {err}");
        let lin = linear_units(&s, &rot, scale, 30.0);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let h: Vec<f64> = (0..d).map(|_| rng.random_range(-1.5..1.5)).collect();
        let mut got = vec![0f64; d];
        for j in 0..r {
            let pre: f32 = (0..d)
                .map(|i| lin.up[j * d + i] * (scale * h[i]) as f32)
                .sum::<f32>()
                + lin.up_bias[j];
            let a = gelu(pre) as f64;
            for (i, g) in got.iter_mut().enumerate() {
                *g += lin.down[i * r + j] as f64 * a;
            }
        }
        let hm = Mat::from_fn(d, 1, |i, _| h[i]);
        let want = &s * (&rot - &eye) * (s.transpose() * &hm);
        for i in 0..d {
            let g = got[i] + lin.down_bias[i] as f64;
            assert!(
                (g - want[(i, 0)]).abs() < 1e-4,
                "{i}: {g} vs {}",
                want[(i, 0)]
            );
        }
    }

    #[test]
    fn up_rows_fire_on_their_centroid() {
        let cent = [3.0f32, 4.0, 0.0, 0.0, 0.0, 2.0];
        let (w, b) = up_from_centroids(&cent, 2, 2.0, 0.5);
        // x = sqrt(2) * unit(3,4): cos = 1 -> pre = 2 * (1 - 0.5) = 1.
        let x = [3.0f32 / 5.0 * 2f32.sqrt(), 4.0 / 5.0 * 2f32.sqrt()];
        let pre = w[0] * x[0] + w[1] * x[1] + b[0];
        assert!((pre - 1.0).abs() < 1e-5);
        assert_eq!(b.len(), 3);
    }
}
