//! `autograph-train eval-dynamic`: dynamic (on-line) verification from pen trajectories, and
//! its fusion with the image model (issue #17).
//!
//! Without `--fuse-with` it runs [`evaluate_online`] (writer-disjoint k-fold over the on-line
//! corpus's users, thresholds from each fold's validation users) and prints its table.
//!
//! With `--fuse-with KFOLD_DIR` (the `--kfold-out` of `autograph-train eval --kfold K` on image
//! data that includes SVC2004), each fold's image model is paired with the SVC2004 users that
//! model never trained on: the fold's SVC2004 test writers are the test users, its SVC2004
//! validation writers the validation users. Every user enrols the same R sample numbers in both
//! modalities (SVC2004's images and Task 2 trajectories are the same signatures, `U<u>S<s>`),
//! and every probe is scored twice: by [`DynamicTemplate`] (DTW) and by the image model's int8
//! templates with the kiosk's rule ([`writer_score`]). The fusion weights and z-statistics and
//! every threshold come from the validation users only; EERs and FAR/FRR are reported on the
//! test users only.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use autograph_shared::dataset::{Dataset, ImageSource, Label};
use autograph_shared::gallery::{Template, writer_score};
use autograph_shared::online::dtw::DtwScratch;
use autograph_shared::online::evaluation::{
    MeanStd, OnlineEvalOptions, OnlineReport, Summary, default_candidates, evaluate_online, report_table,
    sweep_candidates,
};
use autograph_shared::online::features::FeatureSequence;
use autograph_shared::online::verifier::{MAX_REFERENCES, MIN_REFERENCES};
use autograph_shared::online::{
    DynamicSettings, DynamicTemplate, Format, Fusion, OnlineDataset, list_online_dataset, read_trajectory,
};
use autograph_shared::protocol::{self, Embedder, ForgeryMetrics, Thresholds, VerificationMetrics, VerificationScores};
use autograph_shared::{PreprocessConfig, preprocess_bytes};
use burn::prelude::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bundle::{RunInfo, checkpoint_of};
use crate::train::{BurnEmbedder, load_training_config};

/// Which settings the dynamic-only evaluation compares on validation users.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidatesArg {
    /// The default settings only.
    Default,
    /// The default and one-change variants; each fold picks on its validation users.
    Sweep,
}

