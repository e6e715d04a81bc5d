//! Shape manipulation: `reshape`, `transpose`, `expand_dims`, `squeeze` (mil-spec 6.12).
//!
//! All four have an ios15 version (x in {fp16, fp32, int32, bool}) and an ios17 version that
//! widens x to int8, uint8, int16, uint16. Data never changes, only the shape.
//!
//! * `reshape`: `shape` 1-d integer (ios17 also int8/int16), required const here (a static
//!   result shape needs its value: E124). Entries: positive sizes; at most one `-1` (inferred,
//!   must divide exactly: E122); `0` copies a dim of x — ios15/ios16 only when
//!   `len(shape) == rank(x)`, entry `j` copies `x.shape[j]` (E125 otherwise); ios17
//!   right-aligned, entry `j` copies `x.shape[rank - K + j]` or becomes 1. Zeros first, then
//!   `-1`. The element count must be preserved (E122).
//! * `transpose`: `perm` const int32 of length rank(x), a permutation after normalising
//!   negatives (E125). `out.shape[k] = x.shape[perm[k]]`.
//! * `expand_dims`: `axes` const int32, K >= 1 entries, each in `[-R, R)` with `R = rank + K`,
//!   no duplicates (E125); size-1 dims are inserted at the normalised axes of the result.
//! * `squeeze`: x rank >= 1; `axes` optional const int32 (E125 out of range/duplicated);
//!   without axes every size-1 dim goes; with axes only the listed dims of size 1 go (others
//!   are silently kept, as coremltools documents).

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes, fmt_ints,
    fmt_shape,
};
use crate::diag::DiagCode;
use crate::ir::{OpKind, Opset, TensorType};

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

const RESHAPE: &[OpSignature] = &[
    sig!(
        Reshape,
        Ios15,
        &[
            ParamSpec::new("x", dtypes::BASIC),
            ParamSpec::new("shape", dtypes::INT32).konst()
        ]
    ),
    sig!(
        Reshape,
        Ios17,
        &[
            ParamSpec::new("x", dtypes::BASIC17),
            ParamSpec::new("shape", dtypes::INDEX17).konst()
        ]
    ),
];
const TRANSPOSE: &[OpSignature] = &[
    sig!(
        Transpose,
        Ios15,
        &[
            ParamSpec::new("x", dtypes::BASIC),
            ParamSpec::new("perm", dtypes::INT32).konst()
        ]
    ),
    sig!(
        Transpose,
        Ios17,
        &[
            ParamSpec::new("x", dtypes::BASIC17),
            ParamSpec::new("perm", dtypes::INT32).konst()
        ]
    ),
];
const EXPAND_DIMS: &[OpSignature] = &[
    sig!(
        ExpandDims,
        Ios15,
        &[
            ParamSpec::new("x", dtypes::BASIC),
            ParamSpec::new("axes", dtypes::INT32).konst()
        ]
    ),
    sig!(
        ExpandDims,
        Ios17,
        &[
            ParamSpec::new("x", dtypes::BASIC17),
            ParamSpec::new("axes", dtypes::INT32).konst()
        ]
    ),
];
const SQUEEZE: &[OpSignature] = &[
    sig!(
        Squeeze,
        Ios15,
        &[
            ParamSpec::new("x", dtypes::BASIC),
            ParamSpec::new("axes", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Rule("every size-1 dim")),
        ]
    ),
    sig!(
        Squeeze,
        Ios17,
        &[
            ParamSpec::new("x", dtypes::BASIC17),
            ParamSpec::new("axes", dtypes::INT32)
                .konst()
                .opt(DefaultValue::Rule("every size-1 dim")),
        ]
    ),
];

/// The versions of the shape ops.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Reshape => RESHAPE,
        OpKind::Transpose => TRANSPOSE,
        OpKind::ExpandDims => EXPAND_DIMS,
        OpKind::Squeeze => SQUEEZE,
        _ => unreachable!("invariant: shape::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    match cx.kind() {
        OpKind::Reshape => reshape(cx, x),
        OpKind::Transpose => transpose(cx, x),
        OpKind::ExpandDims => expand_dims(cx, x),
        _ => squeeze(cx, x),
    }
}

