//! The tier kernels of `kernels::tiered` (plugged by `KernelTable::for_isa`) on every tier the
//! host has (the portable table, and each ISA tier up to the host's, so lower tiers are forced
//! too): binary arithmetic (contiguous, broadcast, strided operands and destinations), the
//! exact unary ops, fp16 unary tables and reductions over dense boxes and strided axes
//! (sums in the portable order, maxima) give the portable kernels' bits exactly (odd lengths,
//! rows split across threads); softmax, dense-box sums and the vector transcendentals stay
//! within the reference bounds.

mod common;

use common::{
    Range, Rng, TOL_ACCUMULATE, Tier, Tol, assert_close, check_against_reference, compile_tier,
    f16_bits, program, random_tensor, run_plan, run_reference, tiers, verified,
};
use milbridge_engine::Plan;
use milbridge_mil::ir::{DType, Tensor, TensorType};

/// Random inputs for the entry function's parameters.
fn random_inputs(program: &milbridge_mil::facts::VerifiedProgram, seed: u64) -> Vec<Tensor> {
    let func = program.program().entry().unwrap();
    let facts = program.facts(func);
    let mut rng = Rng::new(seed);
    program.program().functions[func]
        .params
        .iter()
        .map(|&param| random_tensor(&mut rng, &facts.types[param], Range { lo: -4.0, hi: 4.0 }))
        .collect()
}

/// The raw bytes of every output.
fn output_bytes(plan: &Plan, inputs: &[Tensor]) -> Vec<Vec<u8>> {
    run_plan(plan, inputs)
        .iter()
        .map(|tensor| tensor.bytes().unwrap().to_vec())
        .collect()
}

/// Asserts every tier (1 and 2 threads) produces the portable plan's bytes.
fn assert_tiers_match_portable(what: &str, text: &str, seed: u64) {
    let program = verified(text);
    let inputs = random_inputs(&program, seed);
    let want = output_bytes(&compile_tier(&program, Tier::Portable, 1), &inputs);
    for tier in tiers() {
        for threads in [1, 2] {
            let plan = compile_tier(&program, tier, threads);
            let got = output_bytes(&plan, &inputs);
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                assert!(
                    w == g,
                    "{what}: output {k} differs on {tier:?} with {threads} threads (kernels {:?})",
                    plan.stats().kernels
                );
            }
        }
    }
}

/// `x ∘ y` for every broadcast form the training graphs use: same shape, scalar, a row shared
/// by every head, a per-row column (stride-0 last axis), and a transposed (strided) operand.
#[test]
fn binary_ops_match_the_portable_kernels_bit_for_bit() {
    for dtype in ["fp16", "fp32"] {
        for op in ["add", "sub", "mul", "real_div", "maximum", "minimum"] {
            for (dims, last) in [("4, 33", 257), ("3, 5", 37), ("1, 1", 1), ("2, 3", 16)] {
                let shape = format!("{dims}, {last}");
                let first = dims.split(',').next().unwrap().trim();
                let mid = dims.split(',').nth(1).unwrap().trim();
                let params = format!(
                    "tensor<{dtype}, [{shape}]> x, tensor<{dtype}, [{shape}]> y, \
                     tensor<{dtype}, [1, {mid}, {last}]> row, tensor<{dtype}, [{first}, {mid}, 1]> col, \
                     tensor<{dtype}, [{first}, {last}, {mid}]> xt"
                );
                let body = format!(
                    "        tensor<{dtype}, [{shape}]> a = {op}(x = x, y = y)[name = string(\"a\")];\n\
                     \x20       tensor<{dtype}, [{shape}]> b = {op}(x = x, y = {dtype}(0x1.8p-2))[name = string(\"b\")];\n\
                     \x20       tensor<{dtype}, [{shape}]> c = {op}(x = {dtype}(-0x1.8p+0), y = y)[name = string(\"c\")];\n\
                     \x20       tensor<{dtype}, [{shape}]> d = {op}(x = x, y = row)[name = string(\"d\")];\n\
                     \x20       tensor<{dtype}, [{shape}]> e = {op}(x = col, y = y)[name = string(\"e\")];\n\
                     \x20       tensor<{dtype}, [{shape}]> t = transpose(x = xt, perm = tensor<int32, [3]>([0, 2, 1]))[name = string(\"t\")];\n\
                     \x20       tensor<{dtype}, [{shape}]> f = {op}(x = t, y = y)[name = string(\"f\")];"
                );
                let text = program("ios18", &params, &body, "a, b, c, d, e, f");
                assert_tiers_match_portable(&format!("{op} {dtype} [{shape}]"), &text, 11);
            }
        }
    }
}

