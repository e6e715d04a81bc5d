//! The engine's one unsafe room: disjoint parallel writes into one destination buffer, and the
//! hand-off of raw views to linalg's GEMM.
//!
//! Everything here exposes a safe API whose soundness rests on checks done once per call:
//! [`DstTiles::new`] checks that the destination layout is injective (distinct indices never
//! share an element) and inside the buffer, and then hands each pool task a [`TileCursor`] over
//! a disjoint range of outer indices, so no two live `&mut` references ever overlap.
//! [`gemm()`] checks every view's footprint against its slice before passing pointers on.
#![allow(
    unsafe_code,
    reason = "parallel disjoint writes and raw GEMM views; each block is justified"
)]

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Mutex;

use half::f16;
use milbridge_linalg::gemm::{self, ElemPtr, GemmSpec, MatMut, MatRef, OutPtr, PackedA, PackedB};
use milbridge_linalg::pool::Pool;

use crate::error::KernelError;
use crate::layout::{Layout, MAX_RANK};

/// The per-task work of [`DstTiles::run`]: a cursor over its items and its scratch bytes.
pub type TileWork<'w, T> =
    dyn Fn(&mut TileCursor<'_, T>, &mut [u8]) -> Result<(), KernelError> + Sync + 'w;

/// A destination tensor split into items for parallel writing.
///
/// The last `n_inner` dimensions form the *inner box* of one item (flattened row-major), the
/// others are the outer index. With `n_inner == 1` an inner row may further be split into
/// segments of at most `seg` elements, each its own item.
pub struct DstTiles<'a, T> {
    ptr: *mut T,
    offset: usize,
    outer_shape: [usize; MAX_RANK],
    outer_strides: [usize; MAX_RANK],
    n_outer: usize,
    inner_shape: [usize; MAX_RANK],
    inner_strides: [usize; MAX_RANK],
    n_inner: usize,
    inner_numel: usize,
    inner_contiguous: bool,
    seg: usize,
    n_segs: usize,
    n_items: usize,
    borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a DstTiles is only a description of a uniquely borrowed `&'a mut [T]`; sharing it
// between threads lets each thread write the disjoint items its cursor covers (see
// `DstTiles::run`), which is sound for `T: Send`.
unsafe impl<T: Send> Sync for DstTiles<'_, T> {}

impl<'a, T: Copy + Send> DstTiles<'a, T> {
    /// Splits `data` viewed through `layout`. Panics (an engine invariant: the planner only
    /// produces such layouts) if the layout is not injective or reaches past `data`.
    pub fn new(data: &'a mut [T], layout: &Layout, n_inner: usize, seg: usize) -> DstTiles<'a, T> {
        let rank = layout.rank();
        assert!(
            rank <= MAX_RANK && n_inner <= rank,
            "destination rank {rank} exceeds the engine limit"
        );
        assert!(
            layout.is_injective(),
            "destination layout {layout:?} overlaps itself (planner invariant)"
        );
        let numel = layout.numel();
        assert!(
            numel == 0 || layout.end() <= data.len(),
            "destination layout {layout:?} reaches past its {}-element buffer (planner invariant)",
            data.len()
        );
        let n_outer = rank - n_inner;
        let mut tiles = DstTiles {
            ptr: data.as_mut_ptr(),
            offset: layout.offset,
            outer_shape: [0; MAX_RANK],
            outer_strides: [0; MAX_RANK],
            n_outer,
            inner_shape: [0; MAX_RANK],
            inner_strides: [0; MAX_RANK],
            n_inner,
            inner_numel: layout.shape[n_outer..].iter().product(),
            inner_contiguous: false,
            seg: 1,
            n_segs: 1,
            n_items: 0,
            borrow: PhantomData,
        };
        tiles.outer_shape[..n_outer].copy_from_slice(&layout.shape[..n_outer]);
        tiles.outer_strides[..n_outer].copy_from_slice(&layout.strides[..n_outer]);
        tiles.inner_shape[..n_inner].copy_from_slice(&layout.shape[n_outer..]);
        tiles.inner_strides[..n_inner].copy_from_slice(&layout.strides[n_outer..]);
        let mut expected = 1usize;
        tiles.inner_contiguous = true;
        for (&n, &s) in layout.shape[n_outer..]
            .iter()
            .zip(&layout.strides[n_outer..])
            .rev()
        {
            if n != 1 && s != expected {
                tiles.inner_contiguous = false;
            }
            expected *= n;
        }
        tiles.seg = if n_inner == 1 {
            seg.clamp(1, tiles.inner_numel.max(1))
        } else {
            tiles.inner_numel.max(1)
        };
        tiles.n_segs = tiles.inner_numel.div_ceil(tiles.seg);
        let n_outer_items: usize = layout.shape[..n_outer].iter().product();
        tiles.n_items = n_outer_items * tiles.n_segs;
        tiles
    }

    /// Number of items (outer indices × segments).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Elements in one item's inner box (before segmenting).
    pub fn inner_numel(&self) -> usize {
        self.inner_numel
    }

    /// Calls `work` on `n_tasks` cursors over disjoint, contiguous item ranges, in parallel on
    /// `pool`; each call also gets its own 64-byte-aligned part of `scratch`. Returns the first
    /// error any call returned.
    pub fn run(
        self,
        pool: &Pool,
        n_tasks: usize,
        scratch: &mut [u8],
        work: &TileWork<'_, T>,
    ) -> Result<(), KernelError> {
        let n_items = self.n_items;
        let n_tasks = n_tasks.clamp(1, n_items.max(1));
        if n_tasks == 1 {
            let mut cursor = TileCursor {
                tiles: &self,
                items: 0..n_items,
                borrow: PhantomData,
            };
            return work(&mut cursor, scratch);
        }
        let per_task = (scratch.len() / n_tasks) & !63;
        let scratch_ptr = ScratchPtr(scratch.as_mut_ptr());
        let first_error: Mutex<Option<KernelError>> = Mutex::new(None);
        let tiles = &self;
        let task = |task_idx: usize| {
            let items = task_idx * n_items / n_tasks..(task_idx + 1) * n_items / n_tasks;
            let mut cursor = TileCursor {
                tiles,
                items,
                borrow: PhantomData,
            };
            // SAFETY: task `task_idx` gets bytes [task_idx * per_task, (task_idx + 1) * per_task)
            // of `scratch`, which lie inside it (per_task * n_tasks <= scratch.len()) and are
            // disjoint between tasks; `scratch` is uniquely borrowed for the whole `run`.
            let part = unsafe {
                std::slice::from_raw_parts_mut(scratch_ptr.get().add(task_idx * per_task), per_task)
            };
            if let Err(error) = work(&mut cursor, part) {
                let mut slot = first_error
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                slot.get_or_insert(error);
            }
        };
        pool.run(n_tasks, &task);
        match first_error
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner())
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

struct ScratchPtr(*mut u8);

impl ScratchPtr {
    fn get(&self) -> *mut u8 {
        self.0
    }
}

// SAFETY: the pointer is only turned into disjoint per-task slices in `DstTiles::run`.
unsafe impl Sync for ScratchPtr {}

/// One task's view of a [`DstTiles`]: the items it may write.
pub struct TileCursor<'t, T> {
    tiles: &'t DstTiles<'t, T>,
    items: Range<usize>,
    borrow: PhantomData<&'t mut T>,
}

impl<T: Copy + Send> TileCursor<'_, T> {
    /// The items this cursor covers.
    pub fn items(&self) -> Range<usize> {
        self.items.clone()
    }

    /// The writer for `item`; `outer_index` receives the item's outer multi-index (its first
    /// `n_outer` entries). Panics if `item` is outside [`TileCursor::items`].
    pub fn tile(&mut self, item: usize, outer_index: &mut [usize; MAX_RANK]) -> TileMut<'_, T> {
        assert!(
            self.items.contains(&item),
            "tile item {item} outside the cursor's range {:?}",
            self.items
        );
        let tiles = self.tiles;
        let seg_idx = item % tiles.n_segs;
        let mut rest = item / tiles.n_segs;
        let mut base = tiles.offset;
        for d in (0..tiles.n_outer).rev() {
            let n = tiles.outer_shape[d];
            outer_index[d] = rest % n;
            rest /= n;
            base += outer_index[d] * tiles.outer_strides[d];
        }
        let j0 = seg_idx * tiles.seg;
        let j1 = (j0 + tiles.seg).min(tiles.inner_numel);
        TileMut {
            tiles,
            base,
            j0,
            len: j1 - j0,
            borrow: PhantomData,
        }
    }
}

