//! Microkernels, one module per tier, and what they share: the [`MicroKernel`] contract, the
//! f32 kernel body written once over a small [`Simd`] trait, and the f32 panel packer.
//!
//! # The microkernel contract
//!
//! A microkernel computes one `MR × NR` tile of C from an A panel and a B panel that were
//! packed for it:
//!
//! * f32 kernels (generic, avx2, avx512): the A panel is `kc × MR` f32 stored k-major
//!   (`a[k * MR + i]`), the B panel `kc × NR` f32 stored k-major (`b[k * NR + j]`). For each k
//!   the kernel broadcasts `MR` values of A and multiplies them with `NR / LANES` vectors of B
//!   into `MR × NR / LANES` vector accumulators (f32, FMA where the tier has it).
//! * the AMX kernel: see [`amx`] (bf16 tiles, 16-row, 64-byte tile rows).
//!
//! Padding is the packer's job: rows past the matrix edge and k past the end are zeros, so the
//! kernel always runs the full tile over `kc_pad` (a multiple of `KU`) and never reads past its
//! panels. The kernel writes (or, with `load_c`, adds to) a full `MR × NR` f32 tile at `c` with
//! row stride `rs_c` elements and unit column stride; the driver points `c` into a scratch
//! buffer whenever the real C can't take that (edge tiles, f16 output, strided C).
#![allow(
    unsafe_code,
    reason = "raw panel pointers shared by the microkernels and packers"
)]

pub(crate) mod generic;

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use half::f16;

use super::ElemPtr;
use crate::convert;
use crate::cpu::Isa;

/// A panel of a source matrix as the packers see it: `mn` runs along M (for A) or N (for B),
/// `k` along K. `ptr` already points at the panel's first element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanelSrc {
    pub(crate) ptr: ElemPtr,
    pub(crate) mn_stride: isize,
    pub(crate) k_stride: isize,
}

impl PanelSrc {
    /// The same view starting `mn` lines further along M (A) or N (B). Only an address
    /// computation: the result is used under the same contract as `self`.
    #[inline(always)]
    pub(crate) fn shift_mn(self, mn: usize) -> PanelSrc {
        let offset = mn as isize * self.mn_stride;
        let ptr = match self.ptr {
            ElemPtr::F32(ptr) => ElemPtr::F32(ptr.wrapping_offset(offset)),
            ElemPtr::F16(ptr) => ElemPtr::F16(ptr.wrapping_offset(offset)),
        };
        PanelSrc { ptr, ..self }
    }

    /// Reads element (`mn`, `k`) widened to f32.
    ///
    /// # Safety
    /// The element must be inside the view the panel was cut from.
    #[inline(always)]
    pub(crate) unsafe fn get(&self, mn: usize, k: usize) -> f32 {
        let offset = mn as isize * self.mn_stride + k as isize * self.k_stride;
        match self.ptr {
            // SAFETY: in the view per the caller's contract.
            ElemPtr::F32(ptr) => unsafe { *ptr.offset(offset) },
            // SAFETY: in the view per the caller's contract.
            ElemPtr::F16(ptr) => unsafe { (*ptr.offset(offset)).to_f32() },
        }
    }
}

