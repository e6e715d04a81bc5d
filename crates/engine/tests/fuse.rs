//! The fusion pass: exact-profile fused plans equal unfused plans bit for bit on every tier,
//! fast-profile fused plans stay within the bounds of the crate docs' precision table against
//! the reference, a value with another user is not fused into its consumer, and fused plans
//! round-trip through serialisation.

mod common;

use common::{
    Range, Rng, TOL_ELEMENTWISE, Tier, Tol, assert_close, default_range, program, random_tensor,
    run_plan, run_reference, tiers, verified,
};
use milbridge_engine::plan::step::StepOp;
use milbridge_engine::{CompileOptions, Plan, Precision, compile_fused, compile_unfused};
use milbridge_mil::facts::VerifiedProgram;
use milbridge_mil::ir::Tensor;

/// A case: name, program text, the value range of each input, and how many steps fusion must
/// save at least.
struct Case {
    name: &'static str,
    text: String,
    ranges: Vec<Option<Range>>,
    saves: usize,
}

fn positive() -> Option<Range> {
    Some(Range { lo: 0.05, hi: 2.0 })
}

fn cases() -> Vec<Case> {
    let act = "tensor<fp16, [1, 96, 1, 70]>";
    vec![
        Case {
            name: "silu-gate (ffnFused)",
            text: program(
                "ios18",
                &format!("{act} h1, {act} h3"),
                &format!(
                    "        {act} sig = sigmoid(x = h1)[name = string(\"sig\")];\n\
                     \x20       {act} silu = mul(x = h1, y = sig)[name = string(\"silu\")];\n\
                     \x20       {act} gate = mul(x = silu, y = h3)[name = string(\"gate\")];"
                ),
                "gate",
            ),
            ranges: vec![Some(Range { lo: -6.0, hi: 6.0 }), None],
            // The fp16 sigmoid stays a table pass (`fuse::tabled_activation`).
            saves: 1,
        },
        Case {
            name: "silu-gate backward",
            text: program(
                "ios18",
                &format!("{act} h1, {act} h3, {act} dgate"),
                &format!(
                    "        {act} sig = sigmoid(x = h1)[name = string(\"sig\")];\n\
                     \x20       fp16 one = const()[name = string(\"one\"), val = fp16(1)];\n\
                     \x20       {act} oms = sub(x = one, y = sig)[name = string(\"oms\")];\n\
                     \x20       {act} homs = mul(x = h1, y = oms)[name = string(\"homs\")];\n\
                     \x20       {act} inner = add(x = one, y = homs)[name = string(\"inner\")];\n\
                     \x20       {act} dsilu_ = mul(x = sig, y = inner)[name = string(\"dsilu_\")];\n\
                     \x20       {act} dgu = mul(x = dgate, y = h3)[name = string(\"dgu\")];\n\
                     \x20       {act} dh1 = mul(x = dgu, y = dsilu_)[name = string(\"dh1\")];\n\
                     \x20       {act} silu = mul(x = h1, y = sig)[name = string(\"silu\")];\n\
                     \x20       {act} dh3 = mul(x = dgate, y = silu)[name = string(\"dh3\")];"
                ),
                "dh1, dh3",
            ),
            ranges: vec![Some(Range { lo: -6.0, hi: 6.0 }), None, None],
            saves: 5,
        },
        Case {
            name: "scaled residual",
            text: program(
                "ios18",
                &format!("{act} x, {act} ffn"),
                &format!(
                    "        fp16 alpha = const()[name = string(\"alpha\"), val = fp16(0.375)];\n\
                     \x20       {act} sc = mul(x = ffn, y = alpha)[name = string(\"sc\")];\n\
                     \x20       {act} y = add(x = x, y = sc)[name = string(\"y\")];"
                ),
                "y",
            ),
            ranges: vec![None, None],
            saves: 1,
        },
        Case {
            name: "scale + mask + softmax",
            text: program(
                "ios18",
                "tensor<fp16, [1, 4, 40, 40]> sc1, tensor<fp16, [1, 1, 40, 40]> cm",
                "        fp16 scv = const()[name = string(\"scv\"), val = fp16(0.125)];\n\
                 \x20       tensor<fp16, [1, 4, 40, 40]> sc2 = mul(x = sc1, y = scv)[name = string(\"sc2\")];\n\
                 \x20       tensor<fp16, [1, 4, 40, 40]> ms = add(x = sc2, y = cm)[name = string(\"ms\")];\n\
                 \x20       tensor<fp16, [1, 4, 40, 40]> p = softmax(x = ms, axis = int32(-1))[name = string(\"p\")];",
                "p",
            ),
            ranges: vec![Some(Range { lo: -8.0, hi: 8.0 }), None],
            saves: 1,
        },
        Case {
            name: "rope",
            text: program(
                "ios18",
                "tensor<fp16, [1, 4, 40, 16]> q, tensor<fp16, [1, 4, 40, 16]> rot, \
                 tensor<fp16, [1, 1, 40, 16]> cos, tensor<fp16, [1, 1, 40, 16]> sin",
                "        tensor<fp16, [1, 4, 40, 16]> c = mul(x = q, y = cos)[name = string(\"c\")];\n\
                 \x20       tensor<fp16, [1, 4, 40, 16]> s = mul(x = rot, y = sin)[name = string(\"s\")];\n\
                 \x20       tensor<fp16, [1, 4, 40, 16]> r = add(x = c, y = s)[name = string(\"r\")];",
                "r",
            ),
            ranges: vec![
                None,
                None,
                Some(Range { lo: -1.0, hi: 1.0 }),
                Some(Range { lo: -1.0, hi: 1.0 }),
            ],
            saves: 2,
        },
        Case {
            name: "rmsnorm backward (channel axis)",
            text: program(
                "ios18",
                &format!("{act} dy, {act} x, tensor<fp16, [1, 96, 1, 1]> rms_w"),
                "        tensor<fp16, [1, 96, 1, 70]> sq = mul(x = x, y = x)[name = string(\"sq\")];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> ss = reduce_sum(axes = tensor<int32, [1]>([1]), keep_dims = bool(true), x = sq)[name = string(\"ss\")];\n\
                 \x20       fp16 invd = const()[name = string(\"invd\"), val = fp16(0.010416)];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> ss2 = mul(x = ss, y = invd)[name = string(\"ss2\")];\n\
                 \x20       fp16 eps = const()[name = string(\"eps\"), val = fp16(0.00001)];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> ss3 = add(x = ss2, y = eps)[name = string(\"ss3\")];\n\
                 \x20       fp16 nhalf = const()[name = string(\"nhalf\"), val = fp16(-0.5)];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> rrms = pow(x = ss3, y = nhalf)[name = string(\"rrms\")];\n\
                 \x20       tensor<fp16, [1, 96, 1, 70]> dyw = mul(x = dy, y = rms_w)[name = string(\"dyw\")];\n\
                 \x20       tensor<fp16, [1, 96, 1, 70]> dywx = mul(x = dyw, y = x)[name = string(\"dywx\")];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> dot = reduce_sum(axes = tensor<int32, [1]>([1]), keep_dims = bool(true), x = dywx)[name = string(\"dot\")];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> dot_sc = mul(x = dot, y = invd)[name = string(\"dot_sc\")];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> rrms2 = mul(x = rrms, y = rrms)[name = string(\"rrms2\")];\n\
                 \x20       tensor<fp16, [1, 1, 1, 70]> coeff = mul(x = dot_sc, y = rrms2)[name = string(\"coeff\")];\n\
                 \x20       tensor<fp16, [1, 96, 1, 70]> xc = mul(x = x, y = coeff)[name = string(\"xc\")];\n\
                 \x20       tensor<fp16, [1, 96, 1, 70]> diff = sub(x = dyw, y = xc)[name = string(\"diff\")];\n\
                 \x20       tensor<fp16, [1, 96, 1, 70]> dx = mul(x = diff, y = rrms)[name = string(\"dx\")];",
                "dx",
            ),
            ranges: vec![None, None, positive()],
            saves: 6,
        },
        Case {
            name: "rmsnorm forward product (channel axis)",
            text: program(
                "ios18",
                &format!(
                    "{act} x, tensor<fp16, [1, 1, 1, 70]> rrms, tensor<fp16, [1, 96, 1, 1]> rms_w"
                ),
                "        tensor<fp16, [1, 96, 1, 70]> xr = mul(x = x, y = rrms)[name = string(\"xr\")];\n\
                 \x20       tensor<fp16, [1, 96, 1, 70]> y = mul(x = xr, y = rms_w)[name = string(\"y\")];",
                "y",
            ),
            ranges: vec![None, positive(), None],
            saves: 1,
        },
        Case {
            name: "softmax backward tail (sdpaBwd2)",
            text: program(
                "ios18",
                "tensor<fp16, [1, 4, 40, 40]> p, tensor<fp16, [1, 4, 40, 40]> dp, tensor<fp16, [1, 4, 40, 1]> spdp",
                "        tensor<fp16, [1, 4, 40, 40]> dps = sub(x = dp, y = spdp)[name = string(\"dps\")];\n\
                 \x20       tensor<fp16, [1, 4, 40, 40]> ds0 = mul(x = p, y = dps)[name = string(\"ds0\")];\n\
                 \x20       fp16 scv = const()[name = string(\"scv\"), val = fp16(0.125)];\n\
                 \x20       tensor<fp16, [1, 4, 40, 40]> ds = mul(x = ds0, y = scv)[name = string(\"ds\")];",
                "ds",
            ),
            ranges: vec![Some(Range { lo: 0.0, hi: 1.0 }), None, None],
            saves: 2,
        },
        Case {
            name: "fp32 scaled residual and gated product",
            text: program(
                "ios18",
                "tensor<fp32, [5, 333]> x, tensor<fp32, [5, 333]> f, tensor<fp32, [5, 333]> g",
                "        fp32 alpha = const()[name = string(\"alpha\"), val = fp32(0.3)];\n\
                 \x20       tensor<fp32, [5, 333]> sc = mul(x = f, y = alpha)[name = string(\"sc\")];\n\
                 \x20       tensor<fp32, [5, 333]> y = add(x = x, y = sc)[name = string(\"y\")];\n\
                 \x20       tensor<fp32, [5, 333]> d = sub(x = f, y = g)[name = string(\"d\")];\n\
                 \x20       tensor<fp32, [5, 333]> z = mul(x = d, y = x)[name = string(\"z\")];",
                "y, z",
            ),
            ranges: vec![None, None, None],
            saves: 2,
        },
        Case {
            name: "casts, exp and division (mixed fp16/fp32)",
            text: program(
                "ios18",
                "tensor<fp16, [33, 130]> x, tensor<fp32, [33, 130]> y, tensor<fp16, [33, 1]> z",
                "        tensor<fp16, [33, 130]> e16 = exp(x = x)[name = string(\"e16\")];\n\
                 \x20       tensor<fp32, [33, 130]> e = cast(x = e16, dtype = string(\"fp32\"))[name = string(\"e\")];\n\
                 \x20       tensor<fp32, [33, 130]> q = real_div(x = e, y = y)[name = string(\"q\")];\n\
                 \x20       tensor<fp16, [33, 130]> q16 = cast(x = q, dtype = string(\"fp16\"))[name = string(\"q16\")];\n\
                 \x20       tensor<fp16, [33, 130]> t = tanh(x = q16)[name = string(\"t\")];\n\
                 \x20       tensor<fp16, [33, 130]> m = maximum(x = t, y = z)[name = string(\"m\")];\n\
                 \x20       tensor<fp16, [33, 130]> r = sqrt(x = m)[name = string(\"r\")];",
                "r",
            ),
            ranges: vec![None, positive(), Some(Range { lo: 0.0, hi: 1.0 })],
            saves: 3,
        },
        Case {
            name: "transposed (strided) source",
            text: program(
                "ios18",
                "tensor<fp16, [40, 24]> x, tensor<fp16, [24, 40]> y",
                "        tensor<fp16, [40, 24]> yt = transpose(x = y, perm = tensor<int32, [2]>([1, 0]))[name = string(\"yt\")];\n\
                 \x20       tensor<fp16, [40, 24]> s = add(x = x, y = yt)[name = string(\"s\")];\n\
                 \x20       tensor<fp16, [40, 24]> e = square(x = s)[name = string(\"e\")];\n\
                 \x20       tensor<fp16, [40, 24]> m = mul(x = e, y = x)[name = string(\"m\")];",
                "m",
            ),
            ranges: vec![None, None],
            saves: 2,
        },
        Case {
            name: "fp32 gelu, relu, clip, sqrt, pow",
            text: program(
                "ios18",
                "tensor<fp32, [3, 257]> x, tensor<fp32, [257]> b",
                "        tensor<fp32, [3, 257]> xb = add(x = x, y = b)[name = string(\"xb\")];\n\
                 \x20       tensor<fp32, [3, 257]> g = gelu(x = xb, mode = string(\"TANH_APPROXIMATION\"))[name = string(\"g\")];\n\
                 \x20       tensor<fp32, [3, 257]> r = relu(x = g)[name = string(\"r\")];\n\
                 \x20       tensor<fp32, [3, 257]> c = clip(x = r, alpha = fp32(0.0), beta = fp32(1.5))[name = string(\"c\")];\n\
                 \x20       tensor<fp32, [3, 257]> s = sqrt(x = c)[name = string(\"s\")];\n\
                 \x20       tensor<fp32, [3, 257]> p = pow(x = s, y = fp32(3.0))[name = string(\"p\")];\n\
                 \x20       tensor<fp32, [3, 257]> e = square(x = p)[name = string(\"e\")];",
                "e",
            ),
            ranges: vec![None, None],
            saves: 6,
        },
    ]
}

