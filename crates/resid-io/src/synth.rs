//! Benchmark pairs with real-model shapes, so scale can be measured without
//! downloading models: a seeded Gaussian base and a trained side that adds a
//! sparse, dense or low-rank residual, written sharded like Hugging Face.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::dtype::Dtype;
use crate::error::{IoError, Result};
use crate::write::{write_index, SafetensorsWriter, TensorSpec};

/// A Llama-style architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    pub layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub vocab: usize,
    /// Width of k and v (smaller than d_model under grouped-query attention).
    pub d_kv: usize,
}

impl Arch {
    /// Named shapes: llama-25m, llama-0.1b, llama-250m, llama-1b (TinyLlama),
    /// llama-7b, llama-13b, llama-70b; or `custom:LAYERS,D,FF,VOCAB`.
    pub fn named(name: &str) -> Option<Arch> {
        let a = |layers, d_model, d_ff, vocab, d_kv| Arch {
            layers,
            d_model,
            d_ff,
            vocab,
            d_kv,
        };
        Some(match name {
            "llama-25m" => a(4, 512, 1376, 16000, 512),
            "llama-0.1b" => a(12, 768, 2048, 32000, 768),
            "llama-250m" => a(16, 1024, 2816, 32000, 1024),
            "llama-1b" => a(22, 2048, 5632, 32000, 256),
            "llama-7b" => a(32, 4096, 11008, 32000, 4096),
            "llama-13b" => a(40, 5120, 13824, 32000, 5120),
            "llama-70b" => a(80, 8192, 28672, 32000, 1024),
            _ => {
                let v: Vec<usize> = name
                    .strip_prefix("custom:")?
                    .split(',')
                    .map(|x| x.trim().parse().ok())
                    .collect::<Option<_>>()?;
                if v.len() != 4 || v.contains(&0) {
                    return None;
                }
                a(v[0], v[1], v[2], v[3], v[1])
            }
        })
    }

    /// Tensor names and shapes in Hugging Face Llama order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f, kv) = (self.d_model, self.d_ff, self.d_kv);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, d])];
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), vec![d]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![d, d]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, d]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, d]));
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, d]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![f, d]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![f, d]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![d, f]));
        }
        out.push(("model.norm.weight".to_string(), vec![d]));
        out.push(("lm_head.weight".to_string(), vec![self.vocab, d]));
        out
    }

    /// Parameter count.
    pub fn n_params(&self) -> usize {
        self.tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// What training "added" in the generated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidualKind {
    /// 5% of entries get a Laplace-tailed change, the rest none: heavy-tailed, sparse.
    Sparse,
    /// Every entry gets a Gaussian change.
    Dense,
    /// A rank-8 change per matrix (norms get a dense change).
    LowRank,
}

impl ResidualKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sparse" => Some(Self::Sparse),
            "dense" => Some(Self::Dense),
            "lowrank" => Some(Self::LowRank),
            _ => None,
        }
    }
}

/// Settings of a generated pair.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub arch: Arch,
    pub dtype: Dtype,
    pub residual: ResidualKind,
    /// Residual RMS relative to the base's (base entries are N(0, 0.02)).
    pub scale: f32,
    pub seed: u64,
    /// Largest shard in bytes (Hugging Face uses about 5 GB).
    pub shard_bytes: usize,
}

/// Writes `out/base` and `out/trained`, each a sharded Hugging Face folder,
/// calling `progress(bytes_done, bytes_total)` after each tensor.
pub fn write_pair(out: &Path, o: &SynthOptions, mut progress: impl FnMut(u64, u64)) -> Result<()> {
    let specs = o.arch.tensors();
    let esz = o.dtype.size();
    let total: usize = specs
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() * esz)
        .sum();
    // Greedy shard assignment in order.
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut cur = 0usize;
    for (i, (_, s)) in specs.iter().enumerate() {
        let b = s.iter().product::<usize>() * esz;
        if cur > 0 && cur + b > o.shard_bytes {
            shards.push(vec![]);
            cur = 0;
        }
        shards.last_mut().unwrap().push(i);
        cur += b;
    }
    let n = shards.len();
    let fname = |k: usize| format!("model-{:05}-of-{n:05}.safetensors", k + 1);
    for side in ["base", "trained"] {
        let dir = out.join(side);
        std::fs::create_dir_all(&dir).map_err(|e| IoError::io(&dir, e))?;
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let mut weight_map = Vec::new();
    let (mut base_vals, mut res_vals, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0u64;
    for (k, idx) in shards.iter().enumerate() {
        let tspecs: Vec<TensorSpec> = idx
            .iter()
            .map(|&i| TensorSpec {
                name: specs[i].0.clone(),
                dtype_name: o.dtype.name().into(),
                shape: specs[i].1.clone(),
            })
            .collect();
        let mut wb =
            SafetensorsWriter::create(&out.join("base").join(fname(k)), tspecs.clone(), &meta)?;
        let mut wt = SafetensorsWriter::create(&out.join("trained").join(fname(k)), tspecs, &meta)?;
        for &i in idx {
            let (name, shape) = &specs[i];
            let tensor_seed = o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64);
            gen_base(shape, tensor_seed, &mut base_vals);
            gen_residual(shape, o, tensor_seed ^ 0xD1B5_4A32_D192_ED03, &mut res_vals);
            o.dtype.from_f32(&base_vals, &mut bytes);
            wb.write_tensor(name, &bytes)?;
            // The trained side is the base as stored (rounded) plus the residual.
            let mut rounded = Vec::new();
            o.dtype.to_f32(&bytes, &mut rounded);
            rounded
                .par_iter_mut()
                .zip(res_vals.par_iter())
                .for_each(|(b, r)| *b += r);
            o.dtype.from_f32(&rounded, &mut bytes);
            wt.write_tensor(name, &bytes)?;
            weight_map.push((name.clone(), fname(k)));
            done += bytes.len() as u64;
            progress(done, total as u64);
        }
        wb.finish()?;
        wt.finish()?;
    }
    for side in ["base", "trained"] {
        write_index(
            &out.join(side).join("model.safetensors.index.json"),
            &weight_map,
            total,
        )?;
    }
    Ok(())
}

