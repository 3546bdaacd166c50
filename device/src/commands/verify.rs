//! `autograph verify`: is this signature by the claimed writer?
//!
//! The score is the gallery's rule (similarity to the writer's nearest reference), compared with
//! a threshold calibrated on validation writers. Before any decision the replay guard runs: a
//! probe that is a copy of a reference is reported as a possible replay, never accepted.

use std::path::PathBuf;

use autograph_shared::gallery::validate_id;
use serde::Serialize;

use super::{
    Against, BundleArgs, CommandError, Exit, GalleryArgs, ModelUsed, OperatingPoint, OperatingPointArgs, Report,
    RuntimeArgs,
};
pub use crate::decision::Decision;
use crate::decision::{self, Verification};
use crate::engine::Engine;
use crate::replay::ReplayCheck;
use crate::store;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    /// The writer the signature claims to be from.
    #[arg(long)]
    pub user: String,
    /// The signature image to check.
    #[arg(value_name = "IMG")]
    pub image: PathBuf,
    #[command(flatten)]
    pub point: OperatingPointArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `--json` output of `verify`.
#[derive(Debug, Serialize)]
pub struct VerifyJson {
    pub command: &'static str,
    pub user: String,
    pub image: PathBuf,
    pub decision: Decision,
    pub accepted: bool,
    /// Similarity to the writer's nearest reference; `null` when not enrolled.
    pub score: Option<f32>,
    pub threshold: f32,
    pub operating_point: OperatingPoint,
    /// Number of the writer's references.
    pub references: usize,
    /// The replay guard's findings; `null` when not enrolled.
    pub replay: Option<ReplayCheck>,
    #[serde(flatten)]
    pub model: ModelUsed,
}

pub fn run(args: &VerifyArgs) -> Result<Report, CommandError> {
    validate_id(&args.user).map_err(|e| CommandError::Usage(e.to_string()))?;
    let bundle = args.bundle.open()?;
    let options = args.runtime.options();
    let calibration = *bundle.calibration(bundle.precision_or_default(options.precision))?;
    let point = args.point.resolve(&calibration.thresholds, Against::Skilled)?;
    let gallery = store::load(&args.gallery.gallery, Some(&bundle.model_identity()))?;
    let replay_similarity = calibration.replay_similarity;
    let mut engine = Engine::open(bundle, options)?;
    let probe = super::template_of(&mut engine, &args.image)?;

    let Verification { decision, score, references, replay } =
        decision::verify(&gallery, &args.user, &probe, point.threshold, replay_similarity);
    let accepted = decision == Decision::Accepted;
    let text = match decision {
        Decision::Accepted | Decision::Rejected => format!(
            "{}: score {:.4}, threshold {point}",
            if accepted { "ACCEPTED" } else { "REJECTED" },
            score.unwrap_or(f32::NAN)
        ),
        Decision::PossibleReplay => format!(
            "REJECTED (possible replay): the image is a copy of one of {:?}'s enrolled references \
             (similarity {:.4}, replay limit {:.4}); score {:.4}",
            args.user,
            replay.map_or(f32::NAN, |r| r.max_reference_similarity),
            replay_similarity,
            score.unwrap_or(f32::NAN)
        ),
        Decision::NotEnrolled => {
            format!("REJECTED: {:?} is not enrolled in {}", args.user, args.gallery.gallery.display())
        }
    };
    let json = VerifyJson {
        command: "verify",
        user: args.user.clone(),
        image: args.image.clone(),
        decision,
        accepted,
        score,
        threshold: point.threshold,
        operating_point: point,
        references,
        replay,
        model: ModelUsed::of(&engine),
    };
    Ok(Report::new(if accepted { Exit::Ok } else { Exit::No }, &json, text))
}
