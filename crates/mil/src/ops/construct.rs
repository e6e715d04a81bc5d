//! Construction, masking, selection and indexing: `fill`, `band_part`, `select`, `gather`
//! (mil-spec 6.15).
//!
//! * `fill` (ios15): `shape` const 1-d int32 (required const here), entries >= 1 (E125);
//!   `value`: const scalar in {fp16, fp32, int32, bool}, default 0.0 **as fp32**. Result:
//!   `tensor<shape, dtype(value)>`.
//! * `band_part` (ios15): `x` rank >= 2 (E122), T in {fp16, fp32, int32, bool}; `lower`, `upper`:
//!   const int32, default -1. Result: x's type.
//! * `select` (ios15): `cond` bool (E120); `a`, `b` one dtype T in {fp16, fp32, int32, bool}.
//!   Result: the three-way broadcast of cond, a and b (E123 if not broadcastable). When `cond`
//!   widens the broadcast of `a` and `b` (coremltools' shape function would not), E123 is an
//!   error in strict mode and a warning otherwise.
//! * `gather`: ios15 `x` in {fp16, fp32, int32}, `indices` int32, `axis` const int32 default 0;
//!   ios16 adds `batch_dims` (const int32, default 0) and int16/uint16 indices; ios17 adds
//!   int8/uint8/int16/uint16 data, int8/uint8 indices and `validate_indices` (const bool,
//!   default false), and forbids negative indices. Constraints (E122): `batch_dims <= axis`,
//!   `batch_dims <= rank(indices)`, `x.shape[:batch_dims] == indices.shape[:batch_dims]`.
//!   Result shape `D[:axis] + N[batch_dims:] + D[axis+1:]`. Const indices are range-checked
//!   at compile time (E125): ios15/16 `-D <= v < D`, ios17 `0 <= v < D`.

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, broadcast, dtypes,
    fmt_ints, fmt_shape,
};
use crate::diag::{DiagCode, Diagnostic, Severity};
use crate::ir::{DType, OpKind, Opset, TensorType};

macro_rules! sig {
    ($kind:ident, $opset:ident, $params:expr) => {
        OpSignature {
            kind: OpKind::$kind,
            introduced: Opset::$opset,
            params: $params,
            variadic: None,
            results: ResultCount::One,
        }
    };
}

const FILL: &[OpSignature] = &[sig!(
    Fill,
    Ios15,
    &[
        ParamSpec::new("shape", dtypes::INT32).konst(),
        ParamSpec::new("value", dtypes::BASIC)
            .konst()
            .opt(DefaultValue::Float(0.0)),
    ]
)];
const BAND_PART: &[OpSignature] = &[sig!(
    BandPart,
    Ios15,
    &[
        ParamSpec::new("x", dtypes::BASIC),
        ParamSpec::new("lower", dtypes::INT32)
            .konst()
            .opt(DefaultValue::Int(-1)),
        ParamSpec::new("upper", dtypes::INT32)
            .konst()
            .opt(DefaultValue::Int(-1)),
    ]
)];
const SELECT: &[OpSignature] = &[sig!(
    Select,
    Ios15,
    &[
        ParamSpec::new("cond", dtypes::BOOL),
        ParamSpec::new("a", dtypes::BASIC).dom("T"),
        ParamSpec::new("b", dtypes::BASIC).dom("T"),
    ]
)];
const INDICES16: &[DType] = &[DType::Int16, DType::Uint16, DType::Int32];
const INDICES17: &[DType] = &[
    DType::Int8,
    DType::Uint8,
    DType::Int16,
    DType::Uint16,
    DType::Int32,
];
const GATHER: &[OpSignature] = &[
    sig!(
        Gather,
        Ios15,
        &[
            ParamSpec::new("x", dtypes::NUMERIC),
            ParamSpec::new("indices", dtypes::INT32),
            ParamSpec::new("axis", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Int(0)),
        ]
    ),
    sig!(
        Gather,
        Ios16,
        &[
            ParamSpec::new("x", dtypes::NUMERIC),
            ParamSpec::new("indices", INDICES16),
            ParamSpec::new("axis", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Int(0)),
            ParamSpec::new("batch_dims", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Int(0)),
        ]
    ),
    sig!(
        Gather,
        Ios17,
        &[
            ParamSpec::new("x", dtypes::NUMERIC17),
            ParamSpec::new("indices", INDICES17),
            ParamSpec::new("axis", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Int(0)),
            ParamSpec::new("batch_dims", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Int(0)),
            ParamSpec::new("validate_indices", dtypes::BOOL)
                .konst()
                .opt(DefaultValue::Bool(false)),
        ]
    ),
];

