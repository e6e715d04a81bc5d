//! [`Kernel`]: a MIL program compiled once, with persistent shared-memory surfaces for its
//! inputs, weights and outputs, evaluated any number of times.
//!
//! # Buffers
//!
//! Every function parameter gets a [`SharedBuffer`] sized exactly to its declared type, and so
//! does every output. Parameters are split into *inputs* (activations) and *weights*: a kernel
//! from [`Kernel::compile_dyn`] takes the first `input_sizes.len()` parameters as inputs and the
//! rest as weights (PR #22's rule: activations first, then weights); the other constructors
//! make every parameter an input. Contents persist across evaluations until rewritten.
//!
//! # Evaluation
//!
//! [`Kernel::eval`] locks every distinct surface once (inputs and weights shared, outputs
//! exclusively, in increasing buffer-id order so two kernels evaluating concurrently over
//! chained surfaces cannot deadlock), views them as byte slices for the duration of the call
//! and hands them to the engine: no staging copy, and no allocation after the first call.
//!
//! # Chaining
//!
//! [`Kernel::bind_input_to`] makes an input slot share another kernel's output surface (an
//! `Arc`), so a chain evaluates without any copy; [`Kernel::copy_input_from`] is the copying
//! variant (`ane_bridge_copy_io`). Writes to a bound input slot go to the shared surface.
//!
//! # Prepacked weights (issue #5)
//!
//! A weight that is a GEMM operand (directly or through folded views) is kept twice: in its
//! surface, and as GEMM panels in the plan's layout ([`PackedInput`], the engine's
//! `Plan::pack_input`), which every kernel instance owns for itself (also those sharing a plan
//! through [`Kernel::from_plan`]). The panels are built by the first write (or eval) and
//! rebuilt when the weight is written
//! ([`Kernel::write_weight`], [`Kernel::write_weight_f32`] — converted and packed in one
//! sweep —, [`Kernel::write_weight_bytes`]), never per eval: eval hands them to the engine
//! (`Plan::eval_with_packed`), whose matmul then packs nothing. Each panel set remembers the
//! surface generation it reflects; a write through [`Kernel::surface`]'s buffer bumps the
//! generation, and the next eval repacks once. Writes that bump nothing (raw pointer, file
//! descriptor, another process) need [`Kernel::share_surface`] (panels off: the weight is
//! packed at every eval, as before) or [`Kernel::mark_weight_written`].
//! Both orientations are prepacked: a right operand (`matmul(x, W)`) as linalg's `PackedB`, a
//! left operand (maderix/ANE's and the trainer's `y = matmul(W, x)`) as linalg's `PackedA`,
//! whose panels are exactly those the GEMM would pack from W on every eval.
//!
//! # Cross-process use
//!
//! [`Kernel::surface`] exposes each surface (file descriptor and size) for sharing with another
//! process. The contract is the surface crate's: no other process writes a surface while this
//! kernel evaluates over it or copies in or out of it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use half::f16;
use milbridge_engine::plan::pack::PackedInput;
use milbridge_engine::{CompileOptions, IoDesc, Plan, Precision, Workspace};
use milbridge_linalg::cpu::{self, Isa};
use milbridge_mil::diag::{self, Diagnostic};
use milbridge_mil::facts::{BlobMap, BlobSource, NoBlobs};
use milbridge_mil::ir::{DType, Literal, Program, ValueDef};
use milbridge_mil::span::SourceFile;
use milbridge_surface::{ReadGuard, SharedBuffer, WriteGuard};

use crate::cache::{self, CacheConfig, CacheKey, KeyBuilder, Lookup};
use crate::error::{Error, Result, Slot};
use crate::rt;

/// The name compile diagnostics use for the MIL text (the file the ANE flow writes it to).
pub const SOURCE_NAME: &str = "model.mil";

/// Environment variable selecting the precision for [`KernelOptions::from_env`].
pub const ENV_PRECISION: &str = "ANE_BRIDGE_PRECISION";

/// The version string that goes into every cache key: a plan from another engine build is
/// never reused.
pub const ENGINE_VERSION: &str = concat!("milbridge-engine/", env!("CARGO_PKG_VERSION"));

/// Cold compiles in this process (compiles that did not come from the cache).
static COMPILE_COUNT: AtomicU64 = AtomicU64::new(0);

/// Number of cold compiles in this process: successful compiles that ran the engine's compiler.
/// A compile served from the cache does not count (maderix/ANE's `ane_bridge_get_compile_count`
/// semantics, as PR #22's test checks).
pub fn compile_count() -> u64 {
    COMPILE_COUNT.load(Ordering::Relaxed)
}

/// Sets [`compile_count`] back to zero.
pub fn reset_compile_count() {
    COMPILE_COUNT.store(0, Ordering::Relaxed);
}

/// Where compiled plans are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// As the environment says ([`CacheConfig::from_env`]): `ANE_BRIDGE_CACHE=0` disables,
    /// `ANE_BRIDGE_CACHE_DIR` overrides, default `~/.cache/ane_bridge`.
    #[default]
    FromEnv,
    /// Never read or write the cache.
    Disabled,
    /// Use this directory.
    Dir(PathBuf),
}

impl CachePolicy {
    /// The directory to use, if any.
    pub fn resolve(&self) -> CacheConfig {
        match self {
            CachePolicy::FromEnv => CacheConfig::from_env(),
            CachePolicy::Disabled => CacheConfig::Disabled,
            CachePolicy::Dir(dir) => CacheConfig::Dir(dir.clone()),
        }
    }
}

/// How to compile a kernel.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    /// Numeric profile (default [`Precision::Exact`]).
    pub precision: Precision,
    /// ISA tier; `None` = the selected tier ([`cpu::selected_isa`], capped by `MILBRIDGE_ISA`).
    pub isa: Option<Isa>,
    /// The compile cache.
    pub cache: CachePolicy,
    /// The function to compile; `None` = the entry (`main`, else the first).
    pub function: Option<String>,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            precision: Precision::Exact,
            isa: None,
            cache: CachePolicy::FromEnv,
            function: None,
        }
    }
}

