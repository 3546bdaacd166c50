//! ONNX export of the embedding network with burn-onnx, under stable tensor names.
//!
//! burn-onnx traces one forward pass (twice, for a dynamic batch axis) and names tensors
//! `tensor_22` and the like; the device and the manifest refer to the graph's input and output
//! by name, so they are renamed to [`INPUT_NAME`] and [`OUTPUT_NAME`].

use burn::module::Module;
use burn::prelude::*;
use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};
use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::model::{EmbeddingNet, ModelConfig};

/// Name of the graph input `[batch, 1, H, W]`.
pub const INPUT_NAME: &str = "image";
/// Name of the graph output `[batch, d]` (L2-normalised).
pub const OUTPUT_NAME: &str = "embedding";

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("burn-onnx could not export the model: {0}")]
    Trace(String),
    #[error("the exported ONNX is not a valid model: {0}")]
    Decode(String),
    #[error("the exported graph has {inputs} inputs and {outputs} outputs; expected one of each")]
    Shape { inputs: usize, outputs: usize },
}

/// Exports the network as an f32 ONNX model with a dynamic batch axis and stable I/O names.
pub fn export_onnx(model: &EmbeddingNet, config: &ModelConfig, device: &Device) -> Result<Vec<u8>, ExportError> {
    let (h, w) = (config.height, config.width);
    // The exporter moves a *clone* of the module to its capture device, but BatchNorm's running
    // statistics are shared between clones, so the caller's model would be left pointing at a
    // closed capture device. Export from an independent copy rebuilt from the record instead.
    let model =
        config.init(device).map_err(|e| ExportError::Trace(e.to_string()))?.load_record(model.clone().into_record());
    let model = &model;
    let sample = Tensor::<4>::zeros([1, 1, h, w], device);
    let validation = Tensor::<4>::zeros([2, 1, h, w], device);
    let specs = [InputSpec::new([AxisSpec::dynamic("batch"), AxisSpec::Static, AxisSpec::Static, AxisSpec::Static])];
    let onnx = OnnxExporter::new()
        .export_dynamic(model, sample, validation, &specs, EmbeddingNet::forward)
        .map_err(|e| ExportError::Trace(format!("{e:?}")))?;
    rename_io(onnx.as_bytes(), INPUT_NAME, OUTPUT_NAME)
}

/// Renames the graph's single input and output (and every node edge that uses them).
pub fn rename_io(onnx: &[u8], input: &str, output: &str) -> Result<Vec<u8>, ExportError> {
    let mut model = ModelProto::decode(onnx).map_err(|e| ExportError::Decode(e.to_string()))?;
    let graph = model.graph.as_mut().ok_or_else(|| ExportError::Decode("no graph".into()))?;
    // Initializers can be listed as inputs in old-style graphs; the runtime input is the rest.
    let initializers: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let runtime_inputs: Vec<usize> =
        (0..graph.input.len()).filter(|&i| !initializers.contains(&graph.input[i].name)).collect();
    if runtime_inputs.len() != 1 || graph.output.len() != 1 {
        return Err(ExportError::Shape { inputs: runtime_inputs.len(), outputs: graph.output.len() });
    }
    let old_in = std::mem::replace(&mut graph.input[runtime_inputs[0]].name, input.to_string());
    let old_out = std::mem::replace(&mut graph.output[0].name, output.to_string());
    for node in &mut graph.node {
        for name in node.input.iter_mut().chain(node.output.iter_mut()) {
            if *name == old_in {
                *name = input.to_string();
            } else if *name == old_out {
                *name = output.to_string();
            }
        }
    }
    for info in &mut graph.value_info {
        if info.name == old_in {
            info.name = input.to_string();
        } else if info.name == old_out {
            info.name = output.to_string();
        }
    }
    Ok(model.encode_to_vec())
}

