//! Every generator, for the tiny, Stories110M and Qwen3-0.6B configs (and the GQA / Qwen3-shaped
//! test configs) in both weight modes: the kernel's description matches its program, the program
//! verifies, and its printed text parses back to the same text.

use mil::blob::BlobMode;
use mil::facts::{BlobMap, BlobSource};
use mil::ir::{DType, TensorType, ValueDef};
use mil::verify::{VerifyOptions, verify};
use milbridge_graphs::{
    GeneratedKernel, ModelConfig, Orientation, PackAxis, SectionContent, WeightLocation,
    WeightMode, dynamic, math, pack_input, read_section, stories, unpack_taps,
};
use milbridge_mil as mil;

fn configs() -> Vec<(&'static str, ModelConfig)> {
    vec![
        ("tiny", ModelConfig::tiny()),
        ("tiny_gqa", ModelConfig::tiny_gqa()),
        ("qwen3_tiny", ModelConfig::qwen3_tiny()),
        (
            "tiny_maderix_alpha",
            ModelConfig::tiny().with_maderix_residual_scale(),
        ),
        ("stories110m", ModelConfig::stories110m()),
        ("qwen3_0_6b", ModelConfig::qwen3_0_6b()),
    ]
}

fn is_small(cfg: &ModelConfig) -> bool {
    cfg.dim <= 64
}

