//! The verification rule, in one place for `autograph verify` and the kiosk: the replay guard
//! first (a copy of an enrolled reference is never accepted; it uses the raw nearest-reference
//! similarity), then the writer's score under the bundle's rule against that rule's threshold.
//!
//! The rule is the bundle's ([`Policy::resolve`]): the nearest-reference similarity for bundles
//! without a cohort, else the manifest's writer-adaptive rule (a per-writer normalised score or
//! the writer's classifier, [`autograph_shared::adaptive`]). A writer enrolled without a writer
//! model (before the bundle had a cohort) is decided by the nearest rule with the nearest
//! rule's threshold, and the [`Verification`] says so.
//!
//! A verification that comes with a pen trajectory ([`verify_with_pen`]), of a writer enrolled
//! from pen captures, with a bundle whose manifest calibrates fusion, is decided on the fused
//! score instead: the writer's dynamic (DTW) score and the nearest-reference similarity,
//! combined by the manifest's [`Fusion`] and compared with its fused threshold. When any of the
//! three is missing the image decides, and the [`Verification`] says why.

use std::sync::Arc;

use autograph_shared::adaptive::{Cohort, DecisionRule, consistency, less_consistency, subspace_score};
use autograph_shared::gallery::{KioskGallery, Template};
use autograph_shared::manifest::Precision;
use autograph_shared::online::{Fusion, Trajectory};
use serde::Serialize;

use crate::commands::{Against, CommandError, OperatingPoint, OperatingPointArgs, Point};
use crate::engine::{Bundle, rule_name};
use crate::replay::{self, ReplayCheck};

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Score at or above the threshold (exit 0).
    Accepted,
    /// Score below the threshold (exit 1).
    Rejected,
    /// A copy of an enrolled reference (exit 1).
    PossibleReplay,
    /// The writer is not in the gallery (exit 1).
    NotEnrolled,
}

/// How verification decides with one bundle, model precision and operating point.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The bundle's rule at this precision.
    pub rule: DecisionRule,
    /// The threshold of `rule`'s score.
    pub point: OperatingPoint,
    /// The threshold of the nearest rule (the model file's calibration), for writers without a
    /// writer model; equal to `point` when `rule` is the nearest rule.
    pub nearest_point: OperatingPoint,
    /// The replay guard's limit on the nearest-reference similarity.
    pub replay_similarity: f32,
    /// The bundle's cohort (t-normalisation needs it at verification).
    pub cohort: Option<Arc<Cohort>>,
    /// Why the bundle's adaptive rule is not used at this precision, when it is not.
    pub note: Option<String>,
    /// The bundle's fusion at this precision, with the fused score's threshold.
    pub fusion: Option<FusionPolicy>,
    /// Why verifications with a pen trajectory are decided on the image alone although the
    /// bundle calibrates fusion (not for this precision). `None` when the bundle has no fusion
    /// at all: the image is then simply the bundle's rule, and the pen score is only shown.
    pub fusion_note: Option<String>,
}

/// How a fused score decides: the manifest's fusion and the threshold picked from its
/// calibration by the same operating point as the image rule's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionPolicy {
    pub fusion: Fusion,
    pub point: OperatingPoint,
}

