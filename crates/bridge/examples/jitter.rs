//! Runs the jitter benchmark and prints what `milbridge bench jitter` prints.
//!
//! `cargo run --release -p milbridge-bridge --example jitter [ITERATIONS] [SIZE] [COMPETITORS]`

use milbridge_bridge::bench::{JitterConfig, jitter};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|arg| arg.parse::<usize>().expect("a number"));
    let defaults = JitterConfig::default();
    let config = JitterConfig {
        iterations: args.next().unwrap_or(defaults.iterations),
        size: args.next().unwrap_or(defaults.size),
        competitors: args.next().unwrap_or(defaults.competitors),
        ..defaults
    };
    let report = jitter(&config).expect("jitter benchmark");
    println!("{}", report.kernel);
    println!(
        "{} competing busy-loop processes, {} evals per mode",
        report.competitors_started, config.iterations
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
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
}
