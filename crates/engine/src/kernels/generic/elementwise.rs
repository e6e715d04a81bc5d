//! Portable elementwise kernels: unary, binary, comparisons, select, copy, cast, fill.
//!
//! All of them walk the destination in rows (its last dimension), split across tasks, and read
//! sources (already broadcast to the destination's shape by the planner) in blocks of
//! [`BLOCK`] elements. Floats compute in f32 (transcendentals in f64) and round once on store.

use half::f16;

use crate::elem::{Elem, Ty};
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::{BLOCK, KernelCtx, SEG, SrcView};
use crate::layout::MAX_RANK;
use crate::plan::step::{BinaryOp, CmpOp, StepOp, UnaryOp};

type KResult = Result<(), KernelError>;

/// A row body for [`for_rows`]: `(outer index, first element, values to fill)`.
pub type RowBody<'b, O> = dyn Fn(&[usize], usize, &mut [<O as Elem>::C]) -> KResult + Sync + 'b;

/// Row visitor: `body(outer, j, out)` computes destination elements `j..j + out.len()` of the
/// row at outer index `outer` (compute type), and the driver stores them.
pub fn for_rows<O: Elem>(ctx: &mut KernelCtx<'_>, body: &RowBody<'_, O>) -> KResult {
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_inner = rank.min(1);
    let n_tasks = ctx.tasks(layout.numel());
    let pool = ctx.pool;
    let tiles = DstTiles::<O>::new(ctx.dst_slice::<O>(), layout, n_inner, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut values = [O::C::default(); BLOCK];
        let mut stored = [O::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let outer = &idx[..rank - n_inner];
            let (start, len) = (tile.start(), tile.len());
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                body(outer, start + j, &mut values[..n])?;
                O::store_slice(&values[..n], &mut stored[..n]);
                tile.write_at(j, &stored[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// Loads row segment `j..j + out.len()` of `src` at `outer`.
#[inline]
pub fn load_row<T: Elem>(src: &SrcView<'_, T>, outer: &[usize], j: usize, out: &mut [T::C]) {
    let stride = src.last_stride();
    src.load_run(src.layout.offset_of(outer) + j * stride, stride, out);
}

fn unary_params(ctx: &KernelCtx<'_>) -> UnaryOp {
    match ctx.op {
        StepOp::Unary(op) => *op,
        StepOp::Copy => UnaryOp::Identity,
        other => panic!("unary kernel called for {other:?} (kernel table invariant)"),
    }
}

/// Erf in f64: Taylor series below 2, `1 - erfc` (continued fraction) above; accurate to a
/// few f64 ulps.
pub fn erf64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let result = if ax < 2.0 {
        erf_series(ax)
    } else {
        1.0 - erfc_fraction(ax)
    };
    if x < 0.0 { -result } else { result }
}

/// Erfc in f64 without cancellation for large arguments.
pub fn erfc64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 2.0 {
        1.0 - erf64(x)
    } else {
        erfc_fraction(x)
    }
}

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        let n = f64::from(n);
        term *= -x2 / n;
        let add = term / (2.0 * n + 1.0);
        sum += add;
        if add.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// `erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + ...))))`, for x ≥ 2.
fn erfc_fraction(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    let mut tail = x;
    for n in (1..120).rev() {
        tail = x + (f64::from(n) / 2.0) / tail;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / tail
}

#[inline]
fn sigmoid64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Applies a float unary op to one value (f32 in, f32 out; transcendentals via f64).
#[inline]
pub fn unary_f32(op: UnaryOp, x: f32) -> f32 {
    let xd = f64::from(x);
    match op {
        UnaryOp::Abs => x.abs(),
        UnaryOp::Square => x * x,
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Exp => xd.exp() as f32,
        UnaryOp::Erf => erf64(xd) as f32,
        UnaryOp::Tanh => xd.tanh() as f32,
        UnaryOp::Sigmoid => sigmoid64(xd) as f32,
        UnaryOp::Relu => {
            if x > 0.0 || x.is_nan() {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Silu => (xd * sigmoid64(xd)) as f32,
        UnaryOp::Rsqrt(eps) => (1.0 / (xd + f64::from(eps)).sqrt()) as f32,
        UnaryOp::Log(eps) => (xd + f64::from(eps)).ln() as f32,
        UnaryOp::Inverse(eps) => (1.0 / (xd + f64::from(eps))) as f32,
        UnaryOp::GeluExact => (0.5 * xd * erfc64(-xd / std::f64::consts::SQRT_2)) as f32,
        UnaryOp::GeluTanh => {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd);
            // 0.5·x·(1 + tanh u) = x·sigmoid(2u), without cancellation for negative x.
            (xd * sigmoid64(2.0 * inner)) as f32
        }
        UnaryOp::GeluSigmoid => (xd * sigmoid64(1.702 * xd)) as f32,
        UnaryOp::Clip(alpha, beta) => minimum(maximum(x, alpha), beta),
        UnaryOp::Identity => x,
    }
}

fn unary_float<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let op = unary_params(ctx);
    let x = ctx.src::<T>(0);
    for_rows::<T>(ctx, &|outer, j, out| {
        load_row(&x, outer, j, out);
        if op != UnaryOp::Identity {
            for value in out.iter_mut() {
                *value = unary_f32(op, *value);
            }
        }
        Ok(())
    })
}

/// Unary fp16 kernel (all ops).
pub fn unary_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    unary_float::<f16>(ctx)
}

/// Unary fp32 kernel (all ops).
pub fn unary_f32_kernel(ctx: &mut KernelCtx<'_>) -> KResult {
    unary_float::<f32>(ctx)
}

/// Unary int32 kernel (abs, square, identity; wrapping).
pub fn unary_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    let op = unary_params(ctx);
    let x = ctx.src::<i32>(0);
    for_rows::<i32>(ctx, &|outer, j, out| {
        load_row(&x, outer, j, out);
        for value in out.iter_mut() {
            *value = match op {
                UnaryOp::Abs => value.wrapping_abs(),
                UnaryOp::Square => value.wrapping_mul(*value),
                UnaryOp::Identity => *value,
                other => panic!("int32 {other:?} is not an int32 op (verifier invariant)"),
            };
        }
        Ok(())
    })
}

/// Copies by element size (bit patterns preserved): `T` is `u8`, `u16` or `i32`.
pub fn copy<T: Elem<C = i32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let x = ctx.src::<T>(0);
    for_rows::<T>(ctx, &|outer, j, out| {
        load_row(&x, outer, j, out);
        Ok(())
    })
}

fn binary_params(ctx: &KernelCtx<'_>) -> BinaryOp {
    match ctx.op {
        StepOp::Binary(op) => *op,
        other => panic!("binary kernel called for {other:?} (kernel table invariant)"),
    }
}

/// IEEE 754-2019 `maximum`: NaN-propagating, `-0 < +0`.
#[inline]
pub fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        if a.is_sign_negative() { b } else { a }
    } else {
        a.max(b)
    }
}

