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
//! | [`gemm`](mod@gemm) | the public GEMM API ([`gemm::gemm`], [`gemm::gemm_batched`], [`gemm::PackedB`], [`gemm::PackedA`]) and its blocking driver |
//! | `gemm::kernels` | one microkernel per tier: `generic`, `avx2`, `avx512`, `amx` (tile `asm!`) |
//! | [`convert`] | f32 ⇄ f16 slice conversion, per tier (and split over a pool) |
//! | [`ew`] | fused elementwise kernels of the training graphs (RMSNorm, SwiGLU, RoPE, residual, softmax; forward and backward), per tier, f32/f16 storage |
//! | [`peak`] | measured machine peak per tier, for `milbridge bench gemm` |
//! | [`bench`](mod@bench) | timing helpers for `milbridge bench gemm` / `bench repack` (feature `reference`: the `gemm` crate side by side) |
//! | [`reflib`] | OpenBLAS and oneDNN loaded at run time (`dlopen`), the bench's other reference columns |
//!
//! Unsafe code lives only in modules that start with `#![allow(unsafe_code)]` (the workspace
//! denies it): `cpu` (CPUID, `arch_prctl`), `pool` (the job pointer shared with workers),
//! `convert`, `gemm` and its kernels, `ew` (its kernel bodies and tiers), `peak`, `bench` and
//! `reflib` (`dlopen` and the reference libraries' C ABIs).
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
//! * `amx_gemm_bf16_32x32` (k ≤ 768) and `amx_gemm_bf16_32x48` (deeper products): bf16
//!   panels in tile layout (A: 16 rows × 32 k per 1 KiB tile; B: 16 k-pairs × 16 columns × 2,
//!   the VNNI pair interleave), 2 × 2 or 2 × 3 tiles of 16 × 16 f32 accumulators
//!   (`tdpbf16ps`); the wide one runs B panel outer with the next B panel prefetched.
//! * The kernel stores (or, when asked, adds to) a full `MR × NR` f32 tile at a given row
//!   stride. The f32 kernels write whole tiles straight into an f32, unit-column-stride C
//!   when one `kc` block covers k; otherwise (edges, f16 C, strided C, partial sums between
//!   `kc` blocks, and always for AMX) into a scratch with an odd cache-line pitch that is
//!   merged into C (f16 rounding happens once, there).
//!
//! # Measured (Sapphire Rapids vCPUs, see `milbridge bench gemm`)
//!
//! * The two vCPUs of this machine kind have independent AMX units: a bare tile loop runs at
//!   ~2.95 TFLOP/s per thread whether or not the other vCPU runs one concurrently (checked
//!   by timing 2 × 4000 chunks on two threads and comparing chunks that overlapped the other
//!   thread's with those that didn't). Two-thread results that look worse than one thread
//!   come from other processes taking the second core.
//! * A tile load from a 64-byte-misaligned address costs ~50 cycles instead of ~9; the AMX
//!   inner loop reaches ~85 % of the tile peak with its panels in L1, ~65–70 % streaming from
//!   L2. End to end the AMX shapes are bound by memory traffic (f32 A in, f32 C out, bf16 B
//!   from L3: ~13 GB/s per core here), not by the tile unit.
//!
//! Tiers are chosen at run time (never `target-cpu=native`): each kernel is compiled with
//! `#[target_feature]` and only called when [`cpu::isa_available`] says so.

pub mod bench;
pub mod convert;
pub mod cpu;
pub mod ew;
pub mod gemm;
pub mod peak;
pub mod pool;
pub mod reflib;

pub use cpu::{Caps, Isa, KNOBS, caps, host_isa, isa_available, selected_isa, thread_count};
pub use gemm::{
    ElemPtr, GemmSpec, MatMut, MatRef, OutPtr, PackedA, PackedB, Precision, gemm, gemm_batched,
    gemm_batched_packed_a, gemm_batched_packed_b, gemm_packed_a, gemm_packed_b, kernel_name,
    kernel_name_for,
};
pub use pool::Pool;
