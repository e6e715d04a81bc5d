//! Pattern steps (`plan::fuse::Pattern`): RMSNorm as the training kernels write it and scale +
//! mask feeding softmax become one step each in fast-profile fused plans, stay within the
//! crate docs' bounds against the reference on every tier, are blocked by an intermediate
//! with another user, are never formed in the exact profile, and round-trip through
//! serialisation.

mod common;

use common::{
    Rng, Tier, Tol, assert_close, program, random_tensor, run_plan, run_reference, tiers, verified,
};
use milbridge_engine::plan::step::StepOp;
use milbridge_engine::{CompileOptions, Plan, Precision, compile_fused, compile_unfused};
use milbridge_linalg::cpu::Isa;
use milbridge_mil::facts::VerifiedProgram;
use milbridge_mil::ir::Tensor;

fn options(isa: Isa, precision: Precision, threads: usize) -> CompileOptions {
    CompileOptions {
        isa,
        precision,
        threads,
        function: None,
    }
}

fn make_inputs(program: &VerifiedProgram, lo: f64, hi: f64, seed: u64) -> Vec<Tensor> {
    let func = program.program().entry().unwrap();
    let facts = program.facts(func);
    let mut rng = Rng::new(seed);
    program.program().functions[func]
        .params
        .iter()
        .map(|&param| random_tensor(&mut rng, &facts.types[param], common::Range { lo, hi }))
        .collect()
}

fn count(plan: &Plan, pred: fn(&StepOp) -> bool) -> usize {
    plan.steps().iter().filter(|step| pred(&step.op)).count()
}

fn is_rmsnorm(op: &StepOp) -> bool {
    matches!(op, StepOp::RmsNorm { .. })
}

fn is_softmax_scaled(op: &StepOp) -> bool {
    matches!(op, StepOp::SoftmaxScaled { .. })
}

/// The trainer's RMSNorm (graphs `build::rmsnorm`) over the channels of `[1, C, 1, S]`.
fn rmsnorm_channels(extra_output: bool) -> String {
    let x = "tensor<fp16, [1, 96, 1, 70]>";
    let r = "tensor<fp16, [1, 1, 1, 70]>";
    program(
        "ios18",
        &format!("{x} x, tensor<fp16, [1, 96, 1, 1]> w"),
        &format!(
            "        {x} sq = mul(x = x, y = x)[name = string(\"sq\")];\n\
             \x20       {r} ss = reduce_sum(x = sq, axes = tensor<int32, [1]>([1]), keep_dims = true)[name = string(\"ss\")];\n\
             \x20       fp16 invd = const()[name = string(\"invd\"), val = fp16(0.010417)];\n\
             \x20       {r} ss2 = mul(x = ss, y = invd)[name = string(\"ss2\")];\n\
             \x20       fp16 eps = const()[name = string(\"eps\"), val = fp16(0.00001)];\n\
             \x20       {r} ss3 = add(x = ss2, y = eps)[name = string(\"ss3\")];\n\
             \x20       fp16 nhalf = const()[name = string(\"nhalf\"), val = fp16(-0.5)];\n\
             \x20       {r} rrms = pow(x = ss3, y = nhalf)[name = string(\"rrms\")];\n\
             \x20       {x} xr = mul(x = x, y = rrms)[name = string(\"xr\")];\n\
             \x20       {x} y = mul(x = xr, y = w)[name = string(\"y\")];"
        ),
        if extra_output { "y, rrms" } else { "y" },
    )
}

/// The row form: `reduce_mean` over the last axis, `rsqrt` with its epsilon, fp32, the weight
/// first in the last product.
fn rmsnorm_rows() -> String {
    let x = "tensor<fp32, [2, 3, 64]>";
    let r = "tensor<fp32, [2, 3, 1]>";
    program(
        "ios18",
        &format!("{x} x, tensor<fp32, [64]> w"),
        &format!(
            "        {x} sq = square(x = x)[name = string(\"sq\")];\n\
             \x20       {r} ms = reduce_mean(x = sq, axes = tensor<int32, [1]>([-1]), keep_dims = true)[name = string(\"ms\")];\n\
             \x20       {r} rrms = rsqrt(x = ms, epsilon = fp32(0.000001))[name = string(\"rrms\")];\n\
             \x20       {x} xr = mul(x = rrms, y = x)[name = string(\"xr\")];\n\
             \x20       {x} y = mul(x = w, y = xr)[name = string(\"y\")];"
        ),
        "y",
    )
}

/// Attention scores: `softmax(s · 0.125 + causal mask)` over `[1, 3, L, n]`.
fn softmax_masked(scaled_output: bool) -> String {
    let (l, n) = (12usize, 20usize);
    let s = format!("tensor<fp16, [1, 3, {l}, {n}]>");
    let mask: Vec<String> = (0..l)
        .flat_map(|i| {
            (0..n).map(move |j| {
                if j <= i + 4 {
                    "0".into()
                } else {
                    "-65504".into()
                }
            })
        })
        .collect();
    program(
        "ios18",
        &format!("{s} sc"),
        &format!(
            "        fp16 scv = const()[name = string(\"scv\"), val = fp16(0.125)];\n\
             \x20       {s} sc2 = mul(x = sc, y = scv)[name = string(\"sc2\")];\n\
             \x20       tensor<fp16, [1, 1, {l}, {n}]> cm = const()[name = string(\"cm\"), val = tensor<fp16, [1, 1, {l}, {n}]>([{}])];\n\
             \x20       {s} ms = add(x = sc2, y = cm)[name = string(\"ms\")];\n\
             \x20       {s} p = softmax(x = ms, axis = int32(-1))[name = string(\"p\")];",
            mask.join(", ")
        ),
        if scaled_output { "p, sc2" } else { "p" },
    )
}

