//! Prepacked GEMM operands: function inputs (the bridge's weights) packed into linalg's panel
//! layout once, when they are written, instead of on every evaluation.
//!
//! A *pack site* is a matmul step one of whose operands is a function input seen through a
//! folded view (reshape, transpose, slice, ...) that is the same matrix for every batch entry.
//! [`Plan::weight_gemm_uses`] lists an input's sites, [`Plan::pack_input`] builds a
//! [`PackedInput`] (one linalg [`PackedB`] or [`PackedA`] per site, for the plan's tier and
//! precision),
//! [`Plan::repack_input`] / [`Plan::repack_input_f32`] refresh it after the input changes, and
//! [`Plan::eval_with_packed`] runs the plan with it: those matmul steps read the panels and
//! pack nothing.
//!
//! * An input that is a matmul's B is packed as a [`PackedB`]. An input that is a matmul's A
//!   (the bridge's `y = matmul(W, x)` orientation, the trainer's) is packed as a [`PackedA`],
//!   keeping its orientation: the panels are exactly what the GEMM driver would pack from it
//!   on every call, so the product skips all A packing. Either way the blocking and kernel
//!   are those of the plain product, so results are bit-for-bit those of [`Plan::eval`].
//! * The panels are built for the plan's tier and precision (bf16 panels for `fast` on the
//!   Amx tier, f32 panels otherwise), and [`Plan::eval_with_packed`] checks each site's kernel,
//!   shape and step, so panels of another plan are a clean [`Error::Packed`], never a wrong
//!   layout.
//! * Keeping the panels in step with the input's bytes is the caller's job: stale panels give
//!   stale results (no undefined behaviour).
//!
//! A weight sliced out of a spatially packed input (mil-spec 8.5) is an input operand with an
//! offset and strides, so it is packed straight from the strided view, without a copy step.

use half::f16;
use milbridge_linalg::gemm::{self as lgemm, GemmSpec, PackedA, PackedB};

use crate::Precision;
use crate::elem::Ty;
use crate::error::{Error, Result};
use crate::exec::raw::{self, GemmSrc, Mat3};
use crate::plan::Plan;
use crate::plan::step::{BufId, StepOp};

/// Which operand of a matmul step a packed input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackSide {
    /// The right operand (B of `C = A·B`): packed as a [`PackedB`].
    B,
    /// The left operand (A): packed as a [`PackedA`].
    A,
}

/// The panels of one operand of one matmul step, as the step's GEMM kernel takes them.
#[derive(Clone, Copy, Debug)]
pub enum PackedOperand<'a> {
    /// The step's right operand, packed.
    B(&'a PackedB),
    /// The step's left operand, packed.
    A(&'a PackedA),
}

/// One site's panels, owned.
#[derive(Debug)]
enum SitePanels {
    B(PackedB),
    A(PackedA),
}

impl SitePanels {
    fn as_operand(&self) -> PackedOperand<'_> {
        match self {
            SitePanels::B(panels) => PackedOperand::B(panels),
            SitePanels::A(panels) => PackedOperand::A(panels),
        }
    }

    /// (depth, other dimension) of the packed matrix, as [`PackSite::k`] and [`PackSite::n`]
    /// count them, and the kernel the panels are for.
    fn dims(&self) -> (usize, usize, &'static str) {
        match self {
            SitePanels::B(panels) => (panels.k(), panels.n(), panels.kernel_name()),
            SitePanels::A(panels) => (panels.k(), panels.m(), panels.kernel_name()),
        }
    }
}

/// One matmul step that can use prepacked panels of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackSite {
    /// The step's index in [`Plan::steps`].
    pub step: usize,
    /// Which of its operands the input is.
    pub side: PackSide,
    /// Depth of the packed matrix (the product's inner length).
    pub k: usize,
    /// The packed matrix's other dimension: columns of B (and C) for [`PackSide::B`], rows of
    /// A (and C) for [`PackSide::A`].
    pub n: usize,
    /// Whether the packed matrix addresses every element of the input exactly once (then a
    /// converting write can fill the input and the panels in one pass).
    pub covers_input: bool,
    /// The packed matrix in elements of the whole input buffer, in the step's orientation:
    /// `k × n` for [`PackSide::B`], `n × k` for [`PackSide::A`].
    mat: Mat3,
}

