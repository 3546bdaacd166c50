//! The evaluation suite behind `autograph-train eval` (tract, f32 by default) and `autograph eval`
//! (the kiosk's runtime, int8 by default): verification at several reference counts, N-way K-shot
//! identification, the background-only leakage check, and Omniglot's official one-shot runs.
//!
//! Both binaries call [`evaluate`] with their own [`Embedder`], so their figures differ only by the
//! runtime. Every score comes from [`crate::protocol`] (the gallery's int8 nearest-reference rule),
//! and no threshold is ever calibrated on test writers: they come from the bundle's manifest or
//! from the validation writers of the bundle's own split.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dataset::omniglot::{self, OneShotRun};
use crate::dataset::{Dataset, DatasetError, Label, Layout, Sample, Unreadable};
use crate::gallery::Template;
use crate::leakage::{BACKGROUND_FEATURES, background_features, single_feature_eer};
use crate::manifest::{Manifest, Precision};
use crate::metrics;
use crate::preprocess::{PreprocessConfig, Preprocessed, preprocess_bytes};
use crate::protocol::{
    self, EmbedError, EmbeddedSample, Embedder, Thresholds, VerificationMetrics, VerificationScores,
};

/// Version of `report.json`'s layout.
pub const REPORT_FORMAT_VERSION: u32 = 1;
/// Reference counts evaluated unless asked otherwise (R of the design's protocol).
pub const DEFAULT_REFERENCES: [usize; 4] = [1, 3, 5, 10];
/// Seed of reference choice and identification trials: the one the bundle's calibration used,
/// so the manifest's thresholds were calibrated on the same kind of draw.
pub const DEFAULT_SEED: u64 = 7;
/// Below this background-only EER the report flags a scanning shortcut (chance is 50%).
pub const LEAKAGE_ALARM_EER: f64 = 0.35;
/// Omniglot's runs inside a data set folder.
pub const OMNIGLOT_RUNS_FILE: &str = "all_runs.zip";

/// One part of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Verification,
    Identification,
    Leakage,
    Omniglot,
}

impl Protocol {
    pub const ALL: [Protocol; 4] =
        [Protocol::Verification, Protocol::Identification, Protocol::Leakage, Protocol::Omniglot];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Verification => "verification",
            Protocol::Identification => "identification",
            Protocol::Leakage => "leakage",
            Protocol::Omniglot => "omniglot",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            format!("unknown protocol {s:?}; expected one of verification, identification, leakage, omniglot")
        })
    }
}

/// One identification task: `n_way` writers (`None`: every eligible test writer), `k_shot`
/// references each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentificationTask {
    pub n_way: Option<usize>,
    pub k_shot: usize,
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Empty: every protocol that applies to the data (leakage needs forgeries, omniglot needs
    /// `all_runs.zip`).
    pub protocols: Vec<Protocol>,
    pub references: Vec<usize>,
    pub identification: Vec<IdentificationTask>,
    pub trials: usize,
    pub seed: u64,
    /// Images per call of the embedder.
    pub batch_size: usize,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        let task = |n_way, k_shot| IdentificationTask { n_way, k_shot };
        Self {
            protocols: Vec::new(),
            references: DEFAULT_REFERENCES.to_vec(),
            identification: vec![task(Some(5), 1), task(Some(5), 5), task(None, 1), task(None, 5)],
            trials: 1000,
            seed: DEFAULT_SEED,
            batch_size: 32,
        }
    }
}

/// The model and data to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct EvaluationInput<'a> {
    pub manifest: &'a Manifest,
    pub bundle_dir: &'a Path,
    /// The model file the embedder runs (its own calibration is used).
    pub precision: Precision,
    /// Name of the runtime, for the report (`tract`, `ort`).
    pub runtime: &'a str,
    pub dataset: &'a Dataset,
    /// The data set the bundle was trained on, when evaluating on another one: its validation
    /// writers (from the manifest's split) calibrate thresholds for reference counts the manifest
    /// has none for. Without it a cross-data-set run uses the manifest's thresholds for every R.
    pub calibration_dataset: Option<&'a Dataset>,
}

/// Receives progress of the long steps (embedding); the CLIs draw bars with it.
pub trait Observer {
    fn phase(&mut self, name: &str, total: usize);
    fn advance(&mut self, done: usize);
    fn finish(&mut self) {}
}

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn phase(&mut self, _: &str, _: usize) {}
    fn advance(&mut self, _: usize) {}
}

/// Why an evaluation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The data and the bundle do not allow an honest split (the message says why).
    #[error("{0}")]
    Split(String),
    #[error("{0}")]
    Omniglot(String),
}

/// Whether the test writers are held-out writers of the bundle's own data set, or a whole data
/// set the model never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    InDomain,
    CrossDataset,
}

/// Which writers are scored and which calibrate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub mode: Mode,
    pub test: Vec<String>,
    /// Validation writers of this data set (empty across data sets).
    pub validation: Vec<String>,
    /// Where the roles come from, in words.
    pub source: String,
}

