//! Reference GEMM libraries loaded at run time with `dlopen`, for `milbridge bench gemm`'s
//! `openblas` and `onednn` columns: neither the build nor the tests need them, and nothing is
//! downloaded (install them with `scripts/install-bench-refs`).
//!
//! * [`OpenBlas`]: `cblas_sgemm` (f32) from `libopenblas.so.0` (Debian
//!   `libopenblas0-pthread`), its thread count set with `openblas_set_num_threads`. Its
//!   `DYNAMIC_ARCH` build picks kernels by CPU model when it loads, and Debian bookworm's
//!   0.3.21 does not know Sapphire/Emerald Rapids: it falls back to `Prescott` (SSE3)
//!   kernels. Unless `OPENBLAS_CORETYPE` is already set, [`OpenBlas::load`] sets it to the
//!   newest core this host can run (`SkylakeX` with AVX-512, `Haswell` with AVX2) before
//!   loading, as a numpy build that knows the CPU would pick.
//! * [`OneDnn`]: oneDNN 2.x's matmul primitive from `libdnnl.so.2` (Debian bookworm
//!   `libdnnl2` 2.6.3): [`DnnlMatmul`] is a bf16 × bf16 → f32 product (optionally batched,
//!   with strided operands), created once per shape and executed per call — the path
//!   PyTorch and JAX take (brgemm on AMX). Debian builds it on OpenMP; the thread count is set
//!   with `omp_set_num_threads`, found through the library's own dependencies. 2.6.3 uses
//!   AMX by default (on a Sapphire/Emerald Rapids host its effective ISA is
//!   `avx512_core_amx` and the matmul runs `brg:avx512_core_amx_bf16`, requesting the tile
//!   permission itself), so no `dnnl_set_max_cpu_isa` / `ONEDNN_MAX_CPU_ISA` is needed;
//!   [`OneDnn::effective_isa`] and [`DnnlMatmul::implementation`] report what ran.
//!
//! The bindings are the libraries' C ABIs, declared here by hand (no headers at build time).
//! oneDNN 2.x passes its descriptors (`dnnl_memory_desc_t`, 696 bytes in 2.6, and
//! `dnnl_matmul_desc_t`, 2800 bytes) by pointer to caller storage: they live in `Opaque`
//! blocks larger than either, so only the library reads their fields. oneDNN 3 changed that
//! ABI and its soname, so only `libdnnl.so.2` is opened.
//!
//! Libraries are never unloaded: OpenBLAS and OpenMP keep worker threads running their code
//! after a call returns.
#![allow(
    unsafe_code,
    reason = "dlopen/dlsym and calls through the C ABIs of OpenBLAS and oneDNN"
)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::ptr;
use std::sync::Mutex;

use half::bf16;

use crate::cpu::{self, Isa};

/// Held around every `dlopen` (which runs the libraries' initialisers, and those read the
/// environment) and around setting `OPENBLAS_CORETYPE`, so the two never overlap.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// Why a reference library is unavailable or a call into it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefLibError {
    /// None of the file names could be opened (`reason` is `dlerror`'s last message).
    NotFound {
        /// The file names tried, in order.
        names: Vec<String>,
        /// The dynamic loader's message for the last name.
        reason: String,
    },
    /// The library was opened but lacks a symbol the binding needs.
    MissingSymbol {
        /// The file name that was opened.
        library: String,
        /// The missing symbol.
        symbol: String,
    },
    /// A call returned a failure status.
    Call {
        /// The C function.
        call: &'static str,
        /// Its status (for oneDNN, a `dnnl_status_t`).
        status: i32,
    },
    /// The operands do not fit the product's shape.
    Shape(String),
}

impl fmt::Display for RefLibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefLibError::NotFound { names, reason } => {
                write!(f, "cannot load {}: {reason}", names.join(" or "))
            }
            RefLibError::MissingSymbol { library, symbol } => {
                write!(f, "{library} lacks the symbol `{symbol}`")
            }
            RefLibError::Call { call, status } => write!(f, "{call} failed with status {status}"),
            RefLibError::Shape(what) => write!(f, "operands do not fit the product: {what}"),
        }
    }
}

impl std::error::Error for RefLibError {}

/// An opened shared library (never closed, see the module docs).
#[derive(Debug)]
struct Library {
    handle: *mut c_void,
    name: String,
}