/// Runs an ONNX model in tract (f32 input `[n, 1, H, W]`) and returns the `[n, d]` output rows:
/// the trainer's own check that what it exported computes what burn computes.
pub fn run_tract(
    model_bytes: &[u8],
    images: &[Vec<f32>],
    height: usize,
    width: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    use tract_onnx::prelude::*;
    let n = images.len();
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(model_bytes))?
        .with_input_fact(0, f32::fact([n, 1, height, width]).into())?
        .into_optimized()?
        .into_runnable()?;
    let mut flat = Vec::with_capacity(n * height * width);
    for img in images {
        anyhow::ensure!(img.len() == height * width, "image has {} values, expected {}", img.len(), height * width);
        flat.extend_from_slice(img);
    }
    let input = tract_ndarray::Array4::from_shape_vec((n, 1, height, width), flat)?.into_tensor();
    let outputs = model.run(tvec!(input.into()))?;
    let out = outputs[0].to_plain_array_view::<f32>()?;
    let d = out.len() / n.max(1);
    let flat: Vec<f32> = out.iter().copied().collect();
    Ok(flat.chunks(d).map(<[f32]>::to_vec).collect())
}

/// tract as an [`Embedder`]: how the trainer measures its own exported files (f32 and int8)
/// with the same protocol as burn. Runs one image at a time, as the kiosk does.
pub struct TractEmbedder {
    model: std::sync::Arc<tract_onnx::prelude::TypedSimplePlan>,
    height: usize,
    width: usize,
}

impl std::fmt::Debug for TractEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TractEmbedder({}x{})", self.height, self.width)
    }
}

impl TractEmbedder {
    pub fn new(model_bytes: &[u8], height: usize, width: usize) -> anyhow::Result<Self> {
        use tract_onnx::prelude::*;
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(model_bytes))?
            .with_input_fact(0, f32::fact([1, 1, height, width]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(Self { model, height, width })
    }
}

impl autograph_shared::protocol::Embedder for TractEmbedder {
    fn embed(
        &mut self,
        batch: &[autograph_shared::Preprocessed],
    ) -> Result<Vec<Vec<f32>>, autograph_shared::protocol::EmbedError> {
        use tract_onnx::prelude::*;
        let err = |e: String| autograph_shared::protocol::EmbedError(e);
        batch
            .iter()
            .map(|p| {
                let input = tract_ndarray::Array4::from_shape_vec((1, 1, self.height, self.width), p.pixels.clone())
                    .map_err(|e| err(e.to_string()))?
                    .into_tensor();
                let out = self.model.run(tvec!(input.into())).map_err(|e| err(e.to_string()))?;
                let view = out[0].to_plain_array_view::<f32>().map_err(|e| err(e.to_string()))?;
                Ok(view.iter().copied().collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ModelConfig {
        ModelConfig::new().with_height(16).with_width(32).with_channels(vec![4, 8]).with_embedding_dim(16)
    }

    #[test]
    fn exported_graph_has_stable_names_and_matches_burn_in_tract() {
        let device = Device::flex();
        let config = tiny_config();
        let model = config.init(&device).expect("model");
        let onnx = export_onnx(&model, &config, &device).expect("export");
        let proto = ModelProto::decode(onnx.as_slice()).expect("decode");
        let graph = proto.graph.expect("graph");
        assert_eq!(graph.input[0].name, INPUT_NAME);
        assert_eq!(graph.output[0].name, OUTPUT_NAME);

        // Three images of smooth patterns, batch of 3 through the dynamic batch axis.
        let images: Vec<Vec<f32>> =
            (0..3).map(|k| (0..16 * 32).map(|i| (i as f32 * 0.07 + k as f32).sin() * 0.5 + 0.5).collect()).collect();
        let from_tract = run_tract(&onnx, &images, 16, 32).expect("tract");
        let flat: Vec<f32> = images.concat();
        let input = Tensor::<4>::from_data(TensorData::new(flat, [3, 1, 16, 32]), &device);
        let from_burn: Vec<f32> = model.forward(input).into_data().try_to_vec::<f32>().expect("vec");
        let max_diff = from_tract.concat().iter().zip(&from_burn).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_diff <= 1e-4, "burn vs tract max abs diff {max_diff}");
        // Unit vectors: the normalisation is inside the graph.
        for row in &from_tract {
            let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
    }

    #[test]
    fn rename_refuses_garbage() {
        assert!(matches!(rename_io(b"not a protobuf at all \xff\xff", "a", "b"), Err(ExportError::Decode(_))));
    }
}
