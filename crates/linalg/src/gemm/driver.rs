//! The blocking driver shared by every microkernel: work split, packing, tile loop, edges.
//!
//! For a problem `m × n × k` (per batch entry) with a kernel `MR × NR`:
//!
//! 1. [`Plan`]: `kc` splits the padded k evenly into blocks of at most `K::KC`; C is cut into
//!    work items of `mc × nc` (at most `K::MC × K::NC`), split further when there are fewer
//!    items than threads and the product is big enough to be worth a dispatch.
//! 2. When more than one item shares a row block (several column blocks), A is packed once,
//!    in parallel, into a shared buffer of full-depth panels (phase A). Otherwise each item
//!    packs its own A panels per `kc` block into per-thread scratch. A
//!    [`PackedA`](crate::gemm::PackedA) (`ASource::Packed`) *is* that shared buffer, packed
//!    beforehand by the same code: phase A and all per-item A packing are skipped, and since
//!    the blocking is unchanged the result is bit-for-bit that of the raw A.
//!    Likewise a raw B read by several row blocks is packed once, in parallel, into a shared
//!    buffer of full-depth panels (as if it were a [`PackedB`](crate::gemm::PackedB)); a
//!    broadcast operand (batch stride 0) is packed once for all batch entries.
//! 3. Each item (phase B) runs in its kernel's loop order:
//!    * f32 kernels (`B_OUTER = false`), for each `kc` block: pack its B panels (unless
//!      shared or packed), then run the microkernel over its tiles, A panel outer (kept in
//!      L1), B panels inner (streamed from L2, prefetched a few steps ahead). Full tiles of
//!      an f32, unit-column-stride C are written in place when one `kc` block covers k;
//!      other tiles, and partial sums between blocks, go through a scratch whose row pitch
//!      is an odd number of cache lines (a power-of-two C pitch would put a tile's rows in
//!      one L1 set), merged into C (converted to f16, added for `accumulate`) at the end.
//!    * the AMX kernel (`B_OUTER = true`): for each B panel, every `kc` block down all the
//!      item's A panels into the item's scratch C block, prefetching the next packed B panel
//!      into L2; the block is merged into C once, in long rows. See `run_item_b_outer`.
//!
//! Scratch buffers are thread-local and only grow, so steady-state calls don't allocate.
#![allow(
    unsafe_code,
    reason = "raw panel and tile pointers of the blocking driver"
)]

use std::cell::Cell;

use half::f16;

use super::kernels::{MicroKernel, PanelSrc};
use super::{ElemPtr, MatMut, MatRef, OutPtr};
use crate::convert;
use crate::pool::Pool;

mod tile_loop;
pub(crate) use tile_loop::TileLoop;

/// Products below this many flops are not split to create parallelism.
const PARALLEL_MIN_FLOPS: f64 = (1 << 21) as f64;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Line")
    }
}

/// A growable, 64-byte aligned byte buffer (packed panels, C scratch).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("bytes", &(self.lines.len() * 64))
            .finish()
    }
}

impl AlignedBuf {
    /// Grows to at least `bytes` and returns the start, typed.
    fn ensure<T>(&mut self, bytes: usize) -> *mut T {
        let lines = bytes.div_ceil(64);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line([0; 64]));
        }
        self.lines.as_mut_ptr().cast()
    }

    fn as_ptr<T>(&self) -> *const T {
        self.lines.as_ptr().cast()
    }
}

/// Where A comes from.
#[derive(Clone, Copy)]
pub(crate) enum ASource<'a> {
    /// A strided view, packed per call (phase A or per work item).
    Raw {
        /// The view of batch entry 0.
        view: MatRef,
        /// Elements between batch entries.
        batch_stride: isize,
    },
    /// Full-depth panels packed by `PackedA` (exactly phase A's shared buffer): panel `i`
    /// holds rows `i*MR..` for all `k_pad`, at `i * MR * k_pad`. One matrix, broadcast to
    /// every batch entry.
    Packed {
        /// The panels.
        data: &'a AlignedBuf,
        /// Rows of A.
        m: usize,
        /// Columns of A (the shared dimension).
        k: usize,
        /// Padded depth of each panel.
        k_pad: usize,
    },
}

impl ASource<'_> {
    /// Rows and columns of A.
    pub(crate) fn dims(&self) -> (usize, usize) {
        match *self {
            ASource::Raw { view, .. } => (view.rows, view.cols),
            ASource::Packed { m, k, .. } => (m, k),
        }
    }
}

/// Where B comes from.
#[derive(Clone, Copy)]
pub(crate) enum BSource<'a> {
    /// A strided view, packed per work item.
    Raw {
        /// The view of batch entry 0.
        view: MatRef,
        /// Elements between batch entries.
        batch_stride: isize,
    },
    /// Panels packed by `PackedB`: panel `j` holds columns `j*NR..` for all `k_pad`.
    Packed {
        /// The panels.
        data: &'a AlignedBuf,
        /// Padded depth of each panel.
        k_pad: usize,
    },
}

/// A validated problem.
pub(crate) struct Problem<'a> {
    pub(crate) batch: usize,
    pub(crate) a: ASource<'a>,
    pub(crate) b: BSource<'a>,
    pub(crate) c: MatMut,
    pub(crate) c_batch_stride: isize,
    pub(crate) accumulate: bool,
}

#[derive(Default)]
struct Scratch {
    a: AlignedBuf,
    b: AlignedBuf,
    c: AlignedBuf,
}

thread_local! {
    /// Per-thread packing and C scratch, taken for the duration of a work item.
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
    /// The dispatching thread's shared packed-A buffer.
    static SHARED_A: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
    /// The dispatching thread's shared packed-B buffer (a raw B used by several row blocks).
    static SHARED_B: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
    /// Products run on this thread that packed B from a raw view (see
    /// [`raw_b_products_on_this_thread`](crate::gemm::raw_b_products_on_this_thread)).
    pub(crate) static RAW_B_PRODUCTS: Cell<u64> = const { Cell::new(0) };
    /// Products run on this thread that packed A from a raw view (see
    /// [`raw_a_products_on_this_thread`](crate::gemm::raw_a_products_on_this_thread)).
    pub(crate) static RAW_A_PRODUCTS: Cell<u64> = const { Cell::new(0) };
}

