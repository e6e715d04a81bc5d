//! Whole programs from `tests/golden/run/*.mil`, run on every tier and compared with the
//! reference interpreter. Directives (comment lines): `//@ seed: N` seeds the random inputs,
//! `//@ tol: X` is the float tolerance relative to each output's largest magnitude (plus one
//! fp16 ulp); integer and bool outputs must match exactly.

mod common;

use common::{
    Rng, compile_tier, default_range, f16_ulp, random_tensor, run_plan, run_reference, tiers,
    verified,
};
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

fn check_file(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let seed: u64 = directive(&text, "seed").map_or(1, |v| v.parse().expect("seed is an integer"));
    let tol: f64 = directive(&text, "tol").map_or(1e-3, |v| v.parse().expect("tol is a number"));
    let program = verified(&text);
    let func = program.program().entry().unwrap();
    let facts = program.facts(func);
    let mut rng = Rng::new(seed);
    let inputs: Vec<Tensor> = program.program().functions[func]
        .params
        .iter()
        .map(|&param| {
            random_tensor(
                &mut rng,
                &facts.types[param],
                default_range(facts.types[param].dtype),
            )
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
        check_file(&file);
    }
}
