/* The call sequence of maderix/ANE pull request #22's bridge test, rewritten for Linux:
 * dynamic weights rewritten without recompiling, fp32 weight writes, kernel chaining with
 * copy_io, eval inside real-time mode, and a compile-cache hit that leaves the compile count
 * alone. Uses its own temporary cache directory. */
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>

#include "common.h"

enum { N = 64, K = 64, M = 64 };

static ANEKernelHandle *g_kernel = NULL;

static void step_init(void) {
    printf("[1] init\n");
    CHECK(ane_bridge_init() == 0, "ane_bridge_init returns 0");
    CHECK(ane_bridge_init() == 0, "a second init is harmless");
}

static void step_compile_dyn(void) {
    printf("[2] compile_dyn: x[1,K,1,M] activation, W[1,N,K] weight\n");
    char *mil = mil_dyn_matmul(N, K, M);
    size_t x_bytes = (size_t)K * M * 2, w_bytes = (size_t)N * K * 2, out_bytes = (size_t)N * M * 2;
    g_kernel = ane_bridge_compile_dyn(mil, strlen(mil), 1, &x_bytes, 1, &w_bytes, out_bytes);
    CHECK(g_kernel != NULL, "compile_dyn returns a kernel");
    int n_in = -1, n_w = -1, n_out = -1;
    CHECK(ane_bridge_io_counts(g_kernel, &n_in, &n_w, &n_out) == ANE_BRIDGE_OK && n_in == 1 &&
              n_w == 1 && n_out == 1,
          "one input, one weight, one output");
    free(mil);
}

static double eval_and_sum(ANEKernelHandle *kernel, size_t count) {
    uint16_t *out = calloc(count, 2);
    bool ok = ane_bridge_eval(kernel);
    ane_bridge_read_output(kernel, 0, out, count * 2);
    double total = ok ? sum_half(out, count) : -1.0;
    free(out);
    return total;
}

static void step_weight_rewrite(void) {
    printf("[3] rewrite the weight without recompiling: identity, then twice the identity\n");
    if (!g_kernel) { CHECK(0, "kernel from step 2"); return; }
    uint16_t *x = malloc((size_t)K * M * 2);
    uint16_t *w1 = calloc((size_t)N * K, 2);
    uint16_t *w2 = calloc((size_t)N * K, 2);
    fill_half(x, 1.0f, (size_t)K * M);
    for (int i = 0; i < N && i < K; i++) {
        w1[i * K + i] = to_half(1.0f);
        w2[i * K + i] = to_half(2.0f);
    }
    int compiles = ane_bridge_get_compile_count();
    ane_bridge_write_input(g_kernel, 0, x, (size_t)K * M * 2);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "write_input accepted");
    ane_bridge_write_weight(g_kernel, 0, w1, (size_t)N * K * 2);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "write_weight accepted");
    double sum1 = eval_and_sum(g_kernel, (size_t)N * M);
    CHECK(sum1 == (double)N * M, "identity weight: output sum is N*M");

    ane_bridge_write_weight(g_kernel, 0, w2, (size_t)N * K * 2);
    double sum2 = eval_and_sum(g_kernel, (size_t)N * M);
    printf("     sums: identity %.1f, twice %.1f, ratio %.3f\n", sum1, sum2, sum2 / sum1);
    CHECK(sum2 == 2.0 * sum1, "the output sum doubles after the weight rewrite");
    CHECK(ane_bridge_get_compile_count() == compiles, "no compile happened");
    free(x); free(w1); free(w2);
}

static void step_weight_f32(void) {
    printf("[4] write_weight_f32: three times the identity, converted to fp16\n");
    if (!g_kernel) { CHECK(0, "kernel from step 2"); return; }
    float *w = calloc((size_t)N * K, sizeof(float));
    for (int i = 0; i < N && i < K; i++) w[i * K + i] = 3.0f;
    ane_bridge_write_weight_f32(g_kernel, 0, w, (size_t)N * K);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "write_weight_f32 accepted");
    double total = eval_and_sum(g_kernel, (size_t)N * M);
    CHECK(total == 3.0 * N * M, "output sum is 3*N*M");
    free(w);
}

