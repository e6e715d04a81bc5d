//! The trainer's error type. Every variant is a failure of the world or of the request (a bad
//! data file, a corrupt checkpoint, a kernel that failed to compile); bugs of ours panic with the
//! name of the broken invariant instead.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while training or sampling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written, synced or renamed.
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        /// What we were doing ("cannot read", "cannot write", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A token data file is unusable.
    #[error("data {path}: {problem}", path = path.display())]
    Data {
        /// The data file (`<embedded>` for the bundled corpus).
        path: PathBuf,
        /// What is wrong with it.
        problem: DataProblem,
    },

    /// A checkpoint is unreadable, truncated, corrupt or from another model.
    #[error("checkpoint {path}: {reason}", path = path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A llama2.c `tokenizer.bin` is unreadable, truncated or corrupt.
    #[error("tokenizer {path}: {reason}", path = path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A bridge kernel failed to compile, or a surface access failed.
    #[error("kernel {kernel}: {source}")]
    Kernel {
        /// Name of the generated kernel.
        kernel: String,
        /// The bridge's error (compile errors carry their diagnostics).
        #[source]
        source: milbridge_bridge::Error,
    },

    /// An option is out of range or options contradict each other.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What is wrong with a token data file (llama2.c's flat little-endian `u16` format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataProblem {
    /// The file cannot be opened or mapped.
    #[error("cannot open: {reason}")]
    Unreadable {
        /// The operating system's reason.
        reason: String,
    },
    /// The file has no bytes.
    #[error("file is empty")]
    Empty,
    /// The byte length is odd, so the file cannot be a sequence of `u16` token ids.
    #[error("length {len} bytes is odd; token ids are 2-byte little-endian u16 (truncated file?)")]
    OddLength {
        /// Length of the file in bytes.
        len: usize,
    },
    /// Fewer tokens than one training window needs.
    #[error("{tokens} tokens is too short; a window of seq {seq} needs at least {need}")]
    TooShort {
        /// Tokens in the file.
        tokens: usize,
        /// The model's sequence length.
        seq: usize,
        /// Tokens needed (`seq + 1`).
        need: usize,
    },
    /// A token id is outside the model's vocabulary.
    #[error(
        "token id {id} at byte offset {byte_offset} (token {index}) is out of range for vocab {vocab}"
    )]
    TokenOutOfRange {
        /// Index of the first bad token.
        index: usize,
        /// Its byte offset in the file.
        byte_offset: usize,
        /// The id found.
        id: u16,
        /// The model's vocabulary size.
        vocab: usize,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn ckpt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
