//! The fused elementwise kernel: runs a [`FusedProgram`] (see [`crate::plan::fuse`]) over the
//! destination row segment by row segment.
//!
//! * When the program is one of linalg's compiled trees (matched when the plan was compiled,
//!   [`match_program`], and stored in [`FusedProgram::tree`]) (`ew::tree::Tree`: SiLU·gate forms,
//!   `(a·b)·c`, `a·b + c`, `(a ± b)·c`, `(a·(b − c))·d`, `(a − b·c)·d`, `a·b + c·d`; add and mul
//!   operands may swap: its inner nodes are rounded alike and its leaves share one storage
//!   type) and every source of the segment is a contiguous run or a broadcast value, the segment
//!   goes to `ew::tree::run`: a monomorphised loop, values in vector registers.
//! * Otherwise, when every node has a vector form (add, sub, mul, real_div, casts, immediates,
//!   fp16 table lookups, the fast profile's exp/sigmoid/silu) and the sources are runs or
//!   broadcast values, the segment goes to linalg's `ew::program::run` on the plan's tier: one
//!   sweep of a register program, the output written in place.
//! * Otherwise the block interpreter here evaluates each node over blocks of `BLOCK` (1024)
//!   elements in f32 stack registers, every source read once per block.
//!
//! Per node, by profile:
//!
//! * exact: exactly what the unfused kernel computes (f32 arithmetic, transcendentals via
//!   [`unary_f32`], an fp16 input of a parameterless unary op looked up in a 65 536-entry
//!   table of those results, as the tier kernels do), then the result rounded to the node's
//!   dtype (nearest-even): bit-identical to the unfused steps on every tier, on both paths.
//! * fast: no intermediate rounding; `exp`, `sigmoid` and `silu` use an f32 `exp` (Cephes'
//!   polynomial, ≤ 2 f32 ulps: linalg's vector one on contiguous runs, [`exp_f32`] in the
//!   block interpreter), every other op the exact profile's f32 formula.

use half::f16;
use milbridge_linalg::convert;
use milbridge_linalg::cpu::Isa;
use milbridge_linalg::ew::Storage;
use milbridge_linalg::ew::program as lprog;
use milbridge_linalg::ew::stream::{self, BinaryOp as StreamOp, Operand};
use milbridge_linalg::ew::tree::{self as ltree, Tree};

use crate::Precision;
use crate::elem::{Elem, Ty};
use crate::error::KernelError;
use crate::exec::raw::DstTiles;
use crate::kernels::generic::elementwise::{binary_f, load_row, unary_f32};
use crate::kernels::table::FloatTy;
use crate::kernels::{KernelCtx, SEG, SrcView};
use crate::layout::MAX_RANK;
use crate::plan::fuse::{FusedInstr, FusedProgram, MAX_REGS, TreeForm, TreeLeaf};
use crate::plan::step::{BinaryOp, MAX_SRCS, N_UNARY, StepOp, UnaryOp};

type KResult = Result<(), KernelError>;

/// Elements per block: larger than the portable kernels' `BLOCK`, so that the per-block calls
/// (conversions, row bookkeeping) are amortised; the register file (64 KiB) stays in L2.
const BLOCK: usize = 1024;

/// Fused program, fp16 destination (vector code of the plan's tier).
pub fn fused_f16(ctx: &mut KernelCtx<'_>) -> KResult {
    run::<f16>(ctx, ctx.isa, convert::f32_to_f16_with)
}

/// Fused program, fp16 destination, portable code only (the portable table's kernel).
pub fn fused_f16_portable(ctx: &mut KernelCtx<'_>) -> KResult {
    run::<f16>(ctx, Isa::Generic, convert::f32_to_f16_with)
}

/// Fused program, fp32 destination, portable code only (the portable table's kernel).
pub fn fused_f32_portable(ctx: &mut KernelCtx<'_>) -> KResult {
    run::<f32>(ctx, Isa::Generic, |_, src, dst| dst.copy_from_slice(src))
}

/// Fused program, fp32 destination.
pub fn fused_f32(ctx: &mut KernelCtx<'_>) -> KResult {
    run::<f32>(ctx, ctx.isa, |_, src, dst| dst.copy_from_slice(src))
}

