//! milbridge-engine: a [`milbridge_mil::facts::VerifiedProgram`] compiled once into a [`Plan`]
//! and evaluated many times on the CPU over caller-provided buffers.
//!
//! ```text
//! VerifiedProgram ──compile──▶ Plan ──eval(workspace, inputs, outputs)──▶ outputs written
//!                                │
//!                                └─to_bytes / from_bytes (versioned, checksummed)
//! ```
//!
//! # Compile
//!
//! [`compile`] picks the function ([`CompileOptions::function`], default the entry), removes
//! dead ops, binds constants (`facts.consts`: verification loads blobs and, given the reference
//! folder, folds const subgraphs; the planner additionally runs any remaining all-const step
//! once at compile time), turns view ops (reshape, transpose, expand_dims, squeeze,
//! slice_by_size, slice_by_index with positive strides, split, same-dtype cast, tile of size-1
//! dims) into strided layouts over their input's buffer, chooses a kernel per step from a
//! [`KernelTable`], and assigns arena offsets to intermediates by liveness. A function output
//! that is a chain of bijective views of a computed value is written in place into the output
//! buffer (the producer writes through the inverse strides), so the spatially packed dynamic
//! matmul of mil-spec 8.5 runs with no copy at all ([`PlanStats::materialize_steps`] is 0).
//! Likewise a value used only as one input of a `concat` is computed straight into its slot
//! of the concat's destination (maderix/ANE's output "taps" cost no copy).
//!
//! # Execute
//!
//! [`Plan::eval`] runs the steps over the caller's buffers directly (no staging copies), with
//! one [`Workspace`] per concurrent evaluation, on a persistent worker pool (linalg's `Pool`):
//! large ops are split by destination rows across all threads. The eval path does not
//! allocate. Run-time errors (R002 gather index, R003 dynamic slice bounds, R004 int32 pow/div)
//! are [`Error::Runtime`].
//!
//! # Precision profiles and error bounds against exact math
//!
//! Every tensor is stored in its declared dtype; fp16 values are widened exactly to f32 and
//! computed. `u` is the unit roundoff of the output type (2⁻¹¹ for fp16, 2⁻²⁴ for fp32), "ulp"
//! an ulp of the output type. In [`Precision::Exact`] (the default) every op rounds its result
//! once (nearest-even) when it stores it (mil-spec 5.2). [`Precision::Fast`] differs in two
//! places only: matmul/conv through AMX bf16 tiles where the tier has them, and the ops inside
//! a fused elementwise step ([`plan::fuse`]), whose intermediates stay f32.
//!
//! | ops | exact: how | exact: bound | fast |
//! |---|---|---|---|
//! | add, sub, mul, real_div, sqrt, square, abs, relu, maximum, minimum, clip, comparisons, select, cast, every view/copy op | one f32 operation, rounded once | ≤ 0.5 ulp (identical to IEEE fp16/fp32 arithmetic; comparisons and moves exact) | as exact; inside a fused step: the f32 result, not rounded (≤ 0.5 f32 ulp of the op) |
//! | exp, erf, tanh, sigmoid, silu, gelu (3 modes), log, rsqrt, inverse, pow | evaluated in f64 from the input, rounded once | ≤ 0.5 ulp + 2⁻⁵² relative (≤ 1 ulp) | as exact; inside a fused step not rounded, and exp, sigmoid, silu use an f32 vector `exp` (≤ 2 f32 ulps; sigmoid, silu ≤ 5·10⁻⁶ relative; on contiguous runs results below 2⁻¹²⁶ flush to 0, inputs above 88.37 saturate near 2.4·10³⁸, NaN inputs give unspecified values) |
//! | a fused step (a tree of the two rows above, [`plan::fuse`]) | each node as above, rounded to its dtype where the unfused op would store it | bit-identical to the unfused steps (the bounds of the ops it holds) | result rounded once: ≤ 0.5 ulp + Σₖ εₖ·\|vₖ·∂y/∂vₖ\| over its nodes vₖ (εₖ the node's f32 error above: 2⁻²⁴ for arithmetic, 5·10⁻⁶ for sigmoid/silu); against the per-op-rounded reference the reference's own roundings add, which the tests bound by `n_ops` ulps of the output plus `n_ops·2⁻¹¹` (fp32: `2⁻²²`) of its largest magnitude |
//! | RMSNorm pattern step (fused plans, [`plan::fuse::Pattern`]) | never formed | — | `x·w/√(Σx²/n + eps)` in f32 (linalg `rmsnorm_channels`/`rmsnorm_rows`: FMA sum of squares, `1/√` in f32, the exact `1/n` in place of the MIL's rounded constant), rounded once: ≤ 0.5 ulp + (n + 4)·2⁻²⁴ relative; against the per-op-rounded reference its 7 roundings add (tests: 7 fp16 ulps + 7·2⁻¹¹ of the largest output; fp32 2⁻¹⁶ relative); where the fp16 sum of squares would overflow to inf the f32 one does not |
//! | scale + mask → softmax pattern step (fused plans) | never formed | — | `softmax(s·x + mask)` in f32 (linalg `softmax_rows`: vector `exp`, ≤ 2 f32 ulps, the mask an f32 copy of the constant), rounded once: the softmax bound with `s·x + mask` exact to 2⁻²⁴ relative; against the reference its 2 extra fp16 roundings of the scores add (tests: 3 fp16 ulps + 3·2⁻¹¹ of the largest output); rows holding NaN or +inf give unspecified values and a fully masked (-inf) row gives zeros |
//! | on a tier table: fp32 exp, sigmoid, silu; fp32 and fp16 rsqrt, inverse (ε ≠ 0) | f32 vector arithmetic (`ew::stream::unary`: Cephes `exp` polynomial; `1/√(x+ε)`, `1/(x+ε)` in f32), rounded once | fp32: ≤ 2 f32 ulps (exp, inverse), 3 (rsqrt, sigmoid), 4 (silu), results below 2⁻¹²⁶ within 2⁻¹²⁶ absolute; fp16: that error before the fp16 rounding (≤ 0.5 ulp + 4·2⁻²³ relative) | as exact |
//! | fp32 `log(x + ε)`, tanh, erf and exact gelu, on a tier table | as the portable kernel (f64, rounded once) | ≤ 0.5 ulp + 2⁻⁵² relative | f32 vector Cephes `logf` (the sum `x + ε` kept exact by a two-sum correction) and `tanhf` polynomials (`1 - 2/(e^{2\|x\|} + 1)` above 0.625), fitted erf/erfc polynomials with a cancellation-free `e^{-x²}`: log ≤ 2, tanh ≤ 3, erf ≤ 4, gelu ≤ 6 f32 ulps (gelu results below 2⁻¹¹⁰: ≤ 16 ulps, subnormals in units of 2⁻¹⁴⁹); special values (±0, ±inf, NaN, subnormals) exact |
//! | fp32 gelu, tanh and sigmoid modes, on a tier table | as the portable kernel (f64, rounded once) | ≤ 0.5 ulp + 2⁻⁵² relative | f32 vector `x/(1+e⁻ᶻ)` (`ew::stream::unary`), `z` the sigmoid's argument (2·√(2/π)·(x + 0.044715x³) or 1.702x) in f32: ≤ 5 + 3·\|z\| f32 ulps, results below 2⁻¹²² within 2⁻¹²² absolute |
//! | reduce_sum, reduce_mean | f32 accumulation (in order; on a tier table over a dense box, `4·lanes` interleaved partial sums; over a strided box, in order), rounded once | ≤ 0.5 ulp + n·2⁻²⁴·Σ\|xᵢ\| | as exact |
//! | reduce_max | exact, rounded once (NaN-propagating) | ≤ 0.5 ulp (exact for same-dtype) | as exact |
//! | matmul, linear, conv (on the tier tables every conv is a GEMM: 1×1 directly, others over an unfolded im2col block) | f32 products and accumulation (FMA on x86 tiers), rounded once | ≤ 0.5 ulp + k·2⁻²⁴·Σₖ\|aᵢₖ\|\|bₖⱼ\| (k = inner length; conv: C_in/groups · kernel volume) | fp16/fp32 matmul and conv on AMX: operands rounded to bf16, f32 accumulation: ≈ 2⁻⁸·Σ\|a\|\|b\|; other tiers as exact |
//! | softmax | f32 max-shifted exp (libm f32; on a tier table, contiguous rows use linalg's vector exp, ≤ 2 f32 ulps, and flush results below 2⁻¹²⁶ to 0), f32 sum, rounded once | ≤ 0.5 ulp + (n+4)·2⁻²⁴ relative per element (+ 2⁻¹²⁶ absolute on tiers) | as exact |
//! | softmax over a middle axis on a tier table (`[1, V, 1, S]` over V, inner axis contiguous) | f32 column maxima (exact), vector `exp` (≤ 2 f32 ulps) of the f32 difference, sums in row order in blocks of 64 rows, rescaled by libm `expf` when a block raises the maximum, times `1/sum` (f32), rounded once | ≤ 0.5 ulp + (n + 2⌈n/64⌉ + 8)·2⁻²⁴ relative per element (+ 2⁻¹⁴⁹ absolute) | as exact |
//! | pow with a constant exponent on a tier table | fp16: a table of the portable results; fp32 exponents 1, 2, -1, 0.5: one correctly rounded f32 operation (x, x·x, 1/x, √x; pow's special cases for -0 and -inf by the portable code); other exponents as the portable kernel | bit-identical to the portable kernel | as exact, and fp32 exponents 3 (x·x·x) and -0.5 (1/√x) in f32: ≤ 2 f32 ulps (x³ below 2⁻¹²⁶: ≤ 2⁻¹⁴⁹ absolute) |
//! | layer_norm | f32 two-pass mean/variance, rounded once | ≤ 0.5 ulp + O(n·2⁻²⁴) relative to the normalised value | as exact |
//! | scaled_dot_product_attention | f32 scores, softmax and P·V, rounded once | ≤ 0.5 ulp + (E + S + 4)·2⁻²⁴ relative to Σ\|p\|\|v\| | as exact |
//! | quantize / dequantize | f64 division / f32 product, rounded once | exact rounding of the f64 quotient; dequantize ≤ 0.5 ulp + 2⁻²⁴ | as exact |
//!
//! The tier tables (`KernelTable::for_isa`) run add/sub/mul/real_div/maximum/minimum (any strides), fp16 unary
//! ops (tables without parameters and for log(ε), vector code for rsqrt, inverse, clip), fp32
//! unary ops but erf, tanh, log and gelu (which are vector code in the fast profile), pow with a constant exponent (fp16 tables, fp32 vector code for 1, 2, -1,
//! 0.5, and in the fast profile 3 and -0.5), softmax over the last or a middle axis and
//! reduce_sum/mean/max (dense boxes and strided axes) on vectorised or table-driven kernels
//! ([`kernels::tiered`]); binary results, the exact unary ops (abs, square, sqrt, relu, clip,
//! identity, inverse with ε = 0), the fp16 tables, fp32 pow with exponent 1, 2, -1 or 0.5,
//! reduce_max and reductions over a strided axis are bit-identical to the portable kernels;
//! softmax, dense-box sums and the vector transcendentals stay within the bounds above.
//!
//! Fusion is opt-in (`MILBRIDGE_FUSE=1`, or [`compile_fused`]; [`compile_unfused`] is the
//! baseline the tests compare with): the fused kernel (compiled trees for the training
//! kernels' shapes, a register program otherwise) and, in the fast profile, the RMSNorm and
//! scale+mask→softmax pattern steps beat the per-op kernels on large or fast-profile
//! tensors, but the training step as a whole has not measured faster with it (see
//! [`fusion_enabled`]). A fused step of the exact profile rounds every node to its
//! declared dtype, and the exact profile leaves the tier tables' vector transcendentals
//! unfused, so exact plans compute the same bits with or without it. On the tier tables fp16
//! exp, erf, tanh, sigmoid, silu and gelu stay table passes of their own in both profiles
//! ([`plan::fuse::tabled_activation`]), so the fast column's vector `exp` inside a fused step
//! applies to fp32 values and to the portable table.
//!
//! The tests check these bounds against the f64 reference interpreter
//! ([`reference`](mod@reference)), with the tolerances stated once in `tests/common/mod.rs`
//! (the fused steps' in `tests/fuse.rs`).
//!
//! # Modules
//!
//! [`layout`] (strided views), [`elem`] (element types), [`kernels`] (the kernel table and the
//! portable kernels), [`plan`] (lowering, fusion, memory planning, serialisation), [`exec`] (eval, and
//! `exec::raw`, the crate's only unsafe code), [`reference`](mod@reference) (the f64 oracle).

