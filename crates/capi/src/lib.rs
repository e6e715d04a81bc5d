//! `libane_bridge.so` / `libane_bridge.a`: maderix/ANE's `ane_bridge` C ABI, with PR #22's
//! dynamic-weight extension and milbridge's error and surface API, over
//! [`milbridge_bridge`]. The header is `include/ane_bridge.h`; it documents every function,
//! ownership and thread-safety.
//!
//! Each exported function is one call into [`boundary::call`] (or [`boundary::status`] for the
//! functions we added), whose closure converts the C arguments with the checked helpers of
//! [`boundary`] and makes one call into the bridge. No panic crosses the ABI: it becomes the
//! function's failure value plus the thread's last error (`ANE_BRIDGE_E_INTERNAL`).
#![allow(
    unsafe_code,
    reason = "the FFI boundary: exported symbols and the raw pointers C callers pass"
)]

pub mod boundary;

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;

use milbridge_bridge::{Kernel, KernelOptions, Slot};

use boundary::{FfiError, call, status};

pub use boundary::{
    ANE_BRIDGE_E_COMPILE, ANE_BRIDGE_E_CORRUPT_CACHE, ANE_BRIDGE_E_INTERNAL,
    ANE_BRIDGE_E_INVALID_ARGUMENT, ANE_BRIDGE_E_IO, ANE_BRIDGE_E_OUT_OF_MEMORY, ANE_BRIDGE_E_SHAPE,
    ANE_BRIDGE_E_UNSUPPORTED, ANE_BRIDGE_OK,
};

/// The file name BLOBFILE paths use for `ane_bridge_compile`'s single weight blob.
pub const SINGLE_WEIGHT_PATH: &str = "@model_path/weights/weight.bin";

/// `ANE_BRIDGE_SURFACE_INPUT`: an activation input surface.
pub const ANE_BRIDGE_SURFACE_INPUT: c_int = 0;
/// `ANE_BRIDGE_SURFACE_WEIGHT`: a dynamic weight surface.
pub const ANE_BRIDGE_SURFACE_WEIGHT: c_int = 1;
/// `ANE_BRIDGE_SURFACE_OUTPUT`: an output surface.
pub const ANE_BRIDGE_SURFACE_OUTPUT: c_int = 2;

// A `const ANEKernelHandle *` may be used by several threads at once (the header's rule), and a
// handle may move between threads: both need these bounds.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Kernel>();
};

const MAGIC_LIVE: u64 = u64::from_le_bytes(*b"ANEKRNL1");

/// What C sees as the opaque `ANEKernelHandle`.
pub struct KernelHandle {
    magic: u64,
    kernel: Kernel,
}

fn into_handle(kernel: Kernel) -> *mut KernelHandle {
    Box::into_raw(Box::new(KernelHandle {
        magic: MAGIC_LIVE,
        kernel,
    }))
}

/// A kernel handle argument, shared.
///
/// # Safety
///
/// `ptr` must be NULL or a handle returned by a compile function and not yet freed, that no
/// other thread uses exclusively meanwhile.
unsafe fn kernel_ref<'a>(ptr: *const KernelHandle, what: &str) -> Result<&'a Kernel, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::invalid(format!("{what} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} ({ptr:p}) is not a kernel handle"
        )));
    }
    // SAFETY: non-NULL and aligned (checked above); the caller guarantees a live handle that
    // nobody mutates during the call.
    let handle = unsafe { &*ptr };
    if handle.magic != MAGIC_LIVE {
        return Err(FfiError::invalid(format!(
            "{what} ({ptr:p}) is not a live kernel handle"
        )));
    }
    Ok(&handle.kernel)
}

/// A kernel handle argument, exclusive.
///
/// # Safety
///
/// `ptr` must be NULL or a handle returned by a compile function and not yet freed, that no
/// other thread uses meanwhile.
unsafe fn kernel_mut<'a>(ptr: *mut KernelHandle, what: &str) -> Result<&'a mut Kernel, FfiError> {
    // SAFETY: forwarded to the caller; this checks NULL, alignment and the magic first.
    unsafe { kernel_ref(ptr, what) }?;
    // SAFETY: validated just above; exclusivity is the caller's guarantee.
    Ok(unsafe { &mut (*ptr).kernel })
}

