//! Linear algebra: `matmul`, `linear`, `conv` (mil-spec 6.9).
//!
//! `matmul` (ios15, ios17):
//! * `x`, `y` in {fp16, fp32, int32}, rank >= 1; `transpose_x`, `transpose_y`: const bool,
//!   default false.
//! * ios15: x and y share one dtype (E121). ios17: they may differ when exactly one of them is
//!   a constant (a literal or the result of `const`/`constexpr_*`); the result takes the other
//!   side's dtype.
//! * Shape: transpose the last two dims where flagged (a flag on a rank-1 operand is ignored;
//!   E125 in strict mode); a rank-1 x is `[1, K]`, a rank-1 y `[K, 1]`; `x[-1] == y[-2]` (E122);
//!   batch dims broadcast (E123); result `bcast(batch) + [x[-2], y[-1]]` minus the dims added
//!   for rank-1 operands. `[10,4,3] @ [5,10,3,2] -> [5,10,4,2]`, `[4] @ [10,4,3] -> [10,3]`.
//!
//! `linear` (ios15, ios17):
//! * `x` rank 1..3 in {fp16, fp32, int32}; `weight`: const `[D_out, D_in]`; `bias`: const
//!   `[D_out]`, optional (zeros). ios15: weight and bias share x's dtype; ios17: their own.
//! * `x[-1] == weight[1]`, `len(bias) == weight[0]` (E122). Result `[*D, D_out]`, x's dtype.
//!
//! `conv` (ios15, ios17):
//! * `x: [N, C_in, *d_in]` fp16/fp32 with 1 to 3 spatial dims (rank 3..5); `weight: [C_out,
//!   C_in/groups, *K]` (may be a runtime value, but then every dilation must be 1: E125);
//!   `bias: [C_out]` optional (const before ios17); `strides`, `dilations`: const int32 `[S]`,
//!   default ones, each >= 1; `pad_type`: const string `"valid"` (default), `"same"`,
//!   `"custom"`, and from ios17 `"same_lower"` (E125 otherwise); `pad`: const int32 `[2S]`
//!   `[before_0, after_0, ...]`, default zeros, used only with `"custom"`; `groups`: const int32,
//!   default 1.
//! * ios15: weight/bias share x's dtype; ios17: their own float dtype.
//! * Constraints (E122): `C_in % groups == 0`, `weight[1] == C_in / groups`,
//!   `C_out % groups == 0`, `len(strides) == len(dilations) == S`, `len(pad) == 2S`,
//!   `len(bias) == C_out`, weight rank = x rank, every output size >= 1.
//! * Padding per spatial dim with effective kernel `E = (K - 1) * dl + 1`: valid 0/0; custom
//!   from `pad`; same/same_lower `total = max(0, (ceil(D / st) - 1) * st + E - D)` with the odd
//!   element after (`same`) or before (`same_lower`). Output
//!   `floor((D + before + after - E) / st) + 1`.

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, broadcast, dtypes,
    fmt_ints, fmt_shape,
};
use crate::diag::{DiagCode, Diagnostic};
use crate::ir::{Handle, OpKind, Opset, TensorType, Value, ValueDef};

