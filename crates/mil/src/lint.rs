//! ANE-fidelity lints (mil-spec 8.6, 9.7): warnings about programs that are valid MIL but that
//! the Apple Neural Engine stack is reported to reject or to run incorrectly. They run only with
//! `VerifyOptions::ane_lints`, on a program that passed verification, and never fail it.
//!
//! | Code | Condition | Evidence |
//! |---|---|---|
//! | W173 | a parameter or op result of rank above 5 | CoreML's common rank limit (mil-spec 4.8) |
//! | W301 | a bare `true`/`false` argument (no `bool(...)`) | seen in maderix/ANE tests; whether the ANE accepts it is unknown (mil-spec 3.10) |
//! | W310 | `attn_mask` given to `scaled_dot_product_attention` | maderix/ANE README: the hardware ignores it |
//! | W320 | more than one function input | maderix/ANE README "single-input constraint" (contradicted by its own multi-input tests) |
//! | W321 | `conv` with `C_in` above [`MAX_CONV_INPUT_CHANNELS`] | maderix/ANE `ane_classifier.h`: 32000 input channels rejected |
//! | W322 | `matmul` inner dimension not a multiple of 32 | maderix/ANE issue #47: non-multiples silently produce zeros |
//! | W323 | function input/output whose last (spatial) dim is not a multiple of 16 | surfaces are laid out with padded spatial strides (maderix/ANE README forks: "spatial stride padded"), so a width that is not a multiple of 16 does not match the dense layout |
//! | W324 | function input byte sizes not strictly ascending in parameter order | maderix/ANE issue #47: inputs bind to surfaces by ascending size; violations give silent zeros |
//! | W325 | function output byte sizes not strictly descending in output order | maderix/ANE issue #47, same finding for outputs |
//! | W326 | `conv` with a non-const weight and `groups > 1` | maderix/ANE issue #47: grouped/depthwise conv with runtime weights is InvalidMILProgram |
//! | W327 | an op outside [`ANE_OBSERVED_OPS`] (once per op type and function) | mil-spec 6.0: the ops found in maderix/ANE's MIL text; whether the ANE compiler lowers the others is unknown |
//!
//! All of these are hardware observations by third parties, not MIL semantics; the verifier and
//! the engine accept and run such programs exactly as written.

use crate::diag::{DiagCode, Diagnostic};
use crate::facts::FunctionFacts;
use crate::ir::{DType, Function, HandleVec, Literal, OpKind, Program, TensorType, ValueDef};
use crate::ops::{self, OpAttrs};

/// `conv` input channel count above which W321 fires.
pub const MAX_CONV_INPUT_CHANNELS: usize = 16384;

/// Highest rank without W173.
pub const MAX_RANK: usize = 5;

/// The ops found in maderix/ANE's MIL programs (mil-spec 6.0, snapshot `d91c984`): the op set
/// known to compile for the ANE. Any other op gets W327.
pub const ANE_OBSERVED_OPS: &[OpKind] = &[
    OpKind::Const,
    OpKind::Reshape,
    OpKind::SliceBySize,
    OpKind::Transpose,
    OpKind::Mul,
    OpKind::Conv,
    OpKind::Cast,
    OpKind::Matmul,
    OpKind::Add,
    OpKind::Concat,
    OpKind::ReduceSum,
    OpKind::Softmax,
    OpKind::Sub,
    OpKind::Sigmoid,
    OpKind::Pow,
    OpKind::ScaledDotProductAttention,
    OpKind::Quantize,
    OpKind::Dequantize,
    OpKind::ConstexprAffineDequantize,
];

/// Appends the ANE-fidelity warnings for `program` to `diags`.
pub fn ane_lints(
    program: &Program,
    facts: &HandleVec<Function, FunctionFacts>,
    diags: &mut Vec<Diagnostic>,
) {
    for (handle, func) in program.functions.iter() {
        let Some(facts) = facts.get(handle) else {
            continue;
        };
        lint_function(func, facts, diags);
    }
}

fn surface_bytes(ty: &TensorType) -> usize {
    ty.byte_len().unwrap_or(0)
}

