//! Tokenizers behind one trait: the byte-level one the embedded default uses, and
//! [`Llama2cTokenizer`], llama2.c's `tokenizer.bin` (the Llama 2 sentencepiece vocabulary, or a
//! custom one from llama2.c's `train_vocab.sh`), encoding and decoding exactly as `run.c` does.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Turns text into token ids and back.
///
/// Implement it for another vocabulary and hand it to [`crate::sample::sample_with`]; the
/// trainer itself only sees token ids.
pub trait Tokenizer {
    /// Number of token ids; every id is below it.
    fn vocab_size(&self) -> usize;
    /// Token ids of `text`.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// The bytes one token stands for (possibly an incomplete UTF-8 sequence).
    fn token_bytes(&self, id: u32) -> Vec<u8>;
    /// Text of a token sequence; invalid UTF-8 is replaced by U+FFFD.
    fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    /// Text of `ids` generated right after the token `prev` (the last prompt token), for
    /// tokenizers whose pieces depend on what precedes them; [`Tokenizer::decode`] by default.
    fn decode_after(&self, prev: Option<u32>, ids: &[u32]) -> String {
        let _ = prev;
        self.decode(ids)
    }
    /// A token that ends generation (not included in the text), if the vocabulary has one.
    fn stop_token(&self) -> Option<u32> {
        None
    }
}

/// The byte-level tokenizer: token id = byte value, vocabulary of 256, no special tokens.
/// Any text round-trips exactly.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Vocabulary size of the byte-level tokenizer.
    pub const VOCAB: usize = 256;
}

impl Tokenizer for ByteTokenizer {
    fn vocab_size(&self) -> usize {
        Self::VOCAB
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        u8::try_from(id).map(|b| vec![b]).unwrap_or_default()
    }
}

/// llama2.c's `tokenizer.bin`: an `i32` `max_token_length`, then per token an `f32` merge
/// score, an `i32` byte length and the token's bytes (sentencepiece's `▁` already replaced by a
/// space; BOS is `"\n<s>\n"`, EOS `"\n</s>\n"`). The file does not record the vocabulary size;
/// every record up to the end of the file is a token, and [`crate::sample::sample`] checks the
/// count against the model's vocabulary.
///
/// Encoding is `run.c`'s: an optional BOS (id 1), a dummy-prefix `" "` token before non-empty
/// text, then each UTF-8 character's token, or its bytes as byte-fallback tokens (id = byte + 3);
/// then, repeatedly, the adjacent pair whose concatenation is a token with the best score
/// (above `-1e10`, leftmost on ties) is merged. Decoding is `run.c`'s too: a piece after BOS loses
/// its leading space, and `<0xXX>` pieces are the raw byte.
///
/// Differences from `run.c`, on inputs it mishandles: a vocabulary without a `" "` token uses the
/// byte-fallback token of the space as the dummy prefix (run.c emits id -1); duplicate pieces
/// resolve to the lowest id (run.c's `bsearch` picks any); only exact `<0xXX>` pieces are bytes
/// (run.c's `sscanf` also accepts malformed ones such as `<0x4`).
#[derive(Debug, Clone)]
pub struct Llama2cTokenizer {
    pieces: Vec<Vec<u8>>,
    scores: Vec<f32>,
    max_token_length: u32,
    lookup: HashMap<Vec<u8>, u32>,
}

impl Llama2cTokenizer {
    /// The beginning-of-sequence token.
    pub const BOS: u32 = 1;
    /// The end-of-sequence token.
    pub const EOS: u32 = 2;
    /// The byte-fallback token of byte `b` is `b + BYTE_OFFSET`.
    pub const BYTE_OFFSET: u32 = 3;
    /// The smallest vocabulary with every byte-fallback token (`<unk>`, BOS, EOS, 256 bytes).
    pub const MIN_VOCAB: usize = 259;

