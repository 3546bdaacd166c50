//! [`DynamicTemplate`]: a writer model built at enrolment from a few genuine trajectories,
//! with no training machine, and the score of a probe against it.
//!
//! The recipe of the SVC2004 winners (Kholmatov & Yanikoglu 2005): DTW distances from the
//! probe to each reference are divided by the references' own spread (their average pairwise
//! or nearest-neighbour distance). A writer who varies a lot is allowed more distance, a very
//! consistent one less, so one global threshold serves every writer. The score is
//! `1 / (1 + normalised distance)`, in `(0, 1]`, higher = more genuine, ready to be fused with
//! the image model's cosine similarity.

use serde::Serialize;

use super::dtw::{DtwScratch, Metric, dtw};
use super::features::{FeatureError, FeatureSequence, FeatureSet, extract};
use super::trajectory::Trajectory;

/// Fewest references: the spread needs at least one pair.
pub const MIN_REFERENCES: usize = 2;
/// Most references a template holds (bounds enrolment time and template size).
pub const MAX_REFERENCES: usize = 16;
/// Largest accepted `max_len` (rows per stored reference).
pub const MAX_SEQUENCE_LEN: usize = 4096;
/// Stored feature values are `round(v * 24)` in an `i8`: ±5.3 standard deviations at 0.04
/// resolution, far finer than a writer's own variation, a quarter of the size of `f32`.
pub const QUANT_SCALE: f32 = 24.0;

const MAGIC: &[u8; 4] = b"AGDT";
/// Template byte format version written and read by this build.
pub const TEMPLATE_VERSION: u16 = 1;
const HEADER_BYTES: usize = 28;

/// How a probe's DTW distances to the references become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreNormalisation {
    /// Mean distance to the references, not normalised (the baseline the others must beat).
    None,
    /// Mean distance / the references' average pairwise distance.
    Mean,
    /// Nearest distance / the references' average nearest-neighbour distance.
    Min,
    /// The average of [`ScoreNormalisation::Mean`] and [`ScoreNormalisation::Min`].
    MeanMin,
}

/// Everything that decides a template's scores; stored with the template.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DynamicSettings {
    pub features: FeatureSet,
    /// Average this many 100 Hz samples into one row (2: 50 Hz).
    pub downsample: u8,
    /// Rows at most per signature (longer ones are averaged further): bounds verify time.
    pub max_len: u16,
    /// Sakoe-Chiba half-width as a fraction of the longer sequence (`>= 1`: none).
    pub band: f32,
    pub metric: Metric,
    pub normalisation: ScoreNormalisation,
}

impl Default for DynamicSettings {
    /// Fixed from the literature before any run; the validation sweep
    /// ([`super::evaluation::sweep_candidates`]) found no variant clearly better on both corpora.
    fn default() -> Self {
        Self {
            features: FeatureSet::ALL,
            downsample: 2,
            max_len: 512,
            band: 0.15,
            metric: Metric::L1,
            normalisation: ScoreNormalisation::MeanMin,
        }
    }
}

impl DynamicSettings {
    /// Features of a trajectory as these settings compute them.
    pub fn features_of(&self, trajectory: &Trajectory) -> Result<FeatureSequence, FeatureError> {
        extract(trajectory, self.features, usize::from(self.downsample), usize::from(self.max_len))
    }
}

/// A probe's score against a template, with the distances behind it (for logs and fusion).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DynamicScore {
    /// `1 / (1 + distance)`: higher = more genuine.
    pub score: f32,
    /// The normalised distance the score comes from.
    pub distance: f32,
    /// Mean DTW distance to the references.
    pub mean_distance: f32,
    /// DTW distance to the nearest reference.
    pub min_distance: f32,
}

