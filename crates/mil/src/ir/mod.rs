//! The typed IR: the contract between the front-end and every later stage.
//!
//! A [`Program`] holds [`Function`]s in an [`Arena`]; each function holds its [`Value`]s and
//! [`Op`]s in arenas of its own, referenced by [`Handle`]s that always point backwards (an op
//! uses only values defined before it). Facts computed later (inferred types, constant values)
//! live in side tables ([`HandleVec`]), never patched into the IR.

mod arena;
mod program;
mod tensor;
mod types;

pub use arena::{Arena, Handle, HandleVec};
pub use program::{
    Arg, ArgValue, BlobRef, Function, Literal, Op, OpKind, Opset, Program, Use, Value, ValueDef,
};
pub use tensor::{Tensor, TensorData, TensorError, decode_f64, encode_f64, round_to_dtype};
pub use types::{DType, DeclType, Dim, TensorType};
