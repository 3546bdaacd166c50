//! The honest protocol for on-line verification, as for the image model: writer-disjoint
//! k-fold over users; per fold, settings are chosen and thresholds calibrated on the fold's
//! validation users only, and figures are reported on its test users only.
//!
//! - Nothing is trained, so every non-test user of a fold is a validation user.
//! - Each user enrols `references` genuine signatures chosen at random (seeded per user); the
//!   probes are the user's other genuine signatures, all skilled forgeries of the user, and
//!   random forgeries: `random_per_writer` genuine signatures (seeded choice) of every other
//!   user in the same role (test or validation) of the fold.
//! - When several candidate settings are given, each fold picks the one with the lowest
//!   skilled EER on its validation users (ties: random EER); the test figures are those of
//!   the pick. Every candidate's validation EERs are recorded.
//!
//! Scores do not depend on the fold (a user's references and random probes are fixed by the
//! seed), so each candidate scores every user once and the folds select from that table.

use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::dataset::OnlineDataset;
use super::dtw::{DtwScratch, Metric};
use super::features::{Feature, FeatureSequence, FeatureSet};
use super::formats::{Format, read_trajectory};
use super::trajectory::Trajectory;
use super::verifier::{DynamicSettings, DynamicTemplate, ScoreNormalisation, TemplateError};
use crate::dataset::Label;
use crate::dataset::splits::k_fold;
use crate::metrics;
use crate::protocol::{self, Thresholds, VerificationMetrics, VerificationScores};

/// Named settings to compare on validation users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub name: String,
    pub settings: DynamicSettings,
}

impl Candidate {
    pub fn new(name: &str, settings: DynamicSettings) -> Self {
        Self { name: name.to_string(), settings }
    }
}

/// Only [`DynamicSettings::default`].
pub fn default_candidates() -> Vec<Candidate> {
    vec![Candidate::new("default", DynamicSettings::default())]
}

/// The default and variants of it, one change each: score normalisation, metric, band,
/// sample rate, and feature subsets. What the folds choose from with `--candidates sweep`.
pub fn sweep_candidates() -> Vec<Candidate> {
    let d = DynamicSettings::default();
    let without = |features: &[Feature]| {
        let mut set = FeatureSet::ALL;
        for f in features {
            set = FeatureSet::from_bits(set.bits() & !FeatureSet::of(&[*f]).bits()).unwrap_or(set);
        }
        set
    };
    vec![
        Candidate::new("default", d),
        Candidate::new("norm=none", DynamicSettings { normalisation: ScoreNormalisation::None, ..d }),
        Candidate::new("norm=mean", DynamicSettings { normalisation: ScoreNormalisation::Mean, ..d }),
        Candidate::new("norm=min", DynamicSettings { normalisation: ScoreNormalisation::Min, ..d }),
        Candidate::new("euclidean", DynamicSettings { metric: Metric::Euclidean, ..d }),
        Candidate::new("band=0.05", DynamicSettings { band: 0.05, ..d }),
        Candidate::new("band=0.3", DynamicSettings { band: 0.3, ..d }),
        Candidate::new("100Hz", DynamicSettings { downsample: 1, max_len: 1024, ..d }),
        Candidate::new("25Hz", DynamicSettings { downsample: 4, ..d }),
        Candidate::new("no-position", DynamicSettings { features: without(&[Feature::X, Feature::Y]), ..d }),
        Candidate::new("no-acceleration", DynamicSettings { features: without(&[Feature::Acceleration]), ..d }),
        Candidate::new(
            "no-pressure",
            DynamicSettings { features: without(&[Feature::Pressure, Feature::DPressure]), ..d },
        ),
        Candidate::new("no-direction", DynamicSettings { features: without(&[Feature::Direction]), ..d }),
    ]
}

/// How to run the evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineEvalOptions {
    pub folds: usize,
    pub references: usize,
    /// Random-forgery probes taken from each other user of the same role.
    pub random_per_writer: usize,
    pub seed: u64,
    pub candidates: Vec<Candidate>,
    /// Report test users' figures; `false` gives validation figures only (for tuning).
    pub test: bool,
    /// Probes to time `DynamicTemplate::verify` on (0: no timing).
    pub timing_probes: usize,
}

