//! The AMX bf16 microkernels (the AMX tier in `Precision::Fast`): `amx_gemm_bf16_32x32`
//! for products whose k fits one 768-deep block, `amx_gemm_bf16_32x48` for deeper ones
//! (`KernelId::for_shape` picks; each measured best on its side of that line).
//!
//! Tiles (palette 1, every tile 16 rows × 64 bytes):
//!
//! | kernel | C accumulators (f32 16 × 16) | operands |
//! |---|---|---|
//! | 32 × 32 | tmm0..tmm3: rows 0–15 / 16–31 × cols 0–15 / 16–31 | tmm4, tmm5: A rows 0–15, 16–31; tmm6, tmm7: B cols 0–15, 16–31 |
//! | 32 × 48 | tmm0..tmm2 (rows 0–15), tmm3..tmm5 (rows 16–31) × three column groups | tmm6: A, tmm7: B |
//!
//! The 32 × 32 kernel loads 4 operand tiles per 4 `tdpbf16ps` (two k steps per loop turn, the
//! second with the order rotated so every reload has a tdp of slack: tiles are not renamed).
//! The 32 × 48 kernel issues 6 `tdpbf16ps` and 7 tile loads per step in a snake order (A0 B0 ·
//! A1 · B1 · A0 · B2 · A1): 5 KiB of unique operand data feed 6 products instead of 4 KiB for
//! 4, which matters when the panels stream from L2.
//!
//! Packing (all rows 64 bytes, `tileloadd` stride 64, K padded to a multiple of 32 with zeros):
//!
//! * A panel (32 rows): `[k / 32][row / 16][row % 16][k % 32]` bf16, so each 32-deep k step
//!   is 2 KiB contiguous: the two A tiles back to back.
//! * B panel (32 or 48 columns), VNNI-style pair interleave: `[k / 32][col / 16][(k % 32) /
//!   2][col % 16][k % 2]` bf16; one k step is 2 or 3 KiB, the B tiles back to back.
//!
//! Operands are rounded to bf16 (round-to-nearest-even, NaN kept) when packed;
//! `tdpbf16ps` accumulates in f32. The 32 × 32 kernel runs A panel outer and stores whole
//! tiles straight into an f32 C; the 32 × 48 one runs B panel outer
//! ([`MicroKernel::B_OUTER`]), A panels inner, with C in a compact panel-major scratch copied
//! to the destination in whole rows once per work item, and prefetches (`prefetcht1`, 6
//! lines per step) the next B panel into L2 while it works on this one.
//!
//! Measured on this machine kind (Sapphire Rapids vCPUs, 1 thread): a tile load from a
//! 64-byte misaligned address costs ~50 cycles instead of ~9, so every panel and scratch
//! buffer is 64-byte aligned. In a loop with its panels in L1 the 32 × 48 kernel sustains
//! ~85 % of the tile peak, with both panels streaming from L2 ~70 % (L2 → tile bandwidth is
//! about 42 B/cycle). End to end the training shapes reach 30–35 % of the tile peak: packing
//! A from f32 (~20 % of the time), writing f32 C (~12 %) and streaming B from L3 are memory
//! passes the tile unit outruns (see `milbridge bench gemm`).
//!
//! Profile of 256 × 2048 × 768 with B prepacked, one thread (`perf record`, cpu-clock; the
//! VM exposes no cycle counters): 89 % in the 32 × 32 loop, 7 % packing A. Within the loop the
//! samples sit on the `tdpbf16ps` right after each B `tileloaddt1`: a 768-deep A panel is
//! 48 KiB, all of L1, so both operands come from L2 (4 KiB per 4 tdp, ~64 B per cycle of
//! tile work against ~42 available), and the loop runs at ~40 % of the bare tile loop on one
//! core. Measured worse, same load, interleaved: the 32 × 48 kernel at k = 768, `kc` 384 or
//! 256 for the 32 × 32 kernel (partial C through scratch), `prefetcht0` of B two steps ahead,
//! and plain `tileloadd` for B instead of the T1 hint.
//!
//! Issue #5 follow-up (one thread, `milbridge bench gemm`, load ≈ 7 on the 2 vCPUs, best of
//! 20 repetitions, ratios from one run). The `loop` rows time this loop alone (A and B packed
//! untimed, the driver's items and order, C left in scratch): 42–51 % of the tile peak against
//! 31–36 % for the same products end to end (`Bpre`), so the loop is the main limit and
//! packing A plus writing C cost the other ~25–30 % of the time. On prepacked panels
//! (interleaved variants, 15 rounds, per-thread items 256 × 384 × 768 / 2048 and
//! 256 × 1056 × 768): the 32 × 48 kernel B-outer at full depth 50–70 % of the peak, the
//! 32 × 32 A-outer 38–62 %. Measured no better, kept out:
//!
//! * `kc` 128 / 256 / 384 with the 32 × 48 kernel B-outer, so the `kc × 48` B block (≤ 36 KiB)
//!   stays in L1 while the A panels stream past it (40–58 %): it cuts the L2 traffic per tdp
//!   but adds a C tile load and store per block, and every call drains the tile pipeline
//!   (tiles are not renamed: the next call's C loads wait for this call's stores).
//! * `prefetcht0` of the next k step's A and/or B tiles one or two steps ahead, and the T1
//!   hint on the B loads of the 32 × 48 kernel (within the noise, mostly below).
//! * The 32 × 32 / 32 × 48 split moved down to k > 384 (the wide kernel wins the bare loop
//!   at k = 768, but end to end through the driver it did not: C through scratch and the
//!   merge cost what the loop gains).
//! * Packing A (256 × 2048 f32) with `vcvtne2ps2bf16` instead of the integer rounding, or
//!   k step outer (contiguous 2 KiB writes) instead of row outer: all ~14–15 GB/s of f32
//!   read, the same within noise. The pack is bound by reading A from L3, not by the
//!   conversion; only not packing (a persistent packed A) removes it.
//!
//! Issue #5, second pass (the amx3 probes; 1 thread unless stated, GFLOP/s are the `loop`
//! row's measure: A and B prepacked, C left in scratch; variants interleaved round by round
//! in one process, best of 40–200 repetitions; "peak" is the bare `tdpbf16ps` loop, 2500–2950
//! GFLOP/s on one vCPU, 150–180 M tdp/s).
//!
//! *Where the run-to-run variance comes from.* Per repetition of the `fwd W768x768` loop we
//! logged wall time, the thread's CPU time, involuntary context switches, minor faults, and
//! the register-only tdp loop timed just before it. The floor is 210 µs (1440 GFLOP/s, 58 %
//! of the peak). Preempted repetitions (one involuntary switch) take 6.7–12.9 ms of wall
//! time for 0.3–0.7 ms of CPU. The other slow repetitions (500–870 µs) have no context
//! switch, CPU time equal to wall time, no page fault, and the tdp loop right before them
//! runs at its usual 2200–2700 GFLOP/s: the core runs at full clock and the tile unit is
//! free, but tile *loads* are slow. That comes in phases minutes long (every repetition at
//! 16–23 % of the peak), seen while other builds and a debug AVX-512 test ran on the other
//! vCPU; in such a phase even a 32 × 64 × 384 product (72 KiB of panels) falls from 58–64 % to
//! 20 %. A cache line bounces between the two vCPUs in 140–180 ns, so they are distinct
//! physical cores, not SMT siblings: whatever shares our core's L1/L2 or the mesh is outside
//! this VM. `milbridge bench`'s best-of-N measures the code; the median measures the host.
//!
//! *What the memory hierarchy delivers* (tile loads only, best of 5): 260–308 GB/s from L1,
//! 120–131 GB/s from L2 (256 KiB–1 MiB), 10–23 GB/s beyond L2 (8 MiB; AVX-512 loads 11–25
//! GB/s there). At the peak the 32 × 32 kernel needs 1 KiB per tdp, 160–180 GB/s when
//! both operands come from L2 and half that when A stays in L1. By working set (32 × 32
//! loop, good phase, two runs of 200): 32 × 64 × 384: 59–64 %; 64 × 256 × 768: 60–61 %;
//! 256 × 768 × 768 (1.5 MiB of panels): 53–54 %; 256 × 2048 × 768 (B is 3 MiB, more than
//! the 2 MiB L2, so every work item first reads its B from L3): 43–51 %.
//!
//! *Ruled out*, measured no better: 2 MiB pages (`MADV_HUGEPAGE` copies of both panel
//! buffers, `AnonHugePages` confirmed): `fwd W768x2048` loop 1205 / 1227 against 1232 / 1246
//! with 4 KiB pages. Alignment: every panel and scratch buffer (driver, `TileLoop`, `PackedA`,
//! `PackedB`) is an `AlignedBuf`, 64-byte aligned. `ldtilecfg`: once per work item, and items
//! here are ≥ 25 MFLOP.
//!
//! *Blocking for an L1-resident operand.* With 8 tiles, keeping C in tiles across all of K
//! while one operand stays in L1 needs that operand's whole-K panel to fit about half of L1:
//! at k = 768 that is 16 columns or rows (24 KiB), so the other operand must be 4 tiles wide
//! and streams 4 KiB per 4 tdp from L2: 1 KiB per tdp, no less than the 32 × 32 kernel
//! (kc blocking instead costs C round trips, measured above). Measured as
//! `amx_gemm_bf16_16x64` (16-row A strip resident, B streamed with T1) and `..._64x16`
//! (16-column B panel resident, B-outer, A streamed), 4 accumulators and double-buffered
//! operands, against 32 × 32 in the same run: `fwd W768x768` loop 1355 / 1388 vs 1503,
//! `fwd W768x2048` 1060 / 1164 vs 1197. Not kept.
//!
//! *Where B comes from L3.* At `fwd W768x2048` (B larger than L2) the loop order matters
//! more than the tile shape: the 32 × 32 kernel run B-outer with the next B panel
//! prefetched into L2 (4 lines per k step, C in scratch like the 32 × 48 kernel): 1289 vs 1178
//! A-outer, `fwd W768x768` 1397 vs 1344, but `Wx W768x2048` (A is the 3 MiB operand) 1157 vs
//! 1271; the 32 × 48 kernel B-outer: 1366 / 1509 / 1136. Prefetching the whole next B panel
//! during the first A pass of the A-outer order instead: 1225 vs 1247, no gain (it moves
//! the L3 reads, it doesn't spread them over the item). End to end, the 32 × 48 kernel at
//! k = 768 (switch moved to k > 384) still loses, its C going through scratch and the
//! merge: `fwd W768x768 Bpre` 932 vs 1052, `Wx W768x2048 Apre` 325 vs 432. Nor does the
//! 32 × 32 kernel run B-outer with its C tiles stored in place (no scratch, no merge; the
//! same panels, so packed operands unchanged), chosen when k fits one block, n > m and the
//! packed B is ≥ 1 MiB: the loop gains (`fwd W768x2048` 1316 vs 1218) but end to end it
//! loses, `fwd W768x2048 Bpre` 1066 vs 1127, `fwd W768x768 Bpre` 1058 vs 1118, `dW W768x2048`
//! 595 vs 787 (3 interleaved rounds of 15): a 256-row column strip of 32 × 32 tiles written
//! at C's power-of-two pitch costs more than the order saves, where A-outer writes whole
//! row blocks. So at these shapes the 32 × 32 A-outer loop sits at 50–55 % of the tile
//! peak with its panels in L2 (42–48 % when B spills to L3), and end to end 35–40 % once A
//! is packed and C written. The 60 % of #5 would need A to stay in L1 while B streams (half
//! the traffic, which L2 delivers), but a 768-deep A panel is 48 KiB, all of L1, and the 8
//! tiles leave no room for a narrower resident panel without C round trips (see above);
//! and the memory-side phases above cut any figure by 3× while they last.
//!
//! Tile instructions are not stable Rust intrinsics, so they are written with `asm!`. The tile
//! configuration is loaded once per thread and work item by [`TileSession`], whose `Drop`
//! issues `tilerelease` on every exit path.
#![allow(
    unsafe_code,
    reason = "AMX tile instructions via asm! and AVX-512 packing intrinsics"
)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::marker::PhantomData;

