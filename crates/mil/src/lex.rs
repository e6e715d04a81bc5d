//! Lexer: MIL text to tokens with byte spans (mil-spec section 2).
//!
//! [`lex`] never fails: bytes that cannot start a token become [`TokenKind::Error`] tokens with
//! an `E001` diagnostic, malformed numbers become [`TokenKind::BadNumber`] tokens with `E003`,
//! and bad strings are still [`TokenKind::Str`] tokens with `E002`. The token list always ends
//! with exactly one [`TokenKind::Eof`].
//!
//! Rules that matter (mil-spec 2.3): `>` is always a single token (so `>>` closes two type
//! constructors), `->` is recognised before a `-` that starts a number, a signed `inf`/`nan` is a
//! [`TokenKind::Float`] while an unsigned one is an identifier, `//` comments run to the end of
//! the line (rejected in strict mode), and a single trailing NUL byte is ignored.

use crate::diag::{DiagCode, Diagnostic};
use crate::span::Span;

/// What a token is. Its text is `&source[token.span.range()]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_@]*`, including keywords, dtype names and unsigned `inf`/`nan`.
    Ident,
    /// `[+-]?[0-9]+`.
    Int,
    /// A decimal float, a C99 hex float, or a signed `inf`/`infinity`/`nan`.
    Float,
    /// A malformed number (already reported as `E003`); accepted wherever a number is.
    BadNumber,
    /// A double-quoted string (possibly unterminated, already reported as `E002`).
    Str,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `<`
    Lt,
    /// `>` (never part of a `>>` token).
    Gt,
    /// `,`
    Comma,
    /// `=`
    Eq,
    /// `;`
    Semi,
    /// `?`
    Question,
    /// `->`
    Arrow,
    /// Bytes that start no token (already reported as `E001`); the parser skips them.
    Error,
    /// End of input (always the last token).
    Eof,
}

impl TokenKind {
    /// A short human description for "expected ..., found ..." messages.
    pub fn describe(self) -> &'static str {
        match self {
            TokenKind::Ident => "identifier",
            TokenKind::Int => "integer",
            TokenKind::Float => "number",
            TokenKind::BadNumber => "malformed number",
            TokenKind::Str => "string",
            TokenKind::LParen => "`(`",
            TokenKind::RParen => "`)`",
            TokenKind::LBracket => "`[`",
            TokenKind::RBracket => "`]`",
            TokenKind::LBrace => "`{`",
            TokenKind::RBrace => "`}`",
            TokenKind::Lt => "`<`",
            TokenKind::Gt => "`>`",
            TokenKind::Comma => "`,`",
            TokenKind::Eq => "`=`",
            TokenKind::Semi => "`;`",
            TokenKind::Question => "`?`",
            TokenKind::Arrow => "`->`",
            TokenKind::Error => "invalid character",
            TokenKind::Eof => "end of input",
        }
    }

    /// Whether the token is a number of any spelling (including a malformed one).
    pub fn is_number(self) -> bool {
        matches!(
            self,
            TokenKind::Int | TokenKind::Float | TokenKind::BadNumber
        )
    }
}

/// One token: its kind and byte span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Where it is.
    pub span: Span,
}

impl Token {
    /// The token's text in `source` (empty if the span does not fit `source`).
    pub fn text<'src>(&self, source: &'src str) -> &'src str {
        source.get(self.span.range()).unwrap_or("")
    }
}

/// Words reserved in value and type position (mil-spec 2.3): never variable names.
pub fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "program"
            | "func"
            | "tensor"
            | "dict"
            | "list"
            | "tuple"
            | "state"
            | "BLOBFILE"
            | "true"
            | "false"
    ) || crate::ir::DType::from_name(word).is_some()
}

/// Lexes `text` leniently (`//` comments accepted). See [`lex_with`].
pub fn lex(text: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    lex_with(text, false)
}

