//! The bridge's error type: structured variants, and an [`ErrorKind`] that maps each one to a
//! stable category (the C ABI's status codes).

use std::fmt;
use std::path::PathBuf;

use milbridge_mil::diag::{Diagnostic, Severity};

/// `Result` with the bridge's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which family of a kernel's buffers an index refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// An activation input (a function parameter before the weights).
    Input,
    /// A weight parameter of a dynamic-weight kernel (after the activations).
    Weight,
    /// A function output.
    Output,
}

impl Slot {
    /// `input`, `weight` or `output`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Input => "input",
            Slot::Weight => "weight",
            Slot::Output => "output",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The category of an [`Error`]: what the caller did wrong or what failed. Stable: the C ABI
/// returns one negative code per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A bad argument: an index out of range, a missing function, a misuse of a handle.
    InvalidArgument,
    /// The MIL program did not verify; diagnostics are attached.
    Compile,
    /// A byte count or buffer count that disagrees with the program's signature.
    Shape,
    /// Something valid that this implementation does not do.
    Unsupported,
    /// Memory (or a shared-memory buffer) could not be allocated.
    OutOfMemory,
    /// A file or system call failed.
    Io,
    /// A compile-cache entry (or a serialised plan) was corrupt.
    CorruptCache,
    /// A bug of ours: a broken invariant or a caught panic.
    Internal,
}