/// Write access to one item's (segment of the) inner box, flattened row-major.
pub struct TileMut<'c, T> {
    tiles: &'c DstTiles<'c, T>,
    base: usize,
    j0: usize,
    len: usize,
    borrow: PhantomData<&'c mut T>,
}

impl<T: Copy + Send> TileMut<'_, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tile is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flat inner index of the tile's first element (non-zero for later segments of a row).
    pub fn start(&self) -> usize {
        self.j0
    }

    fn element_offset(&self, j: usize) -> usize {
        let tiles = self.tiles;
        if tiles.n_inner == 1 {
            return self.base + j * tiles.inner_strides[0];
        }
        let mut rest = j;
        let mut offset = self.base;
        for d in (0..tiles.n_inner).rev() {
            let n = tiles.inner_shape[d];
            offset += (rest % n) * tiles.inner_strides[d];
            rest /= n;
        }
        offset
    }

    /// The tile as a slice, when its elements are consecutive in memory.
    pub fn contiguous(&mut self) -> Option<&mut [T]> {
        if !self.tiles.inner_contiguous {
            return None;
        }
        let start = self.base + self.j0;
        // SAFETY: the inner box is contiguous, so this tile's elements are exactly
        // [start, start + len), inside the buffer (checked in `DstTiles::new`), and belong to
        // this item only (injective layout); the cursor that made this tile is mutably
        // borrowed for its lifetime and cursors cover disjoint items.
        Some(unsafe { std::slice::from_raw_parts_mut(self.tiles.ptr.add(start), self.len) })
    }

    /// Writes element `j` (relative to the tile's start). Panics if `j >= len()`.
    #[inline]
    pub fn set(&mut self, j: usize, value: T) {
        assert!(j < self.len, "tile element {j} out of {}", self.len);
        let offset = self.element_offset(self.j0 + j);
        // SAFETY: `offset` is the offset of an element of this tile (j < len), inside the
        // buffer and owned by this item alone (see `contiguous`).
        unsafe { self.tiles.ptr.add(offset).write(value) }
    }

    /// Writes `values` (exactly `len()` of them) into the tile.
    pub fn write_all(&mut self, values: &[T]) {
        assert_eq!(values.len(), self.len, "tile write length");
        self.write_at(0, values);
    }

    /// Writes `values` to elements `j..j + values.len()` of the tile. Panics if that range
    /// leaves the tile.
    pub fn write_at(&mut self, j: usize, values: &[T]) {
        assert!(
            j + values.len() <= self.len,
            "tile write {j}+{} out of {}",
            values.len(),
            self.len
        );
        if let Some(out) = self.contiguous() {
            out[j..j + values.len()].copy_from_slice(values);
            return;
        }
        if self.tiles.n_inner == 1 {
            let stride = self.tiles.inner_strides[0];
            let start = self.base + (self.j0 + j) * stride;
            for (k, &value) in values.iter().enumerate() {
                // SAFETY: as in `set`: element j + k < len of this tile, inside the buffer,
                // owned by this item.
                unsafe { self.tiles.ptr.add(start + k * stride).write(value) }
            }
            return;
        }
        for (k, &value) in values.iter().enumerate() {
            self.set(j + k, value);
        }
    }
}

