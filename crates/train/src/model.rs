//! The model: Llama 2 as llama2.c defines it (RMSNorm, RoPE, causal multi-head attention with
//! grouped-query heads when `n_kv_heads < n_heads`, SwiGLU FFN, token embedding tied to the
//! classifier), its presets, and its parameters as f32 master weights.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The shape of a model. Matrices are stored `[out, in]` row-major (PyTorch's `nn.Linear`
/// layout), so `y[o, t] = Σ_i W[o, i] x[i, t]` in the channel-first activation layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Preset name, or `custom`.
    pub name: String,
    /// Residual stream width.
    pub dim: usize,
    /// SwiGLU hidden width.
    pub hidden: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Sequence length of one training window.
    pub seq: usize,
    /// Vocabulary size (rows of the tied embedding).
    pub vocab: usize,
    /// Qwen3's per-head RMSNorm of the queries and keys (over `head_dim`, gains
    /// [`Layer::q_norm`]/[`Layer::k_norm`], epsilon [`crate::cpu::QK_NORM_EPS`]) between the
    /// projections and RoPE. Absent from older checkpoints' `state.json`, which read as `false`.
    #[serde(default)]
    pub qk_norm: bool,
}

impl ModelSpec {
    /// RoPE base: Llama's 10 000, or Qwen3's 1 000 000 for the q/k-norm (Qwen3) family.
    pub fn rope_theta(&self) -> f64 {
        if self.qk_norm {
            1.0e6
        } else {
            crate::cpu::ROPE_THETA
        }
    }

    /// Epsilon of the layer and final RMSNorms: Llama's 1e-5, or Qwen3's 1e-6 for the q/k-norm
    /// family.
    pub fn norm_eps(&self) -> f64 {
        if self.qk_norm {
            crate::cpu::QK_NORM_EPS
        } else {
            crate::cpu::NORM_EPS
        }
    }

    /// The test model: llama2.c's stories260K-like size with a byte vocabulary (2 layers,
    /// dim 64, 4 heads over 2 kv heads, hidden 128, seq 32, vocab 256).
    pub fn tiny() -> ModelSpec {
        ModelSpec::named("tiny", 64, 128, 2, 4, 2, 16, 32, 256)
    }

    /// The embedded default's model: a small byte-level model that learns the bundled corpus
    /// on two cores in a few minutes (4 layers, dim 128, 4 heads, hidden 352, seq 64).
    pub fn small() -> ModelSpec {
        ModelSpec::named("small", 128, 352, 4, 4, 4, 32, 64, 256)
    }

    /// llama2.c's stories15M (dim 288, hidden 768, 6 layers, 6 heads, seq 256, vocab 32000).
    pub fn stories15m() -> ModelSpec {
        ModelSpec::named("stories15m", 288, 768, 6, 6, 6, 48, 256, 32000)
    }

    /// llama2.c's stories42M (dim 512, hidden 1376, 8 layers, 8 heads, seq 256, vocab 32000).
    pub fn stories42m() -> ModelSpec {
        ModelSpec::named("stories42m", 512, 1376, 8, 8, 8, 64, 256, 32000)
    }

    /// llama2.c's stories110M (dim 768, hidden 2048, 12 layers, 12 heads, seq 256, vocab
    /// 32000), training_dynamic's default.
    pub fn stories110m() -> ModelSpec {
        ModelSpec::named("stories110m", 768, 2048, 12, 12, 12, 64, 256, 32000)
    }

    /// Qwen3-0.6B's shape (dim 1024, 16 heads over 8 kv heads of 128, so q_dim 2048 ≠ dim,
    /// hidden 3072, 28 layers, vocab 151936, seq 256) with Qwen3's q/k RMSNorm. Token ids of
    /// the u16 data stay below 65536, a subset of the vocabulary (see [`crate::data`]).
    pub fn qwen3_0_6b() -> ModelSpec {
        ModelSpec {
            qk_norm: true,
            ..ModelSpec::named("qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 256, 151_936)
        }
    }

    /// Qwen3-0.6B's head structure scaled down, on the byte vocabulary (graphs'
    /// `ModelConfig::qwen3_tiny`): dim 64, 4 query heads over 2 kv heads of 32 (q_dim 128 =
    /// 2 × dim), hidden 192, 2 layers, seq 32, vocab 256, q/k RMSNorm.
    pub fn qwen3_tiny() -> ModelSpec {
        ModelSpec {
            qk_norm: true,
            ..ModelSpec::named("qwen3-tiny", 64, 192, 2, 4, 2, 32, 32, 256)
        }
    }

    /// A preset by name: `tiny`, `small`, `stories15m`, `stories42m`, `stories110m`,
    /// `qwen3-0.6b`, `qwen3-tiny`.
    pub fn preset(name: &str) -> Option<ModelSpec> {
        Some(match name {
            "tiny" => ModelSpec::tiny(),
            "small" => ModelSpec::small(),
            "stories15m" => ModelSpec::stories15m(),
            "stories42m" => ModelSpec::stories42m(),
            "stories110m" => ModelSpec::stories110m(),
            "qwen3-0.6b" | "qwen3_0_6b" => ModelSpec::qwen3_0_6b(),
            "qwen3-tiny" | "qwen3_tiny" => ModelSpec::qwen3_tiny(),
            _ => return None,
        })
    }

    /// Names [`ModelSpec::preset`] accepts.
    pub const PRESETS: &'static [&'static str] = &[
        "tiny",
        "small",
        "stories15m",
        "stories42m",
        "stories110m",
        "qwen3-0.6b",
        "qwen3-tiny",
    ];

