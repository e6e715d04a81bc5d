//! Timing helpers behind `milbridge bench gemm`: they own their buffers and return per-repetition
//! wall times, so the CLI (which has no `unsafe`) only formats. Nothing here is used by tests
//! as a timed check.
//!
//! * [`GemmTimer`]: one product shape (batched, with transposed operands and optionally a
//!   pre-packed B) timed through our GEMM on any tier, and, with the `reference` feature,
//!   through the `gemm` crate (f32, same thread count) in the same process; and through
//!   OpenBLAS (`cblas_sgemm`, f32) and oneDNN (bf16 matmul primitive) when [`crate::reflib`]
//!   finds them at run time, each result checked against ours ([`GemmTimer::check_reference`]).
//! * [`time_repack`]: a weight's `write_weight_f32`-style update (f32 → f16 conversion plus
//!   [`PackedB::repack_with`]) against a plain `memcpy` of the same f32 bytes.
//! * [`time_gemm`] / [`time_gemm_with`]: the original single-product helpers.
#![allow(
    unsafe_code,
    reason = "calls the unsafe GEMM entry points on buffers it owns"
)]

use std::time::Instant;

use half::{bf16, f16};

use crate::convert;
use crate::cpu::{self, Isa};
use crate::gemm::{self, GemmSpec, MatMut, MatRef, PackedA, PackedB, Precision};
use crate::pool::Pool;
use crate::reflib::{DnnlMatmul, OneDnn, OpenBlas, RefLibError};

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
    let packed = config
        .packed_b
        .then(|| unsafe { PackedB::pack_with(&spec, &pool, b) });
    let run = || match &packed {
        // SAFETY: the views cover the live, disjoint buffers allocated above.
        Some(packed) => unsafe { gemm::gemm_packed_b(&spec, &pool, a, packed, c) },
        // SAFETY: as above.
        None => unsafe { gemm::gemm(&spec, &pool, a, b, c) },
    };
    run();
    time_reps(config.reps, run)
}

/// GFLOP/s of an `m × n × k` product that took `seconds`.
pub fn gflops(m: usize, n: usize, k: usize, seconds: f64) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64 / seconds / 1e9
}

/// How a benchmark operand is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// Row-major with the operand's own shape.
    RowMajor,
    /// The transposed view of a row-major buffer of the swapped shape (e.g. `Wᵀ` of a stored
    /// `W`, or `Xᵀ` of stored activations).
    Transposed,
}

impl Operand {
    fn view(self, ptr: *const f32, rows: usize, cols: usize) -> MatRef {
        match self {
            Operand::RowMajor => MatRef::f32_row_major(ptr, rows, cols),
            Operand::Transposed => MatRef::f32_row_major(ptr, cols, rows).t(),
        }
    }

    /// (row stride, column stride) of a `rows × cols` operand stored this way.
    fn strides(self, rows: usize, cols: usize) -> (isize, isize) {
        match self {
            Operand::RowMajor => (cols as isize, 1),
            Operand::Transposed => (1, rows as isize),
        }
    }
}

/// One benchmark product: `batch` independent `C (m × n) = A (m × k) · B (k × n)`, f32 in and
/// out, C row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmCase {
    /// Independent products (each with its own A, B and C).
    pub batch: usize,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Shared dimension.
    pub k: usize,
    /// How A is stored.
    pub a: Operand,
    /// How B is stored.
    pub b: Operand,
    /// B is a weight packed once up front ([`PackedB`]); only with `batch == 1`.
    pub packed_b: bool,
    /// A is a weight packed once up front ([`PackedA`], the trainer's `W·x`); only with
    /// `batch == 1`, not together with `packed_b`.
    pub packed_a: bool,
}

impl GemmCase {
    /// Floating-point operations of the whole case (`2·batch·m·n·k`).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Buffers of one [`GemmCase`], reused across tiers and the reference libraries.
#[derive(Debug)]
pub struct GemmTimer {
    case: GemmCase,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    /// The last OpenBLAS / oneDNN result (allocated on first use).
    c_reference: Vec<f32>,
    /// A and B rounded to bf16 for oneDNN (converted once, on first use).
    bf16_operands: Option<(Vec<bf16>, Vec<bf16>)>,
}

/// How far a reference library's last result is from ours (see [`GemmTimer::check_reference`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReferenceCheck {
    /// `max |reference − ours| / max |ours|` over every cell of every batch entry.
    pub versus_ours: f64,
    /// The reference's largest sampled error against an f64 product, relative to each
    /// cell's `Σ|a|·|b|` (as [`GemmTimer::max_rel_error`] for ours).
    pub versus_f64: f64,
}

