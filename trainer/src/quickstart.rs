//! `autograph-train quickstart`: the whole job in one command, sized for a CPU.
//!
//! Finds data, trains a small model on a writer-disjoint split, exports and quantizes the
//! bundle, evaluates it on the held-out writers (full report with plots), then enrols the test
//! writers in a gallery through the kiosk's own runtime library and verifies their held-out
//! genuine signatures and skilled forgeries, the way the kiosk would decide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autograph_device::commands::enroll::{enroll_dynamic, enroll_fitted};
use autograph_device::commands::{Against, CommandError, OperatingPointArgs, Point};
use autograph_device::crypt::KeyFile;
use autograph_device::decision::{Decision, Modality, Policy, verify, verify_with_pen};
use autograph_device::engine::{Bundle, Engine, EngineOptions, precision_name, rule_name};
use autograph_device::store;
use autograph_shared::adaptive::DecisionRule;
use autograph_shared::dataset::splits::WriterSplit;
use autograph_shared::dataset::{Dataset, ImageSource, Label, Sample};
use autograph_shared::evaluation::EvaluationReport;
use autograph_shared::gallery::KioskGallery;
use autograph_shared::online::{Trajectory, list_online_dataset, read_trajectory};
use burn::prelude::Device;
use serde::Serialize;

use crate::bundle::{RunInfo, RunSet, export_bundle, load_data, quantize_bundle, split_data};
use crate::dynamic::svc_key;
use crate::eval::{EvalRequest, run as run_eval};
use crate::train::{TrainingConfig, load_config_flag, train};

/// Where quickstart looks for data when neither `--data` nor `AUTOGRAPH_DATA` is given
/// (relative to the working directory: the shared data beside a checkout): the three real
/// signature sets with skilled forgeries, trained on together (those of them that exist).
pub const FALLBACK_DATA: [&str; 3] =
    ["../shared/data/bhsig260_hindi", "../shared/data/cedar_half", "../shared/data/svc2004"];

/// Epochs and steps measured to train in about 8 minutes on a 2-core CPU (64×128 inputs,
/// 16-32-64-128 channels, triplet loss, batches of 8 writers × (6 genuine + 2 forged)).
pub const EPOCHS: usize = 8;
pub const STEPS_PER_EPOCH: usize = 60;

/// The message when no data set can be found; says how to get one.
pub const NO_DATA_HELP: &str = "\
no data set found: pass --data DIR[,DIR...], set AUTOGRAPH_DATA=DIR[,DIR...], or put the data sets at
../shared/data/{bhsig260_hindi,cedar_half,svc2004}.
How to get data:
  autograph-train data list             the catalogue of known data sets
  autograph-train data fetch omniglot   downloads Omniglot (MIT licence; needs network)
  autograph-train data fetch svc2004    says how to obtain SVC2004 (research data, on request)