/// The packed panels of one function input, for one plan: build with [`Plan::pack_input`],
/// use with [`Plan::eval_with_packed`]. Owns its memory (about the input's size in the
/// panels' element type, bf16 or f32).
#[derive(Debug)]
pub struct PackedInput {
    input: usize,
    spec: GemmSpec,
    sites: Vec<(PackSite, SitePanels)>,
}

impl PackedInput {
    /// The input (function parameter index) the panels are of.
    pub fn input(&self) -> usize {
        self.input
    }

    /// The sites packed, in step order.
    pub fn sites(&self) -> impl Iterator<Item = &PackSite> {
        self.sites.iter().map(|(site, _)| site)
    }

    /// The panels for step `step`, if this input is packed for it.
    pub(crate) fn for_step(&self, step: usize) -> Option<PackedOperand<'_>> {
        self.sites
            .iter()
            .find(|(site, _)| site.step == step)
            .map(|(_, panels)| panels.as_operand())
    }
}

fn linalg_precision(precision: Precision) -> lgemm::Precision {
    match precision {
        Precision::Exact => lgemm::Precision::Exact,
        Precision::Fast => lgemm::Precision::Fast,
    }
}

impl Plan {
    fn gemm_spec(&self) -> GemmSpec {
        GemmSpec {
            isa: self.isa,
            precision: linalg_precision(self.precision),
            accumulate: false,
        }
    }

    /// The site of step `step` for input `input`, if the step is a GEMM matmul one of whose
    /// operands is that input, the same matrix for every batch entry. B is preferred when the
    /// input is both operands.
    fn site_at(&self, step: usize, input: usize) -> Option<PackSite> {
        if self.portable {
            // The portable table's matmul is not linalg's GEMM.
            return None;
        }
        let st = &self.steps[step];
        let StepOp::Matmul { bias } = st.op else {
            return None;
        };
        if !matches!(st.dst.ty, Ty::F16 | Ty::F32) || (bias && st.dst.ty == Ty::F16) {
            // Not the GEMM kernel (an f16 matmul with bias runs the portable kernel).
            return None;
        }
        let input_numel = self.inputs.get(input)?.ty.numel();
        [(1, PackSide::B), (0, PackSide::A)]
            .into_iter()
            .find_map(|(src, side)| {
                let operand = st.srcs.get(src)?;
                if operand.buf != BufId::Input(input as u32) || operand.ty != st.dst.ty {
                    return None;
                }
                let layout = &operand.layout;
                let rank = layout.rank();
                let elem = operand.ty.size();
                if rank < 2 || !operand.range.start.is_multiple_of(elem) {
                    return None;
                }
                let one_matrix = layout.shape[..rank - 2]
                    .iter()
                    .zip(&layout.strides[..rank - 2])
                    .all(|(&n, &s)| n <= 1 || s == 0);
                if !one_matrix {
                    return None;
                }
                let (rows, cols) = (layout.shape[rank - 2], layout.shape[rank - 1]);
                let (rs, cs) = (layout.strides[rank - 2], layout.strides[rank - 1]);
                let operand_mat = Mat3 {
                    offset: operand.range.start / elem + layout.offset,
                    batch: 1,
                    rows,
                    cols,
                    batch_stride: 0,
                    row_stride: rs,
                    col_stride: cs,
                };
                let (k, n) = match side {
                    PackSide::B => (rows, cols),
                    PackSide::A => (cols, rows),
                };
                let injective = operand_mat.is_injective();
                Some(PackSite {
                    step,
                    side,
                    k,
                    n,
                    covers_input: injective && rows * cols == input_numel,
                    mat: operand_mat,
                })
            })
    }

    /// The matmul steps whose GEMM can take input `input` prepacked (directly or through
    /// folded views: transpose, reshape, slice, ...), in step order. Empty for an input that
    /// feeds no GEMM, for an out-of-range index, and for a portable plan.
    pub fn weight_gemm_uses(&self, input: usize) -> Vec<PackSite> {
        if input >= self.inputs.len() {
            return Vec::new();
        }
        (0..self.steps.len())
            .filter_map(|step| self.site_at(step, input))
            .collect()
    }

