//! Embedding runtimes over a model bundle.
//!
//! [`Bundle`] is the checked manifest and its directory; [`Engine`] is a bundle plus one loaded
//! model (tract, or ONNX Runtime with the `ort` feature) at one precision. Every model file is
//! read through [`Manifest::read_model`], so the device never runs bytes whose hash differs from
//! the one the manifest recorded.

mod bundle;
#[cfg(feature = "ort")]
pub mod ort;
pub mod tract;

use std::fmt;
use std::path::{Path, PathBuf};

use autograph_shared::gallery::{GalleryError, Template};
use autograph_shared::manifest::{BundleError, Calibration, Manifest, Precision};
use autograph_shared::preprocess::{PreprocessError, Preprocessed, preprocess_bytes};
use autograph_shared::protocol::{EmbedError, Embedder};

pub use bundle::{Bundle, RuleCalibration, rule_name};

/// Which inference library runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// tract: pure Rust, always built in.
    Tract,
    /// ONNX Runtime, loaded from `ORT_DYLIB_PATH` (needs a build with the `ort` feature).
    Ort,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Tract => "tract",
            Runtime::Ort => "ort",
        })
    }
}

/// Lower-case name of a precision, as used on the command line and in JSON.
pub fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => "f32",
        Precision::Int8 => "int8",
    }
}

/// Why a bundle or a model cannot be used, or an embedding failed. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The manifest or a model file is missing, damaged or from another format (the message
    /// names the file).
    #[error("{source}")]
    Bundle { dir: PathBuf, source: BundleError },
    #[error("{}: {runtime} cannot load this model: {message}", path.display())]
    Load { path: PathBuf, runtime: Runtime, message: String },
    #[error("{}: the model does not fit the manifest: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
    #[error("{runtime} is not available: {reason}")]
    Unavailable { runtime: Runtime, reason: String },
    #[error("{runtime} failed on {}: {message}", path.display())]
    Run { path: PathBuf, runtime: Runtime, message: String },
    #[error("the model produced an unusable embedding: {0}")]
    Template(#[from] GalleryError),
}

/// A bundle with one loaded model: preprocess exactly as training did, embed, quantise.
pub struct Engine {
    bundle: Bundle,
    runtime: Runtime,
    precision: Precision,
    model_path: PathBuf,
    embedder: Box<dyn Embedder>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("bundle", &self.bundle.dir())
            .field("runtime", &self.runtime)
            .field("precision", &self.precision)
            .finish()
    }
}

/// Runtime options that are not part of the bundle.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub runtime: Runtime,
    /// `None`: the manifest's choice for this CPU (`target_precision`, else `default_precision`).
    pub precision: Option<Precision>,
    /// Intra-op threads for ONNX Runtime (tract is built single-threaded).
    pub threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { runtime: Runtime::Tract, precision: None, threads: 1 }
    }
}

impl Engine {
    /// Loads the model of `options.precision` (hash-checked) into the chosen runtime.
    pub fn open(bundle: Bundle, options: EngineOptions) -> Result<Self, EngineError> {
        let precision = bundle.precision_or_default(options.precision);
        let bytes = bundle.read_model(precision)?;
        let model_path = bundle.model_path(precision);
        let embedder: Box<dyn Embedder> = match options.runtime {
            Runtime::Tract => Box::new(tract::TractEmbedder::load(&bytes, &model_path, bundle.manifest())?),
            Runtime::Ort => open_ort(&bytes, &model_path, bundle.manifest(), options.threads)?,
        };
        Ok(Self { bundle, runtime: options.runtime, precision, model_path, embedder })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn manifest(&self) -> &Manifest {
        self.bundle.manifest()
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Thresholds and replay level calibrated with the loaded model file.
    pub fn calibration(&self) -> &Calibration {
        // `open` loaded this precision's file, so the manifest has it.
        self.manifest().model(self.precision).map_or(&self.manifest().f32_model.calibration, |m| &m.calibration)
    }

    /// Reads and preprocesses an image file with the bundle's preprocessing; errors name the file.
    pub fn preprocess_file(&self, path: &Path) -> Result<Preprocessed, PreprocessError> {
        autograph_shared::preprocess_file(path, &self.manifest().preprocess)
    }

    /// Preprocesses encoded image bytes with the bundle's preprocessing.
    pub fn preprocess_bytes(&self, bytes: &[u8]) -> Result<Preprocessed, PreprocessError> {
        preprocess_bytes(bytes, &self.manifest().preprocess)
    }

    /// The L2-normalised embedding of one preprocessed image.
    pub fn embed_one(&mut self, image: &Preprocessed) -> Result<Vec<f32>, EngineError> {
        let mut out = self.embedder.embed(std::slice::from_ref(image)).map_err(|e| EngineError::Run {
            path: self.model_path.clone(),
            runtime: self.runtime,
            message: e.0,
        })?;
        out.pop().ok_or_else(|| EngineError::Run {
            path: self.model_path.clone(),
            runtime: self.runtime,
            message: "no embedding returned".into(),
        })
    }

    /// The int8 gallery template of one preprocessed image.
    pub fn template(&mut self, image: &Preprocessed) -> Result<Template, EngineError> {
        Ok(Template::from_embedding(&self.embed_one(image)?)?)
    }
}

impl Embedder for Engine {
    fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embedder.embed(batch)
    }
}

#[cfg(feature = "ort")]
fn open_ort(bytes: &[u8], path: &Path, manifest: &Manifest, threads: usize) -> Result<Box<dyn Embedder>, EngineError> {
    Ok(Box::new(ort::OrtEmbedder::load(bytes, path, manifest, threads)?))
}

#[cfg(not(feature = "ort"))]
fn open_ort(_: &[u8], _: &Path, _: &Manifest, _: usize) -> Result<Box<dyn Embedder>, EngineError> {
    Err(EngineError::Unavailable {
        runtime: Runtime::Ort,
        reason: "this build of autograph has no ONNX Runtime support (rebuild with `--features ort`)".into(),
    })
}

/// Checks that a preprocessed image has the model's input size (a mismatch would be a bug in
/// the caller, but it must be an error, not a tract shape panic deep in a kernel).
pub(crate) fn check_input(image: &Preprocessed, height: usize, width: usize) -> Result<(), EmbedError> {
    if image.height as usize != height || image.width as usize != width || image.pixels.len() != height * width {
        return Err(EmbedError(format!(
            "the image is {}x{} ({} values), the model takes {height}x{width}",
            image.height,
            image.width,
            image.pixels.len()
        )));
    }
    Ok(())
}
