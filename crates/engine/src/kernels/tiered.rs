//! Tier kernels for the elementwise, softmax and reduction slots: the destination is walked
//! in rows split across the pool's threads (as the portable kernels do); contiguous runs (and
//! stride-0 broadcasts) go straight to linalg's vectorised kernels (`linalg::ew`), strided runs
//! are gathered into stack blocks of storage values first and strided destinations written
//! back from such blocks, so every layout takes the same arithmetic.
//!
//! | slot | tier kernel | against the portable kernel |
//! |---|---|---|
//! | add, sub, mul, real_div, maximum, minimum (fp16, fp32), any operand/destination strides | `ew::stream::binary` | bit-identical (one f32 op, one round-to-nearest-even; maximum/minimum IEEE 754-2019: the default NaN, `-0 < +0`) |
//! | reduce_sum, reduce_mean, reduce_max over a dense trailing box (fp16, fp32) | `ew::stream::sum`, `ew::stream::max` | max bit-identical (a `±0` maximum takes the sign of the row's first zero, as the portable order does); sums within the same bound in a different order (`4·lanes` partial sums) |
//! | reduce_sum, reduce_mean, reduce_max over a strided box whose destination rows are source rows (a non-innermost axis: RMSNorm's mean over C of `[1, C, 1, S]`) | `ew::stream::accumulate` (a row of accumulators, one source row per reduced position) | bit-identical (the portable order) |
//! | fp16 unary ops without parameters (exp, sigmoid, silu, tanh, erf, gelu, sqrt, ...) | a 65 536-entry table of the portable kernel's results, built once per op on first use | bit-identical by construction |
//! | fp16 `log(x + ε)` and fp16 `pow(x, e)` with `e` one broadcast value (a constant) | a 65 536-entry table per ε or `e` (at most 32 such tables per process, then the portable kernel) | bit-identical by construction |
//! | fp16 rsqrt(ε), inverse(ε), clip(α, β); fp32 abs, square, sqrt, relu, clip, identity, inverse, rsqrt, exp, sigmoid, silu, and in the fast profile gelu (all three modes), `log(x + ε)`, tanh and erf | `ew::stream::unary` | bit-identical for abs, square, sqrt, relu, clip, identity and inverse with ε = 0; rsqrt and inverse(ε ≠ 0) within 3 f32 ulps (f32 instead of f64 arithmetic), exp, sigmoid, silu, gelu, log, tanh, erf within the bounds of `ew::stream` (vector `exp`, Cephes `logf`/`tanhf` polynomials, fitted erf/erfc polynomials); in the exact profile fp32 log, tanh, erf and gelu keep the portable kernel |
//! | fp32 `pow(x, e)`, `e` a broadcast 1, 2, -1, 0.5, and in the fast profile also 3 or -0.5 | `ew::stream::unary` (identity, square, inverse, sqrt; cube, rsqrt), with the inputs those get wrong (-0 for 0.5 and -1, -inf for ±0.5) recomputed by the portable scalar code | bit-identical for 1, 2, -1, 0.5 (correctly rounded f32 results); 3 and -0.5 within 2 f32 ulps (two f32 roundings); other exponents keep the portable kernel |
//! | softmax along a contiguous last axis (fp16, fp32) | `ew::softmax_rows` | same bound: vector `exp` (≤ 2 f32 ulps) instead of libm's `expf`; rows holding NaN or +inf, or only -inf, take the portable path so the NaN rules are unchanged |
//! | softmax over a middle axis with a contiguous inner axis (`[1, V, 1, S]` over V) | `ew::stream::accumulate` (column maxima), `accumulate_exp` (sums, in row blocks rescaled when the maximum grows), `exp_scale` | vector `exp` and a product by `1/sum` instead of libm `expf` and a division: the softmax bound plus the rescalings (see the crate's precision table); NaN columns as in the portable kernel |
//!
//! [`plug`] installs them in a table for a tier; [`KernelTable::generic`] keeps the portable
//! kernels, which the tests compare against.
//!
//! [`KernelTable::generic`]: crate::kernels::table::KernelTable::generic

use half::f16;
use milbridge_linalg::cpu::Isa;
use milbridge_linalg::ew::stream::{
    self, BinaryOp as LinalgBinary, Operand, ReduceOp as LinalgReduce, UnaryOp as LinalgUnary,
};
use milbridge_linalg::ew::{self as lew, EwOp, Mask, Storage};

use crate::Precision;
use crate::elem::Elem;
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::generic::elementwise::{self as gew, unary_f32 as portable_unary_f32};
use crate::kernels::generic::reduce as rd;
use crate::kernels::table::KernelTable;
use crate::kernels::{BLOCK, Kernel, KernelCtx, SEG, SrcView};
use crate::layout::{Layout, MAX_RANK};
use crate::plan::step::{BinaryOp, N_UNARY, ReduceOp, StepOp, UnaryOp};

type KResult = Result<(), KernelError>;

