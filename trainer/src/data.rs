//! The training images, decoded and preprocessed once, held in memory as f32 maps, and turned
//! into burn tensors batch by batch.
//!
//! Only the writers a run needs are loaded (training and validation: test writers never enter
//! the trainer's memory). An unreadable or blank image is skipped with a warning naming the file;
//! it does not stop the run.

use std::collections::BTreeMap;

use autograph_shared::dataset::{Dataset, Label};
use autograph_shared::preprocess::{PreprocessConfig, Preprocessed, preprocess_bytes};
use burn::prelude::*;
use rand::Rng;

use crate::augment::{AugmentConfig, augment};
use crate::sampler::SampleMeta;

/// Why the image cache could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no image of the requested writers could be read ({skipped} skipped)")]
    Empty { skipped: usize },
    #[error("image {index} is {found} pixels, expected {height}x{width}")]
    WrongSize { index: usize, found: usize, height: usize, width: usize },
    #[error("invalid preprocessing configuration: {0}")]
    Config(String),
}

/// A file that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub source: String,
    pub reason: String,
}

/// Preprocessed images with their writer and label, index-aligned.
#[derive(Debug, Clone)]
pub struct ImageCache {
    pub height: usize,
    pub width: usize,
    /// `len × height × width`, row-major per image.
    pixels: Vec<f32>,
    /// Writer index (into `writers`) and forged flag per image.
    pub meta: Vec<SampleMeta>,
    /// Writer names, in the data set's natural order.
    pub writers: Vec<String>,
    /// Where each image came from (for messages).
    pub sources: Vec<String>,
    /// Files that could not be used.
    pub skipped: Vec<Skipped>,
    /// Names of the constituent data sets (one for a single set).
    pub sets: Vec<String>,
    /// Index into `sets` of every writer (index-aligned with `writers`).
    pub writer_set: Vec<usize>,
}

