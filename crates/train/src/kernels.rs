//! The real backend: `milbridge-graphs`' training kernels, printed to MIL text and compiled by
//! the bridge once at start-up, in either weight mode. Nothing is recompiled afterwards;
//! weights change by surface writes.
//!
//! - [`WeightMode::Params`]: each weight-bearing kernel exists once per layer, each instance
//!   with its own persistent weight surfaces (function parameters). All instances of a kernel
//!   share one compiled plan (compiled once, then instantiated with
//!   [`Kernel::from_plan`]), so there are no extra compiles even with the cache off. A weight is
//!   written once per optimizer step and stays resident; a call writes only activations.
//! - [`WeightMode::Packed`]: training_dynamic's kernels, whose single input packs the
//!   activations and then the layer's weights along the spatial axis, sliced apart in the MIL
//!   (the engine folds the slices into views: no copy). One kernel instance per layer, as for
//!   params: each instance's packed input surface keeps its weight columns resident (written,
//!   pre-transposed, once per optimizer step) and a call writes only the activation columns
//!   ([`Kernel::write_input_region_f32`]).
//! - [`WeightMode::PackedRestage`]: the same kernels run as training_dynamic runs them: one
//!   shared kernel per kind; the host keeps each layer's packed buffer and every call writes
//!   the whole buffer, activations and weights, into the shared input surface — the weights
//!   are restaged per layer per step, the overhead PR #22 measured.
//!
//! The two attention-backward kernels carry no weights and are shared by all layers in both
//! modes; with function parameters the second reads the first's `probs` and `dp` outputs in
//! place ([`Kernel::bind_input_to`]).
//!
//! Qwen3 ([`ModelSpec::qk_norm`]): `sdpaFwd` takes the q/k-norm gains as two more weights
//! (function parameters, or columns of the packed input) and also returns `q_raw`/`k_raw`;
//! `qNormBwd`/`kNormBwd` (weight-bearing, so instanced or restaged exactly as the projection
//! kernels are in each mode) give the norm's input gradient. The
//! gains' own gradients are summed on the CPU by the step, as for every RMSNorm gain (the
//! generators leave them to the host, like maderix/ANE's `rmsnormBwd`).

use milbridge_bridge::{CachePolicy, Kernel, KernelOptions, Precision};
use milbridge_graphs::{
    GeneratedKernel, ModelConfig, PackAxis, SectionContent, WeightMode as GWeightMode, dynamic,
    write_section,
};

use crate::backend::{AttnGrads, AttnOut, Backend, FfnOut, KernelProfileRow, NormHeads};
use crate::config::WeightMode;
use crate::cpu;
use crate::error::{Error, Result};
use crate::model::{Layer, ModelSpec, Params};

/// The graphs configuration of a trainer model (residual scale 1; q/k norm as the spec says).
///
/// `norm_eps` reaches only the q/k-norm kernels here (the trainer's layer and final RMSNorms
/// run on the CPU at [`ModelSpec::norm_eps`]), so with q/k norm it is Qwen3's
/// [`cpu::QK_NORM_EPS`]; the RoPE base is [`ModelSpec::rope_theta`].
pub fn graphs_config(spec: &ModelSpec) -> ModelConfig {
    ModelConfig {
        dim: spec.dim,
        hidden: spec.hidden,
        n_layers: spec.n_layers,
        n_heads: spec.n_heads,
        n_kv_heads: spec.n_kv_heads,
        head_dim: spec.head_dim,
        seq: spec.seq,
        vocab: spec.vocab,
        qk_norm: spec.qk_norm,
        rope_theta: spec.rope_theta(),
        norm_eps: if spec.qk_norm {
            cpu::QK_NORM_EPS
        } else {
            cpu::NORM_EPS
        },
        residual_scale: f64::from(crate::backend::residual_scale(spec)),
    }
}