/// Decides the roles of the data set's writers from the manifest. In-domain needs the split the
/// bundle recorded; a data set the model was not trained on is all test writers.
pub fn plan_split(manifest: &Manifest, dataset: &Dataset) -> Result<(SplitPlan, Vec<String>), EvaluationError> {
    let provenance = &manifest.provenance;
    let writers = dataset.writers();
    let mut notes = Vec::new();
    let same_data = dataset.content_hash == provenance.dataset_content_hash || dataset.name == provenance.dataset;
    if !same_data && provenance.dataset.split('+').any(|part| part == dataset.name) {
        return Err(EvaluationError::Split(format!(
            "the bundle was trained on the merged data set {}, which includes {}: evaluate on the same list of \
             data sets so its writer split applies",
            provenance.dataset, dataset.name
        )));
    }
    if !same_data {
        let plan = SplitPlan {
            mode: Mode::CrossDataset,
            test: writers,
            validation: Vec::new(),
            source: format!(
                "cross-data-set: the bundle was trained on {}, so every writer of {} is a test writer",
                provenance.dataset, dataset.name
            ),
        };
        return Ok((plan, notes));
    }
    let split = provenance.split.as_ref().ok_or_else(|| {
        EvaluationError::Split(format!(
            "{} is the data set the bundle was trained on, but the manifest records no writer split, so its \
             test writers are unknown (scoring every writer would score training writers); re-export the bundle \
             with this version",
            dataset.name
        ))
    })?;
    let present = |v: &[String]| -> Vec<String> { v.iter().filter(|w| writers.contains(w)).cloned().collect() };
    let test = present(&split.test);
    let validation = present(&split.validation);
    if test.is_empty() {
        return Err(EvaluationError::Split(format!(
            "none of the bundle's {} test writers is in {}",
            split.test.len(),
            dataset.root.display()
        )));
    }
    if dataset.content_hash != provenance.dataset_content_hash {
        notes.push(format!(
            "the data set's content differs from what the bundle was trained on (content hash {} vs {}); \
             the recorded writer split is kept",
            short(&dataset.content_hash),
            short(&provenance.dataset_content_hash)
        ));
    }
    if test.len() < split.test.len() || validation.len() < split.validation.len() {
        notes.push(format!(
            "{} of {} test and {} of {} validation writers of the recorded split are present",
            test.len(),
            split.test.len(),
            validation.len(),
            split.validation.len()
        ));
    }
    let source = format!(
        "in-domain: the manifest's writer split (provenance.split): {} test and {} validation writers; \
         training writers are never scored",
        test.len(),
        validation.len()
    );
    Ok((SplitPlan { mode: Mode::InDomain, test, validation, source }, notes))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The bundle an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleSummary {
    pub dir: PathBuf,
    pub trained_on: String,
    pub trained_on_content_hash: String,
    /// sha256 of the model file that ran.
    pub model_sha256: String,
    pub input_height: u32,
    pub input_width: u32,
    /// R the manifest's thresholds were calibrated with.
    pub calibration_references: usize,
}

/// The evaluated data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    pub name: String,
    pub root: PathBuf,
    pub layout: String,
    pub writers: usize,
    pub genuine: usize,
    pub forged: usize,
    pub duplicates_dropped: usize,
    pub content_hash: String,
}

/// Figures of one reference count R.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationEntry {
    pub references: usize,
    pub protocol: String,
    /// Where the decision thresholds come from (never test writers).
    pub threshold_source: String,
    pub thresholds: Thresholds,
    /// `None` when no test writer has more than R genuine signatures.
    pub test: Option<VerificationMetrics>,
    /// EERs of the calibration writers at this R (in-domain only).
    pub validation: Option<ValidationFigures>,
}

/// EERs on the validation writers, to show the gap to test writers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationFigures {
    pub writers: usize,
    pub skilled_eer: Option<f64>,
    pub random_eer: Option<f64>,
}

/// One N-way K-shot identification task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentificationEntry {
    pub n_way: usize,
    pub k_shot: usize,
    pub trials: usize,
    /// `None` when fewer than N test writers have more than K genuine signatures.
    pub accuracy: Option<f64>,
    /// 1/N.
    pub chance: f64,
    /// Test writers with more than K genuine signatures.
    pub eligible_writers: usize,
    pub protocol: String,
}

/// The background-only baseline: can scanning conditions alone separate genuine from forged?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakageEntry {
    pub protocol: String,
    /// EER of the most revealing single background feature; near 0.5 means no shortcut.
    pub background_only_eer: f64,
    pub per_feature: BTreeMap<String, f64>,
    pub genuine_images: usize,
    pub forged_images: usize,
    /// `background_only_eer >= LEAKAGE_ALARM_EER`.
    pub near_chance: bool,
}

impl LeakageEntry {
    /// The finding in words (chance is 50%; below [`LEAKAGE_ALARM_EER`] it is an alarm).
    pub fn verdict(&self) -> &'static str {
        if self.background_only_eer >= 0.45 {
            "at chance: scanning conditions give nothing away"
        } else if self.near_chance {
            "close to chance: no strong background shortcut (alarm below 35%)"
        } else {
            "WARNING: the background alone separates genuine from forged; figures on this data are not trustworthy"
        }
    }
}

/// One official one-shot run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneShotRunResult {
    pub run: String,
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
}

/// Omniglot's 20 runs scored as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OmniglotEntry {
    pub protocol: String,
    pub runs: Vec<OneShotRunResult>,
    pub mean_accuracy: f64,
    pub error_rate: f64,
}

/// A published figure and, when this evaluation measured something comparable, ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    pub benchmark: String,
    pub published: String,
    pub published_protocol: String,
    /// Our figure on the same data, if this report measured it.
    pub ours: Option<String>,
    pub our_protocol: String,
}

