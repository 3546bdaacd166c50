//! Writer-disjoint batch sampling over the training writers only.
//!
//! The sampler is built from the whole data set's sample list and the set of training writers;
//! everything else is dropped at construction, so no code path can draw a validation or test
//! writer. Two kinds of batch:
//! - [`WriterSampler::writer_batch`]: P writers × K genuine images (+ up to F skilled forgeries
//!   of each writer where the data set has them), for the triplet loss's in-batch mining;
//! - [`WriterSampler::pair_batch`]: labelled pairs for the contrastive and BCE losses, half
//!   positive (two genuine images of one writer), half negative, where a negative is a skilled
//!   forgery of the anchor's writer with probability `forgery_ratio` (when that writer has any)
//!   and another training writer's genuine image otherwise.
//!
//! All randomness comes from one ChaCha8 generator, reseeded at every step by the trainer, so a
//! run resumed from any step draws the same batches as the uninterrupted run.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How a batch's writers are drawn when training on several data sets at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetMix {
    /// Every training writer equally likely: a set is seen in proportion to its writers.
    Writers,
    /// Every set equally likely for each writer slot of a batch: a 26-writer set is seen as
    /// often as a 100-writer one (its writers more often each).
    Balanced,
}

/// What the sampler needs to know about one image of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleMeta {
    /// Writer index (into the data set's writer list).
    pub writer: usize,
    /// A skilled forgery of `writer`'s signature.
    pub forged: bool,
}

/// Why a sampler cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SamplerError {
    #[error("need at least 2 training writers with 2+ genuine images each, found {usable}")]
    TooFewWriters { usable: usize },
    #[error("batch shape must be positive (P = {writers}, K = {genuine})")]
    EmptyBatch { writers: usize, genuine: usize },
}

/// A batch of images with their labels, index-aligned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageBatch {
    /// Indices into the data set's sample list.
    pub indices: Vec<usize>,
    pub writers: Vec<usize>,
    pub forged: Vec<bool>,
}

impl ImageBatch {
    fn push(&mut self, index: usize, meta: SampleMeta) {
        self.indices.push(index);
        self.writers.push(meta.writer);
        self.forged.push(meta.forged);
    }
}

/// One labelled pair: sample indices and whether both are genuine images of one writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub same: bool,
}

#[derive(Debug, Clone)]
struct WriterPool {
    writer: usize,
    /// Index of the writer's data set (0 unless [`WriterSampler::with_sets`] said otherwise).
    set: usize,
    genuine: Vec<usize>,
    forged: Vec<usize>,
}

/// Seeded sampler over the training writers.
#[derive(Debug, Clone)]
pub struct WriterSampler {
    pools: Vec<WriterPool>,
    rng: ChaCha8Rng,
    mix: SetMix,
    /// Pool indices per set, for [`SetMix::Balanced`].
    set_pools: Vec<Vec<usize>>,
}

impl WriterSampler {
    /// Keeps the samples of `training_writers` that have at least two genuine images.
    pub fn new(samples: &[SampleMeta], training_writers: &BTreeSet<usize>, seed: u64) -> Result<Self, SamplerError> {
        let mut by_writer: BTreeMap<usize, WriterPool> = BTreeMap::new();
        for (index, meta) in samples.iter().enumerate() {
            if !training_writers.contains(&meta.writer) {
                continue;
            }
            let pool = by_writer.entry(meta.writer).or_insert_with(|| WriterPool {
                writer: meta.writer,
                set: 0,
                genuine: Vec::new(),
                forged: Vec::new(),
            });
            if meta.forged {
                pool.forged.push(index);
            } else {
                pool.genuine.push(index);
            }
        }
        let pools: Vec<WriterPool> = by_writer.into_values().filter(|p| p.genuine.len() >= 2).collect();
        if pools.len() < 2 {
            return Err(SamplerError::TooFewWriters { usable: pools.len() });
        }
        let set_pools = vec![(0..pools.len()).collect()];
        Ok(Self { pools, rng: ChaCha8Rng::seed_from_u64(seed), mix: SetMix::Writers, set_pools })
    }

