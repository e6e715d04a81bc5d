//! The reference interpreter: a slow, obviously-correct evaluator of every op of mil-spec
//! section 6 over a [`VerifiedProgram`]. It is the oracle the kernels, the plan and the fuzzers
//! are judged against, and the [`ConstFolder`] the verifier uses for constness rule 4.
//!
//! # Design
//!
//! Every tensor is held as a [`RefTensor`]: its type and its elements as `f64` (exact for every
//! fp16/fp32/bf16 value and every integer of up to 32 bits; bool is 0 or 1). Each op is a plain
//! function over `&[f64]` plus shapes and explicit parameters, written as nested loops over
//! multi-indices (modules [`elementwise`], [`reduce`], [`linalg`], [`layout`], [`quant`]); those
//! functions are public so tests can call them directly. Op parameters come normalised from
//! [`milbridge_mil::ops::attrs`] (defaults applied, axes non-negative), except `slice_by_index`,
//! whose raw `begin`/`end`/`stride`/masks are re-read and put through this module's own Python
//! slice semantics, so the oracle does not share that normalisation with the code it judges.
//! Every result's shape and dtype are checked against the verified types.
//!
//! # Numeric policy
//!
//! The `f64-reference` mode of mil-spec 5.2: **each op is computed in `f64` from the exact input
//! values and rounded once, when the op finishes, to its declared dtype** (fp16 and bf16 by an
//! exact round-to-nearest-even of the `f64` value with overflow to ±inf and subnormals kept,
//! [`numeric::round_f16`]; fp32 by Rust's `as f32`, also round-to-nearest-even). Integer results
//! are computed exactly in `i128` and wrapped to the dtype's width (mil-spec 5.2 item 7). Per op:
//!
//! | op | policy |
//! |---|---|
//! | `const`, `constexpr_affine_dequantize`, folded consts | the value in `facts.consts` (materialised at compile time) |
//! | `add` `sub` `mul` `real_div` | f64, one rounding; fp16/fp32 results equal IEEE arithmetic in that format (53 ≥ 2p+2 bits). Integers: exact then wrapped; int `real_div` truncates toward zero, division by zero is R004 |
//! | `pow` | C `pow` in f64 (`pow(x, 0) = 1` even for NaN, `pow(0, -y) = +inf`, negative base with a non-integer exponent is NaN). Integers: exact power wrapped; negative exponent is R004 |
//! | `maximum` `minimum` | NaN-propagating, `-0 < +0` (IEEE 754-2019 maximum/minimum); exact |
//! | comparisons | IEEE on the exact values (NaN compares false except `not_equal`) |
//! | `abs` `square` | exact then rounded (square may overflow fp16 to inf); integers wrap (`abs(i32::MIN) = i32::MIN`) |
//! | `sqrt` `exp` `tanh` `log` `rsqrt` `inverse` | f64 std functions of `x` (`x + eps` for the epsilon ops, eps already in its own dtype), one rounding |
//! | `erf` | [`numeric::erf`]: positive series below 2, continued fraction above (a few f64 ulps) |
//! | `sigmoid` `silu` | `1/(1+e^-x)` (`e^x/(1+e^x)` for negative x, no overflow); silu = `x * sigmoid(x)` in f64 |
//! | `relu` | `max(x, 0)`; `relu(-0) = +0`, NaN stays NaN |
//! | `gelu` | EXACT `0.5 x erfc(-x/√2)`, TANH `x sigmoid(2u)` (= `0.5 x (1 + tanh u)`), SIGMOID `x sigmoid(1.702 x)`, all in f64 without cancellation, one rounding |
//! | `clip` | `min(max(x, alpha), beta)` with the NaN-propagating max/min; exact |
//! | `cast` | float→float RNE (overflow to inf); float→int truncate toward zero, saturate, NaN→0; int→float nearest; int→int wrap; →bool `x != 0` (NaN true); bool→numeric 0/1 |
//! | `softmax` | max-subtracted `exp` and sum in f64, one division, one rounding; all `-inf`, `+inf` or NaN in a slice gives NaN |
//! | `reduce_sum` `reduce_mean` | sequential f64 sum (mean: divided by the count), one rounding; integers: exact sum wrapped, mean truncates toward zero |
//! | `reduce_max` | NaN-propagating maximum, exact |
//! | `matmul` `linear` `conv` | f64 dot products in increasing index order, bias added in f64, one rounding per output; integers exact then wrapped |
//! | `layer_norm` | f64 mean and population variance, `(x-mean)/sqrt(var+eps)*gamma+beta`, one rounding |
//! | `scaled_dot_product_attention` | f64 scores scaled by `1/sqrt(E)`, bool mask → `-inf` where false or float mask added, f64 softmax and second product, one rounding; [`RefOptions::ignore_sdpa_mask`] drops the mask (ANE fidelity) |
//! | `quantize` | `clamp(round_half_even(x/scale) + zero_point)` with the f64 quotient (exact at every tie); NaN → 0 |
//! | `dequantize` | `(q - zero_point) * scale`, exact in f64, one rounding |
//! | shape ops, slices, `concat` `split` `tile` `gather` `select` `band_part` `fill` | exact copies; slice begin and gather indices are bounds-checked at run time (R003, R002) |

