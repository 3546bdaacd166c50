//! Checks against the real data sets in `../shared/data` (run by `.ci/run` with `--ignored`).

use autograph_shared::dataset::{Dataset, Label};
use autograph_shared::leakage::{background_features, background_only_eer, single_feature_eer};
use autograph_shared::preprocess::{PreprocessConfig, decode_gray, preprocess_gray};
use autograph_tests::shared_data;

/// Background statistics of every `step`-th image of a set, genuine and forged apart: the raw
/// paper level (median grey) and the preprocessed image's background features.
struct Backgrounds {
    raw: [Vec<f32>; 2],
    preprocessed: [Vec<[f32; 3]>; 2],
}

fn backgrounds(set: &str, step: usize) -> Backgrounds {
    let ds = Dataset::load(&shared_data().join(set)).expect("load the set");
    let cfg = PreprocessConfig::default();
    let mut out = Backgrounds { raw: [Vec::new(), Vec::new()], preprocessed: [Vec::new(), Vec::new()] };
    for sample in ds.samples.iter().step_by(step) {
        let bytes = sample.source.read().expect("read");
        let gray = decode_gray(&bytes, &cfg).expect("decode");
        let mut px = gray.as_raw().clone();
        px.sort_unstable();
        let side = usize::from(sample.label == Label::Forged);
        out.raw[side].push(px[px.len() / 2] as f32);
        out.preprocessed[side].push(background_features(&preprocess_gray(&gray, &cfg).expect("preprocess")));
    }
    out
}

/// The CEDAR trap: raw paper level separates genuine from forged almost perfectly; after
/// preprocessing, no background statistic does.
#[test]
#[ignore = "needs ../shared/data (run by .ci/run)"]
fn cedar_background_no_longer_separates_genuine_from_forged() {
    // Every 4th image keeps the test quick while covering all 55 writers.
    let b = backgrounds("cedar_half", 4);
    let raw = single_feature_eer(&b.raw[0], &b.raw[1]);
    let pre = background_only_eer(&b.preprocessed[0], &b.preprocessed[1]);
    println!("CEDAR background-only EER: raw paper median {:.1}%, preprocessed {:.1}%", raw * 100.0, pre * 100.0);
    assert!(raw < 0.10, "the raw scans should show the trap (EER {raw})");
    assert!(pre > 0.35, "background statistics still separate genuine from forged after preprocessing (EER {pre})");
}

/// BHSig260 Hindi's genuine and forged scans can differ in background too: after preprocessing
/// no background statistic separates them (the per-set background-only baseline).
#[test]
#[ignore = "needs ../shared/data (run by .ci/run)"]
fn hindi_background_does_not_separate_genuine_from_forged() {
    // Every 8th image keeps the test quick while covering all 160 writers.
    let b = backgrounds("bhsig260_hindi", 8);
    let raw = single_feature_eer(&b.raw[0], &b.raw[1]);
    let pre = background_only_eer(&b.preprocessed[0], &b.preprocessed[1]);
    println!(
        "BHSig260 Hindi background-only EER: raw paper median {:.1}%, preprocessed {:.1}%",
        raw * 100.0,
        pre * 100.0
    );
    assert!(pre > 0.35, "background statistics separate genuine from forged after preprocessing (EER {pre})");
}

/// Every image of every set decodes and preprocesses (the BHSig sample has palette TIFFs).
#[test]
#[ignore = "needs ../shared/data (run by .ci/run)"]
fn every_real_image_preprocesses() {
    let cfg = PreprocessConfig::default();
    for set in ["bhsig260_sample", "bhsig260_hindi", "svc2004", "cedar_half"] {
        let ds = Dataset::load(&shared_data().join(set)).expect("load");
        let mut failures = Vec::new();
        for sample in &ds.samples {
            let bytes = sample.source.read().expect("read");
            if let Err(e) = autograph_shared::preprocess_bytes(&bytes, &cfg) {
                failures.push(format!("{}: {e}", sample.source));
            }
        }
        assert!(failures.is_empty(), "{set}: {failures:#?}");
    }
}

