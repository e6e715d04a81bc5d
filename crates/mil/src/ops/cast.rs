//! `cast` (mil-spec 6.6).
//!
//! * ios15: `x` in {fp16, fp32, int32, bool}; `dtype`: const string naming the target, one of
//!   `"fp16"`, `"fp32"`, `"int32"`, `"bool"`.
//! * ios17: `x` and the target may also be int8, uint8, int16, uint16.
//! * Anything else as target is E125 (the value is a *string*, not a type).
//! * Result: `tensor<dtype, shape(x)>`.

use super::{Cx, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, dtypes, or_list};
use crate::diag::DiagCode;
use crate::ir::{DType, OpKind, Opset, TensorType};

/// The cast versions.
pub const VERSIONS: &[OpSignature] = &[
    OpSignature {
        kind: OpKind::Cast,
        introduced: Opset::Ios15,
        params: &[
            ParamSpec::new("x", dtypes::BASIC),
            ParamSpec::new("dtype", dtypes::STRING).konst(),
        ],
        variadic: None,
        results: ResultCount::One,
    },
    OpSignature {
        kind: OpKind::Cast,
        introduced: Opset::Ios17,
        params: &[
            ParamSpec::new("x", dtypes::BASIC17),
            ParamSpec::new("dtype", dtypes::STRING).konst(),
        ],
        variadic: None,
        results: ResultCount::One,
    },
];

/// Cast targets available in `opset`.
pub fn targets(opset: Opset) -> &'static [DType] {
    if opset >= Opset::Ios17 {
        dtypes::BASIC17
    } else {
        dtypes::BASIC
    }
}

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let x = cx.req_ty("x");
    let name = cx.string("dtype")?.unwrap_or_default();
    let allowed = targets(cx.opset);
    let Some(dtype) = DType::from_name(&name).filter(|dtype| allowed.contains(dtype)) else {
        let span = cx.span("dtype");
        let names: Vec<String> = allowed.iter().map(|dtype| format!("\"{dtype}\"")).collect();
        return Err(cx.fail(
            DiagCode::E125,
            span,
            format!(
                "'cast' dtype \"{name}\" is not one of {} in {}",
                or_list(&names),
                cx.opset
            ),
        ));
    };
    Ok((
        OpAttrs::Cast { dtype },
        vec![TensorType::new(dtype, x.shape)],
    ))
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, OpKind, Opset};
    use crate::ops::OpAttrs;
    use crate::ops::testutil::*;

    #[test]
    fn cast_targets_per_opset() {
        let mut b = FnBuilder::new(Opset::Ios16);
        let x = b.param("x", tt(DType::Fp32, &[1, 4]));
        let to16 = b.string("fp16");
        let to8 = b.string("int8");
        let r = b.op(OpKind::Cast, &[("x", x), ("dtype", to16)]);
        b.op(OpKind::Cast, &[("x", x), ("dtype", to8)]);
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[1, 4])));
        assert_eq!(out.attrs(r), OpAttrs::Cast { dtype: DType::Fp16 });
        assert_eq!(out.codes(), vec!["E125"]);

        let mut b = FnBuilder::new(Opset::Ios17);
        let x = b.param("x", tt(DType::Fp32, &[]));
        let to8 = b.string("int8");
        let r = b.op(OpKind::Cast, &[("x", x), ("dtype", to8)]);
        let out = b.run();
        assert!(out.codes().is_empty());
        assert_eq!(out.ty(r), Some(tt(DType::Int8, &[])));
    }
}
