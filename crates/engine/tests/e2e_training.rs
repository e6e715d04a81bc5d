//! End to end: maderix/ANE's training kernels from `milbridge-graphs`, in both weight layouts
//! (spatially packed and as function parameters), at the tiny configs, compiled and run on
//! the best tier and the portable table, against `graphs::math` (f64, written directly in Rust,
//! not through MIL).
//!
//! Tolerance: the kernels keep every intermediate in fp16 (mil-spec 5.2), so each tap is
//! compared with max |engine − f64| ≤ `REL · max|expected| + ABS`, `REL = 4e-3`,
//! `ABS = 5e-4` (the REPO's own hardware thresholds are 1e-2 … 1e-1 absolute, mil-spec 8.7).
//! The worst observed error is printed for every tap.

mod common;

use std::collections::BTreeMap;

use common::{Rng, Tier, compile_tier, verified_with};
use half::f16;
use milbridge_engine::plan::step::StepOp;
use milbridge_engine::{CompileOptions, Plan, Precision, compile_fused};
use milbridge_graphs::{GeneratedKernel, ModelConfig, SectionContent, WeightMode, dynamic, math};
use milbridge_linalg::cpu;
use milbridge_mil::facts::VerifiedProgram;

const REL: f64 = 4e-3;
const ABS: f64 = 5e-4;

type Data = BTreeMap<String, Vec<f32>>;

fn f16_round(values: impl Iterator<Item = f64>) -> Vec<f32> {
    values.map(|v| f16::from_f64(v).to_f32()).collect()
}

/// Random, fp16-representable data for every buffer the kernel reads, by name.
fn random_data(kernel: &GeneratedKernel, rng: &mut Rng) -> Data {
    let mut names: Vec<(String, usize, bool)> = Vec::new();
    match &kernel.packing {
        Some(layout) => {
            for section in &layout.sections {
                let weight = !matches!(section.content, SectionContent::Activation);
                names.push((section.name.clone(), section.numel(), weight));
            }
        }
        None => {
            for input in &kernel.inputs {
                names.push((input.name.clone(), input.numel(), false));
            }
        }
    }
    for weight in &kernel.weights {
        if !names.iter().any(|(name, ..)| name == &weight.name) {
            names.push((weight.name.clone(), weight.numel(), true));
        }
    }
    names
        .into_iter()
        .map(|(name, len, weight)| {
            let (lo, hi) = match name.as_str() {
                "rms_w" | "q_norm" | "k_norm" => (0.5, 1.5),
                "probs" => (0.0, 0.2),
                _ if weight => (-0.25, 0.25),
                _ => (-1.0, 1.0),
            };
            (name, f16_round((0..len).map(|_| rng.uniform(lo, hi))))
        })
        .collect()
}

/// How a check compiles a kernel's program.
type Compiler<'a> = &'a dyn Fn(&VerifiedProgram) -> Plan;

/// Runs the kernel on `data`, returning every output buffer as f32.
fn run(kernel: &GeneratedKernel, data: &Data, compile: Compiler<'_>) -> Vec<Vec<f32>> {
    let named: Vec<(&str, &[f32])> = data
        .iter()
        .map(|(name, values)| (name.as_str(), values.as_slice()))
        .collect();
    let buffers = kernel
        .param_buffers(&named)
        .unwrap_or_else(|error| panic!("{}: {error}", kernel.name));
    let program = verified_with(
        &milbridge_mil::print::print(&kernel.program),
        &kernel.blob_map(),
    );
    let plan = compile(&program);
    let inputs: Vec<milbridge_mil::ir::Tensor> = buffers
        .iter()
        .zip(plan.inputs())
        .map(|(values, io)| {
            let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            milbridge_mil::ir::Tensor::from_f64s(io.ty.clone(), &values).unwrap()
        })
        .collect();
    common::run_plan(&plan, &inputs)
        .iter()
        .map(|tensor| {
            tensor
                .to_f64_vec()
                .unwrap()
                .into_iter()
                .map(|v| v as f32)
                .collect()
        })
        .collect()
}

fn f64s(data: &Data, name: &str) -> Vec<f64> {
    data.get(name)
        .unwrap_or_else(|| panic!("no data named {name}"))
        .iter()
        .map(|&v| f64::from(v))
        .collect()
}

