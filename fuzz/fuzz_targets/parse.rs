//! Parsing and lowering never panic, in either mode, and every diagnostic renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use milbridge_mil::diag::render_all;
use milbridge_mil::lower::{ParseOptions, parse_with};
use milbridge_mil::span::SourceFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for strict_syntax in [false, true] {
        let (program, diags) = parse_with(&text, &ParseOptions { strict_syntax });
        let source = SourceFile::new("fuzz.mil", text.as_ref());
        let _ = render_all(&source, &diags);
        let _ = milbridge_mil::print::print(&program);
    }
});
