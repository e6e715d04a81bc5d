//! Shared test harness: MIL text → parse → verify (with the reference folder) → compile on every
//! tier the host has → eval, compared with the reference interpreter. Tolerances are stated
//! here, once, per dtype.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the harness"
)]

use std::sync::Arc;

use half::f16;
use milbridge_engine::reference::{self, ReferenceFolder};
use milbridge_engine::{CompileOptions, Plan, Precision, compile, compile_portable};
use milbridge_linalg::cpu::{self, Isa};
use milbridge_mil::blob::BlobMode;
use milbridge_mil::facts::{BlobSource, NoBlobs, VerifiedProgram};
use milbridge_mil::ir::{DType, Tensor, TensorType};
use milbridge_mil::verify::{VerifyOptions, verify};

/// xorshift64* — tiny seeded generator for test inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[lo, hi]`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
}

/// Value ranges for random inputs.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    /// Lowest value.
    pub lo: f64,
    /// Highest value.
    pub hi: f64,
}

/// The default range per dtype.
pub fn default_range(dtype: DType) -> Range {
    match dtype {
        DType::Fp16 | DType::Fp32 => Range { lo: -2.0, hi: 2.0 },
        DType::Uint8 | DType::Uint16 => Range { lo: 0.0, hi: 20.0 },
        DType::Bool => Range { lo: 0.0, hi: 1.0 },
        _ => Range {
            lo: -20.0,
            hi: 20.0,
        },
    }
}

/// A random tensor of `ty` in `range`.
pub fn random_tensor(rng: &mut Rng, ty: &TensorType, range: Range) -> Tensor {
    let values: Vec<f64> = (0..ty.numel())
        .map(|_| {
            if ty.dtype.is_float() {
                rng.uniform(range.lo, range.hi)
            } else {
                rng.int(range.lo as i64, range.hi as i64) as f64
            }
        })
        .collect();
    Tensor::from_f64s(ty.clone(), &values).expect("numeric tensor")
}

/// Parses and verifies `text` (reference folder, lenient blobs), panicking with the rendered
/// diagnostics on failure.
pub fn verified(text: &str) -> VerifiedProgram {
    verified_with(text, &NoBlobs)
}

/// [`verified`] with a blob source.
pub fn verified_with(text: &str, blobs: &dyn BlobSource) -> VerifiedProgram {
    let (program, diags) = milbridge_mil::lower::parse(text);
    let errors: Vec<_> = diags
        .iter()
        .filter(|diag| diag.severity == milbridge_mil::diag::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "parse errors:\n{errors:#?}\n{text}");
    let folder = ReferenceFolder;
    let options = VerifyOptions {
        blobs,
        folder: Some(&folder),
        blob_mode: BlobMode::Lenient,
        strict: false,
        ane_lints: false,
    };
    match verify(program, &options) {
        Ok(program) => program,
        Err(diags) => panic!("verification failed:\n{diags:#?}\n{text}"),
    }
}

/// A way to compile: the portable table, or the table of one tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// [`compile_portable`].
    Portable,
    /// [`compile`] with this tier.
    Isa(Isa),
}

/// Every tier this host can run (portable first); logs the ones skipped.
pub fn tiers() -> Vec<Tier> {
    let mut tiers = vec![Tier::Portable];
    for isa in Isa::ALL {
        if cpu::isa_available(isa) {
            tiers.push(Tier::Isa(isa));
        } else {
            eprintln!("skipped tier {isa}: not available on this host");
        }
    }
    tiers
}

/// Compiles `program` for `tier` with `threads` threads.
pub fn compile_tier(program: &VerifiedProgram, tier: Tier, threads: usize) -> Plan {
    let result = match tier {
        Tier::Portable => compile_portable(
            program,
            &CompileOptions {
                threads,
                ..CompileOptions::default()
            },
        ),
        Tier::Isa(isa) => compile(
            program,
            &CompileOptions {
                isa,
                threads,
                precision: Precision::Exact,
                function: None,
            },
        ),
    };
    result.unwrap_or_else(|error| panic!("compile failed on {tier:?}: {error}"))
}

/// Runs `plan` on `inputs`, returning the outputs as tensors.
pub fn run_plan(plan: &Plan, inputs: &[Tensor]) -> Vec<Tensor> {
    try_run_plan(plan, inputs).unwrap_or_else(|error| panic!("eval failed: {error}"))
}

/// Runs `plan`, returning the engine error if any.
pub fn try_run_plan(
    plan: &Plan,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, milbridge_engine::Error> {
    // Copy inputs into 64-byte aligned buffers, as shared surfaces would be.
    let aligned: Vec<Vec<u64>> = inputs
        .iter()
        .map(|tensor| {
            let bytes = tensor.bytes().expect("numeric input");
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
            words
        })
        .collect();
    let input_slices: Vec<&[u8]> = aligned
        .iter()
        .zip(inputs)
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
    plan.eval(&mut ws, &input_slices, &mut out_slices)?;
    Ok(out_words
        .iter()
        .zip(plan.outputs())
        .map(|(words, io)| {
            Tensor::from_bytes(
                io.ty.clone(),
                bytemuck::cast_slice::<u64, u8>(words)[..io.byte_len].to_vec(),
            )
            .unwrap()
        })
        .collect())
}

/// Runs the reference on the entry function.
pub fn run_reference(program: &VerifiedProgram, inputs: &[Tensor]) -> Vec<Tensor> {
    let func = program.program().entry().expect("a function");
    reference::eval(program, func, inputs)
        .unwrap_or_else(|error| panic!("reference failed: {error}"))
}

/// Tolerances: floats get `ulps` ulps of fp16 (relative to the element) or `rel` of fp32,
/// each plus `atol_scale` times the tensor's largest |expected| (for accumulated sums).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Allowed fp16 ulps at the element's magnitude.
    pub f16_ulps: f64,
    /// Allowed fp32 relative error.
    pub f32_rel: f64,
    /// Extra absolute tolerance as a fraction of max |expected| (0 for single-rounding ops).
    pub atol_scale: f64,
}

