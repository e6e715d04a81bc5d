//! Byte spans into a source text, and the line index that turns them into `line:col`.
//!
//! Spans are byte offsets (`u32`); line and column are computed only when a diagnostic is shown.
//! Lines and columns are 1-based and count bytes (identical to characters for ASCII, which is all
//! real MIL programs contain).

use std::fmt;

/// A half-open byte range `start..end` into one source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// The span `start..end`.
    pub const fn new(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    /// A span that covers nothing, used for generated IR that has no source text.
    pub const UNDEFINED: Span = Span { start: 0, end: 0 };

    /// Whether this span covers no bytes.
    pub const fn is_empty(self) -> bool {
        self.start >= self.end
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The byte range as `usize`s, for slicing the source.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A 1-based line and column (in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    /// 1-based line number.
    pub line: u32,
    /// 1-based byte column.
    pub col: u32,
}

/// A named source text with a precomputed index of line starts.
#[derive(Clone, Debug)]
pub struct SourceFile {
    name: String,
    text: String,
    line_starts: Vec<u32>,
}

impl SourceFile {
    /// Index `text` under the display name `name` (usually the file path).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let mut line_starts = vec![0u32];
        let bytes = text.as_bytes();
        for (idx, &byte) in bytes.iter().enumerate() {
            // A CR immediately followed by LF counts as one line break (the LF ends the line).
            let ends_line = byte == b'\n' || (byte == b'\r' && bytes.get(idx + 1) != Some(&b'\n'));
            if ends_line {
                line_starts.push(idx as u32 + 1);
            }
        }
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column of byte `offset` (clamped to the end of the text).
    pub fn line_col(&self, offset: u32) -> LineCol {
        let offset = offset.min(self.text.len() as u32);
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(idx) => idx,
            Err(idx) => idx - 1,
        };
        LineCol {
            line: line_idx as u32 + 1,
            col: offset - self.line_starts[line_idx] + 1,
        }
    }

    /// The text of 1-based line `line` without its line terminator.
    pub fn line_text(&self, line: u32) -> &str {
        let idx = (line as usize).saturating_sub(1);
        let Some(&start) = self.line_starts.get(idx) else {
            return "";
        };
        let end = self
            .line_starts
            .get(idx + 1)
            .map_or(self.text.len(), |&end| end as usize);
        let raw = self.text.get(start as usize..end).unwrap_or("");
        raw.trim_end_matches(['\n', '\r'])
    }

    /// Number of lines (a trailing newline does not start a new counted line's content, but the
    /// empty last line still counts).
    pub fn n_lines(&self) -> usize {
        self.line_starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_lf_and_crlf() {
        let src = SourceFile::new("t", "ab\ncd\r\nef\rg");
        assert_eq!(src.line_col(0), LineCol { line: 1, col: 1 });
        assert_eq!(src.line_col(3), LineCol { line: 2, col: 1 });
        assert_eq!(src.line_col(4), LineCol { line: 2, col: 2 });
        assert_eq!(src.line_col(7), LineCol { line: 3, col: 1 });
        assert_eq!(src.line_col(10), LineCol { line: 4, col: 1 });
        assert_eq!(src.line_text(2), "cd");
        assert_eq!(src.line_text(3), "ef");
        assert_eq!(src.line_text(99), "");
    }

    #[test]
    fn offset_past_end_is_clamped() {
        let src = SourceFile::new("t", "x");
        assert_eq!(src.line_col(100), LineCol { line: 1, col: 2 });
    }
}