/// The versions of fill, band_part, select and gather.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Fill => FILL,
        OpKind::BandPart => BAND_PART,
        OpKind::Select => SELECT,
        OpKind::Gather => GATHER,
        _ => unreachable!("invariant: construct::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    match cx.kind() {
        OpKind::Fill => fill(cx),
        OpKind::BandPart => band_part(cx),
        OpKind::Select => select(cx),
        _ => gather(cx),
    }
}

fn fill(cx: &mut Cx<'_>) -> RuleResult {
    let shape = cx.ints("shape")?.unwrap_or_default();
    if let Some(bad) = shape.iter().find(|&&dim| dim < 1) {
        let span = cx.span("shape");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'fill' shape {} has entry {bad}; sizes must be at least 1",
                fmt_ints(&shape)
            ),
        ));
    }
    let dtype = cx.ty("value").map_or(DType::Fp32, |ty| ty.dtype);
    let value = cx.float("value")?.unwrap_or(0.0);
    let shape: Vec<usize> = shape.iter().map(|&dim| dim as usize).collect();
    Ok((
        OpAttrs::Fill {
            shape: shape.clone(),
            value,
        },
        vec![TensorType::new(dtype, shape)],
    ))
}

fn band_part(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    cx.require_rank("x", &x, |rank| rank >= 2, "rank >= 2")?;
    let lower = cx.int("lower")?.unwrap_or(-1);
    let upper = cx.int("upper")?.unwrap_or(-1);
    Ok((OpAttrs::BandPart { lower, upper }, vec![x]))
}

fn select(cx: &mut Cx<'_>) -> RuleResult {
    let cond = cx.req_ty("cond");
    let a = cx.req_ty("a");
    let b = cx.req_ty("b");
    let Some(ab) = broadcast(&a.shape, &b.shape) else {
        let span = cx.span("b");
        return Err(cx.fail(
            DiagCode::E123,
            span,
            format!(
                "'select' shapes are not broadcastable: a is {}, b is {}",
                fmt_shape(&a.shape),
                fmt_shape(&b.shape)
            ),
        ));
    };
    let Some(full) = broadcast(&cond.shape, &ab) else {
        let span = cx.span("cond");
        return Err(cx.fail(
            DiagCode::E123,
            span,
            format!(
                "'select' cond {} does not broadcast with a/b {}",
                fmt_shape(&cond.shape),
                fmt_shape(&ab)
            ),
        ));
    };
    if full != ab {
        let span = cx.span("cond");
        let diag = Diagnostic::new(
            DiagCode::E123,
            span,
            format!(
                "'select' cond {} widens the broadcast of a and b from {} to {}",
                fmt_shape(&cond.shape),
                fmt_shape(&ab),
                fmt_shape(&full)
            ),
        )
        .with_note("coremltools infers the shape from a and b only");
        if cx.options.strict {
            return Err(cx.fail_with(diag));
        }
        cx.warn(diag.with_severity(Severity::Warning));
    }
    Ok((OpAttrs::Select, vec![TensorType::new(a.dtype, full)]))
}

