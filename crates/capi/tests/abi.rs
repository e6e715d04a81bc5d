//! Builds and runs the C and Python ABI tests against the `libane_bridge.so` / `libane_bridge.a`
//! that cargo built next to this test binary, and checks that the header declares exactly the
//! functions the shared library exports.
//!
//! - `tests/c/*.c`: compiled with the system `cc` against `include/ane_bridge.h`, linked with
//!   the shared library (run with `LD_LIBRARY_PATH`), `test_bridge.c` also with the static one;
//!   all of them again under `valgrind --error-exitcode=1` with `MILBRIDGE_ISA=avx2` (valgrind
//!   does not model AVX-512 or AMX). A missing valgrind is reported loudly as skipped.
//! - `tests/python/*.py`: run with `python3` (ctypes, standard library only).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The library cargo built with this test: the test binary lives in `<profile>/deps/`, next
/// to it.
fn library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    // `deps/` first: it holds what this very test run built; the uplifted copy in the
    // profile directory may be older (it is refreshed by `cargo build`, not by `cargo test`).
    let candidates = [Some(deps.join(name)), deps.parent().map(|p| p.join(name))];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found next to {} (cargo builds it with the tests)",
                exe.display()
            )
        })
}

fn build_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-abi");
    std::fs::create_dir_all(&dir).expect("build dir");
    dir
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Compiles `tests/c/<name>.c` into an executable, linked dynamically or statically.
fn build_c(name: &str, link_static: bool) -> PathBuf {
    let so = library("libane_bridge.so");
    let lib_dir = so.parent().expect("lib dir");
    let exe = build_dir().join(format!(
        "{name}{}",
        if link_static { "-static" } else { "" }
    ));
    let mut cc = Command::new("cc");
    cc.args([
        "-std=gnu11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic-errors",
    ])
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg("-o")
    .arg(&exe)
    .arg(crate_dir().join("tests/c").join(format!("{name}.c")));
    if link_static {
        cc.arg(library("libane_bridge.a"))
            .args(["-lpthread", "-ldl", "-lm"]);
    } else {
        cc.arg("-L").arg(lib_dir).args(["-lane_bridge", "-lm"]);
    }
    let output = cc.output().expect("the system C compiler `cc` runs");
    assert!(
        output.status.success(),
        "cc failed for {name}.c:\n{}",
        show(&output)
    );
    exe
}

fn run(mut command: Command, what: &str) -> String {
    let so = library("libane_bridge.so");
    command
        .env("LD_LIBRARY_PATH", so.parent().expect("lib dir"))
        // Keep the user's compile cache out of it; tests that want a cache make their own.
        .env("ANE_BRIDGE_CACHE", "0")
        .env_remove("ANE_BRIDGE_CACHE_DIR")
        .env_remove("ANE_BRIDGE_PRECISION");
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what} could not start: {err}"));
    let text = show(&output);
    assert!(output.status.success(), "{what} failed:\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{what} printed no summary:\n{text}"
    );
    println!("{stdout}");
    stdout
}

/// Builds and runs a C test that needs no compile cache.
fn run_c(name: &str, link_static: bool) -> String {
    run(Command::new(build_c(name, link_static)), name)
}

#[test]
fn c_port_of_the_pr22_test() {
    if sanitized_library() {
        return;
    }
    let out = run_c_with_cache("test_bridge", false);
    assert!(
        out.contains("test_bridge: ")
            && out.contains("the cache hit does not increment the compile count")
    );
}

#[test]
fn c_port_of_the_pr22_test_statically_linked() {
    if sanitized_library() {
        return;
    }
    run_c_with_cache("test_bridge", true);
}

/// `test_bridge` makes its own cache directory and sets `ANE_BRIDGE_CACHE_DIR`, so it must
/// not inherit `ANE_BRIDGE_CACHE=0`.
fn run_c_with_cache(name: &str, link_static: bool) -> String {
    let exe = build_c(name, link_static);
    let so = library("libane_bridge.so");
    let mut command = Command::new(&exe);
    command
        .env("LD_LIBRARY_PATH", so.parent().expect("lib dir"))
        .env_remove("ANE_BRIDGE_CACHE")
        .env_remove("ANE_BRIDGE_CACHE_DIR")
        .env_remove("ANE_BRIDGE_PRECISION");
    let output = command.output().expect("test runs");
    let text = show(&output);
    assert!(output.status.success(), "{name} failed:\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{name} printed no summary:\n{text}"
    );
    println!("{stdout}");
    stdout
}

#[test]
fn c_abi_misuse_suite() {
    if sanitized_library() {
        return;
    }
    let out = run_c("test_misuse", false);
    assert!(out.contains("the message has model.mil:line:col"));
}