/// Why a template could not be built, used or read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{found} references given, at least {MIN_REFERENCES} are needed")]
    TooFewReferences { found: usize },
    #[error("{found} references given, at most {MAX_REFERENCES} are kept")]
    TooManyReferences { found: usize },
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error("setting {field} = {value} is not usable")]
    BadSettings { field: &'static str, value: String },
    #[error("not a dynamic template (bad magic)")]
    BadMagic,
    #[error("dynamic template version {found} is not supported (this build reads version {TEMPLATE_VERSION})")]
    UnsupportedVersion { found: u16 },
    #[error("dynamic template truncated: {needed} bytes needed, {found} present")]
    Truncated { needed: usize, found: usize },
    #[error("dynamic template has {extra} unexpected trailing bytes")]
    TrailingBytes { extra: usize },
    #[error("dynamic template field {field} = {value} is invalid")]
    BadField { field: &'static str, value: String },
}

/// A writer's on-line model: quantised reference feature sequences and their spread.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicTemplate {
    settings: DynamicSettings,
    references: Vec<FeatureSequence>,
    /// Average DTW distance over pairs of references.
    mean_pairwise: f32,
    /// Average over references of the distance to their nearest other reference.
    mean_nearest: f32,
}

impl DynamicTemplate {
    /// Enrols a writer from genuine `references`. Pressure features are dropped when any
    /// reference lacks pressure, so a touch screen still enrols.
    pub fn enrol(references: &[Trajectory], settings: &DynamicSettings) -> Result<Self, TemplateError> {
        let mut settings = *settings;
        if references.iter().any(|r| r.pressure().is_none()) {
            settings.features = settings.features.without_pressure();
        }
        check_settings(&settings)?;
        if references.len() > MAX_REFERENCES {
            return Err(TemplateError::TooManyReferences { found: references.len() });
        }
        let features = references.iter().map(|r| settings.features_of(r)).collect::<Result<Vec<_>, _>>()?;
        Self::from_features(features, &settings)
    }

    /// Enrols from feature sequences already computed with `settings` (the evaluation extracts
    /// each signature's features once). They are quantised exactly as [`Self::to_bytes`] stores
    /// them, so a template scores the same before and after a round trip.
    pub fn from_features(
        mut references: Vec<FeatureSequence>,
        settings: &DynamicSettings,
    ) -> Result<Self, TemplateError> {
        check_settings(settings)?;
        if references.len() < MIN_REFERENCES {
            return Err(TemplateError::TooFewReferences { found: references.len() });
        }
        if references.len() > MAX_REFERENCES {
            return Err(TemplateError::TooManyReferences { found: references.len() });
        }
        let dim = settings.features.dim();
        for r in &mut references {
            if r.dim() != dim || r.is_empty() || r.len() > usize::from(settings.max_len) {
                return Err(TemplateError::BadField { field: "reference", value: format!("{}x{}", r.len(), r.dim()) });
            }
            for v in r.as_mut_slice() {
                *v = dequantise(quantise(*v));
            }
        }
        let mut template = Self { settings: *settings, references, mean_pairwise: 0.0, mean_nearest: 0.0 };
        template.compute_spread();
        Ok(template)
    }

    fn compute_spread(&mut self) {
        let k = self.references.len();
        let mut scratch = DtwScratch::default();
        let mut d = vec![0f32; k * k];
        for i in 0..k {
            for j in i + 1..k {
                let v = self.distance(&self.references[i], &self.references[j], &mut scratch);
                d[i * k + j] = v;
                d[j * k + i] = v;
            }
        }
        let pairs = (k * (k - 1) / 2).max(1) as f32;
        let total: f32 = (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).map(|(i, j)| d[i * k + j]).sum();
        let nearest: f32 =
            (0..k).map(|i| (0..k).filter(|&j| j != i).map(|j| d[i * k + j]).fold(f32::INFINITY, f32::min)).sum::<f32>()
                / k as f32;
        // A floor so identical references (or a replayed enrolment) cannot divide by zero.
        let floor = 0.01 * self.settings.features.dim() as f32;
        self.mean_pairwise = (total / pairs).max(floor);
        self.mean_nearest = nearest.max(floor);
    }

    fn distance(&self, a: &FeatureSequence, b: &FeatureSequence, scratch: &mut DtwScratch) -> f32 {
        dtw(a, b, self.settings.band, self.settings.metric, scratch)
    }

    /// The settings this template scores with (its feature set may lack pressure features).
    pub fn settings(&self) -> &DynamicSettings {
        &self.settings
    }

