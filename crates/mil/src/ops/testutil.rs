//! Hand-built IR for the op rule unit tests.

use crate::diag::Diagnostic;
use crate::facts::{BlobSource, NoBlobs};
use crate::infer::{BlobFiles, InferredFacts, infer_function};
use crate::ir::{
    Arena, Arg, ArgValue, DType, DeclType, Dim, Function, Handle, Literal, Op, OpKind, Opset,
    Tensor, TensorType, Use, Value, ValueDef,
};
use crate::ops::{CheckOptions, OpAttrs, PartialView};
use crate::span::Span;
use crate::verify::VerifyOptions;
use std::sync::Arc;

/// An fp16 tensor type.
pub fn t16(shape: &[usize]) -> TensorType {
    TensorType::new(DType::Fp16, shape)
}

/// A tensor type.
pub fn tt(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape)
}

/// Builds one function by hand.
pub struct FnBuilder {
    func: Function,
    next_pos: u32,
    pub strict: bool,
}

/// An argument to [`FnBuilder::op_with`].
pub enum A<'a> {
    /// `name = value`.
    S(&'a str, Handle<Value>),
    /// `name = (values...)`.
    T(&'a str, &'a [Handle<Value>]),
    /// `[name = value]` in the attribute block.
    Attr(&'a str, Handle<Value>),
}

impl FnBuilder {
    pub fn new(opset: Opset) -> FnBuilder {
        FnBuilder {
            func: Function {
                name: "main".into(),
                opset,
                params: Vec::new(),
                values: Arena::new(),
                ops: Arena::new(),
                outputs: Vec::new(),
            },
            next_pos: 1,
            strict: false,
        }
    }

    fn span(&mut self) -> Span {
        let start = self.next_pos;
        self.next_pos += 2;
        Span::new(start, start + 1)
    }

    pub fn param(&mut self, name: &str, ty: TensorType) -> Handle<Value> {
        let index = self.func.params.len() as u32;
        let span = self.span();
        let ty_span = self.span();
        let handle = self.func.values.append(
            Value {
                name: name.into(),
                decl: ty.into(),
                ty_span,
                def: ValueDef::Param { index },
            },
            span,
        );
        self.func.params.push(handle);
        handle
    }

    pub fn lit(&mut self, tensor: Tensor) -> Handle<Value> {
        let span = self.span();
        self.func.values.append(
            Value {
                name: String::new(),
                decl: tensor.ty.clone().into(),
                ty_span: span,
                def: ValueDef::Literal(Literal::Tensor(tensor)),
            },
            span,
        )
    }

    pub fn lit_f(&mut self, dtype: DType, shape: &[usize], values: &[f64]) -> Handle<Value> {
        self.lit(Tensor::from_f64s(TensorType::new(dtype, shape), values).unwrap())
    }

    pub fn ints(&mut self, values: &[i64]) -> Handle<Value> {
        self.lit(Tensor::from_i64s(TensorType::new(DType::Int32, [values.len()]), values).unwrap())
    }

    pub fn int(&mut self, value: i64) -> Handle<Value> {
        self.lit(Tensor::from_i64s(TensorType::scalar(DType::Int32), &[value]).unwrap())
    }

    pub fn boolean(&mut self, value: bool) -> Handle<Value> {
        self.lit(Tensor::bool_scalar(value))
    }

    pub fn bools(&mut self, values: &[bool]) -> Handle<Value> {
        let ints: Vec<i64> = values.iter().map(|&value| i64::from(value)).collect();
        self.lit(Tensor::from_i64s(TensorType::new(DType::Bool, [values.len()]), &ints).unwrap())
    }

    pub fn string(&mut self, value: &str) -> Handle<Value> {
        self.lit(Tensor::string(value))
    }

    pub fn float(&mut self, dtype: DType, value: f64) -> Handle<Value> {
        self.lit_f(dtype, &[], &[value])
    }

    /// An op with single-value arguments and one result (declared `?`-free fp16 scalar; the
    /// tests read inferred types and ignore E130).
    pub fn op(&mut self, kind: OpKind, args: &[(&str, Handle<Value>)]) -> Handle<Value> {
        let args: Vec<A<'_>> = args
            .iter()
            .map(|&(name, value)| A::S(name, value))
            .collect();
        self.op_with(kind, &args, 1)[0]
    }

    /// An op with any arguments and `n_results` results.
    pub fn op_with(
        &mut self,
        kind: OpKind,
        args: &[A<'_>],
        n_results: usize,
    ) -> Vec<Handle<Value>> {
        let mut ir_args = Vec::new();
        for arg in args {
            let name_span = self.span();
            let (name, value, in_attrs) = match *arg {
                A::S(name, value) => {
                    let span = self.span();
                    (name, ArgValue::Single(Use { value, span }), false)
                }
                A::Attr(name, value) => {
                    let span = self.span();
                    (name, ArgValue::Single(Use { value, span }), true)
                }
                A::T(name, values) => {
                    let uses = values
                        .iter()
                        .map(|&value| Use {
                            value,
                            span: self.span(),
                        })
                        .collect();
                    (name, ArgValue::Tuple(uses), false)
                }
            };
            ir_args.push(Arg {
                name: name.into(),
                name_span,
                value,
                in_attrs,
            });
        }
        let op_span = self.span();
        let op = self.func.ops.append(
            Op {
                kind,
                name_attr: None,
                args: ir_args,
                results: Vec::new(),
            },
            op_span,
        );
        let mut results = Vec::new();
        for index in 0..n_results {
            let span = self.span();
            let ty_span = self.span();
            let name = format!("r{}_{index}", op.index());
            let value = self.func.values.append(
                Value {
                    name,
                    decl: DeclType {
                        dtype: DType::Fp16,
                        dims: vec![Dim::Unknown; 9],
                    },
                    ty_span,
                    def: ValueDef::Result {
                        op,
                        index: index as u32,
                    },
                },
                span,
            );
            results.push(value);
        }
        self.func.ops.get_mut(op).results = results.clone();
        results
    }

    /// Runs inference without blobs.
    pub fn run(self) -> Outcome {
        self.run_with(&NoBlobs)
    }

    /// Runs inference with `blobs`.
    pub fn run_with(self, blobs: &dyn BlobSource) -> Outcome {
        let options = VerifyOptions {
            blobs,
            strict: self.strict,
            ..VerifyOptions::default()
        };
        let mut files = BlobFiles::new(blobs);
        let mut diags = Vec::new();
        let facts = infer_function(&self.func, &options, &mut files, &mut diags);
        Outcome {
            func: self.func,
            facts,
            diags,
            strict: self.strict,
        }
    }
}

/// The result of [`FnBuilder::run`].
pub struct Outcome {
    pub func: Function,
    pub facts: InferredFacts,
    pub diags: Vec<Diagnostic>,
    strict: bool,
}

impl Outcome {
    pub fn ty(&self, value: Handle<Value>) -> Option<TensorType> {
        self.facts.types[value].clone()
    }

    pub fn konst(&self, value: Handle<Value>) -> Option<Arc<Tensor>> {
        self.facts.consts[value].clone()
    }

    /// Diagnostic codes except E130 (the builder declares placeholder result types).
    pub fn codes(&self) -> Vec<&'static str> {
        self.diags
            .iter()
            .map(|diag| diag.code.as_str())
            .filter(|code| *code != "E130")
            .collect()
    }

    /// The attributes of the op defining `value`.
    pub fn attrs(&self, value: Handle<Value>) -> OpAttrs {
        let ValueDef::Result { op, .. } = self.func.values[value].def else {
            panic!("not a result")
        };
        let view = PartialView {
            types: &self.facts.types,
            consts: &self.facts.consts,
        };
        let options = CheckOptions {
            strict: self.strict,
            materialise: false,
        };
        match crate::ops::check(&self.func, op, &view, options) {
            Ok(checked) => checked.attrs,
            Err(diags) => panic!("op does not check: {diags:?}"),
        }
    }
}

impl FnBuilder {
    /// The function built so far.
    pub fn finish(self) -> Function {
        self.func
    }
}