/// Blocking of one problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    m: usize,
    n: usize,
    k: usize,
    k_pad: usize,
    kc: usize,
    n_kb: usize,
    mc: usize,
    nc: usize,
    m_blocks: usize,
    n_blocks: usize,
    /// Items read full-depth A panels from `Ctx::shared_a` (phase A's output, or a packed A)
    /// instead of packing their own.
    shared_a: bool,
}

fn plan<K: MicroKernel>(batch: usize, m: usize, n: usize, k: usize, threads: usize) -> Plan {
    let k_pad = k.next_multiple_of(K::KU);
    let n_kb = k_pad.div_ceil(K::KC).max(1);
    let kc = k_pad.div_ceil(n_kb).next_multiple_of(K::KU);
    let m_panels = m.div_ceil(K::MR);
    let n_panels = n.div_ceil(K::NR);
    let mut m_blocks = m_panels.div_ceil(K::MC / K::MR);
    let mut n_blocks = n_panels.div_ceil(K::NC / K::NR);
    let flops = 2.0 * m as f64 * n as f64 * k as f64 * batch as f64;
    let items = batch * m_blocks * n_blocks;
    if threads > 1 && flops >= PARALLEL_MIN_FLOPS && items < 4 * threads {
        let goal = items.max(threads).next_multiple_of(threads);
        while batch * m_blocks * n_blocks < goal {
            let n_room = n_blocks < n_panels;
            let m_room = m_blocks < m_panels;
            if n_room && (!m_room || n_panels / n_blocks >= m_panels / m_blocks) {
                n_blocks += 1;
            } else if m_room {
                m_blocks += 1;
            } else {
                break;
            }
        }
    }
    let mc = m_panels.div_ceil(m_blocks) * K::MR;
    let nc = n_panels.div_ceil(n_blocks) * K::NR;
    let m_blocks = m.div_ceil(mc);
    let n_blocks = n.div_ceil(nc);
    Plan {
        m,
        n,
        k,
        k_pad,
        kc,
        n_kb,
        mc,
        nc,
        m_blocks,
        n_blocks,
        shared_a: n_blocks > 1,
    }
}

/// Shared, read-only state of one `run`, handed to pool tasks.
struct Ctx<'a, K: MicroKernel> {
    problem: &'a Problem<'a>,
    plan: Plan,
    /// Full-depth A panels (when `plan.shared_a`): `m_panels` panels of `MR × k_pad`, phase
    /// A's output or a [`PackedA`](crate::gemm::PackedA)'s panels.
    shared_a: *const K::Elem,
    /// Full-depth B panels of the current batch entry, `(base, padded depth)`: a
    /// [`PackedB`](crate::gemm::PackedB), or a raw B packed once for all row blocks. `None`:
    /// each item packs its own panels from the raw view.
    packed_b: Option<(*const K::Elem, usize)>,
}

// SAFETY: a `Ctx` only carries the caller's views and a scratch pointer. Tasks write through
// them only to disjoint regions (distinct A panels in phase A, distinct C tiles in phase B),
// and `gemm`'s contract says nobody else touches those memories during the call.
unsafe impl<K: MicroKernel> Sync for Ctx<'_, K> {}

impl<K: MicroKernel> Ctx<'_, K> {
    /// The raw A view of batch entry `batch_idx` (only called when `plan.shared_a` is unset).
    fn raw_a(&self, batch_idx: usize) -> MatRef {
        match self.problem.a {
            ASource::Raw { view, batch_stride } => {
                shift_ref(view, batch_idx as isize * batch_stride)
            }
            ASource::Packed { .. } => {
                unreachable!("invariant: a packed A always sets Plan::shared_a")
            }
        }
    }

    /// The raw B view and its batch stride (only called when `packed_b` is `None`).
    fn raw_b(&self) -> (MatRef, isize) {
        match self.problem.b {
            BSource::Raw { view, batch_stride } => (view, batch_stride),
            BSource::Packed { .. } => {
                unreachable!("invariant: a packed B always sets Ctx::packed_b")
            }
        }
    }

    /// Phase A: packs A panel `panel_idx` of batch entry `batch_idx`, full depth.
    ///
    /// # Safety
    /// As for [`run`]; `panel_idx` < `m.div_ceil(MR)`; `shared_a` is the (writable) phase A
    /// buffer sized for all panels.
    unsafe fn pack_shared_panel(&self, batch_idx: usize, panel_idx: usize) {
        let plan = self.plan;
        // SAFETY: forwarded; the buffer came from `AlignedBuf::ensure` (writable) in `run`.
        unsafe {
            pack_full_depth_a_panel::<K>(
                self.raw_a(batch_idx),
                panel_idx,
                plan.m,
                plan.k,
                plan.k_pad,
                self.shared_a.cast_mut(),
            )
        }
    }
}

/// Packs A panel `panel_idx` (rows `panel_idx·MR..`, all of k) of `a` (`m × k`) into the
/// full-depth panel buffer at `dst` (panel `i` at `i · MR · k_pad`): the layout of phase A's
/// shared buffer and of a [`PackedA`](crate::gemm::PackedA).
///
/// # Safety
/// `a` readable for `m × k`; `panel_idx` < `m.div_ceil(MR)`; `dst` writable for all panels and
/// no other thread writes panel `panel_idx`; the host supports `K`'s tier.
unsafe fn pack_full_depth_a_panel<K: MicroKernel>(
    a: MatRef,
    panel_idx: usize,
    m: usize,
    k: usize,
    k_pad: usize,
    dst: *mut K::Elem,
) {
    let row = panel_idx * K::MR;
    let rows = K::MR.min(m - row);
    // SAFETY: rows `row..row + rows` × k `0..k` are inside A; the destination panel is inside
    // the buffer; the caller gives each panel to one task.
    unsafe {
        K::pack_a(
            a_panel_src(a, row, 0),
            rows,
            k,
            dst.add(panel_idx * K::MR * k_pad),
        )
    }
}

