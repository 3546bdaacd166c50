//! The `autograph` subcommands. Each returns a [`Report`]: an exit status, a JSON value (printed
//! with `--json`) and a human-readable text; every failure is a [`CommandError`] (exit 2).

pub mod bench;
pub mod embed;
pub mod enroll;
mod error;
pub mod eval;
pub mod gallery;
pub mod identify;
mod operating_point;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use autograph_shared::gallery::Template;
use autograph_shared::manifest::Precision;
use autograph_shared::online::{ReadError, Trajectory, read_trajectory};
use autograph_shared::preprocess::{Preprocessed, preprocess_gray};
use autograph_shared::strokes::Recording;
use autograph_shared::strokes::raster::{RasterConfig, rasterise};
use serde::Serialize;

use crate::capture::CaptureError;
use crate::crypt::KeyFile;
use crate::engine::{Bundle, Engine, EngineOptions, Runtime};
use crate::store::{self, GalleryFile};

pub use error::{CommandError, RejectedImage};
pub use operating_point::{Against, OperatingPoint, OperatingPointArgs, Point};

/// The process exit status of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// 0: accepted, found, done.
    Ok = 0,
    /// 1: rejected (or possible replay), not found, check failed.
    No = 1,
    /// 2: an error: bad arguments, unreadable or damaged files.
    Error = 2,
}

/// What a command produced.
#[derive(Debug)]
pub struct Report {
    pub exit: Exit,
    /// The `--json` output (one object).
    pub json: serde_json::Value,
    /// The human-readable output.
    pub text: String,
}

impl Report {
    /// A report whose JSON is `value` serialised (a plain struct of numbers and strings, which
    /// cannot fail to serialise).
    pub fn new(exit: Exit, value: &impl Serialize, text: String) -> Self {
        let json = serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        Self { exit, json, text }
    }
}

/// `--bundle`: the model bundle directory.
#[derive(Debug, Clone, clap::Args)]
pub struct BundleArgs {
    /// Model bundle directory (manifest.json, model.onnx, model.int8.onnx).
    #[arg(long, env = "AUTOGRAPH_BUNDLE", value_name = "DIR")]
    pub bundle: PathBuf,
}

impl BundleArgs {
    pub fn open(&self) -> Result<Bundle, CommandError> {
        Ok(Bundle::open(&self.bundle)?)
    }
}

/// `--gallery` and `--gallery-key`: the gallery file and the key it is encrypted with.
#[derive(Debug, Clone, clap::Args)]
pub struct GalleryArgs {
    /// Gallery file of enrolled writers (created by the first `enroll`), encrypted at rest.
    #[arg(long, env = "AUTOGRAPH_GALLERY", value_name = "FILE")]
    pub gallery: PathBuf,
    /// Key file the gallery is encrypted with: 32 random bytes, mode 0600, created when the
    /// first gallery is written. Back it up apart from the gallery: without it the gallery
    /// cannot be read [default: $XDG_CONFIG_HOME/autograph/gallery.key, else
    /// ~/.config/autograph/gallery.key].
    #[arg(long, env = "AUTOGRAPH_GALLERY_KEY", value_name = "FILE")]
    pub gallery_key: Option<PathBuf>,
}

impl GalleryArgs {
    /// The gallery file with its key file (`--gallery-key`, or the default location).
    pub fn file(&self) -> Result<GalleryFile, CommandError> {
        let key =
            KeyFile::resolve(self.gallery_key.as_deref(), &self.gallery).map_err(store::key_err(&self.gallery))?;
        Ok(GalleryFile::new(&self.gallery, key))
    }
}

/// Numeric precision on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    Int8,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

/// `--runtime`, `--precision`, `--threads`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Inference runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Tract)]
    pub runtime: Runtime,
    /// Model precision [default: the one the manifest records as measured best on this CPU
    /// (`target_precision`, shown by `bench`), else its `default_precision`].
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Intra-op threads for ONNX Runtime (tract runs on one thread).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

