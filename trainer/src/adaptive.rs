//! The writer-adaptive part of a bundle: a background cohort of training writers' templates
//! (`cohort.bin`), and the decision rule chosen and calibrated on validation writers.
//!
//! The rule is chosen on validation writers only: the nearest-reference rule, the normalised
//! score and the per-writer classifier are scored with the same enrolments, and the rule with
//! the lowest validation skilled-forgery EER wins unless it raises the validation random-forgery
//! EER by more than [`RANDOM_EER_SLACK`]. Test writers are scored for the report, never for the
//! choice.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use autograph_shared::adaptive::{
    AdaptiveConfig, COMPARED_REFERENCES, Cohort, DecisionRule, MethodScores, RuleComparison, ScoreMethod,
    compare_rules_with, method_scores,
};
use autograph_shared::dataset::splits::WriterSplit;
use autograph_shared::dataset::{Dataset, Sample};
use autograph_shared::manifest::{AdaptiveDecision, COHORT_FILE, CohortFile};
use autograph_shared::metrics;
use autograph_shared::protocol::{
    EmbeddedSample, Embedder, SplitEvaluation, Thresholds, VerificationScores, calibrate_against_nearest, embed_samples,
};
use serde::Serialize;

/// Templates in a bundle's cohort: a few hundred keeps t-norm at verification under a
/// millisecond and the enrolment fit in milliseconds.
pub const COHORT_SIZE: usize = 300;

/// How much worse (absolute EER) on random forgeries an adaptive rule may be on validation
/// writers and still be chosen for its better skilled-forgery EER.
pub const RANDOM_EER_SLACK: f64 = 0.005;

/// Seed of the cohort draw and of the enrolments that compare rules.
const SEED: u64 = 7;

/// Training writers' genuine signatures and skilled forgeries for the cohort, spread evenly over
/// the writers (about `limit / writers` each, genuine first). Refuses any writer that is not a
/// training writer of `split`: a cohort template of a validation or test writer would let the
/// device's decisions see held-out writers.
pub fn cohort_samples<'a>(dataset: &'a Dataset, split: &WriterSplit, limit: usize) -> Result<Vec<&'a Sample>> {
    let train: BTreeSet<&String> = split.train.iter().collect();
    ensure!(!train.is_empty(), "the split has no training writers to draw a cohort from");
    let per_writer = limit.div_ceil(train.len()).max(1);
    let mut chosen = Vec::new();
    for writer in &split.train {
        // Genuine and forged alternately, so a writer contributes both where it has both.
        let (genuine, forged): (Vec<&Sample>, Vec<&Sample>) = dataset
            .samples
            .iter()
            .filter(|s| &s.writer == writer)
            .partition(|s| s.label == autograph_shared::dataset::Label::Genuine);
        let mut g = genuine.into_iter();
        let mut f = forged.into_iter();
        let mut taken = 0;
        while taken < per_writer {
            let next = if taken % 2 == 0 { g.next().or_else(|| f.next()) } else { f.next().or_else(|| g.next()) };
            let Some(s) = next else { break };
            chosen.push(s);
            taken += 1;
        }
    }
    check_cohort_writers(chosen.iter().map(|s| s.writer.as_str()), split)?;
    Ok(chosen)
}

/// Refuses cohort writers that are held out (validation or test) or unknown to the split.
pub fn check_cohort_writers<'a>(writers: impl IntoIterator<Item = &'a str>, split: &WriterSplit) -> Result<()> {
    for w in writers {
        match split.role_of(w) {
            Some("train") => {}
            Some(role) => bail!("cohort template of {w}, a {role} writer: the cohort may hold training writers only"),
            None => bail!("cohort template of {w}, a writer outside the run's split"),
        }
    }
    Ok(())
}

/// What export measured for the adaptive rules (saved in the manifest's `test_metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveReport {
    /// Validation EERs (skilled, random) per rule at the calibration R: what chose the rule.
    pub validation: Vec<(DecisionRule, Option<f64>, Option<f64>)>,
    pub chosen: DecisionRule,
    /// Every scoring method at R = 1, 3, 5, 10 on test writers, thresholds from validation.
    pub comparison: RuleComparison,
}

