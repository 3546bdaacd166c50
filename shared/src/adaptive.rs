//! Writer-adaptive decisions: what a kiosk can fit at enrolment from a writer's references and
//! a **cohort** of background templates, and the rules that score with it.
//!
//! The gallery's own rule ([`writer_score`]: similarity to the nearest reference, one global
//! threshold) treats every writer alike, yet writers differ: a consistent writer in an empty
//! corner of the embedding space and a variable one in a crowded corner have very different
//! impostor scores. Two remedies are fitted here, per writer, in milliseconds:
//!
//! * **score normalisation** ([`ScoreMethod::ZNorm`], [`ScoreMethod::TNorm`],
//!   [`ScoreMethod::SNorm`]): the raw nearest-reference score, standardised by the scores of the
//!   cohort against the writer's references (z-norm, fitted at enrolment), by the scores of the
//!   probe against the cohort (t-norm, at verification), or both (s-norm, their mean);
//! * **consistency** ([`ScoreMethod::Consistency`]): the raw score less half the writer's own
//!   consistency, the mean similarity of each reference to its nearest other reference. A
//!   writer who signs the same way every time must come closer to a reference to be accepted
//!   than one who never does: one global threshold becomes a threshold per writer. It needs
//!   neither the cohort nor a fitted model, only two or more references;
//! * **subspace** ([`ScoreMethod::Subspace`]): the probe's squared distance to the centroid of
//!   the writer's references, with the part of it that lies along the writer's own variation
//!   (the span of the references around their centroid) mostly forgiven, plus half the writer's
//!   spread. A genuine signature differs from the references the way they differ from each
//!   other; a skilled forgery leaves that subspace. Like consistency, it needs only two or more
//!   references;
//! * a **linear classifier** ([`ScoreMethod::Classifier`]): L2-regularised, class-balanced
//!   logistic regression on the 128-d embeddings, the writer's references as positives and the
//!   cohort as negatives, fitted by Newton's method (a fixed maximum of iterations, no
//!   randomness). Its score is the balanced log-odds that the probe is the writer's.
//!
//! What is fitted is a fixed-size [`WriterModel`] (z-norm mean and deviation, 128 weights and a
//! bias, all `f32`), stored with the writer in the gallery file. [`DecisionRule`] is what the
//! kiosk is configured with; [`DecisionRule::Normalised`] is the normalisation in
//! [`NORMALISED_METHOD`]. [`compare_rules`] measures every [`ScoreMethod`] on validation and
//! test writers so the choice is made on data.
//!
//! The cohort must come from writers the evaluation never scores (the training writers): a
//! cohort that holds the test writers' own signatures would flatter every adaptive rule.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Label;
use crate::gallery::{EMBEDDING_DIM, QUANT_SCALE, Template, dot_i8, max_similarity, writer_score};
use crate::metrics::OperatingPoint;
use crate::protocol::{self, EmbeddedSample, Thresholds, VerificationMetrics, VerificationScores};

/// `QUANT_SCALE²`, as in the gallery: an int8 dot product divided by this is a similarity.
const SCALE_SQ: f64 = 127.0 * 127.0;
/// Floor on every standard deviation a score is divided by, so that a degenerate cohort (all
/// scores equal) cannot blow a normalised score up to infinity.
pub const MIN_STD: f32 = 1e-3;

/// What goes wrong building a cohort or fitting, reading or using a writer model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdaptiveError {
    #[error("the cohort has {found} templates; at least {min} are needed")]
    CohortTooSmall { found: usize, min: usize },
    #[error("no reference templates given")]
    NoReferences,
    #[error("invalid writer model: {0}")]
    BadModel(&'static str),
    #[error("the classifier fit failed: {0}")]
    FitFailed(&'static str),
    #[error("invalid cohort data: {0}")]
    BadCohort(String),
}

// ---------------------------------------------------------------------------------------------
// Cohort
// ---------------------------------------------------------------------------------------------

/// Background templates (training writers' genuine signatures and skilled forgeries) that a
/// writer's references are contrasted with. Shipped in the model bundle
/// ([`Cohort::to_bytes`]); it must come from the same model as the gallery's templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cohort {
    templates: Vec<Template>,
}

/// First bytes of a cohort file.
pub const COHORT_MAGIC: [u8; 8] = *b"AGCOHORT";
/// Cohort file format version.
pub const COHORT_FORMAT_VERSION: u32 = 1;
const COHORT_HEADER_LEN: usize = 8 + 4 + 4 + 4;

impl Cohort {
    /// Fewest templates a cohort may have (a standard deviation needs two).
    pub const MIN_LEN: usize = 2;

    pub fn new(templates: Vec<Template>) -> Result<Self, AdaptiveError> {
        if templates.len() < Self::MIN_LEN {
            return Err(AdaptiveError::CohortTooSmall { found: templates.len(), min: Self::MIN_LEN });
        }
        Ok(Self { templates })
    }

    /// A cohort of at most `max_len` of `samples` (genuine and forged alike), chosen at random
    /// with `seed` when there are more; kept in the samples' order.
    pub fn from_samples(samples: &[EmbeddedSample], max_len: usize, seed: u64) -> Result<Self, AdaptiveError> {
        let mut indices: Vec<usize> = (0..samples.len()).collect();
        if samples.len() > max_len {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            indices.shuffle(&mut rng);
            indices.truncate(max_len);
            indices.sort_unstable();
        }
        Self::new(indices.iter().map(|&i| samples[i].template).collect())
    }

    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Always false: a cohort has at least [`Cohort::MIN_LEN`] templates.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// Mean and deviation of the probe's similarities to every cohort template (t-norm).
    pub fn probe_stats(&self, probe: &Template) -> NormStats {
        NormStats::of_dots(self.templates.iter().map(|c| dot_i8(c, probe)))
    }

    /// `magic, version u32, dim u32, count u32, count·128 i8, sha256 of everything before`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COHORT_HEADER_LEN + self.templates.len() * EMBEDDING_DIM + 32);
        out.extend_from_slice(&COHORT_MAGIC);
        out.extend_from_slice(&COHORT_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(EMBEDDING_DIM as u32).to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.templates.len()).unwrap_or(u32::MAX).to_le_bytes());
        for t in &self.templates {
            out.extend(t.as_i8().iter().map(|&v| v as u8));
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses [`Cohort::to_bytes`]; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AdaptiveError> {
        let bad = |m: String| Err(AdaptiveError::BadCohort(m));
        if bytes.len() < COHORT_HEADER_LEN + 32 {
            return bad(format!("{} bytes is shorter than a header", bytes.len()));
        }
        if bytes[..8] != COHORT_MAGIC {
            return bad("bad magic bytes".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let (version, dim, count) = (u32_at(8), u32_at(12), u32_at(16));
        if version != COHORT_FORMAT_VERSION {
            return bad(format!("format version {version}, this build reads {COHORT_FORMAT_VERSION}"));
        }
        if dim as usize != EMBEDDING_DIM {
            return bad(format!("embedding dimension {dim}, this build uses {EMBEDDING_DIM}"));
        }
        let expected = (count as u64) * EMBEDDING_DIM as u64 + (COHORT_HEADER_LEN + 32) as u64;
        if bytes.len() as u64 != expected {
            return bad(format!("{} bytes, {expected} expected for {count} templates", bytes.len()));
        }
        let (content, trailer) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(content).as_slice() != trailer {
            return bad("the checksum does not match: the data is damaged".into());
        }
        let templates = content[COHORT_HEADER_LEN..]
            .chunks_exact(EMBEDDING_DIM)
            .map(|raw| {
                let mut v = [0i8; EMBEDDING_DIM];
                for (d, &b) in v.iter_mut().zip(raw) {
                    *d = b as i8;
                }
                Template::from_i8(v)
            })
            .collect();
        Self::new(templates)
    }
}

/// A mean and a standard deviation (population, floored at [`MIN_STD`]) of similarities.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormStats {
    pub mean: f32,
    pub std: f32,
}

impl NormStats {
    /// From int8 dot products, summed exactly in integers (bit-reproducible everywhere).
    fn of_dots(dots: impl Iterator<Item = i32>) -> Self {
        let (mut n, mut sum, mut sum_sq) = (0u64, 0i64, 0i128);
        for d in dots {
            let d = i64::from(d);
            n += 1;
            sum += d;
            sum_sq += i128::from(d * d);
        }
        if n == 0 {
            return Self { mean: f32::NAN, std: f32::NAN };
        }
        let n = n as f64;
        let mean = sum as f64 / n;
        let var = (sum_sq as f64 / n - mean * mean).max(0.0);
        Self { mean: (mean / SCALE_SQ) as f32, std: ((var.sqrt() / SCALE_SQ) as f32).max(MIN_STD) }
    }

    /// `(score − mean) / std`.
    pub fn normalise(&self, score: f32) -> f32 {
        ((f64::from(score) - f64::from(self.mean)) / f64::from(self.std)) as f32
    }
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// How the kiosk decides (configured per deployment; the threshold must be calibrated for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionRule {
    /// Similarity to the nearest reference ([`writer_score`]), one global threshold.
    #[default]
    Nearest,
    /// The nearest-reference score normalised per writer ([`NORMALISED_METHOD`]).
    Normalised,
    /// The writer's linear classifier.
    Classifier,
    /// The nearest-reference score less the writer's consistency ([`ScoreMethod::Consistency`]).
    Consistency,
    /// Distance from the references' centroid, forgiving the writer's own variation
    /// ([`ScoreMethod::Subspace`]).
    Subspace,
}

/// Every scoring method that can be evaluated; [`DecisionRule`] picks one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreMethod {
    /// [`writer_score`].
    Nearest,
    /// `(s − μ_z) / σ_z`, with μ_z, σ_z the nearest-reference scores of the cohort templates
    /// against the writer's references (fitted at enrolment; no cohort needed to verify).
    ZNorm,
    /// `(s − μ_t) / σ_t`, with μ_t, σ_t the similarities of the probe to the cohort
    /// templates (needs the cohort at verification: one dot product per cohort template).
    TNorm,
    /// The mean of the z- and t-normalised scores (needs the cohort at verification).
    SNorm,
    /// The writer's logistic-regression log-odds `w·x + b`.
    Classifier,
    /// `s − CONSISTENCY_WEIGHT · c`, with `c` the mean over the references of each one's
    /// similarity to its nearest other reference ([`consistency`]); `NaN` with one reference.
    Consistency,
    /// [`WriterSubspace::score`]; `NaN` with one reference.
    Subspace,
}

