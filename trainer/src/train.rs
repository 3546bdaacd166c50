//! The training loop: writer-disjoint batches, one of three losses, AdamW, a learning-rate
//! schedule, validation EER after every epoch through the shared protocol, best-checkpoint
//! selection, early stopping, exact resume, and atomic checkpoints.
//!
//! Output directory:
//! ```text
//! out_dir/
//!   last/            newest state (resume from here): model.bpk, embedding.bpk, optimizer.bpk,
//!                    state.json, model_config.json, training_config.json
//!   best/            same files, as of the epoch with the best validation score
//!   metrics.jsonl    one EpochMetrics per line
//!   training.png     loss and validation EER per epoch
//! ```
//! A checkpoint directory is written beside its final name and renamed into place, so an
//! interrupted run (Ctrl-C, power loss) always leaves the previous checkpoint whole.
//!
//! Reproducibility: every random stream (initialisation, batch sampling, augmentation) is
//! derived from `seed` and the global step, so a run resumed from any step draws exactly what
//! the uninterrupted run would have drawn.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use autograph_shared::dataset::splits::WriterSplit;
use autograph_shared::dataset::{Dataset, Label};
use autograph_shared::gallery::{EMBEDDING_DIM, Template};
use autograph_shared::metrics;
use autograph_shared::preprocess::{PreprocessConfig, Preprocessed};
use autograph_shared::protocol::{EmbedError, EmbeddedSample, Embedder, VerificationScores, verification_scores};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::{ImageCache, maps_to_tensor};
use crate::loss::{BatchLabels, Mining, bce_with_logits, contrastive_loss, triplet_loss};
use crate::model::{EmbeddingNet, ModelConfig, SiameseModel};
use crate::sampler::{SetMix, WriterSampler, derive_seed};

/// Which loss trains the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Contrastive loss with margin on sampled pairs.
    Contrastive,
    /// Binary cross-entropy on the pair head over sampled pairs.
    Bce,
    /// Triplet loss with in-batch mining over P×K writer batches.
    Triplet,
}

/// How the learning rate evolves after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    Constant,
    /// Cosine decay from `learning_rate` to `learning_rate × final_lr_fraction` at the last step.
    Cosine,
    /// Multiply by `step_gamma` every `step_epochs` epochs.
    Step,
}

/// Which validation figure picks the best checkpoint (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Skilled-forgery EER (random-forgery EER when the validation writers have no forgeries).
    Skilled,
    /// Random-forgery EER.
    Random,
    /// Mean of the skilled and random EERs that exist.
    Mean,
}

/// Everything that defines a training run. Saved as `training_config.json` in every checkpoint.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    #[config(default = "ModelConfig::new()")]
    pub model: ModelConfig,
    /// Must produce `model.height × model.width` maps.
    #[config(default = "PreprocessConfig::default()")]
    pub preprocess: PreprocessConfig,
    #[config(default = "LossKind::Triplet")]
    pub loss: LossKind,
    /// Margin of the contrastive and triplet losses, in embedding distance (unit vectors: 0..2).
    #[config(default = 0.5)]
    pub margin: f32,
    #[config(default = "Mining::SemiHard")]
    pub mining: Mining,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Decoupled (AdamW) weight decay.
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    #[config(default = "LrSchedule::Cosine")]
    pub lr_schedule: LrSchedule,
    /// Steps of linear warm-up from 0 to `learning_rate`.
    #[config(default = 50)]
    pub warmup_steps: usize,
    #[config(default = 0.01)]
    pub final_lr_fraction: f64,
    #[config(default = 10)]
    pub step_epochs: usize,
    #[config(default = 0.5)]
    pub step_gamma: f64,
    #[config(default = 30)]
    pub epochs: usize,
    #[config(default = 100)]
    pub steps_per_epoch: usize,
    /// P: writers per triplet batch.
    #[config(default = 8)]
    pub writers_per_batch: usize,
    /// K: genuine images per writer in a triplet batch.
    #[config(default = 6)]
    pub genuine_per_writer: usize,
    /// Skilled forgeries per writer in a triplet batch (where the data set has them).
    #[config(default = 2)]
    pub forgeries_per_writer: usize,
    /// With several data sets: draw batch writers uniformly over all writers, or over sets first.
    #[config(default = "SetMix::Writers")]
    pub set_mix: SetMix,
    /// Pairs per batch for the contrastive and BCE losses.
    #[config(default = 32)]
    pub pairs_per_batch: usize,
    /// Share of negative pairs taken from the anchor writer's skilled forgeries.
    #[config(default = 0.5)]
    pub forgery_ratio: f32,
    #[config(default = true)]
    pub augment: bool,
    #[config(default = "AugmentConfig::default()")]
    pub augmentation: AugmentConfig,
    #[config(default = 42)]
    pub seed: u64,
    /// Epochs without a better validation score before stopping; 0 = never stop early.
    #[config(default = 8)]
    pub patience: usize,
    /// R: references enrolled per validation writer.
    #[config(default = 5)]
    pub validation_references: usize,
    #[config(default = "Selection::Mean")]
    pub selection: Selection,
    /// Images per forward pass when embedding for validation.
    #[config(default = 64)]
    pub eval_batch_size: usize,
    /// Start from the embedding weights of this run (a run directory or checkpoint) instead of
    /// random ones: pre-train on another data set, then fine-tune. Its channels and embedding
    /// size must match this run's; its input size may differ (the network ends in global
    /// average pooling).
    #[config(default = "None")]
    pub init_from: Option<PathBuf>,
    /// Threads that preprocess the data set (0 = all cores).
    #[config(default = 0)]
    pub load_threads: usize,
}

impl TrainingConfig {
    /// Checks the settings against each other before any work is done.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.preprocess.validate()?;
        ensure!(
            self.model.height == self.preprocess.height as usize && self.model.width == self.preprocess.width as usize,
            "model input {}x{} differs from preprocessing output {}x{}",
            self.model.height,
            self.model.width,
            self.preprocess.height,
            self.preprocess.width
        );
        ensure!(
            self.model.embedding_dim == EMBEDDING_DIM,
            "embedding_dim {} is not the gallery's {EMBEDDING_DIM}: templates could not be built",
            self.model.embedding_dim
        );
        ensure!(self.epochs > 0 && self.steps_per_epoch > 0, "epochs and steps_per_epoch must be positive");
        ensure!(self.learning_rate > 0.0 && self.learning_rate.is_finite(), "learning_rate must be positive");
        ensure!(self.margin > 0.0 && self.margin.is_finite(), "margin must be positive");
        ensure!(self.writers_per_batch >= 2, "a batch needs at least 2 writers");
        ensure!(self.genuine_per_writer >= 2, "a batch needs at least 2 genuine images per writer");
        ensure!(self.pairs_per_batch >= 2, "a pair batch needs at least 2 pairs");
        ensure!((0.0..=1.0).contains(&self.forgery_ratio), "forgery_ratio must be within [0, 1]");
        ensure!(self.validation_references > 0, "validation_references must be positive");
        ensure!(self.eval_batch_size > 0, "eval_batch_size must be positive");
        if self.lr_schedule == LrSchedule::Step {
            ensure!(self.step_epochs > 0, "step_epochs must be positive");
        }
        Ok(())
    }

    /// The learning rate at `global_step` (0-based).
    pub fn learning_rate_at(&self, global_step: usize) -> f64 {
        if global_step < self.warmup_steps {
            return self.learning_rate * (global_step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.learning_rate,
            LrSchedule::Cosine => {
                let total = (self.epochs * self.steps_per_epoch).saturating_sub(self.warmup_steps).max(1);
                let progress = ((global_step - self.warmup_steps) as f64 / total as f64).min(1.0);
                let floor = self.learning_rate * self.final_lr_fraction;
                floor + 0.5 * (self.learning_rate - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Step => {
                let epoch = global_step / self.steps_per_epoch;
                self.learning_rate * self.step_gamma.powi((epoch / self.step_epochs) as i32)
            }
        }
    }
}

/// Random streams derived from the run seed.
const STREAM_INIT: u64 = 0;
const STREAM_SAMPLER: u64 = 1;
const STREAM_AUGMENT: u64 = 2;

/// Where a run is; saved as `state.json` in every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Completed epochs.
    pub epoch: usize,
    /// Steps completed within epoch `epoch` (non-zero only after an interruption).
    pub step_in_epoch: usize,
    /// Partial sums of the interrupted epoch, so its reported loss covers all its steps.
    pub partial: EpochAccumulator,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_since_improvement: usize,
    /// The data set this run trains on (a resume on other data is refused).
    pub dataset_hash: String,
}

/// Running sums over the steps of one epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccumulator {
    pub loss_sum: f64,
    pub steps: usize,
    pub skipped_steps: usize,
    pub images: usize,
    pub seconds: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    pub loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Validation EERs; with several data sets, the mean over sets (each set weighs the same).
    pub val_eer_skilled: Option<f64>,
    pub val_eer_random: Option<f64>,
    /// Validation EERs of each data set (one entry for a single set).
    #[serde(default)]
    pub val_sets: Vec<SetValidation>,
    /// The figure that selects the best checkpoint: the selection figure averaged over sets.
    pub val_score: Option<f64>,
    pub images_per_second: f64,
    pub seconds: f64,
    /// Steps whose batch held no usable triplet.
    pub skipped_steps: usize,
    pub improved: bool,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    Interrupted,
}

