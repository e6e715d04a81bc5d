//! Streaming elementwise kernels over contiguous runs, for the engine's per-op steps: binary
//! arithmetic with an optional splatted (broadcast) operand, unary functions, row sums and
//! maxima, and the row-at-a-time accumulation of reductions over a strided axis.
//!
//! | function | computes | kernel name |
//! |---|---|---|
//! | [`binary`] | `out = a ∘ b` for `∘` in add, sub, mul, div, IEEE 754-2019 maximum and minimum; `a` or `b` may be one splatted value | `<isa>_<op>_<dtype>_<lanes>n` |
//! | [`unary`] | `out = f(x)` for the [`UnaryOp`]s (abs, square, sqrt, relu, clip, identity, rsqrt, inverse, exp, sigmoid, silu, cube, gelu's tanh and sigmoid approximations, `log(x + ε)`, tanh) | `<isa>_<op>_<dtype>_<lanes>n` ([`unary_kernel_name`]) |
//! | [`sum`], [`max`] | `Σ x`, `max x` in f32 | `<isa>_reduce{sum,mean,max}_<dtype>_<lanes>n` ([`reduce_kernel_name`]) |
//! | [`accumulate`] | `acc[i] = acc[i] + x[i]` or the NaN-propagating `max` (a vertical step of a reduction over a non-innermost axis) | as [`sum`], [`max`] |
//! | [`accumulate_exp`], [`exp_scale`] | `acc[i] += e^(x[i] - shift[i])`, `out[i] = e^(x[i] - shift[i])·scale[i]` (the rows of a softmax over a non-innermost axis) | `<isa>_softmaxcolumns_<dtype>_<lanes>n` ([`softmax_columns_kernel_name`]) |
//!
//! # Error bounds
//!
//! [`binary`] is exact IEEE arithmetic (maximum and minimum: NaN-propagating with the default
//! NaN, `-0 < +0`): one f32 operation per element, rounded once to the
//! storage type with round-to-nearest-even (`vcvtps2ph` on the x86 tiers, `half`'s correctly
//! rounded conversion on the generic tier), so every tier gives the same bits as scalar Rust
//! `f32` arithmetic followed by `f16::from_f32` (NaN payloads aside). So are [`accumulate`]
//! (one f32 addition, or an exact maximum, per element and call: summing rows in a given
//! order gives the bits of the scalar loop in that order), [`max`] (which of `±0` aside), and
//! the [`UnaryOp::is_exact`] ops of [`unary`]: abs, square, sqrt, relu, identity,
//! `inverse` with ε = 0 (the correctly rounded f32 results) and clip (IEEE 754-2019
//! `minimum(maximum(x, lo), hi)`, NaN-propagating, `-0 < +0`). [`sum`] accumulates in
//! f32 over `4·lanes` independent partial sums, so its error is at most
//! `(len/(4·lanes) + log2(4·lanes))·2⁻²⁴·Σ|xᵢ|` (below the `len·2⁻²⁴·Σ|xᵢ|` of an in-order sum).
//! The other unary ops, in f32 ulps of the exact result before the storage rounding (checked
//! by dense sweeps in this module's tests): `rsqrt` ≤ [`UNARY_RSQRT_ULPS`], `inverse` with
//! ε ≠ 0 ≤ [`UNARY_INVERSE_ULPS`], `exp` ≤ [`UNARY_EXP_ULPS`] (overflow to +inf above about
//! 88.72, gradual underflow, results below 2⁻¹²⁶ within 2⁻¹²⁶ absolute), `sigmoid` one ulp
//! and `silu` two ulps more than `exp` for `x ≥ -87` (below, results under 2⁻¹²⁶ absolute);
//! all of them map NaN to NaN and ±inf to their limits. `cube` is two f32 products: within
//! [`UNARY_CUBE_ULPS`] (results below 2⁻¹²⁶ within 2⁻¹⁴⁹ absolute), and exact before the
//! storage rounding for f16 storage (the product of three f16 values fits in 33 bits; the
//! square, 22, is exact). The gelu approximations are `x/(1 + e⁻ᶻ)` within [`GELU_ULPS`] plus
//! [`GELU_ULPS_PER_Z`]`·|z|` ulps. `log(x + ε)` (the sum kept exact by a two-sum
//! correction) is within [`UNARY_LOG_ULPS`] over every binade, subnormals included; `tanh`
//! within [`UNARY_TANH_ULPS`]; both exact on their special values (`log`: `-inf` at 0, NaN
//! below, `+inf` at `+inf`; `tanh`: signed zeros, subnormals, `±1` at `±inf`). `erf` is
//! within [`UNARY_ERF_ULPS`] and exact gelu within [`GELU_EXACT_ULPS`] (tiny results:
//! [`GELU_EXACT_TINY_ULPS`] below [`GELU_EXACT_TINY_BELOW`]), by fitted polynomials and a
//! cancellation-free `e^{-a²}`. [`accumulate_exp`] and [`exp_scale`] use `exp`'s polynomial on
//! the f32 difference `x - shift` (one rounding before the `exp`), then one addition, resp.
//! one product.
//!
//! The exact ops lean on the tiers' `max(a, b) = a > b ? a : b` and `min(a, b) = a < b ? a :
//! b` (x86 `maxps`/`minps` and the portable tier alike: NaN or a tie gives `b`), which the
//! tests pin down with NaN and signed-zero inputs.
//!
//! # Contract
//!
//! As for the rest of [`super`]: lengths are checked and a mismatch panics (a caller bug), the
//! host must have the tier, kernels are single-threaded.
#![allow(
    unsafe_code,
    reason = "raw-pointer kernel bodies behind the safe streaming entry points"
)]

use super::simd::{Simd, Storage, load_partial, store_partial};
use crate::cpu::Isa;

/// The arithmetic of [`binary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
    /// IEEE 754-2019 `maximum(a, b)`: NaN (the default quiet NaN) if either is NaN, `-0 < +0`.
    Maximum,
    /// IEEE 754-2019 `minimum(a, b)`: NaN (the default quiet NaN) if either is NaN, `-0 < +0`.
    Minimum,
}

impl BinaryOp {
    /// Every operation.
    pub const ALL: [BinaryOp; 6] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ];

    /// The scalar result (what every tier computes per element, before storage rounding).
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum | BinaryOp::Minimum if a.is_nan() || b.is_nan() => f32::NAN,
            // Equal values (±0 included): the bits of both ANDed (`+0` wins) or ORed (`-0`).
            BinaryOp::Maximum if a == b => f32::from_bits(a.to_bits() & b.to_bits()),
            BinaryOp::Minimum if a == b => f32::from_bits(a.to_bits() | b.to_bits()),
            BinaryOp::Maximum => a.max(b),
            BinaryOp::Minimum => a.min(b),
        }
    }
}

/// One operand of [`binary`]: a run as long as the output, or one value for every element.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a, T> {
    /// Element `i` of the slice for output element `i`.
    Slice(&'a [T]),
    /// The same (already widened) value for every element.
    Splat(f32),
}

/// The `[tier][op][f32, f16]` kernel names of [`binary`] (the Amx tier runs avx512).
const BINARY_NAMES: [[[&str; 2]; 6]; 3] = [
    [
        ["generic_add_f32_8n", "generic_add_f16_8n"],
        ["generic_sub_f32_8n", "generic_sub_f16_8n"],
        ["generic_mul_f32_8n", "generic_mul_f16_8n"],
        ["generic_realdiv_f32_8n", "generic_realdiv_f16_8n"],
        ["generic_maximum_f32_8n", "generic_maximum_f16_8n"],
        ["generic_minimum_f32_8n", "generic_minimum_f16_8n"],
    ],
    [
        ["avx2_add_f32_8n", "avx2_add_f16_8n"],
        ["avx2_sub_f32_8n", "avx2_sub_f16_8n"],
        ["avx2_mul_f32_8n", "avx2_mul_f16_8n"],
        ["avx2_realdiv_f32_8n", "avx2_realdiv_f16_8n"],
        ["avx2_maximum_f32_8n", "avx2_maximum_f16_8n"],
        ["avx2_minimum_f32_8n", "avx2_minimum_f16_8n"],
    ],
    [
        ["avx512_add_f32_16n", "avx512_add_f16_16n"],
        ["avx512_sub_f32_16n", "avx512_sub_f16_16n"],
        ["avx512_mul_f32_16n", "avx512_mul_f16_16n"],
        ["avx512_realdiv_f32_16n", "avx512_realdiv_f16_16n"],
        ["avx512_maximum_f32_16n", "avx512_maximum_f16_16n"],
        ["avx512_minimum_f32_16n", "avx512_minimum_f16_16n"],
    ],
];

fn tier_index(isa: Isa) -> usize {
    match isa {
        Isa::Generic => 0,
        Isa::Avx2 => 1,
        Isa::Avx512 | Isa::Amx => 2,
    }
}

fn dtype_index<T: Storage>() -> usize {
    if T::NAME == "f32" { 0 } else { 1 }
}

/// Name of the [`binary`] kernel for `op` on `T` storage with `isa`, e.g.
/// `avx512_add_f16_16n`.
pub fn binary_kernel_name<T: Storage>(op: BinaryOp, isa: Isa) -> &'static str {
    BINARY_NAMES[tier_index(isa)][op as usize][dtype_index::<T>()]
}

/// The raw form of an [`Operand`].
#[derive(Clone, Copy)]
pub(crate) enum RawOperand<T> {
    /// `len` readable elements.
    Run(*const T),
    /// One value.
    Splat(f32),
}

