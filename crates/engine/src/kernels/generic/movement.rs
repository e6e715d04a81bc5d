//! Portable data-movement kernels that are not plain views: gather, tile, band_part, run-time
//! slices, and quantize/dequantize. Data movement is by element size (`u8`, `u16`, `i32`),
//! which preserves every bit pattern.

use half::f16;

use crate::elem::{Elem, Ty};
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::generic::elementwise::{for_rows, load_row};
use crate::kernels::{BLOCK, KernelCtx, Src};
use crate::layout::MAX_RANK;
use crate::plan::step::StepOp;

type KResult = Result<(), KernelError>;

/// Reads integer element `offset` of an index or begin tensor of type `ty`.
fn int_at(src: &Src<'_>, offset: usize) -> i64 {
    match src.ty {
        Ty::I8 => i64::from(bytemuck::cast_slice::<u8, i8>(src.bytes)[offset]),
        Ty::U8 | Ty::Bool => i64::from(src.bytes[offset]),
        Ty::I16 => i64::from(bytemuck::cast_slice::<u8, i16>(src.bytes)[offset]),
        Ty::U16 => i64::from(bytemuck::cast_slice::<u8, u16>(src.bytes)[offset]),
        Ty::I32 => i64::from(bytemuck::cast_slice::<u8, i32>(src.bytes)[offset]),
        Ty::F16 | Ty::F32 => panic!("float index tensor (verifier invariant)"),
    }
}

/// Gather by element size.
pub fn gather<T: Elem<C = i32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let (axis, batch_dims, wrap) = match ctx.op {
        StepOp::Gather {
            axis,
            batch_dims,
            wrap_negative,
        } => (*axis, *batch_dims, *wrap_negative),
        other => panic!("gather kernel called for {other:?} (kernel table invariant)"),
    };
    let x = ctx.src::<T>(0);
    let indices = ctx.srcs[1];
    let layout = ctx.dst_layout;
    let out_rank = layout.rank();
    let idx_rank = indices.layout.rank();
    let x_rank = x.layout.rank();
    let axis_len = x.layout.shape[axis];
    let n_tasks = ctx.tasks(layout.numel());
    let pool = ctx.pool;
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, 0, 1);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut out_idx = [0usize; MAX_RANK];
        let mut ind_idx = [0usize; MAX_RANK];
        let mut x_idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut out_idx);
            let n_q = idx_rank - batch_dims;
            ind_idx[..batch_dims].copy_from_slice(&out_idx[..batch_dims]);
            ind_idx[batch_dims..idx_rank].copy_from_slice(&out_idx[axis..axis + n_q]);
            let mut index = int_at(&indices, indices.layout.offset_of(&ind_idx[..idx_rank]));
            if index < 0 && wrap {
                index += axis_len as i64;
            }
            if index < 0 || index >= axis_len as i64 {
                let original = int_at(&indices, indices.layout.offset_of(&ind_idx[..idx_rank]));
                return Err(KernelError::GatherIndex {
                    index: original,
                    size: axis_len,
                });
            }
            x_idx[..axis].copy_from_slice(&out_idx[..axis]);
            x_idx[axis] = index as usize;
            x_idx[axis + 1..x_rank].copy_from_slice(&out_idx[axis + n_q..out_rank]);
            tile.set(0, x.data[x.layout.offset_of(&x_idx[..x_rank])]);
        }
        Ok(())
    })
}

/// `tile` by element size: `dst[i] = x[i mod shape(x)]`.
pub fn tile<T: Elem<C = i32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let x = ctx.src::<T>(0);
    let rank = x.layout.rank();
    for_rows::<T>(ctx, &|outer, j, out| {
        let mut offset = x.layout.offset;
        for (d, &i) in outer.iter().enumerate() {
            offset += (i % x.layout.shape[d]) * x.layout.strides[d];
        }
        if rank == 0 {
            out[0] = x.at(offset);
            return Ok(());
        }
        let (len, stride) = (x.layout.shape[rank - 1], x.layout.strides[rank - 1]);
        for (k, value) in out.iter_mut().enumerate() {
            *value = x.at(offset + ((j + k) % len) * stride);
        }
        Ok(())
    })
}

/// `band_part` by element size (zero is the all-zero bit pattern for every dtype).
pub fn band_part<T: Elem<C = i32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let (lower, upper) = match ctx.op {
        StepOp::BandPart { lower, upper } => (*lower, *upper),
        other => panic!("band_part kernel called for {other:?} (kernel table invariant)"),
    };
    let x = ctx.src::<T>(0);
    let rank = x.layout.rank();
    for_rows::<T>(ctx, &|outer, j, out| {
        load_row(&x, outer, j, out);
        let m = outer[rank - 2] as i64;
        for (k, value) in out.iter_mut().enumerate() {
            let n = (j + k) as i64;
            let keep = (lower < 0 || m - n <= lower) && (upper < 0 || n - m <= upper);
            if !keep {
                *value = 0;
            }
        }
        Ok(())
    })
}