/// Evaluate dynamic (on-line) signature verification, alone or fused with an image model.
///
/// Protocol (the project's, as for the image model): users are split into K writer-disjoint
/// folds. Each user enrols R genuine signatures chosen at random (seeded per user); probes are
/// the user's other genuine signatures, all its skilled forgeries, and random forgeries
/// (--random-per-writer genuine signatures of every other user of the same role). Settings,
/// fusion weights and decision thresholds come from validation users only; EERs and FAR/FRR at
/// the validation thresholds are reported on test users only, mean ± std over folds.
///
/// Dynamic only: nothing is trained, so each fold's non-test users all validate.
///
/// --fuse-with KFOLD_DIR: the folds are those of an image k-fold run (`autograph-train eval
/// --kfold K --kfold-out KFOLD_DIR`, trained on data including SVC2004). For fold i the test
/// users are that run's SVC2004 test writers and the validation users its SVC2004 validation
/// writers, so the image model trained on neither. Both modalities enrol the same sample
/// numbers and score the same probes; image-only, dynamic-only and fused (logistic regression
/// and equal-weight z-sum, fitted on validation users) are compared. Needs SVC2004 Task 2.
#[derive(clap::Args, Debug)]
#[command(long_about)]
pub struct DynamicArgs {
    /// On-line data set: SVC2004 Task 2 (`U<u>S<s>.TXT`, here or in `Task2/`) or MCYT
    /// (`NNNN/NNNNv00.fpg`).
    #[arg(long)]
    pub data: PathBuf,
    /// Writer-disjoint folds (dynamic only; with --fuse-with the run's folds are used).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Genuine signatures each user enrols (R).
    #[arg(long, default_value_t = 5)]
    pub references: usize,
    /// Random-forgery probes taken from each other user of the same role.
    #[arg(long, default_value_t = 2)]
    pub random_per_writer: usize,
    /// Seed of the reference and random-forgery choices (and of the dynamic-only folds).
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// Dynamic only: settings to choose from on validation users.
    #[arg(long, value_enum, default_value = "default")]
    pub candidates: CandidatesArg,
    /// Dynamic only: probes to time verification on (0: no timing).
    #[arg(long, default_value_t = 200)]
    pub timing_probes: usize,
    /// Fuse with the image models of this k-fold run directory (fold1/, fold2/, ... each with
    /// run.json and a checkpoint).
    #[arg(long, value_name = "KFOLD_DIR")]
    pub fuse_with: Option<PathBuf>,
    /// With --fuse-with: the SVC2004 image directory (`user<N>/genuine|forged/U<N>S<k>.jpg`)
    /// [default: the run's data set of that name, as recorded in run.json].
    #[arg(long, requires = "fuse_with")]
    pub images: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the report here: dynamic.json and dynamic.md (fusion.json and fusion.md with
    /// --fuse-with).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The `eval-dynamic` command.
pub fn run_cli(args: DynamicArgs) -> Result<ExitCode> {
    ensure!((2..=20).contains(&args.folds), "--folds must be between 2 and 20, got {}", args.folds);
    ensure!(
        (MIN_REFERENCES..=MAX_REFERENCES).contains(&args.references),
        "--references must be between {MIN_REFERENCES} and {MAX_REFERENCES} (a dynamic template needs a pair), got {}",
        args.references
    );
    ensure!(args.data.is_dir(), "--data {}: no such directory", args.data.display());
    let dataset = list_online_dataset(&args.data).context("listing the --data directory")?;
    match &args.fuse_with {
        Some(kfold) => fusion_cli(&args, &dataset, kfold),
        None => dynamic_cli(&args, &dataset),
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamic only
// ---------------------------------------------------------------------------------------------

fn dynamic_cli(args: &DynamicArgs, dataset: &OnlineDataset) -> Result<ExitCode> {
    let candidates = match args.candidates {
        CandidatesArg::Default => default_candidates(),
        CandidatesArg::Sweep => sweep_candidates(),
    };
    let options = OnlineEvalOptions {
        folds: args.folds,
        references: args.references,
        random_per_writer: args.random_per_writer,
        seed: args.seed,
        timing_probes: args.timing_probes,
        test: true,
        candidates,
    };
    // Steps: reading, one scoring pass per candidate, one line per fold (the timing is the rest).
    let steps = 1 + options.candidates.len() + options.folds;
    let bar = crate::progress::bar(steps as u64, &format!("evaluating {}", dataset.name()));
    let hidden = bar.is_hidden();
    let report = evaluate_online(dataset, &options, &mut |line| {
        if hidden {
            eprintln!("{line}");
        } else {
            bar.println(line);
            bar.inc(1);
        }
    })
    .with_context(|| format!("evaluating {}", dataset.root.display()))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report_table(&report));
    }
    if let Some(out) = &args.out {
        write_pair(out, "dynamic", &serde_json::to_string_pretty(&report)?, &dynamic_markdown(&report))?;
        if !args.json {
            println!("\nreport: {}", out.join("dynamic.md").display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn pct(x: f64) -> String {
    if x.is_finite() { format!("{:.2}%", x * 100.0) } else { "n/a".into() }
}

/// `skilled EER | skilled FAR / FRR | random EER | random FAR / FRR` cells of a table row,
/// the EERs in bold when `bold`.
fn summary_cells(s: &Summary, bold: bool) -> String {
    let b = if bold { "**" } else { "" };
    format!(
        "{b}{}{b} | {} / {} | {b}{}{b} | {} / {}",
        mean_std(&s.skilled_eer),
        mean_std(&s.skilled_far_at_validation_threshold),
        mean_std(&s.skilled_frr_at_validation_threshold),
        mean_std(&s.random_eer),
        mean_std(&s.random_far_at_validation_threshold),
        mean_std(&s.random_frr_at_validation_threshold)
    )
}

fn mean_std(m: &MeanStd) -> String {
    if m.n == 0 { "n/a".into() } else { format!("{} ± {:.2}", pct(m.mean), m.std * 100.0) }
}

/// `dynamic.md`.
pub fn dynamic_markdown(report: &OnlineReport) -> String {
    let o = &report.options;
    let mut md = String::new();
    let _ = writeln!(md, "# Dynamic verification on {}\n", report.dataset);
    let _ = writeln!(
        md,
        "{} users ({} scored), {} signatures ({} unreadable). Protocol: {} writer-disjoint folds over users \
         (seed {}); each user enrols R = {} genuine signatures chosen at random; probes are its other genuine \
         signatures, its skilled forgeries and {} genuine signatures of every other user of the same role; \
         settings and thresholds from each fold's validation users (all its non-test users), figures on its test \
         users; mean ± sample std over folds.\n",
        report.users,
        report.scored_users,
        report.signatures,
        report.unreadable.len(),
        o.folds,
        o.seed,
        o.references,
        o.random_per_writer
    );
    let _ = writeln!(
        md,
        "| Fold | Chosen | Test users | Skilled EER | FAR / FRR at val. thr. | Random EER | FAR / FRR at val. thr. |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for f in &report.folds {
        let Some(t) = &f.test else { continue };
        let cells = |m: Option<ForgeryMetrics>| match m {
            Some(m) => (
                pct(m.eer),
                format!("{} / {}", pct(m.at_validation_eer_threshold.far), pct(m.at_validation_eer_threshold.frr)),
            ),
            None => ("n/a".into(), "n/a".into()),
        };
        let (se, so) = cells(t.skilled);
        let (re, ro) = cells(t.random);
        let _ = writeln!(md, "| {} | {} | {} | {se} | {so} | {re} | {ro} |", f.fold + 1, f.chosen, t.writers);
    }
    if let Some(s) = &report.summary {
        let _ = writeln!(md, "| **mean ± std** | | | {} |", summary_cells(s, true));
    }
    if report.candidates.len() > 1 {
        let _ = writeln!(md, "\nCandidates on validation users (EER mean ± std over folds):\n");
        let _ = writeln!(md, "| Candidate | Skilled | Random | Chosen in folds |");
        let _ = writeln!(md, "|---|---|---|---|");
        for c in &report.candidates {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                c.name,
                mean_std(&c.validation_skilled_eer),
                mean_std(&c.validation_random_eer),
                c.chosen_in_folds
            );
        }
    }
    if let Some(t) = &report.timing {
        let _ = writeln!(
            md,
            "\nVerify ({}, R = {}, features + DTW, one thread): mean {:.2} ms, p95 {:.2} ms over {} probes; longest \
             signature ({} samples at 100 Hz) {:.2} ms; enrolment {:.2} ms.",
            t.candidate,
            t.references,
            t.mean_ms,
            t.p95_ms,
            t.probes,
            t.longest_probe_samples,
            t.longest_probe_ms,
            t.mean_enrol_ms
        );
    }
    md
}

fn write_pair(out: &Path, stem: &str, json: &str, markdown: &str) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{stem}.json"));
    std::fs::write(&path, format!("{json}\n")).with_context(|| format!("writing {}", path.display()))?;
    let path = out.join(format!("{stem}.md"));
    std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Fusion: the pure parts
// ---------------------------------------------------------------------------------------------

/// `U<u>S<s>` with any extension (any case) -> (u, s): the key shared by SVC2004's images
/// (`U3S7.jpg`) and trajectories (`U3S7.TXT`).
pub fn svc_key(file_name: &str) -> Option<(u32, u32)> {
    let upper = file_name.to_ascii_uppercase();
    let stem = upper.split('.').next()?.strip_prefix('U')?;
    let (u, s) = stem.split_once('S')?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 6 && t.bytes().all(|b| b.is_ascii_digit());
    if !(digits(u) && digits(s)) {
        return None;
    }
    Some((u.parse().ok()?, s.parse().ok()?))
}

/// One user's enrolment and probes, as sample numbers valid in both modalities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPlan {
    pub user: u32,
    /// Enrolled in both modalities.
    pub references: Vec<u32>,
    /// The user's other genuine samples.
    pub genuine: Vec<u32>,
    /// Skilled forgeries of the user.
    pub skilled: Vec<u32>,
    /// This user's genuine samples offered as random forgeries to the other users of its role.
    pub offered: Vec<u32>,
}

/// Plans one user from the sample numbers present in both modalities. The choice depends only
/// on the seed and the user (not on the fold), as in [`evaluate_online`]. `None` when the user
/// has no more genuine samples than references.
pub fn plan_user(
    user: u32,
    genuine: &[u32],
    skilled: &[u32],
    references: usize,
    random_per_writer: usize,
    seed: u64,
) -> Option<UserPlan> {
    let mut genuine = genuine.to_vec();
    genuine.sort_unstable();
    genuine.dedup();
    if references == 0 || genuine.len() <= references {
        return None;
    }
    let mut skilled = skilled.to_vec();
    skilled.sort_unstable();
    skilled.dedup();
    let user_seed = seed ^ u64::from(user).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    genuine.shuffle(&mut ChaCha8Rng::seed_from_u64(user_seed));
    let offered = genuine.iter().rev().take(random_per_writer).copied().collect();
    let probes = genuine.split_off(references);
    Some(UserPlan { user, references: genuine, genuine: probes, skilled, offered })
}

/// A fold's SVC2004 users: validation users calibrate, test users are measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoldRoles {
    /// The image writers, as named in the run (without a `set:` prefix).
    pub validation: Vec<String>,
    pub test: Vec<String>,
    /// The image model's training writers of this set (for the disjointness check).
    pub train: Vec<String>,
}

/// The roles of `set`'s writers in one fold's `run.json`: its `sets` entry of that name, or
/// the whole split for a single-set run that names no sets (older runs) or names this one.
pub fn fold_roles(run: &RunInfo, set: &str) -> Result<FoldRoles> {
    let strip = |writers: &[String]| -> Vec<String> {
        let prefix = format!("{set}:");
        writers.iter().map(|w| w.strip_prefix(&prefix).unwrap_or(w).to_string()).collect()
    };
    let split = if let Some(entry) = run.sets.iter().find(|s| s.name == set) {
        &entry.split
    } else if run.sets.is_empty() && run.dataset == set {
        &run.split
    } else {
        let names: Vec<&str> = run.sets.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "the run was not trained with a data set named {set:?} (its sets: {}); pass --images with the SVC2004 \
             image directory the run was trained on",
            if names.is_empty() { run.dataset.clone() } else { names.join(", ") }
        );
    };
    let roles =
        FoldRoles { validation: strip(&split.validation), test: strip(&split.test), train: strip(&split.train) };
    if let Some(w) = roles.test.iter().chain(&roles.validation).find(|w| roles.train.contains(w)) {
        bail!(
            "writer {w} is both a training writer and a held-out writer of the run: the split is not writer-disjoint"
        );
    }
    if let Some(w) = roles.test.iter().find(|w| roles.validation.contains(w)) {
        bail!("writer {w} is both a test and a validation writer of the run");
    }
    Ok(roles)
}

/// The fold run directories of a k-fold output, in fold order: `fold<i>/` holding `run.json`.
pub fn fold_dirs(kfold: &Path) -> Result<Vec<(usize, PathBuf)>> {
    ensure!(kfold.is_dir(), "--fuse-with {}: no such directory", kfold.display());
    let mut folds = Vec::new();
    for entry in std::fs::read_dir(kfold).with_context(|| format!("reading {}", kfold.display()))? {
        let path = entry?.path();
        let Some(index) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("fold"))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if path.join(crate::bundle::RUN_INFO_FILE).is_file() {
            folds.push((index, path));
        }
    }
    folds.sort();
    ensure!(
        !folds.is_empty(),
        "--fuse-with {}: no fold<i>/run.json found (expected the --kfold-out directory of `autograph-train eval \
         --kfold K`)",
        kfold.display()
    );
    Ok(folds)
}

/// One probe scored by both modalities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairScore {
    pub dynamic: f32,
    pub image: f32,
}

