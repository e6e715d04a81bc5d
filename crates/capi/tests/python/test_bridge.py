"""The PR #22 bridge test sequence and the misuse checks, through ctypes (standard library only).

Usage: python3 test_bridge.py [path/to/libane_bridge.so]
(default: the ANE_BRIDGE_LIB environment variable). Exits 0 when every check passes.
"""

import ctypes
import os
import re
import struct
import sys
import tempfile

passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"  ok   {what}")
    else:
        failed += 1
        print(f"  FAIL {what} (last error: {last_error()})")


def load(path):
    lib = ctypes.CDLL(path)
    c_size_p = ctypes.POINTER(ctypes.c_size_t)
    handle = ctypes.c_void_p
    sigs = {
        "ane_bridge_init": (ctypes.c_int, []),
        "ane_bridge_compile": (handle, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_int, c_size_p, ctypes.c_int, c_size_p]),
        "ane_bridge_compile_dyn": (handle, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, c_size_p,
                                            ctypes.c_int, c_size_p, ctypes.c_size_t]),
        "ane_bridge_eval": (ctypes.c_bool, [handle]),
        "ane_bridge_write_input": (None, [handle, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]),
        "ane_bridge_read_output": (None, [handle, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]),
        "ane_bridge_write_weight": (None, [handle, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]),
        "ane_bridge_write_weight_f32": (None, [handle, ctypes.c_int, ctypes.POINTER(ctypes.c_float),
                                               ctypes.c_size_t]),
        "ane_bridge_copy_io": (None, [handle, ctypes.c_int, handle, ctypes.c_int]),
        "ane_bridge_bind_input": (ctypes.c_int, [handle, ctypes.c_int, handle, ctypes.c_int]),
        "ane_bridge_begin_realtime": (None, []),
        "ane_bridge_end_realtime": (None, []),
        "ane_bridge_free": (None, [handle]),
        "ane_bridge_get_compile_count": (ctypes.c_int, []),
        "ane_bridge_reset_compile_count": (None, []),
        "ane_bridge_build_weight_blob": (ctypes.POINTER(ctypes.c_uint8),
                                         [ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int, c_size_p]),
        "ane_bridge_free_blob": (None, [ctypes.c_void_p]),
        "ane_bridge_last_error": (ctypes.c_char_p, []),
        "ane_bridge_last_error_code": (ctypes.c_int, []),
        "ane_bridge_last_error_diagnostic_count": (ctypes.c_int, []),
        "ane_bridge_last_error_diagnostic": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                                            ctypes.POINTER(ctypes.c_int),
                                                            ctypes.POINTER(ctypes.c_char_p),
                                                            ctypes.POINTER(ctypes.c_char_p)]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


LIB = None
E_INVALID_ARGUMENT, E_COMPILE, E_SHAPE = -1, -2, -3


def last_error():
    if LIB is None:
        return ""
    return LIB.ane_bridge_last_error().decode()


HEADER = (
    'program(1.3)\n[buildInfo = dict<string, string>({{"coremlc-component-MIL", "3510.2.1"}, '
    '{"coremlc-version", "3505.4.1"}, {"coremltools-component-milinternal", ""}, '
    '{"coremltools-version", "9.0"}})]\n{\n'
)


def mil_dyn_matmul(n, k, m):
    return (
        HEADER
        + f"    func main<ios18>(tensor<fp16, [1, {k}, 1, {m}]> x, tensor<fp16, [1, {n}, {k}]> W) {{\n"
        + f'        tensor<int32, [3]> sh = const()[name = string("sh"), val = tensor<int32, [3]>([1, {k}, {m}])];\n'
        + f'        tensor<fp16, [1, {k}, {m}]> x3 = reshape(shape = sh, x = x)[name = string("rx")];\n'
        + '        bool bF = const()[name = string("bF"), val = bool(false)];\n'
        + f"        tensor<fp16, [1, {n}, {m}]> out = matmul(transpose_x = bF, transpose_y = bF, x = W, y = x3)"
        + '[name = string("mm")];\n'
        + "    } -> (out);\n}\n"
    ).encode()


def mil_scale2(rows, cols):
    return (
        HEADER
        + f"    func main<ios18>(tensor<fp16, [1, {rows}, 1, {cols}]> x) {{\n"
        + f'        tensor<fp16, [1, {rows}, 1, {cols}]> out = add(x = x, y = x)[name = string("out")];\n'
        + "    } -> (out);\n}\n"
    ).encode()


