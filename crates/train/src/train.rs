//! The training loop: micro-steps with gradient accumulation, the optimizer step (loss-scale
//! overflow check, clipping, cosine schedule, AdamW, weight writes), checkpoints, metrics, the
//! plot, interrupts and the final sample.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::backend::Backend;
use crate::ckpt::{self, TrainState};
use crate::config::{Compute, TrainConfig};
use crate::data::{DataCursor, TokenData};
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};
use crate::observer::{
    Event, MetricsWriter, Observer, RunInfo, StepReport, Summary, loss_curve_svg,
};
use crate::optim::{self, LossScaler, LrSchedule, clip_factor};
use crate::step::{self, Workspace};

/// A training run in progress: weights, optimizer state, data cursor, kernels.
pub struct Trainer {
    cfg: TrainConfig,
    spec: ModelSpec,
    backend: Box<dyn Backend>,
    params: Params,
    grads: Params,
    adam_m: Params,
    adam_v: Params,
    ws: Workspace,
    data: TokenData,
    cursor: DataCursor,
    scaler: LossScaler,
    schedule: LrSchedule,
    /// Next micro-step.
    step: u64,
    /// Optimizer steps applied.
    opt_step: u64,
    /// Micro-steps accumulated into `grads` since the last optimizer step.
    pending: u64,
    inputs: Vec<u16>,
    targets: Vec<u16>,
    losses: Vec<f32>,
    kernels_compiled: usize,
    kernels: usize,
    /// Time of the optimizer steps (AdamW and the weight writes after it) since the last
    /// [`Trainer::take_times`].
    opt_times: crate::timing::Breakdown,
}

/// What one micro-step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The window's loss.
    pub loss: f32,
    /// Learning rate of the optimizer step this micro-step belongs to.
    pub lr: f32,
    /// Loss scale the backward pass used.
    pub loss_scale: f32,
    /// Whether an optimizer step followed.
    pub optimizer_step: bool,
    /// Gradient norm (after unscaling, before clipping) when an optimizer step ran.
    pub grad_norm: Option<f64>,
    /// Whether that optimizer step was skipped on overflow.
    pub skipped: bool,
}

impl Trainer {
    /// Sets up a run: loads the data, builds the backend (compiling every kernel once), and
    /// either initialises the weights from the seed or, with `cfg.resume`, restores the
    /// checkpoint.
    ///
    /// # Errors
    ///
    /// Bad configuration or data, an unloadable checkpoint, a kernel that fails to compile.
    pub fn new(cfg: &TrainConfig) -> Result<Trainer> {
        Trainer::with_backend(cfg, |spec| make_backend(cfg.compute, spec, cfg.fast))
    }

