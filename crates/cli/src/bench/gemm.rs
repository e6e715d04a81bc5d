//! `milbridge bench gemm [--json FILE] [--reps N] [--threads T]`: GEMM throughput of every
//! available tier on the training shapes, side by side with the machine's peak and a reference
//! library, all measured in this one process.
//!
//! Shapes (M = 256 tokens; a weight `W` is stored `[in][out]` = `k × n`):
//!
//! | label | product | (m, n, k) |
//! |---|---|---|
//! | `fwd W<in>x<out> Bpre` | `Y = X·W`, W prepacked once ([`PackedB`](milbridge_linalg::PackedB), as the engine does for weights), untimed | (256, out, in) |
//! | `fwd W<in>x<out> Bcall` | the same, W (f32 `[in][out]`) packed inside every timed call | (256, out, in) |
//! | `dX W<in>x<out> Bpre` | `dX = dY·Wᵀ`, Wᵀ a transposed view, prepacked once, untimed | (256, in, out) |
//! | `dX W<in>x<out> Bcall` | the same, Wᵀ packed inside every timed call | (256, in, out) |
//! | `dW W<in>x<out>` | `dW = Xᵀ·dY`, Xᵀ a transposed view, B (an activation) packed per call | (in, out, 256) |
//! | `fwd W<in>x<out> loop`, `dX W<in>x<out> loop` | the kernel loop alone of the `Bpre` row: A and B packed once (untimed), the driver's work items and loop order, C kept in per-item scratch (no A packing, no C written) | as `Bpre` |
//! | `Wx W<in>x<out> Apre` | `Y = W·X`, the trainer's orientation (W `[out][in]` the left operand, X `[in][256]`), W prepacked once ([`PackedA`](milbridge_linalg::gemm::PackedA), as the engine and bridge do for left-operand weights), untimed | (out, 256, in) |
//! | `Wx W<in>x<out> Acall` | the same, W packed inside every timed call | (out, 256, in) |
//! | `attn QKt x12` | 12 × `Q·Kᵀ` (head dim 64), Kᵀ a transposed view | 12 × (256, 256, 64) |
//! | `attn PV x12` | 12 × `P·V` | 12 × (256, 64, 256) |
//!
//! for `W` in 768×768, 768×2048, 2048×768 and 768×32000 (the `Wx` rows without the
//! classifier). The JSON `b_packing` / `a_packing` fields say which (`prepacked`,
//! `per call`, or `loop only` for the `loop` rows, which have no reference column: set against
//! their `Bpre` row they show what packing A and writing C cost). Inputs and outputs are f32; the AMX
//! tier rounds operands to bf16 (`dtype` bf16), the others compute in f32.
//!
//! Per row: GFLOP/s of the slowest, median and fastest repetition (after one warm-up); the
//! tier's peak measured in this run (bare `tdpbf16ps` loop for AMX, FMA loops for AVX-512 and
//! AVX2, the portable multiply-add for generic: the best of several measurements taken before
//! each row, on the same threads); `ratio_to_peak` = fastest / peak (both are best-case
//! figures, which is what a loaded machine can still compare); and the same product through
//! three reference libraries in the same process, with the same thread count: the `gemm`
//! crate (f32), OpenBLAS (`cblas_sgemm`, f32, what numpy runs) and oneDNN (its bf16 × bf16 →
//! f32 matmul primitive, what PyTorch and JAX run: brgemm on AMX), the last two loaded at run
//! time ([`milbridge_linalg::reflib`]; `-` when absent, `scripts/install-bench-refs` installs
//! them). The references always take the operands as stored (no prepacking): their Bpre and
//! Apre rows pack inside every call. Each row's result is checked against an f64 product on
//! a sample of cells before it is reported, and each OpenBLAS / oneDNN result against ours
//! (every cell) and the f64 product before its time is.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use milbridge_linalg::bench::{GemmCase, GemmTimer, Operand};
use milbridge_linalg::gemm::{Precision, kernel_name_for};
use milbridge_linalg::reflib::{OneDnn, OpenBlas, RefLibError};
use milbridge_linalg::{Isa, Pool, cpu, peak};
use serde::Serialize;

use super::{load_average, load_note, min_median_max, parse_tiers};