use super::{MicroKernel, PanelSrc};
use crate::convert::bf16_bits;
use crate::cpu::Isa;
use crate::gemm::ElemPtr;

/// Bytes in a tile row (and the `tileloadd` stride of packed panels).
const TILE_ROW_BYTES: usize = 64;
/// K covered by one 64-byte row of bf16.
const K_STEP: usize = 32;
/// Rows of the C tile (two A tiles), both kernels.
const MR: usize = 32;
/// bf16 elements of the next B panel the wide kernel prefetches per k step (6 cache lines).
const PREFETCH_PER_STEP: usize = 6 * 64 / 2;

/// The 64-byte `ldtilecfg` operand.
#[repr(C, align(64))]
struct TileConfig {
    palette_id: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// Eight 16 × 64-byte tiles.
    fn all_16x64() -> TileConfig {
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        for tile in 0..8 {
            colsb[tile] = TILE_ROW_BYTES as u16;
            rows[tile] = 16;
        }
        TileConfig {
            palette_id: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb,
            rows,
        }
    }
}

thread_local! {
    /// Live `TileSession`s on this thread; the configuration is loaded at 0 → 1 and released at
    /// 1 → 0, so nested sessions don't release the outer one's tiles.
    static SESSION_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Proof that this thread has the tile configuration loaded; releases the tiles on drop.
pub(crate) struct TileSession {
    /// Tile state is per thread.
    _not_send: PhantomData<*const ()>,
}

impl TileSession {
    /// Loads the tile configuration (unless an outer session on this thread already did).
    ///
    /// # Safety
    /// The host has AMX-TILE/BF16 and the process holds the XTILEDATA permission (the Amx tier
    /// is available).
    pub(crate) unsafe fn begin() -> TileSession {
        let depth = SESSION_DEPTH.with(|depth| depth.replace(depth.get() + 1));
        if depth == 0 {
            let config = TileConfig::all_16x64();
            // SAFETY: the caller guarantees AMX; `config` is a valid 64-byte palette-1 config.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) &raw const config, options(nostack, readonly));
            }
        }
        TileSession {
            _not_send: PhantomData,
        }
    }
}

