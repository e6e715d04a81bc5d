/* ABI misuse: every bad call fails with the function's failure value and a last error, and
 * never writes where it should not. Runs with the compile cache disabled. */
#include <stdlib.h>

#include "common.h"

static int error_is(int code, const char *fragment) {
    return ane_bridge_last_error_code() == code && strstr(ane_bridge_last_error(), fragment) != NULL;
}

static ANEKernelHandle *compile_scale2(int rows, int cols) {
    char *mil = mil_scale2(rows, cols);
    size_t bytes = (size_t)rows * cols * 2;
    ANEKernelHandle *k = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    free(mil);
    return k;
}

static void null_handles(void) {
    printf("[1] NULL handles\n");
    uint16_t buf[16] = {0};
    float f[16] = {0};
    CHECK(!ane_bridge_eval(NULL) && error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "kernel is NULL"),
          "eval(NULL) is false with an error");
    ane_bridge_write_input(NULL, 0, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "kernel is NULL"), "write_input(NULL)");
    ane_bridge_read_output(NULL, 0, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "kernel is NULL"), "read_output(NULL)");
    ane_bridge_write_weight(NULL, 0, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "kernel is NULL"), "write_weight(NULL)");
    ane_bridge_write_weight_f32(NULL, 0, f, 16);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "kernel is NULL"), "write_weight_f32(NULL)");
    ane_bridge_copy_io(NULL, 0, NULL, 0);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "src is NULL"), "copy_io(NULL, NULL)");
    CHECK(ane_bridge_bind_input(NULL, 0, NULL, 0) == ANE_BRIDGE_E_INVALID_ARGUMENT,
          "bind_input(NULL, NULL)");
    int n = 7;
    CHECK(ane_bridge_io_counts(NULL, &n, NULL, NULL) == ANE_BRIDGE_E_INVALID_ARGUMENT && n == 7,
          "io_counts(NULL) fails and leaves the out-parameter alone");
    int fd = -7;
    CHECK(ane_bridge_surface_fd(NULL, ANE_BRIDGE_SURFACE_INPUT, 0, &fd) ==
                  ANE_BRIDGE_E_INVALID_ARGUMENT && fd == -7,
          "surface_fd(NULL)");
    ane_bridge_free(NULL);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK && ane_bridge_last_error()[0] == '\0',
          "free(NULL) is a no-op without error");

    /* Something that is not a handle at all (readable memory, wrong contents). */
    uint64_t fake[64] = {0};
    CHECK(!ane_bridge_eval((ANEKernelHandle *)fake) &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "not a live kernel handle"),
          "a pointer that is not a handle is refused");
}

static void null_pointers(void) {
    printf("[2] NULL pointers and negative counts\n");
    size_t bytes = 32;
    CHECK(ane_bridge_compile_dyn(NULL, 10, 1, &bytes, 0, NULL, bytes) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "mil_text is NULL"),
          "compile_dyn(NULL mil)");
    char *mil = mil_scale2(4, 4);
    CHECK(ane_bridge_compile_dyn(mil, strlen(mil), 1, NULL, 0, NULL, bytes) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "inputs sizes is NULL"),
          "compile_dyn with n_inputs 1 and NULL sizes");
    CHECK(ane_bridge_compile_dyn(mil, strlen(mil), -1, &bytes, 0, NULL, bytes) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "must not be negative"),
          "compile_dyn with a negative count");
    CHECK(ane_bridge_compile(mil, strlen(mil), NULL, 0, 1, &bytes, -2, &bytes) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "-2"),
          "compile with a negative output count");
    CHECK(ane_bridge_compile_dyn_multi(mil, strlen(mil), 1, &bytes, 0, NULL, 1, &bytes, NULL) ==
              ANE_BRIDGE_E_INVALID_ARGUMENT,
          "compile_dyn_multi without out_kernel");

    ANEKernelHandle *k = compile_scale2(4, 4);
    CHECK(k != NULL, "a valid kernel for the pointer checks");
    ane_bridge_write_input(k, 0, NULL, 32);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "data is NULL"), "write_input(NULL data)");
    ane_bridge_read_output(k, 0, NULL, 32);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "data is NULL"), "read_output(NULL data)");
    ane_bridge_write_input(k, 0, NULL, 0);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "is 32 bytes but 0 bytes were given"),
          "a zero-length write is a size error, not a NULL error");
    CHECK(ane_bridge_io_counts(k, NULL, NULL, NULL) == ANE_BRIDGE_OK, "io_counts with NULL outs");
    CHECK(ane_bridge_surface_fd(k, ANE_BRIDGE_SURFACE_INPUT, 0, NULL) ==
              ANE_BRIDGE_E_INVALID_ARGUMENT,
          "surface_fd without out_fd");

    size_t len = 99;
    float w[4] = {1, 2, 3, 4};
    CHECK(ane_bridge_build_weight_blob(NULL, 2, 2, &len) == NULL && len == 99 &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "src is NULL"),
          "build_weight_blob(NULL src)");
    CHECK(ane_bridge_build_weight_blob(w, 2, 2, NULL) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "out_len is NULL"),
          "build_weight_blob(NULL out_len)");
    CHECK(ane_bridge_build_weight_blob(w, -2, 2, &len) == NULL && len == 99,
          "build_weight_blob(negative rows)");
    CHECK(ane_bridge_build_weight_blob_quantized(w, 2, 2, NULL, &len) == NULL,
          "build_weight_blob_quantized(NULL out_scale)");
    ane_bridge_free_blob(NULL);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "free_blob(NULL) is a no-op");
    ane_bridge_free(k);
    free(mil);
}

