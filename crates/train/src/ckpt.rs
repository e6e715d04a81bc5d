//! Checkpoints: a directory holding the tensors as safetensors (weights, both Adam moments, and
//! the gradient accumulator when saved between optimizer steps) and `state.json` (step,
//! optimizer, schedule, loss scaler, data cursor, seed, model shape).
//!
//! # Atomicity
//!
//! A save never damages the checkpoint already in the directory, whatever moment the process
//! dies at (SIGKILL, power loss after the data reached the disk):
//!
//! 1. the tensors go to a new file named after their content hash
//!    (`tensors-<blake3 prefix>.safetensors`): written to a temporary name, `fsync`ed, renamed
//!    into place, and the directory `fsync`ed;
//! 2. `state.json`, which names that file and its full hash, is replaced the same way (temp +
//!    fsync + rename + directory fsync). This rename is the commit point;
//! 3. only then are tensor files that `state.json` no longer names, and stale temporaries, removed.
//!
//! A reader follows `state.json` to exactly one tensors file and checks its hash, so it sees the
//! old checkpoint or the new one, never a mix. Truncated, corrupt or foreign files are reported
//! as [`Error::Checkpoint`], never trusted and never a panic.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use safetensors::SafeTensorError;
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};
use crate::optim::{AdamW, LossScaler, LrSchedule};

/// The `format` field of `state.json`.
pub const FORMAT: &str = "milbridge-train-checkpoint";
/// The `version` field of `state.json`.
pub const VERSION: u32 = 1;
/// The state file's name inside a checkpoint directory.
pub const STATE_FILE: &str = "state.json";

/// Everything besides tensors that resuming needs to continue the same trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The micro-step to run next.
    pub step: u64,
    /// Optimizer steps applied so far (Adam's `t`).
    pub opt_step: u64,
    /// Micro-steps the run was asked for.
    pub total_steps: u64,
    /// Micro-steps per optimizer step.
    pub accum: u64,
    /// The run's seed.
    pub seed: u64,
    /// Weight mode the run used (`params` or `packed`); informative, either may resume.
    pub weights: String,
    /// AdamW hyper-parameters.
    pub adam: AdamW,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Loss scaler state.
    pub scaler: LossScaler,
    /// Gradient clipping norm (0: off).
    pub grad_clip: f32,
    /// Where the training tokens came from.
    pub data_source: String,
    /// How many tokens the data had (a resumed run must see the same data).
    pub data_tokens: usize,
    /// State of the data cursor's generator.
    pub cursor_rng: u64,
    /// Windows the cursor has drawn.
    pub cursor_windows: u64,
    /// Loss of the last micro-step before the save.
    pub last_loss: f32,
    /// Mean loss of every micro-step so far, for the plot of a resumed run.
    pub loss_history: Vec<f32>,
    /// The model's shape.
    pub model: ModelSpec,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    tensors: String,
    tensors_blake3: String,
    state: TrainState,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Non-tensor state.
    pub state: TrainState,
    /// Master weights.
    pub params: Params,
    /// Adam first moments.
    pub adam_m: Params,
    /// Adam second moments.
    pub adam_v: Params,
    /// Gradients accumulated since the last optimizer step (present when the save happened
    /// between optimizer steps).
    pub grads: Option<Params>,
}