/// Fills `out` in parallel chunks, each from its own seeded stream, so the
/// values do not depend on the thread count.
fn fill_par(n: usize, seed: u64, out: &mut Vec<f32>, f: impl Fn(&mut ChaCha8Rng) -> f32 + Sync) {
    const CHUNK: usize = 1 << 16;
    out.clear();
    out.resize(n, 0.0);
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, xs)| {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        for x in xs {
            *x = f(&mut rng);
        }
    });
}

fn gen_base(shape: &[usize], seed: u64, out: &mut Vec<f32>) {
    let n: usize = shape.iter().product();
    if shape.len() == 1 {
        // Norm weights sit near one.
        fill_par(n, seed, out, |r| {
            1.0 + 0.02 * r.sample::<f32, _>(StandardNormal)
        });
    } else {
        fill_par(n, seed, out, |r| 0.02 * r.sample::<f32, _>(StandardNormal));
    }
}

fn gen_residual(shape: &[usize], o: &SynthOptions, seed: u64, out: &mut Vec<f32>) {
    let n: usize = shape.iter().product();
    let s = 0.02 * o.scale;
    match (o.residual, shape.len()) {
        (ResidualKind::Sparse, _) => {
            // 5% of entries with Laplace magnitudes; RMS = s overall.
            let amp = s / (0.05f32 * 2.0).sqrt();
            fill_par(n, seed, out, move |r| {
                if r.random::<f32>() < 0.05 {
                    let u: f32 = r.random::<f32>() - 0.5;
                    -amp * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
                } else {
                    0.0
                }
            })
        }
        (ResidualKind::Dense, _) | (ResidualKind::LowRank, 1) => fill_par(n, seed, out, move |r| {
            s * r.sample::<f32, _>(StandardNormal)
        }),
        (ResidualKind::LowRank, _) => {
            let rows = shape[0];
            let cols = n / rows;
            const RANK: usize = 8;
            let mut u = Vec::new();
            let mut v = Vec::new();
            // Entries of U V^T have variance RANK * su * sv; choose su = sv.
            let sf = (s / (RANK as f32).sqrt()).sqrt();
            fill_par(rows * RANK, seed, &mut u, move |r| {
                sf * r.sample::<f32, _>(StandardNormal)
            });
            fill_par(cols * RANK, seed ^ 1, &mut v, move |r| {
                sf * r.sample::<f32, _>(StandardNormal)
            });
            out.clear();
            out.resize(n, 0.0);
            out.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
                let ui = &u[i * RANK..(i + 1) * RANK];
                for (j, x) in row.iter_mut().enumerate() {
                    let vj = &v[j * RANK..(j + 1) * RANK];
                    *x = ui.iter().zip(vj).map(|(a, b)| a * b).sum();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pair, Checkpoint};

    #[test]
    fn shapes_have_their_documented_sizes() {
        let p = |n: &str| Arch::named(n).unwrap().n_params() as f64 / 1e9;
        assert!((6.5..7.0).contains(&p("llama-7b")), "{}", p("llama-7b"));
        assert!((1.0..1.2).contains(&p("llama-1b")), "{}", p("llama-1b"));
        assert!((68.0..71.0).contains(&p("llama-70b")), "{}", p("llama-70b"));
        assert!(Arch::named("custom:2,8,16,32").is_some());
        assert!(Arch::named("custom:2,8").is_none());
    }

    #[test]
    fn writes_a_sharded_pair_whose_residual_has_the_requested_size() {
        let d = tempfile::tempdir().unwrap();
        let o = SynthOptions {
            arch: Arch::named("custom:2,32,64,100").unwrap(),
            dtype: Dtype::F32,
            residual: ResidualKind::Dense,
            scale: 0.1,
            seed: 7,
            shard_bytes: 40_000,
        };
        write_pair(d.path(), &o, |_, _| {}).unwrap();
        let b = Checkpoint::open(&d.path().join("base")).unwrap();
        let t = Checkpoint::open(&d.path().join("trained")).unwrap();
        assert!(b.is_sharded() && b.shard_paths().len() > 1);
        let p = pair(&b, &t).unwrap();
        assert_eq!(p.pairs.len(), o.arch.tensors().len());
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let e = t.get("model.layers.1.mlp.up_proj.weight").unwrap();
        t.read_f32(e, &mut y).unwrap();
        b.read_f32(b.get(&e.name).unwrap(), &mut x).unwrap();
        let rms = (x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((b - a) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64)
            .sqrt();
        assert!((rms - 0.002).abs() < 0.0002, "{rms}");
    }
}