/// Paired scores of one group of users (one role of one fold).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairedScores {
    pub writers: usize,
    pub genuine: Vec<PairScore>,
    pub skilled: Vec<PairScore>,
    pub random: Vec<PairScore>,
}

impl PairedScores {
    /// One modality (or a fusion of both) as the shared protocol's scores.
    pub fn project(&self, f: impl Fn(&PairScore) -> f32) -> VerificationScores {
        VerificationScores {
            genuine: self.genuine.iter().map(&f).collect(),
            skilled: self.skilled.iter().map(&f).collect(),
            random: self.random.iter().map(&f).collect(),
            writers: self.writers,
            max_genuine_pair_similarity: f32::NAN,
            genuine_max_reference: Vec::new(),
        }
    }

    /// The validation data a fusion is fitted on: genuine vs skilled and random forgeries.
    fn fit_rows(&self) -> (Vec<f32>, Vec<f32>, Vec<bool>) {
        let all =
            self.genuine.iter().map(|p| (p, true)).chain(self.skilled.iter().chain(&self.random).map(|p| (p, false)));
        let mut d = Vec::new();
        let mut i = Vec::new();
        let mut g = Vec::new();
        for (p, genuine) in all {
            d.push(p.dynamic);
            i.push(p.image);
            g.push(genuine);
        }
        (d, i, g)
    }
}