/// How much of the writer's consistency [`ScoreMethod::Consistency`] subtracts. Chosen on
/// validation writers among 0, 0.5 and 1: 0.5 had the lowest skilled EER averaged over the
/// three data sets for both networks measured, whitened or not (docs/evaluation.md).
pub const CONSISTENCY_WEIGHT: f64 = 0.5;

/// A writer's consistency: the mean, over `references`, of each one's similarity to its
/// nearest other reference (int8 dot products, summed exactly). `None` with fewer than two.
pub fn consistency(references: &[Template]) -> Option<f32> {
    if references.len() < 2 {
        return None;
    }
    let total: i64 = references
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let nearest = references.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, b)| dot_i8(a, b)).max();
            i64::from(nearest.unwrap_or(0))
        })
        .sum();
    Some((total as f64 / references.len() as f64 / SCALE_SQ) as f32)
}

/// [`ScoreMethod::Consistency`]'s score (`None` with fewer than two references).
pub fn consistency_score(references: &[Template], probe: &Template) -> Option<f32> {
    consistency(references).map(|c| less_consistency(writer_score(references, probe), c))
}

/// `similarity − CONSISTENCY_WEIGHT · consistency`: [`ScoreMethod::Consistency`]'s score from a
/// nearest-reference similarity already computed (the verify path has it from the replay
/// guard; an evaluation computes a writer's consistency once for all its probes).
pub fn less_consistency(similarity: f32, consistency: f32) -> f32 {
    (f64::from(similarity) - CONSISTENCY_WEIGHT * f64::from(consistency)) as f32
}

/// The share of a probe's deviation along the writer's own variation that
/// [`ScoreMethod::Subspace`] forgives. With [`SUBSPACE_SPREAD_WEIGHT`], chosen on validation
/// writers of five folds among 0.5-1.0 × 0.3-0.7 (docs/evaluation.md, session 9); the family is
/// flat within a few tenths of a point around this choice.
pub const SUBSPACE_FORGIVEN: f64 = 0.9;

/// How much of the writer's spread (mean squared distance of its references to their centroid)
/// [`ScoreMethod::Subspace`] adds back: a writer who varies much gets a looser threshold.
pub const SUBSPACE_SPREAD_WEIGHT: f64 = 0.5;

/// A writer's references seen as a centroid and the directions they vary in, fitted from the
/// references alone (a few thousand multiply-adds; nothing is stored in the gallery).
#[derive(Debug, Clone, PartialEq)]
pub struct WriterSubspace {
    centroid: [f64; EMBEDDING_DIM],
    /// Orthonormal basis of the span of the references' deviations from the centroid (at most
    /// `references − 1` vectors; duplicates add none).
    basis: Vec<[f64; EMBEDDING_DIM]>,
    /// Mean squared distance of the references to the centroid.
    spread: f64,
}

impl WriterSubspace {
    /// `None` with fewer than two references (a single one has no variation).
    pub fn fit(references: &[Template]) -> Option<Self> {
        if references.len() < 2 {
            return None;
        }
        let mut deviations: Vec<[f64; EMBEDDING_DIM]> = references.iter().map(|t| t.to_f32().map(f64::from)).collect();
        let n = deviations.len() as f64;
        let mut centroid = [0f64; EMBEDDING_DIM];
        for p in &deviations {
            centroid.iter_mut().zip(p).for_each(|(c, v)| *c += v / n);
        }
        for d in &mut deviations {
            d.iter_mut().zip(&centroid).for_each(|(x, c)| *x -= c);
        }
        let spread = deviations.iter().map(|d| dot(d, d)).sum::<f64>() / n;
        // Gram-Schmidt, each vector orthogonalised twice against the basis so far (one pass
        // loses orthogonality when deviations are nearly parallel); what is left of a vector
        // below a millionth of the spread is a duplicate direction, not a new one.
        let mut basis: Vec<[f64; EMBEDDING_DIM]> = Vec::new();
        for d in &deviations {
            let mut v = *d;
            for _ in 0..2 {
                for q in &basis {
                    let along = dot(&v, q);
                    v.iter_mut().zip(q).for_each(|(x, y)| *x -= along * y);
                }
            }
            let norm_sq = dot(&v, &v);
            if norm_sq > 1e-6 * spread {
                let norm = norm_sq.sqrt();
                basis.push(v.map(|x| x / norm));
            }
        }
        Some(Self { centroid, basis, spread })
    }

    /// `−(‖d‖² − SUBSPACE_FORGIVEN·‖P d‖²) + SUBSPACE_SPREAD_WEIGHT·spread`, with `d` the probe
    /// less the centroid and `P` the projection onto the writer's variation. Higher is more
    /// likely the writer's, as for every other method.
    pub fn score(&self, probe: &Template) -> f32 {
        let p = probe.to_f32();
        let d: [f64; EMBEDDING_DIM] = std::array::from_fn(|k| f64::from(p[k]) - self.centroid[k]);
        let along: f64 = self.basis.iter().map(|q| dot(&d, q).powi(2)).sum();
        (-(dot(&d, &d) - SUBSPACE_FORGIVEN * along) + SUBSPACE_SPREAD_WEIGHT * self.spread) as f32
    }

    /// Dimension of the writer's variation (the basis size).
    pub fn rank(&self) -> usize {
        self.basis.len()
    }
}

/// [`ScoreMethod::Subspace`]'s score (`None` with fewer than two references).
pub fn subspace_score(references: &[Template], probe: &Template) -> Option<f32> {
    WriterSubspace::fit(references).map(|s| s.score(probe))
}

/// The score of a [`ScoreMethod::from_references_only`] method; `None` with too few references
/// (the kiosk then falls back to the nearest rule) or for any other method.
pub fn reference_only_score(method: ScoreMethod, references: &[Template], probe: &Template) -> Option<f32> {
    match method {
        ScoreMethod::Consistency => consistency_score(references, probe),
        ScoreMethod::Subspace => subspace_score(references, probe),
        _ => None,
    }
}

/// The normalisation [`DecisionRule::Normalised`] uses.
///
/// S-norm by default: it corrects both the writer's side (how crowded the region around the
/// references is) and the probe's side (how "generic" the probe is), and is the usual choice in
/// cohort-normalised embedding verification. Not yet confirmed on these data sets: run
/// [`compare_rules`] on validation writers and change this constant if z- or t-norm wins.
pub const NORMALISED_METHOD: ScoreMethod = ScoreMethod::SNorm;

