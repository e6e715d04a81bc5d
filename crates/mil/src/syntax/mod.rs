//! Syntax: a recovering recursive-descent parser (mil-spec section 3) producing the untyped
//! tree in [`ast`].
//!
//! [`parse`] never fails and never panics: it returns a [`ast::Document`] (possibly partial) and
//! every lexical and syntax diagnostic. After an error it resynchronises at the next `,` or
//! closing bracket inside a list, at the next `;` inside a function body, and at the next `}` or
//! `func` between functions, so one pass reports as many independent problems as it can. At
//! most one error is reported per token, and only one "unexpected end of input".

pub mod ast;
mod parser;

use crate::diag::Diagnostic;

/// Lexes and parses `text`. With `strict`, the syntax leniencies of mil-spec 3.10 that are
/// visible to the parser (`//` comments, parenthesised results) are reported as errors.
pub fn parse(text: &str, strict: bool) -> (ast::Document, Vec<Diagnostic>) {
    let (tokens, mut diags) = crate::lex::lex_with(text, strict);
    let (document, parse_diags) = parser::Parser::new(text, tokens, strict).document();
    diags.extend(parse_diags);
    (document, diags)
}
