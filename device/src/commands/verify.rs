//! `autograph verify`: is this signature by the claimed writer?
//!
//! Before any decision the replay guard runs on the raw nearest-reference similarity: a probe
//! that is a copy of a reference is reported as a possible replay, never accepted. Then the
//! writer's score under the bundle's rule ([`crate::decision`]: the nearest-reference
//! similarity, or with a bundle that has a cohort the writer-adaptive rule) is compared with
//! that rule's threshold, calibrated on validation writers. A writer without a writer model
//! falls back to the nearest rule and its threshold, and the output says so.
//!
//! With `--strokes` the capture's pen trajectory is scored too, against the writer's dynamic
//! template, and the fused score decides ([`crate::decision::verify_with_pen`]); a kiosk
//! recording given without an image is also rendered into the signature image, as the kiosk
//! does.

use std::path::PathBuf;

use autograph_shared::adaptive::DecisionRule;
use autograph_shared::gallery::validate_id;
use serde::Serialize;

use super::{
    Against, BundleArgs, CommandError, Exit, GalleryArgs, ModelUsed, OperatingPoint, OperatingPointArgs, Report,
    RuntimeArgs,
};
pub use crate::decision::Decision;
use crate::decision::{self, DynamicPart, Modality, Policy, Verification};
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
    /// The signature image to check (optional with a `--strokes` kiosk recording, which is
    /// rendered into the image as the kiosk does).
    #[arg(value_name = "IMG", required_unless_present = "strokes")]
    pub image: Option<PathBuf>,
    /// The signature's pen capture: a kiosk recording (.json), SVC2004 Task 2 (.TXT) or MCYT
    /// (.fpg). Scored against the writer's dynamic template and fused with the image score when
    /// the writer was enrolled from pen captures and the bundle calibrates fusion.
    #[arg(long, value_name = "FILE")]
    pub strokes: Option<PathBuf>,
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
    /// The image file, or `null` when the image was rendered from `strokes`.
    pub image: Option<PathBuf>,
    /// The pen capture given with `--strokes`, else `null`.
    pub strokes: Option<PathBuf>,
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
    /// The rule actually used: `nearest`, `normalised`, `classifier`, `consistency` or `subspace`
    /// (under fusion, the image part is the nearest-reference similarity: `nearest`).
    pub rule: DecisionRule,
    /// `image`: the image rule's score decided; `fused`: the fused score did.
    pub modality: Modality,
    /// The pen trajectory's score against the writer's dynamic template, `1 / (1 + normalised
    /// DTW distance)`; `null` without `--strokes` or a dynamic template.
    pub dynamic_score: Option<f32>,
    /// The fused score (a logit); `null` unless the bundle calibrates fusion and there is a
    /// `dynamic_score`. Equal to `score` when `modality` is `fused`.
    pub fused_score: Option<f32>,
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
    let gallery = store::load(&args.gallery.file()?, Some(&bundle.model_identity()))?;
    let mut engine = Engine::open(bundle, options)?;
    let pen = args.strokes.as_deref().map(super::read_pen_capture).transpose()?;
    let probe = match (&args.image, &pen) {
        (Some(image), _) => super::template_of(&mut engine, image)?,
        (None, Some(super::PenCapture { path, recording: Some(recording), .. })) => {
            super::template_of_recording(&mut engine, path, recording)?
        }
        (None, _) => {
            return Err(CommandError::Usage(
                "give the signature image too: only kiosk recordings (.json) can be rendered into one".into(),
            ));
        }
    };

    let Verification { decision, similarity, score, rule, point, fallback, references, replay, modality, dynamic } =
        decision::verify_with_pen(&gallery, &args.user, &probe, pen.as_ref().map(|p| &p.trajectory), &policy);
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
        if let (Modality::Fused, Some(DynamicPart { score: d, .. })) = (modality, dynamic) {
            return format!(
                "fused score {score:.4} (image similarity {:.4}, pen {d:.4})",
                similarity.unwrap_or(f32::NAN)
            );
        }
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
        strokes: args.strokes.clone(),
        decision,
        accepted,
        similarity,
        score,
        normalised,
        rule,
        modality,
        dynamic_score: dynamic.map(|d| d.score),
        fused_score: dynamic.and_then(|d| d.fused),
        fallback,
        threshold: point.threshold,
        operating_point: point,
        references,
        replay,
        model: ModelUsed::of(&engine),
    };
    Ok(Report::new(if accepted { Exit::Ok } else { Exit::No }, &json, text))
}