impl Policy {
    /// The bundle's rule at `precision`, with thresholds picked by `args` (`default`: the
    /// calibration used when `--against` is not given).
    pub fn resolve(
        bundle: &Bundle,
        precision: Precision,
        args: &OperatingPointArgs,
        default: Against,
    ) -> Result<Self, CommandError> {
        let calibration = bundle.rule_calibration(precision)?;
        // The nearest rule's own table: the nearest rule's false-accept rate at its EER point is
        // its EER point.
        let nearest_args = match args.far {
            Some(Point::NearestEerFar) => OperatingPointArgs { far: Some(Point::Eer), ..args.clone() },
            _ => args.clone(),
        };
        let nearest_point = nearest_args.resolve(&calibration.nearest.thresholds, default)?;
        let point = if calibration.rule == DecisionRule::Nearest {
            nearest_point
        } else {
            args.resolve(&calibration.thresholds, default)?
        };
        let (fusion, fusion_note) = match &bundle.manifest().fusion {
            None => (None, None),
            Some(decision) => match decision.calibration(precision) {
                // `fuse` calibrates the EER and FAR points only.
                Some(_) if args.far == Some(Point::NearestEerFar) => (
                    None,
                    Some("the bundle's fusion is not calibrated at the nearest-eer point; the image decides".into()),
                ),
                Some(c) => {
                    (Some(FusionPolicy { fusion: c.fusion, point: args.resolve(&c.thresholds, default)? }), None)
                }
                None => (
                    None,
                    Some(format!(
                        "the bundle's fusion is not calibrated for the {} model; the image decides",
                        crate::engine::precision_name(precision)
                    )),
                ),
            },
        };
        Ok(Self {
            rule: calibration.rule,
            point,
            nearest_point,
            replay_similarity: calibration.nearest.replay_similarity,
            cohort: bundle.cohort_arc(),
            note: calibration.note,
            fusion,
            fusion_note,
        })
    }

    /// The nearest rule alone (no cohort), at `point`.
    pub fn nearest(point: OperatingPoint, replay_similarity: f32) -> Self {
        Self {
            rule: DecisionRule::Nearest,
            point,
            nearest_point: point,
            replay_similarity,
            cohort: None,
            note: None,
            fusion: None,
            fusion_note: None,
        }
    }

    pub fn cohort(&self) -> Option<&Cohort> {
        self.cohort.as_deref()
    }
}

/// What decided: the image score alone, or the image and pen-trajectory scores fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Image,
    Fused,
}

/// The on-line part of a verification that came with a pen trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DynamicPart {
    /// The writer's dynamic score, `1 / (1 + normalised DTW distance)`: higher = more genuine.
    pub score: f32,
    /// Normalised DTW distance behind `score`.
    pub distance: f32,
    /// The fused score (a logit), when the bundle calibrates fusion.
    pub fused: Option<f32>,
}

/// A decision with what it rests on.
#[derive(Debug, Clone)]
pub struct Verification {
    pub decision: Decision,
    /// Cosine similarity to the writer's nearest reference (`None` when not enrolled).
    pub similarity: Option<f32>,
    /// The score of `rule` (the similarity under the nearest rule; `None` when not enrolled).
    pub score: Option<f32>,
    /// The rule the decision was made by: the policy's, or the nearest rule as a fallback.
    pub rule: DecisionRule,
    /// The threshold `score` was compared with.
    pub point: OperatingPoint,
    /// Why the policy's rule was not used, when it was not.
    pub fallback: Option<String>,
    /// References the writer has.
    pub references: usize,
    pub replay: Option<ReplayCheck>,
    /// Whether `score` is the image rule's or the fused score.
    pub modality: Modality,
    /// The pen trajectory's scores, when one was given and the writer has a dynamic template.
    pub dynamic: Option<DynamicPart>,
}

/// Is `probe` by `user`? (An image alone.)
pub fn verify(gallery: &KioskGallery, user: &str, probe: &Template, policy: &Policy) -> Verification {
    verify_with_pen(gallery, user, probe, None, policy)
}

