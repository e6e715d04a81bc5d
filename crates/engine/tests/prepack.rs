//! Prepacked GEMM operands (`Plan::pack_input`, `Plan::eval_with_packed`): bit-for-bit the
//! results of `Plan::eval`, for exact and fast on every tier the host has; no packing of the
//! prepacked side (A or B) during a prepacked eval (linalg's per-thread counters); rewritten
//! inputs are seen after a repack;
//! panels of another plan or input are a clean error.

mod common;

use common::{Rng, random_tensor, verified, verified_with};
use milbridge_engine::plan::pack::{PackSide, PackedInput};
use milbridge_engine::{CompileOptions, Error, Plan, Precision, compile, compile_portable};
use milbridge_graphs::config::WeightMode;
use milbridge_graphs::dynamic;
use milbridge_linalg::cpu::{self, Isa};
use milbridge_linalg::gemm::{raw_a_products_on_this_thread, raw_b_products_on_this_thread};
use milbridge_mil::facts::VerifiedProgram;
use milbridge_mil::ir::{DType, Tensor};

/// Inputs as 64-byte aligned words (as shared surfaces are).
struct Buffers {
    inputs: Vec<Vec<u64>>,
    lens: Vec<usize>,
}

impl Buffers {
    fn random(plan: &Plan, seed: u64) -> Buffers {
        let mut rng = Rng::new(seed);
        let mut inputs = Vec::new();
        let mut lens = Vec::new();
        for io in plan.inputs() {
            let tensor: Tensor =
                random_tensor(&mut rng, &io.ty, common::Range { lo: -2.0, hi: 2.0 });
            let bytes = tensor.bytes().expect("numeric");
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
            inputs.push(words);
            lens.push(bytes.len());
        }
        Buffers { inputs, lens }
    }

    fn input(&self, idx: usize) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.inputs[idx])[..self.lens[idx]]
    }

    fn input_mut(&mut self, idx: usize) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.inputs[idx])[..self.lens[idx]]
    }

    fn slices(&self) -> Vec<&[u8]> {
        (0..self.inputs.len()).map(|idx| self.input(idx)).collect()
    }
}

/// Evaluates `plan` (with `packed` when given) and returns the output bytes.
fn run(plan: &Plan, buffers: &Buffers, packed: Option<&[Option<&PackedInput>]>) -> Vec<Vec<u8>> {
    let mut outs: Vec<Vec<u64>> = plan
        .outputs()
        .iter()
        .map(|io| vec![0u64; io.byte_len.div_ceil(8)])
        .collect();
    let mut out_slices: Vec<&mut [u8]> = outs
        .iter_mut()
        .zip(plan.outputs())
        .map(|(words, io)| &mut bytemuck::cast_slice_mut::<u64, u8>(words)[..io.byte_len])
        .collect();
    let mut ws = plan.workspace();
    let inputs = buffers.slices();
    match packed {
        None => plan.eval(&mut ws, &inputs, &mut out_slices),
        Some(packed) => plan.eval_with_packed(&mut ws, &inputs, packed, &mut out_slices),
    }
    .unwrap_or_else(|err| panic!("eval failed: {err}"));
    out_slices.iter().map(|out| out.to_vec()).collect()
}

fn plans(program: &VerifiedProgram) -> Vec<(String, Plan)> {
    let mut plans = Vec::new();
    for isa in Isa::ALL {
        if !cpu::isa_available(isa) {
            eprintln!("skipped tier {isa}: not available on this host");
            continue;
        }
        for precision in [Precision::Exact, Precision::Fast] {
            let options = CompileOptions {
                isa,
                precision,
                threads: 2,
                function: None,
            };
            let plan = compile(program, &options).expect("compile");
            plans.push((format!("{isa} {precision:?}"), plan));
        }
    }
    plans
}