/// One generated kernel and its compiled instances.
struct Unit {
    generated: GeneratedKernel,
    /// One per layer (function-parameter weights) or one shared.
    kernels: Vec<Kernel>,
    /// Packed mode: each layer's packed input, weights staged at the optimizer step.
    staging: Vec<Vec<f32>>,
    /// Packed mode: the output read back before the taps are cut out.
    out: Vec<f32>,
    /// Whether a call restages the whole packed input (packed mode).
    packed: bool,
    /// Packed mode: time spent writing the packed input (weights included) so far.
    staged: std::time::Duration,
    /// Packed with one instance per staging slot whose input keeps its weight columns: the
    /// optimizer step writes the whole input, a call only the activation sections.
    resident: bool,
}

impl Unit {
    fn compile(
        generated: GeneratedKernel,
        instances: usize,
        slots: usize,
        resident: bool,
        options: &KernelOptions,
        cold: &mut usize,
    ) -> Result<Unit> {
        let fail = |source| Error::Kernel {
            kernel: generated.name.clone(),
            source,
        };
        let text = milbridge_mil::print::print(&generated.program);
        let before = milbridge_bridge::compile_count();
        let base = Kernel::compile(&text, &generated.blob_map(), options).map_err(fail)?;
        *cold += usize::try_from(milbridge_bridge::compile_count().saturating_sub(before))
            .unwrap_or(usize::MAX);
        let n_inputs = generated.inputs.len();
        let mut kernels = Vec::with_capacity(instances);
        for _ in 0..instances {
            let k = Kernel::from_plan(
                base.plan().clone(),
                Some(n_inputs),
                base.compile_source(),
                base.cache_key().cloned(),
            )
            .map_err(fail)?;
            kernels.push(k);
        }
        let packed = generated.packing.is_some();
        let staging = match &generated.packing {
            // One zeroed allocation per slot (calloc'd, so its pages are mapped when the
            // weights are first written), not a first vector cloned into the others: the
            // clones would copy (and fault in) every slot's bytes here.
            Some(layout) => (0..slots).map(|_| vec![0.0; layout.numel()]).collect(),
            None => Vec::new(),
        };
        let out = if packed {
            vec![0.0; generated.outputs.first().map_or(0, |o| o.numel())]
        } else {
            Vec::new()
        };
        Ok(Unit {
            generated,
            kernels,
            staging,
            out,
            resident: resident && packed,
            packed,
            staged: std::time::Duration::ZERO,
        })
    }

    fn fail(&self, source: milbridge_bridge::Error) -> Error {
        Error::Kernel {
            kernel: self.generated.name.clone(),
            source,
        }
    }

