//! The model bundle's `manifest.json`: everything the device needs to use the model exactly as
//! it was trained, and to refuse a bundle whose files are not the ones that were measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::preprocess::PreprocessConfig;
use crate::protocol::Thresholds;

/// The manifest format this build reads and writes.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// File names inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const MODEL_F32_FILE: &str = "model.onnx";
pub const MODEL_INT8_FILE: &str = "model.int8.onnx";
pub const COHORT_FILE: &str = "cohort.bin";

/// Numeric precision of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Int8,
}

/// One model file of the bundle, its content hash, and the decision thresholds calibrated
/// with this very file (int8 scores differ slightly from f32 ones, so each has its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Path relative to the bundle directory.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub calibration: Calibration,
}

/// Thresholds and the replay guard's level, from validation writers only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// References enrolled per validation writer when calibrating.
    pub references: usize,
    pub thresholds: Thresholds,
    /// Similarity above which a probe is treated as a possible replayed copy of a reference:
    /// the highest similarity between two distinct genuine signatures of one validation writer.
    pub replay_similarity: f32,
}

/// Names of the graph's input and output tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphIo {
    pub input: String,
    pub output: String,
}

/// Where the model came from, so a figure can be traced to its data and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub dataset: String,
    pub dataset_content_hash: String,
    /// The training configuration as saved beside the checkpoint.
    pub training_config: serde_json::Value,
    pub created_unix: u64,
    pub trainer_version: String,
    /// The writer-disjoint split the model was trained, calibrated and tested on, so any later
    /// evaluation can keep test writers out of calibration.
    pub split: Option<crate::dataset::splits::WriterSplit>,
}

/// The precision for one kind of CPU, and the measurement that chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetPrecision {
    pub precision: Precision,
    /// The figures behind the choice (e.g. latencies or instruction counts of both models).
    pub measured: String,
}

/// The keys of [`Manifest::target_precision`] that describe the CPU this code runs on, most
/// specific first: the architecture with each extension that changes which of tract's kernels
/// run (on aarch64, SVE2 selects its SVE kernels, where int8 costs more than f32; without it the
/// dot product makes int8 the cheaper; measured in README "Speed on the kiosk"), then the
/// architecture alone.
pub fn target_keys() -> Vec<String> {
    let arch = std::env::consts::ARCH;
    let mut keys = Vec::with_capacity(3);
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("sve2") {
            keys.push(format!("{arch}+sve2"));
        }
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            keys.push(format!("{arch}+dotprod"));
        }
    }
    keys.push(arch.to_string());
    keys
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub preprocess: PreprocessConfig,
    /// `[batch, 1, height, width]`; batch is dynamic.
    pub input_shape: [u32; 3],
    pub embedding_dim: u32,
    pub io: GraphIo,
    pub f32_model: ModelFile,
    pub int8_model: Option<ModelFile>,
    /// The precision the device uses by default (measured best on accuracy and speed), where
    /// `target_precision` has no entry for the device's CPU.
    pub default_precision: Precision,
    /// The precision measured best on particular CPUs, keyed by [`target_keys`] (`x86_64`,
    /// `aarch64`, `aarch64+dotprod`, ...): int8 can be the faster model on one kiosk CPU and
    /// the slower on another (tract's int8 kernels need the Armv8.2 dot-product instructions to
    /// beat f32 on ARM), and one bundle serves both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_precision: BTreeMap<String, TargetPrecision>,
    pub provenance: Provenance,
    /// Test-writer figures keyed by precision (`f32`, `int8`), as produced by the evaluation.
    pub test_metrics: serde_json::Value,
    /// Writer-adaptive decisions: the background cohort and the rule the device decides with.
    /// `None` in bundles made before cohorts existed: the device then uses the nearest rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveDecision>,
    /// Fusion of the on-line (pen trajectory) score with the image score, for verifications
    /// that come with a trajectory. `None` when not calibrated: such verifications are decided
    /// on the image alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionDecision>,
}

