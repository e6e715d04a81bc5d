//! Options: [`TrainConfig`] (what the library runs, no CLI types) and the `milbridge train` /
//! `milbridge sample` / `milbridge export` argument structs ([`TrainArgs`], [`SampleArgs`],
//! [`ExportArgs`], `clap::Args` derives the CLI flattens into its subcommands).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::optim::AdamW;

/// How the trainer passes weights to its kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// Weights are MIL function parameters on persistent weight surfaces, one kernel set per
    /// layer (PR #22's approach; see the crate docs for why per layer).
    #[default]
    Params,
    /// Weights are packed into the spatial dimension of one activation input and sliced apart
    /// inside the MIL (training_dynamic's kernels), one kernel set per layer whose packed input
    /// stays resident: the weight columns are written once per optimizer step, a call writes
    /// only the activation columns. What remains between this and `Params` is the kernels
    /// themselves (view folding makes the slices free).
    Packed,
    /// As `Packed`, but as training_dynamic runs it: one shared kernel set, and every call
    /// rewrites the whole packed input, restaging the layer's weights per layer per step —
    /// the overhead PR #22 measured.
    PackedRestage,
}

impl WeightMode {
    /// `params`, `packed` or `packed-restage`.
    pub fn name(self) -> &'static str {
        match self {
            WeightMode::Params => "params",
            WeightMode::Packed => "packed",
            WeightMode::PackedRestage => "packed-restage",
        }
    }

    /// Parses `params`, `packed` or `packed-restage`.
    pub fn parse(text: &str) -> Option<WeightMode> {
        match text {
            "params" => Some(WeightMode::Params),
            "packed" => Some(WeightMode::Packed),
            "packed-restage" => Some(WeightMode::PackedRestage),
            _ => None,
        }
    }
}

/// Where a step's matrix products run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    /// Compiled bridge kernels with the given weight mode (the real path).
    Kernels(WeightMode),
    /// The f32 CPU reference (tests, debugging).
    Reference,
}

impl Compute {
    /// `params`, `packed` or `reference`.
    pub fn name(self) -> &'static str {
        match self {
            Compute::Kernels(mode) => mode.name(),
            Compute::Reference => "reference",
        }
    }
}

/// Everything a training run needs, without any CLI types.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The model's shape (on resume the checkpoint's is used).
    pub model: ModelSpec,
    /// On resume, fail unless the checkpoint's model equals `model` (set when the user chose a
    /// model explicitly).
    pub check_model_on_resume: bool,
    /// Where the products run.
    pub compute: Compute,
    /// Kernels in the engine's fast precision profile (bf16 matrix engine where the host has
    /// one) instead of the exact one.
    pub fast: bool,
    /// Token shard (llama2.c format), or `None` for the embedded corpus.
    pub data: Option<PathBuf>,
    /// Micro-steps (windows) to run in total, counting those before a resume.
    pub steps: u64,
    /// Micro-steps per optimizer step (gradient accumulation).
    pub accum: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Warm-up, in optimizer steps.
    pub warmup: u64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_frac: f32,
    /// AdamW hyper-parameters.
    pub adam: AdamW,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f32,
    /// Initial loss scale (a power of two).
    pub loss_scale: f32,
    /// Clean optimizer steps before the loss scale doubles (0: never).
    pub loss_scale_growth: u64,
    /// Seed of the initial weights and the data positions.
    pub seed: u64,
    /// Start from the weights of this llama2.c model file instead of the seeded init
    /// ([`crate::llama2c`]); `model` must be its shape. Not read on resume.
    pub init_from: Option<PathBuf>,
    /// Checkpoint directory (`None`: no checkpoints, Ctrl-C just stops).
    pub checkpoint: Option<PathBuf>,
    /// Save every this many optimizer steps (0: only at the end and on Ctrl-C).
    pub save_every: u64,
    /// Continue from the checkpoint directory.
    pub resume: bool,
    /// JSONL metrics file.
    pub metrics: Option<PathBuf>,
    /// SVG loss curve written at the end.
    pub plot: Option<PathBuf>,
    /// Tokens to generate at the end (0: none).
    pub sample_tokens: usize,
    /// Prompt of the final sample.
    pub sample_prompt: String,
}