fn slot_of(kind: c_int) -> Result<Slot, FfiError> {
    match kind {
        ANE_BRIDGE_SURFACE_INPUT => Ok(Slot::Input),
        ANE_BRIDGE_SURFACE_WEIGHT => Ok(Slot::Weight),
        ANE_BRIDGE_SURFACE_OUTPUT => Ok(Slot::Output),
        other => Err(FfiError::invalid(format!(
            "surface kind {other} is not ANE_BRIDGE_SURFACE_INPUT (0), _WEIGHT (1) or _OUTPUT (2)"
        ))),
    }
}

/// A `(count, sizes)` pair.
///
/// # Safety
///
/// As [`boundary::slice`].
unsafe fn sizes<'a>(n: c_int, ptr: *const usize, what: &str) -> Result<&'a [usize], FfiError> {
    let n = boundary::count(n, &format!("the number of {what}"))?;
    // SAFETY: forwarded to the caller.
    unsafe { boundary::slice(ptr, n, &format!("{what} sizes")) }
}

fn options() -> Result<KernelOptions, FfiError> {
    Ok(KernelOptions::from_env()?)
}

// ----- compile -----

/// The shared body of `ane_bridge_compile` and `ane_bridge_compile_multi_weights`.
///
/// # Safety
///
/// The pointer arguments must satisfy the header's contract for those functions.
unsafe fn compile_blobfile(
    mil_text: &str,
    weights: &[(&str, &[u8])],
    n_inputs: c_int,
    input_sizes: *const usize,
    n_outputs: c_int,
    output_sizes: *const usize,
) -> Result<*mut KernelHandle, FfiError> {
    // SAFETY: forwarded to the caller.
    let inputs = unsafe { sizes(n_inputs, input_sizes, "inputs") }?;
    // SAFETY: forwarded to the caller.
    let outputs = unsafe { sizes(n_outputs, output_sizes, "outputs") }?;
    let kernel = Kernel::compile_multi_weights(mil_text, weights, &options()?)
        .map_err(|err| FfiError::with_source(err, mil_text))?;
    kernel.check_sizes(inputs, &[], outputs)?;
    Ok(into_handle(kernel))
}

/// Compiles a MIL program with one weight blob, seen by the program as
/// `@model_path/weights/weight.bin`. Returns NULL on any failure.
///
/// # Safety
///
/// `mil_text` must hold `mil_len` readable bytes; `weight_data` `weight_len` bytes (or be NULL);
/// `input_sizes` / `output_sizes` `n_inputs` / `n_outputs` elements (or be NULL when the count
/// is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_compile(
    mil_text: *const c_char,
    mil_len: usize,
    weight_data: *const u8,
    weight_len: usize,
    n_inputs: c_int,
    input_sizes: *const usize,
    n_outputs: c_int,
    output_sizes: *const usize,
) -> *mut KernelHandle {
    call(ptr::null_mut(), || {
        // SAFETY: the caller's guarantees, as documented above.
        let mil = unsafe { boundary::mil(mil_text, mil_len) }?;
        // SAFETY: as above; NULL or an empty blob means no weights, as in the original.
        let blob = unsafe {
            boundary::slice(
                weight_data,
                if weight_data.is_null() { 0 } else { weight_len },
                "weight_data",
            )
        }?;
        let weights: &[(&str, &[u8])] = if blob.is_empty() {
            &[]
        } else {
            &[(SINGLE_WEIGHT_PATH, blob)]
        };
        // SAFETY: as above.
        unsafe { compile_blobfile(mil, weights, n_inputs, input_sizes, n_outputs, output_sizes) }
    })
}