Signature sets (SVC2004, CEDAR, BHSig260) are distributed by their authors for research; any folder
laid out as <writer>/genuine/* and <writer>/forged/* works.";

/// `autograph-train quickstart`.
#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Data set directories, comma-separated, trained on together with a split per set
    /// [default: $AUTOGRAPH_DATA (comma-separated too), else those of
    /// ../shared/data/{bhsig260_hindi,cedar_half,svc2004} that exist].
    #[arg(long, value_delimiter = ',')]
    pub data: Vec<PathBuf>,
    /// Output directory for the run, bundle, report and gallery [default: runs/quickstart, or
    /// runs/quickstart-N if that exists].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A training configuration JSON to train instead of the default network, e.g.
    /// `configs/wide.json` (the best model measured; about 2.5× the training time). Its epochs and
    /// steps stand unless --epochs or --steps-per-epoch is given.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Training epochs [default: 8, or the --config file's].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimiser steps per epoch [default: 60, or the --config file's].
    #[arg(long)]
    pub steps_per_epoch: Option<usize>,
    /// Seed of the split, training and evaluation draws.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The data sets to use: `--data`, else `$AUTOGRAPH_DATA` (comma-separated), else those of
/// [`FALLBACK_DATA`] that exist.
pub fn find_data(explicit: &[PathBuf], env: Option<std::ffi::OsString>) -> Result<Vec<PathBuf>> {
    let check = |paths: Vec<PathBuf>, from: &str| -> Result<Vec<PathBuf>> {
        for path in &paths {
            if !path.is_dir() {
                bail!("{from} {}: no such directory\n{NO_DATA_HELP}", path.display());
            }
        }
        Ok(paths)
    };
    if !explicit.is_empty() {
        return check(explicit.to_vec(), "--data");
    }
    if let Some(env) = env.filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> =
            env.to_string_lossy().split(',').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        return check(paths, "AUTOGRAPH_DATA:");
    }
    let found: Vec<PathBuf> = FALLBACK_DATA.iter().map(PathBuf::from).filter(|p| p.is_dir()).collect();
    if found.is_empty() {
        bail!("{NO_DATA_HELP}")
    }
    Ok(found)
}

/// The training configuration: `--config`'s file, else the CPU-sized default network at
/// [`EPOCHS`] × [`STEPS_PER_EPOCH`]; `--epochs`, `--steps-per-epoch` and `--seed` override it.
pub fn config(args: &QuickstartArgs) -> Result<TrainingConfig> {
    let mut config = match &args.config {
        Some(path) => load_config_flag(path)?,
        None => TrainingConfig::new().with_epochs(EPOCHS).with_steps_per_epoch(STEPS_PER_EPOCH),
    };
    if let Some(epochs) = args.epochs {
        config.epochs = epochs;
    }
    if let Some(steps) = args.steps_per_epoch {
        config.steps_per_epoch = steps;
    }
    config.seed = args.seed;
    config.validate()?;
    Ok(config)
}

fn fresh_out_dir() -> PathBuf {
    let base = PathBuf::from("runs/quickstart");
    if !base.exists() {
        return base;
    }
    (2..).map(|n| PathBuf::from(format!("runs/quickstart-{n}"))).find(|p| !p.exists()).unwrap_or(base)
}

/// What the kiosk decided for the test writers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KioskOutcome {
    pub runtime: String,
    pub precision: String,
    pub gallery: PathBuf,
    pub writers_enrolled: usize,
    pub references_per_writer: usize,
    pub threshold: f32,
    /// Which calibration the threshold is from (`skilled` or `random`).
    pub against: String,
    /// The point on it (`eer`, verify's default).
    pub point: Point,
    /// The bundle's decision rule (`nearest`, `normalised`, `classifier`, `consistency` or `subspace`).
    pub rule: String,
    #[serde(flatten)]
    pub decisions: Decisions,
    /// Genuine probes rejected by the replay guard (counted in `genuine_rejected`).
    pub genuine_flagged_as_replay: usize,
    pub unreadable: usize,
    /// The same writers' SVC2004 signatures as pen captures (image and Task 2 trajectory),
    /// enrolled with both and decided on the fused score, when the bundle has a fusion.
    pub pen: Option<PenOutcome>,
    /// The same probes decided at other points, for comparison: the bundle's rule at the
    /// nearest-eer point (`verify --far nearest-eer`), and the nearest rule at its EER point
    /// (the kiosk before writer-adaptive rules).
    pub compared: Vec<ComparedPoint>,
}

/// The kiosk check's probes decided by another rule or threshold.
#[derive(Debug, Clone, Serialize)]
pub struct ComparedPoint {
    pub rule: String,
    pub point: Point,
    pub threshold: f32,
    #[serde(flatten)]
    pub decisions: Decisions,
}

/// Held-out genuine signatures and skilled forgeries, accepted and rejected.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Decisions {
    pub genuine_accepted: usize,
    pub genuine_rejected: usize,
    pub forgeries_accepted: usize,
    pub forgeries_rejected: usize,
}

impl Decisions {
    fn count(&mut self, label: Label, accepted: bool) {
        let n = match (label, accepted) {
            (Label::Genuine, true) => &mut self.genuine_accepted,
            (Label::Genuine, false) => &mut self.genuine_rejected,
            (Label::Forged, true) => &mut self.forgeries_accepted,
            (Label::Forged, false) => &mut self.forgeries_rejected,
        };
        *n += 1;
    }
}

/// The kiosk's decisions on pen captures (`autograph verify --strokes`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PenOutcome {
    pub writers_enrolled: usize,
    /// The fused score's threshold (skilled EER point of the bundle's fusion).
    pub threshold: f32,
    #[serde(flatten)]
    pub decisions: Decisions,
    /// Probes decided on the image alone although they had a trajectory (should be 0).
    pub not_fused: usize,
}

/// `summary.json` of a quickstart run.
#[derive(Debug, Clone, Serialize)]
pub struct QuickstartSummary {
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    pub bundle: PathBuf,
    pub report: PathBuf,
    pub seconds: f64,
    pub seconds_training: f64,
    pub split: WriterSplit,
    pub default_precision: String,
    pub kiosk: KioskOutcome,
    /// The pen-and-image fusion calibrated into the bundle, when SVC2004 Task 2 trajectories
    /// lie beside the SVC2004 images (`svc2004_online/`): test writers' figures per method.
    pub fusion: Option<crate::fuse::FuseReport>,
}

struct Steps {
    started: Instant,
    total: usize,
}

impl Steps {
    fn start(&self, n: usize, what: &str) {
        let t = self.started.elapsed().as_secs();
        eprintln!("[{n}/{}] {what} (at {}m{:02}s)", self.total, t / 60, t % 60);
    }
}

/// Runs every step; the CLI prints the summary.
pub fn run(args: &QuickstartArgs) -> Result<(QuickstartSummary, EvaluationReport)> {
    let steps = Steps { started: Instant::now(), total: 6 };
    let data = find_data(&args.data, std::env::var_os("AUTOGRAPH_DATA"))?;
    let out = args.out.clone().unwrap_or_else(fresh_out_dir);
    let (run_dir, bundle_dir, report_dir) = (out.join("run"), out.join("bundle"), out.join("report"));
    if run_dir.join("last").exists() || bundle_dir.exists() {
        bail!("{} already holds a quickstart run: pass another --out or remove it", out.display());
    }
    let config = config(args)?;

    let names: Vec<String> = data.iter().map(|d| d.display().to_string()).collect();
    steps.start(1, &format!("reading {}", names.join(", ")));
    let dataset = load_data(&data)?;
    let (split, per_set) = split_data(&dataset, 0.15, 0.2, args.seed);
    for s in &per_set {
        eprintln!(
            "      {}: {} writers -> train {}, validation {}, test {} (writer-disjoint)",
            s.set,
            s.split.train.len() + s.split.validation.len() + s.split.test.len(),
            s.split.train.len(),
            s.split.validation.len(),
            s.split.test.len()
        );
    }
    RunInfo {
        data: data.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect(),
        dataset: dataset.name.clone(),
        content_hash: dataset.content_hash.clone(),
        split: split.clone(),
        sets: RunSet::of(&dataset, &per_set),
    }
    .save(&run_dir)?;

    let device = Device::flex();
    steps.start(2, &format!("training {} epochs x {} steps on the CPU", config.epochs, config.steps_per_epoch));
    let training_started = Instant::now();
    let outcome = train(&config, &dataset, &split, &run_dir, &device, false)?;
    let seconds_training = training_started.elapsed().as_secs_f64();
    eprintln!(
        "      best epoch {:?}, validation score {:?}, {:.0} images/s",
        outcome.best_epoch, outcome.best_score, outcome.images_per_second
    );

    steps.start(3, "exporting the bundle (ONNX f32, thresholds from validation writers)");
    export_bundle(&run_dir, &bundle_dir, None, &device)?;

    steps.start(4, "quantizing to int8 (calibrated on training writers)");
    let (manifest, quantized) = quantize_bundle(&bundle_dir, &data)?;
    eprintln!("      {}", quantized.why);
    let fusion = match online_beside(&dataset) {
        Some((images, online)) => {
            eprintln!(
                "      calibrating the pen-and-image fusion on {} (SVC2004 validation writers)",
                online.display()
            );
            let args = crate::fuse::FuseArgs {
                bundle: bundle_dir.clone(),
                online,
                images: Some(images),
                references: 5,
                random_per_writer: 2,
                seed: args.seed,
                json: false,
            };
            let report = crate::fuse::calibrate(&args)?;
            for line in crate::fuse::markdown(&report).lines().filter(|l| l.starts_with('|')) {
                eprintln!("      {line}");
            }
            Some(report)
        }
        None => None,
    };

    steps.start(5, "evaluating on the held-out test writers (tract f32)");
    let mut request = EvalRequest::new(bundle_dir.clone(), data.clone());
    request.out = Some(report_dir.clone());
    let evaluated = run_eval(&request)?;

    steps.start(6, "enrolling test writers in a gallery and verifying through the kiosk runtime");
    let gallery = out.join("gallery.bin");
    let online = online_beside(&dataset).map(|(_, online)| online);
    let kiosk = kiosk_check(&bundle_dir, &dataset, &split.test, &gallery, online.as_deref())?;

    let summary = QuickstartSummary {
        data: data.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect(),
        out: out.clone(),
        bundle: bundle_dir,
        report: report_dir.join("report.md"),
        seconds: steps.started.elapsed().as_secs_f64(),
        seconds_training,
        split,
        default_precision: precision_name(manifest.precision_for(&autograph_shared::manifest::target_keys()).0).into(),
        kiosk,
        fusion,
    };
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((summary, evaluated.report))
}

/// The SVC2004 image set among the training data and its Task 2 trajectories, when they lie
/// side by side (`<data>/svc2004` and `<data>/svc2004_online`, as in `../shared/data`).
fn online_beside(dataset: &Dataset) -> Option<(PathBuf, PathBuf)> {
    let set = dataset.sets.iter().find(|s| s.name == "svc2004")?;
    let online = set.root.parent()?.join("svc2004_online");
    online.is_dir().then(|| (set.root.clone(), online))
}

fn template_of(engine: &mut Engine, sample: &Sample) -> Option<autograph_shared::gallery::Template> {
    let bytes = sample.source.read().ok()?;
    let image = engine.preprocess_bytes(&bytes).ok()?;
    engine.template(&image).ok()
}

/// Enrols each test writer's first R genuine signatures (R = the bundle's calibration R, at most
/// the gallery's capacity), fitting the writer model against the bundle's cohort as `autograph
/// enroll` does, and verifies every other genuine signature and every skilled forgery of that
/// writer with the bundle's default precision in tract, deciding as `autograph verify` does:
/// replay guard first, then the bundle's rule at its skilled-forgery EER threshold. The gallery
/// is encrypted under the key file [`gallery_key_of`] names (created if missing).
///
/// With `online` (SVC2004 Task 2 beside the SVC2004 images) and a bundle with a fusion, the
/// SVC2004 writers are also enrolled with their references' trajectories, and their probes that
/// have one are decided again as pen captures, as `autograph verify --strokes` decides.
pub fn kiosk_check(
    bundle_dir: &Path,
    dataset: &Dataset,
    writers: &[String],
    gallery: &Path,
    online: Option<&Path>,
) -> Result<KioskOutcome> {
    let bundle = Bundle::open(bundle_dir)?;
    let identity = bundle.model_identity();
    let precision = bundle.precision_or_default(None);
    let policy = Policy::resolve(
        &bundle,
        precision,
        &OperatingPointArgs { far: None, threshold: None, against: None },
        Against::Skilled,
    )?;
    let mut compared_policies = Vec::new();
    if policy.rule != DecisionRule::Nearest {
        let matched = OperatingPointArgs { far: Some(Point::NearestEerFar), threshold: None, against: None };
        // Bundles exported before the point was calibrated have none to compare.
        if let Ok(p) = Policy::resolve(&bundle, precision, &matched, Against::Skilled) {
            compared_policies.push(p);
        }
        compared_policies.push(Policy::nearest(policy.nearest_point, policy.replay_similarity));
    }
    let cohort = bundle.cohort_arc();
    let adaptive_config = bundle.adaptive_config();
    let mut engine = Engine::open(bundle, EngineOptions::default())?;
    let calibration = *engine.calibration();
    let against = match policy.point.against {
        Some(Against::Random) => "random",
        _ => "skilled",
    };
    let references = calibration.references.clamp(1, KioskGallery::TEMPLATE_CAPACITY);
    let mut out = KioskOutcome {
        runtime: engine.runtime().to_string(),
        precision: precision_name(engine.precision()).into(),
        gallery: gallery.to_path_buf(),
        references_per_writer: references,
        threshold: policy.point.threshold,
        against: against.into(),
        point: policy.point.point,
        rule: rule_name(policy.rule).into(),
        compared: compared_policies
            .iter()
            .map(|p| ComparedPoint {
                rule: rule_name(p.rule).into(),
                point: p.point.point,
                threshold: p.point.threshold,
                decisions: Decisions::default(),
            })
            .collect(),
        ..Default::default()
    };
    let gallery_file = store::GalleryFile::new(gallery, KeyFile::new(gallery_key_of(gallery)));
    // A sample's pen trajectory: SVC2004's `U<u>S<s>.jpg` is `U<u>S<s>.TXT` in Task 2.
    let fusing = online.filter(|_| policy.fusion.is_some());
    let task2: HashMap<(u32, u32), PathBuf> = match fusing {
        Some(dir) => list_online_dataset(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .samples
            .into_iter()
            .filter_map(|s| Some((s.path.file_name().and_then(|n| n.to_str()).and_then(svc_key)?, s.path)))
            .collect(),
        None => HashMap::new(),
    };
    let trajectory_of = |sample: &Sample| -> Option<Trajectory> {
        if dataset.set_of(&sample.writer) != "svc2004" {
            return None;
        }
        let ImageSource::File(path) = &sample.source else { return None };
        let key = path.file_name()?.to_str().and_then(svc_key)?;
        read_trajectory(task2.get(&key)?).ok()
    };
    let mut pen = fusing
        .map(|_| PenOutcome { threshold: policy.fusion.map_or(f32::NAN, |f| f.point.threshold), ..Default::default() });
    let mut probes: Vec<(String, Label, autograph_shared::gallery::Template, Option<Trajectory>)> = Vec::new();
    for writer in writers {
        let genuine: Vec<&Sample> =
            dataset.samples.iter().filter(|s| &s.writer == writer && s.label == Label::Genuine).collect();
        if genuine.len() <= references {
            continue;
        }
        let mut templates = Vec::with_capacity(references);
        for s in &genuine[..references] {
            match template_of(&mut engine, s) {
                Some(t) => templates.push(t),
                None => out.unreadable += 1,
            }
        }
        if templates.is_empty() {
            continue;
        }
        // Every reference's trajectory, or none (a template of some would not match the images).
        let trajectories: Option<Vec<Trajectory>> = genuine[..references].iter().map(|s| trajectory_of(s)).collect();
        let now = now_unix();
        store::update(&gallery_file, &identity, |g| {
            enroll_fitted(g, writer, &templates, now, true, cohort.as_deref(), &adaptive_config)?;
            if let Some(trajectories) = &trajectories {
                enroll_dynamic(g, writer, trajectories)?;
            }
            Ok::<_, CommandError>(())
        })?;
        out.writers_enrolled += 1;
        if let (Some(pen), Some(_)) = (&mut pen, &trajectories) {
            pen.writers_enrolled += 1;
        }
        let forged = dataset.samples.iter().filter(|s| &s.writer == writer && s.label == Label::Forged);
        for s in genuine[references..].iter().copied().chain(forged) {
            match template_of(&mut engine, s) {
                Some(t) => {
                    probes.push((writer.clone(), s.label, t, trajectories.as_ref().and_then(|_| trajectory_of(s))))
                }
                None => out.unreadable += 1,
            }
        }
    }
    // Verify against the gallery as stored on disk (what a later `autograph verify` would read).
    let stored = store::load(&gallery_file, Some(&identity))?;
    for (writer, label, probe, trajectory) in &probes {
        if let (Some(pen), Some(trajectory)) = (&mut pen, trajectory) {
            let v = verify_with_pen(&stored, writer, probe, Some(trajectory), &policy);
            pen.not_fused += usize::from(v.modality != Modality::Fused);
            pen.decisions.count(*label, v.decision == Decision::Accepted);
        }
        for (p, c) in compared_policies.iter().zip(&mut out.compared) {
            c.decisions.count(*label, verify(&stored, writer, probe, p).decision == Decision::Accepted);
        }
        let v = verify(&stored, writer, probe, &policy);
        out.decisions.count(*label, v.decision == Decision::Accepted);
        out.genuine_flagged_as_replay +=
            usize::from(*label == Label::Genuine && v.decision == Decision::PossibleReplay);
    }
    out.pen = pen;
    Ok(out)
}

/// The key file of the quickstart's gallery: `gallery.key` beside it, so the run directory is
/// self-contained (its writers are public data-set writers). A kiosk keeps its key elsewhere.
pub fn gallery_key_of(gallery: &Path) -> PathBuf {
    gallery.with_extension("key")
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn pct(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map_or_else(|| "n/a".into(), |x| format!("{:.2}%", x * 100.0))
}

/// The short summary printed at the end.
pub fn summary_text(summary: &QuickstartSummary, report: &EvaluationReport) -> String {
    let minutes = |s: f64| format!("{}m{:02}s", (s as u64) / 60, (s as u64) % 60);
    let primary = report.verification_at(report.primary_references).and_then(|e| e.test);
    let k = &summary.kiosk;
    let rate = |a: usize, b: usize| {
        if a + b == 0 { "n/a".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / (a + b) as f64) }
    };
    let decisions = |d: &Decisions| {
        format!(
            "             held-out genuine {} accepted / {} rejected ({} accepted); skilled forgeries {} accepted / {} rejected ({} rejected)",
            d.genuine_accepted,
            d.genuine_rejected,
            rate(d.genuine_accepted, d.genuine_rejected),
            d.forgeries_accepted,
            d.forgeries_rejected,
            rate(d.forgeries_rejected, d.forgeries_accepted)
        )
    };
    let mut lines = vec![
        format!("quickstart finished in {} (training {})", minutes(summary.seconds), minutes(summary.seconds_training)),
        format!(
            "  data       {} ({} test writers held out from training and calibration)",
            summary.data.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            summary.split.test.len()
        ),
        format!("  bundle     {} (kiosk default precision {})", summary.bundle.display(), summary.default_precision),
        format!(
            "  test EER   skilled {}, random {} (R={} references, tract f32; AUC skilled {})",
            pct(primary.and_then(|m| m.skilled.map(|s| s.eer))),
            pct(primary.and_then(|m| m.random.map(|r| r.eer))),
            report.primary_references,
            primary.and_then(|m| m.skilled).map_or_else(|| "n/a".into(), |s| format!("{:.3}", s.auc))
        ),
        format!(
            "  kiosk      {} writers enrolled ({} references each, {} {}), {} rule, threshold {:.4} ({} {}):",
            k.writers_enrolled,
            k.references_per_writer,
            k.runtime,
            k.precision,
            k.rule,
            k.threshold,
            k.against,
            k.point
        ),
        decisions(&k.decisions),
    ];
    for c in &k.compared {
        lines.push(format!("  compared   {} rule, threshold {:.4} ({} {}):", c.rule, c.threshold, k.against, c.point));
        lines.push(decisions(&c.decisions));
    }
    if let Some(p) = &k.pen {
        lines.push(format!(
            "  pen        {} SVC2004 writers also enrolled with their pen trajectories, fused score, threshold {:.4}:",
            p.writers_enrolled, p.threshold
        ));
        lines.push(decisions(&p.decisions));
    }
    if let Some(l) = &report.leakage {
        lines.push(format!("  leakage    background-only EER {} (chance is 50%)", pct(Some(l.background_only_eer))));
    }
    lines.push(format!("  gallery    {} (key {})", k.gallery.display(), gallery_key_of(&k.gallery).display()));
    lines.push(format!("  report     {}", summary.report.display()));
    lines.join("\n")
}

/// The `quickstart` command.
pub fn run_cli(args: QuickstartArgs) -> Result<ExitCode> {
    let (summary, report) = run(&args)?;
    println!("{}", summary_text(&summary, &report));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>, epochs: Option<usize>) -> QuickstartArgs {
        QuickstartArgs { data: vec![], out: None, config, epochs, steps_per_epoch: None, seed: 7 }
    }

    #[test]
    fn config_defaults_to_the_cpu_sized_network() {
        let c = config(&args(None, None)).expect("default config");
        assert_eq!((c.epochs, c.steps_per_epoch, c.seed), (EPOCHS, STEPS_PER_EPOCH, 7));
        assert_eq!(c.model.channels, vec![16, 32, 64, 128]);
    }

    #[test]
    fn config_file_trains_its_network_and_flags_override_its_schedule() {
        let wide = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/wide.json"));
        let c = config(&args(Some(wide.clone()), None)).expect("configs/wide.json loads");
        assert_eq!(c.model.channels, vec![32, 64, 128, 256]);
        assert_eq!((c.epochs, c.seed), (10, 7), "the file's epochs, the flag's seed");
        let c = config(&args(Some(wide), Some(3))).expect("configs/wide.json loads");
        assert_eq!((c.epochs, c.model.channels[0]), (3, 32));
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = config(&args(Some(PathBuf::from("no/such.json")), None)).expect_err("refused");
        assert!(err.to_string().contains("--config no/such.json"), "{err}");
    }
}
