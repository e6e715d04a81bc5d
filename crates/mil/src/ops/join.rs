//! Joining and splitting: `concat`, `split`, `tile` (mil-spec 6.14). One ios15 version each.
//!
//! * `concat`: `values`, a tuple of one or more tensors (E113 if empty, E115 if not a tuple), one
//!   dtype T in {fp16, fp32, int32, bool} (E121), the same rank >= 1 (E122), equal dims except
//!   on `axis` (E122; with `interleave` all shapes equal); `axis`: const int32 (E125 out of
//!   range); `interleave`: const bool, default false. Result size on axis = the sum.
//! * `split`: `x` (T as above); `axis` const int32; `num_splits` const int32 and/or
//!   `split_sizes` const 1-d int32, at least one of them (E113). `num_splits` alone must divide
//!   `x.shape[axis]` (E125); `split_sizes` must be positive, sum to `x.shape[axis]` and, with
//!   both given, have `num_splits` entries (E125). One result per part (E131 otherwise).
//! * `tile`: `x` (T as above); `reps` const 1-d int32 of length rank(x) (E122), each >= 1
//!   (E125). `out.shape[d] = x.shape[d] * reps[d]`.

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes, fmt_ints,
    fmt_shape,
};
use crate::diag::DiagCode;
use crate::ir::{OpKind, Opset, TensorType};

const CONCAT: &[OpSignature] = &[OpSignature {
    kind: OpKind::Concat,
    introduced: Opset::Ios15,
    params: &[
        ParamSpec::new("values", dtypes::BASIC).dom("T").tuple(),
        ParamSpec::new("axis", dtypes::INT32).konst(),
        ParamSpec::new("interleave", dtypes::BOOL)
            .konst()
            .opt(DefaultValue::Bool(false)),
    ],
    variadic: Some("values"),
    results: ResultCount::One,
}];
const SPLIT: &[OpSignature] = &[OpSignature {
    kind: OpKind::Split,
    introduced: Opset::Ios15,
    params: &[
        ParamSpec::new("x", dtypes::BASIC),
        ParamSpec::new("num_splits", dtypes::INT32)
            .konst()
            .opt(DefaultValue::Absent),
        ParamSpec::new("split_sizes", dtypes::INT32)
            .konst()
            .opt(DefaultValue::Absent),
        ParamSpec::new("axis", dtypes::INT32).konst(),
    ],
    variadic: None,
    results: ResultCount::Variable,
}];
const TILE: &[OpSignature] = &[OpSignature {
    kind: OpKind::Tile,
    introduced: Opset::Ios15,
    params: &[
        ParamSpec::new("x", dtypes::BASIC),
        ParamSpec::new("reps", dtypes::INT32).konst(),
    ],
    variadic: None,
    results: ResultCount::One,
}];

/// The versions of concat, split and tile.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::Concat => CONCAT,
        OpKind::Split => SPLIT,
        OpKind::Tile => TILE,
        _ => unreachable!("invariant: join::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    match cx.kind() {
        OpKind::Concat => concat(cx),
        OpKind::Split => split(cx),
        _ => tile(cx),
    }
}

