//! `milbridge train` in miniature: how a front-end wires [`milbridge_train::run`] to a terminal.
//! `cargo run --release -p milbridge-train --example train -- --help`

use std::io::Write;

use clap::Parser;
use milbridge_train::{Event, Observer, RunInfo, StepReport, Summary, TrainArgs};

/// Train a Llama-family model on compiled bridge kernels (no arguments: the embedded default).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

/// Prints a one-line progress display on stderr, rewritten in place.
struct Console;

impl Observer for Console {
    fn on_start(&mut self, info: &RunInfo) {
        eprintln!(
            "training {} ({} parameters, weights as {}) on {} ({} tokens): {} kernels ({} compiled) in {:.0} ms",
            info.model,
            info.params,
            info.weights,
            info.data,
            info.data_tokens,
            info.kernels,
            info.kernels_compiled,
            info.setup_ms
        );
    }
    fn on_step(&mut self, report: &StepReport) {
        eprint!("\r{}   ", report.progress_line());
        if report.optimizer_step && (report.step + 1).is_multiple_of(100) {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::CheckpointSaved { path, step } => {
                eprint!("\r[checkpoint {} at step {step}]", path.display());
            }
            Event::Interrupted { step } => eprintln!("\ninterrupted at step {step}; saving"),
            Event::PlotWritten { path } => eprintln!("\nloss curve: {}", path.display()),
            other => eprintln!("\n{other:?}"),
        }
    }
    fn on_finish(&mut self, summary: &Summary) {
        eprintln!(
            "{} steps, loss {:.3} -> {:.3}, {:.1} ms/step",
            summary.steps_run, summary.first_loss, summary.last_loss, summary.ms_per_step
        );
        if let Some(text) = &summary.sample {
            println!("{text}");
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match milbridge_train::run(&cli.args, &mut Console) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