impl ScoreMethod {
    pub const ALL: [ScoreMethod; 7] = [
        ScoreMethod::Nearest,
        ScoreMethod::ZNorm,
        ScoreMethod::TNorm,
        ScoreMethod::SNorm,
        ScoreMethod::Classifier,
        ScoreMethod::Consistency,
        ScoreMethod::Subspace,
    ];

    /// Whether scoring needs the cohort at verification time.
    pub const fn needs_cohort(self) -> bool {
        matches!(self, ScoreMethod::TNorm | ScoreMethod::SNorm)
    }

    /// Whether scoring needs a fitted [`WriterModel`].
    pub const fn needs_model(self) -> bool {
        matches!(self, ScoreMethod::ZNorm | ScoreMethod::SNorm | ScoreMethod::Classifier)
    }

    /// Whether the score comes from the writer's references alone (no cohort, no writer model):
    /// such a method needs two or more references, and a writer with one falls back.
    pub const fn from_references_only(self) -> bool {
        matches!(self, ScoreMethod::Consistency | ScoreMethod::Subspace)
    }

    pub const fn name(self) -> &'static str {
        match self {
            ScoreMethod::Nearest => "nearest",
            ScoreMethod::ZNorm => "z-norm",
            ScoreMethod::TNorm => "t-norm",
            ScoreMethod::SNorm => "s-norm",
            ScoreMethod::Classifier => "classifier",
            ScoreMethod::Consistency => "consistency",
            ScoreMethod::Subspace => "subspace",
        }
    }
}

impl DecisionRule {
    /// Every rule, in the order reports list them.
    pub const ALL: [DecisionRule; 5] = [
        DecisionRule::Nearest,
        DecisionRule::Normalised,
        DecisionRule::Classifier,
        DecisionRule::Consistency,
        DecisionRule::Subspace,
    ];

    /// The scoring method this rule stands for.
    pub const fn method(self) -> ScoreMethod {
        match self {
            DecisionRule::Nearest => ScoreMethod::Nearest,
            DecisionRule::Normalised => NORMALISED_METHOD,
            DecisionRule::Classifier => ScoreMethod::Classifier,
            DecisionRule::Consistency => ScoreMethod::Consistency,
            DecisionRule::Subspace => ScoreMethod::Subspace,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer model
// ---------------------------------------------------------------------------------------------

/// Settings of the enrolment fit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveConfig {
    /// L2 penalty on the classifier weights (the bias is not penalised), against a loss whose
    /// positive and negative halves each weigh 1/2. Larger: weights closer to "mean reference
    /// minus mean cohort"; smaller: closer to a maximum-margin separator.
    pub l2: f32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self { l2: 0.01 }
    }
}

/// What is fitted for one writer at enrolment: z-norm statistics and a linear classifier.
/// Fixed size ([`WriterModel::BYTES`] bytes serialised), `Copy`, never allocates to score.
#[derive(Clone, Copy, PartialEq)]
pub struct WriterModel {
    z: NormStats,
    weights: [f32; EMBEDDING_DIM],
    bias: f32,
}

impl core::fmt::Debug for WriterModel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriterModel")
            .field("z", &self.z)
            .field("weights", &format_args!("{:?}, ..", &self.weights[..4]))
            .field("bias", &self.bias)
            .finish()
    }
}

impl WriterModel {
    /// Serialised length: z mean, z std, bias, then the weights, all `f32` little-endian.
    pub const BYTES: usize = 4 * (3 + EMBEDDING_DIM);

    /// Fits the model of a writer enrolled with `references` (1 or more) against `cohort`.
    /// Deterministic: the same inputs give the same bits on one platform.
    pub fn fit(references: &[Template], cohort: &Cohort, config: &AdaptiveConfig) -> Result<Self, AdaptiveError> {
        if references.is_empty() {
            return Err(AdaptiveError::NoReferences);
        }
        let z = NormStats::of_dots(
            cohort.templates.iter().map(|c| references.iter().map(|r| dot_i8(r, c)).max().unwrap_or(0)),
        );
        let (weights, bias) = fit_logistic(references, &cohort.templates, f64::from(config.l2))?;
        let model = Self { z, weights, bias };
        model.validate()?;
        Ok(model)
    }

    /// Builds a model from its parts (checked like [`WriterModel::from_bytes`]).
    pub fn from_parts(z: NormStats, weights: [f32; EMBEDDING_DIM], bias: f32) -> Result<Self, AdaptiveError> {
        let model = Self { z, weights, bias };
        model.validate()?;
        Ok(model)
    }

    fn validate(&self) -> Result<(), AdaptiveError> {
        if !(self.z.mean.is_finite() && self.z.std.is_finite() && self.bias.is_finite()) {
            return Err(AdaptiveError::BadModel("a statistic or the bias is not a finite number"));
        }
        if self.z.std < MIN_STD {
            return Err(AdaptiveError::BadModel("the z-norm deviation is below the minimum"));
        }
        if !self.weights.iter().all(|w| w.is_finite()) {
            return Err(AdaptiveError::BadModel("a classifier weight is not a finite number"));
        }
        Ok(())
    }

    /// Z-norm statistics: the nearest-reference scores of the cohort.
    pub fn z_stats(&self) -> NormStats {
        self.z
    }

    pub fn weights(&self) -> &[f32; EMBEDDING_DIM] {
        &self.weights
    }

    pub fn bias(&self) -> f32 {
        self.bias
    }

    /// The classifier's score `w·x + b` (balanced log-odds; > 0 leans genuine).
    pub fn classifier_score(&self, probe: &Template) -> f32 {
        let dot: f64 = self.weights.iter().zip(probe.as_i8()).map(|(&w, &q)| f64::from(w) * f64::from(q)).sum();
        (dot / f64::from(QUANT_SCALE) + f64::from(self.bias)) as f32
    }

    /// Score of `probe` by `rule`; higher = more genuine. `NaN` (which passes no threshold)
    /// when the rule needs the cohort and none is given, or with no references.
    pub fn score(&self, rule: DecisionRule, references: &[Template], probe: &Template, cohort: Option<&Cohort>) -> f32 {
        self.score_method(rule.method(), references, probe, cohort)
    }

    /// Score of `probe` by any [`ScoreMethod`] (see [`WriterModel::score`]).
    pub fn score_method(
        &self,
        method: ScoreMethod,
        references: &[Template],
        probe: &Template,
        cohort: Option<&Cohort>,
    ) -> f32 {
        let t = |raw| cohort.map_or(f32::NAN, |c| c.probe_stats(probe).normalise(raw));
        match method {
            ScoreMethod::Nearest => writer_score(references, probe),
            ScoreMethod::ZNorm => self.z.normalise(writer_score(references, probe)),
            ScoreMethod::TNorm => t(writer_score(references, probe)),
            ScoreMethod::SNorm => {
                let raw = writer_score(references, probe);
                s_norm(self.z.normalise(raw), t(raw))
            }
            ScoreMethod::Classifier => self.classifier_score(probe),
            ScoreMethod::Consistency => consistency_score(references, probe).unwrap_or(f32::NAN),
            ScoreMethod::Subspace => subspace_score(references, probe).unwrap_or(f32::NAN),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        let values = [self.z.mean, self.z.std, self.bias].into_iter().chain(self.weights);
        for (chunk, v) in out.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses [`WriterModel::to_bytes`]: exactly [`WriterModel::BYTES`] bytes, every value
    /// finite, the deviation at least [`MIN_STD`]. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AdaptiveError> {
        if bytes.len() != Self::BYTES {
            return Err(AdaptiveError::BadModel("wrong length"));
        }
        let mut values = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        let mut next = || values.next().unwrap_or(f32::NAN);
        let (mean, std, bias) = (next(), next(), next());
        let weights = core::array::from_fn(|_| next());
        Self::from_parts(NormStats { mean, std }, weights, bias)
    }
}

/// The S-norm combination of a z- and a t-normalised score.
fn s_norm(z: f32, t: f32) -> f32 {
    ((f64::from(z) + f64::from(t)) / 2.0) as f32
}

// ---------------------------------------------------------------------------------------------
// Logistic regression by Newton's method
// ---------------------------------------------------------------------------------------------

/// Features plus the constant 1 for the bias.
const D: usize = EMBEDDING_DIM + 1;
/// Most Newton steps; it converges in fewer than 15 on unit-norm data.
const MAX_NEWTON_STEPS: usize = 30;
/// Penalty on the bias: not regularised in effect, but keeps the Hessian positive definite
/// when every point is classified with certainty.
const BIAS_L2: f64 = 1e-8;

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

struct Problem {
    /// Rows: features (template / 127) and a trailing 1.
    x: Vec<[f64; D]>,
    /// +1 positive (reference), −1 negative (cohort).
    y: Vec<f64>,
    /// Class-balanced example weights: each class sums to 1/2.
    c: Vec<f64>,
    l2: f64,
}

impl Problem {
    fn new(positives: &[Template], negatives: &[Template], l2: f64) -> Self {
        let row = |t: &Template| {
            let mut r = [1.0f64; D];
            for (d, &q) in r.iter_mut().zip(t.as_i8()) {
                *d = f64::from(q) / f64::from(QUANT_SCALE);
            }
            r
        };
        let (np, nn) = (positives.len() as f64, negatives.len() as f64);
        let x = positives.iter().chain(negatives).map(row).collect();
        let y = positives.iter().map(|_| 1.0).chain(negatives.iter().map(|_| -1.0)).collect();
        let c = positives.iter().map(|_| 0.5 / np).chain(negatives.iter().map(|_| 0.5 / nn)).collect();
        Self { x, y, c, l2 }
    }