fn inputs_for(program: &VerifiedProgram, ranges: &[Option<Range>], seed: u64) -> Vec<Tensor> {
    let func = program.program().entry().unwrap();
    let facts = program.facts(func);
    let mut rng = Rng::new(seed);
    program.program().functions[func]
        .params
        .iter()
        .enumerate()
        .map(|(idx, &param)| {
            let ty = &facts.types[param];
            let range = ranges
                .get(idx)
                .copied()
                .flatten()
                .unwrap_or_else(|| default_range(ty.dtype));
            random_tensor(&mut rng, ty, range)
        })
        .collect()
}

fn options(
    isa: milbridge_linalg::cpu::Isa,
    precision: Precision,
    threads: usize,
) -> CompileOptions {
    CompileOptions {
        isa,
        precision,
        threads,
        function: None,
    }
}

fn fused_steps(plan: &Plan) -> usize {
    plan.steps()
        .iter()
        .filter(|step| matches!(step.op, StepOp::Fused(_)))
        .count()
}

#[test]
fn exact_fused_plans_equal_unfused_plans_bit_for_bit() {
    for case in cases() {
        let program = verified(&case.text);
        let inputs = inputs_for(&program, &case.ranges, 17);
        for tier in tiers() {
            let Tier::Isa(isa) = tier else { continue };
            for threads in [1, 2] {
                let opts = options(isa, Precision::Exact, threads);
                let fused = compile_fused(&program, &opts).unwrap();
                let unfused = compile_unfused(&program, &opts).unwrap();
                let (fs, us) = (fused.stats(), unfused.stats());
                assert_eq!(us.fused_steps, 0);
                assert!(fs.fused_steps > 0, "{}: nothing fused: {fs:#?}", case.name);
                assert_eq!(fs.fused_steps, fused_steps(&fused));
                assert!(
                    fs.steps + case.saves <= us.steps,
                    "{}: {} fused steps vs {} unfused",
                    case.name,
                    fs.steps,
                    us.steps
                );
                assert!(fs.arena_allocations < us.arena_allocations || us.arena_allocations == 0);
                let got = run_plan(&fused, &inputs);
                let want = run_plan(&unfused, &inputs);
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.bytes() == w.bytes(),
                        "{} [{isa}, {threads} threads]: output {k} differs from the unfused plan",
                        case.name
                    );
                }
            }
        }
    }
}

