//! `autograph-train eval`: a bundle through the shared evaluation suite, run by tract on the
//! bundle's own ONNX file (f32 by default), so every figure can be reproduced from the bundle
//! alone, without the checkpoint. With `--kfold K` it trains K models instead (see [`crate::kfold`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use autograph_shared::evaluation::{
    self, EvaluationInput, EvaluationReport, IdentificationTask, Observer, Protocol, SuiteOptions,
};
use autograph_shared::manifest::{Manifest, Precision};
use indicatif::ProgressBar;

use crate::bundle::load_data;
use crate::export::TractEmbedder;
use crate::report::{self, ReportFiles};

/// Model precision on the command line: the kiosk's own flag type, so both CLIs spell it alike.
pub use autograph_device::commands::PrecisionArg;

/// `autograph-train eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Bundle directory (manifest.json, model.onnx, model.int8.onnx).
    #[arg(long, required_unless_present = "kfold")]
    pub bundle: Option<PathBuf>,
    /// Data set to evaluate on. The bundle's own data set gives in-domain figures on its test
    /// writers; any other is a cross-data-set evaluation (all its writers are test writers). An
    /// Omniglot folder with all_runs.zip also scores the 20 official one-shot runs.
    #[arg(long = "data", env = "AUTOGRAPH_DATA", value_delimiter = ',', required = true)]
    pub data: Vec<PathBuf>,
    /// Protocols to run [default: every one that applies to the data].
    #[arg(long, value_delimiter = ',')]
    pub protocol: Vec<Protocol>,
    /// Reference counts R of the verification protocol.
    #[arg(long, value_delimiter = ',', default_values_t = evaluation::DEFAULT_REFERENCES)]
    pub references: Vec<usize>,
    /// Model file to run.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Cross-data-set only: the data set the bundle was trained on; its validation writers
    /// calibrate thresholds for the R the manifest has none for.
    #[arg(long, value_delimiter = ',')]
    pub calibration_data: Vec<PathBuf>,
    /// Seeded trials per identification task.
    #[arg(long, default_value_t = 1000)]
    pub trials: usize,
    /// Seed of reference choice and identification trials.
    #[arg(long, default_value_t = evaluation::DEFAULT_SEED)]
    pub seed: u64,
    /// Report directory: report.md, report.json, scores.json and PNG plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print report.json on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Train and test K models on writer-disjoint folds of --data and report mean ± std of their
    /// test EERs (slow: each fold is a full training run).
    #[arg(long, value_name = "K")]
    pub kfold: Option<usize>,
    /// --kfold: epochs per fold.
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    /// --kfold: optimiser steps per epoch.
    #[arg(long, default_value_t = 60)]
    pub steps_per_epoch: usize,
    /// --kfold: a training configuration JSON (epochs and steps flags still apply).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// --kfold: directory for the folds' runs and the k-fold report.
    #[arg(long, default_value = "runs/kfold")]
    pub kfold_out: PathBuf,
}

/// What to evaluate and where to write the report.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub bundle: PathBuf,
    pub data: Vec<PathBuf>,
    pub calibration_data: Vec<PathBuf>,
    pub precision: Precision,
    pub options: SuiteOptions,
    pub out: Option<PathBuf>,
}

impl EvalRequest {
    /// The default suite on `data` with the f32 model.
    pub fn new(bundle: PathBuf, data: Vec<PathBuf>) -> Self {
        Self {
            bundle,
            data,
            calibration_data: Vec::new(),
            precision: Precision::F32,
            options: SuiteOptions::default(),
            out: None,
        }
    }
}

/// A finished evaluation and, with `out`, its files.
#[derive(Debug)]
pub struct EvalOutcome {
    pub report: EvaluationReport,
    pub files: Option<ReportFiles>,
}

/// Progress bars for the suite's embedding phases; one line per phase when stderr is no terminal.
#[derive(Debug, Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
}

impl Observer for Bars {
    fn phase(&mut self, name: &str, total: usize) {
        self.finish();
        let bar = crate::progress::bar(total as u64, name);
        if bar.is_hidden() {
            eprintln!("{name}");
        }
        self.bar = Some(bar);
    }

    fn advance(&mut self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(done as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Runs the suite with tract on the bundle's model of `request.precision` (hash-checked).
pub fn run(request: &EvalRequest) -> Result<EvalOutcome> {
    let manifest = Manifest::load(&request.bundle)?;
    let bytes = manifest.read_model(&request.bundle, request.precision)?;
    let (h, w) = (manifest.preprocess.height as usize, manifest.preprocess.width as usize);
    let mut embedder = TractEmbedder::new(&bytes, h, w).with_context(|| {
        format!("tract cannot load the {:?} model of {}", request.precision, request.bundle.display())
    })?;
    let dataset = load_data(&request.data)?;
    let calibration =
        if request.calibration_data.is_empty() { None } else { Some(load_data(&request.calibration_data)?) };
    let input = EvaluationInput {
        manifest: &manifest,
        bundle_dir: &request.bundle,
        precision: request.precision,
        runtime: "tract",
        dataset: &dataset,
        calibration_dataset: calibration.as_ref(),
    };
    let report = evaluation::evaluate(&mut embedder, &input, &request.options, &mut Bars::default())?;
    let files = request.out.as_ref().map(|dir| report::write_report(&report, dir)).transpose()?;
    Ok(EvalOutcome { report, files })
}

/// The `eval` command: the suite on a bundle, or `--kfold`.
pub fn run_cli(args: EvalArgs) -> Result<ExitCode> {
    if let Some(folds) = args.kfold {
        return crate::kfold::run_cli(folds, &args);
    }
    let bundle = args.bundle.clone().context("--bundle is required (or --kfold K)")?;
    anyhow::ensure!(!args.references.is_empty() && !args.references.contains(&0), "--references must be positive");
    let task = |n_way, k_shot| IdentificationTask { n_way, k_shot };
    let request = EvalRequest {
        bundle,
        data: args.data.clone(),
        calibration_data: args.calibration_data.clone(),
        precision: args.precision.into(),
        options: SuiteOptions {
            protocols: args.protocol.clone(),
            references: args.references.clone(),
            identification: vec![task(Some(5), 1), task(Some(5), 5), task(None, 1), task(None, 5)],
            trials: args.trials,
            seed: args.seed,
            ..SuiteOptions::default()
        },
        out: args.out.clone(),
    };
    let outcome = run(&request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        println!("{}", evaluation::summary(&outcome.report));
        if let Some(files) = &outcome.files {
            println!("full report: {}", files.markdown.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