    /// Tells the sampler which data set each writer comes from (`writer_set[writer index]`) and
    /// how to mix the sets in a batch. Writers missing from `writer_set` count as set 0.
    pub fn with_sets(mut self, writer_set: &[usize], mix: SetMix) -> Self {
        for pool in &mut self.pools {
            pool.set = writer_set.get(pool.writer).copied().unwrap_or(0);
        }
        let sets = self.pools.iter().map(|p| p.set + 1).max().unwrap_or(1);
        self.set_pools = (0..sets)
            .map(|set| (0..self.pools.len()).filter(|&i| self.pools[i].set == set).collect::<Vec<_>>())
            .filter(|pools| !pools.is_empty())
            .collect();
        self.mix = mix;
        self
    }

    /// Whether batches draw a set first, then a writer in it.
    fn balanced(&self) -> bool {
        self.mix == SetMix::Balanced && self.set_pools.len() > 1
    }

    /// `count` distinct pool indices (all pools if fewer): uniformly over writers, or, balanced,
    /// a uniformly chosen set (among those with writers left) then a writer of it per slot.
    fn choose_pools(&mut self, count: usize) -> Vec<usize> {
        if !self.balanced() {
            let mut order: Vec<usize> = (0..self.pools.len()).collect();
            let (chosen, _) = order.partial_shuffle(&mut self.rng, count);
            return chosen.to_vec();
        }
        let mut left: Vec<Vec<usize>> = self.set_pools.clone();
        let mut chosen = Vec::with_capacity(count);
        while chosen.len() < count {
            let open: Vec<usize> = (0..left.len()).filter(|&s| !left[s].is_empty()).collect();
            let Some(&set) = open.choose(&mut self.rng) else { break };
            let at = self.rng.random_range(0..left[set].len());
            chosen.push(left[set].swap_remove(at));
        }
        chosen
    }

    /// Restarts the random stream (the trainer reseeds at every step so resume is exact).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// The writers the sampler can draw, in increasing order.
    pub fn writers(&self) -> Vec<usize> {
        self.pools.iter().map(|p| p.writer).collect()
    }

    /// Whether any sampled writer has skilled forgeries.
    pub fn has_forgeries(&self) -> bool {
        self.pools.iter().any(|p| !p.forged.is_empty())
    }

    /// `writers` distinct writers (all of them if fewer), `genuine` genuine images each (all of
    /// a writer's if fewer) and up to `forgeries` of that writer's skilled forgeries, all drawn
    /// without replacement.
    pub fn writer_batch(
        &mut self,
        writers: usize,
        genuine: usize,
        forgeries: usize,
    ) -> Result<ImageBatch, SamplerError> {
        if writers == 0 || genuine == 0 {
            return Err(SamplerError::EmptyBatch { writers, genuine });
        }
        let chosen = self.choose_pools(writers);
        let mut batch = ImageBatch::default();
        for pool_index in chosen {
            let pool = &self.pools[pool_index];
            let writer = pool.writer;
            for &index in pool.genuine.choose_multiple(&mut self.rng, genuine) {
                batch.push(index, SampleMeta { writer, forged: false });
            }
            for &index in pool.forged.choose_multiple(&mut self.rng, forgeries) {
                batch.push(index, SampleMeta { writer, forged: true });
            }
        }
        Ok(batch)
    }