/// IEEE 754-2019 `minimum`: NaN-propagating, `-0 < +0`.
#[inline]
pub fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

/// Applies a float binary op to one pair (f32; `pow` via f64), as the binary kernels do.
#[inline]
pub fn binary_f(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::RealDiv => a / b,
        BinaryOp::Pow => f64::from(a).powf(f64::from(b)) as f32,
        BinaryOp::Maximum => maximum(a, b),
        BinaryOp::Minimum => minimum(a, b),
    }
}

macro_rules! binary_float_kernel {
    ($name:ident, $t:ty, $op:expr) => {
        /// A float binary kernel specialised on its op (so the inner loop vectorises).
        pub fn $name(ctx: &mut KernelCtx<'_>) -> KResult {
            debug_assert_eq!(binary_params(ctx), $op);
            let a = ctx.src::<$t>(0);
            let b = ctx.src::<$t>(1);
            for_rows::<$t>(ctx, &|outer, j, out| {
                let mut rhs = [0f32; BLOCK];
                let rhs = &mut rhs[..out.len()];
                load_row(&a, outer, j, out);
                load_row(&b, outer, j, rhs);
                for (value, &y) in out.iter_mut().zip(rhs.iter()) {
                    *value = binary_f($op, *value, y);
                }
                Ok(())
            })
        }
    };
}