/// Every parameterless fp16 unary op on every fp16 bit pattern (including infinities and
/// NaNs) gives the portable kernel's bits, contiguous and strided.
#[test]
fn fp16_unary_ops_match_the_portable_kernels_on_every_input() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let input = Tensor::from_bytes(
        TensorType {
            dtype: DType::Fp16,
            shape: vec![256, 256],
        },
        all,
    )
    .expect("65536 halves");
    for op in [
        "exp", "sigmoid", "silu", "tanh", "erf", "gelu", "sqrt", "abs", "square", "relu",
    ] {
        let call = if op == "gelu" {
            "gelu(x = x, mode = string(\"TANH_APPROXIMATION\"))".to_string()
        } else {
            format!("{op}(x = x)")
        };
        let strided_call = call.replace("x = x", "x = xt");
        let body = format!(
            "        tensor<fp16, [256, 256]> y = {call}[name = string(\"y\")];\n\
             \x20       tensor<fp16, [256, 256]> xt = transpose(x = x, perm = tensor<int32, [2]>([1, 0]))[name = string(\"xt\")];\n\
             \x20       tensor<fp16, [256, 256]> z = {strided_call}[name = string(\"z\")];"
        );
        let text = program("ios18", "tensor<fp16, [256, 256]> x", &body, "y, z");
        let program = verified(&text);
        let inputs = [input.clone()];
        let want: Vec<Vec<u16>> = run_plan(&compile_tier(&program, Tier::Portable, 1), &inputs)
            .iter()
            .map(f16_bits)
            .collect();
        for tier in tiers() {
            let plan = compile_tier(&program, tier, 2);
            let got: Vec<Vec<u16>> = run_plan(&plan, &inputs).iter().map(f16_bits).collect();
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                // NaN results may differ in payload between conversions; compare them as NaN.
                let same = w
                    .iter()
                    .zip(g)
                    .all(|(&a, &b)| a == b || (a & 0x7fff > 0x7c00 && b & 0x7fff > 0x7c00));
                assert!(same, "{op} output {k} differs on {tier:?}");
            }
        }
    }
}

/// Softmax along the last axis (contiguous rows, long and odd, rows split across tasks) and
/// along a strided axis, against the reference.
#[test]
fn softmax_rows_stay_within_the_reference_bound() {
    for dtype in ["fp16", "fp32"] {
        for shape in ["12, 16, 257", "3, 7, 64", "2, 1, 1", "5, 3000"] {
            let body = format!(
                "        tensor<{dtype}, [{shape}]> y = softmax(x = x, axis = int32(-1))[name = string(\"y\")];"
            );
            let text = program(
                "ios18",
                &format!("tensor<{dtype}, [{shape}]> x"),
                &body,
                "y",
            );
            check_against_reference(
                &format!("softmax {dtype} [{shape}]"),
                &text,
                5,
                &[Some(Range {
                    lo: -30.0,
                    hi: 30.0,
                })],
                TOL_ACCUMULATE,
            );
        }
    }
}

/// reduce_sum and reduce_mean over dense trailing boxes (one axis, two axes) and over a
/// strided axis, against the reference.
#[test]
fn reductions_stay_within_the_reference_bound() {
    for dtype in ["fp16", "fp32"] {
        for (op, axes, out_shape) in [
            ("reduce_sum", "tensor<int32, [1]>([-1])", "6, 33, 1"),
            ("reduce_mean", "tensor<int32, [1]>([-1])", "6, 33, 1"),
            ("reduce_sum", "tensor<int32, [2]>([1, 2])", "6, 1, 1"),
            ("reduce_mean", "tensor<int32, [1]>([1])", "6, 1, 517"),
        ] {
            let body = format!(
                "        tensor<{dtype}, [{out_shape}]> y = {op}(x = x, axes = {axes}, keep_dims = bool(true))[name = string(\"y\")];"
            );
            let text = program(
                "ios18",
                &format!("tensor<{dtype}, [6, 33, 517]> x"),
                &body,
                "y",
            );
            check_against_reference(
                &format!("{op} {dtype} axes {axes}"),
                &text,
                9,
                &[None],
                TOL_ACCUMULATE,
            );
        }
    }
}

