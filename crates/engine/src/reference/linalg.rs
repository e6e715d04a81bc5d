//! Products: `matmul` (mil-spec 6.9.1), `linear` (6.9.2), `conv` (6.9.3) and
//! `scaled_dot_product_attention` (6.11).
//!
//! Floats: every dot product is accumulated in `f64` in increasing index order and rounded once.
//! Integers (`matmul`, `linear` on int32): accumulated exactly in `i128`, then wrapped.

use super::elementwise::maximum;
use super::index::{broadcast_shapes, broadcast_source, numel, strides, unravel};
use super::numeric::{round_float, wrap_int};
use super::{RefError, Shaped};
use milbridge_mil::ir::{DType, OpKind};

/// Sum of products accumulated exactly for integers and in `f64` for floats, then stored.
struct Dot {
    dtype: DType,
    is_int: bool,
    float: f64,
    int: i128,
}

impl Dot {
    fn new(dtype: DType, start: f64) -> Dot {
        Dot {
            dtype,
            is_int: dtype.is_int(),
            float: start,
            int: start as i128,
        }
    }

    fn add(&mut self, a: f64, b: f64) {
        if self.is_int {
            self.int += a as i128 * b as i128;
        } else {
            self.float += a * b;
        }
    }

    fn finish(self) -> f64 {
        if self.is_int {
            wrap_int(self.dtype, self.int)
        } else {
            round_float(self.dtype, self.float)
        }
    }
}

fn check_numeric(kind: OpKind, dtype: DType, ints_allowed: bool) -> Result<(), RefError> {
    if dtype.is_float() || (ints_allowed && dtype.is_int()) {
        Ok(())
    } else {
        Err(RefError::malformed(
            kind,
            format!("dtype {dtype} not allowed"),
        ))
    }
}

fn check_len(kind: OpKind, name: &str, data: &[f64], shape: &[usize]) -> Result<(), RefError> {
    if data.len() == numel(shape) {
        Ok(())
    } else {
        Err(RefError::malformed(
            kind,
            format!("{name} has {} elements for {shape:?}", data.len()),
        ))
    }
}

/// One matmul operand viewed as a batch of `rows x cols` matrices after its transpose flag and
/// rank-1 promotion.
struct MatrixView<'a> {
    data: &'a [f64],
    batch: Vec<usize>,
    rows: usize,
    cols: usize,
    /// Element step between consecutive logical rows / columns of one stored matrix.
    row_stride: usize,
    col_stride: usize,
}

impl MatrixView<'_> {
    fn new<'a>(
        data: &'a [f64],
        shape: &[usize],
        transpose: bool,
        rank1_is_row: bool,
    ) -> MatrixView<'a> {
        if shape.len() == 1 {
            // A rank-1 x is [1, K]; a rank-1 y is [K, 1]. A transpose flag is ignored.
            let (rows, cols) = if rank1_is_row {
                (1, shape[0])
            } else {
                (shape[0], 1)
            };
            let batch = Vec::new();
            return MatrixView {
                data,
                batch,
                rows,
                cols,
                row_stride: cols,
                col_stride: 1,
            };
        }
        let (a, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let batch = shape[..shape.len() - 2].to_vec();
        if transpose {
            // Logical (row, col) is stored at (col, row).
            MatrixView {
                data,
                batch,
                rows: c,
                cols: a,
                row_stride: 1,
                col_stride: c,
            }
        } else {
            MatrixView {
                data,
                batch,
                rows: a,
                cols: c,
                row_stride: c,
                col_stride: 1,
            }
        }
    }

    /// The position of the matrix that output batch `batch_index` reads (broadcast).
    fn base(&self, batch_index: &[usize]) -> usize {
        broadcast_source(batch_index, &self.batch) * self.rows * self.cols
    }

    fn get(&self, base: usize, row: usize, col: usize) -> f64 {
        self.data[base + row * self.row_stride + col * self.col_stride]
    }
}

