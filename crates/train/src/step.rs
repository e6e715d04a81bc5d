//! One micro-step: forward through the backend's kernels, cross-entropy over the vocabulary on
//! the CPU, backward with every dx product through the backend and every dW product on a CPU
//! thread that runs while the backend evaluates the next kernels (training_dynamic's
//! `dispatch_group_async` overlap, in a scoped thread fed by a channel).
//!
//! The dW jobs run one at a time in the order they were queued, so the gradient bits do not
//! depend on timing.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::backend::{AttnGrads, AttnOut, Backend, FfnOut, NormHeads, residual_scale};
use crate::cpu;
use crate::error::Result;
use crate::model::{ModelSpec, Params};
use crate::timing::{Breakdown, timed};

/// Activations one layer saves for its backward pass.
#[derive(Debug, Clone)]
struct LayerActs {
    x_in: Vec<f32>,
    xnorm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    x2: Vec<f32>,
    x2norm: Vec<f32>,
    h1: Vec<f32>,
    h3: Vec<f32>,
    gate: Vec<f32>,
    /// Qwen3: q and k before the q/k norm (empty without it).
    q_raw: Vec<f32>,
    k_raw: Vec<f32>,
}

/// Buffers reused across micro-steps (allocated once per run).
#[derive(Debug, Clone)]
pub struct Workspace {
    spec: ModelSpec,
    acts: Vec<LayerActs>,
    x: Vec<f32>,
    o: Vec<f32>,
    xf: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    dy: Vec<f32>,
    dffn: Vec<f32>,
    dgate: Vec<f32>,
    dh1: Vec<f32>,
    dh3: Vec<f32>,
    dx: Vec<f32>,
    dx2: Vec<f32>,
    dos: Vec<f32>,
    da: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// Copies of gradients handed to the dW thread, returned for reuse (no allocation once
    /// warm).
    spare: Vec<Vec<f32>>,
    /// dW products in the fast profile (bf16 operands on AMX hosts).
    fast_dw: bool,
    /// Time per category since the last [`Workspace::take_times`].
    times: Breakdown,
}

impl Workspace {
    /// Buffers for `spec`.
    pub fn new(spec: &ModelSpec) -> Workspace {
        let (d, qd, kvd, h, s, v) = (
            spec.dim,
            spec.q_dim(),
            spec.kv_dim(),
            spec.hidden,
            spec.seq,
            spec.vocab,
        );
        let layer = LayerActs {
            x_in: vec![0.0; d * s],
            xnorm: vec![0.0; d * s],
            q: vec![0.0; qd * s],
            k: vec![0.0; kvd * s],
            v: vec![0.0; kvd * s],
            attn: vec![0.0; qd * s],
            x2: vec![0.0; d * s],
            x2norm: vec![0.0; d * s],
            h1: vec![0.0; h * s],
            h3: vec![0.0; h * s],
            gate: vec![0.0; h * s],
            q_raw: vec![0.0; if spec.qk_norm { qd * s } else { 0 }],
            k_raw: vec![0.0; if spec.qk_norm { kvd * s } else { 0 }],
        };
        Workspace {
            spec: spec.clone(),
            acts: vec![layer; spec.n_layers],
            x: vec![0.0; d * s],
            o: vec![0.0; d * s],
            xf: vec![0.0; d * s],
            logits: vec![0.0; v * s],
            dlogits: vec![0.0; v * s],
            dy: vec![0.0; d * s],
            dffn: vec![0.0; d * s],
            dgate: vec![0.0; h * s],
            dh1: vec![0.0; h * s],
            dh3: vec![0.0; h * s],
            dx: vec![0.0; d * s],
            dx2: vec![0.0; d * s],
            dos: vec![0.0; d * s],
            da: vec![0.0; qd * s],
            dq: vec![0.0; qd * s],
            dk: vec![0.0; kvd * s],
            dv: vec![0.0; kvd * s],
            spare: Vec::new(),
            fast_dw: false,
            times: Breakdown::default(),
        }
    }

    /// Logits of the last forward pass, `[vocab, S]`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Runs the dW products in linalg's fast profile (AMX bf16 tiles with f32 accumulation
    /// where the host has them; otherwise identical to exact f32).
    pub fn set_fast_dw(&mut self, fast: bool) {
        self.fast_dw = fast;
    }

    /// The time breakdown accumulated since the last call, and resets it.
    pub fn take_times(&mut self) -> Breakdown {
        std::mem::take(&mut self.times)
    }