/// The f64 value of every tap of `kernel` from `graphs::math`.
fn expected(
    kernel: &GeneratedKernel,
    cfg: &ModelConfig,
    data: &Data,
) -> BTreeMap<&'static str, Vec<f64>> {
    let (d, h, s, hd) = (cfg.dim, cfg.hidden, cfg.seq, cfg.head_dim);
    let (q_dim, kv_dim, heads, kv_heads) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_heads, cfg.n_kv_heads);
    let g = |name: &str| f64s(data, name);
    let add = |a: Vec<f64>, b: Vec<f64>| a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<f64>>();
    let mut out = BTreeMap::new();
    match kernel.name.as_str() {
        "sdpaFwd" => {
            let xn = g("xnorm");
            let mut q = math::linear(&g("wq"), &xn, q_dim, d, s);
            let mut k = math::linear(&g("wk"), &xn, kv_dim, d, s);
            let v = math::linear(&g("wv"), &xn, kv_dim, d, s);
            if cfg.qk_norm {
                out.insert("q_raw", q.clone());
                out.insert("k_raw", k.clone());
                q = math::head_rmsnorm(&q, &g("q_norm"), heads, hd, s, cfg.norm_eps);
                k = math::head_rmsnorm(&k, &g("k_norm"), kv_heads, hd, s, cfg.norm_eps);
            }
            let q_rope = math::rope(&q, heads, hd, s, cfg.rope_theta);
            let k_rope = math::rope(&k, kv_heads, hd, s, cfg.rope_theta);
            let attention = math::causal_attention(&q_rope, &k_rope, &v, heads, kv_heads, hd, s);
            out.insert("attn", attention.out);
            out.insert("q_rope", q_rope);
            out.insert("k_rope", k_rope);
            out.insert("v", v);
            out.insert("xnorm", xn);
        }
        "woFwd" => {
            out.insert("o", math::linear(&g("wo"), &g("attn"), d, q_dim, s));
        }
        "ffnFused" => {
            let ffn = math::swiglu(&g("x2norm"), &g("w1"), &g("w3"), &g("w2"), d, h, s);
            let x_next = g("x2")
                .iter()
                .zip(&ffn.out)
                .map(|(x, f)| x + cfg.residual_scale * f)
                .collect();
            out.insert("x_next", x_next);
            out.insert("h1", ffn.h1);
            out.insert("h3", ffn.h3);
            out.insert("gate", ffn.gate);
        }
        "ffnBwdW2t" => {
            out.insert("dsilu", math::linear_t(&g("w2"), &g("dffn"), d, h, s));
        }
        "ffnBwdW13t" => {
            out.insert(
                "dx",
                add(
                    math::linear_t(&g("w1"), &g("dh1"), h, d, s),
                    math::linear_t(&g("w3"), &g("dh3"), h, d, s),
                ),
            );
        }
        "wotBwd" => {
            out.insert("da", math::linear_t(&g("wo"), &g("dy"), d, q_dim, s));
        }
        "qBwd" => {
            out.insert("dx", math::linear_t(&g("wq"), &g("dq"), q_dim, d, s));
        }
        "kvBwd" => {
            out.insert(
                "dx",
                add(
                    math::linear_t(&g("wk"), &g("dk"), kv_dim, d, s),
                    math::linear_t(&g("wv"), &g("dv"), kv_dim, d, s),
                ),
            );
        }
        "sdpaBwd1" => {
            // q, k, v, da all per query head (the host tiles K/V).
            let (q, k, v, da) = (g("q"), g("k"), g("v"), g("da"));
            let probs = math::causal_attention(&q, &k, &v, heads, heads, hd, s).probs;
            let mut dv = vec![0.0; q_dim * s];
            let mut dp = vec![0.0; heads * s * s];
            for head in 0..heads {
                for i in 0..s {
                    for j in 0..s {
                        let p = probs[(head * s + i) * s + j];
                        let mut dot = 0.0;
                        for dd in 0..hd {
                            let c = head * hd + dd;
                            dv[c * s + j] += p * da[c * s + i];
                            dot += da[c * s + i] * v[c * s + j];
                        }
                        dp[(head * s + i) * s + j] = dot;
                    }
                }
            }
            out.insert("dv", dv);
            out.insert("probs", probs);
            out.insert("dp", dp);
        }
        "sdpaBwd2" => {
            let (probs, dp, q, k) = (g("probs"), g("dp"), g("q"), g("k"));
            let scale = 1.0 / (hd as f64).sqrt();
            let mut dq = vec![0.0; q_dim * s];
            let mut dk = vec![0.0; q_dim * s];
            for head in 0..heads {
                for i in 0..s {
                    let row = (head * s + i) * s;
                    let dot: f64 = (0..s).map(|j| probs[row + j] * dp[row + j]).sum();
                    for j in 0..s {
                        let ds = probs[row + j] * (dp[row + j] - dot) * scale;
                        for dd in 0..hd {
                            let c = head * hd + dd;
                            dq[c * s + i] += ds * k[c * s + j];
                            dk[c * s + j] += ds * q[c * s + i];
                        }
                    }
                }
            }
            out.insert("dq", dq);
            out.insert("dk", dk);
        }
        "rmsnorm" => {
            out.insert("y", math::rmsnorm(&g("x"), &g("rms_w"), d, s, cfg.norm_eps));
        }
        "rmsnormBwd" => {
            out.insert(
                "dx",
                math::rmsnorm_bwd(&g("dy"), &g("x"), &g("rms_w"), d, s, cfg.norm_eps).0,
            );
        }
        "classifierFwd" => {
            out.insert(
                "logits",
                math::linear(&g("embed"), &g("x"), cfg.vocab, d, s),
            );
        }
        "classifierBwd" => {
            out.insert(
                "dx",
                math::linear_t(&g("embed"), &g("dlogits"), cfg.vocab, d, s),
            );
        }
        "softmaxVocab" => {
            out.insert("probs", math::softmax_channels(&g("logits"), cfg.vocab, s));
        }
        other => panic!("no f64 oracle for kernel {other}"),
    }
    out
}