pub mod elementwise;
pub mod index;
pub mod layout;
pub mod linalg;
pub mod numeric;
pub mod quant;
pub mod reduce;

mod dispatch;

use mil::diag::DiagCode;
use mil::facts::{ConstFolder, FunctionFacts, VerifiedProgram};
use mil::ir::{DType, Function, Handle, HandleVec, Op, OpKind, Tensor, TensorType, Value};
use milbridge_mil as mil;
use std::sync::Arc;

/// A computed result before it is typed: row-major elements and the shape.
pub type Shaped = (Vec<f64>, Vec<usize>);

/// A tensor as the reference computes on it: its type and its elements as `f64`, row-major.
/// Every element is a value of the dtype (already rounded or wrapped); bool is 0 or 1.
#[derive(Clone, Debug, PartialEq)]
pub struct RefTensor {
    /// Dtype and shape.
    pub ty: TensorType,
    /// Elements, `ty.numel()` of them.
    pub data: Vec<f64>,
}

impl RefTensor {
    /// A tensor of `ty` with `data` (whose length must be `ty.numel()`).
    pub fn new(ty: TensorType, data: Vec<f64>) -> RefTensor {
        debug_assert_eq!(data.len(), ty.numel(), "RefTensor data length equals numel");
        RefTensor { ty, data }
    }

    /// Reads a numeric or bool [`Tensor`]; `None` for strings, sub-byte dtypes or a byte count
    /// that does not match the type.
    pub fn from_tensor(tensor: &Tensor) -> Option<RefTensor> {
        let data = tensor.to_f64_vec()?;
        (tensor.bytes()?.len() == tensor.ty.byte_len()?).then(|| RefTensor {
            ty: tensor.ty.clone(),
            data,
        })
    }

    /// Encodes as a [`Tensor`] of `ty` (exact: the elements are already values of the dtype).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_f64s(self.ty.clone(), &self.data)
            .expect("invariant: a RefTensor has numel elements of a byte-addressable dtype")
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.ty.shape
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
}

/// Why the reference could not evaluate a program or an op.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RefError {
    /// The number of inputs differs from the function's parameter count (R001).
    #[error("expected {expected} inputs, got {got}")]
    InputCount {
        /// Parameters of the function.
        expected: usize,
        /// Inputs given.
        got: usize,
    },
    /// An input's dtype or shape differs from its parameter's type (R001).
    #[error("input {index} has type {got}, expected {expected}")]
    InputType {
        /// Parameter position.
        index: usize,
        /// The parameter's type.
        expected: TensorType,
        /// The input's type.
        got: TensorType,
    },
    /// An input's payload is not `numel` elements of its dtype (R001).
    #[error("input {index} does not hold {expected} bytes of {ty}")]
    InputData {
        /// Parameter position.
        index: usize,
        /// The input's type.
        ty: TensorType,
        /// Bytes the type needs.
        expected: usize,
    },
    /// A run-time error of mil-spec 9.8: R002 gather index, R003 dynamic slice bounds, R004
    /// invalid integer arithmetic.
    #[error("{message}")]
    Runtime {
        /// R002, R003 or R004.
        code: DiagCode,
        /// Lowercase, with the offending values.
        message: String,
    },
    /// The function handle does not belong to the program.
    #[error("function #{index} does not exist")]
    UnknownFunction {
        /// The handle's index.
        index: usize,
    },
    /// The op's operands do not satisfy its verified contract (a missing or mistyped operand, a
    /// shape that disagrees with the inferred type). Only reachable with facts that do not
    /// describe the function, or through a bug; reported rather than panicking because the
    /// folder runs on programs that are still being verified.
    #[error("'{op}': {message}")]
    Malformed {
        /// The op.
        op: OpKind,
        /// What was wrong.
        message: String,
    },
}

