//! Elementwise math for the CPU path: an `exp` and an `erf` that the compiler
//! can vectorise (libm's scalar calls were the largest single cost of the
//! softmaxes and the GELU), and [`vectorized`], which compiles a loop for the
//! widest SIMD level the CPU has (the build itself targets baseline x86-64).

/// `e^x` to about 2 ulp for `x` in [-87, 88] (clamped outside; `-inf` gives ~1e-38,
/// so callers skip masked entries rather than relying on an exact 0).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r on |r| <= ln2/2 (truncation error below 2e-7).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

/// The error function (Abramowitz & Stegun 7.1.26, absolute error below 2e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// GELU with the exact (erf) form, as PyTorch's default `F.gelu`.
#[inline(always)]
pub fn gelu(u: f32) -> f32 {
    0.5 * u * (1.0 + erf(u * FRAC_1_SQRT_2))
}

/// d gelu(u) / du = Phi(u) + u phi(u).
#[inline(always)]
pub fn gelu_grad(u: f32) -> f32 {
    0.5 * (1.0 + erf(u * FRAC_1_SQRT_2)) + u * INV_SQRT_2PI * exp(-0.5 * u * u)
}

/// Runs `f` compiled with AVX-512 (or AVX2 + FMA) enabled when the CPU has
/// it, so the loops inside `f` are vectorised at that width; `f` must be a
/// closure the compiler inlines (every caller passes a short loop).
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2")]
        unsafe fn v4<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("bmi2")
        {
            // SAFETY: the features were detected on this CPU.
            return unsafe { v4(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { v3(f) };
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f32;
        for i in -8700..=8790 {
            let x = i as f32 / 100.0 + 0.003;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
    }

    #[test]
    fn erf_and_gelu_match_their_definitions() {
        // erf against its Taylor series (|x| <= 1.5, 40 terms: exact to f64).
        let series = |x: f64| {
            let (mut s, mut term) = (0.0, x);
            for n in 0..40 {
                s += term / (2 * n + 1) as f64;
                term *= -x * x / (n + 1) as f64;
            }
            s * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -150..=150 {
            let x = i as f64 / 100.0;
            let e = (erf(x as f32) as f64 - series(x)).abs();
            assert!(e < 5e-7, "erf({x}) off by {e}");
        }
        assert_eq!(erf(9.0), 1.0);
        assert_eq!(erf(-9.0), -1.0);
        // gelu_grad is the derivative of gelu (central differences in f64 of the f32 function).
        for i in -40..=40 {
            let u = i as f32 / 10.0 + 0.01;
            let h = 1e-2f32;
            let fd = (gelu(u + h) as f64 - gelu(u - h) as f64) / (2.0 * h as f64);
            let g = gelu_grad(u) as f64;
            assert!((fd - g).abs() < 1e-3, "gelu'({u}): {g} vs {fd}");
        }
    }
}