/// Everything one evaluation measured: `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub format_version: u32,
    pub bundle: BundleSummary,
    pub runtime: String,
    pub precision: Precision,
    pub data: DataSummary,
    pub split: SplitPlan,
    /// The R whose thresholds the manifest holds: the report's headline figures.
    pub primary_references: usize,
    /// Keyed `R1`, `R3`, `R5`, `R10`.
    pub verification: BTreeMap<String, VerificationEntry>,
    /// Keyed `5way_1shot`, `allway_5shot`, ...
    pub identification: BTreeMap<String, IdentificationEntry>,
    pub leakage: Option<LeakageEntry>,
    pub omniglot: Option<OmniglotEntry>,
    pub anchors: Vec<Anchor>,
    /// Images that could not be read or preprocessed (never silently dropped).
    pub skipped: Vec<Unreadable>,
    pub notes: Vec<String>,
    /// Test scores per R, for plots (written to `scores.json`, not `report.json`).
    #[serde(skip)]
    pub scores: BTreeMap<usize, VerificationScores>,
}

impl EvaluationReport {
    /// The verification entry of R references.
    pub fn verification_at(&self, references: usize) -> Option<&VerificationEntry> {
        self.verification.get(&verification_key(references))
    }
}

/// `f32` or `int8`, as on the command line.
pub fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => "f32",
        Precision::Int8 => "int8",
    }
}

/// `R5` for 5 references.
pub fn verification_key(references: usize) -> String {
    format!("R{references}")
}

/// `5way_1shot`, or `allway_1shot` for every eligible test writer.
pub fn identification_key(task: IdentificationTask) -> String {
    match task.n_way {
        Some(n) => format!("{n}way_{}shot", task.k_shot),
        None => format!("allway_{}shot", task.k_shot),
    }
}

/// Records the background features of every image an embedder sees, in order, so the leakage
/// check reads the very preprocessed images that were scored without preprocessing them twice.
struct BackgroundTap<'a> {
    inner: &'a mut dyn Embedder,
    features: Vec<[f32; 3]>,
}

impl Embedder for BackgroundTap<'_> {
    fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let out = self.inner.embed(batch)?;
        self.features.extend(batch.iter().map(background_features));
        Ok(out)
    }
}

/// Embedded samples of some writers, with their background features.
struct Embedded {
    samples: Vec<EmbeddedSample>,
    background: Vec<[f32; 3]>,
}

/// Embeds writers' samples with the bundle's preprocessing, reporting progress and collecting
/// unreadable images.
struct EmbedRun<'a> {
    config: &'a PreprocessConfig,
    batch_size: usize,
    observer: &'a mut dyn Observer,
    skipped: Vec<Unreadable>,
}

impl EmbedRun<'_> {
    fn writers(
        &mut self,
        embedder: &mut dyn Embedder,
        dataset: &Dataset,
        writers: &[String],
        label: &str,
    ) -> Result<Embedded, EvaluationError> {
        let samples: Vec<&Sample> = dataset.samples_of(writers).collect();
        self.observer.phase(&format!("embedding {} {label} images", samples.len()), samples.len());
        let mut tap = BackgroundTap { inner: embedder, features: Vec::with_capacity(samples.len()) };
        let observer = &mut *self.observer;
        let (embedded, unreadable) =
            protocol::embed_samples(&mut tap, &samples, self.config, self.batch_size, &mut |n| observer.advance(n))?;
        self.observer.finish();
        self.skipped.extend(unreadable);
        Ok(Embedded { samples: embedded, background: tap.features })
    }
}

/// Which protocols run: the requested ones, or every one that applies.
fn resolve_protocols(
    requested: &[Protocol],
    dataset: &Dataset,
    notes: &mut Vec<String>,
) -> Result<Vec<Protocol>, EvaluationError> {
    let has_runs = dataset.root.join(OMNIGLOT_RUNS_FILE).is_file();
    if requested.is_empty() {
        let mut all = vec![Protocol::Verification, Protocol::Identification];
        if dataset.has_forgeries() {
            all.push(Protocol::Leakage);
        }
        if has_runs {
            all.push(Protocol::Omniglot);
        }
        return Ok(all);
    }
    let mut chosen: Vec<Protocol> = requested.to_vec();
    chosen.sort();
    chosen.dedup();
    if chosen.contains(&Protocol::Omniglot) && !has_runs {
        return Err(EvaluationError::Omniglot(format!(
            "--protocol omniglot needs {} in {} (`autograph-train data fetch omniglot` downloads it)",
            OMNIGLOT_RUNS_FILE,
            dataset.root.display()
        )));
    }
    if chosen.contains(&Protocol::Leakage) && !dataset.has_forgeries() {
        notes.push(format!("leakage check skipped: {} has no forgeries to tell apart", dataset.name));
        chosen.retain(|p| *p != Protocol::Leakage);
    }
    Ok(chosen)
}

