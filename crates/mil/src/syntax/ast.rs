//! The untyped syntax tree: what the text says, with a span on every node and the original
//! spelling of every number. Built by [`super::parse`]; turned into IR by [`crate::lower`].
//!
//! Nodes that the parser could not complete are still present, marked (`broken`, `Error`
//! variants), so that lowering can define their names and avoid cascading diagnostics.

use crate::ir::DType;
use crate::span::Span;

/// An identifier as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// The text.
    pub text: String,
    /// Where.
    pub span: Span,
}

/// A whole document: `program(VERSION) [attrs] { functions }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    /// The version token (`1.0`, `1.3`, `1`), if the header had one.
    pub version: Option<Number>,
    /// Span of the `program` keyword (empty if it was missing).
    pub program_span: Span,
    /// The program attribute block (`[buildInfo = ...]`), `None` when there was none.
    pub attrs: Option<Vec<Arg>>,
    /// Functions in textual order.
    pub functions: Vec<Function>,
}

/// `func NAME<OPSET>(params) [attrs] { body } -> (outputs);`
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// Function name.
    pub name: Ident,
    /// Opset tag, if it could be read.
    pub opset: Option<Ident>,
    /// Parameters in order.
    pub params: Vec<Param>,
    /// Statements in order.
    pub body: Vec<Stmt>,
    /// Output names.
    pub outputs: Vec<Ident>,
}

/// `TYPE NAME` in a parameter list.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Declared type.
    pub ty: Type,
    /// Parameter name.
    pub name: Ident,
}

/// One statement: `results = op(args)[attrs];`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// Declared results (`TYPE NAME`).
    pub results: Vec<ResultDecl>,
    /// Whether the results were written `(T a, T b) = ...`.
    pub parenthesized: bool,
    /// The op type name, if the parser got that far.
    pub op: Option<Ident>,
    /// The argument list.
    pub args: Vec<Arg>,
    /// The attribute block (`[name = string("..."), val = ...]`), empty if absent.
    pub attrs: Vec<Arg>,
    /// Whether the attribute block was written at all.
    pub has_attr_block: bool,
    /// Whether a syntax error was reported inside this statement.
    pub broken: bool,
    /// From the first result type to the `;` (or wherever the statement stopped).
    pub span: Span,
}

/// `TYPE NAME` on the left of a statement.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultDecl {
    /// Declared type.
    pub ty: Type,
    /// Variable name.
    pub name: Ident,
}

/// `name = value` (argument list, attribute block, BLOBFILE arguments, program attributes).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// Parameter name.
    pub name: Ident,
    /// Bound value.
    pub value: ArgValue,
}

/// The right-hand side of an argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    /// One value.
    Single(Value),
    /// `(v1, v2, ...)`: a tuple, even with one element.
    Tuple {
        /// Elements.
        items: Vec<Value>,
        /// From `(` to `)`.
        span: Span,
    },
}

/// A value: a reference or a literal (mil-spec 3.5).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A variable or parameter name.
    Ref(Ident),
    /// A typed literal.
    Literal(Literal),
    /// Bare `true` / `false` (a leniency, mil-spec 3.10).
    BareBool {
        /// The value.
        value: bool,
        /// Where.
        span: Span,
    },
    /// A bare number where a typed value is needed (`E143`).
    BareNumber(Number),
    /// A bare string where a typed value is needed (`E143`).
    BareString(Str),
    /// Something the parser could not read (already reported).
    Error(Span),
}

impl Value {
    /// The span of the whole value.
    pub fn span(&self) -> Span {
        match self {
            Value::Ref(ident) => ident.span,
            Value::Literal(literal) => literal.span,
            Value::BareBool { span, .. } | Value::Error(span) => *span,
            Value::BareNumber(number) => number.span,
            Value::BareString(string) => string.span,
        }
    }
}

/// `TYPE(payload)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    /// The literal's type.
    pub ty: Type,
    /// What is inside the parentheses.
    pub payload: Payload,
    /// From the type to the closing `)`.
    pub span: Span,
}

/// The inside of a literal's parentheses.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// One scalar (`fp16(0x1p-3)`, `string("x")`, `tensor<int32, [1]>(-1)`).
    Scalar(Scalar),
    /// A flat element list `[a, b, ...]`.
    List {
        /// Elements.
        items: Vec<Scalar>,
        /// From `[` to `]`.
        span: Span,
    },
    /// `BLOBFILE(path = ..., offset = ...)`.
    Blob {
        /// The arguments as written (checked during lowering).
        args: Vec<Arg>,
        /// From `BLOBFILE` to its `)`.
        span: Span,
    },
    /// `{{k, v}, ...}` (dictionary literals).
    Dict {
        /// Entries.
        entries: Vec<(Scalar, Scalar)>,
        /// From `{` to `}`.
        span: Span,
    },
    /// Nothing between the parentheses.
    Empty(Span),
    /// A payload this front-end does not model (tuple payloads), skipped.
    Unsupported(Span),
    /// A payload the parser could not read (already reported).
    Error(Span),
}

/// One element of a literal payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A number token.
    Number(Number),
    /// A string token.
    Str(Str),
    /// A word: `true`, `false`, `inf`, `nan`, or something invalid.
    Word(Ident),
}

impl Scalar {
    /// Where.
    pub fn span(&self) -> Span {
        match self {
            Scalar::Number(number) => number.span,
            Scalar::Str(string) => string.span,
            Scalar::Word(word) => word.span,
        }
    }
}

/// How a number token was spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberKind {
    /// `[+-]?[0-9]+`.
    Int,
    /// Decimal float, hex float, or signed special.
    Float,
    /// Malformed (already reported as `E003`).
    Bad,
}

/// A number token with its original spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number {
    /// The spelling.
    pub text: String,
    /// Lexical class.
    pub kind: NumberKind,
    /// Where.
    pub span: Span,
}

/// A string token, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Str {
    /// The decoded value.
    pub value: String,
    /// Where (including the quotes).
    pub span: Span,
}

/// A written type.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// `tensor<DTYPE, [dims]>`.
    Tensor {
        /// Element type.
        dtype: DType,
        /// Dimensions.
        dims: Vec<Dim>,
        /// Whole type.
        span: Span,
    },
    /// A bare dtype (`fp16`), the same as `tensor<fp16, []>`.
    Scalar {
        /// Element type.
        dtype: DType,
        /// Whole type.
        span: Span,
    },
    /// `dict<K, V>`.
    Dict {
        /// Key type.
        key: Box<Type>,
        /// Value type.
        value: Box<Type>,
        /// Whole type.
        span: Span,
    },
    /// `list<...>`, `tuple<...>`, `state<...>`: parsed, then reported as unsupported (`E199`).
    Unsupported {
        /// `list`, `tuple` or `state`.
        what: &'static str,
        /// Whole type.
        span: Span,
    },
    /// A type the parser could not read (already reported).
    Error(Span),
}

impl Type {
    /// The span of the whole type.
    pub fn span(&self) -> Span {
        match self {
            Type::Tensor { span, .. }
            | Type::Scalar { span, .. }
            | Type::Dict { span, .. }
            | Type::Unsupported { span, .. }
            | Type::Error(span) => *span,
        }
    }
}

/// One written dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A size.
    Known(usize, Span),
    /// `?`.
    Unknown(Span),
}

impl Dim {
    /// Where.
    pub fn span(self) -> Span {
        match self {
            Dim::Known(_, span) | Dim::Unknown(span) => span,
        }
    }
}
