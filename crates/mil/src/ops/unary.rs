//! Elementwise unary ops (mil-spec 6.5).
//!
//! Result: the shape and dtype of `x`.
//!
//! | Op | x dtypes | Versions | Parameters |
//! |---|---|---|---|
//! | `abs`, `square` | fp16, fp32, int32 | ios15 | — |
//! | `sqrt`, `exp`, `erf`, `tanh`, `sigmoid`, `relu`, `silu` | fp16, fp32 | ios15 | — |
//! | `rsqrt`, `log`, `inverse` | fp16, fp32 | ios15, ios17 | `epsilon`: const scalar, optional; ios15 dtype = x's, ios17 fp16 or fp32 independently. Defaults 1e-12, 1e-45, 1e-4, rounded to x's dtype |
//! | `gelu` | fp16, fp32 | ios15 | `mode`: const string, default `"EXACT"`; `"TANH_APPROXIMATION"`, `"SIGMOID_APPROXIMATION"` (E125 otherwise) |
//! | `clip` | fp16, fp32 | ios15, ios17 | `alpha`, `beta`: const scalars; ios15 dtype = x's, ios17 independent floats; ios17 requires `alpha < beta` (E125) |

use super::{
    Cx, DefaultValue, GeluMode, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes,
    round_to,
};
use crate::diag::DiagCode;
use crate::ir::{OpKind, Opset};

const X_NUMERIC: &[ParamSpec] = &[ParamSpec::new("x", dtypes::NUMERIC).dom("T")];
const X_FLOAT: &[ParamSpec] = &[ParamSpec::new("x", dtypes::FLOAT).dom("T")];

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

const fn eps15(default: f64) -> [ParamSpec; 2] {
    [
        ParamSpec::new("x", dtypes::FLOAT).dom("T"),
        ParamSpec::new("epsilon", dtypes::FLOAT)
            .konst()
            .opt(DefaultValue::Float(default))
            .dom("T"),
    ]
}

const fn eps17(default: f64) -> [ParamSpec; 2] {
    [
        ParamSpec::new("x", dtypes::FLOAT).dom("T"),
        ParamSpec::new("epsilon", dtypes::FLOAT)
            .konst()
            .opt(DefaultValue::Float(default)),
    ]
}

/// Default epsilon of `rsqrt`.
pub const RSQRT_EPS: f64 = 1e-12;
/// Default epsilon of `log`.
pub const LOG_EPS: f64 = 1e-45;
/// Default epsilon of `inverse`.
pub const INVERSE_EPS: f64 = 1e-4;

const RSQRT15: [ParamSpec; 2] = eps15(RSQRT_EPS);
const RSQRT17: [ParamSpec; 2] = eps17(RSQRT_EPS);
const LOG15: [ParamSpec; 2] = eps15(LOG_EPS);
const LOG17: [ParamSpec; 2] = eps17(LOG_EPS);
const INVERSE15: [ParamSpec; 2] = eps15(INVERSE_EPS);
const INVERSE17: [ParamSpec; 2] = eps17(INVERSE_EPS);

const GELU: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("mode", dtypes::STRING)
        .konst()
        .opt(DefaultValue::Str("EXACT")),
];
const CLIP15: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("alpha", dtypes::FLOAT).konst().dom("T"),
    ParamSpec::new("beta", dtypes::FLOAT).konst().dom("T"),
];
const CLIP17: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT).dom("T"),
    ParamSpec::new("alpha", dtypes::FLOAT).konst(),
    ParamSpec::new("beta", dtypes::FLOAT).konst(),
];

