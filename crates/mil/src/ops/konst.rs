//! `const` (mil-spec 6.1).
//!
//! * Availability: all opsets.
//! * Form: `TYPE NAME = const()[name = string("..."), val = LITERAL];` — the argument list is
//!   empty and `val` is an attribute (accepted as an argument too).
//! * `val`: any literal (scalar, tensor list, BLOBFILE tensor, string, bool).
//! * Result: exactly the literal's type, which must equal the declared type (E160, as must a
//!   missing `val`). Any other argument or attribute is E112.
//! * The value is const (constness rule 2), available in `facts.consts`.

use super::{Cx, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes};
use crate::diag::{DiagCode, Diagnostic};
use crate::ir::{ArgValue, OpKind, Opset, ValueDef};

/// The single version of `const`.
pub const VERSIONS: &[OpSignature] = &[OpSignature {
    kind: OpKind::Const,
    introduced: Opset::Ios15,
    params: &[ParamSpec::new("val", dtypes::ANY).konst()],
    variadic: None,
    results: ResultCount::One,
}];

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let op = cx.op;
    let mut failed = false;
    let mut val = None;
    for arg in &op.args {
        if arg.name != "val" {
            cx.diags.push(
                Diagnostic::new(
                    DiagCode::E112,
                    arg.name_span,
                    format!("'const' has no parameter '{}'", arg.name),
                )
                .with_note("'const' takes only a val attribute"),
            );
            failed = true;
            continue;
        }
        if val.is_some() {
            // Duplicate `val`: lowering reports plain duplicates; an argument plus an attribute
            // is E114.
            let first = op.arg("val").expect("seen above");
            if first.in_attrs != arg.in_attrs {
                cx.diags.push(
                    Diagnostic::new(
                        DiagCode::E114,
                        arg.name_span,
                        "'const' parameter 'val' is given both as argument and as attribute",
                    )
                    .with_secondary(first.name_span, "'val' first given here"),
                );
            }
            failed = true;
            continue;
        }
        val = Some(arg);
    }
    let Some(val) = val else {
        if !failed {
            let name = op
                .results
                .first()
                .map_or("", |&result| cx.func.values[result].name.as_str());
            cx.diags.push(
                Diagnostic::new(
                    DiagCode::E160,
                    cx.op_span(),
                    format!("const '{name}' has no val attribute"),
                )
                .with_label("add [val = ...]"),
            );
        }
        return Err(super::Fail);
    };
    if failed {
        return Err(super::Fail);
    }
    let used = match &val.value {
        ArgValue::Single(used) => *used,
        ArgValue::Tuple(_) => {
            return Err(cx.fail(
                DiagCode::E115,
                val.value.span(),
                "'const' val takes a single literal, not a tuple",
            ));
        }
    };
    if !matches!(cx.func.values[used.value].def, ValueDef::Literal(_)) {
        let description = cx.describe(used.value);
        let diag = cx.with_origin(
            Diagnostic::new(
                DiagCode::E160,
                used.span,
                format!("'const' val must be a literal, got a reference to {description}"),
            ),
            used.value,
            used.span,
        );
        return Err(cx.fail_with(diag));
    }
    // A literal whose own checks failed (bad blob, zero dim) is unknown: no cascade.
    let (Some(ty), Some(value)) = (
        cx.facts.ty(used.value).cloned(),
        cx.konst_of_value(used.value),
    ) else {
        return Err(super::Fail);
    };
    if let [result] = op.results[..] {
        let declared = &cx.func.values[result];
        if !declared.decl.matches(&ty) {
            let span = if declared.ty_span.is_empty() {
                cx.func.values.span(result)
            } else {
                declared.ty_span
            };
            let diag = Diagnostic::new(
                DiagCode::E160,
                span,
                format!(
                    "const '{}' is declared as {} but its val is {ty}",
                    declared.name, declared.decl
                ),
            )
            .with_secondary(used.span, format!("val of type {ty}"));
            return Err(cx.fail_with(diag));
        }
    }
    cx.materialise(vec![(*value).clone()]);
    Ok((OpAttrs::Const, vec![ty]))
}