    /// [`Trainer::new`] with the backend built by `make` for the run's model (benchmarks use
    /// it to choose the compile cache); `make` returns the backend, its cold compiles and its
    /// kernel objects, as [`make_backend`] does.
    ///
    /// # Errors
    ///
    /// As [`Trainer::new`], and whatever `make` returns.
    pub fn with_backend(
        cfg: &TrainConfig,
        make: impl FnOnce(&ModelSpec) -> Result<(Box<dyn Backend>, usize, usize)>,
    ) -> Result<Trainer> {
        cfg.validate()?;
        let resumed = match (&cfg.checkpoint, cfg.resume) {
            (Some(dir), true) => {
                if !ckpt::exists(dir) {
                    return Err(Error::ckpt(
                        dir,
                        "no checkpoint to resume (state.json is missing)",
                    ));
                }
                Some(ckpt::load(dir)?)
            }
            _ => None,
        };
        let spec = match &resumed {
            Some(c) => c.state.model.clone(),
            None => cfg.model.clone(),
        };
        spec.validate()?;
        let data = match &cfg.data {
            Some(path) => TokenData::open(path, spec.seq, spec.vocab)?,
            None => TokenData::embedded(spec.seq, spec.vocab)?,
        };
        let schedule = LrSchedule {
            max_lr: cfg.lr,
            warmup: cfg.warmup,
            total: cfg.optimizer_steps(),
            min_lr_frac: cfg.min_lr_frac,
        };
        let (backend, kernels_compiled, kernels) = make(&spec)?;
        let mut t = Trainer {
            cfg: cfg.clone(),
            backend,
            params: Params::init(&spec, cfg.seed),
            grads: Params::zeros(&spec),
            adam_m: Params::zeros(&spec),
            adam_v: Params::zeros(&spec),
            ws: {
                let mut ws = Workspace::new(&spec);
                ws.set_fast_dw(cfg.fast);
                ws
            },
            cursor: DataCursor::new(cfg.seed),
            scaler: LossScaler::new(cfg.loss_scale, cfg.loss_scale_growth),
            schedule,
            step: 0,
            opt_step: 0,
            pending: 0,
            inputs: vec![0; spec.seq],
            targets: vec![0; spec.seq],
            losses: Vec::new(),
            data,
            spec,
            kernels_compiled,
            kernels,
            opt_times: crate::timing::Breakdown::default(),
        };
        if let Some(c) = resumed {
            let dir = cfg
                .checkpoint
                .as_deref()
                .expect("invariant: resumed implies a directory");
            let st = &c.state;
            if st.data_tokens != t.data.len() {
                return Err(Error::ckpt(
                    dir,
                    format!(
                        "checkpoint was trained on {} ({} tokens), not {} ({} tokens)",
                        st.data_source,
                        st.data_tokens,
                        t.data.name().display(),
                        t.data.len()
                    ),
                ));
            }
            if cfg.check_model_on_resume && cfg.model != t.spec {
                return Err(Error::ckpt(
                    dir,
                    format!(
                        "checkpoint holds model {}, not {}",
                        t.spec.name, cfg.model.name
                    ),
                ));
            }
            t.params = c.params;
            t.adam_m = c.adam_m;
            t.adam_v = c.adam_v;
            t.pending = st.step % st.accum.max(1);
            if let Some(g) = c.grads {
                t.grads = g;
            }
            t.step = st.step;
            t.opt_step = st.opt_step;
            t.scaler = st.scaler;
            t.cursor = DataCursor::from_state(st.cursor_rng, st.cursor_windows);
            t.losses.clone_from(&st.loss_history);
            if st.accum != cfg.accum && t.pending != 0 {
                return Err(Error::ckpt(
                    dir,
                    format!(
                        "checkpoint was saved inside an accumulation of {} steps; resume with --accum {}",
                        st.accum, st.accum
                    ),
                ));
            }
        }
        t.backend.load_weights(&t.params)?;
        Ok(t)
    }

    /// The model being trained.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The next micro-step's index.
    pub fn step_index(&self) -> u64 {
        self.step
    }

    /// The master weights.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Losses of every micro-step so far (including those before a resume).
    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    /// The backend (e.g. to sample with the trained kernels).
    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    /// Runs one micro-step, and the optimizer step when an accumulation completes (or the run
    /// ends).
    ///
    /// # Errors
    ///
    /// A kernel evaluation or weight write failed.
    pub fn step(&mut self) -> Result<StepOutcome> {
        self.cursor
            .next_window(&self.data, &mut self.inputs, &mut self.targets);
        let loss_scale = self.scaler.scale;
        let loss = step::forward_backward(
            self.backend.as_mut(),
            &self.params,
            &mut self.grads,
            &self.inputs,
            &self.targets,
            loss_scale,
            &mut self.ws,
        )?;
        self.losses.push(loss);
        self.step += 1;
        self.pending += 1;
        let lr = self.schedule.lr(self.opt_step);
        let mut outcome = StepOutcome {
            loss,
            lr,
            loss_scale,
            optimizer_step: false,
            grad_norm: None,
            skipped: false,
        };
        if self.pending >= self.cfg.accum || self.step >= self.cfg.steps {
            outcome.optimizer_step = true;
            let (norm, applied) = self.optimizer_step(lr)?;
            outcome.grad_norm = norm;
            outcome.skipped = !applied;
        }
        Ok(outcome)
    }