/// Compiles a MIL program with several named weight files (`@model_path/weights/wq.bin`).
/// Returns NULL on any failure.
///
/// # Safety
///
/// `mil_text` must hold `mil_len` bytes; `weight_names`, `weight_datas` and `weight_lens`
/// `n_weights` elements each (NUL-terminated names; each data pointer `weight_lens[i]` bytes);
/// the size arrays as for [`ane_bridge_compile`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_compile_multi_weights(
    mil_text: *const c_char,
    mil_len: usize,
    weight_names: *const *const c_char,
    weight_datas: *const *const u8,
    weight_lens: *const usize,
    n_weights: c_int,
    n_inputs: c_int,
    input_sizes: *const usize,
    n_outputs: c_int,
    output_sizes: *const usize,
) -> *mut KernelHandle {
    call(ptr::null_mut(), || {
        // SAFETY: the caller's guarantees, as documented above.
        let mil = unsafe { boundary::mil(mil_text, mil_len) }?;
        let n = boundary::count(n_weights, "n_weights")?;
        // SAFETY: as above.
        let names = unsafe { boundary::slice(weight_names, n, "weight_names") }?;
        // SAFETY: as above.
        let datas = unsafe { boundary::slice(weight_datas, n, "weight_datas") }?;
        // SAFETY: as above.
        let lens = unsafe { boundary::slice(weight_lens, n, "weight_lens") }?;
        let mut weights = Vec::with_capacity(n);
        for idx in 0..n {
            // SAFETY: as above: each name is NUL-terminated, each data pointer holds its length.
            let name = unsafe { boundary::c_str(names[idx], &format!("weight_names[{idx}]")) }?;
            // SAFETY: as above.
            let data =
                unsafe { boundary::slice(datas[idx], lens[idx], &format!("weight_datas[{idx}]")) }?;
            weights.push((name, data));
        }
        // SAFETY: as above.
        unsafe {
            compile_blobfile(
                mil,
                &weights,
                n_inputs,
                input_sizes,
                n_outputs,
                output_sizes,
            )
        }
    })
}

/// The shared body of the dynamic-weight compile functions.
///
/// # Safety
///
/// As for [`ane_bridge_compile_dyn_multi`].
#[allow(clippy::too_many_arguments, reason = "mirrors the C signature")]
unsafe fn compile_dyn(
    mil_text: *const c_char,
    mil_len: usize,
    n_inputs: c_int,
    input_sizes: *const usize,
    n_weights: c_int,
    weight_sizes: *const usize,
    n_outputs: c_int,
    output_sizes: *const usize,
) -> Result<*mut KernelHandle, FfiError> {
    // SAFETY: forwarded to the caller.
    let mil = unsafe { boundary::mil(mil_text, mil_len) }?;
    // SAFETY: forwarded to the caller.
    let inputs = unsafe { sizes(n_inputs, input_sizes, "inputs") }?;
    // SAFETY: forwarded to the caller.
    let weights = unsafe { sizes(n_weights, weight_sizes, "weights") }?;
    // SAFETY: forwarded to the caller.
    let outputs = unsafe { sizes(n_outputs, output_sizes, "outputs") }?;
    let kernel = Kernel::compile_dyn(mil, inputs, weights, outputs, &options()?)
        .map_err(|err| FfiError::with_source(err, mil))?;
    Ok(into_handle(kernel))
}

/// PR #22: compiles a program whose parameters are `n_inputs` activations then `n_weights`
/// weights, with one output of `output_size` bytes. Returns NULL on any failure.
///
/// # Safety
///
/// `mil_text` must hold `mil_len` bytes; `input_sizes` `n_inputs` and `weight_sizes`
/// `n_weights` elements (either may be NULL when its count is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_compile_dyn(
    mil_text: *const c_char,
    mil_len: usize,
    n_inputs: c_int,
    input_sizes: *const usize,
    n_weights: c_int,
    weight_sizes: *const usize,
    output_size: usize,
) -> *mut KernelHandle {
    call(ptr::null_mut(), || {
        // SAFETY: the caller's guarantees; the single output size lives on this stack frame.
        unsafe {
            compile_dyn(
                mil_text,
                mil_len,
                n_inputs,
                input_sizes,
                n_weights,
                weight_sizes,
                1,
                &output_size,
            )
        }
    })
}

