//! The serialised plan format (for the bridge's compile cache).
//!
//! ```text
//! magic    8 bytes  "MILBPLAN"
//! version  u32      FORMAT_VERSION; another value is Error::PlanVersion
//! length   u64      payload length
//! hash     32 bytes blake3 of the payload; a mismatch is Error::CorruptPlan
//! payload           little-endian fields, see `write_plan`
//! ```
//!
//! After decoding, every operand is checked against its buffer (ranges, layouts, injective
//! destinations, ranks) and every step's kernel is resolved, so a stream that hashes correctly
//! but describes an impossible plan is still a clean error, never a panic at eval time.

use milbridge_linalg::cpu::{self, Isa};
use milbridge_mil::ir::{DType, TensorType};

use crate::Precision;
use crate::elem::Ty;
use crate::error::{Error, Result};
use crate::kernels::table::FloatTy;
use crate::kernels::{fused, pattern};
use crate::layout::{Layout, MAX_RANK};
use crate::plan::fuse::{MAX_REGS, MAX_TREE_LEAVES, Tree, TreeForm, TreeLeaf};
use crate::plan::step::{
    BinaryOp, BufId, CmpOp, FusedInstr, FusedNode, FusedProgram, MAX_SRCS, Operand, ReduceOp, Step,
    StepOp, StepRole, UnaryOp,
};
use crate::plan::{AlignedBytes, IoDesc, LowerCounts, Plan, PoolRef};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;

const MAGIC: &[u8; 8] = b"MILBPLAN";

