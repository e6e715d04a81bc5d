//! The boundary helper every exported function calls, the thread's last error, and the small
//! conversions from C arguments (pointers, counts, indices) to Rust values.
//!
//! [`call`] clears the last error, runs the body under `catch_unwind`, and maps an `Err` or a
//! panic to the function's failure value while recording the error. The argument helpers turn
//! every NULL pointer, negative count or misaligned array into an error before any reference is
//! made, so a misuse becomes a failure value, never undefined behaviour (within what C lets us
//! check: a dangling or too-short array cannot be detected).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use milbridge_bridge::{Error, ErrorKind, Kernel, LocatedDiagnostic, Slot};

/// Success.
pub const ANE_BRIDGE_OK: c_int = 0;
/// A bad argument: NULL pointer, negative count, index out of range, unknown kind.
pub const ANE_BRIDGE_E_INVALID_ARGUMENT: c_int = -1;
/// The MIL program did not compile; diagnostics are available.
pub const ANE_BRIDGE_E_COMPILE: c_int = -2;
/// A byte size or count that disagrees with the program's signature.
pub const ANE_BRIDGE_E_SHAPE: c_int = -3;
/// Valid but not implemented here.
pub const ANE_BRIDGE_E_UNSUPPORTED: c_int = -4;
/// Allocation failed.
pub const ANE_BRIDGE_E_OUT_OF_MEMORY: c_int = -5;
/// A file or system call failed.
pub const ANE_BRIDGE_E_IO: c_int = -6;
/// A compile-cache entry was corrupt.
pub const ANE_BRIDGE_E_CORRUPT_CACHE: c_int = -7;
/// A bug of ours, including a caught panic.
pub const ANE_BRIDGE_E_INTERNAL: c_int = -8;

/// The status code of an error kind.
pub fn code_of(kind: ErrorKind) -> c_int {
    match kind {
        ErrorKind::InvalidArgument => ANE_BRIDGE_E_INVALID_ARGUMENT,
        ErrorKind::Compile => ANE_BRIDGE_E_COMPILE,
        ErrorKind::Shape => ANE_BRIDGE_E_SHAPE,
        ErrorKind::Unsupported => ANE_BRIDGE_E_UNSUPPORTED,
        ErrorKind::OutOfMemory => ANE_BRIDGE_E_OUT_OF_MEMORY,
        ErrorKind::Io => ANE_BRIDGE_E_IO,
        ErrorKind::CorruptCache => ANE_BRIDGE_E_CORRUPT_CACHE,
        ErrorKind::Internal => ANE_BRIDGE_E_INTERNAL,
    }
}

/// An error on its way to the last-error slot.
#[derive(Debug)]
pub struct FfiError {
    code: c_int,
    message: String,
    diagnostics: Vec<LocatedDiagnostic>,
}

impl FfiError {
    /// An invalid-argument error with a message naming the argument.
    pub fn invalid(message: impl Into<String>) -> FfiError {
        FfiError {
            code: ANE_BRIDGE_E_INVALID_ARGUMENT,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    /// An error with an explicit status code.
    pub fn new(code: c_int, message: impl Into<String>) -> FfiError {
        FfiError {
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    /// A bridge error; compile errors keep their diagnostics, located in `mil_text`.
    pub fn with_source(err: Error, mil_text: &str) -> FfiError {
        let diagnostics = milbridge_bridge::locate_diagnostics(mil_text, err.diagnostics());
        FfiError {
            code: code_of(err.kind()),
            message: err.to_string(),
            diagnostics,
        }
    }
}

impl From<Error> for FfiError {
    fn from(err: Error) -> FfiError {
        FfiError {
            code: code_of(err.kind()),
            message: err.to_string(),
            diagnostics: Vec::new(),
        }
    }
}

/// One located diagnostic, with C strings ready to hand out.
struct StoredDiagnostic {
    line: u32,
    col: u32,
    code: CString,
    message: CString,
}

/// The thread's last error.
struct LastError {
    code: c_int,
    message: CString,
    diagnostics: Vec<StoredDiagnostic>,
}

thread_local! {
    static LAST: RefCell<LastError> = RefCell::new(LastError {
        code: ANE_BRIDGE_OK,
        message: CString::default(),
        diagnostics: Vec::new(),
    });
}

/// A C string of `text`, with any interior NUL shown as `\0` instead of truncating.
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

fn clear() {
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.code != ANE_BRIDGE_OK {
            last.code = ANE_BRIDGE_OK;
            last.message = CString::default();
            last.diagnostics.clear();
        }
    });
}

fn record(err: FfiError) -> c_int {
    let code = err.code;
    LAST.with(|last| {
        *last.borrow_mut() = LastError {
            code,
            message: c_string(&err.message),
            diagnostics: err
                .diagnostics
                .iter()
                .map(|located| StoredDiagnostic {
                    line: located.line,
                    col: located.col,
                    code: c_string(located.diagnostic.code.as_str()),
                    message: c_string(&located.diagnostic.message),
                })
                .collect(),
        };
    });
    code
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_string());
    format!("internal error (a bug in milbridge): {text}")
}

/// Runs `body` as the boundary of one exported function: clears the last error, catches panics,
/// and returns `failure` (recording the error) when the body fails or panics.
pub fn call<T>(failure: T, body: impl FnOnce() -> Result<T, FfiError>) -> T {
    clear();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => {
            record(err);
            failure
        }
        Err(payload) => {
            record(FfiError {
                code: ANE_BRIDGE_E_INTERNAL,
                message: panic_message(payload.as_ref()),
                diagnostics: Vec::new(),
            });
            failure
        }
    }
}