/// Installs the tier kernels of this module into `table` (built for `isa`).
pub fn plug(table: &mut KernelTable, isa: Isa) {
    let binaries: [(BinaryOp, LinalgBinary, KernelFns); 6] = [
        (BinaryOp::Add, LinalgBinary::Add, (add_f16, add_f32)),
        (BinaryOp::Sub, LinalgBinary::Sub, (sub_f16, sub_f32)),
        (BinaryOp::Mul, LinalgBinary::Mul, (mul_f16, mul_f32)),
        (BinaryOp::RealDiv, LinalgBinary::Div, (div_f16, div_f32)),
        (
            BinaryOp::Maximum,
            LinalgBinary::Maximum,
            (maximum_f16, maximum_f32),
        ),
        (
            BinaryOp::Minimum,
            LinalgBinary::Minimum,
            (minimum_f16, minimum_f32),
        ),
    ];
    for (op, linalg_op, (run_f16, run_f32)) in binaries {
        table.binary_f16[op as usize] = Kernel {
            name: stream::binary_kernel_name::<f16>(linalg_op, isa),
            run: run_f16,
        };
        table.binary_f32[op as usize] = Kernel {
            name: stream::binary_kernel_name::<f32>(linalg_op, isa),
            run: run_f32,
        };
    }
    table.softmax = [
        Kernel {
            name: lew::kernel_name::<f16>(EwOp::Softmax, isa),
            run: softmax_f16,
        },
        Kernel {
            name: lew::kernel_name::<f32>(EwOp::Softmax, isa),
            run: softmax_f32,
        },
    ];
    for (slot, kernel) in table.unary_f16.iter_mut().enumerate() {
        if let Some(name) = UNARY_TABLE_NAMES[slot] {
            *kernel = Kernel {
                name,
                run: unary_f16_table,
            };
        }
    }
    for (op, linalg_op, mean) in [
        (ReduceOp::Sum, LinalgReduce::Sum, false),
        (ReduceOp::Mean, LinalgReduce::Sum, true),
        (ReduceOp::Max, LinalgReduce::Max, false),
    ] {
        table.reduce_f16[op as usize] = Kernel {
            name: stream::reduce_kernel_name::<f16>(linalg_op, mean, isa),
            run: reduce_f16,
        };
        table.reduce_f32[op as usize] = Kernel {
            name: stream::reduce_kernel_name::<f32>(linalg_op, mean, isa),
            run: reduce_f32,
        };
    }
    table.softmax_columns = [
        Kernel {
            name: stream::softmax_columns_kernel_name::<f16>(isa),
            run: softmax_columns_f16,
        },
        Kernel {
            name: stream::softmax_columns_kernel_name::<f32>(isa),
            run: softmax_columns_f32,
        },
    ];
    table.binary_f16[BinaryOp::Pow as usize] = Kernel {
        name: "generic_pow_f16_table",
        run: pow_f16,
    };
    table.binary_f32[BinaryOp::Pow as usize] = Kernel {
        name: pow_kernel_name(isa),
        run: pow_f32,
    };
    table.unary_f16[UnaryOp::Log(0.0).slot()] = Kernel {
        name: "generic_log_f16_table",
        run: log_f16_table,
    };
    for (slot, &op) in SLOT_OPS.iter().enumerate() {
        let Some(linalg_op) = stream_unary(op, table.precision) else {
            continue;
        };
        table.unary_f32[slot] = Kernel {
            name: stream::unary_kernel_name::<f32>(linalg_op, isa),
            run: unary_f32,
        };
        if f16_streamed(op) {
            table.unary_f16[slot] = Kernel {
                name: stream::unary_kernel_name::<f16>(linalg_op, isa),
                run: unary_f16_stream,
            };
        }
    }
}

/// Whether the tier tables compute unary `op` on `ty` with vector arithmetic whose result can
/// differ from the portable kernel's (the transcendental `ew::stream::unary` ops, see
/// [`stream::UnaryOp::is_exact`]): the exact profile's fusion pass leaves such ops unfused, so
/// a fused plan computes the same bits as the unfused one.
pub fn vector_unary_differs(op: UnaryOp, ty: crate::kernels::table::FloatTy) -> bool {
    let routed = match ty {
        crate::kernels::table::FloatTy::F32 => true,
        crate::kernels::table::FloatTy::F16 => f16_streamed(op),
    };
    routed && stream_unary(op, Precision::Exact).is_some_and(|linalg_op| !linalg_op.is_exact())
}

/// Whether fp16 `op` goes to `ew::stream::unary` (when that has it): the ops without an
/// fp16 table (fp16 `log` has per-ε tables, [`log_f16_table`]).
fn f16_streamed(op: UnaryOp) -> bool {
    UNARY_TABLE_NAMES[op.slot()].is_none() && !matches!(op, UnaryOp::Log(_))
}

/// The fp16 and fp32 entry points of one slot.
type KernelFns = (
    fn(&mut KernelCtx<'_>) -> KResult,
    fn(&mut KernelCtx<'_>) -> KResult,
);

/// The operand of one destination run: a slice when the source row is contiguous, a splat
/// when it is broadcast (or one element long), `None` otherwise.
fn run_operand<'a, T: Elem<C = f32> + Storage>(
    view: &SrcView<'a, T>,
    base: usize,
    stride: usize,
    len: usize,
) -> Option<Operand<'a, T>> {
    if stride == 0 || len == 1 {
        Some(Operand::Splat(view.at(base)))
    } else if stride == 1 {
        Some(Operand::Slice(&view.data[base..base + len]))
    } else {
        None
    }
}

/// The operand of `n` elements at `start`, `stride` apart: [`run_operand`] when the run is
/// contiguous or broadcast, else the elements gathered into `buf`.
fn block_operand<'b, T: Elem<C = f32> + Storage>(
    view: &SrcView<'b, T>,
    start: usize,
    stride: usize,
    n: usize,
    buf: &'b mut [T; BLOCK],
) -> Operand<'b, T> {
    if let Some(operand) = run_operand(view, start, stride, n) {
        return operand;
    }
    for (k, value) in buf[..n].iter_mut().enumerate() {
        *value = view.data[start + k * stride];
    }
    Operand::Slice(&buf[..n])
}

