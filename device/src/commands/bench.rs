//! `autograph bench`: latency of each stage on this machine, on one thread.
//!
//! Figures are medians and 95th percentiles over `--runs` timed runs after a few warm-up runs.
//! Embedding and end-to-end verification are measured for each runtime and precision that is
//! available (tract always; int8 when the bundle has it; ONNX Runtime with the `ort` feature and
//! `ORT_DYLIB_PATH`), and KNN over random templates in gallery-shaped storage.
//!
//! Writer-adaptive decisions are measured in the same run, as ratios against the nearest rule:
//! the gallery enrolment of 5 references with the writer-model fit (against the bundle's cohort,
//! or a synthetic one of 300 templates when the bundle has none) against one without, and the
//! decision for a probe template under each rule.
//!
//! The gallery file's encryption at rest is measured in the same run too, as ratios against the
//! plain path: loading a full kiosk gallery (what every `verify` does once) and saving it
//! atomically, in a scratch directory under the system's temporary directory.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;

use autograph_shared::adaptive::{Cohort, DecisionRule};
use autograph_shared::gallery::{EMBEDDING_DIM, Gallery, KioskGallery, Template};
use autograph_shared::manifest::Precision;
use autograph_shared::online::{DynamicSettings, DynamicTemplate, Fusion, ScoreStats, Trajectory};
use autograph_shared::strokes::synth;
use image::{GrayImage, ImageEncoder, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{BundleArgs, CommandError, Exit, OperatingPoint, Point, Report};
use crate::crypt::KeyFile;
use crate::decision::{self, FusionPolicy, Modality, Policy};
use crate::engine::{Bundle, Engine, EngineOptions, Runtime, precision_name, rule_name};
use crate::replay;
use crate::store::{self, GalleryFile};

/// Template counts the KNN benchmark searches.
pub const KNN_SIZES: [usize; 2] = [1_000, 10_000];
/// Templates per writer in the KNN benchmark (the kiosk gallery's capacity).
const KNN_TEMPLATES_PER_WRITER: usize = KioskGallery::TEMPLATE_CAPACITY;
/// Gallery shape big enough for 10,000 templates of 8 per writer.
type BenchGallery = Gallery<2048, KNN_TEMPLATES_PER_WRITER>;
/// References of the writer in the end-to-end verification.
const VERIFY_REFERENCES: usize = 5;
/// Templates of the synthetic cohort used when the bundle has none.
pub const SYNTHETIC_COHORT: usize = 300;
const WARMUP_RUNS: usize = 5;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// Timed runs per figure.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Signature image for preprocessing and end-to-end figures [default: a synthetic
    /// 900x300 scan].
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
}

/// Median and 95th percentile, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub p95: f64,
}

/// `--json` output of `bench`.
#[derive(Debug, Serialize)]
pub struct BenchJson {
    pub command: &'static str,
    pub runs: u32,
    pub threads: usize,
    /// Model input, `[height, width]`.
    pub input: [u32; 2],
    /// What this CPU is called in the manifest's `target_precision` (most specific first).
    pub target_keys: Vec<String>,
    /// The precision the kiosk uses here when none is asked for, and the `target_precision`
    /// key that chose it (`null`: the manifest's `default_precision`).
    pub default_precision: &'static str,
    pub default_precision_from: Option<String>,
    /// The image used: a path, or `synthetic WxH`.
    pub image: String,
    pub preprocess_ms: Stats,
    /// Keyed `tract_f32`, `tract_int8`, `ort_f32`, `ort_int8` (those available).
    pub embed_ms: BTreeMap<String, Stats>,
    /// Decode + preprocess + embed + score + replay check, same keys.
    pub verify_ms: BTreeMap<String, Stats>,
    /// Keyed by template count (`"1000"`, `"10000"`).
    pub knn_ms: BTreeMap<String, Stats>,
    /// Runtimes that could not be measured, and why.
    pub unavailable: BTreeMap<String, String>,
    /// Writer-adaptive enrolment and decisions.
    pub adaptive: AdaptiveBench,
    /// The gallery file's encryption at rest.
    pub gallery_file: GalleryFileBench,
    /// Pen captures: the dynamic template and the fused decision.
    pub pen: PenBench,
}