impl Library {
    /// Opens the first of `names` the dynamic loader finds (`RTLD_NOW | RTLD_LOCAL`).
    fn open(names: &[&str]) -> Result<Library, RefLibError> {
        let _guard = LOAD_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut reason = String::from("no file name given");
        for &name in names {
            let c_name = CString::new(name).map_err(|_| RefLibError::NotFound {
                names: names.iter().map(|name| name.to_string()).collect(),
                reason: format!("`{name}` contains a NUL byte"),
            })?;
            // SAFETY: `c_name` is a NUL-terminated string alive for the call. Loading runs the
            // library's initialisers, which is what opening it is for.
            let handle =
                unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if !handle.is_null() {
                return Ok(Library {
                    handle,
                    name: name.to_string(),
                });
            }
            reason = last_dl_error().unwrap_or_else(|| format!("dlopen({name}) failed"));
        }
        Err(RefLibError::NotFound {
            names: names.iter().map(|name| name.to_string()).collect(),
            reason,
        })
    }

    /// The address of `symbol` in the library or its dependencies.
    fn symbol(&self, symbol: &str) -> Result<*mut c_void, RefLibError> {
        let missing = || RefLibError::MissingSymbol {
            library: self.name.clone(),
            symbol: symbol.to_string(),
        };
        let c_symbol = CString::new(symbol).map_err(|_| missing())?;
        // SAFETY: `handle` came from a successful `dlopen` and is never closed; `c_symbol`
        // is NUL-terminated and alive for the call.
        let address = unsafe { libc::dlsym(self.handle, c_symbol.as_ptr()) };
        if address.is_null() {
            Err(missing())
        } else {
            Ok(address)
        }
    }
}

/// `dlerror()`'s message, if any.
fn last_dl_error() -> Option<String> {
    // SAFETY: `dlerror` returns null or a NUL-terminated string valid until the next dl call
    // on this thread; it is copied out at once.
    unsafe {
        let message = libc::dlerror();
        (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned())
    }
}

/// Looks `symbol` up in `library` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be an `unsafe extern "C" fn` type matching the symbol's C declaration.
unsafe fn function<F: Copy>(library: &Library, symbol: &str) -> Result<F, RefLibError> {
    let address = library.symbol(symbol)?;
    assert_eq!(
        size_of::<F>(),
        size_of::<*mut c_void>(),
        "reflib::function: F must be a function pointer"
    );
    // SAFETY: `address` is a non-null code address of `symbol` and the caller guarantees `F`
    // is a function-pointer type with its signature (the size is checked above).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&address) })
}