    /// Adds time measured outside the step (the optimizer, weight writes) to the breakdown.
    pub fn times_mut(&mut self) -> &mut Breakdown {
        &mut self.times
    }
}

/// Which bucket a backend call's time goes to.
#[derive(Clone, Copy)]
enum Bucket {
    Kernels,
    Loss,
}

/// Runs one backend call, adding its time to `bucket` and the backend's weight restaging
/// inside it to `weights`.
fn kcall(
    backend: &mut dyn Backend,
    times: &mut Breakdown,
    bucket: Bucket,
    f: impl FnOnce(&mut dyn Backend) -> Result<()>,
) -> Result<()> {
    let staged = backend.staging_time();
    let t0 = Instant::now();
    let result = f(&mut *backend);
    let elapsed = t0.elapsed();
    let restage = backend.staging_time().saturating_sub(staged);
    times.weights += restage;
    let spent = elapsed.saturating_sub(restage);
    match bucket {
        Bucket::Kernels => times.kernels += spent,
        Bucket::Loss => times.loss += spent,
    }
    result
}

/// Runs the forward pass (every layer, final norm, classifier) and leaves the logits in the
/// workspace; returns the final hidden state's RMSNorm input in `ws.x`.
///
/// # Errors
///
/// A backend call failed.
pub fn forward(
    backend: &mut dyn Backend,
    params: &Params,
    tokens: &[u16],
    ws: &mut Workspace,
) -> Result<()> {
    let t0 = Instant::now();
    let spec = ws.spec.clone();
    let (d, s) = (spec.dim, spec.seq);
    assert_eq!(tokens.len(), s, "invariant: a window is seq tokens long");
    let alpha = residual_scale(&spec);
    let eps = spec.norm_eps();
    let times = &mut ws.times;
    cpu::embed(&mut ws.x, &params.embed, tokens, d);
    for (l, layer) in params.layers.iter().enumerate() {
        let a = &mut ws.acts[l];
        a.x_in.copy_from_slice(&ws.x);
        cpu::rmsnorm(&mut a.xnorm, &a.x_in, &layer.rms_att, s, eps);
        kcall(backend, times, Bucket::Kernels, |b| {
            b.attn_fwd(
                l,
                &a.x_in,
                &a.xnorm,
                AttnOut {
                    attn: &mut a.attn,
                    q: &mut a.q,
                    k: &mut a.k,
                    v: &mut a.v,
                    q_raw: &mut a.q_raw,
                    k_raw: &mut a.k_raw,
                },
            )
        })?;
        kcall(backend, times, Bucket::Kernels, |b| {
            b.wo_fwd(l, &a.attn, &mut ws.o)
        })?;
        for i in 0..d * s {
            a.x2[i] = a.x_in[i] + alpha * ws.o[i];
        }
        cpu::rmsnorm(&mut a.x2norm, &a.x2, &layer.rms_ffn, s, eps);
        kcall(backend, times, Bucket::Kernels, |b| {
            b.ffn_fwd(
                l,
                &a.x2norm,
                &a.x2,
                FfnOut {
                    x_next: &mut ws.x,
                    h1: &mut a.h1,
                    h3: &mut a.h3,
                    gate: &mut a.gate,
                },
            )
        })?;
    }
    cpu::rmsnorm(&mut ws.xf, &ws.x, &params.rms_final, s, eps);
    kcall(backend, times, Bucket::Loss, |b| {
        b.classifier_fwd(&params.embed, &ws.xf, &mut ws.logits, s)
    })?;
    times.total += t0.elapsed();
    Ok(())
}

/// Forward only: the mean cross-entropy of `targets` (for evaluation and finite differences).
///
/// # Errors
///
/// A backend call failed.
pub fn loss(
    backend: &mut dyn Backend,
    params: &Params,
    inputs: &[u16],
    targets: &[u16],
    ws: &mut Workspace,
) -> Result<f32> {
    forward(backend, params, inputs, ws)?;
    let vocab = ws.spec.vocab;
    Ok(cpu::cross_entropy(
        &mut ws.dlogits,
        &ws.logits,
        targets,
        vocab,
        1.0,
    ))
}

/// A dW product queued for the dW thread: `dst += a · bᵀ` over the sequence. `a` is the
/// gradient (copied when the training thread overwrites it before the job could run, borrowed
/// when it stays put for the whole backward pass); `b` is a saved activation, always borrowed.
struct DwJob<'a> {
    dst: GradSlot,
    a: Operand<'a>,
    b: &'a [f32],
    m: usize,
    n: usize,
}

enum Operand<'a> {
    Borrowed(&'a [f32]),
    Owned(Vec<f32>),
}

