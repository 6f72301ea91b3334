//! The calibration harness (docs/MEASURES.md, "Calibration"): seeded
//! Gaussian nulls of two model shapes and planted effects of documented
//! sizes, each written as a checkpoint pair and run through the whole
//! driver; the verdict's rates over seeds. Shared by
//! tests/calibration.rs (few seeds) and examples/calibrate.rs (100).

use std::collections::BTreeMap;

use resid_analysis::null::{gaussian_vec, mix};
use resid_analysis::{analyze, Options, Report};
use resid_io::Checkpoint;

pub type Shapes = Vec<(String, Vec<usize>)>;

/// GPT-2-like: per layer a fused qkv [64, 192], an MLP up [192, 64] and a
/// norm [64]; 6 layers (with `wte`: a 1000 x 64 token embedding first).
pub fn gpt2_like(wte: bool) -> Shapes {
    let mut v = Vec::new();
    if wte {
        v.push(("wte.weight".to_string(), vec![1000, 64]));
    }
    for l in 0..6 {
        v.push((format!("h.{l}.attn.c_attn.weight"), vec![64, 192]));
        v.push((format!("h.{l}.mlp.c_fc.weight"), vec![192, 64]));
        v.push((format!("h.{l}.ln_1.weight"), vec![64]));
    }
    v
}

/// Llama-like: 4 layers of q, k, v, o, gate, up, down and two norms, width 32.
pub fn llama_like() -> Shapes {
    let mut v = Vec::new();
    for l in 0..4 {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj", vec![32, 32]),
            ("self_attn.k_proj", vec![16, 32]),
            ("self_attn.v_proj", vec![16, 32]),
            ("self_attn.o_proj", vec![32, 32]),
            ("mlp.gate_proj", vec![96, 32]),
            ("mlp.up_proj", vec![96, 32]),
            ("mlp.down_proj", vec![32, 96]),
        ] {
            v.push((format!("{p}.{n}.weight"), s));
        }
        v.push((format!("{p}.input_layernorm.weight"), vec![32]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![32]));
    }
    v
}

/// What is planted. Sizes are relative to a residual entry std of 0.01.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// i.i.d. Gaussian residual (std 0.01): no hypothesis holds.
    None,
    /// Every matrix exactly rank 4 (Gaussian factors).
    Rank4,
    /// 1% of entries get N(0, 0.05^2) spikes over N(0, 1e-4^2) noise.
    Spikes,
    /// 50 of the 1000 token-embedding rows changed (std 0.01), the rest 0;
    /// every other tensor N(0, 1e-5^2).
    Rows50,
    /// A smooth field 0.01 sin(f i) cos(g j), its frequencies f, g in
    /// [0.03, 0.10) and its phase drawn per tensor (so adjacent layers are
    /// not the same field shifted, which would correlate them), plus
    /// N(0, 0.002^2).
    Smooth,
    /// The same residual in layers l and l+1 (pairs (0,1), (2,3), ...) for
    /// every role, plus independent noise of equal variance (r = 0.5).
    Shared,
    /// Rows drawn from 4 types (centres std 0.01) plus N(0, 0.001^2).
    Types,
}

impl Effect {
    pub const PLANTED: [Effect; 6] = [
        Effect::Rank4,
        Effect::Spikes,
        Effect::Rows50,
        Effect::Smooth,
        Effect::Shared,
        Effect::Types,
    ];

