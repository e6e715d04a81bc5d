//! Text generation: temperature and nucleus (top-p) sampling with a seeded generator, through
//! the same forward pass (and kernels) as training.
//!
//! The kernels have a fixed sequence length, so each new token runs one forward pass over the
//! current window (the prompt and what was generated so far, the last `seq` tokens once longer),
//! padded after its end; causal attention makes the padding invisible to the positions read.

use std::path::Path;

use crate::backend::Backend;
use crate::ckpt;
use crate::config::{SampleArgs, parse_compute};
use crate::error::{Error, Result};
use crate::llama2c;
use crate::model::{ModelSpec, Params};
use crate::rng::Rng;
use crate::step::{self, Workspace};
use crate::tokenizer::{ByteTokenizer, Llama2cTokenizer, Tokenizer};

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Tokens to generate.
    pub tokens: usize,
    /// Softmax temperature; 0 (or below) picks the most likely token.
    pub temperature: f32,
    /// Nucleus mass in `(0, 1]`; 1 samples from the whole distribution.
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

/// Generates `opts.tokens` token ids after `prompt` (ids `>= 65536` are never produced).
///
/// # Errors
///
/// A backend call failed, or the prompt holds an id outside the vocabulary or above the u16
/// range the windows hold (a vocabulary above 65536, such as Qwen3's 151936, is usable only
/// below 65536).
pub fn generate(
    backend: &mut dyn Backend,
    params: &Params,
    spec: &ModelSpec,
    prompt: &[u32],
    opts: &SampleOptions,
) -> Result<Vec<u32>> {
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= spec.vocab) {
        return Err(Error::Config(format!(
            "prompt token {bad} is outside vocab {}",
            spec.vocab
        )));
    }
    if let Some(&bad) = prompt.iter().find(|&&id| u16::try_from(id).is_err()) {
        return Err(Error::Config(format!(
            "prompt token {bad} does not fit the u16 token windows (ids stop at 65535)"
        )));
    }
    let mut rng = Rng::stream(opts.seed, 0x5A3F);
    let mut ws = Workspace::new(spec);
    let mut history: Vec<u16> = prompt.iter().map(|&id| id as u16).collect();
    if history.is_empty() {
        history.push(u16::from(b'\n'));
    }
    let mut out = Vec::with_capacity(opts.tokens);
    let mut window = vec![0u16; spec.seq];
    let vocab = spec.vocab.min(usize::from(u16::MAX) + 1);
    let mut probs = vec![0.0f64; vocab];
    for _ in 0..opts.tokens {
        let start = history.len().saturating_sub(spec.seq);
        let ctx = &history[start..];
        window.fill(0);
        window[..ctx.len()].copy_from_slice(ctx);
        step::forward(backend, params, &window, &mut ws)?;
        let pos = ctx.len() - 1;
        let logits = ws.logits();
        for (v, p) in probs.iter_mut().enumerate() {
            *p = f64::from(logits[v * spec.seq + pos]);
        }
        let next = pick(&mut probs, opts.temperature, opts.top_p, &mut rng);
        history.push(next as u16);
        out.push(next as u32);
    }
    Ok(out)
}

/// Picks a token from `logits` (overwritten with scratch values).
pub fn pick(logits: &mut [f64], temperature: f32, top_p: f32, rng: &mut Rng) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    };
    if temperature <= 0.0 || !temperature.is_finite() {
        return argmax();
    }
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for l in logits.iter_mut() {
        *l = ((*l - max) / f64::from(temperature)).exp();
        sum += *l;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top_p = f64::from(top_p.clamp(1e-6, 1.0));
    let mut kept = 0;
    let mut mass = 0.0;
    for &i in &order {
        mass += logits[i] / sum;
        kept += 1;
        if mass >= top_p {
            break;
        }
    }
    let r = rng.next_f64() * mass;
    let mut acc = 0.0;
    for &i in &order[..kept] {
        acc += logits[i] / sum;
        if r < acc {
            return i;
        }
    }
    order[kept - 1]
}