/// The tier tables name the plugged kernels (so `milbridge check`/stats show them).
#[test]
fn tier_plans_use_the_tier_kernels() {
    let text = program(
        "ios18",
        "tensor<fp16, [4, 64]> x, tensor<fp16, [4, 64]> y",
        "        tensor<fp16, [4, 64]> a = add(x = x, y = y)[name = string(\"a\")];\n\
         \x20       tensor<fp16, [4, 64]> s = sigmoid(x = a)[name = string(\"s\")];\n\
         \x20       tensor<fp16, [4, 64]> p = softmax(x = s, axis = int32(-1))[name = string(\"p\")];",
        // `a` is an output too, so the fusion pass leaves the add and the sigmoid apart.
        "p, a",
    );
    let program = verified(&text);
    for tier in tiers() {
        let kernels = compile_tier(&program, tier, 1).stats().kernels;
        match tier {
            Tier::Portable => assert!(
                kernels.iter().all(|k| k.starts_with("generic_")),
                "{kernels:?}"
            ),
            Tier::Isa(isa) => {
                let prefix = match isa {
                    milbridge_linalg::cpu::Isa::Amx => "avx512",
                    other => other.name(),
                };
                assert!(
                    kernels[0].starts_with(prefix) && kernels[0].contains("add_f16"),
                    "{kernels:?}"
                );
                assert_eq!(kernels[1], "generic_sigmoid_f16_table");
                assert!(kernels[2].contains("softmax_f16"), "{kernels:?}");
            }
        }
    }
}

/// Asserts every tier (1 and 2 threads) produces the portable plan's bytes on `inputs`, NaNs
/// compared as NaN (payloads may differ between conversions).
fn assert_tiers_match_portable_on(what: &str, text: &str, inputs: &[Tensor]) {
    let program = verified(text);
    let want = run_plan(&compile_tier(&program, Tier::Portable, 1), inputs);
    for tier in tiers() {
        for threads in [1, 2] {
            let plan = compile_tier(&program, tier, threads);
            let got = run_plan(&plan, inputs);
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                let (w, g) = (w.to_f64_vec().unwrap(), g.to_f64_vec().unwrap());
                for (i, (&a, &b)) in w.iter().zip(&g).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{what}: output {k} element {i}: {a:e} vs {b:e} on {tier:?} with \
                         {threads} threads (kernels {:?})",
                        plan.stats().kernels
                    );
                }
            }
        }
    }
}

/// The RoPE step of the training graphs on heads viewed through a transpose of `[1, C, 1, S]`
/// (`[1, H, S, D]` with the last axis `S` apart), a slice with a step, and a strided
/// destination (a function output written through a transpose), odd sizes included: the tier
/// kernels give the portable bits.
#[test]
fn strided_binary_rows_match_the_portable_kernels_bit_for_bit() {
    for dtype in ["fp16", "fp32"] {
        for (heads, dim, seq) in [(4, 16, 33), (3, 6, 7), (2, 64, 130)] {
            let channels = heads * dim;
            let params = format!(
                "tensor<{dtype}, [1, {channels}, 1, {seq}]> x, tensor<{dtype}, [{seq}, {dim}]> cos, \
                 tensor<{dtype}, [1, {heads}, {seq}, {dim}]> y"
            );
            let half = dim / 2;
            let body = format!(
                "        tensor<{dtype}, [1, {heads}, {dim}, {seq}]> x4 = reshape(x = x, shape = tensor<int32, [4]>([1, {heads}, {dim}, {seq}]))[name = string(\"x4\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {seq}, {dim}]> xh = transpose(x = x4, perm = tensor<int32, [4]>([0, 1, 3, 2]))[name = string(\"xh\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {seq}, {dim}]> a = mul(x = xh, y = cos)[name = string(\"a\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {seq}, {dim}]> b = add(x = xh, y = y)[name = string(\"b\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {seq}, {half}]> s = slice_by_index(x = y, begin = tensor<int32, [4]>([0, 0, 0, 1]), end = tensor<int32, [4]>([1, {heads}, {seq}, {dim}]), stride = tensor<int32, [4]>([1, 1, 1, 2]))[name = string(\"s\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {seq}, {half}]> c = real_div(x = s, y = {dtype}(0.75))[name = string(\"c\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {seq}, {dim}]> d = sub(x = y, y = a)[name = string(\"d\")];\n\
                 \x20       tensor<{dtype}, [1, {heads}, {dim}, {seq}]> e = transpose(x = d, perm = tensor<int32, [4]>([0, 1, 3, 2]))[name = string(\"e\")];"
            );
            let text = program("ios18", &params, &body, "a, b, c, e");
            let program = verified(&text);
            let inputs = random_inputs(&program, 21);
            assert_tiers_match_portable_on(
                &format!("rope-like {dtype} [{heads}, {seq}, {dim}]"),
                &text,
                &inputs,
            );
        }
    }
}

/// `mul(relu(x), y)`: random values with zeros of both signs mixed in (where `x < 0`), so
/// maxima of rows tie between `-0` and `+0`.
fn signed_zero_body(dtype: &str, shape: &str) -> String {
    format!(
        "        tensor<{dtype}, [{shape}]> r = relu(x = x)[name = string(\"r\")];\n\
         \x20       tensor<{dtype}, [{shape}]> m = mul(x = r, y = y)[name = string(\"m\")];"
    )
}