/// [`ane_bridge_compile_dyn`] with several outputs; the handle goes to `*out_kernel`.
///
/// # Safety
///
/// As [`ane_bridge_compile_dyn`]; `output_sizes` must hold `n_outputs` elements and
/// `out_kernel` be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_compile_dyn_multi(
    mil_text: *const c_char,
    mil_len: usize,
    n_inputs: c_int,
    input_sizes: *const usize,
    n_weights: c_int,
    weight_sizes: *const usize,
    n_outputs: c_int,
    output_sizes: *const usize,
    out_kernel: *mut *mut KernelHandle,
) -> c_int {
    status(|| {
        if out_kernel.is_null() {
            return Err(FfiError::invalid("out_kernel is NULL"));
        }
        // SAFETY: the caller's guarantees, as documented above.
        let handle = unsafe {
            compile_dyn(
                mil_text,
                mil_len,
                n_inputs,
                input_sizes,
                n_weights,
                weight_sizes,
                n_outputs,
                output_sizes,
            )
        }?;
        // SAFETY: checked non-NULL above; the caller guarantees it is writable.
        unsafe { boundary::out(out_kernel, handle, "out_kernel") }
    })
}

// ----- eval and I/O -----

/// Evaluates the kernel over its surfaces. Returns false on failure.
///
/// # Safety
///
/// `kernel` must be NULL or a live handle used by no other thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_eval(kernel: *mut KernelHandle) -> bool {
    call(false, || {
        // SAFETY: the caller's guarantee, as documented above.
        unsafe { kernel_mut(kernel, "kernel") }?.eval()?;
        Ok(true)
    })
}

/// Copies `bytes` bytes (exactly the input's size) into activation input `idx`.
///
/// # Safety
///
/// `kernel` as for [`ane_bridge_eval`]; `data` must hold `bytes` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_write_input(
    kernel: *mut KernelHandle,
    idx: c_int,
    data: *const c_void,
    bytes: usize,
) {
    call((), || {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let idx = boundary::index(kernel, Slot::Input, idx)?;
        // SAFETY: as above.
        let data = unsafe { boundary::slice(data.cast::<u8>(), bytes, "data") }?;
        Ok(kernel.write_input(idx, data)?)
    })
}

/// Copies output `idx` (exactly `bytes`, its size) into `data`.
///
/// # Safety
///
/// `kernel` as for [`ane_bridge_eval`]; `data` must hold `bytes` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_read_output(
    kernel: *mut KernelHandle,
    idx: c_int,
    data: *mut c_void,
    bytes: usize,
) {
    call((), || {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let idx = boundary::index(kernel, Slot::Output, idx)?;
        // SAFETY: as above.
        let data = unsafe { boundary::slice_mut(data.cast::<u8>(), bytes, "data") }?;
        Ok(kernel.read_output(idx, data)?)
    })
}

/// PR #22: copies `bytes` bytes (exactly the weight's size) into weight `idx`.
///
/// # Safety
///
/// `kernel` as for [`ane_bridge_eval`]; `fp16_data` must hold `bytes` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_write_weight(
    kernel: *mut KernelHandle,
    idx: c_int,
    fp16_data: *const c_void,
    bytes: usize,
) {
    call((), || {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let idx = boundary::index(kernel, Slot::Weight, idx)?;
        // SAFETY: as above.
        let data = unsafe { boundary::slice(fp16_data.cast::<u8>(), bytes, "fp16_data") }?;
        Ok(kernel.write_weight_bytes(idx, data)?)
    })
}

/// PR #22: converts `count` floats to fp16 into weight `idx` (copied as-is into an fp32
/// weight); `count` must equal the weight's element count.
///
/// # Safety
///
/// `kernel` as for [`ane_bridge_eval`]; `fp32_data` must hold `count` readable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_write_weight_f32(
    kernel: *mut KernelHandle,
    idx: c_int,
    fp32_data: *const f32,
    count: usize,
) {
    call((), || {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let idx = boundary::index(kernel, Slot::Weight, idx)?;
        // SAFETY: as above.
        let values = unsafe { boundary::slice(fp32_data, count, "fp32_data") }?;
        Ok(kernel.write_weight_f32(idx, values)?)
    })
}

/// PR #22: copies output `src_out_idx` of `src` into input `dst_in_idx` of `dst` (same size).
///
/// # Safety
///
/// Both handles must be NULL or live; no other thread may use either exclusively meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_copy_io(
    src: *mut KernelHandle,
    src_out_idx: c_int,
    dst: *mut KernelHandle,
    dst_in_idx: c_int,
) {
    call((), || {
        // SAFETY: the caller's guarantee, as documented above.
        let src = unsafe { kernel_ref(src, "src") }?;
        // SAFETY: as above (src and dst may be the same kernel: both are shared borrows).
        let dst = unsafe { kernel_ref(dst, "dst") }?;
        let out_idx = boundary::index(src, Slot::Output, src_out_idx)?;
        let in_idx = boundary::index(dst, Slot::Input, dst_in_idx)?;
        Ok(dst.copy_input_from(in_idx, src, out_idx)?)
    })
}