impl TrainConfig {
    /// The embedded default: the `small` byte-level model on the bundled corpus, kernels with
    /// function-parameter weights, a sample at the end.
    pub fn embedded_default() -> TrainConfig {
        TrainConfig {
            model: ModelSpec::small(),
            check_model_on_resume: false,
            compute: Compute::Kernels(WeightMode::Params),
            fast: false,
            data: None,
            steps: 3000,
            accum: 10,
            lr: 2e-3,
            warmup: 10,
            min_lr_frac: 0.1,
            adam: AdamW::default(),
            grad_clip: 1.0,
            loss_scale: 256.0,
            loss_scale_growth: 100,
            seed: 42,
            init_from: None,
            checkpoint: Some(PathBuf::from("milbridge-run/checkpoint")),
            save_every: 50,
            resume: false,
            metrics: None,
            plot: Some(PathBuf::from("milbridge-run/loss.svg")),
            sample_tokens: 300,
            sample_prompt: "Once upon a time".to_string(),
        }
    }

    /// Optimizer steps the run will make (the last partial accumulation counts).
    pub fn optimizer_steps(&self) -> u64 {
        self.steps.div_ceil(self.accum.max(1))
    }

    /// Checks ranges and combinations.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |m: String| Err(Error::Config(m));
        if self.accum == 0 {
            return bad("accum must be at least 1, got 0".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_frac) {
            return bad(format!(
                "min lr fraction must be in [0, 1], got {}",
                self.min_lr_frac
            ));
        }
        if !(self.loss_scale.is_finite() && self.loss_scale >= 1.0) {
            return bad(format!(
                "loss scale must be at least 1, got {}",
                self.loss_scale
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(format!(
                "gradient clip must be non-negative, got {}",
                self.grad_clip
            ));
        }
        if self.resume && self.checkpoint.is_none() {
            return bad("resume needs a checkpoint directory".into());
        }
        Ok(())
    }
}

/// `milbridge train` arguments. With none, trains the embedded default
/// ([`TrainConfig::embedded_default`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainArgs {
    /// Model preset: tiny, small, stories15m, stories42m, stories110m, qwen3-0.6b, qwen3-tiny
    /// [default: small]
    #[arg(long)]
    pub model: Option<String>,
    /// Override the residual width of the preset
    #[arg(long)]
    pub dim: Option<usize>,
    /// Override the FFN hidden width
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Override the number of layers
    #[arg(long)]
    pub layers: Option<usize>,
    /// Override the number of query heads
    #[arg(long)]
    pub heads: Option<usize>,
    /// Override the number of key/value heads
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Override the head width [default: dim / heads]
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// Override the sequence length
    #[arg(long)]
    pub seq: Option<usize>,
    /// Override the vocabulary size
    #[arg(long)]
    pub vocab: Option<usize>,
    /// How kernels receive weights: params (function parameters), packed (spatial packing,
    /// per-layer resident inputs) or packed-restage (spatial packing restaged on every call,
    /// as training_dynamic); `reference` runs every product on the CPU without kernels
    /// [default: params]
    #[arg(long)]
    pub weights: Option<String>,
    /// Use the engine's fast precision profile (bf16 on AMX hosts)
    #[arg(long)]
    pub fast: bool,
    /// llama2.c token shard (flat little-endian u16) [default: the embedded corpus]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Total micro-steps (windows), counting those before a resume [default: 3000]
    #[arg(long)]
    pub steps: Option<u64>,
    /// Micro-steps per optimizer step [default: 10]
    #[arg(long)]
    pub accum: Option<u64>,
    /// Peak learning rate [default: 2e-3]
    #[arg(long)]
    pub lr: Option<f32>,
    /// Warm-up in optimizer steps [default: 10]
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Gradient clipping norm, 0 for none [default: 1]
    #[arg(long)]
    pub clip: Option<f32>,
    /// Weight decay [default: 0.1]
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Initial fp16 loss scale [default: 256]
    #[arg(long)]
    pub loss_scale: Option<f32>,
    /// Seed for weights and data order [default: 42]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from the weights of a llama2.c model file (legacy or version 1, e.g.
    /// stories15M.bin); the model shape comes from the file, so --model and the shape options
    /// are refused with it; with --resume the checkpoint's weights win
    #[arg(long, value_name = "FILE.bin")]
    pub init_from: Option<PathBuf>,
    /// Checkpoint directory [default: milbridge-run/checkpoint]
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Save every N optimizer steps, 0 for only at the end [default: 50]
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Resume from the checkpoint directory
    #[arg(long)]
    pub resume: bool,
    /// Write one JSON object per step to this file
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Loss-curve SVG written at the end [default: milbridge-run/loss.svg]
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Tokens to generate at the end, 0 for none [default: 300]
    #[arg(long)]
    pub sample_tokens: Option<usize>,
    /// Prompt of the final sample [default: "Once upon a time"]
    #[arg(long)]
    pub prompt: Option<String>,
}

impl TrainArgs {
    /// The configuration these arguments describe.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown preset or weight mode, or an invalid combination.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut cfg = TrainConfig::embedded_default();
        if let Some(name) = &self.model {
            cfg.model = ModelSpec::preset(name).ok_or_else(|| {
                Error::Config(format!(
                    "unknown model {name:?}; presets: {}",
                    ModelSpec::PRESETS.join(", ")
                ))
            })?;
        }
        let custom = [
            self.dim,
            self.hidden,
            self.layers,
            self.heads,
            self.kv_heads,
        ]
        .iter()
        .chain([&self.head_dim, &self.seq, &self.vocab])
        .any(Option::is_some);
        cfg.check_model_on_resume = custom || self.model.is_some();
        let m = &mut cfg.model;
        if custom {
            m.name = "custom".to_string();
        }
        if let Some(v) = self.dim {
            m.dim = v;
        }
        if let Some(v) = self.hidden {
            m.hidden = v;
        }
        if let Some(v) = self.layers {
            m.n_layers = v;
        }
        if let Some(v) = self.heads {
            m.n_heads = v;
            m.n_kv_heads = self.kv_heads.unwrap_or(v);
        }
        if let Some(v) = self.kv_heads {
            m.n_kv_heads = v;
        }
        match self.head_dim {
            Some(v) => m.head_dim = v,
            None if self.dim.is_some() || self.heads.is_some() => {
                m.head_dim = m.dim.checked_div(m.n_heads).unwrap_or(0);
            }
            None => {}
        }
        if let Some(v) = self.seq {
            m.seq = v;
        }
        if let Some(v) = self.vocab {
            m.vocab = v;
        }
        if let Some(path) = &self.init_from {
            let flags = [
                ("--model", self.model.is_some()),
                ("--dim", self.dim.is_some()),
                ("--hidden", self.hidden.is_some()),
                ("--layers", self.layers.is_some()),
                ("--heads", self.heads.is_some()),
                ("--kv-heads", self.kv_heads.is_some()),
                ("--head-dim", self.head_dim.is_some()),
                ("--seq", self.seq.is_some()),
                ("--vocab", self.vocab.is_some()),
            ];
            let given: Vec<&str> = flags.iter().filter(|f| f.1).map(|f| f.0).collect();
            if !given.is_empty() {
                return Err(Error::Config(format!(
                    "--init-from {} takes the model shape from the file; drop {}",
                    path.display(),
                    given.join(", ")
                )));
            }
            cfg.model = crate::llama2c::read_header(path)?.spec();
            cfg.check_model_on_resume = true;
            cfg.init_from = Some(path.clone());
        }
        if let Some(w) = &self.weights {
            cfg.compute = match w.as_str() {
                "reference" => Compute::Reference,
                other => Compute::Kernels(WeightMode::parse(other).ok_or_else(|| {
                    Error::Config(format!(
                        "unknown weight mode {other:?}; expected params, packed, packed-restage or reference"
                    ))
                })?),
            };
        }
        cfg.fast = self.fast;
        cfg.data.clone_from(&self.data);
        set(&mut cfg.steps, self.steps);
        set(&mut cfg.accum, self.accum);
        set(&mut cfg.lr, self.lr);
        set(&mut cfg.warmup, self.warmup);
        set(&mut cfg.grad_clip, self.clip);
        set(&mut cfg.adam.weight_decay, self.weight_decay);
        set(&mut cfg.loss_scale, self.loss_scale);
        set(&mut cfg.seed, self.seed);
        if self.checkpoint.is_some() {
            cfg.checkpoint.clone_from(&self.checkpoint);
        }
        set(&mut cfg.save_every, self.save_every);
        cfg.resume = self.resume;
        cfg.metrics.clone_from(&self.metrics);
        if self.plot.is_some() {
            cfg.plot.clone_from(&self.plot);
        }
        set(&mut cfg.sample_tokens, self.sample_tokens);
        if let Some(p) = &self.prompt {
            cfg.sample_prompt.clone_from(p);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn set<T: Copy>(dst: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *dst = v;
    }
}

/// `milbridge sample` arguments: generate text from a checkpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// Checkpoint directory written by `milbridge train`, or a llama2.c model file (.bin)
    #[arg(long, default_value = "milbridge-run/checkpoint")]
    pub checkpoint: PathBuf,
    /// llama2.c tokenizer.bin for the model's vocabulary [default: byte-level, vocab 256 only]
    #[arg(long, value_name = "tokenizer.bin")]
    pub tokenizer: Option<PathBuf>,
    /// Text to continue
    #[arg(long, default_value = "Once upon a time")]
    pub prompt: String,
    /// Tokens to generate
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Softmax temperature; 0 picks the most likely token
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Seed of the sampler
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// params, packed or reference
    #[arg(long, default_value = "params")]
    pub weights: String,
}

impl Default for SampleArgs {
    fn default() -> Self {
        SampleArgs {
            checkpoint: PathBuf::from("milbridge-run/checkpoint"),
            tokenizer: None,
            prompt: "Once upon a time".to_string(),
            tokens: 200,
            temperature: 0.8,
            top_p: 0.9,
            seed: 42,
            weights: "params".to_string(),
        }
    }
}

/// `milbridge export` arguments: write a checkpoint's weights as a llama2.c model file.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint directory written by `milbridge train`
    #[arg(long, default_value = "milbridge-run/checkpoint")]
    pub checkpoint: PathBuf,
    /// The llama2.c model file to write (legacy format, what llama2.c's run.c reads)
    #[arg(long, value_name = "FILE.bin")]
    pub out: PathBuf,
}

