#!/usr/bin/env python3
"""Generates the reference interpreter's conformance vectors with NumPy.

Usage: python3 gen.py   (writes *.vec next to this file; needs numpy, nothing else)

Every expected value is computed in float64 (or exact Python integers) straight from the
formulas of mil-spec section 6, then cast once to the output dtype (NumPy's float64 -> float16
and float64 -> float32 conversions round to nearest even). The Rust side
(`crates/engine/tests/reference_vectors.rs`) turns each case into a MIL program, verifies it and
evaluates it with the reference; floats must agree within 1 ulp of the output dtype, integers and
bools exactly. The test itself needs no Python.

File format (one case per block, tokens separated by single spaces):

    case <name>
    op <mil op name>
    opset <ios15|ios16|ios17|ios18>
    attrs                                   (optional: const arguments go in the [...] block)
    in <name> <dtype> <shape> <values...>   (a function parameter: a run-time operand)
    const <name> <dtype> <shape> <values...> (an inline literal argument)
    tuple <name> <member> <member>...       (a tuple argument made of earlier in/const names)
    out <dtype> <shape> <values...>         (one per result, in order)
    err <code>                              (instead of out: the run-time error expected)
    end

`<shape>` is `2,3` or `-` for rank 0. Values are row-major; floats are Python `repr` of the
exact float64 value (`nan`, `inf`, `-inf`, `-0.0` included), integers decimal, bools
`true`/`false`, strings raw (no spaces).
"""

import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(20240607)

INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
}
FLOATS = ("fp16", "fp32")


# ----------------------------------------------------------------------------------------------
# dtype helpers


def store(dtype, values):
    """Rounds exact float64 results (or wraps exact integers) to `dtype`; returns float64/int."""
    arr = np.asarray(values)
    with np.errstate(all="ignore"):
        if dtype == "fp16":
            return np.asarray(arr, dtype=np.float64).astype(np.float16).astype(np.float64)
        if dtype == "fp32":
            return np.asarray(arr, dtype=np.float64).astype(np.float32).astype(np.float64)
        if dtype == "bool":
            return np.asarray(arr != 0, dtype=bool)
    lo, hi = INT_RANGES[dtype]
    mod = hi - lo + 1
    flat = [((int(v) - lo) % mod) + lo for v in np.asarray(arr, dtype=object).ravel()]
    return np.array(flat, dtype=object).reshape(arr.shape)


def rand_float(dtype, shape, lo=-3.0, hi=3.0):
    return store(dtype, RNG.uniform(lo, hi, size=shape))


def rand_int(shape, lo, hi):
    return np.array(RNG.integers(lo, hi, size=shape, endpoint=True), dtype=object)


def fmt_value(dtype, v):
    if dtype == "bool":
        return "true" if bool(v) else "false"
    if dtype == "string":
        return str(v)
    if dtype in FLOATS:
        return repr(float(v))
    return str(int(v))


def fmt_shape(shape):
    return ",".join(str(d) for d in shape) if len(shape) else "-"


def as_array(dtype, values):
    if dtype == "string":
        return np.array(values, dtype=object)
    if dtype in FLOATS:
        return np.asarray(values, dtype=np.float64)
    if dtype == "bool":
        return np.asarray(values, dtype=bool)
    return np.asarray(values, dtype=object)


# ----------------------------------------------------------------------------------------------
# cases


class Case:
    def __init__(self, name, op, opset="ios18", attrs=False):
        self.lines = [f"case {name}", f"op {op}", f"opset {opset}"]
        if attrs:
            self.lines.append("attrs")

    def _tensor(self, kind, name, dtype, values):
        arr = as_array(dtype, values)
        vals = " ".join(fmt_value(dtype, v) for v in arr.ravel())
        head = f"{kind} {name} {dtype} {fmt_shape(arr.shape)}" if name else f"{kind} {dtype} {fmt_shape(arr.shape)}"
        self.lines.append(f"{head} {vals}".rstrip())
        return self

    def inp(self, name, dtype, values):
        return self._tensor("in", name, dtype, values)

    def const(self, name, dtype, values):
        return self._tensor("const", name, dtype, values)

    def tuple(self, name, *members):
        self.lines.append(f"tuple {name} " + " ".join(members))
        return self

    def out(self, dtype, values):
        return self._tensor("out", None, dtype, values)

    def err(self, code, dtype, shape):
        """A case whose evaluation fails with run-time error `code`; the result type is declared."""
        self._tensor("out", None, dtype, np.zeros(shape, dtype=object if dtype not in FLOATS else np.float64))
        self.lines.append(f"err {code}")
        return self

    def text(self):
        return "\n".join(self.lines + ["end"]) + "\n"


FILES = {}


def add(file, case):
    FILES.setdefault(file, []).append(case)


# ----------------------------------------------------------------------------------------------
# reference formulas (float64 / exact integers)