/// Batched matrix product with NumPy batch broadcasting; `transpose_x`/`transpose_y` swap the
/// last two dims of a rank >= 2 operand (ignored on rank 1). A rank-1 `x` is a row vector and a
/// rank-1 `y` a column vector; the added dimension is removed from the result.
pub fn matmul(
    dtype: DType,
    x: &[f64],
    x_shape: &[usize],
    y: &[f64],
    y_shape: &[usize],
    transpose_x: bool,
    transpose_y: bool,
) -> Result<Shaped, RefError> {
    let kind = OpKind::Matmul;
    check_numeric(kind, dtype, true)?;
    check_len(kind, "x", x, x_shape)?;
    check_len(kind, "y", y, y_shape)?;
    if x_shape.is_empty() || y_shape.is_empty() {
        return Err(RefError::malformed(
            kind,
            "operands must have rank >= 1".to_string(),
        ));
    }
    let xv = MatrixView::new(x, x_shape, transpose_x, true);
    let yv = MatrixView::new(y, y_shape, transpose_y, false);
    if xv.cols != yv.rows {
        return Err(RefError::malformed(
            kind,
            format!(
                "inner dimensions differ: x has k={}, y has k={}",
                xv.cols, yv.rows
            ),
        ));
    }
    let batch = broadcast_shapes(&[&xv.batch, &yv.batch]).ok_or_else(|| {
        RefError::malformed(
            kind,
            format!(
                "batch dims {:?} and {:?} do not broadcast",
                xv.batch, yv.batch
            ),
        )
    })?;
    let (m_size, n_size, k_size) = (xv.rows, yv.cols, xv.cols);
    let mut out = Vec::with_capacity(numel(&batch) * m_size * n_size);
    for b in 0..numel(&batch) {
        let batch_index = unravel(b, &batch);
        let (x_base, y_base) = (xv.base(&batch_index), yv.base(&batch_index));
        for m in 0..m_size {
            for n in 0..n_size {
                let mut dot = Dot::new(dtype, 0.0);
                for k in 0..k_size {
                    dot.add(xv.get(x_base, m, k), yv.get(y_base, k, n));
                }
                out.push(dot.finish());
            }
        }
    }
    let mut out_shape = batch;
    if x_shape.len() != 1 {
        out_shape.push(m_size);
    }
    if y_shape.len() != 1 {
        out_shape.push(n_size);
    }
    Ok((out, out_shape))
}

/// `out[..., o] = sum_i x[..., i] * weight[o, i] + bias[o]` (bias default zeros).
pub fn linear(
    dtype: DType,
    x: &[f64],
    x_shape: &[usize],
    weight: &[f64],
    weight_shape: &[usize],
    bias: Option<&[f64]>,
) -> Result<Shaped, RefError> {
    let kind = OpKind::Linear;
    check_numeric(kind, dtype, true)?;
    check_len(kind, "x", x, x_shape)?;
    check_len(kind, "weight", weight, weight_shape)?;
    let (&d_in, outer) = x_shape
        .split_last()
        .ok_or_else(|| RefError::malformed(kind, "x must have rank >= 1".to_string()))?;
    let [d_out, w_in] = *weight_shape else {
        return Err(RefError::malformed(
            kind,
            format!("weight shape {weight_shape:?} is not rank 2"),
        ));
    };
    if w_in != d_in || bias.is_some_and(|bias| bias.len() != d_out) {
        return Err(RefError::malformed(
            kind,
            format!("x {x_shape:?} and weight {weight_shape:?} disagree"),
        ));
    }
    let mut out = Vec::with_capacity(numel(outer) * d_out);
    for row in 0..numel(outer) {
        for o in 0..d_out {
            let mut dot = Dot::new(dtype, bias.map_or(0.0, |bias| bias[o]));
            for i in 0..d_in {
                dot.add(x[row * d_in + i], weight[o * d_in + i]);
            }
            out.push(dot.finish());
        }
    }
    let mut out_shape = outer.to_vec();
    out_shape.push(d_out);
    Ok((out, out_shape))
}

