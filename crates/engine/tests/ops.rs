//! Every op against the reference interpreter, on seeded random inputs and edge shapes
//! (broadcasting, rank 0–5, size-1 dims, negative axes, -1 sizes), every dtype each op allows,
//! on every tier the host has (portable table, then each ISA table), with 1 and 2 threads.

mod common;

use common::{Range, TOL_ACCUMULATE, TOL_ELEMENTWISE, Tol, check_against_reference, program};

fn r(lo: f64, hi: f64) -> Option<Range> {
    Some(Range { lo, hi })
}

fn check(
    what: &str,
    opset: &str,
    params: &str,
    body: &str,
    outputs: &str,
    ranges: &[Option<Range>],
    tol: Tol,
) {
    let text = program(opset, params, body, outputs);
    check_against_reference(what, &text, what.len() as u64 * 7919 + 17, ranges, tol);
}

#[test]
fn binary_arithmetic_broadcasts_for_every_dtype() {
    for dtype in ["fp16", "fp32", "int32"] {
        for op in ["add", "sub", "mul", "real_div", "pow", "maximum", "minimum"] {
            if dtype == "int32" && op == "real_div" {
                continue; // rejected by verification (E120), see mil/src/ops/elementwise.rs
            }
            let ranges: Vec<Option<Range>> = match (op, dtype) {
                ("pow", "int32") => vec![r(-4.0, 4.0), r(0.0, 3.0)],
                ("pow", _) => vec![r(0.25, 3.0), r(-2.0, 2.0)],
                ("real_div", _) => vec![None, r(0.5, 3.0)],
                _ => vec![],
            };
            let body = format!(
                "        tensor<{dtype}, [2, 4, 3]> z = {op}(x = x, y = y)[name = string(\"z\")];"
            );
            check(
                &format!("{op} {dtype}"),
                "ios18",
                &format!("tensor<{dtype}, [2, 1, 3]> x, tensor<{dtype}, [4, 1]> y"),
                &body,
                "z",
                &ranges,
                TOL_ELEMENTWISE,
            );
        }
    }
}

#[test]
fn binary_rank5_and_scalar_operands() {
    check(
        "mul rank 5",
        "ios18",
        "tensor<fp16, [2, 1, 3, 1, 2]> x, tensor<fp16, [2, 1, 4, 1]> y",
        "        tensor<fp16, [2, 2, 3, 4, 2]> z = mul(x = x, y = y)[name = string(\"z\")];",
        "z",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "scalar minus tensor",
        "ios18",
        "tensor<fp16, [1, 8, 1, 5]> x",
        "        fp16 one = const()[name = string(\"one\"), val = fp16(1.0)];\n        tensor<fp16, [1, 8, 1, 5]> z = sub(x = one, y = x)[name = string(\"z\")];",
        "z",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "rank 0 add",
        "ios18",
        "fp32 x, fp32 y",
        "        fp32 z = add(x = x, y = y)[name = string(\"z\")];",
        "z",
        &[],
        TOL_ELEMENTWISE,
    );
}

#[test]
fn comparisons_produce_bool() {
    for dtype in ["fp16", "fp32", "int32"] {
        for op in [
            "equal",
            "not_equal",
            "greater",
            "greater_equal",
            "less",
            "less_equal",
        ] {
            let ranges = if dtype == "int32" {
                vec![r(-2.0, 2.0), r(-2.0, 2.0)]
            } else {
                vec![]
            };
            check(
                &format!("{op} {dtype}"),
                "ios18",
                &format!("tensor<{dtype}, [3, 4]> x, tensor<{dtype}, [4]> y"),
                &format!(
                    "        tensor<bool, [3, 4]> z = {op}(x = x, y = y)[name = string(\"z\")];"
                ),
                "z",
                &ranges,
                TOL_ELEMENTWISE,
            );
        }
    }
}

#[test]
fn unary_ops_for_every_float_dtype() {
    for dtype in ["fp16", "fp32"] {
        for op in [
            "abs", "square", "sqrt", "exp", "erf", "tanh", "sigmoid", "relu", "silu", "rsqrt",
            "log", "inverse",
        ] {
            let ranges = match op {
                "sqrt" | "rsqrt" | "log" | "inverse" => vec![r(0.05, 4.0)],
                "exp" => vec![r(-8.0, 8.0)],
                _ => vec![r(-5.0, 5.0)],
            };
            check(
                &format!("{op} {dtype}"),
                "ios18",
                &format!("tensor<{dtype}, [2, 3, 37]> x"),
                &format!(
                    "        tensor<{dtype}, [2, 3, 37]> z = {op}(x = x)[name = string(\"z\")];"
                ),
                "z",
                &ranges,
                TOL_ELEMENTWISE,
            );
        }
        for mode in ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"] {
            check(
                &format!("gelu {mode} {dtype}"),
                "ios18",
                &format!("tensor<{dtype}, [64]> x"),
                &format!(
                    "        tensor<{dtype}, [64]> z = gelu(x = x, mode = string(\"{mode}\"))[name = string(\"z\")];"
                ),
                "z",
                &[r(-6.0, 6.0)],
                TOL_ELEMENTWISE,
            );
        }
        check(
            &format!("clip {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [5, 7]> x"),
            &format!(
                "        tensor<{dtype}, [5, 7]> z = clip(x = x, alpha = {dtype}(-0.5), beta = {dtype}(1.25))[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ELEMENTWISE,
        );
        check(
            &format!("rsqrt eps {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [9]> x"),
            &format!(
                "        tensor<{dtype}, [9]> z = rsqrt(x = x, epsilon = {dtype}(0.5))[name = string(\"z\")];"
            ),
            "z",
            &[r(0.0, 2.0)],
            TOL_ELEMENTWISE,
        );
    }
    for op in ["abs", "square"] {
        check(
            &format!("{op} int32"),
            "ios18",
            "tensor<int32, [4, 5]> x",
            &format!("        tensor<int32, [4, 5]> z = {op}(x = x)[name = string(\"z\")];"),
            "z",
            &[],
            TOL_ELEMENTWISE,
        );
    }
}