pub mod elem;
pub mod error;
pub mod exec;
pub mod kernels;
pub mod layout;
pub mod plan;
pub mod reference;

use milbridge_linalg::cpu::{self, Isa};
use milbridge_mil::facts::VerifiedProgram;

pub use error::{Error, KernelError, Result};
pub use exec::Workspace;
pub use kernels::table::KernelTable;
pub use plan::{IoDesc, Plan, PlanStats};

/// Numeric profile of a compiled plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// fp16 tensors computed in f32 and rounded to fp16 at each op output (mil-spec 5.2).
    #[default]
    Exact,
    /// matmul/conv through AMX bf16 tiles where available, and f32 intermediates inside
    /// fused elementwise steps (see the crate docs' precision table).
    Fast,
}

/// How to compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// The function to compile (`None`: the entry, `main` or the first function).
    pub function: Option<String>,
    /// Kernel tier (default [`cpu::selected_isa`]).
    pub isa: Isa,
    /// Precision profile (default [`Precision::Exact`]).
    pub precision: Precision,
    /// Threads large ops are split across (0: [`cpu::thread_count`]).
    pub threads: usize,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            function: None,
            isa: cpu::selected_isa(),
            precision: Precision::Exact,
            threads: 0,
        }
    }
}

/// Whether [`compile`] runs the elementwise fusion pass ([`plan::fuse`]): only when the
/// environment sets `MILBRIDGE_FUSE=1`. It is off by default: with the compiled trees the
/// fused steps beat the per-op kernels on large tensors (`x + 0.375·f` on [8192, 1024] fp16:
/// 3.5 → 1.7 ms on one thread) and in the fast profile's attention kernels, but on the
/// training step (`milbridge bench train`) the kernels column did not measure faster beyond
/// the machine's noise, with the pattern steps either (see ARCHITECTURE.md, known gaps). The
/// bridge's compile cache keys on it.
pub fn fusion_enabled() -> bool {
    std::env::var_os("MILBRIDGE_FUSE").is_some_and(|value| value == "1")
}