/// Writes a checkpoint into `dir` (created if missing), atomically (see the module docs).
///
/// # Errors
///
/// [`Error::Io`] when a write, sync or rename fails; the previous checkpoint is then intact.
pub fn save(
    dir: &Path,
    state: &TrainState,
    params: &Params,
    adam_m: &Params,
    adam_v: &Params,
    grads: Option<&Params>,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create checkpoint directory", dir, e))?;
    let spec = &state.model;
    let mut sets = vec![("", params), ("adam_m.", adam_m), ("adam_v.", adam_v)];
    if let Some(g) = grads {
        sets.push(("grad.", g));
    }
    let mut views: Vec<(String, F32View<'_>)> = Vec::new();
    for (prefix, p) in sets {
        for (name, shape, data) in p.tensors(spec) {
            views.push((format!("{prefix}{name}"), F32View { shape, data }));
        }
    }
    let meta: HashMap<String, String> = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), state.step.to_string()),
        ("model".to_string(), spec.name.clone()),
    ]);
    // Streamed: one tensor's bytes in memory at a time (a full-size Qwen3 checkpoint is 7 GB),
    // then hashed back from the file and renamed to its content-hashed name.
    let tmp = dir.join(format!(".tmp-tensors-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, &Some(meta), &tmp).map_err(|e| match e {
        SafeTensorError::IoError(source) => Error::io("cannot write", &tmp, source),
        other => panic!("invariant: distinct f32 tensors serialise, got {other:?}"),
    })?;
    let hash = {
        let f = fs::File::open(&tmp).map_err(|e| Error::io("cannot reopen", &tmp, e))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot sync", &tmp, e))?;
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(std::io::BufReader::with_capacity(1 << 20, f))
            .map_err(|e| Error::io("cannot read back", &tmp, e))?;
        hasher.finalize().to_hex().to_string()
    };
    let tensors_name = format!("tensors-{}.safetensors", &hash[..16]);
    let target = dir.join(&tensors_name);
    fs::rename(&tmp, &target).map_err(|e| Error::io("cannot rename into", &target, e))?;
    sync_dir(dir)?;

    let file = StateFile {
        format: FORMAT.to_string(),
        version: VERSION,
        tensors: tensors_name.clone(),
        tensors_blake3: hash,
        state: state.clone(),
    };
    let json = serde_json::to_vec_pretty(&file).expect("invariant: the state serialises");
    write_atomic(dir, STATE_FILE, &json)?;

    // The commit point has passed: remove what the new state does not name.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_tensors = name.starts_with("tensors-")
                && name.ends_with(".safetensors")
                && name != tensors_name;
            if stale_tensors || name.starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// An f32 tensor serialised little-endian one tensor at a time.
