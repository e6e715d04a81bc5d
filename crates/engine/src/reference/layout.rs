//! Data-movement ops: `reshape`, `transpose`, `expand_dims`, `squeeze` (mil-spec 6.12), the
//! slices (6.13), `concat`, `split`, `tile` (6.14), `fill`, `band_part`, `select`, `gather`
//! (6.15). Values are copied unchanged (no rounding: they already have the output dtype).
//!
//! Run-time bounds (slice begin, gather indices) are checked element by element and reported as
//! R003 / R002.

use super::index::{broadcast_shapes, broadcast_source, normalize_axis, numel, ravel, unravel};
use super::{RefError, Shaped};
use milbridge_mil::diag::DiagCode;
use milbridge_mil::ir::OpKind;

/// How `0` entries of a reshape `shape` are read (mil-spec 6.12.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReshapeZeros {
    /// ios15/ios16: allowed only when `len(shape) == rank(x)`; entry `j` copies `x.shape[j]`.
    CopySameIndex,
    /// ios17+: right-aligned: entry `j` copies `x.shape[rank - K + j]`, or 1 if that is negative.
    RightAligned,
}

/// The result shape of `reshape(x, shape)`: zeros first, then at most one `-1`; the element
/// count must be preserved.
pub fn reshape_shape(
    x_shape: &[usize],
    shape: &[i64],
    zeros: ReshapeZeros,
) -> Result<Vec<usize>, String> {
    let rank = x_shape.len();
    let k = shape.len();
    if zeros == ReshapeZeros::CopySameIndex && shape.contains(&0) && k != rank {
        return Err(format!(
            "a 0 in shape {shape:?} needs length {rank} (ios15/16 rule)"
        ));
    }
    let mut resolved: Vec<Option<usize>> = Vec::with_capacity(k);
    for (j, &entry) in shape.iter().enumerate() {
        resolved.push(match entry {
            0 => Some(match zeros {
                ReshapeZeros::CopySameIndex => x_shape[j],
                ReshapeZeros::RightAligned => (rank + j)
                    .checked_sub(k)
                    .map_or(1, |source| x_shape[source]),
            }),
            -1 => None,
            size if size > 0 => Some(size as usize),
            bad => return Err(format!("shape entry {bad} is invalid")),
        });
    }
    let n_unknown = resolved.iter().filter(|dim| dim.is_none()).count();
    let known: usize = resolved.iter().flatten().product();
    let total = numel(x_shape);
    let out: Vec<usize> = match n_unknown {
        0 => resolved.into_iter().flatten().collect(),
        1 if known != 0 && total.is_multiple_of(known) => resolved
            .into_iter()
            .map(|dim| dim.unwrap_or(total / known))
            .collect(),
        1 => {
            return Err(format!(
                "-1 in shape {shape:?} cannot preserve {total} elements"
            ));
        }
        _ => return Err(format!("shape {shape:?} has more than one -1")),
    };
    if numel(&out) != total {
        return Err(format!("shape {out:?} does not hold {total} elements"));
    }
    Ok(out)
}

/// `out[i_0..] = x[j]` with `j[perm[k]] = i_k` (`perm` normalised).
pub fn transpose(x: &[f64], shape: &[usize], perm: &[usize]) -> Result<Shaped, RefError> {
    let mut seen = vec![false; shape.len()];
    if perm.len() != shape.len()
        || perm
            .iter()
            .any(|&axis| axis >= shape.len() || std::mem::replace(&mut seen[axis], true))
    {
        return Err(RefError::malformed(
            OpKind::Transpose,
            format!("perm {perm:?} for rank {}", shape.len()),
        ));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&axis| shape[axis]).collect();
    let out = (0..numel(&out_shape))
        .map(|linear| {
            let out_index = unravel(linear, &out_shape);
            let mut in_index = vec![0; shape.len()];
            for (k, &axis) in perm.iter().enumerate() {
                in_index[axis] = out_index[k];
            }
            x[ravel(&in_index, shape)]
        })
        .collect();
    Ok((out, out_shape))
}

