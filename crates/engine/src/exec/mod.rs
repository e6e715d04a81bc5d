//! Running a plan over caller-provided buffers.
//!
//! [`Plan::eval`] checks buffer counts, lengths and alignment once, then runs each step's
//! kernel with its operands borrowed directly from the caller's input and output buffers, the
//! plan's constants and the workspace arena: no staging copies and no allocation. The arena is
//! split per step with `split_at_mut` into the step's destination and scratch (mutable) and the
//! remaining pieces (shared, where its sources live); the memory planner guarantees a step
//! never reads bytes it writes.

pub mod raw;

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::elem::Ty;
use crate::error::{Error, Result};
use crate::kernels::{KernelCtx, Src};
use crate::plan::step::{BufId, MAX_SRCS, Operand, Step};
use crate::plan::{AlignedBytes, IoDesc, Plan};

/// All scratch and intermediate memory for one evaluation at a time, allocated once
/// ([`Plan::workspace`]). Use one workspace per concurrent evaluation.
#[derive(Debug, Clone)]
pub struct Workspace {
    arena: AlignedBytes,
    /// Wall time spent in each step, summed over evaluations (when profiling is on).
    step_times: Option<Box<[Duration]>>,
}

impl Workspace {
    /// Turns on the per-step profile for evaluations of `plan` through this workspace: each
    /// step's wall time is added to [`Workspace::step_times`] (two clock reads per step; the
    /// evaluation still does not allocate). Resets the profile if it was on.
    pub fn profile_steps(&mut self, plan: &Plan) {
        self.step_times = Some(vec![Duration::ZERO; plan.steps.len()].into_boxed_slice());
    }

    /// Wall time of each step of the plan (in [`Plan::steps`] order) summed over the
    /// evaluations since [`Workspace::profile_steps`]; `None` when profiling is off.
    pub fn step_times(&self) -> Option<&[Duration]> {
        self.step_times.as_deref()
    }

    /// Bytes of the arena.
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether the arena is empty (a plan without intermediates).
    pub fn is_empty(&self) -> bool {
        self.arena.is_empty()
    }
}

/// Mutable destination/scratch pieces of the arena plus the shared rest.
struct ArenaSplit<'a> {
    shared: [(usize, &'a [u8]); 3],
}

impl<'a> ArenaSplit<'a> {
    /// Splits `arena` so that `dst` and `scratch` (disjoint, possibly empty) are mutable.
    fn new(
        arena: &'a mut [u8],
        dst: Option<Range<usize>>,
        scratch: Range<usize>,
    ) -> (Option<&'a mut [u8]>, &'a mut [u8], ArenaSplit<'a>) {
        let mut holes: [(Range<usize>, bool); 2] =
            [(scratch, false), (dst.clone().unwrap_or(0..0), true)];
        if holes[1].0.start < holes[0].0.start {
            holes.swap(0, 1);
        }
        let (first_hole, second_hole) = (holes[0].clone(), holes[1].clone());
        let (piece0, rest) = arena.split_at_mut(first_hole.0.start);
        let (hole0, rest) = rest.split_at_mut(first_hole.0.len());
        let gap_start = first_hole.0.end;
        let (piece1, rest) = rest.split_at_mut(second_hole.0.start.max(gap_start) - gap_start);
        let (hole1, piece2) = rest.split_at_mut(second_hole.0.len());
        let piece2_start = second_hole.0.start.max(gap_start) + second_hole.0.len();
        let split = ArenaSplit {
            shared: [
                (0, &*piece0),
                (gap_start, &*piece1),
                (piece2_start, &*piece2),
            ],
        };
        let (dst_piece, scratch_piece) = if first_hole.1 {
            (hole0, hole1)
        } else {
            (hole1, hole0)
        };
        let dst_piece = if dst.is_some() { Some(dst_piece) } else { None };
        (dst_piece, scratch_piece, split)
    }

    fn get(&self, range: &Range<usize>) -> &'a [u8] {
        for &(base, piece) in &self.shared {
            if range.start >= base && range.end <= base + piece.len() {
                return &piece[range.start - base..range.end - base];
            }
        }
        panic!(
            "arena source {range:?} overlaps the step's destination or scratch (memory planner invariant)"
        )
    }
}

