//! Lowering: the syntax tree of [`crate::syntax`] to the IR of [`crate::ir`].
//!
//! This pass resolves names within each function (mil-spec 4.3), maps op type names to
//! [`ir::OpKind`], turns every literal into a [`ir::ValueDef::Literal`] value (checking element
//! counts, dtype ranges and float overflow, mil-spec 3.5 and 3.8), and records a span on every
//! arena entry. It never stops at the first problem: broken statements still define their result
//! names (as [`ir::ValueDef::Error`] values) so that later uses do not cascade into more errors.
//!
//! What it does **not** check: op signatures, argument presence, dtypes and shapes (the op-level
//! verifier does that). Every attribute other than `name` becomes an [`ir::Arg`] with
//! `in_attrs: true`; the verifier decides whether it is a parameter or an unknown attribute.
//!
//! Placeholder values (an undefined reference, a bare number, a literal that failed to lower)
//! are [`ir::ValueDef::Error`] values named after their source text, declared as a rank-0 `fp32`
//! (a meaningless type: nothing may rely on it).

use crate::diag::{DiagCode, Diagnostic, Severity};
use crate::ir::{
    self, Arena, BlobRef, DType, DeclType, Handle, OpKind, Opset, Tensor, TensorType, Use, Value,
    ValueDef, round_to_dtype,
};
use crate::lex::{is_special_float, parse_float, quote_string};
use crate::span::Span;
use crate::syntax::{self, ast};
use std::collections::HashMap;

/// Options for [`parse_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Reject the leniencies of mil-spec 3.10 and `//` comments (errors instead of acceptance):
    /// bare `true`/`false` arguments, `(T a, T b) = ...` results, a single scalar for a
    /// one-element tensor literal, `CoreML*` opset aliases, `program(1)`, a header without a
    /// `buildInfo` block, and ops without a `name` attribute.
    pub strict_syntax: bool,
}

/// Parses and lowers a whole MIL document. Never fails, never panics: a Program (possibly
/// partial) plus every diagnostic found, sorted by position.
pub fn parse(text: &str) -> (ir::Program, Vec<Diagnostic>) {
    parse_with(text, &ParseOptions::default())
}

/// [`parse`] with options.
pub fn parse_with(text: &str, options: &ParseOptions) -> (ir::Program, Vec<Diagnostic>) {
    let (document, mut diags) = syntax::parse(text, options.strict_syntax);
    let program = lower(text, &document, options, &mut diags);
    diags.sort_by_key(|diag| diag.primary.span.start);
    (program, diags)
}

/// Lowers a parsed document (`source` is the text it was parsed from), appending diagnostics.
pub fn lower(
    source: &str,
    document: &ast::Document,
    options: &ParseOptions,
    diags: &mut Vec<Diagnostic>,
) -> ir::Program {
    let mut lowerer = Lowerer {
        source,
        strict: options.strict_syntax,
        diags,
    };
    lowerer.document(document)
}

struct Lowerer<'a> {
    source: &'a str,
    strict: bool,
    diags: &'a mut Vec<Diagnostic>,
}

/// Per-function lowering state.
struct FuncCx {
    func: ir::Function,
    /// Names in scope: parameter or result handle and the span of its definition.
    scope: HashMap<String, (Handle<Value>, Span)>,
    /// First definition span of every statement result name (for "used before definition").
    defined_later: HashMap<String, Span>,
    /// `name` attribute strings already used, for W182.
    op_names: HashMap<String, Span>,
}

impl FuncCx {
    fn placeholder(&mut self, name: &str, span: Span) -> Use {
        let value = self.func.values.append(
            Value {
                name: name.to_string(),
                decl: DeclType {
                    dtype: DType::Fp32,
                    dims: Vec::new(),
                },
                ty_span: span,
                def: ValueDef::Error,
            },
            span,
        );
        Use { value, span }
    }

    fn literal(&mut self, literal: ir::Literal, ty_span: Span, span: Span) -> Use {
        let decl = DeclType::from(literal.ty().clone());
        let value = self.func.values.append(
            Value {
                name: String::new(),
                decl,
                ty_span,
                def: ValueDef::Literal(literal),
            },
            span,
        );
        Use { value, span }
    }
}

/// Whether an ast type is a rank-0 `string` (either dialect).
fn is_string_scalar(ty: &ast::Type) -> bool {
    match ty {
        ast::Type::Scalar { dtype, .. } => *dtype == DType::String,
        ast::Type::Tensor { dtype, dims, .. } => *dtype == DType::String && dims.is_empty(),
        _ => false,
    }
}