/// The "fast" bound of a fused step (crate docs): intermediates stay f32, so against the
/// reference (which rounds every op to its dtype) the difference is the final rounding plus
/// the reference's own per-op roundings, each carried to the output by the chain: at most
/// `n_ops` fp16 ulps of the output, plus `n_ops · 2⁻¹¹` of the largest output where a
/// subtraction cancels (fp32: `n_ops · 2⁻²²` relative, same absolute slack at fp32 scale).
fn fast_tol(n_ops: usize, fp16: bool) -> Tol {
    let n = n_ops as f64;
    Tol {
        f16_ulps: n,
        f32_rel: n * 2f64.powi(-22),
        atol_scale: if fp16 {
            n * 2f64.powi(-11)
        } else {
            n * 2f64.powi(-22)
        },
    }
}

#[test]
fn fast_fused_plans_are_within_the_documented_bound() {
    for case in cases() {
        let program = verified(&case.text);
        let inputs = inputs_for(&program, &case.ranges, 23);
        let expected = run_reference(&program, &inputs);
        for tier in tiers() {
            let Tier::Isa(isa) = tier else { continue };
            let plan = compile_fused(&program, &options(isa, Precision::Fast, 2)).unwrap();
            let n_ops: usize = plan
                .steps()
                .iter()
                .map(|step| match &step.op {
                    StepOp::Fused(program) => program.n_ops(),
                    _ => 1,
                })
                .sum();
            assert!(plan.stats().fused_steps > 0, "{}", case.name);
            let got = run_plan(&plan, &inputs);
            for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
                let fp16 = e.ty.dtype == milbridge_mil::ir::DType::Fp16;
                assert_close(
                    &format!("{} [fast, {isa}, output {k}]", case.name),
                    e,
                    g,
                    fast_tol(n_ops, fp16),
                );
            }
        }
    }
}

