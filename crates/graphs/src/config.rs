//! Model configurations (Llama-2 / llama2.c "stories" models, Qwen3-0.6B) and the weight mode.

/// How a kernel receives its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightMode {
    /// maderix/ANE `training_dynamic`: weights packed into the spatial (last) dimension of the
    /// single activation input and sliced apart inside the program (mil-spec 8.4 (a)); kernels
    /// without weights pack their activations along channels (8.4 (b)).
    Packed,
    /// maderix/ANE PR #22: every activation and every weight is its own function parameter,
    /// activations first, then weights (`ane_bridge_compile_dyn`'s convention, mil-spec 8.4 (c)).
    Params,
}

/// A Llama-2-architecture model: RMSNorm, RoPE (adjacent pairs), causal attention with optional
/// grouped-query heads and Qwen3's per-head q/k RMSNorm, SwiGLU FFN, and a classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Model (residual stream) width.
    pub dim: usize,
    /// FFN hidden width.
    pub hidden: usize,
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (`n_heads` for multi-head attention; fewer for grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head (`dim / n_heads` for llama2.c models; 128 for Qwen3-0.6B).
    pub head_dim: usize,
    /// Sequence length (tokens per kernel evaluation).
    pub seq: usize,
    /// Vocabulary size (classifier rows).
    pub vocab: usize,
    /// Qwen3's RMSNorm of each query and key head (over `head_dim`) before RoPE.
    pub qk_norm: bool,
    /// RoPE base (10000 for Llama 2, 1e6 for Qwen3).
    pub rope_theta: f64,
    /// RMSNorm epsilon (1e-5 for Llama 2, 1e-6 for Qwen3).
    pub norm_eps: f64,
    /// Scale of each residual branch: `x + residual_scale * f(x)`. 1.0 is the Llama definition;
    /// maderix/ANE's dynamic pipeline uses `1 / sqrt(2 * n_layers)`
    /// ([`ModelConfig::with_maderix_residual_scale`]).
    pub residual_scale: f64,
}