    fn penalty(&self, k: usize) -> f64 {
        if k == EMBEDDING_DIM { BIAS_L2 } else { self.l2 }
    }

    fn loss(&self, theta: &[f64; D]) -> f64 {
        let data: f64 =
            self.x.iter().zip(&self.y).zip(&self.c).map(|((x, &y), &c)| c * softplus(-y * dot(theta, x))).sum();
        let reg: f64 = theta.iter().enumerate().map(|(k, &t)| 0.5 * self.penalty(k) * t * t).sum();
        data + reg
    }

    /// Gradient and Hessian at `theta` (the Hessian's lower triangle only: row `j` is filled
    /// up to column `j`).
    fn derivatives(&self, theta: &[f64; D]) -> ([f64; D], Vec<[f64; D]>) {
        let mut g = [0.0f64; D];
        let mut h = vec![[0.0f64; D]; D];
        for ((x, &y), &c) in self.x.iter().zip(&self.y).zip(&self.c) {
            let p = sigmoid(dot(theta, x));
            // d/dm of softplus(−y·m) is −y·σ(−y·m) = p − (y+1)/2.
            let gi = c * (p - (y + 1.0) / 2.0);
            let hi = c * p * (1.0 - p);
            for j in 0..D {
                g[j] += gi * x[j];
                let a = hi * x[j];
                for (hk, &xk) in h[j][..=j].iter_mut().zip(&x[..=j]) {
                    *hk += a * xk;
                }
            }
        }
        for j in 0..D {
            g[j] += self.penalty(j) * theta[j];
            h[j][j] += self.penalty(j);
        }
        (g, h)
    }
}

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn dot_prefix(a: &[f64], b: &[f64], n: usize) -> f64 {
    a[..n].iter().zip(&b[..n]).map(|(x, y)| x * y).sum()
}

/// Solves `h · x = g` for symmetric positive definite `h`, given by its lower triangle, by
/// Cholesky factorisation; `None` if `h` is not positive definite.
fn solve_spd(mut h: Vec<[f64; D]>, g: &[f64; D]) -> Option<[f64; D]> {
    // In place: the lower triangle becomes L, with h = L·Lᵀ.
    for j in 0..D {
        let d = h[j][j] - dot_prefix(&h[j], &h[j], j);
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let d = d.sqrt();
        h[j][j] = d;
        let (top, below) = h.split_at_mut(j + 1);
        let lj = &top[j];
        for row in below {
            row[j] = (row[j] - dot_prefix(row, lj, j)) / d;
        }
    }
    // L·y = g, then Lᵀ·x = y.
    let mut x = *g;
    for i in 0..D {
        x[i] = (x[i] - dot_prefix(&h[i], &x, i)) / h[i][i];
    }
    for i in (0..D).rev() {
        let s: f64 = h[i + 1..].iter().zip(&x[i + 1..]).map(|(row, xk)| row[i] * xk).sum();
        x[i] = (x[i] - s) / h[i][i];
    }
    Some(x)
}

/// Minimises the regularised loss by Newton steps with backtracking; returns weights and bias.
fn fit_logistic(
    positives: &[Template],
    negatives: &[Template],
    l2: f64,
) -> Result<([f32; EMBEDDING_DIM], f32), AdaptiveError> {
    if !(l2 > 0.0 && l2.is_finite()) {
        return Err(AdaptiveError::FitFailed("the L2 penalty must be a positive number"));
    }
    let theta = newton(&Problem::new(positives, negatives, l2))?;
    let weights = core::array::from_fn(|k| theta[k] as f32);
    Ok((weights, theta[EMBEDDING_DIM] as f32))
}

fn newton(problem: &Problem) -> Result<[f64; D], AdaptiveError> {
    let mut theta = [0.0f64; D];
    let mut loss = problem.loss(&theta);
    for _ in 0..MAX_NEWTON_STEPS {
        let (g, h) = problem.derivatives(&theta);
        let step = solve_spd(h, &g).ok_or(AdaptiveError::FitFailed("the Hessian is not positive definite"))?;
        // Newton decrement: half of it estimates how far the loss is above its minimum.
        let decrement = dot(&g, &step);
        if decrement < 1e-14 {
            break;
        }
        let mut t = 1.0;
        loop {
            let candidate: [f64; D] = core::array::from_fn(|k| theta[k] - t * step[k]);
            let l = problem.loss(&candidate);
            if l <= loss - 1e-4 * t * decrement {
                theta = candidate;
                loss = l;
                break;
            }
            t /= 2.0;
            if t < 1e-10 {
                // No descent along the Newton direction: at the minimum up to rounding.
                return Ok(theta);
            }
        }
    }
    if theta.iter().all(|t| t.is_finite()) { Ok(theta) } else { Err(AdaptiveError::FitFailed("non-finite weights")) }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// The scores of one method in one experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodScores {
    pub method: ScoreMethod,
    pub scores: VerificationScores,
}

/// [`protocol::verification_scores`] for every [`ScoreMethod`]: the same seeded enrolment of
/// `references` genuine signatures per writer (so the `Nearest` scores are exactly
/// `protocol::verification_scores`'), a [`WriterModel`] fitted per writer against `cohort`,
/// then the writer's remaining genuine signatures, its skilled forgeries and the other writers'
/// genuine signatures scored by each method. One entry per method, in [`ScoreMethod::ALL`]
/// order. Writers whose model cannot be fitted are left out of every method.
pub fn method_scores(
    samples: &[EmbeddedSample],
    cohort: &Cohort,
    references: usize,
    seed: u64,
    config: &AdaptiveConfig,
) -> Vec<MethodScores> {
    let blank = VerificationScores { max_genuine_pair_similarity: f32::NEG_INFINITY, ..Default::default() };
    let mut out: Vec<MethodScores> =
        ScoreMethod::ALL.iter().map(|&method| MethodScores { method, scores: blank.clone() }).collect();
    // T-norm statistics depend on the probe only: once per sample.
    let t_stats: Vec<NormStats> = samples.iter().map(|s| cohort.probe_stats(&s.template)).collect();

    let mut writers: Vec<&str> = samples.iter().map(|s| s.writer.as_str()).collect();
    writers.sort_unstable();
    writers.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for writer in writers {
        let mut genuine: Vec<usize> =
            (0..samples.len()).filter(|&i| samples[i].writer == writer && samples[i].label == Label::Genuine).collect();
        if genuine.len() <= references || references == 0 {
            continue;
        }
        // The same draw as protocol::verification_scores (shuffling indices in the same order).
        genuine.shuffle(&mut rng);
        let enrolled: Vec<Template> = genuine[..references].iter().map(|&i| samples[i].template).collect();
        let Ok(model) = WriterModel::fit(&enrolled, cohort, config) else {
            log::warn!("writer {writer}: the writer model could not be fitted; left out");
            continue;
        };
        let writer_consistency = consistency(&enrolled);
        let writer_subspace = WriterSubspace::fit(&enrolled);
        let mut max_pair = f32::NEG_INFINITY;
        for (k, &a) in genuine.iter().enumerate() {
            for &b in &genuine[k + 1..] {
                max_pair = max_pair.max(samples[a].template.similarity(&samples[b].template));
            }
        }
        let skilled = (0..samples.len()).filter(|&i| samples[i].writer == writer && samples[i].label == Label::Forged);
        let skilled: Vec<usize> = skilled.collect();
        let random: Vec<usize> =
            (0..samples.len()).filter(|&i| samples[i].writer != writer && samples[i].label == Label::Genuine).collect();
        for entry in &mut out {
            let score = |i: usize| {
                let probe = &samples[i].template;
                match entry.method {
                    ScoreMethod::TNorm => t_stats[i].normalise(writer_score(&enrolled, probe)),
                    ScoreMethod::SNorm => {
                        let raw = writer_score(&enrolled, probe);
                        s_norm(model.z.normalise(raw), t_stats[i].normalise(raw))
                    }
                    // As the kiosk decides: a single reference falls back to the nearest rule.
                    ScoreMethod::Consistency => {
                        let raw = writer_score(&enrolled, probe);
                        writer_consistency.map_or(raw, |c| less_consistency(raw, c))
                    }
                    ScoreMethod::Subspace => match &writer_subspace {
                        Some(subspace) => subspace.score(probe),
                        None => writer_score(&enrolled, probe),
                    },
                    method => model.score_method(method, &enrolled, probe, None),
                }
            };
            let s = &mut entry.scores;
            s.writers += 1;
            s.max_genuine_pair_similarity = s.max_genuine_pair_similarity.max(max_pair);
            for &i in &genuine[references..] {
                s.genuine.push(score(i));
                s.genuine_max_reference.push(max_similarity(&enrolled, &samples[i].template));
            }
            s.skilled.extend(skilled.iter().map(|&i| score(i)));
            s.random.extend(random.iter().map(|&i| score(i)));
        }
    }
    out
}

/// One method at one number of references: thresholds from validation writers, figures on
/// test writers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleRow {
    pub method: ScoreMethod,
    pub references: usize,
    pub validation_writers: usize,
    /// `None` when the validation writers gave nothing to calibrate on.
    pub thresholds: Option<Thresholds>,
    /// Test EERs (skilled, random), and FAR/FRR at the validation thresholds
    /// (`at_validation_eer_threshold`: the validation EER threshold for that forgery kind).
    pub test: VerificationMetrics,
}

