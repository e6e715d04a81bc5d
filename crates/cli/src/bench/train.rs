//! `milbridge bench train [--model stories110m] [--steps N] [--json FILE]`: the seed's table
//! (PR #22: weights as function parameters vs spatial packing), measured here in both modes
//! side by side in one process. The measurement lives in `milbridge_train::bench`; this module
//! parses arguments and prints.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use milbridge_train::bench::{self, BenchConfig, BenchObserver, ModeReport, min_median};
use milbridge_train::{ModelSpec, WeightMode};

use super::{load_average, load_note};

/// Arguments of `milbridge bench train`.
#[derive(Args, Debug, Clone)]
pub struct TrainBenchArgs {
    /// Model preset: tiny, small, stories15m, stories42m, stories110m, qwen3-tiny, qwen3-0.6b.
    #[arg(long, default_value = "stories110m")]
    pub model: String,
    /// Override the number of layers (quick runs of a big model's shapes).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Timed micro-steps per mode.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Untimed micro-steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Micro-steps per optimizer step.
    #[arg(long, default_value_t = 10)]
    pub accum: u64,
    /// Modes to run, in order: params, packed (resident packed inputs), packed-restage
    /// (training_dynamic's restaging on every call).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "params,packed,packed-restage"
    )]
    pub modes: Vec<String>,
    /// The exact precision profile (fp32 compute, fp16 rounding per op) instead of fast
    /// (bf16 matrix engine where the host has one).
    #[arg(long)]
    pub exact: bool,
    /// Seed of weights and data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// llama2.c token shard (default: the embedded corpus).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also write one JSON object per mode (an array) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Profile the kernels' plan steps during the timed steps and print where their time goes
    /// (the N largest rows per mode: generated kernel × engine kernel).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "25")]
    pub profile: Option<usize>,
}

struct Progress;

impl BenchObserver for Progress {
    fn phase(&mut self, mode: WeightMode, what: &str) {
        eprintln!("[{}] {what}", mode.name());
    }
    fn step(&mut self, mode: WeightMode, index: u64, total: u64, ms: f64, loss: f32) {
        eprintln!(
            "[{}] step {index}/{total}: {ms:.1} ms (fwd+bwd), loss {loss:.4}",
            mode.name()
        );
    }
}