/// What a call to [`train`] produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingOutcome {
    pub stopped: StopReason,
    /// The checkpoint to export: best by validation, or the last one when there was no validation.
    pub best_checkpoint: PathBuf,
    pub last_checkpoint: PathBuf,
    /// The checkpoint later steps use ([`FINAL_DIR`]): `None` when training was interrupted.
    pub final_checkpoint: Option<PathBuf>,
    /// How the final checkpoint was made from the best one.
    pub whitening: Option<WhiteningReport>,
    pub best_epoch: Option<usize>,
    pub best_score: Option<f64>,
    /// Completed epochs in total (including those before a resume).
    pub epochs_completed: usize,
    /// Metrics of the epochs run by this call.
    pub history: Vec<EpochMetrics>,
    /// Training throughput of this call (steps only, validation excluded).
    pub images_per_second: f64,
}

/// Validation EERs on one data set's validation writers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetValidation {
    pub set: String,
    pub skilled: Option<f64>,
    pub random: Option<f64>,
}

/// Validation figures of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationEers {
    pub skilled: Option<f64>,
    pub random: Option<f64>,
}

impl ValidationEers {
    /// The figure [`Selection`] picks (lower is better).
    pub fn score(&self, selection: Selection) -> Option<f64> {
        match selection {
            Selection::Skilled => self.skilled.or(self.random),
            Selection::Random => self.random,
            Selection::Mean => match (self.skilled, self.random) {
                (Some(s), Some(r)) => Some((s + r) / 2.0),
                (s, r) => s.or(r),
            },
        }
    }
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks a running [`train`] to stop after its current step and save a resumable checkpoint.
/// Safe to call from any thread (a CLI's own Ctrl-C handler, for instance).
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Routes Ctrl-C to [`request_stop`] (a second Ctrl-C exits at once: checkpoints are atomic, so
/// the last one stays usable). Installed once per process; if the program already has a handler,
/// that one must call [`request_stop`] itself.
fn install_ctrlc_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: stopping after this step (press again to quit at once)");
        });
        if let Err(e) = result {
            log::debug!("no Ctrl-C handler installed ({e}); call request_stop() to stop training");
        }
    });
}

/// Trains on `dataset`'s training writers, validates on its validation writers, and writes
/// checkpoints under `out_dir`. With `resume`, continues from `out_dir/last` (same config
/// required). Test writers are never read.
pub fn train(
    config: &TrainingConfig,
    dataset: &Dataset,
    split: &WriterSplit,
    out_dir: &Path,
    device: &Device,
    resume: bool,
) -> Result<TrainingOutcome> {
    config.validate()?;
    check_split(split)?;
    let mut needed: Vec<String> = split.train.iter().chain(&split.validation).cloned().collect();
    needed.sort();
    needed.dedup();
    let started = Instant::now();
    let cache = ImageCache::load(dataset, Some(&needed), &config.preprocess, config.load_threads)?;
    log::info!(
        "preprocessed {} images of {} writers in {:.1} s ({} skipped)",
        cache.len(),
        cache.writers.len(),
        started.elapsed().as_secs_f64(),
        cache.skipped.len()
    );
    STOP_REQUESTED.store(false, Ordering::SeqCst);
    install_ctrlc_handler();
    train_on_cache(config, &cache, split, &dataset.content_hash, out_dir, device, resume, &|_| {
        STOP_REQUESTED.load(Ordering::SeqCst)
    })
}

fn check_split(split: &WriterSplit) -> Result<()> {
    let train: BTreeSet<&String> = split.train.iter().collect();
    for w in split.validation.iter().chain(&split.test) {
        ensure!(!train.contains(w), "writer {w} is both in training and in a held-out set");
    }
    ensure!(!split.train.is_empty(), "the split has no training writers");
    Ok(())
}