/// Reductions over the channel axis of `[1, C, 1, S]` (RMSNorm's), over two strided axes,
/// and reduce_max over the last axis: the portable kernel's bits (sums in its order, maxima
/// with its NaN and signed-zero rules), and within the reference bound. (Sums over the dense
/// last axis add in another order: `reductions_stay_within_the_reference_bound`.)
#[test]
fn channel_reductions_and_max_match_the_portable_kernels_bit_for_bit() {
    for dtype in ["fp16", "fp32"] {
        for (c, s) in [(64, 256), (7, 33), (300, 3), (5, 1100)] {
            let shape = format!("1, {c}, 1, {s}");
            let mut body = signed_zero_body(dtype, &shape);
            let mut outputs = Vec::new();
            for (k, (op, axes, out)) in [
                ("reduce_sum", "[1]>([1])", format!("1, 1, 1, {s}")),
                ("reduce_mean", "[1]>([1])", format!("1, 1, 1, {s}")),
                ("reduce_max", "[1]>([1])", format!("1, 1, 1, {s}")),
                ("reduce_sum", "[2]>([1, 2])", format!("1, 1, 1, {s}")),
                ("reduce_max", "[1]>([-1])", format!("1, {c}, 1, 1")),
            ]
            .into_iter()
            .enumerate()
            {
                for (source, tag) in [("x", "x"), ("m", "m")] {
                    let name = format!("o{k}{tag}");
                    body.push_str(&format!(
                        "\n        tensor<{dtype}, [{out}]> {name} = {op}(x = {source}, axes = tensor<int32, {axes}, keep_dims = bool(true))[name = string(\"{name}\")];"
                    ));
                    outputs.push(name);
                }
            }
            let text = program(
                "ios18",
                &format!("tensor<{dtype}, [{shape}]> x, tensor<{dtype}, [{shape}]> y"),
                &body,
                &outputs.join(", "),
            );
            let program_ir = verified(&text);
            let mut inputs = random_inputs(&program_ir, 31);
            assert_tiers_match_portable_on(
                &format!("reductions {dtype} [{shape}]"),
                &text,
                &inputs,
            );
            check_against_reference(
                &format!("reductions {dtype} [{shape}]"),
                &text,
                31,
                &[None, None],
                TOL_ACCUMULATE,
            );
            // A NaN and an infinity in one channel row and one spatial row.
            let mut values = inputs[0].to_f64_vec().unwrap();
            let last = values.len() - 1;
            values[s.min(last)] = f64::NAN;
            values[last] = f64::INFINITY;
            inputs[0] = tensor_of(&inputs[0], &values);
            assert_tiers_match_portable_on(
                &format!("reductions {dtype} [{shape}] with NaN"),
                &text,
                &inputs,
            );
        }
    }
}

/// A tensor of `like`'s type holding `values` (rounded to its dtype).
fn tensor_of(like: &Tensor, values: &[f64]) -> Tensor {
    let bytes: Vec<u8> = match like.ty.dtype {
        DType::Fp16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
            .collect(),
        DType::Fp32 => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        other => panic!("tensor_of {other:?}"),
    };
    Tensor::from_bytes(like.ty.clone(), bytes).expect("same size")
}

/// Unary ops on the tier stream kernel, contiguous and through a transpose, on random values
/// with special ones (±0, ±inf, NaN, subnormals, huge) spliced in.
fn unary_program(dtype: &str, call: &str) -> String {
    let strided = call.replace("x = x", "x = xt");
    let body = format!(
        "        tensor<{dtype}, [37, 70]> y = {call}[name = string(\"y\")];\n\
         \x20       tensor<{dtype}, [37, 70]> xt = transpose(x = xtt, perm = tensor<int32, [2]>([1, 0]))[name = string(\"xt\")];\n\
         \x20       tensor<{dtype}, [37, 70]> z = {strided}[name = string(\"z\")];"
    );
    program(
        "ios18",
        &format!("tensor<{dtype}, [37, 70]> x, tensor<{dtype}, [70, 37]> xtt"),
        &body,
        "y, z",
    )
}

/// Random inputs for [`unary_program`] with special values spliced in.
fn unary_inputs(text: &str, seed: u64) -> Vec<Tensor> {
    let program = verified(text);
    let specials = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-40,
        -3e-8,
        6e4,
        -6e4,
        3e38,
        -1.0,
        1.0,
        -0.5,
        1.25,
    ];
    random_inputs(&program, seed)
        .iter()
        .map(|tensor| {
            let mut values = tensor.to_f64_vec().unwrap();
            for (k, &special) in specials.iter().enumerate() {
                values[k * 97 % 2590] = special;
            }
            tensor_of(tensor, &values)
        })
        .collect()
}