/// How a bundle fuses the on-line score with the image model's nearest-reference similarity
/// ([`crate::online::fusion`]), calibrated by `autograph-train fuse` on validation users that
/// have both images and trajectories and that the model never trained on. Writers are enrolled
/// dynamically with [`crate::online::DynamicSettings::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionDecision {
    /// Per model precision (the image similarity's distribution depends on it).
    pub f32: Option<FusionCalibration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<FusionCalibration>,
    /// Where the calibration came from, and what it measured on test users.
    pub provenance: FusionProvenance,
}

impl FusionDecision {
    pub fn calibration(&self, precision: Precision) -> Option<&FusionCalibration> {
        match precision {
            Precision::F32 => self.f32.as_ref(),
            Precision::Int8 => self.int8.as_ref(),
        }
    }
}

/// One precision's fusion: weights and z-statistics, and thresholds of the fused score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionCalibration {
    pub fusion: crate::online::Fusion,
    /// Thresholds of the fused score, from validation users.
    pub thresholds: Thresholds,
}

/// The data a fusion was calibrated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionProvenance {
    /// The on-line data set and the image data set (same signatures, same users).
    pub online: String,
    pub images: String,
    /// The image data set's writers whose signatures calibrated it (validation writers of the
    /// model's split), and the test writers it was measured on.
    pub validation_users: Vec<String>,
    pub test_users: Vec<String>,
    /// References enrolled per user.
    pub references: usize,
    /// Figures of image-only, dynamic-only and fused scoring on the test users.
    pub test_metrics: serde_json::Value,
}

/// The cohort file of a bundle and the writer-adaptive rule calibrated with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveDecision {
    /// `cohort.bin` ([`crate::adaptive::Cohort::to_bytes`]), hashed like the model files.
    pub cohort: CohortFile,
    /// The rule `verify` decides with (chosen on validation writers, see docs/evaluation.md).
    pub rule: crate::adaptive::DecisionRule,
    /// Thresholds of `rule`'s score per model precision, from validation writers. A writer
    /// without a fitted model falls back to the nearest rule and that precision's own
    /// [`ModelFile::calibration`].
    pub f32_thresholds: Thresholds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_thresholds: Option<Thresholds>,
    /// Regularisation of the per-writer classifier fitted at enrolment.
    pub config: crate::adaptive::AdaptiveConfig,
}

impl AdaptiveDecision {
    /// The thresholds of the adaptive rule for a precision, if calibrated.
    pub fn thresholds(&self, precision: Precision) -> Option<&Thresholds> {
        match precision {
            Precision::F32 => Some(&self.f32_thresholds),
            Precision::Int8 => self.int8_thresholds.as_ref(),
        }
    }
}