    /// Writes the weights of `layer` (params: into its weight surfaces; packed: into its
    /// staging buffer).
    fn load<'w>(&mut self, instance: usize, lookup: &dyn Fn(&str) -> &'w [f32]) -> Result<()> {
        if self.packed {
            let layout = self
                .generated
                .packing
                .clone()
                .expect("invariant: packed units have a layout");
            for (idx, section) in layout.sections.iter().enumerate() {
                if matches!(section.content, SectionContent::Activation) {
                    continue;
                }
                write_section(
                    &layout,
                    idx,
                    lookup(&section.name),
                    &mut self.staging[instance],
                );
            }
            if self.resident {
                let t0 = std::time::Instant::now();
                self.kernels[instance]
                    .write_input_f32(layout.param, &self.staging[instance])
                    .map_err(|e| self.fail(e))?;
                self.staged += t0.elapsed();
            }
            return Ok(());
        }
        for (idx, w) in self.generated.weights.iter().enumerate() {
            let data = lookup(&w.name);
            self.kernels[instance]
                .write_weight_f32(idx, data)
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Writes the activations, evaluates kernel instance `instance`, and copies each named tap
    /// into its destination. Packed: the activations go into staging slot `slot`, and the whole
    /// slot (activations and that layer's weights) is written to the shared input.
    fn call(
        &mut self,
        instance: usize,
        slot: usize,
        acts: &[(&str, &[f32])],
        taps: &mut [(&str, &mut [f32])],
    ) -> Result<()> {
        let name = self.generated.name.clone();
        let fail = |source| Error::Kernel {
            kernel: name.clone(),
            source,
        };
        if let (Some(layout), true) = (&self.generated.packing, self.resident) {
            // The weight columns are resident: write only the activation sections.
            for (act, data) in acts {
                let section = &layout.sections[layout
                    .section(act)
                    .expect("invariant: the kernel has this activation")];
                let (at, cols) = match layout.axis {
                    PackAxis::Spatial => ((0, section.offset), section.cols),
                    PackAxis::Channel => ((section.offset, 0), layout.width),
                };
                self.kernels[instance]
                    .write_input_region_f32(layout.param, at, cols, data)
                    .map_err(fail)?;
            }
        } else if let Some(layout) = &self.generated.packing {
            for (act, data) in acts {
                let idx = layout
                    .section(act)
                    .expect("invariant: the kernel has this activation");
                write_section(layout, idx, data, &mut self.staging[slot]);
            }
            let t0 = std::time::Instant::now();
            self.kernels[instance]
                .write_input_f32(0, &self.staging[slot])
                .map_err(fail)?;
            self.staged += t0.elapsed();
        } else {
            for (act, data) in acts {
                let idx = self
                    .generated
                    .inputs
                    .iter()
                    .position(|io| io.name == *act)
                    .expect("invariant: the kernel has this activation");
                self.kernels[instance]
                    .write_input_f32(idx, data)
                    .map_err(fail)?;
            }
        }
        let kernel = &mut self.kernels[instance];
        kernel.eval().map_err(fail)?;
        if self.packed {
            kernel.read_output_f32(0, &mut self.out).map_err(fail)?;
        }
        for (tap_name, dst) in taps.iter_mut() {
            let tap = self
                .generated
                .tap(tap_name)
                .expect("invariant: the kernel has this tap");
            if self.packed {
                dst.copy_from_slice(&self.out[tap.range()]);
            } else {
                kernel.read_output_f32(tap.output, dst).map_err(fail)?;
            }
        }
        Ok(())
    }
}

fn weight<'a>(layer: &'a Layer, name: &str) -> &'a [f32] {
    match name {
        "wq" => &layer.wq,
        "wk" => &layer.wk,
        "wv" => &layer.wv,
        "wo" => &layer.wo,
        "w1" => &layer.w1,
        "w2" => &layer.w2,
        "w3" => &layer.w3,
        "rms_att" => &layer.rms_att,
        "rms_ffn" => &layer.rms_ffn,
        "q_norm" => &layer.q_norm,
        "k_norm" => &layer.k_norm,
        other => panic!("invariant: generated kernels only name layer weights, got {other:?}"),
    }
}

/// Compiled bridge kernels for every product of a step.
pub struct KernelBackend {
    spec: ModelSpec,
    mode: WeightMode,
    attn_fwd: Unit,
    wo_fwd: Unit,
    ffn_fwd: Unit,
    ffn_w2: Unit,
    ffn_w13: Unit,
    wo_bwd: Unit,
    q_bwd: Unit,
    kv_bwd: Unit,
    bwd1: Unit,
    bwd2: Unit,
    cls_fwd: Unit,
    cls_bwd: Unit,
    /// Qwen3's `qNormBwd` and `kNormBwd` (only with q/k norm).
    qk_norm_bwd: Option<[Unit; 2]>,
    /// Their output before it replaces the incoming gradient, `[q_dim, S]`.
    norm_dx: Vec<f32>,
    cold: usize,
    /// K and V tiled to every query head, and the query-head gradients before reduction.
    k_t: Vec<f32>,
    v_t: Vec<f32>,
    probs: Vec<f32>,
    dp: Vec<f32>,
    dk_full: Vec<f32>,
    dv_full: Vec<f32>,
    dx_tmp: Vec<f32>,
}

impl KernelBackend {
    /// Generates and compiles every kernel for `spec` in `mode` (fast: the engine's fast
    /// precision profile).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a shape the generators reject; [`Error::Kernel`] when a kernel fails
    /// to compile.
    pub fn new(spec: &ModelSpec, mode: WeightMode, fast: bool) -> Result<KernelBackend> {
        KernelBackend::with_cache(spec, mode, fast, CachePolicy::FromEnv)
    }

