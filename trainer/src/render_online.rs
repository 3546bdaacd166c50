//! An on-line (pen trajectory) corpus drawn as an image data set: every SVC2004 Task 2 or MCYT
//! signature rendered by the kiosk's own rasteriser into the `<writer>/genuine|forged/*.png`
//! layout every command reads. MCYT-100's 100 writers with skilled forgeries then train the
//! image network like any scanned set, and look like what the kiosk's pad captures look like.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use autograph_shared::dataset::Label;
use autograph_shared::online::{Format, OnlineDataset, read_trajectory};
use autograph_shared::strokes::raster::{RasterConfig, rasterise};
use serde::Serialize;

/// What was rendered, saved as `rendered.json` beside the images.
#[derive(Debug, Clone, Serialize)]
pub struct RenderReport {
    pub source: String,
    pub format: Format,
    pub writers: usize,
    pub images: usize,
    /// Whether the tablet's y axis was flipped (it points up in the source).
    pub y_up: bool,
}

/// Whether a format's tablet y axis points up (the rendered images would be upside down
/// otherwise). Read off the corpora by drawing them: SVC2004 Task 2's Chinese characters are the
/// right way up with y pointing down, MCYT's latin-script names only with y flipped.
pub const fn y_axis_up(format: Format) -> bool {
    match format {
        Format::Svc2004 => false,
        Format::Mcyt => true,
    }
}

/// Renders `corpus` (listed by [`autograph_shared::online::list_online_dataset`]) into `out`,
/// which must not exist yet ([`crate::staging::write_new_dir`]). A file that cannot be read or
/// drawn stops the run with its path. `progress(done)` after each file.
pub fn render(corpus: &OnlineDataset, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<RenderReport> {
    let y_up = y_axis_up(corpus.format);
    crate::staging::write_new_dir(out, |tmp| {
        write_images(corpus, y_up, tmp, progress)?;
        let report = RenderReport {
            source: corpus.root.display().to_string(),
            format: corpus.format,
            writers: corpus.users().len(),
            images: corpus.samples.len(),
            y_up,
        };
        fs::write(tmp.join("rendered.json"), serde_json::to_vec_pretty(&report)?)?;
        Ok(report)
    })
}

fn write_images(corpus: &OnlineDataset, y_up: bool, tmp: &Path, progress: &mut dyn FnMut(u64)) -> Result<()> {
    let raster = RasterConfig::default();
    for (done, sample) in corpus.samples.iter().enumerate() {
        let kind = match sample.label {
            Label::Genuine => "genuine",
            Label::Forged => "forged",
        };
        let dir = tmp.join(&sample.user).join(kind);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let image = read_trajectory(&sample.path)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(t.to_recording(y_up)?))
            .and_then(|r| Ok(rasterise(&r, &raster)?))
            .with_context(|| format!("cannot render {}", sample.path.display()))?;
        let stem = sample.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let path = dir.join(format!("{stem}.png"));
        image
            .save_with_format(&path, image::ImageFormat::Png)
            .with_context(|| format!("cannot write {}", path.display()))?;
        progress(done as u64 + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograph_shared::dataset::Dataset;
    use autograph_shared::online::list_online_dataset;

    /// An SVC2004 Task 2 file: a point count, then `x y t button azimuth altitude pressure` rows.
    fn svc_file(writer: u32, session: u32) -> String {
        let rows: Vec<String> = (0..40)
            .map(|i| {
                let (x, y) = (1000 + i * 37 * writer, 2000 + ((i * session) % 17) * 40);
                format!("{x} {y} {} 1 0 0 {}", i * 10, 300 + i)
            })
            .collect();
        format!("{}\n{}\n", rows.len(), rows.join("\n"))
    }

    #[test]
    fn an_online_corpus_becomes_an_image_data_set() {
        let dir = tempfile::tempdir().expect("tmp");
        let task2 = dir.path().join("corpus").join("Task2");
        fs::create_dir_all(&task2).expect("dir");
        for writer in 1..=2 {
            for session in [1, 2, 3, 21, 22] {
                fs::write(task2.join(format!("U{writer}S{session}.TXT")), svc_file(writer, session)).expect("write");
            }
        }
        let out = dir.path().join("rendered");
        let mut seen = 0;
        let corpus = list_online_dataset(&dir.path().join("corpus")).expect("listed");
        let report = render(&corpus, &out, &mut |n| seen = n).expect("rendered");
        assert_eq!((report.writers, report.images, seen), (2, 10, 10));
        assert!(!report.y_up, "SVC2004's y axis points down");
        let ds = Dataset::load(&out).expect("the images load as a data set");
        assert_eq!(ds.samples.len(), 10);
        assert_eq!(ds.samples.iter().filter(|s| s.label == Label::Forged).count(), 4);
        for s in &ds.samples {
            let bytes = s.source.read().expect("read");
            autograph_shared::preprocess::preprocess_bytes(&bytes, &autograph_shared::PreprocessConfig::default())
                .expect("preprocess accepts a rendered trajectory");
        }
        assert!(out.join("rendered.json").exists());
        // The output is never overwritten, and a corrupt file stops the run naming it.
        assert!(render(&corpus, &out, &mut |_| {}).is_err());
        fs::write(task2.join("U1S4.TXT"), "3\n1 2 three\n").expect("write");
        let corpus = list_online_dataset(&dir.path().join("corpus")).expect("listed");
        let err = render(&corpus, &dir.path().join("again"), &mut |_| {}).expect_err("corrupt");
        assert!(format!("{err:#}").contains("U1S4.TXT"), "{err:#}");
        assert!(!dir.path().join("again").exists(), "nothing half-written is left under the name");
    }
}