/// The background cohort shipped in a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortFile {
    /// Path relative to the bundle directory.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    /// Templates in the file, and how many training writers they come from (never validation
    /// or test writers).
    pub templates: usize,
    pub writers: usize,
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid manifest: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: manifest format version {found} is not supported (this build reads version {supported})")]
    Version { path: PathBuf, found: u32, supported: u32 },
    #[error(
        "{path}: sha256 mismatch: the manifest says {expected}, the file has {actual}; the bundle was modified or is incomplete"
    )]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("{path}: the bundle has no {precision:?} model")]
    MissingModel { path: PathBuf, precision: Precision },
    #[error("{path}: invalid manifest: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    /// Reads `manifest.json` from a bundle directory, checking the format version first.
    pub fn load(bundle_dir: &Path) -> Result<Manifest, BundleError> {
        use std::io::Read;
        /// A manifest is a few KiB; a larger file is not one, and is refused before it is read.
        const MAX_MANIFEST_LEN: u64 = 1024 * 1024;
        let path = bundle_dir.join(MANIFEST_FILE);
        let io = |source| BundleError::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut text = String::new();
        if len <= MAX_MANIFEST_LEN {
            file.take(MAX_MANIFEST_LEN + 1).read_to_string(&mut text).map_err(io)?;
        }
        let len = len.max(text.len() as u64);
        if len > MAX_MANIFEST_LEN {
            return Err(BundleError::Invalid {
                path,
                message: format!("the file is {len} bytes, more than the {MAX_MANIFEST_LEN} bytes a manifest can be"),
            });
        }
        Self::from_json(&text, &path)
    }

    /// Parses and checks the text of a `manifest.json` (`path` only names it in errors); what
    /// [`Manifest::load`] does after reading the file, separate so it can be fuzzed in memory.
    pub fn from_json(text: &str, path: &Path) -> Result<Manifest, BundleError> {
        let path = path.to_path_buf();
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| BundleError::Parse { path: path.clone(), message: e.to_string() })?;
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| BundleError::Parse { path: path.clone(), message: "missing format_version".into() })?;
        if found != MANIFEST_FORMAT_VERSION as u64 {
            return Err(BundleError::Version {
                path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| BundleError::Parse { path: path.clone(), message: e.to_string() })?;
        manifest
            .preprocess
            .validate()
            .map_err(|e| BundleError::Invalid { path: path.clone(), message: e.to_string() })?;
        if manifest.input_shape != [1, manifest.preprocess.height, manifest.preprocess.width] {
            return Err(BundleError::Invalid {
                path,
                message: format!(
                    "input_shape {:?} does not match the preprocessing size {}x{}",
                    manifest.input_shape, manifest.preprocess.height, manifest.preprocess.width
                ),
            });
        }
        let chosen = std::iter::once(("default_precision".to_string(), manifest.default_precision))
            .chain(manifest.target_precision.iter().map(|(key, t)| (format!("target_precision.{key}"), t.precision)));
        for (field, precision) in chosen {
            if manifest.model(precision).is_none() {
                return Err(BundleError::Invalid {
                    path,
                    message: format!("{field} is {precision:?} but the bundle has no model of that precision"),
                });
            }
        }
        let files = [
            Some(("f32_model.path", &manifest.f32_model.path)),
            manifest.int8_model.as_ref().map(|m| ("int8_model.path", &m.path)),
            manifest.adaptive.as_ref().map(|a| ("adaptive.cohort.path", &a.cohort.path)),
        ];
        for (field, name) in files.into_iter().flatten() {
            // Joined to the bundle directory: an absolute path, `..` or a subdirectory would read
            // outside it (found by fuzzing: a model at `/dev/zero` was read until memory ran out).
            let mut parts = Path::new(name).components();
            if !matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None)) {
                return Err(BundleError::Invalid {
                    path,
                    message: format!("{field} {name:?} is not the name of a file in the bundle directory"),
                });
            }
        }
        Ok(manifest)
    }

    /// Writes `manifest.json` (pretty-printed, atomically via a temp file and rename).
    pub fn save(&self, bundle_dir: &Path) -> Result<(), BundleError> {
        let path = bundle_dir.join(MANIFEST_FILE);
        let tmp = bundle_dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| BundleError::Parse { path: path.clone(), message: e.to_string() })?;
        std::fs::write(&tmp, text + "\n").map_err(|source| BundleError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &path).map_err(|source| BundleError::Io { path, source })
    }

    /// The precision a device whose CPU is described by `keys` (most specific first, as
    /// [`target_keys`] gives them) uses when none is asked for, and the key that chose it
    /// (`None`: the bundle's `default_precision`).
    pub fn precision_for<'a>(&'a self, keys: &[String]) -> (Precision, Option<&'a str>) {
        keys.iter()
            .find_map(|key| self.target_precision.get_key_value(key))
            .map_or((self.default_precision, None), |(key, target)| (target.precision, Some(key.as_str())))
    }

    /// The model file of a precision.
    pub fn model(&self, precision: Precision) -> Option<&ModelFile> {
        match precision {
            Precision::F32 => Some(&self.f32_model),
            Precision::Int8 => self.int8_model.as_ref(),
        }
    }

    /// Reads a model file of the bundle and checks its hash: the device never runs bytes
    /// other than the ones that were measured.
    pub fn read_model(&self, bundle_dir: &Path, precision: Precision) -> Result<Vec<u8>, BundleError> {
        let file = self
            .model(precision)
            .ok_or_else(|| BundleError::MissingModel { path: bundle_dir.to_path_buf(), precision })?;
        let path = bundle_dir.join(&file.path);
        let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
        let actual = crate::sha256_hex(&bytes);
        if actual != file.sha256 {
            return Err(BundleError::HashMismatch { path, expected: file.sha256.clone(), actual });
        }
        Ok(bytes)
    }

    /// Reads and checks the bundle's cohort (hash, then format); `None` when the bundle has none.
    pub fn read_cohort(&self, bundle_dir: &Path) -> Result<Option<crate::adaptive::Cohort>, BundleError> {
        let Some(adaptive) = &self.adaptive else { return Ok(None) };
        let path = bundle_dir.join(&adaptive.cohort.path);
        let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
        let actual = crate::sha256_hex(&bytes);
        if actual != adaptive.cohort.sha256 {
            return Err(BundleError::HashMismatch { path, expected: adaptive.cohort.sha256.clone(), actual });
        }
        crate::adaptive::Cohort::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| BundleError::Invalid { path, message: e.to_string() })
    }

    /// The identity of the bundle that galleries are tied to: sha256 of the f32 model's hash
    /// and the preprocessing, so templates from another model or preprocessing are refused.
    pub fn model_identity(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let preprocess = serde_json::to_string(&self.preprocess).unwrap_or_default();
        let digest = Sha256::digest(format!("{}\n{}", self.f32_model.sha256, preprocess).as_bytes());
        digest.into()
    }
}