/// Packs every input that feeds a GEMM and checks bit-identity; packs the weights of
/// `expect_sides` and checks bit-identity and that no product packs their side (every GEMM of
/// the program has such a weight on that side), then rewrites each packed weight and checks
/// again.
fn check_program(what: &str, program: &VerifiedProgram, expect_sides: &[(usize, PackSide)]) {
    for (label, plan) in plans(program) {
        for &(input, side) in expect_sides {
            let uses = plan.weight_gemm_uses(input);
            assert!(
                uses.iter().any(|site| site.side == side),
                "{what} {label}: input {input} should feed a GEMM as {side:?}: {uses:?}"
            );
        }
        let mut buffers = Buffers::random(&plan, 7);
        let plain = run(&plan, &buffers, None);
        // Every input that feeds a GEMM packed (a step with both operands packed uses its B's
        // panels): the results are the same.
        let all: Vec<Option<PackedInput>> = (0..plan.inputs().len())
            .map(|input| {
                (!plan.weight_gemm_uses(input).is_empty())
                    .then(|| plan.pack_input(input, buffers.input(input)).expect("pack"))
            })
            .collect();
        let refs: Vec<Option<&PackedInput>> = all.iter().map(Option::as_ref).collect();
        assert_eq!(
            plain,
            run(&plan, &buffers, Some(&refs)),
            "{what} {label}: results with every GEMM input packed differ"
        );
        // The weights of `expect_sides` packed (as the bridge does): their side is never packed
        // by the eval.
        let mut packed: Vec<Option<PackedInput>> = (0..plan.inputs().len())
            .map(|input| {
                expect_sides
                    .iter()
                    .any(|&(weight, _)| weight == input)
                    .then(|| plan.pack_input(input, buffers.input(input)).expect("pack"))
            })
            .collect();
        let refs: Vec<Option<&PackedInput>> = packed.iter().map(Option::as_ref).collect();
        let before = (
            raw_a_products_on_this_thread(),
            raw_b_products_on_this_thread(),
        );
        let prepacked = run(&plan, &buffers, Some(&refs));
        for &(_, side) in expect_sides {
            let (counter, was) = match side {
                PackSide::A => (raw_a_products_on_this_thread(), before.0),
                PackSide::B => (raw_b_products_on_this_thread(), before.1),
            };
            assert_eq!(
                counter, was,
                "{what} {label}: a prepacked eval packed an {side:?} operand"
            );
        }
        assert_eq!(plain, prepacked, "{what} {label}: prepacked results differ");

        // New values: repack (bytes, and f32 values converted on the way), eval again.
        let fresh = Buffers::random(&plan, 99);
        for (input, entry) in packed.iter_mut().enumerate() {
            let Some(entry) = entry else { continue };
            if input % 2 == 0 {
                buffers.input_mut(input).copy_from_slice(fresh.input(input));
                plan.repack_input(entry, buffers.input(input))
                    .expect("repack");
            } else {
                let values: Vec<f32> = match plan.inputs()[input].ty.dtype {
                    DType::Fp16 => bytemuck::cast_slice::<u8, half::f16>(fresh.input(input))
                        .iter()
                        .map(|v| v.to_f32())
                        .collect(),
                    _ => bytemuck::cast_slice::<u8, f32>(fresh.input(input)).to_vec(),
                };
                plan.repack_input_f32(entry, &values, buffers.input_mut(input))
                    .expect("repack f32");
                assert_eq!(
                    buffers.input(input),
                    fresh.input(input),
                    "{what} {label}: the converting repack stores the input's bytes"
                );
            }
        }
        let refs: Vec<Option<&PackedInput>> = packed.iter().map(Option::as_ref).collect();
        let plain = run(&plan, &buffers, None);
        let prepacked = run(&plan, &buffers, Some(&refs));
        assert_eq!(
            plain, prepacked,
            "{what} {label}: results after a rewrite differ"
        );
    }
}

fn generated(kernel: &milbridge_graphs::kernel::GeneratedKernel) -> VerifiedProgram {
    verified_with(
        &milbridge_mil::print::print(&kernel.program),
        &kernel.blob_map(),
    )
}

#[test]
fn params_mode_weights_are_the_left_operand_and_match_bit_for_bit() {
    // y = matmul(W, x): the weight is A, packed as a linalg PackedA. Sizes include 1, primes,
    // and a depth above the Amx kernel's 768-deep block.
    for (ic, oc, seq) in [(1, 1, 1), (17, 33, 20), (64, 48, 32), (800, 40, 37)] {
        let kernel = dynamic::dyn_matmul(ic, oc, seq, WeightMode::Params);
        let program = generated(&kernel);
        check_program(
            &format!("params dyn_matmul {ic}x{oc}x{seq}"),
            &program,
            &[(1, PackSide::A)],
        );
    }
}

#[test]
fn batched_left_operands_through_a_transpose_match_bit_for_bit() {
    // y = matmul(Wᵀ, x) with W [k, m] an input seen through transpose_x, broadcast over the
    // batch of x [2, k, s], in fp32 and fp16 (the left operand through a folded view).
    for dtype in ["fp32", "fp16"] {
        let (m, k, s) = (37, 45, 70);
        let text = common::program(
            "ios18",
            &format!("tensor<{dtype}, [2, {k}, {s}]> x, tensor<{dtype}, [{k}, {m}]> W"),
            &format!(
                "        tensor<{dtype}, [2, {m}, {s}]> y = matmul(x = W, y = x, transpose_x = true, transpose_y = false)[name = string(\"y\")];"
            ),
            "y",
        );
        let program = verified(&text);
        check_program(
            &format!("batched {dtype} left operand"),
            &program,
            &[(1, PackSide::A)],
        );
    }
}

