//! Lowering a verified function to plan steps.
//!
//! Passes, in order:
//! 1. **Dead-code elimination**: only ops that an output depends on are kept.
//! 2. **Output homes** (reverse view folding): when a function output is a chain of bijective
//!    views (reshape, transpose, squeeze, expand_dims) of a value computed by a step, that
//!    value is written straight into the output buffer with the inverse strides, so the output
//!    needs no copy.
//!    **Concat homes**: a computed value used only as one `concat` input is written into its
//!    slot of the concat's destination.
//! 3. **Forward pass** in textual (= topological) order: parameters bind input buffers,
//!    constants (`facts.consts`, which verification filled, folding const subgraphs when given
//!    a folder) bind plan-owned buffers, view ops (reshape, transpose, expand_dims, squeeze,
//!    slice_by_size with a const begin, slice_by_index with positive strides, split, tile of
//!    size-1 dims, same-dtype cast) become strided layouts over their input's buffer, and every
//!    other op becomes a step whose sources are read through their layouts. A view is
//!    materialised (copied) only when a reshape cannot be expressed as strides. A step whose
//!    sources are all constants is run once, now, and its result becomes a constant. A
//!    materialised reshape that is itself a function output is copied straight into the
//!    output buffer (when no other value has that buffer as its home).
//!    Elementwise trees chosen by the fusion pass ([`super::fuse`]) become one `Fused` step at
//!    their root; their members get no step and no buffer.
//! 4. **Outputs** that still are not dense in their buffer get a copy step.
//! 5. **Memory planning** ([`super::memory`]) assigns arena offsets by liveness.

use std::sync::Arc;

use milbridge_linalg::cpu::Isa;
use milbridge_linalg::pool::Pool;
use milbridge_mil::facts::{FunctionFacts, VerifiedProgram};
use milbridge_mil::ir::{
    Function, Handle, HandleVec, Op, OpKind, Tensor, TensorType, Value, ValueDef,
};
use milbridge_mil::ops::{self, OpAttrs, Operand as AttrOperand};

use crate::elem::Ty;
use crate::error::{Error, Result};
use crate::kernels::generic::{linalg as la, reduce as rd};
use crate::kernels::table::{FloatTy, KernelTable, kernel_id};
use crate::kernels::{KernelCtx, Src};
use crate::layout::{Layout, MAX_RANK, coalesce};
use crate::plan::fuse::{self, FusableOp, FusedInstr, FusedNode, FusedProgram, FusionPlan};
use crate::plan::memory::{self, Request};
use crate::plan::step::{
    BinaryOp, BufId, CmpOp, MAX_SRCS, Operand, ReduceOp, Step, StepOp, StepRole, UnaryOp,
};
use crate::plan::{AlignedBytes, IoDesc, LowerCounts, Plan, PoolRef};
use crate::{CompileOptions, Precision};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    Input(u32),
    Const(u32),
    Alloc(u32),
    Output(u32),
}

#[derive(Clone, Debug)]
struct Loc {
    storage: Storage,
    layout: Layout,
    ty: Ty,
}

struct PendingStep {
    op: StepOp,
    srcs: Vec<Loc>,
    dst: Loc,
    scratch: usize,
    value: String,
    role: StepRole,
}

struct Lowerer<'a> {
    func: &'a Function,
    facts: &'a FunctionFacts,
    table: &'static KernelTable,
    threads: usize,
    isa: Isa,
    precision: Precision,
    locs: HandleVec<Value, Option<Loc>>,
    homes: HandleVec<Value, Option<(Storage, Layout)>>,
    consts: Vec<AlignedBytes>,
    alloc_bytes: Vec<usize>,
    steps: Vec<PendingStep>,
    counts: LowerCounts,
    fusion: Option<FusionPlan>,
}

/// Compiles `func` of `program` into a plan.
pub fn lower(
    program: &VerifiedProgram,
    func_handle: Handle<Function>,
    options: &CompileOptions,
    portable: bool,
    fuse: bool,
) -> Result<Plan> {
    let func = &program.program().functions[func_handle];
    let facts = program.facts(func_handle);
    let threads = if options.threads == 0 {
        milbridge_linalg::cpu::thread_count()
    } else {
        options.threads
    };
    let table = Plan::table(options.isa, options.precision, portable);
    let mut lowerer = Lowerer {
        func,
        facts,
        table,
        threads,
        isa: options.isa,
        precision: options.precision,
        locs: HandleVec::filled(func.values.len(), None),
        homes: HandleVec::filled(func.values.len(), None),
        consts: Vec::new(),
        alloc_bytes: Vec::new(),
        steps: Vec::new(),
        counts: LowerCounts::default(),
        fusion: None,
    };
    let inputs = lowerer.bind_inputs()?;
    let needed = lowerer.live_ops();
    lowerer.plan_output_homes(&needed);
    lowerer.plan_concat_homes(&needed);
    if fuse {
        let homes = &lowerer.homes;
        // The exact profile keeps the tier tables' vector transcendentals unfused: the fused
        // kernel evaluates them as the portable kernels do, so fusing them would change bits.
        let exact_tier = !portable && options.precision == crate::Precision::Exact;
        lowerer.fusion = Some(fuse::plan(
            func,
            facts,
            &needed,
            &|value| homes[value].is_some(),
            &|op, ty| {
                (exact_tier && crate::kernels::tiered::vector_unary_differs(op, ty))
                    || (!portable && fuse::tabled_activation(op, ty))
            },
            // Pattern steps compute in f32 throughout: fast profile only.
            options.precision == Precision::Fast,
        ));
    }
    for (op_handle, op) in fuse::computed_ops(func, facts, &needed) {
        lowerer.lower_op(op_handle, op)?;
    }
    let outputs = lowerer.bind_outputs()?;
    lowerer.finish(inputs, outputs, portable)
}

fn value_name(func: &Function, value: Handle<Value>) -> String {
    let name = &func.values[value].name;
    if name.is_empty() {
        format!("%{}", value.index())
    } else {
        name.clone()
    }
}

fn io_desc(name: String, ty: &TensorType) -> Result<IoDesc> {
    let elem = Ty::from_dtype(ty.dtype).ok_or_else(|| Error::Unsupported {
        what: format!("dtype {}", ty.dtype),
        value: name.clone(),
    })?;
    Ok(IoDesc {
        name,
        ty: ty.clone(),
        byte_len: ty.numel() * elem.size(),
    })
}

fn inverse_perm(perm: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inverse[p] = k;
    }
    inverse
}

/// The layout that puts axis `axis` last (others in order).
fn axis_last(layout: &Layout, axes: &[usize]) -> Layout {
    let mut perm: Vec<usize> = (0..layout.rank()).filter(|d| !axes.contains(d)).collect();
    perm.extend_from_slice(axes);
    layout.transpose(&perm)
}

