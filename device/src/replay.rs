//! The replay guard: a probe that is a copy of an enrolled reference is not a signature, it is a
//! replayed file (or a photocopy of one). Two genuine signatures are never pixel-identical.
//!
//! The gallery keeps only templates, not images, so the guard works on templates: a probe whose
//! int8 template equals a reference's (what a pixel-identical image gives with a deterministic
//! runtime), or whose similarity to one reference exceeds the manifest's `replay_similarity`
//! (set above every pair of distinct genuine signatures seen in validation, so a re-encoded or
//! slightly re-scanned copy, or the same image embedded by the other runtime, is caught too).

use autograph_shared::gallery::{Template, max_similarity};
use serde::Serialize;

/// What the guard found for one probe against one writer's references.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplayCheck {
    /// Highest similarity of the probe to any single reference.
    pub max_reference_similarity: f32,
    /// The probe's template equals a reference's, value for value.
    pub identical_template: bool,
    /// The limit from the manifest.
    pub replay_similarity: f32,
    /// `identical_template` or `max_reference_similarity > replay_similarity`.
    pub possible_replay: bool,
}

/// Checks `probe` against a writer's `references`.
pub fn check(references: &[Template], probe: &Template, replay_similarity: f32) -> ReplayCheck {
    let max_reference_similarity = max_similarity(references, probe);
    let identical_template = references.iter().any(|r| r == probe);
    ReplayCheck {
        max_reference_similarity,
        identical_template,
        replay_similarity,
        possible_replay: identical_template || max_reference_similarity > replay_similarity,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use autograph_shared::gallery::EMBEDDING_DIM;

    /// A unit template mostly along `axis`, tilted towards the next axis by `tilt`.
    pub(crate) fn tpl(axis: usize, tilt: f32) -> Template {
        let mut v = vec![0.0f32; EMBEDDING_DIM];
        v[axis] = 1.0;
        v[axis + 1] = tilt;
        Template::from_embedding(&v).expect("template")
    }

    #[test]
    fn identical_and_near_identical_probes_are_flagged() {
        let refs = [tpl(0, 0.3), tpl(10, 0.0)];
        let same = check(&refs, &tpl(0, 0.3), 0.99);
        assert!(same.identical_template && same.possible_replay);
        let near = check(&refs, &tpl(0, 0.31), 0.99);
        assert!(!near.identical_template && near.possible_replay, "{near:?}");
        let genuine = check(&refs, &tpl(0, 0.6), 0.99);
        assert!(!genuine.possible_replay, "{genuine:?}");
        // Even a limit above 1 cannot let an identical copy through.
        assert!(check(&refs, &tpl(10, 0.0), 1.5).possible_replay);
        assert!(!check(&[], &tpl(10, 0.0), 0.99).possible_replay);
    }
}
