//! `milbridge cache`, `milbridge bench kernel` and `milbridge bench jitter`.

use crate::check::{LoadOptions, load};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use milbridge_bridge::{bench as bridge_bench, cache};
use milbridge_engine::{CompileOptions, Plan};
use milbridge_linalg::cpu;
use milbridge_mil::diag::render_all;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `milbridge cache stats|clear`.
#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Entries and bytes in the compile cache.
    Stats,
    /// Delete every entry of the compile cache.
    Clear,
}

/// `milbridge cache ...`: the directory is `ANE_BRIDGE_CACHE_DIR`, else `~/.cache/ane_bridge`.
pub fn cache_command(command: &CacheCommand) -> Result<ExitCode> {
    let Some(dir) = cache::default_dir() else {
        println!("the compile cache is disabled (ANE_BRIDGE_CACHE=0 or no HOME)");
        return Ok(ExitCode::SUCCESS);
    };
    match command {
        CacheCommand::Stats => {
            let stats =
                cache::stats(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
            println!(
                "{}: {} entries, {} bytes",
                dir.display(),
                stats.entries,
                stats.bytes
            );
        }
        CacheCommand::Clear => {
            let removed =
                cache::clear(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
            println!(
                "{}: removed {} entries, {} bytes",
                dir.display(),
                removed.entries,
                removed.bytes
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `milbridge bench kernel`.
#[derive(Args, Debug)]
pub struct KernelBenchArgs {
    /// The MIL file to evaluate (inputs are zero-filled).
    pub file: PathBuf,
    /// Directory that `@model_path` denotes.
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// Timed evaluations.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Precision profile: exact or fast.
    #[arg(long, default_value = "exact")]
    pub precision: String,
    /// Parameters from this index on are weights (PR #22: activations first): also time the
    /// eval with every weight that feeds a GEMM prepacked (issue #5), as the bridge runs it.
    #[arg(long, value_name = "N")]
    pub weights_from: Option<usize>,
    /// Also time every plan step and print the N slowest (per eval, with their engine kernel).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "20")]
    pub profile: Option<usize>,
}

/// Per-eval timings of a plan and, when profiled, each step's mean time per eval.
struct Timings {
    /// One duration per eval, sorted.
    evals: Vec<Duration>,
    /// Mean wall time per eval of each step (profiled runs only).
    steps: Option<Vec<Duration>>,
}

/// Evaluates `plan` `iterations` times on zeroed buffers. With `weights_from`, the parameters
/// from that index on that feed a GEMM are packed once first and every eval uses the panels;
/// with `profile`, every step of the timed evals is timed too.
fn time_plan(
    plan: &Plan,
    iterations: usize,
    weights_from: Option<usize>,
    profile: bool,
) -> Result<Timings> {
    let inputs: Vec<Vec<u64>> = plan
        .inputs()
        .iter()
        .map(|desc| vec![0u64; desc.byte_len.div_ceil(8)])
        .collect();
    let mut outputs: Vec<Vec<u64>> = plan
        .outputs()
        .iter()
        .map(|desc| vec![0u64; desc.byte_len.div_ceil(8)])
        .collect();
    let input_slices: Vec<&[u8]> = inputs
        .iter()
        .zip(plan.inputs())
        .map(|(buf, desc)| &bytemuck_bytes(buf)[..desc.byte_len])
        .collect();
    let mut output_slices: Vec<&mut [u8]> = outputs
        .iter_mut()
        .zip(plan.outputs())
        .map(|(buf, desc)| &mut bytemuck_bytes_mut(buf)[..desc.byte_len])
        .collect();
    let mut workspace = plan.workspace();
    let packed = input_slices
        .iter()
        .enumerate()
        .map(|(idx, bytes)| match weights_from {
            Some(first) if idx >= first && !plan.weight_gemm_uses(idx).is_empty() => {
                plan.pack_input(idx, bytes).map(Some)
            }
            _ => Ok(None),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let packed_refs: Vec<_> = packed.iter().map(Option::as_ref).collect();
    let eval = |outputs: &mut [&mut [u8]], ws: &mut milbridge_engine::Workspace| match weights_from
    {
        Some(_) => plan.eval_with_packed(ws, &input_slices, &packed_refs, outputs),
        None => plan.eval(ws, &input_slices, outputs),
    };
    for _ in 0..iterations.clamp(1, 20) {
        eval(&mut output_slices, &mut workspace)?;
    }
    if profile {
        workspace.profile_steps(plan);
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        eval(&mut output_slices, &mut workspace)?;
        times.push(start.elapsed());
    }
    times.sort_unstable();
    let runs = u32::try_from(iterations).unwrap_or(u32::MAX);
    Ok(Timings {
        evals: times,
        steps: workspace
            .step_times()
            .map(|steps| steps.iter().map(|&time| time / runs).collect()),
    })
}

/// Byte view of an aligned `u64` buffer (8-byte alignment suits every dtype).
fn bytemuck_bytes(buf: &[u64]) -> &[u8] {
    bytemuck::cast_slice(buf)
}

fn bytemuck_bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    bytemuck::cast_slice_mut(buf)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

const TRIVIAL: &str = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 1, 1, 16]> x) {\n        tensor<fp16, [1, 1, 1, 16]> y = add(x = x, y = x)[name = string(\"y\")];\n    } -> (y);\n}\n";

/// `milbridge bench kernel FILE.mil`: eval latency min/median/p99, and the dispatch overhead of a
/// trivial kernel measured in the same run.
pub fn bench_kernel(args: &KernelBenchArgs) -> Result<ExitCode> {
    let precision = crate::run::parse_precision(&args.precision)?;
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let options = LoadOptions {
        model_path: args.model_path.as_ref(),
        ane: false,
        strict_blobs: false,
        strict: false,
    };
    let (verified, source, diags) = load(&args.file, &options)?;
    eprint!("{}", render_all(&source, &diags));
    let Some(verified) = verified else {
        return Ok(ExitCode::FAILURE);
    };
    let compile_options = CompileOptions {
        function: None,
        isa: cpu::selected_isa(),
        precision,
        threads: cpu::thread_count(),
    };
    let start = Instant::now();
    let plan = milbridge_engine::compile(&verified, &compile_options).context("compile failed")?;
    let compile_time = start.elapsed();

    let (trivial_program, trivial_diags) = milbridge_mil::parse(TRIVIAL);
    if milbridge_mil::diag::has_errors(&trivial_diags) {
        bail!("internal: the trivial kernel does not parse");
    }
    let trivial = milbridge_mil::verify(trivial_program, &Default::default())
        .map_err(|_| anyhow::anyhow!("internal: the trivial kernel does not verify"))?;
    let trivial_plan = milbridge_engine::compile(&trivial, &compile_options)?;

    let profile = args.profile.is_some();
    let timings = time_plan(
        &plan,
        args.iterations,
        None,
        profile && args.weights_from.is_none(),
    )?;
    let times = timings.evals;
    let mut step_times = timings.steps;
    let packed_times = match args.weights_from {
        Some(first) => {
            let packed = time_plan(&plan, args.iterations, Some(first), profile)?;
            step_times = packed.steps;
            Some(packed.evals)
        }
        None => None,
    };
    let trivial_times = time_plan(&trivial_plan, args.iterations.max(1000), None, false)?.evals;
    let stats = plan.stats();
    println!(
        "{}: {} steps ({} fused, holding {} ops), arena {} B, kernels {:?}",
        args.file.display(),
        stats.steps,
        stats.fused_steps,
        stats.fused_ops,
        stats.arena_bytes,
        stats.kernels
    );
    println!(
        "tier {}, {} threads, precision {}, compiled in {:.2} ms",
        compile_options.isa.name(),
        compile_options.threads,
        args.precision,
        compile_time.as_secs_f64() * 1e3
    );
    println!(
        "eval ({} runs): min {:.1} us  median {:.1} us  p99 {:.1} us",
        times.len(),
        us(times[0]),
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99))
    );
    if let (Some(packed), Some(first)) = (&packed_times, args.weights_from) {
        let prepacked: Vec<usize> = (first..plan.inputs().len())
            .filter(|&idx| !plan.weight_gemm_uses(idx).is_empty())
            .collect();
        println!(
            "eval, weights {prepacked:?} prepacked ({} runs): min {:.1} us  median {:.1} us  p99 {:.1} us",
            packed.len(),
            us(packed[0]),
            us(percentile(packed, 0.5)),
            us(percentile(packed, 0.99))
        );
    }
    println!(
        "trivial kernel dispatch overhead ({} runs): min {:.2} us  median {:.2} us  p99 {:.2} us",
        trivial_times.len(),
        us(trivial_times[0]),
        us(percentile(&trivial_times, 0.5)),
        us(percentile(&trivial_times, 0.99))
    );
    if let (Some(rows), Some(step_times)) = (args.profile, step_times) {
        print_step_profile(&plan, &step_times, &stats.kernels, rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `rows` slowest steps of a profiled plan, mean µs per eval.
fn print_step_profile(plan: &Plan, step_times: &[Duration], kernels: &[&str], rows: usize) {
    let total: Duration = step_times.iter().sum();
    let mut order: Vec<usize> = (0..step_times.len()).collect();
    order.sort_by_key(|&idx| std::cmp::Reverse(step_times[idx]));
    println!(
        "step profile: {:.1} us per eval in {} steps; the {} slowest:",
        us(total),
        step_times.len(),
        rows.min(order.len())
    );
    println!(
        "{:>5} {:<40} {:<24} {:>10} {:>7}",
        "step", "engine kernel", "value", "us/eval", "share"
    );
    for idx in order.into_iter().take(rows) {
        let step = &plan.steps()[idx];
        println!(
            "{idx:>5} {:<40} {:<24} {:>10.1} {:>6.1}%",
            kernels.get(idx).copied().unwrap_or("?"),
            format!("{} ({:?})", step.value, step.role),
            us(step_times[idx]),
            100.0 * step_times[idx].as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE)
        );
    }
}

/// Arguments of `milbridge bench jitter`.
#[derive(Args, Debug)]
pub struct JitterArgs {
    /// Timed evaluations per mode.
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Matmul size n = k = m of the kernel.
    #[arg(long)]
    pub size: Option<usize>,
    /// Competing busy-loop processes (default: one per CPU).
    #[arg(long)]
    pub competitors: Option<usize>,
}

/// `milbridge bench jitter`: latency percentiles with and without real-time mode under load.
pub fn bench_jitter(args: &JitterArgs) -> Result<ExitCode> {
    let defaults = bridge_bench::JitterConfig::default();
    let config = bridge_bench::JitterConfig {
        iterations: args.iterations.unwrap_or(defaults.iterations),
        size: args.size.unwrap_or(defaults.size),
        competitors: args.competitors.unwrap_or(defaults.competitors),
        ..defaults
    };
    let report = bridge_bench::jitter(&config).context("jitter benchmark failed")?;
    println!("{}", report.kernel);
    println!(
        "{} competing busy-loop processes, {} evals per mode",
        report.competitors_started, config.iterations
    );
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    for (name, p) in [("normal", report.baseline), ("real-time", report.realtime)] {
        println!(
            "{name:>9}: p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            ms(p.p50),
            ms(p.p99),
            ms(p.p999),
            ms(p.max)
        );
    }
    println!(
        "p99 reduction {:.1}%, p99.9 reduction {:.1}%",
        100.0 * report.p99_reduction(),
        100.0 * report.p999_reduction()
    );
    println!("real-time mode: {:?}", report.realtime_status);
    Ok(ExitCode::SUCCESS)
}