impl<'a> Lowerer<'a> {
    fn ty_of(&self, value: Handle<Value>) -> &'a TensorType {
        &self.facts.types[value]
    }

    fn name(&self, value: Handle<Value>) -> String {
        value_name(self.func, value)
    }

    fn lower_error(&self, op: &Op, reason: impl Into<String>) -> Error {
        let value = op
            .results
            .first()
            .map(|&result| self.name(result))
            .unwrap_or_default();
        Error::Lower {
            op: op.kind,
            value,
            reason: reason.into(),
        }
    }

    fn elem(&self, value: Handle<Value>) -> Result<Ty> {
        let ty = self.ty_of(value);
        Ty::from_dtype(ty.dtype).ok_or_else(|| Error::Unsupported {
            what: format!("dtype {}", ty.dtype),
            value: self.name(value),
        })
    }

    fn check_rank(&self, value: Handle<Value>) -> Result<()> {
        let rank = self.ty_of(value).rank();
        if rank > MAX_RANK {
            return Err(Error::Unsupported {
                what: format!("rank {rank} (the engine executes up to {MAX_RANK})"),
                value: self.name(value),
            });
        }
        Ok(())
    }

    fn bind_inputs(&mut self) -> Result<Vec<IoDesc>> {
        let mut inputs = Vec::new();
        for (position, &param) in self.func.params.iter().enumerate() {
            self.check_rank(param)?;
            let ty = self.ty_of(param).clone();
            let desc = io_desc(self.name(param), &ty)?;
            let elem = self.elem(param)?;
            self.locs[param] = Some(Loc {
                storage: Storage::Input(position as u32),
                layout: Layout::dense(&ty.shape),
                ty: elem,
            });
            inputs.push(desc);
        }
        Ok(inputs)
    }

    /// Which ops some output depends on.
    fn live_ops(&mut self) -> Vec<bool> {
        let mut needed_value = vec![false; self.func.values.len()];
        for output in &self.func.outputs {
            needed_value[output.value.index()] = true;
        }
        let mut needed_op = vec![false; self.func.ops.len()];
        let handles: Vec<Handle<Op>> = self.func.ops.handles().collect();
        for &op_handle in handles.iter().rev() {
            let op = &self.func.ops[op_handle];
            if !op.results.iter().any(|result| needed_value[result.index()]) {
                if op.kind != OpKind::Const {
                    self.counts.dead_ops += 1;
                }
                continue;
            }
            needed_op[op_handle.index()] = true;
            if op
                .results
                .iter()
                .all(|&result| self.facts.consts[result].is_some())
            {
                continue;
            }
            for arg in &op.args {
                for use_ in arg.value.uses() {
                    needed_value[use_.value.index()] = true;
                }
            }
        }
        needed_op
    }

    fn producer(&self, value: Handle<Value>) -> Option<Handle<Op>> {
        match self.func.values[value].def {
            ValueDef::Result { op, .. } => Some(op),
            _ => None,
        }
    }

    /// Pass 2: decides which computed values live directly in an output buffer.
    fn plan_output_homes(&mut self, needed: &[bool]) {
        for (position, output) in self.func.outputs.iter().enumerate() {
            let mut value = output.value;
            let mut layout = Layout::dense(&self.ty_of(value).shape);
            loop {
                if self.facts.consts[value].is_some() || self.ty_of(value).rank() > MAX_RANK {
                    break;
                }
                let Some(op_handle) = self.producer(value) else {
                    break;
                };
                if !needed[op_handle.index()] {
                    break;
                }
                let op = &self.func.ops[op_handle];
                let input = op.single("x").map(|use_| use_.value);
                let step_back = match (op.kind, input) {
                    (
                        OpKind::Transpose | OpKind::Reshape | OpKind::ExpandDims | OpKind::Squeeze,
                        Some(input),
                    ) => {
                        if self.facts.consts[input].is_some() {
                            None
                        } else if op.kind == OpKind::Transpose {
                            match ops::attrs(self.func, self.facts, op_handle) {
                                OpAttrs::Transpose { perm } => {
                                    Some((input, layout.transpose(&inverse_perm(&perm))))
                                }
                                _ => None,
                            }
                        } else {
                            layout
                                .reshape(&self.ty_of(input).shape)
                                .map(|back| (input, back))
                        }
                    }
                    _ => None,
                };
                match step_back {
                    Some((input, back)) => {
                        value = input;
                        layout = back;
                    }
                    None => {
                        if op.results.len() == 1
                            && !is_view_op(op.kind)
                            && self.homes[value].is_none()
                            && layout.is_injective()
                        {
                            self.homes[value] = Some((Storage::Output(position as u32), layout));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Pass 2b (concat elimination): a value computed by a step and used only as one input of
    /// a `concat` is written straight into its slot of the concat's destination, so the concat
    /// copies nothing for it. Concats are visited last-first so nested concats chain.
    fn plan_concat_homes(&mut self, needed: &[bool]) {
        let mut uses = vec![0usize; self.func.values.len()];
        for output in &self.func.outputs {
            uses[output.value.index()] += 1;
        }
        for (op_handle, op) in self.func.ops.iter() {
            if !needed[op_handle.index()] {
                continue;
            }
            for arg in &op.args {
                for use_ in arg.value.uses() {
                    uses[use_.value.index()] += 1;
                }
            }
        }
        let handles: Vec<Handle<Op>> = self.func.ops.handles().collect();
        for &op_handle in handles.iter().rev() {
            let op = &self.func.ops[op_handle];
            if op.kind != OpKind::Concat || !needed[op_handle.index()] {
                continue;
            }
            let result = op.results[0];
            if self.facts.consts[result].is_some() || self.ty_of(result).rank() > MAX_RANK {
                continue;
            }
            let OpAttrs::Concat { axis, interleave } = ops::attrs(self.func, self.facts, op_handle)
            else {
                continue;
            };
            let Some(values) = op.arg("values").map(|arg| arg.value.uses().to_vec()) else {
                continue;
            };
            let Ok(ty) = self.elem(result) else { continue };
            let (storage, layout) = match self.homes[result].clone() {
                Some(home) => home,
                None => {
                    let shape = self.ty_of(result).shape.clone();
                    let loc = self.new_alloc(&shape, ty);
                    self.homes[result] = Some((loc.storage, loc.layout.clone()));
                    (loc.storage, loc.layout)
                }
            };
            let mut start = 0;
            for (k, use_) in values.iter().enumerate() {
                let value = use_.value;
                let size = self.ty_of(value).shape.get(axis).copied().unwrap_or(1);
                let part = concat_part(&layout, axis, interleave, k, values.len(), start, size);
                start += size;
                let computed = self.facts.consts[value].is_none()
                    && uses[value.index()] == 1
                    && self.homes[value].is_none()
                    && self.producer(value).is_some_and(|producer| {
                        needed[producer.index()]
                            && self.func.ops[producer].results.len() == 1
                            && !is_view_op(self.func.ops[producer].kind)
                    });
                if computed {
                    self.homes[value] = Some((storage, part));
                }
            }
        }
    }

    fn const_loc(&mut self, value: Handle<Value>, tensor: &Arc<Tensor>) -> Result<Loc> {
        if let Some(loc) = &self.locs[value] {
            return Ok(loc.clone());
        }
        let elem = Ty::from_dtype(tensor.ty.dtype).ok_or(Error::ConstDType {
            value: self.name(value),
            dtype: tensor.ty.dtype,
        })?;
        let bytes = tensor.bytes().ok_or(Error::ConstDType {
            value: self.name(value),
            dtype: tensor.ty.dtype,
        })?;
        if tensor.ty.rank() > MAX_RANK {
            return Err(Error::Unsupported {
                what: format!("rank {}", tensor.ty.rank()),
                value: self.name(value),
            });
        }
        self.consts.push(AlignedBytes::from_slice(bytes));
        let loc = Loc {
            storage: Storage::Const(self.consts.len() as u32 - 1),
            layout: Layout::dense(&tensor.ty.shape),
            ty: elem,
        };
        self.locs[value] = Some(loc.clone());
        Ok(loc)
    }

    /// A new constant from `values` (converted to `ty`), dense, of `shape`.
    fn new_const(&mut self, ty: Ty, shape: &[usize], values: &[f64]) -> Loc {
        let tensor = Tensor::from_f64s(TensorType::new(ty.dtype(), shape.to_vec()), values)
            .expect("engine constant has a matching count");
        self.consts.push(AlignedBytes::from_slice(
            tensor.bytes().expect("numeric tensor"),
        ));
        Loc {
            storage: Storage::Const(self.consts.len() as u32 - 1),
            layout: Layout::dense(shape),
            ty,
        }
    }

    fn loc(&mut self, value: Handle<Value>) -> Result<Loc> {
        if let Some(tensor) = self.facts.consts[value].clone() {
            return self.const_loc(value, &tensor);
        }
        match &self.locs[value] {
            Some(loc) => Ok(loc.clone()),
            None => panic!(
                "value {} used before the plan defined it (topological order invariant)",
                self.name(value)
            ),
        }
    }

    fn operand(&mut self, op: &Op, name: &str) -> Result<(Handle<Value>, Loc)> {
        let use_ = op
            .single(name)
            .ok_or_else(|| self.lower_error(op, format!("missing operand `{name}`")))?;
        let loc = self.loc(use_.value)?;
        Ok((use_.value, loc))
    }

    fn new_alloc(&mut self, shape: &[usize], ty: Ty) -> Loc {
        let bytes: usize = shape.iter().product::<usize>() * ty.size();
        self.alloc_bytes.push(bytes);
        Loc {
            storage: Storage::Alloc(self.alloc_bytes.len() as u32 - 1),
            layout: Layout::dense(shape),
            ty,
        }
    }

    /// Where `value`'s computed elements go: its output home or a fresh arena allocation.
    fn dst_for(&mut self, value: Handle<Value>, ty: Ty) -> Loc {
        match self.homes[value].clone() {
            Some((storage, layout)) => Loc {
                storage,
                layout,
                ty,
            },
            None => {
                let shape = self.ty_of(value).shape.clone();
                self.new_alloc(&shape, ty)
            }
        }
    }

    fn set(&mut self, value: Handle<Value>, loc: Loc) {
        self.locs[value] = Some(loc);
    }

    /// Adds a step computing `value` (or, if every source is a constant, runs it now and makes
    /// the result a constant). `kernel_dst` maps the value's layout to the layout the kernel
    /// writes through; `srcs_for` builds the kernel's source layouts given that dst layout.
    fn emit(
        &mut self,
        value: Handle<Value>,
        op: StepOp,
        mut srcs: Vec<Loc>,
        ty: Ty,
        scratch_per_task: usize,
        kernel_dst: &dyn Fn(&Layout) -> Option<Layout>,
    ) -> Result<Loc> {
        let elementwise = matches!(
            op,
            StepOp::Copy
                | StepOp::Unary(_)
                | StepOp::Binary(_)
                | StepOp::Compare(_)
                | StepOp::Cast
                | StepOp::Select
                | StepOp::Fused(_)
        );
        let foldable = !srcs.is_empty()
            && srcs
                .iter()
                .all(|src| matches!(src.storage, Storage::Const(_)))
            && self.homes[value].is_none();
        let mut value_loc = if foldable {
            let shape = self.ty_of(value).shape.clone();
            Loc {
                storage: Storage::Const(u32::MAX),
                layout: Layout::dense(&shape),
                ty,
            }
        } else {
            self.dst_for(value, ty)
        };
        let mut dst = value_loc.clone();
        dst.layout = match kernel_dst(&value_loc.layout) {
            Some(layout) => layout,
            None => {
                // The output home's strides cannot take the kernel's shape: compute into the
                // arena instead (the output then gets a copy).
                self.homes[value] = None;
                value_loc = self.dst_for(value, ty);
                dst = value_loc.clone();
                kernel_dst(&value_loc.layout).expect("a dense destination takes any kernel shape")
            }
        };
        if elementwise {
            let mut layouts: Vec<Layout> = srcs.iter().map(|src| src.layout.clone()).collect();
            layouts.push(dst.layout.clone());
            coalesce(&mut layouts);
            dst.layout = layouts.pop().expect("dst layout pushed above");
            for (src, layout) in srcs.iter_mut().zip(layouts) {
                src.layout = layout;
            }
        }
        // Per-task scratch is replicated per thread; the column softmax's statistics buffer is
        // one shared buffer.
        let replicas = if foldable || op == StepOp::SoftmaxColumns {
            1
        } else {
            self.threads
        };
        let scratch = scratch_per_task * replicas;
        let step = PendingStep {
            op,
            srcs,
            dst,
            scratch,
            value: self.name(value),
            role: StepRole::Compute,
        };
        if foldable {
            let loc = self.fold_now(step, &value_loc)?;
            self.counts.folded_consts += 1;
            return Ok(loc);
        }
        self.steps.push(step);
        Ok(value_loc)
    }

    /// `src` converted to `ty`: itself when the dtypes agree, else a cast into a fresh dense
    /// buffer (folded now when `src` is constant). ios17+ lets conv/linear weights and biases,
    /// matmul's const side and layer_norm's gamma/beta have their own float dtype; kernels
    /// read every operand in the result's dtype.
    fn coerce(&mut self, src: Loc, ty: Ty, of: Handle<Value>) -> Result<Loc> {
        if src.ty == ty {
            return Ok(src);
        }
        let shape = src.layout.shape.clone();
        let foldable = matches!(src.storage, Storage::Const(_));
        let dst = if foldable {
            Loc {
                storage: Storage::Const(u32::MAX),
                layout: Layout::dense(&shape),
                ty,
            }
        } else {
            self.new_alloc(&shape, ty)
        };
        let step = PendingStep {
            op: StepOp::Cast,
            srcs: vec![src],
            dst: dst.clone(),
            scratch: 0,
            value: format!("{} (as {ty:?})", self.name(of)),
            role: StepRole::Compute,
        };
        if foldable {
            let loc = self.fold_now(step, &dst)?;
            self.counts.folded_consts += 1;
            return Ok(loc);
        }
        self.steps.push(step);
        Ok(dst)
    }

    /// Runs a step whose sources are all constants and stores its result as a new constant.
    fn fold_now(&mut self, step: PendingStep, value_loc: &Loc) -> Result<Loc> {
        let src_tys: Vec<Ty> = step.srcs.iter().map(|src| src.ty).collect();
        let kernel = kernel_id(&step.op, &src_tys, step.dst.ty)
            .and_then(|id| self.table.get(id))
            .ok_or_else(|| Error::Unsupported {
                what: format!("{:?} on {src_tys:?}", step.op),
                value: step.value.clone(),
            })?;
        let numel = value_loc.layout.numel();
        let mut out = AlignedBytes::zeroed(numel * value_loc.ty.size());
        let mut scratch = AlignedBytes::zeroed(step.scratch);
        {
            let mut srcs = [Src::NONE; MAX_SRCS];
            for (slot, src) in srcs.iter_mut().zip(&step.srcs) {
                let Storage::Const(idx) = src.storage else {
                    unreachable!("fold_now only runs all-const steps")
                };
                *slot = Src {
                    bytes: self.consts[idx as usize].as_slice(),
                    layout: &src.layout,
                    ty: src.ty,
                };
            }
            let mut ctx = KernelCtx {
                op: &step.op,
                srcs,
                n_srcs: step.srcs.len(),
                dst: out.as_mut_slice(),
                dst_layout: &step.dst.layout,
                dst_ty: step.dst.ty,
                scratch: scratch.as_mut_slice(),
                pool: Pool::global(),
                threads: 1,
                isa: self.isa,
                precision: self.precision,
                packed: None,
            };
            (kernel.run)(&mut ctx).map_err(|error| Error::Fold {
                op: OpKind::Const,
                value: step.value.clone(),
                reason: error.to_string(),
            })?;
        }
        self.consts.push(out);
        Ok(Loc {
            storage: Storage::Const(self.consts.len() as u32 - 1),
            layout: value_loc.layout.clone(),
            ty: value_loc.ty,
        })
    }

    /// Copies `src` into a fresh dense allocation (a view no consumer could read in place).
    fn materialize(&mut self, src: Loc, value: Handle<Value>, role: StepRole) -> Loc {
        let shape = src.layout.shape.clone();
        let dst = self.new_alloc(&shape, src.ty);
        self.materialize_into(src, dst, value, role)
    }

    /// The first function output position returning `value`, when no value was given that
    /// output buffer as its home (so a copy may fill it directly).
    fn free_output(&self, value: Handle<Value>) -> Option<u32> {
        let position = self
            .func
            .outputs
            .iter()
            .position(|output| output.value == value)?;
        let position = u32::try_from(position).ok()?;
        let taken = self
            .homes
            .iter()
            .any(|(_, home)| matches!(home, Some((Storage::Output(p), _)) if *p == position));
        (!taken).then_some(position)
    }

    /// Copies `src` into `dst` (dense, same shape); returns `dst`.
    fn materialize_into(
        &mut self,
        src: Loc,
        dst: Loc,
        value: Handle<Value>,
        role: StepRole,
    ) -> Loc {
        let mut layouts = vec![src.layout.clone(), dst.layout.clone()];
        coalesce(&mut layouts);
        let (src_layout, dst_layout) = (layouts[0].clone(), layouts[1].clone());
        self.steps.push(PendingStep {
            op: StepOp::Copy,
            srcs: vec![Loc {
                layout: src_layout,
                ..src
            }],
            dst: Loc {
                layout: dst_layout,
                ..dst.clone()
            },
            scratch: 0,
            value: self.name(value),
            role,
        });
        dst
    }

    fn view(&mut self, value: Handle<Value>, loc: Loc) {
        self.counts.folded_views += 1;
        self.set(value, loc);
    }

    fn lower_op(&mut self, op_handle: Handle<Op>, op: &Op) -> Result<()> {
        for &result in &op.results {
            self.check_rank(result)?;
        }
        let result = op.results[0];
        let (member, root, pattern) = match &self.fusion {
            Some(fusion) => (
                fusion.member[result],
                fusion.is_root(result),
                fusion.pattern[result],
            ),
            None => (false, false, None),
        };
        if let Some(pattern) = pattern {
            return self.lower_pattern(result, pattern);
        }
        if member {
            // Computed inside the fused step of its single consumer.
            return Ok(());
        }
        if root {
            return self.lower_fused(result);
        }
        let attrs = ops::attrs(self.func, self.facts, op_handle);
        let out_ty = self.ty_of(result).clone();
        let out_shape = out_ty.shape.clone();
        let same = |layout: &Layout| Some(layout.clone());
        match attrs {
            OpAttrs::Const | OpAttrs::ConstexprAffineDequantize { .. } => {
                // Consts are bound lazily from facts.consts; an unfolded const is a bug.
                return Err(self.lower_error(op, "constant without a value in the verified facts"));
            }
            OpAttrs::Binary => {
                let (_, x) = self.operand(op, "x")?;
                let (_, y) = self.operand(op, "y")?;
                let binary = fuse::binary_of(op.kind)
                    .ok_or_else(|| self.lower_error(op, "not a binary op"))?;
                let srcs = vec![bcast(x, &out_shape), bcast(y, &out_shape)];
                let ty = self.elem(result)?;
                let loc = self.emit(result, StepOp::Binary(binary), srcs, ty, 0, &same)?;
                self.set(result, loc);
            }
            OpAttrs::Compare => {
                let (_, x) = self.operand(op, "x")?;
                let (_, y) = self.operand(op, "y")?;
                let cmp = match op.kind {
                    OpKind::Equal => CmpOp::Equal,
                    OpKind::NotEqual => CmpOp::NotEqual,
                    OpKind::Greater => CmpOp::Greater,
                    OpKind::GreaterEqual => CmpOp::GreaterEqual,
                    OpKind::Less => CmpOp::Less,
                    OpKind::LessEqual => CmpOp::LessEqual,
                    _ => return Err(self.lower_error(op, "not a comparison")),
                };
                let srcs = vec![bcast(x, &out_shape), bcast(y, &out_shape)];
                let loc = self.emit(result, StepOp::Compare(cmp), srcs, Ty::Bool, 0, &same)?;
                self.set(result, loc);
            }
            OpAttrs::Unary
            | OpAttrs::Epsilon { .. }
            | OpAttrs::Gelu { .. }
            | OpAttrs::Clip { .. } => {
                let unary = fuse::unary_of(&attrs, op.kind)
                    .ok_or_else(|| self.lower_error(op, "not a unary op"))?;
                let (_, x) = self.operand(op, "x")?;
                let ty = self.elem(result)?;
                let loc = self.emit(result, StepOp::Unary(unary), vec![x], ty, 0, &same)?;
                self.set(result, loc);
            }
            OpAttrs::Cast { .. } => {
                let (_, x) = self.operand(op, "x")?;
                let ty = self.elem(result)?;
                if ty == x.ty {
                    self.view(result, x);
                } else {
                    let loc = self.emit(result, StepOp::Cast, vec![x], ty, 0, &same)?;
                    self.set(result, loc);
                }
            }
            OpAttrs::Softmax { axis } => {
                let (_, x) = self.operand(op, "x")?;
                let ty = self.elem(result)?;
                let rank = out_shape.len();
                let inner: usize = out_shape[axis + 1..].iter().product();
                if axis + 1 < rank && inner > 1 {
                    // Softmax over a middle axis: stream contiguous rows, no strided lanes.
                    let outer: usize = out_shape[..axis].iter().product();
                    let shape3 = [outer, out_shape[axis], inner];
                    let home_ok = match &self.homes[result] {
                        Some((_, layout)) => layout.reshape(&shape3).is_some(),
                        None => true,
                    };
                    if let (Some(src3), true) = (x.layout.reshape(&shape3), home_ok) {
                        let loc = self.emit(
                            result,
                            StepOp::SoftmaxColumns,
                            vec![Loc { layout: src3, ..x }],
                            ty,
                            rd::softmax_columns_scratch(outer, inner),
                            &move |l| l.reshape(&shape3),
                        )?;
                        self.set(result, loc);
                        return Ok(());
                    }
                }
                let src = Loc {
                    layout: axis_last(&x.layout, &[axis]),
                    ..x
                };
                let len = out_shape.get(axis).copied().unwrap_or(1);
                let loc = self.emit(
                    result,
                    StepOp::Softmax,
                    vec![src],
                    ty,
                    rd::softmax_scratch(len),
                    &|l| Some(axis_last(l, &[axis])),
                )?;
                self.set(result, loc);
            }
            OpAttrs::Reduce { axes, keep_dims } => {
                let (_, x) = self.operand(op, "x")?;
                if axes.is_empty() {
                    self.view(result, x);
                    return Ok(());
                }
                let reduce = match op.kind {
                    OpKind::ReduceSum => ReduceOp::Sum,
                    OpKind::ReduceMean => ReduceOp::Mean,
                    _ => ReduceOp::Max,
                };
                let ty = self.elem(result)?;
                let rank = x.layout.rank();
                let src = Loc {
                    layout: axis_last(&x.layout, &axes),
                    ..x
                };
                let kept: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
                let kernel_dst = move |l: &Layout| -> Option<Layout> {
                    if keep_dims {
                        Some(Layout {
                            offset: l.offset,
                            shape: kept.iter().map(|&d| l.shape[d]).collect(),
                            strides: kept.iter().map(|&d| l.strides[d]).collect(),
                        })
                    } else {
                        Some(l.clone())
                    }
                };
                let loc = self.emit(
                    result,
                    StepOp::Reduce {
                        op: reduce,
                        n_reduced: axes.len(),
                    },
                    vec![src],
                    ty,
                    0,
                    &kernel_dst,
                )?;
                self.set(result, loc);
            }
            OpAttrs::Matmul {
                transpose_x,
                transpose_y,
            } => {
                let (x_value, x) = self.operand(op, "x")?;
                let (y_value, y) = self.operand(op, "y")?;
                let ty = self.elem(result)?;
                let x = self.coerce(x, ty, x_value)?;
                let y = self.coerce(y, ty, y_value)?;
                self.lower_matmul(result, x, y, transpose_x, transpose_y, None, ty)?;
            }
            OpAttrs::Linear { has_bias } => {
                let (_, x) = self.operand(op, "x")?;
                let (weight_value, weight) = self.operand(op, "weight")?;
                let ty = self.elem(result)?;
                let weight = self.coerce(weight, ty, weight_value)?;
                let bias = if has_bias {
                    let (bias_value, bias) = self.operand(op, "bias")?;
                    Some(self.coerce(bias, ty, bias_value)?)
                } else {
                    None
                };
                // x · weightᵀ: the transpose is a stride swap.
                let weight_t = Loc {
                    layout: weight.layout.transpose(&[1, 0]),
                    ..weight
                };
                self.lower_matmul(result, x, weight_t, false, false, bias, ty)?;
            }
            OpAttrs::Conv {
                strides,
                pads_before,
                pads_after,
                dilations,
                groups,
                has_bias,
            } => {
                let (_, x) = self.operand(op, "x")?;
                let (weight_value, weight) = self.operand(op, "weight")?;
                let ty = self.elem(result)?;
                let weight = self.coerce(weight, ty, weight_value)?;
                let bias = if has_bias {
                    let (bias_value, bias) = self.operand(op, "bias")?;
                    Some(self.coerce(bias, ty, bias_value)?)
                } else {
                    None
                };
                self.lower_conv(
                    result,
                    x,
                    weight,
                    bias,
                    &strides,
                    &pads_before,
                    &pads_after,
                    &dilations,
                    groups,
                    ty,
                )?;
            }
            OpAttrs::LayerNorm {
                axes,
                eps,
                has_gamma,
                has_beta,
            } => {
                let (_, x) = self.operand(op, "x")?;
                let ty = self.elem(result)?;
                let norm_shape: Vec<usize> = axes.iter().map(|&a| out_shape[a]).collect();
                let gamma = if has_gamma {
                    let (gamma_value, gamma) = self.operand(op, "gamma")?;
                    self.coerce(gamma, ty, gamma_value)?
                } else {
                    self.new_const(ty, &[], &[1.0])
                };
                let beta = if has_beta {
                    let (beta_value, beta) = self.operand(op, "beta")?;
                    self.coerce(beta, ty, beta_value)?
                } else {
                    self.new_const(ty, &[], &[0.0])
                };
                let permuted = axis_last(&x.layout, &axes);
                let full = permuted.shape.clone();
                let fit = |loc: Loc| -> Loc {
                    let layout = if loc.layout.rank() == 0 {
                        loc.layout.broadcast_to(&full)
                    } else {
                        let dense = loc
                            .layout
                            .reshape(&norm_shape)
                            .unwrap_or_else(|| loc.layout.clone());
                        dense.broadcast_to(&full)
                    };
                    Loc { layout, ..loc }
                };
                let srcs = vec![
                    Loc {
                        layout: permuted,
                        ..x
                    },
                    fit(gamma),
                    fit(beta),
                ];
                let len: usize = norm_shape.iter().product();
                let n_norm = axes.len();
                let loc = self.emit(
                    result,
                    StepOp::LayerNorm {
                        n_norm,
                        eps: eps as f32,
                    },
                    srcs,
                    ty,
                    rd::layer_norm_scratch(len),
                    &|l| Some(axis_last(l, &axes)),
                )?;
                self.set(result, loc);
            }
            OpAttrs::Sdpa { has_mask } => {
                let (_, q) = self.operand(op, "query")?;
                let (_, k) = self.operand(op, "key")?;
                let (_, v) = self.operand(op, "value")?;
                let ty = self.elem(result)?;
                let rank = out_shape.len();
                let s_len = k.layout.shape[rank - 2];
                let mut srcs = vec![q.clone(), k.clone(), v.clone()];
                if has_mask {
                    let (_, mask) = self.operand(op, "attn_mask")?;
                    let mut mask_shape = q.layout.shape[..rank - 1].to_vec();
                    mask_shape.push(s_len);
                    srcs.push(bcast(mask, &mask_shape));
                }
                let scratch =
                    la::sdpa_scratch(s_len, q.layout.shape[rank - 1], v.layout.shape[rank - 1]);
                let loc = self.emit(
                    result,
                    StepOp::Sdpa { mask: has_mask },
                    srcs,
                    ty,
                    scratch,
                    &same,
                )?;
                self.set(result, loc);
            }
            OpAttrs::Reshape { shape } => {
                let (_, x) = self.operand(op, "x")?;
                self.lower_reshape(result, x, &shape);
            }
            OpAttrs::ExpandDims { .. } | OpAttrs::Squeeze { .. } => {
                let (_, x) = self.operand(op, "x")?;
                self.lower_reshape(result, x, &out_shape);
            }
            OpAttrs::Transpose { perm } => {
                let (_, x) = self.operand(op, "x")?;
                let layout = x.layout.transpose(&perm);
                self.view(result, Loc { layout, ..x });
            }
            OpAttrs::SliceBySize { begin, size } => {
                let (_, x) = self.operand(op, "x")?;
                match begin {
                    AttrOperand::Const(begin) => {
                        let step = vec![1; begin.len()];
                        let layout = x.layout.slice(&begin, &size, &step);
                        self.view(result, Loc { layout, ..x });
                    }
                    AttrOperand::Dynamic(begin_value) => {
                        let begin_loc = self.loc(begin_value)?;
                        let ty = self.elem(result)?;
                        let loc =
                            self.emit(result, StepOp::DynSlice, vec![x, begin_loc], ty, 0, &same)?;
                        self.set(result, loc);
                    }
                }
            }
            OpAttrs::SliceByIndex {
                begin,
                stride,
                squeeze,
                sizes,
                ..
            } => {
                let (_, x) = self.operand(op, "x")?;
                self.lower_slice_by_index(result, x, &begin, &stride, &squeeze, &sizes)?;
            }
            OpAttrs::Concat { axis, interleave } => {
                let values: Vec<Handle<Value>> = match op.arg("values") {
                    Some(arg) => arg.value.uses().iter().map(|use_| use_.value).collect(),
                    None => return Err(self.lower_error(op, "missing operand `values`")),
                };
                let ty = self.elem(result)?;
                self.lower_concat(result, &values, axis, interleave, ty)?;
            }
            OpAttrs::Split { axis, sizes } => {
                let (_, x) = self.operand(op, "x")?;
                let mut start = 0;
                for (&part, &size) in op.results.iter().zip(&sizes) {
                    let mut begin = vec![0; x.layout.rank()];
                    begin[axis] = start;
                    let mut shape = x.layout.shape.clone();
                    shape[axis] = size;
                    let layout = x.layout.slice(&begin, &shape, &vec![1; shape.len()]);
                    self.view(
                        part,
                        Loc {
                            layout,
                            ..x.clone()
                        },
                    );
                    start += size;
                }
            }
            OpAttrs::Tile { reps } => {
                let (_, x) = self.operand(op, "x")?;
                if reps
                    .iter()
                    .zip(&x.layout.shape)
                    .all(|(&rep, &dim)| rep == 1 || dim == 1)
                {
                    let layout = x.layout.broadcast_to(&out_shape);
                    self.view(result, Loc { layout, ..x });
                } else {
                    let ty = self.elem(result)?;
                    let loc = self.emit(result, StepOp::Tile, vec![x], ty, 0, &same)?;
                    self.set(result, loc);
                }
            }
            OpAttrs::Fill { value, .. } => {
                let ty = self.elem(result)?;
                let dst = self.dst_for(result, ty);
                self.steps.push(PendingStep {
                    op: StepOp::Fill { value },
                    srcs: Vec::new(),
                    dst: dst.clone(),
                    scratch: 0,
                    value: self.name(result),
                    role: StepRole::Compute,
                });
                self.set(result, dst);
            }
            OpAttrs::BandPart { lower, upper } => {
                let (_, x) = self.operand(op, "x")?;
                let ty = self.elem(result)?;
                let loc = self.emit(
                    result,
                    StepOp::BandPart { lower, upper },
                    vec![x],
                    ty,
                    0,
                    &same,
                )?;
                self.set(result, loc);
            }
            OpAttrs::Select => {
                let (_, cond) = self.operand(op, "cond")?;
                let (_, a) = self.operand(op, "a")?;
                let (_, b) = self.operand(op, "b")?;
                let ty = self.elem(result)?;
                let srcs = vec![
                    bcast(cond, &out_shape),
                    bcast(a, &out_shape),
                    bcast(b, &out_shape),
                ];
                let loc = self.emit(result, StepOp::Select, srcs, ty, 0, &same)?;
                self.set(result, loc);
            }
            OpAttrs::Gather {
                axis,
                batch_dims,
                allow_negative,
                ..
            } => {
                let (_, x) = self.operand(op, "x")?;
                let (_, indices) = self.operand(op, "indices")?;
                let ty = self.elem(result)?;
                let step = StepOp::Gather {
                    axis,
                    batch_dims,
                    wrap_negative: allow_negative,
                };
                let loc = self.emit(result, step, vec![x, indices], ty, 0, &same)?;
                self.set(result, loc);
            }
            OpAttrs::Quantize { params, .. } | OpAttrs::Dequantize { params } => {
                let (_, x) = self.operand(op, "input")?;
                let ty = self.elem(result)?;
                let rank = x.layout.rank();
                let along = |loc: Loc| -> Loc {
                    let layout = match params.axis {
                        Some(axis) if loc.layout.numel() > 1 => {
                            let mut strides = vec![0; rank];
                            strides[axis] = 1;
                            Layout {
                                offset: 0,
                                shape: out_shape.clone(),
                                strides,
                            }
                        }
                        _ => Layout {
                            offset: 0,
                            shape: out_shape.clone(),
                            strides: vec![0; rank],
                        },
                    };
                    Loc { layout, ..loc }
                };
                let scale = self.new_const(Ty::F32, &[params.scale.len()], &params.scale);
                let zero_point =
                    self.new_const(Ty::F32, &[params.zero_point.len()], &params.zero_point);
                let has_zero = params.zero_point.iter().any(|&z| z != 0.0);
                let step = if op.kind == OpKind::Quantize {
                    StepOp::Quantize {
                        zero_point: has_zero,
                    }
                } else {
                    StepOp::Dequantize {
                        zero_point: has_zero,
                    }
                };
                let loc = self.emit(
                    result,
                    step,
                    vec![x, along(scale), along(zero_point)],
                    ty,
                    0,
                    &same,
                )?;
                self.set(result, loc);
            }
        }
        Ok(())
    }

    fn lower_reshape(&mut self, result: Handle<Value>, x: Loc, shape: &[usize]) {
        match x.layout.reshape(shape) {
            Some(layout) => self.view(result, Loc { layout, ..x }),
            None => {
                // Straight into the output buffer when `result` is a function output whose
                // buffer nothing else writes (else the output would get a second copy).
                let dense = match self.free_output(result) {
                    Some(position) => {
                        let dst = Loc {
                            storage: Storage::Output(position),
                            layout: Layout::dense(&x.layout.shape),
                            ty: x.ty,
                        };
                        self.materialize_into(x, dst, result, StepRole::Materialize)
                    }
                    None => self.materialize(x, result, StepRole::Materialize),
                };
                let layout = dense
                    .layout
                    .reshape(shape)
                    .expect("a dense layout reshapes to any shape of its size");
                self.set(result, Loc { layout, ..dense });
            }
        }
    }

    fn lower_slice_by_index(
        &mut self,
        result: Handle<Value>,
        x: Loc,
        begin: &[usize],
        stride: &[i64],
        squeeze: &[bool],
        sizes: &[usize],
    ) -> Result<()> {
        let rank = x.layout.rank();
        let mut start = vec![0usize; rank];
        let mut step = vec![1usize; rank];
        for d in 0..rank {
            let magnitude = stride[d].unsigned_abs() as usize;
            step[d] = magnitude;
            start[d] = if stride[d] < 0 {
                begin[d] - (sizes[d].max(1) - 1) * magnitude
            } else {
                begin[d]
            };
        }
        let mut loc = Loc {
            layout: x.layout.slice(&start, sizes, &step),
            ..x
        };
        self.counts.folded_views += 1;
        for d in 0..rank {
            if stride[d] < 0 && sizes[d] > 1 && !squeeze[d] {
                // Reverse the axis with a gather of constant indices n-1, ..., 0.
                let reversed: Vec<f64> = (0..sizes[d]).rev().map(|i| i as f64).collect();
                let indices = self.new_const(Ty::I32, &[sizes[d]], &reversed);
                let shape = loc.layout.shape.clone();
                let dst = self.new_alloc(&shape, loc.ty);
                self.steps.push(PendingStep {
                    op: StepOp::Gather {
                        axis: d,
                        batch_dims: 0,
                        wrap_negative: false,
                    },
                    srcs: vec![loc.clone(), indices],
                    dst: dst.clone(),
                    scratch: 0,
                    value: self.name(result),
                    role: StepRole::Materialize,
                });
                loc = dst;
            }
        }
        let kept: Vec<usize> = (0..rank).filter(|&d| !squeeze[d]).collect();
        let layout = Layout {
            offset: loc.layout.offset,
            shape: kept.iter().map(|&d| loc.layout.shape[d]).collect(),
            strides: kept.iter().map(|&d| loc.layout.strides[d]).collect(),
        };
        self.set(result, Loc { layout, ..loc });
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "matmul, linear and 1x1 conv share this lowering"
    )]
    fn lower_matmul(
        &mut self,
        result: Handle<Value>,
        x: Loc,
        y: Loc,
        transpose_x: bool,
        transpose_y: bool,
        bias: Option<Loc>,
        ty: Ty,
    ) -> Result<()> {
        let swap_last = |layout: &Layout| {
            let rank = layout.rank();
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.swap(rank - 2, rank - 1);
            layout.transpose(&perm)
        };
        let mut a = x.layout.clone();
        let mut b = y.layout.clone();
        if transpose_x && a.rank() >= 2 {
            a = swap_last(&a);
        }
        if transpose_y && b.rank() >= 2 {
            b = swap_last(&b);
        }
        let x_vec = a.rank() == 1;
        let y_vec = b.rank() == 1;
        if x_vec {
            a = a
                .reshape(&[1, a.shape[0]])
                .expect("inserting a size-1 dim is always a view");
        }
        if y_vec {
            b = b
                .reshape(&[b.shape[0], 1])
                .expect("inserting a size-1 dim is always a view");
        }
        let (ra, rb) = (a.rank(), b.rank());
        let batch_a = &a.shape[..ra - 2];
        let batch_b = &b.shape[..rb - 2];
        let batch_rank = batch_a.len().max(batch_b.len());
        let mut batch = vec![1usize; batch_rank];
        for d in 0..batch_rank {
            let da = if d + batch_a.len() >= batch_rank {
                batch_a[d + batch_a.len() - batch_rank]
            } else {
                1
            };
            let db = if d + batch_b.len() >= batch_rank {
                batch_b[d + batch_b.len() - batch_rank]
            } else {
                1
            };
            batch[d] = da.max(db);
        }
        let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
        let mut a_shape = batch.clone();
        a_shape.extend([m, k]);
        let mut b_shape = batch.clone();
        b_shape.extend([k, n]);
        let mut c_shape = batch.clone();
        c_shape.extend([m, n]);
        let a = a.broadcast_to(&a_shape);
        let b = b.broadcast_to(&b_shape);
        let mut srcs = vec![Loc { layout: a, ..x }, Loc { layout: b, ..y }];
        if let Some(bias) = &bias {
            srcs.push(bcast(bias.clone(), &c_shape));
        }
        let kernel_c = c_shape.clone();
        let loc = self.emit(
            result,
            StepOp::Matmul {
                bias: bias.is_some(),
            },
            srcs,
            ty,
            la::matmul_scratch(n),
            &move |l| l.reshape(&kernel_c),
        )?;
        self.set(result, loc);
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "conv's parameters, as verification normalised them"
    )]
    fn lower_conv(
        &mut self,
        result: Handle<Value>,
        x: Loc,
        weight: Loc,
        bias: Option<Loc>,
        strides: &[usize],
        pads_before: &[usize],
        pads_after: &[usize],
        dilations: &[usize],
        groups: usize,
        ty: Ty,
    ) -> Result<()> {
        let spatial = x.layout.rank() - 2;
        let kernel_sizes = &weight.layout.shape[2..];
        let pointwise = kernel_sizes.iter().all(|&k| k == 1)
            && strides.iter().all(|&s| s == 1)
            && pads_before.iter().chain(pads_after).all(|&p| p == 0)
            && groups == 1;
        let (n, c_in, c_out) = (x.layout.shape[0], x.layout.shape[1], weight.layout.shape[0]);
        let out_shape = self.ty_of(result).shape.clone();
        if pointwise {
            let positions: usize = x.layout.shape[2..].iter().product();
            let b = x.layout.reshape(&[n, c_in, positions]);
            let a = weight.layout.reshape(&[c_out, c_in]);
            let home_ok = match &self.homes[result] {
                Some((_, layout)) => layout.reshape(&[n, c_out, positions]).is_some(),
                None => true,
            };
            if let (Some(b), Some(a), true) = (b, a, home_ok) {
                // A 1x1 convolution is out[n] = W · x[n]: a matmul with W broadcast over the batch.
                let a = a.broadcast_to(&[n, c_out, c_in]);
                let mut srcs = vec![
                    Loc {
                        layout: a,
                        ..weight
                    },
                    Loc { layout: b, ..x },
                ];
                if let Some(bias) = bias {
                    let column = bias
                        .layout
                        .reshape(&[c_out, 1])
                        .expect("a vector reshapes to a column");
                    srcs.push(Loc {
                        layout: column.broadcast_to(&[n, c_out, positions]),
                        ..bias
                    });
                }
                let has_bias = srcs.len() == 3;
                let kernel_c = [n, c_out, positions];
                let loc = self.emit(
                    result,
                    StepOp::Matmul { bias: has_bias },
                    srcs,
                    ty,
                    la::matmul_scratch(positions),
                    &move |l| l.reshape(&kernel_c),
                )?;
                self.set(result, loc);
                return Ok(());
            }
        }
        let lift = |layout: &Layout| -> Layout {
            let mut shape = layout.shape[..2].to_vec();
            shape.extend(std::iter::repeat_n(1, 3 - spatial));
            shape.extend_from_slice(&layout.shape[2..]);
            layout
                .reshape(&shape)
                .expect("inserting size-1 dims is always a view")
        };
        let pad3 = |values: &[usize], fill: usize| -> [usize; 3] {
            let mut out = [fill; 3];
            out[3 - spatial..].copy_from_slice(values);
            out
        };
        let mut srcs = vec![
            Loc {
                layout: lift(&x.layout),
                ..x
            },
            Loc {
                layout: lift(&weight.layout),
                ..weight
            },
        ];
        if let Some(bias) = &bias {
            srcs.push(bias.clone());
        }
        let step = StepOp::Conv {
            strides: pad3(strides, 1),
            dilations: pad3(dilations, 1),
            pads_before: pad3(pads_before, 0),
            groups,
            bias: bias.is_some(),
        };
        let ow = *out_shape.last().unwrap_or(&1);
        // The tier tables run convolutions as GEMMs over an unfolded column block of the
        // scratch (one block for all threads, so it is spread over the per-thread shares).
        let lifted_out = lift(&Layout::dense(&out_shape));
        let gemm_scratch = crate::kernels::conv::conv_gemm_scratch(
            &srcs[0].layout.shape,
            &srcs[1].layout.shape,
            [
                lifted_out.shape[2],
                lifted_out.shape[3],
                lifted_out.shape[4],
            ],
            groups,
            ty.size(),
        );
        let per_task = la::conv_scratch(ow).max(
            gemm_scratch
                .div_ceil(self.threads.max(1))
                .next_multiple_of(64),
        );
        let loc = self.emit(result, step, srcs, ty, per_task, &|l| Some(lift(l)))?;
        self.set(result, loc);
        Ok(())
    }

    /// Emits the pattern step computing `root` (see [`super::fuse::Pattern`]).
    fn lower_pattern(&mut self, root: Handle<Value>, pattern: fuse::Pattern) -> Result<()> {
        let shape = self.ty_of(root).shape.clone();
        let ty = self.elem(root)?;
        // `value`'s elements seen as `dims`, contiguous (materialised when they are not).
        let contiguous = |this: &mut Self, value: Handle<Value>, dims: &[usize]| -> Result<Loc> {
            let mut loc = this.loc(value)?;
            if !loc.layout.is_contiguous() {
                loc = this.materialize(loc, value, StepRole::Materialize);
            }
            let layout = loc
                .layout
                .reshape(dims)
                .expect("a contiguous layout takes any shape of its size");
            Ok(Loc { layout, ..loc })
        };
        let loc = match pattern {
            fuse::Pattern::RmsNorm {
                x,
                weight,
                axis,
                eps,
            } => {
                let channels = shape[axis];
                let outer: usize = shape[..axis].iter().product();
                let inner: usize = shape[axis + 1..].iter().product();
                let dims = if inner == 1 {
                    vec![outer, channels]
                } else {
                    vec![outer, channels, inner]
                };
                let srcs = vec![
                    contiguous(self, x, &dims)?,
                    contiguous(self, weight, &[channels])?,
                ];
                self.emit(root, StepOp::RmsNorm { eps }, srcs, ty, 0, &|l| {
                    l.reshape(&dims).filter(Layout::is_contiguous)
                })?
            }
            fuse::Pattern::SoftmaxScaled { x, scale, mask } => {
                let rank = shape.len();
                let (rows, n) = (shape[rank - 2], shape[rank - 1]);
                let outer: usize = shape[..rank - 2].iter().product();
                let dims = [outer, rows, n];
                let rows_ok = move |l: Layout| (n <= 1 || l.strides[2] == 1).then_some(l);
                let x_loc = self.loc(x)?;
                let x_loc = match x_loc.layout.reshape(&dims).and_then(rows_ok) {
                    Some(layout) => Loc { layout, ..x_loc },
                    None => contiguous(self, x, &dims)?,
                };
                let mut srcs = vec![x_loc];
                if let Some(mask) = mask {
                    let tensor = self.facts.consts[mask]
                        .clone()
                        .expect("the pattern's mask is a constant");
                    let values = tensor.to_f64_vec().ok_or_else(|| Error::ConstDType {
                        value: self.name(mask),
                        dtype: tensor.ty.dtype,
                    })?;
                    let m_shape = &tensor.ty.shape;
                    let m_dim =
                        |back: usize| m_shape.len().checked_sub(back).map_or(1, |d| m_shape[d]);
                    let (m_rows, m_n) = (m_dim(2), m_dim(1));
                    let mut full = Vec::with_capacity(rows * n);
                    for l in 0..rows {
                        for j in 0..n {
                            let (ml, mj) = (
                                if m_rows == 1 { 0 } else { l },
                                if m_n == 1 { 0 } else { j },
                            );
                            full.push(values[ml * m_n + mj]);
                        }
                    }
                    srcs.push(self.new_const(Ty::F32, &[rows, n], &full));
                }
                let op = StepOp::SoftmaxScaled {
                    scale,
                    mask: mask.is_some(),
                };
                self.emit(root, op, srcs, ty, 0, &|l| {
                    l.reshape(&dims).and_then(rows_ok)
                })?
            }
        };
        self.set(root, loc);
        Ok(())
    }

    /// Emits the fused step of the tree rooted at `root` (see [`super::fuse`]).
    fn lower_fused(&mut self, root: Handle<Value>) -> Result<()> {
        let shape = self.ty_of(root).shape.clone();
        let mut tree = FuseTree::default();
        let top = self.fuse_value(root, root, &mut tree)?;
        // A destination addressed with a stride along the last axis (an output home through a
        // transpose, such as RoPE's heads written back to channels) would make the fused
        // kernel scatter row by row, which measured slower than the unfused steps (whose
        // kernels move such views in blocks): the tree is lowered op by op instead.
        let dst_strided = self.homes[root].as_ref().is_some_and(|(_, layout)| {
            layout.shape.last().is_some_and(|&n| n > 1)
                && layout.strides.last().is_some_and(|&s| s > 1)
        });
        if dst_strided {
            return self.lower_unfused(root);
        }
        let n_leaves = tree.leaves.len();
        let reg = |r: FuseRef| -> u8 {
            match r {
                FuseRef::Leaf(k) => k as u8,
                FuseRef::Node(i) => (n_leaves + i) as u8,
            }
        };
        debug_assert_eq!(top, FuseRef::Node(tree.nodes.len() - 1));
        let nodes = tree
            .nodes
            .iter()
            .map(|&(instr, ty)| FusedNode {
                instr: match instr {
                    TreeInstr::Imm(value) => FusedInstr::Imm(value),
                    TreeInstr::Unary(op, x) => FusedInstr::Unary { op, x: reg(x) },
                    TreeInstr::Binary(op, x, y) => FusedInstr::Binary {
                        op,
                        x: reg(x),
                        y: reg(y),
                    },
                },
                ty,
            })
            .collect();
        let mut program = FusedProgram {
            n_leaves: n_leaves as u8,
            nodes,
            tree: None,
        };
        let srcs: Vec<Loc> = tree
            .leaf_locs
            .into_iter()
            .map(|loc| bcast(loc, &shape))
            .collect();
        let src_tys: Vec<Ty> = srcs.iter().map(|src| src.ty).collect();
        program.tree = crate::kernels::fused::match_program(&program, &src_tys, self.precision);
        let ty = self.elem(root)?;
        let loc = self.emit(root, StepOp::Fused(program), srcs, ty, 0, &|l| {
            Some(l.clone())
        })?;
        self.set(root, loc);
        Ok(())
    }

    /// Lowers the tree rooted at `root` op by op (its members stop being members).
    fn lower_unfused(&mut self, root: Handle<Value>) -> Result<()> {
        let mut order = Vec::new();
        self.tree_members(root, root, &mut order);
        let fusion = self.fusion.as_mut().expect("unfusing with a fusion plan");
        for &value in &order {
            fusion.member[value] = false;
        }
        let func = self.func;
        for value in order.into_iter().chain([root]) {
            let op = fuse::producer(func, value).expect("tree nodes are op results");
            self.lower_op(op, &func.ops[op])?;
        }
        Ok(())
    }

    /// The members of the tree rooted at `root` under `value`, operands first.
    fn tree_members(
        &self,
        value: Handle<Value>,
        root: Handle<Value>,
        out: &mut Vec<Handle<Value>>,
    ) {
        let fusion = self.fusion.as_ref().expect("a fusion plan");
        if let Some((_, operands)) = fusion.fusable[value] {
            for &operand in operands.iter().flatten() {
                if fusion.member[operand] {
                    self.tree_members(operand, root, out);
                }
            }
        }
        if value != root {
            out.push(value);
        }
    }

    /// Adds `value` to `tree`: a leaf (or an immediate, for a scalar constant) unless it is
    /// the root or a fusion member, whose op becomes a node after its operands.
    fn fuse_value(
        &mut self,
        value: Handle<Value>,
        root: Handle<Value>,
        tree: &mut FuseTree,
    ) -> Result<FuseRef> {
        let (inner, fusable) = {
            let fusion = self.fusion.as_ref().expect("fusing with a fusion plan");
            (value == root || fusion.member[value], fusion.fusable[value])
        };
        if !inner {
            if let Some(tensor) = &self.facts.consts[value]
                && tensor.ty.numel() == 1
                && let Some(scalar) = tensor.get_f64(0)
            {
                let ty = self.float_ty(value)?;
                tree.nodes.push((TreeInstr::Imm(scalar as f32), ty));
                return Ok(FuseRef::Node(tree.nodes.len() - 1));
            }
            if let Some(k) = tree.leaves.iter().position(|&leaf| leaf == value) {
                return Ok(FuseRef::Leaf(k));
            }
            let loc = self.loc(value)?;
            tree.leaves.push(value);
            tree.leaf_locs.push(loc);
            return Ok(FuseRef::Leaf(tree.leaves.len() - 1));
        }
        let (op, operands) = fusable.expect("fused values are fusable");
        let ty = self.float_ty(value)?;
        let x = self.fuse_value(operands[0].expect("every fusable op has x"), root, tree)?;
        let instr = match op {
            FusableOp::Unary(unary) => TreeInstr::Unary(unary, x),
            FusableOp::Binary(binary) => {
                let y = self.fuse_value(operands[1].expect("binary ops have y"), root, tree)?;
                TreeInstr::Binary(binary, x, y)
            }
        };
        tree.nodes.push((instr, ty));
        Ok(FuseRef::Node(tree.nodes.len() - 1))
    }

    fn float_ty(&self, value: Handle<Value>) -> Result<FloatTy> {
        let ty = self.elem(value)?;
        FloatTy::of(ty).ok_or_else(|| Error::Unsupported {
            what: format!("fused {ty:?}"),
            value: self.name(value),
        })
    }

    fn lower_concat(
        &mut self,
        result: Handle<Value>,
        values: &[Handle<Value>],
        axis: usize,
        interleave: bool,
        ty: Ty,
    ) -> Result<()> {
        let mut srcs = Vec::with_capacity(values.len());
        for &value in values {
            srcs.push(self.loc(value)?);
        }
        if srcs
            .iter()
            .all(|src| matches!(src.storage, Storage::Const(_)))
            && self.homes[result].is_none()
        {
            // Constant concat: build it now.
            let out_shape = self.ty_of(result).shape.clone();
            let mut out = AlignedBytes::zeroed(out_shape.iter().product::<usize>() * ty.size());
            let dense = Layout::dense(&out_shape);
            let mut start = 0;
            for (k, src) in srcs.iter().enumerate() {
                let part = concat_part(
                    &dense,
                    axis,
                    interleave,
                    k,
                    values.len(),
                    start,
                    src.layout.shape[axis],
                );
                start += src.layout.shape[axis];
                let Storage::Const(idx) = src.storage else {
                    unreachable!("checked all-const above")
                };
                copy_elements(
                    self.consts[idx as usize].as_slice(),
                    &src.layout,
                    out.as_mut_slice(),
                    &part,
                    ty.size(),
                );
            }
            self.consts.push(out);
            self.counts.folded_consts += 1;
            self.set(
                result,
                Loc {
                    storage: Storage::Const(self.consts.len() as u32 - 1),
                    layout: dense,
                    ty,
                },
            );
            return Ok(());
        }
        let dst = self.dst_for(result, ty);
        let mut start = 0;
        for (k, src) in srcs.into_iter().enumerate() {
            let size = src.layout.shape[axis];
            let part = concat_part(&dst.layout, axis, interleave, k, values.len(), start, size);
            start += size;
            if src.storage == dst.storage && src.layout == part {
                // Its producer already wrote it into this slot (concat elimination).
                self.counts.folded_views += 1;
                continue;
            }
            let mut layouts = vec![src.layout.clone(), part];
            coalesce(&mut layouts);
            let part = layouts.pop().expect("two layouts");
            let src_layout = layouts.pop().expect("two layouts");
            self.steps.push(PendingStep {
                op: StepOp::Copy,
                srcs: vec![Loc {
                    layout: src_layout,
                    ..src
                }],
                dst: Loc {
                    layout: part,
                    ..dst.clone()
                },
                scratch: 0,
                value: self.name(result),
                role: StepRole::Concat,
            });
        }
        self.set(result, dst);
        Ok(())
    }

    fn bind_outputs(&mut self) -> Result<Vec<IoDesc>> {
        let mut outputs = Vec::new();
        let func = self.func;
        for (position, output) in func.outputs.iter().enumerate() {
            let value = output.value;
            self.check_rank(value)?;
            let ty = self.ty_of(value).clone();
            outputs.push(io_desc(self.name(value), &ty)?);
            let loc = self.loc(value)?;
            let in_place = loc.storage == Storage::Output(position as u32) && loc.layout.is_dense();
            if !in_place {
                let dense = Layout::dense(&ty.shape);
                let mut layouts = vec![loc.layout.clone(), dense];
                coalesce(&mut layouts);
                let dst_layout = layouts.pop().expect("two layouts");
                let src_layout = layouts.pop().expect("two layouts");
                self.steps.push(PendingStep {
                    op: StepOp::Copy,
                    srcs: vec![Loc {
                        layout: src_layout,
                        ..loc.clone()
                    }],
                    dst: Loc {
                        storage: Storage::Output(position as u32),
                        layout: dst_layout,
                        ty: loc.ty,
                    },
                    scratch: 0,
                    value: self.name(value),
                    role: StepRole::Materialize,
                });
            }
        }
        Ok(outputs)
    }

    fn finish(self, inputs: Vec<IoDesc>, outputs: Vec<IoDesc>, portable: bool) -> Result<Plan> {
        // Liveness of arena allocations (and per-step scratch).
        let n_allocs = self.alloc_bytes.len();
        let mut first = vec![usize::MAX; n_allocs];
        let mut last = vec![0usize; n_allocs];
        for (idx, step) in self.steps.iter().enumerate() {
            for loc in step.srcs.iter().chain(std::iter::once(&step.dst)) {
                if let Storage::Alloc(alloc) = loc.storage {
                    let alloc = alloc as usize;
                    first[alloc] = first[alloc].min(idx);
                    last[alloc] = last[alloc].max(idx);
                }
            }
        }
        let mut requests = Vec::new();
        let mut alloc_request = vec![usize::MAX; n_allocs];
        for alloc in 0..n_allocs {
            if first[alloc] != usize::MAX {
                alloc_request[alloc] = requests.len();
                requests.push(Request {
                    bytes: self.alloc_bytes[alloc],
                    first: first[alloc],
                    last: last[alloc],
                });
            }
        }
        let mut scratch_request = vec![usize::MAX; self.steps.len()];
        for (idx, step) in self.steps.iter().enumerate() {
            if step.scratch > 0 {
                scratch_request[idx] = requests.len();
                requests.push(Request {
                    bytes: step.scratch,
                    first: idx,
                    last: idx,
                });
            }
        }
        let (offsets, arena_bytes) = memory::assign(&requests);
        let mut counts = self.counts;
        counts.arena_allocations = requests.len() as u32;
        counts.arena_bytes_unshared = requests
            .iter()
            .map(|request| request.bytes.next_multiple_of(64) as u64)
            .sum();
        let resolve = |loc: &Loc| -> Operand {
            let (buf, range) = match loc.storage {
                Storage::Input(k) => (BufId::Input(k), 0..inputs[k as usize].byte_len),
                Storage::Output(k) => (BufId::Output(k), 0..outputs[k as usize].byte_len),
                Storage::Const(k) => (BufId::Const(k), 0..self.consts[k as usize].len()),
                Storage::Alloc(alloc) => {
                    let start = offsets[alloc_request[alloc as usize]];
                    (
                        BufId::Arena,
                        start..start + self.alloc_bytes[alloc as usize],
                    )
                }
            };
            Operand {
                buf,
                range,
                layout: loc.layout.clone(),
                ty: loc.ty,
            }
        };
        let steps: Vec<Step> = self
            .steps
            .iter()
            .enumerate()
            .map(|(idx, step)| Step {
                op: step.op.clone(),
                srcs: step.srcs.iter().map(resolve).collect(),
                dst: resolve(&step.dst),
                scratch: if step.scratch > 0 {
                    let start = offsets[scratch_request[idx]];
                    start..start + step.scratch
                } else {
                    0..0
                },
                value: step.value.clone(),
                role: step.role,
            })
            .collect();
        let mut plan = Plan {
            isa: self.isa,
            precision: self.precision,
            threads: self.threads,
            portable,
            inputs,
            outputs,
            consts: self.consts,
            steps,
            kernels: Vec::new(),
            arena_bytes,
            counts,
            pool: PoolRef::for_threads(self.threads),
        };
        plan.resolve_kernels()?;
        Ok(plan)
    }
}

/// A register of a tree being fused: a leaf or a node (renumbered once the leaves are known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FuseRef {
    Leaf(usize),
    Node(usize),
}

#[derive(Clone, Copy, Debug)]
enum TreeInstr {
    Imm(f32),
    Unary(UnaryOp, FuseRef),
    Binary(BinaryOp, FuseRef, FuseRef),
}

/// A fused tree under construction.
#[derive(Default)]
struct FuseTree {
    leaves: Vec<Handle<Value>>,
    leaf_locs: Vec<Loc>,
    nodes: Vec<(TreeInstr, FloatTy)>,
}

fn is_view_op(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Reshape
            | OpKind::Transpose
            | OpKind::ExpandDims
            | OpKind::Squeeze
            | OpKind::SliceBySize
            | OpKind::SliceByIndex
            | OpKind::Split
            | OpKind::Tile
    )
}

fn bcast(loc: Loc, shape: &[usize]) -> Loc {
    Loc {
        layout: loc.layout.broadcast_to(shape),
        ..loc
    }
}

/// The sub-layout of `dst` that input `k` of a concat along `axis` fills.
fn concat_part(
    dst: &Layout,
    axis: usize,
    interleave: bool,
    k: usize,
    count: usize,
    start: usize,
    size: usize,
) -> Layout {
    let rank = dst.rank();
    let mut begin = vec![0usize; rank];
    let mut shape = dst.shape.clone();
    let mut step = vec![1usize; rank];
    shape[axis] = size;
    if interleave {
        begin[axis] = k;
        step[axis] = count;
    } else {
        begin[axis] = start;
    }
    dst.slice(&begin, &shape, &step)
}

/// Copies every element of `src` (through `src_layout`) to `dst` (through `dst_layout`), by
/// element size; used only at compile time.
fn copy_elements(
    src: &[u8],
    src_layout: &Layout,
    dst: &mut [u8],
    dst_layout: &Layout,
    size: usize,
) {
    let rank = src_layout.rank();
    let mut idx = vec![0usize; rank];
    for _ in 0..src_layout.numel() {
        let from = src_layout.offset_of(&idx) * size;
        let to = dst_layout.offset_of(&idx) * size;
        dst[to..to + size].copy_from_slice(&src[from..from + size]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < src_layout.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_parts_tile_the_destination() {
        let dst = Layout::dense(&[2, 5]);
        let first = concat_part(&dst, 1, false, 0, 2, 0, 2);
        let second = concat_part(&dst, 1, false, 1, 2, 2, 3);
        assert_eq!((first.offset, second.offset), (0, 2));
        let dst = Layout::dense(&[2, 4]);
        let a = concat_part(&dst, 1, true, 0, 2, 0, 2);
        let b = concat_part(&dst, 1, true, 1, 2, 2, 2);
        assert_eq!((a.offset, a.strides.clone(), b.offset), (0, vec![4, 2], 1));
    }

    #[test]
    fn axis_last_permutes() {
        let l = Layout::dense(&[2, 3, 4]);
        let p = axis_last(&l, &[1]);
        assert_eq!(p.shape, vec![2, 4, 3]);
        assert_eq!(p.strides, vec![12, 1, 4]);
        assert_eq!(inverse_perm(&[2, 0, 1]), vec![1, 2, 0]);
    }
}
