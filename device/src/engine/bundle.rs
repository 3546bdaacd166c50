//! A model bundle on disk: its directory, its checked manifest, and its cohort.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autograph_shared::adaptive::{AdaptiveConfig, Cohort, DecisionRule};
use autograph_shared::gallery::EMBEDDING_DIM;
use autograph_shared::manifest::{BundleError, Calibration, Manifest, Precision};
use autograph_shared::protocol::Thresholds;

use super::{EngineError, precision_name};

/// A bundle directory whose manifest was read and checked (format version, preprocessing,
/// embedding size), with its cohort when the manifest has an `adaptive` section (read and
/// checked at open: hash, then format). Model files are read, hash-checked, only when a runtime
/// loads them.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    cohort: Option<Arc<Cohort>>,
}

/// How a bundle decides with one model precision: the rule, its thresholds, and the nearest
/// rule's calibration for writers without a fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCalibration {
    /// The bundle's rule for this precision: the manifest's adaptive rule, or
    /// [`DecisionRule::Nearest`] for a bundle without one (or without thresholds of the rule
    /// for this precision, see `note`).
    pub rule: DecisionRule,
    /// Thresholds of `rule`'s score (the model file's own calibration for the nearest rule).
    pub thresholds: Thresholds,
    /// The model file's calibration: nearest-rule thresholds and the replay level.
    pub nearest: Calibration,
    /// Why the manifest's adaptive rule is not used with this precision, when it is not.
    pub note: Option<String>,
}

impl Bundle {
    /// Reads `<dir>/manifest.json` and checks what this build depends on.
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        let err = |source| EngineError::Bundle { dir: dir.to_path_buf(), source };
        let manifest = Manifest::load(dir).map_err(err)?;
        let invalid = |message: String| {
            err(BundleError::Invalid { path: dir.join(autograph_shared::manifest::MANIFEST_FILE), message })
        };
        if manifest.embedding_dim as usize != EMBEDDING_DIM {
            return Err(invalid(format!(
                "embedding_dim is {}, this build's gallery holds {EMBEDDING_DIM}-value templates",
                manifest.embedding_dim
            )));
        }
        for model in std::iter::once(&manifest.f32_model).chain(&manifest.int8_model) {
            if !model.calibration.replay_similarity.is_finite() {
                return Err(invalid(format!("{}: replay_similarity is not a number", model.path)));
            }
        }
        let cohort = manifest.read_cohort(dir).map_err(err)?;
        if let (Some(adaptive), Some(cohort)) = (&manifest.adaptive, &cohort)
            && adaptive.cohort.templates != cohort.len()
        {
            return Err(err(BundleError::Invalid {
                path: dir.join(&adaptive.cohort.path),
                message: format!(
                    "the file has {} templates, the manifest says {}",
                    cohort.len(),
                    adaptive.cohort.templates
                ),
            }));
        }
        Ok(Self { dir: dir.to_path_buf(), manifest, cohort: cohort.map(Arc::new) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What galleries made with this bundle are stamped with (model hash + preprocessing).
    pub fn model_identity(&self) -> [u8; 32] {
        self.manifest.model_identity()
    }

    /// The precision used when none is asked for: the one the manifest records as measured
    /// best on this CPU (`target_precision`), else its `default_precision`.
    pub fn precision_or_default(&self, precision: Option<Precision>) -> Precision {
        precision.unwrap_or_else(|| self.manifest.precision_for(&autograph_shared::manifest::target_keys()).0)
    }

    /// Thresholds and replay level calibrated with the model of `precision` (int8 scores
    /// differ slightly from f32 ones, so each model file carries its own).
    pub fn calibration(&self, precision: Precision) -> Result<&Calibration, EngineError> {
        self.manifest.model(precision).map(|m| &m.calibration).ok_or_else(|| EngineError::Bundle {
            dir: self.dir.clone(),
            source: BundleError::MissingModel { path: self.dir.clone(), precision },
        })
    }

    /// The background cohort writer models are fitted against (`None` in bundles without an
    /// `adaptive` section).
    pub fn cohort(&self) -> Option<&Cohort> {
        self.cohort.as_deref()
    }

    /// The cohort, shared.
    pub fn cohort_arc(&self) -> Option<Arc<Cohort>> {
        self.cohort.clone()
    }

    /// Settings of the writer-model fit at enrolment.
    pub fn adaptive_config(&self) -> AdaptiveConfig {
        self.manifest.adaptive.as_ref().map(|a| a.config).unwrap_or_default()
    }

    /// The rule and thresholds the bundle decides with at `precision`. A bundle without an
    /// `adaptive` section uses the nearest rule and the model file's calibration; one whose
    /// adaptive rule has no thresholds for this precision does too, and says why in `note`.
    pub fn rule_calibration(&self, precision: Precision) -> Result<RuleCalibration, EngineError> {
        let nearest = *self.calibration(precision)?;
        let fallback =
            |note| RuleCalibration { rule: DecisionRule::Nearest, thresholds: nearest.thresholds, nearest, note };
        let Some(adaptive) = &self.manifest.adaptive else { return Ok(fallback(None)) };
        if adaptive.rule == DecisionRule::Nearest {
            return Ok(fallback(None));
        }
        match adaptive.thresholds(precision) {
            Some(thresholds) => {
                Ok(RuleCalibration { rule: adaptive.rule, thresholds: *thresholds, nearest, note: None })
            }
            None => Ok(fallback(Some(format!(
                "the bundle's {} rule has no {} thresholds; deciding by the nearest rule",
                rule_name(adaptive.rule),
                precision_name(precision)
            )))),
        }
    }

    /// Precisions this bundle has a model file for.
    pub fn precisions(&self) -> Vec<Precision> {
        [Precision::F32, Precision::Int8].into_iter().filter(|&p| self.manifest.model(p).is_some()).collect()
    }

    /// Path of a model file (for messages); the bundle directory when the precision is absent.
    pub fn model_path(&self, precision: Precision) -> PathBuf {
        self.manifest.model(precision).map_or_else(|| self.dir.clone(), |m| self.dir.join(&m.path))
    }

    /// The model file's bytes, checked against the manifest's sha256.
    pub fn read_model(&self, precision: Precision) -> Result<Vec<u8>, EngineError> {
        self.manifest
            .read_model(&self.dir, precision)
            .map_err(|source| EngineError::Bundle { dir: self.dir.clone(), source })
    }
}

/// The name of a rule as in the manifest and the JSON output.
pub fn rule_name(rule: DecisionRule) -> &'static str {
    match rule {
        DecisionRule::Nearest => "nearest",
        DecisionRule::Normalised => "normalised",
        DecisionRule::Classifier => "classifier",
        DecisionRule::Consistency => "consistency",
        DecisionRule::Subspace => "subspace",
    }
}
