//! The driver's tile loop alone, for `milbridge bench gemm`'s `loop` rows: A and B are packed
//! once into full-depth panels (untimed), and each timed run is phase B of [`run`](super::run)
//! minus its edges — the same plan, work items, loop order, `kc` blocks and prefetch
//! pointers, with every C tile written to a compact per-item scratch and never merged into C.
//! Set against the same shape's `Bpre` row, it separates the kernel loop from packing A and
//! writing C.

use super::{AlignedBuf, Plan, a_panel_src, pack_b_panels, plan};
use crate::gemm::MatRef;
use crate::gemm::kernels::MicroKernel;
use crate::pool::Pool;

/// A product's operands packed for kernel `K`, ready to run the tile loop.
pub(crate) struct TileLoop<K: MicroKernel> {
    plan: Plan,
    /// `m.div_ceil(MR)` A panels of `MR × k_pad`, as phase A of the driver leaves them.
    a: AlignedBuf,
    /// `n.div_ceil(NR)` B panels of `NR × k_pad`, as a `PackedB` holds them.
    b: AlignedBuf,
    /// One compact C scratch per work item (`m_tiles · n_tiles` tiles of `MR × NR` f32).
    c: Vec<AlignedBuf>,
    _kernel: std::marker::PhantomData<K>,
}

// SAFETY: a `TileLoop` owns its buffers; `run` hands each pool task a distinct C scratch and
// only reads the panels.
unsafe impl<K: MicroKernel> Sync for TileLoop<K> {}

