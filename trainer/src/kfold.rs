//! `autograph-train eval --kfold K`: how much a test EER depends on which writers were held out.
//!
//! Trains K models on writer-disjoint folds ([`k_fold`]: fold i tests on the i-th slice of the
//! writers, validates on part of the rest, trains on the others), measures each on its own test
//! writers with thresholds from its own validation writers, and reports mean ± std. Each fold is
//! a full training run, so this is a command for offline runs, not for tests. Run again with the
//! same options, it resumes each fold's run where it stopped (finished folds are only re-scored).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use autograph_shared::adaptive::{COMPARED_REFERENCES, Cohort, RuleComparison, ScoreMethod, compare_rules};
use autograph_shared::dataset::links::linked_writers;
use autograph_shared::dataset::splits::{SetSplit, k_fold_per_set, union};
use autograph_shared::protocol::{VerificationMetrics, embed_samples};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::adaptive::{COHORT_SIZE, check_cohort_writers, cohort_samples};
use crate::bundle::{RunInfo, RunSet, checkpoint_of, evaluate, load_data};
use crate::eval::EvalArgs;
use crate::train::{BurnEmbedder, StopReason, TrainingConfig, percent, resolve_checkpoint, train};

/// What to train and where.
#[derive(Debug, Clone)]
pub struct KFoldOptions {
    pub folds: usize,
    /// Fraction of each fold's non-test writers used for validation.
    pub validation: f32,
    pub seed: u64,
    pub config: TrainingConfig,
    /// Each fold trains in `out/fold<i>`; the report goes to `out/kfold.json` and `out/kfold.md`.
    pub out: PathBuf,
}

/// One fold's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub train_writers: usize,
    pub validation_writers: usize,
    pub test_writers: Vec<String>,
    pub best_epoch: Option<usize>,
    /// All test writers together, thresholds from all validation writers.
    pub test: VerificationMetrics,
    /// Each data set on its own: its test writers, thresholds from its validation writers
    /// (empty for a single set: `test` is that set).
    #[serde(default)]
    pub per_set: Vec<SetResult>,
    pub run_dir: PathBuf,
}

/// One data set's test figures in one fold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetResult {
    pub set: String,
    pub test_writers: usize,
    pub test: VerificationMetrics,
    /// Every decision rule (nearest, z/t/s-norm, per-writer classifier, consistency, subspace) at
    /// R = 1, 3, 5, 10 on this set's test writers, thresholds from its validation writers, the
    /// cohort from the fold's training writers (see [`crate::adaptive`]).
    #[serde(default)]
    pub rules: Option<RuleComparison>,
}

/// One data set's figures over folds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetSummary {
    pub set: String,
    pub skilled_eer: Option<MeanStd>,
    pub random_eer: Option<MeanStd>,
    /// Per scoring method and R: test EERs and the rates at the validation EER threshold, over folds.
    #[serde(default)]
    pub rules: Vec<RuleSummary>,
}

/// One scoring method at one R on one data set, over folds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleSummary {
    pub method: ScoreMethod,
    pub references: usize,
    pub skilled_eer: Option<MeanStd>,
    pub random_eer: Option<MeanStd>,
    /// Skilled forgeries accepted and genuine signatures rejected at the threshold calibrated
    /// on validation writers (the skilled-forgery EER point), on test writers.
    pub skilled_far_at_validation_threshold: Option<MeanStd>,
    pub frr_at_validation_threshold: Option<MeanStd>,
    /// The same at the validation threshold that accepts skilled forgeries as often as the
    /// nearest rule did at its EER point (`verify --far nearest-eer`).
    #[serde(default)]
    pub skilled_far_at_nearest_eer_far: Option<MeanStd>,
    #[serde(default)]
    pub frr_at_nearest_eer_far: Option<MeanStd>,
}

/// Mean and sample standard deviation (n − 1) of a figure over folds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub folds: usize,
}