/// The description of the buffers matches the program's parameters and outputs.
fn check_description(kernel: &GeneratedKernel) {
    let program = &kernel.program;
    assert_eq!(program.functions.len(), 1, "{}", kernel.name);
    let func = &program.functions[program.entry().unwrap()];
    assert_eq!(func.name, "main");
    let param_types: Vec<(String, TensorType)> = func
        .params
        .iter()
        .map(|&p| {
            (
                func.values[p].name.clone(),
                func.values[p].decl.to_tensor_type().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        param_types.len(),
        kernel.n_params(),
        "{}: parameter count",
        kernel.name
    );
    for (idx, input) in kernel.inputs.iter().enumerate() {
        assert_eq!(
            (&input.name, &input.ty),
            (&param_types[idx].0, &param_types[idx].1),
            "{}",
            kernel.name
        );
        assert_eq!(input.ty.dtype, DType::Fp16);
    }
    for weight in &kernel.weights {
        match &weight.location {
            WeightLocation::Param { index, shape } => {
                assert!(
                    *index >= kernel.inputs.len(),
                    "{}: weights after activations",
                    kernel.name
                );
                assert_eq!(param_types[*index].0, weight.name, "{}", kernel.name);
                assert_eq!(&param_types[*index].1.shape, shape);
                assert_eq!(
                    shape.iter().product::<usize>(),
                    weight.numel(),
                    "{} {}",
                    kernel.name,
                    weight.name
                );
            }
            WeightLocation::Packed {
                section,
                orientation,
            } => {
                let layout = kernel
                    .packing
                    .as_ref()
                    .expect("packed weights need a layout");
                let sec = &layout.sections[*section];
                assert_eq!(sec.name, weight.name);
                match sec.content {
                    SectionContent::Weight(o) => {
                        assert_eq!(o, *orientation);
                        let (rows, cols) = match o {
                            Orientation::Natural => (weight.rows, weight.cols),
                            Orientation::Transposed => (weight.cols, weight.rows),
                        };
                        assert_eq!(
                            (sec.rows, sec.cols),
                            (rows, cols),
                            "{} {}",
                            kernel.name,
                            weight.name
                        );
                    }
                    SectionContent::Vector => assert_eq!((sec.rows, weight.cols), (weight.rows, 1)),
                    SectionContent::Activation => panic!("weight in an activation section"),
                }
            }
            WeightLocation::Blob { path, offset, .. } => {
                assert!(path.starts_with("@model_path/weights/"));
                assert_eq!(*offset, 64);
            }
        }
    }
    // Weight parameters are numbered consecutively in `weights` order.
    let param_indices: Vec<usize> = kernel
        .weights
        .iter()
        .filter_map(|w| match w.location {
            WeightLocation::Param { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    let expected: Vec<usize> =
        (kernel.inputs.len()..kernel.inputs.len() + param_indices.len()).collect();
    assert_eq!(param_indices, expected, "{}", kernel.name);
    if let Some(layout) = &kernel.packing {
        let packed = &kernel.inputs[layout.param];
        assert_eq!(
            packed.ty.shape,
            vec![1, layout.channels, 1, layout.width],
            "{}",
            kernel.name
        );
        let mut offset = 0;
        for sec in &layout.sections {
            assert_eq!(
                sec.offset, offset,
                "{}: sections are contiguous",
                kernel.name
            );
            match layout.axis {
                PackAxis::Spatial => {
                    assert!(sec.rows <= layout.channels);
                    if sec.content != SectionContent::Vector {
                        assert_eq!(sec.rows, layout.channels);
                    }
                    offset += sec.cols;
                }
                PackAxis::Channel => {
                    assert_eq!(sec.cols, layout.width);
                    offset += sec.rows;
                }
            }
        }
        let extent = match layout.axis {
            PackAxis::Spatial => layout.width,
            PackAxis::Channel => layout.channels,
        };
        assert_eq!(offset, extent, "{}: sections fill the input", kernel.name);
    }
    assert_eq!(func.outputs.len(), kernel.outputs.len());
    for (use_, spec) in func.outputs.iter().zip(&kernel.outputs) {
        let value = &func.values[use_.value];
        assert_eq!(value.name, spec.name);
        assert_eq!(value.decl.to_tensor_type().as_ref(), Some(&spec.ty));
        assert!(matches!(value.def, ValueDef::Result { .. }));
    }
    for (out_idx, output) in kernel.outputs.iter().enumerate() {
        let taps: Vec<_> = kernel.taps.iter().filter(|t| t.output == out_idx).collect();
        let channels: usize = taps.iter().map(|t| t.channels).sum();
        assert_eq!(
            output.ty.shape,
            vec![1, channels, 1, taps[0].seq],
            "{}: taps cover output {out_idx}",
            kernel.name
        );
    }
}

fn strict(blobs: &dyn BlobSource) -> VerifyOptions<'_> {
    VerifyOptions {
        blobs,
        folder: None,
        blob_mode: BlobMode::Strict,
        strict: true,
        ane_lints: false,
    }
}

fn verify_kernel(kernel: &GeneratedKernel, blobs: &BlobMap) {
    match verify(kernel.program.clone(), &strict(blobs)) {
        Ok(verified) => {
            assert!(
                verified.warnings().is_empty(),
                "{}: warnings {:?}",
                kernel.name,
                verified.warnings()
            )
        }
        Err(diags) => {
            let text = mil::print::print(&kernel.program);
            let source = mil::span::SourceFile::new(format!("{}.mil", kernel.name), text.clone());
            panic!(
                "{} does not verify:\n{}\n(builder IR has no spans; printed text follows)\n{}",
                kernel.name,
                diags
                    .iter()
                    .map(|d| format!("{}: {}", d.code, d.message))
                    .collect::<Vec<_>>()
                    .join("\n"),
                if text.len() < 20000 {
                    text
                } else {
                    source.name().to_string()
                }
            );
        }
    }
}

fn round_trip(kernel: &GeneratedKernel) {
    let text = mil::print::print(&kernel.program);
    let (parsed, diags) = mil::lower::parse(&text);
    assert!(
        !mil::diag::has_errors(&diags),
        "{}: printed text does not parse: {diags:?}",
        kernel.name
    );
    let again = mil::print::print(&parsed);
    assert_eq!(
        again, text,
        "{}: print(parse(print(p))) != print(p)",
        kernel.name
    );
    // The parsed program verifies too (same blobs), with the same parameters.
    assert_eq!(
        parsed.functions[parsed.entry().unwrap()].params.len(),
        kernel.n_params()
    );
}

fn zero_weights(kernel: &GeneratedKernel) -> Vec<(String, Vec<f32>)> {
    kernel
        .weights
        .iter()
        .map(|w| (w.name.clone(), vec![0.25f32; w.numel()]))
        .collect()
}

#[test]
fn dynamic_kernels_verify_and_round_trip() {
    for (label, cfg) in configs() {
        for mode in [WeightMode::Packed, WeightMode::Params] {
            let kernels = dynamic::training_kernels(&cfg, mode);
            assert_eq!(kernels.len(), if cfg.qk_norm { 17 } else { 15 }, "{label}");
            for kernel in &kernels {
                check_description(kernel);
                verify_kernel(kernel, &kernel.blob_map());
                round_trip(kernel);
            }
        }
    }
}

#[test]
fn static_kernels_verify_and_round_trip() {
    for (label, cfg) in configs() {
        for kernel in stories::static_kernels(&cfg) {
            check_description(&kernel);
            round_trip(&kernel);
            if is_small(&cfg) {
                let owned = zero_weights(&kernel);
                let weights: Vec<(&str, &[f32])> = owned
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                let map = stories::weight_blob_map(&kernel, &weights).unwrap();
                verify_kernel(&kernel, &map);
            } else {
                assert!(!kernel.name.is_empty(), "{label}");
            }
        }
    }
}

#[test]
fn dyn_matmul_matches_spec_example_layout() {
    for mode in [WeightMode::Packed, WeightMode::Params] {
        let kernel = dynamic::dyn_matmul(4, 2, 3, mode);
        check_description(&kernel);
        verify_kernel(&kernel, &BlobMap::new());
        round_trip(&kernel);
    }
    let kernel = dynamic::dyn_matmul(4, 2, 3, WeightMode::Packed);
    assert_eq!(
        kernel.inputs[0].ty,
        TensorType::new(DType::Fp16, [1, 4, 1, 5])
    );
    let layout = kernel.packing.as_ref().unwrap();
    assert_eq!(
        layout.sections[1].content,
        SectionContent::Weight(Orientation::Transposed)
    );
    // y[o, t] = sum_i x[i, t] W[o, i]: the packed buffer puts W[o][i] at row i, column 3 + o.
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]; // [2][4]
    let buf = pack_input(layout, &[&x, &w]);
    assert_eq!(buf[3], 1.0); // row 0, column 3: W[0][0]
    assert_eq!(buf[4], 5.0); // row 0, column 4: W[1][0]
    assert_eq!(buf[5 + 3], 2.0); // row 1: W[0][1]
    let params = dynamic::dyn_matmul(4, 2, 3, WeightMode::Params);
    assert_eq!(params.inputs[0].ty.shape, vec![1, 4, 1, 3]);
    assert_eq!(
        params.weights[0].location,
        WeightLocation::Param {
            index: 1,
            shape: vec![1, 2, 4]
        }
    );
}

#[test]
fn packed_layouts_match_maderix_io_h() {
    let cfg = ModelConfig::qwen3_0_6b();
    let (dim, qd, kvd, hidden, seq) = (1024, 2048, 1024, 3072, 256);
    let widths = |k: &GeneratedKernel| {
        let layout = k.packing.as_ref().unwrap();
        (
            layout.channels,
            layout.width,
            layout
                .sections
                .iter()
                .map(|s| (s.name.clone(), s.offset, s.cols))
                .collect::<Vec<_>>(),
        )
    };
    let sdpa = dynamic::sdpa_fwd(&cfg, WeightMode::Packed);
    let (channels, width, sections) = widths(&sdpa);
    assert_eq!(channels, dim);
    // SDPA_FWD_SP = SEQ + Q_DIM + 2 KV_DIM, plus the two q/k-norm columns Qwen3 needs.
    assert_eq!(width, seq + qd + 2 * kvd + 2);
    assert_eq!(
        &sections[..4],
        &[
            ("xnorm".to_string(), 0, seq),
            ("wq".to_string(), seq, qd),
            ("wk".to_string(), seq + qd, kvd),
            ("wv".to_string(), seq + qd + kvd, kvd),
        ]
    );
    // Taps: attn, q_rope, k_rope, v, xnorm (maderix order), then q_raw, k_raw.
    let taps: Vec<(&str, usize, usize)> = sdpa
        .taps
        .iter()
        .map(|t| (t.name.as_str(), t.channel_offset, t.channels))
        .collect();
    assert_eq!(
        taps,
        [
            ("attn", 0, qd),
            ("q_rope", qd, qd),
            ("k_rope", 2 * qd, kvd),
            ("v", 2 * qd + kvd, kvd),
            ("xnorm", 2 * qd + 2 * kvd, dim),
            ("q_raw", 2 * qd + 2 * kvd + dim, qd),
            ("k_raw", 3 * qd + 2 * kvd + dim, kvd),
        ]
    );
    let ffn = dynamic::ffn_fused(&cfg, WeightMode::Packed);
    let (channels, width, sections) = widths(&ffn);
    assert_eq!((channels, width), (dim, 2 * seq + 3 * hidden));
    let w2 = ffn.weight("w2").unwrap();
    assert_eq!(
        w2.location,
        WeightLocation::Packed {
            section: 4,
            orientation: Orientation::Natural
        }
    );
    assert_eq!(
        sections[4],
        ("w2".to_string(), 2 * seq + 2 * hidden, hidden)
    );
    assert_eq!(
        ffn.weight("w1").unwrap().location,
        WeightLocation::Packed {
            section: 2,
            orientation: Orientation::Transposed
        }
    );
    assert_eq!(ffn.outputs[0].ty.shape, vec![1, dim + 3 * hidden, 1, seq]);
    let w13 = dynamic::ffn_bwd_w13t(&cfg, WeightMode::Packed);
    assert_eq!(widths(&w13).0..widths(&w13).1, hidden..2 * seq + 2 * dim);
    let kv = dynamic::kv_bwd(&cfg, WeightMode::Packed);
    assert_eq!((widths(&kv).0, widths(&kv).1), (kvd, 2 * seq + 2 * dim));
    let wo = dynamic::wo_fwd(&cfg, WeightMode::Packed);
    assert_eq!((widths(&wo).0, widths(&wo).1), (qd, seq + dim));
    let wot = dynamic::wot_bwd(&cfg, WeightMode::Packed);
    assert_eq!((widths(&wot).0, widths(&wot).1), (dim, seq + qd));
    assert_eq!(
        wot.weight("wo").unwrap().location,
        WeightLocation::Packed {
            section: 1,
            orientation: Orientation::Natural
        }
    );
    let qb = dynamic::q_bwd(&cfg, WeightMode::Packed);
    assert_eq!((widths(&qb).0, widths(&qb).1), (qd, seq + dim));
    let w2t = dynamic::ffn_bwd_w2t(&cfg, WeightMode::Packed);
    assert_eq!((widths(&w2t).0, widths(&w2t).1), (dim, seq + hidden));
    // sdpaBwd1/2 stack activations on channels, as maderix does.
    let b1 = dynamic::sdpa_bwd1(&cfg, WeightMode::Packed);
    let layout = b1.packing.as_ref().unwrap();
    assert_eq!(
        (layout.axis, layout.channels, layout.width),
        (PackAxis::Channel, 4 * qd, seq)
    );
    assert_eq!(b1.outputs[0].ty.shape, vec![1, qd + 2 * 16 * seq, 1, seq]);
    let b2 = dynamic::sdpa_bwd2(&cfg, WeightMode::Packed);
    assert_eq!(b2.packing.as_ref().unwrap().channels, 2 * 16 * seq + 2 * qd);
    assert_eq!(b2.outputs[0].ty.shape, vec![1, 2 * qd, 1, seq]);
}

#[test]
fn params_mode_follows_compile_dyn_convention() {
    let cfg = ModelConfig::qwen3_tiny();
    let sdpa = dynamic::sdpa_fwd(&cfg, WeightMode::Params);
    let names: Vec<&str> = sdpa.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["xnorm"]);
    let weights: Vec<(&str, &WeightLocation)> = sdpa
        .weights
        .iter()
        .map(|w| (w.name.as_str(), &w.location))
        .collect();
    assert_eq!(
        weights,
        [
            (
                "wq",
                &WeightLocation::Param {
                    index: 1,
                    shape: vec![1, 128, 64]
                }
            ),
            (
                "wk",
                &WeightLocation::Param {
                    index: 2,
                    shape: vec![1, 64, 64]
                }
            ),
            (
                "wv",
                &WeightLocation::Param {
                    index: 3,
                    shape: vec![1, 64, 64]
                }
            ),
            (
                "q_norm",
                &WeightLocation::Param {
                    index: 4,
                    shape: vec![1, 1, 1, 32]
                }
            ),
            (
                "k_norm",
                &WeightLocation::Param {
                    index: 5,
                    shape: vec![1, 1, 1, 32]
                }
            ),
        ]
    );
    assert!(sdpa.packing.is_none());
    // One output per tap, no xnorm echo.
    let outs: Vec<&str> = sdpa.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outs, ["attn", "q_rope", "k_rope", "v", "q_raw", "k_raw"]);
    let ffn = dynamic::ffn_fused(&cfg, WeightMode::Params);
    let names: Vec<&str> = ffn.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["x2norm", "x2"]);
    assert_eq!(ffn.n_params(), 5);
    // Backward kernels use the same natural weight buffers as the forward ones.
    let qb = dynamic::q_bwd(&cfg, WeightMode::Params);
    assert_eq!(
        qb.weights[0].location,
        WeightLocation::Param {
            index: 1,
            shape: vec![1, 128, 64]
        }
    );
    let sm = dynamic::softmax_vocab(&cfg);
    assert_eq!(
        (sm.inputs.len(), sm.weights.len(), sm.packing.is_none()),
        (1, 0, true)
    );
}