/// Runs the suite. Embeds test writers (and validation writers, in-domain) once, then scores every
/// protocol from those embeddings.
pub fn evaluate(
    embedder: &mut dyn Embedder,
    input: &EvaluationInput,
    options: &SuiteOptions,
    observer: &mut dyn Observer,
) -> Result<EvaluationReport, EvaluationError> {
    let manifest = input.manifest;
    let dataset = input.dataset;
    let config = &manifest.preprocess;
    let model = manifest
        .model(input.precision)
        .ok_or_else(|| EvaluationError::Split(format!("the bundle has no {:?} model", input.precision)))?;
    let calibration = model.calibration;
    let (plan, mut notes) = plan_split(manifest, dataset)?;
    let protocols = resolve_protocols(&options.protocols, dataset, &mut notes)?;
    let mut run = EmbedRun { config, batch_size: options.batch_size, observer: &mut *observer, skipped: Vec::new() };

    let needs_test = protocols.iter().any(|p| *p != Protocol::Omniglot);
    let test = if needs_test { Some(run.writers(embedder, dataset, &plan.test, "test")?) } else { None };
    let mut verification = BTreeMap::new();
    let mut scores = BTreeMap::new();
    if let (true, Some(test)) = (protocols.contains(&Protocol::Verification), &test) {
        // Calibration writers: this data set's validation writers in-domain; across data sets,
        // those of the training data set when it was given.
        let calibration_samples = match (plan.mode, input.calibration_dataset) {
            (Mode::InDomain, _) if !plan.validation.is_empty() => Some((
                run.writers(embedder, dataset, &plan.validation, "validation")?.samples,
                format!("validation writers of {} (the manifest's split)", dataset.name),
            )),
            (Mode::CrossDataset, Some(original)) => {
                let split = manifest.provenance.split.as_ref().ok_or_else(|| {
                    EvaluationError::Split(
                        "the manifest records no writer split, so the training data set's validation writers \
                         are unknown"
                            .into(),
                    )
                })?;
                let embedded = run.writers(embedder, original, &split.validation, "calibration")?;
                Some((embedded.samples, format!("validation writers of {} (the manifest's split)", original.name)))
            }
            _ => None,
        };
        let context = VerificationContext {
            test: &test.samples,
            calibration: calibration_samples.as_ref(),
            bundle: &calibration,
            plan: &plan,
            options,
            data: &dataset.name,
            trained_on: &manifest.provenance.dataset,
        };
        for &r in &options.references {
            let (entry, test_scores) = context.entry(r);
            verification.insert(verification_key(r), entry);
            scores.insert(r, test_scores);
        }
    }
    let skipped = run.skipped;

    let mut identification = BTreeMap::new();
    if let (true, Some(test)) = (protocols.contains(&Protocol::Identification), &test) {
        for &task in &options.identification {
            identification.insert(identification_key(task), identification_entry(task, &test.samples, options));
        }
    }

    let leakage = match (protocols.contains(&Protocol::Leakage), &test) {
        (true, Some(test)) => leakage_entry(test),
        _ => None,
    };

    let omniglot = if protocols.contains(&Protocol::Omniglot) {
        let runs = omniglot::load_runs(&dataset.root.join(OMNIGLOT_RUNS_FILE))?;
        Some(omniglot_entry(embedder, &runs, config, observer)?)
    } else {
        None
    };

    let summary_of = |d: &Dataset| DataSummary {
        name: d.name.clone(),
        root: d.root.clone(),
        layout: format!("{:?}", d.layout),
        writers: d.writers().len(),
        genuine: d.samples.iter().filter(|s| s.label == Label::Genuine).count(),
        forged: d.samples.iter().filter(|s| s.label == Label::Forged).count(),
        duplicates_dropped: d.duplicates.len(),
        content_hash: d.content_hash.clone(),
    };
    let mut report = EvaluationReport {
        format_version: REPORT_FORMAT_VERSION,
        bundle: BundleSummary {
            dir: input.bundle_dir.to_path_buf(),
            trained_on: manifest.provenance.dataset.clone(),
            trained_on_content_hash: manifest.provenance.dataset_content_hash.clone(),
            model_sha256: model.sha256.clone(),
            input_height: manifest.preprocess.height,
            input_width: manifest.preprocess.width,
            calibration_references: calibration.references,
        },
        runtime: input.runtime.to_string(),
        precision: input.precision,
        data: summary_of(dataset),
        split: plan,
        primary_references: calibration.references,
        verification,
        identification,
        leakage,
        omniglot,
        anchors: Vec::new(),
        skipped,
        notes,
        scores,
    };
    report.anchors = anchors(&report, dataset.layout);
    Ok(report)
}

/// What every reference count's verification entry is computed from.
struct VerificationContext<'a> {
    test: &'a [EmbeddedSample],
    /// Calibration writers' samples and who they are, in words.
    calibration: Option<&'a (Vec<EmbeddedSample>, String)>,
    bundle: &'a crate::manifest::Calibration,
    plan: &'a SplitPlan,
    options: &'a SuiteOptions,
    data: &'a str,
    trained_on: &'a str,
}

impl VerificationContext<'_> {
    /// The entry at R references and the test scores behind it.
    fn entry(&self, r: usize) -> (VerificationEntry, VerificationScores) {
        let Self { test, calibration: calibration_samples, bundle, plan, options, data, trained_on } = *self;
        let bundle_source =
            format!("bundle manifest: calibrated on the validation writers of {trained_on} at R={}", bundle.references);
        let validation_scores = calibration_samples.map(|(s, _)| protocol::verification_scores(s, r, options.seed));
        let (thresholds, threshold_source) = if r == bundle.references {
            (bundle.thresholds, bundle_source)
        } else {
            match (validation_scores.as_ref().map(protocol::calibrate), calibration_samples) {
                (Some(Ok(t)), Some((_, who))) => (t, format!("calibrated at R={r} on the {who}")),
                (Some(Err(_)), _) => (
                    bundle.thresholds,
                    format!(
                        "{bundle_source} (no calibration writer has more than {r} genuine signatures, so none at R={r})"
                    ),
                ),
                _ => (bundle.thresholds, format!("{bundle_source} (no calibration writers for R={r})")),
            }
        };
        let validation = match (plan.mode, &validation_scores) {
            (Mode::InDomain, Some(v)) if v.writers > 0 => {
                let eer = |impostor: &[f32]| {
                    let e = metrics::eer(&v.genuine, impostor).eer;
                    e.is_finite().then_some(e)
                };
                Some(ValidationFigures { writers: v.writers, skilled_eer: eer(&v.skilled), random_eer: eer(&v.random) })
            }
            _ => None,
        };
        let test_scores = protocol::verification_scores(test, r, options.seed);
        let metrics = (test_scores.writers > 0).then(|| protocol::verification_metrics(&test_scores, r, &thresholds));
        let protocol = format!(
            "verification, R={r}: {n} test writers of {data} ({mode}); R genuine references per writer drawn with seed {seed}, \
             score = int8 similarity to the nearest of them (the gallery's rule); genuine = the writer's other genuine signatures, \
             skilled = forgeries of that writer, random = other test writers' genuine signatures; EER and AUC on test \
             scores, FAR/FRR at thresholds not calibrated on test writers; writers with at most R genuine signatures are \
             left out",
            n = test_scores.writers,
            mode = match plan.mode {
                Mode::InDomain => "held out from training and calibration",
                Mode::CrossDataset => "a data set the model never saw",
            },
            seed = options.seed,
        );
        (
            VerificationEntry { references: r, protocol, threshold_source, thresholds, test: metrics, validation },
            test_scores,
        )
    }
}

