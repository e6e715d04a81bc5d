//! milbridge-bridge: the safe Rust API of the ANE bridge.
//!
//! Compile MIL text (with weight blobs from disk or memory) once, then write inputs and weights
//! and evaluate many times over persistent shared-memory surfaces. The C ABI
//! (`libane_bridge.so`, crate `milbridge-capi`) is a thin face over this crate.
//!
//! ```no_run
//! use milbridge_bridge::{Kernel, KernelOptions, samples};
//!
//! // PR #22's dynamic-weight kernel: activations first, then weights, sizes in bytes.
//! let (n, k, m) = (64, 64, 64);
//! let mil = samples::dyn_matmul(n, k, m);
//! let mut kernel = Kernel::compile_dyn(&mil, &[2 * k * m], &[2 * n * k], &[2 * n * m], &KernelOptions::default())?;
//! kernel.write_input_f32(0, &vec![1.0; k * m])?;
//! let identity: Vec<f32> = (0..n * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
//! kernel.write_weight_f32(0, &identity)?;
//! kernel.eval()?;
//! assert_eq!(kernel.output_f32(0)?.iter().sum::<f32>(), (n * m) as f32);
//!
//! // New weights: a memory write, not a recompile.
//! kernel.write_weight_f32(0, &identity.iter().map(|w| 2.0 * w).collect::<Vec<_>>())?;
//! kernel.eval()?;
//! assert_eq!(kernel.output_f32(0)?.iter().sum::<f32>(), (2 * n * m) as f32);
//! # Ok::<(), milbridge_bridge::Error>(())
//! ```
//!
//! Modules: [`kernel`] (compile, surfaces, eval, chaining), [`cache`] (the on-disk compile
//! cache), [`realtime`] (real-time mode), [`bench`](mod@bench) (the jitter benchmark), [`blobs`] (weight
//! files from a model directory), [`samples`] (small MIL programs). The only unsafe code is in
//! the private `rt` module: the real-time system calls and the slice views of locked surfaces
//! during one evaluation.

pub mod bench;
pub mod blobs;
pub mod cache;
mod error;
pub mod kernel;
pub mod realtime;
mod rt;
pub mod samples;

pub use error::{Error, ErrorKind, Result, Slot};
pub use kernel::{
    CachePolicy, CompileSource, Kernel, KernelOptions, LocatedDiagnostic, Surface, compile_count,
    init, locate_diagnostics, reset_compile_count,
};
pub use milbridge_engine::Precision;
pub use milbridge_linalg::cpu::Isa;
pub use milbridge_mil::facts::{BlobMap, BlobSource, NoBlobs};
pub use milbridge_surface::SharedBuffer;
pub use realtime::{RealtimeGuard, RealtimeStatus, begin_realtime, end_realtime, realtime_status};
