//! `milbridge bench repack [--json FILE] [--reps N] [--threads T]`: the cost of a weight
//! update — what `write_weight_f32` does to an fp16 weight (f32 → f16 conversion) followed by
//! repacking the packed B panels of every GEMM kernel — against a plain `memcpy` of the same
//! f32 weight. The target is an update within 2 × the memcpy.
//!
//! The weight is stored `[in][out]` (`k × n`, "B") or `[out][in]` (`n × k`, "Bᵀ", a linear
//! layer's layout); both are timed for each tier's kernel.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use milbridge_linalg::bench::{Operand, time_repack};
use milbridge_linalg::gemm::{Precision, kernel_name_for};
use milbridge_linalg::{Isa, Pool, cpu};
use serde::Serialize;

use super::{load_average, load_note, min_median_max, parse_tiers};

/// Arguments of `milbridge bench repack`.
#[derive(Args, Debug, Clone)]
pub struct RepackBenchArgs {
    /// Also write the rows as a JSON array to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Timed repetitions per row (after one warm-up).
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    /// Threads, the caller included (default: MILBRIDGE_THREADS or every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tiers whose packing layout to time, comma-separated (default: every tier this host has).
    #[arg(long, value_delimiter = ',', value_name = "TIER,...")]
    pub tiers: Vec<String>,
    /// Rows of B (the weight's input dimension).
    #[arg(long, default_value_t = 768)]
    pub k: usize,
    /// Columns of B (the weight's output dimension).
    #[arg(long, default_value_t = 2048)]
    pub n: usize,
}

/// One result row.
#[derive(Serialize, Debug, Clone)]
struct Row {
    tier: &'static str,
    kernel: &'static str,
    layout: &'static str,
    k: usize,
    n: usize,
    threads: usize,
    memcpy_ms: f64,
    convert_ms: f64,
    repack_ms: f64,
    update_ms: f64,
    update_over_memcpy: f64,
    load_average: Option<f64>,
}

/// `milbridge bench repack`.
///
/// # Errors
/// Bad arguments or an unwritable JSON file.
pub fn run(args: &RepackBenchArgs) -> Result<()> {
    ensure!(args.reps > 0, "--reps must be at least 1");
    ensure!(args.k > 0 && args.n > 0, "--k and --n must be positive");
    let tiers = parse_tiers(&args.tiers)?;
    let threads = args.threads.unwrap_or_else(cpu::thread_count);
    ensure!(threads > 0, "--threads must be at least 1");
    let pool = Pool::new(threads);
    let load_before = load_average();
    let mut rows = Vec::new();
    for &isa in &tiers {
        let precision = if isa == Isa::Amx {
            Precision::Fast
        } else {
            Precision::Exact
        };
        for (source, layout) in [
            (Operand::RowMajor, "B [k][n]"),
            (Operand::Transposed, "Bt [n][k]"),
        ] {
            let times = time_repack(isa, precision, &pool, args.k, args.n, source, args.reps);
            // Medians: every part is a memory-bound pass, the typical case is what matters.
            let median_ms = |values: &[f64]| 1e3 * min_median_max(values).1;
            let memcpy_ms = median_ms(&times.memcpy);
            let update_ms = median_ms(&times.update);
            rows.push(Row {
                tier: isa.name(),
                kernel: kernel_name_for(isa, precision, args.k),
                layout,
                k: args.k,
                n: args.n,
                threads,
                memcpy_ms,
                convert_ms: median_ms(&times.convert),
                repack_ms: median_ms(&times.repack),
                update_ms,
                update_over_memcpy: update_ms / memcpy_ms,
                load_average: load_before,
            });
        }
    }
    let load_after = load_average();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "milbridge bench repack: {}x{} weight, {threads} thread(s); medians in ms",
        args.k, args.n
    )?;
    writeln!(out, "{}", load_note(load_before, load_after))?;
    writeln!(
        out,
        "{:<7} {:<22} {:<10} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "tier", "kernel", "layout", "memcpy", "convert", "repack", "update", "upd/memcpy"
    )?;
    for row in &rows {
        writeln!(
            out,
            "{:<7} {:<22} {:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.2}",
            row.tier,
            row.kernel,
            row.layout,
            row.memcpy_ms,
            row.convert_ms,
            row.repack_ms,
            row.update_ms,
            row.update_over_memcpy
        )?;
    }
    writeln!(
        out,
        "memcpy: the f32 weight into another buffer (1 thread); convert: f32 -> f16 ({threads} \
         thread(s)); repack: PackedB::repack_with from the f16 copy; update: both in one sweep \
         (PackedB::repack_converting_with, {threads} thread(s))"
    )?;
    drop(out);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).context("serialising the rows")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