/// Arguments of `milbridge bench gemm`.
#[derive(Args, Debug, Clone)]
pub struct GemmBenchArgs {
    /// Also write the rows as a JSON array to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Timed repetitions per row (after one warm-up; fewer when a row would exceed
    /// --budget-ms, never fewer than 3).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Threads, the caller included (default: MILBRIDGE_THREADS or every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tiers to run, comma-separated (default: every tier this host has).
    #[arg(long, value_delimiter = ',', value_name = "TIER,...")]
    pub tiers: Vec<String>,
    /// Only the shapes whose label contains TEXT (e.g. `fwd`, `2048`, `attn`).
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Skip the reference libraries (the `gemm` crate, OpenBLAS and oneDNN).
    #[arg(long)]
    pub no_reference: bool,
    /// Time budget per row and tier in milliseconds (caps the repetitions of slow rows).
    #[arg(long, default_value_t = 3000)]
    pub budget_ms: u64,
}

/// One benchmark shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    label: &'static str,
    case: GemmCase,
    /// Time the kernel loop alone ([`GemmTimer::time_tile_loop`]) instead of the product.
    loop_only: bool,
}

/// The training shapes (see the module docs).
fn shapes() -> Vec<Shape> {
    const TOKENS: usize = 256;
    type Labels = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        [&'static str; 2],
    );
    let weights: [(Labels, usize, usize); 4] = [
        (
            (
                "fwd W768x768 Bpre",
                "fwd W768x768 Bcall",
                "dX W768x768 Bpre",
                "dX W768x768 Bcall",
                "dW W768x768",
                ["fwd W768x768 loop", "dX W768x768 loop"],
            ),
            768,
            768,
        ),
        (
            (
                "fwd W768x2048 Bpre",
                "fwd W768x2048 Bcall",
                "dX W768x2048 Bpre",
                "dX W768x2048 Bcall",
                "dW W768x2048",
                ["fwd W768x2048 loop", "dX W768x2048 loop"],
            ),
            768,
            2048,
        ),
        (
            (
                "fwd W2048x768 Bpre",
                "fwd W2048x768 Bcall",
                "dX W2048x768 Bpre",
                "dX W2048x768 Bcall",
                "dW W2048x768",
                ["fwd W2048x768 loop", "dX W2048x768 loop"],
            ),
            2048,
            768,
        ),
        (
            (
                "fwd W768x32000 Bpre",
                "fwd W768x32000 Bcall",
                "dX W768x32000 Bpre",
                "dX W768x32000 Bcall",
                "dW W768x32000",
                ["fwd W768x32000 loop", "dX W768x32000 loop"],
            ),
            768,
            32000,
        ),
    ];
    let mut shapes = Vec::new();
    for ((fwd, fwd_call, dx, dx_call, dw, [fwd_loop, dx_loop]), inputs, outputs) in weights {
        let case = |m, n, k, a, b, packed_b| GemmCase {
            batch: 1,
            m,
            n,
            k,
            a,
            b,
            packed_b,
            packed_a: false,
        };
        use Operand::{RowMajor, Transposed};
        shapes.push(Shape {
            label: fwd,
            case: case(TOKENS, outputs, inputs, RowMajor, RowMajor, true),
            loop_only: false,
        });
        shapes.push(Shape {
            label: fwd_loop,
            case: case(TOKENS, outputs, inputs, RowMajor, RowMajor, true),
            loop_only: true,
        });
        shapes.push(Shape {
            label: fwd_call,
            case: case(TOKENS, outputs, inputs, RowMajor, RowMajor, false),
            loop_only: false,
        });
        shapes.push(Shape {
            label: dx,
            case: case(TOKENS, inputs, outputs, RowMajor, Transposed, true),
            loop_only: false,
        });
        shapes.push(Shape {
            label: dx_loop,
            case: case(TOKENS, inputs, outputs, RowMajor, Transposed, true),
            loop_only: true,
        });
        shapes.push(Shape {
            label: dx_call,
            case: case(TOKENS, inputs, outputs, RowMajor, Transposed, false),
            loop_only: false,
        });
        shapes.push(Shape {
            label: dw,
            case: case(inputs, outputs, TOKENS, Transposed, RowMajor, false),
            loop_only: false,
        });
    }
    const HEADS: usize = 12;
    const HEAD_DIM: usize = 64;
    shapes.push(Shape {
        label: "attn QKt x12",
        case: GemmCase {
            batch: HEADS,
            m: TOKENS,
            n: TOKENS,
            k: HEAD_DIM,
            a: Operand::RowMajor,
            b: Operand::Transposed,
            packed_b: false,
            packed_a: false,
        },
        loop_only: false,
    });
    shapes.push(Shape {
        label: "attn PV x12",
        case: GemmCase {
            batch: HEADS,
            m: TOKENS,
            n: HEAD_DIM,
            k: TOKENS,
            a: Operand::RowMajor,
            b: Operand::RowMajor,
            packed_b: false,
            packed_a: false,
        },
        loop_only: false,
    });
    // The trainer's orientation, `Y [out × 256] = W [out × in] · X [in × 256]`: the weight is
    // the left operand, prepacked (Apre) or packed per call (Acall), side by side.
    for (pre, call, inputs, outputs) in [
        ("Wx W768x768 Apre", "Wx W768x768 Acall", 768, 768),
        ("Wx W768x2048 Apre", "Wx W768x2048 Acall", 768, 2048),
        ("Wx W2048x768 Apre", "Wx W2048x768 Acall", 2048, 768),
    ] {
        for (label, packed_a) in [(pre, true), (call, false)] {
            shapes.push(Shape {
                label,
                case: GemmCase {
                    batch: 1,
                    m: outputs,
                    n: TOKENS,
                    k: inputs,
                    a: Operand::RowMajor,
                    b: Operand::RowMajor,
                    packed_b: false,
                    packed_a,
                },
                loop_only: false,
            });
        }
    }
    shapes
}

