//! The Rust API end to end: compile, write, eval, read, chain, cache, surfaces.

use std::path::PathBuf;

use half::f16;
use milbridge_bridge::blobs::ModelDir;
use milbridge_bridge::cache::{self, CacheStats};
use milbridge_bridge::{
    BlobMap, CachePolicy, CompileSource, Error, ErrorKind, Kernel, KernelOptions, NoBlobs,
    RealtimeGuard, Slot, samples,
};

fn no_cache() -> KernelOptions {
    KernelOptions {
        cache: CachePolicy::Disabled,
        ..KernelOptions::default()
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "milbridge-kernel-test-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `scale` on the diagonal of an n×k matrix, row-major.
fn diagonal(n: usize, k: usize, scale: f32) -> Vec<f32> {
    (0..n * k)
        .map(|i| if i / k == i % k { scale } else { 0.0 })
        .collect()
}

fn f16s(values: &[f32]) -> Vec<f16> {
    values.iter().copied().map(f16::from_f32).collect()
}

fn sum(values: &[f32]) -> f32 {
    values.iter().sum()
}

const N: usize = 64;
const K: usize = 64;
const M: usize = 64;

fn dyn_kernel() -> Kernel {
    Kernel::compile_dyn(
        &samples::dyn_matmul(N, K, M),
        &[2 * K * M],
        &[2 * N * K],
        &[2 * N * M],
        &no_cache(),
    )
    .expect("dynamic matmul compiles")
}

#[test]
fn dynamic_weights_update_without_recompiling() {
    let mut kernel = dyn_kernel();
    assert_eq!(
        (kernel.n_inputs(), kernel.n_weights(), kernel.n_outputs()),
        (1, 1, 1)
    );
    kernel
        .write_input_f16(0, &f16s(&vec![1.0; K * M]))
        .expect("input");
    kernel
        .write_weight(0, &f16s(&diagonal(N, K, 1.0)))
        .expect("identity");
    kernel.eval().expect("eval identity");
    let identity = kernel.output_f32(0).expect("read");
    assert_eq!(sum(&identity), (N * M) as f32);

    // 2x identity by a raw fp16 write: the output doubles.
    let twice: Vec<u8> = f16s(&diagonal(N, K, 2.0))
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    kernel.write_weight_bytes(0, &twice).expect("2x identity");
    kernel.eval().expect("eval 2x");
    assert_eq!(
        sum(&kernel.output_f32(0).expect("read")),
        2.0 * (N * M) as f32
    );

    // 3x identity written as f32, converted into the fp16 surface.
    kernel
        .write_weight_f32(0, &diagonal(N, K, 3.0))
        .expect("3x identity");
    kernel.eval().expect("eval 3x");
    let out = kernel.output_f32(0).expect("read");
    assert_eq!(sum(&out), 3.0 * (N * M) as f32);
    assert!(out.iter().all(|&v| v == 3.0));

    // Inputs persist: a second eval without writes gives the same result.
    kernel.eval().expect("eval again");
    assert_eq!(kernel.output_f32(0).expect("read"), out);
}

#[test]
fn matmul_values_match_a_direct_computation() {
    let (n, k, m) = (5, 7, 3);
    let mut kernel = Kernel::compile_dyn(
        &samples::dyn_matmul(n, k, m),
        &[2 * k * m],
        &[2 * n * k],
        &[2 * n * m],
        &no_cache(),
    )
    .expect("compile");
    let x: Vec<f32> = (0..k * m).map(|i| (i % 5) as f32 - 2.0).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 3) as f32 * 0.5).collect();
    kernel.write_input_f32(0, &x).expect("x");
    kernel.write_weight_f32(0, &w).expect("w");
    kernel.eval().expect("eval");
    let mut out = vec![f16::ZERO; n * m];
    kernel.read_output_f16(0, &mut out).expect("read f16");
    for row in 0..n {
        for col in 0..m {
            let expected: f32 = (0..k).map(|j| w[row * k + j] * x[j * m + col]).sum();
            assert_eq!(out[row * m + col].to_f32(), expected, "out[{row}][{col}]");
        }
    }
}

