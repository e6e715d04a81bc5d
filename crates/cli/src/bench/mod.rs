//! `milbridge bench gemm` and `milbridge bench repack`: throughput of linalg's kernels per ISA
//! tier, measured side by side with the machine's peak and a reference library in one
//! process.
//!
//! * [`gemm::run`] (`bench gemm`): the training shapes through every available tier.
//! * [`train::run`] (`bench train`): the seed's params-vs-packed training comparison.
//! * [`repack::run`] (`bench repack`): a weight update (f32 → f16 + panel repack) against a
//!   plain `memcpy` of the weight.
//! * [`write_weight::run`] (`bench write-weight`): the bridge's `write_weight_f32` end to end,
//!   panels packed on write, against a `memcpy`; eval with prepacked weights against per-eval
//!   packing.
//!
//! Benchmarks are never tests or CI gates: the machines are small and shared. Every table
//! states the load average it ran under.

pub mod gemm;
pub mod repack;
pub mod train;
pub mod write_weight;

/// The 1-minute load average from `/proc/loadavg` (`None` where it can't be read).
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A line describing the load around a measurement, with a warning when the machine was busy
/// (1-minute load above half the available cores).
pub(crate) fn load_note(before: Option<f64>, after: Option<f64>) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match (before, after) {
        (Some(before), Some(after)) => {
            let busy = before.max(after) > 0.5 * cores as f64;
            format!(
                "load average (1 min): {before:.2} before, {after:.2} after, {cores} cores{}",
                if busy {
                    " (LOADED MACHINE: other processes competed for the cores; \
                     compare ratios measured in this run, not absolute numbers)"
                } else {
                    ""
                }
            )
        }
        _ => format!("load average unavailable, {cores} cores"),
    }
}

/// Parses `--tiers` (empty: every tier the host has). Unknown or unavailable tiers are errors.
pub(crate) fn parse_tiers(names: &[String]) -> anyhow::Result<Vec<milbridge_linalg::Isa>> {
    use milbridge_linalg::{Isa, cpu};
    if names.is_empty() {
        return Ok(Isa::ALL
            .into_iter()
            .filter(|&isa| cpu::isa_available(isa))
            .collect());
    }
    names
        .iter()
        .map(|name| {
            let isa = Isa::parse(name).ok_or_else(|| {
                anyhow::anyhow!("unknown tier `{name}` (expected generic, avx2, avx512 or amx)")
            })?;
            anyhow::ensure!(
                cpu::isa_available(isa),
                "tier {isa} is not available on this host (best: {})",
                cpu::host_isa()
            );
            Ok(isa)
        })
        .collect()
}

/// The minimum, median and maximum of `values` (which must not be empty).
pub(crate) fn min_median_max(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        0.5 * (sorted[mid - 1] + sorted[mid])
    } else {
        sorted[mid]
    };
    (sorted[0], median, sorted[sorted.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_odd_and_even_lists() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(min_median_max(&[4.0, 1.0, 2.0, 3.0]), (1.0, 2.5, 4.0));
        assert_eq!(min_median_max(&[5.0]), (5.0, 5.0, 5.0));
    }

    #[test]
    fn tiers_parse_and_reject_unknown_names() {
        let all = parse_tiers(&[]).expect("the host's tiers");
        assert!(all.contains(&milbridge_linalg::Isa::Generic));
        let generic = parse_tiers(&["generic".to_string()]).expect("generic always exists");
        assert_eq!(generic, vec![milbridge_linalg::Isa::Generic]);
        let error = parse_tiers(&["sse9".to_string()]).expect_err("unknown tier");
        assert!(error.to_string().contains("unknown tier `sse9`"), "{error}");
    }

    #[test]
    fn load_note_flags_a_busy_machine() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(load_note(Some(cores * 4.0), Some(0.0)).contains("LOADED MACHINE"));
        assert!(!load_note(Some(0.0), Some(0.0)).contains("LOADED"));
        assert!(load_note(None, Some(1.0)).contains("unavailable"));
    }
}