struct F32View<'a> {
    shape: Vec<usize>,
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Writes `bytes` to `dir/name` through a temporary file: write, fsync, rename, fsync `dir`.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let target = dir.join(name);
    {
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot sync", &tmp, e))?;
    }
    fs::rename(&tmp, &target).map_err(|e| Error::io("cannot rename into", &target, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir).map_err(|e| Error::io("cannot open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("cannot sync directory", dir, e))
}

/// Whether `dir` holds a checkpoint (its `state.json` exists).
pub fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// Loads the checkpoint in `dir`.
///
/// # Errors
///
/// [`Error::Checkpoint`] when `state.json` is missing, unparsable, of another format or
/// version, names a missing tensors file, when the tensors file's hash differs (truncated or
/// corrupt), or when a tensor is missing or has the wrong dtype or shape for the model.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let state_path = dir.join(STATE_FILE);
    let json = fs::read(&state_path)
        .map_err(|e| Error::ckpt(dir, format!("cannot read {}: {e}", state_path.display())))?;
    let file: StateFile = serde_json::from_slice(&json)
        .map_err(|e| Error::ckpt(dir, format!("{STATE_FILE} is not a valid state file: {e}")))?;
    if file.format != FORMAT {
        return Err(Error::ckpt(
            dir,
            format!("format {:?} is not {FORMAT:?}", file.format),
        ));
    }
    if file.version != VERSION {
        return Err(Error::ckpt(
            dir,
            format!(
                "version {} is not supported (expected {VERSION})",
                file.version
            ),
        ));
    }
    if file.tensors.contains('/') || file.tensors.contains("..") {
        return Err(Error::ckpt(
            dir,
            format!("tensors file name {:?} is not plain", file.tensors),
        ));
    }
    let spec = &file.state.model;
    spec.validate()
        .map_err(|e| Error::ckpt(dir, format!("model in {STATE_FILE}: {e}")))?;
    let tensors_path = dir.join(&file.tensors);
    let bytes = fs::read(&tensors_path)
        .map_err(|e| Error::ckpt(dir, format!("cannot read {}: {e}", tensors_path.display())))?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if hash != file.tensors_blake3 {
        return Err(Error::ckpt(
            dir,
            format!(
                "{} is corrupt or truncated ({} bytes; content hash {} differs from the recorded {})",
                file.tensors,
                bytes.len(),
                &hash[..16],
                file.tensors_blake3
                    .get(..16)
                    .unwrap_or(&file.tensors_blake3)
            ),
        ));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::ckpt(
            dir,
            format!("{} is not valid safetensors: {e}", file.tensors),
        )
    })?;
    let read = |prefix: &str| -> Result<Params> {
        let mut p = Params::zeros(spec);
        let names: Vec<(String, Vec<usize>)> = p
            .tensors(spec)
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect();
        for ((name, shape), (dst, _)) in names.iter().zip(p.tensors_mut()) {
            let full = format!("{prefix}{name}");
            let view = st
                .tensor(&full)
                .map_err(|_| Error::ckpt(dir, format!("tensor {full} is missing")))?;
            if view.dtype() != Dtype::F32 {
                return Err(Error::ckpt(
                    dir,
                    format!("tensor {full} has dtype {:?}, expected F32", view.dtype()),
                ));
            }
            if view.shape() != shape.as_slice() {
                return Err(Error::ckpt(
                    dir,
                    format!(
                        "tensor {full} has shape {:?}, expected {shape:?}",
                        view.shape()
                    ),
                ));
            }
            for (d, chunk) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
        Ok(p)
    };
    let params = read("")?;
    let adam_m = read("adam_m.")?;
    let adam_v = read("adam_v.")?;
    let has_grads = st.names().iter().any(|n| n.starts_with("grad."));
    let grads = if has_grads {
        Some(read("grad.")?)
    } else {
        None
    };
    Ok(Checkpoint {
        state: file.state,
        params,
        adam_m,
        adam_v,
        grads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QK_NORM_TENSORS;
    use std::path::PathBuf;

    pub(crate) fn sample_state(spec: &ModelSpec) -> TrainState {
        TrainState {
            step: 12,
            opt_step: 1,
            total_steps: 100,
            accum: 10,
            seed: 5,
            weights: "params".into(),
            adam: AdamW::default(),
            schedule: LrSchedule {
                max_lr: 1e-3,
                warmup: 2,
                total: 10,
                min_lr_frac: 0.1,
            },
            scaler: LossScaler::new(256.0, 100),
            grad_clip: 1.0,
            data_source: "<embedded>".into(),
            data_tokens: 1000,
            cursor_rng: 77,
            cursor_windows: 12,
            last_loss: 4.5,
            loss_history: vec![5.5, 5.0],
            model: spec.clone(),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("milbridge-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_round_trips_every_tensor_and_the_state() {
        let spec = ModelSpec::tiny();
        let dir = temp_dir("rt");
        let p = Params::init(&spec, 1);
        let m = Params::init(&spec, 2);
        let v = Params::init(&spec, 3);
        let g = Params::init(&spec, 4);
        let state = sample_state(&spec);
        save(&dir, &state, &p, &m, &v, Some(&g)).expect("save");
        let ck = load(&dir).expect("load");
        assert_eq!(ck.state, state);
        assert_eq!(ck.params, p);
        assert_eq!(ck.adam_m, m);
        assert_eq!(ck.adam_v, v);
        assert_eq!(ck.grads, Some(g));
        // a second save without gradients replaces the tensors file and removes the old one
        let mut state2 = state.clone();
        state2.step = 20;
        save(&dir, &state2, &p, &m, &v, None).expect("save again");
        let ck = load(&dir).expect("load again");
        assert_eq!(ck.state.step, 20);
        assert!(ck.grads.is_none());
        let files: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn qk_norm_gains_round_trip_and_llama_checkpoints_have_none() {
        let spec = ModelSpec::qwen3_tiny();
        let dir = temp_dir("qk");
        let mut p = Params::init(&spec, 1);
        let mut m = Params::init(&spec, 2);
        for (i, l) in p.layers.iter_mut().enumerate() {
            l.q_norm[3] = 1.5 + i as f32;
            l.k_norm[0] = -0.25;
        }
        m.layers[1].k_norm[31] = 7.0;
        let state = sample_state(&spec);
        save(&dir, &state, &p, &m, &m, Some(&p)).expect("save");
        let ck = load(&dir).expect("load");
        assert!(ck.state.model.qk_norm);
        assert_eq!(ck.params, p);
        assert_eq!(ck.adam_m, m);
        assert_eq!(ck.grads, Some(p.clone()));
        let names: Vec<String> = p.tensors(&spec).into_iter().map(|t| t.0).collect();
        for l in 0..spec.n_layers {
            for t in QK_NORM_TENSORS {
                assert!(names.contains(&format!("layers.{l}.{t}")), "{t}");
            }
        }
        // a checkpoint whose tensors file lacks a gain is an error, never a silent default
        let llama = ModelSpec {
            qk_norm: false,
            ..spec.clone()
        };
        let plain = Params::init(&llama, 1);
        assert!(plain.layers[0].q_norm.is_empty());
        assert!(
            plain
                .tensors(&llama)
                .iter()
                .all(|t| !t.0.contains("q_norm") && !t.0.contains("k_norm"))
        );
        save(&dir, &sample_state(&llama), &plain, &plain, &plain, None).expect("save llama");
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).expect("read")).expect("json");
        json["state"]["model"]["qk_norm"] = true.into();
        fs::write(
            dir.join(STATE_FILE),
            serde_json::to_vec(&json).expect("json"),
        )
        .expect("write");
        let e = load(&dir).expect_err("missing gains").to_string();
        assert!(
            e.contains("tensor layers.0.attention.q_norm.weight is missing"),
            "{e}"
        );
        // state files from before q/k norm existed read as Llama
        json["state"]["model"]
            .as_object_mut()
            .expect("model")
            .remove("qk_norm");
        fs::write(
            dir.join(STATE_FILE),
            serde_json::to_vec(&json).expect("json"),
        )
        .expect("write");
        assert!(!load(&dir).expect("old state file").state.model.qk_norm);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn corrupt_truncated_missing_and_foreign_checkpoints_are_errors() {
        let spec = ModelSpec::tiny();
        let dir = temp_dir("bad");
        let p = Params::init(&spec, 1);
        save(&dir, &sample_state(&spec), &p, &p, &p, None).expect("save");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).expect("read")).expect("json");
        let tensors = dir.join(json["tensors"].as_str().expect("name"));
        let good = fs::read(&tensors).expect("tensors");

        // truncated tensors
        fs::write(&tensors, &good[..good.len() / 2]).expect("truncate");
        let e = load(&dir).expect_err("truncated").to_string();
        assert!(e.contains("corrupt or truncated"), "{e}");
        // one flipped byte
        let mut flipped = good.clone();
        flipped[good.len() - 3] ^= 0x40;
        fs::write(&tensors, &flipped).expect("flip");
        assert!(
            load(&dir)
                .expect_err("flipped")
                .to_string()
                .contains("corrupt")
        );
        fs::write(&tensors, &good).expect("restore");
        load(&dir).expect("restored checkpoint loads");

        // garbage state file
        let state_path = dir.join(STATE_FILE);
        let good_json = fs::read(&state_path).expect("json");
        fs::write(&state_path, b"{\"format\": 3").expect("garbage");
        let e = load(&dir).expect_err("garbage").to_string();
        assert!(e.contains("is not a valid state file"), "{e}");
        // a foreign format
        let mut foreign = json.clone();
        foreign["format"] = "something-else".into();
        fs::write(&state_path, serde_json::to_vec(&foreign).expect("ser")).expect("write");
        assert!(
            load(&dir)
                .expect_err("foreign")
                .to_string()
                .contains("is not \"milbridge")
        );
        // a model shape that disagrees with the tensors (hash still matches)
        let mut other = json.clone();
        other["state"]["model"]["dim"] = 32.into();
        fs::write(&state_path, serde_json::to_vec(&other).expect("ser")).expect("write");
        let e = load(&dir).expect_err("shape").to_string();
        assert!(e.contains("has shape [256, 64], expected [256, 32]"), "{e}");
        // a path escape
        let mut escape = json.clone();
        escape["tensors"] = "../x.safetensors".into();
        fs::write(&state_path, serde_json::to_vec(&escape).expect("ser")).expect("write");
        assert!(load(&dir).is_err());
        fs::write(&state_path, &good_json).expect("restore json");
        load(&dir).expect("loads again");
        // missing directory
        let e = load(&dir.join("nope")).expect_err("missing").to_string();
        assert!(e.contains("cannot read"), "{e}");
        fs::remove_dir_all(&dir).ok();
    }
}