/// Why a configuration cannot be generated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A size is zero.
    #[error("{field} must be at least 1, got 0")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// Query heads are not a multiple of key/value heads.
    #[error("n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")]
    Heads {
        /// Query heads.
        n_heads: usize,
        /// Key/value heads.
        n_kv_heads: usize,
    },
    /// RoPE rotates pairs, so the head width must be even.
    #[error("head_dim {0} must be even for rotary embeddings")]
    OddHeadDim(usize),
    /// Packed kernels store per-head vectors in a column of a `dim`-row input.
    #[error("head_dim {head_dim} must not exceed dim {dim}")]
    HeadDimTooLarge {
        /// Head width.
        head_dim: usize,
        /// Model width.
        dim: usize,
    },
    /// A derived size does not fit MIL's int32 shape values.
    #[error("{what} = {value} does not fit int32")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value.
        value: usize,
    },
    /// A float parameter is out of range.
    #[error("{field} must be finite and positive, got {value}")]
    BadFloat {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

impl ModelConfig {
    /// llama2.c's stories15M: dim 288, hidden 768, 6 layers, 6 heads, seq 256, vocab 32000.
    pub fn stories15m() -> ModelConfig {
        ModelConfig::llama(288, 768, 6, 6, 6, 256, 32000)
    }

    /// llama2.c's stories42M: dim 512, hidden 1376, 8 layers, 8 heads, seq 1024, vocab 32000.
    pub fn stories42m() -> ModelConfig {
        ModelConfig::llama(512, 1376, 8, 8, 8, 1024, 32000)
    }

    /// llama2.c's stories110M (maderix/ANE's `stories110m.h`): dim 768, hidden 2048, 12 layers,
    /// 12 heads of 64, seq 256, vocab 32000.
    pub fn stories110m() -> ModelConfig {
        ModelConfig::llama(768, 2048, 12, 12, 12, 256, 32000)
    }

    /// Qwen3-0.6B (maderix/ANE's `qwen3_06b.h`): dim 1024, 16 query heads and 8 key/value heads
    /// of 128 (q_dim 2048 ≠ dim), hidden 3072, 28 layers, seq 256, vocab 151936, q/k RMSNorm,
    /// RoPE base 1e6, RMSNorm epsilon 1e-6.
    pub fn qwen3_0_6b() -> ModelConfig {
        ModelConfig {
            dim: 1024,
            hidden: 3072,
            n_layers: 28,
            n_heads: 16,
            n_kv_heads: 8,
            head_dim: 128,
            seq: 256,
            vocab: 151936,
            qk_norm: true,
            rope_theta: 1_000_000.0,
            norm_eps: 1e-6,
            residual_scale: 1.0,
        }
    }

    /// A tiny llama2.c-like model for tests (stories260K-sized): dim 64, hidden 128, 2 layers,
    /// 4 heads of 16, seq 32, vocab 256.
    pub fn tiny() -> ModelConfig {
        ModelConfig::llama(64, 128, 2, 4, 4, 32, 256)
    }

    /// [`ModelConfig::tiny`] with grouped-query attention: 4 query heads, 2 key/value heads.
    pub fn tiny_gqa() -> ModelConfig {
        ModelConfig {
            n_kv_heads: 2,
            ..ModelConfig::tiny()
        }
    }

    /// Qwen3-0.6B's head structure scaled down for tests: dim 64, 4 query heads and 2 key/value
    /// heads of 32 (q_dim 128 = 2 × dim), hidden 192, 2 layers, seq 32, vocab 256, q/k RMSNorm.
    pub fn qwen3_tiny() -> ModelConfig {
        ModelConfig {
            dim: 64,
            hidden: 192,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 32,
            seq: 32,
            vocab: 256,
            ..ModelConfig::qwen3_0_6b()
        }
    }

    fn llama(
        dim: usize,
        hidden: usize,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
        seq: usize,
        vocab: usize,
    ) -> ModelConfig {
        ModelConfig {
            dim,
            hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim: dim / n_heads,
            seq,
            vocab,
            qk_norm: false,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            residual_scale: 1.0,
        }
    }

    /// The same model with maderix/ANE's scaled residuals, `1 / sqrt(2 * n_layers)`.
    pub fn with_maderix_residual_scale(self) -> ModelConfig {
        let residual_scale = 1.0 / (2.0 * self.n_layers as f64).sqrt();
        ModelConfig {
            residual_scale,
            ..self
        }
    }

    /// Query projection width, `n_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Key/value projection width, `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Query heads per key/value head.
    pub fn gqa_ratio(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }

    /// Channels of the flattened attention probabilities, `n_heads * seq` (maderix `SCORE_CH`).
    pub fn score_channels(&self) -> usize {
        self.n_heads * self.seq
    }

    /// The attention score scale `1 / sqrt(head_dim)`.
    pub fn attn_scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// Checks everything the generators rely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("dim", self.dim),
            ("hidden", self.hidden),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("seq", self.seq),
            ("vocab", self.vocab),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ConfigError::Heads {
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
            });
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(ConfigError::OddHeadDim(self.head_dim));
        }
        if self.head_dim > self.dim {
            return Err(ConfigError::HeadDimTooLarge {
                head_dim: self.head_dim,
                dim: self.dim,
            });
        }
        let limit = i32::MAX as usize;
        let sizes = [
            ("q_dim", self.n_heads.checked_mul(self.head_dim)),
            ("n_heads * seq", self.n_heads.checked_mul(self.seq)),
            ("seq * head_dim", self.seq.checked_mul(self.head_dim)),
            (
                "2 * seq + 3 * hidden",
                self.hidden
                    .checked_mul(3)
                    .and_then(|h| h.checked_add(2 * self.seq)),
            ),
            ("seq + vocab", self.vocab.checked_add(self.seq)),
            ("seq + dim", self.dim.checked_add(self.seq)),
        ];
        for (what, value) in sizes {
            match value {
                Some(value) if value <= limit => {}
                Some(value) => return Err(ConfigError::TooLarge { what, value }),
                None => {
                    return Err(ConfigError::TooLarge {
                        what,
                        value: usize::MAX,
                    });
                }
            }
        }
        for (field, value) in [
            ("rope_theta", self.rope_theta),
            ("norm_eps", self.norm_eps),
            ("residual_scale", self.residual_scale),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::BadFloat {
                    field,
                    value: value.to_string(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn assert_valid(&self) {
        if let Err(err) = self.validate() {
            panic!("generator precondition: ModelConfig::validate() must pass: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_sized() {
        for cfg in [
            ModelConfig::stories15m(),
            ModelConfig::stories42m(),
            ModelConfig::stories110m(),
            ModelConfig::qwen3_0_6b(),
            ModelConfig::tiny(),
            ModelConfig::tiny_gqa(),
            ModelConfig::qwen3_tiny(),
        ] {
            cfg.validate().unwrap();
        }
        let s = ModelConfig::stories110m();
        assert_eq!(
            (s.head_dim, s.q_dim(), s.kv_dim(), s.gqa_ratio()),
            (64, 768, 768, 1)
        );
        assert_eq!(s.score_channels(), 12 * 256);
        let q = ModelConfig::qwen3_0_6b();
        assert_eq!((q.q_dim(), q.kv_dim(), q.gqa_ratio()), (2048, 1024, 2));
        let t = ModelConfig::qwen3_tiny();
        assert_eq!(
            (t.q_dim(), t.kv_dim(), t.gqa_ratio(), t.qk_norm),
            (128, 64, 2, true)
        );
        assert_eq!(ModelConfig::stories15m().head_dim, 48);
        let m = ModelConfig::stories110m().with_maderix_residual_scale();
        assert!((m.residual_scale - 1.0 / 24f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn invalid_configs_are_reported() {
        let bad = ModelConfig {
            n_kv_heads: 3,
            ..ModelConfig::tiny()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::Heads {
                n_heads: 4,
                n_kv_heads: 3
            })
        );
        let bad = ModelConfig {
            head_dim: 15,
            ..ModelConfig::tiny()
        };
        assert_eq!(bad.validate(), Err(ConfigError::OddHeadDim(15)));
        let bad = ModelConfig {
            seq: 0,
            ..ModelConfig::tiny()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "seq must be at least 1, got 0"
        );
        let bad = ModelConfig {
            norm_eps: f64::NAN,
            ..ModelConfig::tiny()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::BadFloat {
                field: "norm_eps",
                ..
            })
        ));
        let bad = ModelConfig {
            vocab: usize::MAX,
            ..ModelConfig::tiny()
        };
        assert!(matches!(bad.validate(), Err(ConfigError::TooLarge { .. })));
    }
}