/// Embeds the cohort, writes `cohort.bin` into `bundle_dir`, chooses and calibrates the rule on
/// the evaluation's validation writers (at its calibration R) and reports every rule on its test
/// writers.
pub fn build(
    embedder: &mut dyn Embedder,
    dataset: &Dataset,
    split: &WriterSplit,
    preprocess: &autograph_shared::PreprocessConfig,
    evaluation: &SplitEvaluation,
    bundle_dir: &Path,
) -> Result<(AdaptiveDecision, AdaptiveReport)> {
    let (validation, test) = (&evaluation.validation_embedded, &evaluation.test_embedded);
    let references = evaluation.calibration.references;
    let samples = cohort_samples(dataset, split, COHORT_SIZE)?;
    let bar = crate::progress::bar(samples.len() as u64, "embedding the cohort (training writers)");
    let (embedded, skipped) = embed_samples(embedder, &samples, preprocess, 32, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    for s in &skipped {
        log::warn!("cohort: skipped {}: {}", s.file, s.reason);
    }
    check_cohort_writers(embedded.iter().map(|s| s.writer.as_str()), split)?;
    let cohort = Cohort::from_samples(&embedded, COHORT_SIZE, SEED).context("building the cohort")?;
    let bytes = cohort.to_bytes();
    let path = bundle_dir.join(COHORT_FILE);
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    let writers: BTreeSet<&str> = embedded.iter().map(|s| s.writer.as_str()).collect();
    let file = CohortFile {
        path: COHORT_FILE.into(),
        sha256: autograph_shared::sha256_hex(&bytes),
        bytes: bytes.len() as u64,
        templates: cohort.len(),
        writers: writers.len(),
    };
    let config = AdaptiveConfig::default();
    let (chosen, validation_eers, thresholds) = choose_rule(validation, &cohort, references, &config)?;
    let comparison = compare_rules_with(validation, test, &cohort, &COMPARED_REFERENCES, SEED, &config);
    let decision =
        AdaptiveDecision { cohort: file, rule: chosen, f32_thresholds: thresholds, int8_thresholds: None, config };
    Ok((decision, AdaptiveReport { validation: validation_eers, chosen, comparison }))
}

type RuleEers = Vec<(DecisionRule, Option<f64>, Option<f64>)>;

/// The rule with the lowest validation skilled EER (random EER within [`RANDOM_EER_SLACK`] of
/// the nearest rule's), its thresholds, and every rule's validation EERs.
pub fn choose_rule(
    validation: &[EmbeddedSample],
    cohort: &Cohort,
    references: usize,
    config: &AdaptiveConfig,
) -> Result<(DecisionRule, RuleEers, Thresholds)> {
    let scores = method_scores(validation, cohort, references, SEED, config);
    let eer = |genuine: &[f32], impostor: &[f32]| {
        let e = metrics::eer(genuine, impostor).eer;
        e.is_finite().then_some(e)
    };
    let mut eers = Vec::new();
    for rule in DecisionRule::ALL {
        let s = &scores.iter().find(|m| m.method == rule.method()).context("a scoring method is missing")?.scores;
        eers.push((rule, eer(&s.genuine, &s.skilled), eer(&s.genuine, &s.random)));
    }
    let nearest_random = eers[0].2.unwrap_or(f64::INFINITY);
    let key = |e: &(DecisionRule, Option<f64>, Option<f64>)| e.1.or(e.2).unwrap_or(f64::INFINITY);
    let chosen = eers
        .iter()
        .filter(|e| e.0 == DecisionRule::Nearest || e.2.is_some_and(|r| r <= nearest_random + RANDOM_EER_SLACK))
        .min_by(|a, b| key(a).total_cmp(&key(b)))
        .map_or(DecisionRule::Nearest, |e| e.0);
    let thresholds = calibrate_chosen(&scores, chosen)?;
    Ok((chosen, eers, thresholds))
}

/// The chosen rule's thresholds for another embedding (the int8 model), on validation writers.
pub fn calibrate_rule(
    validation: &[EmbeddedSample],
    cohort: &Cohort,
    rule: DecisionRule,
    references: usize,
    config: &AdaptiveConfig,
) -> Result<Thresholds> {
    calibrate_chosen(&method_scores(validation, cohort, references, SEED, config), rule)
}

/// `rule`'s thresholds, with the point that accepts forgeries as often as the nearest rule did
/// at its EER threshold on the same enrolments (`autograph verify --far nearest-eer`).
fn calibrate_chosen(scores: &[MethodScores], rule: DecisionRule) -> Result<Thresholds> {
    let of = |method: ScoreMethod| -> Result<&VerificationScores> {
        Ok(&scores.iter().find(|m| m.method == method).context("a scoring method is missing")?.scores)
    };
    calibrate_against_nearest(of(rule.method())?, of(ScoreMethod::Nearest)?)
        .context("calibrating the adaptive rule on validation writers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograph_shared::dataset::{ImageSource, Label, Layout};

    fn dataset() -> Dataset {
        let mut samples = Vec::new();
        for w in ["a", "b", "c", "d"] {
            for (label, n) in [(Label::Genuine, 4), (Label::Forged, 3)] {
                for k in 0..n {
                    samples.push(Sample {
                        writer: w.into(),
                        label,
                        source: ImageSource::File(format!("{w}-{label:?}-{k}.png").into()),
                        sha256: format!("{w}{label:?}{k}"),
                    });
                }
            }
        }
        Dataset::from_samples("toy".into(), "toy".into(), Layout::GenuineForged, samples)
    }

    fn split() -> WriterSplit {
        WriterSplit { train: vec!["a".into(), "b".into()], validation: vec!["c".into()], test: vec!["d".into()] }
    }

    #[test]
    fn the_cohort_holds_training_writers_only_genuine_and_forged() {
        let ds = dataset();
        let chosen = cohort_samples(&ds, &split(), 6).expect("cohort");
        assert_eq!(chosen.len(), 6);
        assert!(chosen.iter().all(|s| s.writer == "a" || s.writer == "b"));
        for w in ["a", "b"] {
            let mine: Vec<_> = chosen.iter().filter(|s| s.writer == w).collect();
            assert_eq!(mine.len(), 3);
            assert!(mine.iter().any(|s| s.label == Label::Forged) && mine.iter().any(|s| s.label == Label::Genuine));
        }
    }

    #[test]
    fn a_cohort_template_of_a_held_out_writer_is_refused() {
        let split = split();
        let err = check_cohort_writers(["a", "d"], &split).expect_err("d is a test writer");
        assert!(err.to_string().contains("d, a test writer"), "{err}");
        let err = check_cohort_writers(["c"], &split).expect_err("c is a validation writer");
        assert!(err.to_string().contains("validation writer"), "{err}");
        assert!(check_cohort_writers(["zed"], &split).is_err(), "unknown writers are refused too");
        assert!(check_cohort_writers(["a", "b"], &split).is_ok());
    }
}
