//! Checks the reference interpreter against the NumPy-generated vectors in
//! `tests/reference-vectors/*.vec` (written by `gen.py` there; this test needs no Python).
//!
//! Each case becomes a one-op MIL program that goes through the whole front-end
//! (`mil::lower::parse`, `mil::verify::verify` with the [`ReferenceFolder`]) and is evaluated
//! twice:
//!
//! 1. **run time**: operands marked `in` are function parameters fed to [`reference::eval`];
//! 2. **compile time**: every `in` operand is written as an inline literal instead, so the op is
//!    folded during verification by the [`ReferenceFolder`] (constness rule 4) and its value
//!    comes out of `facts.consts` (skipped for cases that expect a run-time error).
//!
//! Floats must agree within 1 ulp of the output dtype (NaN matches NaN, infinities exactly),
//! integers and bools exactly. Every mismatch of every case is collected and reported at once.

use half::f16;
use mil::ir::{DType, Tensor, TensorType};
use mil::verify::VerifyOptions;
use milbridge_engine::reference::{self, ReferenceFolder};
use milbridge_mil as mil;
use std::fmt::Write as _;
use std::path::Path;

/// One tensor line of a case.
#[derive(Clone, Debug)]
struct Operand {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    values: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Case {
    name: String,
    op: String,
    opset: String,
    attrs: bool,
    inputs: Vec<Operand>,
    consts: Vec<Operand>,
    tuples: Vec<(String, Vec<String>)>,
    outputs: Vec<Operand>,
    error: Option<String>,
}

fn parse_tensor(tokens: &[&str], named: bool) -> Result<Operand, String> {
    let (name, rest) = if named {
        (
            tokens.first().ok_or("missing name")?.to_string(),
            &tokens[1..],
        )
    } else {
        (String::new(), tokens)
    };
    let [dtype, shape, values @ ..] = rest else {
        return Err(format!("short tensor line {tokens:?}"));
    };
    let shape = if *shape == "-" {
        Vec::new()
    } else {
        shape
            .split(',')
            .map(|dim| dim.parse::<usize>().map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?
    };
    Ok(Operand {
        name,
        dtype: dtype.to_string(),
        shape,
        values: values.iter().map(|value| value.to_string()).collect(),
    })
}

fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let mut current: Option<Case> = None;
    for (line_no, line) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}", line_no + 1);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let tokens: Vec<&str> = line.split(' ').collect();
        match (tokens[0], current.as_mut()) {
            ("case", None) => {
                current = Some(Case {
                    name: tokens[1].to_string(),
                    ..Case::default()
                });
            }
            ("op", Some(case)) => case.op = tokens[1].to_string(),
            ("opset", Some(case)) => case.opset = tokens[1].to_string(),
            ("attrs", Some(case)) => case.attrs = true,
            ("in", Some(case)) => case
                .inputs
                .push(parse_tensor(&tokens[1..], true).map_err(at)?),
            ("const", Some(case)) => case
                .consts
                .push(parse_tensor(&tokens[1..], true).map_err(at)?),
            ("out", Some(case)) => case
                .outputs
                .push(parse_tensor(&tokens[1..], false).map_err(at)?),
            ("tuple", Some(case)) => case.tuples.push((
                tokens[1].to_string(),
                tokens[2..].iter().map(|name| name.to_string()).collect(),
            )),
            ("err", Some(case)) => case.error = Some(tokens[1].to_string()),
            ("end", Some(_)) => cases.push(current.take().expect("matched Some")),
            (other, _) => return Err(at(format!("unexpected `{other}`"))),
        }
    }
    if current.is_some() {
        return Err("unterminated case".to_string());
    }
    Ok(cases)
}

fn type_text(dtype: &str, shape: &[usize]) -> String {
    if shape.is_empty() {
        return dtype.to_string();
    }
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("tensor<{dtype}, [{}]>", dims.join(", "))
}

fn element_text(dtype: &str, value: &str) -> Result<String, String> {
    Ok(match dtype {
        "fp16" | "fp32" => {
            let value: f64 = value.parse().map_err(|err| format!("{value}: {err}"))?;
            format!("{value:?}")
        }
        "string" => format!("\"{value}\""),
        _ => value.to_string(),
    })
}

/// The operand as an inline MIL literal.
fn literal_text(operand: &Operand) -> Result<String, String> {
    let elements = operand
        .values
        .iter()
        .map(|value| element_text(&operand.dtype, value))
        .collect::<Result<Vec<_>, _>>()?;
    if operand.shape.is_empty() {
        return Ok(format!("{}({})", operand.dtype, elements[0]));
    }
    Ok(format!(
        "{}([{}])",
        type_text(&operand.dtype, &operand.shape),
        elements.join(", ")
    ))
}

