//! Fused elementwise kernels for the training graphs: one sweep over memory per call, every
//! tier, f32 or f16 storage (always f32 arithmetic), chosen at run time by an [`Isa`]
//! argument.
//!
//! | function | computes | kernel name (`<isa>_<op>_<dtype>_<lanes>n`) |
//! |---|---|---|
//! | [`rmsnorm_rows`] / [`rmsnorm_rows_backward`] | RMSNorm over each contiguous row | `rmsnorm_rows`, `rmsnorm_rows_bwd` |
//! | [`rmsnorm_channels`] / [`rmsnorm_channels_backward`] | RMSNorm over the channel axis of a channel-first `[C, S]` tensor | `rmsnorm_channels`, `rmsnorm_channels_bwd` |
//! | [`swiglu`] / [`swiglu_backward`] | `silu(gate) · up` | `swiglu`, `swiglu_bwd` |
//! | [`rope`] / [`rope_backward`] | rotary embedding, pairs `(2i, 2i+1)`, cos/sin tables | `rope`, `rope_bwd` |
//! | [`add`], [`axpy`] | residual `a + b`, `y += α·x` | `add`, `axpy` |
//! | [`softmax_rows`] / [`softmax_rows_backward`] | `softmax(scale·x + mask)` along the last axis | `softmax`, `softmax_bwd` |
//! | [`program::run`] | a register program of add/sub/mul/div, f16 rounding, table lookups and `exp`/sigmoid/silu over contiguous runs: the engine's fused elementwise steps | (the caller's) |
//! | [`tree::run`] | a fixed formula of [`tree::Tree`] (SiLU·gate, `(a·b)·c`, `a·b + c`, ..., with optional f16 rounding of inner nodes) compiled per tier, values in vector registers: the engine's fused steps of those shapes | (the caller's) |
//! | [`stream::binary`], [`stream::unary`], [`stream::sum`], [`stream::max`], [`stream::accumulate`], [`stream::accumulate_exp`], [`stream::exp_scale`] | `a ∘ b` (add/sub/mul/div, splat operands), `f(x)` (abs, square, sqrt, relu, clip, identity, rsqrt, inverse, exp, sigmoid, silu, cube), `Σ x`, `max x`, row-wise `acc += x` / `acc = max(acc, x)` / `acc += e^(x - shift)` and `e^(x - shift)·scale` over contiguous runs: the engine's per-op steps (error bounds in [`stream`]) | `add`, `sub`, `mul`, `realdiv`, `exp`, `clip`, ..., `reducesum`, `reducemean`, `reducemax`, `softmaxcolumns` |
//!
//! [`kernel_name`] gives e.g. `avx512_rmsnorm_rows_f32_16n` or `generic_softmax_f16_8n`:
//! generic works on 8-lane arrays LLVM vectorises, avx2 on 8-lane ymm (+FMA, F16C), avx512
//! (also used by the Amx tier) on 16-lane zmm. Each kernel body is written once over a small
//! `Simd` trait and stamped per tier. AVX512-FP16 arithmetic is deliberately not used: f16
//! storage is converted with `vcvtph2ps`/`vcvtps2ph` at load/store, and computing in f16 would
//! lose accuracy in the reductions (sums of squares, softmax denominators) without saving
//! memory traffic, which is what bounds these kernels.
//!
//! # Error bounds
//!
//! Measured against f64 references of the same (f16-rounded) inputs by this module's tests,
//! stated per element:
//!
//! * f32 storage: `add`, `axpy` within 1 ulp; `rope` within 2 ulps of `|x|` (one FMA and a
//!   product); RMSNorm (forward and backward) within `1e-5` relative to the row's scale (the
//!   f32 sum of squares over the row dominates); `swiglu` within `5e-6` relative (the `exp`
//!   polynomial, below 2 ulps, and a division), its backward within `1e-5` relative to the
//!   size of its terms (`|dout·up·σ|·(1 + |a·(1 − σ)|)`: the gate gradient cancels near
//!   silu's minimum); softmax within `2e-6` absolute (outputs are in [0, 1]), its backward
//!   within `1e-5` relative to `|scale|·(|y·dy| + y·Σ|y·dy|)`.
//! * f16 storage: the f32 bound plus one rounding of the result to f16 (half an f16 ulp,
//!   `2^-11` relative, or the f16 subnormal step near zero).
//!
//! `exp` flushes results below `2^-126` to zero, so masked (-inf) logits give exactly 0. NaN
//! inputs give unspecified (possibly NaN) outputs.
//!
//! # Contract
//!
//! Every function panics (a caller bug, not user input) if the slice lengths disagree with the
//! stated shapes or the host lacks the tier. Outputs are `&mut` slices distinct from the
//! inputs; the in-place update of the residual stream is [`axpy`]. Kernels are
//! single-threaded: split rows (or channel-first positions) across threads to parallelise.

