//! End-to-end training tests on the tiny model: weight modes agree, loss falls on the bundled
//! corpus, runs are deterministic, resume continues the same trajectory, a killed save leaves
//! the previous checkpoint loadable, bad data and checkpoints give clear errors.

use std::path::{Path, PathBuf};

use milbridge_train::ckpt;
use milbridge_train::config::{Compute, TrainConfig, WeightMode};
use milbridge_train::model::ModelSpec;
use milbridge_train::{Error, Recorder, Trainer, run_config};

fn tiny_config(compute: Compute, steps: u64, accum: u64) -> TrainConfig {
    TrainConfig {
        model: ModelSpec::tiny(),
        compute,
        steps,
        accum,
        lr: 3e-3,
        warmup: 2,
        checkpoint: None,
        plot: None,
        sample_tokens: 0,
        seed: 1234,
        ..TrainConfig::embedded_default()
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("milbridge-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn losses(cfg: &TrainConfig) -> Vec<f32> {
    let mut t = Trainer::new(cfg).expect("trainer");
    (0..cfg.steps)
        .map(|_| t.step().expect("step").loss)
        .collect()
}

#[test]
fn both_weight_modes_give_the_same_losses_over_20_steps() {
    let params = losses(&tiny_config(Compute::Kernels(WeightMode::Params), 20, 4));
    let packed = losses(&tiny_config(Compute::Kernels(WeightMode::Packed), 20, 4));
    let restaged = losses(&tiny_config(
        Compute::Kernels(WeightMode::PackedRestage),
        20,
        4,
    ));
    let reference = losses(&tiny_config(Compute::Reference, 20, 4));
    assert_eq!(params.len(), 20);
    let worst = (0..20)
        .map(|i| ((params[i] - reference[i]) / reference[i]).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "params {params:?}\npacked {packed:?}\nworst kernels/reference relative gap {worst:.2e}"
    );
    for i in 0..20 {
        assert!(
            (params[i] - packed[i]).abs() <= 1e-3 * params[i].abs(),
            "step {i}: params {} vs packed {}",
            params[i],
            packed[i]
        );
        assert_eq!(
            packed[i], restaged[i],
            "step {i}: the same packed kernels, resident or restaged"
        );
        // fp16 kernels against the f32 reference: same trajectory, looser tolerance
        assert!(
            (params[i] - reference[i]).abs() <= 5e-3 * reference[i].abs(),
            "step {i}: kernels {} vs reference {}",
            params[i],
            reference[i]
        );
    }
    // five optimizer steps happened: the loss moved
    assert!(params[19] < params[0], "{params:?}");
}

/// Qwen3's head structure (q/k norm, q_dim 2 × dim, 2 kv heads for 4 query heads) on the
/// bundled corpus: the loss falls in every weight mode and the reference, which agree.
#[test]
fn qwen3_tiny_loss_falls_in_every_weight_mode() {
    let cfg = |compute| TrainConfig {
        model: ModelSpec::qwen3_tiny(),
        ..tiny_config(compute, 40, 2)
    };
    let params = losses(&cfg(Compute::Kernels(WeightMode::Params)));
    let packed = losses(&cfg(Compute::Kernels(WeightMode::Packed)));
    let restage = losses(&cfg(Compute::Kernels(WeightMode::PackedRestage)));
    let reference = losses(&cfg(Compute::Reference));
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    eprintln!("params {params:?}\npacked {packed:?}\nreference {reference:?}");
    for (name, l) in [
        ("params", &params),
        ("packed", &packed),
        ("packed-restage", &restage),
        ("reference", &reference),
    ] {
        let (first, last) = (mean(&l[..5]), mean(&l[35..]));
        assert!(
            first > 5.3,
            "{name}: first losses {first} (uniform is 5.55)"
        );
        assert!(
            last < first - 0.5,
            "{name}: loss fell only from {first} to {last}"
        );
    }
    for i in 0..40 {
        assert!(
            (params[i] - packed[i]).abs() <= 1e-3 * params[i].abs(),
            "step {i}: params {} vs packed {}",
            params[i],
            packed[i]
        );
        assert_eq!(packed[i].to_bits(), restage[i].to_bits(), "step {i}");
        assert!(
            (params[i] - reference[i]).abs() <= 5e-3 * reference[i].abs(),
            "step {i}: kernels {} vs reference {}",
            params[i],
            reference[i]
        );
    }
}

#[test]
fn loss_falls_on_the_bundled_corpus() {
    let cfg = tiny_config(Compute::Kernels(WeightMode::Params), 240, 2);
    let mut rec = Recorder::default();
    let summary = run_config(&cfg, &mut rec, None).expect("run");
    assert_eq!(summary.steps_run, 240);
    let first = rec.steps[0].loss;
    let last = summary.last_loss;
    eprintln!("loss {first} -> {last}");
    // uniform over 256 bytes is ln 256 = 5.55 nats; English text in bytes is far below 3
    assert!(first > 5.3, "first loss {first}");
    assert!(last < 3.2, "loss fell only from {first} to {last}");
    assert!(rec.steps.iter().all(|s| s.loss.is_finite() && s.ms > 0.0));
    assert_eq!(rec.steps.iter().filter(|s| s.optimizer_step).count(), 120);
}

#[test]
fn same_seed_and_data_give_identical_bits() {
    let cfg = tiny_config(Compute::Kernels(WeightMode::Params), 8, 2);
    let mut a = Trainer::new(&cfg).expect("a");
    let mut b = Trainer::new(&cfg).expect("b");
    for _ in 0..8 {
        let (la, lb) = (a.step().expect("a").loss, b.step().expect("b").loss);
        assert_eq!(la.to_bits(), lb.to_bits());
    }
    assert_eq!(a.params(), b.params());
    let other = TrainConfig { seed: 99, ..cfg };
    assert_ne!(Trainer::new(&other).expect("c").params(), a.params());
}

#[test]
fn resume_continues_the_exact_trajectory() {
    let dir = temp_dir("resume");
    let ck = dir.join("ck");
    // 13 steps with accum 5: the save lands inside an accumulation (gradients are saved too)
    let cfg = TrainConfig {
        checkpoint: Some(ck.clone()),
        ..tiny_config(Compute::Kernels(WeightMode::Params), 20, 5)
    };
    let mut straight = Trainer::new(&cfg).expect("trainer");
    let mut reference = Vec::new();
    for i in 0..20 {
        if i == 13 {
            straight.save(&ck).expect("save");
        }
        reference.push(straight.step().expect("step").loss);
    }
    let resumed_cfg = TrainConfig {
        resume: true,
        ..cfg.clone()
    };
    let mut resumed = Trainer::new(&resumed_cfg).expect("resume");
    assert_eq!(resumed.step_index(), 13);
    for (i, want) in reference.iter().enumerate().skip(13) {
        let got = resumed.step().expect("step").loss;
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "step {i}: resumed {got} vs straight {want}"
        );
    }
    assert_eq!(resumed.params(), straight.params());
    assert_eq!(resumed.losses().len(), 20);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_run_saves_plots_writes_metrics_and_samples() {
    let dir = temp_dir("run");
    let cfg = TrainConfig {
        checkpoint: Some(dir.join("ck")),
        plot: Some(dir.join("loss.svg")),
        metrics: Some(dir.join("m.jsonl")),
        sample_tokens: 24,
        save_every: 2,
        ..tiny_config(Compute::Kernels(WeightMode::Packed), 12, 2)
    };
    let mut rec = Recorder::default();
    let summary = run_config(&cfg, &mut rec, None).expect("run");
    let sample = summary.sample.expect("a byte-level model samples");
    assert!(
        sample.len() >= 24 && sample.starts_with("Once upon a time"),
        "{sample:?}"
    );
    let svg = std::fs::read_to_string(dir.join("loss.svg")).expect("plot");
    assert!(svg.contains("<polyline"));
    let lines = std::fs::read_to_string(dir.join("m.jsonl")).expect("metrics");
    assert_eq!(lines.lines().count(), 12);
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        for key in ["step", "loss", "lr", "ms"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let saves = rec
        .events
        .iter()
        .filter(|e| matches!(e, milbridge_train::Event::CheckpointSaved { .. }))
        .count();
    assert_eq!(
        saves,
        2 + 1,
        "every 2 optimizer steps (2 and 4, before the end) plus the final one"
    );
    let c = ckpt::load(&dir.join("ck")).expect("checkpoint");
    assert_eq!(c.state.step, 12);
    assert_eq!(c.state.loss_history.len(), 12);
    // `milbridge sample` on that checkpoint
    let args = milbridge_train::SampleArgs {
        checkpoint: dir.join("ck"),
        tokens: 10,
        ..milbridge_train::SampleArgs::default()
    };
    let text = milbridge_train::sample(&args).expect("sample");
    assert!(text.starts_with("Once upon a time"));
    let again = milbridge_train::sample(&args).expect("sample");
    assert_eq!(text, again, "seeded sampling repeats");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_interrupt_saves_a_checkpoint_and_stops() {
    let dir = temp_dir("stop");
    let cfg = TrainConfig {
        checkpoint: Some(dir.join("ck")),
        ..tiny_config(Compute::Reference, 50, 2)
    };
    let flag = std::sync::atomic::AtomicBool::new(false);
    struct StopAfter(usize, usize);
    impl milbridge_train::Observer for StopAfter {
        fn on_step(&mut self, _: &milbridge_train::StepReport) {
            self.0 += 1;
        }
        fn should_stop(&mut self) -> bool {
            self.0 >= self.1
        }
    }
    let summary = run_config(&cfg, &mut StopAfter(0, 5), Some(&flag)).expect("run");
    assert!(summary.interrupted);
    assert_eq!(summary.final_step, 5);
    assert_eq!(ckpt::load(&dir.join("ck")).expect("saved").state.step, 5);
    std::fs::remove_dir_all(&dir).ok();
}

fn write_shard(path: &Path, ids: &[u16]) {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("shard");
}

#[test]
fn bad_data_files_are_clear_errors() {
    let dir = temp_dir("data");
    let mut cfg = tiny_config(Compute::Reference, 2, 1);
    let ok: Vec<u16> = (0..200).map(|i| (i * 7 % 256) as u16).collect();

    let shard = dir.join("ok.bin");
    write_shard(&shard, &ok);
    cfg.data = Some(shard.clone());
    Trainer::new(&cfg)
        .expect("a valid shard trains")
        .step()
        .expect("step");

    // truncated in the middle of a token
    let mut bytes = std::fs::read(&shard).expect("read");
    bytes.pop();
    let odd = dir.join("odd.bin");
    std::fs::write(&odd, &bytes).expect("write");
    cfg.data = Some(odd.clone());
    let e = Trainer::new(&cfg).err().expect("odd length");
    assert_eq!(
        e.to_string(),
        format!(
            "data {}: length 399 bytes is odd; token ids are 2-byte little-endian u16 (truncated file?)",
            odd.display()
        )
    );
    // a shard from a 32000-token vocabulary
    let mut wide = ok.clone();
    wide[57] = 31999;
    let wrong = dir.join("vocab.bin");
    write_shard(&wrong, &wide);
    cfg.data = Some(wrong);
    let e = Trainer::new(&cfg).err().expect("vocab");
    assert!(
        e.to_string().ends_with(
            "token id 31999 at byte offset 114 (token 57) is out of range for vocab 256"
        ),
        "{e}"
    );
    // too short for one window, empty, missing
    let short = dir.join("short.bin");
    write_shard(&short, &ok[..20]);
    cfg.data = Some(short);
    assert!(
        Trainer::new(&cfg)
            .err()
            .expect("short")
            .to_string()
            .contains("20 tokens is too short")
    );
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").expect("write");
    cfg.data = Some(empty);
    assert!(
        Trainer::new(&cfg)
            .err()
            .expect("empty")
            .to_string()
            .ends_with("file is empty")
    );
    cfg.data = Some(dir.join("missing.bin"));
    assert!(matches!(
        Trainer::new(&cfg).err().expect("missing"),
        Error::Data { .. }
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn corrupt_or_foreign_checkpoints_are_clear_errors_on_resume() {
    let dir = temp_dir("badck");
    let ck = dir.join("ck");
    let cfg = TrainConfig {
        checkpoint: Some(ck.clone()),
        ..tiny_config(Compute::Reference, 3, 1)
    };
    let mut t = Trainer::new(&cfg).expect("trainer");
    t.step().expect("step");
    t.save(&ck).expect("save");
    let resume = TrainConfig {
        resume: true,
        ..cfg.clone()
    };
    Trainer::new(&resume).expect("a good checkpoint resumes");

    // resuming with an explicitly different model
    let other = TrainConfig {
        model: ModelSpec {
            dim: 32,
            head_dim: 8,
            ..ModelSpec::tiny()
        },
        check_model_on_resume: true,
        ..resume.clone()
    };
    let e = Trainer::new(&other)
        .err()
        .expect("foreign model")
        .to_string();
    assert!(e.contains("checkpoint holds model tiny"), "{e}");

    // every tensors file truncated
    for entry in std::fs::read_dir(&ck).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&path).expect("read");
            std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("truncate");
        }
    }
    let e = Trainer::new(&resume).err().expect("truncated");
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    assert!(e.to_string().contains("corrupt or truncated"), "{e}");
    // no checkpoint at all
    let none = TrainConfig {
        checkpoint: Some(dir.join("none")),
        ..resume
    };
    assert!(
        Trainer::new(&none)
            .err()
            .expect("none")
            .to_string()
            .contains("no checkpoint to resume")
    );
    std::fs::remove_dir_all(&dir).ok();
}

const ROLE: &str = "MILBRIDGE_TRAIN_TEST_ROLE";
const ROLE_DIR: &str = "MILBRIDGE_TRAIN_TEST_DIR";

/// In a child process (role `saver`), saves checkpoints in a loop until killed; in the parent,
/// kills such children with SIGKILL at varying moments and checks that the directory always
/// holds a loadable checkpoint.
#[test]
fn sigkill_during_save_leaves_the_previous_checkpoint_loadable() {
    if std::env::var(ROLE).as_deref() == Ok("saver") {
        let dir = PathBuf::from(std::env::var(ROLE_DIR).expect("dir"));
        let cfg = TrainConfig {
            checkpoint: Some(dir.clone()),
            ..tiny_config(Compute::Reference, 1000, 1)
        };
        let mut t = Trainer::new(&cfg).expect("trainer");
        loop {
            t.step().expect("step");
            t.save(&dir).expect("save");
            std::fs::write(dir.with_extension("ready"), b"1").expect("ready");
        }
    }
    let root = temp_dir("kill");
    let dir = root.join("ck");
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..6u64 {
        let ready = dir.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "sigkill_during_save_leaves_the_previous_checkpoint_loadable",
                "--nocapture",
            ])
            .env(ROLE, "saver")
            .env(ROLE_DIR, &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn saver");
        // wait until the child has completed at least one save, then let it run a while
        while !ready.exists() {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("saver exited early: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(3 + 7 * round));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let c = ckpt::load(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(c.state.step >= 1);
        assert_eq!(c.params.layers.len(), 2);
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn fp16_overflow_skips_the_step_and_lowers_the_scale() {
    // 2^40 times the loss gradient cannot be represented in fp16: the kernels overflow.
    let cfg = TrainConfig {
        loss_scale: 2f32.powi(40),
        loss_scale_growth: 0,
        ..tiny_config(Compute::Kernels(WeightMode::Params), 3, 1)
    };
    let mut t = Trainer::new(&cfg).expect("trainer");
    let before = t.params().clone();
    let first = t.step().expect("step");
    assert!(first.optimizer_step && first.skipped, "{first:?}");
    assert_eq!(first.grad_norm, None);
    assert_eq!(
        t.params(),
        &before,
        "a skipped step leaves the weights alone"
    );
    let second = t.step().expect("step");
    assert_eq!(
        second.loss_scale,
        2f32.powi(39),
        "the scale halved after the overflow"
    );
    assert_eq!(second.loss.to_bits(), t.losses()[1].to_bits());

    // a sane scale trains normally
    let ok = TrainConfig {
        loss_scale: 256.0,
        ..cfg
    };
    let mut t = Trainer::new(&ok).expect("trainer");
    let out = t.step().expect("step");
    assert!(
        !out.skipped && out.grad_norm.is_some_and(|n| n > 0.0),
        "{out:?}"
    );
    assert_ne!(t.params(), &before);
}

#[test]
fn run_from_cli_arguments() {
    let dir = temp_dir("args");
    let args = milbridge_train::TrainArgs {
        model: Some("tiny".into()),
        weights: Some("packed".into()),
        steps: Some(4),
        accum: Some(2),
        checkpoint: Some(dir.join("ck")),
        plot: Some(dir.join("loss.svg")),
        sample_tokens: Some(8),
        prompt: Some("The cat".into()),
        ..milbridge_train::TrainArgs::default()
    };
    let mut rec = Recorder::default();
    let summary = milbridge_train::run(&args, &mut rec).expect("run");
    assert_eq!(summary.final_step, 4);
    assert!(!summary.interrupted);
    assert!(summary.sample.expect("sample").starts_with("The cat"));
    assert_eq!(rec.steps.len(), 4);
    assert_eq!(rec.steps.iter().filter(|s| s.optimizer_step).count(), 2);
    assert!(dir.join("loss.svg").is_file());
    // resuming a finished run trains nothing more and keeps the checkpoint
    let again = milbridge_train::TrainArgs {
        resume: true,
        sample_tokens: Some(0),
        ..args
    };
    let summary = milbridge_train::run(&again, &mut Recorder::default()).expect("resume");
    assert_eq!((summary.steps_run, summary.final_step), (0, 4));
    let bad = milbridge_train::TrainArgs {
        weights: Some("sparse".into()),
        ..again
    };
    assert!(matches!(
        milbridge_train::run(&bad, &mut Recorder::default()),
        Err(Error::Config(_))
    ));
    std::fs::remove_dir_all(&dir).ok();
}