impl KernelOptions {
    /// Defaults, with the precision from `ANE_BRIDGE_PRECISION` (`exact` or `fast`,
    /// case-insensitive; unset or empty = exact). This is what the C ABI uses.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for any other value.
    pub fn from_env() -> Result<KernelOptions> {
        let precision = match std::env::var(ENV_PRECISION) {
            Err(_) => Precision::Exact,
            Ok(text) => parse_precision(&text)?,
        };
        Ok(KernelOptions {
            precision,
            ..KernelOptions::default()
        })
    }

    fn isa(&self) -> Isa {
        self.isa.unwrap_or_else(cpu::selected_isa)
    }
}

/// Parses `exact` / `fast` (case-insensitive, surrounding space ignored; empty = exact).
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming the value.
pub fn parse_precision(text: &str) -> Result<Precision> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "exact" => Ok(Precision::Exact),
        "fast" => Ok(Precision::Fast),
        other => Err(Error::InvalidArgument(format!(
            "{ENV_PRECISION}=`{other}` is not a precision: expected `exact` or `fast`"
        ))),
    }
}

fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::Exact => "exact",
        Precision::Fast => "fast",
    }
}

/// A diagnostic with its 1-based line and column in the MIL text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedDiagnostic {
    /// 1-based line.
    pub line: u32,
    /// 1-based byte column.
    pub col: u32,
    /// The diagnostic.
    pub diagnostic: Diagnostic,
}

/// Places each diagnostic of a compile error in `mil_text` (the text the kernel was compiled
/// from), for callers that want positions without parsing the rendered text.
pub fn locate_diagnostics(mil_text: &str, diagnostics: &[Diagnostic]) -> Vec<LocatedDiagnostic> {
    let source = SourceFile::new(SOURCE_NAME, mil_text);
    diagnostics
        .iter()
        .map(|diagnostic| {
            let pos = source.line_col(diagnostic.primary.span.start);
            LocatedDiagnostic {
                line: pos.line,
                col: pos.col,
                diagnostic: diagnostic.clone(),
            }
        })
        .collect()
}

fn compile_error(source: &SourceFile, diagnostics: Vec<Diagnostic>) -> Error {
    let rendered = diag::render_all(source, &diagnostics);
    Error::Compile {
        diagnostics,
        rendered,
    }
}

/// One surface of a kernel, for sharing it: its buffer (with its file descriptor) and the
/// tensor it holds.
#[derive(Clone, Debug)]
pub struct Surface<'k> {
    /// The shared buffer (an `Arc`: chained kernels hold the same one).
    pub buffer: &'k Arc<SharedBuffer>,
    /// The parameter or output it holds.
    pub desc: &'k IoDesc,
}

/// How the kernel was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileSource {
    /// The engine compiled it (counted by [`compile_count`]).
    Cold,
    /// It was read from the compile cache.
    CacheHit,
}

