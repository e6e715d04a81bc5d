//! `milbridge run` and `milbridge cpu`.

use crate::check::{LoadOptions, load};
use crate::npy::{self, NpyArray};
use anyhow::{Context, Result, bail};
use clap::Args;
use milbridge_engine::{CompileOptions, Precision};
use milbridge_linalg::cpu;
use milbridge_mil::diag::render_all;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `milbridge run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The MIL file.
    pub file: PathBuf,
    /// Directory that `@model_path` denotes (default: the file's directory).
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// Function to run (default: `main`, else the first).
    #[arg(long)]
    pub function: Option<String>,
    /// An input as NAME=FILE.npy, bound to the MIL parameter NAME.
    #[arg(long = "in", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Directory for the outputs, one DIR/NAME.npy per output variable NAME.
    #[arg(long)]
    pub out: PathBuf,
    /// Precision profile: exact (fp32 compute, fp16 rounding per op) or fast (bf16 matrix tiles).
    #[arg(long, default_value = "exact")]
    pub precision: String,
}

pub(crate) fn parse_precision(text: &str) -> Result<Precision> {
    match text {
        "exact" => Ok(Precision::Exact),
        "fast" => Ok(Precision::Fast),
        other => bail!("unknown precision `{other}` (expected exact or fast)"),
    }
}

/// `milbridge run`.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let precision = parse_precision(&args.precision)?;
    let options = LoadOptions {
        model_path: args.model_path.as_ref(),
        ane: false,
        strict_blobs: false,
        strict: false,
    };
    let (verified, source, diags) = load(&args.file, &options)?;
    eprint!("{}", render_all(&source, &diags));
    let Some(verified) = verified else {
        return Ok(ExitCode::FAILURE);
    };
    let compile_options = CompileOptions {
        function: args.function.clone(),
        isa: cpu::selected_isa(),
        precision,
        threads: cpu::thread_count(),
    };
    let plan = milbridge_engine::compile(&verified, &compile_options).context("compile failed")?;

    let mut given: BTreeMap<String, PathBuf> = BTreeMap::new();
    for binding in &args.inputs {
        let (name, file) = binding
            .split_once('=')
            .with_context(|| format!("--in `{binding}` is not NAME=FILE.npy"))?;
        if given
            .insert(name.to_string(), PathBuf::from(file))
            .is_some()
        {
            bail!("input `{name}` given twice");
        }
    }
    let mut arrays = Vec::new();
    for desc in plan.inputs() {
        let file = given.remove(&desc.name).with_context(|| {
            format!(
                "missing input `{}` (declared {}): pass --in {}=FILE.npy",
                desc.name, desc.ty, desc.name
            )
        })?;
        let array = npy::read(&file)?;
        if array.ty != desc.ty {
            bail!(
                "input `{}`: {} holds {} but the parameter is declared {}",
                desc.name,
                file.display(),
                array.ty,
                desc.ty
            );
        }
        arrays.push(array);
    }
    if let Some(unknown) = given.keys().next() {
        let names: Vec<_> = plan
            .inputs()
            .iter()
            .map(|desc| desc.name.as_str())
            .collect();
        bail!("unknown input `{unknown}`: the function's parameters are {names:?}");
    }

    let mut outputs: Vec<NpyArray> = plan
        .outputs()
        .iter()
        .map(|desc| NpyArray {
            ty: desc.ty.clone(),
            bytes: vec![0u8; desc.byte_len],
        })
        .collect();
    let mut workspace = plan.workspace();
    {
        let input_slices: Vec<&[u8]> = arrays.iter().map(|array| array.bytes.as_slice()).collect();
        let mut output_slices: Vec<&mut [u8]> = outputs
            .iter_mut()
            .map(|array| array.bytes.as_mut_slice())
            .collect();
        plan.eval(&mut workspace, &input_slices, &mut output_slices)
            .context("evaluation failed")?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (desc, array) in plan.outputs().iter().zip(&outputs) {
        let path = args.out.join(format!("{}.npy", desc.name));
        npy::write(&path, array)?;
        println!("{}: {}", path.display(), array.ty);
    }
    Ok(ExitCode::SUCCESS)
}

/// `milbridge cpu`.
pub fn cpu() -> Result<ExitCode> {
    let caps = cpu::caps();
    println!("{caps:#?}");
    println!("host tier: {}", cpu::host_isa().name());
    println!("selected tier: {}", cpu::selected_isa().name());
    println!("threads: {}", cpu::thread_count());
    println!("knobs:");
    for (name, doc) in cpu::KNOBS {
        let value = std::env::var(name).unwrap_or_default();
        println!("  {name}={value}\t{doc}");
    }
    Ok(ExitCode::SUCCESS)
}