    /// Unscales, checks for overflow, clips and applies AdamW; then writes the new weights.
    fn optimizer_step(&mut self, lr: f32) -> Result<(Option<f64>, bool)> {
        let t0 = Instant::now();
        let factor = 1.0 / (self.pending as f32 * self.scaler.scale);
        self.pending = 0;
        // Σg² of the scaled accumulation; the unscale factor is applied inside AdamW.
        let sq = {
            let grads: Vec<&[f32]> = self
                .grads
                .tensors(&self.spec)
                .into_iter()
                .map(|t| t.2)
                .collect();
            optim::sum_squares_all(&grads)
        };
        let Some(sq) = sq else {
            self.scaler.update(true);
            self.grads.zero();
            let times = &mut self.opt_times;
            times.optimizer += t0.elapsed();
            times.total += t0.elapsed();
            return Ok((None, false));
        };
        self.scaler.update(false);
        let norm = sq.sqrt() * f64::from(factor);
        let clip = clip_factor(norm, self.cfg.grad_clip);
        let t = self.opt_step + 1;
        let adam = self.cfg.adam;
        let grads = self.grads.tensors_mut();
        let ms = self.adam_m.tensors_mut();
        let vs = self.adam_v.tensors_mut();
        let jobs: Vec<optim::AdamJob<'_>> = self
            .params
            .tensors_mut()
            .into_iter()
            .zip(grads)
            .zip(ms.into_iter().zip(vs))
            .map(|(((w, decay), (g, _)), ((m, _), (v, _)))| optim::AdamJob { w, g, m, v, decay })
            .collect();
        adam.update_all(jobs, factor * clip, t, lr);
        self.opt_step = t;
        let written = Instant::now();
        self.opt_times.optimizer += written - t0;
        self.backend.load_weights(&self.params)?;
        let times = &mut self.opt_times;
        times.weights += written.elapsed();
        times.total += t0.elapsed();
        Ok((Some(norm), true))
    }

    /// The time breakdown since the last call (see [`crate::timing`]), and resets it: the
    /// micro-steps' forward and backward passes, and the optimizer steps (AdamW and the
    /// weight writes that follow it).
    pub fn take_times(&mut self) -> (crate::timing::Breakdown, crate::timing::Breakdown) {
        (self.ws.take_times(), std::mem::take(&mut self.opt_times))
    }

    /// The backend (for benchmarks that time its pieces).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The state a checkpoint records.
    pub fn state(&self) -> TrainState {
        let (cursor_rng, cursor_windows) = self.cursor.state();
        TrainState {
            step: self.step,
            opt_step: self.opt_step,
            total_steps: self.cfg.steps,
            accum: self.cfg.accum,
            seed: self.cfg.seed,
            weights: self.cfg.compute.name().to_string(),
            adam: self.cfg.adam,
            schedule: self.schedule,
            scaler: self.scaler,
            grad_clip: self.cfg.grad_clip,
            data_source: self.data.name().display().to_string(),
            data_tokens: self.data.len(),
            cursor_rng,
            cursor_windows,
            last_loss: self.losses.last().copied().unwrap_or(f32::NAN),
            loss_history: self.losses.clone(),
            model: self.spec.clone(),
        }
    }

    /// Writes a checkpoint to `dir` (atomically; see [`crate::ckpt`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when writing fails.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let grads = (self.pending > 0).then_some(&self.grads);
        ckpt::save(
            dir,
            &self.state(),
            &self.params,
            &self.adam_m,
            &self.adam_v,
            grads,
        )
    }

    /// Generates `tokens` tokens after `prompt` with the current weights.
    ///
    /// # Errors
    ///
    /// A kernel evaluation failed.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &crate::sample::SampleOptions,
    ) -> Result<Vec<u32>> {
        crate::sample::generate(
            self.backend.as_mut(),
            &self.params,
            &self.spec,
            prompt,
            opts,
        )
    }
}