/// `slice_by_size` with a run-time begin, by element size. Bounds violations are R003.
pub fn dyn_slice<T: Elem<C = i32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let x = ctx.src::<T>(0);
    let begin = ctx.srcs[1];
    let rank = x.layout.rank();
    let mut start = [0usize; MAX_RANK];
    for (axis, slot) in start.iter_mut().enumerate().take(rank) {
        let dim = x.layout.shape[axis];
        let size = ctx.dst_layout.shape[axis];
        let mut b = int_at(&begin, begin.layout.offset_of(&[axis]));
        if b < 0 {
            b += dim as i64;
        }
        if b < 0 || b as usize + size > dim {
            return Err(KernelError::SliceBounds {
                axis,
                begin: b,
                size,
                dim,
            });
        }
        *slot = b as usize;
    }
    let base = x.layout.offset_of(&start[..rank]);
    for_rows::<T>(ctx, &|outer, j, out| {
        let stride = x.last_stride();
        let offset = base
            + outer
                .iter()
                .zip(&x.layout.strides)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        x.load_run(offset + j * stride, stride, out);
        Ok(())
    })
}

/// Float values of a scale or zero-point operand row (f16, f32, i8 or u8).
fn load_any_f64(src: &Src<'_>, outer: &[usize], j: usize, out: &mut [f64]) {
    let layout = src.layout;
    let stride = layout.strides.last().copied().unwrap_or(0);
    let base = layout.offset_of(outer) + j * stride;
    for (k, value) in out.iter_mut().enumerate() {
        let at = base + k * stride;
        *value = match src.ty {
            Ty::F16 => f64::from(bytemuck::cast_slice::<u8, f16>(src.bytes)[at]),
            Ty::F32 => f64::from(bytemuck::cast_slice::<u8, f32>(src.bytes)[at]),
            _ => int_at(src, at) as f64,
        };
    }
}

fn quantize_to<D: Elem<C = i32>>(ctx: &mut KernelCtx<'_>, lo: f64, hi: f64) -> KResult {
    let zero_point = matches!(ctx.op, StepOp::Quantize { zero_point: true });
    let (x, scale, zp) = (ctx.srcs[0], ctx.srcs[1], ctx.srcs[2]);
    for_rows::<D>(ctx, &|outer, j, out| {
        let n = out.len();
        let (mut xs, mut ss, mut zs) = ([0f64; BLOCK], [0f64; BLOCK], [0f64; BLOCK]);
        load_any_f64(&x, outer, j, &mut xs[..n]);
        load_any_f64(&scale, outer, j, &mut ss[..n]);
        if zero_point {
            load_any_f64(&zp, outer, j, &mut zs[..n]);
        }
        for k in 0..n {
            let q = xs[k] / ss[k];
            out[k] = if q.is_nan() {
                0
            } else {
                (q.round_ties_even() + zs[k]).clamp(lo, hi) as i32
            };
        }
        Ok(())
    })
}

/// `quantize` to int8 or uint8 (round half to even, saturate, NaN to 0).
pub fn quantize(ctx: &mut KernelCtx<'_>) -> KResult {
    match ctx.dst_ty {
        Ty::I8 => quantize_to::<i8>(ctx, -128.0, 127.0),
        Ty::U8 => quantize_to::<u8>(ctx, 0.0, 255.0),
        other => panic!("quantize to {other:?} (verifier invariant)"),
    }
}

fn dequantize_to<D: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let zero_point = matches!(ctx.op, StepOp::Dequantize { zero_point: true });
    let (x, scale, zp) = (ctx.srcs[0], ctx.srcs[1], ctx.srcs[2]);
    for_rows::<D>(ctx, &|outer, j, out| {
        let n = out.len();
        let (mut xs, mut ss, mut zs) = ([0f64; BLOCK], [0f64; BLOCK], [0f64; BLOCK]);
        load_any_f64(&x, outer, j, &mut xs[..n]);
        load_any_f64(&scale, outer, j, &mut ss[..n]);
        if zero_point {
            load_any_f64(&zp, outer, j, &mut zs[..n]);
        }
        for k in 0..n {
            out[k] = (xs[k] as f32 - zs[k] as f32) * ss[k] as f32;
        }
        Ok(())
    })
}

/// `dequantize` to fp16 or fp32 (computed in f32).
pub fn dequantize(ctx: &mut KernelCtx<'_>) -> KResult {
    match ctx.dst_ty {
        Ty::F16 => dequantize_to::<f16>(ctx),
        Ty::F32 => dequantize_to::<f32>(ctx),
        other => panic!("dequantize to {other:?} (verifier invariant)"),
    }
}
