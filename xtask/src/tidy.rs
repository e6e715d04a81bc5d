//! Tidy tests: layering between workspace crates, the unsafe inventory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the repo root")
        .to_path_buf()
}

/// The allowed workspace-crate edges, from ARCHITECTURE.md. A crate missing here fails the test.
fn allowed_edges() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("milbridge-mil", &[][..]),
        ("milbridge-graphs", &["milbridge-mil"][..]),
        ("milbridge-linalg", &[][..]),
        ("milbridge-surface", &[][..]),
        // graphs only as a dev-dependency: the end-to-end tests run its generated kernels.
        (
            "milbridge-engine",
            &["milbridge-mil", "milbridge-linalg", "milbridge-graphs"][..],
        ),
        (
            "milbridge-bridge",
            &[
                "milbridge-mil",
                "milbridge-engine",
                "milbridge-linalg",
                "milbridge-surface",
            ][..],
        ),
        (
            "milbridge-train",
            &[
                "milbridge-mil",
                "milbridge-graphs",
                "milbridge-bridge",
                "milbridge-linalg",
                "milbridge-surface",
                "milbridge-engine",
            ][..],
        ),
        (
            "milbridge-capi",
            &[
                "milbridge-bridge",
                "milbridge-mil",
                "milbridge-engine",
                "milbridge-linalg",
            ][..],
        ),
        (
            "milbridge-cli",
            &[
                "milbridge-mil",
                "milbridge-graphs",
                "milbridge-engine",
                "milbridge-linalg",
                "milbridge-surface",
                "milbridge-bridge",
                "milbridge-train",
            ][..],
        ),
    ])
}

fn package_name(manifest: &str) -> Option<String> {
    manifest
        .lines()
        .skip_while(|line| line.trim() != "[package]")
        .find_map(|line| {
            line.trim()
                .strip_prefix("name = ")
                .map(|name| name.trim_matches('"').to_string())
        })
}

fn workspace_deps(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || line == "[dev-dependencies]"
                || line == "[build-dependencies]";
            continue;
        }
        if in_deps
            && line.starts_with("milbridge-")
            && let Some(name) = line.split(['.', ' ', '=']).next()
        {
            deps.push(name.to_string());
        }
    }
    deps
}

#[test]
fn layering_follows_architecture() {
    let crates_dir = repo_root().join("crates");
    let edges = allowed_edges();
    let mut problems = Vec::new();
    for entry in fs::read_dir(&crates_dir).expect("crates/ exists") {
        let manifest_path = entry.expect("dir entry").path().join("Cargo.toml");
        let Ok(manifest) = fs::read_to_string(&manifest_path) else {
            continue;
        };
        let name = package_name(&manifest).expect("package name");
        let Some(allowed) = edges.get(name.as_str()) else {
            problems.push(format!(
                "{name}: not listed in tidy's allowed_edges (add it with ARCHITECTURE.md)"
            ));
            continue;
        };
        for dep in workspace_deps(&manifest) {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!(
                    "{name} depends on {dep}, which ARCHITECTURE.md does not allow"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Files that may contain `unsafe`: exactly the modules ARCHITECTURE.md lists in its inventory.
fn unsafe_allowed(rel: &str) -> bool {
    const ROOMS: &[&str] = &[
        "crates/linalg/src/",
        "crates/surface/src/os/",
        "crates/engine/src/exec/raw",
        "crates/bridge/src/rt",
        "crates/capi/",
    ];
    ROOMS.iter().any(|room| rel.starts_with(room))
}

#[test]
fn unsafe_only_in_listed_rooms() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut problems = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(&path).expect("readable source");
        let uses_unsafe = text.lines().any(|line| {
            let code = line.split("//").next().unwrap_or("");
            code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl")
        });
        if uses_unsafe && !unsafe_allowed(&rel) {
            problems.push(rel);
        }
    }
    assert!(
        problems.is_empty(),
        "unsafe outside the rooms ARCHITECTURE.md lists: {problems:?}"
    );
}
