//! Portable f32 microkernel `generic_gemm_f32_4x8`: 4 rows × one 8-lane array vector, plain
//! multiply-add that LLVM vectorises for the baseline target. Panels as in the module docs.
#![allow(unsafe_code, reason = "raw panel pointers of the portable microkernel")]

use super::{MicroKernel, PanelSrc, Simd, f32_kernel_body, pack_f32_panel};
use crate::cpu::Isa;

/// An 8-lane "vector" of plain f32, vectorised by the compiler.
pub(crate) struct Portable;

impl Simd for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }

    #[inline(always)]
    unsafe fn splat(ptr: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees `ptr` is readable.
        [unsafe { *ptr }; 8]
    }

    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable values; read_unaligned has no alignment need.
        unsafe { ptr.cast::<[f32; 8]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut f32, value: [f32; 8]) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { ptr.cast::<[f32; 8]>().write_unaligned(value) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: [f32; 8], b: [f32; 8], acc: [f32; 8]) -> [f32; 8] {
        let mut res = acc;
        for lane in 0..8 {
            res[lane] += a[lane] * b[lane];
        }
        res
    }
}

/// The portable kernel.
pub(crate) struct Generic;

impl MicroKernel for Generic {
    const NAME: &'static str = "generic_gemm_f32_4x8";
    const MR: usize = 4;
    const NR: usize = 8;
    const KU: usize = 1;
    const MC: usize = 128;
    const KC: usize = 256;
    const NC: usize = 512;
    const ISA: Isa = Isa::Generic;
    type Elem = f32;
    type Session = ();

    unsafe fn begin() {}

    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_f32_panel::<4>(Isa::Generic, src, rows, kc, dst) }
    }

    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_f32_panel::<8>(Isa::Generic, src, cols, kc, dst) }
    }

    unsafe fn kernel(
        _session: &(),
        kc_pad: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: isize,
        load_c: bool,
        _prefetch: *const f32,
    ) {
        // SAFETY: forwarded from this function's contract; the portable body needs no tier.
        unsafe { f32_kernel_body::<Portable, 4, 1>(kc_pad, a, b, c, rs_c, load_c) }
    }
}
