//! General convolution as GEMM: the input is unfolded (im2col) into a `K × P` column block of
//! the step's scratch, `K = C_in/groups · kernel volume`, `P` a run of output positions, and
//! `out[n, group rows, positions] = W_group · columns` runs on linalg's GEMM for the table's
//! tier and precision. The portable direct convolution remains the fallback for layouts the
//! GEMM cannot address (a weight whose `C_in/groups · kernel` dims or an output whose spatial
//! dims are not one strided run) and the whole kernel of `KernelTable::generic()`.
//!
//! Numerics: products and sums in f32 (FMA on x86 tiers) in the GEMM's order, rounded once into
//! the output type; with a bias and an fp16 output the sums go through an f32 scratch so the
//! output is still rounded once. `Precision::Fast` rounds the operands to bf16 (AMX), as for
//! matmul.

use std::sync::Mutex;

use half::f16;
use milbridge_linalg::cpu::Isa;
use milbridge_linalg::gemm::{self as lgemm, GemmSpec};

use crate::Precision;
use crate::elem::{Elem, Ty};
use crate::error::KernelError;
use crate::exec::raw::{self, GemmDst, GemmSrc, Mat3};
use crate::kernels::generic::linalg as la;
use crate::kernels::{KernelCtx, SrcView};
use crate::layout::Layout;
use crate::plan::step::StepOp;

/// Column-block budget: the unfolded input of one GEMM call stays under this many bytes.
const COLUMN_BUDGET: usize = 4 << 20;

/// Most pool tasks the unfolding is split into.
const MAX_UNFOLD_TASKS: usize = 16;

/// The geometry of one convolution step (rank-5 layouts: `[N, C, D, H, W]`).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    c_in_g: usize,
    c_out_g: usize,
    groups: usize,
    in_sp: [usize; 3],
    ksz: [usize; 3],
    out_sp: [usize; 3],
    strides: [usize; 3],
    dilations: [usize; 3],
    pads: [usize; 3],
}

impl Geometry {
    fn kvol(&self) -> usize {
        self.ksz.iter().product()
    }

    /// GEMM depth: one unfolded row per (input channel of a group, kernel tap).
    fn depth(&self) -> usize {
        self.c_in_g * self.kvol()
    }

    fn positions(&self) -> usize {
        self.out_sp.iter().product()
    }

    /// Output rows (`(od, oh)` pairs) per GEMM call: as many as fit the column budget, at
    /// least one.
    fn rows_per_chunk(&self, elem_bytes: usize) -> usize {
        let row_bytes = self.depth() * self.out_sp[2] * elem_bytes;
        (COLUMN_BUDGET / row_bytes.max(1)).clamp(1, self.out_sp[0] * self.out_sp[1])
    }
}

/// One column block: batch entry `n`, group `g`, output rows `row0..row0 + rows`.
#[derive(Clone, Copy, Debug)]
struct Block {
    n: usize,
    g: usize,
    row0: usize,
    rows: usize,
}

/// Scratch bytes the GEMM convolution needs for a step with `x` `[N, C_in, D, H, W]`, weight
/// `[C_out, C_in/groups, KD, KH, KW]` and output spatial shape `out_sp` (both rank 5), for
/// element size `elem_bytes`: one column block plus, for an fp16 output with a bias, an f32
/// block of sums.
pub fn conv_gemm_scratch(
    x_shape: &[usize],
    w_shape: &[usize],
    out_sp: [usize; 3],
    groups: usize,
    elem_bytes: usize,
) -> usize {
    let ksz = [w_shape[2], w_shape[3], w_shape[4]];
    let geometry = Geometry {
        batch: x_shape[0],
        c_in_g: x_shape[1] / groups.max(1),
        c_out_g: w_shape[0] / groups.max(1),
        groups,
        in_sp: [x_shape[2], x_shape[3], x_shape[4]],
        ksz,
        out_sp,
        strides: [1; 3],
        dilations: [1; 3],
        pads: [0; 3],
    };
    let rows = geometry.rows_per_chunk(elem_bytes);
    let positions = rows * out_sp[2];
    let columns = geometry.depth() * positions * elem_bytes;
    let sums = geometry.c_out_g * positions * 4;
    (columns.next_multiple_of(64) + sums).next_multiple_of(64)
}