fn shift_ref(view: MatRef, elems: isize) -> MatRef {
    let ptr = match view.ptr {
        ElemPtr::F32(ptr) => ElemPtr::F32(ptr.wrapping_offset(elems)),
        ElemPtr::F16(ptr) => ElemPtr::F16(ptr.wrapping_offset(elems)),
    };
    MatRef { ptr, ..view }
}

fn shift_mut(view: MatMut, elems: isize) -> MatMut {
    let ptr = match view.ptr {
        OutPtr::F32(ptr) => OutPtr::F32(ptr.wrapping_offset(elems)),
        OutPtr::F16(ptr) => OutPtr::F16(ptr.wrapping_offset(elems)),
    };
    MatMut { ptr, ..view }
}

/// The packer's view of an A panel starting at (`row`, `k`).
fn a_panel_src(a: MatRef, row: usize, k: usize) -> PanelSrc {
    let shifted = shift_ref(a, a.offset(row as isize, k as isize));
    PanelSrc {
        ptr: shifted.ptr,
        mn_stride: a.row_stride,
        k_stride: a.col_stride,
    }
}

/// The packer's view of a B panel starting at (`k`, `col`).
fn b_panel_src(b: MatRef, k: usize, col: usize) -> PanelSrc {
    let shifted = shift_ref(b, b.offset(k as isize, col as isize));
    PanelSrc {
        ptr: shifted.ptr,
        mn_stride: b.col_stride,
        k_stride: b.row_stride,
    }
}

/// Runs a validated problem with kernel `K`.
///
/// # Safety
/// Shapes validated (A `m × k`, B `k × n`, C `m × n`, accumulate ⇒ f32 C); the host supports
/// `K`'s tier; the views are valid and disjoint as `gemm` requires.
pub(crate) unsafe fn run<K: MicroKernel>(pool: &Pool, problem: &Problem<'_>) {
    let ((m, k), n) = (problem.a.dims(), problem.c.cols);
    if m == 0 || n == 0 || problem.batch == 0 {
        return;
    }
    if k == 0 {
        if !problem.accumulate {
            for batch_idx in 0..problem.batch {
                let c = shift_mut(problem.c, batch_idx as isize * problem.c_batch_stride);
                // SAFETY: C is valid and writable per the contract.
                unsafe { zero_c(c) };
            }
        }
        return;
    }
    if matches!(problem.b, BSource::Raw { .. }) {
        RAW_B_PRODUCTS.with(|count| count.set(count.get() + 1));
    }
    let mut plan = plan::<K>(problem.batch, m, n, k, pool.n_threads());
    // A packed A is phase A's output, ready: every item reads its full-depth panels.
    let given_a = match problem.a {
        ASource::Packed { data, k_pad, .. } => {
            debug_assert_eq!(k_pad, plan.k_pad);
            plan.shared_a = true;
            Some(data.as_ptr::<K::Elem>())
        }
        ASource::Raw { .. } => {
            RAW_A_PRODUCTS.with(|count| count.set(count.get() + 1));
            None
        }
    };
    let phase_a = plan.shared_a && given_a.is_none();
    let items_per_batch = plan.m_blocks * plan.n_blocks;
    let given_b = match problem.b {
        BSource::Packed { data, k_pad } => Some((data.as_ptr::<K::Elem>(), k_pad)),
        BSource::Raw { .. } => None,
    };
    // A raw B read by several row blocks is packed once (in parallel) instead of per item —
    // for a single product (or one B broadcast to every entry): a batch of distinct B's
    // would need a dispatch per entry, and small batched products (attention heads) lose
    // more to those barriers than they save.
    let b_broadcast = matches!(
        problem.b,
        BSource::Raw {
            batch_stride: 0,
            ..
        }
    );
    let share_b = given_b.is_none() && plan.m_blocks > 1 && (problem.batch == 1 || b_broadcast);
    if !phase_a && !share_b {
        let ctx = Ctx::<K> {
            problem,
            plan,
            shared_a: given_a.unwrap_or(std::ptr::null()),
            packed_b: given_b,
        };
        pool.run(problem.batch * items_per_batch, &|item| {
            // SAFETY: `item` < batch × items; the contract of `run` holds for every item.
            unsafe { run_any_item(&ctx, item / items_per_batch, item % items_per_batch) }
        });
        return;
    }
    let mut shared_a_buf = SHARED_A.take();
    let mut shared_b_buf = SHARED_B.take();
    let m_panels = m.div_ceil(K::MR);
    let shared_a = match given_a {
        Some(panels) => panels,
        None if phase_a => {
            let panel_elems = K::MR * plan.k_pad;
            shared_a_buf
                .ensure::<K::Elem>(m_panels * panel_elems * size_of::<K::Elem>())
                .cast_const()
        }
        None => std::ptr::null(),
    };
    for batch_idx in 0..problem.batch {
        let packed_b = match (share_b, problem.b) {
            (true, BSource::Raw { view, batch_stride }) => {
                // A broadcast B (stride 0) is packed once for all entries.
                if batch_idx == 0 || batch_stride != 0 {
                    let b = shift_ref(view, batch_idx as isize * batch_stride);
                    // SAFETY: B is readable per the contract; the tier is the caller's.
                    unsafe { pack_b_panels::<K>(pool, b, k, n, plan.k_pad, &mut shared_b_buf) };
                }
                Some((shared_b_buf.as_ptr::<K::Elem>(), plan.k_pad))
            }
            _ => given_b,
        };
        let ctx = Ctx::<K> {
            problem,
            plan,
            shared_a,
            packed_b,
        };
        let a_entry_differs = match problem.a {
            ASource::Raw { batch_stride, .. } => batch_idx == 0 || batch_stride != 0,
            ASource::Packed { .. } => false,
        };
        if phase_a && a_entry_differs {
            pool.run(m_panels, &|panel_idx| {
                // SAFETY: `panel_idx` < m_panels; the contract of `run` holds.
                unsafe { ctx.pack_shared_panel(batch_idx, panel_idx) }
            });
        }
        pool.run(items_per_batch, &|item| {
            // SAFETY: as above; the shared panels were completed by the previous `run`s.
            unsafe { run_any_item(&ctx, batch_idx, item) }
        });
    }
    SHARED_A.set(shared_a_buf);
    SHARED_B.set(shared_b_buf);
}

