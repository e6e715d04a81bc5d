//! `milbridge bench jitter`: evaluation latency with and without real-time mode, under load.
//!
//! [`jitter`] compiles a mid-size dynamic-weight matmul ([`crate::samples::dyn_matmul`]),
//! starts CPU-bound competitor processes (`sh -c 'while :; do :; done'`, one per CPU unless
//! configured otherwise), times `iterations` evaluations in normal mode and then as many inside
//! [`RealtimeGuard`], kills the competitors, and reports p50 / p99 / p99.9 / max of both. It
//! measures; it asserts nothing. The seed's claim (p99 35.2 → 3.3 ms on Apple's hardware) is
//! about a different mechanism; report what this machine shows.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use half::f16;

use crate::error::{Error, Result};
use crate::kernel::{CachePolicy, Kernel, KernelOptions};
use crate::realtime::{RealtimeGuard, RealtimeStatus};
use crate::samples;

/// What to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// Timed evaluations per mode.
    pub iterations: usize,
    /// Untimed evaluations before each mode.
    pub warmup: usize,
    /// Competing busy-loop processes (default: one per available CPU).
    pub competitors: usize,
    /// Matmul size `n = k = m` of the kernel.
    pub size: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            iterations: 5000,
            warmup: 100,
            competitors: std::thread::available_parallelism().map_or(1, |n| n.get()),
            size: 256,
        }
    }
}

/// Latency percentiles of one mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Slowest evaluation.
    pub max: Duration,
    /// Number of samples.
    pub samples: usize,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (sorted in place). Empty input gives zeros.
    pub fn from_samples(samples: &mut [Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let idx = (q * samples.len() as f64).ceil() as usize;
            samples[idx.clamp(1, samples.len()) - 1]
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[samples.len() - 1],
            samples: samples.len(),
        }
    }
}

/// The result of [`jitter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterReport {
    /// What was run.
    pub config: JitterConfig,
    /// A one-line description of the kernel.
    pub kernel: String,
    /// Competitor processes actually started.
    pub competitors_started: usize,
    /// Normal mode.
    pub baseline: Percentiles,
    /// Inside real-time mode.
    pub realtime: Percentiles,
    /// What real-time mode achieved while measuring.
    pub realtime_status: RealtimeStatus,
}

impl JitterReport {
    /// `1 - realtime.p99 / baseline.p99`, as a fraction (negative when real-time mode was
    /// slower).
    pub fn p99_reduction(&self) -> f64 {
        reduction(self.baseline.p99, self.realtime.p99)
    }

    /// The same for p99.9.
    pub fn p999_reduction(&self) -> f64 {
        reduction(self.baseline.p999, self.realtime.p999)
    }
}

fn reduction(before: Duration, after: Duration) -> f64 {
    if before.is_zero() {
        return 0.0;
    }
    1.0 - after.as_secs_f64() / before.as_secs_f64()
}

/// Busy-loop child processes, killed and reaped on drop (also when unwinding).
struct Competitors(Vec<Child>);

impl Competitors {
    fn start(count: usize) -> Competitors {
        let children = (0..count)
            .filter_map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect();
        Competitors(children)
    }
}