/// Costs of pen captures (issue #17), on synthetic signatures of the kiosk's signer, measured
/// in the same run as the image-only decision.
#[derive(Debug, Serialize)]
pub struct PenBench {
    /// References enrolled, and the mean length of their trajectories (100 Hz samples).
    pub references: usize,
    pub samples_per_signature: usize,
    /// Building the writer's dynamic template from its references' trajectories.
    pub enroll_dynamic_ms: Stats,
    /// The decision for one probe: `image` (the probe's template alone) and `fused` (plus its
    /// trajectory: features, DTW to every reference, fusion).
    pub decide_ms: BTreeMap<String, Stats>,
    /// Median fused decision against the image-only one.
    pub ratio_fused_vs_image: f64,
}

/// Costs of the gallery file's encryption at rest, measured in the same run as the plain path,
/// on a full kiosk gallery of random templates.
#[derive(Debug, Serialize)]
pub struct GalleryFileBench {
    pub writers: usize,
    pub templates: usize,
    /// Length of the plain gallery bytes, and of the encrypted file.
    pub plain_bytes: usize,
    pub encrypted_bytes: usize,
    /// Reading and checking the file, what `verify` does once: `plain` (read, checksum, parse)
    /// and `encrypted` (the same, plus reading the key file and decrypting).
    pub load_ms: BTreeMap<String, Stats>,
    /// Serialising and replacing the file atomically (temporary file, fsync, rename, directory
    /// fsync), what each enrolment does: `plain` and `encrypted` (plus the lock, the key file
    /// and encrypting).
    pub save_ms: BTreeMap<String, Stats>,
    /// Medians, encrypted against plain: `load`, `save`.
    pub ratio_vs_plain: BTreeMap<String, f64>,
    /// What encryption adds to each verify: median encrypted load minus median plain load.
    pub added_ms_per_verify: f64,
}

/// Costs of the writer-adaptive rules, measured in the same run as the nearest rule's.
#[derive(Debug, Serialize)]
pub struct AdaptiveBench {
    /// `bundle` (the bundle's cohort.bin) or `synthetic` (random templates).
    pub cohort: &'static str,
    pub cohort_templates: usize,
    /// References enrolled.
    pub references: usize,
    /// Gallery enrolment of the references (templates given, in memory): `nearest` (no writer
    /// model, what a bundle without a cohort does) and `fitted` (with the writer-model fit).
    pub enroll_ms: BTreeMap<String, Stats>,
    /// The decision for one probe template (replay guard, score, threshold), keyed by rule:
    /// `nearest`, `normalised`, `classifier`.
    pub decide_ms: BTreeMap<String, Stats>,
    /// Median against the nearest rule's: `enroll_fitted`, `decide_normalised`,
    /// `decide_classifier`.
    pub ratio_vs_nearest: BTreeMap<String, f64>,
}