/// Scores a group of users against each other: genuine probes and skilled forgeries against
/// their own user, offered genuine samples of every other user of the group as random
/// forgeries. `score(plan, (user, sample))` gives both modalities' scores of one probe against
/// the plan's user.
pub fn score_group(
    plans: &[&UserPlan],
    mut score: impl FnMut(&UserPlan, (u32, u32)) -> Result<PairScore>,
) -> Result<PairedScores> {
    let mut out = PairedScores::default();
    for plan in plans {
        out.writers += 1;
        for &s in &plan.genuine {
            out.genuine.push(score(plan, (plan.user, s))?);
        }
        for &s in &plan.skilled {
            out.skilled.push(score(plan, (plan.user, s))?);
        }
        for other in plans.iter().filter(|o| o.user != plan.user) {
            for &s in &other.offered {
                out.random.push(score(plan, (other.user, s))?);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Fusion: the report
// ---------------------------------------------------------------------------------------------

/// The methods compared, in report order.
pub const METHODS: [&str; 4] = ["image", "dynamic", "fused (logistic)", "fused (z-sum)"];

/// One method in one fold.
#[derive(Debug, Clone, Serialize)]
pub struct MethodFold {
    pub method: String,
    /// Calibrated on the fold's validation users.
    pub thresholds: Thresholds,
    /// EERs on the validation users (what the fusion was fitted on: optimistic, for reference).
    pub validation_skilled_eer: f64,
    pub validation_random_eer: f64,
    /// Test users, deciding with the validation thresholds.
    pub test: VerificationMetrics,
}

/// One fold of the fusion evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct FusionFold {
    pub fold: usize,
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
    /// SVC2004 users (image writer ids) in each role.
    pub validation_users: Vec<String>,
    pub test_users: Vec<String>,
    /// Held-out writers of the run without usable samples in both modalities.
    pub skipped_users: Vec<String>,
    pub logistic: Fusion,
    pub z_sum: Fusion,
    pub validation_scores: ScoreCounts,
    pub test_scores: ScoreCounts,
    pub methods: Vec<MethodFold>,
}

/// How many scores a role produced.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScoreCounts {
    pub writers: usize,
    pub genuine: usize,
    pub skilled: usize,
    pub random: usize,
}

impl From<&PairedScores> for ScoreCounts {
    fn from(s: &PairedScores) -> Self {
        Self { writers: s.writers, genuine: s.genuine.len(), skilled: s.skilled.len(), random: s.random.len() }
    }
}

/// One method over folds (test users).
#[derive(Debug, Clone, Serialize)]
pub struct MethodSummary {
    pub method: String,
    #[serde(flatten)]
    pub figures: Summary,
}

/// `fusion.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FusionReport {
    pub protocol: String,
    pub online_data: PathBuf,
    pub images: PathBuf,
    pub kfold_dir: PathBuf,
    pub references: usize,
    pub random_per_writer: usize,
    pub seed: u64,
    pub dynamic_settings: DynamicSettings,
    /// Signatures present in only one modality (or unreadable in one): they take no part.
    pub unpaired: Vec<String>,
    pub folds: Vec<FusionFold>,
    pub summary: Vec<MethodSummary>,
}

fn summarise(folds: &[FusionFold]) -> Vec<MethodSummary> {
    METHODS
        .iter()
        .map(|&method| {
            let tests = folds.iter().flat_map(|f| &f.methods).filter(|m| m.method == method).map(|m| &m.test);
            MethodSummary { method: method.to_string(), figures: Summary::of(tests) }
        })
        .collect()
}

/// Thresholds from validation, figures on test, for one way of scoring a probe.
pub(crate) fn measure(
    method: &str,
    validation: &PairedScores,
    test: &PairedScores,
    references: usize,
    score: impl Fn(&PairScore) -> f32,
) -> Result<MethodFold> {
    let v = validation.project(&score);
    let thresholds = protocol::calibrate(&v).map_err(|e| anyhow::anyhow!("{method}: {e}"))?;
    let eer = |impostor: &[f32]| {
        if v.genuine.is_empty() || impostor.is_empty() {
            f64::NAN
        } else {
            autograph_shared::metrics::eer(&v.genuine, impostor).eer
        }
    };
    Ok(MethodFold {
        method: method.to_string(),
        thresholds,
        validation_skilled_eer: eer(&v.skilled),
        validation_random_eer: eer(&v.random),
        test: protocol::verification_metrics(&test.project(&score), references, &thresholds),
    })
}

/// Image-only, dynamic-only and the two fusions, fitted and calibrated on `validation`.
pub(crate) fn compare(
    validation: &PairedScores,
    test: &PairedScores,
    references: usize,
) -> Result<(Fusion, Fusion, Vec<MethodFold>)> {
    let (d, i, g) = validation.fit_rows();
    let logistic = Fusion::fit_logistic(&d, &i, &g).context("fitting the logistic fusion on validation users")?;
    let z_sum = Fusion::z_sum(&d, &i).context("fitting the z-sum fusion on validation users")?;
    let methods = vec![
        measure(METHODS[0], validation, test, references, |p| p.image)?,
        measure(METHODS[1], validation, test, references, |p| p.dynamic)?,
        measure(METHODS[2], validation, test, references, |p| logistic.score(p.dynamic, p.image))?,
        measure(METHODS[3], validation, test, references, |p| z_sum.score(p.dynamic, p.image))?,
    ];
    Ok((logistic, z_sum, methods))
}

// ---------------------------------------------------------------------------------------------
// Fusion: the run
// ---------------------------------------------------------------------------------------------

/// The image data set and the set name it has in the runs.
pub(crate) struct Images {
    pub(crate) dataset: Dataset,
    /// `(user, sample)` -> index into `dataset.samples`.
    pub(crate) by_key: HashMap<(u32, u32), usize>,
    /// Writer id -> SVC2004 user number.
    pub(crate) user_of: HashMap<String, u32>,
}

impl Images {
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        ensure!(dir.is_dir(), "--images {}: no such directory", dir.display());
        let dataset = Dataset::load(dir).with_context(|| format!("loading the image data set {}", dir.display()))?;
        let mut by_key = HashMap::new();
        let mut user_of = HashMap::new();
        for (i, sample) in dataset.samples.iter().enumerate() {
            let ImageSource::File(path) = &sample.source else { continue };
            let Some(key) = path.file_name().and_then(|n| n.to_str()).and_then(svc_key) else { continue };
            if key.1 == 0 {
                continue;
            }
            by_key.insert(key, i);
            user_of.insert(sample.writer.clone(), key.0);
        }
        ensure!(
            !by_key.is_empty(),
            "{}: no SVC2004 images named U<u>S<s>.<ext> (expected user<N>/genuine|forged/U<N>S<k>.jpg)",
            dir.display()
        );
        Ok(Self { dataset, by_key, user_of })
    }
}

