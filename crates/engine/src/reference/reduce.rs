//! Reductions (mil-spec 6.8), `softmax` (6.7) and `layer_norm` (6.10).
//!
//! Floats accumulate in `f64` in plain row-major order and round once per output element.
//! Integer `reduce_sum` is exact (`i128`) then wrapped; integer `reduce_mean` truncates toward
//! zero; `reduce_max` and `softmax` propagate NaN (mil-spec 5.2 item 6).

use super::elementwise::maximum;
use super::index::{numel, ravel, unravel};
use super::numeric::{round_float, wrap_int};
use super::{RefError, Shaped};
use milbridge_mil::ir::{DType, OpKind};

/// A reduction of mil-spec 6.8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceFn {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// NaN-propagating maximum.
    Max,
}

impl ReduceFn {
    fn kind(self) -> OpKind {
        match self {
            ReduceFn::Sum => OpKind::ReduceSum,
            ReduceFn::Mean => OpKind::ReduceMean,
            ReduceFn::Max => OpKind::ReduceMax,
        }
    }
}

/// Validates normalised axes and returns a per-axis "reduced" mask.
fn axis_mask(kind: OpKind, shape: &[usize], axes: &[usize]) -> Result<Vec<bool>, RefError> {
    let mut mask = vec![false; shape.len()];
    for &axis in axes {
        if axis >= shape.len() {
            return Err(RefError::malformed(
                kind,
                format!("axis {axis} out of range for rank {}", shape.len()),
            ));
        }
        mask[axis] = true;
    }
    Ok(mask)
}

/// For each element of `shape`, the position of its group (the index with the masked axes set to
/// 0) in the kept shape (masked axes of size 1). Returns the kept shape too.
fn group_of_each(shape: &[usize], mask: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = shape
        .iter()
        .zip(mask)
        .map(|(&dim, &reduced)| if reduced { 1 } else { dim })
        .collect();
    let groups = (0..numel(shape))
        .map(|linear| {
            let mut index = unravel(linear, shape);
            for (i, &reduced) in index.iter_mut().zip(mask) {
                if reduced {
                    *i = 0;
                }
            }
            ravel(&index, &kept)
        })
        .collect();
    (kept, groups)
}