    /// [`KernelBackend::new`] with an explicit compile-cache policy (benchmarks time cold and
    /// cached compiles in a directory of their own).
    ///
    /// # Errors
    ///
    /// As [`KernelBackend::new`].
    pub fn with_cache(
        spec: &ModelSpec,
        mode: WeightMode,
        fast: bool,
        cache: CachePolicy,
    ) -> Result<KernelBackend> {
        let cfg = graphs_config(spec);
        cfg.validate()
            .map_err(|e| Error::Config(format!("model shape: {e}")))?;
        let options = KernelOptions {
            precision: if fast {
                Precision::Fast
            } else {
                Precision::Exact
            },
            cache,
            ..KernelOptions::default()
        };
        let gmode = match mode {
            WeightMode::Params => GWeightMode::Params,
            WeightMode::Packed | WeightMode::PackedRestage => GWeightMode::Packed,
        };
        let layers = spec.n_layers;
        let per_layer = match mode {
            WeightMode::Params | WeightMode::Packed => layers,
            WeightMode::PackedRestage => 1,
        };
        let mut cold = 0;
        let packed = mode != WeightMode::Params;
        let resident = mode == WeightMode::Packed;
        let mut unit = |generated: GeneratedKernel, weighted: bool| {
            let instances = if weighted { per_layer } else { 1 };
            let slots = if !packed {
                0
            } else if weighted {
                layers
            } else {
                1
            };
            Unit::compile(generated, instances, slots, resident, &options, &mut cold)
        };
        let attn_fwd = unit(dynamic::sdpa_fwd(&cfg, gmode), true)?;
        let wo_fwd = unit(dynamic::wo_fwd(&cfg, gmode), true)?;
        let ffn_fwd = unit(dynamic::ffn_fused(&cfg, gmode), true)?;
        let ffn_w2 = unit(dynamic::ffn_bwd_w2t(&cfg, gmode), true)?;
        let ffn_w13 = unit(dynamic::ffn_bwd_w13t(&cfg, gmode), true)?;
        let wo_bwd = unit(dynamic::wot_bwd(&cfg, gmode), true)?;
        let q_bwd = unit(dynamic::q_bwd(&cfg, gmode), true)?;
        let kv_bwd = unit(dynamic::kv_bwd(&cfg, gmode), true)?;
        let bwd1 = unit(dynamic::sdpa_bwd1(&cfg, gmode), false)?;
        let mut bwd2 = unit(dynamic::sdpa_bwd2(&cfg, gmode), false)?;
        let cls_fwd = unit(dynamic::classifier_fwd(&cfg, gmode), false)?;
        let cls_bwd = unit(dynamic::classifier_bwd(&cfg, gmode), false)?;
        let qk_norm_bwd = if spec.qk_norm {
            Some([
                unit(dynamic::qk_norm_bwd(&cfg, gmode, NormHeads::Query), true)?,
                unit(dynamic::qk_norm_bwd(&cfg, gmode, NormHeads::Key), true)?,
            ])
        } else {
            None
        };
        if !bwd2.packed && !bwd1.packed {
            for name in ["probs", "dp"] {
                let out = bwd1
                    .generated
                    .tap(name)
                    .expect("invariant: sdpaBwd1 has this tap")
                    .output;
                let input = bwd2
                    .generated
                    .inputs
                    .iter()
                    .position(|io| io.name == name)
                    .expect("invariant: sdpaBwd2 reads this input");
                let gen_name = bwd2.generated.name.clone();
                bwd2.kernels[0]
                    .bind_input_to(input, &bwd1.kernels[0], out)
                    .map_err(|source| Error::Kernel {
                        kernel: gen_name,
                        source,
                    })?;
            }
        }
        let (qd, s) = (spec.q_dim(), spec.seq);
        let sc = spec.n_heads * s * s;
        Ok(KernelBackend {
            spec: spec.clone(),
            mode,
            attn_fwd,
            wo_fwd,
            ffn_fwd,
            ffn_w2,
            ffn_w13,
            wo_bwd,
            q_bwd,
            kv_bwd,
            bwd1,
            bwd2,
            cls_fwd,
            cls_bwd,
            qk_norm_bwd,
            norm_dx: vec![0.0; if spec.qk_norm { qd * s } else { 0 }],
            cold,
            k_t: vec![0.0; qd * s],
            v_t: vec![0.0; qd * s],
            probs: vec![0.0; sc],
            dp: vec![0.0; sc],
            dk_full: vec![0.0; qd * s],
            dv_full: vec![0.0; qd * s],
            dx_tmp: vec![0.0; spec.dim * s],
        })
    }