/// `{m, n, k}` of a JSON row.
#[derive(Serialize, Debug, Clone, Copy)]
struct ShapeJson {
    m: usize,
    n: usize,
    k: usize,
}

/// One result row, as written to the JSON file.
#[derive(Serialize, Debug, Clone)]
struct Row {
    label: &'static str,
    shape: ShapeJson,
    batch: usize,
    /// `prepacked` (B packed once, untimed, as the engine packs weights) or `per call`.
    b_packing: &'static str,
    /// `prepacked` (A packed once, untimed, as the engine packs left-operand weights) or
    /// `per call`.
    a_packing: &'static str,
    dtype: &'static str,
    tier: &'static str,
    kernel: &'static str,
    threads: usize,
    reps: usize,
    gflops_min: f64,
    gflops_median: f64,
    gflops_max: f64,
    peak_gflops: f64,
    ratio_to_peak: f64,
    reference: Option<&'static str>,
    reference_gflops: Option<f64>,
    reference_gflops_median: Option<f64>,
    /// OpenBLAS `cblas_sgemm` (f32), best and median GFLOP/s; `None` when not loaded, not
    /// run (loop rows, `--no-reference`) or its result failed the check.
    reference_openblas_gflops: Option<f64>,
    reference_openblas_gflops_median: Option<f64>,
    /// oneDNN's bf16 matmul primitive, best and median GFLOP/s (`None` as for OpenBLAS).
    reference_onednn_gflops: Option<f64>,
    reference_onednn_gflops_median: Option<f64>,
    /// The implementation oneDNN ran (e.g. `brg:avx512_core_amx_bf16`).
    reference_onednn_impl: Option<String>,
    max_rel_error: f64,
    load_average: Option<f64>,
}

/// Name of the reference library as reported.
const REFERENCE: &str = "gemm 0.19 (f32)";

/// How to get the run-time reference libraries.
const INSTALL_HINT: &str = "install with scripts/install-bench-refs \
     (apt-get install libopenblas0-pthread libdnnl2)";

/// The libraries loaded at run time (`None`: `--no-reference`).
struct RunTimeReferences {
    openblas: Option<Result<OpenBlas, RefLibError>>,
    onednn: Option<Result<OneDnn, RefLibError>>,
    /// oneDNN took the thread count (an OpenMP build).
    onednn_threads_set: bool,
    /// Our tier and precision each reference's result is checked against, and the bound.
    f32_check: Check,
    bf16_check: Check,
}

/// Our tier and precision a reference is checked against, and the largest deviation allowed.
type Check = (Isa, Precision, f64);

