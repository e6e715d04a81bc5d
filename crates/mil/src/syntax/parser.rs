//! The recursive-descent parser behind [`super::parse`].
//!
//! Every `fn` that reads a construct returns `Option<_>`: `None` means an error was reported and
//! the caller must resynchronise. Loops always consume at least one token per iteration or
//! stop, so the parser terminates on any input.

use super::ast::{
    Arg, ArgValue, Dim, Document, Function, Ident, Literal, Number, NumberKind, Param, Payload,
    ResultDecl, Scalar, Stmt, Str, Type, Value,
};
use crate::diag::{DiagCode, Diagnostic};
use crate::ir::DType;
use crate::lex::{Token, TokenKind, is_keyword, string_value};
use crate::span::Span;

/// Type constructors nest at most this deep (`tuple<tuple<...>>`), so hostile input cannot
/// exhaust the stack.
const MAX_TYPE_DEPTH: usize = 32;

/// `BLOBFILE` arguments (which may themselves be literals) nest at most this deep.
const MAX_NESTING: usize = 4;

pub(super) struct Parser<'src> {
    source: &'src str,
    tokens: Vec<Token>,
    pos: usize,
    prev_end: u32,
    strict: bool,
    diags: Vec<Diagnostic>,
    last_error_at: Option<usize>,
    eof_reported: bool,
    type_depth: usize,
    nesting: usize,
}

impl<'src> Parser<'src> {
    pub(super) fn new(source: &'src str, tokens: Vec<Token>, strict: bool) -> Parser<'src> {
        let mut tokens: Vec<Token> = tokens
            .into_iter()
            .filter(|token| token.kind != TokenKind::Error)
            .collect();
        if tokens
            .last()
            .is_none_or(|token| token.kind != TokenKind::Eof)
        {
            let end = source.len().min(u32::MAX as usize) as u32;
            tokens.push(Token {
                kind: TokenKind::Eof,
                span: Span::new(end, end),
            });
        }
        Parser {
            source,
            tokens,
            pos: 0,
            prev_end: 0,
            strict,
            diags: Vec::new(),
            last_error_at: None,
            eof_reported: false,
            type_depth: 0,
            nesting: 0,
        }
    }

    // ---- token cursor -------------------------------------------------------------------

    fn peek_at(&self, ahead: usize) -> Token {
        let last = self.tokens.len() - 1;
        self.tokens[(self.pos + ahead).min(last)]
    }

    fn peek(&self) -> Token {
        self.peek_at(0)
    }

    fn at(&self, kind: TokenKind) -> bool {
        self.peek().kind == kind
    }

    fn text(&self, token: Token) -> &'src str {
        token.text(self.source)
    }

    fn at_word(&self, word: &str) -> bool {
        let token = self.peek();
        token.kind == TokenKind::Ident && self.text(token) == word
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        if token.kind != TokenKind::Eof {
            self.pos += 1;
            self.prev_end = token.span.end;
        }
        token
    }

    fn since(&self, start: Span) -> Span {
        Span::new(start.start, self.prev_end.max(start.start))
    }

    fn ident(&self, token: Token) -> Ident {
        Ident {
            text: self.text(token).to_string(),
            span: token.span,
        }
    }

    // ---- diagnostics --------------------------------------------------------------------

    /// Reports an error at the current token, at most once per token and once at end of input.
    fn error_here(&mut self, code: DiagCode, span: Span, message: String) {
        if self.last_error_at == Some(self.pos) {
            return;
        }
        let at_eof = self.at(TokenKind::Eof);
        if at_eof {
            if self.eof_reported {
                return;
            }
            self.eof_reported = true;
        }
        self.last_error_at = Some(self.pos);
        self.diags.push(Diagnostic::new(code, span, message));
    }

    fn found(&self) -> String {
        let token = self.peek();
        match token.kind {
            TokenKind::Eof => "end of input".to_string(),
            TokenKind::Ident | TokenKind::Int | TokenKind::Float | TokenKind::BadNumber => {
                format!("`{}`", self.text(token))
            }
            TokenKind::Str => "a string".to_string(),
            kind => kind.describe().to_string(),
        }
    }