const ABS: &[OpSignature] = &[sig!(Abs, Ios15, X_NUMERIC)];
const SQUARE: &[OpSignature] = &[sig!(Square, Ios15, X_NUMERIC)];
const SQRT: &[OpSignature] = &[sig!(Sqrt, Ios15, X_FLOAT)];
const EXP: &[OpSignature] = &[sig!(Exp, Ios15, X_FLOAT)];
const ERF: &[OpSignature] = &[sig!(Erf, Ios15, X_FLOAT)];
const TANH: &[OpSignature] = &[sig!(Tanh, Ios15, X_FLOAT)];
const SIGMOID: &[OpSignature] = &[sig!(Sigmoid, Ios15, X_FLOAT)];
const RELU: &[OpSignature] = &[sig!(Relu, Ios15, X_FLOAT)];
const SILU: &[OpSignature] = &[sig!(Silu, Ios15, X_FLOAT)];
const RSQRT: &[OpSignature] = &[sig!(Rsqrt, Ios15, &RSQRT15), sig!(Rsqrt, Ios17, &RSQRT17)];
const LOG: &[OpSignature] = &[sig!(Log, Ios15, &LOG15), sig!(Log, Ios17, &LOG17)];
const INVERSE: &[OpSignature] = &[
    sig!(Inverse, Ios15, &INVERSE15),
    sig!(Inverse, Ios17, &INVERSE17),
];
const GELU_VERSIONS: &[OpSignature] = &[sig!(Gelu, Ios15, GELU)];
const CLIP: &[OpSignature] = &[sig!(Clip, Ios15, CLIP15), sig!(Clip, Ios17, CLIP17)];