/// The unary ops the stream kernel computes exactly (fp32: all of them; fp16: the ones with
/// parameters) give the portable kernel's bits.
#[test]
fn exact_unary_ops_match_the_portable_kernels_bit_for_bit() {
    for dtype in ["fp16", "fp32"] {
        let mut calls = vec![
            format!("clip(x = x, alpha = {dtype}(-0.5), beta = {dtype}(1.25))"),
            format!("clip(x = x, alpha = {dtype}(0), beta = {dtype}(6))"),
            format!("clip(x = x, alpha = {dtype}(-2), beta = {dtype}(-0.0))"),
            format!("inverse(x = x, epsilon = {dtype}(0))"),
        ];
        if dtype == "fp32" {
            for op in ["abs", "square", "sqrt", "relu"] {
                calls.push(format!("{op}(x = x)"));
            }
        }
        for call in calls {
            let text = unary_program(dtype, &call);
            let inputs = unary_inputs(&text, 41);
            assert_tiers_match_portable_on(&format!("{call} {dtype}"), &text, &inputs);
        }
    }
}

/// fp32 exp, sigmoid, silu, rsqrt and inverse (and fp16 rsqrt/inverse) on the tier kernels
/// stay within the reference bound of the engine's precision table.
#[test]
fn approximate_unary_ops_stay_within_the_reference_bound() {
    /// `ew::stream`'s bounds (≤ 4 f32 ulps: 4.8e-7 relative) for fp32; fp16 one ulp.
    const TOL_VECTOR_UNARY: Tol = Tol {
        f16_ulps: 1.0,
        f32_rel: 4.8e-7,
        atol_scale: 0.0,
    };
    for dtype in ["fp16", "fp32"] {
        let mut calls = vec![
            format!("rsqrt(x = x, epsilon = {dtype}(0.001))"),
            format!("inverse(x = x, epsilon = {dtype}(0.001))"),
        ];
        if dtype == "fp32" {
            for op in ["exp", "sigmoid", "silu"] {
                calls.push(format!("{op}(x = x)"));
            }
        }
        for call in calls {
            let text = unary_program(dtype, &call);
            let range = if call.starts_with("rsqrt") {
                Range { lo: 0.0, hi: 50.0 }
            } else {
                Range {
                    lo: -30.0,
                    hi: 30.0,
                }
            };
            check_against_reference(
                &format!("{call} {dtype}"),
                &text,
                43,
                &[Some(range), Some(range)],
                TOL_VECTOR_UNARY,
            );
        }
    }
}

/// Compiles `program` for `tier` with `threads` threads in the fast profile (the portable
/// table for [`Tier::Portable`]).
fn compile_fast(
    program: &milbridge_mil::facts::VerifiedProgram,
    tier: Tier,
    threads: usize,
) -> Plan {
    match tier {
        Tier::Portable => compile_tier(program, tier, threads),
        Tier::Isa(isa) => milbridge_engine::compile(
            program,
            &milbridge_engine::CompileOptions {
                isa,
                threads,
                precision: milbridge_engine::Precision::Fast,
                function: None,
            },
        )
        .expect("compiles"),
    }
}

/// Every tier (1 and 2 threads) against the reference on `inputs`, within `tol`.
fn check_on(what: &str, text: &str, inputs: &[Tensor], tol: Tol) {
    check_on_profile(what, text, inputs, tol, false);
}

/// [`check_on`] in the exact or (`fast`) the fast profile.
fn check_on_profile(what: &str, text: &str, inputs: &[Tensor], tol: Tol, fast: bool) {
    let program = verified(text);
    let expected = run_reference(&program, inputs);
    for tier in tiers() {
        for threads in [1, 2] {
            let plan = if fast {
                compile_fast(&program, tier, threads)
            } else {
                compile_tier(&program, tier, threads)
            };
            let got = run_plan(&plan, inputs);
            for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
                let what = format!("{what} [{tier:?}, {threads} threads, output {k}]");
                assert_close(&what, e, g, tol);
            }
        }
    }
}

