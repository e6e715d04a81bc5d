/*
 * ane_bridge.h — the ane_bridge C ABI of maderix/ANE, on Linux, over milbridge.
 *
 * Source-compatible with maderix/ANE's bridge/ane_bridge.h and with the dynamic-weight
 * extension of its pull request #22: the same names, signatures and failure values, so C and
 * Python-ctypes code written against them builds and runs unchanged. Kernels are MIL programs
 * compiled once by milbridge and evaluated on this CPU; the IOSurfaces of the original are
 * shared-memory buffers (memfd + mmap) here.
 *
 * Link with -lane_bridge (libane_bridge.so or libane_bridge.a; the static library also needs
 * -lpthread -ldl -lm).
 *
 * ---------------------------------------------------------------------------------------------
 * Failure values and the last error
 * ---------------------------------------------------------------------------------------------
 * Functions of the original API keep their failure values: NULL for compile and blob builders,
 * -1 for ane_bridge_init, false for ane_bridge_eval, and nothing (the call does nothing) for
 * void functions. Functions added here return an int status: ANE_BRIDGE_OK (0) or a negative
 * ANE_BRIDGE_E_* code; their results go through out-parameters, written only on success.
 *
 * Every ane_bridge_* call except the ane_bridge_last_error* accessors clears the calling
 * thread's last error on entry and records a new one if it fails, so the last error always
 * describes the most recent call on that thread. No failure is silent: a NULL handle, an index
 * out of range, a byte count that differs from the tensor's size, a NULL data pointer with a
 * non-zero length, or invalid MIL each fail cleanly and set the last error, and never write out
 * of bounds. A (pointer, length) pair with length 0 accepts NULL. A panic inside the library
 * never crosses this boundary: it becomes the failure value plus ANE_BRIDGE_E_INTERNAL.
 *
 * ---------------------------------------------------------------------------------------------
 * Ownership
 * ---------------------------------------------------------------------------------------------
 * - A kernel handle from a compile function belongs to the caller until ane_bridge_free.
 *   It owns its input, weight and output surfaces. A surface shared by ane_bridge_bind_input
 *   lives until every kernel using it is freed.
 * - Strings returned by ane_bridge_last_error* (and the fallbacks text of
 *   ane_bridge_realtime_status) belong to the library and stay valid until the next
 *   ane_bridge_* call on the same thread (other than the last-error accessors).
 * - Blobs from ane_bridge_build_weight_blob* are malloc'ed: release them with
 *   ane_bridge_free_blob or free().
 * - All input pointers are only read during the call; the library keeps no pointer to caller
 *   memory after it returns (weights are copied at compile time, data at write time).
 *
 * ---------------------------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------------------------------
 * A handle passed as `const ANEKernelHandle *` may be used by several threads at once. A handle
 * passed as `ANEKernelHandle *` needs exclusive use for the duration of the call (the original
 * functions all take a non-const handle, so: one thread at a time per kernel; different
 * kernels are independent). Compiles, the compile count, real-time mode and the blob builders
 * may be called from any thread. The last error is per thread. A surface shared with another
 * process (ane_bridge_surface_fd) must not be written by it while a kernel evaluates over it.
 *
 * ---------------------------------------------------------------------------------------------
 * Environment
 * ---------------------------------------------------------------------------------------------
 * ANE_BRIDGE_PRECISION=exact|fast   numeric profile of new compiles (default exact)
 * ANE_BRIDGE_CACHE_DIR=DIR          compile-cache directory (default ~/.cache/ane_bridge)
 * ANE_BRIDGE_CACHE=0                disables the compile cache
 * MILBRIDGE_ISA=generic|avx2|avx512|amx   caps the ISA tier (read once per process)
 * MILBRIDGE_THREADS=N               worker threads (read once per process)
 * The cache variables are read at each compile, so setenv() between compiles takes effect.
 */

#ifndef ANE_BRIDGE_H
#define ANE_BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes of the functions added here (and of ane_bridge_last_error_code). Stable: new
 * codes are appended, none is renumbered. */
