//! Type inference and constant materialisation: runs every op's rule (in [`crate::ops`]) in
//! textual order and records the results in side tables.
//!
//! Per function:
//!
//! 1. parameters get their declared type; a `?` or zero dimension is E171 (static shapes are
//!    required), and the parameter becomes unknown;
//! 2. inline literals get their own type and are const (constness rule 1); BLOBFILE literals are
//!    loaded through the caller's [`crate::facts::BlobSource`] and decoded by
//!    [`crate::blob::read_blob`] (E150–E158, W159 at the literal);
//! 3. each op is checked ([`crate::ops`]); on success its results get the inferred types, which
//!    must equal the declared ones (E130; E131 for a wrong result count), and its results are
//!    const when the op is `const`, `constexpr_*`, `dequantize` of consts (rules 2 and 3,
//!    materialised here), or, outside strict mode and with a [`crate::facts::ConstFolder`],
//!    any op whose inputs are all const (rule 4);
//! 4. an op that fails, or whose inputs are unknown, leaves its results unknown, so nothing
//!    downstream reports a cascade.

use crate::blob;
use crate::diag::{DiagCode, Diagnostic};
use crate::facts::{BlobLoadError, BlobSource};
use crate::ir::{
    BlobRef, DType, Dim, Function, Handle, HandleVec, Literal, OpKind, Program, Tensor, TensorType,
    Value, ValueDef,
};
use crate::ops::{self, CheckOptions, PartialView};
use crate::span::Span;
use crate::verify::VerifyOptions;
use std::collections::HashMap;
use std::sync::Arc;

/// What inference learned about one function. Entries are `None` where a value is unknown
/// (its definition failed) or not const.
#[derive(Clone, Debug)]
pub struct InferredFacts {
    /// Inferred type of each value.
    pub types: HandleVec<Value, Option<TensorType>>,
    /// Constant value of each const value.
    pub consts: HandleVec<Value, Option<Arc<Tensor>>>,
}

impl InferredFacts {
    /// Whether every value has a known type.
    pub fn complete(&self) -> bool {
        self.types.iter().all(|(_, ty)| ty.is_some())
    }

    /// The verified form, if every type is known.
    pub fn into_function_facts(self) -> Option<crate::facts::FunctionFacts> {
        let len = self.types.len();
        let mut types = Vec::with_capacity(len);
        for (_, ty) in self.types.iter() {
            types.push(ty.clone()?);
        }
        let mut iter = types.into_iter();
        let types = HandleVec::from_fn(len, |_| iter.next().expect("length matches"));
        Some(crate::facts::FunctionFacts {
            types,
            consts: self.consts,
        })
    }
}

/// Runs inference over every function of `program`, pushing diagnostics to `diags`.
pub fn infer(
    program: &Program,
    options: &VerifyOptions,
    diags: &mut Vec<Diagnostic>,
) -> HandleVec<crate::ir::Function, InferredFacts> {
    let mut files = BlobFiles::new(options.blobs);
    let mut out = HandleVec::default();
    for (_, func) in program.functions.iter() {
        out.push(infer_function(func, options, &mut files, diags));
    }
    out
}

/// Blob files loaded once per compile, keyed by the path as written.
pub(crate) struct BlobFiles<'a> {
    source: &'a dyn BlobSource,
    files: HashMap<String, Result<Arc<[u8]>, BlobLoadError>>,
}