/// A C string returned by a library (null → `None`).
fn owned_string(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: non-null strings the libraries return are NUL-terminated and outlive the copy.
    let text = unsafe { CStr::from_ptr(text) };
    Some(text.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------------------------
// OpenBLAS

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

type CblasSgemm = unsafe extern "C" fn(
    c_int,      // order
    c_int,      // transA
    c_int,      // transB
    c_int,      // M
    c_int,      // N
    c_int,      // K
    f32,        // alpha
    *const f32, // A
    c_int,      // lda
    *const f32, // B
    c_int,      // ldb
    f32,        // beta
    *mut f32,   // C
    c_int,      // ldc
);
type SetThreads = unsafe extern "C" fn(c_int);
type GetString = unsafe extern "C" fn() -> *const c_char;

/// OpenBLAS's `cblas_sgemm`, loaded from `libopenblas.so.0`.
#[derive(Debug)]
pub struct OpenBlas {
    sgemm: CblasSgemm,
    set_num_threads: SetThreads,
    description: String,
}

impl OpenBlas {
    /// File names tried, in order.
    pub const NAMES: [&'static str; 2] = ["libopenblas.so.0", "libopenblas.so"];

    /// Loads OpenBLAS.
    ///
    /// # Errors
    /// [`RefLibError::NotFound`] when no file opens, [`RefLibError::MissingSymbol`] when it
    /// lacks `cblas_sgemm` or `openblas_set_num_threads`.
    pub fn load() -> Result<OpenBlas, RefLibError> {
        let chosen_core = choose_openblas_core();
        let library = Library::open(&Self::NAMES)?;
        // SAFETY: the types are the C declarations of `cblas.h` / OpenBLAS's `cblas.h`
        // extensions: `void cblas_sgemm(enum, enum, enum, int × 3, float, const float *,
        // int, const float *, int, float, float *, int)`, `void
        // openblas_set_num_threads(int)`, `char *openblas_get_config(void)` and `char
        // *openblas_get_corename(void)`.
        let (sgemm, set_num_threads, config, corename) = unsafe {
            (
                function::<CblasSgemm>(&library, "cblas_sgemm")?,
                function::<SetThreads>(&library, "openblas_set_num_threads")?,
                function::<GetString>(&library, "openblas_get_config").ok(),
                function::<GetString>(&library, "openblas_get_corename").ok(),
            )
        };
        // SAFETY: both take no arguments and return a static string (or null).
        let config = config.and_then(|get| owned_string(unsafe { get() }));
        // SAFETY: as above.
        let corename = corename.and_then(|get| owned_string(unsafe { get() }));
        let chosen = match chosen_core {
            Some(core) => format!(" (OPENBLAS_CORETYPE={core} set by milbridge)"),
            None => String::new(),
        };
        let description = format!(
            "{} ({}{}{chosen})",
            library.name,
            config.as_deref().unwrap_or("OpenBLAS").trim(),
            corename
                .map(|core| format!(", core {core}"))
                .unwrap_or_default()
        );
        Ok(OpenBlas {
            sgemm,
            set_num_threads,
            description,
        })
    }

    /// The file, `openblas_get_config()` and the kernel core it picked.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Sets OpenBLAS's thread count (`openblas_set_num_threads`).
    pub fn set_threads(&self, threads: usize) {
        let threads = c_int::try_from(threads.max(1)).unwrap_or(c_int::MAX);
        // SAFETY: a plain setter taking an int.
        unsafe { (self.set_num_threads)(threads) }
    }

    /// `C (m × n, row-major) = A (m × k) · B (k × n)`. A is row-major `m × k`, or with
    /// `a_transposed` the row-major `k × m` buffer of `Aᵀ`; likewise B (`k × n`, or `n × k`
    /// with `b_transposed`).
    ///
    /// # Errors
    /// [`RefLibError::Shape`] when a slice is shorter than its matrix or a dimension exceeds
    /// `int`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the GEMM shape and three operands"
    )]
    pub fn sgemm(
        &self,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        a_transposed: bool,
        b: &[f32],
        b_transposed: bool,
        c: &mut [f32],
    ) -> Result<(), RefLibError> {
        check_len("A", a.len(), m * k)?;
        check_len("B", b.len(), k * n)?;
        check_len("C", c.len(), m * n)?;
        let int = |value: usize| {
            c_int::try_from(value.max(1))
                .map_err(|_| RefLibError::Shape(format!("dimension {value} exceeds int")))
        };
        let (lda, ldb) = (
            int(if a_transposed { m } else { k })?,
            int(if b_transposed { k } else { n })?,
        );
        let trans = |transposed| {
            if transposed {
                CBLAS_TRANS
            } else {
                CBLAS_NO_TRANS
            }
        };
        // SAFETY: the lengths checked above cover every element the leading dimensions
        // address; C does not alias A or B (a `&mut` slice).
        unsafe {
            (self.sgemm)(
                CBLAS_ROW_MAJOR,
                trans(a_transposed),
                trans(b_transposed),
                int(m)?,
                int(n)?,
                int(k)?,
                1.0,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                0.0,
                c.as_mut_ptr(),
                int(n)?,
            );
        }
        Ok(())
    }
}

/// Sets `OPENBLAS_CORETYPE` for the host when it is unset (see the module docs); returns the
/// core it set.
fn choose_openblas_core() -> Option<&'static str> {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return None;
    }
    let core = if cpu::isa_available(Isa::Avx512) {
        "SkylakeX"
    } else if cpu::isa_available(Isa::Avx2) {
        "Haswell"
    } else {
        return None;
    };
    let _guard = LOAD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: Rust's own environment accesses take std's lock, and the only C code that
    // reads the environment while this process runs (the initialisers of the libraries
    // loaded here) runs inside `Library::open`, under LOAD_LOCK, held here too. OpenBLAS reads
    // the variable once, when it loads.
    unsafe { std::env::set_var("OPENBLAS_CORETYPE", core) };
    Some(core)
}

