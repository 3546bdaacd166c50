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
use autograph_shared::dataset::splits::k_fold;
use autograph_shared::protocol::VerificationMetrics;
use burn::config::Config;
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::bundle::{RunInfo, checkpoint_of, evaluate, load_data};
use crate::eval::EvalArgs;
use crate::train::{BurnEmbedder, TrainingConfig, percent, resolve_checkpoint, train};

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
    pub test: VerificationMetrics,
    pub run_dir: PathBuf,
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
    pub folds: Vec<FoldResult>,
    pub skilled_eer: Option<MeanStd>,
    pub random_eer: Option<MeanStd>,
    pub training_config: serde_json::Value,
}

/// Trains and measures every fold, then writes `kfold.json` and `kfold.md` into `options.out`.
pub fn run_kfold(data: &[PathBuf], options: &KFoldOptions, device: &Device) -> Result<KFoldReport> {
    options.config.validate()?;
    ensure!(options.folds >= 2, "--kfold needs at least 2 folds");
    let dataset = load_data(data)?;
    let writers = dataset.writers();
    ensure!(
        writers.len() >= options.folds * 2,
        "{} writers cannot make {} folds with at least 2 test writers each",
        writers.len(),
        options.folds
    );
    let splits = k_fold(&writers, options.folds, options.validation, options.seed);
    if let Some(small) = splits.iter().map(|s| s.validation.len()).min().filter(|&n| n < 2) {
        anyhow::bail!(
            "a fold would have {small} validation writer(s); thresholds need at least 2 (random forgeries are \
             other writers' signatures): use more writers or a larger validation share"
        );
    }
    let references = options.config.validation_references;
    let mut folds = Vec::with_capacity(splits.len());
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
            }
            .save(&run_dir)?;
        }
        let outcome = train(&options.config, &dataset, split, &run_dir, device, resume)
            .with_context(|| format!("training fold {}", i + 1))?;
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
        folds.push(FoldResult {
            fold: i + 1,
            train_writers: split.train.len(),
            validation_writers: split.validation.len(),
            test_writers: split.test.clone(),
            best_epoch: outcome.best_epoch,
            test: evaluation.test,
            run_dir,
        });
    }
    let eers = |pick: fn(&VerificationMetrics) -> Option<f64>| -> Vec<f64> {
        folds.iter().filter_map(|f| pick(&f.test)).collect()
    };
    let report = KFoldReport {
        protocol: format!(
            "{k}-fold writer-disjoint cross-validation on {data} (seed {seed}): each fold tests on its own slice of \
             the writers with R={references} references per writer, thresholds calibrated on that fold's validation \
             writers ({val:.0}% of the rest), trained on the others; test EERs by the shared verification protocol \
             (burn f32); mean ± sample standard deviation over folds",
            k = options.folds,
            data = dataset.name,
            seed = options.seed,
            val = options.validation * 100.0,
        ),
        dataset: dataset.name.clone(),
        references,
        skilled_eer: MeanStd::of(&eers(|m| m.skilled.map(|s| s.eer))),
        random_eer: MeanStd::of(&eers(|m| m.random.map(|r| r.eer))),
        folds,
        training_config: serde_json::from_str(&burn::config::config_to_json(&options.config))?,
    };
    write(&report, &options.out)?;
    Ok(report)
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
    let _ = writeln!(md, "# {}-fold evaluation on {}\n", report.folds.len(), report.dataset);
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
    md
}

/// `eval --kfold K`: builds the short training config from the flags and runs the folds on CPU.
pub fn run_cli(folds: usize, args: &EvalArgs) -> Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => TrainingConfig::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
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