    /// `count` labelled pairs: `count / 2` (rounded up) positives, the rest negatives, in a
    /// shuffled order. `forgery_ratio` (clamped to [0, 1]) is the share of negatives drawn from
    /// the anchor writer's skilled forgeries, where it has any.
    pub fn pair_batch(&mut self, count: usize, forgery_ratio: f32) -> Vec<Pair> {
        let ratio = forgery_ratio.clamp(0.0, 1.0);
        let positives = count.div_ceil(2);
        let mut pairs = Vec::with_capacity(count);
        for i in 0..count {
            let w = if self.balanced() { self.choose_pools(1)[0] } else { self.rng.random_range(0..self.pools.len()) };
            let pool = &self.pools[w];
            let mut two = pool.genuine.choose_multiple(&mut self.rng, 2);
            let (Some(&a), Some(&b)) = (two.next(), two.next()) else {
                unreachable!("pools hold at least two genuine images")
            };
            if i < positives {
                pairs.push(Pair { a, b, same: true });
                continue;
            }
            let use_forgery = !pool.forged.is_empty() && self.rng.random::<f32>() < ratio;
            let negative = if use_forgery {
                pool.forged.choose(&mut self.rng).copied()
            } else {
                // Another training writer: draw from the other pools only.
                let other = (w + self.rng.random_range(1..self.pools.len())) % self.pools.len();
                self.pools[other].genuine.choose(&mut self.rng).copied()
            };
            if let Some(n) = negative {
                pairs.push(Pair { a, b: n, same: false });
            }
        }
        pairs.shuffle(&mut self.rng);
        pairs
    }
}

