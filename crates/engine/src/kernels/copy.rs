//! The copy kernel of the tier tables: copies whose source is a transposed view (the
//! destination's contiguous axis is strided in the source, and another axis is contiguous
//! there) run as blocked transposes; every other copy takes the portable row kernel.
//!
//! The portable kernel walks destination rows and gathers each element of a transposed
//! source from its own cache line: about 1 GB/s for the trainer's head transposes
//! (`[1, 768, 1, 256]` ↔ `[1, 12, 256, 64]`). Here the copy is iterated as
//! `[other axes…, L-block, P, L-in]` (P the source's contiguous axis, L the destination's,
//! split into blocks of at most `MAX_BLOCK`): a task takes up to `GROUP` consecutive P
//! rows of one L block, reads the source block as `L-in` contiguous runs of P values into a
//! stack buffer, and writes each destination row from it contiguously. Copies whose rows are
//! contiguous on both sides are row slice copies (no per-element conversion). The result is
//! the same bytes as the portable kernel's (a copy of bit patterns).

use bytemuck::Pod;

use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::KernelCtx;
use crate::kernels::generic::elementwise as gew;
use crate::layout::{Layout, MAX_RANK};

type KResult = Result<(), KernelError>;

/// Largest destination run (the L block) written from one stack block.
const MAX_BLOCK: usize = 64;
/// Destination rows (consecutive P positions) per stack block.
const GROUP: usize = 32;
/// Smallest L block worth the blocked path (shorter runs gain nothing over the row kernel).
const MIN_BLOCK: usize = 8;

/// How a transposing copy is iterated: the destination and source layouts over the same
/// permuted (and L-split) index space, and the L block length.
#[derive(Debug, PartialEq)]
struct Transpose {
    dst: Layout,
    src: Layout,
    block: usize,
}

/// The blocked iteration of a copy from `src` into `dst` (same shape), or `None` when the copy
/// is not a transpose this kernel speeds up.
fn plan_transpose(dst: &Layout, src: &Layout) -> Option<Transpose> {
    let rank = dst.rank();
    if rank < 2 || src.rank() != rank {
        return None;
    }
    let unit = |layout: &Layout| {
        (0..rank)
            .rev()
            .find(|&d| layout.shape[d] > 1 && layout.strides[d] == 1)
    };
    let l = unit(dst)?;
    let p = unit(src)?;
    if l == p || src.strides[l] == 0 {
        return None;
    }
    let n_l = dst.shape[l];
    let block = if n_l <= MAX_BLOCK {
        n_l
    } else {
        (MIN_BLOCK..=MAX_BLOCK)
            .rev()
            .find(|&b| n_l.is_multiple_of(b))?
    };
    if block < MIN_BLOCK || (block < n_l && rank + 1 > MAX_RANK) {
        return None;
    }
    let order: Vec<usize> = (0..rank).filter(|&d| d != l && d != p).collect();
    let permute = |layout: &Layout| {
        let mut shape: Vec<usize> = order.iter().map(|&d| layout.shape[d]).collect();
        let mut strides: Vec<usize> = order.iter().map(|&d| layout.strides[d]).collect();
        if block < n_l {
            shape.push(n_l / block);
            strides.push(layout.strides[l] * block);
        }
        shape.extend([layout.shape[p], block]);
        strides.extend([layout.strides[p], layout.strides[l]]);
        Layout {
            offset: layout.offset,
            shape,
            strides,
        }
    };
    Some(Transpose {
        dst: permute(dst),
        src: permute(src),
        block,
    })
}

/// The tier copy kernel for elements of type `T` (bit patterns copied).
fn copy<T: Pod + Send + Sync + Default + crate::elem::Elem<C = i32>>(
    ctx: &mut KernelCtx<'_>,
) -> KResult {
    let src = ctx.src::<T>(0);
    let Some(plan) = plan_transpose(ctx.dst_layout, src.layout) else {
        return copy_rows::<T>(ctx);
    };
    let rank = plan.dst.rank();
    let (p_dim, block) = (rank - 2, plan.block);
    let n_p = plan.dst.shape[p_dim];
    let src_layout = &plan.src;
    // The source's P axis has stride 1 (that is how P was chosen).
    let src_l_stride = src_layout.strides[rank - 1];
    let n_tasks = ctx.tasks(plan.dst.numel());
    let pool = ctx.pool;
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), &plan.dst, 1, block);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        // buf[l * GROUP + k]: element l of destination row k of the group.
        let mut buf = [T::default(); MAX_BLOCK * GROUP];
        let items = cursor.items();
        let mut item = items.start;
        while item < items.end {
            // The group: consecutive P rows of one L block, within this cursor's items.
            cursor.tile(item, &mut idx);
            let p0 = idx[p_dim];
            let group = (n_p - p0).min(GROUP).min(items.end - item);
            let base = src_layout.offset_of(&idx[..rank - 1]);
            for (l, column) in buf.chunks_exact_mut(GROUP).take(block).enumerate() {
                let at = base + l * src_l_stride;
                if group == GROUP {
                    // A constant length: inlined vector moves instead of a memcpy call.
                    column.copy_from_slice(&src.data[at..at + GROUP]);
                } else {
                    column[..group].copy_from_slice(&src.data[at..at + group]);
                }
            }
            let mut out = [T::default(); MAX_BLOCK];
            for k in 0..group {
                let mut tile = cursor.tile(item + k, &mut idx);
                let row = match tile.contiguous() {
                    Some(row) => row,
                    None => &mut out[..block],
                };
                for (value, column) in row.iter_mut().zip(buf.chunks_exact(GROUP)) {
                    *value = column[k];
                }
                if tile.contiguous().is_none() {
                    tile.write_at(0, &out[..block]);
                }
            }
            item += group;
        }
        Ok(())
    })
}

