//! The kernels compute what `graphs::math` computes: a whole transformer layer, forward and
//! backward, run kernel by kernel with the host glue maderix/ANE's `train.m` does on the CPU,
//! in both weight modes and with the static kernels, on the tiny configs (MHA, GQA, and Qwen3's
//! head structure with q/k norm). Uses the test interpreter in `common`.

mod common;

use common::{Rng, assert_close, run};
use milbridge_graphs::math::{self, LayerWeights};
use milbridge_graphs::{ModelConfig, WeightMode, dynamic, stories};

const TOL: f64 = 2e-3;

fn configs() -> Vec<ModelConfig> {
    vec![
        ModelConfig::tiny(),
        ModelConfig::tiny_gqa(),
        ModelConfig::qwen3_tiny(),
        ModelConfig::qwen3_tiny().with_maderix_residual_scale(),
    ]
}

fn layer(cfg: &ModelConfig, seed: u64) -> LayerWeights {
    let mut rng = Rng(seed);
    let scale = 1.0 / (cfg.dim as f64).sqrt();
    LayerWeights::from_fn(cfg, |name, _| match name {
        "rms_att" | "rms_ffn" | "q_norm" | "k_norm" => 1.0 + 0.2 * rng.next(),
        _ => 1.5 * scale * rng.next(),
    })
}

fn tile(cfg: &ModelConfig, x: &[f64]) -> Vec<f64> {
    math::gqa_tile(x, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.seq)
}

fn reduce(cfg: &ModelConfig, x: &[f64]) -> Vec<f64> {
    math::gqa_reduce(x, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.seq)
}

fn plus<'a>(
    base: &[(&'static str, &'a [f64])],
    name: &'static str,
    value: &'a [f64],
) -> Vec<(&'static str, &'a [f64])> {
    let mut all = base.to_vec();
    all.push((name, value));
    all
}

fn axpy(alpha: f64, x: &[f64], y: &[f64]) -> Vec<f64> {
    x.iter().zip(y).map(|(a, b)| alpha * a + b).collect()
}

/// `probs [H][S][S]` as the kernels' flattened `[H*S][S]` tap (the same element order).
fn flat_probs(probs: &[f64]) -> Vec<f64> {
    probs.to_vec()
}

