//! A typed builder for generated MIL programs (the trainer's kernels, tests, tools).
//!
//! ```
//! use milbridge_mil::builder::ProgramBuilder;
//! use milbridge_mil::ir::{DType, Opset, TensorType};
//!
//! let mut f = ProgramBuilder::ane().function("main", Opset::Ios18);
//! let x = f.param("x", TensorType::new(DType::Fp16, [1, 4, 1, 8]));
//! let w = f.param("w", TensorType::new(DType::Fp16, [1, 2, 4]));
//! let x3 = f.reshape(x, &[1, 4, 8]);
//! let y3 = f.named("y3").matmul(w, x3, false, false);
//! let y = f.named("y").reshape(y3, &[1, 2, 1, 8]);
//! f.output(y);
//! let program = f.finish();
//! assert_eq!(program.functions.len(), 1);
//! ```
//!
//! What it guarantees about the IR it produces:
//!
//! * Every op helper computes and declares its result type with the op's shape rule
//!   (mil-spec section 6). A violated shape rule (mismatched matmul dimensions, a bad axis, ...)
//!   is a bug in the generator, so the helpers panic with a message naming the rule; the
//!   verifier re-checks everything anyway.
//! * Constants are emitted as `const` ops the way maderix/ANE writes them (`bool bF = const()`,
//!   `tensor<int32, [4]> pm = const()`), and identical constants are emitted once and shared.
//! * Every result has a unique, valid variable name and a `name` attribute equal to it. Names are
//!   automatic (`matmul_0`) unless the caller sets one with [`FunctionBuilder::named`]; a taken
//!   or invalid name is made unique and valid (`q` then `q_1`).
//! * Arguments are written in alphabetical order, as CoreML's printer does, with the optional
//!   arguments maderix/ANE spells out (matmul flags, concat `interleave`, reduction `keep_dims`,
//!   every conv parameter) always present.
//! * Spans are [`Span::UNDEFINED`]: generated IR has no source text.

use crate::ir::{
    Arena, Arg, ArgValue, BlobRef, DType, DeclType, Function, Handle, Literal, Op, OpKind, Opset,
    Program, Tensor, TensorData, TensorType, Use, Value, ValueDef,
};
use crate::span::Span;
use std::collections::{HashMap, HashSet};

/// The `buildInfo` entries maderix/ANE's generators write (mil-spec 3.2).
pub const ANE_BUILD_INFO: &[(&str, &str)] = &[
    ("coremlc-component-MIL", "3510.2.1"),
    ("coremlc-version", "3505.4.1"),
    ("coremltools-component-milinternal", ""),
    ("coremltools-version", "9.0"),
];

/// Words that may not be used as variable names (mil-spec 2.3).
const KEYWORDS: &[&str] = &[
    "program", "func", "tensor", "dict", "list", "tuple", "state", "BLOBFILE", "true", "false",
    "inf", "infinity", "nan",
];

/// Builds a [`Program`]: a version, `buildInfo`, and functions added one after the other.
#[derive(Clone, Debug)]
pub struct ProgramBuilder {
    version: String,
    build_info: Vec<(String, String)>,
    functions: Arena<Function>,
}

impl ProgramBuilder {
    /// An empty program with the given version (`"1.3"` for the ios18 dialect, `"1.0"` for the
    /// ios16 one) and no `buildInfo`.
    pub fn new(version: impl Into<String>) -> ProgramBuilder {
        ProgramBuilder {
            version: version.into(),
            build_info: Vec::new(),
            functions: Arena::new(),
        }
    }

    /// `program(1.3)` with the `buildInfo` maderix/ANE writes ([`ANE_BUILD_INFO`]).
    pub fn ane() -> ProgramBuilder {
        let mut builder = ProgramBuilder::new("1.3");
        for (key, value) in ANE_BUILD_INFO {
            builder = builder.build_info(*key, *value);
        }
        builder
    }

    /// Adds a `buildInfo` entry.
    pub fn build_info(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> ProgramBuilder {
        self.build_info.push((key.into(), value.into()));
        self
    }

    /// Starts a function; [`FunctionBuilder::end_function`] hands the program builder back and
    /// [`FunctionBuilder::finish`] ends the program.
    pub fn function(self, name: impl Into<String>, opset: Opset) -> FunctionBuilder {
        FunctionBuilder::new(self, name.into(), opset)
    }

    /// The program.
    pub fn finish(self) -> Program {
        Program {
            version: self.version,
            build_info: self.build_info,
            functions: self.functions,
        }
    }
}

/// A value inside the function being built (a parameter or an op result).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(Handle<Value>);

impl Var {
    /// The IR handle.
    pub fn handle(self) -> Handle<Value> {
        self.0
    }
}

/// The value bound to an op parameter by [`FunctionBuilder::raw_op`].
#[derive(Clone, Debug)]
pub enum OpArg {
    /// One value.
    Var(Var),
    /// A tuple (variadic parameters such as `concat.values`).
    Tuple(Vec<Var>),
}

/// `conv`'s padding mode (mil-spec 6.9.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PadType {
    /// No padding.
    Valid,
    /// Output size `ceil(D / stride)`, extra padding after.
    Same,
    /// Like `Same`, extra padding before (ios17+).
    SameLower,
    /// Explicit `[before_0, after_0, before_1, after_1, ...]`.
    Custom(Vec<usize>),
}

impl PadType {
    fn name(&self) -> &'static str {
        match self {
            PadType::Valid => "valid",
            PadType::Same => "same",
            PadType::SameLower => "same_lower",
            PadType::Custom(_) => "custom",
        }
    }
}

/// Every `conv` parameter, written out explicitly (maderix/ANE style).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Stride per spatial dimension (empty: all 1).
    pub strides: Vec<usize>,
    /// Padding mode.
    pub pad_type: PadType,
    /// Dilation per spatial dimension (empty: all 1).
    pub dilations: Vec<usize>,
    /// Channel groups.
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            strides: Vec::new(),
            pad_type: PadType::Valid,
            dilations: Vec::new(),
            groups: 1,
        }
    }
}

/// `slice_by_index`'s parameters (mil-spec 6.13.2); empty lists take the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceByIndex {
    /// Start per dimension.
    pub begin: Vec<i32>,
    /// End per dimension (exclusive).
    pub end: Vec<i32>,
    /// Step per dimension (default all 1).
    pub stride: Vec<i32>,
    /// Ignore `begin[d]` (start from the first element in the step direction).
    pub begin_mask: Vec<bool>,
    /// Ignore `end[d]` (run to the last element in the step direction).
    pub end_mask: Vec<bool>,
    /// Select `begin[d]` and drop the dimension.
    pub squeeze_mask: Vec<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ConstKey {
    Bytes(TensorType, Vec<u8>),
    Strings(TensorType, Vec<String>),
    Blob(TensorType, String, u64),
}

/// Builds one function; owns the [`ProgramBuilder`] it belongs to.
#[derive(Clone, Debug)]
pub struct FunctionBuilder {
    program: ProgramBuilder,
    func: Function,
    types: Vec<TensorType>,
    names: HashSet<String>,
    /// Emitted constants by (role, value): vector arguments are shared per parameter role
    /// (`shape`, `begin`, ...), everything else by value alone (role "").
    consts: HashMap<(&'static str, ConstKey), Var>,
    pending_name: Option<String>,
    auto_counters: HashMap<String, usize>,
}

/// Broadcast shape of two shapes (mil-spec 4.6), or `None` when they are not broadcastable.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for idx in 0..rank {
        let da = if idx + a.len() >= rank {
            a[idx + a.len() - rank]
        } else {
            1
        };
        let db = if idx + b.len() >= rank {
            b[idx + b.len() - rank]
        } else {
            1
        };
        out[idx] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Normalises `axis` against `rank` (mil-spec 4.7), or `None` if out of range.
pub fn normalize_axis(axis: i32, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    let axis = i64::from(axis);
    let norm = if axis < 0 { axis + rank } else { axis };
    if (0..rank).contains(&norm) {
        usize::try_from(norm).ok()
    } else {
        None
    }
}

/// Result shape of `matmul` (mil-spec 6.9.1), or a message saying which rule failed.
pub fn matmul_shape(
    x: &[usize],
    y: &[usize],
    transpose_x: bool,
    transpose_y: bool,
) -> Result<Vec<usize>, String> {
    if x.is_empty() || y.is_empty() {
        return Err(format!(
            "matmul operands must have rank >= 1, got x {x:?} and y {y:?}"
        ));
    }
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    if transpose_x && xs.len() >= 2 {
        let n = xs.len();
        xs.swap(n - 1, n - 2);
    }
    if transpose_y && ys.len() >= 2 {
        let n = ys.len();
        ys.swap(n - 1, n - 2);
    }
    let x_vector = xs.len() == 1;
    let y_vector = ys.len() == 1;
    if x_vector {
        xs.insert(0, 1);
    }
    if y_vector {
        ys.push(1);
    }
    let (xn, yn) = (xs.len(), ys.len());
    if xs[xn - 1] != ys[yn - 2] {
        return Err(format!(
            "matmul inner dimensions differ: x {x:?} has k={}, y {y:?} has k={}",
            xs[xn - 1],
            ys[yn - 2]
        ));
    }
    let mut out = broadcast_shapes(&xs[..xn - 2], &ys[..yn - 2]).ok_or_else(|| {
        format!("matmul batch dimensions of x {x:?} and y {y:?} are not broadcastable")
    })?;
    out.push(xs[xn - 2]);
    out.push(ys[yn - 1]);
    if y_vector {
        out.pop();
    }
    if x_vector {
        let last = out.len() - 1;
        out.remove(if y_vector { last } else { last - 1 });
    }
    Ok(out)
}

fn sanitize_ident(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '_' || ch == '@' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || !(out.as_bytes()[0].is_ascii_alphabetic() || out.as_bytes()[0] == b'_') {
        out.insert(0, '_');
    }
    if KEYWORDS.contains(&out.as_str()) || DType::from_name(&out).is_some() {
        out.push('_');
    }
    out
}

fn to_i32(value: usize, what: &str) -> i32 {
    i32::try_from(value)
        .unwrap_or_else(|_| panic!("builder invariant: {what} {value} does not fit int32"))
}

impl FunctionBuilder {
    fn new(program: ProgramBuilder, name: String, opset: Opset) -> FunctionBuilder {
        FunctionBuilder {
            program,
            func: Function {
                name,
                opset,
                params: Vec::new(),
                values: Arena::new(),
                ops: Arena::new(),
                outputs: Vec::new(),
            },
            types: Vec::new(),
            names: HashSet::new(),
            consts: HashMap::new(),
            pending_name: None,
            auto_counters: HashMap::new(),
        }
    }

