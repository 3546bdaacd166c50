//! Helpers for the end-to-end tests in `tests/`: where the real data is, and synthetic writers
//! with a tiny training configuration for tests that need no data.

use std::path::PathBuf;

/// The real data sets beside the checkout (`../shared/data`), or `$AUTOGRAPH_SHARED_DATA`.
/// Real-data tests are `#[ignore]`d: a fresh clone without the data still passes `cargo test`,
/// and `.ci/run` runs them with `--ignored`.
pub fn shared_data() -> PathBuf {
    std::env::var_os("AUTOGRAPH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Synthetic writers drawn in code, and a training configuration small enough for a test.
pub mod synthetic {
    use std::path::Path;

    use autograph_shared::dataset::Dataset;
    use autograph_shared::dataset::splits::WriterSplit;
    use autograph_shared::preprocess::PreprocessConfig;
    use autograph_trainer::bundle::RunInfo;
    use autograph_trainer::model::ModelConfig;
    use autograph_trainer::train::{LrSchedule, TrainingConfig, train};
    use burn::prelude::Device;
    use image::{GrayImage, Luma};

    /// Model input height and width of [`tiny_config`].
    pub const H: usize = 32;
    pub const W: usize = 64;

    /// Writer `w`'s signature: a wave with the writer's frequency and slant and a small
    /// per-sample wobble; `forged` copies the frequency but not the slant.
    pub fn draw(writer: usize, sample: usize, forged: bool) -> GrayImage {
        let mut img = GrayImage::from_pixel(200, 90, Luma([246]));
        let freq = 1.5 + writer as f32 * 0.9;
        let slant = if forged { -0.12 } else { 0.08 + (writer % 4) as f32 * 0.06 };
        let wobble = sample as f32 * 0.05;
        for i in 0..1600 {
            let t = i as f32 / 1600.0;
            let x = 15.0 + 170.0 * t;
            let y = 45.0 + 20.0 * (t * freq * std::f32::consts::TAU + wobble).sin() + slant * (x - 100.0);
            for d in 0..2u32 {
                img.put_pixel((x as u32 + d).min(199), y.clamp(0.0, 89.0) as u32, Luma([25]));
            }
        }
        img
    }

    /// `<root>/<prefix><w>/{genuine,forged}/<n>.png` for each writer: `genuine` genuine and
    /// three forged signatures.
    pub fn write_dataset(root: &Path, prefix: &str, writers: std::ops::Range<usize>, genuine: usize) {
        for w in writers {
            for (sub, forged, n) in [("genuine", false, genuine), ("forged", true, 3)] {
                let dir = root.join(format!("{prefix}{w}/{sub}"));
                std::fs::create_dir_all(&dir).expect("mkdir");
                for s in 0..n {
                    draw(w, s, forged).save(dir.join(format!("{s}.png"))).expect("save");
                }
            }
        }
    }

    /// Two conv blocks at 32x64, a few steps without augmentation (tests add epochs or steps
    /// where they need them).
    pub fn tiny_config() -> TrainingConfig {
        TrainingConfig::new()
            .with_model(ModelConfig::new().with_height(H).with_width(W).with_channels(vec![8, 16]))
            .with_preprocess(PreprocessConfig { height: H as u32, width: W as u32, ..PreprocessConfig::default() })
            .with_epochs(2)
            .with_steps_per_epoch(5)
            .with_writers_per_batch(3)
            .with_genuine_per_writer(3)
            .with_forgeries_per_writer(1)
            .with_warmup_steps(0)
            .with_lr_schedule(LrSchedule::Constant)
            .with_augment(false)
            .with_patience(0)
            .with_validation_references(3)
            .with_seed(5)
    }

    /// Loads `data`, splits its writers in order (the first `train`, the next `validation`,
    /// the rest test), records the split in `run` as `autograph-train train` does, and trains
    /// `config` there on the CPU. Returns the split.
    pub fn train_tiny(
        data: &Path,
        run: &Path,
        (train_writers, validation_writers): (usize, usize),
        config: &TrainingConfig,
    ) -> WriterSplit {
        let dataset = Dataset::load(data).expect("dataset");
        let writers = dataset.writers();
        let validation_end = train_writers + validation_writers;
        let split = WriterSplit {
            train: writers[..train_writers].to_vec(),
            validation: writers[train_writers..validation_end].to_vec(),
            test: writers[validation_end..].to_vec(),
        };
        RunInfo {
            data: vec![data.to_path_buf()],
            dataset: dataset.name.clone(),
            content_hash: dataset.content_hash.clone(),
            split: split.clone(),
            sets: Vec::new(),
        }
        .save(run)
        .expect("run info");
        train(config, &dataset, &split, run, &Device::flex(), false).expect("train");
        split
    }
}
