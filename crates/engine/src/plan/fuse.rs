//! The fusion pass: chains and trees of elementwise ops evaluated as one step.
//!
//! After dead-code elimination and output/concat homes, [`plan`] marks every value that can be
//! computed inside the one op that uses it: a float unary op, float binary op or float cast
//! (a *fusable* op) whose result has exactly one use, by another fusable op with the same
//! output shape, and which is neither a function output, a constant, nor homed in an output or
//! concat slot. Such a value is a *member*; the lowering emits no step for it, and the first
//! non-member (the *root*) becomes one [`StepOp::Fused`](crate::plan::step::StepOp::Fused)
//! step whose [`FusedProgram`] evaluates the whole tree per block of elements in registers,
//! reading each distinct input (*leaf*) once and writing the root once. Scalar constants
//! become immediates. Because members never get a buffer, memory planning sees fewer
//! allocations.
//!
//! Precision: in [`Precision::Exact`](crate::Precision::Exact) every node is rounded to its
//! declared dtype exactly where the unfused op would have stored it, and computes exactly what
//! the unfused kernel computes, so fused and unfused plans agree bit for bit (the exact
//! profile leaves the tier tables' vector transcendentals unfused for that; fusion itself is
//! opt-in, see [`crate::fusion_enabled`]). In [`Precision::Fast`](crate::Precision::Fast)
//! intermediates stay f32 and only the root is rounded to its dtype.
//!
//! A group is bounded by [`MAX_REGS`] registers and [`MAX_SRCS`] leaves; when a tree would
//! exceed either, its largest member subtrees become roots of their own steps. On the tier
//! tables an fp16 transcendental ([`tabled_activation`]) stays a table pass of its own in both
//! profiles; the arithmetic around it still fuses.
//!
//! When a fused program is one of linalg's compiled formulas (`ew::tree`), the lowering stores
//! the match in the program ([`FusedProgram::tree`], `kernels::fused::match_program`), so an
//! eval does not match again; a decoded plan's stored match is checked against a fresh one.
//!
//! Pattern steps (fast profile only, [`Pattern`]): before the trees are grown, [`plan`] looks
//! for two op sequences whose intermediates each have one use (and are neither outputs nor
//! concat slots; an intermediate with another user blocks the pattern):
//!
//! * RMSNorm as the training kernels write it: `x·x` or `square(x)`, `reduce_sum` (then `mul`
//!   by a constant within 2⁻¹⁰ of `1/n`) or `reduce_mean` over one axis with the dims kept,
//!   `add` a scalar `eps`, `pow(·, −0.5)` or `rsqrt(·, ε)` (then the `add` is optional), `mul`
//!   by `x`, `mul` by a weight broadcast along every other axis (operands in either order):
//!   one [`StepOp::RmsNorm`](crate::plan::step::StepOp::RmsNorm) step on linalg's
//!   `rmsnorm_channels` (`rmsnorm_rows` when the axis is the last);
//! * `softmax` along the last axis of `x · s + mask` (`s` a scalar constant, `mask` a float
//!   constant broadcast along every axis but the last two; either may be missing): one
//!   [`StepOp::SoftmaxScaled`](crate::plan::step::StepOp::SoftmaxScaled) step on linalg's
//!   `softmax_rows` with the scale and the mask rows (an f32 constant of the plan).
//!
//! Both compute in f32 from the inputs to the single rounded result, which the unfused steps
//! (rounded to fp16 after every op) cannot match bit for bit, so the exact profile never
//! forms them; their bounds are in the crate docs' precision table.

pub use milbridge_linalg::ew::tree::{MAX_LEAVES as MAX_TREE_LEAVES, Tree};
use milbridge_mil::facts::FunctionFacts;
use milbridge_mil::ir::{DType, Function, Handle, HandleVec, Op, OpKind, Value, ValueDef};
use milbridge_mil::ops::{self, GeluMode, OpAttrs};

