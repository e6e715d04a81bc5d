//! The steps of a compiled plan: one kernel call each, with fully resolved operand layouts.

use std::ops::Range;

use crate::elem::Ty;
use crate::layout::Layout;
pub use crate::plan::fuse::{FusedInstr, FusedNode, FusedProgram};

/// Maximum number of source operands of one step (the leaves of a fused step; other steps
/// use at most 4).
pub const MAX_SRCS: usize = 8;

/// Which buffer an operand lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufId {
    /// The caller's `k`-th input buffer (function parameter `k`).
    Input(u32),
    /// The caller's `k`-th output buffer.
    Output(u32),
    /// The plan's `k`-th constant.
    Const(u32),
    /// The workspace arena.
    Arena,
}

/// A tensor operand: a byte range of a buffer seen through a layout (offsets in elements,
/// relative to the start of the range).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operand {
    /// The buffer.
    pub buf: BufId,
    /// The bytes of the buffer the layout addresses (for the arena: one allocation).
    pub range: Range<usize>,
    /// Where the elements are.
    pub layout: Layout,
    /// Element type.
    pub ty: Ty,
}

/// Elementwise unary functions (mil-spec 6.5), with their constant parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `|x|`.
    Abs,
    /// `x·x`.
    Square,
    /// `√x`.
    Sqrt,
    /// `eˣ`.
    Exp,
    /// `erf(x)`.
    Erf,
    /// `tanh(x)`.
    Tanh,
    /// `1/(1+e⁻ˣ)`.
    Sigmoid,
    /// `max(x, 0)` (+0 for -0).
    Relu,
    /// `x·sigmoid(x)`.
    Silu,
    /// `1/√(x+ε)`.
    Rsqrt(f32),
    /// `ln(x+ε)`.
    Log(f32),
    /// `1/(x+ε)`.
    Inverse(f32),
    /// `0.5·x·(1+erf(x/√2))`.
    GeluExact,
    /// `0.5·x·(1+tanh(√(2/π)·(x+0.044715x³)))`.
    GeluTanh,
    /// `x·sigmoid(1.702x)`.
    GeluSigmoid,
    /// `min(max(x, α), β)`.
    Clip(f32, f32),
    /// Identity (a copy through the arithmetic path, used for dtype-preserving moves).
    Identity,
}

/// Number of unary kernel slots.
pub const N_UNARY: usize = 17;

impl UnaryOp {
    /// The kernel-table slot.
    pub fn slot(self) -> usize {
        match self {
            UnaryOp::Abs => 0,
            UnaryOp::Square => 1,
            UnaryOp::Sqrt => 2,
            UnaryOp::Exp => 3,
            UnaryOp::Erf => 4,
            UnaryOp::Tanh => 5,
            UnaryOp::Sigmoid => 6,
            UnaryOp::Relu => 7,
            UnaryOp::Silu => 8,
            UnaryOp::Rsqrt(_) => 9,
            UnaryOp::Log(_) => 10,
            UnaryOp::Inverse(_) => 11,
            UnaryOp::GeluExact => 12,
            UnaryOp::GeluTanh => 13,
            UnaryOp::GeluSigmoid => 14,
            UnaryOp::Clip(..) => 15,
            UnaryOp::Identity => 16,
        }
    }

    /// The name used in kernel names.
    pub fn name(self) -> &'static str {
        UNARY_NAMES[self.slot()]
    }
}

/// Kernel-name fragments of the unary slots.
pub const UNARY_NAMES: [&str; N_UNARY] = [
    "abs",
    "square",
    "sqrt",
    "exp",
    "erf",
    "tanh",
    "sigmoid",
    "relu",
    "silu",
    "rsqrt",
    "log",
    "inverse",
    "gelu",
    "gelutanh",
    "gelusigmoid",
    "clip",
    "identity",
];