    /// Kernels compiled cold (not served by the compile cache) while building this backend.
    pub fn cold_compiles(&self) -> usize {
        self.cold
    }

    /// Kernel objects in use (per-layer instances count separately).
    pub fn kernel_count(&self) -> usize {
        let norms = self.qk_norm_bwd.iter().flatten();
        self.units()
            .into_iter()
            .chain(norms)
            .map(|u| u.kernels.len())
            .sum()
    }

    /// Every unit, mutably: the eight with per-layer weights first (see `weighted_mut`), then
    /// the attention backward, the classifier and (Qwen3) the q/k-norm kernels.
    fn units_mut(&mut self) -> impl Iterator<Item = &mut Unit> {
        [
            &mut self.attn_fwd,
            &mut self.wo_fwd,
            &mut self.ffn_fwd,
            &mut self.ffn_w2,
            &mut self.ffn_w13,
            &mut self.wo_bwd,
            &mut self.q_bwd,
            &mut self.kv_bwd,
            &mut self.bwd1,
            &mut self.bwd2,
            &mut self.cls_fwd,
            &mut self.cls_bwd,
        ]
        .into_iter()
        .chain(self.qk_norm_bwd.iter_mut().flatten())
    }

    fn units(&self) -> [&Unit; 12] {
        [
            &self.attn_fwd,
            &self.wo_fwd,
            &self.ffn_fwd,
            &self.ffn_w2,
            &self.ffn_w13,
            &self.wo_bwd,
            &self.q_bwd,
            &self.kv_bwd,
            &self.bwd1,
            &self.bwd2,
            &self.cls_fwd,
            &self.cls_bwd,
        ]
    }
}

impl Backend for KernelBackend {
    fn name(&self) -> String {
        format!("kernels/{}", self.mode.name())
    }

    fn staging_time(&self) -> std::time::Duration {
        self.units().iter().map(|u| u.staged).sum()
    }

    fn profile_kernels(&mut self) -> bool {
        for unit in self.units_mut() {
            for kernel in &mut unit.kernels {
                kernel.profile_steps();
            }
        }
        true
    }

    fn kernel_profile(&self) -> Vec<KernelProfileRow> {
        let mut rows: Vec<KernelProfileRow> = Vec::new();
        let norms = self.qk_norm_bwd.iter().flatten();
        for unit in self.units().into_iter().chain(norms) {
            let first = rows.len();
            for kernel in &unit.kernels {
                let Some(times) = kernel.step_times() else {
                    continue;
                };
                let names = kernel.plan().stats().kernels;
                for (&step_kernel, &time) in names.iter().zip(times) {
                    match rows[first..]
                        .iter_mut()
                        .find(|row| row.step_kernel == step_kernel)
                    {
                        Some(row) => row.time += time,
                        None => rows.push(KernelProfileRow {
                            kernel: unit.generated.name.clone(),
                            step_kernel,
                            steps: names.iter().filter(|&&name| name == step_kernel).count(),
                            time,
                        }),
                    }
                }
            }
        }
        rows.sort_by_key(|row| std::cmp::Reverse(row.time));
        rows
    }

    fn time_weight_write(&mut self, reps: usize) -> Result<Option<Vec<std::time::Duration>>> {
        let unit = &mut self.ffn_fwd;
        let mut times = Vec::with_capacity(reps);
        if unit.packed {
            for _ in 0..reps {
                let t0 = std::time::Instant::now();
                unit.kernels[0]
                    .write_input_f32(0, &unit.staging[0])
                    .map_err(|e| unit.fail(e))?;
                times.push(t0.elapsed());
            }
        } else {
            let idx = unit
                .generated
                .weights
                .iter()
                .position(|w| w.name == "w1")
                .expect("invariant: ffnFused takes w1");
            let values: Vec<f32> = (0..self.spec.hidden * self.spec.dim)
                .map(|i| ((i % 251) as f32 - 125.0) * 1e-4)
                .collect();
            for _ in 0..reps {
                let t0 = std::time::Instant::now();
                unit.kernels[0]
                    .write_weight_f32(idx, &values)
                    .map_err(|e| unit.fail(e))?;
                times.push(t0.elapsed());
            }
        }
        Ok(Some(times))
    }

