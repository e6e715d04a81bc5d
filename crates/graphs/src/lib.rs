//! milbridge-graphs: maderix/ANE's training kernels generated as MIL programs through
//! `mil::builder`, the host helpers that fill and read their buffers, and [`math`], an
//! independent f64 implementation of the same math.
//!
//! # Configs and weight modes
//!
//! [`ModelConfig`] describes a Llama-2-architecture model ([`ModelConfig::stories15m`],
//! [`ModelConfig::stories42m`], [`ModelConfig::stories110m`], [`ModelConfig::qwen3_0_6b`],
//! [`ModelConfig::tiny`], [`ModelConfig::tiny_gqa`], [`ModelConfig::qwen3_tiny`]). Generators
//! require [`ModelConfig::validate`] to pass (they panic otherwise: validate user configs first).
//!
//! [`WeightMode::Packed`] reproduces `training_dynamic`'s spatial packing: one input
//! `[1, IC, 1, SP]` whose last dimension holds the activations and then each weight's section
//! (mil-spec 8.4 (a)); kernels without weights stack their activations along channels (8.4 (b)).
//! [`WeightMode::Params`] is PR #22's approach: each activation and each weight is its own
//! function parameter, activations first, weights as `[1, out, in]` in the model's natural
//! orientation (`y = matmul(W, x)`, backward `matmul(W, x, transpose_x = true)`).
//!
//! Every [`GeneratedKernel`] documents its buffers: [`GeneratedKernel::inputs`] and
//! [`GeneratedKernel::weights`] (parameter order, or for packed inputs the [`PackLayout`] with
//! each section's offset, width and [`Orientation`]), [`GeneratedKernel::outputs`], and the
//! [`TapSpec`]s naming each result's channel range. Packed kernels concatenate several results
//! along channels into one output `out` (maderix/ANE's "taps"); params kernels have one output per
//! result. Use [`pack_input`] / [`write_section`] and [`unpack_taps`] / [`read_tap`] rather than
//! re-deriving layouts. All buffers are fp16; activations are channel-first `[C][S]`.
//!
//! # The kernels
//!
//! Notation: `xn = rmsnorm(x)`, `D = dim`, `Q = q_dim = n_heads·head_dim`,
//! `K = kv_dim = n_kv_heads·head_dim`, `H = hidden`, `S = seq`, `V = vocab`, `P = n_heads·S`,
//! `α = residual_scale`. "Packed input" gives the sections in order (widths along the last axis,
//! or channel counts for channel packing); `Wᵀ` marks a section holding the transpose of the
//! model matrix (`[in][out]`), `W` one holding it as stored (`[out][in]`).
//!
//! | kernel (maderix name) | computes | packed input | params (activations; weights) | taps |
//! |---|---|---|---|---|
//! | [`dynamic::sdpa_fwd`] (`sdpaFwd`) | `q,k,v = Wq·xn, Wk·xn, Wv·xn`; Qwen3: per-head RMSNorm of q, k; RoPE; K/V tiled to `n_heads`; `attn = softmax(q·kᵀ/√hd + mask)·v` | `[1,D,1,S+Q+2K]`: xnorm, Wqᵀ, Wkᵀ, Wvᵀ (+ q_norm, k_norm columns) | xnorm; wq, wk, wv (+ q_norm, k_norm `[1,1,1,hd]`) | attn `Q`, q_rope `Q`, k_rope `K`, v `K`, xnorm `D` (packed only), q_raw `Q`, k_raw `K` (q/k norm only) |
//! | [`dynamic::wo_fwd`] (`woFwd`) | `o = Wo·attn` | `[1,Q,1,S+D]`: attn, Woᵀ | attn; wo | o `D` |
//! | [`dynamic::ffn_fused`] (`ffnFused`) | `h1 = W1·x2n`, `h3 = W3·x2n`, `gate = silu(h1)⊙h3`, `x_next = x2 + α·W2·gate` | `[1,D,1,2S+3H]`: x2norm, x2, W1ᵀ, W3ᵀ, W2 | x2norm, x2; w1, w3, w2 | x_next `D`, h1 `H`, h3 `H`, gate `H` |
//! | [`dynamic::ffn_bwd_w2t`] (`ffnBwdW2t`) | `dsilu = W2ᵀ·dffn` | `[1,D,1,S+H]`: dffn, W2 | dffn; w2 | dsilu `H` |
//! | [`dynamic::ffn_bwd_w13t`] (`ffnBwdW13t`) | `dx = W1ᵀ·dh1 + W3ᵀ·dh3` | `[1,H,1,2S+2D]`: dh1, dh3, W1, W3 | dh1, dh3; w1, w3 | dx `D` |
//! | [`dynamic::wot_bwd`] (`wotBwd`) | `da = Woᵀ·dy` | `[1,D,1,S+Q]`: dy, Wo | dy; wo | da `Q` |
//! | [`dynamic::sdpa_bwd1`] (`sdpaBwd1`) | recompute `P`; `dv = Pᵀ·da`, `dp = da·vᵀ` (per head, K/V tiled) | channels `[1,4Q,1,S]`: q, k, v, da | q, k, v, da | dv `Q`, probs `P`, dp `P` |
//! | [`dynamic::sdpa_bwd2`] (`sdpaBwd2`) | `dS = P⊙(dp − Σ P⊙dp)/√hd`; `dq = dS·k`, `dk = dSᵀ·q` | channels `[1,2P+2Q,1,S]`: probs, dp, q, k | probs, dp, q, k | dq `Q`, dk `Q` |
//! | [`dynamic::q_bwd`] (`qBwd`) | `dx = Wqᵀ·dq` | `[1,Q,1,S+D]`: dq, Wq | dq; wq | dx `D` |
//! | [`dynamic::kv_bwd`] (`kvBwd`) | `dx = Wkᵀ·dk + Wvᵀ·dv` | `[1,K,1,2S+2D]`: dk, dv, Wk, Wv | dk, dv; wk, wv | dx `D` |
//! | [`dynamic::rmsnorm`] (`gen_final_rmsnorm`) | `y = x·w/√(mean_c x² + ε)` | `[1,D,1,S+1]`: x, rms_w column | x; rms_w `[1,D,1,1]` | y `D` |
//! | [`dynamic::rmsnorm_bwd`] (`gen_rmsnorm_bwd`) | `dx = (dy⊙w − x·Σ(dy⊙w⊙x)/D·r²)·r`, `r = 1/√(mean x² + ε)` | `[1,D,1,2S+1]`: dy, x, rms_w | dy, x; rms_w | dx `D` |
//! | [`dynamic::classifier_fwd`] (`gen_classifier_fwd`) | `logits = E·x` | `[1,D,1,S+V]`: x, Eᵀ | x; embed | logits `V` |
//! | [`dynamic::classifier_bwd`] (`gen_classifier_bwd`) | `dx = Eᵀ·dlogits` | `[1,V,1,S+D]`: dlogits, E | dlogits; embed | dx `D` |
//! | [`dynamic::softmax_vocab`] (`gen_softmax_vocab`) | softmax over the vocabulary axis | one input `[1,V,1,S]` | logits | probs `V` |
//! | [`dynamic::qk_norm_bwd`] (Qwen3, ours) | `dx` of the per-head RMSNorm over `head_dim` | `[1,n·hd,1,2S+1]`: dy, x, q_norm/k_norm | dy, x; q_norm/k_norm `[1,1,hd,1]` | dx |
//! | [`dynamic::dyn_matmul`] (`gen_dyn_matmul_mil`) | `y = W·x` for any `W [oc][ic]` | `[1,ic,1,S+oc]`: x, Wᵀ | x; w | y |
//!
//! The host work between kernels is what maderix/ANE's `train.m` does on the CPU: RMSNorm of
//! the layer input (or the [`dynamic::rmsnorm`] kernel), `x2 = x + α·o`, SiLU-gate backward
//! ([`math::swiglu_gate_bwd`]), tiling K/V to `n_heads` for the backward kernels
//! ([`gqa_tile_kv`]), reducing `dk`, `dv` back ([`gqa_reduce_kv`]), RoPE backward on `dq`, `dk`
//! ([`math::rope_bwd`]), RMSNorm weight gradients, and every `dW = dy·xᵀ`.
//!
//! Static variants with BLOBFILE weights (maderix/ANE's `stories_mil.h`, `ane_classifier.h`,
//! `ane_rmsnorm_bwd.h`) are in [`stories`]: `sdpaFwdTaps` (RMSNorm + attention + Wo), `ffnFwdTaps`,
//! `ffnBwd` (with the SiLU derivative in MIL), `qkvBwd`, `sdpaBwd1Wo` (Wo backward folded in),
//! `sdpaBwd2`, `rmsnorm`, `rmsnormBwd`, `classifierFwd` (1x1 conv), `classifierBwd` (matmul with
//! the baked `Eᵀ`); [`stories::weight_blobs`] writes their weight files.
//!
//! # Conventions and deliberate differences from maderix/ANE
//!
//! * Constant tables (causal mask `[1,1,S,S]` of 0 / −65504, RoPE cos/sin `[1,1,S,hd]`) are
//!   BLOBFILE constants as in maderix/ANE, carried in [`GeneratedKernel::blobs`].
//! * RoPE rotates adjacent pairs `(2i, 2i+1)` (maderix/ANE and llama2.c), base from the config.
//! * Grouped-query tiling makes query head `h` read key/value head `h / ratio` (Llama/Qwen's
//!   `repeat_kv`), in the forward concat (`interleave = true`) and in the host's
//!   [`gqa_tile_kv`]/[`gqa_reduce_kv`]. maderix/ANE's forward concat reads `h mod n_kv_heads`
//!   while its host helpers use `h / ratio`; we use one mapping everywhere.
//! * Qwen3's q/k RMSNorm is implemented (maderix/ANE's Qwen3 pipeline omits it).
//! * The residual scale is the config's (`1.0` for Llama; maderix/ANE uses `1/√(2·n_layers)`,
//!   see [`ModelConfig::with_maderix_residual_scale`]).
//! * Params-mode kernels don't echo `xnorm` back (the host already has it).
#![forbid(unsafe_code)]

mod build;
pub mod config;
pub mod dynamic;
pub mod kernel;
pub mod math;
pub mod stories;
pub mod tables;

pub use config::{ConfigError, ModelConfig, WeightMode};
pub use kernel::{
    BlobFile, BufferError, GeneratedKernel, IoSpec, Orientation, PackAxis, PackLayout, PackSection,
    SectionContent, TapSpec, WeightLocation, WeightSpec, gqa_reduce_kv, gqa_tile_kv, pack_input,
    read_section, read_tap, unpack_taps, write_section,
};