/// A read-only slice of GEMM input elements.
#[derive(Clone, Copy, Debug)]
pub enum GemmSrc<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
}

/// A writable slice of GEMM output elements.
#[derive(Debug)]
pub enum GemmDst<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// f16 elements.
    F16(&'a mut [f16]),
}

/// A batch of strided matrices inside a slice: element `(i, r, c)` is at
/// `offset + i·batch_stride + r·row_stride + c·col_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mat3 {
    /// Offset of element (0, 0, 0).
    pub offset: usize,
    /// Batch entries.
    pub batch: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements between batch entries (0 broadcasts).
    pub batch_stride: usize,
    /// Elements between rows.
    pub row_stride: usize,
    /// Elements between columns.
    pub col_stride: usize,
}

impl Mat3 {
    /// The transposed matrices (rows and columns, and their strides, swapped).
    pub fn t(self) -> Mat3 {
        Mat3 {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn dims(&self) -> [(usize, usize); 3] {
        [
            (self.batch, self.batch_stride),
            (self.rows, self.row_stride),
            (self.cols, self.col_stride),
        ]
    }

    fn numel(&self) -> usize {
        self.batch * self.rows * self.cols
    }

    /// One past the largest offset touched.
    fn end(&self) -> usize {
        self.offset
            + self
                .dims()
                .iter()
                .map(|&(n, s)| n.saturating_sub(1) * s)
                .sum::<usize>()
            + 1
    }

    pub(crate) fn is_injective(&self) -> bool {
        let mut dims = self.dims();
        dims.sort_unstable_by_key(|&(_, s)| s);
        let mut span = 0usize;
        for (n, s) in dims {
            if n > 1 {
                if s <= span {
                    return false;
                }
                span += s * (n - 1);
            }
        }
        true
    }
}

/// The GEMM destination view of `c_mat` inside `c`; panics (a planner invariant) when the
/// view reaches past the slice.
fn destination_view(c: GemmDst<'_>, c_mat: Mat3) -> MatMut {
    let c_len = match &c {
        GemmDst::F32(data) => data.len(),
        GemmDst::F16(data) => data.len(),
    };
    assert!(
        c_mat.end() <= c_len,
        "gemm destination {c_mat:?} reaches past its {c_len} elements"
    );
    let c_ptr = match c {
        // SAFETY: in bounds as checked above.
        GemmDst::F32(data) => OutPtr::F32(unsafe { data.as_mut_ptr().add(c_mat.offset) }),
        // SAFETY: in bounds as checked above.
        GemmDst::F16(data) => OutPtr::F16(unsafe { data.as_mut_ptr().add(c_mat.offset) }),
    };
    MatMut {
        ptr: c_ptr,
        rows: c_mat.rows,
        cols: c_mat.cols,
        row_stride: c_mat.row_stride as isize,
        col_stride: c_mat.col_stride as isize,
    }
}

/// `C[i] (+)= A[i] · B[i]` for `i` in the batch, each operand a [`Mat3`] into its slice (A's and
/// B's batch strides may be 0 to broadcast). Checks every footprint and that C is injective,
/// then calls linalg's GEMM. Panics on a violated planner invariant.
#[allow(
    clippy::too_many_arguments,
    reason = "three operands, each a slice and its view"
)]
pub fn gemm(
    spec: &GemmSpec,
    pool: &Pool,
    a: GemmSrc<'_>,
    a_mat: Mat3,
    b: GemmSrc<'_>,
    b_mat: Mat3,
    c: GemmDst<'_>,
    c_mat: Mat3,
) {
    assert!(
        a_mat.batch == c_mat.batch && b_mat.batch == c_mat.batch,
        "gemm batch sizes differ"
    );
    assert!(c_mat.is_injective(), "gemm destination overlaps itself");
    if c_mat.numel() == 0 {
        return;
    }
    let src_ptr = |src: GemmSrc<'_>, mat: Mat3| -> ElemPtr {
        let len = match src {
            GemmSrc::F32(data) => data.len(),
            GemmSrc::F16(data) => data.len(),
        };
        assert!(
            mat.numel() == 0 || mat.end() <= len,
            "gemm operand {mat:?} reaches past its {len} elements"
        );
        match src {
            // SAFETY: `mat.offset < mat.end() <= len`, so the offset pointer is in bounds.
            GemmSrc::F32(data) => ElemPtr::F32(unsafe { data.as_ptr().add(mat.offset) }),
            // SAFETY: as above.
            GemmSrc::F16(data) => ElemPtr::F16(unsafe { data.as_ptr().add(mat.offset) }),
        }
    };
    let view = |ptr: ElemPtr, mat: Mat3| MatRef {
        ptr,
        rows: mat.rows,
        cols: mat.cols,
        row_stride: mat.row_stride as isize,
        col_stride: mat.col_stride as isize,
    };
    let a_ref = view(src_ptr(a, a_mat), a_mat);
    let b_ref = view(src_ptr(b, b_mat), b_mat);
    let c_mut = destination_view(c, c_mat);
    // SAFETY: every element of A, B (read) and C (read/write) lies inside its slice (footprints
    // checked above); C is injective and uniquely borrowed, so it overlaps neither A nor B
    // (shared borrows) and no other thread touches it during the call.
    unsafe {
        gemm::gemm_batched(
            spec,
            pool,
            c_mat.batch,
            a_ref,
            a_mat.batch_stride as isize,
            b_ref,
            b_mat.batch_stride as isize,
            c_mut,
            c_mat.batch_stride as isize,
        )
    }
}