/// The loop itself, on images already in memory. `stop(global_step)` is polled before every
/// step; returning true saves a resumable checkpoint and returns.
#[allow(clippy::too_many_arguments)]
pub fn train_on_cache(
    config: &TrainingConfig,
    cache: &ImageCache,
    split: &WriterSplit,
    dataset_hash: &str,
    out_dir: &Path,
    device: &Device,
    resume: bool,
    stop: &dyn Fn(usize) -> bool,
) -> Result<TrainingOutcome> {
    config.validate()?;
    ensure!(
        cache.height == config.model.height && cache.width == config.model.width,
        "images are {}x{}, the model expects {}x{}",
        cache.height,
        cache.width,
        config.model.height,
        config.model.width
    );
    let train_writers: BTreeSet<usize> = split.train.iter().filter_map(|w| cache.writer_index(w)).collect();
    let validation_images: Vec<usize> = {
        let val: BTreeSet<usize> = split.validation.iter().filter_map(|w| cache.writer_index(w)).collect();
        (0..cache.len()).filter(|&i| val.contains(&cache.meta[i].writer)).collect()
    };
    let mut sampler = WriterSampler::new(&cache.meta, &train_writers, config.seed)
        .context("cannot sample training batches")?
        .with_sets(&cache.writer_set, config.set_mix);
    if validation_images.is_empty() {
        log::warn!("no validation images: the last checkpoint will stand in for the best one");
    }

    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let last_dir = out_dir.join("last");
    let best_dir = out_dir.join("best");
    let metrics_path = out_dir.join("metrics.jsonl");
    let train_device = device.clone().autodiff();
    let eval_device = device.clone().without_autodiff();

    let (mut model, mut optimizer, mut state) = if resume {
        let dir = resolve_checkpoint(&last_dir)
            .with_context(|| format!("no checkpoint to resume in {}", last_dir.display()))?;
        let saved = TrainingConfig::load(dir.join(TRAINING_CONFIG_FILE))
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        ensure!(
            same_run(&saved, config),
            "the checkpoint in {} was trained with a different configuration",
            dir.display()
        );
        let (model, optimizer, state) = load_training_checkpoint(&dir, config, &train_device)?;
        ensure!(
            state.dataset_hash == dataset_hash,
            "the checkpoint was trained on other data (content hash {} vs {dataset_hash})",
            state.dataset_hash
        );
        truncate_metrics(&metrics_path, state.epoch)?;
        log::info!("resuming at epoch {}, step {}", state.epoch + 1, state.step_in_epoch);
        (model, optimizer, state)
    } else {
        ensure!(
            resolve_checkpoint(&last_dir).is_none() && resolve_checkpoint(&best_dir).is_none(),
            "{} already holds a run: resume it or choose another output directory",
            out_dir.display()
        );
        if metrics_path.exists() {
            fs::remove_file(&metrics_path)?;
        }
        train_device.seed(config.seed);
        let mut model = config.model.init_siamese_seeded(&train_device, derive_seed(config.seed, STREAM_INIT, 0))?;
        if let Some(from) = &config.init_from {
            model.embedding = pretrained_embedding(from, &config.model, &train_device)?;
        }
        let state = TrainingState { dataset_hash: dataset_hash.to_string(), ..Default::default() };
        (model, new_optimizer(config), state)
    };

    let mut history = Vec::new();
    let mut total_images = 0usize;
    let mut total_seconds = 0.0f64;
    let mut stopped = StopReason::Completed;
    let best_available = |state: &TrainingState| state.best_epoch.is_some() && resolve_checkpoint(&best_dir).is_some();

    // A run that stopped early resumes to nothing, like a finished one.
    if config.patience > 0 && state.best_epoch.is_some() && state.epochs_since_improvement >= config.patience {
        stopped = StopReason::EarlyStopped;
    }
    'epochs: while state.epoch < config.epochs && stopped == StopReason::Completed {
        let epoch = state.epoch;
        let progress = progress_bar(config.steps_per_epoch as u64, epoch + 1, config.epochs);
        progress.set_position(state.step_in_epoch as u64);
        let mut lr = config.learning_rate_at(epoch * config.steps_per_epoch + state.step_in_epoch);
        while state.step_in_epoch < config.steps_per_epoch {
            let global_step = epoch * config.steps_per_epoch + state.step_in_epoch;
            if stop(global_step) {
                progress.abandon_with_message("interrupted: saving a resumable checkpoint");
                save_checkpoint(&last_dir, &model, &optimizer, &state, config)?;
                stopped = StopReason::Interrupted;
                break 'epochs;
            }
            lr = config.learning_rate_at(global_step);
            let step_start = Instant::now();
            let outcome = training_step(config, cache, &mut sampler, &model, global_step, &train_device);
            let acc = &mut state.partial;
            match outcome {
                Some((loss, images)) => {
                    let value = f64::from(loss.clone().into_scalar::<f32>());
                    ensure!(
                        value.is_finite(),
                        "the loss became {value} at step {global_step}: lower the learning rate"
                    );
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    model = optimizer.step(lr, model, grads);
                    acc.loss_sum += value;
                    acc.steps += 1;
                    acc.images += images;
                    total_images += images;
                }
                None => acc.skipped_steps += 1,
            }
            let seconds = step_start.elapsed().as_secs_f64();
            acc.seconds += seconds;
            total_seconds += seconds;
            state.step_in_epoch += 1;
            progress.inc(1);
            progress.set_message(format!(
                "loss {:.4} · {:.0} img/s · lr {lr:.2e}",
                acc.loss_sum / acc.steps.max(1) as f64,
                acc.images as f64 / acc.seconds.max(1e-9)
            ));
        }

        // Epoch complete: validate, log, checkpoint.
        let per_set = if validation_images.is_empty() {
            Vec::new()
        } else {
            validate_per_set(&model.embedding, cache, &validation_images, config, &eval_device)?
        };
        let (eers, score) = combine_sets(&per_set, config.selection);
        let improved = match (score, state.best_score) {
            (Some(s), Some(best)) => s < best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let acc = std::mem::take(&mut state.partial);
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            loss: acc.loss_sum / acc.steps.max(1) as f64,
            lr,
            val_eer_skilled: eers.and_then(|e| e.skilled),
            val_eer_random: eers.and_then(|e| e.random),
            val_sets: per_set,
            val_score: score,
            images_per_second: acc.images as f64 / acc.seconds.max(1e-9),
            seconds: acc.seconds,
            skipped_steps: acc.skipped_steps,
            improved,
        };
        let per_set_summary = if metrics.val_sets.len() > 1 {
            let sets: Vec<String> = metrics
                .val_sets
                .iter()
                .map(|v| format!("{} {}/{}", v.set, percent(v.skilled), percent(v.random)))
                .collect();
            format!(" ({})", sets.join(", "))
        } else {
            String::new()
        };
        let summary = format!(
            "loss {:.4} · val EER skilled {} random {}{per_set_summary} · {:.0} img/s{}",
            metrics.loss,
            percent(metrics.val_eer_skilled),
            percent(metrics.val_eer_random),
            metrics.images_per_second,
            if improved { " · best" } else { "" }
        );
        if progress.is_hidden() {
            // No terminal (a log file, CI): one plain line per epoch instead of the bar.
            eprintln!("epoch {}/{}: {summary}", epoch + 1, config.epochs);
        }
        progress.finish_with_message(summary);
        log::info!("epoch {}: {}", epoch + 1, serde_json::to_string(&metrics)?);
        append_metrics(&metrics_path, &metrics)?;
        plot_metrics(&metrics_path, &out_dir.join(TRAINING_PLOT_FILE));
        history.push(metrics);

        state.epoch += 1;
        state.step_in_epoch = 0;
        if improved {
            state.best_score = score;
            state.best_epoch = Some(state.epoch);
            state.epochs_since_improvement = 0;
            save_checkpoint(&best_dir, &model, &optimizer, &state, config)?;
        } else {
            state.epochs_since_improvement += 1;
        }
        save_checkpoint(&last_dir, &model, &optimizer, &state, config)?;
        if config.patience > 0 && score.is_some() && state.epochs_since_improvement >= config.patience {
            log::info!("no better validation score for {} epochs: stopping", config.patience);
            stopped = StopReason::EarlyStopped;
            break;
        }
    }

    let best_checkpoint = if best_available(&state) { best_dir } else { last_dir.clone() };
    let whitening = if stopped == StopReason::Interrupted {
        None
    } else {
        let report = finalise(
            config,
            cache,
            split,
            &best_checkpoint,
            &out_dir.join(FINAL_DIR),
            &validation_images,
            &eval_device,
        )?;
        eprintln!("{}", report.summary());
        Some(report)
    };
    Ok(TrainingOutcome {
        stopped,
        final_checkpoint: whitening.as_ref().map(|_| out_dir.join(FINAL_DIR)),
        whitening,
        best_checkpoint,
        last_checkpoint: last_dir,
        best_epoch: state.best_epoch,
        best_score: state.best_score,
        epochs_completed: state.epoch,
        history,
        images_per_second: total_images as f64 / total_seconds.max(1e-9),
    })
}

pub(crate) fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{:.2}%", v * 100.0))
}

