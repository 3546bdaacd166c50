//! `autograph-train`: data sets, training, export, quantization and evaluation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use autograph_shared::dataset::{self, Dataset};
use autograph_trainer::bundle::{self, RunInfo, RunSet};
use autograph_trainer::fetch;
use autograph_trainer::loss::Mining;
use autograph_trainer::sampler::SetMix;
use autograph_trainer::train::{LossKind, TrainingConfig};

/// Train and ship the Autograph signature embedding model.
///
/// Data sets are read from directories (CEDAR's own layout, `<writer>/genuine|forged/`,
/// `<class>/<images>`, or Omniglot's zips); `AUTOGRAPH_DATA` names the default one.
#[derive(Parser, Debug)]
#[command(name = "autograph-train", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect and fetch data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train the embedding network on writer-disjoint splits of a data set.
    Train(TrainArgs),
    /// Export a trained run as a model bundle: model.onnx + manifest.json with thresholds
    /// calibrated on validation writers and figures on test writers.
    Export(ExportArgs),
    /// Quantize a bundle's model to int8 (static, per-channel, calibrated on training writers),
    /// calibrate its thresholds on validation writers and measure it on test writers.
    Quantize(QuantizeArgs),
    /// Record the precision measured best on a kind of kiosk CPU in a bundle's manifest
    /// (`quantize` records this machine's; `scripts/arm-cost` measures ARM cores under qemu and
    /// prints the command). Kiosks whose CPU has no entry use `default_precision` (f32).
    TargetPrecision(TargetPrecisionArgs),
    /// Check a bundle: format version, hashes, both models load, and parity on real images
    /// (burn vs tract f32 ≤ 1e-4 with --checkpoint; int8 vs f32 cosine ≥ 0.99). Exit 2 if refused.
    CheckBundle(CheckBundleArgs),
    /// Evaluate a bundle (tract): verification at R = 1, 3, 5, 10 references, N-way K-shot
    /// identification, the background-only leakage check and Omniglot's one-shot runs, with
    /// thresholds never calibrated on test writers; --out writes report.md, report.json and plots.
    /// With --kfold K, train K models on writer-disjoint folds and report mean ± std test EERs.
    Eval(autograph_trainer::eval::EvalArgs),
    /// The whole job on a CPU in one command: find data, train a small model, export, quantize,
    /// evaluate on held-out writers, and enrol and verify them through the kiosk runtime.
    Quickstart(autograph_trainer::quickstart::QuickstartArgs),
    EvalDynamic(autograph_trainer::dynamic::DynamicArgs),
    /// Calibrate a bundle's fusion of pen-trajectory and image scores on the SVC2004 writers
    /// its model never trained on (the kiosk then decides pen captures on both).
    Fuse(autograph_trainer::fuse::FuseArgs),
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// Bundle directory (from `export`).
    #[arg(long)]
    bundle: PathBuf,
    /// The data set the bundle was trained on (its training writers calibrate the ranges).
    #[arg(long = "data", env = "AUTOGRAPH_DATA", value_delimiter = ',', required = true)]
    data: Vec<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct TargetPrecisionArgs {
    /// Bundle directory (from `export`, quantized).
    #[arg(long)]
    bundle: PathBuf,
    /// The CPU, as the kiosk names it (`autograph bench` prints it): `aarch64`,
    /// `aarch64+dotprod` (Armv8.2 dot product: Cortex-A55/A76, Neoverse-N1), `aarch64+sve2`
    /// (Armv9 cores: tract runs its SVE kernels there), `x86_64`, ...
    #[arg(long)]
    target: String,
    #[arg(long, value_enum)]
    precision: autograph_device::commands::PrecisionArg,
    /// The figures that chose it, kept in the manifest (e.g. "qemu cortex-a72: f32 44.6 M,
    /// int8 61.3 M instructions per image").
    #[arg(long)]
    measured: String,
}

