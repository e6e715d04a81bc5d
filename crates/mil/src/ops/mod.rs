//! Op signatures, argument checks, shape/type rules and normalised attributes: the one place
//! where op parameters are interpreted (mil-spec section 6).
//!
//! Every op of [`OpKind`] has one or more versions ([`OpSignature`]), each introduced in some
//! opset; a function uses, for every op, the newest version introduced at or before its own
//! opset (mil-spec 4.9). [`signature`] selects it.
//!
//! Checking one op happens in two layers:
//!
//! 1. generic, driven by the signature (`check_args`): unknown arguments (E112, or W181 for an
//!    unknown attribute of an ordinary op), argument given both as argument and attribute (E114),
//!    tuple versus single (E115), missing required parameters (E113), allowed dtypes (E120),
//!    type domains (E121), constness of const-only parameters (E124);
//! 2. per op family (one file each), the shape rule: shape constraints (E122, E123), constant
//!    values (E125), the inferred result types and the normalised [`OpAttrs`].
//!
//! The engine reads normalised parameters through [`attrs`], which re-runs the same rule on the
//! facts of a verified program, so nothing outside this module ever re-parses an argument.
//!
//! Family files: [`elementwise`] (binary arithmetic and comparisons), [`unary`], [`cast`],
//! [`reduce`] (softmax and reductions), [`linalg`] (matmul, linear, conv), [`norm`]
//! (layer_norm), [`sdpa`], [`shape`] (reshape, transpose, expand_dims, squeeze), [`slice`](mod@slice),
//! [`join`] (concat, split, tile), [`construct`] (fill, band_part, select, gather), [`quant`]
//! (quantize, dequantize, constexpr_affine_dequantize) and [`konst`] (const).

pub mod cast;
pub mod construct;
pub mod elementwise;
pub mod join;
pub mod konst;
pub mod linalg;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod sdpa;
pub mod shape;
pub mod slice;
pub mod unary;

use crate::diag::{DiagCode, Diagnostic, Severity};
use crate::facts::FunctionFacts;
use crate::ir::{
    ArgValue, DType, Function, Handle, HandleVec, Op, OpKind, Opset, Tensor, TensorType, Use,
    Value, ValueDef,
};
use crate::span::Span;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// The default of an optional parameter, for documentation and tools. The rules in the family
/// files apply defaults; [`OpAttrs`] always carries the value actually used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    /// Absent means "not given" (e.g. `quantize.zero_point`, `quantize.axis`).
    Absent,
    /// A boolean default.
    Bool(bool),
    /// An integer default.
    Int(i64),
    /// A float default, converted to the dtype the rule says.
    Float(f64),
    /// A string default.
    Str(&'static str),
    /// A computed default, described in words ("all axes", "zeros", "ones").
    Rule(&'static str),
}

/// Whether a parameter must be given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Presence {
    /// Must be given (E113 otherwise).
    Required,
    /// May be omitted; then the default applies.
    Optional(DefaultValue),
}

/// One parameter of an op version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSpec {
    /// The argument name (`x`, `weight`, `pad_type`).
    pub name: &'static str,
    /// Required, or optional with a default.
    pub presence: Presence,
    /// Whether the bound value must be const (mil-spec 4.4); E124 otherwise.
    pub const_only: bool,
    /// The dtypes allowed for this parameter (E120 otherwise).
    pub dtypes: &'static [DType],
    /// The type domain (`"T"`, `"U"`): parameters sharing a domain must have identical dtypes
    /// (E121). `None`: the parameter's dtype is independent.
    pub domain: Option<&'static str>,
    /// Whether the parameter takes a tuple (`concat.values`); E115 on a mismatch.
    pub tuple: bool,
}

impl ParamSpec {
    /// A required, non-const, single-valued parameter with no domain.
    pub const fn new(name: &'static str, dtypes: &'static [DType]) -> ParamSpec {
        ParamSpec {
            name,
            presence: Presence::Required,
            const_only: false,
            dtypes,
            domain: None,
            tuple: false,
        }
    }

    /// The same parameter, const-only.
    pub const fn konst(mut self) -> ParamSpec {
        self.const_only = true;
        self
    }

    /// The same parameter, optional with `default`.
    pub const fn opt(mut self, default: DefaultValue) -> ParamSpec {
        self.presence = Presence::Optional(default);
        self
    }

    /// The same parameter, in type domain `domain`.
    pub const fn dom(mut self, domain: &'static str) -> ParamSpec {
        self.domain = Some(domain);
        self
    }

    /// The same parameter, taking a tuple.
    pub const fn tuple(mut self) -> ParamSpec {
        self.tuple = true;
        self
    }

    /// Whether the parameter must be given.
    pub fn is_required(&self) -> bool {
        self.presence == Presence::Required
    }
}

/// How many results an op version produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCount {
    /// Exactly one.
    One,
    /// Decided by the arguments (`split`: the number of parts).
    Variable,
}

/// One version of an op: its parameters and the opset that introduced it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpSignature {
    /// The op.
    pub kind: OpKind,
    /// The opset that introduced this version.
    pub introduced: Opset,
    /// Parameters in documentation order.
    pub params: &'static [ParamSpec],
    /// The name of the variadic (tuple) parameter, if any (`concat.values`).
    pub variadic: Option<&'static str>,
    /// The result count.
    pub results: ResultCount,
}

impl OpSignature {
    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|param| param.name == name)
    }
}

