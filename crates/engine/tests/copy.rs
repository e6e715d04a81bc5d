//! The tier tables' copy kernel (`kernels::copy`): copies out of transposed views — the head
//! transposes of the training kernels, 2-d transposes whose destination rows are split into
//! blocks, 3-axis permutations, groups cut by the thread split — give the portable row
//! kernel's bytes on every tier, with 1 and 2 threads; shapes it does not block (no block
//! length divides the row) take the row kernel.

mod common;

use common::{Range, Rng, Tier, compile_tier, random_tensor, run_plan, tiers, verified};

fn transpose_program(dtype: &str, shape: &[usize], perm: &[usize]) -> String {
    let dims = |s: &[usize]| {
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    format!(
        "program(1.3)\n{{\n    func main<ios18>(tensor<{dtype}, [{}]> x) {{\n        \
         tensor<{dtype}, [{}]> y = transpose(x = x, perm = tensor<int32, [{}]>([{}]))[name = string(\"y\")];\n    \
         }} -> (y);\n}}\n",
        dims(shape),
        dims(&out),
        perm.len(),
        dims(perm)
    )
}

#[test]
fn transposed_copies_match_the_portable_kernel_bit_for_bit() {
    let cases: [(&[usize], &[usize], bool); 6] = [
        (&[12, 64, 256], &[0, 2, 1], true),
        (&[768, 256], &[1, 0], true),
        (&[5, 37, 19], &[2, 0, 1], true),
        (&[3, 100, 70], &[0, 2, 1], true),
        (&[2, 33, 65], &[0, 2, 1], true),
        (&[2, 9, 131], &[0, 2, 1], false),
    ];
    for dtype in ["fp16", "fp32", "int32"] {
        for (case, &(shape, perm, blocked)) in cases.iter().enumerate() {
            let text = transpose_program(dtype, shape, perm);
            let program = verified(&text);
            let func = program.program().entry().unwrap();
            let ty = &program.facts(func).types[program.program().functions[func].params[0]];
            let mut rng = Rng::new(case as u64 + 1);
            let inputs = vec![random_tensor(
                &mut rng,
                ty,
                Range {
                    lo: -1000.0,
                    hi: 1000.0,
                },
            )];
            let want = run_plan(&compile_tier(&program, Tier::Portable, 1), &inputs);
            for tier in tiers() {
                for threads in [1, 2] {
                    let plan = compile_tier(&program, tier, threads);
                    let kernels = plan.stats().kernels;
                    if tier != Tier::Portable {
                        assert!(
                            kernels.iter().any(|k| k.starts_with("blocked_copy")),
                            "{dtype} {shape:?}: {kernels:?}"
                        );
                    }
                    let got = run_plan(&plan, &inputs);
                    assert!(
                        got[0].bytes().unwrap() == want[0].bytes().unwrap(),
                        "{dtype} {shape:?} perm {perm:?} (blocked: {blocked}) on {tier:?}, {threads} threads"
                    );
                }
            }
        }
    }
}

/// A function output that is a reshape of a transposed view (not expressible as strides) is
/// materialised straight into the output buffer: one copy step, with the portable bytes.
#[test]
fn a_materialised_output_reshape_is_copied_once() {
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 96, 1, 40]> x) {\n        \
        tensor<fp16, [1, 3, 32, 40]> r = reshape(x = x, shape = tensor<int32, [4]>([1, 3, 32, 40]))[name = string(\"r\")];\n        \
        tensor<fp16, [1, 3, 40, 32]> t = transpose(x = r, perm = tensor<int32, [4]>([0, 1, 3, 2]))[name = string(\"t\")];\n        \
        tensor<fp16, [1, 3, 640, 2]> y = reshape(x = t, shape = tensor<int32, [4]>([1, 3, 640, 2]))[name = string(\"y\")];\n        \
        tensor<fp16, [1, 3, 640, 2]> z = mul(x = y, y = fp16(2.0))[name = string(\"z\")];\n    \
        } -> (y, z, y);\n}\n";
    let program = verified(text);
    let func = program.program().entry().unwrap();
    let ty = &program.facts(func).types[program.program().functions[func].params[0]];
    let inputs = vec![random_tensor(
        &mut Rng::new(3),
        ty,
        Range { lo: -8.0, hi: 8.0 },
    )];
    let want = run_plan(&compile_tier(&program, Tier::Portable, 1), &inputs);
    for tier in tiers() {
        let plan = compile_tier(&program, tier, 2);
        let copies = plan
            .steps()
            .iter()
            .filter(|step| step.op == milbridge_engine::plan::step::StepOp::Copy)
            .count();
        // y into output 0, and output 2 (y again) copied from it; z computed from output 0.
        assert_eq!(copies, 2, "{tier:?}: {:#?}", plan.stats());
        let got = run_plan(&plan, &inputs);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.bytes().unwrap() == w.bytes().unwrap(),
                "{tier:?}: output {k}"
            );
        }
    }
}
