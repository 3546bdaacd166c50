//! The ONNX Runtime backend (cargo feature `ort`). The library is not linked at build time: it is
//! loaded from `ORT_DYLIB_PATH` (e.g. `site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0`
//! from PyPI's `onnxruntime` ≥ 1.31) when the first session is made.
//!
//! The thread count is always set explicitly: ONNX Runtime's default (one per core, spinning)
//! was measured 4× slower on the 2-core kiosk-class machine, and benchmarks compare one thread
//! with tract's one thread.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autograph_shared::manifest::Manifest;
use autograph_shared::preprocess::Preprocessed;
use autograph_shared::protocol::{EmbedError, Embedder};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::TensorRef;

use super::{EngineError, Runtime, check_input};

/// The environment variable naming the ONNX Runtime shared library.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// ONNX Runtime allows one environment per process; sessions share it.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static Environment, EngineError> {
    let unavailable = |reason: String| EngineError::Unavailable { runtime: Runtime::Ort, reason };
    ENVIRONMENT
        .get_or_init(|| {
            let path = std::env::var_os(DYLIB_ENV)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("set {DYLIB_ENV} to the path of libonnxruntime.so (ONNX Runtime >= 1.31)"))?;
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!("{DYLIB_ENV}={} is not a file", path.display()));
            }
            ort::init_from(&path)
                .map_err(|e| e.to_string())?
                .with_name("autograph")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| unavailable(reason.clone()))
}

/// A loaded ONNX Runtime session.
pub struct OrtEmbedder {
    session: Session,
    input: String,
    height: usize,
    width: usize,
    dim: usize,
}

impl OrtEmbedder {
    /// Builds a session from ONNX bytes (already hash-checked) with `threads` intra-op threads,
    /// sequential execution and all graph optimisations, and checks the graph's I/O names.
    pub fn load(bytes: &[u8], path: &Path, manifest: &Manifest, threads: usize) -> Result<Self, EngineError> {
        let env = environment()?;
        let load_err = |e: ort::Error| EngineError::Load {
            path: path.to_path_buf(),
            runtime: Runtime::Ort,
            message: e.to_string(),
        };
        // Builder errors carry the builder back; only the message is wanted.
        let step = |r: Result<SessionBuilder, ort::Error<SessionBuilder>>| r.map_err(|e| load_err(e.into()));
        let builder = Session::builder(env).map_err(load_err)?;
        let builder = step(builder.with_optimization_level(GraphOptimizationLevel::All))?;
        let builder = step(builder.with_intra_threads(threads.max(1)))?;
        let builder = step(builder.with_inter_threads(1))?;
        let mut builder = step(builder.with_parallel_execution(false))?;
        let session = builder.commit_from_memory(bytes).map_err(load_err)?;
        let names = |outlets: &[ort::value::Outlet]| outlets.iter().map(|o| o.name().to_owned()).collect::<Vec<_>>();
        let (inputs, outputs) = (names(session.inputs()), names(session.outputs()));
        if inputs != [manifest.io.input.clone()] || outputs != [manifest.io.output.clone()] {
            return Err(EngineError::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "the graph's inputs are {inputs:?} and outputs {outputs:?}; the manifest says {:?} -> {:?}",
                    manifest.io.input, manifest.io.output
                ),
            });
        }
        Ok(Self {
            session,
            input: manifest.io.input.clone(),
            height: manifest.preprocess.height as usize,
            width: manifest.preprocess.width as usize,
            dim: manifest.embedding_dim as usize,
        })
    }

    fn run_one(&mut self, image: &Preprocessed) -> Result<Vec<f32>, String> {
        let tensor = TensorRef::from_array_view(([1usize, 1, self.height, self.width], image.pixels.as_slice()))
            .map_err(|e| e.to_string())?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| e.to_string())?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
        if values.len() != self.dim {
            return Err(format!("the model returned {} values, expected {}", values.len(), self.dim));
        }
        Ok(values.to_vec())
    }
}

impl Embedder for OrtEmbedder {
    fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError> {
        batch
            .iter()
            .map(|image| {
                check_input(image, self.height, self.width)?;
                self.run_one(image).map_err(EmbedError)
            })
            .collect()
    }
}
