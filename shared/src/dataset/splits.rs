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

/// The split of one constituent data set of a multi-set run (recorded per set in `run.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSplit {
    pub set: String,
    #[serde(flatten)]
    pub split: WriterSplit,
}

/// Splits each data set's writers on its own ([`split_writers`] with the same fractions and
/// seed), so every set is represented in train, validation and test in proportion; then keeps
/// each linked group (the same person in two sets, see [`super::links`]) in one role, the most
/// held-out one of its members. With one set this is exactly [`split_writers`].
pub fn split_per_set(
    sets: &[(String, Vec<String>)],
    links: &[Vec<String>],
    validation: f32,
    test: f32,
    seed: u64,
) -> Vec<SetSplit> {
    let mut splits: Vec<SetSplit> = sets
        .iter()
        .map(|(set, writers)| SetSplit { set: set.clone(), split: split_writers(writers, validation, test, seed) })
        .collect();
    apply_links(&mut splits, links);
    splits
}

/// [`k_fold`] per data set: fold i tests on the i-th slice of every set's writers (validation
/// and training writers likewise per set), linked groups kept in one role.
pub fn k_fold_per_set(
    sets: &[(String, Vec<String>)],
    links: &[Vec<String>],
    k: usize,
    validation: f32,
    seed: u64,
) -> Vec<Vec<SetSplit>> {
    let per_set: Vec<Vec<WriterSplit>> = sets.iter().map(|(_, writers)| k_fold(writers, k, validation, seed)).collect();
    let folds = per_set.iter().map(Vec::len).min().unwrap_or(0);
    (0..folds)
        .map(|fold| {
            let mut splits: Vec<SetSplit> = sets
                .iter()
                .zip(&per_set)
                .map(|((set, _), folds)| SetSplit { set: set.clone(), split: folds[fold].clone() })
                .collect();
            apply_links(&mut splits, links);
            splits
        })
        .collect()
}

/// All sets' splits as one (writer ids are unique across sets).
pub fn union(splits: &[SetSplit]) -> WriterSplit {
    let mut all = WriterSplit { train: Vec::new(), validation: Vec::new(), test: Vec::new() };
    for s in splits {
        all.train.extend(s.split.train.iter().cloned());
        all.validation.extend(s.split.validation.iter().cloned());
        all.test.extend(s.split.test.iter().cloned());
    }
    sort_roles(all)
}