/// The fast bound of a pattern step (crate docs): f32 throughout, so against the per-op
/// rounded reference the reference's own `n_ops` roundings carried to the output.
fn pattern_tol(n_ops: usize) -> Tol {
    let n = n_ops as f64;
    Tol {
        f16_ulps: n,
        f32_rel: 2f64.powi(-16),
        atol_scale: n * 2f64.powi(-11),
    }
}

/// Compiles `text` fused in the fast profile on every tier (1 and 2 threads), checks the
/// number of pattern steps `pred` finds and the result against the reference.
fn check(name: &str, text: &str, pred: fn(&StepOp) -> bool, n_ops: usize, (lo, hi): (f64, f64)) {
    let program = verified(text);
    let inputs = make_inputs(&program, lo, hi, 7);
    let expected = run_reference(&program, &inputs);
    for tier in tiers() {
        let Tier::Isa(isa) = tier else { continue };
        for threads in [1, 2] {
            let plan = compile_fused(&program, &options(isa, Precision::Fast, threads)).unwrap();
            assert_eq!(count(&plan, pred), 1, "{name} [{isa}]: {:#?}", plan.steps());
            assert!(
                plan.steps()
                    .iter()
                    .all(|step| !matches!(step.op, StepOp::Reduce { .. } | StepOp::Softmax)),
                "{name} [{isa}]: a reduction or softmax is left: {:#?}",
                plan.stats().kernels
            );
            let got = run_plan(&plan, &inputs);
            for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
                assert_close(
                    &format!("{name} [fast, {isa}, {threads} threads, output {k}]"),
                    e,
                    g,
                    pattern_tol(n_ops),
                );
            }
        }
    }
}

#[test]
fn rmsnorm_over_channels_is_one_step_within_the_bound() {
    check(
        "rmsnorm channels",
        &rmsnorm_channels(false),
        is_rmsnorm,
        7,
        (-3.0, 3.0),
    );
}

#[test]
fn rmsnorm_over_rows_is_one_step_within_the_bound() {
    check("rmsnorm rows", &rmsnorm_rows(), is_rmsnorm, 5, (-3.0, 3.0));
}

#[test]
fn scale_and_mask_fold_into_softmax_within_the_bound() {
    check(
        "softmax scale+mask",
        &softmax_masked(false),
        is_softmax_scaled,
        3,
        (-4.0, 4.0),
    );
}

#[test]
fn an_intermediate_with_another_user_blocks_the_pattern() {
    let opts = options(milbridge_linalg::cpu::selected_isa(), Precision::Fast, 2);
    // `rrms` is also an output: no RMSNorm step, the reduction stays.
    let program = verified(&rmsnorm_channels(true));
    let plan = compile_fused(&program, &opts).unwrap();
    assert_eq!(count(&plan, is_rmsnorm), 0, "{:#?}", plan.steps());
    let inputs = make_inputs(&program, -3.0, 3.0, 5);
    let expected = run_reference(&program, &inputs);
    for (e, g) in expected.iter().zip(&run_plan(&plan, &inputs)) {
        assert_close("rmsnorm blocked", e, g, pattern_tol(7));
    }
    // `sc2` is also an output: the mask still folds into the softmax, the scale does not.
    let program = verified(&softmax_masked(true));
    let plan = compile_fused(&program, &opts).unwrap();
    let scaled: Vec<_> = plan
        .steps()
        .iter()
        .filter_map(|step| match step.op {
            StepOp::SoftmaxScaled { scale, mask } => Some((scale, mask)),
            _ => None,
        })
        .collect();
    assert_eq!(scaled, [(1.0, true)], "{:#?}", plan.steps());
    let inputs = make_inputs(&program, -4.0, 4.0, 5);
    let expected = run_reference(&program, &inputs);
    for (e, g) in expected.iter().zip(&run_plan(&plan, &inputs)) {
        assert_close("softmax blocked", e, g, pattern_tol(3));
    }
}

#[test]
fn exact_and_unfused_plans_have_no_pattern_steps() {
    let isa = milbridge_linalg::cpu::selected_isa();
    for text in [
        rmsnorm_channels(false),
        rmsnorm_rows(),
        softmax_masked(false),
    ] {
        let program = verified(&text);
        let exact = compile_fused(&program, &options(isa, Precision::Exact, 2)).unwrap();
        let unfused = compile_unfused(&program, &options(isa, Precision::Fast, 2)).unwrap();
        for plan in [exact, unfused] {
            assert_eq!(
                count(&plan, |op| is_rmsnorm(op) || is_softmax_scaled(op)),
                0
            );
        }
    }
}

#[test]
fn pattern_plans_round_trip_through_serialisation() {
    for text in [
        rmsnorm_channels(false),
        rmsnorm_rows(),
        softmax_masked(false),
    ] {
        let program = verified(&text);
        let opts = options(milbridge_linalg::cpu::selected_isa(), Precision::Fast, 2);
        let plan = compile_fused(&program, &opts).unwrap();
        let back = Plan::from_bytes(&plan.to_bytes()).unwrap();
        assert_eq!(back.steps(), plan.steps());
        let inputs = make_inputs(&program, -2.0, 2.0, 9);
        let (a, b) = (run_plan(&plan, &inputs), run_plan(&back, &inputs));
        for (x, y) in a.iter().zip(&b) {
            assert!(x.bytes() == y.bytes());
        }
    }
}