#![allow(
    unsafe_code,
    reason = "validated slices handed to the raw-pointer kernel bodies"
)]

mod kernels;
pub mod program;
mod simd;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod tree;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use simd::Storage;

use crate::cpu::{self, Isa};
use kernels::RawMask;

/// The mask added to the logits of [`softmax_rows`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mask<'a> {
    /// No mask.
    None,
    /// Causal attention: row `r` keeps columns `0..=r + offset` (query `r` of a block that
    /// starts `offset` positions into the keys); later columns are -inf, so they get 0.
    Causal {
        /// Keys visible to row 0, minus one.
        offset: usize,
    },
    /// Row `r` adds `values[r * row_stride..][..n]` (a `row_stride` of 0 broadcasts one row);
    /// -inf entries mask their column.
    Additive {
        /// The mask values.
        values: &'a [f32],
        /// Elements between the mask rows (0: one row for all).
        row_stride: usize,
    },
}

/// The elementwise operations, for [`kernel_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EwOp {
    /// [`rmsnorm_rows`].
    RmsNormRows,
    /// [`rmsnorm_rows_backward`].
    RmsNormRowsBackward,
    /// [`rmsnorm_channels`].
    RmsNormChannels,
    /// [`rmsnorm_channels_backward`].
    RmsNormChannelsBackward,
    /// [`swiglu`].
    SwiGlu,
    /// [`swiglu_backward`].
    SwiGluBackward,
    /// [`rope`].
    Rope,
    /// [`rope_backward`].
    RopeBackward,
    /// [`add`].
    Add,
    /// [`axpy`].
    Axpy,
    /// [`softmax_rows`].
    Softmax,
    /// [`softmax_rows_backward`].
    SoftmaxBackward,
}

impl EwOp {
    /// Every operation.
    pub const ALL: [EwOp; 12] = [
        EwOp::RmsNormRows,
        EwOp::RmsNormRowsBackward,
        EwOp::RmsNormChannels,
        EwOp::RmsNormChannelsBackward,
        EwOp::SwiGlu,
        EwOp::SwiGluBackward,
        EwOp::Rope,
        EwOp::RopeBackward,
        EwOp::Add,
        EwOp::Axpy,
        EwOp::Softmax,
        EwOp::SoftmaxBackward,
    ];
}

/// The `[op][dtype]` names of one tier.
macro_rules! tier_names {
    ($isa:literal, $lanes:literal; $($op:literal),*) => {
        [$([
            concat!($isa, "_", $op, "_f32_", $lanes, "n"),
            concat!($isa, "_", $op, "_f16_", $lanes, "n"),
        ]),*]
    };
}

/// The `[tier][op][dtype]` name table for the ops in `EwOp::ALL` order.
macro_rules! name_table {
    ($($op:literal),*) => {
        [
            tier_names!("generic", "8"; $($op),*),
            tier_names!("avx2", "8"; $($op),*),
            tier_names!("avx512", "16"; $($op),*),
        ]
    };
}