impl Drop for TileSession {
    fn drop(&mut self) {
        let depth = SESSION_DEPTH.with(|depth| {
            depth.set(depth.get() - 1);
            depth.get()
        });
        if depth == 0 {
            // SAFETY: a session exists only after `begin` checked AMX; tilerelease takes no
            // operands and just returns the tile state to its init configuration.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }
}

/// `C[32 × 48] (+)= A · B` over `kc_pad` (multiple of 32) with tdpbf16ps, prefetching
/// `kc_pad / 32 × 6` cache lines from `prefetch` into L2 on the way.
///
/// # Safety
/// `session` is live on this thread; `a`/`b` are 64-byte aligned packed panels of `kc_pad`
/// depth; `c` covers 32 rows × 48 f32 at row stride `rs_c` elements (readable too when
/// `load_c`). `prefetch` may be any address (a prefetch never faults).
#[inline]
#[allow(
    clippy::too_many_arguments,
    reason = "the microkernel contract's operands plus the tile session"
)]
unsafe fn kernel_32x48(
    _session: &TileSession,
    kc_pad: usize,
    a: *const u16,
    b: *const u16,
    c: *mut f32,
    rs_c: isize,
    load_c: bool,
    prefetch: *const u16,
) {
    debug_assert!(kc_pad > 0 && kc_pad.is_multiple_of(K_STEP));
    let steps = kc_pad / K_STEP;
    let ldc = rs_c * 4;
    let c_lower = c.wrapping_offset(16 * rs_c);
    // Schedule (per k step): A0 B0 → C00; A1 → C10; B1 → C11; A0 → C01; B2 → C02; A1 → C12.
    // Tiles are not renamed, so a load into tmm6/tmm7 waits for the previous reader; the snake
    // order gives each reload one tdp of slack. The prefetches ride along for free: the
    // front end is idle while the tile unit works.
    // SAFETY: tiles configured by `_session`; the loop reads `steps` × 2 KiB from `a` and
    // × 3 KiB from `b`, their packed sizes; the C loads/stores cover exactly the 32 × 48 tile;
    // prefetches touch no architectural state.
    unsafe {
        asm!(
            "test {load:e}, {load:e}",
            "jz 2f",
            "tileloadd tmm0, [{c} + {ldc}*1]",
            "tileloadd tmm1, [{c} + {ldc}*1 + 64]",
            "tileloadd tmm2, [{c} + {ldc}*1 + 128]",
            "tileloadd tmm3, [{c2} + {ldc}*1]",
            "tileloadd tmm4, [{c2} + {ldc}*1 + 64]",
            "tileloadd tmm5, [{c2} + {ldc}*1 + 128]",
            "jmp 3f",
            "2:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "3:",
            "tileloadd tmm6, [{a} + {s64}*1]",
            "tileloadd tmm7, [{b} + {s64}*1]",
            "tdpbf16ps tmm0, tmm6, tmm7",
            "tileloadd tmm6, [{a} + {s64}*1 + 1024]",
            "tdpbf16ps tmm3, tmm6, tmm7",
            "tileloadd tmm7, [{b} + {s64}*1 + 1024]",
            "tdpbf16ps tmm4, tmm6, tmm7",
            "tileloadd tmm6, [{a} + {s64}*1]",
            "tdpbf16ps tmm1, tmm6, tmm7",
            "tileloadd tmm7, [{b} + {s64}*1 + 2048]",
            "tdpbf16ps tmm2, tmm6, tmm7",
            "tileloadd tmm6, [{a} + {s64}*1 + 1024]",
            "tdpbf16ps tmm5, tmm6, tmm7",
            "prefetcht1 [{pf}]",
            "prefetcht1 [{pf} + 64]",
            "prefetcht1 [{pf} + 128]",
            "prefetcht1 [{pf} + 192]",
            "prefetcht1 [{pf} + 256]",
            "prefetcht1 [{pf} + 320]",
            "add {pf}, 384",
            "add {a}, 2048",
            "add {b}, 3072",
            "dec {steps}",
            "jnz 3b",
            "tilestored [{c} + {ldc}*1], tmm0",
            "tilestored [{c} + {ldc}*1 + 64], tmm1",
            "tilestored [{c} + {ldc}*1 + 128], tmm2",
            "tilestored [{c2} + {ldc}*1], tmm3",
            "tilestored [{c2} + {ldc}*1 + 64], tmm4",
            "tilestored [{c2} + {ldc}*1 + 128], tmm5",
            load = in(reg) u32::from(load_c),
            c = in(reg) c,
            c2 = in(reg) c_lower,
            ldc = in(reg) ldc,
            s64 = in(reg) TILE_ROW_BYTES,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            pf = inout(reg) prefetch => _,
            steps = inout(reg) steps => _,
            options(nostack),
        );
    }
}