const BINARY: [BinaryOp; 7] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::RealDiv,
    BinaryOp::Pow,
    BinaryOp::Maximum,
    BinaryOp::Minimum,
];
const HEADER: usize = 8 + 4 + 8 + 32;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn usize(&mut self, value: usize) {
        self.u64(value as u64);
    }
    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn f32(&mut self, value: f32) {
        self.u32(value.to_bits());
    }
    fn f64(&mut self, value: f64) {
        self.u64(value.to_bits());
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.usize(bytes.len());
        self.0.extend_from_slice(bytes);
    }
    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }
    fn layout(&mut self, layout: &Layout) {
        self.usize(layout.offset);
        self.u8(layout.rank() as u8);
        for (&n, &s) in layout.shape.iter().zip(&layout.strides) {
            self.usize(n);
            self.usize(s);
        }
    }
    fn operand(&mut self, operand: &Operand) {
        let (tag, idx) = match operand.buf {
            BufId::Input(k) => (0, k),
            BufId::Output(k) => (1, k),
            BufId::Const(k) => (2, k),
            BufId::Arena => (3, 0),
        };
        self.u8(tag);
        self.u32(idx);
        self.usize(operand.range.start);
        self.usize(operand.range.end);
        self.u8(operand.ty.code());
        self.layout(&operand.layout);
    }
    fn io(&mut self, io: &IoDesc) {
        self.str(&io.name);
        self.str(io.ty.dtype.name());
        self.u8(io.ty.rank() as u8);
        for &dim in &io.ty.shape {
            self.usize(dim);
        }
        self.usize(io.byte_len);
    }
    fn unary(&mut self, unary: UnaryOp) {
        self.u8(unary.slot() as u8);
        let (a, b) = match unary {
            UnaryOp::Rsqrt(eps) | UnaryOp::Log(eps) | UnaryOp::Inverse(eps) => (eps, 0.0),
            UnaryOp::Clip(alpha, beta) => (alpha, beta),
            _ => (0.0, 0.0),
        };
        self.f32(a);
        self.f32(b);
    }
    fn op(&mut self, op: &StepOp) {
        match op {
            StepOp::Copy => self.u8(0),
            StepOp::Unary(unary) => {
                self.u8(1);
                self.unary(*unary);
            }
            StepOp::Binary(binary) => {
                self.u8(2);
                self.u8(*binary as u8);
            }
            StepOp::Compare(cmp) => {
                self.u8(3);
                self.u8(*cmp as u8);
            }
            StepOp::Cast => self.u8(4),
            StepOp::Softmax => self.u8(5),
            StepOp::SoftmaxColumns => self.u8(19),
            StepOp::Reduce { op, n_reduced } => {
                self.u8(6);
                self.u8(*op as u8);
                self.usize(*n_reduced);
            }
            StepOp::Matmul { bias } => {
                self.u8(7);
                self.u8(u8::from(*bias));
            }
            StepOp::Conv {
                strides,
                dilations,
                pads_before,
                groups,
                bias,
            } => {
                self.u8(8);
                for &value in strides.iter().chain(dilations).chain(pads_before) {
                    self.usize(value);
                }
                self.usize(*groups);
                self.u8(u8::from(*bias));
            }
            StepOp::LayerNorm { n_norm, eps } => {
                self.u8(9);
                self.usize(*n_norm);
                self.f32(*eps);
            }
            StepOp::Sdpa { mask } => {
                self.u8(10);
                self.u8(u8::from(*mask));
            }
            StepOp::Select => self.u8(11),
            StepOp::Gather {
                axis,
                batch_dims,
                wrap_negative,
            } => {
                self.u8(12);
                self.usize(*axis);
                self.usize(*batch_dims);
                self.u8(u8::from(*wrap_negative));
            }
            StepOp::BandPart { lower, upper } => {
                self.u8(13);
                self.i64(*lower);
                self.i64(*upper);
            }
            StepOp::Tile => self.u8(14),
            StepOp::Fill { value } => {
                self.u8(15);
                self.f64(*value);
            }
            StepOp::DynSlice => self.u8(16),
            StepOp::Quantize { zero_point } => {
                self.u8(17);
                self.u8(u8::from(*zero_point));
            }
            StepOp::Fused(program) => {
                self.u8(20);
                self.u8(program.n_leaves);
                self.u8(program.nodes.len() as u8);
                for node in &program.nodes {
                    self.u8(node.ty as u8);
                    match node.instr {
                        FusedInstr::Imm(value) => {
                            self.u8(0);
                            self.f32(value);
                        }
                        FusedInstr::Unary { op, x } => {
                            self.u8(1);
                            self.unary(op);
                            self.u8(x);
                        }
                        FusedInstr::Binary { op, x, y } => {
                            self.u8(2);
                            self.u8(op as u8);
                            self.u8(x);
                            self.u8(y);
                        }
                    }
                }
                match &program.tree {
                    None => self.u8(0),
                    Some(form) => {
                        let idx = Tree::ALL
                            .iter()
                            .position(|&tree| tree == form.tree)
                            .expect("every formula is in Tree::ALL");
                        self.u8(idx as u8 + 1);
                        self.u8(u8::from(form.round_f16));
                        for leaf in form.leaves {
                            match leaf {
                                TreeLeaf::Src(k) => {
                                    self.u8(0);
                                    self.u8(k);
                                }
                                TreeLeaf::Imm(value) => {
                                    self.u8(1);
                                    self.f32(value);
                                }
                            }
                        }
                    }
                }
            }
            StepOp::Dequantize { zero_point } => {
                self.u8(18);
                self.u8(u8::from(*zero_point));
            }
            StepOp::RmsNorm { eps } => {
                self.u8(21);
                self.f32(*eps);
            }
            StepOp::SoftmaxScaled { scale, mask } => {
                self.u8(22);
                self.f32(*scale);
                self.u8(u8::from(*mask));
            }
        }
    }
}

