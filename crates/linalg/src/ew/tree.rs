//! Compiled elementwise trees: the shapes the engine's fused steps take in the training
//! kernels (SiLU·gate, scale+mask, RMSNorm's products, the softmax and RMSNorm backward
//! tails, RoPE's rotation), each a monomorphised loop with its values in vector registers.
//! [`program::run`](super::program::run) evaluates any tree; these evaluate a fixed one in one
//! sweep with no register file in memory and no per-instruction dispatch.
//!
//! A [`Tree`] names the formula; its leaves `a, b, c, d` are [`Leaf`]s (a run as long as the
//! output, or one value for every element). Arithmetic is one f32 operation per node, in the
//! formula's order (no fused multiply-add); with `round_f16` every node below the root is
//! rounded to f16 (nearest-even) and widened back, exactly as storing and reloading an f16
//! tensor would, and the root is rounded by the store to the output type. `t` is a 65 536-entry
//! table indexed by the f16 bits of its operand (the engine's per-op results for every f16
//! input); `σ` and `silu` use the vector `exp` of `simd`, as [`program::run`](super::program::run)
//! does (below 2 f32 ulps; results below 2⁻¹²⁶ flush to 0).
#![allow(
    unsafe_code,
    reason = "raw-pointer vector loads and stores behind the safe entry point"
)]

use half::f16;

use super::simd::{MAX_LANES, Simd, Storage, load_partial, sigmoid, store_partial};
use crate::cpu::Isa;

/// The formulas (leaves `a, b, c, d` in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    /// `t(a) · b` (a SiLU·gate whose activation is a table).
    TabMul,
    /// `silu(a) · b`.
    SiluMul,
    /// `(a · t(a)) · b` (SiLU written as `x · sigmoid(x)`, the sigmoid a table).
    XTabMul,
    /// `(a · σ(a)) · b`.
    XSigMul,
    /// `(a · b) · c`.
    MulMul,
    /// `a · b + c`.
    MulAdd,
    /// `(a + b) · c`.
    AddMul,
    /// `(a − b) · c`.
    SubMul,
    /// `(a · (b − c)) · d` (the softmax backward's tail).
    MulSubMul,
    /// `(a − b · c) · d` (RMSNorm backward's tail).
    SubMulMul,
    /// `a · b + c · d` (RoPE's rotation).
    MulAddMul,
}

impl Tree {
    /// Every formula.
    pub const ALL: [Tree; 11] = [
        Tree::TabMul,
        Tree::SiluMul,
        Tree::XTabMul,
        Tree::XSigMul,
        Tree::MulMul,
        Tree::MulAdd,
        Tree::AddMul,
        Tree::SubMul,
        Tree::MulSubMul,
        Tree::SubMulMul,
        Tree::MulAddMul,
    ];

    /// Number of leaves.
    pub fn leaves(self) -> usize {
        match self {
            Tree::TabMul | Tree::SiluMul | Tree::XTabMul | Tree::XSigMul => 2,
            Tree::MulMul | Tree::MulAdd | Tree::AddMul | Tree::SubMul => 3,
            Tree::MulSubMul | Tree::SubMulMul | Tree::MulAddMul => 4,
        }
    }

    /// Whether the formula reads a table.
    pub fn uses_table(self) -> bool {
        matches!(self, Tree::TabMul | Tree::XTabMul)
    }
}

/// A leaf: a run as long as the output, or one value for every element.
#[derive(Clone, Copy, Debug)]
pub enum Leaf<'a, L> {
    /// Elements.
    Run(&'a [L]),
    /// The same value everywhere.
    Splat(L),
}

/// Maximum number of leaves.
pub const MAX_LEAVES: usize = 4;

/// A table of per-op results for every f16 bit pattern.
pub type Table = [f16; 1 << 16];

