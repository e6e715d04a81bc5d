//! Tier kernels for the elementwise, softmax and reduction slots: the destination is walked
//! in rows split across the pool's threads (as the portable kernels do), and every row whose
//! operands are contiguous runs (or stride-0 broadcasts) goes to linalg's vectorised kernels
//! (`linalg::ew`); any other row takes the portable per-block path, so every layout works.
//!
//! | slot | tier kernel | against the portable kernel |
//! |---|---|---|
//! | add, sub, mul, real_div (fp16, fp32) | `ew::stream::binary` | bit-identical (one f32 op, one round-to-nearest-even) |
//! | reduce_sum, reduce_mean over a contiguous box (fp16, fp32) | `ew::stream::sum` | same bound, different summation order (`4·lanes` partial sums) |
//! | fp16 unary ops without parameters (exp, sigmoid, silu, tanh, erf, gelu, sqrt, ...) | a 65 536-entry table of the portable kernel's results, built once per op on first use | bit-identical by construction |
//! | softmax along a contiguous last axis (fp16, fp32) | `ew::softmax_rows` | same bound: vector `exp` (≤ 2 f32 ulps) instead of libm's `expf`; rows holding NaN or +inf, or only -inf, take the portable path so the NaN rules are unchanged |
//!
//! [`plug`] installs them in a table for a tier; [`KernelTable::generic`] keeps the portable
//! kernels, which the tests compare against.
//!
//! [`KernelTable::generic`]: crate::kernels::table::KernelTable::generic

use half::f16;
use milbridge_linalg::cpu::Isa;
use milbridge_linalg::ew::stream::{self, BinaryOp as LinalgBinary, Operand};
use milbridge_linalg::ew::{self as lew, EwOp, Mask, Storage};

use crate::elem::Elem;
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::generic::elementwise::{self as gew, unary_f32};
use crate::kernels::generic::reduce as rd;
use crate::kernels::table::KernelTable;
use crate::kernels::{BLOCK, Kernel, KernelCtx, SEG, SrcView};
use crate::layout::{Layout, MAX_RANK};
use crate::plan::step::{BinaryOp, N_UNARY, ReduceOp, StepOp, UnaryOp};

type KResult = Result<(), KernelError>;

/// Installs the tier kernels of this module into `table` (built for `isa`).
pub fn plug(table: &mut KernelTable, isa: Isa) {
    let binaries: [(BinaryOp, LinalgBinary, KernelFns); 4] = [
        (BinaryOp::Add, LinalgBinary::Add, (add_f16, add_f32)),
        (BinaryOp::Sub, LinalgBinary::Sub, (sub_f16, sub_f32)),
        (BinaryOp::Mul, LinalgBinary::Mul, (mul_f16, mul_f32)),
        (BinaryOp::RealDiv, LinalgBinary::Div, (div_f16, div_f32)),
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
    let [sum_f16, mean_f16, sum_f32, mean_f32] = reduce_names(isa);
    table.reduce_f16[ReduceOp::Sum as usize] = Kernel {
        name: sum_f16,
        run: reduce_f16,
    };
    table.reduce_f16[ReduceOp::Mean as usize] = Kernel {
        name: mean_f16,
        run: reduce_f16,
    };
    table.reduce_f32[ReduceOp::Sum as usize] = Kernel {
        name: sum_f32,
        run: reduce_f32,
    };
    table.reduce_f32[ReduceOp::Mean as usize] = Kernel {
        name: mean_f32,
        run: reduce_f32,
    };
}

/// The fp16 and fp32 entry points of one slot.
type KernelFns = (
    fn(&mut KernelCtx<'_>) -> KResult,
    fn(&mut KernelCtx<'_>) -> KResult,
);

/// `[sum f16, mean f16, sum f32, mean f32]` kernel names of `isa`.
fn reduce_names(isa: Isa) -> [&'static str; 4] {
    match isa {
        Isa::Generic => [
            "generic_reducesum_f16_8n",
            "generic_reducemean_f16_8n",
            "generic_reducesum_f32_8n",
            "generic_reducemean_f32_8n",
        ],
        Isa::Avx2 => [
            "avx2_reducesum_f16_8n",
            "avx2_reducemean_f16_8n",
            "avx2_reducesum_f32_8n",
            "avx2_reducemean_f32_8n",
        ],
        Isa::Avx512 | Isa::Amx => [
            "avx512_reducesum_f16_16n",
            "avx512_reducemean_f16_16n",
            "avx512_reducesum_f32_16n",
            "avx512_reducemean_f32_16n",
        ],
    }
}

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

/// A float binary kernel: linalg's streaming kernel on contiguous/broadcast runs, the
/// portable block loop elsewhere (both compute `op` in f32 and round once).
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
        let mut lhs = [0f32; BLOCK];
        let mut rhs = [0f32; BLOCK];
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
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                a.load_run(a_base + j * a_stride, a_stride, &mut lhs[..n]);
                b.load_run(b_base + j * b_stride, b_stride, &mut rhs[..n]);
                for (value, &y) in lhs[..n].iter_mut().zip(&rhs[..n]) {
                    *value = op.apply(*value, y);
                }
                T::store_slice(&lhs[..n], &mut stored[..n]);
                tile.write_at(j, &stored[..n]);
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

/// Sum and mean over a dense trailing box through `ew::stream::sum`; other boxes (and max)
/// use the portable kernel.
fn reduce<T: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    portable: fn(&mut KernelCtx<'_>) -> KResult,
) -> KResult {
    let (op, n_reduced) = match ctx.op {
        StepOp::Reduce { op, n_reduced } => (*op, *n_reduced),
        other => panic!("reduce kernel called for {other:?} (kernel table invariant)"),
    };
    let x = ctx.src::<T>(0);
    if op == ReduceOp::Max || !dense_box(x.layout, n_reduced) {
        return portable(ctx);
    }
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
            let sum = stream::sum(isa, &x.data[base..base + count]);
            let result = if op == ReduceOp::Mean {
                sum / count as f32
            } else {
                sum
            };
            tile.set(0, <T as Elem>::store(result));
        }
        Ok(())
    })
}

/// Tier fp16 reduce_sum / reduce_mean.
pub fn reduce_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    reduce::<f16>(ctx, rd::reduce_f16)
}

/// Tier fp32 reduce_sum / reduce_mean.
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
            *entry = f16::from_f32(unary_f32(op, f16::from_bits(bits).to_f32()));
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
    let table = unary_table(op);
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
