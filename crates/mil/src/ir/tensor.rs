//! Constant tensor values: literals, `const` results, loaded blobs and folded constants.

use super::types::{DType, TensorType};
use half::{bf16, f16};
use std::sync::Arc;

/// The payload of a constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Dense little-endian elements of the tensor's dtype (bool: one byte, 0 or 1; sub-byte
    /// types packed LSB-first as in MILBlob).
    Bytes(Arc<[u8]>),
    /// One string per element (row-major), for `string` tensors.
    Strings(Arc<[String]>),
}

/// A constant tensor: its type and its elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Type of the tensor.
    pub ty: TensorType,
    /// Elements.
    pub data: TensorData,
}

/// Why a tensor could not be built from the given elements.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// The number of elements differs from the shape's element count.
    #[error("{got} elements given for a shape of {expected}")]
    Count {
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The dtype cannot hold this kind of element.
    #[error("dtype {0} cannot be built this way")]
    DType(DType),
}

impl Tensor {
    /// A tensor from raw little-endian bytes; checks the byte count.
    pub fn from_bytes(ty: TensorType, bytes: impl Into<Arc<[u8]>>) -> Result<Tensor, TensorError> {
        let bytes = bytes.into();
        let expected = ty.byte_len().ok_or(TensorError::DType(ty.dtype))?;
        if bytes.len() != expected {
            return Err(TensorError::Count {
                expected,
                got: bytes.len(),
            });
        }
        Ok(Tensor {
            ty,
            data: TensorData::Bytes(bytes),
        })
    }

    /// A rank-0 string tensor.
    pub fn string(value: impl Into<String>) -> Tensor {
        Tensor {
            ty: TensorType::scalar(DType::String),
            data: TensorData::Strings(Arc::from(vec![value.into()])),
        }
    }

    /// A string tensor of any shape.
    pub fn strings(shape: Vec<usize>, values: Vec<String>) -> Result<Tensor, TensorError> {
        let ty = TensorType::new(DType::String, shape);
        if values.len() != ty.numel() {
            return Err(TensorError::Count {
                expected: ty.numel(),
                got: values.len(),
            });
        }
        Ok(Tensor {
            ty,
            data: TensorData::Strings(Arc::from(values)),
        })
    }

    /// A tensor of any byte-addressable numeric or bool dtype from `f64` values, converting each
    /// with the dtype's rule: round-to-nearest-even for floats (overflow to infinity), truncation
    /// toward zero with saturation for integers (NaN becomes 0), `!= 0` for bool.
    pub fn from_f64s(ty: TensorType, values: &[f64]) -> Result<Tensor, TensorError> {
        if values.len() != ty.numel() {
            return Err(TensorError::Count {
                expected: ty.numel(),
                got: values.len(),
            });
        }
        let size = ty.dtype.size_bytes().ok_or(TensorError::DType(ty.dtype))?;
        let mut bytes = Vec::with_capacity(values.len() * size);
        for &value in values {
            encode_f64(ty.dtype, value, &mut bytes).ok_or(TensorError::DType(ty.dtype))?;
        }
        Ok(Tensor {
            ty,
            data: TensorData::Bytes(Arc::from(bytes)),
        })
    }

    /// A tensor of an integer or bool dtype from `i64` values (wrapping to the dtype's width).
    pub fn from_i64s(ty: TensorType, values: &[i64]) -> Result<Tensor, TensorError> {
        if values.len() != ty.numel() {
            return Err(TensorError::Count {
                expected: ty.numel(),
                got: values.len(),
            });
        }
        if ty.dtype.is_float() {
            let as_f64: Vec<f64> = values.iter().map(|&value| value as f64).collect();
            return Tensor::from_f64s(ty, &as_f64);
        }
        let size = ty.dtype.size_bytes().ok_or(TensorError::DType(ty.dtype))?;
        let mut bytes = Vec::with_capacity(values.len() * size);
        for &value in values {
            if ty.dtype == DType::Bool {
                bytes.push(u8::from(value != 0));
            } else {
                bytes.extend_from_slice(&value.to_le_bytes()[..size]);
            }
        }
        Ok(Tensor {
            ty,
            data: TensorData::Bytes(Arc::from(bytes)),
        })
    }