enum {
    ANE_BRIDGE_OK = 0,
    ANE_BRIDGE_E_INVALID_ARGUMENT = -1, /* NULL pointer, negative count, bad index or kind */
    ANE_BRIDGE_E_COMPILE = -2,          /* MIL did not compile; diagnostics available */
    ANE_BRIDGE_E_SHAPE = -3,            /* a size or count disagrees with the MIL signature */
    ANE_BRIDGE_E_UNSUPPORTED = -4,      /* valid, but not implemented here */
    ANE_BRIDGE_E_OUT_OF_MEMORY = -5,    /* allocation failed */
    ANE_BRIDGE_E_IO = -6,               /* a file or system call failed */
    ANE_BRIDGE_E_CORRUPT_CACHE = -7,    /* a compile-cache entry was corrupt */
    ANE_BRIDGE_E_INTERNAL = -8          /* a bug in the library (including a caught panic) */
};

/* Surface kinds for ane_bridge_surface_fd / ane_bridge_surface_size. */
enum {
    ANE_BRIDGE_SURFACE_INPUT = 0,  /* activation inputs: the first function parameters */
    ANE_BRIDGE_SURFACE_WEIGHT = 1, /* dynamic weights: the parameters after the inputs */
    ANE_BRIDGE_SURFACE_OUTPUT = 2  /* function outputs */
};

/* Opaque kernel handle: a compiled MIL function plus its persistent surfaces. */
typedef struct ANEKernelHandle ANEKernelHandle;

/* ============================================================================================
 * The original API (maderix/ANE bridge/ane_bridge.h)
 * ========================================================================================== */

/* Prepares the runtime (CPU detection, worker pool). Optional before other calls; calling it
 * again is harmless. Returns 0, or -1 on failure. */
int ane_bridge_init(void);

/* Compiles a MIL program (UTF-8 text of mil_len bytes; a trailing NUL is tolerated) whose
 * single weight blob (weight_data, weight_len bytes; NULL or 0 for none) the program reads as
 * "@model_path/weights/weight.bin". Every function parameter is an input: n_inputs and
 * input_sizes must match the parameters, n_outputs and output_sizes the outputs, each size in
 * bytes of the declared type. Weights are copied. Served from the compile cache when possible.
 * Returns a new handle, or NULL on any failure (MIL diagnostics with line:col in the last
 * error). */
ANEKernelHandle *ane_bridge_compile(const char *mil_text, size_t mil_len,
                                    const uint8_t *weight_data, size_t weight_len,
                                    int n_inputs, const size_t *input_sizes,
                                    int n_outputs, const size_t *output_sizes);

/* As ane_bridge_compile with n_weights named files: weight_names[i] is the path as the program
 * writes it ("@model_path/weights/wq.bin"), weight_datas[i] its weight_lens[i] bytes. */
ANEKernelHandle *ane_bridge_compile_multi_weights(const char *mil_text, size_t mil_len,
                                                  const char **weight_names,
                                                  const uint8_t **weight_datas,
                                                  const size_t *weight_lens, int n_weights,
                                                  int n_inputs, const size_t *input_sizes,
                                                  int n_outputs, const size_t *output_sizes);

/* Evaluates the kernel over its surfaces: reads the inputs (and weights), overwrites the
 * outputs. Inputs and weights persist until rewritten. Returns false on failure. */
bool ane_bridge_eval(ANEKernelHandle *kernel);

/* Copies `bytes` bytes into activation input `idx`. `bytes` must equal the input's size. On a
 * bound input (ane_bridge_bind_input) this writes the shared surface. */
void ane_bridge_write_input(ANEKernelHandle *kernel, int idx, const void *data, size_t bytes);

/* Copies output `idx` into `data`. `bytes` must equal the output's size. */
void ane_bridge_read_output(ANEKernelHandle *kernel, int idx, void *data, size_t bytes);

/* Frees the kernel and its surfaces. NULL is a no-op. The handle is invalid afterwards. */
void ane_bridge_free(ANEKernelHandle *kernel);

/* Cold compiles in this process: compiles that ran the compiler. A compile served from the
 * cache does not count. Failed compiles do not count. */
int ane_bridge_get_compile_count(void);

/* Sets the compile count to 0. */
void ane_bridge_reset_compile_count(void);

/* Builds a weight file in the single-blob layout: a 128-byte header (MILBlob v2, one fp16
 * blob whose metadata is at offset 64) followed by the rows x cols floats of `src` (row-major)
 * converted to fp16 (round to nearest even). Use BLOBFILE offset 64. Returns a malloc'ed
 * buffer and its length in *out_len, or NULL. Free with ane_bridge_free_blob (or free). */
uint8_t *ane_bridge_build_weight_blob(const float *src, int rows, int cols, size_t *out_len);