    /// Reads `tokenizer.bin` from `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Tokenizer`] for an unreadable, truncated or corrupt file (see
    /// [`Llama2cTokenizer::from_bytes`]).
    pub fn read(path: &Path) -> Result<Llama2cTokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of a `tokenizer.bin` (`path` only names it in errors).
    ///
    /// # Errors
    ///
    /// [`Error::Tokenizer`] when the file is shorter than its header, `max_token_length` is not
    /// positive, a record is cut short, a length is negative or above `max_token_length`, a
    /// piece holds a NUL byte (run.c's C strings would cut it), or there are fewer than
    /// [`Llama2cTokenizer::MIN_VOCAB`] tokens (byte fallback needs ids 3..=258).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Llama2cTokenizer> {
        let bad = |reason: String| Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let word = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
        let max = word(0).map(i32::from_le_bytes).ok_or_else(|| {
            bad(format!(
                "{} bytes is shorter than the 4-byte max_token_length header",
                bytes.len()
            ))
        })?;
        let max_token_length = u32::try_from(max)
            .ok()
            .filter(|&m| m > 0)
            .ok_or_else(|| bad(format!("max_token_length is {max}; it must be positive")))?;
        let (mut pieces, mut scores) = (Vec::new(), Vec::new());
        let mut at = 4;
        while at < bytes.len() {
            let id = pieces.len();
            let (Some(score), Some(len)) = (word(at), word(at + 4)) else {
                return Err(bad(format!(
                    "token {id} at byte {at}: its 8-byte score and length are cut short ({} bytes \
                     left; truncated file?)",
                    bytes.len() - at
                )));
            };
            let len = i32::from_le_bytes(len);
            if len < 0 || len as u32 > max_token_length {
                return Err(bad(format!(
                    "token {id} at byte {at}: length {len} is outside 0..={max_token_length} \
                     (max_token_length)"
                )));
            }
            let start = at + 8;
            let piece = bytes.get(start..start + len as usize).ok_or_else(|| {
                bad(format!(
                    "token {id} at byte {at}: its {len} bytes are cut short ({} left; truncated \
                     file?)",
                    bytes.len() - start
                ))
            })?;
            if piece.contains(&0) {
                return Err(bad(format!("token {id} at byte {at} holds a NUL byte")));
            }
            scores.push(f32::from_le_bytes(score));
            pieces.push(piece.to_vec());
            at = start + len as usize;
        }
        if pieces.len() < Self::MIN_VOCAB {
            return Err(bad(format!(
                "{} tokens; a llama2.c vocabulary has at least {} (<unk>, BOS, EOS and the 256 \
                 byte-fallback tokens)",
                pieces.len(),
                Self::MIN_VOCAB
            )));
        }
        let mut lookup = HashMap::with_capacity(pieces.len());
        for (id, piece) in pieces.iter().enumerate() {
            lookup.entry(piece.clone()).or_insert(id as u32);
        }
        Ok(Llama2cTokenizer {
            pieces,
            scores,
            max_token_length,
            lookup,
        })
    }

    /// Serialises the tokenizer in `tokenizer.bin` format (`max_token_length` as read).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.max_token_length.to_le_bytes().to_vec();
        for (piece, score) in self.pieces.iter().zip(&self.scores) {
            out.extend_from_slice(&score.to_le_bytes());
            out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    /// The bytes of token `id` as stored (byte tokens still spelled `<0xXX>`).
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(Vec::as_slice)
    }

    /// The merge score of token `id`.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The id of the token whose bytes are `piece`.
    pub fn id(&self, piece: &[u8]) -> Option<u32> {
        self.lookup.get(piece).copied()
    }

    /// Token ids of `text` as `run.c`'s `encode` gives them, with an optional BOS first and EOS
    /// last.
    pub fn encode_with(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let mut tokens = Vec::with_capacity(text.len() + 3);
        if bos {
            tokens.push(Self::BOS);
        }
        let bytes = text.as_bytes();
        if !bytes.is_empty() {
            let space = self.id(b" ").unwrap_or(u32::from(b' ') + Self::BYTE_OFFSET);
            tokens.push(space);
        }
        let mut char_bytes: Vec<u8> = Vec::with_capacity(4);
        for (i, &c) in bytes.iter().enumerate() {
            if c & 0xC0 != 0x80 {
                char_bytes.clear();
            }
            char_bytes.push(c);
            let next_continues = bytes.get(i + 1).is_some_and(|&n| n & 0xC0 == 0x80);
            if next_continues && char_bytes.len() < 4 {
                continue;
            }
            match self.id(&char_bytes) {
                Some(id) => tokens.push(id),
                None => tokens.extend(char_bytes.iter().map(|&b| u32::from(b) + Self::BYTE_OFFSET)),
            }
            char_bytes.clear();
        }
        let mut pair = Vec::with_capacity(2 * self.max_token_length as usize);
        loop {
            let mut best: Option<(usize, u32)> = None;
            let mut best_score = -1e10f32;
            for i in 0..tokens.len().saturating_sub(1) {
                pair.clear();
                pair.extend_from_slice(&self.pieces[tokens[i] as usize]);
                pair.extend_from_slice(&self.pieces[tokens[i + 1] as usize]);
                if let Some(id) = self.id(&pair)
                    && self.scores[id as usize] > best_score
                {
                    best_score = self.scores[id as usize];
                    best = Some((i, id));
                }
            }
            let Some((i, id)) = best else { break };
            tokens[i] = id;
            tokens.remove(i + 1);
        }
        if eos {
            tokens.push(Self::EOS);
        }
        tokens
    }

    /// The bytes `run.c`'s `decode(prev, id)` gives: the piece, without its leading space after
    /// BOS, or the raw byte of a `<0xXX>` piece; nothing for an id outside the vocabulary.
    pub fn decode_piece(&self, prev: Option<u32>, id: u32) -> Vec<u8> {
        let Some(mut piece) = self.piece(id) else {
            return Vec::new();
        };
        if prev == Some(Self::BOS) && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        match byte_piece(piece) {
            Some(b) => vec![b],
            None => piece.to_vec(),
        }
    }
}