/// Every version of `kind`, oldest first.
pub fn versions(kind: OpKind) -> &'static [OpSignature] {
    use OpKind as K;
    match kind {
        K::Const => konst::VERSIONS,
        K::ConstexprAffineDequantize => quant::CONSTEXPR_AFFINE_DEQUANTIZE,
        K::Quantize => quant::QUANTIZE,
        K::Dequantize => quant::DEQUANTIZE,
        K::Add | K::Sub | K::Mul | K::RealDiv | K::Pow | K::Maximum | K::Minimum => {
            elementwise::versions(kind)
        }
        K::Equal | K::NotEqual | K::Greater | K::GreaterEqual | K::Less | K::LessEqual => {
            elementwise::versions(kind)
        }
        K::Abs
        | K::Square
        | K::Sqrt
        | K::Exp
        | K::Erf
        | K::Tanh
        | K::Sigmoid
        | K::Relu
        | K::Silu => unary::versions(kind),
        K::Rsqrt | K::Log | K::Inverse | K::Gelu | K::Clip => unary::versions(kind),
        K::Cast => cast::VERSIONS,
        K::Softmax | K::ReduceSum | K::ReduceMean | K::ReduceMax => reduce::versions(kind),
        K::Matmul | K::Linear | K::Conv => linalg::versions(kind),
        K::LayerNorm => norm::VERSIONS,
        K::ScaledDotProductAttention => sdpa::VERSIONS,
        K::Reshape | K::Transpose | K::ExpandDims | K::Squeeze => shape::versions(kind),
        K::SliceBySize | K::SliceByIndex => slice::versions(kind),
        K::Concat | K::Split | K::Tile => join::versions(kind),
        K::Fill | K::BandPart | K::Select | K::Gather => construct::versions(kind),
    }
}

/// The version of `kind` that a function with `opset` uses: the newest introduced at or before
/// `opset`. `None`: the op is not available in that opset (E111); [`introduced_in`] says since
/// when it is.
pub fn signature(kind: OpKind, opset: Opset) -> Option<&'static OpSignature> {
    versions(kind)
        .iter()
        .rev()
        .find(|sig| sig.introduced <= opset)
}

/// The opset that introduced the first version of `kind`.
pub fn introduced_in(kind: OpKind) -> Opset {
    versions(kind)
        .first()
        .map_or(Opset::Ios15, |sig| sig.introduced)
}

/// Dtype sets used by the signatures.
pub mod dtypes {
    use crate::ir::DType::{self, *};

    /// fp16, fp32.
    pub const FLOAT: &[DType] = &[Fp16, Fp32];
    /// fp16, fp32, int32.
    pub const NUMERIC: &[DType] = &[Fp16, Fp32, Int32];
    /// fp16, fp32, int32, bool.
    pub const BASIC: &[DType] = &[Fp16, Fp32, Int32, Bool];
    /// ios17 widening of [`BASIC`]: plus int8, uint8, int16, uint16.
    pub const BASIC17: &[DType] = &[Fp16, Fp32, Int32, Bool, Int8, Uint8, Int16, Uint16];
    /// ios17 widening of [`NUMERIC`] for gather data.
    pub const NUMERIC17: &[DType] = &[Fp16, Fp32, Int32, Int8, Uint8, Int16, Uint16];
    /// int32.
    pub const INT32: &[DType] = &[Int32];
    /// ios17 shape/begin/size operands: int8, int16, int32.
    pub const INDEX17: &[DType] = &[Int8, Int16, Int32];
    /// bool.
    pub const BOOL: &[DType] = &[Bool];
    /// string.
    pub const STRING: &[DType] = &[String];
    /// int8, uint8.
    pub const QUANT: &[DType] = &[Int8, Uint8];
    /// Every dtype (const `val`).
    pub const ANY: &[DType] = DType::ALL;
}

// ---------------------------------------------------------------------------------------------
// Normalised attributes
// ---------------------------------------------------------------------------------------------

/// An operand that is either known at compile time or only at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand<T> {
    /// Known at compile time (normalised).
    Const(T),
    /// Only known at run time: the value to read, which the engine normalises and bounds-checks
    /// itself (R003).
    Dynamic(Handle<Value>),
}

/// `gelu` approximation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluMode {
    /// `0.5 * x * (1 + erf(x / sqrt(2)))`.
    Exact,
    /// `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`.
    TanhApproximation,
    /// `x * sigmoid(1.702 * x)`.
    SigmoidApproximation,
}

/// Scale, zero point and axis of `quantize`, `dequantize` and `constexpr_affine_dequantize`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    /// One scale (scalar form) or one per index along `axis` (vector form), as `f64` values of
    /// the scale's own dtype.
    pub scale: Vec<f64>,
    /// The zero points, same length rules as `scale`; `[0.0]` when absent.
    pub zero_point: Vec<f64>,
    /// The normalised axis the vectors run along; `None` for the scalar form.
    pub axis: Option<usize>,
}

impl QuantParams {
    /// The (scale, zero point) pair that applies to element `linear` of a tensor of `ty`.
    pub fn at(&self, ty: &TensorType, linear: usize) -> (f64, f64) {
        let along = match self.axis {
            Some(axis) if axis < ty.rank() => {
                let stride = ty.strides()[axis];
                (linear / stride.max(1)) % ty.shape[axis].max(1)
            }
            _ => 0,
        };
        let scale = self
            .scale
            .get(along)
            .or(self.scale.first())
            .copied()
            .unwrap_or(1.0);
        let zero = self
            .zero_point
            .get(along)
            .or(self.zero_point.first())
            .copied()
            .unwrap_or(0.0);
        (scale, zero)
    }
}