/// Lexes `text` into tokens ending with [`TokenKind::Eof`], plus every lexical diagnostic.
/// With `strict`, `//` comments are reported (`E001`) and otherwise skipped.
pub fn lex_with(text: &str, strict: bool) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        strict,
        tokens: Vec::new(),
        diags: Vec::new(),
    };
    if text.len() >= u32::MAX as usize {
        lexer.diags.push(Diagnostic::new(
            DiagCode::E001,
            Span::new(0, 0),
            format!(
                "input of {} bytes is too large (the limit is 4 GiB)",
                text.len()
            ),
        ));
        lexer.tokens.push(Token {
            kind: TokenKind::Eof,
            span: Span::new(0, 0),
        });
        return (lexer.tokens, lexer.diags);
    }
    lexer.run();
    (lexer.tokens, lexer.diags)
}

/// The value of a string token: the text between the quotes with escapes decoded. Bad escapes
/// (already reported by the lexer) keep the escaped character; a missing closing quote is fine.
pub fn string_value(token_text: &str) -> String {
    let inner = token_text.strip_prefix('"').unwrap_or(token_text);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => break,
            },
            other => out.push(other),
        }
    }
    out
}

/// Appends `value` as a quoted string literal with the escapes of mil-spec 2.3.
pub fn quote_string(value: &str, out: &mut String) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('"');
}

fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_ident_continue(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'@'
}

/// Whether `word` (without sign) spells a float special value.
pub fn is_special_float(word: &str) -> bool {
    word.eq_ignore_ascii_case("inf")
        || word.eq_ignore_ascii_case("infinity")
        || word.eq_ignore_ascii_case("nan")
}

