//! `milbridge check` and `milbridge print`.

use anyhow::{Context, Result};
use clap::Args;
use milbridge_bridge::blobs::ModelDir;
use milbridge_engine::reference::ReferenceFolder;
use milbridge_mil::blob::BlobMode;
use milbridge_mil::diag::{Diagnostic, has_errors, render_all};
use milbridge_mil::facts::VerifiedProgram;
use milbridge_mil::span::SourceFile;
use milbridge_mil::verify::VerifyOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `milbridge check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// MIL files to verify.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Directory that `@model_path` denotes (default: each file's directory).
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// Warn about constructs that fail or misbehave on real Apple Neural Engine hardware.
    #[arg(long)]
    pub ane: bool,
    /// Read weight blobs strictly (MILBlob v2 only) instead of accepting maderix/ANE's variants.
    #[arg(long)]
    pub strict_blobs: bool,
    /// Reject the syntax leniencies of mil-spec 3.10 and fold no computed constants.
    #[arg(long)]
    pub strict: bool,
}

/// Arguments of `milbridge print`.
#[derive(Args, Debug)]
pub struct PrintArgs {
    /// The MIL file.
    pub file: PathBuf,
}

/// Options shared by every command that loads a program.
pub struct LoadOptions<'a> {
    /// `@model_path` override.
    pub model_path: Option<&'a PathBuf>,
    /// ANE lints.
    pub ane: bool,
    /// Strict blob reading.
    pub strict_blobs: bool,
    /// Strict syntax and constness.
    pub strict: bool,
}

/// Parses and verifies `path`; returns the program (if valid), the source and every diagnostic.
pub fn load(
    path: &Path,
    options: &LoadOptions<'_>,
) -> Result<(Option<VerifiedProgram>, SourceFile, Vec<Diagnostic>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let source = SourceFile::new(path.display().to_string(), text);
    let parse_options = milbridge_mil::lower::ParseOptions {
        strict_syntax: options.strict,
    };
    let (program, mut diags) = milbridge_mil::lower::parse_with(source.text(), &parse_options);
    if has_errors(&diags) {
        return Ok((None, source, diags));
    }
    let blobs = ModelDir::new(crate::model_root(path, options.model_path));
    let folder = ReferenceFolder;
    let verify_options = VerifyOptions {
        blobs: &blobs,
        folder: if options.strict { None } else { Some(&folder) },
        blob_mode: if options.strict_blobs {
            BlobMode::Strict
        } else {
            BlobMode::Lenient
        },
        strict: options.strict,
        ane_lints: options.ane,
    };
    match milbridge_mil::verify::verify(program, &verify_options) {
        Ok(verified) => {
            diags.extend(verified.warnings().iter().cloned());
            Ok((Some(verified), source, diags))
        }
        Err(verify_diags) => {
            diags.extend(verify_diags);
            Ok((None, source, diags))
        }
    }
}

/// `milbridge check`: exit 0 when every file is valid, 1 otherwise.
pub fn check(args: &CheckArgs) -> Result<ExitCode> {
    let mut all_ok = true;
    for file in &args.files {
        let options = LoadOptions {
            model_path: args.model_path.as_ref(),
            ane: args.ane,
            strict_blobs: args.strict_blobs,
            strict: args.strict,
        };
        let (verified, source, diags) = match load(file, &options) {
            Ok(loaded) => loaded,
            Err(err) => {
                eprintln!("error: {err:#}");
                all_ok = false;
                continue;
            }
        };
        eprint!("{}", render_all(&source, &diags));
        let n_errors = diags.iter().filter(|diag| diag.is_error()).count();
        let n_warnings = diags.len() - n_errors;
        match verified {
            Some(_) => println!("{}: ok ({n_warnings} warning(s))", file.display()),
            None => {
                all_ok = false;
                println!(
                    "{}: {n_errors} error(s), {n_warnings} warning(s)",
                    file.display()
                );
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `milbridge print`: the canonical form; exit 1 if the file does not parse.
pub fn print(args: &PrintArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let source = SourceFile::new(
        args.file.display().to_string(),
        String::from_utf8_lossy(&bytes).into_owned(),
    );
    let (program, diags) = milbridge_mil::lower::parse(source.text());
    eprint!("{}", render_all(&source, &diags));
    if has_errors(&diags) {
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", milbridge_mil::print::print(&program));
    Ok(ExitCode::SUCCESS)
}