impl ImageCache {
    /// Reads and preprocesses every sample of `writers` (all writers when `None`), on
    /// `threads` threads (0 = all cores).
    pub fn load(
        dataset: &Dataset,
        writers: Option<&[String]>,
        config: &PreprocessConfig,
        threads: usize,
    ) -> Result<Self, DataError> {
        config.validate().map_err(|e| DataError::Config(e.to_string()))?;
        let samples: Vec<_> =
            dataset.samples.iter().filter(|s| writers.is_none_or(|w| w.contains(&s.writer))).collect();
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let chunk = samples.len().div_ceil(threads.max(1)).max(1);
        let results: Vec<Result<Preprocessed, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = samples
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|s| {
                                let bytes = s.source.read().map_err(|e| e.to_string())?;
                                preprocess_bytes(&bytes, config).map_err(|e| e.to_string())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("preprocessing thread panicked".into())]))
                .collect()
        });

        let mut writer_names: Vec<String> = Vec::new();
        let mut writer_index: BTreeMap<String, usize> = BTreeMap::new();
        for w in dataset.writers() {
            if writers.is_none_or(|ws| ws.contains(&w)) {
                writer_index.insert(w.clone(), writer_names.len());
                writer_names.push(w);
            }
        }
        let sets: Vec<String> = dataset.sets.iter().map(|s| s.name.clone()).collect();
        let writer_set =
            writer_names.iter().map(|w| sets.iter().position(|s| s == dataset.set_of(w)).unwrap_or(0)).collect();
        let (height, width) = (config.height as usize, config.width as usize);
        let mut cache = ImageCache {
            height,
            width,
            pixels: Vec::new(),
            meta: Vec::new(),
            writers: writer_names,
            sources: Vec::new(),
            skipped: Vec::new(),
            sets,
            writer_set,
        };
        for (sample, result) in samples.iter().zip(results) {
            let source = sample.source.to_string();
            match result {
                Ok(image) if image.pixels.len() == height * width => {
                    let Some(&writer) = writer_index.get(&sample.writer) else { continue };
                    cache.pixels.extend_from_slice(&image.pixels);
                    cache.meta.push(SampleMeta { writer, forged: sample.label == Label::Forged });
                    cache.sources.push(source);
                }
                Ok(image) => {
                    let reason = format!("preprocessed to {}x{}, expected {height}x{width}", image.height, image.width);
                    log::warn!("skipping {source}: {reason}");
                    cache.skipped.push(Skipped { source, reason });
                }
                Err(reason) => {
                    log::warn!("skipping {source}: {reason}");
                    cache.skipped.push(Skipped { source, reason });
                }
            }
        }
        if cache.is_empty() {
            return Err(DataError::Empty { skipped: cache.skipped.len() });
        }
        Ok(cache)
    }

    /// Builds a cache from maps already in memory (tests, synthetic data).
    pub fn from_maps(
        height: usize,
        width: usize,
        writers: Vec<String>,
        images: Vec<(SampleMeta, Vec<f32>)>,
    ) -> Result<Self, DataError> {
        let writer_set = vec![0; writers.len()];
        let mut cache = ImageCache {
            height,
            width,
            pixels: Vec::with_capacity(images.len() * height * width),
            meta: Vec::with_capacity(images.len()),
            writers,
            sources: Vec::new(),
            skipped: Vec::new(),
            sets: vec!["in-memory".to_string()],
            writer_set,
        };
        for (index, (meta, map)) in images.into_iter().enumerate() {
            if map.len() != height * width {
                return Err(DataError::WrongSize { index, found: map.len(), height, width });
            }
            cache.pixels.extend_from_slice(&map);
            cache.meta.push(meta);
            cache.sources.push(format!("in-memory #{index}"));
        }
        if cache.is_empty() {
            return Err(DataError::Empty { skipped: 0 });
        }
        Ok(cache)
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// The `height × width` map of image `index`.
    pub fn image(&self, index: usize) -> &[f32] {
        let size = self.height * self.width;
        &self.pixels[index * size..(index + 1) * size]
    }

    /// Assigns writers to named sets (in-memory caches start as one set): `writer_set[w]` is
    /// writer `w`'s index into `sets`.
    pub fn with_sets(mut self, sets: Vec<String>, writer_set: Vec<usize>) -> Result<Self, DataError> {
        if writer_set.len() != self.writers.len() || writer_set.iter().any(|&s| s >= sets.len()) {
            return Err(DataError::Config(format!(
                "{} set indices for {} writers and {} sets",
                writer_set.len(),
                self.writers.len(),
                sets.len()
            )));
        }
        self.sets = sets;
        self.writer_set = writer_set;
        Ok(self)
    }

    /// The set index of image `index`.
    pub fn set_of_image(&self, index: usize) -> usize {
        self.writer_set[self.meta[index].writer]
    }

    /// Index of a writer name.
    pub fn writer_index(&self, name: &str) -> Option<usize> {
        self.writers.iter().position(|w| w == name)
    }

    /// The label of image `index` in the data set's terms.
    pub fn label(&self, index: usize) -> Label {
        if self.meta[index].forged { Label::Forged } else { Label::Genuine }
    }

    /// Images `indices` as a `[B, 1, H, W]` tensor, each augmented when `augmentation` is given.
    pub fn batch<R: Rng + ?Sized>(
        &self,
        indices: &[usize],
        augmentation: Option<(&AugmentConfig, &mut R)>,
        device: &Device,
    ) -> Tensor<4> {
        let mut buffer = Vec::with_capacity(indices.len() * self.height * self.width);
        match augmentation {
            Some((config, rng)) => {
                for &i in indices {
                    buffer.extend(augment(self.image(i), self.height, self.width, config, rng));
                }
            }
            None => {
                for &i in indices {
                    buffer.extend_from_slice(self.image(i));
                }
            }
        }
        maps_to_tensor(buffer, indices.len(), self.height, self.width, device)
    }
}

/// `count` row-major maps, concatenated, as a `[count, 1, height, width]` tensor.
pub fn maps_to_tensor(buffer: Vec<f32>, count: usize, height: usize, width: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(buffer, [count, 1, height, width]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn tiny_cache() -> ImageCache {
        let images =
            (0..4).map(|i| (SampleMeta { writer: i % 2, forged: i == 3 }, vec![i as f32 / 4.0; 8 * 16])).collect();
        ImageCache::from_maps(8, 16, vec!["a".into(), "b".into()], images).expect("cache")
    }

    #[test]
    fn batches_hold_the_requested_images_in_order() {
        let cache = tiny_cache();
        let device = Device::flex();
        let t = cache.batch::<ChaCha8Rng>(&[2, 0], None, &device);
        assert_eq!(t.dims(), [2, 1, 8, 16]);
        let values: Vec<f32> = t.try_into_vec_as::<f32>().expect("f32");
        assert!(values[..128].iter().all(|&v| v == 0.5));
        assert!(values[128..].iter().all(|&v| v == 0.0));
        assert_eq!(cache.label(3), Label::Forged);
    }

    #[test]
    fn augmented_batches_stay_in_range() {
        let cache = tiny_cache();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = cache.batch(&[1, 2, 3], Some((&AugmentConfig::default(), &mut rng)), &Device::flex());
        let values: Vec<f32> = t.try_into_vec_as::<f32>().expect("f32");
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn wrong_sized_maps_are_refused() {
        let err = ImageCache::from_maps(
            8,
            16,
            vec!["a".into()],
            vec![(SampleMeta { writer: 0, forged: false }, vec![0.0; 3])],
        );
        assert!(matches!(err, Err(DataError::WrongSize { index: 0, found: 3, .. })));
    }
}
