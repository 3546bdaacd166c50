//! The fixed-capacity gallery of enrolled writers, its scoring rules, and its file format.
//!
//! A writer is enrolled as a handful of int8 [`Template`]s (quantised, L2-normalised embeddings).
//! The score of a probe against a writer is its similarity to the **nearest** of that writer's
//! templates ([`writer_score`]); the device ([`Gallery::verify_score`], [`Gallery::top_k`]) and
//! the trainer's evaluation (calling [`writer_score`] directly) use this same function, and the
//! arithmetic is integer up to one final division, so both get bit-identical scores.
//!
//! Nearest rather than mean: a writer's genuine signatures vary, and a probe that closely
//! matches one reference is better evidence than one that is middling to all. On the
//! validation writers of twelve writer-disjoint splits of SVC2004 and CEDAR it lowered the
//! skilled-forgery EER by about 3 points on each against the mean (`docs/evaluation.md` has
//! the comparison).
//!
//! A writer may also hold a [`WriterModel`] fitted at enrolment against the model bundle's
//! [`Cohort`] (see [`crate::adaptive`]): it lets the kiosk decide by a writer-adaptive
//! [`DecisionRule`] ([`Gallery::verify_score_with`]). Writers without one (no cohort in the
//! bundle, or read from a version-1 file) are scored by the nearest rule, and the result says
//! so ([`RuleScore::rule`]); [`Gallery::fit_models`] fits the missing models from the stored
//! templates, so nobody needs to enrol again. Identification ([`Gallery::top_k`]) always ranks
//! by the nearest rule.
//!
//! Storage is `heapless`: nothing on the verify/identify path allocates. A [`KioskGallery`] is
//! about 1.7 MiB, so build it with [`Gallery::new_boxed`] (or [`Gallery::from_bytes`], which
//! returns a `Box`) rather than on the stack.
//!
//! A writer enrolled from pen captures also holds a [`DynamicTemplate`] (its on-line model,
//! [`crate::online`]): a verification that comes with a trajectory fuses the two scores. The
//! dynamic template lives in the same entry, so it is written, checksummed and replaced with the
//! image templates; its references are capped at `TEMPLATES` like theirs. Unlike the rest of the
//! entry it is heap-allocated (its sequences vary in length), so only dynamic scoring allocates.
//!
//! # File format (version 3, all integers little-endian)
//!
//! ```text
//! header   magic            8 bytes  b"AGGALLRY"
//!          version          u32      3 (1 and 2 are still read)
//!          total_len        u64      length of the whole file, trailer included
//!          model_sha256     32 bytes sha256 of the model bundle the templates were made with
//!          embedding_dim    u32      128
//!          writer_capacity  u32      WRITERS of the build that wrote the file (informational)
//!          template_cap     u32      TEMPLATES of the build that wrote the file (informational)
//!          writer_count     u32
//! entries  (writer_count times, sorted by id, ids unique)
//!          id_len           u8       1..=64
//!          id               id_len bytes of UTF-8 (validated like any writer id)
//!          enrolled_at      u64      unix seconds of the first enrolment
//!          updated_at       u64      unix seconds of the last change
//!          template_count   u16      1..
//!          templates        template_count * embedding_dim bytes (i8)
//!          model_kind       u8       0: no writer model; 1: a WriterModel follows
//!                                    (version 2 only; absent from version-1 entries)
//!          model            WriterModel::BYTES (524) bytes when model_kind is 1:
//!                                    z mean, z std, bias, 128 weights, each f32
//!          dynamic_len      u32      0: no dynamic template; else that many bytes follow,
//!                                    at most MAX_DYNAMIC_BYTES (version 3 only)
//!          dynamic          DynamicTemplate::to_bytes (its own magic and version)
//! trailer  sha256           32 bytes over every byte before it
//! ```
//!
//! A version-1 file loads with no writer models and a version-1 or 2 file with no dynamic
//! templates (`GalleryHeader::version` says which); either is written back as version 3. A model whose values are not finite, or whose deviation is below
//! [`crate::adaptive::MIN_STD`], is refused ([`GalleryError::BadWriterModel`]) even under a
//! valid checksum.
//!
//! Per-writer statistics are derived from the templates and recomputed on load, so they can
//! never disagree with the templates they describe.

use core::cmp::Ordering;
use core::fmt;

use sha2::{Digest, Sha256};

use crate::adaptive::{AdaptiveConfig, AdaptiveError, Cohort, DecisionRule, ScoreMethod, WriterModel};
use crate::online::DynamicTemplate;

/// Length of an embedding and of a [`Template`].
pub const EMBEDDING_DIM: usize = 128;
/// Quantisation scale: a unit-norm embedding's components are multiplied by this and rounded.
pub const QUANT_SCALE: f32 = 127.0;
/// `QUANT_SCALE²`: the int8 dot product of two quantised unit vectors divided by this ≈ cosine.
const SCALE_SQ: f64 = 127.0 * 127.0;
/// Longest writer id, in bytes (UTF-8).
pub const MAX_ID_LEN: usize = 64;
/// A validated writer id.
pub type WriterId = heapless::String<MAX_ID_LEN>;
/// The gallery used on the kiosk: 1024 writers with up to 8 templates each (about 1.1 MiB).
pub type KioskGallery = Gallery<1024, 8>;

/// First bytes of a gallery file.
pub const GALLERY_MAGIC: [u8; 8] = *b"AGGALLRY";
/// The file format version this build writes (and the newest it reads).
pub const GALLERY_FORMAT_VERSION: u32 = 3;
/// The oldest file format version this build reads (version 1: no writer models).
pub const GALLERY_OLDEST_READABLE_VERSION: u32 = 1;
/// `model_kind` byte of an entry: no model, or a [`WriterModel`] follows.
const MODEL_NONE: u8 = 0;
const MODEL_V1: u8 = 1;
/// Largest stored [`DynamicTemplate`] of one writer: 8 references of 5 s at the default 50 Hz
/// and 10 features are 20 KB; the limit keeps a damaged length from asking for gigabytes and a
/// full kiosk gallery's file within [`Gallery::MAX_FILE_LEN`].
pub const MAX_DYNAMIC_BYTES: usize = 64 * 1024;
/// Length of the fixed-size header (see the module docs).
const HEADER_LEN: usize = 8 + 4 + 8 + 32 + 4 + 4 + 4 + 4;
/// Length of the trailing sha256.
const TRAILER_LEN: usize = 32;
/// Offsets of header fields.
const OFF_VERSION: usize = 8;
const OFF_TOTAL_LEN: usize = 12;
const OFF_MODEL: usize = 20;
const OFF_DIM: usize = 52;
const OFF_WRITER_CAP: usize = 56;
const OFF_TEMPLATE_CAP: usize = 60;
const OFF_WRITER_COUNT: usize = 64;

/// Everything that can go wrong building templates, changing a gallery, or reading its bytes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GalleryError {
    #[error("the embedding has {found} values, expected {expected}")]
    EmbeddingLength { expected: usize, found: usize },
    #[error("embedding value {index} is not a finite number")]
    NonFiniteEmbedding { index: usize },
    #[error("the embedding is all zeros and cannot be normalised")]
    ZeroEmbedding,
    #[error("invalid writer id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("no templates given")]
    NoTemplates,
    #[error("writer {id:?} would have {requested} templates, at most {capacity} are allowed")]
    WriterFull { id: String, requested: usize, capacity: usize },
    #[error("the gallery is full ({capacity} writers); remove a writer first")]
    GalleryFull { capacity: usize },
    #[error("not a gallery file (bad magic bytes)")]
    BadMagic,
    #[error("gallery format version {found} is not supported; this build reads versions 1 to {supported}")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("the gallery data is truncated: {expected} bytes expected, {found} present")]
    Truncated { expected: u64, found: u64 },
    #[error("the gallery checksum does not match (stored {stored}, computed {computed}): the data is damaged")]
    ChecksumMismatch { stored: String, computed: String },
    #[error("the gallery's embedding dimension is {found}, this build uses {expected}")]
    DimensionMismatch { found: u32, expected: u32 },
    #[error("the gallery holds {found} {what}, more than this build's capacity of {capacity}")]
    CapacityExceeded { what: &'static str, found: u64, capacity: usize },
    #[error(
        "the gallery's templates were made with model {found}, but the loaded model is {expected}; \
         the writers must be enrolled again with this model"
    )]
    ModelMismatch { expected: String, found: String },
    #[error("malformed gallery data: {0}")]
    Malformed(&'static str),
    #[error("the writer model of {id:?} is invalid ({reason}); enrol the writer again")]
    BadWriterModel { id: String, reason: String },
    #[error("the dynamic template of {id:?} is invalid ({reason}); enrol the writer's pen captures again")]
    BadDynamicTemplate { id: String, reason: String },
    #[error("writer {id:?} is not enrolled")]
    UnknownWriter { id: String },
    #[error(transparent)]
    Adaptive(#[from] AdaptiveError),
}

// ---------------------------------------------------------------------------------------------
// Templates and the scoring rule
// ---------------------------------------------------------------------------------------------

/// An int8-quantised, L2-normalised embedding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Template([i8; EMBEDDING_DIM]);

impl Template {
    /// Quantises an embedding: L2-normalises it (a no-op for the unit-norm embeddings the model
    /// emits), multiplies by [`QUANT_SCALE`], rounds, and clamps to `[-127, 127]`.
    pub fn from_embedding(embedding: &[f32]) -> Result<Self, GalleryError> {
        if embedding.len() != EMBEDDING_DIM {
            return Err(GalleryError::EmbeddingLength { expected: EMBEDDING_DIM, found: embedding.len() });
        }
        if let Some(index) = embedding.iter().position(|v| !v.is_finite()) {
            return Err(GalleryError::NonFiniteEmbedding { index });
        }
        let norm = embedding.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        if norm <= f64::MIN_POSITIVE || !norm.is_finite() {
            return Err(GalleryError::ZeroEmbedding);
        }
        let mut q = [0i8; EMBEDDING_DIM];
        for (dst, &v) in q.iter_mut().zip(embedding) {
            // In range after the clamp, so the cast is exact.
            *dst = (f64::from(v) / norm * f64::from(QUANT_SCALE)).round().clamp(-127.0, 127.0) as i8;
        }
        Ok(Self(q))
    }

    /// Wraps already-quantised values (as read from a file).
    pub const fn from_i8(values: [i8; EMBEDDING_DIM]) -> Self {
        Self(values)
    }

    /// The quantised values.
    pub const fn as_i8(&self) -> &[i8; EMBEDDING_DIM] {
        &self.0
    }

    /// The approximate unit-norm embedding this template stands for.
    pub fn to_f32(&self) -> [f32; EMBEDDING_DIM] {
        self.0.map(|v| f32::from(v) / QUANT_SCALE)
    }

    /// Same as [`similarity`].
    pub fn similarity(&self, other: &Template) -> f32 {
        similarity(self, other)
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?}, ..)", &self.0[..8])
    }
}

