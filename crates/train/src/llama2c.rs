//! llama2.c model files: import published checkpoints (`stories15M.bin` and friends) to
//! fine-tune from them, and export what we trained so llama2.c's `run.c` can sample from it.
//!
//! # The formats
//!
//! **Legacy (version 0)**, what `run.c` reads and what [`write()`] produces: a header of seven
//! little-endian `i32` (`dim`, `hidden_dim`, `n_layers`, `n_heads`, `n_kv_heads`, `vocab_size`,
//! `seq_len`), then little-endian `f32` tensors in this order, each matrix `[out, in]` row-major
//! (our own layout, so no transposes):
//!
//! ```text
//! token_embedding [vocab, dim]
//! rms_att[L] [dim]   wq[L] [dim, dim]   wk[L] [kv_dim, dim]   wv[L] [kv_dim, dim]   wo[L] [dim, dim]
//! rms_ffn[L] [dim]   w1[L] [hidden, dim]   w2[L] [dim, hidden]   w3[L] [hidden, dim]
//! rms_final [dim]    freq_cis_real [seq_len, head_size/2]   freq_cis_imag [seq_len, head_size/2]
//! wcls [vocab, dim]  (only when vocab_size is negative: an unshared classifier)
//! ```
//!
//! `head_size = dim / n_heads` and `kv_dim = n_kv_heads * head_size`. The two RoPE tables are
//! `cos`/`sin` of `pos * 10000^(-2i/head_size)` computed in `f32` as llama2.c's `model.py` does
//! ([`rope_tables`]); `run.c` skips them and recomputes the angles, and so does our import.
//!
//! **Version 1** (read only): a 256-byte header (`u32` magic `0x616b3432` "ak42", `i32` version
//! 1, the same seven `i32`, a `u8` shared-classifier flag, zero padding), then `f32` tensors in
//! `export.py`'s `version1_export` order: every `rms_att`, every `rms_ffn`, `rms_final`, the
//! embedding, every `wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`, and `wcls` when not shared; no
//! RoPE tables. Version 2 (Q8_0 int8) is refused with a clear error.
//!
//! # Deliberate choices
//!
//! - Our model ties the classifier to the embedding, as llama2.c's own models do. A file with an
//!   unshared classifier (negative `vocab_size`, or version 1's flag 0; Meta's Llama 2 exports)
//!   is refused with an error naming the reason, rather than silently dropping `wcls`.
//! - The file size must equal what the header implies, to the byte; every truncated, oversized
//!   or inconsistent file (zero or negative sizes, heads that do not divide `dim`, kv heads that
//!   do not divide heads, an odd head size) is an [`Error::Checkpoint`], never a panic. A tensor
//!   holding NaN or infinity is refused too: training from it cannot work.
//! - Export needs `n_heads * head_dim == dim` (`run.c` assumes it) and writes the legacy format,
//!   with a positive `vocab_size` (shared classifier). It is written atomically (temp file,
//!   fsync, rename, directory fsync), like our checkpoints. Export ∘ import is the identity on
//!   the bytes of any file we wrote; a foreign file's RoPE tables are recomputed, not copied.
//!
//! # RoPE convention
//!
//! `run.c` rotates adjacent pairs `(2i, 2i+1)` of each head by `pos * 10000^(-2i/head_size)`,
//! which is exactly [`cpu::rope_angle`](crate::cpu::rope_angle) and [`cpu::rope`](crate::cpu::rope)
//! (they evaluate it in `f64`, `run.c` in `f32`; the formula is the same).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ckpt;
use crate::config::{ExportArgs, TrainConfig};
use crate::error::{Error, Result};
use crate::model::{Layer, ModelSpec, Params};

/// The magic number of version-1 files, `"ak42"` as a little-endian `u32`.
pub const V1_MAGIC: u32 = 0x616b_3432;
/// Bytes of the legacy header (seven `i32`).
pub const LEGACY_HEADER_BYTES: usize = 28;
/// Bytes of the version-1 header.
pub const V1_HEADER_BYTES: usize = 256;
/// The model name an imported file gets in [`ModelSpec::name`].
pub const MODEL_NAME: &str = "llama2c";