/// Moves every member of a linked group into the most held-out role any member has
/// (test, then validation, then train), within its own set's split.
fn apply_links(splits: &mut [SetSplit], links: &[Vec<String>]) {
    let rank = |role: Option<&str>| match role {
        Some("test") => 2,
        Some("validation") => 1,
        _ => 0,
    };
    for group in links {
        let role =
            group.iter().map(|w| splits.iter().map(|s| rank(s.split.role_of(w))).max().unwrap_or(0)).max().unwrap_or(0);
        for s in splits.iter_mut() {
            let split = &mut s.split;
            for w in group {
                let Some(current) = split.role_of(w) else { continue };
                if rank(Some(current)) == role {
                    continue;
                }
                for v in [&mut split.train, &mut split.validation, &mut split.test] {
                    v.retain(|x| x != w);
                }
                match role {
                    2 => split.test.push(w.clone()),
                    1 => split.validation.push(w.clone()),
                    _ => split.train.push(w.clone()),
                }
            }
            *split = sort_roles(split.clone());
        }
    }
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

    fn sets() -> Vec<(String, Vec<String>)> {
        let hindi = (1..=160).map(|i| format!("bhsig260_hindi:Hindi/{i:03}")).collect();
        let sample = ["Bengali/001", "Bengali/002", "Hindi/001", "Hindi/002"]
            .iter()
            .map(|w| format!("bhsig260_sample:{w}"))
            .collect();
        let cedar = (1..=55).map(|i| format!("cedar_half:{i}")).collect();
        vec![("bhsig260_hindi".into(), hindi), ("bhsig260_sample".into(), sample), ("cedar_half".into(), cedar)]
    }

    fn links() -> Vec<Vec<String>> {
        ["001", "002"]
            .iter()
            .map(|w| vec![format!("bhsig260_hindi:Hindi/{w}"), format!("bhsig260_sample:Hindi/{w}")])
            .collect()
    }

    /// Every (set, writer) in exactly one role of exactly one set's split, and linked copies in
    /// the same role.
    fn assert_sound(splits: &[SetSplit], sets: &[(String, Vec<String>)], links: &[Vec<String>]) {
        let mut seen: HashSet<&String> = HashSet::new();
        for s in splits {
            let (_, writers) = sets.iter().find(|(name, _)| *name == s.set).expect("a split per set");
            for w in s.split.train.iter().chain(&s.split.validation).chain(&s.split.test) {
                assert!(seen.insert(w), "{w} appears twice");
                assert!(writers.contains(w), "{w} is not a writer of {}", s.set);
            }
        }
        let total: usize = sets.iter().map(|(_, w)| w.len()).sum();
        assert_eq!(seen.len(), total, "every writer is placed");
        let all = union(splits);
        for group in links {
            let roles: HashSet<_> = group.iter().map(|w| all.role_of(w)).collect();
            assert_eq!(roles.len(), 1, "linked writers {group:?} straddle roles {roles:?}");
        }
    }

    #[test]
    fn per_set_split_is_proportional_disjoint_and_keeps_links_together() {
        let (sets, links) = (sets(), links());
        for seed in 0..50 {
            let splits = split_per_set(&sets, &links, 0.15, 0.2, seed);
            assert_eq!(splits.len(), 3);
            assert_sound(&splits, &sets, &links);
            let hindi = &splits[0].split;
            // 20% of Hindi's 160 writers test, plus up to the 2 linked writers a link moves there.
            assert!((32..=34).contains(&hindi.test.len()), "seed {seed}: {} Hindi test writers", hindi.test.len());
            assert_eq!(splits[2].split.test.len(), 11, "20% of CEDAR's 55");
        }
    }

    #[test]
    fn a_single_set_splits_as_before() {
        let w = writers(40);
        let per_set = split_per_set(&[("svc2004".into(), w.clone())], &[], 0.15, 0.2, 42);
        assert_eq!(per_set[0].split, split_writers(&w, 0.15, 0.2, 42));
        assert_eq!(union(&per_set), split_writers(&w, 0.15, 0.2, 42));
    }

    #[test]
    fn per_set_folds_test_every_writer_once_and_keep_links_together() {
        let (all_sets, all_links) = (sets(), links());
        let folds = k_fold_per_set(&all_sets, &all_links, 5, 0.15, 3);
        assert_eq!(folds.len(), 4, "the 4-writer sample limits the fold count");
        let without_sample: Vec<_> = all_sets[..1].iter().chain(&all_sets[2..]).cloned().collect();
        let folds = k_fold_per_set(&without_sample, &all_links, 5, 0.15, 3);
        assert_eq!(folds.len(), 5);
        let mut tested = Vec::new();
        for f in &folds {
            tested.extend(union(f).test);
        }
        tested.sort();
        assert_eq!(tested.len(), 215);
        tested.dedup();
        assert_eq!(tested.len(), 215);
        let (sets, links) = (sets(), links());
        for f in k_fold_per_set(&sets, &links, 4, 0.15, 9) {
            assert_sound(&f, &sets, &links);
        }
    }

    #[test]
    fn a_linked_writer_follows_its_most_held_out_copy() {
        let sets = vec![
            ("a".to_string(), vec!["a:x".to_string(), "a:y".into(), "a:z".into()]),
            ("b".to_string(), vec!["b:x".to_string(), "b:q".into()]),
        ];
        let mut splits = vec![
            SetSplit {
                set: "a".into(),
                split: WriterSplit {
                    train: vec!["a:x".into()],
                    validation: vec!["a:y".into()],
                    test: vec!["a:z".into()],
                },
            },
            SetSplit {
                set: "b".into(),
                split: WriterSplit { train: vec!["b:q".into()], validation: vec![], test: vec!["b:x".into()] },
            },
        ];
        apply_links(&mut splits, &[vec!["a:x".into(), "b:x".into()]]);
        assert_eq!(splits[0].split.test, vec!["a:x".to_string(), "a:z".into()]);
        assert!(splits[0].split.train.is_empty());
        assert_sound(&splits, &sets, &[vec!["a:x".into(), "b:x".into()]]);
    }
}