/// `out[i] = a[i] ∘ b[i]` for every element of `out`, `∘` the operation `OP`
/// (`BinaryOp as u8`), splats broadcast.
///
/// # Safety
/// `out` holds `len` writable elements, each `Run` operand `len` readable ones (`out` may
/// equal a `Run`); the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn binary_body<S: Simd, T: Storage, const OP: u8>(
    a: RawOperand<T>,
    b: RawOperand<T>,
    out: *mut T,
    len: usize,
) {
    /// The operation on vectors.
    #[inline(always)]
    unsafe fn apply<S: Simd, const OP: u8>(a: S::V, b: S::V) -> S::V {
        // SAFETY: register arithmetic of the caller's tier.
        unsafe {
            match OP {
                0 => S::add(a, b),
                1 => S::sub(a, b),
                2 => S::mul(a, b),
                3 => S::div(a, b),
                // IEEE maximum/minimum: ties (±0 included) take the bits ANDed (maximum:
                // `+0` wins) or ORed (minimum: `-0` wins), NaN gives the default NaN.
                _ => {
                    let tie = if OP == 4 { S::and(a, b) } else { S::or(a, b) };
                    let pick = if OP == 4 { S::max(a, b) } else { S::min(a, b) };
                    let value = S::select(S::eq(a, b), tie, pick);
                    let nan = S::mask_or(S::is_nan(a), S::is_nan(b));
                    S::select(nan, S::splat(f32::NAN), value)
                }
            }
        }
    }
    // SAFETY: (whole body) full-vector accesses cover elements below `len - len % LANES`,
    // the tail is read and written through `load_partial`/`store_partial` with the count of
    // remaining elements; splats touch no memory.
    unsafe {
        let full = len - len % S::LANES;
        match (a, b) {
            (RawOperand::Run(a), RawOperand::Run(b)) => {
                let mut at = 0;
                while at < full {
                    let value = apply::<S, OP>(T::load::<S>(a.add(at)), T::load::<S>(b.add(at)));
                    T::store::<S>(out.add(at), value);
                    at += S::LANES;
                }
                if full < len {
                    let rest = len - full;
                    let value = apply::<S, OP>(
                        load_partial::<S, T>(a.add(full), rest, 0.0),
                        load_partial::<S, T>(b.add(full), rest, 0.0),
                    );
                    store_partial::<S, T>(out.add(full), rest, value);
                }
            }
            (RawOperand::Run(a), RawOperand::Splat(b)) => {
                let b = S::splat(b);
                let mut at = 0;
                while at < full {
                    T::store::<S>(out.add(at), apply::<S, OP>(T::load::<S>(a.add(at)), b));
                    at += S::LANES;
                }
                if full < len {
                    let rest = len - full;
                    let value = apply::<S, OP>(load_partial::<S, T>(a.add(full), rest, 0.0), b);
                    store_partial::<S, T>(out.add(full), rest, value);
                }
            }
            (RawOperand::Splat(a), RawOperand::Run(b)) => {
                let a = S::splat(a);
                let mut at = 0;
                while at < full {
                    T::store::<S>(out.add(at), apply::<S, OP>(a, T::load::<S>(b.add(at))));
                    at += S::LANES;
                }
                if full < len {
                    let rest = len - full;
                    let value = apply::<S, OP>(a, load_partial::<S, T>(b.add(full), rest, 0.0));
                    store_partial::<S, T>(out.add(full), rest, value);
                }
            }
            (RawOperand::Splat(a), RawOperand::Splat(b)) => {
                let value = apply::<S, OP>(S::splat(a), S::splat(b));
                let mut at = 0;
                while at < full {
                    T::store::<S>(out.add(at), value);
                    at += S::LANES;
                }
                if full < len {
                    store_partial::<S, T>(out.add(full), len - full, value);
                }
            }
        }
    }
}

/// Vectors per unrolled step of [`sum`] (independent accumulators).
const UNROLL: usize = 4;

/// `Σ x` over `len` elements, in f32 with `UNROLL·LANES` partial sums.
///
/// # Safety
/// `len` elements readable at `x`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn sum_body<S: Simd, T: Storage>(x: *const T, len: usize) -> f32 {
    // SAFETY: (whole body) every full load covers elements below `len`, the tail goes
    // through `load_partial` with the remaining count.
    unsafe {
        let mut acc = [S::splat(0.0); UNROLL];
        let mut at = 0;
        while at + UNROLL * S::LANES <= len {
            for (unroll, partial) in acc.iter_mut().enumerate() {
                *partial = S::add(*partial, T::load::<S>(x.add(at + unroll * S::LANES)));
            }
            at += UNROLL * S::LANES;
        }
        while at + S::LANES <= len {
            acc[0] = S::add(acc[0], T::load::<S>(x.add(at)));
            at += S::LANES;
        }
        if at < len {
            acc[1] = S::add(acc[1], load_partial::<S, T>(x.add(at), len - at, 0.0));
        }
        S::reduce_add(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])))
    }
}

/// Bound of [`UnaryOp::Exp`] in f32 ulps of the result (Cephes polynomial, two exact
/// power-of-two scalings); results below 2^-126 are within 2^-126 absolute.
pub const UNARY_EXP_ULPS: f64 = 2.0;
/// Bound of [`UnaryOp::Rsqrt`] in f32 ulps (an f32 sum, square root and division).
pub const UNARY_RSQRT_ULPS: f64 = 3.0;
/// Bound of [`UnaryOp::Inverse`] with ε ≠ 0 in f32 ulps (an f32 sum and division).
pub const UNARY_INVERSE_ULPS: f64 = 2.0;
/// Bound of [`UnaryOp::Cube`] in f32 ulps for f32 storage (two f32 products).
pub const UNARY_CUBE_ULPS: f64 = 2.0;
/// The gelu approximations ([`UnaryOp::GeluTanh`], [`UnaryOp::GeluSigmoid`]) are within
/// `(GELU_ULPS + GELU_ULPS_PER_Z·|z|)` f32 ulps of the exact function, `z` the sigmoid's
/// argument (its f32 rounding errors, relative, are scaled by `|z|` in `e⁻ᶻ`). Where `e⁻ᶻ`
/// overflows (`z < -88.7`) the result is `-0`: such exact results are below 2⁻¹²² in
/// magnitude (`|x|·e⁻⁸⁸·⁷` with `|x| ≤ 88.7/1.702`), so the bound there is 2⁻¹²² absolute.
pub const GELU_ULPS: f64 = 5.0;
/// See [`GELU_ULPS`].
pub const GELU_ULPS_PER_Z: f64 = 3.0;
/// Bound of [`UnaryOp::Log`] in f32 ulps of `ln(x + ε)` (checked over every binade).
pub const UNARY_LOG_ULPS: f64 = 2.0;
/// Bound of [`UnaryOp::Tanh`] in f32 ulps.
pub const UNARY_TANH_ULPS: f64 = 3.0;
/// Bound of [`UnaryOp::Erf`] in f32 ulps.
pub const UNARY_ERF_ULPS: f64 = 4.0;
/// Bound of [`UnaryOp::GeluExact`] in f32 ulps for results of at least
/// [`GELU_EXACT_TINY_BELOW`] in magnitude.
pub const GELU_EXACT_ULPS: f64 = 6.0;
/// Results of [`UnaryOp::GeluExact`] below this magnitude (2⁻¹¹⁰: inputs below about
/// -12.4, where a factor of `e^{-x²/2}` nears the subnormal range) are within
/// [`GELU_EXACT_TINY_ULPS`] f32 ulps (subnormal results: units of 2⁻¹⁴⁹).
pub const GELU_EXACT_TINY_BELOW: f64 = 7.7e-34;
/// See [`GELU_EXACT_TINY_BELOW`].
pub const GELU_EXACT_TINY_ULPS: f64 = 16.0;

/// `2·√(2/π)`, the linear coefficient of [`UnaryOp::GeluTanh`]'s `z`.
const GELU_TANH_C1: f32 = 1.595_769_2;
/// `2·√(2/π)·0.044715`, its cubic coefficient.
const GELU_TANH_C3: f32 = 0.071_354_814;

/// The reductions of [`accumulate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// `acc + x`.
    Sum,
    /// The larger of `acc` and `x`, NaN when either is NaN (the earlier value on a tie).
    Max,
}

/// The unary functions of [`unary`], with their constant parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `x` (a conversion copy).
    Identity,
    /// `|x|`.
    Abs,
    /// `x·x`.
    Square,
    /// `√x`.
    Sqrt,
    /// `max(x, 0)`, +0 for -0, NaN kept.
    Relu,
    /// IEEE 754-2019 `minimum(maximum(x, lo), hi)` (NaN-propagating, `-0 < +0`); neither
    /// bound may be NaN.
    Clip(f32, f32),
    /// `1/√(x + ε)` in f32.
    Rsqrt(f32),
    /// `1/(x + ε)` in f32.
    Inverse(f32),
    /// `eˣ` by the Cephes polynomial (see the module's error bounds).
    Exp,
    /// `1/(1 + e⁻ˣ)`.
    Sigmoid,
    /// `x/(1 + e⁻ˣ)`.
    Silu,
    /// `x·x·x` in f32 (two roundings; exact before the storage rounding for f16 storage,
    /// whose products of three values fit in f32's significand).
    Cube,
    /// gelu, tanh approximation: `x/(1 + e⁻ᶻ)` with `z = 2·√(2/π)·(x + 0.044715·x³)`
    /// (`0.5·x·(1 + tanh(z/2))` without cancellation).
    GeluTanh,
    /// gelu, sigmoid approximation: `x/(1 + e⁻ᶻ)` with `z = 1.702·x`.
    GeluSigmoid,
    /// `ln(x + ε)`, the sum taken exactly (an f32 sum and its rounding error, added back as
    /// `err/(x + ε)`): the Cephes `logf` polynomial on the mantissa reduced to
    /// `[√½, √2)`. NaN below 0, `-inf` at 0, `+inf` at `+inf`.
    Log(f32),
    /// `tanh x`: the Cephes `tanhf` odd polynomial for `|x| < 0.625`, else
    /// `1 - 2/(e^{2|x|} + 1)` with the sign of `x` (`-0` kept).
    Tanh,
    /// `erf x`: `x·P(x²)` for `|x| < 1`, else `1 - erfc|x|` with the sign of `x`, `erfc a`
    /// as `e^{-a²}·Q(1/a)/a` (`a²` split into an exact square and a small remainder, so
    /// `e^{-a²}` has no cancellation error); `P` and `Q` fitted to this crate's bound.
    Erf,
    /// Exact gelu, `x·Φ(x)` with `Φ(x) = erfc(-x/√2)/2` from [`UnaryOp::Erf`]'s pieces:
    /// `erfc` directly for `x < -√½` (a fitted `erfc` on [-√2, -√½], the `e^{-a²}` form
    /// below: no cancellation), `(1 - erf)/2` / `(1 + erf)/2` above.
    GeluExact,
}

impl UnaryOp {
    /// The op code of the kernel body and the index of its names.
    fn code(self) -> usize {
        match self {
            UnaryOp::Identity => 0,
            UnaryOp::Abs => 1,
            UnaryOp::Square => 2,
            UnaryOp::Sqrt => 3,
            UnaryOp::Relu => 4,
            UnaryOp::Clip(..) => 5,
            UnaryOp::Rsqrt(_) => 6,
            UnaryOp::Inverse(_) => 7,
            UnaryOp::Exp => 8,
            UnaryOp::Sigmoid => 9,
            UnaryOp::Silu => 10,
            UnaryOp::Cube => 11,
            UnaryOp::GeluTanh => 12,
            UnaryOp::GeluSigmoid => 13,
            UnaryOp::Log(_) => 14,
            UnaryOp::Tanh => 15,
            UnaryOp::Erf => 16,
            UnaryOp::GeluExact => 17,
        }
    }

    /// Whether [`unary`] gives exactly the correctly rounded f32 result of the function
    /// (then rounded once to the storage type): every op but the transcendental ones and
    /// `Rsqrt`/`Inverse` with a nonzero ε (three, resp. two, f32 roundings).
    pub fn is_exact(self) -> bool {
        match self {
            UnaryOp::Rsqrt(_)
            | UnaryOp::Exp
            | UnaryOp::Sigmoid
            | UnaryOp::Silu
            | UnaryOp::Cube
            | UnaryOp::GeluTanh
            | UnaryOp::GeluSigmoid
            | UnaryOp::Log(_)
            | UnaryOp::Tanh
            | UnaryOp::Erf
            | UnaryOp::GeluExact => false,
            UnaryOp::Inverse(eps) => eps == 0.0,
            _ => true,
        }
    }
}

/// `[tier][op][f32, f16]` names from the op fragments.
macro_rules! stream_names {
    ($($op:literal),* $(,)?) => {
        [
            [$([concat!("generic_", $op, "_f32_8n"), concat!("generic_", $op, "_f16_8n")]),*],
            [$([concat!("avx2_", $op, "_f32_8n"), concat!("avx2_", $op, "_f16_8n")]),*],
            [$([concat!("avx512_", $op, "_f32_16n"), concat!("avx512_", $op, "_f16_16n")]),*],
        ]
    };
}