fn progress_bar(steps: u64, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {msg} ({elapsed}<{eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

fn new_optimizer(config: &TrainingConfig) -> ModuleOptimizer {
    AdamWConfig::new().with_weight_decay(config.weight_decay).init()
}

/// One forward pass and loss; `None` when the batch gives the loss nothing to work with.
fn training_step(
    config: &TrainingConfig,
    cache: &ImageCache,
    sampler: &mut WriterSampler,
    model: &SiameseModel,
    global_step: usize,
    device: &Device,
) -> Option<(Tensor<1>, usize)> {
    let step = global_step as u64;
    sampler.reseed(derive_seed(config.seed, STREAM_SAMPLER, step));
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(config.seed, STREAM_AUGMENT, step));
    let augmentation = config.augment.then_some(&config.augmentation);
    match config.loss {
        LossKind::Triplet => {
            let batch = sampler
                .writer_batch(config.writers_per_batch, config.genuine_per_writer, config.forgeries_per_writer)
                .ok()?;
            let images = cache.batch(&batch.indices, augmentation.map(|a| (a, &mut rng)), device);
            let embeddings = model.embedding.forward(images);
            let labels = BatchLabels { writers: &batch.writers, forged: &batch.forged };
            let loss = triplet_loss(embeddings, labels, config.margin, config.mining)?;
            Some((loss.loss, batch.indices.len()))
        }
        LossKind::Contrastive | LossKind::Bce => {
            let pairs = sampler.pair_batch(config.pairs_per_batch, config.forgery_ratio);
            // Embed each distinct image once, then gather the pair rows.
            let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
            for p in &pairs {
                for i in [p.a, p.b] {
                    let next = rows.len();
                    rows.entry(i).or_insert(next);
                }
            }
            let mut unique = vec![0; rows.len()];
            for (&image, &row) in &rows {
                unique[row] = image;
            }
            let images = cache.batch(&unique, augmentation.map(|a| (a, &mut rng)), device);
            let embeddings = model.embedding.forward(images);
            let gather = |pick: fn(&crate::sampler::Pair) -> usize| -> Tensor<1, Int> {
                let idx: Vec<i64> = pairs.iter().map(|p| rows[&pick(p)] as i64).collect();
                let len = idx.len();
                Tensor::from_data(TensorData::new(idx, [len]), device)
            };
            let a = embeddings.clone().select(0, gather(|p| p.a));
            let b = embeddings.select(0, gather(|p| p.b));
            let same: Vec<f32> = pairs.iter().map(|p| if p.same { 1.0 } else { 0.0 }).collect();
            let same = Tensor::<1>::from_data(TensorData::new(same, [pairs.len()]), device);
            let loss = match config.loss {
                LossKind::Contrastive => contrastive_loss(a, b, same, config.margin),
                _ => bce_with_logits(model.pair_head.forward(a, b), same),
            };
            Some((loss, unique.len()))
        }
    }
}

/// Embeds `maps` (each `height × width`) in batches on a non-autodiff copy of `model`.
fn embed_maps<'a>(
    model: &EmbeddingNet,
    maps: impl Iterator<Item = &'a [f32]>,
    height: usize,
    width: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let maps: Vec<&[f32]> = maps.collect();
    let mut out = Vec::with_capacity(maps.len());
    for chunk in maps.chunks(batch_size.max(1)) {
        let buffer: Vec<f32> = chunk.iter().flat_map(|m| m.iter().copied()).collect();
        let embeddings = model.forward(maps_to_tensor(buffer, chunk.len(), height, width, device));
        let [rows, dim] = embeddings.dims();
        let values: Vec<f32> =
            embeddings.try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("cannot read embeddings: {e:?}"))?;
        out.extend((0..rows).map(|r| values[r * dim..(r + 1) * dim].to_vec()));
    }
    Ok(out)
}

/// Validation EERs (skilled, random) of the embedding network on `images` of the cache, by the
/// shared verification protocol with `validation_references` references per writer.
pub fn validate(
    model: &EmbeddingNet,
    cache: &ImageCache,
    images: &[usize],
    config: &TrainingConfig,
    device: &Device,
) -> Result<ValidationEers> {
    let scores = validation_scores(model, cache, images, config, device)?;
    let eer = |impostor: &[f32]| {
        let e = metrics::eer(&scores.genuine, impostor).eer;
        e.is_finite().then_some(e)
    };
    Ok(ValidationEers { skilled: eer(&scores.skilled), random: eer(&scores.random) })
}

/// [`validate`] on each data set's validation writers separately (a set's EER is never diluted
/// by another set's easier or harder writers), in the cache's set order; sets without
/// validation images are left out.
pub fn validate_per_set(
    model: &EmbeddingNet,
    cache: &ImageCache,
    images: &[usize],
    config: &TrainingConfig,
    device: &Device,
) -> Result<Vec<SetValidation>> {
    let mut out = Vec::new();
    for (set, name) in cache.sets.iter().enumerate() {
        let mine: Vec<usize> = images.iter().copied().filter(|&i| cache.set_of_image(i) == set).collect();
        if mine.is_empty() {
            continue;
        }
        let eers = validate(model, cache, &mine, config, device)?;
        out.push(SetValidation { set: name.clone(), skilled: eers.skilled, random: eers.random });
    }
    Ok(out)
}

/// Mean EERs over sets, and the selection score: each set's [`ValidationEers::score`] averaged
/// over the sets that have one. `None`s when nothing was validated.
pub fn combine_sets(per_set: &[SetValidation], selection: Selection) -> (Option<ValidationEers>, Option<f64>) {
    if per_set.is_empty() {
        return (None, None);
    }
    let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    let eers = ValidationEers {
        skilled: mean(per_set.iter().filter_map(|v| v.skilled).collect()),
        random: mean(per_set.iter().filter_map(|v| v.random).collect()),
    };
    let score = mean(
        per_set
            .iter()
            .filter_map(|v| ValidationEers { skilled: v.skilled, random: v.random }.score(selection))
            .collect(),
    );
    (Some(eers), score)
}

/// The raw verification scores behind [`validate`].
pub fn validation_scores(
    model: &EmbeddingNet,
    cache: &ImageCache,
    images: &[usize],
    config: &TrainingConfig,
    device: &Device,
) -> Result<VerificationScores> {
    let eval_model = model.valid().to_device(device);
    let embeddings = embed_maps(
        &eval_model,
        images.iter().map(|&i| cache.image(i)),
        cache.height,
        cache.width,
        config.eval_batch_size,
        device,
    )?;
    let mut samples = Vec::with_capacity(images.len());
    for (&i, embedding) in images.iter().zip(&embeddings) {
        samples.push(EmbeddedSample {
            writer: cache.writers[cache.meta[i].writer].clone(),
            label: if cache.meta[i].forged { Label::Forged } else { Label::Genuine },
            template: Template::from_embedding(embedding).map_err(|e| anyhow::anyhow!("{}: {e}", cache.sources[i]))?,
        });
    }
    Ok(verification_scores(&samples, config.validation_references, config.seed))
}

// ---------------------------------------------------------------------------------------------
// The final checkpoint: the best one, whitened
// ---------------------------------------------------------------------------------------------

/// The checkpoint of a finished run that export, evaluation and k-fold use
/// ([`crate::bundle::checkpoint_of`]): the best checkpoint's network with the within-writer
/// whitening ([`crate::whiten`]) folded in when it does not worsen the validation score. Not
/// resumable (it holds no optimizer state); `last/` is.
pub const FINAL_DIR: &str = "final";
const WHITENING_FILE: &str = "whitening.json";

/// What [`finalise`] measured and decided; saved as `whitening.json` in the final checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhiteningReport {
    /// Whether the final network is whitened.
    pub applied: bool,
    pub shrinkage: f64,
    /// Training writers and their genuine images the whitening was fitted on.
    pub writers: usize,
    pub images: usize,
    /// Validation EERs per set and the selection score, without and with the whitening.
    pub validation_without: Vec<SetValidation>,
    pub score_without: Option<f64>,
    pub validation_with: Vec<SetValidation>,
    pub score_with: Option<f64>,
    /// Why no whitening was fitted, when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl WhiteningReport {
    /// One line for the training log.
    pub fn summary(&self) -> String {
        if let Some(note) = &self.note {
            return format!("within-writer whitening: not fitted ({note})");
        }
        format!(
            "within-writer whitening ({} training writers, {} images): validation score {} without, {} with: {}",
            self.writers,
            self.images,
            percent(self.score_without),
            percent(self.score_with),
            if self.applied { "kept" } else { "not kept" }
        )
    }
}

