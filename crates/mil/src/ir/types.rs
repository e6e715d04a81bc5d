//! Data types and tensor types (mil-spec 4.1, 4.2, 3.6).

use std::fmt;

/// A MIL element type. Text names as in mil-spec 4.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary16.
    Fp16,
    /// IEEE binary32.
    Fp32,
    /// IEEE binary64 (parsed; no op computes in it).
    Fp64,
    /// bfloat16 (blob level only).
    Bf16,
    /// 4-bit signed (constexpr compression only).
    Int4,
    /// 8-bit signed.
    Int8,
    /// 16-bit signed.
    Int16,
    /// 32-bit signed: shapes, axes, indices.
    Int32,
    /// 64-bit signed (parsed only).
    Int64,
    /// 1-bit unsigned (constexpr compression only).
    Uint1,
    /// 2-bit unsigned (constexpr compression only).
    Uint2,
    /// 3-bit unsigned (constexpr compression only).
    Uint3,
    /// 4-bit unsigned (constexpr compression only).
    Uint4,
    /// 6-bit unsigned (constexpr compression only).
    Uint6,
    /// 8-bit unsigned.
    Uint8,
    /// 16-bit unsigned.
    Uint16,
    /// 32-bit unsigned.
    Uint32,
    /// 64-bit unsigned: the BLOBFILE offset literal.
    Uint64,
    /// Boolean, one byte (0 or 1) in memory.
    Bool,
    /// UTF-8 string: pad types, cast targets, names, paths.
    String,
}

impl DType {
    /// Every dtype, in the order of mil-spec 4.1.
    pub const ALL: &'static [DType] = &[
        DType::Fp16,
        DType::Fp32,
        DType::Fp64,
        DType::Bf16,
        DType::Int4,
        DType::Int8,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::Uint1,
        DType::Uint2,
        DType::Uint3,
        DType::Uint4,
        DType::Uint6,
        DType::Uint8,
        DType::Uint16,
        DType::Uint32,
        DType::Uint64,
        DType::Bool,
        DType::String,
    ];

    /// The text spelling (`fp16`, `int32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Fp16 => "fp16",
            DType::Fp32 => "fp32",
            DType::Fp64 => "fp64",
            DType::Bf16 => "bf16",
            DType::Int4 => "int4",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint1 => "uint1",
            DType::Uint2 => "uint2",
            DType::Uint3 => "uint3",
            DType::Uint4 => "uint4",
            DType::Uint6 => "uint6",
            DType::Uint8 => "uint8",
            DType::Uint16 => "uint16",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
        }
    }

    /// Parses a text spelling.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|dtype| dtype.name() == name)
    }

    /// Size of one element in bits (strings: 0).
    pub fn bits(self) -> usize {
        match self {
            DType::Uint1 => 1,
            DType::Uint2 => 2,
            DType::Uint3 => 3,
            DType::Int4 | DType::Uint4 => 4,
            DType::Uint6 => 6,
            DType::Int8 | DType::Uint8 | DType::Bool => 8,
            DType::Fp16 | DType::Bf16 | DType::Int16 | DType::Uint16 => 16,
            DType::Fp32 | DType::Int32 | DType::Uint32 => 32,
            DType::Fp64 | DType::Int64 | DType::Uint64 => 64,
            DType::String => 0,
        }
    }

    /// Size of one element in bytes, for byte-addressable dtypes (not sub-byte, not string).
    pub fn size_bytes(self) -> Option<usize> {
        match self.bits() {
            8 | 16 | 32 | 64 => Some(self.bits() / 8),
            _ => None,
        }
    }

    /// Bytes needed for `numel` elements (sub-byte types packed, rounded up); `None` for strings.
    pub fn storage_bytes(self, numel: usize) -> Option<usize> {
        match self {
            DType::String => None,
            _ => numel.checked_mul(self.bits()).map(|bits| bits.div_ceil(8)),
        }
    }

    /// The MILBlob dtype code (mil-spec 7.2), if this dtype can be stored in a blob.
    pub fn blob_code(self) -> Option<u32> {
        Some(match self {
            DType::Fp16 => 1,
            DType::Fp32 => 2,
            DType::Uint8 => 3,
            DType::Int8 => 4,
            DType::Bf16 => 5,
            DType::Int16 => 6,
            DType::Uint16 => 7,
            DType::Int4 => 8,
            DType::Uint1 => 9,
            DType::Uint2 => 10,
            DType::Uint4 => 11,
            DType::Uint3 => 12,
            DType::Uint6 => 13,
            DType::Int32 => 14,
            DType::Uint32 => 15,
            _ => return None,
        })
    }

    /// The dtype of a MILBlob dtype code (fp8 codes 16 and 17 have no text spelling: `None`).
    pub fn from_blob_code(code: u32) -> Option<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|dtype| dtype.blob_code() == Some(code))
    }

    /// fp16, fp32, fp64 or bf16.
    pub fn is_float(self) -> bool {
        matches!(self, DType::Fp16 | DType::Fp32 | DType::Fp64 | DType::Bf16)
    }

    /// Any signed or unsigned integer type (not bool).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::Int4
                | DType::Int8
                | DType::Int16
                | DType::Int32
                | DType::Int64
                | DType::Uint1
                | DType::Uint2
                | DType::Uint3
                | DType::Uint4
                | DType::Uint6
                | DType::Uint8
                | DType::Uint16
                | DType::Uint32
                | DType::Uint64
        )
    }

    /// Inclusive value range of an integer dtype.
    pub fn int_range(self) -> Option<(i128, i128)> {
        let bits = self.bits() as u32;
        match self {
            DType::Int4 | DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64 => {
                Some((-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1))
            }
            _ if self.is_int() => Some((0, (1i128 << bits) - 1)),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fully known tensor type: dtype and static shape. Rank 0 is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first (row-major).
    pub shape: Vec<usize>,
}

impl TensorType {
    /// A tensor type.
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> TensorType {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    /// A rank-0 type.
    pub fn scalar(dtype: DType) -> TensorType {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a scalar); saturates at `usize::MAX`.
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
            .unwrap_or(usize::MAX)
    }

    /// Dense byte length, `None` for strings or overflow.
    pub fn byte_len(&self) -> Option<usize> {
        self.dtype.storage_bytes(self.numel())
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1usize; self.shape.len()];
        for idx in (0..self.shape.len().saturating_sub(1)).rev() {
            strides[idx] = strides[idx + 1].saturating_mul(self.shape[idx + 1]);
        }
        strides
    }
}