impl MeanStd {
    /// `None` when no fold measured the figure.
    pub fn of(values: &[f64]) -> Option<Self> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std =
            if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        Some(Self { mean, std, folds: v.len() })
    }
}

/// `kfold.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KFoldReport {
    pub protocol: String,
    pub dataset: String,
    pub references: usize,
    /// Folds asked for; `folds` holds fewer while the run is going (the report is rewritten
    /// after each fold, so an interrupted run leaves the figures of the folds it finished).
    #[serde(default)]
    pub folds_planned: usize,
    pub folds: Vec<FoldResult>,
    pub skilled_eer: Option<MeanStd>,
    pub random_eer: Option<MeanStd>,
    /// Per data set, when the run had several.
    #[serde(default)]
    pub per_set: Vec<SetSummary>,
    /// Wall-clock seconds of training over all folds run by this call (resumed folds add little).
    #[serde(default)]
    pub training_seconds: f64,
    pub training_config: serde_json::Value,
}

/// Trains and measures every fold, then writes `kfold.json` and `kfold.md` into `options.out`.
pub fn run_kfold(data: &[PathBuf], options: &KFoldOptions, device: &Device) -> Result<KFoldReport> {
    options.config.validate()?;
    ensure!(options.folds >= 2, "--kfold needs at least 2 folds");
    let dataset = load_data(data)?;
    let sets = dataset.writers_by_set();
    let smallest = sets.iter().map(|(_, w)| w.len()).min().unwrap_or(0);
    ensure!(
        smallest >= options.folds * 2,
        "a data set with {smallest} writers cannot make {} folds with at least 2 test writers each",
        options.folds
    );
    let fold_splits: Vec<Vec<SetSplit>> =
        k_fold_per_set(&sets, &linked_writers(&dataset), options.folds, options.validation, options.seed);
    let splits: Vec<_> = fold_splits.iter().map(|f| union(f)).collect();
    if let Some(small) = fold_splits.iter().flatten().map(|s| s.split.validation.len()).min().filter(|&n| n < 2) {
        anyhow::bail!(
            "a fold would have {small} validation writer(s) in a data set; thresholds need at least 2 (random \
             forgeries are other writers' signatures): use more writers or a larger validation share"
        );
    }
    let started = std::time::Instant::now();
    let references = options.config.validation_references;
    let mut folds = Vec::with_capacity(splits.len());
    let mut report = None;
    for (i, split) in splits.iter().enumerate() {
        let run_dir = options.out.join(format!("fold{}", i + 1));
        eprintln!(
            "fold {}/{}: train {} writers, validate {}, test {}",
            i + 1,
            splits.len(),
            split.train.len(),
            split.validation.len(),
            split.test.len()
        );
        // A fold directory that already holds a run of this split (an interrupted or finished
        // k-fold run) is resumed: `train` refuses another configuration or other data, and a
        // finished run resumes to nothing, so a k-fold run can be re-scored without retraining.
        let resume = resolve_checkpoint(&run_dir.join("last")).is_some();
        if resume {
            let saved = RunInfo::load(&run_dir)?;
            ensure!(
                saved.split == *split,
                "{} holds a run on another split of the writers: choose another --kfold-out",
                run_dir.display()
            );
            eprintln!("fold {}: resuming the run in {}", i + 1, run_dir.display());
        } else {
            RunInfo {
                data: data.to_vec(),
                dataset: dataset.name.clone(),
                content_hash: dataset.content_hash.clone(),
                split: split.clone(),
                sets: RunSet::of(&dataset, &fold_splits[i]),
            }
            .save(&run_dir)?;
        }
        let outcome = train(&options.config, &dataset, split, &run_dir, device, resume)
            .with_context(|| format!("training fold {}", i + 1))?;
        if outcome.stopped == StopReason::Interrupted {
            anyhow::bail!(
                "fold {} interrupted: its run in {} is resumable; run the same command again to continue",
                i + 1,
                run_dir.display()
            );
        }
        let mut embedder = BurnEmbedder::from_checkpoint(&checkpoint_of(&run_dir), device)?;
        let label = format!("fold {}: testing", i + 1);
        let evaluation = evaluate(&mut embedder, &dataset, split, &options.config.preprocess, references, &label)?;
        // Each fold's figures as soon as they exist: a k-fold run takes hours.
        eprintln!(
            "fold {}: test EER skilled {}, random {} (R={references}, best epoch {})",
            i + 1,
            percent(evaluation.test.skilled.map(|m| m.eer)),
            percent(evaluation.test.random.map(|m| m.eer)),
            outcome.best_epoch.map_or_else(|| "-".into(), |e| e.to_string())
        );
        let mut per_set = Vec::new();
        let cohort = fold_cohort(&mut embedder, &dataset, split, &options.config.preprocess)?;
        for set in &fold_splits[i] {
            let label = format!("fold {}: testing {}", i + 1, set.set);
            let e = evaluate(&mut embedder, &dataset, &set.split, &options.config.preprocess, references, &label)?;
            let rules = compare_rules(&e.validation_embedded, &e.test_embedded, &cohort, &COMPARED_REFERENCES, 7);
            eprintln!(
                "fold {}: {}: test EER skilled {}, random {} ({} test writers)",
                i + 1,
                set.set,
                percent(e.test.skilled.map(|m| m.eer)),
                percent(e.test.random.map(|m| m.eer)),
                set.split.test.len()
            );
            for row in rules.rows.iter().filter(|r| r.references == references) {
                eprintln!(
                    "fold {}: {}: {:<10} R={references} test EER skilled {}, random {}",
                    i + 1,
                    set.set,
                    row.method.name(),
                    percent(row.skilled_eer()),
                    percent(row.random_eer())
                );
            }
            per_set.push(SetResult {
                set: set.set.clone(),
                test_writers: set.split.test.len(),
                test: e.test,
                rules: Some(rules),
            });
        }
        folds.push(FoldResult {
            fold: i + 1,
            train_writers: split.train.len(),
            validation_writers: split.validation.len(),
            test_writers: split.test.clone(),
            best_epoch: outcome.best_epoch,
            test: evaluation.test,
            per_set,
            run_dir,
        });
        let so_far = report_of(&folds, options, &dataset.name, started.elapsed().as_secs_f64())?;
        write(&so_far, &options.out)?;
        report = Some(so_far);
    }
    report.context("no folds to run")
}