/// The reshape rule on plain values: `Err((code, message))` on failure.
pub fn reshape_shape(
    x: &[usize],
    shape: &[i64],
    opset: Opset,
) -> Result<Vec<usize>, (DiagCode, String)> {
    let numel: usize = x.iter().product();
    let rank = x.len();
    let k = shape.len();
    if shape.iter().filter(|&&entry| entry == -1).count() > 1 {
        return Err((
            DiagCode::E125,
            format!("'reshape' shape {} has more than one -1", fmt_ints(shape)),
        ));
    }
    if let Some(bad) = shape.iter().find(|&&entry| entry < -1) {
        return Err((
            DiagCode::E125,
            format!(
                "'reshape' shape {} has a negative entry {bad}",
                fmt_ints(shape)
            ),
        ));
    }
    if shape.contains(&0) && opset < Opset::Ios17 && k != rank {
        return Err((
            DiagCode::E125,
            format!(
                "'reshape' shape {} uses 0 but has {k} entries for a rank-{rank} x; before ios17, 0 needs one entry per dim of x",
                fmt_ints(shape)
            ),
        ));
    }
    // Zeros first.
    let mut resolved: Vec<Option<usize>> = Vec::with_capacity(k);
    for (idx, &entry) in shape.iter().enumerate() {
        resolved.push(match entry {
            -1 => None,
            0 if opset < Opset::Ios17 => Some(x[idx]),
            0 => Some((idx + rank).checked_sub(k).map_or(1, |src| x[src])),
            positive => Some(positive as usize),
        });
    }
    let known: usize = resolved
        .iter()
        .flatten()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
        .unwrap_or(usize::MAX);
    let out: Vec<usize> = if resolved.contains(&None) {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err((
                DiagCode::E122,
                format!(
                    "'reshape' cannot infer -1 in {}: {numel} elements are not divisible by {known}",
                    fmt_ints(shape)
                ),
            ));
        }
        resolved
            .iter()
            .map(|dim| dim.unwrap_or(numel / known))
            .collect()
    } else {
        resolved.iter().map(|dim| dim.unwrap_or(1)).collect()
    };
    let total = out
        .iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
        .unwrap_or(usize::MAX);
    if total != numel {
        return Err((
            DiagCode::E122,
            format!(
                "'reshape' to {} changes the element count: x {} has {numel}, the result {total}",
                fmt_shape(&out),
                fmt_shape(x)
            ),
        ));
    }
    Ok(out)
}

fn reshape(cx: &mut Cx<'_>, x: TensorType) -> RuleResult {
    let shape = cx.ints("shape")?.unwrap_or_default();
    match reshape_shape(&x.shape, &shape, cx.opset) {
        Ok(out) => Ok((
            OpAttrs::Reshape { shape: out.clone() },
            vec![TensorType::new(x.dtype, out)],
        )),
        Err((code, message)) => {
            let span = cx.span("shape");
            Err(cx.fail(code, span, message))
        }
    }
}

