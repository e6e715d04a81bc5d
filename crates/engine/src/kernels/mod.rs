//! Kernels: the code that computes one step, picked from a [`table::KernelTable`] at compile
//! time. Every kernel has the same signature ([`KernelFn`]) and reads its parameters from the
//! step; [`generic`] holds the portable kernel for every slot, [`tiered`] the vectorised
//! elementwise, softmax and reduction kernels that `KernelTable::for_isa` plugs in.

pub mod conv;
pub mod copy;
pub mod fused;
pub mod generic;
pub mod pattern;
pub mod table;
pub mod tiered;

use bytemuck::Pod;
use milbridge_linalg::cpu::Isa;
use milbridge_linalg::pool::Pool;

use crate::Precision;
use crate::elem::{Elem, Ty};
use crate::error::KernelError;
use crate::layout::{Layout, MAX_RANK};
use crate::plan::pack::PackedOperand;
use crate::plan::step::{MAX_SRCS, StepOp};

/// A kernel entry point.
pub type KernelFn = fn(&mut KernelCtx<'_>) -> Result<(), KernelError>;

/// A kernel: its name (`<isa>_<op>_<dtype>_<geometry>`, style.md (c)) and entry point.
#[derive(Clone, Copy)]
pub struct Kernel {
    /// The kernel's name.
    pub name: &'static str,
    /// Entry point.
    pub run: KernelFn,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A source operand as a kernel sees it.
#[derive(Clone, Copy)]
pub struct Src<'a> {
    /// The bytes its layout addresses.
    pub bytes: &'a [u8],
    /// Layout (element offsets into `bytes`).
    pub layout: &'a Layout,
    /// Element type.
    pub ty: Ty,
}

impl Src<'_> {
    /// An unused operand slot.
    pub const NONE: Src<'static> = Src {
        bytes: &[],
        layout: &Layout::EMPTY,
        ty: Ty::U8,
    };
}

/// Everything a kernel gets for one step.
pub struct KernelCtx<'a> {
    /// The step's operation and parameters.
    pub op: &'a StepOp,
    /// Sources; the first `n_srcs` are meaningful.
    pub srcs: [Src<'a>; MAX_SRCS],
    /// Number of sources.
    pub n_srcs: usize,
    /// Destination bytes.
    pub dst: &'a mut [u8],
    /// Destination layout.
    pub dst_layout: &'a Layout,
    /// Destination element type.
    pub dst_ty: Ty,
    /// Scratch bytes (64-byte aligned), as many as the planner reserved for this step.
    pub scratch: &'a mut [u8],
    /// Worker pool.
    pub pool: &'a Pool,
    /// Threads the plan was compiled for.
    pub threads: usize,
    /// ISA tier of the table.
    pub isa: Isa,
    /// Precision profile.
    pub precision: Precision,
    /// Prepacked GEMM panels of one operand of this step (only for a matmul step with a
    /// prepacked function input; see [`crate::plan::pack`]), and which operand they hold.
    pub packed: Option<PackedOperand<'a>>,
}

impl<'a> KernelCtx<'a> {
    /// Source `idx` as typed elements. Panics if the bytes are misaligned or the type does not
    /// match (engine invariants: buffers are checked at eval entry, arena slots are aligned).
    pub fn src<T: Pod>(&self, idx: usize) -> SrcView<'a, T> {
        let src = self.srcs[idx];
        SrcView {
            data: bytemuck::cast_slice(src.bytes),
            layout: src.layout,
        }
    }

    /// The destination as typed elements.
    pub fn dst_slice<T: Pod>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.dst)
    }

    /// Number of tasks for `work` units of work (elements touched, roughly).
    pub fn tasks(&self, work: usize) -> usize {
        const MIN_WORK_PER_TASK: usize = 1 << 14;
        (work / MIN_WORK_PER_TASK).clamp(1, self.threads.max(1))
    }
}

/// A typed source view.
#[derive(Clone, Copy)]
pub struct SrcView<'a, T> {
    /// All elements of the operand's byte range.
    pub data: &'a [T],
    /// Layout into `data`.
    pub layout: &'a Layout,
}

impl<T: Elem> SrcView<'_, T> {
    /// Stride of the last dimension (0 for rank 0).
    #[inline]
    pub fn last_stride(&self) -> usize {
        self.layout.strides.last().copied().unwrap_or(0)
    }

    /// Loads `out.len()` elements starting at element offset `start`, `stride` apart.
    #[inline]
    pub fn load_run(&self, start: usize, stride: usize, out: &mut [T::C]) {
        let n = out.len();
        if n == 0 {
            return;
        }
        match stride {
            1 => T::load_slice(&self.data[start..start + n], out),
            0 => out.fill(self.data[start].load()),
            _ => {
                for (j, value) in out.iter_mut().enumerate() {
                    *value = self.data[start + j * stride].load();
                }
            }
        }
    }

    /// Element at offset `offset`, widened.
    #[inline]
    pub fn at(&self, offset: usize) -> T::C {
        self.data[offset].load()
    }

    /// Loads the box of the trailing `inner_rank` dims at `base` (row-major) into `out`.
    pub fn load_box(&self, base: usize, inner_rank: usize, out: &mut [T::C]) {
        let rank = self.layout.rank();
        let shape = &self.layout.shape[rank - inner_rank..];
        let strides = &self.layout.strides[rank - inner_rank..];
        if inner_rank == 0 {
            out[0] = self.at(base);
            return;
        }
        let row = shape[inner_rank - 1];
        let row_stride = strides[inner_rank - 1];
        let mut idx = [0usize; MAX_RANK];
        let mut pos = 0;
        while pos < out.len() {
            let offset = base
                + idx[..inner_rank - 1]
                    .iter()
                    .zip(strides)
                    .map(|(&i, &s)| i * s)
                    .sum::<usize>();
            self.load_run(offset, row_stride, &mut out[pos..pos + row]);
            pos += row;
            for d in (0..inner_rank - 1).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

/// Elements processed per block in elementwise loops (stack buffers).
pub const BLOCK: usize = 128;

/// Segment length used to split long rows between tasks.
pub const SEG: usize = 1 << 14;
