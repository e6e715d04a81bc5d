//! The AVX2 (+FMA, F16C) and AVX-512 (F/BW/VL) tiers of the elementwise kernels: [`Simd`]
//! over `__m256` and `__m512`. Every method is `#[inline(always)]` and is only ever inlined
//! into a function compiled with the matching `#[target_feature]` (see `ew::kernels`).
#![allow(unsafe_code, reason = "AVX2/AVX-512 intrinsics on raw pointers")]

use std::arch::x86_64::*;

use half::f16;

use super::simd::Simd;

/// 256-bit vectors: AVX2 + FMA + F16C.
pub(crate) struct Avx2;

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(value: f32) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_set1_ps(value) }
    }

    #[inline(always)]
    unsafe fn load_f32(ptr: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and 8 readable values.
        unsafe { _mm256_loadu_ps(ptr) }
    }

    #[inline(always)]
    unsafe fn store_f32(ptr: *mut f32, value: __m256) {
        // SAFETY: the caller guarantees AVX and 8 writable values.
        unsafe { _mm256_storeu_ps(ptr, value) }
    }

    #[inline(always)]
    unsafe fn load_f16(ptr: *const f16) -> __m256 {
        // SAFETY: the caller guarantees F16C and 8 readable halves (16 bytes).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(ptr.cast())) }
    }

    #[inline(always)]
    unsafe fn store_f16(ptr: *mut f16, value: __m256) {
        // SAFETY: the caller guarantees F16C and 8 writable halves.
        unsafe {
            _mm_storeu_si128(
                ptr.cast(),
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(value),
            )
        }
    }

    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_sub_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_div_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_max_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_min_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn sqrt(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_sqrt_ps(a) }
    }

    #[inline(always)]
    unsafe fn round(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }

    #[inline(always)]
    unsafe fn pow2i(n: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2; `n` is integral in [-127, 127], so the biased
        // exponent is in [0, 254] and the shift builds 2^n (0 for n = -127).
        unsafe {
            let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        }
    }

    #[inline(always)]
    unsafe fn reduce_add(a: __m256) -> f32 {
        // SAFETY: the caller guarantees AVX.
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            let single = _mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair));
            _mm_cvtss_f32(single)
        }
    }

    #[inline(always)]
    unsafe fn reduce_max(a: __m256) -> f32 {
        // SAFETY: the caller guarantees AVX.
        unsafe {
            let quad = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let pair = _mm_max_ps(quad, _mm_movehl_ps(quad, quad));
            let single = _mm_max_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair));
            _mm_cvtss_f32(single)
        }
    }

    #[inline(always)]
    unsafe fn swap_pairs(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_permute_ps::<0b10_11_00_01>(a) }
    }

    #[inline(always)]
    unsafe fn load_dup_pairs(ptr: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 4 readable values.
        unsafe {
            let half = _mm256_castps128_ps256(_mm_loadu_ps(ptr));
            let index = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            _mm256_permutevar8x32_ps(half, index)
        }
    }

    #[inline(always)]
    unsafe fn negate_even(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe {
            let signs = _mm256_setr_ps(-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 0.0);
            _mm256_xor_ps(a, signs)
        }
    }

    type M = __m256;

    #[inline(always)]
    unsafe fn lt(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }

    #[inline(always)]
    unsafe fn eq(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
    }

    #[inline(always)]
    unsafe fn is_nan(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a) }
    }

    #[inline(always)]
    unsafe fn mask_or(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_or_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn select(mask: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX; `mask` lanes are all ones or all zeros.
        unsafe { _mm256_blendv_ps(b, a, mask) }
    }

    #[inline(always)]
    unsafe fn and(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_and_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn or(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_or_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn exponent(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2; the biased exponent field minus 127.
        unsafe {
            let biased = _mm256_srli_epi32::<23>(_mm256_castps_si256(a));
            let field = _mm256_and_si256(biased, _mm256_set1_epi32(0xff));
            _mm256_cvtepi32_ps(_mm256_sub_epi32(field, _mm256_set1_epi32(127)))
        }
    }

    #[inline(always)]
    unsafe fn mantissa(a: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2; the fraction bits under the exponent of 1.
        unsafe {
            let fraction = _mm256_and_si256(_mm256_castps_si256(a), _mm256_set1_epi32(0x007f_ffff));
            _mm256_castsi256_ps(_mm256_or_si256(fraction, _mm256_set1_epi32(0x3f80_0000)))
        }
    }
}

/// 512-bit vectors: AVX-512 F/BW/VL.
pub(crate) struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(value: f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_set1_ps(value) }
    }

    #[inline(always)]
    unsafe fn load_f32(ptr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable values.
        unsafe { _mm512_loadu_ps(ptr) }
    }

    #[inline(always)]
    unsafe fn store_f32(ptr: *mut f32, value: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable values.
        unsafe { _mm512_storeu_ps(ptr, value) }
    }

    #[inline(always)]
    unsafe fn load_f16(ptr: *const f16) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable halves (32 bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(ptr.cast())) }
    }

    #[inline(always)]
    unsafe fn store_f16(ptr: *mut f16, value: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable halves.
        unsafe {
            _mm256_storeu_si256(
                ptr.cast(),
                _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(value),
            )
        }
    }

    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_div_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_min_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn sqrt(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_sqrt_ps(a) }
    }

    #[inline(always)]
    unsafe fn round(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }

    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F; `n` is integral in [-127, 127], so the
        // biased exponent is in [0, 254] and the shift builds 2^n (0 for n = -127).
        unsafe {
            let biased = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
        }
    }

    #[inline(always)]
    unsafe fn reduce_add(a: __m512) -> f32 {
        // SAFETY: the caller guarantees AVX-512F (and AVX for the 256-bit half).
        unsafe {
            let low = _mm512_castps512_ps256(a);
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
            Avx2::reduce_add(_mm256_add_ps(low, high))
        }
    }

    #[inline(always)]
    unsafe fn reduce_max(a: __m512) -> f32 {
        // SAFETY: the caller guarantees AVX-512F (and AVX for the 256-bit half).
        unsafe {
            let low = _mm512_castps512_ps256(a);
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
            Avx2::reduce_max(_mm256_max_ps(low, high))
        }
    }

    #[inline(always)]
    unsafe fn swap_pairs(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_permute_ps::<0b10_11_00_01>(a) }
    }

    #[inline(always)]
    unsafe fn load_dup_pairs(ptr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 8 readable values.
        unsafe {
            let half = _mm512_castps256_ps512(_mm256_loadu_ps(ptr));
            let index = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            _mm512_permutexvar_ps(index, half)
        }
    }

    #[inline(always)]
    unsafe fn negate_even(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let signs = _mm512_castsi512_ps(_mm512_set1_epi64(0x8000_0000));
            _mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(a),
                _mm512_castps_si512(signs),
            ))
        }
    }

    type M = __mmask16;

    #[inline(always)]
    unsafe fn lt(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }

    #[inline(always)]
    unsafe fn eq(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b) }
    }

    #[inline(always)]
    unsafe fn is_nan(a: __m512) -> __mmask16 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) }
    }

    #[inline(always)]
    unsafe fn mask_or(a: __mmask16, b: __mmask16) -> __mmask16 {
        a | b
    }

    #[inline(always)]
    unsafe fn select(mask: __mmask16, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F; set mask bits take `a`.
        unsafe { _mm512_mask_blend_ps(mask, b, a) }
    }

    #[inline(always)]
    unsafe fn and(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (integer form: `vandps` needs DQ).
        unsafe {
            _mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            ))
        }
    }

    #[inline(always)]
    unsafe fn or(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F (integer form: `vorps` needs DQ).
        unsafe {
            _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            ))
        }
    }

    #[inline(always)]
    unsafe fn exponent(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_getexp_ps(a) }
    }

    #[inline(always)]
    unsafe fn mantissa(a: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_getmant_ps::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(a) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::primitive_checks::check;
    use super::{Avx2, Avx512};
    use crate::cpu::{self, Isa};

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn check_avx2() {
        // SAFETY: compiled for AVX2; the caller checked the host.
        unsafe { check::<Avx2>() }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn check_avx512() {
        // SAFETY: compiled for AVX-512; the caller checked the host.
        unsafe { check::<Avx512>() }
    }

    #[test]
    fn x86_primitives() {
        if cpu::isa_available(Isa::Avx2) {
            // SAFETY: the host has AVX2.
            unsafe { check_avx2() }
        } else {
            eprintln!("skipped avx2: not available on this host");
        }
        if cpu::isa_available(Isa::Avx512) {
            // SAFETY: the host has AVX-512.
            unsafe { check_avx512() }
        } else {
            eprintln!("skipped avx512: not available on this host");
        }
    }
}