/// Zero-copy chaining: input `dst_in_idx` of `dst` shares output `src_out_idx` of `src`.
///
/// # Safety
///
/// Both handles must be NULL or live; `dst` used by no other thread, `src` by none
/// exclusively.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_bind_input(
    dst: *mut KernelHandle,
    dst_in_idx: c_int,
    src: *const KernelHandle,
    src_out_idx: c_int,
) -> c_int {
    status(|| {
        if ptr::eq(dst.cast_const(), src) && !src.is_null() {
            return Err(FfiError::invalid(
                "dst and src are the same kernel: an input cannot read the kernel's own output",
            ));
        }
        // SAFETY: the caller's guarantee; `src` differs from `dst` (checked above), so the
        // shared and the exclusive borrow do not alias.
        let src = unsafe { kernel_ref(src, "src") }?;
        // SAFETY: as above.
        let dst = unsafe { kernel_mut(dst, "dst") }?;
        let out_idx = boundary::index(src, Slot::Output, src_out_idx)?;
        let in_idx = boundary::index(dst, Slot::Input, dst_in_idx)?;
        Ok(dst.bind_input_to(in_idx, src, out_idx)?)
    })
}

/// Gives input `idx` a fresh private surface again (undoes [`ane_bridge_bind_input`]).
///
/// # Safety
///
/// `kernel` as for [`ane_bridge_eval`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_unbind_input(kernel: *mut KernelHandle, idx: c_int) -> c_int {
    status(|| {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_mut(kernel, "kernel") }?;
        let idx = boundary::index(kernel, Slot::Input, idx)?;
        Ok(kernel.unbind_input(idx)?)
    })
}

/// Input, weight and output counts of a kernel (each out-pointer may be NULL).
///
/// # Safety
///
/// `kernel` must be NULL or live; the out-pointers NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_io_counts(
    kernel: *const KernelHandle,
    n_inputs: *mut c_int,
    n_weights: *mut c_int,
    n_outputs: *mut c_int,
) -> c_int {
    status(|| {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let as_int = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX);
        for (ptr, value) in [
            (n_inputs, kernel.n_inputs()),
            (n_weights, kernel.n_weights()),
            (n_outputs, kernel.n_outputs()),
        ] {
            // SAFETY: NULL (skipped) or writable, as the caller guarantees.
            unsafe { boundary::out_opt(ptr, as_int(value), "count") }?;
        }
        Ok(())
    })
}

/// The file descriptor of a surface (owned by the kernel, or by the kernel it is bound to).
/// A weight's surface shared this way is packed at every eval from then on
/// ([`Kernel::share_surface`](milbridge_bridge::Kernel::share_surface)), since writes through
/// the descriptor are invisible to the kernel.
///
/// # Safety
///
/// `kernel` must be NULL or live; `out_fd` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_surface_fd(
    kernel: *const KernelHandle,
    kind: c_int,
    idx: c_int,
    out_fd: *mut c_int,
) -> c_int {
    status(|| {
        use std::os::fd::AsRawFd as _;
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let slot = slot_of(kind)?;
        let idx = boundary::index(kernel, slot, idx)?;
        let fd = kernel.share_surface(slot, idx)?.buffer.fd().as_raw_fd();
        // SAFETY: the caller guarantees `out_fd` is NULL (rejected) or writable.
        unsafe { boundary::out(out_fd, fd, "out_fd") }
    })
}

/// The size in bytes of a surface.
///
/// # Safety
///
/// `kernel` must be NULL or live; `out_bytes` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_surface_size(
    kernel: *const KernelHandle,
    kind: c_int,
    idx: c_int,
    out_bytes: *mut usize,
) -> c_int {
    status(|| {
        // SAFETY: the caller's guarantee, as documented above.
        let kernel = unsafe { kernel_ref(kernel, "kernel") }?;
        let slot = slot_of(kind)?;
        let idx = boundary::index(kernel, slot, idx)?;
        let bytes = kernel.surface(slot, idx)?.desc.byte_len;
        // SAFETY: the caller guarantees `out_bytes` is NULL (rejected) or writable.
        unsafe { boundary::out(out_bytes, bytes, "out_bytes") }
    })
}