/// Derives the seed of one random stream (`stream`: initialisation, sampling, augmentation...)
/// at one position (`index`: the global step, say) from the run seed.
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    // SplitMix64 finaliser over a simple combination: cheap, well mixed, deterministic.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 writers × (5 genuine + 3 forged); writers 0..6 train, 6..8 validation, 8..10 test.
    fn fixture() -> (Vec<SampleMeta>, BTreeSet<usize>, BTreeSet<usize>) {
        let mut samples = Vec::new();
        for writer in 0..10 {
            for _ in 0..5 {
                samples.push(SampleMeta { writer, forged: false });
            }
            for _ in 0..3 {
                samples.push(SampleMeta { writer, forged: true });
            }
        }
        (samples, (0..6).collect(), (6..10).collect())
    }

    #[test]
    fn never_yields_a_writer_outside_the_training_set() {
        let (samples, train, held_out) = fixture();
        let mut sampler = WriterSampler::new(&samples, &train, 7).expect("builds");
        assert_eq!(sampler.writers(), (0..6).collect::<Vec<_>>());
        for _ in 0..200 {
            let batch = sampler.writer_batch(4, 3, 2).expect("batch");
            for (&index, &writer) in batch.indices.iter().zip(&batch.writers) {
                assert_eq!(samples[index].writer, writer);
                assert!(train.contains(&writer) && !held_out.contains(&writer));
            }
            for pair in sampler.pair_batch(16, 0.5) {
                for index in [pair.a, pair.b] {
                    assert!(train.contains(&samples[index].writer), "held-out writer drawn");
                }
            }
        }
    }

    #[test]
    fn balanced_mix_draws_each_set_equally_and_proportional_mix_by_writers() {
        // 12 training writers: 10 in set 0, 2 in set 1.
        let mut samples = Vec::new();
        for writer in 0..12 {
            for _ in 0..4 {
                samples.push(SampleMeta { writer, forged: false });
            }
        }
        let train: BTreeSet<usize> = (0..12).collect();
        let writer_set: Vec<usize> = (0..12).map(|w| usize::from(w >= 10)).collect();
        let share_of_small_set = |mix: SetMix| {
            let mut sampler = WriterSampler::new(&samples, &train, 5).expect("builds").with_sets(&writer_set, mix);
            let (mut small, mut all) = (0usize, 0usize);
            for step in 0..400 {
                sampler.reseed(step);
                let batch = sampler.writer_batch(2, 2, 0).expect("batch");
                let writers: BTreeSet<usize> = batch.writers.iter().copied().collect();
                assert_eq!(writers.len(), 2, "distinct writers");
                small += writers.iter().filter(|&&w| w >= 10).count();
                all += writers.len();
            }
            small as f64 / all as f64
        };
        let balanced = share_of_small_set(SetMix::Balanced);
        let proportional = share_of_small_set(SetMix::Writers);
        assert!((balanced - 0.5).abs() < 0.06, "balanced share {balanced}");
        assert!((proportional - 2.0 / 12.0).abs() < 0.05, "proportional share {proportional}");
        // Once the small set is used up, a balanced batch takes the rest from the large one.
        let mut sampler =
            WriterSampler::new(&samples, &train, 5).expect("builds").with_sets(&writer_set, SetMix::Balanced);
        let batch = sampler.writer_batch(12, 2, 0).expect("batch");
        let writers: BTreeSet<usize> = batch.writers.iter().copied().collect();
        assert_eq!(writers, (0..12).collect::<BTreeSet<usize>>());
    }

    #[test]
    fn writer_batches_have_p_writers_k_genuine_and_their_forgeries() {
        let (samples, train, _) = fixture();
        let mut sampler = WriterSampler::new(&samples, &train, 1).expect("builds");
        let batch = sampler.writer_batch(4, 3, 2).expect("batch");
        assert_eq!(batch.indices.len(), 4 * (3 + 2));
        let writers: BTreeSet<usize> = batch.writers.iter().copied().collect();
        assert_eq!(writers.len(), 4);
        for (&index, &forged) in batch.indices.iter().zip(&batch.forged) {
            assert_eq!(samples[index].forged, forged);
        }
        let unique: BTreeSet<usize> = batch.indices.iter().copied().collect();
        assert_eq!(unique.len(), batch.indices.len(), "drawn without replacement");
    }

    #[test]
    fn pairs_are_labelled_correctly_and_respect_the_forgery_ratio() {
        let (samples, train, _) = fixture();
        let mut sampler = WriterSampler::new(&samples, &train, 3).expect("builds");
        let pairs = sampler.pair_batch(64, 1.0);
        assert_eq!(pairs.iter().filter(|p| p.same).count(), 32);
        for p in &pairs {
            let (a, b) = (samples[p.a], samples[p.b]);
            assert!(!a.forged, "anchors are genuine");
            if p.same {
                assert!(a.writer == b.writer && !b.forged && p.a != p.b);
            } else {
                // ratio 1 and every writer has forgeries: all negatives are skilled forgeries.
                assert!(a.writer == b.writer && b.forged);
            }
        }
        for p in sampler.pair_batch(64, 0.0).iter().filter(|p| !p.same) {
            assert!(samples[p.a].writer != samples[p.b].writer && !samples[p.b].forged);
        }
    }

    #[test]
    fn same_seed_same_batches() {
        let (samples, train, _) = fixture();
        let mut a = WriterSampler::new(&samples, &train, 11).expect("builds");
        let mut b = WriterSampler::new(&samples, &train, 11).expect("builds");
        assert_eq!(a.writer_batch(3, 2, 1), b.writer_batch(3, 2, 1));
        assert_eq!(a.pair_batch(10, 0.5), b.pair_batch(10, 0.5));
        b.reseed(12);
        assert_ne!(a.pair_batch(10, 0.5), b.pair_batch(10, 0.5));
    }

    #[test]
    fn refuses_too_few_writers() {
        let samples = vec![SampleMeta { writer: 0, forged: false }; 4];
        let train: BTreeSet<usize> = [0].into();
        assert_eq!(WriterSampler::new(&samples, &train, 0).err(), Some(SamplerError::TooFewWriters { usable: 1 }));
    }

    #[test]
    fn derived_seeds_differ_per_stream_and_index() {
        assert_ne!(derive_seed(1, 0, 0), derive_seed(1, 0, 1));
        assert_ne!(derive_seed(1, 0, 0), derive_seed(1, 1, 0));
        assert_eq!(derive_seed(5, 2, 3), derive_seed(5, 2, 3));
    }
}
