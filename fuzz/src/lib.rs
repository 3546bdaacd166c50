//! Fuzz targets for every input the Autograph kiosk reads (issue #15). The bodies live in
//! [`bodies`] so that the stable replay test (tests/tests/fuzz_replay.rs) runs exactly what
//! libFuzzer runs; `fuzz_targets/*.rs` only wrap them. README "Fuzzing" says how to run them.

pub mod bodies;
pub mod budget;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use budget::Budget;

/// Installs the kiosk's heap budget ([`budget::HEAP_BUDGET_BYTES`]) as the global allocator
/// of a fuzz target, as `HEAP`.
#[macro_export]
macro_rules! heap_budget {
    () => {
        #[global_allocator]
        static HEAP: $crate::budget::Budget = $crate::budget::Budget::new($crate::budget::HEAP_BUDGET_BYTES);
    };
}

static REPORTED: OnceLock<&'static Budget> = OnceLock::new();
static SLOWEST_NS: AtomicU64 = AtomicU64::new(0);

/// Runs one input through `body`, keeping the longest time any input took.
pub fn run(body: bodies::Body, data: &[u8]) {
    let start = Instant::now();
    body(data);
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    SLOWEST_NS.fetch_max(ns, Ordering::Relaxed);
}

/// A target's set-up. Prints the run's peak live heap and slowest input when the process
/// exits (scripts/fuzz puts them in its table). Replaces libfuzzer-sys's panic hook, which
/// aborts on every panic: the kiosk turns tract's panics on a malformed model into load errors
/// (device/src/engine/tract.rs), so a caught panic is not a crash. An uncaught one still
/// aborts (libfuzzer-sys's wrapper) and libFuzzer records it, after this one-line message.
pub fn init(heap: &'static Budget) {
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    if REPORTED.set(heap).is_ok() {
        // SAFETY: registers a plain `extern "C" fn()` that only reads an atomic and prints.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(print_peak);
        }
    }
}

extern "C" fn print_peak() {
    if let Some(heap) = REPORTED.get() {
        eprintln!(
            "autograph-fuzz: peak_heap_bytes: {} slowest_input_ms: {:.1} budget_bytes: {}",
            heap.peak(),
            SLOWEST_NS.load(Ordering::Relaxed) as f64 / 1e6,
            budget::HEAP_BUDGET_BYTES
        );
    }
}