unsafe fn kernel_32x32(
    _session: &TileSession,
    kc_pad: usize,
    a: *const u16,
    b: *const u16,
    c: *mut f32,
    rs_c: isize,
    load_c: bool,
) {
    debug_assert!(kc_pad > 0 && kc_pad.is_multiple_of(K_STEP));
    let steps = kc_pad / K_STEP;
    let pairs = steps / 2;
    let odd = steps % 2;
    let ldc = rs_c * 4;
    let c_lower = c.wrapping_offset(16 * rs_c);
    // Schedule: two k steps per loop iteration, the second with the tdp order rotated so that
    // every tile reload has a tdp of slack (tiles are not renamed: a load waits for the
    // previous readers of its tile). B, streamed from L2 once per A panel, is loaded with the
    // T1 (non-temporal) hint; A stays in L1.
    // SAFETY: tiles configured by `_session`; the loops read `steps` × 2 KiB from each panel,
    // which is their packed size; the C loads/stores cover exactly the 32 × 32 tile.
    unsafe {
        asm!(
            "test {load:e}, {load:e}",
            "jz 2f",
            "tileloadd tmm0, [{c} + {ldc}*1]",
            "tileloadd tmm1, [{c} + {ldc}*1 + 64]",
            "tileloadd tmm2, [{c2} + {ldc}*1]",
            "tileloadd tmm3, [{c2} + {ldc}*1 + 64]",
            "jmp 3f",
            "2:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "3:",
            "test {pairs}, {pairs}",
            "jz 5f",
            "4:",
            "tileloadd tmm4, [{a} + {s64}*1]",
            "tileloaddt1 tmm6, [{b} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloaddt1 tmm7, [{b} + {s64}*1 + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm4, [{a} + {s64}*1 + 2048]",
            "tileloaddt1 tmm7, [{b} + {s64}*1 + 3072]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloaddt1 tmm6, [{b} + {s64}*1 + 2048]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a} + {s64}*1 + 3072]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 4096",
            "add {b}, 4096",
            "dec {pairs}",
            "jnz 4b",
            "5:",
            "test {odd}, {odd}",
            "jz 6f",
            "tileloadd tmm4, [{a} + {s64}*1]",
            "tileloaddt1 tmm6, [{b} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloaddt1 tmm7, [{b} + {s64}*1 + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "6:",
            "tilestored [{c} + {ldc}*1], tmm0",
            "tilestored [{c} + {ldc}*1 + 64], tmm1",
            "tilestored [{c2} + {ldc}*1], tmm2",
            "tilestored [{c2} + {ldc}*1 + 64], tmm3",
            load = in(reg) u32::from(load_c),
            c = in(reg) c,
            c2 = in(reg) c_lower,
            ldc = in(reg) ldc,
            s64 = in(reg) TILE_ROW_BYTES,
            odd = in(reg) odd,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            pairs = inout(reg) pairs => _,
            options(nostack),
        );
    }
}

/// Runs `iterations` × 4 `tdpbf16ps` on register tiles (no memory traffic) and returns the
/// floating-point operations performed: the tile peak.
///
/// # Safety
/// The Amx tier is available.
pub(crate) unsafe fn peak_loop(iterations: u64) -> f64 {
    // SAFETY: forwarded from the caller.
    let _session = unsafe { TileSession::begin() };
    if iterations == 0 {
        return 0.0;
    }
    // SAFETY: tiles configured above; the loop only touches tile registers.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            "2:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iterations => _,
            options(nostack, nomem),
        );
    }
    iterations as f64 * 4.0 * (16.0 * 16.0 * 32.0 * 2.0)
}

/// Offset (in bf16) of A element (`row`, `k`) in a packed A panel.
#[inline(always)]
fn a_index(row: usize, k: usize) -> usize {
    ((k / K_STEP * 2 + row / 16) * 16 + row % 16) * K_STEP + k % K_STEP
}

/// Offset (in bf16) of B element (`k`, `col`) in a packed B panel of `TILES` × 16 columns.
#[inline(always)]
fn b_index<const TILES: usize>(k: usize, col: usize) -> usize {
    (((k / K_STEP * TILES + col / 16) * 16 + (k % K_STEP) / 2) * 16 + col % 16) * 2 + k % 2
}

/// Portable packer for any strides: element by element, `width` lines (`MR` or `NR`).
///
/// # Safety
/// Elements (`0..mn_valid`, `0..kc`) of `src` readable; `dst` writable for width × kc_pad.
unsafe fn pack_scalar(
    src: PanelSrc,
    width: usize,
    mn_valid: usize,
    kc: usize,
    dst: *mut u16,
    index: fn(usize, usize) -> usize,
) {
    let kc_pad = kc.next_multiple_of(K_STEP);
    for mn in 0..width {
        for k in 0..kc_pad {
            let value = if mn < mn_valid && k < kc {
                // SAFETY: (mn, k) inside the valid region per the contract.
                bf16_bits(unsafe { src.get(mn, k) })
            } else {
                0
            };
            // SAFETY: index < width × kc_pad, the panel size.
            unsafe { *dst.add(index(mn, k)) = value };
        }
    }
}

/// Lane mask for the first `lanes` (≤ 16) lanes.
#[inline(always)]
pub(crate) fn mask16(lanes: usize) -> __mmask16 {
    ((1u32 << lanes.min(16)) - 1) as __mmask16
}

/// Loads 16 contiguous elements at element `offset` from `ptr` (masked lanes read nothing and
/// are zero), widened to f32.
///
/// # Safety
/// The unmasked lanes are readable; AVX-512 F/BW/VL.
#[inline(always)]
pub(crate) unsafe fn load_run(ptr: ElemPtr, offset: isize, mask: __mmask16) -> __m512 {
    match ptr {
        // SAFETY: only unmasked lanes are accessed (fault suppression), all readable.
        ElemPtr::F32(ptr) => unsafe { _mm512_maskz_loadu_ps(mask, ptr.wrapping_offset(offset)) },
        // SAFETY: as above, 16-bit lanes.
        ElemPtr::F16(ptr) => unsafe {
            let halves = _mm256_maskz_loadu_epi16(mask, ptr.wrapping_offset(offset).cast());
            _mm512_cvtph_ps(halves)
        },
    }
}

