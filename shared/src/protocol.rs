//! The evaluation protocol, written once: the trainer (burn) and the device (tract, ort) run
//! the same code through [`Embedder`], so their figures differ only by the runtime.
//!
//! Scores use the gallery's own rule (int8 templates, similarity to the nearest enrolled
//! reference), so what is measured here is what the kiosk decides with.

use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::splits::WriterSplit;
use crate::dataset::{Dataset, Label, Sample, Unreadable};
use crate::gallery::{Template, writer_score};
use crate::manifest::Calibration;
use crate::metrics::{self, Eer, OperatingPoint};
use crate::preprocess::{PreprocessConfig, Preprocessed};

/// Anything that turns preprocessed images into L2-normalised embeddings.
pub trait Embedder {
    /// Embeds a batch; one embedding per input, in order.
    fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// An embedding runtime failed.
#[derive(Debug, thiserror::Error)]
#[error("embedding failed: {0}")]
pub struct EmbedError(pub String);

/// A sample with its template, ready to be scored.
#[derive(Debug, Clone)]
pub struct EmbeddedSample {
    pub writer: String,
    pub label: Label,
    pub template: Template,
}

impl EmbeddedSample {
    pub fn new(sample: &Sample, embedding: &[f32]) -> Result<Self, EmbedError> {
        let template = Template::from_embedding(embedding).map_err(|e| EmbedError(e.to_string()))?;
        Ok(Self { writer: sample.writer.clone(), label: sample.label, template })
    }
}

/// Scores of one verification experiment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerificationScores {
    /// Held-out genuine signatures against their own writer's references.
    pub genuine: Vec<f32>,
    /// Skilled forgeries of a writer against that writer's references.
    pub skilled: Vec<f32>,
    /// Other writers' genuine signatures against a writer's references.
    pub random: Vec<f32>,
    /// Writers scored (those with more genuine signatures than references).
    pub writers: usize,
    /// Highest similarity seen between two different genuine signatures of one writer: a
    /// probe closer than this to a reference is suspiciously close (replay guard).
    pub max_genuine_pair_similarity: f32,
    /// For each held-out genuine probe, its highest similarity to a single reference: what the
    /// replay guard compares with its limit (so its false alarms can be counted).
    #[serde(default)]
    pub genuine_max_reference: Vec<f32>,
}

/// Enrols `references` randomly chosen (seeded) genuine signatures of every writer present,
/// then scores that writer's other genuine signatures, its skilled forgeries, and every
/// genuine signature of the other writers.
pub fn verification_scores(samples: &[EmbeddedSample], references: usize, seed: u64) -> VerificationScores {
    let mut writers: Vec<&str> = samples.iter().map(|s| s.writer.as_str()).collect();
    writers.sort_unstable();
    writers.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = VerificationScores { max_genuine_pair_similarity: f32::NEG_INFINITY, ..Default::default() };
    for writer in writers {
        let mut genuine: Vec<&EmbeddedSample> =
            samples.iter().filter(|s| s.writer == writer && s.label == Label::Genuine).collect();
        if genuine.len() <= references || references == 0 {
            continue;
        }
        genuine.shuffle(&mut rng);
        let enrolled: Vec<Template> = genuine[..references].iter().map(|s| s.template).collect();
        out.writers += 1;
        for probe in &genuine[references..] {
            out.genuine.push(writer_score(&enrolled, &probe.template));
            out.genuine_max_reference.push(crate::gallery::max_similarity(&enrolled, &probe.template));
        }
        for (i, a) in genuine.iter().enumerate() {
            for b in &genuine[i + 1..] {
                let s = a.template.similarity(&b.template);
                out.max_genuine_pair_similarity = out.max_genuine_pair_similarity.max(s);
            }
        }
        for s in samples.iter().filter(|s| s.writer == writer && s.label == Label::Forged) {
            out.skilled.push(writer_score(&enrolled, &s.template));
        }
        for s in samples.iter().filter(|s| s.writer != writer && s.label == Label::Genuine) {
            out.random.push(writer_score(&enrolled, &s.template));
        }
    }
    out
}