/// `[tier: generic, avx2, avx512][op in EwOp::ALL order][f32, f16]`.
const NAMES: [[[&str; 2]; 12]; 3] = name_table!(
    "rmsnorm_rows",
    "rmsnorm_rows_bwd",
    "rmsnorm_channels",
    "rmsnorm_channels_bwd",
    "swiglu",
    "swiglu_bwd",
    "rope",
    "rope_bwd",
    "add",
    "axpy",
    "softmax",
    "softmax_bwd"
);

/// Name of the kernel that runs `op` on `T` storage with `isa` (the Amx tier runs the avx512
/// kernels), e.g. `avx512_rmsnorm_rows_f32_16n`.
pub fn kernel_name<T: Storage>(op: EwOp, isa: Isa) -> &'static str {
    let tier = match isa {
        Isa::Generic => 0,
        Isa::Avx2 => 1,
        Isa::Avx512 | Isa::Amx => 2,
    };
    let op_idx = EwOp::ALL
        .iter()
        .position(|&candidate| candidate == op)
        .expect("invariant: EwOp::ALL lists every operation");
    let dtype = if T::NAME == "f32" { 0 } else { 1 };
    NAMES[tier][op_idx][dtype]
}

/// Calls the tier's stamped wrapper of a kernel body.
macro_rules! dispatch {
    ($isa:expr, $name:ident::<$T:ty>($($arg:expr),* $(,)?)) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => kernels::avx2::$name::<$T>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => kernels::avx512::$name::<$T>($($arg),*),
            _ => kernels::generic::$name::<$T>($($arg),*),
        }
    };
}

fn check_isa(what: &str, isa: Isa) {
    assert!(
        cpu::isa_available(isa),
        "{what}: the host lacks the {isa} tier"
    );
}

fn check_len(what: &str, name: &str, len: usize, expected: usize) {
    assert_eq!(
        len, expected,
        "{what}: {name} has {len} elements, expected {expected}"
    );
}

/// RMSNorm of every contiguous row of `x` (rows of `weight.len()` elements):
/// `out = x · w / sqrt(mean(x²) + eps)`.
///
/// Panics if `x.len()` is not a multiple of `weight.len()`, `out` differs in length from
/// `x`, or the host lacks `isa`.
pub fn rmsnorm_rows<T: Storage>(isa: Isa, x: &[T], weight: &[T], eps: f32, out: &mut [T]) {
    const WHAT: &str = "rmsnorm_rows";
    check_isa(WHAT, isa);
    let dim = weight.len();
    let rows = rows_of(WHAT, x.len(), dim);
    check_len(WHAT, "out", out.len(), x.len());
    // SAFETY: `x`/`out` hold rows·dim elements, `weight` dim; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            rmsnorm_rows::<T>(
                x.as_ptr(),
                weight.as_ptr(),
                out.as_mut_ptr(),
                rows,
                dim,
                eps
            )
        )
    }
}

/// Backward of [`rmsnorm_rows`]: writes `dx` and adds each row's contribution to
/// `dweight` (f32, `weight.len()`; zero it first for a fresh gradient).
///
/// Panics on a length mismatch or a missing tier.
#[allow(
    clippy::too_many_arguments,
    reason = "forward operands plus both gradients"
)]
pub fn rmsnorm_rows_backward<T: Storage>(
    isa: Isa,
    x: &[T],
    weight: &[T],
    dy: &[T],
    eps: f32,
    dx: &mut [T],
    dweight: &mut [f32],
) {
    const WHAT: &str = "rmsnorm_rows_backward";
    check_isa(WHAT, isa);
    let dim = weight.len();
    let rows = rows_of(WHAT, x.len(), dim);
    check_len(WHAT, "dy", dy.len(), x.len());
    check_len(WHAT, "dx", dx.len(), x.len());
    check_len(WHAT, "dweight", dweight.len(), dim);
    // SAFETY: every buffer has the length its role needs; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            rmsnorm_rows_backward::<T>(
                x.as_ptr(),
                weight.as_ptr(),
                dy.as_ptr(),
                dx.as_mut_ptr(),
                dweight.as_mut_ptr(),
                rows,
                dim,
                eps
            )
        )
    }
}

