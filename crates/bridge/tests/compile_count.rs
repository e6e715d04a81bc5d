//! The cold-compile counter, alone in its own test binary (it is process-wide).

use milbridge_bridge::{
    CachePolicy, CompileSource, Kernel, KernelOptions, compile_count, reset_compile_count, samples,
};

#[test]
fn cache_hits_do_not_count_as_compiles() {
    let dir = std::env::temp_dir().join(format!("milbridge-count-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cached = KernelOptions {
        cache: CachePolicy::Dir(dir.clone()),
        ..KernelOptions::default()
    };
    let uncached = KernelOptions {
        cache: CachePolicy::Disabled,
        ..KernelOptions::default()
    };
    let mil = samples::scale2(16, 16);

    reset_compile_count();
    assert_eq!(compile_count(), 0);
    let cold = Kernel::compile_dyn(&mil, &[512], &[], &[512], &cached).expect("cold");
    assert_eq!(cold.compile_source(), CompileSource::Cold);
    assert_eq!(compile_count(), 1);
    drop(cold);
    let warm = Kernel::compile_dyn(&mil, &[512], &[], &[512], &cached).expect("warm");
    assert_eq!(warm.compile_source(), CompileSource::CacheHit);
    assert_eq!(compile_count(), 1, "a cache hit is not a compile");

    // Without a cache every compile is cold; failures are not counted.
    Kernel::compile_dyn(&mil, &[512], &[], &[512], &uncached).expect("uncached");
    assert_eq!(compile_count(), 2);
    assert!(Kernel::compile_dyn("program(1.3) {", &[], &[], &[], &uncached).is_err());
    assert!(Kernel::compile_dyn(&mil, &[4], &[], &[512], &uncached).is_err());
    assert_eq!(
        compile_count(),
        3,
        "the size check runs after a successful compile"
    );
    reset_compile_count();
    assert_eq!(compile_count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
