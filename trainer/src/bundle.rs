//! From a training run to a model bundle: ONNX export, thresholds calibrated on validation
//! writers, figures on test writers, and `manifest.json` tying it together.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use autograph_shared::dataset::Dataset;
use autograph_shared::dataset::splits::WriterSplit;
use autograph_shared::manifest::{
    GraphIo, MANIFEST_FORMAT_VERSION, MODEL_F32_FILE, Manifest, Precision, Provenance, describe_model_file,
};
use autograph_shared::protocol::{Embedder, SplitEvaluation, evaluate_split};

use crate::export::{INPUT_NAME, OUTPUT_NAME, export_onnx};
use crate::train::{BurnEmbedder, load_model, load_training_config};

/// `run.json`: what a training run was trained on, written by `autograph-train train` so that
/// export, calibration and evaluation use the same data and the same writer split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub data: Vec<PathBuf>,
    pub dataset: String,
    pub content_hash: String,
    pub split: WriterSplit,
}

pub const RUN_INFO_FILE: &str = "run.json";

impl RunInfo {
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join(RUN_INFO_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(run_dir: &Path) -> Result<RunInfo> {
        let path = run_dir.join(RUN_INFO_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is {} a training run directory?)", path.display(), run_dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Loads one or several data set directories (several are merged, writer ids prefixed).
pub fn load_data(paths: &[PathBuf]) -> Result<Dataset> {
    if paths.is_empty() {
        bail!("no data set given: pass --data DIR or set AUTOGRAPH_DATA");
    }
    let mut parts = Vec::new();
    for p in paths {
        parts.push(Dataset::load(p).with_context(|| format!("loading data set {}", p.display()))?);
    }
    Ok(Dataset::merge(parts))
}

/// The checkpoint directory to export from a run directory (`best`, else `last`), or the
/// directory itself when it is a checkpoint.
pub fn checkpoint_of(run_dir: &Path) -> PathBuf {
    for name in ["best", "last"] {
        if crate::train::resolve_checkpoint(&run_dir.join(name)).is_some() {
            return run_dir.join(name);
        }
    }
    run_dir.to_path_buf()
}

/// Runs the shared protocol with a progress bar.
pub fn evaluate(
    embedder: &mut dyn Embedder,
    dataset: &Dataset,
    split: &WriterSplit,
    preprocess: &autograph_shared::PreprocessConfig,
    references: usize,
    label: &str,
) -> Result<SplitEvaluation> {
    let total = dataset.samples_of(&split.validation).count() + dataset.samples_of(&split.test).count();
    let bar = crate::progress::bar(total as u64, label);
    let evaluation = evaluate_split(embedder, dataset, split, preprocess, references, 7, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    for s in &evaluation.skipped {
        log::warn!("skipped {}: {}", s.file, s.reason);
    }
    Ok(evaluation)
}

/// Exports the run's best checkpoint as a bundle: `model.onnx` and `manifest.json` with
/// thresholds calibrated on validation writers and figures on test writers.
pub fn export_bundle(run_dir: &Path, out: &Path, data: Option<&[PathBuf]>, device: &Device) -> Result<Manifest> {
    let info = RunInfo::load(run_dir)?;
    let checkpoint = checkpoint_of(run_dir);
    let training_config = load_training_config(&checkpoint)?;
    let (model, model_config) = load_model(&checkpoint, device)?;
    let dataset = load_data(data.unwrap_or(&info.data))?;
    if dataset.content_hash != info.content_hash {
        log::warn!(
            "the data set's content differs from what the run was trained on ({} vs {}): writer split kept, figures may not be comparable",
            dataset.content_hash,
            info.content_hash
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let onnx = export_onnx(&model, &model_config, device)?;
    let onnx_path = out.join(MODEL_F32_FILE);
    std::fs::write(&onnx_path, &onnx).with_context(|| format!("writing {}", onnx_path.display()))?;

    let preprocess = training_config.preprocess.clone();
    let references = training_config.validation_references;
    let mut embedder = BurnEmbedder::new(&model, model_config.clone(), device);
    let evaluation = evaluate(&mut embedder, &dataset, &info.split, &preprocess, references, "calibrating (burn f32)")?;

    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        input_shape: [1, preprocess.height, preprocess.width],
        preprocess,
        embedding_dim: model_config.embedding_dim as u32,
        io: GraphIo { input: INPUT_NAME.into(), output: OUTPUT_NAME.into() },
        f32_model: describe_model_file(out, MODEL_F32_FILE, evaluation.calibration)?,
        int8_model: None,
        default_precision: Precision::F32,
        provenance: Provenance {
            dataset: dataset.name.clone(),
            dataset_content_hash: dataset.content_hash.clone(),
            training_config: serde_json::to_value(&training_config_json(&checkpoint)?)?,
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
            split: Some(info.split.clone()),
        },
        test_metrics: serde_json::json!({ "f32": evaluation.test }),
    };
    manifest.save(out)?;
    Ok(manifest)
}

fn training_config_json(checkpoint: &Path) -> Result<serde_json::Value> {
    let dir = crate::train::resolve_checkpoint(checkpoint).unwrap_or_else(|| checkpoint.to_path_buf());
    let path = dir.join("training_config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