/// A float binary kernel: linalg's streaming kernel on every run: directly on contiguous and
/// broadcast runs, on gathered blocks of strided ones (it computes `op` in f32 and rounds
/// once, like the portable kernel).
fn binary<T: Elem<C = f32> + Storage>(ctx: &mut KernelCtx<'_>, op: LinalgBinary) -> KResult {
    let a = ctx.src::<T>(0);
    let b = ctx.src::<T>(1);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_inner = rank.min(1);
    let n_tasks = ctx.tasks(layout.numel());
    let (pool, isa) = (ctx.pool, ctx.isa);
    let (a_stride, b_stride) = (a.last_stride(), b.last_stride());
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, n_inner, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut lhs = [T::default(); BLOCK];
        let mut rhs = [T::default(); BLOCK];
        let mut stored = [T::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let outer = &idx[..rank - n_inner];
            let (start, len) = (tile.start(), tile.len());
            let a_base = a.layout.offset_of(outer) + start * a_stride;
            let b_base = b.layout.offset_of(outer) + start * b_stride;
            if let (Some(x), Some(y)) = (
                run_operand(&a, a_base, a_stride, len),
                run_operand(&b, b_base, b_stride, len),
            ) && let Some(out) = tile.contiguous()
            {
                stream::binary(isa, op, x, y, out);
                continue;
            }
            // A strided operand or destination: blocks of gathered storage values through
            // the same streaming kernel (so the same bits), scattered when the tile is strided.
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                let x = block_operand(&a, a_base + j * a_stride, a_stride, n, &mut lhs);
                let y = block_operand(&b, b_base + j * b_stride, b_stride, n, &mut rhs);
                if let Some(out) = tile.contiguous() {
                    stream::binary(isa, op, x, y, &mut out[j..j + n]);
                } else {
                    stream::binary(isa, op, x, y, &mut stored[..n]);
                    tile.write_at(j, &stored[..n]);
                }
                j += n;
            }
        }
        Ok(())
    })
}

macro_rules! binary_kernels {
    ($($name:ident: $t:ty, $op:expr;)*) => {$(
        /// A tier binary kernel (see the module docs).
        pub fn $name(ctx: &mut KernelCtx<'_>) -> KResult {
            binary::<$t>(ctx, $op)
        }
    )*};
}

binary_kernels! {
    add_f16: f16, LinalgBinary::Add;
    sub_f16: f16, LinalgBinary::Sub;
    mul_f16: f16, LinalgBinary::Mul;
    div_f16: f16, LinalgBinary::Div;
    add_f32: f32, LinalgBinary::Add;
    sub_f32: f32, LinalgBinary::Sub;
    mul_f32: f32, LinalgBinary::Mul;
    div_f32: f32, LinalgBinary::Div;
    maximum_f16: f16, LinalgBinary::Maximum;
    minimum_f16: f16, LinalgBinary::Minimum;
    maximum_f32: f32, LinalgBinary::Maximum;
    minimum_f32: f32, LinalgBinary::Minimum;
}

/// Storage types whose special values can be recognised from their bits.
trait SpecialBits: Copy {
    /// Whether the value is NaN or +inf.
    fn is_nan_or_pos_inf(self) -> bool;
    /// Whether the value is -inf.
    fn is_neg_inf(self) -> bool;
}

impl SpecialBits for f16 {
    #[inline]
    fn is_nan_or_pos_inf(self) -> bool {
        let bits = self.to_bits();
        bits & 0x7fff > 0x7c00 || bits == 0x7c00
    }

    #[inline]
    fn is_neg_inf(self) -> bool {
        self.to_bits() == 0xfc00
    }
}

impl SpecialBits for f32 {
    #[inline]
    fn is_nan_or_pos_inf(self) -> bool {
        let bits = self.to_bits();
        bits & 0x7fff_ffff > 0x7f80_0000 || bits == 0x7f80_0000
    }

    #[inline]
    fn is_neg_inf(self) -> bool {
        self.to_bits() == 0xff80_0000
    }
}

/// Whether linalg's softmax computes `row` under the portable kernel's rules: no NaN, no
/// +inf, and at least one value above -inf (its max is then finite).
fn regular_row<T: SpecialBits>(row: &[T]) -> bool {
    let special = row
        .iter()
        .fold(false, |acc, &value| acc | value.is_nan_or_pos_inf());
    !special && !row.iter().all(|&value| value.is_neg_inf())
}

/// Softmax along the last axis: regular contiguous rows through `ew::softmax_rows`, the
/// others by the portable algorithm (max with NaN propagation, libm `exp`, one rounding),
/// streaming the row three times instead of buffering it.
fn softmax<T: Elem<C = f32> + Storage + SpecialBits>(ctx: &mut KernelCtx<'_>) -> KResult {
    let x = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let len = layout.shape.last().copied().unwrap_or(1);
    let n_inner = rank.min(1);
    let n_tasks = ctx.tasks(layout.numel() * 8);
    let (pool, isa) = (ctx.pool, ctx.isa);
    let stride = x.last_stride();
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, n_inner, usize::MAX);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut values = [0f32; BLOCK];
        let mut stored = [T::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let base = x.layout.offset_of(&idx[..rank - n_inner]);
            if stride == 1 || len == 1 {
                let row = &x.data[base..base + len];
                if regular_row(row)
                    && let Some(out) = tile.contiguous()
                {
                    lew::softmax_rows(isa, row, len, 1.0, Mask::None, out);
                    continue;
                }
            }
            let mut max = f32::NEG_INFINITY;
            let mut nan = false;
            for_blocks(&x, base, stride, len, &mut values, |_, block| {
                for &v in block.iter() {
                    nan |= v.is_nan();
                    max = max.max(v);
                }
            });
            if nan {
                max = f32::NAN;
            }
            let mut sum = 0f32;
            for_blocks(&x, base, stride, len, &mut values, |_, block| {
                for &v in block.iter() {
                    sum += (v - max).exp();
                }
            });
            let inv = 1.0 / sum;
            for_blocks(&x, base, stride, len, &mut values, |j, block| {
                for v in block.iter_mut() {
                    *v = (*v - max).exp() * inv;
                }
                let n = block.len();
                T::store_slice(block, &mut stored[..n]);
                tile.write_at(j, &stored[..n]);
            });
        }
        Ok(())
    })
}

