//! milbridge-train: Llama-family training on compiled bridge kernels — maderix/ANE's
//! `training/training_dynamic/` pipeline, done on the CPU through milbridge.
//!
//! The model is Llama 2 as llama2.c defines it ([`model`]): RMSNorm, RoPE on adjacent pairs,
//! causal multi-head attention (grouped-query when `n_kv_heads < n_heads`), SwiGLU FFN, token
//! embedding tied to the classifier; with [`ModelSpec::qk_norm`] (the Qwen3 presets) also
//! Qwen3's per-head RMSNorm of queries and keys between the projections and RoPE. Every
//! forward matmul and every backward-dx matmul runs in a kernel that `milbridge-graphs`
//! generates as MIL, printed to text and compiled by the bridge **once at start-up**; weights
//! change by surface writes, never by recompiling.
//!
//! # Entry points
//!
//! - [`run`]`(&TrainArgs, &mut dyn Observer)`: `milbridge train`. With no arguments it trains
//!   the embedded default ([`TrainConfig::embedded_default`]: a small byte-level model on the
//!   bundled corpus, `data/corpus.txt`) and returns a generated sample in the [`Summary`].
//!   Ctrl-C saves a checkpoint and returns; a second Ctrl-C exits at once.
//! - [`run_config`]: the same from a [`TrainConfig`] (no CLI types, no signal handler).
//! - [`sample()`](sample::sample)`(&SampleArgs)`: `milbridge sample`, text from a checkpoint
//!   (ours or a llama2.c model file), with llama2.c's `tokenizer.bin` when given.
//! - [`llama2c::export`]`(&ExportArgs)`: `milbridge export`, a checkpoint's weights as a
//!   llama2.c model file that llama2.c's `run.c` samples from; `milbridge train --init-from
//!   FILE.bin` starts from one ([`llama2c`]).
//! - [`Trainer`]: step-by-step control (tests, custom loops).
//!
//! The library never prints: progress goes to an [`Observer`] ([`StepReport`] has the step,
//! loss, learning rate, ms/step, tokens/s and ETA a progress bar shows), metrics to a JSONL
//! file ([`observer::MetricsWriter`]), the loss curve to an SVG ([`observer::loss_curve_svg`]).
//!
//! # One micro-step ([`step`])
//!
//! Per layer, forward: RMSNorm (CPU) → `sdpaFwd` (QKV, RoPE, causal softmax attention) →
//! `woFwd` → `x2 = x + o` (CPU) → RMSNorm (CPU) → `ffnFused` (SwiGLU with its residual). Then
//! the final RMSNorm (CPU), the classifier (`classifierFwd`) and the cross-entropy over the
//! vocabulary (CPU). Backward, per layer in reverse: `ffnBwdW2t`, SiLU-gate derivative (CPU),
//! `ffnBwdW13t`, RMSNorm backward (CPU), `wotBwd`, `sdpaBwd1` + `sdpaBwd2` (K/V tiled to the
//! query heads and reduced back on the CPU), RoPE backward (CPU), (Qwen3: `qNormBwd` +
//! `kNormBwd`, the gains' gradients on the CPU,) `qBwd` + `kvBwd`. With q/k norm `sdpaFwd`
//! also normalises each query and key head (gains `q_norm`/`k_norm`, `[head_dim]`, epsilon
//! 1e-6) before RoPE and returns the raw projections for the backward. Every
//! `dW += dY·Xᵀ` product goes to a CPU thread that works while the next kernels evaluate (the
//! reference's `dispatch_group_async`), in queue order, so the bits do not depend on timing.
//!
//! [`backend::Backend`] is the seam: [`kernels::KernelBackend`] is the real path,
//! [`backend::ReferenceBackend`] computes the same products in f32 on the CPU and is the oracle
//! of the tests.
//!
//! # The two weight modes, and why function parameters get per-layer kernels
//!
//! - `--weights params` (PR #22): each weight is a MIL function parameter on a persistent
//!   weight surface. **Each weight-bearing kernel exists once per layer, each instance with its
//!   own surfaces**, rather than one kernel per kind rebound or rewritten per layer. Reasons:
//!   every weight stays resident, so a weight is written exactly once per optimizer step (right
//!   after AdamW) instead of being restaged for every layer on every forward and backward; a call
//!   writes only its activations; and it costs no compile time, because all instances share one
//!   compiled plan (compiled once, instantiated with `Kernel::from_plan`; even with the compile
//!   cache off there are exactly as many compiles as kernel kinds). The price is memory: one set
//!   of surfaces and one engine workspace per layer and kernel, about the size of the weights
//!   in fp16 plus the activations — small next to the f32 master weights and Adam moments.
//!   The weight-free attention-backward kernels are shared, and `sdpaBwd2` reads `sdpaBwd1`'s
//!   `probs`/`dp` outputs in place (`Kernel::bind_input_to`, zero-copy chaining).
//! - `--weights packed` (training_dynamic's kernels): each kernel's single input packs the
//!   activations and then the weights along the spatial axis, sliced apart in the MIL (the
//!   engine folds those slices into views, so they cost no copy). Like params, one instance
//!   per layer whose packed input keeps its weight columns resident: the optimizer step writes
//!   the whole input once, a call writes only the activation columns.
//! - `--weights packed-restage` (training_dynamic as it runs): the same kernels, one shared
//!   instance per kind; the host keeps each layer's packed buffer and every call writes the
//!   whole buffer into the shared surface: weights are restaged per layer per step, which is
//!   exactly the overhead PR #22 measured.
//!
//! Every mode computes the same math from the same generators, so the same seed and data give
//! the same loss trajectory (the tests check 20 steps).
//!
//! # The optimizer ([`optim`], [`train`])
//!
//! Gradient accumulation (default 10 micro-steps, as the reference), fp16 loss scaling (the loss
//! gradient is multiplied by the scale before the backward kernels; any inf/NaN in the
//! accumulated gradient skips the optimizer step and halves the scale, which doubles again after
//! a run of clean steps), global-norm clipping, cosine learning rate with linear warm-up,
//! AdamW with decoupled weight decay (none on norm gains).
//!
//! # Determinism
//!
//! Initial weights and data positions come from the seed (SplitMix64, [`rng`]); every CPU
//! reduction has a fixed order; dW jobs run in queue order. The same seed and data give the
//! same bits run after run (with `MILBRIDGE_THREADS=1` this holds whatever the engine's
//! threading does).
//!
//! # Checkpoints ([`ckpt`])
//!
//! A directory with the tensors as safetensors (weights, Adam moments, and the partial gradient
//! when saved inside an accumulation) and `state.json` (step, optimizer and schedule state, loss
//! scaler, data cursor and RNG state, model shape, loss history). Writes are atomic (temp file,
//! fsync, rename, directory fsync; `state.json` names the content-hashed tensors file and is
//! replaced last), so a process killed mid-save leaves the previous checkpoint loadable, and a
//! resumed run continues the exact loss trajectory. Truncated, corrupt or foreign checkpoints
//! are errors, never panics.
//!
//! # Data ([`data`], [`tokenizer`])
//!
//! llama2.c's pretokenized shards (flat little-endian `u16` ids), memory-mapped and validated
//! (non-empty, even length, at least `seq + 1` tokens, every id below the vocabulary, with the
//! byte offset of the first bad one), or the embedded corpus through the byte-level tokenizer.
//! [`tokenizer::Llama2cTokenizer`] reads llama2.c's `tokenizer.bin` and encodes and decodes as
//! `run.c` does.
//!
//! # llama2.c interop ([`llama2c`])
//!
//! llama2.c's model files (legacy, which `run.c` reads, and version 1) map one to one onto
//! [`ModelSpec`] + [`Params`]: same `[out, in]` matrices, same RoPE on adjacent pairs. Import
//! checks the header and that the file size is exactly what it implies, and refuses files with
//! an unshared classifier (ours is tied); export writes the legacy format atomically. Export
//! followed by import is bit-exact, and a C forward pass in `run.c`'s style
//! (`tests/c/llama2c_forward.c`) reproduces our logits and greedy tokens from an exported file.
//!
//! # Deliberate differences from training_dynamic
//!
//! - Residual branches are not scaled (llama2.c's definition; training_dynamic uses
//!   `1/sqrt(2·n_layers)`), and the init is llama2.c's (normal, std 0.02, residual outputs
//!   scaled by `1/sqrt(2·n_layers)`).
//! - No vocabulary compaction; the classifier covers the whole vocabulary.
//! - Qwen3 (`qwen3-0.6b`, `qwen3-tiny`) has its q/k RMSNorm, and the q/k-norm family uses
//!   Qwen3's RoPE base 1e6 and RMSNorm epsilon 1e-6 ([`ModelSpec::rope_theta`],
//!   [`ModelSpec::norm_eps`]; Llama: 1e4 and 1e-5). Its vocabulary of 151936 is covered by
//!   the classifier, but the u16 data only reaches ids below 65536 ([`data`]).
//! - The CPU-side products (dW, and every product of the reference backend) run on linalg's GEMM
//!   through its safe slice entry point `gemm_f32` ([`cpu::matmul_nt`] and friends).
#![forbid(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod ckpt;
pub mod config;
pub mod cpu;
pub mod data;
pub mod error;
pub mod kernels;
pub mod llama2c;
pub mod model;
pub mod observer;
pub mod optim;
pub mod par;
pub mod rng;
pub mod sample;
pub mod step;
pub mod timing;
pub mod tokenizer;
pub mod train;

pub use config::{Compute, ExportArgs, SampleArgs, TrainArgs, TrainConfig, WeightMode};
pub use error::{DataProblem, Error, Result};
pub use model::{ModelSpec, Params};
pub use observer::{Event, NullObserver, Observer, Recorder, RunInfo, StepReport, Summary};
pub use sample::sample;
pub use train::{Trainer, run, run_config};
