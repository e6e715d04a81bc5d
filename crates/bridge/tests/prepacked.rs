//! Weights packed on write (issue #5): results bit-for-bit those of per-eval packing on every
//! tier and precision, for right-operand (`x·W`) and left-operand (`W·x`) weights; every kind of
//! rewrite is seen by the next eval; evals pack no weight; kernels sharing a plan keep their
//! own panels.

use half::f16;
use milbridge_bridge::{CachePolicy, CompileSource, Kernel, KernelOptions, Slot, samples};
use milbridge_engine::Precision;
use milbridge_linalg::cpu::{self, Isa};
use milbridge_linalg::gemm::{raw_a_products_on_this_thread, raw_b_products_on_this_thread};
use milbridge_surface::SharedBuffer;

const N: usize = 40;
const K: usize = 56;
const M: usize = 24;

fn options(isa: Isa, precision: Precision) -> KernelOptions {
    KernelOptions {
        precision,
        isa: Some(isa),
        cache: CachePolicy::Disabled,
        function: None,
    }
}

/// Which GEMM operand the weight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// `out [1, M, N] = x [1, M, K] · W [1, K, N]`: the weight is B.
    Right,
    /// `out [1, N, M] = W [1, N, K] · x [1, K, 1, M]` (maderix/ANE's and the trainer's
    /// orientation): the weight is A.
    Left,
}

/// `out [1, M, N] = x [1, M, K] · W [1, K, N]`: the weight is the GEMM's B.
fn compile(options: &KernelOptions) -> Kernel {
    compile_side(options, Side::Right)
}

/// The dynamic matmul with the weight on `side`: x has K·M elements, W has N·K, out N·M.
fn compile_side(options: &KernelOptions, side: Side) -> Kernel {
    let text = match side {
        Side::Right => samples::dyn_matmul_right(M, K, N),
        Side::Left => samples::dyn_matmul(N, K, M),
    };
    Kernel::compile_dyn(&text, &[2 * M * K], &[2 * K * N], &[2 * M * N], options)
        .expect("dynamic matmul compiles")
}

/// Deterministic values in [-1, 1).
fn values(seed: u32, count: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn bits(kernel: &mut Kernel) -> Vec<u32> {
    bits_of(kernel, Side::Right)
}

/// Evaluates and returns the output's bits, checking that the GEMM packed the weight's side
/// exactly when the weight has no panels.
fn bits_of(kernel: &mut Kernel, side: Side) -> Vec<u32> {
    let counter = match side {
        Side::Right => raw_b_products_on_this_thread,
        Side::Left => raw_a_products_on_this_thread,
    };
    let before = counter();
    kernel.eval().expect("eval");
    let packed_weight = counter() - before;
    if kernel.weight_is_prepacked(0) {
        assert_eq!(
            packed_weight, 0,
            "an eval with a prepacked {side:?} weight packed it"
        );
    } else {
        assert_eq!(
            packed_weight, 1,
            "without panels the GEMM packs its operand"
        );
    }
    kernel
        .output_f32(0)
        .expect("output")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn tiers() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|&isa| {
            let ok = cpu::isa_available(isa);
            if !ok {
                eprintln!("skipped tier {isa}: not available on this host");
            }
            ok
        })
        .collect()
}