impl RefError {
    /// A run-time error with `code`.
    pub fn runtime(code: DiagCode, message: impl Into<String>) -> RefError {
        RefError::Runtime {
            code,
            message: message.into(),
        }
    }

    /// A broken-contract error for `op`.
    pub fn malformed(op: OpKind, message: impl Into<String>) -> RefError {
        RefError::Malformed {
            op,
            message: message.into(),
        }
    }

    /// The diagnostic code: R001 for input problems, the run-time code, or E199 for a malformed
    /// op or unknown function (not a user-facing condition).
    pub fn code(&self) -> DiagCode {
        match self {
            RefError::InputCount { .. }
            | RefError::InputType { .. }
            | RefError::InputData { .. } => DiagCode::R001,
            RefError::Runtime { code, .. } => *code,
            RefError::UnknownFunction { .. } | RefError::Malformed { .. } => DiagCode::E199,
        }
    }
}

/// Switches of the reference (mil-spec 8.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefOptions {
    /// `ane_ignore_sdpa_mask`: `scaled_dot_product_attention` ignores `attn_mask`, as the ANE
    /// hardware does (mil-spec 6.11).
    pub ignore_sdpa_mask: bool,
}

/// Evaluates function `func` of `program` on `inputs` (by parameter position); returns the
/// outputs in `-> (...)` order.
pub fn eval(
    program: &VerifiedProgram,
    func: Handle<Function>,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, RefError> {
    eval_with(program, func, inputs, &RefOptions::default())
}

/// [`eval`] with explicit [`RefOptions`].
pub fn eval_with(
    program: &VerifiedProgram,
    func: Handle<Function>,
    inputs: &[Tensor],
    options: &RefOptions,
) -> Result<Vec<Tensor>, RefError> {
    let function = program
        .program()
        .functions
        .try_get(func)
        .ok_or(RefError::UnknownFunction {
            index: func.index(),
        })?;
    let facts = program.facts(func);
    if inputs.len() != function.params.len() {
        return Err(RefError::InputCount {
            expected: function.params.len(),
            got: inputs.len(),
        });
    }
    let mut env: HandleVec<Value, Option<Arc<Tensor>>> =
        HandleVec::from_fn(function.values.len(), |value| {
            facts.consts.get(value).cloned().flatten()
        });
    for (index, (&param, input)) in function.params.iter().zip(inputs).enumerate() {
        let expected = &facts.types[param];
        if &input.ty != expected {
            return Err(RefError::InputType {
                index,
                expected: expected.clone(),
                got: input.ty.clone(),
            });
        }
        if RefTensor::from_tensor(input).is_none() {
            let expected = expected.byte_len().unwrap_or(0);
            return Err(RefError::InputData {
                index,
                ty: input.ty.clone(),
                expected,
            });
        }
        env[param] = Some(Arc::new(input.clone()));
    }
    for (handle, op) in function.ops.iter() {
        if op.results.iter().all(|&result| env[result].is_some()) {
            continue; // const, constexpr or folded at compile time
        }
        let attrs = mil::ops::attrs(function, facts, handle);
        let result_types: Vec<TensorType> = op
            .results
            .iter()
            .map(|&result| facts.types[result].clone())
            .collect();
        let lookup = |value: Handle<Value>| env.get(value).cloned().flatten();
        let outputs = dispatch::run(function, handle, &attrs, &result_types, &lookup, options)?;
        for (&result, output) in op.results.iter().zip(outputs) {
            env[result] = Some(Arc::new(output.to_tensor()));
        }
    }
    function
        .outputs
        .iter()
        .map(|output| {
            env[output.value]
                .as_deref()
                .cloned()
                .ok_or_else(|| RefError::Malformed {
                    op: OpKind::Const,
                    message: format!("output {:?} has no value", output.value),
                })
        })
        .collect()
}

/// Evaluates one op of a verified function given the value of each of its operands (`inputs`
/// returns the tensor of a value, const or not). Results already in `facts.consts` are returned
/// as they are.
pub fn eval_op(
    func: &Function,
    facts: &FunctionFacts,
    op: Handle<Op>,
    inputs: &dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
) -> Result<Vec<Tensor>, RefError> {
    eval_op_with(func, facts, op, inputs, &RefOptions::default())
}

/// [`eval_op`] with explicit [`RefOptions`].
pub fn eval_op_with(
    func: &Function,
    facts: &FunctionFacts,
    op: Handle<Op>,
    inputs: &dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
    options: &RefOptions,
) -> Result<Vec<Tensor>, RefError> {
    let op_ref = func.ops.try_get(op).ok_or_else(|| {
        RefError::malformed(OpKind::Const, format!("op {op:?} is not in the function"))
    })?;
    let consts: Option<Vec<Tensor>> = op_ref
        .results
        .iter()
        .map(|&result| {
            facts
                .consts
                .get(result)
                .cloned()
                .flatten()
                .map(|tensor| (*tensor).clone())
        })
        .collect();
    if let Some(consts) = consts {
        return Ok(consts);
    }
    let result_types: Vec<TensorType> = op_ref
        .results
        .iter()
        .map(|&result| facts.types.get(result).cloned())
        .collect::<Option<_>>()
        .ok_or_else(|| RefError::malformed(op_ref.kind, "a result has no inferred type"))?;
    let attrs = mil::ops::attrs(func, facts, op);
    let outputs = dispatch::run(func, op, &attrs, &result_types, inputs, options)?;
    Ok(outputs.iter().map(RefTensor::to_tensor).collect())
}

/// The reference as the verifier's [`ConstFolder`] (constness rule 4, mil-spec 4.4): evaluates
/// an op whose inputs are all const.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceFolder;

impl ConstFolder for ReferenceFolder {
    fn fold(
        &self,
        func: &Function,
        op: Handle<Op>,
        inputs: &dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
        result_types: &[TensorType],
    ) -> Option<Vec<Tensor>> {
        let op_ref = func.ops.try_get(op)?;
        // The facts the verifier has so far, as far as this op can see them: the type and value
        // of each operand, the inferred type of each result.
        let types = HandleVec::from_fn(func.values.len(), |value| {
            if let Some(position) = op_ref.results.iter().position(|&result| result == value) {
                result_types.get(position).cloned()
            } else {
                inputs(value).map(|tensor| tensor.ty.clone())
            }
            .unwrap_or_else(|| TensorType::scalar(DType::Fp32))
        });
        let consts = HandleVec::from_fn(func.values.len(), |value| {
            if op_ref.results.contains(&value) {
                None
            } else {
                inputs(value)
            }
        });
        let facts = FunctionFacts { types, consts };
        let attrs = mil::ops::attrs(func, &facts, op);
        let outputs = dispatch::run(
            func,
            op,
            &attrs,
            result_types,
            inputs,
            &RefOptions::default(),
        )
        .ok()?;
        Some(outputs.iter().map(RefTensor::to_tensor).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::numeric::round_f16;
    use super::*;
    use mil::facts::BlobMap;
    use mil::verify::VerifyOptions;

    fn verified_with(text: &str, blobs: &BlobMap) -> VerifiedProgram {
        let (program, diags) = mil::lower::parse(text);
        assert!(!mil::diag::has_errors(&diags), "{diags:?}");
        let options = VerifyOptions {
            blobs,
            folder: Some(&ReferenceFolder),
            ..VerifyOptions::default()
        };
        mil::verify::verify(program, &options).unwrap_or_else(|diags| panic!("{diags:?}"))
    }

    fn verified(text: &str) -> VerifiedProgram {
        verified_with(text, &BlobMap::new())
    }

    fn fp16(shape: &[usize], values: &[f64]) -> Tensor {
        Tensor::from_f64s(TensorType::new(DType::Fp16, shape.to_vec()), values).unwrap()
    }

    /// Deterministic fp16 values in [-2, 2).
    fn pattern(n: usize, seed: u32) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let mixed = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 20;
                round_f16(f64::from(mixed) / 1024.0 - 2.0)
            })
            .collect()
    }

    /// mil-spec 3.9 example C / 8.5: the dynamic-weight matmul kernel against its closed form.
    const DYNAMIC_MATMUL: &str = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 4, 1, 5]> x) {
        tensor<int32, [4]> b0 = const()[name = string("b0"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [4]> sa = const()[name = string("sa"), val = tensor<int32, [4]>([1, 4, 1, 3])];
        tensor<fp16, [1, 4, 1, 3]> act = slice_by_size(x = x, begin = b0, size = sa)[name = string("act")];
        tensor<int32, [4]> bw = const()[name = string("bw"), val = tensor<int32, [4]>([0, 0, 0, 3])];
        tensor<int32, [4]> sw = const()[name = string("sw"), val = tensor<int32, [4]>([1, 4, 1, 2])];
        tensor<fp16, [1, 4, 1, 2]> wt = slice_by_size(x = x, begin = bw, size = sw)[name = string("wt")];
        tensor<int32, [4]> ra = const()[name = string("ra"), val = tensor<int32, [4]>([1, 1, 4, 3])];
        tensor<fp16, [1, 1, 4, 3]> a2 = reshape(shape = ra, x = act)[name = string("a2")];
        tensor<int32, [4]> pm = const()[name = string("pm"), val = tensor<int32, [4]>([0, 1, 3, 2])];
        tensor<fp16, [1, 1, 3, 4]> a3 = transpose(perm = pm, x = a2)[name = string("a3")];
        tensor<int32, [4]> rw = const()[name = string("rw"), val = tensor<int32, [4]>([1, 1, 4, 2])];
        tensor<fp16, [1, 1, 4, 2]> W = reshape(shape = rw, x = wt)[name = string("W")];
        bool bF = const()[name = string("bF"), val = bool(false)];
        tensor<fp16, [1, 1, 3, 2]> yh = matmul(transpose_x = bF, transpose_y = bF, x = a3, y = W)[name = string("yh")];
        tensor<fp16, [1, 1, 2, 3]> yt = transpose(perm = pm, x = yh)[name = string("yt")];
        tensor<int32, [4]> ro = const()[name = string("ro"), val = tensor<int32, [4]>([1, 2, 1, 3])];
        tensor<fp16, [1, 2, 1, 3]> y = reshape(shape = ro, x = yt)[name = string("y")];
    } -> (y);
}
"#;

    #[test]
    fn dynamic_matmul_kernel_matches_closed_form() {
        let program = verified(DYNAMIC_MATMUL);
        let func = program.program().entry().unwrap();
        let x = pattern(20, 7);
        let outputs = eval(&program, func, &[fp16(&[1, 4, 1, 5], &x)]).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].ty, TensorType::new(DType::Fp16, [1, 2, 1, 3]));
        let got = outputs[0].to_f64_vec().unwrap();
        for o in 0..2 {
            for t in 0..3 {
                // y[0,o,0,t] = sum_i x[0,i,0,t] * x[0,i,0,3+o], one rounding (slices, reshapes and
                // transposes copy exactly).
                let exact: f64 = (0..4).map(|i| x[i * 5 + t] * x[i * 5 + 3 + o]).sum();
                assert_eq!(got[o * 3 + t], round_f16(exact), "o={o} t={t}");
            }
        }
    }

    #[test]
    fn rmsnorm_chain_rounds_after_every_op() {
        // mil-spec 8.3 RMSNorm: every intermediate is stored in fp16.
        let text = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 4, 1, 2]> x) {
        tensor<fp16, [1, 4, 1, 2]> sq = mul(x = x, y = x)[name = string("sq")];
        tensor<int32, [1]> ax = const()[name = string("ax"), val = tensor<int32, [1]>([1])];
        bool kd = const()[name = string("kd"), val = bool(true)];
        tensor<fp16, [1, 1, 1, 2]> ss = reduce_sum(x = sq, axes = ax, keep_dims = kd)[name = string("ss")];
        fp16 inv = const()[name = string("inv"), val = fp16(0.25)];
        tensor<fp16, [1, 1, 1, 2]> ms = mul(x = ss, y = inv)[name = string("ms")];
        fp16 eps = const()[name = string("eps"), val = fp16(0.00001)];
        tensor<fp16, [1, 1, 1, 2]> me = add(x = ms, y = eps)[name = string("me")];
        fp16 nh = const()[name = string("nh"), val = fp16(-0.5)];
        tensor<fp16, [1, 1, 1, 2]> rr = pow(x = me, y = nh)[name = string("rr")];
        tensor<fp16, [1, 4, 1, 2]> y = mul(x = x, y = rr)[name = string("y")];
    } -> (y);
}
"#;
        let program = verified(text);
        let func = program.program().entry().unwrap();
        let x = [1.0, 300.0, -2.0, 100.0, 0.5, 0.0, 3.0, 5.0];
        let got = eval(&program, func, &[fp16(&[1, 4, 1, 2], &x)]).unwrap()[0]
            .to_f64_vec()
            .unwrap();
        let eps = round_f16(1e-5);
        for t in 0..2 {
            let ss = round_f16((0..4).map(|c| round_f16(x[c * 2 + t] * x[c * 2 + t])).sum());
            let rr = round_f16(round_f16(round_f16(ss * 0.25) + eps).powf(-0.5));
            for c in 0..4 {
                assert_eq!(got[c * 2 + t], round_f16(x[c * 2 + t] * rr), "c={c} t={t}");
            }
        }
        // Column 1 squares 300 to 90000: +inf in fp16, so the normalised column is 0.
        assert_eq!(got[1], 0.0);
    }

    #[test]
    fn dialect_1_0_two_outputs_in_order() {
        // mil-spec 3.9 example B.
        let text = r#"program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"coremlc-version", "3505.4.1"}})]
{
    func main<ios16>(tensor<fp16, [1, 8, 1, 16]> x) {
        tensor<int32, [4]> s = const()[name = tensor<string, []>("s"), val = tensor<int32, [4]>([1, 4, 2, 16])];
        tensor<fp16, [1, 4, 2, 16]> r = reshape(shape = s, x = x)[name = tensor<string, []>("r")];
        tensor<int32, []> ax = const()[name = tensor<string, []>("ax"), val = tensor<int32, []>(1)];
        tensor<fp16, [1, 8, 1, 16]> p = softmax(axis = ax, x = x)[name = tensor<string, []>("p")];
    } -> (r, p);
}
"#;
        let program = verified(text);
        let func = program.program().entry().unwrap();
        let x = pattern(128, 3);
        let outputs = eval(&program, func, &[fp16(&[1, 8, 1, 16], &x)]).unwrap();
        assert_eq!(outputs[0].ty.shape, vec![1, 4, 2, 16]);
        assert_eq!(outputs[0].to_f64_vec().unwrap(), x);
        let p = outputs[1].to_f64_vec().unwrap();
        let t = 5;
        let denominator: f64 = (0..8).map(|c| x[c * 16 + t].exp()).sum();
        for c in 0..8 {
            assert_eq!(p[c * 16 + t], round_f16(x[c * 16 + t].exp() / denominator));
        }
    }

    #[test]
    fn conv_with_blob_weight_and_residual() {
        // mil-spec 3.9 example A, cut down to 4 channels.
        let text = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 4, 1, 3]> x) {
        string pt = const()[name = string("pt"), val = string("valid")];
        tensor<int32, [2]> st = const()[name = string("st"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, [4]> pd = const()[name = string("pd"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [2]> dl = const()[name = string("dl"), val = tensor<int32, [2]>([1, 1])];
        int32 gr = const()[name = string("gr"), val = int32(1)];
        tensor<fp16, [4, 4, 1, 1]> w = const()[name = string("w"), val = tensor<fp16, [4, 4, 1, 1]>(BLOBFILE(path = string("@model_path/weights/w.bin"), offset = uint64(64)))];
        tensor<fp16, [1, 4, 1, 3]> h = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = w, x = x)[name = string("h")];
        fp16 a = const()[name = string("a"), val = fp16(0x1p-1)];
        tensor<fp16, [1, 4, 1, 3]> hs = mul(x = h, y = a)[name = string("hs")];
        tensor<fp16, [1, 4, 1, 3]> y = add(x = x, y = hs)[name = string("y")];
    } -> (y);
}
"#;
        let weights = pattern(16, 11);
        let as_f32: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
        let mut blobs = BlobMap::new();
        blobs.insert(
            "@model_path/weights/w.bin",
            mil::blob::single_fp16_blob(&as_f32),
        );
        let program = verified_with(text, &blobs);
        let func = program.program().entry().unwrap();
        let x = pattern(12, 5);
        let got = eval(&program, func, &[fp16(&[1, 4, 1, 3], &x)]).unwrap()[0]
            .to_f64_vec()
            .unwrap();
        for o in 0..4 {
            for s in 0..3 {
                let h = round_f16((0..4).map(|i| weights[o * 4 + i] * x[i * 3 + s]).sum());
                let want = round_f16(x[o * 3 + s] + round_f16(h * 0.5));
                assert_eq!(got[o * 3 + s], want, "o={o} s={s}");
            }
        }
    }

    #[test]
    fn const_subgraphs_are_folded_by_the_reference() {
        let text = r#"program(1.3)
{
    func main<ios18>(tensor<fp32, [2]> x) {
        tensor<fp32, [2]> a = const()[name = string("a"), val = tensor<fp32, [2]>([1.5, -2.0])];
        tensor<fp32, [2]> b = exp(x = a)[name = string("b")];
        tensor<fp32, [2]> c = add(x = b, y = fp32(1.0))[name = string("c")];
        tensor<fp32, [2]> y = mul(x = x, y = c)[name = string("y")];
    } -> (y, c);
}
"#;
        let program = verified(text);
        let func = program.program().entry().unwrap();
        let function = &program.program().functions[func];
        let facts = program.facts(func);
        let c = function.value_by_name("c").unwrap();
        let y = function.value_by_name("y").unwrap();
        let want_c = [
            numeric::round_f32(numeric::round_f32(1.5f64.exp()) + 1.0),
            numeric::round_f32(numeric::round_f32((-2.0f64).exp()) + 1.0),
        ];
        assert_eq!(
            facts.consts[c].as_ref().unwrap().to_f64_vec().unwrap(),
            want_c
        );
        assert!(facts.consts[y].is_none(), "y depends on a parameter");
        let x = Tensor::from_f64s(TensorType::new(DType::Fp32, [2]), &[2.0, 0.5]).unwrap();
        let outputs = eval(&program, func, &[x]).unwrap();
        assert_eq!(
            outputs[0].to_f64_vec().unwrap(),
            vec![
                numeric::round_f32(2.0 * want_c[0]),
                numeric::round_f32(0.5 * want_c[1])
            ]
        );
        assert_eq!(outputs[1].to_f64_vec().unwrap(), want_c);
        // eval_op on the folded op returns the constant; on y it computes.
        let (y_op, _) = function
            .ops
            .iter()
            .find(|(_, op)| op.results == [y])
            .unwrap();
        let lookup = |value: Handle<Value>| {
            if value == function.params[0] {
                Some(Arc::new(
                    Tensor::from_f64s(TensorType::new(DType::Fp32, [2]), &[1.0, 1.0]).unwrap(),
                ))
            } else {
                facts.consts[value].clone()
            }
        };
        let out = eval_op(function, facts, y_op, &lookup).unwrap();
        assert_eq!(out[0].to_f64_vec().unwrap(), want_c);
    }

    #[test]
    fn input_errors_are_r001() {
        let program = verified(DYNAMIC_MATMUL);
        let func = program.program().entry().unwrap();
        let err = eval(&program, func, &[]).unwrap_err();
        assert_eq!(
            err,
            RefError::InputCount {
                expected: 1,
                got: 0
            }
        );
        assert_eq!(err.code(), DiagCode::R001);
        let wrong =
            Tensor::from_f64s(TensorType::new(DType::Fp32, [1, 4, 1, 5]), &[0.0; 20]).unwrap();
        let err = eval(&program, func, &[wrong]).unwrap_err();
        assert!(
            matches!(err, RefError::InputType { index: 0, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "input 0 has type tensor<fp32, [1, 4, 1, 5]>, expected tensor<fp16, [1, 4, 1, 5]>"
        );
        let short = Tensor {
            ty: TensorType::new(DType::Fp16, [1, 4, 1, 5]),
            data: mil::ir::TensorData::Bytes(Arc::from(vec![0u8; 10])),
        };
        let err = eval(&program, func, &[short]).unwrap_err();
        assert!(
            matches!(
                err,
                RefError::InputData {
                    index: 0,
                    expected: 40,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn sdpa_mask_and_ignore_switch() {
        let text = r#"program(1.3)
{
    func main<ios18>(tensor<fp32, [1, 2, 1]> q, tensor<fp32, [1, 2, 1]> k, tensor<fp32, [1, 2, 1]> v, tensor<bool, [2, 2]> m) {
        tensor<fp32, [1, 2, 1]> o = scaled_dot_product_attention(query = q, key = k, value = v, attn_mask = m)[name = string("o")];
    } -> (o);
}
"#;
        let program = verified(text);
        let func = program.program().entry().unwrap();
        let t = |values: &[f64]| {
            Tensor::from_f64s(TensorType::new(DType::Fp32, [1, 2, 1]), values).unwrap()
        };
        let mask =
            Tensor::from_f64s(TensorType::new(DType::Bool, [2, 2]), &[1.0, 0.0, 1.0, 1.0]).unwrap();
        let inputs = [t(&[1.0, 0.0]), t(&[0.0, 0.0]), t(&[2.0, 4.0]), mask];
        let masked = eval(&program, func, &inputs).unwrap();
        assert_eq!(masked[0].to_f64_vec().unwrap(), vec![2.0, 3.0]);
        let options = RefOptions {
            ignore_sdpa_mask: true,
        };
        let ignored = eval_with(&program, func, &inputs, &options).unwrap();
        assert_eq!(ignored[0].to_f64_vec().unwrap(), vec![3.0, 3.0]);
    }

    #[test]
    fn runtime_errors_carry_their_codes() {
        let text = r#"program(1.3)
{
    func main<ios17>(tensor<fp16, [4]> x, tensor<int32, [2]> i, tensor<int32, [1]> b) {
        tensor<fp16, [2]> g = gather(x = x, indices = i)[name = string("g")];
        tensor<fp16, [2]> s = slice_by_size(x = x, begin = b, size = tensor<int32, [1]>([2]))[name = string("s")];
    } -> (g, s);
}
"#;
        let program = verified(text);
        let func = program.program().entry().unwrap();
        let x = fp16(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let ints = |values: &[i64]| {
            Tensor::from_i64s(TensorType::new(DType::Int32, [values.len()]), values).unwrap()
        };
        let ok = eval(&program, func, &[x.clone(), ints(&[3, 0]), ints(&[-2])]).unwrap();
        assert_eq!(ok[0].to_f64_vec().unwrap(), vec![4.0, 1.0]);
        assert_eq!(ok[1].to_f64_vec().unwrap(), vec![3.0, 4.0]);
        // ios17: negative indices are out of range.
        let err = eval(&program, func, &[x.clone(), ints(&[-1, 0]), ints(&[0])]).unwrap_err();
        assert_eq!(err.code(), DiagCode::R002);
        assert_eq!(
            err.to_string(),
            "gather index -1 out of range [0, 4) for axis 0"
        );
        let err = eval(&program, func, &[x, ints(&[0, 0]), ints(&[3])]).unwrap_err();
        assert_eq!(err.code(), DiagCode::R003);
    }

    #[test]
    fn folder_declines_ops_that_fail() {
        // An int32 pow with a negative exponent cannot be folded: the value stays non-const and
        // the error surfaces at run time.
        let text = r#"program(1.3)
{
    func main<ios18>() {
        tensor<int32, [1]> p = pow(x = tensor<int32, [1]>([2]), y = tensor<int32, [1]>([-1]))[name = string("p")];
    } -> (p);
}
"#;
        let program = verified(text);
        let func = program.program().entry().unwrap();
        let p = program.program().functions[func]
            .value_by_name("p")
            .unwrap();
        assert!(program.facts(func).consts[p].is_none());
        assert_eq!(
            eval(&program, func, &[]).unwrap_err().code(),
            DiagCode::R004
        );
    }

    #[test]
    fn ref_tensor_round_trip() {
        let tensor =
            Tensor::from_f64s(TensorType::new(DType::Int8, [3]), &[-128.0, 0.0, 127.0]).unwrap();
        let reference = RefTensor::from_tensor(&tensor).unwrap();
        assert_eq!(reference.data, vec![-128.0, 0.0, 127.0]);
        assert_eq!(reference.to_tensor(), tensor);
        assert!(RefTensor::from_tensor(&Tensor::string("valid")).is_none());
    }
}