    /// An `int32` tensor of shape `[values.len()]`.
    pub fn i32_vector(values: &[i32]) -> Tensor {
        let as_i64: Vec<i64> = values.iter().map(|&value| i64::from(value)).collect();
        Tensor::from_i64s(TensorType::new(DType::Int32, [values.len()]), &as_i64)
            .expect("count matches by construction")
    }

    /// A rank-0 tensor of a numeric or bool dtype.
    pub fn scalar_f64(dtype: DType, value: f64) -> Tensor {
        Tensor::from_f64s(TensorType::scalar(dtype), &[value]).expect("numeric scalar")
    }

    /// A rank-0 bool tensor.
    pub fn bool_scalar(value: bool) -> Tensor {
        Tensor::from_i64s(TensorType::scalar(DType::Bool), &[i64::from(value)])
            .expect("bool scalar")
    }

    /// The raw bytes, for numeric and bool tensors.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            TensorData::Bytes(bytes) => Some(bytes),
            TensorData::Strings(_) => None,
        }
    }

    /// Element `idx` as `f64`, for byte-addressable numeric and bool tensors.
    pub fn get_f64(&self, idx: usize) -> Option<f64> {
        let size = self.ty.dtype.size_bytes()?;
        let bytes = self.bytes()?.get(idx * size..(idx + 1) * size)?;
        decode_f64(self.ty.dtype, bytes)
    }

    /// All elements as `f64` (numeric and bool dtypes).
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        (0..self.ty.numel()).map(|idx| self.get_f64(idx)).collect()
    }

    /// All elements as `i64`, for integer and bool dtypes.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        if !(self.ty.dtype.is_int() || self.ty.dtype == DType::Bool) {
            return None;
        }
        self.to_f64_vec()
            .map(|values| values.into_iter().map(|value| value as i64).collect())
    }

    /// The string elements of a string tensor.
    pub fn strings_ref(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Strings(values) => Some(values),
            TensorData::Bytes(_) => None,
        }
    }

    /// The value of a rank-0 (or one-element) string tensor.
    pub fn as_str(&self) -> Option<&str> {
        match self.strings_ref()? {
            [single] => Some(single),
            _ => None,
        }
    }

    /// The value of a one-element bool tensor.
    pub fn as_bool(&self) -> Option<bool> {
        if self.ty.dtype != DType::Bool || self.ty.numel() != 1 {
            return None;
        }
        self.get_f64(0).map(|value| value != 0.0)
    }

    /// The value of a one-element integer tensor.
    pub fn as_i64(&self) -> Option<i64> {
        if !self.ty.dtype.is_int() || self.ty.numel() != 1 {
            return None;
        }
        self.get_f64(0).map(|value| value as i64)
    }
}

/// Rounds `value` to the nearest value of the float `dtype` (ties to even, overflow to
/// infinity) and returns it as `f64`; other dtypes return `value` unchanged.
pub fn round_to_dtype(value: f64, dtype: DType) -> f64 {
    match dtype {
        DType::Fp64 => value,
        DType::Fp32 => f64::from(value as f32),
        DType::Fp16 => round_binary(value, 10, -14, 15),
        DType::Bf16 => round_binary(value, 7, -126, 127),
        _ => value,
    }
}

/// `2^exp` for `exp` in the normal `f64` range.
fn pow2(exp: i32) -> f64 {
    f64::from_bits(((exp + 1023) as u64) << 52)
}

/// Correct rounding of an `f64` to a binary format with `mant_bits` fraction bits and normal
/// exponents `emin..=emax` (half's own `from_f64` truncates the low mantissa bits first).
fn round_binary(value: f64, mant_bits: i32, emin: i32, emax: i32) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    let biased = ((value.to_bits() >> 52) & 0x7ff) as i32;
    let exp = (biased - 1023).max(emin);
    let ulp_exp = exp - mant_bits;
    let rounded = (value * pow2(-ulp_exp)).round_ties_even() * pow2(ulp_exp);
    if rounded.abs() >= pow2(emax + 1) {
        f64::INFINITY.copysign(value)
    } else {
        rounded
    }
}

