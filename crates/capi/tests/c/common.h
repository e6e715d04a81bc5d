/* Helpers shared by the C tests: a tiny check framework, fp16 conversion, MIL text builders. */
#ifndef MILBRIDGE_TEST_COMMON_H
#define MILBRIDGE_TEST_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ane_bridge.h"

static int g_passed = 0, g_failed = 0;

#define CHECK(cond, what)                                                                  \
    do {                                                                                   \
        if (cond) {                                                                        \
            g_passed++;                                                                    \
            printf("  ok   %s\n", what);                                                  \
        } else {                                                                           \
            g_failed++;                                                                    \
            printf("  FAIL %s (%s:%d) last error: %s\n", what, __FILE__, __LINE__,        \
                   ane_bridge_last_error());                                               \
        }                                                                                  \
    } while (0)

static inline int finish(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

/* IEEE binary16 from float, round to nearest even (finite inputs in range are all we need,
 * but overflow and NaN are handled too). */
static inline uint16_t to_half(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    uint32_t sign = (bits >> 16) & 0x8000u;
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);           /* NaN */
    if (abs >= 0x47800000u) return (uint16_t)(sign | 0x7c00u);          /* overflow -> inf */
    if (abs < 0x38800000u) {                                             /* subnormal or zero */
        float scaled = fabsf(value) * 16777216.0f;                       /* 2^24 */
        uint32_t q = (uint32_t)scaled;
        float rest = scaled - (float)q;
        if (rest > 0.5f || (rest == 0.5f && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t exp = ((abs >> 23) - 112u) << 10;
    uint32_t mant = (abs >> 13) & 0x3ffu;
    uint32_t half = sign | exp | mant;
    uint32_t round = abs & 0x1fffu;
    if (round > 0x1000u || (round == 0x1000u && (half & 1u))) half++;
    return (uint16_t)half;
}

static inline float from_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    float value;
    if (exp == 0) {
        value = (float)mant / 16777216.0f;
    } else if (exp == 31) {
        value = mant ? NAN : INFINITY;
    } else {
        uint32_t bits = ((exp + 112u) << 23) | (mant << 13);
        memcpy(&value, &bits, 4);
    }
    return sign ? -value : value;
}

static inline void fill_half(uint16_t *dst, float value, size_t count) {
    uint16_t bits = to_half(value);
    for (size_t i = 0; i < count; i++) dst[i] = bits;
}

static inline double sum_half(const uint16_t *src, size_t count) {
    double total = 0.0;
    for (size_t i = 0; i < count; i++) total += from_half(src[i]);
    return total;
}

#define MIL_HEADER                                                                            \
    "program(1.3)\n"                                                                          \
    "[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, "          \
    "{\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, "    \
    "{\"coremltools-version\", \"9.0\"}})]\n{\n"

/* out[1,n,m] = W[1,n,k] @ reshape(x[1,k,1,m]): activation first, weight second. */
static inline char *mil_dyn_matmul(int n, int k, int m) {
    char *text = malloc(4096);
    snprintf(text, 4096,
             MIL_HEADER
             "    func main<ios18>(tensor<fp16, [1, %d, 1, %d]> x, tensor<fp16, [1, %d, %d]> W) {\n"
             "        tensor<int32, [3]> sh = const()[name = string(\"sh\"), val = tensor<int32, [3]>([1, %d, %d])];\n"
             "        tensor<fp16, [1, %d, %d]> x3 = reshape(shape = sh, x = x)[name = string(\"rx\")];\n"
             "        bool bF = const()[name = string(\"bF\"), val = bool(false)];\n"
             "        tensor<fp16, [1, %d, %d]> out = matmul(transpose_x = bF, transpose_y = bF, x = W, y = x3)[name = string(\"mm\")];\n"
             "    } -> (out);\n}\n",
             k, m, n, k, k, m, k, m, n, m);
    return text;
}

/* out = x + x over [1, rows, 1, cols]. */
static inline char *mil_scale2(int rows, int cols) {
    char *text = malloc(2048);
    snprintf(text, 2048,
             MIL_HEADER
             "    func main<ios18>(tensor<fp16, [1, %d, 1, %d]> x) {\n"
             "        tensor<fp16, [1, %d, 1, %d]> out = add(x = x, y = x)[name = string(\"out\")];\n"
             "    } -> (out);\n}\n",
             rows, cols, rows, cols);
    return text;
}

/* sum = x + w and prod = x * w over [1, c, 1, s]: one input, one weight, two outputs. */
static inline char *mil_add_mul(int c, int s) {
    char *text = malloc(2048);
    snprintf(text, 2048,
             MIL_HEADER
             "    func main<ios18>(tensor<fp16, [1, %d, 1, %d]> x, tensor<fp16, [1, %d, 1, %d]> w) {\n"
             "        tensor<fp16, [1, %d, 1, %d]> sum = add(x = x, y = w)[name = string(\"sum\")];\n"
             "        tensor<fp16, [1, %d, 1, %d]> prod = mul(x = x, y = w)[name = string(\"prod\")];\n"
             "    } -> (sum, prod);\n}\n",
             c, s, c, s, c, s, c, s);
    return text;
}

/* y[1,co,1,s] = conv1x1(x[1,ci,1,s]) with W[co,ci,1,1] from @model_path/weights/<file>. */
static inline char *mil_conv_blob(int ci, int co, int s, const char *file) {
    char *text = malloc(4096);
    snprintf(text, 4096,
             MIL_HEADER
             "    func main<ios18>(tensor<fp16, [1, %d, 1, %d]> x) {\n"
             "        string pt = const()[name = string(\"pt\"), val = string(\"valid\")];\n"
             "        tensor<int32, [2]> st = const()[name = string(\"st\"), val = tensor<int32, [2]>([1, 1])];\n"
             "        tensor<int32, [4]> pd = const()[name = string(\"pd\"), val = tensor<int32, [4]>([0, 0, 0, 0])];\n"
             "        tensor<int32, [2]> dl = const()[name = string(\"dl\"), val = tensor<int32, [2]>([1, 1])];\n"
             "        int32 gr = const()[name = string(\"gr\"), val = int32(1)];\n"
             "        tensor<fp16, [%d, %d, 1, 1]> W = const()[name = string(\"W\"), val = tensor<fp16, [%d, %d, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/%s\"), offset = uint64(64)))];\n"
             "        tensor<fp16, [1, %d, 1, %d]> y = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = W, x = x)[name = string(\"conv\")];\n"
             "    } -> (y);\n}\n",
             ci, s, co, ci, co, ci, file, co, s);
    return text;
}

#endif
