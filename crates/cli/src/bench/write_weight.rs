//! `milbridge bench write-weight [--json FILE] [--reps N] [--k K] [--n N] [--seq S]`: the
//! bridge's `write_weight_f32` of a `k × n` fp16 weight end to end (lock, f32 → f16 into the
//! surface, GEMM panels repacked in the same sweep: issue #5) against a plain `memcpy` of the
//! same f32 bytes, and the eval of the kernel with its weight prepacked against the same
//! kernel packing the weight on every eval (its surface shared, `Kernel::share_surface`).
//! The target: the write within 2 × the memcpy.
//!
//! Two kernels per tier: `W·x` (maderix/ANE's and the trainer's params orientation,
//! `y = matmul(W, x)`: the weight is the GEMM's A, prepacked as linalg's `PackedA`) and `x·W`
//! (the weight is B, prepacked as `PackedB`).

use std::hint::black_box;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use milbridge_bridge::{CachePolicy, Kernel, KernelOptions, Slot, samples};
use milbridge_engine::Precision;
use milbridge_linalg::Isa;
use serde::Serialize;

use super::{load_average, load_note, min_median_max, parse_tiers};

/// Arguments of `milbridge bench write-weight`.
#[derive(Args, Debug, Clone)]
pub struct WriteWeightBenchArgs {
    /// Also write the rows as a JSON array to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Timed repetitions per row (after one warm-up).
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    /// Tiers to time, comma-separated (default: every tier this host has).
    #[arg(long, value_delimiter = ',', value_name = "TIER,...")]
    pub tiers: Vec<String>,
    /// The weight's input dimension (the product's depth).
    #[arg(long, default_value_t = 768)]
    pub k: usize,
    /// The weight's output dimension.
    #[arg(long, default_value_t = 2048)]
    pub n: usize,
    /// Activation columns (sequence length) of the eval timings.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
}

/// One result row.
#[derive(Serialize, Debug, Clone)]
struct Row {
    tier: &'static str,
    precision: &'static str,
    kernel: &'static str,
    prepacked: bool,
    k: usize,
    n: usize,
    seq: usize,
    memcpy_min_ms: f64,
    memcpy_median_ms: f64,
    write_min_ms: f64,
    write_median_ms: f64,
    write_over_memcpy: f64,
    write_unpacked_median_ms: f64,
    eval_packed_median_ms: f64,
    eval_per_eval_packing_median_ms: f64,
    load_average: Option<f64>,
}