/// Elementwise binary arithmetic (mil-spec 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x · y`.
    Mul,
    /// `x / y`.
    RealDiv,
    /// `x ^ y`.
    Pow,
    /// `max(x, y)` (NaN-propagating).
    Maximum,
    /// `min(x, y)` (NaN-propagating).
    Minimum,
}

/// Number of binary slots.
pub const N_BINARY: usize = 7;

/// Kernel-name fragments of the binary slots.
pub const BINARY_NAMES: [&str; N_BINARY] =
    ["add", "sub", "mul", "realdiv", "pow", "maximum", "minimum"];

/// Comparisons (mil-spec 6.4), producing bool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `x == y`.
    Equal,
    /// `x != y`.
    NotEqual,
    /// `x > y`.
    Greater,
    /// `x >= y`.
    GreaterEqual,
    /// `x < y`.
    Less,
    /// `x <= y`.
    LessEqual,
}

/// Number of comparison slots.
pub const N_CMP: usize = 6;

/// Kernel-name fragments of the comparison slots.
pub const CMP_NAMES: [&str; N_CMP] = [
    "equal",
    "notequal",
    "greater",
    "greaterequal",
    "less",
    "lessequal",
];

/// Reductions (mil-spec 6.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum (NaN-propagating).
    Max,
}

/// Number of reduction slots.
pub const N_REDUCE: usize = 3;

/// Kernel-name fragments of the reduction slots.
pub const REDUCE_NAMES: [&str; N_REDUCE] = ["reducesum", "reducemean", "reducemax"];