    pub fn reference_count(&self) -> usize {
        self.references.len()
    }

    /// The stored (quantised) reference feature sequences.
    pub fn references(&self) -> &[FeatureSequence] {
        &self.references
    }

    /// Length of [`Self::to_bytes`], without building it.
    pub fn byte_len(&self) -> usize {
        HEADER_BYTES + self.references.iter().map(|r| 2 + r.len() * r.dim()).sum::<usize>()
    }

    /// This template with more genuine references added (an appending enrolment). They are
    /// featurised with this template's settings, so a template without pressure features stays
    /// without; a probe set that lacks what the template uses is an error.
    pub fn extended(&self, more: &[Trajectory]) -> Result<Self, TemplateError> {
        let mut references = self.references.clone();
        for t in more {
            references.push(self.settings.features_of(t)?);
        }
        Self::from_features(references, &self.settings)
    }

    /// The references' average pairwise DTW distance.
    pub fn mean_pairwise(&self) -> f32 {
        self.mean_pairwise
    }

    /// The references' average nearest-neighbour DTW distance.
    pub fn mean_nearest(&self) -> f32 {
        self.mean_nearest
    }

    /// Scores a probe trajectory.
    pub fn verify(&self, probe: &Trajectory) -> Result<DynamicScore, TemplateError> {
        self.verify_with(probe, &mut DtwScratch::default())
    }

    /// [`Self::verify`] reusing DTW buffers (for a loop over many probes).
    pub fn verify_with(&self, probe: &Trajectory, scratch: &mut DtwScratch) -> Result<DynamicScore, TemplateError> {
        let features = self.settings.features_of(probe)?;
        Ok(self.score_features(&features, scratch))
    }

    /// Scores a probe whose features were computed with [`Self::settings`].
    pub fn score_features(&self, probe: &FeatureSequence, scratch: &mut DtwScratch) -> DynamicScore {
        let mut sum = 0f32;
        let mut min = f32::INFINITY;
        for r in &self.references {
            let d = self.distance(probe, r, scratch);
            sum += d;
            min = min.min(d);
        }
        let mean = sum / self.references.len() as f32;
        let distance = match self.settings.normalisation {
            ScoreNormalisation::None => mean,
            ScoreNormalisation::Mean => mean / self.mean_pairwise,
            ScoreNormalisation::Min => min / self.mean_nearest,
            ScoreNormalisation::MeanMin => 0.5 * (mean / self.mean_pairwise + min / self.mean_nearest),
        };
        let score = if distance.is_finite() { 1.0 / (1.0 + distance.max(0.0)) } else { 0.0 };
        DynamicScore { score, distance, mean_distance: mean, min_distance: min }
    }

