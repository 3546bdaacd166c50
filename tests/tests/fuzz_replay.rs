//! The fuzz corpora on stable: the seeds (made in code by `fuzz/src/seeds.rs`, never files of
//! the research data sets, so none is committed), every file of `fuzz/regressions/<target>/`
//! (minimised reproducers of bugs the fuzzers found, each fixed), and the reproducers too large
//! to commit (made in `fuzz/src/seeds.rs` too), go through the same
//! body the libFuzzer target runs (`fuzz/src/bodies.rs`) under the kiosk's budgets: no panic,
//! at most `HEAP_BUDGET_BYTES` of live heap (the allocator below aborts beyond it), at most
//! `TIME_BUDGET` per input. So a regression fails `cargo test --workspace` without nightly or
//! cargo-fuzz. README "Fuzzing" has the rest.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[allow(dead_code)]
#[path = "../../fuzz/src/bodies.rs"]
mod bodies;
#[allow(unsafe_code)]
#[path = "../../fuzz/src/budget.rs"]
mod budget;
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

use budget::{Budget, HEAP_BUDGET_BYTES, TIME_BUDGET};

#[global_allocator]
static HEAP: Budget = Budget::new(HEAP_BUDGET_BYTES);

/// The heap counter is process-wide: the tests here take turns so that peaks mean something.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of a corpus directory, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn body_of(target: &str) -> bodies::Body {
    bodies::TARGETS.iter().find(|(name, _)| *name == target).map(|&(_, body)| body).expect("a known target")
}

/// Runs one input under the budgets; returns what went wrong, and the peak heap it took.
fn replay(name: &str, body: bodies::Body, bytes: &[u8]) -> (Option<String>, usize) {
    let before = HEAP.live();
    HEAP.reset_peak();
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(bytes)));
    let elapsed = start.elapsed();
    let used = HEAP.peak().saturating_sub(before);
    let failure = if outcome.is_err() {
        Some(format!("{name}: panicked (message above)"))
    } else if elapsed > TIME_BUDGET {
        Some(format!("{name}: took {elapsed:?}, over the budget of {TIME_BUDGET:?}"))
    } else {
        None
    };
    (failure, used)
}

/// One test, not one per target: inputs run one at a time for their heap peaks to mean anything.
#[test]
fn corpus_and_regressions_replay_within_budget() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = fuzz_dir();
    let mut failures = Vec::new();
    let all_seeds = seeds::all();
    for (target, body) in bodies::TARGETS {
        let seeds: Vec<&seeds::Seed> = all_seeds.iter().filter(|s| s.target == target).collect();
        if seeds.is_empty() {
            failures.push(format!("the generator makes no seeds for {target}"));
        }
        let regressions = files(&root.join("regressions").join(target));
        let mut peak = 0;
        for seed in &seeds {
            let (failure, used) = replay(&format!("seed {target}/{}", seed.name), body, &seed.bytes);
            failures.extend(failure);
            peak = peak.max(used);
        }
        for path in &regressions {
            let bytes = std::fs::read(path).expect("read reproducer");
            let name = path.strip_prefix(&root).unwrap_or(path).display().to_string();
            let (failure, used) = replay(&name, body, &bytes);
            failures.extend(failure);
            peak = peak.max(used);
        }
        println!("{target}: {} seeds, {} regressions, peak heap {} KiB", seeds.len(), regressions.len(), peak >> 10);
    }
    for (target, name, make) in seeds::large_regressions() {
        let (failure, used) = replay(name, body_of(target), &make());
        failures.extend(failure);
        println!("{target}: {name} (made in code), peak heap {} KiB", used >> 10);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Writes the seed corpus, `<dir>/<target>/<name>`, for libFuzzer: `scripts/fuzz` runs this
/// with `AUTOGRAPH_SEED_DIR=fuzz/work/seeds` (gitignored) before fuzzing. Without the variable it
/// writes to a temporary directory and checks that every target gets seeds that read back.
#[test]
#[ignore = "writes the seed corpus for scripts/fuzz"]
fn write_seed_corpus() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tmp");
    let root = std::env::var_os("AUTOGRAPH_SEED_DIR").map_or_else(|| scratch.path().to_path_buf(), PathBuf::from);
    let seeds = seeds::all();
    for (target, _) in bodies::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove old seeds");
        }
        std::fs::create_dir_all(&dir).expect("seed dir");
    }
    for s in &seeds {
        std::fs::write(root.join(s.target).join(&s.name), &s.bytes).expect("write seed");
    }
    for (target, _) in bodies::TARGETS {
        let written = files(&root.join(target));
        let made = seeds.iter().filter(|s| s.target == target).count();
        assert!(made > 0 && written.len() == made, "{target}: {} files written, {made} seeds", written.len());
    }
    for s in &seeds {
        assert_eq!(std::fs::read(root.join(s.target).join(&s.name)).expect("read back"), s.bytes, "{}", s.name);
    }
}

/// The image path at the decoder's size limit stays within the budgets (seconds in a debug
/// build, so ignored by `cargo test --workspace`; `.ci/run` runs ignored tests).
#[test]
#[ignore = "several seconds: a 12000x12000 image through preprocessing"]
fn worst_case_images_stay_within_budget() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut failures = Vec::new();
    for (target, name, make) in seeds::slow_worst_cases() {
        let (failure, used) = replay(name, body_of(target), &make());
        failures.extend(failure);
        println!("{target}: {name}, peak heap {} MiB", used >> 20);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
