//! AVX2 + FMA microkernel `avx2_gemm_f32_6x16`: 6 rows × 2 ymm (16 columns) = 12 ymm
//! accumulators, one B row (2 ymm) and a broadcast per k. Panels as in the module docs.
#![allow(unsafe_code, reason = "AVX2/FMA intrinsics on raw panel pointers")]

use std::arch::x86_64::*;

use super::{MicroKernel, PanelSrc, Simd, f32_kernel_body, pack_f32_panel};
use crate::cpu::Isa;

/// 256-bit f32 vectors.
pub(crate) struct Ymm;

impl Simd for Ymm {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(ptr: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and a readable `ptr`.
        unsafe { _mm256_broadcast_ss(&*ptr) }
    }

    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and 8 readable values.
        unsafe { _mm256_loadu_ps(ptr) }
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut f32, value: __m256) {
        // SAFETY: the caller guarantees AVX and 8 writable values.
        unsafe { _mm256_storeu_ps(ptr, value) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, acc: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn prefetch(ptr: *const f32) {
        // SAFETY: a prefetch never faults; the caller guarantees the tier (SSE suffices).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
    }
}

/// # Safety
/// As for [`MicroKernel::kernel`]; the host has AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel_6x16(
    kc_pad: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: isize,
    load_c: bool,
) {
    // SAFETY: forwarded; this function is compiled for the Ymm tier.
    unsafe { f32_kernel_body::<Ymm, 6, 2>(kc_pad, a, b, c, rs_c, load_c) }
}

/// # Safety
/// As for [`pack_f32_panel`]; the host has AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack<const R: usize>(src: PanelSrc, valid: usize, kc: usize, dst: *mut f32) {
    // SAFETY: forwarded; the tier is present.
    unsafe { pack_f32_panel::<R>(Isa::Avx2, src, valid, kc, dst) }
}

/// The AVX2 kernel.
pub(crate) struct Avx2;

impl MicroKernel for Avx2 {
    const NAME: &'static str = "avx2_gemm_f32_6x16";
    const MR: usize = 6;
    const NR: usize = 16;
    const KU: usize = 1;
    const MC: usize = 144;
    const KC: usize = 256;
    const NC: usize = 512;
    const ISA: Isa = Isa::Avx2;
    type Elem = f32;
    type Session = ();

    unsafe fn begin() {}

    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack::<6>(src, rows, kc, dst) }
    }

    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack::<16>(src, cols, kc, dst) }
    }

    unsafe fn kernel(
        _session: &(),
        kc_pad: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: isize,
        load_c: bool,
        _prefetch: *const f32,
    ) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { kernel_6x16(kc_pad, a, b, c, rs_c, load_c) }
    }
}