impl<'a> BlobFiles<'a> {
    pub(crate) fn new(source: &'a dyn BlobSource) -> BlobFiles<'a> {
        BlobFiles {
            source,
            files: HashMap::new(),
        }
    }

    fn load(&mut self, path: &str) -> Result<Arc<[u8]>, BlobLoadError> {
        if let Some(found) = self.files.get(path) {
            return found.clone();
        }
        let loaded = self.source.load(path);
        self.files.insert(path.to_string(), loaded.clone());
        loaded
    }
}

fn has_zero_dim(dims: &[Dim]) -> bool {
    dims.contains(&Dim::Known(0))
}

/// Infers one function.
pub(crate) fn infer_function(
    func: &Function,
    options: &VerifyOptions,
    files: &mut BlobFiles<'_>,
    diags: &mut Vec<Diagnostic>,
) -> InferredFacts {
    let n_values = func.values.len();
    let mut types: HandleVec<Value, Option<TensorType>> = HandleVec::filled(n_values, None);
    let mut consts: HandleVec<Value, Option<Arc<Tensor>>> = HandleVec::filled(n_values, None);

    for (handle, value) in func.values.iter() {
        match &value.def {
            ValueDef::Param { .. } => {
                let span = if value.ty_span.is_empty() {
                    func.values.span(handle)
                } else {
                    value.ty_span
                };
                if value.decl.dims.contains(&Dim::Unknown) {
                    diags.push(
                        Diagnostic::new(
                            DiagCode::E171,
                            span,
                            format!(
                                "parameter '{}' has an unknown dimension in {}; a static shape is required",
                                value.name, value.decl
                            ),
                        )
                        .with_label("'?' dimension"),
                    );
                } else if has_zero_dim(&value.decl.dims) {
                    diags.push(Diagnostic::new(
                        DiagCode::E171,
                        span,
                        format!(
                            "parameter '{}' has a zero-sized dimension in {}",
                            value.name, value.decl
                        ),
                    ));
                } else {
                    types[handle] = value.decl.to_tensor_type();
                }
            }
            ValueDef::Literal(literal) => {
                let ty = literal.ty();
                if ty.shape.contains(&0) {
                    diags.push(Diagnostic::new(
                        DiagCode::E171,
                        func.values.span(handle),
                        format!("literal of type {ty} has a zero-sized dimension"),
                    ));
                    continue;
                }
                match literal {
                    Literal::Tensor(tensor) => {
                        types[handle] = Some(tensor.ty.clone());
                        consts[handle] = Some(Arc::new(tensor.clone()));
                    }
                    Literal::Blob(blob_ref) => {
                        let span = func.values.span(handle);
                        if let Some(tensor) = load_blob(blob_ref, span, options, files, diags) {
                            types[handle] = Some(tensor.ty.clone());
                            consts[handle] = Some(Arc::new(tensor));
                        }
                    }
                }
            }
            ValueDef::Result { .. } => {
                if has_zero_dim(&value.decl.dims) {
                    diags.push(Diagnostic::new(
                        DiagCode::E171,
                        if value.ty_span.is_empty() {
                            func.values.span(handle)
                        } else {
                            value.ty_span
                        },
                        format!(
                            "'{}' is declared with a zero-sized dimension: {}",
                            value.name, value.decl
                        ),
                    ));
                }
            }
            ValueDef::Error => {}
        }
    }

    let check_options = CheckOptions {
        strict: options.strict,
        materialise: true,
    };
    for (handle, op) in func.ops.iter() {
        let outcome = {
            let view = PartialView {
                types: &types,
                consts: &consts,
            };
            ops::check(func, handle, &view, check_options)
        };
        let checked = match outcome {
            Ok(checked) => checked,
            Err(op_diags) => {
                diags.extend(op_diags);
                continue;
            }
        };
        diags.extend(checked.warnings.iter().cloned());
        if checked.types.len() != op.results.len() {
            diags.push(
                Diagnostic::new(
                    DiagCode::E131,
                    func.ops.span(handle),
                    format!(
                        "'{}' produces {} result{} but {} {} declared",
                        op.kind,
                        checked.types.len(),
                        if checked.types.len() == 1 { "" } else { "s" },
                        op.results.len(),
                        if op.results.len() == 1 { "is" } else { "are" }
                    ),
                )
                .with_label(format!(
                    "declare {} result{}",
                    checked.types.len(),
                    if checked.types.len() == 1 { "" } else { "s" }
                )),
            );
            continue;
        }
        for (&result, ty) in op.results.iter().zip(&checked.types) {
            let value = &func.values[result];
            if !has_zero_dim(&value.decl.dims) && !value.decl.matches(ty) {
                let span = if value.ty_span.is_empty() {
                    func.values.span(result)
                } else {
                    value.ty_span
                };
                diags.push(
                    Diagnostic::new(
                        DiagCode::E130,
                        span,
                        format!(
                            "'{}' result '{}' is declared as {} but '{}' infers {ty}",
                            op.kind, value.name, value.decl, op.kind
                        ),
                    )
                    .with_label(format!("inferred {ty}")),
                );
            }
            types[result] = Some(ty.clone());
        }
        if let Some(values) = checked.values {
            for (&result, tensor) in op.results.iter().zip(values) {
                consts[result] = Some(Arc::new(tensor));
            }
            continue;
        }
        // Constness rule 4: fold an op whose inputs are all const (default mode only).
        let Some(folder) = options.folder else {
            continue;
        };
        if options.strict || ops::attrs_are_params(op.kind) || op.kind == OpKind::Dequantize {
            continue;
        }
        let Some(sig) = ops::signature(op.kind, func.opset) else {
            continue;
        };
        let all_const = op.args.iter().enumerate().all(|(idx, arg)| {
            ops::arg_ignored(sig, op, idx)
                || arg
                    .value
                    .uses()
                    .iter()
                    .all(|used| consts[used.value].is_some())
        });
        if !all_const {
            continue;
        }
        let lookup = |value: Handle<Value>| consts.get(value).cloned().flatten();
        if let Some(folded) = folder.fold(func, handle, &lookup, &checked.types) {
            let fits = folded.len() == checked.types.len()
                && folded
                    .iter()
                    .zip(&checked.types)
                    .all(|(tensor, ty)| &tensor.ty == ty);
            if fits {
                for (&result, tensor) in op.results.iter().zip(folded) {
                    consts[result] = Some(Arc::new(tensor));
                }
            }
        }
    }
    InferredFacts { types, consts }
}

/// Loads a BLOBFILE literal; reports E150/E155 (path) and the blob reader's codes at `span`.
fn load_blob(
    blob_ref: &BlobRef,
    span: Span,
    options: &VerifyOptions,
    files: &mut BlobFiles<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Tensor> {
    if blob_ref.ty.dtype == DType::String {
        diags.push(Diagnostic::new(
            DiagCode::E150,
            span,
            format!("a BLOBFILE cannot hold a {} tensor", blob_ref.ty.dtype),
        ));
        return None;
    }
    let file = match files.load(&blob_ref.path) {
        Ok(file) => file,
        Err(err) => {
            let code = match err {
                BlobLoadError::Escapes(_) => DiagCode::E155,
                BlobLoadError::NotFound(_) | BlobLoadError::Io { .. } => DiagCode::E150,
            };
            diags.push(Diagnostic::new(code, span, err.to_string()).with_label("BLOBFILE here"));
            return None;
        }
    };
    match blob::read_blob(&file, blob_ref.offset, &blob_ref.ty, options.blob_mode) {
        Ok(read) => {
            for mut diag in read.warning_diagnostics(span) {
                diag.message = format!("{}: {}", blob_ref.path, diag.message);
                diags.push(diag);
            }
            if read.tensor.ty != blob_ref.ty {
                diags.push(Diagnostic::new(
                    DiagCode::E156,
                    span,
                    format!(
                        "{}: blob at offset {} decodes as {}, not the declared {}",
                        blob_ref.path, blob_ref.offset, read.tensor.ty, blob_ref.ty
                    ),
                ));
                return None;
            }
            Some(read.tensor)
        }
        Err(err) => {
            let mut diag = err.to_diagnostic(span);
            diag.message = format!("{}: {}", blob_ref.path, diag.message);
            diags.push(diag);
            None
        }
    }
}