/// Lanes of independent i32 accumulators; `EMBEDDING_DIM` is a multiple, so there is no tail.
const LANES: usize = 32;
const _: () = assert!(EMBEDDING_DIM.is_multiple_of(LANES));

/// The raw int8 dot product (exact; at most 128·128² in magnitude, so it fits an i32).
#[inline]
pub fn dot_i8(a: &Template, b: &Template) -> i32 {
    let (ca, _) = a.0.as_chunks::<LANES>();
    let (cb, _) = b.0.as_chunks::<LANES>();
    let mut acc = [0i32; LANES];
    for (xa, xb) in ca.iter().zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += i32::from(x) * i32::from(y);
        }
    }
    acc.iter().sum()
}

/// Similarity of two templates: int8 dot product / 127², which approximates their cosine.
#[inline]
pub fn similarity(a: &Template, b: &Template) -> f32 {
    (f64::from(dot_i8(a, b)) / SCALE_SQ) as f32
}

/// The score of `probe` against a writer's references: its similarity to the nearest one.
/// The one scoring rule used by [`Gallery`] and by evaluation code. `NaN` for no references
/// (a `NaN` score passes no threshold).
pub fn writer_score(references: &[Template], probe: &Template) -> f32 {
    max_similarity(references, probe)
}

/// The highest similarity of `probe` to any of `references`; `NaN` for no references.
pub fn max_similarity(references: &[Template], probe: &Template) -> f32 {
    match references.iter().map(|r| dot_i8(r, probe)).max() {
        Some(best) => (f64::from(best) / SCALE_SQ) as f32,
        None => f32::NAN,
    }
}

/// Statistics of the similarities among one writer's own references (all pairs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WriterStats {
    /// Mean pairwise similarity.
    pub mean: f32,
    /// Population standard deviation of the pairwise similarities.
    pub std: f32,
    /// Number of pairs (n·(n−1)/2).
    pub pairs: u32,
}

impl WriterStats {
    /// Pairwise statistics; `None` with fewer than two references.
    pub fn of(references: &[Template]) -> Option<Self> {
        let mut pairs = 0u32;
        let (mut sum, mut sum_sq) = (0i64, 0i128);
        for (i, a) in references.iter().enumerate() {
            for b in &references[i + 1..] {
                let d = i64::from(dot_i8(a, b));
                sum += d;
                sum_sq += i128::from(d * d);
                pairs += 1;
            }
        }
        if pairs == 0 {
            return None;
        }
        let n = f64::from(pairs);
        let mean = sum as f64 / n;
        let var = (sum_sq as f64 / n - mean * mean).max(0.0);
        Some(Self { mean: (mean / SCALE_SQ) as f32, std: (var.sqrt() / SCALE_SQ) as f32, pairs })
    }
}

/// Checks a writer id: 1..=64 bytes, no control characters, no whitespace other than inner
/// plain spaces.
pub fn validate_id(id: &str) -> Result<(), GalleryError> {
    let bad = |reason| Err(GalleryError::InvalidId { id: id.to_owned(), reason });
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("it is longer than 64 bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if id.chars().any(|c| c.is_whitespace() && c != ' ') {
        return bad("it contains whitespace other than plain spaces");
    }
    if id.starts_with(' ') || id.ends_with(' ') {
        return bad("it starts or ends with a space");
    }
    Ok(())
}

fn make_id(id: &str) -> Result<WriterId, GalleryError> {
    validate_id(id)?;
    WriterId::try_from(id)
        .map_err(|_| GalleryError::InvalidId { id: id.to_owned(), reason: "it is longer than 64 bytes" })
}

// ---------------------------------------------------------------------------------------------
// Writers and the gallery
// ---------------------------------------------------------------------------------------------

/// One enrolled writer.
#[derive(Clone, PartialEq)]
pub struct WriterEntry<const TEMPLATES: usize> {
    id: WriterId,
    templates: heapless::Vec<Template, TEMPLATES>,
    enrolled_at: u64,
    updated_at: u64,
    stats: Option<WriterStats>,
    model: Option<WriterModel>,
    dynamic: Option<DynamicTemplate>,
}

impl<const TEMPLATES: usize> WriterEntry<TEMPLATES> {
    pub fn id(&self) -> &str {
        self.id.as_str()
    }
    /// The reference templates (never empty).
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }
    /// Unix seconds of the first enrolment (reset by a replacing enrolment).
    pub fn enrolled_at(&self) -> u64 {
        self.enrolled_at
    }
    /// Unix seconds of the last enrolment that changed this writer.
    pub fn updated_at(&self) -> u64 {
        self.updated_at
    }
    /// Similarity statistics among the references; `None` with a single reference.
    pub fn stats(&self) -> Option<WriterStats> {
        self.stats
    }
    /// The score of `probe` against this writer ([`writer_score`]).
    pub fn score(&self, probe: &Template) -> f32 {
        writer_score(&self.templates, probe)
    }
    /// The writer-adaptive model fitted on exactly these templates; `None` when the writer was
    /// enrolled without a cohort or read from a version-1 file.
    pub fn model(&self) -> Option<&WriterModel> {
        self.model.as_ref()
    }
    /// The writer's on-line model, when it was enrolled from pen captures.
    pub fn dynamic(&self) -> Option<&DynamicTemplate> {
        self.dynamic.as_ref()
    }
    /// The score of `probe` by `rule`, or by the nearest rule when `rule` needs what is missing
    /// (this writer's model; the cohort, for a normalisation that uses it): the returned
    /// [`RuleScore::rule`] says which rule was used, so the matching threshold can be applied.
    pub fn score_with(&self, rule: DecisionRule, probe: &Template, cohort: Option<&Cohort>) -> RuleScore {
        let method = rule.method();
        if method.from_references_only() {
            // From the references alone: writers enrolled before the bundle had a cohort get it
            // too; a single reference falls back.
            return match crate::adaptive::reference_only_score(method, &self.templates, probe) {
                Some(score) => RuleScore { rule, score },
                None => RuleScore { rule: DecisionRule::Nearest, score: self.score(probe) },
            };
        }
        match &self.model {
            Some(model) if !(method.needs_cohort() && cohort.is_none()) => {
                RuleScore { rule, score: model.score(rule, &self.templates, probe, cohort) }
            }
            _ if method == ScoreMethod::Nearest => RuleScore { rule, score: self.score(probe) },
            _ => RuleScore { rule: DecisionRule::Nearest, score: self.score(probe) },
        }
    }
}

/// A score and the rule that produced it (see [`WriterEntry::score_with`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuleScore {
    /// The rule actually used: the one asked for, or [`DecisionRule::Nearest`] as a fallback.
    pub rule: DecisionRule,
    pub score: f32,
}

impl RuleScore {
    /// Whether the rule asked for could not be used.
    pub fn fell_back(&self, asked: DecisionRule) -> bool {
        self.rule != asked
    }
}

impl<const TEMPLATES: usize> fmt::Debug for WriterEntry<TEMPLATES> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterEntry")
            .field("id", &self.id.as_str())
            .field("templates", &self.templates.len())
            .field("enrolled_at", &self.enrolled_at)
            .field("updated_at", &self.updated_at)
            .field("stats", &self.stats)
            .field("model", &self.model.is_some())
            .field("dynamic", &self.dynamic.as_ref().map(DynamicTemplate::reference_count))
            .finish()
    }
}

/// What [`Gallery::enroll`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// A new writer was added.
    Created,
    /// Templates were appended to an existing writer.
    Appended,
    /// An existing writer's templates were replaced.
    Replaced,
}

/// One result of identification.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub id: WriterId,
    pub score: f32,
}

/// What a gallery file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GalleryHeader {
    pub version: u32,
    pub model_sha256: [u8; 32],
    pub embedding_dim: u32,
    /// Writer capacity of the build that wrote the file.
    pub writer_capacity: u32,
    /// Templates-per-writer capacity of the build that wrote the file.
    pub template_capacity: u32,
    pub writer_count: u32,
}

/// A fixed-capacity gallery: up to `WRITERS` writers with up to `TEMPLATES` templates each,
/// kept sorted by id. No method allocates except [`Gallery::new_boxed`], the byte conversions,
/// and error construction.
#[derive(Clone, PartialEq)]
pub struct Gallery<const WRITERS: usize, const TEMPLATES: usize> {
    writers: heapless::Vec<WriterEntry<TEMPLATES>, WRITERS>,
}

impl<const WRITERS: usize, const TEMPLATES: usize> Default for Gallery<WRITERS, TEMPLATES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WRITERS: usize, const TEMPLATES: usize> fmt::Debug for Gallery<WRITERS, TEMPLATES> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gallery")
            .field("writers", &self.len())
            .field("templates", &self.template_count())
            .field("writer_capacity", &WRITERS)
            .field("template_capacity", &TEMPLATES)
            .finish()
    }
}