/// Parses a `--weights` value.
///
/// # Errors
///
/// [`Error::Config`] for anything but `params`, `packed` or `reference`.
pub fn parse_compute(text: &str) -> Result<Compute> {
    match text {
        "reference" => Ok(Compute::Reference),
        other => WeightMode::parse(other)
            .map(Compute::Kernels)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown weight mode {other:?}; expected params, packed, packed-restage or reference"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_give_the_embedded_default() {
        let cfg = TrainArgs::default().config().expect("default");
        assert_eq!(cfg.model, ModelSpec::small());
        assert_eq!(cfg.compute, Compute::Kernels(WeightMode::Params));
        assert_eq!(cfg.accum, 10);
        assert!(cfg.data.is_none());
        assert_eq!(cfg.optimizer_steps(), 300);
    }

    #[test]
    fn presets_overrides_and_errors() {
        let args = TrainArgs {
            model: Some("stories15m".into()),
            layers: Some(2),
            weights: Some("packed".into()),
            steps: Some(15),
            accum: Some(4),
            ..TrainArgs::default()
        };
        let cfg = args.config().expect("config");
        assert_eq!(cfg.model.name, "custom");
        assert_eq!(cfg.model.n_layers, 2);
        assert_eq!(cfg.model.dim, 288);
        assert_eq!(cfg.compute, Compute::Kernels(WeightMode::Packed));
        assert_eq!(cfg.optimizer_steps(), 4);

        let heads = TrainArgs {
            dim: Some(96),
            heads: Some(3),
            ..TrainArgs::default()
        };
        let m = heads.config().expect("heads").model;
        assert_eq!((m.n_heads, m.n_kv_heads, m.head_dim), (3, 3, 32));

        let e = TrainArgs {
            model: Some("gpt5".into()),
            ..TrainArgs::default()
        }
        .config();
        assert!(
            e.expect_err("unknown")
                .to_string()
                .contains("unknown model \"gpt5\"")
        );
        let e = TrainArgs {
            weights: Some("dense".into()),
            ..TrainArgs::default()
        }
        .config();
        assert!(
            e.expect_err("mode")
                .to_string()
                .contains("unknown weight mode \"dense\"")
        );
        let e = TrainArgs {
            accum: Some(0),
            ..TrainArgs::default()
        }
        .config();
        assert_eq!(
            e.expect_err("accum").to_string(),
            "invalid configuration: accum must be at least 1, got 0"
        );
        assert_eq!(parse_compute("reference").expect("ok"), Compute::Reference);
    }
}