/// Fits the within-writer whitening on the training writers' genuine images (no augmentation),
/// scores the best checkpoint's network on the validation images without and with it, and
/// writes the final checkpoint to `final_dir` (atomically) with the better one (the whitened
/// network on a tie, or when there is no validation score to compare).
#[allow(clippy::too_many_arguments)]
fn finalise(
    config: &TrainingConfig,
    cache: &ImageCache,
    split: &WriterSplit,
    best: &Path,
    final_dir: &Path,
    validation_images: &[usize],
    device: &Device,
) -> Result<WhiteningReport> {
    let source =
        resolve_checkpoint(best).with_context(|| format!("{} holds no complete checkpoint", best.display()))?;
    let (model, _) = load_model(&source, device)?;
    let train: BTreeSet<usize> = split.train.iter().filter_map(|w| cache.writer_index(w)).collect();
    let images: Vec<usize> =
        (0..cache.len()).filter(|&i| train.contains(&cache.meta[i].writer) && !cache.meta[i].forged).collect();
    let embeddings = embed_maps(
        &model,
        images.iter().map(|&i| cache.image(i)),
        cache.height,
        cache.width,
        config.eval_batch_size,
        device,
    )?;
    let mut by_writer: BTreeMap<usize, Vec<Vec<f32>>> = BTreeMap::new();
    for (&i, e) in images.iter().zip(embeddings) {
        by_writer.entry(cache.meta[i].writer).or_default().push(e);
    }
    let groups: Vec<Vec<Vec<f32>>> = by_writer.into_values().collect();
    let validation_without = validate_per_set(&model, cache, validation_images, config, device)?;
    let (_, score_without) = combine_sets(&validation_without, config.selection);
    let mut report = WhiteningReport {
        applied: false,
        shrinkage: crate::whiten::SHRINKAGE,
        writers: 0,
        images: 0,
        validation_without,
        score_without,
        validation_with: Vec::new(),
        score_with: None,
        note: None,
    };
    let network = match crate::whiten::within_writer_whitening(&groups, crate::whiten::SHRINKAGE) {
        Err(e) => {
            report.note = Some(e.to_string());
            model
        }
        Ok(w) => {
            let m = Tensor::<2>::from_data(TensorData::new(w.matrix.clone(), [w.dimension, w.dimension]), device);
            let whitened = model.clone().with_output_transform(m);
            report.validation_with = validate_per_set(&whitened, cache, validation_images, config, device)?;
            report.score_with = combine_sets(&report.validation_with, config.selection).1;
            report.writers = w.writers;
            report.images = w.images;
            report.applied = match (report.score_without, report.score_with) {
                (Some(without), Some(with)) => with <= without,
                _ => true,
            };
            if report.applied { whitened } else { model }
        }
    };
    write_dir_atomically(final_dir, |tmp| {
        for file in [STATE_FILE, MODEL_CONFIG_FILE, TRAINING_CONFIG_FILE] {
            fs::copy(source.join(file), tmp.join(file))
                .with_context(|| format!("cannot copy {}", source.join(file).display()))?;
        }
        network
            .clone()
            .save_file(tmp.join(EMBEDDING_FILE))
            .map_err(|e| anyhow::anyhow!("cannot save the final embedding network: {e}"))?;
        fs::write(tmp.join(WHITENING_FILE), serde_json::to_vec_pretty(&report)?)?;
        Ok(())
    })?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

const MODEL_FILE: &str = "model.bpk";
const EMBEDDING_FILE: &str = "embedding.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";
const MODEL_CONFIG_FILE: &str = "model_config.json";
const TRAINING_CONFIG_FILE: &str = "training_config.json";
/// Loss and validation EER per epoch, redrawn after each epoch.
pub const TRAINING_PLOT_FILE: &str = "training.png";

fn config_json<C: Config>(config: &C) -> String {
    burn::config::config_to_json(config)
}

/// Whether two configs describe the same run (settings that only affect speed may differ).
fn same_run(a: &TrainingConfig, b: &TrainingConfig) -> bool {
    let normalise = |c: &TrainingConfig| config_json(&c.clone().with_load_threads(0).with_eval_batch_size(1));
    normalise(a) == normalise(b)
}

/// Writes a full checkpoint to `dir` atomically (temp directory, fsync, rename).
fn save_checkpoint(
    dir: &Path,
    model: &SiameseModel,
    optimizer: &ModuleOptimizer,
    state: &TrainingState,
    config: &TrainingConfig,
) -> Result<()> {
    // `valid()` folds the last batch-norm running-statistics update into the saved values
    // (burn applies it lazily, at the next forward pass, and a record would miss it).
    let model = model.valid();
    write_dir_atomically(dir, |tmp| {
        model.clone().save_file(tmp.join(MODEL_FILE)).map_err(|e| anyhow::anyhow!("cannot save the model: {e}"))?;
        model
            .embedding
            .clone()
            .save_file(tmp.join(EMBEDDING_FILE))
            .map_err(|e| anyhow::anyhow!("cannot save the embedding network: {e}"))?;
        optimizer.save(tmp.join(OPTIMIZER_FILE)).map_err(|e| anyhow::anyhow!("cannot save the optimizer: {e}"))?;
        fs::write(tmp.join(STATE_FILE), serde_json::to_vec_pretty(state)?)?;
        fs::write(tmp.join(MODEL_CONFIG_FILE), config_json(&config.model))?;
        fs::write(tmp.join(TRAINING_CONFIG_FILE), config_json(config))?;
        Ok(())
    })
}

fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir.file_name().with_context(|| format!("{} has no directory name", dir.display()))?;
    Ok(dir.with_file_name(format!(".{}.{suffix}", name.to_string_lossy())))
}

/// Fills a fresh sibling directory with `fill`, syncs it, and swaps it in for `dir`. At every
/// instant either `dir` or its `.old` sibling is a complete checkpoint ([`resolve_checkpoint`]).
fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(dir, &format!("tmp-{}", std::process::id()))?;
    let old = sibling(dir, "old")?;
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    fill(&tmp)?;
    for entry in fs::read_dir(&tmp)? {
        File::open(entry?.path())?.sync_all()?;
    }
    File::open(&tmp)?.sync_all()?;
    if dir.exists() {
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        fs::rename(dir, &old).with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    fs::rename(&tmp, dir).with_context(|| format!("cannot move the new checkpoint to {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        // Make the renames durable; not all platforms can open a directory, hence no `?`.
        let _ = File::open(parent).and_then(|f| f.sync_all());
    }
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// The complete checkpoint at `dir`, or the one left aside if a swap was interrupted.
pub fn resolve_checkpoint(dir: &Path) -> Option<PathBuf> {
    let complete = |d: &Path| d.join(STATE_FILE).is_file() && d.join(EMBEDDING_FILE).is_file();
    if complete(dir) {
        return Some(dir.to_path_buf());
    }
    let old = sibling(dir, "old").ok()?;
    complete(&old).then_some(old)
}

fn load_training_checkpoint(
    dir: &Path,
    config: &TrainingConfig,
    device: &Device,
) -> Result<(SiameseModel, ModuleOptimizer, TrainingState)> {
    let model = config
        .model
        .init_siamese(device)?
        .try_load_file(dir.join(MODEL_FILE))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(MODEL_FILE).display()))?;
    let optimizer = new_optimizer(config)
        .load(dir.join(OPTIMIZER_FILE))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(OPTIMIZER_FILE).display()))?;
    let state: TrainingState = serde_json::from_slice(&fs::read(dir.join(STATE_FILE))?)
        .with_context(|| format!("{}", dir.join(STATE_FILE).display()))?;
    Ok((model, optimizer, state))
}

/// Loads a checkpoint's embedding network for inference (validation mode) on `device`.
/// The embedding weights of another run, for a run that starts from them (`init_from`).
fn pretrained_embedding(from: &Path, model: &ModelConfig, device: &Device) -> Result<EmbeddingNet> {
    let (dir, saved) = saved_network(&crate::bundle::checkpoint_of(from))
        .with_context(|| format!("cannot start from {}", from.display()))?;
    ensure!(
        saved.channels == model.channels
            && saved.convs_per_block == model.convs_per_block
            && saved.embedding_dim == model.embedding_dim,
        "{}: its network (channels {:?} × {} convs, embedding {}) differs from this run's (channels {:?} × {} \
         convs, embedding {}); only the input size may differ",
        dir.display(),
        saved.channels,
        saved.convs_per_block,
        saved.embedding_dim,
        model.channels,
        model.convs_per_block,
        model.embedding_dim
    );
    load_embedding(model, &dir, device)
}

/// The complete checkpoint at `checkpoint_dir` and the network configuration saved in it.
fn saved_network(checkpoint_dir: &Path) -> Result<(PathBuf, ModelConfig)> {
    let dir = resolve_checkpoint(checkpoint_dir)
        .with_context(|| format!("{} holds no complete checkpoint", checkpoint_dir.display()))?;
    let config = ModelConfig::load(dir.join(MODEL_CONFIG_FILE))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(MODEL_CONFIG_FILE).display()))?;
    Ok((dir, config))
}