/// Names of [`unary`] in [`UnaryOp::code`] order.
const UNARY_NAMES: [[[&str; 2]; 18]; 3] = stream_names!(
    "identity",
    "abs",
    "square",
    "sqrt",
    "relu",
    "clip",
    "rsqrt",
    "inverse",
    "exp",
    "sigmoid",
    "silu",
    "cube",
    "gelutanh",
    "gelusigmoid",
    "log",
    "tanh",
    "erf",
    "gelu",
);

/// Names of the column softmax ([`accumulate_exp`] and [`exp_scale`] over rows of a
/// non-innermost axis).
const SOFTMAX_COLUMNS_NAMES: [[[&str; 2]; 1]; 3] = stream_names!("softmaxcolumns");

/// Names of the engine's reductions on these kernels: `[reducesum, reducemean, reducemax]`.
const REDUCE_NAMES: [[[&str; 2]; 3]; 3] = stream_names!("reducesum", "reducemean", "reducemax");

/// Name of the [`unary`] kernel for `op` on `T` storage with `isa`, e.g. `avx2_exp_f32_8n`.
pub fn unary_kernel_name<T: Storage>(op: UnaryOp, isa: Isa) -> &'static str {
    UNARY_NAMES[tier_index(isa)][op.code()][dtype_index::<T>()]
}

/// Name of a reduction on `T` storage with `isa` built on [`sum`], [`max`] and
/// [`accumulate`]: `mean` selects `reducemean` for [`ReduceOp::Sum`], e.g.
/// `avx512_reducemax_f16_16n`.
pub fn reduce_kernel_name<T: Storage>(op: ReduceOp, mean: bool, isa: Isa) -> &'static str {
    let which = match (op, mean) {
        (ReduceOp::Sum, false) => 0,
        (ReduceOp::Sum, true) => 1,
        (ReduceOp::Max, _) => 2,
    };
    REDUCE_NAMES[tier_index(isa)][which][dtype_index::<T>()]
}

/// `+0` where `x` is a number (including ±inf), NaN where it is NaN, relying on the tiers'
/// `max(a, b) = a > b ? a : b` and `min(a, b) = a < b ? a : b` (x86 `maxps`/`minps`, and
/// [`Portable`](super::simd::Portable)): NaN lanes fall through to `x`.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn nan_probe<S: Simd>(x: S::V) -> S::V {
    // SAFETY: register arithmetic of the caller's tier.
    unsafe {
        let clamped = S::min(S::splat(f32::MAX), S::max(S::splat(0.0), x));
        // `clamped` is in [-0, MAX] or NaN; `· 0 + 0` gives +0 (never -0) or NaN.
        S::add(S::mul(clamped, S::splat(0.0)), S::splat(0.0))
    }
}

/// The larger of `acc` and `x`, `acc` on a tie (so the earlier of two zeros), NaN when
/// either is NaN.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn max_sticky<S: Simd>(acc: S::V, x: S::V) -> S::V {
    // SAFETY: register arithmetic of the caller's tier. `max(x, acc)` keeps a NaN `acc`
    // (the comparison fails) and `acc` on a tie; subtracting `+0` (or NaN for a NaN `x`)
    // leaves every number, including `-0`, unchanged.
    unsafe { S::sub(S::max(x, acc), nan_probe::<S>(x)) }
}

/// `acc[i] = acc[i] ∘ x[i]` for `len` elements.
///
/// # Safety
/// `len` elements readable at `x` and writable at `acc`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn accumulate_body<S: Simd, T: Storage, const MAX: bool>(
    acc: *mut f32,
    x: *const T,
    len: usize,
) {
    // SAFETY: (whole body) full vectors cover elements below `len - len % LANES`, the tail
    // goes through `load_partial`/`store_partial` with the remaining count.
    unsafe {
        let step = |a: S::V, v: S::V| {
            if MAX {
                max_sticky::<S>(a, v)
            } else {
                S::add(a, v)
            }
        };
        let full = len - len % S::LANES;
        let mut at = 0;
        while at < full {
            let value = step(S::load_f32(acc.add(at)), T::load::<S>(x.add(at)));
            S::store_f32(acc.add(at), value);
            at += S::LANES;
        }
        if full < len {
            let rest = len - full;
            let value = step(
                load_partial::<S, f32>(acc.add(full), rest, 0.0),
                load_partial::<S, T>(x.add(full), rest, 0.0),
            );
            store_partial::<S, f32>(acc.add(full), rest, value);
        }
    }
}

/// The largest of `len` elements (NaN if any is NaN, -inf if `len` is 0).
///
/// # Safety
/// `len` elements readable at `x`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn max_body<S: Simd, T: Storage>(x: *const T, len: usize) -> f32 {
    // SAFETY: (whole body) every full load covers elements below `len`, the tail goes
    // through `load_partial` filled with -inf (which never wins).
    unsafe {
        let mut acc = [S::splat(f32::NEG_INFINITY); UNROLL];
        let mut at = 0;
        while at + UNROLL * S::LANES <= len {
            for (unroll, partial) in acc.iter_mut().enumerate() {
                *partial = max_sticky::<S>(*partial, T::load::<S>(x.add(at + unroll * S::LANES)));
            }
            at += UNROLL * S::LANES;
        }
        while at + S::LANES <= len {
            acc[0] = max_sticky::<S>(acc[0], T::load::<S>(x.add(at)));
            at += S::LANES;
        }
        if at < len {
            let tail = load_partial::<S, T>(x.add(at), len - at, f32::NEG_INFINITY);
            acc[1] = max_sticky::<S>(acc[1], tail);
        }
        let all = max_sticky::<S>(
            max_sticky::<S>(acc[0], acc[1]),
            max_sticky::<S>(acc[2], acc[3]),
        );
        // A NaN lane makes the sum of the probes NaN; `reduce_max` may drop it.
        let nan = S::reduce_add(nan_probe::<S>(all));
        if nan.is_nan() {
            f32::NAN
        } else {
            S::reduce_max(all)
        }
    }
}

/// `maximum(x, c)` (IEEE 754-2019) for a number `c`; `positive_zero` says `c` is `+0`.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn maximum_const<S: Simd>(x: S::V, c: S::V, positive_zero: bool) -> S::V {
    // SAFETY: register arithmetic of the caller's tier. `max(c, x)` is `c > x ? c : x`: NaN
    // `x` falls through, a tie gives `x`, which differs from `maximum` only for `x = -0`,
    // `c = +0`: adding `+0` turns that `-0` into `+0` and leaves every other value alone
    // (the result is then never `-0`).
    unsafe {
        let result = S::max(c, x);
        if positive_zero {
            S::add(result, S::splat(0.0))
        } else {
            result
        }
    }
}

/// `-x`, exactly (zeros and NaN included).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn negate<S: Simd>(x: S::V) -> S::V {
    // SAFETY: register arithmetic of the caller's tier.
    unsafe { S::mul(x, S::splat(-1.0)) }
}

/// `e^x` with gradual underflow and overflow to +inf (NaN kept): the Cephes `expf`
/// polynomial of [`super::simd::exp`] on `r = x - n·ln 2`, scaled by `2^n` in two exact
/// halves so `n` may reach 129 (inf) and -150 (subnormal results rounded once).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn exp_full<S: Simd>(x: S::V) -> S::V {
    // SAFETY: (whole body) register arithmetic of the caller's tier; `n` is integral in
    // [-152, 129], so both halves are in [-76, 65], inside `pow2i`'s range.
    unsafe {
        // `max(c, x)`/`min(c, x)` let a NaN `x` through.
        let x = S::min(S::splat(89.0), S::max(S::splat(-105.0), x));
        let (p, n) = super::simd::exp_parts::<S>(x);
        // floor(n / 2) for integral n, then the rest.
        let n1 = S::round(S::sub(S::mul(n, S::splat(0.5)), S::splat(0.25)));
        let n2 = S::sub(n, n1);
        S::mul(S::mul(p, S::pow2i(n1)), S::pow2i(n2))
    }
}

/// `ln(x + eps)`: the f32 sum `s` and its exact rounding error `err` (Knuth's two-sum), then
/// `ln s + err/s` (the first-order correction; its own error is below `(err/s)²`).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn log_sum<S: Simd>(x: S::V, eps: S::V) -> S::V {
    // SAFETY: register arithmetic of the caller's tier.
    unsafe {
        let s = S::add(x, eps);
        let eps_part = S::sub(s, x);
        let err = S::add(S::sub(x, S::sub(s, eps_part)), S::sub(eps, eps_part));
        log_core::<S>(s, S::div(err, s))
    }
}

/// `ln x + correction` lane-wise (Cephes `logf`): `x = 2^e·m` with `m` in `[√½, √2)`
/// (subnormals scaled by 2^25 first), `f = m - 1` exactly, `ln(1 + f)` by
/// `f - f²/2 + f³·P(f)`, and `e·ln 2` added in two parts. The correction is only added to
/// finite positive lanes; NaN stays NaN, negative lanes give NaN, ±0 gives `-inf`, `+inf`
/// gives `+inf`.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn log_core<S: Simd>(x: S::V, correction: S::V) -> S::V {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let one = S::splat(1.0);
        let tiny = S::lt(x, S::splat(f32::MIN_POSITIVE));
        let scaled = S::select(tiny, S::mul(x, S::splat(33_554_432.0)), x);
        let e = S::exponent(scaled);
        let e = S::select(tiny, S::sub(e, S::splat(25.0)), e);
        let m = S::mantissa(scaled);
        let high = S::lt(S::splat(std::f32::consts::SQRT_2), m);
        let m = S::select(high, S::mul(m, S::splat(0.5)), m);
        let e = S::select(high, S::add(e, one), e);
        // Exact: `m` is within a factor 2 of 1 (Sterbenz).
        let f = S::sub(m, one);
        let mut p = S::splat(7.037_683_6e-2);
        for coefficient in [
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ] {
            p = S::mul_add(p, f, S::splat(coefficient));
        }
        let f2 = S::mul(f, f);
        let y = S::mul(S::mul(p, f), f2);
        let y = S::mul_add(e, S::splat(LN2_LO), y);
        let y = S::mul_add(f2, S::splat(-0.5), y);
        let y = S::add(y, correction);
        let r = S::add(f, y);
        let r = S::mul_add(e, S::splat(LN2_HI), r);
        let inf = S::splat(f32::INFINITY);
        let r = S::select(S::eq(x, inf), inf, r);
        let r = S::select(S::eq(x, S::splat(0.0)), S::splat(f32::NEG_INFINITY), r);
        let r = S::select(S::lt(x, S::splat(0.0)), S::splat(f32::NAN), r);
        S::select(S::is_nan(x), x, r)
    }
}