/// Evaluates `tree` over every element of `out`.
///
/// Panics if `leaves` does not hold `tree.leaves()` leaves, a run differs in length from
/// `out`, a table formula gets no table, or the host lacks `isa`.
pub fn run<T: Storage, L: Storage>(
    isa: Isa,
    tree: Tree,
    round_f16: bool,
    table: Option<&Table>,
    leaves: &[Leaf<'_, L>],
    out: &mut [T],
) {
    super::check_isa("tree", isa);
    assert_eq!(leaves.len(), tree.leaves(), "tree {tree:?}: leaf count");
    assert!(
        !tree.uses_table() || table.is_some(),
        "tree {tree:?}: no table"
    );
    let len = out.len();
    let mut splats = [[L::default(); MAX_LANES]; MAX_LEAVES];
    let mut raw = [RawLeaf {
        ptr: std::ptr::null(),
        step: 0,
    }; MAX_LEAVES];
    for ((slot, leaf), splat) in raw.iter_mut().zip(leaves).zip(splats.iter_mut()) {
        *slot = match *leaf {
            Leaf::Run(values) => {
                super::check_len("tree", "leaf", values.len(), len);
                RawLeaf {
                    ptr: values.as_ptr(),
                    step: 1,
                }
            }
            Leaf::Splat(value) => {
                splat.fill(value);
                RawLeaf {
                    ptr: splat.as_ptr(),
                    step: 0,
                }
            }
        };
    }
    // Unused leaves read the first splat buffer (never dereferenced past MAX_LANES).
    for slot in raw.iter_mut().skip(leaves.len()) {
        *slot = RawLeaf {
            ptr: splats[MAX_LEAVES - 1].as_ptr(),
            step: 0,
        };
    }
    let out = out.as_mut_ptr();
    // SAFETY: `out` holds `len` elements, every run leaf was checked to hold `len`, every
    // splat leaf points at MAX_LANES ≥ LANES elements it is never advanced past; the tier was
    // checked; table formulas have a table.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::run::<T, L>(tree, round_f16, table, &raw, out, len),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => avx512::run::<T, L>(tree, round_f16, table, &raw, out, len),
            _ => generic::run::<T, L>(tree, round_f16, table, &raw, out, len),
        }
    }
}

#[derive(Clone, Copy)]
struct RawLeaf<L> {
    ptr: *const L,
    /// 1 for a run, 0 for a splat buffer.
    step: usize,
}

/// `v` rounded to f16 and widened back when `R`.
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn round<S: Simd, const R: bool>(v: S::V) -> S::V {
    if !R {
        return v;
    }
    let mut bits = [f16::ZERO; MAX_LANES];
    // SAFETY: `bits` holds MAX_LANES ≥ LANES halves.
    unsafe {
        S::store_f16(bits.as_mut_ptr(), v);
        S::load_f16(bits.as_ptr())
    }
}

/// `table[bits(f16(v))]` lane-wise (`v` holds f16 values).
///
/// # Safety
/// The host supports `S`'s tier.
#[inline(always)]
unsafe fn lookup<S: Simd>(table: &Table, v: S::V) -> S::V {
    let mut bits = [f16::ZERO; MAX_LANES];
    // SAFETY: `bits` holds MAX_LANES ≥ LANES halves.
    unsafe {
        S::store_f16(bits.as_mut_ptr(), v);
        for value in &mut bits[..S::LANES] {
            *value = table[usize::from(value.to_bits())];
        }
        S::load_f16(bits.as_ptr())
    }
}

/// One formula over registers.
trait Body {
    /// Leaves read.
    const N: usize;
    /// # Safety
    /// The host supports `S`'s tier.
    unsafe fn eval<S: Simd, const R: bool>(v: [S::V; MAX_LEAVES], table: &Table) -> S::V;
}

macro_rules! body {
    ($name:ident, $n:literal, |$v:ident, $table:ident| $expr:expr) => {
        struct $name;
        impl Body for $name {
            const N: usize = $n;
            #[inline(always)]
            #[allow(unused_variables, reason = "not every formula reads a table")]
            unsafe fn eval<S: Simd, const R: bool>($v: [S::V; MAX_LEAVES], $table: &Table) -> S::V {
                // SAFETY: register arithmetic of the caller's tier.
                unsafe { $expr }
            }
        }
    };
}

