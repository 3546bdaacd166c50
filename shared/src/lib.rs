//! `autograph-shared`: everything the trainer and the device must agree on.
//!
//! No ML framework lives here. Data flows one way:
//! image bytes -> [`preprocess`] -> (embedding network, elsewhere) -> [`gallery`] -> score,
//! and the [`metrics`] and [`protocol`] modules turn scores into honest figures.

pub mod adaptive;
pub mod dataset;
pub mod evaluation;
pub mod gallery;
pub mod leakage;
pub mod manifest;
pub mod metrics;
pub mod online;
pub mod preprocess;
pub mod protocol;
pub mod strokes;

pub use preprocess::{PreprocessConfig, PreprocessError, Preprocessed, preprocess_bytes, preprocess_file};

/// Lower-case hex sha256 of a byte slice; used for file identity everywhere.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
