//! Generates a base / trained safetensors pair for codec tests and benchmarks.
//!
//! `synth_pair OUT_DIR PARAMS_MILLIONS DTYPE KIND [SEED]` with DTYPE in F32,
//! F16, BF16 and KIND in sparse (heavy-tailed: 5% of entries Student-t(2)
//! spikes, 1e-3 relative Gaussian elsewhere), lowrank (rank 16 plus small
//! noise) or dense (1e-3 relative Gaussian). Matrices are 1024 wide, plus a
//! bias per matrix; writes OUT_DIR/base.safetensors and trained.safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::Dtype;

fn normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: synth_pair OUT_DIR PARAMS_MILLIONS DTYPE KIND [SEED]");
        std::process::exit(2);
    }
    let dir = Path::new(&a[1]);
    let millions: f64 = a[2].parse().unwrap();
    let dtype = Dtype::parse(&a[3]).expect("F32, F16 or BF16");
    let kind = a[4].clone();
    let seed: u64 = a.get(5).map_or(1, |s| s.parse().unwrap());
    std::fs::create_dir_all(dir).unwrap();
    let cols = 1024usize;
    let rows = 1024usize;
    let nmat = ((millions * 1e6) / (rows * cols) as f64).ceil().max(1.0) as usize;
    let mut specs = Vec::new();
    for i in 0..nmat {
        specs.push(TensorSpec {
            name: format!("layers.{i}.weight"),
            dtype_name: dtype.name().into(),
            shape: vec![rows, cols],
        });
        specs.push(TensorSpec {
            name: format!("layers.{i}.bias"),
            dtype_name: dtype.name().into(),
            shape: vec![cols],
        });
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut wb =
        SafetensorsWriter::create(&dir.join("base.safetensors"), specs.clone(), &meta).unwrap();
    let mut wt =
        SafetensorsWriter::create(&dir.join("trained.safetensors"), specs.clone(), &meta).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut bb = Vec::new();
    let mut tb = Vec::new();
    for s in &specs {
        let n: usize = s.shape.iter().product();
        let base: Vec<f32> = (0..n).map(|_| 0.02 * normal(&mut rng)).collect();
        let mut r = vec![0f32; n];
        match kind.as_str() {
            "sparse" => {
                for x in r.iter_mut() {
                    if rng.random::<f64>() < 0.05 {
                        // Student-t with 2 degrees of freedom: heavy tails.
                        let z = normal(&mut rng);
                        let c: f32 = (0..2).map(|_| normal(&mut rng).powi(2)).sum::<f32>() / 2.0;
                        *x = 2e-3 * z / c.sqrt().max(1e-3);
                    } else {
                        *x = 2e-5 * normal(&mut rng);
                    }
                }
            }
            "lowrank" if s.shape.len() == 2 => {
                let k = 16;
                let u: Vec<f32> = (0..rows * k).map(|_| normal(&mut rng)).collect();
                let v: Vec<f32> = (0..k * cols).map(|_| normal(&mut rng)).collect();
                for i in 0..rows {
                    for j in 0..k {
                        let a = u[i * k + j] * 1e-4 / (1.0 + j as f32);
                        for c in 0..cols {
                            r[i * cols + c] += a * v[j * cols + c];
                        }
                    }
                }
                for x in r.iter_mut() {
                    *x += 2e-6 * normal(&mut rng);
                }
            }
            _ => {
                for x in r.iter_mut() {
                    *x = 2e-5 * normal(&mut rng);
                }
            }
        }
        let trained: Vec<f32> = base.iter().zip(&r).map(|(b, r)| b + r).collect();
        dtype.from_f32(&base, &mut bb);
        dtype.from_f32(&trained, &mut tb);
        wb.write_tensor(&s.name, &bb).unwrap();
        wt.write_tensor(&s.name, &tb).unwrap();
    }
    wb.finish().unwrap();
    wt.finish().unwrap();
}
