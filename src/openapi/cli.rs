//! `ringgate import openapi` and `ringgate export openapi`.
//!
//! ```text
//! ringgate import openapi FILE [--api NAME] [--stage NAME]... [--variable [STAGE:]NAME=VALUE]...
//!                         [--cache-capacity C] [--output PATH] [--strict]
//! ringgate export openapi [--config PATH] [--api NAME] [--output PATH] [--yaml]
//! ```
//!
//! The import writes the configuration to `--output` (or stdout) and the
//! summary to stderr. Exit codes: 0 done; 1 the document (or a file) could
//! not be read or imported; 2 bad arguments; 3 with `--strict`, when anything was left out
//! (the configuration is still written). The export of a deployment goes
//! through the admin socket: `ringgate admin deployments export API ID`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::{export_config, import, ImportOptions};
use crate::config;

/// Exit code of `--strict` when something was left out.
pub const EXIT_STRICT: u8 = 3;

/// `ringgate import openapi`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The OpenAPI 3.0 or Swagger 2.0 document, JSON or YAML (`-`: stdin),
    /// e.g. from `aws apigateway get-export --export-type oas30
    /// --parameters extensions=apigateway`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The API's name [default: from the document's title].
    #[arg(long, value_name = "NAME")]
    pub api: Option<String>,
    /// A stage to create (repeatable) [default: the document's base path,
    /// or `$default` for an HTTP API].
    #[arg(long = "stage", value_name = "NAME")]
    pub stages: Vec<String>,
    /// A stage variable, e.g. `backendHost=10.0.0.5:8080` for every stage
    /// or `prod:backendHost=10.0.0.5:8080` for one given with `--stage`
    /// (repeatable); stage variables are stage settings, not in an export.
    #[arg(long = "variable", value_name = "[STAGE:]NAME=VALUE", value_parser = name_value)]
    pub variables: Vec<(Option<String>, String, String)>,
    /// Turn on each stage's cache at this capacity (a class in GB such as
    /// `0.5`, or a size such as `64MiB`).
    #[arg(long, value_name = "C", value_parser = capacity)]
    pub cache_capacity: Option<String>,
    /// Write the configuration here instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Exit with status 3 when anything was left out.
    #[arg(long)]
    pub strict: bool,
}

/// `ringgate export openapi`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The configuration file.
    #[arg(long, value_name = "PATH", default_value = crate::admin::cli::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The API to export [default: the only one].
    #[arg(long, value_name = "NAME")]
    pub api: Option<String>,
    /// Write the document here instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// YAML instead of JSON.
    #[arg(long)]
    pub yaml: bool,
}

fn name_value(s: &str) -> Result<(Option<String>, String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE or STAGE:NAME=VALUE"))?;
    let (stage, name) = match k.split_once(':') {
        Some((stage, name)) => (Some(stage.to_string()), name),
        None => (None, k),
    };
    config::check_stage_variable(name, v)?;
    Ok((stage, name.to_string(), v.to_string()))
}

fn capacity(s: &str) -> Result<String, String> {
    config::parse_capacity(s).map(|_| s.to_string())
}

fn read_input(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        std::fs::File::open(path)?
            .take(super::MAX_DOCUMENT_BYTES as u64 + 1)
            .read_to_string(&mut text)?;
    }
    Ok(text)
}

fn write_output(path: Option<&Path>, text: &str) -> std::io::Result<()> {
    match path {
        Some(p) => std::fs::write(p, text),
        None => std::io::stdout().write_all(text.as_bytes()),
    }
}

/// Runs `ringgate import openapi`; returns the exit code.
pub fn run_import(args: &ImportArgs) -> u8 {
    let text = match read_input(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ringgate import: {}: {e}", args.file.display());
            return 1;
        }
    };
    let mut stages: Vec<(String, BTreeMap<String, String>)> = args
        .stages
        .iter()
        .map(|s| (s.clone(), BTreeMap::new()))
        .collect();
    let mut variables = BTreeMap::new();
    for (stage, name, value) in &args.variables {
        match stage {
            None => {
                variables.insert(name.clone(), value.clone());
            }
            Some(stage) => match stages.iter_mut().find(|(s, _)| s == stage) {
                Some((_, vars)) => {
                    vars.insert(name.clone(), value.clone());
                }
                None => {
                    eprintln!(
                        "ringgate import: --variable {stage}:{name}=…: stage {stage:?} is not given with --stage"
                    );
                    return 2;
                }
            },
        }
    }
    let options = ImportOptions {
        api: args.api.clone(),
        stages,
        variables,
        cache_capacity: args.cache_capacity.clone(),
        root_domain: true,
        upstreams: Vec::new(),
    };
    let imported = match import(&text, &options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ringgate import: {}: {e}", args.file.display());
            return 1;
        }
    };
    if let Err(e) = write_output(args.output.as_deref(), &imported.toml) {
        eprintln!("ringgate import: cannot write the configuration: {e}");
        return 1;
    }
    eprint!("{}", imported.summary);
    for w in &imported.config.warnings {
        eprintln!("{w}");
    }
    if let Some(out) = &args.output {
        eprintln!(
            "written to {}; it passes `ringgate check --config {}`",
            out.display(),
            out.display()
        );
    }
    if args.strict && !imported.summary.left_out.is_empty() {
        eprintln!(
            "ringgate import: --strict: {} thing(s) left out",
            imported.summary.left_out.len()
        );
        return EXIT_STRICT;
    }
    0
}

/// Runs `ringgate export openapi`; returns the exit code.
pub fn run_export(args: &ExportArgs) -> u8 {
    let cfg = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let api = match &args.api {
        Some(a) => a.clone(),
        None if cfg.apis.len() == 1 => cfg.apis[0].name.clone(),
        None => {
            let names: Vec<&str> = cfg.apis.iter().map(|a| a.name.as_str()).collect();
            eprintln!(
                "ringgate export: {} has {} APIs ({}): name one with --api",
                args.config.display(),
                names.len(),
                names.join(", ")
            );
            return 1;
        }
    };
    let doc = match export_config(&cfg, &api) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ringgate export: {e}");
            return 1;
        }
    };
    let text = if args.yaml {
        match serde_norway::to_string(&doc) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ringgate export: {e}");
                return 1;
            }
        }
    } else {
        let mut t = serde_json::to_string_pretty(&doc).unwrap_or_default();
        t.push('\n');
        t
    };
    if let Err(e) = write_output(args.output.as_deref(), &text) {
        eprintln!("ringgate export: cannot write the document: {e}");
        return 1;
    }
    0
}
