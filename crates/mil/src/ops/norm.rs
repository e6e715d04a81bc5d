//! `layer_norm` (mil-spec 6.10).
//!
//! * ios15: `x` fp16/fp32; `axes`: const 1-d int32, default all axes (E125 out of range or
//!   duplicated); `gamma`, `beta`: const, optional (ones, zeros), shape
//!   `[x.shape[a] for a in sorted normalised axes]` (E122); `epsilon`: const scalar, default
//!   1e-5 rounded to x's dtype. gamma, beta and epsilon share x's dtype.
//! * ios17: gamma, beta and epsilon may have a float dtype different from x.
//! * Result: x's type. `out = (x - mean) / sqrt(var + eps) * gamma + beta` over the axes.

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes, fmt_shape,
    round_to,
};
use crate::diag::DiagCode;
use crate::ir::{OpKind, Opset};

/// Default epsilon of `layer_norm`.
pub const LAYER_NORM_EPS: f64 = 1e-5;

const PARAMS15: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("axes", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("all axes")),
    ParamSpec::new("gamma", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Rule("ones"))
        .dom("T"),
    ParamSpec::new("beta", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Rule("zeros"))
        .dom("T"),
    ParamSpec::new("epsilon", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Float(LAYER_NORM_EPS))
        .dom("T"),
];
const PARAMS17: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("axes", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("all axes")),
    ParamSpec::new("gamma", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Rule("ones"))
        .dom("U"),
    ParamSpec::new("beta", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Rule("zeros"))
        .dom("U"),
    ParamSpec::new("epsilon", dtypes::FLOAT)
        .konst()
        .opt(DefaultValue::Float(LAYER_NORM_EPS))
        .dom("U"),
];

/// The layer_norm versions.
pub const VERSIONS: &[OpSignature] = &[
    OpSignature {
        kind: OpKind::LayerNorm,
        introduced: Opset::Ios15,
        params: PARAMS15,
        variadic: None,
        results: ResultCount::One,
    },
    OpSignature {
        kind: OpKind::LayerNorm,
        introduced: Opset::Ios17,
        params: PARAMS17,
        variadic: None,
        results: ResultCount::One,
    },
];

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let mut axes = match cx.ints("axes")? {
        Some(axes) => cx.axes("axes", &axes, x.rank())?,
        None => (0..x.rank()).collect(),
    };
    axes.sort_unstable();
    let expected: Vec<usize> = axes.iter().map(|&axis| x.shape[axis]).collect();
    for name in ["gamma", "beta"] {
        if let Some(ty) = cx.ty(name)
            && ty.shape != expected
        {
            let span = cx.span(name);
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'layer_norm' {name} must have shape {} (x's sizes on the normalised axes), got {}",
                    fmt_shape(&expected),
                    fmt_shape(&ty.shape)
                ),
            ));
        }
    }
    let eps = match cx.float("epsilon")? {
        Some(eps) => eps,
        None => round_to(x.dtype, LAYER_NORM_EPS),
    };
    let has_gamma = cx.has("gamma");
    let has_beta = cx.has("beta");
    Ok((
        OpAttrs::LayerNorm {
            axes,
            eps,
            has_gamma,
            has_beta,
        },
        vec![x],
    ))
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, OpKind, Opset, Tensor};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn layer_norm_shapes_and_dtypes() {
        let mut b = FnBuilder::new(Opset::Ios17);
        let x = b.param("x", t16(&[2, 3, 4]));
        let axes = b.ints(&[-1, 1]);
        let gamma = b.lit(Tensor::from_f64s(tt(DType::Fp32, &[3, 4]), &[1.0; 12]).unwrap());
        let r = b.op(
            OpKind::LayerNorm,
            &[("x", x), ("axes", axes), ("gamma", gamma)],
        );
        let bad = b.lit(Tensor::from_f64s(tt(DType::Fp32, &[4, 3]), &[1.0; 12]).unwrap());
        b.op(
            OpKind::LayerNorm,
            &[("x", x), ("axes", axes), ("beta", bad)],
        );
        let out = b.run();
        assert_eq!(out.codes(), vec!["E122"]);
        assert_eq!(out.ty(r), Some(t16(&[2, 3, 4])));
        assert_eq!(
            out.attrs(r),
            OpAttrs::LayerNorm {
                axes: vec![1, 2],
                eps: half::f16::from_f64(1e-5).to_f64(),
                has_gamma: true,
                has_beta: false
            }
        );
        // ios15: fp32 gamma with fp16 x is E121.
        let mut b = FnBuilder::new(Opset::Ios15);
        let x = b.param("x", t16(&[2, 3]));
        let gamma = b.lit(Tensor::from_f64s(tt(DType::Fp32, &[2, 3]), &[1.0; 6]).unwrap());
        b.op(OpKind::LayerNorm, &[("x", x), ("gamma", gamma)]);
        assert_eq!(b.run().codes(), vec!["E121"]);
    }
}