impl<const WRITERS: usize, const TEMPLATES: usize> Gallery<WRITERS, TEMPLATES> {
    /// Maximum number of writers.
    pub const WRITER_CAPACITY: usize = WRITERS;
    /// Maximum number of templates per writer.
    pub const TEMPLATE_CAPACITY: usize = TEMPLATES;
    /// The largest file this gallery can be written as: every writer full, with the longest id,
    /// a writer model and the largest dynamic template. A reader can refuse anything larger
    /// without parsing it.
    pub const MAX_FILE_LEN: usize = HEADER_LEN
        + TRAILER_LEN
        + WRITERS
            * (1 + MAX_ID_LEN + 8 + 8 + 2 + TEMPLATES * EMBEDDING_DIM + 1 + WriterModel::BYTES + 4 + MAX_DYNAMIC_BYTES);

    /// An empty gallery, by value. Large galleries should use [`Gallery::new_boxed`].
    pub const fn new() -> Self {
        const { assert!(TEMPLATES <= u16::MAX as usize && WRITERS <= u32::MAX as usize) };
        Self { writers: heapless::Vec::new() }
    }

    /// An empty gallery on the heap, built without a gallery-sized value on the stack in
    /// optimised builds (opt-level >= 1, so the workspace's dev/test profile too: a test builds a
    /// [`KioskGallery`] this way on a thread with a 256 KiB stack). At opt-level 0 the constant
    /// passes through the stack once (about 1.1 MiB for a [`KioskGallery`]).
    #[inline(never)]
    pub fn new_boxed() -> Box<Self> {
        // Allocate first, then write the constant: nothing can unwind while the value exists, so
        // the compiler need not keep a stack copy of it for a landing pad.
        Box::write(Box::new_uninit(), const { Self::new() })
    }

    /// Number of writers.
    pub fn len(&self) -> usize {
        self.writers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.writers.is_full()
    }

    /// Number of templates over all writers.
    pub fn template_count(&self) -> usize {
        self.writers.iter().map(|w| w.templates.len()).sum()
    }

    /// The writers, in id order.
    pub fn writers(&self) -> core::slice::Iter<'_, WriterEntry<TEMPLATES>> {
        self.writers.iter()
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.writers.binary_search_by(|w| w.id.as_str().cmp(id))
    }

    pub fn get(&self, id: &str) -> Option<&WriterEntry<TEMPLATES>> {
        self.position(id).ok().map(|i| &self.writers[i])
    }

    pub fn contains(&self, id: &str) -> bool {
        self.position(id).is_ok()
    }

    /// Enrols `templates` for `id` at time `now` (unix seconds). A new writer is created; an
    /// existing one gets the templates appended (up to `TEMPLATES` in all), or, with `replace`,
    /// has its templates replaced. On error the gallery is unchanged.
    ///
    /// The writer is left without a [`WriterModel`] (an existing one no longer describes the
    /// changed templates and is dropped); see [`Gallery::enroll_fitted`]. Replacing also drops
    /// the writer's [`DynamicTemplate`] (it described the old signatures); appending keeps it.
    pub fn enroll(
        &mut self,
        id: &str,
        templates: &[Template],
        now: u64,
        replace: bool,
    ) -> Result<EnrollOutcome, GalleryError> {
        self.enroll_with_model(id, templates, now, replace, None)
    }

    /// [`Gallery::enroll`], fitting the writer's [`WriterModel`] against `cohort` on the
    /// templates the writer has afterwards (the old and new ones when appending). With no
    /// cohort, the writer has no model. On error the gallery is unchanged.
    pub fn enroll_fitted(
        &mut self,
        id: &str,
        templates: &[Template],
        now: u64,
        replace: bool,
        cohort: Option<&Cohort>,
        config: &AdaptiveConfig,
    ) -> Result<EnrollOutcome, GalleryError> {
        let model = match cohort {
            Some(cohort) if !templates.is_empty() => {
                let mut all: Vec<Template> = Vec::with_capacity(TEMPLATES);
                if !replace && let Some(entry) = self.get(id) {
                    all.extend_from_slice(&entry.templates);
                }
                all.extend_from_slice(templates);
                Some(WriterModel::fit(&all, cohort, config)?)
            }
            _ => None,
        };
        self.enroll_with_model(id, templates, now, replace, model)
    }

    /// [`Gallery::enroll`] storing `model` with the writer. The model must have been fitted on
    /// the templates the writer has after this call ([`Gallery::enroll_fitted`] does that).
    pub fn enroll_with_model(
        &mut self,
        id: &str,
        templates: &[Template],
        now: u64,
        replace: bool,
        model: Option<WriterModel>,
    ) -> Result<EnrollOutcome, GalleryError> {
        let writer_id = make_id(id)?;
        if templates.is_empty() {
            return Err(GalleryError::NoTemplates);
        }
        let full = |requested| GalleryError::WriterFull { id: id.to_owned(), requested, capacity: TEMPLATES };
        if templates.len() > TEMPLATES {
            return Err(full(templates.len()));
        }
        match self.position(id) {
            Ok(i) => {
                let entry = &mut self.writers[i];
                if replace {
                    entry.templates.clear();
                    entry.dynamic = None;
                    entry.enrolled_at = now;
                } else if entry.templates.len() + templates.len() > TEMPLATES {
                    return Err(full(entry.templates.len() + templates.len()));
                }
                entry.templates.extend_from_slice(templates).map_err(|_| full(TEMPLATES + 1))?;
                entry.updated_at = now;
                entry.stats = WriterStats::of(&entry.templates);
                entry.model = model;
                Ok(if replace { EnrollOutcome::Replaced } else { EnrollOutcome::Appended })
            }
            Err(i) => {
                if self.writers.is_full() {
                    return Err(GalleryError::GalleryFull { capacity: WRITERS });
                }
                let mut entry = WriterEntry {
                    id: writer_id,
                    templates: heapless::Vec::new(),
                    enrolled_at: now,
                    updated_at: now,
                    stats: WriterStats::of(templates),
                    model,
                    dynamic: None,
                };
                entry.templates.extend_from_slice(templates).map_err(|_| full(templates.len()))?;
                self.writers.insert(i, entry).map_err(|_| GalleryError::GalleryFull { capacity: WRITERS })?;
                Ok(EnrollOutcome::Created)
            }
        }
    }

    /// Removes a writer; `false` if there was none with that id.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.position(id) {
            Ok(i) => {
                self.writers.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes every writer.
    pub fn clear(&mut self) {
        self.writers.clear();
    }

    /// The score of `probe` against writer `id` ([`writer_score`]); `None` for an unknown id.
    pub fn verify_score(&self, id: &str, probe: &Template) -> Option<f32> {
        self.get(id).map(|w| w.score(probe))
    }

    /// The score of `probe` against writer `id` by `rule` ([`WriterEntry::score_with`]: falls
    /// back to the nearest rule, and says so, when the writer has no model or a needed cohort
    /// is missing); `None` for an unknown id. Allocates nothing.
    pub fn verify_score_with(
        &self,
        id: &str,
        probe: &Template,
        rule: DecisionRule,
        cohort: Option<&Cohort>,
    ) -> Option<RuleScore> {
        self.get(id).map(|w| w.score_with(rule, probe, cohort))
    }

    /// Replaces the model of writer `id` (which must have been fitted on its current
    /// templates); `false` for an unknown id.
    pub fn set_model(&mut self, id: &str, model: Option<WriterModel>) -> bool {
        match self.position(id) {
            Ok(i) => {
                self.writers[i].model = model;
                true
            }
            Err(_) => false,
        }
    }

    /// Sets (or with `None` removes) the [`DynamicTemplate`] of writer `id`. It must have at
    /// most `TEMPLATES` references and fit [`MAX_DYNAMIC_BYTES`]; on error nothing changes.
    pub fn set_dynamic(&mut self, id: &str, dynamic: Option<DynamicTemplate>) -> Result<(), GalleryError> {
        let i = self.position(id).map_err(|_| GalleryError::UnknownWriter { id: id.to_owned() })?;
        if let Some(d) = &dynamic {
            check_dynamic::<TEMPLATES>(id, d)?;
        }
        self.writers[i].dynamic = dynamic;
        Ok(())
    }

    /// Number of writers with a [`DynamicTemplate`].
    pub fn writers_with_dynamic(&self) -> usize {
        self.writers.iter().filter(|w| w.dynamic.is_some()).count()
    }

    /// Number of writers without a model.
    pub fn writers_without_model(&self) -> usize {
        self.writers.iter().filter(|w| w.model.is_none()).count()
    }

    /// Fits the model of every writer that has none (or of every writer, with `refit_all`)
    /// from its stored templates: upgrades a gallery read from a version-1 file, or one
    /// enrolled before the bundle had a cohort. Returns how many were fitted. On error no
    /// writer is changed.
    pub fn fit_models(
        &mut self,
        cohort: &Cohort,
        config: &AdaptiveConfig,
        refit_all: bool,
    ) -> Result<usize, GalleryError> {
        let mut fitted = Vec::new();
        for (i, w) in self.writers.iter().enumerate() {
            if refit_all || w.model.is_none() {
                fitted.push((i, WriterModel::fit(&w.templates, cohort, config)?));
            }
        }
        for &(i, model) in &fitted {
            self.writers[i].model = Some(model);
        }
        Ok(fitted.len())
    }

    /// Fills `out` with the `K` best-scoring writers, best first; equal scores are ordered by id.
    /// `out` is cleared first. Does not allocate.
    pub fn identify<const K: usize>(&self, probe: &Template, out: &mut heapless::Vec<Match, K>) {
        out.clear();
        if K == 0 {
            return;
        }
        for w in &self.writers {
            let score = w.score(probe);
            let ranks_before = |m: &Match| {
                score.total_cmp(&m.score).then_with(|| m.id.as_str().cmp(w.id.as_str())) == Ordering::Greater
            };
            let pos = out.iter().position(ranks_before).unwrap_or(out.len());
            if pos >= K {
                continue;
            }
            if out.is_full() {
                out.pop();
            }
            // Cannot fail: there is room after the pop.
            let _ = out.insert(pos, Match { id: w.id.clone(), score });
        }
    }

    /// The `K` best-scoring writers, best first; see [`Gallery::identify`].
    pub fn top_k<const K: usize>(&self, probe: &Template) -> heapless::Vec<Match, K> {
        let mut out = heapless::Vec::new();
        self.identify(probe, &mut out);
        out
    }

    // -----------------------------------------------------------------------------------------
    // Bytes
    // -----------------------------------------------------------------------------------------

    /// Serialises the gallery (format in the module docs), stamped with the model's sha256.
    pub fn to_bytes(&self, model_sha256: &[u8; 32]) -> Vec<u8> {
        let dynamic: Vec<Option<Vec<u8>>> =
            self.writers.iter().map(|w| w.dynamic.as_ref().map(DynamicTemplate::to_bytes)).collect();
        let model_len = |w: &WriterEntry<TEMPLATES>| 1 + w.model.map_or(0, |_| WriterModel::BYTES);
        let body: usize = self
            .writers
            .iter()
            .zip(&dynamic)
            .map(|(w, d)| {
                1 + w.id.len()
                    + 8
                    + 8
                    + 2
                    + w.templates.len() * EMBEDDING_DIM
                    + model_len(w)
                    + 4
                    + d.as_ref().map_or(0, Vec::len)
            })
            .sum();
        let total = HEADER_LEN + body + TRAILER_LEN;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&GALLERY_MAGIC);
        out.extend_from_slice(&GALLERY_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(total as u64).to_le_bytes());
        out.extend_from_slice(model_sha256);
        out.extend_from_slice(&(EMBEDDING_DIM as u32).to_le_bytes());
        out.extend_from_slice(&u32::try_from(WRITERS).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(TEMPLATES).unwrap_or(u32::MAX).to_le_bytes());
        // At most WRITERS; a u32 overflow would need a > 4 GiB gallery.
        out.extend_from_slice(&(self.writers.len() as u32).to_le_bytes());
        for (w, d) in self.writers.iter().zip(&dynamic) {
            // Ids are at most 64 bytes and templates per writer fit u16 in any sane build.
            out.push(w.id.len() as u8);
            out.extend_from_slice(w.id.as_bytes());
            out.extend_from_slice(&w.enrolled_at.to_le_bytes());
            out.extend_from_slice(&w.updated_at.to_le_bytes());
            out.extend_from_slice(&(w.templates.len() as u16).to_le_bytes());
            for t in &w.templates {
                out.extend(t.0.iter().map(|&v| v as u8));
            }
            match &w.model {
                None => out.push(MODEL_NONE),
                Some(model) => {
                    out.push(MODEL_V1);
                    out.extend_from_slice(&model.to_bytes());
                }
            }
            // At most MAX_DYNAMIC_BYTES (set_dynamic checked it).
            let d = d.as_deref().unwrap_or_default();
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        debug_assert_eq!(out.len(), total);
        out
    }

    /// Parses gallery bytes (format version 1, 2 or 3). With `expected_model_sha256`, a file made
    /// with another model is refused ([`GalleryError::ModelMismatch`]). Never panics, whatever
    /// the bytes.
    pub fn from_bytes(
        bytes: &[u8],
        expected_model_sha256: Option<&[u8; 32]>,
    ) -> Result<(Box<Self>, GalleryHeader), GalleryError> {
        let header = parse_header(bytes)?;
        if let Some(expected) = expected_model_sha256
            && *expected != header.model_sha256
        {
            return Err(GalleryError::ModelMismatch {
                expected: hex::encode(expected),
                found: hex::encode(header.model_sha256),
            });
        }
        if header.embedding_dim as usize != EMBEDDING_DIM {
            return Err(GalleryError::DimensionMismatch {
                found: header.embedding_dim,
                expected: EMBEDDING_DIM as u32,
            });
        }
        if header.writer_count as usize > WRITERS {
            return Err(GalleryError::CapacityExceeded {
                what: "writers",
                found: u64::from(header.writer_count),
                capacity: WRITERS,
            });
        }
        // parse_header checked the length: the body lies between header and trailer.
        let body = bytes.get(HEADER_LEN..bytes.len() - TRAILER_LEN).ok_or(GalleryError::Malformed("no body"))?;
        let mut r = Reader { buf: body, pos: 0 };
        let mut gallery = Self::new_boxed();
        for _ in 0..header.writer_count {
            let id_len = usize::from(r.u8()?);
            let id_bytes = r.take(id_len)?;
            let id_str = core::str::from_utf8(id_bytes).map_err(|_| GalleryError::InvalidId {
                id: String::from_utf8_lossy(id_bytes).into_owned(),
                reason: "it is not valid UTF-8",
            })?;
            let id = make_id(id_str)?;
            if let Some(last) = gallery.writers.last()
                && last.id.as_str() >= id.as_str()
            {
                return Err(GalleryError::Malformed("writer ids are not sorted and unique"));
            }
            let enrolled_at = r.u64()?;
            let updated_at = r.u64()?;
            let count = usize::from(r.u16()?);
            if count == 0 {
                return Err(GalleryError::Malformed("a writer has no templates"));
            }
            if count > TEMPLATES {
                return Err(GalleryError::CapacityExceeded {
                    what: "templates for one writer",
                    found: count as u64,
                    capacity: TEMPLATES,
                });
            }
            let mut templates = heapless::Vec::<Template, TEMPLATES>::new();
            for _ in 0..count {
                let raw = r.take(EMBEDDING_DIM)?;
                let mut values = [0i8; EMBEDDING_DIM];
                for (dst, &b) in values.iter_mut().zip(raw) {
                    *dst = b as i8;
                }
                templates.push(Template(values)).map_err(|_| GalleryError::Malformed("too many templates"))?;
            }
            let model = if header.version >= 2 {
                match r.u8()? {
                    MODEL_NONE => None,
                    MODEL_V1 => Some(WriterModel::from_bytes(r.take(WriterModel::BYTES)?).map_err(|e| {
                        let reason = match e {
                            AdaptiveError::BadModel(reason) => reason.to_owned(),
                            other => other.to_string(),
                        };
                        GalleryError::BadWriterModel { id: id.to_string(), reason }
                    })?),
                    _ => return Err(GalleryError::Malformed("unknown writer model kind")),
                }
            } else {
                None
            };
            let dynamic = if header.version >= 3 {
                let len = r.u32()? as usize;
                if len > MAX_DYNAMIC_BYTES {
                    return Err(GalleryError::BadDynamicTemplate {
                        id: id.to_string(),
                        reason: format!("{len} bytes, more than the limit of {MAX_DYNAMIC_BYTES}"),
                    });
                }
                if len == 0 {
                    None
                } else {
                    let bad = |reason: String| GalleryError::BadDynamicTemplate { id: id.to_string(), reason };
                    let d = DynamicTemplate::from_bytes(r.take(len)?).map_err(|e| bad(e.to_string()))?;
                    check_dynamic::<TEMPLATES>(&id, &d)?;
                    Some(d)
                }
            } else {
                None
            };
            let stats = WriterStats::of(&templates);
            let entry = WriterEntry { id, templates, enrolled_at, updated_at, stats, model, dynamic };
            gallery.writers.push(entry).map_err(|_| GalleryError::CapacityExceeded {
                what: "writers",
                found: u64::from(header.writer_count),
                capacity: WRITERS,
            })?;
        }
        if r.pos != body.len() {
            return Err(GalleryError::Malformed("unexpected bytes after the last writer"));
        }
        Ok((gallery, header))
    }
}