/// The shape after inserting size-1 axes at the normalised (against the output rank) `axes`.
pub fn expand_dims_shape(shape: &[usize], axes: &[usize]) -> Result<Vec<usize>, String> {
    let out_rank = shape.len() + axes.len();
    let mut is_new = vec![false; out_rank];
    for &axis in axes {
        if axis >= out_rank || std::mem::replace(&mut is_new[axis], true) {
            return Err(format!("axes {axes:?} invalid for output rank {out_rank}"));
        }
    }
    let mut source = shape.iter();
    Ok(is_new
        .iter()
        .map(|&new| {
            if new {
                1
            } else {
                *source.next().expect("counts match")
            }
        })
        .collect())
}

/// The shape after removing the listed (normalised) axes that have size 1, or every size-1 axis
/// when `axes` is `None`.
pub fn squeeze_shape(shape: &[usize], axes: Option<&[usize]>) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter(|&(axis, &dim)| !(dim == 1 && axes.is_none_or(|axes| axes.contains(&axis))))
        .map(|(_, &dim)| dim)
        .collect()
}

fn runtime_slice(message: String) -> RefError {
    RefError::runtime(DiagCode::R003, message)
}

/// `slice_by_size`: per dim, `b = begin (+ n if negative)` must lie in `[0, n]`; `size` of -1
/// runs to the end, otherwise `b + size <= n`. Violations are R003.
pub fn slice_by_size(
    x: &[f64],
    shape: &[usize],
    begin: &[i64],
    size: &[i64],
) -> Result<Shaped, RefError> {
    let rank = shape.len();
    if begin.len() != rank || size.len() != rank {
        return Err(RefError::malformed(
            OpKind::SliceBySize,
            format!("begin/size lengths for rank {rank}"),
        ));
    }
    let mut starts = Vec::with_capacity(rank);
    let mut out_shape = Vec::with_capacity(rank);
    for d in 0..rank {
        let n = shape[d] as i64;
        let b = if begin[d] < 0 { begin[d] + n } else { begin[d] };
        if !(0..=n).contains(&b) {
            return Err(runtime_slice(format!(
                "slice_by_size begin {} out of range for axis {d} of size {n}",
                begin[d]
            )));
        }
        let s = if size[d] == -1 { n - b } else { size[d] };
        if s < 0 || b + s > n {
            return Err(runtime_slice(format!(
                "slice_by_size begin {b} + size {s} exceeds axis {d} of size {n}"
            )));
        }
        starts.push(b as usize);
        out_shape.push(s as usize);
    }
    let out = (0..numel(&out_shape))
        .map(|linear| {
            let index: Vec<usize> = unravel(linear, &out_shape)
                .iter()
                .zip(&starts)
                .map(|(i, s)| i + s)
                .collect();
            x[ravel(&index, shape)]
        })
        .collect();
    Ok((out, out_shape))
}

/// Parameters of `slice_by_index` for one tensor, masks defaulting to all false and stride to 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceByIndex {
    /// Begin per dim.
    pub begin: Vec<i64>,
    /// End per dim.
    pub end: Vec<i64>,
    /// Stride per dim (nonzero); empty means all 1.
    pub stride: Vec<i64>,
    /// Ignore `begin[d]` (slice from the first element in the step direction).
    pub begin_mask: Vec<bool>,
    /// Ignore `end[d]` (slice to the last element in the step direction).
    pub end_mask: Vec<bool>,
    /// Select the single element at `begin[d]` and drop the dim.
    pub squeeze_mask: Vec<bool>,
}

/// The Python `range(start, stop, step)` of `slice(start, stop, step).indices(n)` (CPython's
/// `PySlice_AdjustIndices`): returns `(start, step, length)`.
pub fn python_slice(n: i64, start: Option<i64>, stop: Option<i64>, step: i64) -> (i64, i64, i64) {
    let adjust = |value: i64| {
        if value < 0 {
            let value = value + n;
            if value < 0 {
                if step < 0 { -1 } else { 0 }
            } else {
                value
            }
        } else if value >= n {
            if step < 0 { n - 1 } else { n }
        } else {
            value
        }
    };
    let start = start.map_or(if step < 0 { n - 1 } else { 0 }, adjust);
    let stop = stop.map_or(if step < 0 { -1 } else { n }, adjust);
    let length = if step < 0 {
        if stop < start {
            (start - stop - 1) / -step + 1
        } else {
            0
        }
    } else if start < stop {
        (stop - start - 1) / step + 1
    } else {
        0
    };
    (start, step, length)
}