/// What a step computes. Layout conventions (set up by the planner) are documented per
/// variant; `srcs` and `dst` refer to [`Step::srcs`] and [`Step::dst`].
#[derive(Clone, Debug, PartialEq)]
pub enum StepOp {
    /// `dst = srcs[0]` (same shape, same type; any layouts).
    Copy,
    /// `dst = f(srcs[0])`, same shape.
    Unary(UnaryOp),
    /// `dst = f(srcs[0], srcs[1])`; sources already broadcast to dst's shape.
    Binary(BinaryOp),
    /// `dst = srcs[0] ⋚ srcs[1]` (bool dst); sources broadcast to dst's shape.
    Compare(CmpOp),
    /// `dst = cast(srcs[0])` to dst's type.
    Cast,
    /// Softmax along the last axis of `srcs[0]` and dst (the planner permutes the axis last).
    Softmax,
    /// Softmax along the middle axis of rank-3 `[outer, axis, inner]` layouts of `srcs[0]`
    /// and dst, streaming contiguous rows (for a softmax over channels of `[1, C, 1, S]`).
    SoftmaxColumns,
    /// `srcs[0]` has shape `dst.shape ++ reduced`, with `n_reduced` trailing reduced dims.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// Number of trailing reduced dimensions of `srcs[0]`.
        n_reduced: usize,
    },
    /// `dst[b, m, n] = Σₖ srcs[0][b, m, k] · srcs[1][b, k, n] (+ srcs[2][b, m, n])`, layouts of
    /// equal rank ≥ 2 with the batch dimensions broadcast.
    Matmul {
        /// Whether `srcs[2]` is a bias (broadcast to dst's shape).
        bias: bool,
    },
    /// 3-d convolution: `srcs[0]` `[N, Cin, D, H, W]`, `srcs[1]` `[Cout, Cin/groups, KD, KH, KW]`,
    /// optional `srcs[2]` bias `[Cout]`, dst `[N, Cout, OD, OH, OW]`.
    Conv {
        /// Strides per spatial dim.
        strides: [usize; 3],
        /// Dilations per spatial dim.
        dilations: [usize; 3],
        /// Padding before each spatial dim.
        pads_before: [usize; 3],
        /// Groups.
        groups: usize,
        /// Whether `srcs[2]` is a bias.
        bias: bool,
    },
    /// Layer norm over the last `n_norm` dims; `srcs[1]` (gamma) and `srcs[2]` (beta) are
    /// broadcast to `srcs[0]`'s shape.
    LayerNorm {
        /// Number of trailing normalised dims.
        n_norm: usize,
        /// Epsilon.
        eps: f32,
    },
    /// Scaled dot-product attention: srcs `q [*, L, E]`, `k [*, S, E]`, `v [*, S, EV]`,
    /// optional mask `srcs[3]` broadcast to `[*, L, S]`; dst `[*, L, EV]`.
    Sdpa {
        /// Whether `srcs[3]` is a mask.
        mask: bool,
    },
    /// `dst = srcs[0] ? srcs[1] : srcs[2]`, all broadcast to dst's shape.
    Select,
    /// Gather (mil-spec 6.15.4): `srcs[0]` data, `srcs[1]` indices.
    Gather {
        /// Normalised axis.
        axis: usize,
        /// Batch dims.
        batch_dims: usize,
        /// Whether negative indices wrap (ios15/16).
        wrap_negative: bool,
    },
    /// Keeps the band `(lower < 0 or m - n <= lower) and (upper < 0 or n - m <= upper)` of the
    /// last two axes, zero elsewhere.
    BandPart {
        /// Lower bandwidth (negative: all).
        lower: i64,
        /// Upper bandwidth (negative: all).
        upper: i64,
    },
    /// `dst[i] = srcs[0][i mod shape]`.
    Tile,
    /// `dst[i] = value` (converted by dst's type rule).
    Fill {
        /// The value.
        value: f64,
    },
    /// `slice_by_size` with a run-time `begin` (`srcs[1]`, integer, one entry per axis); dst's
    /// shape is the size.
    DynSlice,
    /// `dst = clamp(round_half_even(srcs[0] / srcs[1]) + srcs[2])`, scale and zero point
    /// broadcast to `srcs[0]`'s shape (`srcs[2]` optional).
    Quantize {
        /// Whether `srcs[2]` is a zero point.
        zero_point: bool,
    },
    /// `dst = (srcs[0] - srcs[2]) · srcs[1]`, computed in f32.
    Dequantize {
        /// Whether `srcs[2]` is a zero point.
        zero_point: bool,
    },
    /// A fused tree of float elementwise ops ([`crate::plan::fuse`]): `dst = program(srcs)`,
    /// every source broadcast to dst's shape, float dst.
    Fused(FusedProgram),
    /// RMSNorm pattern ([`crate::plan::fuse::Pattern::RmsNorm`], fast profile):
    /// `dst[o, c, i] = srcs[0][o, c, i] · srcs[1][c] / sqrt(mean_c srcs[0][o, c, i]² + eps)`;
    /// `srcs[0]` and dst contiguous `[outer, C, inner]`, `srcs[1]` contiguous `[C]`, one
    /// float type.
    RmsNorm {
        /// Epsilon.
        eps: f32,
    },
    /// Scaled, masked softmax pattern ([`crate::plan::fuse::Pattern::SoftmaxScaled`], fast
    /// profile): `dst[o, l, :] = softmax(scale · srcs[0][o, l, :] + srcs[1][l, :])` over
    /// `[outer, L, n]` layouts whose rows are contiguous; `srcs[1]` (when `mask`) an f32
    /// contiguous `[L, n]`.
    SoftmaxScaled {
        /// The scale.
        scale: f32,
        /// Whether `srcs[1]` is an additive mask.
        mask: bool,
    },
}

/// One kernel call.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// What to compute.
    pub op: StepOp,
    /// Source operands (at most [`MAX_SRCS`]).
    pub srcs: Vec<Operand>,
    /// Destination operand.
    pub dst: Operand,
    /// Scratch bytes in the arena (may be empty).
    pub scratch: Range<usize>,
    /// Name of the MIL value this step computes (for errors and stats).
    pub value: String,
    /// Why the step exists: `Compute`, or a copy the planner had to insert.
    pub role: StepRole,
}

/// Why a step exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepRole {
    /// Computes an op.
    Compute,
    /// Materialises a view that no consumer could read in place (a copy).
    Materialize,
    /// Copies one input of a `concat` into its place.
    Concat,
}