#[test]
fn casts_between_every_dtype() {
    let pairs = [
        ("fp32", "fp16", r(-70000.0, 70000.0)),
        ("fp16", "fp32", None),
        ("fp16", "int32", r(-50.0, 50.0)),
        ("int32", "fp16", r(-3000.0, 3000.0)),
        ("fp32", "bool", r(-1.0, 1.0)),
        ("bool", "fp16", None),
        ("int32", "bool", r(-2.0, 2.0)),
        ("fp32", "int8", r(-300.0, 300.0)),
        ("int32", "int8", r(-300.0, 300.0)),
        ("int32", "uint8", r(-300.0, 300.0)),
        ("uint8", "fp32", None),
        ("int8", "fp16", None),
        ("int16", "int32", None),
        ("fp16", "int16", r(-100.0, 100.0)),
    ];
    for (from, to, range) in pairs {
        check(
            &format!("cast {from} to {to}"),
            "ios18",
            &format!("tensor<{from}, [3, 11]> x"),
            &format!(
                "        tensor<{to}, [3, 11]> z = cast(x = x, dtype = string(\"{to}\"))[name = string(\"z\")];"
            ),
            "z",
            &[range],
            TOL_ELEMENTWISE,
        );
    }
}

#[test]
fn softmax_along_any_axis() {
    for dtype in ["fp16", "fp32"] {
        for axis in ["-1", "1", "0"] {
            check(
                &format!("softmax {dtype} axis {axis}"),
                "ios18",
                &format!("tensor<{dtype}, [2, 5, 33]> x"),
                &format!(
                    "        tensor<{dtype}, [2, 5, 33]> z = softmax(x = x, axis = int32({axis}))[name = string(\"z\")];"
                ),
                "z",
                &[r(-6.0, 6.0)],
                TOL_ACCUMULATE,
            );
        }
    }
}