/// Loads the run of `len` elements at `base` (`stride` apart) block by block into `buf` and
/// calls `visit(first element, block)`.
fn for_blocks<T: Elem<C = f32>>(
    x: &SrcView<'_, T>,
    base: usize,
    stride: usize,
    len: usize,
    buf: &mut [f32; BLOCK],
    mut visit: impl FnMut(usize, &mut [f32]),
) {
    let mut j = 0;
    while j < len {
        let n = (len - j).min(BLOCK);
        x.load_run(base + j * stride, stride, &mut buf[..n]);
        visit(j, &mut buf[..n]);
        j += n;
    }
}

/// Tier fp16 softmax over the last axis.
pub fn softmax_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax::<f16>(ctx)
}

/// Tier fp32 softmax over the last axis.
pub fn softmax_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax::<f32>(ctx)
}

/// Whether the trailing `n_reduced` dims of `layout` are one dense run.
fn dense_box(layout: &Layout, n_reduced: usize) -> bool {
    let rank = layout.rank();
    let mut expected = 1;
    for d in (rank - n_reduced..rank).rev() {
        if layout.shape[d] != 1 && layout.strides[d] != expected {
            return false;
        }
        expected *= layout.shape[d];
    }
    true
}

/// Reductions: over a dense trailing box by `ew::stream::sum` / `ew::stream::max`; over a
/// strided box whose destination rows are contiguous in the source (a reduction over a
/// non-innermost axis, e.g. the channels of `[1, C, 1, S]`) by `ew::stream::accumulate`, one
/// source row per reduced position added into a row of accumulators in the portable order;
/// any other box by the portable kernel.
fn reduce<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    portable: fn(&mut KernelCtx<'_>) -> KResult,
) -> KResult {
    let (op, n_reduced) = match ctx.op {
        StepOp::Reduce { op, n_reduced } => (*op, *n_reduced),
        other => panic!("reduce kernel called for {other:?} (kernel table invariant)"),
    };
    let x = ctx.src::<T>(0);
    if dense_box(x.layout, n_reduced) {
        reduce_dense::<T>(ctx, op, n_reduced)
    } else if rows_in_source(x.layout, n_reduced) {
        reduce_rows::<T>(ctx, op, n_reduced)
    } else {
        portable(ctx)
    }
}

/// The sign of a zero maximum as the portable kernel gives it: it keeps the earlier of two
/// equal values, so its result is the row's first zero (`stream::max` leaves the sign of a
/// `±0` maximum unspecified).
fn first_zero<T: Elem<C = f32>>(row: &[T]) -> f32 {
    row.iter()
        .map(|value| value.load())
        .find(|&v| v == 0.0)
        .unwrap_or(0.0)
}

/// One result per destination element over the dense box at its offset.
fn reduce_dense<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    op: ReduceOp,
    n_reduced: usize,
) -> KResult {
    let x = ctx.src::<T>(0);
    let count: usize = x.layout.shape[x.layout.rank() - n_reduced..]
        .iter()
        .product();
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_tasks = ctx.tasks(x.layout.numel());
    let (pool, isa) = (ctx.pool, ctx.isa);
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, 0, 1);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let base = x.layout.offset_of(&idx[..rank]);
            let row = &x.data[base..base + count];
            let result = match op {
                ReduceOp::Sum => stream::sum(isa, row),
                ReduceOp::Mean => stream::sum(isa, row) / count as f32,
                ReduceOp::Max => {
                    let max = stream::max(isa, row);
                    if max.is_nan() {
                        f32::NAN
                    } else if max == 0.0 {
                        first_zero(row)
                    } else {
                        max
                    }
                }
            };
            tile.set(0, <T as Elem>::store(result));
        }
        Ok(())
    })
}

/// Whether the destination's last axis is a contiguous run of the source (stride 1), so a
/// row of destination elements reads one source row per reduced position.
fn rows_in_source(layout: &Layout, n_reduced: usize) -> bool {
    let rank = layout.rank() - n_reduced;
    rank > 0 && layout.strides[rank - 1] == 1
}

/// Destination elements per row segment of [`reduce_rows`] (its accumulators live on the
/// stack).
const ROW_SEG: usize = 512;

/// Reductions over a strided box: a destination row segment accumulates the source row of
/// every reduced position, in the portable kernel's (row-major) order, so sums, means and
/// maxima have the portable kernel's bits.
fn reduce_rows<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    op: ReduceOp,
    n_reduced: usize,
) -> KResult {
    let x = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let reduced_shape = &x.layout.shape[rank..];
    let reduced_strides = &x.layout.strides[rank..];
    let count: usize = reduced_shape.iter().product();
    let n_tasks = ctx.tasks(x.layout.numel());
    let (pool, isa) = (ctx.pool, ctx.isa);
    let (linalg_op, init) = match op {
        ReduceOp::Sum | ReduceOp::Mean => (LinalgReduce::Sum, 0.0),
        ReduceOp::Max => (LinalgReduce::Max, f32::NEG_INFINITY),
    };
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, 1, ROW_SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut acc = [0f32; ROW_SEG];
        let mut stored = [T::default(); ROW_SEG];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (start, len) = (tile.start(), tile.len());
            let base = x.layout.offset_of(&idx[..rank - 1]) + start;
            let acc = &mut acc[..len];
            acc.fill(init);
            let mut position = [0usize; MAX_RANK];
            for _ in 0..count {
                let offset = base
                    + position[..n_reduced]
                        .iter()
                        .zip(reduced_strides)
                        .map(|(&i, &s)| i * s)
                        .sum::<usize>();
                stream::accumulate(isa, linalg_op, acc, &x.data[offset..offset + len]);
                for d in (0..n_reduced).rev() {
                    position[d] += 1;
                    if position[d] < reduced_shape[d] {
                        break;
                    }
                    position[d] = 0;
                }
            }
            for (value, &total) in stored[..len].iter_mut().zip(acc.iter()) {
                let result = match op {
                    ReduceOp::Mean => total / count as f32,
                    ReduceOp::Max if total.is_nan() => f32::NAN,
                    _ => total,
                };
                *value = <T as Elem>::store(result);
            }
            tile.write_at(0, &stored[..len]);
        }
        Ok(())
    })
}

