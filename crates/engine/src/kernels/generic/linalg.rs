//! Portable matmul, convolution and attention. Floats accumulate in f32 and round once per
//! output element; int32 matmul accumulates with wrapping i32 arithmetic.

use half::f16;

use crate::elem::Elem;
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::{BLOCK, KernelCtx};
use crate::layout::MAX_RANK;
use crate::plan::step::StepOp;

type KResult = Result<(), KernelError>;

/// Scratch bytes per task for the portable matmul with `n` output columns.
pub fn matmul_scratch(n: usize) -> usize {
    (n * 8).next_multiple_of(64)
}

/// Accumulator arithmetic for the portable matmul.
trait Acc: Copy + Default + Send + Sync {
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Acc for f32 {
    #[inline]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        self + a * b
    }
}

impl Acc for i32 {
    #[inline]
    fn mul_add(self, a: i32, b: i32) -> i32 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

fn matmul<T: Elem>(ctx: &mut KernelCtx<'_>) -> KResult
where
    T::C: Acc + bytemuck::Pod,
{
    let bias = match ctx.op {
        StepOp::Matmul { bias } => *bias,
        other => panic!("matmul kernel called for {other:?} (kernel table invariant)"),
    };
    let a = ctx.src::<T>(0);
    let b = ctx.src::<T>(1);
    let c_bias = if bias { Some(ctx.src::<T>(2)) } else { None };
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n = layout.shape[rank - 1];
    let k_len = a.layout.shape[rank - 1];
    let b_row_stride = b.layout.strides[rank - 2];
    let b_col_stride = b.layout.strides[rank - 1];
    let a_col_stride = a.layout.strides[rank - 1];
    let n_tasks = ctx.tasks(layout.numel() * k_len);
    let pool = ctx.pool;
    let scratch = &mut *ctx.scratch;
    let tiles = DstTiles::<T>::new(
        bytemuck::cast_slice_mut(&mut *ctx.dst),
        layout,
        1,
        usize::MAX,
    );
    tiles.run(pool, n_tasks, scratch, &|cursor, scratch| {
        let words: &mut [T::C] =
            bytemuck::cast_slice_mut(&mut scratch[..(n * 8).next_multiple_of(64)]);
        let (acc, b_row) = words.split_at_mut(n);
        let b_row = &mut b_row[..n];
        let mut out = [T::default(); BLOCK];
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            // idx[..rank-1] = batch..., m
            match &c_bias {
                Some(bias) => bias.load_run(
                    bias.layout.offset_of(&idx[..rank - 1]),
                    bias.last_stride(),
                    acc,
                ),
                None => acc.fill(T::C::default()),
            }
            let a_base = a.layout.offset_of(&idx[..rank - 1]);
            let b_base = b.layout.offset_of(&idx[..rank - 2]);
            for kk in 0..k_len {
                let a_value = a.at(a_base + kk * a_col_stride);
                b.load_run(b_base + kk * b_row_stride, b_col_stride, b_row);
                for (sum, &b_value) in acc.iter_mut().zip(b_row.iter()) {
                    *sum = sum.mul_add(a_value, b_value);
                }
            }
            let mut j = 0;
            while j < n {
                let len = (n - j).min(BLOCK);
                T::store_slice(&acc[j..j + len], &mut out[..len]);
                tile.write_at(j, &out[..len]);
                j += len;
            }
        }
        Ok(())
    })
}

/// Portable fp16 matmul (f32 accumulation).
pub fn matmul_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    matmul::<f16>(ctx)
}

/// Portable fp32 matmul.
pub fn matmul_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    matmul::<f32>(ctx)
}

/// Portable int32 matmul (wrapping).
pub fn matmul_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    matmul::<i32>(ctx)
}

/// Scratch bytes per task for the portable convolution with output rows of `ow` elements.
pub fn conv_scratch(ow: usize) -> usize {
    (ow * 4).next_multiple_of(64)
}