fn src_len(src: GemmSrc<'_>) -> usize {
    match src {
        GemmSrc::F32(data) => data.len(),
        GemmSrc::F16(data) => data.len(),
    }
}

/// The single matrix `mat` (its batch is ignored) of `src` as a linalg view, after checking
/// its footprint against the slice.
fn matrix_view(src: GemmSrc<'_>, mat: Mat3) -> MatRef {
    let len = src_len(src);
    let single = Mat3 { batch: 1, ..mat };
    assert!(
        single.numel() == 0 || single.end() <= len,
        "packed operand {mat:?} reaches past its {len} elements"
    );
    let ptr = match src {
        // In bounds (`offset < end <= len`, checked above), or an empty view whose pointer is
        // never read through; `wrapping_add` keeps the latter a plain value.
        GemmSrc::F32(data) => ElemPtr::F32(data.as_ptr().wrapping_add(mat.offset)),
        GemmSrc::F16(data) => ElemPtr::F16(data.as_ptr().wrapping_add(mat.offset)),
    };
    MatRef {
        ptr,
        rows: mat.rows,
        cols: mat.cols,
        row_stride: mat.row_stride as isize,
        col_stride: mat.col_stride as isize,
    }
}

/// Packs the matrix `mat` of `src` (one matrix: `mat.batch` is ignored) into the panel layout
/// of `spec`'s kernel, on `pool`. Panics if the view reaches past `src` or the host lacks the
/// tier (planner and caller invariants).
pub fn pack_b(spec: &GemmSpec, pool: &Pool, src: GemmSrc<'_>, mat: Mat3) -> PackedB {
    let view = matrix_view(src, mat);
    // SAFETY: every element of the view lies inside `src` (checked by `matrix_view`), which is
    // borrowed shared for the whole call, so nobody writes it meanwhile.
    unsafe { PackedB::pack_with(spec, pool, view) }
}