/// Tier fp16 reduce_sum / reduce_mean / reduce_max.
pub fn reduce_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    reduce::<f16>(ctx, rd::reduce_f16)
}

/// Tier fp32 reduce_sum / reduce_mean / reduce_max.
pub fn reduce_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    reduce::<f32>(ctx, rd::reduce_f32)
}

/// Kernel names of the fp16 unary slots served by a table (`None`: the op has parameters
/// and keeps the portable kernel). The same on every tier: a table lookup is portable scalar code.
const UNARY_TABLE_NAMES: [Option<&str>; N_UNARY] = [
    Some("generic_abs_f16_table"),
    Some("generic_square_f16_table"),
    Some("generic_sqrt_f16_table"),
    Some("generic_exp_f16_table"),
    Some("generic_erf_f16_table"),
    Some("generic_tanh_f16_table"),
    Some("generic_sigmoid_f16_table"),
    Some("generic_relu_f16_table"),
    Some("generic_silu_f16_table"),
    None,
    None,
    None,
    Some("generic_gelu_f16_table"),
    Some("generic_gelutanh_f16_table"),
    Some("generic_gelusigmoid_f16_table"),
    None,
    Some("generic_identity_f16_table"),
];

/// The results of the portable kernel for every fp16 bit pattern.
type UnaryTable = [f16; 1 << 16];

/// The table of `op` (a parameterless op), built on first use.
fn unary_table(op: UnaryOp) -> &'static UnaryTable {
    static TABLES: [std::sync::OnceLock<Box<UnaryTable>>; N_UNARY] =
        [const { std::sync::OnceLock::new() }; N_UNARY];
    TABLES[op.slot()].get_or_init(|| {
        let mut table = Box::new([f16::ZERO; 1 << 16]);
        for (bits, entry) in (0..=u16::MAX).zip(table.iter_mut()) {
            *entry = f16::from_f32(portable_unary_f32(op, f16::from_bits(bits).to_f32()));
        }
        table
    })
}

/// fp16 unary ops by table lookup: exactly the portable kernel's per-element result
/// (`unary_f32` on the widened input, rounded once), at the cost of a load.
fn unary_f16_table(ctx: &mut KernelCtx<'_>) -> KResult {
    let op = match ctx.op {
        StepOp::Unary(op) => *op,
        other => panic!("unary kernel called for {other:?} (kernel table invariant)"),
    };
    if UNARY_TABLE_NAMES[op.slot()].is_none() {
        return gew::unary_f16(ctx);
    }
    apply_table(ctx, unary_table(op))
}

