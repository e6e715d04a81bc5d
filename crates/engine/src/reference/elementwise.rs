//! Elementwise ops: binary arithmetic (mil-spec 6.3), comparisons (6.4), unary functions, GELU
//! and `clip` (6.5), and `cast` (6.6).
//!
//! Floats: each element is computed in `f64` from the exact input values and rounded once to the
//! output dtype. Integers: computed exactly in `i128`, then wrapped to the dtype's width
//! (two's complement, mil-spec 5.2 item 7).

use super::index::{broadcast_shapes, broadcast_source, numel, unravel};
use super::numeric::{erf, erfc, round_float, saturate_int, wrap_int};
use super::{RefError, Shaped};
use milbridge_mil::diag::DiagCode;
use milbridge_mil::ir::{DType, OpKind};

/// A binary arithmetic function of mil-spec 6.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryFn {
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x * y`.
    Mul,
    /// `x / y` (integers: truncation toward zero, division by zero is R004).
    RealDiv,
    /// `x ^ y` (C `pow` for floats; integers: exact power wrapped, negative exponent is R004).
    Pow,
    /// NaN-propagating maximum; `-0 < +0`.
    Maximum,
    /// NaN-propagating minimum; `-0 < +0`.
    Minimum,
}

impl BinaryFn {
    /// The op kind this function implements.
    pub fn kind(self) -> OpKind {
        match self {
            BinaryFn::Add => OpKind::Add,
            BinaryFn::Sub => OpKind::Sub,
            BinaryFn::Mul => OpKind::Mul,
            BinaryFn::RealDiv => OpKind::RealDiv,
            BinaryFn::Pow => OpKind::Pow,
            BinaryFn::Maximum => OpKind::Maximum,
            BinaryFn::Minimum => OpKind::Minimum,
        }
    }
}

/// A comparison of mil-spec 6.4 (IEEE: any comparison with NaN is false, except `!=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareFn {
    /// `x == y`.
    Equal,
    /// `x != y`.
    NotEqual,
    /// `x > y`.
    Greater,
    /// `x >= y`.
    GreaterEqual,
    /// `x < y`.
    Less,
    /// `x <= y`.
    LessEqual,
}

/// GELU variants (mil-spec 6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluMode {
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Exact,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    TanhApproximation,
    /// `x sigmoid(1.702 x)`.
    SigmoidApproximation,
}

/// A unary function of mil-spec 6.5. Epsilons are the values after conversion to their dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryFn {
    /// `|x|` (integers wrap: `abs(i32::MIN) = i32::MIN`).
    Abs,
    /// `x * x` (integers wrap).
    Square,
    /// `sqrt(x)`.
    Sqrt,
    /// `e^x`.
    Exp,
    /// `erf(x)`.
    Erf,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `max(x, 0)`, with `relu(-0) = +0` and `relu(NaN) = NaN`.
    Relu,
    /// `x * sigmoid(x)`.
    Silu,
    /// `1 / sqrt(x + epsilon)`.
    Rsqrt {
        /// The epsilon operand.
        epsilon: f64,
    },
    /// `ln(x + epsilon)`.
    Log {
        /// The epsilon operand.
        epsilon: f64,
    },
    /// `1 / (x + epsilon)`.
    Inverse {
        /// The epsilon operand.
        epsilon: f64,
    },
    /// GELU in the given mode.
    Gelu(GeluMode),
}

impl UnaryFn {
    /// The op kind this function implements.
    pub fn kind(self) -> OpKind {
        match self {
            UnaryFn::Abs => OpKind::Abs,
            UnaryFn::Square => OpKind::Square,
            UnaryFn::Sqrt => OpKind::Sqrt,
            UnaryFn::Exp => OpKind::Exp,
            UnaryFn::Erf => OpKind::Erf,
            UnaryFn::Tanh => OpKind::Tanh,
            UnaryFn::Sigmoid => OpKind::Sigmoid,
            UnaryFn::Relu => OpKind::Relu,
            UnaryFn::Silu => OpKind::Silu,
            UnaryFn::Rsqrt { .. } => OpKind::Rsqrt,
            UnaryFn::Log { .. } => OpKind::Log,
            UnaryFn::Inverse { .. } => OpKind::Inverse,
            UnaryFn::Gelu(_) => OpKind::Gelu,
        }
    }
}