const MATMUL15: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::NUMERIC).dom("T"),
    ParamSpec::new("y", dtypes::NUMERIC).dom("T"),
    ParamSpec::new("transpose_x", dtypes::BOOL)
        .konst()
        .opt(DefaultValue::Bool(false)),
    ParamSpec::new("transpose_y", dtypes::BOOL)
        .konst()
        .opt(DefaultValue::Bool(false)),
];
const MATMUL17: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::NUMERIC),
    ParamSpec::new("y", dtypes::NUMERIC),
    ParamSpec::new("transpose_x", dtypes::BOOL)
        .konst()
        .opt(DefaultValue::Bool(false)),
    ParamSpec::new("transpose_y", dtypes::BOOL)
        .konst()
        .opt(DefaultValue::Bool(false)),
];
const LINEAR15: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::NUMERIC).dom("T"),
    ParamSpec::new("weight", dtypes::NUMERIC).konst().dom("T"),
    ParamSpec::new("bias", dtypes::NUMERIC)
        .konst()
        .opt(DefaultValue::Rule("zeros"))
        .dom("T"),
];
const LINEAR17: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::NUMERIC).dom("T"),
    ParamSpec::new("weight", dtypes::NUMERIC).konst().dom("U"),
    ParamSpec::new("bias", dtypes::NUMERIC)
        .konst()
        .opt(DefaultValue::Rule("zeros"))
        .dom("U"),
];
const CONV15: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("weight", dtypes::FLOAT).dom("T"),
    ParamSpec::new("bias", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Rule("zeros"))
        .dom("T"),
    ParamSpec::new("strides", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("ones")),
    ParamSpec::new("pad_type", dtypes::STRING)
        .konst()
        .opt(DefaultValue::Str("valid")),
    ParamSpec::new("pad", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("zeros")),
    ParamSpec::new("dilations", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("ones")),
    ParamSpec::new("groups", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Int(1)),
];
const CONV17: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("weight", dtypes::FLOAT).dom("U"),
    ParamSpec::new("bias", dtypes::FLOAT)
        .opt(DefaultValue::Rule("zeros"))
        .dom("U"),
    ParamSpec::new("strides", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("ones")),
    ParamSpec::new("pad_type", dtypes::STRING)
        .konst()
        .opt(DefaultValue::Str("valid")),
    ParamSpec::new("pad", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("zeros")),
    ParamSpec::new("dilations", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("ones")),
    ParamSpec::new("groups", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Int(1)),
];

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

const MATMUL: &[OpSignature] = &[sig!(Matmul, Ios15, MATMUL15), sig!(Matmul, Ios17, MATMUL17)];
const LINEAR: &[OpSignature] = &[sig!(Linear, Ios15, LINEAR15), sig!(Linear, Ios17, LINEAR17)];
const CONV: &[OpSignature] = &[sig!(Conv, Ios15, CONV15), sig!(Conv, Ios17, CONV17)];

/// The versions of matmul, linear and conv.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Matmul => MATMUL,
        OpKind::Linear => LINEAR,
        OpKind::Conv => CONV,
        _ => unreachable!("invariant: linalg::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    match cx.kind() {
        OpKind::Matmul => matmul(cx),
        OpKind::Linear => linear(cx),
        _ => conv(cx),
    }
}

/// Whether `value` is a constant in the sense of the ios17 matmul dtype relaxation: a literal
/// or the result of `const` / `constexpr_*`.
fn is_const_op_value(cx: &Cx<'_>, value: Handle<Value>) -> bool {
    match cx.func.values[value].def {
        ValueDef::Literal(_) => true,
        ValueDef::Result { op, .. } => super::attrs_are_params(cx.func.ops[op].kind),
        _ => false,
    }
}

/// The matmul shape rule on plain shapes: `Err(message, code)` on failure.
pub fn matmul_shape(
    x: &[usize],
    y: &[usize],
    transpose_x: bool,
    transpose_y: bool,
) -> Result<Vec<usize>, (DiagCode, String)> {
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    if transpose_x && xs.len() >= 2 {
        let n = xs.len();
        xs.swap(n - 1, n - 2);
    }
    if transpose_y && ys.len() >= 2 {
        let n = ys.len();
        ys.swap(n - 1, n - 2);
    }
    let x_vec = xs.len() == 1;
    let y_vec = ys.len() == 1;
    if x_vec {
        xs.insert(0, 1);
    }
    if y_vec {
        ys.push(1);
    }
    let (xn, yn) = (xs.len(), ys.len());
    if xs[xn - 1] != ys[yn - 2] {
        return Err((
            DiagCode::E122,
            format!(
                "'matmul' inner dimensions differ: x has k={}, y has k={}",
                xs[xn - 1],
                ys[yn - 2]
            ),
        ));
    }
    let Some(mut out) = broadcast(&xs[..xn - 2], &ys[..yn - 2]) else {
        return Err((
            DiagCode::E123,
            format!(
                "'matmul' batch dimensions are not broadcastable: x batch {}, y batch {}",
                fmt_shape(&xs[..xn - 2]),
                fmt_shape(&ys[..yn - 2])
            ),
        ));
    };
    if !x_vec {
        out.push(xs[xn - 2]);
    }
    if !y_vec {
        out.push(ys[yn - 1]);
    }
    Ok(out)
}