/// RMSNorm over the channel axis of a channel-first `[C, S]` tensor (`C = weight.len()`
/// channels, `S = seq` positions, element `(c, s)` at `c·S + s`, the ANE layout):
/// `out[c][s] = x[c][s] · w[c] / sqrt(mean_c x[c][s]² + eps)`.
///
/// Panics if `x.len() != C·S`, `out` differs in length, or the host lacks `isa`.
pub fn rmsnorm_channels<T: Storage>(
    isa: Isa,
    x: &[T],
    weight: &[T],
    seq: usize,
    eps: f32,
    out: &mut [T],
) {
    const WHAT: &str = "rmsnorm_channels";
    check_isa(WHAT, isa);
    let channels = weight.len();
    check_len(WHAT, "x", x.len(), channels * seq);
    check_len(WHAT, "out", out.len(), x.len());
    // SAFETY: `x`/`out` hold C·S elements, `weight` C; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            rmsnorm_channels::<T>(
                x.as_ptr(),
                weight.as_ptr(),
                out.as_mut_ptr(),
                channels,
                seq,
                eps
            )
        )
    }
}

/// Backward of [`rmsnorm_channels`]: writes `dx` (`[C, S]`) and adds to `dweight` (f32, `C`).
///
/// Panics on a length mismatch or a missing tier.
#[allow(
    clippy::too_many_arguments,
    reason = "forward operands plus both gradients"
)]
pub fn rmsnorm_channels_backward<T: Storage>(
    isa: Isa,
    x: &[T],
    weight: &[T],
    dy: &[T],
    seq: usize,
    eps: f32,
    dx: &mut [T],
    dweight: &mut [f32],
) {
    const WHAT: &str = "rmsnorm_channels_backward";
    check_isa(WHAT, isa);
    let channels = weight.len();
    check_len(WHAT, "x", x.len(), channels * seq);
    check_len(WHAT, "dy", dy.len(), x.len());
    check_len(WHAT, "dx", dx.len(), x.len());
    check_len(WHAT, "dweight", dweight.len(), channels);
    // SAFETY: every buffer has the length its role needs; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            rmsnorm_channels_backward::<T>(
                x.as_ptr(),
                weight.as_ptr(),
                dy.as_ptr(),
                dx.as_mut_ptr(),
                dweight.as_mut_ptr(),
                channels,
                seq,
                eps
            )
        )
    }
}

/// The SwiGLU gate: `out = silu(gate) · up` with `silu(a) = a / (1 + e^-a)`.
///
/// Panics on a length mismatch or a missing tier.
pub fn swiglu<T: Storage>(isa: Isa, gate: &[T], up: &[T], out: &mut [T]) {
    const WHAT: &str = "swiglu";
    check_isa(WHAT, isa);
    check_len(WHAT, "up", up.len(), gate.len());
    check_len(WHAT, "out", out.len(), gate.len());
    // SAFETY: all three hold gate.len() elements; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            swiglu::<T>(gate.as_ptr(), up.as_ptr(), out.as_mut_ptr(), gate.len())
        )
    }
}

/// Backward of [`swiglu`]: `dgate = dout · up · silu'(gate)`, `dup = dout · silu(gate)`.
///
/// Panics on a length mismatch or a missing tier.
pub fn swiglu_backward<T: Storage>(
    isa: Isa,
    gate: &[T],
    up: &[T],
    dout: &[T],
    dgate: &mut [T],
    dup: &mut [T],
) {
    const WHAT: &str = "swiglu_backward";
    check_isa(WHAT, isa);
    let len = gate.len();
    for (name, actual) in [
        ("up", up.len()),
        ("dout", dout.len()),
        ("dgate", dgate.len()),
        ("dup", dup.len()),
    ] {
        check_len(WHAT, name, actual, len);
    }
    // SAFETY: all five hold `len` elements; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            swiglu_backward::<T>(
                gate.as_ptr(),
                up.as_ptr(),
                dout.as_ptr(),
                dgate.as_mut_ptr(),
                dup.as_mut_ptr(),
                len
            )
        )
    }
}

