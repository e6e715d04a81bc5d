//! milbridge-linalg: the CPU side of milbridge's compute — ISA detection, a persistent worker
//! pool, GEMM for every ISA tier, and fast fp16/fp32 conversion. The engine calls it; it has
//! no knowledge of MIL.
//!
//! # Module layout
//!
//! | module | holds |
//! |---|---|
//! | [`cpu`] | CPUID + AMX permission ([`cpu::caps`]), the [`Isa`] tiers, the `MILBRIDGE_*` knobs ([`cpu::KNOBS`]) |
//! | [`pool`] | [`Pool`]: persistent workers, allocation-free `run(n_tasks, &f)` |
//! | [`gemm`](mod@gemm) | the public GEMM API ([`gemm::gemm`], [`gemm::gemm_batched`], [`gemm::PackedB`]) and its blocking driver |
//! | `gemm::kernels` | one microkernel per tier: `generic`, `avx2`, `avx512`, `amx` (tile `asm!`) |
//! | [`convert`] | f32 ⇄ f16 slice conversion, per tier |
//! | [`peak`] | measured machine peak per tier, for `milbridge bench gemm` |
//! | [`bench`](mod@bench) | timing helpers for the CLI's GEMM benchmark |
//!
//! Unsafe code lives only in modules that start with `#![allow(unsafe_code)]` (the workspace
//! denies it): `cpu` (CPUID, `arch_prctl`), `pool` (the job pointer shared with workers),
//! `convert`, `gemm` and its kernels, `peak` and `bench`.
//!
//! # GEMM terms
//!
//! `C (m × n) = A (m × k) · B (k × n)`: `m` rows of A and C, `n` columns of B and C, `k` the
//! shared (inner) dimension. A microkernel computes one `mr × nr` tile of C (`MR × NR`
//! constants per kernel); `kc` is the depth of a cache block, and `mc × nc` the block of C one
//! work item computes.
//!
//! # The microkernel contract
//!
//! * A panel: `MR` rows of A for one `kc` block, B panel: `NR` columns of B; both packed into
//!   the kernel's own layout by its packers, zero-padded to `MR`/`NR` and to a multiple of the
//!   kernel's k granularity, so the kernel never reads past its panels and never sees an edge.
//! * f32 kernels (`generic_gemm_f32_4x8`, `avx2_gemm_f32_6x16`, `avx512_gemm_f32_12x32`):
//!   panels are k-major (`a[k·MR + i]`, `b[k·NR + j]`); accumulators are `MR × NR/lanes`
//!   f32 vectors, one broadcast of A times `NR/lanes` vectors of B per k (FMA on x86).
//! * `amx_gemm_bf16_32x32`: bf16 panels in tile layout (A: 16 rows × 32 k per 1 KiB tile;
//!   B: 16 k-pairs × 16 columns × 2, the VNNI pair interleave), 2 × 2 tiles of 16 × 16 f32
//!   accumulators (`tdpbf16ps`).
//! * The kernel stores (or, when asked, adds to) a full `MR × NR` f32 tile at a given row
//!   stride. The driver points it at C directly when C is f32 with unit column stride and the
//!   tile is whole; otherwise at scratch it then merges into C (f16 rounding happens once,
//!   there).
//!
//! Tiers are chosen at run time (never `target-cpu=native`): each kernel is compiled with
//! `#[target_feature]` and only called when [`cpu::isa_available`] says so.

pub mod bench;
pub mod convert;
pub mod cpu;
pub mod gemm;
pub mod peak;
pub mod pool;

pub use cpu::{Caps, Isa, KNOBS, caps, host_isa, isa_available, selected_isa, thread_count};
pub use gemm::{
    ElemPtr, GemmSpec, MatMut, MatRef, OutPtr, PackedB, Precision, gemm, gemm_batched,
    gemm_packed_b, kernel_name,
};
pub use pool::Pool;
