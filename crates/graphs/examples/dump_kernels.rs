//! Writes the params-mode training kernels of a preset (default stories110m) as MIL files with
//! their blobs under a directory (default `/tmp/kernels`), for `milbridge bench kernel`.

use milbridge_graphs::config::{ModelConfig, WeightMode};
use milbridge_graphs::dynamic;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/kernels".into()));
    let cfg = match args.next().as_deref() {
        Some("stories15m") => ModelConfig::stories15m(),
        Some("stories42m") => ModelConfig::stories42m(),
        _ => ModelConfig::stories110m(),
    };
    std::fs::create_dir_all(&dir)?;
    for kernel in dynamic::training_kernels(&cfg, WeightMode::Params) {
        let path = dir.join(format!("{}.mil", kernel.name));
        std::fs::write(&path, milbridge_mil::print::print(&kernel.program))?;
        for blob in &kernel.blobs {
            let rel = blob.path.trim_start_matches("@model_path/");
            let target = dir.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, &blob.bytes)?;
        }
        println!(
            "{} ({} inputs, {} weights)",
            path.display(),
            kernel.inputs.len(),
            kernel.weights.len()
        );
    }
    Ok(())
}
