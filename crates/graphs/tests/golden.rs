//! Printed text of a few generated kernels at small sizes, compared with the files in
//! `tests/golden/` (review them like code: they show exactly what the generators emit).
//! `MILBRIDGE_BLESS=1 cargo test -p milbridge-graphs --test golden` rewrites them.

use milbridge_graphs::{GeneratedKernel, ModelConfig, WeightMode, dynamic, stories};
use milbridge_mil as mil;
use std::path::PathBuf;

fn check(file: &str, kernel: &GeneratedKernel) {
    let text = mil::print::print(&kernel.program);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    if std::env::var_os("MILBRIDGE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (bless with MILBRIDGE_BLESS=1)", path.display()));
    assert!(
        text == expected,
        "{} differs from the generator's output (bless with MILBRIDGE_BLESS=1):\n{text}",
        path.display()
    );
}

/// A config small enough to read: dim 8, 2 query heads and 1 key/value head of 4, seq 4.
fn micro(qk_norm: bool) -> ModelConfig {
    ModelConfig {
        dim: 8,
        hidden: 16,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        seq: 4,
        vocab: 16,
        qk_norm,
        ..ModelConfig::tiny()
    }
}

#[test]
fn golden_kernels() {
    check(
        "dyn-matmul-packed.mil",
        &dynamic::dyn_matmul(4, 2, 3, WeightMode::Packed),
    );
    check(
        "dyn-matmul-params.mil",
        &dynamic::dyn_matmul(4, 2, 3, WeightMode::Params),
    );
    check(
        "sdpa-fwd-gqa-packed.mil",
        &dynamic::sdpa_fwd(&micro(false), WeightMode::Packed),
    );
    check(
        "sdpa-fwd-qk-norm-params.mil",
        &dynamic::sdpa_fwd(&micro(true), WeightMode::Params),
    );
    check(
        "ffn-fused-packed.mil",
        &dynamic::ffn_fused(&micro(false), WeightMode::Packed),
    );
    check(
        "sdpa-bwd2-packed.mil",
        &dynamic::sdpa_bwd2(&micro(false), WeightMode::Packed),
    );
    check(
        "rmsnorm-bwd-params.mil",
        &dynamic::rmsnorm_bwd(&micro(false), WeightMode::Params),
    );
    check("static-ffn-bwd.mil", &stories::ffn_bwd(&micro(false)));
}
