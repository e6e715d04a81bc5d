//! Wiring: one op, its normalised [`OpAttrs`] and its operand values to the numeric functions of
//! the sibling modules, with every result checked against the verified result types.

use super::elementwise::{self, BinaryFn, CompareFn, GeluMode, UnaryFn};
use super::layout::{self, SliceByIndex};
use super::linalg::{self, AttentionMask, ConvPadding, ConvParams};
use super::quant::{self, AffineParams};
use super::reduce::{self, ReduceFn};
use super::{RefError, RefOptions, RefTensor, Shaped};
use mil::ir::{Function, Handle, Op, OpKind, Tensor, TensorType, Value};
use mil::ops::{OpAttrs, Operand, QuantParams};
use milbridge_mil as mil;
use std::sync::Arc;

/// Operand access for one op.
struct Operands<'a> {
    op: &'a Op,
    lookup: &'a dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
}

impl Operands<'_> {
    fn value(&self, value: Handle<Value>, name: &str) -> Result<RefTensor, RefError> {
        let tensor = (self.lookup)(value).ok_or_else(|| {
            RefError::malformed(self.op.kind, format!("operand '{name}' has no value"))
        })?;
        RefTensor::from_tensor(&tensor).ok_or_else(|| {
            RefError::malformed(
                self.op.kind,
                format!("operand '{name}' is not a numeric tensor ({})", tensor.ty),
            )
        })
    }

    /// The single value bound to parameter `name`, if given.
    fn optional(&self, name: &str) -> Result<Option<RefTensor>, RefError> {
        self.op
            .single(name)
            .map(|used| self.value(used.value, name))
            .transpose()
    }

    /// The single value bound to required parameter `name`.
    fn required(&self, name: &str) -> Result<RefTensor, RefError> {
        self.optional(name)?
            .ok_or_else(|| RefError::malformed(self.op.kind, format!("missing operand '{name}'")))
    }

    /// The values of tuple parameter `name`.
    fn tuple(&self, name: &str) -> Result<Vec<RefTensor>, RefError> {
        let arg = self.op.arg(name).ok_or_else(|| {
            RefError::malformed(self.op.kind, format!("missing operand '{name}'"))
        })?;
        arg.value
            .uses()
            .iter()
            .map(|used| self.value(used.value, name))
            .collect()
    }

    /// The integer elements of parameter `name`, if given.
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, RefError> {
        Ok(self
            .optional(name)?
            .map(|tensor| tensor.data.iter().map(|&value| value as i64).collect()))
    }

    /// The bool elements of parameter `name`, if given.
    fn bools(&self, name: &str) -> Result<Option<Vec<bool>>, RefError> {
        Ok(self
            .optional(name)?
            .map(|tensor| tensor.data.iter().map(|&value| value != 0.0).collect()))
    }
}

fn affine(params: &QuantParams) -> AffineParams<'_> {
    AffineParams {
        scale: &params.scale,
        zero_point: Some(&params.zero_point),
        axis: params.axis,
    }
}