/// Rotary embedding, llama2.c convention: `x` is `[rows][dim]` (row = position), each row
/// holds `dim / head_size` heads, and within a head the pair `(2i, 2i+1)` is rotated by the
/// angle whose cosine and sine are `cos[row·head_size/2 + i]` and `sin[...]`:
/// `(x0·cos − x1·sin, x0·sin + x1·cos)`. Build the tables with [`rope_tables`].
///
/// Panics if `head_size` is zero or odd or does not divide `dim`, `x.len()` is not a
/// multiple of `dim`, a table is not `rows·head_size/2` long, `out` differs in length, or the
/// host lacks `isa`.
#[allow(
    clippy::too_many_arguments,
    reason = "tensor, geometry and both tables"
)]
pub fn rope<T: Storage>(
    isa: Isa,
    x: &[T],
    dim: usize,
    head_size: usize,
    cos: &[f32],
    sin: &[f32],
    out: &mut [T],
) {
    rope_any("rope", isa, x, dim, head_size, cos, sin, out, false);
}

/// Backward of [`rope`] (the inverse rotation): `dx` from `dy`, same tables.
///
/// Panics as [`rope`].
#[allow(
    clippy::too_many_arguments,
    reason = "tensor, geometry and both tables"
)]
pub fn rope_backward<T: Storage>(
    isa: Isa,
    dy: &[T],
    dim: usize,
    head_size: usize,
    cos: &[f32],
    sin: &[f32],
    dx: &mut [T],
) {
    rope_any("rope_backward", isa, dy, dim, head_size, cos, sin, dx, true);
}

#[allow(
    clippy::too_many_arguments,
    reason = "the shared body of rope and its backward"
)]
fn rope_any<T: Storage>(
    what: &str,
    isa: Isa,
    x: &[T],
    dim: usize,
    head_size: usize,
    cos: &[f32],
    sin: &[f32],
    out: &mut [T],
    inverse: bool,
) {
    check_isa(what, isa);
    assert!(
        head_size > 0 && head_size.is_multiple_of(2) && dim.is_multiple_of(head_size),
        "{what}: head size {head_size} must be even, positive and divide dim {dim}"
    );
    let rows = rows_of(what, x.len(), dim);
    check_len(what, "cos", cos.len(), rows * head_size / 2);
    check_len(what, "sin", sin.len(), rows * head_size / 2);
    check_len(what, "out", out.len(), x.len());
    // SAFETY: `x`/`out` hold rows·dim elements, the tables rows·head_size/2; head_size is
    // even and divides dim; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            rope::<T>(
                x.as_ptr(),
                out.as_mut_ptr(),
                cos.as_ptr(),
                sin.as_ptr(),
                rows,
                dim,
                head_size,
                inverse
            )
        )
    }
}