/// [`call`] for the functions we added, which return a status code.
pub fn status(body: impl FnOnce() -> Result<(), FfiError>) -> c_int {
    clear();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ANE_BRIDGE_OK,
        Ok(Err(err)) => record(err),
        Err(payload) => record(FfiError {
            code: ANE_BRIDGE_E_INTERNAL,
            message: panic_message(payload.as_ref()),
            diagnostics: Vec::new(),
        }),
    }
}

/// The boundary of the last-error accessors: like [`call`] but leaves the last error alone
/// (they describe the previous call, so they must not clear it).
pub fn query<T>(failure: T, body: impl FnOnce() -> Result<T, FfiError>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(_)) | Err(_) => failure,
    }
}

/// The last error's code (`ANE_BRIDGE_OK` when the last call succeeded).
pub fn last_code() -> c_int {
    LAST.with(|last| last.borrow().code)
}

/// The last error's message; the pointer stays valid until the next recording or clearing
/// call on this thread (the thread-local keeps the `CString` alive and never moves its heap
/// buffer in between).
pub fn last_message() -> *const c_char {
    LAST.with(|last| last.borrow().message.as_ptr())
}

/// Number of diagnostics attached to the last error.
pub fn last_diagnostic_count() -> usize {
    LAST.with(|last| last.borrow().diagnostics.len())
}

/// Diagnostic `index` of the last error: line, column, code and message pointers (valid as for
/// [`last_message`]).
pub fn last_diagnostic(index: usize) -> Option<(u32, u32, *const c_char, *const c_char)> {
    LAST.with(|last| {
        let last = last.borrow();
        let diag = last.diagnostics.get(index)?;
        Some((
            diag.line,
            diag.col,
            diag.code.as_ptr(),
            diag.message.as_ptr(),
        ))
    })
}

// ----- argument conversions -----

/// A count argument: non-negative.
pub fn count(n: c_int, what: &str) -> Result<usize, FfiError> {
    usize::try_from(n)
        .map_err(|_| FfiError::invalid(format!("{what} is {n}, it must not be negative")))
}

/// An index argument into `slot` of `kernel`, range-checked.
pub fn index(kernel: &Kernel, slot: Slot, idx: c_int) -> Result<usize, FfiError> {
    Ok(kernel.check_slot(slot, i64::from(idx))?)
}

/// A `(pointer, length)` pair as a slice. `len == 0` accepts any pointer, NULL included.
///
/// # Safety
///
/// When `len > 0` and `ptr` is not NULL, `ptr` must point to `len` initialised, readable `T`s
/// that nothing writes for the lifetime `'a` chosen by the caller.
pub unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} at {ptr:p} is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    if len
        .checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(FfiError::invalid(format!(
            "{what} length {len} is too large"
        )));
    }
    // SAFETY: non-NULL and aligned (checked above), the byte size fits in isize (checked
    // above), and the caller guarantees `len` readable, initialised elements for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A `(pointer, length)` pair as a mutable slice. `len == 0` accepts any pointer.
///
/// # Safety
///
/// When `len > 0` and `ptr` is not NULL, `ptr` must point to `len` writable `T`s that nothing
/// else reads or writes for the lifetime `'a` chosen by the caller. (Any bit pattern is a
/// valid `T` for the types used here: bytes, f16 and f32.)
pub unsafe fn slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &str,
) -> Result<&'a mut [T], FfiError> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(FfiError::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} at {ptr:p} is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    if len
        .checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(FfiError::invalid(format!(
            "{what} length {len} is too large"
        )));
    }
    // SAFETY: non-NULL and aligned (checked above), size fits in isize (checked above), and
    // the caller guarantees exclusive access to `len` writable elements for 'a.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