/// The report over the folds finished so far.
fn report_of(
    folds: &[FoldResult],
    options: &KFoldOptions,
    dataset: &str,
    training_seconds: f64,
) -> Result<KFoldReport> {
    let references = options.config.validation_references;
    let eers = |pick: fn(&VerificationMetrics) -> Option<f64>| -> Vec<f64> {
        folds.iter().filter_map(|f| pick(&f.test)).collect()
    };
    Ok(KFoldReport {
        protocol: format!(
            "{k}-fold writer-disjoint cross-validation on {dataset} (seed {seed}): each fold tests on its own slice of \
             the writers with R={references} references per writer, thresholds calibrated on that fold's validation \
             writers ({val:.0}% of the rest), trained on the others; test EERs by the shared verification protocol \
             (burn f32); mean ± sample standard deviation over folds",
            k = options.folds,
            seed = options.seed,
            val = options.validation * 100.0,
        ),
        dataset: dataset.to_string(),
        references,
        folds_planned: options.folds,
        skilled_eer: MeanStd::of(&eers(|m| m.skilled.map(|s| s.eer))),
        random_eer: MeanStd::of(&eers(|m| m.random.map(|r| r.eer))),
        per_set: summarise_sets(folds),
        training_seconds,
        folds: folds.to_vec(),
        training_config: serde_json::from_str(&burn::config::config_to_json(&options.config))?,
    })
}