fn identification_entry(
    task: IdentificationTask,
    test: &[EmbeddedSample],
    options: &SuiteOptions,
) -> IdentificationEntry {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in test.iter().filter(|s| s.label == Label::Genuine) {
        *counts.entry(s.writer.as_str()).or_default() += 1;
    }
    let eligible = counts.values().filter(|&&n| n > task.k_shot).count();
    let n_way = task.n_way.unwrap_or(eligible);
    let accuracy = protocol::identification_accuracy(test, n_way, task.k_shot, options.trials, options.seed);
    let protocol = format!(
        "identification, {n_way}-way {k}-shot: {trials} seeded trials; each picks {n_way} of the {eligible} test writers \
         with more than {k} genuine signatures, enrols {k} genuine signatures of each, and classifies one held-out \
         genuine signature of one of them by the highest score (nearest enrolled template)",
        k = task.k_shot,
        trials = options.trials,
    );
    IdentificationEntry {
        n_way,
        k_shot: task.k_shot,
        trials: options.trials,
        accuracy,
        chance: if n_way > 0 { 1.0 / n_way as f64 } else { f64::NAN },
        eligible_writers: eligible,
        protocol,
    }
}

fn leakage_entry(test: &Embedded) -> Option<LeakageEntry> {
    let (mut genuine, mut forged) = (Vec::new(), Vec::new());
    for (sample, features) in test.samples.iter().zip(&test.background) {
        match sample.label {
            Label::Genuine => genuine.push(*features),
            Label::Forged => forged.push(*features),
        }
    }
    if genuine.is_empty() || forged.is_empty() {
        return None;
    }
    let per_feature: BTreeMap<String, f64> = BACKGROUND_FEATURES
        .iter()
        .enumerate()
        .map(|(f, name)| {
            let g: Vec<f32> = genuine.iter().map(|v| v[f]).collect();
            let k: Vec<f32> = forged.iter().map(|v| v[f]).collect();
            (name.to_string(), single_feature_eer(&g, &k))
        })
        .collect();
    let eer = per_feature.values().copied().fold(f64::NAN, f64::min);
    Some(LeakageEntry {
        protocol: "leakage: a threshold on one background statistic alone (border mean, mean and share of faint \
                   pixels) of the preprocessed test images, genuine vs skilled forgeries, best feature and direction; \
                   50% EER means scanning conditions give nothing away"
            .into(),
        background_only_eer: eer,
        per_feature,
        genuine_images: genuine.len(),
        forged_images: forged.len(),
        near_chance: eer >= LEAKAGE_ALARM_EER,
    })
}

/// Scores Omniglot's runs exactly as they are defined: each test image is matched to the most
/// similar of the run's training images; correct when that is the one `class_labels.txt` names.
pub fn omniglot_entry(
    embedder: &mut dyn Embedder,
    runs: &[OneShotRun],
    config: &PreprocessConfig,
    observer: &mut dyn Observer,
) -> Result<OmniglotEntry, EvaluationError> {
    let images: usize = runs.iter().map(|r| r.training.len() + r.test.len()).sum();
    observer.phase(&format!("embedding {images} Omniglot run images"), images);
    let mut results = Vec::with_capacity(runs.len());
    for run in runs {
        let training = templates_of(embedder, &run.training, config)?;
        let test = templates_of(embedder, &run.test, config)?;
        observer.advance(run.training.len() + run.test.len());
        let mut answers = Vec::with_capacity(run.test.len());
        for (name, _) in &run.test {
            let correct = run
                .answers
                .iter()
                .find(|(t, _)| t == name)
                .and_then(|(_, c)| run.training.iter().position(|(n, _)| n == c))
                .ok_or_else(|| {
                    EvaluationError::Omniglot(format!("{}: {name} has no answer in class_labels.txt", run.name))
                })?;
            answers.push(correct);
        }
        let accuracy = protocol::one_shot_accuracy(&training, &test, &answers);
        let total = test.len();
        results.push(OneShotRunResult {
            run: run.name.clone(),
            correct: (accuracy * total as f64).round() as usize,
            total,
            accuracy,
        });
    }
    observer.finish();
    if results.is_empty() {
        return Err(EvaluationError::Omniglot("all_runs.zip holds no run".into()));
    }
    let mean = results.iter().map(|r| r.accuracy).sum::<f64>() / results.len() as f64;
    Ok(OmniglotEntry {
        protocol: format!(
            "Omniglot one-shot: the {} official 20-way within-alphabet runs of all_runs.zip (Lake et al.); each test \
             image is assigned the most similar of the run's 20 training images (int8 similarity), correct when that \
             is the image class_labels.txt names; accuracy per run and the mean over runs",
            results.len()
        ),
        runs: results,
        mean_accuracy: mean,
        error_rate: 1.0 - mean,
    })
}