fn check_buffers(
    what: &'static str,
    descs: &[IoDesc],
    lens: impl ExactSizeIterator<Item = (usize, usize)>,
) -> Result<()> {
    if lens.len() != descs.len() {
        return Err(Error::BufferCount {
            what,
            expected: descs.len(),
            got: lens.len(),
        });
    }
    for (desc, (len, addr)) in descs.iter().zip(lens) {
        if len != desc.byte_len {
            return Err(Error::BufferLength {
                what,
                name: desc.name.clone(),
                ty: desc.ty.to_string(),
                expected: desc.byte_len,
                got: len,
            });
        }
        let align = Ty::from_dtype(desc.ty.dtype).map_or(1, Ty::size);
        if addr % align != 0 && len > 0 {
            return Err(Error::BufferAlignment {
                what,
                name: desc.name.clone(),
                align,
                addr_mod: addr % align,
            });
        }
    }
    Ok(())
}

impl Plan {
    /// A workspace for this plan (allocates the arena once).
    pub fn workspace(&self) -> Workspace {
        Workspace {
            arena: AlignedBytes::zeroed(self.arena_bytes),
            step_times: None,
        }
    }

    /// Evaluates the plan: `inputs[k]` holds parameter `k`, `outputs[k]` receives output `k`,
    /// each exactly [`IoDesc::byte_len`] bytes, dense, little-endian, aligned to the element
    /// size. Does not allocate.
    pub fn eval(
        &self,
        ws: &mut Workspace,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
    ) -> Result<()> {
        self.eval_inner(ws, inputs, &[], outputs)
    }

    /// [`Plan::eval`] with prepacked GEMM operands: `packed[k]` (one entry per input, `None`
    /// for inputs not prepacked) holds panels of input `k` built by [`Plan::pack_input`] from
    /// the bytes now in `inputs[k]`. The matmul steps of those panels' sites read them instead
    /// of packing the input; the results are bit-for-bit those of [`Plan::eval`] (when the
    /// panels are current). Does not allocate.
    ///
    /// # Errors
    ///
    /// As [`Plan::eval`]; [`Error::Packed`] when `packed` has the wrong length or an entry
    /// belongs to another plan or input.
    pub fn eval_with_packed(
        &self,
        ws: &mut Workspace,
        inputs: &[&[u8]],
        packed: &[Option<&crate::plan::pack::PackedInput>],
        outputs: &mut [&mut [u8]],
    ) -> Result<()> {
        self.check_packed_all(packed)?;
        self.eval_inner(ws, inputs, packed, outputs)
    }

    fn eval_inner(
        &self,
        ws: &mut Workspace,
        inputs: &[&[u8]],
        packed: &[Option<&crate::plan::pack::PackedInput>],
        outputs: &mut [&mut [u8]],
    ) -> Result<()> {
        check_buffers(
            "input",
            &self.inputs,
            inputs.iter().map(|buf| (buf.len(), buf.as_ptr() as usize)),
        )?;
        check_buffers(
            "output",
            &self.outputs,
            outputs.iter().map(|buf| (buf.len(), buf.as_ptr() as usize)),
        )?;
        if ws.arena.len() < self.arena_bytes {
            return Err(Error::WorkspaceMismatch {
                expected: self.arena_bytes,
                got: ws.arena.len(),
            });
        }
        let arena = ws.arena.as_mut_slice();
        // A workspace profiled for another plan (other step count) is not profiled.
        let mut step_times = ws
            .step_times
            .as_deref_mut()
            .filter(|times| times.len() == self.steps.len());
        for (idx, (step, kernel)) in self.steps.iter().zip(&self.kernels).enumerate() {
            let panels = packed_for_step(packed, step, idx);
            let start = step_times.is_some().then(Instant::now);
            self.run_step(step, kernel.run, inputs, outputs, arena, panels)
                .map_err(|error| Error::Runtime {
                    code: error.code(),
                    kernel: error,
                    value: step.value.clone(),
                })?;
            if let (Some(times), Some(start)) = (step_times.as_deref_mut(), start) {
                times[idx] += start.elapsed();
            }
        }
        Ok(())
    }

