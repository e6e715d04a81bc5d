//! The `milbridge` binary on real files: exit codes, diagnostics with `line:col`, generated kernels.

use milbridge_graphs::{ModelConfig, WeightMode, dynamic};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn milbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_milbridge"))
        .args(args)
        .output()
        .expect("milbridge runs")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("weights")).expect("temp dir");
    dir
}

fn repo_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
        .display()
        .to_string()
}

#[test]
fn check_accepts_the_bundled_example() {
    let out = milbridge(&["check", &repo_file("examples/dynamic-matmul.mil")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (0 warning(s))"));
}

/// Each malformed program gives exit 1 and a diagnostic at the exact `line:col` with its code.
#[test]
fn check_rejects_malformed_programs_with_positions() {
    let dir = temp_dir("malformed");
    let head = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4]> x) {\n";
    let cases = [
        (
            "unknown-op",
            "        tensor<fp16, [1, 4]> y = frobnicate(x = x)[name = string(\"y\")];\n    } -> (y);\n}\n",
            "4:34: error[E110]",
        ),
        (
            "undefined",
            "        tensor<fp16, [1, 4]> y = add(x = x, y = z)[name = string(\"y\")];\n    } -> (y);\n}\n",
            "4:49: error[E100]",
        ),
        (
            "mismatch",
            "        tensor<fp16, [1, 5]> y = add(x = x, y = x)[name = string(\"y\")];\n    } -> (y);\n}\n",
            "4:9: error[E130]",
        ),
        (
            "truncated",
            "        tensor<fp16, [1, 4]> y = add(x = x, y",
            "4:",
        ),
        (
            "bad-blob-offset",
            "        tensor<fp16, [4, 4]> w = const()[name = string(\"w\"), val = tensor<fp16, [4, 4]>(BLOBFILE(path = string(\"@model_path/weights/w.bin\"), offset = uint64(4096)))];\n        tensor<fp16, [1, 4]> y = matmul(x = x, y = w)[name = string(\"y\")];\n    } -> (y);\n}\n",
            "error[E152]",
        ),
    ];
    let blob = milbridge_mil::blob::single_fp16_blob(&[0.5; 16]);
    std::fs::write(dir.join("weights/w.bin"), blob).expect("blob");
    for (name, body, expected) in cases {
        let path = dir.join(format!("{name}.mil"));
        std::fs::write(&path, format!("{head}{body}")).expect("write");
        let out = milbridge(&["check", path.to_str().expect("utf-8 path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name} must fail:\n{stderr}");
        assert!(
            stderr.contains(&format!("{name}.mil:{expected}"))
                || (expected.starts_with("error") && stderr.contains(expected)),
            "{name}: expected `{expected}` in:\n{stderr}"
        );
    }
}

/// Every program maderix/ANE's generators emit (our Rust re-creations), at full model sizes,
/// passes `milbridge check`, with their BLOBFILE tables (masks, RoPE) on disk. (The static
/// BLOBFILE-weight kernels are verified with their weight files by graphs' own tests.)
#[test]
fn check_accepts_every_generated_kernel() {
    let dir = temp_dir("generated");
    let mut files = Vec::new();
    let mut write_kernel = |tag: String, kernel: &milbridge_graphs::GeneratedKernel| {
        let kernel_dir = dir.join(tag);
        std::fs::create_dir_all(kernel_dir.join("weights")).expect("dir");
        for blob in &kernel.blobs {
            let rel = blob
                .path
                .strip_prefix("@model_path/")
                .expect("model-relative blob path");
            std::fs::write(kernel_dir.join(rel), &blob.bytes).expect("blob");
        }
        let path = kernel_dir.join("model.mil");
        std::fs::write(&path, milbridge_mil::print(&kernel.program)).expect("write");
        files.push(path);
    };
    for (cfg_name, cfg) in [
        ("stories110m", ModelConfig::stories110m()),
        ("qwen3", ModelConfig::qwen3_0_6b()),
    ] {
        for mode in [WeightMode::Params, WeightMode::Packed] {
            for kernel in dynamic::training_kernels(&cfg, mode) {
                write_kernel(format!("{cfg_name}-{mode:?}-{}", kernel.name), &kernel);
            }
        }
    }
    let mut args = vec!["check".to_string()];
    args.extend(files.iter().map(|path| path.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = milbridge(&refs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.contains(": ok ("))
            .count(),
        files.len()
    );
}

#[test]
fn run_reports_missing_and_mismatched_inputs() {
    let example = repo_file("examples/dynamic-matmul.mil");
    let dir = temp_dir("run");
    let out_dir = dir.join("out");
    let missing = milbridge(&["run", &example, "--out", out_dir.to_str().expect("utf-8")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("missing input `x` (declared tensor<fp16, [1, 4, 1, 5]>)")
    );
    let unknown = milbridge(&[
        "run",
        &example,
        "--in",
        "nope=a.npy",
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn bench_train_prints_both_modes_and_writes_the_json_fields() {
    let dir = temp_dir("bench-train");
    let json = dir.join("train.json");
    let out = milbridge(&[
        "bench",
        "train",
        "--model",
        "tiny",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--accum",
        "2",
        "--json",
        json.to_str().expect("utf-8 temp path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("packed/params"), "{stdout}");
    assert!(stdout.contains("packed-restage/params"), "{stdout}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 3);
    for (row, mode) in rows.iter().zip(["params", "packed", "packed-restage"]) {
        assert_eq!(row["mode"], mode);
        assert_eq!(row["model"], "tiny");
        assert_eq!(row["steps"], 3);
        for key in [
            "ms_per_step_min",
            "ms_per_step_median",
            "compile_ms_cold",
            "compile_ms_cached",
            "final_loss",
        ] {
            assert!(
                row[key].as_f64().is_some_and(f64::is_finite),
                "{key}: {row}"
            );
        }
        assert!(row["kernels"].as_u64().is_some_and(|k| k > 0));
        for part in [
            "kernels",
            "weights",
            "dw_wait",
            "optimizer",
            "loss",
            "other",
            "total",
        ] {
            assert!(row["breakdown"][part].as_f64().is_some(), "{part}: {row}");
        }
    }
    let bad = milbridge(&["bench", "train", "--model", "nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown model preset"));
    let _ = std::fs::remove_dir_all(&dir);
}