/// `slice_by_index` with NumPy/Python slice semantics per dim (mil-spec 6.13.2). A squeezed dim's
/// `begin` out of `[-n, n)` is R003.
pub fn slice_by_index(
    x: &[f64],
    shape: &[usize],
    params: &SliceByIndex,
) -> Result<Shaped, RefError> {
    let rank = shape.len();
    let flag = |mask: &[bool], d: usize| mask.get(d).copied().unwrap_or(false);
    if params.begin.len() != rank
        || params.end.len() != rank
        || !(params.stride.is_empty() || params.stride.len() == rank)
        || params.stride.contains(&0)
    {
        return Err(RefError::malformed(
            OpKind::SliceByIndex,
            format!("parameters for rank {rank}: {params:?}"),
        ));
    }
    // Per dim: (start, step, length, kept).
    let mut ranges = Vec::with_capacity(rank);
    for (d, &size) in shape.iter().enumerate() {
        let n = size as i64;
        let step = params.stride.get(d).copied().unwrap_or(1);
        if flag(&params.squeeze_mask, d) {
            let b = params.begin[d];
            let index = if b < 0 { b + n } else { b };
            if !(0..n).contains(&index) {
                return Err(runtime_slice(format!(
                    "slice_by_index squeezed begin {b} out of range for axis {d} of size {n}"
                )));
            }
            ranges.push((index, 1, 1, false));
        } else {
            let start = (!flag(&params.begin_mask, d)).then_some(params.begin[d]);
            let stop = (!flag(&params.end_mask, d)).then_some(params.end[d]);
            let (start, step, length) = python_slice(n, start, stop, step);
            ranges.push((start, step, length, true));
        }
    }
    let full_shape: Vec<usize> = ranges
        .iter()
        .map(|&(_, _, length, _)| length as usize)
        .collect();
    let out = (0..numel(&full_shape))
        .map(|linear| {
            let index: Vec<usize> = unravel(linear, &full_shape)
                .iter()
                .zip(&ranges)
                .map(|(&i, &(start, step, _, _))| (start + i as i64 * step) as usize)
                .collect();
            x[ravel(&index, shape)]
        })
        .collect();
    let out_shape = ranges
        .iter()
        .filter(|range| range.3)
        .map(|range| range.2 as usize)
        .collect();
    Ok((out, out_shape))
}

/// `concat` along the normalised `axis`; with `interleave`, `out[.., j*N + k, ..] =
/// values[k][.., j, ..]` (all inputs the same shape).
pub fn concat(
    values: &[(&[f64], &[usize])],
    axis: usize,
    interleave: bool,
) -> Result<Shaped, RefError> {
    let bad = |message: String| Err(RefError::malformed(OpKind::Concat, message));
    let Some(&(_, first)) = values.first() else {
        return bad("no values".to_string());
    };
    if axis >= first.len() {
        return bad(format!("axis {axis} for rank {}", first.len()));
    }
    for &(data, shape) in values {
        let same_rest = shape.len() == first.len()
            && shape
                .iter()
                .zip(first)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !same_rest || data.len() != numel(shape) || (interleave && shape != first) {
            return bad(format!("value shape {shape:?} does not match {first:?}"));
        }
    }
    let mut out_shape = first.to_vec();
    out_shape[axis] = values.iter().map(|(_, shape)| shape[axis]).sum();
    let n_values = values.len();
    let out = (0..numel(&out_shape))
        .map(|linear| {
            let mut index = unravel(linear, &out_shape);
            let along = index[axis];
            let which = if interleave {
                index[axis] = along / n_values;
                along % n_values
            } else {
                let mut offset = along;
                let mut which = 0;
                while offset >= values[which].1[axis] {
                    offset -= values[which].1[axis];
                    which += 1;
                }
                index[axis] = offset;
                which
            };
            let (data, shape) = values[which];
            data[ravel(&index, shape)]
        })
        .collect();
    Ok((out, out_shape))
}