static void bad_indices(void) {
    printf("[3] indices out of range\n");
    ANEKernelHandle *k = compile_scale2(4, 4);
    ANEKernelHandle *other = compile_scale2(4, 4);
    uint16_t buf[16];
    fill_half(buf, 1.0f, 16);
    ane_bridge_write_input(k, 1, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "input index 1 is out of range"),
          "write_input index 1 of 1");
    ane_bridge_write_input(k, -1, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "input index -1"), "write_input index -1");
    ane_bridge_read_output(k, 5, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "output index 5"), "read_output index 5");
    ane_bridge_write_weight(k, 0, buf, sizeof buf);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "weight index 0 is out of range: the kernel has 0"),
          "write_weight on a kernel without weights");
    ane_bridge_copy_io(k, 3, other, 0);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "output index 3"), "copy_io bad source index");
    ane_bridge_copy_io(k, 0, other, 2);
    CHECK(error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "input index 2"), "copy_io bad destination index");
    CHECK(ane_bridge_bind_input(other, 0, k, 1) == ANE_BRIDGE_E_INVALID_ARGUMENT,
          "bind_input bad output index");
    CHECK(ane_bridge_bind_input(k, 0, k, 0) == ANE_BRIDGE_E_INVALID_ARGUMENT &&
              strstr(ane_bridge_last_error(), "same kernel") != NULL,
          "bind_input of a kernel to itself");
    int fd = -3;
    CHECK(ane_bridge_surface_fd(k, 7, 0, &fd) == ANE_BRIDGE_E_INVALID_ARGUMENT && fd == -3,
          "surface_fd with an unknown kind");
    size_t size = 0;
    CHECK(ane_bridge_surface_size(k, ANE_BRIDGE_SURFACE_WEIGHT, 0, &size) ==
              ANE_BRIDGE_E_INVALID_ARGUMENT && size == 0,
          "surface_size of a missing weight");
    CHECK(ane_bridge_unbind_input(k, 4) == ANE_BRIDGE_E_INVALID_ARGUMENT, "unbind_input index 4");
    ane_bridge_free(k);
    ane_bridge_free(other);
}

static void wrong_sizes(void) {
    printf("[4] byte counts that do not match the tensor\n");
    char *mil = mil_dyn_matmul(8, 8, 8);
    size_t x = 128, w = 128, out = 128, wrong = 126;
    CHECK(ane_bridge_compile_dyn(mil, strlen(mil), 1, &x, 1, &wrong, out) == NULL &&
              error_is(ANE_BRIDGE_E_SHAPE, "weight 0 (`W`, tensor<fp16, [1, 8, 8]>) is 128 bytes but 126"),
          "compile_dyn with a wrong weight size");
    CHECK(ane_bridge_compile_dyn(mil, strlen(mil), 1, &x, 1, &w, 130) == NULL &&
              error_is(ANE_BRIDGE_E_SHAPE, "output 0"),
          "compile_dyn with a wrong output size");
    CHECK(ane_bridge_compile_dyn(mil, strlen(mil), 1, &x, 0, NULL, out) == NULL &&
              ane_bridge_last_error_code() == ANE_BRIDGE_E_SHAPE,
          "compile_dyn with a missing weight");
    ANEKernelHandle *k = ane_bridge_compile_dyn(mil, strlen(mil), 1, &x, 1, &w, out);
    CHECK(k != NULL, "the right sizes compile");

    uint16_t big[80];
    fill_half(big, 1.0f, 80);
    ane_bridge_write_input(k, 0, big, 126);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 126"), "short write_input");
    ane_bridge_write_input(k, 0, big, 160);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 160"), "long write_input");
    ane_bridge_write_weight(k, 0, big, 130);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 130"), "long write_weight");
    float f[80] = {0};
    ane_bridge_write_weight_f32(k, 0, f, 65);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 130"), "write_weight_f32 with 65 floats");

    /* A short read must not write anything; a canary after the buffer stays intact. */
    uint16_t readback[72];
    for (int i = 0; i < 72; i++) readback[i] = 0xABCD;
    ane_bridge_read_output(k, 0, readback, 126);
    int untouched = 1;
    for (int i = 0; i < 72; i++) untouched &= readback[i] == 0xABCD;
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 126") && untouched,
          "short read_output fails and writes nothing");
    ane_bridge_read_output(k, 0, readback, 144);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 144"), "long read_output fails");

    ANEKernelHandle *small = compile_scale2(2, 2);
    ane_bridge_copy_io(small, 0, k, 0);
    CHECK(error_is(ANE_BRIDGE_E_SHAPE, "128 bytes but 8"), "copy_io between different sizes");
    CHECK(ane_bridge_bind_input(k, 0, small, 0) == ANE_BRIDGE_E_SHAPE, "bind_input between different sizes");

    size_t one = 32;
    CHECK(ane_bridge_compile(mil, strlen(mil), NULL, 0, 1, &one, 1, &out) == NULL &&
              ane_bridge_last_error_code() == ANE_BRIDGE_E_SHAPE,
          "compile with fewer input sizes than parameters");
    ane_bridge_free(small);
    ane_bridge_free(k);
    free(mil);
}

