//! `Plan::eval` allocates nothing: counted with a counting global allocator, over programs that
//! use every kind of step (views, GEMM, softmax, reductions, concat copies, conv, gather,
//! casts, attention), on every tier, with the pool in use.

mod common;

use common::{Rng, compile_tier, default_range, random_tensor, tiers, verified};
use milbridge_engine::exec::raw::CountingAlloc;
use milbridge_mil::ir::Tensor;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc::new();

const PROGRAM: &str = "program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 64, 1, 96]> x, tensor<fp16, [1, 2, 32, 16]> q, tensor<int32, [8]> idx, tensor<fp32, [1, 4, 9, 9]> img) {
        tensor<fp16, [1, 64, 1, 64]> act = slice_by_size(x = x, begin = tensor<int32, [4]>([0, 0, 0, 0]), size = tensor<int32, [4]>([1, 64, 1, 64]))[name = string(\"act\")];
        tensor<fp16, [1, 64, 1, 32]> wt = slice_by_size(x = x, begin = tensor<int32, [4]>([0, 0, 0, 64]), size = tensor<int32, [4]>([1, 64, 1, 32]))[name = string(\"wt\")];
        tensor<fp16, [1, 1, 64, 64]> a2 = reshape(x = act, shape = tensor<int32, [4]>([1, 1, 64, 64]))[name = string(\"a2\")];
        tensor<fp16, [1, 1, 64, 64]> a3 = transpose(x = a2, perm = tensor<int32, [4]>([0, 1, 3, 2]))[name = string(\"a3\")];
        tensor<fp16, [1, 1, 64, 32]> w = reshape(x = wt, shape = tensor<int32, [4]>([1, 1, 64, 32]))[name = string(\"w\")];
        tensor<fp16, [1, 1, 64, 32]> y = matmul(x = a3, y = w)[name = string(\"y\")];
        tensor<fp16, [1, 1, 64, 32]> ysc = mul(x = y, y = fp16(0.125))[name = string(\"ysc\")];
        tensor<fp16, [1, 1, 64, 32]> s = softmax(x = ysc, axis = int32(-1))[name = string(\"s\")];
        tensor<fp16, [1, 1, 1, 32]> r = reduce_sum(x = s, axes = tensor<int32, [1]>([2]), keep_dims = bool(true))[name = string(\"r\")];
        tensor<fp16, [1, 1, 64, 32]> m = mul(x = s, y = r)[name = string(\"m\")];
        tensor<fp16, [1, 1, 65, 32]> c = concat(values = (m, r), axis = int32(2))[name = string(\"c\")];
        tensor<fp32, [1, 1, 65, 32]> c32 = cast(x = c, dtype = string(\"fp32\"))[name = string(\"c32\")];
        tensor<fp16, [1, 2, 32, 16]> att = scaled_dot_product_attention(query = q, key = q, value = q)[name = string(\"att\")];
        tensor<fp16, [64, 16]> flat = reshape(x = att, shape = tensor<int32, [2]>([-1, 16]))[name = string(\"flat\")];
        tensor<fp16, [8, 16]> g = gather(x = flat, indices = idx, axis = int32(0))[name = string(\"g\")];
        tensor<fp32, [4, 4, 3, 3]> k = const()[name = string(\"k\"), val = tensor<fp32, [4, 4, 3, 3]>([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9])];
        tensor<fp32, [1, 4, 9, 9]> cv = conv(x = img, weight = k, pad_type = string(\"same\"))[name = string(\"cv\")];
        tensor<fp16, [1, 64, 1, 96]> xs = sigmoid(x = x)[name = string(\"xs\")];
        tensor<fp16, [1, 64, 1, 96]> xg = mul(x = xs, y = x)[name = string(\"xg\")];
        tensor<fp32, [1, 64, 1, 96]> xr = cast(x = xg, dtype = string(\"fp32\"))[name = string(\"xr\")];
        tensor<fp16, [1, 64, 1, 1]> rw = slice_by_size(x = x, begin = tensor<int32, [4]>([0, 0, 0, 0]), size = tensor<int32, [4]>([1, 64, 1, 1]))[name = string(\"rw\")];
        tensor<fp16, [1, 64, 1, 96]> sq = mul(x = x, y = x)[name = string(\"sq\")];
        tensor<fp16, [1, 1, 1, 96]> ss = reduce_mean(x = sq, axes = tensor<int32, [1]>([1]), keep_dims = bool(true))[name = string(\"ss\")];
        tensor<fp16, [1, 1, 1, 96]> rr = rsqrt(x = ss, epsilon = fp16(0.001))[name = string(\"rr\")];
        tensor<fp16, [1, 64, 1, 96]> xn = mul(x = x, y = rr)[name = string(\"xn\")];
        tensor<fp16, [1, 64, 1, 96]> rn = mul(x = xn, y = rw)[name = string(\"rn\")];
    } -> (c32, g, cv, xr, rn);
}
";

#[test]
fn eval_does_not_allocate() {
    let program = verified(PROGRAM);
    let func = program.program().entry().unwrap();
    let facts = program.facts(func);
    let mut rng = Rng::new(42);
    let inputs: Vec<Tensor> = program.program().functions[func]
        .params
        .iter()
        .map(|&param| {
            let ty = &facts.types[param];
            let range = if ty.dtype == milbridge_mil::ir::DType::Int32 {
                common::Range { lo: 0.0, hi: 63.0 }
            } else {
                default_range(ty.dtype)
            };
            random_tensor(&mut rng, ty, range)
        })
        .collect();
    let fused_options = milbridge_engine::CompileOptions {
        threads: 2,
        ..milbridge_engine::CompileOptions::default()
    };
    let fused = milbridge_engine::compile_fused(&program, &fused_options).unwrap();
    // The fast profile's fused plan holds the pattern steps (RMSNorm, scaled softmax).
    let fast_fused = milbridge_engine::compile_fused(
        &program,
        &milbridge_engine::CompileOptions {
            precision: milbridge_engine::Precision::Fast,
            ..fused_options.clone()
        },
    )
    .unwrap();
    let patterns = fast_fused
        .steps()
        .iter()
        .filter(|step| {
            matches!(
                step.op,
                milbridge_engine::plan::step::StepOp::RmsNorm { .. }
                    | milbridge_engine::plan::step::StepOp::SoftmaxScaled { .. }
            )
        })
        .count();
    assert_eq!(patterns, 2, "{:#?}", fast_fused.stats().kernels);
    let plans = tiers()
        .into_iter()
        .map(|tier| (format!("{tier:?}"), compile_tier(&program, tier, 2)))
        .chain([
            ("fused".to_string(), fused),
            ("fast fused".to_string(), fast_fused),
        ]);
    for (tier, plan) in plans {
        let input_bytes: Vec<Vec<u64>> = inputs
            .iter()
            .map(|tensor| {
                let bytes = tensor.bytes().unwrap();
                let mut words = vec![0u64; bytes.len().div_ceil(8)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()]
                    .copy_from_slice(bytes);
                words
            })
            .collect();
        let input_slices: Vec<&[u8]> = input_bytes
            .iter()
            .zip(&inputs)
            .map(|(words, tensor)| {
                &bytemuck::cast_slice::<u64, u8>(words)[..tensor.bytes().unwrap().len()]
            })
            .collect();
        let mut out_words: Vec<Vec<u64>> = plan
            .outputs()
            .iter()
            .map(|io| vec![0u64; io.byte_len.div_ceil(8)])
            .collect();
        let mut out_slices: Vec<&mut [u8]> = out_words
            .iter_mut()
            .zip(plan.outputs())
            .map(|(words, io)| &mut bytemuck::cast_slice_mut::<u64, u8>(words)[..io.byte_len])
            .collect();
        let mut ws = plan.workspace();
        // Warm up: first use of the pool and of lazily initialised statics may allocate.
        plan.eval(&mut ws, &input_slices, &mut out_slices).unwrap();
        let before = ALLOCATOR.allocations();
        for _ in 0..3 {
            plan.eval(&mut ws, &input_slices, &mut out_slices).unwrap();
        }
        let after = ALLOCATOR.allocations();
        assert_eq!(
            after - before,
            0,
            "{tier}: eval allocated {} times",
            after - before
        );
        // The same with the matmul's weight (a slice of input 0) prepacked.
        let packed_x = plan.pack_input(0, input_slices[0]).unwrap();
        let mut packed = vec![None; input_slices.len()];
        packed[0] = Some(&packed_x);
        plan.eval_with_packed(&mut ws, &input_slices, &packed, &mut out_slices)
            .unwrap();
        let before = ALLOCATOR.allocations();
        for _ in 0..3 {
            plan.eval_with_packed(&mut ws, &input_slices, &packed, &mut out_slices)
                .unwrap();
        }
        let after = ALLOCATOR.allocations();
        assert_eq!(
            after - before,
            0,
            "{tier}: a prepacked eval allocated {} times",
            after - before
        );
        // And with the per-step profile on: it times every step and still does not allocate.
        ws.profile_steps(&plan);
        let before = ALLOCATOR.allocations();
        for _ in 0..3 {
            plan.eval(&mut ws, &input_slices, &mut out_slices).unwrap();
        }
        let after = ALLOCATOR.allocations();
        assert_eq!(after - before, 0, "{tier}: a profiled eval allocated");
        let times = ws.step_times().expect("profiling is on");
        assert_eq!(times.len(), plan.steps().len());
        assert!(
            times.iter().all(|time| !time.is_zero()),
            "{tier}: every step was timed: {times:?}"
        );
        assert!(plan.stats().steps >= 8, "{:#?}", plan.stats());
        if tier == "fused" {
            assert!(plan.stats().fused_steps >= 1, "{:#?}", plan.stats());
        }
    }
}