/// Decision thresholds at the operating points the manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingThresholds {
    /// Where FAR and FRR cross on the calibration writers.
    pub eer: f32,
    /// FAR at most 1% on the calibration writers.
    pub far_1pct: f32,
    /// FAR at most 0.1% on the calibration writers.
    pub far_0_1pct: f32,
    /// Where this score accepts these impostors no more often than the nearest-reference rule
    /// does at its own EER threshold on the same calibration writers (today's acceptance there;
    /// on new writers it need not hold, docs/evaluation.md, session 11). Calibrated for the
    /// bundle's adaptive rule ([`calibrate_against_nearest`]); `None` in
    /// older bundles and in tables that are the nearest rule's own (its EER point is that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest_eer_far: Option<f32>,
}

/// Thresholds against skilled and random forgeries, calibrated on validation writers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// `None` when the calibration data had no skilled forgeries (Omniglot, class folders).
    pub skilled: Option<OperatingThresholds>,
    pub random: OperatingThresholds,
}

fn operating_thresholds(genuine: &[f32], impostor: &[f32]) -> Option<OperatingThresholds> {
    if genuine.is_empty() || impostor.is_empty() {
        return None;
    }
    Some(OperatingThresholds {
        eer: metrics::eer(genuine, impostor).threshold,
        far_1pct: metrics::threshold_at_far(impostor, 0.01),
        far_0_1pct: metrics::threshold_at_far(impostor, 0.001),
        nearest_eer_far: None,
    })
}

/// Calibrates thresholds on (validation) scores. Errors when there are no genuine or random
/// scores: a threshold from nothing would be a made-up number.
pub fn calibrate(scores: &VerificationScores) -> Result<Thresholds, EmbedError> {
    let random = operating_thresholds(&scores.genuine, &scores.random)
        .ok_or_else(|| EmbedError("cannot calibrate thresholds: no genuine or random-forgery scores".into()))?;
    Ok(Thresholds { skilled: operating_thresholds(&scores.genuine, &scores.skilled), random })
}

/// [`calibrate`] for a rule's `scores`, with each table's [`OperatingThresholds::nearest_eer_far`]
/// from `nearest`: the nearest-reference rule's scores on the same writers and enrolments.
pub fn calibrate_against_nearest(
    scores: &VerificationScores,
    nearest: &VerificationScores,
) -> Result<Thresholds, EmbedError> {
    let mut thresholds = calibrate(scores)?;
    thresholds.random.nearest_eer_far = at_nearest_eer_far(&scores.random, &nearest.genuine, &nearest.random);
    if let Some(skilled) = &mut thresholds.skilled {
        skilled.nearest_eer_far = at_nearest_eer_far(&scores.skilled, &nearest.genuine, &nearest.skilled);
    }
    Ok(thresholds)
}

/// The threshold of `impostor` at the FAR the nearest rule has at its EER threshold.
fn at_nearest_eer_far(impostor: &[f32], nearest_genuine: &[f32], nearest_impostor: &[f32]) -> Option<f32> {
    let eer = metrics::eer(nearest_genuine, nearest_impostor);
    if impostor.is_empty() || !eer.threshold.is_finite() {
        return None;
    }
    let far = metrics::rates_at(nearest_genuine, nearest_impostor, eer.threshold).far;
    Some(metrics::threshold_at_far(impostor, far)).filter(|t| t.is_finite())
}

/// Figures against one kind of forgery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForgeryMetrics {
    /// EER on these scores (its threshold is the test set's own: reported, never used to decide).
    pub eer: f64,
    pub auc: f64,
    /// FAR and FRR at the EER threshold calibrated on validation writers.
    pub at_validation_eer_threshold: OperatingPoint,
    /// FAR and FRR at the validation FAR-1% threshold.
    pub at_validation_far_1pct_threshold: OperatingPoint,
    /// FAR and FRR at the validation threshold that accepts these forgeries as often as the
    /// nearest rule did at its EER point ([`OperatingThresholds::nearest_eer_far`]), when
    /// calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_validation_nearest_eer_far_threshold: Option<OperatingPoint>,
    pub genuine_scores: usize,
    pub impostor_scores: usize,
}

/// Verification figures on test writers, with thresholds from validation writers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VerificationMetrics {
    pub references: usize,
    pub writers: usize,
    pub skilled: Option<ForgeryMetrics>,
    pub random: Option<ForgeryMetrics>,
}