/// `tanh x` lane-wise (see [`UnaryOp::Tanh`]): computed on `|x|`, then given `x`'s sign bit.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn tanh<S: Simd>(x: S::V) -> S::V {
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let one = S::splat(1.0);
        let sign = S::and(x, S::splat(-0.0));
        let ax = S::and(x, S::splat(f32::from_bits(0x7fff_ffff)));
        let s = S::mul(ax, ax);
        let mut p = S::splat(-5.704_988_7e-3);
        for coefficient in [2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1] {
            p = S::mul_add(p, s, S::splat(coefficient));
        }
        let small = S::mul_add(S::mul(p, s), ax, ax);
        // e^{2|x|} overflows to +inf for large |x|: 2/inf = 0 gives 1.
        let e = exp_full::<S>(S::add(ax, ax));
        let large = S::sub(one, S::div(S::splat(2.0), S::add(e, one)));
        // NaN fails the comparison and takes the polynomial, which keeps it.
        let r = S::select(S::lt(S::splat(0.625), ax), large, small);
        S::or(r, sign)
    }
}

/// `erf(z)/z` on `t = z²` in [0, 1] (a relative least-squares fit, Lawson-weighted towards
/// minimax; fit error 1.2e-9), lowest degree first.
#[allow(
    clippy::approx_constant,
    reason = "a fitted coefficient (one f32 ulp below 2/√π)"
)]
const ERF_SMALL: [f32; 7] = [
    1.128_379_1,
    -0.376_126_26,
    0.112_835_85,
    -0.026_853_811,
    0.005_188_328,
    -0.000_801_019_25,
    7.853_858e-5,
];

/// `a·e^{a²}·erfc(a)` on `v = 1/a - 0.55` for `a` in [1, 10] (fit as [`ERF_SMALL`]; fit
/// error 1.0e-8), lowest degree first.
const ERFC_LARGE: [f32; 12] = [
    0.502_353_4,
    -0.170_035_12,
    -0.020_365_657,
    0.098_358_83,
    -0.096_912_906,
    0.049_831_29,
    0.009_628_56,
    -0.060_239_97,
    0.105_812_79,
    -0.096_746_996,
    -0.048_368_55,
    0.120_483_875,
];

/// `erfc(a)` on `v = a - 0.75` for `a` in [0.5, 1] (fit as [`ERF_SMALL`]; fit error 9e-10),
/// lowest degree first: gelu's `Φ` for `x` in [-√2, -√½] without `1 - erf`'s cancellation.
const ERFC_MID: [f32; 8] = [
    0.288_844_38,
    -0.642_931_04,
    0.482_198_18,
    -0.026_788_67,
    -0.150_675_8,
    0.053_227_358,
    0.026_584_687,
    -0.017_979_5,
];

/// The polynomial with coefficients `c` (lowest degree first) at `t`, by Horner's rule.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn horner<S: Simd>(c: &[f32], t: S::V) -> S::V {
    // SAFETY: register arithmetic of the caller's tier.
    unsafe {
        let (&last, rest) = c.split_last().expect("a coefficient");
        let mut p = S::splat(last);
        for &coefficient in rest.iter().rev() {
            p = S::mul_add(p, t, S::splat(coefficient));
        }
        p
    }
}

/// `erf(√k·z)` for `√k·z` in [0, 1]: `√k·z·P(k·z²)`.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn erf_small<S: Simd>(z: S::V, k: f32) -> S::V {
    // SAFETY: register arithmetic of the caller's tier.
    unsafe {
        let t = S::mul(S::mul(z, z), S::splat(k));
        S::mul(S::mul(z, S::splat(k.sqrt())), horner::<S>(&ERF_SMALL, t))
    }
}

/// `erfc(a)` for `a = √k·z ≥ 1` (`z ≥ 0`, `k` 1 or ½): `e^{-a²}·Q(1/a)/a`, with
/// `k·z² = k·h² + k·l·(z + h)` for `h` the top 12 bits of `z` (so `k·h²` is exact) and the
/// two exponentials taken apart. `a` is clamped at 10.5, where `e^{-a²}` is 0 in f32.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn erfc_large<S: Simd>(z: S::V, k: f32) -> S::V {
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let inv_sqrt_k = 1.0 / k.sqrt();
        let z = S::min(S::splat(10.5 * inv_sqrt_k), z);
        let u = S::div(S::splat(inv_sqrt_k), z);
        let q = horner::<S>(
            &ERFC_LARGE,
            S::sub(S::max(u, S::splat(0.1)), S::splat(0.55)),
        );
        let high = S::and(z, S::splat(f32::from_bits(0xffff_f000)));
        let low = S::sub(z, high);
        let minus_k = S::splat(-k);
        let e_high = exp_full::<S>(S::mul(S::mul(high, high), minus_k));
        let e_low = exp_full::<S>(S::mul(S::mul(low, S::add(z, high)), minus_k));
        S::mul(S::mul(S::mul(q, u), e_high), e_low)
    }
}

/// `erf x` lane-wise (see [`UnaryOp::Erf`]).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn erf<S: Simd>(x: S::V) -> S::V {
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let sign = S::and(x, S::splat(-0.0));
        let ax = S::and(x, S::splat(f32::from_bits(0x7fff_ffff)));
        let small = erf_small::<S>(ax, 1.0);
        let large = S::sub(S::splat(1.0), erfc_large::<S>(ax, 1.0));
        let r = S::select(S::lt(ax, S::splat(1.0)), small, large);
        S::select(S::is_nan(x), x, S::or(r, sign))
    }
}

/// Exact gelu lane-wise (see [`UnaryOp::GeluExact`]).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn gelu_exact<S: Simd>(x: S::V) -> S::V {
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let half = S::splat(0.5);
        let ax = S::and(x, S::splat(f32::from_bits(0x7fff_ffff)));
        let negative = S::lt(x, S::splat(0.0));
        // |x|/√2 < 1: Φ = (1 ± erf)/2, below -√½ erfc/2 (no cancellation).
        let e = erf_small::<S>(ax, 0.5);
        let near = S::select(
            negative,
            S::sub(half, S::mul(e, half)),
            S::mul_add(e, half, half),
        );
        let a = S::mul(ax, S::splat(std::f32::consts::FRAC_1_SQRT_2));
        let mid = S::mul(horner::<S>(&ERFC_MID, S::sub(a, S::splat(0.75))), half);
        let mid_range = S::lt(S::splat(std::f32::consts::FRAC_1_SQRT_2), ax);
        let near = S::select(mid_range, S::select(negative, mid, near), near);
        // |x|/√2 ≥ 1: Φ = erfc/2 below 0, 1 - erfc/2 above.
        let c = S::mul(erfc_large::<S>(ax, 0.5), half);
        let far = S::select(negative, c, S::sub(S::splat(1.0), c));
        let phi = S::select(S::lt(ax, S::splat(std::f32::consts::SQRT_2)), near, far);
        let r = S::mul(x, phi);
        S::select(S::is_nan(x), x, r)
    }
}

/// The constants of one [`unary`] call as the body sees them.
#[derive(Clone, Copy)]
pub(crate) struct UnaryConsts {
    /// Clip's `lo`, or ε.
    a: f32,
    /// `-hi` for clip.
    b: f32,
    /// `a` is `+0`.
    a_positive_zero: bool,
    /// `b` is `+0`.
    b_positive_zero: bool,
}

/// `out[i] = f(x[i])` for the op with code `OP` ([`UnaryOp::code`]).
///
/// # Safety
/// `len` elements readable at `x` and writable at `out` (`out` may equal `x`); the host
/// supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn unary_body<S: Simd, T: Storage, const OP: usize>(
    x: *const T,
    out: *mut T,
    len: usize,
    consts: UnaryConsts,
) {
    /// The function on one vector.
    #[inline(always)]
    unsafe fn apply<S: Simd, const OP: usize>(x: S::V, consts: UnaryConsts) -> S::V {
        // SAFETY: register arithmetic of the caller's tier.
        unsafe {
            let zero = S::splat(0.0);
            let one = S::splat(1.0);
            match OP {
                0 => x,
                // max(x, -x) is |x| but for `x = +0` (`-0`); `+ 0` fixes it.
                1 => S::add(S::max(x, negate::<S>(x)), zero),
                2 => S::mul(x, x),
                3 => S::sqrt(x),
                // max(0, x) keeps NaN and -0; `+ 0` makes -0 +0.
                4 => S::add(S::max(zero, x), zero),
                // minimum(m, hi) = -maximum(-m, -hi).
                5 => {
                    let lo = maximum_const::<S>(x, S::splat(consts.a), consts.a_positive_zero);
                    let neg_hi = S::splat(consts.b);
                    negate::<S>(maximum_const::<S>(
                        negate::<S>(lo),
                        neg_hi,
                        consts.b_positive_zero,
                    ))
                }
                6 => S::div(one, S::sqrt(S::add(x, S::splat(consts.a)))),
                7 => S::div(one, S::add(x, S::splat(consts.a))),
                8 => exp_full::<S>(x),
                9 => S::div(one, S::add(one, exp_full::<S>(negate::<S>(x)))),
                10 => S::div(x, S::add(one, exp_full::<S>(negate::<S>(x)))),
                11 => S::mul(S::mul(x, x), x),
                12 => {
                    // -z = x·(-2c - 2c·0.044715·x²), c = √(2/π).
                    let x2 = S::mul(x, x);
                    let k = S::mul_add(x2, S::splat(-GELU_TANH_C3), S::splat(-GELU_TANH_C1));
                    S::div(x, S::add(one, exp_full::<S>(S::mul(x, k))))
                }
                13 => {
                    let minus_z = S::mul(x, S::splat(-1.702));
                    S::div(x, S::add(one, exp_full::<S>(minus_z)))
                }
                14 => log_sum::<S>(x, S::splat(consts.a)),
                15 => tanh::<S>(x),
                16 => erf::<S>(x),
                _ => gelu_exact::<S>(x),
            }
        }
    }
    // SAFETY: (whole body) full vectors cover elements below `len - len % LANES`, the tail
    // goes through `load_partial`/`store_partial` with the remaining count.
    unsafe {
        let full = len - len % S::LANES;
        let mut at = 0;
        while at < full {
            let value = apply::<S, OP>(T::load::<S>(x.add(at)), consts);
            T::store::<S>(out.add(at), value);
            at += S::LANES;
        }
        if full < len {
            let rest = len - full;
            let value = apply::<S, OP>(load_partial::<S, T>(x.add(full), rest, 1.0), consts);
            store_partial::<S, T>(out.add(full), rest, value);
        }
    }
}

/// `acc[i] = acc[i] + e^(x[i] - shift[i])` for `len` elements (`exp` as [`UnaryOp::Exp`]).
///
/// # Safety
/// `len` elements readable at `x` and `shift`, readable and writable at `acc`; the host
/// supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn accumulate_exp_body<S: Simd, T: Storage>(
    acc: *mut f32,
    shift: *const f32,
    x: *const T,
    len: usize,
) {
    // SAFETY: (whole body) full vectors cover elements below `len - len % LANES`, the tail
    // goes through `load_partial`/`store_partial` with the remaining count.
    unsafe {
        let step = |a: S::V, s: S::V, v: S::V| S::add(a, exp_full::<S>(S::sub(v, s)));
        let full = len - len % S::LANES;
        let mut at = 0;
        while at < full {
            let value = step(
                S::load_f32(acc.add(at)),
                S::load_f32(shift.add(at)),
                T::load::<S>(x.add(at)),
            );
            S::store_f32(acc.add(at), value);
            at += S::LANES;
        }
        if full < len {
            let rest = len - full;
            let value = step(
                load_partial::<S, f32>(acc.add(full), rest, 0.0),
                load_partial::<S, f32>(shift.add(full), rest, 0.0),
                load_partial::<S, T>(x.add(full), rest, 0.0),
            );
            store_partial::<S, f32>(acc.add(full), rest, value);
        }
    }
}