#[test]
fn dynamic_layer_forward_and_backward_match_math() {
    for cfg in configs() {
        let w = layer(&cfg, 11);
        let mut rng = Rng(12);
        let (dim, seq, alpha) = (cfg.dim, cfg.seq, cfg.residual_scale);
        let x = rng.vec(dim * seq, 1.0);
        let dy = rng.vec(dim * seq, 1.0);
        let want = math::layer_forward(&cfg, &w, &x);
        let (want_dx, _) = math::layer_backward(&cfg, &w, &want, &dy);
        for mode in [WeightMode::Packed, WeightMode::Params] {
            let label = format!("{cfg:?} {mode:?}");
            let named = w.named();
            // Forward.
            let norm = run(
                &dynamic::rmsnorm(&cfg, mode),
                &[("x", &x)],
                &plus(&named, "rms_w", &w.rms_att),
            );
            assert_close(&format!("{label} xnorm"), &norm["y"], &want.xnorm, TOL);
            let sdpa = run(
                &dynamic::sdpa_fwd(&cfg, mode),
                &[("xnorm", &want.xnorm)],
                &named,
            );
            assert_close(
                &format!("{label} q_rope"),
                &sdpa["q_rope"],
                &want.q_rope,
                TOL,
            );
            assert_close(
                &format!("{label} k_rope"),
                &sdpa["k_rope"],
                &want.k_rope,
                TOL,
            );
            assert_close(&format!("{label} v"), &sdpa["v"], &want.v, TOL);
            assert_close(
                &format!("{label} attn"),
                &sdpa["attn"],
                &want.attention.out,
                TOL,
            );
            if cfg.qk_norm {
                assert_close(&format!("{label} q_raw"), &sdpa["q_raw"], &want.q_raw, TOL);
                assert_close(&format!("{label} k_raw"), &sdpa["k_raw"], &want.k_raw, TOL);
            }
            if mode == WeightMode::Packed {
                assert_close(
                    &format!("{label} xnorm echo"),
                    &sdpa["xnorm"],
                    &want.xnorm,
                    1e-6,
                );
            } else {
                assert!(!sdpa.contains_key("xnorm"));
            }
            let wo = run(
                &dynamic::wo_fwd(&cfg, mode),
                &[("attn", &want.attention.out)],
                &named,
            );
            assert_close(&format!("{label} o"), &wo["o"], &want.o, TOL);
            let ffn = run(
                &dynamic::ffn_fused(&cfg, mode),
                &[("x2norm", &want.x2norm), ("x2", &want.x2)],
                &named,
            );
            assert_close(&format!("{label} x_next"), &ffn["x_next"], &want.out, TOL);
            assert_close(&format!("{label} h1"), &ffn["h1"], &want.ffn.h1, TOL);
            assert_close(&format!("{label} h3"), &ffn["h3"], &want.ffn.h3, TOL);
            assert_close(&format!("{label} gate"), &ffn["gate"], &want.ffn.gate, TOL);

            // Backward, with the host glue between kernels.
            let dffn: Vec<f64> = dy.iter().map(|g| alpha * g).collect();
            let w2t = run(
                &dynamic::ffn_bwd_w2t(&cfg, mode),
                &[("dffn", &dffn)],
                &named,
            );
            let want_ffn = math::swiglu_bwd(
                &dffn,
                &want.x2norm,
                &want.ffn,
                &w.w1,
                &w.w3,
                &w.w2,
                dim,
                cfg.hidden,
                seq,
            );
            assert_close(
                &format!("{label} dsilu"),
                &w2t["dsilu"],
                &want_ffn.dgate,
                TOL,
            );
            let (dh1, dh3) = math::swiglu_gate_bwd(&w2t["dsilu"], &want.ffn.h1, &want.ffn.h3);
            let w13 = run(
                &dynamic::ffn_bwd_w13t(&cfg, mode),
                &[("dh1", &dh1), ("dh3", &dh3)],
                &named,
            );
            assert_close(&format!("{label} dx_ffn"), &w13["dx"], &want_ffn.dx, TOL);
            let rms2 = run(
                &dynamic::rmsnorm_bwd(&cfg, mode),
                &[("dy", &w13["dx"]), ("x", &want.x2)],
                &plus(&named, "rms_w", &w.rms_ffn),
            );
            let (want_dx2n, _) =
                math::rmsnorm_bwd(&want_ffn.dx, &want.x2, &w.rms_ffn, dim, seq, cfg.norm_eps);
            assert_close(
                &format!("{label} rmsnorm bwd"),
                &rms2["dx"],
                &want_dx2n,
                TOL,
            );
            let dx2 = axpy(1.0, &rms2["dx"], &dy);
            let do_: Vec<f64> = dx2.iter().map(|g| alpha * g).collect();
            let wot = run(&dynamic::wot_bwd(&cfg, mode), &[("dy", &do_)], &named);
            let want_da = math::linear_t(&w.wo, &do_, dim, cfg.q_dim(), seq);
            assert_close(&format!("{label} da"), &wot["da"], &want_da, TOL);
            let (k_t, v_t) = (tile(&cfg, &sdpa["k_rope"]), tile(&cfg, &sdpa["v"]));
            let b1 = run(
                &dynamic::sdpa_bwd1(&cfg, mode),
                &[
                    ("q", &sdpa["q_rope"]),
                    ("k", &k_t),
                    ("v", &v_t),
                    ("da", &wot["da"]),
                ],
                &[],
            );
            assert_close(
                &format!("{label} probs"),
                &b1["probs"],
                &flat_probs(&want.attention.probs),
                TOL,
            );
            let b2 = run(
                &dynamic::sdpa_bwd2(&cfg, mode),
                &[
                    ("probs", &b1["probs"]),
                    ("dp", &b1["dp"]),
                    ("q", &sdpa["q_rope"]),
                    ("k", &k_t),
                ],
                &[],
            );
            let (want_dq, want_dk, want_dv) = math::causal_attention_bwd(
                &want_da,
                &want.q_rope,
                &want.k_rope,
                &want.v,
                &want.attention.probs,
                cfg.n_heads,
                cfg.n_kv_heads,
                cfg.head_dim,
                seq,
            );
            let dk = reduce(&cfg, &b2["dk"]);
            let dv = reduce(&cfg, &b1["dv"]);
            assert_close(&format!("{label} dq"), &b2["dq"], &want_dq, TOL);
            assert_close(&format!("{label} dk"), &dk, &want_dk, TOL);
            assert_close(&format!("{label} dv"), &dv, &want_dv, TOL);
            let mut dq = math::rope_bwd(&b2["dq"], cfg.n_heads, cfg.head_dim, seq, cfg.rope_theta);
            let mut dk = math::rope_bwd(&dk, cfg.n_kv_heads, cfg.head_dim, seq, cfg.rope_theta);
            if cfg.qk_norm {
                let qn = run(
                    &dynamic::qk_norm_bwd(&cfg, mode, dynamic::NormHeads::Query),
                    &[("dy", &dq), ("x", &sdpa["q_raw"])],
                    &named,
                );
                let (want_dq_raw, _) = math::head_rmsnorm_bwd(
                    &dq,
                    &want.q_raw,
                    w.q_norm.as_ref().unwrap(),
                    cfg.n_heads,
                    cfg.head_dim,
                    seq,
                    cfg.norm_eps,
                );
                assert_close(&format!("{label} dq_raw"), &qn["dx"], &want_dq_raw, TOL);
                dq = qn["dx"].clone();
                let kn = run(
                    &dynamic::qk_norm_bwd(&cfg, mode, dynamic::NormHeads::Key),
                    &[("dy", &dk), ("x", &sdpa["k_raw"])],
                    &named,
                );
                dk = kn["dx"].clone();
            }
            let qb = run(&dynamic::q_bwd(&cfg, mode), &[("dq", &dq)], &named);
            let kvb = run(
                &dynamic::kv_bwd(&cfg, mode),
                &[("dk", &dk), ("dv", &dv)],
                &named,
            );
            let dxnorm = axpy(1.0, &qb["dx"], &kvb["dx"]);
            let rms1 = run(
                &dynamic::rmsnorm_bwd(&cfg, mode),
                &[("dy", &dxnorm), ("x", &x)],
                &plus(&named, "rms_w", &w.rms_att),
            );
            let dx = axpy(1.0, &rms1["dx"], &dx2);
            assert_close(&format!("{label} layer dx"), &dx, &want_dx, 5e-3);
        }
    }
}