    fn run_step(
        &self,
        step: &Step,
        run: crate::kernels::KernelFn,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut [u8],
        packed: Option<crate::plan::pack::PackedOperand<'_>>,
    ) -> Result<(), crate::error::KernelError> {
        let dst_arena = (step.dst.buf == BufId::Arena).then(|| step.dst.range.clone());
        let (arena_dst, scratch, arena_split) =
            ArenaSplit::new(arena, dst_arena, step.scratch.clone());
        let (dst_bytes, out_before, out_after, dst_output) = match step.dst.buf {
            BufId::Output(k) => {
                let k = k as usize;
                let (before, rest) = outputs.split_at_mut(k);
                let (mid, after) = rest
                    .split_first_mut()
                    .expect("output index checked by the planner");
                (&mut mid[step.dst.range.clone()], &*before, &*after, Some(k))
            }
            BufId::Arena => (
                arena_dst.expect("arena destination split above"),
                &*outputs,
                &[][..],
                None,
            ),
            BufId::Input(_) | BufId::Const(_) => {
                panic!("step writes an input or constant (planner invariant)")
            }
        };
        let source = |operand: &Operand| -> &[u8] {
            match operand.buf {
                BufId::Input(k) => &inputs[k as usize][operand.range.clone()],
                BufId::Const(k) => &self.consts[k as usize].as_slice()[operand.range.clone()],
                BufId::Arena => arena_split.get(&operand.range),
                BufId::Output(k) => {
                    let k = k as usize;
                    match dst_output {
                        Some(dst) if k == dst => {
                            panic!("step reads the output it writes (planner invariant)")
                        }
                        Some(dst) if k > dst => &out_after[k - dst - 1][operand.range.clone()],
                        _ => &out_before[k][operand.range.clone()],
                    }
                }
            }
        };
        let mut srcs = [Src::NONE; MAX_SRCS];
        for (slot, operand) in srcs.iter_mut().zip(&step.srcs) {
            *slot = Src {
                bytes: source(operand),
                layout: &operand.layout,
                ty: operand.ty,
            };
        }
        let mut ctx = KernelCtx {
            op: &step.op,
            srcs,
            n_srcs: step.srcs.len(),
            dst: dst_bytes,
            dst_layout: &step.dst.layout,
            dst_ty: step.dst.ty,
            scratch,
            pool: self.pool.get(),
            threads: self.threads,
            isa: self.isa,
            precision: self.precision,
            packed,
        };
        run(&mut ctx)
    }

    /// Serialises the plan (versioned, checksummed; see [`crate::plan::serial`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::plan::serial::write_plan(self)
    }

    /// Deserialises a plan written by [`Plan::to_bytes`]; another format version or a corrupt
    /// stream is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Plan> {
        crate::plan::serial::read_plan(bytes)
    }
}

/// The prepacked panels step `idx` uses: those of its B input if packed for it, else those of
/// its A input.
fn packed_for_step<'p>(
    packed: &[Option<&'p crate::plan::pack::PackedInput>],
    step: &Step,
    idx: usize,
) -> Option<crate::plan::pack::PackedOperand<'p>> {
    if packed.is_empty() || !matches!(step.op, crate::plan::step::StepOp::Matmul { .. }) {
        return None;
    }
    [1, 0]
        .into_iter()
        .find_map(|src| match step.srcs.get(src)?.buf {
            BufId::Input(k) => packed
                .get(k as usize)
                .copied()
                .flatten()
                .and_then(|entry| entry.for_step(idx)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_split_separates_holes() {
        let mut arena: Vec<u8> = (0..=255).collect();
        let (dst, scratch, split) = ArenaSplit::new(&mut arena, Some(128..192), 64..128);
        let dst = dst.unwrap();
        assert_eq!((dst[0], dst.len()), (128, 64));
        assert_eq!((scratch[0], scratch.len()), (64, 64));
        assert_eq!(split.get(&(0..64))[5], 5);
        assert_eq!(split.get(&(192..256))[0], 192);
        let mut arena: Vec<u8> = (0..=255).collect();
        let (dst, scratch, split) = ArenaSplit::new(&mut arena, Some(0..64), 0..0);
        assert_eq!(dst.unwrap().len(), 64);
        assert!(scratch.is_empty());
        assert_eq!(split.get(&(64..128))[0], 64);
    }
}
