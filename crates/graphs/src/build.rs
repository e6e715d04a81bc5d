//! Internal machinery shared by every generator: declaring a kernel's activations and weights in
//! the chosen storage (packed sections, parameters or BLOBFILE constants), a linear layer for
//! each storage, the MIL building blocks (RMSNorm, heads, RoPE, attention, softmax backward), and
//! the taps that become outputs.

use crate::kernel::{
    BlobFile, GeneratedKernel, IoSpec, Orientation, PackAxis, PackLayout, PackSection,
    SectionContent, TapSpec, WeightLocation, WeightSpec,
};
use crate::tables;
use mil::builder::{FunctionBuilder, ProgramBuilder, Var};
use mil::ir::{DType, Opset, TensorType};
use milbridge_mil as mil;
use std::collections::HashMap;

/// Where a kernel's activations and weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// One packed input (weights in spatial sections, or activations stacked on channels).
    Packed(PackAxis),
    /// Every activation and weight its own parameter.
    Params,
    /// Activations as parameters (several: stacked on channels), weights as BLOBFILE consts.
    Static,
}

/// How a linear layer uses a model matrix `W [rows = out][cols = in]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// `y = W x` (packed: the section holds `Wᵀ`, `[in][out]`).
    Forward,
    /// `y = Wᵀ x` (packed: the section holds `W`, `[out][in]`).
    Backward,
    /// `y = W x` with the packed section holding `W` itself (rows = out), transposed inside the
    /// program: maderix/ANE's `ffnFused` staging of `W2`.
    ForwardRowsOut,
}

/// A kernel source in declaration order.
pub(crate) enum Src<'a> {
    /// Activations `[channels][seq]`.
    Act { name: &'a str, channels: usize },
    /// A model matrix `[rows][cols]` used as `dir` says.
    Weight {
        name: &'a str,
        rows: usize,
        cols: usize,
        dir: Dir,
    },
    /// A weight vector of `len` elements, seen by the program with `shape` (broadcastable).
    Vector {
        name: &'a str,
        len: usize,
        shape: Vec<usize>,
    },
}

