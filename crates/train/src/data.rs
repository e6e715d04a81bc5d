//! Token data: llama2.c's pretokenized shards (a flat file of little-endian `u16` token ids),
//! memory-mapped, validated once, and sampled as training windows; or the embedded corpus
//! through the byte-level tokenizer.
//!
//! Ids are `u16` from file to window, so a model whose vocabulary is larger than 65536 (Qwen3's
//! 151936) trains on the ids below 65536 only: every id read is below both the model's
//! vocabulary and 65536, nothing is narrowed on the way (`usize::from` into the embedding and
//! the cross-entropy), and the classifier still covers the whole vocabulary. Data tokenized for
//! such a vocabulary cannot be stored in this format (ids of 65536 and up do not exist in it);
//! an id at or above the model's vocabulary is an error naming its byte offset, and the
//! sampler rejects prompt ids above 65535 rather than truncating them.

use std::path::{Path, PathBuf};

use crate::error::{DataProblem, Error, Result};
use crate::rng::Rng;
use crate::tokenizer::{ByteTokenizer, Tokenizer};

/// The corpus bundled into the binary: short stories written for this project
/// (`data/make_corpus.py` regenerates it).
pub const EMBEDDED_CORPUS: &str = include_str!("../data/corpus.txt");

/// The display name of the embedded corpus in messages and checkpoints.
pub const EMBEDDED_NAME: &str = "<embedded>";

enum Storage {
    /// A read-only map of a shard file.
    Mapped(Box<dyn AsRef<[u8]> + Send + Sync>),
    /// Token ids held in memory (the embedded corpus).
    Owned(Vec<u16>),
}

/// A validated sequence of token ids.
pub struct TokenData {
    name: PathBuf,
    storage: Storage,
    len: usize,
}

impl std::fmt::Debug for TokenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenData")
            .field("name", &self.name)
            .field("tokens", &self.len)
            .finish()
    }
}

impl TokenData {
    /// Maps the shard at `path` and validates it for a model with sequence length `seq` and
    /// vocabulary `vocab`.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] when the file cannot be opened or mapped, is empty,
    /// has an odd length, holds fewer than `seq + 1` tokens, or holds an id `>= vocab` (the
    /// message names the byte offset of the first one).
    pub fn open(path: &Path, seq: usize, vocab: usize) -> Result<TokenData> {
        let bytes = map_file(path)?;
        TokenData::from_shard_bytes(path.to_path_buf(), bytes, seq, vocab)
    }

    /// Validates shard bytes already in memory (any owner of the bytes, e.g. a file map).
    ///
    /// # Errors
    ///
    /// As [`TokenData::open`], without the I/O part.
    pub fn from_shard_bytes(
        name: PathBuf,
        bytes: Box<dyn AsRef<[u8]> + Send + Sync>,
        seq: usize,
        vocab: usize,
    ) -> Result<TokenData> {
        let raw = (*bytes).as_ref();
        let problem = |problem| Error::Data {
            path: name.clone(),
            problem,
        };
        if raw.is_empty() {
            return Err(problem(DataProblem::Empty));
        }
        if raw.len() % 2 != 0 {
            return Err(problem(DataProblem::OddLength { len: raw.len() }));
        }
        let len = raw.len() / 2;
        check_ids(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
            len,
            seq,
            vocab,
        )
        .map_err(problem)?;
        Ok(TokenData {
            name,
            storage: Storage::Mapped(bytes),
            len,
        })
    }

    /// Token ids in memory (e.g. a tokenized text), validated like a shard.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] as for [`TokenData::open`].
    pub fn from_tokens(
        name: PathBuf,
        tokens: Vec<u16>,
        seq: usize,
        vocab: usize,
    ) -> Result<TokenData> {
        if tokens.is_empty() {
            return Err(Error::Data {
                path: name,
                problem: DataProblem::Empty,
            });
        }
        check_ids(tokens.iter().copied(), tokens.len(), seq, vocab).map_err(|problem| {
            Error::Data {
                path: name.clone(),
                problem,
            }
        })?;
        Ok(TokenData {
            name,
            len: tokens.len(),
            storage: Storage::Owned(tokens),
        })
    }

