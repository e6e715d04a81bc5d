//! Whole programs from `tests/golden/run/*.mil`, run on every tier and compared with the
//! reference interpreter. Directives (comment lines): `//@ seed: N` seeds the random inputs,
//! `//@ tol: X` is the float tolerance relative to each output's largest magnitude (plus one
//! fp16 ulp); integer and bool outputs must match exactly.

mod common;

use common::{
    Rng, compile_tier, default_range, f16_ulp, random_tensor, run_plan, run_reference, tiers,
    verified_with,
};
use milbridge_mil::facts::{BlobLoadError, BlobSource};
use milbridge_mil::ir::{DType, Tensor};

fn directive(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("//@")?
            .trim()
            .strip_prefix(key)?
            .trim()
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

/// `@model_path/...` resolved against a directory (the test's stand-in for the bridge's ModelDir).
struct DirBlobs(std::path::PathBuf);

impl BlobSource for DirBlobs {
    fn load(&self, path: &str) -> Result<std::sync::Arc<[u8]>, BlobLoadError> {
        let rel = path
            .strip_prefix("@model_path/")
            .ok_or_else(|| BlobLoadError::NotFound(path.to_string()))?;
        std::fs::read(self.0.join(rel))
            .map(std::sync::Arc::from)
            .map_err(|_| BlobLoadError::NotFound(path.to_string()))
    }
}

/// Runs one file; `@model_path` denotes `model_root`.
fn check_file(path: &std::path::Path, model_root: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let blobs = DirBlobs(model_root.to_path_buf());
    let seed: u64 = directive(&text, "seed").map_or(1, |v| v.parse().expect("seed is an integer"));
    let tol: f64 = directive(&text, "tol").map_or(1e-3, |v| v.parse().expect("tol is a number"));
    let program = verified_with(&text, &blobs);
    let func = program.program().entry().unwrap();
    let facts = program.facts(func);
    let io = program.program().functions[func]
        .params
        .iter()
        .copied()
        .chain(
            program.program().functions[func]
                .outputs
                .iter()
                .map(|out| out.value),
        );
    if io
        .into_iter()
        .any(|value| facts.types[value].dtype == DType::String)
    {
        // Strings have no buffer representation: such programs verify but cannot be evaluated.
        eprintln!("skipped (string input or output): {}", path.display());
        return;
    }
    let mut rng = Rng::new(seed);
    let inputs: Vec<Tensor> = program.program().functions[func]
        .params
        .iter()
        .map(|&param| {
            let dtype = facts.types[param].dtype;
            // Integer inputs are zero: they may be gather indices or dynamic slice starts.
            let range = if dtype.is_int() {
                common::Range { lo: 0.0, hi: 0.0 }
            } else {
                default_range(dtype)
            };
            random_tensor(&mut rng, &facts.types[param], range)
        })
        .collect();
    let expected = run_reference(&program, &inputs);
    for tier in tiers() {
        for threads in [1, 2] {
            let got = run_plan(&compile_tier(&program, tier, threads), &inputs);
            for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
                let what = format!(
                    "{} output {k} on {tier:?} with {threads} threads",
                    path.display()
                );
                assert_eq!(e.ty, g.ty, "{what}");
                let (ev, gv) = (e.to_f64_vec().unwrap(), g.to_f64_vec().unwrap());
                let scale = ev
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(0f64, |acc, v| acc.max(v.abs()));
                for (idx, (&a, &b)) in ev.iter().zip(&gv).enumerate() {
                    let allowed = match e.ty.dtype {
                        DType::Fp16 | DType::Fp32 => tol * scale + f16_ulp(a),
                        _ => 0.0,
                    };
                    let same_special = (a.is_nan() && b.is_nan()) || a == b;
                    assert!(
                        same_special || (a - b).abs() <= allowed,
                        "{what}: element {idx}: expected {a}, got {b} (allowed {allowed:e})"
                    );
                }
            }
        }
    }
}

#[test]
fn golden_programs_match_the_reference() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/run");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mil"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "golden corpus missing: {files:?}");
    for file in files {
        check_file(&file, &dir);
    }
}

/// Every valid program of the front-end's golden corpus (`crates/mil/tests/golden/verify/ok`:
/// every op of mil-spec section 6, both dialects, every opset variant) runs on every tier and
/// matches the reference interpreter.
#[test]
fn front_end_golden_corpus_runs_and_matches_the_reference() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mil/tests/golden/verify/ok");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mil"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "front-end golden corpus missing: {files:?}"
    );
    // The corpus's `@model_path` is its parent directory, which holds `weights/`.
    let model_root = dir.parent().unwrap();
    for file in files {
        check_file(&file, model_root);
    }
}