/// Runs work item `item` of batch entry `batch_idx` in the kernel's loop order.
///
/// # Safety
/// As for [`run_item`].
unsafe fn run_any_item<K: MicroKernel>(ctx: &Ctx<'_, K>, batch_idx: usize, item: usize) {
    if K::B_OUTER {
        // SAFETY: forwarded.
        unsafe { run_item_b_outer(ctx, batch_idx, item) }
    } else {
        // SAFETY: forwarded.
        unsafe { run_item(ctx, batch_idx, item) }
    }
}

/// Computes one `mc × nc` block of C, B panel outer and A panels inner: for each `NR`-column
/// panel, every `kc` block runs the kernel down all the item's A panels into an f32 scratch
/// block (the item's `mc × nc`, 64-byte aligned, stored panel-major so each tile is a compact
/// 32 × `NR` run), which is merged into C once, in whole rows, at the end: C's pitch is
/// often a power of two, and strip-wise writes would put every row in one L1 set. While it works on one packed B panel the kernel
/// prefetches the next one into L2: call `tile_m` of a `kc` block prefetches slice
/// `tile_m % 8` of that block.
///
/// # Safety
/// As for [`run`]; `item` < `m_blocks × n_blocks`.
unsafe fn run_item_b_outer<K: MicroKernel>(ctx: &Ctx<'_, K>, batch_idx: usize, item: usize) {
    const PREFETCH_SLICES: usize = 8;
    let plan = ctx.plan;
    let problem = ctx.problem;
    let (mr, nr) = (K::MR, K::NR);
    let elem = size_of::<K::Elem>();
    let c = shift_mut(problem.c, batch_idx as isize * problem.c_batch_stride);
    let m0 = item / plan.n_blocks * plan.mc;
    let n0 = item % plan.n_blocks * plan.nc;
    let m_len = plan.mc.min(plan.m - m0);
    let n_len = plan.nc.min(plan.n - n0);
    let m_tiles = m_len.div_ceil(mr);
    let n_tiles = n_len.div_ceil(nr);

    let mut scratch = SCRATCH.take();
    // A panels of this item, full depth: the shared buffer (offset by the item's first panel)
    // or local scratch packed here.
    let a_panels: *const K::Elem = if plan.shared_a {
        // SAFETY: panel m0 / MR of the shared buffer.
        unsafe { ctx.shared_a.add(m0 / mr * mr * plan.k_pad) }
    } else {
        let a = ctx.raw_a(batch_idx);
        let local = scratch
            .a
            .ensure::<K::Elem>(m_tiles * mr * plan.k_pad * elem);
        for tile_m in 0..m_tiles {
            let row = m0 + tile_m * mr;
            // SAFETY: rows `row..row + rows` × k `0..k` are inside A; the panel fits the
            // scratch sized for `m_tiles` full-depth panels.
            unsafe {
                K::pack_a(
                    a_panel_src(a, row, 0),
                    mr.min(plan.m - row),
                    plan.k,
                    local.add(tile_m * mr * plan.k_pad),
                );
            }
        }
        local
    };
    let b_local = match ctx.packed_b {
        None => scratch.b.ensure::<K::Elem>(nr * plan.k_pad * elem),
        Some(_) => std::ptr::null_mut(),
    };
    // The C block is stored panel-major: the strip of panel `tile_n` is `m_rows × NR`
    // contiguous f32 (row pitch NR: a tile's rows are back to back), so the kernel's tile
    // stores stay compact; the merge reads the strips and writes C in whole rows.
    let m_rows = m_tiles * mr;
    let c_block = scratch.c.ensure::<f32>(n_tiles * m_rows * nr * 4);

    // SAFETY: the session is created for the tier the caller guarantees.
    let session = unsafe { K::begin() };
    for tile_n in 0..n_tiles {
        let col = n0 + tile_n * nr;
        let cols = nr.min(n_len - tile_n * nr);
        let (b_panel, b_k_pad, next_panel): (*const K::Elem, usize, *const K::Elem) =
            match ctx.packed_b {
                None => {
                    let (view, batch_stride) = ctx.raw_b();
                    let b = shift_ref(view, batch_idx as isize * batch_stride);
                    // SAFETY: k `0..k` × columns `col..col + cols` are inside B; the panel
                    // fits the scratch sized for one full-depth panel.
                    unsafe { K::pack_b(b_panel_src(b, 0, col), cols, plan.k, b_local) };
                    (b_local, plan.k_pad, b_local)
                }
                Some((base, k_pad)) => {
                    let panel_idx = n0 / nr + tile_n;
                    // Prefetch the next panel of this item, or (at the item's end) this one
                    // again, which is harmless. `wrapping_add`: only ever a hint.
                    let next_idx = if tile_n + 1 < n_tiles {
                        panel_idx + 1
                    } else {
                        panel_idx
                    };
                    (
                        base.wrapping_add(panel_idx * nr * k_pad),
                        k_pad,
                        base.wrapping_add(next_idx * nr * k_pad),
                    )
                }
            };
        for kb in 0..plan.n_kb {
            let k0 = kb * plan.kc;
            let k_len = plan.kc.min(plan.k - k0);
            let k_pad = k_len.next_multiple_of(K::KU);
            let steps = k_pad / K::KU;
            debug_assert!(k0 + k_pad <= b_k_pad);
            for tile_m in 0..m_tiles {
                // SAFETY: panel tile_m of the item's A panels, at depth k0 (inside its k_pad).
                let a_panel = unsafe { a_panels.add((tile_m * plan.k_pad + k0) * mr) };
                // SAFETY: depth k0 of the B panel (k0 + k_pad ≤ its padded depth).
                let b_at = unsafe { b_panel.add(k0 * nr) };
                let prefetch = next_panel.wrapping_add(
                    k0 * nr + tile_m % PREFETCH_SLICES * steps * K::PREFETCH_PER_STEP,
                );
                // SAFETY: the tile lies inside strip `tile_n` of the C block scratch.
                let tile = unsafe { c_block.add((tile_n * m_rows + tile_m * mr) * nr) };
                // SAFETY: panels packed to at least `k_pad` depth from k0; the tile is a
                // writable MR × NR block at row stride NR; the session is live.
                unsafe {
                    K::kernel(
                        &session,
                        k_pad,
                        a_panel,
                        b_at,
                        tile,
                        nr as isize,
                        kb > 0,
                        prefetch,
                    );
                }
            }
        }
    }
    drop(session);
    if c.row_stride == 1 && c.col_stride != 1 {
        // A transposed C (columns contiguous, e.g. the engine's Cᵀ = Bᵀ·Aᵀ form): merge each
        // strip column by column, so C is written in contiguous runs.
        for tile_n in 0..n_tiles {
            let cols = nr.min(n_len - tile_n * nr);
            // SAFETY: strip `tile_n` holds `m_len` rows of `cols` valid values (row pitch NR)
            // that map into C at (m0, n0 + tile_n·NR).
            unsafe {
                merge_tile::<K>(
                    c_block.add(tile_n * m_rows * nr),
                    nr,
                    m_len,
                    cols,
                    c,
                    m0,
                    n0 + tile_n * nr,
                    problem.accumulate,
                )
            };
        }
        SCRATCH.set(scratch);
        return;
    }
    for row in 0..m_len {
        for tile_n in 0..n_tiles {
            let cols = nr.min(n_len - tile_n * nr);
            // SAFETY: row `row` of strip `tile_n` holds `cols` valid values that map into C
            // at (m0 + row, n0 + tile_n·NR).
            unsafe {
                merge_tile::<K>(
                    c_block.add((tile_n * m_rows + row) * nr),
                    nr,
                    1,
                    cols,
                    c,
                    m0 + row,
                    n0 + tile_n * nr,
                    problem.accumulate,
                )
            };
        }
    }
    SCRATCH.set(scratch);
}