/// The normalised parameters of one op, as the engine consumes them. Axes are non-negative and
/// in range, defaults are applied, and every value here was checked by verification. Tensor
/// operands (`x`, `weight`, `bias`, `indices`, ...) are not repeated here: the engine reads them
/// with [`Op::single`]; where presence of an optional operand matters a `has_*` flag says so.
#[derive(Clone, Debug, PartialEq)]
pub enum OpAttrs {
    /// `const`: the value is `facts.consts[result]`.
    Const,
    /// `constexpr_affine_dequantize`: already materialised in `facts.consts[result]`; the
    /// parameters are repeated for tools.
    ConstexprAffineDequantize {
        /// Scale, zero point and axis (always `Some`).
        params: QuantParams,
    },
    /// Elementwise binary arithmetic (`add` ... `minimum`): NumPy broadcasting of `x` and `y`
    /// to the result shape, no parameters.
    Binary,
    /// Comparison (`equal` ... `less_equal`): broadcasting, bool result, no parameters.
    Compare,
    /// Parameterless elementwise unary op (`abs` ... `silu`).
    Unary,
    /// `rsqrt`, `log`, `inverse`: `eps` is the epsilon actually added, already rounded to the
    /// dtype it is stored in (the default is rounded to x's dtype, so fp16 `rsqrt` gets 0).
    Epsilon {
        /// The epsilon.
        eps: f64,
    },
    /// `gelu`.
    Gelu {
        /// The approximation (default `Exact`).
        mode: GeluMode,
    },
    /// `clip`: `min(max(x, alpha), beta)`.
    Clip {
        /// Lower bound.
        alpha: f64,
        /// Upper bound.
        beta: f64,
    },
    /// `cast` to `dtype` (also the result dtype).
    Cast {
        /// Target dtype.
        dtype: DType,
    },
    /// `softmax` along `axis` (normalised, default the last axis).
    Softmax {
        /// The axis.
        axis: usize,
    },
    /// `reduce_sum`, `reduce_mean`, `reduce_max`.
    Reduce {
        /// Reduced input axes, sorted ascending, no duplicates (default: all axes). May be empty
        /// (an explicit `[]`): then the op is the identity.
        axes: Vec<usize>,
        /// Whether reduced axes stay as size 1.
        keep_dims: bool,
    },
    /// `matmul`. The flags are effective: a flag on a rank-1 operand (which has no effect) is
    /// reported as false.
    Matmul {
        /// Swap x's last two dims first.
        transpose_x: bool,
        /// Swap y's last two dims first.
        transpose_y: bool,
    },
    /// `linear`: `x · weightᵀ + bias` (weight and bias are const operands).
    Linear {
        /// Whether `bias` is given (otherwise zeros).
        has_bias: bool,
    },
    /// `conv` (1 to 3 spatial dims, `S` below). `weight` may be a runtime operand (then all
    /// dilations are 1); `bias` is const before ios17 and may be a runtime operand from ios17.
    Conv {
        /// Strides per spatial dim (length S, each >= 1).
        strides: Vec<usize>,
        /// Zero padding before each spatial dim, resolved from `pad_type` (length S).
        pads_before: Vec<usize>,
        /// Zero padding after each spatial dim (length S).
        pads_after: Vec<usize>,
        /// Dilations per spatial dim (length S, each >= 1).
        dilations: Vec<usize>,
        /// Channel groups (>= 1, divides C_in and C_out).
        groups: usize,
        /// Whether `bias` is given (otherwise zeros).
        has_bias: bool,
    },
    /// `layer_norm` over `axes`; `gamma` and `beta` (const operands, shape
    /// `[x.shape[a] for a in axes]`) are optional.
    LayerNorm {
        /// Normalised axes, sorted ascending (default: all axes).
        axes: Vec<usize>,
        /// The epsilon, rounded to the dtype it is stored in (default 1e-5 in x's dtype).
        eps: f64,
        /// Whether `gamma` is given (otherwise ones).
        has_gamma: bool,
        /// Whether `beta` is given (otherwise zeros).
        has_beta: bool,
    },
    /// `scaled_dot_product_attention`; the scale is `1 / sqrt(E)`.
    Sdpa {
        /// Whether `attn_mask` is given (a runtime or const operand: bool masks select,
        /// float masks add).
        has_mask: bool,
    },
    /// `reshape` to `shape` (the result shape, `0` and `-1` resolved).
    Reshape {
        /// The result shape.
        shape: Vec<usize>,
    },
    /// `transpose`: `out.shape[k] = x.shape[perm[k]]`.
    Transpose {
        /// The normalised permutation.
        perm: Vec<usize>,
    },
    /// `expand_dims`: the result axes that are the new size-1 dims, sorted ascending.
    ExpandDims {
        /// Normalised against the result rank.
        axes: Vec<usize>,
    },
    /// `squeeze`: the input axes removed (all of size 1), sorted ascending.
    Squeeze {
        /// The removed axes.
        axes: Vec<usize>,
    },
    /// `slice_by_size`: `out[i] = x[begin + i]`, with the result shape `size`.
    SliceBySize {
        /// The start per dim, normalised (non-negative) when const. May be a runtime operand
        /// (`Dynamic`): then the engine adds the dim size to negative entries and checks
        /// `0 <= begin` and `begin + size <= dim` (R003).
        begin: Operand<Vec<usize>>,
        /// Elements taken per dim (the result shape; `-1` already resolved).
        size: Vec<usize>,
    },
    /// `slice_by_index` (Python slice semantics, already normalised). Along input dim `d` the
    /// result takes `sizes[d]` elements at `begin[d] + k * stride[d]` for `k` in
    /// `0..sizes[d]`; dims with `squeeze[d]` take exactly one element and are dropped from the
    /// result shape.
    SliceByIndex {
        /// First index per input dim.
        begin: Vec<usize>,
        /// Normalised exclusive stop per dim (may be -1 for a negative stride).
        end: Vec<i64>,
        /// Non-zero stride per dim.
        stride: Vec<i64>,
        /// Whether the dim is squeezed away.
        squeeze: Vec<bool>,
        /// Elements taken per input dim (1 for squeezed dims).
        sizes: Vec<usize>,
    },
    /// `concat` of the `values` tuple along `axis`.
    Concat {
        /// Normalised axis.
        axis: usize,
        /// With interleave, position `j*N + k` comes from input `k` (all inputs equal shape).
        interleave: bool,
    },
    /// `split` into consecutive chunks along `axis`.
    Split {
        /// Normalised axis.
        axis: usize,
        /// Size of each part (sum = `x.shape[axis]`), one per result.
        sizes: Vec<usize>,
    },
    /// `tile`: `out.shape[d] = x.shape[d] * reps[d]`.
    Tile {
        /// Repetitions per dim (>= 1).
        reps: Vec<usize>,
    },
    /// `fill`: every element is `value` converted to the result dtype.
    Fill {
        /// The result shape.
        shape: Vec<usize>,
        /// The fill value (default 0.0, fp32).
        value: f64,
    },
    /// `band_part`: keep `x` where `(lower < 0 or m - n <= lower) and (upper < 0 or n - m <=
    /// upper)` on the last two axes `(m, n)`, zero elsewhere.
    BandPart {
        /// Sub-diagonals kept (negative: all).
        lower: i64,
        /// Super-diagonals kept (negative: all).
        upper: i64,
    },
    /// `select`: three-way broadcast of `cond`, `a`, `b`.
    Select,
    /// `gather` along `axis` with `batch_dims` leading shared dims (TensorFlow semantics).
    Gather {
        /// Normalised axis (>= batch_dims).
        axis: usize,
        /// Leading dims shared by `x` and `indices`.
        batch_dims: usize,
        /// ios15/ios16: negative indices wrap (`-D <= v < D`); ios17+: only `0 <= v < D`.
        allow_negative: bool,
        /// ios17 `validate_indices` (the engine always bounds-checks: R002).
        validate_indices: bool,
    },
    /// `quantize` to int8/uint8: `clamp(round_half_even(x / scale) + zero_point)`.
    Quantize {
        /// Scale, zero point and axis.
        params: QuantParams,
        /// int8 or uint8 (the result dtype).
        output_dtype: DType,
    },
    /// `dequantize`: `(x - zero_point) * scale`, result dtype = scale's dtype. Materialised in
    /// `facts.consts` when the input is const.
    Dequantize {
        /// Scale, zero point and axis.
        params: QuantParams,
    },
}