fn conv<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let (strides, dilations, pads, groups, has_bias) = match ctx.op {
        StepOp::Conv {
            strides,
            dilations,
            pads_before,
            groups,
            bias,
        } => (*strides, *dilations, *pads_before, *groups, *bias),
        other => panic!("conv kernel called for {other:?} (kernel table invariant)"),
    };
    let x = ctx.src::<T>(0);
    let w = ctx.src::<T>(1);
    let bias = if has_bias {
        Some(ctx.src::<T>(2))
    } else {
        None
    };
    let layout = ctx.dst_layout;
    let (c_in, in_sp) = (
        x.layout.shape[1],
        [x.layout.shape[2], x.layout.shape[3], x.layout.shape[4]],
    );
    let (c_out, ksz) = (
        w.layout.shape[0],
        [w.layout.shape[2], w.layout.shape[3], w.layout.shape[4]],
    );
    let ow_len = layout.shape[4];
    let cin_g = c_in / groups;
    let cout_g = c_out / groups;
    let n_tasks = ctx.tasks(layout.numel() * cin_g * ksz.iter().product::<usize>());
    let pool = ctx.pool;
    let scratch = &mut *ctx.scratch;
    let tiles = DstTiles::<T>::new(
        bytemuck::cast_slice_mut(&mut *ctx.dst),
        layout,
        1,
        usize::MAX,
    );
    tiles.run(pool, n_tasks, scratch, &|cursor, scratch| {
        let acc: &mut [f32] = &mut bytemuck::cast_slice_mut(scratch)[..ow_len];
        let mut out = [T::default(); BLOCK];
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (batch, o, od, oh) = (idx[0], idx[1], idx[2], idx[3]);
            let init = bias
                .as_ref()
                .map_or(0.0, |b| b.at(b.layout.offset_of(&[o])));
            acc.fill(init);
            let group = o / cout_g;
            for ci in 0..cin_g {
                let c = group * cin_g + ci;
                for kd in 0..ksz[0] {
                    let id = (od * strides[0] + kd * dilations[0]) as isize - pads[0] as isize;
                    if id < 0 || id as usize >= in_sp[0] {
                        continue;
                    }
                    for kh in 0..ksz[1] {
                        let ih = (oh * strides[1] + kh * dilations[1]) as isize - pads[1] as isize;
                        if ih < 0 || ih as usize >= in_sp[1] {
                            continue;
                        }
                        let x_row = x.layout.offset_of(&[batch, c, id as usize, ih as usize]);
                        for kw in 0..ksz[2] {
                            let weight = w.at(w.layout.offset_of(&[o, ci, kd, kh, kw]));
                            let shift = (kw * dilations[2]) as isize - pads[2] as isize;
                            for (ow, sum) in acc.iter_mut().enumerate() {
                                let iw = (ow * strides[2]) as isize + shift;
                                if iw >= 0 && (iw as usize) < in_sp[2] {
                                    *sum +=
                                        weight * x.at(x_row + iw as usize * x.layout.strides[4]);
                                }
                            }
                        }
                    }
                }
            }
            let mut j = 0;
            while j < ow_len {
                let len = (ow_len - j).min(BLOCK);
                T::store_slice(&acc[j..j + len], &mut out[..len]);
                tile.write_at(j, &out[..len]);
                j += len;
            }
        }
        Ok(())
    })
}

/// Portable fp16 convolution.
pub fn conv_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    conv::<f16>(ctx)
}

/// Portable fp32 convolution.
pub fn conv_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    conv::<f32>(ctx)
}

/// Scratch bytes per task for attention with `s` keys, query/key width `e` and value width `ev`.
pub fn sdpa_scratch(s: usize, e: usize, ev: usize) -> usize {
    ((s + e + ev + ev) * 4).next_multiple_of(64)
}