/// The llama2.c RoPE tables for positions `first_position..first_position + rows`:
/// `angle(p, i) = p · theta^(−2i / head_size)` (theta 10000 in llama2.c), returned as
/// `(cos, sin)`, each `[rows][head_size / 2]`. Computed in f64 and rounded once.
pub fn rope_tables(
    first_position: usize,
    rows: usize,
    head_size: usize,
    theta: f64,
) -> (Vec<f32>, Vec<f32>) {
    let pairs = head_size / 2;
    let mut cos = Vec::with_capacity(rows * pairs);
    let mut sin = Vec::with_capacity(rows * pairs);
    for position in first_position..first_position + rows {
        for pair in 0..pairs {
            let frequency = theta.powf(-((2 * pair) as f64) / head_size as f64);
            let angle = position as f64 * frequency;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// The residual add `out = a + b`.
///
/// Panics on a length mismatch or a missing tier.
pub fn add<T: Storage>(isa: Isa, a: &[T], b: &[T], out: &mut [T]) {
    const WHAT: &str = "add";
    check_isa(WHAT, isa);
    check_len(WHAT, "b", b.len(), a.len());
    check_len(WHAT, "out", out.len(), a.len());
    // SAFETY: all three hold a.len() elements; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            add::<T>(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), a.len())
        )
    }
}

/// `y = alpha · x + y` (in place: the residual stream update, or a scaled gradient sum).
///
/// Panics on a length mismatch or a missing tier.
pub fn axpy<T: Storage>(isa: Isa, alpha: f32, x: &[T], y: &mut [T]) {
    const WHAT: &str = "axpy";
    check_isa(WHAT, isa);
    check_len(WHAT, "y", y.len(), x.len());
    // SAFETY: both hold x.len() elements; the tier was checked.
    unsafe { dispatch!(isa, axpy::<T>(alpha, x.as_ptr(), y.as_mut_ptr(), x.len())) }
}

/// Softmax along rows of `n`: `out = softmax(scale · x + mask)` for every row of `x`
/// (attention scores: `scale = 1/sqrt(head_dim)`, `mask` causal). Masked columns get exactly
/// 0 and a fully masked row is all zeros.
///
/// Panics if `n` is zero, `x.len()` is not a multiple of `n`, `out` differs in length, an
/// additive mask is too short for the rows, or the host lacks `isa`.
pub fn softmax_rows<T: Storage>(
    isa: Isa,
    x: &[T],
    n: usize,
    scale: f32,
    mask: Mask<'_>,
    out: &mut [T],
) {
    const WHAT: &str = "softmax_rows";
    check_isa(WHAT, isa);
    let rows = rows_of(WHAT, x.len(), n);
    check_len(WHAT, "out", out.len(), x.len());
    let raw = match mask {
        Mask::None => RawMask::None,
        Mask::Causal { offset } => RawMask::Causal { offset },
        Mask::Additive { values, row_stride } => {
            let needed = if rows == 0 {
                0
            } else {
                (rows - 1) * row_stride + n
            };
            assert!(
                values.len() >= needed,
                "{WHAT}: the mask has {} values, {rows} rows of {n} at stride {row_stride} need {needed}",
                values.len()
            );
            RawMask::Additive {
                values: values.as_ptr(),
                row_stride,
            }
        }
    };
    // SAFETY: `x`/`out` hold rows·n elements, the mask covers every row; tier checked.
    unsafe {
        dispatch!(
            isa,
            softmax_rows::<T>(x.as_ptr(), out.as_mut_ptr(), rows, n, scale, raw)
        )
    }
}

/// Backward of [`softmax_rows`] from its output `y`: `dx = scale · y · (dy − Σ_row y·dy)`.
///
/// Panics on a length mismatch, a zero `n`, or a missing tier.
pub fn softmax_rows_backward<T: Storage>(
    isa: Isa,
    y: &[T],
    dy: &[T],
    n: usize,
    scale: f32,
    dx: &mut [T],
) {
    const WHAT: &str = "softmax_rows_backward";
    check_isa(WHAT, isa);
    let rows = rows_of(WHAT, y.len(), n);
    check_len(WHAT, "dy", dy.len(), y.len());
    check_len(WHAT, "dx", dx.len(), y.len());
    // SAFETY: all three hold rows·n elements; the tier was checked.
    unsafe {
        dispatch!(
            isa,
            softmax_rows_backward::<T>(y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), rows, n, scale)
        )
    }
}

/// Rows of a `len`-element buffer of rows of `width`; panics unless `width` divides it.
fn rows_of(what: &str, len: usize, width: usize) -> usize {
    assert!(
        width > 0 && len.is_multiple_of(width),
        "{what}: {len} elements are not whole rows of {width}"
    );
    len / width
}