/// `out[i] = e^(x[i] - shift[i]) · scale[i]` for `len` elements, rounded once to `T`.
///
/// # Safety
/// `len` elements readable at `x`, `shift` and `scale` and writable at `out`; the host
/// supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn exp_scale_body<S: Simd, T: Storage>(
    x: *const T,
    shift: *const f32,
    scale: *const f32,
    out: *mut T,
    len: usize,
) {
    // SAFETY: (whole body) full vectors cover elements below `len - len % LANES`, the tail
    // goes through `load_partial`/`store_partial` with the remaining count.
    unsafe {
        let step = |v: S::V, s: S::V, k: S::V| S::mul(exp_full::<S>(S::sub(v, s)), k);
        let full = len - len % S::LANES;
        let mut at = 0;
        while at < full {
            let value = step(
                T::load::<S>(x.add(at)),
                S::load_f32(shift.add(at)),
                S::load_f32(scale.add(at)),
            );
            T::store::<S>(out.add(at), value);
            at += S::LANES;
        }
        if full < len {
            let rest = len - full;
            let value = step(
                load_partial::<S, T>(x.add(full), rest, 0.0),
                load_partial::<S, f32>(shift.add(full), rest, 0.0),
                load_partial::<S, f32>(scale.add(full), rest, 0.0),
            );
            store_partial::<S, T>(out.add(full), rest, value);
        }
    }
}