use crate::elem::Ty;
use crate::kernels::table::FloatTy;
use crate::layout::MAX_RANK;
use crate::plan::step::{BinaryOp, MAX_SRCS, UnaryOp};

/// Registers of one fused program: its leaves plus its nodes.
pub const MAX_REGS: usize = 16;

/// What one node of a [`FusedProgram`] computes (operands are register indices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusedInstr {
    /// A constant (a scalar constant of the program, already in its dtype).
    Imm(f32),
    /// A unary op on register `x` (a cast is [`UnaryOp::Identity`] with the target dtype).
    Unary {
        /// The op.
        op: UnaryOp,
        /// Operand register.
        x: u8,
    },
    /// A binary op on registers `x` and `y`.
    Binary {
        /// The op.
        op: BinaryOp,
        /// Left operand register.
        x: u8,
        /// Right operand register.
        y: u8,
    },
}

/// One node: an instruction and the dtype its result is declared with (the rounding target in
/// the exact profile).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedNode {
    /// The computation.
    pub instr: FusedInstr,
    /// The declared dtype of the value.
    pub ty: FloatTy,
}

/// A leaf of a compiled tree formula: a source of the step or an immediate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TreeLeaf {
    /// Source (leaf register) `k` of the step.
    Src(u8),
    /// A constant.
    Imm(f32),
}

/// A fused program recognised at compile time as one of linalg's compiled formulas
/// ([`Tree`]): the formula, its leaves `a, b, c, d` in order (unused ones `Imm(0)`), and
/// whether its inner nodes round to fp16 (see `kernels::fused::match_program`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TreeForm {
    /// The formula.
    pub tree: Tree,
    /// Its leaves.
    pub leaves: [TreeLeaf; MAX_TREE_LEAVES],
    /// Whether every inner node is rounded to fp16 (the exact profile's fp16 trees).
    pub round_f16: bool,
}

/// A register program over one block of elements: registers `0..n_leaves` hold the step's
/// sources (widened to f32), register `n_leaves + i` holds node `i`, and the last node is the
/// step's result. Operands always name earlier registers.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedProgram {
    /// Number of leaf registers (= the step's sources).
    pub n_leaves: u8,
    /// The nodes, in evaluation order.
    pub nodes: Vec<FusedNode>,
    /// The compiled formula the program matched when the plan was compiled (for its source
    /// types and precision profile), `None` when it runs on the register program.
    pub tree: Option<TreeForm>,
}

impl FusedProgram {
    /// Number of MIL ops the program evaluates (its nodes that are not immediates).
    pub fn n_ops(&self) -> usize {
        self.nodes
            .iter()
            .filter(|node| !matches!(node.instr, FusedInstr::Imm(_)))
            .count()
    }

    /// Whether the program is well formed for `n_srcs` sources: at least one node, at most
    /// [`MAX_REGS`] registers, every operand an earlier register, the last node not an
    /// immediate (decoded plans are checked with this).
    pub fn is_valid(&self, n_srcs: usize) -> bool {
        let leaves = usize::from(self.n_leaves);
        if leaves != n_srcs || self.nodes.is_empty() || leaves + self.nodes.len() > MAX_REGS {
            return false;
        }
        let operands_ok = self.nodes.iter().enumerate().all(|(i, node)| {
            let defined = leaves + i;
            match node.instr {
                FusedInstr::Imm(_) => true,
                FusedInstr::Unary { x, .. } => usize::from(x) < defined,
                FusedInstr::Binary { x, y, .. } => {
                    usize::from(x) < defined && usize::from(y) < defined
                }
            }
        });
        operands_ok
            && !matches!(
                self.nodes.last().map(|node| node.instr),
                Some(FusedInstr::Imm(_))
            )
    }
}

