//! The element types the typed copy functions accept.

mod sealed {
    /// Keeps [`super::Element`] closed: only this crate can implement it.
    pub trait Sealed {}
}

/// A plain-old-data element that can be copied bytewise in and out of a
/// [`SharedBuffer`](crate::SharedBuffer).
///
/// The trait is sealed. Every implementor is a primitive number type (or `half`'s `f16` /
/// `bf16`, which are `#[repr(transparent)]` over `u16`) with no padding bytes, no interior
/// mutability, and no invalid bit patterns. The OS layer relies on exactly those three facts when
/// it copies raw bytes into a `&mut [T]`, so a new implementor must have them too.
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {}

macro_rules! element {
    ($($ty:ty),* $(,)?) => {
        $(
            impl sealed::Sealed for $ty {}
            impl Element for $ty {}
        )*
    };
}

element!(
    u8,
    i8,
    u16,
    i16,
    u32,
    i32,
    u64,
    i64,
    f32,
    f64,
    half::f16,
    half::bf16,
);
