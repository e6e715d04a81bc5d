//! `milbridge train`, `milbridge sample` and `milbridge export`: the trainer's terminal front-end.

use anyhow::Result;
use milbridge_train::{
    Event, ExportArgs, Observer, RunInfo, SampleArgs, StepReport, Summary, TrainArgs,
};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Progress on stderr: a bar with step, loss, ms/step, tokens/s and ETA, rewritten in place on a
/// terminal and printed every 100 steps otherwise.
struct Console {
    interactive: bool,
}

fn bar(step: u64, total: u64) -> String {
    const WIDTH: u64 = 24;
    let filled = (step.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    format!(
        "[{}{}]",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

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
        let line = format!(
            "{} {}",
            bar(report.step + 1, report.total_steps),
            report.progress_line()
        );
        if self.interactive {
            eprint!("\r{line}   ");
            let _ = std::io::stderr().flush();
        } else if (report.step + 1).is_multiple_of(100) || report.step + 1 == report.total_steps {
            eprintln!("{line}");
        }
    }

    fn on_event(&mut self, event: &Event) {
        let prefix = if self.interactive { "\n" } else { "" };
        match event {
            Event::CheckpointSaved { path, step } => {
                if !self.interactive {
                    eprintln!("checkpoint {} at step {step}", path.display());
                }
            }
            Event::Interrupted { step } => {
                eprintln!("{prefix}interrupted at step {step}; saving a checkpoint")
            }
            Event::PlotWritten { path } => eprintln!("{prefix}loss curve: {}", path.display()),
            other => eprintln!("{prefix}{other:?}"),
        }
    }

    fn on_finish(&mut self, summary: &Summary) {
        if self.interactive {
            eprintln!();
        }
        eprintln!(
            "{} steps, loss {:.3} -> {:.3}, {:.1} ms/step",
            summary.steps_run, summary.first_loss, summary.last_loss, summary.ms_per_step
        );
        if let Some(text) = &summary.sample {
            println!("--- sample ---\n{text}");
        }
    }
}

/// `milbridge train`.
pub fn train(args: &TrainArgs) -> Result<ExitCode> {
    let mut console = Console {
        interactive: std::io::stderr().is_terminal(),
    };
    milbridge_train::run(args, &mut console)?;
    Ok(ExitCode::SUCCESS)
}

/// `milbridge sample`.
pub fn sample(args: &SampleArgs) -> Result<ExitCode> {
    println!("{}", milbridge_train::sample(args)?);
    Ok(ExitCode::SUCCESS)
}

/// `milbridge export`.
pub fn export(args: &ExportArgs) -> Result<ExitCode> {
    let done = milbridge_train::llama2c::export(args)?;
    let m = &done.model;
    println!(
        "wrote {} ({} bytes, llama2.c legacy format): step {}, dim {}, hidden {}, {} layers, {} heads, {} kv heads, vocab {}, seq {}",
        done.path.display(),
        done.bytes,
        done.step,
        m.dim,
        m.hidden,
        m.n_layers,
        m.n_heads,
        m.n_kv_heads,
        m.vocab,
        m.seq
    );
    Ok(ExitCode::SUCCESS)
}
