//! `milbridge bench train`: the seed's comparison (PR #22: weights as function parameters vs
//! packed into the spatial axis) measured on this machine, one mode after the other in one
//! process (issue 7).
//!
//! Per mode: the kernels are compiled cold into a fresh cache directory, then built again from
//! that cache (both timed); a few warm-up micro-steps run untimed; then every micro-step is
//! timed. The forward+backward time of each micro-step gives min and median; the optimizer
//! steps (AdamW and the weight writes after it) are timed separately, so the report gives both
//! "Adam amortised over the accumulation window" (`fb + opt/accum`) and "Adam every step"
//! (`fb + opt`), with the [`Breakdown`] of where the time went, the `write_weight` latency of
//! the largest layer weight, and the final loss.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use milbridge_bridge::CachePolicy;

use crate::backend::KernelProfileRow;
use crate::config::{Compute, TrainConfig, WeightMode};
use crate::error::{Error, Result};
use crate::kernels::KernelBackend;
use crate::model::ModelSpec;
use crate::timing::Breakdown;
use crate::train::Trainer;

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The model.
    pub model: ModelSpec,
    /// The weight modes, in run order.
    pub modes: Vec<WeightMode>,
    /// Timed micro-steps per mode.
    pub steps: u64,
    /// Untimed micro-steps before them.
    pub warmup: u64,
    /// Micro-steps per optimizer step.
    pub accum: u64,
    /// The engine's fast precision profile.
    pub fast: bool,
    /// Seed of weights and data.
    pub seed: u64,
    /// Token shard, `None` for the embedded corpus.
    pub data: Option<PathBuf>,
    /// Profile the compiled kernels' plan steps during the timed steps
    /// ([`ModeReport::kernel_profile`]; two clock reads per plan step).
    pub profile: bool,
    /// Where the cold and cached compiles go (a fresh subdirectory per mode is created and
    /// removed).
    pub cache_root: PathBuf,
}

/// One mode's figures.
#[derive(Debug, Clone)]
pub struct ModeReport {
    /// `params` or `packed`.
    pub mode: WeightMode,
    /// Model name.
    pub model: String,
    /// Timed micro-steps.
    pub steps: u64,
    /// Micro-steps per optimizer step.
    pub accum: u64,
    /// Forward+backward per micro-step (no optimizer), every timed step.
    pub fb_ms: Vec<f64>,
    /// Optimizer steps (AdamW + weight writes), each.
    pub opt_ms: Vec<f64>,
    /// Kernel kinds compiled cold.
    pub kernels_compiled: usize,
    /// Kernel objects in use (per-layer instances counted).
    pub kernel_objects: usize,
    /// Building every kernel with an empty cache.
    pub compile_ms_cold: f64,
    /// Building them again from the cache.
    pub compile_ms_cached: f64,
    /// `write_weight_f32` of the `[hidden, dim]` weight (packed: restaging one layer's packed
    /// FFN input), each repetition, in µs.
    pub write_weight_us: Vec<f64>,
    /// Mean per micro-step of the timed steps' passes.
    pub breakdown: Breakdown,
    /// Mean per optimizer step.
    pub optimizer_breakdown: Breakdown,
    /// Mean loss of the last (up to) 5 timed steps.
    pub final_loss: f32,
    /// With [`BenchConfig::profile`]: where the kernels' time went, per micro-step (each row's
    /// time divided by the timed steps), largest first.
    pub kernel_profile: Vec<KernelProfileRow>,
}

/// Min and median of a sample (`(NaN, NaN)` when empty).
pub fn min_median(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    };
    (v[0], median)
}

impl ModeReport {
    /// Median optimizer step (0 when none ran).
    fn opt_median(&self) -> f64 {
        let (_, med) = min_median(&self.opt_ms);
        if med.is_nan() { 0.0 } else { med }
    }

    /// ms/step with the optimizer amortised over the accumulation window: (min, median).
    pub fn ms_per_step(&self) -> (f64, f64) {
        let (min, med) = min_median(&self.fb_ms);
        let opt = self.opt_median() / self.accum.max(1) as f64;
        (min + opt, med + opt)
    }

    /// ms/step with an optimizer step after every micro-step: (min, median).
    pub fn ms_per_step_adam_every_step(&self) -> (f64, f64) {
        let (min, med) = min_median(&self.fb_ms);
        let opt = self.opt_median();
        (min + opt, med + opt)
    }