fn forgery_metrics(
    genuine: &[f32],
    impostor: &[f32],
    thresholds: Option<OperatingThresholds>,
) -> Option<ForgeryMetrics> {
    if genuine.is_empty() || impostor.is_empty() {
        return None;
    }
    let Eer { eer, .. } = metrics::eer(genuine, impostor);
    let nan = OperatingPoint { threshold: f32::NAN, far: f64::NAN, frr: f64::NAN };
    Some(ForgeryMetrics {
        eer,
        auc: metrics::auc(genuine, impostor),
        at_validation_eer_threshold: thresholds.map_or(nan, |t| metrics::rates_at(genuine, impostor, t.eer)),
        at_validation_far_1pct_threshold: thresholds.map_or(nan, |t| metrics::rates_at(genuine, impostor, t.far_1pct)),
        at_validation_nearest_eer_far_threshold: thresholds
            .and_then(|t| t.nearest_eer_far)
            .map(|t| metrics::rates_at(genuine, impostor, t)),
        genuine_scores: genuine.len(),
        impostor_scores: impostor.len(),
    })
}

/// Turns test scores into figures, deciding with thresholds calibrated elsewhere.
pub fn verification_metrics(
    test: &VerificationScores,
    references: usize,
    thresholds: &Thresholds,
) -> VerificationMetrics {
    VerificationMetrics {
        references,
        writers: test.writers,
        skilled: forgery_metrics(&test.genuine, &test.skilled, thresholds.skilled),
        random: forgery_metrics(&test.genuine, &test.random, Some(thresholds.random)),
    }
}