/// The MIL program for a case; with `all_const`, inputs become inline literals too.
fn program_text(case: &Case, all_const: bool) -> Result<String, String> {
    let tuple_members: Vec<&String> = case
        .tuples
        .iter()
        .flat_map(|(_, members)| members)
        .collect();
    let params: Vec<String> = if all_const {
        Vec::new()
    } else {
        case.inputs
            .iter()
            .map(|input| format!("{} {}", type_text(&input.dtype, &input.shape), input.name))
            .collect()
    };
    let reference = |name: &str| -> Result<String, String> {
        if let Some(input) = case.inputs.iter().find(|input| input.name == name) {
            return if all_const {
                literal_text(input)
            } else {
                Ok(name.to_string())
            };
        }
        let konst = case
            .consts
            .iter()
            .find(|konst| konst.name == name)
            .ok_or(format!("unknown operand {name}"))?;
        literal_text(konst)
    };
    let mut args = Vec::new();
    let mut attrs = vec!["name = string(\"out0\")".to_string()];
    for operand in case.inputs.iter().chain(&case.consts) {
        if tuple_members.contains(&&operand.name) {
            continue;
        }
        let binding = format!("{} = {}", operand.name, reference(&operand.name)?);
        let is_const = case.consts.iter().any(|konst| konst.name == operand.name);
        if case.attrs && is_const {
            attrs.push(binding);
        } else {
            args.push(binding);
        }
    }
    for (name, members) in &case.tuples {
        let values = members
            .iter()
            .map(|member| reference(member))
            .collect::<Result<Vec<_>, _>>()?;
        args.push(format!("{name} = ({})", values.join(", ")));
    }
    let results: Vec<String> = case
        .outputs
        .iter()
        .enumerate()
        .map(|(idx, out)| format!("{} out{idx}", type_text(&out.dtype, &out.shape)))
        .collect();
    let names: Vec<String> = (0..case.outputs.len())
        .map(|idx| format!("out{idx}"))
        .collect();
    let mut text = String::new();
    writeln!(
        text,
        "program(1.3)\n[buildInfo = dict<string, string>({{}})]\n{{"
    )
    .unwrap();
    writeln!(
        text,
        "    func main<{}>({}) {{",
        case.opset,
        params.join(", ")
    )
    .unwrap();
    writeln!(
        text,
        "        {} = {}({})[{}];",
        results.join(", "),
        case.op,
        args.join(", "),
        attrs.join(", ")
    )
    .unwrap();
    writeln!(text, "    }} -> ({});\n}}", names.join(", ")).unwrap();
    Ok(text)
}

fn dtype_of(name: &str) -> Result<DType, String> {
    DType::from_name(name).ok_or(format!("unknown dtype {name}"))
}

fn parse_value(dtype: DType, text: &str) -> Result<f64, String> {
    match dtype {
        DType::Bool => match text {
            "true" => Ok(1.0),
            "false" => Ok(0.0),
            _ => Err(format!("bad bool {text}")),
        },
        _ => text.parse::<f64>().map_err(|err| format!("{text}: {err}")),
    }
}

fn tensor_of(operand: &Operand) -> Result<Tensor, String> {
    let dtype = dtype_of(&operand.dtype)?;
    let values = operand
        .values
        .iter()
        .map(|value| parse_value(dtype, value))
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::from_f64s(TensorType::new(dtype, operand.shape.clone()), &values)
        .map_err(|err| err.to_string())
}

/// Distance in units in the last place of `dtype` (both values must be values of it).
fn ulps(dtype: DType, a: f64, b: f64) -> u64 {
    let ordered = |bits: i64, sign_bit: i64| {
        if bits & sign_bit != 0 {
            -(bits & (sign_bit - 1))
        } else {
            bits
        }
    };
    match dtype {
        DType::Fp16 => {
            let oa = ordered(i64::from(f16::from_f64(a).to_bits()), 0x8000);
            let ob = ordered(i64::from(f16::from_f64(b).to_bits()), 0x8000);
            oa.abs_diff(ob)
        }
        _ => {
            let oa = ordered(i64::from((a as f32).to_bits()), 0x8000_0000);
            let ob = ordered(i64::from((b as f32).to_bits()), 0x8000_0000);
            oa.abs_diff(ob)
        }
    }
}

