//! The canonical printer (mil-spec 3.11).
//!
//! Output is always the 1.3 dialect: `program(1.3)`, bare scalar types, `string("...")` names,
//! a `dict<string, string>` buildInfo (omitted when empty), four-space indentation, one
//! statement per line, arguments in source order, and an attribute block with `name` first,
//! then `val`, then the other attributes in source order. Floats are C99 hex with the shortest
//! exact mantissa ([`format_float`]), so printing never changes a value, and
//! `print(parse(print(parse(x)))) == print(parse(x))`.
//!
//! The printer never panics, even on IR that breaks the lowering invariants (a dangling handle
//! prints as `?`, which does not parse).

use crate::ir::round_to_dtype;
use crate::ir::{
    ArgValue, BlobRef, DType, Function, Handle, Literal, Op, Program, Tensor, TensorData,
    TensorType, Use, ValueDef,
};
use crate::lex::quote_string;
use std::fmt::Write as _;

/// Canonical text (mil-spec 3.11): 1.3 dialect, 4-space indent, hex floats, args in source
/// order, attribute block `name` first then `val` then the rest;
/// `print(parse(print(parse(x)))) == print(parse(x))`.
pub fn print(program: &Program) -> String {
    let mut out = String::from("program(1.3)\n");
    if !program.build_info.is_empty() {
        out.push_str("[buildInfo = dict<string, string>({");
        for (idx, (key, value)) in program.build_info.iter().enumerate() {
            if idx > 0 {
                out.push_str(", ");
            }
            out.push('{');
            quote_string(key, &mut out);
            out.push_str(", ");
            quote_string(value, &mut out);
            out.push('}');
        }
        out.push_str("})]\n");
    }
    out.push_str("{\n");
    for (idx, (_, func)) in program.functions.iter().enumerate() {
        if idx > 0 {
            out.push('\n');
        }
        write_function(func, &mut out);
    }
    out.push_str("}\n");
    out
}

/// One function as it appears inside [`print()`]'s output (indented by four spaces, ending with
/// a newline); empty if `func` is not in `program`.
pub fn print_function(program: &Program, func: Handle<Function>) -> String {
    let mut out = String::new();
    if let Some(func) = program.functions.try_get(func) {
        write_function(func, &mut out);
    }
    out
}

/// C99 hexadecimal text of `value` rounded to the float `dtype`: `0x1.<hex>p<exp>` with the
/// shortest exact mantissa (subnormals normalised), `0x0p+0`, `-0x0p+0`, `inf`, `-inf`, `nan`.
/// For integer dtypes the value (truncated and saturated) in decimal; for `bool`, `true` or
/// `false`.
pub fn format_float(value: f64, dtype: DType) -> String {
    if dtype == DType::Bool {
        return if value != 0.0 { "true" } else { "false" }.to_string();
    }
    if let Some((lo, hi)) = dtype.int_range() {
        let int = if value.is_nan() {
            0
        } else {
            (value.trunc() as i128).clamp(lo, hi)
        };
        return int.to_string();
    }
    hex_f64(round_to_dtype(value, dtype))
}

