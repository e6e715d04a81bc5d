//! Kernel bodies, written once over [`Simd`] and [`Storage`] and stamped out per tier by
//! [`stamp_tiers!`] into `generic`, `avx2` and `avx512` modules of `#[target_feature]`
//! wrappers. Bodies take raw pointers; the safe functions in [`super`] validate lengths and
//! the tier first.
//!
//! Each body makes one sweep over its tensor: a row (or a column strip of a channel-first
//! tensor) is read, reduced while it is in L1, and written, before the next one is touched.
#![allow(
    unsafe_code,
    reason = "raw-pointer kernel bodies behind the safe ew entry points"
)]

use super::simd::{MAX_LANES, Simd, Storage, exp, load_at, sigmoid, store_at};

/// Vectors per unrolled step of the reductions (independent accumulators).
const UNROLL: usize = 4;

/// Sum of squares of `len` elements at `x`.
///
/// # Safety
/// `len` elements readable; the host supports `S`'s tier.
#[inline(always)]
unsafe fn sum_squares<S: Simd, T: Storage>(x: *const T, len: usize) -> f32 {
    // SAFETY: (whole body) every load covers elements below `len`.
    unsafe {
        let mut acc = [S::splat(0.0); UNROLL];
        let mut at = 0;
        while at + UNROLL * S::LANES <= len {
            for (unroll, sum) in acc.iter_mut().enumerate() {
                let value = T::load::<S>(x.add(at + unroll * S::LANES));
                *sum = S::mul_add(value, value, *sum);
            }
            at += UNROLL * S::LANES;
        }
        while at < len {
            let value = load_at::<S, T>(x, at, len, 0.0);
            acc[0] = S::mul_add(value, value, acc[0]);
            at += S::LANES;
        }
        S::reduce_add(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])))
    }
}

/// `1 / sqrt(sum_squares / count + eps)`.
#[inline(always)]
fn inverse_rms(sum_squares: f32, count: usize, eps: f32) -> f32 {
    1.0 / (sum_squares / count as f32 + eps).sqrt()
}

/// RMSNorm of `rows` contiguous rows of `dim`: `out = x · r · w`, `r = 1/sqrt(mean(x²) + eps)`.
///
/// # Safety
/// `x`/`out` hold `rows·dim` elements (`out` may equal `x`), `w` holds `dim`; tier supported.
#[inline(always)]
pub(crate) unsafe fn rmsnorm_rows<S: Simd, T: Storage>(
    x: *const T,
    w: *const T,
    out: *mut T,
    rows: usize,
    dim: usize,
    eps: f32,
) {
    // SAFETY: (whole body) row `row` spans `row·dim..(row + 1)·dim` of `x` and `out`; every
    // access is below `dim` within it.
    unsafe {
        for row in 0..rows {
            let x = x.add(row * dim);
            let out = out.add(row * dim);
            let r = S::splat(inverse_rms(sum_squares::<S, T>(x, dim), dim, eps));
            for at in (0..dim).step_by(S::LANES) {
                let value = load_at::<S, T>(x, at, dim, 0.0);
                let weight = load_at::<S, T>(w, at, dim, 0.0);
                store_at::<S, T>(out, at, dim, S::mul(S::mul(value, r), weight));
            }
        }
    }
}

/// Backward of [`rmsnorm_rows`]: `dx = r·w·dy − r³/dim · x · Σ(w·dy·x)`, `dw += Σ_rows dy·x·r`.
///
/// # Safety
/// `x`/`dy`/`dx` hold `rows·dim` elements (`dx` may equal `dy`), `w`/`dw` hold `dim`; tier
/// supported.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "the operands of the backward pass"
)]
pub(crate) unsafe fn rmsnorm_rows_backward<S: Simd, T: Storage>(
    x: *const T,
    w: *const T,
    dy: *const T,
    dx: *mut T,
    dw: *mut f32,
    rows: usize,
    dim: usize,
    eps: f32,
) {
    // SAFETY: (whole body) as for `rmsnorm_rows`; `dw` is read and written below `dim`.
    unsafe {
        for row in 0..rows {
            let (x, dy, dx) = (x.add(row * dim), dy.add(row * dim), dx.add(row * dim));
            let mut squares = S::splat(0.0);
            let mut dot = S::splat(0.0);
            for at in (0..dim).step_by(S::LANES) {
                let value = load_at::<S, T>(x, at, dim, 0.0);
                let weight = load_at::<S, T>(w, at, dim, 0.0);
                let grad = load_at::<S, T>(dy, at, dim, 0.0);
                squares = S::mul_add(value, value, squares);
                dot = S::mul_add(S::mul(weight, grad), value, dot);
            }
            let r = inverse_rms(S::reduce_add(squares), dim, eps);
            let coef = S::splat(r * r * r * S::reduce_add(dot) / dim as f32);
            let r = S::splat(r);
            for at in (0..dim).step_by(S::LANES) {
                let value = load_at::<S, T>(x, at, dim, 0.0);
                let weight = load_at::<S, T>(w, at, dim, 0.0);
                let grad = load_at::<S, T>(dy, at, dim, 0.0);
                let scaled = S::mul(grad, r);
                let dx_value = S::sub(S::mul(scaled, weight), S::mul(coef, value));
                let dw_value = load_at::<S, f32>(dw, at, dim, 0.0);
                store_at::<S, f32>(dw, at, dim, S::mul_add(scaled, value, dw_value));
                store_at::<S, T>(dx, at, dim, dx_value);
            }
        }
    }
}