    /// The embedded corpus through the byte-level tokenizer.
    ///
    /// # Errors
    ///
    /// [`Error::Data`] when `vocab` is below 256 or `seq` is longer than the corpus.
    pub fn embedded(seq: usize, vocab: usize) -> Result<TokenData> {
        let tokens = ByteTokenizer
            .encode(EMBEDDED_CORPUS)
            .into_iter()
            .map(|id| u16::try_from(id).expect("invariant: byte tokens fit in u16"))
            .collect();
        TokenData::from_tokens(PathBuf::from(EMBEDDED_NAME), tokens, seq, vocab)
    }

    /// Where the tokens came from.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: validation rejects empty data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token `i`; `i` must be below [`TokenData::len`].
    pub fn token(&self, i: usize) -> u16 {
        match &self.storage {
            Storage::Owned(tokens) => tokens[i],
            Storage::Mapped(bytes) => {
                let raw = (**bytes).as_ref();
                u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])
            }
        }
    }

    /// Copies `out.len()` tokens starting at `start` into `out`.
    pub fn window(&self, start: usize, out: &mut [u16]) {
        for (k, slot) in out.iter_mut().enumerate() {
            *slot = self.token(start + k);
        }
    }
}

fn check_ids(
    ids: impl Iterator<Item = u16>,
    len: usize,
    seq: usize,
    vocab: usize,
) -> std::result::Result<(), DataProblem> {
    let need = seq + 1;
    if len < need {
        return Err(DataProblem::TooShort {
            tokens: len,
            seq,
            need,
        });
    }
    for (index, id) in ids.enumerate() {
        if usize::from(id) >= vocab {
            return Err(DataProblem::TokenOutOfRange {
                index,
                byte_offset: 2 * index,
                id,
                vocab,
            });
        }
    }
    Ok(())
}

fn map_file(path: &Path) -> Result<Box<dyn AsRef<[u8]> + Send + Sync>> {
    let map = milbridge_surface::FileMap::open(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        problem: DataProblem::Unreadable {
            reason: e.to_string(),
        },
    })?;
    Ok(Box::new(map))
}

/// Where the next training window starts: positions are drawn uniformly from the data by a
/// generator whose state is part of the checkpoint, so a resumed run sees the same windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCursor {
    rng: Rng,
    windows: u64,
}

impl DataCursor {
    /// A cursor drawing positions from `seed`.
    pub fn new(seed: u64) -> DataCursor {
        DataCursor {
            rng: Rng::stream(seed, 0xDA7A),
            windows: 0,
        }
    }

    /// Restores a cursor from [`DataCursor::state`].
    pub fn from_state(rng_state: u64, windows: u64) -> DataCursor {
        DataCursor {
            rng: Rng::from_state(rng_state),
            windows,
        }
    }

    /// `(rng state, windows drawn so far)`.
    pub fn state(&self) -> (u64, u64) {
        (self.rng.state(), self.windows)
    }

