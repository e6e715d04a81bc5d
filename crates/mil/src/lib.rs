//! milbridge-mil: MIL text (CoreML's Model Intermediate Language) to verified, typed IR.
//!
//! The pipeline is `text → tokens (lex) → syntax tree (syntax) → IR (lower) → facts (infer) →`
//! [`facts::VerifiedProgram`] (verify). Every stage reports problems as [`diag::Diagnostic`]s and
//! keeps going; nothing here panics on any input, performs I/O, or uses `unsafe`.
//! Weight blobs are read through a caller-supplied [`facts::BlobSource`].
#![forbid(unsafe_code)]

pub mod blob;
pub mod builder;
pub mod diag;
pub mod facts;
pub mod infer;
pub mod ir;
pub mod lex;
pub mod lint;
pub mod lower;
pub mod ops;
pub mod print;
pub mod span;
pub mod syntax;
pub mod verify;

pub use lower::{ParseOptions, parse, parse_with};
pub use print::print;
pub use verify::{VerifyOptions, verify};