fn lint_function(func: &Function, facts: &FunctionFacts, diags: &mut Vec<Diagnostic>) {
    // W173: ranks above 5.
    for (value, val) in func.values.iter() {
        if val.name.is_empty() {
            continue;
        }
        let ty = &facts.types[value];
        if ty.rank() > MAX_RANK {
            let span = if val.ty_span.is_empty() {
                func.values.span(value)
            } else {
                val.ty_span
            };
            diags.push(
                Diagnostic::new(
                    DiagCode::W173,
                    span,
                    format!(
                        "'{}' has rank {} ({ty}); the ANE stack is limited to rank {MAX_RANK}",
                        val.name,
                        ty.rank()
                    ),
                )
                .with_label(format!("rank {}", ty.rank())),
            );
        }
    }

    // W301: bare `true`/`false`. Lowering gives a literal written with a type (`bool(true)`)
    // the span of that type as `ty_span`, and a bare keyword its own span for both.
    for (value, val) in func.values.iter() {
        let span = func.values.span(value);
        if let ValueDef::Literal(Literal::Tensor(tensor)) = &val.def {
            let bare = tensor.ty == TensorType::scalar(DType::Bool)
                && !span.is_empty()
                && val.ty_span == span;
            if bare {
                let text = if tensor.as_bool() == Some(true) {
                    "true"
                } else {
                    "false"
                };
                diags.push(
                    Diagnostic::new(
                        DiagCode::W301,
                        span,
                        format!(
                            "bare `{text}` argument; whether the ANE compiler accepts it is unknown"
                        ),
                    )
                    .with_label(format!("write bool({text})")),
                );
            }
        }
    }

    // W320, W324: inputs.
    if func.params.len() > 1 {
        let second = func.params[1];
        diags.push(
            Diagnostic::new(
                DiagCode::W320,
                func.values.span(second),
                format!(
                    "function '{}' has {} inputs; maderix/ANE reports multi-input requests failing with error 0x1d",
                    func.name,
                    func.params.len()
                ),
            )
            .with_note("packing inputs into one tensor (spatial or channel dimension) avoids the constraint"),
        );
    }
    for pair in func.params.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        let prev_bytes = surface_bytes(&facts.types[prev]);
        let next_bytes = surface_bytes(&facts.types[next]);
        if next_bytes <= prev_bytes {
            diags.push(
                Diagnostic::new(
                    DiagCode::W324,
                    func.values.span(next),
                    format!(
                        "input '{}' ({next_bytes} bytes) is not larger than the input before it, '{}' ({prev_bytes} bytes); the ANE needs input surfaces in strictly ascending size",
                        func.values[next].name, func.values[prev].name
                    ),
                )
                .with_secondary(func.values.span(prev), format!("'{}' declared here", func.values[prev].name)),
            );
        }
    }
    // W325: outputs.
    for pair in func.outputs.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        let prev_bytes = surface_bytes(&facts.types[prev.value]);
        let next_bytes = surface_bytes(&facts.types[next.value]);
        if next_bytes >= prev_bytes {
            diags.push(Diagnostic::new(
                DiagCode::W325,
                next.span,
                format!(
                    "output '{}' ({next_bytes} bytes) is not smaller than the output before it, '{}' ({prev_bytes} bytes); the ANE needs output surfaces in strictly descending size",
                    func.values[next.value].name, func.values[prev.value].name
                ),
            ));
        }
    }
    // W323: spatial width of I/O surfaces.
    let io = func
        .params
        .iter()
        .map(|&value| (value, func.values.span(value), "input"))
        .chain(
            func.outputs
                .iter()
                .map(|used| (used.value, used.span, "output")),
        );
    for (value, span, role) in io {
        let ty = &facts.types[value];
        let Some(&width) = ty.shape.last() else {
            continue;
        };
        if width % 16 != 0 {
            diags.push(Diagnostic::new(
                DiagCode::W323,
                span,
                format!(
                    "{role} '{}' has last (spatial) dimension {width}, not a multiple of 16 ({ty}); ANE surfaces pad the spatial stride",
                    func.values[value].name
                ),
            ));
        }
    }

    // Per-op lints.
    let mut unobserved: Vec<OpKind> = Vec::new();
    for (handle, op) in func.ops.iter() {
        if !ANE_OBSERVED_OPS.contains(&op.kind) && !unobserved.contains(&op.kind) {
            unobserved.push(op.kind);
            diags.push(
                Diagnostic::new(
                    DiagCode::W327,
                    func.ops.span(handle),
                    format!(
                        "'{}' never appears in maderix/ANE's MIL programs; whether the ANE compiler supports it is unknown",
                        op.kind
                    ),
                )
                .with_note("ops seen there: const, reshape, slice_by_size, transpose, mul, conv, cast, matmul, add, concat, reduce_sum, softmax, sub, sigmoid, pow, scaled_dot_product_attention, quantize, dequantize, constexpr_affine_dequantize"),
            );
        }
        match op.kind {
            OpKind::ScaledDotProductAttention => {
                if let Some(mask) = op.single("attn_mask") {
                    diags.push(
                        Diagnostic::new(
                            DiagCode::W310,
                            mask.span,
                            "'scaled_dot_product_attention' attn_mask is ignored by the ANE (maderix/ANE README); results on hardware differ",
                        )
                        .with_note("decompose causal attention into matmul, add of the mask, softmax and matmul"),
                    );
                }
            }
            OpKind::Conv => {
                let (Some(x), Some(weight)) = (op.single("x"), op.single("weight")) else {
                    continue;
                };
                let c_in = facts.types[x.value].shape.get(1).copied().unwrap_or(0);
                if c_in > MAX_CONV_INPUT_CHANNELS {
                    diags.push(Diagnostic::new(
                        DiagCode::W321,
                        x.span,
                        format!(
                            "'conv' has {c_in} input channels; the ANE compiler rejected a conv with 32000 (maderix/ANE), keep C_in at or below {MAX_CONV_INPUT_CHANNELS}"
                        ),
                    ));
                }
                if let OpAttrs::Conv { groups, .. } = ops::attrs(func, facts, handle)
                    && groups > 1
                    && facts.consts[weight.value].is_none()
                {
                    diags.push(Diagnostic::new(
                        DiagCode::W326,
                        weight.span,
                        format!(
                            "'conv' with a non-const weight and groups = {groups} is rejected by the ANE compiler (InvalidMILProgram, maderix/ANE issue #47)"
                        ),
                    ));
                }
            }
            OpKind::Matmul => {
                let Some(x) = op.single("x") else { continue };
                let x_ty = &facts.types[x.value];
                let OpAttrs::Matmul { transpose_x, .. } = ops::attrs(func, facts, handle) else {
                    continue;
                };
                let inner = match (x_ty.rank(), transpose_x) {
                    (0, _) => continue,
                    (1, _) => x_ty.shape[0],
                    (rank, false) => x_ty.shape[rank - 1],
                    (rank, true) => x_ty.shape[rank - 2],
                };
                if inner % 32 != 0 {
                    diags.push(Diagnostic::new(
                        DiagCode::W322,
                        func.ops.span(handle),
                        format!(
                            "'matmul' inner dimension {inner} is not a multiple of 32; the ANE is reported to produce zeros (maderix/ANE issue #47)"
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::Diagnostic;
    use crate::verify::{VerifyOptions, verify};

    fn lint(body: &str, params: &str, outputs: &str) -> Vec<&'static str> {
        let text = format!(
            "program(1.3)\n{{\n    func main<ios18>({params}) {{\n{body}\n    }} -> ({outputs});\n}}\n"
        );
        let (program, diags) = crate::lower::parse(&text);
        assert!(diags.is_empty(), "{diags:?}");
        let options = VerifyOptions {
            ane_lints: true,
            ..VerifyOptions::default()
        };
        let verified = verify(program, &options).expect("verifies");
        verified
            .warnings()
            .iter()
            .map(|diag: &Diagnostic| diag.code.as_str())
            .collect()
    }

    #[test]
    fn matmul_inner_dimension_follows_transpose_x() {
        // x^T is [64, 32] @ [32, 64]: k = 32.
        let clean = lint(
            "        tensor<fp16, [1, 64, 64]> y = matmul(transpose_x = bool(true), x = a, y = a)[name = string(\"y\")];",
            "tensor<fp16, [1, 32, 64]> a",
            "y",
        );
        assert!(clean.is_empty(), "{clean:?}");
        // x^T is [64, 48] @ [48, 64]: k = 48.
        let flagged = lint(
            "        tensor<fp16, [1, 64, 64]> y = matmul(transpose_x = bool(true), x = a, y = a)[name = string(\"y\")];",
            "tensor<fp16, [1, 48, 64]> a",
            "y",
        );
        assert_eq!(flagged, vec!["W322"]);
    }

    #[test]
    fn io_order_and_width() {
        let codes = lint(
            "        tensor<fp16, [1, 8, 1, 16]> y = add(x = a, y = b)[name = string(\"y\")];",
            "tensor<fp16, [1, 8, 1, 16]> a, tensor<fp16, [1, 8, 1, 16]> b",
            "y, b",
        );
        // Two inputs of equal size, two outputs of equal size.
        assert_eq!(codes, vec!["W320", "W324", "W325"]);
        let codes = lint(
            "        tensor<fp16, [1, 8, 1, 20]> y = sigmoid(x = a)[name = string(\"y\")];",
            "tensor<fp16, [1, 8, 1, 20]> a",
            "y",
        );
        assert_eq!(codes, vec!["W323", "W323"]);
    }
}