impl ReferenceCheck {
    /// Both deviations are at most `bound`.
    pub fn within(&self, bound: f64) -> bool {
        self.versus_ours <= bound && self.versus_f64 <= bound
    }
}

impl GemmTimer {
    /// Allocates and fills the operands (deterministic values in [-0.5, 0.5)).
    ///
    /// Panics if `packed_b` or `packed_a` is set with `batch > 1`, or both are set.
    pub fn new(case: GemmCase) -> GemmTimer {
        assert!(
            !(case.packed_b || case.packed_a) || case.batch == 1,
            "GemmTimer: a packed operand needs batch 1, got {}",
            case.batch
        );
        assert!(
            !(case.packed_b && case.packed_a),
            "GemmTimer: pack A or B, not both"
        );
        let GemmCase { batch, m, n, k, .. } = case;
        GemmTimer {
            case,
            a: fill(batch * m * k, 1),
            b: fill(batch * k * n, 2),
            c: vec![0.0; batch * m * n],
            c_reference: Vec::new(),
            bf16_operands: None,
        }
    }

    /// The case.
    pub fn case(&self) -> GemmCase {
        self.case
    }

    fn views(&mut self) -> (MatRef, MatRef, MatMut) {
        let GemmCase { m, n, k, .. } = self.case;
        (
            self.case.a.view(self.a.as_ptr(), m, k),
            self.case.b.view(self.b.as_ptr(), k, n),
            MatMut::f32_row_major(self.c.as_mut_ptr(), m, n),
        )
    }

    /// Seconds per repetition through our GEMM with `isa`/`precision` on `pool` (after one
    /// untimed warm-up; a packed A or B is packed once, untimed).
    ///
    /// Panics if the host lacks `isa`.
    pub fn time(&mut self, isa: Isa, precision: Precision, pool: &Pool, reps: usize) -> Vec<f64> {
        assert!(
            cpu::isa_available(isa),
            "GemmTimer::time: the host lacks the {isa} tier"
        );
        let spec = GemmSpec {
            isa,
            precision,
            accumulate: false,
        };
        let GemmCase { batch, m, n, k, .. } = self.case;
        let (a, b, c) = self.views();
        let packed = self
            .case
            .packed_b
            // SAFETY: `b` views the live `self.b`.
            .then(|| unsafe { PackedB::pack_with(&spec, pool, b) });
        let packed_a = self
            .case
            .packed_a
            // SAFETY: `a` views the live `self.a`.
            .then(|| unsafe { PackedA::pack_with(&spec, pool, a) });
        let run = || match (&packed, &packed_a) {
            // SAFETY: the views cover `self`'s live, disjoint buffers.
            (Some(packed), _) => unsafe { gemm::gemm_packed_b(&spec, pool, a, packed, c) },
            // SAFETY: as above.
            (None, Some(packed)) => unsafe { gemm::gemm_packed_a(&spec, pool, packed, b, c) },
            // SAFETY: as above; batch entries are `m·k`, `k·n` and `m·n` apart.
            (None, None) => unsafe {
                gemm::gemm_batched(
                    &spec,
                    pool,
                    batch,
                    a,
                    (m * k) as isize,
                    b,
                    (k * n) as isize,
                    c,
                    (m * n) as isize,
                )
            },
        };
        run();
        time_reps(reps, run)
    }

    /// Seconds per repetition of the kernel loop alone for this case with `isa`/`precision`
    /// on `pool`: A and B packed once (untimed) into the panels the driver would use, then
    /// the driver's work items and loop order with C kept in per-item scratch — no A
    /// packing, no C written back. Against [`GemmTimer::time`] on a prepacked B it separates
    /// the tile loop from packing A and writing C. Leaves the case's C untouched.
    ///
    /// Panics if the host lacks `isa` or the case is batched.
    pub fn time_tile_loop(
        &mut self,
        isa: Isa,
        precision: Precision,
        pool: &Pool,
        reps: usize,
    ) -> Vec<f64> {
        assert!(
            cpu::isa_available(isa),
            "GemmTimer::time_tile_loop: the host lacks the {isa} tier"
        );
        assert_eq!(
            self.case.batch, 1,
            "GemmTimer::time_tile_loop: one product, not a batch"
        );
        let spec = GemmSpec {
            isa,
            precision,
            accumulate: false,
        };
        let (a, b, _) = self.views();
        // SAFETY: the views cover `self`'s live buffers.
        unsafe { gemm::time_tile_loop(&spec, pool, a, b, reps) }
    }