/// Tiny deterministic data.
fn ramp(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 1000.0 - 0.5
        })
        .collect()
}

#[test]
fn packing_helpers_round_trip_every_layout() {
    for cfg in [ModelConfig::tiny(), ModelConfig::qwen3_tiny()] {
        let mut kernels = dynamic::training_kernels(&cfg, WeightMode::Packed);
        kernels.extend(stories::static_kernels(&cfg));
        for kernel in kernels {
            let Some(layout) = &kernel.packing else {
                continue;
            };
            let data: Vec<Vec<f32>> = layout
                .sections
                .iter()
                .enumerate()
                .map(|(k, s)| ramp(s.numel(), k as u32))
                .collect();
            let slices: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
            let buf = pack_input(layout, &slices);
            assert_eq!(buf.len(), kernel.inputs[layout.param].numel());
            for (k, expected) in data.iter().enumerate() {
                assert_eq!(
                    &read_section(layout, k, &buf),
                    expected,
                    "{} section {k}",
                    kernel.name
                );
            }
            // Every element of the buffer is either covered by a section or zero padding.
            let covered: usize = layout.sections.iter().map(|s| s.numel()).sum();
            let zeros = buf.iter().filter(|&&v| v == 0.0).count();
            assert!(covered + zeros >= buf.len(), "{}", kernel.name);
        }
        let sdpa = dynamic::sdpa_fwd(&cfg, WeightMode::Packed);
        let out = ramp(sdpa.outputs[0].numel(), 9);
        let taps = unpack_taps(&sdpa.taps, &[&out]);
        let attn = sdpa.tap("attn").unwrap();
        assert_eq!(taps[0], out[..attn.channels * cfg.seq].to_vec());
        let total: usize = taps.iter().map(Vec::len).sum();
        assert_eq!(total, out.len());
    }
}