impl Drop for Competitors {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn time_evals(kernel: &mut Kernel, warmup: usize, iterations: usize) -> Result<Vec<Duration>> {
    for _ in 0..warmup {
        kernel.eval()?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        kernel.eval()?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// Runs the benchmark (see the module docs). Takes seconds with the default configuration.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for zero iterations or size; compile or eval errors.
pub fn jitter(config: &JitterConfig) -> Result<JitterReport> {
    if config.iterations == 0 || config.size == 0 {
        return Err(Error::InvalidArgument(format!(
            "jitter needs at least one iteration and a non-zero size (got {} iterations, size {})",
            config.iterations, config.size
        )));
    }
    let n = config.size;
    let mil = samples::dyn_matmul(n, n, n);
    let options = KernelOptions {
        cache: CachePolicy::Disabled,
        ..KernelOptions::default()
    };
    let bytes = 2 * n * n;
    let mut kernel = Kernel::compile_dyn(&mil, &[bytes], &[bytes], &[bytes], &options)?;
    let x: Vec<f16> = (0..n * n)
        .map(|i| f16::from_f32(((i % 17) as f32 - 8.0) / 8.0))
        .collect();
    let w: Vec<f16> = (0..n * n)
        .map(|i| f16::from_f32(((i % 13) as f32 - 6.0) / 64.0))
        .collect();
    kernel.write_input_f16(0, &x)?;
    kernel.write_weight(0, &w)?;

    let competitors = Competitors::start(config.competitors);
    let mut baseline = time_evals(&mut kernel, config.warmup, config.iterations)?;
    let (mut realtime, realtime_status) = {
        let guard = RealtimeGuard::new();
        let samples = time_evals(&mut kernel, config.warmup, config.iterations)?;
        (samples, guard.status().clone())
    };
    let competitors_started = competitors.0.len();
    drop(competitors);

    Ok(JitterReport {
        config: config.clone(),
        kernel: format!(
            "fp16 dynamic-weight matmul [1,{n},{n}] @ [1,{n},{n}] ({} MFLOP per eval)",
            2 * n * n * n / 1_000_000
        ),
        competitors_started,
        baseline: Percentiles::from_samples(&mut baseline),
        realtime: Percentiles::from_samples(&mut realtime),
        realtime_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let p = Percentiles::from_samples(&mut samples);
        assert_eq!(p.p50, Duration::from_micros(500));
        assert_eq!(p.p99, Duration::from_micros(990));
        assert_eq!(p.p999, Duration::from_micros(999));
        assert_eq!(p.max, Duration::from_micros(1000));
        assert_eq!(p.samples, 1000);
        let mut one = vec![Duration::from_millis(3)];
        let p = Percentiles::from_samples(&mut one);
        assert_eq!(
            (p.p50, p.p999, p.max),
            (
                Duration::from_millis(3),
                Duration::from_millis(3),
                Duration::from_millis(3)
            )
        );
        assert_eq!(Percentiles::from_samples(&mut []), Percentiles::default());
    }

    #[test]
    fn reduction_is_a_fraction() {
        let report = |before: u64, after: u64| JitterReport {
            config: JitterConfig::default(),
            kernel: String::new(),
            competitors_started: 0,
            baseline: Percentiles {
                p99: Duration::from_micros(before),
                ..Percentiles::default()
            },
            realtime: Percentiles {
                p99: Duration::from_micros(after),
                ..Percentiles::default()
            },
            realtime_status: RealtimeStatus::default(),
        };
        assert!((report(35_200, 3_300).p99_reduction() - 0.90625).abs() < 1e-9);
        assert!(report(100, 150).p99_reduction() < 0.0);
        assert_eq!(report(0, 5).p99_reduction(), 0.0);
    }

    #[test]
    fn rejects_empty_runs() {
        let err = jitter(&JitterConfig {
            iterations: 0,
            ..JitterConfig::default()
        })
        .expect_err("no iterations");
        assert!(err.to_string().contains("got 0 iterations"), "{err}");
    }

    #[test]
    fn short_run_under_load_reports_both_modes() {
        let _serial = crate::realtime::TEST_LOCK
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let config = JitterConfig {
            iterations: 40,
            warmup: 2,
            competitors: 1,
            size: 32,
        };
        let report = jitter(&config).expect("jitter");
        assert_eq!(report.competitors_started, 1);
        for p in [report.baseline, report.realtime] {
            assert_eq!(p.samples, 40);
            assert!(
                p.p50 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
                "{p:?}"
            );
            assert!(!p.p50.is_zero());
        }
        assert!(report.realtime_status.active);
        assert!(
            !crate::realtime::realtime_status().active,
            "the guard ended real-time mode"
        );
    }
}