///
/// `ptr` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL (checked above); the caller guarantees NUL termination and lifetime.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|err| {
        FfiError::invalid(format!(
            "{what} is not valid utf-8 at byte {}",
            err.valid_up_to()
        ))
    })
}

/// The MIL text argument pair `(mil_text, mil_len)`.
///
/// # Safety
///
/// As [`slice()`] for `mil_len` bytes.
pub unsafe fn mil<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::invalid("mil_text is NULL"));
    }
    // SAFETY: forwarded to the caller (see above).
    let bytes = unsafe { slice(ptr.cast::<u8>(), len, "mil_text") }?;
    std::str::from_utf8(bytes).map_err(|err| {
        FfiError::invalid(format!(
            "mil_text is not valid utf-8 at byte {}",
            err.valid_up_to()
        ))
    })
}

/// Writes an out-parameter after success.
///
/// # Safety
///
/// `ptr` must be NULL or valid for a write of `T`.
pub unsafe fn out<T>(ptr: *mut T, value: T, what: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Err(FfiError::invalid(format!("{what} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} at {ptr:p} is not aligned"
        )));
    }
    // SAFETY: non-NULL and aligned (checked above), the caller guarantees it is writable.
    unsafe { ptr.write(value) };
    Ok(())
}

/// [`out`] for an optional out-parameter: NULL is skipped.
///
/// # Safety
///
/// `ptr` must be NULL or valid for a write of `T`.
pub unsafe fn out_opt<T>(ptr: *mut T, value: T, what: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Ok(());
    }
    // SAFETY: forwarded to the caller.
    unsafe { out(ptr, value, what) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_records_errors_and_panics_then_clears() {
        assert_eq!(call(-1, || Err(FfiError::invalid("idx is -3"))), -1);
        assert_eq!(last_code(), ANE_BRIDGE_E_INVALID_ARGUMENT);
        // SAFETY: the pointer comes from the thread-local just recorded, NUL-terminated.
        let message = unsafe { CStr::from_ptr(last_message()) }
            .to_str()
            .expect("utf-8");
        assert_eq!(message, "idx is -3");

        let failed: Option<u8> = call(None, || panic!("broken invariant: demo"));
        assert_eq!(failed, None);
        assert_eq!(last_code(), ANE_BRIDGE_E_INTERNAL);
        // SAFETY: as above.
        let message = unsafe { CStr::from_ptr(last_message()) }
            .to_str()
            .expect("utf-8");
        assert!(message.contains("broken invariant: demo"), "{message}");

        assert_eq!(call(0, || Ok(7)), 7);
        assert_eq!(last_code(), ANE_BRIDGE_OK);
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(last_message()) }.to_bytes(), b"");
        assert_eq!(
            status(|| Err(FfiError::invalid("x"))),
            ANE_BRIDGE_E_INVALID_ARGUMENT
        );
        assert_eq!(status(|| Ok(())), ANE_BRIDGE_OK);
    }

    #[test]
    fn argument_checks() {
        assert!(count(-1, "n_inputs").is_err());
        assert_eq!(count(3, "n").expect("count"), 3);
        // SAFETY: a zero length never dereferences.
        let empty = unsafe { slice::<u8>(std::ptr::null(), 0, "data") };
        assert_eq!(empty.expect("empty").len(), 0);
        // SAFETY: NULL with a length is rejected before any dereference.
        let err = unsafe { slice::<u8>(std::ptr::null(), 4, "data") }.expect_err("null");
        assert_eq!(err.message, "data is NULL but its length is 4");
        let words = [0u32; 2];
        let misaligned = words.as_ptr().cast::<u8>().wrapping_add(1).cast::<u32>();
        // SAFETY: misalignment is rejected before any dereference.
        assert!(unsafe { slice(misaligned, 1, "sizes") }.is_err());
        let text = c"héllo";
        // SAFETY: a valid C string literal.
        let parsed = unsafe { c_str(text.as_ptr(), "name") };
        assert_eq!(parsed.expect("utf-8"), "héllo");
        let bad = [0x66u8, 0xff, 0];
        // SAFETY: NUL-terminated array on the stack.
        let err = unsafe { c_str(bad.as_ptr().cast(), "name") }.expect_err("bad utf-8");
        assert_eq!(err.message, "name is not valid utf-8 at byte 1");
        assert_eq!(c_string("a\0b").to_str().expect("utf-8"), "a\\0b");
    }
}