#[test]
fn static_weight_blobs_hold_the_right_orientation() {
    let cfg = ModelConfig::tiny();
    let kernel = stories::qkv_bwd(&cfg);
    let wq: Vec<f32> = (0..cfg.q_dim() * cfg.dim).map(|v| v as f32).collect();
    let wk = vec![0.0f32; cfg.kv_dim() * cfg.dim];
    let weights: Vec<(&str, &[f32])> = vec![("wq", &wq), ("wk", &wk), ("wv", &wk)];
    let files = stories::weight_blobs(&kernel, &weights).unwrap();
    let wqt = files
        .iter()
        .find(|f| f.path == "@model_path/weights/wqt.bin")
        .unwrap();
    // wqt holds Wqᵀ: element [i][o] = Wq[o][i] at i * q_dim + o.
    let ty = TensorType::new(DType::Fp16, [cfg.dim, cfg.q_dim(), 1, 1]);
    let read = mil::blob::read_blob(&wqt.bytes, 64, &ty, BlobMode::Strict).unwrap();
    let values = read.tensor.to_f64_vec().unwrap();
    let (o, i) = (3, 5);
    assert_eq!(values[i * cfg.q_dim() + o], f64::from(wq[o * cfg.dim + i]));
    assert_eq!(
        stories::weight_blobs(&kernel, &weights[..2]).unwrap_err(),
        stories::WeightBlobError::Missing("wv".to_string())
    );
    let short = [0.0f32; 3];
    let bad: Vec<(&str, &[f32])> = vec![("wq", &wq), ("wk", &short), ("wv", &wk)];
    assert!(matches!(
        stories::weight_blobs(&kernel, &bad),
        Err(stories::WeightBlobError::Length { .. })
    ));
}

