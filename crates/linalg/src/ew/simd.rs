//! The vector operations the fused elementwise kernels are written against ([`Simd`]), the
//! two storage types ([`Storage`]: f32 and f16, always computed in f32), and the portable
//! tier ([`Portable`], eight f32 in an array that LLVM vectorises for the baseline target).
//!
//! Everything a kernel body needs beyond arithmetic is here too: partial (tail) loads and
//! stores through a small stack buffer, and `exp` built from [`Simd::round`] and
//! [`Simd::pow2i`] with the Cephes `expf` polynomial: relative error below 2 f32 ulps for
//! inputs in [-87, 88.37]; results below 2^-126 (inputs below about -87.3, including -inf)
//! flush to 0, and inputs above 88.37 saturate at about 2.4e38.
#![allow(
    unsafe_code,
    reason = "raw-pointer vector loads and stores behind the safe ew entry points"
)]

use half::f16;

/// The f32 vector operations of one tier. Every method requires (as its safety condition)
/// that the host supports the implementing tier; pointer methods also need the stated
/// elements to be readable or writable.
/// (Nominally `pub` so the public, sealed [`Storage`] may name it; the module is private.)
pub trait Simd: 'static {
    /// The vector type.
    type V: Copy;
    /// f32 lanes per vector (at most [`MAX_LANES`]).
    const LANES: usize;

    /// All lanes `value`.
    unsafe fn splat(value: f32) -> Self::V;
    /// `LANES` f32 from `ptr` (unaligned).
    unsafe fn load_f32(ptr: *const f32) -> Self::V;
    /// `LANES` f32 to `ptr` (unaligned).
    unsafe fn store_f32(ptr: *mut f32, value: Self::V);
    /// `LANES` f16 from `ptr`, widened exactly.
    unsafe fn load_f16(ptr: *const f16) -> Self::V;
    /// `LANES` values rounded to f16 (nearest-even, overflow to ±inf) at `ptr`.
    unsafe fn store_f16(ptr: *mut f16, value: Self::V);
    /// Lane-wise `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a / b` (correctly rounded).
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a * b + c` (fused where the tier has FMA).
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum.
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise square root (correctly rounded).
    unsafe fn sqrt(a: Self::V) -> Self::V;
    /// Lane-wise round to nearest integer (ties to even), as a float.
    unsafe fn round(a: Self::V) -> Self::V;
    /// `2^n` for integral `n` in [-127, 127] (`n = -127` gives 0).
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// Sum of the lanes.
    unsafe fn reduce_add(a: Self::V) -> f32;
    /// Largest lane.
    unsafe fn reduce_max(a: Self::V) -> f32;
    /// Swaps the two lanes of every pair: `[a1, a0, a3, a2, ...]`.
    unsafe fn swap_pairs(a: Self::V) -> Self::V;
    /// Loads `LANES / 2` f32 from `ptr` and duplicates each: `[p0, p0, p1, p1, ...]`.
    unsafe fn load_dup_pairs(ptr: *const f32) -> Self::V;
    /// Negates the even lanes: `[-a0, a1, -a2, a3, ...]`.
    unsafe fn negate_even(a: Self::V) -> Self::V;

    /// A lane mask (the result of a comparison), consumed by [`Simd::select`].
    type M: Copy;
    /// Lanes where `a < b` (false when either is NaN).
    unsafe fn lt(a: Self::V, b: Self::V) -> Self::M;
    /// Lanes where `a == b` (false when either is NaN; `-0 == +0`).
    unsafe fn eq(a: Self::V, b: Self::V) -> Self::M;
    /// Lanes where `a` is NaN.
    unsafe fn is_nan(a: Self::V) -> Self::M;
    /// Lanes set in `a` or in `b`.
    unsafe fn mask_or(a: Self::M, b: Self::M) -> Self::M;
    /// Lane-wise `mask ? a : b` (the bits of the chosen lane, NaN payloads included).
    unsafe fn select(mask: Self::M, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise bitwise `a & b` of the f32 bit patterns.
    unsafe fn and(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise bitwise `a | b` of the f32 bit patterns.
    unsafe fn or(a: Self::V, b: Self::V) -> Self::V;
    /// `floor(log2 a)` as a float, for positive normal finite `a` (other lanes unspecified).
    unsafe fn exponent(a: Self::V) -> Self::V;
    /// `a / 2^floor(log2 a)`, in [1, 2), for positive normal finite `a` (exact; other lanes
    /// unspecified).
    unsafe fn mantissa(a: Self::V) -> Self::V;
}

/// Largest `LANES` of any tier (AVX-512: 16).
pub(crate) const MAX_LANES: usize = 16;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

/// An element type the kernels read and write: f32 or f16. Arithmetic is always f32; f16
/// values are widened exactly on load and rounded once (nearest-even) on store.
pub trait Storage: Copy + Default + Send + Sync + sealed::Sealed + 'static {
    /// `"f32"` or `"f16"`, as used in kernel names.
    const NAME: &'static str;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// Rounds from f32 (nearest-even).
    fn from_f32(value: f32) -> Self;
    /// Loads one vector of `S`.
    ///
    /// # Safety
    /// `S::LANES` elements readable at `ptr`; the host supports `S`'s tier.
    #[doc(hidden)]
    unsafe fn load<S: Simd>(ptr: *const Self) -> S::V;
    /// Stores one vector of `S`.
    ///
    /// # Safety
    /// `S::LANES` elements writable at `ptr`; the host supports `S`'s tier.
    #[doc(hidden)]
    unsafe fn store<S: Simd>(ptr: *mut Self, value: S::V);
}

impl Storage for f32 {
    const NAME: &'static str = "f32";

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[inline(always)]
    fn from_f32(value: f32) -> f32 {
        value
    }

    #[inline(always)]
    unsafe fn load<S: Simd>(ptr: *const f32) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { S::load_f32(ptr) }
    }

    #[inline(always)]
    unsafe fn store<S: Simd>(ptr: *mut f32, value: S::V) {
        // SAFETY: forwarded from the caller.
        unsafe { S::store_f32(ptr, value) }
    }
}

impl Storage for f16 {
    const NAME: &'static str = "f16";

    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[inline(always)]
    fn from_f32(value: f32) -> f16 {
        f16::from_f32(value)
    }

    #[inline(always)]
    unsafe fn load<S: Simd>(ptr: *const f16) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { S::load_f16(ptr) }
    }

    #[inline(always)]
    unsafe fn store<S: Simd>(ptr: *mut f16, value: S::V) {
        // SAFETY: forwarded from the caller.
        unsafe { S::store_f16(ptr, value) }
    }
}

/// Loads `len` (< `S::LANES`) elements at `ptr`; the other lanes are `fill`.
///
/// # Safety
/// `len` elements readable at `ptr`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn load_partial<S: Simd, T: Storage>(
    ptr: *const T,
    len: usize,
    fill: f32,
) -> S::V {
    debug_assert!(len <= S::LANES);
    let mut buf = [T::from_f32(fill); MAX_LANES];
    // SAFETY: `len` ≤ LANES ≤ MAX_LANES elements, readable per the caller; `buf` is local.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), len);
        T::load::<S>(buf.as_ptr())
    }
}

/// Stores the first `len` (< `S::LANES`) lanes of `value` at `ptr`.
///
/// # Safety
/// `len` elements writable at `ptr`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn store_partial<S: Simd, T: Storage>(ptr: *mut T, len: usize, value: S::V) {
    debug_assert!(len <= S::LANES);
    let mut buf = [T::default(); MAX_LANES];
    // SAFETY: `buf` holds MAX_LANES ≥ LANES elements; `len` elements writable per the caller.
    unsafe {
        T::store::<S>(buf.as_mut_ptr(), value);
        std::ptr::copy_nonoverlapping(buf.as_ptr(), ptr, len);
    }
}

/// Loads lanes `at..at + LANES` of a row of `len` elements, or the partial tail (`fill` past
/// the end).
///
/// # Safety
/// `ptr` readable for `len` elements, `at < len`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn load_at<S: Simd, T: Storage>(
    ptr: *const T,
    at: usize,
    len: usize,
    fill: f32,
) -> S::V {
    // SAFETY: a full vector when it fits, else the `len - at` remaining elements.
    unsafe {
        if at + S::LANES <= len {
            T::load::<S>(ptr.add(at))
        } else {
            load_partial::<S, T>(ptr.add(at), len - at, fill)
        }
    }
}

/// Stores lanes `at..` of a row of `len` elements (partial at the tail).
///
/// # Safety
/// `ptr` writable for `len` elements, `at < len`; the host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn store_at<S: Simd, T: Storage>(
    ptr: *mut T,
    at: usize,
    len: usize,
    value: S::V,
) {
    // SAFETY: a full vector when it fits, else the `len - at` remaining elements.
    unsafe {
        if at + S::LANES <= len {
            T::store::<S>(ptr.add(at), value)
        } else {
            store_partial::<S, T>(ptr.add(at), len - at, value)
        }
    }
}

/// `e^x` lane-wise (see the module docs for the error).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let x = S::min(S::max(x, S::splat(-88.0)), S::splat(88.376_26));
        let (p, n) = exp_parts::<S>(x);
        S::mul(p, S::pow2i(n))
    }
}

/// The Cephes `expf` reduction of an already clamped `x`: `(p, n)` with `e^x = p · 2^n`,
/// `n = round(x·log2 e)` (integral) and `p` the polynomial on `r = x - n·ln 2`.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn exp_parts<S: Simd>(x: S::V) -> (S::V, S::V) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // SAFETY: (whole body) register arithmetic of the caller's tier.
    unsafe {
        let n = S::round(S::mul(x, S::splat(LOG2E)));
        let r = S::mul_add(n, S::splat(-LN2_HI), x);
        let r = S::mul_add(n, S::splat(-LN2_LO), r);
        let mut p = S::splat(1.987_569_1e-4);
        for coefficient in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = S::mul_add(p, r, S::splat(coefficient));
        }
        let r2 = S::mul(r, r);
        (S::add(S::mul_add(p, r2, r), S::splat(1.0)), n)
    }
}

/// `1 / (1 + e^-x)` lane-wise.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
pub(crate) unsafe fn sigmoid<S: Simd>(x: S::V) -> S::V {
    // SAFETY: register arithmetic of the caller's tier.
    unsafe {
        let one = S::splat(1.0);
        let e = exp::<S>(S::sub(S::splat(0.0), x));
        S::div(one, S::add(one, e))
    }
}

/// Lanes of the portable tier.
const PORTABLE_LANES: usize = 8;

/// The portable tier: eight f32 in an array; plain loops that LLVM vectorises.
pub(crate) struct Portable;

type Lanes = [f32; PORTABLE_LANES];

#[inline(always)]
fn map(a: Lanes, f: impl Fn(f32) -> f32) -> Lanes {
    std::array::from_fn(|lane| f(a[lane]))
}

#[inline(always)]
fn zip(a: Lanes, b: Lanes, f: impl Fn(f32, f32) -> f32) -> Lanes {
    std::array::from_fn(|lane| f(a[lane], b[lane]))
}

impl Simd for Portable {
    type V = Lanes;
    const LANES: usize = PORTABLE_LANES;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Lanes {
        [value; PORTABLE_LANES]
    }

    #[inline(always)]
    unsafe fn load_f32(ptr: *const f32) -> Lanes {
        // SAFETY: the caller guarantees LANES readable values.
        unsafe { ptr.cast::<Lanes>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn store_f32(ptr: *mut f32, value: Lanes) {
        // SAFETY: the caller guarantees LANES writable values.
        unsafe { ptr.cast::<Lanes>().write_unaligned(value) }
    }

    #[inline(always)]
    unsafe fn load_f16(ptr: *const f16) -> Lanes {
        // SAFETY: the caller guarantees LANES readable values.
        let halves = unsafe { ptr.cast::<[f16; PORTABLE_LANES]>().read_unaligned() };
        halves.map(f16::to_f32)
    }

    #[inline(always)]
    unsafe fn store_f16(ptr: *mut f16, value: Lanes) {
        // SAFETY: the caller guarantees LANES writable values.
        unsafe {
            ptr.cast::<[f16; PORTABLE_LANES]>()
                .write_unaligned(value.map(f16::from_f32))
        }
    }

    #[inline(always)]
    unsafe fn add(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| a + b)
    }

    #[inline(always)]
    unsafe fn sub(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| a - b)
    }

    #[inline(always)]
    unsafe fn mul(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| a * b)
    }

    #[inline(always)]
    unsafe fn div(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| a / b)
    }

    #[inline(always)]
    unsafe fn mul_add(a: Lanes, b: Lanes, c: Lanes) -> Lanes {
        std::array::from_fn(|lane| a[lane] * b[lane] + c[lane])
    }

    #[inline(always)]
    unsafe fn max(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| if a > b { a } else { b })
    }

    #[inline(always)]
    unsafe fn min(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| if a < b { a } else { b })
    }

    #[inline(always)]
    unsafe fn sqrt(a: Lanes) -> Lanes {
        map(a, f32::sqrt)
    }

    #[inline(always)]
    unsafe fn round(a: Lanes) -> Lanes {
        map(a, f32::round_ties_even)
    }

    #[inline(always)]
    unsafe fn pow2i(n: Lanes) -> Lanes {
        map(n, |n| {
            let biased = (n as i32 + 127).clamp(0, 254) as u32;
            f32::from_bits(biased << 23)
        })
    }

    #[inline(always)]
    unsafe fn reduce_add(a: Lanes) -> f32 {
        let quads = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        (quads[0] + quads[2]) + (quads[1] + quads[3])
    }

    #[inline(always)]
    unsafe fn reduce_max(a: Lanes) -> f32 {
        a.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }

    #[inline(always)]
    unsafe fn swap_pairs(a: Lanes) -> Lanes {
        std::array::from_fn(|lane| a[lane ^ 1])
    }

    #[inline(always)]
    unsafe fn load_dup_pairs(ptr: *const f32) -> Lanes {
        // SAFETY: the caller guarantees LANES / 2 readable values.
        let half = unsafe { ptr.cast::<[f32; PORTABLE_LANES / 2]>().read_unaligned() };
        std::array::from_fn(|lane| half[lane / 2])
    }

    #[inline(always)]
    unsafe fn negate_even(a: Lanes) -> Lanes {
        std::array::from_fn(|lane| if lane % 2 == 0 { -a[lane] } else { a[lane] })
    }

    type M = [bool; PORTABLE_LANES];

    #[inline(always)]
    unsafe fn lt(a: Lanes, b: Lanes) -> Self::M {
        std::array::from_fn(|lane| a[lane] < b[lane])
    }

    #[inline(always)]
    unsafe fn eq(a: Lanes, b: Lanes) -> Self::M {
        std::array::from_fn(|lane| a[lane] == b[lane])
    }

    #[inline(always)]
    unsafe fn is_nan(a: Lanes) -> Self::M {
        a.map(f32::is_nan)
    }

    #[inline(always)]
    unsafe fn mask_or(a: Self::M, b: Self::M) -> Self::M {
        std::array::from_fn(|lane| a[lane] | b[lane])
    }

    #[inline(always)]
    unsafe fn select(mask: Self::M, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|lane| if mask[lane] { a[lane] } else { b[lane] })
    }

    #[inline(always)]
    unsafe fn and(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| f32::from_bits(a.to_bits() & b.to_bits()))
    }

    #[inline(always)]
    unsafe fn or(a: Lanes, b: Lanes) -> Lanes {
        zip(a, b, |a, b| f32::from_bits(a.to_bits() | b.to_bits()))
    }

    #[inline(always)]
    unsafe fn exponent(a: Lanes) -> Lanes {
        map(a, |a| (((a.to_bits() >> 23) & 0xff) as i32 - 127) as f32)
    }

    #[inline(always)]
    unsafe fn mantissa(a: Lanes) -> Lanes {
        map(a, |a| {
            f32::from_bits((a.to_bits() & 0x007f_ffff) | 0x3f80_0000)
        })
    }
}

/// Checks of the comparison, select, bit and exponent primitives, shared by every tier's
/// tests.
#[cfg(test)]
pub(crate) mod primitive_checks {
    use super::{MAX_LANES, Simd};

    /// Positive normal inputs of `exponent` and `mantissa`.
    const XS: [f32; 8] = [
        1.0,
        1.5,
        3.0,
        0.75,
        1.0e-30,
        6.0e37,
        f32::MIN_POSITIVE,
        1.999_999_9,
    ];

    fn lanes<S: Simd>(v: S::V) -> [f32; MAX_LANES] {
        let mut out = [0f32; MAX_LANES];
        // SAFETY: `out` holds MAX_LANES ≥ LANES values; the caller's tier is available.
        unsafe { S::store_f32(out.as_mut_ptr(), v) };
        out
    }

    fn load<S: Simd>(values: [f32; 8]) -> S::V {
        let mut buf = [0f32; MAX_LANES];
        for (lane, slot) in buf.iter_mut().enumerate() {
            *slot = values[lane % 8];
        }
        // SAFETY: `buf` holds MAX_LANES ≥ LANES values; the caller's tier is available.
        unsafe { S::load_f32(buf.as_ptr()) }
    }

    /// Runs the checks on `S`.
    ///
    /// # Safety
    /// The host supports `S`'s tier (the caller is compiled for it).
    #[inline(always)]
    pub(crate) unsafe fn check<S: Simd>() {
        // SAFETY: (whole body) register arithmetic of the caller's tier.
        unsafe {
            let x = load::<S>(XS);
            let exponent = lanes::<S>(S::exponent(x));
            let mantissa = lanes::<S>(S::mantissa(x));
            for lane in 0..S::LANES {
                let v = XS[lane % 8];
                let e = v.log2().floor();
                assert_eq!(exponent[lane], e, "exponent of {v}");
                assert_eq!(mantissa[lane], v / 2f32.powf(e), "mantissa of {v}");
            }
            let a = load::<S>([1.0, f32::NAN, -0.0, 2.0, 5.0, -1.0, f32::INFINITY, 0.0]);
            let b = load::<S>([2.0, 1.0, 0.0, f32::NAN, 5.0, -2.0, 1.0, 0.0]);
            let yes = S::splat(10.0);
            let no = S::splat(20.0);
            let lt = lanes::<S>(S::select(S::lt(a, b), yes, no));
            let eq = lanes::<S>(S::select(S::eq(a, b), yes, no));
            let nan = lanes::<S>(S::select(S::mask_or(S::is_nan(a), S::is_nan(b)), yes, no));
            for lane in 0..S::LANES {
                let want = |cond: bool| if cond { 10.0 } else { 20.0 };
                let k = lane % 8;
                assert_eq!(lt[lane], want(k == 0), "lt lane {lane}");
                assert_eq!(eq[lane], want([2, 4, 7].contains(&k)), "eq lane {lane}");
                assert_eq!(nan[lane], want([1, 3].contains(&k)), "nan lane {lane}");
            }
            let and = lanes::<S>(S::and(a, S::splat(f32::from_bits(0x7fff_ffff))));
            let or = lanes::<S>(S::or(b, S::splat(-0.0)));
            assert_eq!(and[2].to_bits(), 0);
            assert_eq!(and[5], 1.0);
            assert_eq!(or[0], -2.0);
            assert_eq!(or[2].to_bits(), (-0f32).to_bits());
        }
    }

    #[test]
    fn portable_primitives() {
        // SAFETY: the portable tier runs on every host.
        unsafe { check::<super::Portable>() }
    }
}
