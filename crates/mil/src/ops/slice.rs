//! Slicing: `slice_by_size`, `slice_by_index` (mil-spec 6.13).
//!
//! Both have an ios15 version (x in {fp16, fp32, int32, bool}, index operands int32) and an
//! ios17 version (x also int8/uint8/int16/uint16, index operands int8/int16/int32).
//!
//! * `slice_by_size`: `begin`, `size` 1-d of length rank(x) (E122). `size` must be const (a
//!   static result shape); `begin` may be a runtime value (then bounds are checked at run time,
//!   R003, and no `size` entry may be -1: E124). Per dim of size `n`: `b = begin[d]` (+n if
//!   negative), `0 <= b <= n`; `s = size[d]`, `-1` meaning "to the end"; `s >= 1` and
//!   `b + s <= n` (E125). Result shape: the sizes.
//! * `slice_by_index`: `begin`, `end` const 1-d of length rank(x) (required const here for a
//!   static shape); `stride` const, default ones, never 0; `begin_mask`, `end_mask`,
//!   `squeeze_mask` const bool lists, default all false (E122 on a wrong length). Python slice
//!   semantics per dim; a squeezed dim selects the single element at `begin` (in `[0, n)` after
//!   normalising, E125) and disappears. A slice with no elements is E125 (zero-size dims are
//!   not supported).

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, Operand, ParamSpec, ResultCount, RuleResult, dtypes,
    fmt_ints,
};
use crate::diag::{DiagCode, Diagnostic};
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

const fn by_index(x: &'static [DType], index: &'static [DType]) -> [ParamSpec; 7] {
    [
        ParamSpec::new("x", x),
        ParamSpec::new("begin", index).konst(),
        ParamSpec::new("end", index).konst(),
        ParamSpec::new("stride", index)
            .konst()
            .opt(DefaultValue::Rule("ones")),
        ParamSpec::new("begin_mask", dtypes::BOOL)
            .konst()
            .opt(DefaultValue::Rule("all false")),
        ParamSpec::new("end_mask", dtypes::BOOL)
            .konst()
            .opt(DefaultValue::Rule("all false")),
        ParamSpec::new("squeeze_mask", dtypes::BOOL)
            .konst()
            .opt(DefaultValue::Rule("all false")),
    ]
}

const BY_INDEX15: [ParamSpec; 7] = by_index(dtypes::BASIC, dtypes::INT32);
const BY_INDEX17: [ParamSpec; 7] = by_index(dtypes::BASIC17, dtypes::INDEX17);

const SLICE_BY_SIZE: &[OpSignature] = &[
    sig!(
        SliceBySize,
        Ios15,
        &[
            ParamSpec::new("x", dtypes::BASIC),
            ParamSpec::new("begin", dtypes::INT32),
            ParamSpec::new("size", dtypes::INT32).konst(),
        ]
    ),
    sig!(
        SliceBySize,
        Ios17,
        &[
            ParamSpec::new("x", dtypes::BASIC17),
            ParamSpec::new("begin", dtypes::INDEX17),
            ParamSpec::new("size", dtypes::INDEX17).konst(),
        ]
    ),
];
const SLICE_BY_INDEX: &[OpSignature] = &[
    sig!(SliceByIndex, Ios15, &BY_INDEX15),
    sig!(SliceByIndex, Ios17, &BY_INDEX17),
];

/// The versions of the slicing ops.
pub(crate) fn versions(kind: OpKind) -> &'static [OpSignature] {
    match kind {
        OpKind::SliceBySize => SLICE_BY_SIZE,
        OpKind::SliceByIndex => SLICE_BY_INDEX,
        _ => unreachable!("invariant: slice::versions called for {kind}"),
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    if cx.kind() == OpKind::SliceBySize {
        by_size(cx, x)
    } else {
        by_index_rule(cx, x)
    }
}