    fn classifier_fwd(
        &mut self,
        _embed: &[f32],
        xf: &[f32],
        logits: &mut [f32],
        _seq: usize,
    ) -> Result<()> {
        self.cls_fwd
            .call(0, 0, &[("x", xf)], &mut [("logits", logits)])
    }

    fn classifier_bwd(
        &mut self,
        _embed: &[f32],
        dlogits: &[f32],
        dx: &mut [f32],
        _seq: usize,
    ) -> Result<()> {
        self.cls_bwd
            .call(0, 0, &[("dlogits", dlogits)], &mut [("dx", dx)])
    }

    fn load_weights(&mut self, params: &Params) -> Result<()> {
        for (l, layer) in params.layers.iter().enumerate() {
            for unit in self.weighted_mut() {
                unit.load(l, &|name| weight(layer, name))?;
            }
            for unit in self.qk_norm_bwd.iter_mut().flatten() {
                unit.load(l, &|name| weight(layer, name))?;
            }
        }
        let embed = |_: &str| &params.embed[..];
        self.cls_fwd.load(0, &embed)?;
        self.cls_bwd.load(0, &embed)?;
        Ok(())
    }

    fn attn_fwd(
        &mut self,
        layer: usize,
        _x: &[f32],
        xnorm: &[f32],
        out: AttnOut<'_>,
    ) -> Result<()> {
        let (k, s) = self.slot(layer);
        let AttnOut {
            attn,
            q,
            k: kk,
            v,
            q_raw,
            k_raw,
        } = out;
        if self.spec.qk_norm {
            return self.attn_fwd.call(
                k,
                s,
                &[("xnorm", xnorm)],
                &mut [
                    ("attn", attn),
                    ("q_rope", q),
                    ("k_rope", kk),
                    ("v", v),
                    ("q_raw", q_raw),
                    ("k_raw", k_raw),
                ],
            );
        }
        self.attn_fwd.call(
            k,
            s,
            &[("xnorm", xnorm)],
            &mut [("attn", attn), ("q_rope", q), ("k_rope", kk), ("v", v)],
        )
    }

    fn wo_fwd(&mut self, layer: usize, attn: &[f32], o: &mut [f32]) -> Result<()> {
        let (k, s) = self.slot(layer);
        self.wo_fwd.call(k, s, &[("attn", attn)], &mut [("o", o)])
    }

    fn ffn_fwd(&mut self, layer: usize, x2norm: &[f32], x2: &[f32], out: FfnOut<'_>) -> Result<()> {
        let (k, s) = self.slot(layer);
        let FfnOut {
            x_next,
            h1,
            h3,
            gate,
        } = out;
        self.ffn_fwd.call(
            k,
            s,
            &[("x2norm", x2norm), ("x2", x2)],
            &mut [("x_next", x_next), ("h1", h1), ("h3", h3), ("gate", gate)],
        )
    }

    fn ffn_bwd_w2(&mut self, layer: usize, dffn: &[f32], dgate: &mut [f32]) -> Result<()> {
        let (k, s) = self.slot(layer);
        self.ffn_w2
            .call(k, s, &[("dffn", dffn)], &mut [("dsilu", dgate)])
    }

    fn ffn_bwd_w13(
        &mut self,
        layer: usize,
        dh1: &[f32],
        dh3: &[f32],
        dx: &mut [f32],
    ) -> Result<()> {
        let (k, s) = self.slot(layer);
        self.ffn_w13
            .call(k, s, &[("dh1", dh1), ("dh3", dh3)], &mut [("dx", dx)])
    }