/// The correctly rounded `f64` value of a number token's text (mil-spec 3.8): decimal via the
/// standard library (correctly rounded), C99 hex floats by hand (mantissa into a `u64` plus a
/// binary exponent, rounded once, ties to even), signed or unsigned `inf`/`infinity`/`nan`.
/// `None` if the text is not a well-formed number.
pub fn parse_float(text: &str) -> Option<f64> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if is_special_float(body) {
        if body.eq_ignore_ascii_case("nan") {
            f64::NAN
        } else {
            f64::INFINITY
        }
    } else if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        parse_hex_magnitude(hex)?
    } else {
        let well_formed = body
            .bytes()
            .all(|byte| byte.is_ascii_digit() || b".eE+-".contains(&byte))
            && body
                .bytes()
                .next()
                .is_some_and(|byte| byte.is_ascii_digit() || byte == b'.');
        if !well_formed {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// `HEX[.HEX]p[+-]DEC` (after `0x`) to the nearest `f64`.
fn parse_hex_magnitude(text: &str) -> Option<f64> {
    let exp_at = text.find(['p', 'P'])?;
    let (mantissa_text, exponent_text) = (&text[..exp_at], &text[exp_at + 1..]);
    let (int_digits, frac_digits) = match mantissa_text.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (mantissa_text, ""),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut exp2: i64 = 0;
    let mut sticky = false;
    for (digit_idx, ch) in int_digits.chars().chain(frac_digits.chars()).enumerate() {
        let digit = u64::from(ch.to_digit(16)?);
        let in_fraction = digit_idx >= int_digits.len();
        if mantissa >> 60 == 0 {
            mantissa = mantissa * 16 + digit;
            if in_fraction {
                exp2 -= 4;
            }
        } else {
            sticky |= digit != 0;
            if !in_fraction {
                exp2 += 4;
            }
        }
    }
    let (exp_negative, exp_digits) = match exponent_text.as_bytes().first()? {
        b'-' => (true, &exponent_text[1..]),
        b'+' => (false, &exponent_text[1..]),
        _ => (false, exponent_text),
    };
    if exp_digits.is_empty() {
        return None;
    }
    let mut exponent: i64 = 0;
    for ch in exp_digits.chars() {
        // Saturate far beyond the f64 range: the result is 0 or infinity either way.
        exponent = (exponent * 10 + i64::from(ch.to_digit(10)?)).min(1_000_000);
    }
    exp2 += if exp_negative { -exponent } else { exponent };
    Some(compose_f64(mantissa, sticky, exp2))
}

/// `mantissa * 2^exp2` (plus a nonzero tail below the mantissa when `sticky`), rounded once to
/// the nearest `f64`, ties to even, with gradual underflow and overflow to infinity.
fn compose_f64(mantissa: u64, sticky: bool, exp2: i64) -> f64 {
    if mantissa == 0 {
        return 0.0;
    }
    let leading = mantissa.leading_zeros();
    let normalized = mantissa << leading;
    // Value = 1.xxx * 2^lead_exp.
    let lead_exp = exp2 + 63 - i64::from(leading);
    if lead_exp > 1023 {
        return f64::INFINITY;
    }
    let keep = if lead_exp >= -1022 {
        53
    } else {
        53 - (-1022 - lead_exp)
    };
    if keep <= 0 {
        // Below 2^-1074; exactly half of it ties to even (zero).
        let above_half = keep == 0 && (normalized != 1 << 63 || sticky);
        return if above_half { f64::from_bits(1) } else { 0.0 };
    }
    let shift = (64 - keep) as u32;
    let mut kept = normalized >> shift;
    let rem = normalized & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if rem > half || (rem == half && (sticky || kept & 1 == 1)) {
        kept += 1;
    }
    if lead_exp >= -1022 {
        let mut biased = lead_exp + 1023;
        if kept == 1 << 53 {
            kept >>= 1;
            biased += 1;
            if biased >= 0x7ff {
                return f64::INFINITY;
            }
        }
        f64::from_bits(((biased as u64) << 52) | (kept & ((1u64 << 52) - 1)))
    } else {
        // Subnormal; a carry into bit 52 yields exactly the smallest normal.
        f64::from_bits(kept)
    }
}

/// What kind of bad input a run of unlexable characters is (runs of one kind are reported once).
#[derive(Clone, Copy, PartialEq, Eq)]
enum BadChar {
    Nul,
    NonAscii,
    Other,
}

struct Lexer<'src> {
    text: &'src str,
    bytes: &'src [u8],
    pos: usize,
    strict: bool,
    tokens: Vec<Token>,
    diags: Vec<Diagnostic>,
}

impl Lexer<'_> {
    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(start as u32, end as u32)
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn push(&mut self, kind: TokenKind, start: usize, end: usize) {
        let span = self.span(start, end);
        self.tokens.push(Token { kind, span });
    }

    fn run(&mut self) {
        let len = self.bytes.len();
        while self.pos < len {
            let byte = self.bytes[self.pos];
            let start = self.pos;
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                0 if self.pos + 1 == len => self.pos += 1,
                b'/' if self.peek(1) == Some(b'/') => self.comment(),
                b'(' => self.single(TokenKind::LParen),
                b')' => self.single(TokenKind::RParen),
                b'[' => self.single(TokenKind::LBracket),
                b']' => self.single(TokenKind::RBracket),
                b'{' => self.single(TokenKind::LBrace),
                b'}' => self.single(TokenKind::RBrace),
                b'<' => self.single(TokenKind::Lt),
                b'>' => self.single(TokenKind::Gt),
                b',' => self.single(TokenKind::Comma),
                b'=' => self.single(TokenKind::Eq),
                b';' => self.single(TokenKind::Semi),
                b'?' => self.single(TokenKind::Question),
                b'"' => self.string(),
                b'-' if self.peek(1) == Some(b'>') => {
                    self.pos += 2;
                    self.push(TokenKind::Arrow, start, self.pos);
                }
                b'-' | b'+' => self.signed(),
                b'0'..=b'9' => self.number(start),
                b'.' if self.peek(1).is_some_and(|next| next.is_ascii_digit()) => {
                    self.number(start)
                }
                _ if is_ident_start(byte) => {
                    self.pos += 1;
                    while self.peek(0).is_some_and(is_ident_continue) {
                        self.pos += 1;
                    }
                    self.push(TokenKind::Ident, start, self.pos);
                }
                _ => self.bad_chars(),
            }
        }
        self.push(TokenKind::Eof, len, len);
    }

    fn single(&mut self, kind: TokenKind) {
        self.push(kind, self.pos, self.pos + 1);
        self.pos += 1;
    }

    fn comment(&mut self) {
        let start = self.pos;
        while self
            .peek(0)
            .is_some_and(|byte| byte != b'\n' && byte != b'\r')
        {
            self.pos += 1;
        }
        if self.strict {
            self.diags.push(Diagnostic::new(
                DiagCode::E001,
                self.span(start, self.pos),
                "`//` comments are not accepted in strict mode",
            ));
        }
    }

    fn bad_chars(&mut self) {
        let start = self.pos;
        let classify = |ch: char| match ch {
            '\0' => BadChar::Nul,
            _ if !ch.is_ascii() => BadChar::NonAscii,
            _ => BadChar::Other,
        };
        let mut chars = self.text[start..].chars();
        let Some(first) = chars.next() else {
            self.pos = self.bytes.len();
            return;
        };
        let kind = classify(first);
        self.pos += first.len_utf8();
        // Extend the run over following unlexable characters of the same kind.
        while let Some(&byte) = self.bytes.get(self.pos) {
            let starts_token = byte.is_ascii_whitespace()
                || is_ident_start(byte)
                || byte.is_ascii_digit()
                || b"()[]{}<>,=;?\"-+./".contains(&byte);
            if starts_token || (byte == 0 && self.pos + 1 == self.bytes.len()) {
                break;
            }
            let Some(ch) = self.text[self.pos..].chars().next() else {
                break;
            };
            if classify(ch) != kind {
                break;
            }
            self.pos += ch.len_utf8();
        }
        let span = self.span(start, self.pos);
        let run = &self.text[start..self.pos];
        let message = match kind {
            BadChar::Nul => "stray nul byte".to_string(),
            BadChar::NonAscii => format!("non-ascii character `{run}` outside a string"),
            BadChar::Other if run.chars().count() == 1 => {
                format!("invalid character `{}`", run.escape_default())
            }
            BadChar::Other => format!("invalid characters `{}`", run.escape_default()),
        };
        self.diags
            .push(Diagnostic::new(DiagCode::E001, span, message));
        self.push(TokenKind::Error, start, self.pos);
    }

    fn string(&mut self) {
        let start = self.pos;
        self.pos += 1;
        loop {
            let Some(byte) = self.peek(0) else {
                self.diags.push(
                    Diagnostic::new(
                        DiagCode::E002,
                        self.span(start, self.pos),
                        "unterminated string",
                    )
                    .with_label("the closing `\"` is missing"),
                );
                break;
            };
            match byte {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\n' | b'\r' => {
                    self.diags.push(
                        Diagnostic::new(
                            DiagCode::E002,
                            self.span(start, self.pos),
                            "unterminated string: raw line break inside a string",
                        )
                        .with_label("the closing `\"` is missing on this line"),
                    );
                    break;
                }
                b'\\' => {
                    let escape_start = self.pos;
                    match self.peek(1) {
                        Some(b'"' | b'\\' | b'n' | b't' | b'r') => self.pos += 2,
                        Some(b'\n' | b'\r') | None => {
                            // Leave the line break for the unterminated-string check above.
                            self.pos += 1;
                        }
                        Some(_) => {
                            let escaped = self.text[self.pos + 1..].chars().next().unwrap_or('?');
                            self.pos += 1 + escaped.len_utf8();
                            self.diags.push(Diagnostic::new(
                                DiagCode::E002,
                                self.span(escape_start, self.pos),
                                format!(
                                    "bad escape `\\{}` in string (valid escapes: \\\" \\\\ \\n \\t \\r)",
                                    escaped.escape_default()
                                ),
                            ));
                        }
                    }
                }
                0 => {
                    self.diags.push(Diagnostic::new(
                        DiagCode::E001,
                        self.span(self.pos, self.pos + 1),
                        "stray nul byte",
                    ));
                    self.pos += 1;
                }
                _ => {
                    let ch_len = self.text[self.pos..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    self.pos += ch_len;
                }
            }
        }
        self.push(TokenKind::Str, start, self.pos);
    }

    /// A `+` or `-` that is not part of `->`.
    fn signed(&mut self) {
        let start = self.pos;
        let next = self.peek(1);
        let next2 = self.peek(2);
        let starts_number = next.is_some_and(|byte| byte.is_ascii_digit())
            || (next == Some(b'.') && next2.is_some_and(|byte| byte.is_ascii_digit()));
        if starts_number {
            self.pos += 1;
            self.number(start);
            return;
        }
        if next.is_some_and(is_ident_start) {
            self.pos += 1;
            while self.peek(0).is_some_and(is_ident_continue) {
                self.pos += 1;
            }
            let word = &self.text[start + 1..self.pos];
            if is_special_float(word) {
                self.push(TokenKind::Float, start, self.pos);
            } else {
                self.bad_number(start, "a sign must be followed by digits, `inf` or `nan`");
            }
            return;
        }
        if matches!(next, Some(b'+' | b'-')) {
            // `--1`, `+-2`: consume the signs and whatever number follows, report once.
            self.pos += 1;
            while matches!(self.peek(0), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.consume_number_tail();
            self.bad_number(start, "more than one sign");
            return;
        }
        self.pos += 1;
        let sign = &self.text[start..self.pos];
        self.diags.push(Diagnostic::new(
            DiagCode::E003,
            self.span(start, self.pos),
            format!("malformed number `{sign}`: expected digits, `inf` or `nan` after the sign"),
        ));
        self.push(TokenKind::Error, start, self.pos);
    }

    /// Consumes characters that could continue a number (used for error recovery).
    fn consume_number_tail(&mut self) {
        while self
            .peek(0)
            .is_some_and(|byte| is_ident_continue(byte) || byte == b'.')
        {
            if matches!(self.peek(0), Some(b'e' | b'E' | b'p' | b'P'))
                && matches!(self.peek(1), Some(b'+' | b'-'))
            {
                self.pos += 1;
            }
            self.pos += 1;
        }
    }

    fn bad_number(&mut self, start: usize, why: &str) {
        let span = self.span(start, self.pos);
        let text = &self.text[start..self.pos];
        self.diags.push(Diagnostic::new(
            DiagCode::E003,
            span,
            format!("malformed number `{text}`: {why}"),
        ));
        self.push(TokenKind::BadNumber, start, self.pos);
    }

    fn digits(&mut self, hex: bool) -> usize {
        let from = self.pos;
        while self.peek(0).is_some_and(|byte| {
            if hex {
                byte.is_ascii_hexdigit()
            } else {
                byte.is_ascii_digit()
            }
        }) {
            self.pos += 1;
        }
        self.pos - from
    }

    /// A number whose sign (if any) has been consumed; `start` includes the sign.
    fn number(&mut self, start: usize) {
        let mut problem: Option<&'static str> = None;
        let mut is_float = false;
        let is_hex = self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X'));
        if is_hex {
            self.pos += 2;
            let mut n_digits = self.digits(true);
            if self.peek(0) == Some(b'.') {
                self.pos += 1;
                n_digits += self.digits(true);
            }
            is_float = true;
            if n_digits == 0 {
                problem = Some("no hex digits after `0x`");
            }
            if matches!(self.peek(0), Some(b'p' | b'P')) {
                self.pos += 1;
                if matches!(self.peek(0), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.digits(false) == 0 {
                    problem = problem.or(Some("the binary exponent has no digits"));
                }
            } else {
                problem = problem.or(Some("a hex float needs a `p` exponent"));
            }
        } else {
            self.digits(false);
            if self.peek(0) == Some(b'.') {
                self.pos += 1;
                self.digits(false);
                is_float = true;
            }
            if matches!(self.peek(0), Some(b'e' | b'E')) {
                is_float = true;
                self.pos += 1;
                if matches!(self.peek(0), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.digits(false) == 0 {
                    problem = Some("the exponent has no digits");
                }
            }
        }
        if self
            .peek(0)
            .is_some_and(|byte| is_ident_continue(byte) || byte == b'.')
        {
            self.consume_number_tail();
            problem = problem.or(Some("unexpected characters after the number"));
        }
        match problem {
            Some(why) => self.bad_number(start, why),
            None => self.push(
                if is_float {
                    TokenKind::Float
                } else {
                    TokenKind::Int
                },
                start,
                self.pos,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(TokenKind, String)> {
        let (tokens, _) = lex(text);
        tokens
            .iter()
            .map(|token| (token.kind, token.text(text).to_string()))
            .collect()
    }

    fn codes(text: &str) -> Vec<&'static str> {
        lex(text).1.iter().map(|diag| diag.code.as_str()).collect()
    }

    use TokenKind::*;

    #[test]
    fn double_gt_is_two_tokens() {
        let got = kinds("dict<tensor<string, []>, tensor<string, []>>");
        let tail: Vec<_> = got.iter().rev().take(3).map(|(kind, _)| *kind).collect();
        assert_eq!(tail, vec![Eof, Gt, Gt]);
        assert_eq!(got.iter().filter(|(kind, _)| *kind == Gt).count(), 3);
    }

    #[test]
    fn arrow_and_negative_numbers() {
        assert_eq!(
            kinds("} -> (a);"),
            vec![
                (RBrace, "}".into()),
                (Arrow, "->".into()),
                (LParen, "(".into()),
                (Ident, "a".into()),
                (RParen, ")".into()),
                (Semi, ";".into()),
                (Eof, String::new()),
            ]
        );
        assert_eq!(kinds("[0,-1]")[3], (Int, "-1".into()));
        assert_eq!(kinds("x=-0x1.4p+3")[2], (Float, "-0x1.4p+3".into()));
    }

    #[test]
    fn number_spellings() {
        for (text, kind) in [
            ("0", Int),
            ("+12", Int),
            ("-65504", Int),
            ("0.125000", Float),
            ("1e-05", Float),
            ("1E+5", Float),
            (".5", Float),
            ("1.", Float),
            ("-.5", Float),
            ("0x1p-3", Float),
            ("0x1.5p-17", Float),
            ("0x0p+0", Float),
            ("-0x1.4p+3", Float),
            ("0X1P3", Float),
            ("-inf", Float),
            ("+NaN", Float),
            ("-Infinity", Float),
        ] {
            let got = kinds(text);
            assert_eq!(got[0], (kind, text.to_string()), "lexing {text}");
            assert_eq!(got.len(), 2, "lexing {text}: {got:?}");
            assert!(codes(text).is_empty(), "lexing {text}");
        }
        assert_eq!(kinds("inf")[0].0, Ident);
        assert_eq!(kinds("nan")[0].0, Ident);
    }

    #[test]
    fn malformed_numbers_are_one_token_each() {
        for text in [
            "0x1.8", "1e", "--1", "1.2.3", "12abc", "0x", "0x1p", "-foo", "+-2",
        ] {
            let got = kinds(text);
            assert_eq!(got[0], (BadNumber, text.to_string()), "lexing {text}");
            assert_eq!(got.len(), 2, "lexing {text}: {got:?}");
            assert_eq!(codes(text), vec!["E003"], "lexing {text}");
        }
        assert_eq!(kinds("- 1")[0].0, Error);
        assert_eq!(codes("- 1"), vec!["E003"]);
    }

    #[test]
    fn strings_and_escapes() {
        let text = r#"string("a\"b\\c\nd\te\rf")"#;
        let got = kinds(text);
        assert_eq!(got[2].0, Str);
        assert_eq!(string_value(&got[2].1), "a\"b\\c\nd\te\rf");
        assert!(codes(text).is_empty());
        let mut quoted = String::new();
        quote_string("a\"b\\c\nd\te\rf", &mut quoted);
        assert_eq!(quoted, &text[7..text.len() - 1]);

        assert_eq!(codes(r#""bad \q escape""#), vec!["E002"]);
        assert_eq!(string_value(r#""bad \q escape""#), "bad q escape");
        assert_eq!(codes("\"unterminated"), vec!["E002"]);
        let (tokens, diags) = lex("\"line\nnext\"");
        assert_eq!(diags[0].code, DiagCode::E002);
        assert_eq!(tokens[0].span, Span::new(0, 5));
        assert_eq!(string_value("\"unterminated"), "unterminated");
        assert_eq!(string_value("\"é\""), "é");
    }

    #[test]
    fn comments_nul_and_bad_bytes() {
        assert_eq!(kinds("a // comment\nb").len(), 3);
        assert!(codes("a // comment\nb").is_empty());
        let (_, strict) = lex_with("a // comment\r\nb", true);
        assert_eq!(strict.len(), 1);
        assert_eq!(strict[0].code, DiagCode::E001);
        assert_eq!(strict[0].primary.span, Span::new(2, 12));

        assert!(codes("a;\0").is_empty());
        assert_eq!(codes("a\0;"), vec!["E001"]);
        assert_eq!(codes("a;\0\0"), vec!["E001"]);
        let (tokens, diags) = lex("a #$% b é c");
        assert_eq!(diags.len(), 2);
        assert_eq!(diags[0].message, "invalid characters `#$%`");
        assert_eq!(diags[1].message, "non-ascii character `é` outside a string");
        assert_eq!(tokens.iter().filter(|token| token.kind == Error).count(), 2);
        assert_eq!(codes("a / b"), vec!["E001"]);
    }

    #[test]
    fn crlf_and_identifiers() {
        let got = kinds("var_1@x\r\n  bF");
        assert_eq!(got[0], (Ident, "var_1@x".into()));
        assert_eq!(got[1], (Ident, "bF".into()));
        assert!(is_keyword("fp16") && is_keyword("BLOBFILE") && !is_keyword("x"));
    }

    #[test]
    fn float_values_are_correctly_rounded() {
        let p2 = |exp: i32| 2f64.powi(exp);
        let cases: &[(&str, f64)] = &[
            ("0x1p-3", 0.125),
            ("0x1.5p-17", 1.3125 * p2(-17)),
            ("-0x1.4p+3", -10.0),
            ("0X1P3", 8.0),
            ("0x.8p1", 1.0),
            ("0x10p0", 16.0),
            ("0x0.000000000000000000001p0", p2(-84)),
            ("0x1.fffffffffffff8p0", 2.0),
            ("0x1.fffffffffffff7p0", 2.0 - p2(-52)),
            ("0x1.00000000000008p0", 1.0),
            ("0x1.00000000000018p0", 1.0 + 2.0 * p2(-52)),
            ("0x1.000000000000080000000001p0", 1.0 + p2(-52)),
            (
                "0x123456789abcdef0123p0",
                0x0123_4567_89ab_cdef_0123_u128 as f64,
            ),
            ("0x1p-1074", f64::from_bits(1)),
            ("0x1p-1075", 0.0),
            ("0x1.0000001p-1075", f64::from_bits(1)),
            ("0x1.8p-1074", f64::from_bits(2)),
            ("0x1.ffffffffffffep-1023", f64::from_bits((1 << 52) - 1)),
            ("0x1.fffffffffffffp-1023", f64::MIN_POSITIVE),
            ("0x1.fffffffffffff8p-1023", f64::MIN_POSITIVE),
            ("0x1.fffffffffffffp1023", f64::MAX),
            ("0x1.fffffffffffff8p1023", f64::INFINITY),
            ("0x1p1024", f64::INFINITY),
            ("0x1p-99999999999", 0.0),
            ("1e-05", 1e-5),
            ("0.125000", 0.125),
            ("-65504", -65504.0),
            ("+.5", 0.5),
            ("-Infinity", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
        ];
        for &(text, expected) in cases {
            let got = parse_float(text).unwrap_or_else(|| panic!("{text} did not parse"));
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "{text}: got {got:e}, expected {expected:e}"
            );
        }
        assert_eq!(
            parse_float("-0x0p+0").map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        for bad in [
            "1e", "0x1.8", "abc", "", "-", "0x", "0xp1", "1.2.3", "0x1pz",
        ] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans_are_byte_offsets() {
        let (tokens, _) = lex("  ab  12");
        assert_eq!(tokens[0].span, Span::new(2, 4));
        assert_eq!(tokens[1].span, Span::new(6, 8));
        assert_eq!(
            tokens[2],
            Token {
                kind: Eof,
                span: Span::new(8, 8)
            }
        );
    }
}