binary_float_kernel!(add_f16, f16, BinaryOp::Add);
binary_float_kernel!(sub_f16, f16, BinaryOp::Sub);
binary_float_kernel!(mul_f16, f16, BinaryOp::Mul);
binary_float_kernel!(div_f16, f16, BinaryOp::RealDiv);
binary_float_kernel!(pow_f16, f16, BinaryOp::Pow);
binary_float_kernel!(max_f16, f16, BinaryOp::Maximum);
binary_float_kernel!(min_f16, f16, BinaryOp::Minimum);
binary_float_kernel!(add_f32, f32, BinaryOp::Add);
binary_float_kernel!(sub_f32, f32, BinaryOp::Sub);
binary_float_kernel!(mul_f32, f32, BinaryOp::Mul);
binary_float_kernel!(div_f32, f32, BinaryOp::RealDiv);
binary_float_kernel!(pow_f32, f32, BinaryOp::Pow);
binary_float_kernel!(max_f32, f32, BinaryOp::Maximum);
binary_float_kernel!(min_f32, f32, BinaryOp::Minimum);

/// Integer power by squaring, wrapping; a negative exponent is R004.
fn pow_i32(base: i32, exponent: i32) -> Result<i32, KernelError> {
    if exponent < 0 {
        return Err(KernelError::NegativeExponent { exponent });
    }
    let (mut result, mut base, mut exponent) = (1i32, base, exponent as u32);
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = result.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exponent >>= 1;
    }
    Ok(result)
}

/// Int32 binary kernel (all ops; wrapping; division truncates toward zero, by zero is R004).
pub fn binary_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    let op = binary_params(ctx);
    let a = ctx.src::<i32>(0);
    let b = ctx.src::<i32>(1);
    for_rows::<i32>(ctx, &|outer, j, out| {
        let mut rhs = [0i32; BLOCK];
        let rhs = &mut rhs[..out.len()];
        load_row(&a, outer, j, out);
        load_row(&b, outer, j, rhs);
        for (value, &y) in out.iter_mut().zip(rhs.iter()) {
            let x = *value;
            *value = match op {
                BinaryOp::Add => x.wrapping_add(y),
                BinaryOp::Sub => x.wrapping_sub(y),
                BinaryOp::Mul => x.wrapping_mul(y),
                BinaryOp::RealDiv => {
                    if y == 0 {
                        return Err(KernelError::DivisionByZero { numerator: x });
                    }
                    x.wrapping_div(y)
                }
                BinaryOp::Pow => pow_i32(x, y)?,
                BinaryOp::Maximum => x.max(y),
                BinaryOp::Minimum => x.min(y),
            };
        }
        Ok(())
    })
}

fn compare<T: Elem>(ctx: &mut KernelCtx<'_>) -> KResult
where
    T::C: PartialOrd,
{
    let op = match ctx.op {
        StepOp::Compare(op) => *op,
        other => panic!("compare kernel called for {other:?} (kernel table invariant)"),
    };
    let a = ctx.src::<T>(0);
    let b = ctx.src::<T>(1);
    for_rows::<u8>(ctx, &|outer, j, out| {
        let n = out.len();
        let mut lhs = [T::C::default(); BLOCK];
        let mut rhs = [T::C::default(); BLOCK];
        load_row(&a, outer, j, &mut lhs[..n]);
        load_row(&b, outer, j, &mut rhs[..n]);
        for k in 0..n {
            let (x, y) = (lhs[k], rhs[k]);
            let result = match op {
                CmpOp::Equal => x == y,
                CmpOp::NotEqual => x != y,
                CmpOp::Greater => x > y,
                CmpOp::GreaterEqual => x >= y,
                CmpOp::Less => x < y,
                CmpOp::LessEqual => x <= y,
            };
            out[k] = i32::from(result);
        }
        Ok(())
    })
}

/// fp16 comparisons.
pub fn compare_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    compare::<f16>(ctx)
}
/// fp32 comparisons.
pub fn compare_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    compare::<f32>(ctx)
}
/// int32 comparisons.
pub fn compare_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    compare::<i32>(ctx)
}

