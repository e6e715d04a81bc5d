//! Verification: the only way to obtain a [`VerifiedProgram`].
//!
//! [`verify`] runs [`crate::infer`] over every function and, when nothing is wrong, hands out the
//! program with its facts. What a `VerifiedProgram` guarantees (mil-spec sections 4, 6, 9):
//!
//! * every op is available in its function's opset (E111) and its arguments match the op's
//!   signature: names (E112, W181), no duplicates (E114), tuple arity (E115), required
//!   parameters present (E113), dtypes allowed (E120) and equal within a type domain (E121),
//!   const-only parameters bound to const values (E124, constness rules 4.4);
//! * every shape constraint and constant value of section 6 holds (E122, E123, E125);
//! * every value has a static type with no zero or unknown dimension (E171), every declared
//!   result type equals the inferred type (E130) and result counts match (E131);
//! * every `const` has a `val` of exactly its declared type (E160);
//! * every BLOBFILE literal was read and decoded (E150–E158, warnings W159 and the compat
//!   relaxations), and `facts.consts` holds the value of every const value: literals, `const`,
//!   `constexpr_affine_dequantize`, `dequantize` of consts, and, in default mode with a
//!   [`ConstFolder`], every op whose inputs are all const.
//!
//! With `ane_lints`, hardware-fidelity warnings (W173, W3xx) are added by [`crate::lint`].
//! Diagnostics come back sorted by source position.

use crate::blob::BlobMode;
use crate::diag::{DiagCode, Diagnostic, has_errors};
use crate::facts::{BlobSource, ConstFolder, NoBlobs, VerifiedProgram};
use crate::ir::{HandleVec, Program, ValueDef};

/// How to verify.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Where BLOBFILE bytes come from.
    pub blobs: &'a dyn BlobSource,
    /// Evaluates all-const ops for constness rule 4 (default mode only). Without one, such
    /// values are simply not const.
    pub folder: Option<&'a dyn ConstFolder>,
    /// Strict or compat (mil-spec 7.4) blob reading.
    pub blob_mode: BlobMode,
    /// Strict mode: constness rules 1–3 only (no folding), and strict-mode checks (a transpose
    /// flag on a rank-1 `matmul` operand is E125; `select` broadcasting beyond `a`/`b` is E123).
    pub strict: bool,
    /// Add the ANE-fidelity warnings of [`crate::lint`].
    pub ane_lints: bool,
}

impl Default for VerifyOptions<'static> {
    fn default() -> Self {
        VerifyOptions {
            blobs: &NoBlobs,
            folder: None,
            blob_mode: BlobMode::Lenient,
            strict: false,
            ane_lints: false,
        }
    }
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("folder", &self.folder.is_some())
            .field("blob_mode", &self.blob_mode)
            .field("strict", &self.strict)
            .field("ane_lints", &self.ane_lints)
            .finish_non_exhaustive()
    }
}

/// Verifies `program`. `Ok` carries the warnings inside the [`VerifiedProgram`]; `Err` carries
/// every diagnostic (errors and warnings), sorted by position.
pub fn verify(
    program: Program,
    options: &VerifyOptions,
) -> Result<VerifiedProgram, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    for (_, func) in program.functions.iter() {
        for (handle, value) in func.values.iter() {
            if matches!(value.def, ValueDef::Error) {
                diags.push(Diagnostic::new(
                    DiagCode::E199,
                    func.values.span(handle),
                    format!(
                        "'{}' has no definition: its statement failed to lower",
                        value.name
                    ),
                ));
            }
        }
    }
    let inferred = crate::infer::infer(&program, options, &mut diags);
    if has_errors(&diags) {
        sort(&mut diags);
        return Err(diags);
    }
    let mut facts = HandleVec::default();
    for (func, function_facts) in inferred.iter() {
        match function_facts.clone().into_function_facts() {
            Some(done) => {
                facts.push(done);
            }
            None => {
                // Only reachable with malformed IR (a result value no op defines): report it
                // rather than hand out facts with holes.
                let name = &program.functions[func].name;
                diags.push(Diagnostic::new(
                    DiagCode::E199,
                    program.functions.span(func),
                    format!("function '{name}' has values with no inferred type (malformed ir)"),
                ));
                sort(&mut diags);
                return Err(diags);
            }
        }
    }
    if options.ane_lints {
        crate::lint::ane_lints(&program, &facts, &mut diags);
    }
    sort(&mut diags);
    Ok(VerifiedProgram {
        program,
        facts,
        warnings: diags,
    })
}

fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|diag| diag.primary.span.start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{DiagCode, Severity};
    use crate::facts::{BlobMap, ConstFolder};
    use crate::ir::{
        Arena, Function, Handle, Op, OpKind, Opset, Program, Tensor, TensorType, Value,
    };
    use crate::ops::testutil::{FnBuilder, t16};
    use std::cell::Cell;
    use std::sync::Arc;

    fn parse(text: &str) -> Program {
        let (program, diags) = crate::lower::parse(text);
        assert!(diags.is_empty(), "{diags:?}");
        program
    }

    fn codes(diags: &[Diagnostic]) -> Vec<&'static str> {
        diags.iter().map(|diag| diag.code.as_str()).collect()
    }

    const BLOB_PROGRAM: &str = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 2, 1, 4]> x) {
        tensor<fp16, [2, 2, 1, 1]> w = const()[name = string("w"), val = tensor<fp16, [2, 2, 1, 1]>(BLOBFILE(path = string("@model_path/weights/w.bin"), offset = uint64(64)))];
        tensor<fp16, [1, 2, 1, 4]> y = conv(weight = w, x = x)[name = string("y"), fused = bool(true)];
        tensor<int8, [2]> q = const()[name = string("q"), val = tensor<int8, [2]>([4, -4])];
        tensor<fp16, [2]> d = dequantize(input = q, scale = fp16(0.5))[name = string("d")];
    } -> (y, d);
}
"#;

    #[test]
    fn verified_program_carries_consts_and_warnings() {
        let mut blobs = BlobMap::new();
        blobs.insert(
            "@model_path/weights/w.bin",
            crate::blob::single_fp16_blob(&[1.0, 2.0, 3.0, 4.0]),
        );
        let options = VerifyOptions {
            blobs: &blobs,
            ..VerifyOptions::default()
        };
        let verified = verify(parse(BLOB_PROGRAM), &options).expect("verifies");
        assert_eq!(codes(verified.warnings()), vec!["W181"]);
        let func = verified.program().entry().expect("entry");
        let facts = verified.facts(func);
        let f = &verified.program().functions[func];
        let w = f.value_by_name("w").expect("w");
        let d = f.value_by_name("d").expect("d");
        let y = f.value_by_name("y").expect("y");
        assert_eq!(
            facts.consts[w].as_ref().unwrap().to_f64_vec().unwrap(),
            vec![1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(
            facts.consts[d].as_ref().unwrap().to_f64_vec().unwrap(),
            vec![2.0, -2.0]
        );
        assert!(facts.consts[y].is_none());
        assert_eq!(facts.types[y], t16(&[1, 2, 1, 4]));
    }

    #[test]
    fn missing_blob_fails_with_every_diagnostic_sorted() {
        let err = verify(parse(BLOB_PROGRAM), &VerifyOptions::default()).expect_err("no blobs");
        // The unknown attribute warning comes after the blob error in the text.
        assert_eq!(codes(&err), vec!["E150", "W181"]);
        assert_eq!(err[1].severity, Severity::Warning);
    }

    /// Counts calls and folds every all-const `add` into zeros of the result type.
    struct CountingFolder(Cell<usize>);

    impl ConstFolder for CountingFolder {
        fn fold(
            &self,
            func: &Function,
            op: Handle<Op>,
            _inputs: &dyn Fn(Handle<Value>) -> Option<Arc<Tensor>>,
            result_types: &[TensorType],
        ) -> Option<Vec<Tensor>> {
            self.0.set(self.0.get() + 1);
            assert_eq!(func.ops[op].kind, OpKind::Add);
            let ty = result_types[0].clone();
            Some(vec![
                Tensor::from_f64s(ty.clone(), &vec![0.0; ty.numel()]).ok()?,
            ])
        }
    }

    const FOLD_PROGRAM: &str = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [2, 3]> x) {
        tensor<int32, [1]> a = add(x = tensor<int32, [1]>([0]), y = int32(1))[name = string("a")];
        tensor<fp16, [3]> s = reduce_sum(axes = a, x = x)[name = string("s")];
        tensor<fp16, [2, 3]> z = add(x = x, y = x)[name = string("z")];
    } -> (s, z);
}
"#;

    #[test]
    fn rule_four_folds_only_all_const_ops_outside_strict_mode() {
        let folder = CountingFolder(Cell::new(0));
        let options = VerifyOptions {
            folder: Some(&folder),
            ..VerifyOptions::default()
        };
        let verified = verify(parse(FOLD_PROGRAM), &options).expect("folds");
        // Only `a` is all-const; the folder's zeros make axes [0].
        assert_eq!(folder.0.get(), 1);
        let func = verified.program().entry().unwrap();
        let s = verified.program().functions[func]
            .value_by_name("s")
            .unwrap();
        assert_eq!(verified.facts(func).types[s], t16(&[3]));

        let strict = VerifyOptions {
            folder: Some(&folder),
            strict: true,
            ..VerifyOptions::default()
        };
        let err = verify(parse(FOLD_PROGRAM), &strict).expect_err("strict does not fold");
        assert_eq!(codes(&err), vec!["E124"]);
        assert_eq!(folder.0.get(), 1);
    }

    #[test]
    fn error_values_from_lowering_fail_verification() {
        let mut builder = FnBuilder::new(Opset::Ios18);
        builder.param("x", t16(&[2]));
        let mut func = builder.finish();
        let span = crate::span::Span::new(3, 4);
        func.values.append(
            Value {
                name: "bad".into(),
                decl: t16(&[]).into(),
                ty_span: span,
                def: crate::ir::ValueDef::Error,
            },
            span,
        );
        let mut functions = Arena::new();
        functions.append(func, span);
        let program = Program {
            version: "1.3".into(),
            build_info: Vec::new(),
            functions,
        };
        let err = verify(program, &VerifyOptions::default()).expect_err("error value");
        assert_eq!(codes(&err), vec!["E199"]);
        assert_eq!(err[0].code, DiagCode::E199);
    }
}