/// Everything the blocking driver needs from a microkernel.
pub(crate) trait MicroKernel: 'static {
    /// Kernel name, `<isa>_gemm_<dtype>_<MR>x<NR>`.
    const NAME: &'static str;
    /// Rows of the C tile.
    const MR: usize;
    /// Columns of the C tile.
    const NR: usize;
    /// Packed K is padded to a multiple of this.
    const KU: usize;
    /// Rows of A per work item (a multiple of `MR`), upper bound.
    const MC: usize;
    /// K per cache block (a multiple of `KU`), upper bound.
    const KC: usize;
    /// Columns of B per work item (a multiple of `NR`), upper bound.
    const NC: usize;
    /// Tier whose conversion routines the packers may use.
    const ISA: Isa;
    /// Loop order of the driver: `false` runs A panel outer, B panels inner, writing full C
    /// tiles in place; `true` runs B panel outer, A panels inner, with C in a compact
    /// per-panel scratch copied out once (see the AMX kernel for why).
    const B_OUTER: bool = false;
    /// Elements of the next B panel the kernel prefetches per `KU` step (0: it ignores the
    /// prefetch pointer).
    const PREFETCH_PER_STEP: usize = 0;
    /// Packed element type (f32, or bf16 bits as u16).
    type Elem: Copy + 'static;
    /// Per-thread state held while microkernels run (the AMX tile configuration).
    type Session;

    /// Prepares the calling thread to run this kernel.
    ///
    /// # Safety
    /// The host supports the kernel's tier.
    unsafe fn begin() -> Self::Session;

    /// Packs rows `0..rows` (≤ `MR`) and k `0..kc` of `src` into an A panel of
    /// `MR × round_up(kc, KU)` elements at `dst`, zero-padded.
    ///
    /// # Safety
    /// Those elements of `src` are readable; `dst` is writable for the panel; host has the tier.
    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut Self::Elem);

    /// Packs rows `0..rows` (any number) and k `0..kc` of `src` into `rows.div_ceil(MR)` A
    /// panels, panel `i` (rows `i·MR..`) at `dst + i · panel_stride`, each as
    /// [`MicroKernel::pack_a`] would. The default packs panel by panel; a kernel may override
    /// it to work across panels (the AVX-512 packer fetches the next panel's source lines
    /// while it transposes the current one).
    ///
    /// # Safety
    /// As for [`MicroKernel::pack_a`] for every panel; `panel_stride` ≥ `MR × round_up(kc,
    /// KU)`.
    unsafe fn pack_a_panels(
        src: PanelSrc,
        rows: usize,
        kc: usize,
        dst: *mut Self::Elem,
        panel_stride: usize,
    ) {
        for panel in 0..rows.div_ceil(Self::MR) {
            let row = panel * Self::MR;
            // SAFETY: rows `row..row + MR.min(rows - row)` are inside the caller's region;
            // panel `panel` lies at `panel · panel_stride`, inside the caller's buffer.
            unsafe {
                Self::pack_a(
                    src.shift_mn(row),
                    Self::MR.min(rows - row),
                    kc,
                    dst.add(panel * panel_stride),
                )
            };
        }
    }

    /// Packs columns `0..cols` (≤ `NR`) and k `0..kc` of `src` into a B panel of
    /// `NR × round_up(kc, KU)` elements at `dst`, zero-padded.
    ///
    /// # Safety
    /// As for [`MicroKernel::pack_a`].
    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut Self::Elem);

    /// Packs columns `0..cols` (any number) and k `0..kc` of `src` into `cols.div_ceil(NR)`
    /// B panels, panel `j` (columns `j·NR..`) at `dst + j · panel_stride`, each as
    /// [`MicroKernel::pack_b`] would. The default packs panel by panel; a kernel may override
    /// it to sweep the source in longer runs (a row-major B is then read row by row across
    /// all the panels instead of one narrow strip per panel, which defeats the prefetchers
    /// and touches a new page per row).
    ///
    /// # Safety
    /// As for [`MicroKernel::pack_b`] for every panel; `panel_stride` ≥ `NR × round_up(kc,
    /// KU)`.
    unsafe fn pack_b_panels(
        src: PanelSrc,
        cols: usize,
        kc: usize,
        dst: *mut Self::Elem,
        panel_stride: usize,
    ) {
        for panel in 0..cols.div_ceil(Self::NR) {
            let col = panel * Self::NR;
            // SAFETY: columns `col..col + NR.min(cols - col)` are inside the caller's region;
            // panel `panel` lies at `panel · panel_stride`, inside the caller's buffer.
            unsafe {
                Self::pack_b(
                    src.shift_mn(col),
                    Self::NR.min(cols - col),
                    kc,
                    dst.add(panel * panel_stride),
                )
            };
        }
    }

    /// `C[MR × NR] (+)= A_panel · B_panel` over `kc_pad` (a positive multiple of `KU`),
    /// prefetching `kc_pad / KU × PREFETCH_PER_STEP` elements from `prefetch` on the way.
    ///
    /// # Safety
    /// `a`/`b` point at packed panels of at least `kc_pad` depth; `c` is writable (and readable
    /// when `load_c`) for `MR` rows of `NR` contiguous f32 at row stride `rs_c`; `session` came
    /// from [`MicroKernel::begin`] on this thread. `prefetch` is only a hint and may point
    /// anywhere (it is never dereferenced).
    #[allow(
        clippy::too_many_arguments,
        reason = "the microkernel contract: panels, C tile, mode and prefetch hint"
    )]
    unsafe fn kernel(
        session: &Self::Session,
        kc_pad: usize,
        a: *const Self::Elem,
        b: *const Self::Elem,
        c: *mut f32,
        rs_c: isize,
        load_c: bool,
        prefetch: *const Self::Elem,
    );
}