    #[allow(clippy::too_many_arguments, reason = "a model shape is eight numbers")]
    fn named(
        name: &str,
        dim: usize,
        hidden: usize,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        seq: usize,
        vocab: usize,
    ) -> ModelSpec {
        ModelSpec {
            name: name.to_string(),
            dim,
            hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            seq,
            vocab,
            qk_norm: false,
        }
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Checks that the shape is trainable.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first violated rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let sizes = [
            ("dim", self.dim),
            ("hidden", self.hidden),
            ("layers", self.n_layers),
            ("heads", self.n_heads),
            ("kv heads", self.n_kv_heads),
            ("head dim", self.head_dim),
            ("seq", self.seq),
            ("vocab", self.vocab),
        ];
        for (what, v) in sizes {
            if v == 0 {
                return bad(format!("{what} must be positive, got 0"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "heads {} is not a multiple of kv heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head dim {} must be even for rope", self.head_dim));
        }
        Ok(())
    }

    /// Parameter count.
    pub fn param_count(&self) -> usize {
        self.vocab * self.dim + self.dim + self.n_layers * self.layer_param_count()
    }

    fn layer_param_count(&self) -> usize {
        let (d, q, kv, h) = (self.dim, self.q_dim(), self.kv_dim(), self.hidden);
        q * d + 2 * kv * d + d * q + 3 * h * d + 2 * d + self.qk_norm_len() * 2
    }

    /// Length of each q/k-norm gain: `head_dim` with [`ModelSpec::qk_norm`], else 0.
    pub fn qk_norm_len(&self) -> usize {
        if self.qk_norm { self.head_dim } else { 0 }
    }
}

/// One transformer block's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Query projection `[q_dim, dim]`.
    pub wq: Vec<f32>,
    /// Key projection `[kv_dim, dim]`.
    pub wk: Vec<f32>,
    /// Value projection `[kv_dim, dim]`.
    pub wv: Vec<f32>,
    /// Output projection `[dim, q_dim]`.
    pub wo: Vec<f32>,
    /// Gate projection `[hidden, dim]`.
    pub w1: Vec<f32>,
    /// Down projection `[dim, hidden]`.
    pub w2: Vec<f32>,
    /// Up projection `[hidden, dim]`.
    pub w3: Vec<f32>,
    /// Attention RMSNorm gain `[dim]`.
    pub rms_att: Vec<f32>,
    /// FFN RMSNorm gain `[dim]`.
    pub rms_ffn: Vec<f32>,
    /// Qwen3 query-head RMSNorm gain `[head_dim]`, shared by all query heads; empty without
    /// [`ModelSpec::qk_norm`].
    pub q_norm: Vec<f32>,
    /// Qwen3 key-head RMSNorm gain `[head_dim]`; empty without [`ModelSpec::qk_norm`].
    pub k_norm: Vec<f32>,
}

/// All parameters (also used for gradients and Adam moments, which have the same shapes).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Token embedding `[vocab, dim]`, tied to the classifier.
    pub embed: Vec<f32>,
    /// Final RMSNorm gain `[dim]`.
    pub rms_final: Vec<f32>,
    /// The blocks.
    pub layers: Vec<Layer>,
}

/// The q/k-norm gains of a layer (Qwen3 only), in checkpoint order after [`LAYER_TENSORS`].
pub const QK_NORM_TENSORS: [&str; 2] = ["attention.q_norm.weight", "attention.k_norm.weight"];

/// The nine tensors of every layer, in checkpoint order.
pub const LAYER_TENSORS: [&str; 9] = [
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "attention.wo.weight",
    "feed_forward.w1.weight",
    "feed_forward.w2.weight",
    "feed_forward.w3.weight",
    "attention_norm.weight",
    "ffn_norm.weight",
];