/// Repacks `packed` from the matrix `mat` of `src` (same shape as packed). Panics as
/// [`pack_b`] does, and when the shape differs.
pub fn repack_b(packed: &mut PackedB, pool: &Pool, src: GemmSrc<'_>, mat: Mat3) {
    let view = matrix_view(src, mat);
    // SAFETY: as in `pack_b`.
    unsafe { packed.repack_with(pool, view) }
}

/// Converts the matrix `mat` of the f32 `values` into the same positions of the fp16 `copy`
/// (round to nearest even) and repacks `packed` from the copy, in one parallel sweep
/// (linalg's `repack_converting_with`). Panics if `mat` reaches past either slice, is not
/// injective, or its shape differs from the packed one.
pub fn repack_b_converting(
    packed: &mut PackedB,
    pool: &Pool,
    values: &[f32],
    copy: &mut [f16],
    mat: Mat3,
) {
    let (view, copy_view) = converting_views(values, copy, mat);
    // SAFETY: both views lie inside their slices (checked by `matrix_view`); `copy` is
    // uniquely borrowed (so distinct from `values` and untouched by anyone else) and its view
    // is injective (checked in `converting_views`), so its elements are distinct.
    unsafe { packed.repack_converting_with(pool, view, copy_view) }
}

/// The f32 source view and the writable f16 copy view of `mat`, for a converting repack.
/// Panics if `mat` reaches past either slice or is not injective.
fn converting_views(values: &[f32], copy: &mut [f16], mat: Mat3) -> (MatRef, MatMut) {
    let single = Mat3 { batch: 1, ..mat };
    assert!(
        single.is_injective(),
        "converting repack: the view {mat:?} overlaps itself"
    );
    let view = matrix_view(GemmSrc::F32(values), mat);
    let copy_ref = matrix_view(GemmSrc::F16(copy), mat);
    let ElemPtr::F16(copy_ptr) = copy_ref.ptr else {
        unreachable!("an f16 source gives an f16 view")
    };
    let copy_view = MatMut {
        ptr: OutPtr::F16(copy_ptr.cast_mut()),
        rows: copy_ref.rows,
        cols: copy_ref.cols,
        row_stride: copy_ref.row_stride,
        col_stride: copy_ref.col_stride,
    };
    (view, copy_view)
}

