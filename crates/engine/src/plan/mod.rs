//! Compiled plans: the steps of one function with every operand resolved to a buffer, a byte
//! range and a strided layout.
//!
//! [`crate::compile`] builds a [`Plan`] in [`lower`] (topological order, dead-code
//! elimination, constants, view folding, kernel choice), [`fuse`] (elementwise fusion) and
//! [`memory`] (liveness and arena
//! offsets); [`Plan::eval`](crate::Plan::eval) runs it; [`serial`] writes and reads it.

pub mod fuse;
pub mod lower;
pub mod memory;
pub mod pack;
pub mod serial;
pub mod step;

use std::sync::Arc;

use milbridge_linalg::cpu::Isa;
use milbridge_linalg::pool::Pool;
use milbridge_mil::ir::TensorType;

use crate::Precision;
use crate::error::{Error, Result};
use crate::kernels::Kernel;
use crate::kernels::table::{KernelTable, kernel_id};
use crate::plan::step::{Step, StepOp, StepRole};

/// One function input or output: its name, type and dense byte length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoDesc {
    /// Parameter name (inputs) or output variable name (outputs).
    pub name: String,
    /// Type.
    pub ty: TensorType,
    /// Dense byte length (`numel · element size`).
    pub byte_len: usize,
}

/// Bytes whose start is 64-byte aligned.
#[derive(Debug, Default)]
pub struct AlignedBytes {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        let buf = vec![0u8; len + 63];
        let start = buf.as_ptr().align_offset(64).min(63);
        AlignedBytes { buf, start, len }
    }

    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut aligned = AlignedBytes::zeroed(bytes.len());
        aligned.as_mut_slice().copy_from_slice(bytes);
        aligned
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Clone for AlignedBytes {
    fn clone(&self) -> AlignedBytes {
        AlignedBytes::from_slice(self.as_slice())
    }
}

impl PartialEq for AlignedBytes {
    fn eq(&self, other: &AlignedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// What a plan consists of (for logs, benches and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Number of steps.
    pub steps: usize,
    /// Kernel name of each step, in order.
    pub kernels: Vec<&'static str>,
    /// Bytes of the workspace arena (intermediates and scratch).
    pub arena_bytes: usize,
    /// Number of arena allocations that share the arena.
    pub arena_allocations: usize,
    /// Sum of the sizes of all arena allocations (what the arena would need without reuse).
    pub arena_bytes_unshared: usize,
    /// Steps that copy a view into a dense buffer because no consumer could read it in place
    /// (including function outputs that are views, parameters or constants).
    pub materialize_steps: usize,
    /// Steps that copy one `concat` input into place.
    pub concat_steps: usize,
    /// Fused elementwise steps ([`fuse`]).
    pub fused_steps: usize,
    /// MIL ops evaluated inside fused steps (each fused step replaces that many steps by one).
    pub fused_ops: usize,
    /// Ops turned into strided views (no step).
    pub folded_views: usize,
    /// Ops evaluated at compile time by the plan (beyond what verification folded).
    pub folded_consts: usize,
    /// Ops removed because no output depends on them.
    pub dead_ops: usize,
    /// Constant bytes held by the plan.
    pub const_bytes: usize,
    /// The tier of the kernel table.
    pub isa: &'static str,
    /// The precision profile.
    pub precision: Precision,
    /// Threads the plan splits large ops across.
    pub threads: usize,
}

/// Counters the lowering records (serialised with the plan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerCounts {
    /// Ops turned into views.
    pub folded_views: u32,
    /// Ops folded at compile time.
    pub folded_consts: u32,
    /// Dead ops removed.
    pub dead_ops: u32,
    /// Arena allocations.
    pub arena_allocations: u32,
    /// Sum of arena allocation sizes.
    pub arena_bytes_unshared: u64,
}

/// The pool a plan runs on.
#[derive(Clone)]
pub(crate) enum PoolRef {
    /// [`Pool::global`].
    Global,
    /// A pool of its own (a thread count other than the global pool's).
    Own(Arc<Pool>),
}