/// Is `probe`, with its pen `trajectory` when the capture has one, by `user`?
pub fn verify_with_pen(
    gallery: &KioskGallery,
    user: &str,
    probe: &Template,
    trajectory: Option<&Trajectory>,
    policy: &Policy,
) -> Verification {
    let Some(writer) = gallery.get(user) else {
        return Verification {
            decision: Decision::NotEnrolled,
            similarity: None,
            score: None,
            rule: policy.rule,
            point: policy.point,
            fallback: policy.note.clone(),
            references: 0,
            replay: None,
            modality: Modality::Image,
            dynamic: None,
        };
    };
    let replay = replay::check(writer.templates(), probe, policy.replay_similarity);
    // The nearest rule's score is the nearest reference's similarity, which the guard has just
    // computed: the verify path takes it once.
    let similarity = replay.max_reference_similarity;
    debug_assert_eq!(similarity.to_bits(), writer.score(probe).to_bits(), "the gallery's rule changed");
    let (rule, score) = match policy.rule {
        DecisionRule::Nearest => (DecisionRule::Nearest, similarity),
        // From the same similarity; a single reference has no consistency and falls back, as
        // `WriterEntry::score_with` does.
        DecisionRule::Consistency => match consistency(writer.templates()) {
            Some(c) => (DecisionRule::Consistency, less_consistency(similarity, c)),
            None => (DecisionRule::Nearest, similarity),
        },
        DecisionRule::Subspace => match subspace_score(writer.templates(), probe) {
            Some(score) => (DecisionRule::Subspace, score),
            None => (DecisionRule::Nearest, similarity),
        },
        _ => {
            let scored = writer.score_with(policy.rule, probe, policy.cohort());
            (scored.rule, scored.score)
        }
    };
    let (point, fallback) = if rule == policy.rule {
        (policy.point, policy.note.clone())
    } else {
        let why = if policy.rule.method().from_references_only() {
            format!(
                "{user:?} is enrolled with a single reference and the {} rule needs two, so the nearest rule \
                 decided instead; enrol another reference",
                rule_name(policy.rule)
            )
        } else if writer.model().is_none() {
            format!(
                "{user:?} has no writer model (enrolled before the bundle had a cohort), so the nearest rule \
                 decided instead of the {} rule; `autograph gallery refit` fits it",
                rule_name(policy.rule)
            )
        } else {
            format!("no cohort to score the {} rule with; the nearest rule decided", rule_name(policy.rule))
        };
        (policy.nearest_point, Some(why))
    };
    let (mut rule, mut score, mut point, mut fallback) = (rule, score, point, fallback);
    let mut modality = Modality::Image;
    let mut dynamic = None;
    let mut pen_note = None;
    if let Some(trajectory) = trajectory {
        // Notes only where fusion was possible with this bundle: without it, the image is simply
        // the bundle's rule.
        let fusing = policy.fusion.is_some();
        match writer.dynamic().map(|t| t.verify(trajectory)) {
            None if fusing => pen_note = Some(format!("{user:?} was enrolled without pen captures; the image decides")),
            None => {}
            Some(Err(e)) if fusing => {
                pen_note = Some(format!("the pen trajectory cannot be scored ({e}); the image decides"))
            }
            Some(Err(_)) => {}
            Some(Ok(d)) => {
                let fused = policy.fusion.map(|f| (f, f.fusion.score(d.score, similarity)));
                dynamic = Some(DynamicPart { score: d.score, distance: d.distance, fused: fused.map(|(_, s)| s) });
                match fused {
                    // The fusion's image input is the nearest-reference similarity, whatever
                    // the image rule: the writer-adaptive notes do not apply.
                    Some((f, fused)) => {
                        (rule, score, point, fallback) = (DecisionRule::Nearest, fused, f.point, None);
                        modality = Modality::Fused;
                    }
                    None => pen_note = policy.fusion_note.clone(),
                }
            }
        }
    }
    if let Some(why) = pen_note {
        fallback = Some(match fallback {
            Some(f) => format!("{f}; {why}"),
            None => why,
        });
    }
    // A NaN score passes no threshold.
    let decision = if replay.possible_replay {
        Decision::PossibleReplay
    } else if score >= point.threshold {
        Decision::Accepted
    } else {
        Decision::Rejected
    };
    Verification {
        decision,
        similarity: Some(similarity),
        score: Some(score),
        rule,
        point,
        fallback,
        references: writer.templates().len(),
        replay: Some(replay),
        modality,
        dynamic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Point;
    use crate::replay::tests::tpl;
    use autograph_shared::adaptive::{AdaptiveConfig, WriterModel};

    fn manual(threshold: f32) -> OperatingPoint {
        OperatingPoint { against: None, point: Point::Manual, threshold }
    }

    #[test]
    fn replay_guard_comes_before_the_threshold() {
        let mut gallery = KioskGallery::new_boxed();
        gallery.enroll("ada", &[tpl(0, 0.2), tpl(0, 0.5)], 1, false).expect("enrol");
        let policy = Policy::nearest(manual(0.5), 0.999);

        let copy = verify(&gallery, "ada", &tpl(0, 0.2), &policy);
        assert_eq!(copy.decision, Decision::PossibleReplay, "a copy scores high but is never accepted");
        assert!(copy.score.is_some_and(|s| s >= 0.5));

        let fresh = verify(&gallery, "ada", &tpl(0, 0.35), &policy);
        assert_eq!((fresh.decision, fresh.references), (Decision::Accepted, 2));
        assert_eq!((fresh.rule, fresh.score, fresh.fallback), (DecisionRule::Nearest, fresh.similarity, None));

        let other = verify(&gallery, "ada", &tpl(20, 0.0), &policy);
        assert_eq!(other.decision, Decision::Rejected);

        let nobody = verify(&gallery, "bob", &tpl(0, 0.35), &policy);
        assert_eq!((nobody.decision, nobody.score, nobody.references), (Decision::NotEnrolled, None, 0));
    }

    #[test]
    fn adaptive_rule_with_fallback_for_writers_without_a_model() {
        let cohort = Cohort::new((30..90).map(|a| tpl(a, 0.3)).collect()).expect("cohort");
        let config = AdaptiveConfig::default();
        let mut gallery = KioskGallery::new_boxed();
        let refs = [tpl(0, 0.2), tpl(0, 0.5), tpl(0, 0.8)];
        gallery.enroll_fitted("ada", &refs, 1, false, Some(&cohort), &config).expect("enrol");
        gallery.enroll("bob", &[tpl(10, 0.2), tpl(10, 0.5)], 1, false).expect("enrol");
        let policy = Policy {
            rule: DecisionRule::Classifier,
            point: manual(0.0),
            nearest_point: manual(0.6),
            replay_similarity: 0.999,
            cohort: Some(Arc::new(cohort.clone())),
            note: None,
            fusion: None,
            fusion_note: None,
        };

        // Ada has a model: her classifier decides, against the classifier's threshold.
        let genuine = verify(&gallery, "ada", &tpl(0, 0.35), &policy);
        let model = WriterModel::fit(&refs, &cohort, &config).expect("fit");
        assert_eq!(genuine.rule, DecisionRule::Classifier);
        assert_eq!(genuine.score, Some(model.classifier_score(&tpl(0, 0.35))));
        assert!(genuine.similarity.is_some_and(|s| s > 0.9));
        assert_eq!((genuine.decision, genuine.point.threshold, genuine.fallback), (Decision::Accepted, 0.0, None));
        let impostor = verify(&gallery, "ada", &tpl(40, 0.0), &policy);
        assert_eq!(impostor.decision, Decision::Rejected);
        // The replay guard still comes first, on the raw similarity.
        assert_eq!(verify(&gallery, "ada", &refs[1], &policy).decision, Decision::PossibleReplay);

        // Bob has none: the nearest rule and its threshold, and the reason.
        let bob = verify(&gallery, "bob", &tpl(10, 0.35), &policy);
        assert_eq!((bob.rule, bob.score, bob.point.threshold), (DecisionRule::Nearest, bob.similarity, 0.6));
        assert!(bob.fallback.as_deref().is_some_and(|f| f.contains("refit")), "{bob:?}");
        assert_eq!(bob.decision, Decision::Accepted);

        // The normalised rule needs the cohort at verification; without it, nearest.
        let normalised = Policy { rule: DecisionRule::Normalised, ..policy.clone() };
        let scored = verify(&gallery, "ada", &tpl(0, 0.35), &normalised);
        assert_eq!(scored.rule, DecisionRule::Normalised);
        let no_cohort = Policy { cohort: None, ..normalised };
        let scored = verify(&gallery, "ada", &tpl(0, 0.35), &no_cohort);
        assert_eq!(scored.rule, DecisionRule::Nearest);
        assert!(scored.fallback.as_deref().is_some_and(|f| f.contains("no cohort")), "{scored:?}");
    }

    /// A pen trajectory: the synthetic signer's `sample`-th signature of `writer`.
    fn pen(writer: u64, sample: u64) -> Trajectory {
        let recording = autograph_shared::strokes::synth::signature(writer, sample, 600, 200).expect("signature");
        Trajectory::try_from(&recording).expect("trajectory")
    }

    #[test]
    fn pen_captures_are_decided_on_the_fused_score() {
        use autograph_shared::online::{DynamicSettings, DynamicTemplate, ScoreStats};
        let mut gallery = KioskGallery::new_boxed();
        gallery.enroll("ada", &[tpl(0, 0.2), tpl(0, 0.5)], 1, false).expect("enrol");
        gallery.enroll("bob", &[tpl(10, 0.2), tpl(10, 0.5)], 1, false).expect("enrol");
        let refs: Vec<Trajectory> = (0..3).map(|k| pen(1, k)).collect();
        let template = DynamicTemplate::enrol(&refs, &DynamicSettings::default()).expect("dynamic template");
        gallery.set_dynamic("ada", Some(template)).expect("ada is enrolled");
        let fusion = Fusion {
            dynamic: ScoreStats { mean: 0.5, std: 0.1 },
            image: ScoreStats { mean: 0.5, std: 0.2 },
            w_dynamic: 2.0,
            w_image: 1.0,
            bias: 0.0,
        };
        let policy = Policy {
            fusion: Some(FusionPolicy { fusion, point: manual(0.0) }),
            fusion_note: None,
            ..Policy::nearest(manual(0.5), 0.999)
        };
        let probe = tpl(0, 0.35);

        // Genuine: the fused score decides, against the fusion's threshold.
        let genuine = verify_with_pen(&gallery, "ada", &probe, Some(&pen(1, 7)), &policy);
        assert_eq!(
            (genuine.modality, genuine.point.threshold, genuine.fallback.as_deref()),
            (Modality::Fused, 0.0, None)
        );
        let d = genuine.dynamic.expect("dynamic part");
        let similarity = genuine.similarity.expect("similarity");
        assert_eq!(genuine.score, Some(fusion.score(d.score, similarity)));
        assert_eq!(d.fused, genuine.score);
        assert_eq!(genuine.decision, Decision::Accepted);
        // The same image with a forger's trajectory scores lower: the pen adds evidence.
        let forged = verify_with_pen(&gallery, "ada", &probe, Some(&pen(2, 0)), &policy);
        assert_eq!(forged.similarity, genuine.similarity);
        assert!(forged.score < genuine.score, "{forged:?} vs {genuine:?}");
        // Without a trajectory, the image decides as before.
        let image = verify_with_pen(&gallery, "ada", &probe, None, &policy);
        assert_eq!((image.modality, image.score, image.dynamic), (Modality::Image, image.similarity, None));
        // A copy of a reference image is still a possible replay, whatever the pen says.
        let copy = verify_with_pen(&gallery, "ada", &tpl(0, 0.2), Some(&pen(1, 7)), &policy);
        assert_eq!(copy.decision, Decision::PossibleReplay);

        // Bob has no dynamic template: the image decides, and says why.
        let bob = verify_with_pen(&gallery, "bob", &tpl(10, 0.35), Some(&pen(1, 5)), &policy);
        assert_eq!((bob.modality, bob.dynamic), (Modality::Image, None));
        assert!(bob.fallback.as_deref().is_some_and(|f| f.contains("without pen captures")), "{bob:?}");
        // A bundle without fusion: the dynamic score is shown, the image decides as the
        // bundle's rule (no note); one without fusion for this precision says so.
        let plain = Policy::nearest(manual(0.5), 0.999);
        let shown = verify_with_pen(&gallery, "ada", &probe, Some(&pen(1, 7)), &plain);
        assert_eq!((shown.modality, shown.score, shown.fallback.as_deref()), (Modality::Image, shown.similarity, None));
        assert!(shown.dynamic.is_some_and(|d| d.fused.is_none()));
        let other = Policy { fusion_note: Some("not for int8".into()), ..plain };
        let noted = verify_with_pen(&gallery, "ada", &probe, Some(&pen(1, 7)), &other);
        assert_eq!((noted.modality, noted.fallback.as_deref()), (Modality::Image, Some("not for int8")));
    }
}