/* As ane_bridge_build_weight_blob, storing the transpose: element [j][i] at j * rows + i. */
uint8_t *ane_bridge_build_weight_blob_transposed(const float *src, int rows, int cols,
                                                 size_t *out_len);

/* The original's int8 layout: no file header; a 64-byte record (sentinel, 0x01 at byte 4,
 * 0x08 at byte 10) followed by the rows x cols int8 values. Read in milbridge's lenient blob
 * mode. Returns a malloc'ed buffer and *out_len, or NULL. */
uint8_t *ane_bridge_build_weight_blob_int8(const int8_t *src, int rows, int cols,
                                           size_t *out_len);

/* Quantizes rows x cols floats with ONE global symmetric scale, max|w| / 127 (1.0 when all are
 * zero), stored in *out_scale: q = clamp(w / scale, -128, 127) rounded half away from zero.
 * (The original header says per-channel; its code, and this one, use a single scale.) Then
 * builds the int8 blob as ane_bridge_build_weight_blob_int8. */
uint8_t *ane_bridge_build_weight_blob_quantized(const float *src, int rows, int cols,
                                                float *out_scale, size_t *out_len);

/* Frees a blob from an ane_bridge_build_weight_blob* function. NULL is a no-op. */
void ane_bridge_free_blob(void *ptr);

/* ============================================================================================
 * Pull request #22: dynamic weights as function parameters
 * ========================================================================================== */

/* Compiles a program whose parameters are n_inputs activations followed by n_weights weights
 * (func main<ios18>(x0, ..., w0, ...)), with exactly one output of output_size bytes. Each
 * size is the byte size of the declared dtype and is checked against the program. Weight
 * surfaces start zeroed and persist across evals until rewritten: new weights are a memory
 * write, never a recompile. input_sizes / weight_sizes may be NULL when their count is 0.
 * Returns a new handle, or NULL on any failure. */
ANEKernelHandle *ane_bridge_compile_dyn(const char *mil_text, size_t mil_len,
                                        int n_inputs, const size_t *input_sizes,
                                        int n_weights, const size_t *weight_sizes,
                                        size_t output_size);

/* Copies `bytes` bytes (the weight's size, fp16 data for an fp16 weight) into weight `idx`
 * (0 .. n_weights-1). A weight that is a matmul operand (x @ W or W @ x) is also repacked here,
 * once, into the GEMM's panel layout (milbridge issue #5): evals then use the panels and never
 * pack it. */
void ane_bridge_write_weight(ANEKernelHandle *kernel, int idx, const void *fp16_data,
                             size_t bytes);

/* Writes `count` floats (the weight's element count) into weight `idx`: converted to fp16 at
 * memory bandwidth (F16C / AVX-512 where present, round to nearest even) for an fp16 weight,
 * copied for an fp32 weight. The GEMM panels of the weight are packed in the same sweep as the
 * conversion (see ane_bridge_write_weight). */
void ane_bridge_write_weight_f32(ANEKernelHandle *kernel, int idx, const float *fp32_data,
                                 size_t count);

/* Copies output `src_out_idx` of `src` into input `dst_in_idx` of `dst` (a copy; see
 * ane_bridge_bind_input for the zero-copy form). The two must have the same size. src and dst
 * may be the same kernel. */
void ane_bridge_copy_io(ANEKernelHandle *src, int src_out_idx,
                        ANEKernelHandle *dst, int dst_in_idx);

/* Real-time mode for a sequence of evals, process-wide and nestable (only the outermost pair
 * acts): the calling thread and the worker threads move to SCHED_FIFO (children do not inherit
 * it), each pinned to its own CPU, all memory is locked (mlockall), and idle workers spin
 * instead of sleeping. Steps the system refuses (no CAP_SYS_NICE, memlock limits, more threads
 * than CPUs) are skipped quietly; ane_bridge_realtime_status says what was achieved.
 * ane_bridge_end_realtime restores every thread's previous policy and affinity, unlocks memory
 * and stops the spinning. Either may be called from any thread; end without begin does
 * nothing. */
void ane_bridge_begin_realtime(void);
void ane_bridge_end_realtime(void);

/* ============================================================================================
 * milbridge extensions
 * ========================================================================================== */

/* The last error on this thread: a UTF-8 message ("" when the last call succeeded; never
 * NULL). For MIL errors it holds every diagnostic as "model.mil:LINE:COL: error[CODE]: ..."
 * with a source snippet. Owned by the library (see Ownership). Does not clear the error. */
const char *ane_bridge_last_error(void);

