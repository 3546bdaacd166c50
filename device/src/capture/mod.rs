//! Signature capture on the kiosk: screens drawn with embedded-graphics into framebuffer
//! memory, pen/touch input from evdev, and the signing loop that hands the captured strokes
//! to the same preprocessing and model as a scanned signature.
//!
//! * [`framebuffer`]: a `DrawTarget` over RGB565 / XRGB8888 memory with a padded stride.
//! * [`display`]: `/dev/fb0`, or a headless buffer saved as PNG.
//! * [`screen`]: layout from the screen size, and the prompt, signing, enrolment and result screens.
//! * [`input`]: evdev events to pen updates (pure [`input::PenTracker`]) and device discovery.
//! * [`playback`]: recorded strokes as pen updates, for headless runs and tests.
//! * [`session`]: the pure state machine of one signing session.
//! * [`kiosk`]: the loop tying them to the model and the gallery.
//! * [`cli`]: `autograph capture` and `autograph kiosk`.

pub mod cli;
pub mod display;
pub mod framebuffer;
pub mod input;
pub mod kiosk;
pub mod playback;
pub mod screen;
pub mod session;

use std::path::{Path, PathBuf};

use autograph_shared::strokes::{Recording, StrokeError};

use crate::commands::CommandError;

/// Why capture could not run. Each names the file or device concerned.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Display(#[from] display::DisplayError),
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error(transparent)]
    Screen(#[from] screen::ScreenTooSmall),
    #[error("{}: {source}", path.display())]
    Recording { path: PathBuf, source: StrokeError },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the replayed strokes ran out before the session finished ({0})")]
    InputEnded(String),
}

impl From<CaptureError> for CommandError {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::Read { path, source } => CommandError::Io { path, action: "read", source },
            CaptureError::Write { path, source } => CommandError::Io { path, action: "write", source },
            other => CommandError::Usage(other.to_string()),
        }
    }
}

/// Reads and validates a stroke recording file. A file larger than
/// [`autograph_shared::strokes::MAX_JSON_LEN`] is refused without being read whole.
pub fn load_recording(path: &Path) -> Result<Recording, CaptureError> {
    use std::io::Read;
    let read_err = |source| CaptureError::Read { path: path.to_path_buf(), source };
    let limit = autograph_shared::strokes::MAX_JSON_LEN as u64;
    let mut text = String::new();
    std::fs::File::open(path).map_err(read_err)?.take(limit + 1).read_to_string(&mut text).map_err(read_err)?;
    Recording::from_json(&text).map_err(|source| CaptureError::Recording { path: path.to_path_buf(), source })
}