/// `dst = table[src 0]` elementwise over fp16 bit patterns, contiguous rows directly,
/// strided ones in blocks.
fn apply_table(ctx: &mut KernelCtx<'_>, table: &UnaryTable) -> KResult {
    let x = ctx.src::<f16>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_inner = rank.min(1);
    let n_tasks = ctx.tasks(layout.numel());
    let pool = ctx.pool;
    let stride = x.last_stride();
    let tiles = DstTiles::<f16>::new(ctx.dst_slice::<f16>(), layout, n_inner, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut stored = [f16::ZERO; BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (start, len) = (tile.start(), tile.len());
            let base = x.layout.offset_of(&idx[..rank - n_inner]) + start * stride;
            if stride == 1
                && let Some(out) = tile.contiguous()
            {
                for (value, &input) in out.iter_mut().zip(&x.data[base..base + len]) {
                    *value = table[usize::from(input.to_bits())];
                }
                continue;
            }
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                for (k, value) in stored[..n].iter_mut().enumerate() {
                    *value = table[usize::from(x.data[base + (j + k) * stride].to_bits())];
                }
                tile.write_at(j, &stored[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// One op of every unary slot (parameters are placeholders), for the plug loop.
const SLOT_OPS: [UnaryOp; N_UNARY] = [
    UnaryOp::Abs,
    UnaryOp::Square,
    UnaryOp::Sqrt,
    UnaryOp::Exp,
    UnaryOp::Erf,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Relu,
    UnaryOp::Silu,
    UnaryOp::Rsqrt(0.0),
    UnaryOp::Log(0.0),
    UnaryOp::Inverse(0.0),
    UnaryOp::GeluExact,
    UnaryOp::GeluTanh,
    UnaryOp::GeluSigmoid,
    UnaryOp::Clip(0.0, 0.0),
    UnaryOp::Identity,
];

/// The `ew::stream::unary` op computing `op`, if there is one (erf, tanh, log and exact gelu
/// keep the portable f64 kernels; a clip with a NaN bound too).
fn stream_unary(op: UnaryOp, precision: Precision) -> Option<LinalgUnary> {
    let fast = precision == Precision::Fast;
    Some(match op {
        UnaryOp::Identity => LinalgUnary::Identity,
        UnaryOp::Abs => LinalgUnary::Abs,
        UnaryOp::Square => LinalgUnary::Square,
        UnaryOp::Sqrt => LinalgUnary::Sqrt,
        UnaryOp::Relu => LinalgUnary::Relu,
        UnaryOp::Clip(lo, hi) if !lo.is_nan() && !hi.is_nan() => LinalgUnary::Clip(lo, hi),
        UnaryOp::Rsqrt(eps) => LinalgUnary::Rsqrt(eps),
        UnaryOp::Inverse(eps) => LinalgUnary::Inverse(eps),
        UnaryOp::Exp => LinalgUnary::Exp,
        UnaryOp::Sigmoid => LinalgUnary::Sigmoid,
        UnaryOp::Silu => LinalgUnary::Silu,
        // Only in the fast profile: the exact profile fuses gelu (its fused kernel evaluates
        // it as the portable kernel does), and fused exact plans must equal unfused ones.
        UnaryOp::GeluTanh if fast => LinalgUnary::GeluTanh,
        UnaryOp::GeluSigmoid if fast => LinalgUnary::GeluSigmoid,
        // Fast only too: vector polynomials, within `ew::stream`'s bounds.
        UnaryOp::Log(eps) if fast => LinalgUnary::Log(eps),
        UnaryOp::Tanh if fast => LinalgUnary::Tanh,
        UnaryOp::Erf if fast => LinalgUnary::Erf,
        UnaryOp::GeluExact if fast => LinalgUnary::GeluExact,
        _ => return None,
    })
}

/// Unary ops through `ew::stream::unary`: contiguous rows directly, strided (or broadcast)
/// rows in gathered blocks; ops it lacks go to `portable`.
fn unary_stream<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    portable: fn(&mut KernelCtx<'_>) -> KResult,
) -> KResult {
    let op = match ctx.op {
        StepOp::Unary(op) => *op,
        other => panic!("unary kernel called for {other:?} (kernel table invariant)"),
    };
    let Some(linalg_op) = stream_unary(op, ctx.precision) else {
        return portable(ctx);
    };
    map_stream::<T>(ctx, linalg_op, &[], &|x| x)
}

/// `dst = f(src 0)` by `ew::stream::unary` with `linalg_op`: contiguous rows directly,
/// strided (or broadcast) rows in gathered blocks. Elements whose widened f32 bits are one of
/// `specials` (at most two; inputs the vector op gets wrong) are then overwritten by `fix(x)`.
fn map_stream<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    linalg_op: LinalgUnary,
    specials: &[u32],
    fix: &(dyn Fn(f32) -> f32 + Sync),
) -> KResult {
    assert!(specials.len() <= 2, "at most two special inputs");
    let x = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_inner = rank.min(1);
    let n_tasks = ctx.tasks(layout.numel());
    let (pool, isa) = (ctx.pool, ctx.isa);
    let stride = x.last_stride();
    let patch = |input: &[T], out: &mut [T]| {
        let (Some(&first), Some(&last)) = (specials.first(), specials.last()) else {
            return;
        };
        let is_special = |v: &T| {
            let bits = v.load().to_bits();
            bits == first || bits == last
        };
        // A branch-free scan first (specials are rare).
        if !input.iter().fold(false, |hit, v| hit | is_special(v)) {
            return;
        }
        for (value, v) in out.iter_mut().zip(input) {
            if is_special(v) {
                *value = <T as Elem>::store(fix(v.load()));
            }
        }
    };
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, n_inner, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut gathered = [T::default(); BLOCK];
        let mut stored = [T::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (start, len) = (tile.start(), tile.len());
            let base = x.layout.offset_of(&idx[..rank - n_inner]) + start * stride;
            if (stride == 1 || len == 1)
                && let Some(out) = tile.contiguous()
            {
                let input = &x.data[base..base + len];
                stream::unary(isa, linalg_op, input, out);
                patch(input, out);
                continue;
            }
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                let from = base + j * stride;
                let input: &[T] = if stride == 1 {
                    &x.data[from..from + n]
                } else {
                    for (k, value) in gathered[..n].iter_mut().enumerate() {
                        *value = x.data[from + k * stride];
                    }
                    &gathered[..n]
                };
                if let Some(out) = tile.contiguous() {
                    let out = &mut out[j..j + n];
                    stream::unary(isa, linalg_op, input, out);
                    patch(input, out);
                } else {
                    stream::unary(isa, linalg_op, input, &mut stored[..n]);
                    patch(input, &mut stored[..n]);
                    tile.write_at(j, &stored[..n]);
                }
                j += n;
            }
        }
        Ok(())
    })
}

/// Tier fp32 unary ops (see the module docs).
pub fn unary_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    unary_stream::<f32>(ctx, gew::unary_f32_kernel)
}

/// Tier fp16 unary ops with parameters (rsqrt, inverse, clip).
pub fn unary_f16_stream(ctx: &mut KernelCtx<'_>) -> KResult {
    unary_stream::<f16>(ctx, gew::unary_f16)
}

/// The exponent of a `pow` step whose exponent operand is one value broadcast to every
/// element (a constant such as `pow(x, -0.5)`), `None` otherwise.
fn splat_exponent<T: Elem<C = f32>>(ctx: &KernelCtx<'_>) -> Option<f32> {
    let y = ctx.src::<T>(1);
    if y.layout.strides.iter().all(|&stride| stride == 0) {
        Some(y.at(y.layout.offset))
    } else {
        None
    }
}

/// How the fp32 tier computes `pow(x, e)` for a constant `e` under `precision`: the
/// `ew::stream::unary` op and
/// the bit patterns of the inputs whose result it gets wrong (those elements take the portable
/// scalar `powf`). Other exponents keep the portable kernel.
fn pow_stream(exponent: f32, precision: Precision) -> Option<(LinalgUnary, &'static [u32])> {
    const NEG_ZERO: u32 = 0x8000_0000;
    const NEG_INF: u32 = 0xff80_0000;
    Some(match exponent {
        1.0 => (LinalgUnary::Identity, &[]),
        2.0 => (LinalgUnary::Square, &[]),
        // Two f32 roundings: only in the fast profile (the exact profile fuses pow, whose
        // fused kernel evaluates it as the portable kernel does, and fused exact plans must
        // equal unfused ones).
        3.0 if precision == Precision::Fast => (LinalgUnary::Cube, &[]),
        // 1/(x + 0) is +inf at -0, pow(-0, -1) is -inf.
        -1.0 => (LinalgUnary::Inverse(0.0), &[NEG_ZERO]),
        // √-0 is -0 but pow(-0, 0.5) is +0; √-inf is NaN, pow(-inf, 0.5) is +inf.
        0.5 => (LinalgUnary::Sqrt, &[NEG_ZERO, NEG_INF]),
        // 1/√(x + 0): `+ 0` makes -0 +0, so pow(±0, -0.5) = +inf; pow(-inf, -0.5) is +0.
        // (Fast profile only, as for 3.)
        -0.5 if precision == Precision::Fast => (LinalgUnary::Rsqrt(0.0), &[NEG_INF]),
        _ => return None,
    })
}