#[test]
fn prepacked_results_equal_per_eval_packing_bit_for_bit() {
    for (isa, side) in tiers()
        .into_iter()
        .flat_map(|isa| [(isa, Side::Right), (isa, Side::Left)])
    {
        for precision in [Precision::Exact, Precision::Fast] {
            let what = format!("{isa} {precision:?} {side:?}");
            let opts = options(isa, precision);
            let mut packed = compile_side(&opts, side);
            let mut plain = compile_side(&opts, side);
            plain.share_surface(Slot::Weight, 0).expect("share");
            assert!(packed.weight_is_prepacked(0), "{what}");
            assert!(!plain.weight_is_prepacked(0), "{what}");
            let x = values(1, K * M);
            for kernel in [&packed, &plain] {
                kernel.write_input_f32(0, &x).expect("x");
            }
            // Every write path, each followed by an eval of both kernels.
            for round in 0..5u32 {
                let w = values(10 + round, N * K);
                let w16: Vec<f16> = w.iter().copied().map(f16::from_f32).collect();
                let bytes: Vec<u8> = w16.iter().flat_map(|v| v.to_le_bytes()).collect();
                for kernel in [&packed, &plain] {
                    match round {
                        0 => kernel.write_weight_f32(0, &w).expect("f32"),
                        1 => kernel.write_weight(0, &w16).expect("f16"),
                        2 => kernel.write_weight_bytes(0, &bytes).expect("bytes"),
                        3 => kernel.write_bytes(Slot::Weight, 0, &bytes).expect("slot"),
                        _ => kernel
                            .surface(Slot::Weight, 0)
                            .expect("surface")
                            .buffer
                            .write_f16(0, &w16)
                            .expect("surface write"),
                    }
                }
                let (got, want) = (bits_of(&mut packed, side), bits_of(&mut plain, side));
                assert_eq!(got, want, "{what}: write path {round}");
                // The weight really changed the result (the comparison is not vacuous).
                let direct = direct_product(&w16, &x, side);
                let out = packed.output_f32(0).expect("out");
                let tol = if precision == Precision::Fast {
                    0.15
                } else {
                    0.02
                };
                for (idx, (o, d)) in out.iter().zip(&direct).enumerate() {
                    assert!(
                        (o - d).abs() <= tol,
                        "{what} round {round} elem {idx}: {o} vs {d}"
                    );
                }
            }
        }
    }
}

/// `x (M×K) · W (K×N)` (right) or `W (N×K) · x (K×M)` (left) in f64 from the fp16 weight and
/// the fp16-rounded activations, row-major.
fn direct_product(w: &[f16], x: &[f32], side: Side) -> Vec<f32> {
    let x16: Vec<f64> = x
        .iter()
        .map(|&v| f64::from(f16::from_f32(v).to_f32()))
        .collect();
    let w = |at: usize| f64::from(w[at].to_f32());
    let mut out = vec![0f32; M * N];
    match side {
        Side::Right => {
            for row in 0..M {
                for col in 0..N {
                    let acc: f64 = (0..K).map(|k| x16[row * K + k] * w(k * N + col)).sum();
                    out[row * N + col] = acc as f32;
                }
            }
        }
        Side::Left => {
            for row in 0..N {
                for col in 0..M {
                    let acc: f64 = (0..K).map(|k| w(row * K + k) * x16[k * M + col]).sum();
                    out[row * M + col] = acc as f32;
                }
            }
        }
    }
    out
}

#[test]
fn writes_through_another_handle_need_marking_or_sharing() {
    for side in [Side::Right, Side::Left] {
        writes_through_another_handle(side);
    }
}

fn writes_through_another_handle(side: Side) {
    let opts = options(cpu::selected_isa(), Precision::Exact);
    let x = values(3, K * M);
    let w1 = values(4, N * K);
    let w2 = values(5, N * K);
    let w2_16: Vec<f16> = w2.iter().copied().map(f16::from_f32).collect();

    let mut reference = compile_side(&opts, side);
    reference.write_input_f32(0, &x).expect("x");
    reference.write_weight_f32(0, &w2).expect("w2");
    let want = bits_of(&mut reference, side);

    // A second mapping of the weight surface: its writes bump no generation of the kernel's.
    let mut marked = compile_side(&opts, side);
    marked.write_input_f32(0, &x).expect("x");
    marked.write_weight_f32(0, &w1).expect("w1");
    marked.eval().expect("eval");
    let fd = marked
        .surface(Slot::Weight, 0)
        .expect("surface")
        .buffer
        .try_clone_fd()
        .expect("fd");
    let other = SharedBuffer::from_fd(fd, 2 * N * K).expect("map");
    other.write_f16(0, &w2_16).expect("write");
    marked.mark_weight_written(0).expect("mark");
    assert_eq!(
        bits_of(&mut marked, side),
        want,
        "{side:?}: a marked weight is repacked"
    );

    let mut shared = compile_side(&opts, side);
    shared.write_input_f32(0, &x).expect("x");
    shared.write_weight_f32(0, &w1).expect("w1");
    shared.eval().expect("eval");
    let fd = shared
        .share_surface(Slot::Weight, 0)
        .expect("share")
        .buffer
        .try_clone_fd()
        .expect("fd");
    let other = SharedBuffer::from_fd(fd, 2 * N * K).expect("map");
    for (round, weights) in [&w1, &w2].into_iter().enumerate() {
        let w16: Vec<f16> = weights.iter().copied().map(f16::from_f32).collect();
        other.write_f16(0, &w16).expect("write");
        let got = bits_of(&mut shared, side);
        if round == 1 {
            assert_eq!(
                got, want,
                "{side:?}: a shared weight is read as it is at each eval"
            );
        }
    }
    assert!(shared.mark_weight_written(3).is_err(), "index checked");
}

