//! Writer-disjoint, seeded splits: a writer's signatures (and forgeries of them) all land in
//! exactly one of train, validation and test, so no test figure has seen its writer.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Writers assigned to each role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterSplit {
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
}

impl WriterSplit {
    /// Which role a writer has, if any.
    pub fn role_of(&self, writer: &str) -> Option<&'static str> {
        let has = |v: &[String]| v.iter().any(|w| w == writer);
        if has(&self.train) {
            Some("train")
        } else if has(&self.validation) {
            Some("validation")
        } else if has(&self.test) {
            Some("test")
        } else {
            None
        }
    }
}

fn shuffled(writers: &[String], seed: u64) -> Vec<String> {
    let mut sorted = writers.to_vec();
    sorted.sort_by(|a, b| super::natural_cmp(a, b));
    sorted.dedup();
    sorted.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    sorted
}

fn count_of(fraction: f32, n: usize) -> usize {
    if fraction <= 0.0 || n == 0 { 0 } else { ((fraction * n as f32).round() as usize).clamp(1, n) }
}

/// Splits writers into train/validation/test by the given fractions of all writers (each
/// rounded, at least one writer when the fraction is positive). The same seed gives the same split.
pub fn split_writers(writers: &[String], validation: f32, test: f32, seed: u64) -> WriterSplit {
    let all = shuffled(writers, seed);
    let n = all.len();
    let n_test = count_of(test, n);
    let n_val = count_of(validation, n).min(n - n_test);
    let test_set = all[..n_test].to_vec();
    let validation_set = all[n_test..n_test + n_val].to_vec();
    let train = all[n_test + n_val..].to_vec();
    sort_roles(WriterSplit { train, validation: validation_set, test: test_set })
}

/// k writer-disjoint folds: fold i tests on the i-th slice of writers; from the rest,
/// `validation` of the writers validate and the others train.
pub fn k_fold(writers: &[String], k: usize, validation: f32, seed: u64) -> Vec<WriterSplit> {
    let all = shuffled(writers, seed);
    let k = k.clamp(1, all.len().max(1));
    (0..k)
        .map(|fold| {
            let lo = fold * all.len() / k;
            let hi = (fold + 1) * all.len() / k;
            let test = all[lo..hi].to_vec();
            let rest: Vec<String> = all[..lo].iter().chain(&all[hi..]).cloned().collect();
            let n_val = count_of(validation, rest.len()).min(rest.len().saturating_sub(1));
            sort_roles(WriterSplit { validation: rest[..n_val].to_vec(), train: rest[n_val..].to_vec(), test })
        })
        .collect()
}

fn sort_roles(mut split: WriterSplit) -> WriterSplit {
    for v in [&mut split.train, &mut split.validation, &mut split.test] {
        v.sort_by(|a, b| super::natural_cmp(a, b));
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn writers(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("user{i}")).collect()
    }

    #[test]
    fn split_is_disjoint_complete_and_seeded() {
        let w = writers(40);
        let s = split_writers(&w, 0.2, 0.2, 7);
        assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (24, 8, 8));
        let all: HashSet<&String> = s.train.iter().chain(&s.validation).chain(&s.test).collect();
        assert_eq!(all.len(), 40);
        assert_eq!(s, split_writers(&w, 0.2, 0.2, 7));
        assert_ne!(s, split_writers(&w, 0.2, 0.2, 8));
    }

    #[test]
    fn k_fold_tests_every_writer_exactly_once() {
        let w = writers(55);
        let folds = k_fold(&w, 5, 0.15, 1);
        assert_eq!(folds.len(), 5);
        let mut tested = Vec::new();
        for f in &folds {
            assert_eq!(f.test.len(), 11);
            for t in &f.test {
                assert_eq!(f.role_of(t), Some("test"));
                assert!(!f.train.contains(t) && !f.validation.contains(t));
            }
            assert!(!f.validation.is_empty());
            tested.extend(f.test.clone());
        }
        tested.sort();
        let mut expected = w.clone();
        expected.sort();
        assert_eq!(tested, expected);
    }
}