/// Frees a kernel and its surfaces (a surface bound to another kernel lives on there).
/// NULL is a no-op.
///
/// # Safety
///
/// `kernel` must be NULL or a live handle that no other thread uses; it is dangling afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_free(kernel: *mut KernelHandle) {
    call((), || {
        if kernel.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's guarantee; validates NULL, alignment and the magic.
        unsafe { kernel_ref(kernel, "kernel") }?;
        // SAFETY: validated just above as a live handle from `into_handle` (a `Box`); the
        // magic is cleared first so a second free is caught while the memory is still ours.
        unsafe { (*kernel).magic = 0 };
        // SAFETY: as above; the caller gives up the pointer.
        drop(unsafe { Box::from_raw(kernel) });
        Ok(())
    })
}

// ----- process-wide -----

/// Initialises the runtime (CPU detection, worker pool). Returns 0, or -1 on failure.
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_init() -> c_int {
    call(-1, || {
        milbridge_bridge::init()?;
        Ok(0)
    })
}

/// Cold compiles so far in this process (cache hits do not count).
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_get_compile_count() -> c_int {
    call(-1, || {
        Ok(c_int::try_from(milbridge_bridge::compile_count()).unwrap_or(c_int::MAX))
    })
}

/// Resets the compile count to 0.
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_reset_compile_count() {
    call((), || {
        milbridge_bridge::reset_compile_count();
        Ok(())
    })
}

/// Enters real-time mode (see the header).
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_begin_realtime() {
    call((), || {
        milbridge_bridge::begin_realtime();
        Ok(())
    })
}

/// Leaves real-time mode.
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_end_realtime() {
    call((), || {
        milbridge_bridge::end_realtime();
        Ok(())
    })
}

/// `ane_bridge_realtime_status_t`: what real-time mode has in force.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RealtimeStatusC {
    /// 1 between the outermost begin and its end.
    pub active: c_int,
    /// Nesting depth.
    pub depth: c_int,
    /// Threads covered (caller + pool workers).
    pub threads: c_int,
    /// Threads on SCHED_FIFO.
    pub fifo_threads: c_int,
    /// The FIFO priority (0 when none).
    pub fifo_priority: c_int,
    /// Threads pinned to one CPU.
    pub pinned_threads: c_int,
    /// 1 when mlockall succeeded.
    pub memory_locked: c_int,
    /// 1 when idle workers spin.
    pub spinning: c_int,
    /// Why steps fell back, one line each ("" when all granted); owned by the library, valid
    /// until the next `ane_bridge_*` call on this thread.
    pub fallbacks: *const c_char,
}

thread_local! {
    static FALLBACKS: std::cell::RefCell<CString> = std::cell::RefCell::new(CString::default());
}

/// Writes the real-time status into `*out`.
///
/// # Safety
///
/// `out` must be NULL (rejected) or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_realtime_status(out: *mut RealtimeStatusC) -> c_int {
    status(|| {
        let status = milbridge_bridge::realtime_status();
        let int = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX);
        let fallbacks =
            CString::new(status.fallbacks.join("\n").replace('\0', "\\0")).unwrap_or_default();
        let fallbacks = FALLBACKS.with(|slot| {
            *slot.borrow_mut() = fallbacks;
            slot.borrow().as_ptr()
        });
        let value = RealtimeStatusC {
            active: c_int::from(status.active),
            depth: c_int::try_from(status.depth).unwrap_or(c_int::MAX),
            threads: int(status.threads),
            fifo_threads: int(status.fifo_threads),
            fifo_priority: status.fifo_priority,
            pinned_threads: int(status.pinned_threads),
            memory_locked: c_int::from(status.memory_locked),
            spinning: c_int::from(status.spinning),
            fallbacks,
        };
        // SAFETY: the caller guarantees `out` is NULL (rejected) or writable.
        unsafe { boundary::out(out, value, "out") }
    })
}

// ----- last error -----