/// A copy that is not a transpose: rows whose source and destination are both contiguous
/// are copied as slices; anything else takes the portable row kernel.
fn copy_rows<T: Pod + Send + Sync + Default + crate::elem::Elem<C = i32>>(
    ctx: &mut KernelCtx<'_>,
) -> KResult {
    let src = ctx.src::<T>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let unit_rows = |l: &Layout| l.strides.last().is_some_and(|&stride| stride == 1);
    if rank == 0 || !unit_rows(layout) || !unit_rows(src.layout) {
        return gew::copy::<T>(ctx);
    }
    let n_tasks = ctx.tasks(layout.numel());
    let pool = ctx.pool;
    let tiles = DstTiles::<T>::new(ctx.dst_slice::<T>(), layout, 1, crate::kernels::SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (start, len) = (tile.start(), tile.len());
            let at = src.layout.offset_of(&idx[..rank - 1]) + start;
            let row = &src.data[at..at + len];
            match tile.contiguous() {
                Some(out) => out.copy_from_slice(row),
                None => tile.write_at(0, row),
            }
        }
        Ok(())
    })
}

/// The copy kernels for 1-, 2- and 4-byte elements (the `copy` slots of a tier table).
pub fn copy_u8(ctx: &mut KernelCtx<'_>) -> KResult {
    copy::<u8>(ctx)
}

/// See [`copy_u8`].
pub fn copy_u16(ctx: &mut KernelCtx<'_>) -> KResult {
    copy::<u16>(ctx)
}

/// See [`copy_u8`].
pub fn copy_i32(ctx: &mut KernelCtx<'_>) -> KResult {
    copy::<i32>(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(offset: usize, shape: &[usize], strides: &[usize]) -> Layout {
        Layout {
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        }
    }

    #[test]
    fn head_transpose_is_planned_as_blocks() {
        // dst [12, 256, 64] dense; src the transposed view of [768, 256]: element (h, s, d)
        // at (h·64 + d)·256 + s.
        let dst = Layout::dense(&[12, 256, 64]);
        let src = layout(0, &[12, 256, 64], &[64 * 256, 1, 256]);
        let plan = plan_transpose(&dst, &src).expect("a transpose");
        assert_eq!(plan.block, 64);
        assert_eq!(plan.dst.shape, vec![12, 256, 64]);
        assert_eq!(plan.dst.strides, vec![256 * 64, 64, 1]);
        assert_eq!(plan.src.strides, vec![64 * 256, 1, 256]);
        // The other direction, with L = 256 split into blocks of 64.
        let dst = Layout::dense(&[768, 256]);
        let src = layout(0, &[768, 256], &[1, 768]);
        let plan = plan_transpose(&dst, &src).expect("a transpose");
        assert_eq!(plan.block, 64);
        assert_eq!(plan.dst.shape, vec![4, 768, 64]);
        assert_eq!(plan.dst.strides, vec![64, 256, 1]);
        assert_eq!(plan.src.strides, vec![64 * 768, 1, 768]);
    }

    #[test]
    fn non_transposes_take_the_row_kernel() {
        let dense = Layout::dense(&[4, 64]);
        assert_eq!(plan_transpose(&dense, &dense), None, "a plain copy");
        let strided = layout(0, &[4, 64], &[128, 2]);
        assert_eq!(
            plan_transpose(&dense, &strided),
            None,
            "no unit stride in the source"
        );
        let broadcast = layout(0, &[4, 64], &[1, 0]);
        assert_eq!(plan_transpose(&dense, &broadcast), None, "a broadcast");
        let prime = layout(0, &[4, 67 * 3], &[1, 4]);
        assert_eq!(
            plan_transpose(&Layout::dense(&[4, 201]), &prime),
            None,
            "no block length of 8..=64 divides 201"
        );
    }
}