/// Describes a model file of the bundle for the manifest.
pub fn describe_model_file(
    bundle_dir: &Path,
    file_name: &str,
    calibration: Calibration,
) -> Result<ModelFile, BundleError> {
    let path = bundle_dir.join(file_name);
    let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
    Ok(ModelFile {
        path: file_name.to_string(),
        sha256: crate::sha256_hex(&bytes),
        bytes: bytes.len() as u64,
        calibration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{OperatingThresholds, Thresholds};

    pub(crate) fn sample_manifest(dir: &Path) -> Manifest {
        std::fs::write(dir.join(MODEL_F32_FILE), b"pretend onnx").expect("write");
        let t = OperatingThresholds { eer: 0.8, far_1pct: 0.85, far_0_1pct: 0.9, nearest_eer_far: None };
        let calibration = Calibration {
            references: 5,
            thresholds: Thresholds { skilled: Some(t), random: t },
            replay_similarity: 0.99,
        };
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            preprocess: PreprocessConfig::default(),
            input_shape: [1, 64, 128],
            embedding_dim: 128,
            io: GraphIo { input: "image".into(), output: "embedding".into() },
            f32_model: describe_model_file(dir, MODEL_F32_FILE, calibration).expect("describe"),
            int8_model: None,
            default_precision: Precision::F32,
            target_precision: Default::default(),
            provenance: Provenance {
                dataset: "toy".into(),
                dataset_content_hash: "00".into(),
                training_config: serde_json::json!({"epochs": 1}),
                created_unix: 0,
                trainer_version: "test".into(),
                split: None,
            },
            test_metrics: serde_json::Value::Null,
            adaptive: None,
            fusion: None,
        }
    }

    #[test]
    fn round_trip_and_hash_check() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = sample_manifest(dir.path());
        m.save(dir.path()).expect("save");
        let loaded = Manifest::load(dir.path()).expect("load");
        assert_eq!(loaded, m);
        assert_eq!(loaded.read_model(dir.path(), Precision::F32).expect("read"), b"pretend onnx");
        std::fs::write(dir.path().join(MODEL_F32_FILE), b"tampered").expect("write");
        assert!(matches!(loaded.read_model(dir.path(), Precision::F32), Err(BundleError::HashMismatch { .. })));
        assert!(matches!(loaded.read_model(dir.path(), Precision::Int8), Err(BundleError::MissingModel { .. })));
    }

    #[test]
    fn other_format_version_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut m = sample_manifest(dir.path());
        m.format_version = 99;
        m.save(dir.path()).expect("save");
        let err = Manifest::load(dir.path()).expect_err("version");
        assert!(matches!(err, BundleError::Version { found: 99, .. }), "{err}");
        std::fs::write(dir.path().join(MANIFEST_FILE), "{ not json").expect("write");
        assert!(matches!(Manifest::load(dir.path()), Err(BundleError::Parse { .. })));
    }

    #[test]
    fn file_paths_outside_the_bundle_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let good = sample_manifest(dir.path());
        for bad in ["/dev/zero", "../model.onnx", "models/model.onnx", "./model.onnx", ""] {
            let mut m = good.clone();
            m.f32_model.path = bad.into();
            let text = serde_json::to_string(&m).expect("json");
            let err = Manifest::from_json(&text, Path::new("manifest.json")).expect_err(bad);
            assert!(
                matches!(&err, BundleError::Invalid { message, .. } if message.contains("f32_model.path")),
                "{err}"
            );
        }
        let text = serde_json::to_string(&good).expect("json");
        assert_eq!(Manifest::from_json(&text, Path::new("manifest.json")).expect("plain name"), good);
    }

    #[test]
    fn precision_follows_the_most_specific_measured_target() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut m = sample_manifest(dir.path());
        m.int8_model = Some(m.f32_model.clone());
        let target = |precision| TargetPrecision { precision, measured: "test".into() };
        m.target_precision.insert("aarch64".into(), target(Precision::F32));
        m.target_precision.insert("aarch64+dotprod".into(), target(Precision::Int8));
        m.target_precision.insert("x86_64".into(), target(Precision::Int8));
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(m.precision_for(&keys(&["aarch64+dotprod", "aarch64"])), (Precision::Int8, Some("aarch64+dotprod")));
        assert_eq!(m.precision_for(&keys(&["aarch64"])), (Precision::F32, Some("aarch64")));
        assert_eq!(m.precision_for(&keys(&["x86_64"])), (Precision::Int8, Some("x86_64")));
        // A CPU nobody measured gets the bundle-wide default.
        m.default_precision = Precision::F32;
        assert_eq!(m.precision_for(&keys(&["riscv64"])), (Precision::F32, None));
        // This machine's keys end with its architecture.
        assert_eq!(target_keys().last().map(String::as_str), Some(std::env::consts::ARCH));

        let text = serde_json::to_string(&m).expect("json");
        assert_eq!(Manifest::from_json(&text, Path::new("manifest.json")).expect("load"), m);
        // Manifests written before per-target precision have no such field and still load.
        let mut old: serde_json::Value = serde_json::to_value(sample_manifest(dir.path())).expect("json");
        assert!(old.as_object_mut().expect("object").remove("target_precision").is_none(), "empty maps are omitted");
        let old = Manifest::from_json(&old.to_string(), Path::new("manifest.json")).expect("old manifest");
        assert!(old.target_precision.is_empty());
    }

    #[test]
    fn a_precision_without_its_model_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut m = sample_manifest(dir.path());
        m.target_precision
            .insert("aarch64".into(), TargetPrecision { precision: Precision::Int8, measured: "x".into() });
        let err = Manifest::from_json(&serde_json::to_string(&m).expect("json"), Path::new("manifest.json"))
            .expect_err("no int8 model");
        assert!(
            matches!(&err, BundleError::Invalid { message, .. } if message.contains("target_precision.aarch64")),
            "{err}"
        );
        m.target_precision.clear();
        m.default_precision = Precision::Int8;
        let err = Manifest::from_json(&serde_json::to_string(&m).expect("json"), Path::new("manifest.json"))
            .expect_err("no int8 model");
        assert!(matches!(&err, BundleError::Invalid { message, .. } if message.contains("default_precision")), "{err}");
    }

    #[test]
    fn identity_depends_on_model_and_preprocessing() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = sample_manifest(dir.path());
        let mut b = a.clone();
        b.preprocess.margin = 0.1;
        assert_ne!(a.model_identity(), b.model_identity());
        assert_eq!(a.model_identity(), a.clone().model_identity());
    }
}