fn gather(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let indices = cx.req_ty("indices");
    cx.require_rank("x", &x, |rank| rank >= 1, "rank >= 1")?;
    let axis = cx.int("axis")?.unwrap_or(0);
    let axis = cx.axis("axis", axis, x.rank())?;
    let batch_dims = cx.int("batch_dims")?.unwrap_or(0);
    let validate_indices = cx.boolean("validate_indices", false)?;
    if batch_dims < 0 {
        let span = cx.span("batch_dims");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!("'gather' batch_dims {batch_dims} must be non-negative"),
        ));
    }
    let batch_dims = batch_dims as usize;
    if batch_dims > axis
        || batch_dims > indices.rank()
        || x.shape[..batch_dims] != indices.shape[..batch_dims]
    {
        let span = cx.span("batch_dims");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'gather' batch_dims = {batch_dims} needs batch_dims <= axis ({axis}), <= rank(indices) ({}) and equal leading dims (x {}, indices {})",
                indices.rank(),
                fmt_shape(&x.shape),
                fmt_shape(&indices.shape)
            ),
        ));
    }
    let allow_negative = cx.opset < Opset::Ios17;
    let limit = x.shape[axis] as i64;
    if let Some(values) = cx.konst("indices").and_then(|tensor| tensor.to_i64_vec()) {
        let low = if allow_negative { -limit } else { 0 };
        if let Some(bad) = values.iter().find(|&&value| value < low || value >= limit) {
            let span = cx.span("indices");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!(
                    "'gather' index {bad} is out of range for size {limit} on axis {axis} (valid: {low} to {}{})",
                    limit - 1,
                    if allow_negative { "" } else { "; negative indices are not allowed from ios17" }
                ),
            ));
        }
    }
    let mut shape = x.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape[batch_dims..]);
    shape.extend_from_slice(&x.shape[axis + 1..]);
    Ok((
        OpAttrs::Gather {
            axis,
            batch_dims,
            allow_negative,
            validate_indices,
        },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, OpKind, Opset, Tensor};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn gather_batch_dims() {
        let mut b = FnBuilder::new(Opset::Ios16);
        let x = b.param("x", t16(&[2, 5, 3]));
        let idx = b.param("i", tt(DType::Int32, &[2, 4]));
        let ax = b.int(1);
        let one = b.int(1);
        let r = b.op(
            OpKind::Gather,
            &[
                ("x", x),
                ("indices", idx),
                ("axis", ax),
                ("batch_dims", one),
            ],
        );
        let plain = b.op(OpKind::Gather, &[("x", x), ("indices", idx), ("axis", ax)]);
        let two = b.int(2);
        b.op(
            OpKind::Gather,
            &[
                ("x", x),
                ("indices", idx),
                ("axis", ax),
                ("batch_dims", two),
            ],
        );
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[2, 4, 3])));
        assert_eq!(out.ty(plain), Some(t16(&[2, 2, 4, 3])));
        assert_eq!(
            out.attrs(r),
            OpAttrs::Gather {
                axis: 1,
                batch_dims: 1,
                allow_negative: true,
                validate_indices: false
            }
        );
        assert_eq!(out.codes(), vec!["E122"]);
    }

    #[test]
    fn gather_versions() {
        // ios15 has no batch_dims.
        let mut b = FnBuilder::new(Opset::Ios15);
        let x = b.param("x", t16(&[5, 3]));
        let idx = b.param("i", tt(DType::Int32, &[4]));
        let zero = b.int(0);
        b.op(
            OpKind::Gather,
            &[("x", x), ("indices", idx), ("batch_dims", zero)],
        );
        let i16 = b.param("j", tt(DType::Int16, &[4]));
        b.op(OpKind::Gather, &[("x", x), ("indices", i16)]);
        assert_eq!(b.run().codes(), vec!["E112", "E120"]);

        // Negative const indices: fine in ios16, E125 in ios17.
        for (opset, expected) in [(Opset::Ios16, vec![]), (Opset::Ios17, vec!["E125"])] {
            let mut b = FnBuilder::new(opset);
            let x = b.param("x", t16(&[5, 3]));
            let idx = b.lit(Tensor::i32_vector(&[0, -1]));
            let r = b.op(OpKind::Gather, &[("x", x), ("indices", idx)]);
            let out = b.run();
            assert_eq!(out.codes(), expected, "{opset}");
            if opset == Opset::Ios16 {
                assert_eq!(out.ty(r), Some(t16(&[2, 3])));
            }
        }
    }

    #[test]
    fn select_and_fill_and_band_part() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let cond = b.param("c", tt(DType::Bool, &[4, 1]));
        let a = b.param("a", t16(&[1, 3]));
        let s = b.op(OpKind::Select, &[("cond", cond), ("a", a), ("b", a)]);
        let shape = b.ints(&[2, 3]);
        let f = b.op(OpKind::Fill, &[("shape", shape)]);
        let v = b.float(DType::Fp16, 1.5);
        let f16 = b.op(OpKind::Fill, &[("shape", shape), ("value", v)]);
        let x = b.param("x", t16(&[4, 4]));
        let lo = b.int(0);
        let bp = b.op(OpKind::BandPart, &[("x", x), ("upper", lo)]);
        let out = b.run();
        assert_eq!(out.ty(s), Some(t16(&[4, 3])));
        // The widened select is only a warning by default.
        assert_eq!(out.codes(), vec!["E123"]);
        assert!(!out.diags[0].is_error());
        assert_eq!(out.ty(f), Some(tt(DType::Fp32, &[2, 3])));
        assert_eq!(out.ty(f16), Some(t16(&[2, 3])));
        assert_eq!(
            out.attrs(f16),
            OpAttrs::Fill {
                shape: vec![2, 3],
                value: 1.5
            }
        );
        assert_eq!(
            out.attrs(bp),
            OpAttrs::BandPart {
                lower: -1,
                upper: 0
            }
        );
    }
}