/// The binary op of a MIL op kind, if it is one.
pub fn binary_of(kind: OpKind) -> Option<BinaryOp> {
    Some(match kind {
        OpKind::Add => BinaryOp::Add,
        OpKind::Sub => BinaryOp::Sub,
        OpKind::Mul => BinaryOp::Mul,
        OpKind::RealDiv => BinaryOp::RealDiv,
        OpKind::Pow => BinaryOp::Pow,
        OpKind::Maximum => BinaryOp::Maximum,
        OpKind::Minimum => BinaryOp::Minimum,
        _ => return None,
    })
}

/// The unary op of a MIL op with normalised attributes `attrs`, if it is one.
pub fn unary_of(attrs: &OpAttrs, kind: OpKind) -> Option<UnaryOp> {
    Some(match (attrs, kind) {
        (OpAttrs::Epsilon { eps }, OpKind::Rsqrt) => UnaryOp::Rsqrt(*eps as f32),
        (OpAttrs::Epsilon { eps }, OpKind::Log) => UnaryOp::Log(*eps as f32),
        (OpAttrs::Epsilon { eps }, OpKind::Inverse) => UnaryOp::Inverse(*eps as f32),
        (
            OpAttrs::Gelu {
                mode: GeluMode::Exact,
            },
            _,
        ) => UnaryOp::GeluExact,
        (
            OpAttrs::Gelu {
                mode: GeluMode::TanhApproximation,
            },
            _,
        ) => UnaryOp::GeluTanh,
        (
            OpAttrs::Gelu {
                mode: GeluMode::SigmoidApproximation,
            },
            _,
        ) => UnaryOp::GeluSigmoid,
        (OpAttrs::Clip { alpha, beta }, _) => UnaryOp::Clip(*alpha as f32, *beta as f32),
        (OpAttrs::Unary, OpKind::Abs) => UnaryOp::Abs,
        (OpAttrs::Unary, OpKind::Square) => UnaryOp::Square,
        (OpAttrs::Unary, OpKind::Sqrt) => UnaryOp::Sqrt,
        (OpAttrs::Unary, OpKind::Exp) => UnaryOp::Exp,
        (OpAttrs::Unary, OpKind::Erf) => UnaryOp::Erf,
        (OpAttrs::Unary, OpKind::Tanh) => UnaryOp::Tanh,
        (OpAttrs::Unary, OpKind::Sigmoid) => UnaryOp::Sigmoid,
        (OpAttrs::Unary, OpKind::Relu) => UnaryOp::Relu,
        (OpAttrs::Unary, OpKind::Silu) => UnaryOp::Silu,
        _ => return None,
    })
}

/// Whether the tier tables keep fp16 unary `op` a step of its own in every profile: a
/// transcendental (exp, erf, tanh, sigmoid, silu, gelu) whose fp16 kernel is one lookup in a
/// 65 536-entry table per element. Inside a fused step the same lookup goes lane by lane
/// through memory (measured about 2× slower than the table pass plus the unfused arithmetic),
/// and the fast profile's vector formula costs more than the pass it saves; the arithmetic
/// around the activation still fuses (SiLU·gate becomes the table pass and one
/// `(h1 · sig) · h3` step).
pub fn tabled_activation(op: UnaryOp, ty: FloatTy) -> bool {
    ty == FloatTy::F16
        && matches!(
            op,
            UnaryOp::Exp
                | UnaryOp::Erf
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Silu
                | UnaryOp::GeluExact
                | UnaryOp::GeluTanh
                | UnaryOp::GeluSigmoid
        )
}

/// How a fusable op computes its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusableOp {
    /// A unary op (a float-to-float cast is `Unary(Identity)`).
    Unary(UnaryOp),
    /// A binary op.
    Binary(BinaryOp),
}

/// A fusable op and its operand values (`x`, and `y` for binary ops).
pub type Fusable = (FusableOp, [Option<Handle<Value>>; 2]);

/// The fusion decisions for one function.
pub struct FusionPlan {
    /// Values computed inside their single consumer's fused step.
    pub member: HandleVec<Value, bool>,
    /// Per value: the fusable op that produces it (`None`: not fusable) and its operands.
    pub fusable: HandleVec<Value, Option<Fusable>>,
    /// Per value: the pattern step computing it (its intermediates are members).
    pub pattern: HandleVec<Value, Option<Pattern>>,
}

