//! Runs `numpy_crosscheck.py`: a handful of programs through `milbridge run`, compared with NumPy.
//! NumPy is installed into a virtual environment under the target directory when the system
//! Python lacks it (the test environment installs what it needs; the product never downloads).

use std::path::{Path, PathBuf};
use std::process::Command;

fn python_with_numpy() -> PathBuf {
    let system = PathBuf::from("python3");
    let has_numpy = |python: &Path| {
        Command::new(python)
            .args(["-c", "import numpy"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if has_numpy(&system) {
        return system;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("numpy-venv");
    let python = venv.join("bin/python3");
    if !has_numpy(&python) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "numpy"])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install numpy failed");
    }
    python
}

#[test]
fn milbridge_run_matches_numpy() {
    let python = python_with_numpy();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/numpy_crosscheck.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_milbridge"))
        .output()
        .expect("the cross-check script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "NumPy cross-check failed:\n{stdout}"
    );
    assert!(
        stdout.contains("6 programs, 0 failure(s)"),
        "unexpected summary:\n{stdout}"
    );
}