fn compare(expected: &Operand, got: &Tensor) -> Result<(), String> {
    let dtype = dtype_of(&expected.dtype)?;
    let want_ty = TensorType::new(dtype, expected.shape.clone());
    if got.ty != want_ty {
        return Err(format!("type {} (expected {want_ty})", got.ty));
    }
    let got_values = got.to_f64_vec().ok_or("output is not numeric")?;
    let mut bad = Vec::new();
    for (idx, (want, &have)) in expected.values.iter().zip(&got_values).enumerate() {
        let want = parse_value(dtype, want)?;
        let ok = if dtype.is_float() {
            if want.is_nan() || have.is_nan() {
                want.is_nan() && have.is_nan()
            } else if want.is_infinite() || have.is_infinite() {
                want == have
            } else {
                ulps(dtype, want, have) <= 1
            }
        } else {
            want == have
        };
        if !ok {
            bad.push(format!("[{idx}] got {have:e}, want {want:e}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        let shown = bad.len().min(6);
        Err(format!(
            "{} of {} elements differ: {}",
            bad.len(),
            got_values.len(),
            bad[..shown].join("; ")
        ))
    }
}

fn verify(text: &str) -> Result<mil::facts::VerifiedProgram, String> {
    let (program, diags) = mil::lower::parse(text);
    if mil::diag::has_errors(&diags) {
        return Err(format!(
            "parse: {:?}",
            diags.iter().map(|diag| &diag.message).collect::<Vec<_>>()
        ));
    }
    let options = VerifyOptions {
        folder: Some(&ReferenceFolder),
        ..VerifyOptions::default()
    };
    mil::verify::verify(program, &options).map_err(|diags| {
        let errors: Vec<String> = diags
            .iter()
            .filter(|diag| diag.is_error())
            .map(|diag| format!("{}: {}", diag.code.as_str(), diag.message))
            .collect();
        format!("verify: {errors:?}")
    })
}

fn run_case(case: &Case, all_const: bool) -> Result<(), String> {
    let text = program_text(case, all_const)?;
    let verified = verify(&text).map_err(|err| format!("{err}\n{text}"))?;
    let func = verified.program().entry().ok_or("no function")?;
    let inputs: Vec<Tensor> = if all_const {
        Vec::new()
    } else {
        case.inputs
            .iter()
            .map(tensor_of)
            .collect::<Result<_, _>>()?
    };
    if all_const {
        // The folder must have made every output a compile-time constant.
        let function = &verified.program().functions[func];
        let facts = verified.facts(func);
        if let Some(output) = function
            .outputs
            .iter()
            .find(|output| facts.consts[output.value].is_none())
        {
            return Err(format!("output {:?} was not folded\n{text}", output.value));
        }
    }
    let result = reference::eval(&verified, func, &inputs);
    match (&case.error, result) {
        (Some(code), Err(err)) if err.code().as_str() == code => Ok(()),
        (Some(code), Err(err)) => Err(format!(
            "expected {code}, got {}: {err}",
            err.code().as_str()
        )),
        (Some(code), Ok(_)) => Err(format!("expected {code}, got outputs")),
        (None, Err(err)) => Err(format!("eval failed: {err}\n{text}")),
        (None, Ok(outputs)) => {
            if outputs.len() != case.outputs.len() {
                return Err(format!(
                    "{} outputs, expected {}",
                    outputs.len(),
                    case.outputs.len()
                ));
            }
            for (idx, (want, got)) in case.outputs.iter().zip(&outputs).enumerate() {
                compare(want, got).map_err(|err| format!("output {idx}: {err}\n{text}"))?;
            }
            Ok(())
        }
    }
}

#[test]
fn reference_matches_numpy_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference-vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vector directory exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "vec"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the generated .vec files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut n_checked = 0;
    let mut ops_seen = std::collections::BTreeSet::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable vector file");
        let cases = parse_cases(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        for case in &cases {
            ops_seen.insert(case.op.clone());
            for all_const in [false, true] {
                if all_const && case.error.is_some() {
                    continue;
                }
                n_checked += 1;
                if let Err(err) = run_case(case, all_const) {
                    let mode = if all_const { "folded" } else { "run time" };
                    failures.push(format!("{} ({mode}): {err}", case.name));
                }
            }
        }
    }
    // Every op of mil-spec section 6 except `const` (exercised by every folded case) has vectors.
    let missing: Vec<&str> = mil::ir::OpKind::ALL
        .iter()
        .map(|kind| kind.name())
        .filter(|name| *name != "const" && !ops_seen.contains(*name))
        .collect();
    assert!(missing.is_empty(), "ops without vectors: {missing:?}");
    assert!(
        failures.is_empty(),
        "{} of {n_checked} checks failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(n_checked > 600, "only {n_checked} checks ran");
}

#[test]
fn vector_parser_reads_the_format() {
    let text = "# comment\ncase c\nop add\nopset ios18\nin x fp16 2 1.0 nan\nconst y fp16 - -0.0\nout fp16 2 1.0 nan\nend\n";
    let cases = parse_cases(text).unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].inputs[0].shape, vec![2]);
    assert!(cases[0].consts[0].shape.is_empty());
    let program = program_text(&cases[0], false).unwrap();
    assert!(
        program.contains("func main<ios18>(tensor<fp16, [2]> x)"),
        "{program}"
    );
    assert!(program.contains("add(x = x, y = fp16(-0.0))"), "{program}");
    let folded = program_text(&cases[0], true).unwrap();
    assert!(
        folded.contains("add(x = tensor<fp16, [2]>([1.0, NaN]), y = fp16(-0.0))"),
        "{folded}"
    );
    assert_eq!(ulps(DType::Fp16, 1.0, 1.0 + 2f64.powi(-10)), 1);
    assert_eq!(ulps(DType::Fp16, -0.0, 0.0), 0);
    assert_eq!(ulps(DType::Fp32, -2f64.powi(-149), 2f64.powi(-149)), 2);
    assert!(parse_cases("case a\nop add\n").is_err());
}