/// NaN-propagating maximum with `-0 < +0` (IEEE 754-2019 `maximum`).
pub fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // Equal values differ at most in the sign of zero: prefer +0.
        if a.is_sign_positive() { a } else { b }
    } else if a > b {
        a
    } else {
        b
    }
}

/// NaN-propagating minimum with `-0 < +0` (IEEE 754-2019 `minimum`).
pub fn minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// `1 / (1 + e^-x)` without overflow for either sign.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// For each output element, its source positions in x and y.
type SourcePairs = Vec<(usize, usize)>;

/// Pairs of source positions for each output element of `bcast(x_shape, y_shape)`.
fn broadcast_pairs(
    kind: OpKind,
    x_shape: &[usize],
    y_shape: &[usize],
) -> Result<(Vec<usize>, SourcePairs), RefError> {
    let out_shape = broadcast_shapes(&[x_shape, y_shape]).ok_or_else(|| {
        RefError::malformed(
            kind,
            format!("shapes {x_shape:?} and {y_shape:?} do not broadcast"),
        )
    })?;
    let pairs = (0..numel(&out_shape))
        .map(|linear| {
            let index = unravel(linear, &out_shape);
            (
                broadcast_source(&index, x_shape),
                broadcast_source(&index, y_shape),
            )
        })
        .collect();
    Ok((out_shape, pairs))
}

fn check_len(kind: OpKind, name: &str, data: &[f64], shape: &[usize]) -> Result<(), RefError> {
    if data.len() == numel(shape) {
        Ok(())
    } else {
        Err(RefError::malformed(
            kind,
            format!("{name} has {} elements for shape {shape:?}", data.len()),
        ))
    }
}

/// Elementwise binary arithmetic with broadcasting; output dtype `dtype` (that of x and y).
pub fn binary(
    f: BinaryFn,
    dtype: DType,
    x: &[f64],
    x_shape: &[usize],
    y: &[f64],
    y_shape: &[usize],
) -> Result<Shaped, RefError> {
    let kind = f.kind();
    check_len(kind, "x", x, x_shape)?;
    check_len(kind, "y", y, y_shape)?;
    let (out_shape, pairs) = broadcast_pairs(kind, x_shape, y_shape)?;
    let mut out = Vec::with_capacity(pairs.len());
    for (ix, iy) in pairs {
        let (a, b) = (x[ix], y[iy]);
        let value = if dtype.is_int() {
            binary_int(f, dtype, a as i128, b as i128)?
        } else if dtype.is_float() {
            round_float(dtype, binary_float(f, a, b))
        } else {
            return Err(RefError::malformed(
                kind,
                format!("dtype {dtype} is not numeric"),
            ));
        };
        out.push(value);
    }
    Ok((out, out_shape))
}

fn binary_float(f: BinaryFn, a: f64, b: f64) -> f64 {
    match f {
        BinaryFn::Add => a + b,
        BinaryFn::Sub => a - b,
        BinaryFn::Mul => a * b,
        BinaryFn::RealDiv => a / b,
        BinaryFn::Pow => a.powf(b),
        BinaryFn::Maximum => maximum(a, b),
        BinaryFn::Minimum => minimum(a, b),
    }
}

/// Wraps an exact integer to `dtype`'s width, as an `i128`.
fn wrap_i128(dtype: DType, value: i128) -> i128 {
    wrap_int(dtype, value) as i128
}

fn binary_int(f: BinaryFn, dtype: DType, a: i128, b: i128) -> Result<f64, RefError> {
    let exact = match f {
        BinaryFn::Add => a + b,
        BinaryFn::Sub => a - b,
        BinaryFn::Mul => a * b,
        BinaryFn::RealDiv => {
            if b == 0 {
                return Err(RefError::runtime(
                    DiagCode::R004,
                    format!("{dtype} real_div of {a} by zero"),
                ));
            }
            a / b // truncates toward zero
        }
        BinaryFn::Pow => {
            if b < 0 {
                return Err(RefError::runtime(
                    DiagCode::R004,
                    format!("{dtype} pow with negative exponent {b} (base {a})"),
                ));
            }
            // Square-and-multiply, wrapping after every product (equal to wrapping the exact
            // power, since wrapping is a ring homomorphism modulo 2^bits).
            let (mut result, mut base, mut exp) = (1i128, wrap_i128(dtype, a), b);
            while exp > 0 {
                if exp & 1 == 1 {
                    result = wrap_i128(dtype, result * base);
                }
                base = wrap_i128(dtype, base * base);
                exp >>= 1;
            }
            result
        }
        BinaryFn::Maximum => a.max(b),
        BinaryFn::Minimum => a.min(b),
    };
    Ok(wrap_int(dtype, exact))
}