/// Serialises `plan`.
pub fn write_plan(plan: &Plan) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.u8(plan.isa as u8);
    w.u8(plan.precision as u8);
    w.u8(u8::from(plan.portable));
    w.usize(plan.threads);
    for list in [&plan.inputs, &plan.outputs] {
        w.usize(list.len());
        for io in list {
            w.io(io);
        }
    }
    w.usize(plan.consts.len());
    for konst in &plan.consts {
        w.bytes(konst.as_slice());
    }
    w.usize(plan.arena_bytes);
    let counts = plan.counts;
    w.u32(counts.folded_views);
    w.u32(counts.folded_consts);
    w.u32(counts.dead_ops);
    w.u32(counts.arena_allocations);
    w.u64(counts.arena_bytes_unshared);
    w.usize(plan.steps.len());
    for step in &plan.steps {
        w.op(&step.op);
        w.u8(step.srcs.len() as u8);
        for src in &step.srcs {
            w.operand(src);
        }
        w.operand(&step.dst);
        w.usize(step.scratch.start);
        w.usize(step.scratch.end);
        w.str(&step.value);
        w.u8(match step.role {
            StepRole::Compute => 0,
            StepRole::Materialize => 1,
            StepRole::Concat => 2,
        });
    }
    let payload = w.0;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(&payload).as_bytes());
    out.extend_from_slice(&payload);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::CorruptPlan(reason.into())
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt(format!("truncated at byte {}", self.pos)))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("size does not fit this machine"))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("bad bool {other}"))),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.usize()?;
        self.take(len)
    }
    fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
    }
    fn count(&mut self, limit: usize) -> Result<usize> {
        let count = self.usize()?;
        if count > limit {
            return Err(corrupt(format!("count {count} exceeds {limit}")));
        }
        Ok(count)
    }
    fn layout(&mut self) -> Result<Layout> {
        let offset = self.usize()?;
        let rank = usize::from(self.u8()?);
        if rank > MAX_RANK {
            return Err(corrupt(format!("rank {rank}")));
        }
        let mut shape = Vec::with_capacity(rank);
        let mut strides = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(self.usize()?);
            strides.push(self.usize()?);
        }
        Ok(Layout {
            offset,
            shape,
            strides,
        })
    }
    fn operand(&mut self) -> Result<Operand> {
        let tag = self.u8()?;
        let idx = self.u32()?;
        let buf = match tag {
            0 => BufId::Input(idx),
            1 => BufId::Output(idx),
            2 => BufId::Const(idx),
            3 => BufId::Arena,
            other => return Err(corrupt(format!("bad buffer tag {other}"))),
        };
        let start = self.usize()?;
        let end = self.usize()?;
        let ty = Ty::from_code(self.u8()?).ok_or_else(|| corrupt("bad element type"))?;
        let layout = self.layout()?;
        Ok(Operand {
            buf,
            range: start..end,
            layout,
            ty,
        })
    }
    fn io(&mut self) -> Result<IoDesc> {
        let name = self.str()?;
        let dtype = DType::from_name(&self.str()?).ok_or_else(|| corrupt("bad dtype"))?;
        let rank = usize::from(self.u8()?);
        let mut shape = Vec::with_capacity(rank.min(MAX_RANK));
        for _ in 0..rank {
            shape.push(self.usize()?);
        }
        let byte_len = self.usize()?;
        Ok(IoDesc {
            name,
            ty: TensorType::new(dtype, shape),
            byte_len,
        })
    }
    fn unary(&mut self) -> Result<UnaryOp> {
        let slot = self.u8()?;
        let (a, b) = (self.f32()?, self.f32()?);
        Ok(match slot {
            0 => UnaryOp::Abs,
            1 => UnaryOp::Square,
            2 => UnaryOp::Sqrt,
            3 => UnaryOp::Exp,
            4 => UnaryOp::Erf,
            5 => UnaryOp::Tanh,
            6 => UnaryOp::Sigmoid,
            7 => UnaryOp::Relu,
            8 => UnaryOp::Silu,
            9 => UnaryOp::Rsqrt(a),
            10 => UnaryOp::Log(a),
            11 => UnaryOp::Inverse(a),
            12 => UnaryOp::GeluExact,
            13 => UnaryOp::GeluTanh,
            14 => UnaryOp::GeluSigmoid,
            15 => UnaryOp::Clip(a, b),
            16 => UnaryOp::Identity,
            other => return Err(corrupt(format!("bad unary slot {other}"))),
        })
    }
    fn op(&mut self) -> Result<StepOp> {
        const CMP: [CmpOp; 6] = [
            CmpOp::Equal,
            CmpOp::NotEqual,
            CmpOp::Greater,
            CmpOp::GreaterEqual,
            CmpOp::Less,
            CmpOp::LessEqual,
        ];
        const REDUCE: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max];
        Ok(match self.u8()? {
            0 => StepOp::Copy,
            1 => StepOp::Unary(self.unary()?),
            2 => StepOp::Binary(pick(&BINARY, self.u8()?)?),
            3 => StepOp::Compare(pick(&CMP, self.u8()?)?),
            4 => StepOp::Cast,
            5 => StepOp::Softmax,
            6 => StepOp::Reduce {
                op: pick(&REDUCE, self.u8()?)?,
                n_reduced: self.usize()?,
            },
            7 => StepOp::Matmul { bias: self.bool()? },
            8 => {
                let mut values = [0usize; 9];
                for value in &mut values {
                    *value = self.usize()?;
                }
                StepOp::Conv {
                    strides: [values[0], values[1], values[2]],
                    dilations: [values[3], values[4], values[5]],
                    pads_before: [values[6], values[7], values[8]],
                    groups: self.usize()?,
                    bias: self.bool()?,
                }
            }
            9 => StepOp::LayerNorm {
                n_norm: self.usize()?,
                eps: self.f32()?,
            },
            10 => StepOp::Sdpa { mask: self.bool()? },
            11 => StepOp::Select,
            12 => StepOp::Gather {
                axis: self.usize()?,
                batch_dims: self.usize()?,
                wrap_negative: self.bool()?,
            },
            13 => StepOp::BandPart {
                lower: self.i64()?,
                upper: self.i64()?,
            },
            14 => StepOp::Tile,
            15 => StepOp::Fill { value: self.f64()? },
            16 => StepOp::DynSlice,
            17 => StepOp::Quantize {
                zero_point: self.bool()?,
            },
            18 => StepOp::Dequantize {
                zero_point: self.bool()?,
            },
            19 => StepOp::SoftmaxColumns,
            20 => {
                let n_leaves = self.u8()?;
                let n_nodes = usize::from(self.u8()?);
                if usize::from(n_leaves) + n_nodes > MAX_REGS {
                    return Err(corrupt(format!("fused program of {n_nodes} nodes")));
                }
                let mut nodes = Vec::with_capacity(n_nodes);
                for _ in 0..n_nodes {
                    let ty = pick(&[FloatTy::F16, FloatTy::F32], self.u8()?)?;
                    let instr = match self.u8()? {
                        0 => FusedInstr::Imm(self.f32()?),
                        1 => FusedInstr::Unary {
                            op: self.unary()?,
                            x: self.u8()?,
                        },
                        2 => FusedInstr::Binary {
                            op: pick(&BINARY, self.u8()?)?,
                            x: self.u8()?,
                            y: self.u8()?,
                        },
                        other => return Err(corrupt(format!("bad fused instruction {other}"))),
                    };
                    nodes.push(FusedNode { instr, ty });
                }
                let tree = match self.u8()? {
                    0 => None,
                    tag => {
                        let tree = pick(&Tree::ALL, tag - 1)?;
                        let round_f16 = self.bool()?;
                        let mut leaves = [TreeLeaf::Imm(0.0); MAX_TREE_LEAVES];
                        for leaf in &mut leaves {
                            *leaf = match self.u8()? {
                                0 => TreeLeaf::Src(self.u8()?),
                                1 => TreeLeaf::Imm(self.f32()?),
                                other => return Err(corrupt(format!("bad tree leaf {other}"))),
                            };
                        }
                        Some(TreeForm {
                            tree,
                            leaves,
                            round_f16,
                        })
                    }
                };
                StepOp::Fused(FusedProgram {
                    n_leaves,
                    nodes,
                    tree,
                })
            }
            21 => StepOp::RmsNorm { eps: self.f32()? },
            22 => StepOp::SoftmaxScaled {
                scale: self.f32()?,
                mask: self.bool()?,
            },
            other => return Err(corrupt(format!("bad op tag {other}"))),
        })
    }
}

