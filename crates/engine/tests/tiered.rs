//! The tier kernels of `kernels::tiered` (plugged by `KernelTable::for_isa`) on every tier the
//! host has: binary arithmetic and fp16 unary ops give the portable kernels' bits exactly
//! (contiguous, broadcast and strided operands, odd lengths, rows split across threads);
//! softmax and reductions stay within the reference bounds.

mod common;

use common::{
    Range, Rng, TOL_ACCUMULATE, Tier, check_against_reference, compile_tier, f16_bits, program,
    random_tensor, run_plan, tiers, verified,
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
        for op in ["add", "sub", "mul", "real_div"] {
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
