//! Bandwidth-class fp16 ⇄ fp32 conversion, dispatched on the ISA tier at run time.
//!
//! Every tier is bit-exact with the `half` crate: f32 → f16 rounds to nearest-even, overflows
//! to ±inf, keeps NaN a (quiet) NaN; f16 → f32 is exact. The x86 tiers use `vcvtps2ph` /
//! `vcvtph2ps` (F16C on the AVX2 tier, 512-bit forms on AVX-512 and AMX).
#![allow(
    unsafe_code,
    reason = "F16C/AVX-512 conversion intrinsics and raw-pointer entry points"
)]

use half::f16;

use crate::cpu::{self, Isa};
use crate::pool::Pool;

/// Converts `src` to f16 into `dst` with the selected tier. Panics if the lengths differ.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    f32_to_f16_with(cpu::selected_isa(), src, dst);
}

/// Converts `src` to f32 into `dst` with the selected tier. Panics if the lengths differ.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    f16_to_f32_with(cpu::selected_isa(), src, dst);
}

/// [`f32_to_f16`] with an explicit tier. Panics if the lengths differ or the host lacks `isa`.
pub fn f32_to_f16_with(isa: Isa, src: &[f32], dst: &mut [f16]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "f32_to_f16: source and destination lengths differ"
    );
    assert!(
        cpu::isa_available(isa),
        "f32_to_f16: the host lacks the {isa} tier"
    );
    // SAFETY: both slices hold `src.len()` elements and cannot overlap (one is borrowed
    // mutably); the tier was checked above.
    unsafe { f32_to_f16_raw_with(isa, src.as_ptr(), dst.as_mut_ptr(), src.len()) }
}

/// [`f16_to_f32`] with an explicit tier. Panics if the lengths differ or the host lacks `isa`.
pub fn f16_to_f32_with(isa: Isa, src: &[f16], dst: &mut [f32]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "f16_to_f32: source and destination lengths differ"
    );
    assert!(
        cpu::isa_available(isa),
        "f16_to_f32: the host lacks the {isa} tier"
    );
    // SAFETY: both slices hold `src.len()` elements and cannot overlap; tier checked above.
    unsafe { f16_to_f32_raw_with(isa, src.as_ptr(), dst.as_mut_ptr(), src.len()) }
}

/// [`f32_to_f16_with`] split into contiguous chunks over `pool` (the bulk weight-update path:
/// one core's conversion runs below memory bandwidth on large buffers). Buffers under 256 KiB
/// are converted on the calling thread. Panics as [`f32_to_f16_with`].
pub fn f32_to_f16_par(isa: Isa, pool: &Pool, src: &[f32], dst: &mut [f16]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "f32_to_f16_par: source and destination lengths differ"
    );
    assert!(
        cpu::isa_available(isa),
        "f32_to_f16_par: the host lacks the {isa} tier"
    );
    const MIN_CHUNK: usize = 64 * 1024;
    let n = src.len();
    let chunks = (n / MIN_CHUNK).clamp(1, pool.n_threads());
    if chunks == 1 {
        return f32_to_f16_with(isa, src, dst);
    }
    // Chunk boundaries on 64-element multiples keep every chunk's stores cache-line aligned
    // relative to the buffer start.
    let per_chunk = n.div_ceil(chunks).next_multiple_of(64);
    struct Shared {
        src: *const f32,
        dst: *mut f16,
    }
    // SAFETY: tasks read disjoint ranges of `src` and write disjoint ranges of `dst`, both
    // borrowed for the whole `run` below.
    unsafe impl Sync for Shared {}
    let shared = Shared {
        src: src.as_ptr(),
        dst: dst.as_mut_ptr(),
    };
    let shared = &shared;
    pool.run(n.div_ceil(per_chunk), &|chunk| {
        let start = chunk * per_chunk;
        let len = per_chunk.min(n - start);
        // SAFETY: `start + len <= n`; chunks are disjoint; the tier was checked above.
        unsafe { f32_to_f16_raw_with(isa, shared.src.add(start), shared.dst.add(start), len) }
    });
}

/// Converts `n` values at `src` to f16 at `dst` with the selected tier, for memory that can't
/// be borrowed as slices (shared surfaces).
///
/// # Safety
/// `src` must be valid for reading and `dst` for writing `n` elements, and the two ranges must
/// not overlap. No other thread may write either range during the call.
pub unsafe fn f32_to_f16_raw(src: *const f32, dst: *mut f16, n: usize) {
    // SAFETY: forwarded to the caller; the selected tier is available by construction.
    unsafe { f32_to_f16_raw_with(cpu::selected_isa(), src, dst, n) }
}

