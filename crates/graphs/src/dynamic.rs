//! The training kernels of maderix/ANE's `training/training_dynamic/` (compiled once, weights
//! passed at run time), in both [`WeightMode`]s, plus the RMSNorm, classifier and q/k-norm
//! kernels a full training step needs. The crate documentation lists what each computes.

use crate::build::{self, Dir, KernelBuilder, Src, Storage};
use crate::config::{ModelConfig, WeightMode};
use crate::kernel::{GeneratedKernel, PackAxis};
use milbridge_mil::builder::Var;
use milbridge_mil::ir::DType;

fn storage(mode: WeightMode, has_weights: bool, n_acts: usize) -> Storage {
    match mode {
        WeightMode::Params => Storage::Params,
        WeightMode::Packed if has_weights => Storage::Packed(PackAxis::Spatial),
        WeightMode::Packed if n_acts == 1 => Storage::Params,
        WeightMode::Packed => Storage::Packed(PackAxis::Channel),
    }
}

/// The generic dynamic matmul (`gen_dyn_matmul_mil`): `y = W x` for a model matrix
/// `W [oc][ic]` called `w`, activations `x [ic][seq]`, output `y [oc][seq]`. Packed: input
/// `[1, ic, 1, seq + oc]` holding `x` then `Wᵀ` (mil-spec 8.5).
pub fn dyn_matmul(ic: usize, oc: usize, seq: usize, mode: WeightMode) -> GeneratedKernel {
    assert!(
        ic > 0 && oc > 0 && seq > 0,
        "generator precondition: dyn_matmul sizes must be positive"
    );
    let srcs = [
        Src::Act {
            name: "x",
            channels: ic,
        },
        Src::Weight {
            name: "w",
            rows: oc,
            cols: ic,
            dir: Dir::Forward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("dynMatmul", storage(mode, true, 1), seq, &srcs);
    let y = kb.linear(v[0], v[1], "y");
    kb.finish(&[("y", y)])
}

/// `sdpaFwd`: the QKV projections, (Qwen3: per-head q/k RMSNorm,) RoPE, grouped-query tiling,
/// causal softmax attention. No `Wo` (that is [`wo_fwd`]).
pub fn sdpa_fwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, qd, kvd, hd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let mut srcs = vec![
        Src::Act {
            name: "xnorm",
            channels: dim,
        },
        Src::Weight {
            name: "wq",
            rows: qd,
            cols: dim,
            dir: Dir::Forward,
        },
        Src::Weight {
            name: "wk",
            rows: kvd,
            cols: dim,
            dir: Dir::Forward,
        },
        Src::Weight {
            name: "wv",
            rows: kvd,
            cols: dim,
            dir: Dir::Forward,
        },
    ];
    if cfg.qk_norm {
        srcs.push(Src::Vector {
            name: "q_norm",
            len: hd,
            shape: vec![1, 1, 1, hd],
        });
        srcs.push(Src::Vector {
            name: "k_norm",
            len: hd,
            shape: vec![1, 1, 1, hd],
        });
    }
    let (mut kb, v) = KernelBuilder::new("sdpaFwd", storage(mode, true, 1), cfg.seq, &srcs);
    let xn = v[0];
    let qk_norm = cfg.qk_norm.then(|| (v[4], v[5]));
    let core = build::attention_core(&mut kb, cfg, xn, (v[1], v[2], v[3]), qk_norm);
    let (attn, q_rope_flat, k_rope_flat, vf) = (core.attn, core.q_rope, core.k_rope, core.v);
    let mut taps = vec![
        ("attn", attn),
        ("q_rope", q_rope_flat),
        ("k_rope", k_rope_flat),
        ("v", vf),
    ];
    if mode == WeightMode::Packed {
        taps.push(("xnorm", xn));
    }
    if cfg.qk_norm {
        taps.push(("q_raw", core.q_raw));
        taps.push(("k_raw", core.k_raw));
    }
    kb.finish(&taps)
}

/// `woFwd`: the attention output projection `o = Wo · attn`.
pub fn wo_fwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [
        Src::Act {
            name: "attn",
            channels: cfg.q_dim(),
        },
        Src::Weight {
            name: "wo",
            rows: cfg.dim,
            cols: cfg.q_dim(),
            dir: Dir::Forward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("woFwd", storage(mode, true, 1), cfg.seq, &srcs);
    let o = kb.linear(v[0], v[1], "o");
    kb.finish(&[("o", o)])
}

/// `ffnFused`: SwiGLU FFN with its residual, `x_next = x2 + residual_scale · W2 (silu(W1 x2norm)
/// ⊙ W3 x2norm)`. Packed mode stages `W2` in its natural `[dim][hidden]` orientation and
/// transposes it inside the program, as maderix/ANE does.
pub fn ffn_fused(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, hidden) = (cfg.dim, cfg.hidden);
    let srcs = [
        Src::Act {
            name: "x2norm",
            channels: dim,
        },
        Src::Act {
            name: "x2",
            channels: dim,
        },
        Src::Weight {
            name: "w1",
            rows: hidden,
            cols: dim,
            dir: Dir::Forward,
        },
        Src::Weight {
            name: "w3",
            rows: hidden,
            cols: dim,
            dir: Dir::Forward,
        },
        Src::Weight {
            name: "w2",
            rows: dim,
            cols: hidden,
            dir: Dir::ForwardRowsOut,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("ffnFused", storage(mode, true, 2), cfg.seq, &srcs);
    let h1 = kb.linear(v[0], v[2], "h1");
    let h3 = kb.linear(v[0], v[3], "h3");
    let b = &mut kb.b;
    let sig = b.named("sig").sigmoid(h1);
    let silu = b.named("silu").mul(h1, sig);
    let gate = b.named("gate").mul(silu, h3);
    let ffn = kb.linear(gate, v[4], "ffn_out");
    let b = &mut kb.b;
    let scaled = if cfg.residual_scale == 1.0 {
        ffn
    } else {
        let alpha = b
            .named("res_alpha")
            .const_scalar(DType::Fp16, cfg.residual_scale);
        b.named("ffn_sc").mul(ffn, alpha)
    };
    let x_next = b.named("x_next").add(v[1], scaled);
    kb.finish(&[("x_next", x_next), ("h1", h1), ("h3", h3), ("gate", gate)])
}

/// `ffnBwdW2t`: `dsilu = W2ᵀ · dffn` (the gradient reaching the gate).
pub fn ffn_bwd_w2t(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [
        Src::Act {
            name: "dffn",
            channels: cfg.dim,
        },
        Src::Weight {
            name: "w2",
            rows: cfg.dim,
            cols: cfg.hidden,
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("ffnBwdW2t", storage(mode, true, 1), cfg.seq, &srcs);
    let dsilu = kb.linear(v[0], v[1], "dsilu");
    kb.finish(&[("dsilu", dsilu)])
}

/// `ffnBwdW13t`: `dx = W1ᵀ · dh1 + W3ᵀ · dh3`.
pub fn ffn_bwd_w13t(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, hidden) = (cfg.dim, cfg.hidden);
    let srcs = [
        Src::Act {
            name: "dh1",
            channels: hidden,
        },
        Src::Act {
            name: "dh3",
            channels: hidden,
        },
        Src::Weight {
            name: "w1",
            rows: hidden,
            cols: dim,
            dir: Dir::Backward,
        },
        Src::Weight {
            name: "w3",
            rows: hidden,
            cols: dim,
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("ffnBwdW13t", storage(mode, true, 2), cfg.seq, &srcs);
    let dx1 = kb.linear(v[0], v[2], "dx1");
    let dx3 = kb.linear(v[1], v[3], "dx3");
    let dx = kb.b.named("dx").add(dx1, dx3);
    kb.finish(&[("dx", dx)])
}

/// `wotBwd`: `da = Woᵀ · dy` (the host scales `dy` by the residual scale first).
pub fn wot_bwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [
        Src::Act {
            name: "dy",
            channels: cfg.dim,
        },
        Src::Weight {
            name: "wo",
            rows: cfg.dim,
            cols: cfg.q_dim(),
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("wotBwd", storage(mode, true, 1), cfg.seq, &srcs);
    let da = kb.linear(v[0], v[1], "da");
    kb.finish(&[("da", da)])
}

/// `qBwd`: `dx = Wqᵀ · dq`.
pub fn q_bwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [
        Src::Act {
            name: "dq",
            channels: cfg.q_dim(),
        },
        Src::Weight {
            name: "wq",
            rows: cfg.q_dim(),
            cols: cfg.dim,
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("qBwd", storage(mode, true, 1), cfg.seq, &srcs);
    let dx = kb.linear(v[0], v[1], "dx");
    kb.finish(&[("dx", dx)])
}

/// `kvBwd`: `dx = Wkᵀ · dk + Wvᵀ · dv` (at `n_kv_heads`: the host reduces the tiled gradients).
pub fn kv_bwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, kvd) = (cfg.dim, cfg.kv_dim());
    let srcs = [
        Src::Act {
            name: "dk",
            channels: kvd,
        },
        Src::Act {
            name: "dv",
            channels: kvd,
        },
        Src::Weight {
            name: "wk",
            rows: kvd,
            cols: dim,
            dir: Dir::Backward,
        },
        Src::Weight {
            name: "wv",
            rows: kvd,
            cols: dim,
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("kvBwd", storage(mode, true, 2), cfg.seq, &srcs);
    let dxk = kb.linear(v[0], v[2], "dxk");
    let dxv = kb.linear(v[1], v[3], "dxv");
    let dx = kb.b.named("dx").add(dxk, dxv);
    kb.finish(&[("dx", dx)])
}

/// `sdpaBwd1`: recomputes the attention probabilities and returns `dv = Pᵀ · da`,
/// the probabilities and `dp = da · Vᵀ`, all at `n_heads` (K and V tiled by the host).
pub fn sdpa_bwd1(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let qd = cfg.q_dim();
    let srcs = [
        Src::Act {
            name: "q",
            channels: qd,
        },
        Src::Act {
            name: "k",
            channels: qd,
        },
        Src::Act {
            name: "v",
            channels: qd,
        },
        Src::Act {
            name: "da",
            channels: qd,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("sdpaBwd1", storage(mode, false, 4), cfg.seq, &srcs);
    let (dv, probs, dp) = sdpa_bwd1_core(&mut kb, cfg, v[0], v[1], v[2], v[3]);
    kb.finish(&[("dv", dv), ("probs", probs), ("dp", dp)])
}

pub(crate) fn sdpa_bwd1_core(
    kb: &mut KernelBuilder,
    cfg: &ModelConfig,
    q: Var,
    k: Var,
    v: Var,
    da: Var,
) -> (Var, Var, Var) {
    let (h, hd) = (cfg.n_heads, cfg.head_dim);
    let mask = kb.mask();
    let b = &mut kb.b;
    let qh = build::to_heads(b, q, h, hd, "qh");
    let kh = build::to_heads(b, k, h, hd, "kh");
    let vh = build::to_heads(b, v, h, hd, "vh");
    let dah = build::to_heads(b, da, h, hd, "dah");
    let p4 = build::attention_probs(b, qh, kh, mask, cfg.attn_scale(), "p4");
    let dv4 = b.named("dv4").matmul(p4, dah, true, false);
    let dp4 = b.named("dp4").matmul(dah, vh, false, true);
    let dv = build::from_heads(b, dv4, "dv");
    let probs = build::flatten_scores(b, p4, "probs");
    let dp = build::flatten_scores(b, dp4, "dp");
    (dv, probs, dp)
}

/// `sdpaBwd2`: softmax backward and `dq = dS · K`, `dk = dSᵀ · Q` at `n_heads`, with
/// `dS = P ⊙ (dP − Σ P ⊙ dP) / sqrt(head_dim)`.
pub fn sdpa_bwd2(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let (h, hd, seq, qd, sc) = (
        cfg.n_heads,
        cfg.head_dim,
        cfg.seq,
        cfg.q_dim(),
        cfg.score_channels(),
    );
    let srcs = [
        Src::Act {
            name: "probs",
            channels: sc,
        },
        Src::Act {
            name: "dp",
            channels: sc,
        },
        Src::Act {
            name: "q",
            channels: qd,
        },
        Src::Act {
            name: "k",
            channels: qd,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("sdpaBwd2", storage(mode, false, 4), seq, &srcs);
    let b = &mut kb.b;
    let p4 = b.named("p4").reshape(v[0], &[1, h, seq, seq]);
    let dp4 = b.named("dp4").reshape(v[1], &[1, h, seq, seq]);
    let qh = build::to_heads(b, v[2], h, hd, "qh");
    let kh = build::to_heads(b, v[3], h, hd, "kh");
    let ds = build::softmax_bwd(b, p4, dp4, cfg.attn_scale());
    let dq4 = b.named("dq4").matmul(ds, kh, false, false);
    let dk4 = b.named("dk4").matmul(ds, qh, true, false);
    let dq = build::from_heads(b, dq4, "dq");
    let dk = build::from_heads(b, dk4, "dk");
    kb.finish(&[("dq", dq), ("dk", dk)])
}

/// `rmsnorm` (maderix/ANE's `gen_final_rmsnorm`): `y = x · rrms(x) · w` over channels; usable
/// for the final norm and for the per-layer norms.
pub fn rmsnorm(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let dim = cfg.dim;
    let srcs = [
        Src::Act {
            name: "x",
            channels: dim,
        },
        Src::Vector {
            name: "rms_w",
            len: dim,
            shape: vec![1, dim, 1, 1],
        },
    ];
    let (mut kb, v) = KernelBuilder::new("rmsnorm", storage(mode, true, 1), cfg.seq, &srcs);
    let y = build::rmsnorm(&mut kb.b, v[0], v[1], 1, cfg.norm_eps, "", "y");
    kb.finish(&[("y", y)])
}

/// `rmsnormBwd` (maderix/ANE's `gen_rmsnorm_bwd`): `dx` of RMSNorm over channels; the weight
/// gradient `Σ_t dy · x · rrms` stays on the host.
pub fn rmsnorm_bwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let dim = cfg.dim;
    let srcs = [
        Src::Act {
            name: "dy",
            channels: dim,
        },
        Src::Act {
            name: "x",
            channels: dim,
        },
        Src::Vector {
            name: "rms_w",
            len: dim,
            shape: vec![1, dim, 1, 1],
        },
    ];
    let (mut kb, v) = KernelBuilder::new("rmsnormBwd", storage(mode, true, 2), cfg.seq, &srcs);
    let dx = build::rmsnorm_bwd(&mut kb.b, v[0], v[1], v[2], 1, cfg.norm_eps, "dx");
    kb.finish(&[("dx", dx)])
}

/// `classifierFwd`: `logits = E · x` with the (tied) embedding `E [vocab][dim]`.
pub fn classifier_fwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [
        Src::Act {
            name: "x",
            channels: cfg.dim,
        },
        Src::Weight {
            name: "embed",
            rows: cfg.vocab,
            cols: cfg.dim,
            dir: Dir::Forward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("classifierFwd", storage(mode, true, 1), cfg.seq, &srcs);
    let logits = kb.linear(v[0], v[1], "logits");
    kb.finish(&[("logits", logits)])
}

/// `classifierBwd`: `dx = Eᵀ · dlogits`.
pub fn classifier_bwd(cfg: &ModelConfig, mode: WeightMode) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [
        Src::Act {
            name: "dlogits",
            channels: cfg.vocab,
        },
        Src::Weight {
            name: "embed",
            rows: cfg.vocab,
            cols: cfg.dim,
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("classifierBwd", storage(mode, true, 1), cfg.seq, &srcs);
    let dx = kb.linear(v[0], v[1], "dx");
    kb.finish(&[("dx", dx)])
}

/// `softmaxVocab` (maderix/ANE's `gen_softmax_vocab`): softmax over the vocabulary (channel)
/// axis; the same program in both modes (no weights).
pub fn softmax_vocab(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let srcs = [Src::Act {
        name: "logits",
        channels: cfg.vocab,
    }];
    let (mut kb, v) = KernelBuilder::new("softmaxVocab", Storage::Params, cfg.seq, &srcs);
    let probs = kb.b.named("probs").softmax(v[0], 1);
    kb.finish(&[("probs", probs)])
}

/// Which projection a q/k-norm kernel serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormHeads {
    /// Query heads (`n_heads`, weight `q_norm`).
    Query,
    /// Key heads (`n_kv_heads`, weight `k_norm`).
    Key,
}

/// `qNormBwd` / `kNormBwd` (Qwen3): `dx` of the per-head RMSNorm over `head_dim`, for
/// `x = q_raw` or `k_raw` `[n * head_dim][seq]` and `dy` the gradient of the normalised heads
/// (after the host's RoPE backward).
pub fn qk_norm_bwd(cfg: &ModelConfig, mode: WeightMode, heads: NormHeads) -> GeneratedKernel {
    cfg.assert_valid();
    let (n, name, weight) = match heads {
        NormHeads::Query => (cfg.n_heads, "qNormBwd", "q_norm"),
        NormHeads::Key => (cfg.n_kv_heads, "kNormBwd", "k_norm"),
    };
    let (hd, seq) = (cfg.head_dim, cfg.seq);
    let channels = n * hd;
    let srcs = [
        Src::Act {
            name: "dy",
            channels,
        },
        Src::Act {
            name: "x",
            channels,
        },
        Src::Vector {
            name: weight,
            len: hd,
            shape: vec![1, 1, hd, 1],
        },
    ];
    let (mut kb, v) = KernelBuilder::new(name, storage(mode, true, 2), seq, &srcs);
    let b = &mut kb.b;
    let dy4 = b.named("dy4").reshape(v[0], &[1, n, hd, seq]);
    let x4 = b.named("x4").reshape(v[1], &[1, n, hd, seq]);
    let dx4 = build::rmsnorm_bwd(b, dy4, x4, v[2], 2, cfg.norm_eps, "dx4");
    let dx = b.named("dx").reshape(dx4, &[1, channels, 1, seq]);
    kb.finish(&[("dx", dx)])
}

/// Every kernel a training step uses, in pipeline order: the ten `training_dynamic` kernels,
/// then `rmsnorm`, `rmsnormBwd`, `classifierFwd`, `classifierBwd`, `softmaxVocab`, and (Qwen3)
/// `qNormBwd`, `kNormBwd`.
pub fn training_kernels(cfg: &ModelConfig, mode: WeightMode) -> Vec<GeneratedKernel> {
    let mut kernels = vec![
        sdpa_fwd(cfg, mode),
        wo_fwd(cfg, mode),
        ffn_fused(cfg, mode),
        ffn_bwd_w2t(cfg, mode),
        ffn_bwd_w13t(cfg, mode),
        wot_bwd(cfg, mode),
        sdpa_bwd1(cfg, mode),
        sdpa_bwd2(cfg, mode),
        q_bwd(cfg, mode),
        kv_bwd(cfg, mode),
        rmsnorm(cfg, mode),
        rmsnorm_bwd(cfg, mode),
        classifier_fwd(cfg, mode),
        classifier_bwd(cfg, mode),
        softmax_vocab(cfg),
    ];
    if cfg.qk_norm {
        kernels.push(qk_norm_bwd(cfg, mode, NormHeads::Query));
        kernels.push(qk_norm_bwd(cfg, mode, NormHeads::Key));
    }
    kernels
}