impl RunTimeReferences {
    fn load(skip: bool, threads: usize) -> RunTimeReferences {
        let f32_tier = [Isa::Avx512, Isa::Avx2, Isa::Generic]
            .into_iter()
            .find(|&isa| cpu::isa_available(isa))
            .unwrap_or(Isa::Generic);
        // A bf16 reference gets the bf16 bound also when checked against an f32 tier.
        let bf16_check = if cpu::isa_available(Isa::Amx) {
            (Isa::Amx, Precision::Fast, error_bound(Precision::Fast))
        } else {
            (f32_tier, Precision::Exact, error_bound(Precision::Fast))
        };
        let openblas = (!skip).then(OpenBlas::load);
        let onednn = (!skip).then(OneDnn::load);
        if let Some(Ok(blas)) = &openblas {
            blas.set_threads(threads);
        }
        let onednn_threads_set = matches!(&onednn, Some(Ok(dnnl)) if dnnl.set_threads(threads));
        RunTimeReferences {
            openblas,
            onednn,
            onednn_threads_set,
            f32_check: (f32_tier, Precision::Exact, error_bound(Precision::Exact)),
            bf16_check,
        }
    }
}

/// Times one run-time reference on the shape (probe, then as many repetitions as fit the
/// budget) and checks its result against ours; `None` (with a warning) when a call fails
/// or the result is wrong.
fn measure_reference(
    name: &str,
    shape: &Shape,
    timer: &mut GemmTimer,
    pool: &Pool,
    (isa, precision, bound): Check,
    (reps, budget): (usize, f64),
    mut time: impl FnMut(&mut GemmTimer, usize) -> Result<Vec<f64>, RefLibError>,
) -> Option<(f64, f64)> {
    let flops = shape.case.flops();
    let measured =
        time(timer, 1).and_then(|probe| time(timer, reps_within(reps, budget, probe[0])));
    let times = match measured {
        Ok(times) => times,
        Err(error) => {
            eprintln!(
                "bench gemm: {name} failed on {}: {error}; not reported",
                shape.label
            );
            return None;
        }
    };
    let check = timer.check_reference(isa, precision, pool);
    if !check.within(bound) {
        eprintln!(
            "bench gemm: {name} on {}: result off by {:.3e} from ours ({isa}) and {:.3e} from \
             an f64 product (bound {bound:.1e}); not reported",
            shape.label, check.versus_ours, check.versus_f64
        );
        return None;
    }
    let (_, median, max) = min_median_max(&gflops_of(flops, &times));
    eprintln!(
        "bench gemm: {:<20} {name:<8} {max:>8.1} GFLOP/s (best of {})",
        shape.label,
        times.len()
    );
    Some((median, max))
}

/// Largest acceptable sampled error per precision (relative to the cell's Σ|a|·|b|).
fn error_bound(precision: Precision) -> f64 {
    match precision {
        Precision::Exact => 1e-4,
        // bf16 operands: each product is off by up to ~2^-8 relative.
        Precision::Fast => 2e-2,
    }
}

fn precision_of(isa: Isa) -> (Precision, &'static str) {
    match isa {
        Isa::Amx => (Precision::Fast, "bf16"),
        _ => (Precision::Exact, "f32"),
    }
}