fn concat(cx: &mut Cx<'_>) -> RuleResult {
    let uses = cx
        .op
        .arg("values")
        .expect("values is required")
        .value
        .uses()
        .to_vec();
    let types: Vec<TensorType> = uses
        .iter()
        .map(|used| cx.ty_of_value(used.value).clone())
        .collect();
    let first = types[0].clone();
    if first.rank() == 0 {
        return Err(cx.fail(
            DiagCode::E122,
            uses[0].span,
            "'concat' values must have rank >= 1, got a scalar",
        ));
    }
    let axis = cx.int("axis")?.unwrap_or(0);
    let axis = cx.axis("axis", axis, first.rank())?;
    let interleave = cx.boolean("interleave", false)?;
    let mut total = 0;
    for (used, ty) in uses.iter().zip(&types) {
        let same_rank = ty.rank() == first.rank();
        let compatible = same_rank
            && ty
                .shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(dim, (a, b))| a == b || (dim == axis && !interleave));
        if !compatible {
            let why = if !same_rank {
                format!("rank {} differs from {}", ty.rank(), first.rank())
            } else if interleave {
                "with interleave all shapes must be equal".to_string()
            } else {
                format!("dims other than axis {axis} must match")
            };
            return Err(cx.fail(
                DiagCode::E122,
                used.span,
                format!(
                    "'concat' value {} does not fit {} ({why})",
                    fmt_shape(&ty.shape),
                    fmt_shape(&first.shape)
                ),
            ));
        }
        total += ty.shape[axis];
    }
    let mut shape = first.shape.clone();
    shape[axis] = total;
    Ok((
        OpAttrs::Concat { axis, interleave },
        vec![TensorType::new(first.dtype, shape)],
    ))
}

fn split(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    if !cx.has("num_splits") && !cx.has("split_sizes") {
        let span = cx.op_span();
        return Err(cx.fail(
            DiagCode::E113,
            span,
            "'split' needs num_splits or split_sizes",
        ));
    }
    cx.require_rank("x", &x, |rank| rank >= 1, "rank >= 1")?;
    let axis = cx.int("axis")?.unwrap_or(0);
    let axis = cx.axis("axis", axis, x.rank())?;
    let dim = x.shape[axis];
    let num_splits = cx.int("num_splits")?;
    let sizes: Vec<usize> = match cx.ints("split_sizes")? {
        Some(sizes) => {
            let span = cx.span("split_sizes");
            if sizes.iter().any(|&size| size < 1) {
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!(
                        "'split' split_sizes {} must all be at least 1",
                        fmt_ints(&sizes)
                    ),
                ));
            }
            let sum: i64 = sizes.iter().sum();
            if sum != dim as i64 {
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!(
                        "'split' split_sizes {} sum to {sum}, but x has {dim} on axis {axis}",
                        fmt_ints(&sizes)
                    ),
                ));
            }
            if let Some(count) = num_splits
                && count != sizes.len() as i64
            {
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!(
                        "'split' num_splits = {count} but split_sizes has {} entries",
                        sizes.len()
                    ),
                ));
            }
            sizes.iter().map(|&size| size as usize).collect()
        }
        None => {
            let count = num_splits.unwrap_or(1);
            if count < 1 || !dim.is_multiple_of(count as usize) {
                let span = cx.span("num_splits");
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!("'split' num_splits = {count} does not divide {dim} (x's size on axis {axis})"),
                ));
            }
            vec![dim / count as usize; count as usize]
        }
    };
    let types = sizes
        .iter()
        .map(|&size| {
            let mut shape = x.shape.clone();
            shape[axis] = size;
            TensorType::new(x.dtype, shape)
        })
        .collect();
    Ok((OpAttrs::Split { axis, sizes }, types))
}