/// The stride of dims `dims` of `layout` seen as one run (size-1 dims ignored), or `None` if
/// they do not merge; `Some(1)` for an all-size-1 run.
fn merged_stride(layout: &Layout, dims: std::ops::Range<usize>) -> Option<usize> {
    let mut inner: Option<(usize, usize)> = None; // (size, stride) of the run so far
    for d in dims.rev() {
        let (n, s) = (layout.shape[d], layout.strides[d]);
        if n == 1 {
            continue;
        }
        inner = match inner {
            None => Some((n, s)),
            Some((m, t)) if s == t * m => Some((m * n, t)),
            Some(_) => return None,
        };
    }
    Some(inner.map_or(1, |(_, stride)| stride))
}

/// fp16 convolution: GEMM when the layouts allow, else the portable direct kernel.
pub fn conv_f16(ctx: &mut KernelCtx<'_>) -> Result<(), KernelError> {
    conv::<f16>(ctx)
}

/// fp32 convolution: GEMM when the layouts allow, else the portable direct kernel.
pub fn conv_f32(ctx: &mut KernelCtx<'_>) -> Result<(), KernelError> {
    conv::<f32>(ctx)
}

/// The kernel name for `isa`.
pub fn kernel_names(isa: Isa) -> [&'static str; 2] {
    match isa {
        Isa::Generic => ["generic_conv_f16_im2col", "generic_conv_f32_im2col"],
        Isa::Avx2 => ["avx2_conv_f16_im2col", "avx2_conv_f32_im2col"],
        Isa::Avx512 => ["avx512_conv_f16_im2col", "avx512_conv_f32_im2col"],
        Isa::Amx => ["amx_conv_f16_im2col", "amx_conv_f32_im2col"],
    }
}

/// A storage type the GEMM reads and writes.
trait GemmElem: Elem<C = f32> + Send + Sync {
    fn src(data: &[Self]) -> GemmSrc<'_>;
    fn dst(data: &mut [Self]) -> GemmDst<'_>;
}

impl GemmElem for f16 {
    fn src(data: &[f16]) -> GemmSrc<'_> {
        GemmSrc::F16(data)
    }
    fn dst(data: &mut [f16]) -> GemmDst<'_> {
        GemmDst::F16(data)
    }
}

impl GemmElem for f32 {
    fn src(data: &[f32]) -> GemmSrc<'_> {
        GemmSrc::F32(data)
    }
    fn dst(data: &mut [f32]) -> GemmDst<'_> {
        GemmDst::F32(data)
    }
}