/// Rounds 16 f32 to bf16, returned in the low half of each 32-bit lane (RNE, quiet NaN; the
/// same bits as [`bf16_bits`]).
///
/// # Safety
/// AVX-512 F.
#[inline(always)]
unsafe fn round_bf16(values: __m512) -> __m512i {
    // SAFETY: register-only AVX-512F operations; the caller guarantees the feature.
    unsafe {
        let bits = _mm512_castps_si512(values);
        let high = _mm512_srli_epi32::<16>(bits);
        let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
        let quiet_nan = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
        let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(values, values);
        _mm512_mask_mov_epi32(rounded, is_nan, quiet_nan)
    }
}

/// 32 consecutive values (two runs of 16) → 32 bf16 in order.
///
/// # Safety
/// AVX-512 F/BW.
#[inline(always)]
unsafe fn narrow_32(low: __m512, high: __m512) -> __m512i {
    // SAFETY: register-only AVX-512F operations.
    unsafe {
        let low = _mm512_cvtepi32_epi16(round_bf16(low));
        let high = _mm512_cvtepi32_epi16(round_bf16(high));
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
    }
}

/// Interleaves two runs of 16 into 16 bf16 pairs (`first` in the low half of each u32).
///
/// # Safety
/// AVX-512 F.
#[inline(always)]
unsafe fn pair_16(first: __m512, second: __m512) -> __m512i {
    // SAFETY: register-only AVX-512F operations.
    unsafe {
        _mm512_or_si512(
            round_bf16(first),
            _mm512_slli_epi32::<16>(round_bf16(second)),
        )
    }
}

/// The transpose of the 16 × 16 u32 matrix `rows` (row `i` of the result holds element `i` of
/// every input row): 32-bit and 64-bit unpacks within 128-bit lanes, then two rounds of
/// 128-bit lane shuffles.
///
/// # Safety
/// AVX-512 F.
#[inline(always)]
pub(crate) unsafe fn transpose_16x16(rows: &[__m512i; 16]) -> [__m512i; 16] {
    // SAFETY: register-only AVX-512F operations; the caller guarantees the feature.
    unsafe {
        let mut pairs = [_mm512_setzero_si512(); 16];
        for idx in 0..8 {
            pairs[2 * idx] = _mm512_unpacklo_epi32(rows[2 * idx], rows[2 * idx + 1]);
            pairs[2 * idx + 1] = _mm512_unpackhi_epi32(rows[2 * idx], rows[2 * idx + 1]);
        }
        // quads[4g + j], 128-bit lane L: column 4L + j of rows 4g..4g + 4.
        let mut quads = [_mm512_setzero_si512(); 16];
        for group in 0..4 {
            let base = 4 * group;
            quads[base] = _mm512_unpacklo_epi64(pairs[base], pairs[base + 2]);
            quads[base + 1] = _mm512_unpackhi_epi64(pairs[base], pairs[base + 2]);
            quads[base + 2] = _mm512_unpacklo_epi64(pairs[base + 1], pairs[base + 3]);
            quads[base + 3] = _mm512_unpackhi_epi64(pairs[base + 1], pairs[base + 3]);
        }
        let mut out = [_mm512_setzero_si512(); 16];
        for col in 0..4 {
            let even_low = _mm512_shuffle_i32x4::<0x88>(quads[col], quads[4 + col]);
            let even_high = _mm512_shuffle_i32x4::<0x88>(quads[8 + col], quads[12 + col]);
            let odd_low = _mm512_shuffle_i32x4::<0xDD>(quads[col], quads[4 + col]);
            let odd_high = _mm512_shuffle_i32x4::<0xDD>(quads[8 + col], quads[12 + col]);
            out[col] = _mm512_shuffle_i32x4::<0x88>(even_low, even_high);
            out[8 + col] = _mm512_shuffle_i32x4::<0xDD>(even_low, even_high);
            out[4 + col] = _mm512_shuffle_i32x4::<0x88>(odd_low, odd_high);
            out[12 + col] = _mm512_shuffle_i32x4::<0xDD>(odd_low, odd_high);
        }
        out
    }
}

/// Writes the transpose of the 16 × 16 u32 matrix `rows` to `dst` (16 rows of 64 bytes).
///
/// # Safety
/// `dst` writable for 256 u32; AVX-512 F.
#[inline(always)]
unsafe fn store_transposed(rows: &[__m512i; 16], dst: *mut u16) {
    // SAFETY: AVX-512F per the caller; `dst` holds 16 × 64 writable bytes.
    unsafe {
        let columns = transpose_16x16(rows);
        for (idx, column) in columns.iter().enumerate() {
            _mm512_storeu_si512(dst.add(idx * 32).cast(), *column);
        }
    }
}

/// A panel from a source whose k runs are contiguous (row-major A).
///
/// # Safety
/// As for [`MicroKernel::pack_a`], with `src.k_stride == 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_a_k_contiguous(src: PanelSrc, rows: usize, kc: usize, dst: *mut u16) {
    let steps = kc.div_ceil(K_STEP);
    for row in 0..MR {
        let row_offset = row as isize * src.mn_stride;
        for step in 0..steps {
            let out = dst.wrapping_add(a_index(row, step * K_STEP));
            let k0 = step * K_STEP;
            // SAFETY: `out` is one 64-byte row inside the panel; loads cover only k < kc of a
            // valid row.
            unsafe {
                if row >= rows {
                    _mm512_storeu_si512(out.cast(), _mm512_setzero_si512());
                    continue;
                }
                let left = kc - k0;
                let low = load_run(src.ptr, row_offset + k0 as isize, mask16(left));
                let high = load_run(
                    src.ptr,
                    row_offset + k0 as isize + 16,
                    mask16(left.saturating_sub(16)),
                );
                _mm512_storeu_si512(out.cast(), narrow_32(low, high));
            }
        }
    }
}

/// A panel from a source whose rows are contiguous (transposed A).
///
/// # Safety
/// As for [`MicroKernel::pack_a`], with `src.mn_stride == 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_a_m_contiguous(src: PanelSrc, rows: usize, kc: usize, dst: *mut u16) {
    let steps = kc.div_ceil(K_STEP);
    for step in 0..steps {
        for half in 0..2 {
            let row0 = half * 16;
            let mask = mask16(rows.saturating_sub(row0));
            let mut pairs = [_mm512_setzero_si512(); 16];
            for (pair_idx, pair) in pairs.iter_mut().enumerate() {
                let k = step * K_STEP + 2 * pair_idx;
                // SAFETY: lanes are rows < `rows` at k < kc only.
                unsafe {
                    let first = if k < kc {
                        load_run(src.ptr, row0 as isize + k as isize * src.k_stride, mask)
                    } else {
                        _mm512_setzero_ps()
                    };
                    let second = if k + 1 < kc {
                        load_run(
                            src.ptr,
                            row0 as isize + (k + 1) as isize * src.k_stride,
                            mask,
                        )
                    } else {
                        _mm512_setzero_ps()
                    };
                    *pair = pair_16(first, second);
                }
            }
            // SAFETY: the tile at (step, half) is 16 rows × 64 bytes inside the panel.
            unsafe { store_transposed(&pairs, dst.wrapping_add(a_index(row0, step * K_STEP))) };
        }
    }
}