/// The versions of a unary op.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Abs => ABS,
        OpKind::Square => SQUARE,
        OpKind::Sqrt => SQRT,
        OpKind::Exp => EXP,
        OpKind::Erf => ERF,
        OpKind::Tanh => TANH,
        OpKind::Sigmoid => SIGMOID,
        OpKind::Relu => RELU,
        OpKind::Silu => SILU,
        OpKind::Rsqrt => RSQRT,
        OpKind::Log => LOG,
        OpKind::Inverse => INVERSE,
        OpKind::Gelu => GELU_VERSIONS,
        OpKind::Clip => CLIP,
        _ => unreachable!("invariant: unary::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let attrs = match cx.kind() {
        OpKind::Rsqrt | OpKind::Log | OpKind::Inverse => {
            let default = match cx.kind() {
                OpKind::Rsqrt => RSQRT_EPS,
                OpKind::Log => LOG_EPS,
                _ => INVERSE_EPS,
            };
            let eps = match cx.float("epsilon")? {
                Some(eps) => eps,
                None => round_to(x.dtype, default),
            };
            OpAttrs::Epsilon { eps }
        }
        OpKind::Gelu => {
            let mode = match cx.string("mode")?.as_deref() {
                None | Some("EXACT") => GeluMode::Exact,
                Some("TANH_APPROXIMATION") => GeluMode::TanhApproximation,
                Some("SIGMOID_APPROXIMATION") => GeluMode::SigmoidApproximation,
                Some(other) => {
                    let span = cx.span("mode");
                    return Err(cx.fail(
                        DiagCode::E125,
                        span,
                        format!(
                            "'gelu' mode \"{other}\" is not one of \"EXACT\", \"TANH_APPROXIMATION\" or \"SIGMOID_APPROXIMATION\""
                        ),
                    ));
                }
            };
            OpAttrs::Gelu { mode }
        }
        OpKind::Clip => {
            let alpha = cx.float("alpha")?.unwrap_or(f64::NEG_INFINITY);
            let beta = cx.float("beta")?.unwrap_or(f64::INFINITY);
            if cx.opset >= Opset::Ios17 && alpha >= beta {
                let span = cx.span("beta");
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!(
                        "'clip' requires alpha < beta in {}, got alpha = {alpha}, beta = {beta}",
                        cx.opset
                    ),
                ));
            }
            OpAttrs::Clip { alpha, beta }
        }
        _ => OpAttrs::Unary,
    };
    Ok((attrs, vec![x]))
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, OpKind, Opset};
    use crate::ops::testutil::*;
    use crate::ops::{GeluMode, OpAttrs};

    #[test]
    fn epsilon_defaults_round_to_x_dtype() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x16 = b.param("x", t16(&[4]));
        let x32 = b.param("y", tt(DType::Fp32, &[4]));
        let r16 = b.op(OpKind::Rsqrt, &[("x", x16)]);
        let r32 = b.op(OpKind::Rsqrt, &[("x", x32)]);
        let inv = b.op(OpKind::Inverse, &[("x", x16)]);
        let e32 = b.float(DType::Fp32, 0.5);
        let lg = b.op(OpKind::Log, &[("x", x16), ("epsilon", e32)]);
        let out = b.run();
        assert!(out.codes().is_empty(), "{:?}", out.codes());
        assert_eq!(out.ty(r16), Some(t16(&[4])));
        assert_eq!(out.attrs(r16), OpAttrs::Epsilon { eps: 0.0 });
        assert_eq!(
            out.attrs(r32),
            OpAttrs::Epsilon {
                eps: f64::from(1e-12f32)
            }
        );
        assert_eq!(
            out.attrs(inv),
            OpAttrs::Epsilon {
                eps: half::f16::from_f64(1e-4).to_f64()
            }
        );
        assert_eq!(out.attrs(lg), OpAttrs::Epsilon { eps: 0.5 });
    }

    #[test]
    fn ios15_epsilon_shares_x_dtype() {
        let mut b = FnBuilder::new(Opset::Ios15);
        let x = b.param("x", t16(&[4]));
        let e32 = b.float(DType::Fp32, 0.5);
        b.op(OpKind::Log, &[("x", x), ("epsilon", e32)]);
        assert_eq!(b.run().codes(), vec!["E121"]);
    }

    #[test]
    fn gelu_modes_and_clip_bounds() {
        let mut b = FnBuilder::new(Opset::Ios17);
        let x = b.param("x", t16(&[2]));
        let tanh = b.string("TANH_APPROXIMATION");
        let bad = b.string("FAST");
        let g = b.op(OpKind::Gelu, &[("x", x), ("mode", tanh)]);
        let g0 = b.op(OpKind::Gelu, &[("x", x)]);
        b.op(OpKind::Gelu, &[("x", x), ("mode", bad)]);
        let lo = b.float(DType::Fp16, 1.0);
        let hi = b.float(DType::Fp16, 0.0);
        b.op(OpKind::Clip, &[("x", x), ("alpha", lo), ("beta", hi)]);
        let c = b.op(OpKind::Clip, &[("x", x), ("alpha", hi), ("beta", lo)]);
        let out = b.run();
        assert_eq!(out.codes(), vec!["E125", "E125"]);
        assert_eq!(
            out.attrs(g),
            OpAttrs::Gelu {
                mode: GeluMode::TanhApproximation
            }
        );
        assert_eq!(
            out.attrs(g0),
            OpAttrs::Gelu {
                mode: GeluMode::Exact
            }
        );
        assert_eq!(
            out.attrs(c),
            OpAttrs::Clip {
                alpha: 0.0,
                beta: 1.0
            }
        );
    }

    #[test]
    fn clip_alpha_above_beta_is_fine_before_ios17() {
        let mut b = FnBuilder::new(Opset::Ios16);
        let x = b.param("x", t16(&[2]));
        let lo = b.float(DType::Fp16, 1.0);
        let hi = b.float(DType::Fp16, 0.0);
        b.op(OpKind::Clip, &[("x", x), ("alpha", lo), ("beta", hi)]);
        assert!(b.run().codes().is_empty());
    }

    #[test]
    fn int_abs_but_not_int_exp() {
        let mut b = FnBuilder::new(Opset::Ios15);
        let i = b.param("i", tt(DType::Int32, &[3]));
        let a = b.op(OpKind::Abs, &[("x", i)]);
        b.op(OpKind::Exp, &[("x", i)]);
        let out = b.run();
        assert_eq!(out.ty(a), Some(tt(DType::Int32, &[3])));
        assert_eq!(out.codes(), vec!["E120"]);
    }
}