/// A sequence of ops computed by one pattern step (fast profile only, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// RMSNorm along `axis`: `x · w / sqrt(mean(x², axis) + eps)` (`w` broadcast along
    /// every other axis), computed in f32 by `linalg::ew::rmsnorm_channels` (or `rmsnorm_rows`
    /// when `axis` is the last axis).
    RmsNorm {
        /// The normalised tensor.
        x: Handle<Value>,
        /// The weight (as many elements as the axis, every other dimension 1).
        weight: Handle<Value>,
        /// The normalised axis.
        axis: usize,
        /// Epsilon (the sum of the `add` constant and `rsqrt`'s epsilon).
        eps: f32,
    },
    /// `softmax(scale · x + mask)` along the last axis, by `linalg::ew::softmax_rows`.
    SoftmaxScaled {
        /// The scores.
        x: Handle<Value>,
        /// The scale (1 without a `mul`).
        scale: f32,
        /// A constant additive mask broadcast along every axis but the last two, if any.
        mask: Option<Handle<Value>>,
    },
}

impl FusionPlan {
    /// Whether `value` is computed by a fused step of its own: a fusable value that is not a
    /// member and has at least one member operand.
    pub fn is_root(&self, value: Handle<Value>) -> bool {
        !self.member[value]
            && self.fusable[value].is_some_and(|(_, operands)| {
                operands
                    .iter()
                    .flatten()
                    .any(|&operand| self.member[operand])
            })
    }
}

fn float_ty(dtype: DType) -> Option<FloatTy> {
    Ty::from_dtype(dtype).and_then(FloatTy::of)
}

/// The fusable op producing the single result of `op`, with its operand values.
fn fusable_op(
    func: &Function,
    facts: &FunctionFacts,
    op_handle: Handle<Op>,
    keep_unfused: &dyn Fn(UnaryOp, FloatTy) -> bool,
) -> Option<Fusable> {
    let op = &func.ops[op_handle];
    if op.results.len() != 1 {
        return None;
    }
    let result = op.results[0];
    let result_ty = &facts.types[result];
    float_ty(result_ty.dtype)?;
    if result_ty.rank() > MAX_RANK {
        return None;
    }
    let operand = |name: &str| -> Option<Handle<Value>> {
        let value = op.single(name)?.value;
        float_ty(facts.types[value].dtype)?;
        (facts.types[value].rank() <= MAX_RANK).then_some(value)
    };
    let attrs = ops::attrs(func, facts, op_handle);
    match attrs {
        OpAttrs::Binary => {
            let binary = binary_of(op.kind)?;
            Some((
                FusableOp::Binary(binary),
                [Some(operand("x")?), Some(operand("y")?)],
            ))
        }
        OpAttrs::Cast { .. } => Some((
            FusableOp::Unary(UnaryOp::Identity),
            [Some(operand("x")?), None],
        )),
        _ => {
            let unary = unary_of(&attrs, op.kind)?;
            if keep_unfused(unary, float_ty(result_ty.dtype)?) {
                return None;
            }
            Some((FusableOp::Unary(unary), [Some(operand("x")?), None]))
        }
    }
}