fn check_len(cx: &mut Cx<'_>, name: &str, ty: &TensorType, rank: usize) -> Result<(), super::Fail> {
    if ty.shape == [rank] || (rank == 0 && ty.shape == [0]) {
        return Ok(());
    }
    let kind = cx.kind();
    let span = cx.span(name);
    Err(cx.fail(
        DiagCode::E122,
        span,
        format!(
            "'{kind}' {name} must be a 1-d tensor with {rank} entries (one per dim of x), got {ty}"
        ),
    ))
}

fn by_size(cx: &mut Cx<'_>, x: TensorType) -> RuleResult {
    let rank = x.rank();
    let begin_ty = cx.req_ty("begin");
    check_len(cx, "begin", &begin_ty, rank)?;
    let size_ty = cx.req_ty("size");
    check_len(cx, "size", &size_ty, rank)?;
    let size = cx.ints("size")?.unwrap_or_default();
    if let Some(bad) = size.iter().find(|&&entry| entry == 0 || entry < -1) {
        let span = cx.span("size");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'slice_by_size' size {} has entry {bad}; sizes are -1 or at least 1",
                fmt_ints(&size)
            ),
        ));
    }
    let begin_use = cx.use_of("begin").expect("begin is required");
    let Some(begin_tensor) = cx.konst_of_value(begin_use.value) else {
        if size.contains(&-1) {
            let description = cx.describe(begin_use.value);
            let diag = cx.with_origin(Diagnostic::new(
                DiagCode::E124,
                begin_use.span,
                format!(
                    "'slice_by_size' size {} uses -1, which needs a const begin, but {description} is not const",
                    fmt_ints(&size)
                ),
            ), begin_use.value, begin_use.span);
            return Err(cx.fail_with(diag));
        }
        let shape: Vec<usize> = size.iter().map(|&entry| entry as usize).collect();
        return Ok((
            OpAttrs::SliceBySize {
                begin: Operand::Dynamic(begin_use.value),
                size: shape.clone(),
            },
            vec![TensorType::new(x.dtype, shape)],
        ));
    };
    let begin = begin_tensor.to_i64_vec().unwrap_or_default();
    let mut starts = Vec::with_capacity(rank);
    let mut sizes = Vec::with_capacity(rank);
    for dim in 0..rank {
        let n = x.shape[dim] as i64;
        let b = if begin[dim] < 0 {
            begin[dim] + n
        } else {
            begin[dim]
        };
        if !(0..=n).contains(&b) {
            let span = cx.span("begin");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!(
                    "'slice_by_size' begin {} is out of bounds for dim {dim} of size {n}",
                    fmt_ints(&begin)
                ),
            ));
        }
        let s = if size[dim] == -1 { n - b } else { size[dim] };
        if s < 1 || b + s > n {
            let span = cx.span("size");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!(
                    "'slice_by_size' slice [{b}, {}) runs past dim {dim} of size {n} (begin {}, size {})",
                    b + s,
                    fmt_ints(&begin),
                    fmt_ints(&size)
                ),
            ));
        }
        starts.push(b as usize);
        sizes.push(s as usize);
    }
    Ok((
        OpAttrs::SliceBySize {
            begin: Operand::Const(starts),
            size: sizes.clone(),
        },
        vec![TensorType::new(x.dtype, sizes)],
    ))
}

/// One dim of a normalised Python slice: (first index, exclusive stop, element count).
pub fn python_slice(n: i64, start: Option<i64>, stop: Option<i64>, step: i64) -> (i64, i64, i64) {
    debug_assert!(
        step != 0,
        "invariant: zero stride rejected before normalising"
    );
    let clamp = |value: i64, lo: i64, hi: i64| value.clamp(lo, hi);
    if step > 0 {
        let start = start.map_or(0, |s| clamp(if s < 0 { s + n } else { s }, 0, n));
        let stop = stop.map_or(n, |s| clamp(if s < 0 { s + n } else { s }, 0, n));
        let count = if stop > start {
            (stop - start + step - 1) / step
        } else {
            0
        };
        (start, stop, count)
    } else {
        let start = start.map_or(n - 1, |s| clamp(if s < 0 { s + n } else { s }, -1, n - 1));
        let stop = stop.map_or(-1, |s| clamp(if s < 0 { s + n } else { s }, -1, n - 1));
        let count = if start > stop {
            (start - stop + (-step) - 1) / (-step)
        } else {
            0
        };
        (start, stop, count)
    }
}

