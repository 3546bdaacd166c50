//! Writes the int8 templates of training runs as JSON, for scoring-rule studies outside Rust
//! (`scripts/sweep-rules`): each run's validation and test writers (all their images), up to 8
//! genuine and 8 forged images of every training writer, and the run's cohort.
//!
//! ```sh
//! cargo run -p autograph-trainer --example dump_embeddings -- OUT_DIR RUN_DIR [RUN_DIR ...]
//! ```
//!
//! One `OUT_DIR/<run path with / as _>.json` per run: an array of
//! `{"set", "split" ("train" | "validation" | "test" | "cohort"), "writer", "forged", "t": [128 × i8]}`.
//! The network is the run's export checkpoint (`final/`, else `best/`); pass a checkpoint
//! directory (`RUN/best`) to dump another one. Never feed test rows into a choice: they are
//! here to report what validation chose.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autograph_shared::adaptive::Cohort;
use autograph_shared::dataset::{Label, Sample};
use autograph_shared::protocol::{EmbeddedSample, embed_samples};
use autograph_trainer::adaptive::{COHORT_SIZE, cohort_samples};
use autograph_trainer::bundle::{RunInfo, checkpoint_of, evaluate, load_data};
use autograph_trainer::train::{BurnEmbedder, load_training_config};
use serde_json::{Value, json};

/// Training images embedded per writer and label.
const TRAIN_PER_LABEL: usize = 8;

fn rows(samples: &[EmbeddedSample], set: &str, split: &str) -> impl Iterator<Item = Value> {
    samples.iter().map(move |s| {
        json!({"set": set, "split": split, "writer": s.writer, "forged": s.label == Label::Forged,
               "t": s.template.as_i8().to_vec()})
    })
}

fn dump(path: &Path, out: &Path, device: &burn::prelude::Device) -> Result<usize> {
    // A checkpoint directory belongs to the run above it.
    let run_dir = if path.join("run.json").is_file() { path } else { path.parent().context("no run directory")? };
    let info = RunInfo::load(run_dir)?;
    let dataset = load_data(&info.data)?;
    let checkpoint = if path == run_dir { checkpoint_of(run_dir) } else { path.to_path_buf() };
    let config = load_training_config(&checkpoint)?;
    let mut embedder = BurnEmbedder::from_checkpoint(&checkpoint, device)?;
    let mut all: Vec<Value> = Vec::new();

    let cohort_images = cohort_samples(&dataset, &info.split, COHORT_SIZE)?;
    let (embedded, _) = embed_samples(&mut embedder, &cohort_images, &config.preprocess, 32, &mut |_| {})?;
    let cohort = Cohort::from_samples(&embedded, COHORT_SIZE, 7)?;
    all.extend(
        cohort.templates().iter().map(
            |t| json!({"set": "cohort", "split": "cohort", "writer": "", "forged": false, "t": t.as_i8().to_vec()}),
        ),
    );

    let mut train: Vec<&Sample> = Vec::new();
    for writer in &info.split.train {
        let mine: Vec<&Sample> = dataset.samples.iter().filter(|s| &s.writer == writer).collect();
        for label in [Label::Genuine, Label::Forged] {
            train.extend(mine.iter().filter(|s| s.label == label).take(TRAIN_PER_LABEL));
        }
    }
    let (embedded, _) = embed_samples(&mut embedder, &train, &config.preprocess, 32, &mut |_| {})?;
    for s in &embedded {
        // Writers of a multi-set run are `set:writer`.
        let set = s.writer.split(':').next().unwrap_or_default().to_owned();
        all.extend(rows(std::slice::from_ref(s), &set, "train"));
    }
    for set in &info.sets {
        let e = evaluate(&mut embedder, &dataset, &set.split, &config.preprocess, 5, &set.name)?;
        all.extend(rows(&e.validation_embedded, &set.name, "validation"));
        all.extend(rows(&e.test_embedded, &set.name, "test"));
    }
    let name = path.to_string_lossy().trim_matches('/').replace('/', "_");
    let file = out.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&all)?).with_context(|| format!("writing {}", file.display()))?;
    Ok(all.len())
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out, runs)) = args.split_first().filter(|(_, runs)| !runs.is_empty()) else {
        anyhow::bail!("usage: dump_embeddings OUT_DIR RUN_DIR [RUN_DIR ...]");
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let device = burn::prelude::Device::flex();
    for run in runs {
        let n = dump(run, out, &device).with_context(|| format!("dumping {}", run.display()))?;
        eprintln!("{}: {n} templates", run.display());
    }
    Ok(())
}
