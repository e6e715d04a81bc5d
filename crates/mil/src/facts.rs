//! The facts verification establishes about a program, and the [`VerifiedProgram`] that carries
//! them to later stages. The only way to obtain a `VerifiedProgram` is [`crate::verify::verify`].

use crate::diag::Diagnostic;
use crate::ir::{Function, Handle, HandleVec, Program, Tensor, TensorType, Value};
use std::sync::Arc;

/// Per-function facts: the inferred type of every value, and the value of every constant.
#[derive(Clone, Debug)]
pub struct FunctionFacts {
    /// Inferred type of each value (parameters: their declared type).
    pub types: HandleVec<Value, TensorType>,
    /// The constant value of each value that is const (mil-spec 4.4): literals, `const`,
    /// `constexpr_*`, and (in default mode) ops whose inputs are all const, evaluated at compile
    /// time. BLOBFILE literals are loaded here.
    pub consts: HandleVec<Value, Option<Arc<Tensor>>>,
}

/// A program that passed verification, with its facts. Later stages trust it: after
/// verification, a shape mismatch is a bug, not a user error.
#[derive(Clone, Debug)]
pub struct VerifiedProgram {
    pub(crate) program: Program,
    pub(crate) facts: HandleVec<Function, FunctionFacts>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl VerifiedProgram {
    /// The IR.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Facts for `func`.
    pub fn facts(&self, func: Handle<Function>) -> &FunctionFacts {
        &self.facts[func]
    }

    /// Warnings produced while verifying (errors make verification fail).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Takes the IR back out (for tools that edit and re-verify).
    pub fn into_program(self) -> Program {
        self.program
    }
}

/// Where BLOBFILE bytes come from. The caller implements it (an in-memory map keyed by the path
/// string as written, a directory that `@model_path` resolves to, ...); `mil` performs no I/O.
pub trait BlobSource {
    /// The whole file named by `path` exactly as written in the program
    /// (`@model_path/weights/wq.bin`), or an error saying why it is not available.
    fn load(&self, path: &str) -> Result<Arc<[u8]>, BlobLoadError>;
}

/// Why a blob file could not be provided.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlobLoadError {
    /// No such file or map entry (E150).
    #[error("no weight file or map entry for `{0}`")]
    NotFound(String),
    /// The path is absolute, has `..`, or resolves outside the model root (E155).
    #[error("path `{0}` escapes the model root")]
    Escapes(String),
    /// The file exists but could not be read.
    #[error("cannot read `{path}`: {reason}")]
    Io {
        /// The path as written.
        path: String,
        /// The OS error, as text.
        reason: String,
    },
}

/// A blob source with no files: every BLOBFILE is E150.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBlobs;

impl BlobSource for NoBlobs {
    fn load(&self, path: &str) -> Result<Arc<[u8]>, BlobLoadError> {
        Err(BlobLoadError::NotFound(path.to_string()))
    }
}

/// An in-memory blob source keyed by the full path string (the ANE descriptor's weights map).
#[derive(Clone, Debug, Default)]
pub struct BlobMap {
    files: std::collections::BTreeMap<String, Arc<[u8]>>,
}

impl BlobMap {
    /// An empty map.
    pub fn new() -> BlobMap {
        BlobMap::default()
    }

    /// Adds or replaces the file for `path` (as it appears in the MIL text).
    pub fn insert(&mut self, path: impl Into<String>, bytes: impl Into<Arc<[u8]>>) {
        self.files.insert(path.into(), bytes.into());
    }

    /// Paths in the map.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

impl BlobSource for BlobMap {
    fn load(&self, path: &str) -> Result<Arc<[u8]>, BlobLoadError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| BlobLoadError::NotFound(path.to_string()))
    }
}

/// Evaluates an op whose inputs are all constant, for constness rule 4 (mil-spec 4.4). The
/// engine implements it with its reference interpreter; `mil` has no evaluator of its own.
pub trait ConstFolder {
    /// Evaluates `op` of `func` given the constant value of each input (indexed like
    /// `facts.consts`) and the inferred result types. Returns `None` when it cannot (then the
    /// value is simply not const).
    fn fold(
        &self,
        func: &Function,
        op: Handle<crate::ir::Op>,
        inputs: &dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
        result_types: &[TensorType],
    ) -> Option<Vec<Tensor>>;
}