fn pick<T: Copy>(table: &[T], idx: u8) -> Result<T> {
    table
        .get(usize::from(idx))
        .copied()
        .ok_or_else(|| corrupt(format!("bad op parameter {idx}")))
}

/// Deserialises a plan written by [`write_plan`] of the same format version.
pub fn read_plan(bytes: &[u8]) -> Result<Plan> {
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes is shorter than the {HEADER}-byte header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("not a milbridge plan (bad magic)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::PlanVersion {
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let length = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != length {
        return Err(corrupt(format!(
            "payload is {} bytes, header says {length}",
            payload.len()
        )));
    }
    if blake3::hash(payload).as_bytes() != &bytes[20..52] {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader {
        bytes: payload,
        pos: 0,
    };
    let isa = *Isa::ALL
        .get(usize::from(r.u8()?))
        .ok_or_else(|| corrupt("bad isa"))?;
    let precision = match r.u8()? {
        0 => Precision::Exact,
        1 => Precision::Fast,
        other => return Err(corrupt(format!("bad precision {other}"))),
    };
    let portable = r.bool()?;
    let threads = r.usize()?.clamp(1, 4096);
    let mut io_lists = Vec::new();
    for _ in 0..2 {
        let count = r.count(1 << 16)?;
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            list.push(r.io()?);
        }
        io_lists.push(list);
    }
    let outputs = io_lists.pop().expect("two lists");
    let inputs = io_lists.pop().expect("two lists");
    let n_consts = r.count(1 << 24)?;
    let mut consts = Vec::with_capacity(n_consts);
    for _ in 0..n_consts {
        consts.push(AlignedBytes::from_slice(r.bytes()?));
    }
    let arena_bytes = r.usize()?;
    let counts = LowerCounts {
        folded_views: r.u32()?,
        folded_consts: r.u32()?,
        dead_ops: r.u32()?,
        arena_allocations: r.u32()?,
        arena_bytes_unshared: r.u64()?,
    };
    let n_steps = r.count(1 << 24)?;
    let mut steps = Vec::with_capacity(n_steps);
    for _ in 0..n_steps {
        let op = r.op()?;
        let n_srcs = usize::from(r.u8()?);
        if n_srcs > MAX_SRCS {
            return Err(corrupt(format!("{n_srcs} sources")));
        }
        let mut srcs = Vec::with_capacity(n_srcs);
        for _ in 0..n_srcs {
            srcs.push(r.operand()?);
        }
        let dst = r.operand()?;
        let scratch = r.usize()?..r.usize()?;
        let value = r.str()?;
        let role = match r.u8()? {
            0 => StepRole::Compute,
            1 => StepRole::Materialize,
            2 => StepRole::Concat,
            other => return Err(corrupt(format!("bad step role {other}"))),
        };
        steps.push(Step {
            op,
            srcs,
            dst,
            scratch,
            value,
            role,
        });
    }
    if r.pos != payload.len() {
        return Err(corrupt(format!("{} trailing bytes", payload.len() - r.pos)));
    }
    // A plan compiled for a tier this host lacks runs on the best tier it has.
    let isa = isa.min(cpu::host_isa());
    let mut plan = Plan {
        isa,
        precision,
        threads,
        portable,
        inputs,
        outputs,
        consts,
        steps,
        kernels: Vec::new(),
        arena_bytes,
        counts,
        pool: PoolRef::for_threads(threads),
    };
    validate(&plan)?;
    plan.resolve_kernels()
        .map_err(|error| corrupt(error.to_string()))?;
    Ok(plan)
}

/// Whether two matched formulas are the same, immediates compared bit for bit (a NaN
/// immediate equals itself).
fn same_tree(a: Option<TreeForm>, b: Option<TreeForm>) -> bool {
    let leaf_bits = |leaf: TreeLeaf| match leaf {
        TreeLeaf::Src(k) => (0u8, u32::from(k)),
        TreeLeaf::Imm(value) => (1u8, value.to_bits()),
    };
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.tree == b.tree
                && a.round_f16 == b.round_f16
                && a.leaves
                    .iter()
                    .zip(&b.leaves)
                    .all(|(&x, &y)| leaf_bits(x) == leaf_bits(y))
        }
        _ => false,
    }
}