/// Convolution padding mode (mil-spec 6.9.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConvPadding {
    /// No padding.
    Valid,
    /// `total = max(0, (ceil(D/st) - 1) * st + E - D)`, the odd element after.
    Same,
    /// As `Same`, the odd element before.
    SameLower,
    /// Explicit `(before, after)` per spatial dimension.
    Custom(Vec<(usize, usize)>),
}

/// Normalised convolution parameters, one entry per spatial dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Strides (each >= 1).
    pub strides: Vec<usize>,
    /// Dilations (each >= 1).
    pub dilations: Vec<usize>,
    /// Padding mode.
    pub padding: ConvPadding,
    /// Group count (`C_in` and `C_out` divisible by it).
    pub groups: usize,
}

impl ConvParams {
    /// Defaults for `spatial` dims: strides and dilations 1, valid padding, one group.
    pub fn defaults(spatial: usize) -> ConvParams {
        ConvParams {
            strides: vec![1; spatial],
            dilations: vec![1; spatial],
            padding: ConvPadding::Valid,
            groups: 1,
        }
    }
}

/// The `(before, after)` padding of each spatial dim for inputs `spatial_in` and kernel sizes
/// `kernel`.
pub fn conv_pads(
    params: &ConvParams,
    spatial_in: &[usize],
    kernel: &[usize],
) -> Vec<(usize, usize)> {
    (0..spatial_in.len())
        .map(|s| {
            let (size, stride) = (spatial_in[s], params.strides[s]);
            let effective = (kernel[s] - 1) * params.dilations[s] + 1;
            let total = ((size.div_ceil(stride) - 1) * stride + effective).saturating_sub(size);
            match &params.padding {
                ConvPadding::Valid => (0, 0),
                ConvPadding::Custom(pads) => pads[s],
                ConvPadding::Same => (total / 2, total - total / 2),
                ConvPadding::SameLower => (total.div_ceil(2), total - total.div_ceil(2)),
            }
        })
        .collect()
}