/// Packs the matrix `mat` of `src` (one matrix: `mat.batch` is ignored) as the left operand
/// of `spec`'s kernel ([`PackedA`]), on `pool`. Panics as [`pack_b`] does.
pub fn pack_a(spec: &GemmSpec, pool: &Pool, src: GemmSrc<'_>, mat: Mat3) -> PackedA {
    let view = matrix_view(src, mat);
    // SAFETY: every element of the view lies inside `src` (checked by `matrix_view`), which is
    // borrowed shared for the whole call, so nobody writes it meanwhile.
    unsafe { PackedA::pack_with(spec, pool, view) }
}

/// Repacks `packed` from the matrix `mat` of `src` (same shape as packed). Panics as
/// [`pack_a`] does, and when the shape differs.
pub fn repack_a(packed: &mut PackedA, pool: &Pool, src: GemmSrc<'_>, mat: Mat3) {
    let view = matrix_view(src, mat);
    // SAFETY: as in `pack_a`.
    unsafe { packed.repack_with(pool, view) }
}

/// [`repack_b_converting`] for a packed left operand: converts the matrix `mat` of `values`
/// into the same positions of `copy` and repacks `packed` from the copy in one sweep.
pub fn repack_a_converting(
    packed: &mut PackedA,
    pool: &Pool,
    values: &[f32],
    copy: &mut [f16],
    mat: Mat3,
) {
    let (view, copy_view) = converting_views(values, copy, mat);
    // SAFETY: as in `repack_b_converting`.
    unsafe { packed.repack_converting_with(pool, view, copy_view) }
}

/// `C[i] (+)= A · B[i]` for `i` in the batch, with A already packed ([`pack_a`]) for `spec`'s
/// kernel. Checks B's and C's footprints and C's injectivity as [`gemm()`] does. Panics on a
/// violated planner invariant (including A packed for another kernel or shape).
pub fn gemm_packed_a(
    spec: &GemmSpec,
    pool: &Pool,
    a: &PackedA,
    b: GemmSrc<'_>,
    b_mat: Mat3,
    c: GemmDst<'_>,
    c_mat: Mat3,
) {
    assert!(b_mat.batch == c_mat.batch, "gemm batch sizes differ");
    assert!(c_mat.is_injective(), "gemm destination overlaps itself");
    if c_mat.numel() == 0 {
        return;
    }
    let b_len = src_len(b);
    assert!(
        b_mat.numel() == 0 || b_mat.end() <= b_len,
        "gemm operand {b_mat:?} reaches past its {b_len} elements"
    );
    let b_ref = matrix_view(b, b_mat);
    let c_mut = destination_view(c, c_mat);
    // SAFETY: every element of every batch entry of B (read) and C (read/write) lies inside
    // its slice (footprints checked above); C is injective and uniquely borrowed, so it
    // overlaps neither B nor the panels (shared borrows) and nobody else touches it.
    unsafe {
        gemm::gemm_batched_packed_a(
            spec,
            pool,
            c_mat.batch,
            a,
            b_ref,
            b_mat.batch_stride as isize,
            c_mut,
            c_mat.batch_stride as isize,
        )
    }
}

