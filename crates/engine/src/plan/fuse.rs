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

/// A register program over one block of elements: registers `0..n_leaves` hold the step's
/// sources (widened to f32), register `n_leaves + i` holds node `i`, and the last node is the
/// step's result. Operands always name earlier registers.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedProgram {
    /// Number of leaf registers (= the step's sources).
    pub n_leaves: u8,
    /// The nodes, in evaluation order.
    pub nodes: Vec<FusedNode>,
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
/// steps of their own.
pub fn plan(
    func: &Function,
    facts: &FunctionFacts,
    needed: &[bool],
    homed: &dyn Fn(Handle<Value>) -> bool,
    keep_unfused: &dyn Fn(UnaryOp, FloatTy) -> bool,
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
    for (op_handle, op) in func.ops.iter() {
        if !needed[op_handle.index()] || op.results.len() != 1 {
            continue;
        }
        let value = op.results[0];
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
    FusionPlan { member, fusable }
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
        };
        assert!(!too_many.is_valid(1));
    }
}
