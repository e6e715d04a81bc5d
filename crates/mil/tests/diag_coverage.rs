//! Tidy test: every diagnostic code the front-end or the verifier can emit (mil-spec section 9:
//! all `E0xx`/`E1xx`, W159, W172–W182 and the `W3xx` ANE lints) is produced by at least one
//! `err/` golden file, across `tests/golden/parse/err` (front-end) and
//! `tests/golden/verify/err` (verifier). A file "produces" a code when its rendered-diagnostics
//! snapshot (any non-`.mil` file next to it, e.g. `.diag`) contains `[CODE]`, as in
//! `error[E122]:`.

use milbridge_mil::diag::DiagCode;
use std::path::{Path, PathBuf};

/// Whether `code` must be covered by a golden file.
fn must_be_covered(code: DiagCode) -> bool {
    let text = code.as_str();
    let number: u32 = text[1..]
        .parse()
        .expect("codes are a letter and three digits");
    match &text[..1] {
        "E" => number < 200,
        "W" => number == 159 || (172..=182).contains(&number) || (300..400).contains(&number),
        _ => false,
    }
}

fn snapshots(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            snapshots(&path, out);
        } else if path.extension().is_none_or(|ext| ext != "mil") {
            out.push(path);
        }
    }
}

#[test]
fn every_emittable_code_has_an_err_golden_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files = Vec::new();
    for dir in ["parse/err", "verify/err"] {
        snapshots(&root.join(dir), &mut files);
    }
    let texts: Vec<String> = files
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect();
    let missing: Vec<&str> = DiagCode::ALL
        .iter()
        .copied()
        .filter(|&code| must_be_covered(code))
        .filter(|code| {
            let needle = format!("[{}]", code.as_str());
            !texts.iter().any(|text| text.contains(&needle))
        })
        .map(DiagCode::as_str)
        .collect();
    assert!(
        missing.is_empty(),
        "codes without an err/ golden file producing them (add one under tests/golden/parse/err or tests/golden/verify/err): {missing:?}"
    );
}

#[test]
fn coverage_rule_selects_the_catalogue_ranges() {
    assert!(must_be_covered(DiagCode::E001));
    assert!(must_be_covered(DiagCode::E199));
    assert!(must_be_covered(DiagCode::W159));
    assert!(must_be_covered(DiagCode::W181));
    assert!(must_be_covered(DiagCode::W310));
    assert!(!must_be_covered(DiagCode::R001));
}