fn matmul(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let y = cx.req_ty("y");
    cx.require_rank("x", &x, |rank| rank >= 1, "rank >= 1")?;
    cx.require_rank("y", &y, |rank| rank >= 1, "rank >= 1")?;
    let mut transpose_x = cx.boolean("transpose_x", false)?;
    let mut transpose_y = cx.boolean("transpose_y", false)?;
    let dtype = if x.dtype == y.dtype {
        x.dtype
    } else {
        // Only reachable in ios17+ (ios15 puts x and y in one domain).
        let x_use = cx.use_of("x").expect("x is required");
        let y_use = cx.use_of("y").expect("y is required");
        match (
            is_const_op_value(cx, x_use.value),
            is_const_op_value(cx, y_use.value),
        ) {
            (true, false) => y.dtype,
            (false, true) => x.dtype,
            _ => {
                let diag = cx.with_origin(Diagnostic::new(
                    DiagCode::E121,
                    y_use.span,
                    format!(
                        "'matmul' requires x and y to have the same dtype unless exactly one is a constant (x: {}, y: {})",
                        x.dtype, y.dtype
                    ),
                ), y_use.value, y_use.span);
                return Err(cx.fail_with(diag));
            }
        }
    };
    for (flag, name, ty) in [
        (&mut transpose_x, "transpose_x", &x),
        (&mut transpose_y, "transpose_y", &y),
    ] {
        if *flag && ty.rank() == 1 {
            if cx.options.strict {
                let span = cx.span(name);
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!("'matmul' {name} is set on a rank-1 operand (strict mode)"),
                ));
            }
            *flag = false;
        }
    }
    match matmul_shape(&x.shape, &y.shape, transpose_x, transpose_y) {
        Ok(shape) => Ok((
            OpAttrs::Matmul {
                transpose_x,
                transpose_y,
            },
            vec![TensorType::new(dtype, shape)],
        )),
        Err((code, message)) => {
            let span = cx.span("y");
            Err(cx.fail(code, span, message))
        }
    }
}

fn linear(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let weight = cx.req_ty("weight");
    cx.require_rank("x", &x, |rank| (1..=3).contains(&rank), "rank 1 to 3")?;
    cx.require_rank(
        "weight",
        &weight,
        |rank| rank == 2,
        "rank 2 ([D_out, D_in])",
    )?;
    let d_in = x.shape[x.rank() - 1];
    if weight.shape[1] != d_in {
        let span = cx.span("weight");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'linear' weight {} does not match x's last dimension {d_in}",
                fmt_shape(&weight.shape)
            ),
        ));
    }
    let d_out = weight.shape[0];
    let has_bias = match cx.ty("bias") {
        Some(bias) => {
            if bias.shape != [d_out] {
                let span = cx.span("bias");
                return Err(cx.fail(
                    DiagCode::E122,
                    span,
                    format!(
                        "'linear' bias must have shape [{d_out}], got {}",
                        fmt_shape(&bias.shape)
                    ),
                ));
            }
            true
        }
        None => false,
    };
    let mut shape = x.shape[..x.rank() - 1].to_vec();
    shape.push(d_out);
    Ok((
        OpAttrs::Linear { has_bias },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

/// Padding amounts for one spatial dim.
pub fn same_padding(
    size: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    lower: bool,
) -> (usize, usize) {
    let effective = kernel
        .saturating_sub(1)
        .saturating_mul(dilation)
        .saturating_add(1);
    let out = size.div_ceil(stride.max(1));
    let total = out
        .saturating_sub(1)
        .saturating_mul(stride)
        .saturating_add(effective)
        .saturating_sub(size);
    let before = if lower { total.div_ceil(2) } else { total / 2 };
    (before, total - before)
}

fn positive(
    cx: &mut Cx<'_>,
    name: &str,
    values: &[i64],
    min: i64,
) -> Result<Vec<usize>, super::Fail> {
    if let Some(bad) = values.iter().find(|&&value| value < min) {
        let span = cx.span(name);
        let what = if min == 0 {
            "non-negative"
        } else {
            "at least 1"
        };
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'conv' {name} {} must be {what}, found {bad}",
                fmt_ints(values)
            ),
        ));
    }
    Ok(values.iter().map(|&value| value as usize).collect())
}