def ieee_max(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    out = np.where(a > b, a, b)
    out = np.where((a == b) & ~np.signbit(a), a, out)
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


def ieee_min(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    out = np.where(a < b, a, b)
    out = np.where((a == b) & np.signbit(a), a, out)
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


def sigmoid(x):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        pos = 1.0 / (1.0 + np.exp(-x))
        e = np.exp(x)
        neg = e / (1.0 + e)
    return np.where(x >= 0, pos, neg)


def binary_float(op, x, y):
    with np.errstate(all="ignore"):
        if op == "add":
            return x + y
        if op == "sub":
            return x - y
        if op == "mul":
            return x * y
        if op == "real_div":
            return x / y
        if op == "pow":
            return np.power(x, y)
        if op == "maximum":
            return ieee_max(x, y)
        if op == "minimum":
            return ieee_min(x, y)
    raise ValueError(op)


def trunc_div(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def binary_int(op, x, y):
    x, y = np.broadcast_arrays(np.asarray(x, dtype=object), np.asarray(y, dtype=object))
    fn = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "real_div": trunc_div,
        "pow": lambda a, b: a**b,
        "maximum": max,
        "minimum": min,
    }[op]
    flat = [fn(int(a), int(b)) for a, b in zip(x.ravel(), y.ravel())]
    return np.array(flat, dtype=object).reshape(x.shape)


def unary_float(op, x, eps=0.0, mode=None):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        if op == "abs":
            return np.abs(x)
        if op == "square":
            return x * x
        if op == "sqrt":
            return np.sqrt(x)
        if op == "exp":
            return np.exp(x)
        if op == "erf":
            return np.vectorize(math.erf, otypes=[np.float64])(x)
        if op == "tanh":
            return np.tanh(x)
        if op == "sigmoid":
            return sigmoid(x)
        if op == "relu":
            return np.where(np.isnan(x), x, np.where(x > 0, x, 0.0))
        if op == "silu":
            return x * sigmoid(x)
        if op == "rsqrt":
            return 1.0 / np.sqrt(x + eps)
        if op == "log":
            return np.log(x + eps)
        if op == "inverse":
            return 1.0 / (x + eps)
        if op == "gelu":
            if mode == "EXACT":
                erfc = np.vectorize(math.erfc, otypes=[np.float64])
                return 0.5 * x * erfc(-x / math.sqrt(2.0))
            if mode == "TANH_APPROXIMATION":
                u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
                return x * sigmoid(2.0 * u)
            return x * sigmoid(1.702 * x)
    raise ValueError(op)


def cast_values(src, dst, x):
    x = np.asarray(x)
    if dst in FLOATS:
        return store(dst, np.asarray(x, dtype=np.float64))
    if dst == "bool":
        return np.asarray(x, dtype=np.float64) != 0
    lo, hi = INT_RANGES[dst]
    if src in FLOATS:
        out = []
        for v in np.asarray(x, dtype=np.float64).ravel():
            if math.isnan(v):
                out.append(0)
            elif math.isinf(v):
                out.append(hi if v > 0 else lo)
            else:
                out.append(min(max(int(math.trunc(v)), lo), hi))
        return np.array(out, dtype=object).reshape(x.shape)
    return store(dst, np.asarray(x, dtype=object).astype(object) * 1)


def softmax(x, axis):
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def reduce_int(kind, x, axes, keep_dims):
    x = np.asarray(x, dtype=object)
    axes = tuple(sorted(axes))
    if kind == "reduce_sum":
        out = np.sum(x, axis=axes, keepdims=keep_dims)
    elif kind == "reduce_max":
        out = np.max(x, axis=axes, keepdims=keep_dims)
    else:
        total = np.sum(x, axis=axes, keepdims=keep_dims)
        count = int(np.prod([x.shape[a] for a in axes]))
        out = np.vectorize(lambda t: trunc_div(int(t), count), otypes=[object])(total)
    return np.asarray(out, dtype=object)


def matmul_ref(x, y, tx, ty):
    x = np.asarray(x)
    y = np.asarray(y)
    if tx and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if ty and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def conv_pads(pad_type, spatial_in, kernel, strides, dilations, custom):
    pads = []
    for s, size in enumerate(spatial_in):
        eff = (kernel[s] - 1) * dilations[s] + 1
        total = max(0, (math.ceil(size / strides[s]) - 1) * strides[s] + eff - size)
        if pad_type == "valid":
            pads.append((0, 0))
        elif pad_type == "custom":
            pads.append((custom[2 * s], custom[2 * s + 1]))
        elif pad_type == "same":
            pads.append((total // 2, total - total // 2))
        else:  # same_lower
            pads.append(((total + 1) // 2, total - (total + 1) // 2))
    return pads


def conv_ref(x, w, bias, strides, pad_type, pad, dilations, groups):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    spatial = x.ndim - 2
    kernel = w.shape[2:]
    pads = conv_pads(pad_type, x.shape[2:], kernel, strides, dilations, pad)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    out_sizes = [
        (x.shape[2 + s] + pads[s][0] + pads[s][1] - ((kernel[s] - 1) * dilations[s] + 1)) // strides[s] + 1
        for s in range(spatial)
    ]
    cig, cog = c_in // groups, c_out // groups
    out = np.zeros([n, c_out] + out_sizes)
    for b in range(n):
        for o in range(c_out):
            g = o // cog
            for pos in np.ndindex(*out_sizes):
                window = tuple(
                    slice(pos[s] * strides[s], pos[s] * strides[s] + (kernel[s] - 1) * dilations[s] + 1, dilations[s])
                    for s in range(spatial)
                )
                patch = xp[(b, slice(g * cig, (g + 1) * cig)) + window]
                out[(b, o) + pos] = np.sum(patch * w[o]) + (bias[o] if bias is not None else 0.0)
    return out


def layer_norm_ref(x, axes, gamma, beta, eps):
    x = np.asarray(x, np.float64)
    axes = tuple(sorted(axes))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    pshape = [x.shape[d] if d in axes else 1 for d in range(x.ndim)]
    if gamma is not None:
        out = out * np.asarray(gamma, np.float64).reshape(pshape)
    if beta is not None:
        out = out + np.asarray(beta, np.float64).reshape(pshape)
    return out


def sdpa_ref(q, k, v, mask=None, boolean=False):
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    with np.errstate(all="ignore"):
        scores = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
        if mask is not None:
            if boolean:
                scores = np.where(np.asarray(mask, bool), scores, -np.inf)
            else:
                scores = scores + np.asarray(mask, np.float64)
        return np.matmul(softmax(scores, -1), v)


def norm_axis(a, rank):
    return a + rank if a < 0 else a


# ----------------------------------------------------------------------------------------------
# generators


def gen_elementwise():
    f = "elementwise"
    for op in ("add", "sub", "mul", "real_div", "maximum", "minimum"):
        for dtype, xs, ys in (("fp16", (2, 3), (3,)), ("fp32", (2, 1, 4), (3, 1))):
            x = rand_float(dtype, xs)
            y = rand_float(dtype, ys)
            if op == "real_div":
                y = np.where(np.abs(y) < 0.1, 0.5, y)
            add(f, Case(f"{op}-{dtype}-broadcast", op).inp("x", dtype, x).inp("y", dtype, y)
                .out(dtype, store(dtype, binary_float(op, x, y))))
    # rank 0 with tensor (REPO `sub(x=one, y=sig)`), rank 5 with size-1 dims.
    x = np.float64(1.0)
    y = rand_float("fp16", (4,), 0, 1)
    add(f, Case("sub-fp16-scalar-minus-tensor", "sub").const("x", "fp16", x).inp("y", "fp16", y)
        .out("fp16", store("fp16", x - y)))
    x = rand_float("fp32", (2, 1, 3, 1, 2))
    y = rand_float("fp32", (1, 2, 1, 2, 1))
    add(f, Case("mul-fp32-rank5", "mul").inp("x", "fp32", x).inp("y", "fp32", y)
        .out("fp32", store("fp32", x * y)))
    # RMS-norm style [1, C, 1, S] * [1, 1, 1, S] and [1, C, 1, 1].
    x = rand_float("fp16", (1, 4, 1, 5))
    y = rand_float("fp16", (1, 1, 1, 5))
    add(f, Case("mul-fp16-rms-scale", "mul").inp("x", "fp16", x).inp("y", "fp16", y)
        .out("fp16", store("fp16", x * y)))
    # fp16 overflow, -65504 mask plus scores, subnormals.
    x = np.array([60000.0, -65504.0, 65504.0, 2.0**-14, 2.0**-24, 1.0], np.float64)
    y = np.array([10000.0, -16.0, 15.0, -(2.0**-15), 2.0**-24, 2.0**-11], np.float64)
    add(f, Case("add-fp16-overflow-subnormal-ties", "add").inp("x", "fp16", x).inp("y", "fp16", y)
        .out("fp16", store("fp16", x + y)))
    x = np.array([2.0**-12, 300.0, -300.0, 1e-3], np.float64)
    x = store("fp16", x)
    y = store("fp16", np.array([2.0**-12, 300.0, 300.0, 1e-3]))
    add(f, Case("mul-fp16-underflow-overflow", "mul").inp("x", "fp16", x).inp("y", "fp16", y)
        .out("fp16", store("fp16", x * y)))
    x = np.array([1.0, -1.0, 0.0, -0.0, np.inf, 3.0], np.float64)
    y = np.array([0.0, 0.0, 0.0, 2.0, np.inf, -0.0], np.float64)
    add(f, Case("real_div-fp32-zeros-inf", "real_div").inp("x", "fp32", x).inp("y", "fp32", y)
        .out("fp32", store("fp32", binary_float("real_div", x, y))))
    # pow: RMSNorm (mean + eps)^-0.5 and the C pow edge cases.
    x = store("fp16", RNG.uniform(0.001, 4.0, size=(6,)))
    add(f, Case("pow-fp16-rsqrt-style", "pow").inp("x", "fp16", x).const("y", "fp16", -0.5)
        .out("fp16", store("fp16", np.power(x, -0.5))))
    x = np.array([0.0, np.nan, -8.0, 2.0**-24, -2.0, 1.0, 0.0, -0.0], np.float64)
    y = np.array([-0.5, 0.0, 1.0 / 3.0, -0.5, 3.0, np.nan, 0.0, -1.0], np.float64)
    x, y = store("fp32", x), store("fp32", y)
    add(f, Case("pow-fp32-edges", "pow").inp("x", "fp32", x).inp("y", "fp32", y)
        .out("fp32", store("fp32", binary_float("pow", x, y))))
    # NaN propagation and signed zeros in maximum/minimum.
    x = np.array([np.nan, 1.0, -0.0, 0.0, -np.inf, 2.0], np.float64)
    y = np.array([1.0, np.nan, 0.0, -0.0, -3.0, np.inf], np.float64)
    for op in ("maximum", "minimum"):
        add(f, Case(f"{op}-fp16-nan-signed-zero", op).inp("x", "fp16", x).inp("y", "fp16", y)
            .out("fp16", store("fp16", binary_float(op, x, y))))
    # int32: wrap-around, truncating division, integer power.
    big = 2**31 - 1
    x = np.array([big, -big - 1, 7, -7, 65536, 3], dtype=object)
    y = np.array([1, -1, 2, 2, 65537, -4], dtype=object)
    # (int32 real_div is rejected by the verifier, E120, one of the two choices of mil-spec 6.3.)
    for op in ("add", "sub", "mul", "maximum", "minimum"):
        add(f, Case(f"{op}-int32-wrap", op).inp("x", "int32", x).inp("y", "int32", y)
            .out("int32", store("int32", binary_int(op, x, y))))
    x = np.array([3, 2, 0, -3, 7, 1], dtype=object)
    y = np.array([4, 31, 0, 3, 0, 1000], dtype=object)
    add(f, Case("pow-int32", "pow").inp("x", "int32", x).inp("y", "int32", y)
        .out("int32", store("int32", binary_int("pow", x, y))))
    add(f, Case("pow-int32-negative-exponent", "pow").inp("x", "int32", np.array([2], dtype=object))
        .inp("y", "int32", np.array([-1], dtype=object)).err("R004", "int32", (1,)))
    # comparisons
    x = np.array([1.0, np.nan, 2.0, -0.0, np.inf, -1.0], np.float64)
    y = np.array([1.0, np.nan, 1.0, 0.0, np.inf, np.nan], np.float64)
    cmp = {
        "equal": np.equal, "not_equal": np.not_equal, "greater": np.greater,
        "greater_equal": np.greater_equal, "less": np.less, "less_equal": np.less_equal,
    }
    for op, fn in cmp.items():
        with np.errstate(all="ignore"):
            add(f, Case(f"{op}-fp16-nan", op).inp("x", "fp16", x).inp("y", "fp16", y).out("bool", fn(x, y)))
        xi = rand_int((2, 3), -3, 3)
        yi = rand_int((3,), -3, 3)
        add(f, Case(f"{op}-int32-broadcast", op).inp("x", "int32", xi).inp("y", "int32", yi)
            .out("bool", fn(xi.astype(np.int64), yi.astype(np.int64))))


def gen_unary():
    f = "unary"
    specials = np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 65504.0], np.float64)
    for op in ("abs", "square", "sqrt", "exp", "erf", "tanh", "sigmoid", "relu", "silu"):
        for dtype in FLOATS:
            x = np.concatenate([rand_float(dtype, (10,), -4, 4), specials])
            add(f, Case(f"{op}-{dtype}", op).inp("x", dtype, x).out(dtype, store(dtype, unary_float(op, x))))
    # overflow / underflow / subnormal edges in fp16
    x = store("fp16", np.array([11.0, 11.1, -17.0, -18.0, -10.0, 2.0**-20, 0.5]))
    add(f, Case("exp-fp16-edges", "exp").inp("x", "fp16", x).out("fp16", store("fp16", np.exp(x))))
    x = store("fp16", np.array([255.875, 256.0, 2.0**-12, 2.0**-13, -300.0]))
    add(f, Case("square-fp16-edges", "square").inp("x", "fp16", x).out("fp16", store("fp16", x * x)))
    x = store("fp32", np.array([-10.0, -5.0, -1.0, 0.0, 1.0, 3.0, 20.0, -20.0, 1e-20]))
    for mode in ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"):
        for dtype in FLOATS:
            xx = np.concatenate([store(dtype, x), rand_float(dtype, (8,), -4, 4)])
            add(f, Case(f"gelu-{mode.lower()}-{dtype}", "gelu").inp("x", dtype, xx).const("mode", "string", mode)
                .out(dtype, store(dtype, unary_float("gelu", xx, mode=mode))))
    x = rand_float("fp16", (6,), -3, 3)
    add(f, Case("gelu-default-mode-fp16", "gelu").inp("x", "fp16", x)
        .out("fp16", store("fp16", unary_float("gelu", x, mode="EXACT"))))
    # epsilon ops: defaults converted to x's dtype, explicit epsilons.
    defaults = {"rsqrt": 1e-12, "log": 1e-45, "inverse": 1e-4}
    for op, eps in defaults.items():
        for dtype in FLOATS:
            x = np.concatenate([rand_float(dtype, (8,), 0.001, 5.0), np.array([0.0, -1.0, np.inf, 4.0])])
            x = store(dtype, x)
            e = float(store(dtype, eps))
            add(f, Case(f"{op}-{dtype}-default-epsilon", op).inp("x", dtype, x)
                .out(dtype, store(dtype, unary_float(op, x, eps=e))))
            e2 = float(store(dtype, 0.25))
            add(f, Case(f"{op}-{dtype}-epsilon", op).inp("x", dtype, x).const("epsilon", dtype, e2)
                .out(dtype, store(dtype, unary_float(op, x, eps=e2))))
    # clip
    for dtype in FLOATS:
        x = np.concatenate([rand_float(dtype, (8,), -3, 3), np.array([np.nan, np.inf, -np.inf])])
        add(f, Case(f"clip-{dtype}", "clip").inp("x", dtype, x).const("alpha", dtype, -1.0).const("beta", dtype, 1.5)
            .out(dtype, store(dtype, ieee_min(ieee_max(x, -1.0), 1.5))))
    x = rand_float("fp32", (4,))
    add(f, Case("clip-fp32-alpha-above-beta-ios16", "clip", "ios16").inp("x", "fp32", x)
        .const("alpha", "fp32", 2.0).const("beta", "fp32", 1.0).out("fp32", np.full(4, 1.0)))


def gen_cast():
    f = "cast"
    floats = np.array([2.9, -2.9, 0.5, -0.5, 1e10, -1e10, np.nan, np.inf, -np.inf, 0.0, -0.0, 70000.0,
                       1e-8, 65519.0, 65520.0, 2049.0, 300.0, -200.5, 127.5, 255.9])
    for src in FLOATS:
        x = store(src, floats)
        for dst in ("fp16", "fp32", "int32", "bool"):
            add(f, Case(f"{src}-to-{dst}", "cast").inp("x", src, x).const("dtype", "string", dst)
                .out(dst, cast_values(src, dst, x)))
        for dst in ("int8", "uint8", "int16", "uint16"):
            add(f, Case(f"{src}-to-{dst}", "cast", "ios17").inp("x", src, x).const("dtype", "string", dst)
                .out(dst, cast_values(src, dst, x)))
    ints = np.array([0, 1, -1, 127, 128, -129, 255, 256, 65519, 65520, 2049, 16777217, -(2**31), 2**31 - 1], dtype=object)
    for dst in ("fp16", "fp32", "bool", "int32"):
        add(f, Case(f"int32-to-{dst}", "cast").inp("x", "int32", ints).const("dtype", "string", dst)
            .out(dst, cast_values("int32", dst, ints)))
    for dst in ("int8", "uint8", "int16", "uint16"):
        add(f, Case(f"int32-to-{dst}", "cast", "ios17").inp("x", "int32", ints).const("dtype", "string", dst)
            .out(dst, cast_values("int32", dst, ints)))
    bools = np.array([True, False, True])
    for dst in ("fp16", "fp32", "int32"):
        add(f, Case(f"bool-to-{dst}", "cast").inp("x", "bool", bools).const("dtype", "string", dst)
            .out(dst, bools.astype(np.int64).astype(object) if dst == "int32" else bools.astype(np.float64)))
    u8 = np.array([0, 200, 255], dtype=object)
    add(f, Case("uint8-to-int8", "cast", "ios17").inp("x", "uint8", u8).const("dtype", "string", "int8")
        .out("int8", cast_values("uint8", "int8", u8)))
    add(f, Case("uint8-to-fp16", "cast", "ios17").inp("x", "uint8", u8).const("dtype", "string", "fp16")
        .out("fp16", cast_values("uint8", "fp16", u8)))
    x = np.float64(3.75)
    add(f, Case("fp32-scalar-to-int32", "cast").inp("x", "fp32", x).const("dtype", "string", "int32")
        .out("int32", np.array(3, dtype=object)))


def gen_reduce():
    f = "reduce"
    for dtype in FLOATS:
        for axis in (-1, 0, 1):
            x = rand_float(dtype, (2, 3, 4), -5, 5)
            add(f, Case(f"softmax-{dtype}-axis{axis}", "softmax").inp("x", dtype, x).const("axis", "int32", axis)
                .out(dtype, store(dtype, softmax(x, axis))))
    x = rand_float("fp16", (3, 5), -5, 5)
    add(f, Case("softmax-fp16-default-axis", "softmax").inp("x", "fp16", x).out("fp16", store("fp16", softmax(x, -1))))
    ninf = -np.inf
    x = np.array([[ninf, ninf, ninf], [0.0, ninf, 1.0], [np.inf, 0.0, 1.0], [np.nan, 1.0, 2.0],
                  [-65504.0, 0.0, -65504.0], [65504.0, 65504.0, 0.0]])
    for dtype in FLOATS:
        add(f, Case(f"softmax-{dtype}-edges", "softmax").inp("x", dtype, x).const("axis", "int32", 1)
            .out(dtype, store(dtype, softmax(x, 1))))
    x = rand_float("fp32", (1, 6, 1, 1), -2, 2)
    add(f, Case("softmax-fp32-size1-dims", "softmax").inp("x", "fp32", x).const("axis", "int32", 1)
        .out("fp32", store("fp32", softmax(x, 1))))
    x = rand_float("fp32", (2, 1), -2, 2)
    add(f, Case("softmax-fp32-single-element", "softmax").inp("x", "fp32", x).const("axis", "int32", -1)
        .out("fp32", np.ones((2, 1))))
    ops = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max}
    configs = [([1], False), ([0, 2], True), ([-1], False), ([-3, -1], False), (None, False), (None, True)]
    for op, fn in ops.items():
        for dtype in FLOATS:
            for i, (axes, keep) in enumerate(configs):
                x = rand_float(dtype, (2, 3, 4), -10, 10)
                norm = tuple(range(3)) if axes is None else tuple(sorted(norm_axis(a, 3) for a in axes))
                c = Case(f"{op}-{dtype}-{i}", op).inp("x", dtype, x)
                if axes is not None:
                    c.const("axes", "int32", np.array(axes))
                c.const("keep_dims", "bool", keep)
                add(f, c.out(dtype, store(dtype, fn(x, axis=norm, keepdims=keep))))
        x = rand_int((2, 3, 4), -100, 100)
        x[0, 0, 0] = 2**31 - 1
        for i, (axes, keep) in enumerate(configs[:4]):
            norm = tuple(sorted(norm_axis(a, 3) for a in axes))
            add(f, Case(f"{op}-int32-{i}", op).inp("x", "int32", x).const("axes", "int32", np.array(axes))
                .const("keep_dims", "bool", keep).out("int32", store("int32", reduce_int(op, x, norm, keep))))
    # rank 5 with size-1 dims; the RMSNorm overflow hazard; NaN in reduce_max.
    x = rand_float("fp32", (1, 2, 1, 3, 2))
    add(f, Case("reduce_sum-fp32-rank5", "reduce_sum").inp("x", "fp32", x).const("axes", "int32", np.array([1, 3]))
        .out("fp32", store("fp32", np.sum(x, axis=(1, 3)))))
    sq = store("fp16", np.array([[40000.0, 22496.0, 10000.0], [1.0, 4.0, 9.0]]))
    add(f, Case("reduce_sum-fp16-square-overflow", "reduce_sum").inp("x", "fp16", sq)
        .const("axes", "int32", np.array([1])).out("fp16", store("fp16", np.sum(sq, axis=1))))
    x = np.array([[1.0, np.nan, 3.0], [-np.inf, -np.inf, -np.inf], [-0.0, 0.0, -0.0], [-0.0, -0.0, -1.0]])
    out = np.array([np.nan, -np.inf, 0.0, -0.0])
    add(f, Case("reduce_max-fp16-nan-signed-zero", "reduce_max").inp("x", "fp16", x)
        .const("axes", "int32", np.array([1])).out("fp16", out))
    x = np.array([1.0, 2.0, 2048.0, 1.0])
    add(f, Case("reduce_sum-fp16-single-rounding", "reduce_sum").inp("x", "fp16", x)
        .const("axes", "int32", np.array([0])).out("fp16", store("fp16", np.sum(x))))
    # layer_norm
    for dtype in FLOATS:
        x = rand_float(dtype, (2, 3, 4), -3, 3)
        add(f, Case(f"layer_norm-{dtype}-last-axis", "layer_norm").inp("x", dtype, x)
            .const("axes", "int32", np.array([-1])).const("epsilon", dtype, float(store(dtype, 1e-5)))
            .out(dtype, store(dtype, layer_norm_ref(x, (2,), None, None, float(store(dtype, 1e-5))))))
        g = rand_float(dtype, (2, 4), 0.5, 2)
        b = rand_float(dtype, (2, 4), -1, 1)
        add(f, Case(f"layer_norm-{dtype}-two-axes-gamma-beta", "layer_norm").inp("x", dtype, x)
            .const("axes", "int32", np.array([2, 0])).const("gamma", dtype, g).const("beta", dtype, b)
            .const("epsilon", dtype, float(store(dtype, 1e-3)))
            .out(dtype, store(dtype, layer_norm_ref(x, (0, 2), g, b, float(store(dtype, 1e-3))))))
        add(f, Case(f"layer_norm-{dtype}-defaults", "layer_norm").inp("x", dtype, x)
            .out(dtype, store(dtype, layer_norm_ref(x, (0, 1, 2), None, None, float(store(dtype, 1e-5))))))
    x = np.full((2, 4), 3.0)
    add(f, Case("layer_norm-fp16-constant-rows", "layer_norm").inp("x", "fp16", x)
        .const("axes", "int32", np.array([1])).out("fp16", np.zeros((2, 4))))


def gen_linalg():
    f = "linalg"
    shapes = [
        ((3, 4), (4, 5), False, False),
        ((4, 3), (4, 5), True, False),
        ((3, 4), (5, 4), False, True),
        ((4, 3), (5, 4), True, True),
        ((4,), (4,), False, False),
        ((4,), (2, 4, 3), False, False),
        ((2, 3, 4), (4,), False, False),
        ((4,), (4, 3), False, False),
        ((2, 1, 3, 4), (3, 4, 2), False, False),
        ((1, 2, 3, 4), (1, 2, 3, 4), False, True),
        ((1, 1, 2, 3, 2), (2, 1, 2, 2), False, False),
    ]
    for i, (xs, ys, tx, ty) in enumerate(shapes):
        for dtype in FLOATS:
            x = rand_float(dtype, xs)
            y = rand_float(dtype, ys)
            c = Case(f"matmul-{dtype}-{i}", "matmul").inp("x", dtype, x).inp("y", dtype, y)
            if tx or ty:
                c.const("transpose_x", "bool", tx).const("transpose_y", "bool", ty)
            add(f, c.out(dtype, store(dtype, matmul_ref(x, y, tx, ty))))
    x = rand_int((2, 3), -50000, 50000)
    y = rand_int((3, 2), -50000, 50000)
    prod = matmul_ref(x, y, False, False)
    add(f, Case("matmul-int32-wrap", "matmul").inp("x", "int32", x).inp("y", "int32", y)
        .out("int32", store("int32", prod)))
    # ios17 mixed dtypes: y is the result of a const op (here an inline literal) of fp32.
    x = rand_float("fp16", (2, 3))
    y = rand_float("fp16", (3, 2))
    add(f, Case("matmul-fp16-const-y", "matmul").inp("x", "fp16", x).const("y", "fp16", y)
        .out("fp16", store("fp16", x @ y)))
    # linear
    for dtype in FLOATS:
        for xs in ((4,), (3, 4), (2, 3, 4)):
            x = rand_float(dtype, xs)
            w = rand_float(dtype, (5, 4))
            b = rand_float(dtype, (5,))
            add(f, Case(f"linear-{dtype}-rank{len(xs)}", "linear").inp("x", dtype, x).const("weight", dtype, w)
                .const("bias", dtype, b).out(dtype, store(dtype, x @ w.T + b)))
        x = rand_float(dtype, (2, 4))
        w = rand_float(dtype, (3, 4))
        add(f, Case(f"linear-{dtype}-no-bias", "linear").inp("x", dtype, x).const("weight", dtype, w)
            .out(dtype, store(dtype, x @ w.T)))
    # conv
    conv_cases = [
        # name, x shape, w shape, strides, pad_type, pad, dilations, groups, bias, opset, dyn weight
        ("1d-valid-stride2", (1, 2, 7), (3, 2, 3), [2], "valid", [0, 0], [1], 1, True, "ios18", False),
        ("1d-same-stride2", (2, 1, 5), (2, 1, 3), [2], "same", [0, 0], [1], 1, False, "ios18", False),
        ("1d-same-lower", (1, 1, 6), (1, 1, 2), [1], "same_lower", [0, 0], [1], 1, False, "ios18", False),
        ("1d-custom", (1, 2, 5), (2, 2, 2), [1], "custom", [2, 1], [1], 1, True, "ios18", False),
        ("2d-1x1-linear", (1, 8, 1, 5), (6, 8, 1, 1), [1, 1], "valid", [0, 0, 0, 0], [1, 1], 1, False, "ios18", False),
        ("2d-same-3x3", (1, 2, 4, 5), (3, 2, 3, 3), [1, 1], "same", [0, 0, 0, 0], [1, 1], 1, True, "ios18", False),
        ("2d-same-even-kernel-stride", (1, 1, 5, 6), (2, 1, 2, 4), [2, 3], "same", [0, 0, 0, 0], [1, 1], 1, False, "ios18", False),
        ("2d-same-lower-even-kernel", (1, 1, 5, 6), (2, 1, 2, 4), [2, 1], "same_lower", [0, 0, 0, 0], [1, 1], 1, False, "ios18", False),
        ("2d-dilated", (1, 1, 6, 7), (1, 1, 2, 3), [1, 1], "valid", [0, 0, 0, 0], [2, 2], 1, False, "ios18", False),
        ("2d-dilated-custom-pad", (1, 2, 5, 5), (2, 2, 3, 2), [2, 1], "custom", [1, 0, 2, 1], [2, 3], 1, True, "ios18", False),
        ("2d-groups", (1, 4, 3, 3), (6, 2, 2, 2), [1, 1], "valid", [0, 0, 0, 0], [1, 1], 2, True, "ios18", False),
        ("2d-depthwise", (1, 3, 4, 4), (3, 1, 3, 3), [1, 1], "same", [0, 0, 0, 0], [1, 1], 3, False, "ios18", False),
        ("2d-batch2-dynamic-weight", (2, 2, 3, 3), (2, 2, 2, 2), [1, 1], "valid", [0, 0, 0, 0], [1, 1], 1, False, "ios18", True),
        ("3d-valid", (1, 2, 3, 3, 3), (2, 2, 2, 2, 2), [1, 1, 1], "valid", [0] * 6, [1, 1, 1], 1, True, "ios18", False),
        ("3d-same-stride", (1, 1, 4, 3, 5), (1, 1, 3, 2, 2), [2, 1, 2], "same", [0] * 6, [1, 1, 1], 1, False, "ios18", False),
        ("2d-ios16-custom", (1, 1, 3, 3), (1, 1, 2, 2), [1, 1], "custom", [1, 1, 0, 1], [1, 1], 1, True, "ios16", False),
    ]
    for name, xs, ws, strides, pad_type, pad, dil, groups, has_bias, opset, dyn in conv_cases:
        for dtype in FLOATS:
            x = rand_float(dtype, xs)
            w = rand_float(dtype, ws)
            b = rand_float(dtype, (ws[0],)) if has_bias else None
            c = Case(f"conv-{dtype}-{name}", "conv", opset).inp("x", dtype, x)
            if dyn:
                c.inp("weight", dtype, w)
            else:
                c.const("weight", dtype, w)
            if b is not None:
                c.const("bias", dtype, b)
            c.const("strides", "int32", np.array(strides)).const("pad_type", "string", pad_type)
            c.const("pad", "int32", np.array(pad)).const("dilations", "int32", np.array(dil))
            c.const("groups", "int32", groups)
            add(f, c.out(dtype, store(dtype, conv_ref(x, w, b, strides, pad_type, pad, dil, groups))))
    x = rand_float("fp16", (1, 3, 1, 4))
    w = rand_float("fp16", (2, 3, 1, 1))
    add(f, Case("conv-fp16-all-defaults", "conv").inp("x", "fp16", x).const("weight", "fp16", w)
        .out("fp16", store("fp16", conv_ref(x, w, None, [1, 1], "valid", None, [1, 1], 1))))
    # scaled_dot_product_attention (ios18)
    for dtype in FLOATS:
        q = rand_float(dtype, (1, 2, 3, 4))
        k = rand_float(dtype, (1, 2, 5, 4))
        v = rand_float(dtype, (1, 2, 5, 3))
        add(f, Case(f"sdpa-{dtype}-no-mask", "scaled_dot_product_attention").inp("query", dtype, q)
            .inp("key", dtype, k).inp("value", dtype, v).out(dtype, store(dtype, sdpa_ref(q, k, v))))
        causal = np.tril(np.ones((3, 5), bool), k=2)
        add(f, Case(f"sdpa-{dtype}-bool-mask", "scaled_dot_product_attention").inp("query", dtype, q)
            .inp("key", dtype, k).inp("value", dtype, v).inp("attn_mask", "bool", causal)
            .out(dtype, store(dtype, sdpa_ref(q, k, v, causal, True))))
        additive = np.where(causal, 0.0, -65504.0)
        add(f, Case(f"sdpa-{dtype}-float-mask", "scaled_dot_product_attention").inp("query", dtype, q)
            .inp("key", dtype, k).inp("value", dtype, v).inp("attn_mask", dtype, additive)
            .out(dtype, store(dtype, sdpa_ref(q, k, v, additive))))
        head_mask = rand_float(dtype, (2, 1, 5), -2, 2)
        add(f, Case(f"sdpa-{dtype}-broadcast-float-mask", "scaled_dot_product_attention").inp("query", dtype, q)
            .inp("key", dtype, k).inp("value", dtype, v).inp("attn_mask", dtype, head_mask)
            .out(dtype, store(dtype, sdpa_ref(q, k, v, head_mask))))
    q = rand_float("fp32", (2, 2, 3))
    k = rand_float("fp32", (2, 2, 3))
    v = rand_float("fp32", (2, 2, 2))
    none = np.array([[False, False], [True, False]])
    add(f, Case("sdpa-fp32-rank3-masked-row-nan", "scaled_dot_product_attention").inp("query", "fp32", q)
        .inp("key", "fp32", k).inp("value", "fp32", v).inp("attn_mask", "bool", none)
        .out("fp32", store("fp32", sdpa_ref(q, k, v, none, True))))


def reshape_target(x_shape, shape, ios17):
    rank, k = len(x_shape), len(shape)
    out = []
    for j, e in enumerate(shape):
        if e == 0:
            if ios17:
                src = rank - k + j
                out.append(x_shape[src] if src >= 0 else 1)
            else:
                out.append(x_shape[j])
        else:
            out.append(e)
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(x_shape)) // known
    return out


def gen_layout():
    f = "layout"
    for name, xs, spec, opset in (
        ("minus-one", (2, 3, 4), [4, -1], "ios18"),
        ("zeros-ios16", (2, 3, 4), [0, -1, 2], "ios16"),
        ("zeros-ios17-right-aligned", (2, 50), [1, 0, -1, 0], "ios17"),
        ("zeros-ios18-short", (3, 4), [0, 0], "ios18"),
        ("head-split", (1, 8, 1, 3), [1, 2, 4, 3], "ios18"),
        ("to-scalar-ish", (1, 1), [1], "ios18"),
    ):
        x = rand_float("fp16", xs)
        target = reshape_target(xs, spec, opset >= "ios17")
        add(f, Case(f"reshape-{name}", "reshape", opset).inp("x", "fp16", x).const("shape", "int32", np.array(spec))
            .out("fp16", x.reshape(target)))
    xi = rand_int((2, 3), -5, 5)
    add(f, Case("reshape-int32", "reshape").inp("x", "int32", xi).const("shape", "int32", np.array([3, 2]))
        .out("int32", xi.reshape(3, 2)))
    for perm in ([1, 0, 2], [0, 1, 3, 2], [2, 0, 1], [-1, 0, -2]):
        rank = 4 if len(perm) == 4 else 3
        xs = (1, 2, 3, 4)[:rank] if rank == 4 else (2, 3, 4)
        x = rand_float("fp32", xs)
        norm = [norm_axis(p, rank) for p in perm]
        add(f, Case(f"transpose-{'_'.join(str(p) for p in perm)}", "transpose").inp("x", "fp32", x)
            .const("perm", "int32", np.array(perm)).out("fp32", np.transpose(x, norm)))
    xb = RNG.integers(0, 2, size=(2, 3)).astype(bool)
    add(f, Case("transpose-bool", "transpose").inp("x", "bool", xb).const("perm", "int32", np.array([1, 0]))
        .out("bool", xb.T))
    for axes in ([0], [-1], [0, 3], [1, -1], [-4, 2]):
        x = rand_float("fp16", (2, 3))
        out_rank = 2 + len(axes)
        norm = tuple(sorted(norm_axis(a, out_rank) for a in axes))
        add(f, Case(f"expand_dims-{'_'.join(str(a) for a in axes)}", "expand_dims").inp("x", "fp16", x)
            .const("axes", "int32", np.array(axes)).out("fp16", np.expand_dims(x, norm)))
    x = rand_float("fp16", (1, 3, 1, 2, 1))
    add(f, Case("squeeze-all", "squeeze").inp("x", "fp16", x).out("fp16", np.squeeze(x)))
    add(f, Case("squeeze-axes", "squeeze").inp("x", "fp16", x).const("axes", "int32", np.array([0, -1]))
        .out("fp16", np.squeeze(x, axis=(0, 4))))
    add(f, Case("squeeze-keeps-non-unit", "squeeze").inp("x", "fp16", x).const("axes", "int32", np.array([1, 2]))
        .out("fp16", np.squeeze(x, axis=2)))
    add(f, Case("squeeze-to-scalar", "squeeze").inp("x", "fp32", np.array([[2.5]])).out("fp32", np.float64(2.5)))
    # slice_by_size
    x = rand_float("fp16", (1, 4, 1, 7))
    add(f, Case("slice_by_size-weights", "slice_by_size").inp("x", "fp16", x)
        .const("begin", "int32", np.array([0, 0, 0, 3])).const("size", "int32", np.array([1, 4, 1, 2]))
        .out("fp16", x[:, :, :, 3:5]))
    add(f, Case("slice_by_size-negative-begin-minus-one", "slice_by_size").inp("x", "fp16", x)
        .const("begin", "int32", np.array([0, -3, 0, -4])).const("size", "int32", np.array([-1, 2, -1, -1]))
        .out("fp16", x[:, 1:3, :, 3:]))
    add(f, Case("slice_by_size-dynamic-begin", "slice_by_size").inp("x", "fp16", x)
        .inp("begin", "int32", np.array([0, 1, 0, -2])).const("size", "int32", np.array([1, 3, 1, 2]))
        .out("fp16", x[:, 1:4, :, 5:7]))
    add(f, Case("slice_by_size-dynamic-begin-out-of-range", "slice_by_size").inp("x", "fp16", x)
        .inp("begin", "int32", np.array([0, 2, 0, 0])).const("size", "int32", np.array([1, 3, 1, 2]))
        .err("R003", "fp16", (1, 3, 1, 2)))
    # slice_by_index
    x = rand_float("fp32", (3, 4, 5))
    sbi = [
        ("basic", [0, 1, 0], [3, 3, 5], None, None, None, None),
        ("strided", [0, 0, 4], [3, 4, 0], [2, 3, -1], None, None, None),
        ("negative-stride-masks", [2, 0, -1], [0, 0, 0], [-1, 1, -2], [True, False, False], [True, True, True], None),
        ("negative-indices", [-2, -3, -5], [-1, -1, 5], None, None, None, None),
        ("squeeze", [1, -1, 0], [2, 0, 5], [1, 1, 2], None, None, [True, True, False]),
        ("clamped", [-10, 1, 2], [10, 100, 3], [1, 2, 1], None, None, None),
        ("reverse-all", [0, 0, 0], [0, 0, 0], [-1, -1, -1], [True, True, True], [True, True, True], None),
    ]
    for name, begin, end, stride, bmask, emask, smask in sbi:
        idx = []
        for d in range(3):
            st = stride[d] if stride else 1
            if smask and smask[d]:
                idx.append(begin[d])
                continue
            start = None if bmask and bmask[d] else begin[d]
            stop = None if emask and emask[d] else end[d]
            idx.append(slice(start, stop, st))
        c = Case(f"slice_by_index-{name}", "slice_by_index").inp("x", "fp32", x)
        c.const("begin", "int32", np.array(begin)).const("end", "int32", np.array(end))
        if stride:
            c.const("stride", "int32", np.array(stride))
        if bmask:
            c.const("begin_mask", "bool", np.array(bmask))
        if emask:
            c.const("end_mask", "bool", np.array(emask))
        if smask:
            c.const("squeeze_mask", "bool", np.array(smask))
        add(f, c.out("fp32", x[tuple(idx)]))
    # concat, split, tile
    a = rand_float("fp16", (2, 3))
    b = rand_float("fp16", (2, 1))
    c2 = rand_float("fp16", (2, 2))
    add(f, Case("concat-axis1", "concat").inp("a", "fp16", a).inp("b", "fp16", b).inp("c", "fp16", c2)
        .tuple("values", "a", "b", "c").const("axis", "int32", -1).out("fp16", np.concatenate([a, b, c2], axis=1)))
    add(f, Case("concat-same-value-twice", "concat").inp("a", "fp16", a).tuple("values", "a", "a")
        .const("axis", "int32", 0).out("fp16", np.concatenate([a, a], axis=0)))
    a = rand_float("fp32", (2, 2, 3))
    b = rand_float("fp32", (2, 2, 3))
    c3 = rand_float("fp32", (2, 2, 3))
    for axis in (0, 1, -1):
        inter = np.stack([a, b, c3], axis=norm_axis(axis, 3) + 1).reshape(
            [d * (3 if i == norm_axis(axis, 3) else 1) for i, d in enumerate(a.shape)])
        add(f, Case(f"concat-interleave-axis{axis}", "concat").inp("a", "fp32", a).inp("b", "fp32", b)
            .inp("c", "fp32", c3).tuple("values", "a", "b", "c").const("axis", "int32", axis)
            .const("interleave", "bool", True).out("fp32", inter))
    one = rand_float("fp32", (1, 3))
    add(f, Case("concat-single", "concat").inp("a", "fp32", one).tuple("values", "a").const("axis", "int32", 0)
        .out("fp32", one))
    xi = rand_int((2, 2), -9, 9)
    yi = rand_int((2, 1), -9, 9)
    add(f, Case("concat-int32", "concat").inp("a", "int32", xi).inp("b", "int32", yi).tuple("values", "a", "b")
        .const("axis", "int32", 1).out("int32", np.concatenate([xi, yi], axis=1)))
    x = rand_float("fp16", (2, 6, 2))
    c = Case("split-num-splits", "split").inp("x", "fp16", x).const("num_splits", "int32", 3).const("axis", "int32", 1)
    for part in np.split(x, 3, axis=1):
        c.out("fp16", part)
    add(f, c)
    c = Case("split-sizes-uneven", "split").inp("x", "fp16", x).const("split_sizes", "int32", np.array([1, 4, 1]))
    c.const("axis", "int32", -2)
    for part in np.split(x, [1, 5], axis=1):
        c.out("fp16", part)
    add(f, c)
    for reps in ([2, 1, 3], [1, 1, 1], [3, 2, 1]):
        x = rand_float("fp32", (2, 1, 2))
        add(f, Case(f"tile-{'_'.join(str(r) for r in reps)}", "tile").inp("x", "fp32", x)
            .const("reps", "int32", np.array(reps)).out("fp32", np.tile(x, reps)))


def gen_construct():
    f = "construct"
    add(f, Case("fill-default-fp32", "fill").const("shape", "int32", np.array([2, 3])).out("fp32", np.zeros((2, 3))))
    add(f, Case("fill-fp16", "fill").const("shape", "int32", np.array([1, 4])).const("value", "fp16", -65504.0)
        .out("fp16", np.full((1, 4), -65504.0)))
    add(f, Case("fill-int32", "fill").const("shape", "int32", np.array([3])).const("value", "int32", -7)
        .out("int32", np.array([-7, -7, -7], dtype=object)))
    add(f, Case("fill-bool", "fill").const("shape", "int32", np.array([2])).const("value", "bool", True)
        .out("bool", np.array([True, True])))
    for lower, upper in ((-1, 0), (0, -1), (0, 0), (1, 2), (-1, -1), (2, 0)):
        x = rand_float("fp16", (2, 3, 4))
        m = np.arange(3)[:, None]
        n = np.arange(4)[None, :]
        keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
        add(f, Case(f"band_part-{lower}_{upper}", "band_part").inp("x", "fp16", x).const("lower", "int32", lower)
            .const("upper", "int32", upper).out("fp16", np.where(keep, x, 0.0)))
    xb = np.ones((3, 3), bool)
    add(f, Case("band_part-bool-causal", "band_part").inp("x", "bool", xb).const("lower", "int32", -1)
        .const("upper", "int32", 0).out("bool", np.tril(xb)))
    add(f, Case("band_part-defaults", "band_part").inp("x", "fp32", np.arange(4.0).reshape(2, 2)).out("fp32", np.arange(4.0).reshape(2, 2)))
    cond = RNG.integers(0, 2, size=(2, 1, 3)).astype(bool)
    a = rand_float("fp16", (4, 1))
    b = rand_float("fp16", (3,))
    add(f, Case("select-three-way-broadcast", "select").inp("cond", "bool", cond).inp("a", "fp16", a)
        .inp("b", "fp16", b).out("fp16", np.where(cond, a, b)))
    ai = rand_int((2, 2), -5, 5)
    add(f, Case("select-int32-scalar-b", "select").inp("cond", "bool", np.array([[True, False], [False, True]]))
        .inp("a", "int32", ai).const("b", "int32", 0)
        .out("int32", np.where(np.array([[True, False], [False, True]]), ai, 0).astype(object)))
    # gather
    x = rand_float("fp32", (3, 4, 2))
    idx = np.array([2, 0, 2], dtype=object)
    add(f, Case("gather-axis0", "gather").inp("x", "fp32", x).inp("indices", "int32", idx)
        .out("fp32", np.take(x, idx.astype(np.int64), axis=0)))
    idx = np.array([[3, -1], [0, -4]], dtype=object)
    add(f, Case("gather-axis1-negative-ios16", "gather", "ios16").inp("x", "fp32", x).inp("indices", "int32", idx)
        .const("axis", "int32", -2).out("fp32", np.take(x, idx.astype(np.int64) % 4, axis=1)))
    add(f, Case("gather-axis1-negative-ios15", "gather", "ios15").inp("x", "fp32", x).inp("indices", "int32", idx)
        .const("axis", "int32", 1).out("fp32", np.take(x, idx.astype(np.int64) % 4, axis=1)))
    add(f, Case("gather-negative-ios17-error", "gather", "ios17").inp("x", "fp32", x).inp("indices", "int32", idx)
        .const("axis", "int32", 1).err("R002", "fp32", (3, 2, 2, 2)))
    add(f, Case("gather-out-of-range", "gather").inp("x", "fp32", x).inp("indices", "int32", np.array([3], dtype=object))
        .err("R002", "fp32", (1, 4, 2)))
    add(f, Case("gather-scalar-index", "gather").inp("x", "fp32", x).inp("indices", "int32", np.array(1, dtype=object))
        .const("axis", "int32", 2).out("fp32", x[:, :, 1]))
    idx = np.array([[1, 3, 0], [2, 2, 1], [0, 0, 3]], dtype=object)
    out = np.stack([np.take(x[t], idx[t].astype(np.int64), axis=0) for t in range(3)])
    add(f, Case("gather-batch-dims1", "gather", "ios16").inp("x", "fp32", x).inp("indices", "int32", idx)
        .const("axis", "int32", 1).const("batch_dims", "int32", 1).out("fp32", out))
    xi = rand_int((4,), -100, 100)
    idx = np.array([[3, 3], [0, 1]], dtype=object)
    add(f, Case("gather-int32-data", "gather").inp("x", "int32", xi).inp("indices", "int32", idx)
        .out("int32", xi[idx.astype(np.int64)]))


def gen_quant():
    f = "quant"
    x = store("fp16", np.array([0.3125, 0.4375, -0.3125, 0.0625, 0.1875, -0.1875, 100.0, -100.0, np.nan, np.inf, -np.inf, 0.0]))
    q = np.clip(np.nan_to_num(np.round(x / 0.125), nan=0.0, posinf=1e9, neginf=-1e9), -128, 127)
    add(f, Case("quantize-int8-ties-saturation-nan", "quantize").inp("input", "fp16", x).const("scale", "fp16", 0.125)
        .const("output_dtype", "string", "int8").out("int8", q.astype(np.int64).astype(object)))
    x = store("fp32", np.array([-1.0, 1.25, 100.0, -100.0, 0.75, 0.25]))
    q = np.clip(np.round(x / 0.5) + 128, 0, 255)
    add(f, Case("quantize-uint8-zero-point", "quantize").inp("input", "fp32", x).const("scale", "fp32", 0.5)
        .const("zero_point", "uint8", np.array(128, dtype=object)).const("output_dtype", "string", "uint8")
        .out("uint8", q.astype(np.int64).astype(object)))
    x = rand_float("fp16", (2, 3, 2), -4, 4)
    scale = store("fp16", np.array([0.05, 0.1, 0.025]))
    zp = np.array([0, -3, 5], dtype=object)
    q = np.clip(np.round(x / scale.reshape(1, 3, 1)) + zp.astype(np.float64).reshape(1, 3, 1), -128, 127)
    add(f, Case("quantize-int8-per-axis", "quantize").inp("input", "fp16", x).const("scale", "fp16", scale)
        .const("zero_point", "int8", zp).const("axis", "int32", -2).const("output_dtype", "string", "int8")
        .out("int8", q.astype(np.int64).astype(object)))
    qd = rand_int((2, 3), -128, 127)
    qd[0, 0] = 127
    for dtype in FLOATS:
        scale = float(store(dtype, 0.0123))
        add(f, Case(f"dequantize-int8-{dtype}", "dequantize").inp("input", "int8", qd).const("scale", dtype, scale)
            .const("zero_point", "int8", np.array(-3, dtype=object))
            .out(dtype, store(dtype, (qd.astype(np.float64) + 3) * scale)))
    qu = rand_int((3, 2), 0, 255)
    scale = store("fp16", np.array([0.5, 0.25, 2.0]))
    zp = np.array([128, 0, 255], dtype=object)
    out = (qu.astype(np.float64) - zp.astype(np.float64).reshape(3, 1)) * scale.reshape(3, 1)
    add(f, Case("dequantize-uint8-per-axis", "dequantize").inp("input", "uint8", qu).const("scale", "fp16", scale)
        .const("zero_point", "uint8", zp).const("axis", "int32", 0).out("fp16", store("fp16", out)))
    big = np.array([127, -128], dtype=object)
    add(f, Case("dequantize-fp16-overflow", "dequantize").inp("input", "int8", big).const("scale", "fp16", 1024.0)
        .out("fp16", np.array([np.inf, -np.inf])))
    qd = rand_int((3, 2), -128, 127)
    scale = store("fp16", np.array([0.125, 0.5, 0.0625]))
    out = (qd.astype(np.float64) - 1.0) * scale.reshape(3, 1)
    add(f, Case("constexpr_affine_dequantize-ios16", "constexpr_affine_dequantize", "ios16", attrs=True)
        .const("quantized_data", "int8", qd).const("scale", "fp16", scale)
        .const("zero_point", "int8", np.array(1, dtype=object)).const("axis", "int32", 0)
        .out("fp16", store("fp16", out)))
    add(f, Case("constexpr_affine_dequantize-scalar-scale", "constexpr_affine_dequantize", "ios18", attrs=True)
        .const("quantized_data", "int8", qd).const("scale", "fp32", 0.25)
        .const("zero_point", "int8", np.array(0, dtype=object)).const("axis", "int32", 1)
        .out("fp32", store("fp32", qd.astype(np.float64) * 0.25)))


def main():
    gen_elementwise()
    gen_unary()
    gen_cast()
    gen_reduce()
    gen_linalg()
    gen_layout()
    gen_construct()
    gen_quant()
    for name, cases in sorted(FILES.items()):
        path = os.path.join(HERE, f"{name}.vec")
        with open(path, "w") as out:
            out.write("# generated by gen.py with numpy " + np.__version__ + "; do not edit\n")
            for case in cases:
                out.write(case.text())
        print(f"{path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
