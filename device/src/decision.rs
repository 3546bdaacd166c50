//! The verification rule, in one place for `autograph verify` and the kiosk: the replay guard
//! first (a copy of an enrolled reference is never accepted), then the writer's score against
//! the operating point's threshold.

use autograph_shared::gallery::{KioskGallery, Template};
use serde::Serialize;

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

/// A decision with what it rests on.
#[derive(Debug, Clone, Copy)]
pub struct Verification {
    pub decision: Decision,
    /// The writer's score for the probe (`None` when not enrolled).
    pub score: Option<f32>,
    /// References the writer has.
    pub references: usize,
    pub replay: Option<ReplayCheck>,
}

/// Is `probe` by `user`?
pub fn verify(
    gallery: &KioskGallery,
    user: &str,
    probe: &Template,
    threshold: f32,
    replay_similarity: f32,
) -> Verification {
    let Some(writer) = gallery.get(user) else {
        return Verification { decision: Decision::NotEnrolled, score: None, references: 0, replay: None };
    };
    let replay = replay::check(writer.templates(), probe, replay_similarity);
    // The gallery's score is the nearest reference's similarity, which the guard has just
    // computed: the verify path takes it once.
    let score = replay.max_reference_similarity;
    debug_assert_eq!(score.to_bits(), writer.score(probe).to_bits(), "the gallery's rule changed");
    let decision = if replay.possible_replay {
        Decision::PossibleReplay
    } else if score >= threshold {
        Decision::Accepted
    } else {
        Decision::Rejected
    };
    Verification { decision, score: Some(score), references: writer.templates().len(), replay: Some(replay) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::tests::tpl;

    #[test]
    fn replay_guard_comes_before_the_threshold() {
        let mut gallery = KioskGallery::new_boxed();
        gallery.enroll("ada", &[tpl(0, 0.2), tpl(0, 0.5)], 1, false).expect("enrol");

        let copy = verify(&gallery, "ada", &tpl(0, 0.2), 0.5, 0.999);
        assert_eq!(copy.decision, Decision::PossibleReplay, "a copy scores high but is never accepted");
        assert!(copy.score.is_some_and(|s| s >= 0.5));

        let fresh = verify(&gallery, "ada", &tpl(0, 0.35), 0.5, 0.999);
        assert_eq!((fresh.decision, fresh.references), (Decision::Accepted, 2));

        let other = verify(&gallery, "ada", &tpl(20, 0.0), 0.5, 0.999);
        assert_eq!(other.decision, Decision::Rejected);

        let nobody = verify(&gallery, "bob", &tpl(0, 0.35), 0.5, 0.999);
        assert_eq!((nobody.decision, nobody.score, nobody.references), (Decision::NotEnrolled, None, 0));
    }
}