    /// The hypothesis the effect must be detected as.
    pub fn hypothesis(self) -> &'static str {
        match self {
            Effect::None => "",
            Effect::Rank4 => "low-rank",
            Effect::Spikes => "sparse",
            Effect::Rows50 => "row-sparse",
            Effect::Smooth => "smooth",
            Effect::Shared => "coordinated",
            Effect::Types => "clustered",
        }
    }

    /// The residual of tensor `i` (`layer` if any) of a `rows x cols` view.
    fn residual(self, seed: u64, i: usize, name: &str, rows: usize, cols: usize) -> Vec<f32> {
        let n = rows * cols;
        let s = |k: u64| mix(seed, k * 1000 + i as u64);
        match self {
            Effect::None => gaussian_vec(n, 0.01, s(1)),
            Effect::Rank4 => {
                if cols == 1 {
                    return gaussian_vec(n, 1e-4, s(2));
                }
                let k = 4;
                let u = gaussian_vec(rows * k, 0.01, s(3));
                let v = gaussian_vec(k * cols, 1.0, s(4));
                (0..n)
                    .map(|e| {
                        (0..k)
                            .map(|j| u[e / cols * k + j] * v[j * cols + e % cols])
                            .sum()
                    })
                    .collect()
            }
            Effect::Spikes => {
                let mut x = gaussian_vec(n, 1e-4, s(5));
                let spikes = gaussian_vec(n, 0.05, s(6));
                let off = (s(7) % 97) as usize;
                for k in (off..n).step_by(97) {
                    x[(k * 31 + i) % n] += spikes[k];
                }
                x
            }
            Effect::Rows50 => {
                if name == "wte.weight" {
                    let g = gaussian_vec(n, 0.01, s(8));
                    let off = (s(9) % 20) as usize;
                    (0..n)
                        .map(|e| if (e / cols) % 20 == off { g[e] } else { 0.0 })
                        .collect()
                } else {
                    gaussian_vec(n, 1e-5, s(10))
                }
            }
            Effect::Smooth => {
                let noise = gaussian_vec(n, 0.002, s(11));
                let ph = (s(12) % 1000) as f32 / 100.0;
                let freq = |k: u64| 0.03 + 0.07 * (s(k) % 1000) as f32 / 1000.0;
                let (f, g) = (freq(13), freq(14));
                (0..n)
                    .map(|k| {
                        let (a, b) = ((k / cols) as f32, (k % cols) as f32);
                        0.01 * (a * f + ph).sin() * (b * g + 2.0 * ph).cos() + noise[k]
                    })
                    .collect()
            }
            Effect::Shared => {
                let layer = layer_of(name).unwrap_or(0);
                let role = mix(seed, resid_analysis::null::hash_str(&pattern(name)));
                let shared = gaussian_vec(n, 0.01 / 2f64.sqrt(), mix(role, (layer / 2) as u64));
                let own = gaussian_vec(n, 0.01 / 2f64.sqrt(), s(13));
                shared.iter().zip(&own).map(|(a, b)| a + b).collect()
            }
            Effect::Types => {
                if cols == 1 {
                    return gaussian_vec(n, 0.001, s(14));
                }
                let centres = gaussian_vec(4 * cols, 0.01, s(15));
                let noise = gaussian_vec(n, 0.001, s(16));
                (0..n)
                    .map(|k| centres[((k / cols) % 4) * cols + k % cols] + noise[k])
                    .collect()
            }
        }
    }
}

fn layer_of(name: &str) -> Option<usize> {
    name.split('.').find_map(|p| p.parse().ok())
}

fn pattern(name: &str) -> String {
    name.split('.')
        .map(|p| if p.parse::<usize>().is_ok() { "*" } else { p })
        .collect::<Vec<_>>()
        .join(".")
}

/// One seeded run of `effect` on `shapes`.
pub fn run(shapes: &Shapes, effect: Effect, seed: u64) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let (mut base, mut trained) = (Vec::new(), Vec::new());
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let b = gaussian_vec(n, 0.05, mix(seed ^ 0xba5e, i as u64));
        let (rows, cols) = (shape[0], n / shape[0]);
        let r = effect.residual(seed, i, name, rows, cols);
        let t: Vec<f32> = b.iter().zip(&r).map(|(x, y)| x + y).collect();
        base.push((name.clone(), shape.clone(), b));
        trained.push((name.clone(), shape.clone(), t));
    }
    let (bp, tp) = (
        dir.path().join("b.safetensors"),
        dir.path().join("t.safetensors"),
    );
    resid_io::write::write_f32_checkpoint(&bp, &base, &BTreeMap::new()).unwrap();
    resid_io::write::write_f32_checkpoint(&tp, &trained, &BTreeMap::new()).unwrap();
    let opts = Options {
        threads: 1,
        seed,
        ..Options::default()
    };
    analyze(
        &Checkpoint::open(&bp).unwrap(),
        &Checkpoint::open(&tp).unwrap(),
        &opts,
        &|_| {},
    )
    .unwrap()
}

/// Per hypothesis, how many of `seeds` runs supported it.
pub fn rates(
    shapes: &Shapes,
    effect: Effect,
    seeds: std::ops::Range<u64>,
) -> BTreeMap<&'static str, usize> {
    let mut out: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in seeds {
        let r = run(shapes, effect, seed);
        for (name, h) in r.verdict.all() {
            *out.entry(name).or_default() += h.supported as usize;
        }
    }
    out
}