/// Which llama2.c layout a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Version 0: the 28-byte header, what `run.c` reads.
    Legacy,
    /// Version 1: the 256-byte "ak42" header, fp32 tensors in a different order.
    V1,
}

/// A validated llama2.c header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The layout.
    pub version: Version,
    /// Residual width.
    pub dim: usize,
    /// SwiGLU hidden width.
    pub hidden_dim: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Vocabulary size (always positive here; the sign of the legacy field is
    /// [`Header::shared_classifier`]).
    pub vocab_size: usize,
    /// Maximum sequence length.
    pub seq_len: usize,
    /// Whether the classifier is the embedding (no `wcls` tensor follows).
    pub shared_classifier: bool,
}

impl Header {
    /// Width of one head (`dim / n_heads`).
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// The model this header describes, named [`MODEL_NAME`].
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: MODEL_NAME.to_string(),
            dim: self.dim,
            hidden: self.hidden_dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_size(),
            seq: self.seq_len,
            vocab: self.vocab_size,
            qk_norm: false,
        }
    }

    /// Bytes of the header itself.
    pub fn header_bytes(&self) -> usize {
        match self.version {
            Version::Legacy => LEGACY_HEADER_BYTES,
            Version::V1 => V1_HEADER_BYTES,
        }
    }

    /// The exact file size this header implies (in `u128`, so no product can overflow).
    pub fn file_bytes(&self) -> u128 {
        let [d, h, l, s, v] = [
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.seq_len,
            self.vocab_size,
        ]
        .map(|x| x as u128);
        let kv = (self.n_kv_heads * self.head_size()) as u128;
        let per_layer = 2 * d + d * d + 2 * kv * d + d * d + 3 * h * d;
        let mut floats = v * d + l * per_layer + d;
        if self.version == Version::Legacy {
            floats += s * (self.head_size() as u128 / 2) * 2;
        }
        if !self.shared_classifier {
            floats += v * d;
        }
        self.header_bytes() as u128 + 4 * floats
    }

    /// Validates the seven header fields (`raw` in file order) of a file of `version`.
    fn from_raw(
        version: Version,
        raw: [i32; 7],
        shared_flag: Option<u8>,
    ) -> Result<Header, String> {
        let names = [
            "dim",
            "hidden_dim",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "vocab_size",
            "seq_len",
        ];
        for (name, &value) in names.iter().zip(&raw) {
            let bad = if *name == "vocab_size" && version == Version::Legacy {
                value == 0
            } else {
                value <= 0
            };
            if bad {
                return Err(format!(
                    "header field {name} is {value}; it must be positive (corrupt header?)"
                ));
            }
        }
        let [
            dim,
            hidden_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            vocab,
            seq_len,
        ] = raw;
        let shared_classifier = match (version, shared_flag) {
            (Version::Legacy, _) => vocab > 0,
            (Version::V1, Some(0)) => false,
            (Version::V1, Some(1)) => true,
            (Version::V1, flag) => {
                return Err(format!(
                    "shared-classifier flag is {flag:?}; version 1 allows only 0 or 1"
                ));
            }
        };
        let as_usize = |v: i32| v.unsigned_abs() as usize;
        let header = Header {
            version,
            dim: as_usize(dim),
            hidden_dim: as_usize(hidden_dim),
            n_layers: as_usize(n_layers),
            n_heads: as_usize(n_heads),
            n_kv_heads: as_usize(n_kv_heads),
            vocab_size: as_usize(vocab),
            seq_len: as_usize(seq_len),
            shared_classifier,
        };
        if !header.dim.is_multiple_of(header.n_heads) {
            return Err(format!(
                "n_heads {} does not divide dim {}",
                header.n_heads, header.dim
            ));
        }
        if header.n_kv_heads > header.n_heads || !header.n_heads.is_multiple_of(header.n_kv_heads) {
            return Err(format!(
                "n_kv_heads {} does not divide n_heads {}",
                header.n_kv_heads, header.n_heads
            ));
        }
        if !header.head_size().is_multiple_of(2) {
            return Err(format!(
                "head size {} (dim {} / n_heads {}) is odd; RoPE rotates pairs",
                header.head_size(),
                header.dim,
                header.n_heads
            ));
        }
        Ok(header)
    }

    /// Parses and validates the header at the start of `bytes` (at least
    /// [`V1_HEADER_BYTES`] bytes, or the whole file if shorter).
    fn parse(bytes: &[u8]) -> Result<Header, String> {
        let int = |i: usize| -> i32 {
            i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
        };
        if bytes.len() >= 4
            && u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) == V1_MAGIC
        {
            if bytes.len() < V1_HEADER_BYTES {
                return Err(format!(
                    "{} bytes is shorter than the {V1_HEADER_BYTES}-byte version-1 header (truncated file?)",
                    bytes.len()
                ));
            }
            let version = int(1);
            if version != 1 {
                return Err(match version {
                    2 => "version 2 (Q8_0 int8 weights) is not supported; export fp32 \
                          (legacy or version 1)"
                        .to_string(),
                    other => format!("version {other} is not supported (only legacy and 1)"),
                });
            }
            let raw = std::array::from_fn(|i| int(2 + i));
            return Header::from_raw(Version::V1, raw, Some(bytes[36]));
        }
        if bytes.len() < LEGACY_HEADER_BYTES {
            return Err(format!(
                "{} bytes is shorter than the {LEGACY_HEADER_BYTES}-byte header (truncated file?)",
                bytes.len()
            ));
        }
        Header::from_raw(Version::Legacy, std::array::from_fn(int), None)
    }

    /// Checks a file length against the header.
    fn check_size(&self, len: u64) -> Result<(), String> {
        if !self.shared_classifier {
            return Err(format!(
                "the classifier is not shared with the embedding (legacy vocab_size -{v}, or \
                 version 1's flag 0); this trainer ties the classifier to the embedding, so \
                 such files (e.g. Meta's Llama 2 exports) are not supported",
                v = self.vocab_size
            ));
        }
        let want = self.file_bytes();
        match u128::from(len).cmp(&want) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(format!(
                "{len} bytes, but the header (dim {}, hidden {}, {} layers, {} heads, {} kv heads, \
                 vocab {}, seq {}) needs exactly {want}: truncated file",
                self.dim,
                self.hidden_dim,
                self.n_layers,
                self.n_heads,
                self.n_kv_heads,
                self.vocab_size,
                self.seq_len
            )),
            std::cmp::Ordering::Greater => Err(format!(
                "{len} bytes, but the header (dim {}, hidden {}, {} layers, {} heads, {} kv heads, \
                 vocab {}, seq {}) needs exactly {want}: {} trailing bytes (wrong header or \
                 another format?)",
                self.dim,
                self.hidden_dim,
                self.n_layers,
                self.n_heads,
                self.n_kv_heads,
                self.vocab_size,
                self.seq_len,
                u128::from(len) - want
            )),
        }
    }
}