/// Builds the backend for `compute`; returns it with the number of cold kernel compiles and the
/// number of kernel objects.
///
/// # Errors
///
/// A kernel failed to generate, verify or compile.
pub fn make_backend(
    compute: Compute,
    spec: &ModelSpec,
    fast: bool,
) -> Result<(Box<dyn Backend>, usize, usize)> {
    match compute {
        Compute::Reference => Ok((Box::new(crate::backend::ReferenceBackend::new(spec)), 0, 0)),
        Compute::Kernels(mode) => {
            let k = crate::kernels::KernelBackend::new(spec, mode, fast)?;
            let (compiled, objects) = (k.cold_compiles(), k.kernel_count());
            Ok((Box::new(k), compiled, objects))
        }
    }
}

/// Runs a whole training configuration, reporting to `observer`; stops early (after saving a
/// checkpoint) when `stop` becomes true or the observer asks.
///
/// # Errors
///
/// Setup failures (configuration, data, checkpoint, kernel compile) and step failures.
pub fn run_config(
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
    stop: Option<&AtomicBool>,
) -> Result<Summary> {
    let setup = Instant::now();
    let mut trainer = Trainer::new(cfg)?;
    let setup_ms = setup.elapsed().as_secs_f64() * 1e3;
    let start_step = trainer.step;
    if let (true, Some(dir)) = (cfg.resume, &cfg.checkpoint) {
        observer.on_event(&Event::Resumed {
            path: dir.clone(),
            step: start_step,
        });
    }
    observer.on_start(&RunInfo {
        model: trainer.spec.name.clone(),
        params: trainer.spec.param_count(),
        weights: cfg.compute.name().to_string(),
        data: trainer.data.name().display().to_string(),
        data_tokens: trainer.data.len(),
        start_step,
        total_steps: cfg.steps,
        accum: cfg.accum,
        tokens_per_step: trainer.spec.seq,
        kernels_compiled: trainer.kernels_compiled,
        kernels: trainer.kernels,
        setup_ms,
    });
    let mut metrics = match &cfg.metrics {
        Some(path) => Some(MetricsWriter::open(path, cfg.resume)?),
        None => None,
    };
    let mut interrupted = false;
    let mut total_ms = 0.0;
    let mut run_losses = Vec::new();
    while trainer.step < cfg.steps {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) || observer.should_stop() {
            interrupted = true;
            observer.on_event(&Event::Interrupted { step: trainer.step });
            break;
        }
        let t0 = Instant::now();
        let out = trainer.step()?;
        if out.skipped {
            observer.on_event(&Event::Overflow {
                step: trainer.step - 1,
                new_scale: trainer.scaler.scale,
            });
        }
        let saving = out.optimizer_step
            && cfg.save_every > 0
            && trainer.opt_step % cfg.save_every == 0
            && trainer.step < cfg.steps;
        if let (true, Some(dir)) = (saving, &cfg.checkpoint) {
            trainer.save(dir)?;
            observer.on_event(&Event::CheckpointSaved {
                path: dir.clone(),
                step: trainer.step,
            });
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        total_ms += ms;
        run_losses.push(out.loss);
        let done = trainer.step - start_step;
        let mean_ms = total_ms / done as f64;
        let report = StepReport {
            step: trainer.step - 1,
            total_steps: cfg.steps,
            loss: out.loss,
            lr: out.lr,
            ms,
            tokens_per_s: trainer.spec.seq as f64 / (ms / 1e3).max(1e-9),
            eta_s: mean_ms * (cfg.steps - trainer.step) as f64 / 1e3,
            loss_scale: out.loss_scale,
            optimizer_step: out.optimizer_step,
            grad_norm: out.grad_norm,
            skipped: out.skipped,
        };
        if let Some(w) = metrics.as_mut() {
            w.write(&report)?;
        }
        observer.on_step(&report);
    }
    if let Some(dir) = &cfg.checkpoint {
        trainer.save(dir)?;
        observer.on_event(&Event::CheckpointSaved {
            path: dir.clone(),
            step: trainer.step,
        });
    }
    if let Some(path) = &cfg.plot {
        let points: Vec<(u64, f32)> = trainer
            .losses
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u64, l))
            .collect();
        let title = format!(
            "{} · {} · {}",
            trainer.spec.name,
            cfg.compute.name(),
            trainer.data.name().display()
        );
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("cannot create directory", parent, e))?;
        }
        std::fs::write(path, loss_curve_svg(&points, &title))
            .map_err(|e| Error::io("cannot write plot", path, e))?;
        observer.on_event(&Event::PlotWritten { path: path.clone() });
    }
    let sample = if cfg.sample_tokens > 0 && !interrupted {
        sample_text(
            &mut trainer,
            &cfg.sample_prompt,
            cfg.sample_tokens,
            cfg.seed,
        )?
    } else {
        None
    };
    let steps_run = trainer.step - start_step;
    let tail = &run_losses[run_losses.len().saturating_sub(10)..];
    let summary = Summary {
        steps_run,
        final_step: trainer.step,
        first_loss: run_losses.first().copied().unwrap_or(f32::NAN),
        last_loss: if tail.is_empty() {
            f32::NAN
        } else {
            tail.iter().sum::<f32>() / tail.len() as f32
        },
        ms_per_step: if steps_run == 0 {
            0.0
        } else {
            total_ms / steps_run as f64
        },
        interrupted,
        sample,
    };
    observer.on_finish(&summary);
    Ok(summary)
}