/// Softmax over the channels of `[1, C, 1, S]` (the vocabulary softmax): long and short
/// channel axes, widths that are not a multiple of the chunk, a strided (transposed) source
/// that keeps the portable kernel, and columns holding NaN, +inf, only -inf, or some -inf
/// (NaN, NaN, NaN, and zeros there), against the reference; the tier plans name the kernel.
#[test]
fn softmax_over_channels_stays_within_the_reference_bound() {
    for dtype in ["fp16", "fp32"] {
        for (c, s) in [(3000, 70), (7, 129), (200, 1), (130, 64), (40, 512)] {
            let shape = format!("1, {c}, 1, {s}");
            let body = format!(
                "        tensor<{dtype}, [{shape}]> y = softmax(x = x, axis = int32(1))[name = string(\"y\")];\n\
                 \x20       tensor<{dtype}, [1, {c}, 1, {s}]> xt = transpose(x = xtt, perm = tensor<int32, [4]>([0, 3, 2, 1]))[name = string(\"xt\")];\n\
                 \x20       tensor<{dtype}, [{shape}]> z = softmax(x = xt, axis = int32(1))[name = string(\"z\")];"
            );
            let text = program(
                "ios18",
                &format!("tensor<{dtype}, [{shape}]> x, tensor<{dtype}, [1, {s}, 1, {c}]> xtt"),
                &body,
                "y, z",
            );
            let program = verified(&text);
            let mut inputs = random_inputs(&program, 17);
            let mut values = inputs[0].to_f64_vec().unwrap();
            for v in values.iter_mut() {
                *v *= 6.0;
            }
            if s >= 4 {
                // Column 0: a NaN; column 1: +inf; column 2: only -inf; column 3: some -inf.
                values[(c / 2) * s] = f64::NAN;
                values[(c / 3) * s + 1] = f64::INFINITY;
                for r in 0..c {
                    values[r * s + 2] = f64::NEG_INFINITY;
                    if r % 3 == 0 {
                        values[r * s + 3] = f64::NEG_INFINITY;
                    }
                }
            }
            inputs[0] = tensor_of(&inputs[0], &values);
            check_on(
                &format!("softmax over channels {dtype} [{shape}]"),
                &text,
                &inputs,
                TOL_ACCUMULATE,
            );
            if s > 1 {
                for tier in tiers() {
                    let kernels = compile_tier(&program, tier, 1).stats().kernels;
                    let tiered = matches!(tier, Tier::Isa(_));
                    assert_eq!(
                        kernels[0].contains("softmaxcolumns"),
                        tiered,
                        "{tier:?}: {kernels:?}"
                    );
                }
            }
        }
    }
}

