//! The kernel table: a plain struct of [`Kernel`]s, one slot per op family and dtype.
//!
//! [`KernelTable::generic`] fills every slot with a portable kernel; [`KernelTable::for_isa`]
//! starts from it and plugs better kernels for a tier (linalg's GEMM tiers for fp16/fp32
//! matmul). Tables are built once per (tier, precision) and cached; steps resolve their slot
//! through [`KernelId`] at compile (or load) time, never by name at run time.

use std::sync::OnceLock;

use half::f16;
use milbridge_linalg::cpu::{self, Isa};
use milbridge_linalg::gemm::{self as lgemm, GemmSpec};

use crate::Precision;
use crate::elem::Ty;
use crate::error::KernelError;
use crate::exec::raw::{self, DstTiles, GemmDst, GemmSrc, Mat3};
use crate::kernels::generic::{elementwise as ew, linalg as la, movement as mv, reduce as rd};
use crate::kernels::{Kernel, KernelCtx, fused, pattern};
use crate::layout::MAX_RANK;
use crate::plan::pack::PackedOperand;
use crate::plan::step::{BinaryOp, N_BINARY, N_REDUCE, N_UNARY, ReduceOp, StepOp};

/// Float element types with their own slots: fp16 and fp32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatTy {
    /// fp16.
    F16,
    /// fp32.
    F32,
}

/// Arithmetic element types: fp16, fp32 and int32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithTy {
    /// fp16.
    F16,
    /// fp32.
    F32,
    /// int32.
    I32,
}

impl ArithTy {
    /// The arithmetic type of `ty`, if it has one.
    pub fn of(ty: Ty) -> Option<ArithTy> {
        match ty {
            Ty::F16 => Some(ArithTy::F16),
            Ty::F32 => Some(ArithTy::F32),
            Ty::I32 => Some(ArithTy::I32),
            _ => None,
        }
    }
}

impl FloatTy {
    /// The float type of `ty`, if it is one.
    pub fn of(ty: Ty) -> Option<FloatTy> {
        match ty {
            Ty::F16 => Some(FloatTy::F16),
            Ty::F32 => Some(FloatTy::F32),
            _ => None,
        }
    }
}

/// Element sizes for data movement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    /// 1 byte.
    B1,
    /// 2 bytes.
    B2,
    /// 4 bytes.
    B4,
}

