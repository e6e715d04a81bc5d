//! Static kernels (maderix/ANE's `training/stories_mil.h`, `ane_classifier.h`,
//! `ane_rmsnorm_bwd.h`): weights baked in as BLOBFILE constants, linear layers as 1x1 `conv`,
//! several activations stacked along channels in one input.
//!
//! Differences from the originals, deliberately: RoPE is applied (maderix/ANE's static pipeline
//! leaves it out), grouped-query and Qwen3 configs are supported, and the RMSNorm epsilon and
//! attention scale follow the config.
//!
//! A static kernel's weight files come from [`weight_blobs`], which writes each weight the
//! program names as a single fp16 blob (mil-spec 7.3.1) at the path and orientation its
//! [`WeightSpec`](crate::kernel::WeightSpec) gives; the constant tables are in
//! [`GeneratedKernel::blobs`](crate::kernel::GeneratedKernel::blobs).

use crate::build::{self, Dir, KernelBuilder, Src, Storage};
use crate::config::{ModelConfig, WeightMode};
use crate::kernel::{BlobFile, GeneratedKernel, Orientation, WeightLocation};
use mil::blob::{single_fp16_blob, single_fp16_blob_transposed};
use mil::facts::BlobMap;
use milbridge_mil as mil;

/// `sdpaFwdTaps`: RMSNorm (weight `rms_att`), QKV, (q/k norm,) RoPE, causal attention and `Wo`.
/// Taps `o_out`, `q_rope`, `k_rope`, `v`, `attn`, `xnorm` (and `q_raw`, `k_raw` with q/k norm).
pub fn sdpa_fwd_taps(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, qd, kvd, hd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let mut srcs = vec![
        Src::Act {
            name: "x",
            channels: dim,
        },
        Src::Vector {
            name: "rms_att",
            len: dim,
            shape: vec![1, dim, 1, 1],
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
        Src::Weight {
            name: "wo",
            rows: dim,
            cols: qd,
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
    let (mut kb, v) = KernelBuilder::new("sdpaFwdTaps", Storage::Static, cfg.seq, &srcs);
    let xn = build::rmsnorm(&mut kb.b, v[0], v[1], 1, cfg.norm_eps, "", "xnorm");
    let qk_norm = cfg.qk_norm.then(|| (v[6], v[7]));
    let core = build::attention_core(&mut kb, cfg, xn, (v[2], v[3], v[4]), qk_norm);
    let (attn, q_flat, k_flat, vf) = (core.attn, core.q_rope, core.k_rope, core.v);
    let o = kb.linear(attn, v[5], "o_out");
    let mut taps = vec![
        ("o_out", o),
        ("q_rope", q_flat),
        ("k_rope", k_flat),
        ("v", vf),
        ("attn", attn),
        ("xnorm", xn),
    ];
    if cfg.qk_norm {
        taps.push(("q_raw", core.q_raw));
        taps.push(("k_raw", core.k_raw));
    }
    kb.finish(&taps)
}

/// `ffnFwdTaps`: RMSNorm (weight `rms_ffn`) and the SwiGLU FFN without the residual. Taps
/// `ffn_out`, `h1`, `h3`, `gate`, `xnorm`.
pub fn ffn_fwd_taps(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, hidden) = (cfg.dim, cfg.hidden);
    let srcs = [
        Src::Act {
            name: "x",
            channels: dim,
        },
        Src::Vector {
            name: "rms_ffn",
            len: dim,
            shape: vec![1, dim, 1, 1],
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
            dir: Dir::Forward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("ffnFwdTaps", Storage::Static, cfg.seq, &srcs);
    let xn = build::rmsnorm(&mut kb.b, v[0], v[1], 1, cfg.norm_eps, "", "xnorm");
    let h1 = kb.linear(xn, v[2], "h1");
    let h3 = kb.linear(xn, v[3], "h3");
    let b = &mut kb.b;
    let sig = b.named("sig").sigmoid(h1);
    let silu = b.named("silu").mul(h1, sig);
    let gate = b.named("gate").mul(silu, h3);
    let y = kb.linear(gate, v[4], "ffn_out");
    kb.finish(&[
        ("ffn_out", y),
        ("h1", h1),
        ("h3", h3),
        ("gate", gate),
        ("xnorm", xn),
    ])
}

/// `ffnBwd`: from `dffn`, `h1`, `h3`: `dsilu = W2ᵀ dffn`, the SiLU-gate derivative
/// (`dh1 = dsilu · h3 · σ(h1)(1 + h1(1 − σ(h1)))`, `dh3 = dsilu · silu(h1)`) and
/// `dx = W1ᵀ dh1 + W3ᵀ dh3`. Taps `dx`, `dh1`, `dh3`.
pub fn ffn_bwd(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, hidden) = (cfg.dim, cfg.hidden);
    let srcs = [
        Src::Act {
            name: "dffn",
            channels: dim,
        },
        Src::Act {
            name: "h1",
            channels: hidden,
        },
        Src::Act {
            name: "h3",
            channels: hidden,
        },
        Src::Weight {
            name: "w2",
            rows: dim,
            cols: hidden,
            dir: Dir::Backward,
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
    let (mut kb, v) = KernelBuilder::new("ffnBwd", Storage::Static, cfg.seq, &srcs);
    let (h1, h3) = (v[1], v[2]);
    let dsilu = kb.linear(v[0], v[3], "dsilu");
    let b = &mut kb.b;
    let sig = b.named("sig").sigmoid(h1);
    let oms = b.named("oms").scalar_sub(1.0, sig);
    let homs = b.named("homs").mul(h1, oms);
    let brk = b.named("brk").add_scalar(homs, 1.0);
    let dsd = b.named("dsd").mul(sig, brk);
    let t1 = b.named("t1").mul(dsilu, h3);
    let dh1 = b.named("dh1").mul(t1, dsd);
    let slh = b.named("slh").mul(h1, sig);
    let dh3 = b.named("dh3").mul(dsilu, slh);
    let dx1 = kb.linear(dh1, v[4], "dx1");
    let dx3 = kb.linear(dh3, v[5], "dx3");
    let dx = kb.b.named("dx").add(dx1, dx3);
    kb.finish(&[("dx", dx), ("dh1", dh1), ("dh3", dh3)])
}

/// `qkvBwd`: `dx = Wqᵀ dq + Wkᵀ dk + Wvᵀ dv` (dk, dv at `n_kv_heads`).
pub fn qkv_bwd(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, qd, kvd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim());
    let srcs = [
        Src::Act {
            name: "dq",
            channels: qd,
        },
        Src::Act {
            name: "dk",
            channels: kvd,
        },
        Src::Act {
            name: "dv",
            channels: kvd,
        },
        Src::Weight {
            name: "wq",
            rows: qd,
            cols: dim,
            dir: Dir::Backward,
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
    let (mut kb, v) = KernelBuilder::new("qkvBwd", Storage::Static, cfg.seq, &srcs);
    let dxq = kb.linear(v[0], v[3], "dxq");
    let dxk = kb.linear(v[1], v[4], "dxk");
    let dxv = kb.linear(v[2], v[5], "dxv");
    let b = &mut kb.b;
    let dxqk = b.named("dxqk").add(dxq, dxk);
    let dx = b.named("dx").add(dxqk, dxv);
    kb.finish(&[("dx", dx)])
}

/// `sdpaBwd1` with `Wo` folded in: from `q`, tiled `k`, `v` and the residual gradient `dy`:
/// `da = Woᵀ dy`, then as [`crate::dynamic::sdpa_bwd1`]. Taps `dv`, `probs`, `dp`.
pub fn sdpa_bwd1_wo(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, qd) = (cfg.dim, cfg.q_dim());
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
            name: "dy",
            channels: dim,
        },
        Src::Weight {
            name: "wo",
            rows: dim,
            cols: qd,
            dir: Dir::Backward,
        },
    ];
    let (mut kb, v) = KernelBuilder::new("sdpaBwd1Wo", Storage::Static, cfg.seq, &srcs);
    let da = kb.linear(v[3], v[4], "da");
    let (dv, probs, dp) = crate::dynamic::sdpa_bwd1_core(&mut kb, cfg, v[0], v[1], v[2], da);
    kb.finish(&[("dv", dv), ("probs", probs), ("dp", dp)])
}

/// `sdpaBwd2`: identical to the dynamic kernel (it has no weights); channel-packed input.
pub fn sdpa_bwd2(cfg: &ModelConfig) -> GeneratedKernel {
    crate::dynamic::sdpa_bwd2(cfg, WeightMode::Packed)
}

/// `rmsnorm` with its weight `rms_w` as a BLOBFILE (`gen_final_rmsnorm`).
pub fn rmsnorm(cfg: &ModelConfig) -> GeneratedKernel {
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
    let (mut kb, v) = KernelBuilder::new("rmsnorm", Storage::Static, cfg.seq, &srcs);
    let y = build::rmsnorm(&mut kb.b, v[0], v[1], 1, cfg.norm_eps, "", "y");
    kb.finish(&[("y", y)])
}

/// `rmsnormBwd` (`gen_rmsnorm_bwd`): input `concat(dy, x)` on channels, weight `rms_w` baked.
pub fn rmsnorm_bwd(cfg: &ModelConfig) -> GeneratedKernel {
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
    let (mut kb, v) = KernelBuilder::new("rmsnormBwd", Storage::Static, cfg.seq, &srcs);
    let dx = build::rmsnorm_bwd(&mut kb.b, v[0], v[1], v[2], 1, cfg.norm_eps, "dx");
    kb.finish(&[("dx", dx)])
}

/// `classifierFwd` (`gen_classifier_fwd`): a 1x1 conv with the embedding `[vocab, dim, 1, 1]`.
pub fn classifier_fwd(cfg: &ModelConfig) -> GeneratedKernel {
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
    let (mut kb, v) = KernelBuilder::new("classifierFwd", Storage::Static, cfg.seq, &srcs);
    let logits = kb.linear(v[0], v[1], "logits");
    kb.finish(&[("logits", logits)])
}

/// `classifierBwd` (`gen_classifier_bwd`): a matmul with the baked `Eᵀ [1, dim, vocab]`
/// (the ANE rejects a conv with `vocab` input channels).
pub fn classifier_bwd(cfg: &ModelConfig) -> GeneratedKernel {
    cfg.assert_valid();
    let (dim, vocab, seq) = (cfg.dim, cfg.vocab, cfg.seq);
    let srcs = [Src::Act {
        name: "dlogits",
        channels: vocab,
    }];
    let (mut kb, v) = KernelBuilder::new("classifierBwd", Storage::Static, seq, &srcs);
    let wet = kb.blob_weight(
        "embed",
        vocab,
        dim,
        &[1, dim, vocab],
        Orientation::Transposed,
        "embed_t",
    );
    let b = &mut kb.b;
    let dl3 = b.named("dl3").reshape(v[0], &[1, vocab, seq]);
    let dx3 = b.named("dx3").matmul(wet, dl3, false, false);
    let dx = b.named("dx").reshape(dx3, &[1, dim, 1, seq]);
    kb.finish(&[("dx", dx)])
}

/// Every static kernel.
pub fn static_kernels(cfg: &ModelConfig) -> Vec<GeneratedKernel> {
    vec![
        sdpa_fwd_taps(cfg),
        ffn_fwd_taps(cfg),
        ffn_bwd(cfg),
        qkv_bwd(cfg),
        sdpa_bwd1_wo(cfg),
        sdpa_bwd2(cfg),
        rmsnorm(cfg),
        rmsnorm_bwd(cfg),
        classifier_fwd(cfg),
        classifier_bwd(cfg),
    ]
}

/// Why [`weight_blobs`] could not write a kernel's weight files.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeightBlobError {
    /// No data was given for a weight the program reads.
    #[error("no data given for weight `{0}`")]
    Missing(String),
    /// The data has the wrong length.
    #[error("weight `{name}` needs {expected} values, got {got}")]
    Length {
        /// The weight.
        name: String,
        /// `rows * cols`.
        expected: usize,
        /// Values given.
        got: usize,
    },
}

/// Writes the weight files a static kernel reads: for each of its BLOBFILE weights, `weights`
/// supplies the model matrix by name in natural `[rows][cols]` layout; the file is a single fp16
/// blob holding it as the program expects (transposed for `...t.bin`). The kernel's constant
/// tables are included, so the result is everything the program needs.
pub fn weight_blobs(
    kernel: &GeneratedKernel,
    weights: &[(&str, &[f32])],
) -> Result<Vec<BlobFile>, WeightBlobError> {
    let mut files = kernel.blobs.clone();
    for spec in &kernel.weights {
        let WeightLocation::Blob {
            path, orientation, ..
        } = &spec.location
        else {
            continue;
        };
        let (_, data) = weights
            .iter()
            .find(|(name, _)| *name == spec.name)
            .ok_or_else(|| WeightBlobError::Missing(spec.name.clone()))?;
        if data.len() != spec.numel() {
            return Err(WeightBlobError::Length {
                name: spec.name.clone(),
                expected: spec.numel(),
                got: data.len(),
            });
        }
        let bytes = match orientation {
            Orientation::Natural => single_fp16_blob(data),
            Orientation::Transposed => single_fp16_blob_transposed(data, spec.rows, spec.cols),
        };
        files.push(BlobFile {
            path: path.clone(),
            bytes,
        });
    }
    Ok(files)
}

/// [`weight_blobs`] as a [`BlobMap`] for `mil::verify` and the bridge.
pub fn weight_blob_map(
    kernel: &GeneratedKernel,
    weights: &[(&str, &[f32])],
) -> Result<BlobMap, WeightBlobError> {
    let mut map = BlobMap::new();
    for file in weight_blobs(kernel, weights)? {
        map.insert(file.path, file.bytes);
    }
    Ok(map)
}