    /// The template as bytes (little-endian, versioned): a 28-byte header, then per reference
    /// its row count (u16) and its `i8` features. About 1 KB per second of signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let s = &self.settings;
        let dim = s.features.dim();
        let rows: usize = self.references.iter().map(FeatureSequence::len).sum();
        let mut out = Vec::with_capacity(HEADER_BYTES + 2 * self.references.len() + rows * dim);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&TEMPLATE_VERSION.to_le_bytes());
        out.extend_from_slice(&s.features.bits().to_le_bytes());
        out.push(metric_code(s.metric));
        out.push(normalisation_code(s.normalisation));
        out.push(s.downsample);
        out.push(self.references.len() as u8);
        out.extend_from_slice(&s.max_len.to_le_bytes());
        out.extend_from_slice(&(dim as u16).to_le_bytes());
        out.extend_from_slice(&s.band.to_le_bytes());
        out.extend_from_slice(&self.mean_pairwise.to_le_bytes());
        out.extend_from_slice(&self.mean_nearest.to_le_bytes());
        for r in &self.references {
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend(r.as_slice().iter().map(|&v| quantise(v) as u8));
        }
        out
    }

    /// Reads [`Self::to_bytes`]'s format, checking every field and the exact length, so a
    /// corrupt gallery entry is refused rather than scored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TemplateError> {
        let truncated = |needed: usize| TemplateError::Truncated { needed, found: bytes.len() };
        if bytes.len() < 4 {
            return Err(truncated(HEADER_BYTES));
        }
        if &bytes[..4] != MAGIC {
            return Err(TemplateError::BadMagic);
        }
        if bytes.len() < 6 {
            return Err(truncated(HEADER_BYTES));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != TEMPLATE_VERSION {
            return Err(TemplateError::UnsupportedVersion { found: version });
        }
        if bytes.len() < HEADER_BYTES {
            return Err(truncated(HEADER_BYTES));
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let f32_at = |at: usize| f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let bad = |field: &'static str, value: String| TemplateError::BadField { field, value };
        let bits = u16_at(6);
        let features = FeatureSet::from_bits(bits).ok_or_else(|| bad("features", format!("{bits:#06x}")))?;
        let metric = match bytes[8] {
            0 => Metric::L1,
            1 => Metric::Euclidean,
            v => return Err(bad("metric", v.to_string())),
        };
        let normalisation = match bytes[9] {
            0 => ScoreNormalisation::None,
            1 => ScoreNormalisation::Mean,
            2 => ScoreNormalisation::Min,
            3 => ScoreNormalisation::MeanMin,
            v => return Err(bad("normalisation", v.to_string())),
        };
        let settings = DynamicSettings {
            features,
            downsample: bytes[10],
            max_len: u16_at(12),
            band: f32_at(16),
            metric,
            normalisation,
        };
        check_settings(&settings).map_err(|e| match e {
            TemplateError::BadSettings { field, value } => bad(field, value),
            other => other,
        })?;
        let count = usize::from(bytes[11]);
        if !(MIN_REFERENCES..=MAX_REFERENCES).contains(&count) {
            return Err(bad("reference count", count.to_string()));
        }
        let dim = usize::from(u16_at(14));
        if dim != features.dim() {
            return Err(bad("dim", dim.to_string()));
        }
        let (mean_pairwise, mean_nearest) = (f32_at(20), f32_at(24));
        for (field, v) in [("mean pairwise distance", mean_pairwise), ("mean nearest distance", mean_nearest)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(field, v.to_string()));
            }
        }
        let mut at = HEADER_BYTES;
        let mut references = Vec::with_capacity(count);
        for _ in 0..count {
            if bytes.len() < at + 2 {
                return Err(truncated(at + 2));
            }
            let rows = usize::from(u16_at(at));
            if rows == 0 || rows > usize::from(settings.max_len) {
                return Err(bad("reference rows", rows.to_string()));
            }
            at += 2;
            let end = at + rows * dim;
            let data = bytes.get(at..end).ok_or_else(|| truncated(end))?;
            // -128 is never written (quantise clamps to ±127): such a file was not made here,
            // and would not read back to itself (found by fuzzing).
            if data.contains(&0x80) {
                return Err(bad("feature value", "-128".into()));
            }
            let values = data.iter().map(|&b| dequantise(b as i8)).collect();
            references.push(FeatureSequence::new(dim, values).ok_or_else(|| bad("dim", dim.to_string()))?);
            at = end;
        }
        if at != bytes.len() {
            return Err(TemplateError::TrailingBytes { extra: bytes.len() - at });
        }
        Ok(Self { settings, references, mean_pairwise, mean_nearest })
    }
}

fn check_settings(s: &DynamicSettings) -> Result<(), TemplateError> {
    let bad = |field: &'static str, value: String| Err(TemplateError::BadSettings { field, value });
    if s.features.is_empty() {
        return Err(FeatureError::NoFeatures.into());
    }
    if s.downsample == 0 {
        return bad("downsample", "0".into());
    }
    if s.max_len == 0 || usize::from(s.max_len) > MAX_SEQUENCE_LEN {
        return bad("max_len", s.max_len.to_string());
    }
    if !(s.band.is_finite() && s.band >= 0.0) {
        return bad("band", s.band.to_string());
    }
    Ok(())
}

fn quantise(v: f32) -> i8 {
    (v * QUANT_SCALE).round().clamp(-127.0, 127.0) as i8
}

fn dequantise(q: i8) -> f32 {
    f32::from(q) / QUANT_SCALE
}

fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::L1 => 0,
        Metric::Euclidean => 1,
    }
}