fn transpose(cx: &mut Cx<'_>, x: TensorType) -> RuleResult {
    let perm = cx.ints("perm")?.unwrap_or_default();
    if perm.len() != x.rank() {
        let span = cx.span("perm");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'transpose' perm {} has {} entries for a rank-{} x",
                fmt_ints(&perm),
                perm.len(),
                x.rank()
            ),
        ));
    }
    let mut norm = Vec::with_capacity(perm.len());
    for &axis in &perm {
        let axis = cx.axis("perm", axis, x.rank())?;
        if norm.contains(&axis) {
            let span = cx.span("perm");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!(
                    "'transpose' perm {} is not a permutation (axis {axis} repeats)",
                    fmt_ints(&perm)
                ),
            ));
        }
        norm.push(axis);
    }
    let shape = norm.iter().map(|&axis| x.shape[axis]).collect::<Vec<_>>();
    Ok((
        OpAttrs::Transpose { perm: norm },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

fn expand_dims(cx: &mut Cx<'_>, x: TensorType) -> RuleResult {
    let axes = cx.ints("axes")?.unwrap_or_default();
    if axes.is_empty() {
        let span = cx.span("axes");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            "'expand_dims' axes must name at least one axis",
        ));
    }
    let out_rank = x.rank() + axes.len();
    let mut norm = cx.axes("axes", &axes, out_rank)?;
    norm.sort_unstable();
    let mut dims = x.shape.iter();
    let shape = (0..out_rank)
        .map(|idx| {
            if norm.contains(&idx) {
                1
            } else {
                *dims.next().expect("counts match")
            }
        })
        .collect::<Vec<_>>();
    Ok((
        OpAttrs::ExpandDims { axes: norm },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

fn squeeze(cx: &mut Cx<'_>, x: TensorType) -> RuleResult {
    cx.require_rank("x", &x, |rank| rank >= 1, "rank >= 1")?;
    let removed: Vec<usize> = match cx.ints("axes")? {
        Some(axes) => {
            let mut norm = cx.axes("axes", &axes, x.rank())?;
            norm.retain(|&axis| x.shape[axis] == 1);
            norm.sort_unstable();
            norm
        }
        None => (0..x.rank()).filter(|&axis| x.shape[axis] == 1).collect(),
    };
    let shape = (0..x.rank())
        .filter(|axis| !removed.contains(axis))
        .map(|axis| x.shape[axis])
        .collect::<Vec<_>>();
    Ok((
        OpAttrs::Squeeze { axes: removed },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use super::reshape_shape;
    use crate::diag::DiagCode;
    use crate::ir::{DType, OpKind, Opset};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn reshape_zero_semantics_by_opset() {
        // ios17 example from the spec: x [2, 50], shape [1, 0, -1, 0] -> [1, 1, 2, 50].
        assert_eq!(
            reshape_shape(&[2, 50], &[1, 0, -1, 0], Opset::Ios17),
            Ok(vec![1, 1, 2, 50])
        );
        // ios16: 0 needs one entry per dim.
        assert_eq!(
            reshape_shape(&[2, 50], &[1, 0, -1, 0], Opset::Ios16).map_err(|e| e.0),
            Err(DiagCode::E125)
        );
        assert_eq!(
            reshape_shape(&[2, 50], &[0, -1], Opset::Ios16),
            Ok(vec![2, 50])
        );
        // ios17 right-aligned copy with K == rank is the same as ios16.
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, -1, 0], Opset::Ios17),
            Ok(vec![2, 3, 4])
        );
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, 12], Opset::Ios17).map_err(|e| e.0),
            Err(DiagCode::E122)
        );
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, 12], Opset::Ios16)
                .map(|_| ())
                .map_err(|e| e.0),
            Err(DiagCode::E125)
        );
        assert_eq!(
            reshape_shape(&[1, 768, 1, 256], &[1, 12, 64, 256], Opset::Ios18),
            Ok(vec![1, 12, 64, 256])
        );
        assert_eq!(
            reshape_shape(&[6], &[-1, -1], Opset::Ios18).map_err(|e| e.0),
            Err(DiagCode::E125)
        );
        assert_eq!(
            reshape_shape(&[6], &[4, -1], Opset::Ios18).map_err(|e| e.0),
            Err(DiagCode::E122)
        );
        assert_eq!(
            reshape_shape(&[6], &[4, 2], Opset::Ios18).map_err(|e| e.0),
            Err(DiagCode::E122)
        );
        assert_eq!(reshape_shape(&[1], &[], Opset::Ios18), Ok(vec![]));
    }

    #[test]
    fn reshape_zero_copies_right_aligned_dims() {
        // x [2, 3, 4] with shape [0, 8] in ios17: entry 0 copies x.shape[3 - 2 + 0] = 3.
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, 8], Opset::Ios17),
            Ok(vec![3, 8])
        );
    }

    #[test]
    fn reshape_needs_const_shape() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[2, 3]));
        let s = b.param("s", tt(DType::Int32, &[2]));
        b.op(OpKind::Reshape, &[("x", x), ("shape", s)]);
        let out = b.run();
        assert_eq!(out.codes(), vec!["E124"]);
        assert_eq!(out.diags[0].secondary.len(), 1);
    }

    #[test]
    fn transpose_expand_squeeze() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[1, 768, 1, 256]));
        let pm = b.ints(&[0, 1, 3, -2]);
        let t = b.op(OpKind::Transpose, &[("x", x), ("perm", pm)]);
        let bad = b.ints(&[0, 1, 1, 2]);
        b.op(OpKind::Transpose, &[("x", x), ("perm", bad)]);
        let ax = b.ints(&[0, -1]);
        let e = b.op(OpKind::ExpandDims, &[("x", x), ("axes", ax)]);
        let s = b.op(OpKind::Squeeze, &[("x", x)]);
        let sq = b.ints(&[0, 1]);
        let s2 = b.op(OpKind::Squeeze, &[("x", x), ("axes", sq)]);
        let out = b.run();
        assert_eq!(out.codes(), vec!["E125"]);
        assert_eq!(out.ty(t), Some(t16(&[1, 768, 256, 1])));
        assert_eq!(
            out.attrs(t),
            OpAttrs::Transpose {
                perm: vec![0, 1, 3, 2]
            }
        );
        assert_eq!(out.ty(e), Some(t16(&[1, 1, 768, 1, 256, 1])));
        assert_eq!(out.attrs(e), OpAttrs::ExpandDims { axes: vec![0, 5] });
        assert_eq!(out.ty(s), Some(t16(&[768, 256])));
        assert_eq!(out.ty(s2), Some(t16(&[768, 1, 256])));
        assert_eq!(out.attrs(s2), OpAttrs::Squeeze { axes: vec![0] });
    }
}
