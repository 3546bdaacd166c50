//! `autograph-train quickstart`: the whole job in one command, sized for a CPU.
//!
//! Finds data, trains a small model on a writer-disjoint split, exports and quantizes the
//! bundle, evaluates it on the held-out writers (full report with plots), then enrols the test
//! writers in a gallery through the kiosk's own runtime library and verifies their held-out
//! genuine signatures and skilled forgeries, the way the kiosk would decide.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autograph_device::engine::{Bundle, Engine, EngineOptions, precision_name};
use autograph_device::replay;
use autograph_device::store::{self, StoreError};
use autograph_shared::dataset::splits::{WriterSplit, split_writers};
use autograph_shared::dataset::{Dataset, Label, Sample};
use autograph_shared::evaluation::EvaluationReport;
use autograph_shared::gallery::KioskGallery;
use burn::prelude::Device;
use serde::Serialize;

use crate::bundle::{RunInfo, export_bundle, load_data, quantize_bundle};
use crate::eval::{EvalRequest, run as run_eval};
use crate::train::{TrainingConfig, train};

/// Where quickstart looks for data when neither `--data` nor `AUTOGRAPH_DATA` is given
/// (relative to the working directory: the shared data beside a checkout).
pub const FALLBACK_DATA: &str = "../shared/data/svc2004";

/// Epochs and steps measured to train in about 8 minutes on a 2-core CPU (64×128 inputs,
/// 16-32-64-128 channels, triplet loss, batches of 8 writers × (6 genuine + 2 forged)).
pub const EPOCHS: usize = 8;
pub const STEPS_PER_EPOCH: usize = 60;

/// The message when no data set can be found; says how to get one.
pub const NO_DATA_HELP: &str = "\
no data set found: pass --data DIR, set AUTOGRAPH_DATA=DIR, or put one at ../shared/data/svc2004.
How to get data:
  autograph-train data list             the catalogue of known data sets
  autograph-train data fetch omniglot   downloads Omniglot (MIT licence; needs network)
  autograph-train data fetch svc2004    says how to obtain SVC2004 (research data, on request)