impl Default for OnlineEvalOptions {
    fn default() -> Self {
        Self {
            folds: 5,
            references: 5,
            random_per_writer: 2,
            seed: 17,
            candidates: default_candidates(),
            test: true,
            timing_probes: 200,
        }
    }
}

/// A mean and sample standard deviation over folds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl MeanStd {
    /// Over the finite values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        let n = v.len();
        if n == 0 {
            return Self { mean: f64::NAN, std: f64::NAN, n };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        Self { mean, std, n }
    }
}

/// One candidate's EERs on a fold's validation users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateFigures {
    pub name: String,
    pub skilled_eer: f64,
    pub random_eer: f64,
}

/// One fold.
#[derive(Debug, Clone, Serialize)]
pub struct FoldReport {
    pub fold: usize,
    pub test_users: Vec<String>,
    pub validation_users: usize,
    /// Every candidate on this fold's validation users.
    pub validation: Vec<CandidateFigures>,
    /// The candidate chosen on validation users.
    pub chosen: String,
    /// Thresholds of the chosen candidate, calibrated on validation users.
    pub thresholds: Thresholds,
    /// The chosen candidate on test users; `None` in validation-only runs.
    pub test: Option<VerificationMetrics>,
}

/// Test figures over folds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub skilled_eer: MeanStd,
    pub random_eer: MeanStd,
    /// FAR and FRR against skilled forgeries at the validation skilled-EER threshold.
    pub skilled_far_at_validation_threshold: MeanStd,
    pub skilled_frr_at_validation_threshold: MeanStd,
    /// FAR and FRR against random forgeries at the validation random-EER threshold.
    pub random_far_at_validation_threshold: MeanStd,
    pub random_frr_at_validation_threshold: MeanStd,
}

/// A candidate's validation EERs over folds, and how often folds chose it.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateSummary {
    pub name: String,
    pub validation_skilled_eer: MeanStd,
    pub validation_random_eer: MeanStd,
    pub chosen_in_folds: usize,
}

/// How long one verification takes: features of the probe plus DTW to every reference.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyTiming {
    pub candidate: String,
    pub references: usize,
    pub probes: usize,
    pub mean_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// Mean probe length at 100 Hz.
    pub mean_probe_samples: f64,
    /// Longest probe of the spread, at 100 Hz.
    pub max_probe_samples: usize,
    /// The corpus's longest signature against its user's template (best of three runs).
    pub longest_probe_ms: f64,
    pub longest_probe_samples: usize,
    /// Building a template from the references (features + pairwise DTW).
    pub mean_enrol_ms: f64,
}

/// Everything an evaluation found; `Serialize` for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineReport {
    pub dataset: String,
    pub format: Format,
    pub users: usize,
    /// Users scored (more genuine signatures than references).
    pub scored_users: usize,
    pub signatures: usize,
    /// Files that could not be read, with the reason; they take no part.
    pub unreadable: Vec<String>,
    pub options: OnlineEvalOptions,
    pub folds: Vec<FoldReport>,
    pub candidates: Vec<CandidateSummary>,
    /// `None` in validation-only runs.
    pub summary: Option<Summary>,
    pub timing: Option<VerifyTiming>,
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum OnlineEvalError {
    #[error("no candidate settings to evaluate")]
    NoCandidates,
    #[error("{references} references need at least one more genuine signature per user; no user has that many")]
    NoScorableUsers { references: usize },
    #[error("{folds} folds need at least {folds} users, the data set has {users}")]
    TooFewUsers { folds: usize, users: usize },
    #[error("candidate {candidate}: {source}")]
    Template { candidate: String, source: TemplateError },
    #[error("calibration failed: {0}")]
    Calibration(String),
}

/// A user's signatures: indices into the loaded list.
struct UserPlan {
    references: Vec<usize>,
    genuine_probes: Vec<usize>,
    forgeries: Vec<usize>,
    /// This user's genuine signatures used as random forgeries against others.
    offered: Vec<usize>,
}

/// One candidate's scores for one user.
#[derive(Default)]
struct UserScores {
    genuine: Vec<f32>,
    skilled: Vec<f32>,
    /// (other user, score of that user's offered signature against this user's template).
    random: Vec<(usize, f32)>,
}