/// The message of the last failed call on this thread ("" if it succeeded). Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_last_error() -> *const c_char {
    boundary::query(c"".as_ptr(), || Ok(boundary::last_message()))
}

/// Same as [`ane_bridge_last_error`].
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_last_error_message() -> *const c_char {
    boundary::query(c"".as_ptr(), || Ok(boundary::last_message()))
}

/// The status code of the last call on this thread (`ANE_BRIDGE_OK` if it succeeded).
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_last_error_code() -> c_int {
    boundary::query(ANE_BRIDGE_E_INTERNAL, || Ok(boundary::last_code()))
}

/// How many compile diagnostics the last error carries.
#[unsafe(no_mangle)]
pub extern "C" fn ane_bridge_last_error_diagnostic_count() -> c_int {
    boundary::query(0, || {
        Ok(c_int::try_from(boundary::last_diagnostic_count()).unwrap_or(c_int::MAX))
    })
}

/// Diagnostic `i` of the last error: 1-based line and column, code (`"E100"`) and message.
/// Each out-pointer may be NULL. Returns `ANE_BRIDGE_E_INVALID_ARGUMENT` for `i` out of range.
/// Does not change the last error.
///
/// # Safety
///
/// Each out-pointer must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_last_error_diagnostic(
    i: c_int,
    line: *mut c_int,
    col: *mut c_int,
    code: *mut *const c_char,
    message: *mut *const c_char,
) -> c_int {
    boundary::query(ANE_BRIDGE_E_INTERNAL, || {
        let found = usize::try_from(i).ok().and_then(boundary::last_diagnostic);
        let Some((l, c, code_ptr, message_ptr)) = found else {
            return Ok(ANE_BRIDGE_E_INVALID_ARGUMENT);
        };
        let int = |n: u32| c_int::try_from(n).unwrap_or(c_int::MAX);
        // SAFETY: each out-pointer is NULL (skipped) or writable, as the caller guarantees.
        unsafe { boundary::out_opt(line, int(l), "line") }?;
        // SAFETY: as above.
        unsafe { boundary::out_opt(col, int(c), "col") }?;
        // SAFETY: as above.
        unsafe { boundary::out_opt(code, code_ptr, "code") }?;
        // SAFETY: as above.
        unsafe { boundary::out_opt(message, message_ptr, "message") }?;
        Ok(ANE_BRIDGE_OK)
    })
}

// ----- weight blobs -----

/// Copies `bytes` into a `malloc` allocation (so both `free()` and `ane_bridge_free_blob`
/// release it) and stores the length.
///
/// # Safety
///
/// `out_len` must be writable (checked non-NULL by the callers before building).
unsafe fn to_malloc(bytes: &[u8], out_len: *mut usize) -> Result<*mut u8, FfiError> {
    // SAFETY: malloc with a non-zero size has no preconditions.
    let ptr = unsafe { libc::malloc(bytes.len().max(1)) }.cast::<u8>();
    if ptr.is_null() {
        return Err(FfiError::new(
            ANE_BRIDGE_E_OUT_OF_MEMORY,
            format!("malloc of {} bytes failed", bytes.len()),
        ));
    }
    // SAFETY: `ptr` holds at least `bytes.len()` fresh bytes that cannot overlap `bytes`.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
    // SAFETY: the caller's guarantee.
    if let Err(err) = unsafe { boundary::out(out_len, bytes.len(), "out_len") } {
        // SAFETY: `ptr` came from malloc above and is not handed out.
        unsafe { libc::free(ptr.cast()) };
        return Err(err);
    }
    Ok(ptr)
}

/// `rows * cols` elements from `src`, with the checks shared by every builder.
///
/// # Safety
///
/// `src` must hold `rows * cols` readable elements.
unsafe fn matrix<'a, T>(
    src: *const T,
    rows: c_int,
    cols: c_int,
    out_len: *mut usize,
) -> Result<(&'a [T], usize, usize), FfiError> {
    if out_len.is_null() {
        return Err(FfiError::invalid("out_len is NULL"));
    }
    let rows = boundary::count(rows, "rows")?;
    let cols = boundary::count(cols, "cols")?;
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| FfiError::invalid(format!("rows * cols overflows ({rows} * {cols})")))?;
    // SAFETY: forwarded to the caller.
    let values = unsafe { boundary::slice(src, n, "src") }?;
    Ok((values, rows, cols))
}