/// `select` by element size: srcs are cond (bool), a, b.
pub fn select<T: Elem<C = i32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let cond = ctx.src::<u8>(0);
    let a = ctx.src::<T>(1);
    let b = ctx.src::<T>(2);
    for_rows::<T>(ctx, &|outer, j, out| {
        let n = out.len();
        let mut flags = [0i32; BLOCK];
        let mut other = [0i32; BLOCK];
        load_row(&cond, outer, j, &mut flags[..n]);
        load_row(&a, outer, j, out);
        load_row(&b, outer, j, &mut other[..n]);
        for k in 0..n {
            if flags[k] == 0 {
                out[k] = other[k];
            }
        }
        Ok(())
    })
}

/// Element types a cast can write, with mil-spec 6.6's conversion rules from an exact f64.
pub trait CastDst: Elem {
    /// Converts `value` (exact value of the source element); `src_float` selects truncation
    /// with saturation (float sources) over wrapping (integer sources); `to_bool` makes the
    /// result 0/1 (`value != 0`, NaN counts as nonzero).
    fn cast_from(value: f64, src_float: bool, to_bool: bool) -> Self;
}

impl CastDst for f16 {
    #[inline]
    fn cast_from(value: f64, _: bool, _: bool) -> f16 {
        f16::from_f64(value)
    }
}

impl CastDst for f32 {
    #[inline]
    fn cast_from(value: f64, _: bool, _: bool) -> f32 {
        value as f32
    }
}

macro_rules! cast_int_dst {
    ($($t:ty),*) => {$(
        impl CastDst for $t {
            #[inline]
            fn cast_from(value: f64, src_float: bool, to_bool: bool) -> $t {
                if to_bool {
                    return <$t>::from(value != 0.0);
                }
                if src_float {
                    // `as` truncates toward zero, saturates, and maps NaN to 0.
                    value as $t
                } else {
                    (value as i64) as $t
                }
            }
        }
    )*};
}
cast_int_dst!(i8, u8, i16, u16, i32);

/// Types a cast can read, widened exactly to f64.
pub trait CastSrc: bytemuck::Pod + Send + Sync {
    /// Whether the type is a float.
    const FLOAT: bool;
    /// Exact widening.
    fn to_f64(self) -> f64;
}

macro_rules! cast_src {
    ($($t:ty => $float:expr),*) => {$(
        impl CastSrc for $t {
            const FLOAT: bool = $float;
            #[inline]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
        }
    )*};
}
cast_src!(f16 => true, f32 => true, i8 => false, u8 => false, i16 => false, u16 => false, i32 => false);

