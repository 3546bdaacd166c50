//! Helpers for the end-to-end tests in `tests/`.

use std::path::PathBuf;

/// The real data sets beside the checkout (`../shared/data`), or `$AUTOGRAPH_SHARED_DATA`.
/// Real-data tests are `#[ignore]`d: a fresh clone without the data still passes `cargo test`,
/// and `.ci/run` runs them with `--ignored`.
pub fn shared_data() -> PathBuf {
    std::env::var_os("AUTOGRAPH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}
