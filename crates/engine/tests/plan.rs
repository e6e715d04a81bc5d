//! Plan-level properties: view folding (the spatially packed dynamic matmul runs with no copy),
//! memory planning, dead-code elimination, constant folding, serialisation round trips and
//! clean errors for corrupt or foreign streams, buffer checks, multi-function programs.

mod common;

use common::{
    Rng, TOL_ACCUMULATE, TOL_ELEMENTWISE, Tier, assert_close, compile_tier, program, random_tensor,
    run_plan, run_reference, tiers, verified,
};
use milbridge_engine::plan::serial::FORMAT_VERSION;
use milbridge_engine::{CompileOptions, Error, Plan, compile, compile_unfused};
use milbridge_mil::ir::{DType, Tensor, TensorType};

/// mil-spec 8.5: `y[0,o,0,t] = Σ_i x[0,i,0,t] · x[0,i,0,SEQ+o]` with the weights sliced out of
/// the input, reshaped and transposed.
fn dynamic_matmul(ic: usize, oc: usize, seq: usize) -> String {
    let sp = seq + oc;
    let body = format!(
        "        tensor<int32, [4]> b0 = const()[name = string(\"b0\"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [4]> sa = const()[name = string(\"sa\"), val = tensor<int32, [4]>([1, {ic}, 1, {seq}])];
        tensor<fp16, [1, {ic}, 1, {seq}]> act = slice_by_size(x = x, begin = b0, size = sa)[name = string(\"act\")];
        tensor<int32, [4]> bw = const()[name = string(\"bw\"), val = tensor<int32, [4]>([0, 0, 0, {seq}])];
        tensor<int32, [4]> sw = const()[name = string(\"sw\"), val = tensor<int32, [4]>([1, {ic}, 1, {oc}])];
        tensor<fp16, [1, {ic}, 1, {oc}]> wt = slice_by_size(x = x, begin = bw, size = sw)[name = string(\"wt\")];
        tensor<int32, [4]> ra = const()[name = string(\"ra\"), val = tensor<int32, [4]>([1, 1, {ic}, {seq}])];
        tensor<fp16, [1, 1, {ic}, {seq}]> a2 = reshape(shape = ra, x = act)[name = string(\"a2\")];
        tensor<int32, [4]> pm = const()[name = string(\"pm\"), val = tensor<int32, [4]>([0, 1, 3, 2])];
        tensor<fp16, [1, 1, {seq}, {ic}]> a3 = transpose(perm = pm, x = a2)[name = string(\"a3\")];
        tensor<int32, [4]> rw = const()[name = string(\"rw\"), val = tensor<int32, [4]>([1, 1, {ic}, {oc}])];
        tensor<fp16, [1, 1, {ic}, {oc}]> W = reshape(shape = rw, x = wt)[name = string(\"W\")];
        bool bF = const()[name = string(\"bF\"), val = bool(false)];
        tensor<fp16, [1, 1, {seq}, {oc}]> yh = matmul(transpose_x = bF, transpose_y = bF, x = a3, y = W)[name = string(\"yh\")];
        tensor<fp16, [1, 1, {oc}, {seq}]> yt = transpose(perm = pm, x = yh)[name = string(\"yt\")];
        tensor<int32, [4]> ro = const()[name = string(\"ro\"), val = tensor<int32, [4]>([1, {oc}, 1, {seq}])];
        tensor<fp16, [1, {oc}, 1, {seq}]> y = reshape(shape = ro, x = yt)[name = string(\"y\")];"
    );
    program(
        "ios18",
        &format!("tensor<fp16, [1, {ic}, 1, {sp}]> x"),
        &body,
        "y",
    )
}

#[test]
fn spatially_packed_dynamic_matmul_makes_no_copy() {
    for (ic, oc, seq) in [(4, 2, 3), (64, 48, 32), (33, 17, 20)] {
        let text = dynamic_matmul(ic, oc, seq);
        let program = verified(&text);
        let mut rng = Rng::new(ic as u64);
        let x = random_tensor(
            &mut rng,
            &TensorType::new(DType::Fp16, [1, ic, 1, seq + oc]),
            common::Range { lo: -1.0, hi: 1.0 },
        );
        let expected = run_reference(&program, std::slice::from_ref(&x));
        let xs = x.to_f64_vec().unwrap();
        let sp = seq + oc;
        for tier in tiers() {
            let plan = compile_tier(&program, tier, 2);
            let stats = plan.stats();
            assert_eq!(stats.materialize_steps, 0, "{tier:?}: {stats:#?}");
            assert_eq!(stats.concat_steps, 0);
            assert_eq!(stats.steps, 1, "only the matmul runs: {stats:#?}");
            assert!(
                stats.arena_allocations <= 1,
                "no intermediate, at most the matmul's scratch: {stats:#?}"
            );
            assert!(stats.folded_views >= 6, "{stats:#?}");
            let got = run_plan(&plan, std::slice::from_ref(&x));
            assert_close(
                &format!("dynamic matmul {ic}x{oc}x{seq} {tier:?}"),
                &expected[0],
                &got[0],
                TOL_ACCUMULATE,
            );
            // The closed form, in f64.
            let y = got[0].to_f64_vec().unwrap();
            for o in 0..oc {
                for t in 0..seq {
                    let exact: f64 = (0..ic).map(|i| xs[i * sp + t] * xs[i * sp + seq + o]).sum();
                    let scale: f64 = (0..ic)
                        .map(|i| (xs[i * sp + t] * xs[i * sp + seq + o]).abs())
                        .sum();
                    let got = y[o * seq + t];
                    assert!(
                        (got - exact).abs()
                            <= common::f16_ulp(exact) + ic as f64 * 2f64.powi(-23) * scale,
                        "y[{o},{t}] = {got}, exact {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn intermediates_share_the_arena() {
    // A chain of elementwise ops: each intermediate dies after the next op, so at most two are
    // live at once and the arena is far smaller than the sum of the intermediates.
    let mut body =
        String::from("        tensor<fp32, [64, 64]> h0 = exp(x = x)[name = string(\"h0\")];\n");
    for k in 1..8 {
        body += &format!(
            "        tensor<fp32, [64, 64]> h{k} = mul(x = h{}, y = x)[name = string(\"h{k}\")];\n",
            k - 1
        );
    }
    body += "        tensor<fp32, [64, 64]> y = add(x = h7, y = h0)[name = string(\"y\")];";
    let text = program("ios18", "tensor<fp32, [64, 64]> x", &body, "y");
    let program = verified(&text);
    // Memory planning without fusion (the fused plan has no intermediates left but h0).
    let plan = compile_unfused(&program, &CompileOptions::default()).unwrap();
    let stats = plan.stats();
    assert_eq!(stats.steps, 9);
    assert_eq!(stats.arena_allocations, 8, "{stats:#?}");
    assert_eq!(stats.arena_bytes_unshared, 8 * 64 * 64 * 4);
    // h0 lives to the end; at most two of h1..h7 are live together.
    assert_eq!(stats.arena_bytes, 3 * 64 * 64 * 4, "{stats:#?}");
    let mut rng = Rng::new(3);
    let x = random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp32, [64, 64]),
        common::Range { lo: -1.0, hi: 1.0 },
    );
    let expected = run_reference(&program, std::slice::from_ref(&x));
    // Nine roundings in a row, the first the tier's vector exp (≤ 2 f32 ulps), and
    // y = eˣ·(1 + x⁷) cancels near x = -1: an ulp or two of the terms (|terms| < 3, 2·10⁻⁸ of
    // the largest output), more than one op's TOL_ELEMENTWISE.
    let chain = common::Tol {
        f32_rel: 8e-7,
        atol_scale: 2e-8,
        ..TOL_ELEMENTWISE
    };
    assert_close(
        "chain",
        &expected[0],
        &run_plan(&plan, std::slice::from_ref(&x))[0],
        chain,
    );
    // Fused: h0 (two users) is one step, h1..h7 and y are one more; only h0 needs the arena.
    let fused = milbridge_engine::compile_fused(&program, &CompileOptions::default()).unwrap();
    let stats = fused.stats();
    assert_eq!((stats.steps, stats.fused_steps, stats.fused_ops), (2, 1, 8));
    assert_eq!(stats.arena_allocations, 1, "{stats:#?}");
    assert_eq!(stats.arena_bytes, 64 * 64 * 4, "{stats:#?}");
    assert_close(
        "fused chain",
        &expected[0],
        &run_plan(&fused, &[x])[0],
        chain,
    );
}

#[test]
fn dead_code_is_removed_and_const_chains_fold() {
    let body = "        tensor<fp16, [4, 3]> c = const()[name = string(\"c\"), val = tensor<fp16, [4, 3]>([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])];
        tensor<fp16, [3, 4]> ct = transpose(x = c, perm = tensor<int32, [2]>([1, 0]))[name = string(\"ct\")];
        tensor<fp16, [3, 4]> ce = exp(x = ct)[name = string(\"ce\")];
        tensor<fp16, [2, 4]> y = matmul(x = x, y = ct)[name = string(\"y\")];
        tensor<fp16, [2, 3]> dead = tanh(x = x)[name = string(\"dead\")];";
    let text = program("ios18", "tensor<fp16, [2, 3]> x", body, "y");
    let program = verified(&text);
    let plan = compile(&program, &CompileOptions::default()).unwrap();
    let stats = plan.stats();
    assert_eq!(stats.steps, 1, "only the matmul runs: {stats:#?}");
    assert!(stats.dead_ops >= 2, "tanh and exp are dead: {stats:#?}");
}

#[test]
fn plans_round_trip_through_bytes() {
    let text = dynamic_matmul(8, 5, 6);
    let program = verified(&text);
    let mut rng = Rng::new(11);
    let x = random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp16, [1, 8, 1, 11]),
        common::Range { lo: -1.0, hi: 1.0 },
    );
    for tier in tiers() {
        let plan = compile_tier(&program, tier, 2);
        let bytes = plan.to_bytes();
        let back = Plan::from_bytes(&bytes).expect("round trip");
        assert_eq!(back.stats(), plan.stats());
        assert_eq!(back.to_bytes(), bytes, "serialisation is deterministic");
        let a = run_plan(&plan, std::slice::from_ref(&x));
        let b = run_plan(&back, std::slice::from_ref(&x));
        assert_eq!(a, b, "{tier:?}");
    }
}

#[test]
fn corrupt_truncated_and_foreign_streams_are_clean_errors() {
    let program = verified(&dynamic_matmul(4, 2, 3));
    let plan = compile_tier(&program, Tier::Portable, 1);
    let bytes = plan.to_bytes();
    // Every single flipped byte is caught.
    for idx in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[idx] ^= 0x40;
        match Plan::from_bytes(&flipped) {
            Err(Error::CorruptPlan(_) | Error::PlanVersion { .. }) => {}
            other => panic!("flipping byte {idx} gave {other:?}"),
        }
    }
    // Every truncation is caught.
    for len in [0, 1, 7, 8, 20, 51, 52, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(Plan::from_bytes(&bytes[..len]), Err(Error::CorruptPlan(_))),
            "truncated to {len}"
        );
    }
    // Another format version.
    let mut other = bytes.clone();
    other[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        Plan::from_bytes(&other).unwrap_err(),
        Error::PlanVersion {
            found: FORMAT_VERSION + 1,
            expected: FORMAT_VERSION
        }
    );
    // Trailing garbage.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Plan::from_bytes(&longer),
        Err(Error::CorruptPlan(_))
    ));
}

#[test]
fn buffer_lengths_and_counts_are_checked() {
    let program = verified(&dynamic_matmul(4, 2, 3));
    let plan = compile_tier(&program, Tier::Portable, 1);
    let mut ws = plan.workspace();
    let input = vec![0u64; 5];
    let bytes: &[u8] = &bytemuck::cast_slice::<u64, u8>(&input)[..38];
    let mut out = vec![0u64; 2];
    let out_bytes: &mut [u8] = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut out)[..12];
    let error = plan.eval(&mut ws, &[bytes], &mut [out_bytes]).unwrap_err();
    assert_eq!(
        error,
        Error::BufferLength {
            what: "input",
            name: "x".into(),
            ty: "tensor<fp16, [1, 4, 1, 5]>".into(),
            expected: 40,
            got: 38
        }
    );
    assert_eq!(
        error.to_string(),
        "R001: input `x` (tensor<fp16, [1, 4, 1, 5]>) needs 40 bytes, got 38"
    );
    let error = plan.eval(&mut ws, &[], &mut []).unwrap_err();
    assert_eq!(
        error,
        Error::BufferCount {
            what: "input",
            expected: 1,
            got: 0
        }
    );
}

#[test]
fn outputs_that_are_params_consts_or_repeated_get_copies() {
    let body = "        tensor<fp32, [3]> c = const()[name = string(\"c\"), val = tensor<fp32, [3]>([1, 2, 3])];
        tensor<fp32, [3]> y = add(x = x, y = c)[name = string(\"y\")];";
    let text = program("ios18", "tensor<fp32, [3]> x", body, "y, x, c, y");
    let program = verified(&text);
    let plan = compile(&program, &CompileOptions::default()).unwrap();
    assert_eq!(plan.stats().materialize_steps, 3);
    let x = Tensor::from_f64s(TensorType::new(DType::Fp32, [3]), &[0.5, -1.0, 4.0]).unwrap();
    let got = run_plan(&plan, std::slice::from_ref(&x));
    assert_eq!(got[0].to_f64_vec().unwrap(), vec![1.5, 1.0, 7.0]);
    assert_eq!(got[1], x);
    assert_eq!(got[2].to_f64_vec().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(got[3], got[0]);
}

#[test]
fn multi_function_programs_compile_the_chosen_function() {
    let text = "program(1.3)
{
    func main<ios18>(tensor<fp32, [2]> x) {
        tensor<fp32, [2]> y = exp(x = x)[name = string(\"y\")];
    } -> (y);
    func other<ios18>(tensor<fp32, [2]> x) {
        tensor<fp32, [2]> y = abs(x = x)[name = string(\"y\")];
    } -> (y);
}
";
    let program = verified(text);
    let x = Tensor::from_f64s(TensorType::new(DType::Fp32, [2]), &[-1.0, 2.0]).unwrap();
    let other = compile(
        &program,
        &CompileOptions {
            function: Some("other".into()),
            ..CompileOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        run_plan(&other, std::slice::from_ref(&x))[0]
            .to_f64_vec()
            .unwrap(),
        vec![1.0, 2.0]
    );
    let main = compile(&program, &CompileOptions::default()).unwrap();
    assert_eq!(
        run_plan(&main, std::slice::from_ref(&x))[0]
            .to_f64_vec()
            .unwrap(),
        vec![(-1f32).exp() as f64, 2f32.exp() as f64]
    );
    assert_eq!(
        compile(
            &program,
            &CompileOptions {
                function: Some("nope".into()),
                ..CompileOptions::default()
            }
        )
        .unwrap_err(),
        Error::NoSuchFunction("nope".into())
    );
}

#[test]
fn runtime_errors_carry_their_codes() {
    let text = program(
        "ios18",
        "tensor<fp32, [4, 6]> x, tensor<int32, [2]> begin",
        "        tensor<fp32, [2, 3]> a = slice_by_size(x = x, begin = begin, size = tensor<int32, [2]>([2, 3]))[name = string(\"a\")];",
        "a",
    );
    let verified_program = verified(&text);
    let plan = compile(&verified_program, &CompileOptions::default()).unwrap();
    let x = Tensor::from_f64s(TensorType::new(DType::Fp32, [4, 6]), &[0.0; 24]).unwrap();
    let begin = Tensor::from_f64s(TensorType::new(DType::Int32, [2]), &[3.0, 0.0]).unwrap();
    let error = common::try_run_plan(&plan, &[x.clone(), begin]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Runtime {
                code: milbridge_mil::diag::DiagCode::R003,
                ..
            }
        ),
        "{error:?}"
    );
    let begin = Tensor::from_f64s(TensorType::new(DType::Int32, [2]), &[-2.0, -3.0]).unwrap();
    let got = common::try_run_plan(&plan, &[x, begin]).unwrap();
    assert_eq!(got[0].ty.shape, vec![2, 3]);
    let text = program(
        "ios18",
        "tensor<fp32, [5]> x, tensor<int32, [2]> i",
        "        tensor<fp32, [2]> g = gather(x = x, indices = i)[name = string(\"g\")];",
        "g",
    );
    let verified_program = verified(&text);
    let plan = compile(&verified_program, &CompileOptions::default()).unwrap();
    let x = Tensor::from_f64s(TensorType::new(DType::Fp32, [5]), &[0.0; 5]).unwrap();
    let i = Tensor::from_f64s(TensorType::new(DType::Int32, [2]), &[1.0, 5.0]).unwrap();
    let error = common::try_run_plan(&plan, &[x, i]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Runtime {
                code: milbridge_mil::diag::DiagCode::R002,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("gather index 5 is out of range for an axis of size 5"),
        "{error}"
    );
}

#[test]
fn fallback_tiers_match_the_best_tier() {
    // Generic and Avx2 tables on this (AVX-512/AMX) machine give the same result as the best.
    let program = verified(&dynamic_matmul(40, 24, 16));
    let mut rng = Rng::new(5);
    let x = random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp16, [1, 40, 1, 40]),
        common::Range { lo: -1.0, hi: 1.0 },
    );
    let expected = run_reference(&program, std::slice::from_ref(&x));
    for tier in tiers() {
        let got = run_plan(&compile_tier(&program, tier, 2), std::slice::from_ref(&x));
        assert_close(&format!("{tier:?}"), &expected[0], &got[0], TOL_ACCUMULATE);
    }
}

#[test]
fn fast_precision_switches_matmul_to_bf16_tiles_where_available() {
    use milbridge_engine::Precision;
    use milbridge_linalg::cpu::{self, Isa};
    let program = verified(&dynamic_matmul(64, 48, 32));
    let mut rng = Rng::new(21);
    let x = random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp16, [1, 64, 1, 80]),
        common::Range { lo: -1.0, hi: 1.0 },
    );
    let expected = run_reference(&program, std::slice::from_ref(&x));
    for isa in Isa::ALL {
        if !cpu::isa_available(isa) {
            eprintln!("skipped tier {isa}: not available on this host");
            continue;
        }
        let fast = compile(
            &program,
            &CompileOptions {
                isa,
                precision: Precision::Fast,
                ..CompileOptions::default()
            },
        )
        .unwrap();
        let exact = compile(
            &program,
            &CompileOptions {
                isa,
                precision: Precision::Exact,
                ..CompileOptions::default()
            },
        )
        .unwrap();
        let (fast_name, exact_name) = (fast.stats().kernels[0], exact.stats().kernels[0]);
        assert_eq!(fast.stats().precision, Precision::Fast);
        if isa == Isa::Amx {
            assert!(fast_name.starts_with("amx_gemm_bf16"), "{fast_name}");
            assert!(!exact_name.starts_with("amx"), "{exact_name}");
        } else {
            assert_eq!(
                fast_name, exact_name,
                "Fast equals Exact below the Amx tier"
            );
        }
        // bf16 operands: each product is off by at most 2·2⁻⁸ relative; with 64 terms of
        // magnitude ≤ 1 the result stays within 0.25 + one fp16 rounding.
        let got = run_plan(&fast, std::slice::from_ref(&x));
        let (e, g) = (
            expected[0].to_f64_vec().unwrap(),
            got[0].to_f64_vec().unwrap(),
        );
        for (a, b) in e.iter().zip(&g) {
            assert!(
                (a - b).abs() <= 64.0 * 2.0 * 2f64.powi(-8) + common::f16_ulp(*a),
                "{isa}: {a} vs {b}"
            );
        }
        // Fast plans serialise their precision.
        assert_eq!(
            Plan::from_bytes(&fast.to_bytes())
                .unwrap()
                .stats()
                .precision,
            Precision::Fast
        );
    }
}

#[test]
fn plans_and_workspaces_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Plan>();
    assert_send_sync::<milbridge_engine::Workspace>();
    // Two workspaces evaluate one plan concurrently.
    let program = verified(&dynamic_matmul(32, 16, 24));
    let plan = compile(&program, &CompileOptions::default()).unwrap();
    let mut rng = Rng::new(8);
    let x = random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp16, [1, 32, 1, 40]),
        common::Range { lo: -1.0, hi: 1.0 },
    );
    let expected = run_plan(&plan, std::slice::from_ref(&x));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..5 {
                    assert_eq!(run_plan(&plan, std::slice::from_ref(&x)), expected);
                }
            });
        }
    });
}

#[test]
fn concat_inputs_are_written_in_place() {
    // Taps: each input is computed straight into its slot of the output; `x` (a parameter) and
    // `e` (also used elsewhere) still need copies.
    let body = "        tensor<fp16, [1, 4, 1, 8]> e = exp(x = x)[name = string(\"e\")];
        tensor<fp16, [1, 4, 1, 8]> t = tanh(x = e)[name = string(\"t\")];
        tensor<fp16, [1, 4, 1, 8]> s = sigmoid(x = x)[name = string(\"s\")];
        tensor<fp16, [1, 4, 1, 8]> inner = mul(x = s, y = s)[name = string(\"inner\")];
        tensor<fp16, [1, 4, 1, 16]> nested = concat(values = (inner, t), axis = int32(3), interleave = bool(true))[name = string(\"nested\")];
        tensor<fp16, [1, 4, 1, 16]> nested2 = concat(values = (e, e), axis = int32(3))[name = string(\"nested2\")];
        tensor<fp16, [1, 16, 1, 8]> taps = concat(values = (t, x, s, e), axis = int32(1))[name = string(\"taps\")];";
    let text = program(
        "ios18",
        "tensor<fp16, [1, 4, 1, 8]> x",
        body,
        "taps, nested, nested2",
    );
    let program_v = verified(&text);
    let mut rng = Rng::new(2);
    let x = random_tensor(
        &mut rng,
        &TensorType::new(DType::Fp16, [1, 4, 1, 8]),
        common::Range { lo: -1.0, hi: 1.0 },
    );
    let expected = run_reference(&program_v, std::slice::from_ref(&x));
    for tier in tiers() {
        let plan = compile_tier(&program_v, tier, 2);
        let got = run_plan(&plan, std::slice::from_ref(&x));
        for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
            assert_close(
                &format!("concat taps output {k} {tier:?}"),
                e,
                g,
                TOL_ELEMENTWISE,
            );
        }
        // Only `inner` (used once, computed) is written in place: `t`, `s` and `e` have other
        // uses and `x` is a parameter, so nested copies 1, nested2 copies 2 and taps copies 4.
        let stats = plan.stats();
        assert_eq!(stats.concat_steps, 7, "{stats:#?}");
    }
    let clean = program(
        "ios18",
        "tensor<fp16, [1, 4, 1, 8]> x",
        "        tensor<fp16, [1, 4, 1, 8]> e = exp(x = x)[name = string(\"e\")];
        tensor<fp16, [1, 4, 1, 8]> t = tanh(x = x)[name = string(\"t\")];
        tensor<fp16, [1, 4, 1, 8]> s = sigmoid(x = x)[name = string(\"s\")];
        tensor<fp16, [1, 12, 1, 8]> taps = concat(values = (e, t, s), axis = int32(1))[name = string(\"taps\")];",
        "taps",
    );
    let plan = compile(&verified(&clean), &CompileOptions::default()).unwrap();
    let stats = plan.stats();
    assert_eq!(
        (stats.steps, stats.concat_steps, stats.materialize_steps),
        (3, 0, 0),
        "{stats:#?}"
    );
    assert!(stats.arena_allocations == 0, "{stats:#?}");
}