/// The ops of `func` a plan computes: live (`needed`) and not folded to constants.
pub fn computed_ops<'f>(
    func: &'f Function,
    facts: &'f FunctionFacts,
    needed: &'f [bool],
) -> impl Iterator<Item = (Handle<Op>, &'f Op)> + 'f {
    func.ops.iter().filter(move |(op_handle, op)| {
        needed[op_handle.index()]
            && !op
                .results
                .iter()
                .all(|&result| facts.consts[result].is_some())
    })
}

/// Decides the fused groups of `func`: `needed` marks the live ops, `homed` the values that
/// live in an output or concat slot, `keep_unfused` the unary ops (by result type) that stay
/// steps of their own, `patterns` whether pattern steps ([`Pattern`]) are formed.
pub fn plan(
    func: &Function,
    facts: &FunctionFacts,
    needed: &[bool],
    homed: &dyn Fn(Handle<Value>) -> bool,
    keep_unfused: &dyn Fn(UnaryOp, FloatTy) -> bool,
    patterns: bool,
) -> FusionPlan {
    let n_values = func.values.len();
    let mut fusable: HandleVec<Value, Option<Fusable>> = HandleVec::filled(n_values, None);
    let mut uses = vec![0usize; n_values];
    let mut consumer: Vec<Option<Handle<Op>>> = vec![None; n_values];
    for output in &func.outputs {
        uses[output.value.index()] += 1;
    }
    for (op_handle, op) in computed_ops(func, facts, needed) {
        for arg in &op.args {
            for use_ in arg.value.uses() {
                uses[use_.value.index()] += 1;
                consumer[use_.value.index()] = Some(op_handle);
            }
        }
        if let Some(found) = fusable_op(func, facts, op_handle, keep_unfused) {
            fusable[op.results[0]] = Some(found);
        }
    }
    let mut member: HandleVec<Value, bool> = HandleVec::filled(n_values, false);
    let mut pattern: HandleVec<Value, Option<Pattern>> = HandleVec::filled(n_values, None);
    if patterns {
        let single = |value: Handle<Value>| {
            uses[value.index()] == 1 && !homed(value) && facts.consts[value].is_none()
        };
        let matcher = Matcher {
            func,
            facts,
            single: &single,
        };
        for (op_handle, op) in computed_ops(func, facts, needed) {
            if op.results.len() != 1 {
                continue;
            }
            let root = op.results[0];
            // A value already inside a pattern is no root of another.
            if member[root] {
                continue;
            }
            let found = matcher
                .rmsnorm(op_handle)
                .or_else(|| matcher.softmax(op_handle));
            if let Some((found, members)) = found {
                // Members of an earlier pattern cannot be shared (each has one use).
                if members.iter().any(|&v| member[v] || pattern[v].is_some()) {
                    continue;
                }
                for &value in &members {
                    member[value] = true;
                    fusable[value] = None;
                }
                fusable[root] = None;
                pattern[root] = Some(found);
            }
        }
    }
    for (op_handle, op) in func.ops.iter() {
        if !needed[op_handle.index()] || op.results.len() != 1 {
            continue;
        }
        let value = op.results[0];
        if member[value] {
            continue;
        }
        if fusable[value].is_none() || facts.consts[value].is_some() || homed(value) {
            continue;
        }
        if uses[value.index()] != 1 {
            continue;
        }
        let Some(user) = consumer[value.index()] else {
            continue;
        };
        let user_result = func.ops[user].results[0];
        if func.ops[user].results.len() != 1
            || fusable[user_result].is_none()
            || facts.consts[user_result].is_some()
            || facts.types[user_result].shape != facts.types[value].shape
        {
            continue;
        }
        member[value] = true;
    }
    // Budget: registers and distinct leaves per tree, in topological order (operands first).
    // When a tree is too big, its largest member operand becomes a root of its own.
    let mut nodes = vec![0usize; n_values];
    let mut leaf_sets: Vec<Vec<Handle<Value>>> = vec![Vec::new(); n_values];
    for (op_handle, op) in func.ops.iter() {
        if !needed[op_handle.index()] || op.results.len() != 1 {
            continue;
        }
        let value = op.results[0];
        let Some((_, operands)) = fusable[value] else {
            continue;
        };
        loop {
            let mut total_nodes = 1;
            let mut set: Vec<Handle<Value>> = Vec::new();
            let mut largest: Option<Handle<Value>> = None;
            for &operand in operands.iter().flatten() {
                if member[operand] {
                    total_nodes += nodes[operand.index()];
                    for &leaf in &leaf_sets[operand.index()] {
                        if !set.contains(&leaf) {
                            set.push(leaf);
                        }
                    }
                    let size = |v: Handle<Value>| nodes[v.index()] + leaf_sets[v.index()].len();
                    if largest.is_none_or(|l| size(l) < size(operand)) {
                        largest = Some(operand);
                    }
                } else if facts.consts[operand]
                    .as_ref()
                    .is_some_and(|tensor| tensor.ty.numel() == 1)
                {
                    // An immediate: a node of its own.
                    total_nodes += 1;
                } else if !set.contains(&operand) {
                    set.push(operand);
                }
            }
            match largest {
                Some(big) if total_nodes + set.len() > MAX_REGS || set.len() > MAX_SRCS => {
                    member[big] = false;
                }
                _ => {
                    nodes[value.index()] = total_nodes;
                    leaf_sets[value.index()] = set;
                    break;
                }
            }
        }
    }
    FusionPlan {
        member,
        fusable,
        pattern,
    }
}

/// Recognises the pattern steps' op sequences.
struct Matcher<'a> {
    func: &'a Function,
    facts: &'a FunctionFacts,
    /// Whether an intermediate may be absorbed: one use, not homed, not constant.
    single: &'a dyn Fn(Handle<Value>) -> bool,
}