/// `config`'s network with the embedding weights saved in checkpoint `dir`.
fn load_embedding(config: &ModelConfig, dir: &Path, device: &Device) -> Result<EmbeddingNet> {
    config
        .init(device)?
        .try_load_file(dir.join(EMBEDDING_FILE))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(EMBEDDING_FILE).display()))
}

pub fn load_model(checkpoint_dir: &Path, device: &Device) -> Result<(EmbeddingNet, ModelConfig)> {
    let (dir, config) = saved_network(checkpoint_dir)?;
    let model = load_embedding(&config, &dir, device)?;
    Ok((model.valid(), config))
}

/// Loads the training configuration saved with a checkpoint (preprocessing included).
pub fn load_training_config(checkpoint_dir: &Path) -> Result<TrainingConfig> {
    let dir = resolve_checkpoint(checkpoint_dir)
        .with_context(|| format!("{} holds no complete checkpoint", checkpoint_dir.display()))?;
    TrainingConfig::load(dir.join(TRAINING_CONFIG_FILE))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(TRAINING_CONFIG_FILE).display()))
}

/// The training configuration a `--config FILE` flag names (`train`, `eval --kfold` and
/// `quickstart` take one), the file named in the error.
pub fn load_config_flag(path: &Path) -> Result<TrainingConfig> {
    TrainingConfig::load(path).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

fn append_metrics(path: &Path, metrics: &EpochMetrics) -> Result<()> {
    let mut file = fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{}", serde_json::to_string(metrics)?)?;
    Ok(())
}

/// Redraws the loss and validation-EER curves from every epoch in `metrics.jsonl` (a resumed
/// run included). A plot that cannot be drawn is a warning: it must not stop training.
fn plot_metrics(metrics_path: &Path, png: &Path) {
    let epochs: Vec<EpochMetrics> = fs::read_to_string(metrics_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if let Err(e) = crate::report::plots::training_curves(png, &epochs) {
        log::warn!("cannot draw {}: {e:#}", png.display());
    }
}

/// Drops metric lines of epochs after `epochs` (written after the checkpoint being resumed).
fn truncate_metrics(path: &Path, epochs: usize) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| serde_json::from_str::<EpochMetrics>(line).is_ok_and(|m| m.epoch <= epochs))
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    fs::write(path, body)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inference through the shared protocol

/// The burn implementation of the shared [`Embedder`]: batched inference without autodiff.
#[derive(Debug)]
pub struct BurnEmbedder {
    model: EmbeddingNet,
    config: ModelConfig,
    device: Device,
    batch_size: usize,
}

impl BurnEmbedder {
    /// Wraps a model; it is switched to validation mode on a non-autodiff copy of `device`.
    pub fn new(model: &EmbeddingNet, config: ModelConfig, device: &Device) -> Self {
        let device = device.clone().without_autodiff();
        Self { model: model.valid().to_device(&device), config, device, batch_size: 64 }
    }

    /// Loads the embedding network of a checkpoint directory.
    pub fn from_checkpoint(checkpoint_dir: &Path, device: &Device) -> Result<Self> {
        let (model, config) = load_model(checkpoint_dir, device)?;
        Ok(Self::new(&model, config, device))
    }

    /// Images per forward pass (default 64).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.config
    }
}

impl Embedder for BurnEmbedder {
    fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (height, width) = (self.config.height, self.config.width);
        if let Some(bad) = batch
            .iter()
            .find(|p| p.height as usize != height || p.width as usize != width || p.pixels.len() != height * width)
        {
            return Err(EmbedError(format!(
                "image is {}x{} ({} values), the model expects {height}x{width}",
                bad.height,
                bad.width,
                bad.pixels.len()
            )));
        }
        embed_maps(&self.model, batch.iter().map(|p| p.pixels.as_slice()), height, width, self.batch_size, &self.device)
            .map_err(|e| EmbedError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SampleMeta;
    use burn::module::{ModuleVisitor, Param};

    const H: usize = 32;
    const W: usize = 64;

    /// Draws writer `w`'s "signature" on an `H×W` map: a sinusoid whose frequency, amplitude and
    /// phase belong to the writer, plus a writer-specific bar; `jitter` moves it the way one
    /// writer varies, and `forged` shifts the frequency the way an imitation would.
    fn signature(w: usize, jitter: f32, forged: bool) -> Vec<f32> {
        signature_sized(w, jitter, forged, H, W)
    }

    fn signature_sized(w: usize, jitter: f32, forged: bool, h: usize, width: usize) -> Vec<f32> {
        let mut map = vec![0.0; h * width];
        let freq = 1.0 + 0.6 * w as f32 + if forged { 0.35 } else { 0.0 };
        let amp = h as f32 * (0.18 + 0.06 * (w % 3) as f32) * (1.0 + 0.1 * jitter);
        let phase = 0.7 * w as f32 + 0.3 * jitter;
        for x in 4..width - 4 {
            let t = x as f32 / width as f32;
            let y = h as f32 / 2.0 + amp * (std::f32::consts::TAU * freq * t + phase).sin() + jitter;
            let yi = (y.round() as usize).clamp(1, h - 2);
            map[yi * width + x] = 1.0;
            map[(yi + 1) * width + x] = 0.5;
        }
        let bar = 4 + (w * 7) % (width - 24);
        for x in bar..bar + 12 {
            map[(h - 4) * width + x] = 0.8;
        }
        map
    }

    /// 8 writers × (6 genuine + 3 forged): writers 0-5 train, 6-7 validate.
    fn fixture() -> (ImageCache, WriterSplit) {
        let names: Vec<String> = (0..8).map(|w| format!("w{w}")).collect();
        let mut images = Vec::new();
        for w in 0..8 {
            for k in 0..6 {
                images.push((SampleMeta { writer: w, forged: false }, signature(w, k as f32 * 0.4 - 1.0, false)));
            }
            for k in 0..3 {
                images.push((SampleMeta { writer: w, forged: true }, signature(w, k as f32 * 0.5 - 0.5, true)));
            }
        }
        let cache = ImageCache::from_maps(H, W, names.clone(), images).expect("cache");
        let split = WriterSplit { train: names[..6].to_vec(), validation: names[6..].to_vec(), test: vec![] };
        (cache, split)
    }

    fn tiny_config() -> TrainingConfig {
        TrainingConfig::new()
            .with_model(ModelConfig::new().with_height(H).with_width(W).with_channels(vec![8, 16, 32]))
            .with_preprocess(PreprocessConfig { height: H as u32, width: W as u32, ..PreprocessConfig::default() })
            .with_epochs(3)
            .with_steps_per_epoch(6)
            .with_writers_per_batch(4)
            .with_genuine_per_writer(4)
            .with_forgeries_per_writer(1)
            .with_pairs_per_batch(16)
            .with_learning_rate(3e-3)
            .with_warmup_steps(0)
            .with_lr_schedule(LrSchedule::Constant)
            .with_augment(false)
            .with_patience(0)
            .with_validation_references(2)
            .with_seed(7)
    }

    fn run(config: &TrainingConfig, dir: &Path, resume: bool, stop: &dyn Fn(usize) -> bool) -> TrainingOutcome {
        let (cache, split) = fixture();
        train_on_cache(config, &cache, &split, "fixture", dir, &Device::flex(), resume, stop).expect("trains")
    }

    /// Every float parameter and running statistic of a module, by path.
    fn parameters<M: Module>(module: &M) -> Vec<(String, Vec<f32>)> {
        #[derive(Default)]
        struct Collect {
            path: Vec<String>,
            out: Vec<(String, Vec<f32>)>,
        }
        impl ModuleVisitor for Collect {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let values = param.val().try_into_vec_as::<f32>().expect("f32");
                self.out.push((self.path.join("."), values));
            }
        }
        let mut collect = Collect::default();
        module.visit(&mut collect);
        collect.out
    }

    /// Asserts two parameter lists are bit-identical, naming the first tensor that is not.
    fn assert_same_parameters(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) {
        assert_eq!(a.len(), b.len(), "parameter counts differ");
        for ((pa, va), (pb, vb)) in a.iter().zip(b) {
            assert_eq!(pa, pb, "parameter order differs");
            let max_diff = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(va == vb, "{pa} differs (max |diff| {max_diff:e})");
        }
    }