static void invalid_mil(void) {
    printf("[5] invalid MIL: NULL with line:col diagnostics\n");
    char *mil = mil_scale2(4, 4);
    char *typo = strstr(mil, "y = x");
    memcpy(typo, "y = q", 5); /* an undefined variable */
    size_t bytes = 32;
    ANEKernelHandle *k = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    CHECK(k == NULL, "compile returns NULL");
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_E_COMPILE, "code is ANE_BRIDGE_E_COMPILE");
    /* The undefined `q` sits on line 6 (the header takes 3 lines, `{` the third). */
    int line_no = 1, col = 1;
    for (const char *p = mil; p < typo + 4; p++) {
        if (*p == '\n') { line_no++; col = 1; } else { col++; }
    }
    char where[64];
    snprintf(where, sizeof where, "model.mil:%d:%d: error[E100]", line_no, col);
    CHECK(strstr(ane_bridge_last_error(), where) != NULL, "the message has model.mil:line:col");
    printf("     %s\n", where);
    CHECK(ane_bridge_last_error_diagnostic_count() >= 1, "diagnostics are available");
    int line = 0, column = 0;
    const char *code = NULL, *msg = NULL;
    int found = 0;
    for (int i = 0; i < ane_bridge_last_error_diagnostic_count(); i++) {
        if (ane_bridge_last_error_diagnostic(i, &line, &column, &code, &msg) == ANE_BRIDGE_OK &&
            strcmp(code, "E100") == 0 && line == line_no && column == col && strstr(msg, "q"))
            found = 1;
    }
    CHECK(found, "diagnostic E100 at the right line and column");
    CHECK(ane_bridge_last_error_diagnostic(1000, &line, NULL, NULL, NULL) ==
              ANE_BRIDGE_E_INVALID_ARGUMENT,
          "diagnostic index out of range");
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_E_COMPILE,
          "the accessors do not clear the error");

    const char garbage[] = "program(1.3) { func main<ios18>( -> ;";
    CHECK(ane_bridge_compile(garbage, sizeof garbage - 1, NULL, 0, 0, NULL, 0, NULL) == NULL &&
              error_is(ANE_BRIDGE_E_COMPILE, "model.mil:1:"),
          "a syntax error");
    const char not_utf8[] = "program(1.3) {\xff}";
    CHECK(ane_bridge_compile(not_utf8, sizeof not_utf8 - 1, NULL, 0, 0, NULL, 0, NULL) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "not valid utf-8 at byte 14"),
          "MIL text that is not UTF-8");

    /* Any successful call clears the error. */
    CHECK(ane_bridge_get_compile_count() >= 0 && ane_bridge_last_error_code() == ANE_BRIDGE_OK &&
              ane_bridge_last_error_message()[0] == '\0' && ane_bridge_last_error_diagnostic_count() == 0,
          "the next successful call clears the last error");
    free(mil);
}

static void precision_from_the_environment(void) {
    printf("[6] ANE_BRIDGE_PRECISION\n");
    char *mil = mil_scale2(4, 4);
    size_t bytes = 32;
    setenv("ANE_BRIDGE_PRECISION", "turbo", 1);
    CHECK(ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes) == NULL &&
              error_is(ANE_BRIDGE_E_INVALID_ARGUMENT, "ANE_BRIDGE_PRECISION=`turbo`"),
          "an unknown precision is refused by name");
    setenv("ANE_BRIDGE_PRECISION", "fast", 1);
    ANEKernelHandle *k = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    CHECK(k != NULL, "precision fast compiles");
    uint16_t buf[16];
    fill_half(buf, 1.5f, 16);
    ane_bridge_write_input(k, 0, buf, bytes);
    CHECK(ane_bridge_eval(k), "and evaluates");
    ane_bridge_read_output(k, 0, buf, bytes);
    CHECK(sum_half(buf, 16) == 48.0, "with the same result for an add");
    ane_bridge_free(k);
    unsetenv("ANE_BRIDGE_PRECISION");
    free(mil);
}

int main(void) {
    setenv("ANE_BRIDGE_CACHE", "0", 1);
    null_handles();
    null_pointers();
    bad_indices();
    wrong_sizes();
    invalid_mil();
    precision_from_the_environment();
    return finish("test_misuse");
}
