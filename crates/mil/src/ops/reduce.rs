//! `softmax` and the reductions `reduce_sum`, `reduce_mean`, `reduce_max` (mil-spec 6.7, 6.8).
//!
//! * `softmax` (ios15): `x` fp16/fp32 (rank >= 1); `axis`: const int32 scalar, default -1 (E125
//!   out of range). Result: x's type.
//! * `reduce_*` (ios15): `x` in {fp16, fp32, int32}, rank >= 1 (E122); `axes`: const 1-d int32,
//!   default all axes, each in `[-rank, rank)`, no duplicates after normalisation (E125); an
//!   explicit empty list reduces nothing (coremltools' identity behaviour); `keep_dims`: const
//!   bool, default false. Result: reduced axes become 1 (keep_dims) or disappear; removing every
//!   axis gives a scalar.

use super::{Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes};
use crate::ir::{OpKind, Opset, TensorType};

const SOFTMAX_PARAMS: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::FLOAT),
    ParamSpec::new("axis", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Int(-1)),
];
const REDUCE_PARAMS: &[ParamSpec] = &[
    ParamSpec::new("x", dtypes::NUMERIC),
    ParamSpec::new("axes", dtypes::INT32)
        .konst()
        .opt(DefaultValue::Rule("all axes")),
    ParamSpec::new("keep_dims", dtypes::BOOL)
        .konst()
        .opt(DefaultValue::Bool(false)),
];

macro_rules! sig {
    ($kind:ident, $params:expr) => {
        &[OpSignature {
            kind: OpKind::$kind,
            introduced: Opset::Ios15,
            params: $params,
            variadic: None,
            results: ResultCount::One,
        }]
    };
}

const SOFTMAX: &[OpSignature] = sig!(Softmax, SOFTMAX_PARAMS);
const REDUCE_SUM: &[OpSignature] = sig!(ReduceSum, REDUCE_PARAMS);
const REDUCE_MEAN: &[OpSignature] = sig!(ReduceMean, REDUCE_PARAMS);
const REDUCE_MAX: &[OpSignature] = sig!(ReduceMax, REDUCE_PARAMS);

/// The versions of softmax and the reductions.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Softmax => SOFTMAX,
        OpKind::ReduceSum => REDUCE_SUM,
        OpKind::ReduceMean => REDUCE_MEAN,
        OpKind::ReduceMax => REDUCE_MAX,
        _ => unreachable!("invariant: reduce::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    cx.require_rank("x", &x, |rank| rank >= 1, "rank >= 1")?;
    if cx.kind() == OpKind::Softmax {
        let axis = cx.int("axis")?.unwrap_or(-1);
        let axis = cx.axis("axis", axis, x.rank())?;
        return Ok((OpAttrs::Softmax { axis }, vec![x]));
    }
    let mut axes = match cx.ints("axes")? {
        Some(axes) => cx.axes("axes", &axes, x.rank())?,
        None => (0..x.rank()).collect(),
    };
    axes.sort_unstable();
    let keep_dims = cx.boolean("keep_dims", false)?;
    let shape: Vec<usize> = if keep_dims {
        x.shape
            .iter()
            .enumerate()
            .map(|(idx, &dim)| if axes.contains(&idx) { 1 } else { dim })
            .collect()
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(idx, _)| !axes.contains(idx))
            .map(|(_, &dim)| dim)
            .collect()
    };
    Ok((
        OpAttrs::Reduce { axes, keep_dims },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use crate::ir::{OpKind, Opset};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn reductions() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[1, 768, 1, 256]));
        let ax = b.ints(&[1]);
        let yes = b.boolean(true);
        let keep = b.op(
            OpKind::ReduceSum,
            &[("x", x), ("axes", ax), ("keep_dims", yes)],
        );
        let drop = b.op(OpKind::ReduceMean, &[("x", x), ("axes", ax)]);
        let all = b.op(OpKind::ReduceMax, &[("x", x)]);
        let neg = b.ints(&[-1, 0]);
        let two = b.op(OpKind::ReduceSum, &[("x", x), ("axes", neg)]);
        let out = b.run();
        assert!(out.codes().is_empty(), "{:?}", out.codes());
        assert_eq!(out.ty(keep), Some(t16(&[1, 1, 1, 256])));
        assert_eq!(out.ty(drop), Some(t16(&[1, 1, 256])));
        assert_eq!(out.ty(all), Some(t16(&[])));
        assert_eq!(out.ty(two), Some(t16(&[768, 1])));
        assert_eq!(
            out.attrs(two),
            OpAttrs::Reduce {
                axes: vec![0, 3],
                keep_dims: false
            }
        );
    }

    #[test]
    fn bad_axes() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[2, 3]));
        let dup = b.ints(&[1, -1]);
        let far = b.ints(&[2]);
        let three = b.int(3);
        b.op(OpKind::ReduceSum, &[("x", x), ("axes", dup)]);
        b.op(OpKind::ReduceSum, &[("x", x), ("axes", far)]);
        b.op(OpKind::Softmax, &[("x", x), ("axis", three)]);
        b.op(OpKind::Softmax, &[("x", x), ("axis", far)]);
        assert_eq!(b.run().codes(), vec!["E125", "E125", "E125", "E122"]);
    }

    #[test]
    fn softmax_default_axis() {
        let mut b = FnBuilder::new(Opset::Ios15);
        let x = b.param("x", t16(&[1, 12, 256, 256]));
        let s = b.op(OpKind::Softmax, &[("x", x)]);
        let out = b.run();
        assert_eq!(out.attrs(s), OpAttrs::Softmax { axis: 3 });
        assert_eq!(out.ty(s), Some(t16(&[1, 12, 256, 256])));
    }
}