    fn check_input_bytes(&self, input: usize, len: usize, addr: usize) -> Result<()> {
        let desc = self.inputs.get(input).ok_or_else(|| Error::Packed {
            reason: format!(
                "input {input} does not exist (the plan has {})",
                self.inputs.len()
            ),
        })?;
        if len != desc.byte_len {
            return Err(Error::BufferLength {
                what: "input",
                name: desc.name.clone(),
                ty: desc.ty.to_string(),
                expected: desc.byte_len,
                got: len,
            });
        }
        let align = Ty::from_dtype(desc.ty.dtype).map_or(1, Ty::size);
        if !addr.is_multiple_of(align) && len > 0 {
            return Err(Error::BufferAlignment {
                what: "input",
                name: desc.name.clone(),
                align,
                addr_mod: addr % align,
            });
        }
        Ok(())
    }

    fn input_src<'b>(&self, input: usize, bytes: &'b [u8]) -> Option<GemmSrc<'b>> {
        match Ty::from_dtype(self.inputs[input].ty.dtype)? {
            Ty::F16 => Some(GemmSrc::F16(bytemuck::cast_slice(bytes))),
            Ty::F32 => Some(GemmSrc::F32(bytemuck::cast_slice(bytes))),
            _ => None,
        }
    }

    /// Packs input `input` from its bytes (`bytes`: exactly [`IoDesc::byte_len`](crate::IoDesc)
    /// bytes, aligned to the element size) for every site of [`Plan::weight_gemm_uses`].
    ///
    /// # Errors
    ///
    /// [`Error::Packed`] for an index out of range; [`Error::BufferLength`] /
    /// [`Error::BufferAlignment`] for the bytes.
    pub fn pack_input(&self, input: usize, bytes: &[u8]) -> Result<PackedInput> {
        self.check_input_bytes(input, bytes.len(), bytes.as_ptr() as usize)?;
        let spec = self.gemm_spec();
        let pool = self.pool.get();
        let sites = match self.input_src(input, bytes) {
            Some(src) => self
                .weight_gemm_uses(input)
                .into_iter()
                .map(|site| {
                    let panels = match site.side {
                        PackSide::B => SitePanels::B(raw::pack_b(&spec, pool, src, site.mat)),
                        PackSide::A => SitePanels::A(raw::pack_a(&spec, pool, src, site.mat)),
                    };
                    (site, panels)
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(PackedInput { input, spec, sites })
    }

    fn check_packed(&self, packed: &PackedInput) -> Result<()> {
        if packed.spec != self.gemm_spec() {
            return Err(Error::Packed {
                reason: format!(
                    "panels for {} {:?} given to a {} {:?} plan",
                    packed.spec.isa, packed.spec.precision, self.isa, self.precision
                ),
            });
        }
        for (site, panels) in &packed.sites {
            let expected = kernel_for(self, site.k);
            let valid = site.step < self.steps.len()
                && self.site_at(site.step, packed.input).as_ref() == Some(site)
                && panels.dims() == (site.k, site.n, expected)
                && matches!(
                    (site.side, panels),
                    (PackSide::B, SitePanels::B(_)) | (PackSide::A, SitePanels::A(_))
                );
            if !valid {
                return Err(Error::Packed {
                    reason: format!(
                        "the panels of input {} were packed for another plan (step {})",
                        packed.input, site.step
                    ),
                });
            }
        }
        Ok(())
    }

    /// Repacks `packed` from new bytes of its input (as [`Plan::pack_input`], reusing the
    /// panels' memory: no allocation).
    ///
    /// # Errors
    ///
    /// [`Error::Packed`] when `packed` belongs to another plan; the errors of
    /// [`Plan::pack_input`] for the bytes.
    pub fn repack_input(&self, packed: &mut PackedInput, bytes: &[u8]) -> Result<()> {
        self.check_packed(packed)?;
        let input = packed.input;
        self.check_input_bytes(input, bytes.len(), bytes.as_ptr() as usize)?;
        let pool = self.pool.get();
        if let Some(src) = self.input_src(input, bytes) {
            for (site, panels) in &mut packed.sites {
                repack_site(panels, pool, src, site.mat);
            }
        }
        Ok(())
    }

    /// Stores f32 `values` into `dst` (the input's bytes: fp16 rounded to nearest even, fp32
    /// copied) and repacks `packed` from them. For an fp16 input with a site that covers the
    /// whole input, conversion and packing are one parallel sweep (each thread converts a
    /// block of columns and packs it while it is in cache), so `values` is read once.
    ///
    /// # Errors
    ///
    /// [`Error::Packed`] when `packed` belongs to another plan, or the input is not fp16 or
    /// fp32, or `values` has the wrong count; the errors of [`Plan::pack_input`] for `dst`.
    pub fn repack_input_f32(
        &self,
        packed: &mut PackedInput,
        values: &[f32],
        dst: &mut [u8],
    ) -> Result<()> {
        self.check_packed(packed)?;
        let input = packed.input;
        self.check_input_bytes(input, dst.len(), dst.as_ptr() as usize)?;
        let desc = &self.inputs[input];
        if values.len() != desc.ty.numel() {
            return Err(Error::Packed {
                reason: format!(
                    "input `{}` has {} elements, {} values given",
                    desc.name,
                    desc.ty.numel(),
                    values.len()
                ),
            });
        }
        let pool = self.pool.get();
        match Ty::from_dtype(desc.ty.dtype) {
            Some(Ty::F32) => {
                dst.copy_from_slice(bytemuck::cast_slice(values));
                for (site, panels) in &mut packed.sites {
                    repack_site(panels, pool, GemmSrc::F32(values), site.mat);
                }
            }
            Some(Ty::F16) => {
                let copy: &mut [f16] = bytemuck::cast_slice_mut(dst);
                let fused = packed.sites.iter().position(|(site, _)| site.covers_input);
                match fused {
                    Some(first) => match &mut packed.sites[first] {
                        (site, SitePanels::B(panels)) => {
                            raw::repack_b_converting(panels, pool, values, copy, site.mat);
                        }
                        (site, SitePanels::A(panels)) => {
                            raw::repack_a_converting(panels, pool, values, copy, site.mat);
                        }
                    },
                    None => milbridge_linalg::convert::f32_to_f16(values, copy),
                }
                let copy: &[f16] = copy;
                for (idx, (site, panels)) in packed.sites.iter_mut().enumerate() {
                    if Some(idx) != fused {
                        repack_site(panels, pool, GemmSrc::F16(copy), site.mat);
                    }
                }
            }
            _ => {
                return Err(Error::Packed {
                    reason: format!(
                        "input `{}` is {}, not fp16 or fp32",
                        desc.name,
                        desc.ty.dtype.name()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks `packed` (one entry per input, `None` for inputs packed nowhere) against the
    /// plan, before an evaluation.
    pub(crate) fn check_packed_all(&self, packed: &[Option<&PackedInput>]) -> Result<()> {
        if packed.len() != self.inputs.len() {
            return Err(Error::Packed {
                reason: format!(
                    "{} packed entries for {} inputs",
                    packed.len(),
                    self.inputs.len()
                ),
            });
        }
        for (idx, entry) in packed.iter().enumerate() {
            if let Some(entry) = entry {
                if entry.input != idx {
                    return Err(Error::Packed {
                        reason: format!(
                            "the panels of input {} were given for input {idx}",
                            entry.input
                        ),
                    });
                }
                self.check_packed(entry)?;
            }
        }
        Ok(())
    }
}

/// Repacks one site's panels from `mat` of `src`, each as its side is packed.
fn repack_site(
    panels: &mut SitePanels,
    pool: &milbridge_linalg::pool::Pool,
    src: GemmSrc<'_>,
    mat: Mat3,
) {
    match panels {
        SitePanels::B(panels) => raw::repack_b(panels, pool, src, mat),
        SitePanels::A(panels) => raw::repack_a(panels, pool, src, mat),
    }
}

fn kernel_for(plan: &Plan, k: usize) -> &'static str {
    lgemm::kernel_name_for(plan.isa, linalg_precision(plan.precision), k)
}