/// Every trajectory's features, by `(user, sample)`.
pub(crate) struct Trajectories {
    pub(crate) features: HashMap<(u32, u32), FeatureSequence>,
    pub(crate) labels: HashMap<(u32, u32), Label>,
}

pub(crate) fn load_trajectories(
    dataset: &OnlineDataset,
    settings: &DynamicSettings,
    unpaired: &mut Vec<String>,
) -> Trajectories {
    let bar = crate::progress::bar(dataset.samples.len() as u64, "reading trajectories");
    let mut features = HashMap::new();
    let mut labels = HashMap::new();
    for sample in &dataset.samples {
        bar.inc(1);
        let Some(key) = sample.path.file_name().and_then(|n| n.to_str()).and_then(svc_key) else { continue };
        let read = read_trajectory(&sample.path)
            .map_err(|e| e.to_string())
            .and_then(|t| settings.features_of(&t).map_err(|e| format!("{}: {e}", sample.path.display())));
        match read {
            Ok(f) => {
                features.insert(key, f);
                labels.insert(key, sample.label);
            }
            Err(reason) => unpaired.push(reason),
        }
    }
    bar.finish_and_clear();
    Trajectories { features, labels }
}

/// Image and trajectory genuine/forged sample numbers of `user` present in both.
pub(crate) fn paired_samples(user: u32, images: &Images, trajectories: &Trajectories) -> (Vec<u32>, Vec<u32>) {
    let (mut genuine, mut forged) = (Vec::new(), Vec::new());
    let mut keys: Vec<(u32, u32)> = trajectories.labels.keys().copied().filter(|k| k.0 == user).collect();
    keys.sort_unstable();
    for key in keys {
        let Some(&i) = images.by_key.get(&key) else { continue };
        let label = trajectories.labels[&key];
        if images.dataset.samples[i].label != label {
            continue;
        }
        match label {
            Label::Genuine => genuine.push(key.1),
            Label::Forged => forged.push(key.1),
        }
    }
    (genuine, forged)
}

/// Every user's plan from the samples present in both modalities (users with too few genuine
/// samples have none).
pub(crate) fn plan_users(
    images: &Images,
    trajectories: &Trajectories,
    references: usize,
    random_per_writer: usize,
    seed: u64,
) -> BTreeMap<u32, UserPlan> {
    let users: std::collections::BTreeSet<u32> = images.user_of.values().copied().collect();
    users
        .into_iter()
        .filter_map(|user| {
            let (genuine, forged) = paired_samples(user, images, trajectories);
            plan_user(user, &genuine, &forged, references, random_per_writer, seed).map(|plan| (user, plan))
        })
        .collect()
}

/// The validation and test users' plans of `roles`, and the held-out writers without one.
/// Fitting needs at least two validation users and measuring one test user.
pub(crate) fn pick_roles<'a>(
    roles: &FoldRoles,
    images: &Images,
    plans: &'a BTreeMap<u32, UserPlan>,
) -> Result<(Vec<&'a UserPlan>, Vec<&'a UserPlan>, Vec<String>)> {
    let mut skipped = Vec::new();
    let mut pick = |writers: &[String]| -> Vec<&'a UserPlan> {
        let mut out = Vec::new();
        for w in writers {
            match images.user_of.get(w).and_then(|u| plans.get(u)) {
                Some(plan) => out.push(plan),
                None => skipped.push(w.clone()),
            }
        }
        out
    };
    let validation = pick(&roles.validation);
    let test = pick(&roles.test);
    ensure!(
        validation.len() >= 2 && !test.is_empty(),
        "{} validation and {} test users with samples in both modalities; need at least 2 and 1",
        validation.len(),
        test.len()
    );
    Ok((validation, test, skipped))
}