/// The normalised attributes of `op` in a verified function.
///
/// Panics if `op` did not pass verification with these facts (the engine only calls this on a
/// [`crate::facts::VerifiedProgram`]).
pub fn attrs(func: &Function, facts: &FunctionFacts, op: Handle<Op>) -> OpAttrs {
    let view = VerifiedView(facts);
    let options = CheckOptions {
        strict: false,
        materialise: false,
    };
    match check(func, op, &view, options) {
        Ok(checked) => checked.attrs,
        Err(diags) => panic!(
            "invariant violated: attrs() called on op {op:?} ('{}') that does not verify: {:?}",
            func.ops[op].kind,
            diags.first().map(|diag| &diag.message)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Checking machinery (crate-internal)
// ---------------------------------------------------------------------------------------------

/// What a rule can see of the values of a function: types and const values, both possibly
/// unknown.
pub(crate) trait FactView {
    /// The type of `value`, if known.
    fn ty(&self, value: Handle<Value>) -> Option<&TensorType>;
    /// The const value of `value`, if const.
    fn konst(&self, value: Handle<Value>) -> Option<&Arc<Tensor>>;
}

/// Facts being built by inference (both tables optional per value).
pub(crate) struct PartialView<'a> {
    pub types: &'a HandleVec<Value, Option<TensorType>>,
    pub consts: &'a HandleVec<Value, Option<Arc<Tensor>>>,
}

impl FactView for PartialView<'_> {
    fn ty(&self, value: Handle<Value>) -> Option<&TensorType> {
        self.types.get(value).and_then(Option::as_ref)
    }
    fn konst(&self, value: Handle<Value>) -> Option<&Arc<Tensor>> {
        self.consts.get(value).and_then(Option::as_ref)
    }
}

struct VerifiedView<'a>(&'a FunctionFacts);

impl FactView for VerifiedView<'_> {
    fn ty(&self, value: Handle<Value>) -> Option<&TensorType> {
        self.0.types.get(value)
    }
    fn konst(&self, value: Handle<Value>) -> Option<&Arc<Tensor>> {
        self.0.consts.get(value).and_then(Option::as_ref)
    }
}

/// Options that change how rules judge an op.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CheckOptions {
    /// Strict mode: rank-1 matmul transpose flags are errors, `select` over-broadcast is an
    /// error.
    pub strict: bool,
    /// Whether rules compute compile-time values (`constexpr_*`, `dequantize` of consts);
    /// off when only the attributes are wanted.
    pub materialise: bool,
}

/// The outcome of checking one op successfully.
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    /// Normalised parameters.
    pub attrs: OpAttrs,
    /// Inferred result types, one per result.
    pub types: Vec<TensorType>,
    /// Values materialised at compile time (const, constexpr, dequantize of consts).
    pub values: Option<Vec<Tensor>>,
    /// Warnings produced by a successful check.
    pub warnings: Vec<Diagnostic>,
}

/// Marker: the op failed; diagnostics (if any) were pushed to the context. A failure with no
/// diagnostic means an input was unknown (a cascade, silenced).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fail;

/// The rule result type.
pub(crate) type RuleResult = Result<(OpAttrs, Vec<TensorType>), Fail>;

/// Everything a rule needs about the op being checked.
pub(crate) struct Cx<'a> {
    pub func: &'a Function,
    pub op: &'a Op,
    pub handle: Handle<Op>,
    pub sig: &'static OpSignature,
    pub opset: Opset,
    pub options: CheckOptions,
    facts: &'a dyn FactView,
    pub diags: Vec<Diagnostic>,
    /// Values a rule materialised (const, constexpr, dequantize).
    pub values: Option<Vec<Tensor>>,
}

