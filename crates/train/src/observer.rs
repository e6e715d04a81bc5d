//! What the user sees: the trainer reports through an [`Observer`] that the CLI implements
//! (progress bar, log lines); this crate never prints. [`MetricsWriter`] (JSONL) and
//! [`loss_curve_svg`] are the file outputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Facts about a run, reported once before the first step.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Model preset name (`tiny`, `stories15m`, ... or `custom`).
    pub model: String,
    /// Parameter count.
    pub params: usize,
    /// `params` or `packed`.
    pub weights: String,
    /// Where the tokens come from.
    pub data: String,
    /// Tokens in the data.
    pub data_tokens: usize,
    /// Micro-step the run starts at (non-zero when resumed).
    pub start_step: u64,
    /// Micro-step the run stops at.
    pub total_steps: u64,
    /// Micro-steps per optimizer step.
    pub accum: u64,
    /// Tokens per micro-step (the sequence length).
    pub tokens_per_step: usize,
    /// Kernels compiled (cold compiles, not cache hits) while setting up.
    pub kernels_compiled: usize,
    /// Kernel objects in use (per-layer kernels count once per layer).
    pub kernels: usize,
    /// Time spent compiling/setting up, in milliseconds.
    pub setup_ms: f64,
}

/// One micro-step (one window through forward and backward).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 0-based micro-step index.
    pub step: u64,
    /// Micro-step the run stops at.
    pub total_steps: u64,
    /// Cross-entropy loss of this window, in nats per token.
    pub loss: f32,
    /// Learning rate in force for the optimizer step this micro-step belongs to.
    pub lr: f32,
    /// Wall time of this micro-step (including the optimizer update when one ran).
    pub ms: f64,
    /// Tokens per second over this micro-step.
    pub tokens_per_s: f64,
    /// Estimated seconds to the end of the run.
    pub eta_s: f64,
    /// Loss scale used for the backward pass.
    pub loss_scale: f32,
    /// Whether an optimizer step ran after this micro-step.
    pub optimizer_step: bool,
    /// Global gradient norm before clipping, when an optimizer step ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Whether the optimizer step was skipped because gradients overflowed.
    pub skipped: bool,
}

impl StepReport {
    /// One line for a progress display:
    /// `step 120/2000  loss 2.3456  lr 1.99e-3  12.3 ms/step  5203 tok/s  ETA 0:23`.
    pub fn progress_line(&self) -> String {
        let eta = self.eta_s.max(0.0).round() as u64;
        let eta = if eta >= 3600 {
            format!("{}:{:02}:{:02}", eta / 3600, eta / 60 % 60, eta % 60)
        } else {
            format!("{}:{:02}", eta / 60, eta % 60)
        };
        let mut line = format!(
            "step {}/{}  loss {:.4}  lr {:.2e}  {:.1} ms/step  {:.0} tok/s  ETA {eta}",
            self.step + 1,
            self.total_steps,
            self.loss,
            self.lr,
            self.ms,
            self.tokens_per_s
        );
        if self.skipped {
            line.push_str(&format!(
                "  (fp16 overflow: step skipped, loss scale now {})",
                self.loss_scale
            ));
        }
        line
    }
}

/// Things that happen besides steps.
#[derive(Debug, Clone)]
pub enum Event {
    /// A checkpoint was written.
    CheckpointSaved {
        /// Its directory.
        path: PathBuf,
        /// The micro-step it resumes at.
        step: u64,
    },
    /// Training resumed from a checkpoint.
    Resumed {
        /// Its directory.
        path: PathBuf,
        /// The micro-step it resumes at.
        step: u64,
    },
    /// An interrupt (Ctrl-C) was seen; a checkpoint is saved and the run ends.
    Interrupted {
        /// The micro-step reached.
        step: u64,
    },
    /// Gradients overflowed in fp16; the optimizer step was skipped and the scale lowered.
    Overflow {
        /// The micro-step whose optimizer step was skipped.
        step: u64,
        /// The new loss scale.
        new_scale: f32,
    },
    /// The loss-curve plot was written.
    PlotWritten {
        /// The SVG file.
        path: PathBuf,
    },
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Micro-steps run in this invocation.
    pub steps_run: u64,
    /// The last micro-step reached (the next run resumes here).
    pub final_step: u64,
    /// Loss of the first micro-step of this invocation.
    pub first_loss: f32,
    /// Mean loss over the last (up to) 10 micro-steps.
    pub last_loss: f32,
    /// Mean milliseconds per micro-step.
    pub ms_per_step: f64,
    /// Whether the run ended early on an interrupt.
    pub interrupted: bool,
    /// Text generated at the end (when the run asked for a sample).
    pub sample: Option<String>,
}

/// Receives the trainer's progress. Every method has an empty default.
pub trait Observer {
    /// Before the first step.
    fn on_start(&mut self, _info: &RunInfo) {}
    /// After each micro-step.
    fn on_step(&mut self, _report: &StepReport) {}
    /// Checkpoints, resumes, interrupts, overflows.
    fn on_event(&mut self, _event: &Event) {}
    /// After the last step.
    fn on_finish(&mut self, _summary: &Summary) {}
    /// Polled between steps: `true` ends the run like an interrupt (checkpoint, then return).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything (tests, batch use).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullObserver;

impl Observer for NullObserver {}

/// An observer that keeps every report (tests, the plot).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// Reports in step order.
    pub steps: Vec<StepReport>,
    /// Events in order.
    pub events: Vec<Event>,
}

