//! Quantization: `constexpr_affine_dequantize` (ios16+), `quantize` and `dequantize` (ios17+)
//! (mil-spec 6.2, 6.16), and the compile-time evaluation of the two dequantizing ops.
//!
//! * `constexpr_affine_dequantize`: every parameter const (serialised as attributes up to
//!   ios17, accepted as arguments too). `quantized_data` int8/uint8, rank >= 1; `zero_point`
//!   int8/uint8/fp32 and `scale` fp16/fp32, each rank 0 or 1 with a vector's length equal to
//!   `shape(quantized_data)[axis]` (E122); `axis` required const int32 (E125 out of range).
//!   Result `tensor<dtype(scale), shape(quantized_data)>`, always materialised:
//!   `scale[s(i)] * (q[i] - zero_point[z(i)])` in f32, rounded once to the scale's dtype.
//! * `quantize`: `input` fp16/fp32 rank >= 1; `scale` const, input's dtype (E121), rank 0 or 1,
//!   not all zero (E125); `zero_point` const optional, dtype = `output_dtype` (E121);
//!   `axis` const optional; `output_dtype` const string `"int8"` or `"uint8"` (E125). A scalar
//!   scale needs no axis (E125 if given) and a scalar zero point; a vector scale needs `axis`
//!   (E113), `len(scale) == input.shape[axis]` and a zero point of the same length (E122).
//!   Result `tensor<output_dtype, shape(input)>`.
//! * `dequantize`: `input` int8/uint8; `scale` const fp16/fp32; `zero_point` const optional with
//!   the input's dtype (E121); `axis` const optional; same scalar/vector rules as `quantize`.
//!   Result `tensor<dtype(scale), shape(input)>`; materialised when `input` is const
//!   (constness rule 3).

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, QuantParams, ResultCount, RuleResult,
    dtypes, fmt_shape,
};
use crate::diag::DiagCode;
use crate::ir::{DType, OpKind, Opset, Tensor, TensorType};
use std::sync::Arc;

const CONSTEXPR_ZERO_POINT: &[DType] = &[DType::Int8, DType::Uint8, DType::Fp32];

/// `constexpr_affine_dequantize` versions.
pub const CONSTEXPR_AFFINE_DEQUANTIZE: &[OpSignature] = &[OpSignature {
    kind: OpKind::ConstexprAffineDequantize,
    introduced: Opset::Ios16,
    params: &[
        ParamSpec::new("quantized_data", dtypes::QUANT).konst(),
        ParamSpec::new("zero_point", CONSTEXPR_ZERO_POINT).konst(),
        ParamSpec::new("scale", dtypes::FLOAT).konst(),
        ParamSpec::new("axis", dtypes::INT32).konst(),
    ],
    variadic: None,
    results: ResultCount::One,
}];

/// `quantize` versions.
pub const QUANTIZE: &[OpSignature] = &[OpSignature {
    kind: OpKind::Quantize,
    introduced: Opset::Ios17,
    params: &[
        ParamSpec::new("input", dtypes::FLOAT).dom("T"),
        ParamSpec::new("zero_point", dtypes::QUANT)
            .konst()
            .opt(DefaultValue::Absent),
        ParamSpec::new("scale", dtypes::FLOAT).konst().dom("T"),
        ParamSpec::new("axis", dtypes::INT32)
            .konst()
            .opt(DefaultValue::Absent),
        ParamSpec::new("output_dtype", dtypes::STRING).konst(),
    ],
    variadic: None,
    results: ResultCount::One,
}];

/// `dequantize` versions.
pub const DEQUANTIZE: &[OpSignature] = &[OpSignature {
    kind: OpKind::Dequantize,
    introduced: Opset::Ios17,
    params: &[
        ParamSpec::new("input", dtypes::QUANT).dom("S"),
        ParamSpec::new("zero_point", dtypes::QUANT)
            .konst()
            .opt(DefaultValue::Absent)
            .dom("S"),
        ParamSpec::new("scale", dtypes::FLOAT).konst(),
        ParamSpec::new("axis", dtypes::INT32)
            .konst()
            .opt(DefaultValue::Absent),
    ],
    variadic: None,
    results: ResultCount::One,
}];

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    match cx.kind() {
        OpKind::ConstexprAffineDequantize => constexpr_affine_dequantize(cx),
        OpKind::Quantize => quantize(cx),
        _ => dequantize(cx),
    }
}