/// Name of the fp32 `pow` slot of a tier (its constant exponents run on `ew::stream::unary`).
fn pow_kernel_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Generic => "generic_pow_f32_8n",
        Isa::Avx2 => "avx2_pow_f32_8n",
        Isa::Avx512 | Isa::Amx => "avx512_pow_f32_16n",
    }
}

/// Tier fp32 `pow`: a constant exponent that `pow_stream` maps onto the vector kernel (elements it
/// mishandles recomputed by the portable scalar code), any other exponent by the portable
/// kernel.
pub fn pow_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    let Some(exponent) = splat_exponent::<f32>(ctx) else {
        return gew::pow_f32(ctx);
    };
    let Some((linalg_op, special)) = pow_stream(exponent, ctx.precision) else {
        return gew::pow_f32(ctx);
    };
    let fix = |x: f32| gew::binary_f(BinaryOp::Pow, x, exponent);
    map_stream::<f32>(ctx, linalg_op, special, &fix)
}

/// Tier fp16 `pow`: a constant exponent by a 65 536-entry table of the portable kernel's
/// results (bit-identical), any other exponent by the portable kernel.
pub fn pow_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    let table = splat_exponent::<f16>(ctx).and_then(|exponent| {
        keyed_table(TableKey::Pow(exponent.to_bits()), &|x| {
            gew::binary_f(BinaryOp::Pow, x, exponent)
        })
    });
    match table {
        Some(table) => apply_table(ctx, table),
        None => gew::pow_f16(ctx),
    }
}

/// fp16 `log(x + ε)` by a table of the portable kernel's results for that ε (bit-identical).
fn log_f16_table(ctx: &mut KernelCtx<'_>) -> KResult {
    let op = match ctx.op {
        StepOp::Unary(op) => *op,
        other => panic!("unary kernel called for {other:?} (kernel table invariant)"),
    };
    let table = match op {
        UnaryOp::Log(eps) => {
            keyed_table(TableKey::Log(eps.to_bits()), &|x| portable_unary_f32(op, x))
        }
        _ => None,
    };
    match table {
        Some(table) => apply_table(ctx, table),
        None => gew::unary_f16(ctx),
    }
}

/// What a table of [`keyed_table`] computes: the op and its parameter's bits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TableKey {
    /// `pow(x, e)`.
    Pow(u32),
    /// `log(x + ε)`.
    Log(u32),
}

/// Tables of parameterised fp16 ops kept at most (128 KiB each); further parameters use the
/// portable kernel (the same bits, slower).
const MAX_KEYED_TABLES: usize = 32;

/// The table of `f` (f32 in, f32 out, rounded to fp16 per entry) under `key`, built on first
/// use; `None` once [`MAX_KEYED_TABLES`] tables exist (a `pow` whose exponent is a run-time
/// scalar would otherwise grow the set without bound).
fn keyed_table(key: TableKey, f: &dyn Fn(f32) -> f32) -> Option<&'static UnaryTable> {
    type Tables = Vec<(TableKey, &'static UnaryTable)>;
    static TABLES: std::sync::Mutex<Tables> = std::sync::Mutex::new(Vec::new());
    // A poisoned lock only means another thread panicked while building: the list is valid.
    let mut tables = TABLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&(_, table)) = tables.iter().find(|(k, _)| *k == key) {
        return Some(table);
    }
    if tables.len() >= MAX_KEYED_TABLES {
        return None;
    }
    let mut table = Box::new([f16::ZERO; 1 << 16]);
    for (bits, entry) in (0..=u16::MAX).zip(table.iter_mut()) {
        *entry = f16::from_f32(f(f16::from_bits(bits).to_f32()));
    }
    let table: &'static UnaryTable = Box::leak(table);
    tables.push((key, table));
    Some(table)
}

