//! Diagnostics: what the front-end reports about the user's input.
//!
//! Every stage (lexer, parser, lowering, inference, verifier, blob reader, ANE lint) pushes
//! [`Diagnostic`] values into one `Vec` and keeps going where the result is still meaningful.
//! Rendering ([`render`]) is a pure function, so snapshots are deterministic; colour is the CLI's job.
//!
//! Codes mirror mil-spec section 9 one for one ([`DiagCode`]); a code is never reused.

use crate::span::{SourceFile, Span};
use std::fmt::{self, Write as _};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Extra information attached to another diagnostic.
    Note,
    /// Accepted, but suspicious or non-portable.
    Warning,
    /// The program is invalid.
    Error,
}

impl Severity {
    /// `error`, `warning` or `note`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! diag_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $sev:ident ),* $(,)?) => {
        /// A diagnostic code from mil-spec section 9.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DiagCode {
            $( $(#[doc = $doc])* $name, )*
        }

        impl DiagCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [DiagCode] = &[$(DiagCode::$name),*];

            /// The code as printed (`E122`, `W159`, `R001`).
            pub fn as_str(self) -> &'static str {
                match self { $(DiagCode::$name => stringify!($name),)* }
            }

            /// The severity this code is reported with by default.
            pub fn default_severity(self) -> Severity {
                match self { $(DiagCode::$name => Severity::$sev,)* }
            }

            /// The code's one-line description from the catalogue.
            pub fn description(self) -> &'static str {
                match self { $(DiagCode::$name => concat!($($doc),*).trim_start(),)* }
            }
        }
    };
}

diag_codes! {
    /// invalid character, stray NUL, non-ASCII outside strings
    E001 = Error,
    /// unterminated string or bad escape
    E002 = Error,
    /// malformed number
    E003 = Error,
    /// unexpected token
    E010 = Error,
    /// unbalanced brackets, missing `;` or missing `->` after a function body
    E011 = Error,
    /// unknown opset tag
    E020 = Error,
    /// unsupported program version
    E021 = Warning,
    /// undefined variable
    E100 = Error,
    /// redefinition of a variable or parameter
    E101 = Error,
    /// variable used before its definition
    E102 = Error,
    /// function output names an undefined variable
    E103 = Error,
    /// duplicate function name, or missing `main` when an entry is required
    E104 = Error,
    /// unknown op type
    E110 = Error,
    /// op not available in the function's opset
    E111 = Error,
    /// unknown argument name for this op
    E112 = Error,
    /// missing required argument
    E113 = Error,
    /// duplicate argument
    E114 = Error,
    /// tuple passed to a non-variadic parameter, or a single value where a tuple is required
    E115 = Error,
    /// dtype not in the parameter's allowed set
    E120 = Error,
    /// dtype mismatch between parameters of the same type domain
    E121 = Error,
    /// shape constraint violated
    E122 = Error,
    /// shapes not broadcastable
    E123 = Error,
    /// non-const value bound to a const-only parameter
    E124 = Error,
    /// invalid constant value
    E125 = Error,
    /// declared result type differs from the inferred type
    E130 = Error,
    /// number of declared results differs from the op's result count
    E131 = Error,
    /// tensor literal element count differs from the shape's element count
    E140 = Error,
    /// literal not valid for its dtype
    E141 = Error,
    /// float literal overflows to infinity in its dtype
    E142 = Warning,
    /// untyped literal where a typed value is required
    E143 = Error,
    /// BLOBFILE malformed, or its file or map entry not found
    E150 = Error,
    /// file header is not MILBlob version 2
    E151 = Error,
    /// metadata offset beyond the end of the file
    E152 = Error,
    /// sentinel 0xDEADBEEF not found at the offset
    E153 = Error,
    /// blob dtype code does not match the declared dtype
    E154 = Error,
    /// path escapes the model root or is absolute
    E155 = Error,
    /// blob size differs from numel times element size
    E156 = Error,
    /// data offset lies inside or before the metadata record
    E157 = Error,
    /// data range extends beyond the end of the file
    E158 = Error,
    /// unaligned metadata or data offset
    W159 = Warning,
    /// `const` without `val`, or `val` type differs from the declared type
    E160 = Error,
    /// duplicate parameter name
    E170 = Error,
    /// unknown (`?`) or zero dimension where a static shape is needed
    E171 = Error,
    /// rank-0 function input
    W172 = Warning,
    /// rank above 5
    W173 = Warning,
    /// unknown op attribute (ignored)
    W181 = Warning,
    /// duplicate op `name` string
    W182 = Warning,
    /// construct parsed but unsupported
    E199 = Error,
    /// bare `true`/`false` argument
    W301 = Warning,
    /// `attn_mask` given to SDPA, which the ANE ignores
    W310 = Warning,
    /// more than one function input
    W320 = Warning,
    /// conv with very large `C_in`
    W321 = Warning,
    /// matmul inner dimension not a multiple of 32 (maderix/ANE issue #47: silent zeros)
    W322 = Warning,
    /// function input or output whose last (spatial) dimension is not a multiple of 16
    W323 = Warning,
    /// function input byte sizes not strictly ascending (maderix/ANE issue #47: silent zeros)
    W324 = Warning,
    /// function output byte sizes not strictly descending (maderix/ANE issue #47: silent zeros)
    W325 = Warning,
    /// conv with a non-const weight and groups > 1 (maderix/ANE issue #47: rejected on hardware)
    W326 = Warning,
    /// op never observed in maderix/ANE's MIL programs, so ANE support is unknown
    W327 = Warning,
    /// input buffer count or byte length does not match the parameter types
    R001 = Error,
    /// gather index out of range
    R002 = Error,
    /// dynamic slice or reshape bounds violated at run time
    R003 = Error,
    /// invalid integer arithmetic
    R004 = Error,
}

