//! Round trips through the canonical printer.
//!
//! * Every `tests/golden/parse/ok/*.mil` file: `print(parse(x))` parses without diagnostics,
//!   means the same program (same IR apart from spans), and printing again is byte-identical.
//! * Property tests: every fp16, fp32, fp64 and bf16 value prints ([`format_float`]) and
//!   re-parses bit-exactly (NaN stays NaN); random small programs generated from a tiny grammar
//!   (random layout, both dialects, both multi-result spellings) round-trip the same way.

use mil::ir::{ArgValue, DType, Literal, Program, Use, ValueDef};
use mil::lower::{ParseOptions, parse, parse_with};
use mil::print::{format_float, print};
use milbridge_mil as mil;
use proptest::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn ok_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/parse/ok");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read ok dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "mil"))
        .collect();
    files.sort();
    files
}

/// A span-free description of a program's IR, for "means the same program" checks.
fn dump(program: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "build_info {:?}", program.build_info);
    for (_, func) in program.functions.iter() {
        let _ = writeln!(out, "func {} {}", func.name, func.opset);
        let describe = |used: &Use| -> String {
            let value = &func.values[used.value];
            match &value.def {
                ValueDef::Literal(Literal::Tensor(tensor)) => format!("lit {tensor:?}"),
                ValueDef::Literal(Literal::Blob(blob)) => {
                    format!("blob {} {:?} {}", blob.ty, blob.path, blob.offset)
                }
                ValueDef::Param { index } => format!("param{index} {}", value.name),
                ValueDef::Result { index, .. } => format!("result{index} {}", value.name),
                ValueDef::Error => format!("error {}", value.name),
            }
        };
        for &param in &func.params {
            let value = &func.values[param];
            let _ = writeln!(out, "  param {} {} {:?}", value.decl, value.name, value.def);
        }
        for (_, op) in func.ops.iter() {
            let results: Vec<String> = op
                .results
                .iter()
                .map(|&result| format!("{} {}", func.values[result].decl, func.values[result].name))
                .collect();
            let _ = writeln!(out, "  op {} {:?} -> {results:?}", op.kind, op.name_attr);
            for arg in &op.args {
                let values: Vec<String> = match &arg.value {
                    ArgValue::Single(single) => vec![describe(single)],
                    ArgValue::Tuple(uses) => {
                        let mut items: Vec<String> = uses.iter().map(describe).collect();
                        items.insert(0, "tuple".into());
                        items
                    }
                };
                let _ = writeln!(out, "    {} attr={} {values:?}", arg.name, arg.in_attrs);
            }
        }
        let outputs: Vec<String> = func.outputs.iter().map(describe).collect();
        let _ = writeln!(out, "  outputs {outputs:?}");
    }
    out
}

/// Checks that `text` parses cleanly and that its canonical print is a fixed point meaning
/// the same program; returns the canonical text.
fn assert_round_trip(text: &str, name: &str) -> String {
    let (program, diags) = parse(text);
    assert!(
        diags.is_empty(),
        "{name}: source has diagnostics: {diags:#?}\n{text}"
    );
    let printed = print(&program);
    let (reparsed, diags) = parse(&printed);
    assert!(
        diags.is_empty(),
        "{name}: printed form has diagnostics: {diags:#?}\n{printed}"
    );
    assert_eq!(
        dump(&program),
        dump(&reparsed),
        "{name}: printing changed the program\n{printed}"
    );
    let reprinted = print(&reparsed);
    assert_eq!(
        printed, reprinted,
        "{name}: print(parse(print(x))) != print(x)"
    );
    printed
}

#[test]
fn ok_golden_files_reach_a_fixed_point() {
    let files = ok_files();
    assert!(
        files.len() >= 20,
        "expected the ok corpus, found {}",
        files.len()
    );
    for path in files {
        let raw = std::fs::read_to_string(&path).expect("read");
        let name = path.display().to_string();
        let printed = assert_round_trip(&raw, &name);
        if raw.lines().any(|line| line.trim() == "//@ strict") {
            let (_, diags) = parse_with(
                &printed,
                &ParseOptions {
                    strict_syntax: true,
                },
            );
            assert!(
                diags.is_empty(),
                "{name}: canonical form fails strict mode: {diags:#?}"
            );
        }
    }
}

