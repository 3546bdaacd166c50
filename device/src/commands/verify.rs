//! `autograph verify`: is this signature by the claimed writer?
//!
//! Before any decision the replay guard runs on the raw nearest-reference similarity: a probe
//! that is a copy of a reference is reported as a possible replay, never accepted. Then the
//! writer's score under the bundle's rule ([`crate::decision`]: the nearest-reference
//! similarity, or with a bundle that has a cohort the writer-adaptive rule) is compared with
//! that rule's threshold, calibrated on validation writers. A writer without a writer model
//! falls back to the nearest rule and its threshold, and the output says so.

use std::path::PathBuf;

use autograph_shared::adaptive::DecisionRule;
use autograph_shared::gallery::validate_id;
use serde::Serialize;

use super::{
    Against, BundleArgs, CommandError, Exit, GalleryArgs, ModelUsed, OperatingPoint, OperatingPointArgs, Report,
    RuntimeArgs,
};
pub use crate::decision::Decision;
use crate::decision::{self, Policy, Verification};
use crate::engine::{Engine, rule_name};
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
    /// Cosine similarity to the writer's nearest reference; `null` when not enrolled.
    pub similarity: Option<f32>,
    /// The score of `rule` (equal to `similarity` under the nearest rule); `null` when not
    /// enrolled.
    pub score: Option<f32>,
    /// The normalised score (the `normalised` rule's), when the writer has a writer model and
    /// the bundle a cohort; else `null`.
    pub normalised: Option<f32>,
    /// The rule actually used: `nearest`, `normalised` or `classifier`.
    pub rule: DecisionRule,
    /// Why the bundle's rule was not used (e.g. the writer has no writer model), else `null`.
    pub fallback: Option<String>,
    /// The threshold of `rule` that `score` was compared with.
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
    let policy =
        Policy::resolve(&bundle, bundle.precision_or_default(options.precision), &args.point, Against::Skilled)?;
    let gallery = store::load(&args.gallery.gallery, Some(&bundle.model_identity()))?;
    let mut engine = Engine::open(bundle, options)?;
    let probe = super::template_of(&mut engine, &args.image)?;

    let Verification { decision, similarity, score, rule, point, fallback, references, replay } =
        decision::verify(&gallery, &args.user, &probe, &policy);
    // Shown alongside, when it can be computed: the normalised score of this writer.
    let normalised = match (rule, gallery.get(&args.user)) {
        (DecisionRule::Normalised, _) => score,
        (_, Some(writer)) => match (writer.model(), policy.cohort()) {
            (Some(model), Some(cohort)) => {
                Some(model.score(DecisionRule::Normalised, writer.templates(), &probe, Some(cohort)))
            }
            _ => None,
        },
        _ => None,
    };
    let accepted = decision == Decision::Accepted;
    let scored = |score: Option<f32>| {
        let score = score.unwrap_or(f32::NAN);
        match rule {
            DecisionRule::Nearest => format!("score {score:.4}"),
            other => {
                format!("{} score {score:.4} (similarity {:.4})", rule_name(other), similarity.unwrap_or(f32::NAN))
            }
        }
    };
    let mut text = match decision {
        Decision::Accepted | Decision::Rejected => {
            format!("{}: {}, threshold {point}", if accepted { "ACCEPTED" } else { "REJECTED" }, scored(score))
        }
        Decision::PossibleReplay => format!(
            "REJECTED (possible replay): the image is a copy of one of {:?}'s enrolled references \
             (similarity {:.4}, replay limit {:.4}); {}",
            args.user,
            replay.map_or(f32::NAN, |r| r.max_reference_similarity),
            policy.replay_similarity,
            scored(score)
        ),
        Decision::NotEnrolled => {
            format!("REJECTED: {:?} is not enrolled in {}", args.user, args.gallery.gallery.display())
        }
    };
    if let (Some(why), false) = (&fallback, decision == Decision::NotEnrolled) {
        text.push_str(&format!("\nnote: {why}"));
    }
    let json = VerifyJson {
        command: "verify",
        user: args.user.clone(),
        image: args.image.clone(),
        decision,
        accepted,
        similarity,
        score,
        normalised,
        rule,
        fallback,
        threshold: point.threshold,
        operating_point: point,
        references,
        replay,
        model: ModelUsed::of(&engine),
    };
    Ok(Report::new(if accepted { Exit::Ok } else { Exit::No }, &json, text))
}