impl Params {
    /// All zeros in the shapes of `spec`.
    pub fn zeros(spec: &ModelSpec) -> Params {
        let (d, q, kv, h) = (spec.dim, spec.q_dim(), spec.kv_dim(), spec.hidden);
        let layer = Layer {
            wq: vec![0.0; q * d],
            wk: vec![0.0; kv * d],
            wv: vec![0.0; kv * d],
            wo: vec![0.0; d * q],
            w1: vec![0.0; h * d],
            w2: vec![0.0; d * h],
            w3: vec![0.0; h * d],
            rms_att: vec![0.0; d],
            rms_ffn: vec![0.0; d],
            q_norm: vec![0.0; spec.qk_norm_len()],
            k_norm: vec![0.0; spec.qk_norm_len()],
        };
        Params {
            embed: vec![0.0; spec.vocab * d],
            rms_final: vec![0.0; d],
            layers: vec![layer; spec.n_layers],
        }
    }

    /// Deterministic initialisation from `seed` (llama2.c's `train.py` scheme): every matrix
    /// and the embedding normal with std 0.02, the residual-branch outputs (`wo`, `w2`) with
    /// std `0.02 / sqrt(2 n_layers)`, RMSNorm gains (q/k-norm gains too) 1.
    pub fn init(spec: &ModelSpec, seed: u64) -> Params {
        let mut p = Params::zeros(spec);
        let std = 0.02;
        let res_std = 0.02 / (2.0 * spec.n_layers as f64).sqrt();
        p.rms_final.fill(1.0);
        let mut random: Vec<(&mut [f32], f64)> = vec![(&mut p.embed[..], std)];
        for l in &mut p.layers {
            l.rms_att.fill(1.0);
            l.rms_ffn.fill(1.0);
            l.q_norm.fill(1.0);
            l.k_norm.fill(1.0);
            random.extend([
                (&mut l.wq[..], std),
                (&mut l.wk[..], std),
                (&mut l.wv[..], std),
                (&mut l.wo[..], res_std),
                (&mut l.w1[..], std),
                (&mut l.w2[..], res_std),
                (&mut l.w3[..], std),
            ]);
        }
        // Each INIT_CHUNK-element chunk of each matrix draws from its own stream, so the
        // values do not depend on how the chunks are spread over threads.
        const INIT_CHUNK: usize = 1 << 20;
        let mut work = Vec::new();
        for (t, (tensor, s)) in random.into_iter().enumerate() {
            for (c, chunk) in tensor.chunks_mut(INIT_CHUNK).enumerate() {
                let stream = 0x1417_0000_0000 ^ ((t as u64) << 24) ^ c as u64;
                work.push((stream, chunk, s));
            }
        }
        crate::par::map(work, |(stream, chunk, s)| {
            let mut rng = Rng::stream(seed, stream);
            for x in chunk {
                *x = (rng.normal() * s) as f32;
            }
        });
        p
    }

    /// Every tensor with its checkpoint name, shape and whether weight decay applies, in a
    /// fixed order (embedding, final norm, then each layer).
    pub fn tensors(&self, spec: &ModelSpec) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out = vec![
            (
                "tok_embeddings.weight".to_string(),
                vec![spec.vocab, spec.dim],
                &self.embed[..],
            ),
            (
                "norm.weight".to_string(),
                vec![spec.dim],
                &self.rms_final[..],
            ),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            for ((name, shape), data) in
                LAYER_TENSORS.iter().zip(layer_shapes(spec)).zip(l.slices())
            {
                out.push((format!("layers.{i}.{name}"), shape, data));
            }
            if spec.qk_norm {
                for (name, data) in QK_NORM_TENSORS.iter().zip([&l.q_norm, &l.k_norm]) {
                    out.push((format!("layers.{i}.{name}"), vec![spec.head_dim], &data[..]));
                }
            }
        }
        out
    }

    /// Mutable views of every tensor, in the order of [`Params::tensors`], each with whether
    /// weight decay applies (matrices and the embedding) or not (norm gains). The q/k-norm
    /// gains are included when present (non-empty, as [`Params::zeros`] makes them exactly
    /// when the spec has [`ModelSpec::qk_norm`]).
    pub fn tensors_mut(&mut self) -> Vec<(&mut Vec<f32>, bool)> {
        let mut out: Vec<(&mut Vec<f32>, bool)> =
            vec![(&mut self.embed, true), (&mut self.rms_final, false)];
        for l in &mut self.layers {
            out.extend([
                (&mut l.wq, true),
                (&mut l.wk, true),
                (&mut l.wv, true),
                (&mut l.wo, true),
                (&mut l.w1, true),
                (&mut l.w2, true),
                (&mut l.w3, true),
                (&mut l.rms_att, false),
                (&mut l.rms_ffn, false),
            ]);
            if !l.q_norm.is_empty() {
                out.extend([(&mut l.q_norm, false), (&mut l.k_norm, false)]);
            }
        }
        out
    }

    /// Sets every element to zero (gradient accumulators between optimizer steps).
    pub fn zero(&mut self) {
        for (t, _) in self.tensors_mut() {
            t.fill(0.0);
        }
    }
}