impl PoolRef {
    pub(crate) fn for_threads(threads: usize) -> PoolRef {
        if threads == Pool::global().n_threads() {
            PoolRef::Global
        } else {
            PoolRef::Own(Arc::new(Pool::new(threads)))
        }
    }

    pub(crate) fn get(&self) -> &Pool {
        match self {
            PoolRef::Global => Pool::global(),
            PoolRef::Own(pool) => pool,
        }
    }
}

/// A compiled function: run it with [`Plan::eval`](crate::Plan::eval) any number of times.
#[derive(Clone)]
pub struct Plan {
    pub(crate) isa: Isa,
    pub(crate) precision: Precision,
    pub(crate) threads: usize,
    pub(crate) portable: bool,
    pub(crate) inputs: Vec<IoDesc>,
    pub(crate) outputs: Vec<IoDesc>,
    pub(crate) consts: Vec<AlignedBytes>,
    pub(crate) steps: Vec<Step>,
    pub(crate) kernels: Vec<Kernel>,
    pub(crate) arena_bytes: usize,
    pub(crate) counts: LowerCounts,
    pub(crate) pool: PoolRef,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("isa", &self.isa)
            .field("precision", &self.precision)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("steps", &self.steps.len())
            .field("arena_bytes", &self.arena_bytes)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The kernel table this plan's steps resolve against.
    pub(crate) fn table(isa: Isa, precision: Precision, portable: bool) -> &'static KernelTable {
        if portable {
            KernelTable::portable()
        } else {
            KernelTable::for_isa(isa, precision)
        }
    }

    /// Resolves every step's kernel from the table.
    pub(crate) fn resolve_kernels(&mut self) -> Result<()> {
        let table = Plan::table(self.isa, self.precision, self.portable);
        self.kernels.clear();
        for step in &self.steps {
            let src_tys: Vec<_> = step.srcs.iter().map(|src| src.ty).collect();
            let kernel = kernel_id(&step.op, &src_tys, step.dst.ty)
                .and_then(|id| table.get(id))
                .ok_or_else(|| Error::Unsupported {
                    what: format!("{:?} on {:?} → {:?}", step.op, src_tys, step.dst.ty),
                    value: step.value.clone(),
                })?;
            self.kernels.push(kernel);
        }
        Ok(())
    }

    /// Function inputs, by parameter position.
    pub fn inputs(&self) -> &[IoDesc] {
        &self.inputs
    }

    /// Function outputs, in `-> (...)` order.
    pub fn outputs(&self) -> &[IoDesc] {
        &self.outputs
    }

    /// The steps (for inspection and tests).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// What the plan consists of.
    pub fn stats(&self) -> PlanStats {
        PlanStats {
            steps: self.steps.len(),
            kernels: self.kernels.iter().map(|kernel| kernel.name).collect(),
            arena_bytes: self.arena_bytes,
            arena_allocations: self.counts.arena_allocations as usize,
            arena_bytes_unshared: self.counts.arena_bytes_unshared as usize,
            materialize_steps: self
                .steps
                .iter()
                .filter(|step| step.role == StepRole::Materialize)
                .count(),
            concat_steps: self
                .steps
                .iter()
                .filter(|step| step.role == StepRole::Concat)
                .count(),
            fused_steps: self
                .steps
                .iter()
                .filter(|step| matches!(step.op, StepOp::Fused(_)))
                .count(),
            fused_ops: self
                .steps
                .iter()
                .map(|step| match &step.op {
                    StepOp::Fused(program) => program.n_ops(),
                    _ => 0,
                })
                .sum(),
            folded_views: self.counts.folded_views as usize,
            folded_consts: self.counts.folded_consts as usize,
            dead_ops: self.counts.dead_ops as usize,
            const_bytes: self.consts.iter().map(AlignedBytes::len).sum(),
            isa: if self.portable {
                "portable"
            } else {
                self.isa.name()
            },
            precision: self.precision,
            threads: self.threads,
        }
    }
}