/// Converts `n` f16 values at `src` to f32 at `dst` with the selected tier.
///
/// # Safety
/// As for [`f32_to_f16_raw`].
pub unsafe fn f16_to_f32_raw(src: *const f16, dst: *mut f32, n: usize) {
    // SAFETY: forwarded to the caller; the selected tier is available by construction.
    unsafe { f16_to_f32_raw_with(cpu::selected_isa(), src, dst, n) }
}

/// [`f32_to_f16_raw`] with an explicit tier.
///
/// # Safety
/// As for [`f32_to_f16_raw`], and the host must support `isa` ([`cpu::isa_available`]).
pub unsafe fn f32_to_f16_raw_with(isa: Isa, src: *const f32, dst: *mut f16, n: usize) {
    if n == 0 {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => {
            // SAFETY: the caller guarantees the ranges and that the host has AVX-512 (F, BW, VL).
            unsafe { x86::f32_to_f16_avx512(src, dst, n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the caller guarantees the ranges and that the host has AVX2 + F16C.
            unsafe { x86::f32_to_f16_avx2(src, dst, n) }
        }
        _ => {
            // SAFETY: the caller guarantees `n` readable/writable, non-overlapping elements.
            let (src, dst) = unsafe {
                (
                    std::slice::from_raw_parts(src, n),
                    std::slice::from_raw_parts_mut(dst, n),
                )
            };
            for (out, &value) in dst.iter_mut().zip(src) {
                *out = f16::from_f32(value);
            }
        }
    }
}

/// [`f16_to_f32_raw`] with an explicit tier.
///
/// # Safety
/// As for [`f32_to_f16_raw`], and the host must support `isa` ([`cpu::isa_available`]).
pub unsafe fn f16_to_f32_raw_with(isa: Isa, src: *const f16, dst: *mut f32, n: usize) {
    if n == 0 {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => {
            // SAFETY: the caller guarantees the ranges and that the host has AVX-512 (F, BW, VL).
            unsafe { x86::f16_to_f32_avx512(src, dst, n) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the caller guarantees the ranges and that the host has AVX2 + F16C.
            unsafe { x86::f16_to_f32_avx2(src, dst, n) }
        }
        _ => {
            // SAFETY: the caller guarantees `n` readable/writable, non-overlapping elements.
            let (src, dst) = unsafe {
                (
                    std::slice::from_raw_parts(src, n),
                    std::slice::from_raw_parts_mut(dst, n),
                )
            };
            for (out, value) in dst.iter_mut().zip(src) {
                *out = value.to_f32();
            }
        }
    }
}

/// Rounds an f32 to bf16 bits, round-to-nearest-even, NaN kept quiet (as `half::bf16`).
#[inline(always)]
pub(crate) fn bf16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        ((bits >> 16) | 0x40) as u16
    } else {
        ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    /// Round-to-nearest-even, exceptions suppressed (AVX-512 form).
    const ROUND_NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    /// Round-to-nearest-even (F16C takes only the 3-bit rounding field).
    const ROUND_NEAREST_F16C: i32 = _MM_FROUND_TO_NEAREST_INT;

    /// # Safety
    /// `src`/`dst` valid for `n` elements, non-overlapping; host has AVX-512 F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn f32_to_f16_avx512(src: *const f32, dst: *mut f16, n: usize) {
        let mut idx = 0;
        while idx + 32 <= n {
            // SAFETY: idx + 32 <= n, so both 16-lane loads and stores stay in range.
            unsafe {
                let lo = _mm512_loadu_ps(src.add(idx));
                let hi = _mm512_loadu_ps(src.add(idx + 16));
                _mm256_storeu_si256(dst.add(idx).cast(), _mm512_cvtps_ph::<ROUND_NEAREST>(lo));
                _mm256_storeu_si256(
                    dst.add(idx + 16).cast(),
                    _mm512_cvtps_ph::<ROUND_NEAREST>(hi),
                );
            }
            idx += 32;
        }
        while idx < n {
            let lanes = (n - idx).min(16);
            let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the masked load/store touch only the `lanes` elements left in range.
            unsafe {
                let values = _mm512_maskz_loadu_ps(mask, src.add(idx));
                let halves = _mm512_cvtps_ph::<ROUND_NEAREST>(values);
                _mm256_mask_storeu_epi16(dst.add(idx).cast(), mask, halves);
            }
            idx += lanes;
        }
    }

    /// # Safety
    /// `src`/`dst` valid for `n` elements, non-overlapping; host has AVX-512 F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn f16_to_f32_avx512(src: *const f16, dst: *mut f32, n: usize) {
        let mut idx = 0;
        while idx + 32 <= n {
            // SAFETY: idx + 32 <= n, so both loads and stores stay in range.
            unsafe {
                let lo = _mm256_loadu_si256(src.add(idx).cast());
                let hi = _mm256_loadu_si256(src.add(idx + 16).cast());
                _mm512_storeu_ps(dst.add(idx), _mm512_cvtph_ps(lo));
                _mm512_storeu_ps(dst.add(idx + 16), _mm512_cvtph_ps(hi));
            }
            idx += 32;
        }
        while idx < n {
            let lanes = (n - idx).min(16);
            let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the masked load/store touch only the `lanes` elements left in range.
            unsafe {
                let halves = _mm256_maskz_loadu_epi16(mask, src.add(idx).cast());
                _mm512_mask_storeu_ps(dst.add(idx), mask, _mm512_cvtph_ps(halves));
            }
            idx += lanes;
        }
    }

    /// # Safety
    /// `src`/`dst` valid for `n` elements, non-overlapping; host has AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f32_to_f16_avx2(src: *const f32, dst: *mut f16, n: usize) {
        let mut idx = 0;
        while idx + 8 <= n {
            // SAFETY: idx + 8 <= n keeps the 8-lane load and store in range.
            unsafe {
                let values = _mm256_loadu_ps(src.add(idx));
                _mm_storeu_si128(
                    dst.add(idx).cast(),
                    _mm256_cvtps_ph::<ROUND_NEAREST_F16C>(values),
                );
            }
            idx += 8;
        }
        if idx < n {
            let rest = n - idx;
            let mut wide = [0f32; 8];
            let mut narrow = [f16::ZERO; 8];
            // SAFETY: `rest` < 8 elements remain at `src + idx`; `wide` holds 8.
            unsafe { std::ptr::copy_nonoverlapping(src.add(idx), wide.as_mut_ptr(), rest) };
            // SAFETY: both stack buffers hold 8 lanes.
            unsafe {
                let halves = _mm256_cvtps_ph::<ROUND_NEAREST_F16C>(_mm256_loadu_ps(wide.as_ptr()));
                _mm_storeu_si128(narrow.as_mut_ptr().cast(), halves);
            }
            // SAFETY: `rest` elements fit at `dst + idx`.
            unsafe { std::ptr::copy_nonoverlapping(narrow.as_ptr(), dst.add(idx), rest) };
        }
    }

    /// # Safety
    /// `src`/`dst` valid for `n` elements, non-overlapping; host has AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_to_f32_avx2(src: *const f16, dst: *mut f32, n: usize) {
        let mut idx = 0;
        while idx + 8 <= n {
            // SAFETY: idx + 8 <= n keeps the 8-lane load and store in range.
            unsafe {
                let halves = _mm_loadu_si128(src.add(idx).cast());
                _mm256_storeu_ps(dst.add(idx), _mm256_cvtph_ps(halves));
            }
            idx += 8;
        }
        if idx < n {
            let rest = n - idx;
            let mut narrow = [f16::ZERO; 8];
            let mut wide = [0f32; 8];
            // SAFETY: `rest` < 8 elements remain at `src + idx`; `narrow` holds 8.
            unsafe { std::ptr::copy_nonoverlapping(src.add(idx), narrow.as_mut_ptr(), rest) };
            // SAFETY: both stack buffers hold 8 lanes.
            unsafe {
                let values = _mm256_cvtph_ps(_mm_loadu_si128(narrow.as_ptr().cast()));
                _mm256_storeu_ps(wide.as_mut_ptr(), values);
            }
            // SAFETY: `rest` elements fit at `dst + idx`.
            unsafe { std::ptr::copy_nonoverlapping(wide.as_ptr(), dst.add(idx), rest) };
        }
    }

    /// `half`'s own slice conversion, the reference for the tests.
    #[cfg(test)]
    pub(super) fn reference_from_f32(src: &[f32]) -> Vec<f16> {
        use half::slice::HalfFloatSliceExt;
        let mut out = vec![f16::ZERO; src.len()];
        out.convert_from_f32_slice(src);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&isa| {
                let ok = cpu::isa_available(isa);
                if !ok {
                    eprintln!("convert: skipping tier {isa} (not available on this host)");
                }
                ok
            })
            .collect()
    }

    #[test]
    fn every_f16_to_f32_is_bit_exact() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for isa in tiers() {
            // Odd offsets and lengths exercise the tails.
            for (start, end) in [(0, all.len()), (3, all.len() - 5)] {
                let src = &all[start..end];
                let mut out = vec![0f32; src.len()];
                f16_to_f32_with(isa, src, &mut out);
                for (value, got) in src.iter().zip(&out) {
                    assert_eq!(
                        got.to_bits(),
                        value.to_f32().to_bits(),
                        "{isa}: f16 {value:?}"
                    );
                }
            }
        }
    }

    fn f32_edge_cases() -> Vec<f32> {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0x7fc1_2345),
            f32::from_bits(0xffbf_ffff),
            f32::MIN_POSITIVE,
            5.960_464_5e-8,
            2.980_232_2e-8,
            2.980_233e-8,
            6.1035156e-5,
            6.097555e-5,
            1e-9,
        ];
        // Around every f16 value: exact ties, one ulp either side of the tie.
        for bits in (0..=u16::MAX).step_by(7) {
            let here = f16::from_bits(bits).to_f32();
            let next = f16::from_bits(bits.wrapping_add(1)).to_f32();
            if here.is_finite() && next.is_finite() {
                let tie = (here as f64 + next as f64) / 2.0;
                let tie = tie as f32;
                values.extend([
                    tie,
                    f32::from_bits(tie.to_bits().wrapping_add(1)),
                    f32::from_bits(tie.to_bits().wrapping_sub(1)),
                ]);
            }
        }
        // A pseudo-random sweep of raw bit patterns.
        let mut state = 0x1234_5678_u32;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            values.push(f32::from_bits(state));
        }
        values
    }

    #[test]
    fn f32_to_f16_rounding_is_bit_exact() {
        let values = f32_edge_cases();
        let expected: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        #[cfg(target_arch = "x86_64")]
        {
            let slice_ref = x86::reference_from_f32(&values);
            for (a, b) in slice_ref.iter().zip(&expected) {
                assert_eq!(a.to_bits(), *b);
            }
        }
        for isa in tiers() {
            for (start, end) in [(0, values.len()), (1, values.len() - 3)] {
                let src = &values[start..end];
                let mut out = vec![f16::ZERO; src.len()];
                f32_to_f16_with(isa, src, &mut out);
                for ((value, got), want) in src.iter().zip(&out).zip(&expected[start..end]) {
                    assert_eq!(
                        got.to_bits(),
                        *want,
                        "{isa}: f32 {value:e} ({:#010x})",
                        value.to_bits()
                    );
                }
            }
        }
    }

    #[test]
    fn parallel_conversion_matches_serial() {
        let pool = Pool::new(3);
        for isa in tiers() {
            for n in [0usize, 5, 64 * 1024 - 1, 200_003] {
                let src: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 70_000.0).collect();
                let mut serial = vec![f16::ZERO; n];
                let mut parallel = vec![f16::ONE; n];
                f32_to_f16_with(isa, &src, &mut serial);
                f32_to_f16_par(isa, &pool, &src, &mut parallel);
                assert!(
                    serial
                        .iter()
                        .zip(&parallel)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa}: n = {n}"
                );
            }
        }
    }

    #[test]
    fn short_and_empty_buffers() {
        for isa in tiers() {
            for len in 0..40 {
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 3.0).collect();
                let mut mid = vec![f16::ZERO; len];
                let mut back = vec![0f32; len];
                f32_to_f16_with(isa, &src, &mut mid);
                f16_to_f32_with(isa, &mid, &mut back);
                for ((value, half), wide) in src.iter().zip(&mid).zip(&back) {
                    assert_eq!(half.to_bits(), f16::from_f32(*value).to_bits());
                    assert_eq!(wide.to_bits(), half.to_f32().to_bits());
                }
            }
        }
    }

    #[test]
    fn raw_entry_points() {
        let src = [1.5f32, -2.25, 1e6, f32::NAN];
        let mut mid = [f16::ZERO; 4];
        let mut back = [0f32; 4];
        // SAFETY: arrays of 4 elements, distinct.
        unsafe { f32_to_f16_raw(src.as_ptr(), mid.as_mut_ptr(), 4) };
        // SAFETY: arrays of 4 elements, distinct.
        unsafe { f16_to_f32_raw(mid.as_ptr(), back.as_mut_ptr(), 4) };
        assert_eq!(&back[..2], &[1.5, -2.25]);
        assert!(back[2].is_infinite() && back[3].is_nan());
        let mut plain = [f16::ZERO; 4];
        f32_to_f16(&src, &mut plain);
        assert_eq!(plain.map(f16::to_bits), mid.map(f16::to_bits));
        let mut wide = [0f32; 4];
        f16_to_f32(&plain, &mut wide);
        assert_eq!(wide.map(f32::to_bits), back.map(f32::to_bits));
    }

    #[test]
    fn bf16_rounding_matches_half() {
        for value in f32_edge_cases() {
            assert_eq!(
                bf16_bits(value),
                half::bf16::from_f32(value).to_bits(),
                "{value:e}"
            );
        }
    }
}