#[derive(Args, Debug)]
struct CheckBundleArgs {
    /// Bundle directory.
    bundle: PathBuf,
    /// Real images to check parity on (any supported data set directory).
    #[arg(long = "data", env = "AUTOGRAPH_DATA", value_delimiter = ',')]
    data: Vec<PathBuf>,
    /// The training run (or checkpoint) the bundle came from, to compare burn with tract.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Which device trains. GPU backends need the cargo feature of the same name.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceKind {
    Cpu,
    Wgpu,
    Vulkan,
    Cuda,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LossArg {
    Contrastive,
    Bce,
    Triplet,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum MiningArg {
    Hard,
    SemiHard,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SetMixArg {
    Writers,
    Balanced,
}

/// `HxW`, both positive.
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(|| format!("expected HxW (e.g. 96x192), got {text:?}"))?;
    let parse = |v: &str| v.trim().parse::<u32>().ok().filter(|&n| n > 0);
    match (parse(h), parse(w)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(format!("expected two positive numbers HxW, got {text:?}")),
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Data set directory (comma-separated or repeated for several, trained as one); defaults
    /// to $AUTOGRAPH_DATA.
    #[arg(long = "data", env = "AUTOGRAPH_DATA", value_delimiter = ',', required = true)]
    data: Vec<PathBuf>,
    /// Run directory: checkpoints (best/, last/), metrics.jsonl, run.json with the split.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// A training configuration JSON (as saved beside a checkpoint); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Loss: contrastive (margin), bce (pair head), or triplet (in-batch mining).
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimiser steps per epoch.
    #[arg(long)]
    steps_per_epoch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Share of negatives taken from the writer's skilled forgeries (where the data has them).
    #[arg(long)]
    forgery_ratio: Option<f32>,
    /// Turn augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Triplet mining: hard (batch-hard: farthest positive, closest negative per anchor, skilled
    /// forgeries of the anchor's writer included) or semi-hard.
    #[arg(long, value_enum)]
    mining: Option<MiningArg>,
    /// With several data sets: draw batch writers uniformly over all writers (writers) or a
    /// set first, then a writer (balanced).
    #[arg(long, value_enum)]
    set_mix: Option<SetMixArg>,
    /// Channels of the network's conv blocks, comma-separated (e.g. 32,64,128,256).
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<usize>>,
    /// Conv layers per block (1 or 2 tried; see docs/evaluation.md).
    #[arg(long)]
    convs_per_block: Option<usize>,
    /// Input size HxW of the network and the preprocessing (e.g. 96x192).
    #[arg(long, value_parser = parse_size)]
    input: Option<(u32, u32)>,
    /// Seed of the split, initialisation, sampling and augmentation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of writers held out for validation (threshold calibration, model selection).
    #[arg(long, default_value_t = 0.15)]
    validation: f32,
    /// Fraction of writers held out for test (never seen in training or calibration).
    #[arg(long, default_value_t = 0.2)]
    test: f32,
    /// Continue from the run's last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start from the embedding weights of another run (its directory or a checkpoint) instead
    /// of random ones, e.g. pre-trained on Omniglot, then fine-tuned here. Same channels and
    /// embedding size; the input size may differ.
    #[arg(long, value_name = "RUN")]
    init_from: Option<PathBuf>,
    /// Training device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Training run directory (from `train --out`) or one of its checkpoints.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Bundle directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Data set(s) for calibration, if they moved since training (default: the run's own).
    #[arg(long, value_delimiter = ',')]
    data: Vec<PathBuf>,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Writers, genuine and forged counts, duplicates, image sizes and unreadable files.
    Stats(StatsArgs),
    /// Download a catalogued data set (or any zip / tar.gz URL) into the cache, verified
    /// and published atomically; for request-only data sets, say how to obtain them.
    Fetch(FetchArgs),
    /// List the built-in catalogue of data sets.
    List,
    /// Draw a synthetic data set: writers from `shared::strokes::synth`, their genuine
    /// signatures and skilled forgeries (a forger's slant, proportions, tremor and pressure)
    /// rendered by the kiosk's rasteriser into `<writer>/genuine|forged/NN.png`. Train or
    /// pre-train on it like any data set (`train --data DIR`, then `train --init-from`).
    Synth(SynthArgs),
    /// Draw an on-line corpus (SVC2004 Task 2 `.TXT`, MCYT `.fpg`) as an image data set: each
    /// pen trajectory rendered by the kiosk's rasteriser into `<writer>/genuine|forged/*.png`,
    /// so its writers can train the image network (`train --data A,B,DIR`).
    RenderOnline(RenderOnlineArgs),
}

#[derive(Args, Debug)]
struct RenderOnlineArgs {
    /// The on-line corpus directory (e.g. ../shared/data/mcyt100_online).
    #[arg(long)]
    data: PathBuf,
    /// Directory to create (must not exist).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Directory to create (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Number of synthetic writers.
    #[arg(long, default_value_t = 500)]
    writers: u64,
    /// Genuine signatures per writer.
    #[arg(long, default_value_t = 12)]
    genuine: u64,
    /// Skilled forgeries per writer (by three forgers in turn).
    #[arg(long, default_value_t = 12)]
    forgeries: u64,
    /// Seed of the writers and forgers (sets with different seeds share no writer).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Data set directory (repeat for several); defaults to $AUTOGRAPH_DATA.
    #[arg(long = "data", env = "AUTOGRAPH_DATA", value_delimiter = ',', required = true)]
    data: Vec<PathBuf>,
    /// Print machine-readable JSON (one object per data set, in an array).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FetchArgs {
    /// A catalogue name (see `data list`) or an http(s) URL of a zip or tar.gz archive.
    target: String,
    /// Expected sha256 of the download (required for trust in a URL; catalogue entries
    /// carry their own).
    #[arg(long)]
    sha256: Option<String>,
    /// Cache directory (default: $AUTOGRAPH_CACHE, else $XDG_CACHE_HOME/autograph, else ~/.cache/autograph).
    #[arg(long, env = "AUTOGRAPH_CACHE")]
    cache: Option<PathBuf>,
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        autograph_trainer::keep_freed_memory();
    }
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    // Warnings (such as dropped duplicates) go to stderr; RUST_LOG is not needed for them.
    struct StderrLogger;
    impl log::Log for StderrLogger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                eprintln!("{}: {}", record.level().as_str().to_lowercase(), record.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Data(DataCommand::Stats(args)) => data_stats(args),
        Command::Data(DataCommand::Fetch(args)) => data_fetch(args),
        Command::Data(DataCommand::List) => data_list(),
        Command::Data(DataCommand::Synth(args)) => data_synth(args),
        Command::Data(DataCommand::RenderOnline(args)) => data_render_online(args),
        Command::Train(args) => train(args),
        Command::Export(args) => export(args),
        Command::Quantize(args) => quantize(args),
        Command::CheckBundle(args) => check_bundle(args),
        Command::TargetPrecision(args) => {
            let manifest =
                bundle::set_target_precision(&args.bundle, &args.target, args.precision.into(), &args.measured)?;
            for (key, target) in &manifest.target_precision {
                println!("{key}: {:?} ({})", target.precision, target.measured);
            }
            println!("elsewhere: {:?}", manifest.default_precision);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => autograph_trainer::eval::run_cli(args),
        Command::Quickstart(args) => autograph_trainer::quickstart::run_cli(args),
        Command::EvalDynamic(args) => autograph_trainer::dynamic::run_cli(args),
        Command::Fuse(args) => autograph_trainer::fuse::run_cli(args),
    }
}

fn data_stats(args: StatsArgs) -> Result<ExitCode> {
    let mut all = Vec::new();
    for dir in &args.data {
        let ds = Dataset::load(dir).with_context(|| format!("loading data set {}", dir.display()))?;
        let bar = autograph_trainer::progress::bar(ds.samples.len() as u64, &format!("decoding {}", ds.name));
        let stats = dataset::stats(&ds, &mut |done, _| bar.set_position(done as u64));
        bar.finish_and_clear();
        if !args.json {
            print_stats(&stats);
        }
        all.push(stats);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stats(s: &dataset::DatasetStats) {
    println!("{} ({:?} layout)", s.name, s.layout);
    println!("  writers     {}", s.writers);
    println!("  genuine     {}", s.genuine);
    println!("  forged      {}", s.forged);
    if let (Some(w), Some(h)) = (s.width_range, s.height_range) {
        println!("  width       {}..{} px", w.0, w.1);
        println!("  height      {}..{} px", h.0, h.1);
    }
    println!("  duplicates  {} (dropped before scoring)", s.duplicates.len());
    for d in &s.duplicates {
        println!("    {} == {}", d.dropped, d.kept);
    }
    println!("  unreadable  {}", s.unreadable.len());
    for u in &s.unreadable {
        println!("    {}: {}", u.file, u.reason);
    }
    println!("  content     sha256:{}", s.content_hash);
}

fn data_fetch(args: FetchArgs) -> Result<ExitCode> {
    let mut request = fetch::FetchRequest::new(args.target);
    request.sha256 = args.sha256;
    request.cache_dir = args.cache;
    let fetched = fetch::fetch(&request, &fetch::progress_bar())?;
    println!("{fetched}");
    Ok(ExitCode::SUCCESS)
}

fn data_synth(args: SynthArgs) -> Result<ExitCode> {
    let spec = autograph_trainer::synth_data::SynthSpec {
        writers: args.writers,
        genuine: args.genuine,
        forgeries: args.forgeries,
        seed: args.seed,
    };
    let bar = autograph_trainer::progress::bar(spec.writers, "drawing synthetic writers");
    let images = autograph_trainer::synth_data::write(&spec, &args.out, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    println!("{images} images of {} synthetic writers in {}", spec.writers, args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn data_render_online(args: RenderOnlineArgs) -> Result<ExitCode> {
    let corpus = autograph_shared::online::list_online_dataset(&args.data)?;
    let bar = autograph_trainer::progress::bar(corpus.samples.len() as u64, "rendering pen trajectories");
    let report = autograph_trainer::render_online::render(&corpus, &args.out, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    println!("{} images of {} writers in {}", report.images, report.writers, args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn data_list() -> Result<ExitCode> {
    for entry in fetch::catalogue() {
        let how = match entry.availability {
            fetch::Availability::Download(files) => format!("download, {} files", files.len()),
            fetch::Availability::OnRequest { .. } => "on request".to_string(),
        };
        println!("{:<10} {} [{}]", entry.name, entry.summary.split_whitespace().collect::<Vec<_>>().join(" "), how);
    }
    Ok(ExitCode::SUCCESS)
}

fn device(kind: DeviceKind) -> Result<burn::prelude::Device> {
    use burn::prelude::Device;
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "vulkan")]
        DeviceKind::Vulkan => Ok(Device::vulkan(Default::default())),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0)),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!(
            "this build has no {other:?} backend: rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ),
    }
}

fn training_config(args: &TrainArgs) -> Result<TrainingConfig> {
    let mut config = match &args.config {
        Some(path) => autograph_trainer::train::load_config_flag(path)?,
        None => TrainingConfig::new(),
    };
    if let Some(loss) = args.loss {
        config.loss = match loss {
            LossArg::Contrastive => LossKind::Contrastive,
            LossArg::Bce => LossKind::Bce,
            LossArg::Triplet => LossKind::Triplet,
        };
    }
    if let Some(v) = args.epochs {
        config.epochs = v;
    }
    if let Some(v) = args.steps_per_epoch {
        config.steps_per_epoch = v;
    }
    if let Some(v) = args.lr {
        config.learning_rate = v;
    }
    if let Some(v) = args.forgery_ratio {
        config.forgery_ratio = v;
    }
    if args.no_augment {
        config.augment = false;
    }
    if let Some(mining) = args.mining {
        config.mining = match mining {
            MiningArg::Hard => Mining::Hard,
            MiningArg::SemiHard => Mining::SemiHard,
        };
    }
    if let Some(mix) = args.set_mix {
        config.set_mix = match mix {
            SetMixArg::Writers => SetMix::Writers,
            SetMixArg::Balanced => SetMix::Balanced,
        };
    }
    if let Some(channels) = &args.channels {
        config.model.channels = channels.clone();
    }
    if let Some(convs) = args.convs_per_block {
        config.model.convs_per_block = convs;
    }
    if let Some((height, width)) = args.input {
        config.model.height = height as usize;
        config.model.width = width as usize;
        config.preprocess.height = height;
        config.preprocess.width = width;
    }
    if let Some(from) = &args.init_from {
        config.init_from = Some(from.clone());
    }
    config.seed = args.seed;
    config.validate()?;
    Ok(config)
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    let config = training_config(&args)?;
    let device = device(args.device)?;
    let dataset = bundle::load_data(&args.data)?;
    let (split, sets) = if args.resume {
        let info = RunInfo::load(&args.out)?;
        anyhow::ensure!(
            info.content_hash == dataset.content_hash,
            "{} was trained on other data (content hash {}); refusing to resume on {}",
            args.out.display(),
            info.content_hash,
            dataset.content_hash
        );
        (info.split, info.sets)
    } else {
        let (split, per_set) = bundle::split_data(&dataset, args.validation, args.test, args.seed);
        (split, RunSet::of(&dataset, &per_set))
    };
    if sets.len() > 1 {
        for set in &sets {
            eprintln!(
                "  {}: train {}, validation {}, test {}",
                set.name,
                set.split.train.len(),
                set.split.validation.len(),
                set.split.test.len()
            );
        }
    }
    eprintln!(
        "{}: {} writers -> train {}, validation {}, test {} (writer-disjoint, seed {})",
        dataset.name,
        dataset.writers().len(),
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        args.seed
    );
    let info = RunInfo {
        data: args.data.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())).collect(),
        dataset: dataset.name.clone(),
        content_hash: dataset.content_hash.clone(),
        split: split.clone(),
        sets,
    };
    info.save(&args.out)?;
    let outcome = autograph_trainer::train::train(&config, &dataset, &split, &args.out, &device, args.resume)?;
    println!(
        "{:?} after {} epochs; best epoch {:?} with validation score {:?}; {:.1} images/s; best checkpoint {}; \
         export uses {}",
        outcome.stopped,
        outcome.epochs_completed,
        outcome.best_epoch,
        outcome.best_score,
        outcome.images_per_second,
        outcome.best_checkpoint.display(),
        outcome.final_checkpoint.as_deref().unwrap_or(&outcome.best_checkpoint).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let device = burn::prelude::Device::flex();
    let data = (!args.data.is_empty()).then_some(args.data.as_slice());
    let manifest = bundle::export_bundle(&args.checkpoint, &args.out, data, &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        println!("bundle written to {}", args.out.display());
        println!("{}", serde_json::to_string_pretty(&manifest.test_metrics)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn quantize(args: QuantizeArgs) -> Result<ExitCode> {
    let (_manifest, summary) = bundle::quantize_bundle(&args.bundle, &args.data)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "int8 model: {} bytes ({:.0}% of f32); kiosks on this CPU ({}) use {:?}: {}",
            summary.int8_bytes,
            100.0 * summary.int8_bytes as f64 / summary.f32_bytes.max(1) as f64,
            summary.target,
            summary.default_precision,
            summary.why
        );
        println!("tract runs: {}", summary.tract_ops_int8.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_bundle(args: CheckBundleArgs) -> Result<ExitCode> {
    let device = burn::prelude::Device::flex();
    let report = bundle::check_bundle(&args.bundle, &args.data, args.checkpoint.as_deref(), &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}: {}", args.bundle.display(), if report.passed { "OK" } else { "FAILED" });
        println!("  images checked            {}", report.images);
        if let Some(d) = report.burn_vs_tract_f32_max_abs {
            println!("  burn vs tract f32 max abs {d:.2e} (limit 1e-4)");
        }
        if let Some(c) = report.int8_vs_f32_min_cosine {
            println!("  int8 vs f32 min cosine    {c:.5} (limit 0.99)");
        }
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
