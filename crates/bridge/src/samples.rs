//! Small MIL programs in the shape maderix/ANE's bridge tests use, for tests, examples and the
//! jitter benchmark. Each is complete `program(1.3)` text in the dialect the repository emits.

/// The `program(1.3)` header with the `buildInfo` block maderix/ANE writes.
pub const HEADER: &str = "program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, {\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, {\"coremltools-version\", \"9.0\"}})]\n{\n";

/// A dynamic-weight matmul: `out[1, n, m] = W[1, n, k] @ reshape(x[1, k, 1, m])`, with the
/// activation `x` first and the weight `W` second (PR #22's parameter order). Sizes in bytes
/// (fp16): x `2·k·m`, W `2·n·k`, out `2·n·m`.
pub fn dyn_matmul(n: usize, k: usize, m: usize) -> String {
    format!(
        "{HEADER}    func main<ios18>(tensor<fp16, [1, {k}, 1, {m}]> x, tensor<fp16, [1, {n}, {k}]> W) {{\n\
         \x20       tensor<int32, [3]> sh = const()[name = string(\"sh\"), val = tensor<int32, [3]>([1, {k}, {m}])];\n\
         \x20       tensor<fp16, [1, {k}, {m}]> x3 = reshape(shape = sh, x = x)[name = string(\"rx\")];\n\
         \x20       bool bF = const()[name = string(\"bF\"), val = bool(false)];\n\
         \x20       tensor<fp16, [1, {n}, {m}]> out = matmul(transpose_x = bF, transpose_y = bF, x = W, y = x3)[name = string(\"mm\")];\n\
         \x20   }} -> (out);\n}}\n"
    )
}

/// A dynamic-weight matmul with the weight on the right: `out[1, m, n] = x[1, m, k] @ W[1, k,
/// n]` (activation first, then weight). The weight is the GEMM's B, so the bridge keeps it
/// prepacked (issue #5). Sizes in bytes (fp16): x `2·m·k`, W `2·k·n`, out `2·m·n`.
pub fn dyn_matmul_right(m: usize, k: usize, n: usize) -> String {
    format!(
        "{HEADER}    func main<ios18>(tensor<fp16, [1, {m}, {k}]> x, tensor<fp16, [1, {k}, {n}]> W) {{\n\
         \x20       bool bF = const()[name = string(\"bF\"), val = bool(false)];\n\
         \x20       tensor<fp16, [1, {m}, {n}]> out = matmul(transpose_x = bF, transpose_y = bF, x = x, y = W)[name = string(\"mm\")];\n\
         \x20   }} -> (out);\n}}\n"
    )
}

/// `out = x + x` over `x: [1, rows, 1, cols]` fp16: no weights, one input, one output.
pub fn scale2(rows: usize, cols: usize) -> String {
    format!(
        "{HEADER}    func main<ios18>(tensor<fp16, [1, {rows}, 1, {cols}]> x) {{\n\
         \x20       tensor<fp16, [1, {rows}, 1, {cols}]> out = add(x = x, y = x)[name = string(\"out\")];\n\
         \x20   }} -> (out);\n}}\n"
    )
}

/// Two outputs from one activation and one weight: `sum = x + w` and `prod = x * w`, all
/// `[1, c, 1, s]` fp16.
pub fn add_mul(c: usize, s: usize) -> String {
    format!(
        "{HEADER}    func main<ios18>(tensor<fp16, [1, {c}, 1, {s}]> x, tensor<fp16, [1, {c}, 1, {s}]> w) {{\n\
         \x20       tensor<fp16, [1, {c}, 1, {s}]> sum = add(x = x, y = w)[name = string(\"sum\")];\n\
         \x20       tensor<fp16, [1, {c}, 1, {s}]> prod = mul(x = x, y = w)[name = string(\"prod\")];\n\
         \x20   }} -> (sum, prod);\n}}\n"
    )
}

/// A 1×1 convolution with its weight in a BLOBFILE (`@model_path/weights/weight.bin`, offset
/// 64, the single-blob layout of `ane_bridge_build_weight_blob`): `y[1, out_ch, 1, s] =
/// W[out_ch, in_ch] · x[1, in_ch, 1, s]`.
pub fn conv1x1_blob(in_ch: usize, out_ch: usize, s: usize) -> String {
    format!(
        "{HEADER}    func main<ios18>(tensor<fp16, [1, {in_ch}, 1, {s}]> x) {{\n\
         \x20       string pt = const()[name = string(\"pt\"), val = string(\"valid\")];\n\
         \x20       tensor<int32, [2]> st = const()[name = string(\"st\"), val = tensor<int32, [2]>([1, 1])];\n\
         \x20       tensor<int32, [4]> pd = const()[name = string(\"pd\"), val = tensor<int32, [4]>([0, 0, 0, 0])];\n\
         \x20       tensor<int32, [2]> dl = const()[name = string(\"dl\"), val = tensor<int32, [2]>([1, 1])];\n\
         \x20       int32 gr = const()[name = string(\"gr\"), val = int32(1)];\n\
         \x20       tensor<fp16, [{out_ch}, {in_ch}, 1, 1]> W = const()[name = string(\"W\"), val = tensor<fp16, [{out_ch}, {in_ch}, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(64)))];\n\
         \x20       tensor<fp16, [1, {out_ch}, 1, {s}]> y = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = W, x = x)[name = string(\"conv\")];\n\
         \x20   }} -> (y);\n}}\n"
    )
}