body!(TabMul, 2, |v, t| S::mul(lookup::<S>(t, v[0]), v[1]));
body!(SiluMul, 2, |v, t| S::mul(
    S::mul(v[0], sigmoid::<S>(v[0])),
    v[1]
));
body!(XTabMul, 2, |v, t| S::mul(
    round::<S, R>(S::mul(v[0], lookup::<S>(t, v[0]))),
    v[1]
));
body!(XSigMul, 2, |v, t| S::mul(
    round::<S, R>(S::mul(v[0], round::<S, R>(sigmoid::<S>(v[0])))),
    v[1]
));
body!(MulMul, 3, |v, t| S::mul(
    round::<S, R>(S::mul(v[0], v[1])),
    v[2]
));
body!(MulAdd, 3, |v, t| S::add(
    round::<S, R>(S::mul(v[0], v[1])),
    v[2]
));
body!(AddMul, 3, |v, t| S::mul(
    round::<S, R>(S::add(v[0], v[1])),
    v[2]
));
body!(SubMul, 3, |v, t| S::mul(
    round::<S, R>(S::sub(v[0], v[1])),
    v[2]
));
body!(MulSubMul, 4, |v, t| S::mul(
    round::<S, R>(S::mul(v[0], round::<S, R>(S::sub(v[1], v[2])))),
    v[3]
));
body!(SubMulMul, 4, |v, t| S::mul(
    round::<S, R>(S::sub(v[0], round::<S, R>(S::mul(v[1], v[2])))),
    v[3]
));
body!(MulAddMul, 4, |v, t| S::add(
    round::<S, R>(S::mul(v[0], v[1])),
    round::<S, R>(S::mul(v[2], v[3]))
));

/// The sweep of one formula.
///
/// # Safety
/// `out` holds `len` writable elements; each leaf with step 1 `len` readable ones, each with
/// step 0 at least `S::LANES`; the host supports `S`'s tier.
#[inline(always)]
unsafe fn sweep<S: Simd, T: Storage, L: Storage, B: Body, const R: bool>(
    table: &Table,
    leaves: &[RawLeaf<L>; MAX_LEAVES],
    out: *mut T,
    len: usize,
) {
    // SAFETY: (whole body) loads and stores cover elements `at..at + count` with
    // `at + count ≤ len` of run leaves and the output, and the first `count ≤ LANES` of splat
    // buffers; register arithmetic of the caller's tier.
    unsafe {
        // Plain loops, no closures: a closure would not inherit the caller's target features.
        let mut v = [S::splat(0.0); MAX_LEAVES];
        let mut at = 0;
        while at + S::LANES <= len {
            for k in 0..B::N {
                v[k] = L::load::<S>(leaves[k].ptr.add(at * leaves[k].step));
            }
            T::store::<S>(out.add(at), B::eval::<S, R>(v, table));
            at += S::LANES;
        }
        if at < len {
            let count = len - at;
            for k in 0..B::N {
                v[k] = load_partial::<S, L>(leaves[k].ptr.add(at * leaves[k].step), count, 0.0);
            }
            store_partial::<S, T>(out.add(at), count, B::eval::<S, R>(v, table));
        }
    }
}

/// The formula dispatch for one tier.
///
/// # Safety
/// As for [`sweep`]; table formulas have a table.
#[inline(always)]
unsafe fn dispatch<S: Simd, T: Storage, L: Storage>(
    tree: Tree,
    round_f16: bool,
    table: Option<&Table>,
    leaves: &[RawLeaf<L>; MAX_LEAVES],
    out: *mut T,
    len: usize,
) {
    static NO_TABLE: Table = [f16::ZERO; 1 << 16];
    let table = table.unwrap_or(&NO_TABLE);
    macro_rules! go {
        ($body:ty) => {
            if round_f16 {
                sweep::<S, T, L, $body, true>(table, leaves, out, len)
            } else {
                sweep::<S, T, L, $body, false>(table, leaves, out, len)
            }
        };
    }
    // SAFETY: forwarded.
    unsafe {
        match tree {
            Tree::TabMul => go!(TabMul),
            Tree::SiluMul => go!(SiluMul),
            Tree::XTabMul => go!(XTabMul),
            Tree::XSigMul => go!(XSigMul),
            Tree::MulMul => go!(MulMul),
            Tree::MulAdd => go!(MulAdd),
            Tree::AddMul => go!(AddMul),
            Tree::SubMul => go!(SubMul),
            Tree::MulSubMul => go!(MulSubMul),
            Tree::SubMulMul => go!(SubMulMul),
            Tree::MulAddMul => go!(MulAddMul),
        }
    }
}

/// Stamps `#[target_feature]` wrappers of the dispatch for one tier.
macro_rules! stamp_tree_tiers {
    ($( $module:ident: $simd:ty, [$($attr:meta),*]; )*) => {$(
        mod $module {
            use super::*;

            /// # Safety
            /// As for the dispatch; the host supports this tier.
            $(#[$attr])*
            pub(super) unsafe fn run<T: Storage, L: Storage>(
                tree: Tree,
                round_f16: bool,
                table: Option<&Table>,
                leaves: &[RawLeaf<L>; MAX_LEAVES],
                out: *mut T,
                len: usize,
            ) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::dispatch::<$simd, T, L>(tree, round_f16, table, leaves, out, len) }
            }
        }
    )*};
}