/// A sample from the trainer when its vocabulary is the byte-level one (other vocabularies need
/// a tokenizer, issue 7).
fn sample_text(
    trainer: &mut Trainer,
    prompt: &str,
    tokens: usize,
    seed: u64,
) -> Result<Option<String>> {
    use crate::tokenizer::{ByteTokenizer, Tokenizer};
    if trainer.spec.vocab != ByteTokenizer::VOCAB {
        return Ok(None);
    }
    let tok = ByteTokenizer;
    let opts = crate::sample::SampleOptions {
        tokens,
        temperature: 0.8,
        top_p: 0.9,
        seed,
    };
    let ids = trainer.generate(&tok.encode(prompt), &opts)?;
    Ok(Some(format!("{prompt}{}", tok.decode(&ids))))
}

/// `milbridge train`: runs the configuration the arguments describe. Ctrl-C (SIGINT) during the
/// run saves a checkpoint and returns with [`Summary::interrupted`] set; a second Ctrl-C exits
/// at once with status 130.
///
/// # Errors
///
/// As [`run_config`], plus [`Error::Config`] for bad arguments.
pub fn run(args: &crate::config::TrainArgs, observer: &mut dyn Observer) -> Result<Summary> {
    let cfg = args.config()?;
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let ids = install_interrupt(&flag);
    let result = run_config(&cfg, observer, Some(&flag));
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result
}

fn install_interrupt(flag: &std::sync::Arc<AtomicBool>) -> Vec<signal_hook::SigId> {
    use signal_hook::consts::SIGINT;
    use signal_hook::flag;
    // Order matters: the conditional exit sees the flag before the first handler sets it, so
    // only a second Ctrl-C exits immediately.
    [
        flag::register_conditional_shutdown(SIGINT, 130, std::sync::Arc::clone(flag)),
        flag::register(SIGINT, std::sync::Arc::clone(flag)),
    ]
    .into_iter()
    .filter_map(std::result::Result::ok)
    .collect()
}