/// `pow(x, e)` for a constant `e`: fp16 by tables (every fp16 input, bit-identical to the
/// portable kernel, any exponent), fp32 on the vector kernel bit-identical for e = 1, 2, -1,
/// 0.5 (special values included), for -0.5 and 3 bit-identical in the exact profile (the
/// portable kernel) and within the precision table's bound in the fast one, and the portable
/// kernel for other exponents and non-constant ones.
#[test]
fn pow_with_a_constant_exponent_matches_the_portable_kernel_or_its_bound() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let input = Tensor::from_bytes(
        TensorType {
            dtype: DType::Fp16,
            shape: vec![256, 256],
        },
        all,
    )
    .expect("65536 halves");
    for e in ["2", "0.5", "-0.5", "-1", "1", "3", "1.7", "-2.25"] {
        let body = format!(
            "        tensor<fp16, [256, 256]> y = pow(x = x, y = fp16({e}))[name = string(\"y\")];\n\
             \x20       tensor<fp16, [256, 256]> xt = transpose(x = x, perm = tensor<int32, [2]>([1, 0]))[name = string(\"xt\")];\n\
             \x20       tensor<fp16, [256, 256]> z = pow(x = xt, y = fp16({e}))[name = string(\"z\")];"
        );
        let text = program("ios18", "tensor<fp16, [256, 256]> x", &body, "y, z");
        assert_tiers_match_portable_on(
            &format!("pow fp16 {e}"),
            &text,
            std::slice::from_ref(&input),
        );
        let program = verified(&text);
        if let Some(Tier::Isa(isa)) = tiers().last().copied() {
            let kernels = compile_tier(&program, Tier::Isa(isa), 1).stats().kernels;
            assert_eq!(kernels[0], "generic_pow_f16_table", "{kernels:?}");
        }
    }
    for e in ["2", "0.5", "-1", "1", "1.7", "-0.5", "3"] {
        let text = unary_program("fp32", &format!("pow(x = x, y = fp32({e}))"));
        let inputs = unary_inputs(&text, 47);
        assert_tiers_match_portable_on(&format!("pow fp32 {e}"), &text, &inputs);
    }
    // -0.5: 1/√x (two roundings, ≤ 2 f32 ulps); 3: x·x·x (≤ 2 f32 ulps): 2.4e-7 relative.
    const TOL_POW: Tol = Tol {
        f16_ulps: 0.0,
        f32_rel: 2.4e-7,
        atol_scale: 0.0,
    };
    for e in ["-0.5", "3"] {
        let text = unary_program("fp32", &format!("pow(x = x, y = fp32({e}))"));
        let mut inputs = unary_inputs(&text, 53);
        // Keep x³ out of the subnormal range, where the bound is absolute.
        if e == "3" {
            for tensor in inputs.iter_mut() {
                let values: Vec<f64> = tensor
                    .to_f64_vec()
                    .unwrap()
                    .into_iter()
                    .map(|v| {
                        if v != 0.0 && v.abs() < 1e-12 {
                            1e-12
                        } else {
                            v
                        }
                    })
                    .collect();
                *tensor = tensor_of(tensor, &values);
            }
        }
        check_on_profile(&format!("pow fp32 {e} fast"), &text, &inputs, TOL_POW, true);
        let program = verified(&text);
        if let Some(Tier::Isa(isa)) = tiers().last().copied() {
            let kernels = compile_fast(&program, Tier::Isa(isa), 1).stats().kernels;
            assert!(kernels[0].ends_with("_pow_f32_16n") || kernels[0].ends_with("_pow_f32_8n"));
        }
    }
    // A run-time exponent (not one broadcast value) keeps the portable kernel's bits.
    let text = program(
        "ios18",
        "tensor<fp32, [37, 70]> x, tensor<fp32, [37, 70]> y",
        "        tensor<fp32, [37, 70]> z = pow(x = x, y = y)[name = string(\"z\")];",
        "z",
    );
    let program_v = verified(&text);
    let inputs: Vec<Tensor> = random_inputs(&program_v, 3)
        .iter()
        .map(|t| {
            tensor_of(
                t,
                &t.to_f64_vec()
                    .unwrap()
                    .iter()
                    .map(|v| v.abs())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_tiers_match_portable_on("pow fp32 tensor exponent", &text, &inputs);
}

/// fp16 `log(x + ε)` by a table per ε: every fp16 input, bit-identical.
#[test]
fn fp16_log_matches_the_portable_kernel_on_every_input() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let input = Tensor::from_bytes(
        TensorType {
            dtype: DType::Fp16,
            shape: vec![256, 256],
        },
        all,
    )
    .expect("65536 halves");
    for eps in ["0", "0.00001", "-1"] {
        let body = format!(
            "        tensor<fp16, [256, 256]> y = log(x = x, epsilon = fp16({eps}))[name = string(\"y\")];"
        );
        let text = program("ios18", "tensor<fp16, [256, 256]> x", &body, "y");
        assert_tiers_match_portable_on(
            &format!("log fp16 eps {eps}"),
            &text,
            std::slice::from_ref(&input),
        );
    }
}

/// fp32 gelu's tanh and sigmoid approximations on the vector kernel in the fast profile,
/// contiguous and strided, with special values spliced in, within the precision table's
/// `5 + 3·|z|` f32 ulps (|z| ≤ 11 on inputs in [-4, 4]: 4e-6 relative); every mode in the
/// exact profile keeps the portable kernel, and exact gelu is vector code in the fast one
/// (its bound is checked with log, tanh and erf).
#[test]
fn fp32_gelu_approximations_stay_within_the_reference_bound() {
    const TOL_GELU: Tol = Tol {
        f16_ulps: 0.0,
        f32_rel: 4e-6,
        atol_scale: 0.0,
    };
    for (mode, name) in [
        ("TANH_APPROXIMATION", "gelutanh"),
        ("SIGMOID_APPROXIMATION", "gelusigmoid"),
        ("EXACT", "gelu"),
    ] {
        let text = unary_program("fp32", &format!("gelu(x = x, mode = string(\"{mode}\"))"));
        if mode != "EXACT" {
            let inputs = unary_inputs(&text, 59);
            check_on_profile(&format!("gelu {mode} fp32"), &text, &inputs, TOL_GELU, true);
        }
        let program = verified(&text);
        for tier in tiers() {
            let exact = compile_tier(&program, tier, 1).stats().kernels;
            assert_eq!(exact[0], format!("generic_{name}_f32_rows"));
            let kernels = compile_fast(&program, tier, 1).stats().kernels;
            let vector = matches!(tier, Tier::Isa(_));
            assert_eq!(
                !kernels[0].starts_with("generic_") || kernels[0].ends_with("_8n"),
                vector,
                "{tier:?}: {kernels:?}"
            );
            assert!(kernels[0].contains(&format!("_{name}_f32")), "{kernels:?}");
        }
    }
}

/// fp32 log (default and explicit ε), tanh, erf and exact gelu on the vector kernels in the
/// fast profile, contiguous and strided, with special values spliced in, within the
/// precision table's bounds (≤ 6 f32 ulps: 8e-7 relative with the reference's own
/// rounding); the exact profile keeps the portable kernel.
#[test]
fn fp32_log_tanh_erf_gelu_stay_within_the_reference_bound_in_the_fast_profile() {
    const TOL_POLY: Tol = Tol {
        f16_ulps: 0.0,
        f32_rel: 8e-7,
        atol_scale: 0.0,
    };
    for (call, name) in [
        ("log(x = x)", "log"),
        ("log(x = x, epsilon = fp32(0.001))", "log"),
        ("tanh(x = x)", "tanh"),
        ("erf(x = x)", "erf"),
        ("gelu(x = x, mode = string(\"EXACT\"))", "gelu"),
    ] {
        let text = unary_program("fp32", call);
        let mut inputs = unary_inputs(&text, 61);
        check_on_profile(&format!("{call} fp32"), &text, &inputs, TOL_POLY, true);
        // Positive inputs over many binades (log's useful range).
        for tensor in &mut inputs {
            let values: Vec<f64> = tensor
                .to_f64_vec()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(k, v)| v.abs() * 10f64.powi((k % 13) as i32 - 6))
                .collect();
            *tensor = tensor_of(tensor, &values);
        }
        check_on_profile(&format!("{call} fp32 wide"), &text, &inputs, TOL_POLY, true);
        let program = verified(&text);
        for tier in tiers() {
            let exact = compile_tier(&program, tier, 1).stats().kernels;
            assert_eq!(exact[0], format!("generic_{name}_f32_rows"));
            let kernels = compile_fast(&program, tier, 1).stats().kernels;
            let vector = matches!(tier, Tier::Isa(_));
            assert_eq!(
                !kernels[0].starts_with("generic_") || kernels[0].ends_with("_8n"),
                vector,
                "{tier:?}: {kernels:?}"
            );
            assert!(kernels[0].contains(&format!("_{name}_f32")), "{kernels:?}");
        }
    }
}

