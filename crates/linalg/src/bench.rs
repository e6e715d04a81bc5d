//! Timing helpers behind `milbridge bench gemm`: they own their buffers and return per-repetition
//! wall times, so the CLI (which has no `unsafe`) only formats. Nothing here is used by tests
//! as a timed check.
//!
//! * [`GemmTimer`]: one product shape (batched, with transposed operands and optionally a
//!   pre-packed B) timed through our GEMM on any tier, and, with the `reference` feature,
//!   through the `gemm` crate (f32, same thread count) in the same process.
//! * [`time_repack`]: a weight's `write_weight_f32`-style update (f32 → f16 conversion plus
//!   [`PackedB::repack_with`]) against a plain `memcpy` of the same f32 bytes.
//! * [`time_gemm`] / [`time_gemm_with`]: the original single-product helpers.
#![allow(
    unsafe_code,
    reason = "calls the unsafe GEMM entry points on buffers it owns"
)]

use std::time::Instant;

use half::f16;

use crate::convert;
use crate::cpu::{self, Isa};
use crate::gemm::{self, GemmSpec, MatMut, MatRef, PackedA, PackedB, Precision};
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

/// Buffers of one [`GemmCase`], reused across tiers and the reference library.
#[derive(Debug)]
pub struct GemmTimer {
    case: GemmCase,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
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

    /// The largest relative difference (to the cell's `Σ|a|·|b|` scale) between our last
    /// result and a naive f64 product, over a sample of cells of batch entry 0: a sanity
    /// check that the timed run computed the product.
    pub fn max_rel_error(&self) -> f64 {
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
            let got = self.c[row * n + col] as f64;
            worst = worst.max((got - sum).abs() / scale.max(1e-30));
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
        time_reps_mut(reps, &mut run)
    };
    let convert_once = |halves: &mut [f16]| convert::f32_to_f16_par(isa, pool, &values, halves);
    convert_once(&mut halves);
    let convert = time_reps_mut(reps, &mut || convert_once(&mut halves));
    let repack = {
        // SAFETY: as for `pack_with` above; `halves` is not written while the view is used.
        let mut run = || unsafe { packed.repack_with(pool, view) };
        run();
        time_reps_mut(reps, &mut run)
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
        time_reps_mut(reps, &mut run)
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

fn time_reps(reps: usize, run: impl Fn()) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect()
}

fn time_reps_mut(reps: usize, run: &mut dyn FnMut()) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
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