#[test]
fn spatially_packed_weights_are_packed_from_the_strided_view() {
    for (ic, oc, seq) in [(4, 2, 3), (64, 48, 32), (33, 17, 20)] {
        let kernel = dynamic::dyn_matmul(ic, oc, seq, WeightMode::Packed);
        let program = generated(&kernel);
        for (label, plan) in plans(&program) {
            assert_eq!(
                plan.stats().materialize_steps,
                0,
                "{label}: the weight is read in place"
            );
        }
        check_program(
            &format!("packed dyn_matmul {ic}x{oc}x{seq}"),
            &program,
            &[(0, PackSide::B)],
        );
    }
}

#[test]
fn batched_fp32_right_operands_match_bit_for_bit() {
    // x [2, m, k] · Wᵀ (W [n, k], broadcast over the batch, B through a transpose) and
    // x · V (V [k, n], plain), each weight an fp32 input.
    let (m, k, n) = (19, 45, 70);
    let text = common::program(
        "ios18",
        &format!(
            "tensor<fp32, [2, {m}, {k}]> x, tensor<fp32, [{n}, {k}]> W, tensor<fp32, [{k}, {n}]> V"
        ),
        &format!(
            "        tensor<fp32, [2, {m}, {n}]> y = matmul(x = x, y = W, transpose_x = false, transpose_y = true)[name = string(\"y\")];\n\
             \x20       tensor<fp32, [2, {m}, {n}]> z = matmul(x = x, y = V, transpose_x = false, transpose_y = false)[name = string(\"z\")];"
        ),
        "y, z",
    );
    let program = verified(&text);
    check_program(
        "batched fp32 matmul",
        &program,
        &[(1, PackSide::B), (2, PackSide::B)],
    );
}

#[test]
fn the_portable_plan_and_non_gemm_inputs_have_no_sites() {
    let kernel = dynamic::dyn_matmul(16, 8, 4, WeightMode::Params);
    let program = generated(&kernel);
    let portable = compile_portable(&program, &CompileOptions::default()).expect("compile");
    assert!(portable.weight_gemm_uses(1).is_empty());
    let plan = compile(&program, &CompileOptions::default()).expect("compile");
    assert_eq!(plan.weight_gemm_uses(1).len(), 1);
    assert!(plan.weight_gemm_uses(7).is_empty(), "no such input");
    let text = common::program(
        "ios18",
        "tensor<fp16, [4, 4]> x, tensor<fp16, [4, 4]> w",
        "        tensor<fp16, [4, 4]> y = add(x = x, y = w)[name = string(\"y\")];",
        "y",
    );
    let plan = compile(&verified(&text), &CompileOptions::default()).expect("compile");
    assert!(plan.weight_gemm_uses(1).is_empty(), "an add is no GEMM");
}

#[test]
fn panels_of_another_plan_or_input_are_rejected() {
    let kernel = dynamic::dyn_matmul(16, 8, 4, WeightMode::Params);
    let program = generated(&kernel);
    let exact = compile(&program, &CompileOptions::default()).expect("compile");
    let buffers = Buffers::random(&exact, 3);
    let weight = exact.pack_input(1, buffers.input(1)).expect("pack");
    let mut ws = exact.workspace();
    let mut out = vec![0u64; exact.outputs()[0].byte_len.div_ceil(8)];
    let mut eval = |plan: &Plan, packed: &[Option<&PackedInput>]| -> Result<(), Error> {
        let len = plan.outputs()[0].byte_len;
        let mut outs = [&mut bytemuck::cast_slice_mut::<u64, u8>(&mut out)[..len]];
        plan.eval_with_packed(&mut ws, &buffers.slices(), packed, &mut outs)
    };
    assert!(matches!(
        eval(&exact, &[Some(&weight), None]),
        Err(Error::Packed { .. })
    ));
    assert!(matches!(eval(&exact, &[None]), Err(Error::Packed { .. })));
    eval(&exact, &[None, Some(&weight)]).expect("the right slot");
    eval(&exact, &[None, None]).expect("nothing prepacked");
    assert!(matches!(
        exact.pack_input(1, &buffers.input(1)[1..]),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        exact.pack_input(5, buffers.input(1)),
        Err(Error::Packed { .. })
    ));
    // Another precision (or tier) packs another layout: a clean error, never a wrong read.
    let fast = compile(
        &program,
        &CompileOptions {
            precision: Precision::Fast,
            ..CompileOptions::default()
        },
    )
    .expect("compile");
    let err = eval(&fast, &[None, Some(&weight)]).expect_err("another precision");
    assert!(matches!(err, Error::Packed { .. }), "{err}");
    if cpu::isa_available(Isa::Avx2) && cpu::selected_isa() != Isa::Avx2 {
        let avx2 = compile(
            &program,
            &CompileOptions {
                isa: Isa::Avx2,
                ..CompileOptions::default()
            },
        )
        .expect("compile");
        assert!(matches!(
            eval(&avx2, &[None, Some(&weight)]),
            Err(Error::Packed { .. })
        ));
    }
}
