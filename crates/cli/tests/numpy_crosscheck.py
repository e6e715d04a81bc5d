"""Cross-check `milbridge run` against NumPy on a handful of programs.

Usage: python3 numpy_crosscheck.py MILBRIDGE_BINARY
Exit status 0 when every program matches NumPy within its tolerance.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

HEADER = 'program(1.3)\n[buildInfo = dict<string, string>({{"coremlc-version", "3505.4.1"}})]\n{\n'

PROGRAMS = {
    "rmsnorm": (
        """    func main<ios18>(tensor<fp16, [1, 16, 1, 8]> x, tensor<fp16, [1, 16, 1, 1]> w) {
        tensor<fp16, [1, 16, 1, 8]> sq = mul(x = x, y = x)[name = string("sq")];
        tensor<int32, [1]> ax = const()[name = string("ax"), val = tensor<int32, [1]>([1])];
        bool kd = const()[name = string("kd"), val = bool(true)];
        tensor<fp16, [1, 1, 1, 8]> ss = reduce_sum(axes = ax, keep_dims = kd, x = sq)[name = string("ss")];
        fp16 invd = const()[name = string("invd"), val = fp16(0x1p-4)];
        tensor<fp16, [1, 1, 1, 8]> ms = mul(x = ss, y = invd)[name = string("ms")];
        fp16 eps = const()[name = string("eps"), val = fp16(0.00001)];
        tensor<fp16, [1, 1, 1, 8]> me = add(x = ms, y = eps)[name = string("me")];
        fp16 nhalf = const()[name = string("nhalf"), val = fp16(-0.5)];
        tensor<fp16, [1, 1, 1, 8]> rr = pow(x = me, y = nhalf)[name = string("rr")];
        tensor<fp16, [1, 16, 1, 8]> xr = mul(x = x, y = rr)[name = string("xr")];
        tensor<fp16, [1, 16, 1, 8]> out = mul(x = xr, y = w)[name = string("out")];
    } -> (out);
""",
        lambda x, w: [x / np.sqrt((x * x).sum(axis=1, keepdims=True) / 16 + 1e-5) * w],
        5e-3,
    ),
    "softmax_fp32": (
        """    func main<ios18>(tensor<fp32, [2, 3, 7]> x) {
        int32 ax = const()[name = string("ax"), val = int32(-1)];
        tensor<fp32, [2, 3, 7]> p = softmax(axis = ax, x = x)[name = string("p")];
        tensor<fp32, [2, 3, 7]> e = exp(x = x)[name = string("e")];
    } -> (p, e);
""",
        lambda x: [np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True), np.exp(x)],
        1e-5,
    ),
    "matmul_transpose": (
        """    func main<ios18>(tensor<fp32, [3, 5, 4]> a, tensor<fp32, [3, 6, 4]> b) {
        bool t = const()[name = string("t"), val = bool(true)];
        bool f = const()[name = string("f"), val = bool(false)];
        tensor<fp32, [3, 5, 6]> c = matmul(transpose_x = f, transpose_y = t, x = a, y = b)[name = string("c")];
    } -> (c);