/// Checks every operand against its buffer so that eval never panics on a decoded plan.
fn validate(plan: &Plan) -> Result<()> {
    for io in plan.inputs.iter().chain(&plan.outputs) {
        let ty = Ty::from_dtype(io.ty.dtype)
            .ok_or_else(|| corrupt(format!("dtype {} of `{}`", io.ty.dtype, io.name)))?;
        let numel = io
            .ty
            .shape
            .iter()
            .try_fold(1usize, |acc, &dim| acc.checked_mul(dim));
        if numel.and_then(|numel| numel.checked_mul(ty.size())) != Some(io.byte_len)
            || io.ty.rank() > MAX_RANK
        {
            return Err(corrupt(format!(
                "`{}` has an inconsistent byte length",
                io.name
            )));
        }
    }
    for (idx, step) in plan.steps.iter().enumerate() {
        let check = |operand: &Operand, is_dst: bool| -> Result<()> {
            let buffer_len = match operand.buf {
                BufId::Input(k) if !is_dst => plan.inputs.get(k as usize).map(|io| io.byte_len),
                BufId::Output(k) => plan.outputs.get(k as usize).map(|io| io.byte_len),
                BufId::Const(k) if !is_dst => plan.consts.get(k as usize).map(AlignedBytes::len),
                BufId::Arena => Some(plan.arena_bytes),
                _ => None,
            }
            .ok_or_else(|| corrupt(format!("step {idx} names a missing buffer")))?;
            let range = &operand.range;
            let size = operand.ty.size();
            let layout = &operand.layout;
            let ok = range.start <= range.end
                && range.end <= buffer_len
                && (operand.buf != BufId::Arena || range.start.is_multiple_of(64))
                && layout.shape.len() == layout.strides.len()
                && layout.rank() <= MAX_RANK
                && layout
                    .shape
                    .iter()
                    .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
                    .is_some()
                && layout
                    .shape
                    .iter()
                    .zip(&layout.strides)
                    .try_fold(layout.offset, |acc, (&n, &s)| {
                        n.saturating_sub(1)
                            .checked_mul(s)
                            .and_then(|span| acc.checked_add(span))
                    })
                    .is_some()
                && (layout.numel() == 0
                    || layout
                        .end()
                        .checked_mul(size)
                        .is_some_and(|end| end <= range.end - range.start))
                && (!is_dst || layout.is_injective());
            if ok {
                Ok(())
            } else {
                Err(corrupt(format!(
                    "step {idx} has an operand outside its buffer"
                )))
            }
        };
        for src in &step.srcs {
            check(src, false)?;
        }
        check(&step.dst, true)?;
        if let StepOp::Fused(program) = &step.op {
            let shapes_agree = step
                .srcs
                .iter()
                .all(|src| src.layout.shape == step.dst.layout.shape);
            let float = |ty: Ty| matches!(ty, Ty::F16 | Ty::F32);
            let src_tys: Vec<Ty> = step.srcs.iter().map(|src| src.ty).collect();
            if !program.is_valid(step.srcs.len())
                || !same_tree(
                    program.tree,
                    fused::match_program(program, &src_tys, plan.precision),
                )
                || !shapes_agree
                || !step.srcs.iter().all(|src| float(src.ty))
                || !float(step.dst.ty)
            {
                return Err(corrupt(format!("step {idx} has a malformed fused program")));
            }
        }
        if !pattern::layouts_ok(step) {
            return Err(corrupt(format!(
                "step {idx} has malformed pattern operands"
            )));
        }
        let overlaps = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| {
            !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
        };
        let dst_arena = (step.dst.buf == BufId::Arena).then(|| step.dst.range.clone());
        for src in step.srcs.iter().filter(|src| src.buf == BufId::Arena) {
            if dst_arena
                .as_ref()
                .is_some_and(|dst| overlaps(dst, &src.range))
                || overlaps(&step.scratch, &src.range)
            {
                return Err(corrupt(format!("step {idx} reads arena bytes it writes")));
            }
        }
        if dst_arena
            .as_ref()
            .is_some_and(|dst| overlaps(dst, &step.scratch))
        {
            return Err(corrupt(format!(
                "step {idx} has scratch inside its destination"
            )));
        }
        if step.scratch.start > step.scratch.end
            || step.scratch.end > plan.arena_bytes
            || (!step.scratch.is_empty() && !step.scratch.start.is_multiple_of(64))
        {
            return Err(corrupt(format!("step {idx} has scratch outside the arena")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mil::facts::{BlobMap, VerifiedProgram};
    use mil::verify::VerifyOptions;
    use milbridge_mil as mil;

    use super::*;
    use crate::reference::ReferenceFolder;
    use crate::{CompileOptions, compile_fused};

    fn verified(text: &str) -> VerifiedProgram {
        let (program, diags) = mil::lower::parse(text);
        assert!(!mil::diag::has_errors(&diags), "{diags:?}");
        let blobs = BlobMap::new();
        let options = VerifyOptions {
            blobs: &blobs,
            folder: Some(&ReferenceFolder),
            ..VerifyOptions::default()
        };
        mil::verify::verify(program, &options).unwrap_or_else(|diags| panic!("{diags:?}"))
    }

    const TEXT: &str = "program(1.3)
{
    func main<ios18>(tensor<fp16, [4, 32]> a, tensor<fp16, [4, 32]> b, tensor<fp16, [4, 32]> c) {
        tensor<fp16, [4, 32]> p = mul(x = a, y = b)[name = string(\"p\")];
        tensor<fp16, [4, 32]> s = add(x = p, y = c)[name = string(\"s\")];
        tensor<fp16, [4, 32]> sq = mul(x = s, y = s)[name = string(\"sq\")];
        tensor<fp16, [4, 1]> ms = reduce_mean(x = sq, axes = tensor<int32, [1]>([1]), keep_dims = bool(true))[name = string(\"ms\")];
        tensor<fp16, [4, 1]> r = rsqrt(x = ms, epsilon = fp16(0.001))[name = string(\"r\")];
        tensor<fp16, [4, 32]> sr = mul(x = s, y = r)[name = string(\"sr\")];
        tensor<fp16, [32]> w = const()[name = string(\"w\"), val = tensor<fp16, [32]>([1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8])];
        tensor<fp16, [4, 32]> y = mul(x = sr, y = w)[name = string(\"y\")];
    } -> (y);
}
";

    #[test]
    fn stored_trees_and_pattern_layouts_are_checked_on_decode() {
        let options = CompileOptions {
            precision: Precision::Fast,
            ..CompileOptions::default()
        };
        let plan = compile_fused(&verified(TEXT), &options).unwrap();
        let fused = plan
            .steps
            .iter()
            .position(|step| matches!(&step.op, StepOp::Fused(p) if p.tree.is_some()))
            .expect("a · b + c is a compiled formula");
        let rms = plan
            .steps
            .iter()
            .position(|step| matches!(step.op, StepOp::RmsNorm { .. }))
            .expect("an RMSNorm pattern step");
        assert!(read_plan(&write_plan(&plan)).is_ok());
        // A stored formula its program does not match.
        let mut wrong_tree = plan.clone();
        if let StepOp::Fused(program) = &mut wrong_tree.steps[fused].op {
            program.tree.as_mut().unwrap().tree = Tree::SubMul;
        }
        assert!(matches!(
            read_plan(&write_plan(&wrong_tree)),
            Err(Error::CorruptPlan(_))
        ));
        // No stored formula where one matches.
        let mut no_tree = plan.clone();
        if let StepOp::Fused(program) = &mut no_tree.steps[fused].op {
            program.tree = None;
        }
        assert!(matches!(
            read_plan(&write_plan(&no_tree)),
            Err(Error::CorruptPlan(_))
        ));
        // A pattern step whose weight is not its channel count.
        let mut bad_weight = plan.clone();
        bad_weight.steps[rms].srcs[1].layout = Layout::dense(&[16]);
        assert!(matches!(
            read_plan(&write_plan(&bad_weight)),
            Err(Error::CorruptPlan(_))
        ));
    }
}
