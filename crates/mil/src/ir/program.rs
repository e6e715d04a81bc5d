//! Programs, functions, values and ops: the IR every later stage works on.

use super::arena::{Arena, Handle};
use super::tensor::Tensor;
use super::types::{DeclType, TensorType};
use crate::span::Span;
use std::fmt;

/// A whole MIL program: `program(VERSION) [buildInfo = ...] { functions }`.
#[derive(Clone, Debug)]
pub struct Program {
    /// The version as written (`1.0`, `1.3`, `1`).
    pub version: String,
    /// `buildInfo` entries in source order (metadata only).
    pub build_info: Vec<(String, String)>,
    /// Functions in textual order; the arena span is the function name.
    pub functions: Arena<Function>,
}

impl Program {
    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<Handle<Function>> {
        self.functions
            .iter()
            .find(|(_, func)| func.name == name)
            .map(|(handle, _)| handle)
    }

    /// The entry function: `main` if present, else the first function.
    pub fn entry(&self) -> Option<Handle<Function>> {
        self.function("main")
            .or_else(|| self.functions.handles().next())
    }
}

/// An opset tag (mil-spec 3.3, 4.9). Ordered: a later opset is greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opset {
    /// `ios15` (alias `CoreML5`).
    Ios15,
    /// `ios16` (alias `CoreML6`).
    Ios16,
    /// `ios17` (alias `CoreML7`).
    Ios17,
    /// `ios18` (alias `CoreML8`; `ios26`/`CoreML9` are read as this with a warning).
    Ios18,
}

impl Opset {
    /// Canonical spelling.
    pub fn name(self) -> &'static str {
        match self {
            Opset::Ios15 => "ios15",
            Opset::Ios16 => "ios16",
            Opset::Ios17 => "ios17",
            Opset::Ios18 => "ios18",
        }
    }

    /// Parses a tag; the second value is true when the tag is only approximated (`ios26`).
    pub fn from_tag(tag: &str) -> Option<(Opset, bool)> {
        Some(match tag {
            "ios15" | "CoreML5" => (Opset::Ios15, false),
            "ios16" | "CoreML6" => (Opset::Ios16, false),
            "ios17" | "CoreML7" => (Opset::Ios17, false),
            "ios18" | "CoreML8" => (Opset::Ios18, false),
            "ios26" | "CoreML9" => (Opset::Ios18, true),
            _ => return None,
        })
    }
}

impl fmt::Display for Opset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One function: parameters, a straight-line SSA body, and outputs.
#[derive(Clone, Debug)]
pub struct Function {
    /// Function name (`main` is the entry point).
    pub name: String,
    /// Opset selecting op versions.
    pub opset: Opset,
    /// Parameters in declaration order: input buffer `k` binds `params[k]`.
    pub params: Vec<Handle<Value>>,
    /// Every value: parameters, op results and inline literals. Arena span: the defining name
    /// (or the literal text).
    pub values: Arena<Value>,
    /// Ops in textual (= topological) order. Arena span: the op type name.
    pub ops: Arena<Op>,
    /// Output values in order; output buffer `k` receives `outputs[k]`.
    pub outputs: Vec<Use>,
}

impl Function {
    /// The value named `name` (parameters and op results; literals have no name).
    pub fn value_by_name(&self, name: &str) -> Option<Handle<Value>> {
        self.values
            .iter()
            .find(|(_, value)| value.name == name)
            .map(|(handle, _)| handle)
    }
}

/// A value: a function parameter, an op result, or an inline literal.
#[derive(Clone, Debug)]
pub struct Value {
    /// The variable name (empty for inline literals).
    pub name: String,
    /// The declared type (for literals: the literal's own type).
    pub decl: DeclType,
    /// The span of the declared type in the source.
    pub ty_span: Span,
    /// Where the value comes from.
    pub def: ValueDef,
}