/// Consecutive chunks of `sizes` along the normalised `axis` (sizes sum to the axis length).
pub fn split(
    x: &[f64],
    shape: &[usize],
    axis: usize,
    sizes: &[usize],
) -> Result<Vec<Shaped>, RefError> {
    if axis >= shape.len() || sizes.iter().sum::<usize>() != shape[axis] {
        return Err(RefError::malformed(
            OpKind::Split,
            format!("sizes {sizes:?} along axis {axis} of {shape:?}"),
        ));
    }
    let mut begin = vec![0i64; shape.len()];
    let mut parts = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut extent: Vec<i64> = shape.iter().map(|&dim| dim as i64).collect();
        extent[axis] = size as i64;
        parts.push(slice_by_size(x, shape, &begin, &extent)?);
        begin[axis] += size as i64;
    }
    Ok(parts)
}

/// NumPy `tile`: `out.shape[d] = shape[d] * reps[d]`, `out[i] = x[i mod shape]`.
pub fn tile(x: &[f64], shape: &[usize], reps: &[usize]) -> Result<Shaped, RefError> {
    if reps.len() != shape.len() {
        return Err(RefError::malformed(
            OpKind::Tile,
            format!("reps {reps:?} for rank {}", shape.len()),
        ));
    }
    let out_shape: Vec<usize> = shape.iter().zip(reps).map(|(dim, rep)| dim * rep).collect();
    let out = (0..numel(&out_shape))
        .map(|linear| {
            let index: Vec<usize> = unravel(linear, &out_shape)
                .iter()
                .zip(shape)
                .map(|(i, dim)| i % dim)
                .collect();
            x[ravel(&index, shape)]
        })
        .collect();
    Ok((out, out_shape))
}

/// A tensor of `shape` with every element `value`.
pub fn fill(shape: &[usize], value: f64) -> Vec<f64> {
    vec![value; numel(shape)]
}

/// Keeps `x` where `(lower < 0 or m - n <= lower) and (upper < 0 or n - m <= upper)` on the
/// last two axes `(m, n)`, else 0.
pub fn band_part(x: &[f64], shape: &[usize], lower: i64, upper: i64) -> Result<Vec<f64>, RefError> {
    let rank = shape.len();
    if rank < 2 || x.len() != numel(shape) {
        return Err(RefError::malformed(
            OpKind::BandPart,
            format!("x shape {shape:?}"),
        ));
    }
    Ok(x.iter()
        .enumerate()
        .map(|(linear, &value)| {
            let index = unravel(linear, shape);
            let (m, n) = (index[rank - 2] as i64, index[rank - 1] as i64);
            let keep = (lower < 0 || m - n <= lower) && (upper < 0 || n - m <= upper);
            if keep { value } else { 0.0 }
        })
        .collect())
}

/// `cond ? a : b` with three-way broadcasting.
pub fn select(
    (cond, cond_shape): (&[f64], &[usize]),
    (a, a_shape): (&[f64], &[usize]),
    (b, b_shape): (&[f64], &[usize]),
) -> Result<Shaped, RefError> {
    let out_shape = broadcast_shapes(&[cond_shape, a_shape, b_shape]).ok_or_else(|| {
        RefError::malformed(
            OpKind::Select,
            format!("{cond_shape:?}, {a_shape:?}, {b_shape:?} do not broadcast"),
        )
    })?;
    let out = (0..numel(&out_shape))
        .map(|linear| {
            let index = unravel(linear, &out_shape);
            if cond[broadcast_source(&index, cond_shape)] != 0.0 {
                a[broadcast_source(&index, a_shape)]
            } else {
                b[broadcast_source(&index, b_shape)]
            }
        })
        .collect();
    Ok((out, out_shape))
}