/// IEEE maximum/minimum on every pair of special values (signed zeros, infinities, NaN,
/// subnormals, ties), contiguous and against a broadcast `-0`, fp16 and fp32: the tier
/// kernels give the portable kernel's values (any NaN for NaN) and are the vector kernels.
#[test]
fn maximum_and_minimum_match_the_portable_kernels_on_special_pairs() {
    let specials = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-40,
        -3e-8,
        1.0,
        -1.0,
        0.5,
        -0.5,
        6e4,
        -6e4,
    ];
    let n = specials.len() * specials.len();
    let x: Vec<f64> = (0..n).map(|k| specials[k / specials.len()]).collect();
    let y: Vec<f64> = (0..n).map(|k| specials[k % specials.len()]).collect();
    for dtype in ["fp16", "fp32"] {
        for op in ["maximum", "minimum"] {
            let body = format!(
                "        tensor<{dtype}, [1, {n}]> a = {op}(x = x, y = y)[name = string(\"a\")];\n\
                 \x20       tensor<{dtype}, [1, {n}]> b = {op}(x = x, y = {dtype}(-0.0))[name = string(\"b\")];\n\
                 \x20       tensor<{dtype}, [1, {n}]> c = {op}(x = {dtype}(0.0), y = y)[name = string(\"c\")];"
            );
            let params = format!("tensor<{dtype}, [1, {n}]> x, tensor<{dtype}, [1, {n}]> y");
            let text = program("ios18", &params, &body, "a, b, c");
            let program_v = verified(&text);
            let like = random_inputs(&program_v, 3);
            let inputs = vec![tensor_of(&like[0], &x), tensor_of(&like[1], &y)];
            assert_tiers_match_portable_on(&format!("{op} {dtype} specials"), &text, &inputs);
            let zero_pairs = run_plan(&compile_tier(&program_v, Tier::Portable, 1), &inputs);
            // Spot-check the portable semantics the tiers are held to: maximum(-0, +0) = +0,
            // minimum(+0, -0) = -0 (pairs 1·13 + 0 and 0·13 + 1).
            let a = zero_pairs[0].to_f64_vec().unwrap();
            let (tie_a, tie_b) = (a[specials.len()], a[1]);
            if op == "maximum" {
                assert!(tie_a.to_bits() == 0 && tie_b.to_bits() == 0, "{a:?}");
            } else {
                assert!(
                    tie_a.is_sign_negative() && tie_b.is_sign_negative(),
                    "{a:?}"
                );
            }
            for tier in tiers() {
                let kernels = compile_tier(&program_v, tier, 1).stats().kernels;
                let vector = matches!(tier, Tier::Isa(_));
                assert_eq!(
                    kernels[0].contains(&format!("_{op}_")) && kernels[0].ends_with('n'),
                    vector,
                    "{tier:?}: {kernels:?}"
                );
            }
        }
    }
}