#[test]
fn a_value_with_another_user_is_not_fused_into_its_consumer() {
    let act = "tensor<fp16, [8, 40]>";
    // `a` feeds both `s` and `g`: it must be its own step; `s` (one user) fuses into `g`.
    let text = program(
        "ios18",
        &format!("{act} x, {act} y"),
        &format!(
            "        {act} a = add(x = x, y = y)[name = string(\"a\")];\n\
             \x20       {act} s = square(x = a)[name = string(\"s\")];\n\
             \x20       {act} g = mul(x = s, y = a)[name = string(\"g\")];"
        ),
        "g",
    );
    let verified_program = verified(&text);
    let plan = compile_fused(&verified_program, &CompileOptions::default()).unwrap();
    let values: Vec<&str> = plan
        .steps()
        .iter()
        .map(|step| step.value.as_str())
        .collect();
    assert_eq!(values, ["a", "g"]);
    assert!(matches!(plan.steps()[0].op, StepOp::Binary(_)));
    let StepOp::Fused(fused) = &plan.steps()[1].op else {
        panic!("g is not fused: {:?}", plan.steps()[1].op)
    };
    assert_eq!((fused.n_leaves, fused.n_ops()), (1, 2));
    let stats = plan.stats();
    assert_eq!((stats.fused_steps, stats.fused_ops), (1, 2));

    // A function output is never a member, even with one op using it.
    let text = program(
        "ios18",
        &format!("{act} x, {act} y"),
        &format!(
            "        {act} a = add(x = x, y = y)[name = string(\"a\")];\n\
             \x20       {act} e = exp(x = a)[name = string(\"e\")];"
        ),
        "e, a",
    );
    let verified_program = verified(&text);
    let plan = compile_fused(&verified_program, &CompileOptions::default()).unwrap();
    assert_eq!(plan.stats().fused_steps, 0);
    assert_eq!(plan.steps().len(), 2);

    // Different shapes (a broadcast intermediate) are not fused either.
    let text = program(
        "ios18",
        "tensor<fp16, [1, 40]> x, tensor<fp16, [8, 40]> y",
        "        tensor<fp16, [1, 40]> e = exp(x = x)[name = string(\"e\")];\n\
         \x20       tensor<fp16, [8, 40]> m = mul(x = e, y = y)[name = string(\"m\")];",
        "m",
    );
    let verified_program = verified(&text);
    let plan = compile_fused(&verified_program, &CompileOptions::default()).unwrap();
    assert_eq!(plan.stats().fused_steps, 0);
    let inputs = inputs_for(&verified_program, &[], 5);
    assert_close(
        "broadcast intermediate",
        &run_reference(&verified_program, &inputs)[0],
        &run_plan(&plan, &inputs)[0],
        TOL_ELEMENTWISE,
    );
}