impl Matcher<'_> {
    /// The op producing `value` (only when `value` is its single result) and its kind.
    fn def(&self, value: Handle<Value>) -> Option<(Handle<Op>, OpKind)> {
        let op = producer(self.func, value)?;
        (self.func.ops[op].results.len() == 1).then(|| (op, self.func.ops[op].kind))
    }

    /// Operand `name` of `op`.
    fn arg(&self, op: Handle<Op>, name: &str) -> Option<Handle<Value>> {
        Some(self.func.ops[op].single(name)?.value)
    }

    /// The value of a scalar constant.
    fn scalar(&self, value: Handle<Value>) -> Option<f64> {
        let tensor = self.facts.consts[value].as_ref()?;
        if tensor.ty.numel() != 1 {
            return None;
        }
        tensor.to_f64_vec()?.first().copied()
    }

    /// `(x, y)` of binary op `kind` producing `value`, both orders when `commutes`.
    fn binary(
        &self,
        value: Handle<Value>,
        kind: OpKind,
    ) -> [Option<(Handle<Value>, Handle<Value>)>; 2] {
        match self.def(value) {
            Some((op, found)) if found == kind => match (self.arg(op, "x"), self.arg(op, "y")) {
                (Some(x), Some(y)) => [Some((x, y)), Some((y, x))],
                _ => [None, None],
            },
            _ => [None, None],
        }
    }

    fn float(&self, value: Handle<Value>) -> Option<FloatTy> {
        float_ty(self.facts.types[value].dtype)
    }

    /// `root = (x · rrms) · w` with `rrms = (mean(x², axis) + eps)^-½` written as the
    /// trainer's kernels write it (module docs), every intermediate of one use.
    fn rmsnorm(&self, root_op: Handle<Op>) -> Option<(Pattern, Vec<Handle<Value>>)> {
        let root = self.func.ops[root_op].results[0];
        let ty = self.float(root)?;
        for (xr, weight) in self.binary(root, OpKind::Mul).into_iter().flatten() {
            if !(self.single)(xr) || self.float(weight) != Some(ty) {
                continue;
            }
            for (x, rrms) in self.binary(xr, OpKind::Mul).into_iter().flatten() {
                if self.float(x) != Some(ty) || !(self.single)(rrms) {
                    continue;
                }
                let Some((axis, eps, mut members)) = self.rrms(rrms, x) else {
                    continue;
                };
                let shape = &self.facts.types[x].shape;
                let w_shape = &self.facts.types[weight].shape;
                // The weight: the axis' elements, broadcast along every other axis.
                let offset = shape.len().checked_sub(w_shape.len())?;
                let w_ok = self.facts.types[root].shape == *shape
                    && w_shape.iter().enumerate().all(|(d, &n)| {
                        if d + offset == axis {
                            n == shape[axis]
                        } else {
                            n == 1
                        }
                    })
                    && (axis >= offset || shape[axis] == 1);
                if !w_ok {
                    continue;
                }
                members.extend([rrms, xr]);
                return Some((
                    Pattern::RmsNorm {
                        x,
                        weight,
                        axis,
                        eps,
                    },
                    members,
                ));
            }
        }
        None
    }

    /// `rrms = pow(t, -0.5)` or `rsqrt(t, ε)`, `t = u + eps` (or `u` under `rsqrt`), `u =
    /// reduce_mean(sq)` or `reduce_sum(sq) · k` with `k` within fp16 rounding of `1/n`, `sq =
    /// x · x` or `square(x)`, over one axis with the dims kept: the axis, eps and members.
    fn rrms(
        &self,
        rrms: Handle<Value>,
        x: Handle<Value>,
    ) -> Option<(usize, f32, Vec<Handle<Value>>)> {
        let mut members = Vec::new();
        let (op, kind) = self.def(rrms)?;
        let mut eps = 0f64;
        let t = match kind {
            OpKind::Pow => {
                let exponent = self.scalar(self.arg(op, "y")?)?;
                if exponent != -0.5 {
                    return None;
                }
                self.arg(op, "x")?
            }
            OpKind::Rsqrt => {
                let OpAttrs::Epsilon { eps: e } = ops::attrs(self.func, self.facts, op) else {
                    return None;
                };
                eps += e;
                self.arg(op, "x")?
            }
            _ => return None,
        };
        let mut u = t;
        for (a, e) in self.binary(t, OpKind::Add).into_iter().flatten() {
            if let Some(e) = self.scalar(e)
                && (self.single)(t)
            {
                eps += e;
                members.push(t);
                u = a;
                break;
            }
        }
        if u == t && kind == OpKind::Pow {
            // pow(-0.5) without an epsilon is not the RMSNorm kernel's formula.
            return None;
        }
        if !(self.single)(u) {
            return None;
        }
        members.push(u);
        let (reduce_op, reduce_kind) = self.def(u)?;
        let (reduce, scaled) = match reduce_kind {
            OpKind::ReduceMean => (reduce_op, None),
            OpKind::Mul => {
                let (ss, k) = self
                    .binary(u, OpKind::Mul)
                    .into_iter()
                    .flatten()
                    .find_map(|(ss, k)| Some((ss, self.scalar(k)?)))?;
                if !(self.single)(ss) {
                    return None;
                }
                members.push(ss);
                let (op, kind) = self.def(ss)?;
                if kind != OpKind::ReduceSum {
                    return None;
                }
                (op, Some(k))
            }
            _ => return None,
        };
        let OpAttrs::Reduce { axes, keep_dims } = ops::attrs(self.func, self.facts, reduce) else {
            return None;
        };
        if !keep_dims || axes.len() != 1 {
            return None;
        }
        let axis = axes[0];
        let n = *self.facts.types[x].shape.get(axis)?;
        if let Some(k) = scaled
            && (k * n as f64 - 1.0).abs() > 1.0 / 1024.0
        {
            // Not a mean (within the fp16 rounding of 1/n the kernel's exact 1/n is used).
            return None;
        }
        let sq = self.arg(reduce, "x")?;
        if !(self.single)(sq) {
            return None;
        }
        let (sq_op, sq_kind) = self.def(sq)?;
        let squares_x = match sq_kind {
            OpKind::Square => self.arg(sq_op, "x") == Some(x),
            OpKind::Mul => self.arg(sq_op, "x") == Some(x) && self.arg(sq_op, "y") == Some(x),
            _ => false,
        };
        if !squares_x || self.facts.types[sq].shape != self.facts.types[x].shape {
            return None;
        }
        members.push(sq);
        Some((axis, eps as f32, members))
    }

    /// `softmax(x · scale + mask)` (or without the `mul` or the `add`) along the last axis,
    /// `scale` a scalar constant, `mask` a constant broadcast along every axis but the last
    /// two.
    fn softmax(&self, root_op: Handle<Op>) -> Option<(Pattern, Vec<Handle<Value>>)> {
        let op = &self.func.ops[root_op];
        if op.kind != OpKind::Softmax {
            return None;
        }
        let root = op.results[0];
        let ty = self.float(root)?;
        let shape = &self.facts.types[root].shape;
        let rank = shape.len();
        let OpAttrs::Softmax { axis } = ops::attrs(self.func, self.facts, root_op) else {
            return None;
        };
        if rank < 2 || axis + 1 != rank {
            return None;
        }
        let ms = self.arg(root_op, "x")?;
        if !(self.single)(ms) {
            return None;
        }
        let mut members = vec![ms];
        let mut scaled = ms;
        let mut mask = None;
        for (s, m) in self.binary(ms, OpKind::Add).into_iter().flatten() {
            let Some(tensor) = self.facts.consts[m].as_ref() else {
                continue;
            };
            let m_shape = &tensor.ty.shape;
            let lead = rank.saturating_sub(2);
            let offset = rank.checked_sub(m_shape.len())?;
            let broadcast_ok = m_shape
                .iter()
                .enumerate()
                .all(|(d, &n)| n == 1 || (d + offset >= lead && n == shape[d + offset]));
            if broadcast_ok && float_ty(tensor.ty.dtype).is_some() {
                mask = Some(m);
                scaled = s;
                break;
            }
        }
        let mut x = scaled;
        let mut scale = 1f64;
        if scaled != ms && !(self.single)(scaled) {
            // The scaled scores have another user: the pattern is the mask only.
            x = scaled;
        } else {
            for (a, c) in self.binary(scaled, OpKind::Mul).into_iter().flatten() {
                if let Some(c) = self.scalar(c) {
                    scale = c;
                    if scaled != ms {
                        members.push(scaled);
                    }
                    x = a;
                    break;
                }
            }
        }
        if x == ms || self.float(x) != Some(ty) || self.facts.types[x].shape != *shape {
            return None;
        }
        Some((
            Pattern::SoftmaxScaled {
                x,
                scale: scale as f32,
                mask,
            },
            members,
        ))
    }
}