/* The status code of the last call on this thread (ANE_BRIDGE_OK after a success; for the
 * original functions, the code behind their failure value). Does not clear the error. */
int ane_bridge_last_error_code(void);

/* Same text as ane_bridge_last_error. */
const char *ane_bridge_last_error_message(void);

/* The number of compile diagnostics attached to the last error (0 unless its code is
 * ANE_BRIDGE_E_COMPILE). */
int ane_bridge_last_error_diagnostic_count(void);

/* Diagnostic i (0-based) of the last error: 1-based line and byte column in the MIL text, its
 * code ("E100") and message. Any out-pointer may be NULL. Strings are owned by the library.
 * Returns ANE_BRIDGE_OK, or ANE_BRIDGE_E_INVALID_ARGUMENT when i is out of range. Does not
 * clear the error. */
int ane_bridge_last_error_diagnostic(int i, int *line, int *col, const char **code,
                                     const char **msg);

/* ane_bridge_compile_dyn with several outputs: n_outputs sizes in output_sizes. On success
 * *out_kernel receives the new handle. */
int ane_bridge_compile_dyn_multi(const char *mil_text, size_t mil_len,
                                 int n_inputs, const size_t *input_sizes,
                                 int n_weights, const size_t *weight_sizes,
                                 int n_outputs, const size_t *output_sizes,
                                 ANEKernelHandle **out_kernel);

/* Zero-copy chaining: input dst_in_idx of dst becomes the very surface of output src_out_idx
 * of src (same dtype and size required), so after ane_bridge_eval(src), ane_bridge_eval(dst)
 * reads src's result in place. dst's own surface for that input is released. The binding
 * lasts until ane_bridge_unbind_input or ane_bridge_free(dst); freeing src first is safe (the
 * surface lives on). dst and src must differ. */
int ane_bridge_bind_input(ANEKernelHandle *dst, int dst_in_idx,
                          const ANEKernelHandle *src, int src_out_idx);

/* Gives input idx a fresh, zero-filled private surface (undoes ane_bridge_bind_input). */
int ane_bridge_unbind_input(ANEKernelHandle *kernel, int idx);

/* The kernel's input, weight and output counts (any out-pointer may be NULL). */
int ane_bridge_io_counts(const ANEKernelHandle *kernel, int *n_inputs, int *n_weights,
                         int *n_outputs);

/* The file descriptor of a surface (kind ANE_BRIDGE_SURFACE_*, index within the kind), for
 * sharing it with another process as IOSurface allows: send it over a Unix socket or map
 * /proc/<pid>/fd/<fd> (open it O_RDWR without O_TRUNC). The descriptor stays owned by the
 * library (close-on-exec); dup() it to keep it beyond ane_bridge_free. The other process must
 * not write the surface while a kernel evaluates over it.
 * Writes through the descriptor (mmap, pwrite, another process) are invisible to the library,
 * so asking for a WEIGHT surface's descriptor turns that weight's prepacked GEMM panels off
 * for the kernel's lifetime: every later eval reads the surface as it is and packs the weight
 * itself (correct whenever the weight is written, at the per-eval cost of packing it). Weights
 * written only with ane_bridge_write_weight* keep their panels. */
int ane_bridge_surface_fd(const ANEKernelHandle *kernel, int kind, int idx, int *out_fd);

/* The size in bytes of a surface (the tensor's byte size). */
int ane_bridge_surface_size(const ANEKernelHandle *kernel, int kind, int idx,
                            size_t *out_bytes);

/* What real-time mode has in force. Fields are appended, never reordered. */
typedef struct ane_bridge_realtime_status_t {
    int active;          /* 1 between the outermost begin and its end */
    int depth;           /* nesting depth of begin calls */
    int threads;         /* threads covered: the caller of begin plus the worker threads */
    int fifo_threads;    /* of which running SCHED_FIFO */
    int fifo_priority;   /* the FIFO priority (0 when none) */
    int pinned_threads;  /* of which pinned to one CPU */
    int memory_locked;   /* 1 when mlockall succeeded */
    int spinning;        /* 1 when idle workers spin */
    const char *fallbacks; /* why a step was skipped, one line each; "" when all granted */
} ane_bridge_realtime_status_t;

/* Writes the current real-time status into *out. */
int ane_bridge_realtime_status(ane_bridge_realtime_status_t *out);

#ifdef __cplusplus
}
#endif

#endif /* ANE_BRIDGE_H */
