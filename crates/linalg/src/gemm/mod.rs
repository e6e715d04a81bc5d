//! GEMM: `C (m × n) = A (m × k) · B (k × n)`, or `C += A · B`, for every ISA tier.
//!
//! Terms used throughout (and only here may they be abbreviated):
//!
//! * `m`, `n`, `k`: rows of A and C, columns of B and C, and the shared inner dimension.
//! * `mr`, `nr` (`MR`, `NR`): the C tile one microkernel call computes.
//! * `kc`: depth of one cache block (the k range of packed panels used together), `mc`/`nc`:
//!   rows/columns of C per work item. A work item packs (or reuses) the A panels of its rows
//!   and the B panels of its columns for each `kc` block and runs the microkernel over the
//!   `mc/MR × nc/NR` tiles.
//!
//! The entry points are `unsafe` because they take raw views ([`MatRef`], [`MatMut`]); they
//! validate shapes and the tier (panicking on a mismatch: that is a caller bug) and then trust
//! the pointers.
//!
//! Numerics: [`Precision::Exact`] computes in f32 (f16 inputs are widened exactly) with FMA on
//! the x86 tiers. [`Precision::Fast`] on the Amx tier rounds both operands to bf16 when packing
//! and accumulates in f32 with `tdpbf16ps`; on the other tiers it equals `Exact`. An f16 C is
//! accumulated in f32 and rounded once (nearest-even) when stored.
#![allow(
    unsafe_code,
    reason = "raw matrix views are the GEMM interface; validated here, trusted below"
)]

mod driver;
pub(crate) mod kernels;

use half::f16;

use crate::cpu::{self, Isa};
use crate::pool::Pool;
use driver::{ASource, AlignedBuf, BSource, Problem};
use kernels::MicroKernel;

/// How exactly to multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 arithmetic on exactly widened inputs.
    Exact,
    /// On the Amx tier: operands rounded to bf16, f32 accumulation. Elsewhere: `Exact`.
    Fast,
}

/// Pointer to the first element of an input view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemPtr {
    /// f32 elements.
    F32(*const f32),
    /// f16 elements.
    F16(*const f16),
}

/// A read-only strided matrix view. Element (`r`, `c`) is at
/// `ptr + r * row_stride + c * col_stride` (in elements). Any strides are allowed: a transpose
/// swaps the strides, stride 0 broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatRef {
    /// First element.
    pub ptr: ElemPtr,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: isize,
    /// Elements between consecutive columns.
    pub col_stride: isize,
}