impl RuleRow {
    /// Test skilled-forgery EER.
    pub fn skilled_eer(&self) -> Option<f64> {
        self.test.skilled.map(|m| m.eer)
    }
    /// Test random-forgery EER.
    pub fn random_eer(&self) -> Option<f64> {
        self.test.random.map(|m| m.eer)
    }
}

/// Every method at every number of references; see [`compare_rules`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleComparison {
    pub seed: u64,
    pub cohort_size: usize,
    pub config: AdaptiveConfig,
    pub rows: Vec<RuleRow>,
}

impl RuleComparison {
    /// A Markdown table: method, R, test skilled/random EER, and skilled FAR / genuine FRR at
    /// the validation skilled-EER threshold and at the validation threshold matching the
    /// nearest rule's forgery acceptance (percentages).
    pub fn to_markdown(&self) -> String {
        let pct =
            |v: Option<f64>| v.filter(|v| v.is_finite()).map_or("–".to_owned(), |v| format!("{:.1}%", v * 100.0));
        let mut s = String::from(
            "| rule | R | skilled EER | random EER | skilled FAR @ val. thr. | FRR @ val. thr. | \
             skilled FAR @ nearest-eer | FRR @ nearest-eer |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let at = r.test.skilled.map(|m| m.at_validation_eer_threshold);
            let matched = r.test.skilled.and_then(|m| m.at_validation_nearest_eer_far_threshold);
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.method.name(),
                r.references,
                pct(r.skilled_eer()),
                pct(r.random_eer()),
                pct(at.map(|p| p.far)),
                pct(at.map(|p| p.frr)),
                pct(matched.map(|p| p.far)),
                pct(matched.map(|p| p.frr)),
            ));
        }
        s
    }
}

/// The default numbers of references compared.
pub const COMPARED_REFERENCES: [usize; 4] = [1, 3, 5, 10];

/// Compares every [`ScoreMethod`] for each R in `references` (e.g. [`COMPARED_REFERENCES`]):
/// thresholds calibrated on `validation` writers ([`protocol::calibrate`]), EERs and FAR/FRR
/// at those thresholds on `test` writers. `cohort` must come from neither (training writers).
pub fn compare_rules(
    validation: &[EmbeddedSample],
    test: &[EmbeddedSample],
    cohort: &Cohort,
    references: &[usize],
    seed: u64,
) -> RuleComparison {
    compare_rules_with(validation, test, cohort, references, seed, &AdaptiveConfig::default())
}