/// Lanes of one column strip of the channel-first kernels.
#[inline(always)]
const fn strip<S: Simd>() -> usize {
    UNROLL * S::LANES
}

/// RMSNorm of a channel-first `[channels][seq]` tensor over the channel axis: for every
/// position `s`, `out[c][s] = x[c][s] · r_s · w[c]`, `r_s = 1/sqrt(mean_c x[c][s]² + eps)`.
/// Works in strips of `UNROLL` vectors of positions: sum over all channels, then scale.
///
/// # Safety
/// `x`/`out` hold `channels·seq` elements (`out` may equal `x`), `w` holds `channels`; tier
/// supported.
#[inline(always)]
pub(crate) unsafe fn rmsnorm_channels<S: Simd, T: Storage>(
    x: *const T,
    w: *const T,
    out: *mut T,
    channels: usize,
    seq: usize,
    eps: f32,
) {
    let inv_channels = 1.0 / channels as f32;
    // SAFETY: (whole body) element (c, s) is at `c·seq + s` with c < channels, s < seq; the
    // loads/stores of a strip cover positions below `seq` only.
    unsafe {
        for s0 in (0..seq).step_by(strip::<S>()) {
            let mut squares = [S::splat(0.0); UNROLL];
            for channel in 0..channels {
                let row = x.add(channel * seq);
                for (unroll, sum) in squares.iter_mut().enumerate() {
                    let at = s0 + unroll * S::LANES;
                    if at < seq {
                        let value = load_at::<S, T>(row, at, seq, 0.0);
                        *sum = S::mul_add(value, value, *sum);
                    }
                }
            }
            let eps = S::splat(eps);
            let one = S::splat(1.0);
            let r = squares
                .map(|sum| S::div(one, S::sqrt(S::mul_add(sum, S::splat(inv_channels), eps))));
            for channel in 0..channels {
                let (row, out_row) = (x.add(channel * seq), out.add(channel * seq));
                let weight = S::splat((*w.add(channel)).to_f32());
                for (unroll, r) in r.iter().enumerate() {
                    let at = s0 + unroll * S::LANES;
                    if at < seq {
                        let value = load_at::<S, T>(row, at, seq, 0.0);
                        store_at::<S, T>(out_row, at, seq, S::mul(S::mul(value, *r), weight));
                    }
                }
            }
        }
    }
}