/// TensorFlow-style `gather` along the normalised `axis` with `batch_dims` shared leading dims.
/// Output shape `x[:axis] + indices[batch_dims:] + x[axis+1:]`. Index `v` is valid in
/// `[0, n)`, or also in `[-n, 0)` (wrapping) when `allow_negative` (ios15/ios16); otherwise R002.
pub fn gather(
    (x, x_shape): (&[f64], &[usize]),
    (indices, indices_shape): (&[f64], &[usize]),
    axis: usize,
    batch_dims: usize,
    allow_negative: bool,
) -> Result<Shaped, RefError> {
    if axis >= x_shape.len()
        || batch_dims > axis
        || batch_dims > indices_shape.len()
        || x_shape[..batch_dims] != indices_shape[..batch_dims]
    {
        return Err(RefError::malformed(
            OpKind::Gather,
            format!(
                "x {x_shape:?}, indices {indices_shape:?}, axis {axis}, batch_dims {batch_dims}"
            ),
        ));
    }
    let n = x_shape[axis] as i64;
    let q_rank = indices_shape.len() - batch_dims;
    let mut out_shape = x_shape[..axis].to_vec();
    out_shape.extend_from_slice(&indices_shape[batch_dims..]);
    out_shape.extend_from_slice(&x_shape[axis + 1..]);
    let mut out = Vec::with_capacity(numel(&out_shape));
    for linear in 0..numel(&out_shape) {
        let index = unravel(linear, &out_shape);
        let (p, rest) = index.split_at(axis);
        let (q, r) = rest.split_at(q_rank);
        let mut idx_index = p[..batch_dims].to_vec();
        idx_index.extend_from_slice(q);
        let raw = indices[ravel(&idx_index, indices_shape)] as i64;
        let v = if raw < 0 && allow_negative {
            raw + n
        } else {
            raw
        };
        if !(0..n).contains(&v) {
            let valid = if allow_negative {
                format!("[{}, {n})", -n)
            } else {
                format!("[0, {n})")
            };
            return Err(RefError::runtime(
                DiagCode::R002,
                format!("gather index {raw} out of range {valid} for axis {axis}"),
            ));
        }
        let mut x_index = p.to_vec();
        x_index.push(v as usize);
        x_index.extend_from_slice(r);
        out.push(x[ravel(&x_index, x_shape)]);
    }
    Ok((out, out_shape))
}