impl Observer for Recorder {
    fn on_step(&mut self, report: &StepReport) {
        self.steps.push(report.clone());
    }
    fn on_event(&mut self, event: &Event) {
        self.events.push(event.clone());
    }
}

/// Writes one JSON object per micro-step (`step`, `loss`, `lr`, `ms` and the rest of
/// [`StepReport`]) to a file, appending when resuming.
pub struct MetricsWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl MetricsWriter {
    /// Creates (or, with `append`, extends) the metrics file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be opened.
    pub fn open(path: &Path, append: bool) -> Result<MetricsWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::io("cannot open metrics file", path, e))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        })
    }

    /// Appends one line.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the write fails.
    pub fn write(&mut self, report: &StepReport) -> Result<()> {
        let line = serde_json::to_string(report).expect("invariant: reports serialise");
        writeln!(self.out, "{line}").map_err(|e| Error::io("cannot write", &self.path, e))?;
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
}

/// An SVG line chart of loss against step (raw points and a moving average), drawn by hand.
pub fn loss_curve_svg(points: &[(u64, f32)], title: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 64.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 48.0;
    let finite: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, y)| y.is_finite())
        .map(|&(x, y)| (x as f64, f64::from(y)))
        .collect();
    let mut svg = String::new();
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    svg.push_str(&format!(
        "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n"
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        xml_escape(title)
    ));
    let (x0, x1) = bounds(finite.iter().map(|p| p.0));
    let (y0, y1) = bounds(finite.iter().map(|p| p.1));
    let (y0, y1) = if y1 - y0 < 1e-9 {
        (y0 - 0.5, y1 + 0.5)
    } else {
        (y0, y1)
    };
    let x1 = if x1 - x0 < 1e-9 { x0 + 1.0 } else { x1 };
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| T + (y1 - y) / (y1 - y0) * (H - T - B);
    // axes and ticks
    svg.push_str(&format!(
        "<path d=\"M{L} {T} V{} H{}\" stroke=\"black\" fill=\"none\"/>\n",
        H - B,
        W - R
    ));
    for i in 0..=5 {
        let fy = y0 + (y1 - y0) * f64::from(i) / 5.0;
        let fx = x0 + (x1 - x0) * f64::from(i) / 5.0;
        svg.push_str(&format!(
            "<line x1=\"{L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{fy:.2}</text>\n",
            W - R,
            L - 6.0,
            py(fy) + 4.0,
            y = py(fy)
        ));
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(fx),
            H - B + 18.0,
            fx.round()
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">loss</text>\n",
        (L + W - R) / 2.0,
        H - 10.0,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    ));
    if !finite.is_empty() {
        let raw: Vec<String> = finite
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        svg.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#9ecae1\" stroke-width=\"1\"/>\n",
            raw.join(" ")
        ));
        let window = (finite.len() / 20).max(1);
        let mut avg = Vec::with_capacity(finite.len());
        let mut sum = 0.0;
        for (i, &(x, y)) in finite.iter().enumerate() {
            sum += y;
            if i >= window {
                sum -= finite[i - window].1;
            }
            let n = (i + 1).min(window) as f64;
            avg.push(format!("{:.1},{:.1}", px(x), py(sum / n)));
        }
        svg.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#08519c\" stroke-width=\"2\"/>\n",
            avg.join(" ")
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(step: u64, loss: f32) -> StepReport {
        StepReport {
            step,
            total_steps: 10,
            loss,
            lr: 1e-3,
            ms: 12.5,
            tokens_per_s: 100.0,
            eta_s: 1.0,
            loss_scale: 256.0,
            optimizer_step: false,
            grad_norm: None,
            skipped: false,
        }
    }

    #[test]
    fn metrics_lines_are_json_objects_with_the_required_keys() {
        let dir = std::env::temp_dir().join(format!("milbridge-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("m.jsonl");
        {
            let mut w = MetricsWriter::open(&path, false).expect("open");
            w.write(&report(0, 5.5)).expect("write");
            w.write(&report(1, 5.25)).expect("write");
        }
        {
            let mut w = MetricsWriter::open(&path, true).expect("append");
            w.write(&report(2, 5.0)).expect("write");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["step"], 1);
        assert_eq!(lines[1]["loss"], 5.25);
        assert_eq!(
            lines[2]["lr"].as_f64().map(|v| (v - 1e-3).abs() < 1e-9),
            Some(true)
        );
        assert_eq!(lines[0]["ms"], 12.5);
        assert!(lines[0].get("grad_norm").is_none());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn progress_line_shows_the_numbers() {
        let mut r = report(119, 2.345_67);
        r.total_steps = 2000;
        r.eta_s = 83.4;
        assert_eq!(
            r.progress_line(),
            "step 120/2000  loss 2.3457  lr 1.00e-3  12.5 ms/step  100 tok/s  ETA 1:23"
        );
        r.eta_s = 3725.0;
        assert!(r.progress_line().ends_with("ETA 1:02:05"));
    }

    #[test]
    fn svg_has_both_curves_and_escapes_the_title() {
        let points: Vec<(u64, f32)> = (0..50).map(|i| (i, 5.0 - i as f32 * 0.05)).collect();
        let svg = loss_curve_svg(&points, "loss <tiny>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("loss &lt;tiny&gt;"));
        // the first point sits at the top-left corner of the plot area, the last at the bottom
        assert!(svg.contains("64.0,40.0"));
        assert!(svg.contains("700.0,372.0"));
        let empty = loss_curve_svg(&[], "empty");
        assert_eq!(empty.matches("<polyline").count(), 0);
    }
}
