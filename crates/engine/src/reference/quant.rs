//! `quantize`, `dequantize` (mil-spec 6.16) and `constexpr_affine_dequantize` (6.2).
//!
//! `quantize`: `clamp(round_half_even(x / scale) + zero_point, lo, hi)` with the quotient in
//! `f64` (exact at every tie: a tie of two fp16/fp32 values is representable), NaN to 0.
//! `dequantize`: `(q - zero_point) * scale`, exact in `f64`, rounded once to the output dtype.

use super::RefError;
use super::index::{numel, unravel};
use super::numeric::round_float;
use milbridge_mil::ir::{DType, OpKind};

/// Scale and zero point, each scalar (one element) or a vector indexed by `axis`.
#[derive(Clone, Copy, Debug)]
pub struct AffineParams<'a> {
    /// Scale values.
    pub scale: &'a [f64],
    /// Zero point values (default 0).
    pub zero_point: Option<&'a [f64]>,
    /// Normalised axis the vectors run along (required when either is a vector).
    pub axis: Option<usize>,
}

impl AffineParams<'_> {
    /// `(scale, zero_point)` for each element of `shape`.
    fn per_element(&self, kind: OpKind, shape: &[usize]) -> Result<Vec<(f64, f64)>, RefError> {
        let zero = [0.0];
        let zero_point = self.zero_point.unwrap_or(&zero);
        for (name, values) in [("scale", self.scale), ("zero_point", zero_point)] {
            let ok = match (values.len(), self.axis) {
                (1, _) => true,
                (len, Some(axis)) => axis < shape.len() && len == shape[axis],
                (_, None) => false,
            };
            if !ok {
                return Err(RefError::malformed(
                    kind,
                    format!(
                        "{name} of length {} does not fit {shape:?} on axis {:?}",
                        values.len(),
                        self.axis
                    ),
                ));
            }
        }
        let pick = |values: &[f64], index: &[usize]| match (values.len(), self.axis) {
            (1, _) => values[0],
            (_, Some(axis)) => values[index[axis]],
            (_, None) => unreachable!("checked above: a vector parameter has an axis"),
        };
        Ok((0..numel(shape))
            .map(|linear| {
                let index = unravel(linear, shape);
                (pick(self.scale, &index), pick(zero_point, &index))
            })
            .collect())
    }
}

/// Quantizes `x` to `out_dtype` (int8 or uint8).
pub fn quantize(
    x: &[f64],
    shape: &[usize],
    params: AffineParams<'_>,
    out_dtype: DType,
) -> Result<Vec<f64>, RefError> {
    let kind = OpKind::Quantize;
    let (lo, hi) = match out_dtype {
        DType::Int8 | DType::Uint8 => out_dtype.int_range().expect("int8/uint8 have ranges"),
        other => return Err(RefError::malformed(kind, format!("output dtype {other}"))),
    };
    let per_element = params.per_element(kind, shape)?;
    Ok(x.iter()
        .zip(per_element)
        .map(|(&value, (scale, zero_point))| {
            let q = (value / scale).round_ties_even() + zero_point;
            if q.is_nan() {
                0.0
            } else {
                q.clamp(lo as f64, hi as f64)
            }
        })
        .collect())
}

/// Dequantizes integer `x` to `out_dtype` (the scale's dtype).
pub fn dequantize(
    kind: OpKind,
    x: &[f64],
    shape: &[usize],
    params: AffineParams<'_>,
    out_dtype: DType,
) -> Result<Vec<f64>, RefError> {
    if !out_dtype.is_float() {
        return Err(RefError::malformed(
            kind,
            format!("output dtype {out_dtype}"),
        ));
    }
    let per_element = params.per_element(kind, shape)?;
    Ok(x.iter()
        .zip(per_element)
        .map(|(&q, (scale, zero_point))| round_float(out_dtype, (q - zero_point) * scale))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_ties_saturation_nan() {
        let scalar = AffineParams {
            scale: &[0.125],
            zero_point: None,
            axis: None,
        };
        // x / scale = 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, 0.5 -> 0, 1.5 -> 2.
        let x = [0.3125, 0.4375, -0.3125, 0.0625, 0.1875];
        assert_eq!(
            quantize(&x, &[5], scalar, DType::Int8).unwrap(),
            vec![2.0, 4.0, -2.0, 0.0, 2.0]
        );
        let x = [100.0, -100.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        assert_eq!(
            quantize(&x, &[5], scalar, DType::Int8).unwrap(),
            vec![127.0, -128.0, 0.0, 127.0, -128.0]
        );
        // uint8 with zero point 128.
        let params = AffineParams {
            scale: &[0.5],
            zero_point: Some(&[128.0]),
            axis: None,
        };
        assert_eq!(
            quantize(&[-1.0, 1.25, 100.0, -100.0], &[4], params, DType::Uint8).unwrap(),
            vec![126.0, 130.0, 255.0, 0.0]
        );
        assert!(quantize(&[1.0], &[1], scalar, DType::Fp16).is_err());
    }

    #[test]
    fn per_axis_parameters() {
        // [2, 2] with per-row (axis 0) scales.
        let params = AffineParams {
            scale: &[1.0, 0.5],
            zero_point: Some(&[0.0, 10.0]),
            axis: Some(0),
        };
        let q = quantize(&[1.0, 2.0, 1.0, 2.0], &[2, 2], params, DType::Int8).unwrap();
        assert_eq!(q, vec![1.0, 2.0, 12.0, 14.0]);
        let back = dequantize(OpKind::Dequantize, &q, &[2, 2], params, DType::Fp32).unwrap();
        assert_eq!(back, vec![1.0, 2.0, 1.0, 2.0]);
        // Per-column (axis 1).
        let params = AffineParams {
            scale: &[2.0, 3.0],
            zero_point: None,
            axis: Some(1),
        };
        let out = dequantize(
            OpKind::Dequantize,
            &[1.0, 1.0, -2.0, 2.0],
            &[2, 2],
            params,
            DType::Fp16,
        )
        .unwrap();
        assert_eq!(out, vec![2.0, 3.0, -4.0, 6.0]);
        let bad = AffineParams {
            scale: &[1.0, 2.0, 3.0],
            zero_point: None,
            axis: Some(1),
        };
        assert!(dequantize(OpKind::Dequantize, &[0.0; 4], &[2, 2], bad, DType::Fp16).is_err());
    }

    #[test]
    fn dequantize_rounds_once() {
        // 127 * 0.0001 in fp16: exact product 0.0127..., rounded once.
        let scale = round_float(DType::Fp16, 1e-4);
        let params = AffineParams {
            scale: &[scale],
            zero_point: Some(&[-1.0]),
            axis: None,
        };
        let out = dequantize(
            OpKind::ConstexprAffineDequantize,
            &[127.0],
            &[1],
            params,
            DType::Fp16,
        )
        .unwrap();
        assert_eq!(out, vec![round_float(DType::Fp16, 128.0 * scale)]);
        // fp16 overflow of a large scale.
        let params = AffineParams {
            scale: &[1024.0],
            zero_point: None,
            axis: None,
        };
        let out = dequantize(
            OpKind::Dequantize,
            &[127.0, -128.0],
            &[2],
            params,
            DType::Fp16,
        )
        .unwrap();
        assert_eq!(out, vec![f64::INFINITY, f64::NEG_INFINITY]);
    }
}