#[test]
fn c_extensions() {
    if sanitized_library() {
        return;
    }
    run_c("test_extensions", false);
}

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn c_tests_under_valgrind_with_the_avx2_tier() {
    if sanitized_library() {
        return;
    }
    if !valgrind_available() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: valgrind is not installed; the C ABI tests did not run under valgrind !!!!!!!!\n"
        );
        println!("SKIPPED (valgrind not installed)");
        return;
    }
    for name in ["test_bridge", "test_misuse", "test_extensions"] {
        let exe = build_c(name, false);
        let so = library("libane_bridge.so");
        let mut command = Command::new("valgrind");
        command
            .args([
                "--error-exitcode=1",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "-q",
            ])
            .arg(&exe)
            .env("LD_LIBRARY_PATH", so.parent().expect("lib dir"))
            .env("MILBRIDGE_ISA", "avx2")
            .env_remove("ANE_BRIDGE_CACHE_DIR")
            .env_remove("ANE_BRIDGE_PRECISION");
        if name == "test_bridge" {
            command.env_remove("ANE_BRIDGE_CACHE");
        } else {
            command.env("ANE_BRIDGE_CACHE", "0");
        }
        let output = command.output().expect("valgrind runs");
        let text = show(&output);
        assert!(
            output.status.success(),
            "{name} under valgrind failed:\n{text}"
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(" passed, 0 failed"),
            "{text}"
        );
        println!("{name} under valgrind (MILBRIDGE_ISA=avx2): clean");
    }
}

#[test]
fn python_ctypes_test() {
    if sanitized_library() {
        return;
    }
    let Ok(probe) = Command::new("python3").arg("--version").output() else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: python3 is not installed; the ctypes test did not run !!!!!!!!\n"
        );
        return;
    };
    assert!(probe.status.success());
    let scripts: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("tests/python"))
        .expect("tests/python")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .collect();
    assert!(!scripts.is_empty());
    for script in scripts {
        let mut command = Command::new("python3");
        command.arg(&script).arg(library("libane_bridge.so"));
        // The script sets its own ANE_BRIDGE_CACHE_DIR.
        let so = library("libane_bridge.so");
        command
            .env("LD_LIBRARY_PATH", so.parent().expect("lib dir"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("ANE_BRIDGE_CACHE")
            .env_remove("ANE_BRIDGE_PRECISION");
        let output = command.output().expect("python3 runs");
        let text = show(&output);
        assert!(
            output.status.success(),
            "{} failed:\n{text}",
            script.display()
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(" passed, 0 failed"),
            "{text}"
        );
    }
}

// ----- header / symbol drift -----

/// Function names declared in the header: every `ane_bridge_<name>(` outside comments.
fn header_functions(header: &str) -> BTreeSet<String> {
    let mut code = String::with_capacity(header.len());
    let mut rest = header;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        let next = match (block, line) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        };
        let Some(start) = next else {
            code.push_str(rest);
            break;
        };
        code.push_str(&rest[..start]);
        let end = if rest[start..].starts_with("/*") {
            rest[start..]
                .find("*/")
                .map_or(rest.len(), |end| start + end + 2)
        } else {
            rest[start..]
                .find('\n')
                .map_or(rest.len(), |end| start + end)
        };
        rest = &rest[end..];
    }
    let mut names = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut idx = 0;
    while let Some(pos) = code[idx..].find("ane_bridge_") {
        let start = idx + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let after = code[end..].trim_start();
        if boundary && after.starts_with('(') {
            names.insert(code[start..end].to_string());
        }
        idx = end;
    }
    names
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// One `.dynsym` entry.
struct DynSymbol {
    name: String,
    defined: bool,
    /// Global (or weak), default-visibility function.
    exported_function: bool,
}

