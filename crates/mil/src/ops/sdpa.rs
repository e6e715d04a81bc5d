//! `scaled_dot_product_attention` (mil-spec 6.11), ios18 only.
//!
//! * `query: [B, *, L, E]`, `key: [B, *, S, E]`, `value: [B, *, S, EV]`, one dtype T in
//!   {fp16, fp32}, the same rank >= 3, identical leading dims (no broadcasting between q, k, v),
//!   equal `E` for query and key, equal `S` for key and value (E122).
//! * `attn_mask`: optional, bool/fp16/fp32, its own dtype; last dim `== S` and the other dims
//!   broadcastable to `query.shape[:-1]` (E122). None of the parameters must be const.
//! * Result: `[B, *, L, EV]`, dtype T. `softmax(Q Kᵀ / sqrt(E) (+ mask)) V`; a bool mask sets
//!   false positions to -inf.

use super::{
    Cx, DefaultValue, OpAttrs, OpSignature, ParamSpec, ResultCount, RuleResult, broadcast, dtypes,
    fmt_shape,
};
use crate::diag::DiagCode;
use crate::ir::{DType, OpKind, Opset, TensorType};

const MASK_DTYPES: &[DType] = &[DType::Bool, DType::Fp16, DType::Fp32];

/// The single (ios18) version.
pub const VERSIONS: &[OpSignature] = &[OpSignature {
    kind: OpKind::ScaledDotProductAttention,
    introduced: Opset::Ios18,
    params: &[
        ParamSpec::new("query", dtypes::FLOAT).dom("T"),
        ParamSpec::new("key", dtypes::FLOAT).dom("T"),
        ParamSpec::new("value", dtypes::FLOAT).dom("T"),
        ParamSpec::new("attn_mask", MASK_DTYPES).opt(DefaultValue::Absent),
    ],
    variadic: None,
    results: ResultCount::One,
}];

pub(crate) fn rule(cx: &mut Cx<'_>) -> RuleResult {
    let query = cx.req_ty("query");
    let key = cx.req_ty("key");
    let value = cx.req_ty("value");
    let rank = query.rank();
    cx.require_rank("query", &query, |rank| rank >= 3, "rank >= 3")?;
    for (name, ty) in [("key", &key), ("value", &value)] {
        if ty.rank() != rank {
            let span = cx.span(name);
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'scaled_dot_product_attention' {name} must have query's rank {rank}, got {ty}"
                ),
            ));
        }
        if ty.shape[..rank - 2] != query.shape[..rank - 2] {
            let span = cx.span(name);
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'scaled_dot_product_attention' {name} batch dims {} differ from query's {} (no broadcasting)",
                    fmt_shape(&ty.shape[..rank - 2]),
                    fmt_shape(&query.shape[..rank - 2])
                ),
            ));
        }
    }
    let (l, e) = (query.shape[rank - 2], query.shape[rank - 1]);
    let (s, ek) = (key.shape[rank - 2], key.shape[rank - 1]);
    let (sv, ev) = (value.shape[rank - 2], value.shape[rank - 1]);
    if ek != e {
        let span = cx.span("key");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'scaled_dot_product_attention' key embedding size {ek} differs from query's {e}"
            ),
        ));
    }
    if sv != s {
        let span = cx.span("value");
        return Err(cx.fail(
            DiagCode::E122,
            span,
            format!(
                "'scaled_dot_product_attention' value sequence length {sv} differs from key's {s}"
            ),
        ));
    }
    if let Some(mask) = cx.ty("attn_mask") {
        let target = &query.shape[..rank - 1];
        let fits = mask.rank() >= 1
            && mask.rank() <= rank
            && mask.shape[mask.rank() - 1] == s
            && broadcast(&mask.shape[..mask.rank() - 1], target).as_deref() == Some(target);
        if !fits {
            let span = cx.span("attn_mask");
            return Err(cx.fail(
                DiagCode::E122,
                span,
                format!(
                    "'scaled_dot_product_attention' attn_mask {} does not broadcast to {} (last dim must be S = {s})",
                    fmt_shape(&mask.shape),
                    fmt_shape(&[target, &[s]].concat())
                ),
            ));
        }
    }
    let mut shape = query.shape[..rank - 2].to_vec();
    shape.extend([l, ev]);
    let has_mask = cx.has("attn_mask");
    Ok((
        OpAttrs::Sdpa { has_mask },
        vec![TensorType::new(query.dtype, shape)],
    ))
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, OpKind, Opset};
    use crate::ops::testutil::*;

    #[test]
    fn sdpa_shapes() {
        let mut b = FnBuilder::new(Opset::Ios18);
        let q = b.param("q", t16(&[1, 4, 8, 16]));
        let k = b.param("k", t16(&[1, 4, 10, 16]));
        let v = b.param("v", t16(&[1, 4, 10, 32]));
        let m = b.param("m", tt(DType::Bool, &[1, 1, 8, 10]));
        let r = b.op(
            OpKind::ScaledDotProductAttention,
            &[("query", q), ("key", k), ("value", v), ("attn_mask", m)],
        );
        let bad = b.param("bad", t16(&[1, 1, 8, 9]));
        b.op(
            OpKind::ScaledDotProductAttention,
            &[("query", q), ("key", k), ("value", v), ("attn_mask", bad)],
        );
        let kv = b.param("kv", t16(&[1, 2, 10, 16]));
        b.op(
            OpKind::ScaledDotProductAttention,
            &[("query", q), ("key", kv), ("value", v)],
        );
        let out = b.run();
        assert_eq!(out.ty(r), Some(t16(&[1, 4, 8, 32])));
        assert_eq!(out.codes(), vec!["E122", "E122"]);
    }

    #[test]
    fn sdpa_needs_ios18() {
        let mut b = FnBuilder::new(Opset::Ios17);
        let q = b.param("q", t16(&[1, 4, 8, 16]));
        b.op(
            OpKind::ScaledDotProductAttention,
            &[("query", q), ("key", q), ("value", q)],
        );
        let out = b.run();
        assert_eq!(out.codes(), vec!["E111"]);
        assert!(
            out.diags[0].message.contains("introduced in ios18"),
            "{}",
            out.diags[0].message
        );
    }
}
