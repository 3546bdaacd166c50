//! A synthetic signature data set on disk: writers drawn by `shared::strokes::synth`, their
//! genuine signatures and skilled forgeries rendered through the kiosk's own rasteriser, in the
//! `<writer>/genuine|forged/*.png` layout every command reads. Training on it (or pre-training
//! and then `train --init-from`) is how synthetic writers enter a run: the same preprocessing,
//! splits, duplicate checks and content hash as real data.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use autograph_shared::strokes::raster::{RasterConfig, rasterise};
use autograph_shared::strokes::synth;
use serde::Serialize;

/// The pen box every synthetic signature is drawn in (a signature pad's aspect).
const BOX: (u32, u32) = (640, 240);
/// Forgers per writer: each forgery is by one of them, in turn, as in the real sets where a
/// handful of people forged each writer.
const FORGERS_PER_WRITER: u64 = 3;

/// What to draw.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSpec {
    pub writers: u64,
    pub genuine: u64,
    pub forgeries: u64,
    /// Offsets every writer and forger seed: two specs with different seeds share no writer.
    pub seed: u64,
}

/// Writes the data set into `out`, which must not exist yet ([`crate::staging::write_new_dir`]).
/// `progress(done)` after each writer. Returns the number of images written.
pub fn write(spec: &SynthSpec, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    ensure!(spec.writers >= 2, "a data set needs at least 2 writers");
    ensure!(spec.genuine >= 2, "each writer needs at least 2 genuine signatures");
    crate::staging::write_new_dir(out, |tmp| draw(spec, tmp, progress))
}

fn draw(spec: &SynthSpec, tmp: &Path, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let raster = RasterConfig::default();
    let mut images = 0;
    for w in 0..spec.writers {
        let writer = spec.seed.wrapping_mul(1_000_003).wrapping_add(w);
        let dir = tmp.join(format!("synth{w:05}"));
        for (kind, count) in [("genuine", spec.genuine), ("forged", spec.forgeries)] {
            let kind_dir = dir.join(kind);
            fs::create_dir_all(&kind_dir).with_context(|| format!("cannot create {}", kind_dir.display()))?;
            for k in 0..count {
                let recording = if kind == "genuine" {
                    synth::signature(writer, k, BOX.0, BOX.1)
                } else {
                    let forger = writer.wrapping_mul(31).wrapping_add(k % FORGERS_PER_WRITER);
                    synth::skilled_forgery(writer, forger, k / FORGERS_PER_WRITER, BOX.0, BOX.1)
                }
                .with_context(|| format!("drawing writer {w} {kind} {k}"))?;
                let image = rasterise(&recording, &raster).with_context(|| format!("rasterising writer {w}"))?;
                let path = kind_dir.join(format!("{k:02}.png"));
                image
                    .save_with_format(&path, image::ImageFormat::Png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                images += 1;
            }
        }
        progress(w + 1);
    }
    fs::write(tmp.join("synth.json"), serde_json::to_vec_pretty(spec)?)?;
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograph_shared::dataset::{Dataset, Label};

    #[test]
    fn writes_a_data_set_every_command_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("synth");
        let spec = SynthSpec { writers: 3, genuine: 4, forgeries: 3, seed: 5 };
        let mut seen = Vec::new();
        assert_eq!(write(&spec, &out, &mut |n| seen.push(n)).expect("written"), 21);
        assert_eq!(seen, [1, 2, 3]);
        let ds = Dataset::load(&out).expect("loads");
        assert_eq!(ds.samples.len(), 21, "no duplicates: every attempt differs");
        let writers: std::collections::BTreeSet<&str> = ds.samples.iter().map(|s| s.writer.as_str()).collect();
        assert_eq!(writers.len(), 3);
        assert_eq!(ds.samples.iter().filter(|s| s.label == Label::Forged).count(), 9);
        // Every image goes through the shared preprocessing.
        for s in &ds.samples {
            let bytes = s.source.read().expect("read");
            autograph_shared::preprocess::preprocess_bytes(&bytes, &autograph_shared::PreprocessConfig::default())
                .expect("preprocess accepts it");
        }
        // The same spec draws the same pixels; an existing directory is refused.
        let again = dir.path().join("again");
        write(&spec, &again, &mut |_| {}).expect("written");
        assert_eq!(Dataset::load(&again).expect("loads").content_hash, ds.content_hash);
        assert!(write(&spec, &out, &mut |_| {}).is_err());
        assert!(write(&SynthSpec { writers: 1, ..spec }, &dir.path().join("one"), &mut |_| {}).is_err());
    }
}