/// How a value is defined.
#[derive(Clone, Debug)]
pub enum ValueDef {
    /// The `index`-th function parameter.
    Param {
        /// Position in the parameter list.
        index: u32,
    },
    /// The `index`-th result of `op`.
    Result {
        /// Defining op.
        op: Handle<Op>,
        /// Result position.
        index: u32,
    },
    /// An inline literal (an op argument written as a literal, or a `const`'s `val`).
    Literal(Literal),
    /// A value whose defining statement could not be lowered; it exists so that uses of it
    /// do not cascade into "undefined variable" errors. Never present in a verified program.
    Error,
}

/// A literal payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// Elements given in the text.
    Tensor(Tensor),
    /// Elements stored in a weight blob file, loaded during verification.
    Blob(BlobRef),
}

impl Literal {
    /// The type of the literal.
    pub fn ty(&self) -> &TensorType {
        match self {
            Literal::Tensor(tensor) => &tensor.ty,
            Literal::Blob(blob) => &blob.ty,
        }
    }
}

/// `tensor<T, S>(BLOBFILE(path = string("..."), offset = uint64(N)))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// Declared type; the file supplies only bytes.
    pub ty: TensorType,
    /// The path exactly as written (`@model_path/weights/wq.bin`).
    pub path: String,
    /// Byte offset of the blob's 64-byte metadata record.
    pub offset: u64,
    /// Span of the path literal.
    pub path_span: Span,
    /// Span of the offset literal.
    pub offset_span: Span,
}

/// A use of a value at a place in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    /// The value used.
    pub value: Handle<Value>,
    /// Where it is used (the reference or literal text).
    pub span: Span,
}

/// An argument binding `name = value` or `name = (v1, v2, ...)`.
#[derive(Clone, Debug)]
pub struct Arg {
    /// Parameter name.
    pub name: String,
    /// Span of the parameter name.
    pub name_span: Span,
    /// Bound value(s).
    pub value: ArgValue,
    /// Whether it was written in the `[...]` attribute block (`const`'s `val`, `constexpr_*`
    /// parameters in ios16/17 serialisation). The printer puts it back there.
    pub in_attrs: bool,
}

/// The value side of an argument.
#[derive(Clone, Debug)]
pub enum ArgValue {
    /// One value.
    Single(Use),
    /// A tuple, for variadic parameters (`concat.values`).
    Tuple(Vec<Use>),
}

impl ArgValue {
    /// The uses in order (one for `Single`).
    pub fn uses(&self) -> &[Use] {
        match self {
            ArgValue::Single(single) => std::slice::from_ref(single),
            ArgValue::Tuple(uses) => uses,
        }
    }

    /// The span covering the whole value.
    pub fn span(&self) -> Span {
        let uses = self.uses();
        match (uses.first(), uses.last()) {
            (Some(first), Some(last)) => first.span.to(last.span),
            _ => Span::UNDEFINED,
        }
    }
}

/// One statement: `results = kind(args)[name = string("..."), attrs]`.
#[derive(Clone, Debug)]
pub struct Op {
    /// Which operation.
    pub kind: OpKind,
    /// The `name` attribute (metadata only; may differ from the variable name).
    pub name_attr: Option<String>,
    /// Arguments in source order (argument list first, then attribute-block parameters).
    pub args: Vec<Arg>,
    /// Result values in order.
    pub results: Vec<Handle<Value>>,
}

impl Op {
    /// The argument bound to parameter `name`.
    pub fn arg(&self, name: &str) -> Option<&Arg> {
        self.args.iter().find(|arg| arg.name == name)
    }

    /// The single value bound to parameter `name` (None if absent or a tuple).
    pub fn single(&self, name: &str) -> Option<Use> {
        match &self.arg(name)?.value {
            ArgValue::Single(single) => Some(*single),
            ArgValue::Tuple(_) => None,
        }
    }
}

macro_rules! op_kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident = $text:literal ),* $(,)?) => {
        /// Every operation of mil-spec section 6.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl OpKind {
            /// Every op kind.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$variant),*];

            /// The MIL op type name.
            pub fn name(self) -> &'static str {
                match self { $(OpKind::$variant => $text,)* }
            }

            /// Parses an op type name.
            pub fn from_name(name: &str) -> Option<OpKind> {
                match name { $($text => Some(OpKind::$variant),)* _ => None }
            }
        }
    };
}