#[test]
fn a_tree_written_through_a_transposed_output_is_not_fused() {
    // `m` is the output only through a transpose: its home is strided along the last axis, so
    // the tree is lowered op by op (a fused step would scatter it row by row).
    let text = program(
        "ios18",
        "tensor<fp16, [40, 24]> x, tensor<fp16, [40, 24]> y",
        "        tensor<fp16, [40, 24]> s = add(x = x, y = y)[name = string(\"s\")];\n\
         \x20       tensor<fp16, [40, 24]> m = mul(x = s, y = x)[name = string(\"m\")];\n\
         \x20       tensor<fp16, [24, 40]> t = transpose(x = m, perm = tensor<int32, [2]>([1, 0]))[name = string(\"t\")];",
        "t",
    );
    let verified_program = verified(&text);
    let plan = compile_fused(&verified_program, &CompileOptions::default()).unwrap();
    assert_eq!(plan.stats().fused_steps, 0, "{:#?}", plan.steps());
    let unfused = compile_unfused(&verified_program, &CompileOptions::default()).unwrap();
    assert_eq!(plan.steps(), unfused.steps());
    // Written straight (no transpose), the same tree fuses.
    let plain = verified(&text.replace("-> (t)", "-> (m)"));
    let plan = compile_fused(&plain, &CompileOptions::default()).unwrap();
    assert_eq!(plan.stats().fused_steps, 1, "{:#?}", plan.steps());
}

