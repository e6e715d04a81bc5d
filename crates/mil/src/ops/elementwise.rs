//! Elementwise binary arithmetic and comparisons (mil-spec 6.3, 6.4).
//!
//! * Availability: ios15+, one version each.
//! * `add`, `sub`, `mul`, `pow`, `maximum`, `minimum`: `x`, `y` of domain T in {fp16, fp32,
//!   int32}; result `tensor<bcast(shape(x), shape(y)), T>`.
//! * `real_div`: T in {fp16, fp32} only. Deliberate choice (mil-spec 6.3 recommendation): int32
//!   `real_div` is rejected with E120, since coremltools infers int32 while dividing in floats.
//! * `equal`, `not_equal`, `greater`, `greater_equal`, `less`, `less_equal`: same operands,
//!   bool result.
//! * Neither operand must be const. No implicit promotion: different dtypes are E121;
//!   non-broadcastable shapes are E123 (NumPy rules, mil-spec 4.6).

use super::{
    Cx, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, broadcast, dtypes, fmt_shape,
};
use crate::diag::DiagCode;
use crate::ir::{DType, OpKind, Opset, TensorType};

const ARITH: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::NUMERIC).dom("T"),
    ParamSpec::new("y", dtypes::NUMERIC).dom("T"),
];
const FLOAT_ARITH: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("y", dtypes::FLOAT).dom("T"),
];

macro_rules! one_version {
    ($name:ident, $kind:ident, $params:expr) => {
        const $name: &[OpSignature] = &[OpSignature {
            kind: OpKind::$kind,
            introduced: Opset::Ios15,
            params: $params,
            variadic: None,
            results: ResultCount::One,
        }];
    };
}

one_version!(ADD, Add, ARITH);
one_version!(SUB, Sub, ARITH);
one_version!(MUL, Mul, ARITH);
one_version!(REAL_DIV, RealDiv, FLOAT_ARITH);
one_version!(POW, Pow, ARITH);
one_version!(MAXIMUM, Maximum, ARITH);
one_version!(MINIMUM, Minimum, ARITH);
one_version!(EQUAL, Equal, ARITH);
one_version!(NOT_EQUAL, NotEqual, ARITH);
one_version!(GREATER, Greater, ARITH);
one_version!(GREATER_EQUAL, GreaterEqual, ARITH);
one_version!(LESS, Less, ARITH);
one_version!(LESS_EQUAL, LessEqual, ARITH);

/// The versions of a binary elementwise op.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Add => ADD,
        OpKind::Sub => SUB,
        OpKind::Mul => MUL,
        OpKind::RealDiv => REAL_DIV,
        OpKind::Pow => POW,
        OpKind::Maximum => MAXIMUM,
        OpKind::Minimum => MINIMUM,
        OpKind::Equal => EQUAL,
        OpKind::NotEqual => NOT_EQUAL,
        OpKind::Greater => GREATER,
        OpKind::GreaterEqual => GREATER_EQUAL,
        OpKind::Less => LESS,
        OpKind::LessEqual => LESS_EQUAL,
        _ => unreachable!("invariant: elementwise::versions called for {kind}"),
    }
}

/// Whether `kind` is a comparison (bool result).
pub fn is_comparison(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Equal
            | OpKind::NotEqual
            | OpKind::Greater
            | OpKind::GreaterEqual
            | OpKind::Less
            | OpKind::LessEqual
    )
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let y = cx.req_ty("y");
    let Some(shape) = broadcast(&x.shape, &y.shape) else {
        let kind = cx.kind();
        let span = cx.span("y");
        return Err(cx.fail(
            DiagCode::E123,
            span,
            format!(
                "'{kind}' shapes are not broadcastable: x is {}, y is {}",
                fmt_shape(&x.shape),
                fmt_shape(&y.shape)
            ),
        ));
    };
    if is_comparison(cx.kind()) {
        Ok((OpAttrs::Compare, vec![TensorType::new(DType::Bool, shape)]))
    } else {
        Ok((OpAttrs::Binary, vec![TensorType::new(x.dtype, shape)]))
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, OpKind, Opset, TensorType};
    use crate::ops::testutil::*;

    #[test]
    fn broadcasting_results() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[1, 768, 1, 256]));
        let s = b.param("s", t16(&[1, 1, 1, 256]));
        let r = b.op(OpKind::Mul, &[("x", x), ("y", s)]);
        let c = b.op(OpKind::Less, &[("x", x), ("y", s)]);
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[1, 768, 1, 256])));
        assert_eq!(
            out.ty(c),
            Some(TensorType::new(DType::Bool, [1, 768, 1, 256]))
        );
        assert!(out.codes().is_empty(), "{:?}", out.codes());
    }

    #[test]
    fn scalar_operand_and_rank0_result() {
        let mut b = FnBuilder::new(Opset::Ios15);
        let one = b.lit_f(DType::Fp16, &[], &[1.0]);
        let two = b.lit_f(DType::Fp16, &[], &[2.0]);
        let x = b.param("x", t16(&[3, 4]));
        let r = b.op(OpKind::Sub, &[("x", one), ("y", x)]);
        let s = b.op(OpKind::Add, &[("x", one), ("y", two)]);
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[3, 4])));
        assert_eq!(out.ty(s), Some(t16(&[])));
    }

    #[test]
    fn dtype_and_shape_errors() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[2, 3]));
        let y = b.param("y", TensorType::new(DType::Fp32, [2, 3]));
        let z = b.param("z", t16(&[3, 2]));
        let i = b.param("i", TensorType::new(DType::Int32, [2, 3]));
        let r1 = b.op(OpKind::Add, &[("x", x), ("y", y)]);
        let r2 = b.op(OpKind::Add, &[("x", x), ("y", z)]);
        let r3 = b.op(OpKind::RealDiv, &[("x", i), ("y", i)]);
        let r4 = b.op(OpKind::Mul, &[("x", r1), ("y", x)]);
        let out = b.run();
        assert_eq!(out.codes(), vec!["E121", "E123", "E120", "E120"]);
        assert_eq!(out.ty(r1), None);
        assert_eq!(out.ty(r2), None);
        assert_eq!(out.ty(r3), None);
        // No cascade from the failed r1.
        assert_eq!(out.ty(r4), None);
        assert!(
            out.diags[0].message.contains("x: fp16, y: fp32"),
            "{}",
            out.diags[0].message
        );
    }
}