/// Softmax over the middle axis of `[outer, axis, inner]` layouts (the vocabulary of
/// `[1, V, 1, S]` logits) when the inner axis is contiguous in the source, the portable
/// kernel otherwise. Pass 1, per (outer, chunk of up to [`SOFTMAX_COLUMNS`] columns), in blocks of
/// [`SOFTMAX_ROW_BLOCK`] rows: the block's column maxima (`ew::stream::accumulate`), the
/// running sums rescaled where the maximum grew, then the block's `e^(x - max)` added
/// (`ew::stream::accumulate_exp`, the block re-read from cache), so the source is read from
/// memory once; the statistics go to the step's scratch as the portable kernel's do. Pass 2
/// writes `e^(x - max) · (1/sum)` row by row (`ew::stream::exp_scale`). A column holding NaN
/// or +inf, or only -inf, gives NaN, as in the portable kernel.
fn softmax_columns<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    portable: fn(&mut KernelCtx<'_>) -> KResult,
) -> KResult {
    let x = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let (outer, axis_len, inner) = (layout.shape[0], layout.shape[1], layout.shape[2]);
    let (x_outer, x_axis) = (x.layout.strides[0], x.layout.strides[1]);
    if x.layout.strides[2] != 1 && inner > 1 {
        return portable(ctx);
    }
    let (pool, isa) = (ctx.pool, ctx.isa);
    let n_tasks = ctx.tasks(layout.numel() * 4);
    let width = softmax_chunk(outer, inner, n_tasks);
    let n_chunks = inner.div_ceil(width);
    let stats_len = outer * n_chunks * 2 * width;
    assert!(
        4 * stats_len <= ctx.scratch.len(),
        "softmax scratch (planner invariant)"
    );
    let stats: &mut [f32] = &mut bytemuck::cast_slice_mut(&mut *ctx.scratch)[..stats_len];
    // Pass 1: one item per (outer, chunk): [shift; width] then [1/sum; width].
    let stats_layout = Layout::dense(&[outer, n_chunks, 2 * width]);
    DstTiles::<f32>::new(stats, &stats_layout, 1, usize::MAX).run(
        pool,
        n_tasks,
        &mut [],
        &|cursor, _| {
            let mut idx = [0usize; MAX_RANK];
            let mut out = [0f32; 2 * SOFTMAX_COLUMNS];
            let mut block_max = [0f32; SOFTMAX_COLUMNS];
            let mut finite = [0f32; SOFTMAX_COLUMNS];
            let chunk_width = width;
            for item in cursor.items() {
                let mut tile = cursor.tile(item, &mut idx);
                let (o, chunk) = (idx[0], idx[1]);
                let c0 = chunk * chunk_width;
                let width = (inner - c0).min(chunk_width);
                let base = x.layout.offset + o * x_outer + c0;
                let (shift, sum) = out[..2 * chunk_width].split_at_mut(chunk_width);
                let (shift, sum) = (&mut shift[..width], &mut sum[..width]);
                let block_max = &mut block_max[..width];
                shift.fill(f32::NEG_INFINITY);
                sum.fill(0.0);
                let mut r0 = 0;
                while r0 < axis_len {
                    let rows = r0..(r0 + SOFTMAX_ROW_BLOCK).min(axis_len);
                    let row = |r: usize| &x.data[base + r * x_axis..][..width];
                    block_max.copy_from_slice(shift);
                    for r in rows.clone() {
                        stream::accumulate(isa, LinalgReduce::Max, block_max, row(r));
                    }
                    // `shift` holds the running maxima: rescale the sums where they grew
                    // (a -inf old maximum had a zero sum; a non-finite new one makes the
                    // column NaN at the end, whatever the sum).
                    for ((old, sum), &new) in shift.iter_mut().zip(sum.iter_mut()).zip(&*block_max)
                    {
                        if new.is_finite() && new > *old {
                            *sum *= (*old - new).exp();
                        }
                        *old = new;
                    }
                    // Shifts for the exp: the maxima where finite, 0 elsewhere.
                    for (f, &m) in finite.iter_mut().zip(&*shift) {
                        *f = if m.is_finite() { m } else { 0.0 };
                    }
                    for r in rows.clone() {
                        stream::accumulate_exp(isa, sum, &finite[..width], row(r));
                    }
                    r0 = rows.end;
                }
                for (m, s) in shift.iter_mut().zip(sum.iter_mut()) {
                    if m.is_finite() {
                        *s = 1.0 / *s;
                    } else {
                        (*m, *s) = (0.0, f32::NAN);
                    }
                }
                tile.write_all(&out[..2 * chunk_width]);
            }
            Ok(())
        },
    )?;
    let stats: &[f32] = &bytemuck::cast_slice(&*ctx.scratch)[..stats_len];
    // Pass 2: rows of the destination, chunk by chunk.
    let tiles = DstTiles::<T>::new(bytemuck::cast_slice_mut(&mut *ctx.dst), layout, 1, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut stored = [T::default(); SOFTMAX_COLUMNS];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (o, r) = (idx[0], idx[1]);
            let (start, len) = (tile.start(), tile.len());
            let base = x.layout.offset + o * x_outer + r * x_axis;
            let mut c = start;
            while c < start + len {
                let n = (width - c % width).min(start + len - c);
                let at = (o * n_chunks + c / width) * 2 * width + c % width;
                let shift = &stats[at..at + n];
                let scale = &stats[at + width..at + width + n];
                let input = &x.data[base + c..base + c + n];
                if let Some(out) = tile.contiguous() {
                    let out = &mut out[c - start..c - start + n];
                    stream::exp_scale(isa, input, shift, scale, out);
                } else {
                    stream::exp_scale(isa, input, shift, scale, &mut stored[..n]);
                    tile.write_at(c - start, &stored[..n]);
                }
                c += n;
            }
        }
        Ok(())
    })
}

/// Most columns per statistics chunk of [`softmax_columns`].
const SOFTMAX_COLUMNS: usize = 256;

/// The chunk width of [`softmax_columns`] for `[outer, _, inner]`: the widest of 256, 128, 64
/// columns whose statistics fit the planner's scratch (sized for the portable kernel's
/// 64-column chunks) and that still gives every task a chunk (wider chunks mean fewer, longer
/// calls into the row kernels).
fn softmax_chunk(outer: usize, inner: usize, n_tasks: usize) -> usize {
    let portable = inner.div_ceil(64) * 64;
    [256, 128]
        .into_iter()
        .find(|&width| {
            inner.div_ceil(width) * width <= portable && outer * inner.div_ceil(width) >= n_tasks
        })
        .unwrap_or(64)
}

/// Rows per block of [`softmax_columns`]'s first pass (a block of one chunk stays in L1/L2).
const SOFTMAX_ROW_BLOCK: usize = 64;

/// Tier fp16 softmax over a middle axis.
pub fn softmax_columns_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_columns::<f16>(ctx, rd::softmax_columns_f16)
}

/// Tier fp32 softmax over a middle axis.
pub fn softmax_columns_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_columns::<f32>(ctx, rd::softmax_columns_f32)
}