fn hex_f64(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_string();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if value.is_infinite() {
        return format!("{sign}inf");
    }
    if value == 0.0 {
        return format!("{sign}0x0p+0");
    }
    let bits = value.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i64;
    let mut mantissa = bits & ((1u64 << 52) - 1);
    let exponent = if biased == 0 {
        // Subnormal: shift the leading one up to the implicit bit position.
        let shift = i64::from(mantissa.leading_zeros()) - 11;
        mantissa = (mantissa << shift) & ((1u64 << 52) - 1);
        -1022 - shift
    } else {
        biased - 1023
    };
    let mut out = format!("{sign}0x1");
    if mantissa != 0 {
        let digits = format!("{mantissa:013x}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    let exp_sign = if exponent >= 0 { "+" } else { "" };
    let _ = write!(out, "p{exp_sign}{exponent}");
    out
}

fn write_function(func: &Function, out: &mut String) {
    let _ = write!(out, "    func {}<{}>(", func.name, func.opset);
    for (idx, &param) in func.params.iter().enumerate() {
        if idx > 0 {
            out.push_str(", ");
        }
        match func.values.try_get(param) {
            Some(value) => {
                let _ = write!(out, "{} {}", value.decl, value.name);
            }
            None => out.push('?'),
        }
    }
    out.push_str(") {\n");
    for (_, op) in func.ops.iter() {
        out.push_str("        ");
        write_op(func, op, out);
        out.push('\n');
    }
    out.push_str("    } -> (");
    for (idx, output) in func.outputs.iter().enumerate() {
        if idx > 0 {
            out.push_str(", ");
        }
        write_use(func, *output, out);
    }
    out.push_str(");\n");
}

fn write_op(func: &Function, op: &Op, out: &mut String) {
    for (idx, &result) in op.results.iter().enumerate() {
        if idx > 0 {
            out.push_str(", ");
        }
        match func.values.try_get(result) {
            Some(value) => {
                let _ = write!(out, "{} {}", value.decl, value.name);
            }
            None => out.push('?'),
        }
    }
    let _ = write!(out, " = {}(", op.kind);
    let mut first = true;
    for arg in op.args.iter().filter(|arg| !arg.in_attrs) {
        if !first {
            out.push_str(", ");
        }
        first = false;
        let _ = write!(out, "{} = ", arg.name);
        write_arg_value(func, &arg.value, out);
    }
    out.push(')');
    let vals = op
        .args
        .iter()
        .filter(|arg| arg.in_attrs && arg.name == "val");
    let others = op
        .args
        .iter()
        .filter(|arg| arg.in_attrs && arg.name != "val");
    let mut attrs = vals.chain(others).peekable();
    if op.name_attr.is_some() || attrs.peek().is_some() {
        out.push('[');
        let mut first = true;
        if let Some(name) = &op.name_attr {
            out.push_str("name = string(");
            quote_string(name, out);
            out.push(')');
            first = false;
        }
        for arg in attrs {
            if !first {
                out.push_str(", ");
            }
            first = false;
            let _ = write!(out, "{} = ", arg.name);
            write_arg_value(func, &arg.value, out);
        }
        out.push(']');
    }
    out.push(';');
}

fn write_arg_value(func: &Function, value: &ArgValue, out: &mut String) {
    match value {
        ArgValue::Single(single) => write_use(func, *single, out),
        ArgValue::Tuple(uses) => {
            out.push('(');
            for (idx, used) in uses.iter().enumerate() {
                if idx > 0 {
                    out.push_str(", ");
                }
                write_use(func, *used, out);
            }
            out.push(')');
        }
    }
}

fn write_use(func: &Function, used: Use, out: &mut String) {
    match func.values.try_get(used.value) {
        Some(value) => match &value.def {
            ValueDef::Literal(literal) => write_literal(literal, out),
            _ => out.push_str(&value.name),
        },
        None => out.push('?'),
    }
}

/// A literal: its type (`fp16` for rank 0, else `tensor<...>`), then the payload in parentheses.
fn write_literal(literal: &Literal, out: &mut String) {
    match literal {
        Literal::Tensor(tensor) => write_tensor(tensor, out),
        Literal::Blob(blob) => write_blob(blob, out),
    }
}

fn write_blob(blob: &BlobRef, out: &mut String) {
    let _ = write!(out, "{}(BLOBFILE(path = string(", blob.ty);
    quote_string(&blob.path, out);
    let _ = write!(out, "), offset = uint64({})))", blob.offset);
}

fn write_tensor(tensor: &Tensor, out: &mut String) {
    let ty = &tensor.ty;
    let _ = write!(out, "{ty}(");
    let numel = ty.numel();
    if ty.rank() == 0 {
        write_element(tensor, 0, out);
    } else {
        out.push('[');
        for idx in 0..numel {
            if idx > 0 {
                out.push_str(", ");
            }
            write_element(tensor, idx, out);
        }
        out.push(']');
    }
    out.push(')');
}

fn write_element(tensor: &Tensor, idx: usize, out: &mut String) {
    match &tensor.data {
        TensorData::Strings(strings) => match strings.get(idx) {
            Some(string) => quote_string(string, out),
            None => out.push('?'),
        },
        TensorData::Bytes(bytes) => match element_text(&tensor.ty, bytes, idx) {
            Some(text) => out.push_str(&text),
            None => out.push('?'),
        },
    }
}

/// Element `idx` of a byte-backed tensor as literal text, exact for every dtype (64-bit
/// integers included).
fn element_text(ty: &TensorType, bytes: &[u8], idx: usize) -> Option<String> {
    let dtype = ty.dtype;
    if dtype == DType::Bool {
        return Some(
            if *bytes.get(idx)? != 0 {
                "true"
            } else {
                "false"
            }
            .to_string(),
        );
    }
    if dtype.is_float() {
        let size = dtype.size_bytes()?;
        let element =
            bytes.get(idx.checked_mul(size)?..idx.checked_mul(size)?.checked_add(size)?)?;
        return Some(format_float(crate::ir::decode_f64(dtype, element)?, dtype));
    }
    let bits = dtype.bits();
    let signed = matches!(
        dtype,
        DType::Int4 | DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64
    );
    let mut raw: u128 = 0;
    for bit in 0..bits {
        let pos = idx.checked_mul(bits)?.checked_add(bit)?;
        if (bytes.get(pos / 8)? >> (pos % 8)) & 1 == 1 {
            raw |= 1 << bit;
        }
    }
    let value = if signed && bits > 0 && (raw >> (bits - 1)) & 1 == 1 {
        raw as i128 - (1i128 << bits)
    } else {
        raw as i128
    };
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::parse;

    #[test]
    fn hex_float_spellings() {
        let cases: &[(f64, DType, &str)] = &[
            (0.125, DType::Fp16, "0x1p-3"),
            (-10.0, DType::Fp16, "-0x1.4p+3"),
            (1.0, DType::Fp32, "0x1p+0"),
            (0.0, DType::Fp16, "0x0p+0"),
            (-0.0, DType::Fp32, "-0x0p+0"),
            (f64::INFINITY, DType::Fp16, "inf"),
            (f64::NEG_INFINITY, DType::Fp32, "-inf"),
            (f64::NAN, DType::Fp16, "nan"),
            (2f64.powi(-24), DType::Fp16, "0x1p-24"),
            (3.0 * 2f64.powi(-24), DType::Fp16, "0x1.8p-23"),
            (65504.0, DType::Fp16, "0x1.ffcp+15"),
            (0.1, DType::Fp32, "0x1.99999ap-4"),
            (0.1, DType::Fp64, "0x1.999999999999ap-4"),
            (0.1, DType::Fp16, "0x1.998p-4"),
            (f64::from_bits(1), DType::Fp64, "0x1p-1074"),
            (f64::from_bits(3), DType::Fp64, "0x1.8p-1073"),
            (70000.0, DType::Fp16, "inf"),
            (-3.9, DType::Int32, "-3"),
            (300.0, DType::Uint8, "255"),
            (1.0, DType::Bool, "true"),
        ];
        for &(value, dtype, expected) in cases {
            assert_eq!(format_float(value, dtype), expected, "{value} as {dtype}");
        }
    }

    #[test]
    fn canonical_form() {
        let text = r#"program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"coremlc-version", "3505.4.1"}})]
{
    func main<ios16>(tensor<fp16, [1, 4]> x) {
        tensor<int32, []> ax = const()[val = tensor<int32, []>(1), name = tensor<string, []>("ax")];
        tensor<fp16, [1, 4]> p = softmax(axis = ax, x = x)[name = tensor<string, []>("p")];
        tensor<fp16, [1, 4]> q = mul(x = p, y = fp16(0.5));
        tensor<fp16, [4]> w = const()[name = tensor<string, []>("w"), val = tensor<fp16, [4]>(BLOBFILE(offset = tensor<uint64, []>(64), path = tensor<string, []>("@model_path/w.bin")))];
    } -> (p, q);
}
"#;
        let (program, diags) = parse(text);
        assert!(diags.is_empty(), "{diags:?}");
        let expected = r#"program(1.3)
[buildInfo = dict<string, string>({{"coremlc-version", "3505.4.1"}})]
{
    func main<ios16>(tensor<fp16, [1, 4]> x) {
        int32 ax = const()[name = string("ax"), val = int32(1)];
        tensor<fp16, [1, 4]> p = softmax(axis = ax, x = x)[name = string("p")];
        tensor<fp16, [1, 4]> q = mul(x = p, y = fp16(0x1p-1));
        tensor<fp16, [4]> w = const()[name = string("w"), val = tensor<fp16, [4]>(BLOBFILE(path = string("@model_path/w.bin"), offset = uint64(64)))];
    } -> (p, q);
}
"#;
        let printed = print(&program);
        assert_eq!(printed, expected);
        let func = program.entry().unwrap();
        assert!(printed.contains(&print_function(&program, func)));
    }

    #[test]
    fn integer_elements_are_exact() {
        let text = "program(1.3) { func f<ios18>() { tensor<int64, [2]> a = const()[name = string(\"a\"), val = tensor<int64, [2]>([-9223372036854775808, 9007199254740993])]; tensor<uint4, [3]> b = const()[name = string(\"b\"), val = tensor<uint4, [3]>([15, 0, 9])]; tensor<bool, [2]> c = const()[name = string(\"c\"), val = tensor<bool, [2]>([true, false])]; } -> (a, b, c); }";
        let (program, diags) = parse(text);
        assert!(diags.is_empty(), "{diags:?}");
        let printed = print(&program);
        assert!(
            printed.contains("([-9223372036854775808, 9007199254740993])"),
            "{printed}"
        );
        assert!(
            printed.contains("tensor<uint4, [3]>([15, 0, 9])"),
            "{printed}"
        );
        assert!(
            printed.contains("tensor<bool, [2]>([true, false])"),
            "{printed}"
        );
    }
}