#[test]
fn classifier_kernels_match_math() {
    let cfg = ModelConfig::tiny();
    let mut rng = Rng(21);
    let (dim, seq, vocab) = (cfg.dim, cfg.seq, cfg.vocab);
    let embed = rng.vec(vocab * dim, 0.3);
    let x = rng.vec(dim * seq, 1.0);
    let dlogits = rng.vec(vocab * seq, 0.1);
    let want_logits = math::linear(&embed, &x, vocab, dim, seq);
    let want_dx = math::linear_t(&embed, &dlogits, vocab, dim, seq);
    for mode in [WeightMode::Packed, WeightMode::Params] {
        let fwd = run(
            &dynamic::classifier_fwd(&cfg, mode),
            &[("x", &x)],
            &[("embed", &embed)],
        );
        assert_close("logits", &fwd["logits"], &want_logits, TOL);
        let bwd = run(
            &dynamic::classifier_bwd(&cfg, mode),
            &[("dlogits", &dlogits)],
            &[("embed", &embed)],
        );
        assert_close("classifier dx", &bwd["dx"], &want_dx, TOL);
    }
    let fwd = run(
        &stories::classifier_fwd(&cfg),
        &[("x", &x)],
        &[("embed", &embed)],
    );
    assert_close("static logits", &fwd["logits"], &want_logits, TOL);
    let bwd = run(
        &stories::classifier_bwd(&cfg),
        &[("dlogits", &dlogits)],
        &[("embed", &embed)],
    );
    assert_close("static classifier dx", &bwd["dx"], &want_dx, TOL);
    let sm = run(
        &dynamic::softmax_vocab(&cfg),
        &[("logits", &want_logits)],
        &[],
    );
    assert_close(
        "softmax",
        &sm["probs"],
        &math::softmax_channels(&want_logits, vocab, seq),
        TOL,
    );
    // The generic dynamic matmul, spec 8.5: y = W x.
    for mode in [WeightMode::Packed, WeightMode::Params] {
        let w = rng.vec(5 * 7, 1.0);
        let xin = rng.vec(7 * 3, 1.0);
        let y = run(
            &dynamic::dyn_matmul(7, 5, 3, mode),
            &[("x", &xin)],
            &[("w", &w)],
        );
        assert_close(
            "dyn matmul",
            &y["y"],
            &math::linear(&w, &xin, 5, 7, 3),
            1e-6,
        );
    }
}