/// Stamps `#[target_feature]` wrappers of the streaming bodies for one tier.
macro_rules! stamp_stream_tiers {
    ($( $module:ident: $simd:ty, [$($attr:meta),*]; )*) => {$(
        pub(crate) mod $module {
            use super::*;

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn binary<T: Storage, const OP: u8>(a: RawOperand<T>, b: RawOperand<T>, out: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::binary_body::<$simd, T, OP>(a, b, out, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn sum<T: Storage>(x: *const T, len: usize) -> f32 {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::sum_body::<$simd, T>(x, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn accumulate<T: Storage, const MAX: bool>(acc: *mut f32, x: *const T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::accumulate_body::<$simd, T, MAX>(acc, x, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn max<T: Storage>(x: *const T, len: usize) -> f32 {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::max_body::<$simd, T>(x, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn unary<T: Storage, const OP: usize>(x: *const T, out: *mut T, len: usize, consts: UnaryConsts) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::unary_body::<$simd, T, OP>(x, out, len, consts) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn accumulate_exp<T: Storage>(acc: *mut f32, shift: *const f32, x: *const T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::accumulate_exp_body::<$simd, T>(acc, shift, x, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn exp_scale<T: Storage>(x: *const T, shift: *const f32, scale: *const f32, out: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::exp_scale_body::<$simd, T>(x, shift, scale, out, len) }
            }
        }
    )*};
}

stamp_stream_tiers! {
    generic: super::super::simd::Portable, [inline(never)];
}

#[cfg(target_arch = "x86_64")]
stamp_stream_tiers! {
    avx2: super::super::x86::Avx2, [target_feature(enable = "avx2,fma,f16c")];
    avx512: super::super::x86::Avx512, [target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")];
}

/// Calls the tier's stamped wrapper.
macro_rules! dispatch_stream {
    ($isa:expr, $name:ident::<$($g:tt),*>($($arg:expr),* $(,)?)) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::$name::<$($g),*>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => avx512::$name::<$($g),*>($($arg),*),
            _ => generic::$name::<$($g),*>($($arg),*),
        }
    };
}

/// Lowers an operand after checking its length against `len`.
fn raw_operand<T: Storage>(name: &str, operand: Operand<'_, T>, len: usize) -> RawOperand<T> {
    match operand {
        Operand::Slice(values) => {
            super::check_len("binary", name, values.len(), len);
            RawOperand::Run(values.as_ptr())
        }
        Operand::Splat(value) => RawOperand::Splat(value),
    }
}

/// `out[i] = a[i] ∘ b[i]` (f32 arithmetic, one rounding to `T`), a [`Operand::Splat`]
/// standing for the same value at every `i`.
///
/// Panics if a slice operand differs in length from `out` or the host lacks `isa`.
pub fn binary<T: Storage>(
    isa: Isa,
    op: BinaryOp,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    out: &mut [T],
) {
    super::check_isa("binary", isa);
    let len = out.len();
    let (a, b) = (raw_operand("a", a, len), raw_operand("b", b, len));
    let out = out.as_mut_ptr();
    // SAFETY: `out` holds `len` elements and every run operand was checked to hold `len`; the
    // tier was checked.
    unsafe {
        match op {
            BinaryOp::Add => dispatch_stream!(isa, binary::<T, 0>(a, b, out, len)),
            BinaryOp::Sub => dispatch_stream!(isa, binary::<T, 1>(a, b, out, len)),
            BinaryOp::Mul => dispatch_stream!(isa, binary::<T, 2>(a, b, out, len)),
            BinaryOp::Div => dispatch_stream!(isa, binary::<T, 3>(a, b, out, len)),
            BinaryOp::Maximum => dispatch_stream!(isa, binary::<T, 4>(a, b, out, len)),
            BinaryOp::Minimum => dispatch_stream!(isa, binary::<T, 5>(a, b, out, len)),
        }
    }
}

/// `Σ x` in f32 (see the module's error bound; 0 for an empty slice).
///
/// Panics if the host lacks `isa`.
pub fn sum<T: Storage>(isa: Isa, x: &[T]) -> f32 {
    super::check_isa("sum", isa);
    // SAFETY: `x` holds `x.len()` elements; the tier was checked.
    unsafe { dispatch_stream!(isa, sum::<T>(x.as_ptr(), x.len())) }
}

/// `acc[i] = acc[i] + x[i]` ([`ReduceOp::Sum`], f32, one rounding: the same bits as scalar
/// code adding the rows in the same order) or the NaN-propagating larger of the two
/// ([`ReduceOp::Max`], `acc[i]` on a tie; NaN payloads unspecified): one step of a reduction
/// over a strided axis, rows of the reduced axis added into one accumulator row.
///
/// Panics if the lengths differ or the host lacks `isa`.
pub fn accumulate<T: Storage>(isa: Isa, op: ReduceOp, acc: &mut [f32], x: &[T]) {
    super::check_isa("accumulate", isa);
    super::check_len("accumulate", "x", x.len(), acc.len());
    let (acc, x, len) = (acc.as_mut_ptr(), x.as_ptr(), x.len());
    // SAFETY: both hold `len` elements (checked); the tier was checked.
    unsafe {
        match op {
            ReduceOp::Sum => dispatch_stream!(isa, accumulate::<T, false>(acc, x, len)),
            ReduceOp::Max => dispatch_stream!(isa, accumulate::<T, true>(acc, x, len)),
        }
    }
}

/// The largest element of `x` (exact; NaN if any element is NaN, -inf for an empty slice).
/// Lanes are combined in a tier-dependent order, so which zero a `±0` maximum gives is
/// unspecified.
///
/// Panics if the host lacks `isa`.
pub fn max<T: Storage>(isa: Isa, x: &[T]) -> f32 {
    super::check_isa("max", isa);
    // SAFETY: `x` holds `x.len()` elements; the tier was checked.
    unsafe { dispatch_stream!(isa, max::<T>(x.as_ptr(), x.len())) }
}

/// `out[i] = f(x[i])`, computed in f32 and rounded once to `T` (see the module's error
/// bounds; [`UnaryOp::is_exact`] ops are correctly rounded f32 results).
///
/// Panics if the lengths differ, a `Clip` bound is NaN or the host lacks `isa`.
pub fn unary<T: Storage>(isa: Isa, op: UnaryOp, x: &[T], out: &mut [T]) {
    super::check_isa("unary", isa);
    super::check_len("unary", "x", x.len(), out.len());
    let (a, b) = match op {
        UnaryOp::Clip(lo, hi) => {
            assert!(
                !lo.is_nan() && !hi.is_nan(),
                "unary: clip bounds {lo}, {hi}"
            );
            (lo, -hi)
        }
        UnaryOp::Rsqrt(eps) | UnaryOp::Inverse(eps) | UnaryOp::Log(eps) => (eps, 0.0),
        _ => (0.0, 0.0),
    };
    let consts = UnaryConsts {
        a,
        b,
        a_positive_zero: a.to_bits() == 0,
        b_positive_zero: b.to_bits() == 0,
    };
    let (x, out, len) = (x.as_ptr(), out.as_mut_ptr(), out.len());
    // SAFETY: both hold `len` elements (checked); the tier was checked.
    unsafe {
        match op.code() {
            0 => dispatch_stream!(isa, unary::<T, 0>(x, out, len, consts)),
            1 => dispatch_stream!(isa, unary::<T, 1>(x, out, len, consts)),
            2 => dispatch_stream!(isa, unary::<T, 2>(x, out, len, consts)),
            3 => dispatch_stream!(isa, unary::<T, 3>(x, out, len, consts)),
            4 => dispatch_stream!(isa, unary::<T, 4>(x, out, len, consts)),
            5 => dispatch_stream!(isa, unary::<T, 5>(x, out, len, consts)),
            6 => dispatch_stream!(isa, unary::<T, 6>(x, out, len, consts)),
            7 => dispatch_stream!(isa, unary::<T, 7>(x, out, len, consts)),
            8 => dispatch_stream!(isa, unary::<T, 8>(x, out, len, consts)),
            9 => dispatch_stream!(isa, unary::<T, 9>(x, out, len, consts)),
            10 => dispatch_stream!(isa, unary::<T, 10>(x, out, len, consts)),
            11 => dispatch_stream!(isa, unary::<T, 11>(x, out, len, consts)),
            12 => dispatch_stream!(isa, unary::<T, 12>(x, out, len, consts)),
            13 => dispatch_stream!(isa, unary::<T, 13>(x, out, len, consts)),
            14 => dispatch_stream!(isa, unary::<T, 14>(x, out, len, consts)),
            15 => dispatch_stream!(isa, unary::<T, 15>(x, out, len, consts)),
            16 => dispatch_stream!(isa, unary::<T, 16>(x, out, len, consts)),
            _ => dispatch_stream!(isa, unary::<T, 17>(x, out, len, consts)),
        }
    }
}

/// Name of the column softmax built on [`accumulate_exp`] and [`exp_scale`] for `T` storage
/// with `isa`, e.g. `avx512_softmaxcolumns_f16_16n`.
pub fn softmax_columns_kernel_name<T: Storage>(isa: Isa) -> &'static str {
    SOFTMAX_COLUMNS_NAMES[tier_index(isa)][0][dtype_index::<T>()]
}

/// `acc[i] = acc[i] + e^(x[i] - shift[i])`, in f32 with [`UnaryOp::Exp`]'s `exp` (within
/// [`UNARY_EXP_ULPS`] of the exact power, gradual underflow; `-inf` arguments give 0, NaN
/// gives NaN) and one rounding of the addition: one row of a softmax denominator over a
/// non-innermost axis, `shift` the column maxima.
///
/// Panics if the lengths differ or the host lacks `isa`.
pub fn accumulate_exp<T: Storage>(isa: Isa, acc: &mut [f32], shift: &[f32], x: &[T]) {
    super::check_isa("accumulate_exp", isa);
    super::check_len("accumulate_exp", "x", x.len(), acc.len());
    super::check_len("accumulate_exp", "shift", shift.len(), acc.len());
    let (acc, shift, x, len) = (acc.as_mut_ptr(), shift.as_ptr(), x.as_ptr(), x.len());
    // SAFETY: all three hold `len` elements (checked); the tier was checked.
    unsafe { dispatch_stream!(isa, accumulate_exp::<T>(acc, shift, x, len)) }
}

/// `out[i] = e^(x[i] - shift[i]) · scale[i]`, in f32 (the `exp` of [`accumulate_exp`], one
/// rounding of the product) and rounded once to `T`: one row of a softmax over a
/// non-innermost axis, `scale` the reciprocal column denominators.
///
/// Panics if the lengths differ or the host lacks `isa`.
pub fn exp_scale<T: Storage>(isa: Isa, x: &[T], shift: &[f32], scale: &[f32], out: &mut [T]) {
    super::check_isa("exp_scale", isa);
    let len = out.len();
    super::check_len("exp_scale", "x", x.len(), len);
    super::check_len("exp_scale", "shift", shift.len(), len);
    super::check_len("exp_scale", "scale", scale.len(), len);
    let (x, shift, scale, out) = (x.as_ptr(), shift.as_ptr(), scale.as_ptr(), out.as_mut_ptr());
    // SAFETY: all four hold `len` elements (checked); the tier was checked.
    unsafe { dispatch_stream!(isa, exp_scale::<T>(x, shift, scale, out, len)) }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::cpu;

    /// Sizes: 1, primes, both vector widths ± 1, and longer than one unrolled step.
    const SIZES: [usize; 11] = [1, 2, 7, 8, 9, 15, 16, 17, 31, 64, 257];

    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
            })
            .collect()
    }

    fn tiers() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&isa| {
                let available = cpu::isa_available(isa);
                if !available {
                    eprintln!("skipped tier {isa}: not available on this host");
                }
                available
            })
            .collect()
    }

    /// Every tier, op, operand form and size gives exactly scalar f32 arithmetic rounded once.
    fn binary_is_exact<T: Storage + PartialEq + std::fmt::Debug>() {
        for isa in tiers() {
            for op in BinaryOp::ALL {
                for len in SIZES {
                    let a: Vec<T> = values(1, len).into_iter().map(T::from_f32).collect();
                    let b: Vec<T> = values(2, len).into_iter().map(T::from_f32).collect();
                    let splat = T::from_f32(-1.375).to_f32();
                    let forms: [(Operand<'_, T>, Operand<'_, T>); 4] = [
                        (Operand::Slice(&a), Operand::Slice(&b)),
                        (Operand::Slice(&a), Operand::Splat(splat)),
                        (Operand::Splat(splat), Operand::Slice(&b)),
                        (Operand::Splat(splat), Operand::Splat(0.5)),
                    ];
                    for (form, (x, y)) in forms.into_iter().enumerate() {
                        let mut out = vec![T::default(); len];
                        binary(isa, op, x, y, &mut out);
                        for i in 0..len {
                            let lhs = match x {
                                Operand::Slice(s) => s[i].to_f32(),
                                Operand::Splat(v) => v,
                            };
                            let rhs = match y {
                                Operand::Slice(s) => s[i].to_f32(),
                                Operand::Splat(v) => v,
                            };
                            let want = T::from_f32(op.apply(lhs, rhs));
                            assert_eq!(
                                out[i],
                                want,
                                "{} form {form} len {len} element {i}",
                                binary_kernel_name::<T>(op, isa)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn binary_f32_is_exact_on_every_tier() {
        binary_is_exact::<f32>();
    }

    #[test]
    fn binary_f16_is_exact_on_every_tier() {
        binary_is_exact::<f16>();
    }

    #[test]
    #[allow(clippy::cast_precision_loss, reason = "test sizes are far below 2^24")]
    fn sum_is_within_its_bound_on_every_tier() {
        for isa in tiers() {
            for len in SIZES.into_iter().chain([0, 1000, 4099]) {
                let x = values(3, len);
                let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
                let abs: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
                let got = f64::from(sum(isa, &x));
                let bound = (len as f64 / 32.0 + 6.0) * abs * f64::from(f32::EPSILON) / 2.0;
                assert!(
                    (got - exact).abs() <= bound,
                    "{isa} len {len}: {got} vs {exact}"
                );
                let halves: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let exact: f64 = halves.iter().map(|&v| f64::from(v)).sum();
                let got = f64::from(sum(isa, &halves));
                assert!((got - exact).abs() <= bound, "{isa} f16 len {len}");
            }
        }
    }

    #[test]
    fn names_follow_the_pattern() {
        assert_eq!(
            binary_kernel_name::<f16>(BinaryOp::Mul, Isa::Amx),
            "avx512_mul_f16_16n"
        );
        assert_eq!(
            binary_kernel_name::<f32>(BinaryOp::Div, Isa::Generic),
            "generic_realdiv_f32_8n"
        );
    }

    /// Edge values for the exact checks: zeros of both signs, infinities, NaN, tiny and huge.
    const SPECIALS: [f32; 12] = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0,
        -1.0,
        1e-40,
        -1e-40,
        3.0e38,
        -3.0e38,
        0.5,
    ];

    /// `values(seed, len)` with the specials spliced in at odd positions.
    fn with_specials(seed: u64, len: usize) -> Vec<f32> {
        let mut x = values(seed, len);
        for (k, &special) in SPECIALS.iter().enumerate() {
            let at = (k * 7 + 3) % len.max(1);
            if at < x.len() {
                x[at] = special;
            }
        }
        x
    }

    /// Bits equal, or both NaN.
    fn same<T: Storage>(a: T, b: T) -> bool {
        let (a, b) = (a.to_f32(), b.to_f32());
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    fn accumulate_is_exact<T: Storage>() {
        for isa in tiers() {
            for len in SIZES {
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    let init = if op == ReduceOp::Sum {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    };
                    let mut acc = vec![init; len];
                    let mut want = acc.clone();
                    for row in 0..5u64 {
                        let x: Vec<T> = with_specials(row + 10, len)
                            .into_iter()
                            .map(T::from_f32)
                            .collect();
                        accumulate(isa, op, &mut acc, &x);
                        for (w, v) in want.iter_mut().zip(&x) {
                            let v = v.to_f32();
                            *w = match op {
                                ReduceOp::Sum => *w + v,
                                ReduceOp::Max if w.is_nan() || v.is_nan() => f32::NAN,
                                ReduceOp::Max => {
                                    if v > *w {
                                        v
                                    } else {
                                        *w
                                    }
                                }
                            };
                        }
                        for i in 0..len {
                            assert!(
                                same(acc[i], want[i]),
                                "{isa} {op:?} {} len {len} row {row} element {i}: {} vs {}",
                                T::NAME,
                                acc[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn accumulate_f32_is_exact_on_every_tier() {
        accumulate_is_exact::<f32>();
    }

    #[test]
    fn accumulate_f16_is_exact_on_every_tier() {
        accumulate_is_exact::<f16>();
    }

    #[test]
    fn max_is_exact_on_every_tier() {
        for isa in tiers() {
            for len in SIZES.into_iter().chain([0, 1000]) {
                let mut x = values(5, len);
                let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max(isa, &x), want, "{isa} len {len}");
                let halves: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let want16 = halves
                    .iter()
                    .map(|v| v.to_f32())
                    .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max(isa, &halves), want16, "{isa} f16 len {len}");
                if len > 0 {
                    x[len / 2] = f32::NAN;
                    assert!(max(isa, &x).is_nan(), "{isa} NaN len {len}");
                    x[len / 2] = f32::INFINITY;
                    assert_eq!(max(isa, &x), f32::INFINITY, "{isa} inf len {len}");
                }
            }
            assert_eq!(max(isa, &[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        }
    }

    /// IEEE 754-2019 `maximum`.
    fn maximum(a: f32, b: f32) -> f32 {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else if a == b {
            if a.is_sign_negative() { b } else { a }
        } else {
            a.max(b)
        }
    }

    /// IEEE 754-2019 `minimum`.
    fn minimum(a: f32, b: f32) -> f32 {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else if a == b {
            if a.is_sign_negative() { a } else { b }
        } else {
            a.min(b)
        }
    }

    /// The correctly rounded f32 result of the exact ops.
    fn exact_reference(op: UnaryOp, x: f32) -> f32 {
        match op {
            UnaryOp::Identity => x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Square => x * x,
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Relu => {
                if x > 0.0 || x.is_nan() {
                    x
                } else {
                    0.0
                }
            }
            UnaryOp::Clip(lo, hi) => minimum(maximum(x, lo), hi),
            UnaryOp::Inverse(eps) => (1.0 / (f64::from(x) + f64::from(eps))) as f32,
            other => panic!("{other:?} is not exact"),
        }
    }

    fn exact_unary_ops() -> Vec<UnaryOp> {
        let mut ops = vec![
            UnaryOp::Identity,
            UnaryOp::Abs,
            UnaryOp::Square,
            UnaryOp::Sqrt,
            UnaryOp::Relu,
            UnaryOp::Inverse(0.0),
        ];
        for lo in [0.0, -0.0, -1.5, 0.25] {
            for hi in [0.0, -0.0, 2.0] {
                ops.push(UnaryOp::Clip(lo, hi));
            }
        }
        ops
    }

    fn exact_unary_ops_are_exact<T: Storage>() {
        for isa in tiers() {
            for op in exact_unary_ops() {
                assert!(op.is_exact());
                for len in SIZES {
                    let x: Vec<T> = with_specials(6, len).into_iter().map(T::from_f32).collect();
                    let mut out = vec![T::default(); len];
                    unary(isa, op, &x, &mut out);
                    for i in 0..len {
                        let want = T::from_f32(exact_reference(op, x[i].to_f32()));
                        assert!(
                            same(out[i], want),
                            "{} len {len} element {i}: {:?} -> {} vs {}",
                            unary_kernel_name::<T>(op, isa),
                            x[i].to_f32(),
                            out[i].to_f32(),
                            want.to_f32()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exact_unary_ops_are_exact_on_every_tier_f32() {
        exact_unary_ops_are_exact::<f32>();
    }

    #[test]
    fn exact_unary_ops_are_exact_on_every_tier_f16() {
        exact_unary_ops_are_exact::<f16>();
    }

    /// Distance from `got` to `want` (an f64) in ulps of `want`'s f32 binade (the subnormal
    /// step below 2^-126).
    fn ulps(got: f32, want: f64) -> f64 {
        if got.is_nan() || want.is_nan() {
            return if got.is_nan() && want.is_nan() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        if got.is_infinite() || want.abs() >= f64::from(f32::MAX) {
            return if f64::from(got) == want || (got.is_infinite() && want.abs() > 3.4028235e38) {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let binade = want.abs().max(f64::from(f32::MIN_POSITIVE)).log2().floor();
        (f64::from(got) - want).abs() / 2f64.powf(binade - 23.0)
    }

    /// The f64 values the approximate ops approximate.
    fn f64_reference(op: UnaryOp, x: f64) -> f64 {
        let sigmoid = |x: f64| {
            if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            }
        };
        match op {
            UnaryOp::Rsqrt(eps) => 1.0 / (x + f64::from(eps)).sqrt(),
            UnaryOp::Inverse(eps) => 1.0 / (x + f64::from(eps)),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Log(eps) => (x + f64::from(eps)).ln(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Erf if x.abs() < 2.5 => erf_series(x),
            UnaryOp::Erf => x.signum() * (1.0 - erfc64(x.abs())),
            UnaryOp::GeluExact => 0.5 * x * erfc64(-x / std::f64::consts::SQRT_2),
            other => panic!("{other:?} has no f64 reference here"),
        }
    }

    /// Every approximate op, on every tier, over a dense sweep of its useful range, stays
    /// within the module's stated ulp bound (and below 2^-126 absolute where it flushes).
    #[test]
    #[allow(clippy::cast_precision_loss, reason = "sweep indices are small")]
    fn approximate_unary_ops_stay_within_their_bounds() {
        let cases: [(UnaryOp, f32, f32, f64); 6] = [
            (UnaryOp::Rsqrt(1e-5), 0.0, 1e4, UNARY_RSQRT_ULPS),
            (UnaryOp::Inverse(1e-6), -1e3, 1e3, UNARY_INVERSE_ULPS),
            (UnaryOp::Exp, -104.0, 89.0, UNARY_EXP_ULPS),
            (UnaryOp::Sigmoid, -87.0, 100.0, UNARY_EXP_ULPS + 1.0),
            (UnaryOp::Silu, -87.0, 100.0, UNARY_EXP_ULPS + 2.0),
            (UnaryOp::Exp, -20.0, 20.0, UNARY_EXP_ULPS),
        ];
        const N: usize = 200_003;
        for isa in tiers() {
            for (op, lo, hi, bound) in cases {
                let x: Vec<f32> = (0..N)
                    .map(|i| lo + (hi - lo) * (i as f32 / (N - 1) as f32))
                    .collect();
                let mut out = vec![0f32; N];
                unary(isa, op, &x, &mut out);
                let mut worst = (0.0, 0.0);
                for (&v, &got) in x.iter().zip(&out) {
                    let want = f64_reference(op, f64::from(v));
                    let err = ulps(got, want);
                    let flushed = want.abs() < f64::from(f32::MIN_POSITIVE)
                        && (f64::from(got) - want).abs() < f64::from(f32::MIN_POSITIVE);
                    if !flushed && err > worst.0 {
                        worst = (err, v);
                    }
                }
                assert!(
                    worst.0 <= bound,
                    "{} worst {} ulps at {} (bound {bound})",
                    unary_kernel_name::<f32>(op, isa),
                    worst.0,
                    worst.1
                );
                eprintln!(
                    "{} worst {:.3} ulps",
                    unary_kernel_name::<f32>(op, isa),
                    worst.0
                );
            }
            let specials = [
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                -0.0,
                200.0,
                -200.0,
            ];
            let mut out = [0f32; 7];
            unary(isa, UnaryOp::Exp, &specials, &mut out);
            assert_eq!(out[..2], [f32::INFINITY, 0.0]);
            assert!(out[2].is_nan());
            assert_eq!(out[3..], [1.0, 1.0, f32::INFINITY, 0.0]);
            unary(isa, UnaryOp::Sigmoid, &specials, &mut out);
            assert_eq!(out[..2], [1.0, 0.0]);
            assert!(out[2].is_nan());
            assert_eq!(out[3..], [0.5, 0.5, 1.0, 0.0]);
            unary(isa, UnaryOp::Silu, &specials, &mut out);
            assert_eq!(out[0], f32::INFINITY);
            assert!(out[1].is_nan() && out[2].is_nan());
            assert_eq!(out[5], 200.0);
        }
    }

    /// `erfc x` in f64 (x ≥ 0 by `2 - erfc(-x)` otherwise): `1 -` [`erf_series`] below
    /// 2.5, the continued fraction above.
    #[allow(clippy::cast_precision_loss, reason = "small term indices")]
    fn erfc64(x: f64) -> f64 {
        if x < 0.0 {
            return 2.0 - erfc64(-x);
        }
        if x.is_infinite() {
            return 0.0;
        }
        if x < 2.5 {
            return 1.0 - erf_series(x);
        }
        let mut fraction = x;
        for n in (1..300).rev() {
            fraction = x + (n as f64 / 2.0) / fraction;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / fraction
    }

    /// `erf x = 2/√π·e^{-x²}·Σ 2ⁿx^{2n+1}/(2n+1)!!` (positive terms: no cancellation).
    #[allow(clippy::cast_precision_loss, reason = "small term indices")]
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= 2.0 * x * x / (2 * n + 1) as f64;
            sum += term;
        }
        2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
    }

    /// The worst ulp error of `op` on `isa` over `x` against [`f64_reference`], and where.
    fn worst_ulps(isa: Isa, op: UnaryOp, x: &[f32]) -> (f64, f32) {
        let mut out = vec![0f32; x.len()];
        unary(isa, op, x, &mut out);
        let mut worst = (0.0, 0.0);
        for (&v, &got) in x.iter().zip(&out) {
            let err = ulps(got, f64_reference(op, f64::from(v)));
            if err > worst.0 {
                worst = (err, v);
            }
        }
        worst
    }

    /// Every `step`-th f32 bit pattern from `from` to `to` (inclusive range of bits).
    fn bit_sweep(from: u32, to: u32, step: usize) -> Vec<f32> {
        (from..=to).step_by(step).map(f32::from_bits).collect()
    }

    /// IEEE maximum/minimum on every pair of special values, every tier and operand form,
    /// f32 and f16: the bits of [`BinaryOp::apply`] (which the tests pin down for ties).
    #[test]
    fn maximum_and_minimum_are_ieee_on_special_pairs() {
        assert_eq!(BinaryOp::Maximum.apply(-0.0, 0.0).to_bits(), 0);
        assert_eq!(BinaryOp::Maximum.apply(0.0, -0.0).to_bits(), 0);
        assert_eq!(
            BinaryOp::Minimum.apply(0.0, -0.0).to_bits(),
            (-0f32).to_bits()
        );
        assert_eq!(
            BinaryOp::Minimum.apply(-0.0, 0.0).to_bits(),
            (-0f32).to_bits()
        );
        assert!(BinaryOp::Maximum.apply(f32::NAN, 1.0).is_nan());
        assert!(BinaryOp::Minimum.apply(1.0, f32::NAN).is_nan());
        fn check<T: Storage>(isa: Isa) {
            let specials = [
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::from_bits(1),
                -1e-40,
                1.0,
                -1.0,
                0.5,
                3e38,
                -3e38,
            ];
            let n = specials.len();
            let a: Vec<T> = (0..n * n).map(|k| T::from_f32(specials[k / n])).collect();
            let b: Vec<T> = (0..n * n).map(|k| T::from_f32(specials[k % n])).collect();
            for op in [BinaryOp::Maximum, BinaryOp::Minimum] {
                let mut out = vec![T::default(); n * n];
                for (x, y, splat) in [
                    (Operand::Slice(&a), Operand::Slice(&b), None),
                    (Operand::Slice(&a), Operand::Splat(-0.0), Some(-0.0)),
                    (Operand::Splat(0.0), Operand::Slice(&b), Some(0.0)),
                ] {
                    binary(isa, op, x, y, &mut out);
                    for (k, got) in out.iter().enumerate() {
                        let (lhs, rhs) = match splat {
                            None => (a[k].to_f32(), b[k].to_f32()),
                            Some(v) if matches!(x, Operand::Splat(_)) => (v, b[k].to_f32()),
                            Some(v) => (a[k].to_f32(), v),
                        };
                        let want = T::from_f32(op.apply(lhs, rhs)).to_f32();
                        let got = got.to_f32();
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "{} {op:?}({lhs}, {rhs}) = {got}, want {want}",
                            binary_kernel_name::<T>(op, isa)
                        );
                    }
                }
            }
        }
        for isa in tiers() {
            check::<f32>(isa);
            check::<f16>(isa);
        }
    }

    /// `log` (with and without ε) over every binade, subnormals included, and a dense sweep
    /// around 1 (where the result is small), within [`UNARY_LOG_ULPS`]; specials exact.
    #[test]
    #[allow(clippy::cast_precision_loss, reason = "sweep indices are small")]
    fn log_stays_within_its_bound() {
        let near_one: Vec<f32> = (0..200_001)
            .map(|i| 0.5 + 1.5 * (i as f32 / 200_000.0))
            .collect();
        let every_binade = bit_sweep(1, 0x7f7f_ffff, 4099);
        for isa in tiers() {
            for op in [UnaryOp::Log(0.0), UnaryOp::Log(1e-6), UnaryOp::Log(-0.25)] {
                for x in [&near_one, &every_binade] {
                    let (worst, at) = worst_ulps(isa, op, x);
                    let name = unary_kernel_name::<f32>(op, isa);
                    assert!(
                        worst <= UNARY_LOG_ULPS,
                        "{name} {op:?}: {worst} ulps at {at}"
                    );
                    eprintln!("{name} {op:?} worst {worst:.3} ulps");
                }
            }
            let specials = [
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                -1.0,
                1.0,
                f32::from_bits(1),
                f32::MAX,
            ];
            let mut out = [0f32; 9];
            unary(isa, UnaryOp::Log(0.0), &specials, &mut out);
            assert_eq!(
                out[..3],
                [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::INFINITY]
            );
            assert!(out[3].is_nan() && out[4].is_nan() && out[5].is_nan());
            assert_eq!(out[6].to_bits(), 0);
            assert!((f64::from(out[7]) - (-149.0 * std::f64::consts::LN_2)).abs() < 1e-5);
            assert!((f64::from(out[8]) - f64::from(f32::MAX).ln()).abs() < 1e-5);
            // log(x + ε) at x = -ε is -inf, below it NaN.
            unary(isa, UnaryOp::Log(0.5), &[-0.5, -0.75], &mut out[..2]);
            assert_eq!(out[0], f32::NEG_INFINITY);
            assert!(out[1].is_nan());
        }
    }

    /// `tanh` over dense linear sweeps and every small binade within [`UNARY_TANH_ULPS`];
    /// signed zeros, subnormals, ±inf and NaN exact.
    #[test]
    #[allow(clippy::cast_precision_loss, reason = "sweep indices are small")]
    fn tanh_stays_within_its_bound() {
        let linear: Vec<f32> = (0..400_001)
            .map(|i| -12.0 + 24.0 * (i as f32 / 400_000.0))
            .collect();
        let mut small = bit_sweep(1, 0x3f80_0000, 1031);
        small.extend(small.clone().iter().map(|v| -v));
        for isa in tiers() {
            for x in [&linear, &small] {
                let (worst, at) = worst_ulps(isa, UnaryOp::Tanh, x);
                let name = unary_kernel_name::<f32>(UnaryOp::Tanh, isa);
                assert!(worst <= UNARY_TANH_ULPS, "{name}: {worst} ulps at {at}");
                eprintln!("{name} worst {worst:.3} ulps");
            }
            let specials = [
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::from_bits(1),
                -f32::from_bits(1),
                100.0,
            ];
            let mut out = [0f32; 8];
            unary(isa, UnaryOp::Tanh, &specials, &mut out);
            assert_eq!(out[0].to_bits(), 0);
            assert_eq!(out[1].to_bits(), (-0f32).to_bits());
            assert_eq!(out[2..4], [1.0, -1.0]);
            assert!(out[4].is_nan());
            assert_eq!(out[5..], [f32::from_bits(1), -f32::from_bits(1), 1.0]);
        }
    }

    /// `erf` and exact gelu over dense sweeps (gelu down to where it underflows) and every
    /// small binade within [`UNARY_ERF_ULPS`], [`GELU_EXACT_ULPS`] (results below
    /// [`GELU_EXACT_TINY_BELOW`] within [`GELU_EXACT_TINY_ULPS`] below [`GELU_EXACT_TINY_BELOW`]); special values exact.
    #[test]
    #[allow(clippy::cast_precision_loss, reason = "sweep indices are small")]
    fn erf_and_exact_gelu_stay_within_their_bounds() {
        let linear = |lo: f32, hi: f32| -> Vec<f32> {
            (0..400_001)
                .map(|i| lo + (hi - lo) * (i as f32 / 400_000.0))
                .collect()
        };
        let mut small = bit_sweep(1, 0x3fc0_0000, 1031);
        small.extend(small.clone().iter().map(|v| -v));
        for isa in tiers() {
            for (op, x, bound) in [
                (UnaryOp::Erf, linear(-5.0, 5.0), UNARY_ERF_ULPS),
                (UnaryOp::Erf, small.clone(), UNARY_ERF_ULPS),
                (UnaryOp::GeluExact, linear(-15.0, 10.0), GELU_EXACT_ULPS),
                (UnaryOp::GeluExact, linear(-3.0, 3.0), GELU_EXACT_ULPS),
                (UnaryOp::GeluExact, small.clone(), GELU_EXACT_ULPS),
            ] {
                let mut out = vec![0f32; x.len()];
                unary(isa, op, &x, &mut out);
                let mut worst = (0.0, 0.0);
                for (&v, &got) in x.iter().zip(&out) {
                    let want = f64_reference(op, f64::from(v));
                    if op == UnaryOp::GeluExact && want.abs() < GELU_EXACT_TINY_BELOW {
                        let err = ulps(got, want);
                        assert!(err <= GELU_EXACT_TINY_ULPS, "{op:?} at {v}: {got}, {want}");
                        continue;
                    }
                    let err = ulps(got, want);
                    if err > worst.0 {
                        worst = (err, v);
                    }
                }
                let name = unary_kernel_name::<f32>(op, isa);
                assert!(worst.0 <= bound, "{name}: {} ulps at {}", worst.0, worst.1);
                eprintln!("{name} worst {:.3} ulps at {}", worst.0, worst.1);
            }
            let specials = [
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::from_bits(1),
                -f32::from_bits(1),
                100.0,
                -100.0,
            ];
            let mut out = [0f32; 9];
            unary(isa, UnaryOp::Erf, &specials, &mut out);
            assert_eq!(out[0].to_bits(), 0);
            assert_eq!(out[1].to_bits(), (-0f32).to_bits());
            assert_eq!(out[2..4], [1.0, -1.0]);
            assert!(out[4].is_nan());
            assert_eq!(out[7..], [1.0, -1.0]);
            unary(isa, UnaryOp::GeluExact, &specials, &mut out);
            assert_eq!(out[0].to_bits(), 0);
            assert_eq!(out[1], 0.0);
            assert_eq!(out[2], f32::INFINITY);
            assert!(out[3].is_nan() && out[4].is_nan());
            assert_eq!(out[5..7], [0.0, 0.0]);
            assert_eq!(out[7..], [100.0, 0.0]);
        }
    }

    /// `cube`: f16 storage exact (before the storage rounding), f32 within its ulp bound,
    /// specials kept.
    #[test]
    fn cube_is_exact_for_f16_and_within_its_bound_for_f32() {
        for isa in tiers() {
            let halves: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
            let mut out = vec![f16::ZERO; halves.len()];
            unary(isa, UnaryOp::Cube, &halves, &mut out);
            for (&x, &got) in halves.iter().zip(&out) {
                let want = f16::from_f32((f64::from(x.to_f32()).powi(3)) as f32);
                assert!(same(got, want), "{isa} cube f16 {x}: {got} vs {want}");
            }
            let mut x = with_specials(21, 4099);
            x.extend([1e-13f32, -2e-13, 1e13, -7e12, 5.5e-15]);
            let mut out = vec![0f32; x.len()];
            unary(isa, UnaryOp::Cube, &x, &mut out);
            for (&v, &got) in x.iter().zip(&out) {
                let want = f64::from(v).powi(3);
                let tiny = want.abs() < f64::from(f32::MIN_POSITIVE)
                    && (f64::from(got) - want).abs() <= 2f64.powi(-149);
                assert!(
                    tiny || ulps(got, want) <= UNARY_CUBE_ULPS,
                    "{isa} cube f32 {v}: {got} vs {want}"
                );
            }
        }
    }

    /// The column-softmax steps against f64: `exp` within its ulp bound of the f32
    /// difference, the sum and the product one rounding each; -inf gives 0, NaN NaN.
    #[test]
    #[allow(clippy::cast_precision_loss, reason = "test sizes are small")]
    fn softmax_column_steps_stay_within_their_bounds() {
        fn check<T: Storage>(isa: Isa) {
            for len in SIZES {
                let shift: Vec<f32> = values(31, len).iter().map(|v| v * 4.0).collect();
                let scale: Vec<f32> = values(32, len).iter().map(|v| 0.25 + v.abs()).collect();
                let mut x: Vec<T> = values(33, len)
                    .iter()
                    .map(|&v| T::from_f32(v * 10.0))
                    .collect();
                x[0] = T::from_f32(f32::NEG_INFINITY);
                let mut acc: Vec<f32> = values(34, len).iter().map(|v| v.abs()).collect();
                let before = acc.clone();
                accumulate_exp(isa, &mut acc, &shift, &x);
                let mut out = vec![T::default(); len];
                exp_scale(isa, &x, &shift, &scale, &mut out);
                for i in 0..len {
                    let diff = x[i].to_f32() - shift[i];
                    let e = f64::from(diff).exp();
                    let want_acc = f64::from(before[i]) + e;
                    let err = (f64::from(acc[i]) - want_acc).abs();
                    let bound = (UNARY_EXP_ULPS * 2.0 * e + want_acc) * f64::from(f32::EPSILON);
                    assert!(err <= bound, "{isa} {} acc len {len} at {i}", T::NAME);
                    let want_out = e * f64::from(scale[i]);
                    let got = f64::from(out[i].to_f32());
                    if T::NAME == "f16" && want_out >= 65520.0 {
                        assert_eq!(got, f64::INFINITY, "{isa} f16 overflow at {i}");
                        continue;
                    }
                    let storage_ulp = if T::NAME == "f16" {
                        want_out.abs() * 2f64.powi(-11) + 2f64.powi(-25)
                    } else {
                        0.0
                    };
                    let bound = (UNARY_EXP_ULPS * 2.0 + 1.0) * want_out * f64::from(f32::EPSILON)
                        + storage_ulp
                        + f64::from(f32::MIN_POSITIVE);
                    assert!(
                        (got - want_out).abs() <= bound,
                        "{isa} {} out len {len} at {i}: {got} vs {want_out}",
                        T::NAME
                    );
                }
                assert_eq!(out[0].to_f32(), 0.0);
                x[len - 1] = T::from_f32(f32::NAN);
                accumulate_exp(isa, &mut acc, &shift, &x);
                exp_scale(isa, &x, &shift, &scale, &mut out);
                assert!(acc[len - 1].is_nan() && out[len - 1].to_f32().is_nan());
            }
        }
        for isa in tiers() {
            check::<f32>(isa);
            check::<f16>(isa);
        }
        assert_eq!(
            softmax_columns_kernel_name::<f16>(Isa::Amx),
            "avx512_softmaxcolumns_f16_16n"
        );
    }

    /// The gelu approximations over dense sweeps, every tier, against f64 within
    /// `GELU_ULPS + GELU_ULPS_PER_Z·|z|` ulps; infinities and NaN as the exact function.
    #[test]
    #[allow(clippy::cast_precision_loss, reason = "sweep indices are small")]
    fn gelu_approximations_stay_within_their_bound() {
        let sigmoid = |z: f64| {
            if z >= 0.0 {
                1.0 / (1.0 + (-z).exp())
            } else {
                z.exp() / (1.0 + z.exp())
            }
        };
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let z_of = |op: UnaryOp, x: f64| match op {
            UnaryOp::GeluTanh => 2.0 * c * (x + 0.044715 * x * x * x),
            _ => 1.702 * x,
        };
        const N: usize = 200_003;
        for isa in tiers() {
            for op in [UnaryOp::GeluTanh, UnaryOp::GeluSigmoid] {
                for (lo, hi) in [(-60.0f32, 60.0f32), (-6.0, 6.0), (-1e-3, 1e-3)] {
                    let x: Vec<f32> = (0..N)
                        .map(|i| lo + (hi - lo) * (i as f32 / (N - 1) as f32))
                        .collect();
                    let mut out = vec![0f32; N];
                    unary(isa, op, &x, &mut out);
                    let mut worst = 0f64;
                    for (&v, &got) in x.iter().zip(&out) {
                        let z = z_of(op, f64::from(v));
                        let want = f64::from(v) * sigmoid(z);
                        let err = (f64::from(got) - want).abs();
                        let ulp = want.abs() * f64::from(f32::EPSILON) / 2.0;
                        let bound = (GELU_ULPS + GELU_ULPS_PER_Z * z.abs()) * ulp;
                        assert!(
                            err <= bound + 2f64.powi(-122),
                            "{} at {v}: {got} vs {want}",
                            unary_kernel_name::<f32>(op, isa)
                        );
                        if want.abs() > f64::from(f32::MIN_POSITIVE) {
                            worst = worst.max(err / ulp / (1.0 + z.abs()));
                        }
                    }
                    eprintln!(
                        "{} [{lo}, {hi}] worst {worst:.3} ulps/(1+|z|)",
                        unary_kernel_name::<f32>(op, isa)
                    );
                }
                let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0, 3e38];
                let mut out = [0f32; 6];
                unary(isa, op, &specials, &mut out);
                assert_eq!(out[0], f32::INFINITY);
                assert!(out[1].is_nan() && out[2].is_nan());
                assert_eq!(out[3].to_bits(), 0);
                assert_eq!(out[4].to_bits(), (-0f32).to_bits());
                assert_eq!(out[5], 3e38);
            }
        }
    }

    #[test]
    fn unary_and_reduce_names_follow_the_pattern() {
        assert_eq!(
            unary_kernel_name::<f32>(UnaryOp::Clip(0.0, 1.0), Isa::Amx),
            "avx512_clip_f32_16n"
        );
        assert_eq!(
            unary_kernel_name::<f16>(UnaryOp::Rsqrt(1e-5), Isa::Avx2),
            "avx2_rsqrt_f16_8n"
        );
        assert_eq!(
            reduce_kernel_name::<f16>(ReduceOp::Sum, true, Isa::Generic),
            "generic_reducemean_f16_8n"
        );
        assert_eq!(
            reduce_kernel_name::<f32>(ReduceOp::Max, false, Isa::Avx512),
            "avx512_reducemax_f32_16n"
        );
    }
}