pub fn run(args: &BenchArgs) -> Result<Report, CommandError> {
    let bundle = args.bundle.open()?;
    let runs = args.runs as usize;
    let (image_bytes, image_name) = match &args.image {
        Some(path) => (
            std::fs::read(path).map_err(|source| CommandError::Io { path: path.clone(), action: "read", source })?,
            path.display().to_string(),
        ),
        None => (synthetic_signature(900, 300), "synthetic 900x300".to_string()),
    };
    let config = bundle.manifest().preprocess.clone();
    let preprocessed = autograph_shared::preprocess_bytes(&image_bytes, &config)
        .map_err(|e| CommandError::Image(super::RejectedImage::new(&PathBuf::from(&image_name), &e)))?;
    let preprocess_ms = time(runs, || autograph_shared::preprocess_bytes(&image_bytes, &config).map(|_| ()))
        .map_err(|e| CommandError::Usage(e.to_string()))?;

    let mut embed_ms = BTreeMap::new();
    let mut verify_ms = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    for runtime in [Runtime::Tract, Runtime::Ort] {
        for precision in [Precision::F32, Precision::Int8] {
            let key = format!("{runtime}_{}", precision_name(precision));
            if bundle.manifest().model(precision).is_none() {
                unavailable.insert(key, format!("the bundle has no {} model", precision_name(precision)));
                continue;
            }
            let engine = match open(&bundle, runtime, precision) {
                Ok(engine) => engine,
                // tract must work on any valid bundle; ONNX Runtime may simply be absent.
                Err(e) if runtime == Runtime::Ort => {
                    unavailable.insert(key, e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (embed, verify) = measure_runtime(engine, &preprocessed, &image_bytes, runs)?;
            embed_ms.insert(key.clone(), embed);
            verify_ms.insert(key, verify);
        }
    }

    let mut knn_ms = BTreeMap::new();
    for size in KNN_SIZES {
        knn_ms.insert(size.to_string(), measure_knn(size, runs));
    }

    let adaptive = measure_adaptive(&bundle, runs)?;
    let gallery_file = measure_gallery_file(runs)?;
    let pen = measure_pen(runs)?;

    let target_keys = autograph_shared::manifest::target_keys();
    let (default_precision, default_precision_from) = bundle.manifest().precision_for(&target_keys);
    let json = BenchJson {
        command: "bench",
        runs: args.runs,
        threads: 1,
        input: [config.height, config.width],
        default_precision: precision_name(default_precision),
        default_precision_from: default_precision_from.map(str::to_string),
        target_keys,
        image: image_name,
        preprocess_ms,
        embed_ms,
        verify_ms,
        knn_ms,
        unavailable,
        adaptive,
        gallery_file,
        pen,
    };
    let text = table(&json);
    Ok(Report::new(Exit::Ok, &json, text))
}

fn open(bundle: &Bundle, runtime: Runtime, precision: Precision) -> Result<Engine, CommandError> {
    Ok(Engine::open(bundle.clone(), EngineOptions { runtime, precision: Some(precision), threads: 1 })?)
}

/// Embedding alone, and decode-to-decision verification, with one engine.
fn measure_runtime(
    mut engine: Engine,
    preprocessed: &autograph_shared::Preprocessed,
    image_bytes: &[u8],
    runs: usize,
) -> Result<(Stats, Stats), CommandError> {
    let reference = engine.template(preprocessed)?;
    let mut gallery = KioskGallery::new_boxed();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut references: Vec<Template> = (1..VERIFY_REFERENCES).map(|_| random_template(&mut rng)).collect();
    references.push(reference);
    gallery.enroll("bench", &references, 0, false)?;
    let replay_similarity = engine.calibration().replay_similarity;

    let embed = time(runs, || engine.embed_one(preprocessed).map(|e| black_box(e).len()))?;
    let verify = time(runs, || -> Result<bool, CommandError> {
        let image = engine.preprocess_bytes(image_bytes).map_err(|e| CommandError::Usage(e.to_string()))?;
        let probe = engine.template(&image)?;
        let writer = gallery.get("bench").ok_or_else(|| CommandError::Usage("bench writer missing".into()))?;
        let guard = replay::check(writer.templates(), &probe, replay_similarity);
        Ok(black_box(writer.score(&probe)) >= 0.5 && !guard.possible_replay)
    })?;
    Ok((embed, verify))
}

/// Enrolment with and without the writer-model fit, and a decision under each rule.
fn measure_adaptive(bundle: &Bundle, runs: usize) -> Result<AdaptiveBench, CommandError> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (cohort, source) = match bundle.cohort_arc() {
        Some(cohort) => (cohort, "bundle"),
        None => {
            let templates = (0..SYNTHETIC_COHORT).map(|_| random_template(&mut rng)).collect();
            (Arc::new(Cohort::new(templates).map_err(|e| CommandError::Usage(e.to_string()))?), "synthetic")
        }
    };
    let config = bundle.adaptive_config();
    let references: Vec<Template> = (0..VERIFY_REFERENCES).map(|_| random_template(&mut rng)).collect();
    let mut gallery = KioskGallery::new_boxed();

    let mut enroll_ms = BTreeMap::new();
    enroll_ms.insert("nearest".to_string(), time(runs, || gallery.enroll("bench", &references, 0, true))?);
    let fitted = time(runs, || gallery.enroll_fitted("bench", &references, 0, true, Some(&*cohort), &config))?;
    enroll_ms.insert("fitted".to_string(), fitted);

    // The writer now has a model; probes are random templates (never replays).
    let probes: Vec<Template> = (0..16).map(|_| random_template(&mut rng)).collect();
    let point = OperatingPoint { against: None, point: Point::Manual, threshold: 0.5 };
    let mut decide_ms = BTreeMap::new();
    for rule in DecisionRule::ALL {
        let policy = Policy { rule, cohort: Some(Arc::clone(&cohort)), ..Policy::nearest(point, 0.999) };
        let mut i = 0;
        let stats = time(runs, || {
            i += 1;
            let checked = decision::verify(&gallery, "bench", &probes[i % probes.len()], &policy);
            if checked.rule != rule {
                return Err(CommandError::Usage(format!("bench: the {} rule fell back", rule_name(rule))));
            }
            Ok(black_box(checked.decision))
        })?;
        decide_ms.insert(rule_name(rule).to_string(), stats);
    }
    let mut ratio_vs_nearest = BTreeMap::new();
    let ratio = |map: &BTreeMap<String, Stats>, key: &str| map[key].median / map["nearest"].median;
    ratio_vs_nearest.insert("enroll_fitted".to_string(), ratio(&enroll_ms, "fitted"));
    for rule in DecisionRule::ALL.into_iter().filter(|&r| r != DecisionRule::Nearest).map(rule_name) {
        ratio_vs_nearest.insert(format!("decide_{rule}"), ratio(&decide_ms, rule));
    }
    Ok(AdaptiveBench {
        cohort: source,
        cohort_templates: cohort.len(),
        references: VERIFY_REFERENCES,
        enroll_ms,
        decide_ms,
        ratio_vs_nearest,
    })
}

/// Enrolment of a dynamic template and a fused decision against an image-only one, on the
/// synthetic signer's recordings (writer 7: references 0..5, probes 10..26).
fn measure_pen(runs: usize) -> Result<PenBench, CommandError> {
    let trajectory = |sample: u64| -> Result<Trajectory, CommandError> {
        let recording = synth::signature(7, sample, 600, 200).map_err(|e| CommandError::Usage(e.to_string()))?;
        Trajectory::try_from(&recording).map_err(|e| CommandError::Usage(format!("bench: {e}")))
    };
    let references = (0..VERIFY_REFERENCES as u64).map(trajectory).collect::<Result<Vec<_>, _>>()?;
    let probes = (10..26).map(trajectory).collect::<Result<Vec<_>, _>>()?;
    let settings = DynamicSettings::default();
    let enroll_dynamic_ms = time(runs, || {
        DynamicTemplate::enrol(&references, &settings).map_err(|e| CommandError::Usage(format!("bench: {e}")))
    })?;
    let template =
        DynamicTemplate::enrol(&references, &settings).map_err(|e| CommandError::Usage(format!("bench: {e}")))?;

    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let images: Vec<Template> = (0..VERIFY_REFERENCES).map(|_| random_template(&mut rng)).collect();
    let mut gallery = KioskGallery::new_boxed();
    gallery.enroll("bench", &images, 0, true)?;
    gallery.set_dynamic("bench", Some(template))?;
    let image_probes: Vec<Template> = (0..16).map(|_| random_template(&mut rng)).collect();
    let point = OperatingPoint { against: None, point: Point::Manual, threshold: 0.5 };
    let fusion = Fusion {
        dynamic: ScoreStats { mean: 0.4, std: 0.1 },
        image: ScoreStats { mean: 0.8, std: 0.3 },
        w_dynamic: 5.0,
        w_image: 5.0,
        bias: -5.0,
    };
    let policy = Policy { fusion: Some(FusionPolicy { fusion, point }), ..Policy::nearest(point, 0.999) };
    let mut decide_ms = BTreeMap::new();
    for (name, pen) in [("image", false), ("fused", true)] {
        let mut i = 0;
        let stats = time(runs, || {
            i += 1;
            let trajectory = pen.then(|| &probes[i % probes.len()]);
            let checked = decision::verify_with_pen(&gallery, "bench", &image_probes[i % 16], trajectory, &policy);
            if checked.modality != if pen { Modality::Fused } else { Modality::Image } {
                return Err(CommandError::Usage("bench: the pen capture was not fused".into()));
            }
            Ok(black_box(checked.decision))
        })?;
        decide_ms.insert(name.to_string(), stats);
    }
    Ok(PenBench {
        references: VERIFY_REFERENCES,
        samples_per_signature: references.iter().map(Trajectory::len).sum::<usize>() / references.len(),
        enroll_dynamic_ms,
        ratio_fused_vs_image: decide_ms["fused"].median / decide_ms["image"].median,
        decide_ms,
    })
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, CommandError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("autograph-bench-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|source| CommandError::Io {
            path: dir.clone(),
            action: "create the scratch directory",
            source,
        })?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loading and saving a full kiosk gallery, plain and encrypted, in a scratch directory.
fn measure_gallery_file(runs: usize) -> Result<GalleryFileBench, CommandError> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut gallery = KioskGallery::new_boxed();
    for w in 0..KioskGallery::WRITER_CAPACITY {
        let templates: Vec<Template> =
            (0..KioskGallery::TEMPLATE_CAPACITY).map(|_| random_template(&mut rng)).collect();
        gallery.enroll(&format!("writer-{w:05}"), &templates, 0, false)?;
    }
    let identity = [0x5a; 32];
    let scratch = Scratch::new()?;
    let plain = scratch.path().join("plain.bin");
    let file =
        GalleryFile::new(scratch.path().join("encrypted.bin"), KeyFile::new(scratch.path().join("key/gallery.key")));

    // Plain and encrypted alternate run by run, so that a busy machine slows both alike.
    let (plain_save, encrypted_save) = time_pair(
        runs,
        || store::write_replacing(&plain, &gallery.to_bytes(&identity)),
        || store::save(&file, &gallery, &identity),
    )?;
    let (plain_load, encrypted_load) = time_pair(
        runs,
        || -> Result<usize, CommandError> {
            let bytes = store::read_file(&plain)?;
            Ok(KioskGallery::from_bytes(&bytes, Some(&identity))?.0.len())
        },
        || Ok(store::load(&file, Some(&identity))?.len()),
    )?;
    let save_ms = BTreeMap::from([("plain".to_string(), plain_save), ("encrypted".to_string(), encrypted_save)]);
    let load_ms = BTreeMap::from([("plain".to_string(), plain_load), ("encrypted".to_string(), encrypted_load)]);

    let len = |path: &Path| std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0);
    let ratio = |map: &BTreeMap<String, Stats>| map["encrypted"].median / map["plain"].median;
    let ratio_vs_plain = BTreeMap::from([("load".to_string(), ratio(&load_ms)), ("save".to_string(), ratio(&save_ms))]);
    Ok(GalleryFileBench {
        writers: gallery.len(),
        templates: gallery.template_count(),
        plain_bytes: len(&plain),
        encrypted_bytes: len(file.path()),
        added_ms_per_verify: load_ms["encrypted"].median - load_ms["plain"].median,
        load_ms,
        save_ms,
        ratio_vs_plain,
    })
}

