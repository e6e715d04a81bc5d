//! Sharing a `SharedBuffer` with a real child process.
//!
//! The child is this test binary itself, re-executed with `--exact child_entry` and
//! `MILBRIDGE_SURFACE_TEST_CHILD_ROLE` set; in a normal run `child_entry` sees no role and returns
//! at once. The child maps the parent's memfd with `SharedBuffer::from_fd`, opening it either as
//! an inherited descriptor (`/proc/self/fd/<n>`) or through the parent's `/proc/<pid>/fd/<n>`.
//! It reports by exit code: only [`CHILD_OK`] counts as success, so a child that ran no test
//! (exit 0) fails the parent.

#![cfg(target_os = "linux")]

use std::env;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

use milbridge_surface::{Error, SharedBuffer};

/// Selects the child's role; unset in normal runs.
const ROLE_VAR: &str = "MILBRIDGE_SURFACE_TEST_CHILD_ROLE";
/// The path the child opens to reach the parent's buffer.
const PATH_VAR: &str = "MILBRIDGE_SURFACE_TEST_CHILD_PATH";
/// The length the child maps.
const LEN_VAR: &str = "MILBRIDGE_SURFACE_TEST_CHILD_LEN";

/// The child did its job (and, for a verifying role, found the expected contents).
const CHILD_OK: i32 = 42;
/// A verifying child found different contents.
const CHILD_MISMATCH: i32 = 43;
/// The child failed to map or access the buffer.
const CHILD_ERROR: i32 = 44;

/// Three pages and a bit: 3073 f32 values followed by 3 tail bytes.
const LEN: usize = 3 * 4096 + 7;
const N_FLOATS: usize = LEN / 4;
const TAIL: [u8; 3] = [0xDE, 0xAD, 0x42];

fn float_pattern() -> Vec<f32> {
    (0..N_FLOATS)
        .map(|index| index as f32 * 0.5 - 100.0)
        .collect()
}

fn write_pattern(buf: &SharedBuffer) -> Result<(), Error> {
    buf.write_f32(0, &float_pattern())?;
    buf.write_bytes(N_FLOATS * 4, &TAIL)
}

fn has_pattern(buf: &SharedBuffer) -> Result<bool, Error> {
    let mut floats = vec![0f32; N_FLOATS];
    buf.read_f32(0, &mut floats)?;
    let mut tail = [0u8; 3];
    buf.read_bytes(N_FLOATS * 4, &mut tail)?;
    Ok(floats == float_pattern() && tail == TAIL)
}

#[test]
fn child_entry() {
    let Ok(role) = env::var(ROLE_VAR) else {
        return; // a normal run: this test only does something in a re-executed child
    };
    let code = match child_main(&role) {
        Ok(true) => CHILD_OK,
        Ok(false) => CHILD_MISMATCH,
        Err(err) => {
            eprintln!("child ({role}) failed: {err}");
            CHILD_ERROR
        }
    };
    std::process::exit(code);
}

fn child_main(role: &str) -> Result<bool, Box<dyn std::error::Error>> {
    let path = env::var(PATH_VAR)?;
    let len: usize = env::var(LEN_VAR)?.parse()?;
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let buf = SharedBuffer::from_fd(file.into(), len)?;
    match role {
        "write" => {
            write_pattern(&buf)?;
            Ok(true)
        }
        "verify" => Ok(has_pattern(&buf)?),
        "double" => {
            let mut floats = vec![0f32; N_FLOATS];
            buf.read_f32(0, &mut floats)?;
            for value in &mut floats {
                *value *= 2.0;
            }
            buf.write_f32(0, &floats)?;
            Ok(true)
        }
        _ => Err(format!("unknown role {role:?}").into()),
    }
}

fn run_child(role: &str, path: &str, len: usize) -> Output {
    Command::new(env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(PATH_VAR, path)
        .env(LEN_VAR, len.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_child_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "child exited with {:?}\n--- child stdout ---\n{}\n--- child stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// `/proc/<this pid>/fd/<n>`: the child reaches the parent's memfd without inheriting it.
fn proc_path(buf: &SharedBuffer) -> String {
    format!("/proc/{}/fd/{}", std::process::id(), buf.fd().as_raw_fd())
}

#[test]
fn child_writes_through_an_inherited_fd_and_the_parent_reads() {
    let buf = SharedBuffer::new(LEN).unwrap();
    let inheritable = buf.try_clone_fd_inheritable().unwrap();
    let path = format!("/proc/self/fd/{}", inheritable.as_raw_fd());
    let output = run_child("write", &path, LEN);
    drop(inheritable);
    assert_child_exit(&output, CHILD_OK);
    assert!(
        has_pattern(&buf).unwrap(),
        "parent does not see the child's writes"
    );
    // The other process's writes are invisible to this handle's generation (documented).
    assert_eq!(buf.generation(), 0);
}

#[test]
fn parent_writes_and_the_child_verifies_through_proc_pid_fd() {
    let buf = SharedBuffer::new(LEN).unwrap();
    write_pattern(&buf).unwrap();
    let output = run_child("verify", &proc_path(&buf), LEN);
    assert_child_exit(&output, CHILD_OK);
}

#[test]
fn the_child_notices_a_difference() {
    // The negative control for the test above: the child really compares contents.
    let buf = SharedBuffer::new(LEN).unwrap();
    write_pattern(&buf).unwrap();
    buf.write_bytes(LEN - 1, &[0]).unwrap();
    let output = run_child("verify", &proc_path(&buf), LEN);
    assert_child_exit(&output, CHILD_MISMATCH);
}

#[test]
fn parent_and_child_take_turns_on_the_same_memory() {
    let buf = SharedBuffer::new(LEN).unwrap();
    write_pattern(&buf).unwrap();
    let output = run_child("double", &proc_path(&buf), LEN);
    assert_child_exit(&output, CHILD_OK);
    let mut floats = vec![0f32; N_FLOATS];
    buf.read_f32(0, &mut floats).unwrap();
    let expected: Vec<f32> = float_pattern().iter().map(|value| value * 2.0).collect();
    assert_eq!(floats, expected);
    let mut tail = [0u8; 3];
    buf.read_bytes(N_FLOATS * 4, &mut tail).unwrap();
    assert_eq!(tail, TAIL);
}

#[test]
fn a_child_asking_for_more_than_was_shared_gets_an_error() {
    let buf = SharedBuffer::new(LEN).unwrap();
    let output = run_child("verify", &proc_path(&buf), LEN + 1);
    assert_child_exit(&output, CHILD_ERROR);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("fewer than the"),
        "unexpected child stderr: {stderr}"
    );
}