fn sdpa<T: Elem<C = f32>>(ctx: &mut KernelCtx<'_>) -> KResult {
    let has_mask = match ctx.op {
        StepOp::Sdpa { mask } => *mask,
        other => panic!("sdpa kernel called for {other:?} (kernel table invariant)"),
    };
    let q = ctx.src::<T>(0);
    let k = ctx.src::<T>(1);
    let v = ctx.src::<T>(2);
    let mask_src = ctx.srcs[3];
    let mask_bool = has_mask && mask_src.ty == crate::elem::Ty::Bool;
    let mask_f16 = has_mask && mask_src.ty == crate::elem::Ty::F16;
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let e_len = q.layout.shape[rank - 1];
    let s_len = k.layout.shape[rank - 2];
    let ev_len = v.layout.shape[rank - 1];
    let scale = 1.0 / (e_len as f32).sqrt();
    let n_tasks = ctx.tasks(layout.numel() * s_len * 2);
    let pool = ctx.pool;
    let scratch = &mut *ctx.scratch;
    let tiles = DstTiles::<T>::new(
        bytemuck::cast_slice_mut(&mut *ctx.dst),
        layout,
        1,
        usize::MAX,
    );
    tiles.run(pool, n_tasks, scratch, &|cursor, scratch| {
        let floats: &mut [f32] = bytemuck::cast_slice_mut(scratch);
        let (scores, rest) = floats.split_at_mut(s_len);
        let (q_row, rest) = rest.split_at_mut(e_len);
        let (acc, rest) = rest.split_at_mut(ev_len);
        let v_row = &mut rest[..ev_len];
        let mut k_row = [0f32; BLOCK];
        let mut out = [T::default(); BLOCK];
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let row_idx = &idx[..rank - 1];
            let batch_idx = &idx[..rank - 2];
            q.load_run(q.layout.offset_of(row_idx), q.last_stride(), q_row);
            let k_base = k.layout.offset_of(batch_idx);
            for (s, score) in scores.iter_mut().enumerate() {
                let mut dot = 0f32;
                let mut e0 = 0;
                while e0 < e_len {
                    let n = (e_len - e0).min(BLOCK);
                    let start = k_base + s * k.layout.strides[rank - 2] + e0 * k.last_stride();
                    k.load_run(start, k.last_stride(), &mut k_row[..n]);
                    for (a, b) in q_row[e0..e0 + n].iter().zip(&k_row[..n]) {
                        dot += a * b;
                    }
                    e0 += n;
                }
                *score = dot * scale;
            }
            if has_mask {
                let m_layout = mask_src.layout;
                let base = m_layout.offset_of(row_idx);
                let stride = m_layout.strides[rank - 1];
                for (s, score) in scores.iter_mut().enumerate() {
                    let at = base + s * stride;
                    if mask_bool {
                        if mask_src.bytes[at] == 0 {
                            *score = f32::NEG_INFINITY;
                        }
                    } else if mask_f16 {
                        let values: &[f16] = bytemuck::cast_slice(mask_src.bytes);
                        *score += values[at].to_f32();
                    } else {
                        let values: &[f32] = bytemuck::cast_slice(mask_src.bytes);
                        *score += values[at];
                    }
                }
            }
            let mut max = f32::NEG_INFINITY;
            let mut nan = false;
            for &value in scores.iter() {
                nan |= value.is_nan();
                max = max.max(value);
            }
            if nan {
                max = f32::NAN;
            }
            let mut sum = 0f32;
            for value in scores.iter_mut() {
                *value = (*value - max).exp();
                sum += *value;
            }
            acc.fill(0.0);
            let v_base = v.layout.offset_of(batch_idx);
            for (s, &p) in scores.iter().enumerate() {
                v.load_run(
                    v_base + s * v.layout.strides[rank - 2],
                    v.last_stride(),
                    v_row,
                );
                for (a, &value) in acc.iter_mut().zip(v_row.iter()) {
                    *a += p * value;
                }
            }
            let inv = 1.0 / sum;
            let mut j = 0;
            while j < ev_len {
                let len = (ev_len - j).min(BLOCK);
                for t in 0..len {
                    out[t] = T::store(acc[j + t] * inv);
                }
                tile.write_at(j, &out[..len]);
                j += len;
            }
        }
        Ok(())
    })
}

/// Portable fp16 attention.
pub fn sdpa_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    sdpa::<f16>(ctx)
}

/// Portable fp32 attention.
pub fn sdpa_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    sdpa::<f32>(ctx)
}