/// Backward of [`rmsnorm_channels`]: per position `s`,
/// `dx[c][s] = r_s·w[c]·dy[c][s] − r_s³/channels · x[c][s] · Σ_c w·dy·x`, and
/// `dw[c] += Σ_s dy[c][s]·x[c][s]·r_s`.
///
/// # Safety
/// `x`/`dy`/`dx` hold `channels·seq` elements (`dx` may equal `dy`), `w`/`dw` hold
/// `channels`; tier supported.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "the operands of the backward pass"
)]
pub(crate) unsafe fn rmsnorm_channels_backward<S: Simd, T: Storage>(
    x: *const T,
    w: *const T,
    dy: *const T,
    dx: *mut T,
    dw: *mut f32,
    channels: usize,
    seq: usize,
    eps: f32,
) {
    let inv_channels = 1.0 / channels as f32;
    // SAFETY: (whole body) as for `rmsnorm_channels`; `dw` is accessed below `channels`.
    unsafe {
        for s0 in (0..seq).step_by(strip::<S>()) {
            let mut squares = [S::splat(0.0); UNROLL];
            let mut dots = [S::splat(0.0); UNROLL];
            for channel in 0..channels {
                let (row, grad_row) = (x.add(channel * seq), dy.add(channel * seq));
                let weight = S::splat((*w.add(channel)).to_f32());
                for unroll in 0..UNROLL {
                    let at = s0 + unroll * S::LANES;
                    if at < seq {
                        let value = load_at::<S, T>(row, at, seq, 0.0);
                        let grad = load_at::<S, T>(grad_row, at, seq, 0.0);
                        squares[unroll] = S::mul_add(value, value, squares[unroll]);
                        dots[unroll] = S::mul_add(S::mul(weight, grad), value, dots[unroll]);
                    }
                }
            }
            let mut r = [S::splat(0.0); UNROLL];
            let mut coef = [S::splat(0.0); UNROLL];
            for unroll in 0..UNROLL {
                let mean = S::mul_add(squares[unroll], S::splat(inv_channels), S::splat(eps));
                r[unroll] = S::div(S::splat(1.0), S::sqrt(mean));
                let r3 = S::mul(S::mul(r[unroll], r[unroll]), r[unroll]);
                coef[unroll] = S::mul(S::mul(r3, dots[unroll]), S::splat(inv_channels));
            }
            for channel in 0..channels {
                let (row, grad_row) = (x.add(channel * seq), dy.add(channel * seq));
                let out_row = dx.add(channel * seq);
                let weight = S::splat((*w.add(channel)).to_f32());
                let mut dw_sum = S::splat(0.0);
                for unroll in 0..UNROLL {
                    let at = s0 + unroll * S::LANES;
                    if at < seq {
                        let value = load_at::<S, T>(row, at, seq, 0.0);
                        let grad = load_at::<S, T>(grad_row, at, seq, 0.0);
                        let scaled = S::mul(grad, r[unroll]);
                        dw_sum = S::mul_add(scaled, value, dw_sum);
                        let dx_value = S::sub(S::mul(scaled, weight), S::mul(coef[unroll], value));
                        store_at::<S, T>(out_row, at, seq, dx_value);
                    }
                }
                *dw.add(channel) += S::reduce_add(dw_sum);
            }
        }
    }
}

/// SwiGLU gate: `out = silu(gate) · up`, `silu(a) = a · σ(a)`.
///
/// # Safety
/// All three hold `len` elements (`out` may equal either input); tier supported.
#[inline(always)]
pub(crate) unsafe fn swiglu<S: Simd, T: Storage>(
    gate: *const T,
    up: *const T,
    out: *mut T,
    len: usize,
) {
    // SAFETY: (whole body) every access is below `len`.
    unsafe {
        for at in (0..len).step_by(S::LANES) {
            let a = load_at::<S, T>(gate, at, len, 0.0);
            let b = load_at::<S, T>(up, at, len, 0.0);
            let silu = S::mul(a, sigmoid::<S>(a));
            store_at::<S, T>(out, at, len, S::mul(silu, b));
        }
    }
}

/// Backward of [`swiglu`]: `dgate = dout · up · σ(a) · (1 + a·(1 − σ(a)))`,
/// `dup = dout · silu(a)`.
///
/// # Safety
/// All five hold `len` elements (an output may equal `dout`); tier supported.
#[inline(always)]
pub(crate) unsafe fn swiglu_backward<S: Simd, T: Storage>(
    gate: *const T,
    up: *const T,
    dout: *const T,
    dgate: *mut T,
    dup: *mut T,
    len: usize,
) {
    // SAFETY: (whole body) every access is below `len`; all loads of a vector happen before
    // its stores, so an output aliasing `dout` is fine.
    unsafe {
        let one = S::splat(1.0);
        for at in (0..len).step_by(S::LANES) {
            let a = load_at::<S, T>(gate, at, len, 0.0);
            let b = load_at::<S, T>(up, at, len, 0.0);
            let grad = load_at::<S, T>(dout, at, len, 0.0);
            let s = sigmoid::<S>(a);
            let silu = S::mul(a, s);
            let dsilu = S::mul(s, S::mul_add(a, S::sub(one, s), one));
            store_at::<S, T>(dgate, at, len, S::mul(S::mul(grad, b), dsilu));
            store_at::<S, T>(dup, at, len, S::mul(grad, silu));
        }
    }
}