/// Builds a single-fp16-blob weight file (128-byte header + fp16 data) from `rows × cols`
/// floats. Returns a `malloc`ed buffer (free with `ane_bridge_free_blob` or `free`) and its
/// length in `*out_len`, or NULL.
///
/// # Safety
///
/// `src` must hold `rows * cols` floats; `out_len` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_build_weight_blob(
    src: *const f32,
    rows: c_int,
    cols: c_int,
    out_len: *mut usize,
) -> *mut u8 {
    call(ptr::null_mut(), || {
        // SAFETY: the caller's guarantee, as documented above.
        let (values, _, _) = unsafe { matrix(src, rows, cols, out_len) }?;
        // SAFETY: `out_len` checked non-NULL in `matrix`; writable by the caller's guarantee.
        unsafe { to_malloc(&milbridge_mil::blob::single_fp16_blob(values), out_len) }
    })
}

/// As [`ane_bridge_build_weight_blob`], storing the transpose (element `[j][i]` at
/// `j * rows + i`).
///
/// # Safety
///
/// As [`ane_bridge_build_weight_blob`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_build_weight_blob_transposed(
    src: *const f32,
    rows: c_int,
    cols: c_int,
    out_len: *mut usize,
) -> *mut u8 {
    call(ptr::null_mut(), || {
        // SAFETY: the caller's guarantee, as documented above.
        let (values, rows, cols) = unsafe { matrix(src, rows, cols, out_len) }?;
        let blob = milbridge_mil::blob::single_fp16_blob_transposed(values, rows, cols);
        // SAFETY: as in `ane_bridge_build_weight_blob`.
        unsafe { to_malloc(&blob, out_len) }
    })
}

/// Builds the original bridge's headerless int8 blob (64-byte record + int8 data).
///
/// # Safety
///
/// `src` must hold `rows * cols` bytes; `out_len` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_build_weight_blob_int8(
    src: *const i8,
    rows: c_int,
    cols: c_int,
    out_len: *mut usize,
) -> *mut u8 {
    call(ptr::null_mut(), || {
        // SAFETY: the caller's guarantee, as documented above.
        let (values, _, _) = unsafe { matrix(src, rows, cols, out_len) }?;
        // SAFETY: as in `ane_bridge_build_weight_blob`.
        unsafe { to_malloc(&milbridge_mil::blob::int8_bridge_blob(values), out_len) }
    })
}

/// Quantizes `rows × cols` floats to int8 with one global symmetric scale (`max|w| / 127`,
/// stored in `*out_scale`) and builds the int8 blob.
///
/// # Safety
///
/// `src` must hold `rows * cols` floats; `out_scale` and `out_len` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_build_weight_blob_quantized(
    src: *const f32,
    rows: c_int,
    cols: c_int,
    out_scale: *mut f32,
    out_len: *mut usize,
) -> *mut u8 {
    call(ptr::null_mut(), || {
        if out_scale.is_null() || !out_scale.is_aligned() {
            return Err(FfiError::invalid(format!(
                "out_scale ({out_scale:p}) is NULL or misaligned"
            )));
        }
        // SAFETY: the caller's guarantee, as documented above.
        let (values, _, _) = unsafe { matrix(src, rows, cols, out_len) }?;
        let (quantized, scale) = milbridge_mil::blob::quantize_symmetric_int8(values);
        // SAFETY: as in `ane_bridge_build_weight_blob`.
        let blob =
            unsafe { to_malloc(&milbridge_mil::blob::int8_bridge_blob(&quantized), out_len) }?;
        // SAFETY: checked non-NULL above; writable by the caller's guarantee.
        unsafe { boundary::out(out_scale, scale, "out_scale") }?;
        Ok(blob)
    })
}

/// Frees a blob from the builders (NULL is a no-op).
///
/// # Safety
///
/// `ptr` must be NULL or a pointer returned by an `ane_bridge_build_weight_blob*` function and
/// not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ane_bridge_free_blob(ptr: *mut c_void) {
    call((), || {
        // SAFETY: the caller's guarantee: NULL or a live malloc allocation of ours.
        unsafe { libc::free(ptr) };
        Ok(())
    })
}