    // ----- names ---------------------------------------------------------------------------

    /// Names the next value this builder creates (an op result, or a constant not already
    /// emitted: identical constants are shared). Without it, names are automatic. A name already
    /// taken gets a `_1`, `_2`, ... suffix.
    pub fn named(&mut self, name: impl Into<String>) -> &mut FunctionBuilder {
        self.pending_name = Some(name.into());
        self
    }

    fn unique(&mut self, raw: &str) -> String {
        let base = sanitize_ident(raw);
        let mut name = base.clone();
        let mut suffix = 1usize;
        while self.names.contains(&name) {
            name = format!("{base}_{suffix}");
            suffix += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// The name of the next result: the pending name, or `<default>_<n>`.
    fn result_name(&mut self, default: &str) -> String {
        if let Some(name) = self.pending_name.take() {
            return self.unique(&name);
        }
        loop {
            let counter = self.auto_counters.entry(default.to_string()).or_insert(0);
            let candidate = format!("{default}_{counter}");
            *counter += 1;
            if !self.names.contains(&candidate) {
                return self.unique(&candidate);
            }
        }
    }

    // ----- inspection ----------------------------------------------------------------------

    /// The type of `var`.
    pub fn ty(&self, var: Var) -> &TensorType {
        &self.types[var.0.index()]
    }

    /// The shape of `var`.
    pub fn shape(&self, var: Var) -> &[usize] {
        &self.ty(var).shape
    }

    /// The dtype of `var`.
    pub fn dtype(&self, var: Var) -> DType {
        self.ty(var).dtype
    }

    /// The variable name of `var`.
    pub fn name(&self, var: Var) -> &str {
        &self.func.values[var.0].name
    }

    /// The function built so far.
    pub fn function_ref(&self) -> &Function {
        &self.func
    }

    // ----- structure -----------------------------------------------------------------------

    fn push_value(&mut self, value: Value, ty: TensorType) -> Var {
        let handle = self.func.values.append(value, Span::UNDEFINED);
        debug_assert_eq!(
            handle.index(),
            self.types.len(),
            "types table tracks the value arena"
        );
        self.types.push(ty);
        Var(handle)
    }

    /// Declares the next function parameter (input buffer `k` binds the `k`-th parameter).
    pub fn param(&mut self, name: impl Into<String>, ty: TensorType) -> Var {
        self.pending_name = None;
        let name = self.unique(&name.into());
        let index = u32::try_from(self.func.params.len()).expect("parameter count fits u32");
        let var = self.push_value(
            Value {
                name,
                decl: DeclType::from(ty.clone()),
                ty_span: Span::UNDEFINED,
                def: ValueDef::Param { index },
            },
            ty,
        );
        self.func.params.push(var.0);
        var
    }

    /// Appends `var` to the function's outputs.
    pub fn output(&mut self, var: Var) {
        self.func.outputs.push(Use {
            value: var.0,
            span: Span::UNDEFINED,
        });
    }

    /// Ends this function and returns the program builder (to add another function).
    pub fn end_function(self) -> ProgramBuilder {
        let mut program = self.program;
        program.functions.append(self.func, Span::UNDEFINED);
        program
    }

    /// Ends this function and the program.
    pub fn finish(self) -> Program {
        self.end_function().finish()
    }

    fn literal(&mut self, literal: Literal) -> Var {
        let ty = literal.ty().clone();
        self.push_value(
            Value {
                name: String::new(),
                decl: DeclType::from(ty.clone()),
                ty_span: Span::UNDEFINED,
                def: ValueDef::Literal(literal),
            },
            ty,
        )
    }

    fn emit(
        &mut self,
        kind: OpKind,
        args: Vec<(&str, OpArg, bool)>,
        result_types: Vec<TensorType>,
        result_names: Vec<String>,
    ) -> Vec<Var> {
        let args = args
            .into_iter()
            .map(|(name, value, in_attrs)| Arg {
                name: name.to_string(),
                name_span: Span::UNDEFINED,
                value: match value {
                    OpArg::Var(var) => ArgValue::Single(Use {
                        value: var.0,
                        span: Span::UNDEFINED,
                    }),
                    OpArg::Tuple(vars) => ArgValue::Tuple(
                        vars.into_iter()
                            .map(|var| Use {
                                value: var.0,
                                span: Span::UNDEFINED,
                            })
                            .collect(),
                    ),
                },
                in_attrs,
            })
            .collect();
        let op = self.func.ops.append(
            Op {
                kind,
                name_attr: result_names.first().cloned(),
                args,
                results: Vec::new(),
            },
            Span::UNDEFINED,
        );
        let mut results = Vec::with_capacity(result_types.len());
        for (index, (ty, name)) in result_types.into_iter().zip(result_names).enumerate() {
            let index = u32::try_from(index).expect("result count fits u32");
            let var = self.push_value(
                Value {
                    name,
                    decl: DeclType::from(ty.clone()),
                    ty_span: Span::UNDEFINED,
                    def: ValueDef::Result { op, index },
                },
                ty,
            );
            results.push(var);
        }
        self.func.ops.get_mut(op).results = results.iter().map(|var| var.0).collect();
        results
    }

    fn emit1(
        &mut self,
        kind: OpKind,
        args: Vec<(&str, OpArg)>,
        ty: TensorType,
        name: String,
    ) -> Var {
        let args = args
            .into_iter()
            .map(|(name, value)| (name, value, false))
            .collect();
        self.emit(kind, args, vec![ty], vec![name])[0]
    }

    /// Emits any op with explicit arguments and declared result types (an escape hatch for ops
    /// without a typed helper, and for tests that need deliberately wrong programs). The results
    /// are named `<op>_<n>` unless [`FunctionBuilder::named`] was called (the first result).
    pub fn raw_op(
        &mut self,
        kind: OpKind,
        args: Vec<(&str, OpArg)>,
        result_types: Vec<TensorType>,
    ) -> Vec<Var> {
        let names = (0..result_types.len())
            .map(|_| self.result_name(kind.name()))
            .collect();
        let args = args
            .into_iter()
            .map(|(name, value)| (name, value, false))
            .collect();
        self.emit(kind, args, result_types, names)
    }

    // ----- constants -----------------------------------------------------------------------

    fn const_key(tensor: &Tensor) -> ConstKey {
        match &tensor.data {
            TensorData::Bytes(bytes) => ConstKey::Bytes(tensor.ty.clone(), bytes.to_vec()),
            TensorData::Strings(strings) => ConstKey::Strings(tensor.ty.clone(), strings.to_vec()),
        }
    }

    fn const_with_key(
        &mut self,
        key: (&'static str, ConstKey),
        literal: Literal,
        hint: &str,
    ) -> Var {
        let explicit = self.pending_name.take();
        if let Some(&var) = self.consts.get(&key) {
            return var;
        }
        let name = self.unique(explicit.as_deref().unwrap_or(hint));
        let ty = literal.ty().clone();
        let val = self.literal(literal);
        let var = self.emit(
            OpKind::Const,
            vec![("val", OpArg::Var(val), true)],
            vec![ty],
            vec![name],
        )[0];
        self.consts.entry(key).or_insert(var);
        var
    }

    /// A `const` op holding `tensor`. Identical constants are emitted once and shared; a name set
    /// with [`FunctionBuilder::named`] is the name a new constant gets.
    pub fn constant(&mut self, tensor: Tensor) -> Var {
        let hint = format!("c_{}", self.consts.len());
        self.constant_hinted(tensor, &hint)
    }

    fn constant_hinted(&mut self, tensor: Tensor, hint: &str) -> Var {
        self.constant_role(tensor, hint, "")
    }

    fn constant_role(&mut self, tensor: Tensor, hint: &str, role: &'static str) -> Var {
        let key = (role, Self::const_key(&tensor));
        self.const_with_key(key, Literal::Tensor(tensor), hint)
    }

    /// An `fp16` scalar constant (round-to-nearest-even).
    pub fn const_fp16_scalar(&mut self, value: f32) -> Var {
        self.const_scalar(DType::Fp16, f64::from(value))
    }

    /// An `fp32` scalar constant.
    pub fn const_fp32_scalar(&mut self, value: f32) -> Var {
        self.const_scalar(DType::Fp32, f64::from(value))
    }

    /// A scalar constant of a numeric `dtype`, converted with the dtype's rule.
    pub fn const_scalar(&mut self, dtype: DType, value: f64) -> Var {
        let tensor = Tensor::from_f64s(TensorType::scalar(dtype), &[value])
            .unwrap_or_else(|err| panic!("builder invariant: scalar const of {dtype}: {err}"));
        let hint = format!("{}_{}", dtype.name(), self.consts.len());
        self.constant_hinted(tensor, &hint)
    }

    /// An `int32` scalar constant.
    pub fn const_i32(&mut self, value: i32) -> Var {
        let tensor = Tensor::from_i64s(TensorType::scalar(DType::Int32), &[i64::from(value)])
            .expect("one int32 element");
        let hint = if value < 0 {
            format!("i32_m{}", value.unsigned_abs())
        } else {
            format!("i32_{value}")
        };
        self.constant_hinted(tensor, &hint)
    }

    /// An `int32` vector constant (`tensor<int32, [n]>`).
    pub fn const_i32_vec(&mut self, values: &[i32]) -> Var {
        let hint = format!("ints_{}", self.consts.len());
        self.constant_hinted(Tensor::i32_vector(values), &hint)
    }

    /// A `bool` scalar constant (`bF` / `bT`).
    pub fn const_bool(&mut self, value: bool) -> Var {
        self.constant_hinted(Tensor::bool_scalar(value), if value { "bT" } else { "bF" })
    }

    /// A `string` scalar constant.
    pub fn const_string(&mut self, value: &str) -> Var {
        let hint = format!("str_{value}");
        self.constant_hinted(Tensor::string(value), &hint)
    }

    /// A tensor constant of a float dtype with the given elements (row-major).
    pub fn const_float_tensor(&mut self, dtype: DType, shape: &[usize], values: &[f64]) -> Var {
        let tensor = Tensor::from_f64s(TensorType::new(dtype, shape.to_vec()), values)
            .unwrap_or_else(|err| {
                panic!("builder invariant: {dtype} tensor const {shape:?}: {err}")
            });
        let hint = format!("c_{}", self.consts.len());
        self.constant_hinted(tensor, &hint)
    }

    /// A constant whose bytes live in a weight file:
    /// `const()[val = ty(BLOBFILE(path = string(path), offset = uint64(offset)))]`.
    pub fn blob_const(&mut self, ty: TensorType, path: &str, offset: u64) -> Var {
        let stem = path.rsplit('/').next().unwrap_or(path);
        let stem = stem.split('.').next().unwrap_or(stem);
        let key = ("", ConstKey::Blob(ty.clone(), path.to_string(), offset));
        let literal = Literal::Blob(BlobRef {
            ty,
            path: path.to_string(),
            offset,
            path_span: Span::UNDEFINED,
            offset_span: Span::UNDEFINED,
        });
        self.const_with_key(key, literal, stem)
    }

    /// A constant vector argument of an op: shared by value among arguments of the same
    /// parameter name, named `<result>_<param>` on first use (`pm` for the ubiquitous
    /// `[0, 1, 3, 2]` permutation).
    fn arg_i32_vec(&mut self, values: &[i32], result: &str, param: &'static str) -> Var {
        let hint = if values == [0, 1, 3, 2] {
            "pm".to_string()
        } else {
            format!("{result}_{param}")
        };
        let saved = self.pending_name.take();
        let var = self.constant_role(Tensor::i32_vector(values), &hint, param);
        self.pending_name = saved;
        var
    }

    fn arg_usize_vec(&mut self, values: &[usize], result: &str, param: &'static str) -> Var {
        let ints: Vec<i32> = values.iter().map(|&value| to_i32(value, param)).collect();
        self.arg_i32_vec(&ints, result, param)
    }

    fn arg_i32(&mut self, value: i32) -> Var {
        let saved = self.pending_name.take();
        let var = self.const_i32(value);
        self.pending_name = saved;
        var
    }

    fn arg_bool(&mut self, value: bool) -> Var {
        let saved = self.pending_name.take();
        let var = self.const_bool(value);
        self.pending_name = saved;
        var
    }

    fn arg_string(&mut self, value: &str, param: &str) -> Var {
        let saved = self.pending_name.take();
        let hint = format!("{param}_{value}");
        let var = self.constant_hinted(Tensor::string(value), &hint);
        self.pending_name = saved;
        var
    }

    fn arg_scalar(&mut self, dtype: DType, value: f64, result: &str, param: &str) -> Var {
        let saved = self.pending_name.take();
        let tensor = Tensor::from_f64s(TensorType::scalar(dtype), &[value])
            .unwrap_or_else(|err| panic!("builder invariant: {param} scalar of {dtype}: {err}"));
        let var = self.constant_hinted(tensor, &format!("{result}_{param}"));
        self.pending_name = saved;
        var
    }

    // ----- elementwise ---------------------------------------------------------------------

    fn binary(&mut self, kind: OpKind, x: Var, y: Var, out_dtype: Option<DType>) -> Var {
        let (tx, ty) = (self.ty(x), self.ty(y));
        assert_eq!(
            tx.dtype, ty.dtype,
            "builder invariant: {kind} requires x and y of one dtype (x: {tx}, y: {ty})"
        );
        let shape = broadcast_shapes(&tx.shape, &ty.shape).unwrap_or_else(|| {
            panic!("builder invariant: {kind} shapes not broadcastable (x: {tx}, y: {ty})")
        });
        let dtype = out_dtype.unwrap_or(tx.dtype);
        let name = self.result_name(kind.name());
        self.emit1(
            kind,
            vec![("x", OpArg::Var(x)), ("y", OpArg::Var(y))],
            TensorType::new(dtype, shape),
            name,
        )
    }

    /// `add(x, y)` with broadcasting.
    pub fn add(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Add, x, y, None)
    }
    /// `sub(x, y)` with broadcasting.
    pub fn sub(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Sub, x, y, None)
    }
    /// `mul(x, y)` with broadcasting.
    pub fn mul(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Mul, x, y, None)
    }
    /// `real_div(x, y)` with broadcasting.
    pub fn real_div(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::RealDiv, x, y, None)
    }
    /// `pow(x, y)` with broadcasting.
    pub fn pow(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Pow, x, y, None)
    }
    /// `maximum(x, y)` with broadcasting.
    pub fn maximum(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Maximum, x, y, None)
    }
    /// `minimum(x, y)` with broadcasting.
    pub fn minimum(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Minimum, x, y, None)
    }
    /// `equal(x, y)`: a bool tensor.
    pub fn equal(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Equal, x, y, Some(DType::Bool))
    }
    /// `not_equal(x, y)`: a bool tensor.
    pub fn not_equal(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::NotEqual, x, y, Some(DType::Bool))
    }
    /// `greater(x, y)`: a bool tensor.
    pub fn greater(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Greater, x, y, Some(DType::Bool))
    }
    /// `greater_equal(x, y)`: a bool tensor.
    pub fn greater_equal(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::GreaterEqual, x, y, Some(DType::Bool))
    }
    /// `less(x, y)`: a bool tensor.
    pub fn less(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::Less, x, y, Some(DType::Bool))
    }
    /// `less_equal(x, y)`: a bool tensor.
    pub fn less_equal(&mut self, x: Var, y: Var) -> Var {
        self.binary(OpKind::LessEqual, x, y, Some(DType::Bool))
    }

    fn scalar_like(&mut self, x: Var, value: f64, param: &str) -> Var {
        let dtype = self.dtype(x);
        let hint = self.pending_name.clone().unwrap_or_else(|| "s".to_string());
        self.arg_scalar(dtype, value, &hint, param)
    }

    /// `mul(x, c)` with a scalar constant `c` of x's dtype.
    pub fn mul_scalar(&mut self, x: Var, value: f64) -> Var {
        let c = self.scalar_like(x, value, "y");
        self.mul(x, c)
    }

    /// `add(x, c)` with a scalar constant `c` of x's dtype.
    pub fn add_scalar(&mut self, x: Var, value: f64) -> Var {
        let c = self.scalar_like(x, value, "y");
        self.add(x, c)
    }

    /// `pow(x, c)` with a scalar constant `c` of x's dtype.
    pub fn pow_scalar(&mut self, x: Var, value: f64) -> Var {
        let c = self.scalar_like(x, value, "y");
        self.pow(x, c)
    }

    /// `sub(c, x)` with a scalar constant `c` of x's dtype.
    pub fn scalar_sub(&mut self, value: f64, x: Var) -> Var {
        let c = self.scalar_like(x, value, "x");
        self.sub(c, x)
    }

    fn unary(&mut self, kind: OpKind, x: Var, extra: Vec<(&str, OpArg)>) -> Var {
        let ty = self.ty(x).clone();
        let name = self.result_name(kind.name());
        let mut args = extra;
        args.push(("x", OpArg::Var(x)));
        args.sort_by(|a, b| a.0.cmp(b.0));
        self.emit1(kind, args, ty, name)
    }

    /// `abs(x)`.
    pub fn abs(&mut self, x: Var) -> Var {
        self.unary(OpKind::Abs, x, vec![])
    }
    /// `square(x)`.
    pub fn square(&mut self, x: Var) -> Var {
        self.unary(OpKind::Square, x, vec![])
    }
    /// `sqrt(x)`.
    pub fn sqrt(&mut self, x: Var) -> Var {
        self.unary(OpKind::Sqrt, x, vec![])
    }
    /// `exp(x)`.
    pub fn exp(&mut self, x: Var) -> Var {
        self.unary(OpKind::Exp, x, vec![])
    }
    /// `erf(x)`.
    pub fn erf(&mut self, x: Var) -> Var {
        self.unary(OpKind::Erf, x, vec![])
    }
    /// `tanh(x)`.
    pub fn tanh(&mut self, x: Var) -> Var {
        self.unary(OpKind::Tanh, x, vec![])
    }
    /// `sigmoid(x)`.
    pub fn sigmoid(&mut self, x: Var) -> Var {
        self.unary(OpKind::Sigmoid, x, vec![])
    }
    /// `relu(x)`.
    pub fn relu(&mut self, x: Var) -> Var {
        self.unary(OpKind::Relu, x, vec![])
    }
    /// `silu(x)`.
    pub fn silu(&mut self, x: Var) -> Var {
        self.unary(OpKind::Silu, x, vec![])
    }

    fn with_epsilon(&mut self, kind: OpKind, x: Var, epsilon: Option<f64>) -> Var {
        let extra = match epsilon {
            Some(eps) => {
                let c = self.scalar_like(x, eps, "epsilon");
                vec![("epsilon", OpArg::Var(c))]
            }
            None => vec![],
        };
        self.unary(kind, x, extra)
    }

    /// `rsqrt(x, epsilon)`: `1 / sqrt(x + eps)` (default eps when `None`).
    pub fn rsqrt(&mut self, x: Var, epsilon: Option<f64>) -> Var {
        self.with_epsilon(OpKind::Rsqrt, x, epsilon)
    }
    /// `log(x, epsilon)`: `ln(x + eps)`.
    pub fn log(&mut self, x: Var, epsilon: Option<f64>) -> Var {
        self.with_epsilon(OpKind::Log, x, epsilon)
    }
    /// `inverse(x, epsilon)`: `1 / (x + eps)`.
    pub fn inverse(&mut self, x: Var, epsilon: Option<f64>) -> Var {
        self.with_epsilon(OpKind::Inverse, x, epsilon)
    }

    /// `gelu(x, mode)` (`EXACT`, `TANH_APPROXIMATION`, `SIGMOID_APPROXIMATION`; default EXACT).
    pub fn gelu(&mut self, x: Var, mode: Option<&str>) -> Var {
        let extra = match mode {
            Some(mode) => vec![("mode", OpArg::Var(self.arg_string(mode, "mode")))],
            None => vec![],
        };
        self.unary(OpKind::Gelu, x, extra)
    }

    /// `clip(x, alpha, beta)`: `min(max(x, alpha), beta)`.
    pub fn clip(&mut self, x: Var, alpha: f64, beta: f64) -> Var {
        let a = self.scalar_like(x, alpha, "alpha");
        let b = self.scalar_like(x, beta, "beta");
        self.unary(
            OpKind::Clip,
            x,
            vec![("alpha", OpArg::Var(a)), ("beta", OpArg::Var(b))],
        )
    }

    /// `cast(x, dtype)`.
    pub fn cast(&mut self, x: Var, dtype: DType) -> Var {
        let shape = self.shape(x).to_vec();
        let name = self.result_name("cast");
        let target = self.arg_string(dtype.name(), "to");
        self.emit1(
            OpKind::Cast,
            vec![("dtype", OpArg::Var(target)), ("x", OpArg::Var(x))],
            TensorType::new(dtype, shape),
            name,
        )
    }

    /// `softmax(x, axis)`.
    pub fn softmax(&mut self, x: Var, axis: i32) -> Var {
        let ty = self.ty(x).clone();
        assert!(
            normalize_axis(axis, ty.rank()).is_some(),
            "builder invariant: softmax axis {axis} out of range for {ty}"
        );
        let name = self.result_name("softmax");
        let axis = self.arg_i32(axis);
        self.emit1(
            OpKind::Softmax,
            vec![("axis", OpArg::Var(axis)), ("x", OpArg::Var(x))],
            ty,
            name,
        )
    }

    fn reduce(&mut self, kind: OpKind, x: Var, axes: &[i32], keep_dims: bool) -> Var {
        let ty = self.ty(x).clone();
        let mut reduced = vec![false; ty.rank()];
        for &axis in axes {
            let norm = normalize_axis(axis, ty.rank()).unwrap_or_else(|| {
                panic!("builder invariant: {kind} axis {axis} out of range for {ty}")
            });
            assert!(
                !reduced[norm],
                "builder invariant: {kind} axis {axis} repeated"
            );
            reduced[norm] = true;
        }
        let shape: Vec<usize> = ty
            .shape
            .iter()
            .zip(&reduced)
            .filter_map(|(&dim, &red)| match (red, keep_dims) {
                (false, _) => Some(dim),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let name = self.result_name(kind.name());
        let axes_var = self.arg_i32_vec(axes, &name, "axes");
        let keep = self.arg_bool(keep_dims);
        self.emit1(
            kind,
            vec![
                ("axes", OpArg::Var(axes_var)),
                ("keep_dims", OpArg::Var(keep)),
                ("x", OpArg::Var(x)),
            ],
            TensorType::new(ty.dtype, shape),
            name,
        )
    }

    /// `reduce_sum(x, axes, keep_dims)`.
    pub fn reduce_sum(&mut self, x: Var, axes: &[i32], keep_dims: bool) -> Var {
        self.reduce(OpKind::ReduceSum, x, axes, keep_dims)
    }
    /// `reduce_mean(x, axes, keep_dims)`.
    pub fn reduce_mean(&mut self, x: Var, axes: &[i32], keep_dims: bool) -> Var {
        self.reduce(OpKind::ReduceMean, x, axes, keep_dims)
    }
    /// `reduce_max(x, axes, keep_dims)`.
    pub fn reduce_max(&mut self, x: Var, axes: &[i32], keep_dims: bool) -> Var {
        self.reduce(OpKind::ReduceMax, x, axes, keep_dims)
    }

    // ----- linear algebra ------------------------------------------------------------------

    /// `matmul(x, y, transpose_x, transpose_y)` (both flags always written).
    pub fn matmul(&mut self, x: Var, y: Var, transpose_x: bool, transpose_y: bool) -> Var {
        let (tx, ty) = (self.ty(x).clone(), self.ty(y).clone());
        assert_eq!(
            tx.dtype, ty.dtype,
            "builder invariant: matmul x {tx} and y {ty} differ in dtype"
        );
        let shape = matmul_shape(&tx.shape, &ty.shape, transpose_x, transpose_y)
            .unwrap_or_else(|msg| panic!("builder invariant: {msg}"));
        let name = self.result_name("matmul");
        let fx = self.arg_bool(transpose_x);
        let fy = self.arg_bool(transpose_y);
        self.emit1(
            OpKind::Matmul,
            vec![
                ("transpose_x", OpArg::Var(fx)),
                ("transpose_y", OpArg::Var(fy)),
                ("x", OpArg::Var(x)),
                ("y", OpArg::Var(y)),
            ],
            TensorType::new(tx.dtype, shape),
            name,
        )
    }

    /// `linear(x, weight, bias)`: `x · weightᵀ + bias`, weight `[D_out, D_in]` (const in MIL).
    pub fn linear(&mut self, x: Var, weight: Var, bias: Option<Var>) -> Var {
        let tx = self.ty(x).clone();
        let tw = self.ty(weight).clone();
        assert!(
            (1..=3).contains(&tx.rank())
                && tw.rank() == 2
                && tx.shape[tx.rank() - 1] == tw.shape[1],
            "builder invariant: linear x {tx} and weight {tw} do not fit ([*D, D_in] and [D_out, D_in])"
        );
        let mut shape = tx.shape.clone();
        let last = shape.len() - 1;
        shape[last] = tw.shape[0];
        let name = self.result_name("linear");
        let mut args = Vec::new();
        if let Some(bias) = bias {
            args.push(("bias", OpArg::Var(bias)));
        }
        args.push(("weight", OpArg::Var(weight)));
        args.push(("x", OpArg::Var(x)));
        self.emit1(OpKind::Linear, args, TensorType::new(tx.dtype, shape), name)
    }

    /// `conv(x, weight)` with every parameter written out. `x` is `[N, C_in, *d]`, `weight`
    /// `[C_out, C_in / groups, *k]`.
    pub fn conv(&mut self, x: Var, weight: Var, bias: Option<Var>, options: &ConvOptions) -> Var {
        let tx = self.ty(x).clone();
        let tw = self.ty(weight).clone();
        let spatial = tx
            .rank()
            .checked_sub(2)
            .filter(|&s| (1..=3).contains(&s))
            .unwrap_or_else(|| panic!("builder invariant: conv x {tx} needs rank 3 to 5"));
        assert_eq!(
            tw.rank(),
            tx.rank(),
            "builder invariant: conv weight {tw} rank differs from x {tx}"
        );
        let groups = options.groups;
        assert!(
            groups >= 1
                && tx.shape[1].is_multiple_of(groups)
                && tw.shape[1] * groups == tx.shape[1]
                && tw.shape[0].is_multiple_of(groups),
            "builder invariant: conv channels of x {tx} and weight {tw} do not fit groups {groups}"
        );
        let ones = vec![1usize; spatial];
        let strides = if options.strides.is_empty() {
            ones.clone()
        } else {
            options.strides.clone()
        };
        let dilations = if options.dilations.is_empty() {
            ones
        } else {
            options.dilations.clone()
        };
        assert!(
            strides.len() == spatial && dilations.len() == spatial,
            "builder invariant: conv strides {strides:?} / dilations {dilations:?} need {spatial} entries"
        );
        let mut out = vec![tx.shape[0], tw.shape[0]];
        for dim in 0..spatial {
            let size = tx.shape[2 + dim];
            let kernel = tw.shape[2 + dim];
            let effective = (kernel - 1) * dilations[dim] + 1;
            let stride = strides[dim];
            let (before, after) = match &options.pad_type {
                PadType::Valid => (0, 0),
                PadType::Custom(pad) => {
                    assert_eq!(
                        pad.len(),
                        2 * spatial,
                        "builder invariant: conv custom pad {pad:?}"
                    );
                    (pad[2 * dim], pad[2 * dim + 1])
                }
                PadType::Same | PadType::SameLower => {
                    let total =
                        ((size.div_ceil(stride) - 1) * stride + effective).saturating_sub(size);
                    if options.pad_type == PadType::Same {
                        (total / 2, total - total / 2)
                    } else {
                        (total.div_ceil(2), total / 2)
                    }
                }
            };
            let padded = size + before + after;
            assert!(
                padded >= effective,
                "builder invariant: conv kernel larger than padded input"
            );
            out.push((padded - effective) / stride + 1);
        }
        let explicit_pad = match &options.pad_type {
            PadType::Custom(pad) => pad.clone(),
            _ => vec![0; 2 * spatial],
        };
        let name = self.result_name("conv");
        let dl = self.arg_usize_vec(&dilations, &name, "dilations");
        let gr = self.arg_i32(to_i32(groups, "groups"));
        let pd = self.arg_usize_vec(&explicit_pad, &name, "pad");
        let pt = self.arg_string(options.pad_type.name(), "pad_type");
        let st = self.arg_usize_vec(&strides, &name, "strides");
        let mut args = Vec::new();
        if let Some(bias) = bias {
            args.push(("bias", OpArg::Var(bias)));
        }
        args.extend([
            ("dilations", OpArg::Var(dl)),
            ("groups", OpArg::Var(gr)),
            ("pad", OpArg::Var(pd)),
            ("pad_type", OpArg::Var(pt)),
            ("strides", OpArg::Var(st)),
            ("weight", OpArg::Var(weight)),
            ("x", OpArg::Var(x)),
        ]);
        self.emit1(OpKind::Conv, args, TensorType::new(tx.dtype, out), name)
    }

    /// A 1x1 convolution used as a linear layer (`x [N, C_in, H, W]`, `weight [C_out, C_in, 1,
    /// 1]`), with every default spelled out as maderix/ANE does.
    pub fn conv1x1(&mut self, x: Var, weight: Var) -> Var {
        self.conv(x, weight, None, &ConvOptions::default())
    }

    /// `layer_norm(x, axes, gamma, beta, epsilon)`.
    pub fn layer_norm(
        &mut self,
        x: Var,
        axes: &[i32],
        gamma: Option<Var>,
        beta: Option<Var>,
        epsilon: Option<f64>,
    ) -> Var {
        let ty = self.ty(x).clone();
        for &axis in axes {
            assert!(
                normalize_axis(axis, ty.rank()).is_some(),
                "builder invariant: layer_norm axis {axis}"
            );
        }
        let name = self.result_name("layer_norm");
        let axes_var = self.arg_i32_vec(axes, &name, "axes");
        let mut args = vec![("axes", OpArg::Var(axes_var))];
        if let Some(beta) = beta {
            args.push(("beta", OpArg::Var(beta)));
        }
        if let Some(eps) = epsilon {
            let e = self.arg_scalar(ty.dtype, eps, &name, "epsilon");
            args.push(("epsilon", OpArg::Var(e)));
        }
        if let Some(gamma) = gamma {
            args.push(("gamma", OpArg::Var(gamma)));
        }
        args.push(("x", OpArg::Var(x)));
        self.emit1(OpKind::LayerNorm, args, ty, name)
    }

    /// `scaled_dot_product_attention(query, key, value, attn_mask)` (ios18).
    pub fn scaled_dot_product_attention(
        &mut self,
        query: Var,
        key: Var,
        value: Var,
        attn_mask: Option<Var>,
    ) -> Var {
        let (q, k, v) = (
            self.ty(query).clone(),
            self.ty(key).clone(),
            self.ty(value).clone(),
        );
        let r = q.rank();
        assert!(
            r >= 3
                && k.rank() == r
                && v.rank() == r
                && q.shape[..r - 2] == k.shape[..r - 2]
                && k.shape[..r - 2] == v.shape[..r - 2]
                && q.shape[r - 1] == k.shape[r - 1]
                && k.shape[r - 2] == v.shape[r - 2],
            "builder invariant: sdpa query {q}, key {k}, value {v} do not fit"
        );
        let mut shape = q.shape.clone();
        shape[r - 1] = v.shape[r - 1];
        let name = self.result_name("sdpa");
        let mut args = Vec::new();
        if let Some(mask) = attn_mask {
            args.push(("attn_mask", OpArg::Var(mask)));
        }
        args.extend([
            ("key", OpArg::Var(key)),
            ("query", OpArg::Var(query)),
            ("value", OpArg::Var(value)),
        ]);
        self.emit1(
            OpKind::ScaledDotProductAttention,
            args,
            TensorType::new(q.dtype, shape),
            name,
        )
    }

    // ----- shapes --------------------------------------------------------------------------

    /// `reshape(x, shape)` to explicit sizes (their product must equal x's element count).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let ty = self.ty(x).clone();
        let numel: usize = shape.iter().product();
        assert_eq!(
            numel,
            ty.numel(),
            "builder invariant: reshape {ty} to {shape:?} changes the element count"
        );
        let name = self.result_name("reshape");
        let sh = self.arg_usize_vec(shape, &name, "shape");
        self.emit1(
            OpKind::Reshape,
            vec![("shape", OpArg::Var(sh)), ("x", OpArg::Var(x))],
            TensorType::new(ty.dtype, shape.to_vec()),
            name,
        )
    }

    /// `transpose(x, perm)`: `out.shape[k] = x.shape[perm[k]]`.
    pub fn transpose(&mut self, x: Var, perm: &[usize]) -> Var {
        let ty = self.ty(x).clone();
        let mut seen = vec![false; ty.rank()];
        assert_eq!(
            perm.len(),
            ty.rank(),
            "builder invariant: transpose perm {perm:?} for {ty}"
        );
        for &axis in perm {
            assert!(
                axis < ty.rank() && !seen[axis],
                "builder invariant: transpose perm {perm:?} is not a permutation"
            );
            seen[axis] = true;
        }
        let shape: Vec<usize> = perm.iter().map(|&axis| ty.shape[axis]).collect();
        let name = self.result_name("transpose");
        let pm = self.arg_usize_vec(perm, &name, "perm");
        self.emit1(
            OpKind::Transpose,
            vec![("perm", OpArg::Var(pm)), ("x", OpArg::Var(x))],
            TensorType::new(ty.dtype, shape),
            name,
        )
    }

    /// `expand_dims(x, axes)` (axes count against the output rank).
    pub fn expand_dims(&mut self, x: Var, axes: &[i32]) -> Var {
        let ty = self.ty(x).clone();
        let out_rank = ty.rank() + axes.len();
        let mut positions: Vec<usize> = axes
            .iter()
            .map(|&axis| {
                normalize_axis(axis, out_rank).unwrap_or_else(|| {
                    panic!("builder invariant: expand_dims axis {axis} for {ty}")
                })
            })
            .collect();
        positions.sort_unstable();
        positions.dedup();
        assert_eq!(
            positions.len(),
            axes.len(),
            "builder invariant: expand_dims axes {axes:?} repeat"
        );
        let mut shape = ty.shape.clone();
        for pos in positions {
            shape.insert(pos, 1);
        }
        let name = self.result_name("expand_dims");
        let ax = self.arg_i32_vec(axes, &name, "axes");
        self.emit1(
            OpKind::ExpandDims,
            vec![("axes", OpArg::Var(ax)), ("x", OpArg::Var(x))],
            TensorType::new(ty.dtype, shape),
            name,
        )
    }

    /// `squeeze(x, axes)`: removes the listed size-1 axes (all size-1 axes when `None`).
    pub fn squeeze(&mut self, x: Var, axes: Option<&[i32]>) -> Var {
        let ty = self.ty(x).clone();
        let mut drop = vec![false; ty.rank()];
        match axes {
            Some(axes) => {
                for &axis in axes {
                    let norm = normalize_axis(axis, ty.rank()).unwrap_or_else(|| {
                        panic!("builder invariant: squeeze axis {axis} for {ty}")
                    });
                    drop[norm] = ty.shape[norm] == 1;
                }
            }
            None => {
                for (idx, &dim) in ty.shape.iter().enumerate() {
                    drop[idx] = dim == 1;
                }
            }
        }
        let shape: Vec<usize> = ty
            .shape
            .iter()
            .zip(&drop)
            .filter(|(_, d)| !**d)
            .map(|(&s, _)| s)
            .collect();
        let name = self.result_name("squeeze");
        let mut args = Vec::new();
        if let Some(axes) = axes {
            args.push(("axes", OpArg::Var(self.arg_i32_vec(axes, &name, "axes"))));
        }
        args.push(("x", OpArg::Var(x)));
        self.emit1(
            OpKind::Squeeze,
            args,
            TensorType::new(ty.dtype, shape),
            name,
        )
    }

    /// `slice_by_size(x, begin, size)` with explicit, in-bounds begins and sizes.
    pub fn slice_by_size(&mut self, x: Var, begin: &[usize], size: &[usize]) -> Var {
        let ty = self.ty(x).clone();
        assert!(
            begin.len() == ty.rank()
                && size.len() == ty.rank()
                && begin
                    .iter()
                    .zip(size)
                    .zip(&ty.shape)
                    .all(|((&b, &s), &n)| s >= 1 && b + s <= n),
            "builder invariant: slice_by_size begin {begin:?} size {size:?} out of bounds for {ty}"
        );
        let name = self.result_name("slice_by_size");
        let b = self.arg_usize_vec(begin, &name, "begin");
        let s = self.arg_usize_vec(size, &name, "size");
        self.emit1(
            OpKind::SliceBySize,
            vec![
                ("begin", OpArg::Var(b)),
                ("size", OpArg::Var(s)),
                ("x", OpArg::Var(x)),
            ],
            TensorType::new(ty.dtype, size.to_vec()),
            name,
        )
    }

    /// `slice_by_index(x, begin, end, stride, masks)` with Python slice semantics.
    pub fn slice_by_index(&mut self, x: Var, spec: &SliceByIndex) -> Var {
        let ty = self.ty(x).clone();
        let rank = ty.rank();
        let get_bool = |list: &[bool], idx: usize| list.get(idx).copied().unwrap_or(false);
        assert!(
            spec.begin.len() == rank && spec.end.len() == rank,
            "builder invariant: slice_by_index begin/end need {rank} entries"
        );
        let mut shape = Vec::new();
        for dim in 0..rank {
            let n = i64::try_from(ty.shape[dim]).expect("dimension fits i64");
            let step = i64::from(spec.stride.get(dim).copied().unwrap_or(1));
            assert!(step != 0, "builder invariant: slice_by_index zero stride");
            if get_bool(&spec.squeeze_mask, dim) {
                continue;
            }
            let norm = |value: i64, lo: i64, hi: i64| {
                let value = if value < 0 { value + n } else { value };
                value.clamp(lo, hi)
            };
            let (lo, hi) = if step > 0 { (0, n) } else { (-1, n - 1) };
            let start = if get_bool(&spec.begin_mask, dim) {
                if step > 0 { 0 } else { n - 1 }
            } else {
                norm(i64::from(spec.begin[dim]), lo, hi)
            };
            let stop = if get_bool(&spec.end_mask, dim) {
                if step > 0 { n } else { -1 }
            } else {
                norm(i64::from(spec.end[dim]), lo, hi)
            };
            let len = if step > 0 {
                (stop - start + step - 1).div_euclid(step).max(0)
            } else {
                (start - stop + (-step) - 1).div_euclid(-step).max(0)
            };
            shape.push(usize::try_from(len).expect("slice length is non-negative"));
        }
        let name = self.result_name("slice_by_index");
        let mut args = vec![(
            "begin",
            OpArg::Var(self.arg_i32_vec(&spec.begin, &name, "begin")),
        )];
        let mask_tensor = |mask: &[bool]| {
            let ints: Vec<i64> = (0..rank)
                .map(|idx| i64::from(mask.get(idx).copied().unwrap_or(false)))
                .collect();
            Tensor::from_i64s(TensorType::new(DType::Bool, [rank]), &ints).expect("mask length")
        };
        if !spec.begin_mask.is_empty() {
            let t = mask_tensor(&spec.begin_mask);
            let saved = self.pending_name.take();
            let v = self.constant_hinted(t, &format!("{name}_begin_mask"));
            self.pending_name = saved;
            args.push(("begin_mask", OpArg::Var(v)));
        }
        args.push(("end", OpArg::Var(self.arg_i32_vec(&spec.end, &name, "end"))));
        if !spec.end_mask.is_empty() {
            let t = mask_tensor(&spec.end_mask);
            let v = self.constant_hinted(t, &format!("{name}_end_mask"));
            args.push(("end_mask", OpArg::Var(v)));
        }
        if !spec.squeeze_mask.is_empty() {
            let t = mask_tensor(&spec.squeeze_mask);
            let v = self.constant_hinted(t, &format!("{name}_squeeze_mask"));
            args.push(("squeeze_mask", OpArg::Var(v)));
        }
        if !spec.stride.is_empty() {
            args.push((
                "stride",
                OpArg::Var(self.arg_i32_vec(&spec.stride, &name, "stride")),
            ));
        }
        args.push(("x", OpArg::Var(x)));
        self.emit1(
            OpKind::SliceByIndex,
            args,
            TensorType::new(ty.dtype, shape),
            name,
        )
    }

    fn concat_impl(&mut self, values: &[Var], axis: i32, interleave: bool) -> Var {
        assert!(!values.is_empty(), "builder invariant: concat of no values");
        let first = self.ty(values[0]).clone();
        let norm = normalize_axis(axis, first.rank())
            .unwrap_or_else(|| panic!("builder invariant: concat axis {axis} for {first}"));
        let mut total = 0usize;
        for &value in values {
            let ty = self.ty(value);
            let fits = ty.dtype == first.dtype
                && ty.rank() == first.rank()
                && ty
                    .shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(idx, (a, b))| (idx == norm && !interleave) || a == b);
            assert!(
                fits,
                "builder invariant: concat value {ty} does not fit {first} on axis {axis}"
            );
            total += ty.shape[norm];
        }
        let mut shape = first.shape.clone();
        shape[norm] = total;
        let name = self.result_name("concat");
        let ax = self.arg_i32(axis);
        let il = self.arg_bool(interleave);
        self.emit1(
            OpKind::Concat,
            vec![
                ("axis", OpArg::Var(ax)),
                ("interleave", OpArg::Var(il)),
                ("values", OpArg::Tuple(values.to_vec())),
            ],
            TensorType::new(first.dtype, shape),
            name,
        )
    }

    /// `concat(values, axis, interleave = false)`.
    pub fn concat(&mut self, values: &[Var], axis: i32) -> Var {
        self.concat_impl(values, axis, false)
    }

    /// `concat(values, axis, interleave = true)`: `out[.., j*N + k, ..] = values[k][.., j, ..]`.
    pub fn concat_interleave(&mut self, values: &[Var], axis: i32) -> Var {
        self.concat_impl(values, axis, true)
    }

    /// `split(x, axis, split_sizes)`: consecutive chunks of the given sizes.
    pub fn split(&mut self, x: Var, axis: i32, sizes: &[usize]) -> Vec<Var> {
        let ty = self.ty(x).clone();
        let norm = normalize_axis(axis, ty.rank())
            .unwrap_or_else(|| panic!("builder invariant: split axis {axis} for {ty}"));
        assert!(
            sizes.iter().all(|&s| s >= 1) && sizes.iter().sum::<usize>() == ty.shape[norm],
            "builder invariant: split sizes {sizes:?} do not sum to {} for {ty}",
            ty.shape[norm]
        );
        let first = self.result_name("split");
        let mut names = vec![first.clone()];
        for idx in 1..sizes.len() {
            names.push(self.unique(&format!("{first}_{idx}")));
        }
        let ax = self.arg_i32(axis);
        let ss = self.arg_usize_vec(sizes, &first, "split_sizes");
        let types = sizes
            .iter()
            .map(|&size| {
                let mut shape = ty.shape.clone();
                shape[norm] = size;
                TensorType::new(ty.dtype, shape)
            })
            .collect();
        let args = vec![
            ("axis", OpArg::Var(ax), false),
            ("split_sizes", OpArg::Var(ss), false),
            ("x", OpArg::Var(x), false),
        ];
        self.emit(OpKind::Split, args, types, names)
    }

    /// `tile(x, reps)`.
    pub fn tile(&mut self, x: Var, reps: &[usize]) -> Var {
        let ty = self.ty(x).clone();
        assert!(
            reps.len() == ty.rank() && reps.iter().all(|&r| r >= 1),
            "builder invariant: tile reps {reps:?} for {ty}"
        );
        let shape: Vec<usize> = ty.shape.iter().zip(reps).map(|(d, r)| d * r).collect();
        let name = self.result_name("tile");
        let rp = self.arg_usize_vec(reps, &name, "reps");
        self.emit1(
            OpKind::Tile,
            vec![("reps", OpArg::Var(rp)), ("x", OpArg::Var(x))],
            TensorType::new(ty.dtype, shape),
            name,
        )
    }

    /// `fill(shape, value)`: a tensor of `value`'s dtype.
    pub fn fill(&mut self, shape: &[usize], value: Var) -> Var {
        let dtype = self.dtype(value);
        assert!(
            self.ty(value).rank() == 0,
            "builder invariant: fill value must be a scalar"
        );
        let name = self.result_name("fill");
        let sh = self.arg_usize_vec(shape, &name, "shape");
        self.emit1(
            OpKind::Fill,
            vec![("shape", OpArg::Var(sh)), ("value", OpArg::Var(value))],
            TensorType::new(dtype, shape.to_vec()),
            name,
        )
    }

    /// `band_part(x, lower, upper)` on the last two axes (negative: unbounded).
    pub fn band_part(&mut self, x: Var, lower: i32, upper: i32) -> Var {
        let ty = self.ty(x).clone();
        assert!(
            ty.rank() >= 2,
            "builder invariant: band_part needs rank >= 2, got {ty}"
        );
        let name = self.result_name("band_part");
        let lo = self.arg_i32(lower);
        let up = self.arg_i32(upper);
        self.emit1(
            OpKind::BandPart,
            vec![
                ("lower", OpArg::Var(lo)),
                ("upper", OpArg::Var(up)),
                ("x", OpArg::Var(x)),
            ],
            ty,
            name,
        )
    }

    /// `select(cond, a, b)` with three-way broadcasting.
    pub fn select(&mut self, cond: Var, a: Var, b: Var) -> Var {
        let (tc, ta, tb) = (
            self.ty(cond).clone(),
            self.ty(a).clone(),
            self.ty(b).clone(),
        );
        assert!(
            tc.dtype == DType::Bool && ta.dtype == tb.dtype,
            "builder invariant: select cond {tc}, a {ta}, b {tb}"
        );
        let shape = broadcast_shapes(&ta.shape, &tb.shape)
            .and_then(|ab| broadcast_shapes(&tc.shape, &ab))
            .unwrap_or_else(|| {
                panic!("builder invariant: select shapes {tc}, {ta}, {tb} not broadcastable")
            });
        let name = self.result_name("select");
        self.emit1(
            OpKind::Select,
            vec![
                ("a", OpArg::Var(a)),
                ("b", OpArg::Var(b)),
                ("cond", OpArg::Var(cond)),
            ],
            TensorType::new(ta.dtype, shape),
            name,
        )
    }

    /// `gather(x, indices, axis, batch_dims)`.
    pub fn gather(&mut self, x: Var, indices: Var, axis: i32, batch_dims: usize) -> Var {
        let (tx, ti) = (self.ty(x).clone(), self.ty(indices).clone());
        let norm = normalize_axis(axis, tx.rank())
            .unwrap_or_else(|| panic!("builder invariant: gather axis {axis} for {tx}"));
        assert!(
            batch_dims <= norm && batch_dims <= ti.rank(),
            "builder invariant: gather batch_dims {batch_dims}"
        );
        let mut shape = tx.shape[..norm].to_vec();
        shape.extend_from_slice(&ti.shape[batch_dims..]);
        shape.extend_from_slice(&tx.shape[norm + 1..]);
        let name = self.result_name("gather");
        let ax = self.arg_i32(axis);
        let mut args = vec![("axis", OpArg::Var(ax))];
        if batch_dims > 0 {
            args.push((
                "batch_dims",
                OpArg::Var(self.arg_i32(to_i32(batch_dims, "batch_dims"))),
            ));
        }
        args.push(("indices", OpArg::Var(indices)));
        args.push(("x", OpArg::Var(x)));
        self.emit1(OpKind::Gather, args, TensorType::new(tx.dtype, shape), name)
    }

    // ----- quantization --------------------------------------------------------------------

    /// `quantize(input, scale, zero_point, axis, output_dtype)` (ios17+); `scale` and
    /// `zero_point` are const vars, `output_dtype` is int8 or uint8.
    pub fn quantize(
        &mut self,
        input: Var,
        scale: Var,
        zero_point: Option<Var>,
        axis: Option<i32>,
        output_dtype: DType,
    ) -> Var {
        let shape = self.shape(input).to_vec();
        let name = self.result_name("quantize");
        let mut args = Vec::new();
        if let Some(axis) = axis {
            args.push(("axis", OpArg::Var(self.arg_i32(axis))));
        }
        args.push(("input", OpArg::Var(input)));
        args.push((
            "output_dtype",
            OpArg::Var(self.arg_string(output_dtype.name(), "to")),
        ));
        args.push(("scale", OpArg::Var(scale)));
        if let Some(zp) = zero_point {
            args.push(("zero_point", OpArg::Var(zp)));
        }
        self.emit1(
            OpKind::Quantize,
            args,
            TensorType::new(output_dtype, shape),
            name,
        )
    }

    /// `dequantize(input, scale, zero_point, axis)` (ios17+): a tensor of `scale`'s dtype.
    pub fn dequantize(
        &mut self,
        input: Var,
        scale: Var,
        zero_point: Option<Var>,
        axis: Option<i32>,
    ) -> Var {
        let shape = self.shape(input).to_vec();
        let dtype = self.dtype(scale);
        let name = self.result_name("dequantize");
        let mut args = Vec::new();
        if let Some(axis) = axis {
            args.push(("axis", OpArg::Var(self.arg_i32(axis))));
        }
        args.push(("input", OpArg::Var(input)));
        args.push(("scale", OpArg::Var(scale)));
        if let Some(zp) = zero_point {
            args.push(("zero_point", OpArg::Var(zp)));
        }
        self.emit1(
            OpKind::Dequantize,
            args,
            TensorType::new(dtype, shape),
            name,
        )
    }

    /// `constexpr_affine_dequantize()[axis, quantized_data, scale, zero_point]` with every
    /// parameter in the attribute block (the ios16/17 serialisation maderix/ANE uses). `scale`
    /// and `zero_point` are scalar constants of the given dtypes; `data` is the quantized tensor
    /// (usually [`FunctionBuilder::blob_const`]-style BLOBFILE literal, given as a literal here).
    pub fn constexpr_affine_dequantize(
        &mut self,
        data: Literal,
        scale: Tensor,
        zero_point: Tensor,
        axis: i32,
    ) -> Var {
        let shape = data.ty().shape.clone();
        let dtype = scale.ty.dtype;
        let name = self.result_name("dequant");
        let axis_lit = self.literal(Literal::Tensor(
            Tensor::from_i64s(TensorType::scalar(DType::Int32), &[i64::from(axis)])
                .expect("one int32"),
        ));
        let data_lit = self.literal(data);
        let scale_lit = self.literal(Literal::Tensor(scale));
        let zp_lit = self.literal(Literal::Tensor(zero_point));
        let args = vec![
            ("axis", OpArg::Var(axis_lit), true),
            ("quantized_data", OpArg::Var(data_lit), true),
            ("scale", OpArg::Var(scale_lit), true),
            ("zero_point", OpArg::Var(zp_lit), true),
        ];
        self.emit(
            OpKind::ConstexprAffineDequantize,
            args,
            vec![TensorType::new(dtype, shape)],
            vec![name],
        )[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp16(shape: &[usize]) -> TensorType {
        TensorType::new(DType::Fp16, shape.to_vec())
    }

    /// Every op result's declared type, every const's literal type, and the handle order are
    /// consistent: what the verifier will re-check, done here without it.
    pub(crate) fn assert_self_consistent(program: &Program) {
        for (_, func) in program.functions.iter() {
            let mut names = HashSet::new();
            for (handle, value) in func.values.iter() {
                if !value.name.is_empty() {
                    assert!(
                        names.insert(value.name.clone()),
                        "duplicate name {}",
                        value.name
                    );
                    assert_eq!(sanitize_ident(&value.name), value.name, "valid identifier");
                }
                if let ValueDef::Result { op, index } = value.def {
                    assert_eq!(func.ops[op].results[index as usize], handle);
                    assert!(op.index() < func.ops.len());
                }
            }
            for (_, op) in func.ops.iter() {
                for arg in &op.args {
                    for u in arg.value.uses() {
                        let used = &func.values[u.value];
                        for &result in &op.results {
                            assert!(u.value < result, "uses point backwards");
                        }
                        let _ = used;
                    }
                }
                if op.kind == OpKind::Const {
                    let val = op.single("val").expect("const has val");
                    let ValueDef::Literal(lit) = &func.values[val.value].def else {
                        panic!("val is a literal")
                    };
                    assert_eq!(
                        DeclType::from(lit.ty().clone()),
                        func.values[op.results[0]].decl
                    );
                }
                assert_eq!(
                    op.name_attr.as_deref(),
                    Some(func.values[op.results[0]].name.as_str())
                );
            }
        }
    }

    #[test]
    fn spec_example_c_dynamic_matmul() {
        // mil-spec 3.9 example C: IC=4, OC=2, SEQ=3.
        let mut f = ProgramBuilder::new("1.3").function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[1, 4, 1, 5]));
        let act = f
            .named("act")
            .slice_by_size(x, &[0, 0, 0, 0], &[1, 4, 1, 3]);
        let wt = f.named("wt").slice_by_size(x, &[0, 0, 0, 3], &[1, 4, 1, 2]);
        let a2 = f.named("a2").reshape(act, &[1, 1, 4, 3]);
        let a3 = f.named("a3").transpose(a2, &[0, 1, 3, 2]);
        let w = f.named("W").reshape(wt, &[1, 1, 4, 2]);
        let yh = f.named("yh").matmul(a3, w, false, false);
        let yt = f.named("yt").transpose(yh, &[0, 1, 3, 2]);
        let y = f.named("y").reshape(yt, &[1, 2, 1, 3]);
        f.output(y);
        assert_eq!(f.shape(yh), &[1, 1, 3, 2]);
        assert_eq!(f.shape(y), &[1, 2, 1, 3]);
        let program = f.finish();
        assert_self_consistent(&program);
        let func = &program.functions[program.entry().unwrap()];
        let kinds: Vec<&str> = func.ops.iter().map(|(_, op)| op.kind.name()).collect();
        // The perm constant is shared and the matmul flags are one `bF`.
        assert_eq!(kinds.iter().filter(|k| **k == "transpose").count(), 2);
        let const_names: Vec<&str> = func
            .ops
            .iter()
            .filter(|(_, op)| op.kind == OpKind::Const)
            .map(|(_, op)| op.name_attr.as_deref().unwrap())
            .collect();
        assert_eq!(
            const_names,
            vec![
                "act_begin",
                "act_size",
                "wt_begin",
                "wt_size",
                "a2_shape",
                "pm",
                "W_shape",
                "bF",
                "y_shape"
            ]
        );
        assert_eq!(func.outputs.len(), 1);
        assert_eq!(func.values[func.outputs[0].value].name, "y");
        // Matmul arguments in alphabetical order, flags first.
        let (_, mm) = func
            .ops
            .iter()
            .find(|(_, op)| op.kind == OpKind::Matmul)
            .unwrap();
        let arg_names: Vec<&str> = mm.args.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(arg_names, ["transpose_x", "transpose_y", "x", "y"]);
    }

    #[test]
    fn names_are_unique_valid_and_automatic() {
        let mut f = ProgramBuilder::ane().function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[2, 3]));
        let a = f.named("x").sigmoid(x); // taken: becomes x_1
        let b = f.named("tensor").relu(a); // keyword: becomes tensor_
        let c = f.named("fp16").exp(b); // dtype name
        let d = f.named("my var!").tanh(c);
        let e = f.sigmoid(d);
        let g = f.sigmoid(e);
        assert_eq!(f.name(a), "x_1");
        assert_eq!(f.name(b), "tensor_");
        assert_eq!(f.name(c), "fp16_");
        assert_eq!(f.name(d), "my_var_");
        assert_eq!(f.name(e), "sigmoid_0");
        assert_eq!(f.name(g), "sigmoid_1");
        let program = f.finish();
        assert_eq!(program.version, "1.3");
        assert_eq!(program.build_info.len(), 4);
        assert_self_consistent(&program);
    }

    #[test]
    fn consts_are_shared_and_named_on_creation() {
        let mut f = ProgramBuilder::new("1.3").function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[4]));
        let a = f.const_fp16_scalar(0.5);
        let b = f.const_fp16_scalar(0.5);
        let c = f.named("half").const_fp16_scalar(0.5);
        let d = f.named("quarter").const_fp16_scalar(0.25);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(f.name(c), "fp16_0");
        assert_eq!(f.name(d), "quarter");
        let y = f.mul(x, a);
        let z = f.mul_scalar(y, 0.5);
        assert_eq!(f.shape(z), &[4]);
        let t = f.const_bool(true);
        assert_eq!(f.name(t), "bT");
        let blob1 = f.blob_const(fp16(&[4]), "@model_path/weights/mask.bin", 64);
        let blob2 = f.blob_const(fp16(&[4]), "@model_path/weights/mask.bin", 64);
        assert_eq!(blob1, blob2);
        assert_eq!(f.name(blob1), "mask");
        let program = f.finish();
        assert_self_consistent(&program);
    }

    #[test]
    fn shape_rules() {
        assert_eq!(
            matmul_shape(&[10, 4, 3], &[5, 10, 3, 2], false, false).unwrap(),
            vec![5, 10, 4, 2]
        );
        assert_eq!(
            matmul_shape(&[4], &[10, 4, 3], false, false).unwrap(),
            vec![10, 3]
        );
        assert_eq!(
            matmul_shape(&[10, 3, 4], &[4], false, false).unwrap(),
            vec![10, 3]
        );
        assert_eq!(
            matmul_shape(&[4], &[4], false, false).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(
            matmul_shape(&[1, 12, 64, 256], &[1, 12, 64, 256], true, false).unwrap(),
            vec![1, 12, 256, 256]
        );
        assert!(
            matmul_shape(&[2, 3], &[4, 5], false, false)
                .unwrap_err()
                .contains("k=3")
        );
        assert_eq!(
            broadcast_shapes(&[1, 768, 1, 256], &[1, 1, 1, 256]),
            Some(vec![1, 768, 1, 256])
        );
        assert_eq!(broadcast_shapes(&[], &[3, 4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 3]), None);
        assert_eq!(normalize_axis(-1, 4), Some(3));
        assert_eq!(normalize_axis(4, 4), None);

        let mut f = ProgramBuilder::new("1.3").function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[1, 8, 2, 6]));
        let w = f.param("w", fp16(&[4, 4, 3, 3]));
        let same = f.conv(
            x,
            w,
            None,
            &ConvOptions {
                strides: vec![2, 2],
                pad_type: PadType::Same,
                dilations: vec![],
                groups: 2,
            },
        );
        assert_eq!(f.shape(same), &[1, 4, 1, 3]);
        let custom = f.conv(
            x,
            w,
            None,
            &ConvOptions {
                strides: vec![],
                pad_type: PadType::Custom(vec![1, 1, 1, 1]),
                dilations: vec![],
                groups: 2,
            },
        );
        assert_eq!(f.shape(custom), &[1, 4, 2, 6]);
        let r = f.reduce_sum(x, &[1, -1], true);
        assert_eq!(f.shape(r), &[1, 1, 2, 1]);
        let r2 = f.reduce_max(x, &[1], false);
        assert_eq!(f.shape(r2), &[1, 2, 6]);
        let e = f.expand_dims(r2, &[0, -1]);
        assert_eq!(f.shape(e), &[1, 1, 2, 6, 1]);
        let s = f.squeeze(e, None);
        assert_eq!(f.shape(s), &[2, 6]);
        let sl = f.slice_by_index(
            s,
            &SliceByIndex {
                begin: vec![0, -1],
                end: vec![2, 0],
                stride: vec![1, -2],
                ..Default::default()
            },
        );
        assert_eq!(f.shape(sl), &[2, 3]);
        let sq = f.slice_by_index(
            s,
            &SliceByIndex {
                begin: vec![1, 0],
                end: vec![2, 6],
                squeeze_mask: vec![true, false],
                ..Default::default()
            },
        );
        assert_eq!(f.shape(sq), &[6]);
        let parts = f.split(x, 3, &[2, 4]);
        assert_eq!(f.shape(parts[1]), &[1, 8, 2, 4]);
        assert_eq!(f.name(parts[1]), "split_0_1");
        let cat = f.concat(&[parts[1], parts[0]], -1);
        assert_eq!(f.shape(cat), &[1, 8, 2, 6]);
        let il = f.concat_interleave(&[x, x], 1);
        assert_eq!(f.shape(il), &[1, 16, 2, 6]);
        let t = f.tile(x, &[1, 1, 3, 1]);
        assert_eq!(f.shape(t), &[1, 8, 6, 6]);
        let idx = f.param("idx", TensorType::new(DType::Int32, [5, 2]));
        let g = f.gather(x, idx, 1, 0);
        assert_eq!(f.shape(g), &[1, 5, 2, 2, 6]);
        let q = f.param("q", fp16(&[1, 2, 5, 4]));
        let k = f.param("k", fp16(&[1, 2, 7, 4]));
        let v = f.param("v", fp16(&[1, 2, 7, 3]));
        let a = f.scaled_dot_product_attention(q, k, v, None);
        assert_eq!(f.shape(a), &[1, 2, 5, 3]);
        let c = f.cast(a, DType::Fp32);
        assert_eq!(f.ty(c), &TensorType::new(DType::Fp32, [1, 2, 5, 3]));
        let cmp = f.greater(q, q);
        assert_eq!(f.dtype(cmp), DType::Bool);
        let sel = f.select(cmp, q, q);
        assert_eq!(f.shape(sel), &[1, 2, 5, 4]);
        let program = f.finish();
        assert_self_consistent(&program);
    }

    #[test]
    fn multiple_functions() {
        let mut f = ProgramBuilder::new("1.0").function("a", Opset::Ios16);
        let x = f.param("x", fp16(&[2]));
        let y = f.relu(x);
        f.output(y);
        let mut g = f.end_function().function("b", Opset::Ios18);
        let x = g.param("x", fp16(&[3]));
        g.output(x);
        let program = g.finish();
        assert_eq!(program.functions.len(), 2);
        assert_eq!(program.function("b").map(|h| h.index()), Some(1));
        assert_self_consistent(&program);
    }

    fn verify_and_round_trip(program: Program) {
        let text = crate::print::print(&program);
        let (parsed, diags) = crate::lower::parse(&text);
        assert!(
            !crate::diag::has_errors(&diags),
            "printed builder output parses: {diags:?}\n{text}"
        );
        assert_eq!(crate::print::print(&parsed), text, "print is a fixed point");
        match crate::verify::verify(program, &crate::verify::VerifyOptions::default()) {
            Ok(verified) => assert!(
                verified.warnings().is_empty(),
                "warnings: {:?}",
                verified.warnings()
            ),
            Err(diags) => panic!(
                "builder output does not verify:\n{}\n{text}",
                diags
                    .iter()
                    .map(|d| format!("{}: {}", d.code, d.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    #[test]
    fn every_helper_produces_verified_ir() {
        let mut f = ProgramBuilder::ane().function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[1, 4, 2, 6]));
        let y = f.param("y", fp16(&[1, 1, 2, 6]));
        let mut outs = vec![
            f.add(x, y),
            f.sub(x, y),
            f.mul(x, y),
            f.real_div(x, y),
            f.pow(x, y),
            f.maximum(x, y),
            f.minimum(x, y),
            f.abs(x),
            f.square(x),
            f.sqrt(x),
            f.exp(x),
            f.erf(x),
            f.tanh(x),
            f.sigmoid(x),
            f.relu(x),
            f.silu(x),
            f.rsqrt(x, Some(1e-3)),
            f.log(x, None),
            f.inverse(x, Some(1e-2)),
            f.gelu(x, Some("TANH_APPROXIMATION")),
            f.gelu(x, None),
            f.clip(x, -1.0, 1.0),
            f.softmax(x, -1),
            f.mul_scalar(x, 0.5),
            f.add_scalar(x, 1.0),
            f.pow_scalar(x, -0.5),
            f.scalar_sub(1.0, x),
        ];
        for cmp in [
            f.equal(x, y),
            f.not_equal(x, y),
            f.greater(x, y),
            f.greater_equal(x, y),
            f.less(x, y),
        ] {
            outs.push(f.select(cmp, x, y));
        }
        let le = f.less_equal(x, y);
        outs.push(f.cast(le, DType::Fp16));
        let wide = f.cast(x, DType::Fp32);
        outs.push(f.cast(wide, DType::Fp16));
        for reduced in [
            f.reduce_sum(x, &[1], true),
            f.reduce_mean(x, &[-1], true),
            f.reduce_max(x, &[1, 3], true),
        ] {
            outs.push(f.add(x, reduced));
        }
        let xt = f.transpose(x, &[0, 1, 3, 2]); // [1, 4, 6, 2]
        let mm = f.matmul(x, xt, false, false); // [1, 4, 2, 2]
        outs.push(f.reshape(mm, &[1, 4, 2, 2]));
        let mm2 = f.matmul(xt, x, true, true); // [1, 4, 2, 6]^T.. -> [1,4,2,2]
        outs.push(mm2);
        let weight = f.const_float_tensor(DType::Fp16, &[3, 6], &[0.25; 18]);
        let bias = f.const_float_tensor(DType::Fp16, &[3], &[0.5; 3]);
        let x3 = f.reshape(x, &[4, 2, 6]);
        let lin = f.linear(x3, weight, Some(bias)); // [4, 2, 3]
        outs.push(lin);
        let cw = f.const_float_tensor(DType::Fp16, &[8, 4, 1, 1], &[0.125; 32]);
        outs.push(f.conv1x1(x, cw)); // [1, 8, 2, 6]
        let cw3 = f.const_float_tensor(DType::Fp16, &[4, 2, 3, 3], &[0.0625; 72]);
        let options = ConvOptions {
            strides: vec![1, 2],
            pad_type: PadType::Same,
            dilations: vec![],
            groups: 2,
        };
        outs.push(f.conv(x, cw3, None, &options)); // [1, 4, 2, 3]
        let gamma = f.const_float_tensor(DType::Fp16, &[6], &[1.0; 6]);
        let beta = f.const_float_tensor(DType::Fp16, &[6], &[0.0; 6]);
        outs.push(f.layer_norm(x, &[-1], Some(gamma), Some(beta), Some(1e-5)));
        outs.push(f.scaled_dot_product_attention(x, x, x, None));
        let e = f.expand_dims(x, &[0]);
        outs.push(f.squeeze(e, Some(&[0])));
        outs.push(f.slice_by_size(x, &[0, 1, 0, 2], &[1, 2, 2, 3]));
        let spec = SliceByIndex {
            begin: vec![0, 0, 0, 5],
            end: vec![1, 4, 2, 0],
            stride: vec![1, 1, 1, -1],
            ..Default::default()
        };
        outs.push(f.slice_by_index(x, &spec));
        outs.push(f.concat(&[x, y], 1));
        outs.push(f.concat_interleave(&[x, x], 1));
        outs.extend(f.split(x, 1, &[1, 3]));
        outs.push(f.tile(y, &[1, 2, 1, 1]));
        let value = f.const_fp16_scalar(2.0);
        outs.push(f.fill(&[1, 4, 2, 6], value));
        outs.push(f.band_part(x, -1, 0));
        let idx = f.constant(Tensor::i32_vector(&[3, 0]));
        outs.push(f.gather(x, idx, 1, 0));
        let scale = f.const_fp16_scalar(0.125);
        let q = f.quantize(x, scale, None, None, DType::Int8);
        outs.push(f.dequantize(q, scale, None, None));
        let data = Tensor::from_i64s(
            TensorType::new(DType::Int8, [4, 2]),
            &[1, -2, 3, -4, 5, -6, 7, -8],
        )
        .unwrap();
        let deq = f.constexpr_affine_dequantize(
            Literal::Tensor(data),
            Tensor::scalar_f64(DType::Fp16, 0.5),
            Tensor::from_i64s(TensorType::scalar(DType::Int8), &[0]).unwrap(),
            0,
        );
        outs.push(deq);
        for out in outs {
            f.output(out);
        }
        let program = f.finish();
        assert_self_consistent(&program);
        verify_and_round_trip(program);
    }

    #[test]
    fn printed_text_looks_like_maderix() {
        let mut f = ProgramBuilder::ane().function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[1, 4, 1, 5]));
        let act = f
            .named("act")
            .slice_by_size(x, &[0, 0, 0, 0], &[1, 4, 1, 3]);
        let a2 = f.named("a2").reshape(act, &[1, 1, 4, 3]);
        let a3 = f.named("a3").transpose(a2, &[0, 1, 3, 2]);
        let yh = f.named("yh").matmul(a3, a3, false, true);
        let sm = f.named("sm").softmax(yh, -1);
        f.output(sm);
        let program = f.finish();
        let text = crate::print::print(&program);
        for line in [
            "program(1.3)",
            "func main<ios18>(tensor<fp16, [1, 4, 1, 5]> x) {",
            "tensor<int32, [4]> act_begin = const()[name = string(\"act_begin\"), val = tensor<int32, [4]>([0, 0, 0, 0])];",
            "tensor<fp16, [1, 4, 1, 3]> act = slice_by_size(begin = act_begin, size = act_size, x = x)[name = string(\"act\")];",
            "tensor<int32, [4]> pm = const()[name = string(\"pm\"), val = tensor<int32, [4]>([0, 1, 3, 2])];",
            "bool bF = const()[name = string(\"bF\"), val = bool(false)];",
            "tensor<fp16, [1, 1, 3, 3]> yh = matmul(transpose_x = bF, transpose_y = bT, x = a3, y = a3)[name = string(\"yh\")];",
            "int32 i32_m1 = const()[name = string(\"i32_m1\"), val = int32(-1)];",
            "} -> (sm);",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        verify_and_round_trip(program);
    }

    #[test]
    fn wrong_declared_types_are_caught_by_the_verifier() {
        let mut f = ProgramBuilder::new("1.3").function("main", Opset::Ios18);
        let x = f.param("x", fp16(&[2, 3]));
        let y = f.raw_op(
            OpKind::Relu,
            vec![("x", OpArg::Var(x))],
            vec![fp16(&[3, 2])],
        );
        f.output(y[0]);
        let program = f.finish();
        let diags =
            crate::verify::verify(program, &crate::verify::VerifyOptions::default()).unwrap_err();
        assert!(
            diags.iter().any(|d| d.code == crate::diag::DiagCode::E130),
            "{diags:?}"
        );
    }
}