/// The fold's cohort: templates of its training writers (all sets), never its held-out ones.
fn fold_cohort(
    embedder: &mut dyn autograph_shared::protocol::Embedder,
    dataset: &autograph_shared::dataset::Dataset,
    split: &autograph_shared::dataset::splits::WriterSplit,
    preprocess: &autograph_shared::PreprocessConfig,
) -> Result<Cohort> {
    let samples = cohort_samples(dataset, split, COHORT_SIZE)?;
    let (embedded, _) = embed_samples(embedder, &samples, preprocess, 32, &mut |_| {})?;
    check_cohort_writers(embedded.iter().map(|s| s.writer.as_str()), split)?;
    Ok(Cohort::from_samples(&embedded, COHORT_SIZE, 7)?)
}

/// Mean ± std per data set over the folds' per-set results, in first-seen order.
fn summarise_sets(folds: &[FoldResult]) -> Vec<SetSummary> {
    let mut names: Vec<&str> = Vec::new();
    for r in folds.iter().flat_map(|f| &f.per_set) {
        if !names.contains(&r.set.as_str()) {
            names.push(&r.set);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let of = |pick: fn(&VerificationMetrics) -> Option<f64>| -> Vec<f64> {
                folds.iter().flat_map(|f| &f.per_set).filter(|r| r.set == name).filter_map(|r| pick(&r.test)).collect()
            };
            let results: Vec<&SetResult> = folds.iter().flat_map(|f| &f.per_set).filter(|r| r.set == name).collect();
            let mut rules = Vec::new();
            if let Some(first) = results.iter().find_map(|r| r.rules.as_ref()) {
                for row in &first.rows {
                    let of_rows = |pick: &dyn Fn(&VerificationMetrics) -> Option<f64>| -> Option<MeanStd> {
                        let v: Vec<f64> = results
                            .iter()
                            .filter_map(|r| r.rules.as_ref())
                            .flat_map(|c| &c.rows)
                            .filter(|x| x.method == row.method && x.references == row.references)
                            .filter_map(|x| pick(&x.test))
                            .collect();
                        MeanStd::of(&v)
                    };
                    rules.push(RuleSummary {
                        method: row.method,
                        references: row.references,
                        skilled_eer: of_rows(&|m| m.skilled.map(|s| s.eer)),
                        random_eer: of_rows(&|m| m.random.map(|r| r.eer)),
                        skilled_far_at_validation_threshold: of_rows(&|m| {
                            m.skilled.map(|s| s.at_validation_eer_threshold.far)
                        }),
                        frr_at_validation_threshold: of_rows(&|m| m.skilled.map(|s| s.at_validation_eer_threshold.frr)),
                        skilled_far_at_nearest_eer_far: of_rows(&|m| {
                            m.skilled.and_then(|s| s.at_validation_nearest_eer_far_threshold).map(|p| p.far)
                        }),
                        frr_at_nearest_eer_far: of_rows(&|m| {
                            m.skilled.and_then(|s| s.at_validation_nearest_eer_far_threshold).map(|p| p.frr)
                        }),
                    });
                }
            }
            SetSummary {
                set: name.to_string(),
                skilled_eer: MeanStd::of(&of(|m| m.skilled.map(|s| s.eer))),
                random_eer: MeanStd::of(&of(|m| m.random.map(|r| r.eer))),
                rules,
            }
        })
        .collect()
}