/// Reads scale/zero point/axis for data of type `data`. `constexpr`: the axis is always given
/// and the two vectors are independent; otherwise the scalar/vector rules of quantize and
/// dequantize apply.
fn read_params(
    cx: &mut Cx<'_>,
    data: &TensorType,
    constexpr: bool,
) -> Result<QuantParams, super::Fail> {
    let kind = cx.kind();
    let scale = cx
        .konst("scale")
        .expect("invariant: scale is required and const");
    let zero_point = cx.konst("zero_point");
    for (name, tensor) in [("scale", Some(&scale)), ("zero_point", zero_point.as_ref())] {
        if let Some(tensor) = tensor
            && tensor.ty.rank() > 1
        {
            let span = cx.span(name);
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'{kind}' {name} must be a scalar or a 1-d tensor, got {}",
                    tensor.ty
                ),
            ));
        }
    }
    let axis = match cx.int("axis")? {
        Some(axis) => Some(cx.axis("axis", axis, data.rank())?),
        None => None,
    };
    let scale_vec = scale.ty.rank() == 1;
    let zero_vec = zero_point
        .as_ref()
        .is_some_and(|tensor| tensor.ty.rank() == 1);
    if !constexpr {
        if !scale_vec && axis.is_some() {
            let span = cx.span("axis");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!("'{kind}' axis must be absent when scale is a scalar"),
            ));
        }
        if scale_vec && axis.is_none() {
            let span = cx.op_span();
            return Err(cx.fail(
                DiagCode::E113,
                span,
                format!("'{kind}' needs axis when scale is a vector ({})", scale.ty),
            ));
        }
        if zero_point.is_some() && zero_vec != scale_vec {
            let span = cx.span("zero_point");
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'{kind}' zero_point must have the form of scale ({}), got {}",
                    scale.ty,
                    zero_point
                        .as_ref()
                        .map_or(String::new(), |z| z.ty.to_string())
                ),
            ));
        }
    }
    if let Some(axis) = axis {
        let expected = data.shape[axis];
        for (name, tensor) in [("scale", Some(&scale)), ("zero_point", zero_point.as_ref())] {
            if let Some(tensor) = tensor
                && tensor.ty.rank() == 1
                && tensor.ty.shape[0] != expected
            {
                let span = cx.span(name);
                return Err(cx.fail(
                    DiagCode::E122,
                    span,
                    format!(
                        "'{kind}' {name} has {} entries but the data has {expected} along axis {axis} ({})",
                        tensor.ty.shape[0],
                        fmt_shape(&data.shape)
                    ),
                ));
            }
        }
    }
    let values = |tensor: &Arc<Tensor>| tensor.to_f64_vec().unwrap_or_default();
    Ok(QuantParams {
        scale: values(&scale),
        zero_point: zero_point.as_ref().map_or_else(|| vec![0.0], values),
        axis: if constexpr || scale_vec { axis } else { None },
    })
}

/// `(q - zero_point) * scale` in f32 for every element of `data`, rounded once to `out_dtype`.
pub fn dequantize_tensor(data: &Tensor, params: &QuantParams, out_dtype: DType) -> Option<Tensor> {
    let n = data.ty.numel();
    let mut values = Vec::with_capacity(n);
    for idx in 0..n {
        let q = data.get_f64(idx)?;
        let (scale, zero) = params.at(&data.ty, idx);
        let value = (q as f32 - zero as f32) * scale as f32;
        values.push(f64::from(value));
    }
    Tensor::from_f64s(TensorType::new(out_dtype, data.ty.shape.clone()), &values).ok()
}