/// Runs op `handle` of `func`; returns one tensor per result, checked against `result_types`.
pub(super) fn run(
    func: &Function,
    handle: Handle<Op>,
    attrs: &OpAttrs,
    result_types: &[TensorType],
    lookup: &dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
    options: &RefOptions,
) -> Result<Vec<RefTensor>, RefError> {
    let op = func.ops.try_get(handle).ok_or_else(|| {
        RefError::malformed(
            OpKind::Const,
            format!("op {handle:?} is not in the function"),
        )
    })?;
    let kind = op.kind;
    let operands = Operands { op, lookup };
    let single_type = || {
        result_types
            .first()
            .cloned()
            .ok_or_else(|| RefError::malformed(kind, "no result type"))
    };
    let out_ty = single_type()?;
    let one = |data: Vec<f64>, shape: Vec<usize>| vec![(data, shape)];
    let outputs: Vec<Shaped> = match attrs {
        OpAttrs::Const => {
            let value = operands.required("val")?;
            one(value.data, value.ty.shape)
        }
        OpAttrs::ConstexprAffineDequantize { params } => {
            let data = operands.required("quantized_data")?;
            let out =
                quant::dequantize(kind, &data.data, data.shape(), affine(params), out_ty.dtype)?;
            one(out, data.ty.shape)
        }
        OpAttrs::Binary => {
            let f = match kind {
                OpKind::Add => BinaryFn::Add,
                OpKind::Sub => BinaryFn::Sub,
                OpKind::Mul => BinaryFn::Mul,
                OpKind::RealDiv => BinaryFn::RealDiv,
                OpKind::Pow => BinaryFn::Pow,
                OpKind::Maximum => BinaryFn::Maximum,
                OpKind::Minimum => BinaryFn::Minimum,
                _ => {
                    return Err(RefError::malformed(
                        kind,
                        "binary attributes on a non-binary op",
                    ));
                }
            };
            let (x, y) = (operands.required("x")?, operands.required("y")?);
            let (out, shape) =
                elementwise::binary(f, x.dtype(), &x.data, x.shape(), &y.data, y.shape())?;
            one(out, shape)
        }
        OpAttrs::Compare => {
            let f = match kind {
                OpKind::Equal => CompareFn::Equal,
                OpKind::NotEqual => CompareFn::NotEqual,
                OpKind::Greater => CompareFn::Greater,
                OpKind::GreaterEqual => CompareFn::GreaterEqual,
                OpKind::Less => CompareFn::Less,
                OpKind::LessEqual => CompareFn::LessEqual,
                _ => {
                    return Err(RefError::malformed(
                        kind,
                        "comparison attributes on another op",
                    ));
                }
            };
            let (x, y) = (operands.required("x")?, operands.required("y")?);
            let (out, shape) = elementwise::compare(f, &x.data, x.shape(), &y.data, y.shape())?;
            one(out, shape)
        }
        OpAttrs::Unary | OpAttrs::Epsilon { .. } | OpAttrs::Gelu { .. } => {
            let f = match (kind, attrs) {
                (OpKind::Abs, _) => UnaryFn::Abs,
                (OpKind::Square, _) => UnaryFn::Square,
                (OpKind::Sqrt, _) => UnaryFn::Sqrt,
                (OpKind::Exp, _) => UnaryFn::Exp,
                (OpKind::Erf, _) => UnaryFn::Erf,
                (OpKind::Tanh, _) => UnaryFn::Tanh,
                (OpKind::Sigmoid, _) => UnaryFn::Sigmoid,
                (OpKind::Relu, _) => UnaryFn::Relu,
                (OpKind::Silu, _) => UnaryFn::Silu,
                (OpKind::Rsqrt, OpAttrs::Epsilon { eps }) => UnaryFn::Rsqrt { epsilon: *eps },
                (OpKind::Log, OpAttrs::Epsilon { eps }) => UnaryFn::Log { epsilon: *eps },
                (OpKind::Inverse, OpAttrs::Epsilon { eps }) => UnaryFn::Inverse { epsilon: *eps },
                (OpKind::Gelu, OpAttrs::Gelu { mode }) => UnaryFn::Gelu(match mode {
                    mil::ops::GeluMode::Exact => GeluMode::Exact,
                    mil::ops::GeluMode::TanhApproximation => GeluMode::TanhApproximation,
                    mil::ops::GeluMode::SigmoidApproximation => GeluMode::SigmoidApproximation,
                }),
                _ => return Err(RefError::malformed(kind, "unary attributes on another op")),
            };
            let x = operands.required("x")?;
            one(elementwise::unary(f, x.dtype(), &x.data)?, x.ty.shape)
        }
        OpAttrs::Clip { alpha, beta } => {
            let x = operands.required("x")?;
            one(
                elementwise::clip(x.dtype(), &x.data, *alpha, *beta)?,
                x.ty.shape,
            )
        }
        OpAttrs::Cast { dtype } => {
            let x = operands.required("x")?;
            one(elementwise::cast(x.dtype(), *dtype, &x.data)?, x.ty.shape)
        }
        OpAttrs::Softmax { axis } => {
            let x = operands.required("x")?;
            one(
                reduce::softmax(x.dtype(), &x.data, x.shape(), *axis)?,
                x.ty.shape,
            )
        }
        OpAttrs::Reduce { axes, keep_dims } => {
            let f = match kind {
                OpKind::ReduceSum => ReduceFn::Sum,
                OpKind::ReduceMean => ReduceFn::Mean,
                OpKind::ReduceMax => ReduceFn::Max,
                _ => {
                    return Err(RefError::malformed(
                        kind,
                        "reduction attributes on another op",
                    ));
                }
            };
            let x = operands.required("x")?;
            let (out, shape) = reduce::reduce(f, x.dtype(), &x.data, x.shape(), axes, *keep_dims)?;
            one(out, shape)
        }
        OpAttrs::Matmul {
            transpose_x,
            transpose_y,
        } => {
            let (x, y) = (operands.required("x")?, operands.required("y")?);
            let (out, shape) = linalg::matmul(
                out_ty.dtype,
                &x.data,
                x.shape(),
                &y.data,
                y.shape(),
                *transpose_x,
                *transpose_y,
            )?;
            one(out, shape)
        }
        OpAttrs::Linear { has_bias } => {
            let (x, weight) = (operands.required("x")?, operands.required("weight")?);
            let bias = if *has_bias {
                operands.optional("bias")?
            } else {
                None
            };
            let (out, shape) = linalg::linear(
                out_ty.dtype,
                &x.data,
                x.shape(),
                &weight.data,
                weight.shape(),
                bias.as_ref().map(|bias| &bias.data[..]),
            )?;
            one(out, shape)
        }
        OpAttrs::Conv {
            strides,
            pads_before,
            pads_after,
            dilations,
            groups,
            has_bias,
        } => {
            let (x, weight) = (operands.required("x")?, operands.required("weight")?);
            let bias = if *has_bias {
                operands.optional("bias")?
            } else {
                None
            };
            let params = ConvParams {
                strides: strides.clone(),
                dilations: dilations.clone(),
                padding: ConvPadding::Custom(
                    pads_before
                        .iter()
                        .copied()
                        .zip(pads_after.iter().copied())
                        .collect(),
                ),
                groups: *groups,
            };
            let (out, shape) = linalg::conv(
                out_ty.dtype,
                &x.data,
                x.shape(),
                &weight.data,
                weight.shape(),
                bias.as_ref().map(|bias| &bias.data[..]),
                &params,
            )?;
            one(out, shape)
        }
        OpAttrs::LayerNorm {
            axes,
            eps,
            has_gamma,
            has_beta,
        } => {
            let x = operands.required("x")?;
            let gamma = if *has_gamma {
                operands.optional("gamma")?
            } else {
                None
            };
            let beta = if *has_beta {
                operands.optional("beta")?
            } else {
                None
            };
            let out = reduce::layer_norm(
                x.dtype(),
                &x.data,
                x.shape(),
                axes,
                gamma.as_ref().map(|gamma| &gamma.data[..]),
                beta.as_ref().map(|beta| &beta.data[..]),
                *eps,
            )?;
            one(out, x.ty.shape)
        }
        OpAttrs::Sdpa { has_mask } => {
            let query = operands.required("query")?;
            let key = operands.required("key")?;
            let value = operands.required("value")?;
            let mask = if *has_mask && !options.ignore_sdpa_mask {
                operands.optional("attn_mask")?
            } else {
                None
            };
            let mask = mask.as_ref().map(|mask| AttentionMask {
                data: &mask.data,
                shape: mask.shape(),
                boolean: mask.dtype() == mil::ir::DType::Bool,
            });
            let (out, shape) = linalg::scaled_dot_product_attention(
                out_ty.dtype,
                (&query.data, query.shape()),
                (&key.data, key.shape()),
                (&value.data, value.shape()),
                mask,
            )?;
            one(out, shape)
        }
        OpAttrs::Reshape { shape } => {
            let x = operands.required("x")?;
            if x.data.len() != super::index::numel(shape) {
                return Err(RefError::runtime(
                    mil::diag::DiagCode::R003,
                    format!("reshape of {} elements to {shape:?}", x.data.len()),
                ));
            }
            one(x.data, shape.clone())
        }
        OpAttrs::Transpose { perm } => {
            let x = operands.required("x")?;
            let (out, shape) = layout::transpose(&x.data, x.shape(), perm)?;
            one(out, shape)
        }
        OpAttrs::ExpandDims { axes } => {
            let x = operands.required("x")?;
            let shape = layout::expand_dims_shape(x.shape(), axes)
                .map_err(|message| RefError::malformed(kind, message))?;
            one(x.data, shape)
        }
        OpAttrs::Squeeze { axes } => {
            let x = operands.required("x")?;
            let shape = layout::squeeze_shape(x.shape(), Some(axes));
            one(x.data, shape)
        }
        OpAttrs::SliceBySize { begin, size } => {
            let x = operands.required("x")?;
            let begin: Vec<i64> = match begin {
                Operand::Const(starts) => starts.iter().map(|&start| start as i64).collect(),
                Operand::Dynamic(value) => operands
                    .value(*value, "begin")?
                    .data
                    .iter()
                    .map(|&v| v as i64)
                    .collect(),
            };
            let size: Vec<i64> = size.iter().map(|&extent| extent as i64).collect();
            let (out, shape) = layout::slice_by_size(&x.data, x.shape(), &begin, &size)?;
            one(out, shape)
        }
        OpAttrs::SliceByIndex { .. } => {
            // Re-read the raw parameters: this module's own Python slice semantics decide.
            let x = operands.required("x")?;
            let rank = x.ty.rank();
            let params = SliceByIndex {
                begin: operands.ints("begin")?.unwrap_or_else(|| vec![0; rank]),
                end: operands.ints("end")?.unwrap_or_else(|| vec![0; rank]),
                stride: operands.ints("stride")?.unwrap_or_default(),
                begin_mask: operands.bools("begin_mask")?.unwrap_or_default(),
                end_mask: operands.bools("end_mask")?.unwrap_or_default(),
                squeeze_mask: operands.bools("squeeze_mask")?.unwrap_or_default(),
            };
            let (out, shape) = layout::slice_by_index(&x.data, x.shape(), &params)?;
            one(out, shape)
        }
        OpAttrs::Concat { axis, interleave } => {
            let values = operands.tuple("values")?;
            let views: Vec<(&[f64], &[usize])> = values
                .iter()
                .map(|value| (&value.data[..], value.shape()))
                .collect();
            let (out, shape) = layout::concat(&views, *axis, *interleave)?;
            one(out, shape)
        }
        OpAttrs::Split { axis, sizes } => {
            let x = operands.required("x")?;
            layout::split(&x.data, x.shape(), *axis, sizes)?
        }
        OpAttrs::Tile { reps } => {
            let x = operands.required("x")?;
            let (out, shape) = layout::tile(&x.data, x.shape(), reps)?;
            one(out, shape)
        }
        OpAttrs::Fill { shape, value } => {
            let value = if out_ty.dtype.is_int() {
                super::numeric::saturate_int(out_ty.dtype, *value)
            } else {
                super::numeric::round_float(out_ty.dtype, *value)
            };
            one(layout::fill(shape, value), shape.clone())
        }
        OpAttrs::BandPart { lower, upper } => {
            let x = operands.required("x")?;
            one(
                layout::band_part(&x.data, x.shape(), *lower, *upper)?,
                x.ty.shape,
            )
        }
        OpAttrs::Select => {
            let cond = operands.required("cond")?;
            let (a, b) = (operands.required("a")?, operands.required("b")?);
            let (out, shape) = layout::select(
                (&cond.data, cond.shape()),
                (&a.data, a.shape()),
                (&b.data, b.shape()),
            )?;
            one(out, shape)
        }
        OpAttrs::Gather {
            axis,
            batch_dims,
            allow_negative,
            ..
        } => {
            let (x, indices) = (operands.required("x")?, operands.required("indices")?);
            let (out, shape) = layout::gather(
                (&x.data, x.shape()),
                (&indices.data, indices.shape()),
                *axis,
                *batch_dims,
                *allow_negative,
            )?;
            one(out, shape)
        }
        OpAttrs::Quantize {
            params,
            output_dtype,
        } => {
            let input = operands.required("input")?;
            let out = quant::quantize(&input.data, input.shape(), affine(params), *output_dtype)?;
            one(out, input.ty.shape)
        }
        OpAttrs::Dequantize { params } => {
            let input = operands.required("input")?;
            let out = quant::dequantize(
                kind,
                &input.data,
                input.shape(),
                affine(params),
                out_ty.dtype,
            )?;
            one(out, input.ty.shape)
        }
    };
    if outputs.len() != result_types.len() {
        return Err(RefError::malformed(
            kind,
            format!(
                "computed {} results, {} declared",
                outputs.len(),
                result_types.len()
            ),
        ));
    }
    outputs
        .into_iter()
        .zip(result_types)
        .map(|((data, shape), ty)| {
            if shape != ty.shape || data.len() != ty.numel() {
                return Err(RefError::malformed(
                    kind,
                    format!("computed shape {shape:?} differs from the verified type {ty}"),
                ));
            }
            Ok(RefTensor::new(ty.clone(), data))
        })
        .collect()
}
