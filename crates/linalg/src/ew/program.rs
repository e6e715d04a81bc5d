//! Register programs over contiguous runs: the vector kernel behind the engine's fused
//! elementwise steps. A program is a list of [`Instr`]s over up to [`MAX_REGS`] vector
//! registers; registers `0..inputs.len()` hold the inputs, register `inputs.len() + k` the
//! result of instruction `k`, and the last instruction's register is stored to the output.
//! Every input is read once and the output written once per vector of `LANES` elements.
//!
//! Arithmetic is one f32 operation per element (as [`super::stream::binary`]); an instruction
//! flagged [`Instr::round_f16`] rounds its result to f16 (nearest-even) and back, exactly as
//! storing and reloading an f16 tensor would; [`Op::Lookup`] maps an f16-exact register
//! through a 65 536-entry table (the engine's per-op results for every f16 input). [`Op::Exp`],
//! [`Op::Sigmoid`] and [`Op::Silu`] use the vector `exp` of `simd` (below 2 f32 ulps; results
//! below 2⁻¹²⁶ flush to 0, inputs above 88.37 saturate near 2.4e38, NaN gives an unspecified
//! value).
#![allow(
    unsafe_code,
    reason = "raw-pointer vector loads and stores behind the safe entry point"
)]

use half::f16;

use super::simd::{MAX_LANES, Simd, Storage, exp, load_partial, sigmoid, store_partial};
use crate::cpu::Isa;

/// Registers of a program (inputs and results).
pub const MAX_REGS: usize = 16;

/// Vectors each instruction processes before the next one.
const CHUNK: usize = 8;

/// What an instruction computes (operands are register indices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// The same value in every lane.
    Splat(f32),
    /// A copy of a register (with [`Instr::round_f16`]: an f32 → f16 cast).
    Copy(u8),
    /// `a + b`.
    Add(u8, u8),
    /// `a - b`.
    Sub(u8, u8),
    /// `a · b`.
    Mul(u8, u8),
    /// `a / b`.
    Div(u8, u8),
    /// `eˣ`.
    Exp(u8),
    /// `1 / (1 + e⁻ˣ)`.
    Sigmoid(u8),
    /// `x / (1 + e⁻ˣ)`.
    Silu(u8),
    /// `table[bits(f16(x))]` for a register holding f16 values.
    Lookup(&'static [f16; 1 << 16], u8),
}

/// One instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Instr {
    /// The computation.
    pub op: Op,
    /// Whether the result is rounded to f16 (and widened back).
    pub round_f16: bool,
}

