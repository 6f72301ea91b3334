//! What k-means costs at one sampled shape, one core: the analysis's
//! settings and cheaper candidates against the reference search (time, and
//! the largest VE gap on each kind of rows the verdict tells apart);
//! `SAMECOV=1` times the same-covariance null's draw instead.
//!
//! usage: RAYON_NUM_THREADS=1 cargo run --release -p resid-analysis --example kmeans_cost -- [ROWS COLS]
use resid_analysis::kmeans::{self, Config, KS};
use resid_analysis::null;
use std::time::Instant;

fn main() {
    let (m, d): (usize, usize) = {
        let a: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        if a.len() == 2 {
            (a[0], a[1])
        } else {
            (512, 64)
        }
    };
    if std::env::var("SAMECOV").is_ok() {
        time_samecov(m, d);
        return;
    }
    let cands = [
        ("FAST", Config::FAST),
        (
            "r1",
            Config {
                restarts: 1,
                ..Config::FAST
            },
        ),
        (
            "tol1e-3",
            Config {
                tol: 1e-3,
                ..Config::FAST
            },
        ),
        (
            "r1 tol1e-3",
            Config {
                restarts: 1,
                tol: 1e-3,
                ..Config::FAST
            },
        ),
        (
            "r1 tol1e-3 it15",
            Config {
                restarts: 1,
                tol: 1e-3,
                max_iters: 15,
                ..Config::FAST
            },
        ),
    ];
    let data = kmeans::accuracy_rows(m, d);
    let t0 = Instant::now();
    let exact: Vec<Vec<f64>> = data
        .iter()
        .map(|(_, x)| kmeans::variance_explained_with(&Config::EXACT, x, m, d, &KS, 5))
        .collect();
    println!("exact {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    for (name, cfg) in cands {
        let t = Instant::now();
        let mut worst = vec![0.0f64; data.len()];
        for (j, (_, x)) in data.iter().enumerate() {
            let v = kmeans::variance_explained_with(&cfg, x, m, d, &KS, 5);
            worst[j] = v
                .iter()
                .zip(&exact[j])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
        }
        let el = t.elapsed().as_secs_f64();
        let w: Vec<String> = data
            .iter()
            .zip(&worst)
            .map(|((n, _), w)| format!("{n} {w:.4}"))
            .collect();
        println!(
            "{m}x{d} {name:<16} {:>7.1} ms  gaps: {}",
            el * 1e3,
            w.join(", ")
        );
    }
}

fn time_samecov(m: usize, d: usize) {
    let x = null::gaussian_vec(m * d, 1.0, 1);
    for _ in 0..2 {
        let t = Instant::now();
        let y = kmeans::same_covariance_gaussian(&x, m, d, 3);
        println!(
            "same_cov gen {m}x{d}: {:.1} ms ({})",
            t.elapsed().as_secs_f64() * 1e3,
            y.len()
        );
    }
}