op_kinds! {
    /// A constant (`val` attribute).
    Const = "const",
    /// Affine dequantization of a constant (ios16+).
    ConstexprAffineDequantize = "constexpr_affine_dequantize",
    /// `x + y`.
    Add = "add",
    /// `x - y`.
    Sub = "sub",
    /// `x * y`.
    Mul = "mul",
    /// `x / y`.
    RealDiv = "real_div",
    /// `x ^ y`.
    Pow = "pow",
    /// `max(x, y)`.
    Maximum = "maximum",
    /// `min(x, y)`.
    Minimum = "minimum",
    /// `x == y`.
    Equal = "equal",
    /// `x != y`.
    NotEqual = "not_equal",
    /// `x > y`.
    Greater = "greater",
    /// `x >= y`.
    GreaterEqual = "greater_equal",
    /// `x < y`.
    Less = "less",
    /// `x <= y`.
    LessEqual = "less_equal",
    /// `|x|`.
    Abs = "abs",
    /// `x * x`.
    Square = "square",
    /// `sqrt(x)`.
    Sqrt = "sqrt",
    /// `e^x`.
    Exp = "exp",
    /// `erf(x)`.
    Erf = "erf",
    /// `tanh(x)`.
    Tanh = "tanh",
    /// `1 / (1 + e^-x)`.
    Sigmoid = "sigmoid",
    /// `max(x, 0)`.
    Relu = "relu",
    /// `x * sigmoid(x)`.
    Silu = "silu",
    /// `1 / sqrt(x + eps)`.
    Rsqrt = "rsqrt",
    /// `ln(x + eps)`.
    Log = "log",
    /// `1 / (x + eps)`.
    Inverse = "inverse",
    /// Gaussian error linear unit.
    Gelu = "gelu",
    /// `min(max(x, alpha), beta)`.
    Clip = "clip",
    /// Dtype conversion.
    Cast = "cast",
    /// Softmax along an axis.
    Softmax = "softmax",
    /// Sum over axes.
    ReduceSum = "reduce_sum",
    /// Mean over axes.
    ReduceMean = "reduce_mean",
    /// Maximum over axes.
    ReduceMax = "reduce_max",
    /// Batched matrix product.
    Matmul = "matmul",
    /// `x · weightᵀ + bias`.
    Linear = "linear",
    /// N-d convolution (cross-correlation).
    Conv = "conv",
    /// Layer normalisation.
    LayerNorm = "layer_norm",
    /// Scaled dot-product attention (ios18).
    ScaledDotProductAttention = "scaled_dot_product_attention",
    /// Reshape.
    Reshape = "reshape",
    /// Axis permutation.
    Transpose = "transpose",
    /// Insert size-1 axes.
    ExpandDims = "expand_dims",
    /// Remove size-1 axes.
    Squeeze = "squeeze",
    /// Slice by begin and size.
    SliceBySize = "slice_by_size",
    /// Slice by begin, end, stride and masks.
    SliceByIndex = "slice_by_index",
    /// Join tensors along an axis.
    Concat = "concat",
    /// Split a tensor along an axis.
    Split = "split",
    /// Repeat a tensor.
    Tile = "tile",
    /// A tensor filled with one value.
    Fill = "fill",
    /// Keep a band of the last two axes.
    BandPart = "band_part",
    /// `cond ? a : b`.
    Select = "select",
    /// Gather along an axis.
    Gather = "gather",
    /// Float to int8/uint8 (ios17).
    Quantize = "quantize",
    /// int8/uint8 to float (ios17).
    Dequantize = "dequantize",
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_round_trip() {
        for &kind in OpKind::ALL {
            assert_eq!(OpKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(OpKind::ALL.len(), 54);
        assert_eq!(Opset::from_tag("CoreML8"), Some((Opset::Ios18, false)));
        assert!(Opset::Ios16 < Opset::Ios18);
    }
}