    fn wo_bwd(&mut self, layer: usize, dout: &[f32], da: &mut [f32]) -> Result<()> {
        let (k, s) = self.slot(layer);
        self.wo_bwd.call(k, s, &[("dy", dout)], &mut [("da", da)])
    }

    fn attn_bwd(
        &mut self,
        _layer: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        da: &[f32],
        out: AttnGrads<'_>,
    ) -> Result<()> {
        let sp = &self.spec;
        let (h, kvh) = (sp.n_heads, sp.n_kv_heads);
        cpu::gqa_tile(&mut self.k_t, k, h, kvh, sp.head_dim);
        cpu::gqa_tile(&mut self.v_t, v, h, kvh, sp.head_dim);
        let chained = !self.bwd1.packed;
        if chained {
            // probs and dp stay on bwd1's output surfaces, which bwd2 reads in place.
            self.bwd1.call(
                0,
                0,
                &[("q", q), ("k", &self.k_t), ("v", &self.v_t), ("da", da)],
                &mut [("dv", &mut self.dv_full)],
            )?;
            self.bwd2.call(
                0,
                0,
                &[("q", q), ("k", &self.k_t)],
                &mut [("dq", out.dq), ("dk", &mut self.dk_full)],
            )?;
        } else {
            self.bwd1.call(
                0,
                0,
                &[("q", q), ("k", &self.k_t), ("v", &self.v_t), ("da", da)],
                &mut [
                    ("dv", &mut self.dv_full),
                    ("probs", &mut self.probs),
                    ("dp", &mut self.dp),
                ],
            )?;
            self.bwd2.call(
                0,
                0,
                &[
                    ("probs", &self.probs),
                    ("dp", &self.dp),
                    ("q", q),
                    ("k", &self.k_t),
                ],
                &mut [("dq", out.dq), ("dk", &mut self.dk_full)],
            )?;
        }
        cpu::gqa_reduce(out.dk, &self.dk_full, h, kvh);
        cpu::gqa_reduce(out.dv, &self.dv_full, h, kvh);
        Ok(())
    }

    fn qk_norm_bwd(
        &mut self,
        layer: usize,
        heads: NormHeads,
        raw: &[f32],
        d: &mut [f32],
    ) -> Result<()> {
        let (k, s) = self.slot(layer);
        let Some(units) = self.qk_norm_bwd.as_mut() else {
            return Err(Error::Config(format!(
                "model {} has no q/k norm, so there is no q/k-norm backward",
                self.spec.name
            )));
        };
        let unit = match heads {
            NormHeads::Query => &mut units[0],
            NormHeads::Key => &mut units[1],
        };
        let dx = &mut self.norm_dx[..d.len()];
        unit.call(k, s, &[("dy", &*d), ("x", raw)], &mut [("dx", dx)])?;
        d.copy_from_slice(dx);
        Ok(())
    }

    fn qkv_bwd(
        &mut self,
        layer: usize,
        dq: &[f32],
        dk: &[f32],
        dv: &[f32],
        dx: &mut [f32],
    ) -> Result<()> {
        let (k, s) = self.slot(layer);
        self.q_bwd.call(k, s, &[("dq", dq)], &mut [("dx", dx)])?;
        self.kv_bwd.call(
            k,
            s,
            &[("dk", dk), ("dv", dv)],
            &mut [("dx", &mut self.dx_tmp)],
        )?;
        for (a, b) in dx.iter_mut().zip(&self.dx_tmp) {
            *a += b;
        }
        Ok(())
    }
}

impl KernelBackend {
    /// The units holding per-layer weights: the first eight of [`KernelBackend::units_mut`].
    fn weighted_mut(&mut self) -> impl Iterator<Item = &mut Unit> {
        self.units_mut().take(8)
    }

    /// (kernel instance, staging slot) of `layer`: per-layer kernels with function parameters;
    /// the shared kernel and the layer's staging buffer when packed.
    fn slot(&self, layer: usize) -> (usize, usize) {
        match self.mode {
            WeightMode::Params | WeightMode::Packed => (layer, layer),
            WeightMode::PackedRestage => (0, layer),
        }
    }
}