/// B panel from a source whose columns are contiguous (row-major B).
///
/// # Safety
/// As for [`MicroKernel::pack_b`], with `src.mn_stride == 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_b_n_contiguous<const TILES: usize>(
    src: PanelSrc,
    cols: usize,
    kc: usize,
    dst: *mut u16,
) {
    let steps = kc.div_ceil(K_STEP);
    for step in 0..steps {
        for half in 0..TILES {
            let col0 = half * 16;
            let mask = mask16(cols.saturating_sub(col0));
            for pair_idx in 0..16 {
                let k = step * K_STEP + 2 * pair_idx;
                let out = dst.wrapping_add(b_index::<TILES>(k, col0));
                // SAFETY: lanes are columns < `cols` at k < kc only; `out` is one 64-byte row
                // inside the panel.
                unsafe {
                    let first = if k < kc {
                        load_run(src.ptr, col0 as isize + k as isize * src.k_stride, mask)
                    } else {
                        _mm512_setzero_ps()
                    };
                    let second = if k + 1 < kc {
                        load_run(
                            src.ptr,
                            col0 as isize + (k + 1) as isize * src.k_stride,
                            mask,
                        )
                    } else {
                        _mm512_setzero_ps()
                    };
                    _mm512_storeu_si512(out.cast(), pair_16(first, second));
                }
            }
        }
    }
}

/// Several B panels of `TILES` × 16 columns (panel `j` at `dst + j · panel_stride`) from a
/// source whose columns are contiguous (row-major B): k pair outer, 16-column chunks inner,
/// so rows `k` and `k + 1` are each read in one run of `cols` elements across all the
/// panels. Packing panel by panel instead reads a 64- or 96-byte strip per row, a new page
/// per row, which the prefetchers don't follow (it was 40 % of a 256 × 2048 × 768 product
/// with B packed per call).
///
/// # Safety
/// As for [`MicroKernel::pack_b_panels`], with `src.mn_stride == 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_b_n_contiguous_panels<const TILES: usize>(
    src: PanelSrc,
    cols: usize,
    kc: usize,
    dst: *mut u16,
    panel_stride: usize,
) {
    let chunks = cols.div_ceil(TILES * 16) * TILES;
    let kc_pad = kc.next_multiple_of(K_STEP);
    for k in (0..kc_pad).step_by(2) {
        let first_row = k as isize * src.k_stride;
        let second_row = first_row + src.k_stride;
        for chunk in 0..chunks {
            let col0 = chunk * 16;
            let mask = mask16(cols.saturating_sub(col0));
            let out = dst.wrapping_add(
                chunk / TILES * panel_stride + b_index::<TILES>(k, chunk % TILES * 16),
            );
            // SAFETY: lanes are columns < `cols` at k < kc only; `out` is one 64-byte row
            // inside panel `chunk / TILES`.
            unsafe {
                let first = if k < kc {
                    load_run(src.ptr, first_row + col0 as isize, mask)
                } else {
                    _mm512_setzero_ps()
                };
                let second = if k + 1 < kc {
                    load_run(src.ptr, second_row + col0 as isize, mask)
                } else {
                    _mm512_setzero_ps()
                };
                _mm512_storeu_si512(out.cast(), pair_16(first, second));
            }
        }
    }
}

/// Packs `cols.div_ceil(TILES · 16)` B panels for either AMX kernel.
///
/// # Safety
/// As for [`MicroKernel::pack_b_panels`]; the Amx tier is available.
unsafe fn pack_b_panels_any<const TILES: usize>(
    src: PanelSrc,
    cols: usize,
    kc: usize,
    dst: *mut u16,
    panel_stride: usize,
) {
    if src.mn_stride == 1 {
        // SAFETY: forwarded; the Amx tier implies AVX-512 F/BW/VL.
        unsafe { pack_b_n_contiguous_panels::<TILES>(src, cols, kc, dst, panel_stride) }
    } else {
        let nr = TILES * 16;
        for panel in 0..cols.div_ceil(nr) {
            let col = panel * nr;
            // SAFETY: forwarded for the panel's columns and its place in `dst`.
            unsafe {
                pack_b_any::<TILES>(
                    src.shift_mn(col),
                    nr.min(cols - col),
                    kc,
                    dst.add(panel * panel_stride),
                )
            };
        }
    }
}

/// B panel from a source whose k runs are contiguous (transposed B, e.g. `[n][k]` weights).
///
/// # Safety
/// As for [`MicroKernel::pack_b`], with `src.k_stride == 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_b_k_contiguous<const TILES: usize>(
    src: PanelSrc,
    cols: usize,
    kc: usize,
    dst: *mut u16,
) {
    let steps = kc.div_ceil(K_STEP);
    for step in 0..steps {
        let k0 = step * K_STEP;
        let left = kc - k0;
        for half in 0..TILES {
            let col0 = half * 16;
            let mut lines = [_mm512_setzero_si512(); 16];
            for (col_idx, line) in lines.iter_mut().enumerate() {
                let col = col0 + col_idx;
                if col >= cols {
                    continue;
                }
                let base = col as isize * src.mn_stride + k0 as isize;
                // SAFETY: loads cover k < kc of a valid column.
                unsafe {
                    let low = load_run(src.ptr, base, mask16(left));
                    let high = load_run(src.ptr, base + 16, mask16(left.saturating_sub(16)));
                    *line = narrow_32(low, high);
                }
            }
            // SAFETY: the tile at (step, half) is 16 rows × 64 bytes inside the panel.
            unsafe { store_transposed(&lines, dst.wrapping_add(b_index::<TILES>(k0, col0))) };
        }
    }
}