/// Elementwise comparison with broadcasting; the result is bool (0 or 1).
pub fn compare(
    f: CompareFn,
    x: &[f64],
    x_shape: &[usize],
    y: &[f64],
    y_shape: &[usize],
) -> Result<Shaped, RefError> {
    let kind = match f {
        CompareFn::Equal => OpKind::Equal,
        CompareFn::NotEqual => OpKind::NotEqual,
        CompareFn::Greater => OpKind::Greater,
        CompareFn::GreaterEqual => OpKind::GreaterEqual,
        CompareFn::Less => OpKind::Less,
        CompareFn::LessEqual => OpKind::LessEqual,
    };
    check_len(kind, "x", x, x_shape)?;
    check_len(kind, "y", y, y_shape)?;
    let (out_shape, pairs) = broadcast_pairs(kind, x_shape, y_shape)?;
    let out = pairs
        .into_iter()
        .map(|(ix, iy)| {
            let (a, b) = (x[ix], y[iy]);
            let truth = match f {
                CompareFn::Equal => a == b,
                CompareFn::NotEqual => a != b,
                CompareFn::Greater => a > b,
                CompareFn::GreaterEqual => a >= b,
                CompareFn::Less => a < b,
                CompareFn::LessEqual => a <= b,
            };
            f64::from(u8::from(truth))
        })
        .collect();
    Ok((out, out_shape))
}

/// Elementwise unary function; the output has x's dtype. Integer dtypes allow only `abs` and
/// `square`.
pub fn unary(f: UnaryFn, dtype: DType, x: &[f64]) -> Result<Vec<f64>, RefError> {
    if dtype.is_int() {
        return x
            .iter()
            .map(|&value| {
                let value = value as i128;
                match f {
                    UnaryFn::Abs => Ok(wrap_int(dtype, value.abs())),
                    UnaryFn::Square => Ok(wrap_int(dtype, value * value)),
                    _ => Err(RefError::malformed(
                        f.kind(),
                        format!("dtype {dtype} not allowed"),
                    )),
                }
            })
            .collect();
    }
    if !dtype.is_float() {
        return Err(RefError::malformed(
            f.kind(),
            format!("dtype {dtype} not allowed"),
        ));
    }
    Ok(x.iter()
        .map(|&value| round_float(dtype, unary_float(f, value)))
        .collect())
}

/// The exact (`f64`) value of a unary function, before rounding.
pub fn unary_float(f: UnaryFn, x: f64) -> f64 {
    match f {
        UnaryFn::Abs => x.abs(),
        UnaryFn::Square => x * x,
        UnaryFn::Sqrt => x.sqrt(),
        UnaryFn::Exp => x.exp(),
        UnaryFn::Erf => erf(x),
        UnaryFn::Tanh => x.tanh(),
        UnaryFn::Sigmoid => sigmoid(x),
        UnaryFn::Relu => {
            if x > 0.0 || x.is_nan() {
                x
            } else {
                0.0
            }
        }
        UnaryFn::Silu => x * sigmoid(x),
        UnaryFn::Rsqrt { epsilon } => 1.0 / (x + epsilon).sqrt(),
        UnaryFn::Log { epsilon } => (x + epsilon).ln(),
        UnaryFn::Inverse { epsilon } => 1.0 / (x + epsilon),
        UnaryFn::Gelu(mode) => gelu(mode, x),
    }
}

/// GELU in `f64`, in forms free of cancellation: `0.5 x (1 + erf(x/sqrt2)) = 0.5 x erfc(-x/sqrt2)`
/// and `0.5 x (1 + tanh(u)) = x sigmoid(2u)`.
pub fn gelu(mode: GeluMode, x: f64) -> f64 {
    match mode {
        GeluMode::Exact => 0.5 * x * erfc(-x / std::f64::consts::SQRT_2),
        GeluMode::TanhApproximation => {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            x * sigmoid(2.0 * inner)
        }
        GeluMode::SigmoidApproximation => x * sigmoid(1.702 * x),
    }
}