fn templates_of(
    embedder: &mut dyn Embedder,
    images: &[(String, Vec<u8>)],
    config: &PreprocessConfig,
) -> Result<Vec<Template>, EvaluationError> {
    let mut batch = Vec::with_capacity(images.len());
    for (name, bytes) in images {
        let image = preprocess_bytes(bytes, config)
            .map_err(|e| EvaluationError::Omniglot(format!("{name}: cannot be preprocessed: {e}")))?;
        batch.push(image);
    }
    let embeddings = embedder.embed(&batch)?;
    embeddings
        .iter()
        .map(|e| Template::from_embedding(e).map_err(|err| EvaluationError::Embed(EmbedError(err.to_string()))))
        .collect()
}

fn percent(v: f64) -> String {
    if v.is_finite() { format!("{:.2}%", v * 100.0) } else { "n/a".into() }
}

/// The published figures the report sets ours beside, with what each measured.
fn anchors(report: &EvaluationReport, layout: Layout) -> Vec<Anchor> {
    let name = report.data.name.to_ascii_lowercase();
    let primary = report.verification_at(report.primary_references).and_then(|e| e.test);
    let skilled = primary.and_then(|m| m.skilled);
    let r = report.primary_references;
    let ours_skilled = |data: &str| -> Option<String> {
        name.contains(data).then_some(())?;
        let s = skilled?;
        let at = s.at_validation_eer_threshold;
        Some(format!(
            "skilled EER {} (AUC {:.3}); at the calibrated threshold FAR {} / FRR {}, balanced accuracy {}",
            percent(s.eer),
            s.auc,
            percent(at.far),
            percent(at.frr),
            percent(1.0 - (at.far + at.frr) / 2.0)
        ))
    };
    let our_verification_protocol = format!(
        "offline images, R={r} references per {} test writer, thresholds from validation writers or the bundle, \
         never from test writers ({})",
        report.data.name,
        match report.split.mode {
            Mode::InDomain => "held-out writers",
            Mode::CrossDataset => "cross-data-set",
        }
    );
    let omniglot = report.omniglot.as_ref().filter(|_| layout == Layout::Omniglot || name.contains("omniglot"));
    vec![
        Anchor {
            benchmark: "SVC2004 (skilled forgeries)".into(),
            published: "EER 2.84% (Task 1) / 2.89% (Task 2), best teams".into(),
            published_protocol: "on-line: pen trajectories with timing (Task 2 also pressure and angles), 5 enrolment \
                                 signatures, 60 hidden evaluation users"
                .into(),
            ours: ours_skilled("svc2004"),
            our_protocol: format!("{our_verification_protocol}; pen dynamics are not available to an image model"),
        },
        Anchor {
            benchmark: "CEDAR".into(),
            published: "SigNet: accuracy 100% (FAR 0, FRR 0)".into(),
            published_protocol: "writer-independent Siamese CNN; threshold chosen on the test pairs; raw scans, \
                                 whose background (grey genuine, white forgeries) gives the answer away"
                .into(),
            ours: ours_skilled("cedar"),
            our_protocol: format!("{our_verification_protocol}; backgrounds normalised (see the leakage check)"),
        },
        Anchor {
            benchmark: "BHSig260".into(),
            published: "SigNet: accuracy 86.11% (Bengali), 84.64% (Hindi)".into(),
            published_protocol: "writer-independent Siamese CNN; threshold chosen on the test pairs".into(),
            ours: ours_skilled("bhsig"),
            our_protocol: if name.contains("bhsig260_sample") {
                format!("{our_verification_protocol} (a 4-writer sample here, not the full 260)")
            } else {
                our_verification_protocol.clone()
            },
        },
        Anchor {
            benchmark: "Omniglot 20-way one-shot (20 official runs)".into(),
            published: "people 95.5%, Koch et al. Siamese CNN 92.0%, BPL 96.7%".into(),
            published_protocol: "the 20 runs of all_runs.zip; Koch et al. trained on the full 30-alphabet background \
                                 set with augmentation"
                .into(),
            ours: omniglot.map(|o| format!("accuracy {} (error {})", percent(o.mean_accuracy), percent(o.error_rate))),
            our_protocol: "the same 20 runs, nearest training image by embedding similarity; a model trained on \
                           images_background_small1/2 only"
                .into(),
        },
    ]
}

fn eer_cell(m: Option<&protocol::ForgeryMetrics>) -> String {
    m.map_or_else(|| "n/a".into(), |m| format!("{:>7}", percent(m.eer)))
}

fn rates_cell(m: Option<&protocol::ForgeryMetrics>) -> String {
    m.map_or_else(
        || "n/a".into(),
        |m| format!("{}/{}", percent(m.at_validation_eer_threshold.far), percent(m.at_validation_eer_threshold.frr)),
    )
}