/// Everything the bridge can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The MIL program did not parse or verify. `rendered` is every diagnostic rendered with
    /// `model.mil:line:col` positions and source snippets.
    #[error("{}", compile_summary(diagnostics, rendered))]
    Compile {
        /// The diagnostics (errors and warnings), in source order.
        diagnostics: Vec<Diagnostic>,
        /// The diagnostics rendered as text (see [`milbridge_mil::diag::render_all`]).
        rendered: String,
    },
    /// The caller's buffer count for a family differs from the program's signature.
    #[error("the program has {expected} {slot} tensors but {given} {slot} sizes were given")]
    Arity {
        /// Which family.
        slot: Slot,
        /// What the program declares.
        expected: usize,
        /// What the caller passed.
        given: usize,
    },
    /// A byte count differs from the size of the tensor it is meant for.
    #[error("{slot} {index} (`{name}`, {ty}) is {expected} bytes but {given} bytes were given")]
    Size {
        /// Which family.
        slot: Slot,
        /// Index within the family.
        index: usize,
        /// The parameter or output name.
        name: String,
        /// Its type as MIL text.
        ty: String,
        /// Its size in bytes.
        expected: usize,
        /// The caller's byte count.
        given: usize,
    },
    /// An index outside a family.
    #[error("{slot} index {index} is out of range: the kernel has {count} {slot} tensors")]
    Index {
        /// Which family.
        slot: Slot,
        /// The index given (as the caller wrote it, so negative values show).
        index: i64,
        /// How many the kernel has.
        count: usize,
    },
    /// A typed write or read with an element type the tensor does not have.
    #[error("{slot} {index} (`{name}`) has dtype {dtype}; {what} needs {needed}")]
    DType {
        /// Which family.
        slot: Slot,
        /// Index within the family.
        index: usize,
        /// The parameter or output name.
        name: String,
        /// Its dtype name.
        dtype: &'static str,
        /// The operation attempted.
        what: &'static str,
        /// The dtypes it accepts.
        needed: &'static str,
    },
    /// A bad argument not covered above (a message naming the argument and its value).
    #[error("{0}")]
    InvalidArgument(String),
    /// Something this implementation does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The engine refused to compile or evaluate.
    #[error(transparent)]
    Engine(#[from] milbridge_engine::Error),
    /// A shared-memory buffer operation failed.
    #[error(transparent)]
    Surface(#[from] milbridge_surface::Error),
    /// A file operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A compile-cache entry failed its checks (it has been deleted).
    #[error("corrupt cache entry {path}: {reason}", path = path.display())]
    CorruptCache {
        /// The entry.
        path: PathBuf,
        /// Which check failed.
        reason: String,
    },
}

fn compile_summary(diagnostics: &[Diagnostic], rendered: &str) -> String {
    let errors = diagnostics
        .iter()
        .filter(|diag| diag.severity == Severity::Error)
        .count();
    let plural = if errors == 1 { "" } else { "s" };
    // The rendered text starts with the first diagnostic's `file:line:col: error[...]` line.
    format!(
        "mil program failed to compile with {errors} error{plural}:\n{}",
        rendered.trim_end()
    )
}

impl Error {
    /// The error's category (the C ABI's status code).
    pub fn kind(&self) -> ErrorKind {
        use milbridge_engine::Error as E;
        match self {
            Error::Compile { .. } => ErrorKind::Compile,
            Error::Arity { .. } | Error::Size { .. } => ErrorKind::Shape,
            Error::Index { .. } | Error::DType { .. } | Error::InvalidArgument(_) => {
                ErrorKind::InvalidArgument
            }
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::OutOfMemory => {
                ErrorKind::OutOfMemory
            }
            Error::Io { .. } => ErrorKind::Io,
            Error::CorruptCache { .. } => ErrorKind::CorruptCache,
            Error::Engine(engine) => match engine {
                E::NoSuchFunction(_) | E::NoFunction | E::Runtime { .. } => {
                    ErrorKind::InvalidArgument
                }
                E::IsaUnavailable(_) | E::Unsupported { .. } | E::ConstDType { .. } => {
                    ErrorKind::Unsupported
                }
                E::BufferCount { .. } | E::BufferLength { .. } => ErrorKind::Shape,
                E::PlanVersion { .. } | E::CorruptPlan(_) => ErrorKind::CorruptCache,
                _ => ErrorKind::Internal,
            },
            Error::Surface(surface) => {
                use milbridge_surface::Error as S;
                match surface {
                    S::OutOfBounds { .. } | S::SizeMismatch { .. } => ErrorKind::Shape,
                    S::ZeroSize => ErrorKind::InvalidArgument,
                    S::Unsupported => ErrorKind::Unsupported,
                    S::Os { source, .. } | S::File { source, .. }
                        if source.raw_os_error() == Some(libc::ENOMEM)
                            || source.kind() == std::io::ErrorKind::OutOfMemory =>
                    {
                        ErrorKind::OutOfMemory
                    }
                    _ => ErrorKind::Io,
                }
            }
        }
    }

    /// The diagnostics of a compile error (empty for every other error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Compile { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milbridge_mil::diag::DiagCode;
    use milbridge_mil::span::{SourceFile, Span};

    #[test]
    fn messages_are_lowercase_and_concrete() {
        let err = Error::Size {
            slot: Slot::Weight,
            index: 0,
            name: "W".into(),
            ty: "tensor<fp16, [1, 64, 64]>".into(),
            expected: 8192,
            given: 8190,
        };
        assert_eq!(
            err.to_string(),
            "weight 0 (`W`, tensor<fp16, [1, 64, 64]>) is 8192 bytes but 8190 bytes were given"
        );
        assert_eq!(err.kind(), ErrorKind::Shape);
        let err = Error::Index {
            slot: Slot::Output,
            index: -1,
            count: 1,
        };
        assert_eq!(
            err.to_string(),
            "output index -1 is out of range: the kernel has 1 output tensors"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn compile_errors_carry_positions() {
        let source = SourceFile::new("model.mil", "program(1.3)\n{ oops }\n");
        let diag = Diagnostic::new(DiagCode::E010, Span::new(15, 19), "unexpected `oops`");
        let rendered = milbridge_mil::diag::render_all(&source, std::slice::from_ref(&diag));
        let err = Error::Compile {
            diagnostics: vec![diag],
            rendered,
        };
        let text = err.to_string();
        assert!(
            text.starts_with(
                "mil program failed to compile with 1 error:\nmodel.mil:2:3: error[E010]"
            ),
            "{text}"
        );
        assert_eq!(err.kind(), ErrorKind::Compile);
        assert_eq!(err.diagnostics().len(), 1);
    }
}