/// A row pitch (in f32) of at least `cols` that is a whole, odd number of 64-byte lines.
fn odd_line_pitch(cols: usize) -> usize {
    let lines = cols.div_ceil(16);
    (lines | 1) * 16
}

/// Computes one `mc × nc` block of C for batch entry `batch_idx`.
///
/// # Safety
/// As for [`run`]; `item` < `m_blocks × n_blocks`.
unsafe fn run_item<K: MicroKernel>(ctx: &Ctx<'_, K>, batch_idx: usize, item: usize) {
    let plan = ctx.plan;
    let problem = ctx.problem;
    let (mr, nr) = (K::MR, K::NR);
    let elem = size_of::<K::Elem>();
    let c = shift_mut(problem.c, batch_idx as isize * problem.c_batch_stride);
    let m0 = item / plan.n_blocks * plan.mc;
    let n0 = item % plan.n_blocks * plan.nc;
    let m_len = plan.mc.min(plan.m - m0);
    let n_len = plan.nc.min(plan.n - n0);
    let m_tiles = m_len.div_ceil(mr);
    let n_tiles = n_len.div_ceil(nr);

    let mut scratch = SCRATCH.take();
    let a_local = if plan.shared_a {
        std::ptr::null_mut()
    } else {
        scratch.a.ensure::<K::Elem>(m_tiles * mr * plan.kc * elem)
    };
    let b_local = match ctx.packed_b {
        None => scratch.b.ensure::<K::Elem>(n_tiles * nr * plan.kc * elem),
        Some(_) => std::ptr::null_mut(),
    };
    // Full tiles go straight into an f32, unit-column-stride C when one `kc` block covers k.
    // With several blocks the partial sums would be re-read from C between blocks: a C with a
    // large (often power-of-two) row pitch puts a tile's rows in one L1 set and the re-reads
    // miss, so partial sums live in the scratch (odd line pitch) instead.
    let c_direct = match c.ptr {
        OutPtr::F32(ptr) if c.col_stride == 1 && c.row_stride > 0 && plan.n_kb == 1 => Some(ptr),
        _ => None,
    };
    let ld_tile = odd_line_pitch(n_tiles * nr);
    let c_tiles = if c_direct.is_none() || !m_len.is_multiple_of(mr) || !n_len.is_multiple_of(nr) {
        scratch.c.ensure::<f32>(m_tiles * mr * ld_tile * 4)
    } else {
        std::ptr::null_mut()
    };

    // SAFETY: the session is created for the tier the caller guarantees.
    let session = unsafe { K::begin() };
    for kb in 0..plan.n_kb {
        let k0 = kb * plan.kc;
        let k_len = plan.kc.min(plan.k - k0);
        let k_pad = k_len.next_multiple_of(K::KU);
        let last = kb + 1 == plan.n_kb;

        if !plan.shared_a {
            let a = ctx.raw_a(batch_idx);
            // SAFETY: rows `m0..m0 + m_len` × `k0..k0 + k_len` are inside A; the `m_tiles`
            // panels of depth `k_pad` fit the scratch sized for depth `kc` ≥ `k_pad`.
            unsafe { K::pack_a_panels(a_panel_src(a, m0, k0), m_len, k_len, a_local, mr * k_pad) };
        }
        let b_panels: *const K::Elem = match ctx.packed_b {
            None => {
                let (view, batch_stride) = ctx.raw_b();
                let b = shift_ref(view, batch_idx as isize * batch_stride);
                // SAFETY: `k0..k0 + k_len` × columns `n0..n0 + n_len` are inside B; the
                // `n_tiles` panels of depth `k_pad` fit the scratch sized for depth `kc`.
                unsafe {
                    K::pack_b_panels(b_panel_src(b, k0, n0), n_len, k_len, b_local, nr * k_pad);
                }
                b_local
            }
            Some((base, _)) => base,
        };

        let tile = |tile_m: usize, tile_n: usize| {
            let a_panel = if plan.shared_a {
                // SAFETY: panel (m0 / MR + tile_m) of the shared buffer, at depth k0.
                unsafe {
                    ctx.shared_a
                        .add(((m0 / mr + tile_m) * plan.k_pad + k0) * mr)
                }
            } else {
                // SAFETY: inside the local A scratch packed above.
                unsafe { a_local.add(tile_m * mr * k_pad) }
            };
            let rows = mr.min(m_len - tile_m * mr);
            let b_panel = match ctx.packed_b {
                // SAFETY: inside the local B scratch packed above.
                None => unsafe { b_panels.add(tile_n * nr * k_pad) },
                Some((_, packed_k_pad)) => {
                    // SAFETY: panel (n0 / NR + tile_n) of the packed B, at depth k0.
                    unsafe { b_panels.add(((n0 / nr + tile_n) * packed_k_pad + k0) * nr) }
                }
            };
            let cols = nr.min(n_len - tile_n * nr);
            let row = m0 + tile_m * mr;
            let col = n0 + tile_n * nr;
            match c_direct {
                Some(c_ptr) if rows == mr && cols == nr => {
                    let offset = row as isize * c.row_stride + col as isize;
                    // SAFETY: a full MR × NR tile of C at unit column stride.
                    unsafe {
                        K::kernel(
                            &session,
                            k_pad,
                            a_panel,
                            b_panel,
                            c_ptr.offset(offset),
                            c.row_stride,
                            problem.accumulate || kb > 0,
                            b_panel,
                        );
                    }
                }
                _ => {
                    // SAFETY: the tile lies inside the C scratch (m_tiles·MR × ld_tile).
                    let tile = unsafe { c_tiles.add(tile_m * mr * ld_tile + tile_n * nr) };
                    // SAFETY: as above, row stride `ld_tile`.
                    unsafe {
                        K::kernel(
                            &session,
                            k_pad,
                            a_panel,
                            b_panel,
                            tile,
                            ld_tile as isize,
                            kb > 0,
                            b_panel,
                        );
                    }
                    if last {
                        // SAFETY: the valid `rows × cols` part of the tile maps into C.
                        unsafe {
                            merge_tile::<K>(
                                tile,
                                ld_tile,
                                rows,
                                cols,
                                c,
                                row,
                                col,
                                problem.accumulate,
                            )
                        };
                    }
                }
            }
        };
        // A panel outer (it stays in L1), B panels inner (streamed from L2).
        for tile_m in 0..m_tiles {
            for tile_n in 0..n_tiles {
                tile(tile_m, tile_n);
            }
        }
    }
    drop(session);
    SCRATCH.set(scratch);
}