impl RuntimeArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            runtime: self.runtime,
            precision: self.precision.map(Precision::from),
            threads: usize::from(self.threads),
        }
    }
}

/// Preprocesses one image file (an unusable image is rejected naming the file).
fn preprocess_file(engine: &Engine, path: &Path) -> Result<Preprocessed, CommandError> {
    engine.preprocess_file(path).map_err(|e| CommandError::Image(RejectedImage::new(path, &e)))
}

/// Preprocesses and embeds one image file.
pub(crate) fn embedding_of(engine: &mut Engine, path: &Path) -> Result<Vec<f32>, CommandError> {
    let image = preprocess_file(engine, path)?;
    Ok(engine.embed_one(&image)?)
}

/// Preprocesses and embeds one image file into a template.
pub(crate) fn template_of(engine: &mut Engine, path: &Path) -> Result<Template, CommandError> {
    let image = preprocess_file(engine, path)?;
    Ok(engine.template(&image)?)
}

/// A pen capture given with `--strokes`: its trajectory, and the kiosk recording it came from
/// when it is one (a recording can also be rendered into the signature's image).
#[derive(Debug, Clone)]
pub(crate) struct PenCapture {
    pub path: PathBuf,
    pub trajectory: Trajectory,
    pub recording: Option<Recording>,
}

/// Reads a pen capture: a kiosk recording (`.json`, the format `autograph kiosk --record`
/// writes), an SVC2004 Task 2 file (`.TXT`) or an MCYT file (`.fpg`). Errors name the file.
pub(crate) fn read_pen_capture(path: &Path) -> Result<PenCapture, CommandError> {
    let bad = |reason: String| CommandError::PenCapture { path: path.to_path_buf(), reason };
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        let trajectory = read_trajectory(path).map_err(|e| match e {
            ReadError::Io { source, .. } => bad(format!("cannot read the file: {source}")),
            ReadError::Parse { source, .. } => bad(source.to_string()),
            ReadError::UnknownKind { .. } => {
                bad("not a pen capture: expected a kiosk recording (.json), SVC2004 Task 2 (.TXT) or MCYT (.fpg)"
                    .into())
            }
        })?;
        return Ok(PenCapture { path: path.to_path_buf(), trajectory, recording: None });
    }
    // The kiosk's own reader (`--replay`), with its size limit.
    let recording = crate::capture::load_recording(path).map_err(|e| match e {
        CaptureError::Read { source, .. } => bad(format!("cannot read the file: {source}")),
        CaptureError::Recording { source, .. } => bad(source.to_string()),
        other => bad(other.to_string()),
    })?;
    let trajectory = Trajectory::try_from(&recording).map_err(|e| bad(e.to_string()))?;
    Ok(PenCapture { path: path.to_path_buf(), trajectory, recording: Some(recording) })
}

/// Renders a kiosk recording as the kiosk does, preprocesses it like a scan and embeds it.
pub(crate) fn template_of_recording(
    engine: &mut Engine,
    path: &Path,
    recording: &Recording,
) -> Result<Template, CommandError> {
    let reject = |reason: String| CommandError::Image(RejectedImage { file: path.to_path_buf(), reason });
    let image = rasterise(recording, &RasterConfig::default()).map_err(|e| reject(e.to_string()))?;
    let pre = preprocess_gray(&image, &engine.manifest().preprocess)
        .map_err(|e| reject(format!("the rendered signature: {}", e.kind())))?;
    Ok(engine.template(&pre)?)
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runtime and precision of an engine, for JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct ModelUsed {
    pub runtime: Runtime,
    pub precision: &'static str,
}

impl ModelUsed {
    pub fn of(engine: &Engine) -> Self {
        Self { runtime: engine.runtime(), precision: crate::engine::precision_name(engine.precision()) }
    }
}