fn check_kernel(kernel: &GeneratedKernel, cfg: &ModelConfig, mode: WeightMode, seed: u64) {
    let mut tiers = vec![Tier::Portable, Tier::Isa(cpu::host_isa())];
    if cpu::host_isa() > cpu::Isa::Generic {
        tiers.push(Tier::Isa(cpu::Isa::Generic));
    }
    for tier in tiers {
        check_kernel_with(kernel, cfg, mode, seed, &format!("{tier:?}"), &|program| {
            compile_tier(program, tier, 2)
        });
    }
}

/// Checks every tap of `kernel` compiled by `compile` (`label` names it) against the f64 math.
fn check_kernel_with(
    kernel: &GeneratedKernel,
    cfg: &ModelConfig,
    mode: WeightMode,
    seed: u64,
    label: &str,
    compile: Compiler<'_>,
) {
    let mut rng = Rng::new(seed);
    let data = random_data(kernel, &mut rng);
    let want = expected(kernel, cfg, &data);
    {
        let tier = label;
        let outputs = run(kernel, &data, compile);
        let slices: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
        assert!(!kernel.taps.is_empty());
        for tap in &kernel.taps {
            let got = kernel.tap_values(&tap.name, &slices).unwrap();
            let exp = want
                .get(tap.name.as_str())
                .unwrap_or_else(|| panic!("{} has an unchecked tap {}", kernel.name, tap.name));
            assert_eq!(got.len(), exp.len(), "{} tap {}", kernel.name, tap.name);
            let scale = exp.iter().fold(0f64, |acc, v| acc.max(v.abs()));
            let (mut worst, mut worst_idx) = (0f64, 0);
            for (idx, (&g, &e)) in got.iter().zip(exp).enumerate() {
                let err = (f64::from(g) - e).abs();
                if err > worst || !err.is_finite() {
                    worst = if err.is_finite() { err } else { f64::INFINITY };
                    worst_idx = idx;
                }
            }
            let allowed = REL * scale + ABS;
            eprintln!(
                "{:>14} {mode:?} {tier} tap {:>7}: max err {worst:.2e} (scale {scale:.2e}, allowed {allowed:.2e})",
                kernel.name, tap.name
            );
            assert!(
                worst <= allowed,
                "{} ({mode:?}, {tier}) tap {}: element {worst_idx} got {} expected {} (max err {worst:e} > {allowed:e})",
                kernel.name,
                tap.name,
                got[worst_idx],
                exp[worst_idx]
            );
        }
    }
}