/// Runs the protocol on a listed data set. `progress` receives one line per step.
pub fn evaluate_online(
    dataset: &OnlineDataset,
    options: &OnlineEvalOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<OnlineReport, OnlineEvalError> {
    if options.candidates.is_empty() {
        return Err(OnlineEvalError::NoCandidates);
    }
    let users = dataset.users();
    if users.len() < options.folds.max(2) {
        return Err(OnlineEvalError::TooFewUsers { folds: options.folds, users: users.len() });
    }
    progress(&format!("reading {} signatures of {} users", dataset.samples.len(), users.len()));
    let mut loaded: Vec<(usize, Label, Trajectory)> = Vec::with_capacity(dataset.samples.len());
    let mut unreadable = Vec::new();
    for sample in &dataset.samples {
        let Some(user) = users.iter().position(|u| *u == sample.user) else { continue };
        match read_trajectory(&sample.path) {
            Ok(t) => loaded.push((user, sample.label, t)),
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    let plans = plan_users(&loaded, users.len(), options);
    let scored_users = plans.iter().filter(|p| p.is_some()).count();
    if scored_users == 0 {
        return Err(OnlineEvalError::NoScorableUsers { references: options.references });
    }

    let mut tables = Vec::with_capacity(options.candidates.len());
    for candidate in &options.candidates {
        let start = Instant::now();
        tables.push(score_table(candidate, &loaded, &plans)?);
        progress(&format!("scored candidate {} in {:.1} s", candidate.name, start.elapsed().as_secs_f64()));
    }

    let splits = k_fold(&users, options.folds, 0.0, options.seed);
    let index_of =
        |names: &[String]| -> Vec<usize> { names.iter().filter_map(|n| users.iter().position(|u| u == n)).collect() };
    let mut folds = Vec::with_capacity(splits.len());
    for (fold, split) in splits.iter().enumerate() {
        // Nothing is trained: every non-test user validates.
        let validation_users: Vec<usize> =
            index_of(&split.train).into_iter().chain(index_of(&split.validation)).collect();
        let test_users = index_of(&split.test);
        let validation: Vec<CandidateFigures> = options
            .candidates
            .iter()
            .zip(&tables)
            .map(|(c, table)| {
                let s = pooled(table, &validation_users);
                CandidateFigures {
                    name: c.name.clone(),
                    skilled_eer: metrics::eer(&s.genuine, &s.skilled).eer,
                    random_eer: metrics::eer(&s.genuine, &s.random).eer,
                }
            })
            .collect();
        let best = (0..validation.len())
            .min_by(|&a, &b| {
                let key = |i: usize| (nan_last(validation[i].skilled_eer), nan_last(validation[i].random_eer));
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            })
            .unwrap_or(0);
        let thresholds = protocol::calibrate(&pooled(&tables[best], &validation_users))
            .map_err(|e| OnlineEvalError::Calibration(e.to_string()))?;
        let test = options.test.then(|| {
            protocol::verification_metrics(&pooled(&tables[best], &test_users), options.references, &thresholds)
        });
        if let Some(t) = &test {
            let eer = |f: Option<protocol::ForgeryMetrics>| f.map_or(f64::NAN, |f| f.eer * 100.0);
            progress(&format!(
                "fold {fold}: chose {}; test skilled EER {:.2}%, random EER {:.2}%",
                options.candidates[best].name,
                eer(t.skilled),
                eer(t.random)
            ));
        } else {
            progress(&format!(
                "fold {fold}: chose {}; validation skilled EER {:.2}%",
                options.candidates[best].name,
                validation[best].skilled_eer * 100.0
            ));
        }
        folds.push(FoldReport {
            fold,
            test_users: split.test.clone(),
            validation_users: validation_users.len(),
            validation,
            chosen: options.candidates[best].name.clone(),
            thresholds,
            test,
        });
    }

    let candidates = options
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| CandidateSummary {
            name: c.name.clone(),
            validation_skilled_eer: MeanStd::of(folds.iter().map(|f| f.validation[i].skilled_eer)),
            validation_random_eer: MeanStd::of(folds.iter().map(|f| f.validation[i].random_eer)),
            chosen_in_folds: folds.iter().filter(|f| f.chosen == c.name).count(),
        })
        .collect();
    let summary = options.test.then(|| summarise(&folds));
    let timing = if options.timing_probes > 0 {
        // The candidate most folds chose is the one a deployment would use.
        let chosen = (0..options.candidates.len())
            .max_by_key(|&i| (folds.iter().filter(|f| f.chosen == options.candidates[i].name).count(), usize::MAX - i))
            .unwrap_or(0);
        Some(time_verification(&options.candidates[chosen], &loaded, &plans, options.timing_probes)?)
    } else {
        None
    };
    Ok(OnlineReport {
        dataset: dataset.name(),
        format: dataset.format,
        users: users.len(),
        scored_users,
        signatures: loaded.len(),
        unreadable,
        options: options.clone(),
        folds,
        candidates,
        summary,
        timing,
    })
}

fn nan_last(x: f64) -> f64 {
    if x.is_nan() { f64::INFINITY } else { x }
}

/// References, probes and offered random forgeries of every user, fixed by the seed.
fn plan_users(
    loaded: &[(usize, Label, Trajectory)],
    users: usize,
    options: &OnlineEvalOptions,
) -> Vec<Option<UserPlan>> {
    (0..users)
        .map(|u| {
            let mut genuine: Vec<usize> =
                loaded.iter().enumerate().filter(|(_, s)| s.0 == u && s.1 == Label::Genuine).map(|(i, _)| i).collect();
            let forgeries: Vec<usize> =
                loaded.iter().enumerate().filter(|(_, s)| s.0 == u && s.1 == Label::Forged).map(|(i, _)| i).collect();
            if genuine.len() <= options.references || options.references == 0 {
                return None;
            }
            let seed = options.seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            genuine.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            let offered = genuine.iter().rev().take(options.random_per_writer).copied().collect();
            let genuine_probes = genuine.split_off(options.references);
            Some(UserPlan { references: genuine, genuine_probes, forgeries, offered })
        })
        .collect()
}

fn score_table(
    candidate: &Candidate,
    loaded: &[(usize, Label, Trajectory)],
    plans: &[Option<UserPlan>],
) -> Result<Vec<Option<UserScores>>, OnlineEvalError> {
    let wrap = |source: TemplateError| OnlineEvalError::Template { candidate: candidate.name.clone(), source };
    let features: Vec<FeatureSequence> = loaded
        .iter()
        .map(|(_, _, t)| candidate.settings.features_of(t))
        .collect::<Result<_, _>>()
        .map_err(|e| wrap(e.into()))?;
    let mut scratch = DtwScratch::default();
    let mut table = Vec::with_capacity(plans.len());
    for (u, plan) in plans.iter().enumerate() {
        let Some(plan) = plan else {
            table.push(None);
            continue;
        };
        let references = plan.references.iter().map(|&i| features[i].clone()).collect();
        let template = DynamicTemplate::from_features(references, &candidate.settings).map_err(wrap)?;
        let mut score = |i: usize| template.score_features(&features[i], &mut scratch).score;
        let genuine = plan.genuine_probes.iter().map(|&i| score(i)).collect();
        let skilled = plan.forgeries.iter().map(|&i| score(i)).collect();
        let mut random = Vec::new();
        for (o, other) in plans.iter().enumerate() {
            if o == u {
                continue;
            }
            if let Some(other) = other {
                random.extend(other.offered.iter().map(|&i| (o, score(i))));
            }
        }
        table.push(Some(UserScores { genuine, skilled, random }));
    }
    Ok(table)
}

/// The scores of a set of users, random forgeries only from within the set.
fn pooled(table: &[Option<UserScores>], users: &[usize]) -> VerificationScores {
    let mut out = VerificationScores::default();
    for &u in users {
        let Some(Some(s)) = table.get(u) else { continue };
        out.writers += 1;
        out.genuine.extend(&s.genuine);
        out.skilled.extend(&s.skilled);
        out.random.extend(s.random.iter().filter(|(o, _)| users.contains(o)).map(|(_, v)| *v));
    }
    out
}

fn summarise(folds: &[FoldReport]) -> Summary {
    Summary::of(folds.iter().filter_map(|f| f.test.as_ref()))
}

impl Summary {
    /// Mean ± std over folds of each fold's test figures.
    pub fn of<'a>(tests: impl IntoIterator<Item = &'a VerificationMetrics>) -> Self {
        let tests: Vec<&VerificationMetrics> = tests.into_iter().collect();
        let of = |f: &dyn Fn(&VerificationMetrics) -> Option<f64>| MeanStd::of(tests.iter().filter_map(|t| f(t)));
        Summary {
            skilled_eer: of(&|t| t.skilled.map(|m| m.eer)),
            random_eer: of(&|t| t.random.map(|m| m.eer)),
            skilled_far_at_validation_threshold: of(&|t| t.skilled.map(|m| m.at_validation_eer_threshold.far)),
            skilled_frr_at_validation_threshold: of(&|t| t.skilled.map(|m| m.at_validation_eer_threshold.frr)),
            random_far_at_validation_threshold: of(&|t| t.random.map(|m| m.at_validation_eer_threshold.far)),
            random_frr_at_validation_threshold: of(&|t| t.random.map(|m| m.at_validation_eer_threshold.frr)),
        }
    }
}

/// Times the kiosk's path, `DynamicTemplate::verify` on a trajectory (features + DTW):
/// `probes` spread over all users, then the longest signature of the corpus against its own
/// user's template (the worst case). Enrolment (features + pairwise DTW) is timed too.
fn time_verification(
    candidate: &Candidate,
    loaded: &[(usize, Label, Trajectory)],
    plans: &[Option<UserPlan>],
    probes: usize,
) -> Result<VerifyTiming, OnlineEvalError> {
    let wrap = |source: TemplateError| OnlineEvalError::Template { candidate: candidate.name.clone(), source };
    let scored = plans.iter().flatten().count().max(1);
    let per_user = probes.div_ceil(scored);
    let mut times = Vec::with_capacity(probes);
    let mut samples = Vec::with_capacity(probes);
    let mut enrol_ms = Vec::with_capacity(scored);
    let mut scratch = DtwScratch::default();
    let mut references = 0;
    let enrol = |plan: &UserPlan| -> Result<(DynamicTemplate, f64), OnlineEvalError> {
        let refs: Vec<Trajectory> = plan.references.iter().map(|&i| loaded[i].2.clone()).collect();
        let start = Instant::now();
        let template = DynamicTemplate::enrol(&refs, &candidate.settings).map_err(wrap)?;
        Ok((template, start.elapsed().as_secs_f64() * 1000.0))
    };
    let mut time_one = |template: &DynamicTemplate, probe: &Trajectory| -> Result<f64, OnlineEvalError> {
        let start = Instant::now();
        let score = template.verify_with(probe, &mut scratch).map_err(wrap)?;
        std::hint::black_box(score);
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    for plan in plans.iter().flatten() {
        if times.len() >= probes {
            break;
        }
        let (template, ms) = enrol(plan)?;
        enrol_ms.push(ms);
        references = template.reference_count();
        for &i in plan.genuine_probes.iter().chain(&plan.forgeries).take(per_user) {
            times.push(time_one(&template, &loaded[i].2)?);
            samples.push(loaded[i].2.len());
        }
    }
    // The worst case: the longest signature of a scored user against that user's template.
    let longest = loaded
        .iter()
        .enumerate()
        .filter(|(_, (u, _, _))| plans.get(*u).is_some_and(Option::is_some))
        .max_by_key(|(_, (_, _, t))| t.len())
        .map(|(i, _)| i);
    let (mut longest_ms, mut longest_samples) = (f64::NAN, 0);
    if let Some(i) = longest
        && let Some(Some(plan)) = plans.get(loaded[i].0)
    {
        let (template, _) = enrol(plan)?;
        // Best of three: the worst case of the computation, not of the scheduler.
        longest_ms = (0..3)
            .map(|_| time_one(&template, &loaded[i].2))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        longest_samples = loaded[i].2.len();
    }
    let n = times.len().max(1) as f64;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let p95 = sorted.get(((sorted.len() as f64 * 0.95) as usize).min(sorted.len().saturating_sub(1))).copied();
    Ok(VerifyTiming {
        candidate: candidate.name.clone(),
        references,
        probes: times.len(),
        mean_ms: times.iter().sum::<f64>() / n,
        p95_ms: p95.unwrap_or(f64::NAN),
        max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        mean_probe_samples: samples.iter().sum::<usize>() as f64 / n,
        max_probe_samples: samples.iter().copied().max().unwrap_or(0),
        longest_probe_ms: longest_ms,
        longest_probe_samples: longest_samples,
        mean_enrol_ms: enrol_ms.iter().sum::<f64>() / enrol_ms.len().max(1) as f64,
    })
}

/// The report as a plain-text table.
pub fn report_table(report: &OnlineReport) -> String {
    use std::fmt::Write;
    let pct = |x: f64| if x.is_finite() { format!("{:.2}%", x * 100.0) } else { "-".into() };
    let ms = |m: &MeanStd| format!("{} ± {}", pct(m.mean), pct(m.std));
    let mut out = String::new();
    let o = &report.options;
    let _ = writeln!(
        out,
        "{} ({:?}): {} users ({} scored), {} signatures, {} unreadable",
        report.dataset,
        report.format,
        report.users,
        report.scored_users,
        report.signatures,
        report.unreadable.len()
    );
    let _ = writeln!(
        out,
        "{} writer-disjoint folds, {} references, {} random-forgery probes per other user of the same role, seed {}",
        o.folds, o.references, o.random_per_writer, o.seed
    );
    let _ = writeln!(out, "\nvalidation users (each fold's non-test users), EER mean ± std over folds:");
    let _ = writeln!(out, "{:<18} {:>18} {:>18} {:>7}", "candidate", "skilled", "random", "chosen");
    for c in &report.candidates {
        let _ = writeln!(
            out,
            "{:<18} {:>18} {:>18} {:>7}",
            c.name,
            ms(&c.validation_skilled_eer),
            ms(&c.validation_random_eer),
            c.chosen_in_folds
        );
    }
    if report.summary.is_some() {
        let _ = writeln!(out, "\ntest users, per fold (thresholds from the fold's validation users):");
        let _ = writeln!(
            out,
            "{:>4} {:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "fold", "chosen", "users", "skEER", "skFAR", "skFRR", "rdEER", "rdFAR", "rdFRR"
        );
        for f in &report.folds {
            let Some(t) = &f.test else { continue };
            let cell = |m: Option<protocol::ForgeryMetrics>| {
                m.map_or(["-".to_string(), "-".into(), "-".into()], |m| {
                    [pct(m.eer), pct(m.at_validation_eer_threshold.far), pct(m.at_validation_eer_threshold.frr)]
                })
            };
            let (s, r) = (cell(t.skilled), cell(t.random));
            let _ = writeln!(
                out,
                "{:>4} {:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                f.fold, f.chosen, t.writers, s[0], s[1], s[2], r[0], r[1], r[2]
            );
        }
    }
    if let Some(s) = &report.summary {
        let _ = writeln!(out, "\ntest, mean ± std over folds:");
        let _ = writeln!(out, "  skilled EER {}   random EER {}", ms(&s.skilled_eer), ms(&s.random_eer));
        let _ = writeln!(
            out,
            "  at the validation EER thresholds: skilled FAR {} FRR {}; random FAR {} FRR {}",
            ms(&s.skilled_far_at_validation_threshold),
            ms(&s.skilled_frr_at_validation_threshold),
            ms(&s.random_far_at_validation_threshold),
            ms(&s.random_frr_at_validation_threshold)
        );
    }
    if let Some(t) = &report.timing {
        let _ = writeln!(
            out,
            "\nverify ({}, {} references, features + DTW, one thread): mean {:.2} ms, p95 {:.2} ms, max {:.2} ms over {} probes (mean {:.0}, max {} samples at 100 Hz)",
            t.candidate,
            t.references,
            t.mean_ms,
            t.p95_ms,
            t.max_ms,
            t.probes,
            t.mean_probe_samples,
            t.max_probe_samples
        );
        let _ = writeln!(
            out,
            "longest signature ({} samples): {:.2} ms; enrolment: mean {:.2} ms",
            t.longest_probe_samples, t.longest_probe_ms, t.mean_enrol_ms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::mcyt::fpg_bytes;

    /// A synthetic MCYT-layout corpus: each user's signature is a curve of its own; genuine
    /// ones vary a little, forgeries imitate the shape with a different rhythm and pressure.
    fn write_corpus(root: &std::path::Path, users: usize) {
        for u in 0..users {
            let dir = root.join(format!("{u:04}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            for (kind, count) in [('v', 8), ('f', 4)] {
                for s in 0..count {
                    let wobble = s as f32 * 0.05;
                    let n = 120 + 5 * s + 7 * u;
                    let rows: Vec<[f32; 5]> = (0..n)
                        .map(|i| {
                            let t = i as f32 / n as f32;
                            let warp = if kind == 'f' { t * t } else { t };
                            let a = warp * std::f32::consts::TAU * (1.5 + 0.37 * u as f32);
                            let p = if kind == 'f' { 300.0 } else { 200.0 + 600.0 * (t * 6.0).sin().abs() };
                            [
                                1000.0 + 800.0 * t + 150.0 * (a + wobble).cos(),
                                2000.0 + 200.0 * (a * 1.3).sin() + 40.0 * wobble,
                                p,
                                0.0,
                                45.0,
                            ]
                        })
                        .collect();
                    std::fs::write(dir.join(format!("{u:04}{kind}{s:02}.fpg")), fpg_bytes(&rows)).expect("write");
                }
            }
        }
    }

    #[test]
    fn protocol_runs_and_separates_synthetic_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_corpus(dir.path(), 10);
        std::fs::write(dir.path().join("0000/0000v99.fpg"), b"FPG broken").expect("write");
        let dataset = crate::online::dataset::list_online_dataset(dir.path()).expect("list");
        let options = OnlineEvalOptions {
            folds: 5,
            references: 3,
            candidates: vec![
                Candidate::new("default", DynamicSettings::default()),
                Candidate::new(
                    "norm=none",
                    DynamicSettings { normalisation: ScoreNormalisation::None, ..Default::default() },
                ),
            ],
            timing_probes: 5,
            ..OnlineEvalOptions::default()
        };
        let mut lines = Vec::new();
        let report = evaluate_online(&dataset, &options, &mut |l| lines.push(l.to_string())).expect("evaluate");
        assert_eq!(report.users, 10);
        assert_eq!(report.unreadable.len(), 1, "{:?}", report.unreadable);
        assert_eq!(report.folds.len(), 5);
        for f in &report.folds {
            assert_eq!(f.test_users.len(), 2);
            assert_eq!(f.validation_users, 8);
            assert_eq!(f.validation.len(), 2);
            let t = f.test.as_ref().expect("test figures");
            let skilled = t.skilled.expect("skilled");
            // The broken file is an extra: every user keeps 8 genuine, 5 of them probes.
            assert_eq!(skilled.genuine_scores, 10);
            assert_eq!(skilled.impostor_scores, 8);
            // Random forgeries: 2 offered by the one other test user, for each of the 2 users.
            assert_eq!(t.random.expect("random").impostor_scores, 4);
        }
        let s = report.summary.as_ref().expect("summary");
        assert!(s.random_eer.mean < 0.1, "{s:?}");
        assert!(s.skilled_eer.mean < 0.25, "{s:?}");
        assert_eq!(report.candidates.iter().map(|c| c.chosen_in_folds).sum::<usize>(), 5);
        assert!(report.timing.as_ref().is_some_and(|t| t.probes == 5 && t.references == 3));
        let table = report_table(&report);
        assert!(table.contains("skilled EER") && table.contains("verify"), "{table}");
        assert!(serde_json::to_string(&report).is_ok());
        assert!(lines.iter().any(|l| l.starts_with("fold 4")));

        let validation_only = OnlineEvalOptions { test: false, timing_probes: 0, ..options };
        let report = evaluate_online(&dataset, &validation_only, &mut |_| {}).expect("evaluate");
        assert!(report.summary.is_none() && report.folds.iter().all(|f| f.test.is_none()));
    }

    #[test]
    fn sweep_candidates_are_distinct_and_valid() {
        let c = sweep_candidates();
        assert_eq!(c[0].settings, DynamicSettings::default());
        for (i, a) in c.iter().enumerate() {
            assert!(!a.settings.features.is_empty());
            for b in &c[i + 1..] {
                assert!(a.name != b.name && a.settings != b.settings, "{} {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn mean_std_ignores_nan() {
        let m = MeanStd::of([0.1, 0.3, f64::NAN]);
        assert_eq!(m.n, 2);
        assert!((m.mean - 0.2).abs() < 1e-12 && (m.std - 0.141_421_356).abs() < 1e-6);
    }
}