fn conv<T: GemmElem>(ctx: &mut KernelCtx<'_>) -> Result<(), KernelError> {
    let StepOp::Conv {
        strides,
        dilations,
        pads_before,
        groups,
        bias,
    } = *ctx.op
    else {
        panic!(
            "conv kernel called for {:?} (kernel table invariant)",
            ctx.op
        );
    };
    let (x_layout, w_layout, d_layout) = (ctx.srcs[0].layout, ctx.srcs[1].layout, ctx.dst_layout);
    let geometry = Geometry {
        batch: x_layout.shape[0],
        c_in_g: x_layout.shape[1] / groups,
        c_out_g: w_layout.shape[0] / groups,
        groups,
        in_sp: [x_layout.shape[2], x_layout.shape[3], x_layout.shape[4]],
        ksz: [w_layout.shape[2], w_layout.shape[3], w_layout.shape[4]],
        out_sp: [d_layout.shape[2], d_layout.shape[3], d_layout.shape[4]],
        strides,
        dilations,
        pads: pads_before,
    };
    let elem = std::mem::size_of::<T>();
    let w_k_stride = merged_stride(w_layout, 1..5);
    let d_p_stride = merged_stride(d_layout, 2..5);
    let needed = conv_gemm_scratch(
        &x_layout.shape,
        &w_layout.shape,
        geometry.out_sp,
        groups,
        elem,
    );
    let (Some(w_k_stride), Some(d_p_stride), true) =
        (w_k_stride, d_p_stride, ctx.scratch.len() >= needed)
    else {
        return if ctx.dst_ty == Ty::F16 {
            la::conv_f16(ctx)
        } else {
            la::conv_f32(ctx)
        };
    };
    if geometry.positions() == 0 || d_layout.numel() == 0 {
        return Ok(());
    }
    let spec = GemmSpec {
        isa: ctx.isa,
        precision: match ctx.precision {
            Precision::Exact => lgemm::Precision::Exact,
            Precision::Fast => lgemm::Precision::Fast,
        },
        accumulate: bias,
    };
    let x = ctx.src::<T>(0);
    let w = ctx.src::<T>(1);
    let bias_view = bias.then(|| ctx.src::<T>(2));
    let pool = ctx.pool;
    let depth = geometry.depth();
    let row_len = geometry.out_sp[2];
    let n_rows = geometry.out_sp[0] * geometry.out_sp[1];
    let chunk_rows = geometry.rows_per_chunk(elem);
    let column_bytes = (depth * chunk_rows * row_len * elem).next_multiple_of(64);
    let (column_bytes_slice, sums_bytes) = ctx.scratch.split_at_mut(column_bytes);
    let columns: &mut [T] = bytemuck::cast_slice_mut(column_bytes_slice);
    let sums: &mut [f32] = bytemuck::cast_slice_mut(sums_bytes);
    let f16_with_bias = bias && ctx.dst_ty == Ty::F16;
    let dst: &mut [T] = bytemuck::cast_slice_mut(&mut *ctx.dst);
    for n in 0..geometry.batch {
        for g in 0..geometry.groups {
            let mut row0 = 0;
            while row0 < n_rows {
                let rows = chunk_rows.min(n_rows - row0);
                let positions = rows * row_len;
                let block = Block { n, g, row0, rows };
                unfold(
                    &geometry,
                    &x,
                    block,
                    &mut columns[..depth * positions],
                    pool,
                );
                let a_mat = Mat3 {
                    offset: w_layout.offset + g * geometry.c_out_g * w_layout.strides[0],
                    batch: 1,
                    rows: geometry.c_out_g,
                    cols: depth,
                    batch_stride: 0,
                    row_stride: w_layout.strides[0],
                    col_stride: w_k_stride,
                };
                let b_mat = Mat3 {
                    offset: 0,
                    batch: 1,
                    rows: depth,
                    cols: positions,
                    batch_stride: 0,
                    row_stride: positions,
                    col_stride: 1,
                };
                let c_mat = Mat3 {
                    offset: d_layout.offset
                        + n * d_layout.strides[0]
                        + g * geometry.c_out_g * d_layout.strides[1]
                        + row0 * row_len * d_p_stride,
                    batch: 1,
                    rows: geometry.c_out_g,
                    cols: positions,
                    batch_stride: 0,
                    row_stride: d_layout.strides[1],
                    col_stride: d_p_stride,
                };
                let b_src = T::src(&columns[..depth * positions]);
                // With a bias and an fp16 output the sums go through f32 scratch (one
                // rounding); otherwise C starts as the bias (or is overwritten) in place.
                let sums = &mut sums[..if f16_with_bias {
                    geometry.c_out_g * positions
                } else {
                    0
                }];
                let (c, c_view) = if f16_with_bias {
                    fill_bias_rows(sums, bias_view.as_ref(), g * geometry.c_out_g, positions);
                    let s_mat = Mat3 {
                        offset: 0,
                        row_stride: positions,
                        col_stride: 1,
                        ..c_mat
                    };
                    (GemmDst::F32(&mut *sums), s_mat)
                } else {
                    if let Some(bias) = &bias_view {
                        for o in 0..geometry.c_out_g {
                            let value = bias.at(bias.layout.offset_of(&[g * geometry.c_out_g + o]));
                            let base = c_mat.offset + o * c_mat.row_stride;
                            for p in 0..positions {
                                dst[base + p * c_mat.col_stride] = T::store(value);
                            }
                        }
                    }
                    (T::dst(&mut *dst), c_mat)
                };
                raw::gemm(&spec, pool, T::src(w.data), a_mat, b_src, b_mat, c, c_view);
                if f16_with_bias {
                    store_rows(dst, &c_mat, sums);
                }
                row0 += rows;
            }
        }
    }
    Ok(())
}

/// Fills each `positions`-long row `o` of `sums` with the bias of output channel `first + o`.
fn fill_bias_rows<T: Elem<C = f32>>(
    sums: &mut [f32],
    bias: Option<&SrcView<'_, T>>,
    first: usize,
    positions: usize,
) {
    for (o, row) in sums.chunks_exact_mut(positions).enumerate() {
        let value = bias.map_or(0.0, |b| b.at(b.layout.offset_of(&[first + o])));
        row.fill(value);
    }
}