/// The `(user, sample)` of every image the plans enrol or probe with, sorted, once each.
pub(crate) fn probe_keys<'a>(plans: impl Iterator<Item = &'a UserPlan>) -> Vec<(u32, u32)> {
    let mut keys: Vec<(u32, u32)> = plans
        .flat_map(|p| p.references.iter().chain(&p.genuine).chain(&p.skilled).map(move |&s| (p.user, s)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Embeds the images of `keys` with one fold's model into int8 templates.
pub(crate) fn embed_images(
    embedder: &mut dyn Embedder,
    config: &PreprocessConfig,
    images: &Images,
    keys: &[(u32, u32)],
    label: &str,
) -> Result<HashMap<(u32, u32), Template>> {
    let bar = crate::progress::bar(keys.len() as u64, label);
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(32) {
        let mut batch = Vec::with_capacity(chunk.len());
        for key in chunk {
            let sample = &images.dataset.samples[images.by_key[key]];
            let bytes = sample.source.read().with_context(|| format!("reading {}", sample.source))?;
            batch.push(preprocess_bytes(&bytes, config).with_context(|| format!("preprocessing {}", sample.source))?);
        }
        let embeddings = embedder.embed(&batch)?;
        for (key, embedding) in chunk.iter().zip(&embeddings) {
            out.insert(*key, Template::from_embedding(embedding).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Where the SVC2004 images are: `--images`, or the run's set named `svc2004` (or its only set).
fn images_dir(args: &DynamicArgs, first_run: &RunInfo) -> Result<PathBuf> {
    if let Some(dir) = &args.images {
        return Ok(dir.clone());
    }
    if let Some(set) = first_run.sets.iter().find(|s| s.name.eq_ignore_ascii_case("svc2004")) {
        return Ok(set.root.clone());
    }
    match (first_run.sets.as_slice(), first_run.data.as_slice()) {
        ([only], _) => Ok(only.root.clone()),
        ([], [only]) => Ok(only.clone()),
        _ => bail!("the run has several data sets and none is named svc2004: pass --images DIR"),
    }
}

fn fusion_cli(args: &DynamicArgs, online: &OnlineDataset, kfold: &Path) -> Result<ExitCode> {
    ensure!(
        online.format == Format::Svc2004,
        "--fuse-with needs SVC2004 Task 2 (its images and trajectories are the same signatures); {} is {:?}",
        online.root.display(),
        online.format
    );
    let folds = fold_dirs(kfold)?;
    let runs: Vec<RunInfo> = folds.iter().map(|(_, dir)| RunInfo::load(dir)).collect::<Result<_>>()?;
    let images_dir = images_dir(args, &runs[0])?;
    let images = Images::load(&images_dir)?;
    let set = images.dataset.name.clone();
    // The runs' splits name writers of the data they were trained on: the same images, or the
    // roles would be someone else's.
    for ((_, dir), run) in folds.iter().zip(&runs) {
        let hash = run
            .sets
            .iter()
            .find(|s| s.name == set)
            .map(|s| &s.content_hash)
            .or_else(|| (run.sets.is_empty() && run.dataset == set).then_some(&run.content_hash));
        if let Some(hash) = hash {
            ensure!(
                *hash == images.dataset.content_hash,
                "{}: the run was trained on other {set} images (content hash {hash}, {} has {})",
                dir.display(),
                images_dir.display(),
                images.dataset.content_hash
            );
        }
    }

    let settings = DynamicSettings::default();
    let mut unpaired = Vec::new();
    let trajectories = load_trajectories(online, &settings, &mut unpaired);
    let traj_keys: std::collections::HashSet<(u32, u32)> = trajectories.features.keys().copied().collect();
    for key in images.by_key.keys().filter(|k| !traj_keys.contains(k)) {
        unpaired.push(format!("image U{}S{} has no readable trajectory", key.0, key.1));
    }
    for key in traj_keys.iter().filter(|k| !images.by_key.contains_key(k)) {
        unpaired.push(format!("trajectory U{}S{} has no image", key.0, key.1));
    }
    unpaired.sort();

    // Plans are per user, fixed by the seed: a user is enrolled alike in every fold it is in.
    let plans = plan_users(&images, &trajectories, args.references, args.random_per_writer, args.seed);

    let device = Device::flex();
    let mut fold_reports = Vec::with_capacity(folds.len());
    for ((index, run_dir), run) in folds.iter().zip(&runs) {
        let roles = fold_roles(run, &set).with_context(|| format!("{}", run_dir.display()))?;
        let (validation, test, skipped) =
            pick_roles(&roles, &images, &plans).with_context(|| format!("{}", run_dir.display()))?;

        let checkpoint = checkpoint_of(run_dir);
        let preprocess = load_training_config(&checkpoint)
            .with_context(|| format!("{}: no trained checkpoint", run_dir.display()))?
            .preprocess;
        let mut embedder = BurnEmbedder::from_checkpoint(&checkpoint, &device)
            .with_context(|| format!("loading {}", checkpoint.display()))?;
        let keys = probe_keys(validation.iter().chain(&test).copied());
        let label = format!("fold {index}: embedding images");
        let templates = embed_images(&mut embedder, &preprocess, &images, &keys, &label)?;

        // Both modalities enrol the same sample numbers.
        let mut enrolled: HashMap<u32, (DynamicTemplate, Vec<Template>)> = HashMap::new();
        for plan in validation.iter().chain(&test) {
            let refs: Vec<FeatureSequence> =
                plan.references.iter().map(|&s| trajectories.features[&(plan.user, s)].clone()).collect();
            let dynamic = DynamicTemplate::from_features(refs, &settings)
                .with_context(|| format!("enrolling U{} dynamically", plan.user))?;
            let image: Vec<Template> = plan.references.iter().map(|&s| templates[&(plan.user, s)]).collect();
            enrolled.insert(plan.user, (dynamic, image));
        }
        let mut scratch = DtwScratch::default();
        let mut score = |plan: &UserPlan, probe: (u32, u32)| -> Result<PairScore> {
            let (dynamic, image) = &enrolled[&plan.user];
            Ok(PairScore {
                dynamic: dynamic.score_features(&trajectories.features[&probe], &mut scratch).score,
                image: writer_score(image, &templates[&probe]),
            })
        };
        let validation_scores = score_group(&validation, &mut score)?;
        let test_scores = score_group(&test, &mut score)?;
        let (logistic, z_sum, methods) =
            compare(&validation_scores, &test_scores, args.references).with_context(|| format!("fold {index}"))?;
        let line = methods
            .iter()
            .map(|m| format!("{} {}", m.method, pct(m.test.skilled.map_or(f64::NAN, |s| s.eer))))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("fold {index}: test skilled EER: {line}");
        fold_reports.push(FusionFold {
            fold: *index,
            run_dir: run_dir.clone(),
            checkpoint,
            validation_users: roles.validation.clone(),
            test_users: roles.test.clone(),
            skipped_users: skipped,
            logistic,
            z_sum,
            validation_scores: (&validation_scores).into(),
            test_scores: (&test_scores).into(),
            methods,
        });
    }

    let report = FusionReport {
        protocol: format!(
            "For each fold of the image k-fold run in {kfold}, the SVC2004 users the image model never trained on: \
             test users = the fold's SVC2004 test writers, validation users = its SVC2004 validation writers. Each \
             user enrols the same R = {r} genuine sample numbers (seeded per user, seed {seed}) in both modalities; \
             probes are its other genuine samples, its skilled forgeries and {k} genuine samples of every other user \
             of the same role, each scored by the dynamic verifier (DTW, default settings) and by the fold's image \
             model (int8 templates, nearest-reference similarity). Fusion weights (logistic regression, classes \
             weighted equally; and equal-weight z-sum) and thresholds come from validation users only; EERs and \
             FAR/FRR at the validation EER thresholds are on test users; mean ± sample std over folds.",
            kfold = kfold.display(),
            r = args.references,
            seed = args.seed,
            k = args.random_per_writer
        ),
        online_data: online.root.clone(),
        images: images_dir,
        kfold_dir: kfold.to_path_buf(),
        references: args.references,
        random_per_writer: args.random_per_writer,
        seed: args.seed,
        dynamic_settings: settings,
        unpaired,
        summary: summarise(&fold_reports),
        folds: fold_reports,
    };
    let markdown = fusion_markdown(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{markdown}");
    }
    if let Some(out) = &args.out {
        write_pair(out, "fusion", &serde_json::to_string_pretty(&report)?, &markdown)?;
        if !args.json {
            println!("\nreport: {}", out.join("fusion.md").display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fusion.md` (also what the command prints).
pub fn fusion_markdown(report: &FusionReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Dynamic + image fusion on SVC2004, {} folds\n", report.folds.len());
    let _ = writeln!(md, "{}\n", report.protocol);
    if !report.unpaired.is_empty() {
        let _ = writeln!(md, "{} signatures lack one modality and take no part.\n", report.unpaired.len());
    }
    let _ = writeln!(md, "Test users, mean ± std over folds:\n");
    let _ = writeln!(
        md,
        "| Method | Skilled EER | skilled FAR / FRR at val. thr. | Random EER | random FAR / FRR at val. thr. |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for m in &report.summary {
        let s = &m.figures;
        let _ = writeln!(md, "| {} | {} |", m.method, summary_cells(s, false));
    }
    let _ = writeln!(md, "\nPer fold (test EER skilled / random; validation users / test users):\n");
    let _ = write!(md, "| Fold | Users |");
    for m in METHODS {
        let _ = write!(md, " {m} |");
    }
    let _ = writeln!(md, " logistic weights (dynamic, image, bias) |");
    let _ = writeln!(md, "|---|---|{}---|", "---|".repeat(METHODS.len()));
    for f in &report.folds {
        let _ = write!(md, "| {} | {} / {} |", f.fold, f.validation_scores.writers, f.test_scores.writers);
        for m in &f.methods {
            let e = |x: Option<ForgeryMetrics>| pct(x.map_or(f64::NAN, |x| x.eer));
            let _ = write!(md, " {} / {} |", e(m.test.skilled), e(m.test.random));
        }
        let _ = writeln!(md, " {:.2}, {:.2}, {:.2} |", f.logistic.w_dynamic, f.logistic.w_image, f.logistic.bias);
    }
    let skipped: usize = report.folds.iter().map(|f| f.skipped_users.len()).sum();
    if skipped > 0 {
        let _ =
            writeln!(md, "\n{skipped} held-out writer(s) over the folds had too few paired samples and were skipped.");
    }
    let _ = writeln!(
        md,
        "\nValidation users per fold are few (the image run's validation share), so fusion weights and thresholds \
         are fitted on little data; the validation users also chose the image run's best epoch."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::RunSet;
    use autograph_shared::dataset::splits::WriterSplit;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_pair_images_and_trajectories() {
        assert_eq!(svc_key("U3S7.jpg"), Some((3, 7)));
        assert_eq!(svc_key("u12s40.TXT"), Some((12, 40)));
        assert_eq!(svc_key("U3S7.TXT"), svc_key("U3S7.jpg"));
        assert_eq!(svc_key("user3.jpg"), None);
        assert_eq!(svc_key("US7.jpg"), None);
        assert_eq!(svc_key("U3S.jpg"), None);
    }

    #[test]
    fn plans_are_seeded_per_user_and_disjoint() {
        let genuine: Vec<u32> = (1..=20).collect();
        let skilled: Vec<u32> = (21..=40).collect();
        let plan = plan_user(7, &genuine, &skilled, 5, 2, 17).expect("plan");
        assert_eq!(plan.references.len(), 5);
        assert_eq!(plan.genuine.len(), 15);
        assert_eq!(plan.skilled, skilled);
        assert_eq!(plan.offered.len(), 2);
        // References and probes partition the genuine samples.
        let mut all: Vec<u32> = plan.references.iter().chain(&plan.genuine).copied().collect();
        all.sort_unstable();
        assert_eq!(all, genuine);
        // The same user and seed give the same plan whatever the order given; others differ.
        let mut reversed = genuine.clone();
        reversed.reverse();
        assert_eq!(plan_user(7, &reversed, &skilled, 5, 2, 17), Some(plan.clone()));
        assert_ne!(plan_user(8, &genuine, &skilled, 5, 2, 17).map(|p| p.references), Some(plan.references.clone()));
        assert_ne!(plan_user(7, &genuine, &skilled, 5, 2, 18).map(|p| p.references), Some(plan.references));
        // Too few genuine samples: not scored.
        assert_eq!(plan_user(7, &[1, 2, 3], &skilled, 3, 2, 17), None);
    }

    #[test]
    fn both_modalities_score_the_same_probes() {
        let genuine: Vec<u32> = (1..=8).collect();
        let plans: Vec<UserPlan> = (1..=3).map(|u| plan_user(u, &genuine, &[21, 22], 3, 2, 1).expect("plan")).collect();
        let refs: Vec<&UserPlan> = plans.iter().collect();
        let mut seen = Vec::new();
        let scores = score_group(&refs, |plan, probe| {
            // A probe is never one of the claimed user's references.
            assert!(!(probe.0 == plan.user && plan.references.contains(&probe.1)), "{probe:?}");
            seen.push((plan.user, probe));
            // Encode the probe in both scores so the pairing can be checked.
            let v = (probe.0 * 100 + probe.1) as f32;
            Ok(PairScore { dynamic: v, image: -v })
        })
        .expect("scores");
        assert_eq!(scores.writers, 3);
        assert_eq!(scores.genuine.len(), 3 * 5);
        assert_eq!(scores.skilled.len(), 3 * 2);
        assert_eq!(scores.random.len(), 3 * 2 * 2);
        assert!(scores.genuine.iter().chain(&scores.skilled).chain(&scores.random).all(|p| p.dynamic == -p.image));
        // Random forgeries come from the other users of the group only.
        for (user, probe) in &seen {
            if probe.0 != *user {
                assert!(plans[(probe.0 - 1) as usize].offered.contains(&probe.1));
            }
        }
        let image = scores.project(|p| p.image);
        assert_eq!((image.genuine.len(), image.skilled.len(), image.random.len()), (15, 6, 12));
    }

    fn run(split: WriterSplit, sets: Vec<RunSet>) -> RunInfo {
        RunInfo { data: vec![], dataset: "svc2004".into(), content_hash: "h".into(), split, sets }
    }

    fn split(train: &[&str], validation: &[&str], test: &[&str]) -> WriterSplit {
        WriterSplit { train: names(train), validation: names(validation), test: names(test) }
    }

    #[test]
    fn roles_come_from_the_runs_set() {
        // A single-set run from before `sets` existed.
        let single = run(split(&["user1", "user2"], &["user3", "user4"], &["user5"]), vec![]);
        let roles = fold_roles(&single, "svc2004").expect("roles");
        assert_eq!(roles.validation, names(&["user3", "user4"]));
        assert_eq!(roles.test, names(&["user5"]));
        assert!(fold_roles(&single, "cedar").is_err());

        // A multi-set run: the svc2004 entry, prefixes stripped; the other set is ignored.
        let sets = vec![
            RunSet {
                name: "cedar".into(),
                root: "/c".into(),
                content_hash: "c".into(),
                split: split(&["cedar:1"], &["cedar:2"], &["cedar:3"]),
            },
            RunSet {
                name: "svc2004".into(),
                root: "/s".into(),
                content_hash: "s".into(),
                split: split(&["svc2004:user1"], &["svc2004:user2", "svc2004:user9"], &["svc2004:user3"]),
            },
        ];
        let all = split(&["cedar:1", "svc2004:user1"], &["cedar:2", "svc2004:user2"], &["cedar:3", "svc2004:user3"]);
        let multi = run(all, sets);
        let roles = fold_roles(&multi, "svc2004").expect("roles");
        assert_eq!(roles.validation, names(&["user2", "user9"]));
        assert_eq!(roles.test, names(&["user3"]));
        assert_eq!(roles.train, names(&["user1"]));
        let err = fold_roles(&multi, "bhsig").expect_err("no such set").to_string();
        assert!(err.contains("cedar, svc2004"), "{err}");

        // A held-out writer that also trained is refused.
        let leaky = run(split(&["user1", "user3"], &["user2"], &["user3"]), vec![]);
        assert!(fold_roles(&leaky, "svc2004").is_err());
    }

    #[test]
    fn fold_directories_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["fold10", "fold2", "fold1", "notes"] {
            std::fs::create_dir_all(dir.path().join(name)).expect("mkdir");
            std::fs::write(dir.path().join(name).join("run.json"), "{}").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("fold3")).expect("mkdir"); // no run.json
        let folds = fold_dirs(dir.path()).expect("folds");
        assert_eq!(folds.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2, 10]);
        assert!(fold_dirs(&dir.path().join("fold3")).is_err());
        assert!(fold_dirs(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn fusion_is_fitted_on_validation_only() {
        // Validation: dynamic separates; test: the same distributions shifted. Thresholds must
        // be the validation ones, so the test FRR at them reflects the shift.
        let group = |shift: f32| PairedScores {
            writers: 3,
            genuine: (0..30)
                .map(|k| PairScore { dynamic: 0.8 + shift + k as f32 * 0.001, image: 0.6 + (k % 5) as f32 * 0.05 })
                .collect(),
            skilled: (0..30)
                .map(|k| PairScore { dynamic: 0.4 + shift + k as f32 * 0.001, image: 0.55 + (k % 7) as f32 * 0.05 })
                .collect(),
            random: (0..12)
                .map(|k| PairScore { dynamic: 0.2 + shift + k as f32 * 0.001, image: 0.1 + k as f32 * 0.01 })
                .collect(),
        };
        let (validation, test) = (group(0.0), group(-0.45));
        let (logistic, _, methods) = compare(&validation, &test, 5).expect("compare");
        assert!(logistic.w_dynamic > 0.0);
        let dynamic = methods.iter().find(|m| m.method == "dynamic").expect("dynamic");
        assert!(dynamic.validation_skilled_eer < 1e-9);
        let skilled = dynamic.test.skilled.expect("skilled");
        assert!(skilled.eer < 1e-9);
        // Every test genuine score fell below the validation threshold.
        assert!(skilled.at_validation_eer_threshold.frr > 0.99, "{skilled:?}");
        assert_eq!(methods.iter().map(|m| m.method.as_str()).collect::<Vec<_>>(), METHODS);
        let summary = summarise(&[]);
        assert_eq!(summary.len(), METHODS.len());
    }
}
