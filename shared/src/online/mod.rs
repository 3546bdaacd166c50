//! Dynamic (on-line) signature verification from pen trajectories: issue #17's shared part.
//!
//! Data flows: file or kiosk [`crate::strokes::Recording`] -> [`Trajectory`] (100 Hz, pen-down
//! samples, strokes marked) -> [`features::extract`] (z-normalised per signature) ->
//! [`DynamicTemplate`] (DTW to a writer's references, normalised by their own spread) ->
//! [`DynamicScore`] (higher = more genuine) -> optionally [`fusion::Fusion`] with the image
//! score. [`evaluation`] measures it with the project's writer-disjoint protocol.

pub mod dataset;
pub mod dtw;
pub mod evaluation;
pub mod features;
pub mod formats;
pub mod fusion;
pub mod mcyt;
#[cfg(test)]
mod real_data;
pub mod svc2004;
pub mod trajectory;
pub mod verifier;

pub use dataset::{ListError, OnlineDataset, OnlineSample, list_online_dataset};
pub use formats::{Format, ParseError, ReadError, read_trajectory};
pub use fusion::{Fusion, FusionError, ScoreStats};
pub use mcyt::{parse_mcyt_fpg, read_mcyt_fpg};
pub use svc2004::{parse_svc2004, read_svc2004};
pub use trajectory::{PenSample, Timing, Trajectory, TrajectoryError};
pub use verifier::{DynamicScore, DynamicSettings, DynamicTemplate, ScoreNormalisation, TemplateError};