/// Reads and validates the header of the llama2.c file at `path`, including that the file's size
/// is exactly what the header implies (cheap: reads at most 256 bytes).
///
/// # Errors
///
/// [`Error::Checkpoint`] for an unreadable file, a bad header, an unshared classifier, or a size
/// mismatch.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut file =
        fs::File::open(path).map_err(|e| Error::ckpt(path, format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| Error::ckpt(path, format!("cannot stat: {e}")))?
        .len();
    let mut head = Vec::with_capacity(V1_HEADER_BYTES);
    (&mut file)
        .take(V1_HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::ckpt(path, format!("cannot read: {e}")))?;
    let header = Header::parse(&head).map_err(|r| Error::ckpt(path, r))?;
    header.check_size(len).map_err(|r| Error::ckpt(path, r))?;
    Ok(header)
}

/// Reads the llama2.c model file at `path` (legacy or version 1).
///
/// # Errors
///
/// As [`parse`], plus [`Error::Checkpoint`] when the file cannot be read.
pub fn read(path: &Path) -> Result<(ModelSpec, Params)> {
    let bytes = fs::read(path).map_err(|e| Error::ckpt(path, format!("cannot read: {e}")))?;
    let (header, params) = parse(&bytes, path)?;
    Ok((header.spec(), params))
}