impl fmt::Display for TensorType {
    /// The canonical (1.3 dialect) spelling: `fp16` for scalars, `tensor<fp16, [1, 2]>` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shape.is_empty() {
            return write!(f, "{}", self.dtype);
        }
        write!(f, "tensor<{}, [", self.dtype)?;
        for (idx, dim) in self.shape.iter().enumerate() {
            if idx > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]>")
    }
}

/// One dimension of a declared type: a size or `?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A static size.
    Known(usize),
    /// `?`: unknown size.
    Unknown,
}

/// A type as written in a declaration (parameters, statement results): dims may be `?`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeclType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions as written.
    pub dims: Vec<Dim>,
}

impl DeclType {
    /// The fully known type, if no dimension is `?`.
    pub fn to_tensor_type(&self) -> Option<TensorType> {
        let shape = self
            .dims
            .iter()
            .map(|dim| match dim {
                Dim::Known(size) => Some(*size),
                Dim::Unknown => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(TensorType {
            dtype: self.dtype,
            shape,
        })
    }

    /// Whether the inferred `ty` matches this declaration (same dtype and rank; `?` matches any
    /// size), mil-spec 4.10.
    pub fn matches(&self, ty: &TensorType) -> bool {
        self.dtype == ty.dtype
            && self.dims.len() == ty.shape.len()
            && self
                .dims
                .iter()
                .zip(&ty.shape)
                .all(|(dim, size)| match dim {
                    Dim::Known(known) => known == size,
                    Dim::Unknown => true,
                })
    }
}

impl From<TensorType> for DeclType {
    fn from(ty: TensorType) -> DeclType {
        DeclType {
            dtype: ty.dtype,
            dims: ty.shape.into_iter().map(Dim::Known).collect(),
        }
    }
}

impl fmt::Display for DeclType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dims.is_empty() {
            return write!(f, "{}", self.dtype);
        }
        write!(f, "tensor<{}, [", self.dtype)?;
        for (idx, dim) in self.dims.iter().enumerate() {
            if idx > 0 {
                f.write_str(", ")?;
            }
            match dim {
                Dim::Known(size) => write!(f, "{size}")?,
                Dim::Unknown => f.write_str("?")?,
            }
        }
        f.write_str("]>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_and_codes_round_trip() {
        for &dtype in DType::ALL {
            assert_eq!(DType::from_name(dtype.name()), Some(dtype));
            if let Some(code) = dtype.blob_code() {
                assert_eq!(DType::from_blob_code(code), Some(dtype));
            }
        }
        assert_eq!(DType::Int8.int_range(), Some((-128, 127)));
        assert_eq!(DType::Uint4.int_range(), Some((0, 15)));
        assert_eq!(DType::Uint4.storage_bytes(3), Some(2));
    }

    #[test]
    fn tensor_type_display_and_strides() {
        let ty = TensorType::new(DType::Fp16, [1, 768, 1, 256]);
        assert_eq!(ty.to_string(), "tensor<fp16, [1, 768, 1, 256]>");
        assert_eq!(ty.strides(), vec![196608, 256, 256, 1]);
        assert_eq!(TensorType::scalar(DType::Bool).to_string(), "bool");
        let decl = DeclType {
            dtype: DType::Fp16,
            dims: vec![Dim::Known(1), Dim::Unknown],
        };
        assert!(decl.matches(&TensorType::new(DType::Fp16, [1, 9])));
        assert!(!decl.matches(&TensorType::new(DType::Fp16, [2, 9])));
    }
}