impl MatRef {
    /// A dense row-major f32 view.
    pub fn f32_row_major(ptr: *const f32, rows: usize, cols: usize) -> MatRef {
        MatRef {
            ptr: ElemPtr::F32(ptr),
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// A dense row-major f16 view.
    pub fn f16_row_major(ptr: *const f16, rows: usize, cols: usize) -> MatRef {
        MatRef {
            ptr: ElemPtr::F16(ptr),
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// The transposed view (rows and columns, and their strides, swapped).
    pub fn t(self) -> MatRef {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn offset(self, rows: isize, cols: isize) -> isize {
        rows * self.row_stride + cols * self.col_stride
    }
}

/// Pointer to the first element of an output view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutPtr {
    /// f32 elements.
    F32(*mut f32),
    /// f16 elements (rounded once, nearest-even, on store).
    F16(*mut f16),
}

/// A writable strided matrix view; element (`r`, `c`) is at
/// `ptr + r * row_stride + c * col_stride` (in elements). Distinct elements must not overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatMut {
    /// First element.
    pub ptr: OutPtr,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: isize,
    /// Elements between consecutive columns.
    pub col_stride: isize,
}

impl MatMut {
    /// The same elements as a read-only view.
    pub fn as_ref(self) -> MatRef {
        let ptr = match self.ptr {
            OutPtr::F32(ptr) => ElemPtr::F32(ptr.cast_const()),
            OutPtr::F16(ptr) => ElemPtr::F16(ptr.cast_const()),
        };
        MatRef {
            ptr,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// A dense row-major f32 view.
    pub fn f32_row_major(ptr: *mut f32, rows: usize, cols: usize) -> MatMut {
        MatMut {
            ptr: OutPtr::F32(ptr),
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// A dense row-major f16 view.
    pub fn f16_row_major(ptr: *mut f16, rows: usize, cols: usize) -> MatMut {
        MatMut {
            ptr: OutPtr::F16(ptr),
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// The transposed view.
    pub fn t(self) -> MatMut {
        MatMut {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// Which kernel to run and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmSpec {
    /// Tier; must be available on the host ([`cpu::isa_available`]).
    pub isa: Isa,
    /// Exact (f32) or Fast (bf16 on Amx).
    pub precision: Precision,
    /// `C += A·B` instead of `C = A·B` (C must be f32).
    pub accumulate: bool,
}

impl GemmSpec {
    /// `C = A·B` with the selected tier ([`cpu::selected_isa`]).
    pub fn new(precision: Precision) -> GemmSpec {
        GemmSpec {
            isa: cpu::selected_isa(),
            precision,
            accumulate: false,
        }
    }
}

/// Calls `$body` with `$K` bound to the microkernel type of `$id`.
macro_rules! with_kernel {
    ($id:expr, $K:ident => $body:expr) => {
        match $id {
            KernelId::Generic => {
                type $K = kernels::generic::Generic;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx2 => {
                type $K = kernels::avx2::Avx2;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            KernelId::Avx512 => {
                type $K = kernels::avx512::Avx512;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            KernelId::AmxBf16 => {
                type $K = kernels::amx::AmxBf16;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            KernelId::AmxBf16Wide => {
                type $K = kernels::amx::AmxBf16Wide;
                $body
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel selected on another architecture"),
        }
    };
}

/// The kernels that exist; several (tier, precision) pairs share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum KernelId {
    Generic,
    Avx2,
    Avx512,
    AmxBf16,
    AmxBf16Wide,
}

impl KernelId {
    /// The kernel `(isa, precision)` runs for products whose k fits one cache block (the
    /// family's default; for Amx/Fast see [`KernelId::for_shape`]).
    fn of(isa: Isa, precision: Precision) -> KernelId {
        match (isa, precision) {
            (Isa::Generic, _) => KernelId::Generic,
            (Isa::Avx2, _) => KernelId::Avx2,
            (Isa::Avx512, _) | (Isa::Amx, Precision::Exact) => KernelId::Avx512,
            (Isa::Amx, Precision::Fast) => KernelId::AmxBf16,
        }
    }

    /// The kernel for a product of depth `k`: on Amx/Fast, `amx_gemm_bf16_32x32` (A panel
    /// outer, C written in place) while k fits its one 768-deep block, else
    /// `amx_gemm_bf16_32x48` (B panel outer, prefetched, C through scratch), which measured
    /// better once C would be reloaded between blocks.
    fn for_shape(isa: Isa, precision: Precision, k: usize) -> KernelId {
        match KernelId::of(isa, precision) {
            #[cfg(target_arch = "x86_64")]
            KernelId::AmxBf16 if k > <kernels::amx::AmxBf16 as MicroKernel>::KC => {
                KernelId::AmxBf16Wide
            }
            kernel => kernel,
        }
    }

    fn name(self) -> &'static str {
        with_kernel!(self, K => K::NAME)
    }
}

/// Name of the microkernel `(isa, precision)` runs when k fits one cache block, e.g.
/// `"avx512_gemm_f32_12x32"` or `"amx_gemm_bf16_32x32"` (`<isa>_gemm_<dtype>_<MR>x<NR>`);
/// [`kernel_name_for`] gives the one a product of depth `k` runs.
pub fn kernel_name(isa: Isa, precision: Precision) -> &'static str {
    KernelId::of(isa, precision).name()
}

/// Name of the microkernel `(isa, precision)` runs for a product of depth `k` (the Amx tier
/// in `Fast` switches to `"amx_gemm_bf16_32x48"` above k = 768).
pub fn kernel_name_for(isa: Isa, precision: Precision, k: usize) -> &'static str {
    KernelId::for_shape(isa, precision, k).name()
}

fn check_spec(spec: &GemmSpec, k: usize) -> KernelId {
    assert!(
        cpu::isa_available(spec.isa),
        "gemm: the host lacks the {} tier",
        spec.isa
    );
    KernelId::for_shape(spec.isa, spec.precision, k)
}

fn check_shapes(
    what: &str,
    a_rows: usize,
    a_cols: usize,
    b_rows: usize,
    b_cols: usize,
    c: &MatMut,
) {
    assert_eq!(
        a_cols, b_rows,
        "{what}: inner dimensions differ: A is {a_rows}x{a_cols}, B is {b_rows}x{b_cols}"
    );
    assert_eq!(
        (c.rows, c.cols),
        (a_rows, b_cols),
        "{what}: C is {}x{}, expected {a_rows}x{b_cols}",
        c.rows,
        c.cols
    );
    assert!(
        (c.rows <= 1 || c.row_stride != 0) && (c.cols <= 1 || c.col_stride != 0),
        "{what}: C has a zero stride (its elements would overlap)"
    );
}

/// `C = A·B` (or `C += A·B` with `spec.accumulate`), parallelised over `pool`.
///
/// Panics if the shapes disagree, `accumulate` is set with an f16 C, or the host lacks
/// `spec.isa`.
///
/// # Safety
/// Every element of the views `a`, `b` (readable) and `c` (readable and writable) is valid for
/// the whole call, `c`'s elements are distinct, `c` overlaps neither `a` nor `b`, and no other
/// thread writes any of them during the call.
pub unsafe fn gemm(spec: &GemmSpec, pool: &Pool, a: MatRef, b: MatRef, c: MatMut) {
    // SAFETY: a batch of one with the caller's views; contract forwarded.
    unsafe { gemm_batched(spec, pool, 1, a, 0, b, 0, c, 0) }
}

/// How a row-major slice holds a GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceLayout {
    /// The operand itself, row-major (`rows × cols`).
    Plain,
    /// Its transpose is stored row-major (`cols × rows`): the operand is read with swapped
    /// strides, never copied.
    Transposed,
}

/// Safe `C (m×n) = A (m×k) · B (k×n)` (or `C +=` with `spec.accumulate`) over dense row-major
/// f32 slices, each operand either plain or stored transposed. For callers without `unsafe`
/// (the trainer's dW products).
///
/// Panics if a slice length differs from its shape (a caller bug) or the host lacks `spec.isa`.
#[allow(
    clippy::too_many_arguments,
    reason = "a BLAS-style call: sizes, operands and their layouts"
)]
pub fn gemm_f32(
    spec: &GemmSpec,
    pool: &Pool,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_layout: SliceLayout,
    b: &[f32],
    b_layout: SliceLayout,
    c: &mut [f32],
) {
    assert_eq!(
        a.len(),
        m * k,
        "gemm_f32: A has {} elements for {m}x{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "gemm_f32: B has {} elements for {k}x{n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "gemm_f32: C has {} elements for {m}x{n}",
        c.len()
    );
    let view = |ptr: *const f32, rows: usize, cols: usize, layout: SliceLayout| match layout {
        SliceLayout::Plain => MatRef::f32_row_major(ptr, rows, cols),
        SliceLayout::Transposed => MatRef::f32_row_major(ptr, cols, rows).t(),
    };
    let a_view = view(a.as_ptr(), m, k, a_layout);
    let b_view = view(b.as_ptr(), k, n, b_layout);
    let c_view = MatMut::f32_row_major(c.as_mut_ptr(), m, n);
    // SAFETY: the three slices were checked above to hold exactly the elements the dense views
    // address; `c` is a unique borrow, so it is distinct from `a` and `b` and nobody else writes
    // any of them during the call.
    unsafe { gemm(spec, pool, a_view, b_view, c_view) }
}

/// `batch` independent products: `C_i (+)= A_i · B_i` where `X_i` is the view `x` moved by
/// `i * x_batch_stride` elements. A stride of 0 broadcasts one matrix to every batch entry
/// (except for C). Work is spread over batch entries and C tiles.
///
/// Panics on a shape mismatch, a zero `c_batch_stride` with `batch > 1`, `accumulate` with an
/// f16 C, or a missing tier.
///
/// # Safety
/// As for [`gemm()`], for every batch entry; the C views of different entries don't overlap.
#[allow(
    clippy::too_many_arguments,
    reason = "the batched signature is fixed by the engine"
)]
pub unsafe fn gemm_batched(
    spec: &GemmSpec,
    pool: &Pool,
    batch: usize,
    a: MatRef,
    a_batch_stride: isize,
    b: MatRef,
    b_batch_stride: isize,
    c: MatMut,
    c_batch_stride: isize,
) {
    let kernel = check_spec(spec, a.cols);
    check_shapes("gemm", a.rows, a.cols, b.rows, b.cols, &c);
    assert!(
        batch <= 1 || c_batch_stride != 0,
        "gemm: batched C needs a nonzero batch stride"
    );
    assert!(
        !spec.accumulate || matches!(c.ptr, OutPtr::F32(_)),
        "gemm: accumulate needs an f32 C"
    );
    let problem = Problem {
        batch,
        a: ASource::Raw {
            view: a,
            batch_stride: a_batch_stride,
        },
        b: BSource::Raw {
            view: b,
            batch_stride: b_batch_stride,
        },
        c,
        c_batch_stride,
        accumulate: spec.accumulate,
    };
    // SAFETY: shapes and tier validated above; pointer validity is the caller's contract.
    unsafe { with_kernel!(kernel, K => driver::run::<K>(pool, &problem)) }
}

/// Seconds per repetition (after one untimed warm-up) of the tile loop alone for `C = A · B`
/// with `spec`'s kernel on `pool`: A and B packed once into full-depth panels (untimed), then
/// the driver's work items, loop order and `kc` blocks with every C tile kept in per-item
/// scratch (see `driver::TileLoop`). For benchmarks: it computes no usable C.
///
/// # Safety
/// `a` (`m × k`) and `b` (`k × n`) are readable.
pub(crate) unsafe fn time_tile_loop(
    spec: &GemmSpec,
    pool: &Pool,
    a: MatRef,
    b: MatRef,
    reps: usize,
) -> Vec<f64> {
    assert_eq!(a.cols, b.rows, "time_tile_loop: A is m × k and B k × n");
    let kernel = check_spec(spec, a.cols);
    if a.rows == 0 || a.cols == 0 || b.cols == 0 {
        return vec![0.0; reps];
    }
    // SAFETY: the tier was checked; the views are readable per the caller.
    unsafe { with_kernel!(kernel, K => driver::TileLoop::<K>::new(pool, a, b).time(pool, reps)) }
}

/// B packed once into the panel layout of one kernel (chosen by `(isa, precision)`), for
/// weights multiplied many times. Owns its memory.
#[derive(Debug)]
pub struct PackedB {
    kernel: KernelId,
    k: usize,
    n: usize,
    k_pad: usize,
    data: AlignedBuf,
}

impl PackedB {
    /// Packs `b` (k × n) for `spec`'s kernel, in parallel on the global pool
    /// ([`Pool::global`]).
    ///
    /// Panics if the host lacks `spec.isa`.
    ///
    /// # Safety
    /// Every element of the view `b` is readable and not written during the call.
    pub unsafe fn pack(spec: &GemmSpec, b: MatRef) -> PackedB {
        // SAFETY: forwarded from the caller.
        unsafe { PackedB::pack_with(spec, Pool::global(), b) }
    }

    /// [`PackedB::pack`] on `pool`.
    ///
    /// # Safety
    /// As for [`PackedB::pack`].
    pub unsafe fn pack_with(spec: &GemmSpec, pool: &Pool, b: MatRef) -> PackedB {
        let kernel = check_spec(spec, b.rows);
        let k_pad = with_kernel!(kernel, K => b.rows.next_multiple_of(K::KU));
        let mut packed = PackedB {
            kernel,
            k: b.rows,
            n: b.cols,
            k_pad,
            data: AlignedBuf::default(),
        };
        // SAFETY: forwarded from the caller.
        unsafe { packed.repack_with(pool, b) };
        packed
    }

    /// Packs a new `b` of the same shape into the existing memory, in parallel on the global
    /// pool. This is the weight-update path: panels are packed by several threads at once,
    /// each reading its columns of B in long runs, at about memory bandwidth.
    ///
    /// Panics if `b`'s shape differs from the packed one.
    ///
    /// # Safety
    /// As for [`PackedB::pack`].
    pub unsafe fn repack(&mut self, b: MatRef) {
        // SAFETY: forwarded from the caller.
        unsafe { self.repack_with(Pool::global(), b) }
    }

    /// [`PackedB::repack`] on `pool`.
    ///
    /// # Safety
    /// As for [`PackedB::pack`].
    pub unsafe fn repack_with(&mut self, pool: &Pool, b: MatRef) {
        assert_eq!(
            (b.rows, b.cols),
            (self.k, self.n),
            "PackedB::repack: shape differs"
        );
        let (k, n, k_pad) = (self.k, self.n, self.k_pad);
        let data = &mut self.data;
        // SAFETY: the kernel's tier was checked in `pack`; `b` readable per the caller; the
        // buffer is sized for every panel by `pack_b_panels`.
        unsafe {
            with_kernel!(self.kernel, K => driver::pack_b_panels::<K>(pool, b, k, n, k_pad, data))
        }
    }

    /// The weight-update path of an fp16 weight given as f32 (`write_weight_f32`): converts
    /// `b` (f32) into the f16 view `copy` (the weight's surface) and repacks the panels from
    /// that copy in the same parallel sweep (each thread converts a block of columns and packs
    /// it while it is in cache), so `b` is read from memory once. The result equals
    /// converting and then calling [`PackedB::repack_with`] on `copy`.
    ///
    /// Panics if `b` is not f32, `copy` is not f16, either shape differs from the packed one,
    /// or `copy` has a zero stride.
    ///
    /// # Safety
    /// `b` as for [`PackedB::pack`]; every element of `copy` is writable, distinct, overlaps
    /// neither `b` nor anything else in use, and no other thread touches it during the call.
    pub unsafe fn repack_converting_with(&mut self, pool: &Pool, b: MatRef, copy: MatMut) {
        assert_eq!(
            (b.rows, b.cols, copy.rows, copy.cols),
            (self.k, self.n, self.k, self.n),
            "PackedB::repack_converting_with: shape differs"
        );
        assert!(
            matches!(b.ptr, ElemPtr::F32(_)) && matches!(copy.ptr, OutPtr::F16(_)),
            "PackedB::repack_converting_with: needs an f32 source and an f16 copy"
        );
        assert!(
            (copy.rows <= 1 || copy.row_stride != 0) && (copy.cols <= 1 || copy.col_stride != 0),
            "PackedB::repack_converting_with: the copy has a zero stride"
        );
        let (k, n, k_pad) = (self.k, self.n, self.k_pad);
        let data = &mut self.data;
        // SAFETY: as in `repack_with`, plus the copy contract forwarded from the caller.
        unsafe {
            with_kernel!(self.kernel, K => driver::pack_b_panels_copying::<K>(pool, b, Some(copy), k, n, k_pad, data))
        }
    }

    /// Rows of B (the shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Name of the kernel this layout is for.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }
}

/// `C (+)= A · B` with B already packed for `spec`'s kernel.
///
/// Panics on a shape mismatch, when `b` was packed for another kernel, on `accumulate` with an
/// f16 C, or a missing tier.
///
/// # Safety
/// As for [`gemm()`] (for `a` and `c`).
pub unsafe fn gemm_packed_b(spec: &GemmSpec, pool: &Pool, a: MatRef, b: &PackedB, c: MatMut) {
    let kernel = check_spec(spec, b.k);
    assert_eq!(
        kernel,
        b.kernel,
        "gemm_packed_b: B was packed for {}, the spec runs {}",
        b.kernel.name(),
        kernel.name()
    );
    check_shapes("gemm_packed_b", a.rows, a.cols, b.k, b.n, &c);
    assert!(
        !spec.accumulate || matches!(c.ptr, OutPtr::F32(_)),
        "gemm_packed_b: accumulate needs an f32 C"
    );
    let problem = Problem {
        batch: 1,
        a: ASource::Raw {
            view: a,
            batch_stride: 0,
        },
        b: BSource::Packed {
            data: &b.data,
            k_pad: b.k_pad,
        },
        c,
        c_batch_stride: 0,
        accumulate: spec.accumulate,
    };
    // SAFETY: shapes, tier and layout validated above; pointers per the caller's contract.
    unsafe { with_kernel!(kernel, K => driver::run::<K>(pool, &problem)) }
}

/// `batch` products `C_i (+)= A_i · B` with one B, already packed for `spec`'s kernel, shared
/// by every entry (the batched form of [`gemm_packed_b`]: `X_i` is the view `x` moved by
/// `i * x_batch_stride` elements). Blocking and arithmetic are those of [`gemm_batched`] with a
/// broadcast B (batch stride 0), so the results are bit-for-bit the same.
///
/// Panics as [`gemm_packed_b`] does, and on a zero `c_batch_stride` with `batch > 1`.
///
/// # Safety
/// As for [`gemm()`] (for `a` and `c`), for every batch entry; the C views of different entries
/// don't overlap.
#[allow(
    clippy::too_many_arguments,
    reason = "the batched signature of gemm_batched with B replaced by its panels"
)]
pub unsafe fn gemm_batched_packed_b(
    spec: &GemmSpec,
    pool: &Pool,
    batch: usize,
    a: MatRef,
    a_batch_stride: isize,
    b: &PackedB,
    c: MatMut,
    c_batch_stride: isize,
) {
    let kernel = check_spec(spec, b.k);
    assert_eq!(
        kernel,
        b.kernel,
        "gemm_batched_packed_b: B was packed for {}, the spec runs {}",
        b.kernel.name(),
        kernel.name()
    );
    check_shapes("gemm_batched_packed_b", a.rows, a.cols, b.k, b.n, &c);
    assert!(
        batch <= 1 || c_batch_stride != 0,
        "gemm_batched_packed_b: batched C needs a nonzero batch stride"
    );
    assert!(
        !spec.accumulate || matches!(c.ptr, OutPtr::F32(_)),
        "gemm_batched_packed_b: accumulate needs an f32 C"
    );
    let problem = Problem {
        batch,
        a: ASource::Raw {
            view: a,
            batch_stride: a_batch_stride,
        },
        b: BSource::Packed {
            data: &b.data,
            k_pad: b.k_pad,
        },
        c,
        c_batch_stride,
        accumulate: spec.accumulate,
    };
    // SAFETY: shapes, tier and layout validated above; pointers per the caller's contract.
    unsafe { with_kernel!(kernel, K => driver::run::<K>(pool, &problem)) }
}

/// A packed once into the full-depth panel layout of one kernel (chosen by `(isa, precision)`
/// and k), for a left operand multiplied many times (a weight `W` in `W·x`). Owns its memory,
/// which is exactly the driver's phase-A buffer: `m.div_ceil(MR)` panels of `MR × k_pad`,
/// made by the same packer, so a product with a `PackedA` skips all A packing and gives
/// bit-for-bit the result of the same product with the raw A.
#[derive(Debug)]
pub struct PackedA {
    kernel: KernelId,
    m: usize,
    k: usize,
    k_pad: usize,
    data: AlignedBuf,
}

impl PackedA {
    /// Packs `a` (m × k) for `spec`'s kernel (the one a product of depth k runs, see
    /// [`kernel_name_for`]), in parallel on the global pool ([`Pool::global`]).
    ///
    /// Panics if the host lacks `spec.isa`.
    ///
    /// # Safety
    /// Every element of the view `a` is readable and not written during the call.
    pub unsafe fn pack(spec: &GemmSpec, a: MatRef) -> PackedA {
        // SAFETY: forwarded from the caller.
        unsafe { PackedA::pack_with(spec, Pool::global(), a) }
    }

    /// [`PackedA::pack`] on `pool`.
    ///
    /// # Safety
    /// As for [`PackedA::pack`].
    pub unsafe fn pack_with(spec: &GemmSpec, pool: &Pool, a: MatRef) -> PackedA {
        let kernel = check_spec(spec, a.cols);
        let k_pad = with_kernel!(kernel, K => a.cols.next_multiple_of(K::KU));
        let mut packed = PackedA {
            kernel,
            m: a.rows,
            k: a.cols,
            k_pad,
            data: AlignedBuf::default(),
        };
        // SAFETY: forwarded from the caller.
        unsafe { packed.repack_with(pool, a) };
        packed
    }

    /// Packs a new `a` of the same shape into the existing memory (no allocation), in
    /// parallel on the global pool. This is the weight-update path.
    ///
    /// Panics if `a`'s shape differs from the packed one.
    ///
    /// # Safety
    /// As for [`PackedA::pack`].
    pub unsafe fn repack(&mut self, a: MatRef) {
        // SAFETY: forwarded from the caller.
        unsafe { self.repack_with(Pool::global(), a) }
    }

    /// [`PackedA::repack`] on `pool`.
    ///
    /// # Safety
    /// As for [`PackedA::pack`].
    pub unsafe fn repack_with(&mut self, pool: &Pool, a: MatRef) {
        assert_eq!(
            (a.rows, a.cols),
            (self.m, self.k),
            "PackedA::repack: shape differs"
        );
        let (m, k, k_pad) = (self.m, self.k, self.k_pad);
        let data = &mut self.data;
        // SAFETY: the kernel's tier was checked in `pack`; `a` readable per the caller; the
        // buffer is sized for every panel by `pack_a_panels_copying`.
        unsafe {
            with_kernel!(self.kernel, K => driver::pack_a_panels_copying::<K>(pool, a, None, m, k, k_pad, data))
        }
    }

    /// The weight-update path of an fp16 weight given as f32 (`write_weight_f32`): converts
    /// `a` (f32) into the f16 view `copy` (the weight's surface) and repacks the panels from
    /// that copy in the same parallel sweep (each thread converts a block of rows and packs it
    /// while it is in cache), so `a` is read from memory once. The result equals converting
    /// and then calling [`PackedA::repack_with`] on `copy`.
    ///
    /// Panics if `a` is not f32, `copy` is not f16, either shape differs from the packed one,
    /// or `copy` has a zero stride.
    ///
    /// # Safety
    /// `a` as for [`PackedA::pack`]; every element of `copy` is writable, distinct, overlaps
    /// neither `a` nor anything else in use, and no other thread touches it during the call.
    pub unsafe fn repack_converting_with(&mut self, pool: &Pool, a: MatRef, copy: MatMut) {
        assert_eq!(
            (a.rows, a.cols, copy.rows, copy.cols),
            (self.m, self.k, self.m, self.k),
            "PackedA::repack_converting_with: shape differs"
        );
        assert!(
            matches!(a.ptr, ElemPtr::F32(_)) && matches!(copy.ptr, OutPtr::F16(_)),
            "PackedA::repack_converting_with: needs an f32 source and an f16 copy"
        );
        assert!(
            (copy.rows <= 1 || copy.row_stride != 0) && (copy.cols <= 1 || copy.col_stride != 0),
            "PackedA::repack_converting_with: the copy has a zero stride"
        );
        let (m, k, k_pad) = (self.m, self.k, self.k_pad);
        let data = &mut self.data;
        // SAFETY: as in `repack_with`, plus the copy contract forwarded from the caller.
        unsafe {
            with_kernel!(self.kernel, K => driver::pack_a_panels_copying::<K>(pool, a, Some(copy), m, k, k_pad, data))
        }
    }

    /// Rows of A.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Columns of A (the shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Name of the kernel this layout is for.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }
}

/// `C (+)= A · B` with A already packed for `spec`'s kernel: no A packing at all.
///
/// Panics on a shape mismatch, when `a` was packed for another kernel, on `accumulate` with an
/// f16 C, or a missing tier.
///
/// # Safety
/// As for [`gemm()`] (for `b` and `c`).
pub unsafe fn gemm_packed_a(spec: &GemmSpec, pool: &Pool, a: &PackedA, b: MatRef, c: MatMut) {
    // SAFETY: a batch of one; contract forwarded.
    unsafe { gemm_batched_packed_a(spec, pool, 1, a, b, 0, c, 0) }
}

/// `batch` products `C_i (+)= A · B_i` with one A, already packed for `spec`'s kernel, shared
/// by every entry (`X_i` is the view `x` moved by `i * x_batch_stride` elements). Blocking and
/// arithmetic are those of [`gemm_batched`] with a broadcast A (batch stride 0), so the
/// results are bit-for-bit the same.
///
/// Panics as [`gemm_packed_a`] does, and on a zero `c_batch_stride` with `batch > 1`.
///
/// # Safety
/// As for [`gemm()`] (for `b` and `c`), for every batch entry; the C views of different entries
/// don't overlap.
#[allow(
    clippy::too_many_arguments,
    reason = "the batched signature of gemm_batched with A replaced by its panels"
)]
pub unsafe fn gemm_batched_packed_a(
    spec: &GemmSpec,
    pool: &Pool,
    batch: usize,
    a: &PackedA,
    b: MatRef,
    b_batch_stride: isize,
    c: MatMut,
    c_batch_stride: isize,
) {
    let kernel = check_spec(spec, a.k);
    assert_eq!(
        kernel,
        a.kernel,
        "gemm_batched_packed_a: A was packed for {}, the spec runs {}",
        a.kernel.name(),
        kernel.name()
    );
    check_shapes("gemm_batched_packed_a", a.m, a.k, b.rows, b.cols, &c);
    assert!(
        batch <= 1 || c_batch_stride != 0,
        "gemm_batched_packed_a: batched C needs a nonzero batch stride"
    );
    assert!(
        !spec.accumulate || matches!(c.ptr, OutPtr::F32(_)),
        "gemm_batched_packed_a: accumulate needs an f32 C"
    );
    let problem = Problem {
        batch,
        a: ASource::Packed {
            data: &a.data,
            m: a.m,
            k: a.k,
            k_pad: a.k_pad,
        },
        b: BSource::Raw {
            view: b,
            batch_stride: b_batch_stride,
        },
        c,
        c_batch_stride,
        accumulate: spec.accumulate,
    };
    // SAFETY: shapes, tier and layout validated above; pointers per the caller's contract.
    unsafe { with_kernel!(kernel, K => driver::run::<K>(pool, &problem)) }
}

/// How many products this thread has run that packed A from a raw (strided) view, i.e. every
/// product with a non-empty C and k except those of [`gemm_packed_a`] /
/// [`gemm_batched_packed_a`]. A test hook, like [`raw_b_products_on_this_thread`].
pub fn raw_a_products_on_this_thread() -> u64 {
    driver::RAW_A_PRODUCTS.with(std::cell::Cell::get)
}

/// How many products this thread has run that packed B from a raw (strided) view, i.e. every
/// [`gemm()`] / [`gemm_batched`] call with a non-empty C and k, and none of [`gemm_packed_b`] /
/// [`gemm_batched_packed_b`]. A test hook: the engine's tests read it before and after an
/// evaluation to check that prepacked weights are not packed again.
pub fn raw_b_products_on_this_thread() -> u64 {
    driver::RAW_B_PRODUCTS.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests;