fn check_len(operand: &str, len: usize, needed: usize) -> Result<(), RefLibError> {
    if len < needed {
        Err(RefLibError::Shape(format!(
            "{operand} has {len} elements, the product needs {needed}"
        )))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// oneDNN 2.x

type Handle = *mut c_void;
type Status = c_int;

const DNNL_SUCCESS: Status = 0;
const DNNL_CPU: c_int = 1; // dnnl_engine_kind_t: any_engine = 0, cpu, gpu
const DNNL_STREAM_IN_ORDER: c_uint = 1;
const DNNL_BF16: c_int = 2;
const DNNL_F32: c_int = 3;
const DNNL_QUERY_IMPL_INFO_STR: c_int = 8;
const DNNL_ARG_SRC: c_int = 1;
const DNNL_ARG_DST: c_int = 17;
const DNNL_ARG_WEIGHTS: c_int = 33;
const DNNL_MAX_NDIMS: usize = 12;
const DNNL_RUNTIME_OMP: c_uint = 2;
const DNNL_RUNTIME_TBB: c_uint = 4;

/// Caller storage for a oneDNN 2.x descriptor (`dnnl_memory_desc_t`, `dnnl_matmul_desc_t`),
/// larger and more aligned than either; only the library reads it.
#[repr(C, align(64))]
struct Opaque([u8; 4096]);

impl Opaque {
    fn zeroed() -> Box<Opaque> {
        Box::new(Opaque([0; 4096]))
    }

    fn as_mut_ptr(&mut self) -> *mut c_void {
        self.0.as_mut_ptr().cast()
    }

    fn as_ptr(&self) -> *const c_void {
        self.0.as_ptr().cast()
    }
}

/// `dnnl_exec_arg_t`.
#[repr(C)]
struct ExecArg {
    arg: c_int,
    memory: Handle,
}

/// `dnnl_version_t`.
#[repr(C)]
struct Version {
    major: c_int,
    minor: c_int,
    patch: c_int,
    hash: *const c_char,
    cpu_runtime: c_uint,
    gpu_runtime: c_uint,
}

type Dims = [i64; DNNL_MAX_NDIMS];

/// The oneDNN entry points the matmul needs.
#[derive(Clone, Copy, Debug)]
struct DnnlFns {
    engine_create: unsafe extern "C" fn(*mut Handle, c_int, usize) -> Status,
    engine_destroy: unsafe extern "C" fn(Handle) -> Status,
    stream_create: unsafe extern "C" fn(*mut Handle, Handle, c_uint) -> Status,
    stream_wait: unsafe extern "C" fn(Handle) -> Status,
    stream_destroy: unsafe extern "C" fn(Handle) -> Status,
    memory_desc_init_by_strides:
        unsafe extern "C" fn(*mut c_void, c_int, *const i64, c_int, *const i64) -> Status,
    matmul_desc_init: unsafe extern "C" fn(
        *mut c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
    ) -> Status,
    primitive_desc_create:
        unsafe extern "C" fn(*mut Handle, *const c_void, *const c_void, Handle, Handle) -> Status,
    primitive_desc_query: unsafe extern "C" fn(Handle, c_int, c_int, *mut c_void) -> Status,
    primitive_desc_destroy: unsafe extern "C" fn(Handle) -> Status,
    primitive_create: unsafe extern "C" fn(*mut Handle, Handle) -> Status,
    primitive_execute: unsafe extern "C" fn(Handle, Handle, c_int, *const ExecArg) -> Status,
    primitive_destroy: unsafe extern "C" fn(Handle) -> Status,
    memory_create: unsafe extern "C" fn(*mut Handle, *const c_void, Handle, *mut c_void) -> Status,
    memory_set_data_handle: unsafe extern "C" fn(Handle, *mut c_void) -> Status,
    memory_destroy: unsafe extern "C" fn(Handle) -> Status,
    get_effective_cpu_isa: unsafe extern "C" fn() -> c_int,
    version: unsafe extern "C" fn() -> *const Version,
    omp_set_num_threads: Option<SetThreads>,
}

fn status(call: &'static str, status: Status) -> Result<(), RefLibError> {
    if status == DNNL_SUCCESS {
        Ok(())
    } else {
        Err(RefLibError::Call { call, status })
    }
}

/// oneDNN 2.x (`libdnnl.so.2`) with a CPU engine and an in-order stream.
#[derive(Debug)]
pub struct OneDnn {
    fns: DnnlFns,
    engine: Handle,
    /// The stream, used by one execution at a time.
    stream: Mutex<StreamHandle>,
    description: String,
}

/// A `dnnl_stream_t` that may move between threads (oneDNN allows that; the mutex in
/// [`OneDnn`] keeps its uses apart).
#[derive(Debug)]
struct StreamHandle(Handle);

// SAFETY: a oneDNN CPU stream is not tied to the thread that created it; `OneDnn` only
// touches it under its mutex.
unsafe impl Send for StreamHandle {}

impl OneDnn {
    /// File names tried, in order (the 2.x ABI this binding declares).
    pub const NAMES: [&'static str; 1] = ["libdnnl.so.2"];

    /// Loads oneDNN and creates its CPU engine and stream.
    ///
    /// # Errors
    /// [`RefLibError::NotFound`] / [`RefLibError::MissingSymbol`] as for [`OpenBlas::load`],
    /// [`RefLibError::Call`] when the engine or stream cannot be created.
    pub fn load() -> Result<OneDnn, RefLibError> {
        let library = Library::open(&Self::NAMES)?;
        // SAFETY: each type is the declaration in oneDNN 2.6's `dnnl.h` (enums are C ints,
        // handles pointers, descriptors passed by pointer, `dnnl_dims_t` an `int64_t[12]`
        // decaying to a pointer); `omp_set_num_threads` is OpenMP's `void (int)`.
        let fns = unsafe {
            DnnlFns {
                engine_create: function(&library, "dnnl_engine_create")?,
                engine_destroy: function(&library, "dnnl_engine_destroy")?,
                stream_create: function(&library, "dnnl_stream_create")?,
                stream_wait: function(&library, "dnnl_stream_wait")?,
                stream_destroy: function(&library, "dnnl_stream_destroy")?,
                memory_desc_init_by_strides: function(
                    &library,
                    "dnnl_memory_desc_init_by_strides",
                )?,
                matmul_desc_init: function(&library, "dnnl_matmul_desc_init")?,
                primitive_desc_create: function(&library, "dnnl_primitive_desc_create")?,
                primitive_desc_query: function(&library, "dnnl_primitive_desc_query")?,
                primitive_desc_destroy: function(&library, "dnnl_primitive_desc_destroy")?,
                primitive_create: function(&library, "dnnl_primitive_create")?,
                primitive_execute: function(&library, "dnnl_primitive_execute")?,
                primitive_destroy: function(&library, "dnnl_primitive_destroy")?,
                memory_create: function(&library, "dnnl_memory_create")?,
                memory_set_data_handle: function(&library, "dnnl_memory_set_data_handle")?,
                memory_destroy: function(&library, "dnnl_memory_destroy")?,
                get_effective_cpu_isa: function(&library, "dnnl_get_effective_cpu_isa")?,
                version: function(&library, "dnnl_version")?,
                omp_set_num_threads: function(&library, "omp_set_num_threads").ok(),
            }
        };
        // SAFETY: `dnnl_version` returns a pointer to a static `dnnl_version_t`.
        let version = unsafe { (fns.version)().as_ref() };
        let version = version.map_or_else(
            || "unknown version".to_string(),
            |version| {
                let runtime = match version.cpu_runtime {
                    DNNL_RUNTIME_OMP => "OpenMP",
                    DNNL_RUNTIME_TBB => "TBB",
                    _ => "other threading",
                };
                format!(
                    "v{}.{}.{}, {runtime}",
                    version.major, version.minor, version.patch
                )
            },
        );
        let mut engine: Handle = ptr::null_mut();
        // SAFETY: `engine` is a valid out-pointer; CPU engine 0 always exists.
        status("dnnl_engine_create", unsafe {
            (fns.engine_create)(&mut engine, DNNL_CPU, 0)
        })?;
        let mut stream: Handle = ptr::null_mut();
        // SAFETY: `engine` was just created; `stream` is a valid out-pointer.
        let created = status("dnnl_stream_create", unsafe {
            (fns.stream_create)(&mut stream, engine, DNNL_STREAM_IN_ORDER)
        });
        if let Err(error) = created {
            // SAFETY: `engine` is live and nothing else refers to it.
            unsafe { (fns.engine_destroy)(engine) };
            return Err(error);
        }
        Ok(OneDnn {
            fns,
            engine,
            stream: Mutex::new(StreamHandle(stream)),
            description: format!("{} ({version})", library.name),
        })
    }

    /// The file, version and threading runtime.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The most capable ISA oneDNN will use on this host (`dnnl_get_effective_cpu_isa`), by
    /// its `dnnl_cpu_isa_t` name.
    pub fn effective_isa(&self) -> String {
        // SAFETY: a query without arguments.
        let isa = unsafe { (self.fns.get_effective_cpu_isa)() };
        match isa {
            0x1 => "sse41".to_string(),
            0x3 => "avx".to_string(),
            0x7 => "avx2".to_string(),
            0x27 => "avx512_core".to_string(),
            0x67 => "avx512_core_vnni".to_string(),
            0xe7 => "avx512_core_bf16".to_string(),
            0x3e7 => "avx512_core_amx".to_string(),
            0x407 => "avx2_vnni".to_string(),
            other => format!("isa {other:#x}"),
        }
    }

    /// Sets the OpenMP thread count oneDNN runs on (call it before creating primitives,
    /// which size their blocking for it). Returns false when the build's runtime is not
    /// OpenMP (no `omp_set_num_threads`), leaving the count at its default.
    pub fn set_threads(&self, threads: usize) -> bool {
        let threads = c_int::try_from(threads.max(1)).unwrap_or(c_int::MAX);
        match self.fns.omp_set_num_threads {
            Some(set) => {
                // SAFETY: OpenMP's `void omp_set_num_threads(int)`.
                unsafe { set(threads) };
                true
            }
            None => false,
        }
    }
}

impl Drop for OneDnn {
    fn drop(&mut self) {
        let stream = self
            .stream
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the stream and engine were created in `load`; every `DnnlMatmul` borrows
        // `self`, so none is alive any more.
        unsafe {
            (self.fns.stream_destroy)(stream.0);
            (self.fns.engine_destroy)(self.engine);
        }
    }
}

/// A oneDNN matmul primitive for `batch` products `C (m × n, f32, row-major) = A (m × k,
/// bf16) · B (k × n, bf16)`, created once and executed by [`DnnlMatmul::run`].
#[derive(Debug)]
pub struct DnnlMatmul<'lib> {
    lib: &'lib OneDnn,
    shape: (usize, usize, usize, usize),
    primitive_desc: Handle,
    primitive: Handle,
    /// Memory objects of A, B and C (data handles set per run).
    memory: [Handle; 3],
    implementation: String,
}

impl<'lib> DnnlMatmul<'lib> {
    /// Creates the primitive for `batch` products of `m × n × k`. A (batch entries `m·k`
    /// apart) is row-major `m × k`, or with `a_transposed` the row-major `k × m` buffer of
    /// `Aᵀ`; B likewise (`k × n`, or `n × k` with `b_transposed`); C is row-major, entries
    /// `m·n` apart.
    ///
    /// # Errors
    /// [`RefLibError::Call`] when oneDNN rejects a descriptor or has no implementation.
    pub fn new(
        lib: &'lib OneDnn,
        (batch, m, n, k): (usize, usize, usize, usize),
        a_transposed: bool,
        b_transposed: bool,
    ) -> Result<DnnlMatmul<'lib>, RefLibError> {
        let fns = &lib.fns;
        let dim = |value: usize| {
            i64::try_from(value).map_err(|_| RefLibError::Shape(format!("{value} exceeds i64")))
        };
        let (batch_, m_, n_, k_) = (dim(batch)?, dim(m)?, dim(n)?, dim(k)?);
        let describe = |rows: i64, cols: i64, transposed: bool, dtype: c_int| {
            let mut dims: Dims = [0; DNNL_MAX_NDIMS];
            let mut strides: Dims = [0; DNNL_MAX_NDIMS];
            dims[..3].copy_from_slice(&[batch_, rows, cols]);
            let (row_stride, col_stride) = if transposed { (1, rows) } else { (cols, 1) };
            strides[..3].copy_from_slice(&[rows * cols, row_stride, col_stride]);
            let mut desc = Opaque::zeroed();
            // SAFETY: `desc` is writable storage larger than `dnnl_memory_desc_t`; `dims` and
            // `strides` hold DNNL_MAX_NDIMS entries.
            status("dnnl_memory_desc_init_by_strides", unsafe {
                (fns.memory_desc_init_by_strides)(
                    desc.as_mut_ptr(),
                    3,
                    dims.as_ptr(),
                    dtype,
                    strides.as_ptr(),
                )
            })?;
            Ok::<_, RefLibError>(desc)
        };
        let a_desc = describe(m_, k_, a_transposed, DNNL_BF16)?;
        let b_desc = describe(k_, n_, b_transposed, DNNL_BF16)?;
        let c_desc = describe(m_, n_, false, DNNL_F32)?;
        let mut matmul = Opaque::zeroed();
        // SAFETY: `matmul` is writable storage larger than `dnnl_matmul_desc_t`; the memory
        // descriptors were initialised above; a null bias disables the bias term.
        status("dnnl_matmul_desc_init", unsafe {
            (fns.matmul_desc_init)(
                matmul.as_mut_ptr(),
                a_desc.as_ptr(),
                b_desc.as_ptr(),
                ptr::null(),
                c_desc.as_ptr(),
            )
        })?;
        let mut primitive_desc: Handle = ptr::null_mut();
        // SAFETY: `matmul` is an initialised op descriptor; null attributes and hint mean the
        // defaults; the engine is live.
        status("dnnl_primitive_desc_create", unsafe {
            (fns.primitive_desc_create)(
                &mut primitive_desc,
                matmul.as_ptr(),
                ptr::null(),
                lib.engine,
                ptr::null_mut(),
            )
        })?;
        // From here on `Drop` releases whatever was created.
        let mut this = DnnlMatmul {
            lib,
            shape: (batch, m, n, k),
            primitive_desc,
            primitive: ptr::null_mut(),
            memory: [ptr::null_mut(); 3],
            implementation: String::new(),
        };
        let mut name: *const c_char = ptr::null();
        // SAFETY: `dnnl_query_impl_info_str` writes a `const char *` owned by the primitive
        // descriptor, copied out at once.
        status("dnnl_primitive_desc_query", unsafe {
            (fns.primitive_desc_query)(
                primitive_desc,
                DNNL_QUERY_IMPL_INFO_STR,
                0,
                (&raw mut name).cast(),
            )
        })?;
        this.implementation = owned_string(name).unwrap_or_else(|| "unknown".to_string());
        // SAFETY: the primitive descriptor is live; `this.primitive` is a valid out-pointer.
        status("dnnl_primitive_create", unsafe {
            (fns.primitive_create)(&mut this.primitive, primitive_desc)
        })?;
        for (slot, desc) in this.memory.iter_mut().zip([&a_desc, &b_desc, &c_desc]) {
            // SAFETY: `desc` is initialised; a null handle (DNNL_MEMORY_NONE) defers the data
            // pointer to `run`.
            status("dnnl_memory_create", unsafe {
                (fns.memory_create)(slot, desc.as_ptr(), lib.engine, ptr::null_mut())
            })?;
        }
        Ok(this)
    }

    /// The implementation oneDNN chose (`dnnl_query_impl_info_str`, e.g.
    /// `brg:avx512_core_amx_bf16`).
    pub fn implementation(&self) -> &str {
        &self.implementation
    }

    /// Executes the product on the operands and waits for it.
    ///
    /// # Errors
    /// [`RefLibError::Shape`] when a slice is shorter than its operand, [`RefLibError::Call`]
    /// when oneDNN reports a failure.
    pub fn run(&self, a: &[bf16], b: &[bf16], c: &mut [f32]) -> Result<(), RefLibError> {
        let (batch, m, n, k) = self.shape;
        check_len("A", a.len(), batch * m * k)?;
        check_len("B", b.len(), batch * k * n)?;
        check_len("C", c.len(), batch * m * n)?;
        let fns = &self.lib.fns;
        let stream = self
            .lib
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pointers = [
            a.as_ptr().cast_mut().cast(),
            b.as_ptr().cast_mut().cast(),
            c.as_mut_ptr().cast(),
        ];
        for (&memory, pointer) in self.memory.iter().zip(pointers) {
            // SAFETY: the memory object is live; the buffer holds the whole operand (checked
            // above) and outlives the execution, which completes before this returns.
            status("dnnl_memory_set_data_handle", unsafe {
                (fns.memory_set_data_handle)(memory, pointer)
            })?;
        }
        let args = [
            ExecArg {
                arg: DNNL_ARG_SRC,
                memory: self.memory[0],
            },
            ExecArg {
                arg: DNNL_ARG_WEIGHTS,
                memory: self.memory[1],
            },
            ExecArg {
                arg: DNNL_ARG_DST,
                memory: self.memory[2],
            },
        ];
        // SAFETY: the primitive and memory objects are live and bound to the operands above;
        // oneDNN reads A and B only (the matmul's inputs) and writes C, which nothing else
        // borrows; the wait ends every use of the buffers before the borrows do.
        unsafe {
            status(
                "dnnl_primitive_execute",
                (fns.primitive_execute)(self.primitive, stream.0, 3, args.as_ptr()),
            )?;
            status("dnnl_stream_wait", (fns.stream_wait)(stream.0))
        }
    }
}

impl Drop for DnnlMatmul<'_> {
    fn drop(&mut self) {
        let fns = &self.lib.fns;
        // SAFETY: each non-null handle was created by `new` and is used by nothing else.
        unsafe {
            for &memory in &self.memory {
                if !memory.is_null() {
                    (fns.memory_destroy)(memory);
                }
            }
            if !self.primitive.is_null() {
                (fns.primitive_destroy)(self.primitive);
            }
            (fns.primitive_desc_destroy)(self.primitive_desc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints why a library-backed test did not run.
    fn skip(what: &str, error: &RefLibError) {
        eprintln!(
            "reflib: SKIPPING the {what} check: {error} (install it with scripts/install-bench-refs)"
        );
    }

    /// The naive product of row-major (or transposed-buffer) operands, in f64.
    fn naive(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        a_t: bool,
        b: &[f32],
        b_t: bool,
    ) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for row in 0..m {
            for col in 0..n {
                c[row * n + col] = (0..k)
                    .map(|i| {
                        let x = if a_t { a[i * m + row] } else { a[row * k + i] };
                        let y = if b_t { b[col * k + i] } else { b[i * n + col] };
                        x as f64 * y as f64
                    })
                    .sum();
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed) % 101) as f32 / 101.0 - 0.5)
            .collect()
    }

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let error = Library::open(&["libmilbridge-no-such-library.so.7", "libnope.so"])
            .expect_err("no such library");
        match &error {
            RefLibError::NotFound { names, reason } => {
                assert_eq!(names.len(), 2);
                assert!(reason.contains("libnope.so"), "{reason}");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        let text = error.to_string();
        assert!(
            text.contains("libmilbridge-no-such-library.so.7 or libnope.so"),
            "{text}"
        );
        assert!(matches!(
            Library::open(&[]),
            Err(RefLibError::NotFound { .. })
        ));
    }

    #[test]
    fn a_missing_symbol_is_a_clear_error() {
        let libc = Library::open(&["libc.so.6"]).expect("glibc is loaded");
        assert!(libc.symbol("malloc").is_ok());
        let error = libc
            .symbol("cblas_sgemm_not_here")
            .expect_err("no such symbol");
        assert_eq!(
            error,
            RefLibError::MissingSymbol {
                library: "libc.so.6".to_string(),
                symbol: "cblas_sgemm_not_here".to_string(),
            }
        );
        assert!(error.to_string().contains("`cblas_sgemm_not_here`"));
        // SAFETY: never called.
        let function = unsafe { function::<SetThreads>(&libc, "omp_set_num_threads_nope") };
        assert!(matches!(function, Err(RefLibError::MissingSymbol { .. })));
    }

    #[test]
    fn openblas_computes_a_product_when_installed() {
        let blas = match OpenBlas::load() {
            Ok(blas) => blas,
            Err(error) => return skip("OpenBLAS", &error),
        };
        blas.set_threads(2);
        let (m, n, k) = (19, 23, 31);
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let mut c = vec![f32::NAN; m * n];
            blas.sgemm((m, n, k), &a, a_t, &b, b_t, &mut c)
                .expect("sgemm");
            let want = naive((m, n, k), &a, a_t, &b, b_t);
            for (got, want) in c.iter().zip(&want) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "{a_t} {b_t}: {got} vs {want}"
                );
            }
        }
        let short = blas.sgemm((m, n, k), &[0.0; 3], false, &[0.0; 3], false, &mut [0.0; 3]);
        assert!(matches!(short, Err(RefLibError::Shape(_))));
    }

    #[test]
    fn onednn_computes_a_batched_product_when_installed() {
        let dnnl = match OneDnn::load() {
            Ok(dnnl) => dnnl,
            Err(error) => return skip("oneDNN", &error),
        };
        assert!(dnnl.description().contains("libdnnl.so.2"));
        dnnl.set_threads(2);
        let (batch, m, n, k) = (2, 17, 29, 40);
        for (a_t, b_t) in [(false, false), (true, false), (false, true)] {
            let matmul =
                DnnlMatmul::new(&dnnl, (batch, m, n, k), a_t, b_t).expect("matmul primitive");
            assert!(!matmul.implementation().is_empty());
            // Values exact in bf16, so the f32 result matches the f64 one closely.
            let a: Vec<f32> = (0..batch * m * k)
                .map(|i| ((i * 37) % 17) as f32 / 16.0 - 0.5)
                .collect();
            let b: Vec<f32> = (0..batch * k * n)
                .map(|i| ((i * 11) % 13) as f32 / 8.0 - 0.75)
                .collect();
            let a16: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
            let b16: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
            let mut c = vec![f32::NAN; batch * m * n];
            matmul.run(&a16, &b16, &mut c).expect("execute");
            for entry in 0..batch {
                let want = naive(
                    (m, n, k),
                    &a[entry * m * k..][..m * k],
                    a_t,
                    &b[entry * k * n..][..k * n],
                    b_t,
                );
                let got = &c[entry * m * n..][..m * n];
                for (got, want) in got.iter().zip(&want) {
                    assert!(
                        (*got as f64 - want).abs() < 1e-4,
                        "{a_t} {b_t}: {got} vs {want}"
                    );
                }
            }
            let short = matmul.run(&a16[..3], &b16, &mut c);
            assert!(matches!(short, Err(RefLibError::Shape(_))));
        }
    }
}