#[test]
fn sizes_are_checked_against_the_signature() {
    let mil = samples::dyn_matmul(N, K, M);
    let err = Kernel::compile_dyn(
        &mil,
        &[2 * K * M],
        &[2 * N * K - 2],
        &[2 * N * M],
        &no_cache(),
    )
    .expect_err("bad weight size");
    assert!(
        matches!(
            err,
            Error::Size {
                slot: Slot::Weight,
                index: 0,
                expected: 8192,
                given: 8190,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Shape);
    assert!(
        err.to_string()
            .contains("weight 0 (`W`, tensor<fp16, [1, 64, 64]>) is 8192 bytes but 8190"),
        "{err}"
    );

    // The split between activations and weights is the caller's: both parameters as inputs.
    let all_inputs = Kernel::compile_dyn(
        &mil,
        &[2 * K * M, 2 * N * K],
        &[],
        &[2 * N * M],
        &no_cache(),
    )
    .expect("all inputs");
    assert_eq!((all_inputs.n_inputs(), all_inputs.n_weights()), (2, 0));

    let err = Kernel::compile_dyn(&mil, &[2 * K * M], &[2 * N * K], &[], &no_cache())
        .expect_err("no output size");
    assert!(
        matches!(
            err,
            Error::Arity {
                slot: Slot::Output,
                expected: 1,
                given: 0
            }
        ),
        "{err:?}"
    );

    let err = Kernel::compile_dyn(&mil, &[2 * K * M, 2, 2], &[], &[2 * N * M], &no_cache())
        .expect_err("too many");
    assert!(
        matches!(
            err,
            Error::Arity {
                slot: Slot::Input,
                expected: 2,
                given: 3
            }
        ),
        "{err:?}"
    );
}

#[test]
fn writes_and_reads_are_bounds_checked() {
    let kernel = dyn_kernel();
    let err = kernel.write_input(0, &[0u8; 10]).expect_err("short input");
    assert!(
        matches!(
            err,
            Error::Size {
                slot: Slot::Input,
                expected: 8192,
                given: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let err = kernel.write_input(1, &[0u8; 8192]).expect_err("bad index");
    assert!(
        matches!(
            err,
            Error::Index {
                slot: Slot::Input,
                index: 1,
                count: 1
            }
        ),
        "{err:?}"
    );
    let err = kernel
        .write_weight(1, &[f16::ZERO; 4096])
        .expect_err("bad weight index");
    assert!(
        matches!(
            err,
            Error::Index {
                slot: Slot::Weight,
                index: 1,
                count: 1
            }
        ),
        "{err:?}"
    );
    let err = kernel
        .write_weight_f32(0, &[0.0; 4095])
        .expect_err("short f32 weight");
    assert!(
        matches!(
            err,
            Error::Size {
                slot: Slot::Weight,
                expected: 8192,
                given: 8190,
                ..
            }
        ),
        "{err:?}"
    );
    let mut big = vec![0u8; 8194];
    let err = kernel.read_output(0, &mut big).expect_err("long read");
    assert!(
        matches!(
            err,
            Error::Size {
                slot: Slot::Output,
                given: 8194,
                ..
            }
        ),
        "{err:?}"
    );
    let err = kernel
        .write_bytes(Slot::Output, 0, &big[..8192])
        .expect_err("outputs are read-only");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = kernel.check_slot(Slot::Output, -1).expect_err("negative");
    assert_eq!(
        err.to_string(),
        "output index -1 is out of range: the kernel has 1 output tensors"
    );
    assert_eq!(kernel.check_slot(Slot::Weight, 0).expect("in range"), 0);
}

#[test]
fn compile_errors_carry_line_and_column() {
    let bad = samples::scale2(4, 4).replace("add(x = x, y = x)", "add(x = x, y = nope)");
    let err = Kernel::compile(&bad, &NoBlobs, &no_cache()).expect_err("undefined variable");
    assert_eq!(err.kind(), ErrorKind::Compile);
    let Error::Compile {
        diagnostics,
        rendered,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(
        diagnostics.iter().any(|d| d.code.as_str() == "E100"),
        "{diagnostics:?}"
    );
    let located = milbridge_bridge::locate_diagnostics(&bad, diagnostics);
    let line = bad.lines().position(|l| l.contains("nope")).expect("line") as u32 + 1;
    let col = bad
        .lines()
        .nth(line as usize - 1)
        .expect("text")
        .find("nope")
        .expect("col") as u32
        + 1;
    assert!(
        located.iter().any(|d| d.line == line && d.col == col),
        "{located:?} vs {line}:{col}"
    );
    assert!(
        rendered.contains(&format!("model.mil:{line}:{col}: error[E100]")),
        "{rendered}"
    );
    assert!(
        err.to_string().contains(&format!("model.mil:{line}:{col}")),
        "{err}"
    );

    let err = Kernel::compile("program(1.3) {", &NoBlobs, &no_cache()).expect_err("truncated");
    assert_eq!(err.kind(), ErrorKind::Compile);
    assert!(err.to_string().contains("model.mil:1:"), "{err}");
}

#[test]
fn zero_copy_chaining_shares_the_surface() {
    let (r, c) = (32, 32);
    let mil = samples::scale2(r, c);
    let bytes = 2 * r * c;
    let mut k1 = Kernel::compile_dyn(&mil, &[bytes], &[], &[bytes], &no_cache()).expect("k1");
    let mut k2 = Kernel::compile_dyn(&mil, &[bytes], &[], &[bytes], &no_cache()).expect("k2");
    k2.bind_input_to(0, &k1, 0).expect("bind");
    assert!(k2.input_is_bound_to(0, &k1, 0));
    let k1_out = k1.surface(Slot::Output, 0).expect("surface");
    let k2_in = k2.surface(Slot::Input, 0).expect("surface");
    assert_eq!(
        k1_out.buffer.id(),
        k2_in.buffer.id(),
        "the very same shared buffer"
    );
    for round in 1..=3 {
        let x = round as f32;
        k1.write_input_f32(0, &vec![x; r * c]).expect("x");
        k1.eval().expect("k1");
        k2.eval().expect("k2");
        let out = k2.output_f32(0).expect("out");
        assert!(
            out.iter().all(|&v| v == 4.0 * x),
            "round {round}: {}",
            out[0]
        );
    }
    // Dropping the producer keeps the shared surface alive for the consumer.
    drop(k1);
    k2.eval().expect("k2 alone");
    assert!(k2.output_f32(0).expect("out").iter().all(|&v| v == 12.0));
    k2.unbind_input(0).expect("unbind");
    k2.eval().expect("fresh zero input");
    assert!(k2.output_f32(0).expect("out").iter().all(|&v| v == 0.0));
}

#[test]
fn binding_checks_sizes_and_self_loops() {
    let mut a =
        Kernel::compile_dyn(&samples::scale2(4, 4), &[32], &[], &[32], &no_cache()).expect("a");
    let b = Kernel::compile_dyn(&samples::scale2(4, 8), &[64], &[], &[64], &no_cache()).expect("b");
    let err = a.bind_input_to(0, &b, 0).expect_err("size mismatch");
    assert!(
        matches!(
            err,
            Error::Size {
                slot: Slot::Input,
                expected: 32,
                given: 64,
                ..
            }
        ),
        "{err:?}"
    );
    let err = a.bind_input_to(0, &b, 3).expect_err("bad output index");
    assert!(
        matches!(
            err,
            Error::Index {
                slot: Slot::Output,
                index: 3,
                count: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn copy_io_chains_by_copying() {
    let mil = samples::scale2(32, 32);
    let mut k1 = Kernel::compile_dyn(&mil, &[2048], &[], &[2048], &no_cache()).expect("k1");
    let mut k2 = Kernel::compile_dyn(&mil, &[2048], &[], &[2048], &no_cache()).expect("k2");
    k1.write_input_f32(0, &vec![1.0; 1024]).expect("x");
    k1.eval().expect("k1");
    k2.copy_input_from(0, &k1, 0).expect("copy");
    assert!(!k2.input_is_bound_to(0, &k1, 0));
    k2.eval().expect("k2");
    assert!(k2.output_f32(0).expect("out").iter().all(|&v| v == 4.0));
    // A copy, not a binding: k1's later results do not reach k2.
    k1.write_input_f32(0, &vec![5.0; 1024]).expect("x");
    k1.eval().expect("k1");
    k2.eval().expect("k2");
    assert!(k2.output_f32(0).expect("out").iter().all(|&v| v == 4.0));
}

#[test]
fn several_outputs() {
    let (c, s) = (8, 16);
    let bytes = 2 * c * s;
    let mut kernel = Kernel::compile_dyn(
        &samples::add_mul(c, s),
        &[bytes],
        &[bytes],
        &[bytes, bytes],
        &no_cache(),
    )
    .expect("compile");
    kernel.write_input_f32(0, &vec![3.0; c * s]).expect("x");
    kernel.write_weight_f32(0, &vec![0.5; c * s]).expect("w");
    kernel.eval().expect("eval");
    assert!(kernel.output_f32(0).expect("sum").iter().all(|&v| v == 3.5));
    assert!(
        kernel
            .output_f32(1)
            .expect("prod")
            .iter()
            .all(|&v| v == 1.5)
    );
    let err = Kernel::compile_dyn(
        &samples::add_mul(c, s),
        &[bytes],
        &[bytes],
        &[bytes],
        &no_cache(),
    )
    .expect_err("one output");
    assert!(
        matches!(
            err,
            Error::Arity {
                slot: Slot::Output,
                expected: 2,
                given: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn blobfile_weights_from_memory_and_from_a_directory() {
    let (ci, co, s) = (4, 3, 5);
    let weights: Vec<f32> = (0..co * ci).map(|i| i as f32 * 0.25).collect();
    let blob = milbridge_mil::blob::single_fp16_blob(&weights);
    let mil = samples::conv1x1_blob(ci, co, s);
    let x: Vec<f32> = (0..ci * s).map(|i| (i % 4) as f32).collect();
    let expected: Vec<f32> = (0..co * s)
        .map(|idx| {
            (0..ci)
                .map(|i| weights[(idx / s) * ci + i] * x[i * s + idx % s])
                .sum()
        })
        .collect();

    let check = |mut kernel: Kernel| {
        assert_eq!(
            (kernel.n_inputs(), kernel.n_weights(), kernel.n_outputs()),
            (1, 0, 1)
        );
        kernel
            .check_sizes(&[2 * ci * s], &[], &[2 * co * s])
            .expect("sizes");
        kernel.write_input_f32(0, &x).expect("x");
        kernel.eval().expect("eval");
        assert_eq!(kernel.output_f32(0).expect("y"), expected);
    };
    check(
        Kernel::compile_multi_weights(
            &mil,
            &[("@model_path/weights/weight.bin", &blob)],
            &no_cache(),
        )
        .expect("memory"),
    );

    let dir = temp_dir("modeldir");
    std::fs::create_dir_all(dir.join("weights")).expect("dir");
    std::fs::write(dir.join("weights/weight.bin"), &blob).expect("blob file");
    check(Kernel::compile(&mil, &ModelDir::new(&dir), &no_cache()).expect("model dir"));

    let err = Kernel::compile(&mil, &BlobMap::new(), &no_cache()).expect_err("missing weight file");
    assert!(
        err.diagnostics().iter().any(|d| d.code.as_str() == "E150"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cache_hits_and_recovers_from_corruption() {
    let dir = temp_dir("cache");
    let options = KernelOptions {
        cache: CachePolicy::Dir(dir.clone()),
        ..KernelOptions::default()
    };
    let mil = samples::scale2(8, 8);
    let first = Kernel::compile_dyn(&mil, &[128], &[], &[128], &options).expect("cold");
    assert_eq!(first.compile_source(), CompileSource::Cold);
    let key = *first.cache_key().expect("keyed");
    assert_eq!(cache::stats(&dir).expect("stats").entries, 1);

    let mut second = Kernel::compile_dyn(&mil, &[128], &[], &[128], &options).expect("warm");
    assert_eq!(second.compile_source(), CompileSource::CacheHit);
    second.write_input_f32(0, &[1.5; 64]).expect("x");
    second.eval().expect("eval from cached plan");
    assert!(second.output_f32(0).expect("out").iter().all(|&v| v == 3.0));

    // A different program is a different key.
    let other =
        Kernel::compile_dyn(&samples::scale2(8, 4), &[64], &[], &[64], &options).expect("other");
    assert_eq!(other.compile_source(), CompileSource::Cold);
    assert_ne!(other.cache_key(), Some(&key));

    // Corrupt the entry: detected, deleted, recompiled, rewritten.
    let entry = cache::entry_path(&dir, &key);
    let mut bytes = std::fs::read(&entry).expect("entry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, &bytes).expect("corrupt");
    let third = Kernel::compile_dyn(&mil, &[128], &[], &[128], &options).expect("recompiled");
    assert_eq!(third.compile_source(), CompileSource::Cold);
    assert_ne!(std::fs::read(&entry).expect("rewritten"), bytes);
    let fourth = Kernel::compile_dyn(&mil, &[128], &[], &[128], &options).expect("hit again");
    assert_eq!(fourth.compile_source(), CompileSource::CacheHit);

    // Truncated entry.
    std::fs::write(&entry, &bytes[..10]).expect("truncate");
    assert_eq!(
        Kernel::compile_dyn(&mil, &[128], &[], &[128], &options)
            .expect("recompiled")
            .compile_source(),
        CompileSource::Cold
    );

    let stats = cache::stats(&dir).expect("stats");
    assert_eq!(stats.entries, 2);
    assert_eq!(cache::clear(&dir).expect("clear"), stats);
    assert_eq!(cache::stats(&dir).expect("stats"), CacheStats::default());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn surfaces_are_shareable_with_another_process() {
    use std::os::fd::AsRawFd as _;
    let mut kernel =
        Kernel::compile_dyn(&samples::scale2(1, 4), &[8], &[], &[8], &no_cache()).expect("compile");
    let surface = kernel.surface(Slot::Input, 0).expect("input surface");
    assert_eq!(surface.buffer.len(), 8);
    let path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        surface.buffer.fd().as_raw_fd()
    );
    // A separate process writes four fp16 1.0 values (bytes 00 3c) through the descriptor,
    // opened read-write without truncating.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '\\000\\074\\000\\074\\000\\074\\000\\074' 1<> {path}"
        ))
        .status()
        .expect("sh runs");
    assert!(status.success());
    kernel.eval().expect("eval");
    assert_eq!(kernel.output_f32(0).expect("out"), vec![2.0; 4]);
}

#[test]
fn typed_access_checks_dtypes() {
    let fp32 = samples::HEADER.to_string()
        + "    func main<ios18>(tensor<fp32, [1, 4]> x) {\n        tensor<fp32, [1, 4]> y = add(x = x, y = x)[name = string(\"y\")];\n    } -> (y);\n}\n";
    let mut kernel =
        Kernel::compile_dyn(&fp32, &[16], &[], &[16], &no_cache()).expect("fp32 kernel");
    kernel
        .write_input_f32(0, &[1.0, 2.0, 3.0, 4.25])
        .expect("f32 into fp32");
    kernel.eval().expect("eval");
    assert_eq!(
        kernel.output_f32(0).expect("read"),
        vec![2.0, 4.0, 6.0, 8.5]
    );
    let err = kernel
        .write_input_f16(0, &[f16::ONE; 4])
        .expect_err("f16 into fp32");
    assert!(
        matches!(
            err,
            Error::DType {
                slot: Slot::Input,
                dtype: "fp32",
                ..
            }
        ),
        "{err:?}"
    );
    let err = kernel
        .read_output_f16(0, &mut [f16::ZERO; 4])
        .expect_err("f16 from fp32");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn eval_inside_realtime_mode() {
    let mut kernel = dyn_kernel();
    kernel.write_input_f32(0, &vec![1.0; K * M]).expect("x");
    kernel.write_weight_f32(0, &diagonal(N, K, 1.0)).expect("w");
    {
        let guard = RealtimeGuard::new();
        assert!(guard.status().active);
        kernel.eval().expect("eval in real-time mode");
    }
    assert_eq!(sum(&kernel.output_f32(0).expect("read")), (N * M) as f32);
}

#[test]
fn kernels_move_between_threads() {
    let mut kernel = dyn_kernel();
    kernel.write_input_f32(0, &vec![2.0; K * M]).expect("x");
    kernel.write_weight_f32(0, &diagonal(N, K, 1.0)).expect("w");
    let kernel = std::thread::spawn(move || {
        kernel.eval().expect("eval on another thread");
        kernel
    })
    .join()
    .expect("thread");
    assert_eq!(
        sum(&kernel.output_f32(0).expect("read")),
        2.0 * (N * M) as f32
    );
}

#[test]
fn weight_paths_escaping_the_model_root_are_refused() {
    let dir = temp_dir("escape");
    std::fs::create_dir_all(&dir).expect("dir");
    let mil = samples::conv1x1_blob(2, 2, 2).replace(
        "@model_path/weights/weight.bin",
        "@model_path/../secret.bin",
    );
    let err = Kernel::compile(&mil, &ModelDir::new(&dir), &no_cache()).expect_err("escape");
    assert!(
        err.diagnostics().iter().any(|d| d.code.as_str() == "E155"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn region_writes_touch_only_their_block() {
    let kernel = dyn_kernel();
    let desc = kernel.desc(Slot::Input, 0).expect("input 0").clone();
    let width = *desc.ty.shape.last().expect("a shaped input");
    let rows = desc.ty.numel() / width;
    assert!(rows >= 4 && width >= 8, "{:?}", desc.ty.shape);
    let background: Vec<f32> = (0..rows * width).map(|i| (i % 17) as f32).collect();
    kernel.write_input_f32(0, &background).expect("full write");
    let (row0, col0, n, cols) = (1, 3, rows - 2, 5);
    let block: Vec<f32> = (0..n * cols).map(|i| -0.5 * i as f32).collect();
    kernel
        .write_input_region_f32(0, (row0, col0), cols, &block)
        .expect("region write");
    let mut bytes = vec![0u8; desc.byte_len];
    kernel
        .read_bytes(Slot::Input, 0, &mut bytes)
        .expect("read back");
    let got: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    for r in 0..rows {
        for c in 0..width {
            let inside = (row0..row0 + n).contains(&r) && (col0..col0 + cols).contains(&c);
            let want = if inside {
                block[(r - row0) * cols + c - col0]
            } else {
                background[r * width + c]
            };
            assert_eq!(got[r * width + c], want, "row {r} column {c}");
        }
    }
    for (at, cols, len) in [
        ((0, width - 1), 2, 2),
        ((0, 0), 2, 3),
        ((rows, 0), 1, 1),
        ((0, usize::MAX), 2, 2),
        ((0, 0), 0, 1),
    ] {
        let err = kernel
            .write_input_region_f32(0, at, cols, &vec![0.0; len])
            .expect_err("out of range");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    assert!(kernel.write_input_region_f32(7, (0, 0), 1, &[]).is_err());
}