fn write(report: &KFoldReport, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("kfold.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("kfold.md");
    std::fs::write(&md, markdown(report)).with_context(|| format!("writing {}", md.display()))
}

fn pct(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map_or_else(|| "n/a".into(), |x| format!("{:.2}%", x * 100.0))
}

fn mean_std(m: Option<MeanStd>) -> String {
    m.map_or_else(|| "n/a".into(), |m| format!("{:.2}% ± {:.2}", m.mean * 100.0, m.std * 100.0))
}

/// `kfold.md`: one row per fold and the mean ± std.
pub fn markdown(report: &KFoldReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}-fold evaluation on {}\n", report.folds_planned.max(report.folds.len()), report.dataset);
    if report.folds.len() < report.folds_planned {
        let _ =
            writeln!(md, "**Partial: {} of {} folds finished so far.**\n", report.folds.len(), report.folds_planned);
    }
    let _ = writeln!(md, "Protocol: {}.\n", report.protocol);
    let _ = writeln!(md, "| Fold | Train / val. / test writers | Best epoch | Skilled EER | Random EER |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for f in &report.folds {
        let _ = writeln!(
            md,
            "| {} | {} / {} / {} | {} | {} | {} |",
            f.fold,
            f.train_writers,
            f.validation_writers,
            f.test_writers.len(),
            f.best_epoch.map_or_else(|| "-".into(), |e| e.to_string()),
            pct(f.test.skilled.map(|s| s.eer)),
            pct(f.test.random.map(|r| r.eer))
        );
    }
    let _ = writeln!(
        md,
        "| **mean ± std** | | | **{}** | **{}** |",
        mean_std(report.skilled_eer),
        mean_std(report.random_eer)
    );
    if !report.per_set.is_empty() {
        let _ =
            writeln!(md, "\nEach data set on its own (its test writers, thresholds from its validation writers):\n");
        let _ = writeln!(md, "| Data set | Skilled EER | Random EER | per fold (skilled) |");
        let _ = writeln!(md, "|---|---|---|---|");
        for set in &report.per_set {
            let per_fold: Vec<String> = report
                .folds
                .iter()
                .flat_map(|f| &f.per_set)
                .filter(|r| r.set == set.set)
                .map(|r| pct(r.test.skilled.map(|s| s.eer)))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                set.set,
                mean_std(set.skilled_eer),
                mean_std(set.random_eer),
                per_fold.join(", ")
            );
        }
    }
    for set in report.per_set.iter().filter(|s| !s.rules.is_empty()) {
        let _ = writeln!(
            md,
            "\nDecision rules on {} (test writers; thresholds from validation writers; cohort from training \
             writers; mean ± std over folds):\n",
            set.set
        );
        let _ = writeln!(
            md,
            "| Rule | R | Skilled EER | Random EER | Skilled FAR @ val. thr. | FRR @ val. thr. | \
             Skilled FAR @ nearest-eer | FRR @ nearest-eer |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for r in &set.rules {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.method.name(),
                r.references,
                mean_std(r.skilled_eer),
                mean_std(r.random_eer),
                mean_std(r.skilled_far_at_validation_threshold),
                mean_std(r.frr_at_validation_threshold),
                mean_std(r.skilled_far_at_nearest_eer_far),
                mean_std(r.frr_at_nearest_eer_far)
            );
        }
    }
    let _ = writeln!(md, "\nTraining time over the folds: {:.0} s on this machine.", report.training_seconds);
    md
}

/// `eval --kfold K`: builds the short training config from the flags and runs the folds on CPU.
pub fn run_cli(folds: usize, args: &EvalArgs) -> Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => crate::train::load_config_flag(path)?,
        None => TrainingConfig::new(),
    };
    config.epochs = args.epochs;
    config.steps_per_epoch = args.steps_per_epoch;
    config.seed = args.seed;
    let options = KFoldOptions { folds, validation: 0.15, seed: args.seed, config, out: args.kfold_out.clone() };
    let report = run_kfold(&args.data, &options, &Device::flex())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
        println!("\nreport: {}", options.out.join("kfold.md").display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let m = MeanStd::of(&[0.1, 0.2, 0.3]).expect("figures");
        assert!((m.mean - 0.2).abs() < 1e-12);
        assert!((m.std - 0.1).abs() < 1e-12);
        assert_eq!(MeanStd::of(&[f64::NAN]), None);
        assert_eq!(MeanStd::of(&[0.4]).map(|m| m.std), Some(0.0));
    }
}
