//! The kiosk's resource budgets on bad input, and a heap counter that enforces the memory one.
//!
//! [`Budget`] wraps the system allocator and counts live bytes. An allocation that would take
//! the live heap over its limit aborts the process with a message, which libFuzzer records as
//! a crash. It aborts rather than failing the allocation because `try_reserve` callers (such as
//! `Read::read_to_end`) would take a failure as a graceful error, while the kiosk, with the
//! system allocator, would have gone on allocating. It counts only Rust allocations, so
//! libFuzzer's own corpus in memory is not charged to the code under test. The fuzz targets
//! and the stable replay test (tests/tests/fuzz_replay.rs) both install it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Most heap one input may make the kiosk hold at once: twice the decoder's allocation limit
/// (`PreprocessConfig::max_decode_bytes`, 256 MiB), for a decoded image plus its grey copy.
pub const HEAP_BUDGET_BYTES: usize = 512 << 20;

/// Longest one input may take on the fuzz build (release with debug assertions), passed to
/// libFuzzer as `-timeout`.
pub const TIME_BUDGET: Duration = Duration::from_secs(10);

/// The system allocator with a live-bytes limit and a high-water mark.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Budget {
    pub const fn new(limit: usize) -> Self {
        Self { limit, live: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The most bytes live at once since the last [`Budget::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new high-water mark from what is live now.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }

    /// Counts `bytes` more as live, or aborts when that would exceed the limit.
    fn reserve(&self, bytes: usize) {
        let before = self.live.fetch_add(bytes, Ordering::Relaxed);
        let after = before.saturating_add(bytes);
        if after > self.limit {
            over_budget(before, bytes, self.limit);
        }
        self.peak.fetch_max(after, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Says what went over and aborts, without allocating (we are inside the allocator).
fn over_budget(live: usize, requested: usize, limit: usize) -> ! {
    use std::io::Write;
    let mut buf = [0u8; 160];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = writeln!(
        cursor,
        "heap budget exceeded: {live} bytes live + {requested} requested > {limit} (fuzz/src/budget.rs)"
    );
    let len = cursor.position() as usize;
    let _ = std::io::stderr().write_all(&buf[..len]);
    std::process::abort();
}

// SAFETY: every call is forwarded to `System` with the caller's layout and pointer unchanged;
// the wrapper only counts, or aborts before calling it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Budget {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.reserve(layout.size());
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            self.release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.reserve(layout.size());
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            self.release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        self.release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            self.reserve(new_size - old);
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                self.release(new_size - old);
            }
        } else if new_size < old {
            self.release(old - new_size);
        }
        p
    }
}