/// Seconds of each of `reps` runs of `run`, after one warm-up run.
fn time(reps: usize, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    run()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// `milbridge bench write-weight`.
///
/// # Errors
/// Bad arguments, a kernel that fails to compile or evaluate, or an unwritable JSON file.
pub fn run(args: &WriteWeightBenchArgs) -> Result<()> {
    ensure!(args.reps > 0, "--reps must be at least 1");
    ensure!(
        args.k > 0 && args.n > 0 && args.seq > 0,
        "--k, --n and --seq must be positive"
    );
    let tiers = parse_tiers(&args.tiers)?;
    let (k, n, seq) = (args.k, args.n, args.seq);
    let values: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7 % 1001) as f32 - 500.0) / 2000.0)
        .collect();
    let x: Vec<f32> = (0..k * seq)
        .map(|i| ((i * 3 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let mut memcpy_dst = vec![0f32; k * n];
    let load_before = load_average();
    let mut rows = Vec::new();
    for &isa in &tiers {
        let precisions: &[Precision] = if isa == Isa::Amx {
            &[Precision::Exact, Precision::Fast]
        } else {
            &[Precision::Exact]
        };
        for &precision in precisions {
            let options = KernelOptions {
                precision,
                isa: Some(isa),
                cache: CachePolicy::Disabled,
                function: None,
            };
            for (label, text) in [
                ("W.x (weight is A)", samples::dyn_matmul(n, k, seq)),
                ("x.W (weight is B)", samples::dyn_matmul_right(seq, k, n)),
            ] {
                let compile = || -> Result<Kernel> {
                    let kernel = Kernel::compile_dyn(
                        &text,
                        &[2 * k * seq],
                        &[2 * k * n],
                        &[2 * n * seq],
                        &options,
                    )
                    .context("compiling the benchmark kernel")?;
                    kernel.write_input_f32(0, &x)?;
                    Ok(kernel)
                };
                let mut packed = compile()?;
                let mut unpacked = compile()?;
                unpacked.share_surface(Slot::Weight, 0)?;
                let prepacked = packed.weight_is_prepacked(0);
                let memcpy = time(args.reps, || {
                    memcpy_dst.copy_from_slice(black_box(&values));
                    black_box(&memcpy_dst);
                    Ok(())
                })?;
                let write = time(args.reps, || Ok(packed.write_weight_f32(0, &values)?))?;
                let write_unpacked =
                    time(args.reps, || Ok(unpacked.write_weight_f32(0, &values)?))?;
                let eval_packed = time(args.reps, || Ok(packed.eval()?))?;
                let eval_unpacked = time(args.reps, || Ok(unpacked.eval()?))?;
                let ms = |values: &[f64]| {
                    let (min, median, _) = min_median_max(values);
                    (1e3 * min, 1e3 * median)
                };
                let (memcpy_min_ms, memcpy_median_ms) = ms(&memcpy);
                let (write_min_ms, write_median_ms) = ms(&write);
                rows.push(Row {
                    tier: isa.name(),
                    precision: match precision {
                        Precision::Exact => "exact",
                        Precision::Fast => "fast",
                    },
                    kernel: label,
                    prepacked,
                    k,
                    n,
                    seq,
                    memcpy_min_ms,
                    memcpy_median_ms,
                    write_min_ms,
                    write_median_ms,
                    write_over_memcpy: write_median_ms / memcpy_median_ms,
                    write_unpacked_median_ms: ms(&write_unpacked).1,
                    eval_packed_median_ms: ms(&eval_packed).1,
                    eval_per_eval_packing_median_ms: ms(&eval_unpacked).1,
                    load_average: load_before,
                });
            }
        }
    }
    let load_after = load_average();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "milbridge bench write-weight: {k}x{n} fp16 weight written from f32, seq {seq}; ms"
    )?;
    writeln!(out, "{}", load_note(load_before, load_after))?;
    writeln!(
        out,
        "{:<7} {:<6} {:<18} {:<4} {:>15} {:>15} {:>9} {:>9} {:>9} {:>9}",
        "tier",
        "prec",
        "kernel",
        "pkd",
        "memcpy min/med",
        "write min/med",
        "wr/memcpy",
        "wr-nopack",
        "eval pkd",
        "eval raw"
    )?;
    for row in &rows {
        writeln!(
            out,
            "{:<7} {:<6} {:<18} {:<4} {:>7.3}/{:<7.3} {:>7.3}/{:<7.3} {:>9.2} {:>9.3} {:>9.3} {:>9.3}",
            row.tier,
            row.precision,
            row.kernel,
            if row.prepacked { "yes" } else { "no" },
            row.memcpy_min_ms,
            row.memcpy_median_ms,
            row.write_min_ms,
            row.write_median_ms,
            row.write_over_memcpy,
            row.write_unpacked_median_ms,
            row.eval_packed_median_ms,
            row.eval_per_eval_packing_median_ms
        )?;
    }
    writeln!(
        out,
        "memcpy: the f32 values into another buffer (1 thread); write: Kernel::write_weight_f32 \
         with the panels repacked (issue #5); wr-nopack: the same write into a kernel whose \
         weight surface is shared (no panels: conversion only); eval pkd / eval raw: median \
         eval with the prepacked weight / packing it on every eval; pkd: whether the bridge \
         prepacks the weight (W·x: as the GEMM's A, x·W: as its B)"
    )?;
    drop(out);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).context("serialising the rows")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