/// Packs an A panel (32 rows) for either AMX kernel.
///
/// # Safety
/// As for [`MicroKernel::pack_a`]; the Amx tier is available.
unsafe fn pack_a_any(src: PanelSrc, rows: usize, kc: usize, dst: *mut u16) {
    // SAFETY: (all arms) forwarded; the Amx tier implies AVX-512 F/BW/VL.
    unsafe {
        if src.k_stride == 1 {
            pack_a_k_contiguous(src, rows, kc, dst);
        } else if src.mn_stride == 1 {
            pack_a_m_contiguous(src, rows, kc, dst);
        } else {
            pack_scalar(src, MR, rows, kc, dst, a_index);
        }
    }
}

/// Packs a B panel of `TILES` × 16 columns.
///
/// # Safety
/// As for [`MicroKernel::pack_b`]; the Amx tier is available.
unsafe fn pack_b_any<const TILES: usize>(src: PanelSrc, cols: usize, kc: usize, dst: *mut u16) {
    // SAFETY: (all arms) forwarded; the Amx tier implies AVX-512 F/BW/VL.
    unsafe {
        if src.mn_stride == 1 {
            pack_b_n_contiguous::<TILES>(src, cols, kc, dst);
        } else if src.k_stride == 1 {
            pack_b_k_contiguous::<TILES>(src, cols, kc, dst);
        } else {
            pack_scalar(src, TILES * 16, cols, kc, dst, |col, k| {
                b_index::<TILES>(k, col)
            });
        }
    }
}

/// The AMX bf16 kernel for one `kc` block (`k` ≤ 768): `amx_gemm_bf16_32x32`, 2 × 2 tiles,
/// run A panel outer with whole tiles stored straight into C. Measured best when k fits one
/// block (the forward products with k = 768, `dW` with k = 256, attention).
pub(crate) struct AmxBf16;

impl MicroKernel for AmxBf16 {
    const NAME: &'static str = "amx_gemm_bf16_32x32";
    const MR: usize = MR;
    const NR: usize = 32;
    const KU: usize = K_STEP;
    const MC: usize = 256;
    const KC: usize = 768;
    const NC: usize = 512;
    const ISA: Isa = Isa::Amx;
    type Elem = u16;
    type Session = TileSession;

    unsafe fn begin() -> TileSession {
        // SAFETY: forwarded from this function's contract.
        unsafe { TileSession::begin() }
    }

    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut u16) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_a_any(src, rows, kc, dst) }
    }

    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut u16) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_b_any::<2>(src, cols, kc, dst) }
    }

    unsafe fn pack_b_panels(
        src: PanelSrc,
        cols: usize,
        kc: usize,
        dst: *mut u16,
        panel_stride: usize,
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_b_panels_any::<2>(src, cols, kc, dst, panel_stride) }
    }

    unsafe fn kernel(
        session: &TileSession,
        kc_pad: usize,
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        rs_c: isize,
        load_c: bool,
        _prefetch: *const u16,
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { kernel_32x32(session, kc_pad, a, b, c, rs_c, load_c) }
    }
}

/// The AMX bf16 kernel for deep products (`k` > 768): `amx_gemm_bf16_32x48`, 2 × 3 tiles,
/// run B panel outer with the next panel prefetched and C through a compact scratch (see the
/// module docs). Measured best for `dX` (k = 2048) and the other multi-block products.
pub(crate) struct AmxBf16Wide;

impl MicroKernel for AmxBf16Wide {
    const NAME: &'static str = "amx_gemm_bf16_32x48";
    const MR: usize = MR;
    const NR: usize = 48;
    const KU: usize = K_STEP;
    const MC: usize = 256;
    const KC: usize = 1024;
    const NC: usize = 16 * 48;
    const ISA: Isa = Isa::Amx;
    const B_OUTER: bool = true;
    const PREFETCH_PER_STEP: usize = PREFETCH_PER_STEP;
    type Elem = u16;
    type Session = TileSession;

    unsafe fn begin() -> TileSession {
        // SAFETY: forwarded from this function's contract.
        unsafe { TileSession::begin() }
    }