/// Reduces `x` (shape `shape`, dtype `dtype`) over the normalised `axes` (an empty list reduces
/// nothing); with `keep_dims` the reduced axes stay as size 1, otherwise they are removed.
pub fn reduce(
    f: ReduceFn,
    dtype: DType,
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    keep_dims: bool,
) -> Result<Shaped, RefError> {
    let kind = f.kind();
    if x.len() != numel(shape) {
        return Err(RefError::malformed(
            kind,
            format!("x has {} elements", x.len()),
        ));
    }
    let mask = axis_mask(kind, shape, axes)?;
    let (kept, groups) = group_of_each(shape, &mask);
    let n_groups = numel(&kept);
    let count = numel(shape) / n_groups.max(1);
    let out = if dtype.is_int() {
        let mut acc: Vec<Option<i128>> = vec![None; n_groups];
        for (&value, &group) in x.iter().zip(&groups) {
            let value = value as i128;
            acc[group] = Some(match (f, acc[group]) {
                (_, None) => value,
                (ReduceFn::Max, Some(prev)) => prev.max(value),
                (_, Some(prev)) => prev + value,
            });
        }
        acc.into_iter()
            .map(|total| {
                let total = total.expect("every group has at least one element (no zero dims)");
                match f {
                    ReduceFn::Mean => wrap_int(dtype, total / count as i128),
                    _ => wrap_int(dtype, total),
                }
            })
            .collect()
    } else if dtype.is_float() {
        let start = if f == ReduceFn::Max {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        let mut acc = vec![start; n_groups];
        for (&value, &group) in x.iter().zip(&groups) {
            acc[group] = match f {
                ReduceFn::Max => maximum(acc[group], value),
                _ => acc[group] + value,
            };
        }
        acc.into_iter()
            .map(|total| {
                let total = if f == ReduceFn::Mean {
                    total / count as f64
                } else {
                    total
                };
                round_float(dtype, total)
            })
            .collect()
    } else {
        return Err(RefError::malformed(
            kind,
            format!("dtype {dtype} not allowed"),
        ));
    };
    let out_shape = if keep_dims {
        kept
    } else {
        shape
            .iter()
            .zip(&mask)
            .filter(|(_, reduced)| !**reduced)
            .map(|(&dim, _)| dim)
            .collect()
    };
    Ok((out, out_shape))
}

/// `exp(x - max) / sum(exp(x - max))` along the normalised `axis`. A slice of all `-inf`, or one
/// containing `+inf` or NaN, gives NaN.
pub fn softmax(
    dtype: DType,
    x: &[f64],
    shape: &[usize],
    axis: usize,
) -> Result<Vec<f64>, RefError> {
    if !dtype.is_float() || x.len() != numel(shape) {
        return Err(RefError::malformed(
            OpKind::Softmax,
            format!("x is {dtype} {shape:?}"),
        ));
    }
    let mask = axis_mask(OpKind::Softmax, shape, &[axis])?;
    let (kept, groups) = group_of_each(shape, &mask);
    let mut max = vec![f64::NEG_INFINITY; numel(&kept)];
    for (&value, &group) in x.iter().zip(&groups) {
        max[group] = maximum(max[group], value);
    }
    let exps: Vec<f64> = x
        .iter()
        .zip(&groups)
        .map(|(&value, &group)| (value - max[group]).exp())
        .collect();
    let mut sums = vec![0.0; numel(&kept)];
    for (&e, &group) in exps.iter().zip(&groups) {
        sums[group] += e;
    }
    Ok(exps
        .iter()
        .zip(&groups)
        .map(|(&e, &group)| round_float(dtype, e / sums[group]))
        .collect())
}

/// Layer normalisation over the normalised, distinct `axes`: `(x - mean) / sqrt(var + eps) *
/// gamma + beta` with the population variance. `gamma`/`beta` (default ones/zeros) have the
/// shape `[shape[a] for a in sorted(axes)]`.
pub fn layer_norm(
    dtype: DType,
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    epsilon: f64,
) -> Result<Vec<f64>, RefError> {
    let kind = OpKind::LayerNorm;
    if !dtype.is_float() || x.len() != numel(shape) {
        return Err(RefError::malformed(kind, format!("x is {dtype} {shape:?}")));
    }
    let mask = axis_mask(kind, shape, axes)?;
    let norm_axes: Vec<usize> = (0..shape.len()).filter(|&axis| mask[axis]).collect();
    let norm_shape: Vec<usize> = norm_axes.iter().map(|&axis| shape[axis]).collect();
    for (name, param) in [("gamma", gamma), ("beta", beta)] {
        if let Some(param) = param
            && param.len() != numel(&norm_shape)
        {
            return Err(RefError::malformed(
                kind,
                format!(
                    "{name} has {} elements, expected shape {norm_shape:?}",
                    param.len()
                ),
            ));
        }
    }
    let (kept, groups) = group_of_each(shape, &mask);
    let count = (numel(shape) / numel(&kept)) as f64;
    let mut mean = vec![0.0; numel(&kept)];
    for (&value, &group) in x.iter().zip(&groups) {
        mean[group] += value;
    }
    mean.iter_mut().for_each(|sum| *sum /= count);
    let mut var = vec![0.0; numel(&kept)];
    for (&value, &group) in x.iter().zip(&groups) {
        let centered = value - mean[group];
        var[group] += centered * centered;
    }
    var.iter_mut().for_each(|sum| *sum /= count);
    let out = x
        .iter()
        .zip(&groups)
        .enumerate()
        .map(|(linear, (&value, &group))| {
            let index = unravel(linear, shape);
            let param_index: Vec<usize> = norm_axes.iter().map(|&axis| index[axis]).collect();
            let param = ravel(&param_index, &norm_shape);
            let scale = gamma.map_or(1.0, |gamma| gamma[param]);
            let shift = beta.map_or(0.0, |beta| beta[param]);
            let normalized = (value - mean[group]) / (var[group] + epsilon).sqrt();
            round_float(dtype, normalized * scale + shift)
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_axes_and_keep_dims() {
        // x = [[1, 2, 3], [4, 5, 6]]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let run =
            |f, axes: &[usize], keep| reduce(f, DType::Fp32, &x, &[2, 3], axes, keep).unwrap();
        assert_eq!(run(ReduceFn::Sum, &[1], false), (vec![6.0, 15.0], vec![2]));
        assert_eq!(
            run(ReduceFn::Sum, &[0], true),
            (vec![5.0, 7.0, 9.0], vec![1, 3])
        );
        assert_eq!(run(ReduceFn::Mean, &[0, 1], false), (vec![3.5], vec![]));
        assert_eq!(run(ReduceFn::Max, &[1], true), (vec![3.0, 6.0], vec![2, 1]));
        assert_eq!(run(ReduceFn::Sum, &[], false), (x.to_vec(), vec![2, 3]));
        // Rank 5 with size-1 dims, reducing the middle axes.
        let y: Vec<f64> = (0..12).map(f64::from).collect();
        let (out, shape) = reduce(
            ReduceFn::Sum,
            DType::Fp32,
            &y,
            &[1, 2, 1, 3, 2],
            &[1, 3],
            false,
        )
        .unwrap();
        assert_eq!(shape, vec![1, 1, 2]);
        // sum over a (2) and c (3) for each e: e=0: 0+2+4+6+8+10, e=1: 1+3+..+11
        assert_eq!(out, vec![30.0, 36.0]);
        assert!(reduce(ReduceFn::Sum, DType::Fp32, &x, &[2, 3], &[2], false).is_err());
    }

    #[test]
    fn reduce_precision_overflow_and_nan() {
        // fp16 sum rounds once: 2048 + 1 + 1 = 2050 exactly (stepwise fp16 would give 2048).
        let (out, _) = reduce(
            ReduceFn::Sum,
            DType::Fp16,
            &[2048.0, 1.0, 1.0],
            &[3],
            &[0],
            false,
        )
        .unwrap();
        assert_eq!(out, vec![2050.0]);
        // RMSNorm hazard: a sum above 65504 becomes +inf in fp16.
        let (out, _) = reduce(
            ReduceFn::Sum,
            DType::Fp16,
            &[40000.0, 30000.0],
            &[2],
            &[0],
            false,
        )
        .unwrap();
        assert_eq!(out, vec![f64::INFINITY]);
        let (out, _) = reduce(
            ReduceFn::Max,
            DType::Fp32,
            &[1.0, f64::NAN, 3.0],
            &[3],
            &[0],
            false,
        )
        .unwrap();
        assert!(out[0].is_nan());
        let (out, _) = reduce(
            ReduceFn::Max,
            DType::Fp32,
            &[f64::NEG_INFINITY, -0.0, f64::NEG_INFINITY, 0.0],
            &[2, 2],
            &[1],
            false,
        )
        .unwrap();
        assert_eq!(out[0].to_bits(), (-0.0f64).to_bits());
        assert_eq!(out[1].to_bits(), 0.0f64.to_bits());
        let (out, _) = reduce(
            ReduceFn::Max,
            DType::Fp16,
            &[f64::NEG_INFINITY, f64::NEG_INFINITY],
            &[2],
            &[0],
            false,
        )
        .unwrap();
        assert_eq!(out, vec![f64::NEG_INFINITY]);
    }

    #[test]
    fn integer_reductions() {
        let x = [-7.0, 2.0, f64::from(i32::MAX), 1.0];
        let (out, _) = reduce(ReduceFn::Mean, DType::Int32, &x, &[2, 2], &[1], false).unwrap();
        assert_eq!(out, vec![-2.0, f64::from(1u32 << 30)]); // -5/2 -> -2, (2^31-1+1)/2
        let (out, _) = reduce(ReduceFn::Sum, DType::Int32, &x, &[2, 2], &[1], false).unwrap();
        assert_eq!(out, vec![-5.0, f64::from(i32::MIN)]);
        let (out, _) = reduce(ReduceFn::Max, DType::Int32, &x, &[2, 2], &[0], false).unwrap();
        assert_eq!(out, vec![f64::from(i32::MAX), 2.0]);
    }

    #[test]
    fn softmax_values_and_edges() {
        let out = softmax(DType::Fp32, &[0.0, 0.0, 1.0, 1.0], &[2, 2], 1).unwrap();
        assert_eq!(out, vec![0.5; 4]);
        let out = softmax(DType::Fp32, &[1.0, 2.0, 3.0], &[3], 0).unwrap();
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp();
        assert_eq!(
            out,
            vec![
                round_float(DType::Fp32, 1f64.exp() / z),
                round_float(DType::Fp32, 2f64.exp() / z),
                round_float(DType::Fp32, 3f64.exp() / z)
            ]
        );
        // Axis 0 of [2, 2]: columns.
        let out = softmax(DType::Fp16, &[0.0, 5.0, 0.0, 5.0], &[2, 2], 0).unwrap();
        assert_eq!(out, vec![0.5; 4]);
        // All -inf row -> NaN; +inf -> NaN; single element -> 1; large values do not overflow.
        let ninf = f64::NEG_INFINITY;
        let out = softmax(DType::Fp16, &[ninf, ninf, f64::INFINITY, 0.0], &[2, 2], 1).unwrap();
        assert!(out.iter().all(|value| value.is_nan()));
        let out = softmax(DType::Fp16, &[ninf, 3.0], &[2], 0).unwrap();
        assert_eq!(out, vec![0.0, 1.0]);
        assert_eq!(
            softmax(DType::Fp16, &[-65504.0], &[1], 0).unwrap(),
            vec![1.0]
        );
        let out = softmax(DType::Fp16, &[65504.0, 65504.0], &[2], 0).unwrap();
        assert_eq!(out, vec![0.5, 0.5]);
        let out = softmax(DType::Fp32, &[f64::NAN, 1.0], &[2], 0).unwrap();
        assert!(out.iter().all(|value| value.is_nan()));
    }

    #[test]
    fn layer_norm_values() {
        // Row [1, 2, 3, 4]: mean 2.5, var 1.25.
        let x = [1.0, 2.0, 3.0, 4.0];
        let out = layer_norm(DType::Fp32, &x, &[1, 4], &[1], None, None, 0.0).unwrap();
        let sd = 1.25f64.sqrt();
        let want: Vec<f64> = x
            .iter()
            .map(|value| round_float(DType::Fp32, (value - 2.5) / sd))
            .collect();
        assert_eq!(out, want);
        let gamma = [1.0, 2.0, 3.0, 4.0];
        let beta = [0.5, 0.0, 0.0, -0.5];
        let out = layer_norm(
            DType::Fp32,
            &x,
            &[1, 4],
            &[1],
            Some(&gamma),
            Some(&beta),
            0.0,
        )
        .unwrap();
        assert_eq!(out[0], round_float(DType::Fp32, -1.5 / sd + 0.5));
        assert_eq!(out[3], round_float(DType::Fp32, 4.0 * 1.5 / sd - 0.5));
        // Constant input: var 0, eps keeps it finite: output = beta.
        let out = layer_norm(
            DType::Fp16,
            &[3.0; 4],
            &[2, 2],
            &[0, 1],
            None,
            Some(&beta),
            1e-5,
        )
        .unwrap();
        assert_eq!(out, beta.to_vec());
        // Two axes of a [2, 2, 2] tensor, gamma indexed by (axis 0, axis 2).
        let y: Vec<f64> = (0..8).map(f64::from).collect();
        let g = [1.0, 2.0, 3.0, 4.0];
        let out = layer_norm(DType::Fp32, &y, &[2, 2, 2], &[2, 0], Some(&g), None, 0.0).unwrap();
        // group j=0: elements (0,0,0)=0, (0,0,1)=1, (1,0,0)=4, (1,0,1)=5; mean 2.5, var 4.25.
        let sd = 4.25f64.sqrt();
        assert_eq!(out[0], round_float(DType::Fp32, -2.5 / sd));
        assert_eq!(out[5], round_float(DType::Fp32, 4.0 * 2.5 / sd));
        assert!(layer_norm(DType::Fp32, &x, &[1, 4], &[1], Some(&[1.0]), None, 0.0).is_err());
    }
}