/// Writes (or adds) a `rows × cols` f32 tile into C at (`row`, `col`), rounding for f16.
///
/// # Safety
/// The tile is readable at row stride `ld`; the C region is inside the view.
#[allow(
    clippy::too_many_arguments,
    reason = "one tile's coordinates and destination"
)]
unsafe fn merge_tile<K: MicroKernel>(
    tile: *const f32,
    ld: usize,
    rows: usize,
    cols: usize,
    c: MatMut,
    row: usize,
    col: usize,
    accumulate: bool,
) {
    if c.row_stride == 1 && c.col_stride != 1 && rows > 1 {
        // SAFETY: forwarded (same tile and C region).
        unsafe { merge_tile_by_columns::<K>(tile, ld, rows, cols, c, row, col, accumulate) };
        return;
    }
    for row_idx in 0..rows {
        // SAFETY: row `row_idx` of the tile has `cols` readable values.
        let values = unsafe { std::slice::from_raw_parts(tile.add(row_idx * ld), cols) };
        let offset = (row + row_idx) as isize * c.row_stride + col as isize * c.col_stride;
        match c.ptr {
            OutPtr::F32(ptr) if c.col_stride == 1 => {
                // SAFETY: `cols` contiguous elements of C's row, disjoint from the tile.
                let out = unsafe { std::slice::from_raw_parts_mut(ptr.offset(offset), cols) };
                if accumulate {
                    for (out, &value) in out.iter_mut().zip(values) {
                        *out += value;
                    }
                } else {
                    out.copy_from_slice(values);
                }
            }
            OutPtr::F32(ptr) => {
                for (col_idx, &value) in values.iter().enumerate() {
                    // SAFETY: element (row + row_idx, col + col_idx) is inside C.
                    unsafe {
                        let out = ptr.offset(offset + col_idx as isize * c.col_stride);
                        *out = if accumulate { *out + value } else { value };
                    }
                }
            }
            OutPtr::F16(ptr) if c.col_stride == 1 => {
                // SAFETY: `cols` contiguous elements of C's row; tile and C are disjoint.
                unsafe {
                    convert::f32_to_f16_raw_with(K::ISA, values.as_ptr(), ptr.offset(offset), cols)
                };
            }
            OutPtr::F16(ptr) => {
                for (col_idx, &value) in values.iter().enumerate() {
                    // SAFETY: element (row + row_idx, col + col_idx) is inside C.
                    unsafe {
                        *ptr.offset(offset + col_idx as isize * c.col_stride) = f16::from_f32(value)
                    };
                }
            }
        }
    }
}