""",
        lambda a, b: [a @ np.swapaxes(b, -1, -2)],
        1e-4,
    ),
    "conv_same": (
        """    func main<ios18>(tensor<fp32, [1, 4, 6, 6]> x, tensor<fp32, [8, 2, 3, 3]> w) {
        string pt = const()[name = string("pt"), val = string("same")];
        tensor<int32, [2]> st = const()[name = string("st"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, [4]> pd = const()[name = string("pd"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [2]> dl = const()[name = string("dl"), val = tensor<int32, [2]>([1, 1])];
        int32 gr = const()[name = string("gr"), val = int32(2)];
        tensor<fp32, [1, 8, 6, 6]> y = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = w, x = x)[name = string("y")];
    } -> (y);
""",
        None,  # computed below
        1e-4,
    ),
    "int32_gather_concat": (
        """    func main<ios18>(tensor<int32, [5, 3]> x, tensor<int32, [4]> idx) {
        int32 ax = const()[name = string("ax"), val = int32(0)];
        tensor<int32, [4, 3]> g = gather(axis = ax, indices = idx, x = x)[name = string("g")];
        int32 ax1 = const()[name = string("ax1"), val = int32(0)];
        bool il = const()[name = string("il"), val = bool(false)];
        tensor<int32, [9, 3]> c = concat(axis = ax1, interleave = il, values = (g, x))[name = string("c")];
    } -> (c);
""",
        lambda x, idx: [np.concatenate([x[idx], x], axis=0)],
        0,
    ),
    "int8_bool": (
        """    func main<ios18>(tensor<int8, [2, 3]> q, tensor<bool, [2, 3]> c, tensor<fp32, [2, 3]> f) {
        string to32 = const()[name = string("to32"), val = string("fp32")];
        tensor<fp32, [2, 3]> qf = cast(dtype = to32, x = q)[name = string("qf")];
        tensor<fp32, [2, 3]> s = select(a = f, b = qf, cond = c)[name = string("s")];
        tensor<bool, [2, 3]> g = greater(x = f, y = qf)[name = string("g")];
        tensor<int32, [2]> sh = const()[name = string("sh"), val = tensor<int32, [2]>([3, 2])];
        tensor<int8, [3, 2]> qr = reshape(shape = sh, x = q)[name = string("qr")];
    } -> (qf, s, g, qr);
""",
        lambda q, c, f: [q.astype(np.float64), np.where(c, f, q), f > q, q.reshape(3, 2)],
        1e-6,
    ),
}


def conv_ref(x, w):
    n, c_in, h, wd = x.shape
    c_out, c_per_group, kh, kw = w.shape
    groups = c_in // c_per_group
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, c_out, h, wd))
    per_out = c_out // groups
    for o in range(c_out):
        g = o // per_out
        for i in range(h):
            for j in range(wd):
                patch = xp[0, g * c_per_group:(g + 1) * c_per_group, i:i + kh, j:j + kw]
                out[0, o, i, j] = (patch * w[o]).sum()
    return [out]


def parse_params(text):
    sig = text.split("(", 1)[1].split(")", 1)[0]
    params = []
    # "tensor<fp16, [1, 16, 1, 8]> x, tensor<fp16, [1, 16, 1, 1]> w"
    for chunk in sig.split("tensor<")[1:]:
        dtype, rest = chunk.split(",", 1)
        shape_text, rest = rest.split("]", 1)
        shape = tuple(int(d) for d in shape_text.strip(" [").split(",") if d.strip())
        name = rest.split(">", 1)[1].strip(" ,")
        params.append((name, dtype.strip(), shape))
    return params


def main():
    binary = sys.argv[1]
    rng = np.random.default_rng(7)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, (body, reference, tol) in PROGRAMS.items():
            path = os.path.join(tmp, f"{name}.mil")
            with open(path, "w") as f:
                f.write(HEADER + body + "}\n")
            args = [binary, "run", path, "--out", os.path.join(tmp, name)]
            inputs = []
            for pname, dtype, shape in parse_params(body):
                if dtype == "int32":
                    arr = rng.integers(0, 5, size=shape).astype(np.int32)
                elif dtype == "int8":
                    arr = rng.integers(-128, 128, size=shape).astype(np.int8)
                elif dtype == "bool":
                    arr = rng.integers(0, 2, size=shape).astype(np.bool_)
                else:
                    arr = rng.standard_normal(shape).astype({"fp16": np.float16, "fp32": np.float32}[dtype])
                file = os.path.join(tmp, f"{name}-{pname}.npy")
                np.save(file, arr)
                args += ["--in", f"{pname}={file}"]
                inputs.append(arr)
            result = subprocess.run(args, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"FAIL {name}: milbridge exited {result.returncode}\n{result.stderr}")
                failures += 1
                continue
            outs = [line.split(":")[0] for line in result.stdout.splitlines() if line.strip()]
            expected = (reference or conv_ref)(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs])
            for out_path, want in zip(outs, expected):
                got = np.load(out_path)
                err = float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0
                scale = max(1.0, float(np.abs(want).max()))
                ok = got.shape == want.shape and err <= tol * scale
                print(f"{'ok  ' if ok else 'FAIL'} {name}: {os.path.basename(out_path)} {got.dtype}{got.shape} max err {err:.3g} (tol {tol * scale:.3g})")
                failures += 0 if ok else 1
    print(f"{len(PROGRAMS)} programs, {failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
