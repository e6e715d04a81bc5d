//! llama2.c interop: model files round-trip bit-exactly (ours, and ones NumPy writes the way
//! llama2.c's export.py does), a C forward pass in run.c's style reproduces our logits and greedy
//! tokens from an exported file, `tokenizer.bin` encodes and decodes as run.c does, and broken
//! files give clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use milbridge_train::backend::{Backend, ReferenceBackend};
use milbridge_train::config::TrainConfig;
use milbridge_train::llama2c::{self, Header, Version};
use milbridge_train::model::{ModelSpec, Params};
use milbridge_train::rng::Rng;
use milbridge_train::sample::{SampleOptions, generate};
use milbridge_train::step::{self, Workspace};
use milbridge_train::tokenizer::{Llama2cTokenizer, Tokenizer};
use milbridge_train::{Error, ExportArgs, SampleArgs, TrainArgs, Trainer};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("milbridge-llama2c-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn spec(
    dim: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    seq: usize,
) -> ModelSpec {
    ModelSpec {
        name: llama2c::MODEL_NAME.into(),
        dim,
        hidden,
        n_layers: 2,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: dim / heads,
        seq,
        vocab,
        qk_norm: false,
    }
}

/// Random weights large enough that logits are well separated (distinct argmax), with
/// non-trivial norm gains.
fn random_params(spec: &ModelSpec, seed: u64) -> Params {
    let mut p = Params::zeros(spec);
    let mut rng = Rng::new(seed);
    let names: Vec<String> = p.tensors(spec).into_iter().map(|t| t.0).collect();
    for ((t, _), name) in p.tensors_mut().into_iter().zip(names) {
        // the final gain with random signs: with a tied classifier, a random model otherwise
        // just predicts its input token again
        let (base, std) = if name == "norm.weight" {
            (0.0, 1.0)
        } else if name.contains("norm") {
            (1.0, 0.2)
        } else if name.starts_with("tok_embeddings") {
            (0.0, 1.0)
        } else {
            (0.0, 0.15)
        };
        for v in t.iter_mut() {
            *v = (base + rng.normal() * std) as f32;
        }
    }
    p
}