/// Top-5 over `templates` random templates, 8 per writer.
fn measure_knn(templates: usize, runs: usize) -> Stats {
    let mut rng = ChaCha8Rng::seed_from_u64(templates as u64);
    let mut gallery = BenchGallery::new_boxed();
    for w in 0..templates.div_ceil(KNN_TEMPLATES_PER_WRITER) {
        let n = KNN_TEMPLATES_PER_WRITER.min(templates - w * KNN_TEMPLATES_PER_WRITER);
        let t: Vec<Template> = (0..n).map(|_| random_template(&mut rng)).collect();
        // Cannot fail: ids are valid and unique, 1250 writers fit 2048.
        let _ = gallery.enroll(&format!("w{w:05}"), &t, 0, false);
    }
    let probes: Vec<Template> = (0..16).map(|_| random_template(&mut rng)).collect();
    let mut i = 0;
    let stats = time(runs, || {
        i += 1;
        Ok::<_, std::convert::Infallible>(black_box(gallery.top_k::<5>(&probes[i % probes.len()])).len())
    });
    match stats {
        Ok(s) => s,
        Err(never) => match never {},
    }
}

fn random_template(rng: &mut ChaCha8Rng) -> Template {
    loop {
        let v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        if let Ok(t) = Template::from_embedding(&v) {
            return t;
        }
    }
}