#[test]
fn canonical_text_is_the_1_3_dialect() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/parse/ok/dialect-1-0-softmax-two-outputs.mil"),
    )
    .expect("read");
    let printed = print(&parse(&text).0);
    assert!(printed.starts_with("program(1.3)\n[buildInfo = dict<string, string>({{"));
    assert!(!printed.contains("tensor<string, []>"), "{printed}");
    assert!(printed.contains("int32 ax = const()[name = string(\"ax\"), val = int32(1)];"));
    assert!(printed.contains("bool kd = const()[name = string(\"kd\"), val = bool(false)];"));
}

/// Prints a constant of `dtype` holding `value`, re-parses it, and returns the stored bytes.
fn reparse_constant(value: f64, dtype: DType) -> (String, Vec<u8>) {
    let spelled = format_float(value, dtype);
    let text = format!(
        "program(1.3) {{ func main<ios18>() {{ {dtype} c = const()[name = string(\"c\"), val = {dtype}({spelled})]; }} -> (c); }}"
    );
    let (program, diags) = parse(&text);
    assert!(diags.is_empty(), "{spelled} as {dtype}: {diags:?}");
    let func = &program.functions[program.entry().expect("main")];
    let (_, op) = func.ops.iter().next().expect("one op");
    let ArgValue::Single(used) = &op.arg("val").expect("val").value else {
        panic!("tuple val")
    };
    let ValueDef::Literal(Literal::Tensor(tensor)) = &func.values[used.value].def else {
        panic!("val is not a tensor literal")
    };
    (spelled, tensor.bytes().expect("numeric").to_vec())
}

fn check_float_bits(value: f64, dtype: DType, bits: &[u8]) {
    let (spelled, stored) = reparse_constant(value, dtype);
    if value.is_nan() {
        let back = mil::ir::decode_f64(dtype, &stored).expect("decode");
        assert!(back.is_nan(), "{spelled}: NaN came back as {back}");
    } else {
        assert_eq!(stored, bits, "{spelled} as {dtype}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fp16_values_round_trip_bit_exactly(bits in any::<u16>()) {
        check_float_bits(half::f16::from_bits(bits).to_f64(), DType::Fp16, &bits.to_le_bytes());
    }

    #[test]
    fn bf16_values_round_trip_bit_exactly(bits in any::<u16>()) {
        check_float_bits(half::bf16::from_bits(bits).to_f64(), DType::Bf16, &bits.to_le_bytes());
    }

    #[test]
    fn fp32_values_round_trip_bit_exactly(bits in any::<u32>()) {
        check_float_bits(f64::from(f32::from_bits(bits)), DType::Fp32, &bits.to_le_bytes());
    }

    #[test]
    fn fp64_values_round_trip_bit_exactly(bits in any::<u64>()) {
        check_float_bits(f64::from_bits(bits), DType::Fp64, &bits.to_le_bytes());
    }

    #[test]
    fn decimal_spellings_match_hex_spellings(bits in any::<u16>()) {
        // A shortest-round-trip decimal (what `printf("%g")`-style generators write) and the
        // canonical hex form of the same fp16 value store the same bits.
        let value = half::f16::from_bits(bits).to_f64();
        prop_assume!(value.is_finite());
        let decimal = format!("{value:?}");
        let text = format!(
            "program(1.3) {{ func main<ios18>() {{ fp16 c = const()[name = string(\"c\"), val = fp16({decimal})]; }} -> (c); }}"
        );
        let (program, diags) = parse(&text);
        prop_assert!(diags.is_empty(), "{:?}", diags);
        let printed = print(&program);
        let canonical = format_float(value, DType::Fp16);
        let expected = format!("val = fp16({canonical})");
        prop_assert!(printed.contains(&expected), "{}", printed);
    }

    #[test]
    fn random_programs_round_trip(spec in program_spec()) {
        let text = render(&spec);
        assert_round_trip(&text, "generated");
    }
}

// ---- a tiny grammar of programs -------------------------------------------------------------

#[derive(Clone, Debug)]
struct Spec {
    params: Vec<(bool, Vec<u8>)>,
    stmts: Vec<(u8, u32, u32, u64, u8)>,
    outputs: Vec<u32>,
    layout: u8,
}

fn program_spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec((any::<bool>(), prop::collection::vec(1u8..5, 0..4)), 1..4),
        prop::collection::vec(
            (
                0u8..9,
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u8>(),
            ),
            0..10,
        ),
        prop::collection::vec(any::<u32>(), 0..4),
        any::<u8>(),
    )
        .prop_map(|(params, stmts, outputs, layout)| Spec {
            params,
            stmts,
            outputs,
            layout,
        })
}