fn normalisation_code(n: ScoreNormalisation) -> u8 {
    match n {
        ScoreNormalisation::None => 0,
        ScoreNormalisation::Mean => 1,
        ScoreNormalisation::Min => 2,
        ScoreNormalisation::MeanMin => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::trajectory::{PenSample, Timing};

    /// A loop-and-tail "signature"; `style` changes the shape (another writer or a forger),
    /// `wobble` the small variation between one writer's signatures.
    fn signature(style: f32, wobble: f32, pressure: bool) -> Trajectory {
        let n = 180;
        let stroke: Vec<PenSample> = (0..n)
            .map(|i| {
                let t = i as f32 / n as f32;
                let a = t * std::f32::consts::TAU * (2.0 + style);
                PenSample {
                    x: 100.0 * t + 20.0 * a.cos() + wobble * (t * 9.0).sin(),
                    y: 30.0 * (a * (1.0 + 0.3 * style)).sin() + wobble * (t * 7.0).cos(),
                    t_ms: f64::from(i) * (10.0 + f64::from(wobble)),
                    pressure: 0.4 + 0.3 * (t * 5.0 + style).sin().abs(),
                }
            })
            .collect();
        Trajectory::from_strokes(&[stroke], Timing::Timestamps, pressure).expect("trajectory")
    }

    fn template(pressure: bool) -> DynamicTemplate {
        let refs: Vec<Trajectory> = (0..5).map(|k| signature(0.0, k as f32 * 0.6, pressure)).collect();
        DynamicTemplate::enrol(&refs, &DynamicSettings::default()).expect("enrol")
    }

    #[test]
    fn a_stored_feature_of_minus_128_is_refused() {
        let refs: Vec<Trajectory> = (0..2).map(|k| signature(0.0, 1.0 + k as f32, true)).collect();
        let t = DynamicTemplate::enrol(&refs, &DynamicSettings::default()).expect("enrol");
        let mut bytes = t.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] = 0x80;
        assert!(matches!(DynamicTemplate::from_bytes(&bytes), Err(TemplateError::BadField { .. })));
    }

    #[test]
    fn extended_templates_and_byte_len() {
        let refs: Vec<Trajectory> = (0..2).map(|k| signature(0.0, 1.0 + k as f32, true)).collect();
        let t = DynamicTemplate::enrol(&refs, &DynamicSettings::default()).expect("enrol");
        assert_eq!(t.byte_len(), t.to_bytes().len());
        let more = t.extended(&[signature(0.0, 3.0, true)]).expect("extend");
        assert_eq!(more.reference_count(), 3);
        assert_eq!(&more.references()[..2], t.references());
        assert_eq!(more.byte_len(), more.to_bytes().len());
        let all: Vec<Trajectory> = (0..3).map(|k| signature(0.0, 1.0 + k as f32, true)).collect();
        assert_eq!(more, DynamicTemplate::enrol(&all, &DynamicSettings::default()).expect("enrol"));
        // A template with pressure features cannot take a probe set without pressure.
        assert!(t.extended(&[signature(0.0, 3.0, false)]).is_err());
    }

    #[test]
    fn genuine_scores_above_forgeries() {
        let t = template(true);
        assert_eq!(t.reference_count(), 5);
        let genuine = t.verify(&signature(0.0, 1.5, true)).expect("verify");
        let forged = t.verify(&signature(0.4, 1.0, true)).expect("verify");
        let other = t.verify(&signature(1.5, 0.5, true)).expect("verify");
        assert!(genuine.score > forged.score && forged.score > other.score, "{genuine:?} {forged:?} {other:?}");
        assert!(genuine.score > 0.0 && genuine.score <= 1.0);
        assert!(genuine.min_distance <= genuine.mean_distance);
    }

    #[test]
    fn every_normalisation_ranks_genuine_first() {
        let refs: Vec<Trajectory> = (0..4).map(|k| signature(0.0, k as f32 * 0.6, true)).collect();
        for normalisation in
            [ScoreNormalisation::None, ScoreNormalisation::Mean, ScoreNormalisation::Min, ScoreNormalisation::MeanMin]
        {
            let settings = DynamicSettings { normalisation, ..DynamicSettings::default() };
            let t = DynamicTemplate::enrol(&refs, &settings).expect("enrol");
            let g = t.verify(&signature(0.0, 1.3, true)).expect("verify").score;
            let f = t.verify(&signature(0.5, 1.3, true)).expect("verify").score;
            assert!(g > f, "{normalisation:?}: {g} <= {f}");
        }
    }

    #[test]
    fn bytes_round_trip_and_score_the_same() {
        let t = template(true);
        let bytes = t.to_bytes();
        let back = DynamicTemplate::from_bytes(&bytes).expect("from bytes");
        assert_eq!(back, t);
        let probe = signature(0.1, 0.9, true);
        assert_eq!(back.verify(&probe).expect("verify"), t.verify(&probe).expect("verify"));
        // Compact: one byte per feature value, plus headers.
        let rows: usize = t.references.iter().map(FeatureSequence::len).sum();
        assert_eq!(bytes.len(), 28 + 5 * 2 + rows * 10);
    }

    #[test]
    fn corrupt_bytes_are_refused() {
        let bytes = template(true).to_bytes();
        let err = |b: &[u8]| DynamicTemplate::from_bytes(b).expect_err("should fail");
        assert!(matches!(err(b"AG"), TemplateError::Truncated { .. }));
        assert!(matches!(err(b"NOPE and more bytes than a header has...."), TemplateError::BadMagic));
        let mut v = bytes.clone();
        v[4] = 9;
        assert!(matches!(err(&v), TemplateError::UnsupportedVersion { found: 9 }));
        assert!(matches!(err(&bytes[..20]), TemplateError::Truncated { .. }));
        assert!(matches!(err(&bytes[..bytes.len() - 1]), TemplateError::Truncated { .. }));
        let mut v = bytes.clone();
        v.push(0);
        assert!(matches!(err(&v), TemplateError::TrailingBytes { extra: 1 }));
        let mut v = bytes.clone();
        v[11] = 200;
        assert!(matches!(err(&v), TemplateError::BadField { field: "reference count", .. }));
        let mut v = bytes.clone();
        v[6..8].copy_from_slice(&0x8000u16.to_le_bytes());
        assert!(matches!(err(&v), TemplateError::BadField { field: "features", .. }));
        let mut v = bytes.clone();
        v[14] = 3;
        assert!(matches!(err(&v), TemplateError::BadField { field: "dim", .. }));
        let mut v = bytes.clone();
        v[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(err(&v), TemplateError::BadField { field: "mean pairwise distance", .. }));
        let mut v = bytes.clone();
        v[28..30].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(err(&v), TemplateError::BadField { field: "reference rows", .. }));
        let mut v = bytes;
        v[16..20].copy_from_slice(&(-1f32).to_le_bytes());
        assert!(matches!(err(&v), TemplateError::BadField { field: "band", .. }));
    }

    #[test]
    fn pens_without_pressure_enrol_without_pressure_features() {
        let t = template(false);
        assert!(!t.settings().features.needs_pressure());
        assert!(t.verify(&signature(0.0, 0.7, true)).is_ok(), "a probe with pressure still scores");
        let with = template(true);
        assert!(matches!(
            with.verify(&signature(0.0, 0.7, false)),
            Err(TemplateError::Feature(FeatureError::PressureMissing))
        ));
    }

    #[test]
    fn reference_counts_are_bounded() {
        let one = vec![signature(0.0, 0.0, true)];
        assert!(matches!(
            DynamicTemplate::enrol(&one, &DynamicSettings::default()),
            Err(TemplateError::TooFewReferences { found: 1 })
        ));
        let many = vec![signature(0.0, 0.0, true); MAX_REFERENCES + 1];
        assert!(matches!(
            DynamicTemplate::enrol(&many, &DynamicSettings::default()),
            Err(TemplateError::TooManyReferences { .. })
        ));
        let bad = DynamicSettings { band: f32::NAN, ..DynamicSettings::default() };
        assert!(matches!(DynamicTemplate::enrol(&one, &bad), Err(TemplateError::BadSettings { field: "band", .. })));
    }
}
