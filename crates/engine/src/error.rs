//! The engine's error type.

use milbridge_mil::diag::DiagCode;
use milbridge_mil::ir::{DType, OpKind};

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong compiling, loading or evaluating a plan.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// The requested function does not exist.
    #[error("no function named `{0}` in the program")]
    NoSuchFunction(String),
    /// The program has no function at all.
    #[error("the program has no function")]
    NoFunction,
    /// The requested ISA tier is not available on this host.
    #[error("the {0} tier is not available on this host")]
    IsaUnavailable(&'static str),
    /// A construct the engine does not execute (a dtype, a rank above the limit, ...).
    #[error("{what} is not supported by the engine (value `{value}`)")]
    Unsupported {
        /// What is unsupported.
        what: String,
        /// The value (variable name) it concerns.
        value: String,
    },
    /// An op could not be lowered (its attributes or operands were not what verification
    /// promises).
    #[error("cannot lower `{op}` producing `{value}`: {reason}")]
    Lower {
        /// The op kind.
        op: OpKind,
        /// The first result's name.
        value: String,
        /// Why.
        reason: String,
    },
    /// Compile-time constant folding failed.
    #[error("constant folding of `{op}` producing `{value}` failed: {reason}")]
    Fold {
        /// The op kind.
        op: OpKind,
        /// The first result's name.
        value: String,
        /// Why.
        reason: String,
    },
    /// R001: wrong number of input or output buffers.
    #[error("R001: expected {expected} {what} buffers, got {got}")]
    BufferCount {
        /// `input` or `output`.
        what: &'static str,
        /// Expected count.
        expected: usize,
        /// Given count.
        got: usize,
    },
    /// R001: a buffer's byte length differs from its parameter's type.
    #[error("R001: {what} `{name}` ({ty}) needs {expected} bytes, got {got}")]
    BufferLength {
        /// `input` or `output`.
        what: &'static str,
        /// Parameter or output name.
        name: String,
        /// Its type, as MIL text.
        ty: String,
        /// Expected byte length.
        expected: usize,
        /// Given byte length.
        got: usize,
    },
    /// R001: a buffer is not aligned to its element size.
    #[error(
        "R001: {what} `{name}` must be aligned to {align} bytes (address ends in {addr_mod:#x})"
    )]
    BufferAlignment {
        /// `input` or `output`.
        what: &'static str,
        /// Parameter or output name.
        name: String,
        /// Required alignment.
        align: usize,
        /// The address modulo the alignment.
        addr_mod: usize,
    },
    /// The workspace was made for another plan.
    #[error("the workspace holds {got} bytes but this plan needs {expected}")]
    WorkspaceMismatch {
        /// Bytes the plan needs.
        expected: usize,
        /// Bytes the workspace has.
        got: usize,
    },
    /// A run-time error raised by a kernel (R002–R004).
    #[error("{code}: {kernel} in `{value}`")]
    Runtime {
        /// R002, R003 or R004.
        code: DiagCode,
        /// The kernel's own description.
        kernel: KernelError,
        /// The value being computed.
        value: String,
    },
    /// Prepacked panels ([`crate::plan::pack::PackedInput`]) that do not fit the plan or the
    /// input they are used for.
    #[error("prepacked input: {reason}")]
    Packed {
        /// What does not fit.
        reason: String,
    },
    /// A serialised plan was written by another format version.
    #[error("plan format version {found} is not the supported version {expected}")]
    PlanVersion {
        /// Version in the stream.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A serialised plan is corrupt or truncated.
    #[error("corrupt plan: {0}")]
    CorruptPlan(String),
    /// A constant's dtype cannot be stored.
    #[error("constant `{value}` has dtype {dtype}, which the engine cannot store")]
    ConstDType {
        /// The value.
        value: String,
        /// Its dtype.
        dtype: DType,
    },
}

/// A run-time failure inside a kernel. Small and `Copy` so tasks can report it without
/// allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// R002: a gather index is outside `[-size, size)` (or `[0, size)` from ios17).
    #[error("gather index {index} is out of range for an axis of size {size}")]
    GatherIndex {
        /// The index read.
        index: i64,
        /// The axis size.
        size: usize,
    },
    /// R003: a run-time slice leaves its tensor.
    #[error("slice begin {begin} with size {size} leaves axis {axis} of size {dim}")]
    SliceBounds {
        /// The axis.
        axis: usize,
        /// Begin (after normalisation).
        begin: i64,
        /// Size.
        size: usize,
        /// Axis size.
        dim: usize,
    },
    /// R004: an int32 `pow` with a negative exponent.
    #[error("int32 pow with negative exponent {exponent}")]
    NegativeExponent {
        /// The exponent.
        exponent: i32,
    },
    /// R004: an int32 division by zero.
    #[error("int32 division of {numerator} by zero")]
    DivisionByZero {
        /// The numerator.
        numerator: i32,
    },
}

impl KernelError {
    /// The diagnostic code (mil-spec 9.8).
    pub fn code(self) -> DiagCode {
        match self {
            KernelError::GatherIndex { .. } => DiagCode::R002,
            KernelError::SliceBounds { .. } => DiagCode::R003,
            KernelError::NegativeExponent { .. } | KernelError::DivisionByZero { .. } => {
                DiagCode::R004
            }
        }
    }
}