/// Loads row segment `j..j + out.len()` of an fp16 source at `outer`: contiguous runs through
/// linalg's tiered conversion; strided runs (a transposed view, such as RoPE's heads) gathered
/// as fp16 bits into `gather` and converted by the same tiered conversion (per-element
/// `f16::to_f32` costs several times more); a broadcast value splatted.
#[inline]
fn load_f16(
    view: &SrcView<'_, f16>,
    outer: &[usize],
    j: usize,
    out: &mut [f32],
    gather: &mut [f16],
    isa: Isa,
) {
    let stride = view.last_stride();
    let base = view.layout.offset_of(outer) + j * stride;
    let n = out.len();
    if stride == 1 {
        convert::f16_to_f32_with(isa, &view.data[base..base + n], out);
    } else if stride == 0 || n <= 1 {
        view.load_run(base, stride, out);
    } else {
        let run = &view.data[base..=base + (n - 1) * stride];
        for (dst, src) in gather[..n].iter_mut().zip(run.iter().step_by(stride)) {
            *dst = *src;
        }
        convert::f16_to_f32_with(isa, &gather[..n], out);
    }
}

/// A source of the program, typed.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    F16(SrcView<'a, f16>),
    F32(SrcView<'a, f32>),
}

/// The results of the portable unary kernel for every fp16 bit pattern (`None` for ops with
/// parameters, which have no table).
type UnaryTable = [f16; 1 << 16];

fn has_table(op: UnaryOp) -> bool {
    !matches!(
        op,
        UnaryOp::Rsqrt(_) | UnaryOp::Log(_) | UnaryOp::Inverse(_) | UnaryOp::Clip(..)
    )
}

/// The table of parameterless op `op`, built on first use (the first eval of a plan).
fn unary_table(op: UnaryOp) -> &'static UnaryTable {
    static TABLES: [std::sync::OnceLock<Box<UnaryTable>>; N_UNARY] =
        [const { std::sync::OnceLock::new() }; N_UNARY];
    TABLES[op.slot()].get_or_init(|| {
        let mut table = Box::new([f16::ZERO; 1 << 16]);
        for (bits, entry) in (0..=u16::MAX).zip(table.iter_mut()) {
            *entry = f16::from_f32(unary_f32(op, f16::from_bits(bits).to_f32()));
        }
        table
    })
}