/// Rotary embedding (llama2.c convention): in every head of every row, the pairs
/// `(2i, 2i + 1)` rotate by the angle of row `p`, pair `i`:
/// `(x0·cos − x1·sin, x0·sin + x1·cos)`; `inverse` rotates the other way (the backward).
/// `cos`/`sin` are `[rows][head_size / 2]`.
///
/// # Safety
/// `x`/`out` hold `rows·dim` elements (`out` may equal `x`), the tables `rows·head_size/2`;
/// `head_size` is even and divides `dim`; tier supported.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "tensor, tables and geometry")]
pub(crate) unsafe fn rope<S: Simd, T: Storage>(
    x: *const T,
    out: *mut T,
    cos: *const f32,
    sin: *const f32,
    rows: usize,
    dim: usize,
    head_size: usize,
    inverse: bool,
) {
    let pairs = head_size / 2;
    // SAFETY: (whole body) head `head` of row `row` spans `row·dim + head·head_size` for
    // `head_size` elements; table row `row` spans `row·pairs` for `pairs` values; the tail
    // copies the remaining pairs into local buffers before the paired loads.
    unsafe {
        for row in 0..rows {
            let (cos_row, sin_row) = (cos.add(row * pairs), sin.add(row * pairs));
            for head in 0..dim / head_size {
                let base = row * dim + head * head_size;
                let (x_head, out_head) = (x.add(base), out.add(base));
                for at in (0..head_size).step_by(S::LANES) {
                    let (c, s) = if at + S::LANES <= head_size {
                        (
                            S::load_dup_pairs(cos_row.add(at / 2)),
                            S::load_dup_pairs(sin_row.add(at / 2)),
                        )
                    } else {
                        let left = (head_size - at) / 2;
                        let mut cos_buf = [0f32; MAX_LANES / 2];
                        let mut sin_buf = [0f32; MAX_LANES / 2];
                        std::ptr::copy_nonoverlapping(
                            cos_row.add(at / 2),
                            cos_buf.as_mut_ptr(),
                            left,
                        );
                        std::ptr::copy_nonoverlapping(
                            sin_row.add(at / 2),
                            sin_buf.as_mut_ptr(),
                            left,
                        );
                        (
                            S::load_dup_pairs(cos_buf.as_ptr()),
                            S::load_dup_pairs(sin_buf.as_ptr()),
                        )
                    };
                    let s = if inverse { S::sub(S::splat(0.0), s) } else { s };
                    let value = load_at::<S, T>(x_head, at, head_size, 0.0);
                    let rotated = S::negate_even(S::swap_pairs(value));
                    store_at::<S, T>(
                        out_head,
                        at,
                        head_size,
                        S::mul_add(rotated, s, S::mul(value, c)),
                    );
                }
            }
        }
    }
}

/// `out = a + b`.
///
/// # Safety
/// All three hold `len` elements (`out` may equal either input); tier supported.
#[inline(always)]
pub(crate) unsafe fn add<S: Simd, T: Storage>(a: *const T, b: *const T, out: *mut T, len: usize) {
    // SAFETY: (whole body) every access is below `len`.
    unsafe {
        for at in (0..len).step_by(S::LANES) {
            let sum = S::add(
                load_at::<S, T>(a, at, len, 0.0),
                load_at::<S, T>(b, at, len, 0.0),
            );
            store_at::<S, T>(out, at, len, sum);
        }
    }
}

/// `y = alpha · x + y`.
///
/// # Safety
/// Both hold `len` elements; tier supported.
#[inline(always)]
pub(crate) unsafe fn axpy<S: Simd, T: Storage>(alpha: f32, x: *const T, y: *mut T, len: usize) {
    // SAFETY: (whole body) every access is below `len`.
    unsafe {
        let alpha = S::splat(alpha);
        for at in (0..len).step_by(S::LANES) {
            let value = load_at::<S, T>(x, at, len, 0.0);
            let acc = load_at::<S, T>(y, at, len, 0.0);
            store_at::<S, T>(y, at, len, S::mul_add(alpha, value, acc));
        }
    }
}

/// The mask of a softmax row, lowered to raw parts.
#[derive(Clone, Copy)]
pub(crate) enum RawMask {
    /// No mask.
    None,
    /// Row `r` keeps columns `0..=r + offset` (the rest are -inf).
    Causal { offset: usize },
    /// Row `r` adds `values[r·row_stride ..][..n]`.
    Additive {
        values: *const f32,
        row_stride: usize,
    },
}