#[test]
fn reductions_over_axes() {
    let cases = [
        ("[1]", "true", "[2, 1, 4]"),
        ("[1]", "false", "[2, 4]"),
        ("[0, -1]", "false", "[3]"),
        ("[-1]", "true", "[2, 3, 1]"),
    ];
    for dtype in ["fp16", "fp32", "int32"] {
        for op in ["reduce_sum", "reduce_mean", "reduce_max"] {
            for (axes, keep, out) in cases {
                let n = axes.matches(',').count() + 1;
                check(
                    &format!("{op} {dtype} axes {axes} keep {keep}"),
                    "ios18",
                    &format!("tensor<{dtype}, [2, 3, 4]> x"),
                    &format!(
                        "        tensor<{dtype}, {out}> z = {op}(x = x, axes = tensor<int32, [{n}]>({axes}), keep_dims = bool({keep}))[name = string(\"z\")];"
                    ),
                    "z",
                    &[],
                    TOL_ACCUMULATE,
                );
            }
        }
        check(
            &format!("reduce_sum {dtype} all axes"),
            "ios18",
            &format!("tensor<{dtype}, [3, 40]> x"),
            &format!("        {dtype} z = reduce_sum(x = x)[name = string(\"z\")];"),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
    }
}

#[test]
fn matmul_shapes_transposes_and_dtypes() {
    let cases = [
        ("[2, 3, 4]", "[2, 4, 5]", "false", "false", "[2, 3, 5]"),
        ("[2, 4, 3]", "[2, 4, 5]", "true", "false", "[2, 3, 5]"),
        ("[2, 3, 4]", "[2, 5, 4]", "false", "true", "[2, 3, 5]"),
        ("[4, 3]", "[5, 4]", "true", "true", "[3, 5]"),
        (
            "[2, 1, 3, 4]",
            "[5, 4, 2]",
            "false",
            "false",
            "[2, 5, 3, 2]",
        ),
        ("[4]", "[4, 5]", "false", "false", "[5]"),
        ("[3, 4]", "[4]", "false", "false", "[3]"),
        ("[4]", "[2, 4, 3]", "false", "false", "[2, 3]"),
        (
            "[1, 1, 17, 33]",
            "[1, 1, 33, 19]",
            "false",
            "false",
            "[1, 1, 17, 19]",
        ),
    ];
    for dtype in ["fp16", "fp32", "int32"] {
        for (x, y, tx, ty, out) in cases {
            check(
                &format!("matmul {dtype} {x}{tx} @ {y}{ty}"),
                "ios18",
                &format!("tensor<{dtype}, {x}> x, tensor<{dtype}, {y}> y"),
                &format!(
                    "        tensor<{dtype}, {out}> z = matmul(x = x, y = y, transpose_x = bool({tx}), transpose_y = bool({ty}))[name = string(\"z\")];"
                ),
                "z",
                &[],
                TOL_ACCUMULATE,
            );
        }
    }
    check(
        "matmul vector dot",
        "ios18",
        "tensor<fp32, [6]> x, tensor<fp32, [6]> y",
        "        fp32 z = matmul(x = x, y = y)[name = string(\"z\")];",
        "z",
        &[],
        TOL_ACCUMULATE,
    );
}

#[test]
fn linear_with_and_without_bias() {
    for dtype in ["fp16", "fp32"] {
        check(
            &format!("linear {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [2, 3, 4]> x"),
            &format!(
                "        tensor<{dtype}, [3, 4]> w = const()[name = string(\"w\"), val = tensor<{dtype}, [3, 4]>([1, -2, 0.5, 0.25, 0, 1, 2, -1, 3, 0.5, -0.5, 1])];\n        tensor<{dtype}, [3]> b = const()[name = string(\"b\"), val = tensor<{dtype}, [3]>([0.5, -1, 2])];\n        tensor<{dtype}, [2, 3, 3]> z = linear(x = x, weight = w, bias = b)[name = string(\"z\")];\n        tensor<{dtype}, [2, 3, 3]> z2 = linear(x = x, weight = w)[name = string(\"z2\")];"
            ),
            "z, z2",
            &[],
            TOL_ACCUMULATE,
        );
    }
}

fn conv_text(dtype: &str, x: &str, w: &str, out: &str, args: &str, bias: bool) -> (String, String) {
    let params = format!("tensor<{dtype}, {x}> x, tensor<{dtype}, {w}> w");
    let params = if bias {
        format!(
            "{params}, tensor<{dtype}, [{}]> b",
            out.trim_matches(['[', ']'])
                .split(',')
                .nth(1)
                .unwrap()
                .trim()
        )
    } else {
        params
    };
    let bias_arg = if bias { ", bias = b" } else { "" };
    (
        params,
        format!(
            "        tensor<{dtype}, {out}> z = conv(x = x, weight = w{bias_arg}{args})[name = string(\"z\")];"
        ),
    )
}

#[test]
fn conv_padding_strides_dilations_groups() {
    let cases = [
        (
            "valid 2d",
            "[1, 4, 5, 6]",
            "[6, 4, 3, 3]",
            "[1, 6, 3, 4]",
            ", pad_type = string(\"valid\")",
            false,
        ),
        (
            "same 2d",
            "[2, 4, 5, 6]",
            "[3, 4, 3, 2]",
            "[2, 3, 5, 6]",
            ", pad_type = string(\"same\")",
            false,
        ),
        (
            "same_lower strided",
            "[1, 2, 7, 7]",
            "[2, 2, 2, 2]",
            "[1, 2, 4, 4]",
            ", pad_type = string(\"same_lower\"), strides = tensor<int32, [2]>([2, 2])",
            false,
        ),
        (
            "grouped",
            "[1, 4, 5, 5]",
            "[6, 2, 3, 3]",
            "[1, 6, 3, 3]",
            ", groups = int32(2)",
            false,
        ),
        (
            "depthwise",
            "[1, 3, 6, 6]",
            "[3, 1, 3, 3]",
            "[1, 3, 4, 4]",
            ", groups = int32(3)",
            true,
        ),
        (
            "1d",
            "[2, 2, 9]",
            "[3, 2, 3]",
            "[2, 3, 4]",
            ", strides = tensor<int32, [1]>([2])",
            true,
        ),
        (
            "3d",
            "[1, 2, 4, 4, 4]",
            "[2, 2, 2, 2, 2]",
            "[1, 2, 3, 3, 3]",
            "",
            false,
        ),
        (
            "1x1 linear form",
            "[1, 16, 1, 24]",
            "[8, 16, 1, 1]",
            "[1, 8, 1, 24]",
            ", pad_type = string(\"valid\"), strides = tensor<int32, [2]>([1, 1]), pad = tensor<int32, [4]>([0, 0, 0, 0]), dilations = tensor<int32, [2]>([1, 1]), groups = int32(1)",
            false,
        ),
        (
            "1x1 with bias",
            "[2, 8, 3, 5]",
            "[4, 8, 1, 1]",
            "[2, 4, 3, 5]",
            "",
            true,
        ),
    ];
    for dtype in ["fp16", "fp32"] {
        for (name, x, w, out, args, bias) in cases {
            let (params, body) = conv_text(dtype, x, w, out, args, bias);
            check(
                &format!("conv {name} {dtype}"),
                "ios18",
                &params,
                &body,
                "z",
                &[],
                TOL_ACCUMULATE,
            );
        }
        // Dilations need a const weight.
        let values: Vec<String> = (0..36)
            .map(|k| format!("{}", ((k * 7) % 11) as f64 * 0.25 - 1.0))
            .collect();
        check(
            &format!("conv custom dilated {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [1, 2, 8, 9]> x"),
            &format!(
                "        tensor<{dtype}, [2, 2, 3, 3]> w = const()[name = string(\"w\"), val = tensor<{dtype}, [2, 2, 3, 3]>([{}])];\n        tensor<{dtype}, [1, 2, 6, 7]> z = conv(x = x, weight = w, pad_type = string(\"custom\"), pad = tensor<int32, [4]>([1, 1, 2, 0]), dilations = tensor<int32, [2]>([2, 2]))[name = string(\"z\")];",
                values.join(", ")
            ),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
    }
}

/// Convolutions the tier tables run as GEMMs over an unfolded column block: a block split
/// into several GEMM calls (deep `C_in · kernel`), strides with asymmetric padding, a sliced
/// (strided) input, and a transposed (strided) weight, which takes the direct fallback.
#[test]
fn conv_as_gemm_chunks_strided_views_and_fallback() {
    for dtype in ["fp16", "fp32"] {
        // K = 256·9 = 2304 taps: 2304 · 64 columns · 4 bytes per output row exceeds the
        // 4 MiB block after 7 rows (fp32) or 14 (fp16), so 20 rows take several GEMM calls.
        let (params, body) = conv_text(
            dtype,
            "[1, 256, 20, 64]",
            "[8, 256, 3, 3]",
            "[1, 8, 20, 64]",
            ", pad_type = string(\"same\")",
            true,
        );
        check(
            &format!("conv deep chunked {dtype}"),
            "ios18",
            &params,
            &body,
            "z",
            &[],
            TOL_ACCUMULATE,
        );
        let (params, body) = conv_text(
            dtype,
            "[2, 6, 11, 13]",
            "[4, 3, 3, 4]",
            "[2, 4, 6, 5]",
            ", pad_type = string(\"custom\"), pad = tensor<int32, [4]>([2, 1, 0, 3]), strides = tensor<int32, [2]>([2, 3]), groups = int32(2)",
            true,
        );
        check(
            &format!("conv strided asymmetric pads {dtype}"),
            "ios18",
            &params,
            &body,
            "z",
            &[],
            TOL_ACCUMULATE,
        );
        check(
            &format!("conv sliced input, transposed weight {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [1, 5, 9, 12]> x, tensor<{dtype}, [3, 3, 4, 6]> wt"),
            &format!(
                "        tensor<{dtype}, [1, 4, 7, 9]> xs = slice_by_size(x = x, begin = tensor<int32, [4]>([0, 1, 1, 2]), size = tensor<int32, [4]>([1, 4, 7, 9]))[name = string(\"xs\")];\n        tensor<{dtype}, [6, 4, 3, 3]> w = transpose(x = wt, perm = tensor<int32, [4]>([3, 2, 0, 1]))[name = string(\"w\")];\n        tensor<{dtype}, [1, 6, 7, 9]> z = conv(x = xs, weight = w, pad_type = string(\"same\"))[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
    }
}

/// `Precision::Fast` convolutions (bf16 operands on AMX, f32 accumulation): within
/// 2⁻⁸·Σ|x||w| of the exact result plus one rounding of the output, the matmul bound of the
/// engine's precision table; Σ|x||w| is the reference run on the absolute inputs.
#[test]
fn fast_conv_stays_within_the_bf16_bound() {
    use milbridge_engine::{CompileOptions, Precision, compile};
    use milbridge_linalg::cpu::{self, Isa};
    use milbridge_mil::ir::Tensor;
    for dtype in ["fp16", "fp32"] {
        let (params, body) = conv_text(
            dtype,
            "[1, 64, 10, 24]",
            "[32, 64, 3, 3]",
            "[1, 32, 10, 24]",
            ", pad_type = string(\"same\")",
            false,
        );
        let text = program("ios18", &params, &body, "z");
        let program = common::verified(&text);
        let mut rng = common::Rng::new(41);
        let func = program.program().entry().unwrap();
        let facts = program.facts(func);
        let inputs: Vec<Tensor> = program.program().functions[func]
            .params
            .iter()
            .map(|&param| {
                let ty = &facts.types[param];
                common::random_tensor(&mut rng, ty, Range { lo: -2.0, hi: 2.0 })
            })
            .collect();
        let absolute: Vec<Tensor> = inputs
            .iter()
            .map(|t| {
                let values: Vec<f64> = t.to_f64_vec().unwrap().iter().map(|v| v.abs()).collect();
                Tensor::from_f64s(t.ty.clone(), &values).unwrap()
            })
            .collect();
        let expected = common::run_reference(&program, &inputs)[0]
            .to_f64_vec()
            .unwrap();
        let magnitude = common::run_reference(&program, &absolute)[0]
            .to_f64_vec()
            .unwrap();
        for isa in Isa::ALL {
            if !cpu::isa_available(isa) {
                continue;
            }
            let options = CompileOptions {
                isa,
                precision: Precision::Fast,
                ..CompileOptions::default()
            };
            let plan = compile(&program, &options).unwrap();
            let got = common::run_plan(&plan, &inputs)[0].to_f64_vec().unwrap();
            for (idx, ((&e, &g), &m)) in expected.iter().zip(&got).zip(&magnitude).enumerate() {
                let rounding = if dtype == "fp16" {
                    common::f16_ulp(e)
                } else {
                    e.abs() * 2f64.powi(-23)
                };
                let allowed = 2f64.powi(-8) * m + rounding;
                assert!(
                    (e - g).abs() <= allowed,
                    "fast conv {dtype} on {isa}: element {idx}: expected {e}, got {g} (allowed {allowed:e})"
                );
            }
        }
    }
}

#[test]
fn layer_norm_axes_gamma_beta() {
    for dtype in ["fp16", "fp32"] {
        check(
            &format!("layer_norm last axis {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [2, 3, 8]> x"),
            &format!(
                "        tensor<{dtype}, [8]> g = const()[name = string(\"g\"), val = tensor<{dtype}, [8]>([1, 2, 0.5, 1, 1, -1, 1, 0.25])];\n        tensor<{dtype}, [8]> b = const()[name = string(\"b\"), val = tensor<{dtype}, [8]>([0, 0.5, 0, 1, 0, 0, -1, 0])];\n        tensor<{dtype}, [2, 3, 8]> z = layer_norm(x = x, axes = tensor<int32, [1]>([-1]), gamma = g, beta = b, epsilon = {dtype}(0.001))[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
        check(
            &format!("layer_norm two axes {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [2, 3, 4, 5]> x"),
            &format!(
                "        tensor<{dtype}, [2, 3, 4, 5]> z = layer_norm(x = x, axes = tensor<int32, [2]>([1, 3]))[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
    }
}

#[test]
fn attention_with_bool_and_float_masks() {
    for dtype in ["fp16", "fp32"] {
        check(
            &format!("sdpa no mask {dtype}"),
            "ios18",
            &format!(
                "tensor<{dtype}, [1, 2, 4, 8]> q, tensor<{dtype}, [1, 2, 6, 8]> k, tensor<{dtype}, [1, 2, 6, 3]> v"
            ),
            &format!(
                "        tensor<{dtype}, [1, 2, 4, 3]> z = scaled_dot_product_attention(query = q, key = k, value = v)[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
        check(
            &format!("sdpa float mask {dtype}"),
            "ios18",
            &format!(
                "tensor<{dtype}, [2, 5, 4]> q, tensor<{dtype}, [2, 5, 4]> k, tensor<{dtype}, [2, 5, 4]> v, tensor<{dtype}, [5, 5]> m"
            ),
            &format!(
                "        tensor<{dtype}, [2, 5, 4]> z = scaled_dot_product_attention(query = q, key = k, value = v, attn_mask = m)[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ACCUMULATE,
        );
    }
    check(
        "sdpa bool mask",
        "ios18",
        "tensor<fp16, [1, 3, 4, 8]> q, tensor<fp16, [1, 3, 4, 8]> k, tensor<fp16, [1, 3, 4, 8]> v",
        "        tensor<bool, [4, 4]> m = const()[name = string(\"m\"), val = tensor<bool, [4, 4]>([true, false, false, false, true, true, false, false, true, true, true, false, true, true, true, true])];\n        tensor<fp16, [1, 3, 4, 8]> z = scaled_dot_product_attention(query = q, key = k, value = v, attn_mask = m)[name = string(\"z\")];",
        "z",
        &[],
        TOL_ACCUMULATE,
    );
}

#[test]
fn shape_ops_feed_compute_ops() {
    check(
        "reshape -1, transpose, expand, squeeze",
        "ios18",
        "tensor<fp16, [2, 3, 4]> x",
        "        tensor<fp16, [4, 6]> a = reshape(x = x, shape = tensor<int32, [2]>([-1, 6]))[name = string(\"a\")];\n        tensor<fp16, [6, 4]> b = transpose(x = a, perm = tensor<int32, [2]>([-1, 0]))[name = string(\"b\")];\n        tensor<fp16, [6, 1, 4]> c = expand_dims(x = b, axes = tensor<int32, [1]>([-2]))[name = string(\"c\")];\n        tensor<fp16, [6, 4]> d = squeeze(x = c, axes = tensor<int32, [1]>([1]))[name = string(\"d\")];\n        tensor<fp16, [6, 4]> e = exp(x = d)[name = string(\"e\")];\n        tensor<fp16, [24]> f = reshape(x = b, shape = tensor<int32, [1]>([24]))[name = string(\"f\")];",
        "e, f, b",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "reshape ios16 zeros",
        "ios16",
        "tensor<fp32, [2, 3, 2]> x",
        "        tensor<fp32, [2, 6, 1]> a = reshape(x = x, shape = tensor<int32, [3]>([0, -1, 1]))[name = string(\"a\")];\n        tensor<fp32, [2, 6, 1]> b = sigmoid(x = a)[name = string(\"b\")];",
        "b",
        &[],
        TOL_ELEMENTWISE,
    );
}

#[test]
fn slices_by_size_and_index() {
    check(
        "slice_by_size -1 size",
        "ios18",
        "tensor<fp16, [1, 6, 1, 10]> x",
        "        tensor<fp16, [1, 4, 1, 7]> a = slice_by_size(x = x, begin = tensor<int32, [4]>([0, 2, 0, 3]), size = tensor<int32, [4]>([1, -1, 1, -1]))[name = string(\"a\")];\n        tensor<fp16, [1, 4, 1, 7]> b = mul(x = a, y = a)[name = string(\"b\")];",
        "a, b",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "slice_by_size dynamic begin",
        "ios18",
        "tensor<fp32, [4, 6]> x, tensor<int32, [2]> begin",
        "        tensor<fp32, [2, 3]> a = slice_by_size(x = x, begin = begin, size = tensor<int32, [2]>([2, 3]))[name = string(\"a\")];",
        "a",
        &[None, r(0.0, 2.0)],
        TOL_ELEMENTWISE,
    );
    check(
        "slice_by_index strides and masks",
        "ios18",
        "tensor<fp16, [5, 8, 3]> x",
        "        tensor<fp16, [2, 4]> a = slice_by_index(x = x, begin = tensor<int32, [3]>([1, 0, 2]), end = tensor<int32, [3]>([5, 8, 3]), stride = tensor<int32, [3]>([2, 2, 1]), begin_mask = tensor<bool, [3]>([false, true, false]), end_mask = tensor<bool, [3]>([false, true, false]), squeeze_mask = tensor<bool, [3]>([false, false, true]))[name = string(\"a\")];\n        tensor<fp16, [2, 4]> b = abs(x = a)[name = string(\"b\")];",
        "b",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "slice_by_index negative stride",
        "ios18",
        "tensor<int32, [4, 6]> x",
        "        tensor<int32, [4, 3]> a = slice_by_index(x = x, begin = tensor<int32, [2]>([0, -1]), end = tensor<int32, [2]>([4, 0]), stride = tensor<int32, [2]>([1, -2]))[name = string(\"a\")];",
        "a",
        &[],
        TOL_ELEMENTWISE,
    );
}

#[test]
fn concat_split_tile() {
    for dtype in ["fp16", "int32", "bool"] {
        check(
            &format!("concat {dtype}"),
            "ios18",
            &format!("tensor<{dtype}, [2, 3, 4]> x, tensor<{dtype}, [2, 1, 4]> y"),
            &format!(
                "        tensor<{dtype}, [2, 7, 4]> z = concat(values = (x, y, x), axis = int32(-2))[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ELEMENTWISE,
        );
    }
    check(
        "concat interleave",
        "ios18",
        "tensor<fp32, [2, 3]> x, tensor<fp32, [2, 3]> y",
        "        tensor<fp32, [2, 6]> z = concat(values = (x, y), axis = int32(1), interleave = bool(true))[name = string(\"z\")];",
        "z",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "split uneven",
        "ios18",
        "tensor<fp16, [2, 9]> x",
        "        tensor<fp16, [2, 2]> a, tensor<fp16, [2, 3]> b, tensor<fp16, [2, 4]> c = split(x = x, axis = int32(1), split_sizes = tensor<int32, [3]>([2, 3, 4]))[name = string(\"s\")];\n        tensor<fp16, [2, 3]> d = exp(x = b)[name = string(\"d\")];",
        "a, d, c",
        &[],
        TOL_ELEMENTWISE,
    );
    check(
        "tile",
        "ios18",
        "tensor<fp16, [2, 1, 3]> x",
        "        tensor<fp16, [4, 5, 6]> z = tile(x = x, reps = tensor<int32, [3]>([2, 5, 2]))[name = string(\"z\")];",
        "z",
        &[],
        TOL_ELEMENTWISE,
    );
}

#[test]
fn band_part_select_gather_fill() {
    check(
        "band_part causal",
        "ios18",
        "tensor<fp16, [2, 5, 5]> x",
        "        tensor<fp16, [2, 5, 5]> z = band_part(x = x, lower = int32(-1), upper = int32(0))[name = string(\"z\")];\n        tensor<fp16, [2, 5, 5]> w = band_part(x = x, lower = int32(1), upper = int32(2))[name = string(\"w\")];",
        "z, w",
        &[],
        TOL_ELEMENTWISE,
    );
    for dtype in ["fp16", "fp32", "int32", "bool"] {
        check(
            &format!("select {dtype}"),
            "ios18",
            &format!("tensor<bool, [3, 1]> c, tensor<{dtype}, [3, 4]> a, tensor<{dtype}, [4]> b"),
            &format!(
                "        tensor<{dtype}, [3, 4]> z = select(cond = c, a = a, b = b)[name = string(\"z\")];"
            ),
            "z",
            &[],
            TOL_ELEMENTWISE,
        );
    }
    check(
        "gather axis 1",
        "ios18",
        "tensor<fp16, [3, 5, 2]> x, tensor<int32, [2, 4]> i",
        "        tensor<fp16, [3, 2, 4, 2]> z = gather(x = x, indices = i, axis = int32(1))[name = string(\"z\")];",
        "z",
        &[None, r(0.0, 4.0)],
        TOL_ELEMENTWISE,
    );
    check(
        "gather negative ios15",
        "ios15",
        "tensor<fp32, [6, 3]> x, tensor<int32, [5]> i",
        "        tensor<fp32, [5, 3]> z = gather(x = x, indices = i, axis = int32(0))[name = string(\"z\")];",
        "z",
        &[None, r(-6.0, 5.0)],
        TOL_ELEMENTWISE,
    );
    check(
        "gather batch_dims",
        "ios16",
        "tensor<int32, [2, 4, 3]> x, tensor<int32, [2, 5]> i",
        "        tensor<int32, [2, 5, 3]> z = gather(x = x, indices = i, axis = int32(1), batch_dims = int32(1))[name = string(\"z\")];",
        "z",
        &[None, r(0.0, 3.0)],
        TOL_ELEMENTWISE,
    );
    check(
        "fill output",
        "ios18",
        "tensor<fp16, [3]> x",
        "        tensor<fp16, [2, 3]> z = fill(shape = tensor<int32, [2]>([2, 3]), value = fp16(1.5))[name = string(\"z\")];\n        tensor<fp16, [2, 3]> w = add(x = z, y = x)[name = string(\"w\")];",
        "z, w",
        &[],
        TOL_ELEMENTWISE,
    );
}

#[test]
fn quantize_and_dequantize() {
    check(
        "quantize int8 scalar",
        "ios18",
        "tensor<fp16, [2, 16]> x",
        "        tensor<int8, [2, 16]> q = quantize(input = x, scale = fp16(0x1p-3), output_dtype = string(\"int8\"))[name = string(\"q\")];",
        "q",
        &[r(-20.0, 20.0)],
        TOL_ELEMENTWISE,
    );
    check(
        "quantize uint8 per channel",
        "ios18",
        "tensor<fp32, [3, 8]> x",
        "        tensor<uint8, [3, 8]> q = quantize(input = x, scale = tensor<fp32, [3]>([0.1, 0.5, 0.02]), zero_point = tensor<uint8, [3]>([128, 10, 0]), axis = int32(0), output_dtype = string(\"uint8\"))[name = string(\"q\")];",
        "q",
        &[r(-5.0, 5.0)],
        TOL_ELEMENTWISE,
    );
    check(
        "dequantize int8",
        "ios18",
        "tensor<int8, [4, 6]> x",
        "        tensor<fp16, [4, 6]> d = dequantize(input = x, scale = tensor<fp16, [6]>([0.5, 0.25, 1, 2, 0.125, 4]), zero_point = tensor<int8, [6]>([0, 1, -1, 3, 0, -5]), axis = int32(1))[name = string(\"d\")];",
        "d",
        &[],
        TOL_ELEMENTWISE,
    );
}

/// Special fp16 values: zeros of both signs, the smallest subnormal, a subnormal, the largest
/// finite value, infinities and NaN, paired against each other.
fn special_values() -> Vec<f64> {
    vec![
        0.0,
        -0.0,
        5.960464477539063e-8,
        1.0013580322265625e-5,
        65504.0,
        -65504.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1.0,
        -2.5,
        0.5,
    ]
}

#[test]
fn special_values_propagate_like_ieee() {
    use milbridge_mil::ir::{DType, Tensor, TensorType};
    let values = special_values();
    let n = values.len();
    let xs: Vec<f64> = (0..n * n).map(|k| values[k / n]).collect();
    let ys: Vec<f64> = (0..n * n).map(|k| values[k % n]).collect();
    for dtype in ["fp16", "fp32"] {
        let dt = if dtype == "fp16" {
            DType::Fp16
        } else {
            DType::Fp32
        };
        let mut body = String::new();
        let mut outs = Vec::new();
        for op in ["add", "sub", "mul", "real_div", "pow", "maximum", "minimum"] {
            body += &format!(
                "        tensor<{dtype}, [{}]> {op}_r = {op}(x = x, y = y)[name = string(\"{op}\")];\n",
                n * n
            );
            outs.push(format!("{op}_r"));
        }
        for op in [
            "abs", "sqrt", "exp", "tanh", "sigmoid", "relu", "erf", "silu",
        ] {
            body += &format!(
                "        tensor<{dtype}, [{}]> {op}_r = {op}(x = x)[name = string(\"{op}\")];\n",
                n * n
            );
            outs.push(format!("{op}_r"));
        }
        body += &format!(
            "        tensor<bool, [{}]> lt_r = less(x = x, y = y)[name = string(\"lt\")];\n",
            n * n
        );
        body += &format!(
            "        tensor<bool, [{}]> ne_r = not_equal(x = x, y = y)[name = string(\"ne\")];\n",
            n * n
        );
        outs.extend(["lt_r".to_string(), "ne_r".to_string()]);
        let text = program(
            "ios18",
            &format!("tensor<{dtype}, [{0}]> x, tensor<{dtype}, [{0}]> y", n * n),
            &body,
            &outs.join(", "),
        );
        let program = common::verified(&text);
        let inputs = vec![
            Tensor::from_f64s(TensorType::new(dt, [n * n]), &xs).unwrap(),
            Tensor::from_f64s(TensorType::new(dt, [n * n]), &ys).unwrap(),
        ];
        let expected = common::run_reference(&program, &inputs);
        for tier in common::tiers() {
            let got = common::run_plan(&common::compile_tier(&program, tier, 1), &inputs);
            for ((name, e), g) in outs.iter().zip(&expected).zip(&got) {
                common::assert_close(
                    &format!("special {name} {dtype} {tier:?}"),
                    e,
                    g,
                    TOL_ELEMENTWISE,
                );
            }
        }
    }
}

#[test]
fn correctly_rounded_ops_are_bit_identical_to_the_reference() {
    // Documented bound for + - * / sqrt: one rounding of the exact result (≤ 0.5 ulp), so the
    // engine's f32-computed fp16 results equal the reference's f64-computed ones bit for bit.
    for dtype in ["fp16", "fp32"] {
        let mut body = String::new();
        let mut outs = Vec::new();
        for op in ["add", "sub", "mul", "real_div"] {
            body += &format!(
                "        tensor<{dtype}, [64, 65]> {op}_r = {op}(x = x, y = y)[name = string(\"{op}\")];\n"
            );
            outs.push(format!("{op}_r"));
        }
        body += &format!(
            "        tensor<{dtype}, [64, 65]> sqrt_r = sqrt(x = y)[name = string(\"sqrt\")];\n"
        );
        outs.push("sqrt_r".into());
        let text = program(
            "ios18",
            &format!("tensor<{dtype}, [64, 65]> x, tensor<{dtype}, [64, 65]> y"),
            &body,
            &outs.join(", "),
        );
        let program = common::verified(&text);
        let mut rng = common::Rng::new(99);
        let func = program.program().entry().unwrap();
        let inputs: Vec<_> = program.program().functions[func]
            .params
            .iter()
            .map(|&p| {
                common::random_tensor(
                    &mut rng,
                    &program.facts(func).types[p],
                    Range {
                        lo: 0.001,
                        hi: 300.0,
                    },
                )
            })
            .collect();
        let expected = common::run_reference(&program, &inputs);
        for tier in common::tiers() {
            let got = common::run_plan(&common::compile_tier(&program, tier, 2), &inputs);
            for ((name, e), g) in outs.iter().zip(&expected).zip(&got) {
                assert_eq!(
                    e.bytes(),
                    g.bytes(),
                    "{name} {dtype} on {tier:?} is not bit-identical"
                );
            }
        }
    }
}

#[test]
fn matmul_error_stays_within_the_documented_bound() {
    // Bound: |engine − exact| ≤ 0.5 ulp(result) + k·2⁻²⁴·Σₖ|aᵢₖ||bₖⱼ| for fp32 with k = 1500.
    use milbridge_mil::ir::{DType, TensorType};
    let (m, k, n) = (9, 1500, 7);
    let text = program(
        "ios18",
        &format!("tensor<fp32, [{m}, {k}]> a, tensor<fp32, [{k}, {n}]> b"),
        &format!(
            "        tensor<fp32, [{m}, {n}]> c = matmul(x = a, y = b)[name = string(\"c\")];"
        ),
        "c",
    );
    let program = common::verified(&text);
    let mut rng = common::Rng::new(5);
    let a = common::random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp32, [m, k]),
        Range { lo: -1.0, hi: 1.0 },
    );
    let b = common::random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp32, [k, n]),
        Range { lo: -1.0, hi: 1.0 },
    );
    let (av, bv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    for tier in common::tiers() {
        let got = common::run_plan(
            &common::compile_tier(&program, tier, 2),
            &[a.clone(), b.clone()],
        );
        let c = got[0].to_f64_vec().unwrap();
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
                let mass: f64 = (0..k).map(|p| (av[i * k + p] * bv[p * n + j]).abs()).sum();
                let bound = exact.abs() * 2f64.powi(-24) + k as f64 * 2f64.powi(-24) * mass;
                let err = (c[i * n + j] - exact).abs();
                assert!(
                    err <= bound,
                    "{tier:?} c[{i},{j}] error {err:e} exceeds bound {bound:e}"
                );
            }
        }
    }
}

#[test]
fn softmax_special_values_by_rows_and_columns() {
    use milbridge_mil::ir::{DType, Tensor, TensorType};
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    #[rustfmt::skip]
    let values = [
        -inf, -inf, 1.0, 0.0, 5.0, 2.0,
        1.0, -inf, inf, 1.0, 5.0, -1.0,
        2.0, -inf, 0.0, nan, 5.0, 0.5,
        -inf, -inf, 3.0, 2.0, 5.0, 1.0,
        0.0, -inf, 2.0, 3.0, 5.0, -inf,
    ];
    for dtype in ["fp16", "fp32"] {
        let dt = if dtype == "fp16" {
            DType::Fp16
        } else {
            DType::Fp32
        };
        let text = program(
            "ios18",
            &format!("tensor<{dtype}, [5, 6]> x"),
            &format!(
                "        tensor<{dtype}, [5, 6]> c = softmax(x = x, axis = int32(0))[name = string(\"c\")];\n        tensor<{dtype}, [5, 6]> r = softmax(x = x, axis = int32(-1))[name = string(\"r\")];"
            ),
            "c, r",
        );
        let program = common::verified(&text);
        let x = Tensor::from_f64s(TensorType::new(dt, [5, 6]), &values).unwrap();
        let expected = common::run_reference(&program, std::slice::from_ref(&x));
        for tier in common::tiers() {
            let plan = common::compile_tier(&program, tier, 2);
            assert!(
                plan.stats()
                    .kernels
                    .iter()
                    .any(|name| name.contains("softmax") && name.contains("columns")),
                "{:?}",
                plan.stats().kernels
            );
            let got = common::run_plan(&plan, std::slice::from_ref(&x));
            for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
                common::assert_close(
                    &format!("softmax special {dtype} output {k} {tier:?}"),
                    e,
                    g,
                    TOL_ACCUMULATE,
                );
            }
        }
    }
}