impl Layer {
    fn slices(&self) -> [&[f32]; 9] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w1,
            &self.w2,
            &self.w3,
            &self.rms_att,
            &self.rms_ffn,
        ]
    }
}

fn layer_shapes(spec: &ModelSpec) -> [Vec<usize>; 9] {
    let (d, q, kv, h) = (spec.dim, spec.q_dim(), spec.kv_dim(), spec.hidden);
    [
        vec![q, d],
        vec![kv, d],
        vec![kv, d],
        vec![d, q],
        vec![h, d],
        vec![d, h],
        vec![h, d],
        vec![d],
        vec![d],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_count_parameters() {
        for name in ModelSpec::PRESETS {
            let spec = ModelSpec::preset(name).expect("preset");
            spec.validate().expect("valid preset");
        }
        // stories15M: 288·32000 embedding + 6 layers of (4·288² + 3·288·768 + 2·288) + 288
        let s = ModelSpec::stories15m();
        assert_eq!(
            s.param_count(),
            288 * 32000 + 288 + 6 * (4 * 288 * 288 + 3 * 288 * 768 + 576)
        );
        assert_eq!(ModelSpec::qwen3_0_6b().q_dim(), 2048);
        assert_eq!(ModelSpec::qwen3_0_6b().kv_dim(), 1024);
        assert!(ModelSpec::qwen3_0_6b().qk_norm && ModelSpec::qwen3_tiny().qk_norm);
        assert!(!ModelSpec::stories110m().qk_norm);
        // Qwen3-0.6B (tied embedding counted once): 596M parameters
        let layer = 2 * 2048 * 1024 + 2 * 1024 * 1024 + 3 * 3072 * 1024 + 2 * 1024 + 2 * 128;
        assert_eq!(
            ModelSpec::qwen3_0_6b().param_count(),
            151_936 * 1024 + 1024 + 28 * layer
        );
        assert!(ModelSpec::preset("nope").is_none());
    }

    #[test]
    fn invalid_shapes_are_named() {
        let mut s = ModelSpec::tiny();
        s.n_kv_heads = 3;
        assert_eq!(
            s.validate().expect_err("bad").to_string(),
            "invalid configuration: heads 4 is not a multiple of kv heads 3"
        );
        let mut s = ModelSpec::tiny();
        s.head_dim = 15;
        assert!(s.validate().is_err());
        let mut s = ModelSpec::tiny();
        s.seq = 0;
        assert_eq!(
            s.validate().expect_err("bad").to_string(),
            "invalid configuration: seq must be positive, got 0"
        );
    }

    #[test]
    fn init_is_deterministic_and_scaled() {
        let spec = ModelSpec::tiny();
        let a = Params::init(&spec, 7);
        let b = Params::init(&spec, 7);
        assert_eq!(a, b);
        assert_ne!(a, Params::init(&spec, 8));
        let std = |v: &[f32]| {
            (v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>() / v.len() as f64).sqrt()
        };
        assert!((std(&a.embed) - 0.02).abs() < 0.002);
        assert!((std(&a.layers[0].w2) - 0.01).abs() < 0.001, "0.02/sqrt(4)");
        assert!(a.layers[1].rms_ffn.iter().all(|&g| g == 1.0));
        assert_ne!(
            a.layers[0].wq, a.layers[1].wq,
            "every matrix draws from its own stream"
        );
        assert_ne!(a.layers[0].wq, a.layers[0].wk);
        let tensors = a.tensors(&spec);
        assert_eq!(tensors.len(), 2 + 9 * spec.n_layers);
        let total: usize = tensors.iter().map(|t| t.2.len()).sum();
        assert_eq!(total, spec.param_count());
        for (name, shape, data) in &tensors {
            assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        }
        assert_eq!(tensors[2].0, "layers.0.attention.wq.weight");

        let q = ModelSpec::qwen3_tiny();
        let p = Params::init(&q, 7);
        let tensors = p.tensors(&q);
        let n = tensors.len();
        assert_eq!(n, 2 + 11 * q.n_layers);
        let total: usize = tensors.iter().map(|t| t.2.len()).sum();
        assert_eq!(total, q.param_count());
        assert_eq!(tensors[2 + 9].0, "layers.0.attention.q_norm.weight");
        assert_eq!(tensors[2 + 10].1, vec![32]);
        assert!(p.layers[1].k_norm.iter().all(|&g| g == 1.0));
        let mut p = p;
        let muts = p.tensors_mut();
        assert_eq!(muts.len(), n);
        assert!(
            !muts[2 + 9].1 && !muts[2 + 10].1,
            "no weight decay on q/k-norm gains"
        );
    }
}