/// [`compare_rules`] with explicit fit settings.
pub fn compare_rules_with(
    validation: &[EmbeddedSample],
    test: &[EmbeddedSample],
    cohort: &Cohort,
    references: &[usize],
    seed: u64,
    config: &AdaptiveConfig,
) -> RuleComparison {
    let mut rows = Vec::new();
    for &r in references {
        let val = method_scores(validation, cohort, r, seed, config);
        let tst = method_scores(test, cohort, r, seed, config);
        let nearest = val.iter().find(|v| v.method == ScoreMethod::Nearest).map(|v| &v.scores);
        for (v, t) in val.iter().zip(&tst) {
            let thresholds = match nearest {
                Some(n) => protocol::calibrate_against_nearest(&v.scores, n).ok(),
                None => protocol::calibrate(&v.scores).ok(),
            };
            let nan = protocol::OperatingThresholds {
                eer: f32::NAN,
                far_1pct: f32::NAN,
                far_0_1pct: f32::NAN,
                nearest_eer_far: None,
            };
            let mut test = protocol::verification_metrics(
                &t.scores,
                r,
                &thresholds.unwrap_or(Thresholds { skilled: None, random: nan }),
            );
            if thresholds.is_none() {
                // No threshold: no rates at it (rather than the 0% a NaN threshold would give).
                let none = OperatingPoint { threshold: f32::NAN, far: f64::NAN, frr: f64::NAN };
                for m in test.skilled.iter_mut().chain(test.random.iter_mut()) {
                    m.at_validation_eer_threshold = none;
                    m.at_validation_far_1pct_threshold = none;
                }
            }
            rows.push(RuleRow {
                method: v.method,
                references: r,
                validation_writers: v.scores.writers,
                thresholds,
                test,
            });
        }
    }
    RuleComparison { seed, cohort_size: cohort.len(), config: *config, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;
    use rand::Rng;

    fn axis(k: usize) -> Template {
        let mut e = [0f32; EMBEDDING_DIM];
        e[k] = 1.0;
        Template::from_embedding(&e).expect("template")
    }

    /// `a` on axis 0, sqrt(1 − a²) on `other`.
    fn mix(a: f32, other: usize) -> Template {
        let mut e = [0f32; EMBEDDING_DIM];
        e[0] = a;
        e[other] = (1.0 - a * a).sqrt();
        Template::from_embedding(&e).expect("template")
    }

    fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
        // Box–Muller.
        let u: f32 = rng.random_range(f32::EPSILON..1.0);
        let v: f32 = rng.random();
        (-2.0 * u.ln()).sqrt() * (2.0 * core::f32::consts::PI * v).cos()
    }

    /// A random unit vector near `center` (a unit vector): center + noise of norm ≈ `spread`.
    fn near(rng: &mut ChaCha8Rng, center: &[f32], spread: f32) -> Template {
        let scale = spread / (EMBEDDING_DIM as f32).sqrt();
        let e: Vec<f32> = center.iter().map(|&c| c + scale * gaussian(rng)).collect();
        Template::from_embedding(&e).expect("template")
    }

    fn basis(k: usize) -> Vec<f32> {
        let mut e = vec![0f32; EMBEDDING_DIM];
        e[k] = 1.0;
        e
    }

    #[test]
    fn subspace_by_hand() {
        // References on axes 0 and 1 (exactly 1.0 in int8): centroid (½, ½), variation along
        // (1, −1)/√2, spread ½.
        let refs = [axis(0), axis(1)];
        let subspace = WriterSubspace::fit(&refs).expect("two references");
        assert_eq!(subspace.rank(), 1);
        let (forgiven, weight) = (SUBSPACE_FORGIVEN, SUBSPACE_SPREAD_WEIGHT);
        // A probe on axis 0 deviates (½, −½): all of it along the variation.
        let along = f64::from(subspace.score(&axis(0)));
        assert!((along - (-(0.5 - forgiven * 0.5) + weight * 0.5)).abs() < 1e-6, "{along}");
        // A probe on axis 2 deviates (−½, −½, 1): none of it along the variation.
        let off = f64::from(subspace.score(&axis(2)));
        assert!((off - (-1.5 + weight * 0.5)).abs() < 1e-6, "{off}");
        assert_eq!(subspace_score(&refs, &axis(2)), Some(off as f32));
        // A duplicate reference adds no direction; three independent ones span two.
        assert_eq!(WriterSubspace::fit(&[axis(0), axis(0), axis(1)]).expect("three").rank(), 1);
        assert_eq!(WriterSubspace::fit(&[axis(0), axis(1), axis(2)]).expect("three").rank(), 2);
        assert_eq!(WriterSubspace::fit(&[axis(3), axis(3)]).expect("two").rank(), 0, "identical references");
        // One reference: no variation, no score; the method gives NaN so no threshold passes.
        assert_eq!(WriterSubspace::fit(&refs[..1]), None);
        assert_eq!(subspace_score(&refs[..1], &axis(0)), None);
        let cohort = Cohort::new(vec![axis(4), axis(5)]).expect("cohort");
        let model = WriterModel::fit(&refs[..1], &cohort, &AdaptiveConfig::default()).expect("fit");
        assert!(model.score_method(ScoreMethod::Subspace, &refs[..1], &axis(0), None).is_nan());
        assert!(!ScoreMethod::Subspace.needs_cohort() && !ScoreMethod::Subspace.needs_model());
        assert!(!ScoreMethod::Nearest.from_references_only() && ScoreMethod::Subspace.from_references_only());
        assert_eq!(reference_only_score(ScoreMethod::Nearest, &refs, &axis(0)), None);
    }

    /// Probes at about the same distance from a writer's centroid (both are re-normalised to
    /// unit length): the one that differs the way the references differ from each other scores
    /// higher than one that leaves their span.
    #[test]
    fn subspace_prefers_the_writers_own_variation() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let center = basis(0);
        let refs: Vec<Template> = (0..5).map(|_| near(&mut rng, &center, 0.4)).collect();
        let subspace = WriterSubspace::fit(&refs).expect("five");
        assert_eq!(subspace.rank(), 4);
        // Reflecting a reference through the centroid stays in the span; a step of the same
        // length along an unused axis leaves it.
        let r = refs[0].to_f32();
        let c: Vec<f32> =
            (0..EMBEDDING_DIM).map(|k| refs.iter().map(|t| t.to_f32()[k]).sum::<f32>() / refs.len() as f32).collect();
        let within: Vec<f32> = (0..EMBEDDING_DIM).map(|k| 2.0 * c[k] - r[k]).collect();
        let step = (0..EMBEDDING_DIM).map(|k| (r[k] - c[k]).powi(2)).sum::<f32>().sqrt();
        let mut outside = c.clone();
        outside[EMBEDDING_DIM - 1] += step;
        let (within, outside) =
            (Template::from_embedding(&within).expect("t"), Template::from_embedding(&outside).expect("t"));
        assert!(subspace.score(&within) > subspace.score(&outside));
    }

    #[test]
    fn consistency_by_hand() {
        // References on axis 0, and at int8 cosines 76/127 and 102/127 from it (mix(0.6, 2) and
        // mix(0.8, 3)); the last two are orthogonal to each other. Nearest other reference:
        // axis 0 -> 102 (mix 0.8), mix 0.6 -> 76 (axis 0), mix 0.8 -> 102 (axis 0).
        let refs = [axis(0), mix(0.6, 2), mix(0.8, 3)];
        let c = f64::from(consistency(&refs).expect("three references"));
        let expected = (102.0 + 76.0 + 102.0) / 3.0 / 127.0;
        assert!((c - expected).abs() < 1e-6, "{c} vs {expected}");
        // The score: the nearest-reference similarity less half of it.
        let probe = mix(0.9, 5);
        let raw = f64::from(writer_score(&refs, &probe));
        let score = f64::from(consistency_score(&refs, &probe).expect("score"));
        assert!((score - (raw - 0.5 * c)).abs() < 1e-6);
        // The same probe against a less consistent writer (references further apart) scores
        // higher: a variable writer's threshold is effectively lower.
        let loose = [axis(0), mix(0.3, 2), mix(0.2, 3)];
        assert!(consistency(&loose).expect("three") < consistency(&refs).expect("three"));
        let loose_score = consistency_score(&loose, &probe).expect("score");
        assert_eq!(writer_score(&loose, &probe), writer_score(&refs, &probe));
        assert!(f64::from(loose_score) > score);
        // One reference: no consistency, no score; the method gives NaN so no threshold passes.
        assert_eq!(consistency(&refs[..1]), None);
        assert_eq!(consistency_score(&refs[..1], &probe), None);
        let cohort = Cohort::new(vec![axis(1), axis(4)]).expect("cohort");
        let model = WriterModel::fit(&refs[..1], &cohort, &AdaptiveConfig::default()).expect("fit");
        assert!(model.score_method(ScoreMethod::Consistency, &refs[..1], &probe, None).is_nan());
        assert!(!ScoreMethod::Consistency.needs_cohort() && !ScoreMethod::Consistency.needs_model());
    }

    #[test]
    fn z_norm_by_hand() {
        // Reference axis 0; cohort similarities to it: 0, 76/127 and 102/127 (the int8 values
        // of 0.6 and 0.8), and its nearest-reference score against axis 1 is 0.
        let cohort = Cohort::new(vec![axis(1), mix(0.6, 2), mix(0.8, 3)]).expect("cohort");
        assert_eq!(mix(0.6, 2).as_i8()[0], 76);
        assert_eq!(mix(0.8, 3).as_i8()[0], 102);
        let refs = [axis(0)];
        let model = WriterModel::fit(&refs, &cohort, &AdaptiveConfig::default()).expect("fit");
        let s = [0.0f64, 76.0 / 127.0, 102.0 / 127.0];
        let mean = s.iter().sum::<f64>() / 3.0;
        let std = (s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0).sqrt();
        assert!((f64::from(model.z_stats().mean) - mean).abs() < 1e-6);
        assert!((f64::from(model.z_stats().std) - std).abs() < 1e-6);
        // A probe equal to the reference: raw score 1.
        let z = model.score_method(ScoreMethod::ZNorm, &refs, &axis(0), None);
        assert!((f64::from(z) - (1.0 - mean) / std).abs() < 1e-5, "{z}");
        // A second reference equal to a cohort template (axis 1) lifts that template's
        // nearest-reference score from 0 to 1, and so the mean.
        let wider = WriterModel::fit(&[axis(0), axis(1)], &cohort, &AdaptiveConfig::default()).expect("fit");
        assert!(wider.z_stats().mean > model.z_stats().mean);

        // T-norm: probe axis 0 against the cohort: the same three similarities.
        let t = cohort.probe_stats(&axis(0));
        assert!((f64::from(t.mean) - mean).abs() < 1e-6 && (f64::from(t.std) - std).abs() < 1e-6);
        let probe = mix(0.9, 5);
        let raw = writer_score(&refs, &probe);
        let t = cohort.probe_stats(&probe);
        let tn = model.score_method(ScoreMethod::TNorm, &refs, &probe, Some(&cohort));
        assert!((tn - (raw - t.mean) / t.std).abs() < 1e-5);
        let sn = model.score_method(ScoreMethod::SNorm, &refs, &probe, Some(&cohort));
        let zn = model.score_method(ScoreMethod::ZNorm, &refs, &probe, None);
        assert!((sn - (zn + tn) / 2.0).abs() < 1e-5);
        // Without the cohort, the methods that need it give NaN; the others do not (but for
        // consistency and subspace, which need a second reference).
        for m in ScoreMethod::ALL {
            let v = model.score_method(m, &refs, &probe, None);
            let needs_two = matches!(m, ScoreMethod::Consistency | ScoreMethod::Subspace);
            assert_eq!(v.is_nan(), m.needs_cohort() || needs_two, "{m:?}");
        }
        assert_eq!(model.score(DecisionRule::Nearest, &refs, &probe, None), raw);
    }

    #[test]
    fn degenerate_cohort_is_floored_not_infinite() {
        let cohort = Cohort::new(vec![axis(1), axis(1)]).expect("cohort");
        let model = WriterModel::fit(&[axis(0)], &cohort, &AdaptiveConfig::default()).expect("fit");
        assert_eq!(model.z_stats().std, MIN_STD);
        assert!(model.score_method(ScoreMethod::ZNorm, &[axis(0)], &axis(0), None).is_finite());
        assert_eq!(Cohort::new(vec![axis(1)]), Err(AdaptiveError::CohortTooSmall { found: 1, min: 2 }));
        assert_eq!(WriterModel::fit(&[], &cohort, &AdaptiveConfig::default()), Err(AdaptiveError::NoReferences));
        let bad = AdaptiveConfig { l2: 0.0 };
        assert!(matches!(WriterModel::fit(&[axis(0)], &cohort, &bad), Err(AdaptiveError::FitFailed(_))));
    }

    #[test]
    fn classifier_known_answer_on_a_symmetric_pair() {
        // Positive +e0, negative −e0: by symmetry b = 0 and w = α·e0 with α minimising
        // softplus(−α) + l2/2·α² (each class weighs 1/2), i.e. σ(−α) = l2·α.
        let mut neg = [0i8; EMBEDDING_DIM];
        neg[0] = -127;
        let neg = Template::from_i8(neg);
        for l2 in [0.01f64, 0.1, 1.0] {
            let (w, b) = fit_logistic(&[axis(0)], &[neg, neg], l2).expect("fit");
            let (mut lo, mut hi) = (0.0f64, 1.0 / l2);
            for _ in 0..200 {
                let mid = (lo + hi) / 2.0;
                if sigmoid(-mid) > l2 * mid { lo = mid } else { hi = mid }
            }
            assert!((f64::from(w[0]) - lo).abs() < 1e-4 * lo.max(1.0), "l2 {l2}: w0 {} vs {lo}", w[0]);
            assert!(w[1..].iter().all(|&v| v == 0.0));
            assert!(b.abs() < 1e-4, "bias {b}");
        }
    }

    #[test]
    fn classifier_separates_a_cluster_from_the_cohort_and_converges() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let center = basis(0);
        let cohort: Vec<Template> = (0..300).map(|_| near(&mut rng, &vec![0.0; EMBEDDING_DIM], 1.0)).collect();
        let cohort = Cohort::new(cohort).expect("cohort");
        let refs: Vec<Template> = (0..5).map(|_| near(&mut rng, &center, 0.5)).collect();
        let config = AdaptiveConfig::default();
        let model = WriterModel::fit(&refs, &cohort, &config).expect("fit");
        // Held-out genuine from the same cluster score high; fresh impostors low.
        let genuine: Vec<f32> = (0..50).map(|_| model.classifier_score(&near(&mut rng, &center, 0.5))).collect();
        let impostor: Vec<f32> =
            (0..200).map(|_| model.classifier_score(&near(&mut rng, &vec![0.0; EMBEDDING_DIM], 1.0))).collect();
        assert!(genuine.iter().all(|&s| s > 0.0), "{genuine:?}");
        assert!(impostor.iter().filter(|&&s| s > 0.0).count() <= 2);
        assert_eq!(metrics::eer(&genuine, &impostor).eer, 0.0);
        assert!(refs.iter().all(|r| model.classifier_score(r) > 0.0));

        // The fit is a minimum: the gradient vanishes (in f64, before the f32 cast).
        let problem = Problem::new(&refs, cohort.templates(), f64::from(config.l2));
        let theta = newton(&problem).expect("newton");
        let (g, _) = problem.derivatives(&theta);
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(gmax < 1e-8, "gradient {gmax}");
        // Deterministic.
        assert_eq!(WriterModel::fit(&refs, &cohort, &config).expect("fit"), model);
        // A single reference works too.
        let one = WriterModel::fit(&refs[..1], &cohort, &config).expect("fit");
        assert!(one.classifier_score(&refs[0]) > 0.0);
    }

    /// Two writers: A tight, in a crowded region (impostors score high against it); B loose,
    /// isolated (its genuine signatures score lower than A's impostors). One global threshold
    /// on raw scores cannot serve both; z-norm puts both impostor distributions at 0 ± 1.
    #[test]
    fn normalisation_aligns_a_crowded_tight_writer_and_an_isolated_loose_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        // Cohort and impostors: around axis 0 (the crowd) with cosine ≈ 0.7 to it.
        let crowd = basis(0);
        let impostor = |rng: &mut ChaCha8Rng| near(rng, &crowd, 1.0);
        let cohort = Cohort::new((0..300).map(|_| impostor(&mut rng)).collect()).expect("cohort");
        let a_center: Vec<f32> = crowd.clone();
        let b_center = basis(1);
        let config = AdaptiveConfig::default();
        let refs_a: Vec<Template> = (0..3).map(|_| near(&mut rng, &a_center, 0.25)).collect();
        let refs_b: Vec<Template> = (0..3).map(|_| near(&mut rng, &b_center, 1.1)).collect();
        let model_a = WriterModel::fit(&refs_a, &cohort, &config).expect("fit");
        let model_b = WriterModel::fit(&refs_b, &cohort, &config).expect("fit");
        assert!(model_a.z_stats().mean > model_b.z_stats().mean + 0.4, "{model_a:?} {model_b:?}");

        let (mut raw_g, mut raw_i, mut z_g, mut z_i) = (vec![], vec![], vec![], vec![]);
        let mut z_imp_a = vec![];
        for _ in 0..200 {
            let (ga, gb) = (near(&mut rng, &a_center, 0.25), near(&mut rng, &b_center, 1.1));
            let (ia, ib) = (impostor(&mut rng), impostor(&mut rng));
            for (model, refs, g, i) in [(&model_a, &refs_a, ga, ia), (&model_b, &refs_b, gb, ib)] {
                raw_g.push(writer_score(refs, &g));
                raw_i.push(writer_score(refs, &i));
                z_g.push(model.score_method(ScoreMethod::ZNorm, refs, &g, None));
                z_i.push(model.score_method(ScoreMethod::ZNorm, refs, &i, None));
            }
            z_imp_a.push(*z_i.last().unwrap_or(&0.0));
        }
        let raw_eer = metrics::eer(&raw_g, &raw_i).eer;
        let z_eer = metrics::eer(&z_g, &z_i).eer;
        assert!(raw_eer > 0.05, "raw EER {raw_eer}");
        assert!(z_eer < raw_eer / 3.0, "z EER {z_eer} vs raw {raw_eer}");
        // Impostors against either writer are standardised.
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean(&z_i).abs() < 0.3, "{}", mean(&z_i));
        assert!(mean(&z_imp_a).abs() < 0.3);
    }

    #[test]
    fn model_bytes_round_trip_and_refuse_damage() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let cohort = Cohort::new((0..40).map(|_| near(&mut rng, &basis(0), 1.0)).collect()).expect("cohort");
        let refs: Vec<Template> = (0..3).map(|_| near(&mut rng, &basis(1), 0.5)).collect();
        let model = WriterModel::fit(&refs, &cohort, &AdaptiveConfig::default()).expect("fit");
        let bytes = model.to_bytes();
        assert_eq!(bytes.len(), WriterModel::BYTES);
        assert_eq!(WriterModel::from_bytes(&bytes), Ok(model));
        assert!(WriterModel::from_bytes(&bytes[..WriterModel::BYTES - 1]).is_err());
        for (at, value) in [(0, f32::NAN), (4, 0.0), (4, -1.0), (8, f32::INFINITY), (12 + 4 * 77, f32::NAN)] {
            let mut b = bytes;
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(matches!(WriterModel::from_bytes(&b), Err(AdaptiveError::BadModel(_))), "{at} {value}");
        }
    }

    #[test]
    fn cohort_bytes_round_trip_and_refuse_damage() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let cohort = Cohort::new((0..5).map(|_| near(&mut rng, &basis(0), 1.0)).collect()).expect("cohort");
        let bytes = cohort.to_bytes();
        assert_eq!(Cohort::from_bytes(&bytes), Ok(cohort));
        for n in 0..bytes.len() {
            assert!(Cohort::from_bytes(&bytes[..n]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Cohort::from_bytes(&b).is_err(), "byte {i}");
        }
    }

    fn samples() -> (Vec<EmbeddedSample>, Cohort) {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let mut out = Vec::new();
        let mut background = Vec::new();
        for w in 0..12 {
            let center = basis(w * 7);
            let spread = if w % 2 == 0 { 0.4 } else { 0.9 };
            for k in 0..14 {
                let label = if k < 11 { Label::Genuine } else { Label::Forged };
                let t = near(&mut rng, &center, if label == Label::Genuine { spread } else { 1.4 });
                let s = EmbeddedSample { writer: format!("w{w:02}"), label, template: t };
                if w < 4 { background.push(s) } else { out.push(s) }
            }
        }
        let cohort = Cohort::from_samples(&background, 30, 1).expect("cohort");
        (out, cohort)
    }

    #[test]
    fn method_scores_match_the_protocol_and_count_alike() {
        let (samples, cohort) = samples();
        assert_eq!(cohort.len(), 30);
        let config = AdaptiveConfig::default();
        let all = method_scores(&samples, &cohort, 5, 9, &config);
        let reference = protocol::verification_scores(&samples, 5, 9);
        assert_eq!(all.iter().map(|m| m.method).collect::<Vec<_>>(), ScoreMethod::ALL);
        let nearest = &all[0].scores;
        assert_eq!(nearest.genuine, reference.genuine);
        assert_eq!(nearest.skilled, reference.skilled);
        assert_eq!(nearest.random, reference.random);
        assert_eq!(nearest.genuine_max_reference, reference.genuine_max_reference);
        assert_eq!(nearest.max_genuine_pair_similarity, reference.max_genuine_pair_similarity);
        for m in &all {
            assert_eq!(m.scores.writers, 8);
            assert_eq!(m.scores.genuine.len(), 8 * 6);
            assert_eq!(m.scores.skilled.len(), 8 * 3);
            assert_eq!(m.scores.random.len(), 8 * 7 * 11);
            assert!(m.scores.genuine.iter().chain(&m.scores.random).all(|s| s.is_finite()), "{:?}", m.method);
        }
        // The protocol's scores by method are what a fitted model gives directly.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut genuine: Vec<&EmbeddedSample> =
            samples.iter().filter(|s| s.writer == "w04" && s.label == Label::Genuine).collect();
        genuine.shuffle(&mut rng);
        let refs: Vec<Template> = genuine[..5].iter().map(|s| s.template).collect();
        let model = WriterModel::fit(&refs, &cohort, &config).expect("fit");
        for m in &all {
            let direct = model.score_method(m.method, &refs, &genuine[5].template, Some(&cohort));
            assert_eq!(direct, m.scores.genuine[0], "{:?}", m.method);
        }
    }

    #[test]
    fn compare_rules_reports_every_method_and_reference_count() {
        let (samples, cohort) = samples();
        let (val, test): (Vec<_>, Vec<_>) = samples.into_iter().partition(|s| s.writer.as_str() < "w08");
        let cmp = compare_rules(&val, &test, &cohort, &[1, 3, 5, 10], 3);
        assert_eq!(cmp.rows.len(), 4 * ScoreMethod::ALL.len());
        for row in &cmp.rows {
            assert_eq!(row.validation_writers, 4);
            assert_eq!(row.test.writers, 4);
            // Every rule is also calibrated at the nearest rule's forgery acceptance.
            let skilled = row.thresholds.and_then(|t| t.skilled).expect("skilled thresholds");
            assert!(skilled.nearest_eer_far.is_some_and(f32::is_finite), "{:?}", row.method);
            assert!(row.test.skilled.is_some_and(|m| m.at_validation_nearest_eer_far_threshold.is_some()));
            let (s, r) = (row.skilled_eer().expect("skilled"), row.random_eer().expect("random"));
            assert!((0.0..=1.0).contains(&s) && (0.0..=1.0).contains(&r));
        }
        // These writers are well apart: random EER is 0 for every method with 5 references.
        for row in cmp.rows.iter().filter(|r| r.references == 5) {
            assert!(row.random_eer() < Some(0.02), "{:?} {:?}", row.method, row.random_eer());
        }
        let json = serde_json::to_string(&cmp).expect("json");
        assert!(json.contains("\"s-norm\"") && json.contains("\"classifier\""));
        let table = cmp.to_markdown();
        assert_eq!(table.lines().count(), 2 + 4 * ScoreMethod::ALL.len());
        eprintln!("{table}");
    }

    #[test]
    fn compare_rules_without_validation_writers_reports_no_rates() {
        let (samples, cohort) = samples();
        let cmp = compare_rules(&[], &samples, &cohort, &[3], 1);
        assert_eq!(cmp.rows.len(), ScoreMethod::ALL.len());
        for row in &cmp.rows {
            assert!(row.thresholds.is_none());
            assert_eq!(row.validation_writers, 0);
            let random = row.test.random.expect("test figures");
            assert!(random.eer.is_finite());
            assert!(random.at_validation_eer_threshold.far.is_nan());
        }
    }

    #[test]
    fn cholesky_solves_a_random_spd_system() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        // h = A·Aᵀ + I, lower triangle only.
        let a: Vec<[f64; D]> = (0..D).map(|_| core::array::from_fn(|_| rng.random_range(-1.0..1.0))).collect();
        let full: Vec<[f64; D]> =
            (0..D).map(|i| core::array::from_fn(|j| dot(&a[i], &a[j]) + f64::from(u8::from(i == j)))).collect();
        let lower: Vec<[f64; D]> =
            (0..D).map(|i| core::array::from_fn(|j| if j <= i { full[i][j] } else { f64::NAN })).collect();
        let g: [f64; D] = core::array::from_fn(|_| rng.random_range(-1.0..1.0));
        let x = solve_spd(lower, &g).expect("positive definite");
        for i in 0..D {
            assert!((dot(&full[i], &x) - g[i]).abs() < 1e-8, "row {i}");
        }
        let mut singular = vec![[0.0f64; D]; D];
        singular[0][0] = 1.0;
        assert!(solve_spd(singular, &g).is_none());
    }

    #[test]
    fn rules_serialise_in_kebab_case() {
        let json = serde_json::to_string(&[DecisionRule::Nearest, DecisionRule::Normalised, DecisionRule::Classifier])
            .expect("json");
        assert_eq!(json, r#"["nearest","normalised","classifier"]"#);
        let back: DecisionRule = serde_json::from_str("\"normalised\"").expect("parse");
        assert_eq!(back.method(), NORMALISED_METHOD);
        assert_eq!(DecisionRule::default(), DecisionRule::Nearest);
        assert_eq!(serde_json::to_string(&ScoreMethod::ZNorm).expect("json"), "\"z-norm\"");
        for m in ScoreMethod::ALL {
            assert_eq!(serde_json::to_string(&m).expect("json"), format!("\"{}\"", m.name()));
        }
    }

    /// Enrolment cost: `cargo test --release -p autograph-shared enrolment_timing -- --ignored
    /// --nocapture`. Target: 5 references against a 300-template cohort in under 50 ms.
    #[test]
    #[ignore = "timing; run with --release --ignored --nocapture"]
    fn enrolment_timing() {
        let mut rng = ChaCha8Rng::seed_from_u64(16);
        let cohort =
            Cohort::new((0..300).map(|_| near(&mut rng, &vec![0.0; EMBEDDING_DIM], 1.0)).collect()).expect("cohort");
        let refs: Vec<Template> = (0..5).map(|_| near(&mut rng, &basis(3), 0.6)).collect();
        let config = AdaptiveConfig::default();
        let runs = 20;
        let mut times = Vec::new();
        for _ in 0..runs {
            let start = std::time::Instant::now();
            let model = WriterModel::fit(&refs, &cohort, &config).expect("fit");
            times.push(start.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(model);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "enrolment fit (5 refs, cohort 300): median {:.2} ms, min {:.2} ms, max {:.2} ms",
            times[runs / 2],
            times[0],
            times[runs - 1]
        );
        let probe = near(&mut rng, &basis(3), 0.6);
        let model = WriterModel::fit(&refs, &cohort, &config).expect("fit");
        let start = std::time::Instant::now();
        let mut acc = 0.0f32;
        for _ in 0..1000 {
            acc += model.score(DecisionRule::Normalised, &refs, &probe, Some(&cohort));
        }
        eprintln!("normalised verify score: {:.1} µs each ({acc})", start.elapsed().as_secs_f64() * 1e3);
    }
}
