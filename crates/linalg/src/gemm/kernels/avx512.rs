//! AVX-512 microkernel `avx512_gemm_f32_12x32`: 12 rows × 2 zmm (32 columns) = 24 zmm
//! accumulators, one B row (2 zmm) and a broadcast per k, FMA on both ports. Panels as in the
//! module docs. Also the kernel of the AMX tier in `Precision::Exact`.
#![allow(unsafe_code, reason = "AVX-512 intrinsics on raw panel pointers")]

use std::arch::x86_64::*;

use super::amx::{load_run, mask16, transpose_16x16};
use super::{MicroKernel, PanelSrc, Simd, f32_kernel_body, pack_f32_panel};
use crate::cpu::Isa;

/// 512-bit f32 vectors.
pub(crate) struct Zmm;

impl Simd for Zmm {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(ptr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and a readable `ptr`.
        unsafe { _mm512_set1_ps(*ptr) }
    }

    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable values.
        unsafe { _mm512_loadu_ps(ptr) }
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut f32, value: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable values.
        unsafe { _mm512_storeu_ps(ptr, value) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, acc: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn prefetch(ptr: *const f32) {
        // SAFETY: a prefetch never faults; the caller guarantees the tier (SSE suffices).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
    }
}

/// # Safety
/// As for [`MicroKernel::kernel`]; the host has AVX-512 F.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn kernel_12x32(
    kc_pad: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: isize,
    load_c: bool,
) {
    // SAFETY: forwarded; this function is compiled for the Zmm tier.
    unsafe { f32_kernel_body::<Zmm, 12, 2>(kc_pad, a, b, c, rs_c, load_c) }
}

/// Packs a k-major f32 panel (`dst[k * R + mn]`, as [`pack_f32_panel`]) with vector code for
/// the two common sources: `mn` contiguous (a row-major B, a transposed A) moves runs of up to
/// 16 lanes per k; `k` contiguous (a row-major A, a transposed B such as a `[out][in]`
/// weight) transposes 16 × 16 blocks in registers. Other strides use the portable packer.
/// f16 sources are widened exactly (`vcvtph2ps`); padding lanes are written as zeros.
///
/// # Safety
/// As for [`pack_f32_panel`]; the host has AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn pack<const R: usize>(src: PanelSrc, valid: usize, kc: usize, dst: *mut f32) {
    let vectors = R.div_ceil(16);
    if src.mn_stride == 1 {
        for k in 0..kc {
            let line = k as isize * src.k_stride;
            for vec_idx in 0..vectors {
                let first = 16 * vec_idx;
                let load_mask = mask16(valid.saturating_sub(first));
                let store_mask = mask16(R - first);
                // SAFETY: loads cover lanes mn < `valid` at this k (inside the view per the
                // caller); stores cover lanes mn < R of row k of the panel.
                unsafe {
                    let values = load_run(src.ptr, line + first as isize, load_mask);
                    _mm512_mask_storeu_ps(dst.add(k * R + first), store_mask, values);
                }
            }
        }
    } else if src.k_stride == 1 {
        for k0 in (0..kc).step_by(16) {
            let k_mask = mask16(kc - k0);
            let k_len = (kc - k0).min(16);
            for vec_idx in 0..vectors {
                let first = 16 * vec_idx;
                let store_mask = mask16(R - first);
                let mut lines = [_mm512_setzero_si512(); 16];
                for (lane, line) in lines.iter_mut().enumerate() {
                    let mn = first + lane;
                    if mn < valid {
                        // SAFETY: k0..k0 + k_len of line `mn` (< valid) are inside the view.
                        let values = unsafe {
                            load_run(src.ptr, mn as isize * src.mn_stride + k0 as isize, k_mask)
                        };
                        *line = _mm512_castps_si512(values);
                    }
                }
                // SAFETY: register-only; AVX-512 F present.
                let columns = unsafe { transpose_16x16(&lines) };
                for (k_idx, column) in columns.iter().take(k_len).enumerate() {
                    // SAFETY: row k0 + k_idx < kc of the panel, lanes mn < R.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            dst.add((k0 + k_idx) * R + first),
                            store_mask,
                            _mm512_castsi512_ps(*column),
                        );
                    }
                }
            }
        }
    } else {
        // SAFETY: forwarded; the tier is present.
        unsafe { pack_f32_panel::<R>(Isa::Avx512, src, valid, kc, dst) }
    }
}

/// The AVX-512 f32 kernel.
pub(crate) struct Avx512;

impl MicroKernel for Avx512 {
    const NAME: &'static str = "avx512_gemm_f32_12x32";
    const MR: usize = 12;
    const NR: usize = 32;
    const KU: usize = 1;
    const MC: usize = 192;
    const KC: usize = 768;
    const NC: usize = 512;
    const ISA: Isa = Isa::Avx512;
    type Elem = f32;
    type Session = ();

    unsafe fn begin() {}

    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack::<12>(src, rows, kc, dst) }
    }

    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack::<32>(src, cols, kc, dst) }
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
        unsafe { kernel_12x32(kc_pad, a, b, c, rs_c, load_c) }
    }
}