impl Size {
    /// The size class of `ty`.
    pub fn of(ty: Ty) -> Size {
        match ty.size() {
            1 => Size::B1,
            2 => Size::B2,
            _ => Size::B4,
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Identifies a kernel-table slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelId {
    /// Copy by element size.
    Copy(Size),
    /// Float unary op (slot of [`crate::plan::step::UnaryOp::slot`]).
    UnaryFloat(usize, FloatTy),
    /// Int32 unary op (abs, square, identity).
    UnaryI32(usize),
    /// Binary arithmetic.
    Binary(BinaryOp, ArithTy),
    /// Comparison.
    Compare(ArithTy),
    /// Cast from a type (the destination type is read at run time).
    Cast(Ty),
    /// Softmax.
    Softmax(FloatTy),
    /// Softmax over a middle axis.
    SoftmaxColumns(FloatTy),
    /// Reduction.
    Reduce(ReduceOp, ArithTy),
    /// Matmul.
    Matmul(ArithTy),
    /// Convolution.
    Conv(FloatTy),
    /// Layer norm.
    LayerNorm(FloatTy),
    /// Attention.
    Sdpa(FloatTy),
    /// Select by element size.
    Select(Size),
    /// Gather by element size.
    Gather(Size),
    /// Band part by element size.
    BandPart(Size),
    /// Tile by element size.
    Tile(Size),
    /// Fill.
    Fill,
    /// Run-time slice by element size.
    DynSlice(Size),
    /// Quantize.
    Quantize,
    /// Dequantize.
    Dequantize,
    /// A fused elementwise program, by destination type.
    Fused(FloatTy),
    /// The RMSNorm pattern step.
    RmsNorm(FloatTy),
    /// The scaled, masked softmax pattern step.
    SoftmaxScaled(FloatTy),
}

/// Per-op, per-dtype kernels. Every field is filled by [`KernelTable::generic`].
#[derive(Clone, Debug)]
pub struct KernelTable {
    /// Tier the table was built for.
    pub isa: Isa,
    /// Precision profile the table was built for.
    pub precision: Precision,
    /// Copy by element size (1, 2, 4 bytes).
    pub copy: [Kernel; 3],
    /// fp16 unary ops, by [`crate::plan::step::UnaryOp::slot`].
    pub unary_f16: [Kernel; N_UNARY],
    /// fp32 unary ops.
    pub unary_f32: [Kernel; N_UNARY],
    /// int32 unary ops: abs, square, identity.
    pub unary_i32: [Kernel; 3],
    /// fp16 binary ops, by [`BinaryOp`] order.
    pub binary_f16: [Kernel; N_BINARY],
    /// fp32 binary ops.
    pub binary_f32: [Kernel; N_BINARY],
    /// int32 binary ops.
    pub binary_i32: [Kernel; N_BINARY],
    /// Comparisons by input type (f16, f32, i32).
    pub compare: [Kernel; 3],
    /// Casts by source type ([`Ty::code`] order).
    pub cast: [Kernel; 8],
    /// Softmax (f16, f32).
    pub softmax: [Kernel; 2],
    /// Softmax over a middle axis, by columns (f16, f32).
    pub softmax_columns: [Kernel; 2],
    /// fp16 reductions (sum, mean, max).
    pub reduce_f16: [Kernel; N_REDUCE],
    /// fp32 reductions.
    pub reduce_f32: [Kernel; N_REDUCE],
    /// int32 reductions.
    pub reduce_i32: [Kernel; N_REDUCE],
    /// Matmul (f16, f32, i32).
    pub matmul: [Kernel; 3],
    /// Convolution (f16, f32).
    pub conv: [Kernel; 2],
    /// Layer norm (f16, f32).
    pub layer_norm: [Kernel; 2],
    /// Attention (f16, f32).
    pub sdpa: [Kernel; 2],
    /// Select by element size.
    pub select: [Kernel; 3],
    /// Gather by element size.
    pub gather: [Kernel; 3],
    /// Band part by element size.
    pub band_part: [Kernel; 3],
    /// Tile by element size.
    pub tile: [Kernel; 3],
    /// Fill (any type).
    pub fill: Kernel,
    /// Run-time slice by element size.
    pub dyn_slice: [Kernel; 3],
    /// Quantize (to int8/uint8).
    pub quantize: Kernel,
    /// Dequantize (to fp16/fp32).
    pub dequantize: Kernel,
    /// Fused elementwise programs (f16, f32 destination).
    pub fused: [Kernel; 2],
    /// RMSNorm pattern steps (f16, f32).
    pub rmsnorm: [Kernel; 2],
    /// Scaled, masked softmax pattern steps (f16, f32).
    pub softmax_scaled: [Kernel; 2],
}

macro_rules! k {
    ($name:expr, $f:expr) => {
        Kernel {
            name: $name,
            run: $f,
        }
    };
}

macro_rules! unary_row {
    ($t:literal, $f:path) => {
        [
            k!(concat!("generic_abs_", $t, "_rows"), $f),
            k!(concat!("generic_square_", $t, "_rows"), $f),
            k!(concat!("generic_sqrt_", $t, "_rows"), $f),
            k!(concat!("generic_exp_", $t, "_rows"), $f),
            k!(concat!("generic_erf_", $t, "_rows"), $f),
            k!(concat!("generic_tanh_", $t, "_rows"), $f),
            k!(concat!("generic_sigmoid_", $t, "_rows"), $f),
            k!(concat!("generic_relu_", $t, "_rows"), $f),
            k!(concat!("generic_silu_", $t, "_rows"), $f),
            k!(concat!("generic_rsqrt_", $t, "_rows"), $f),
            k!(concat!("generic_log_", $t, "_rows"), $f),
            k!(concat!("generic_inverse_", $t, "_rows"), $f),
            k!(concat!("generic_gelu_", $t, "_rows"), $f),
            k!(concat!("generic_gelutanh_", $t, "_rows"), $f),
            k!(concat!("generic_gelusigmoid_", $t, "_rows"), $f),
            k!(concat!("generic_clip_", $t, "_rows"), $f),
            k!(concat!("generic_identity_", $t, "_rows"), $f),
        ]
    };
}

macro_rules! by_size {
    ($op:literal, $f:ident) => {
        [
            k!(concat!("generic_", $op, "_x8_rows"), $f::<u8>),
            k!(concat!("generic_", $op, "_x16_rows"), $f::<u16>),
            k!(concat!("generic_", $op, "_x32_rows"), $f::<i32>),
        ]
    };
}

impl KernelTable {
    /// The portable table: every slot filled with a kernel from [`crate::kernels::generic`].
    pub fn generic() -> KernelTable {
        use ew::copy;
        use ew::select;
        use mv::{band_part, dyn_slice, gather, tile};
        KernelTable {
            isa: Isa::Generic,
            precision: Precision::Exact,
            copy: by_size!("copy", copy),
            unary_f16: unary_row!("f16", ew::unary_f16),
            unary_f32: unary_row!("f32", ew::unary_f32_kernel),
            unary_i32: [
                k!("generic_abs_i32_rows", ew::unary_i32),
                k!("generic_square_i32_rows", ew::unary_i32),
                k!("generic_identity_i32_rows", ew::unary_i32),
            ],
            binary_f16: [
                k!("generic_add_f16_rows", ew::add_f16),
                k!("generic_sub_f16_rows", ew::sub_f16),
                k!("generic_mul_f16_rows", ew::mul_f16),
                k!("generic_realdiv_f16_rows", ew::div_f16),
                k!("generic_pow_f16_rows", ew::pow_f16),
                k!("generic_maximum_f16_rows", ew::max_f16),
                k!("generic_minimum_f16_rows", ew::min_f16),
            ],
            binary_f32: [
                k!("generic_add_f32_rows", ew::add_f32),
                k!("generic_sub_f32_rows", ew::sub_f32),
                k!("generic_mul_f32_rows", ew::mul_f32),
                k!("generic_realdiv_f32_rows", ew::div_f32),
                k!("generic_pow_f32_rows", ew::pow_f32),
                k!("generic_maximum_f32_rows", ew::max_f32),
                k!("generic_minimum_f32_rows", ew::min_f32),
            ],
            binary_i32: [
                k!("generic_add_i32_rows", ew::binary_i32),
                k!("generic_sub_i32_rows", ew::binary_i32),
                k!("generic_mul_i32_rows", ew::binary_i32),
                k!("generic_realdiv_i32_rows", ew::binary_i32),
                k!("generic_pow_i32_rows", ew::binary_i32),
                k!("generic_maximum_i32_rows", ew::binary_i32),
                k!("generic_minimum_i32_rows", ew::binary_i32),
            ],
            compare: [
                k!("generic_compare_f16_rows", ew::compare_f16),
                k!("generic_compare_f32_rows", ew::compare_f32),
                k!("generic_compare_i32_rows", ew::compare_i32),
            ],
            cast: [
                k!("generic_cast_f16_rows", ew::cast_f16),
                k!("generic_cast_f32_rows", ew::cast_f32),
                k!("generic_cast_i8_rows", ew::cast_i8),
                k!("generic_cast_u8_rows", ew::cast_u8),
                k!("generic_cast_i16_rows", ew::cast_i16),
                k!("generic_cast_u16_rows", ew::cast_u16),
                k!("generic_cast_i32_rows", ew::cast_i32),
                k!("generic_cast_bool_rows", ew::cast_u8),
            ],
            softmax: [
                k!("generic_softmax_f16_row", rd::softmax_f16),
                k!("generic_softmax_f32_row", rd::softmax_f32),
            ],
            softmax_columns: [
                k!("generic_softmax_f16_columns", rd::softmax_columns_f16),
                k!("generic_softmax_f32_columns", rd::softmax_columns_f32),
            ],
            reduce_f16: [
                k!("generic_reducesum_f16_box", rd::reduce_f16),
                k!("generic_reducemean_f16_box", rd::reduce_f16),
                k!("generic_reducemax_f16_box", rd::reduce_f16),
            ],
            reduce_f32: [
                k!("generic_reducesum_f32_box", rd::reduce_f32),
                k!("generic_reducemean_f32_box", rd::reduce_f32),
                k!("generic_reducemax_f32_box", rd::reduce_f32),
            ],
            reduce_i32: [
                k!("generic_reducesum_i32_box", rd::reduce_i32),
                k!("generic_reducemean_i32_box", rd::reduce_i32),
                k!("generic_reducemax_i32_box", rd::reduce_i32),
            ],
            matmul: [
                k!("generic_matmul_f16_1xn", la::matmul_f16),
                k!("generic_matmul_f32_1xn", la::matmul_f32),
                k!("generic_matmul_i32_1xn", la::matmul_i32),
            ],
            conv: [
                k!("generic_conv_f16_direct", la::conv_f16),
                k!("generic_conv_f32_direct", la::conv_f32),
            ],
            layer_norm: [
                k!("generic_layernorm_f16_box", rd::layer_norm_f16),
                k!("generic_layernorm_f32_box", rd::layer_norm_f32),
            ],
            sdpa: [
                k!("generic_sdpa_f16_row", la::sdpa_f16),
                k!("generic_sdpa_f32_row", la::sdpa_f32),
            ],
            select: by_size!("select", select),
            gather: by_size!("gather", gather),
            band_part: by_size!("bandpart", band_part),
            tile: by_size!("tile", tile),
            fill: k!("generic_fill_any_rows", ew::fill),
            dyn_slice: by_size!("dynslice", dyn_slice),
            quantize: k!("generic_quantize_any_rows", mv::quantize),
            dequantize: k!("generic_dequantize_any_rows", mv::dequantize),
            fused: [
                k!("generic_fused_f16_rows", fused::fused_f16_portable),
                k!("generic_fused_f32_rows", fused::fused_f32_portable),
            ],
            rmsnorm: [
                k!("generic_rmsnorm_f16_rows", pattern::rmsnorm_f16_portable),
                k!("generic_rmsnorm_f32_rows", pattern::rmsnorm_f32_portable),
            ],
            softmax_scaled: [
                k!(
                    "generic_softmaxscaled_f16_rows",
                    pattern::softmax_scaled_f16_portable
                ),
                k!(
                    "generic_softmaxscaled_f32_rows",
                    pattern::softmax_scaled_f32_portable
                ),
            ],
        }
    }

    /// The table for `isa` and `precision`: the portable table with linalg's GEMM plugged in
    /// for fp16/fp32 matmul (every tier, including linalg's own portable GEMM for
    /// [`Isa::Generic`]). Cached: built once per (tier, precision). Panics if the host lacks
    /// `isa` (callers check [`cpu::isa_available`] first).
    pub fn for_isa(isa: Isa, precision: Precision) -> &'static KernelTable {
        static TABLES: [[OnceLock<KernelTable>; 2]; 4] =
            [const { [const { OnceLock::new() }, const { OnceLock::new() }] }; 4];
        assert!(
            cpu::isa_available(isa),
            "kernel table for {isa}: the host lacks this tier"
        );
        let slot = &TABLES[isa as usize][precision as usize];
        slot.get_or_init(|| {
            let mut table = KernelTable::generic();
            table.isa = isa;
            table.precision = precision;
            plug_gemm(&mut table, isa, precision);
            plug_convert(&mut table, isa);
            crate::kernels::tiered::plug(&mut table, isa);
            plug_fused(&mut table, isa);
            plug_copy(&mut table);
            table
        })
    }

    /// The cached portable table (no plugs).
    pub fn portable() -> &'static KernelTable {
        static TABLE: OnceLock<KernelTable> = OnceLock::new();
        TABLE.get_or_init(KernelTable::generic)
    }

    /// The kernel in slot `id`, or `None` when the slot does not exist (e.g. an int32 `exp`).
    pub fn get(&self, id: KernelId) -> Option<Kernel> {
        let arith = |t: ArithTy| t as usize;
        let float = |t: FloatTy| t as usize;
        Some(match id {
            KernelId::Copy(size) => self.copy[size.idx()],
            KernelId::UnaryFloat(slot, FloatTy::F16) => *self.unary_f16.get(slot)?,
            KernelId::UnaryFloat(slot, FloatTy::F32) => *self.unary_f32.get(slot)?,
            KernelId::UnaryI32(slot) => match slot {
                0 => self.unary_i32[0],
                1 => self.unary_i32[1],
                16 => self.unary_i32[2],
                _ => return None,
            },
            KernelId::Binary(op, ty) => {
                let row = match ty {
                    ArithTy::F16 => &self.binary_f16,
                    ArithTy::F32 => &self.binary_f32,
                    ArithTy::I32 => &self.binary_i32,
                };
                row[op as usize]
            }
            KernelId::Compare(ty) => self.compare[arith(ty)],
            KernelId::Cast(ty) => self.cast[usize::from(ty.code())],
            KernelId::Softmax(ty) => self.softmax[float(ty)],
            KernelId::SoftmaxColumns(ty) => self.softmax_columns[float(ty)],
            KernelId::Reduce(op, ty) => {
                let row = match ty {
                    ArithTy::F16 => &self.reduce_f16,
                    ArithTy::F32 => &self.reduce_f32,
                    ArithTy::I32 => &self.reduce_i32,
                };
                row[op as usize]
            }
            KernelId::Matmul(ty) => self.matmul[arith(ty)],
            KernelId::Conv(ty) => self.conv[float(ty)],
            KernelId::LayerNorm(ty) => self.layer_norm[float(ty)],
            KernelId::Sdpa(ty) => self.sdpa[float(ty)],
            KernelId::Select(size) => self.select[size.idx()],
            KernelId::Gather(size) => self.gather[size.idx()],
            KernelId::BandPart(size) => self.band_part[size.idx()],
            KernelId::Tile(size) => self.tile[size.idx()],
            KernelId::Fill => self.fill,
            KernelId::DynSlice(size) => self.dyn_slice[size.idx()],
            KernelId::Quantize => self.quantize,
            KernelId::Dequantize => self.dequantize,
            KernelId::Fused(ty) => self.fused[float(ty)],
            KernelId::RmsNorm(ty) => self.rmsnorm[float(ty)],
            KernelId::SoftmaxScaled(ty) => self.softmax_scaled[float(ty)],
        })
    }

    /// Every kernel in the table (for listings and tests).
    pub fn all(&self) -> Vec<Kernel> {
        let mut all = Vec::new();
        all.extend(self.copy);
        all.extend(self.unary_f16);
        all.extend(self.unary_f32);
        all.extend(self.unary_i32);
        all.extend(self.binary_f16);
        all.extend(self.binary_f32);
        all.extend(self.binary_i32);
        all.extend(self.compare);
        all.extend(self.cast);
        all.extend(self.softmax);
        all.extend(self.softmax_columns);
        all.extend(self.reduce_f16);
        all.extend(self.reduce_f32);
        all.extend(self.reduce_i32);
        all.extend(self.matmul);
        all.extend(self.conv);
        all.extend(self.layer_norm);
        all.extend(self.sdpa);
        all.extend(self.select);
        all.extend(self.gather);
        all.extend(self.band_part);
        all.extend(self.tile);
        all.push(self.fill);
        all.extend(self.dyn_slice);
        all.push(self.quantize);
        all.push(self.dequantize);
        all.extend(self.fused);
        all.extend(self.rmsnorm);
        all.extend(self.softmax_scaled);
        all
    }
}

/// The kernel slot a step uses, from its op and operand types. `None` for a combination no
/// kernel implements (the planner turns that into an `Unsupported` error).
pub fn kernel_id(op: &StepOp, src_tys: &[Ty], dst_ty: Ty) -> Option<KernelId> {
    let first = src_tys.first().copied().unwrap_or(dst_ty);
    Some(match op {
        StepOp::Copy => KernelId::Copy(Size::of(dst_ty)),
        StepOp::Unary(unary) => match first {
            Ty::I32 => KernelId::UnaryI32(unary.slot()),
            ty => KernelId::UnaryFloat(unary.slot(), FloatTy::of(ty)?),
        },
        StepOp::Binary(binary) => KernelId::Binary(*binary, ArithTy::of(first)?),
        StepOp::Compare(_) => KernelId::Compare(ArithTy::of(first)?),
        StepOp::Cast => KernelId::Cast(first),
        StepOp::Softmax => KernelId::Softmax(FloatTy::of(dst_ty)?),
        StepOp::SoftmaxColumns => KernelId::SoftmaxColumns(FloatTy::of(dst_ty)?),
        StepOp::Reduce { op, .. } => KernelId::Reduce(*op, ArithTy::of(dst_ty)?),
        StepOp::Matmul { .. } => KernelId::Matmul(ArithTy::of(dst_ty)?),
        StepOp::Conv { .. } => KernelId::Conv(FloatTy::of(dst_ty)?),
        StepOp::LayerNorm { .. } => KernelId::LayerNorm(FloatTy::of(dst_ty)?),
        StepOp::Sdpa { .. } => KernelId::Sdpa(FloatTy::of(dst_ty)?),
        StepOp::Select => KernelId::Select(Size::of(dst_ty)),
        StepOp::Gather { .. } => KernelId::Gather(Size::of(dst_ty)),
        StepOp::BandPart { .. } => KernelId::BandPart(Size::of(dst_ty)),
        StepOp::Tile => KernelId::Tile(Size::of(dst_ty)),
        StepOp::Fill { .. } => KernelId::Fill,
        StepOp::DynSlice => KernelId::DynSlice(Size::of(dst_ty)),
        StepOp::Quantize { .. } => KernelId::Quantize,
        StepOp::Dequantize { .. } => KernelId::Dequantize,
        StepOp::Fused(_) => KernelId::Fused(FloatTy::of(dst_ty)?),
        StepOp::RmsNorm { .. } => KernelId::RmsNorm(FloatTy::of(dst_ty)?),
        StepOp::SoftmaxScaled { .. } => KernelId::SoftmaxScaled(FloatTy::of(dst_ty)?),
    })
}

fn plug_gemm(table: &mut KernelTable, isa: Isa, precision: Precision) {
    let linalg_precision = match precision {
        Precision::Exact => lgemm::Precision::Exact,
        Precision::Fast => lgemm::Precision::Fast,
    };
    let name = lgemm::kernel_name(isa, linalg_precision);
    table.matmul[0] = Kernel {
        name,
        run: matmul_gemm,
    };
    table.matmul[1] = Kernel {
        name,
        run: matmul_gemm,
    };
    let [conv_f16_name, conv_f32_name] = crate::kernels::conv::kernel_names(isa);
    table.conv = [
        Kernel {
            name: conv_f16_name,
            run: crate::kernels::conv::conv_f16,
        },
        Kernel {
            name: conv_f32_name,
            run: crate::kernels::conv::conv_f32,
        },
    ];
}

/// Copies: blocked transposes for transposed sources, the row kernel otherwise (portable
/// code, the same in every tier's table; [`KernelTable::portable`] keeps the row kernel).
fn plug_copy(table: &mut KernelTable) {
    use crate::kernels::copy;
    table.copy = [
        k!("blocked_copy_x8", copy::copy_u8),
        k!("blocked_copy_x16", copy::copy_u16),
        k!("blocked_copy_x32", copy::copy_i32),
    ];
}

/// The fused kernel is one body for every tier (its fp16 roundings go through linalg's
/// tiered conversions); the name says which tier's table it sits in.
fn plug_fused(table: &mut KernelTable, isa: Isa) {
    let names = match isa {
        Isa::Generic => ["generic_fused_f16_rows", "generic_fused_f32_rows"],
        Isa::Avx2 => ["avx2_fused_f16_rows", "avx2_fused_f32_rows"],
        Isa::Avx512 => ["avx512_fused_f16_rows", "avx512_fused_f32_rows"],
        Isa::Amx => ["amx_fused_f16_rows", "amx_fused_f32_rows"],
    };
    table.fused = [
        Kernel {
            name: names[0],
            run: fused::fused_f16,
        },
        Kernel {
            name: names[1],
            run: fused::fused_f32,
        },
    ];
    let (rms, softmax) = match isa {
        Isa::Generic => (
            ["generic_rmsnorm_f16_rows", "generic_rmsnorm_f32_rows"],
            [
                "generic_softmaxscaled_f16_rows",
                "generic_softmaxscaled_f32_rows",
            ],
        ),
        Isa::Avx2 => (
            ["avx2_rmsnorm_f16_rows", "avx2_rmsnorm_f32_rows"],
            ["avx2_softmaxscaled_f16_rows", "avx2_softmaxscaled_f32_rows"],
        ),
        Isa::Avx512 => (
            ["avx512_rmsnorm_f16_rows", "avx512_rmsnorm_f32_rows"],
            [
                "avx512_softmaxscaled_f16_rows",
                "avx512_softmaxscaled_f32_rows",
            ],
        ),
        Isa::Amx => (
            ["amx_rmsnorm_f16_rows", "amx_rmsnorm_f32_rows"],
            ["amx_softmaxscaled_f16_rows", "amx_softmaxscaled_f32_rows"],
        ),
    };
    table.rmsnorm = [
        Kernel {
            name: rms[0],
            run: pattern::rmsnorm_f16,
        },
        Kernel {
            name: rms[1],
            run: pattern::rmsnorm_f32,
        },
    ];
    table.softmax_scaled = [
        Kernel {
            name: softmax[0],
            run: pattern::softmax_scaled_f16,
        },
        Kernel {
            name: softmax[1],
            run: pattern::softmax_scaled_f32,
        },
    ];
}

fn plug_convert(table: &mut KernelTable, isa: Isa) {
    let (from_f16, from_f32) = match isa {
        Isa::Generic => ("generic_cast_f16_convert", "generic_cast_f32_convert"),
        Isa::Avx2 => ("avx2_cast_f16_f16c", "avx2_cast_f32_f16c"),
        Isa::Avx512 => ("avx512_cast_f16_vcvtph2ps", "avx512_cast_f32_vcvtps2ph"),
        Isa::Amx => ("amx_cast_f16_vcvtph2ps", "amx_cast_f32_vcvtps2ph"),
    };
    table.cast[usize::from(Ty::F16.code())] = Kernel {
        name: from_f16,
        run: cast_f16_converted,
    };
    table.cast[usize::from(Ty::F32.code())] = Kernel {
        name: from_f32,
        run: cast_f32_converted,
    };
}

/// fp16 → fp32 casts of contiguous rows through linalg's tiered conversion (bit-exact with
/// the portable kernel); other destinations and strided rows use the portable kernel.
fn cast_f16_converted(ctx: &mut KernelCtx<'_>) -> Result<(), KernelError> {
    if ctx.dst_ty != Ty::F32 {
        return ew::cast_f16(ctx);
    }
    let isa = ctx.isa;
    convert_rows::<f16, f32>(ctx, &|src, dst| {
        milbridge_linalg::convert::f16_to_f32_with(isa, src, dst)
    })
}

/// fp32 → fp16 casts (round to nearest even) through linalg's tiered conversion.
fn cast_f32_converted(ctx: &mut KernelCtx<'_>) -> Result<(), KernelError> {
    if ctx.dst_ty != Ty::F16 {
        return ew::cast_f32(ctx);
    }
    let isa = ctx.isa;
    convert_rows::<f32, f16>(ctx, &|src, dst| {
        milbridge_linalg::convert::f32_to_f16_with(isa, src, dst)
    })
}

/// Runs `convert` on contiguous row segments; strided ones go through the elementwise path.
fn convert_rows<S: crate::elem::Elem<C = f32>, D: crate::elem::Elem<C = f32>>(
    ctx: &mut KernelCtx<'_>,
    convert: &(dyn Fn(&[S], &mut [D]) + Sync),
) -> Result<(), KernelError> {
    let x = ctx.src::<S>(0);
    let layout = ctx.dst_layout;
    let rank = layout.rank();
    let n_inner = rank.min(1);
    let pool = ctx.pool;
    let n_tasks = ctx.tasks(layout.numel());
    let stride = x.last_stride();
    let tiles = DstTiles::<D>::new(ctx.dst_slice::<D>(), layout, n_inner, crate::kernels::SEG);
    tiles.run(pool, n_tasks, &mut [], &|cursor, _| {
        let mut idx = [0usize; MAX_RANK];
        let mut values = [0f32; crate::kernels::BLOCK];
        let mut stored = [D::default(); crate::kernels::BLOCK];
        for item in cursor.items() {
            let mut tile = cursor.tile(item, &mut idx);
            let (start, len) = (tile.start(), tile.len());
            let base = x.layout.offset_of(&idx[..rank - n_inner]) + start * stride;
            if (stride == 1 || len == 1)
                && let Some(out) = tile.contiguous()
            {
                convert(&x.data[base..base + len], out);
                continue;
            }
            let mut j = 0;
            while j < len {
                let n = (len - j).min(crate::kernels::BLOCK);
                x.load_run(base + j * stride, stride, &mut values[..n]);
                D::store_slice(&values[..n], &mut stored[..n]);
                tile.write_at(j, &stored[..n]);
                j += n;
            }
        }
        Ok(())
    })
}

/// The batch dims of a rank-r matmul layout flattened into an outer prefix (iterated) and one
/// GEMM batch dim.
fn mat3(layout: &crate::layout::Layout, prefix: &[usize]) -> Mat3 {
    let r = layout.rank();
    let (batch, batch_stride) = if r >= 3 {
        (layout.shape[r - 3], layout.strides[r - 3])
    } else {
        (1, 0)
    };
    Mat3 {
        offset: layout.offset_of(prefix),
        batch,
        rows: layout.shape[r - 2],
        cols: layout.shape[r - 1],
        batch_stride,
        row_stride: layout.strides[r - 2],
        col_stride: layout.strides[r - 1],
    }
}

/// Matmul through linalg's GEMM (fp16/fp32, strided A, B and C; transposes are strides).
fn matmul_gemm(ctx: &mut KernelCtx<'_>) -> Result<(), KernelError> {
    let bias = matches!(ctx.op, StepOp::Matmul { bias: true });
    if bias && ctx.dst_ty == Ty::F16 {
        return la::matmul_f16(ctx);
    }
    if bias {
        // C = bias, then C += A·B.
        let bias_src = ctx.src::<f32>(2);
        ew::for_rows::<f32>(ctx, &|outer, j, out| {
            ew::load_row(&bias_src, outer, j, out);
            Ok(())
        })?;
    }
    let spec = GemmSpec {
        isa: ctx.isa,
        precision: match ctx.precision {
            Precision::Exact => lgemm::Precision::Exact,
            Precision::Fast => lgemm::Precision::Fast,
        },
        accumulate: bias,
    };
    let (a_layout, b_layout, c_layout) = (ctx.srcs[0].layout, ctx.srcs[1].layout, ctx.dst_layout);
    let rank = c_layout.rank();
    let n_prefix = rank.saturating_sub(3);
    let n_outer: usize = c_layout.shape[..n_prefix].iter().product();
    let (a_src, b_src) = match ctx.dst_ty {
        Ty::F16 => (
            GemmSrc::F16(bytemuck::cast_slice::<u8, f16>(ctx.srcs[0].bytes)),
            GemmSrc::F16(bytemuck::cast_slice::<u8, f16>(ctx.srcs[1].bytes)),
        ),
        Ty::F32 => (
            GemmSrc::F32(bytemuck::cast_slice::<u8, f32>(ctx.srcs[0].bytes)),
            GemmSrc::F32(bytemuck::cast_slice::<u8, f32>(ctx.srcs[1].bytes)),
        ),
        other => panic!("gemm matmul for {other:?} (kernel table invariant)"),
    };
    let packed = ctx.packed;
    let mut idx = [0usize; MAX_RANK];
    for _ in 0..n_outer {
        let prefix = &idx[..n_prefix];
        let (a_mat, b_mat, c_mat) = (
            mat3(a_layout, prefix),
            mat3(b_layout, prefix),
            mat3(c_layout, prefix),
        );
        let pool = ctx.pool;
        let c = match ctx.dst_ty {
            Ty::F16 => GemmDst::F16(bytemuck::cast_slice_mut::<u8, f16>(&mut *ctx.dst)),
            _ => GemmDst::F32(bytemuck::cast_slice_mut::<u8, f32>(&mut *ctx.dst)),
        };
        match packed {
            None => raw::gemm(&spec, pool, a_src, a_mat, b_src, b_mat, c, c_mat),
            // B (the prepacked input) is the same matrix for every batch entry (the planner
            // only prepacks such operands).
            Some(PackedOperand::B(panels)) => {
                raw::gemm_packed(&spec, pool, a_src, a_mat, panels, c, c_mat);
            }
            // Likewise for a prepacked A: the panels are what the product would pack itself,
            // so the result is bit-for-bit that of the plain product.
            Some(PackedOperand::A(panels)) => {
                raw::gemm_packed_a(&spec, pool, panels, b_src, b_mat, c, c_mat);
            }
        }
        for d in (0..n_prefix).rev() {
            idx[d] += 1;
            if idx[d] < c_layout.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::step::{CmpOp, UnaryOp};

    #[test]
    fn kernel_names_follow_the_pattern() {
        let table = KernelTable::generic();
        for kernel in table.all() {
            let parts: Vec<&str> = kernel.name.split('_').collect();
            assert!(
                parts.len() >= 4,
                "kernel name {} is not <isa>_<op>_<dtype>_<geometry>",
                kernel.name
            );
            assert_eq!(parts[0], "generic");
        }
        assert_eq!(table.get(KernelId::UnaryI32(3)).map(|k| k.name), None);
        assert_eq!(
            table
                .get(KernelId::Binary(BinaryOp::Add, ArithTy::F16))
                .unwrap()
                .name,
            "generic_add_f16_rows"
        );
        let unary = table
            .get(KernelId::UnaryFloat(UnaryOp::Exp.slot(), FloatTy::F32))
            .unwrap();
        assert_eq!(unary.name, "generic_exp_f32_rows");
        assert_eq!(
            kernel_id(&StepOp::Compare(CmpOp::Less), &[Ty::F16, Ty::F16], Ty::Bool),
            Some(KernelId::Compare(ArithTy::F16))
        );
    }

    #[test]
    fn every_available_tier_plugs_gemm() {
        for isa in Isa::ALL {
            if !cpu::isa_available(isa) {
                eprintln!("skipped tier {isa}: not available on this host");
                continue;
            }
            let table = KernelTable::for_isa(isa, Precision::Exact);
            assert_eq!(table.isa, isa);
            assert!(
                table.matmul[1].name.starts_with(isa.name()) || isa == Isa::Amx,
                "{}",
                table.matmul[1].name
            );
            assert_eq!(table.matmul[2].name, "generic_matmul_i32_1xn");
        }
    }
}
