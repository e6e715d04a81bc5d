//! The lexer never panics, covers its input with ordered, in-bounds spans, and ends with EOF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use milbridge_mil::lex::{TokenKind, lex_with};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for strict in [false, true] {
        let (tokens, _) = lex_with(&text, strict);
        assert_eq!(
            tokens.last().map(|token| token.kind),
            Some(TokenKind::Eof),
            "token list ends with eof"
        );
        let mut previous_end = 0;
        for token in &tokens {
            assert!(
                token.span.start >= previous_end,
                "tokens are ordered and disjoint"
            );
            assert!(
                token.span.end as usize <= text.len(),
                "spans stay in bounds"
            );
            assert!(
                text.is_char_boundary(token.span.start as usize),
                "spans start on char boundaries"
            );
            assert!(
                text.is_char_boundary(token.span.end as usize),
                "spans end on char boundaries"
            );
            previous_end = token.span.end;
        }
    }
});