/// A program input: a run as long as the output, or one value for every element.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// f16 elements.
    F16(&'a [f16]),
    /// f32 elements.
    F32(&'a [f32]),
    /// The same value everywhere.
    Splat(f32),
}

#[derive(Clone, Copy)]
enum RawInput {
    F16(*const f16),
    F32(*const f32),
    Splat(f32),
}

/// Runs `program` over every element of `out`.
///
/// Panics if the program is empty or malformed (more than [`MAX_REGS`] registers, an operand
/// naming a later register), an input run differs in length from `out`, or the host lacks
/// `isa`.
pub fn run<T: Storage>(isa: Isa, program: &[Instr], inputs: &[Input<'_>], out: &mut [T]) {
    super::check_isa("program", isa);
    let n_inputs = inputs.len();
    assert!(
        !program.is_empty() && n_inputs + program.len() <= MAX_REGS,
        "program: {} inputs and {} instructions",
        n_inputs,
        program.len()
    );
    for (k, instr) in program.iter().enumerate() {
        let defined = n_inputs + k;
        let ok = match instr.op {
            Op::Splat(_) => true,
            Op::Copy(x) | Op::Exp(x) | Op::Sigmoid(x) | Op::Silu(x) | Op::Lookup(_, x) => {
                usize::from(x) < defined
            }
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                usize::from(a) < defined && usize::from(b) < defined
            }
        };
        assert!(ok, "program: instruction {k} reads a later register");
    }
    let len = out.len();
    let mut raw = [RawInput::Splat(0.0); MAX_REGS];
    for (slot, input) in raw.iter_mut().zip(inputs) {
        *slot = match *input {
            Input::F16(values) => {
                super::check_len("program", "input", values.len(), len);
                RawInput::F16(values.as_ptr())
            }
            Input::F32(values) => {
                super::check_len("program", "input", values.len(), len);
                RawInput::F32(values.as_ptr())
            }
            Input::Splat(value) => RawInput::Splat(value),
        };
    }
    let out = out.as_mut_ptr();
    // SAFETY: `out` holds `len` elements, every run input was checked to hold `len`, every
    // operand names an earlier register (checked above); the tier was checked.
    unsafe {
        // The register file is sized to the program (a zeroed 16-register file per call costs
        // as much as a short row's arithmetic).
        let regs = n_inputs + program.len();
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if regs <= 6 => avx2::run::<T, 6>(program, &raw[..n_inputs], out, len),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::run::<T, MAX_REGS>(program, &raw[..n_inputs], out, len),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx if regs <= 6 => {
                avx512::run::<T, 6>(program, &raw[..n_inputs], out, len)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => {
                avx512::run::<T, MAX_REGS>(program, &raw[..n_inputs], out, len)
            }
            _ => generic::run::<T, MAX_REGS>(program, &raw[..n_inputs], out, len),
        }
    }
}

/// Loads `count` (≤ LANES) elements of input `input` at element `at`.
///
/// # Safety
/// A run input has `at + count` readable elements; the host supports `S`'s tier.
#[inline(always)]
unsafe fn load_input<S: Simd>(input: RawInput, at: usize, count: usize) -> S::V {
    // SAFETY: per the caller; partial loads read exactly `count` elements.
    unsafe {
        match input {
            RawInput::Splat(value) => S::splat(value),
            RawInput::F16(ptr) if count == S::LANES => S::load_f16(ptr.add(at)),
            RawInput::F32(ptr) if count == S::LANES => S::load_f32(ptr.add(at)),
            RawInput::F16(ptr) => load_partial::<S, f16>(ptr.add(at), count, 0.0),
            RawInput::F32(ptr) => load_partial::<S, f32>(ptr.add(at), count, 0.0),
        }
    }
}

/// The program body for one tier.
///
/// # Safety
/// `out` holds `len` writable elements, each run input `len` readable ones; every operand
/// names an earlier register and `inputs.len() + program.len() ≤ N`; the host supports
/// `S`'s tier.
#[inline(always)]
unsafe fn run_body<S: Simd, T: Storage, const N: usize>(
    program: &[Instr],
    inputs: &[RawInput],
    out: *mut T,
    len: usize,
) {
    let n_inputs = inputs.len();
    let last = n_inputs + program.len() - 1;
    // SAFETY: (whole body) register arithmetic of the caller's tier; loads and stores cover
    // elements `at..at + count` with `at + count ≤ len`; register indices are in range.
    unsafe {
        // Each instruction runs over CHUNK vectors before the next, so the dispatch per
        // instruction is amortised over CHUNK · LANES elements.
        let mut regs = [[S::splat(0.0); CHUNK]; N];
        let mut bits = [f16::ZERO; MAX_LANES];
        let mut at = 0;
        while at < len {
            let span = (len - at).min(CHUNK * S::LANES);
            let n_vec = span.div_ceil(S::LANES);
            let count = |v: usize| (span - v * S::LANES).min(S::LANES);
            for (reg, &input) in regs.iter_mut().zip(inputs) {
                for (v, lane) in reg.iter_mut().enumerate().take(n_vec) {
                    *lane = load_input::<S>(input, at + v * S::LANES, count(v));
                }
            }
            for (k, instr) in program.iter().enumerate() {
                let (before, rest) = regs.split_at_mut(n_inputs + k);
                let dst = &mut rest[0][..n_vec];
                let r = |i: u8, v: usize| before[usize::from(i)][v];
                match instr.op {
                    Op::Splat(value) => dst.fill(S::splat(value)),
                    Op::Copy(x) => dst.copy_from_slice(&before[usize::from(x)][..n_vec]),
                    Op::Add(a, b) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = S::add(r(a, v), r(b, v));
                        }
                    }
                    Op::Sub(a, b) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = S::sub(r(a, v), r(b, v));
                        }
                    }
                    Op::Mul(a, b) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = S::mul(r(a, v), r(b, v));
                        }
                    }
                    Op::Div(a, b) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = S::div(r(a, v), r(b, v));
                        }
                    }
                    Op::Exp(x) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = exp::<S>(r(x, v));
                        }
                    }
                    Op::Sigmoid(x) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = sigmoid::<S>(r(x, v));
                        }
                    }
                    Op::Silu(x) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            *out = S::mul(r(x, v), sigmoid::<S>(r(x, v)));
                        }
                    }
                    Op::Lookup(table, x) => {
                        for (v, out) in dst.iter_mut().enumerate() {
                            S::store_f16(bits.as_mut_ptr(), r(x, v));
                            for value in &mut bits[..S::LANES] {
                                *value = table[usize::from(value.to_bits())];
                            }
                            *out = S::load_f16(bits.as_ptr());
                        }
                    }
                }
                if instr.round_f16 {
                    for out in dst.iter_mut() {
                        S::store_f16(bits.as_mut_ptr(), *out);
                        *out = S::load_f16(bits.as_ptr());
                    }
                }
            }
            for (v, &value) in regs[last].iter().enumerate().take(n_vec) {
                let (ptr, count) = (out.add(at + v * S::LANES), count(v));
                if count == S::LANES {
                    T::store::<S>(ptr, value);
                } else {
                    store_partial::<S, T>(ptr, count, value);
                }
            }
            at += span;
        }
    }
}