/// Appends the little-endian encoding of `value` converted to `dtype`; `None` for dtypes that
/// are not byte-addressable numbers or bool.
pub fn encode_f64(dtype: DType, value: f64, out: &mut Vec<u8>) -> Option<()> {
    fn to_int(value: f64, lo: i128, hi: i128) -> i128 {
        if value.is_nan() {
            0
        } else {
            (value.trunc() as i128).clamp(lo, hi)
        }
    }
    match dtype {
        DType::Fp16 => {
            out.extend_from_slice(&f16::from_f64(round_to_dtype(value, dtype)).to_le_bytes());
        }
        DType::Bf16 => {
            out.extend_from_slice(&bf16::from_f64(round_to_dtype(value, dtype)).to_le_bytes());
        }
        DType::Fp32 => out.extend_from_slice(&(value as f32).to_le_bytes()),
        DType::Fp64 => out.extend_from_slice(&value.to_le_bytes()),
        DType::Bool => out.push(u8::from(value != 0.0)),
        _ => {
            let (lo, hi) = dtype.int_range()?;
            let size = dtype.size_bytes()?;
            let int = to_int(value, lo, hi);
            out.extend_from_slice(&int.to_le_bytes()[..size]);
        }
    }
    Some(())
}

/// Decodes one little-endian element of `dtype` from exactly `size_bytes()` bytes.
pub fn decode_f64(dtype: DType, bytes: &[u8]) -> Option<f64> {
    Some(match dtype {
        DType::Fp16 => f16::from_le_bytes(bytes.try_into().ok()?).to_f64(),
        DType::Bf16 => bf16::from_le_bytes(bytes.try_into().ok()?).to_f64(),
        DType::Fp32 => f64::from(f32::from_le_bytes(bytes.try_into().ok()?)),
        DType::Fp64 => f64::from_le_bytes(bytes.try_into().ok()?),
        DType::Bool => f64::from(u8::from(*bytes.first()? != 0)),
        DType::Int8 => f64::from(i8::from_le_bytes(bytes.try_into().ok()?)),
        DType::Uint8 => f64::from(*bytes.first()?),
        DType::Int16 => f64::from(i16::from_le_bytes(bytes.try_into().ok()?)),
        DType::Uint16 => f64::from(u16::from_le_bytes(bytes.try_into().ok()?)),
        DType::Int32 => f64::from(i32::from_le_bytes(bytes.try_into().ok()?)),
        DType::Uint32 => f64::from(u32::from_le_bytes(bytes.try_into().ok()?)),
        DType::Int64 => i64::from_le_bytes(bytes.try_into().ok()?) as f64,
        DType::Uint64 => u64::from_le_bytes(bytes.try_into().ok()?) as f64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trip() {
        let ty = TensorType::new(DType::Fp16, [2, 2]);
        let tensor = Tensor::from_f64s(ty, &[0.0, -65504.0, 1e-5, 70000.0]).unwrap();
        let back = tensor.to_f64_vec().unwrap();
        assert_eq!(back[1], -65504.0);
        assert_eq!(back[2], 168.0 * 2f64.powi(-24));
        assert!(back[3].is_infinite());
        let ints = Tensor::i32_vector(&[1, -1, 0, 3]);
        assert_eq!(ints.to_i64_vec().unwrap(), vec![1, -1, 0, 3]);
        assert_eq!(Tensor::bool_scalar(true).as_bool(), Some(true));
        assert_eq!(Tensor::string("valid").as_str(), Some("valid"));
    }

    #[test]
    fn count_is_checked() {
        let ty = TensorType::new(DType::Int32, [3]);
        assert_eq!(
            Tensor::from_i64s(ty, &[1, 2]),
            Err(TensorError::Count {
                expected: 3,
                got: 2
            })
        );
    }
}