/// `milbridge bench gemm`.
///
/// # Errors
/// Bad arguments (unknown or unavailable tier, zero repetitions or threads), a product whose
/// sampled result is wrong, or an unwritable JSON file.
pub fn run(args: &GemmBenchArgs) -> Result<()> {
    ensure!(args.reps > 0, "--reps must be at least 1");
    let tiers = parse_tiers(&args.tiers)?;
    let threads = args.threads.unwrap_or_else(cpu::thread_count);
    ensure!(threads > 0, "--threads must be at least 1");
    let shapes: Vec<Shape> = shapes()
        .into_iter()
        .filter(|shape| {
            args.filter
                .as_deref()
                .is_none_or(|text| shape.label.contains(text))
        })
        .collect();
    ensure!(
        !shapes.is_empty(),
        "no shape label contains `{}`",
        args.filter.as_deref().unwrap_or_default()
    );
    // Before the pool starts its threads: loading OpenBLAS may set OPENBLAS_CORETYPE.
    let references = RunTimeReferences::load(args.no_reference, threads);
    let pool = Pool::new(threads);
    let mut onednn_impls: Vec<String> = Vec::new();
    let load_before = load_average();
    let mut peaks: BTreeMap<Isa, f64> = BTreeMap::new();
    let mut rows = Vec::new();
    let budget = args.budget_ms as f64 / 1e3;
    for shape in &shapes {
        let mut timer = GemmTimer::new(shape.case);
        let flops = shape.case.flops();
        let reference = if args.no_reference || shape.loop_only {
            None
        } else {
            let probe = timer.time_reference(threads, 1)[0];
            let reps = reps_within(args.reps, budget, probe);
            let (_, median, max) =
                min_median_max(&gflops_of(flops, &timer.time_reference(threads, reps)));
            Some((median, max))
        };
        let run_references = !(args.no_reference || shape.loop_only);
        let openblas = match &references.openblas {
            Some(Ok(blas)) if run_references => measure_reference(
                "openblas",
                shape,
                &mut timer,
                &pool,
                references.f32_check,
                (args.reps, budget),
                |timer, reps| timer.time_openblas(blas, threads, reps),
            ),
            _ => None,
        };
        let mut onednn_impl = None;
        let onednn = match &references.onednn {
            Some(Ok(dnnl)) if run_references => measure_reference(
                "onednn",
                shape,
                &mut timer,
                &pool,
                references.bf16_check,
                (args.reps, budget),
                |timer, reps| {
                    let (implementation, times) = timer.time_onednn(dnnl, threads, reps)?;
                    onednn_impl = Some(implementation);
                    Ok(times)
                },
            ),
            _ => None,
        };
        let onednn_impl = onednn.and(onednn_impl);
        if let Some(implementation) = &onednn_impl
            && !onednn_impls.contains(implementation)
        {
            onednn_impls.push(implementation.clone());
        }
        for &isa in &tiers {
            let peak_now = peak::measure_peak_gflops(isa, threads, &pool);
            let best_peak = peaks.entry(isa).or_insert(0.0);
            *best_peak = best_peak.max(peak_now);
            let (precision, dtype) = precision_of(isa);
            // A loop row still runs the product once, so the check below covers its kernel
            // on this shape.
            let probe = timer.time(isa, precision, &pool, 1)[0];
            let reps = reps_within(args.reps, budget, probe);
            let times = if shape.loop_only {
                timer.time_tile_loop(isa, precision, &pool, reps)
            } else {
                timer.time(isa, precision, &pool, reps)
            };
            let error = timer.max_rel_error();
            ensure!(
                error <= error_bound(precision),
                "{} on {isa}: sampled relative error {error:.3e} exceeds {:.1e}, the result is wrong",
                shape.label,
                error_bound(precision)
            );
            let (gflops_min, gflops_median, gflops_max) = min_median_max(&gflops_of(flops, &times));
            eprintln!(
                "bench gemm: {:<20} {:<7} {:>8.1} GFLOP/s (best of {reps})",
                shape.label,
                isa.name(),
                gflops_max
            );
            rows.push(Row {
                label: shape.label,
                shape: ShapeJson {
                    m: shape.case.m,
                    n: shape.case.n,
                    k: shape.case.k,
                },
                batch: shape.case.batch,
                b_packing: if shape.loop_only {
                    "loop only"
                } else {
                    packing(shape.case.packed_b)
                },
                a_packing: packing(shape.case.packed_a),
                dtype,
                tier: isa.name(),
                kernel: kernel_name_for(isa, precision, shape.case.k),
                threads,
                reps,
                gflops_min,
                gflops_median,
                gflops_max,
                peak_gflops: 0.0,
                ratio_to_peak: 0.0,
                reference: reference.map(|_| REFERENCE),
                reference_gflops: reference.map(|(_, max)| max),
                reference_gflops_median: reference.map(|(median, _)| median),
                reference_openblas_gflops: openblas.map(|(_, max)| max),
                reference_openblas_gflops_median: openblas.map(|(median, _)| median),
                reference_onednn_gflops: onednn.map(|(_, max)| max),
                reference_onednn_gflops_median: onednn.map(|(median, _)| median),
                reference_onednn_impl: onednn_impl.clone(),
                max_rel_error: error,
                load_average: load_before,
            });
        }
    }
    // One more peak measurement per tier at the end; every row uses its tier's best.
    for &isa in &tiers {
        let peak_now = peak::measure_peak_gflops(isa, threads, &pool);
        let best_peak = peaks.entry(isa).or_insert(0.0);
        *best_peak = best_peak.max(peak_now);
    }
    for row in &mut rows {
        let isa = Isa::parse(row.tier).context("a row's tier name parses")?;
        row.peak_gflops = peaks.get(&isa).copied().unwrap_or(f64::NAN);
        row.ratio_to_peak = row.gflops_max / row.peak_gflops;
    }
    let load_after = load_average();

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "milbridge bench gemm: {threads} thread(s), host tier {}",
        cpu::host_isa()
    )?;
    writeln!(out, "{}", load_note(load_before, load_after))?;
    for (isa, peak) in &peaks {
        writeln!(
            out,
            "peak {:<8} {peak:>9.1} GFLOP/s ({})",
            isa.name(),
            peak_kind(*isa)
        )?;
    }
    write!(out, "{}", render_table(&rows))?;
    write!(
        out,
        "{}",
        reference_notes(&references, threads, &onednn_impls)
    )?;
    drop(out);

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).context("serialising the rows")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The lines under the table saying what the OpenBLAS and oneDNN columns ran, or why they
/// are empty and how to fill them.
fn reference_notes(
    references: &RunTimeReferences,
    threads: usize,
    onednn_impls: &[String],
) -> String {
    let mut text = String::new();
    match &references.openblas {
        None => {}
        Some(Ok(blas)) => text.push_str(&format!(
            "openblas = {}: cblas_sgemm, f32, {threads} thread(s) (openblas_set_num_threads); \
             timed: each call (a batch: one call per entry)\n",
            blas.description()
        )),
        Some(Err(error)) => text.push_str(&format!("openblas = - ({error}); {INSTALL_HINT}\n")),
    }
    match &references.onednn {
        None => {}
        Some(Ok(dnnl)) => {
            let threads_note = if references.onednn_threads_set {
                format!("{threads} OpenMP thread(s) (omp_set_num_threads)")
            } else {
                "its default thread count (not an OpenMP build)".to_string()
            };
            let impls = if onednn_impls.is_empty() {
                "none ran".to_string()
            } else {
                onednn_impls.join(", ")
            };
            text.push_str(&format!(
                "onednn = {}: matmul primitive, bf16 x bf16 -> f32, {threads_note}, \
                 effective ISA {}, implementation {impls}; untimed: rounding A and B to bf16 \
                 (once), creating the primitive (once per row), one warm-up; timed: each \
                 execution (binding the buffers, running, waiting for the stream; B is \
                 repacked inside every execution)\n",
                dnnl.description(),
                dnnl.effective_isa()
            ));
        }
        Some(Err(error)) => text.push_str(&format!("onednn = - ({error}); {INSTALL_HINT}\n")),
    }
    text
}