/// Compiles one function of `program` into a plan using the kernel table of `options.isa`,
/// with elementwise fusion when [`fusion_enabled`].
pub fn compile(program: &VerifiedProgram, options: &CompileOptions) -> Result<Plan> {
    compile_inner(program, options, false, fusion_enabled())
}

/// Like [`compile`], but always without the fusion pass (every elementwise op its own step):
/// the baseline fused plans are tested against.
pub fn compile_unfused(program: &VerifiedProgram, options: &CompileOptions) -> Result<Plan> {
    compile_inner(program, options, false, false)
}

/// Like [`compile`], but always with the fusion pass.
pub fn compile_fused(program: &VerifiedProgram, options: &CompileOptions) -> Result<Plan> {
    compile_inner(program, options, false, true)
}

/// Like [`compile`], but with the portable table ([`KernelTable::generic`], no plugged
/// kernels at all): the baseline the tiered tables are tested against.
pub fn compile_portable(program: &VerifiedProgram, options: &CompileOptions) -> Result<Plan> {
    compile_inner(program, options, true, fusion_enabled())
}

fn compile_inner(
    program: &VerifiedProgram,
    options: &CompileOptions,
    portable: bool,
    fuse: bool,
) -> Result<Plan> {
    if !cpu::isa_available(options.isa) {
        return Err(Error::IsaUnavailable(options.isa.name()));
    }
    let ir = program.program();
    let func = match &options.function {
        Some(name) => ir
            .function(name)
            .ok_or_else(|| Error::NoSuchFunction(name.clone()))?,
        None => ir.entry().ok_or(Error::NoFunction)?,
    };
    plan::lower::lower(program, func, options, portable, fuse)
}
