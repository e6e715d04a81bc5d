//! Element types the engine stores, and how kernels load and store them.
//!
//! Floats are computed in `f32` (fp16 loads are exact widenings, stores round to nearest-even:
//! mil-spec 5.2), integers in `i32` (stores wrap to the narrower width). Bools are stored as
//! `u8` (0 or 1); the kernels that produce or consume them convert explicitly.

use half::f16;
use milbridge_mil::ir::DType;

/// A run-time element type: the dtypes the engine executes (mil-spec 4.1's byte-addressable
/// types that ops accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// IEEE binary16.
    F16,
    /// IEEE binary32.
    F32,
    /// 8-bit signed.
    I8,
    /// 8-bit unsigned.
    U8,
    /// 16-bit signed.
    I16,
    /// 16-bit unsigned.
    U16,
    /// 32-bit signed.
    I32,
    /// Bool, one byte 0 or 1.
    Bool,
}

impl Ty {
    /// Every type, in serialisation order.
    pub const ALL: [Ty; 8] = [
        Ty::F16,
        Ty::F32,
        Ty::I8,
        Ty::U8,
        Ty::I16,
        Ty::U16,
        Ty::I32,
        Ty::Bool,
    ];

    /// The engine type of a MIL dtype, if the engine executes it.
    pub fn from_dtype(dtype: DType) -> Option<Ty> {
        Some(match dtype {
            DType::Fp16 => Ty::F16,
            DType::Fp32 => Ty::F32,
            DType::Int8 => Ty::I8,
            DType::Uint8 => Ty::U8,
            DType::Int16 => Ty::I16,
            DType::Uint16 => Ty::U16,
            DType::Int32 => Ty::I32,
            DType::Bool => Ty::Bool,
            _ => return None,
        })
    }

    /// The MIL dtype.
    pub fn dtype(self) -> DType {
        match self {
            Ty::F16 => DType::Fp16,
            Ty::F32 => DType::Fp32,
            Ty::I8 => DType::Int8,
            Ty::U8 => DType::Uint8,
            Ty::I16 => DType::Int16,
            Ty::U16 => DType::Uint16,
            Ty::I32 => DType::Int32,
            Ty::Bool => DType::Bool,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Ty::I8 | Ty::U8 | Ty::Bool => 1,
            Ty::F16 | Ty::I16 | Ty::U16 => 2,
            Ty::F32 | Ty::I32 => 4,
        }
    }

    /// Short name used in kernel names (`f16`, `i32`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Ty::F16 => "f16",
            Ty::F32 => "f32",
            Ty::I8 => "i8",
            Ty::U8 => "u8",
            Ty::I16 => "i16",
            Ty::U16 => "u16",
            Ty::I32 => "i32",
            Ty::Bool => "bool",
        }
    }

    /// Serialisation code.
    pub fn code(self) -> u8 {
        Ty::ALL
            .iter()
            .position(|&t| t == self)
            .expect("every Ty is in ALL") as u8
    }

    /// The type of a serialisation code.
    pub fn from_code(code: u8) -> Option<Ty> {
        Ty::ALL.get(usize::from(code)).copied()
    }

    /// fp16 or fp32.
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::F32)
    }
}

/// A stored element with its compute type.
pub trait Elem: bytemuck::Pod + Send + Sync + Default {
    /// The type arithmetic happens in.
    type C: Copy + Default + Send + Sync;
    /// Widens one element.
    fn load(self) -> Self::C;
    /// Narrows a computed value (rounding or wrapping).
    fn store(value: Self::C) -> Self;
    /// Widens a contiguous run.
    #[inline]
    fn load_slice(src: &[Self], dst: &mut [Self::C]) {
        for (out, &value) in dst.iter_mut().zip(src) {
            *out = value.load();
        }
    }
    /// Narrows a contiguous run.
    #[inline]
    fn store_slice(src: &[Self::C], dst: &mut [Self]) {
        for (out, &value) in dst.iter_mut().zip(src) {
            *out = Self::store(value);
        }
    }
}

impl Elem for f16 {
    type C = f32;
    #[inline]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn store(value: f32) -> f16 {
        f16::from_f32(value)
    }
    #[inline]
    fn load_slice(src: &[f16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let n = src.len().min(dst.len());
        src[..n].convert_to_f32_slice(&mut dst[..n]);
    }
    #[inline]
    fn store_slice(src: &[f32], dst: &mut [f16]) {
        use half::slice::HalfFloatSliceExt;
        let n = src.len().min(dst.len());
        dst[..n].convert_from_f32_slice(&src[..n]);
    }
}

impl Elem for f32 {
    type C = f32;
    #[inline]
    fn load(self) -> f32 {
        self
    }
    #[inline]
    fn store(value: f32) -> f32 {
        value
    }
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            type C = i32;
            #[inline]
            fn load(self) -> i32 {
                self as i32
            }
            #[inline]
            fn store(value: i32) -> $t {
                value as $t
            }
        }
    )*};
}
int_elem!(i8, u8, i16, u16, i32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for ty in Ty::ALL {
            assert_eq!(Ty::from_code(ty.code()), Some(ty));
            assert_eq!(Ty::from_dtype(ty.dtype()), Some(ty));
        }
        assert_eq!(Ty::from_code(8), None);
    }

    #[test]
    fn stores_round_and_wrap() {
        assert_eq!(f16::store(65520.0), f16::INFINITY);
        assert_eq!(<i8 as Elem>::store(200), -56);
        assert_eq!(<u8 as Elem>::store(-1), 255);
        let mut out = [f16::ZERO; 3];
        f16::store_slice(&[1.0, 0.1, -2.5], &mut out);
        assert_eq!(out[1], f16::from_f32(0.1));
    }
}
