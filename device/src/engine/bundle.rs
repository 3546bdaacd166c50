//! A model bundle on disk: its directory and its checked manifest.

use std::path::{Path, PathBuf};

use autograph_shared::gallery::EMBEDDING_DIM;
use autograph_shared::manifest::{BundleError, Calibration, Manifest, Precision};

use super::EngineError;

/// A bundle directory whose manifest was read and checked (format version, preprocessing,
/// embedding size). Model files are read, hash-checked, only when a runtime loads them.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
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
        Ok(Self { dir: dir.to_path_buf(), manifest })
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

    /// The precision used when none is asked for: the manifest's `default_precision`.
    pub fn precision_or_default(&self, precision: Option<Precision>) -> Precision {
        precision.unwrap_or(self.manifest.default_precision)
    }

    /// Thresholds and replay level calibrated with the model of `precision` (int8 scores
    /// differ slightly from f32 ones, so each model file carries its own).
    pub fn calibration(&self, precision: Precision) -> Result<&Calibration, EngineError> {
        self.manifest.model(precision).map(|m| &m.calibration).ok_or_else(|| EngineError::Bundle {
            dir: self.dir.clone(),
            source: BundleError::MissingModel { path: self.dir.clone(), precision },
        })
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