    /// Seconds per repetition of the same case through the `gemm` crate (f32, `threads`
    /// threads of rayon's pool; a batch runs its products one after the other).
    #[cfg(feature = "reference")]
    pub fn time_reference(&mut self, threads: usize, reps: usize) -> Vec<f64> {
        let GemmCase { batch, m, n, k, .. } = self.case;
        let (a_rs, a_cs) = self.case.a.strides(m, k);
        let (b_rs, b_cs) = self.case.b.strides(k, n);
        let parallelism = if threads > 1 {
            ::gemm::Parallelism::Rayon(threads)
        } else {
            ::gemm::Parallelism::None
        };
        let (a, b, c) = (self.a.as_ptr(), self.b.as_ptr(), self.c.as_mut_ptr());
        let run = || {
            for entry in 0..batch {
                // SAFETY: entry `entry` of each buffer holds the m × k, k × n and m × n
                // matrices the strides describe; C is disjoint from A and B.
                unsafe {
                    ::gemm::gemm(
                        m,
                        n,
                        k,
                        c.add(entry * m * n),
                        1,
                        n as isize,
                        false,
                        a.add(entry * m * k),
                        a_cs,
                        a_rs,
                        b.add(entry * k * n),
                        b_cs,
                        b_rs,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
            }
        };
        run();
        time_reps(reps, run)
    }

    /// Seconds per repetition of the same case through OpenBLAS's `cblas_sgemm` (f32, after
    /// one untimed warm-up; `threads` set with `openblas_set_num_threads`; a batch runs its
    /// products one after the other; operands passed as they are stored, transposed ones with
    /// `CblasTrans`). The result goes to a buffer of its own, for
    /// [`GemmTimer::check_reference`].
    ///
    /// # Errors
    /// A dimension OpenBLAS's `int` cannot hold.
    pub fn time_openblas(
        &mut self,
        blas: &OpenBlas,
        threads: usize,
        reps: usize,
    ) -> Result<Vec<f64>, RefLibError> {
        blas.set_threads(threads);
        let GemmCase { batch, m, n, k, .. } = self.case;
        let (a_t, b_t) = (
            self.case.a == Operand::Transposed,
            self.case.b == Operand::Transposed,
        );
        self.c_reference.resize(batch * m * n, 0.0);
        let (a, b, c) = (&self.a, &self.b, &mut self.c_reference);
        let mut run = || {
            for entry in 0..batch {
                blas.sgemm(
                    (m, n, k),
                    &a[entry * m * k..][..m * k],
                    a_t,
                    &b[entry * k * n..][..k * n],
                    b_t,
                    &mut c[entry * m * n..][..m * n],
                )?;
            }
            Ok::<(), RefLibError>(())
        };
        run()?;
        time_fallible(reps, run)
    }

    /// Seconds per repetition of the same case through oneDNN's matmul primitive, bf16 A and
    /// B to f32 C (`threads` OpenMP threads). Untimed: rounding A and B to bf16 (once per
    /// timer), creating the primitive (once per call of this function) and one warm-up
    /// execution. Timed: each execution (binding the three buffers, running the primitive —
    /// a batch is one 3-D primitive — and waiting for the stream), which repacks B inside
    /// every call as PyTorch's plain-layout matmul does. Returns the implementation oneDNN
    /// chose (e.g. `brg:avx512_core_amx_bf16`) with the times; the result goes to the same
    /// buffer as [`GemmTimer::time_openblas`]'s.
    ///
    /// # Errors
    /// oneDNN rejecting the descriptors or failing to execute.
    pub fn time_onednn(
        &mut self,
        dnnl: &OneDnn,
        threads: usize,
        reps: usize,
    ) -> Result<(String, Vec<f64>), RefLibError> {
        dnnl.set_threads(threads);
        let GemmCase { batch, m, n, k, .. } = self.case;
        let matmul = DnnlMatmul::new(
            dnnl,
            (batch, m, n, k),
            self.case.a == Operand::Transposed,
            self.case.b == Operand::Transposed,
        )?;
        let (a, b) = self.bf16_operands.get_or_insert_with(|| {
            let round = |values: &[f32]| values.iter().map(|&v| bf16::from_f32(v)).collect();
            (round(&self.a), round(&self.b))
        });
        self.c_reference.resize(batch * m * n, 0.0);
        let c = &mut self.c_reference;
        let mut run = || matmul.run(a, b, c);
        run()?;
        let times = time_fallible(reps, run)?;
        Ok((matmul.implementation().to_string(), times))
    }

    /// Checks the last OpenBLAS / oneDNN result against ours: runs our GEMM once with
    /// `isa`/`precision` on `pool` (overwriting our result) and compares every cell, then
    /// samples the reference against an f64 product. Call it before reporting a reference's
    /// time: a wrong binding must not print a number.
    ///
    /// Panics if no reference has run on this timer or the host lacks `isa`.
    pub fn check_reference(
        &mut self,
        isa: Isa,
        precision: Precision,
        pool: &Pool,
    ) -> ReferenceCheck {
        assert_eq!(
            self.c_reference.len(),
            self.c.len(),
            "GemmTimer::check_reference: no reference result to check"
        );
        // Zero repetitions: the warm-up alone, one product into `self.c`.
        self.time(isa, precision, pool, 0);
        let (mut largest, mut worst) = (0f64, 0f64);
        for (&ours, &theirs) in self.c.iter().zip(&self.c_reference) {
            largest = largest.max((ours as f64).abs());
            let difference = (theirs as f64 - ours as f64).abs();
            worst = if difference.is_nan() {
                f64::INFINITY
            } else {
                worst.max(difference)
            };
        }
        let versus_ours = worst / largest.max(1e-30);
        ReferenceCheck {
            versus_ours,
            versus_f64: self.sampled_error(&self.c_reference),
        }
    }

    /// The largest relative difference (to the cell's `Σ|a|·|b|` scale) between our last
    /// result and a naive f64 product, over a sample of cells of batch entry 0: a sanity
    /// check that the timed run computed the product.
    pub fn max_rel_error(&self) -> f64 {
        self.sampled_error(&self.c)
    }

    /// [`GemmTimer::max_rel_error`] of the result in `c`.
    fn sampled_error(&self, c: &[f32]) -> f64 {
        let GemmCase { m, n, k, .. } = self.case;
        let (a_rs, a_cs) = self.case.a.strides(m, k);
        let (b_rs, b_cs) = self.case.b.strides(k, n);
        let at = |buf: &[f32], rs: isize, cs: isize, row: usize, col: usize| {
            buf[(row as isize * rs + col as isize * cs) as usize] as f64
        };
        let mut worst = 0f64;
        for sample in 0..64usize {
            let row = sample * 7919 % m;
            let col = sample * 104_729 % n;
            let (mut sum, mut scale) = (0f64, 0f64);
            for inner in 0..k {
                let product =
                    at(&self.a, a_rs, a_cs, row, inner) * at(&self.b, b_rs, b_cs, inner, col);
                sum += product;
                scale += product.abs();
            }
            let got = c[row * n + col] as f64;
            let error = (got - sum).abs() / scale.max(1e-30);
            worst = if error.is_nan() {
                f64::INFINITY
            } else {
                worst.max(error)
            };
        }
        worst
    }
}

/// Times of one weight update, seconds per repetition (see [`time_repack`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RepackTimes {
    /// `memcpy` of the f32 weight (k·n·4 bytes) into another buffer: the yardstick.
    pub memcpy: Vec<f64>,
    /// f32 → f16 conversion of the weight (what `write_weight_f32` does to an fp16 surface),
    /// split over the pool ([`convert::f32_to_f16_par`]).
    pub convert: Vec<f64>,
    /// [`PackedB::repack_with`] from the f16 copy.
    pub repack: Vec<f64>,
    /// The whole update in one sweep: [`PackedB::repack_converting_with`] (convert into the
    /// f16 copy and repack from it, block by block).
    pub update: Vec<f64>,
}

/// Times a `k × n` weight update on `pool`: convert the f32 values to f16, then repack the
/// f16 copy for `(isa, precision)`'s kernel; `source` says whether the stored weight is B
/// itself (`RowMajor`, `[k][n]`) or `Bᵀ` (`Transposed`, `[n][k]`, a linear layer's
/// `[out][in]`). Each list has `reps` entries after one warm-up.
///
/// Panics if the host lacks `isa`.
pub fn time_repack(
    isa: Isa,
    precision: Precision,
    pool: &Pool,
    k: usize,
    n: usize,
    source: Operand,
    reps: usize,
) -> RepackTimes {
    assert!(
        cpu::isa_available(isa),
        "time_repack: the host lacks the {isa} tier"
    );
    let spec = GemmSpec {
        isa,
        precision,
        accumulate: false,
    };
    let values = fill(k * n, 3);
    let mut copy = vec![0f32; k * n];
    let mut halves = vec![f16::ZERO; k * n];
    let view = match source {
        Operand::RowMajor => MatRef::f16_row_major(halves.as_ptr(), k, n),
        Operand::Transposed => MatRef::f16_row_major(halves.as_ptr(), n, k).t(),
    };
    // SAFETY: `view` covers the live `halves`, not written during the call.
    let mut packed = unsafe { PackedB::pack_with(&spec, pool, view) };
    let memcpy = {
        let mut run = || copy.copy_from_slice(&values);
        run();
        time_reps(reps, &mut run)
    };
    let convert_once = |halves: &mut [f16]| convert::f32_to_f16_par(isa, pool, &values, halves);
    convert_once(&mut halves);
    let convert = time_reps(reps, || convert_once(&mut halves));
    let repack = {
        // SAFETY: as for `pack_with` above; `halves` is not written while the view is used.
        let mut run = || unsafe { packed.repack_with(pool, view) };
        run();
        time_reps(reps, &mut run)
    };
    let update = {
        let copy_view = match source {
            Operand::RowMajor => MatMut::f16_row_major(halves.as_mut_ptr(), k, n),
            Operand::Transposed => MatMut::f16_row_major(halves.as_mut_ptr(), n, k).t(),
        };
        let values_view = match source {
            Operand::RowMajor => MatRef::f32_row_major(values.as_ptr(), k, n),
            Operand::Transposed => MatRef::f32_row_major(values.as_ptr(), n, k).t(),
        };
        // SAFETY: `values_view` and `copy_view` cover the live, disjoint `values` and
        // `halves`; nothing else uses them during the call.
        let mut run = || unsafe { packed.repack_converting_with(pool, values_view, copy_view) };
        run();
        time_reps(reps, &mut run)
    };
    std::hint::black_box(&copy);
    RepackTimes {
        memcpy,
        convert,
        repack,
        update,
    }
}

/// Deterministic values in [-0.5, 0.5).
fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + seed) % 1013) as f32 / 1013.0) - 0.5)
        .collect()
}