/// [`merge_tile`] for a C whose columns are contiguous (row stride 1): each tile column is
/// gathered into a stack buffer and stored as one contiguous run (converted with the tier's
/// f32 → f16 conversion for an f16 C, the same rounding as the row path).
///
/// # Safety
/// As for [`merge_tile`]; `c.row_stride == 1`.
#[allow(
    clippy::too_many_arguments,
    reason = "one tile's coordinates and destination"
)]
unsafe fn merge_tile_by_columns<K: MicroKernel>(
    tile: *const f32,
    ld: usize,
    rows: usize,
    cols: usize,
    c: MatMut,
    row: usize,
    col: usize,
    accumulate: bool,
) {
    const CHUNK: usize = 64;
    let mut values = [0f32; CHUNK];
    for col_idx in 0..cols {
        let mut row0 = 0;
        while row0 < rows {
            let n = CHUNK.min(rows - row0);
            for (i, value) in values[..n].iter_mut().enumerate() {
                // SAFETY: element (row0 + i, col_idx) of the tile is readable.
                *value = unsafe { *tile.add((row0 + i) * ld + col_idx) };
            }
            let offset = (row + row0) as isize + (col + col_idx) as isize * c.col_stride;
            match c.ptr {
                OutPtr::F32(ptr) => {
                    // SAFETY: `n` contiguous elements (row stride 1) of column col + col_idx
                    // of C, disjoint from the tile.
                    let out = unsafe { std::slice::from_raw_parts_mut(ptr.offset(offset), n) };
                    if accumulate {
                        for (out, &value) in out.iter_mut().zip(&values[..n]) {
                            *out += value;
                        }
                    } else {
                        out.copy_from_slice(&values[..n]);
                    }
                }
                OutPtr::F16(ptr) => {
                    // SAFETY: as above, for an f16 C; the host supports K's tier.
                    unsafe {
                        convert::f32_to_f16_raw_with(K::ISA, values.as_ptr(), ptr.offset(offset), n)
                    };
                }
            }
            row0 += n;
        }
    }
}

/// Sets every element of C to zero.
///
/// # Safety
/// C is valid and writable.
unsafe fn zero_c(c: MatMut) {
    for row in 0..c.rows {
        for col in 0..c.cols {
            let offset = row as isize * c.row_stride + col as isize * c.col_stride;
            // SAFETY: (row, col) is inside C.
            unsafe {
                match c.ptr {
                    OutPtr::F32(ptr) => *ptr.offset(offset) = 0.0,
                    OutPtr::F16(ptr) => *ptr.offset(offset) = f16::ZERO,
                }
            }
        }
    }
}

/// Packs all of `b` (`k × n`) into `NR`-column panels of depth `k_pad` in `data`, groups of
/// neighbouring panels spread over `pool`.
///
/// # Safety
/// `b` readable; the host supports `K`'s tier.
pub(crate) unsafe fn pack_b_panels<K: MicroKernel>(
    pool: &Pool,
    b: MatRef,
    k: usize,
    n: usize,
    k_pad: usize,
    data: &mut AlignedBuf,
) {
    // SAFETY: forwarded; no copy requested.
    unsafe { pack_b_panels_copying::<K>(pool, b, None, k, n, k_pad, data) }
}

/// [`pack_b_panels`] that also converts `b` (f32) into the f16 view `copy` on the way: each
/// task converts its columns into the copy and packs them from there while they are still
/// in its cache, so the source is read from memory once and the panels hold the f16 values.
///
/// # Safety
/// As for [`pack_b_panels`]; when `copy` is given, `b` is f32, `copy` is an f16 `k × n` view
/// whose elements are distinct, writable and overlap nothing else used here.
pub(crate) unsafe fn pack_b_panels_copying<K: MicroKernel>(
    pool: &Pool,
    b: MatRef,
    copy: Option<MatMut>,
    k: usize,
    n: usize,
    k_pad: usize,
    data: &mut AlignedBuf,
) {
    struct Shared<T> {
        b: MatRef,
        copy: Option<MatMut>,
        dst: *mut T,
    }
    // SAFETY: tasks only read B (not written during the call, per the caller) and write
    // disjoint panels through `dst` (see below).
    unsafe impl<T> Sync for Shared<T> {}

    let n_panels = n.div_ceil(K::NR);
    let panel_elems = K::NR * k_pad;
    let shared = Shared {
        b,
        copy,
        dst: data.ensure::<K::Elem>(n_panels * panel_elems * size_of::<K::Elem>()),
    };
    let bytes = (k * n * size_of::<K::Elem>()) as f64;
    let groups = if pool.n_threads() > 1 && bytes >= PARALLEL_MIN_PACK_BYTES {
        (4 * pool.n_threads()).min(n_panels)
    } else {
        1
    };
    let per_group = n_panels.div_ceil(groups);
    let shared = &shared;
    pool.run(n_panels.div_ceil(per_group), &|group| {
        let first = group * per_group;
        let last = (first + per_group).min(n_panels);
        // With a copy: convert this group's columns first, then pack from the (now cached)
        // f16 copy, so the panels hold exactly the f16 weight's values.
        let source = match shared.copy {
            Some(copy) => {
                let col0 = first * K::NR;
                let cols = (last * K::NR).min(n) - col0;
                // SAFETY: the group's columns of B (f32, readable) and of the copy (f16,
                // distinct and writable per the caller); groups own disjoint columns.
                unsafe { convert_columns(K::ISA, shared.b, copy, k, col0, cols) };
                copy.as_ref()
            }
            None => shared.b,
        };
        let col0 = first * K::NR;
        // SAFETY: columns `col0..` of the group × k `0..k` are inside the source; its panels
        // are inside the buffer sized above, and each panel index belongs to one group.
        unsafe {
            K::pack_b_panels(
                b_panel_src(source, 0, col0),
                (last * K::NR).min(n) - col0,
                k,
                shared.dst.add(first * panel_elems),
                panel_elems,
            )
        };
    });
}