fn cast_pair<S: CastSrc, D: CastDst>(ctx: &mut KernelCtx<'_>, to_bool: bool) -> KResult {
    let x: &[S] = bytemuck::cast_slice(ctx.srcs[0].bytes);
    let layout = ctx.srcs[0].layout;
    let stride = layout.strides.last().copied().unwrap_or(0);
    let n_tasks = ctx.tasks(ctx.dst_layout.numel());
    let dst_layout = ctx.dst_layout;
    let rank = dst_layout.rank();
    let n_inner = rank.min(1);
    let pool = ctx.pool;
    let tiles = DstTiles::<D>::new(ctx.dst_slice::<D>(), dst_layout, n_inner, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut out = [D::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let base = layout.offset_of(&idx[..rank - n_inner]);
            let (start, len) = (tile.start(), tile.len());
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                for (k, value) in out[..n].iter_mut().enumerate() {
                    let v = x[base + (start + j + k) * stride].to_f64();
                    *value = D::cast_from(v, S::FLOAT, to_bool);
                }
                tile.write_at(j, &out[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

fn cast_from<S: CastSrc>(ctx: &mut KernelCtx<'_>) -> KResult {
    match ctx.dst_ty {
        Ty::F16 => cast_pair::<S, f16>(ctx, false),
        Ty::F32 => cast_pair::<S, f32>(ctx, false),
        Ty::I8 => cast_pair::<S, i8>(ctx, false),
        Ty::U8 => cast_pair::<S, u8>(ctx, false),
        Ty::I16 => cast_pair::<S, i16>(ctx, false),
        Ty::U16 => cast_pair::<S, u16>(ctx, false),
        Ty::I32 => cast_pair::<S, i32>(ctx, false),
        Ty::Bool => cast_pair::<S, u8>(ctx, true),
    }
}

/// Cast from fp16.
pub fn cast_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<f16>(ctx)
}
/// Cast from fp32.
pub fn cast_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<f32>(ctx)
}
/// Cast from int8.
pub fn cast_i8(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<i8>(ctx)
}
/// Cast from uint8 and bool (stored 0/1).
pub fn cast_u8(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<u8>(ctx)
}
/// Cast from int16.
pub fn cast_i16(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<i16>(ctx)
}
/// Cast from uint16.
pub fn cast_u16(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<u16>(ctx)
}
/// Cast from int32.
pub fn cast_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    cast_from::<i32>(ctx)
}

fn fill_as<D: CastDst>(ctx: &mut KernelCtx<'_>, to_bool: bool) -> KResult {
    let value = match ctx.op {
        StepOp::Fill { value } => *value,
        other => panic!("fill kernel called for {other:?} (kernel table invariant)"),
    };
    let element = D::cast_from(value, true, to_bool);
    let element_c = element.load();
    for_rows::<D>(ctx, &|_, _, out| {
        out.fill(element_c);
        Ok(())
    })
}

/// `fill` for any destination type.
pub fn fill(ctx: &mut KernelCtx<'_>) -> KResult {
    match ctx.dst_ty {
        Ty::F16 => fill_as::<f16>(ctx, false),
        Ty::F32 => fill_as::<f32>(ctx, false),
        Ty::I8 => fill_as::<i8>(ctx, false),
        Ty::U8 => fill_as::<u8>(ctx, false),
        Ty::I16 => fill_as::<i16>(ctx, false),
        Ty::U16 => fill_as::<u16>(ctx, false),
        Ty::I32 => fill_as::<i32>(ctx, false),
        Ty::Bool => fill_as::<u8>(ctx, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        let known = [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.5, 0.9999992569016276),
            (-1.0, -0.8427007929497149),
        ];
        for (x, expected) in known {
            assert!(
                (erf64(x) - expected).abs() < 1e-14,
                "erf({x}) = {} vs {expected}",
                erf64(x)
            );
        }
        assert!((erf64(2.9999) - 0.999_977_895_573_517_8).abs() < 1e-14);
        assert!((erfc64(4.0) - 1.541725790028002e-8).abs() < 1e-20);
        assert!((erfc64(2.5) - 4.069_520_174_449_59e-4).abs() < 1e-16);
        assert!((erf64(3.0) - 0.9999779095030014).abs() < 1e-12);
        assert_eq!(erf64(7.0), 1.0);
    }

    #[test]
    fn unary_edge_cases() {
        assert_eq!(unary_f32(UnaryOp::Relu, -0.0).to_bits(), 0.0f32.to_bits());
        assert!(unary_f32(UnaryOp::Relu, f32::NAN).is_nan());
        assert_eq!(unary_f32(UnaryOp::Sigmoid, -200.0), 0.0);
        assert_eq!(unary_f32(UnaryOp::Sigmoid, 200.0), 1.0);
        assert!(unary_f32(UnaryOp::Clip(0.0, 1.0), f32::NAN).is_nan());
        assert_eq!(unary_f32(UnaryOp::Rsqrt(0.0), 0.0), f32::INFINITY);
        assert!(binary_f(BinaryOp::Maximum, f32::NAN, 1.0).is_nan());
        assert!(maximum(-0.0, 0.0).is_sign_positive() && minimum(0.0, -0.0).is_sign_negative());
        assert_eq!(binary_f(BinaryOp::Pow, f32::NAN, 0.0), 1.0);
    }

    #[test]
    fn int_pow_and_cast_rules() {
        assert_eq!(pow_i32(3, 4), Ok(81));
        assert_eq!(
            pow_i32(2, -1),
            Err(KernelError::NegativeExponent { exponent: -1 })
        );
        assert_eq!(<i8 as CastDst>::cast_from(300.7, true, false), 127);
        assert_eq!(<i8 as CastDst>::cast_from(-2.9, true, false), -2);
        assert_eq!(<i8 as CastDst>::cast_from(300.0, false, false), 44);
        assert_eq!(<i32 as CastDst>::cast_from(f64::NAN, true, false), 0);
        assert_eq!(<u8 as CastDst>::cast_from(f64::NAN, true, true), 1);
        assert_eq!(<u8 as CastDst>::cast_from(0.0, true, true), 0);
    }
}