/// Seconds of each of `reps` calls of `run`.
fn time_reps(reps: usize, mut run: impl FnMut()) -> Vec<f64> {
    let timed = time_fallible(reps, || {
        run();
        Ok::<(), std::convert::Infallible>(())
    });
    match timed {
        Ok(times) => times,
        Err(never) => match never {},
    }
}

/// Seconds of each of `reps` calls of `run`, stopping at the first error.
fn time_fallible<E>(reps: usize, mut run: impl FnMut() -> Result<(), E>) -> Result<Vec<f64>, E> {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            run()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_computes_the_product_on_every_tier() {
        let pool = Pool::new(2);
        for isa in Isa::ALL {
            if !cpu::isa_available(isa) {
                eprintln!("bench: skipping tier {isa} (not available on this host)");
                continue;
            }
            for (a, b, packed_b, packed_a, batch) in [
                (Operand::RowMajor, Operand::RowMajor, true, false, 1),
                (Operand::RowMajor, Operand::RowMajor, false, true, 1),
                (Operand::Transposed, Operand::RowMajor, false, false, 1),
                (Operand::RowMajor, Operand::Transposed, false, false, 3),
            ] {
                let mut timer = GemmTimer::new(GemmCase {
                    batch,
                    m: 37,
                    n: 53,
                    k: 70,
                    a,
                    b,
                    packed_b,
                    packed_a,
                });
                let precision = if isa == Isa::Amx {
                    Precision::Fast
                } else {
                    Precision::Exact
                };
                let times = timer.time(isa, precision, &pool, 2);
                assert_eq!(times.len(), 2);
                let bound = if isa == Isa::Amx { 1e-2 } else { 1e-5 };
                let error = timer.max_rel_error();
                assert!(error < bound, "{isa} {a:?} {b:?}: error {error}");
            }
        }
    }

    /// The cases the reference tests run: plain, transposed A, transposed B, batched.
    fn reference_cases() -> [GemmCase; 3] {
        let case = |batch, a, b| GemmCase {
            batch,
            m: 37,
            n: 53,
            k: 70,
            a,
            b,
            packed_b: false,
            packed_a: false,
        };
        [
            case(1, Operand::RowMajor, Operand::RowMajor),
            case(1, Operand::Transposed, Operand::RowMajor),
            case(3, Operand::RowMajor, Operand::Transposed),
        ]
    }

    /// The f32 tier to check f32 references against.
    fn f32_tier() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Generic]
            .into_iter()
            .find(|&isa| cpu::isa_available(isa))
            .expect("generic is always available")
    }

    #[test]
    fn openblas_matches_our_gemm_when_installed() {
        let blas = match OpenBlas::load() {
            Ok(blas) => blas,
            Err(error) => {
                eprintln!(
                    "bench: SKIPPING the OpenBLAS reference check: {error} \
                     (install it with scripts/install-bench-refs)"
                );
                return;
            }
        };
        let pool = Pool::new(2);
        for case in reference_cases() {
            let mut timer = GemmTimer::new(case);
            let times = timer.time_openblas(&blas, 2, 2).expect("sgemm");
            assert_eq!(times.len(), 2);
            let check = timer.check_reference(f32_tier(), Precision::Exact, &pool);
            assert!(check.within(1e-5), "{case:?}: {check:?}");
        }
    }

    #[test]
    fn onednn_matches_our_gemm_when_installed() {
        let dnnl = match OneDnn::load() {
            Ok(dnnl) => dnnl,
            Err(error) => {
                eprintln!(
                    "bench: SKIPPING the oneDNN reference check: {error} \
                     (install it with scripts/install-bench-refs)"
                );
                return;
            }
        };
        let pool = Pool::new(2);
        // Against our bf16 tile kernel where the host has one: both round the operands to
        // bf16 and accumulate in f32, so only the summation order differs.
        let (isa, precision, bound) = if cpu::isa_available(Isa::Amx) {
            (Isa::Amx, Precision::Fast, 1e-4)
        } else {
            (f32_tier(), Precision::Exact, 2e-2)
        };
        for case in reference_cases() {
            let mut timer = GemmTimer::new(case);
            let (implementation, times) = timer.time_onednn(&dnnl, 2, 2).expect("matmul");
            assert!(!implementation.is_empty());
            assert_eq!(times.len(), 2);
            let check = timer.check_reference(isa, precision, &pool);
            assert!(check.within(2e-2), "{case:?}: {check:?}");
            assert!(check.versus_ours <= bound, "{case:?} vs {isa}: {check:?}");
        }
    }

    #[test]
    fn a_wrong_reference_result_fails_the_check() {
        let pool = Pool::new(1);
        let mut timer = GemmTimer::new(reference_cases()[0]);
        // A result that is not the product: a reference binding gone wrong.
        timer.c_reference = vec![0.25; timer.c.len()];
        let check = timer.check_reference(Isa::Generic, Precision::Exact, &pool);
        assert!(!check.within(1e-2), "{check:?}");
        timer.c_reference[0] = f32::NAN;
        let check = timer.check_reference(Isa::Generic, Precision::Exact, &pool);
        assert!(check.versus_ours.is_infinite(), "{check:?}");
    }

    #[test]
    fn repack_times_have_one_entry_per_rep() {
        let pool = Pool::new(2);
        let isa = cpu::host_isa();
        let times = time_repack(isa, Precision::Fast, &pool, 40, 70, Operand::Transposed, 3);
        for list in [&times.memcpy, &times.convert, &times.repack, &times.update] {
            assert_eq!(list.len(), 3);
            assert!(list.iter().all(|&t| t >= 0.0));
        }
    }
}