/// `min(max(x, alpha), beta)`, NaN-propagating (mil-spec 6.5 `clip`).
pub fn clip(dtype: DType, x: &[f64], alpha: f64, beta: f64) -> Result<Vec<f64>, RefError> {
    if !dtype.is_float() {
        return Err(RefError::malformed(
            OpKind::Clip,
            format!("dtype {dtype} not allowed"),
        ));
    }
    Ok(x.iter()
        .map(|&value| round_float(dtype, minimum(maximum(value, alpha), beta)))
        .collect())
}

/// Converts values of dtype `from` to dtype `to` (mil-spec 6.6): float to float rounds to
/// nearest even (overflow to inf); float to integer truncates toward zero and saturates, NaN to
/// 0; integer to float rounds to nearest; integer to integer wraps; to bool is `x != 0` (NaN is
/// true); bool to numeric is 0 or 1.
pub fn cast(from: DType, to: DType, x: &[f64]) -> Result<Vec<f64>, RefError> {
    let numeric = |dtype: DType| dtype.is_float() || dtype.is_int() || dtype == DType::Bool;
    if !numeric(from) || !numeric(to) {
        return Err(RefError::malformed(
            OpKind::Cast,
            format!("cannot cast {from} to {to}"),
        ));
    }
    Ok(x.iter()
        .map(|&value| {
            if to.is_float() || to == DType::Bool {
                round_float(to, value)
            } else if from.is_float() {
                saturate_int(to, value)
            } else {
                wrap_int(to, value as i128)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|value| value.to_bits()).collect()
    }

    #[test]
    fn broadcasting_add_rank_0_to_4() {
        let (out, shape) =
            binary(BinaryFn::Sub, DType::Fp32, &[1.0], &[], &[0.25, 2.0], &[2]).unwrap();
        assert_eq!((out, shape), (vec![0.75, -1.0], vec![2]));
        // [1,2,1,3] * [1,1,1,3] (RMS scaling pattern) and [2,1] + [3] -> [2,3].
        let x: Vec<f64> = (0..6).map(f64::from).collect();
        let (out, shape) = binary(
            BinaryFn::Mul,
            DType::Fp16,
            &x,
            &[1, 2, 1, 3],
            &[1.0, 2.0, 3.0],
            &[1, 1, 1, 3],
        )
        .unwrap();
        assert_eq!(shape, vec![1, 2, 1, 3]);
        assert_eq!(out, vec![0.0, 2.0, 6.0, 3.0, 8.0, 15.0]);
        let (out, shape) = binary(
            BinaryFn::Add,
            DType::Int32,
            &[10.0, 20.0],
            &[2, 1],
            &[1.0, 2.0, 3.0],
            &[3],
        )
        .unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![11.0, 12.0, 13.0, 21.0, 22.0, 23.0]);
        let err = binary(BinaryFn::Add, DType::Fp32, &[0.0; 3], &[3], &[0.0; 4], &[4]);
        assert!(matches!(err, Err(RefError::Malformed { .. })));
        // Rank 5 with size-1 dims on both sides.
        let (out, shape) = binary(
            BinaryFn::Add,
            DType::Fp32,
            &[1.0, 2.0],
            &[2, 1, 1, 1, 1],
            &[10.0, 20.0],
            &[1, 1, 1, 1, 2],
        )
        .unwrap();
        assert_eq!(shape, vec![2, 1, 1, 1, 2]);
        assert_eq!(out, vec![11.0, 21.0, 12.0, 22.0]);
    }

    #[test]
    fn fp16_overflow_and_rounding() {
        let (out, _) = binary(BinaryFn::Add, DType::Fp16, &[65504.0], &[], &[16.0], &[]).unwrap();
        assert_eq!(out, vec![f64::INFINITY]);
        let (out, _) = binary(BinaryFn::Add, DType::Fp16, &[65504.0], &[], &[15.9], &[]).unwrap();
        assert_eq!(out, vec![65504.0]);
        // -65504 + -16 rounds to -inf (mil-spec 6.3, mask hazard).
        let (out, _) = binary(BinaryFn::Add, DType::Fp16, &[-65504.0], &[], &[-16.0], &[]).unwrap();
        assert_eq!(out, vec![f64::NEG_INFINITY]);
        // 1 + 2^-11 is a tie in fp16: to even (1.0); in fp32 exact.
        let tiny = 2f64.powi(-11);
        let (out, _) = binary(BinaryFn::Add, DType::Fp16, &[1.0], &[], &[tiny], &[]).unwrap();
        assert_eq!(out, vec![1.0]);
        let (out, _) = binary(BinaryFn::Add, DType::Fp32, &[1.0], &[], &[tiny], &[]).unwrap();
        assert_eq!(out, vec![1.0 + tiny]);
        // Subnormal products stay subnormal: 2^-12 * 2^-12 = 2^-24.
        let (out, _) = binary(
            BinaryFn::Mul,
            DType::Fp16,
            &[2f64.powi(-12)],
            &[],
            &[2f64.powi(-12)],
            &[],
        )
        .unwrap();
        assert_eq!(out, vec![2f64.powi(-24)]);
    }

    #[test]
    fn division_and_pow_edges() {
        let (out, _) = binary(
            BinaryFn::RealDiv,
            DType::Fp32,
            &[1.0, -1.0, 0.0],
            &[3],
            &[0.0, 0.0, 0.0],
            &[3],
        )
        .unwrap();
        assert_eq!(out[..2], [f64::INFINITY, f64::NEG_INFINITY]);
        assert!(out[2].is_nan());
        let (out, _) = binary(
            BinaryFn::Pow,
            DType::Fp16,
            &[0.0, f64::NAN, -8.0, 2f64.powi(-24), 4.0],
            &[5],
            &[-0.5, 0.0, 1.0 / 3.0, -0.5, -0.5],
            &[5],
        )
        .unwrap();
        assert_eq!(out[0], f64::INFINITY);
        assert_eq!(out[1], 1.0);
        assert!(out[2].is_nan());
        assert_eq!(out[3], 4096.0);
        assert_eq!(out[4], 0.5);
    }

    #[test]
    fn integer_arithmetic_wraps_and_reports() {
        let max = f64::from(i32::MAX);
        let (out, _) = binary(BinaryFn::Add, DType::Int32, &[max], &[], &[1.0], &[]).unwrap();
        assert_eq!(out, vec![f64::from(i32::MIN)]);
        let (out, _) = binary(
            BinaryFn::Mul,
            DType::Int32,
            &[65536.0],
            &[],
            &[65537.0],
            &[],
        )
        .unwrap();
        assert_eq!(out, vec![65536.0]);
        let (out, _) = binary(
            BinaryFn::RealDiv,
            DType::Int32,
            &[-7.0, 7.0],
            &[2],
            &[2.0],
            &[],
        )
        .unwrap();
        assert_eq!(out, vec![-3.0, 3.0]);
        let (out, _) = binary(
            BinaryFn::Pow,
            DType::Int32,
            &[3.0, 2.0, 0.0],
            &[3],
            &[4.0, 31.0, 0.0],
            &[3],
        )
        .unwrap();
        assert_eq!(out, vec![81.0, f64::from(i32::MIN), 1.0]);
        let err = binary(BinaryFn::RealDiv, DType::Int32, &[1.0], &[], &[0.0], &[]).unwrap_err();
        assert_eq!(err.code(), DiagCode::R004);
        let err = binary(BinaryFn::Pow, DType::Int32, &[2.0], &[], &[-1.0], &[]).unwrap_err();
        assert_eq!(err.code(), DiagCode::R004);
        let (out, _) = binary(
            BinaryFn::Minimum,
            DType::Int32,
            &[-5.0, 5.0],
            &[2],
            &[0.0],
            &[],
        )
        .unwrap();
        assert_eq!(out, vec![-5.0, 0.0]);
    }

    #[test]
    fn maximum_minimum_nan_and_signed_zero() {
        let nan = f64::NAN;
        let (out, _) = binary(
            BinaryFn::Maximum,
            DType::Fp32,
            &[nan, 1.0, -0.0, 0.0, f64::NEG_INFINITY],
            &[5],
            &[1.0, nan, 0.0, -0.0, -3.0],
            &[5],
        )
        .unwrap();
        assert!(out[0].is_nan() && out[1].is_nan());
        assert_eq!(bits(&out[2..]), bits(&[0.0, 0.0, -3.0]));
        let (out, _) = binary(
            BinaryFn::Minimum,
            DType::Fp32,
            &[-0.0, 0.0, nan],
            &[3],
            &[0.0, -0.0, 2.0],
            &[3],
        )
        .unwrap();
        assert_eq!(bits(&out[..2]), bits(&[-0.0, -0.0]));
        assert!(out[2].is_nan());
    }

    #[test]
    fn comparisons_follow_ieee() {
        let nan = f64::NAN;
        let x = [1.0, nan, 2.0, -0.0];
        let y = [1.0, nan, 1.0, 0.0];
        let run = |f| compare(f, &x, &[4], &y, &[4]).unwrap().0;
        assert_eq!(run(CompareFn::Equal), vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(run(CompareFn::NotEqual), vec![0.0, 1.0, 1.0, 0.0]);
        assert_eq!(run(CompareFn::Greater), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(run(CompareFn::GreaterEqual), vec![1.0, 0.0, 1.0, 1.0]);
        assert_eq!(run(CompareFn::Less), vec![0.0, 0.0, 0.0, 0.0]);
        assert_eq!(run(CompareFn::LessEqual), vec![1.0, 0.0, 0.0, 1.0]);
        let (out, shape) = compare(CompareFn::Less, &[1.0, 2.0], &[2, 1], &[1.5], &[1]).unwrap();
        assert_eq!((out, shape), (vec![1.0, 0.0], vec![2, 1]));
    }

    #[test]
    fn unary_values() {
        let run = |f, dtype, x: &[f64]| unary(f, dtype, x).unwrap();
        assert_eq!(
            run(UnaryFn::Abs, DType::Fp16, &[-2.5, -0.0]),
            vec![2.5, 0.0]
        );
        assert!(run(UnaryFn::Abs, DType::Fp16, &[-0.0])[0].is_sign_positive());
        assert_eq!(
            run(UnaryFn::Abs, DType::Int32, &[f64::from(i32::MIN), -3.0]),
            vec![f64::from(i32::MIN), 3.0]
        );
        assert_eq!(
            run(UnaryFn::Square, DType::Fp16, &[256.0, 255.875]),
            vec![f64::INFINITY, 65472.0]
        );
        assert_eq!(run(UnaryFn::Square, DType::Int32, &[65536.0]), vec![0.0]);
        assert!(run(UnaryFn::Sqrt, DType::Fp32, &[-1.0])[0].is_nan());
        assert!(run(UnaryFn::Sqrt, DType::Fp32, &[-0.0])[0].is_sign_negative());
        assert_eq!(
            run(UnaryFn::Exp, DType::Fp16, &[11.1, 0.0, -18.0]),
            vec![f64::INFINITY, 1.0, 0.0]
        );
        // e^-17 = 4.14e-8 rounds to the smallest fp16 subnormal 2^-24 = 5.96e-8.
        assert_eq!(
            run(UnaryFn::Exp, DType::Fp16, &[-17.0]),
            vec![2f64.powi(-24)]
        );
        assert_eq!(
            run(UnaryFn::Relu, DType::Fp32, &[-0.0, -3.0, 2.0]),
            vec![0.0, 0.0, 2.0]
        );
        assert!(run(UnaryFn::Relu, DType::Fp32, &[-0.0])[0].is_sign_positive());
        assert!(run(UnaryFn::Relu, DType::Fp32, &[f64::NAN])[0].is_nan());
        assert_eq!(
            run(UnaryFn::Sigmoid, DType::Fp32, &[0.0, 1000.0, -1000.0]),
            vec![0.5, 1.0, 0.0]
        );
        assert_eq!(
            run(UnaryFn::Tanh, DType::Fp16, &[20.0, -20.0]),
            vec![1.0, -1.0]
        );
        let silu = run(UnaryFn::Silu, DType::Fp32, &[1.0])[0];
        assert_eq!(silu, f64::from((1.0f64 / (1.0 + (-1.0f64).exp())) as f32));
        assert!(unary(UnaryFn::Exp, DType::Int32, &[1.0]).is_err());
    }

    #[test]
    fn epsilon_ops() {
        // fp16 rsqrt default epsilon 1e-12 underflows to 0 (converted by the caller): rsqrt(0)=inf.
        let eps = round_float(DType::Fp16, 1e-12);
        assert_eq!(eps, 0.0);
        assert_eq!(
            unary(UnaryFn::Rsqrt { epsilon: eps }, DType::Fp16, &[0.0, 4.0]).unwrap(),
            vec![f64::INFINITY, 0.5]
        );
        let log = unary(
            UnaryFn::Log { epsilon: 0.0 },
            DType::Fp32,
            &[0.0, -1.0, 1.0],
        )
        .unwrap();
        assert_eq!(log[0], f64::NEG_INFINITY);
        assert!(log[1].is_nan());
        assert_eq!(log[2], 0.0);
        let eps = round_float(DType::Fp16, 1e-4);
        assert_eq!(eps, 1.000_165_939_331_054_7e-4);
        let inv = unary(UnaryFn::Inverse { epsilon: eps }, DType::Fp16, &[-eps, 1.0]).unwrap();
        assert_eq!(
            inv,
            vec![f64::INFINITY, round_float(DType::Fp16, 1.0 / (1.0 + eps))]
        );
    }

    #[test]
    fn gelu_modes() {
        let x = [1.0, -1.0, 0.0, -10.0, 3.0];
        let exact = unary(UnaryFn::Gelu(GeluMode::Exact), DType::Fp32, &x).unwrap();
        // 0.5 * (1 + erf(1/sqrt 2)) = Phi(1) = 0.8413447460685429.
        assert_eq!(exact[0], round_float(DType::Fp32, 0.841_344_746_068_542_9));
        assert_eq!(
            exact[1],
            round_float(DType::Fp32, -0.158_655_253_931_457_05)
        );
        assert_eq!(exact[2], 0.0);
        // -10 * Phi(-10) = -7.619853024160593e-23: a normal fp32 number, not 0.
        assert_eq!(
            exact[3],
            round_float(DType::Fp32, -7.619_853_024_160_593e-23)
        );
        let tanh = gelu(GeluMode::TanhApproximation, 1.0);
        let direct = 0.5 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * 1.044715f64).tanh());
        assert!((tanh - direct).abs() < 1e-15);
        let sigm = gelu(GeluMode::SigmoidApproximation, 2.0);
        assert!((sigm - 2.0 / (1.0 + (-3.404f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn clip_values() {
        let out = clip(DType::Fp16, &[-5.0, 0.5, 5.0, f64::NAN], -1.0, 1.0).unwrap();
        assert_eq!(out[..3], [-1.0, 0.5, 1.0]);
        assert!(out[3].is_nan());
        // alpha > beta: the formula gives beta.
        assert_eq!(clip(DType::Fp32, &[0.0], 2.0, 1.0).unwrap(), vec![1.0]);
    }

    #[test]
    fn cast_rules() {
        let x = [2.9, -2.9, 1e10, -1e10, f64::NAN, 0.0];
        assert_eq!(
            cast(DType::Fp32, DType::Int32, &x).unwrap(),
            vec![
                2.0,
                -2.0,
                f64::from(i32::MAX),
                f64::from(i32::MIN),
                0.0,
                0.0
            ]
        );
        assert_eq!(
            cast(DType::Fp16, DType::Uint8, &[300.0, -1.0]).unwrap(),
            vec![255.0, 0.0]
        );
        assert_eq!(
            cast(DType::Fp16, DType::Int8, &[-200.5]).unwrap(),
            vec![-128.0]
        );
        assert_eq!(
            cast(DType::Fp32, DType::Fp16, &[70000.0, 1e-8]).unwrap(),
            vec![f64::INFINITY, 0.0]
        );
        assert_eq!(
            cast(DType::Int32, DType::Fp16, &[65519.0, 65520.0, 2049.0]).unwrap(),
            vec![65504.0, f64::INFINITY, 2048.0]
        );
        assert_eq!(
            cast(DType::Int32, DType::Int8, &[200.0, -129.0]).unwrap(),
            vec![-56.0, 127.0]
        );
        assert_eq!(
            cast(DType::Int32, DType::Uint8, &[-1.0, 256.0]).unwrap(),
            vec![255.0, 0.0]
        );
        assert_eq!(
            cast(DType::Fp32, DType::Bool, &[0.0, -0.0, 0.5, f64::NAN]).unwrap(),
            vec![0.0, 0.0, 1.0, 1.0]
        );
        assert_eq!(
            cast(DType::Bool, DType::Fp16, &[1.0, 0.0]).unwrap(),
            vec![1.0, 0.0]
        );
        assert_eq!(
            cast(DType::Fp16, DType::Fp32, &[2f64.powi(-24)]).unwrap(),
            vec![2f64.powi(-24)]
        );
        assert!(cast(DType::String, DType::Fp32, &[]).is_err());
    }
}