impl Src<'_> {
    fn name(&self) -> &str {
        match self {
            Src::Act { name, .. } | Src::Weight { name, .. } | Src::Vector { name, .. } => name,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct WeightInfo {
    dir: Dir,
    rows: usize,
    cols: usize,
}

fn fp16(shape: &[usize]) -> TensorType {
    TensorType::new(DType::Fp16, shape.to_vec())
}

/// A [`FunctionBuilder`] plus the description of the kernel being generated.
pub(crate) struct KernelBuilder {
    pub b: FunctionBuilder,
    name: String,
    storage: Storage,
    seq: usize,
    inputs: Vec<IoSpec>,
    weights: Vec<WeightSpec>,
    packing: Option<PackLayout>,
    weight_info: HashMap<Var, WeightInfo>,
    lhs_cache: HashMap<Var, Var>,
    blobs: Vec<BlobFile>,
    blob_vars: HashMap<String, Var>,
}

impl KernelBuilder {
    /// Declares the sources of a kernel and returns one var per source, in `srcs` order:
    /// activations `[1, C, 1, seq]`, weights in the form [`KernelBuilder::linear`] takes, vectors
    /// with their declared shape.
    pub fn new(
        name: &str,
        storage: Storage,
        seq: usize,
        srcs: &[Src<'_>],
    ) -> (KernelBuilder, Vec<Var>) {
        let b = ProgramBuilder::ane().function("main", Opset::Ios18);
        let mut kb = KernelBuilder {
            b,
            name: name.to_string(),
            storage,
            seq,
            inputs: Vec::new(),
            weights: Vec::new(),
            packing: None,
            weight_info: HashMap::new(),
            lhs_cache: HashMap::new(),
            blobs: Vec::new(),
            blob_vars: HashMap::new(),
        };
        let vars = match storage {
            Storage::Packed(PackAxis::Spatial) => kb.declare_spatial(srcs),
            Storage::Packed(PackAxis::Channel) => kb.declare_channel_packed(srcs),
            Storage::Params => kb.declare_params(srcs),
            Storage::Static => kb.declare_static(srcs),
        };
        for (src, &var) in srcs.iter().zip(&vars) {
            if let Src::Weight {
                rows, cols, dir, ..
            } = *src
            {
                kb.weight_info.insert(var, WeightInfo { dir, rows, cols });
            }
        }
        (kb, vars)
    }

    fn declare_spatial(&mut self, srcs: &[Src<'_>]) -> Vec<Var> {
        let seq = self.seq;
        // (rows, width, content) of each section.
        let geometry: Vec<(usize, usize, SectionContent)> = srcs
            .iter()
            .map(|src| match *src {
                Src::Act { channels, .. } => (channels, seq, SectionContent::Activation),
                Src::Weight {
                    rows,
                    cols,
                    dir: Dir::Forward,
                    ..
                } => (cols, rows, SectionContent::Weight(Orientation::Transposed)),
                Src::Weight { rows, cols, .. } => {
                    (rows, cols, SectionContent::Weight(Orientation::Natural))
                }
                Src::Vector { len, .. } => (len, 1, SectionContent::Vector),
            })
            .collect();
        let channels = geometry
            .iter()
            .filter(|(_, _, content)| *content != SectionContent::Vector)
            .map(|(rows, _, _)| *rows)
            .max()
            .expect("packed kernel invariant: at least one activation or matrix");
        let mut sections = Vec::new();
        let mut offset = 0;
        for (src, &(rows, width, content)) in srcs.iter().zip(&geometry) {
            let fits = if content == SectionContent::Vector {
                rows <= channels
            } else {
                rows == channels
            };
            assert!(
                fits,
                "packed kernel invariant: section `{}` has {rows} rows, input has {channels}",
                src.name()
            );
            sections.push(PackSection {
                name: src.name().to_string(),
                offset,
                rows,
                cols: width,
                content,
            });
            offset += width;
        }
        let ty = fp16(&[1, channels, 1, offset]);
        let x = self.b.param("x", ty.clone());
        self.inputs.push(IoSpec {
            name: self.b.name(x).to_string(),
            ty,
        });
        let mut vars = Vec::new();
        for (index, (src, section)) in srcs.iter().zip(&sections).enumerate() {
            let var = self.b.named(src.name()).slice_by_size(
                x,
                &[0, 0, 0, section.offset],
                &[1, section.rows, 1, section.cols],
            );
            let var = match src {
                Src::Vector { shape, .. } if shape.as_slice() != [1, section.rows, 1, 1] => self
                    .b
                    .named(format!("{}_r", src.name()))
                    .reshape(var, shape),
                _ => var,
            };
            match *src {
                Src::Weight {
                    name, rows, cols, ..
                } => self.weights.push(WeightSpec {
                    name: name.to_string(),
                    rows,
                    cols,
                    location: WeightLocation::Packed {
                        section: index,
                        orientation: match section.content {
                            SectionContent::Weight(orientation) => orientation,
                            _ => Orientation::Natural,
                        },
                    },
                }),
                Src::Vector { name, len, .. } => self.weights.push(WeightSpec {
                    name: name.to_string(),
                    rows: len,
                    cols: 1,
                    location: WeightLocation::Packed {
                        section: index,
                        orientation: Orientation::Natural,
                    },
                }),
                Src::Act { .. } => {}
            }
            vars.push(var);
        }
        self.packing = Some(PackLayout {
            param: 0,
            axis: PackAxis::Spatial,
            channels,
            width: offset,
            sections,
        });
        vars
    }

    /// Activations stacked along channels in one parameter `x`; returns the slices.
    fn channel_pack(&mut self, acts: &[(&str, usize)]) -> Vec<Var> {
        let seq = self.seq;
        let total: usize = acts.iter().map(|(_, channels)| channels).sum();
        let ty = fp16(&[1, total, 1, seq]);
        let x = self.b.param("x", ty.clone());
        self.inputs.push(IoSpec {
            name: self.b.name(x).to_string(),
            ty,
        });
        let mut sections = Vec::new();
        let mut vars = Vec::new();
        let mut offset = 0;
        for &(name, channels) in acts {
            vars.push(self.b.named(name).slice_by_size(
                x,
                &[0, offset, 0, 0],
                &[1, channels, 1, seq],
            ));
            sections.push(PackSection {
                name: name.to_string(),
                offset,
                rows: channels,
                cols: seq,
                content: SectionContent::Activation,
            });
            offset += channels;
        }
        self.packing = Some(PackLayout {
            param: 0,
            axis: PackAxis::Channel,
            channels: total,
            width: seq,
            sections,
        });
        vars
    }

    fn declare_channel_packed(&mut self, srcs: &[Src<'_>]) -> Vec<Var> {
        let acts: Vec<(&str, usize)> = srcs
            .iter()
            .map(|src| match *src {
                Src::Act { name, channels } => (name, channels),
                _ => panic!("packed kernel invariant: channel packing holds activations only"),
            })
            .collect();
        self.channel_pack(&acts)
    }

    fn declare_params(&mut self, srcs: &[Src<'_>]) -> Vec<Var> {
        let seq = self.seq;
        let mut vars = vec![None; srcs.len()];
        for (idx, src) in srcs.iter().enumerate() {
            if let Src::Act { name, channels } = *src {
                let ty = fp16(&[1, channels, 1, seq]);
                let var = self.b.param(name, ty.clone());
                self.inputs.push(IoSpec {
                    name: self.b.name(var).to_string(),
                    ty,
                });
                vars[idx] = Some(var);
            }
        }
        let n_inputs = self.inputs.len();
        for (idx, src) in srcs.iter().enumerate() {
            let (name, rows, cols, shape) = match src {
                Src::Act { .. } => continue,
                Src::Weight {
                    name, rows, cols, ..
                } => (*name, *rows, *cols, vec![1, *rows, *cols]),
                Src::Vector { name, len, shape } => (*name, *len, 1, shape.clone()),
            };
            let index = n_inputs + self.weights.len();
            vars[idx] = Some(self.b.param(name, fp16(&shape)));
            self.weights.push(WeightSpec {
                name: name.to_string(),
                rows,
                cols,
                location: WeightLocation::Param { index, shape },
            });
        }
        vars.into_iter()
            .map(|var| var.expect("every source declared"))
            .collect()
    }

    fn declare_static(&mut self, srcs: &[Src<'_>]) -> Vec<Var> {
        let seq = self.seq;
        let acts: Vec<(&str, usize)> = srcs
            .iter()
            .filter_map(|src| match *src {
                Src::Act { name, channels } => Some((name, channels)),
                _ => None,
            })
            .collect();
        let mut act_vars = if acts.len() == 1 {
            let ty = fp16(&[1, acts[0].1, 1, seq]);
            let var = self.b.param(acts[0].0, ty.clone());
            self.inputs.push(IoSpec {
                name: self.b.name(var).to_string(),
                ty,
            });
            vec![var]
        } else {
            self.channel_pack(&acts)
        }
        .into_iter();
        let mut vars = Vec::new();
        for src in srcs {
            let var = match src {
                Src::Act { .. } => act_vars.next().expect("one var per activation"),
                Src::Weight {
                    name,
                    rows,
                    cols,
                    dir,
                } => {
                    let (shape, file, orientation) = match dir {
                        Dir::Backward => (
                            [*cols, *rows, 1, 1],
                            format!("{name}t"),
                            Orientation::Transposed,
                        ),
                        _ => ([*rows, *cols, 1, 1], name.to_string(), Orientation::Natural),
                    };
                    let path = format!("@model_path/weights/{file}.bin");
                    let var = self
                        .b
                        .named(file.clone())
                        .blob_const(fp16(&shape), &path, 64);
                    self.weights.push(WeightSpec {
                        name: name.to_string(),
                        rows: *rows,
                        cols: *cols,
                        location: WeightLocation::Blob {
                            path,
                            offset: 64,
                            orientation,
                        },
                    });
                    var
                }
                Src::Vector { name, len, shape } => {
                    let path = format!("@model_path/weights/{name}.bin");
                    let var = self.b.named(*name).blob_const(fp16(shape), &path, 64);
                    self.weights.push(WeightSpec {
                        name: name.to_string(),
                        rows: *len,
                        cols: 1,
                        location: WeightLocation::Blob {
                            path,
                            offset: 64,
                            orientation: Orientation::Natural,
                        },
                    });
                    var
                }
            };
            vars.push(var);
        }
        vars
    }

    /// Declares one more weight as a BLOBFILE constant of `shape` at
    /// `@model_path/weights/{file}.bin` (static kernels whose weight is not a conv operand).
    pub fn blob_weight(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        shape: &[usize],
        orientation: Orientation,
        file: &str,
    ) -> Var {
        let path = format!("@model_path/weights/{file}.bin");
        let var = self.b.named(file).blob_const(fp16(shape), &path, 64);
        self.weights.push(WeightSpec {
            name: name.to_string(),
            rows,
            cols,
            location: WeightLocation::Blob {
                path,
                offset: 64,
                orientation,
            },
        });
        var
    }

    /// A constant table read through BLOBFILE (added to the kernel's blobs once).
    pub fn table(
        &mut self,
        path: &str,
        name: &str,
        shape: &[usize],
        bytes: impl FnOnce() -> Vec<u8>,
    ) -> Var {
        if let Some(&var) = self.blob_vars.get(path) {
            return var;
        }
        let var = self.b.named(name).blob_const(fp16(shape), path, 64);
        self.blobs.push(BlobFile {
            path: path.to_string(),
            bytes: bytes(),
        });
        self.blob_vars.insert(path.to_string(), var);
        var
    }

    /// The causal mask `[1, 1, seq, seq]`.
    pub fn mask(&mut self) -> Var {
        let seq = self.seq;
        self.table(tables::MASK_PATH, "cm", &[1, 1, seq, seq], || {
            tables::mask_blob(seq)
        })
    }

    /// The RoPE tables `[1, 1, seq, head_dim]` `(cos, sin)`.
    pub fn rope_tables(&mut self, head_dim: usize, theta: f64) -> (Var, Var) {
        let seq = self.seq;
        let (cos_bytes, sin_bytes) = tables::rope_blobs(seq, head_dim, theta);
        let cos = self.table(
            tables::ROPE_COS_PATH,
            "rope_cos",
            &[1, 1, seq, head_dim],
            || cos_bytes,
        );
        let sin = self.table(
            tables::ROPE_SIN_PATH,
            "rope_sin",
            &[1, 1, seq, head_dim],
            || sin_bytes,
        );
        (cos, sin)
    }

    /// `[1, C, 1, S]` as the left operand of a dynamic matmul (`[1, 1, S, C]` packed,
    /// `[1, C, S]` params); built once per activation.
    fn lhs(&mut self, x: Var) -> Var {
        if let Some(&var) = self.lhs_cache.get(&x) {
            return var;
        }
        let (channels, seq) = (self.b.shape(x)[1], self.b.shape(x)[3]);
        let base = self.b.name(x).to_string();
        let var = match self.storage {
            Storage::Params => self
                .b
                .named(format!("{base}3"))
                .reshape(x, &[1, channels, seq]),
            _ => {
                let x2 = self
                    .b
                    .named(format!("{base}2"))
                    .reshape(x, &[1, 1, channels, seq]);
                self.b
                    .named(format!("{base}t"))
                    .transpose(x2, &[0, 1, 3, 2])
            }
        };
        self.lhs_cache.insert(x, var);
        var
    }

    /// A linear layer on activations `x [1, IC, 1, S]` with weight `w` (as declared), named
    /// `name`: `[1, OC, 1, S]`.
    pub fn linear(&mut self, x: Var, w: Var, name: &str) -> Var {
        let info = *self
            .weight_info
            .get(&w)
            .expect("linear invariant: w was declared as a weight");
        let (ic, oc) = match info.dir {
            Dir::Forward | Dir::ForwardRowsOut => (info.cols, info.rows),
            Dir::Backward => (info.rows, info.cols),
        };
        let seq = self.seq;
        assert_eq!(
            self.b.shape(x)[1],
            ic,
            "linear invariant: `{name}` input channels"
        );
        match self.storage {
            Storage::Static => self.b.named(name).conv1x1(x, w),
            Storage::Params => {
                let x3 = self.lhs(x);
                let y3 = self.b.named(format!("{name}3")).matmul(
                    w,
                    x3,
                    info.dir == Dir::Backward,
                    false,
                );
                self.b.named(name).reshape(y3, &[1, oc, 1, seq])
            }
            Storage::Packed(_) => {
                let a3 = self.lhs(x);
                let wname = self.b.name(w).to_string();
                let w2 = match info.dir {
                    Dir::ForwardRowsOut => {
                        let w22 = self
                            .b
                            .named(format!("{wname}2"))
                            .reshape(w, &[1, 1, oc, ic]);
                        self.b
                            .named(format!("{wname}t"))
                            .transpose(w22, &[0, 1, 3, 2])
                    }
                    _ => self
                        .b
                        .named(format!("{wname}2"))
                        .reshape(w, &[1, 1, ic, oc]),
                };
                let yh = self
                    .b
                    .named(format!("{name}m"))
                    .matmul(a3, w2, false, false);
                let yt = self
                    .b
                    .named(format!("{name}t"))
                    .transpose(yh, &[0, 1, 3, 2]);
                self.b.named(name).reshape(yt, &[1, oc, 1, seq])
            }
        }
    }

    /// Ends the kernel: `taps` (each `[1, C, 1, S]`) become the outputs — concatenated along
    /// channels into one output `out` for packed and static kernels, one output each in params
    /// mode.
    pub fn finish(mut self, taps: &[(&str, Var)]) -> GeneratedKernel {
        let seq = self.seq;
        let mut tap_specs = Vec::new();
        let mut outputs = Vec::new();
        let concat = self.storage != Storage::Params && taps.len() > 1;
        if concat {
            let vars: Vec<Var> = taps.iter().map(|(_, var)| *var).collect();
            let out = self.b.named("out").concat(&vars, 1);
            let mut offset = 0;
            for (name, var) in taps {
                let channels = self.b.shape(*var)[1];
                tap_specs.push(TapSpec {
                    name: name.to_string(),
                    output: 0,
                    channel_offset: offset,
                    channels,
                    seq,
                });
                offset += channels;
            }
            outputs.push(IoSpec {
                name: self.b.name(out).to_string(),
                ty: self.b.ty(out).clone(),
            });
            self.b.output(out);
        } else {
            for (index, (name, var)) in taps.iter().enumerate() {
                let shape = self.b.shape(*var);
                assert!(
                    shape.len() == 4 && shape[0] == 1 && shape[2] == 1 && shape[3] == seq,
                    "tap invariant: `{name}` is [1, C, 1, S]"
                );
                tap_specs.push(TapSpec {
                    name: name.to_string(),
                    output: index,
                    channel_offset: 0,
                    channels: shape[1],
                    seq,
                });
                outputs.push(IoSpec {
                    name: self.b.name(*var).to_string(),
                    ty: self.b.ty(*var).clone(),
                });
                self.b.output(*var);
            }
        }
        GeneratedKernel {
            name: self.name,
            program: self.b.finish(),
            inputs: self.inputs,
            weights: self.weights,
            outputs,
            packing: self.packing,
            taps: tap_specs,
            blobs: self.blobs,
        }
    }
}

// ----- building blocks on a FunctionBuilder --------------------------------------------------

/// `1 / sqrt(mean(x², axis) + eps)` with the reduced axis kept (maderix/ANE's sequence: `mul`,
/// `reduce_sum`, `mul` by `1/n`, `add` eps, `pow -0.5`).
/// What the attention forward core computes, in `[C, S]` channel-first form.
pub(crate) struct AttentionCore {
    /// Attention output before Wo, `[1, q_dim, 1, S]`.
    pub attn: Var,
    /// Queries after (optional q-norm and) RoPE, flattened back to channels.
    pub q_rope: Var,
    /// Keys after (optional k-norm and) RoPE, flattened back to channels.
    pub k_rope: Var,
    /// Values, `[1, kv_dim, 1, S]`.
    pub v: Var,
    /// Queries before norm and RoPE (tapped when q/k norm is on, for its backward).
    pub q_raw: Var,
    /// Keys before norm and RoPE.
    pub k_raw: Var,
}

/// QKV projections of `xn`, optional per-head q/k RMSNorm (`qk_norm` weights), RoPE, GQA
/// tiling, causal softmax attention: the part sdpaFwd and the static sdpaFwdTaps share.
pub(crate) fn attention_core(
    kb: &mut KernelBuilder,
    cfg: &crate::config::ModelConfig,
    xn: Var,
    (wq, wk, wv): (Var, Var, Var),
    qk_norm: Option<(Var, Var)>,
) -> AttentionCore {
    let hd = cfg.head_dim;
    let q_raw = kb.linear(xn, wq, "q_raw");
    let k_raw = kb.linear(xn, wk, "k_raw");
    let v = kb.linear(xn, wv, "v");
    let b = &mut kb.b;
    let mut q = to_heads(b, q_raw, cfg.n_heads, hd, "qh");
    let mut k = to_heads(b, k_raw, cfg.n_kv_heads, hd, "kh");
    let vh = to_heads(b, v, cfg.n_kv_heads, hd, "vh");
    if let Some((q_norm, k_norm)) = qk_norm {
        q = rmsnorm(b, q, q_norm, -1, cfg.norm_eps, "qn_", "qn");
        k = rmsnorm(b, k, k_norm, -1, cfg.norm_eps, "kn_", "kn");
    }
    let (cos, sin) = kb.rope_tables(hd, cfg.rope_theta);
    let mask = kb.mask();
    let b = &mut kb.b;
    let q_rope = rope(b, q, cos, sin, "qh_rope");
    let k_rope = rope(b, k, cos, sin, "kh_rope");
    let k_tiled = gqa_tile(b, k_rope, cfg.gqa_ratio(), "k_tiled");
    let v_tiled = gqa_tile(b, vh, cfg.gqa_ratio(), "v_tiled");
    let probs = attention_probs(b, q_rope, k_tiled, mask, cfg.attn_scale(), "probs");
    let a4 = b.named("a4").matmul(probs, v_tiled, false, false);
    let attn = from_heads(b, a4, "attn");
    let q_rope = from_heads(b, q_rope, "q_rope");
    let k_rope = from_heads(b, k_rope, "k_rope");
    AttentionCore {
        attn,
        q_rope,
        k_rope,
        v,
        q_raw,
        k_raw,
    }
}

pub(crate) fn rrms(b: &mut FunctionBuilder, x: Var, axis: i32, eps: f64, prefix: &str) -> Var {
    let n = {
        let shape = b.shape(x);
        shape[mil::builder::normalize_axis(axis, shape.len()).expect("rrms axis in range")]
    };
    let sq = b.named(format!("{prefix}sq")).mul(x, x);
    let ss = b.named(format!("{prefix}ss")).reduce_sum(sq, &[axis], true);
    let invd = b.named("invd").const_scalar(DType::Fp16, 1.0 / n as f64);
    let ss2 = b.named(format!("{prefix}ss2")).mul(ss, invd);
    let eps = b.named("eps").const_scalar(DType::Fp16, eps);
    let ss3 = b.named(format!("{prefix}ss3")).add(ss2, eps);
    let nhalf = b.named("nhalf").const_scalar(DType::Fp16, -0.5);
    b.named(format!("{prefix}rrms")).pow(ss3, nhalf)
}

/// RMSNorm along `axis`: `x * rrms(x) * w` (`w` broadcastable).
pub(crate) fn rmsnorm(
    b: &mut FunctionBuilder,
    x: Var,
    w: Var,
    axis: i32,
    eps: f64,
    prefix: &str,
    name: &str,
) -> Var {
    let r = rrms(b, x, axis, eps, prefix);
    let xr = b.named(format!("{prefix}xr")).mul(x, r);
    b.named(name).mul(xr, w)
}

/// RMSNorm backward along `axis` (`n` elements): `dx = (dy·w − x·Σ(dy·w·x)/n · rrms²) · rrms`.
pub(crate) fn rmsnorm_bwd(
    b: &mut FunctionBuilder,
    dy: Var,
    x: Var,
    w: Var,
    axis: i32,
    eps: f64,
    name: &str,
) -> Var {
    let r = rrms(b, x, axis, eps, "");
    let n = {
        let shape = b.shape(x);
        shape[mil::builder::normalize_axis(axis, shape.len()).expect("axis in range")]
    };
    let dyw = b.named("dyw").mul(dy, w);
    let dywx = b.named("dywx").mul(dyw, x);
    let dot = b.named("dot").reduce_sum(dywx, &[axis], true);
    let invd = b.named("invd").const_scalar(DType::Fp16, 1.0 / n as f64);
    let dot_sc = b.named("dot_sc").mul(dot, invd);
    let r2 = b.named("rrms2").mul(r, r);
    let coeff = b.named("coeff").mul(dot_sc, r2);
    let xc = b.named("xc").mul(x, coeff);
    let diff = b.named("diff").sub(dyw, xc);
    b.named(name).mul(diff, r)
}

/// `[1, n*hd, 1, S]` → `[1, n, S, hd]` (reshape to `[1, n, hd, S]`, swap the last two axes).
pub(crate) fn to_heads(b: &mut FunctionBuilder, x: Var, n: usize, hd: usize, name: &str) -> Var {
    let seq = b.shape(x)[3];
    let x4 = b.named(format!("{name}4")).reshape(x, &[1, n, hd, seq]);
    b.named(name).transpose(x4, &[0, 1, 3, 2])
}

/// `[1, n, S, hd]` → `[1, n*hd, 1, S]`.
pub(crate) fn from_heads(b: &mut FunctionBuilder, x: Var, name: &str) -> Var {
    let shape = b.shape(x).to_vec();
    let (n, seq, hd) = (shape[1], shape[2], shape[3]);
    let xt = b.named(format!("{name}_t")).transpose(x, &[0, 1, 3, 2]);
    b.named(name).reshape(xt, &[1, n * hd, 1, seq])
}

/// Rotary embedding of `x [1, n, S, hd]` on adjacent pairs: `x·cos + rot(x)·sin` with
/// `rot(x)[2i] = −x[2i+1]`, `rot(x)[2i+1] = x[2i]` (maderix/ANE's reshape/slice/concat form).
pub(crate) fn rope(b: &mut FunctionBuilder, x: Var, cos: Var, sin: Var, name: &str) -> Var {
    let shape = b.shape(x).to_vec();
    let (n, seq, hd) = (shape[1], shape[2], shape[3]);
    let pairs = seq * hd / 2;
    let xp = b.named(format!("{name}_p")).reshape(x, &[1, n, pairs, 2]);
    let even = b
        .named(format!("{name}_e"))
        .slice_by_size(xp, &[0, 0, 0, 0], &[1, n, pairs, 1]);
    let odd = b
        .named(format!("{name}_o"))
        .slice_by_size(xp, &[0, 0, 0, 1], &[1, n, pairs, 1]);
    let neg1 = b.named("neg1").const_scalar(DType::Fp16, -1.0);
    let neg_odd = b.named(format!("{name}_no")).mul(odd, neg1);
    let rot_pairs = b.named(format!("{name}_rp")).concat(&[neg_odd, even], 3);
    let rot = b
        .named(format!("{name}_rot"))
        .reshape(rot_pairs, &[1, n, seq, hd]);
    let xc = b.named(format!("{name}_c")).mul(x, cos);
    let xs = b.named(format!("{name}_s")).mul(rot, sin);
    b.named(name).add(xc, xs)
}

/// Grouped-query tiling `[1, kvh, S, hd]` → `[1, kvh * ratio, S, hd]` where query head `h`
/// reads key/value head `h / ratio` (an interleaving concat; identity when `ratio == 1`).
pub(crate) fn gqa_tile(b: &mut FunctionBuilder, x: Var, ratio: usize, name: &str) -> Var {
    if ratio == 1 {
        return x;
    }
    let copies = vec![x; ratio];
    b.named(name).concat_interleave(&copies, 1)
}

/// Causal attention probabilities `softmax(q·kᵀ·scale + mask)` for `q, k [1, H, S, hd]`.
pub(crate) fn attention_probs(
    b: &mut FunctionBuilder,
    q: Var,
    k: Var,
    mask: Var,
    scale: f64,
    name: &str,
) -> Var {
    let sc1 = b.named("sc1").matmul(q, k, false, true);
    let scv = b.named("scv").const_scalar(DType::Fp16, scale);
    let sc2 = b.named("sc2").mul(sc1, scv);
    let ms = b.named("ms").add(sc2, mask);
    b.named(name).softmax(ms, -1)
}

/// Softmax backward of attention with the score scale folded in:
/// `ds = probs · (dp − Σ_j probs·dp) · scale`.
pub(crate) fn softmax_bwd(b: &mut FunctionBuilder, probs: Var, dp: Var, scale: f64) -> Var {
    let pdp = b.named("pdp").mul(probs, dp);
    let spdp = b.named("spdp").reduce_sum(pdp, &[-1], true);
    let dps = b.named("dps").sub(dp, spdp);
    let ds0 = b.named("ds0").mul(probs, dps);
    let scv = b.named("scv").const_scalar(DType::Fp16, scale);
    b.named("ds").mul(ds0, scv)
}

/// `[1, H, S, S]` → `[1, H*S, 1, S]`: channel `h*S + i` holds query `i`'s row of head `h`.
pub(crate) fn flatten_scores(b: &mut FunctionBuilder, x: Var, name: &str) -> Var {
    let shape = b.shape(x).to_vec();
    b.named(name)
        .reshape(x, &[1, shape[1] * shape[2], 1, shape[3]])
}
