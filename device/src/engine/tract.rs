//! The tract runtime: the ONNX model made concrete for one `[1, 1, H, W]` image, optimised once
//! at load, and run through one reused session state.
//!
//! Concrete shapes matter: with a symbolic batch tract cannot pick its kernels and fold shapes
//! ahead of time. Batches are embedded one image at a time with the batch-1 plan (on one core a
//! bigger batch buys nothing measurable for this network size).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autograph_shared::manifest::Manifest;
use autograph_shared::preprocess::Preprocessed;
use autograph_shared::protocol::{EmbedError, Embedder};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

use super::{EngineError, Runtime, check_input};

type Plan = TypedSimplePlan;
type State = SimpleState<TypedFact, Box<dyn TypedOp>>;

/// A loaded, optimised tract model.
pub struct TractEmbedder {
    /// Kept so the plan outlives the state built from it.
    _plan: Arc<Plan>,
    state: State,
    height: usize,
    width: usize,
    dim: usize,
}

impl TractEmbedder {
    /// Parses ONNX bytes (already hash-checked), fixes the input to `[1, 1, H, W]` f32, checks the
    /// graph's input and output against the manifest, and optimises it.
    pub fn load(bytes: &[u8], path: &Path, manifest: &Manifest) -> Result<Self, EngineError> {
        let (height, width) = (manifest.preprocess.height as usize, manifest.preprocess.width as usize);
        let dim = manifest.embedding_dim as usize;
        let load_err = |e: TractError| EngineError::Load {
            path: path.to_path_buf(),
            runtime: Runtime::Tract,
            message: format!("{e:#}"),
        };
        let mismatch = |message: String| EngineError::Mismatch { path: path.to_path_buf(), message };

        let model = onnx().model_for_read(&mut &bytes[..]).map_err(load_err)?;
        check_io(&model, path, manifest)?;
        let model = model
            .with_input_fact(0, f32::fact([1, 1, height, width]).into())
            .and_then(|m| m.into_optimized())
            .map_err(load_err)?;
        let output = model.output_fact(0).map_err(load_err)?;
        let shape = output.shape.as_concrete().map(<[usize]>::to_vec);
        if shape.as_deref() != Some(&[1, dim][..]) || output.datum_type != f32::datum_type() {
            return Err(mismatch(format!(
                "for a [1, 1, {height}, {width}] input it outputs {output:?}, the manifest expects f32 [1, {dim}]"
            )));
        }
        let plan = model.into_runnable().map_err(load_err)?;
        let state = plan.spawn().map_err(load_err)?;
        Ok(Self { _plan: plan, state, height, width, dim })
    }

    fn run_one(&mut self, image: &Preprocessed) -> TractResult<Vec<f32>> {
        let input = Tensor::from_shape(&[1, 1, self.height, self.width], &image.pixels)?;
        let outputs = self.state.run(tvec!(input.into_tvalue()))?;
        let output = outputs.first().ok_or_else(|| TractError::msg("the model returned no output"))?;
        let values: Vec<f32> = output.to_plain_array_view::<f32>()?.iter().copied().collect();
        if values.len() != self.dim {
            return Err(TractError::msg(format!("the model returned {} values, expected {}", values.len(), self.dim)));
        }
        Ok(values)
    }
}

/// One input and one output, named as the manifest says.
fn check_io(model: &InferenceModel, path: &Path, manifest: &Manifest) -> Result<(), EngineError> {
    let mismatch = |message: String| EngineError::Mismatch { path: PathBuf::from(path), message };
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        return Err(mismatch(format!(
            "the graph has {} inputs and {} outputs, expected one of each",
            model.inputs.len(),
            model.outputs.len()
        )));
    }
    let input = &model.node(model.inputs[0].node).name;
    if *input != manifest.io.input {
        return Err(mismatch(format!("the graph's input is {input:?}, the manifest says {:?}", manifest.io.input)));
    }
    let output = model.outlet_label(model.outputs[0]).unwrap_or(&model.node(model.outputs[0].node).name);
    if *output != manifest.io.output {
        return Err(mismatch(format!("the graph's output is {output:?}, the manifest says {:?}", manifest.io.output)));
    }
    Ok(())
}

impl Embedder for TractEmbedder {
    fn embed(&mut self, batch: &[Preprocessed]) -> Result<Vec<Vec<f32>>, EmbedError> {
        batch
            .iter()
            .map(|image| {
                check_input(image, self.height, self.width)?;
                self.run_one(image).map_err(|e| EmbedError(format!("{e:#}")))
            })
            .collect()
    }
}