/// N-d cross-correlation (1 to 3 spatial dims): `x [N, C_in, *D]`, `weight [C_out, C_in/groups,
/// *K]`, optional `bias [C_out]`; zero padding; output `[N, C_out, *d_out]`.
pub fn conv(
    dtype: DType,
    x: &[f64],
    x_shape: &[usize],
    weight: &[f64],
    weight_shape: &[usize],
    bias: Option<&[f64]>,
    params: &ConvParams,
) -> Result<Shaped, RefError> {
    let kind = OpKind::Conv;
    check_numeric(kind, dtype, false)?;
    check_len(kind, "x", x, x_shape)?;
    check_len(kind, "weight", weight, weight_shape)?;
    let spatial = x_shape.len().saturating_sub(2);
    let bad = |message: String| Err(RefError::malformed(kind, message));
    if !(1..=3).contains(&spatial) || weight_shape.len() != x_shape.len() {
        return bad(format!("x {x_shape:?} and weight {weight_shape:?} ranks"));
    }
    let (batch, c_in, c_out, groups) = (x_shape[0], x_shape[1], weight_shape[0], params.groups);
    let spatial_in = &x_shape[2..];
    let kernel = &weight_shape[2..];
    if groups == 0
        || c_in % groups != 0
        || c_out % groups != 0
        || weight_shape[1] != c_in / groups
        || params.strides.len() != spatial
        || params.dilations.len() != spatial
        || params
            .strides
            .iter()
            .chain(&params.dilations)
            .any(|&v| v == 0)
        || matches!(&params.padding, ConvPadding::Custom(pads) if pads.len() != spatial)
        || bias.is_some_and(|bias| bias.len() != c_out)
    {
        return bad(format!(
            "inconsistent parameters for x {x_shape:?}, weight {weight_shape:?}"
        ));
    }
    let pads = conv_pads(params, spatial_in, kernel);
    let mut spatial_out = Vec::with_capacity(spatial);
    for s in 0..spatial {
        let effective = (kernel[s] - 1) * params.dilations[s] + 1;
        let padded = spatial_in[s] + pads[s].0 + pads[s].1;
        if padded < effective {
            return bad(format!(
                "kernel extent {effective} exceeds padded input {padded}"
            ));
        }
        spatial_out.push((padded - effective) / params.strides[s] + 1);
    }
    let (c_in_group, c_out_group) = (c_in / groups, c_out / groups);
    let mut out_shape = vec![batch, c_out];
    out_shape.extend_from_slice(&spatial_out);
    let x_strides = strides(x_shape);
    let w_strides = strides(weight_shape);
    // Each kernel point: its multi-index and its offset within one filter.
    let kernel_points: Vec<(Vec<usize>, usize)> = (0..numel(kernel))
        .map(|k_linear| {
            let k = unravel(k_linear, kernel);
            let offset = k
                .iter()
                .zip(&w_strides[2..])
                .map(|(i, stride)| i * stride)
                .sum();
            (k, offset)
        })
        .collect();
    let mut out = Vec::with_capacity(numel(&out_shape));
    for n in 0..batch {
        for o in 0..c_out {
            let group = o / c_out_group;
            for p_linear in 0..numel(&spatial_out) {
                let p = unravel(p_linear, &spatial_out);
                let mut dot = Dot::new(dtype, bias.map_or(0.0, |bias| bias[o]));
                for c_local in 0..c_in_group {
                    let c = group * c_in_group + c_local;
                    let x_base = n * x_strides[0] + c * x_strides[1];
                    let w_base = o * w_strides[0] + c_local * w_strides[1];
                    'kernel: for (k, w_offset) in &kernel_points {
                        let mut x_offset = x_base;
                        for s in 0..spatial {
                            let pos = (p[s] * params.strides[s] + k[s] * params.dilations[s])
                                as isize
                                - pads[s].0 as isize;
                            if pos < 0 || pos as usize >= spatial_in[s] {
                                continue 'kernel; // zero padding contributes nothing
                            }
                            x_offset += pos as usize * x_strides[2 + s];
                        }
                        dot.add(weight[w_base + w_offset], x[x_offset]);
                    }
                }
                out.push(dot.finish());
            }
        }
    }
    Ok((out, out_shape))
}

/// An attention mask: bool (`false` masks out, i.e. the score becomes `-inf`) or float
/// (added to the scores); its shape broadcasts to `[*batch, L, S]`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionMask<'a> {
    /// Mask values (bool as 0/1).
    pub data: &'a [f64],
    /// Mask shape.
    pub shape: &'a [usize],
    /// Whether the mask is bool (otherwise additive).
    pub boolean: bool,
}