    unsafe fn pack_a(src: PanelSrc, rows: usize, kc: usize, dst: *mut u16) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_a_any(src, rows, kc, dst) }
    }

    unsafe fn pack_b(src: PanelSrc, cols: usize, kc: usize, dst: *mut u16) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_b_any::<3>(src, cols, kc, dst) }
    }

    unsafe fn pack_b_panels(
        src: PanelSrc,
        cols: usize,
        kc: usize,
        dst: *mut u16,
        panel_stride: usize,
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { pack_b_panels_any::<3>(src, cols, kc, dst, panel_stride) }
    }

    unsafe fn kernel(
        session: &TileSession,
        kc_pad: usize,
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        rs_c: isize,
        load_c: bool,
        prefetch: *const u16,
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe { kernel_32x48(session, kc_pad, a, b, c, rs_c, load_c, prefetch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_indices_are_a_bijection() {
        let kc_pad = 64;
        for (width, index) in [
            (MR, a_index as fn(usize, usize) -> usize),
            (32, |mn, k| b_index::<2>(k, mn)),
            (48, |mn, k| b_index::<3>(k, mn)),
        ] {
            let mut seen = vec![false; width * kc_pad];
            for mn in 0..width {
                for k in 0..kc_pad {
                    let at = index(mn, k);
                    assert!(!seen[at], "({mn}, {k}) collides");
                    seen[at] = true;
                }
            }
        }
        // B: the two k of a pair are adjacent; the next column follows; a tile is 1 KiB; a
        // k step holds the three tiles.
        assert_eq!(b_index::<3>(1, 0), 1);
        assert_eq!(b_index::<3>(0, 1), 2);
        assert_eq!(b_index::<3>(2, 0), 32);
        assert_eq!(b_index::<3>(0, 16), 512);
        assert_eq!(b_index::<3>(0, 32), 1024);
        assert_eq!(b_index::<3>(32, 0), 1536);
        assert_eq!(b_index::<2>(32, 0), 1024);
        // A: one tile row is 32 consecutive k.
        assert_eq!(a_index(0, 31), 31);
        assert_eq!(a_index(1, 0), 32);
        assert_eq!(a_index(16, 0), 512);
        assert_eq!(a_index(0, 32), 1024);
    }

    #[test]
    fn transpose_16x16_matches_scalar() {
        if !crate::cpu::isa_available(Isa::Avx512) {
            eprintln!("amx transpose: skipping (no Avx512 tier on this host)");
            return;
        }
        let matrix: Vec<[u32; 16]> = (0..16u32)
            .map(|row| std::array::from_fn(|col| row * 100 + col as u32))
            .collect();
        let mut out = [[0u32; 16]; 16];
        // SAFETY: AVX-512 checked above; every load/store covers one 16 × u32 array.
        unsafe { transpose_checked(&matrix, &mut out) };
        for (row, line) in out.iter().enumerate() {
            for (col, &value) in line.iter().enumerate() {
                assert_eq!(value, col as u32 * 100 + row as u32, "out[{row}][{col}]");
            }
        }
    }

    /// # Safety
    /// AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose_checked(matrix: &[[u32; 16]], out: &mut [[u32; 16]; 16]) {
        let mut rows = [_mm512_setzero_si512(); 16];
        for (row, line) in rows.iter_mut().zip(matrix) {
            // SAFETY: `line` holds 16 u32.
            *row = unsafe { _mm512_loadu_si512(line.as_ptr().cast()) };
        }
        // SAFETY: AVX-512 per this function's contract.
        let columns = unsafe { transpose_16x16(&rows) };
        for (line, column) in out.iter_mut().zip(columns) {
            // SAFETY: `line` holds 16 u32.
            unsafe { _mm512_storeu_si512(line.as_mut_ptr().cast(), column) };
        }
    }

    /// The multi-panel B packer (row sweeps across panels) against packing panel by panel,
    /// for row-major and transposed f32/f16 sources, partial last panels, odd depths, and a
    /// panel stride larger than a panel (the gap must stay untouched).
    #[test]
    fn multi_panel_b_packer_matches_per_panel() {
        if !crate::cpu::isa_available(Isa::Amx) {
            eprintln!("amx multi-panel packer: skipping (no Amx tier on this host)");
            return;
        }
        fn check<K: MicroKernel<Elem = u16>>(src: PanelSrc, cols: usize, kc: usize) {
            let kc_pad = kc.next_multiple_of(K_STEP);
            let stride = K::NR * kc_pad + 96;
            let panels = cols.div_ceil(K::NR);
            let mut fast = vec![0xabcdu16; panels * stride];
            let mut slow = vec![0xabcdu16; panels * stride];
            // SAFETY: columns 0..cols × k 0..kc lie inside the caller's data; both buffers
            // hold `panels` strides; Amx checked by the caller.
            unsafe {
                K::pack_b_panels(src, cols, kc, fast.as_mut_ptr(), stride);
                for panel in 0..panels {
                    let col = panel * K::NR;
                    K::pack_b(
                        src.shift_mn(col),
                        K::NR.min(cols - col),
                        kc,
                        slow.as_mut_ptr().add(panel * stride),
                    );
                }
            }
            assert_eq!(fast, slow, "{} cols={cols} kc={kc}", K::NAME);
        }
        let (rows, cols) = (67usize, 131usize);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.377).cos() * 2.0)
            .collect();
        let halves: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        for ptr in [ElemPtr::F32(data.as_ptr()), ElemPtr::F16(halves.as_ptr())] {
            // B = the row-major rows × cols matrix (columns contiguous) ...
            let n_contiguous = PanelSrc {
                ptr,
                mn_stride: 1,
                k_stride: cols as isize,
            };
            // ... or its transpose (k contiguous).
            let k_contiguous = PanelSrc {
                ptr,
                mn_stride: cols as isize,
                k_stride: 1,
            };
            for (n_max, k_max) in [(cols, rows)] {
                for n in [1, 16, 31, 32, 33, 47, 48, 49, 96, n_max] {
                    for kc in [1, 2, 31, 32, 33, k_max] {
                        check::<AmxBf16>(n_contiguous, n, kc);
                        check::<AmxBf16Wide>(n_contiguous, n, kc);
                    }
                }
            }
            for n in [1, 33, 49, rows] {
                for kc in [1, 33, cols] {
                    check::<AmxBf16>(k_contiguous, n, kc);
                    check::<AmxBf16Wide>(k_contiguous, n, kc);
                }
            }
        }
    }

    #[test]
    fn vector_packers_match_scalar() {
        if !crate::cpu::isa_available(Isa::Amx) {
            eprintln!("amx packers: skipping (no Amx tier on this host)");
            return;
        }
        let (rows, cols) = (61usize, 45usize);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.731).sin() * 3.0)
            .collect();
        let halves: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        for ptr in [ElemPtr::F32(data.as_ptr()), ElemPtr::F16(halves.as_ptr())] {
            // mn = row of a rows×cols row-major matrix; k = column (k contiguous) ...
            let k_contiguous = PanelSrc {
                ptr,
                mn_stride: cols as isize,
                k_stride: 1,
            };
            // ... or mn = column, k = row (mn contiguous).
            let mn_contiguous = PanelSrc {
                ptr,
                mn_stride: 1,
                k_stride: cols as isize,
            };
            for (src, mn_max, kc) in [(k_contiguous, rows, cols), (mn_contiguous, cols, rows)] {
                // (width, which): 0 = A, 2 = the 32-column B, 3 = the 48-column B.
                for (width, which) in [(MR, 0), (32, 2), (48, 3)] {
                    for mn_valid in [width.min(mn_max), 7, 17, 33.min(width)] {
                        let kc_pad = kc.next_multiple_of(32);
                        let mut fast = vec![0xffffu16; width * kc_pad];
                        let mut slow = vec![0xeeeeu16; width * kc_pad];
                        let out = slow.as_mut_ptr();
                        // SAFETY: valid region inside the data; buffers sized width × kc_pad;
                        // Amx checked.
                        unsafe {
                            match which {
                                0 => {
                                    AmxBf16::pack_a(src, mn_valid, kc, fast.as_mut_ptr());
                                    pack_scalar(src, MR, mn_valid, kc, out, a_index);
                                }
                                2 => {
                                    AmxBf16::pack_b(src, mn_valid, kc, fast.as_mut_ptr());
                                    pack_scalar(src, 32, mn_valid, kc, out, |c, k| {
                                        b_index::<2>(k, c)
                                    });
                                }
                                _ => {
                                    AmxBf16Wide::pack_b(src, mn_valid, kc, fast.as_mut_ptr());
                                    pack_scalar(src, 48, mn_valid, kc, out, |c, k| {
                                        b_index::<3>(k, c)
                                    });
                                }
                            }
                        }
                        assert_eq!(fast, slow, "which={which} mn_valid={mn_valid} kc={kc}");
                    }
                }
            }
        }
    }
}