#[test]
fn constant_tables_match_the_math_oracle() {
    // The RoPE tables the kernels bake agree with math::rope on a single head.
    let cfg = ModelConfig::tiny();
    let sdpa = dynamic::sdpa_fwd(&cfg, WeightMode::Params);
    let cos_file = sdpa
        .blobs
        .iter()
        .find(|b| b.path == milbridge_graphs::tables::ROPE_COS_PATH)
        .unwrap();
    let sin_file = sdpa
        .blobs
        .iter()
        .find(|b| b.path == milbridge_graphs::tables::ROPE_SIN_PATH)
        .unwrap();
    let ty = TensorType::new(DType::Fp16, [1, 1, cfg.seq, cfg.head_dim]);
    let cos = mil::blob::read_blob(&cos_file.bytes, 64, &ty, BlobMode::Strict)
        .unwrap()
        .tensor
        .to_f64_vec()
        .unwrap();
    let sin = mil::blob::read_blob(&sin_file.bytes, 64, &ty, BlobMode::Strict)
        .unwrap()
        .tensor
        .to_f64_vec()
        .unwrap();
    let hd = cfg.head_dim;
    // x = e_0 (first lane of pair 0) at every position: rope gives (cos, sin) of the angle.
    let mut x = vec![0.0; hd * cfg.seq];
    x[..cfg.seq].fill(1.0);
    let y = math::rope(&x, 1, hd, cfg.seq, cfg.rope_theta);
    for pos in 0..cfg.seq {
        assert!((y[pos] - cos[pos * hd]).abs() < 1e-3);
        assert!((y[cfg.seq + pos] - sin[pos * hd + 1]).abs() < 1e-3);
    }
    let mask_file = sdpa
        .blobs
        .iter()
        .find(|b| b.path == milbridge_graphs::tables::MASK_PATH)
        .unwrap();
    let ty = TensorType::new(DType::Fp16, [1, 1, cfg.seq, cfg.seq]);
    let mask = mil::blob::read_blob(&mask_file.bytes, 64, &ty, BlobMode::Strict)
        .unwrap()
        .tensor
        .to_f64_vec()
        .unwrap();
    assert_eq!((mask[0], mask[1], mask[cfg.seq]), (0.0, -65504.0, 0.0));
}

