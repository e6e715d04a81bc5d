//! AVX-512 microkernel `avx512_gemm_f32_12x32`: 12 rows × 2 zmm (32 columns) = 24 zmm
//! accumulators, one B row (2 zmm) and a broadcast per k, FMA on both ports. Panels as in the
//! module docs. Also the kernel of the AMX tier in `Precision::Exact`. A row-major B is
//! packed in row sweeps across a group of panels (`pack_b_panels`), the other sources panel
//! by panel with in-register transposes where k is contiguous; A panels packed together
//! (`pack_a_panels`) prefetch the next panel's source lines while one is transposed.
#![allow(unsafe_code, reason = "AVX-512 intrinsics on raw panel pointers")]

use std::arch::x86_64::*;

use super::amx::{load_run, mask16, transpose_16x16};
use super::{MicroKernel, PanelSrc, Simd, f32_kernel_body, pack_f32_panel};
use crate::cpu::Isa;
use crate::gemm::ElemPtr;

/// 512-bit f32 vectors.
pub(crate) struct Zmm;

impl Simd for Zmm {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(ptr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and a readable `ptr`.
        unsafe { _mm512_set1_ps(*ptr) }
    }

    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable values.
        unsafe { _mm512_loadu_ps(ptr) }
    }

    #[inline(always)]
    unsafe fn store(ptr: *mut f32, value: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable values.
        unsafe { _mm512_storeu_ps(ptr, value) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, acc: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn prefetch(ptr: *const f32) {
        // SAFETY: a prefetch never faults; the caller guarantees the tier (SSE suffices).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
    }
}

/// # Safety
/// As for [`MicroKernel::kernel`]; the host has AVX-512 F.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn kernel_12x32(
    kc_pad: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: isize,
    load_c: bool,
) {
    // SAFETY: forwarded; this function is compiled for the Zmm tier.
    unsafe { f32_kernel_body::<Zmm, 12, 2>(kc_pad, a, b, c, rs_c, load_c) }
}