fn constexpr_affine_dequantize(cx: &mut Cx<'_>) -> RuleResult {
    let data_ty = cx.req_ty("quantized_data");
    cx.require_rank("quantized_data", &data_ty, |rank| rank >= 1, "rank >= 1")?;
    let params = read_params(cx, &data_ty, true)?;
    let out_dtype = cx.req_ty("scale").dtype;
    let ty = TensorType::new(out_dtype, data_ty.shape.clone());
    if !cx.options.materialise {
        return Ok((OpAttrs::ConstexprAffineDequantize { params }, vec![ty]));
    }
    let data = cx
        .konst("quantized_data")
        .expect("invariant: quantized_data is const");
    let Some(value) = dequantize_tensor(&data, &params, out_dtype) else {
        let span = cx.span("quantized_data");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            "'constexpr_affine_dequantize' cannot decode quantized_data",
        ));
    };
    cx.materialise(vec![value]);
    Ok((OpAttrs::ConstexprAffineDequantize { params }, vec![ty]))
}

fn quantize(cx: &mut Cx<'_>) -> RuleResult {
    let input = cx.req_ty("input");
    cx.require_rank("input", &input, |rank| rank >= 1, "rank >= 1")?;
    let name = cx.string("output_dtype")?.unwrap_or_default();
    let output_dtype = match name.as_str() {
        "int8" => DType::Int8,
        "uint8" => DType::Uint8,
        _ => {
            let span = cx.span("output_dtype");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!("'quantize' output_dtype \"{name}\" is not \"int8\" or \"uint8\""),
            ));
        }
    };
    if let Some(zero) = cx.ty("zero_point")
        && zero.dtype != output_dtype
    {
        let span = cx.span("zero_point");
        return Err(cx.fail(
            DiagCode::E121,
            span,
            format!(
                "'quantize' zero_point must have the output dtype {output_dtype}, got {}",
                zero.dtype
            ),
        ));
    }
    let params = read_params(cx, &input, false)?;
    if params.scale.iter().all(|&scale| scale == 0.0) {
        let span = cx.span("scale");
        return Err(cx.fail(DiagCode::E125, span, "'quantize' scale is all zero"));
    }
    Ok((
        OpAttrs::Quantize {
            params,
            output_dtype,
        },
        vec![TensorType::new(output_dtype, input.shape)],
    ))
}

fn dequantize(cx: &mut Cx<'_>) -> RuleResult {
    let input = cx.req_ty("input");
    let params = read_params(cx, &input, false)?;
    let out_dtype = cx.req_ty("scale").dtype;
    if cx.options.materialise
        && let Some(data) = cx.konst("input")
        && let Some(value) = dequantize_tensor(&data, &params, out_dtype)
    {
        cx.materialise(vec![value]);
    }
    Ok((
        OpAttrs::Dequantize { params },
        vec![TensorType::new(out_dtype, input.shape)],
    ))
}

#[cfg(test)]
mod tests {
    use super::dequantize_tensor;
    use crate::ir::{DType, OpKind, Opset, Tensor, TensorType};
    use crate::ops::testutil::*;
    use crate::ops::{OpAttrs, QuantParams};

    fn int8(shape: &[usize], values: &[i64]) -> Tensor {
        Tensor::from_i64s(TensorType::new(DType::Int8, shape), values).unwrap()
    }

    #[test]
    fn dequantize_per_axis() {
        let data = int8(&[2, 2], &[1, -2, 3, 4]);
        let params = QuantParams {
            scale: vec![0.5, 2.0],
            zero_point: vec![1.0, 0.0],
            axis: Some(0),
        };
        let out = dequantize_tensor(&data, &params, DType::Fp16).unwrap();
        assert_eq!(out.to_f64_vec().unwrap(), vec![0.0, -1.5, 6.0, 8.0]);
    }