/// The vector operations the f32 kernel body needs.
pub(crate) trait Simd {
    /// The vector type.
    type V: Copy;
    /// f32 lanes per vector.
    const LANES: usize;
    /// All-zero vector.
    ///
    /// # Safety
    /// The host supports the implementing tier (for all methods).
    unsafe fn zero() -> Self::V;
    /// Broadcast of `*ptr`.
    ///
    /// # Safety
    /// `ptr` readable; tier supported.
    unsafe fn splat(ptr: *const f32) -> Self::V;
    /// Unaligned load of `LANES` values.
    ///
    /// # Safety
    /// `ptr` readable for `LANES`; tier supported.
    unsafe fn load(ptr: *const f32) -> Self::V;
    /// Unaligned store of `LANES` values.
    ///
    /// # Safety
    /// `ptr` writable for `LANES`; tier supported.
    unsafe fn store(ptr: *mut f32, value: Self::V);
    /// `a * b + acc` (fused where the tier has FMA).
    ///
    /// # Safety
    /// Tier supported.
    unsafe fn mul_add(a: Self::V, b: Self::V, acc: Self::V) -> Self::V;
    /// Hint: bring the cache line at `ptr` into L1 (never dereferenced, may point anywhere).
    ///
    /// # Safety
    /// Tier supported.
    #[inline(always)]
    unsafe fn prefetch(_ptr: *const f32) {}
}

/// B-panel prefetch distance of the f32 kernel body, in k steps.
const PREFETCH_STEPS: usize = 8;

/// The f32 microkernel, written once: `MR` rows × `NV` vectors of `S::LANES` columns.
///
/// # Safety
/// As for [`MicroKernel::kernel`] with `NR = NV * S::LANES`, `kc_pad` ≥ 1, and the host
/// supports `S`'s tier. Must be inlined into a function compiled for that tier.
#[inline(always)]
pub(crate) unsafe fn f32_kernel_body<S: Simd, const MR: usize, const NV: usize>(
    kc_pad: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: isize,
    load_c: bool,
) {
    // SAFETY: (whole body) the caller guarantees the panels hold `kc_pad` steps of MR (A) and
    // NV * LANES (B) values, and that C is an MR × NR tile at row stride `rs_c`.
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        if load_c {
            for (row_idx, row) in acc.iter_mut().enumerate() {
                let c_row = c.offset(row_idx as isize * rs_c);
                for (vec_idx, value) in row.iter_mut().enumerate() {
                    *value = S::load(c_row.add(vec_idx * S::LANES));
                }
            }
        }
        let mut a = a;
        let mut b = b;
        for _ in 0..kc_pad {
            // B streams from L2; the hardware prefetchers alone leave the first load of each
            // step waiting on it.
            let ahead = b.wrapping_add(PREFETCH_STEPS * NV * S::LANES);
            for line in 0..(NV * S::LANES).div_ceil(16) {
                S::prefetch(ahead.wrapping_add(16 * line));
            }
            let mut b_vecs = [S::zero(); NV];
            for (vec_idx, value) in b_vecs.iter_mut().enumerate() {
                *value = S::load(b.add(vec_idx * S::LANES));
            }
            for (row_idx, row) in acc.iter_mut().enumerate() {
                let a_value = S::splat(a.add(row_idx));
                for (value, b_vec) in row.iter_mut().zip(b_vecs) {
                    *value = S::mul_add(a_value, b_vec, *value);
                }
            }
            a = a.add(MR);
            b = b.add(NV * S::LANES);
        }
        for (row_idx, row) in acc.iter().enumerate() {
            let c_row = c.offset(row_idx as isize * rs_c);
            for (vec_idx, value) in row.iter().enumerate() {
                S::store(c_row.add(vec_idx * S::LANES), *value);
            }
        }
    }
}