#[test]
fn kernels_sharing_a_plan_have_their_own_panels() {
    let opts = options(cpu::selected_isa(), Precision::Fast);
    let first = compile(&opts);
    let mut kernels: Vec<Kernel> = (0..3)
        .map(|_| {
            Kernel::from_plan(first.plan().clone(), Some(1), CompileSource::Cold, None)
                .expect("instance")
        })
        .collect();
    let x = values(7, K * M);
    for (idx, kernel) in kernels.iter().enumerate() {
        kernel.write_input_f32(0, &x).expect("x");
        kernel
            .write_weight_f32(0, &values(20 + idx as u32, N * K))
            .expect("w");
    }
    let outputs: Vec<Vec<u32>> = kernels.iter_mut().map(bits).collect();
    for (idx, out) in outputs.iter().enumerate() {
        let mut alone = compile(&opts);
        alone.write_input_f32(0, &x).expect("x");
        alone
            .write_weight_f32(0, &values(20 + idx as u32, N * K))
            .expect("w");
        assert_eq!(&bits(&mut alone), out, "instance {idx}");
    }
    assert_ne!(outputs[0], outputs[1]);
}

#[test]
fn left_operand_weights_are_prepacked_in_their_orientation() {
    // maderix/ANE's `y = matmul(W, x)`: the weight is the GEMM's A, packed as linalg's PackedA.
    let opts = options(cpu::selected_isa(), Precision::Exact);
    let mut kernel = compile_side(&opts, Side::Left);
    assert!(kernel.weight_is_prepacked(0));
    let uses = kernel.plan().weight_gemm_uses(1);
    assert!(
        !uses.is_empty()
            && uses
                .iter()
                .all(|site| site.side == milbridge_engine::plan::pack::PackSide::A),
        "{uses:?}"
    );
    kernel.write_input_f32(0, &vec![1.0; K * M]).expect("x");
    // Never written: the first eval builds the panels (of the zero weight), later evals
    // pack nothing.
    kernel.eval().expect("first eval");
    assert!(bits_of(&mut kernel, Side::Left).iter().all(|&v| v == 0));
    for scale in [0.5f32, 2.0] {
        kernel.write_weight_f32(0, &vec![scale; N * K]).expect("w");
        bits_of(&mut kernel, Side::Left);
        let expected = scale * K as f32;
        assert!(
            kernel
                .output_f32(0)
                .expect("out")
                .iter()
                .all(|&v| v == expected)
        );
    }
}

#[test]
fn weights_that_feed_no_gemm_are_not_packed() {
    let opts = options(cpu::selected_isa(), Precision::Exact);
    let mut kernel =
        Kernel::compile_dyn(&samples::add_mul(8, 8), &[128], &[128], &[128, 128], &opts)
            .expect("compile");
    assert!(!kernel.weight_is_prepacked(0));
    kernel.write_input_f32(0, &[1.0; 64]).expect("x");
    kernel.write_weight_f32(0, &[2.0; 64]).expect("w");
    kernel.eval().expect("eval");
    assert!(kernel.output_f32(0).expect("sum").iter().all(|&v| v == 3.0));
    assert!(!kernel.weight_is_prepacked(7));
}