/// `softmax((Q K^T) / sqrt(E) [masked], axis=-1) V` over identical leading batch dims.
pub fn scaled_dot_product_attention(
    dtype: DType,
    (query, query_shape): (&[f64], &[usize]),
    (key, key_shape): (&[f64], &[usize]),
    (value, value_shape): (&[f64], &[usize]),
    mask: Option<AttentionMask<'_>>,
) -> Result<Shaped, RefError> {
    let kind = OpKind::ScaledDotProductAttention;
    check_numeric(kind, dtype, false)?;
    check_len(kind, "query", query, query_shape)?;
    check_len(kind, "key", key, key_shape)?;
    check_len(kind, "value", value, value_shape)?;
    let rank = query_shape.len();
    let bad = |message: String| Err(RefError::malformed(kind, message));
    if rank < 3 || key_shape.len() != rank || value_shape.len() != rank {
        return bad(format!(
            "ranks of {query_shape:?}, {key_shape:?}, {value_shape:?}"
        ));
    }
    let batch = &query_shape[..rank - 2];
    let (l_size, e_size) = (query_shape[rank - 2], query_shape[rank - 1]);
    let (s_size, ev_size) = (key_shape[rank - 2], value_shape[rank - 1]);
    if &key_shape[..rank - 2] != batch
        || &value_shape[..rank - 2] != batch
        || key_shape[rank - 1] != e_size
        || value_shape[rank - 2] != s_size
    {
        return bad(format!(
            "shapes {query_shape:?}, {key_shape:?}, {value_shape:?} disagree"
        ));
    }
    let mut scores_shape = batch.to_vec();
    scores_shape.extend([l_size, s_size]);
    if let Some(mask) = mask {
        check_len(kind, "attn_mask", mask.data, mask.shape)?;
        if broadcast_shapes(&[mask.shape, &scores_shape]).as_deref() != Some(&scores_shape[..]) {
            return bad(format!(
                "mask {:?} does not broadcast to {scores_shape:?}",
                mask.shape
            ));
        }
    }
    let scale = (e_size as f64).sqrt();
    let mut out = Vec::with_capacity(numel(batch) * l_size * ev_size);
    for b in 0..numel(batch) {
        for l in 0..l_size {
            let q_row = &query[(b * l_size + l) * e_size..][..e_size];
            let mut scores: Vec<f64> = (0..s_size)
                .map(|s| {
                    let k_row = &key[(b * s_size + s) * e_size..][..e_size];
                    q_row.iter().zip(k_row).map(|(q, k)| q * k).sum::<f64>() / scale
                })
                .collect();
            if let Some(mask) = mask {
                let mut index = unravel(b, batch);
                index.extend([l, 0]);
                for (s, score) in scores.iter_mut().enumerate() {
                    index[rank - 1] = s;
                    let m = mask.data[broadcast_source(&index, mask.shape)];
                    if mask.boolean {
                        if m == 0.0 {
                            *score = f64::NEG_INFINITY;
                        }
                    } else {
                        *score += m;
                    }
                }
            }
            let max = scores
                .iter()
                .fold(f64::NEG_INFINITY, |acc, &score| maximum(acc, score));
            let exps: Vec<f64> = scores.iter().map(|score| (score - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            for ev in 0..ev_size {
                let weighted: f64 = exps
                    .iter()
                    .enumerate()
                    .map(|(s, e)| e / sum * value[(b * s_size + s) * ev_size + ev])
                    .sum();
                out.push(round_float(dtype, weighted));
            }
        }
    }
    let mut out_shape = batch.to_vec();
    out_shape.extend([l_size, ev_size]);
    Ok((out, out_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(n: usize) -> Vec<f64> {
        (0..n).map(|value| value as f64).collect()
    }

    #[test]
    fn matmul_2d_and_transposes() {
        // [[0,1,2],[3,4,5]] @ [[0,1],[2,3],[4,5]] = [[10,13],[28,40]]
        let (out, shape) = matmul(
            DType::Fp32,
            &iota(6),
            &[2, 3],
            &iota(6),
            &[3, 2],
            false,
            false,
        )
        .unwrap();
        assert_eq!((out, shape), (vec![10.0, 13.0, 28.0, 40.0], vec![2, 2]));
        // x^T with x stored [3, 2]: x^T = [[0,2,4],[1,3,5]]; @ y [3, 2].
        let (out, _) = matmul(
            DType::Fp32,
            &iota(6),
            &[3, 2],
            &iota(6),
            &[3, 2],
            true,
            false,
        )
        .unwrap();
        assert_eq!(out, vec![20.0, 26.0, 26.0, 35.0]);
        // x @ y^T with y stored [2, 3]: [[0,1,2],[3,4,5]] @ [[0,3],[1,4],[2,5]].
        let (out, _) = matmul(
            DType::Fp32,
            &iota(6),
            &[2, 3],
            &iota(6),
            &[2, 3],
            false,
            true,
        )
        .unwrap();
        assert_eq!(out, vec![5.0, 14.0, 14.0, 50.0]);
        let (out, _) = matmul(
            DType::Fp32,
            &iota(6),
            &[3, 2],
            &iota(6),
            &[2, 3],
            true,
            true,
        )
        .unwrap();
        // x^T = [[0,2,4],[1,3,5]], y^T = [[0,3],[1,4],[2,5]] -> [[10,28],[13,40]]
        assert_eq!(out, vec![10.0, 28.0, 13.0, 40.0]);
        assert!(
            matmul(
                DType::Fp32,
                &iota(6),
                &[2, 3],
                &iota(6),
                &[2, 3],
                false,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn matmul_rank1_cases() {
        // [3] @ [3] -> scalar
        let (out, shape) = matmul(
            DType::Fp32,
            &[1.0, 2.0, 3.0],
            &[3],
            &[4.0, 5.0, 6.0],
            &[3],
            false,
            false,
        )
        .unwrap();
        assert_eq!((out, shape), (vec![32.0], vec![]));
        // [2] @ [2, 3, 4]... per spec example [4] @ [10,4,3] -> [10,3]; small: [2] @ [2,2,3].
        let (out, shape) = matmul(
            DType::Fp32,
            &[1.0, 1.0],
            &[2],
            &iota(12),
            &[2, 2, 3],
            false,
            false,
        )
        .unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![3.0, 5.0, 7.0, 15.0, 17.0, 19.0]);
        // [2, 3, 2] @ [2] -> [2, 3]
        let (out, shape) = matmul(
            DType::Fp32,
            &iota(12),
            &[2, 3, 2],
            &[1.0, -1.0],
            &[2],
            false,
            false,
        )
        .unwrap();
        assert_eq!((out, shape), (vec![-1.0; 6], vec![2, 3]));
        // A transpose flag on a rank-1 operand is ignored.
        let (out, _) = matmul(
            DType::Fp32,
            &[1.0, 2.0],
            &[2],
            &[3.0, 4.0],
            &[2],
            true,
            true,
        )
        .unwrap();
        assert_eq!(out, vec![11.0]);
    }

    #[test]
    fn matmul_batch_broadcast_and_int() {
        // x [2, 1, 1, 2] @ y [3, 2, 1] -> [2, 3, 1, 1]
        let (out, shape) = matmul(
            DType::Fp16,
            &iota(4),
            &[2, 1, 1, 2],
            &iota(6),
            &[3, 2, 1],
            false,
            false,
        )
        .unwrap();
        assert_eq!(shape, vec![2, 3, 1, 1]);
        // x batches: [0,1], [2,3]; y batches: [0,1], [2,3], [4,5].
        assert_eq!(out, vec![1.0, 3.0, 5.0, 3.0, 13.0, 23.0]);
        let big = f64::from(1 << 16);
        let (out, _) = matmul(
            DType::Int32,
            &[big, big],
            &[1, 2],
            &[big, 1.0],
            &[2, 1],
            false,
            false,
        )
        .unwrap();
        assert_eq!(out, vec![big]); // 2^32 + 2^16 wraps to 2^16
        // fp16 rounds once at the end: 2048 + 1 + 1.
        let (out, _) = matmul(
            DType::Fp16,
            &[2048.0, 1.0, 1.0],
            &[3],
            &[1.0; 3],
            &[3],
            false,
            false,
        )
        .unwrap();
        assert_eq!(out, vec![2050.0]);
    }

    #[test]
    fn linear_values() {
        let (out, shape) = linear(
            DType::Fp32,
            &[1.0, 2.0, 3.0, 4.0],
            &[2, 2],
            &[1.0, 0.0, 1.0, 1.0, 0.0, -1.0],
            &[3, 2],
            Some(&[0.5, 0.0, 1.0]),
        )
        .unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![1.5, 3.0, -1.0, 3.5, 7.0, -3.0]);
        let (out, shape) =
            linear(DType::Int32, &[2.0, 3.0], &[2], &[4.0, 5.0], &[1, 2], None).unwrap();
        assert_eq!((out, shape), (vec![23.0], vec![1]));
    }

    #[test]
    fn conv_padding_modes() {
        // 1-D: x = [1..5], kernel [1, 1, 1], stride 2.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let w = [1.0, 1.0, 1.0];
        let mut params = ConvParams::defaults(1);
        params.strides = vec![2];
        let run = |params: &ConvParams| {
            conv(DType::Fp32, &x, &[1, 1, 5], &w, &[1, 1, 3], None, params).unwrap()
        };
        assert_eq!(run(&params), (vec![6.0, 12.0], vec![1, 1, 2]));
        // same: ceil(5/2) = 3 outputs, total = (3-1)*2 + 3 - 5 = 2 -> (1, 1).
        params.padding = ConvPadding::Same;
        assert_eq!(run(&params).0, vec![3.0, 9.0, 9.0]);
        // stride 1, kernel 2 ([1, 10]): total 1 -> same (0, 1), same_lower (1, 0).
        let w2 = [1.0, 10.0];
        let mut params = ConvParams::defaults(1);
        params.padding = ConvPadding::Same;
        let same = conv(DType::Fp32, &x, &[1, 1, 5], &w2, &[1, 1, 2], None, &params)
            .unwrap()
            .0;
        assert_eq!(same, vec![21.0, 32.0, 43.0, 54.0, 5.0]);
        params.padding = ConvPadding::SameLower;
        let lower = conv(DType::Fp32, &x, &[1, 1, 5], &w2, &[1, 1, 2], None, &params)
            .unwrap()
            .0;
        assert_eq!(lower, vec![10.0, 21.0, 32.0, 43.0, 54.0]);
        params.padding = ConvPadding::Custom(vec![(2, 0)]);
        let custom = conv(DType::Fp32, &x, &[1, 1, 5], &w2, &[1, 1, 2], None, &params).unwrap();
        assert_eq!(
            custom,
            (vec![0.0, 10.0, 21.0, 32.0, 43.0, 54.0], vec![1, 1, 6])
        );
        // Kernel larger than the input: error, not a panic.
        let params = ConvParams::defaults(1);
        assert!(
            conv(
                DType::Fp32,
                &x[..1],
                &[1, 1, 1],
                &w2,
                &[1, 1, 2],
                None,
                &params
            )
            .is_err()
        );
    }

    #[test]
    fn conv_2d_dilation_groups_bias() {
        // 1x1 conv == per-position matrix product (REPO linear pattern), with bias.
        let x = iota(6); // [1, 2, 1, 3]
        let w = [1.0, 2.0, -1.0, 0.0]; // [2, 2, 1, 1]
        let params = ConvParams::defaults(2);
        let (out, shape) = conv(
            DType::Fp16,
            &x,
            &[1, 2, 1, 3],
            &w,
            &[2, 2, 1, 1],
            Some(&[0.5, 0.0]),
            &params,
        )
        .unwrap();
        assert_eq!(shape, vec![1, 2, 1, 3]);
        assert_eq!(out, vec![6.5, 9.5, 12.5, 0.0, -1.0, -2.0]);
        // Dilation 2 on a 1x5 row with a 1x2 kernel: out[w] = x[w] + x[w + 2].
        let mut params = ConvParams::defaults(2);
        params.dilations = vec![1, 2];
        let (out, shape) = conv(
            DType::Fp32,
            &iota(5),
            &[1, 1, 1, 5],
            &[1.0, 1.0],
            &[1, 1, 1, 2],
            None,
            &params,
        )
        .unwrap();
        assert_eq!((out, shape), (vec![2.0, 4.0, 6.0], vec![1, 1, 1, 3]));
        // Depthwise: groups = C = 2, each channel scaled by its own weight.
        let mut params = ConvParams::defaults(2);
        params.groups = 2;
        let (out, _) = conv(
            DType::Fp32,
            &iota(4),
            &[1, 2, 1, 2],
            &[2.0, 3.0],
            &[2, 1, 1, 1],
            None,
            &params,
        )
        .unwrap();
        assert_eq!(out, vec![0.0, 2.0, 6.0, 9.0]);
        // groups = 2 with C_in 4, C_out 2: output 1 sees channels 2..4 only.
        let x: Vec<f64> = vec![1.0, 10.0, 100.0, 1000.0]; // [1, 4, 1, 1]
        let (out, _) = conv(
            DType::Fp32,
            &x,
            &[1, 4, 1, 1],
            &[1.0, 1.0, 1.0, 2.0],
            &[2, 2, 1, 1],
            None,
            &params,
        )
        .unwrap();
        assert_eq!(out, vec![11.0, 2100.0]);
        // 2-D 3x3 kernel of ones, same padding on 3x3 input -> neighbourhood sums.
        let mut params = ConvParams::defaults(2);
        params.padding = ConvPadding::Same;
        let (out, _) = conv(
            DType::Fp32,
            &[1.0; 9],
            &[1, 1, 3, 3],
            &[1.0; 9],
            &[1, 1, 3, 3],
            None,
            &params,
        )
        .unwrap();
        assert_eq!(out, vec![4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
    }

    #[test]
    fn conv_3d() {
        // [1, 1, 2, 2, 2] input, 2x2x2 kernel of ones, valid: sum of everything.
        let params = ConvParams::defaults(3);
        let (out, shape) = conv(
            DType::Fp32,
            &iota(8),
            &[1, 1, 2, 2, 2],
            &[1.0; 8],
            &[1, 1, 2, 2, 2],
            None,
            &params,
        )
        .unwrap();
        assert_eq!((out, shape), (vec![28.0], vec![1, 1, 1, 1, 1]));
    }

    #[test]
    fn sdpa_masks() {
        // B=1, L=2, S=2, E=1, EV=1: q = [1, 0], k = [0, 0] -> uniform weights.
        let q = [1.0, 0.0];
        let k = [0.0, 0.0];
        let v = [2.0, 4.0];
        let shape = [1, 2, 1];
        let run = |mask| {
            scaled_dot_product_attention(
                DType::Fp32,
                (&q, &shape),
                (&k, &shape),
                (&v, &shape),
                mask,
            )
            .unwrap()
        };
        assert_eq!(run(None), (vec![3.0, 3.0], vec![1, 2, 1]));
        // Causal bool mask [[1, 0], [1, 1]].
        let causal = [1.0, 0.0, 1.0, 1.0];
        let bool_mask = AttentionMask {
            data: &causal,
            shape: &[2, 2],
            boolean: true,
        };
        assert_eq!(run(Some(bool_mask)).0, vec![2.0, 3.0]);
        // Float mask -65504 above the diagonal (fp16 REPO convention): same result in f64.
        let additive = [0.0, -65504.0, 0.0, 0.0];
        let float_mask = AttentionMask {
            data: &additive,
            shape: &[2, 2],
            boolean: false,
        };
        assert_eq!(run(Some(float_mask)).0, vec![2.0, 3.0]);
        // A row masked entirely gives NaN.
        let none = [0.0, 0.0, 1.0, 1.0];
        let out = run(Some(AttentionMask {
            data: &none,
            shape: &[2, 2],
            boolean: true,
        }))
        .0;
        assert!(out[0].is_nan());
        assert_eq!(out[1], 3.0);
        // Scores are scaled by 1/sqrt(E): E = 4, q.k = 4 ln 3 * 2 / 2 ... check softmax weights.
        let q4 = [1.0, 1.0, 1.0, 1.0];
        let k4 = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let v4 = [0.0, 1.0];
        let (out, _) = scaled_dot_product_attention(
            DType::Fp32,
            (&q4, &[1, 1, 4]),
            (&k4, &[1, 2, 4]),
            (&v4, &[1, 2, 1]),
            None,
        )
        .unwrap();
        // scores [0, 4/2 = 2] -> weight of v=1 is e^2/(1+e^2).
        let want = 2f64.exp() / (1.0 + 2f64.exp());
        assert_eq!(out, vec![round_float(DType::Fp32, want)]);
        let bad = AttentionMask {
            data: &[1.0; 3],
            shape: &[3],
            boolean: true,
        };
        assert!(
            scaled_dot_product_attention(
                DType::Fp32,
                (&q, &shape),
                (&k, &shape),
                (&v, &shape),
                Some(bad)
            )
            .is_err()
        );
    }
}
