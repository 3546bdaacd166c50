//! `autograph-trainer`: learns the signature embedding network with burn, exports the model
//! bundle (ONNX f32 + int8 + manifest) and fetches data sets.

pub mod adaptive;
pub mod augment;
pub mod bundle;
pub mod data;
pub mod dynamic;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod fuse;
pub mod kfold;
pub mod loss;
pub mod model;
pub mod progress;
pub mod quantize;
pub mod quickstart;
pub mod render_online;
pub mod report;
pub mod sampler;
pub mod staging;
pub mod synth_data;
pub mod train;
pub mod whiten;

/// The allocator of every program that links the trainer (the CLI, benches, tests).
///
/// A CPU training step allocates and frees tens of megabytes of activations and gradients.
/// glibc serves blocks that large with `mmap` and returns them with `munmap`, so each step
/// page-faults its whole working set in again: a third of the step's time went to the kernel
/// (`perf`: `clear_page`, page faults, `munmap`). mimalloc keeps freed memory for reuse;
/// `cargo bench -p autograph-trainer --bench train_step` measured about 1.5x more images/s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its index in `mi_option_e` of the mimalloc v3 sources that
/// libmimalloc-sys 0.1.49 builds (the crate names no constant for it; default 1000 ms).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells the allocator to keep freed memory for reuse instead of handing it back to the OS.
///
/// mimalloc returns memory that stayed free for a second. A training step of a larger network
/// takes longer than that, so each step faulted its buffers in again (at 96x192 input the
/// bench measured 36 instead of 31 images/s with this set).
///
/// # Safety
/// mimalloc's option setter is not thread-safe: call this first thing in `main`, before any
/// other thread exists.
#[allow(unsafe_code)]
pub unsafe fn keep_freed_memory() {
    // SAFETY: writes one integer option of the allocator; by the contract above no other thread
    // is running, so nothing reads the option concurrently.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index names the option we mean: mimalloc v3's purge_delay defaults to 1000 ms, and no
    /// neighbouring option has that default.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_index_is_mimallocs() {
        // SAFETY: reads one allocator option; no test sets options.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        let overridden = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
        assert!(value == 1000 || overridden, "option {MI_OPTION_PURGE_DELAY} is {value}, not purge_delay's 1000");
    }
}