/// Checks op `op` of `func` against its signature and rule. On failure returns every
/// diagnostic produced (possibly none: an unknown input silences the op).
pub(crate) fn check(
    func: &Function,
    op: Handle<Op>,
    facts: &dyn FactView,
    options: CheckOptions,
) -> Result<Checked, Vec<Diagnostic>> {
    let op_ref = &func.ops[op];
    let kind = op_ref.kind;
    let Some(sig) = signature(kind, func.opset) else {
        let diag = Diagnostic::new(
            DiagCode::E111,
            func.ops.span(op),
            format!(
                "'{kind}' is not available in {}; it was introduced in {}",
                func.opset,
                introduced_in(kind)
            ),
        )
        .with_label(format!(
            "function '{}' uses opset {}",
            func.name, func.opset
        ));
        return Err(vec![diag]);
    };
    let mut cx = Cx {
        func,
        op: op_ref,
        handle: op,
        sig,
        opset: func.opset,
        options,
        facts,
        diags: Vec::new(),
        values: None,
    };
    let outcome = if kind == OpKind::Const {
        konst::rule(&mut cx)
    } else {
        check_args(&mut cx).and_then(|()| rule(&mut cx))
    };
    match outcome {
        Ok((attrs, types)) if !crate::diag::has_errors(&cx.diags) => Ok(Checked {
            attrs,
            types,
            values: cx.values,
            warnings: cx.diags,
        }),
        _ => Err(cx.diags),
    }
}

fn rule(cx: &mut Cx<'_>) -> RuleResult {
    use OpKind as K;
    match cx.op.kind {
        K::Const => konst::rule(cx),
        K::ConstexprAffineDequantize | K::Quantize | K::Dequantize => quant::rule(cx),
        K::Add | K::Sub | K::Mul | K::RealDiv | K::Pow | K::Maximum | K::Minimum => {
            elementwise::rule(cx)
        }
        K::Equal | K::NotEqual | K::Greater | K::GreaterEqual | K::Less | K::LessEqual => {
            elementwise::rule(cx)
        }
        K::Abs
        | K::Square
        | K::Sqrt
        | K::Exp
        | K::Erf
        | K::Tanh
        | K::Sigmoid
        | K::Relu
        | K::Silu => unary::rule(cx),
        K::Rsqrt | K::Log | K::Inverse | K::Gelu | K::Clip => unary::rule(cx),
        K::Cast => cast::rule(cx),
        K::Softmax | K::ReduceSum | K::ReduceMean | K::ReduceMax => reduce::rule(cx),
        K::Matmul | K::Linear | K::Conv => linalg::rule(cx),
        K::LayerNorm => norm::rule(cx),
        K::ScaledDotProductAttention => sdpa::rule(cx),
        K::Reshape | K::Transpose | K::ExpandDims | K::Squeeze => shape::rule(cx),
        K::SliceBySize | K::SliceByIndex => slice::rule(cx),
        K::Concat | K::Split | K::Tile => join::rule(cx),
        K::Fill | K::BandPart | K::Select | K::Gather => construct::rule(cx),
    }
}

/// Whether unknown attributes of `kind` are errors (E112) rather than ignored (W181): `const`
/// and `constexpr_*` ops carry their parameters as attributes.
pub fn attrs_are_params(kind: OpKind) -> bool {
    matches!(kind, OpKind::Const | OpKind::ConstexprAffineDequantize)
}

/// Returns whether argument `idx` of `op` is ignored (an unknown attribute of an ordinary op).
pub(crate) fn arg_ignored(sig: &OpSignature, op: &Op, idx: usize) -> bool {
    let arg = &op.args[idx];
    sig.param(&arg.name).is_none() && arg.in_attrs && !attrs_are_params(op.kind)
}

/// A human list: `a, b or c`.
pub(crate) fn or_list<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    match parts.len() {
        0 => String::new(),
        1 => parts[0].clone(),
        n => format!("{} or {}", parts[..n - 1].join(", "), parts[n - 1]),
    }
}