    #[test]
    fn each_loss_falls_on_synthetic_writers() {
        for loss in [LossKind::Triplet, LossKind::Contrastive, LossKind::Bce] {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = tiny_config().with_loss(loss).with_mining(Mining::Hard);
            let outcome = run(&config, dir.path(), false, &|_| false);
            assert_eq!(outcome.stopped, StopReason::Completed);
            let losses: Vec<f64> = outcome.history.iter().map(|m| m.loss).collect();
            assert_eq!(losses.len(), 3);
            assert!(losses[2] < losses[0], "{loss:?}: losses {losses:?}");
            assert!(outcome.history.iter().all(|m| m.val_eer_random.is_some() && m.val_eer_skilled.is_some()));
            assert!(outcome.images_per_second > 0.0);
            let lines = fs::read_to_string(dir.path().join("metrics.jsonl")).expect("metrics");
            assert_eq!(lines.lines().count(), 3);
        }
    }

    #[test]
    fn an_interrupted_and_resumed_run_matches_an_uninterrupted_one() {
        let config = tiny_config()
            .with_epochs(2)
            .with_steps_per_epoch(4)
            .with_augment(true)
            .with_lr_schedule(LrSchedule::Cosine)
            .with_warmup_steps(2)
            .with_mining(Mining::SemiHard);
        let straight = tempfile::tempdir().expect("tempdir");
        let a = run(&config, straight.path(), false, &|_| false);
        assert_eq!(a.epochs_completed, 2);

        let broken = tempfile::tempdir().expect("tempdir");
        let first = run(&config, broken.path(), false, &|step| step >= 5);
        assert_eq!(first.stopped, StopReason::Interrupted);
        assert_eq!(first.epochs_completed, 1);
        let second = run(&config, broken.path(), true, &|_| false);
        assert_eq!(second.stopped, StopReason::Completed);
        assert_eq!(second.epochs_completed, 2);

        let device = Device::flex();
        let (model_a, _) = load_model(&a.last_checkpoint, &device).expect("loads");
        let (model_b, _) = load_model(&second.last_checkpoint, &device).expect("loads");
        let (pa, pb) = (parameters(&model_a), parameters(&model_b));
        assert!(!pa.is_empty());
        assert_same_parameters(&pa, &pb);
        // The second epoch's loss covers all its steps, before and after the interruption.
        assert_eq!(a.history[1].loss, second.history[0].loss);
        let lines = fs::read_to_string(broken.path().join("metrics.jsonl")).expect("metrics");
        assert_eq!(lines.lines().count(), 2);
    }

    #[test]
    fn a_checkpoint_loads_back_with_identical_weights() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tiny_config().with_epochs(1).with_steps_per_epoch(2);
        let (cache, _) = fixture();
        let device = Device::flex().autodiff();
        device.seed(3);
        let model = config.model.init_siamese(&device).expect("model");
        let mut optimizer = new_optimizer(&config);
        let mut sampler = WriterSampler::new(&cache.meta, &(0..6).collect(), 1).expect("sampler");
        let (loss, _) = training_step(&config, &cache, &mut sampler, &model, 0, &device).expect("step");
        let model = optimizer.step(1e-3, model.clone(), GradientsParams::from_grads(loss.backward(), &model));
        let state = TrainingState::default();
        save_checkpoint(&dir.path().join("ckpt"), &model, &optimizer, &state, &config).expect("saves");