/// The producer op of `value`, if an op defines it.
pub fn producer(func: &Function, value: Handle<Value>) -> Option<Handle<Op>> {
    match func.values[value].def {
        ValueDef::Result { op, .. } => Some(op),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_validated() {
        let node = |instr| FusedNode {
            instr,
            ty: FloatTy::F16,
        };
        let good = FusedProgram {
            n_leaves: 2,
            nodes: vec![
                node(FusedInstr::Imm(0.5)),
                node(FusedInstr::Binary {
                    op: BinaryOp::Mul,
                    x: 0,
                    y: 2,
                }),
                node(FusedInstr::Binary {
                    op: BinaryOp::Add,
                    x: 3,
                    y: 1,
                }),
            ],
            tree: None,
        };
        assert!(good.is_valid(2));
        assert_eq!(good.n_ops(), 2);
        assert!(!good.is_valid(3), "leaf count must match the sources");
        let mut forward = good.clone();
        forward.nodes[1].instr = FusedInstr::Unary {
            op: UnaryOp::Exp,
            x: 3,
        };
        assert!(
            !forward.is_valid(2),
            "an operand must be an earlier register"
        );
        let mut imm_last = good.clone();
        imm_last.nodes.push(node(FusedInstr::Imm(1.0)));
        assert!(!imm_last.is_valid(2));
        let too_many = FusedProgram {
            n_leaves: 1,
            nodes: vec![
                node(FusedInstr::Unary {
                    op: UnaryOp::Abs,
                    x: 0,
                });
                MAX_REGS
            ],
            tree: None,
        };
        assert!(!too_many.is_valid(1));
    }
}