/// Shape as `[1, 2, 3]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Integers as `[1, -2]`.
pub(crate) fn fmt_ints(values: &[i64]) -> String {
    let parts: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// The generic, signature-driven checks (layer 1).
fn check_args(cx: &mut Cx<'_>) -> Result<(), Fail> {
    let op = cx.op;
    let sig = cx.sig;
    let kind = op.kind;
    let mut failed = false;
    for (idx, arg) in op.args.iter().enumerate() {
        let Some(spec) = sig.param(&arg.name) else {
            if arg_ignored(sig, op, idx) {
                cx.diags.push(
                    Diagnostic::new(
                        DiagCode::W181,
                        arg.name_span,
                        format!("unknown attribute '{}' on '{kind}' is ignored", arg.name),
                    )
                    .with_label("not a parameter of this op"),
                );
            } else {
                let names: Vec<&str> = sig.params.iter().map(|param| param.name).collect();
                cx.diags.push(
                    Diagnostic::new(
                        DiagCode::E112,
                        arg.name_span,
                        format!("'{kind}' has no parameter '{}'", arg.name),
                    )
                    .with_note(format!(
                        "'{kind}' in {} takes {}",
                        cx.opset,
                        if names.is_empty() {
                            "no parameters".to_string()
                        } else {
                            names.join(", ")
                        }
                    )),
                );
                failed = true;
            }
            continue;
        };
        if let Some(first) = op.args[..idx]
            .iter()
            .find(|earlier| earlier.name == arg.name)
        {
            if first.in_attrs != arg.in_attrs {
                cx.diags.push(
                    Diagnostic::new(
                        DiagCode::E114,
                        arg.name_span,
                        format!(
                            "'{kind}' parameter '{}' is given both as argument and as attribute",
                            arg.name
                        ),
                    )
                    .with_secondary(first.name_span, format!("'{}' first given here", arg.name)),
                );
            }
            // A plain duplicate was reported by lowering; the op fails either way.
            failed = true;
            continue;
        }
        match (&arg.value, spec.tuple) {
            (ArgValue::Single(_), true) => {
                cx.diags.push(
                    Diagnostic::new(
                        DiagCode::E115,
                        arg.value.span(),
                        format!(
                            "'{kind}' parameter '{}' takes a tuple, e.g. {} = (a, b)",
                            arg.name, arg.name
                        ),
                    )
                    .with_label("a single value"),
                );
                failed = true;
            }
            (ArgValue::Tuple(uses), false) => {
                cx.diags.push(
                    Diagnostic::new(
                        DiagCode::E115,
                        arg.value.span(),
                        format!(
                            "'{kind}' parameter '{}' takes a single value, not a tuple of {}",
                            arg.name,
                            uses.len()
                        ),
                    )
                    .with_label("a tuple"),
                );
                failed = true;
            }
            (ArgValue::Tuple(uses), true) if uses.is_empty() => {
                cx.diags.push(Diagnostic::new(
                    DiagCode::E113,
                    arg.name_span,
                    format!("'{kind}' parameter '{}' needs at least one value", arg.name),
                ));
                failed = true;
            }
            _ => {}
        }
    }
    for spec in sig.params {
        if spec.is_required() && op.arg(spec.name).is_none() {
            cx.diags.push(
                Diagnostic::new(
                    DiagCode::E113,
                    cx.op_span(),
                    format!("'{kind}' is missing required parameter '{}'", spec.name),
                )
                .with_label(format!("add {} = ...", spec.name)),
            );
            failed = true;
        }
    }
    if failed {
        return Err(Fail);
    }
    // Unknown inputs: skip silently (no cascades).
    for (idx, arg) in op.args.iter().enumerate() {
        if arg_ignored(sig, op, idx) {
            continue;
        }
        if arg
            .value
            .uses()
            .iter()
            .any(|used| cx.facts.ty(used.value).is_none())
        {
            return Err(Fail);
        }
    }
    // Dtypes, domains, constness.
    let mut domains: Vec<(&'static str, DType, &str, Use)> = Vec::new();
    for (idx, arg) in op.args.iter().enumerate() {
        if arg_ignored(sig, op, idx) {
            continue;
        }
        let Some(spec) = sig.param(&arg.name) else {
            continue;
        };
        for used in arg.value.uses() {
            let dtype = cx.ty_of_value(used.value).dtype;
            if !spec.dtypes.contains(&dtype) {
                let diag = Diagnostic::new(
                    DiagCode::E120,
                    used.span,
                    format!(
                        "'{kind}' parameter '{}' must be {}, got {dtype}",
                        arg.name,
                        or_list(spec.dtypes)
                    ),
                );
                cx.diags.push(cx.with_origin(diag, used.value, used.span));
                failed = true;
                continue;
            }
            if let Some(domain) = spec.domain {
                if let Some((_, first_dtype, first_name, _)) =
                    domains.iter().find(|(name, ..)| *name == domain)
                {
                    if *first_dtype != dtype {
                        let message = format!(
                            "'{kind}' requires {first_name} and {} to have the same dtype ({first_name}: {first_dtype}, {}: {dtype})",
                            arg.name, arg.name
                        );
                        let diag = Diagnostic::new(DiagCode::E121, used.span, message);
                        cx.diags.push(cx.with_origin(diag, used.value, used.span));
                        failed = true;
                    }
                } else {
                    domains.push((domain, dtype, arg.name.as_str(), *used));
                }
            }
            if spec.const_only && cx.facts.konst(used.value).is_none() {
                let diag = Diagnostic::new(
                    DiagCode::E124,
                    used.span,
                    format!(
                        "'{kind}' parameter '{}' must be const, but {} is not",
                        arg.name,
                        cx.describe(used.value)
                    ),
                );
                cx.diags.push(cx.with_origin(diag, used.value, used.span));
                failed = true;
            }
        }
    }
    if failed { Err(Fail) } else { Ok(()) }
}

impl Cx<'_> {
    /// The span of the op type name.
    pub fn op_span(&self) -> Span {
        self.func.ops.span(self.handle)
    }

    /// The op kind.
    pub fn kind(&self) -> OpKind {
        self.op.kind
    }

    /// The (non-ignored) use bound to single parameter `name`.
    pub fn use_of(&self, name: &str) -> Option<Use> {
        self.op.single(name)
    }

    /// Whether parameter `name` is given.
    pub fn has(&self, name: &str) -> bool {
        self.op.arg(name).is_some()
    }

    /// The type of a value known to be typed (checked by `check_args`).
    pub fn ty_of_value(&self, value: Handle<Value>) -> &TensorType {
        self.facts
            .ty(value)
            .expect("invariant: check_args verified every input type is known")
    }

    /// The type bound to single parameter `name`, if given.
    pub fn ty(&self, name: &str) -> Option<TensorType> {
        self.use_of(name)
            .map(|used| self.ty_of_value(used.value).clone())
    }

    /// The type of a required parameter.
    pub fn req_ty(&self, name: &str) -> TensorType {
        self.ty(name)
            .expect("invariant: check_args verified required parameters are present")
    }

    /// The const value bound to `name`, if given and const.
    pub fn konst(&self, name: &str) -> Option<Arc<Tensor>> {
        self.use_of(name)
            .and_then(|used| self.facts.konst(used.value).cloned())
    }

    /// The const value of `value`, if const.
    pub fn konst_of_value(&self, value: Handle<Value>) -> Option<Arc<Tensor>> {
        self.facts.konst(value).cloned()
    }

    /// The span of the value bound to `name` (the op span if absent).
    pub fn span(&self, name: &str) -> Span {
        self.use_of(name)
            .map_or_else(|| self.op_span(), |used| used.span)
    }

    /// Pushes an error and returns the failure marker.
    pub fn fail(&mut self, code: DiagCode, span: Span, message: impl Into<String>) -> Fail {
        self.diags.push(Diagnostic::new(code, span, message));
        Fail
    }

    /// Pushes a full diagnostic and returns the failure marker.
    pub fn fail_with(&mut self, diag: Diagnostic) -> Fail {
        self.diags.push(diag);
        Fail
    }

    /// Pushes a warning.
    pub fn warn(&mut self, diag: Diagnostic) {
        self.diags.push(diag.with_severity(Severity::Warning));
    }

    /// Where `value` is defined, for notes.
    pub fn def_span(&self, value: Handle<Value>) -> Span {
        let val = &self.func.values[value];
        match val.def {
            ValueDef::Result { op, .. } => {
                let span = self.func.values.span(value);
                if span.is_empty() {
                    self.func.ops.span(op)
                } else {
                    span
                }
            }
            _ => self.func.values.span(value),
        }
    }

    /// Adds a "defined here" note for `value` unless it is an inline literal at `used` (where
    /// the note would repeat the primary location).
    pub fn with_origin(&self, diag: Diagnostic, value: Handle<Value>, used: Span) -> Diagnostic {
        let span = self.def_span(value);
        if span == used || matches!(self.func.values[value].def, ValueDef::Literal(_)) {
            diag
        } else {
            diag.with_secondary(span, self.def_note(value))
        }
    }

    /// A short description of `value` for messages: `'name'` or `the literal`.
    pub fn describe(&self, value: Handle<Value>) -> String {
        let val = &self.func.values[value];
        if val.name.is_empty() {
            "the literal".to_string()
        } else {
            format!("'{}'", val.name)
        }
    }

    /// A note saying where `value` comes from.
    pub fn def_note(&self, value: Handle<Value>) -> String {
        let val = &self.func.values[value];
        let ty = self
            .facts
            .ty(value)
            .map_or_else(|| val.decl.to_string(), ToString::to_string);
        match &val.def {
            ValueDef::Param { .. } => {
                format!(
                    "'{}' is a function parameter of type {ty} (never const)",
                    val.name
                )
            }
            ValueDef::Result { op, .. } => {
                let kind = self.func.ops[*op].kind;
                let konst = if self.facts.konst(value).is_some() {
                    "const"
                } else {
                    "not const"
                };
                format!("'{}' is computed by '{kind}' as {ty} ({konst})", val.name)
            }
            ValueDef::Literal(_) => format!("literal of type {ty}"),
            ValueDef::Error => format!("'{}' could not be lowered", val.name),
        }
    }

    // ---- const parameter readers (with defaults); E122 on a wrong rank ----

    fn const_tensor(&mut self, name: &str) -> Result<Option<Arc<Tensor>>, Fail> {
        let Some(used) = self.use_of(name) else {
            return Ok(None);
        };
        match self.facts.konst(used.value) {
            Some(tensor) => Ok(Some(tensor.clone())),
            None => {
                let kind = self.kind();
                let description = self.describe(used.value);
                let diag = Diagnostic::new(
                    DiagCode::E124,
                    used.span,
                    format!("'{kind}' parameter '{name}' must be const, but {description} is not"),
                );
                let diag = self.with_origin(diag, used.value, used.span);
                Err(self.fail_with(diag))
            }
        }
    }

    fn expect_rank(&mut self, name: &str, tensor: &Tensor, rank: usize) -> Result<(), Fail> {
        if tensor.ty.rank() == rank {
            return Ok(());
        }
        let what = if rank == 0 {
            "a scalar"
        } else {
            "a 1-d tensor"
        };
        let kind = self.kind();
        let span = self.span(name);
        Err(self.fail(
            DiagCode::E122,
            span,
            format!(
                "'{kind}' parameter '{name}' must be {what}, got {}",
                tensor.ty
            ),
        ))
    }

    /// A const integer scalar parameter.
    pub fn int(&mut self, name: &str) -> Result<Option<i64>, Fail> {
        let Some(tensor) = self.const_tensor(name)? else {
            return Ok(None);
        };
        self.expect_rank(name, &tensor, 0)?;
        Ok(tensor.as_i64())
    }

    /// A const 1-d integer parameter.
    pub fn ints(&mut self, name: &str) -> Result<Option<Vec<i64>>, Fail> {
        let Some(tensor) = self.const_tensor(name)? else {
            return Ok(None);
        };
        self.expect_rank(name, &tensor, 1)?;
        Ok(tensor.to_i64_vec())
    }

    /// A const bool scalar parameter, or `default`.
    pub fn boolean(&mut self, name: &str, default: bool) -> Result<bool, Fail> {
        let Some(tensor) = self.const_tensor(name)? else {
            return Ok(default);
        };
        self.expect_rank(name, &tensor, 0)?;
        Ok(tensor.as_bool().unwrap_or(default))
    }

    /// A const 1-d bool parameter.
    pub fn booleans(&mut self, name: &str) -> Result<Option<Vec<bool>>, Fail> {
        let Some(tensor) = self.const_tensor(name)? else {
            return Ok(None);
        };
        self.expect_rank(name, &tensor, 1)?;
        Ok(tensor
            .to_i64_vec()
            .map(|values| values.into_iter().map(|value| value != 0).collect()))
    }

    /// A const string scalar parameter.
    pub fn string(&mut self, name: &str) -> Result<Option<String>, Fail> {
        let Some(tensor) = self.const_tensor(name)? else {
            return Ok(None);
        };
        self.expect_rank(name, &tensor, 0)?;
        Ok(tensor.as_str().map(str::to_string))
    }

    /// A const numeric scalar parameter as `f64` (in its own dtype's precision).
    pub fn float(&mut self, name: &str) -> Result<Option<f64>, Fail> {
        let Some(tensor) = self.const_tensor(name)? else {
            return Ok(None);
        };
        self.expect_rank(name, &tensor, 0)?;
        Ok(tensor.get_f64(0))
    }

    /// Normalises axis `axis` of parameter `name` against `rank` (E125 if out of range).
    pub fn axis(&mut self, name: &str, axis: i64, rank: usize) -> Result<usize, Fail> {
        let rank_i = rank as i64;
        if (-rank_i..rank_i).contains(&axis) {
            return Ok(if axis < 0 {
                (axis + rank_i) as usize
            } else {
                axis as usize
            });
        }
        let kind = self.kind();
        let span = self.span(name);
        Err(self.fail(
            DiagCode::E125,
            span,
            if rank == 0 {
                format!("'{kind}' {name} {axis} is out of range for a rank-0 input")
            } else {
                format!(
                    "'{kind}' {name} {axis} is out of range for rank {rank} (valid: {} to {})",
                    -rank_i,
                    rank_i - 1
                )
            },
        ))
    }

    /// Normalises a list of axes (E125 for out-of-range entries or duplicates); keeps order.
    pub fn axes(&mut self, name: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, Fail> {
        let mut out = Vec::with_capacity(axes.len());
        for &axis in axes {
            let norm = self.axis(name, axis, rank)?;
            if out.contains(&norm) {
                let kind = self.kind();
                let span = self.span(name);
                return Err(self.fail(
                    DiagCode::E125,
                    span,
                    format!("'{kind}' {name} {} names axis {norm} twice", fmt_ints(axes)),
                ));
            }
            out.push(norm);
        }
        Ok(out)
    }

    /// Requires the rank of parameter `name` to satisfy `ok` (E122 with `expected` otherwise).
    pub fn require_rank(
        &mut self,
        name: &str,
        ty: &TensorType,
        ok: impl Fn(usize) -> bool,
        expected: &str,
    ) -> Result<(), Fail> {
        if ok(ty.rank()) {
            return Ok(());
        }
        let kind = self.kind();
        let span = self.span(name);
        Err(self.fail(
            DiagCode::E122,
            span,
            format!("'{kind}' parameter '{name}' must have {expected}, got {ty}"),
        ))
    }

    /// Records materialised result values.
    pub fn materialise(&mut self, values: Vec<Tensor>) {
        self.values = Some(values);
    }
}

/// NumPy broadcast of two shapes (mil-spec 4.6), `None` if not broadcastable.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
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

/// Converts `value` to `dtype` and back (the value a const of that dtype would hold).
pub(crate) fn round_to(dtype: DType, value: f64) -> f64 {
    let mut bytes = Vec::new();
    match crate::ir::encode_f64(dtype, value, &mut bytes) {
        Some(()) => crate::ir::decode_f64(dtype, &bytes).unwrap_or(value),
        None => value,
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_signature_in_its_opsets() {
        for &kind in OpKind::ALL {
            let first = introduced_in(kind);
            for opset in [Opset::Ios15, Opset::Ios16, Opset::Ios17, Opset::Ios18] {
                assert_eq!(
                    signature(kind, opset).is_some(),
                    opset >= first,
                    "{kind} in {opset}"
                );
            }
            let all = versions(kind);
            assert!(!all.is_empty(), "{kind}");
            assert!(
                all.windows(2)
                    .all(|pair| pair[0].introduced < pair[1].introduced),
                "{kind}"
            );
            assert!(all.iter().all(|sig| sig.kind == kind), "{kind}");
        }
        assert_eq!(introduced_in(OpKind::Quantize), Opset::Ios17);
        assert_eq!(
            introduced_in(OpKind::ScaledDotProductAttention),
            Opset::Ios18
        );
        assert_eq!(
            introduced_in(OpKind::ConstexprAffineDequantize),
            Opset::Ios16
        );
        assert_eq!(
            signature(OpKind::Gather, Opset::Ios16).map(|sig| sig.introduced),
            Some(Opset::Ios16)
        );
        assert_eq!(
            signature(OpKind::Conv, Opset::Ios18).map(|sig| sig.introduced),
            Some(Opset::Ios17)
        );
        assert!(
            signature(OpKind::Gather, Opset::Ios15)
                .unwrap()
                .param("batch_dims")
                .is_none()
        );
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast(&[1, 768, 1, 256], &[1, 1, 1, 256]),
            Some(vec![1, 768, 1, 256])
        );
        assert_eq!(broadcast(&[], &[3, 4]), Some(vec![3, 4]));
        assert_eq!(broadcast(&[5, 1, 4], &[3, 1]), Some(vec![5, 3, 4]));
        assert_eq!(broadcast(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn quant_params_index_along_axis() {
        let params = QuantParams {
            scale: vec![1.0, 2.0],
            zero_point: vec![0.0],
            axis: Some(0),
        };
        let ty = TensorType::new(DType::Int8, [2, 3]);
        assert_eq!(params.at(&ty, 0), (1.0, 0.0));
        assert_eq!(params.at(&ty, 4), (2.0, 0.0));
    }

    #[test]
    fn or_list_reads_naturally() {
        assert_eq!(
            or_list(&[DType::Fp16, DType::Fp32, DType::Int32]),
            "fp16, fp32 or int32"
        );
        assert_eq!(or_list(&[DType::Bool]), "bool");
    }
}