/// The JSON `b_packing` / `a_packing` of a case's operand.
fn packing(packed: bool) -> &'static str {
    if packed { "prepacked" } else { "per call" }
}

/// What the peak of a tier measures.
fn peak_kind(isa: Isa) -> &'static str {
    match isa {
        Isa::Amx => "bare tdpbf16ps loop on register tiles",
        Isa::Avx512 => "vfmadd on 12 zmm accumulators",
        Isa::Avx2 => "vfmadd on 12 ymm accumulators",
        Isa::Generic => "portable multiply-add, 4 x 8 lanes",
    }
}

/// Repetitions that fit `budget` seconds given one took `probe` seconds: at most `reps`, at
/// least 3 (or `reps` if smaller).
fn reps_within(reps: usize, budget: f64, probe: f64) -> usize {
    let fit = if probe > 0.0 {
        (budget / probe).floor() as usize
    } else {
        reps
    };
    fit.clamp(reps.min(3), reps)
}

fn gflops_of(flops: f64, times: &[f64]) -> Vec<f64> {
    times.iter().map(|&t| flops / t.max(1e-12) / 1e9).collect()
}

/// The human table.
fn render_table(rows: &[Row]) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "{:<20} {:>18} {:<5} {:<7} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6}\n",
        "shape",
        "batch x m x n x k",
        "dtype",
        "tier",
        "min",
        "median",
        "best",
        "peak",
        "b/peak",
        "reference",
        "b/ref",
        "openblas",
        "b/obl",
        "onednn",
        "b/dnnl"
    ));
    for row in rows {
        let dims = format!(
            "{}x{}x{}x{}",
            row.batch, row.shape.m, row.shape.n, row.shape.k
        );
        let against = |reference: Option<f64>| match reference {
            Some(reference) => (
                format!("{reference:.1}"),
                format!("{:.2}", row.gflops_max / reference),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let (reference, versus) = against(row.reference_gflops);
        let (openblas, versus_openblas) = against(row.reference_openblas_gflops);
        let (onednn, versus_onednn) = against(row.reference_onednn_gflops);
        text.push_str(&format!(
            "{:<20} {:>18} {:<5} {:<7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>5.0}% {:>9} {:>6} {:>9} {:>6} {:>9} {:>6}\n",
            row.label,
            dims,
            row.dtype,
            row.tier,
            row.gflops_min,
            row.gflops_median,
            row.gflops_max,
            row.peak_gflops,
            100.0 * row.ratio_to_peak,
            reference,
            versus,
            openblas,
            versus_openblas,
            onednn,
            versus_onednn
        ));
    }
    text.push_str("GFLOP/s; Bpre = B prepacked once (untimed), Bcall = B packed in every call, ");
    text.push_str("loop = the Bpre row's kernel loop alone (A, B packed untimed; C not written); ");
    text.push_str("Wx = the trainer's W·X (W the left operand): Apre = A prepacked once ");
    text.push_str("(untimed), Acall = A packed in every call; ");
    text.push_str("min/median/best over the repetitions; b/peak = best / peak; ");
    text.push_str(&format!(
        "reference = {REFERENCE}, best of its repetitions; b/ref = best / reference; \
         openblas, onednn: best of their repetitions (see below; - = not loaded, not run, or \
         result rejected), b/obl, b/dnnl = best / theirs; every reference takes the operands \
         as stored and packs inside each call, also on Bpre/Apre rows\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_the_training_products() {
        let shapes = shapes();
        assert_eq!(shapes.len(), 36);
        let find = |label: &str| {
            shapes
                .iter()
                .find(|shape| shape.label == label)
                .unwrap_or_else(|| panic!("missing {label}"))
                .case
        };
        let fwd = find("fwd W768x2048 Bpre");
        assert_eq!((fwd.m, fwd.n, fwd.k, fwd.packed_b), (256, 2048, 768, true));
        let fwd_call = find("fwd W768x2048 Bcall");
        assert_eq!(
            (fwd_call.m, fwd_call.n, fwd_call.k, fwd_call.packed_b),
            (256, 2048, 768, false)
        );
        assert_eq!(
            (packing(fwd.packed_b), packing(fwd_call.packed_b)),
            ("prepacked", "per call")
        );
        // The trainer's `W·x`: out channels × 256 tokens × in channels, A prepacked or not.
        let wx = find("Wx W768x2048 Apre");
        assert_eq!(
            (wx.m, wx.n, wx.k, wx.packed_a, wx.packed_b),
            (2048, 256, 768, true, false)
        );
        let wx_call = find("Wx W2048x768 Acall");
        assert_eq!(
            (wx_call.m, wx_call.n, wx_call.k, wx_call.packed_a),
            (768, 256, 2048, false)
        );
        // A loop row times the loop of its Bpre row's product.
        for (row, pre) in [
            ("fwd W768x2048 loop", "fwd W768x2048 Bpre"),
            ("dX W2048x768 loop", "dX W2048x768 Bpre"),
        ] {
            let looped = shapes.iter().find(|shape| shape.label == row);
            let looped = looped.unwrap_or_else(|| panic!("missing {row}"));
            assert!(looped.loop_only, "{row}");
            let (a, b) = (looped.case, find(pre));
            assert_eq!(
                (a.m, a.n, a.k, a.a, a.b),
                (b.m, b.n, b.k, b.a, b.b),
                "{row}"
            );
        }
        assert_eq!(
            shapes.iter().filter(|shape| shape.loop_only).count(),
            8,
            "a fwd and a dX loop row per weight"
        );
        let dx = find("dX W768x2048 Bpre");
        assert_eq!(
            (dx.m, dx.n, dx.k, dx.b, dx.packed_b),
            (256, 768, 2048, Operand::Transposed, true)
        );
        let dx_call = find("dX W768x2048 Bcall");
        assert_eq!(
            (dx_call.m, dx_call.n, dx_call.k, dx_call.b, dx_call.packed_b),
            (256, 768, 2048, Operand::Transposed, false)
        );
        let dw = find("dW W768x32000");
        assert_eq!(
            (dw.m, dw.n, dw.k, dw.a),
            (768, 32000, 256, Operand::Transposed)
        );
        let scores = find("attn QKt x12");
        assert_eq!(
            (scores.batch, scores.m, scores.n, scores.k),
            (12, 256, 256, 64)
        );
        let context = find("attn PV x12");
        assert_eq!(
            (context.batch, context.m, context.n, context.k),
            (12, 256, 64, 256)
        );
    }

    #[test]
    fn absent_libraries_leave_a_dash_and_the_install_hint() {
        let missing = |name: &str| RefLibError::NotFound {
            names: vec![name.to_string()],
            reason: format!("{name}: cannot open shared object file"),
        };
        let references = RunTimeReferences {
            openblas: Some(Err(missing("libopenblas.so.0"))),
            onednn: Some(Err(missing("libdnnl.so.2"))),
            onednn_threads_set: false,
            f32_check: (Isa::Generic, Precision::Exact, 1e-4),
            bf16_check: (Isa::Generic, Precision::Exact, 2e-2),
        };
        let notes = reference_notes(&references, 2, &[]);
        assert_eq!(notes.lines().count(), 2, "{notes}");
        for line in notes.lines() {
            assert!(line.contains("= - (cannot load"), "{line}");
            assert!(line.contains("scripts/install-bench-refs"), "{line}");
        }
        let skipped = RunTimeReferences {
            openblas: None,
            onednn: None,
            ..references
        };
        assert_eq!(reference_notes(&skipped, 2, &[]), "");
    }

    #[test]
    fn repetitions_respect_the_budget() {
        assert_eq!(reps_within(10, 1.0, 0.05), 10);
        assert_eq!(reps_within(10, 1.0, 0.25), 4);
        assert_eq!(reps_within(10, 1.0, 2.0), 3);
        assert_eq!(reps_within(2, 1.0, 2.0), 2);
        assert_eq!(reps_within(10, 1.0, 0.0), 10);
    }

    #[test]
    fn table_and_json_carry_every_field() {
        let row = Row {
            label: "fwd W768x2048 Bpre",
            shape: ShapeJson {
                m: 256,
                n: 2048,
                k: 768,
            },
            batch: 1,
            b_packing: "prepacked",
            a_packing: "per call",
            dtype: "bf16",
            tier: "amx",
            kernel: "amx_gemm_bf16_32x48",
            threads: 2,
            reps: 10,
            gflops_min: 100.0,
            gflops_median: 200.0,
            gflops_max: 300.0,
            peak_gflops: 600.0,
            ratio_to_peak: 0.5,
            reference: Some(REFERENCE),
            reference_gflops: Some(150.0),
            reference_gflops_median: Some(140.0),
            reference_openblas_gflops: Some(120.0),
            reference_openblas_gflops_median: Some(110.0),
            reference_onednn_gflops: None,
            reference_onednn_gflops_median: None,
            reference_onednn_impl: None,
            max_rel_error: 1e-3,
            load_average: Some(1.5),
        };
        let table = render_table(std::slice::from_ref(&row));
        assert!(table.contains("fwd W768x2048 Bpre"), "{table}");
        assert!(table.contains("1x256x2048x768"), "{table}");
        assert!(table.contains("50%"), "{table}");
        assert!(table.contains("2.00"), "{table}");
        assert!(table.contains("120.0"), "{table}");
        assert!(table.contains("2.50"), "{table}");
        let json: serde_json::Value = serde_json::to_value(&row).expect("serialise");
        for field in [
            "shape",
            "dtype",
            "tier",
            "threads",
            "gflops_min",
            "gflops_median",
            "peak_gflops",
            "ratio_to_peak",
            "reference",
            "reference_gflops",
            "b_packing",
            "a_packing",
            "reference_openblas_gflops",
            "reference_onednn_gflops",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["shape"]["n"], 2048);
        assert_eq!(json["ratio_to_peak"], 0.5);
        assert_eq!(json["reference_openblas_gflops"], 120.0);
        assert!(json["reference_onednn_gflops"].is_null());
    }
}