Signature sets (SVC2004, CEDAR, BHSig260) are distributed by their authors for research; any folder
laid out as <writer>/genuine/* and <writer>/forged/* works.";

/// `autograph-train quickstart`.
#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Data set directory [default: $AUTOGRAPH_DATA, else ../shared/data/svc2004 if present].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory for the run, bundle, report and gallery [default: runs/quickstart, or
    /// runs/quickstart-N if that exists].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training epochs.
    #[arg(long, default_value_t = EPOCHS)]
    pub epochs: usize,
    /// Optimiser steps per epoch.
    #[arg(long, default_value_t = STEPS_PER_EPOCH)]
    pub steps_per_epoch: usize,
    /// Seed of the split, training and evaluation draws.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The data set to use: `--data`, else `$AUTOGRAPH_DATA`, else [`FALLBACK_DATA`] if present.
pub fn find_data(explicit: Option<&Path>, env: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_dir() {
            bail!("--data {}: no such directory\n{NO_DATA_HELP}", path.display());
        }
        return Ok(path.to_path_buf());
    }
    if let Some(path) = env.filter(|p| !p.as_os_str().is_empty()) {
        if !path.is_dir() {
            bail!("AUTOGRAPH_DATA={}: no such directory\n{NO_DATA_HELP}", path.display());
        }
        return Ok(path);
    }
    let fallback = PathBuf::from(FALLBACK_DATA);
    if fallback.is_dir() {
        return Ok(fallback);
    }
    bail!("{NO_DATA_HELP}")
}

/// The CPU-sized training configuration (the defaults are the quickstart model's shape).
pub fn config(epochs: usize, steps_per_epoch: usize, seed: u64) -> TrainingConfig {
    TrainingConfig::new().with_epochs(epochs).with_steps_per_epoch(steps_per_epoch).with_seed(seed)
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
    /// Which calibration the threshold is from (`skilled` or `random`, EER point).
    pub against: String,
    pub genuine_accepted: usize,
    pub genuine_rejected: usize,
    /// Genuine probes rejected by the replay guard (counted in `genuine_rejected`).
    pub genuine_flagged_as_replay: usize,
    pub forgeries_accepted: usize,
    pub forgeries_rejected: usize,
    pub unreadable: usize,
}

/// `summary.json` of a quickstart run.
#[derive(Debug, Clone, Serialize)]
pub struct QuickstartSummary {
    pub data: PathBuf,
    pub out: PathBuf,
    pub bundle: PathBuf,
    pub report: PathBuf,
    pub seconds: f64,
    pub seconds_training: f64,
    pub split: WriterSplit,
    pub default_precision: String,
    pub kiosk: KioskOutcome,
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
    let data = find_data(args.data.as_deref(), std::env::var_os("AUTOGRAPH_DATA").map(PathBuf::from))?;
    let out = args.out.clone().unwrap_or_else(fresh_out_dir);
    let (run_dir, bundle_dir, report_dir) = (out.join("run"), out.join("bundle"), out.join("report"));
    if run_dir.join("last").exists() || bundle_dir.exists() {
        bail!("{} already holds a quickstart run: pass another --out or remove it", out.display());
    }
    let config = config(args.epochs, args.steps_per_epoch, args.seed);
    config.validate()?;

    steps.start(1, &format!("reading {}", data.display()));
    let dataset = load_data(std::slice::from_ref(&data))?;
    let split = split_writers(&dataset.writers(), 0.15, 0.2, args.seed);
    eprintln!(
        "      {}: {} writers -> train {}, validation {}, test {} (writer-disjoint)",
        dataset.name,
        dataset.writers().len(),
        split.train.len(),
        split.validation.len(),
        split.test.len()
    );
    RunInfo {
        data: vec![data.canonicalize().unwrap_or_else(|_| data.clone())],
        dataset: dataset.name.clone(),
        content_hash: dataset.content_hash.clone(),
        split: split.clone(),
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
    let (manifest, quantized) = quantize_bundle(&bundle_dir, std::slice::from_ref(&data))?;
    eprintln!("      {}", quantized.why);

    steps.start(5, "evaluating on the held-out test writers (tract f32)");
    let mut request = EvalRequest::new(bundle_dir.clone(), vec![data.clone()]);
    request.out = Some(report_dir.clone());
    let evaluated = run_eval(&request)?;

    steps.start(6, "enrolling test writers in a gallery and verifying through the kiosk runtime");
    let gallery = out.join("gallery.bin");
    let kiosk = kiosk_check(&bundle_dir, &dataset, &split.test, &gallery)?;

    let summary = QuickstartSummary {
        data: data.canonicalize().unwrap_or(data),
        out: out.clone(),
        bundle: bundle_dir,
        report: report_dir.join("report.md"),
        seconds: steps.started.elapsed().as_secs_f64(),
        seconds_training,
        split,
        default_precision: precision_name(manifest.default_precision).into(),
        kiosk,
    };
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((summary, evaluated.report))
}

fn template_of(engine: &mut Engine, sample: &Sample) -> Option<autograph_shared::gallery::Template> {
    let bytes = sample.source.read().ok()?;
    let image = engine.preprocess_bytes(&bytes).ok()?;
    engine.template(&image).ok()
}

/// Enrols each test writer's first R genuine signatures (R = the bundle's calibration R, at most
/// the gallery's capacity) and verifies every other genuine signature and every skilled forgery
/// of that writer with the bundle's default precision in tract, deciding as `autograph verify`
/// does: replay guard first, then the skilled-forgery EER threshold.
pub fn kiosk_check(bundle_dir: &Path, dataset: &Dataset, writers: &[String], gallery: &Path) -> Result<KioskOutcome> {
    let bundle = Bundle::open(bundle_dir)?;
    let identity = bundle.model_identity();
    let mut engine = Engine::open(bundle, EngineOptions::default())?;
    let calibration = *engine.calibration();
    let (threshold, against) = match calibration.thresholds.skilled {
        Some(t) => (t.eer, "skilled"),
        None => (calibration.thresholds.random.eer, "random"),
    };
    let references = calibration.references.clamp(1, KioskGallery::TEMPLATE_CAPACITY);
    let mut out = KioskOutcome {
        runtime: engine.runtime().to_string(),
        precision: precision_name(engine.precision()).into(),
        gallery: gallery.to_path_buf(),
        references_per_writer: references,
        threshold,
        against: against.into(),
        ..Default::default()
    };
    let mut probes: Vec<(String, Label, autograph_shared::gallery::Template)> = Vec::new();
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
        let now = now_unix();
        store::update(gallery, &identity, |g| g.enroll(writer, &templates, now, true).map_err(StoreError::from))?;
        out.writers_enrolled += 1;
        let forged = dataset.samples.iter().filter(|s| &s.writer == writer && s.label == Label::Forged);
        for s in genuine[references..].iter().copied().chain(forged) {
            match template_of(&mut engine, s) {
                Some(t) => probes.push((writer.clone(), s.label, t)),
                None => out.unreadable += 1,
            }
        }
    }
    // Verify against the gallery as stored on disk (what a later `autograph verify` would read).
    let stored = store::load(gallery, Some(&identity))?;
    for (writer, label, probe) in &probes {
        let Some(entry) = stored.get(writer) else { continue };
        let guard = replay::check(entry.templates(), probe, calibration.replay_similarity);
        let accepted = !guard.possible_replay && entry.score(probe) >= threshold;
        match (label, accepted) {
            (Label::Genuine, true) => out.genuine_accepted += 1,
            (Label::Genuine, false) => {
                out.genuine_rejected += 1;
                out.genuine_flagged_as_replay += usize::from(guard.possible_replay);
            }
            (Label::Forged, true) => out.forgeries_accepted += 1,
            (Label::Forged, false) => out.forgeries_rejected += 1,
        }
    }
    Ok(out)
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
    let mut lines = vec![
        format!("quickstart finished in {} (training {})", minutes(summary.seconds), minutes(summary.seconds_training)),
        format!(
            "  data       {} ({} test writers held out from training and calibration)",
            summary.data.display(),
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
            "  kiosk      {} writers enrolled ({} references each, {} {}), threshold {:.4} ({} EER point):",
            k.writers_enrolled, k.references_per_writer, k.runtime, k.precision, k.threshold, k.against
        ),
        format!(
            "             held-out genuine {} accepted / {} rejected ({} accepted); skilled forgeries {} accepted / {} rejected ({} rejected)",
            k.genuine_accepted,
            k.genuine_rejected,
            rate(k.genuine_accepted, k.genuine_rejected),
            k.forgeries_accepted,
            k.forgeries_rejected,
            rate(k.forgeries_rejected, k.forgeries_accepted)
        ),
    ];
    if let Some(l) = &report.leakage {
        lines.push(format!("  leakage    background-only EER {} (chance is 50%)", pct(Some(l.background_only_eer))));
    }
    lines.push(format!("  gallery    {}", k.gallery.display()));
    lines.push(format!("  report     {}", summary.report.display()));
    lines.join("\n")
}

/// The `quickstart` command.
pub fn run_cli(args: QuickstartArgs) -> Result<ExitCode> {
    let (summary, report) = run(&args)?;
    println!("{}", summary_text(&summary, &report));
    Ok(ExitCode::SUCCESS)
}