/// Normalises a list of axes against `rank` (mil-spec 4.7).
pub fn normalize_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    axes.iter()
        .map(|&axis| normalize_axis(axis, rank))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(n: usize) -> Vec<f64> {
        (0..n).map(|value| value as f64).collect()
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        use ReshapeZeros::*;
        assert_eq!(
            reshape_shape(&[2, 50], &[1, 0, -1, 0], RightAligned),
            Ok(vec![1, 1, 2, 50])
        );
        assert!(reshape_shape(&[2, 50], &[1, 0, -1, 0], CopySameIndex).is_err());
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, -1, 2], CopySameIndex),
            Ok(vec![2, 6, 2])
        );
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, -1, 2], RightAligned),
            Ok(vec![2, 6, 2])
        );
        assert_eq!(
            reshape_shape(&[3, 4], &[1, 0, 0], RightAligned),
            Ok(vec![1, 3, 4])
        );
        assert!(reshape_shape(&[3, 4], &[1, 0, 0], CopySameIndex).is_err());
        assert!(reshape_shape(&[2, 3, 4], &[-1, -1], RightAligned).is_err());
        assert!(reshape_shape(&[2, 3], &[4, -1], RightAligned).is_err());
        assert_eq!(
            reshape_shape(&[1, 8, 1, 16], &[1, 4, 2, 16], CopySameIndex),
            Ok(vec![1, 4, 2, 16])
        );
        assert_eq!(reshape_shape(&[6], &[-1], CopySameIndex), Ok(vec![6]));
    }

    #[test]
    fn transpose_and_shape_only_ops() {
        // [2, 3] -> [3, 2]
        let (out, shape) = transpose(&iota(6), &[2, 3], &[1, 0]).unwrap();
        assert_eq!(
            (out, shape),
            (vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0], vec![3, 2])
        );
        // REPO perm [0, 1, 3, 2] on [1, 1, 2, 3].
        let (out, shape) = transpose(&iota(6), &[1, 1, 2, 3], &[0, 1, 3, 2]).unwrap();
        assert_eq!(
            (out, shape),
            (vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0], vec![1, 1, 3, 2])
        );
        // [2, 3, 4] perm [2, 0, 1]: out[k, i, j] = x[i, j, k].
        let (out, shape) = transpose(&iota(24), &[2, 3, 4], &[2, 0, 1]).unwrap();
        assert_eq!(shape, vec![4, 2, 3]);
        assert_eq!(out[ravel(&[3, 1, 2], &shape)], (12 + 2 * 4 + 3) as f64);
        assert!(transpose(&iota(6), &[2, 3], &[0, 0]).is_err());
        assert_eq!(expand_dims_shape(&[2, 3], &[0, 3]), Ok(vec![1, 2, 3, 1]));
        assert_eq!(expand_dims_shape(&[2, 3], &[1, 2]), Ok(vec![2, 1, 1, 3]));
        assert!(expand_dims_shape(&[2], &[1, 1]).is_err());
        assert_eq!(squeeze_shape(&[1, 2, 1, 3], None), vec![2, 3]);
        assert_eq!(squeeze_shape(&[1, 2, 1, 3], Some(&[2, 1])), vec![1, 2, 3]);
        assert_eq!(squeeze_shape(&[1, 1], None), Vec::<usize>::new());
    }

    #[test]
    fn slice_by_size_cases() {
        // REPO: slice weights out of the last dim.
        let x = iota(2 * 5);
        let (out, shape) = slice_by_size(&x, &[1, 2, 1, 5], &[0, 0, 0, 3], &[1, 2, 1, 2]).unwrap();
        assert_eq!((out, shape), (vec![3.0, 4.0, 8.0, 9.0], vec![1, 2, 1, 2]));
        let (out, shape) = slice_by_size(&x, &[2, 5], &[-1, 1], &[-1, -1]).unwrap();
        assert_eq!((out, shape), (vec![6.0, 7.0, 8.0, 9.0], vec![1, 4]));
        let err = slice_by_size(&x, &[2, 5], &[0, 4], &[1, 2]).unwrap_err();
        assert_eq!(err.code(), DiagCode::R003);
        assert_eq!(
            slice_by_size(&x, &[2, 5], &[0, -6], &[1, 1])
                .unwrap_err()
                .code(),
            DiagCode::R003
        );
    }

    #[test]
    fn python_slice_semantics() {
        assert_eq!(python_slice(5, None, None, 1), (0, 1, 5));
        assert_eq!(python_slice(5, None, None, -1), (4, -1, 5));
        assert_eq!(python_slice(5, Some(-2), None, 1), (3, 1, 2));
        assert_eq!(python_slice(5, Some(10), Some(-10), -2), (4, -2, 3));
        assert_eq!(python_slice(5, Some(3), Some(-1), -1).2, 0); // x[3:-1:-1] is empty
        assert_eq!(python_slice(5, Some(1), Some(4), 2), (1, 2, 2));
        assert_eq!(python_slice(5, Some(-100), Some(100), 3), (0, 3, 2));
        assert_eq!(python_slice(5, Some(4), Some(0), 1).2, 0);
    }

    #[test]
    fn slice_by_index_cases() {
        let x = iota(12); // [3, 4]
        let params = SliceByIndex {
            begin: vec![0, 3],
            end: vec![3, 0],
            stride: vec![2, -1],
            ..SliceByIndex::default()
        };
        // rows 0, 2; cols 3, 2, 1
        let (out, shape) = slice_by_index(&x, &[3, 4], &params).unwrap();
        assert_eq!(
            (out, shape),
            (vec![3.0, 2.0, 1.0, 11.0, 10.0, 9.0], vec![2, 3])
        );
        let params = SliceByIndex {
            begin: vec![-1, 0],
            end: vec![0, 0],
            stride: vec![1, -1],
            begin_mask: vec![false, true],
            end_mask: vec![false, true],
            squeeze_mask: vec![true, false],
        };
        // last row, reversed: [11, 10, 9, 8], squeezed to rank 1.
        let (out, shape) = slice_by_index(&x, &[3, 4], &params).unwrap();
        assert_eq!((out, shape), (vec![11.0, 10.0, 9.0, 8.0], vec![4]));
        let params = SliceByIndex {
            begin: vec![1, 2],
            end: vec![0, 0],
            squeeze_mask: vec![true, true],
            ..SliceByIndex::default()
        };
        assert_eq!(
            slice_by_index(&x, &[3, 4], &params).unwrap(),
            (vec![6.0], vec![])
        );
        let params = SliceByIndex {
            begin: vec![3, 0],
            end: vec![3, 4],
            squeeze_mask: vec![true, false],
            ..SliceByIndex::default()
        };
        assert_eq!(
            slice_by_index(&x, &[3, 4], &params).unwrap_err().code(),
            DiagCode::R003
        );
    }

    #[test]
    fn concat_split_tile() {
        let a = iota(4); // [2, 2]
        let b = [10.0, 11.0]; // [2, 1]
        let (out, shape) = concat(&[(&a, &[2, 2]), (&b, &[2, 1])], 1, false).unwrap();
        assert_eq!(
            (out, shape),
            (vec![0.0, 1.0, 10.0, 2.0, 3.0, 11.0], vec![2, 3])
        );
        // Interleave on axis 0 of two [2, 1]: rows a0, c0, a1, c1.
        let c = [20.0, 21.0];
        let (out, shape) = concat(&[(&b, &[2, 1]), (&c, &[2, 1])], 0, true).unwrap();
        assert_eq!((out, shape), (vec![10.0, 20.0, 11.0, 21.0], vec![4, 1]));
        // The same value twice (GQA tiling).
        let (out, _) = concat(&[(&b, &[2, 1]), (&b, &[2, 1])], 0, false).unwrap();
        assert_eq!(out, vec![10.0, 11.0, 10.0, 11.0]);
        assert!(concat(&[(&a, &[2, 2]), (&b, &[2, 1])], 1, true).is_err());
        let parts = split(&iota(10), &[2, 5], 1, &[2, 3]).unwrap();
        assert_eq!(parts[0], (vec![0.0, 1.0, 5.0, 6.0], vec![2, 2]));
        assert_eq!(parts[1], (vec![2.0, 3.0, 4.0, 7.0, 8.0, 9.0], vec![2, 3]));
        let (out, shape) = tile(&[1.0, 2.0], &[1, 2], &[2, 2]).unwrap();
        assert_eq!(
            (out, shape),
            (vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0], vec![2, 4])
        );
        assert_eq!(fill(&[2, 2], 1.5), vec![1.5; 4]);
    }

    #[test]
    fn band_part_select_gather() {
        let x = [1.0; 9]; // [3, 3]
        let lower = band_part(&x, &[3, 3], -1, 0).unwrap();
        assert_eq!(lower, vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        let upper = band_part(&x, &[1, 3, 3], 0, -1).unwrap();
        assert_eq!(upper, vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            band_part(&x, &[3, 3], 0, 0).unwrap(),
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            band_part(&x, &[3, 3], 1, 0).unwrap(),
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
        );
        // cond [2, 1], a [1, 3], b scalar -> [2, 3].
        let (out, shape) = select(
            (&[1.0, 0.0], &[2, 1]),
            (&[1.0, 2.0, 3.0], &[1, 3]),
            (&[-1.0], &[]),
        )
        .unwrap();
        assert_eq!(
            (out, shape),
            (vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0], vec![2, 3])
        );
        // gather axis 1 of [2, 3] with indices [2, 0] -> [2, 2]; negative index wraps (ios16).
        let x = iota(6);
        let (out, shape) = gather((&x, &[2, 3]), (&[2.0, -3.0], &[2]), 1, 0, true).unwrap();
        assert_eq!((out, shape), (vec![2.0, 0.0, 5.0, 3.0], vec![2, 2]));
        let err = gather((&x, &[2, 3]), (&[2.0, -3.0], &[2]), 1, 0, false).unwrap_err();
        assert_eq!(err.code(), DiagCode::R002);
        assert_eq!(
            gather((&x, &[2, 3]), (&[3.0], &[]), 1, 0, true)
                .unwrap_err()
                .code(),
            DiagCode::R002
        );
        // Scalar index removes the axis.
        assert_eq!(
            gather((&x, &[2, 3]), (&[1.0], &[]), 0, 0, true).unwrap(),
            (vec![3.0, 4.0, 5.0], vec![3])
        );
        // batch_dims 1: row t takes its own indices.
        let (out, shape) =
            gather((&x, &[2, 3]), (&[2.0, 1.0, 0.0, 0.0], &[2, 2]), 1, 1, false).unwrap();
        assert_eq!((out, shape), (vec![2.0, 1.0, 3.0, 3.0], vec![2, 2]));
    }
}