/// `milbridge sample`: loads a checkpoint (a directory written by `milbridge train`, or a
/// llama2.c model file when `args.checkpoint` is a file) and continues the prompt, with
/// llama2.c's `tokenizer.bin` when `args.tokenizer` is given, else the byte-level tokenizer.
///
/// # Errors
///
/// An unloadable checkpoint or tokenizer, a tokenizer whose size differs from the model's
/// vocabulary (or no tokenizer for a vocabulary that is not byte-level), a kernel failure.
pub fn sample(args: &SampleArgs) -> Result<String> {
    let (spec, params) = if args.checkpoint.is_file() {
        llama2c::read(&args.checkpoint)?
    } else {
        let c = ckpt::load(&args.checkpoint)?;
        (c.state.model, c.params)
    };
    match &args.tokenizer {
        Some(path) => {
            let tokenizer = Llama2cTokenizer::read(path)?;
            if tokenizer.vocab_size() != spec.vocab {
                return Err(Error::Config(format!(
                    "tokenizer {} has {} tokens, but the model's vocab is {}",
                    path.display(),
                    tokenizer.vocab_size(),
                    spec.vocab
                )));
            }
            sample_with(&args.checkpoint, &spec, &params, &tokenizer, args)
        }
        None if spec.vocab != ByteTokenizer::VOCAB => Err(Error::Config(format!(
            "checkpoint vocab {} needs its own tokenizer (--tokenizer tokenizer.bin); only the \
             byte-level vocab 256 is bundled",
            spec.vocab
        ))),
        None => sample_with(&args.checkpoint, &spec, &params, &ByteTokenizer, args),
    }
}

/// Generates from already-loaded weights with any tokenizer.
///
/// # Errors
///
/// A bad `--weights` value, a kernel that fails to compile or evaluate.
pub fn sample_with(
    _checkpoint: &Path,
    spec: &ModelSpec,
    params: &Params,
    tokenizer: &dyn Tokenizer,
    args: &SampleArgs,
) -> Result<String> {
    let compute = parse_compute(&args.weights)?;
    let (mut backend, _, _) = crate::train::make_backend(compute, spec, false)?;
    backend.load_weights(params)?;
    let opts = SampleOptions {
        tokens: args.tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    let prompt = tokenizer.encode(&args.prompt);
    let mut ids = generate(backend.as_mut(), params, spec, &prompt, &opts)?;
    if let Some(stop) = tokenizer.stop_token()
        && let Some(end) = ids.iter().position(|&id| id == stop)
    {
        ids.truncate(end);
    }
    Ok(format!(
        "{}{}",
        args.prompt,
        tokenizer.decode_after(prompt.last().copied(), &ids)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_temperature_is_argmax_and_top_p_limits_choices() {
        let mut rng = Rng::new(1);
        let mut l = vec![0.1, 3.0, -1.0, 2.9];
        assert_eq!(pick(&mut l, 0.0, 0.9, &mut rng), 1);
        // with a tiny nucleus only the most likely token can come out
        for _ in 0..50 {
            let mut l = vec![0.1, 3.0, -1.0, 2.9];
            assert_eq!(pick(&mut l, 1.0, 1e-3, &mut rng), 1);
        }
        // with the whole distribution, both leading tokens appear
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            let mut l = vec![0.1, 3.0, -1.0, 2.9];
            seen[pick(&mut l, 1.0, 1.0, &mut rng)] += 1;
        }
        assert!(seen[1] > 100 && seen[3] > 100, "{seen:?}");
    }

    #[test]
    fn generation_is_seeded_and_in_vocab() {
        let spec = ModelSpec {
            name: "micro".into(),
            dim: 16,
            hidden: 24,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 8,
            seq: 8,
            vocab: 256,
            qk_norm: false,
        };
        let params = Params::init(&spec, 1);
        let mut b = crate::backend::ReferenceBackend::new(&spec);
        b.load_weights(&params).expect("weights");
        let opts = SampleOptions {
            tokens: 12,
            temperature: 1.0,
            top_p: 0.95,
            seed: 3,
        };
        let a = generate(&mut b, &params, &spec, &[72, 105], &opts).expect("gen");
        let c = generate(&mut b, &params, &spec, &[72, 105], &opts).expect("gen");
        assert_eq!(a, c);
        assert_eq!(a.len(), 12);
        assert!(a.iter().all(|&t| t < 256));
        assert!(generate(&mut b, &params, &spec, &[300], &opts).is_err());
    }

    #[test]
    fn a_vocabulary_above_u16_is_an_error_for_wide_prompts_never_a_truncation() {
        let spec = ModelSpec {
            name: "wide".into(),
            dim: 8,
            hidden: 8,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            seq: 4,
            vocab: 70_000,
            qk_norm: true,
        };
        let params = Params::init(&spec, 1);
        let mut b = crate::backend::ReferenceBackend::new(&spec);
        b.load_weights(&params).expect("weights");
        let opts = SampleOptions {
            tokens: 3,
            temperature: 1.0,
            top_p: 1.0,
            seed: 3,
        };
        // 66000 is inside the vocabulary but `as u16` would make it 464
        let e = generate(&mut b, &params, &spec, &[66_000], &opts)
            .expect_err("wide id")
            .to_string();
        assert!(e.contains("does not fit the u16 token windows"), "{e}");
        let out = generate(&mut b, &params, &spec, &[65_535, 7], &opts).expect("gen");
        assert!(out.iter().all(|&t| t <= 65_535));
    }
}