/// N-way K-shot identification accuracy by the gallery's rule: for each trial, pick `n_way`
/// writers with more than `k_shot` genuine samples, enrol `k_shot` of each, and classify one
/// held-out genuine sample of one of them by the highest score (nearest reference).
pub fn identification_accuracy(
    samples: &[EmbeddedSample],
    n_way: usize,
    k_shot: usize,
    trials: usize,
    seed: u64,
) -> Option<f64> {
    let mut by_writer: Vec<(&str, Vec<&EmbeddedSample>)> = Vec::new();
    for s in samples.iter().filter(|s| s.label == Label::Genuine) {
        match by_writer.iter_mut().find(|(w, _)| *w == s.writer) {
            Some((_, v)) => v.push(s),
            None => by_writer.push((s.writer.as_str(), vec![s])),
        }
    }
    by_writer.retain(|(_, v)| v.len() > k_shot);
    if by_writer.len() < n_way || n_way < 2 || trials == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut correct = 0usize;
    for _ in 0..trials {
        let chosen: Vec<&(&str, Vec<&EmbeddedSample>)> = by_writer.choose_multiple(&mut rng, n_way).collect();
        let truth = rand::Rng::random_range(&mut rng, 0..n_way);
        let mut query = None;
        let galleries: Vec<Vec<Template>> = chosen
            .iter()
            .enumerate()
            .map(|(i, (_, v))| {
                let mut v = v.clone();
                v.shuffle(&mut rng);
                if i == truth {
                    query = Some(v[k_shot].template);
                }
                v[..k_shot].iter().map(|s| s.template).collect()
            })
            .collect();
        let Some(query) = query else { continue };
        let best = galleries
            .iter()
            .enumerate()
            .map(|(i, g)| (i, writer_score(g, &query)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i);
        if best == Some(truth) {
            correct += 1;
        }
    }
    Some(correct as f64 / trials as f64)
}

/// One-shot accuracy of one Omniglot run: each test template is matched to the most similar
/// training template; `answers[i]` is the index of test `i`'s correct training image.
pub fn one_shot_accuracy(training: &[Template], test: &[Template], answers: &[usize]) -> f64 {
    let correct = test
        .iter()
        .zip(answers)
        .filter(|&(probe, &answer)| {
            let best = training
                .iter()
                .enumerate()
                .map(|(i, t)| (i, t.similarity(probe)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i);
            best == Some(answer)
        })
        .count();
    if test.is_empty() { f64::NAN } else { correct as f64 / test.len() as f64 }
}

/// Reads, preprocesses and embeds samples in batches. Unreadable images are skipped and
/// returned with the reason (they are named in reports, never silently dropped).
pub fn embed_samples(
    embedder: &mut dyn Embedder,
    samples: &[&Sample],
    config: &PreprocessConfig,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<EmbeddedSample>, Vec<Unreadable>), EmbedError> {
    let mut embedded = Vec::with_capacity(samples.len());
    let mut skipped = Vec::new();
    for chunk in samples.chunks(batch_size.max(1)) {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut kept = Vec::with_capacity(chunk.len());
        for sample in chunk {
            let pre = sample
                .source
                .read()
                .map_err(|e| e.to_string())
                .and_then(|bytes| crate::preprocess::preprocess_bytes(&bytes, config).map_err(|e| e.to_string()));
            match pre {
                Ok(p) => {
                    batch.push(p);
                    kept.push(*sample);
                }
                Err(reason) => skipped.push(Unreadable { file: sample.source.to_string(), reason }),
            }
        }
        if !batch.is_empty() {
            let embeddings = embedder.embed(&batch)?;
            for (sample, embedding) in kept.iter().zip(&embeddings) {
                embedded.push(EmbeddedSample::new(sample, embedding)?);
            }
        }
        progress(chunk.len());
    }
    Ok((embedded, skipped))
}

/// Thresholds from validation writers and figures on test writers, for one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitEvaluation {
    pub calibration: Calibration,
    pub test: VerificationMetrics,
    pub validation_scores: VerificationScores,
    pub test_scores: VerificationScores,
    pub skipped: Vec<Unreadable>,
    /// Share of test writers' held-out genuine signatures that the replay guard would flag.
    pub test_replay_false_alarm_rate: f64,
    /// The embedded validation and test samples the figures came from (for further scoring
    /// rules, e.g. [`crate::adaptive::compare_rules`]; not serialised).
    #[serde(skip)]
    pub validation_embedded: Vec<EmbeddedSample>,
    #[serde(skip)]
    pub test_embedded: Vec<EmbeddedSample>,
}

/// The replay guard's limit: halfway between the closest pair of distinct genuine signatures
/// seen on calibration writers and an exact copy (similarity 1). Using the closest pair itself
/// flagged many genuine signatures of consistent writers on SVC2004 test writers; a copy or
/// re-encoded file still lands far above the midpoint.
pub fn replay_limit(max_genuine_pair_similarity: f32) -> f32 {
    let closest = max_genuine_pair_similarity.clamp(-1.0, 1.0);
    closest + (1.0 - closest) / 2.0
}

/// The protocol on one writer-disjoint split: embed validation and test writers, calibrate on
/// validation, report on test. Test scores never influence a threshold.
pub fn evaluate_split(
    embedder: &mut dyn Embedder,
    dataset: &Dataset,
    split: &WriterSplit,
    config: &PreprocessConfig,
    references: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<SplitEvaluation, EmbedError> {
    let validation: Vec<&Sample> = dataset.samples_of(&split.validation).collect();
    let test: Vec<&Sample> = dataset.samples_of(&split.test).collect();
    let (val_embedded, mut skipped) = embed_samples(embedder, &validation, config, 32, progress)?;
    let (test_embedded, test_skipped) = embed_samples(embedder, &test, config, 32, progress)?;
    skipped.extend(test_skipped);
    let validation_scores = verification_scores(&val_embedded, references, seed);
    let thresholds = calibrate(&validation_scores)?;
    let calibration = Calibration {
        references,
        thresholds,
        replay_similarity: replay_limit(validation_scores.max_genuine_pair_similarity),
    };
    let test_scores = verification_scores(&test_embedded, references, seed);
    let test = verification_metrics(&test_scores, references, &thresholds);
    let flagged = test_scores.genuine_max_reference.iter().filter(|&&s| s > calibration.replay_similarity).count();
    let test_replay_false_alarm_rate = flagged as f64 / test_scores.genuine_max_reference.len().max(1) as f64;
    Ok(SplitEvaluation {
        calibration,
        test,
        validation_scores,
        test_scores,
        skipped,
        test_replay_false_alarm_rate,
        validation_embedded: val_embedded,
        test_embedded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::EMBEDDING_DIM;

    /// A unit vector pointing mostly along axis `axis`, nudged by `jitter` on axis `axis + 1`.
    fn unit(axis: usize, jitter: f32) -> Vec<f32> {
        let mut v = vec![0.0f32; EMBEDDING_DIM];
        v[axis % EMBEDDING_DIM] = 1.0;
        v[(axis + 1) % EMBEDDING_DIM] = jitter;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn sample(writer: &str, label: Label, embedding: &[f32]) -> EmbeddedSample {
        EmbeddedSample {
            writer: writer.into(),
            label,
            template: Template::from_embedding(embedding).expect("template"),
        }
    }

    fn toy() -> Vec<EmbeddedSample> {
        let mut v = Vec::new();
        for w in 0..4 {
            let name = format!("w{w}");
            for k in 0..6 {
                v.push(sample(&name, Label::Genuine, &unit(w * 10, 0.05 * k as f32)));
            }
            // Skilled forgeries: close to the writer but not as close as the genuine ones.
            for k in 0..3 {
                v.push(sample(&name, Label::Forged, &unit(w * 10, 0.9 + 0.1 * k as f32)));
            }
        }
        v
    }

    #[test]
    fn scores_are_counted_per_protocol() {
        let s = verification_scores(&toy(), 3, 1);
        assert_eq!(s.writers, 4);
        assert_eq!(s.genuine.len(), 4 * 3);
        assert_eq!(s.skilled.len(), 4 * 3);
        assert_eq!(s.random.len(), 4 * 3 * 6);
        let m = verification_metrics(&s, 3, &calibrate(&s).expect("calibrate"));
        assert_eq!(m.random.map(|r| r.eer), Some(0.0));
        assert_eq!(m.skilled.map(|r| r.eer), Some(0.0));
        assert!(s.max_genuine_pair_similarity > 0.99);
    }

    #[test]
    fn the_adaptive_threshold_matches_the_nearest_rules_forgery_acceptance() {
        // Nearest rule: EER threshold 0.5 (genuine 0.6..0.9 and one at 0.4; forgeries one of four
        // at or above 0.5), so it accepts 25% of forgeries there.
        let nearest = VerificationScores {
            genuine: vec![0.4, 0.6, 0.7, 0.8],
            skilled: vec![0.1, 0.2, 0.3, 0.5],
            random: vec![0.0, 0.1, 0.2, 0.3],
            ..Default::default()
        };
        assert_eq!(metrics::eer(&nearest.genuine, &nearest.skilled).threshold, 0.5);
        // The adaptive rule's forgeries, eight of them: accepting 25% is accepting the top two.
        let adaptive = VerificationScores {
            genuine: vec![1.0, 2.0, 3.0, 4.0],
            skilled: vec![-4.0, -3.0, -2.0, -1.0, 0.0, 0.5, 1.5, 2.5],
            random: vec![-5.0, -4.0, -3.0, -2.0],
            ..Default::default()
        };
        let t = calibrate_against_nearest(&adaptive, &nearest).expect("calibrate");
        assert_eq!(t.skilled.and_then(|s| s.nearest_eer_far), Some(1.5));
        // Random: the nearest rule accepts none at its EER threshold (0.4), so neither may this.
        assert_eq!(t.random.nearest_eer_far, Some(metrics::threshold_at_far(&adaptive.random, 0.0)));
        assert!(t.random.nearest_eer_far.is_some_and(|r| r > -2.0));
        // Without the nearest rule's scores there is nothing to match.
        let none = calibrate_against_nearest(&adaptive, &VerificationScores::default()).expect("calibrate");
        assert_eq!(none.skilled.and_then(|s| s.nearest_eer_far), None);
        assert_eq!(calibrate(&adaptive).expect("calibrate").random.nearest_eer_far, None);
    }

    #[test]
    fn replay_limit_sits_between_the_closest_genuine_pair_and_a_copy() {
        assert!((replay_limit(0.96) - 0.98).abs() < 1e-6);
        assert_eq!(replay_limit(1.0), 1.0);
        assert!(replay_limit(f32::NEG_INFINITY) >= 0.0);
        let s = verification_scores(&toy(), 3, 1);
        assert_eq!(s.genuine_max_reference.len(), s.genuine.len());
        assert!(s.genuine_max_reference.iter().zip(&s.genuine).all(|(max, mean)| max >= mean));
    }

    #[test]
    fn writers_without_enough_references_are_skipped() {
        let s = verification_scores(&toy(), 6, 1);
        assert_eq!(s.writers, 0);
        assert!(calibrate(&s).is_err());
    }

    #[test]
    fn identification_on_separable_writers_is_perfect() {
        assert_eq!(identification_accuracy(&toy(), 4, 1, 50, 3), Some(1.0));
        assert_eq!(identification_accuracy(&toy(), 5, 1, 50, 3), None);
    }

    #[test]
    fn one_shot_scoring() {
        let train: Vec<Template> = (0..3).map(|i| Template::from_embedding(&unit(i * 5, 0.0)).expect("t")).collect();
        let test: Vec<Template> =
            [2usize, 0, 1].iter().map(|&i| Template::from_embedding(&unit(i * 5, 0.1)).expect("t")).collect();
        assert_eq!(one_shot_accuracy(&train, &test, &[2, 0, 1]), 1.0);
        assert!((one_shot_accuracy(&train, &test, &[0, 0, 0]) - 1.0 / 3.0).abs() < 1e-12);
    }
}