#[test]
fn static_layer_matches_math() {
    for cfg in [
        ModelConfig::tiny(),
        ModelConfig::tiny_gqa(),
        ModelConfig::qwen3_tiny(),
    ] {
        let w = layer(&cfg, 31);
        let mut rng = Rng(32);
        let (dim, seq, alpha) = (cfg.dim, cfg.seq, cfg.residual_scale);
        let x = rng.vec(dim * seq, 1.0);
        let dy = rng.vec(dim * seq, 1.0);
        let want = math::layer_forward(&cfg, &w, &x);
        let weights = w.named();
        let sdpa = run(&stories::sdpa_fwd_taps(&cfg), &[("x", &x)], &weights);
        assert_close("static xnorm", &sdpa["xnorm"], &want.xnorm, TOL);
        assert_close("static attn", &sdpa["attn"], &want.attention.out, TOL);
        assert_close("static o_out", &sdpa["o_out"], &want.o, TOL);
        assert_close("static q_rope", &sdpa["q_rope"], &want.q_rope, TOL);
        let ffn = run(&stories::ffn_fwd_taps(&cfg), &[("x", &want.x2)], &weights);
        assert_close("static ffn_out", &ffn["ffn_out"], &want.ffn.out, TOL);
        assert_close("static gate", &ffn["gate"], &want.ffn.gate, TOL);
        let dffn: Vec<f64> = dy.iter().map(|g| alpha * g).collect();
        let fb = run(
            &stories::ffn_bwd(&cfg),
            &[("dffn", &dffn), ("h1", &want.ffn.h1), ("h3", &want.ffn.h3)],
            &weights,
        );
        let want_ffn = math::swiglu_bwd(
            &dffn,
            &want.x2norm,
            &want.ffn,
            &w.w1,
            &w.w3,
            &w.w2,
            dim,
            cfg.hidden,
            seq,
        );
        assert_close("static dh1", &fb["dh1"], &want_ffn.dh1, TOL);
        assert_close("static dh3", &fb["dh3"], &want_ffn.dh3, TOL);
        assert_close("static ffn dx", &fb["dx"], &want_ffn.dx, TOL);
        let rb = run(
            &stories::rmsnorm_bwd(&cfg),
            &[("dy", &fb["dx"]), ("x", &want.x2)],
            &[("rms_w", &w.rms_ffn)],
        );
        let dx2 = axpy(1.0, &rb["dx"], &dy);
        let do_: Vec<f64> = dx2.iter().map(|g| alpha * g).collect();
        let (k_t, v_t) = (tile(&cfg, &want.k_rope), tile(&cfg, &want.v));
        let b1 = run(
            &stories::sdpa_bwd1_wo(&cfg),
            &[("q", &want.q_rope), ("k", &k_t), ("v", &v_t), ("dy", &do_)],
            &weights,
        );
        let b2 = run(
            &stories::sdpa_bwd2(&cfg),
            &[
                ("probs", &b1["probs"]),
                ("dp", &b1["dp"]),
                ("q", &want.q_rope),
                ("k", &k_t),
            ],
            &[],
        );
        let want_da = math::linear_t(&w.wo, &do_, dim, cfg.q_dim(), seq);
        let (want_dq, want_dk, want_dv) = math::causal_attention_bwd(
            &want_da,
            &want.q_rope,
            &want.k_rope,
            &want.v,
            &want.attention.probs,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.head_dim,
            seq,
        );
        assert_close("static dq", &b2["dq"], &want_dq, TOL);
        assert_close("static dk", &reduce(&cfg, &b2["dk"]), &want_dk, TOL);
        assert_close("static dv", &reduce(&cfg, &b1["dv"]), &want_dv, TOL);
        if !cfg.qk_norm {
            let dq = math::rope_bwd(&want_dq, cfg.n_heads, cfg.head_dim, seq, cfg.rope_theta);
            let dk = math::rope_bwd(&want_dk, cfg.n_kv_heads, cfg.head_dim, seq, cfg.rope_theta);
            let qkv = run(
                &stories::qkv_bwd(&cfg),
                &[("dq", &dq), ("dk", &dk), ("dv", &want_dv)],
                &weights,
            );
            let mut want_dxn = math::linear_t(&w.wq, &dq, cfg.q_dim(), dim, seq);
            want_dxn = axpy(
                1.0,
                &math::linear_t(&w.wk, &dk, cfg.kv_dim(), dim, seq),
                &want_dxn,
            );
            want_dxn = axpy(
                1.0,
                &math::linear_t(&w.wv, &want_dv, cfg.kv_dim(), dim, seq),
                &want_dxn,
            );
            assert_close("static qkv dx", &qkv["dx"], &want_dxn, TOL);
        }
        let norm = run(
            &stories::rmsnorm(&cfg),
            &[("x", &x)],
            &[("rms_w", &w.rms_att)],
        );
        assert_close("static rmsnorm", &norm["y"], &want.xnorm, TOL);
    }
}