/// `C[i] (+)= A[i] · B` for `i` in the batch, with B already packed ([`pack_b`]) for `spec`'s
/// kernel. Checks A's and C's footprints and C's injectivity as [`gemm()`] does. Panics on a
/// violated planner invariant (including B packed for another kernel or shape).
pub fn gemm_packed(
    spec: &GemmSpec,
    pool: &Pool,
    a: GemmSrc<'_>,
    a_mat: Mat3,
    b: &PackedB,
    c: GemmDst<'_>,
    c_mat: Mat3,
) {
    assert!(a_mat.batch == c_mat.batch, "gemm batch sizes differ");
    assert!(c_mat.is_injective(), "gemm destination overlaps itself");
    if c_mat.numel() == 0 {
        return;
    }
    let a_len = src_len(a);
    assert!(
        a_mat.numel() == 0 || a_mat.end() <= a_len,
        "gemm operand {a_mat:?} reaches past its {a_len} elements"
    );
    let a_ref = matrix_view(a, a_mat);
    let c_mut = destination_view(c, c_mat);
    // SAFETY: every element of every batch entry of A (read) and C (read/write) lies inside
    // its slice (footprints checked above); C is injective and uniquely borrowed, so it
    // overlaps neither A nor the panels (shared borrows) and nobody else touches it.
    unsafe {
        gemm::gemm_batched_packed_b(
            spec,
            pool,
            c_mat.batch,
            a_ref,
            a_mat.batch_stride as isize,
            b,
            c_mut,
            c_mat.batch_stride as isize,
        )
    }
}

/// A global allocator that counts allocations (for tests asserting that a path allocates
/// nothing): install it with `#[global_allocator]` in a test binary, then compare
/// [`CountingAlloc::allocations`] before and after.
#[derive(Debug, Default)]
pub struct CountingAlloc {
    allocations: std::sync::atomic::AtomicUsize,
}

impl CountingAlloc {
    /// A counter at zero.
    pub const fn new() -> CountingAlloc {
        CountingAlloc {
            allocations: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Allocations and reallocations so far.
    pub fn allocations(&self) -> usize {
        self.allocations.load(std::sync::atomic::Ordering::SeqCst)
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter is an atomic side effect only.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        self.allocations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: forwarded to the caller (GlobalAlloc::alloc's contract).
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        self.allocations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: forwarded to the caller (GlobalAlloc::alloc_zeroed's contract).
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded to the caller (GlobalAlloc::dealloc's contract).
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        self.allocations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: forwarded to the caller (GlobalAlloc::realloc's contract).
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_write_disjoint_strided_rows_in_parallel() {
        let pool = Pool::new(2);
        let mut data = vec![0u32; 12];
        // A transposed [3, 4] destination: element (r, c) at c * 3 + r.
        let layout = Layout::dense(&[4, 3]).transpose(&[1, 0]);
        let tiles = DstTiles::new(&mut data, &layout, 1, 4);
        assert_eq!(tiles.n_items(), 3);
        tiles
            .run(&pool, 2, &mut [], &|cursor, _| {
                let mut idx = [0; MAX_RANK];
                for item in cursor.items() {
                    let mut tile = cursor.tile(item, &mut idx);
                    assert!(tile.contiguous().is_none());
                    let row = idx[0] as u32;
                    tile.write_all(&[row * 10, row * 10 + 1, row * 10 + 2, row * 10 + 3]);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(data, vec![0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]);
    }

    #[test]
    fn segments_split_long_rows_and_errors_propagate() {
        let pool = Pool::new(2);
        let mut data = vec![0u8; 10];
        let tiles = DstTiles::new(&mut data, &Layout::dense(&[10]), 1, 3);
        assert_eq!(tiles.n_items(), 4);
        let mut scratch = vec![0u8; 256];
        let result = tiles.run(&pool, 2, &mut scratch, &|cursor, scratch| {
            assert_eq!(scratch.len(), 128);
            let mut idx = [0; MAX_RANK];
            for item in cursor.items() {
                let mut tile = cursor.tile(item, &mut idx);
                let start = tile.start();
                for (j, out) in tile.contiguous().unwrap().iter_mut().enumerate() {
                    *out = (start + j) as u8;
                }
            }
            Err(KernelError::GatherIndex { index: -1, size: 0 })
        });
        assert!(result.is_err());
        assert_eq!(data, (0..10).collect::<Vec<u8>>());
    }
}