/// The limits a stored dynamic template must meet (at enrolment and on load).
fn check_dynamic<const TEMPLATES: usize>(id: &str, d: &DynamicTemplate) -> Result<(), GalleryError> {
    let bad = |reason: String| GalleryError::BadDynamicTemplate { id: id.to_owned(), reason };
    if d.reference_count() > TEMPLATES {
        return Err(bad(format!("{} references, at most {TEMPLATES} are kept", d.reference_count())));
    }
    let len = d.byte_len();
    if len > MAX_DYNAMIC_BYTES {
        return Err(bad(format!("{len} bytes, more than the limit of {MAX_DYNAMIC_BYTES}")));
    }
    Ok(())
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// Checks magic, version, length and checksum, and returns the header.
fn parse_header(bytes: &[u8]) -> Result<GalleryHeader, GalleryError> {
    let found = bytes.len() as u64;
    let short = |expected: usize| GalleryError::Truncated { expected: expected as u64, found };
    let magic_len = bytes.len().min(GALLERY_MAGIC.len());
    if bytes[..magic_len] != GALLERY_MAGIC[..magic_len] {
        return Err(GalleryError::BadMagic);
    }
    let version = le_u32(bytes, OFF_VERSION).ok_or_else(|| short(HEADER_LEN + TRAILER_LEN))?;
    if !(GALLERY_OLDEST_READABLE_VERSION..=GALLERY_FORMAT_VERSION).contains(&version) {
        return Err(GalleryError::UnsupportedVersion { found: version, supported: GALLERY_FORMAT_VERSION });
    }
    let total = le_u64(bytes, OFF_TOTAL_LEN).ok_or_else(|| short(HEADER_LEN + TRAILER_LEN))?;
    if total < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(GalleryError::Malformed("the recorded length is shorter than a header"));
    }
    if found < total {
        return Err(GalleryError::Truncated { expected: total, found });
    }
    if found > total {
        return Err(GalleryError::Malformed("unexpected bytes after the checksum"));
    }
    // Now bytes.len() == total >= HEADER_LEN + TRAILER_LEN.
    let (content, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let computed = Sha256::digest(content);
    if computed.as_slice() != trailer {
        return Err(GalleryError::ChecksumMismatch { stored: hex::encode(trailer), computed: hex::encode(computed) });
    }
    let mut model_sha256 = [0u8; 32];
    model_sha256.copy_from_slice(&bytes[OFF_MODEL..OFF_MODEL + 32]);
    let field = |at| le_u32(bytes, at).ok_or_else(|| short(HEADER_LEN + TRAILER_LEN));
    Ok(GalleryHeader {
        version,
        model_sha256,
        embedding_dim: field(OFF_DIM)?,
        writer_capacity: field(OFF_WRITER_CAP)?,
        template_capacity: field(OFF_TEMPLATE_CAP)?,
        writer_count: field(OFF_WRITER_COUNT)?,
    })
}

/// Bounds-checked reader over the (checksummed) body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GalleryError> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or(GalleryError::Malformed("a writer entry runs past the end of the data"))?;
        self.pos += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], GalleryError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, GalleryError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, GalleryError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, GalleryError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, GalleryError> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type Small = Gallery<4, 3>;
    const MODEL: [u8; 32] = [7u8; 32];

    fn unit(rng: &mut ChaCha8Rng) -> Vec<f32> {
        let v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn tpl(rng: &mut ChaCha8Rng) -> Template {
        Template::from_embedding(&unit(rng)).expect("valid embedding")
    }

    /// A template along basis vector `axis` (similarity 1 to itself, 0 to other axes).
    fn axis(axis: usize) -> Template {
        let mut e = [0f32; EMBEDDING_DIM];
        e[axis] = 1.0;
        Template::from_embedding(&e).expect("valid embedding")
    }

    /// Unit vector with components `a` on axis 0 and sqrt(1-a²) on axis 1.
    fn mix(a: f32) -> Template {
        let mut e = [0f32; EMBEDDING_DIM];
        e[0] = a;
        e[1] = (1.0 - a * a).sqrt();
        Template::from_embedding(&e).expect("valid embedding")
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        d / (na * nb)
    }

    fn resign(bytes: &mut [u8]) {
        let n = bytes.len() - TRAILER_LEN;
        let digest = Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&digest);
    }

    fn cohort(rng: &mut ChaCha8Rng) -> Cohort {
        Cohort::new((0..20).map(|_| tpl(rng)).collect()).expect("cohort")
    }

    /// Three writers; "alice" (the first entry) has a writer model, the others none.
    fn sample(rng: &mut ChaCha8Rng) -> Box<Small> {
        let mut g = Small::new_boxed();
        let cohort = cohort(rng);
        let config = AdaptiveConfig::default();
        g.enroll_fitted("alice", &[tpl(rng), tpl(rng)], 100, false, Some(&cohort), &config).expect("enroll");
        g.enroll("bob", &[tpl(rng)], 200, false).expect("enroll");
        g.enroll("zoë ünïcode", &[tpl(rng), tpl(rng), tpl(rng)], 300, false).expect("enroll");
        g
    }

    #[test]
    fn quantisation() {
        let t = axis(3);
        assert_eq!(t.as_i8()[3], 127);
        assert_eq!(t.as_i8().iter().map(|&v| i32::from(v).abs()).sum::<i32>(), 127);

        // 0.5 * 127 = 63.5 rounds away from zero.
        let mut e = [0f32; EMBEDDING_DIM];
        e[..4].copy_from_slice(&[0.5, -0.5, 0.5, -0.5]);
        let t = Template::from_embedding(&e).expect("valid");
        assert_eq!(&t.as_i8()[..5], &[64, -64, 64, -64, 0]);

        // Not normalised: normalised first, so scaling does not matter.
        let scaled: Vec<f32> = e.iter().map(|v| v * 3.0).collect();
        assert_eq!(Template::from_embedding(&scaled).expect("valid"), t);

        // Values stay in [-127, 127].
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let t = tpl(&mut rng);
            assert!(t.as_i8().iter().all(|&v| v >= -127));
        }
        let back = axis(0).to_f32();
        assert!((back[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn quantisation_errors() {
        assert_eq!(
            Template::from_embedding(&[0.1; 127]),
            Err(GalleryError::EmbeddingLength { expected: 128, found: 127 })
        );
        assert_eq!(
            Template::from_embedding(&[0.1; 129]),
            Err(GalleryError::EmbeddingLength { expected: 128, found: 129 })
        );
        let mut e = [0.1f32; EMBEDDING_DIM];
        e[5] = f32::NAN;
        assert_eq!(Template::from_embedding(&e), Err(GalleryError::NonFiniteEmbedding { index: 5 }));
        e[5] = f32::INFINITY;
        assert_eq!(Template::from_embedding(&e), Err(GalleryError::NonFiniteEmbedding { index: 5 }));
        assert_eq!(Template::from_embedding(&[0.0; EMBEDDING_DIM]), Err(GalleryError::ZeroEmbedding));
        // Huge but finite values do not overflow the norm.
        assert!(Template::from_embedding(&[f32::MAX; EMBEDDING_DIM]).is_ok());
    }

    #[test]
    fn similarity_approximates_cosine() {
        // Rounding to int8 adds noise of std ≈ 127·sqrt(2/12)/127² ≈ 0.0032 to the similarity of
        // two unit vectors in 128 dimensions, so |similarity − cosine| < 0.01 is a ~3σ bound:
        // required for 99% of pairs, with every pair within 0.02.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = 2000;
        let (mut worst, mut sum_err, mut over) = (0f32, 0f32, 0usize);
        for i in 0..n {
            let a = unit(&mut rng);
            // Mix in a share of `a` so that cosines cover the whole range, not just ~0; every
            // 11th pair is independent, every 11th identical.
            let share = (i % 11) as f32 / 10.0;
            let noise = unit(&mut rng);
            let b: Vec<f32> = a.iter().zip(&noise).map(|(x, y)| share * x + (1.0 - share) * y).collect();
            let ta = Template::from_embedding(&a).expect("valid");
            let tb = Template::from_embedding(&b).expect("valid");
            let (s, c) = (similarity(&ta, &tb), cosine(&a, &b));
            let err = (s - c).abs();
            assert!(err < 0.02, "similarity {s} vs cosine {c}");
            assert_eq!(s, similarity(&tb, &ta));
            worst = worst.max(err);
            sum_err += err;
            over += usize::from(err >= 0.01);
        }
        let mean = sum_err / n as f32;
        assert!(mean < 0.004, "mean error {mean}");
        assert!(over * 100 <= n, "{over} of {n} pairs off by 0.01 or more (worst {worst})");
        eprintln!("similarity vs cosine: mean error {mean}, worst {worst}, {over}/{n} pairs >= 0.01");

        // The chunked dot product equals the naive one, extremes included.
        let lo = Template::from_i8([-128; EMBEDDING_DIM]);
        assert_eq!(dot_i8(&lo, &lo), 128 * 128 * 128);
        let t = tpl(&mut rng);
        let u = tpl(&mut rng);
        let naive: i32 = t.as_i8().iter().zip(u.as_i8()).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
        assert_eq!(dot_i8(&t, &u), naive);
    }

    #[test]
    fn scoring_rule() {
        // The nearest reference decides: 0.9 to one reference beats 0.6 to both.
        let refs = [axis(0), axis(1)];
        assert!((writer_score(&refs, &axis(0)) - 1.0).abs() < 1e-6);
        assert!((writer_score(&refs, &mix(0.9)) - 0.9).abs() < 0.01);
        assert!((writer_score(&refs, &mix(0.6)) - 0.8).abs() < 0.01, "mix(0.6) is 0.8 along axis 1");
        assert!(writer_score(&[], &axis(0)).is_nan());
        assert!(max_similarity(&[], &axis(0)).is_nan());

        let mut g = Small::new();
        g.enroll("w", &refs, 1, false).expect("enroll");
        let probe = mix(0.6);
        assert_eq!(g.verify_score("w", &probe), Some(writer_score(&refs, &probe)));
        assert_eq!(g.verify_score("nobody", &probe), None);

        let stats = g.get("w").and_then(WriterEntry::stats).expect("two references have stats");
        assert_eq!(stats.pairs, 1);
        assert!(stats.mean.abs() < 1e-6 && stats.std.abs() < 1e-6);
        let stats = WriterStats::of(&[axis(0), axis(0), axis(1)]).expect("stats");
        assert_eq!(stats.pairs, 3);
        assert!((stats.mean - 1.0 / 3.0).abs() < 1e-6);
        assert!((stats.std - (2.0f32 / 9.0).sqrt()).abs() < 1e-6);
        assert_eq!(WriterStats::of(&[axis(0)]), None);
    }

    #[test]
    fn enroll_replace_remove() {
        let mut g = Small::new();
        assert!(g.is_empty());
        assert_eq!(g.enroll("bob", &[axis(0)], 10, false), Ok(EnrollOutcome::Created));
        assert_eq!(g.enroll("alice", &[axis(1), axis(2)], 11, false), Ok(EnrollOutcome::Created));
        assert_eq!(g.len(), 2);
        assert_eq!(g.template_count(), 3);
        let ids: Vec<&str> = g.writers().map(WriterEntry::id).collect();
        assert_eq!(ids, ["alice", "bob"]);
        assert!(g.get("bob").expect("bob").stats().is_none());

        assert_eq!(g.enroll("bob", &[axis(3)], 20, false), Ok(EnrollOutcome::Appended));
        let bob = g.get("bob").expect("bob");
        assert_eq!(bob.templates(), &[axis(0), axis(3)]);
        assert_eq!((bob.enrolled_at(), bob.updated_at()), (10, 20));
        assert!(bob.stats().is_some());

        assert_eq!(g.enroll("bob", &[axis(4)], 30, true), Ok(EnrollOutcome::Replaced));
        let bob = g.get("bob").expect("bob");
        assert_eq!(bob.templates(), &[axis(4)]);
        assert_eq!((bob.enrolled_at(), bob.updated_at()), (30, 30));
        assert!(bob.stats().is_none());
        assert_eq!(g.template_count(), 3);

        assert!(g.remove("alice"));
        assert!(!g.remove("alice"));
        assert!(g.get("alice").is_none());
        assert!(g.contains("bob"));
        assert_eq!(g.len(), 1);
        g.clear();
        assert!(g.is_empty());
    }

    #[test]
    fn enroll_errors_leave_gallery_unchanged() {
        let mut g = Small::new();
        g.enroll("a", &[axis(0), axis(1)], 1, false).expect("enroll");
        let before = g.clone();

        // Appending beyond TEMPLATES (3).
        assert_eq!(
            g.enroll("a", &[axis(2), axis(3)], 2, false),
            Err(GalleryError::WriterFull { id: "a".into(), requested: 4, capacity: 3 })
        );
        // More than TEMPLATES in one call, even when replacing or creating.
        let four = [axis(0), axis(1), axis(2), axis(3)];
        assert!(matches!(g.enroll("a", &four, 2, true), Err(GalleryError::WriterFull { .. })));
        assert!(matches!(g.enroll("new", &four, 2, false), Err(GalleryError::WriterFull { .. })));
        assert_eq!(g.enroll("a", &[], 2, false), Err(GalleryError::NoTemplates));
        let long = "x".repeat(65);
        for bad in ["", " lead", "trail ", "tab\there", "new\nline", "nul\0", "bell\u{7}", "ls\u{2028}", long.as_str()]
        {
            assert!(
                matches!(g.enroll(bad, &[axis(0)], 2, false), Err(GalleryError::InvalidId { .. })),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(g, before);
        // Exactly 64 bytes and inner spaces are fine; replacing at capacity is fine.
        g.enroll(&"y".repeat(64), &[axis(0)], 2, false).expect("64-byte id");
        g.enroll("Jean Dupont", &[axis(0)], 2, false).expect("inner space");
        g.enroll("a", &[axis(0), axis(1), axis(2)], 3, true).expect("replace at capacity");

        // GalleryFull at WRITERS (4); existing writers can still be appended to.
        g.enroll("d", &[axis(0)], 4, false).expect("fourth writer");
        assert!(g.is_full());
        assert_eq!(g.enroll("e", &[axis(0)], 5, false), Err(GalleryError::GalleryFull { capacity: 4 }));
        g.enroll("d", &[axis(1)], 5, false).expect("append while full");
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn top_k_order_and_ties() {
        let mut g = Gallery::<8, 2>::new();
        // Scores against probe axis(0): c = 1.0, a = b = 0.8 (tie), d = 0.5 (its nearest
        // reference), e = 0.
        g.enroll("e", &[axis(5)], 0, false).expect("enroll");
        g.enroll("d", &[mix(0.5), axis(1)], 0, false).expect("enroll");
        g.enroll("b", &[mix(0.8)], 0, false).expect("enroll");
        g.enroll("c", &[axis(0)], 0, false).expect("enroll");
        g.enroll("a", &[mix(0.8)], 0, false).expect("enroll");
        let probe = axis(0);

        let ids = |m: &[Match]| m.iter().map(|m| m.id.to_string()).collect::<Vec<_>>();
        let top3 = g.top_k::<3>(&probe);
        assert_eq!(ids(&top3), ["c", "a", "b"]);
        assert!(top3.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(top3[1].score, top3[2].score);
        assert_eq!(Some(top3[0].score), g.verify_score("c", &probe));

        let all = g.top_k::<10>(&probe);
        assert_eq!(ids(&all), ["c", "a", "b", "d", "e"]);
        assert!(g.top_k::<0>(&probe).is_empty());
        assert!(Gallery::<8, 2>::new().top_k::<3>(&probe).is_empty());

        // identify() clears and refills a caller's buffer.
        let mut out = heapless::Vec::<Match, 2>::new();
        g.identify(&axis(5), &mut out);
        assert_eq!(ids(&out), ["e", "a"]); // e = 1.0; a, b, c and d all score 0
        g.identify(&probe, &mut out);
        assert_eq!(ids(&out), ["c", "a"]);

        // Agrees with a brute-force sort on random data.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut g = Gallery::<64, 3>::new();
        for i in 0..64 {
            g.enroll(&format!("w{i:02}"), &[tpl(&mut rng), tpl(&mut rng)], 0, false).expect("enroll");
        }
        let probe = tpl(&mut rng);
        let mut expected: Vec<(f32, String)> = g.writers().map(|w| (w.score(&probe), w.id().to_owned())).collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let got = g.top_k::<7>(&probe);
        let got: Vec<(f32, String)> = got.iter().map(|m| (m.score, m.id.to_string())).collect();
        assert_eq!(got, expected[..7]);
    }

    #[test]
    fn bytes_round_trip() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let g = sample(&mut rng);
        let bytes = g.to_bytes(&MODEL);
        let (back, header) = Small::from_bytes(&bytes, Some(&MODEL)).expect("round trip");
        assert_eq!(back, g);
        assert_eq!(
            header,
            GalleryHeader {
                version: GALLERY_FORMAT_VERSION,
                model_sha256: MODEL,
                embedding_dim: 128,
                writer_capacity: 4,
                template_capacity: 3,
                writer_count: 3,
            }
        );
        assert_eq!(back.to_bytes(&MODEL), bytes);
        // Without an expected model, any model is accepted and reported.
        let (_, header) = Small::from_bytes(&bytes, None).expect("no model check");
        assert_eq!(header.model_sha256, MODEL);
        // A bigger build reads a smaller build's file.
        let (big, _) = KioskGallery::from_bytes(&bytes, Some(&MODEL)).expect("bigger capacity");
        assert_eq!(big.len(), 3);
        assert_eq!(big.get("bob").map(WriterEntry::templates), g.get("bob").map(WriterEntry::templates));
        // Empty gallery.
        let empty = Small::new().to_bytes(&MODEL);
        assert_eq!(empty.len(), HEADER_LEN + TRAILER_LEN);
        assert!(Small::from_bytes(&empty, Some(&MODEL)).expect("empty").0.is_empty());
    }

    /// The version-1 writer, as it was: no model byte after the templates.
    fn to_bytes_v1<const W: usize, const T: usize>(g: &Gallery<W, T>, model: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GALLERY_MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // total_len, patched below
        out.extend_from_slice(model);
        out.extend_from_slice(&(EMBEDDING_DIM as u32).to_le_bytes());
        out.extend_from_slice(&(W as u32).to_le_bytes());
        out.extend_from_slice(&(T as u32).to_le_bytes());
        out.extend_from_slice(&(g.len() as u32).to_le_bytes());
        for w in g.writers() {
            out.push(w.id().len() as u8);
            out.extend_from_slice(w.id().as_bytes());
            out.extend_from_slice(&w.enrolled_at().to_le_bytes());
            out.extend_from_slice(&w.updated_at().to_le_bytes());
            out.extend_from_slice(&(w.templates().len() as u16).to_le_bytes());
            for t in w.templates() {
                out.extend(t.as_i8().iter().map(|&v| v as u8));
            }
        }
        let total = (out.len() + TRAILER_LEN) as u64;
        out[OFF_TOTAL_LEN..OFF_TOTAL_LEN + 8].copy_from_slice(&total.to_le_bytes());
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Without models the gallery as it reads back from a version-1 file.
    fn without_models(g: &Small) -> Box<Small> {
        let mut g = Box::new(g.clone());
        let ids: Vec<String> = g.writers().map(|w| w.id().to_owned()).collect();
        for id in ids {
            g.set_model(&id, None);
        }
        g
    }

    #[test]
    fn version_1_files_load_without_models_and_upgrade() {
        let mut rng = ChaCha8Rng::seed_from_u64(20);
        let g = sample(&mut rng);
        let v1 = to_bytes_v1(&*g, &MODEL);
        let (back, header) = Small::from_bytes(&v1, Some(&MODEL)).expect("version 1 reads");
        assert_eq!(header.version, 1);
        assert_eq!(header.writer_count, 3);
        assert_eq!(back, without_models(&g));
        assert_eq!(back.writers_without_model(), 3);
        // Scoring falls back to the nearest rule, and says so.
        let probe = tpl(&mut rng);
        let cohort = cohort(&mut rng);
        for rule in [DecisionRule::Normalised, DecisionRule::Classifier] {
            let s = back.verify_score_with("alice", &probe, rule, Some(&cohort)).expect("alice");
            assert_eq!(
                s,
                RuleScore { rule: DecisionRule::Nearest, score: back.get("alice").expect("a").score(&probe) }
            );
            assert!(s.fell_back(rule));
        }
        // The consistency rule needs no model: version-1 writers with two or more references
        // get it as they are.
        let alice = back.get("alice").expect("a");
        assert!(alice.templates().len() >= 2);
        let s = back.verify_score_with("alice", &probe, DecisionRule::Consistency, None).expect("alice");
        let expected = crate::adaptive::consistency_score(alice.templates(), &probe).expect("two references");
        assert_eq!(s, RuleScore { rule: DecisionRule::Consistency, score: expected });
        // Written back as version 2; models fitted from the stored templates, no re-enrolment.
        let mut upgraded = back.clone();
        assert_eq!(upgraded.fit_models(&cohort, &AdaptiveConfig::default(), false), Ok(3));
        assert_eq!(upgraded.writers_without_model(), 0);
        assert_eq!(upgraded.fit_models(&cohort, &AdaptiveConfig::default(), false), Ok(0));
        let v2 = upgraded.to_bytes(&MODEL);
        let (again, header) = Small::from_bytes(&v2, Some(&MODEL)).expect("version 2 reads");
        assert_eq!(header.version, GALLERY_FORMAT_VERSION);
        assert_eq!(again, upgraded);
        let alice = again.get("alice").expect("alice");
        let fitted = WriterModel::fit(alice.templates(), &cohort, &AdaptiveConfig::default()).expect("fit");
        assert_eq!(alice.model(), Some(&fitted));
        // A version-1 file is robust too: every truncation and bit flip is an error.
        for n in 0..v1.len() {
            assert!(Small::from_bytes(&v1[..n], None).is_err());
        }
        for i in (0..v1.len()).step_by(7) {
            let mut b = v1.clone();
            b[i] ^= 0x04;
            assert!(Small::from_bytes(&b, None).is_err(), "byte {i}");
        }
        // A version-2 body under a version-1 header (or the reverse) does not parse.
        let mut b = g.to_bytes(&MODEL);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&1u32.to_le_bytes());
        resign(&mut b);
        assert!(Small::from_bytes(&b, None).is_err());
        let mut b = v1.clone();
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&2u32.to_le_bytes());
        resign(&mut b);
        assert!(Small::from_bytes(&b, None).is_err());
    }

    /// A pen trajectory: the synthetic signer's `sample`-th signature of `writer`.
    fn trajectory(writer: u64, sample: u64) -> crate::online::Trajectory {
        let recording = crate::strokes::synth::signature(writer, sample, 600, 200).expect("signature");
        crate::online::Trajectory::try_from(&recording).expect("trajectory")
    }

    fn dynamic_template(writer: u64, references: u64) -> DynamicTemplate {
        let refs: Vec<_> = (0..references).map(|k| trajectory(writer, k)).collect();
        DynamicTemplate::enrol(&refs, &crate::online::DynamicSettings::default()).expect("dynamic template")
    }

    /// The version-2 writer, as it was: a model byte but no dynamic length after it.
    fn to_bytes_v2(g: &Small, model: &[u8; 32]) -> Vec<u8> {
        let mut plain = Box::new(g.clone());
        let ids: Vec<String> = plain.writers().map(|w| w.id().to_owned()).collect();
        for id in &ids {
            plain.set_dynamic(id, None).expect("known");
        }
        let v3 = plain.to_bytes(model);
        // Drop each entry's 4-byte zero dynamic length, walking the entries.
        let mut out = v3[..HEADER_LEN].to_vec();
        let mut at = HEADER_LEN;
        for w in plain.writers() {
            let len = 1 + w.id().len() + 8 + 8 + 2 + w.templates().len() * EMBEDDING_DIM;
            let model_len = 1 + w.model().map_or(0, |_| WriterModel::BYTES);
            out.extend_from_slice(&v3[at..at + len + model_len]);
            assert_eq!(&v3[at + len + model_len..at + len + model_len + 4], &[0u8; 4]);
            at += len + model_len + 4;
        }
        out[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&2u32.to_le_bytes());
        let total = (out.len() + TRAILER_LEN) as u64;
        out[OFF_TOTAL_LEN..OFF_TOTAL_LEN + 8].copy_from_slice(&total.to_le_bytes());
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    #[test]
    fn dynamic_templates_are_stored_checked_and_kept_in_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let mut g = sample(&mut rng);
        let alice = dynamic_template(1, 3);
        assert_eq!(
            g.set_dynamic("nobody", Some(alice.clone())),
            Err(GalleryError::UnknownWriter { id: "nobody".into() })
        );
        g.set_dynamic("alice", Some(alice.clone())).expect("alice is enrolled");
        assert_eq!(g.writers_with_dynamic(), 1);
        // More references than image templates are refused (Small keeps 3), the entry unchanged.
        let before = g.clone();
        assert!(matches!(
            g.set_dynamic("bob", Some(dynamic_template(2, 4))),
            Err(GalleryError::BadDynamicTemplate { .. })
        ));
        assert_eq!(g, before);

        // Round trip: the same scores after reading back.
        let bytes = g.to_bytes(&MODEL);
        let (back, header) = Small::from_bytes(&bytes, Some(&MODEL)).expect("round trip");
        assert_eq!(header.version, 3);
        assert_eq!(back, g);
        let probe = trajectory(1, 7);
        let stored = back.get("alice").and_then(WriterEntry::dynamic).expect("stored");
        assert_eq!(stored.verify(&probe).expect("score"), alice.verify(&probe).expect("score"));
        // Every truncation and every flipped byte of the file is an error, never a panic.
        for n in 0..bytes.len() {
            assert!(Small::from_bytes(&bytes[..n], None).is_err());
        }
        for i in (0..bytes.len()).step_by(5) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Small::from_bytes(&b, None).is_err(), "byte {i}");
        }
        // A damaged dynamic template under a valid checksum names the writer.
        let d = alice.to_bytes();
        let at = bytes.windows(d.len()).position(|w| w == d.as_slice()).expect("template bytes in the file");
        let mut b = bytes.clone();
        b[at] ^= 0xff; // its magic
        resign(&mut b);
        match Small::from_bytes(&b, None) {
            Err(GalleryError::BadDynamicTemplate { id, .. }) => assert_eq!(id, "alice"),
            other => panic!("expected a bad dynamic template, got {other:?}"),
        }
        // A length beyond the limit is refused before anything is read.
        let mut b = bytes.clone();
        b[at - 4..at].copy_from_slice(&u32::MAX.to_le_bytes());
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::BadDynamicTemplate { .. })));

        // Appending image templates keeps the dynamic template; replacing drops it.
        g.enroll("alice", &[tpl(&mut rng)], 9, false).expect("append");
        assert!(g.get("alice").and_then(WriterEntry::dynamic).is_some());
        g.enroll("alice", &[tpl(&mut rng)], 10, true).expect("replace");
        assert!(g.get("alice").and_then(WriterEntry::dynamic).is_none());
    }

    #[test]
    fn version_2_files_load_without_dynamic_templates() {
        let mut rng = ChaCha8Rng::seed_from_u64(24);
        let g = sample(&mut rng);
        let v2 = to_bytes_v2(&g, &MODEL);
        let (back, header) = Small::from_bytes(&v2, Some(&MODEL)).expect("version 2 reads");
        assert_eq!(header.version, 2);
        assert_eq!(back, g);
        assert_eq!(back.writers_with_dynamic(), 0);
        assert_eq!(Small::from_bytes(&back.to_bytes(&MODEL), None).expect("v3").1.version, 3);
    }

    #[test]
    fn version_2_round_trip_with_models_and_rules() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let cohort = cohort(&mut rng);
        let config = AdaptiveConfig::default();
        let mut g = Small::new_boxed();
        for (id, n) in [("a", 1), ("b", 3), ("c", 2)] {
            let templates: Vec<Template> = (0..n).map(|_| tpl(&mut rng)).collect();
            g.enroll_fitted(id, &templates, 5, false, Some(&cohort), &config).expect("enroll");
        }
        g.enroll_fitted("d", &[tpl(&mut rng)], 6, false, None, &config).expect("no cohort, no model");
        assert_eq!(g.writers_without_model(), 1);
        let bytes = g.to_bytes(&MODEL);
        let models = 3 * WriterModel::BYTES;
        assert_eq!(bytes.len(), HEADER_LEN + TRAILER_LEN + 4 * (1 + 1 + 16 + 2 + 1 + 4) + 7 * EMBEDDING_DIM + models);
        let (back, header) = Small::from_bytes(&bytes, Some(&MODEL)).expect("round trip");
        assert_eq!(header.version, GALLERY_FORMAT_VERSION);
        assert_eq!(back, g);
        assert_eq!(back.to_bytes(&MODEL), bytes);
        let probe = tpl(&mut rng);
        for rule in [DecisionRule::Nearest, DecisionRule::Normalised, DecisionRule::Classifier] {
            for id in ["a", "b", "c", "d"] {
                let s = back.verify_score_with(id, &probe, rule, Some(&cohort)).expect("known");
                assert_eq!(s, g.verify_score_with(id, &probe, rule, Some(&cohort)).expect("known"));
                let w = back.get(id).expect("known");
                match w.model() {
                    Some(m) => {
                        assert_eq!(s, RuleScore { rule, score: m.score(rule, w.templates(), &probe, Some(&cohort)) })
                    }
                    None => assert_eq!(s.rule, DecisionRule::Nearest),
                }
            }
        }
        // A normalisation that needs the cohort falls back without one; z-norm-free rules do not.
        let no_cohort = back.verify_score_with("a", &probe, DecisionRule::Normalised, None).expect("a");
        assert_eq!(no_cohort.rule == DecisionRule::Nearest, crate::adaptive::NORMALISED_METHOD.needs_cohort());
        let c = back.verify_score_with("a", &probe, DecisionRule::Classifier, None).expect("a");
        assert_eq!(c.rule, DecisionRule::Classifier);
        assert_eq!(back.verify_score_with("zz", &probe, DecisionRule::Classifier, None), None);
    }

    #[test]
    fn enrolment_keeps_models_in_step_with_templates() {
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let cohort = cohort(&mut rng);
        let config = AdaptiveConfig::default();
        let mut g = Small::new();
        let (t0, t1, t2) = (tpl(&mut rng), tpl(&mut rng), tpl(&mut rng));
        g.enroll_fitted("w", &[t0], 1, false, Some(&cohort), &config).expect("create");
        let fit = |refs: &[Template]| WriterModel::fit(refs, &cohort, &config).expect("fit");
        assert_eq!(g.get("w").and_then(WriterEntry::model), Some(&fit(&[t0])));
        // Appending fits on old and new templates together.
        assert_eq!(g.enroll_fitted("w", &[t1], 2, false, Some(&cohort), &config), Ok(EnrollOutcome::Appended));
        assert_eq!(g.get("w").and_then(WriterEntry::model), Some(&fit(&[t0, t1])));
        // Replacing fits on the new ones only.
        assert_eq!(g.enroll_fitted("w", &[t2], 3, true, Some(&cohort), &config), Ok(EnrollOutcome::Replaced));
        assert_eq!(g.get("w").and_then(WriterEntry::model), Some(&fit(&[t2])));
        // Plain enrol drops a model that no longer describes the templates.
        g.enroll("w", &[t0], 4, false).expect("append");
        assert!(g.get("w").and_then(WriterEntry::model).is_none());
        // Errors leave the gallery unchanged (capacity 3 templates).
        let before = g.clone();
        assert!(matches!(
            g.enroll_fitted("w", &[t0, t1], 5, false, Some(&cohort), &config),
            Err(GalleryError::WriterFull { .. })
        ));
        assert_eq!(g.enroll_fitted("w", &[], 5, true, Some(&cohort), &config), Err(GalleryError::NoTemplates));
        assert_eq!(g, before);
        assert!(g.set_model("w", Some(fit(&[t2, t0]))));
        assert!(!g.set_model("nobody", None));
    }

    #[test]
    fn damaged_models_are_typed_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let g = sample(&mut rng);
        let good = g.to_bytes(&MODEL);
        // alice: id_len, "alice", two timestamps, count, two templates, then the model.
        let kind_at = HEADER_LEN + 1 + 5 + 8 + 8 + 2 + 2 * EMBEDDING_DIM;
        assert_eq!(good[kind_at], MODEL_V1);
        let model_at = kind_at + 1;
        assert_eq!(
            &good[model_at..model_at + WriterModel::BYTES],
            &g.get("alice").and_then(WriterEntry::model).expect("model").to_bytes()
        );
        for (offset, value) in
            [(0usize, f32::NAN), (4, 0.0), (4, f32::NEG_INFINITY), (8, f32::INFINITY), (12, f32::NAN)]
        {
            let mut b = good.clone();
            b[model_at + offset..model_at + offset + 4].copy_from_slice(&value.to_le_bytes());
            resign(&mut b);
            let err = Small::from_bytes(&b, None).err();
            assert!(
                matches!(&err, Some(GalleryError::BadWriterModel { id, .. }) if id == "alice"),
                "{offset}: {err:?}"
            );
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("alice") && msg.contains("enrol"), "{msg}");
        }
        // An unknown model kind, and a model announced where none is stored (bob has none).
        let mut b = good.clone();
        b[kind_at] = 7;
        resign(&mut b);
        assert_eq!(Small::from_bytes(&b, None).err(), Some(GalleryError::Malformed("unknown writer model kind")));
        let mut b = good.clone();
        b[kind_at] = MODEL_NONE;
        resign(&mut b);
        assert!(Small::from_bytes(&b, None).is_err());
        // After alice's model: her (empty) dynamic length, then bob's entry.
        let bob_kind = model_at + WriterModel::BYTES + 4 + 1 + 3 + 8 + 8 + 2 + EMBEDDING_DIM;
        assert_eq!(good[bob_kind], MODEL_NONE);
        let mut b = good.clone();
        b[bob_kind] = MODEL_V1;
        resign(&mut b);
        assert!(Small::from_bytes(&b, None).is_err());
        // A model cut short by the end of the data.
        let mut b = good[..model_at + 100].to_vec();
        let total = (b.len() + TRAILER_LEN) as u64;
        b[OFF_TOTAL_LEN..OFF_TOTAL_LEN + 8].copy_from_slice(&total.to_le_bytes());
        b.extend_from_slice(&[0; TRAILER_LEN]);
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::Malformed(_))));
    }

    #[test]
    fn kiosk_gallery_is_built_on_the_heap() {
        // 256 KiB of stack, far less than one KioskGallery: building one by value on the
        // stack would overflow (and abort the test binary).
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                assert!(size_of::<KioskGallery>() > 1024 * 1024);
                // With a writer model and a dynamic template slot per writer (the module docs
                // say about 1.7 MiB).
                assert!(size_of::<KioskGallery>() < 1800 * 1024, "{}", size_of::<KioskGallery>());
                let mut g = KioskGallery::new_boxed();
                let mut rng = ChaCha8Rng::seed_from_u64(5);
                for i in 0..KioskGallery::WRITER_CAPACITY {
                    let n = 1 + i % 8;
                    let templates: Vec<Template> = (0..n).map(|_| tpl(&mut rng)).collect();
                    g.enroll(&format!("writer-{i:04}"), &templates, i as u64, false).expect("enroll");
                }
                assert!(g.is_full());
                let bytes = g.to_bytes(&MODEL);
                let (back, header) = KioskGallery::from_bytes(&bytes, Some(&MODEL)).expect("round trip");
                assert_eq!(header.writer_count, 1024);
                assert!(*back == *g);
                let probe = tpl(&mut rng);
                let top = back.top_k::<5>(&probe);
                assert_eq!(top.len(), 5);
            })
            .expect("spawn");
        handle.join().expect("no panic");
    }

    #[test]
    fn each_parse_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let g = sample(&mut rng);
        let good = g.to_bytes(&MODEL);

        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Small::from_bytes(&b, None).err(), Some(GalleryError::BadMagic));
        assert_eq!(Small::from_bytes(b"PK\x03\x04", None).err(), Some(GalleryError::BadMagic));
        assert_eq!(Small::from_bytes(b"", None).err(), Some(GalleryError::Truncated { expected: 100, found: 0 }));

        for version in [0u32, GALLERY_FORMAT_VERSION + 1, u32::MAX] {
            let mut b = good.clone();
            b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&version.to_le_bytes());
            assert_eq!(
                Small::from_bytes(&b, None).err(),
                Some(GalleryError::UnsupportedVersion { found: version, supported: GALLERY_FORMAT_VERSION })
            );
        }

        let cut = &good[..good.len() - 1];
        assert_eq!(
            Small::from_bytes(cut, None).err(),
            Some(GalleryError::Truncated { expected: good.len() as u64, found: good.len() as u64 - 1 })
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(Small::from_bytes(&long, None), Err(GalleryError::Malformed(_))));

        let mut b = good.clone();
        b[HEADER_LEN + 10] ^= 0x01;
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::ChecksumMismatch { .. })));
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0x80;
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::ChecksumMismatch { .. })));

        let other = [9u8; 32];
        assert_eq!(
            Small::from_bytes(&good, Some(&other)).err(),
            Some(GalleryError::ModelMismatch { expected: hex::encode(other), found: hex::encode(MODEL) })
        );
        let msg = Small::from_bytes(&good, Some(&other)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains(&hex::encode(other)) && msg.contains(&hex::encode(MODEL)), "{msg}");

        let mut b = good.clone();
        b[OFF_DIM..OFF_DIM + 4].copy_from_slice(&64u32.to_le_bytes());
        resign(&mut b);
        assert_eq!(
            Small::from_bytes(&b, None).err(),
            Some(GalleryError::DimensionMismatch { found: 64, expected: 128 })
        );

        // More writers than this build holds.
        assert_eq!(
            Gallery::<2, 3>::from_bytes(&good, None).err(),
            Some(GalleryError::CapacityExceeded { what: "writers", found: 3, capacity: 2 })
        );
        // More templates per writer than this build holds ("zoë ünïcode" has 3).
        assert_eq!(
            Gallery::<4, 2>::from_bytes(&good, None).err(),
            Some(GalleryError::CapacityExceeded { what: "templates for one writer", found: 3, capacity: 2 })
        );

        // An invalid id inside a correctly signed file ("alice" is the first entry).
        let mut b = good.clone();
        assert_eq!(&b[HEADER_LEN + 1..HEADER_LEN + 6], b"alice");
        b[HEADER_LEN + 2] = b'\n';
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::InvalidId { .. })));
        let mut b = good.clone();
        b[HEADER_LEN + 2] = 0xff;
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::InvalidId { .. })));

        // Unsorted ids.
        let mut b = good.clone();
        b[HEADER_LEN + 1] = b'z';
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::Malformed(_))));

        // A recorded writer count that does not match the entries.
        let mut b = good.clone();
        b[OFF_WRITER_COUNT..OFF_WRITER_COUNT + 4].copy_from_slice(&2u32.to_le_bytes());
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::Malformed(_))));
        let mut b = good.clone();
        b[OFF_WRITER_COUNT..OFF_WRITER_COUNT + 4].copy_from_slice(&4u32.to_le_bytes());
        resign(&mut b);
        assert!(matches!(Small::from_bytes(&b, None), Err(GalleryError::Malformed(_))));

        // Errors render as readable messages.
        for e in [GalleryError::BadMagic, GalleryError::NoTemplates, GalleryError::ZeroEmbedding] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn no_panic_on_damaged_bytes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let good = sample(&mut rng).to_bytes(&MODEL);

        // Every truncation is an error.
        for n in 0..good.len() {
            assert!(Small::from_bytes(&good[..n], Some(&MODEL)).is_err(), "truncated to {n} bytes");
        }
        // Every single-bit flip is an error.
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                assert!(Small::from_bytes(&b, None).is_err(), "bit {bit} of byte {i} flipped");
            }
        }
        // Random multi-byte damage is an error.
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..b.len());
                b[i] = b[i].wrapping_add(rng.random_range(1..=255));
            }
            if b != good {
                assert!(Small::from_bytes(&b, None).is_err());
            }
        }
        // Damage hidden behind a valid checksum must not panic either (it may parse).
        for _ in 0..5000 {
            let mut b = good.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(HEADER_LEN - 4..b.len() - TRAILER_LEN);
                b[i] = rng.random();
            }
            resign(&mut b);
            let _ = Small::from_bytes(&b, None);
        }
        // Random garbage with a valid header and checksum.
        for len in 0..300 {
            let mut b: Vec<u8> = (0..HEADER_LEN + len + TRAILER_LEN).map(|_| rng.random()).collect();
            b[..8].copy_from_slice(&GALLERY_MAGIC);
            b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&(1 + (len as u32 % 2)).to_le_bytes());
            let total = b.len() as u64;
            b[OFF_TOTAL_LEN..OFF_TOTAL_LEN + 8].copy_from_slice(&total.to_le_bytes());
            b[OFF_DIM..OFF_DIM + 4].copy_from_slice(&128u32.to_le_bytes());
            b[OFF_WRITER_COUNT..OFF_WRITER_COUNT + 4].copy_from_slice(&rng.random_range(0u32..6).to_le_bytes());
            resign(&mut b);
            let _ = Small::from_bytes(&b, None);
        }
    }
}