fn tile(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let reps = cx.ints("reps")?.unwrap_or_default();
    if reps.len() != x.rank() {
        let span = cx.span("reps");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'tile' reps {} must have {} entries (rank of x)",
                fmt_ints(&reps),
                x.rank()
            ),
        ));
    }
    if let Some(bad) = reps.iter().find(|&&rep| rep < 1) {
        let span = cx.span("reps");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'tile' reps {} must all be at least 1, found {bad}",
                fmt_ints(&reps)
            ),
        ));
    }
    let reps: Vec<usize> = reps.iter().map(|&rep| rep as usize).collect();
    let Some(shape) = x
        .shape
        .iter()
        .zip(&reps)
        .map(|(&dim, &rep)| dim.checked_mul(rep))
        .collect::<Option<Vec<_>>>()
    else {
        let span = cx.span("reps");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!("'tile' reps {} overflow the result shape", fmt_shape(&reps)),
        ));
    };
    Ok((
        OpAttrs::Tile { reps },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use crate::ir::{OpKind, Opset};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn concat_rules() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let a = b.param("a", t16(&[1, 2, 1, 8]));
        let c = b.param("c", t16(&[1, 3, 1, 8]));
        let ax = b.int(1);
        let yes = b.boolean(true);
        let r = b.op_with(
            OpKind::Concat,
            &[A::T("values", &[a, c, a]), A::S("axis", ax)],
            1,
        )[0];
        b.op_with(
            OpKind::Concat,
            &[
                A::T("values", &[a, c]),
                A::S("axis", ax),
                A::S("interleave", yes),
            ],
            1,
        );
        let i = b.op_with(
            OpKind::Concat,
            &[
                A::T("values", &[a, a]),
                A::S("axis", ax),
                A::S("interleave", yes),
            ],
            1,
        )[0];
        b.op_with(OpKind::Concat, &[A::S("values", a), A::S("axis", ax)], 1);
        b.op_with(OpKind::Concat, &[A::T("values", &[]), A::S("axis", ax)], 1);
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[1, 7, 1, 8])));
        assert_eq!(out.ty(i), Some(t16(&[1, 4, 1, 8])));
        assert_eq!(
            out.attrs(i),
            OpAttrs::Concat {
                axis: 1,
                interleave: true
            }
        );
        assert_eq!(out.codes(), vec!["E122", "E115", "E113"]);
    }

    #[test]
    fn split_sizes() {
        let mut b = FnBuilder::new(Opset::Ios16);
        let x = b.param("x", t16(&[1, 10, 4]));
        let ax = b.int(1);
        let sizes = b.ints(&[3, 7]);
        let parts = b.op_with(
            OpKind::Split,
            &[A::S("x", x), A::S("split_sizes", sizes), A::S("axis", ax)],
            2,
        );
        let n = b.int(5);
        let five = b.op_with(
            OpKind::Split,
            &[A::S("x", x), A::S("num_splits", n), A::S("axis", ax)],
            5,
        );
        let three = b.int(3);
        b.op_with(
            OpKind::Split,
            &[A::S("x", x), A::S("num_splits", three), A::S("axis", ax)],
            3,
        );
        let bad = b.ints(&[3, 6]);
        b.op_with(
            OpKind::Split,
            &[A::S("x", x), A::S("split_sizes", bad), A::S("axis", ax)],
            2,
        );
        b.op_with(OpKind::Split, &[A::S("x", x), A::S("axis", ax)], 2);
        b.op_with(
            OpKind::Split,
            &[A::S("x", x), A::S("split_sizes", sizes), A::S("axis", ax)],
            3,
        );
        let out = b.run();
        assert_eq!(out.ty(parts[0]), Some(t16(&[1, 3, 4])));
        assert_eq!(out.ty(parts[1]), Some(t16(&[1, 7, 4])));
        assert_eq!(out.ty(five[4]), Some(t16(&[1, 2, 4])));
        assert_eq!(
            out.attrs(parts[0]),
            OpAttrs::Split {
                axis: 1,
                sizes: vec![3, 7]
            }
        );
        assert_eq!(out.codes(), vec!["E125", "E125", "E113", "E131"]);
    }

    #[test]
    fn tile_rules() {
        let mut b = FnBuilder::new(Opset::Ios15);
        let x = b.param("x", t16(&[2, 3]));
        let reps = b.ints(&[2, 1]);
        let r = b.op(OpKind::Tile, &[("x", x), ("reps", reps)]);
        let zero = b.ints(&[0, 1]);
        b.op(OpKind::Tile, &[("x", x), ("reps", zero)]);
        let short = b.ints(&[2]);
        b.op(OpKind::Tile, &[("x", x), ("reps", short)]);
        let huge = b.param("h", t16(&[1 << 40, 1]));
        let big = b.ints(&[1 << 30, 1]);
        b.op(OpKind::Tile, &[("x", huge), ("reps", big)]);
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[4, 3])));
        assert_eq!(out.codes(), vec!["E125", "E122", "E125"]);
    }
}
