//! What the CPU kernels that rely on the compiler's vectorization share: which vector width this CPU offers
//! (each kernel is compiled once per width and picks one at run time), and an `e^x` in f32 that vectorizes.
//! std's `exp` is a libm call per element that does not; the softmax of attention and the activations of the
//! MLPs each call it millions of times per prompt.

/// AVX2 and FMA: the 256-bit builds.
#[cfg(target_arch = "x86_64")]
pub fn avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// AVX-512F besides AVX2 and FMA: the 512-bit builds. Loops keep their order of operations when compiled for
/// them (Rust neither reassociates nor contracts into FMAs), so they give the bits of the 256-bit build; only
/// the vector width differs.
#[cfg(target_arch = "x86_64")]
pub fn avx512() -> bool {
    is_x86_feature_detected!("avx512f") && avx2()
}

/// `e^x` within 2 ulp of std's for `x` in [-87.3, 88] (Cody–Waite reduction to `x = n·ln2 + r`, Cephes' degree-6
/// polynomial for `e^r`); below that about 1e-38 (a softmax cannot tell it from 0), above it `e^88`; NaN gives
/// about 1e-38 (the clamps are compare-and-select), so callers that may see NaN keep it by another route.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // compare-and-select rather than clamp or max, which handle NaN with branches that do not vectorize
    let x = if x > -87.3 { x } else { -87.3 };
    let x = if x < 88.0 { x } else { 88.0 };
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the bits of `shifted` (ROUND + n: n in its low mantissa bits), so no float-to-int conversion,
    // which Rust saturates with scalar code
    let two_n = f32::from_bits(shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    y * two_n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_std_over_its_range() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, std {want}");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(f32::INFINITY) > 1e38);
    }
}