/// Replaces lanes `valid..` of `value` by `fill`.
///
/// # Safety
/// Tier supported.
#[inline(always)]
unsafe fn fill_tail<S: Simd>(value: S::V, valid: usize, fill: f32) -> S::V {
    let mut buf = [0f32; MAX_LANES];
    // SAFETY: `buf` holds MAX_LANES ≥ LANES values.
    unsafe {
        S::store_f32(buf.as_mut_ptr(), value);
        for lane in buf.iter_mut().take(S::LANES).skip(valid) {
            *lane = fill;
        }
        S::load_f32(buf.as_ptr())
    }
}

/// Lanes `at..at + LANES` of one softmax row's logits, `scale·x (+ mask)`, with lanes at or
/// past `valid` set to -inf. A function rather than a closure in [`softmax_rows`] so that it
/// is inlined with the caller's `#[target_feature]`s (a closure is compiled without them, and
/// its intrinsics became calls).
///
/// # Safety
/// `x_row` (and `mask_row`) hold `valid` readable values from `at`'s row start; tier supported.
#[inline(always)]
unsafe fn softmax_logits<S: Simd, T: Storage>(
    x_row: *const T,
    mask_row: Option<*const f32>,
    scale_v: S::V,
    valid: usize,
    at: usize,
) -> S::V {
    // SAFETY: `load_at` reads only elements below `valid`; the rest is register arithmetic.
    unsafe {
        let value = S::mul(load_at::<S, T>(x_row, at, valid, 0.0), scale_v);
        let value = match mask_row {
            Some(mask_row) => S::add(value, load_at::<S, f32>(mask_row, at, valid, 0.0)),
            None => value,
        };
        if at + S::LANES > valid {
            fill_tail::<S>(value, valid - at, f32::NEG_INFINITY)
        } else {
            value
        }
    }
}

/// Softmax of `rows` rows of `n` along the row: `z = scale·x (+ mask)`,
/// `out = exp(z − max z) / Σ exp(z − max z)`. Masked columns (causal: past `r + offset`; or
/// additive -inf) get exactly 0; a row with nothing left gets all zeros. Three reads of the
/// row (max, sum, normalise) while it sits in L1; `exp` is recomputed rather than stored so
/// an f16 output is rounded once.
///
/// # Safety
/// `x`/`out` hold `rows·n` elements (`out` may equal `x`); an additive mask holds
/// `(rows − 1)·row_stride + n` values; tier supported.
#[inline(always)]
pub(crate) unsafe fn softmax_rows<S: Simd, T: Storage>(
    x: *const T,
    out: *mut T,
    rows: usize,
    n: usize,
    scale: f32,
    mask: RawMask,
) {
    // SAFETY: (whole body) row `row` spans `row·n..(row + 1)·n`; mask row `row` spans
    // `row·row_stride` for `n` values; every access is below `n` within a row.
    unsafe {
        let scale_v = S::splat(scale);
        for row in 0..rows {
            let (x_row, out_row) = (x.add(row * n), out.add(row * n));
            let (valid, mask_row) = match mask {
                RawMask::None => (n, None),
                RawMask::Causal { offset } => ((row + offset + 1).min(n), None),
                RawMask::Additive { values, row_stride } => (n, Some(values.add(row * row_stride))),
            };
            let mut max = S::splat(f32::NEG_INFINITY);
            for at in (0..valid).step_by(S::LANES) {
                max = S::max(
                    max,
                    softmax_logits::<S, T>(x_row, mask_row, scale_v, valid, at),
                );
            }
            let max = S::reduce_max(max);
            if max == f32::NEG_INFINITY || max.is_nan() {
                for at in (0..n).step_by(S::LANES) {
                    store_at::<S, T>(out_row, at, n, S::splat(0.0));
                }
                continue;
            }
            let max = S::splat(max);
            let mut sum = S::splat(0.0);
            for at in (0..valid).step_by(S::LANES) {
                sum = S::add(
                    sum,
                    exp::<S>(S::sub(
                        softmax_logits::<S, T>(x_row, mask_row, scale_v, valid, at),
                        max,
                    )),
                );
            }
            let inv = S::splat(1.0 / S::reduce_add(sum));
            for at in (0..valid).step_by(S::LANES) {
                let prob = S::mul(
                    exp::<S>(S::sub(
                        softmax_logits::<S, T>(x_row, mask_row, scale_v, valid, at),
                        max,
                    )),
                    inv,
                );
                store_at::<S, T>(out_row, at, valid, prob);
            }
            for at in (valid..n).step_by(S::LANES) {
                store_at::<S, T>(out_row, at, n, S::splat(0.0));
            }
        }
    }
}