/// Packs a k-major f32 panel (`dst[k * R + mn]`, as [`pack_f32_panel`]) with vector code for
/// the two common sources: `mn` contiguous (a row-major B, a transposed A) moves runs of up to
/// 16 lanes per k; `k` contiguous (a row-major A, a transposed B such as a `[out][in]`
/// weight) transposes 16 × 16 blocks in registers. Other strides use the portable packer.
/// f16 sources are widened exactly (`vcvtph2ps`); padding lanes are written as zeros.
///
/// With a k-contiguous source, `ahead` lines starting at line `R` (the next panel's lines,
/// when the caller packs several) are prefetched into L2 as the same k range of this panel is
/// transposed: each line of a row-major A is a short run (`kc` elements) at a large pitch,
/// which the hardware prefetchers pick up too late, so without the hint every 16 × 16 block
/// waits on its loads (about 70% of the packer's samples in `attn PV` before the hint).
///
/// # Safety
/// As for [`pack_f32_panel`]; the host has AVX-512 F/BW/VL. `ahead` is only a hint (the
/// prefetched addresses are never dereferenced).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn pack<const R: usize>(
    src: PanelSrc,
    valid: usize,
    kc: usize,
    dst: *mut f32,
    ahead: usize,
) {
    let vectors = R.div_ceil(16);
    if src.mn_stride == 1 {
        for k in 0..kc {
            let line = k as isize * src.k_stride;
            for vec_idx in 0..vectors {
                let first = 16 * vec_idx;
                let load_mask = mask16(valid.saturating_sub(first));
                let store_mask = mask16(R - first);
                // SAFETY: loads cover lanes mn < `valid` at this k (inside the view per the
                // caller); stores cover lanes mn < R of row k of the panel.
                unsafe {
                    let values = load_run(src.ptr, line + first as isize, load_mask);
                    _mm512_mask_storeu_ps(dst.add(k * R + first), store_mask, values);
                }
            }
        }
    } else if src.k_stride == 1 {
        for k0 in (0..kc).step_by(16) {
            let k_mask = mask16(kc - k0);
            let k_len = (kc - k0).min(16);
            for line in R..R + ahead {
                prefetch_l2(src, line as isize * src.mn_stride + k0 as isize);
            }
            for vec_idx in 0..vectors {
                let first = 16 * vec_idx;
                let store_mask = mask16(R - first);
                let mut lines = [_mm512_setzero_si512(); 16];
                let rows_here = (R - first).min(16);
                if k_len == 16 && valid >= first + rows_here {
                    // A whole block: constant trip counts keep the lines and the transposed
                    // columns in registers (the general path below indexes them by runtime
                    // bounds, which spills both to the stack), and lines past R stay zero.
                    for (lane, line) in lines.iter_mut().enumerate().take(rows_here) {
                        let at = (first + lane) as isize * src.mn_stride + k0 as isize;
                        // SAFETY: k0..k0 + 16 of line first + lane (< valid) are inside the
                        // view.
                        *line = _mm512_castps_si512(unsafe { load_run(src.ptr, at, k_mask) });
                    }
                    // SAFETY: register-only; AVX-512 F present.
                    let columns = unsafe { transpose_16x16(&lines) };
                    for (k_idx, column) in columns.iter().enumerate() {
                        // SAFETY: row k0 + k_idx < kc of the panel, lanes mn < R.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                dst.add((k0 + k_idx) * R + first),
                                store_mask,
                                _mm512_castsi512_ps(*column),
                            );
                        }
                    }
                    continue;
                }
                for (lane, line) in lines.iter_mut().enumerate() {
                    let mn = first + lane;
                    if mn < valid {
                        // SAFETY: k0..k0 + k_len of line `mn` (< valid) are inside the view.
                        let values = unsafe {
                            load_run(src.ptr, mn as isize * src.mn_stride + k0 as isize, k_mask)
                        };
                        *line = _mm512_castps_si512(values);
                    }
                }
                // SAFETY: register-only; AVX-512 F present.
                let columns = unsafe { transpose_16x16(&lines) };
                for (k_idx, column) in columns.iter().take(k_len).enumerate() {
                    // SAFETY: row k0 + k_idx < kc of the panel, lanes mn < R.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            dst.add((k0 + k_idx) * R + first),
                            store_mask,
                            _mm512_castsi512_ps(*column),
                        );
                    }
                }
            }
        }
    } else {
        // SAFETY: forwarded; the tier is present.
        unsafe { pack_f32_panel::<R>(Isa::Avx512, src, valid, kc, dst) }
    }
}

/// Hint: bring the cache line holding element `offset` of `src` into L2. Never dereferences
/// (any offset is allowed).
#[inline(always)]
fn prefetch_l2(src: PanelSrc, offset: isize) {
    let at: *const i8 = match src.ptr {
        ElemPtr::F32(ptr) => ptr.wrapping_offset(offset).cast(),
        ElemPtr::F16(ptr) => ptr.wrapping_offset(offset).cast(),
    };
    // SAFETY: a prefetch never faults and reads nothing architecturally; SSE is baseline on
    // x86-64.
    unsafe { _mm_prefetch::<_MM_HINT_T1>(at) }
}

/// Packs `rows.div_ceil(12)` A panels (panel `i` at `dst + i · panel_stride`, each as
/// [`pack`] with `R = 12` would), prefetching each next panel's source lines while the
/// current one is packed (see [`pack`]).
///
/// # Safety
/// As for [`MicroKernel::pack_a_panels`] with `MR = 12`; the host has AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn pack_a_panels_12(
    src: PanelSrc,
    rows: usize,
    kc: usize,
    dst: *mut f32,
    panel_stride: usize,
) {
    for panel in 0..rows.div_ceil(12) {
        let row = panel * 12;
        let valid = 12.min(rows - row);
        let ahead = rows.saturating_sub(row + 12).min(12);
        // SAFETY: rows `row..row + valid` are inside the caller's region and the next
        // `ahead` rows too (only prefetched); panel `panel` lies at `panel · panel_stride`,
        // inside the caller's buffer.
        unsafe {
            pack::<12>(
                src.shift_mn(row),
                valid,
                kc,
                dst.add(panel * panel_stride),
                ahead,
            )
        };
    }
}

