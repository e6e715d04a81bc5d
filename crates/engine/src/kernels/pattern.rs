//! The pattern steps' kernels ([`crate::plan::fuse::Pattern`], fast profile only): whole op
//! sequences mapped onto one of linalg's fused `ew` kernels, in f32 throughout.
//!
//! * RMSNorm: `[outer, C]` rows through `ew::rmsnorm_rows` (the normalised axis is the last),
//!   `[outer, C, inner]` boxes through `ew::rmsnorm_channels` (the channel axis of
//!   `[1, C, 1, S]`); tasks split the rows or the outer index.
//! * Scaled, masked softmax: every contiguous row of `[outer, L, n]` through
//!   `ew::softmax_rows` with the scale and the mask row (an f32 constant `[L, n]`).
//!
//! The planner sets the layouts up (contiguous where the kernels need it) and a decoded plan
//! is checked by [`layouts_ok`], so the layout assertions here are invariants.

use half::f16;
use milbridge_linalg::cpu::Isa;
use milbridge_linalg::ew::{self as lew, Mask, Storage};

use crate::elem::{Elem, Ty};
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::KernelCtx;
use crate::layout::MAX_RANK;
use crate::plan::step::{Step, StepOp};

type KResult = Result<(), KernelError>;

/// RMSNorm pattern, fp16 (the plan's tier).
pub fn rmsnorm_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    rmsnorm::<f16>(ctx, ctx.isa)
}

/// RMSNorm pattern, fp32 (the plan's tier).
pub fn rmsnorm_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    rmsnorm::<f32>(ctx, ctx.isa)
}

/// RMSNorm pattern, fp16, portable code.
pub fn rmsnorm_f16_portable(ctx: &mut KernelCtx<'_>) -> KResult {
    rmsnorm::<f16>(ctx, Isa::Generic)
}

/// RMSNorm pattern, fp32, portable code.
pub fn rmsnorm_f32_portable(ctx: &mut KernelCtx<'_>) -> KResult {
    rmsnorm::<f32>(ctx, Isa::Generic)
}

/// Scaled, masked softmax pattern, fp16 (the plan's tier).
pub fn softmax_scaled_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_scaled::<f16>(ctx, ctx.isa)
}

/// Scaled, masked softmax pattern, fp32 (the plan's tier).
pub fn softmax_scaled_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_scaled::<f32>(ctx, ctx.isa)
}

/// Scaled, masked softmax pattern, fp16, portable code.
pub fn softmax_scaled_f16_portable(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_scaled::<f16>(ctx, Isa::Generic)
}

/// Scaled, masked softmax pattern, fp32, portable code.
pub fn softmax_scaled_f32_portable(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_scaled::<f32>(ctx, Isa::Generic)
}

/// Whether a pattern step's operands have the layouts its kernel needs (a decoded plan is
/// checked with this; the planner only makes such steps). True for every other step.
pub fn layouts_ok(step: &Step) -> bool {
    let float = |ty: Ty| matches!(ty, Ty::F16 | Ty::F32);
    let dst = &step.dst;
    match step.op {
        StepOp::RmsNorm { .. } => {
            let [x, w] = &step.srcs[..] else {
                return false;
            };
            let rank = dst.layout.rank();
            (rank == 2 || rank == 3)
                && float(dst.ty)
                && x.ty == dst.ty
                && w.ty == dst.ty
                && x.layout.shape == dst.layout.shape
                && x.layout.is_contiguous()
                && dst.layout.is_contiguous()
                && w.layout.shape == [dst.layout.shape[1]]
                && w.layout.is_contiguous()
        }
        StepOp::SoftmaxScaled { mask, .. } => {
            let Some(x) = step.srcs.first() else {
                return false;
            };
            let shape = &dst.layout.shape;
            let rows_ok = |layout: &crate::layout::Layout| {
                layout.rank() == 3 && (layout.shape[2] <= 1 || layout.strides[2] == 1)
            };
            let mask_ok = match (&step.srcs[1..], mask) {
                ([], false) => true,
                ([m], true) => {
                    m.ty == Ty::F32
                        && m.layout.shape == [shape.get(1).copied().unwrap_or(0), shape[2]]
                        && m.layout.is_contiguous()
                }
                _ => false,
            };
            float(dst.ty)
                && x.ty == dst.ty
                && x.layout.shape == *shape
                && rows_ok(&x.layout)
                && rows_ok(&dst.layout)
                && shape[2] > 0
                && mask_ok
        }
        _ => true,
    }
}

fn rmsnorm<T: Elem<C = f32> + Storage>(ctx: &mut KernelCtx<'_>, isa: Isa) -> KResult {
    let StepOp::RmsNorm { eps } = *ctx.op else {
        panic!(
            "rmsnorm kernel called for {:?} (kernel table invariant)",
            ctx.op
        )
    };
    let x = ctx.src::<T>(0);
    let w = ctx.src::<T>(1);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let channels = layout.shape[1];
    let inner = if rank == 3 { layout.shape[2] } else { 1 };
    let box_len = channels * inner;
    let xs = &x.data[x.layout.offset..][..layout.numel()];
    let ws = &w.data[w.layout.offset..][..channels];
    let n_tasks = ctx.tasks(layout.numel() * 4);
    let pool = ctx.pool;
    // Rows (rank 2): one item per row of C; boxes (rank 3): one item per `[C, inner]` box.
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, rank - 1, usize::MAX);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let x_box = &xs[idx[0] * box_len..][..box_len];
            let out = tile
                .contiguous()
                .expect("rmsnorm destination boxes are contiguous (planner invariant)");
            if rank == 2 {
                lew::rmsnorm_rows(isa, x_box, ws, eps, out);
            } else {
                lew::rmsnorm_channels(isa, x_box, ws, inner, eps, out);
            }
        }
        Ok(())
    })
}

fn softmax_scaled<T: Elem<C = f32> + Storage>(ctx: &mut KernelCtx<'_>, isa: Isa) -> KResult {
    let StepOp::SoftmaxScaled { scale, mask } = *ctx.op else {
        panic!(
            "softmax_scaled kernel called for {:?} (kernel table invariant)",
            ctx.op
        )
    };
    let x = ctx.src::<T>(0);
    let mask = mask.then(|| ctx.src::<f32>(1));
    let layout = ctx.dst_layout;
    let n = layout.shape[2];
    let n_tasks = ctx.tasks(layout.numel() * 8);
    let pool = ctx.pool;
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, 1, usize::MAX);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let base = x.layout.offset_of(&idx[..2]);
            let row = &x.data[base..base + n];
            let row_mask = match &mask {
                Some(m) => Mask::Additive {
                    values: &m.data[m.layout.offset + idx[1] * n..][..n],
                    row_stride: 0,
                },
                None => Mask::None,
            };
            let out = tile
                .contiguous()
                .expect("softmax rows are contiguous (planner invariant)");
            lew::softmax_rows(isa, row, n, scale, row_mask, out);
        }
        Ok(())
    })
}