/// The byte of a `<0xXX>` piece (hex digits in either case).
fn byte_piece(piece: &[u8]) -> Option<u8> {
    let hex = piece.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

impl Tokenizer for Llama2cTokenizer {
    fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// `run.c`'s encoding of a prompt: BOS first, no EOS.
    fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, true, false)
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.decode_piece(None, id)
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.decode_after(None, ids)
    }

    fn decode_after(&self, prev: Option<u32>, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut prev = prev;
        for &id in ids {
            bytes.extend(self.decode_piece(prev, id));
            prev = Some(id);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// BOS: `run.c` stops generating when the model starts a new sequence.
    fn stop_token(&self) -> Option<u32> {
        Some(Self::BOS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_utf8() {
        let t = ByteTokenizer;
        let text = "Once upon a time, \"héllo\" ✓\n";
        let ids = t.encode(text);
        assert_eq!(ids.len(), text.len());
        assert_eq!(ids[0], u32::from(b'O'));
        assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
        assert_eq!(t.decode(&ids), text);
    }

    #[test]
    fn only_exact_byte_pieces_are_bytes() {
        assert_eq!(byte_piece(b"<0x0A>"), Some(0x0A));
        assert_eq!(byte_piece(b"<0xfe>"), Some(0xFE));
        for bad in [
            &b"<0x4>"[..],
            b"<0x41",
            b"<0x4G>",
            b"<0x041>",
            b" <0x41>",
            b"0x41",
        ] {
            assert_eq!(byte_piece(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn out_of_range_ids_decode_to_nothing() {
        assert_eq!(ByteTokenizer.decode(&[104, 300, 105]), "hi");
    }
}
