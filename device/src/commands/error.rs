//! Command failures. All of them exit with status 2 and name the file concerned.

use std::fmt;
use std::path::{Path, PathBuf};

use autograph_shared::preprocess::PreprocessError;
use serde::Serialize;

use crate::engine::EngineError;
use crate::store::StoreError;

/// An input image that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedImage {
    pub file: PathBuf,
    pub reason: String,
}

impl RejectedImage {
    pub fn new(path: &Path, error: &PreprocessError) -> Self {
        let reason = match error {
            // The I/O error already names the file; keep only the cause.
            PreprocessError::Io { source, .. } => format!("cannot read the file: {source}"),
            other => other.kind().to_string(),
        };
        Self { file: path.to_path_buf(), reason }
    }
}

impl fmt::Display for RejectedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A probe image is unusable.
    #[error("{0}")]
    Image(RejectedImage),
    /// Reference images are unusable; nothing was enrolled.
    #[error("{} of {total} reference images rejected, nothing was enrolled:{}", rejected.len(), list(rejected))]
    References { rejected: Vec<RejectedImage>, total: usize },
    /// The arguments do not make sense with this bundle or gallery.
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// A pen capture (`--strokes`) is unreadable or unusable.
    #[error("{}: {reason}", path.display())]
    PenCapture { path: PathBuf, reason: String },
}

fn list(rejected: &[RejectedImage]) -> String {
    rejected.iter().map(|r| format!("\n  {r}")).collect()
}

impl CommandError {
    /// The images that were rejected, if that is what went wrong (for the JSON output).
    pub fn rejected_images(&self) -> Option<&[RejectedImage]> {
        match self {
            CommandError::Image(r) => Some(std::slice::from_ref(r)),
            CommandError::References { rejected, .. } => Some(rejected),
            _ => None,
        }
    }
}

impl From<autograph_shared::gallery::GalleryError> for CommandError {
    fn from(e: autograph_shared::gallery::GalleryError) -> Self {
        CommandError::Store(StoreError::Gallery(e))
    }
}
