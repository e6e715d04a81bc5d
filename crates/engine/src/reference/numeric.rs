//! Scalar numerics of the reference: rounding an exact `f64` result to a storage dtype once, the
//! integer wrap-around of mil-spec 5.2 item 7, and a self-contained `erf`/`erfc`.
//!
//! Everything here is written for obviousness, not speed: [`round_binary`] rounds by scaling to
//! an integer count of ulps and calling `round_ties_even`, which is exact because scaling by a
//! power of two is exact.

use milbridge_mil::ir::DType;

/// Rounds `x` to the nearest value of a binary floating-point format with `precision`
/// significand bits (hidden bit included), minimum normal exponent `emin` and largest finite
/// value `max_finite`, ties to even, overflowing to infinity (IEEE 754 round-to-nearest-even).
///
/// NaN, infinities and zeros (with their sign) pass through unchanged. Subnormal results keep
/// their reduced precision (no flush to zero).
pub fn round_binary(x: f64, precision: i32, emin: i32, max_finite: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let magnitude = x.abs();
    // floor(log2(magnitude)) from the bits; f64 subnormals are far below any target's range.
    let biased = ((magnitude.to_bits() >> 52) & 0x7ff) as i32;
    let exponent = if biased == 0 { -1075 } else { biased - 1023 };
    let quantum = pow2(exponent.max(emin) - (precision - 1));
    let rounded = (magnitude / quantum).round_ties_even() * quantum;
    let rounded = if rounded > max_finite {
        f64::INFINITY
    } else {
        rounded
    };
    rounded.copysign(x)
}

/// `2^exp` exactly, for exponents in f64's normal range.
fn pow2(exp: i32) -> f64 {
    debug_assert!(
        (-1022..=1023).contains(&exp),
        "pow2 exponent {exp} in the normal range"
    );
    f64::from_bits(((exp + 1023) as u64) << 52)
}

/// Largest finite fp16 value.
pub const F16_MAX: f64 = 65504.0;

/// Rounds to the nearest fp16 value (ties to even, overflow to ±inf, subnormals kept). Unlike
/// `half::f16::from_f64` (which may round through f32 or ignore the low mantissa bits of the
/// f64), this rounds the exact `f64` once.
pub fn round_f16(x: f64) -> f64 {
    round_binary(x, 11, -14, F16_MAX)
}

/// Rounds to the nearest bf16 value.
pub fn round_bf16(x: f64) -> f64 {
    round_binary(x, 8, -126, f64::from(half::bf16::MAX))
}

/// Rounds to the nearest fp32 value (Rust's `as f32` is IEEE round-to-nearest-even).
pub fn round_f32(x: f64) -> f64 {
    f64::from(x as f32)
}

/// Wraps an exact integer result to `dtype`'s width (two's complement for signed types, modulo
/// `2^bits` for unsigned ones), mil-spec 5.2 item 7. `dtype` must be an integer type.
pub fn wrap_int(dtype: DType, value: i128) -> f64 {
    let (lo, hi) = dtype
        .int_range()
        .expect("wrap_int: dtype is an integer type");
    let modulus = hi - lo + 1;
    let wrapped = (value - lo).rem_euclid(modulus) + lo;
    wrapped as f64
}

/// Converts a float to an integer dtype: truncation toward zero, saturation at the dtype's
/// range, NaN to 0 (the recommendation of mil-spec 6.6).
pub fn saturate_int(dtype: DType, value: f64) -> f64 {
    let (lo, hi) = dtype
        .int_range()
        .expect("saturate_int: dtype is an integer type");
    if value.is_nan() {
        return 0.0;
    }
    value.trunc().clamp(lo as f64, hi as f64)
}

/// Stores an exactly computed result in a float or bool dtype: rounds once to fp16/bf16/fp32
/// (fp64 unchanged), maps bool to 0/1 by `x != 0` (NaN is true). Integer dtypes are handled by
/// [`wrap_int`] or [`saturate_int`], never here.
pub fn round_float(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::Fp16 => round_f16(x),
        DType::Bf16 => round_bf16(x),
        DType::Fp32 => round_f32(x),
        DType::Fp64 => x,
        DType::Bool => f64::from(u8::from(x != 0.0)),
        other => panic!("round_float: {other} is a float or bool dtype (the caller checked)"),
    }
}

/// The error function, accurate to a few f64 ulps.
///
/// For `|x| < 2` the everywhere-positive series
/// `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))` (no cancellation);
/// beyond, `1 - erfc(x)` with the continued fraction of [`erfc`].
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 2.0 {
        erf_series(x)
    } else {
        1.0 - erfc_continued_fraction(x)
    }
}

/// The complementary error function `1 - erf(x)`, accurate in relative terms for large `x`
/// (needed by exact GELU of large negative inputs).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        1.0 - erf_series(x)
    } else {
        erfc_continued_fraction(x)
    }
}

/// `exp(-x*x)` with `x*x` split into an exact sum (FMA), so large `x` loses no accuracy.
fn exp_minus_square(x: f64) -> f64 {
    let hi = x * x;
    // e^{-746} is below half the smallest subnormal, and |lo| ≤ 2⁻⁵³·hi cannot lift the
    // result above it. Past this point the split's own terms misbehave: for |x| ≳ 1e19,
    // e^{-lo} overflows while e^{-hi} is 0 (0 · inf = NaN).
    if hi > 746.0 {
        return 0.0;
    }
    let lo = x.mul_add(x, -hi);
    (-hi).exp() * (-lo).exp()
}

fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    // Terms grow until 2n+1 > 2x^2 (at most 8 here), then fall geometrically.
    while term > 1e-18 * sum {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * exp_minus_square(x) * sum
}

fn erfc_continued_fraction(x: f64) -> f64 {
    // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))),
    // evaluated from a deep tail; for x >= 2, 100 levels converge to f64 precision.
    let mut denominator = x;
    for k in (1..=100).rev() {
        denominator = x + f64::from(k) / 2.0 / denominator;
    }
    exp_minus_square(x) / (std::f64::consts::PI.sqrt() * denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn f16_rounding_ties_overflow_subnormals() {
        assert_eq!(round_f16(1.0 + 2f64.powi(-11)), 1.0); // tie to even (down)
        assert_eq!(
            round_f16(1.0 + 3.0 * 2f64.powi(-11)),
            1.0 + 2.0 * 2f64.powi(-10)
        ); // tie up
        assert_eq!(
            round_f16(1.0 + 2f64.powi(-11) + 2f64.powi(-40)),
            1.0 + 2f64.powi(-10)
        );
        assert_eq!(round_f16(65504.0), 65504.0);
        assert_eq!(round_f16(65519.99), 65504.0);
        assert_eq!(round_f16(65520.0), f64::INFINITY);
        assert_eq!(round_f16(-1e9), f64::NEG_INFINITY);
        assert_eq!(round_f16(1e-5), 168.0 * 2f64.powi(-24)); // subnormal, mil-spec 5.2 item 5
        assert_eq!(round_f16(2f64.powi(-25)), 0.0); // tie to even: 0
        assert_eq!(round_f16(3.0 * 2f64.powi(-26)), 2f64.powi(-24));
        assert!(round_f16(-2f64.powi(-26)).is_sign_negative());
        assert!(round_f16(f64::NAN).is_nan());
        assert_eq!(round_f16(f64::MIN_POSITIVE / 4.0), 0.0);
    }

    #[test]
    fn f16_rounding_matches_half_on_f32_values() {
        // For values exact in f32, half's conversion is correctly rounded; compare bit patterns.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = f32::from_bits((state >> 32) as u32);
            if value.is_nan() {
                continue;
            }
            let want = f16::from_f32(value).to_f64();
            assert_eq!(
                round_f16(f64::from(value)).to_bits(),
                want.to_bits(),
                "{value:e}"
            );
        }
    }

    #[test]
    fn generic_rounding_agrees_with_f32_cast() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = f64::from_bits(state);
            if !value.is_finite() || value.abs() > 1e39 || value.abs() < 1e-47 {
                continue;
            }
            let generic = round_binary(value, 24, -126, f64::from(f32::MAX));
            assert_eq!(generic.to_bits(), round_f32(value).to_bits(), "{value:e}");
        }
    }

    #[test]
    fn integer_wrap_and_saturation() {
        assert_eq!(
            wrap_int(DType::Int32, i128::from(i32::MAX) + 1),
            f64::from(i32::MIN)
        );
        assert_eq!(
            wrap_int(DType::Int32, -(1i128 << 31) - 1),
            f64::from(i32::MAX)
        );
        assert_eq!(wrap_int(DType::Uint8, -1), 255.0);
        assert_eq!(wrap_int(DType::Int8, 200), -56.0);
        assert_eq!(saturate_int(DType::Int8, 1000.7), 127.0);
        assert_eq!(saturate_int(DType::Int8, -2.9), -2.0);
        assert_eq!(saturate_int(DType::Uint8, -1.5), 0.0);
        assert_eq!(saturate_int(DType::Int32, f64::NAN), 0.0);
        assert_eq!(
            saturate_int(DType::Int32, f64::INFINITY),
            f64::from(i32::MAX)
        );
    }

    #[test]
    fn erf_known_values() {
        // Reference values from the closed-form tables (15+ significant digits).
        assert!(close(erf(0.5), 0.520_499_877_813_046_5, 1e-15));
        assert!(close(erf(1.0), 0.842_700_792_949_714_9, 1e-15));
        assert!(close(erf(1.999), 0.995_301_556_651_370_5, 1e-14));
        assert!(close(erf(2.5), 0.999_593_047_982_555, 1e-15));
        assert!(close(erf(-1.0), -0.842_700_792_949_714_9, 1e-15));
        assert!(close(erf(1e-10), 1.128_379_167_095_512_6e-10, 1e-15));
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(6.0), 1.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(close(erfc(3.0), 2.209_049_699_858_544e-5, 1e-13));
        assert!(close(erfc(5.0), 1.537_459_794_428_035e-12, 1e-13));
        assert!(close(erfc(10.0), 2.088_487_583_762_545e-45, 1e-13));
        assert!(close(erfc(-1.0), 1.842_700_792_949_715, 1e-15));
        assert!(erf(f64::NAN).is_nan());
        // Arguments whose square is finite but whose FMA split is not (|x| ≳ 1e19): the
        // tails are 0 and 2, not NaN (exact gelu of ±3e38 reads these).
        for x in [27.5, 1e10, 1e19, 2.1e38, 1e300, f64::MAX] {
            assert_eq!(erfc(x), 0.0, "erfc({x})");
            assert_eq!(erfc(-x), 2.0, "erfc(-{x})");
            assert_eq!(erf(x), 1.0, "erf({x})");
            assert_eq!(erf(-x), -1.0, "erf(-{x})");
        }
    }
}
