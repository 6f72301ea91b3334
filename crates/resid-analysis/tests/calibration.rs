//! Calibration on few seeds (the 100-seed figures: examples/calibrate.rs,
//! in BENCHMARKS.md): no hypothesis on Gaussian nulls of two shapes, and
//! each planted effect detected as its own hypothesis.

mod common;
use common::calibration::{gpt2_like, llama_like, rates, Effect};

const SEEDS: u64 = 8;

#[test]
fn gaussian_nulls_support_nothing() {
    for (name, shapes) in [("gpt2-like", gpt2_like(true)), ("llama-like", llama_like())] {
        let r = rates(&shapes, Effect::None, 0..SEEDS);
        for (h, n) in r {
            assert_eq!(n, 0, "{name}: {h} supported on {n} of {SEEDS} nulls");
        }
    }
}

#[test]
fn planted_effects_are_detected() {
    for e in Effect::PLANTED {
        let shapes = gpt2_like(e == Effect::Rows50);
        let r = rates(&shapes, e, 100..100 + SEEDS);
        let hit = r[e.hypothesis()];
        assert!(
            hit as u64 == SEEDS,
            "{e:?}: {} on {hit} of {SEEDS}",
            e.hypothesis()
        );
    }
}