fn shape_text(dims: &[u8]) -> String {
    dims.iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(spec: &Spec) -> String {
    // Layout bits: 0 = newline after commas, 1 = 1.0-dialect header, 2 = no spaces around `=`.
    let sep = if spec.layout & 1 == 1 {
        ",\n            "
    } else {
        ", "
    };
    let eq = if spec.layout & 4 == 4 { "=" } else { " = " };
    let dialect_1_0 = spec.layout & 2 == 2;
    let string_ty = if dialect_1_0 {
        "tensor<string, []>"
    } else {
        "string"
    };
    let mut out = String::new();
    if dialect_1_0 {
        out.push_str("program(1.0)\n[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{\"k\", \"v\"}})]\n{\n");
    } else {
        out.push_str("program(1.3)\n{\n");
    }
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut params = Vec::new();
    for (idx, (is_fp16, dims)) in spec.params.iter().enumerate() {
        let dims = if dims.is_empty() {
            vec![1]
        } else {
            dims.clone()
        };
        let ty = format!(
            "tensor<{}, [{}]>",
            if *is_fp16 { "fp16" } else { "fp32" },
            shape_text(&dims)
        );
        params.push(format!("{ty} p{idx}"));
        vars.push((format!("p{idx}"), ty));
    }
    let _ = writeln!(out, "    func main<ios18>({}) {{", params.join(sep));
    for (stmt_idx, &(choice, a, b, payload, style)) in spec.stmts.iter().enumerate() {
        let name = format!("v{stmt_idx}");
        let name_attr = if style & 1 == 1 {
            format!("[name{eq}{string_ty}(\"op{stmt_idx}\")]")
        } else {
            String::new()
        };
        let pick = |seed: u32| vars[seed as usize % vars.len()].clone();
        let line = match choice {
            0 => {
                let value = half::f16::from_bits(payload as u16).to_f64();
                let spelled = if style & 2 == 2 {
                    format_float(value, DType::Fp16)
                } else {
                    format!("{value:?}")
                };
                let ty = if dialect_1_0 {
                    "tensor<fp16, []>"
                } else {
                    "fp16"
                };
                vars.push((name.clone(), ty.to_string()));
                format!(
                    "{ty} {name} = const()[name{eq}{string_ty}(\"{name}\"){sep}val{eq}{ty}({spelled})];"
                )
            }
            1 => {
                let n = (a % 4) as usize;
                let values: Vec<String> = (0..n)
                    .map(|k| ((payload >> (k * 16)) as u16 as i16).to_string())
                    .collect();
                let ty = format!("tensor<int32, [{n}]>");
                vars.push((name.clone(), ty.clone()));
                format!(
                    "{ty} {name} = const()[val{eq}{ty}([{}])];",
                    values.join(sep)
                )
            }
            2 => {
                let (x, ty) = pick(a);
                vars.push((name.clone(), ty.clone()));
                format!("{ty} {name} = relu(x{eq}{x}){name_attr};")
            }
            3 => {
                let ((x, ty), (y, _)) = (pick(a), pick(b));
                vars.push((name.clone(), ty.clone()));
                format!("{ty} {name} = add(y{eq}{y}{sep}x{eq}{x}){name_attr};")
            }
            4 => {
                let (x, ty) = pick(a);
                let (first, second) = (format!("{name}a"), format!("{name}b"));
                vars.push((first.clone(), ty.clone()));
                vars.push((second.clone(), ty.clone()));
                let results = format!("{ty} {first}{sep}{ty} {second}");
                let results = if style & 2 == 2 {
                    format!("({results})")
                } else {
                    results
                };
                format!(
                    "{results} = split(x{eq}{x}{sep}num_splits{eq}int32(2){sep}axis{eq}int32(-1)){name_attr};"
                )
            }
            5 => {
                let count = 1 + (b % 3) as usize;
                let items: Vec<String> = (0..count)
                    .map(|k| pick(a.wrapping_add(k as u32)).0)
                    .collect();
                let ty = pick(a).1;
                vars.push((name.clone(), ty.clone()));
                format!(
                    "{ty} {name} = concat(values{eq}({}){sep}axis{eq}int32(0){sep}interleave{eq}false){name_attr};",
                    items.join(sep)
                )
            }
            6 => {
                let (x, ty) = pick(a);
                let value = f64::from(f32::from_bits(payload as u32));
                let spelled = if style & 2 == 2 {
                    format_float(value, DType::Fp32)
                } else {
                    format!("{value:?}")
                };
                vars.push((name.clone(), ty.clone()));
                format!("{ty} {name} = mul(x{eq}{x}{sep}y{eq}fp32({spelled})){name_attr};")
            }
            7 => {
                let alphabet = ['a', 'Z', '"', '\\', '\n', '\t', '\r', ' ', '\u{e9}', '_'];
                let string: String = (0..(a % 6))
                    .map(|k| alphabet[((payload >> (k * 4)) % 10) as usize])
                    .collect();
                let mut quoted = String::new();
                for ch in string.chars() {
                    match ch {
                        '"' => quoted.push_str("\\\""),
                        '\\' => quoted.push_str("\\\\"),
                        '\n' => quoted.push_str("\\n"),
                        '\t' => quoted.push_str("\\t"),
                        '\r' => quoted.push_str("\\r"),
                        other => quoted.push(other),
                    }
                }
                vars.push((name.clone(), string_ty.to_string()));
                format!(
                    "{string_ty} {name} = const()[name{eq}{string_ty}(\"{name}\"){sep}val{eq}{string_ty}(\"{quoted}\")];"
                )
            }
            _ => {
                let ty = "tensor<fp16, [2]>".to_string();
                vars.push((name.clone(), ty.clone()));
                let (path_first, offset) = (style & 2 == 2, payload % 100_000);
                let path = format!(
                    "path{eq}{string_ty}(\"@model_path/weights/w{}.bin\")",
                    a % 3
                );
                let offset = if dialect_1_0 {
                    format!("offset{eq}tensor<uint64, []>({offset})")
                } else {
                    format!("offset{eq}uint64({offset})")
                };
                let blob_args = if path_first {
                    format!("{path}{sep}{offset}")
                } else {
                    format!("{offset}{sep}{path}")
                };
                format!(
                    "{ty} {name} = const()[val{eq}{ty}(BLOBFILE({blob_args})){sep}name{eq}{string_ty}(\"{name}\")];"
                )
            }
        };
        let _ = writeln!(out, "        {line}");
    }
    let outputs: Vec<String> = spec
        .outputs
        .iter()
        .map(|&seed| vars[seed as usize % vars.len()].0.clone())
        .collect();
    let _ = writeln!(out, "    }} -> ({});\n}}", outputs.join(sep));
    out
}
