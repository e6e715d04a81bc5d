//! Golden tests for the front-end (lexer, parser, lowering): `tests/golden/parse/{ok,err}/*.mil`,
//! through one driver ([`run`]).
//!
//! * Every file is parsed with [`mil::lower::parse_with`]. Directive lines `//@ ...` are allowed;
//!   `//@ strict` selects strict syntax, and then the directive lines are blanked out before
//!   parsing (strict mode rejects comments) so line numbers stay the same.
//! * `ok/` files must produce no diagnostic at all.
//! * `err/` files must produce at least one error; the rendered diagnostics (file names relative
//!   to `tests/golden/parse`) are compared with the `.diag` file next to them, written only when
//!   `MILBRIDGE_BLESS=1`. A file named after a code (`e140-...`, `w172-...`) must produce it.
//! * Every diagnostic code the front-end emits has at least one `err/` file producing it.
//! * `tests/golden/fuzz-failures/*.mil` (minimised fuzzer finds) must parse, print and re-parse
//!   without panicking.

use mil::diag::{DiagCode, Diagnostic, has_errors, render_all};
use mil::lower::{ParseOptions, parse, parse_with};
use mil::span::SourceFile;
use milbridge_mil as mil;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var("MILBRIDGE_BLESS").is_ok_and(|value| value == "1")
}

fn mil_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "mil"))
        .collect();
    files.sort();
    files
}

/// A golden file's text as the parser sees it, and its options.
fn prepare(raw: &str) -> (String, ParseOptions) {
    let strict = raw.lines().any(|line| line.trim() == "//@ strict");
    if !strict {
        return (raw.to_string(), ParseOptions::default());
    }
    let blanked = raw
        .split_inclusive('\n')
        .map(|line| {
            if line.trim_start().starts_with("//@") {
                let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
                ending.to_string()
            } else {
                line.to_string()
            }
        })
        .collect();
    (
        blanked,
        ParseOptions {
            strict_syntax: true,
        },
    )
}

struct Outcome {
    diags: Vec<Diagnostic>,
    rendered: String,
}

fn run(path: &Path) -> Outcome {
    let bytes = std::fs::read(path).expect("read golden file");
    let raw = String::from_utf8(bytes).expect("golden files are UTF-8");
    let (text, options) = prepare(&raw);
    let (_, diags) = parse_with(&text, &options);
    let base = root().join("parse");
    let rel = path
        .strip_prefix(&base)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/");
    let source = SourceFile::new(rel, text);
    let rendered = render_all(&source, &diags);
    Outcome { diags, rendered }
}

/// The code a file is named after (`e140-count.mil` -> `E140`).
fn named_code(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let code = stem.split('-').next()?;
    let bytes = code.as_bytes();
    let is_code = bytes.len() == 4
        && matches!(bytes[0], b'e' | b'w')
        && bytes[1..].iter().all(u8::is_ascii_digit);
    is_code.then(|| code.to_ascii_uppercase())
}

#[test]
fn ok_files_parse_without_diagnostics() {
    let files = mil_files(&root().join("parse/ok"));
    assert!(
        files.len() >= 20,
        "expected the ok corpus, found {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let outcome = run(path);
        if !outcome.diags.is_empty() {
            failures.push(format!(
                "{}: expected no diagnostics, got:\n{}",
                path.display(),
                outcome.rendered
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn err_files_match_their_snapshots() {
    let files = mil_files(&root().join("parse/err"));
    assert!(
        files.len() >= 25,
        "expected the err corpus, found {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let outcome = run(path);
        let name = path.display();
        if !has_errors(&outcome.diags) {
            failures.push(format!(
                "{name}: expected at least one error, got:\n{}",
                outcome.rendered
            ));
            continue;
        }
        if let Some(code) = named_code(path)
            && !outcome.diags.iter().any(|diag| diag.code.as_str() == code)
        {
            failures.push(format!(
                "{name}: named for {code} but produced:\n{}",
                outcome.rendered
            ));
        }
        let snapshot = path.with_extension("diag");
        let expected = std::fs::read_to_string(&snapshot).ok();
        if expected.as_deref() == Some(outcome.rendered.as_str()) {
            continue;
        }
        if blessing() {
            std::fs::write(&snapshot, &outcome.rendered).expect("write snapshot");
        } else {
            failures.push(format!(
                "{name}: diagnostics differ from {} (bless with MILBRIDGE_BLESS=1)\n--- expected\n{}\n--- got\n{}",
                snapshot.display(),
                expected.unwrap_or_else(|| "(missing)".to_string()),
                outcome.rendered
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_front_end_code_has_an_err_file() {
    use DiagCode::*;
    let emitted = [
        E001, E002, E003, E010, E011, E020, E021, E100, E101, E102, E103, E104, E110, E114, E140,
        E141, E142, E143, E150, E170, E171, W172, W182, E199,
    ];
    let mut produced = BTreeSet::new();
    for path in mil_files(&root().join("parse/err")) {
        for diag in run(&path).diags {
            produced.insert(diag.code);
        }
    }
    let missing: Vec<_> = emitted
        .iter()
        .filter(|code| !produced.contains(code))
        .collect();
    assert!(
        missing.is_empty(),
        "no err/ golden file produces {missing:?}"
    );
}

#[test]
fn no_orphan_snapshots() {
    for dir in ["ok", "err"] {
        let Ok(entries) = std::fs::read_dir(root().join("parse").join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|ext| ext == "diag") {
                assert_eq!(dir, "err", "ok files have no snapshots: {}", path.display());
                assert!(
                    path.with_extension("mil").is_file(),
                    "orphan snapshot {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn fuzz_failures_do_not_panic() {
    for path in mil_files(&root().join("fuzz-failures")) {
        let bytes = std::fs::read(&path).expect("read fuzz failure");
        let text = String::from_utf8_lossy(&bytes);
        let (program, _) = parse(&text);
        let printed = mil::print::print(&program);
        let (_, _) = parse(&printed);
        let (_, _) = parse_with(
            &text,
            &ParseOptions {
                strict_syntax: true,
            },
        );
        let _ = mil::lex::lex(&text);
    }
}

#[test]
fn truncating_every_ok_file_never_panics_and_always_reports() {
    for path in mil_files(&root().join("parse/ok")) {
        let raw = std::fs::read_to_string(&path).expect("read");
        let (text, options) = prepare(&raw);
        let last_brace = text.rfind('}').expect("a program ends with `}`");
        // Every cut up to the program's closing brace leaves something unclosed.
        for cut in (0..=last_brace).step_by(7) {
            let Some(prefix) = text.get(..cut) else {
                continue;
            };
            let (_, diags) = parse_with(prefix, &options);
            assert!(
                has_errors(&diags),
                "{} cut at {cut} parsed without errors",
                path.display()
            );
        }
    }
}
