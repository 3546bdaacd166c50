//! `autograph-trainer`: learns the signature embedding network with burn, exports the model
//! bundle (ONNX f32 + int8 + manifest) and fetches data sets.

pub mod augment;
pub mod bundle;
pub mod data;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod kfold;
pub mod loss;
pub mod model;
pub mod progress;
pub mod quantize;
pub mod quickstart;
pub mod report;
pub mod sampler;
pub mod train;

/// The allocator of every program that links the trainer (the CLI, benches, tests).
///
/// A CPU training step allocates and frees tens of megabytes of activations and gradients.
/// glibc serves blocks that large with `mmap` and returns them with `munmap`, so each step
/// page-faults its whole working set in again: a third of the step's time went to the kernel
/// (`perf`: `clear_page`, page faults, `munmap`). mimalloc keeps freed memory for reuse;
/// `cargo bench -p autograph-trainer --bench train_step` measured about 1.5x more images/s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