/// How each node runs, decided once per step (not per block).
#[derive(Clone, Copy)]
enum Plan1 {
    Imm(f32),
    /// A table lookup of an fp16-exact register.
    Table(&'static UnaryTable, u8),
    /// The fast profile's vector formula.
    Fast(UnaryOp, u8),
    Unary(UnaryOp, u8),
    Binary(crate::plan::step::BinaryOp, u8, u8),
}

fn run<O: Elem<C = f32> + Storage>(
    ctx: &mut KernelCtx<'_>,
    isa: Isa,
    store: fn(Isa, &[f32], &mut [O]),
) -> KResult {
    let StepOp::Fused(program) = ctx.op else {
        panic!(
            "fused kernel called for {:?} (kernel table invariant)",
            ctx.op
        )
    };
    let program: &FusedProgram = program;
    let n_leaves = usize::from(program.n_leaves);
    let exact = ctx.precision == Precision::Exact;
    let mut leaves: [Option<Leaf<'_>>; MAX_SRCS] = [None; MAX_SRCS];
    // The dtype of each register; in the exact profile every register holds a value exactly
    // representable in it.
    let mut reg_ty = [FloatTy::F32; MAX_REGS];
    for (k, leaf) in leaves.iter_mut().enumerate().take(n_leaves) {
        *leaf = Some(match ctx.srcs[k].ty {
            Ty::F16 => {
                reg_ty[k] = FloatTy::F16;
                Leaf::F16(ctx.src::<f16>(k))
            }
            Ty::F32 => Leaf::F32(ctx.src::<f32>(k)),
            other => panic!("fused source of type {other:?} (planner invariant)"),
        });
    }
    let NodePlans {
        plans,
        round,
        fill_imm,
    } = node_plans(program, &|k| reg_ty[k] == FloatTy::F16, exact);
    let nodes = &plans[..program.nodes.len()];
    let round = &round[..program.nodes.len()];
    let fill_imm = &fill_imm[..program.nodes.len()];
    let vector = vector_program(nodes, round);
    // The formula was matched when the plan was compiled (`match_program`); the table of a
    // tabled formula is its program's one table node.
    let compiled = program.tree.map(|form| Compiled {
        tree: form.tree,
        leaves: form.leaves,
        round_f16: form.round_f16,
        table: if form.tree.uses_table() {
            nodes.iter().find_map(|plan| match plan {
                Plan1::Table(table, _) => Some(*table),
                _ => None,
            })
        } else {
            None
        },
    });
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_inner = rank.min(1);
    let n_tasks = ctx.tasks(layout.numel() * program.nodes.len());
    let pool = ctx.pool;
    let tiles = DstTiles::<O>::new(ctx.dst_slice::<O>(), layout, n_inner, SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        // The register file lives for the whole task (on the stack, not per block).
        let mut idx = [0usize; MAX_RANK];
        let mut regs = [[0f32; BLOCK]; MAX_REGS];
        let mut bits = [f16::ZERO; BLOCK];
        let mut stored = [O::default(); BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let outer = &idx[..rank - n_inner];
            let (start, len) = (tile.start(), tile.len());
            if vector.is_some() || compiled.is_some() {
                // The whole row segment in one call when every source is a contiguous run or
                // a broadcast value and the destination is contiguous.
                let mut inputs = [lprog::Input::Splat(0.0); MAX_SRCS];
                let runs =
                    leaves
                        .iter()
                        .take(n_leaves)
                        .zip(inputs.iter_mut())
                        .all(|(leaf, input)| {
                            match leaf.and_then(|leaf| leaf_run(leaf, outer, start, len)) {
                                Some(run) => {
                                    *input = run;
                                    true
                                }
                                None => false,
                            }
                        });
                if runs && let Some(out) = tile.contiguous() {
                    if let Some(compiled) = &compiled
                        && run_tree(isa, compiled, &inputs[..n_leaves], out)
                    {
                        continue;
                    }
                    if let Some((instrs, n_instrs)) = &vector {
                        lprog::run::<O>(isa, &instrs[..*n_instrs], &inputs[..n_leaves], out);
                        continue;
                    }
                }
            }
            let mut j = 0;
            while j < len {
                let n = (len - j).min(BLOCK);
                for (k, leaf) in leaves.iter().enumerate().take(n_leaves) {
                    match leaf {
                        Some(Leaf::F16(view)) => {
                            load_f16(view, outer, start + j, &mut regs[k][..n], &mut bits, isa)
                        }
                        Some(Leaf::F32(view)) => {
                            load_row(view, outer, start + j, &mut regs[k][..n])
                        }
                        None => {}
                    }
                }
                eval_block(
                    nodes, round, fill_imm, n_leaves, isa, &mut regs, &mut bits, n,
                );
                store(
                    isa,
                    &regs[n_leaves + nodes.len() - 1][..n],
                    &mut stored[..n],
                );
                tile.write_at(j, &stored[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// The per-node decisions of a program: how each node runs, whether it is rounded to fp16,
/// and whether an immediate needs its register filled (a unary operand).
struct NodePlans {
    plans: [Plan1; MAX_REGS],
    round: [bool; MAX_REGS],
    fill_imm: [bool; MAX_REGS],
}

/// Decides how each node of `program` runs (`leaf_f16(k)`: whether source `k` is fp16).
fn node_plans(program: &FusedProgram, leaf_f16: &dyn Fn(usize) -> bool, exact: bool) -> NodePlans {
    let n_leaves = usize::from(program.n_leaves);
    // The dtype of each register; in the exact profile every register holds a value exactly
    // representable in it.
    let mut reg_ty = [FloatTy::F32; MAX_REGS];
    for (k, ty) in reg_ty.iter_mut().enumerate().take(n_leaves) {
        if leaf_f16(k) {
            *ty = FloatTy::F16;
        }
    }
    let mut plans = [Plan1::Imm(0.0); MAX_REGS];
    let mut round = [false; MAX_REGS];
    let last = program.nodes.len() - 1;
    for (i, node) in program.nodes.iter().enumerate() {
        let reg = n_leaves + i;
        plans[i] = match node.instr {
            FusedInstr::Imm(value) => Plan1::Imm(value),
            FusedInstr::Unary { op, x } => {
                let f16_exact =
                    reg_ty[usize::from(x)] == FloatTy::F16 && (exact || usize::from(x) < n_leaves);
                if exact && f16_exact && has_table(op) && op != UnaryOp::Identity {
                    Plan1::Table(unary_table(op), x)
                } else if !exact && matches!(op, UnaryOp::Exp | UnaryOp::Sigmoid | UnaryOp::Silu) {
                    Plan1::Fast(op, x)
                } else {
                    Plan1::Unary(op, x)
                }
            }
            FusedInstr::Binary { op, x, y } => Plan1::Binary(op, x, y),
        };
        // A table result is already fp16; the last node is rounded by the store.
        let tabled = matches!(plans[i], Plan1::Table(..)) && node.ty == FloatTy::F16;
        round[i] = exact && node.ty == FloatTy::F16 && i != last && !tabled;
        reg_ty[reg] = node.ty;
    }
    let mut fill_imm = [false; MAX_REGS];
    for node in &program.nodes {
        if let FusedInstr::Unary { x, .. } = node.instr
            && let Some(i) = usize::from(x).checked_sub(n_leaves)
        {
            fill_imm[i] = true;
        }
    }
    for (i, node) in program.nodes.iter().enumerate() {
        if matches!(node.instr, FusedInstr::Imm(_)) {
            round[i] = false;
        }
    }
    NodePlans {
        plans,
        round,
        fill_imm,
    }
}

/// The compiled formula (`ew::tree`) `program` runs as, decided once when the plan is
/// compiled (and checked again when a serialised plan is read): `src_tys` are the step's
/// source types, `precision` the plan's profile. `None` when the sources are not all fp16 or
/// all fp32 (the compiled loops read one storage type) or no formula matches.
pub fn match_program(
    program: &FusedProgram,
    src_tys: &[Ty],
    precision: Precision,
) -> Option<TreeForm> {
    let n_leaves = usize::from(program.n_leaves);
    if src_tys.len() != n_leaves
        || !program.is_valid(n_leaves)
        || !src_tys.iter().all(|&ty| ty == src_tys[0])
        || !src_tys.iter().all(|&ty| matches!(ty, Ty::F16 | Ty::F32))
    {
        return None;
    }
    let exact = precision == Precision::Exact;
    let NodePlans { plans, round, .. } = node_plans(program, &|k| src_tys[k] == Ty::F16, exact);
    let n = program.nodes.len();
    match_tree(&plans[..n], &round[..n], n_leaves).map(|compiled| TreeForm {
        tree: compiled.tree,
        leaves: compiled.leaves,
        round_f16: compiled.round_f16,
    })
}

/// The run of `leaf` for row segment `start..start + len` at `outer`: a slice when contiguous,
/// a splat when broadcast (or one element), `None` when strided. Inlined: called per leaf per
/// row segment, and an out-of-line return of the enum through memory stalls the reload.
#[inline(always)]
fn leaf_run<'a>(
    leaf: Leaf<'a>,
    outer: &[usize],
    start: usize,
    len: usize,
) -> Option<lprog::Input<'a>> {
    #[inline(always)]
    fn run<'a, T: Elem<C = f32>>(
        view: &SrcView<'a, T>,
        outer: &[usize],
        start: usize,
        len: usize,
        slice: fn(&'a [T]) -> lprog::Input<'a>,
    ) -> Option<lprog::Input<'a>> {
        let stride = view.last_stride();
        let base = view.layout.offset_of(outer) + start * stride;
        if stride == 0 || len == 1 {
            Some(lprog::Input::Splat(view.at(base)))
        } else if stride == 1 {
            Some(slice(&view.data[base..base + len]))
        } else {
            None
        }
    }
    match leaf {
        Leaf::F16(view) => run(&view, outer, start, len, lprog::Input::F16),
        Leaf::F32(view) => run(&view, outer, start, len, lprog::Input::F32),
    }
}

/// A program recognised as one of linalg's compiled trees ([`Tree`]).
#[derive(Clone, Copy)]
struct Compiled {
    tree: Tree,
    leaves: [TreeLeaf; ltree::MAX_LEAVES],
    round_f16: bool,
    table: Option<&'static UnaryTable>,
}

/// Matches the program (its per-node plans and rounding) against the compiled trees: the
/// same operations in the same order (add and mul operands may swap: IEEE addition and
/// multiplication are commutative), every inner node rounded alike (all to f16, or none), a
/// table node's operand a source. `None`: the interpreter runs it.
fn match_tree(nodes: &[Plan1], round: &[bool], n_leaves: usize) -> Option<Compiled> {
    let last = nodes.len().checked_sub(1)?;
    let node = |reg: u8| usize::from(reg).checked_sub(n_leaves).map(|i| nodes[i]);
    let leaf = |reg: u8| match node(reg) {
        None => Some(TreeLeaf::Src(reg)),
        Some(Plan1::Imm(value)) => Some(TreeLeaf::Imm(value)),
        Some(_) => None,
    };
    // The operand pairs of binary node `reg` with op `op`, both orders when it commutes.
    let pairs = |reg: u8, op: BinaryOp| -> [Option<(u8, u8)>; 2] {
        match node(reg) {
            Some(Plan1::Binary(found, x, y)) if found == op => {
                let swapped = matches!(op, BinaryOp::Add | BinaryOp::Mul).then_some((y, x));
                [Some((x, y)), swapped]
            }
            _ => [None, None],
        }
    };
    let root = u8::try_from(n_leaves + last).ok()?;
    // Inner nodes: all rounded, or none (immediates and tables are exact already).
    let mut inner = nodes[..last]
        .iter()
        .zip(round)
        .filter(|(plan, _)| !matches!(plan, Plan1::Imm(_) | Plan1::Table(..)))
        .map(|(_, &round)| round);
    let round_f16 = inner.next().unwrap_or(false);
    if !inner.all(|round| round == round_f16) {
        return None;
    }
    let mut table = None;
    // `t(a)` or `σ(a)` / `silu(a)` as the program computes it (`kind`: the op wanted).
    let mut activation = |reg: u8, kind: UnaryOp| -> Option<u8> {
        match node(reg)? {
            Plan1::Table(found, x) if leaf(x).is_some() && n_leaves > usize::from(x) => {
                table = Some(found);
                (kind == UnaryOp::Identity).then_some(x)
            }
            Plan1::Fast(op, x) if op == kind && usize::from(x) < n_leaves => Some(x),
            _ => None,
        }
    };
    let both = |reg: u8, op: BinaryOp| pairs(reg, op).into_iter().flatten();
    let found = (|| -> Option<(Tree, [TreeLeaf; 4])> {
        let z = TreeLeaf::Imm(0.0);
        for (p, q) in both(root, BinaryOp::Mul) {
            let Some(d) = leaf(q) else { continue };
            // t(a)·b, silu(a)·b
            if let Some(a) = activation(p, UnaryOp::Identity) {
                return Some((Tree::TabMul, [TreeLeaf::Src(a), d, z, z]));
            }
            if let Some(a) = activation(p, UnaryOp::Silu) {
                return Some((Tree::SiluMul, [TreeLeaf::Src(a), d, z, z]));
            }
            for (x, y) in both(p, BinaryOp::Mul) {
                // (a·t(a))·b, (a·σ(a))·b
                if let Some(a) = activation(y, UnaryOp::Identity)
                    && a == x
                {
                    return Some((Tree::XTabMul, [TreeLeaf::Src(a), d, z, z]));
                }
                if let Some(a) = activation(y, UnaryOp::Sigmoid)
                    && a == x
                {
                    return Some((Tree::XSigMul, [TreeLeaf::Src(a), d, z, z]));
                }
                // (a·b)·c
                if let (Some(a), Some(b)) = (leaf(x), leaf(y)) {
                    return Some((Tree::MulMul, [a, b, d, z]));
                }
                // (a·(b−c))·d
                if let Some(a) = leaf(x)
                    && let [Some((b, c)), _] = pairs(y, BinaryOp::Sub)
                    && let (Some(b), Some(c)) = (leaf(b), leaf(c))
                {
                    return Some((Tree::MulSubMul, [a, b, c, d]));
                }
            }
            for (x, y) in both(p, BinaryOp::Add) {
                if let (Some(a), Some(b)) = (leaf(x), leaf(y)) {
                    return Some((Tree::AddMul, [a, b, d, z]));
                }
            }
            if let [Some((x, y)), _] = pairs(p, BinaryOp::Sub)
                && let Some(a) = leaf(x)
            {
                // (a−b)·c
                if let Some(b) = leaf(y) {
                    return Some((Tree::SubMul, [a, b, d, z]));
                }
                // (a − b·c)·d
                for (b, c) in both(y, BinaryOp::Mul) {
                    if let (Some(b), Some(c)) = (leaf(b), leaf(c)) {
                        return Some((Tree::SubMulMul, [a, b, c, d]));
                    }
                }
            }
        }
        for (p, q) in both(root, BinaryOp::Add) {
            for (x, y) in both(p, BinaryOp::Mul) {
                let (Some(a), Some(b)) = (leaf(x), leaf(y)) else {
                    continue;
                };
                // a·b + c
                if let Some(c) = leaf(q) {
                    return Some((Tree::MulAdd, [a, b, c, z]));
                }
                // a·b + c·d
                for (u, v) in both(q, BinaryOp::Mul) {
                    if let (Some(c), Some(d)) = (leaf(u), leaf(v)) {
                        return Some((Tree::MulAddMul, [a, b, c, d]));
                    }
                }
            }
        }
        None
    })()?;
    let (tree, leaves) = found;
    // Every node of the program belongs to the formula (the tree is the whole program): its
    // operations plus its immediates.
    let operations = match tree {
        Tree::TabMul
        | Tree::SiluMul
        | Tree::MulMul
        | Tree::MulAdd
        | Tree::AddMul
        | Tree::SubMul => 2,
        Tree::XTabMul | Tree::XSigMul | Tree::MulSubMul | Tree::SubMulMul | Tree::MulAddMul => 3,
    };
    let imms = leaves[..tree.leaves()]
        .iter()
        .filter(|leaf| matches!(leaf, TreeLeaf::Imm(_)))
        .count();
    let formula_nodes = operations + imms;
    if formula_nodes != nodes.len() {
        return None;
    }
    Some(Compiled {
        tree,
        leaves,
        round_f16,
        table: if tree.uses_table() { table } else { None },
    })
}

/// Runs `compiled` over one row segment whose sources are `inputs`; false when a leaf does not
/// fit the loop's storage (a splat or immediate not exact in f16, or mixed source types).
#[inline(always)]
fn run_tree<O: Storage>(
    isa: Isa,
    compiled: &Compiled,
    inputs: &[lprog::Input<'_>],
    out: &mut [O],
) -> bool {
    #[inline(always)]
    fn leaves<'a, L: Storage>(
        compiled: &Compiled,
        inputs: &[lprog::Input<'a>],
        run: fn(lprog::Input<'a>) -> Option<&'a [L]>,
        out: &mut [ltree::Leaf<'a, L>; ltree::MAX_LEAVES],
    ) -> bool {
        let n = compiled.tree.leaves();
        for (slot, leaf) in out.iter_mut().zip(&compiled.leaves[..n]) {
            let value = match *leaf {
                TreeLeaf::Src(k) => match inputs[usize::from(k)] {
                    lprog::Input::Splat(value) => value,
                    input => match run(input) {
                        Some(values) => {
                            *slot = ltree::Leaf::Run(values);
                            continue;
                        }
                        None => return false,
                    },
                },
                TreeLeaf::Imm(value) => value,
            };
            let stored = L::from_f32(value);
            if stored.to_f32().to_bits() != value.to_bits() {
                return false;
            }
            *slot = ltree::Leaf::Splat(stored);
        }
        true
    }
    /// The leaves as `L` runs and splats, then the compiled loop.
    #[inline(always)]
    fn run_as<'a, L: Storage, O: Storage>(
        isa: Isa,
        compiled: &Compiled,
        inputs: &[lprog::Input<'a>],
        run: fn(lprog::Input<'a>) -> Option<&'a [L]>,
        out: &mut [O],
    ) -> bool {
        let mut slots = [ltree::Leaf::Splat(L::from_f32(0.0)); ltree::MAX_LEAVES];
        if !leaves::<L>(compiled, inputs, run, &mut slots) {
            return false;
        }
        let n = compiled.tree.leaves();
        ltree::run(
            isa,
            compiled.tree,
            compiled.round_f16,
            compiled.table,
            &slots[..n],
            out,
        );
        true
    }
    let n = compiled.tree.leaves();
    let first_src = compiled.leaves[..n].iter().find_map(|leaf| match leaf {
        TreeLeaf::Src(k) => Some(inputs[usize::from(*k)]),
        TreeLeaf::Imm(_) => None,
    });
    if let Some(lprog::Input::F32(_)) = first_src {
        run_as::<f32, O>(
            isa,
            compiled,
            inputs,
            |input| match input {
                lprog::Input::F32(values) => Some(values),
                _ => None,
            },
            out,
        )
    } else {
        run_as::<f16, O>(
            isa,
            compiled,
            inputs,
            |input| match input {
                lprog::Input::F16(values) => Some(values),
                _ => None,
            },
            out,
        )
    }
}

/// The program as linalg's vector register program, when every node has a vector form
/// (add/sub/mul/div, casts, immediates, table lookups, the fast profile's exp/sigmoid/silu).
fn vector_program(nodes: &[Plan1], round: &[bool]) -> Option<([lprog::Instr; MAX_REGS], usize)> {
    let mut instrs = [lprog::Instr {
        op: lprog::Op::Splat(0.0),
        round_f16: false,
    }; MAX_REGS];
    for ((slot, plan), &round) in instrs.iter_mut().zip(nodes).zip(round) {
        let op = match *plan {
            Plan1::Imm(value) => lprog::Op::Splat(value),
            Plan1::Table(table, x) => lprog::Op::Lookup(table, x),
            Plan1::Fast(UnaryOp::Exp, x) => lprog::Op::Exp(x),
            Plan1::Fast(UnaryOp::Sigmoid, x) => lprog::Op::Sigmoid(x),
            Plan1::Fast(_, x) => lprog::Op::Silu(x),
            Plan1::Unary(UnaryOp::Identity, x) => lprog::Op::Copy(x),
            Plan1::Binary(BinaryOp::Add, x, y) => lprog::Op::Add(x, y),
            Plan1::Binary(BinaryOp::Sub, x, y) => lprog::Op::Sub(x, y),
            Plan1::Binary(BinaryOp::Mul, x, y) => lprog::Op::Mul(x, y),
            Plan1::Binary(BinaryOp::RealDiv, x, y) => lprog::Op::Div(x, y),
            _ => return None,
        };
        *slot = lprog::Instr {
            op,
            round_f16: round,
        };
    }
    Some((instrs, nodes.len()))
}

/// Runs the nodes over the first `n` elements of the registers.
#[allow(
    clippy::too_many_arguments,
    reason = "the per-step decisions and the per-task buffers of one block"
)]
fn eval_block(
    nodes: &[Plan1],
    round: &[bool],
    fill_imm: &[bool],
    n_leaves: usize,
    isa: Isa,
    regs: &mut [[f32; BLOCK]; MAX_REGS],
    bits: &mut [f16; BLOCK],
    n: usize,
) {
    for (i, (plan, &round)) in nodes.iter().zip(round).enumerate() {
        let reg = n_leaves + i;
        let (before, rest) = regs.split_at_mut(reg);
        let dst = &mut rest[0][..n];
        match *plan {
            // Binary ops read an immediate as a splat; a unary op needs the register.
            Plan1::Imm(value) => {
                if fill_imm[i] {
                    dst.fill(value);
                }
            }
            Plan1::Table(table, x) => {
                convert::f32_to_f16_with(isa, &before[usize::from(x)][..n], &mut bits[..n]);
                for (value, input) in dst.iter_mut().zip(&bits[..n]) {
                    *value = table[usize::from(input.to_bits())].to_f32();
                }
            }
            Plan1::Fast(op, x) => {
                let src = &before[usize::from(x)][..n];
                match op {
                    UnaryOp::Exp => {
                        for (value, &x) in dst.iter_mut().zip(src) {
                            *value = exp_f32(x);
                        }
                    }
                    UnaryOp::Sigmoid => {
                        for (value, &x) in dst.iter_mut().zip(src) {
                            *value = 1.0 / (1.0 + exp_f32(-x));
                        }
                    }
                    _ => {
                        for (value, &x) in dst.iter_mut().zip(src) {
                            *value = x / (1.0 + exp_f32(-x));
                        }
                    }
                }
            }
            Plan1::Unary(op, x) => {
                let src = &before[usize::from(x)][..n];
                if op == UnaryOp::Identity {
                    dst.copy_from_slice(src);
                } else {
                    for (value, &x) in dst.iter_mut().zip(src) {
                        *value = unary_f32(op, x);
                    }
                }
            }
            Plan1::Binary(op, x, y) => {
                // An immediate operand is a splat (its register is never filled).
                let operand = |r: u8| -> Operand<'_, f32> {
                    let r = usize::from(r);
                    match r.checked_sub(n_leaves).map(|i| nodes[i]) {
                        Some(Plan1::Imm(value)) => Operand::Splat(value),
                        _ => Operand::Slice(&before[r][..n]),
                    }
                };
                let stream_op = match op {
                    BinaryOp::Add => Some(StreamOp::Add),
                    BinaryOp::Sub => Some(StreamOp::Sub),
                    BinaryOp::Mul => Some(StreamOp::Mul),
                    BinaryOp::RealDiv => Some(StreamOp::Div),
                    _ => None,
                };
                match stream_op {
                    // linalg's tier kernel: the same single f32 operation per element.
                    Some(stream_op) => stream::binary(isa, stream_op, operand(x), operand(y), dst),
                    None => {
                        let value = |r: u8, k: usize| match operand(r) {
                            Operand::Splat(value) => value,
                            Operand::Slice(values) => values[k],
                        };
                        for (k, out) in dst.iter_mut().enumerate() {
                            *out = binary_f(op, value(x, k), value(y, k));
                        }
                    }
                }
            }
        }
        if round {
            convert::f32_to_f16_with(isa, dst, &mut bits[..n]);
            convert::f16_to_f32_with(isa, &bits[..n], dst);
        }
    }
}

/// `eˣ` in f32 without libm, written so that LLVM vectorises loops over it: `x = n·ln2 + r`
/// (Cody–Waite, two-part ln 2, `n` rounded to nearest by the 1.5·2²³ trick), Cephes' `expf`
/// polynomial on `|r| ≤ ln2/2`, and `2ⁿ` as two exponent-field factors so that results in the
/// subnormal range and overflow to +inf come out right. Within 2 f32 ulps; NaN in, NaN out.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-104.0, 89.0);
    // `t`'s low mantissa bits hold n = round(x·log2 e) (|n| < 2²²), so the integer comes from
    // its bits without a float-to-int conversion (which does not vectorise).
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * z
        + r
        + 1.0;
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - half + 127) as u32) << 23);
    p * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    fn mul(x: u8, y: u8) -> Plan1 {
        Plan1::Binary(BinaryOp::Mul, x, y)
    }

    #[test]
    fn the_training_kernels_trees_are_compiled() {
        use TreeLeaf::{Imm, Src};
        let table = unary_table(UnaryOp::Sigmoid);
        let z = Imm(0.0);
        let matched = |nodes: &[Plan1], round: &[bool], n_leaves: usize| {
            match_tree(nodes, round, n_leaves).map(|c| (c.tree, c.leaves, c.round_f16))
        };
        // ffnFused, exact: gate = (h1 · t(h1)) · h3 (operands in either order).
        let silu_gate = [Plan1::Table(table, 0), mul(2, 0), mul(1, 3)];
        assert_eq!(
            matched(&silu_gate, &[false, true, false], 2),
            Some((Tree::XTabMul, [Src(0), Src(1), z, z], true))
        );
        // ffnFused, fast: σ as the vector formula, nothing rounded.
        let fast_gate = [Plan1::Fast(UnaryOp::Sigmoid, 0), mul(0, 2), mul(3, 1)];
        assert_eq!(
            matched(&fast_gate, &[false; 3], 2),
            Some((Tree::XSigMul, [Src(0), Src(1), z, z], false))
        );
        // A σ of another source is not SiLU.
        let other = [Plan1::Fast(UnaryOp::Sigmoid, 1), mul(0, 2), mul(3, 1)];
        assert_eq!(matched(&other, &[false; 3], 2), None);
        // Scale + mask: sc1 · s + cm.
        let mask = [
            Plan1::Imm(0.125),
            mul(0, 2),
            Plan1::Binary(BinaryOp::Add, 3, 1),
        ];
        assert_eq!(
            matched(&mask, &[false, true, false], 2),
            Some((Tree::MulAdd, [Src(0), Imm(0.125), Src(1), z], true))
        );
        // rmsnormBwd: (dyw − x · coeff) · rrms.
        let rms_bwd = [mul(1, 2), Plan1::Binary(BinaryOp::Sub, 0, 4), mul(5, 3)];
        assert_eq!(
            matched(&rms_bwd, &[true, true, false], 4),
            Some((Tree::SubMulMul, [Src(0), Src(1), Src(2), Src(3)], true))
        );
        // Mixed rounding of inner nodes (an fp32 intermediate in an fp16 tree) is not compiled.
        assert_eq!(matched(&rms_bwd, &[true, false, false], 4), None);
        // Subtraction does not commute: x · coeff − dyw is another formula.
        let swapped = [mul(1, 2), Plan1::Binary(BinaryOp::Sub, 4, 0), mul(5, 3)];
        assert_eq!(matched(&swapped, &[true, true, false], 4), None);
        // sdpaBwd2: (p · (dp − spdp)) · s.
        let sm_bwd = [
            Plan1::Binary(BinaryOp::Sub, 1, 2),
            mul(0, 3),
            Plan1::Imm(0.125),
            mul(4, 5),
        ];
        assert_eq!(
            matched(&sm_bwd, &[true, true, false, false], 3),
            Some((Tree::MulSubMul, [Src(0), Src(1), Src(2), Imm(0.125)], true))
        );
        // Division has no compiled form.
        let div = [Plan1::Binary(BinaryOp::RealDiv, 0, 1), mul(2, 1)];
        assert_eq!(matched(&div, &[true, false], 2), None);
    }

    #[test]
    fn exp_f32_is_within_two_ulps() {
        let mut x = -103.0f32;
        let mut worst = 0;
        while x < 88.7 {
            let exact = f64::from(x).exp() as f32;
            let got = exp_f32(x);
            if exact.is_normal() {
                worst = worst.max(ulps(got, exact));
            } else {
                // Subnormal results: within one subnormal step.
                assert!(
                    (got - exact).abs() <= 2.0 * f32::from_bits(1),
                    "{x}: {got} {exact}"
                );
            }
            x += 0.0137;
        }
        assert!(worst <= 2, "exp_f32 is {worst} ulps off");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