/// Packs an f32 panel stored k-major (`dst[k * R + mn]`) from `mn_valid` ≤ `R` lines of
/// `src` and `kc` k; lines past `mn_valid` are zero. f16 sources are widened exactly.
///
/// # Safety
/// Elements `(0..mn_valid, 0..kc)` of `src` readable; `dst` writable for `R * kc`; the host
/// supports `isa`.
#[inline(always)]
pub(crate) unsafe fn pack_f32_panel<const R: usize>(
    isa: Isa,
    src: PanelSrc,
    mn_valid: usize,
    kc: usize,
    dst: *mut f32,
) {
    debug_assert!(mn_valid <= R);
    // SAFETY: (whole body) every source offset is (mn < mn_valid, k < kc), inside the view by
    // the caller's contract; every destination index is < R * kc.
    unsafe {
        if mn_valid < R {
            for k_idx in 0..kc {
                std::ptr::write_bytes(dst.add(k_idx * R + mn_valid), 0, R - mn_valid);
            }
        }
        match src.ptr {
            ElemPtr::F32(ptr) if src.mn_stride == 1 => {
                for k_idx in 0..kc {
                    let line = ptr.offset(k_idx as isize * src.k_stride);
                    std::ptr::copy_nonoverlapping(line, dst.add(k_idx * R), mn_valid);
                }
            }
            ElemPtr::F16(ptr) if src.mn_stride == 1 => {
                for k_idx in 0..kc {
                    let line = ptr.offset(k_idx as isize * src.k_stride);
                    convert::f16_to_f32_raw_with(isa, line, dst.add(k_idx * R), mn_valid);
                }
            }
            ElemPtr::F32(ptr) => {
                for mn_idx in 0..mn_valid {
                    let line = ptr.offset(mn_idx as isize * src.mn_stride);
                    for k_idx in 0..kc {
                        *dst.add(k_idx * R + mn_idx) = *line.offset(k_idx as isize * src.k_stride);
                    }
                }
            }
            ElemPtr::F16(ptr) if src.k_stride == 1 => {
                const CHUNK: usize = 256;
                let mut wide = [0f32; CHUNK];
                for mn_idx in 0..mn_valid {
                    let line = ptr.offset(mn_idx as isize * src.mn_stride);
                    for k_start in (0..kc).step_by(CHUNK) {
                        let len = CHUNK.min(kc - k_start);
                        convert::f16_to_f32_raw_with(
                            isa,
                            line.add(k_start),
                            wide.as_mut_ptr(),
                            len,
                        );
                        for (offset, &value) in wide[..len].iter().enumerate() {
                            *dst.add((k_start + offset) * R + mn_idx) = value;
                        }
                    }
                }
            }
            ElemPtr::F16(ptr) => {
                for mn_idx in 0..mn_valid {
                    let line = ptr.offset(mn_idx as isize * src.mn_stride);
                    for k_idx in 0..kc {
                        let value: f16 = *line.offset(k_idx as isize * src.k_stride);
                        *dst.add(k_idx * R + mn_idx) = value.to_f32();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;

    /// Every f32 kernel's packers against the portable `pack_f32_panel`, for contiguous and
    /// transposed f32/f16 sources, full and partial panels, and depths around the vector
    /// widths.
    #[test]
    fn f32_packers_match_the_portable_packer() {
        fn check<K: MicroKernel<Elem = f32>>() {
            if !cpu::isa_available(K::ISA) {
                eprintln!("packers: skipping {} (tier not available)", K::NAME);
                return;
            }
            let (rows, cols) = (37usize, 41usize);
            let data: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
            for ptr in [ElemPtr::F32(data.as_ptr()), ElemPtr::F16(halves.as_ptr())] {
                let k_contiguous = PanelSrc {
                    ptr,
                    mn_stride: cols as isize,
                    k_stride: 1,
                };
                let mn_contiguous = PanelSrc {
                    ptr,
                    mn_stride: 1,
                    k_stride: cols as isize,
                };
                let strided = PanelSrc {
                    ptr,
                    mn_stride: 2,
                    k_stride: cols as isize,
                };
                for (src, mn_max, k_max) in [
                    (k_contiguous, rows, cols),
                    (mn_contiguous, cols, rows),
                    (strided, cols / 2, rows),
                ] {
                    for width in [K::MR, K::NR] {
                        for valid in [1, width.min(mn_max) - 1, width.min(mn_max)] {
                            for kc in [1, 7, 8, 9, 16, 17, k_max] {
                                let mut fast = vec![f32::NAN; width * kc];
                                let mut slow = vec![-1.0f32; width * kc];
                                // SAFETY: the valid region lies inside `data`; both buffers
                                // hold width × kc; the tier was checked.
                                unsafe {
                                    if width == K::MR {
                                        K::pack_a(src, valid, kc, fast.as_mut_ptr());
                                    } else {
                                        K::pack_b(src, valid, kc, fast.as_mut_ptr());
                                    }
                                    match width {
                                        4 => pack_f32_panel::<4>(
                                            Isa::Generic,
                                            src,
                                            valid,
                                            kc,
                                            slow.as_mut_ptr(),
                                        ),
                                        6 => pack_f32_panel::<6>(
                                            Isa::Generic,
                                            src,
                                            valid,
                                            kc,
                                            slow.as_mut_ptr(),
                                        ),
                                        8 => pack_f32_panel::<8>(
                                            Isa::Generic,
                                            src,
                                            valid,
                                            kc,
                                            slow.as_mut_ptr(),
                                        ),
                                        12 => pack_f32_panel::<12>(
                                            Isa::Generic,
                                            src,
                                            valid,
                                            kc,
                                            slow.as_mut_ptr(),
                                        ),
                                        16 => pack_f32_panel::<16>(
                                            Isa::Generic,
                                            src,
                                            valid,
                                            kc,
                                            slow.as_mut_ptr(),
                                        ),
                                        32 => pack_f32_panel::<32>(
                                            Isa::Generic,
                                            src,
                                            valid,
                                            kc,
                                            slow.as_mut_ptr(),
                                        ),
                                        other => panic!("no reference packer for width {other}"),
                                    }
                                }
                                let same = fast
                                    .iter()
                                    .zip(&slow)
                                    .all(|(a, b)| a.to_bits() == b.to_bits());
                                assert!(
                                    same,
                                    "{}: width {width} valid {valid} kc {kc} strides ({}, {})",
                                    K::NAME,
                                    src.mn_stride,
                                    src.k_stride
                                );
                            }
                        }
                    }
                }
            }
        }
        check::<generic::Generic>();
        #[cfg(target_arch = "x86_64")]
        {
            check::<avx2::Avx2>();
            check::<avx512::Avx512>();
        }
    }
}
