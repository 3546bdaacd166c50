//! From a training run to a model bundle: ONNX export, thresholds calibrated on validation
//! writers, figures on test writers, and `manifest.json` tying it together.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use autograph_shared::dataset::Dataset;
use autograph_shared::dataset::links::linked_writers;
use autograph_shared::dataset::splits::{SetSplit, WriterSplit, split_per_set, union};
use autograph_shared::manifest::{
    GraphIo, MANIFEST_FORMAT_VERSION, MODEL_F32_FILE, Manifest, Precision, Provenance, TargetPrecision,
    describe_model_file,
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
    /// All sets' writers together (writer ids `set:writer` when there are several sets).
    pub split: WriterSplit,
    /// Each data set's own split, content hash and location (one entry for a single set).
    #[serde(default)]
    pub sets: Vec<RunSet>,
}

/// One data set of a run, as recorded in `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSet {
    pub name: String,
    pub root: PathBuf,
    pub content_hash: String,
    #[serde(flatten)]
    pub split: WriterSplit,
}

impl RunSet {
    /// Pairs each data set of `dataset` with its split.
    pub fn of(dataset: &Dataset, splits: &[SetSplit]) -> Vec<RunSet> {
        dataset
            .sets
            .iter()
            .filter_map(|set| {
                let split = splits.iter().find(|s| s.set == set.name)?;
                Some(RunSet {
                    name: set.name.clone(),
                    root: set.root.canonicalize().unwrap_or_else(|_| set.root.clone()),
                    content_hash: set.content_hash.clone(),
                    split: split.split.clone(),
                })
            })
            .collect()
    }
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
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (is {} a training run directory?)", path.display(), run_dir.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Loads one or several data set directories (several are merged, writer ids prefixed).
pub fn load_data(paths: &[PathBuf]) -> Result<Dataset> {
    if paths.is_empty() {
        bail!("no data set given: pass --data DIR or set AUTOGRAPH_DATA");
    }
    let mut parts: Vec<Dataset> = Vec::new();
    for p in paths {
        let part = Dataset::load(p).with_context(|| format!("loading data set {}", p.display()))?;
        if let Some(other) = parts.iter().find(|d| d.name == part.name) {
            bail!(
                "two data sets are named {} ({} and {}): writer ids would collide; give each set its own directory name",
                part.name,
                other.root.display(),
                p.display()
            );
        }
        parts.push(part);
    }
    Ok(Dataset::merge(parts))
}

/// The run's writer split: each data set split on its own by the same fractions and seed
/// (so every set is in train, validation and test), with a writer found in two sets (same
/// name, same pixels) kept in one role. Returns the union and the per-set splits.
pub fn split_data(dataset: &Dataset, validation: f32, test: f32, seed: u64) -> (WriterSplit, Vec<SetSplit>) {
    let links = linked_writers(dataset);
    for group in &links {
        log::info!("{} are the same writer: kept in one role", group.join(" = "));
    }
    let per_set = split_per_set(&dataset.writers_by_set(), &links, validation, test, seed);
    (union(&per_set), per_set)
}

/// The checkpoint directory to export from a run directory (`final`, the best network as
/// [`crate::train::FINAL_DIR`] leaves it; else `best`, else `last`), or the directory itself
/// when it is a checkpoint.
pub fn checkpoint_of(run_dir: &Path) -> PathBuf {
    for name in [crate::train::FINAL_DIR, "best", "last"] {
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
    let (adaptive, adaptive_report) =
        crate::adaptive::build(&mut embedder, &dataset, &info.split, &preprocess, &evaluation, out)?;
    log::info!(
        "adaptive rule {:?} chosen on validation writers (skilled/random EER per rule: {:?})",
        adaptive_report.chosen,
        adaptive_report.validation
    );

    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        input_shape: [1, preprocess.height, preprocess.width],
        preprocess,
        embedding_dim: model_config.embedding_dim as u32,
        io: GraphIo { input: INPUT_NAME.into(), output: OUTPUT_NAME.into() },
        f32_model: describe_model_file(out, MODEL_F32_FILE, evaluation.calibration)?,
        int8_model: None,
        default_precision: Precision::F32,
        target_precision: Default::default(),
        provenance: Provenance {
            dataset: dataset.name.clone(),
            dataset_content_hash: dataset.content_hash.clone(),
            training_config: serde_json::to_value(&training_config_json(&checkpoint)?)?,
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
            split: Some(info.split.clone()),
        },
        test_metrics: serde_json::json!({
            "f32": evaluation.test,
            "replay_false_alarm_rate": { "f32": evaluation.test_replay_false_alarm_rate },
            "adaptive": adaptive_report,
            "whitening": whitening_json(&checkpoint),
        }),
        adaptive: Some(adaptive),
        fusion: None,
    };
    manifest.save(out)?;
    Ok(manifest)
}

/// What the final checkpoint's whitening measured on validation writers (`whitening.json`, see
/// [`crate::train::FINAL_DIR`]); `null` for a checkpoint without one.
fn whitening_json(checkpoint: &Path) -> serde_json::Value {
    let dir = crate::train::resolve_checkpoint(checkpoint).unwrap_or_else(|| checkpoint.to_path_buf());
    std::fs::read_to_string(dir.join("whitening.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn training_config_json(checkpoint: &Path) -> Result<serde_json::Value> {
    let dir = crate::train::resolve_checkpoint(checkpoint).unwrap_or_else(|| checkpoint.to_path_buf());
    let path = dir.join("training_config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Preprocessed images of the training writers, for int8 calibration (at most `limit`, spread
/// evenly over the writers' samples). Test and validation writers are never used.
fn calibration_images(
    dataset: &Dataset,
    split: &WriterSplit,
    config: &autograph_shared::PreprocessConfig,
    limit: usize,
) -> Vec<Vec<f32>> {
    let train: Vec<&autograph_shared::dataset::Sample> = dataset.samples_of(&split.train).collect();
    let step = (train.len() / limit.max(1)).max(1);
    train
        .iter()
        .step_by(step)
        .take(limit)
        .filter_map(|s| {
            let bytes = s.source.read().ok()?;
            autograph_shared::preprocess_bytes(&bytes, config).ok().map(|p| p.pixels)
        })
        .collect()
}

/// What `quantize` measured, saved as `quantize_report.json` beside the bundle.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeSummary {
    pub quantizer: serde_json::Value,
    pub tract_ops_int8: Vec<String>,
    pub latency_ms: serde_json::Value,
    pub f32_bytes: u64,
    pub int8_bytes: u64,
    /// The precision measured best on this machine's CPU, recorded for `target` in the
    /// manifest's `target_precision` (other CPUs keep the manifest's f32 default).
    pub default_precision: Precision,
    pub target: String,
    pub why: String,
}

/// Quantizes the bundle's f32 model to int8 (calibrated on training writers), calibrates the
/// int8 model's own thresholds on validation writers, measures it on test writers with tract,
/// and records which precision the device should use by default.
pub fn quantize_bundle(bundle: &Path, data: &[PathBuf]) -> Result<(Manifest, QuantizeSummary)> {
    use crate::export::TractEmbedder;
    use crate::quantize::{QuantizeOptions, describe_tract_ops, quantize, tract_latency_compare};
    use autograph_shared::manifest::MODEL_INT8_FILE;

    let mut manifest = Manifest::load(bundle)?;
    let f32_bytes = manifest.read_model(bundle, Precision::F32)?;
    let split = manifest
        .provenance
        .split
        .clone()
        .context("the manifest records no writer split; re-export the bundle with this version")?;
    let dataset = load_data(data)?;
    let preprocess = manifest.preprocess.clone();
    let (h, w) = (preprocess.height as usize, preprocess.width as usize);
    let calibration = calibration_images(&dataset, &split, &preprocess, 256);
    anyhow::ensure!(calibration.len() >= 8, "only {} calibration images could be read", calibration.len());
    let quantized = quantize(&f32_bytes, &calibration, (h, w), &QuantizeOptions::default())?;
    let int8_path = bundle.join(MODEL_INT8_FILE);
    std::fs::write(&int8_path, &quantized.onnx).with_context(|| format!("writing {}", int8_path.display()))?;

    let references = manifest.f32_model.calibration.references;
    let mut f32_tract = TractEmbedder::new(&f32_bytes, h, w)?;
    let f32_eval = evaluate(&mut f32_tract, &dataset, &split, &preprocess, references, "evaluating (tract f32)")?;
    let mut int8_tract = TractEmbedder::new(&quantized.onnx, h, w)?;
    let int8_eval = evaluate(&mut int8_tract, &dataset, &split, &preprocess, references, "evaluating (tract int8)")?;
    let latency = tract_latency_compare(&f32_bytes, &quantized.onnx, (h, w), 30)?;

    // int8 becomes the default only if it is as accurate (within 0.5 points of EER on
    // validation writers, skilled and random: a choice is never made on test writers) and faster
    // in tract on this machine. Test EERs are reported beside it.
    let eer = |m: &autograph_shared::protocol::VerificationMetrics| {
        (m.skilled.map(|s| s.eer).unwrap_or(0.0), m.random.map(|r| r.eer).unwrap_or(0.0))
    };
    let validation = |e: &autograph_shared::protocol::SplitEvaluation| {
        eer(&autograph_shared::protocol::verification_metrics(
            &e.validation_scores,
            references,
            &e.calibration.thresholds,
        ))
    };
    let ((vfs, vfr), (vis, vir)) = (validation(&f32_eval), validation(&int8_eval));
    let ((fs, fr), (is, ir)) = (eer(&f32_eval.test), eer(&int8_eval.test));
    let accurate = (vis - vfs).abs() <= 0.005 && (vir - vfr).abs() <= 0.005;
    let (f32_ms, int8_ms) = (latency.f32_median.as_secs_f64() * 1e3, latency.int8_median.as_secs_f64() * 1e3);
    let latency_json =
        serde_json::json!({ "tract_f32_median": f32_ms, "tract_int8_median": int8_ms, "runs": latency.runs });
    let faster = int8_ms < f32_ms;
    // Measured on this machine's CPU only: other kiosk CPUs keep f32 (always present, the
    // reference for accuracy) until measured there (`target-precision`).
    let default_precision = if accurate && faster { Precision::Int8 } else { Precision::F32 };
    let pct = |x: f64| x * 100.0;
    let why = format!(
        "validation EER skilled/random: f32 {:.2}%/{:.2}%, int8 {:.2}%/{:.2}% ({}); test EER: f32 {:.2}%/{:.2}%, \
         int8 {:.2}%/{:.2}%; tract latency f32 {:.2} ms, int8 {:.2} ms ({})",
        pct(vfs),
        pct(vfr),
        pct(vis),
        pct(vir),
        if accurate { "within 0.5 points" } else { "NOT within 0.5 points" },
        pct(fs),
        pct(fr),
        pct(is),
        pct(ir),
        f32_ms,
        int8_ms,
        if faster { "int8 faster" } else { "int8 not faster" }
    );

    manifest.int8_model = Some(describe_model_file(bundle, MODEL_INT8_FILE, int8_eval.calibration)?);
    if let Some(cohort) = manifest.read_cohort(bundle)? {
        let adaptive = manifest.adaptive.as_mut().context("a cohort without an adaptive section")?;
        adaptive.int8_thresholds = Some(crate::adaptive::calibrate_rule(
            &int8_eval.validation_embedded,
            &cohort,
            adaptive.rule,
            references,
            &adaptive.config,
        )?);
    }
    manifest.default_precision = Precision::F32;
    // The most specific key: a measurement on a dot-product ARM core says nothing of one without.
    let host = autograph_shared::manifest::target_keys()
        .into_iter()
        .next()
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    manifest.target_precision.insert(
        host.clone(),
        TargetPrecision {
            precision: default_precision,
            measured: format!("{why} (tract, 1 thread, median of {} runs)", latency.runs),
        },
    );
    let mut metrics = manifest.test_metrics.as_object().cloned().unwrap_or_default();
    metrics.insert("f32_tract".into(), serde_json::to_value(f32_eval.test)?);
    metrics.insert("int8".into(), serde_json::to_value(int8_eval.test)?);
    if let Some(rates) = metrics.get_mut("replay_false_alarm_rate").and_then(|v| v.as_object_mut()) {
        rates.insert("int8".into(), serde_json::json!(int8_eval.test_replay_false_alarm_rate));
    }
    manifest.test_metrics = serde_json::Value::Object(metrics);
    manifest.save(bundle)?;

    let summary = QuantizeSummary {
        quantizer: serde_json::to_value(&quantized.report)?,
        tract_ops_int8: describe_tract_ops(&quantized.onnx)?,
        latency_ms: latency_json,
        f32_bytes: f32_bytes.len() as u64,
        int8_bytes: quantized.onnx.len() as u64,
        default_precision,
        target: host,
        why,
    };
    let report_path = bundle.join("quantize_report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", report_path.display()))?;
    Ok((manifest, summary))
}

/// Records `precision` as the one measured best on kiosk CPUs named `target` (see
/// [`autograph_shared::manifest::target_keys`]), with the figures that chose it.
pub fn set_target_precision(bundle: &Path, target: &str, precision: Precision, measured: &str) -> Result<Manifest> {
    let valid = !target.is_empty()
        && target.len() <= 64
        && target.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '+');
    anyhow::ensure!(valid, "--target {target:?} is not a CPU name like x86_64, aarch64 or aarch64+dotprod");
    anyhow::ensure!(!measured.trim().is_empty(), "--measured must say what was measured");
    let mut manifest = Manifest::load(bundle)?;
    anyhow::ensure!(
        manifest.model(precision).is_some(),
        "{} has no {precision:?} model: quantize it first",
        bundle.display()
    );
    manifest.target_precision.insert(target.to_string(), TargetPrecision { precision, measured: measured.to_string() });
    manifest.save(bundle)?;
    Ok(manifest)
}

/// Parity figures of `check-bundle`.
#[derive(Debug, Clone, Serialize)]
pub struct ParityReport {
    pub images: usize,
    /// burn vs tract on the f32 file (only with a checkpoint).
    pub burn_vs_tract_f32_max_abs: Option<f32>,
    /// Lowest per-image cosine between int8 and f32 embeddings in tract.
    pub int8_vs_f32_min_cosine: Option<f32>,
    pub passed: bool,
}

/// Checks a bundle: manifest version, hashes, both files load in tract, and parity on real
/// images: burn vs tract (≤ 1e-4, with `checkpoint`) and int8 vs f32 (cosine ≥ 0.99).
pub fn check_bundle(
    bundle: &Path,
    data: &[PathBuf],
    checkpoint: Option<&Path>,
    device: &Device,
) -> Result<ParityReport> {
    use crate::export::TractEmbedder;
    use autograph_shared::protocol::Embedder;
    let manifest = Manifest::load(bundle)?;
    let f32_bytes = manifest.read_model(bundle, Precision::F32)?;
    let int8_bytes = match manifest.int8_model {
        Some(_) => Some(manifest.read_model(bundle, Precision::Int8)?),
        None => None,
    };
    let preprocess = manifest.preprocess.clone();
    let (h, w) = (preprocess.height as usize, preprocess.width as usize);
    let mut f32_tract = TractEmbedder::new(&f32_bytes, h, w).context("model.onnx does not load in tract")?;
    let mut int8_tract = match &int8_bytes {
        Some(b) => Some(TractEmbedder::new(b, h, w).context("model.int8.onnx does not load in tract")?),
        None => None,
    };
    let images: Vec<autograph_shared::Preprocessed> = if data.is_empty() {
        Vec::new()
    } else {
        let dataset = load_data(data)?;
        let step = (dataset.samples.len() / 32).max(1);
        dataset
            .samples
            .iter()
            .step_by(step)
            .take(32)
            .filter_map(|s| autograph_shared::preprocess_bytes(&s.source.read().ok()?, &preprocess).ok())
            .collect()
    };
    let tract_f32 = f32_tract.embed(&images)?;
    let burn_vs_tract = match checkpoint {
        Some(dir) => {
            let mut burn = BurnEmbedder::from_checkpoint(&checkpoint_of(dir), device)?;
            let from_burn = burn.embed(&images)?;
            Some(max_abs_diff(&from_burn, &tract_f32))
        }
        None => None,
    };
    let int8_cos = match int8_tract.as_mut() {
        Some(e) => {
            let q = e.embed(&images)?;
            Some(q.iter().zip(&tract_f32).map(|(a, b)| cosine(a, b)).fold(f32::INFINITY, f32::min))
        }
        None => None,
    };
    let passed = burn_vs_tract.is_none_or(|d| d <= 1e-4) && int8_cos.is_none_or(|c| c >= 0.99);
    Ok(ParityReport {
        images: images.len(),
        burn_vs_tract_f32_max_abs: burn_vs_tract,
        int8_vs_f32_min_cosine: int8_cos,
        passed,
    })
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(f32::MIN_POSITIVE)
}