/// Parses the bytes of a llama2.c model file (`path` only names it in errors).
///
/// # Errors
///
/// [`Error::Checkpoint`] naming the problem: a short or invalid header, a version other than
/// legacy and 1, an unshared classifier, a size that differs from what the header implies, a
/// model shape we cannot train, or a tensor holding NaN or infinity.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(Header, Params)> {
    let header = Header::parse(bytes).map_err(|r| Error::ckpt(path, r))?;
    header
        .check_size(bytes.len() as u64)
        .map_err(|r| Error::ckpt(path, r))?;
    let spec = header.spec();
    spec.validate()
        .map_err(|e| Error::ckpt(path, format!("header describes an untrainable model: {e}")))?;
    let mut reader = Floats {
        bytes: &bytes[header.header_bytes()..],
    };
    let mut params = Params::zeros(&spec);
    let n_layers = spec.n_layers;
    type Pick = fn(&mut Layer) -> &mut Vec<f32>;
    let per_layer = |reader: &mut Floats<'_>, params: &mut Params, pick: Pick| {
        for layer in &mut params.layers {
            reader.fill(pick(layer));
        }
    };
    let matrices: [Pick; 7] = [
        |l| &mut l.wq,
        |l| &mut l.wk,
        |l| &mut l.wv,
        |l| &mut l.wo,
        |l| &mut l.w1,
        |l| &mut l.w2,
        |l| &mut l.w3,
    ];
    match header.version {
        Version::Legacy => {
            reader.fill(&mut params.embed);
            per_layer(&mut reader, &mut params, |l| &mut l.rms_att);
            for pick in &matrices[..4] {
                per_layer(&mut reader, &mut params, *pick);
            }
            per_layer(&mut reader, &mut params, |l| &mut l.rms_ffn);
            for pick in &matrices[4..] {
                per_layer(&mut reader, &mut params, *pick);
            }
            reader.fill(&mut params.rms_final);
            reader.skip(2 * spec.seq * (spec.head_dim / 2));
        }
        Version::V1 => {
            per_layer(&mut reader, &mut params, |l| &mut l.rms_att);
            per_layer(&mut reader, &mut params, |l| &mut l.rms_ffn);
            reader.fill(&mut params.rms_final);
            reader.fill(&mut params.embed);
            for pick in &matrices {
                per_layer(&mut reader, &mut params, *pick);
            }
        }
    }
    assert!(
        reader.bytes.is_empty(),
        "invariant: check_size made the tensors fill the file exactly ({n_layers} layers)"
    );
    for (name, _, data) in params.tensors(&spec) {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::ckpt(
                path,
                format!("tensor {name} holds {} at element {i}", data[i]),
            ));
        }
    }
    Ok((header, params))
}

/// A cursor over little-endian `f32` values whose total length was checked beforehand.
struct Floats<'a> {
    bytes: &'a [u8],
}

impl Floats<'_> {
    fn fill(&mut self, out: &mut [f32]) {
        let (head, rest) = self.bytes.split_at(4 * out.len());
        for (dst, src) in out.iter_mut().zip(head.chunks_exact(4)) {
            *dst = f32::from_le_bytes(src.try_into().expect("4 bytes"));
        }
        self.bytes = rest;
    }

    fn skip(&mut self, floats: usize) {
        self.bytes = &self.bytes[4 * floats..];
    }
}

