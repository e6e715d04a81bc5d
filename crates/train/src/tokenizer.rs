//! Tokenizers: the byte-level one the embedded default uses, behind a trait that leaves a clean
//! hook for llama2.c's `tokenizer.bin` (issue 7).

/// Turns text into token ids and back.
///
/// Implement it for another vocabulary (llama2.c's `tokenizer.bin` reader is issue 7's) and
/// hand it to [`crate::sample::sample_with`]; the trainer itself only sees token ids.
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
    fn out_of_range_ids_decode_to_nothing() {
        assert_eq!(ByteTokenizer.decode(&[104, 300, 105]), "hi");
    }
}