def half_bytes(values):
    return struct.pack(f"<{len(values)}e", *values)


def half_values(raw):
    return struct.unpack(f"<{len(raw) // 2}e", raw)


def sizes(*values):
    return (ctypes.c_size_t * len(values))(*values)


def compile_dyn(mil, inputs, weights, output):
    ins = sizes(*inputs) if inputs else None
    ws = sizes(*weights) if weights else None
    return LIB.ane_bridge_compile_dyn(mil, len(mil), len(inputs), ins, len(weights), ws, output)


def read_output(kernel, idx, nbytes):
    buf = ctypes.create_string_buffer(nbytes)
    LIB.ane_bridge_read_output(kernel, idx, buf, nbytes)
    return buf.raw


def pr22_sequence(cache_dir):
    n = k = m = 64
    print("[1] init")
    check(LIB.ane_bridge_init() == 0, "init returns 0")

    print("[2] compile_dyn")
    kernel = compile_dyn(mil_dyn_matmul(n, k, m), [2 * k * m], [2 * n * k], 2 * n * m)
    check(bool(kernel), "compile_dyn returns a kernel")

    print("[3] weight rewrite without recompiling")
    x = half_bytes([1.0] * (k * m))
    ident = [0.0] * (n * k)
    for i in range(min(n, k)):
        ident[i * k + i] = 1.0
    LIB.ane_bridge_write_input(kernel, 0, x, len(x))
    w1 = half_bytes(ident)
    LIB.ane_bridge_write_weight(kernel, 0, w1, len(w1))
    check(LIB.ane_bridge_eval(kernel), "eval with the identity weight")
    sum1 = sum(half_values(read_output(kernel, 0, 2 * n * m)))
    count = LIB.ane_bridge_get_compile_count()
    w2 = half_bytes([2.0 * v for v in ident])
    LIB.ane_bridge_write_weight(kernel, 0, w2, len(w2))
    check(LIB.ane_bridge_eval(kernel), "eval after the rewrite")
    sum2 = sum(half_values(read_output(kernel, 0, 2 * n * m)))
    check(sum1 == n * m and sum2 == 2 * sum1, f"output sum doubles ({sum1} -> {sum2})")
    check(LIB.ane_bridge_get_compile_count() == count, "no recompile")

    print("[4] write_weight_f32")
    w3 = (ctypes.c_float * (n * k))(*[3.0 * v for v in ident])
    LIB.ane_bridge_write_weight_f32(kernel, 0, w3, n * k)
    check(LIB.ane_bridge_eval(kernel), "eval with the fp32-written weight")
    check(sum(half_values(read_output(kernel, 0, 2 * n * m))) == 3 * n * m, "sum is 3*N*M")

    print("[5] copy_io chain")
    mil = mil_scale2(32, 32)
    nbytes = 32 * 32 * 2
    k1 = compile_dyn(mil, [nbytes], [], nbytes)
    k2 = compile_dyn(mil, [nbytes], [], nbytes)
    check(bool(k1) and bool(k2), "two x+x kernels")
    ones = half_bytes([1.0] * (32 * 32))
    LIB.ane_bridge_write_input(k1, 0, ones, nbytes)
    LIB.ane_bridge_eval(k1)
    LIB.ane_bridge_copy_io(k1, 0, k2, 0)
    LIB.ane_bridge_eval(k2)
    check(set(half_values(read_output(k2, 0, nbytes))) == {4.0}, "1 -> 2 -> 4")
    k3 = compile_dyn(mil, [nbytes], [], nbytes)
    check(LIB.ane_bridge_bind_input(k3, 0, k2, 0) == 0, "bind_input (zero copy)")
    LIB.ane_bridge_eval(k3)
    check(set(half_values(read_output(k3, 0, nbytes))) == {8.0}, "4 -> 8 through the shared surface")
    for kk in (k1, k2, k3):
        LIB.ane_bridge_free(kk)

    print("[6] realtime")
    LIB.ane_bridge_begin_realtime()
    ok = LIB.ane_bridge_eval(kernel)
    LIB.ane_bridge_end_realtime()
    check(ok, "eval inside begin/end realtime")

    print("[7] compile cache")
    mil = mil_scale2(40, 8)
    nbytes = 40 * 8 * 2
    before = LIB.ane_bridge_get_compile_count()
    first = compile_dyn(mil, [nbytes], [], nbytes)
    check(bool(first) and LIB.ane_bridge_get_compile_count() == before + 1, "a cold compile counts")
    entries = [name for name in os.listdir(cache_dir) if name.endswith(".plan")]
    check(len(entries) >= 1, f"cache entries written to {cache_dir}")
    LIB.ane_bridge_free(first)
    before = LIB.ane_bridge_get_compile_count()
    again = compile_dyn(mil, [nbytes], [], nbytes)
    check(bool(again), "the cache hit returns a kernel")
    check(LIB.ane_bridge_get_compile_count() == before, "the cache hit does not increment the count")
    LIB.ane_bridge_free(again)

    print("[8] free")
    LIB.ane_bridge_free(kernel)
    LIB.ane_bridge_free(None)
    check(LIB.ane_bridge_last_error_code() == 0, "free and free(NULL)")