/// A lock held on one distinct surface during [`Kernel::eval`].
enum Lock<'a> {
    Read(ReadGuard<'a>),
    Write(WriteGuard<'a>),
}

/// A compiled MIL kernel with persistent input, weight and output surfaces.
///
/// `Kernel` is `Send` and `Sync`: typed writes and reads take `&self` (each surface has its own
/// lock), evaluation and rebinding take `&mut self`.
pub struct Kernel {
    plan: Plan,
    workspace: Workspace,
    /// Surfaces of the function parameters in order: inputs, then weights.
    params: Vec<Arc<SharedBuffer>>,
    n_inputs: usize,
    outputs: Vec<Arc<SharedBuffer>>,
    /// Distinct surfaces to lock in eval, in increasing id order: (is_output, index).
    lock_order: Vec<(bool, usize)>,
    /// For each parameter, its position in `lock_order`.
    param_lock: Vec<usize>,
    /// For each position in `lock_order`, the output it is (for write locks).
    lock_output: Vec<usize>,
    source: CompileSource,
    key: Option<CacheKey>,
    /// Packed GEMM panels of each weight (one entry per weight; see [`WeightPanels`]).
    panels: Vec<Mutex<WeightPanels>>,
    // Reused allocations for eval (always empty between calls; see `recycle_*`).
    scratch_locks: rt::SpareVec<Lock<'static>>,
    scratch_inputs: Vec<&'static [u8]>,
    scratch_views: Vec<&'static [u8]>,
    scratch_outputs: Vec<Option<&'static mut [u8]>>,
    scratch_outputs2: Vec<&'static mut [u8]>,
    scratch_packed: Vec<Option<&'static PackedInput>>,
}

/// The generation of panels that reflect no surface contents (never a real generation: a
/// surface would need 2⁶⁴ writes).
const STALE: u64 = u64::MAX;

/// One weight's prepacked GEMM panels (issue #5): built when the weight is first written (or
/// at the first eval), repacked by later writes, used by every eval while the weight
/// surface's generation still equals the one they were built from.
#[derive(Debug)]
struct WeightPanels {
    /// The weight feeds a GEMM that can take it prepacked.
    packable: bool,
    /// The panels; `None` until first built, and always for a weight that is not packable.
    packed: Option<PackedInput>,
    /// The surface generation the panels reflect ([`STALE`]: none).
    generation: u64,
    /// The surface was shared for writes the kernel cannot see ([`Kernel::share_surface`]):
    /// the panels are not used, and each eval packs the weight itself.
    shared: bool,
}

impl WeightPanels {
    /// The panels, if they may be used with a surface now at `generation`.
    fn current(&self, generation: u64) -> Option<&PackedInput> {
        match &self.packed {
            Some(packed) if !self.shared && self.generation == generation => Some(packed),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("inputs", &self.n_inputs)
            .field("weights", &(self.params.len() - self.n_inputs))
            .field("outputs", &self.outputs.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The weight files as loaded for the cache key, so verification sees the very same bytes; a
/// file that failed to load is asked of the original source again, for its precise error
/// (E150 missing, E155 escaping the model root, ...).
struct Snapshot<'a> {
    loaded: &'a BlobMap,
    source: &'a dyn BlobSource,
}

impl BlobSource for Snapshot<'_> {
    fn load(
        &self,
        path: &str,
    ) -> std::result::Result<Arc<[u8]>, milbridge_mil::facts::BlobLoadError> {
        self.loaded.load(path).or_else(|_| self.source.load(path))
    }
}

/// The weight files a program names (BLOBFILE paths), sorted and deduplicated.
fn blob_paths(program: &Program) -> Vec<String> {
    let mut paths: Vec<String> = program
        .functions
        .iter()
        .flat_map(|(_, func)| func.values.iter())
        .filter_map(|(_, value)| match &value.def {
            ValueDef::Literal(Literal::Blob(blob)) => Some(blob.path.clone()),
            _ => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

impl Kernel {
    /// Compiles `mil_text`, reading BLOBFILE weights from `blobs` (a [`BlobMap`], a
    /// [`ModelDir`](crate::blobs::ModelDir), or [`NoBlobs`]). Every function parameter becomes
    /// an input surface.
    ///
    /// # Errors
    ///
    /// [`Error::Compile`] with diagnostics when the program does not parse or verify; engine
    /// and surface errors otherwise.
    pub fn compile(
        mil_text: &str,
        blobs: &dyn BlobSource,
        options: &KernelOptions,
    ) -> Result<Kernel> {
        Kernel::build(mil_text, blobs, None, options)
    }

    /// Compiles with in-memory weight files named as the program writes them
    /// (`@model_path/weights/wq.bin`), like `ane_bridge_compile_multi_weights`.
    ///
    /// # Errors
    ///
    /// As [`Kernel::compile`].
    pub fn compile_multi_weights(
        mil_text: &str,
        weights: &[(&str, &[u8])],
        options: &KernelOptions,
    ) -> Result<Kernel> {
        let mut map = BlobMap::new();
        for (name, bytes) in weights {
            map.insert(*name, bytes.to_vec());
        }
        Kernel::compile(mil_text, &map, options)
    }

    /// Compiles a dynamic-weight kernel (PR #22): the program's parameters are
    /// `input_sizes.len()` activations followed by `weight_sizes.len()` weights, and its outputs
    /// have `output_sizes`. Every size is the byte size of the declared type and is checked.
    ///
    /// # Errors
    ///
    /// [`Error::Arity`] or [`Error::Size`] when the sizes disagree with the program's signature;
    /// otherwise as [`Kernel::compile`].
    pub fn compile_dyn(
        mil_text: &str,
        input_sizes: &[usize],
        weight_sizes: &[usize],
        output_sizes: &[usize],
        options: &KernelOptions,
    ) -> Result<Kernel> {
        let kernel = Kernel::build(mil_text, &NoBlobs, Some(input_sizes.len()), options)?;
        kernel.check_sizes(input_sizes, weight_sizes, output_sizes)?;
        Ok(kernel)
    }

    /// Checks the caller's byte sizes against the kernel's signature: counts first, then each
    /// size. The C ABI's compile functions call it with the sizes they were given.
    ///
    /// # Errors
    ///
    /// [`Error::Arity`] for a count, [`Error::Size`] for the first size that differs.
    pub fn check_sizes(
        &self,
        input_sizes: &[usize],
        weight_sizes: &[usize],
        output_sizes: &[usize],
    ) -> Result<()> {
        let families = [
            (Slot::Input, input_sizes, self.n_inputs()),
            (Slot::Weight, weight_sizes, self.n_weights()),
            (Slot::Output, output_sizes, self.n_outputs()),
        ];
        for (slot, sizes, count) in families {
            if sizes.len() != count {
                return Err(Error::Arity {
                    slot,
                    expected: count,
                    given: sizes.len(),
                });
            }
        }
        for (slot, sizes, _) in families {
            for (index, &given) in sizes.iter().enumerate() {
                let desc = self.desc(slot, index)?;
                if desc.byte_len != given {
                    return Err(self.size_error(slot, index, given));
                }
            }
        }
        Ok(())
    }

    fn build(
        mil_text: &str,
        blobs: &dyn BlobSource,
        n_inputs: Option<usize>,
        options: &KernelOptions,
    ) -> Result<Kernel> {
        let source = SourceFile::new(SOURCE_NAME, mil_text);
        let (program, parse_diags) = milbridge_mil::lower::parse(mil_text);
        if diag::has_errors(&parse_diags) {
            return Err(compile_error(&source, parse_diags));
        }
        let isa = options.isa();

        // Load every weight file once; they feed both the key and verification. A file that
        // cannot be loaded disables the cache for this compile, and verification reports it.
        let mut loaded = BlobMap::new();
        let mut weights_for_key = Some(Vec::new());
        for path in blob_paths(&program) {
            match blobs.load(&path) {
                Ok(bytes) => {
                    if let Some(list) = weights_for_key.as_mut() {
                        list.push((path.clone(), bytes.clone()));
                    }
                    loaded.insert(path, bytes);
                }
                Err(_) => {
                    weights_for_key = None;
                }
            }
        }
        let cache_config = options.cache.resolve();
        let key = weights_for_key
            .filter(|_| cache_config.dir().is_some())
            .map(|weights| {
                let mut builder = KeyBuilder::new(
                    ENGINE_VERSION,
                    isa.name(),
                    precision_name(options.precision),
                    options.function.as_deref(),
                )
                .mil(mil_text)
                .extra(
                    "plan-format",
                    &milbridge_engine::plan::serial::FORMAT_VERSION.to_le_bytes(),
                )
                .extra("fusion", &[u8::from(milbridge_engine::fusion_enabled())]);
                for (path, bytes) in &weights {
                    builder = builder.weight(path, bytes);
                }
                builder.finish()
            });

        let mut plan = None;
        if let (Some(dir), Some(key)) = (cache_config.dir(), key.as_ref()) {
            match cache::load(dir, key) {
                Lookup::Hit(payload) => match Plan::from_bytes(&payload) {
                    Ok(restored) => plan = Some(restored),
                    Err(err) => {
                        // Checksummed but unreadable by this engine: never trusted, recompiled.
                        let _ = cache::reject(&cache::entry_path(dir, key), err.to_string());
                    }
                },
                Lookup::Miss | Lookup::Corrupt(_) => {}
            }
        }
        let (plan, compile_source) = match plan {
            Some(plan) => (plan, CompileSource::CacheHit),
            None => {
                let folder = milbridge_engine::reference::ReferenceFolder;
                let snapshot = Snapshot {
                    loaded: &loaded,
                    source: blobs,
                };
                let verify_options = milbridge_mil::verify::VerifyOptions {
                    blobs: &snapshot,
                    folder: Some(&folder),
                    ..milbridge_mil::verify::VerifyOptions::default()
                };
                let verified = milbridge_mil::verify::verify(program, &verify_options)
                    .map_err(|diagnostics| compile_error(&source, diagnostics))?;
                let compile_options = CompileOptions {
                    function: options.function.clone(),
                    isa,
                    precision: options.precision,
                    ..CompileOptions::default()
                };
                let plan = milbridge_engine::compile(&verified, &compile_options)?;
                COMPILE_COUNT.fetch_add(1, Ordering::Relaxed);
                if let (Some(dir), Some(key)) = (cache_config.dir(), key.as_ref()) {
                    // A cache that cannot be written only costs the next compile its hit.
                    let _ = cache::store(dir, key, &plan.to_bytes());
                }
                (plan, CompileSource::Cold)
            }
        };
        Kernel::from_plan(plan, n_inputs, compile_source, key)
    }

    /// Wraps a plan: allocates one zero-filled surface per parameter and output. With
    /// `n_inputs = Some(n)` the parameters after the first `n` are weights.
    ///
    /// # Errors
    ///
    /// [`Error::Arity`] when `n` exceeds the parameter count; surface allocation errors.
    pub fn from_plan(
        plan: Plan,
        n_inputs: Option<usize>,
        source: CompileSource,
        key: Option<CacheKey>,
    ) -> Result<Kernel> {
        let n_params = plan.inputs().len();
        let n_inputs = n_inputs.unwrap_or(n_params);
        if n_inputs > n_params {
            return Err(Error::Arity {
                slot: Slot::Input,
                expected: n_params,
                given: n_inputs,
            });
        }
        let surface = |desc: &IoDesc| SharedBuffer::new(desc.byte_len.max(1)).map(Arc::new);
        let params = plan
            .inputs()
            .iter()
            .map(surface)
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = plan
            .outputs()
            .iter()
            .map(surface)
            .collect::<Result<Vec<_>, _>>()?;
        let workspace = plan.workspace();
        let panels = (n_inputs..n_params)
            .map(|param| {
                // Right operands are packed as `PackedB`, left operands (`y = matmul(W, x)`)
                // as `PackedA` in their own orientation. Lazily: a new surface holds zeros
                // that the caller is about to overwrite, so the panels are built by the first
                // write (or the first eval, if that comes first), not here.
                Ok(Mutex::new(WeightPanels {
                    packable: !plan.weight_gemm_uses(param).is_empty(),
                    packed: None,
                    generation: STALE,
                    shared: false,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut kernel = Kernel {
            plan,
            workspace,
            params,
            n_inputs,
            outputs,
            lock_order: Vec::new(),
            param_lock: Vec::new(),
            lock_output: Vec::new(),
            source,
            key,
            panels,
            scratch_locks: rt::SpareVec::new(),
            scratch_inputs: Vec::new(),
            scratch_views: Vec::new(),
            scratch_outputs: Vec::new(),
            scratch_outputs2: Vec::new(),
            scratch_packed: Vec::new(),
        };
        kernel.plan_locks();
        Ok(kernel)
    }

    /// Recomputes the lock order after the surfaces changed (compile, bind, unbind).
    fn plan_locks(&mut self) {
        let mut distinct: BTreeMap<u64, (bool, usize)> = BTreeMap::new();
        for (idx, buffer) in self.outputs.iter().enumerate() {
            distinct.insert(buffer.id(), (true, idx));
        }
        for (idx, buffer) in self.params.iter().enumerate() {
            distinct.entry(buffer.id()).or_insert((false, idx));
        }
        self.lock_order = distinct.values().copied().collect();
        let position: BTreeMap<u64, usize> = distinct
            .keys()
            .enumerate()
            .map(|(pos, &id)| (id, pos))
            .collect();
        self.param_lock = self
            .params
            .iter()
            .map(|buffer| position[&buffer.id()])
            .collect();
        self.lock_output = self
            .lock_order
            .iter()
            .map(|&(is_output, idx)| if is_output { idx } else { usize::MAX })
            .collect();
    }

    /// Evaluates the kernel over its surfaces. Outputs are overwritten; inputs and weights are
    /// left as they are.
    ///
    /// # Errors
    ///
    /// Engine run-time errors (R002–R004).
    pub fn eval(&mut self) -> Result<()> {
        self.refresh_panels()?;
        let mut locks = recycle_locks(self.scratch_locks.take());
        for &(is_output, idx) in &self.lock_order {
            locks.push(if is_output {
                Lock::Write(self.outputs[idx].lock_write())
            } else {
                Lock::Read(self.params[idx].lock_read())
            });
        }
        let mut inputs = recycle_inputs(std::mem::take(&mut self.scratch_inputs));
        let mut by_output = recycle_outputs(std::mem::take(&mut self.scratch_outputs));
        by_output.resize_with(self.outputs.len(), || None);
        let mut read_views = recycle_inputs(std::mem::take(&mut self.scratch_views));
        for (pos, lock) in locks.iter_mut().enumerate() {
            match lock {
                Lock::Read(guard) => read_views.push(rt::read_view(guard)),
                Lock::Write(guard) => {
                    read_views.push(&[]);
                    by_output[self.lock_output[pos]] = Some(rt::write_view(guard));
                }
            }
        }
        inputs.extend(self.param_lock.iter().map(|&pos| read_views[pos]));
        let mut outputs = recycle_outputs2(std::mem::take(&mut self.scratch_outputs2));
        outputs.extend(
            by_output
                .iter_mut()
                .map(|slot| slot.take().expect("every output surface is write-locked")),
        );
        // Each weight's panels, if they reflect the surface as it is now (its generation is
        // read under the eval's read lock, so it cannot change before the eval ends).
        let mut packed = recycle_packed(std::mem::take(&mut self.scratch_packed));
        packed.resize(self.n_inputs, None);
        for (weight, panels) in self.panels.iter_mut().enumerate() {
            let panels = panels.get_mut().unwrap_or_else(PoisonError::into_inner);
            packed.push(panels.current(self.params[self.n_inputs + weight].generation()));
        }
        let result =
            self.plan
                .eval_with_packed(&mut self.workspace, &inputs, &packed, &mut outputs);
        self.scratch_packed = recycle_packed(packed);
        self.scratch_outputs2 = recycle_outputs2(outputs);
        self.scratch_outputs = recycle_outputs(by_output);
        self.scratch_inputs = recycle_inputs(inputs);
        self.scratch_views = recycle_inputs(read_views);
        self.scratch_locks.put(recycle_locks(locks));
        result.map_err(Error::from)
    }

    /// Repacks the panels of every weight whose surface changed since they were built (a
    /// write through [`Kernel::surface`]'s buffer, or [`Kernel::mark_weight_written`]), once.
    fn refresh_panels(&mut self) -> Result<()> {
        for (weight, panels) in self.panels.iter_mut().enumerate() {
            let panels = panels.get_mut().unwrap_or_else(PoisonError::into_inner);
            let param = self.n_inputs + weight;
            let buffer = &self.params[param];
            if !panels.packable || panels.shared || buffer.generation() == panels.generation {
                continue;
            }
            let guard = buffer.lock_read();
            // Read under the lock: no write can land between it and the repack.
            let generation = buffer.generation();
            let len = self.plan.inputs()[param].byte_len;
            let bytes = &rt::read_view(&guard)[..len];
            panels.generation = STALE;
            match panels.packed.as_mut() {
                Some(packed) => self.plan.repack_input(packed, bytes)?,
                None => panels.packed = Some(self.plan.pack_input(param, bytes)?),
            }
            panels.generation = generation;
        }
        Ok(())
    }

    /// Stores `data` into weight `index` (size and dtype already checked) and refreshes its
    /// panels from the stored bytes under the same write lock: one pass for f32 values into an
    /// fp16 weight (converted and packed block by block), a copy then a repack otherwise.
    fn write_weight_data(&self, index: usize, data: WeightData<'_>) -> Result<()> {
        let buffer = self.buffer(Slot::Weight, index)?;
        let len = self.desc(Slot::Weight, index)?.byte_len;
        let dtype = self.dtype_of(Slot::Weight, index)?;
        let mut panels = self.panels[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let panels = &mut *panels;
        let mut guard = buffer.lock_write();
        // No other write can bump the generation while this guard is held; its release adds 1.
        let generation = buffer.generation();
        panels.generation = STALE;
        let packed = if panels.shared {
            None
        } else {
            panels.packed.as_mut()
        };
        let result = match (data, packed) {
            (WeightData::F32(values), Some(packed)) => {
                let bytes = &mut rt::write_view(&mut guard)[..len];
                self.plan
                    .repack_input_f32(packed, values, bytes)
                    .map_err(Error::from)
            }
            (WeightData::F32(values), None) if dtype == DType::Fp16 => {
                milbridge_linalg::convert::f32_to_f16(values, rt::write_view_f16(&mut guard));
                Ok(())
            }
            (data, packed) => {
                let stored = match data {
                    WeightData::Bytes(bytes) => guard.write_bytes(0, bytes),
                    WeightData::F16(values) => guard.write_slice(0, values),
                    WeightData::F32(values) => guard.write_slice(0, values),
                };
                match (stored, packed) {
                    (Err(err), _) => Err(Error::from(err)),
                    (Ok(()), None) => Ok(()),
                    (Ok(()), Some(packed)) => {
                        let bytes = &rt::write_view(&mut guard)[..len];
                        self.plan.repack_input(packed, bytes).map_err(Error::from)
                    }
                }
            }
        };
        // The first write of a packable weight builds its panels from the stored bytes.
        let result = match result {
            Ok(()) if panels.packable && !panels.shared && panels.packed.is_none() => {
                let bytes = &rt::write_view(&mut guard)[..len];
                self.plan
                    .pack_input(self.n_inputs + index, bytes)
                    .map(|packed| panels.packed = Some(packed))
                    .map_err(Error::from)
            }
            result => result,
        };
        drop(guard);
        if result.is_ok() && !panels.shared {
            panels.generation = generation + 1;
        }
        result
    }

    /// The surface of a slot, for writes the kernel cannot see: through its file descriptor
    /// (another process, `mmap`, `pwrite`) or its raw pointer. For a weight this turns its
    /// prepacked panels off for good: from now on every eval packs the weight from the surface
    /// itself (the cost before issue #5), since such writes bump no generation. Writes through
    /// the buffer's safe methods need no such care (see [`Kernel::surface`]).
    ///
    /// # Errors
    ///
    /// [`Error::Index`] when out of range.
    pub fn share_surface(&self, slot: Slot, index: usize) -> Result<Surface<'_>> {
        let surface = self.surface(slot, index)?;
        if slot == Slot::Weight {
            self.panels[index]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .shared = true;
        }
        Ok(surface)
    }

    /// Tells the kernel that weight `index` was written behind its back (through the raw
    /// pointer of [`Kernel::surface`]'s buffer, say): its panels are repacked once, at the next
    /// eval.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] when out of range.
    pub fn mark_weight_written(&self, index: usize) -> Result<()> {
        self.check_index(Slot::Weight, index)?;
        self.panels[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generation = STALE;
        Ok(())
    }

    /// Whether weight `index` has prepacked GEMM panels that the next eval will use (after
    /// building or repacking them if the surface changed since the last write). `false` for a weight that feeds no GEMM, for a
    /// shared surface ([`Kernel::share_surface`]), for a portable plan, and for an index out of
    /// range.
    pub fn weight_is_prepacked(&self, index: usize) -> bool {
        self.panels.get(index).is_some_and(|panels| {
            let panels = panels.lock().unwrap_or_else(PoisonError::into_inner);
            panels.packable && !panels.shared
        })
    }

    // ----- shape of the kernel -----

    /// Activation inputs.
    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }

    /// Weight parameters (0 unless compiled with [`Kernel::compile_dyn`]).
    pub fn n_weights(&self) -> usize {
        self.params.len() - self.n_inputs
    }

    /// Outputs.
    pub fn n_outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Whether the plan came from the engine or from the cache.
    pub fn compile_source(&self) -> CompileSource {
        self.source
    }

    /// The cache key (None when the cache was disabled or a weight file was missing).
    pub fn cache_key(&self) -> Option<&CacheKey> {
        self.key.as_ref()
    }

    /// The compiled plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Turns on (or resets) the per-step profile of this kernel's evaluations: each plan
    /// step's wall time is summed into [`Kernel::step_times`] (engine
    /// [`Workspace::profile_steps`]).
    pub fn profile_steps(&mut self) {
        self.workspace.profile_steps(&self.plan);
    }

    /// Wall time of each step of [`Kernel::plan`] (in [`Plan::steps`] order) summed over the
    /// evaluations since [`Kernel::profile_steps`]; `None` when profiling is off.
    pub fn step_times(&self) -> Option<&[std::time::Duration]> {
        self.workspace.step_times()
    }

    fn family_len(&self, slot: Slot) -> usize {
        match slot {
            Slot::Input => self.n_inputs(),
            Slot::Weight => self.n_weights(),
            Slot::Output => self.n_outputs(),
        }
    }

    fn check_index(&self, slot: Slot, index: usize) -> Result<()> {
        let count = self.family_len(slot);
        if index < count {
            Ok(())
        } else {
            Err(Error::Index {
                slot,
                index: i64::try_from(index).unwrap_or(i64::MAX),
                count,
            })
        }
    }

    /// Checks an index as a C caller gives it (possibly negative) and returns it as `usize`.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] (showing the index as given) when negative or out of range.
    pub fn check_slot(&self, slot: Slot, index: i64) -> Result<usize> {
        let count = self.family_len(slot);
        match usize::try_from(index) {
            Ok(idx) if idx < count => Ok(idx),
            _ => Err(Error::Index { slot, index, count }),
        }
    }

    /// The parameter or output a slot holds.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] when out of range.
    pub fn desc(&self, slot: Slot, index: usize) -> Result<&IoDesc> {
        self.check_index(slot, index)?;
        Ok(match slot {
            Slot::Input => &self.plan.inputs()[index],
            Slot::Weight => &self.plan.inputs()[self.n_inputs + index],
            Slot::Output => &self.plan.outputs()[index],
        })
    }

    fn buffer(&self, slot: Slot, index: usize) -> Result<&Arc<SharedBuffer>> {
        self.check_index(slot, index)?;
        Ok(match slot {
            Slot::Input => &self.params[index],
            Slot::Weight => &self.params[self.n_inputs + index],
            Slot::Output => &self.outputs[index],
        })
    }

    /// A surface (its buffer and what it holds), to share its file descriptor and size.
    ///
    /// Writing a weight through the buffer's safe methods (`write_bytes`, `write_f16`,
    /// `copy_to`, a write guard, ...) bumps its generation, and the next eval repacks the
    /// weight's GEMM panels once. Writes the kernel cannot see (the buffer's raw pointer or
    /// file descriptor) need [`Kernel::share_surface`] first, or
    /// [`Kernel::mark_weight_written`] after each one.
    ///
    /// # Errors
    ///
    /// [`Error::Index`] when out of range.
    pub fn surface(&self, slot: Slot, index: usize) -> Result<Surface<'_>> {
        Ok(Surface {
            buffer: self.buffer(slot, index)?,
            desc: self.desc(slot, index)?,
        })
    }

    fn size_error(&self, slot: Slot, index: usize, given: usize) -> Error {
        match self.desc(slot, index) {
            Ok(desc) => Error::Size {
                slot,
                index,
                name: desc.name.clone(),
                ty: type_text(desc),
                expected: desc.byte_len,
                given,
            },
            Err(err) => err,
        }
    }

    fn exact_size(&self, slot: Slot, index: usize, given: usize) -> Result<&Arc<SharedBuffer>> {
        let buffer = self.buffer(slot, index)?;
        if self.desc(slot, index)?.byte_len != given {
            return Err(self.size_error(slot, index, given));
        }
        Ok(buffer)
    }

    fn dtype_of(&self, slot: Slot, index: usize) -> Result<DType> {
        Ok(self.desc(slot, index)?.ty.dtype)
    }

    fn dtype_error(
        &self,
        slot: Slot,
        index: usize,
        what: &'static str,
        needed: &'static str,
    ) -> Error {
        match self.desc(slot, index) {
            Ok(desc) => Error::DType {
                slot,
                index,
                name: desc.name.clone(),
                dtype: desc.ty.dtype.name(),
                what,
                needed,
            },
            Err(err) => err,
        }
    }

    // ----- raw byte access (the C ABI's functions) -----

    /// Copies `bytes` into a surface; `bytes.len()` must equal the surface size.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`].
    pub fn write_bytes(&self, slot: Slot, index: usize, bytes: &[u8]) -> Result<()> {
        if slot == Slot::Output {
            return Err(Error::InvalidArgument(format!(
                "output {index} cannot be written, only read"
            )));
        }
        let buffer = self.exact_size(slot, index, bytes.len())?;
        if slot == Slot::Weight {
            return self.write_weight_data(index, WeightData::Bytes(bytes));
        }
        buffer.write_bytes(0, bytes)?;
        Ok(())
    }

    /// Copies a whole surface into `bytes`; `bytes.len()` must equal the surface size. Any
    /// slot may be read.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`].
    pub fn read_bytes(&self, slot: Slot, index: usize, bytes: &mut [u8]) -> Result<()> {
        self.exact_size(slot, index, bytes.len())?
            .read_bytes(0, bytes)?;
        Ok(())
    }

    /// Writes raw bytes (in the declared dtype) to input `index` (`ane_bridge_write_input`).
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`].
    pub fn write_input(&self, index: usize, bytes: &[u8]) -> Result<()> {
        self.write_bytes(Slot::Input, index, bytes)
    }

    /// Writes raw bytes to weight `index` (`ane_bridge_write_weight`).
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`].
    pub fn write_weight_bytes(&self, index: usize, bytes: &[u8]) -> Result<()> {
        self.write_bytes(Slot::Weight, index, bytes)
    }

    /// Reads output `index` as raw bytes (`ane_bridge_read_output`).
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`].
    pub fn read_output(&self, index: usize, bytes: &mut [u8]) -> Result<()> {
        self.read_bytes(Slot::Output, index, bytes)
    }

    // ----- typed access -----

    fn write_f16_slot(&self, slot: Slot, index: usize, values: &[f16]) -> Result<()> {
        if self.dtype_of(slot, index)? != DType::Fp16 {
            return Err(self.dtype_error(slot, index, "an fp16 write", "fp16"));
        }
        let buffer = self.exact_size(slot, index, values.len() * 2)?;
        if slot == Slot::Weight {
            return self.write_weight_data(index, WeightData::F16(values));
        }
        buffer.write_f16(0, values)?;
        Ok(())
    }

    /// f32 values into an fp32 tensor (copied) or an fp16 tensor (converted, round to nearest
    /// even, at memory bandwidth with F16C / AVX-512 where present).
    fn write_f32_slot(&self, slot: Slot, index: usize, values: &[f32]) -> Result<()> {
        if slot == Slot::Weight {
            let elem = match self.dtype_of(slot, index)? {
                DType::Fp32 => 4,
                DType::Fp16 => 2,
                _ => return Err(self.dtype_error(slot, index, "an f32 write", "fp16 or fp32")),
            };
            self.exact_size(slot, index, values.len() * elem)?;
            return self.write_weight_data(index, WeightData::F32(values));
        }
        match self.dtype_of(slot, index)? {
            DType::Fp32 => {
                self.exact_size(slot, index, values.len() * 4)?
                    .write_f32(0, values)?;
            }
            DType::Fp16 => {
                let buffer = self.exact_size(slot, index, values.len() * 2)?;
                let mut guard = buffer.lock_write();
                milbridge_linalg::convert::f32_to_f16(values, rt::write_view_f16(&mut guard));
            }
            _ => return Err(self.dtype_error(slot, index, "an f32 write", "fp16 or fp32")),
        }
        Ok(())
    }

    /// Writes fp16 values to input `index` (an fp16 tensor; the count must match).
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`], [`Error::Size`].
    pub fn write_input_f16(&self, index: usize, values: &[f16]) -> Result<()> {
        self.write_f16_slot(Slot::Input, index, values)
    }

    /// Writes f32 values to input `index`: copied into an fp32 tensor, converted into an fp16
    /// one.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`], [`Error::Size`].
    pub fn write_input_f32(&self, index: usize, values: &[f32]) -> Result<()> {
        self.write_f32_slot(Slot::Input, index, values)
    }

    /// Writes `values` (`n × cols`, row-major) into the block of rows `row_start..row_start + n`
    /// and columns `col_start..col_start + cols` of input `index`, viewed as a
    /// `rows × width` matrix (`width` = its last dimension) — one section of a packed input,
    /// leaving everything else (e.g. resident weights) untouched. Converted to fp16 for an
    /// fp16 input, copied for an fp32 one.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`]; [`Error::InvalidArgument`] when `cols` is 0 with
    /// values given, `values` is not a whole number of rows, or the block falls outside the
    /// input.
    pub fn write_input_region_f32(
        &self,
        index: usize,
        (row_start, col_start): (usize, usize),
        cols: usize,
        values: &[f32],
    ) -> Result<()> {
        let desc = self.desc(Slot::Input, index)?;
        let width = desc.ty.shape.last().copied().unwrap_or(1);
        let numel = desc.ty.numel();
        let rows = numel.checked_div(width).unwrap_or(0);
        let n = values.len().checked_div(cols).unwrap_or(0);
        let fits = (cols > 0 || values.is_empty())
            && n * cols == values.len()
            && col_start.checked_add(cols).is_some_and(|end| end <= width)
            && row_start.checked_add(n).is_some_and(|end| end <= rows);
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "input {index} (`{}`, {rows} x {width}): a block at row {row_start}, column \
                 {col_start}, {cols} columns wide, with {} values does not fit",
                desc.name,
                values.len(),
            )));
        }
        if values.is_empty() {
            return Ok(());
        }
        let buffer = self.buffer(Slot::Input, index)?;
        match desc.ty.dtype {
            DType::Fp16 => {
                let mut guard = buffer.lock_write();
                let view = rt::write_view_f16(&mut guard);
                for (r, src) in values.chunks_exact(cols).enumerate() {
                    let at = (row_start + r) * width + col_start;
                    milbridge_linalg::convert::f32_to_f16(src, &mut view[at..at + cols]);
                }
            }
            DType::Fp32 => {
                for (r, src) in values.chunks_exact(cols).enumerate() {
                    buffer.write_f32((row_start + r) * width + col_start, src)?;
                }
            }
            _ => {
                return Err(self.dtype_error(
                    Slot::Input,
                    index,
                    "an f32 region write",
                    "fp16 or fp32",
                ));
            }
        }
        Ok(())
    }

    /// Writes fp16 values to weight `index` (a bounds-checked copy into the persistent
    /// surface).
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`], [`Error::Size`].
    pub fn write_weight(&self, index: usize, values: &[f16]) -> Result<()> {
        self.write_f16_slot(Slot::Weight, index, values)
    }

    /// Writes f32 values to weight `index`, converting to fp16 at memory bandwidth for an fp16
    /// weight (`ane_bridge_write_weight_f32`), copying for an fp32 one.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`], [`Error::Size`].
    pub fn write_weight_f32(&self, index: usize, values: &[f32]) -> Result<()> {
        self.write_f32_slot(Slot::Weight, index, values)
    }

    /// Reads output `index` (an fp16 tensor) into `values`.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`], [`Error::Size`].
    pub fn read_output_f16(&self, index: usize, values: &mut [f16]) -> Result<()> {
        if self.dtype_of(Slot::Output, index)? != DType::Fp16 {
            return Err(self.dtype_error(Slot::Output, index, "an fp16 read", "fp16"));
        }
        self.exact_size(Slot::Output, index, values.len() * 2)?
            .read_f16(0, values)?;
        Ok(())
    }

    /// Reads output `index` as f32: copied from an fp32 tensor, converted (exactly) from an
    /// fp16 one.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::DType`], [`Error::Size`].
    pub fn read_output_f32(&self, index: usize, values: &mut [f32]) -> Result<()> {
        match self.dtype_of(Slot::Output, index)? {
            DType::Fp32 => {
                self.exact_size(Slot::Output, index, values.len() * 4)?
                    .read_f32(0, values)?;
            }
            DType::Fp16 => {
                let buffer = self.exact_size(Slot::Output, index, values.len() * 2)?;
                let guard = buffer.lock_read();
                milbridge_linalg::convert::f16_to_f32(rt::read_view_f16(&guard), values);
            }
            _ => return Err(self.dtype_error(Slot::Output, index, "an f32 read", "fp16 or fp32")),
        }
        Ok(())
    }

    /// Reads output `index` into a new `Vec<f32>` (see [`Kernel::read_output_f32`]).
    ///
    /// # Errors
    ///
    /// As [`Kernel::read_output_f32`].
    pub fn output_f32(&self, index: usize) -> Result<Vec<f32>> {
        let numel = self.desc(Slot::Output, index)?.ty.numel();
        let mut values = vec![0.0; numel];
        self.read_output_f32(index, &mut values)?;
        Ok(values)
    }

    // ----- chaining -----

    /// Copies output `src_out` of `src` into this kernel's input `in_idx`
    /// (`ane_bridge_copy_io`). Both must have the same byte size.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`].
    pub fn copy_input_from(&self, in_idx: usize, src: &Kernel, src_out: usize) -> Result<()> {
        let from = src.buffer(Slot::Output, src_out)?;
        let to = self.exact_size(Slot::Input, in_idx, from.len())?;
        from.copy_to(to)?;
        Ok(())
    }

    /// Makes input `in_idx` share output `src_out` of `src` (zero-copy chaining): after
    /// `src.eval()`, this kernel's eval reads `src`'s result in place. The input's own surface
    /// is released (unless shared elsewhere). Both tensors must have the same dtype and byte
    /// size.
    ///
    /// # Errors
    ///
    /// [`Error::Index`], [`Error::Size`], [`Error::DType`]; [`Error::InvalidArgument`] when the
    /// surface is one of this kernel's own outputs (an eval would read what it writes).
    pub fn bind_input_to(&mut self, in_idx: usize, src: &Kernel, src_out: usize) -> Result<()> {
        let from = src.buffer(Slot::Output, src_out)?;
        let src_desc = src.desc(Slot::Output, src_out)?;
        self.exact_size(Slot::Input, in_idx, src_desc.byte_len)?;
        let own = self.desc(Slot::Input, in_idx)?;
        if own.ty.dtype != src_desc.ty.dtype {
            return Err(Error::DType {
                slot: Slot::Input,
                index: in_idx,
                name: own.name.clone(),
                dtype: own.ty.dtype.name(),
                what: "binding to an output",
                needed: src_desc.ty.dtype.name(),
            });
        }
        if self.outputs.iter().any(|out| out.id() == from.id()) {
            return Err(Error::InvalidArgument(format!(
                "input {in_idx} cannot be bound to one of the same kernel's outputs"
            )));
        }
        self.params[in_idx] = Arc::clone(from);
        self.plan_locks();
        Ok(())
    }

    /// Gives input `in_idx` a fresh private (zero-filled) surface, undoing
    /// [`Kernel::bind_input_to`].
    ///
    /// # Errors
    ///
    /// [`Error::Index`]; surface allocation errors.
    pub fn unbind_input(&mut self, in_idx: usize) -> Result<()> {
        let len = self.desc(Slot::Input, in_idx)?.byte_len;
        self.params[in_idx] = Arc::new(SharedBuffer::new(len.max(1))?);
        self.plan_locks();
        Ok(())
    }

    /// Whether input `in_idx` currently shares a surface with output `out_idx` of `other`.
    pub fn input_is_bound_to(&self, in_idx: usize, other: &Kernel, out_idx: usize) -> bool {
        match (
            self.buffer(Slot::Input, in_idx),
            other.buffer(Slot::Output, out_idx),
        ) {
            (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// What a weight write stores.
#[derive(Clone, Copy)]
enum WeightData<'v> {
    /// Raw bytes in the declared dtype.
    Bytes(&'v [u8]),
    /// fp16 values (an fp16 weight).
    F16(&'v [f16]),
    /// f32 values: copied into an fp32 weight, converted into an fp16 one.
    F32(&'v [f32]),
}

fn type_text(desc: &IoDesc) -> String {
    let dims: Vec<String> = desc.ty.shape.iter().map(ToString::to_string).collect();
    format!("tensor<{}, [{}]>", desc.ty.dtype.name(), dims.join(", "))
}

// Reusing eval's vectors across calls: each is emptied, then "collected" through a map that
// never runs. The standard library reuses the allocation for an in-place collect between types
// of the same size and alignment (the lifetimes differ only), so after the first eval no
// allocation happens; if it ever did not, this would merely allocate.
fn recycle_locks<'b>(mut locks: Vec<Lock<'_>>) -> Vec<Lock<'b>> {
    locks.clear();
    locks
        .into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

fn recycle_inputs<'b>(mut views: Vec<&[u8]>) -> Vec<&'b [u8]> {
    views.clear();
    views
        .into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

fn recycle_outputs<'b>(mut views: Vec<Option<&mut [u8]>>) -> Vec<Option<&'b mut [u8]>> {
    views.clear();
    views
        .into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

fn recycle_packed<'b>(mut views: Vec<Option<&PackedInput>>) -> Vec<Option<&'b PackedInput>> {
    views.clear();
    views
        .into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

fn recycle_outputs2<'b>(mut views: Vec<&mut [u8]>) -> Vec<&'b mut [u8]> {
    views.clear();
    views
        .into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

/// Touches what the first compile would otherwise initialise lazily (CPU detection, the worker
/// pool), so that later timings exclude it. Never fails today; the `Result` is for platforms
/// where it might.
///
/// # Errors
///
/// None on Linux.
pub fn init() -> Result<()> {
    let _ = cpu::selected_isa();
    let _ = milbridge_linalg::pool::Pool::global();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names() {
        assert_eq!(parse_precision("exact").expect("exact"), Precision::Exact);
        assert_eq!(parse_precision(" FAST ").expect("fast"), Precision::Fast);
        assert_eq!(parse_precision("").expect("empty"), Precision::Exact);
        let err = parse_precision("turbo").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "ANE_BRIDGE_PRECISION=`turbo` is not a precision: expected `exact` or `fast`"
        );
    }

    #[test]
    fn kernels_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Kernel>();
    }

    #[test]
    fn blob_paths_are_collected_once_each() {
        let text = crate::samples::conv1x1_blob(2, 2, 2);
        let (program, diags) = milbridge_mil::lower::parse(&text);
        assert!(!diag::has_errors(&diags), "{diags:?}");
        assert_eq!(
            blob_paths(&program),
            vec!["@model_path/weights/weight.bin".to_string()]
        );
    }
}
