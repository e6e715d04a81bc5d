//! The `milbridge` command: the only place that prints for the user or chooses an exit code.
#![forbid(unsafe_code)]

mod bench;
mod check;
mod npy;
mod run;
mod tools;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Compile MIL kernels once, run them many times on this CPU's matrix engines.
#[derive(Parser, Debug)]
#[command(name = "milbridge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify MIL files and print diagnostics; exit 1 if any file is invalid.
    Check(check::CheckArgs),
    /// Print a MIL file in canonical form.
    Print(check::PrintArgs),
    /// Evaluate a MIL function on .npy inputs and write every output as DIR/NAME.npy.
    Run(run::RunArgs),
    /// Show the CPU features, the selected ISA tier and every MILBRIDGE_* knob.
    Cpu,
    /// Train a Llama-family model on compiled bridge kernels (no arguments: the embedded default).
    Train(Box<milbridge_train::TrainArgs>),
    /// Generate text from a checkpoint written by `milbridge train` or a llama2.c model file.
    Sample(milbridge_train::SampleArgs),
    /// Write a training checkpoint's weights as a llama2.c model file (what llama2.c's run.c reads).
    Export(milbridge_train::ExportArgs),
    /// Inspect or clear the compile cache.
    Cache {
        #[command(subcommand)]
        command: tools::CacheCommand,
    },
    /// Benchmarks (never tests): kernel latency, real-time jitter.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Eval latency of a MIL program (min/median/p99) and the dispatch overhead of a trivial one.
    Kernel(tools::KernelBenchArgs),
    /// Latency percentiles with and without real-time mode while competing processes run.
    Jitter(tools::JitterArgs),
    /// GEMM GFLOP/s per ISA tier on the training shapes, against the measured peak and the gemm crate.
    Gemm(bench::gemm::GemmBenchArgs),
    /// Weight update (f32 -> f16 + panel repack) against a memcpy of the weight.
    Repack(bench::repack::RepackBenchArgs),
    /// Training ms/step in both weight modes (the seed's table), with a time breakdown.
    Train(bench::train::TrainBenchArgs),
    /// The bridge's write_weight_f32 end to end (panels packed on write) against a memcpy, and
    /// eval with prepacked weights against packing them per eval.
    WriteWeight(bench::write_weight::WriteWeightBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::check(&args),
        Command::Print(args) => check::print(&args),
        Command::Run(args) => run::run(&args),
        Command::Cpu => run::cpu(),
        Command::Train(args) => train::train(&args),
        Command::Sample(args) => train::sample(&args),
        Command::Export(args) => train::export(&args),
        Command::Cache { command } => tools::cache_command(&command),
        Command::Bench { which } => match which {
            BenchCommand::Kernel(args) => tools::bench_kernel(&args),
            BenchCommand::Jitter(args) => tools::bench_jitter(&args),
            BenchCommand::Gemm(args) => bench::gemm::run(&args).map(|()| ExitCode::SUCCESS),
            BenchCommand::Repack(args) => bench::repack::run(&args).map(|()| ExitCode::SUCCESS),
            BenchCommand::Train(args) => bench::train::run(&args).map(|()| ExitCode::SUCCESS),
            BenchCommand::WriteWeight(args) => {
                bench::write_weight::run(&args).map(|()| ExitCode::SUCCESS)
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where `@model_path` points for `file`: the explicit directory, else the file's directory.
pub(crate) fn model_root(file: &std::path::Path, explicit: Option<&PathBuf>) -> PathBuf {
    match explicit {
        Some(dir) => dir.clone(),
        None => file.parent().map_or_else(
            || PathBuf::from("."),
            |dir| {
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.to_path_buf()
                }
            },
        ),
    }
}