def misuse():
    print("[9] misuse")
    check(not LIB.ane_bridge_eval(None) and LIB.ane_bridge_last_error_code() == E_INVALID_ARGUMENT,
          "eval(NULL) is false with INVALID_ARGUMENT")
    check("kernel is NULL" in last_error(), "the message names the argument")
    mil = mil_scale2(4, 4)
    kernel = compile_dyn(mil, [32], [], 32)
    LIB.ane_bridge_write_input(kernel, 3, b"\0" * 32, 32)
    check(LIB.ane_bridge_last_error_code() == E_INVALID_ARGUMENT and "input index 3" in last_error(),
          "bad input index")
    LIB.ane_bridge_write_input(kernel, 0, b"\0" * 30, 30)
    check(LIB.ane_bridge_last_error_code() == E_SHAPE and "32 bytes but 30" in last_error(), "short write")
    LIB.ane_bridge_read_output(kernel, 0, None, 32)
    check(LIB.ane_bridge_last_error_code() == E_INVALID_ARGUMENT, "read into NULL")
    check(not compile_dyn(mil, [30], [], 32) and LIB.ane_bridge_last_error_code() == E_SHAPE,
          "compile_dyn with a wrong input size")
    LIB.ane_bridge_free(kernel)

    bad = mil.replace(b"y = x", b"y = zz")
    check(not compile_dyn(bad, [32], [], 32), "invalid MIL returns NULL")
    check(LIB.ane_bridge_last_error_code() == E_COMPILE, "ANE_BRIDGE_E_COMPILE")
    check(re.search(r"model\.mil:\d+:\d+: error\[E100\]", last_error()) is not None,
          "last_error has model.mil:line:col")
    line, col = ctypes.c_int(), ctypes.c_int()
    code, msg = ctypes.c_char_p(), ctypes.c_char_p()
    rc = LIB.ane_bridge_last_error_diagnostic(0, ctypes.byref(line), ctypes.byref(col), ctypes.byref(code),
                                              ctypes.byref(msg))
    text = bad.decode()
    offset = text.index("zz")
    want_line = text.count("\n", 0, offset) + 1
    want_col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    check(rc == 0 and code.value == b"E100" and (line.value, col.value) == (want_line, want_col),
          f"diagnostic 0 is E100 at {want_line}:{want_col}")

    out_len = ctypes.c_size_t(0)
    weights = (ctypes.c_float * 4)(1.0, 2.0, 3.0, 4.0)
    blob = LIB.ane_bridge_build_weight_blob(weights, 2, 2, ctypes.byref(out_len))
    check(bool(blob) and out_len.value == 136, "build_weight_blob: 128 + 8 bytes")
    check(struct.unpack("<4e", bytes(blob[128:136])) == (1.0, 2.0, 3.0, 4.0), "fp16 payload")
    LIB.ane_bridge_free_blob(blob)
    check(not LIB.ane_bridge_build_weight_blob(None, 2, 2, ctypes.byref(out_len)), "NULL src")


def main():
    global LIB
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ANE_BRIDGE_LIB", "")
    if not path:
        print("usage: test_bridge.py path/to/libane_bridge.so")
        return 2
    with tempfile.TemporaryDirectory(prefix="ane_bridge_py_cache_") as cache_dir:
        os.environ["ANE_BRIDGE_CACHE_DIR"] = cache_dir
        os.environ.pop("ANE_BRIDGE_CACHE", None)
        LIB = load(path)
        pr22_sequence(cache_dir)
        misuse()
    print(f"test_bridge.py: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
