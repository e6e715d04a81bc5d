//! Streaming elementwise kernels over contiguous runs, for the engine's per-op steps: binary
//! arithmetic with an optional splatted (broadcast) operand, and row sums.
//!
//! | function | computes | kernel name |
//! |---|---|---|
//! | [`binary`] | `out = a ∘ b` for `∘` in add, sub, mul, div; `a` or `b` may be one splatted value | `<isa>_<op>_<dtype>_<lanes>n` |
//! | [`sum`] | `Σ x` in f32 | `<isa>_sum_<dtype>_<lanes>n` |
//!
//! # Error bounds
//!
//! [`binary`] is exact IEEE arithmetic: one f32 operation per element, rounded once to the
//! storage type with round-to-nearest-even (`vcvtps2ph` on the x86 tiers, `half`'s correctly
//! rounded conversion on the generic tier), so every tier gives the same bits as scalar Rust
//! `f32` arithmetic followed by `f16::from_f32` (NaN payloads aside). [`sum`] accumulates in
//! f32 over `4·lanes` independent partial sums, so its error is at most
//! `(len/(4·lanes) + log2(4·lanes))·2⁻²⁴·Σ|xᵢ|` (below the `len·2⁻²⁴·Σ|xᵢ|` of an in-order sum).
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
}

impl BinaryOp {
    /// Every operation.
    pub const ALL: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];

    /// The scalar result (what every tier computes per element, before storage rounding).
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
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
const BINARY_NAMES: [[[&str; 2]; 4]; 3] = [
    [
        ["generic_add_f32_8n", "generic_add_f16_8n"],
        ["generic_sub_f32_8n", "generic_sub_f16_8n"],
        ["generic_mul_f32_8n", "generic_mul_f16_8n"],
        ["generic_realdiv_f32_8n", "generic_realdiv_f16_8n"],
    ],
    [
        ["avx2_add_f32_8n", "avx2_add_f16_8n"],
        ["avx2_sub_f32_8n", "avx2_sub_f16_8n"],
        ["avx2_mul_f32_8n", "avx2_mul_f16_8n"],
        ["avx2_realdiv_f32_8n", "avx2_realdiv_f16_8n"],
    ],
    [
        ["avx512_add_f32_16n", "avx512_add_f16_16n"],
        ["avx512_sub_f32_16n", "avx512_sub_f16_16n"],
        ["avx512_mul_f32_16n", "avx512_mul_f16_16n"],
        ["avx512_realdiv_f32_16n", "avx512_realdiv_f16_16n"],
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
                _ => S::div(a, b),
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
}
