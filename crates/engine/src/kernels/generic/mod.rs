//! Portable kernels: every kernel-table slot has one here. Plain safe Rust over strided views,
//! split across the worker pool by destination rows.

pub mod elementwise;
pub mod linalg;
pub mod movement;
pub mod reduce;
