//! The verdict's calibration over many seeds (docs/MEASURES.md,
//! "Calibration"): false positives on Gaussian nulls of two shapes and
//! detection of each planted effect, as a Markdown table.
//!
//! cargo run --release -p resid-analysis --example calibrate [SEEDS]   (default 100)

#[path = "../tests/common/calibration.rs"]
mod calibration;
use calibration::{gpt2_like, llama_like, rates, Effect};

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let names = [
        "low-rank",
        "row-sparse",
        "column-sparse",
        "decay-like",
        "sparse",
        "smooth",
        "coordinated",
        "clustered",
    ];
    println!("| data | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(names.len()));
    let t = std::time::Instant::now();
    let row = |label: &str, r: std::collections::BTreeMap<&str, usize>, target: &str| {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                let v = r.get(n).copied().unwrap_or(0);
                let pct = 100.0 * v as f64 / seeds as f64;
                if *n == target {
                    format!("**{pct:.0}%**")
                } else {
                    format!("{pct:.0}%")
                }
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row(
        "Gaussian null, gpt2-like",
        rates(&gpt2_like(true), Effect::None, 0..seeds),
        "",
    );
    row(
        "Gaussian null, llama-like",
        rates(&llama_like(), Effect::None, 0..seeds),
        "",
    );
    for e in Effect::PLANTED {
        let r = rates(&gpt2_like(e == Effect::Rows50), e, 1000..1000 + seeds);
        row(&format!("{e:?}"), r, e.hypothesis());
    }
    eprintln!("{seeds} seeds per row, {:.1} s", t.elapsed().as_secs_f64());
}