/// A short plain-text summary of a report (what both CLIs print).
pub fn summary(report: &EvaluationReport) -> String {
    let mut out = String::new();
    let mode = match report.split.mode {
        Mode::InDomain => "in-domain",
        Mode::CrossDataset => "cross-data-set",
    };
    out.push_str(&format!(
        "{} on {} ({mode}, {} test writers), {} {}\n",
        report.bundle.dir.display(),
        report.data.name,
        report.split.test.len(),
        report.runtime,
        precision_name(report.precision)
    ));
    if !report.verification.is_empty() {
        out.push_str("verification (FAR/FRR at thresholds from validation writers or the bundle):\n");
        out.push_str("   R  writers  skilled EER  FAR/FRR          random EER  FAR/FRR\n");
        let mut entries: Vec<&VerificationEntry> = report.verification.values().collect();
        entries.sort_by_key(|e| e.references);
        for e in entries {
            match e.test {
                Some(m) => out.push_str(&format!(
                    "  {:>2}  {:>7}  {:>11}  {:<15}  {:>10}  {}\n",
                    e.references,
                    m.writers,
                    eer_cell(m.skilled.as_ref()),
                    rates_cell(m.skilled.as_ref()),
                    eer_cell(m.random.as_ref()),
                    rates_cell(m.random.as_ref())
                )),
                None => out.push_str(&format!(
                    "  {:>2}  no test writer has more than {} genuine signatures\n",
                    e.references, e.references
                )),
            }
        }
    }
    if !report.identification.is_empty() {
        let tasks: Vec<String> = report
            .identification
            .values()
            .map(|e| {
                format!(
                    "{}-way {}-shot {} (chance {})",
                    e.n_way,
                    e.k_shot,
                    e.accuracy.map_or_else(|| "n/a".into(), percent),
                    percent(e.chance)
                )
            })
            .collect();
        out.push_str(&format!("identification: {}\n", tasks.join("; ")));
    }
    if let Some(l) = &report.leakage {
        out.push_str(&format!("leakage: background-only EER {} ({})\n", percent(l.background_only_eer), l.verdict()));
    }
    if let Some(o) = &report.omniglot {
        out.push_str(&format!(
            "omniglot: mean 20-way one-shot accuracy {} over {} runs\n",
            percent(o.mean_accuracy),
            o.runs.len()
        ));
    }
    if !report.skipped.is_empty() {
        out.push_str(&format!("skipped {} unreadable images (listed in the report)\n", report.skipped.len()));
    }
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageSource;
    use crate::gallery::EMBEDDING_DIM;
    use crate::manifest::{Calibration, GraphIo, ModelFile, Provenance};
    use crate::protocol::OperatingThresholds;
    use std::io::Write;

    /// A stand-in network: the embedding is the image's coarse 8×16 ink map, so identical
    /// images embed identically and different drawings differ.
    struct Coarse;

    impl Embedder for Coarse {
        fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(batch
                .iter()
                .map(|p| {
                    let (h, w) = (p.height as usize, p.width as usize);
                    let mut v = vec![0.0f32; EMBEDDING_DIM];
                    for y in 0..h {
                        for x in 0..w {
                            v[(y * 8 / h) * 16 + x * 16 / w] += p.pixels[y * w + x];
                        }
                    }
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                    v.iter().map(|x| x / n).collect()
                })
                .collect())
        }
    }

    /// A PNG of one stroke pattern: `shape` picks where the strokes go.
    fn png(shape: usize, wobble: usize) -> Vec<u8> {
        let (w, h) = (96u32, 48u32);
        let mut img = image::GrayImage::from_pixel(w, h, image::Luma([250]));
        for i in 0..400u32 {
            let t = i as f32 / 400.0;
            let x = 8.0 + t * 80.0;
            let y = 24.0 + 14.0 * ((shape as f32 + 1.0) * 3.0 * t + shape as f32).sin() + wobble as f32 * 0.3;
            for d in 0..2 {
                img.put_pixel((x as u32 + d).min(w - 1), (y as u32).min(h - 1), image::Luma([10]));
            }
        }
        let mut bytes = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .expect("png");
        bytes
    }

    fn manifest(dataset: &str, split: Option<crate::dataset::splits::WriterSplit>) -> Manifest {
        let t = OperatingThresholds { eer: 0.9, far_1pct: 0.95, far_0_1pct: 0.97, nearest_eer_far: None };
        let calibration = Calibration {
            references: 3,
            thresholds: Thresholds { skilled: Some(t), random: t },
            replay_similarity: 0.99,
        };
        let preprocess = PreprocessConfig { height: 32, width: 64, ..PreprocessConfig::default() };
        Manifest {
            format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
            input_shape: [1, 32, 64],
            preprocess,
            embedding_dim: EMBEDDING_DIM as u32,
            io: GraphIo { input: "image".into(), output: "embedding".into() },
            f32_model: ModelFile { path: "model.onnx".into(), sha256: "00".into(), bytes: 0, calibration },
            int8_model: None,
            default_precision: Precision::F32,
            target_precision: Default::default(),
            provenance: Provenance {
                dataset: dataset.into(),
                dataset_content_hash: "ff".into(),
                training_config: serde_json::Value::Null,
                created_unix: 0,
                trainer_version: "test".into(),
                split,
            },
            test_metrics: serde_json::Value::Null,
            adaptive: None,
            fusion: None,
        }
    }

    /// Six writers with 5 genuine signatures (one shape each) and 2 forgeries (another shape).
    fn dataset(dir: &Path) -> Dataset {
        let mut samples = Vec::new();
        for w in 0..6 {
            for (label, shape, n) in [(Label::Genuine, w, 5), (Label::Forged, w + 10, 2)] {
                for k in 0..n {
                    let path = dir.join(format!("w{w}-{label:?}-{k}.png"));
                    let bytes = png(shape, k);
                    std::fs::write(&path, &bytes).expect("write");
                    samples.push(Sample {
                        writer: format!("w{w}"),
                        label,
                        source: ImageSource::File(path),
                        sha256: crate::sha256_hex(&bytes),
                    });
                }
            }
        }
        Dataset::from_samples("toy".into(), dir.to_path_buf(), Layout::GenuineForged, samples)
    }

    #[test]
    fn in_domain_report_uses_the_split_and_never_calibrates_on_test_writers() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dataset(dir.path());
        let split = crate::dataset::splits::WriterSplit {
            train: vec!["w0".into(), "w1".into()],
            validation: vec!["w2".into(), "w3".into()],
            test: vec!["w4".into(), "w5".into()],
        };
        let m = manifest("toy", Some(split));
        let input = EvaluationInput {
            manifest: &m,
            bundle_dir: dir.path(),
            precision: Precision::F32,
            runtime: "test",
            dataset: &data,
            calibration_dataset: None,
        };
        let options = SuiteOptions { trials: 50, ..SuiteOptions::default() };
        let report = evaluate(&mut Coarse, &input, &options, &mut Quiet).expect("evaluate");
        assert_eq!(report.split.mode, Mode::InDomain);
        assert_eq!(report.split.test, vec!["w4", "w5"]);
        // R=3 is the manifest's: its thresholds are used as they are.
        let r3 = report.verification_at(3).expect("R3");
        assert_eq!(r3.thresholds, m.f32_model.calibration.thresholds);
        let t = r3.test.expect("test figures");
        assert_eq!(t.writers, 2);
        assert_eq!(t.skilled.map(|s| s.genuine_scores), Some(2 * 2));
        assert_eq!(t.random.map(|s| s.impostor_scores), Some(2 * 5));
        // R=1 is calibrated on the validation writers, not taken from the manifest.
        let r1 = report.verification_at(1).expect("R1");
        assert!(r1.threshold_source.contains("validation writers"), "{}", r1.threshold_source);
        assert_ne!(r1.thresholds, m.f32_model.calibration.thresholds);
        // R=5 and R=10 leave no genuine probe: reported as such, not as a figure.
        assert!(report.verification_at(5).expect("R5").test.is_none());
        assert!(report.verification_at(10).expect("R10").test.is_none());
        // Distinct shapes per writer: identification among the 2 test writers is perfect.
        assert_eq!(report.identification["allway_1shot"].accuracy, Some(1.0));
        assert_eq!(report.identification["5way_1shot"].accuracy, None);
        let leakage = report.leakage.as_ref().expect("leakage");
        assert_eq!((leakage.genuine_images, leakage.forged_images), (10, 4));
        let json = serde_json::to_value(&report).expect("json");
        assert!(json["verification"]["R3"]["test"]["skilled"]["eer"].is_number(), "{json}");
        assert!(json["verification"]["R1"]["test"]["random"]["auc"].is_number());
        assert!(summary(&report).contains("R  writers"));
    }

    #[test]
    fn another_data_set_is_all_test_writers_with_the_bundles_thresholds() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dataset(dir.path());
        let m = manifest("elsewhere", None);
        let input = EvaluationInput {
            manifest: &m,
            bundle_dir: dir.path(),
            precision: Precision::F32,
            runtime: "test",
            dataset: &data,
            calibration_dataset: None,
        };
        let options = SuiteOptions { references: vec![1, 3], trials: 20, ..SuiteOptions::default() };
        let report = evaluate(&mut Coarse, &input, &options, &mut Quiet).expect("evaluate");
        assert_eq!(report.split.mode, Mode::CrossDataset);
        assert_eq!(report.split.test.len(), 6);
        for r in [1, 3] {
            assert_eq!(report.verification_at(r).expect("entry").thresholds, m.f32_model.calibration.thresholds);
        }
        // The same data set without a recorded split cannot be evaluated honestly.
        let m = manifest("toy", None);
        let input = EvaluationInput { manifest: &m, ..input };
        assert!(matches!(evaluate(&mut Coarse, &input, &options, &mut Quiet), Err(EvaluationError::Split(_))));
    }

    fn zip_with(path: &Path, entries: &[(String, Vec<u8>)]) {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).expect("create"));
        for (name, bytes) in entries {
            zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).expect("start");
            zip.write_all(bytes).expect("write");
        }
        zip.finish().expect("finish");
    }

    #[test]
    fn omniglot_runs_are_scored_as_defined() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(OMNIGLOT_RUNS_FILE);
        // run01: each test image is a redrawing of its class; run02's labels are all wrong.
        let mut entries = Vec::new();
        for (run, labels_right) in [("run01", true), ("run02", false)] {
            let mut labels = String::new();
            for c in 0..3 {
                entries.push((format!("{run}/training/class{c:02}.png"), png(c, 0)));
                entries.push((format!("{run}/test/item{c:02}.png"), png(c, 1)));
                let answer = if labels_right { c } else { (c + 1) % 3 };
                labels.push_str(&format!("{run}/test/item{c:02}.png {run}/training/class{answer:02}.png\n"));
            }
            entries.push((format!("{run}/class_labels.txt"), labels.into_bytes()));
        }
        zip_with(&path, &entries);
        let runs = omniglot::load_runs(&path).expect("runs");
        let config = PreprocessConfig { height: 32, width: 64, ..PreprocessConfig::default() };
        let entry = omniglot_entry(&mut Coarse, &runs, &config, &mut Quiet).expect("score");
        assert_eq!(entry.runs.len(), 2);
        assert_eq!((entry.runs[0].correct, entry.runs[0].total, entry.runs[0].accuracy), (3, 3, 1.0));
        assert_eq!(entry.runs[1].correct, 0);
        assert!((entry.mean_accuracy - 0.5).abs() < 1e-12);
        assert!((entry.error_rate - 0.5).abs() < 1e-12);
    }

    #[test]
    fn protocols_parse() {
        assert_eq!("Leakage".parse::<Protocol>(), Ok(Protocol::Leakage));
        assert!("roc".parse::<Protocol>().is_err());
        assert_eq!(identification_key(IdentificationTask { n_way: None, k_shot: 5 }), "allway_5shot");
        assert_eq!(verification_key(10), "R10");
    }
}
