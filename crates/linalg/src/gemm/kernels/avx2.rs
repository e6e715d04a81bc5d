//! AVX2 + FMA microkernel `avx2_gemm_f32_6x16`: 6 rows × 2 ymm (16 columns) = 12 ymm
//! accumulators, one B row (2 ymm) and a broadcast per k. Panels as in the module docs.
#![allow(unsafe_code, reason = "AVX2/FMA intrinsics on raw panel pointers")]

use std::arch::x86_64::*;

use super::{MicroKernel, PanelSrc, Simd, f32_kernel_body, pack_f32_panel};
use crate::cpu::Isa;
use crate::gemm::ElemPtr;

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

/// Up to 8 consecutive elements at `offset` from `ptr` widened to f32; lanes `len..` are 0.
///
/// # Safety
/// `len` (≤ 8) elements readable there; AVX2 + F16C.
#[inline(always)]
unsafe fn load_run8(ptr: ElemPtr, offset: isize, len: usize) -> __m256 {
    // SAFETY: a full load only when all 8 are readable; otherwise `len` copied to a local.
    unsafe {
        match ptr {
            ElemPtr::F32(ptr) if len == 8 => _mm256_loadu_ps(ptr.offset(offset)),
            ElemPtr::F16(ptr) if len == 8 => {
                _mm256_cvtph_ps(_mm_loadu_si128(ptr.offset(offset).cast()))
            }
            ElemPtr::F32(ptr) => {
                let mut buf = [0f32; 8];
                std::ptr::copy_nonoverlapping(ptr.offset(offset), buf.as_mut_ptr(), len);
                _mm256_loadu_ps(buf.as_ptr())
            }
            ElemPtr::F16(ptr) => {
                let mut buf = [half::f16::ZERO; 8];
                std::ptr::copy_nonoverlapping(ptr.offset(offset), buf.as_mut_ptr(), len);
                _mm256_cvtph_ps(_mm_loadu_si128(buf.as_ptr().cast()))
            }
        }
    }
}

/// Stores the first `len` (≤ 8) lanes of `value` at `dst`.
///
/// # Safety
/// `len` f32 writable at `dst`; AVX2.
#[inline(always)]
unsafe fn store_run8(dst: *mut f32, len: usize, value: __m256) {
    // SAFETY: a full store only when 8 are writable; the masked store writes `len` lanes.
    unsafe {
        if len == 8 {
            _mm256_storeu_ps(dst, value);
        } else {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lanes);
            _mm256_maskstore_ps(dst, mask, value);
        }
    }
}

/// The transpose of an 8 × 8 f32 matrix held as 8 row vectors.
///
/// # Safety
/// AVX.
#[inline(always)]
unsafe fn transpose_8x8(rows: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: register-only AVX operations.
    unsafe {
        let t0 = _mm256_unpacklo_ps(rows[0], rows[1]);
        let t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
        let t2 = _mm256_unpacklo_ps(rows[2], rows[3]);
        let t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
        let t4 = _mm256_unpacklo_ps(rows[4], rows[5]);
        let t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
        let t6 = _mm256_unpacklo_ps(rows[6], rows[7]);
        let t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// Packs a k-major f32 panel (`dst[k * R + mn]`, as [`pack_f32_panel`]) with vector code:
/// `mn`-contiguous sources move runs of 8 per k, `k`-contiguous ones transpose 8 × 8 blocks;
/// other strides use the portable packer. Padding lanes are zeros.
///
/// # Safety
/// As for [`pack_f32_panel`]; the host has AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack<const R: usize>(src: PanelSrc, valid: usize, kc: usize, dst: *mut f32) {
    let vectors = R.div_ceil(8);
    if src.mn_stride == 1 {
        for k in 0..kc {
            let line = k as isize * src.k_stride;
            for vec_idx in 0..vectors {
                let first = 8 * vec_idx;
                let loaded = valid.saturating_sub(first).min(8);
                // SAFETY: `loaded` lanes (mn < valid) at this k are inside the view; the
                // store covers lanes mn < R of panel row k.
                unsafe {
                    let values = load_run8(src.ptr, line + first as isize, loaded);
                    store_run8(dst.add(k * R + first), (R - first).min(8), values);
                }
            }
        }
    } else if src.k_stride == 1 {
        for k0 in (0..kc).step_by(8) {
            let k_len = (kc - k0).min(8);
            for vec_idx in 0..vectors {
                let first = 8 * vec_idx;
                let mut lines = [_mm256_setzero_ps(); 8];
                for (lane, line) in lines.iter_mut().enumerate() {
                    let mn = first + lane;
                    if mn < valid {
                        // SAFETY: k0..k0 + k_len of line `mn` (< valid) are inside the view.
                        *line = unsafe {
                            load_run8(src.ptr, mn as isize * src.mn_stride + k0 as isize, k_len)
                        };
                    }
                }
                // SAFETY: register-only; AVX present.
                let columns = unsafe { transpose_8x8(lines) };
                for (k_idx, column) in columns.iter().take(k_len).enumerate() {
                    // SAFETY: row k0 + k_idx < kc of the panel, lanes mn < R.
                    unsafe {
                        store_run8(
                            dst.add((k0 + k_idx) * R + first),
                            (R - first).min(8),
                            *column,
                        )
                    };
                }
            }
        }
    } else {
        // SAFETY: forwarded; the tier is present.
        unsafe { pack_f32_panel::<R>(Isa::Avx2, src, valid, kc, dst) }
    }
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