    /// "expected X, found Y" at the current token: `E011` at end of input, else `code`.
    fn expected(&mut self, code: DiagCode, what: &str) {
        let token = self.peek();
        if token.kind == TokenKind::Eof {
            let message = format!("unexpected end of input: expected {what}");
            self.error_here(DiagCode::E011, token.span, message);
        } else {
            let message = format!("expected {what}, found {}", self.found());
            self.error_here(code, token.span, message);
        }
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Option<Token> {
        if self.at(kind) {
            Some(self.bump())
        } else {
            self.expected(DiagCode::E010, what);
            None
        }
    }

    /// Like [`Self::expect`] for a closing bracket or `;`: a missing one is `E011`.
    fn expect_closer(&mut self, kind: TokenKind, what: &str) -> Option<Token> {
        if self.at(kind) {
            Some(self.bump())
        } else {
            self.expected(DiagCode::E011, what);
            None
        }
    }

    // ---- recovery -----------------------------------------------------------------------

    fn at_func(&self) -> bool {
        self.at_word("func") && self.peek_at(1).kind == TokenKind::Ident
    }

    /// Whether the current token is the first on its line.
    fn at_line_start(&self) -> bool {
        let Some(prev) = self.pos.checked_sub(1).and_then(|idx| self.tokens.get(idx)) else {
            return true;
        };
        let between = self
            .source
            .get(prev.span.end as usize..self.peek().span.start as usize);
        between.is_some_and(|gap| gap.contains(['\n', '\r']))
    }

    /// Whether the current token looks like the start of the next statement: a type keyword
    /// first on its line. Used only while recovering, so that a missing `;` or `)` does not
    /// swallow the following line.
    fn at_next_statement(&self) -> bool {
        self.starts_type() && self.at_line_start()
    }

    /// Skips to the end of the current statement: past the next `;`, or up to `}`, `func`, the
    /// start of the next statement, or the end of input.
    fn skip_statement(&mut self) {
        loop {
            match self.peek().kind {
                TokenKind::Semi => {
                    self.bump();
                    return;
                }
                TokenKind::RBrace | TokenKind::Eof => return,
                _ if self.at_func() || self.at_next_statement() => return,
                _ => {
                    self.bump();
                }
            }
        }
    }

    /// Skips inside a comma-separated list up to the next `,` or `closer` at nesting depth 0,
    /// stopping early at `;`, an unmatched `}`, `func` or the end of input, and (when
    /// `in_statement`) at the start of the next statement.
    fn skip_list_item(&mut self, closer: TokenKind, in_statement: bool) {
        let mut depth = 0usize;
        loop {
            let kind = self.peek().kind;
            match kind {
                TokenKind::Eof | TokenKind::Semi => return,
                _ if self.at_func() => return,
                _ if in_statement && depth == 0 && self.at_next_statement() => return,
                TokenKind::Comma if depth == 0 => return,
                _ if kind == closer && depth == 0 => return,
                TokenKind::RBrace if depth == 0 => return,
                TokenKind::LParen | TokenKind::LBracket | TokenKind::LBrace => depth += 1,
                TokenKind::RParen | TokenKind::RBracket | TokenKind::RBrace => {
                    depth = depth.saturating_sub(1);
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// At an opening bracket: skips to just past its matching closer. `None` (reported) if the
    /// input ends, or a `;` appears, first.
    fn skip_balanced(&mut self) -> Option<Span> {
        let open = self.bump();
        let mut depth = 1usize;
        loop {
            match self.peek().kind {
                TokenKind::LParen | TokenKind::LBracket | TokenKind::LBrace => depth += 1,
                TokenKind::RParen | TokenKind::RBracket | TokenKind::RBrace => {
                    depth -= 1;
                    if depth == 0 {
                        self.bump();
                        return Some(self.since(open.span));
                    }
                }
                TokenKind::Eof | TokenKind::Semi => {
                    let opener = self.text(open);
                    self.expected(DiagCode::E011, &format!("a bracket closing the `{opener}`"));
                    return None;
                }
                _ => {}
            }
            self.bump();
        }
    }

    // ---- program ------------------------------------------------------------------------

    pub(super) fn document(mut self) -> (Document, Vec<Diagnostic>) {
        let mut doc = Document::default();
        let mut opened = false;
        if self.at_word("program") {
            let keyword = self.bump();
            doc.program_span = keyword.span;
            opened = self.program_header(&mut doc);
        } else {
            self.expected(DiagCode::E010, "`program(...)`");
            doc.program_span = Span::new(self.peek().span.start, self.peek().span.start);
        }
        if !opened {
            // Resynchronise at the body's `{` or the first function.
            while !(self.at(TokenKind::Eof) || self.at(TokenKind::LBrace) || self.at_func()) {
                self.bump();
            }
            if self.at(TokenKind::LBrace) {
                self.bump();
            }
        }
        loop {
            if self.at_func() || self.at_word("func") {
                let func = self.function();
                doc.functions.push(func);
                continue;
            }
            match self.peek().kind {
                TokenKind::RBrace => {
                    self.bump();
                    break;
                }
                TokenKind::Eof => {
                    self.expected(DiagCode::E011, "`}` closing the program");
                    break;
                }
                _ => {
                    self.expected(DiagCode::E010, "`func` or `}`");
                    self.bump();
                    while !(self.at(TokenKind::Eof)
                        || self.at(TokenKind::RBrace)
                        || self.at_word("func"))
                    {
                        self.bump();
                    }
                }
            }
        }
        if !self.at(TokenKind::Eof) {
            let message = format!("unexpected {} after the end of the program", self.found());
            let span = self.peek().span;
            self.error_here(DiagCode::E010, span, message);
        }
        (doc, self.diags)
    }

    /// `(VERSION) [attrs] {` after `program`; true when the `{` was consumed.
    fn program_header(&mut self, doc: &mut Document) -> bool {
        if self
            .expect(TokenKind::LParen, "`(` after `program`")
            .is_none()
        {
            return false;
        }
        if self.peek().kind.is_number() {
            let token = self.bump();
            doc.version = Some(self.number(token));
        } else {
            self.expected(DiagCode::E010, "a version number such as `1.3`");
            return false;
        }
        if self
            .expect_closer(TokenKind::RParen, "`)` after the version")
            .is_none()
        {
            return false;
        }
        if self.at(TokenKind::LBracket) {
            self.bump();
            let (attrs, _) = self.arg_list(TokenKind::RBracket, "`]`");
            doc.attrs = Some(attrs);
        }
        self.expect(TokenKind::LBrace, "`{` opening the program body")
            .is_some()
    }

    // ---- functions ----------------------------------------------------------------------

    fn function(&mut self) -> Function {
        let keyword = self.bump();
        let mut func = Function {
            name: Ident {
                text: String::new(),
                span: keyword.span,
            },
            opset: None,
            params: Vec::new(),
            body: Vec::new(),
            outputs: Vec::new(),
        };
        let header_ok = self.function_header(&mut func).is_some();
        if !header_ok {
            while !(self.at(TokenKind::Eof)
                || self.at(TokenKind::LBrace)
                || self.at(TokenKind::RBrace)
                || self.at_func())
            {
                self.bump();
            }
            if !self.at(TokenKind::LBrace) {
                return func;
            }
        }
        if self
            .expect(TokenKind::LBrace, "`{` opening the function body")
            .is_none()
        {
            return func;
        }
        if !self.function_body(&mut func) {
            return func;
        }
        self.function_tail(&mut func);
        func
    }

    fn function_header(&mut self, func: &mut Function) -> Option<()> {
        let name = self.expect(TokenKind::Ident, "a function name")?;
        func.name = self.ident(name);
        self.expect(TokenKind::Lt, "`<` before the opset tag")?;
        let opset = self.expect(TokenKind::Ident, "an opset tag such as `ios18`")?;
        func.opset = Some(self.ident(opset));
        self.expect(TokenKind::Gt, "`>` after the opset tag")?;
        self.expect(TokenKind::LParen, "`(` opening the parameter list")?;
        if self.at(TokenKind::RParen) {
            self.bump();
        } else {
            loop {
                if let Some(param) = self.param() {
                    func.params.push(param);
                } else {
                    self.skip_list_item(TokenKind::RParen, false);
                }
                match self.peek().kind {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::RParen => {
                        self.bump();
                        break;
                    }
                    _ => {
                        self.expected(DiagCode::E010, "`,` or `)` in the parameter list");
                        return None;
                    }
                }
            }
        }
        if self.at(TokenKind::LBracket) {
            // Function attributes (FlexibleShapeInformation, ...): parsed and ignored.
            self.skip_balanced()?;
        }
        Some(())
    }

    fn param(&mut self) -> Option<Param> {
        let ty = self.ty();
        if matches!(ty, Type::Error(_)) {
            return None;
        }
        let name = self.var_name("a parameter name")?;
        Some(Param { ty, name })
    }

    /// A variable or parameter name; a keyword is reported but still returned.
    fn var_name(&mut self, what: &str) -> Option<Ident> {
        let token = self.expect(TokenKind::Ident, what)?;
        let ident = self.ident(token);
        if is_keyword(&ident.text) {
            self.diags.push(Diagnostic::new(
                DiagCode::E010,
                ident.span,
                format!("`{}` is a keyword and cannot name a variable", ident.text),
            ));
        }
        Some(ident)
    }

    fn starts_type(&self) -> bool {
        let token = self.peek();
        token.kind == TokenKind::Ident && {
            let word = self.text(token);
            matches!(word, "tensor" | "dict" | "list" | "tuple" | "state")
                || DType::from_name(word).is_some()
        }
    }

    /// Statements up to the closing `}`; false when the function ended without one (reported).
    fn function_body(&mut self, func: &mut Function) -> bool {
        loop {
            match self.peek().kind {
                TokenKind::RBrace => {
                    self.bump();
                    return true;
                }
                TokenKind::Eof => {
                    let what = format!("`}}` closing function `{}`", func.name.text);
                    self.expected(DiagCode::E011, &what);
                    return false;
                }
                TokenKind::Arrow => {
                    let what = format!("`}}` closing function `{}` before `->`", func.name.text);
                    self.expected(DiagCode::E011, &what);
                    return true;
                }
                _ if self.at_func() => {
                    let what = format!("`}}` closing function `{}`", func.name.text);
                    self.expected(DiagCode::E011, &what);
                    return false;
                }
                TokenKind::LParen => func.body.push(self.stmt()),
                _ if self.starts_type() => func.body.push(self.stmt()),
                _ => {
                    self.expected(
                        DiagCode::E010,
                        "a statement (starting with its result type) or `}`",
                    );
                    if self.at(TokenKind::Semi) {
                        self.bump();
                    } else {
                        self.skip_statement();
                    }
                }
            }
        }
    }

    /// `-> (outputs);` after the body's `}`.
    fn function_tail(&mut self, func: &mut Function) {
        if self.at(TokenKind::Arrow) {
            self.bump();
        } else {
            let what = format!("`->` after the body of function `{}`", func.name.text);
            self.expected(DiagCode::E011, &what);
            if !self.at(TokenKind::LParen) {
                return;
            }
        }
        if self
            .expect(TokenKind::LParen, "`(` opening the output list")
            .is_none()
        {
            while !(self.at(TokenKind::Eof)
                || self.at(TokenKind::Semi)
                || self.at(TokenKind::RBrace)
                || self.at_func())
            {
                self.bump();
            }
            if self.at(TokenKind::Semi) {
                self.bump();
            }
            return;
        }
        if self.at(TokenKind::RParen) {
            self.bump();
        } else {
            loop {
                if let Some(name) = self.var_name("an output name") {
                    func.outputs.push(name);
                } else {
                    self.skip_list_item(TokenKind::RParen, false);
                }
                match self.peek().kind {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::RParen => {
                        self.bump();
                        break;
                    }
                    _ => {
                        self.expected(DiagCode::E011, "`,` or `)` in the output list");
                        return;
                    }
                }
            }
        }
        if !self.at(TokenKind::Semi) {
            let span = Span::new(self.prev_end, self.prev_end);
            self.error_here(
                DiagCode::E011,
                span,
                "missing `;` after the output list".to_string(),
            );
            return;
        }
        self.bump();
    }

    // ---- statements ---------------------------------------------------------------------

    fn stmt(&mut self) -> Stmt {
        let start = self.peek().span;
        let mut stmt = Stmt {
            results: Vec::new(),
            parenthesized: false,
            op: None,
            args: Vec::new(),
            attrs: Vec::new(),
            has_attr_block: false,
            broken: false,
            span: start,
        };
        let complete = self.stmt_inner(&mut stmt);
        match complete {
            Some(()) => {
                if self.at(TokenKind::Semi) {
                    self.bump();
                } else {
                    let span = Span::new(self.prev_end, self.prev_end);
                    self.error_here(
                        DiagCode::E011,
                        span,
                        "missing `;` after the statement".into(),
                    );
                    let next_starts_statement = self.starts_type()
                        || self.at(TokenKind::LParen)
                        || self.at(TokenKind::RBrace)
                        || self.at(TokenKind::Eof)
                        || self.at_func();
                    if !next_starts_statement {
                        self.skip_statement();
                    }
                }
            }
            None => {
                stmt.broken = true;
                self.skip_statement();
            }
        }
        stmt.span = self.since(start);
        stmt
    }

    fn stmt_inner(&mut self, stmt: &mut Stmt) -> Option<()> {
        if self.at(TokenKind::LParen) {
            let open = self.bump();
            stmt.parenthesized = true;
            if self.strict {
                self.diags.push(Diagnostic::new(
                    DiagCode::E010,
                    open.span,
                    "parenthesised results are not accepted in strict mode; write `T a, T b = ...`",
                ));
            }
            loop {
                stmt.results.push(self.result_decl()?);
                match self.peek().kind {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::RParen => {
                        self.bump();
                        break;
                    }
                    _ => {
                        self.expected(DiagCode::E011, "`,` or `)` in the result list");
                        return None;
                    }
                }
            }
        } else {
            loop {
                stmt.results.push(self.result_decl()?);
                if self.at(TokenKind::Comma) {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.expect(TokenKind::Eq, "`=` after the results")?;
        let op = self.expect(TokenKind::Ident, "an op type such as `add`")?;
        stmt.op = Some(self.ident(op));
        self.expect(TokenKind::LParen, "`(` opening the argument list")?;
        let (args, args_ok) = self.arg_list(TokenKind::RParen, "`)`");
        stmt.args = args;
        if self.at(TokenKind::LBracket) {
            self.bump();
            stmt.has_attr_block = true;
            let (attrs, attrs_ok) = self.arg_list(TokenKind::RBracket, "`]`");
            stmt.attrs = attrs;
            if !attrs_ok {
                return None;
            }
        }
        if args_ok { Some(()) } else { None }
    }

    fn result_decl(&mut self) -> Option<ResultDecl> {
        let ty = self.ty();
        if matches!(ty, Type::Error(_)) {
            return None;
        }
        let name = self.var_name("a result name")?;
        Some(ResultDecl { ty, name })
    }

    /// `name = value, ...` up to and including `closer` (the opener is already consumed).
    /// The flag is false when some argument could not be read (reported).
    fn arg_list(&mut self, closer: TokenKind, closer_text: &str) -> (Vec<Arg>, bool) {
        let mut args = Vec::new();
        let mut all_ok = true;
        if self.at(closer) {
            self.bump();
            return (args, true);
        }
        loop {
            match self.arg() {
                Some(arg) => args.push(arg),
                None => {
                    all_ok = false;
                    self.skip_list_item(closer, true);
                }
            }
            let kind = self.peek().kind;
            if kind == TokenKind::Comma {
                self.bump();
                continue;
            }
            if kind == closer {
                self.bump();
                return (args, all_ok);
            }
            let what = format!("`,` or {closer_text}");
            let code = match kind {
                TokenKind::Semi | TokenKind::RBrace | TokenKind::Eof => DiagCode::E011,
                _ => DiagCode::E010,
            };
            self.expected(code, &what);
            if code == DiagCode::E011 {
                return (args, false);
            }
            all_ok = false;
            self.skip_list_item(closer, true);
            match self.peek().kind {
                TokenKind::Comma => {
                    self.bump();
                }
                kind if kind == closer => {
                    self.bump();
                    return (args, false);
                }
                _ => return (args, false),
            }
        }
    }

    fn arg(&mut self) -> Option<Arg> {
        let name = self.expect(TokenKind::Ident, "an argument name")?;
        let name = self.ident(name);
        self.expect(TokenKind::Eq, "`=` after the argument name")?;
        if self.at(TokenKind::LParen) {
            let open = self.bump();
            let mut items = Vec::new();
            if self.at(TokenKind::RParen) {
                self.bump();
            } else {
                loop {
                    items.push(self.value()?);
                    match self.peek().kind {
                        TokenKind::Comma => {
                            self.bump();
                        }
                        TokenKind::RParen => {
                            self.bump();
                            break;
                        }
                        _ => {
                            self.expected(DiagCode::E011, "`,` or `)` in the tuple");
                            return None;
                        }
                    }
                }
            }
            let span = self.since(open.span);
            return Some(Arg {
                name,
                value: ArgValue::Tuple { items, span },
            });
        }
        let value = self.value()?;
        Some(Arg {
            name,
            value: ArgValue::Single(value),
        })
    }

    // ---- values -------------------------------------------------------------------------

    fn number(&self, token: Token) -> Number {
        let kind = match token.kind {
            TokenKind::Int => NumberKind::Int,
            TokenKind::Float => NumberKind::Float,
            _ => NumberKind::Bad,
        };
        Number {
            text: self.text(token).to_string(),
            kind,
            span: token.span,
        }
    }

    fn string(&self, token: Token) -> Str {
        Str {
            value: string_value(self.text(token)),
            span: token.span,
        }
    }

    fn value(&mut self) -> Option<Value> {
        let token = self.peek();
        match token.kind {
            TokenKind::Ident => {
                let word = self.text(token);
                let next = self.peek_at(1).kind;
                if (word == "true" || word == "false") && next != TokenKind::LParen {
                    self.bump();
                    return Some(Value::BareBool {
                        value: word == "true",
                        span: token.span,
                    });
                }
                let is_type_word = matches!(word, "tensor" | "dict" | "list" | "tuple" | "state");
                if (DType::from_name(word).is_some() && next == TokenKind::LParen)
                    || (is_type_word && next == TokenKind::Lt)
                {
                    return self.literal().map(Value::Literal);
                }
                if is_keyword(word) {
                    let message = format!("expected a value, found keyword `{word}`");
                    self.error_here(DiagCode::E010, token.span, message);
                    return None;
                }
                self.bump();
                Some(Value::Ref(self.ident(token)))
            }
            TokenKind::Int | TokenKind::Float | TokenKind::BadNumber => {
                self.bump();
                Some(Value::BareNumber(self.number(token)))
            }
            TokenKind::Str => {
                self.bump();
                Some(Value::BareString(self.string(token)))
            }
            _ => {
                self.expected(
                    DiagCode::E010,
                    "a value (a variable name or a typed literal)",
                );
                None
            }
        }
    }

    fn literal(&mut self) -> Option<Literal> {
        let start = self.peek().span;
        let ty = self.ty();
        if matches!(ty, Type::Error(_)) {
            return None;
        }
        self.expect(TokenKind::LParen, "`(` after the literal's type")?;
        let payload = self.payload()?;
        self.expect_closer(TokenKind::RParen, "`)` closing the literal")?;
        Some(Literal {
            ty,
            payload,
            span: self.since(start),
        })
    }

    fn payload(&mut self) -> Option<Payload> {
        let token = self.peek();
        match token.kind {
            TokenKind::RParen => Some(Payload::Empty(Span::new(
                token.span.start,
                token.span.start,
            ))),
            TokenKind::LBracket => {
                let open = self.bump();
                let mut items = Vec::new();
                if self.at(TokenKind::RBracket) {
                    self.bump();
                } else {
                    loop {
                        items.push(self.scalar()?);
                        match self.peek().kind {
                            TokenKind::Comma => {
                                self.bump();
                            }
                            TokenKind::RBracket => {
                                self.bump();
                                break;
                            }
                            _ => {
                                self.expected(DiagCode::E011, "`,` or `]` in the element list");
                                return None;
                            }
                        }
                    }
                }
                Some(Payload::List {
                    items,
                    span: self.since(open.span),
                })
            }
            TokenKind::LBrace => {
                let open = self.bump();
                let mut entries = Vec::new();
                if self.at(TokenKind::RBrace) {
                    self.bump();
                } else {
                    loop {
                        self.expect(TokenKind::LBrace, "`{` opening a dictionary entry")?;
                        let key = self.scalar()?;
                        self.expect(TokenKind::Comma, "`,` between key and value")?;
                        let value = self.scalar()?;
                        self.expect_closer(TokenKind::RBrace, "`}` closing the entry")?;
                        entries.push((key, value));
                        match self.peek().kind {
                            TokenKind::Comma => {
                                self.bump();
                            }
                            TokenKind::RBrace => {
                                self.bump();
                                break;
                            }
                            _ => {
                                self.expected(DiagCode::E011, "`,` or `}` in the dictionary");
                                return None;
                            }
                        }
                    }
                }
                Some(Payload::Dict {
                    entries,
                    span: self.since(open.span),
                })
            }
            TokenKind::LParen => self.skip_balanced().map(Payload::Unsupported),
            TokenKind::Ident if self.text(token) == "BLOBFILE" => {
                if self.nesting >= MAX_NESTING {
                    let message = format!("literals nested more than {MAX_NESTING} deep");
                    self.error_here(DiagCode::E010, token.span, message);
                    return None;
                }
                self.bump();
                self.expect(TokenKind::LParen, "`(` after `BLOBFILE`")?;
                self.nesting += 1;
                let (args, ok) = self.arg_list(TokenKind::RParen, "`)`");
                self.nesting -= 1;
                if !ok {
                    return None;
                }
                Some(Payload::Blob {
                    args,
                    span: self.since(token.span),
                })
            }
            _ => self.scalar().map(Payload::Scalar),
        }
    }

    fn scalar(&mut self) -> Option<Scalar> {
        let token = self.peek();
        match token.kind {
            TokenKind::Int | TokenKind::Float | TokenKind::BadNumber => {
                self.bump();
                Some(Scalar::Number(self.number(token)))
            }
            TokenKind::Str => {
                self.bump();
                Some(Scalar::Str(self.string(token)))
            }
            TokenKind::Ident => {
                self.bump();
                Some(Scalar::Word(self.ident(token)))
            }
            _ => {
                self.expected(DiagCode::E010, "a number, string, `true` or `false`");
                None
            }
        }
    }

    // ---- types --------------------------------------------------------------------------

    /// A type; `Type::Error` (reported) when none could be read.
    fn ty(&mut self) -> Type {
        let start = self.peek().span;
        if self.type_depth >= MAX_TYPE_DEPTH {
            let message = format!("types nested more than {MAX_TYPE_DEPTH} deep");
            self.error_here(DiagCode::E010, start, message);
            return Type::Error(start);
        }
        self.type_depth += 1;
        let ty = self
            .ty_inner(start)
            .unwrap_or_else(|| Type::Error(self.since(start)));
        self.type_depth -= 1;
        ty
    }

    fn ty_inner(&mut self, start: Span) -> Option<Type> {
        let token = self.peek();
        if token.kind != TokenKind::Ident {
            self.expected(DiagCode::E010, "a type");
            return None;
        }
        let word = self.text(token);
        if let Some(dtype) = DType::from_name(word) {
            self.bump();
            return Some(Type::Scalar {
                dtype,
                span: token.span,
            });
        }
        match word {
            "tensor" => {
                self.bump();
                self.expect(TokenKind::Lt, "`<` after `tensor`")?;
                let dtype = self.dtype()?;
                self.expect(TokenKind::Comma, "`,` after the dtype")?;
                let dims = self.dims()?;
                self.expect_closer(TokenKind::Gt, "`>` closing the tensor type")?;
                Some(Type::Tensor {
                    dtype,
                    dims,
                    span: self.since(start),
                })
            }
            "dict" => {
                self.bump();
                self.expect(TokenKind::Lt, "`<` after `dict`")?;
                let key = self.ty();
                if matches!(key, Type::Error(_)) {
                    return None;
                }
                self.expect(TokenKind::Comma, "`,` between the key and value types")?;
                let value = self.ty();
                if matches!(value, Type::Error(_)) {
                    return None;
                }
                self.expect_closer(TokenKind::Gt, "`>` closing the dict type")?;
                Some(Type::Dict {
                    key: Box::new(key),
                    value: Box::new(value),
                    span: self.since(start),
                })
            }
            "list" => {
                self.bump();
                self.expect(TokenKind::Lt, "`<` after `list`")?;
                if matches!(self.ty(), Type::Error(_)) {
                    return None;
                }
                self.expect(TokenKind::Comma, "`,` before the list length")?;
                if !(self.at(TokenKind::Int) || self.at(TokenKind::Question)) {
                    self.expected(DiagCode::E010, "a list length (integer or `?`)");
                    return None;
                }
                self.bump();
                self.expect_closer(TokenKind::Gt, "`>` closing the list type")?;
                Some(Type::Unsupported {
                    what: "list",
                    span: self.since(start),
                })
            }
            "tuple" => {
                self.bump();
                self.expect(TokenKind::Lt, "`<` after `tuple`")?;
                if !self.at(TokenKind::Gt) {
                    loop {
                        if matches!(self.ty(), Type::Error(_)) {
                            return None;
                        }
                        if self.at(TokenKind::Comma) {
                            self.bump();
                        } else {
                            break;
                        }
                    }
                }
                self.expect_closer(TokenKind::Gt, "`>` closing the tuple type")?;
                Some(Type::Unsupported {
                    what: "tuple",
                    span: self.since(start),
                })
            }
            "state" => {
                self.bump();
                self.expect(TokenKind::Lt, "`<` after `state`")?;
                if matches!(self.ty(), Type::Error(_)) {
                    return None;
                }
                self.expect_closer(TokenKind::Gt, "`>` closing the state type")?;
                Some(Type::Unsupported {
                    what: "state",
                    span: self.since(start),
                })
            }
            _ => {
                self.expected(DiagCode::E010, "a type");
                None
            }
        }
    }

    fn dtype(&mut self) -> Option<DType> {
        let token = self.expect(TokenKind::Ident, "a dtype such as `fp16`")?;
        let word = self.text(token);
        match DType::from_name(word) {
            Some(dtype) => Some(dtype),
            None => {
                // Report at the dtype token itself (already consumed).
                self.diags.push(Diagnostic::new(
                    DiagCode::E010,
                    token.span,
                    format!("unknown dtype `{word}`"),
                ));
                self.last_error_at = Some(self.pos);
                None
            }
        }
    }

    fn dims(&mut self) -> Option<Vec<Dim>> {
        self.expect(TokenKind::LBracket, "`[` opening the shape")?;
        let mut dims = Vec::new();
        if self.at(TokenKind::RBracket) {
            self.bump();
            return Some(dims);
        }
        loop {
            let token = self.peek();
            match token.kind {
                TokenKind::Question => {
                    self.bump();
                    dims.push(Dim::Unknown(token.span));
                }
                TokenKind::Int => {
                    let text = self.text(token);
                    let digits = text.strip_prefix('+').unwrap_or(text);
                    match digits.parse::<usize>() {
                        Ok(size) => {
                            self.bump();
                            dims.push(Dim::Known(size, token.span));
                        }
                        Err(_) => {
                            let message = if digits.starts_with('-') {
                                format!("dimension `{text}` is negative")
                            } else {
                                format!("dimension `{text}` is too large")
                            };
                            self.error_here(DiagCode::E010, token.span, message);
                            return None;
                        }
                    }
                }
                _ => {
                    self.expected(DiagCode::E010, "a dimension (an integer or `?`)");
                    return None;
                }
            }
            match self.peek().kind {
                TokenKind::Comma => {
                    self.bump();
                }
                TokenKind::RBracket => {
                    self.bump();
                    return Some(dims);
                }
                _ => {
                    self.expected(DiagCode::E011, "`,` or `]` in the shape");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn codes(text: &str) -> Vec<&'static str> {
        parse(text, false)
            .1
            .iter()
            .map(|diag| diag.code.as_str())
            .collect()
    }

    const GOOD: &str = r#"program(1.3)
[buildInfo = dict<string, string>({{"a", "b"}})]
{
    func main<ios18>(tensor<fp16, [1, 4]> x, fp16 s) {
        tensor<fp16, [1, 4]> y = mul(x = x, y = s)[name = string("y")];
        tensor<fp16, [1, 2]> a, tensor<fp16, [1, 2]> b = split(x = y, num_splits = int32(2), axis = int32(1));
        (tensor<fp16, [1, 2]> c, tensor<fp16, [1, 2]> d) = split(x = y, split_sizes = tensor<int32, [2]>([2, 2]), axis = int32(-1));
        tensor<fp16, [1, 8]> e = concat(values = (a, b, c, d), axis = int32(1), interleave = false);
    } -> (y, e);
}
"#;

    #[test]
    fn parses_a_complete_program() {
        let (doc, diags) = parse(GOOD, false);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(doc.version.as_ref().map(|v| v.text.as_str()), Some("1.3"));
        assert_eq!(doc.attrs.as_ref().map(Vec::len), Some(1));
        let func = &doc.functions[0];
        assert_eq!(func.name.text, "main");
        assert_eq!(func.opset.as_ref().unwrap().text, "ios18");
        assert_eq!(func.params.len(), 2);
        assert_eq!(func.body.len(), 4);
        assert_eq!(func.body[1].results.len(), 2);
        assert!(!func.body[1].parenthesized);
        assert!(func.body[2].parenthesized);
        assert!(matches!(
            &func.body[3].args[0].value,
            ArgValue::Tuple { items, .. } if items.len() == 4
        ));
        assert!(matches!(
            &func.body[3].args[2].value,
            ArgValue::Single(Value::BareBool { value: false, .. })
        ));
        let outputs: Vec<_> = func.outputs.iter().map(|o| o.text.as_str()).collect();
        assert_eq!(outputs, ["y", "e"]);
        assert!(func.body.iter().all(|stmt| !stmt.broken));
    }

    #[test]
    fn strict_rejects_parenthesised_results() {
        let diags = parse(GOOD, true).1;
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, DiagCode::E010);
    }

    #[test]
    fn recovers_at_each_statement() {
        let text = "program(1.3) {\n func main<ios18>(fp16 x) {\n  fp16 a = add(x = x y = x);\n  fp16 b = add(x = x, y = );\n  fp16 c = add(x = x, y = x);\n } -> (c);\n}\n";
        let (doc, diags) = parse(text, false);
        let got: Vec<_> = diags
            .iter()
            .map(|d| (d.code.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("E010", "expected `,` or `)`, found `y`"),
                (
                    "E010",
                    "expected a value (a variable name or a typed literal), found `)`"
                ),
            ]
        );
        let body = &doc.functions[0].body;
        assert_eq!(body.len(), 3);
        assert!(body[0].broken && body[1].broken && !body[2].broken);
        assert_eq!(doc.functions[0].outputs.len(), 1);
    }

    #[test]
    fn missing_semicolon_does_not_swallow_the_next_statement() {
        let text = "program(1.3) {\n func main<ios18>(fp16 x) {\n  fp16 a = relu(x = x)\n  fp16 b = relu(x = a);\n } -> (b);\n}\n";
        let (doc, diags) = parse(text, false);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, DiagCode::E011);
        assert_eq!(
            diags[0].primary.span.start as usize,
            text.find(")\n").unwrap() + 1
        );
        assert_eq!(doc.functions[0].body.len(), 2);
    }

    #[test]
    fn truncated_input_reports_once() {
        let full = GOOD.trim_end();
        for cut in 0..full.len() {
            let Some(prefix) = full.get(..cut) else {
                continue;
            };
            let diags = parse(prefix, false).1;
            assert!(!diags.is_empty(), "cut at {cut} parsed cleanly");
            let eof_errors = diags
                .iter()
                .filter(|d| d.message.starts_with("unexpected end of input"))
                .count();
            assert!(eof_errors <= 1, "cut at {cut}: {diags:?}");
        }
    }

    #[test]
    fn both_buildinfo_forms_and_blobfile_orders() {
        let text = r#"program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"coremlc-version", "3505.4.1"}})]
{
    func main<ios16>(tensor<fp16, [1, 2]> x) {
        tensor<fp16, [2]> w = const()[name = tensor<string, []>("w"), val = tensor<fp16, [2]>(BLOBFILE(offset = tensor<uint64, []>(64), path = tensor<string, []>("@model_path/w.bin")))];
    } -> (w);
}"#;
        let (doc, diags) = parse(text, false);
        assert!(diags.is_empty(), "{diags:?}");
        let stmt = &doc.functions[0].body[0];
        let ArgValue::Single(Value::Literal(literal)) = &stmt.attrs[1].value else {
            panic!("val is a literal: {stmt:?}");
        };
        assert!(matches!(&literal.payload, Payload::Blob { args, .. } if args.len() == 2));
    }

    #[test]
    fn unsupported_types_parse_and_deep_nesting_is_bounded() {
        assert!(codes("program(1.3) { func f<ios18>(list<fp16, ?> x, tuple<fp16, state<int32>> y) { } -> (); }").is_empty());
        let deep = format!(
            "program(1.3) {{ func f<ios18>({}fp16{} x) {{ }} -> (); }}",
            "tuple<".repeat(200),
            ">".repeat(200)
        );
        let got = codes(&deep);
        assert!(got.contains(&"E010"), "{got:?}");
    }

    #[test]
    fn nested_blobfiles_are_bounded() {
        let mut value = "uint64(1)".to_string();
        for _ in 0..5000 {
            value = format!("tensor<fp16, [1]>(BLOBFILE(path = {value}, offset = uint64(0)))");
        }
        let text = format!(
            "program(1.3) {{ func f<ios18>() {{ fp16 a = const()[val = {value}]; }} -> (a); }}"
        );
        let diags = parse(&text, false).1;
        assert!(!diags.is_empty() && diags.len() <= 3, "{diags:?}");
        assert_eq!(diags[0].message, "literals nested more than 4 deep");
    }

    #[test]
    fn function_attribute_blocks_are_skipped() {
        let text = r#"program(1.0) { func main<ios16>(tensor<fp32, [1, ?]> x) [FlexibleShapeInformation = tuple<tuple<string, dict<string, list<int32, ?>>>>((("DefaultShapes", {{"x", [1, 3]}}),))] { } -> (x); }"#;
        assert!(codes(text).is_empty(), "{:?}", parse(text, false).1);
    }

    #[test]
    fn garbage_never_loops() {
        for text in [
            "",
            "}",
            "{{{{",
            "program",
            "program(",
            "func func func",
            ";;;",
            "program(1.3) { func",
            ")))]]]>>>",
        ] {
            let diags = parse(text, false).1;
            assert!(!diags.is_empty(), "{text:?}");
        }
    }
}
