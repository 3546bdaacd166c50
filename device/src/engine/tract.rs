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

        let model = guarded(|| onnx().model_for_read(&mut &bytes[..])).map_err(load_err)?;
        check_io(&model, path, manifest)?;
        let model = guarded(|| {
            model.with_input_fact(0, f32::fact([1, 1, height, width]).into()).and_then(|m| m.into_optimized())
        })
        .map_err(load_err)?;
        let output = model.output_fact(0).map_err(load_err)?;
        let shape = output.shape.as_concrete().map(<[usize]>::to_vec);
        if shape.as_deref() != Some(&[1, dim][..]) || output.datum_type != f32::datum_type() {
            return Err(mismatch(format!(
                "for a [1, 1, {height}, {width}] input it outputs {output:?}, the manifest expects f32 [1, {dim}]"
            )));
        }
        let plan = guarded(|| model.into_runnable()).map_err(load_err)?;
        let state = guarded(|| plan.spawn()).map_err(load_err)?;
        Ok(Self { _plan: plan, state, height, width, dim })
    }

    fn run_one(&mut self, image: &Preprocessed) -> TractResult<Vec<f32>> {
        let input = Tensor::from_shape(&[1, 1, self.height, self.width], &image.pixels)?;
        let outputs = guarded(|| self.state.run(tvec!(input.into_tvalue())))?;
        let output = outputs.first().ok_or_else(|| TractError::msg("the model returned no output"))?;
        let values: Vec<f32> = output.to_plain_array_view::<f32>()?.iter().copied().collect();
        if values.len() != self.dim {
            return Err(TractError::msg(format!("the model returned {} values, expected {}", values.len(), self.dim)));
        }
        Ok(values)
    }
}

/// Runs a tract call, turning a panic into an error. tract `unwrap`s where a malformed graph
/// can reach (found by fuzzing: a ReduceL2 axis beyond its input's rank panics in shape
/// inference), and a model file is input. The kiosk build aborts on panic instead, where the
/// binary's panic hook still ends it as an error, exit 2 (main.rs).
fn guarded<T>(f: impl FnOnce() -> TractResult<T>) -> TractResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(TractError::msg(format!("tract panicked: {message}")))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tract_onnx::pb::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
        ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    };

    fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&v| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `image [1,1,8,16] -> Flatten -> ReduceL2(axes) -> embedding`.
    fn reduce_model(axis: i64) -> Vec<u8> {
        let node = |op: &str, input: &str, output: &str, attribute: Vec<AttributeProto>| NodeProto {
            op_type: op.into(),
            input: vec![input.into()],
            output: vec![output.into()],
            attribute,
            ..Default::default()
        };
        let int = |name: &str, i: i64| AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        };
        let axes = AttributeProto {
            name: "axes".into(),
            r#type: AttributeType::Ints as i32,
            ints: vec![axis],
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![
                node("Flatten", "image", "flat", vec![int("axis", 1)]),
                node("ReduceL2", "flat", "embedding", vec![axes, int("keepdims", 1)]),
            ],
            input: vec![value_info("image", &[1, 1, 8, 16])],
            output: vec![value_info("embedding", &[1, 1])],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn manifest() -> Manifest {
        let thresholds =
            serde_json::json!({"skilled": null, "random": {"eer": 0.5, "far_1pct": 0.6, "far_0_1pct": 0.7}});
        let model = serde_json::json!({"path": "model.onnx", "sha256": "00", "bytes": 0,
            "calibration": {"references": 1, "thresholds": thresholds, "replay_similarity": 0.99}});
        let preprocess = autograph_shared::PreprocessConfig { height: 8, width: 16, ..Default::default() };
        let json = serde_json::json!({
            "format_version": 1, "preprocess": preprocess, "input_shape": [1, 8, 16], "embedding_dim": 128,
            "io": {"input": "image", "output": "embedding"}, "f32_model": model, "int8_model": null,
            "default_precision": "f32", "test_metrics": null,
            "provenance": {"dataset": "t", "dataset_content_hash": "00", "training_config": null,
                "created_unix": 0, "trainer_version": "t", "split": null}
        });
        Manifest::from_json(&json.to_string(), Path::new("manifest.json")).expect("manifest")
    }

    #[test]
    fn a_graph_that_panics_tract_is_a_load_error() {
        let path = Path::new("model.onnx");
        // An axis beyond the rank: tract's shape inference unwraps an error here.
        match TractEmbedder::load(&reduce_model(44), path, &manifest()) {
            Err(EngineError::Load { message, .. }) => assert!(message.contains("tract panicked"), "{message}"),
            Err(other) => panic!("expected a load error, got {other}"),
            Ok(_) => panic!("a graph with an axis beyond its rank loaded"),
        }
        // The same graph with a valid axis loads (and is refused only for its output size).
        assert!(matches!(TractEmbedder::load(&reduce_model(1), path, &manifest()), Err(EngineError::Mismatch { .. })));
    }
}