    /// The JSON object of issue 7 (plus a few extra fields).
    pub fn to_json(&self) -> serde_json::Value {
        let (min, med) = self.ms_per_step();
        let (emin, emed) = self.ms_per_step_adam_every_step();
        let (wmin, wmed) = min_median(&self.write_weight_us);
        let millis = |b: &Breakdown| {
            serde_json::Value::Object(
                b.millis()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect(),
            )
        };
        let mut breakdown = millis(&self.breakdown);
        if let serde_json::Value::Object(map) = &mut breakdown {
            map.insert(
                "optimizer_amortised".into(),
                serde_json::json!(self.opt_median() / self.accum.max(1) as f64),
            );
        }
        let profile: Vec<serde_json::Value> = self
            .kernel_profile
            .iter()
            .map(|row| {
                serde_json::json!({
                    "kernel": row.kernel,
                    "step_kernel": row.step_kernel,
                    "steps": row.steps,
                    "ms": ms(row.time),
                })
            })
            .collect();
        serde_json::json!({
            "mode": self.mode.name(),
            "model": self.model,
            "steps": self.steps,
            "accum": self.accum,
            "ms_per_step_min": min,
            "ms_per_step_median": med,
            "ms_per_step_adam_every_step_min": emin,
            "ms_per_step_adam_every_step_median": emed,
            "optimizer_step_ms_median": self.opt_median(),
            "compile_ms_cold": self.compile_ms_cold,
            "compile_ms_cached": self.compile_ms_cached,
            "kernels": self.kernels_compiled,
            "kernel_objects": self.kernel_objects,
            "write_weight_us_min": wmin,
            "write_weight_us_median": wmed,
            "breakdown": breakdown,
            "optimizer_breakdown": millis(&self.optimizer_breakdown),
            "final_loss": self.final_loss,
            "kernel_profile_ms_per_step": profile,
        })
    }
}

/// Progress of a benchmark, for a caller that prints.
pub trait BenchObserver {
    /// A phase started (`compile cold`, `steps`, ...).
    fn phase(&mut self, mode: WeightMode, what: &str);
    /// A timed micro-step finished.
    fn step(&mut self, mode: WeightMode, index: u64, total: u64, ms: f64, loss: f32);
}

/// Runs the benchmark, one mode after the other.
///
/// # Errors
///
/// Bad configuration, a cache directory that cannot be created, a kernel failure.
pub fn run(cfg: &BenchConfig, observer: &mut dyn BenchObserver) -> Result<Vec<ModeReport>> {
    if cfg.steps == 0 {
        return Err(Error::Config(
            "bench train needs at least one timed step".into(),
        ));
    }
    cfg.model.validate()?;
    let mut reports = Vec::new();
    for &mode in &cfg.modes {
        reports.push(run_mode(cfg, mode, observer)?);
    }
    Ok(reports)
}

fn run_mode(
    cfg: &BenchConfig,
    mode: WeightMode,
    observer: &mut dyn BenchObserver,
) -> Result<ModeReport> {
    let cache_dir = cfg.cache_root.join(format!(
        "milbridge-bench-train-{}-{}-{}",
        cfg.model.name,
        mode.name(),
        std::process::id()
    ));
    if cache_dir.exists() {
        std::fs::remove_dir_all(&cache_dir)
            .map_err(|e| Error::io("bench cache directory", &cache_dir, e))?;
    }
    std::fs::create_dir_all(&cache_dir)
        .map_err(|e| Error::io("bench cache directory", &cache_dir, e))?;
    let result = run_mode_in(cfg, mode, observer, &cache_dir);
    // Best effort: the directory only holds this run's cache entries.
    let _ = std::fs::remove_dir_all(&cache_dir);
    result
}