stamp_tree_tiers! {
    generic: super::super::simd::Portable, [inline(never)];
}

#[cfg(target_arch = "x86_64")]
stamp_tree_tiers! {
    avx2: super::super::x86::Avx2, [target_feature(enable = "avx2,fma,f16c")];
    avx512: super::super::x86::Avx512, [target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;

    fn r16(x: f32) -> f32 {
        f16::from_f32(x).to_f32()
    }

    /// The formula in scalar f32, rounding nodes below the root when `round`.
    fn scalar(tree: Tree, round: bool, table: &Table, v: [f32; 4]) -> f32 {
        let r = |x: f32| if round { r16(x) } else { x };
        let t = |x: f32| table[usize::from(f16::from_f32(x).to_bits())].to_f32();
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let [a, b, c, d] = v;
        match tree {
            Tree::TabMul => t(a) * b,
            Tree::SiluMul => a * sig(a) * b,
            Tree::XTabMul => r(a * t(a)) * b,
            Tree::XSigMul => r(a * r(sig(a))) * b,
            Tree::MulMul => r(a * b) * c,
            Tree::MulAdd => r(a * b) + c,
            Tree::AddMul => r(a + b) * c,
            Tree::SubMul => r(a - b) * c,
            Tree::MulSubMul => r(a * r(b - c)) * d,
            Tree::SubMulMul => r(a - r(b * c)) * d,
            Tree::MulAddMul => r(a * b) + r(c * d),
        }
    }

    #[test]
    fn trees_match_scalar_evaluation_on_every_tier() {
        let mut table = Box::new([f16::ZERO; 1 << 16]);
        for (bits, entry) in (0..=u16::MAX).zip(table.iter_mut()) {
            *entry = f16::from_f32(-0.5 * f16::from_bits(bits).to_f32());
        }
        for len in [1, 7, 8, 15, 16, 17, 33, 100, 257] {
            let runs: Vec<Vec<f16>> = (0..4)
                .map(|k| {
                    (0..len)
                        .map(|i| f16::from_f32(((i * (k + 3)) as f32 * 0.37).sin() * 3.0))
                        .collect()
                })
                .collect();
            for tree in Tree::ALL {
                for round in [false, true] {
                    for splat_at in [None, Some(1)] {
                        let leaves: Vec<Leaf<'_, f16>> = (0..tree.leaves())
                            .map(|k| {
                                if splat_at == Some(k) {
                                    Leaf::Splat(f16::from_f32(0.375))
                                } else {
                                    Leaf::Run(&runs[k])
                                }
                            })
                            .collect();
                        let value = |k: usize, i: usize| match leaves.get(k) {
                            Some(Leaf::Splat(v)) => v.to_f32(),
                            Some(Leaf::Run(r)) => r[i].to_f32(),
                            None => 0.0,
                        };
                        let want: Vec<f32> = (0..len)
                            .map(|i| {
                                scalar(tree, round, &table, std::array::from_fn(|k| value(k, i)))
                            })
                            .collect();
                        for isa in Isa::ALL {
                            if !cpu::isa_available(isa) {
                                continue;
                            }
                            let mut out = vec![0f32; len];
                            run(isa, tree, round, Some(&table), &leaves, &mut out);
                            let mut out16 = vec![f16::ZERO; len];
                            run(isa, tree, round, Some(&table), &leaves, &mut out16);
                            for i in 0..len {
                                let ctx = format!("{isa} {tree:?} round {round} len {len} at {i}");
                                if matches!(tree, Tree::SiluMul | Tree::XSigMul) {
                                    // The vector exp: within 5e-6 relative per sigmoid.
                                    let tol = 1e-5 * want[i].abs().max(1e-3);
                                    let tol = if round {
                                        tol + 4e-3 * want[i].abs()
                                    } else {
                                        tol
                                    };
                                    assert!((out[i] - want[i]).abs() <= tol, "{ctx}");
                                } else {
                                    assert_eq!(out[i].to_bits(), want[i].to_bits(), "{ctx}");
                                    assert_eq!(out16[i], f16::from_f32(want[i]), "{ctx}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