/// `milbridge bench train`.
///
/// # Errors
/// Bad arguments, a failing kernel, an unwritable JSON file.
pub fn run(args: &TrainBenchArgs) -> Result<()> {
    let mut model = ModelSpec::preset(&args.model)
        .with_context(|| format!("unknown model preset `{}`", args.model))?;
    if let Some(layers) = args.layers {
        ensure!(layers > 0, "--layers must be at least 1");
        model.n_layers = layers;
        model.name = format!("{}-{}L", model.name, layers);
    }
    let modes = args
        .modes
        .iter()
        .map(|m| {
            WeightMode::parse(m).with_context(|| {
                format!("unknown mode `{m}` (expected params, packed or packed-restage)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(!modes.is_empty(), "--modes is empty");
    ensure!(args.steps > 0, "--steps must be at least 1");
    ensure!(args.accum > 0, "--accum must be at least 1");
    let cfg = BenchConfig {
        model,
        modes,
        steps: args.steps,
        warmup: args.warmup,
        accum: args.accum,
        fast: !args.exact,
        seed: args.seed,
        data: args.data.clone(),
        profile: args.profile.is_some(),
        cache_root: std::env::temp_dir(),
    };
    let before = load_average();
    let reports = bench::run(&cfg, &mut Progress)?;
    let after = load_average();
    print_table(&cfg, &reports);
    if let Some(rows) = args.profile {
        print_profile(&reports, rows);
    }
    println!("{}", load_note(before, after));
    if let Some(path) = &args.json {
        let json = serde_json::Value::Array(reports.iter().map(ModeReport::to_json).collect());
        let mut f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn print_table(cfg: &BenchConfig, reports: &[ModeReport]) {
    let cpu = milbridge_linalg::cpu::selected_isa();
    println!(
        "\nbench train: {} (dim {}, hidden {}, {} layers, {} heads / {} kv, vocab {}, seq {}), \
         {} precision on tier {}, {} timed micro-steps after {} warm-up, accumulation {}",
        cfg.model.name,
        cfg.model.dim,
        cfg.model.hidden,
        cfg.model.n_layers,
        cfg.model.n_heads,
        cfg.model.n_kv_heads,
        cfg.model.vocab,
        cfg.model.seq,
        if cfg.fast { "fast" } else { "exact" },
        cpu.name(),
        cfg.steps,
        cfg.warmup,
        cfg.accum,
    );
    println!(
        "{:<15} {:>14} {:>14} {:>16} {:>10} {:>9} {:>10} {:>10} {:>12} {:>9}",
        "mode",
        "ms/step min",
        "ms/step med",
        "Adam-every-step",
        "opt ms",
        "kernels",
        "cold ms",
        "cached ms",
        "write_w us",
        "loss"
    );
    for r in reports {
        let (min, med) = r.ms_per_step();
        let (_, emed) = r.ms_per_step_adam_every_step();
        let (_, opt) = min_median(&r.opt_ms);
        let (_, ww) = min_median(&r.write_weight_us);
        println!(
            "{:<15} {:>14.1} {:>14.1} {:>16.1} {:>10.1} {:>4} ({:>3}) {:>10.0} {:>10.0} {:>12.0} {:>9.4}",
            r.mode.name(),
            min,
            med,
            emed,
            opt,
            r.kernels_compiled,
            r.kernel_objects,
            r.compile_ms_cold,
            r.compile_ms_cached,
            ww,
            r.final_loss
        );
    }
    println!("\nbreakdown, ms per micro-step (mean of the timed steps; dw_busy overlaps):");
    let names: Vec<&str> = reports
        .first()
        .map(|r| r.breakdown.millis().iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    print!("{:<15}", "mode");
    for n in &names {
        print!(" {n:>10}");
    }
    println!(" {:>12}", "opt/accum");
    for r in reports {
        print!("{:<15}", r.mode.name());
        for (_, v) in r.breakdown.millis() {
            print!(" {v:>10.1}");
        }
        let (_, opt) = min_median(&r.opt_ms);
        println!(
            " {:>12.1}",
            if opt.is_nan() {
                0.0
            } else {
                opt / r.accum as f64
            }
        );
    }
    if let Some(params) = reports.iter().find(|r| r.mode == WeightMode::Params) {
        let (_, pm) = params.ms_per_step();
        for other in reports.iter().filter(|r| r.mode != WeightMode::Params) {
            let (_, om) = other.ms_per_step();
            println!(
                "{}/params (median ms/step): {:.3}",
                other.mode.name(),
                om / pm
            );
        }
        println!("(seed, Apple Neural Engine, Stories110M: packed/params = 110 / 76.9 = 1.430)");
    }
}

/// The largest rows of each mode's kernel profile, with the share of all profiled step time.
fn print_profile(reports: &[ModeReport], rows: usize) {
    for r in reports {
        let total: f64 = r
            .kernel_profile
            .iter()
            .map(|row| row.time.as_secs_f64() * 1e3)
            .sum();
        println!(
            "\nkernel profile [{}]: {total:.1} ms per micro-step in plan steps; the {} largest \
             (generated kernel, engine kernel, steps per instance):",
            r.mode.name(),
            rows.min(r.kernel_profile.len())
        );
        println!(
            "{:<14} {:<44} {:>6} {:>10} {:>7}",
            "kernel", "engine kernel", "steps", "ms/step", "share"
        );
        for row in r.kernel_profile.iter().take(rows) {
            let ms = row.time.as_secs_f64() * 1e3;
            println!(
                "{:<14} {:<44} {:>6} {:>10.2} {:>6.1}%",
                row.kernel,
                row.step_kernel,
                row.steps,
                ms,
                100.0 * ms / total.max(f64::MIN_POSITIVE)
            );
        }
    }
}