impl Operand<'_> {
    fn as_slice(&self) -> &[f32] {
        match self {
            Operand::Borrowed(s) => s,
            Operand::Owned(v) => v,
        }
    }
}

#[derive(Clone, Copy)]
enum GradSlot {
    Embed,
    Layer(usize, Mat),
}

#[derive(Clone, Copy)]
enum Mat {
    Wq,
    Wk,
    Wv,
    Wo,
    W1,
    W2,
    W3,
}

/// The matrices the dW thread owns during a micro-step.
struct MatGrads<'a> {
    embed: &'a mut Vec<f32>,
    layers: Vec<[&'a mut Vec<f32>; 7]>,
}

impl MatGrads<'_> {
    fn run(&mut self, job: &DwJob<'_>, seq: usize, fast: bool) {
        let dst: &mut Vec<f32> = match job.dst {
            GradSlot::Embed => self.embed,
            GradSlot::Layer(l, m) => self.layers[l][m as usize],
        };
        cpu::matmul_nt_with(
            fast,
            dst,
            job.a.as_slice(),
            job.b,
            (job.m, job.n, seq),
            true,
        );
    }
}

/// Forward and backward for one window: adds `loss_scale ×` the gradient of the mean
/// cross-entropy into `grads` and returns the (unscaled) loss.
///
/// # Errors
///
/// A backend call failed.
pub fn forward_backward(
    backend: &mut dyn Backend,
    params: &Params,
    grads: &mut Params,
    inputs: &[u16],
    targets: &[u16],
    loss_scale: f32,
    ws: &mut Workspace,
) -> Result<f32> {
    forward(backend, params, inputs, ws)?;
    let t0 = Instant::now();
    let spec = ws.spec.clone();
    let (d, qd, kvd, h, s, vocab) = (
        spec.dim,
        spec.q_dim(),
        spec.kv_dim(),
        spec.hidden,
        spec.seq,
        spec.vocab,
    );
    let alpha = residual_scale(&spec);
    let eps = spec.norm_eps();
    let loss = timed(&mut ws.times.loss, || {
        cpu::cross_entropy(&mut ws.dlogits, &ws.logits, targets, vocab, loss_scale)
    });

    // Split the gradient into what the dW thread owns (matrices, embedding) and what this
    // thread writes (norm gains).
    let Params {
        embed: g_embed,
        rms_final: g_rms_final,
        layers: g_layers,
    } = grads;
    let mut mats = MatGrads {
        embed: g_embed,
        layers: Vec::with_capacity(spec.n_layers),
    };
    let mut norms = Vec::with_capacity(spec.n_layers);
    let mut qk_gains = Vec::with_capacity(spec.n_layers);
    for gl in g_layers.iter_mut() {
        mats.layers.push([
            &mut gl.wq, &mut gl.wk, &mut gl.wv, &mut gl.wo, &mut gl.w1, &mut gl.w2, &mut gl.w3,
        ]);
        norms.push((&mut gl.rms_att, &mut gl.rms_ffn));
        qk_gains.push((&mut gl.q_norm, &mut gl.k_norm));
    }

    // Split the workspace: the saved activations, the logits' gradient and the final norm's
    // output stay put during the backward pass, so the dW thread borrows them; the per-layer
    // gradients are overwritten layer after layer, so their jobs carry copies (recycled).
    let Workspace {
        acts,
        x,
        xf,
        dlogits,
        dy,
        dffn,
        dgate,
        dh1,
        dh3,
        dx,
        dx2,
        dos,
        da,
        dq,
        dk,
        dv,
        spare,
        fast_dw,
        times,
        ..
    } = ws;
    let (acts, xf, dlogits, fast) = (&*acts, &*xf, &*dlogits, *fast_dw);
    let (tx, rx) = mpsc::channel::<DwJob<'_>>();
    let (back_tx, back_rx) = mpsc::channel::<Vec<f32>>();
    let mut dw_wait = Duration::ZERO;
    let result = std::thread::scope(|scope| -> Result<Duration> {
        let worker = scope.spawn(move || {
            let mut busy = Duration::ZERO;
            for job in rx {
                let t = Instant::now();
                mats.run(&job, s, fast);
                busy += t.elapsed();
                if let Operand::Owned(buf) = job.a {
                    // The training thread may have finished: then the buffer is dropped.
                    let _ = back_tx.send(buf);
                }
            }
            busy
        });
        // The sender lives in this closure: returning (also early, on an error) closes the
        // channel, so the dW thread always ends.
        let result = (|| -> Result<()> {
            let tx = tx;
            let send = |dst, a, b, m, n| {
                tx.send(DwJob { dst, a, b, m, n })
                    .expect("invariant: the dW thread lives until the channel closes");
            };
            let copy = |src: &[f32], spare: &mut Vec<Vec<f32>>| -> Operand<'static> {
                while let Ok(buf) = back_rx.try_recv() {
                    spare.push(buf);
                }
                let mut buf = match spare.iter().position(|b| b.capacity() >= src.len()) {
                    Some(i) => spare.swap_remove(i),
                    None => Vec::with_capacity(src.len()),
                };
                buf.clear();
                buf.extend_from_slice(src);
                Operand::Owned(buf)
            };

            // Classifier: dy = Eᵀ dlogits; dE += dlogits · xfᵀ.
            kcall(backend, times, Bucket::Loss, |b| {
                b.classifier_bwd(&params.embed, dlogits, dx, s)
            })?;
            send(GradSlot::Embed, Operand::Borrowed(dlogits), xf, vocab, d);
            cpu::rmsnorm_bwd(dy, g_rms_final, dx, x, &params.rms_final, s, eps);

            for l in (0..spec.n_layers).rev() {
                let a = &acts[l];
                let w = &params.layers[l];
                let (g_att, g_ffn) = &mut norms[l];
                for i in 0..d * s {
                    dffn[i] = alpha * dy[i];
                }
                kcall(backend, times, Bucket::Kernels, |b| {
                    b.ffn_bwd_w2(l, dffn, dgate)
                })?;
                let job = copy(dffn, spare);
                send(GradSlot::Layer(l, Mat::W2), job, &a.gate, d, h);
                cpu::swiglu_bwd(dh1, dh3, dgate, &a.h1, &a.h3);
                kcall(backend, times, Bucket::Kernels, |b| {
                    b.ffn_bwd_w13(l, dh1, dh3, dx)
                })?;
                let job = copy(dh1, spare);
                send(GradSlot::Layer(l, Mat::W1), job, &a.x2norm, h, d);
                let job = copy(dh3, spare);
                send(GradSlot::Layer(l, Mat::W3), job, &a.x2norm, h, d);
                cpu::rmsnorm_bwd(dx2, g_ffn, dx, &a.x2, &w.rms_ffn, s, eps);
                for i in 0..d * s {
                    dx2[i] += dy[i];
                    dos[i] = alpha * dx2[i];
                }
                kcall(backend, times, Bucket::Kernels, |b| b.wo_bwd(l, dos, da))?;
                let job = copy(dos, spare);
                send(GradSlot::Layer(l, Mat::Wo), job, &a.attn, d, qd);
                kcall(backend, times, Bucket::Kernels, |b| {
                    b.attn_bwd(
                        l,
                        &a.q,
                        &a.k,
                        &a.v,
                        da,
                        AttnGrads {
                            dq: &mut *dq,
                            dk: &mut *dk,
                            dv: &mut *dv,
                        },
                    )
                })?;
                cpu::rope(dq, spec.head_dim, s, spec.rope_theta(), true);
                cpu::rope(dk, spec.head_dim, s, spec.rope_theta(), true);
                if spec.qk_norm {
                    // Qwen3: gain gradients on the CPU, dx of the norm through the backend.
                    let (g_qn, g_kn) = &mut qk_gains[l];
                    let eps = cpu::QK_NORM_EPS;
                    cpu::head_rmsnorm_gain_bwd(g_qn, dq, &a.q_raw, s, eps);
                    cpu::head_rmsnorm_gain_bwd(g_kn, dk, &a.k_raw, s, eps);
                    kcall(backend, times, Bucket::Kernels, |b| {
                        b.qk_norm_bwd(l, NormHeads::Query, &a.q_raw, &mut *dq)
                    })?;
                    kcall(backend, times, Bucket::Kernels, |b| {
                        b.qk_norm_bwd(l, NormHeads::Key, &a.k_raw, &mut *dk)
                    })?;
                }
                let job = copy(dq, spare);
                send(GradSlot::Layer(l, Mat::Wq), job, &a.xnorm, qd, d);
                let job = copy(dk, spare);
                send(GradSlot::Layer(l, Mat::Wk), job, &a.xnorm, kvd, d);
                let job = copy(dv, spare);
                send(GradSlot::Layer(l, Mat::Wv), job, &a.xnorm, kvd, d);
                kcall(backend, times, Bucket::Kernels, |b| {
                    b.qkv_bwd(l, dq, dk, dv, dx)
                })?;
                cpu::rmsnorm_bwd(dy, g_att, dx, &a.x_in, &w.rms_att, s, eps);
                for i in 0..d * s {
                    dy[i] += dx2[i];
                }
            }
            Ok(())
        })();
        let waited = Instant::now();
        let busy = worker
            .join()
            .expect("invariant: the dW thread does not panic");
        dw_wait = waited.elapsed();
        result.map(|()| busy)
    });
    while let Ok(buf) = back_rx.try_recv() {
        spare.push(buf);
    }
    times.dw_wait += dw_wait;
    times.dw_busy += result?;
    cpu::embed_bwd(&mut grads.embed, dy, inputs, d);
    times.total += t0.elapsed();
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ReferenceBackend;
    use crate::rng::Rng;

    fn micro_spec() -> ModelSpec {
        ModelSpec {
            name: "micro".into(),
            dim: 16,
            hidden: 24,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
            seq: 6,
            vocab: 11,
            qk_norm: false,
        }
    }

    /// Qwen3's head structure in miniature: q/k norm, q_dim 24 ≠ dim 12, 2 kv heads for 4
    /// query heads, head_dim 6 ≠ dim / heads.
    fn qwen3_micro_spec() -> ModelSpec {
        ModelSpec {
            name: "qwen3-micro".into(),
            dim: 12,
            head_dim: 6,
            qk_norm: true,
            ..micro_spec()
        }
    }

    #[test]
    fn reference_gradient_matches_finite_differences_per_tensor() {
        check_reference_gradients(&micro_spec());
    }

    #[test]
    fn reference_gradient_with_qk_norm_matches_finite_differences_per_tensor() {
        let spec = qwen3_micro_spec();
        assert!(spec.q_dim() != spec.dim && spec.n_kv_heads * 2 == spec.n_heads);
        assert!(spec.head_dim != spec.dim / spec.n_heads);
        let names: Vec<String> = Params::zeros(&spec)
            .tensors(&spec)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert!(names.contains(&"layers.1.attention.k_norm.weight".to_string()));
        check_reference_gradients(&spec);
    }

    /// Perturbs one tensor along a random direction and compares the central difference of the
    /// loss with the analytic directional derivative.
    fn check_reference_gradients(spec: &ModelSpec) {
        let spec = spec.clone();
        let mut params = Params::init(&spec, 3);
        // larger weights than the init so every path matters
        let mut rng = Rng::new(9);
        for (t, _) in params.tensors_mut() {
            for x in t.iter_mut() {
                *x += (rng.normal() * 0.3) as f32;
            }
        }
        let (seq, vocab) = (spec.seq, spec.vocab);
        let inputs: Vec<u16> = (0..seq).map(|i| (i * 7 % vocab) as u16).collect();
        let targets: Vec<u16> = (0..seq).map(|i| ((i * 5 + 3) % vocab) as u16).collect();
        let mut backend = ReferenceBackend::new(&spec);
        backend.load_weights(&params).expect("weights");
        let mut ws = Workspace::new(&spec);
        let mut grads = Params::zeros(&spec);
        let scale = 8.0;
        let l0 = forward_backward(
            &mut backend,
            &params,
            &mut grads,
            &inputs,
            &targets,
            scale,
            &mut ws,
        )
        .expect("step");
        assert!(l0.is_finite() && l0 > 0.0);
        let n_tensors = params.tensors(&spec).len();
        for ti in 0..n_tensors {
            let dir: Vec<f32> = {
                let len = params.tensors(&spec)[ti].2.len();
                (0..len).map(|_| rng.normal() as f32).collect()
            };
            let analytic: f64 = grads.tensors(&spec)[ti]
                .2
                .iter()
                .zip(&dir)
                .map(|(g, d)| f64::from(*g) * f64::from(*d))
                .sum::<f64>()
                / f64::from(scale);
            let h = 1e-3f32;
            let mut eval = |sign: f32| {
                let mut p = params.clone();
                for (x, d) in p.tensors_mut()[ti].0.iter_mut().zip(&dir) {
                    *x += sign * h * d;
                }
                let mut b = ReferenceBackend::new(&spec);
                b.load_weights(&p).expect("weights");
                f64::from(loss(&mut b, &p, &inputs, &targets, &mut ws).expect("loss"))
            };
            let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * f64::from(h));
            let name = &params.tensors(&spec)[ti].0;
            assert!(
                (numeric - analytic).abs() <= 2e-2 * numeric.abs().max(analytic.abs()) + 2e-3,
                "{name}: finite difference {numeric} vs analytic {analytic}"
            );
        }
    }
}
