//! Portable reductions, softmax and layer norm. Floats accumulate in f32 (mil-spec 5.2 item 3)
//! and round once on store; int32 sums accumulate in i64 and wrap.

use half::f16;

use crate::elem::Elem;
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::{BLOCK, KernelCtx, SEG, SrcView};
use crate::layout::MAX_RANK;
use crate::plan::step::{ReduceOp, StepOp};

type KResult = Result<(), KernelError>;

/// Visits every element of the trailing `n_reduced` dims of `src` at `base`, in blocks.
fn for_each_block<T: Elem>(
    src: &SrcView<'_, T>,
    base: usize,
    n_reduced: usize,
    mut visit: impl FnMut(&[T::C]),
) {
    let rank = src.layout.rank();
    let shape = &src.layout.shape[rank - n_reduced..];
    let strides = &src.layout.strides[rank - n_reduced..];
    let mut buf = [T::C::default(); BLOCK];
    if n_reduced == 0 {
        buf[0] = src.at(base);
        visit(&buf[..1]);
        return;
    }
    let row = shape[n_reduced - 1];
    let row_stride = strides[n_reduced - 1];
    let n_rows: usize = shape[..n_reduced - 1].iter().product();
    let mut idx = [0usize; MAX_RANK];
    for _ in 0..n_rows {
        let offset = base
            + idx[..n_reduced - 1]
                .iter()
                .zip(strides)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        let mut j = 0;
        while j < row {
            let n = (row - j).min(BLOCK);
            src.load_run(offset + j * row_stride, row_stride, &mut buf[..n]);
            visit(&buf[..n]);
            j += n;
        }
        for d in (0..n_reduced - 1).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn reduce_params(ctx: &KernelCtx<'_>) -> (ReduceOp, usize) {
    match ctx.op {
        StepOp::Reduce { op, n_reduced } => (*op, *n_reduced),
        other => panic!("reduce kernel called for {other:?} (kernel table invariant)"),
    }
}

fn reduce_float<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let (op, n_reduced) = reduce_params(ctx);
    let x = ctx.src::<T>(0);
    let count: usize = x.layout.shape[x.layout.rank() - n_reduced..]
        .iter()
        .product();
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_tasks = ctx.tasks(x.layout.numel());
    let pool = ctx.pool;
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, 0, 1);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let base = x.layout.offset_of(&idx[..rank]);
            let result = match op {
                ReduceOp::Sum | ReduceOp::Mean => {
                    let mut sum = 0f32;
                    for_each_block(&x, base, n_reduced, |values| {
                        for &v in values {
                            sum += v;
                        }
                    });
                    if op == ReduceOp::Mean {
                        sum / count as f32
                    } else {
                        sum
                    }
                }
                ReduceOp::Max => {
                    let mut max = f32::NEG_INFINITY;
                    let mut nan = false;
                    for_each_block(&x, base, n_reduced, |values| {
                        for &v in values {
                            nan |= v.is_nan();
                            // The earlier of two equal values (of +0 and -0, the first seen):
                            // `f32::max` leaves that choice to the code generator.
                            if v > max {
                                max = v;
                            }
                        }
                    });
                    if nan { f32::NAN } else { max }
                }
            };
            tile.set(0, T::store(result));
        }
        Ok(())
    })
}

/// fp16 reductions.
pub fn reduce_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    reduce_float::<f16>(ctx)
}

/// fp32 reductions.
pub fn reduce_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    reduce_float::<f32>(ctx)
}

/// int32 reductions (sum wraps, mean truncates toward zero).
pub fn reduce_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    let (op, n_reduced) = reduce_params(ctx);
    let x = ctx.src::<i32>(0);
    let count: usize = x.layout.shape[x.layout.rank() - n_reduced..]
        .iter()
        .product();
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_tasks = ctx.tasks(x.layout.numel());
    let pool = ctx.pool;
    let tiles = DstTiles::<i32>::new(ctx.dst_slice::<i32>(), layout, 0, 1);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let base = x.layout.offset_of(&idx[..rank]);
            let result = match op {
                ReduceOp::Sum | ReduceOp::Mean => {
                    let mut sum = 0i64;
                    for_each_block(&x, base, n_reduced, |values| {
                        for &v in values {
                            sum = sum.wrapping_add(i64::from(v));
                        }
                    });
                    if op == ReduceOp::Mean {
                        (sum / count as i64) as i32
                    } else {
                        sum as i32
                    }
                }
                ReduceOp::Max => {
                    let mut max = i32::MIN;
                    for_each_block(&x, base, n_reduced, |values| {
                        for &v in values {
                            max = max.max(v);
                        }
                    });
                    max
                }
            };
            tile.set(0, result);
        }
        Ok(())
    })
}