#[test]
fn every_training_kernel_matches_f64_math_in_both_layouts() {
    let cfg = ModelConfig::tiny();
    for mode in [WeightMode::Packed, WeightMode::Params] {
        let kernels = dynamic::training_kernels(&cfg, mode);
        assert!(kernels.len() >= 15, "{}", kernels.len());
        for (k, kernel) in kernels.iter().enumerate() {
            check_kernel(kernel, &cfg, mode, 100 + k as u64);
        }
    }
}

#[test]
fn fast_fused_training_kernels_use_pattern_steps_and_match_f64_math() {
    // Not on AMX: its bf16 matmuls (fast profile) have a bound of their own.
    let isa = cpu::host_isa().min(cpu::Isa::Avx512);
    let options = CompileOptions {
        isa,
        precision: Precision::Fast,
        threads: 2,
        function: None,
    };
    let compile = |program: &VerifiedProgram| compile_fused(program, &options).unwrap();
    let count = |plan: &Plan, rms: bool| {
        plan.steps()
            .iter()
            .filter(|step| match step.op {
                StepOp::RmsNorm { .. } => rms,
                StepOp::SoftmaxScaled { .. } => !rms,
                _ => false,
            })
            .count()
    };
    let cases = [
        (ModelConfig::tiny(), false),
        (ModelConfig::qwen3_tiny(), true),
    ];
    for (cfg, qk_norm) in cases {
        for kernel in dynamic::training_kernels(&cfg, WeightMode::Params) {
            if qk_norm && kernel.name != "sdpaFwd" {
                // The Qwen3 extras (q/k norm backward) have no f64 oracle here.
                continue;
            }
            let program = verified_with(
                &milbridge_mil::print::print(&kernel.program),
                &kernel.blob_map(),
            );
            let plan = compile(&program);
            let (rms, softmax) = (count(&plan, true), count(&plan, false));
            // rmsnormBwd reuses rrms in the backward: that blocks the pattern there.
            let (want_rms, want_softmax) = match kernel.name.as_str() {
                "rmsnorm" => (1, 0),
                "sdpaFwd" if qk_norm => (2, 1),
                "sdpaFwd" | "sdpaBwd1" => (0, 1),
                _ => (0, 0),
            };
            assert_eq!(
                (rms, softmax),
                (want_rms, want_softmax),
                "{}: {:?}",
                kernel.name,
                plan.stats().kernels
            );
            check_kernel_with(
                &kernel,
                &cfg,
                WeightMode::Params,
                11,
                "fast fused",
                &compile,
            );
        }
    }
}

#[test]
fn attention_forward_with_gqa_and_qk_norm() {
    for cfg in [ModelConfig::tiny_gqa(), ModelConfig::qwen3_tiny()] {
        for mode in [WeightMode::Packed, WeightMode::Params] {
            let kernel = dynamic::sdpa_fwd(&cfg, mode);
            check_kernel(&kernel, &cfg, mode, 7);
        }
    }
}

#[test]
fn spatially_packed_kernels_copy_nothing_but_their_taps() {
    // The packed linear kernels read their weights straight out of the input: the only copies
    // a plan may contain are the concat steps that assemble the tap outputs.
    let cfg = ModelConfig::tiny();
    for kernel in dynamic::training_kernels(&cfg, WeightMode::Packed) {
        if ![
            "woFwd",
            "wotBwd",
            "qBwd",
            "ffnBwdW2t",
            "classifierFwd",
            "classifierBwd",
        ]
        .contains(&kernel.name.as_str())
        {
            continue;
        }
        let program = verified_with(
            &milbridge_mil::print::print(&kernel.program),
            &kernel.blob_map(),
        );
        let plan = compile_tier(&program, Tier::Isa(cpu::host_isa()), 2);
        let stats = plan.stats();
        assert_eq!(stats.materialize_steps, 0, "{}: {stats:#?}", kernel.name);
    }
}