/// llama2.c's RoPE tables as `model.py`'s `precompute_freqs_cis` computes them in `f32`:
/// `freq[i] = 1 / 10000^(2i / head_size)`, then `cos` and `sin` of `t * freq[i]`, each
/// `[seq, head_size / 2]` row-major.
pub fn rope_tables(head_size: usize, seq: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_size / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / 10000.0f32.powf((2 * i) as f32 / head_size as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for t in 0..seq {
        for &freq in &freqs {
            let angle = t as f32 * freq;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Serialises `params` as a legacy llama2.c model file (what `run.c` reads), shared classifier.
///
/// # Errors
///
/// [`Error::Config`] when `run.c` cannot represent the model (`n_heads * head_dim != dim`, q/k
/// norm, a size above `i32::MAX`), when the shape is invalid, or when `params` does not have the shapes
/// of `spec`.
pub fn to_bytes(spec: &ModelSpec, params: &Params) -> Result<Vec<u8>> {
    spec.validate()?;
    if spec.q_dim() != spec.dim {
        return Err(Error::Config(format!(
            "llama2.c needs n_heads * head_dim == dim, but {} * {} != {}",
            spec.n_heads, spec.head_dim, spec.dim
        )));
    }
    if spec.qk_norm {
        return Err(Error::Config(
            "llama2.c has no q/k RMSNorm: a Qwen3-style model cannot be exported".into(),
        ));
    }
    if params.layers.len() != spec.n_layers {
        return Err(Error::Config(format!(
            "params have {} layers, the model {}",
            params.layers.len(),
            spec.n_layers
        )));
    }
    for (name, shape, data) in params.tensors(spec) {
        let want: usize = shape.iter().product();
        if data.len() != want {
            return Err(Error::Config(format!(
                "tensor {name} has {} values, the model's shape {shape:?} needs {want}",
                data.len()
            )));
        }
    }
    let fields = [
        ("dim", spec.dim),
        ("hidden", spec.hidden),
        ("layers", spec.n_layers),
        ("heads", spec.n_heads),
        ("kv heads", spec.n_kv_heads),
        ("vocab", spec.vocab),
        ("seq", spec.seq),
    ];
    let mut out = Vec::new();
    for (name, value) in fields {
        let v = i32::try_from(value).map_err(|_| {
            Error::Config(format!("{name} {value} does not fit llama2.c's i32 header"))
        })?;
        out.extend_from_slice(&v.to_le_bytes());
    }
    let header = Header::parse(&out).expect("invariant: a validated spec gives a valid header");
    out.reserve(usize::try_from(header.file_bytes()).unwrap_or(0));
    let mut put = |data: &[f32]| {
        for v in data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    put(&params.embed);
    let layers = &params.layers;
    let kinds: [fn(&Layer) -> &[f32]; 10] = [
        |l| &l.rms_att,
        |l| &l.wq,
        |l| &l.wk,
        |l| &l.wv,
        |l| &l.wo,
        |l| &l.rms_ffn,
        |l| &l.w1,
        |l| &l.w2,
        |l| &l.w3,
        |_| &[],
    ];
    for pick in &kinds[..9] {
        for layer in layers {
            put(pick(layer));
        }
    }
    put(&params.rms_final);
    let (cos, sin) = rope_tables(spec.head_dim, spec.seq);
    put(&cos);
    put(&sin);
    debug_assert_eq!(out.len() as u128, header.file_bytes());
    Ok(out)
}

/// Writes `params` to `path` as a legacy llama2.c model file, atomically (temp file in the same
/// directory, fsync, rename, directory fsync): a crash leaves the old file or the new one.
///
/// # Errors
///
/// As [`to_bytes`], plus [`Error::Io`] when writing fails.
pub fn write(path: &Path, spec: &ModelSpec, params: &Params) -> Result<()> {
    let bytes = to_bytes(spec, params)?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} is not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    ckpt::write_atomic(&dir, &name, &bytes)
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The model it holds.
    pub model: ModelSpec,
    /// The training step of the checkpoint it came from.
    pub step: u64,
}

/// `milbridge export`: writes the weights of a training checkpoint as a llama2.c model file.
///
/// # Errors
///
/// An unloadable checkpoint, a model `run.c` cannot represent, a failed write.
pub fn export(args: &ExportArgs) -> Result<Exported> {
    let c = ckpt::load(&args.checkpoint)?;
    write(&args.out, &c.state.model, &c.params)?;
    let bytes = fs::metadata(&args.out)
        .map_err(|e| Error::io("cannot stat", &args.out, e))?
        .len();
    Ok(Exported {
        path: args.out.clone(),
        bytes,
        model: c.state.model,
        step: c.state.step,
    })
}

/// The weights a fresh run starts from: the llama2.c file of `cfg.init_from` (whose shape must
/// be `spec`'s), or the seeded initialisation. On resume the checkpoint replaces them anyway,
/// so the file is not read then.
///
/// # Errors
///
/// As [`read`], plus [`Error::Config`] when the file's shape differs from `spec`.
pub(crate) fn initial_params(cfg: &TrainConfig, spec: &ModelSpec) -> Result<Params> {
    match (&cfg.init_from, cfg.resume) {
        (Some(path), false) => {
            let (file_spec, params) = read(path)?;
            let same = ModelSpec {
                name: spec.name.clone(),
                ..file_spec.clone()
            } == *spec;
            if !same {
                return Err(Error::Config(format!(
                    "--init-from {} holds {file_spec:?}, but the run's model is {spec:?}",
                    path.display()
                )));
            }
            Ok(params)
        }
        _ => Ok(Params::init(spec, cfg.seed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dim: usize, heads: usize, kv_heads: usize) -> ModelSpec {
        ModelSpec {
            name: MODEL_NAME.into(),
            dim,
            hidden: 40,
            n_layers: 2,
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim: dim / heads,
            seq: 6,
            vocab: 11,
            qk_norm: false,
        }
    }

    #[test]
    fn header_round_trips_and_sizes_add_up() {
        let s = spec(16, 4, 2);
        let p = Params::init(&s, 3);
        let bytes = to_bytes(&s, &p).expect("export");
        let h = Header::parse(&bytes).expect("header");
        assert_eq!(h.spec(), s);
        assert!(h.shared_classifier);
        // 28 + 4 * (embed + layers + final + rope tables)
        let floats = s.param_count() + 2 * s.seq * (s.head_dim / 2);
        assert_eq!(bytes.len(), 28 + 4 * floats);
        assert_eq!(h.file_bytes(), bytes.len() as u128);
        assert_eq!(&bytes[..8], &[16, 0, 0, 0, 40, 0, 0, 0]);
    }

    #[test]
    fn rope_tables_follow_run_c_and_our_rope() {
        let (cos, sin) = rope_tables(8, 5);
        assert_eq!(cos.len(), 5 * 4);
        assert_eq!((cos[0], sin[0]), (1.0, 0.0));
        for t in 0..5 {
            for i in 0..4 {
                let (c, s) = crate::cpu::rope_angle(t, i, 8);
                assert!((f64::from(cos[t * 4 + i]) - c).abs() < 1e-6, "t {t} i {i}");
                assert!((f64::from(sin[t * 4 + i]) - s).abs() < 1e-6, "t {t} i {i}");
            }
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let mk = |raw: [i32; 7]| -> Vec<u8> { raw.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let err = |bytes: &[u8]| Header::parse(bytes).expect_err("bad");
        assert!(err(&mk([0, 8, 1, 2, 2, 5, 4])).contains("dim is 0"));
        assert!(err(&mk([8, 8, -1, 2, 2, 5, 4])).contains("n_layers is -1"));
        assert!(err(&mk([8, 8, 1, 3, 3, 5, 4])).contains("n_heads 3 does not divide dim 8"));
        assert!(err(&mk([8, 8, 1, 4, 3, 5, 4])).contains("n_kv_heads 3 does not divide"));
        assert!(err(&mk([8, 8, 1, 2, 4, 5, 4])).contains("n_kv_heads 4 does not divide"));
        assert!(err(&mk([6, 8, 1, 2, 2, 5, 4])).contains("head size 3"));
        assert!(err(&mk([8, 8, 1, 2, 2, 0, 4])).contains("vocab_size is 0"));
        assert!(err(&[1, 2, 3]).contains("shorter than the 28-byte header"));
        let mut v1 = vec![0u8; 256];
        v1[..4].copy_from_slice(&V1_MAGIC.to_le_bytes());
        v1[4] = 2;
        assert!(err(&v1).contains("version 2 (Q8_0"));
        assert!(err(&v1[..100]).contains("256-byte version-1 header"));
        let h = Header::parse(&mk([8, 8, 1, 2, 2, -5, 4])).expect("unshared parses");
        assert!(!h.shared_classifier);
        assert!(
            h.check_size(h.file_bytes() as u64)
                .expect_err("unshared")
                .contains("not shared")
        );
    }

    #[test]
    fn export_refuses_what_run_c_cannot_read() {
        let mut s = spec(16, 4, 4);
        s.head_dim = 8;
        let p = Params::zeros(&s);
        assert!(
            to_bytes(&s, &p)
                .expect_err("q_dim")
                .to_string()
                .contains("4 * 8 != 16")
        );
        let s = spec(16, 4, 4);
        let mut p = Params::zeros(&s);
        p.layers[1].w2.pop();
        assert!(
            to_bytes(&s, &p)
                .expect_err("shape")
                .to_string()
                .contains("layers.1.feed_forward.w2.weight has 639 values")
        );
    }
}