        let (loaded, loaded_config) = load_model(&dir.path().join("ckpt"), &Device::flex()).expect("loads");
        assert_eq!(loaded_config, config.model);
        assert_same_parameters(&parameters(&loaded), &parameters(&model.embedding.valid()));
        let (full, _, loaded_state) =
            load_training_checkpoint(&dir.path().join("ckpt"), &config, &device).expect("loads");
        assert_same_parameters(&parameters(&full), &parameters(&model));
        assert_eq!(loaded_state, state);
    }

    #[test]
    fn an_interrupted_swap_leaves_the_previous_checkpoint_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tiny_config();
        let device = Device::flex().autodiff();
        let model = config.model.init_siamese(&device).expect("model");
        let target = dir.path().join("last");
        save_checkpoint(&target, &model, &new_optimizer(&config), &TrainingState::default(), &config).expect("saves");
        // Simulate a crash between "move aside" and "move in".
        fs::rename(&target, sibling(&target, "old").expect("sibling")).expect("rename");
        assert_eq!(resolve_checkpoint(&target), Some(sibling(&target, "old").expect("sibling")));
        assert!(load_model(&target, &Device::flex()).is_ok());
    }

    #[test]
    fn resume_refuses_another_configuration_and_fresh_runs_refuse_a_used_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tiny_config().with_epochs(1).with_steps_per_epoch(1);
        run(&config, dir.path(), false, &|_| false);
        let (cache, split) = fixture();
        let other = config.clone().with_margin(0.3);
        let device = Device::flex();
        assert!(train_on_cache(&other, &cache, &split, "fixture", dir.path(), &device, true, &|_| false).is_err());
        assert!(train_on_cache(&config, &cache, &split, "fixture", dir.path(), &device, false, &|_| false).is_err());
        assert!(train_on_cache(&config, &cache, &split, "other data", dir.path(), &device, true, &|_| false).is_err());
        // Settings that only change speed may differ; a finished run resumes to nothing.
        let faster = config.clone().with_load_threads(1).with_eval_batch_size(7);
        let again =
            train_on_cache(&faster, &cache, &split, "fixture", dir.path(), &device, true, &|_| false).expect("resumes");
        assert_eq!((again.epochs_completed, again.history.len()), (1, 0));
    }

    /// Embeddings of a fixed batch through the checkpoint at `dir`.
    fn outputs_of(dir: &Path) -> Vec<f32> {
        let (net, _) = load_model(dir, &Device::flex()).expect("checkpoint");
        let input = Tensor::<4>::ones([2, 1, H, W], &Device::flex()).mul_scalar(0.3);
        net.forward(input).into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn a_run_can_start_from_another_runs_weights() {
        let pre = tempfile::tempdir().expect("tempdir");
        run(&tiny_config().with_epochs(1).with_steps_per_epoch(2), pre.path(), false, &|_| false);
        // Stopped before its first step, a run's checkpoint holds the weights it started from.
        let tuned = tempfile::tempdir().expect("tempdir");
        let config = tiny_config().with_init_from(Some(pre.path().to_path_buf()));
        assert_eq!(run(&config, tuned.path(), false, &|_| true).stopped, StopReason::Interrupted);
        let fresh = tempfile::tempdir().expect("tempdir");
        run(&tiny_config(), fresh.path(), false, &|_| true);

        let pretrained = outputs_of(&crate::bundle::checkpoint_of(pre.path()));
        assert_eq!(outputs_of(&tuned.path().join("last")), pretrained);
        assert_ne!(outputs_of(&fresh.path().join("last")), pretrained);

        // Another network shape is refused, naming the checkpoint.
        let (cache, split) = fixture();
        let other = tiny_config()
            .with_model(ModelConfig::new().with_height(H).with_width(W).with_channels(vec![8, 16, 16]))
            .with_init_from(Some(pre.path().to_path_buf()));
        let dir = tempfile::tempdir().expect("tempdir");
        let err = train_on_cache(&other, &cache, &split, "fixture", dir.path(), &Device::flex(), false, &|_| false)
            .expect_err("channels differ");
        assert!(format!("{err:#}").contains("differs from this run's"), "{err:#}");
    }

    #[test]
    fn an_early_stopped_run_resumes_to_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tiny_config().with_epochs(8).with_patience(1);
        let first = run(&config, dir.path(), false, &|_| false);
        assert_eq!(first.stopped, StopReason::EarlyStopped, "the fixture stops improving within 8 epochs");
        assert!(first.epochs_completed < 8);
        let again = run(&config, dir.path(), true, &|_| false);
        assert_eq!(again.stopped, StopReason::EarlyStopped);
        assert_eq!((again.epochs_completed, again.history.len()), (first.epochs_completed, 0));
        assert_eq!(again.best_epoch, first.best_epoch);
    }

    #[test]
    fn overlapping_splits_are_refused() {
        let split = WriterSplit { train: vec!["a".into()], validation: vec!["a".into()], test: vec![] };
        assert!(check_split(&split).is_err());
    }

    #[test]
    fn burn_embedder_gives_unit_embeddings_and_checks_sizes() {
        let config = tiny_config();
        let device = Device::flex();
        let model = config.model.init(&device).expect("model");
        let mut embedder = BurnEmbedder::new(&model, config.model.clone(), &device).with_batch_size(3);
        let images: Vec<Preprocessed> = (0..5)
            .map(|w| Preprocessed { height: H as u32, width: W as u32, pixels: signature(w, 0.0, false) })
            .collect();
        let out = embedder.embed(&images).expect("embeds");
        assert_eq!(out.len(), 5);
        for e in &out {
            assert_eq!(e.len(), EMBEDDING_DIM);
            let norm: f32 = e.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        // Batching does not change the answer.
        let single = embedder.embed(&images[4..]).expect("embeds");
        for (a, b) in single[0].iter().zip(&out[4]) {
            assert!((a - b).abs() < 1e-5);
        }
        let wrong = Preprocessed { height: 8, width: 8, pixels: vec![0.0; 64] };
        assert!(embedder.embed(&[wrong]).is_err());
    }

    #[test]
    fn learning_rate_schedules() {
        let config = tiny_config().with_learning_rate(1.0).with_epochs(2).with_steps_per_epoch(10);
        let cosine =
            config.clone().with_lr_schedule(LrSchedule::Cosine).with_warmup_steps(4).with_final_lr_fraction(0.0);
        assert_eq!(cosine.learning_rate_at(0), 0.25);
        assert_eq!(cosine.learning_rate_at(3), 1.0);
        assert_eq!(cosine.learning_rate_at(4), 1.0);
        assert!((cosine.learning_rate_at(12) - 0.5).abs() < 1e-12);
        assert!(cosine.learning_rate_at(19) < 0.01);
        let step = config.with_lr_schedule(LrSchedule::Step).with_step_epochs(1).with_step_gamma(0.1);
        assert_eq!(step.learning_rate_at(5), 1.0);
        assert!((step.learning_rate_at(15) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn training_config_round_trips_through_json() {
        let config = tiny_config().with_loss(LossKind::Bce).with_mining(Mining::Hard);
        let json = config_json(&config);
        assert!(json.contains("\"bce\"") && json.contains("\"hard\""));
        let back: TrainingConfig = serde_json::from_str(&json).expect("parses");
        assert_eq!(config_json(&back), json);
    }

    /// Throughput of the default configuration (64×128 input, 16-32-64-128 channels, P×K = 8×6
    /// genuine + 8×2 forgeries = 64 images per step, triplet semi-hard, augmentation on):
    /// `cargo test -p autograph-trainer --lib measure_training_throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: run explicitly"]
    fn measure_training_throughput() {
        let config = TrainingConfig::new();
        let (h, w) = (config.model.height, config.model.width);
        let names: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
        let mut images = Vec::new();
        for writer in 0..12 {
            for k in 0..8 {
                let jitter = k as f32 * 0.3 - 1.0;
                images.push((SampleMeta { writer, forged: false }, signature_sized(writer, jitter, false, h, w)));
                images.push((SampleMeta { writer, forged: true }, signature_sized(writer, jitter, true, h, w)));
            }
        }
        let cache = ImageCache::from_maps(h, w, names, images).expect("cache");
        let device = Device::flex().autodiff();
        device.seed(1);
        let mut model = config.model.init_siamese(&device).expect("model");
        let mut optimizer = new_optimizer(&config);
        let mut sampler = WriterSampler::new(&cache.meta, &(0..12).collect(), 1).expect("sampler");
        let steps = 6;
        let (mut images_done, mut seconds) = (0usize, 0.0f64);
        for step in 0..=steps {
            let start = Instant::now();
            let (loss, n) = training_step(&config, &cache, &mut sampler, &model, step, &device).expect("step");
            let value = loss.clone().into_scalar::<f32>();
            model = optimizer.step(1e-3, model.clone(), GradientsParams::from_grads(loss.backward(), &model));
            let _ = parameters(&model.pair_head); // forces the update to finish
            let elapsed = start.elapsed().as_secs_f64();
            eprintln!("step {step}: {n} images, loss {value:.4}, {elapsed:.3} s");
            if step > 0 {
                images_done += n;
                seconds += elapsed;
            }
        }
        // Where the time goes: batch assembly (with augmentation) and the forward pass alone.
        let indices: Vec<usize> = (0..64).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let start = Instant::now();
        let images = cache.batch(&indices, Some((&config.augmentation, &mut rng)), &device);
        let batch_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _ = model.embedding.valid().forward(images.without_autodiff()).try_into_vec_as::<f32>();
        eprintln!(
            "64 images: batch + augmentation {batch_seconds:.3} s, inference forward {:.3} s",
            start.elapsed().as_secs_f64()
        );
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        eprintln!(
            "default config: {:.1} images/s ({:.3} s per {}-image step) on {threads} threads",
            images_done as f64 / seconds,
            seconds / steps as f64,
            images_done / steps
        );
    }

    /// A short real-data run: `AUTOGRAPH_SMOKE_DATA=/work/shared/data/svc2004 cargo test -p
    /// autograph-trainer --lib smoke_train_on_real_data -- --ignored --nocapture`
    /// (`AUTOGRAPH_SMOKE_EPOCHS`, `AUTOGRAPH_SMOKE_STEPS`, `AUTOGRAPH_SMOKE_LOSS`, `AUTOGRAPH_SMOKE_OUT`
    /// optional). Validation EER is on 15 % of the writers; another 15 % are held out as test.
    #[test]
    #[ignore = "needs a real data set: run explicitly"]
    fn smoke_train_on_real_data() {
        use autograph_shared::dataset::splits::split_writers;
        let env = |name: &str| std::env::var(name).ok();
        let Some(root) = env("AUTOGRAPH_SMOKE_DATA") else {
            eprintln!("set AUTOGRAPH_SMOKE_DATA to a data set directory");
            return;
        };
        let dataset = Dataset::load(Path::new(&root)).expect("data set loads");
        let split = split_writers(&dataset.writers(), 0.15, 0.15, 42);
        eprintln!(
            "{}: {} samples, writers train {} / validation {} / test {}",
            dataset.name,
            dataset.samples.len(),
            split.train.len(),
            split.validation.len(),
            split.test.len()
        );
        let loss = match env("AUTOGRAPH_SMOKE_LOSS").as_deref() {
            Some("contrastive") => LossKind::Contrastive,
            Some("bce") => LossKind::Bce,
            _ => LossKind::Triplet,
        };
        let number = |name: &str, default: usize| env(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let config = TrainingConfig::new()
            .with_loss(loss)
            .with_epochs(number("AUTOGRAPH_SMOKE_EPOCHS", 4))
            .with_steps_per_epoch(number("AUTOGRAPH_SMOKE_STEPS", 40))
            .with_warmup_steps(20);
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = env("AUTOGRAPH_SMOKE_OUT").map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
        let resume = resolve_checkpoint(&out.join("last")).is_some();
        let start = Instant::now();
        let outcome = train(&config, &dataset, &split, &out, &Device::flex(), resume).expect("trains");
        for m in &outcome.history {
            eprintln!("{}", serde_json::to_string(m).expect("json"));
        }
        eprintln!(
            "{:?} after {} epochs in {:.0} s: best epoch {:?}, validation score {:?}, {:.1} images/s",
            outcome.stopped,
            outcome.epochs_completed,
            start.elapsed().as_secs_f64(),
            outcome.best_epoch,
            outcome.best_score,
            outcome.images_per_second
        );
    }
}