/// Runs `f` a few times to warm up, then `runs` timed times.
fn time<T, E>(runs: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<Stats, E> {
    for _ in 0..WARMUP_RUNS.min(runs) {
        black_box(f()?);
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        black_box(f()?);
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(Stats { median: percentile(&ms, 0.5), p95: percentile(&ms, 0.95) })
}

/// [`time`] for two functions measured alternately, run by run.
fn time_pair<A, B, E>(
    runs: usize,
    mut a: impl FnMut() -> Result<A, E>,
    mut b: impl FnMut() -> Result<B, E>,
) -> Result<(Stats, Stats), E> {
    for _ in 0..WARMUP_RUNS.min(runs) {
        black_box(a()?);
        black_box(b()?);
    }
    let (mut ms_a, mut ms_b) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let start = Instant::now();
        black_box(a()?);
        ms_a.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        black_box(b()?);
        ms_b.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let stats = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        Stats { median: percentile(&ms, 0.5), p95: percentile(&ms, 0.95) }
    };
    Ok((stats(ms_a), stats(ms_b)))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A signature-like scan: grey paper, a dark looping stroke, a little noise. Deterministic.
pub fn synthetic_signature(width: u32, height: u32) -> Vec<u8> {
    let mut img = GrayImage::from_pixel(width, height, Luma([235]));
    let (w, h) = (width as f32, height as f32);
    let steps = 4000;
    for i in 0..steps {
        let t = i as f32 / steps as f32;
        let x = w * (0.1 + 0.8 * t);
        let y = h * (0.5 + 0.25 * (t * 23.0).sin() * (t * 3.0).cos());
        for dy in -2i32..=2 {
            for dx in -2i32..=2 {
                let (px, py) = (x as i32 + dx, y as i32 + dy);
                if px >= 0 && py >= 0 && (px as u32) < width && (py as u32) < height {
                    img.put_pixel(px as u32, py as u32, Luma([30]));
                }
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for p in img.pixels_mut() {
        p.0[0] = p.0[0].saturating_add_signed(rng.random_range(-6i8..=6));
    }
    let mut out = Vec::new();
    // Encoding an in-memory 8-bit image to PNG cannot fail. The encoder is named directly (see
    // `Headless::save_png`).
    let _ = image::codecs::png::PngEncoder::new(&mut out).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::L8,
    );
    out
}

fn table(j: &BenchJson) -> String {
    let mut out = format!(
        "autograph bench: 1 thread, {} runs, model input {}x{}, image {}\n{:<34}{:>11}{:>11}{:>10}\n",
        j.runs, j.input[0], j.input[1], j.image, "", "median ms", "p95 ms", "vs ort"
    );
    let row = |out: &mut String, name: &str, s: &Stats, ratio: Option<f64>| {
        let ratio = ratio.map_or_else(String::new, |r| format!("{r:.2}x"));
        out.push_str(&format!("{name:<34}{:>11.3}{:>11.3}{ratio:>10}\n", s.median, s.p95));
    };
    out.push_str(&format!(
        "this CPU: {}; default precision here {} ({})\n",
        j.target_keys.join(", "),
        j.default_precision,
        j.default_precision_from
            .as_ref()
            .map_or_else(|| "the manifest's default_precision".to_string(), |k| format!("target_precision.{k}"))
    ));
    row(&mut out, "preprocess", &j.preprocess_ms, None);
    for (what, map) in [("embed", &j.embed_ms), ("verify (end to end)", &j.verify_ms)] {
        for (key, s) in map {
            let ort_key = key.replacen("tract_", "ort_", 1);
            let ratio = map.get(&ort_key).map(|o| s.median / o.median);
            row(&mut out, &format!("{what} {key}"), s, ratio);
        }
    }
    for size in KNN_SIZES {
        if let Some(s) = j.knn_ms.get(&size.to_string()) {
            row(&mut out, &format!("knn top-5, {size} templates"), s, None);
        }
    }
    let a = &j.adaptive;
    out.push_str(&format!(
        "writer-adaptive: {} cohort of {} templates, {} references (last column: x the nearest rule)\n",
        a.cohort, a.cohort_templates, a.references
    ));
    let ratio = |key: &str| a.ratio_vs_nearest.get(key).copied();
    if let Some(s) = a.enroll_ms.get("nearest") {
        row(&mut out, "enroll, no writer model", s, None);
    }
    if let Some(s) = a.enroll_ms.get("fitted") {
        row(&mut out, "enroll, writer model fitted", s, ratio("enroll_fitted"));
    }
    for rule in DecisionRule::ALL.map(rule_name) {
        if let Some(s) = a.decide_ms.get(rule) {
            row(&mut out, &format!("decide, {rule} rule"), s, ratio(&format!("decide_{rule}")));
        }
    }
    if let (Some(fit), Some(nearest), Some(verify)) =
        (a.enroll_ms.get("fitted"), a.enroll_ms.get("nearest"), j.verify_ms.get("tract_f32"))
    {
        out.push_str(&format!(
            "the fit adds {:.2} ms to an enrolment ({:.2}x one end-to-end tract_f32 verify)\n",
            fit.median - nearest.median,
            (fit.median - nearest.median) / verify.median
        ));
    }
    let g = &j.gallery_file;
    out.push_str(&format!(
        "gallery file: {} writers, {} templates, {} bytes plain, {} encrypted (last column: x plain)\n",
        g.writers, g.templates, g.plain_bytes, g.encrypted_bytes
    ));
    for (what, map, key) in [("load", &g.load_ms, "load"), ("save", &g.save_ms, "save")] {
        if let Some(s) = map.get("plain") {
            row(&mut out, &format!("{what}, plain"), s, None);
        }
        if let Some(s) = map.get("encrypted") {
            row(&mut out, &format!("{what}, encrypted"), s, g.ratio_vs_plain.get(key).copied());
        }
    }
    if let Some(verify) = j.verify_ms.get("tract_f32") {
        out.push_str(&format!(
            "encryption adds {:.3} ms to each verify's gallery load ({:.2}x one end-to-end tract_f32 verify)\n",
            g.added_ms_per_verify,
            g.added_ms_per_verify / verify.median
        ));
    }
    let p = &j.pen;
    out.push_str(&format!(
        "pen captures: {} references of {} samples (100 Hz) each (last column: x the image-only decision)\n",
        p.references, p.samples_per_signature
    ));
    row(&mut out, "enroll dynamic template", &p.enroll_dynamic_ms, None);
    if let Some(s) = p.decide_ms.get("image") {
        row(&mut out, "decide, image only", s, None);
    }
    if let Some(s) = p.decide_ms.get("fused") {
        row(&mut out, "decide, fused with the pen", s, Some(p.ratio_fused_vs_image));
    }
    for (key, why) in &j.unavailable {
        out.push_str(&format!("not measured {key}: {why}\n"));
    }
    out.trim_end().to_string()
}