/// Backward of [`softmax_rows`] from its output `y`: `dx = scale · y · (dy − Σ y·dy)`.
/// (Masked columns have `y = 0`, so they get 0.)
///
/// # Safety
/// All three hold `rows·n` elements (`dx` may equal `dy`); tier supported.
#[inline(always)]
pub(crate) unsafe fn softmax_rows_backward<S: Simd, T: Storage>(
    y: *const T,
    dy: *const T,
    dx: *mut T,
    rows: usize,
    n: usize,
    scale: f32,
) {
    // SAFETY: (whole body) row `row` spans `row·n..(row + 1)·n` of each buffer.
    unsafe {
        for row in 0..rows {
            let (y, dy, dx) = (y.add(row * n), dy.add(row * n), dx.add(row * n));
            let mut dot = S::splat(0.0);
            for at in (0..n).step_by(S::LANES) {
                let prob = load_at::<S, T>(y, at, n, 0.0);
                dot = S::mul_add(prob, load_at::<S, T>(dy, at, n, 0.0), dot);
            }
            let dot = S::splat(S::reduce_add(dot));
            let scale = S::splat(scale);
            for at in (0..n).step_by(S::LANES) {
                let prob = load_at::<S, T>(y, at, n, 0.0);
                let grad = S::sub(load_at::<S, T>(dy, at, n, 0.0), dot);
                store_at::<S, T>(dx, at, n, S::mul(S::mul(prob, grad), scale));
            }
        }
    }
}

/// Stamps `#[target_feature]` wrappers of every kernel body for one tier into a module.
macro_rules! stamp_tiers {
    ($( $module:ident: $simd:ty, [$($attr:meta),*]; )*) => {$(
        pub(crate) mod $module {
            #![allow(clippy::too_many_arguments, reason = "mirrors the kernel bodies")]
            use super::*;

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn rmsnorm_rows<T: Storage>(x: *const T, w: *const T, out: *mut T, rows: usize, dim: usize, eps: f32) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::rmsnorm_rows::<$simd, T>(x, w, out, rows, dim, eps) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn rmsnorm_rows_backward<T: Storage>(x: *const T, w: *const T, dy: *const T, dx: *mut T, dw: *mut f32, rows: usize, dim: usize, eps: f32) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::rmsnorm_rows_backward::<$simd, T>(x, w, dy, dx, dw, rows, dim, eps) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn rmsnorm_channels<T: Storage>(x: *const T, w: *const T, out: *mut T, channels: usize, seq: usize, eps: f32) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::rmsnorm_channels::<$simd, T>(x, w, out, channels, seq, eps) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn rmsnorm_channels_backward<T: Storage>(x: *const T, w: *const T, dy: *const T, dx: *mut T, dw: *mut f32, channels: usize, seq: usize, eps: f32) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::rmsnorm_channels_backward::<$simd, T>(x, w, dy, dx, dw, channels, seq, eps) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn swiglu<T: Storage>(gate: *const T, up: *const T, out: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::swiglu::<$simd, T>(gate, up, out, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn swiglu_backward<T: Storage>(gate: *const T, up: *const T, dout: *const T, dgate: *mut T, dup: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::swiglu_backward::<$simd, T>(gate, up, dout, dgate, dup, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn rope<T: Storage>(x: *const T, out: *mut T, cos: *const f32, sin: *const f32, rows: usize, dim: usize, head_size: usize, inverse: bool) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::rope::<$simd, T>(x, out, cos, sin, rows, dim, head_size, inverse) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn add<T: Storage>(a: *const T, b: *const T, out: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::add::<$simd, T>(a, b, out, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn axpy<T: Storage>(alpha: f32, x: *const T, y: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::axpy::<$simd, T>(alpha, x, y, len) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn softmax_rows<T: Storage>(x: *const T, out: *mut T, rows: usize, n: usize, scale: f32, mask: RawMask) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::softmax_rows::<$simd, T>(x, out, rows, n, scale, mask) }
            }

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(crate) unsafe fn softmax_rows_backward<T: Storage>(y: *const T, dy: *const T, dx: *mut T, rows: usize, n: usize, scale: f32) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::softmax_rows_backward::<$simd, T>(y, dy, dx, rows, n, scale) }
            }
        }
    )*};
}

stamp_tiers! {
    generic: super::super::simd::Portable, [inline(never)];
}

#[cfg(target_arch = "x86_64")]
stamp_tiers! {
    avx2: super::super::x86::Avx2, [target_feature(enable = "avx2,fma,f16c")];
    avx512: super::super::x86::Avx512, [target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")];
}