/// Every image file under `dir`, sorted.
fn image_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for path in std::fs::read_dir(&d).expect("read the set's folder").flatten().map(|e| e.path()) {
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_lowercase);
            if path.is_dir() {
                stack.push(path);
            } else if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "tif" | "tiff" | "bmp")) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The fast preprocessing (issue #16) against the implementation before it, kept verbatim as
/// `preprocess::reference`, on every image file of the sets: same tensor within 1e-6 (it is
/// bit-identical), or the same refusal. Files are split over the cores.
#[test]
#[ignore = "needs ../shared/data (run by .ci/run)"]
fn fast_preprocessing_matches_the_reference_on_every_real_image() {
    use autograph_shared::preprocess::reference;
    let cfg = PreprocessConfig::default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for set in ["svc2004", "cedar_half", "bhsig260_hindi", "bhsig260_sample"] {
        let files = image_files(&shared_data().join(set));
        assert!(!files.is_empty(), "{set}: no images");
        let per_thread = files.len().div_ceil(threads);
        let results: Vec<(usize, usize, f32)> = std::thread::scope(|scope| {
            let workers: Vec<_> = files
                .chunks(per_thread)
                .map(|chunk| {
                    let cfg = &cfg;
                    scope.spawn(move || {
                        let (mut identical, mut refused, mut max_diff) = (0, 0, 0.0f32);
                        for path in chunk {
                            let bytes = std::fs::read(path).expect("read");
                            let gray = decode_gray(&bytes, cfg).expect("decode");
                            match (preprocess_gray(&gray, cfg), reference::preprocess_gray(&gray, cfg)) {
                                (Ok(new), Ok(old)) => {
                                    let diff = new.pixels.iter().zip(&old.pixels).map(|(a, b)| (a - b).abs());
                                    max_diff = diff.fold(max_diff, f32::max);
                                    identical += usize::from(new == old);
                                }
                                (Err(a), Err(b)) if a.to_string() == b.to_string() => refused += 1,
                                (a, b) => panic!("{}: fast {:?}, reference {:?}", path.display(), a.err(), b.err()),
                            }
                        }
                        (identical, refused, max_diff)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("worker")).collect()
        });
        let identical: usize = results.iter().map(|r| r.0).sum();
        let refused: usize = results.iter().map(|r| r.1).sum();
        let max_diff = results.iter().map(|r| r.2).fold(0.0, f32::max);
        println!(
            "{set}: {} images, {identical} bit-identical, {refused} refused alike, max diff {max_diff:e}",
            files.len()
        );
        assert!(max_diff <= 1e-6, "{set}: max |fast - reference| = {max_diff}");
    }
}

/// The Omniglot runs as published: 20 runs of 20-way one-shot, every answer resolvable.
#[test]
#[ignore = "needs ../shared/data (run by .ci/run)"]
fn omniglot_runs_are_complete() {
    let runs =
        autograph_shared::dataset::omniglot::load_runs(&shared_data().join("omniglot/all_runs.zip")).expect("runs");
    assert_eq!(runs.len(), 20);
    for run in &runs {
        assert_eq!((run.training.len(), run.test.len(), run.answers.len()), (20, 20, 20), "{}", run.name);
    }
    let background = Dataset::load(&shared_data().join("omniglot")).expect("background");
    assert_eq!(background.samples.len() % 20, 0, "each character has 20 drawers");
}

/// BHSig260 Hindi writers 001 and 002 are in both the sample (TIFF) and the complete Hindi set
/// (PNG, same pixels): they are found as linked writers, and no split of the two sets together
/// puts one copy on the training side and the other on a held-out side.
#[test]
#[ignore = "needs ../shared/data (run by .ci/run)"]
fn hindi_writers_in_both_bhsig_sets_never_straddle_a_split() {
    use autograph_shared::dataset::links::linked_writers;
    use autograph_shared::dataset::splits::{k_fold_per_set, split_per_set, union};
    let hindi = Dataset::load(&shared_data().join("bhsig260_hindi")).expect("load bhsig260_hindi");
    assert_eq!(hindi.writers().len(), 160);
    assert_eq!(hindi.duplicates.len(), 34, "31 duplicate groups, 34 surplus files");
    let sample = Dataset::load(&shared_data().join("bhsig260_sample")).expect("load bhsig260_sample");
    let merged = Dataset::merge(vec![hindi, sample]);
    let links = linked_writers(&merged);
    let expected: Vec<Vec<String>> = ["001", "002"]
        .iter()
        .map(|w| vec![format!("bhsig260_hindi:Hindi/{w}"), format!("bhsig260_sample:Hindi/{w}")])
        .collect();
    assert_eq!(links, expected);
    let sets = merged.writers_by_set();
    let mut splits: Vec<_> = (0..40).map(|seed| union(&split_per_set(&sets, &links, 0.15, 0.2, seed))).collect();
    splits.extend(k_fold_per_set(&sets, &links, 2, 0.25, 1).iter().map(|f| union(f)));
    for split in &splits {
        for group in &links {
            assert_eq!(split.role_of(&group[0]), split.role_of(&group[1]), "{group:?} straddle a split");
        }
    }
}