/// Bytes of scratch per task softmax needs for rows of `len` elements.
pub fn softmax_scratch(len: usize) -> usize {
    (len * 4).next_multiple_of(64)
}

fn softmax<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let x = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let len = layout.shape.last().copied().unwrap_or(1);
    let n_tasks = ctx.tasks(layout.numel() * 8);
    let pool = ctx.pool;
    let n_inner = rank.min(1);
    let scratch = &mut *ctx.scratch;
    let tiles = DstTiles::<T>::new(
        bytemuck::cast_slice_mut(&mut *ctx.dst),
        layout,
        n_inner,
        usize::MAX,
    );
    tiles.run(pool, n_tasks, scratch, &|cursor, scratch| {
        let row: &mut [f32] = &mut bytemuck::cast_slice_mut(scratch)[..len];
        let mut out = [T::default(); BLOCK];
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let stride = x.last_stride();
            x.load_run(x.layout.offset_of(&idx[..rank - n_inner]), stride, row);
            let mut max = f32::NEG_INFINITY;
            let mut nan = false;
            for &v in row.iter() {
                nan |= v.is_nan();
                max = max.max(v);
            }
            if nan {
                max = f32::NAN;
            }
            let mut sum = 0f32;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                for k in 0..n {
                    out[k] = T::store(row[j + k] * inv);
                }
                tile.write_at(j, &out[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// fp16 softmax over the last axis.
pub fn softmax_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax::<f16>(ctx)
}

/// fp32 softmax over the last axis.
pub fn softmax_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax::<f32>(ctx)
}

/// Columns per statistics chunk of the column softmax.
const COLUMNS: usize = 64;

/// Bytes of the (shared) statistics buffer of the column softmax over `[outer, axis, inner]`.
pub fn softmax_columns_scratch(outer: usize, inner: usize) -> usize {
    (outer * inner.div_ceil(COLUMNS) * 2 * COLUMNS * 4).next_multiple_of(64)
}

/// Softmax along the middle axis of `[outer, axis, inner]` layouts in two parallel passes over
/// contiguous rows: (1) a running max and rescaled sum per column (online softmax) into the
/// step's scratch, (2) `exp(x - max) / sum` row by row. The NaN rules match the row kernel: a
/// column with NaN, +inf or only -inf gives NaN.
fn softmax_columns<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let x = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let (outer, axis_len, inner) = (layout.shape[0], layout.shape[1], layout.shape[2]);
    let (x_outer, x_axis, x_inner) = (
        x.layout.strides[0],
        x.layout.strides[1],
        x.layout.strides[2],
    );
    let n_chunks = inner.div_ceil(COLUMNS);
    let pool = ctx.pool;
    let n_tasks = ctx.tasks(layout.numel() * 4);
    let stats_len = outer * n_chunks * 2 * COLUMNS;
    let stats: &mut [f32] = &mut bytemuck::cast_slice_mut(&mut *ctx.scratch)[..stats_len];
    // Pass 1: one item per (outer, chunk): [max; COLUMNS] then [sum; COLUMNS].
    let stats_layout = crate::layout::Layout::dense(&[outer, n_chunks, 2 * COLUMNS]);
    DstTiles::<f32>::new(stats, &stats_layout, 1, usize::MAX).run(
        pool,
        n_tasks,
        &mut [],
        &|cursor, _| {
            let mut idx = [0usize; MAX_RANK];
            let mut row = [0f32; COLUMNS];
            let mut out = [0f32; 2 * COLUMNS];
            for item in cursor.items() {
                let mut tile = cursor.tile(item, &mut idx);
                let (o, chunk) = (idx[0], idx[1]);
                let c0 = chunk * COLUMNS;
                let width = (inner - c0).min(COLUMNS);
                let (max, sum) = out.split_at_mut(COLUMNS);
                max[..width].fill(f32::NEG_INFINITY);
                sum[..width].fill(0.0);
                for r in 0..axis_len {
                    x.load_run(
                        x.layout.offset + o * x_outer + r * x_axis + c0 * x_inner,
                        x_inner,
                        &mut row[..width],
                    );
                    for c in 0..width {
                        let v = row[c];
                        if v > max[c] {
                            // exp(v - v): 1, or NaN for +inf (a slice holding +inf is NaN).
                            let own = if v == f32::INFINITY { f32::NAN } else { 1.0 };
                            sum[c] = sum[c] * (max[c] - v).exp() + own;
                            max[c] = v;
                        } else if v != f32::NEG_INFINITY {
                            // (-inf contributes 0; a column of only -inf keeps sum 0 and max -inf,
                            // which pass 2 turns into NaN.)
                            sum[c] += (v - max[c]).exp();
                        }
                    }
                }
                tile.write_all(&out);
            }
            Ok(())
        },
    )?;
    let stats: &[f32] = &bytemuck::cast_slice(&*ctx.scratch)[..stats_len];
    // Pass 2: rows of the destination.
    let tiles = DstTiles::<T>::new(bytemuck::cast_slice_mut(&mut *ctx.dst), layout, 1, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut row = [0f32; BLOCK];
        let mut out = [T::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (o, r) = (idx[0], idx[1]);
            let (start, len) = (tile.start(), tile.len());
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                let c_start = start + j;
                x.load_run(
                    x.layout.offset + o * x_outer + r * x_axis + c_start * x_inner,
                    x_inner,
                    &mut row[..n],
                );
                for k in 0..n {
                    let c = c_start + k;
                    let base = (o * n_chunks + c / COLUMNS) * 2 * COLUMNS;
                    let (max, sum) = (
                        stats[base + c % COLUMNS],
                        stats[base + COLUMNS + c % COLUMNS],
                    );
                    out[k] = T::store((row[k] - max).exp() / sum);
                }
                tile.write_at(j, &out[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// fp16 softmax over a middle axis.
pub fn softmax_columns_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_columns::<f16>(ctx)
}

/// fp32 softmax over a middle axis.
pub fn softmax_columns_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    softmax_columns::<f32>(ctx)
}

/// Bytes of scratch per task layer norm needs for boxes of `len` elements.
pub fn layer_norm_scratch(len: usize) -> usize {
    (len * 12).next_multiple_of(64)
}

fn layer_norm<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let (n_norm, eps) = match ctx.op {
        StepOp::LayerNorm { n_norm, eps } => (*n_norm, *eps),
        other => panic!("layer_norm kernel called for {other:?} (kernel table invariant)"),
    };
    let x = ctx.src::<T>(0);
    let gamma = ctx.src::<T>(1);
    let beta = ctx.src::<T>(2);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let len: usize = layout.shape[rank - n_norm..].iter().product();
    let n_tasks = ctx.tasks(layout.numel() * 4);
    let pool = ctx.pool;
    let scratch = &mut *ctx.scratch;
    let tiles = DstTiles::<T>::new(
        bytemuck::cast_slice_mut(&mut *ctx.dst),
        layout,
        n_norm,
        usize::MAX,
    );
    tiles.run(pool, n_tasks, scratch, &|cursor, scratch| {
        let floats: &mut [f32] = bytemuck::cast_slice_mut(scratch);
        let (values, rest) = floats.split_at_mut(len);
        let (gammas, rest) = rest.split_at_mut(len);
        let betas = &mut rest[..len];
        let mut out = [T::default(); BLOCK];
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let outer = &idx[..rank - n_norm];
            x.load_box(x.layout.offset_of(outer), n_norm, values);
            gamma.load_box(gamma.layout.offset_of(outer), n_norm, gammas);
            beta.load_box(beta.layout.offset_of(outer), n_norm, betas);
            let mean = values.iter().sum::<f32>() / len as f32;
            let var = values.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / len as f32;
            let inv = 1.0 / (var + eps).sqrt();
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                for k in 0..n {
                    out[k] = T::store((values[j + k] - mean) * inv * gammas[j + k] + betas[j + k]);
                }
                tile.write_at(j, &out[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// fp16 layer norm.
pub fn layer_norm_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    layer_norm::<f16>(ctx)
}

/// fp32 layer norm.
pub fn layer_norm_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    layer_norm::<f32>(ctx)
}