/// Rounds the dense f32 block `sums` (`c_mat.rows × c_mat.cols`) into `dst` at `c_mat`.
fn store_rows<T: Elem<C = f32>>(dst: &mut [T], c_mat: &Mat3, sums: &[f32]) {
    for (o, row) in sums.chunks_exact(c_mat.cols).enumerate() {
        let base = c_mat.offset + o * c_mat.row_stride;
        if c_mat.col_stride == 1 {
            T::store_slice(row, &mut dst[base..base + c_mat.cols]);
        } else {
            for (p, &value) in row.iter().enumerate() {
                dst[base + p * c_mat.col_stride] = T::store(value);
            }
        }
    }
}

/// Writes the `K × P` column block of batch entry `n`, group `g`, output rows
/// `row0..row0 + rows` (each `out_sp[2]` positions): row `(ci, kd, kh, kw)`, column
/// `(row, ow)` holds the input element that tap meets at that output position, or 0 in the
/// padding. Split across the pool by column-block rows.
fn unfold<T: GemmElem>(
    geometry: &Geometry,
    x: &SrcView<'_, T>,
    block: Block,
    columns: &mut [T],
    pool: &milbridge_linalg::pool::Pool,
) {
    let depth = geometry.depth();
    let positions = block.rows * geometry.out_sp[2];
    let n_tasks = (depth * positions / (1 << 15)).clamp(1, pool.n_threads().min(MAX_UNFOLD_TASKS));
    let per_task = depth.div_ceil(n_tasks);
    let mut parts: [Mutex<(usize, &mut [T])>; MAX_UNFOLD_TASKS] =
        std::array::from_fn(|_| Mutex::new((0, &mut [][..])));
    for (t, part) in columns.chunks_mut(per_task * positions).enumerate() {
        parts[t] = Mutex::new((t * per_task, part));
    }
    let task = |t: usize| {
        let mut guard = parts[t].lock().unwrap_or_else(|poison| poison.into_inner());
        let (first, ref mut part) = *guard;
        for (i, out) in part.chunks_exact_mut(positions).enumerate() {
            unfold_row(geometry, x, block, first + i, out);
        }
    };
    if n_tasks == 1 {
        task(0);
    } else {
        pool.run(n_tasks, &task);
    }
}

/// One column-block row: tap `krow = (ci, kd, kh, kw)` across `rows` output rows.
fn unfold_row<T: GemmElem>(
    geometry: &Geometry,
    x: &SrcView<'_, T>,
    block: Block,
    krow: usize,
    out: &mut [T],
) {
    let Block { n, g, row0, rows } = block;
    let Geometry {
        ksz,
        in_sp,
        out_sp,
        strides,
        dilations,
        pads,
        ..
    } = *geometry;
    let kw = krow % ksz[2];
    let kh = (krow / ksz[2]) % ksz[1];
    let kd = (krow / (ksz[2] * ksz[1])) % ksz[0];
    let ci = krow / geometry.kvol();
    let c = g * geometry.c_in_g + ci;
    let layout = x.layout;
    let w_stride = layout.strides[4];
    let ow_len = out_sp[2];
    // Output columns whose input column `ow·s + kw·d − pad` lies inside `0..in_w`.
    let shift = kw * dilations[2];
    let lo = pads[2]
        .saturating_sub(shift)
        .div_ceil(strides[2])
        .min(ow_len);
    let hi = if in_sp[2] + pads[2] > shift {
        ((in_sp[2] + pads[2] - shift - 1) / strides[2] + 1).min(ow_len)
    } else {
        0
    }
    .max(lo);
    let zero = T::store(0.0);
    for (r, out_row) in out.chunks_exact_mut(ow_len).take(rows).enumerate() {
        let row = row0 + r;
        let (od, oh) = (row / out_sp[1], row % out_sp[1]);
        let id = (od * strides[0] + kd * dilations[0]) as isize - pads[0] as isize;
        let ih = (oh * strides[1] + kh * dilations[1]) as isize - pads[1] as isize;
        if id < 0 || id as usize >= in_sp[0] || ih < 0 || ih as usize >= in_sp[1] || lo == hi {
            out_row.fill(zero);
            continue;
        }
        out_row[..lo].fill(zero);
        out_row[hi..].fill(zero);
        let base = layout.offset_of(&[n, c, id as usize, ih as usize, 0]);
        let first = base + (lo * strides[2] + shift - pads[2]) * w_stride;
        let step = strides[2] * w_stride;
        let dst = &mut out_row[lo..hi];
        if step == 1 {
            dst.copy_from_slice(&x.data[first..first + dst.len()]);
        } else {
            for (j, value) in dst.iter_mut().enumerate() {
                *value = x.data[first + j * step];
            }
        }
    }
}