fn length(
    cx: &mut Cx<'_>,
    name: &str,
    values: &[i64],
    expected: usize,
    why: &str,
) -> Result<(), super::Fail> {
    if values.len() == expected {
        return Ok(());
    }
    let span = cx.span(name);
    Err(cx.fail(
        DiagCode::E122,
        span,
        format!(
            "'conv' {name} must have {expected} entries ({why}), got {}",
            values.len()
        ),
    ))
}

fn conv(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let weight = cx.req_ty("weight");
    cx.require_rank(
        "x",
        &x,
        |rank| (3..=5).contains(&rank),
        "rank 3 to 5 ([N, C_in, 1 to 3 spatial dims])",
    )?;
    let spatial = x.rank() - 2;
    if weight.rank() != x.rank() {
        let span = cx.span("weight");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'conv' weight must have rank {} ([C_out, C_in/groups, {spatial} kernel dims]), got {}",
                x.rank(),
                weight
            ),
        ));
    }
    let groups = cx.int("groups")?.unwrap_or(1);
    if groups < 1 {
        let span = cx.span("groups");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!("'conv' groups must be at least 1, got {groups}"),
        ));
    }
    let groups = groups as usize;
    let (c_in, c_out) = (x.shape[1], weight.shape[0]);
    if c_in % groups != 0 || c_out % groups != 0 {
        let span = cx.span("groups");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!("'conv' groups = {groups} must divide C_in = {c_in} and C_out = {c_out}"),
        ));
    }
    if weight.shape[1] != c_in / groups {
        let span = cx.span("weight");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'conv' weight {} needs {} input channels per group (C_in = {c_in}, groups = {groups}), has {}",
                fmt_shape(&weight.shape),
                c_in / groups,
                weight.shape[1]
            ),
        ));
    }
    let strides = match cx.ints("strides")? {
        Some(values) => {
            length(cx, "strides", &values, spatial, "one per spatial dim")?;
            positive(cx, "strides", &values, 1)?
        }
        None => vec![1; spatial],
    };
    let dilations = match cx.ints("dilations")? {
        Some(values) => {
            length(cx, "dilations", &values, spatial, "one per spatial dim")?;
            positive(cx, "dilations", &values, 1)?
        }
        None => vec![1; spatial],
    };
    let weight_use = cx.use_of("weight").expect("weight is required");
    if cx.konst_of_value(weight_use.value).is_none() && dilations.iter().any(|&dl| dl != 1) {
        let span = cx.span("dilations");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'conv' with a non-const weight needs all dilations to be 1, got {}",
                fmt_shape(&dilations)
            ),
        ));
    }
    let pad_type = cx
        .string("pad_type")?
        .unwrap_or_else(|| "valid".to_string());
    let allowed: &[&str] = if cx.opset >= Opset::Ios17 {
        &["valid", "same", "same_lower", "custom"]
    } else {
        &["valid", "same", "custom"]
    };
    if !allowed.contains(&pad_type.as_str()) {
        let span = cx.span("pad_type");
        let names: Vec<String> = allowed.iter().map(|name| format!("\"{name}\"")).collect();
        let mut message = format!(
            "'conv' pad_type \"{pad_type}\" is not one of {} in {}",
            super::or_list(&names),
            cx.opset
        );
        if pad_type == "same_lower" {
            message.push_str(" (same_lower needs ios17)");
        }
        return Err(cx.fail(DiagCode::E125, span, message));
    }
    let pad = match cx.ints("pad")? {
        Some(values) => {
            length(
                cx,
                "pad",
                &values,
                2 * spatial,
                "before and after per spatial dim",
            )?;
            positive(cx, "pad", &values, 0)?
        }
        None => vec![0; 2 * spatial],
    };
    let has_bias = match cx.ty("bias") {
        Some(bias) => {
            if bias.shape != [c_out] {
                let span = cx.span("bias");
                return Err(cx.fail(
                    DiagCode::E122,
                    span,
                    format!(
                        "'conv' bias must have shape [{c_out}] (C_out), got {}",
                        fmt_shape(&bias.shape)
                    ),
                ));
            }
            true
        }
        None => false,
    };
    let mut pads_before = Vec::with_capacity(spatial);
    let mut pads_after = Vec::with_capacity(spatial);
    let mut shape = vec![x.shape[0], c_out];
    for dim in 0..spatial {
        let size = x.shape[dim + 2];
        let kernel = weight.shape[dim + 2];
        let (stride, dilation) = (strides[dim], dilations[dim]);
        let (before, after) = match pad_type.as_str() {
            "custom" => (pad[2 * dim], pad[2 * dim + 1]),
            "same" => same_padding(size, kernel, stride, dilation, false),
            "same_lower" => same_padding(size, kernel, stride, dilation, true),
            _ => (0, 0),
        };
        let effective = kernel
            .saturating_sub(1)
            .saturating_mul(dilation)
            .saturating_add(1);
        let padded = size.saturating_add(before).saturating_add(after);
        if padded < effective {
            let span = cx.span("weight");
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'conv' spatial dim {dim}: kernel extent {effective} exceeds the padded input size {padded}"
                ),
            ));
        }
        shape.push((padded - effective) / stride + 1);
        pads_before.push(before);
        pads_after.push(after);
    }
    Ok((
        OpAttrs::Conv {
            strides,
            pads_before,
            pads_after,
            dilations,
            groups,
            has_bias,
        },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use super::{matmul_shape, same_padding};
    use crate::ir::{DType, OpKind, Opset, Tensor, TensorType};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn matmul_shapes_from_the_spec() {
        assert_eq!(
            matmul_shape(&[10, 4, 3], &[5, 10, 3, 2], false, false),
            Ok(vec![5, 10, 4, 2])
        );
        assert_eq!(
            matmul_shape(&[4], &[10, 4, 3], false, false),
            Ok(vec![10, 3])
        );
        assert_eq!(
            matmul_shape(&[10, 3, 4], &[4], false, false),
            Ok(vec![10, 3])
        );
        assert_eq!(matmul_shape(&[4], &[4], false, false), Ok(vec![]));
        assert_eq!(
            matmul_shape(&[1, 12, 256, 64], &[1, 12, 256, 64], false, true),
            Ok(vec![1, 12, 256, 256])
        );
        assert_eq!(
            matmul_shape(&[1, 1, 4, 3], &[1, 1, 4, 2], true, false),
            Ok(vec![1, 1, 3, 2])
        );
        assert!(matmul_shape(&[2, 3], &[4, 5], false, false).is_err());
        assert!(matmul_shape(&[2, 2, 3], &[3, 3, 5], false, false).is_err());
    }

    #[test]
    fn matmul_dtypes_by_opset() {
        // ios17: a const fp32 y with an fp16 x is fine, result fp16.
        let mut b = FnBuilder::new(Opset::Ios17);
        let x = b.param("x", t16(&[2, 3]));
        let w = b.lit(Tensor::from_f64s(tt(DType::Fp32, &[3, 4]), &[0.0; 12]).unwrap());
        let r = b.op(OpKind::Matmul, &[("x", x), ("y", w)]);
        let out = b.run();
        assert!(out.codes().is_empty(), "{:?}", out.codes());
        assert_eq!(out.ty(r), Some(t16(&[2, 4])));

        // ios16: same program is E121.
        let mut b = FnBuilder::new(Opset::Ios16);
        let x = b.param("x", t16(&[2, 3]));
        let w = b.lit(Tensor::from_f64s(tt(DType::Fp32, &[3, 4]), &[0.0; 12]).unwrap());
        b.op(OpKind::Matmul, &[("x", x), ("y", w)]);
        assert_eq!(b.run().codes(), vec!["E121"]);

        // ios18: two runtime operands of different dtypes are E121.
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[2, 3]));
        let y = b.param("y", tt(DType::Fp32, &[3, 4]));
        b.op(OpKind::Matmul, &[("x", x), ("y", y)]);
        assert_eq!(b.run().codes(), vec!["E121"]);
    }

    #[test]
    fn matmul_rank1_transpose_flag() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[4]));
        let y = b.param("y", t16(&[4, 3]));
        let yes = b.boolean(true);
        let r = b.op(OpKind::Matmul, &[("x", x), ("y", y), ("transpose_x", yes)]);
        let out = b.run();
        assert!(out.codes().is_empty());
        assert_eq!(out.ty(r), Some(t16(&[3])));
        assert_eq!(
            out.attrs(r),
            OpAttrs::Matmul {
                transpose_x: false,
                transpose_y: false
            }
        );

        let mut b = FnBuilder::new(Opset::Ios18);
        b.strict = true;
        let x = b.param("x", t16(&[4]));
        let y = b.param("y", t16(&[4, 3]));
        let yes = b.boolean(true);
        b.op(OpKind::Matmul, &[("x", x), ("y", y), ("transpose_x", yes)]);
        assert_eq!(b.run().codes(), vec!["E125"]);
    }

    #[test]
    fn linear_rules() {
        let mut b = FnBuilder::new(Opset::Ios15);
        let x = b.param("x", t16(&[2, 8]));
        let w = b.lit(Tensor::from_f64s(t16(&[3, 8]), &[0.0; 24]).unwrap());
        let bias = b.lit(Tensor::from_f64s(t16(&[3]), &[0.0; 3]).unwrap());
        let r = b.op(OpKind::Linear, &[("x", x), ("weight", w), ("bias", bias)]);
        let p = b.param("w", t16(&[3, 8]));
        b.op(OpKind::Linear, &[("x", x), ("weight", p)]);
        let bad = b.lit(Tensor::from_f64s(t16(&[3, 7]), &[0.0; 21]).unwrap());
        b.op(OpKind::Linear, &[("x", x), ("weight", bad)]);
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[2, 3])));
        assert_eq!(out.attrs(r), OpAttrs::Linear { has_bias: true });
        assert_eq!(out.codes(), vec!["E124", "E122"]);
    }

    #[test]
    fn same_and_same_lower_padding() {
        // D=5, K=2, stride 2: out 3, total = (3-1)*2+2-5 = 1.
        assert_eq!(same_padding(5, 2, 2, 1, false), (0, 1));
        assert_eq!(same_padding(5, 2, 2, 1, true), (1, 0));
        // D=4, K=3, stride 1: total 2.
        assert_eq!(same_padding(4, 3, 1, 1, false), (1, 1));
        // dilation 2, K=3: effective 5, D=6, stride 1: total 4.
        assert_eq!(same_padding(6, 3, 1, 2, true), (2, 2));
    }

    fn conv_program(
        opset: Opset,
        pad_type: &str,
        x_shape: &[usize],
        w_shape: &[usize],
        strides: &[i64],
    ) -> (Outcome, crate::ir::Handle<crate::ir::Value>) {
        let mut b = FnBuilder::new(opset);
        let x = b.param("x", t16(x_shape));
        let n: usize = w_shape.iter().product();
        let w = b.lit(Tensor::from_f64s(t16(w_shape), &vec![0.0; n]).unwrap());
        let pt = b.string(pad_type);
        let st = b.ints(strides);
        let r = b.op(
            OpKind::Conv,
            &[("x", x), ("weight", w), ("pad_type", pt), ("strides", st)],
        );
        (b.run(), r)
    }

    #[test]
    fn conv_padding_modes() {
        let (out, r) = conv_program(Opset::Ios17, "same", &[1, 2, 5, 5], &[4, 2, 2, 2], &[2, 2]);
        assert!(out.codes().is_empty(), "{:?}", out.codes());
        assert_eq!(out.ty(r), Some(t16(&[1, 4, 3, 3])));
        assert_eq!(
            out.attrs(r),
            OpAttrs::Conv {
                strides: vec![2, 2],
                pads_before: vec![0, 0],
                pads_after: vec![1, 1],
                dilations: vec![1, 1],
                groups: 1,
                has_bias: false
            }
        );
        let (out, r) = conv_program(
            Opset::Ios17,
            "same_lower",
            &[1, 2, 5, 5],
            &[4, 2, 2, 2],
            &[2, 2],
        );
        let OpAttrs::Conv {
            pads_before,
            pads_after,
            ..
        } = out.attrs(r)
        else {
            panic!()
        };
        assert_eq!((pads_before, pads_after), (vec![1, 1], vec![0, 0]));
        let (out, r) = conv_program(Opset::Ios18, "valid", &[1, 2, 5], &[4, 2, 3], &[1]);
        assert_eq!(out.ty(r), Some(t16(&[1, 4, 3])));
        let (out, _) = conv_program(
            Opset::Ios16,
            "same_lower",
            &[1, 2, 5, 5],
            &[4, 2, 2, 2],
            &[2, 2],
        );
        assert_eq!(out.codes(), vec!["E125"]);
        let (out, _) = conv_program(Opset::Ios17, "valid", &[1, 2, 5, 5], &[4, 2, 2, 2], &[2]);
        assert_eq!(out.codes(), vec!["E122"]);
        let (out, _) = conv_program(Opset::Ios17, "valid", &[1, 2, 1, 1], &[4, 2, 2, 2], &[1, 1]);
        assert_eq!(out.codes(), vec!["E122"]);
    }

    #[test]
    fn conv_groups_and_dynamic_weight() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[1, 8, 1, 16]));
        let w = b.param("w", t16(&[8, 2, 1, 1]));
        let g = b.int(4);
        let r = b.op(OpKind::Conv, &[("x", x), ("weight", w), ("groups", g)]);
        let g3 = b.int(3);
        b.op(OpKind::Conv, &[("x", x), ("weight", w), ("groups", g3)]);
        let dl = b.ints(&[2, 2]);
        b.op(
            OpKind::Conv,
            &[("x", x), ("weight", w), ("groups", g), ("dilations", dl)],
        );
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[1, 8, 1, 16])));
        assert_eq!(out.codes(), vec!["E122", "E125"]);
        let OpAttrs::Conv { groups, .. } = out.attrs(r) else {
            panic!()
        };
        assert_eq!(groups, 4);
    }

    #[test]
    fn conv_bias_constness_by_opset() {
        for (opset, expected) in [(Opset::Ios16, vec!["E124"]), (Opset::Ios17, vec![])] {
            let mut b = FnBuilder::new(opset);
            let x = b.param("x", t16(&[1, 2, 1, 4]));
            let bias = b.param("b", t16(&[3]));
            let w = b.lit(
                Tensor::from_f64s(TensorType::new(DType::Fp16, [3, 2, 1, 1]), &[0.0; 6]).unwrap(),
            );
            b.op(OpKind::Conv, &[("x", x), ("weight", w), ("bias", bias)]);
            assert_eq!(b.run().codes(), expected, "{opset}");
        }
    }
}