impl<K: MicroKernel> TileLoop<K> {
    /// Packs `a` (`m × k`) and `b` (`k × n`) for a `pool`-sized plan.
    ///
    /// # Safety
    /// The views are readable; the host supports `K`'s tier.
    pub(crate) unsafe fn new(pool: &Pool, a: MatRef, b: MatRef) -> TileLoop<K> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let plan = plan::<K>(1, m, n, k, pool.n_threads());
        let elem = size_of::<K::Elem>();
        let mut a_buf = AlignedBuf::default();
        let m_panels = m.div_ceil(K::MR);
        let panel_elems = K::MR * plan.k_pad;
        let a_ptr = a_buf.ensure::<K::Elem>(m_panels * panel_elems * elem);
        for panel in 0..m_panels {
            let row = panel * K::MR;
            // SAFETY: rows `row..` × k `0..k` are inside A; panel `panel` fits the buffer.
            unsafe {
                K::pack_a(
                    a_panel_src(a, row, 0),
                    K::MR.min(m - row),
                    k,
                    a_ptr.add(panel * panel_elems),
                )
            };
        }
        let mut b_buf = AlignedBuf::default();
        // SAFETY: forwarded.
        unsafe { pack_b_panels::<K>(pool, b, k, n, plan.k_pad, &mut b_buf) };
        let items = plan.m_blocks * plan.n_blocks;
        let c = (0..items)
            .map(|_| {
                let mut buf = AlignedBuf::default();
                let tiles = (plan.mc / K::MR) * (plan.nc / K::NR);
                buf.ensure::<f32>(tiles * K::MR * K::NR * 4);
                buf
            })
            .collect();
        TileLoop {
            plan,
            a: a_buf,
            b: b_buf,
            c,
            _kernel: std::marker::PhantomData,
        }
    }

    /// Seconds per repetition of the whole loop on `pool` (after one untimed warm-up).
    pub(crate) fn time(&mut self, pool: &Pool, reps: usize) -> Vec<f64> {
        let items = self.c.len();
        let c_ptrs: Vec<usize> = self
            .c
            .iter_mut()
            .map(|buf| buf.ensure::<f32>(0) as usize)
            .collect();
        let this = &*self;
        let run = || {
            pool.run(items, &|item| {
                // SAFETY: `item` < items; each task writes only its own scratch.
                unsafe { this.run_item(item, c_ptrs[item] as *mut f32) }
            })
        };
        run();
        (0..reps)
            .map(|_| {
                let start = std::time::Instant::now();
                run();
                start.elapsed().as_secs_f64()
            })
            .collect()
    }

    /// Work item `item` in the driver's order for `K` into the compact scratch `c_block`.
    ///
    /// # Safety
    /// `item` < the number of items; `c_block` is that item's scratch, used by no one else.
    unsafe fn run_item(&self, item: usize, c_block: *mut f32) {
        const PREFETCH_SLICES: usize = 8;
        let plan = self.plan;
        let (mr, nr) = (K::MR, K::NR);
        let m0 = item / plan.n_blocks * plan.mc;
        let n0 = item % plan.n_blocks * plan.nc;
        let m_tiles = plan.mc.min(plan.m - m0).div_ceil(mr);
        let n_tiles = plan.nc.min(plan.n - n0).div_ceil(nr);
        let n_panels = plan.n.div_ceil(nr);
        let a = self.a.as_ptr::<K::Elem>();
        let b = self.b.as_ptr::<K::Elem>();
        // SAFETY: the session is created for the tier the constructor's caller guaranteed.
        let session = unsafe { K::begin() };
        let tile = |tile_m: usize, tile_n: usize, kb: usize| {
            let k0 = kb * plan.kc;
            let k_pad = plan.kc.min(plan.k - k0).next_multiple_of(K::KU);
            let steps = k_pad / K::KU;
            let panel = n0 / nr + tile_n;
            let b_at = b.wrapping_add((panel * plan.k_pad + k0) * nr);
            // The prefetch hints of the driver: `run_item_b_outer` points into the next panel
            // of the item (this one at its end), `run_item` at the panel itself.
            let prefetch = if K::B_OUTER {
                let next = if tile_n + 1 < n_tiles {
                    panel + 1
                } else {
                    panel
                };
                b.wrapping_add(
                    (next.min(n_panels - 1) * plan.k_pad + k0) * nr
                        + tile_m % PREFETCH_SLICES * steps * K::PREFETCH_PER_STEP,
                )
            } else {
                b_at
            };
            // SAFETY: panel (m0 / MR + tile_m) of A and panel `panel` of B at depth k0, both
            // packed to `k_pad` ≥ k0 + this block; the tile lies inside the item's scratch;
            // the session is live on this thread.
            unsafe {
                K::kernel(
                    &session,
                    k_pad,
                    a.add(((m0 / mr + tile_m) * plan.k_pad + k0) * mr),
                    b_at,
                    c_block.add((tile_n * m_tiles + tile_m) * mr * nr),
                    nr as isize,
                    kb > 0,
                    prefetch,
                )
            };
        };
        if K::B_OUTER {
            for tile_n in 0..n_tiles {
                for kb in 0..plan.n_kb {
                    for tile_m in 0..m_tiles {
                        tile(tile_m, tile_n, kb);
                    }
                }
            }
        } else {
            for kb in 0..plan.n_kb {
                for tile_m in 0..m_tiles {
                    for tile_n in 0..n_tiles {
                        tile(tile_m, tile_n, kb);
                    }
                }
            }
        }
        drop(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::ElemPtr;
    use crate::gemm::kernels::generic::Generic;

    /// The loop really computes the product: after a run, every item's scratch holds its C
    /// tiles (against a product of the operands as `operand` rounds them, up to f32
    /// summation order), over edges, several work items and several `kc` blocks.
    fn check<K: MicroKernel>(m: usize, n: usize, k: usize, operand: fn(f32) -> f32) {
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.61).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.29).cos()).collect();
        let view = |data: &[f32], rows: usize, cols: usize| MatRef {
            ptr: ElemPtr::F32(data.as_ptr()),
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        };
        let pool = Pool::new(2);
        // SAFETY: both views cover their vectors; the caller checked the tier.
        let mut tile_loop = unsafe { TileLoop::<K>::new(&pool, view(&a, m, k), view(&b, k, n)) };
        assert_eq!(tile_loop.time(&pool, 2).len(), 2);
        let plan = tile_loop.plan;
        let (mr, nr) = (K::MR, K::NR);
        for (item, scratch) in tile_loop.c.iter().enumerate() {
            let c = scratch.as_ptr::<f32>();
            let m0 = item / plan.n_blocks * plan.mc;
            let n0 = item % plan.n_blocks * plan.nc;
            let m_len = plan.mc.min(m - m0);
            let n_len = plan.nc.min(n - n0);
            let m_tiles = m_len.div_ceil(mr);
            for row in 0..m_len {
                for col in 0..n_len {
                    let terms = (0..k).map(|i| {
                        f64::from(operand(a[(m0 + row) * k + i]))
                            * f64::from(operand(b[i * n + n0 + col]))
                    });
                    let magnitude: f64 = terms.clone().map(f64::abs).sum();
                    let expected: f64 = terms.sum();
                    let (tile_m, tile_n) = (row / mr, col / nr);
                    let at = (tile_n * m_tiles + tile_m) * mr * nr + row % mr * nr + col % nr;
                    // SAFETY: `at` is inside the item's scratch (m_tiles · n_tiles tiles).
                    let got = unsafe { *c.add(at) };
                    assert!(
                        (f64::from(got) - expected).abs() <= 1e-5 * (1.0 + magnitude),
                        "{} {m}x{n}x{k} item {item} ({row}, {col}): {got} vs {expected}",
                        K::NAME
                    );
                }
            }
        }
    }

    #[test]
    fn the_loop_computes_every_tile() {
        for (m, n, k) in [(1, 1, 1), (37, 70, 33), (300, 130, 1100)] {
            check::<Generic>(m, n, k, |value| value);
        }
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::isa_available(crate::cpu::Isa::Amx) {
            use crate::gemm::kernels::amx::{AmxBf16, AmxBf16Wide};
            let bf16 =
                |value: f32| f32::from_bits(u32::from(crate::convert::bf16_bits(value)) << 16);
            for (m, n, k) in [(1, 1, 1), (37, 70, 33), (300, 130, 1100), (64, 96, 2100)] {
                check::<AmxBf16>(m, n, k, bf16);
                check::<AmxBf16Wide>(m, n, k, bf16);
            }
        } else {
            eprintln!("tile loop: skipping Amx (not available on this host)");
        }
    }
}