#[test]
fn long_chains_split_at_the_register_budget() {
    // 20 ops over 10 distinct inputs: more than one program can hold.
    let act = "tensor<fp32, [4, 50]>";
    let params: Vec<String> = (0..10).map(|k| format!("{act} x{k}")).collect();
    let mut body = format!("        {act} a0 = abs(x = x0)[name = string(\"a0\")];\n");
    for k in 1..20 {
        body += &format!(
            "        {act} a{k} = add(x = a{}, y = x{})[name = string(\"a{k}\")];\n",
            k - 1,
            k % 10
        );
    }
    let text = program("ios18", &params.join(", "), &body, "a19");
    let verified_program = verified(&text);
    let plan = compile_fused(&verified_program, &CompileOptions::default()).unwrap();
    let stats = plan.stats();
    assert!(stats.fused_steps >= 2, "{stats:#?}");
    assert_eq!(stats.fused_ops, 20);
    for step in plan.steps() {
        if let StepOp::Fused(fused) = &step.op {
            assert!(fused.is_valid(step.srcs.len()));
        }
    }
    let inputs = inputs_for(&verified_program, &[], 9);
    assert_close(
        "long chain",
        &run_reference(&verified_program, &inputs)[0],
        &run_plan(&plan, &inputs)[0],
        Tol {
            f16_ulps: 1.0,
            f32_rel: 2e-6,
            atol_scale: 2e-6,
        },
    );
}

#[test]
fn fused_plans_round_trip_through_serialisation() {
    for case in cases() {
        let verified_program = verified(&case.text);
        let inputs = inputs_for(&verified_program, &case.ranges, 3);
        for precision in [Precision::Exact, Precision::Fast] {
            let opts = CompileOptions {
                precision,
                ..CompileOptions::default()
            };
            let plan = compile_fused(&verified_program, &opts).unwrap();
            let bytes = plan.to_bytes();
            let back = Plan::from_bytes(&bytes).unwrap();
            assert_eq!(back.steps(), plan.steps(), "{}", case.name);
            assert_eq!(back.stats(), plan.stats());
            let (a, b) = (run_plan(&plan, &inputs), run_plan(&back, &inputs));
            for (x, y) in a.iter().zip(&b) {
                assert!(x.bytes() == y.bytes(), "{}", case.name);
            }
        }
    }
}

#[test]
fn exact_profile_keeps_vector_transcendentals_unfused() {
    // The tier tables run fp32 exp on a vector polynomial; the fused kernel would evaluate it
    // as the portable kernel does, so the exact profile keeps it a step of its own (and fuses
    // the rest), while the fast profile fuses it too.
    let text = program(
        "ios18",
        "tensor<fp32, [8, 64]> x, tensor<fp32, [8, 64]> y",
        "        tensor<fp32, [8, 64]> e = exp(x = x)[name = string(\"e\")];\n\
         \x20       tensor<fp32, [8, 64]> m = mul(x = e, y = y)[name = string(\"m\")];\n\
         \x20       tensor<fp32, [8, 64]> a = add(x = m, y = y)[name = string(\"a\")];",
        "a",
    );
    let program = verified(&text);
    for tier in tiers() {
        let Tier::Isa(isa) = tier else { continue };
        let exact = compile_fused(&program, &options(isa, Precision::Exact, 1)).unwrap();
        let fast = compile_fused(&program, &options(isa, Precision::Fast, 1)).unwrap();
        let (exact, fast) = (exact.stats(), fast.stats());
        assert_eq!(
            (exact.steps, exact.fused_ops),
            (2, 2),
            "{isa}: exact {exact:#?}"
        );
        assert_eq!(
            (fast.steps, fast.fused_ops),
            (1, 3),
            "{isa}: fast {fast:#?}"
        );
    }
}