#[test]
fn param_buffers_follow_the_parameter_order() {
    let cfg = ModelConfig::tiny();
    let x: Vec<f32> = ramp(cfg.dim * cfg.seq, 1);
    let w1 = ramp(cfg.hidden * cfg.dim, 2);
    let w3 = ramp(cfg.hidden * cfg.dim, 3);
    let w2 = ramp(cfg.dim * cfg.hidden, 4);
    let data: Vec<(&str, &[f32])> = vec![
        ("x2norm", &x),
        ("x2", &x),
        ("w1", &w1),
        ("w3", &w3),
        ("w2", &w2),
    ];
    let params = dynamic::ffn_fused(&cfg, WeightMode::Params);
    let buffers = params.param_buffers(&data).unwrap();
    assert_eq!(buffers.len(), 5);
    assert_eq!(buffers[2], w1);
    assert_eq!(buffers[4], w2);
    let packed = dynamic::ffn_fused(&cfg, WeightMode::Packed);
    let buffers = packed.param_buffers(&data).unwrap();
    assert_eq!(buffers.len(), 1);
    let layout = packed.packing.as_ref().unwrap();
    assert_eq!(read_section(layout, 2, &buffers[0]), w1);
    assert_eq!(
        packed.param_buffers(&data[..4]).unwrap_err(),
        milbridge_graphs::BufferError::Missing("w2".to_string())
    );
    let short = [0.0f32; 2];
    let bad: Vec<(&str, &[f32])> = vec![
        ("x2norm", &x),
        ("x2", &short),
        ("w1", &w1),
        ("w3", &w3),
        ("w2", &w2),
    ];
    assert_eq!(
        params.param_buffers(&bad).unwrap_err().to_string(),
        format!("`x2` needs {} values, got 2", cfg.dim * cfg.seq)
    );
    let out = ramp(params.outputs[1].numel(), 5);
    let first = ramp(params.outputs[0].numel(), 6);
    assert_eq!(
        params.tap_values("h1", &[&first, &out]),
        Some(out.as_slice())
    );
    assert_eq!(params.tap_values("nope", &[&first, &out]), None);
}