/// Single-rounding ops: 1 ulp of fp16 (f32 vs f64 evaluation can flip one rounding), 2e-7
/// relative for fp32 (≤ 1 ulp plus transcendental slack).
pub const TOL_ELEMENTWISE: Tol = Tol {
    f16_ulps: 1.0,
    f32_rel: 4e-7,
    atol_scale: 0.0,
};
/// Accumulating ops (reductions, matmul, conv, softmax, norms, attention): the f32 sum of up to
/// a few thousand terms, k·2⁻²⁴·Σ|x|, stays below 2e-5 of the largest output here.
pub const TOL_ACCUMULATE: Tol = Tol {
    f16_ulps: 1.0,
    f32_rel: 2e-6,
    atol_scale: 2e-5,
};

/// Magnitude of one fp16 ulp at `value`.
pub fn f16_ulp(value: f64) -> f64 {
    let magnitude = value.abs().max(6.103515625e-5);
    2f64.powi(magnitude.log2().floor() as i32 - 10)
}

/// Asserts `got` matches `expected` within `tol`; `what` names the case.
pub fn assert_close(what: &str, expected: &Tensor, got: &Tensor, tol: Tol) {
    assert_eq!(expected.ty, got.ty, "{what}: type");
    let e = expected.to_f64_vec().unwrap();
    let g = got.to_f64_vec().unwrap();
    let max_abs = e
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |acc, v| acc.max(v.abs()));
    let mut worst = (0f64, 0usize);
    for (idx, (&ev, &gv)) in e.iter().zip(&g).enumerate() {
        if ev.is_nan() || gv.is_nan() {
            assert!(
                ev.is_nan() && gv.is_nan(),
                "{what}: element {idx}: expected {ev}, got {gv}"
            );
            continue;
        }
        if ev.is_infinite() || gv.is_infinite() {
            assert_eq!(ev, gv, "{what}: element {idx}");
            continue;
        }
        let allowed = match expected.ty.dtype {
            DType::Fp16 => tol.f16_ulps * f16_ulp(ev) + tol.atol_scale * max_abs,
            DType::Fp32 => tol.f32_rel * ev.abs() + tol.atol_scale * max_abs + 1e-30,
            _ => 0.0,
        };
        let diff = (ev - gv).abs();
        if diff > allowed {
            panic!(
                "{what}: element {idx} of {:?}: expected {ev}, got {gv} (diff {diff:e}, allowed {allowed:e})",
                expected.ty
            );
        }
        if diff > worst.0 {
            worst = (diff, idx);
        }
    }
}

/// Compares every tier (and 1 and 2 threads) against the reference on seeded random inputs.
pub fn check_against_reference(
    what: &str,
    text: &str,
    seed: u64,
    ranges: &[Option<Range>],
    tol: Tol,
) {
    let program = verified(text);
    let func = program.program().entry().unwrap();
    let func_ir = &program.program().functions[func];
    let facts = program.facts(func);
    let mut rng = Rng::new(seed);
    let inputs: Vec<Tensor> = func_ir
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
        .collect();
    let expected = run_reference(&program, &inputs);
    for tier in tiers() {
        for threads in [1, 2] {
            let plan = compile_tier(&program, tier, threads);
            let got = run_plan(&plan, &inputs);
            assert_eq!(got.len(), expected.len());
            for (k, (e, g)) in expected.iter().zip(&got).enumerate() {
                assert_close(
                    &format!("{what} [{tier:?}, {threads} threads, output {k}]"),
                    e,
                    g,
                    tol,
                );
            }
        }
    }
}

/// The raw f16 bits of a tensor (for bit-exact checks).
pub fn f16_bits(tensor: &Tensor) -> Vec<u16> {
    bytemuck::cast_slice::<u8, f16>(tensor.bytes().unwrap())
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A `BlobSource` over an in-memory map.
pub fn blob_map(entries: &[(&str, Vec<u8>)]) -> milbridge_mil::facts::BlobMap {
    let mut map = milbridge_mil::facts::BlobMap::new();
    for (path, bytes) in entries {
        map.insert(*path, Arc::<[u8]>::from(bytes.clone()));
    }
    map
}

/// Wraps a function body into a `program(1.3)` with one `main<opset>` function.
pub fn program(opset: &str, params: &str, body: &str, outputs: &str) -> String {
    format!(
        "program(1.3)\n{{\n    func main<{opset}>({params}) {{\n{body}\n    }} -> ({outputs});\n}}\n"
    )
}