static void step_copy_io(void) {
    printf("[5] copy_io: two x+x kernels chained, 1 -> 2 -> 4\n");
    int rows = 32, cols = 32;
    char *mil = mil_scale2(rows, cols);
    size_t bytes = (size_t)rows * cols * 2;
    ANEKernelHandle *first = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    ANEKernelHandle *second = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    CHECK(first != NULL && second != NULL, "both kernels compiled");
    uint16_t *buf = malloc(bytes);
    fill_half(buf, 1.0f, (size_t)rows * cols);
    ane_bridge_write_input(first, 0, buf, bytes);
    CHECK(ane_bridge_eval(first), "first eval");
    ane_bridge_copy_io(first, 0, second, 0);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "copy_io accepted");
    CHECK(ane_bridge_eval(second), "second eval");
    memset(buf, 0, bytes);
    ane_bridge_read_output(second, 0, buf, bytes);
    int all_four = 1;
    for (int i = 0; i < rows * cols; i++) all_four &= from_half(buf[i]) == 4.0f;
    CHECK(all_four, "every output element is 4");
    free(buf);
    free(mil);
    ane_bridge_free(first);
    ane_bridge_free(second);
}

static void step_realtime(void) {
    printf("[6] eval inside begin/end realtime\n");
    if (!g_kernel) { CHECK(0, "kernel from step 2"); return; }
    ane_bridge_begin_realtime();
    ane_bridge_realtime_status_t status;
    CHECK(ane_bridge_realtime_status(&status) == ANE_BRIDGE_OK && status.active == 1,
          "real-time mode is active");
    printf("     threads %d, fifo %d (priority %d), pinned %d, memory locked %d, spinning %d\n",
           status.threads, status.fifo_threads, status.fifo_priority, status.pinned_threads,
           status.memory_locked, status.spinning);
    if (status.fallbacks[0]) printf("     fallbacks: %s\n", status.fallbacks);
    bool ok = ane_bridge_eval(g_kernel);
    ane_bridge_end_realtime();
    CHECK(ok, "eval inside real-time mode succeeds");
    CHECK(ane_bridge_realtime_status(&status) == ANE_BRIDGE_OK && status.active == 0 &&
              status.spinning == 0,
          "real-time mode ended");
    CHECK(eval_and_sum(g_kernel, (size_t)N * M) == 3.0 * N * M, "results unchanged");
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        size_t len = strlen(entry->d_name);
        if (len > 5 && strcmp(entry->d_name + len - 5, ".plan") == 0) n++;
    }
    closedir(d);
    return n;
}

static void step_cache(const char *cache_dir) {
    printf("[7] compile cache: compile, free, compile the same program again\n");
    char *mil = mil_scale2(48, 16);
    size_t bytes = 48 * 16 * 2;
    int before_cold = ane_bridge_get_compile_count();
    int entries_before = count_entries(cache_dir);
    ANEKernelHandle *k = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    CHECK(k != NULL, "first compile");
    CHECK(ane_bridge_get_compile_count() == before_cold + 1, "a cold compile is counted");
    CHECK(count_entries(cache_dir) == entries_before + 1, "the plan was written to the cache");
    ane_bridge_free(k);

    int before = ane_bridge_get_compile_count();
    ANEKernelHandle *again = ane_bridge_compile_dyn(mil, strlen(mil), 1, &bytes, 0, NULL, bytes);
    int after = ane_bridge_get_compile_count();
    CHECK(again != NULL, "the cache hit returns a kernel");
    CHECK(after == before, "the cache hit does not increment the compile count");
    uint16_t *buf = malloc(bytes);
    fill_half(buf, 0.5f, 48 * 16);
    ane_bridge_write_input(again, 0, buf, bytes);
    CHECK(ane_bridge_eval(again), "the cached kernel evaluates");
    ane_bridge_read_output(again, 0, buf, bytes);
    CHECK(sum_half(buf, 48 * 16) == 48.0 * 16.0, "and computes x + x");
    ane_bridge_free(again);

    ane_bridge_reset_compile_count();
    CHECK(ane_bridge_get_compile_count() == 0, "reset_compile_count");
    free(buf);
    free(mil);
}

static void step_free(void) {
    printf("[8] free\n");
    ane_bridge_free(g_kernel);
    g_kernel = NULL;
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "free succeeds");
    ane_bridge_free(NULL);
    CHECK(ane_bridge_last_error_code() == ANE_BRIDGE_OK, "free(NULL) is a no-op");
}

int main(void) {
    char cache_dir[] = "/tmp/ane_bridge_c_cache_XXXXXX";
    if (!mkdtemp(cache_dir)) { perror("mkdtemp"); return 2; }
    setenv("ANE_BRIDGE_CACHE_DIR", cache_dir, 1);
    unsetenv("ANE_BRIDGE_CACHE");

    step_init();
    step_compile_dyn();
    step_weight_rewrite();
    step_weight_f32();
    step_copy_io();
    step_realtime();
    step_cache(cache_dir);
    step_free();

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cache_dir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", cache_dir);
    return finish("test_bridge");
}
