//! Whatever parses without errors prints to text that parses without errors, and printing is
//! idempotent: print(parse(print(parse(x)))) == print(parse(x)).
#![no_main]

use libfuzzer_sys::fuzz_target;
use milbridge_mil::diag::has_errors;
use milbridge_mil::lower::parse;
use milbridge_mil::print::print;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (program, diags) = parse(&text);
    if has_errors(&diags) {
        return;
    }
    let printed = print(&program);
    let (reparsed, diags) = parse(&printed);
    assert!(
        !has_errors(&diags),
        "canonical text has errors: {diags:?}\n{printed}"
    );
    assert_eq!(print(&reparsed), printed, "printing is not idempotent");
});