fn by_index_rule(cx: &mut Cx<'_>, x: TensorType) -> RuleResult {
    let rank = x.rank();
    let mut lists = Vec::new();
    for name in ["begin", "end", "stride"] {
        if let Some(ty) = cx.ty(name) {
            check_len(cx, name, &ty, rank)?;
        }
        lists.push(cx.ints(name)?);
    }
    let mut masks = Vec::new();
    for name in ["begin_mask", "end_mask", "squeeze_mask"] {
        if let Some(ty) = cx.ty(name) {
            check_len(cx, name, &ty, rank)?;
        }
        masks.push(cx.booleans(name)?.unwrap_or_else(|| vec![false; rank]));
    }
    let begin = lists[0].clone().unwrap_or_default();
    let end = lists[1].clone().unwrap_or_default();
    let stride = lists[2].clone().unwrap_or_else(|| vec![1; rank]);
    if stride.contains(&0) {
        let span = cx.span("stride");
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!("'slice_by_index' stride {} contains 0", fmt_ints(&stride)),
        ));
    }
    let (begin_mask, end_mask, squeeze_mask) = (&masks[0], &masks[1], &masks[2]);
    let mut firsts = Vec::with_capacity(rank);
    let mut stops = Vec::with_capacity(rank);
    let mut sizes = Vec::with_capacity(rank);
    let mut shape = Vec::with_capacity(rank);
    for dim in 0..rank {
        let n = x.shape[dim] as i64;
        if squeeze_mask[dim] {
            let idx = if begin[dim] < 0 {
                begin[dim] + n
            } else {
                begin[dim]
            };
            if !(0..n).contains(&idx) {
                let span = cx.span("begin");
                return Err(cx.fail(
                    DiagCode::E125,
                    span,
                    format!(
                        "'slice_by_index' squeezed dim {dim} selects index {} outside size {n}",
                        begin[dim]
                    ),
                ));
            }
            firsts.push(idx as usize);
            stops.push(idx + 1);
            sizes.push(1);
            continue;
        }
        let start = (!begin_mask[dim]).then_some(begin[dim]);
        let stop = (!end_mask[dim]).then_some(end[dim]);
        let (first, last, count) = python_slice(n, start, stop, stride[dim]);
        if count < 1 {
            let span = cx.span("end");
            return Err(cx.fail(
                DiagCode::E125,
                span,
                format!(
                    "'slice_by_index' selects no elements along dim {dim} (size {n}, begin {}, end {}, stride {})",
                    begin[dim], end[dim], stride[dim]
                ),
            ));
        }
        firsts.push(first as usize);
        stops.push(last);
        sizes.push(count as usize);
        shape.push(count as usize);
    }
    Ok((
        OpAttrs::SliceByIndex {
            begin: firsts,
            end: stops,
            stride,
            squeeze: squeeze_mask.clone(),
            sizes,
        },
        vec![TensorType::new(x.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use super::python_slice;
    use crate::ir::{DType, OpKind, Opset};
    use crate::ops::testutil::*;
    use crate::ops::{OpAttrs, Operand};

    #[test]
    fn python_slice_semantics() {
        // x[1:4] of 5.
        assert_eq!(python_slice(5, Some(1), Some(4), 1), (1, 4, 3));
        // x[::-1] of 5: 4, 3, 2, 1, 0.
        assert_eq!(python_slice(5, None, None, -1), (4, -1, 5));
        // x[-2:] of 5.
        assert_eq!(python_slice(5, Some(-2), None, 1), (3, 5, 2));
        // x[10:] of 5: empty.
        assert_eq!(python_slice(5, Some(10), None, 1).2, 0);
        // x[0:5:2] of 5: 0, 2, 4.
        assert_eq!(python_slice(5, Some(0), Some(5), 2), (0, 5, 3));
        // x[4:0:-2] of 5: 4, 2.
        assert_eq!(python_slice(5, Some(4), Some(0), -2), (4, 0, 2));
        // x[-100:100] of 5 clamps.
        assert_eq!(python_slice(5, Some(-100), Some(100), 1), (0, 5, 5));
        // x[3:-100:-1] of 5: 3, 2, 1, 0.
        assert_eq!(python_slice(5, Some(3), Some(-100), -1), (3, -1, 4));
    }

    #[test]
    fn slice_by_size_const_and_dynamic() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let x = b.param("x", t16(&[1, 4, 1, 5]));
        let b0 = b.ints(&[0, 0, 0, 3]);
        let sz = b.ints(&[1, 4, 1, -1]);
        let r = b.op(
            OpKind::SliceBySize,
            &[("x", x), ("begin", b0), ("size", sz)],
        );
        let neg = b.ints(&[0, -2, 0, 0]);
        let sz2 = b.ints(&[1, 2, 1, 5]);
        let r2 = b.op(
            OpKind::SliceBySize,
            &[("x", x), ("begin", neg), ("size", sz2)],
        );
        let dynb = b.param("b", tt(DType::Int32, &[4]));
        let r3 = b.op(
            OpKind::SliceBySize,
            &[("x", x), ("begin", dynb), ("size", sz2)],
        );
        b.op(
            OpKind::SliceBySize,
            &[("x", x), ("begin", dynb), ("size", sz)],
        );
        let far = b.ints(&[0, 3, 0, 0]);
        b.op(
            OpKind::SliceBySize,
            &[("x", x), ("begin", far), ("size", sz2)],
        );
        let short = b.ints(&[0, 0]);
        b.op(
            OpKind::SliceBySize,
            &[("x", x), ("begin", short), ("size", sz2)],
        );
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[1, 4, 1, 2])));
        assert_eq!(
            out.attrs(r),
            OpAttrs::SliceBySize {
                begin: Operand::Const(vec![0, 0, 0, 3]),
                size: vec![1, 4, 1, 2]
            }
        );
        assert_eq!(out.ty(r2), Some(t16(&[1, 2, 1, 5])));
        let OpAttrs::SliceBySize { begin, .. } = out.attrs(r2) else {
            panic!()
        };
        assert_eq!(begin, Operand::Const(vec![0, 2, 0, 0]));
        assert_eq!(out.ty(r3), Some(t16(&[1, 2, 1, 5])));
        assert!(matches!(
            out.attrs(r3),
            OpAttrs::SliceBySize {
                begin: Operand::Dynamic(_),
                ..
            }
        ));
        assert_eq!(out.codes(), vec!["E124", "E125", "E122"]);
    }

    #[test]
    fn slice_by_index_masks_and_strides() {
        let mut b = FnBuilder::new(Opset::Ios17);
        let x = b.param("x", t16(&[2, 6, 5]));
        let begin = b.ints(&[1, 0, -1]);
        let end = b.ints(&[0, 6, 0]);
        let stride = b.ints(&[1, 2, -1]);
        let squeeze = b.bools(&[true, false, false]);
        let end_mask = b.bools(&[false, false, true]);
        let r = b.op_with(
            OpKind::SliceByIndex,
            &[
                A::S("x", x),
                A::S("begin", begin),
                A::S("end", end),
                A::S("stride", stride),
                A::S("squeeze_mask", squeeze),
                A::S("end_mask", end_mask),
            ],
            1,
        )[0];
        let zero = b.ints(&[1, 0, 1]);
        b.op(
            OpKind::SliceByIndex,
            &[("x", x), ("begin", begin), ("end", end), ("stride", zero)],
        );
        let out = b.run();
        assert_eq!(out.codes(), vec!["E125"]);
        // dim 0 squeezed at index 1; dim 1 [0:6:2] -> 3; dim 2 [-1::-1] -> 5.
        assert_eq!(out.ty(r), Some(t16(&[3, 5])));
        assert_eq!(
            out.attrs(r),
            OpAttrs::SliceByIndex {
                begin: vec![1, 0, 4],
                end: vec![2, 6, -1],
                stride: vec![1, 2, -1],
                squeeze: vec![true, false, false],
                sizes: vec![1, 3, 5],
            }
        );
    }
}
