//! Writers who appear in two data sets. BHSig260 Hindi writers 001 and 002 are both in the
//! 4-writer sample (TIFF) and in the complete Hindi set (PNG, same pixels): a split that put one
//! copy in training and the other in test would test on a trained writer. Such writers are
//! *linked*, and the splitters in [`super::splits`] keep a linked group in one role.

use std::collections::{BTreeMap, BTreeSet};

use super::{Dataset, Label};
use crate::preprocess::{PreprocessConfig, decode_gray};

/// Groups (two or more writers each) of a merged data set's writers that are the same person:
/// same writer name in different constituent sets and at least one genuine image with identical
/// pixels (whatever the file format). Only writers whose names collide are decoded, so this is
/// cheap; a single set has no links.
pub fn linked_writers(dataset: &Dataset) -> Vec<Vec<String>> {
    if dataset.sets.len() < 2 {
        return Vec::new();
    }
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for writer in dataset.writers() {
        let base = writer.split_once(':').map_or(writer.as_str(), |(_, w)| w).to_owned();
        by_name.entry(base).or_default().push(writer);
    }
    let config = PreprocessConfig::default();
    let mut groups = Vec::new();
    for candidates in by_name.into_values().filter(|c| c.len() > 1) {
        let hashes: Vec<BTreeSet<String>> = candidates
            .iter()
            .map(|w| {
                dataset
                    .samples
                    .iter()
                    .filter(|s| &s.writer == w && s.label == Label::Genuine)
                    .filter_map(|s| {
                        let bytes = s.source.read().ok()?;
                        let gray = decode_gray(&bytes, &config).ok()?;
                        let mut key = format!("{}x{}:", gray.width(), gray.height()).into_bytes();
                        key.extend_from_slice(gray.as_raw());
                        Some(crate::sha256_hex(&key))
                    })
                    .collect()
            })
            .collect();
        // Union the candidates that share a pixel-identical genuine image.
        let mut group_of: Vec<usize> = (0..candidates.len()).collect();
        for i in 0..candidates.len() {
            for j in i + 1..candidates.len() {
                if !hashes[i].is_disjoint(&hashes[j]) {
                    let (gi, gj) = (group_of[i], group_of[j]);
                    for g in &mut group_of {
                        if *g == gj {
                            *g = gi;
                        }
                    }
                }
            }
        }
        let mut grouped: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (i, w) in candidates.into_iter().enumerate() {
            grouped.entry(group_of[i]).or_default().push(w);
        }
        groups.extend(grouped.into_values().filter(|g| g.len() > 1));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, Luma};
    use std::path::Path;

    fn scan(seed: u8) -> GrayImage {
        GrayImage::from_fn(40, 20, |x, y| Luma([if (x * 3 + y * 7 + u32::from(seed)) % 11 == 0 { 20 } else { 240 }]))
    }

    fn save(path: &Path, image: &GrayImage, format: ImageFormat) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        image.save_with_format(path, format).expect("save");
    }

    #[test]
    fn the_same_writer_in_two_formats_is_linked_and_a_namesake_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        // Set "sample": Hindi/001 as TIFF; set "hindi": Hindi/001 as PNG with the same pixels,
        // and Hindi/002 whose name collides with the sample's but whose images differ.
        save(&dir.path().join("sample/Hindi/001/genuine/g1.tif"), &scan(1), ImageFormat::Tiff);
        save(&dir.path().join("sample/Hindi/002/genuine/g1.tif"), &scan(2), ImageFormat::Tiff);
        save(&dir.path().join("hindi/Hindi/001/genuine/g1.png"), &scan(9), ImageFormat::Png);
        save(&dir.path().join("hindi/Hindi/001/genuine/g2.png"), &scan(1), ImageFormat::Png);
        save(&dir.path().join("hindi/Hindi/002/genuine/g1.png"), &scan(3), ImageFormat::Png);
        let sample = Dataset::load(&dir.path().join("sample")).expect("sample");
        let hindi = Dataset::load(&dir.path().join("hindi")).expect("hindi");
        assert!(linked_writers(&hindi).is_empty(), "a single set has no links");
        let merged = Dataset::merge(vec![hindi, sample]);
        assert_eq!(linked_writers(&merged), vec![vec!["hindi:Hindi/001".to_string(), "sample:Hindi/001".to_string()]]);
        assert_eq!(merged.set_of("sample:Hindi/002"), "sample");
        let by_set = merged.writers_by_set();
        assert_eq!(by_set[0], ("hindi".to_string(), vec!["hindi:Hindi/001".to_string(), "hindi:Hindi/002".into()]));
    }
}