    #[test]
    fn constexpr_is_materialised() {
        let mut b = FnBuilder::new(Opset::Ios16);
        let q = b.lit(int8(&[2, 3, 1, 1], &[1, 2, 3, -1, -2, -3]));
        let zp = b.lit(Tensor::from_i64s(TensorType::scalar(DType::Int8), &[0]).unwrap());
        let sc = b.float(DType::Fp16, 0.125);
        let ax = b.int(0);
        let r = b.op_with(
            OpKind::ConstexprAffineDequantize,
            &[
                A::Attr("quantized_data", q),
                A::Attr("zero_point", zp),
                A::Attr("scale", sc),
                A::Attr("axis", ax),
            ],
            1,
        )[0];
        let bogus = b.int(1);
        b.op_with(
            OpKind::ConstexprAffineDequantize,
            &[
                A::Attr("quantized_data", q),
                A::Attr("zero_point", zp),
                A::Attr("scale", sc),
                A::Attr("axis", ax),
                A::Attr("bogus", bogus),
            ],
            1,
        );
        let out = b.run();
        assert_eq!(out.codes(), vec!["E112"]);
        assert_eq!(out.ty(r), Some(t16(&[2, 3, 1, 1])));
        let value = out.konst(r).expect("materialised");
        assert_eq!(
            value.to_f64_vec().unwrap(),
            vec![0.125, 0.25, 0.375, -0.125, -0.25, -0.375]
        );
        // Not in ios15.
        let mut b = FnBuilder::new(Opset::Ios15);
        let q = b.lit(int8(&[2], &[1, 2]));
        let zp = b.lit(Tensor::from_i64s(TensorType::scalar(DType::Int8), &[0]).unwrap());
        let sc = b.float(DType::Fp16, 0.125);
        let ax = b.int(0);
        b.op_with(
            OpKind::ConstexprAffineDequantize,
            &[
                A::Attr("quantized_data", q),
                A::Attr("zero_point", zp),
                A::Attr("scale", sc),
                A::Attr("axis", ax),
            ],
            1,
        );
        assert_eq!(b.run().codes(), vec!["E111"]);
    }

    #[test]
    fn quantize_and_dequantize_rules() {
        let mut b = FnBuilder::new(Opset::Ios17);
        let x = b.param("x", t16(&[1, 4, 2, 2]));
        let sc = b.float(DType::Fp16, 0.125);
        let i8s = b.string("int8");
        let q = b.op(
            OpKind::Quantize,
            &[("input", x), ("scale", sc), ("output_dtype", i8s)],
        );
        let d = b.op(OpKind::Dequantize, &[("input", q), ("scale", sc)]);
        let vec4 = b.lit(Tensor::from_f64s(t16(&[4]), &[1.0, 2.0, 3.0, 4.0]).unwrap());
        b.op(
            OpKind::Quantize,
            &[("input", x), ("scale", vec4), ("output_dtype", i8s)],
        );
        let ax = b.int(1);
        let qv = b.op(
            OpKind::Quantize,
            &[
                ("input", x),
                ("scale", vec4),
                ("output_dtype", i8s),
                ("axis", ax),
            ],
        );
        let u8s = b.string("uint8");
        let zp = b.lit(Tensor::from_i64s(TensorType::scalar(DType::Int8), &[0]).unwrap());
        b.op(
            OpKind::Quantize,
            &[
                ("input", x),
                ("scale", sc),
                ("output_dtype", u8s),
                ("zero_point", zp),
            ],
        );
        let bad = b.string("int4");
        b.op(
            OpKind::Quantize,
            &[("input", x), ("scale", sc), ("output_dtype", bad)],
        );
        let out = b.run();
        assert_eq!(out.ty(q), Some(tt(DType::Int8, &[1, 4, 2, 2])));
        assert_eq!(out.ty(d), Some(t16(&[1, 4, 2, 2])));
        assert_eq!(out.konst(d), None);
        assert_eq!(
            out.attrs(qv),
            OpAttrs::Quantize {
                params: QuantParams {
                    scale: vec![1.0, 2.0, 3.0, 4.0],
                    zero_point: vec![0.0],
                    axis: Some(1)
                },
                output_dtype: DType::Int8
            }
        );
        assert_eq!(out.codes(), vec!["E113", "E121", "E125"]);
    }

    #[test]
    fn dequantize_of_const_is_const() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let q = b.lit(int8(&[3], &[2, 4, -6]));
        let sc = b.float(DType::Fp32, 0.5);
        let d = b.op(OpKind::Dequantize, &[("input", q), ("scale", sc)]);
        let out = b.run();
        assert!(out.codes().is_empty());
        assert_eq!(
            out.konst(d).unwrap().to_f64_vec().unwrap(),
            vec![1.0, 2.0, -3.0]
        );
        assert_eq!(out.ty(d), Some(tt(DType::Fp32, &[3])));
    }
}