/// The dynamic symbol table of an ELF64 little-endian shared object.
fn dynamic_symbols(path: &Path) -> Vec<DynSymbol> {
    let elf = std::fs::read(path).expect("read the shared library");
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "ELF64 expected");
    assert_eq!(elf[5], 1, "little-endian expected");
    let shoff = u64_at(&elf, 0x28) as usize;
    let shentsize = u16_at(&elf, 0x3a) as usize;
    let shnum = u16_at(&elf, 0x3c) as usize;
    let section = |idx: usize| {
        let base = shoff + idx * shentsize;
        (
            u32_at(&elf, base + 4),             // sh_type
            u64_at(&elf, base + 0x18) as usize, // sh_offset
            u64_at(&elf, base + 0x20) as usize, // sh_size
            u32_at(&elf, base + 0x28) as usize, // sh_link
            u64_at(&elf, base + 0x38) as usize, // sh_entsize
        )
    };
    const SHT_DYNSYM: u32 = 11;
    let (_, sym_off, sym_size, strtab_idx, sym_ent) = (0..shnum)
        .map(section)
        .find(|s| s.0 == SHT_DYNSYM)
        .expect("a .dynsym section");
    let (_, str_off, str_size, _, _) = section(strtab_idx);
    let strtab = &elf[str_off..str_off + str_size];
    let mut symbols = Vec::new();
    for entry in (sym_off..sym_off + sym_size).step_by(sym_ent.max(24)) {
        let name_off = u32_at(&elf, entry) as usize;
        let info = elf[entry + 4];
        let other = elf[entry + 5];
        let shndx = u16_at(&elf, entry + 6);
        let (bind, kind, visibility) = (info >> 4, info & 0xf, other & 0x3);
        let defined = shndx != 0;
        let end = strtab[name_off..]
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated name");
        symbols.push(DynSymbol {
            name: String::from_utf8_lossy(&strtab[name_off..name_off + end]).into_owned(),
            defined,
            exported_function: defined && kind == 2 && (bind == 1 || bind == 2) && visibility == 0,
        });
    }
    symbols
}

/// Defined, global (or weak), default-visibility function symbols.
fn exported_functions(path: &Path) -> BTreeSet<String> {
    dynamic_symbols(path)
        .into_iter()
        .filter(|symbol| symbol.exported_function)
        .map(|symbol| symbol.name)
        .collect()
}

/// Whether the library references AddressSanitizer's runtime.
fn is_sanitized() -> bool {
    dynamic_symbols(&library("libane_bridge.so"))
        .iter()
        .any(|symbol| symbol.name.starts_with("__asan_") && !symbol.defined)
}

/// True when the library was built with AddressSanitizer (the nightly ASan run of `.ci/run`):
/// it then needs the sanitizer runtime first in the process, which plain C programs, python3
/// and valgrind do not provide, so the programs that load it are skipped (loudly).
fn sanitized_library() -> bool {
    let sanitized = is_sanitized();
    if sanitized {
        eprintln!(
            "\n!!!!!!!! SKIPPED: libane_bridge.so is built with AddressSanitizer; C, Python and valgrind runs need an unsanitized build (plain `cargo test`) !!!!!!!!\n"
        );
    }
    sanitized
}

#[test]
fn header_and_exported_symbols_match_exactly() {
    let header = std::fs::read_to_string(crate_dir().join("include/ane_bridge.h")).expect("header");
    let declared = header_functions(&header);
    let exported = exported_functions(&library("libane_bridge.so"));
    let exported_api: BTreeSet<String> = exported
        .iter()
        .filter(|name| name.starts_with("ane_bridge_"))
        .cloned()
        .collect();
    let only_header: Vec<_> = declared.difference(&exported_api).collect();
    let only_library: Vec<_> = exported_api.difference(&declared).collect();
    assert!(
        only_header.is_empty() && only_library.is_empty(),
        "header and library disagree\n declared but not exported: {only_header:?}\n exported but not declared: {only_library:?}"
    );
    let foreign: Vec<_> = exported
        .iter()
        .filter(|name| !name.starts_with("ane_bridge_"))
        .collect();
    assert!(
        foreign.is_empty() || is_sanitized(),
        "the library exports functions outside the ane_bridge_ namespace: {foreign:?}"
    );
    // Every function of the original header and of PR #22 is there.
    for name in [
        "ane_bridge_init",
        "ane_bridge_compile",
        "ane_bridge_compile_multi_weights",
        "ane_bridge_compile_dyn",
        "ane_bridge_eval",
        "ane_bridge_write_input",
        "ane_bridge_read_output",
        "ane_bridge_write_weight",
        "ane_bridge_write_weight_f32",
        "ane_bridge_copy_io",
        "ane_bridge_begin_realtime",
        "ane_bridge_end_realtime",
        "ane_bridge_free",
        "ane_bridge_get_compile_count",
        "ane_bridge_reset_compile_count",
        "ane_bridge_build_weight_blob",
        "ane_bridge_build_weight_blob_transposed",
        "ane_bridge_build_weight_blob_int8",
        "ane_bridge_build_weight_blob_quantized",
        "ane_bridge_free_blob",
        "ane_bridge_last_error",
    ] {
        assert!(declared.contains(name), "{name} is missing");
    }
    assert_eq!(declared.len(), 32, "declared functions: {declared:?}");
}

#[test]
fn header_parser_skips_comments() {
    let text = "/* ane_bridge_fake(void) */\n// ane_bridge_other(\nint ane_bridge_real (void);\ntypedef struct ane_bridge_t_ { int x; } ane_bridge_t;\n";
    assert_eq!(
        header_functions(text),
        BTreeSet::from(["ane_bridge_real".to_string()])
    );
}
