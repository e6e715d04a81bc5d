//! Timing helpers behind `milbridge bench gemm`: they own their buffers and return per-repetition
//! wall times, so the CLI only formats. Nothing here is used by tests as a timed check.
#![allow(
    unsafe_code,
    reason = "calls the unsafe GEMM entry points on buffers it owns"
)]

use std::time::Instant;

use half::f16;

use crate::cpu::{self, Isa};
use crate::gemm::{self, GemmSpec, MatMut, MatRef, PackedB, Precision};
use crate::pool::Pool;

/// One GEMM benchmark configuration: `C (m × n) = A (m × k) · B (k × n)`, all row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmBench {
    /// Tier to run (must be available).
    pub isa: Isa,
    /// Exact or Fast.
    pub precision: Precision,
    /// Threads of the pool (caller included).
    pub threads: usize,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Shared dimension.
    pub k: usize,
    /// Timed repetitions (one untimed warm-up runs first).
    pub reps: usize,
    /// B packed once up front ([`PackedB`], the weights case) instead of packed per call.
    pub packed_b: bool,
    /// f16 A, B and C instead of f32.
    pub f16_io: bool,
}

impl GemmBench {
    /// Floating-point operations of one product (`2·m·n·k`).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Seconds per repetition of `C = A·B` with B packed once, f32 row-major operands.
pub fn time_gemm(
    isa: Isa,
    precision: Precision,
    threads: usize,
    m: usize,
    n: usize,
    k: usize,
    reps: usize,
) -> Vec<f64> {
    time_gemm_with(&GemmBench {
        isa,
        precision,
        threads,
        m,
        n,
        k,
        reps,
        packed_b: true,
        f16_io: false,
    })
}

/// Seconds per repetition of the configured product (after one warm-up).
///
/// Panics if the host lacks `config.isa`.
pub fn time_gemm_with(config: &GemmBench) -> Vec<f64> {
    assert!(
        cpu::isa_available(config.isa),
        "time_gemm: the host lacks the {} tier",
        config.isa
    );
    let GemmBench { m, n, k, .. } = *config;
    let pool = Pool::new(config.threads);
    let spec = GemmSpec {
        isa: config.isa,
        precision: config.precision,
        accumulate: false,
    };
    let fill = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed) % 1013) as f32 / 1013.0) - 0.5)
            .collect()
    };
    let a32 = fill(m * k, 1);
    let b32 = fill(k * n, 2);
    let a16: Vec<f16> = a32.iter().map(|&v| f16::from_f32(v)).collect();
    let b16: Vec<f16> = b32.iter().map(|&v| f16::from_f32(v)).collect();
    let mut c32 = vec![0f32; m * n];
    let mut c16 = vec![f16::ZERO; m * n];
    let (a, b) = if config.f16_io {
        (
            MatRef::f16_row_major(a16.as_ptr(), m, k),
            MatRef::f16_row_major(b16.as_ptr(), k, n),
        )
    } else {
        (
            MatRef::f32_row_major(a32.as_ptr(), m, k),
            MatRef::f32_row_major(b32.as_ptr(), k, n),
        )
    };
    let c = if config.f16_io {
        MatMut::f16_row_major(c16.as_mut_ptr(), m, n)
    } else {
        MatMut::f32_row_major(c32.as_mut_ptr(), m, n)
    };
    // SAFETY: `b` views a live k × n buffer.
    let packed = config.packed_b.then(|| unsafe { PackedB::pack(&spec, b) });
    let run = || match &packed {
        // SAFETY: the views cover the live, disjoint buffers allocated above.
        Some(packed) => unsafe { gemm::gemm_packed_b(&spec, &pool, a, packed, c) },
        // SAFETY: as above.
        None => unsafe { gemm::gemm(&spec, &pool, a, b, c) },
    };
    run();
    (0..config.reps)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// GFLOP/s of an `m × n × k` product that took `seconds`.
pub fn gflops(m: usize, n: usize, k: usize, seconds: f64) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64 / seconds / 1e9
}
