//! Measured machine peak per tier, the denominator of `milbridge bench gemm`'s efficiency.
//!
//! * Amx: a bare `tdpbf16ps` loop on register tiles (4 independent accumulators).
//! * Avx512: `vfmadd` on 12 independent zmm accumulators (keeps both FMA ports busy).
//! * Avx2: the same on 12 ymm accumulators.
//! * Generic: the portable multiply-add the generic kernel compiles to, 4 × 8 lanes.
//!
//! Each of `threads` pool tasks runs the loop; the result is total flops over wall time, best
//! of a few repetitions.
#![allow(unsafe_code, reason = "FMA intrinsics and the AMX peak loop")]

use std::hint::black_box;
use std::time::Instant;

use crate::cpu::{self, Isa};
use crate::pool::Pool;

/// Peak GFLOP/s of `isa` on `threads` threads (at most the pool's), measured now.
///
/// Panics if the host lacks `isa`.
pub fn measure_peak_gflops(isa: Isa, threads: usize, pool: &Pool) -> f64 {
    assert!(
        cpu::isa_available(isa),
        "measure_peak_gflops: the host lacks the {isa} tier"
    );
    let threads = threads.clamp(1, pool.n_threads());
    let iterations: u64 = match isa {
        Isa::Amx => 100_000,
        Isa::Avx512 | Isa::Avx2 => 1_000_000,
        Isa::Generic => 1_000_000,
    };
    let run_once = || {
        let start = Instant::now();
        pool.run(threads, &|_| {
            // SAFETY: the tier was checked above.
            black_box(unsafe { peak_loop(isa, iterations) });
        });
        start.elapsed().as_secs_f64()
    };
    run_once();
    let best = (0..5).map(|_| run_once()).fold(f64::INFINITY, f64::min);
    threads as f64 * flops_per_iteration(isa) * iterations as f64 / best / 1e9
}

fn flops_per_iteration(isa: Isa) -> f64 {
    match isa {
        Isa::Amx => 4.0 * 16.0 * 16.0 * 32.0 * 2.0,
        Isa::Avx512 => 12.0 * 16.0 * 2.0,
        Isa::Avx2 => 12.0 * 8.0 * 2.0,
        Isa::Generic => 4.0 * 8.0 * 2.0,
    }
}

/// Runs the peak loop of `isa` for `iterations`; returns the flops done.
///
/// # Safety
/// The host supports `isa`.
unsafe fn peak_loop(isa: Isa, iterations: u64) -> f64 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees the Amx tier.
        Isa::Amx => unsafe { crate::gemm::kernels::amx::peak_loop(iterations) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees AVX-512 F.
        Isa::Avx512 => unsafe { x86::fma_loop_avx512(iterations) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees AVX2 + FMA.
        Isa::Avx2 => unsafe { x86::fma_loop_avx2(iterations) },
        _ => portable_loop(iterations),
    }
}

fn portable_loop(iterations: u64) -> f64 {
    let scale = black_box([1.000_001f32; 8]);
    let shift = black_box([0.999_999f32; 8]);
    let mut acc = [[0f32; 8]; 4];
    for _ in 0..iterations {
        for row in acc.iter_mut() {
            for lane in 0..8 {
                row[lane] = row[lane] * scale[lane] + shift[lane];
            }
        }
    }
    black_box(acc);
    iterations as f64 * flops_per_iteration(Isa::Generic)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::flops_per_iteration;
    use crate::cpu::Isa;

    /// # Safety
    /// The host has AVX-512 F.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn fma_loop_avx512(iterations: u64) -> f64 {
        let scale = _mm512_set1_ps(black_box(1.000_001));
        let shift = _mm512_set1_ps(black_box(0.999_999));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iterations {
            for value in acc.iter_mut() {
                *value = _mm512_fmadd_ps(*value, scale, shift);
            }
        }
        black_box(acc);
        iterations as f64 * flops_per_iteration(Isa::Avx512)
    }

    /// # Safety
    /// The host has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_loop_avx2(iterations: u64) -> f64 {
        let scale = _mm256_set1_ps(black_box(1.000_001));
        let shift = _mm256_set1_ps(black_box(0.999_999));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iterations {
            for value in acc.iter_mut() {
                *value = _mm256_fmadd_ps(*value, scale, shift);
            }
        }
        black_box(acc);
        iterations as f64 * flops_per_iteration(Isa::Avx2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_loops_run_on_every_tier() {
        for isa in Isa::ALL {
            if !cpu::isa_available(isa) {
                eprintln!("peak: skipping tier {isa} (not available on this host)");
                continue;
            }
            // SAFETY: tier checked above.
            let flops = unsafe { peak_loop(isa, 10) };
            assert_eq!(flops, 10.0 * flops_per_iteration(isa));
        }
    }
}
