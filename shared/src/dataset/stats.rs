//! `data stats`: what a data set holds, and which files cannot be read.

use serde::{Deserialize, Serialize};

use super::{Dataset, Duplicate, Label, Layout};
use crate::preprocess::{PreprocessConfig, decode_gray};

/// A file that is listed but cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    pub file: String,
    pub reason: String,
}

/// Summary of a data set, as `autograph-train data stats` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub name: String,
    pub layout: Layout,
    pub writers: usize,
    pub genuine: usize,
    pub forged: usize,
    pub duplicates: Vec<Duplicate>,
    pub unreadable: Vec<Unreadable>,
    /// Smallest and largest width and height over the decodable images.
    pub width_range: Option<(u32, u32)>,
    pub height_range: Option<(u32, u32)>,
    pub content_hash: String,
}

/// Decodes every image once (that is how a truncated file with a valid header is caught) and
/// summarises. `progress(done, total)` is called after each image.
pub fn stats(dataset: &Dataset, progress: &mut dyn FnMut(usize, usize)) -> DatasetStats {
    let limits = PreprocessConfig::default();
    let mut unreadable = Vec::new();
    let (mut wmin, mut wmax, mut hmin, mut hmax) = (u32::MAX, 0u32, u32::MAX, 0u32);
    let total = dataset.samples.len();
    for (i, sample) in dataset.samples.iter().enumerate() {
        let decoded = sample
            .source
            .read()
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode_gray(&bytes, &limits).map_err(|e| e.to_string()));
        match decoded {
            Ok(img) => {
                wmin = wmin.min(img.width());
                wmax = wmax.max(img.width());
                hmin = hmin.min(img.height());
                hmax = hmax.max(img.height());
            }
            Err(reason) => unreadable.push(Unreadable { file: sample.source.to_string(), reason }),
        }
        progress(i + 1, total);
    }
    let count = |label| dataset.samples.iter().filter(|s| s.label == label).count();
    let any = wmax > 0;
    DatasetStats {
        name: dataset.name.clone(),
        layout: dataset.layout,
        writers: dataset.writers().len(),
        genuine: count(Label::Genuine),
        forged: count(Label::Forged),
        duplicates: dataset.duplicates.clone(),
        unreadable,
        width_range: any.then_some((wmin, wmax)),
        height_range: any.then_some((hmin, hmax)),
        content_hash: dataset.content_hash.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};

    #[test]
    fn counts_sizes_and_names_unreadable_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        std::fs::create_dir_all(root.join("w1/genuine")).expect("mkdir");
        std::fs::create_dir_all(root.join("w1/forged")).expect("mkdir");
        GrayImage::from_pixel(30, 20, Luma([0])).save(root.join("w1/genuine/a.png")).expect("save");
        GrayImage::from_pixel(50, 10, Luma([0])).save(root.join("w1/forged/b.png")).expect("save");
        std::fs::write(root.join("w1/genuine/broken.png"), b"\x89PNG\r\n\x1a\nnope").expect("write");
        let ds = Dataset::load(root).expect("load");
        let mut calls = 0;
        let s = stats(&ds, &mut |_, _| calls += 1);
        assert_eq!(calls, 3);
        assert_eq!((s.writers, s.genuine, s.forged), (1, 2, 1));
        assert_eq!(s.width_range, Some((30, 50)));
        assert_eq!(s.height_range, Some((10, 20)));
        assert_eq!(s.unreadable.len(), 1);
        assert!(s.unreadable[0].file.ends_with("broken.png"));
    }
}