/// Panels one sweep of [`pack_b_n_contiguous_panels`] writes: a 2 KiB run of each source row,
/// and at most this many destination pages per row (a B as wide as a 32000-token classifier
/// would otherwise touch a thousand panels, a page each, per row).
const SWEEP_PANELS: usize = 16;

/// Packs `cols.div_ceil(32)` B panels (panel `j` at `dst + j · panel_stride`, each as
/// [`pack`] with `R = 32` would) from a source whose columns are contiguous (a row-major B):
/// for each group of [`SWEEP_PANELS`] panels, k outer and 16-column chunks inner, so each row
/// `k` is read in runs of up to 512 elements across the group's panels. Packing panel by
/// panel instead reads a 128-byte strip per row, a new page per row of a wide B, which the
/// prefetchers don't follow (the AMX packer's finding, `pack_b_n_contiguous_panels` there).
///
/// # Safety
/// As for [`MicroKernel::pack_b_panels`] with `NR = 32`, `src.mn_stride == 1`; the host has
/// AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn pack_b_n_contiguous_panels(
    src: PanelSrc,
    cols: usize,
    kc: usize,
    dst: *mut f32,
    panel_stride: usize,
) {
    let chunks = cols.div_ceil(32) * 2;
    for first_chunk in (0..chunks).step_by(2 * SWEEP_PANELS) {
        let last_chunk = (first_chunk + 2 * SWEEP_PANELS).min(chunks);
        for k in 0..kc {
            let row = k as isize * src.k_stride;
            for chunk in first_chunk..last_chunk {
                let col0 = chunk * 16;
                // SAFETY: the loaded lanes are columns < `cols` of row k < kc (inside the view
                // per the caller); the store is lanes `chunk % 2 · 16..` of row k of panel
                // `chunk / 2`, inside the caller's buffer. Lanes past `cols` are stored as
                // zeros.
                unsafe {
                    let values = load_run(
                        src.ptr,
                        row + col0 as isize,
                        mask16(cols.saturating_sub(col0)),
                    );
                    _mm512_storeu_ps(
                        dst.add(chunk / 2 * panel_stride + k * 32 + chunk % 2 * 16),
                        values,
                    );
                }
            }
        }
    }
}

/// The AVX-512 f32 kernel.
pub(crate) struct Avx512;

impl MicroKernel for Avx512 {
    const NAME: &'static str = "avx512_gemm_f32_12x32";
    const MR: usize = 12;
    const NR: usize = 32;
    const KU: usize = 1;
    /// 24 panels: a 256-token activation is one row block, so a B packed per call is packed
    /// once per column block (by the item, into L2) rather than up front for every row block,
    /// and a batched attention product packs its B once; an item's own A panels (288 × 768
    /// f32, 864 KiB) still fit the 2 MiB L2 beside a shared B block.
    const MC: usize = 288;
    const KC: usize = 768;
    const NC: usize = 512;
    const ISA: Isa = Isa::Avx512;
    type Elem = f32;
    type Session = ();