/// The string of a `string("...")` / `tensor<string, []>("...")` literal.
fn string_literal(value: &ast::ArgValue) -> Option<(&str, Span)> {
    match value {
        ast::ArgValue::Single(ast::Value::Literal(literal)) if is_string_scalar(&literal.ty) => {
            match &literal.payload {
                ast::Payload::Scalar(ast::Scalar::Str(string)) => {
                    Some((&string.value, literal.span))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn arg_value_span(value: &ast::ArgValue) -> Span {
    match value {
        ast::ArgValue::Single(single) => single.span(),
        ast::ArgValue::Tuple { span, .. } => *span,
    }
}

/// An element of a literal after checking, before packing.
enum Element {
    Float(f64),
    Int(i128),
    Str(String),
}

impl Lowerer<'_> {
    fn push(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    fn error(&mut self, code: DiagCode, span: Span, message: String) {
        self.diags.push(Diagnostic::new(code, span, message));
    }

    fn source_text(&self, span: Span) -> &str {
        self.source.get(span.range()).unwrap_or("")
    }

    // ---- program ------------------------------------------------------------------------

    fn document(&mut self, document: &ast::Document) -> ir::Program {
        let version = match &document.version {
            Some(number) => {
                self.check_version(number);
                number.text.clone()
            }
            None => String::new(),
        };
        let mut build_info = Vec::new();
        match &document.attrs {
            Some(attrs) => self.program_attrs(attrs, &mut build_info),
            None if self.strict && document.version.is_some() => self.error(
                DiagCode::E010,
                document.program_span,
                "strict mode requires a `[buildInfo = ...]` block after the program header".into(),
            ),
            None => {}
        }
        let mut functions = Arena::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for func in &document.functions {
            if !func.name.text.is_empty() {
                if let Some(&first) = seen.get(func.name.text.as_str()) {
                    self.push(
                        Diagnostic::new(
                            DiagCode::E104,
                            func.name.span,
                            format!("duplicate function name `{}`", func.name.text),
                        )
                        .with_secondary(first, "first defined here"),
                    );
                } else {
                    seen.insert(&func.name.text, func.name.span);
                }
            }
            let lowered = self.function(func);
            functions.append(lowered, func.name.span);
        }
        ir::Program {
            version,
            build_info,
            functions,
        }
    }

    fn check_version(&mut self, number: &ast::Number) {
        if number.kind == ast::NumberKind::Bad {
            return;
        }
        let known = ["1.0", "1.1", "1.2", "1.3"];
        let value = parse_float(&number.text);
        let is_known =
            value.is_some_and(|value| known.iter().any(|k| k.parse::<f64>().ok() == Some(value)));
        if !is_known {
            self.error(
                DiagCode::E021,
                number.span,
                format!(
                    "unsupported program version `{}` (expected 1.0 to 1.3)",
                    number.text
                ),
            );
        } else if self.strict && number.kind == ast::NumberKind::Int {
            self.push(
                Diagnostic::new(
                    DiagCode::E021,
                    number.span,
                    format!(
                        "program version `{}` is not accepted in strict mode; write `1.0`",
                        number.text
                    ),
                )
                .with_severity(Severity::Error),
            );
        }
    }

    fn program_attrs(&mut self, attrs: &[ast::Arg], build_info: &mut Vec<(String, String)>) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for attr in attrs {
            if let Some(&first) = seen.get(attr.name.text.as_str()) {
                self.push(
                    Diagnostic::new(
                        DiagCode::E114,
                        attr.name.span,
                        format!("program attribute `{}` is given twice", attr.name.text),
                    )
                    .with_secondary(first, "first given here"),
                );
                continue;
            }
            seen.insert(&attr.name.text, attr.name.span);
            if attr.name.text == "buildInfo" {
                self.build_info(&attr.value, build_info);
            }
            // Other program attributes carry no meaning here and are ignored.
        }
    }

    fn build_info(&mut self, value: &ast::ArgValue, build_info: &mut Vec<(String, String)>) {
        let literal = match value {
            ast::ArgValue::Single(ast::Value::Literal(literal)) => literal,
            ast::ArgValue::Single(ast::Value::Error(_)) => return,
            other => {
                self.error(
                    DiagCode::E141,
                    arg_value_span(other),
                    "`buildInfo` must be a `dict<string, string>` literal".into(),
                );
                return;
            }
        };
        let types_ok = match &literal.ty {
            ast::Type::Dict { key, value, .. } => is_string_scalar(key) && is_string_scalar(value),
            _ => false,
        };
        if !types_ok {
            self.error(
                DiagCode::E141,
                literal.ty.span(),
                "`buildInfo` must be a `dict<string, string>` literal".into(),
            );
            return;
        }
        let entries: &[(ast::Scalar, ast::Scalar)] = match &literal.payload {
            ast::Payload::Dict { entries, .. } => entries,
            ast::Payload::Empty(_) => &[],
            other => {
                let span = match other {
                    ast::Payload::Scalar(scalar) => scalar.span(),
                    ast::Payload::List { span, .. }
                    | ast::Payload::Blob { span, .. }
                    | ast::Payload::Empty(span)
                    | ast::Payload::Unsupported(span)
                    | ast::Payload::Error(span)
                    | ast::Payload::Dict { span, .. } => *span,
                };
                self.error(
                    DiagCode::E141,
                    span,
                    "expected dictionary entries `{{\"key\", \"value\"}, ...}`".into(),
                );
                return;
            }
        };
        for (key, value) in entries {
            match (key, value) {
                (ast::Scalar::Str(key), ast::Scalar::Str(value)) => {
                    build_info.push((key.value.clone(), value.value.clone()));
                }
                (ast::Scalar::Str(_), other) | (other, _) => {
                    let found = self.source_text(other.span()).to_string();
                    self.error(
                        DiagCode::E141,
                        other.span(),
                        format!("`buildInfo` keys and values must be strings, found `{found}`"),
                    );
                }
            }
        }
    }

    // ---- functions ----------------------------------------------------------------------

    fn opset(&mut self, tag: Option<&ast::Ident>) -> Opset {
        let Some(tag) = tag else { return Opset::Ios18 };
        match Opset::from_tag(&tag.text) {
            Some((opset, approximate)) => {
                if approximate {
                    self.push(
                        Diagnostic::new(
                            DiagCode::E020,
                            tag.span,
                            format!("opset `{}` is not modelled; reading it as ios18", tag.text),
                        )
                        .with_severity(if self.strict {
                            Severity::Error
                        } else {
                            Severity::Warning
                        }),
                    );
                } else if self.strict && tag.text.starts_with("CoreML") {
                    self.error(
                        DiagCode::E020,
                        tag.span,
                        format!(
                            "opset alias `{}` is not accepted in strict mode; write `{}`",
                            tag.text,
                            opset.name()
                        ),
                    );
                }
                opset
            }
            None => {
                self.error(
                    DiagCode::E020,
                    tag.span,
                    format!(
                        "unknown opset `{}` (expected ios15, ios16, ios17 or ios18)",
                        tag.text
                    ),
                );
                Opset::Ios18
            }
        }
    }

    fn function(&mut self, func: &ast::Function) -> ir::Function {
        let opset = self.opset(func.opset.as_ref());
        let mut cx = FuncCx {
            func: ir::Function {
                name: func.name.text.clone(),
                opset,
                params: Vec::new(),
                values: Arena::new(),
                ops: Arena::new(),
                outputs: Vec::new(),
            },
            scope: HashMap::new(),
            defined_later: HashMap::new(),
            op_names: HashMap::new(),
        };
        for stmt in &func.body {
            for result in &stmt.results {
                cx.defined_later
                    .entry(result.name.text.clone())
                    .or_insert(result.name.span);
            }
        }
        for (index, param) in func.params.iter().enumerate() {
            self.param(&mut cx, index, param);
        }
        for stmt in &func.body {
            self.stmt(&mut cx, stmt);
        }
        for output in &func.outputs {
            let used = match cx.scope.get(&output.text) {
                Some(&(value, _)) => Use {
                    value,
                    span: output.span,
                },
                None => {
                    self.error(
                        DiagCode::E103,
                        output.span,
                        format!(
                            "output `{}` is not defined in function `{}`",
                            output.text, func.name.text
                        ),
                    );
                    cx.placeholder(&output.text, output.span)
                }
            };
            cx.func.outputs.push(used);
        }
        cx.func
    }

    fn param(&mut self, cx: &mut FuncCx, index: usize, param: &ast::Param) {
        let name = &param.name;
        let decl = self.decl_type(&param.ty);
        if let Some(decl) = &decl {
            for dim in param_dims(&param.ty) {
                match dim {
                    ast::Dim::Unknown(span) => self.error(
                        DiagCode::E171,
                        span,
                        format!("parameter `{}` has an unknown dimension `?`; inputs need static shapes", name.text),
                    ),
                    ast::Dim::Known(0, span) => self.error(
                        DiagCode::E171,
                        span,
                        format!("parameter `{}` has a zero-sized dimension", name.text),
                    ),
                    ast::Dim::Known(..) => {}
                }
            }
            if decl.dims.is_empty() {
                self.error(
                    DiagCode::W172,
                    param.ty.span(),
                    format!("parameter `{}` is rank 0 (`{}`); scalar inputs are not supported by coremltools", name.text, decl),
                );
            }
        }
        let def = match decl {
            Some(_) => ValueDef::Param {
                index: index as u32,
            },
            None => ValueDef::Error,
        };
        let decl = decl.unwrap_or(DeclType {
            dtype: DType::Fp32,
            dims: Vec::new(),
        });
        let value = cx.func.values.append(
            Value {
                name: name.text.clone(),
                decl,
                ty_span: param.ty.span(),
                def,
            },
            name.span,
        );
        cx.func.params.push(value);
        if let Some(&(_, first)) = cx.scope.get(&name.text) {
            self.push(
                Diagnostic::new(
                    DiagCode::E170,
                    name.span,
                    format!("duplicate parameter name `{}`", name.text),
                )
                .with_secondary(first, "first declared here"),
            );
        } else {
            cx.scope.insert(name.text.clone(), (value, name.span));
        }
    }

    /// The declared type of a parameter or result; `None` (reported unless already reported)
    /// for types the IR cannot hold.
    fn decl_type(&mut self, ty: &ast::Type) -> Option<DeclType> {
        match ty {
            ast::Type::Tensor { dtype, dims, .. } => Some(DeclType {
                dtype: *dtype,
                dims: dims
                    .iter()
                    .map(|dim| match dim {
                        ast::Dim::Known(size, _) => ir::Dim::Known(*size),
                        ast::Dim::Unknown(_) => ir::Dim::Unknown,
                    })
                    .collect(),
            }),
            ast::Type::Scalar { dtype, .. } => Some(DeclType {
                dtype: *dtype,
                dims: Vec::new(),
            }),
            ast::Type::Dict { span, .. } => {
                self.error(
                    DiagCode::E199,
                    *span,
                    "`dict` types are only supported in program attributes".into(),
                );
                None
            }
            ast::Type::Unsupported { what, span } => {
                self.error(
                    DiagCode::E199,
                    *span,
                    format!("`{what}` types are not supported"),
                );
                None
            }
            ast::Type::Error(_) => None,
        }
    }

    // ---- statements ---------------------------------------------------------------------

    fn stmt(&mut self, cx: &mut FuncCx, stmt: &ast::Stmt) {
        let mut args: Vec<ir::Arg> = Vec::new();
        let mut given: HashMap<&str, Span> = HashMap::new();
        let mut name_attr: Option<String> = None;
        let all_args = stmt
            .args
            .iter()
            .map(|arg| (arg, false))
            .chain(stmt.attrs.iter().map(|arg| (arg, true)));
        for (arg, in_attrs) in all_args {
            let duplicate = given.get(arg.name.text.as_str()).copied();
            if let Some(first) = duplicate {
                self.push(
                    Diagnostic::new(
                        DiagCode::E114,
                        arg.name.span,
                        format!("argument `{}` is given twice", arg.name.text),
                    )
                    .with_secondary(first, "first given here"),
                );
            } else {
                given.insert(&arg.name.text, arg.name.span);
            }
            if in_attrs && arg.name.text == "name" {
                // In a statement cut short by a syntax error the value may be a fragment.
                let name = if stmt.broken {
                    None
                } else {
                    self.name_attr(cx, &arg.value)
                };
                if duplicate.is_none() {
                    name_attr = name;
                }
                continue;
            }
            let value = self.arg_value(cx, &arg.value);
            if duplicate.is_none() {
                args.push(ir::Arg {
                    name: arg.name.text.clone(),
                    name_span: arg.name.span,
                    value,
                    in_attrs,
                });
            }
        }

        let kind = match &stmt.op {
            Some(op) => {
                let kind = OpKind::from_name(&op.text);
                if kind.is_none() {
                    self.error(
                        DiagCode::E110,
                        op.span,
                        format!("unknown op type `{}`", op.text),
                    );
                }
                kind
            }
            None => None,
        };
        let decls: Vec<Option<DeclType>> = stmt
            .results
            .iter()
            .map(|result| self.decl_type(&result.ty))
            .collect();
        let op_span = stmt.op.as_ref().map_or(stmt.span, |op| op.span);
        let lowered_kind = match kind {
            Some(kind) if !stmt.broken && decls.iter().all(Option::is_some) => Some(kind),
            _ => None,
        };
        if let Some(kind) = lowered_kind
            && self.strict
            && name_attr.is_none()
        {
            self.error(
                DiagCode::E010,
                op_span,
                format!(
                    "op `{}` has no `name` attribute (required in strict mode)",
                    kind.name()
                ),
            );
        }
        let op_handle: Handle<ir::Op> = Handle::from_index(cx.func.ops.len());
        let mut results = Vec::with_capacity(stmt.results.len());
        for (index, (result, decl)) in stmt.results.iter().zip(decls).enumerate() {
            let def = match lowered_kind {
                Some(_) => ValueDef::Result {
                    op: op_handle,
                    index: index as u32,
                },
                None => ValueDef::Error,
            };
            let decl = decl.unwrap_or(DeclType {
                dtype: DType::Fp32,
                dims: Vec::new(),
            });
            let value = cx.func.values.append(
                Value {
                    name: result.name.text.clone(),
                    decl,
                    ty_span: result.ty.span(),
                    def,
                },
                result.name.span,
            );
            results.push(value);
            self.define(cx, &result.name, value);
        }
        if let Some(kind) = lowered_kind {
            let handle = cx.func.ops.append(
                ir::Op {
                    kind,
                    name_attr,
                    args,
                    results,
                },
                op_span,
            );
            debug_assert_eq!(
                handle, op_handle,
                "op handle predicted before appending the results"
            );
        }
    }

    fn define(&mut self, cx: &mut FuncCx, name: &ast::Ident, value: Handle<Value>) {
        if let Some(&(_, first)) = cx.scope.get(&name.text) {
            self.push(
                Diagnostic::new(
                    DiagCode::E101,
                    name.span,
                    format!("redefinition of `{}`", name.text),
                )
                .with_secondary(first, "first defined here"),
            );
        } else {
            cx.scope.insert(name.text.clone(), (value, name.span));
        }
    }

    fn name_attr(&mut self, cx: &mut FuncCx, value: &ast::ArgValue) -> Option<String> {
        if let ast::ArgValue::Single(ast::Value::Error(_)) = value {
            return None;
        }
        let Some((name, span)) = string_literal(value) else {
            self.error(
                DiagCode::E010,
                arg_value_span(value),
                "the `name` attribute must be a string literal such as `string(\"x\")`".into(),
            );
            return None;
        };
        if let Some(&first) = cx.op_names.get(name) {
            self.push(
                Diagnostic::new(
                    DiagCode::W182,
                    span,
                    format!("op name \"{name}\" is used more than once in this function"),
                )
                .with_secondary(first, "first used here"),
            );
        } else {
            cx.op_names.insert(name.to_string(), span);
        }
        Some(name.to_string())
    }

    fn arg_value(&mut self, cx: &mut FuncCx, value: &ast::ArgValue) -> ir::ArgValue {
        match value {
            ast::ArgValue::Single(single) => ir::ArgValue::Single(self.value(cx, single)),
            ast::ArgValue::Tuple { items, .. } => {
                ir::ArgValue::Tuple(items.iter().map(|item| self.value(cx, item)).collect())
            }
        }
    }

    fn value(&mut self, cx: &mut FuncCx, value: &ast::Value) -> Use {
        match value {
            ast::Value::Ref(ident) => self.reference(cx, ident),
            ast::Value::Literal(literal) => match self.literal(literal) {
                Some(lowered) => cx.literal(lowered, literal.ty.span(), literal.span),
                None => {
                    let text = self.source_text(literal.span).to_string();
                    cx.placeholder(&text, literal.span)
                }
            },
            ast::Value::BareBool { value, span } => {
                if self.strict {
                    self.error(
                        DiagCode::E143,
                        *span,
                        format!(
                            "bare `{value}` is not accepted in strict mode; write `bool({value})`"
                        ),
                    );
                    cx.placeholder(if *value { "true" } else { "false" }, *span)
                } else {
                    cx.literal(
                        ir::Literal::Tensor(Tensor::bool_scalar(*value)),
                        *span,
                        *span,
                    )
                }
            }
            ast::Value::BareNumber(number) => {
                if number.kind != ast::NumberKind::Bad {
                    let example = if number.kind == ast::NumberKind::Int {
                        "int32"
                    } else {
                        "fp16"
                    };
                    self.error(
                        DiagCode::E143,
                        number.span,
                        format!(
                            "untyped number `{}` where a typed value is needed; write e.g. `{example}({})`",
                            number.text, number.text
                        ),
                    );
                }
                cx.placeholder(&number.text, number.span)
            }
            ast::Value::BareString(string) => {
                let mut quoted = String::new();
                quote_string(&string.value, &mut quoted);
                self.error(
                    DiagCode::E143,
                    string.span,
                    format!("untyped string {quoted} where a typed value is needed; write `string({quoted})`"),
                );
                cx.placeholder(&quoted, string.span)
            }
            ast::Value::Error(span) => cx.placeholder("", *span),
        }
    }

    fn reference(&mut self, cx: &mut FuncCx, ident: &ast::Ident) -> Use {
        if let Some(&(value, _)) = cx.scope.get(&ident.text) {
            return Use {
                value,
                span: ident.span,
            };
        }
        if let Some(&defined) = cx.defined_later.get(&ident.text) {
            self.push(
                Diagnostic::new(
                    DiagCode::E102,
                    ident.span,
                    format!("`{}` is used before its definition", ident.text),
                )
                .with_secondary(defined, "defined here"),
            );
        } else {
            self.error(
                DiagCode::E100,
                ident.span,
                format!("undefined variable `{}`", ident.text),
            );
        }
        cx.placeholder(&ident.text, ident.span)
    }

    // ---- literals -----------------------------------------------------------------------

    /// The static type of a literal; `None` (reported) for types a literal cannot have.
    fn literal_type(&mut self, ty: &ast::Type) -> Option<TensorType> {
        match ty {
            ast::Type::Tensor { dtype, dims, .. } => {
                let mut shape = Vec::with_capacity(dims.len());
                for dim in dims {
                    match dim {
                        ast::Dim::Known(size, _) => shape.push(*size),
                        ast::Dim::Unknown(span) => {
                            self.error(
                                DiagCode::E171,
                                *span,
                                "a literal's type needs a static shape, not `?`".into(),
                            );
                            return None;
                        }
                    }
                }
                Some(TensorType::new(*dtype, shape))
            }
            ast::Type::Scalar { dtype, .. } => Some(TensorType::scalar(*dtype)),
            ast::Type::Dict { span, .. } => {
                self.error(
                    DiagCode::E199,
                    *span,
                    "`dict` literals are only supported in program attributes".into(),
                );
                None
            }
            ast::Type::Unsupported { what, span } => {
                self.error(
                    DiagCode::E199,
                    *span,
                    format!("`{what}` literals are not supported"),
                );
                None
            }
            ast::Type::Error(_) => None,
        }
    }

    /// A literal's IR form; `None` when something was wrong (always reported).
    fn literal(&mut self, literal: &ast::Literal) -> Option<ir::Literal> {
        let ty = self.literal_type(&literal.ty)?;
        let numel = ty.numel();
        let items: Vec<&ast::Scalar> = match &literal.payload {
            ast::Payload::Blob { args, span } => {
                return self.blob(ty, args, *span).map(ir::Literal::Blob);
            }
            ast::Payload::Scalar(scalar) => {
                if ty.rank() > 0 {
                    if numel != 1 {
                        self.error(
                            DiagCode::E140,
                            scalar.span(),
                            format!("`{ty}` needs {numel} elements but a single scalar is given"),
                        );
                        return None;
                    }
                    let text = self.source_text(scalar.span()).to_string();
                    self.push(
                        Diagnostic::new(
                            DiagCode::E140,
                            scalar.span(),
                            format!("one-element tensor literal written without brackets; write `[{text}]`"),
                        )
                        .with_severity(if self.strict { Severity::Error } else { Severity::Warning }),
                    );
                    if self.strict {
                        return None;
                    }
                }
                vec![scalar]
            }
            ast::Payload::List { items, span } => {
                if items.len() != numel {
                    self.error(
                        DiagCode::E140,
                        *span,
                        format!(
                            "tensor literal has {} elements but `{ty}` needs {numel}",
                            items.len()
                        ),
                    );
                    return None;
                }
                items.iter().collect()
            }
            ast::Payload::Empty(span) => {
                if numel != 0 {
                    self.error(
                        DiagCode::E140,
                        *span,
                        format!("empty literal but `{ty}` needs {numel} elements"),
                    );
                    return None;
                }
                Vec::new()
            }
            ast::Payload::Dict { span, .. } => {
                self.error(
                    DiagCode::E141,
                    *span,
                    format!("a dictionary payload is not valid for `{ty}`"),
                );
                return None;
            }
            ast::Payload::Unsupported(span) => {
                self.error(
                    DiagCode::E199,
                    *span,
                    "tuple payloads are not supported".into(),
                );
                return None;
            }
            ast::Payload::Error(_) => return None,
        };
        self.elements(ty, &items).map(ir::Literal::Tensor)
    }

    fn elements(&mut self, ty: TensorType, items: &[&ast::Scalar]) -> Option<Tensor> {
        let dtype = ty.dtype;
        let mut elements = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for item in items {
            match self.element(dtype, item) {
                Some(element) => elements.push(element),
                None => all_ok = false,
            }
        }
        if !all_ok {
            return None;
        }
        let built = if dtype == DType::String {
            let strings = elements
                .into_iter()
                .map(|element| match element {
                    Element::Str(string) => string,
                    Element::Float(_) | Element::Int(_) => String::new(),
                })
                .collect();
            Tensor::strings(ty.shape.clone(), strings)
        } else if dtype.is_float() {
            let values: Vec<f64> = elements
                .iter()
                .map(|element| match element {
                    Element::Float(value) => *value,
                    Element::Int(value) => *value as f64,
                    Element::Str(_) => 0.0,
                })
                .collect();
            Tensor::from_f64s(ty.clone(), &values)
        } else {
            let values: Vec<i128> = elements
                .iter()
                .map(|element| match element {
                    Element::Int(value) => *value,
                    Element::Float(_) | Element::Str(_) => 0,
                })
                .collect();
            match dtype.size_bytes() {
                Some(_) => {
                    let wrapped: Vec<i64> = values.iter().map(|&value| value as i64).collect();
                    Tensor::from_i64s(ty.clone(), &wrapped)
                }
                None => Tensor::from_bytes(ty.clone(), pack_sub_byte(dtype, &values)),
            }
        };
        match built {
            Ok(tensor) => Some(tensor),
            Err(err) => {
                let span = items.first().map_or(Span::UNDEFINED, |item| item.span());
                self.error(
                    DiagCode::E141,
                    span,
                    format!("cannot build a `{ty}` literal: {err}"),
                );
                None
            }
        }
    }

    /// One checked element of a literal of `dtype` (`None`: reported, or a malformed number
    /// already reported by the lexer).
    fn element(&mut self, dtype: DType, item: &ast::Scalar) -> Option<Element> {
        let source = self.source;
        let found = || source.get(item.span().range()).unwrap_or("");
        let mismatch = |what: &str| format!("{what} for `{dtype}`, found `{}`", found());
        match dtype {
            DType::String => match item {
                ast::Scalar::Str(string) => Some(Element::Str(string.value.clone())),
                _ => {
                    self.error(DiagCode::E141, item.span(), mismatch("expected a string"));
                    None
                }
            },
            DType::Bool => match item {
                ast::Scalar::Word(word) if word.text == "true" => Some(Element::Int(1)),
                ast::Scalar::Word(word) if word.text == "false" => Some(Element::Int(0)),
                ast::Scalar::Number(number) if number.kind == ast::NumberKind::Bad => None,
                _ => {
                    self.error(
                        DiagCode::E141,
                        item.span(),
                        mismatch("expected `true` or `false`"),
                    );
                    None
                }
            },
            _ if dtype.is_float() => {
                let (value, spelled_inf) = match item {
                    ast::Scalar::Number(number) => match number.kind {
                        ast::NumberKind::Bad => return None,
                        _ => {
                            let unsigned = number.text.trim_start_matches(['+', '-']);
                            (parse_float(&number.text), is_special_float(unsigned))
                        }
                    },
                    ast::Scalar::Word(word) if is_special_float(&word.text) => {
                        (parse_float(&word.text), true)
                    }
                    _ => (None, false),
                };
                let Some(value) = value else {
                    self.error(DiagCode::E141, item.span(), mismatch("expected a number"));
                    return None;
                };
                let rounded = round_to_dtype(value, dtype);
                if rounded.is_infinite() && !spelled_inf {
                    self.error(
                        DiagCode::E142,
                        item.span(),
                        format!(
                            "`{}` overflows to {} in `{dtype}`",
                            found(),
                            if rounded < 0.0 { "-inf" } else { "inf" }
                        ),
                    );
                }
                Some(Element::Float(rounded))
            }
            _ => {
                let Some((lo, hi)) = dtype.int_range() else {
                    self.error(
                        DiagCode::E141,
                        item.span(),
                        format!("literals of `{dtype}` are not supported"),
                    );
                    return None;
                };
                match item {
                    ast::Scalar::Number(number) => match number.kind {
                        ast::NumberKind::Bad => None,
                        ast::NumberKind::Float => {
                            self.error(
                                DiagCode::E141,
                                item.span(),
                                mismatch("expected an integer"),
                            );
                            None
                        }
                        ast::NumberKind::Int => match number.text.parse::<i128>() {
                            Ok(value) if (lo..=hi).contains(&value) => Some(Element::Int(value)),
                            _ => {
                                self.error(
                                    DiagCode::E141,
                                    item.span(),
                                    format!(
                                        "`{}` is out of range for `{dtype}` ({lo} to {hi})",
                                        found()
                                    ),
                                );
                                None
                            }
                        },
                    },
                    _ => {
                        self.error(DiagCode::E141, item.span(), mismatch("expected an integer"));
                        None
                    }
                }
            }
        }
    }

    // ---- BLOBFILE -----------------------------------------------------------------------

    fn blob(&mut self, ty: TensorType, args: &[ast::Arg], span: Span) -> Option<BlobRef> {
        let mut path: Option<(String, Span)> = None;
        let mut offset: Option<(u64, Span)> = None;
        let mut all_ok = true;
        for arg in args {
            match arg.name.text.as_str() {
                "path" | "offset" => {
                    let is_path = arg.name.text == "path";
                    if (is_path && path.is_some()) || (!is_path && offset.is_some()) {
                        self.error(
                            DiagCode::E150,
                            arg.name.span,
                            format!("BLOBFILE argument `{}` is given twice", arg.name.text),
                        );
                        all_ok = false;
                        continue;
                    }
                    if is_path {
                        match self.blob_path(&arg.value) {
                            Some(found) => path = Some(found),
                            None => all_ok = false,
                        }
                    } else {
                        match self.blob_offset(&arg.value) {
                            Some(found) => offset = Some(found),
                            None => all_ok = false,
                        }
                    }
                }
                other => {
                    self.error(
                        DiagCode::E150,
                        arg.name.span,
                        format!("unexpected BLOBFILE argument `{other}` (BLOBFILE takes `path` and `offset`)"),
                    );
                    all_ok = false;
                }
            }
        }
        if ty.dtype == DType::String {
            self.error(
                DiagCode::E150,
                span,
                "a BLOBFILE cannot hold `string` elements".into(),
            );
            all_ok = false;
        }
        for (missing, what) in [(path.is_none(), "path"), (offset.is_none(), "offset")] {
            if missing && all_ok {
                self.error(
                    DiagCode::E150,
                    span,
                    format!("BLOBFILE is missing its `{what}` argument"),
                );
            }
        }
        let ((path, path_span), (offset, offset_span)) = (path?, offset?);
        if !all_ok {
            return None;
        }
        Some(BlobRef {
            ty,
            path,
            offset,
            path_span,
            offset_span,
        })
    }

    fn blob_path(&mut self, value: &ast::ArgValue) -> Option<(String, Span)> {
        if let Some((path, span)) = string_literal(value) {
            return Some((path.to_string(), span));
        }
        let found = self.source_text(arg_value_span(value)).to_string();
        self.error(
            DiagCode::E150,
            arg_value_span(value),
            format!("the BLOBFILE path must be a string literal such as `string(\"@model_path/w.bin\")`, found `{found}`"),
        );
        None
    }

    fn blob_offset(&mut self, value: &ast::ArgValue) -> Option<(u64, Span)> {
        if let ast::ArgValue::Single(ast::Value::Literal(literal)) = value {
            let dtype = match &literal.ty {
                ast::Type::Scalar { dtype, .. } => Some(*dtype),
                ast::Type::Tensor { dtype, dims, .. } if dims.is_empty() => Some(*dtype),
                _ => None,
            };
            let unsigned = matches!(
                dtype,
                Some(DType::Uint8 | DType::Uint16 | DType::Uint32 | DType::Uint64)
            );
            if let (true, ast::Payload::Scalar(ast::Scalar::Number(number))) =
                (unsigned, &literal.payload)
                && number.kind == ast::NumberKind::Int
            {
                let digits = number.text.strip_prefix('+').unwrap_or(&number.text);
                if let Ok(offset) = digits.parse::<u64>() {
                    return Some((offset, literal.span));
                }
            }
        }
        let found = self.source_text(arg_value_span(value)).to_string();
        self.error(
            DiagCode::E150,
            arg_value_span(value),
            format!("the BLOBFILE offset must be an unsigned integer literal such as `uint64(64)`, found `{found}`"),
        );
        None
    }
}

/// The written dims of a parameter type (empty for non-tensor types).
fn param_dims(ty: &ast::Type) -> Vec<ast::Dim> {
    match ty {
        ast::Type::Tensor { dims, .. } => dims.clone(),
        _ => Vec::new(),
    }
}

/// Packs sub-byte integers LSB-first (MILBlob layout), two's complement for `int4`.
fn pack_sub_byte(dtype: DType, values: &[i128]) -> Vec<u8> {
    let bits = dtype.bits();
    let mask = (1u128 << bits) - 1;
    let mut bytes = vec![0u8; (values.len() * bits).div_ceil(8)];
    for (idx, &value) in values.iter().enumerate() {
        let raw = (value as u128) & mask;
        for bit in 0..bits {
            if (raw >> bit) & 1 == 1 {
                let pos = idx * bits + bit;
                bytes[pos / 8] |= 1 << (pos % 8);
            }
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{ArgValue, Literal};

    fn codes(text: &str) -> Vec<&'static str> {
        parse(text)
            .1
            .iter()
            .map(|diag| diag.code.as_str())
            .collect()
    }

    fn wrap(body: &str) -> String {
        format!(
            "program(1.3)\n{{\n    func main<ios18>(tensor<fp16, [1, 4]> x) {{\n{body}\n    }} -> (x);\n}}\n"
        )
    }

    fn const_value(text: &str) -> Tensor {
        let (program, diags) = parse(text);
        assert!(!crate::diag::has_errors(&diags), "{diags:?}");
        let func = &program.functions[program.entry().unwrap()];
        let (_, op) = func.ops.iter().next().unwrap();
        let ArgValue::Single(used) = &op.arg("val").unwrap().value else {
            panic!("tuple")
        };
        match &func.values[used.value].def {
            ValueDef::Literal(Literal::Tensor(tensor)) => tensor.clone(),
            other => panic!("not a tensor literal: {other:?}"),
        }
    }

    #[test]
    fn rounding_to_fp16_is_correct_past_half_truncation() {
        // 1 + 2^-11 + 2^-40 is just above the midpoint between 1 and 1 + 2^-10: rounds up.
        let value = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(round_to_dtype(value, DType::Fp16), 1.0 + 2f64.powi(-10));
        assert_eq!(round_to_dtype(1.0 + 2f64.powi(-11), DType::Fp16), 1.0);
        assert_eq!(round_to_dtype(65519.0, DType::Fp16), 65504.0);
        assert_eq!(round_to_dtype(65520.0, DType::Fp16), f64::INFINITY);
        assert_eq!(round_to_dtype(1e-5, DType::Fp16), 168.0 * 2f64.powi(-24));
        assert_eq!(round_to_dtype(2f64.powi(-25), DType::Fp16), 0.0);
        assert_eq!(
            round_to_dtype(2f64.powi(-25) * 1.5, DType::Fp16),
            2f64.powi(-24)
        );
        assert_eq!(
            round_to_dtype(-0.0, DType::Fp16).to_bits(),
            (-0.0f64).to_bits()
        );
        assert_eq!(round_to_dtype(1.0 + 2f64.powi(-8), DType::Bf16), 1.0);
        assert_eq!(
            round_to_dtype(1.0 + 3.0 * 2f64.powi(-8), DType::Bf16),
            1.0 + 2f64.powi(-6)
        );
    }

    #[test]
    fn literal_values() {
        let fp16 = const_value(&wrap(
            "        fp16 a = const()[name = string(\"a\"), val = fp16(-0x1.4p+3)];",
        ));
        assert_eq!(fp16.to_f64_vec().unwrap(), vec![-10.0]);
        let ints = const_value(&wrap(
            "        tensor<int32, [4]> a = const()[name = string(\"a\"), val = tensor<int32, [4]>([0, -1, 2147483647, +3])];",
        ));
        assert_eq!(ints.to_i64_vec().unwrap(), vec![0, -1, 2147483647, 3]);
        let mask = const_value(&wrap(
            "        tensor<fp16, [1, 1, 2, 2]> m = const()[name = string(\"m\"), val = tensor<fp16, [1, 1, 2, 2]>([0, -65504, 0.125000, 1e-05])];",
        ));
        assert_eq!(
            mask.to_f64_vec().unwrap(),
            vec![0.0, -65504.0, 0.125, 168.0 * 2f64.powi(-24)]
        );
        let big = const_value(&wrap(
            "        uint64 o = const()[name = string(\"o\"), val = uint64(18446744073709551615)];",
        ));
        assert_eq!(big.bytes().unwrap(), &[0xff; 8]);
        let nibbles = const_value(&wrap(
            "        tensor<int4, [3]> q = const()[name = string(\"q\"), val = tensor<int4, [3]>([-1, 7, -8])];",
        ));
        assert_eq!(nibbles.bytes().unwrap(), &[0x7f, 0x08]);
        let strings = const_value(&wrap(
            "        string s = const()[name = string(\"s\"), val = tensor<string, []>(\"valid\")];",
        ));
        assert_eq!(strings.as_str(), Some("valid"));
        let inf = const_value(&wrap(
            "        fp32 i = const()[name = string(\"i\"), val = fp32(-inf)];",
        ));
        assert_eq!(inf.to_f64_vec().unwrap(), vec![f64::NEG_INFINITY]);
    }

    #[test]
    fn literal_diagnostics() {
        let cases: &[(&str, &[&str])] = &[
            (
                "tensor<int32, [3]> a = const()[name = string(\"a\"), val = tensor<int32, [3]>([1, 2])];",
                &["E140"],
            ),
            (
                "int8 a = const()[name = string(\"a\"), val = int8(128)];",
                &["E141"],
            ),
            (
                "int32 a = const()[name = string(\"a\"), val = int32(1.5)];",
                &["E141"],
            ),
            (
                "bool a = const()[name = string(\"a\"), val = bool(1)];",
                &["E141"],
            ),
            (
                "fp16 a = const()[name = string(\"a\"), val = fp16(\"x\")];",
                &["E141"],
            ),
            (
                "fp16 a = const()[name = string(\"a\"), val = fp16(70000)];",
                &["E142"],
            ),
            (
                "tensor<int32, [1]> a = const()[name = string(\"a\"), val = tensor<int32, [1]>(-1)];",
                &["E140"],
            ),
            (
                "tensor<fp16, [1, 4]> a = mul(x = x, y = 2)[name = string(\"a\")];",
                &["E143"],
            ),
            (
                "tensor<fp16, [1, 4]> a = foo(x = x)[name = string(\"a\")];",
                &["E110"],
            ),
            (
                "tensor<fp16, [1, 4]> a = relu(x = x, x = x)[name = string(\"a\")];",
                &["E114"],
            ),
            (
                "tensor<fp16, [1, 4]> a = relu(x = q)[name = string(\"a\")];",
                &["E100"],
            ),
            (
                "tensor<fp16, [2]> w = const()[name = string(\"w\"), val = tensor<fp16, [2]>(BLOBFILE(path = string(\"w.bin\")))];",
                &["E150"],
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(&codes(&wrap(body)), expected, "{body}");
        }
    }

    #[test]
    fn names_resolve_with_use_before_definition_and_redefinition() {
        let text = wrap(
            "        tensor<fp16, [1, 4]> a = relu(x = b)[name = string(\"a\")];\n        tensor<fp16, [1, 4]> b = relu(x = x)[name = string(\"b\")];\n        tensor<fp16, [1, 4]> b = relu(x = x)[name = string(\"b\")];",
        );
        let (program, diags) = parse(&text);
        let got: Vec<_> = diags.iter().map(|diag| diag.code.as_str()).collect();
        assert_eq!(got, vec!["E102", "E101", "W182"]);
        assert_eq!(diags[0].secondary[0].message, "defined here");
        let func = &program.functions[program.entry().unwrap()];
        assert_eq!(func.ops.len(), 3);
        let b = func.value_by_name("b").unwrap();
        assert!(
            matches!(func.values[b].def, ValueDef::Error),
            "the placeholder for the early use comes first"
        );
    }

    #[test]
    fn unknown_op_results_do_not_cascade() {
        let text = wrap(
            "        tensor<fp16, [1, 4]> a = frobnicate(x = x)[name = string(\"a\")];\n        tensor<fp16, [1, 4]> b = relu(x = a)[name = string(\"b\")];",
        );
        let (program, diags) = parse(&text);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, DiagCode::E110);
        let func = &program.functions[program.entry().unwrap()];
        assert_eq!(func.ops.len(), 1);
        assert!(matches!(
            func.values[func.value_by_name("a").unwrap()].def,
            ValueDef::Error
        ));
    }

    #[test]
    fn attributes_become_args_in_attrs() {
        let text = wrap(
            "        tensor<fp16, [2]> w = constexpr_affine_dequantize()[axis = int32(0), name = string(\"w\"), quantized_data = tensor<int8, [2]>([1, -1]), scale = fp16(0x1p-4), zero_point = int8(0)];",
        );
        let (program, diags) = parse(&text);
        assert!(diags.is_empty(), "{diags:?}");
        let func = &program.functions[program.entry().unwrap()];
        let (_, op) = func.ops.iter().next().unwrap();
        assert_eq!(op.kind, OpKind::ConstexprAffineDequantize);
        assert_eq!(op.name_attr.as_deref(), Some("w"));
        let names: Vec<_> = op
            .args
            .iter()
            .map(|arg| (arg.name.as_str(), arg.in_attrs))
            .collect();
        assert_eq!(
            names,
            [
                ("axis", true),
                ("quantized_data", true),
                ("scale", true),
                ("zero_point", true)
            ]
        );
    }

    #[test]
    fn strict_mode_rejects_leniencies() {
        let text = "program(1)\n{\n    func main<CoreML8>(tensor<fp16, [1, 4]> x) {\n        tensor<fp16, [1, 4]> a = matmul(x = x, y = x, transpose_y = true);\n    } -> (a);\n}\n";
        assert!(!crate::diag::has_errors(&parse(text).1));
        let strict = parse_with(
            text,
            &ParseOptions {
                strict_syntax: true,
            },
        )
        .1;
        let got: Vec<_> = strict.iter().map(|diag| diag.code.as_str()).collect();
        assert_eq!(got, vec!["E010", "E021", "E020", "E010", "E143"]);
        assert!(strict.iter().all(Diagnostic::is_error));
    }

    #[test]
    fn huge_hex_exponents_and_overflowing_ints() {
        let text = wrap(
            "        fp32 a = const()[name = string(\"a\"), val = fp32(0x1p99999999999999999999)];\n        int64 b = const()[name = string(\"b\"), val = int64(99999999999999999999999999999999999999999)];",
        );
        let got = codes(&text);
        assert_eq!(got, vec!["E142", "E141"]);
    }
}