/// Stamps `#[target_feature]` wrappers of the body for one tier.
macro_rules! stamp_program_tiers {
    ($( $module:ident: $simd:ty, [$($attr:meta),*]; )*) => {$(
        mod $module {
            use super::*;

            /// # Safety
            /// As for the body; the host supports this tier.
            $(#[$attr])*
            pub(super) unsafe fn run<T: Storage, const N: usize>(program: &[Instr], inputs: &[RawInput], out: *mut T, len: usize) {
                // SAFETY: forwarded; compiled for the tier.
                unsafe { super::run_body::<$simd, T, N>(program, inputs, out, len) }
            }
        }
    )*};
}

stamp_program_tiers! {
    generic: super::super::simd::Portable, [inline(never)];
}

#[cfg(target_arch = "x86_64")]
stamp_program_tiers! {
    avx2: super::super::x86::Avx2, [target_feature(enable = "avx2,fma,f16c")];
    avx512: super::super::x86::Avx512, [target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;

    fn instr(op: Op, round_f16: bool) -> Instr {
        Instr { op, round_f16 }
    }

    #[test]
    fn programs_match_scalar_evaluation_on_every_tier() {
        // y = f16(f16(a · 0.375) + b) / c, then exp in f32, over lengths around the lane counts.
        let program = [
            instr(Op::Splat(0.375), false),
            instr(Op::Mul(0, 3), true),
            instr(Op::Add(4, 1), true),
            instr(Op::Div(5, 2), false),
            instr(Op::Copy(6), true),
        ];
        for len in [1, 7, 8, 9, 15, 16, 17, 33, 100, 129, 300, 1025] {
            let a: Vec<f16> = (0..len)
                .map(|i| f16::from_f32(i as f32 * 0.37 - 5.0))
                .collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32).sin()).collect();
            let expected: Vec<f32> = (0..len)
                .map(|i| {
                    let m = f16::from_f32(a[i].to_f32() * 0.375).to_f32();
                    let s = f16::from_f32(m + b[i]).to_f32();
                    f16::from_f32(s / 1.5).to_f32()
                })
                .collect();
            for isa in Isa::ALL {
                if !cpu::isa_available(isa) {
                    continue;
                }
                let mut out = vec![0f32; len];
                run(
                    isa,
                    &program,
                    &[Input::F16(&a), Input::F32(&b), Input::Splat(1.5)],
                    &mut out,
                );
                assert_eq!(out, expected, "{isa}, len {len}");
                let mut out16 = vec![f16::ZERO; len];
                run(
                    isa,
                    &program[..4],
                    &[Input::F16(&a), Input::F32(&b), Input::Splat(1.5)],
                    &mut out16,
                );
                let want16: Vec<f16> = expected.iter().map(|&v| f16::from_f32(v)).collect();
                assert_eq!(out16, want16, "{isa}, len {len} (f16 output)");
            }
        }
    }

    #[test]
    fn lookup_and_sigmoid() {
        static TABLE: std::sync::OnceLock<Box<[f16; 1 << 16]>> = std::sync::OnceLock::new();
        let table = TABLE.get_or_init(|| {
            let mut table = Box::new([f16::ZERO; 1 << 16]);
            for (bits, entry) in (0..=u16::MAX).zip(table.iter_mut()) {
                *entry = f16::from_f32(-f16::from_bits(bits).to_f32());
            }
            table
        });
        let x: Vec<f16> = (0..37)
            .map(|i| f16::from_f32(i as f32 * 0.25 - 4.0))
            .collect();
        for isa in Isa::ALL {
            if !cpu::isa_available(isa) {
                continue;
            }
            let mut out = vec![0f32; x.len()];
            run(
                isa,
                &[instr(Op::Lookup(table, 0), false)],
                &[Input::F16(&x)],
                &mut out,
            );
            let want: Vec<f32> = x.iter().map(|v| -v.to_f32()).collect();
            assert_eq!(out, want, "{isa}");
            run(
                isa,
                &[instr(Op::Silu(0), false)],
                &[Input::F16(&x)],
                &mut out,
            );
            for (value, input) in out.iter().zip(&x) {
                let input = f64::from(input.to_f32());
                let exact = input / (1.0 + (-input).exp());
                assert!(
                    (f64::from(*value) - exact).abs() <= 5e-6 * exact.abs().max(1e-30),
                    "{isa}: silu({input}) = {value}, exact {exact}"
                );
            }
        }
    }
}
