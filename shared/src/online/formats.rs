//! What the on-line readers share: input limits, typed errors, and reading a file by its kind.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::trajectory::{MAX_SAMPLES, Trajectory, TrajectoryError};

/// Largest accepted signature file: 100 000 points of SVC text are about 4 MB, of FPG 2 MB.
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// Most raw points one file may declare or hold (the resampled trajectory has its own limit,
/// [`MAX_SAMPLES`], equal by default).
pub const MAX_POINTS: usize = MAX_SAMPLES;
/// Largest plausible tablet coordinate magnitude; beyond it a file is corrupt, not a signature.
pub const MAX_COORDINATE: f64 = 1e7;

/// Why bytes are not a signature of the expected format. Rows count from 1, as in an editor
/// (for text, the line number; for FPG, the sample number).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{bytes} bytes, more than the limit of {MAX_FILE_BYTES}")]
    TooLarge { bytes: u64 },
    #[error("the file is empty")]
    Empty,
    #[error("line {line} is not ASCII text")]
    NotText { line: usize },
    #[error("the first line should be the point count, found {text:?}")]
    BadCount { text: String },
    #[error("declares or holds {count} points, more than the limit of {MAX_POINTS}")]
    TooManyPoints { count: u64 },
    #[error("line {line} has {found} fields, expected {expected}")]
    BadLine { line: usize, found: usize, expected: usize },
    #[error("line {line} field {field} ({name}) is not a number: {text:?}")]
    BadNumber { line: usize, field: usize, name: &'static str, text: String },
    #[error("row {row}: {name} is not finite")]
    NotFinite { row: usize, name: &'static str },
    #[error("row {row}: {name} = {value} is outside the plausible range {range}")]
    OutOfRange { row: usize, name: &'static str, value: f64, range: &'static str },
    #[error("the header declares {declared} points but {found} follow")]
    CountMismatch { declared: u64, found: u64 },
    #[error("does not start with the FPG magic \"FPG \"")]
    BadMagic,
    #[error("truncated: {needed} bytes needed, {found} present")]
    Truncated { needed: u64, found: u64 },
    #[error("header field {field} is {found}, expected {expected}")]
    BadHeader { field: &'static str, found: u64, expected: String },
    #[error("no pen-down samples: {0}")]
    Trajectory(#[from] TrajectoryError),
}

/// Why a signature file could not be read; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
    #[error("{}: not a known signature file (expected .TXT for SVC2004 or .fpg for MCYT)", path.display())]
    UnknownKind { path: PathBuf },
}

/// Reads a file of at most [`MAX_FILE_BYTES`] without trusting its reported size.
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::Parse {
            path: path.to_path_buf(),
            source: ParseError::TooLarge { bytes: std::fs::metadata(path).map_or(MAX_FILE_BYTES + 1, |m| m.len()) },
        });
    }
    Ok(bytes)
}

/// Reads `path` with `parse`, naming the file in any error.
pub(crate) fn read_with(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<Trajectory, ParseError>,
) -> Result<Trajectory, ReadError> {
    let bytes = read_limited(path)?;
    parse(&bytes).map_err(|source| ReadError::Parse { path: path.to_path_buf(), source })
}

/// The on-line formats this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// SVC2004 text (`.TXT`).
    Svc2004,
    /// MCYT binary FPG (`.fpg`).
    Mcyt,
}

impl Format {
    /// The format a file name's extension says (case-insensitive), if any.
    pub fn of_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" => Some(Self::Svc2004),
            "fpg" => Some(Self::Mcyt),
            _ => None,
        }
    }
}

/// Reads an SVC2004 `.TXT` or MCYT `.fpg` file, chosen by extension.
pub fn read_trajectory(path: &Path) -> Result<Trajectory, ReadError> {
    match Format::of_path(path) {
        Some(Format::Svc2004) => super::svc2004::read_svc2004(path),
        Some(Format::Mcyt) => super::mcyt::read_mcyt_fpg(path),
        None => Err(ReadError::UnknownKind { path: path.to_path_buf() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_in_errors_and_size_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("U1S1.TXT");
        std::fs::write(&big, vec![b' '; (MAX_FILE_BYTES + 10) as usize]).expect("write");
        let err = read_trajectory(&big).expect_err("too large");
        assert!(matches!(err, ReadError::Parse { source: ParseError::TooLarge { .. }, .. }), "{err}");
        assert!(err.to_string().contains("U1S1.TXT"), "{err}");

        let missing = dir.path().join("0000v00.fpg");
        let err = read_trajectory(&missing).expect_err("missing");
        assert!(matches!(err, ReadError::Io { .. }) && err.to_string().contains("0000v00.fpg"), "{err}");

        let other = dir.path().join("a.png");
        assert!(matches!(read_trajectory(&other), Err(ReadError::UnknownKind { .. })));
    }
}