/// Packs all of `a` (`m × k`) into full-depth `MR`-row panels of depth `k_pad` in `data`
/// (panel `i` at `i · MR · k_pad`: phase A's shared-buffer layout, through the same
/// [`pack_full_depth_a_panel`]), groups of neighbouring panels spread over `pool`. With `copy`,
/// each task first converts its rows of `a` (f32) into the f16 view `copy` and packs them
/// from there while they are in its cache, so the source is read from memory once and the
/// panels hold the f16 values.
///
/// # Safety
/// `a` readable; the host supports `K`'s tier; when `copy` is given, `a` is f32, `copy` is an
/// f16 `m × k` view whose elements are distinct, writable and overlap nothing else used here.
#[allow(
    clippy::too_many_arguments,
    reason = "source, optional copy, sizes and destination of one packing sweep"
)]
pub(crate) unsafe fn pack_a_panels_copying<K: MicroKernel>(
    pool: &Pool,
    a: MatRef,
    copy: Option<MatMut>,
    m: usize,
    k: usize,
    k_pad: usize,
    data: &mut AlignedBuf,
) {
    struct Shared<T> {
        a: MatRef,
        copy: Option<MatMut>,
        dst: *mut T,
    }
    // SAFETY: tasks only read A (not written during the call, per the caller), write disjoint
    // rows of the copy and disjoint panels through `dst` (see below).
    unsafe impl<T> Sync for Shared<T> {}

    let m_panels = m.div_ceil(K::MR);
    let panel_elems = K::MR * k_pad;
    let shared = Shared {
        a,
        copy,
        dst: data.ensure::<K::Elem>(m_panels * panel_elems * size_of::<K::Elem>()),
    };
    let bytes = (m * k * size_of::<K::Elem>()) as f64;
    let groups = if pool.n_threads() > 1 && bytes >= PARALLEL_MIN_PACK_BYTES {
        (4 * pool.n_threads()).min(m_panels)
    } else {
        1
    };
    let per_group = m_panels.div_ceil(groups.max(1));
    let shared = &shared;
    pool.run(m_panels.div_ceil(per_group.max(1)), &|group| {
        let first = group * per_group;
        let last = (first + per_group).min(m_panels);
        let source = match shared.copy {
            Some(copy) => {
                let row0 = first * K::MR;
                let rows = (last * K::MR).min(m) - row0;
                // SAFETY: the group's rows of A (f32, readable) and of the copy (f16, distinct
                // and writable per the caller), as columns of the transposed views; groups own
                // disjoint rows.
                unsafe { convert_columns(K::ISA, shared.a.t(), copy.t(), k, row0, rows) };
                copy.as_ref()
            }
            None => shared.a,
        };
        let row0 = first * K::MR;
        // SAFETY: the group's rows × k `0..k` are inside the source (A per the caller, or the
        // copy rows this task just wrote); its panels (the phase A layout of
        // `pack_full_depth_a_panel`) are inside the buffer sized above, and each panel index
        // belongs to one group.
        unsafe {
            K::pack_a_panels(
                a_panel_src(source, row0, 0),
                (last * K::MR).min(m) - row0,
                k,
                shared.dst.add(first * panel_elems),
                panel_elems,
            )
        };
    });
}

/// Converts columns `col0..col0 + cols` (all `rows` rows) of the f32 view `src` into the f16
/// view `dst`, in contiguous runs when both share a unit stride.
///
/// # Safety
/// `src` is f32 and readable, `dst` is f16, writable and disjoint from `src`, both cover the
/// block; the host supports `isa`.
unsafe fn convert_columns(
    isa: crate::cpu::Isa,
    src: MatRef,
    dst: MatMut,
    rows: usize,
    col0: usize,
    cols: usize,
) {
    let (ElemPtr::F32(src_ptr), OutPtr::F16(dst_ptr)) = (src.ptr, dst.ptr) else {
        unreachable!("invariant: repack_converting_with checked an f32 source and an f16 copy");
    };
    let at = |view_rs: isize, view_cs: isize, row: usize, col: usize| {
        row as isize * view_rs + col as isize * view_cs
    };
    if src.col_stride == 1 && dst.col_stride == 1 {
        for row in 0..rows {
            // SAFETY: one row's `cols` contiguous elements of each view.
            unsafe {
                convert::f32_to_f16_raw_with(
                    isa,
                    src_ptr.offset(at(src.row_stride, 1, row, col0)),
                    dst_ptr.offset(at(dst.row_stride, 1, row, col0)),
                    cols,
                )
            };
        }
    } else if src.row_stride == 1 && dst.row_stride == 1 {
        for col in col0..col0 + cols {
            // SAFETY: one column's `rows` contiguous elements of each view.
            unsafe {
                convert::f32_to_f16_raw_with(
                    isa,
                    src_ptr.offset(at(1, src.col_stride, 0, col)),
                    dst_ptr.offset(at(1, dst.col_stride, 0, col)),
                    rows,
                )
            };
        }
    } else {
        for row in 0..rows {
            for col in col0..col0 + cols {
                // SAFETY: element (row, col) of each view.
                unsafe {
                    *dst_ptr.offset(at(dst.row_stride, dst.col_stride, row, col)) =
                        f16::from_f32(*src_ptr.offset(at(src.row_stride, src.col_stride, row, col)))
                };
            }
        }
    }
}

/// Packing below this many destination bytes is not worth a dispatch.
const PARALLEL_MIN_PACK_BYTES: f64 = (1 << 16) as f64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::kernels::generic::Generic;

    #[test]
    fn plan_covers_the_problem() {
        for (batch, m, n, k, threads) in [
            (1, 256, 2048, 768, 2),
            (1, 1, 1, 1, 2),
            (1, 300, 530, 700, 2),
            (12, 256, 256, 64, 2),
            (1, 7, 9000, 13, 4),
        ] {
            let plan = plan::<Generic>(batch, m, n, k, threads);
            assert!(plan.mc.is_multiple_of(Generic::MR) && plan.nc.is_multiple_of(Generic::NR));
            assert!(plan.m_blocks * plan.mc >= m && (plan.m_blocks - 1) * plan.mc < m);
            assert!(plan.n_blocks * plan.nc >= n && (plan.n_blocks - 1) * plan.nc < n);
            assert!(plan.kc * plan.n_kb >= plan.k_pad && plan.kc <= Generic::KC.max(plan.k_pad));
        }
    }

    #[test]
    fn aligned_buf_is_aligned_and_grows() {
        let mut buf = AlignedBuf::default();
        let first = buf.ensure::<f32>(100);
        assert_eq!(first as usize % 64, 0);
        let second = buf.ensure::<f32>(10_000);
        assert_eq!(second as usize % 64, 0);
        assert!(buf.lines.len() * 64 >= 10_000);
    }
}