impl fmt::Display for DiagCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A span with a message, pointing at the most specific token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there (may be empty).
    pub message: String,
}

/// One finding about the user's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error, warning or note.
    pub severity: Severity,
    /// Catalogue code.
    pub code: DiagCode,
    /// One line, lowercase, no trailing period, concrete values inline.
    pub message: String,
    /// The offending token.
    pub primary: Label,
    /// Related places ("defined here"), rendered as `note:` lines.
    pub secondary: Vec<Label>,
    /// Free-standing notes without a location.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: DiagCode, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: code.default_severity(),
            code,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Sets the label text under the caret.
    pub fn with_label(mut self, message: impl Into<String>) -> Diagnostic {
        self.primary.message = message.into();
        self
    }

    /// Adds a related location.
    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds a note without a location.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Overrides the severity (e.g. a strict mode turning a warning into an error).
    pub fn with_severity(mut self, severity: Severity) -> Diagnostic {
        self.severity = severity;
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Whether any diagnostic in `diags` is an error.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}

/// Renders one diagnostic as `file:line:col: error[E122]: message`, a caret snippet, and note lines.
///
/// ```text
/// model.mil:14:55: error[E122]: matmul inner dimensions differ: x has k=768, y has k=512
/// 14 |     tensor<fp16, [1, 256, 512]> q = matmul(x = h, y = wq)[name = string("q")];
///    |                                                       ^^ wq is [512, 512]
/// model.mil:9:5: note: wq defined here
/// ```
pub fn render(source: &SourceFile, diag: &Diagnostic) -> String {
    let mut out = String::new();
    let pos = source.line_col(diag.primary.span.start);
    let _ = writeln!(
        out,
        "{}:{}:{}: {}[{}]: {}",
        source.name(),
        pos.line,
        pos.col,
        diag.severity.as_str(),
        diag.code,
        diag.message
    );
    let line_text = source.line_text(pos.line);
    let gutter = pos.line.to_string();
    let pad = " ".repeat(gutter.len());
    let _ = writeln!(out, "{gutter} | {line_text}");
    let start_col = (pos.col as usize).saturating_sub(1);
    let line_len = line_text.len();
    let span_len = diag
        .primary
        .span
        .end
        .saturating_sub(diag.primary.span.start) as usize;
    let caret_len = span_len.min(line_len.saturating_sub(start_col)).max(1);
    let mut caret_line = format!("{pad} | {}{}", " ".repeat(start_col), "^".repeat(caret_len));
    if !diag.primary.message.is_empty() {
        caret_line.push(' ');
        caret_line.push_str(&diag.primary.message);
    }
    let _ = writeln!(out, "{}", caret_line.trim_end());
    for label in &diag.secondary {
        let pos = source.line_col(label.span.start);
        let _ = writeln!(
            out,
            "{}:{}:{}: note: {}",
            source.name(),
            pos.line,
            pos.col,
            label.message
        );
    }
    for note in &diag.notes {
        let _ = writeln!(out, "{pad} = note: {note}");
    }
    out
}

/// Renders every diagnostic, in order, separated by nothing (each ends with a newline).
pub fn render_all(source: &SourceFile, diags: &[Diagnostic]) -> String {
    diags.iter().map(|diag| render(source, diag)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_points_at_token() {
        let src = SourceFile::new("m.mil", "line one\n  bad token here\n");
        let diag = Diagnostic::new(DiagCode::E010, Span::new(11, 14), "unexpected `bad`")
            .with_label("here")
            .with_secondary(Span::new(0, 4), "see this");
        let text = render(&src, &diag);
        assert_eq!(
            text,
            "m.mil:2:3: error[E010]: unexpected `bad`\n2 |   bad token here\n  |   ^^^ here\nm.mil:1:1: note: see this\n"
        );
    }

    #[test]
    fn codes_are_unique_and_described() {
        let mut names: Vec<_> = DiagCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DiagCode::ALL.len());
        assert!(DiagCode::ALL.iter().all(|c| !c.description().is_empty()));
        assert_eq!(DiagCode::E142.default_severity(), Severity::Warning);
    }
}