fn run_mode_in(
    cfg: &BenchConfig,
    mode: WeightMode,
    observer: &mut dyn BenchObserver,
    cache_dir: &std::path::Path,
) -> Result<ModeReport> {
    let build = |spec: &ModelSpec| {
        KernelBackend::with_cache(
            spec,
            mode,
            cfg.fast,
            CachePolicy::Dir(cache_dir.to_path_buf()),
        )
    };
    observer.phase(mode, "compiling every kernel (cold cache)");
    let t0 = Instant::now();
    let cold = build(&cfg.model)?;
    let compile_ms_cold = ms(t0.elapsed());
    let kernels_compiled = cold.cold_compiles();
    drop(cold);

    observer.phase(mode, "building again from the compile cache");
    let train_cfg = TrainConfig {
        model: cfg.model.clone(),
        compute: Compute::Kernels(mode),
        fast: cfg.fast,
        data: cfg.data.clone(),
        steps: cfg.warmup + cfg.steps,
        accum: cfg.accum,
        seed: cfg.seed,
        checkpoint: None,
        plot: None,
        metrics: None,
        sample_tokens: 0,
        ..TrainConfig::embedded_default()
    };
    let mut compile_ms_cached = 0.0;
    let mut kernel_objects = 0;
    let mut trainer = Trainer::with_backend(&train_cfg, |spec| {
        let t0 = Instant::now();
        let k = build(spec)?;
        compile_ms_cached = ms(t0.elapsed());
        kernel_objects = k.kernel_count();
        Ok((Box::new(k), 0, kernel_objects))
    })?;

    observer.phase(mode, "warm-up steps (untimed)");
    for _ in 0..cfg.warmup {
        trainer.step()?;
    }
    let _ = trainer.take_times();
    let profiled = cfg.profile && trainer.backend_mut().profile_kernels();
    observer.phase(mode, "timed steps");
    let (mut fb_ms, mut opt_ms, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pass_sum, mut opt_sum) = (Breakdown::default(), Breakdown::default());
    for i in 0..cfg.steps {
        let outcome = trainer.step()?;
        let (pass, opt) = trainer.take_times();
        fb_ms.push(ms(pass.total));
        pass_sum.add(&pass);
        if outcome.optimizer_step {
            opt_ms.push(ms(opt.total));
            opt_sum.add(&opt);
        }
        losses.push(outcome.loss);
        observer.step(mode, i + 1, cfg.steps, ms(pass.total), outcome.loss);
    }
    let kernel_profile = if profiled {
        let steps = u32::try_from(cfg.steps).unwrap_or(u32::MAX);
        let mut rows = trainer.backend_mut().kernel_profile();
        for row in &mut rows {
            row.time /= steps;
        }
        rows
    } else {
        Vec::new()
    };
    observer.phase(mode, "timing write_weight");
    let write_weight_us = trainer
        .backend_mut()
        .time_weight_write(20)?
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect();
    let tail = &losses[losses.len().saturating_sub(5)..];
    let final_loss = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    let n_opt = u32::try_from(opt_ms.len()).unwrap_or(u32::MAX);
    Ok(ModeReport {
        mode,
        model: cfg.model.name.clone(),
        steps: cfg.steps,
        accum: cfg.accum,
        fb_ms,
        opt_ms,
        kernels_compiled,
        kernel_objects,
        compile_ms_cold,
        compile_ms_cached,
        write_weight_us,
        breakdown: pass_sum.div(u32::try_from(cfg.steps).unwrap_or(u32::MAX)),
        optimizer_breakdown: opt_sum.div(n_opt),
        final_loss,
        kernel_profile,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl BenchObserver for Quiet {
        fn phase(&mut self, _: WeightMode, _: &str) {}
        fn step(&mut self, _: WeightMode, _: u64, _: u64, _: f64, _: f32) {}
    }

    #[test]
    fn min_median_of_odd_even_and_empty_samples() {
        assert_eq!(min_median(&[3.0, 1.0, 2.0]), (1.0, 2.0));
        assert_eq!(min_median(&[4.0, 1.0, 2.0, 3.0]), (1.0, 2.5));
        assert!(min_median(&[]).0.is_nan());
    }

    #[test]
    fn both_modes_report_every_field_on_a_tiny_model() {
        let root = std::env::temp_dir().join(format!("mb-bench-test-{}", std::process::id()));
        let cfg = BenchConfig {
            model: ModelSpec::tiny(),
            modes: vec![
                WeightMode::Params,
                WeightMode::Packed,
                WeightMode::PackedRestage,
            ],
            steps: 4,
            warmup: 1,
            accum: 2,
            fast: false,
            seed: 7,
            data: None,
            profile: true,
            cache_root: root.clone(),
        };
        let reports = run(&cfg, &mut Quiet).expect("bench");
        assert_eq!(reports.len(), 3);
        for r in &reports {
            assert_eq!(r.fb_ms.len(), 4);
            assert_eq!(
                r.opt_ms.len(),
                3,
                "micro-steps 2 and 4 end an accumulation, and the run's last one (5) too"
            );
            assert!(r.kernels_compiled > 0, "the cold build compiles");
            assert!(r.kernel_objects >= r.kernels_compiled);
            assert_eq!(r.write_weight_us.len(), 20);
            assert!(r.final_loss.is_finite());
            let (min, med) = r.ms_per_step();
            assert!(min > 0.0 && min <= med);
            let (emin, _) = r.ms_per_step_adam_every_step();
            assert!(emin >= min);
            assert!(r.breakdown.kernels > Duration::ZERO);
            assert!(r.breakdown.total >= r.breakdown.kernels);
            assert!(!r.kernel_profile.is_empty(), "{}: profiled", r.mode.name());
            let profiled: Duration = r.kernel_profile.iter().map(|row| row.time).sum();
            assert!(
                profiled > Duration::ZERO && profiled <= r.breakdown.total,
                "{}: the steps' time {profiled:?} lies within the pass {:?}",
                r.mode.name(),
                r.breakdown.total
            );
            assert!(
                r.kernel_profile
                    .windows(2)
                    .all(|pair| pair[0].time >= pair[1].time),
                "largest first"
            );
            assert!(r.kernel_profile.iter().all(|row| row.steps > 0));
            let json = r.to_json();
            for key in [
                "mode",
                "model",
                "steps",
                "ms_per_step_min",
                "ms_per_step_median",
                "compile_ms_cold",
                "compile_ms_cached",
                "kernels",
                "breakdown",
                "final_loss",
            ] {
                assert!(json.get(key).is_some(), "missing {key}");
            }
        }
        let a = reports[0].final_loss;
        for r in &reports[1..] {
            let b = r.final_loss;
            assert!(
                (a - b).abs() <= 1e-3 * a.abs(),
                "every mode computes the same math from the same seed: {a} vs {b}"
            );
        }
        assert!(!root.join("milbridge-bench-train-tiny-params").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
