//! `autograph eval --gallery-free`: the shared evaluation suite run by the kiosk's own runtime
//! (tract, int8 by default), so its figures differ from `autograph-train eval`'s only by the
//! runtime and precision, never by the protocol. Test writers are enrolled in memory, by the
//! gallery's scoring rule; no gallery file is read or written.

use std::path::PathBuf;

use autograph_shared::dataset::Dataset;
use autograph_shared::evaluation::{self, EvaluationInput, Protocol, Quiet, SuiteOptions};
use autograph_shared::manifest::Precision;

use super::{BundleArgs, CommandError, Exit, PrecisionArg, Report};
use crate::engine::{Engine, EngineOptions, Runtime};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// Enrol test writers in memory instead of a gallery file (required: it is the only mode, and
    /// it keeps evaluation templates out of the kiosk's gallery).
    #[arg(long, required = true)]
    pub gallery_free: bool,
    /// Data set directory. The bundle's own data set gives figures on its test writers; any
    /// other data set is all test writers (cross-data-set).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Protocols to run: verification, identification, leakage, omniglot [default: all that apply].
    #[arg(long, value_delimiter = ',')]
    pub protocol: Vec<Protocol>,
    /// Reference counts R of the verification protocol.
    #[arg(long, value_delimiter = ',', default_values_t = evaluation::DEFAULT_REFERENCES)]
    pub references: Vec<usize>,
    /// Inference runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Tract)]
    pub runtime: Runtime,
    /// Model precision [default: int8 when the bundle has it, else f32].
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Intra-op threads for ONNX Runtime (tract runs on one thread).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Seeded trials per identification task.
    #[arg(long, default_value_t = 1000)]
    pub trials: usize,
    /// Write report.json (every figure) into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &EvalArgs) -> Result<Report, CommandError> {
    if !args.gallery_free {
        return Err(CommandError::Usage("only --gallery-free evaluation is supported".into()));
    }
    if args.references.is_empty() || args.references.contains(&0) {
        return Err(CommandError::Usage("--references must be positive".into()));
    }
    let bundle = args.bundle.open()?;
    let precision = args.precision.map(Precision::from).unwrap_or(if bundle.manifest().int8_model.is_some() {
        Precision::Int8
    } else {
        Precision::F32
    });
    let manifest = bundle.manifest().clone();
    let dir = bundle.dir().to_path_buf();
    let options =
        EngineOptions { runtime: args.runtime, precision: Some(precision), threads: usize::from(args.threads) };
    let mut engine = Engine::open(bundle, options)?;
    let dataset =
        Dataset::load(&args.data).map_err(|e| CommandError::Usage(format!("--data {}: {e}", args.data.display())))?;
    let runtime = args.runtime.to_string();
    let input = EvaluationInput {
        manifest: &manifest,
        bundle_dir: &dir,
        precision,
        runtime: &runtime,
        dataset: &dataset,
        calibration_dataset: None,
    };
    let suite = SuiteOptions {
        protocols: args.protocol.clone(),
        references: args.references.clone(),
        trials: args.trials,
        ..SuiteOptions::default()
    };
    let report = evaluation::evaluate(&mut engine, &input, &suite, &mut Quiet)
        .map_err(|e| CommandError::Usage(format!("evaluation failed: {e}")))?;
    let mut text = evaluation::summary(&report);
    let mut json = serde_json::to_value(&report).map_err(|e| CommandError::Usage(e.to_string()))?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|source| CommandError::Io {
            path: out.clone(),
            action: "create",
            source,
        })?;
        let path = out.join("report.json");
        let body = serde_json::to_string_pretty(&json).map_err(|e| CommandError::Usage(e.to_string()))? + "\n";
        std::fs::write(&path, body).map_err(|source| CommandError::Io {
            path: path.clone(),
            action: "write",
            source,
        })?;
        text.push_str(&format!("\nreport: {}", path.display()));
    }
    if let Some(object) = json.as_object_mut() {
        object.insert("command".into(), "eval".into());
    }
    Ok(Report { exit: Exit::Ok, json, text })
}
