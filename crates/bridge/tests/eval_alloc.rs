//! After the first evaluation, `Kernel::eval` allocates nothing: the engine's eval path is
//! allocation-free and the bridge reuses its lock and view lists. Counted with a counting global
//! allocator, in its own test binary so no other test allocates meanwhile.

use milbridge_bridge::{CachePolicy, Kernel, KernelOptions, samples};
use milbridge_engine::exec::raw::CountingAlloc;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc::new();

#[test]
fn eval_does_not_allocate_after_the_first_call() {
    let options = KernelOptions {
        cache: CachePolicy::Disabled,
        ..KernelOptions::default()
    };
    let (n, k, m) = (48, 32, 40);
    let mut matmul = Kernel::compile_dyn(
        &samples::dyn_matmul(n, k, m),
        &[2 * k * m],
        &[2 * n * k],
        &[2 * n * m],
        &options,
    )
    .expect("compile");
    matmul.write_input_f32(0, &vec![1.0; k * m]).expect("x");
    matmul.write_weight_f32(0, &vec![0.5; n * k]).expect("w");
    let mut chained = Kernel::compile_dyn(
        &samples::scale2(n, m),
        &[2 * n * m],
        &[],
        &[2 * n * m],
        &options,
    )
    .expect("compile");
    chained.bind_input_to(0, &matmul, 0).expect("bind");
    let mut multi = Kernel::compile_dyn(
        &samples::add_mul(8, 8),
        &[128],
        &[128],
        &[128, 128],
        &options,
    )
    .expect("compile");
    // Warm up: the first eval sizes the reusable lists (which the counter sees, so it works).
    let before_first = ALLOCATOR.allocations();
    matmul.eval().expect("eval");
    assert!(
        ALLOCATOR.allocations() > before_first,
        "the first eval fills its lists"
    );
    chained.eval().expect("eval");
    multi.eval().expect("eval");

    let before = ALLOCATOR.allocations();
    for _ in 0..20 {
        matmul.eval().expect("eval");
        chained.eval().expect("eval");
        multi.eval().expect("eval");
    }
    let during = ALLOCATOR.allocations() - before;
    assert_eq!(during, 0, "allocations during 60 evals");
    assert!(
        chained
            .output_f32(0)
            .expect("out")
            .iter()
            .all(|&v| v == 32.0)
    );
}