fn bits(spec: &ModelSpec, p: &Params) -> Vec<(String, Vec<u32>)> {
    p.tensors(spec)
        .into_iter()
        .map(|(name, _, data)| (name, data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn assert_bit_identical(spec: &ModelSpec, a: &Params, b: &Params) {
    for ((name, x), (_, y)) in bits(spec, a).iter().zip(bits(spec, b)) {
        assert!(*x == y, "tensor {name} differs");
    }
    assert_eq!(a.layers.len(), b.layers.len());
}

fn checkpoint_reason(e: Error) -> String {
    match e {
        Error::Checkpoint { reason, .. } => reason,
        other => panic!("expected a checkpoint error, got {other}"),
    }
}

#[test]
fn export_then_import_is_bit_exact_for_mha_and_gqa() {
    let dir = temp_dir("roundtrip");
    for (tag, s) in [
        ("mha", spec(32, 72, 4, 4, 37, 9)),
        ("gqa", spec(48, 64, 6, 2, 300, 12)),
    ] {
        let params = random_params(&s, 11);
        let path = dir.join(format!("{tag}.bin"));
        llama2c::write(&path, &s, &params).expect("write");
        let bytes = std::fs::read(&path).expect("read back");
        assert_eq!(bytes, llama2c::to_bytes(&s, &params).expect("to_bytes"));
        let header = llama2c::read_header(&path).expect("header");
        assert_eq!(header.version, Version::Legacy);
        assert!(header.shared_classifier);
        assert_eq!(header.spec(), s);
        let (spec2, params2) = llama2c::read(&path).expect("import");
        assert_eq!(spec2, s, "{tag}");
        assert_bit_identical(&s, &params, &params2);
        assert_eq!(
            llama2c::to_bytes(&spec2, &params2).expect("export again"),
            bytes,
            "{tag}: export ∘ import ∘ export gives identical bytes"
        );
        // the C reader's size formula, independently: header + every tensor + rope tables
        let hs = s.dim / s.n_heads;
        let floats = s.vocab * s.dim
            + s.n_layers
                * (2 * s.dim + 2 * s.dim * s.dim + 2 * s.kv_dim() * s.dim + 3 * s.dim * s.hidden)
            + s.dim
            + s.seq * hs;
        assert_eq!(bytes.len(), 28 + 4 * floats, "{tag}");
    }
    // no temporary is left behind by the atomic write
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn numpy_available() -> bool {
    match Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
    {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: python3 with numpy is not available; the llama2.c files \
                 written by NumPy (export.py's legacy_export / version1_export) were NOT checked \
                 !!!!!!!!\n"
            );
            false
        }
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("f32 file")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

#[test]
fn files_written_by_numpy_like_export_py_import_exactly() {
    if !numpy_available() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/llama2c_export.py");
    for (tag, s) in [
        ("mha", spec(32, 80, 4, 4, 41, 10)),
        ("gqa", spec(64, 96, 8, 2, 70, 16)),
    ] {
        let dir = temp_dir(&format!("numpy-{tag}"));
        let status = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .args(
                [
                    s.dim,
                    s.hidden,
                    s.n_layers,
                    s.n_heads,
                    s.n_kv_heads,
                    s.vocab,
                    s.seq,
                    5,
                ]
                .map(|v| v.to_string()),
            )
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .status()
            .expect("python3 runs");
        assert!(status.success(), "{tag}: the NumPy exporter failed");

        let expected = read_f32(&dir.join("params.f32"));
        let (legacy_spec, legacy) = llama2c::read(&dir.join("legacy.bin")).expect("legacy");
        assert_eq!(legacy_spec, s, "{tag}");
        let flat: Vec<u32> = legacy
            .tensors(&s)
            .iter()
            .flat_map(|t| t.2.iter().map(|v| v.to_bits()))
            .collect();
        assert_eq!(
            flat,
            expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{tag}"
        );

        let header = llama2c::read_header(&dir.join("v1.bin")).expect("v1 header");
        assert_eq!(header.version, Version::V1);
        let (v1_spec, v1) = llama2c::read(&dir.join("v1.bin")).expect("v1");
        assert_eq!(v1_spec, s);
        assert_bit_identical(&s, &legacy, &v1);

        let reason = checkpoint_reason(
            llama2c::read(&dir.join("unshared.bin")).expect_err("unshared classifier"),
        );
        assert!(reason.contains("not shared"), "{reason}");

        // Our export of the imported weights: the header and every weight byte-identical; the
        // RoPE tables (which run.c and our import ignore) equal NumPy's float32 ones to the bit,
        // or to 1 ulp where NumPy's vectorised sin/cos/pow round differently from libm.
        let ours = llama2c::to_bytes(&legacy_spec, &legacy).expect("export");
        let theirs = std::fs::read(dir.join("legacy.bin")).expect("legacy bytes");
        assert_eq!(ours.len(), theirs.len());
        let rope_floats = s.seq * s.head_dim;
        let rope_start = ours.len() - 4 * rope_floats;
        assert_eq!(
            ours[..rope_start],
            theirs[..rope_start],
            "{tag}: header and weights"
        );
        let as_f32 = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect()
        };
        let (a, b) = (as_f32(&ours[rope_start..]), as_f32(&theirs[rope_start..]));
        let mut differing = 0;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let ulps = (x.to_bits() as i64 - y.to_bits() as i64).abs();
            assert!(
                ulps <= 1 || (x - y).abs() <= 1e-7,
                "{tag}: rope value {i}: {x} vs {y}"
            );
            differing += usize::from(x.to_bits() != y.to_bits());
        }
        eprintln!(
            "{tag}: {differing} of {} rope-table values differ from NumPy by 1 ulp",
            a.len()
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Compiles tests/c/llama2c_forward.c into `dir`.
fn build_c_sampler(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/llama2c_forward.c");
    let exe = dir.join("llama2c_forward");
    let out = Command::new("cc")
        .args(["-O2", "-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&source)
        .arg("-lm")
        .output()
        .expect("cc runs (a C compiler is required for this test)");
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

struct CRun {
    logits: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn run_c_sampler(exe: &Path, model: &Path, steps: usize, prompt: &[u16]) -> CRun {
    let out = Command::new(exe)
        .arg(model)
        .arg(steps.to_string())
        .args(prompt.iter().map(u16::to_string))
        .output()
        .expect("C sampler runs");
    assert!(
        out.status.success(),
        "C sampler failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut run = CRun {
        logits: Vec::new(),
        greedy: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("logits") => {
                let pos: usize = words.next().expect("pos").parse().expect("pos");
                assert_eq!(pos, run.logits.len());
                run.logits
                    .push(words.map(|w| w.parse().expect("logit")).collect());
            }
            Some("greedy") => run.greedy = words.map(|w| w.parse().expect("token")).collect(),
            other => panic!("unexpected line {other:?}"),
        }
    }
    run
}

#[test]
fn a_c_forward_pass_in_run_c_style_reproduces_our_logits_and_greedy_tokens() {
    let dir = temp_dir("csampler");
    let exe = build_c_sampler(&dir);
    for (tag, s, seed) in [
        ("mha", spec(64, 96, 4, 4, 53, 12), 21),
        ("gqa", spec(64, 112, 8, 2, 97, 16), 22),
        ("mqa", spec(32, 48, 4, 1, 61, 10), 31),
    ] {
        let params = random_params(&s, seed);
        let path = dir.join(format!("{tag}.bin"));
        llama2c::write(&path, &s, &params).expect("export");
        let prompt: Vec<u16> = (0..5).map(|i| ((i * 7 + 3) % s.vocab) as u16).collect();
        let steps = s.seq - prompt.len() + 1;
        let c = run_c_sampler(&exe, &path, steps, &prompt);

        let mut backend = ReferenceBackend::new(&s);
        backend.load_weights(&params).expect("weights");
        let mut ws = Workspace::new(&s);
        let mut window = vec![0u16; s.seq];
        window[..prompt.len()].copy_from_slice(&prompt);
        step::forward(&mut backend, &params, &window, &mut ws).expect("forward");
        assert_eq!(c.logits.len(), prompt.len());
        let mut worst = 0.0f32;
        for (pos, row) in c.logits.iter().enumerate() {
            assert_eq!(row.len(), s.vocab);
            for (v, &theirs) in row.iter().enumerate() {
                let ours = ws.logits()[v * s.seq + pos];
                let err = (ours - theirs).abs() / (1.0 + theirs.abs());
                worst = worst.max(err);
                assert!(
                    err < 5e-5,
                    "{tag}: logit of token {v} at position {pos}: ours {ours}, C {theirs}"
                );
            }
        }
        let opts = SampleOptions {
            tokens: steps,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        };
        let prompt32: Vec<u32> = prompt.iter().map(|&t| u32::from(t)).collect();
        let ours = generate(&mut backend, &params, &s, &prompt32, &opts).expect("generate");
        eprintln!(
            "{tag}: worst relative logit gap {worst:.2e}; greedy C {:?} ours {ours:?}",
            c.greedy
        );
        assert_eq!(c.greedy.len(), steps);
        assert_eq!(ours, c.greedy, "{tag}: greedy continuation token for token");
        let distinct: std::collections::BTreeSet<_> = ours.iter().collect();
        assert!(
            distinct.len() > 1,
            "{tag}: a degenerate continuation proves little"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn broken_files_give_clear_errors() {
    let dir = temp_dir("errors");
    let s = spec(16, 24, 2, 2, 10, 4);
    let params = random_params(&s, 3);
    let good = llama2c::to_bytes(&s, &params).expect("export");
    let try_bytes = |name: &str, bytes: &[u8]| -> String {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let from_read = checkpoint_reason(llama2c::read(&path).expect_err(name));
        // the cheap header check agrees, except on tensor contents it does not read
        if let Err(e) = llama2c::read_header(&path) {
            assert_eq!(checkpoint_reason(e), from_read, "{name}");
        }
        from_read
    };
    let header = |raw: [i32; 7]| -> Vec<u8> {
        let mut b: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
        b.extend_from_slice(&good[28..]);
        b
    };

    let r = try_bytes("truncated.bin", &good[..good.len() - 1]);
    assert!(
        r.contains("truncated file") && r.contains(&format!("needs exactly {}", good.len())),
        "{r}"
    );
    let r = try_bytes("short-header.bin", &good[..20]);
    assert!(r.contains("shorter than the 28-byte header"), "{r}");
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    let r = try_bytes("oversized.bin", &long);
    assert!(r.contains("4 trailing bytes"), "{r}");
    let r = try_bytes("zero-dim.bin", &header([0, 24, 2, 2, 2, 10, 4]));
    assert!(r.contains("dim is 0"), "{r}");
    let r = try_bytes("negative.bin", &header([16, 24, 2, -2, 2, 10, 4]));
    assert!(r.contains("n_heads is -2"), "{r}");
    let r = try_bytes("heads.bin", &header([16, 24, 2, 3, 3, 10, 4]));
    assert!(r.contains("n_heads 3 does not divide dim 16"), "{r}");
    let r = try_bytes("kvheads.bin", &header([16, 24, 2, 2, 3, 10, 4]));
    assert!(r.contains("n_kv_heads 3 does not divide n_heads 2"), "{r}");
    // a header that is valid but describes another model: the size no longer matches
    let r = try_bytes("mismatch.bin", &header([16, 24, 3, 2, 2, 10, 4]));
    assert!(r.contains("truncated file"), "{r}");
    let r = try_bytes("mismatch2.bin", &header([16, 24, 1, 2, 2, 10, 4]));
    assert!(r.contains("trailing bytes"), "{r}");
    // the legacy sign convention: negative vocab means a wcls tensor follows
    let mut unshared = header([16, 24, 2, 2, 2, -10, 4]);
    unshared.extend(std::iter::repeat_n(0u8, 4 * 10 * 16));
    let r = try_bytes("unshared.bin", &unshared);
    assert!(r.contains("not shared") && r.contains("-10"), "{r}");
    // a NaN weight (the header check cannot see it; the import does)
    let mut nan = good.clone();
    nan[28 + 4 * 17..28 + 4 * 18].copy_from_slice(&f32::NAN.to_le_bytes());
    let r = try_bytes("nan.bin", &nan);
    assert!(
        r.contains("tok_embeddings.weight holds NaN at element 17"),
        "{r}"
    );
    // version 1: a bad shared flag, a Q8_0 file
    let mut v1 = vec![0u8; 256];
    v1[..4].copy_from_slice(&llama2c::V1_MAGIC.to_le_bytes());
    v1[4..8].copy_from_slice(&1i32.to_le_bytes());
    for (i, v) in [16i32, 24, 2, 2, 2, 10, 4].iter().enumerate() {
        v1[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    v1[36] = 7;
    let r = try_bytes("v1-flag.bin", &v1);
    assert!(r.contains("flag is Some(7)"), "{r}");
    v1[4] = 2;
    let r = try_bytes("v1-q80.bin", &v1);
    assert!(r.contains("version 2 (Q8_0"), "{r}");
    let r = checkpoint_reason(llama2c::read(&dir.join("missing.bin")).expect_err("missing"));
    assert!(r.contains("cannot read"), "{r}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn header_of_a_published_size_model_is_read_without_the_weights() {
    // stories15M's header with the right total size (a sparse file: nothing is downloaded)
    let dir = temp_dir("stories");
    let s = ModelSpec {
        name: llama2c::MODEL_NAME.into(),
        ..ModelSpec::stories15m()
    };
    let head: Vec<u8> = [288i32, 768, 6, 6, 6, 32000, 256]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let h = Header {
        version: Version::Legacy,
        dim: 288,
        hidden_dim: 768,
        n_layers: 6,
        n_heads: 6,
        n_kv_heads: 6,
        vocab_size: 32000,
        seq_len: 256,
        shared_classifier: true,
    };
    // stories15M.bin is 60,816,028 bytes
    assert_eq!(h.file_bytes(), 60_816_028);
    let path = dir.join("stories15M.bin");
    let f = std::fs::File::create(&path).expect("create");
    use std::io::Write;
    (&f).write_all(&head).expect("header");
    f.set_len(60_816_028).expect("sparse size");
    let read = llama2c::read_header(&path).expect("header");
    assert_eq!(read, h);
    assert_eq!(read.spec(), s);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_starts_from_an_imported_file_and_exports_back() {
    let dir = temp_dir("init");
    let s = spec(32, 64, 4, 2, 256, 16);
    let params = random_params(&s, 5);
    let init = dir.join("init.bin");
    llama2c::write(&init, &s, &params).expect("export");

    // the CLI's rule: the file gives the shape, shape options are refused with it
    let args = TrainArgs {
        init_from: Some(init.clone()),
        weights: Some("reference".into()),
        steps: Some(4),
        accum: Some(2),
        checkpoint: Some(dir.join("ck")),
        plot: Some(dir.join("loss.svg")),
        sample_tokens: Some(0),
        ..TrainArgs::default()
    };
    let cfg = args.config().expect("config");
    assert_eq!(cfg.model, s);
    assert_eq!(cfg.init_from.as_deref(), Some(init.as_path()));
    let e = TrainArgs {
        model: Some("tiny".into()),
        seq: Some(8),
        ..args.clone()
    }
    .config()
    .expect_err("conflict");
    assert!(
        e.to_string()
            .contains("takes the model shape from the file; drop --model, --seq"),
        "{e}"
    );

    let t = Trainer::new(&cfg).expect("trainer");
    assert_bit_identical(&s, t.params(), &params);
    // a config whose model differs from the file is refused, not silently reshaped
    let e = Trainer::new(&TrainConfig {
        model: ModelSpec {
            seq: 8,
            ..s.clone()
        },
        ..cfg.clone()
    })
    .err()
    .expect("shape mismatch");
    assert!(e.to_string().contains("--init-from"), "{e}");

    let summary =
        milbridge_train::run_config(&cfg, &mut milbridge_train::NullObserver, None).expect("train");
    assert_eq!(summary.final_step, 4);
    let out = dir.join("out/trained.bin");
    std::fs::create_dir_all(out.parent().expect("parent")).expect("dir");
    let exported = llama2c::export(&ExportArgs {
        checkpoint: dir.join("ck"),
        out: out.clone(),
    })
    .expect("export");
    assert_eq!(exported.step, 4);
    assert_eq!(exported.bytes, std::fs::metadata(&out).expect("meta").len());
    let (spec2, trained) = llama2c::read(&out).expect("import trained");
    assert_eq!(spec2, s);
    let c = milbridge_train::ckpt::load(&dir.join("ck")).expect("checkpoint");
    assert_bit_identical(&s, &trained, &c.params);
    assert_ne!(trained, params, "training changed the weights");

    // exporting a model run.c cannot hold is a clear error
    let qwenish = ModelSpec {
        head_dim: 16,
        ..s.clone()
    };
    let e = llama2c::to_bytes(&qwenish, &Params::zeros(&qwenish)).expect_err("q_dim");
    assert!(e.to_string().contains("n_heads * head_dim == dim"), "{e}");
    let normed = ModelSpec {
        qk_norm: true,
        ..s.clone()
    };
    let e = llama2c::to_bytes(&normed, &Params::init(&normed, 1)).expect_err("q/k norm");
    assert!(e.to_string().contains("q/k RMSNorm"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A tiny llama2.c vocabulary: `<unk>`, BOS, EOS, the 256 byte tokens, then a few pieces whose
/// scores decide the merge order.
fn tiny_tokenizer_bytes(extra: &[(&str, f32)]) -> Vec<u8> {
    let mut pieces: Vec<(Vec<u8>, f32)> = vec![
        (b"<unk>".to_vec(), 0.0),
        (b"\n<s>\n".to_vec(), 0.0),
        (b"\n</s>\n".to_vec(), 0.0),
    ];
    for b in 0..=255u8 {
        pieces.push((format!("<0x{b:02X}>").into_bytes(), 0.0));
    }
    for (p, s) in extra {
        pieces.push((p.as_bytes().to_vec(), *s));
    }
    let max = pieces.iter().map(|p| p.0.len()).max().expect("pieces") as u32;
    let mut out = max.to_le_bytes().to_vec();
    for (p, s) in pieces {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&p);
    }
    out
}

const MERGES: &[(&str, f32)] = &[
    (" ", -1.0),   // 259
    ("a", -2.0),   // 260
    ("b", -2.0),   // 261
    ("c", -2.0),   // 262
    ("ab", -3.0),  // 263
    (" a", -4.0),  // 264
    (" ab", -0.5), // 265
    ("bc", -1.5),  // 266
    ("é", -2.0),   // 267
    (" c", -5.0),  // 268
];

#[test]
fn tokenizer_bin_encodes_and_decodes_like_run_c() {
    let bytes = tiny_tokenizer_bytes(MERGES);
    let t = Llama2cTokenizer::from_bytes(&bytes, Path::new("tokenizer.bin")).expect("tokenizer");
    assert_eq!(t.vocab_size(), 269);
    assert_eq!(t.to_bytes(), bytes, "serialisation round-trips");
    assert_eq!(t.piece(265), Some(&b" ab"[..]));
    assert_eq!(t.score(266), Some(-1.5));
    // "abc": [BOS, " ", a, b, c]; candidates " a"(-4) ab(-3) bc(-1.5): bc wins, then " a"
    // (ab is gone) -> [BOS, " a", "bc"]
    assert_eq!(t.encode("abc"), vec![1, 264, 266]);
    // "ab": [" ", a, b] -> ab(-3) beats " a"(-4) -> [" ", ab] -> " ab"(-0.5)
    assert_eq!(t.encode_with("ab", false, true), vec![265, 2]);
    // byte fallback: "z" and the 2-byte "ß" are not pieces -> bytes + 3; "é" is a piece
    assert_eq!(
        t.encode_with("zßé", false, false),
        vec![259, u32::from(b'z') + 3, 0xC3 + 3, 0x9F + 3, 267]
    );
    assert_eq!(
        t.encode_with("", true, false),
        vec![1],
        "no dummy prefix for empty text"
    );
    assert_eq!(t.encode_with("", false, false), Vec::<u32>::new());
    // a 4-byte character with no piece: four byte tokens
    assert_eq!(
        t.encode_with("😀", false, false),
        [259]
            .into_iter()
            .chain("😀".bytes().map(|b| u32::from(b) + 3))
            .collect::<Vec<_>>()
    );

    // decode: the piece after BOS loses its leading space, byte pieces are raw bytes
    for text in ["abc", "ab c", "zßé 😀 cab", "a  b"] {
        let ids = t.encode(text);
        assert_eq!(ids[0], Llama2cTokenizer::BOS);
        assert_eq!(t.decode_after(Some(Llama2cTokenizer::BOS), &ids[1..]), text);
        assert_eq!(
            t.decode(&ids),
            format!("\n<s>\n{text}"),
            "BOS's own piece, then the text"
        );
        assert_eq!(
            t.decode(&ids[1..]),
            format!(" {text}"),
            "without BOS the prefix space stays"
        );
    }
    assert_eq!(t.decode_piece(Some(1), 265), b"ab");
    assert_eq!(t.decode_piece(Some(7), 265), b" ab");
    assert_eq!(t.decode_piece(None, 0xE9 + 3), vec![0xE9]);
    assert_eq!(
        t.token_bytes(5000),
        Vec::<u8>::new(),
        "outside the vocabulary"
    );
    assert_eq!(t.stop_token(), Some(Llama2cTokenizer::BOS));
}

#[test]
fn corrupt_tokenizer_files_are_errors() {
    let good = tiny_tokenizer_bytes(MERGES);
    let reason = |bytes: &[u8]| -> String {
        match Llama2cTokenizer::from_bytes(bytes, Path::new("t.bin")).expect_err("corrupt") {
            Error::Tokenizer { reason, .. } => reason,
            other => panic!("expected a tokenizer error, got {other}"),
        }
    };
    assert!(reason(&good[..3]).contains("shorter than the 4-byte"));
    assert!(reason(&good[..good.len() - 1]).contains("cut short"));
    assert!(reason(&good[..good.len() - 5]).contains("cut short"));
    let mut zero = good.clone();
    zero[..4].copy_from_slice(&0i32.to_le_bytes());
    assert!(reason(&zero).contains("max_token_length is 0"));
    let mut small_max = good.clone();
    small_max[..4].copy_from_slice(&3i32.to_le_bytes());
    assert!(reason(&small_max).contains("token 0 at byte 4: length 5 is outside 0..=3"));
    let mut negative = good.clone();
    negative[8..12].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(reason(&negative).contains("length -1"));
    let mut nul = good.clone();
    nul[12] = 0;
    assert!(reason(&nul).contains("token 0 at byte 4 holds a NUL byte"));
    // without its last byte token (the 14-byte record of "<0xFF>"): 258 tokens
    let few = tiny_tokenizer_bytes(&[]);
    let r = reason(&few[..few.len() - 14]);
    assert!(
        r.contains("258 tokens; a llama2.c vocabulary has at least 259"),
        "{r}"
    );
    let missing = Llama2cTokenizer::read(Path::new("/nonexistent/tokenizer.bin")).expect_err("io");
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}

#[test]
fn sample_reads_a_llama2c_file_with_its_tokenizer() {
    let dir = temp_dir("sample");
    let tok_path = dir.join("tokenizer.bin");
    std::fs::write(&tok_path, tiny_tokenizer_bytes(MERGES)).expect("tokenizer");
    let s = spec(32, 48, 4, 2, 269, 24);
    let model = dir.join("model.bin");
    llama2c::write(&model, &s, &random_params(&s, 9)).expect("export");
    let args = SampleArgs {
        checkpoint: model.clone(),
        tokenizer: Some(tok_path.clone()),
        prompt: "ab c".into(),
        tokens: 12,
        temperature: 0.0,
        weights: "reference".into(),
        ..SampleArgs::default()
    };
    let text = milbridge_train::sample(&args).expect("sample");
    assert!(text.starts_with("ab c"), "{text:?}");
    assert_eq!(milbridge_train::sample(&args).expect("again"), text);
    // the tokenizer's continuation is what generate() gives after run.c's prompt encoding
    let t = Llama2cTokenizer::read(&tok_path).expect("tokenizer");
    let (spec2, params) = llama2c::read(&model).expect("model");
    let mut backend = ReferenceBackend::new(&spec2);
    backend.load_weights(&params).expect("weights");
    let prompt = t.encode("ab c");
    let ids = generate(
        &mut backend,
        &params,
        &spec2,
        &prompt,
        &SampleOptions {
            tokens: 12,
            temperature: 0.0,
            top_p: 0.9,
            seed: 42,
        },
    )
    .expect("generate");
    let end = ids.iter().position(|&id| id == 1).unwrap_or(ids.len());
    assert_eq!(
        text,
        format!(
            "ab c{}",
            t.decode_after(prompt.last().copied(), &ids[..end])
        )
    );

    // a tokenizer of another size, and no tokenizer for a non-byte vocabulary, are errors
    let e = milbridge_train::sample(&SampleArgs {
        tokenizer: None,
        ..args.clone()
    })
    .expect_err("no tokenizer");
    assert!(e.to_string().contains("needs its own tokenizer"), "{e}");
    let other = dir.join("other.bin");
    std::fs::write(&other, tiny_tokenizer_bytes(&MERGES[..3])).expect("tokenizer");
    let e = milbridge_train::sample(&SampleArgs {
        tokenizer: Some(other),
        ..args
    })
    .expect_err("size");
    assert!(
        e.to_string()
            .contains("has 262 tokens, but the model's vocab is 269"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_truncation_and_header_corruption_is_an_error_not_a_panic() {
    let s = spec(8, 12, 2, 1, 5, 3);
    let good = llama2c::to_bytes(&s, &random_params(&s, 1)).expect("export");
    let path = Path::new("mutated.bin");
    for len in 0..good.len() {
        assert!(
            llama2c::parse(&good[..len], path).is_err(),
            "prefix of {len} bytes"
        );
    }
    let mut rng = Rng::new(99);
    for i in 0..28 {
        for _ in 0..16 {
            let mut bad = good.clone();
            bad[i] = (rng.next_u64() & 0xFF) as u8;
            if bad[i] == good[i] {
                continue;
            }
            // every header field enters the implied file size, so any change must be refused
            // (bad field, size mismatch, or unshared classifier), never a panic
            if let Ok((h, _)) = llama2c::parse(&bad, path) {
                panic!("header byte {i} = {:#04x} was accepted as {h:?}", bad[i]);
            }
        }
    }
    let tokenizer = tiny_tokenizer_bytes(MERGES);
    for len in 0..tokenizer.len() {
        // only a prefix that ends on a record boundary with enough tokens may load
        if let Ok(t) = Llama2cTokenizer::from_bytes(&tokenizer[..len], path) {
            assert!(t.vocab_size() >= Llama2cTokenizer::MIN_VOCAB, "{len}");
        }
    }
}