    unsafe fn begin() {}

    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack::<12>(src, rows, kc, dst, 0) }
    }

    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut f32) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack::<32>(src, cols, kc, dst, 0) }
    }

    unsafe fn pack_b_panels(
        src: PanelSrc,
        cols: usize,
        kc: usize,
        dst: *mut f32,
        panel_stride: usize,
    ) {
        if src.mn_stride == 1 {
            // SAFETY: forwarded from this function's contract (host has the tier).
            unsafe { pack_b_n_contiguous_panels(src, cols, kc, dst, panel_stride) }
        } else {
            for panel in 0..cols.div_ceil(32) {
                let col = panel * 32;
                // SAFETY: as in the trait's default: the panel's columns are inside the
                // caller's region and its place inside the caller's buffer.
                unsafe {
                    pack::<32>(
                        src.shift_mn(col),
                        32.min(cols - col),
                        kc,
                        dst.add(panel * panel_stride),
                        0,
                    )
                };
            }
        }
    }

    unsafe fn pack_a_panels(
        src: PanelSrc,
        rows: usize,
        kc: usize,
        dst: *mut f32,
        panel_stride: usize,
    ) {
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { pack_a_panels_12(src, rows, kc, dst, panel_stride) }
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
        // SAFETY: forwarded from this function's contract (host has the tier).
        unsafe { kernel_12x32(kc_pad, a, b, c, rs_c, load_c) }
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::cpu;

    /// The multi-panel packer `fast` (a `MicroKernel::pack_*_panels` of this tier) equals
    /// panel-by-panel packing with the portable packer, `W` wide, for each source (with its
    /// extent along the panel and along k), panel extent `mn` and depth `kc` (both capped at
    /// the source's), and leaves the gaps between panels alone.
    fn assert_packer_matches_portable<const W: usize>(
        fast: unsafe fn(PanelSrc, usize, usize, *mut f32, usize),
        sources: [(PanelSrc, usize, usize); 2],
        mns: &[usize],
        kcs: &[usize],
    ) {
        for (src, mn_max, k_max) in sources {
            for &mn in mns {
                for &kc in kcs {
                    let (mn, kc) = (mn.min(mn_max), kc.min(k_max));
                    let panels = mn.div_ceil(W);
                    let stride = W * kc + 20;
                    let mut got = vec![f32::NAN; panels * stride];
                    let mut want = vec![f32::NAN; panels * stride];
                    // SAFETY: panel indices < mn and k < kc are inside the source; each panel
                    // of W × kc fits its `stride` slot; the caller checked the tier.
                    unsafe {
                        fast(src, mn, kc, got.as_mut_ptr(), stride);
                        for panel in 0..panels {
                            pack_f32_panel::<W>(
                                Isa::Generic,
                                src.shift_mn(panel * W),
                                W.min(mn - panel * W),
                                kc,
                                want.as_mut_ptr().add(panel * stride),
                            );
                        }
                    }
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{W}-wide panels: mn {mn} kc {kc} strides ({}, {})",
                        src.mn_stride, src.k_stride
                    );
                }
            }
        }
    }

    /// `pack_a_panels` of a row-major (and a transposed) f32/f16 A equals panel-by-panel
    /// packing with the portable packer: whole and partial panels, depths below, at and past a
    /// 16-k block; the gaps between panels are left alone.
    #[test]
    fn pack_a_panels_matches_the_portable_packer() {
        if !cpu::isa_available(Isa::Avx512) {
            eprintln!("avx512 pack_a_panels: skipping (tier not available)");
            return;
        }
        let (rows, cols) = (150usize, 71usize);
        let data: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.71).sin()).collect();
        let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
        for ptr in [ElemPtr::F32(data.as_ptr()), ElemPtr::F16(halves.as_ptr())] {
            let row_major = PanelSrc {
                ptr,
                mn_stride: cols as isize,
                k_stride: 1,
            };
            let transposed = PanelSrc {
                ptr,
                mn_stride: 1,
                k_stride: cols as isize,
            };
            assert_packer_matches_portable::<12>(
                <Avx512 as MicroKernel>::pack_a_panels,
                [(row_major, rows, cols), (transposed, cols, rows)],
                &[1, 11, 12, 47, 48, 49, 96, 100, 150],
                &[1, 15, 16, 17, 32, 40, 71],
            );
        }
    }

    /// `pack_b_panels` of a row-major (and a transposed) f32/f16 B equals panel-by-panel
    /// packing with the portable packer, for partial last panels and odd depths, and leaves
    /// the gaps between panels alone.
    #[test]
    fn pack_b_panels_matches_the_portable_packer() {
        if !cpu::isa_available(Isa::Avx512) {
            eprintln!("avx512 pack_b_panels: skipping (tier not available)");
            return;
        }
        let (rows, cols) = (23usize, 1100usize);
        let data: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.53).cos()).collect();
        let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
        for ptr in [ElemPtr::F32(data.as_ptr()), ElemPtr::F16(halves.as_ptr())] {
            let row_major = PanelSrc {
                ptr,
                mn_stride: 1,
                k_stride: cols as isize,
            };
            let transposed = PanelSrc {
                ptr,
                mn_stride: cols as isize,
                k_stride: 1,
            };
            assert_packer_matches_portable::<32>(
                <Avx512 as MicroKernel>::pack_b_panels,
                [(row_major, cols, rows), (transposed, rows, cols)],
                &[1, 16, 31, 32, 33, 70, 545, cols],
                &[1, 5, 17, rows],
            );
        }
    }
}