    /// Fills `inputs` and `targets` (each `seq` long) with the next window: `targets` is
    /// `inputs` shifted by one token.
    pub fn next_window(&mut self, data: &TokenData, inputs: &mut [u16], targets: &mut [u16]) {
        let seq = inputs.len();
        assert_eq!(
            targets.len(),
            seq,
            "invariant: inputs and targets have the same length"
        );
        let positions = (data.len() - seq) as u64; // validation guarantees len >= seq + 1
        let start = self.rng.below(positions) as usize;
        data.window(start, inputs);
        data.window(start + 1, targets);
        self.windows += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(ids: &[u16]) -> Box<dyn AsRef<[u8]> + Send + Sync> {
        Box::new(
            ids.iter()
                .flat_map(|id| id.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn valid_shard_reads_little_endian_ids() {
        let data = TokenData::from_shard_bytes("s.bin".into(), shard(&[1, 258, 3, 4]), 3, 300)
            .expect("valid shard");
        assert_eq!(data.len(), 4);
        assert_eq!(data.token(1), 258);
        let mut w = [0u16; 2];
        data.window(2, &mut w);
        assert_eq!(w, [3, 4]);
    }

    #[test]
    fn ids_up_to_u16_max_pass_unchanged_under_a_vocabulary_above_u16() {
        let ids = [65_535u16, 0, 40_000, 65_534];
        let data = TokenData::from_shard_bytes("q.bin".into(), shard(&ids), 3, 151_936)
            .expect("every u16 id is inside Qwen3's vocabulary");
        let mut w = [0u16; 4];
        data.window(0, &mut w);
        assert_eq!(w, ids);
        // the same file is out of range for a byte vocabulary, with the offset named
        let e = TokenData::from_shard_bytes("q.bin".into(), shard(&ids), 3, 256)
            .expect_err("out of vocab")
            .to_string();
        assert!(e.contains("token id 65535 at byte offset 0"), "{e}");
    }

    #[test]
    fn empty_odd_short_and_out_of_vocab_are_named() {
        let err = |bytes: Vec<u8>, seq, vocab| {
            TokenData::from_shard_bytes("d.bin".into(), Box::new(bytes), seq, vocab)
                .expect_err("invalid shard")
                .to_string()
        };
        assert_eq!(err(vec![], 4, 256), "data d.bin: file is empty");
        assert!(err(vec![1, 0, 2], 1, 256).contains("length 3 bytes is odd"));
        assert_eq!(
            err(vec![1, 0, 2, 0], 4, 256),
            "data d.bin: 2 tokens is too short; a window of seq 4 needs at least 5"
        );
        let ids: Vec<u8> = [5u16, 6, 7, 300, 8]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        assert_eq!(
            err(ids, 2, 256),
            "data d.bin: token id 300 at byte offset 6 (token 3) is out of range for vocab 256"
        );
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = TokenData::open(Path::new("/nonexistent/milbridge/shard.bin"), 4, 256)
            .expect_err("missing file");
        assert!(
            matches!(
                e,
                Error::Data {
                    problem: DataProblem::Unreadable { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("/nonexistent/milbridge/shard.bin"));
    }

    #[test]
    fn embedded_corpus_is_bytes_and_long_enough() {
        let data = TokenData::embedded(64, 256).expect("embedded corpus");
        assert!(data.len() > 20_000);
        assert_eq!(data.token(0), u16::from(EMBEDDED_CORPUS.as_bytes()[0]));
        assert!(TokenData::embedded(64, 100).is_err(), "letters are >= 100");
    }

    #[test]
    fn cursor_is_deterministic_and_targets_shift_inputs() {
        let data = TokenData::from_tokens("t".into(), (0..100).collect(), 8, 256).expect("ok");
        let mut a = DataCursor::new(3);
        let mut b = DataCursor::new(3);
        let (mut xi, mut xt, mut yi, mut yt) = ([0u16; 8], [0u16; 8], [0u16; 8], [0u16; 8]);
        for _ in 0..20 {
            a.next_window(&data, &mut xi, &mut xt);
            b.next_window(&data, &mut yi, &mut yt);
            assert_eq!(xi, yi);
            for k in 0..8 {
                assert_eq!(xt[k], xi[k] + 1);
            }
            assert!(usize::from(xt[7]) < 100);
        }
        let (state, windows) = a.state();
        assert_eq!(windows, 20);
        let mut c = DataCursor::from_state(state, windows);
        a.next_window(&data, &mut xi, &mut xt);
        c.next_window(&data, &mut yi, &mut yt);
        assert_eq!(xi, yi);
    }
}
