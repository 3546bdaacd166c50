//! Post-training static int8 quantization of the embedding network, written as ONNX that
//! tract executes with integer kernels on the kiosks.
//!
//! Why this output form: measured with tract 0.23.9, QDQ graphs (QuantizeLinear /
//! DequantizeLinear around a float Conv) run in float there (simulated int8, slower than f32)
//! and the com.microsoft ops (QGemm, QLinearAdd, ...) are rejected. So convolutions become
//! standard `QLinearConv`, matrix products `QLinearMatMul`, except the embedding head, a
//! float MatMul over int8 weights, so that the embedding is not rounded to 8 bits (see
//! [`embedding_head`]); `MaxPool` runs directly on the 8-bit tensors (max commutes with
//! the monotonic quantization map) and everything tract has no integer kernel for (global
//! average pooling, the bias add after the MatMul, the L2 normalisation) stays in float
//! behind a `DequantizeLinear`.
//!
//! Pipeline of [`quantize`]: decode the ModelProto, canonicalize it (Constant nodes to
//! initializers, BatchNormalization folded into the preceding Conv, Gemm split into
//! MatMul + Add, cross-layer equalization for the per-tensor form), calibrate activation
//! ranges by running the canonical f32 model in tract with the relevant intermediate tensors
//! exposed as outputs, build one int8 graph per (weight granularity, calibration method) and
//! keep the best by mean cosine to the f32 embeddings on held-out calibration images.
//!
//! Numerics: weights are symmetric int8 (zero point 0, range ±127 so no kernel can hit the
//! asymmetric -128 corner), per tensor or per output channel (see [`WeightGranularity`] for
//! why per-tensor is preferred with tract), biases int32 with scale
//! `input_scale * weight_scale`, activations asymmetric 8-bit (int8 by default: tract's
//! integer convolution works on i8 internally, u8 inputs cost an extra shift). A ReLU after a
//! Conv is folded into the QLinearConv output range: with zero point at the type minimum the
//! requantization clamp *is* the ReLU.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use prost::Message;
use serde::Serialize;
use thiserror::Error;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
};

/// Lowest default-domain opset the int8 graph needs (QLinearConv/QLinearMatMul: 10, 8-bit
/// MaxPool: 12, per-axis Quantize/DequantizeLinear: 13); higher source opsets are kept.
const MIN_OPSET: i64 = 13;

/// Everything that can go wrong; input problems are reported, never panicked on.
#[derive(Debug, Error)]
pub enum QuantizeError {
    #[error("the model is not a decodable ONNX protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("invalid ONNX model: {0}")]
    InvalidModel(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("invalid quantization options: {0}")]
    InvalidOptions(String),
    #[error("the calibration set is empty")]
    EmptyCalibration,
    #[error("calibration image {index} has {actual} values, expected {expected} (H*W)")]
    ImageSize { index: usize, expected: usize, actual: usize },
    #[error("calibration image {index} contains a non-finite value")]
    NonFiniteImage { index: usize },
    #[error("the model has no Conv or MatMul with constant f32 weights to quantize")]
    NothingToQuantize,
    #[error("tract could not {stage}: {message}")]
    Tract { stage: &'static str, message: String },
}

type Result<T, E = QuantizeError> = std::result::Result<T, E>;

/// How activation ranges are derived from the calibration tensors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum CalibrationMethod {
    /// Observed minimum and maximum: no clipping, coarser steps when there are outliers.
    MinMax,
    /// Clip both tails at this percentile (e.g. 99.99): finer steps, outliers saturate.
    Percentile(f64),
    /// The clipping range with the least squared quantize-dequantize error over the
    /// histogrammed values (balances rounding of the bulk against clipping of the tails).
    Mse,
}

/// 8-bit type used for activations (weights are always i8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActivationType {
    /// tract's integer conv works in i8, so this avoids a u8 -> i8 shift per layer.
    I8,
    /// The ONNX-runtime-style default; kept for comparison and other runtimes.
    U8,
}

impl ActivationType {
    fn bounds(self) -> (i32, i32) {
        match self {
            ActivationType::I8 => (-128, 127),
            ActivationType::U8 => (0, 255),
        }
    }
}

/// Granularity of the int8 weight scales.
///
/// Why it matters (measured, tract 0.23.9): tract fuses the requantization into its int8
/// matmul kernel only when the combined `x_scale * w_scale / y_scale` is one number. With
/// per-channel weight scales it runs as separate element-wise passes over the i32
/// accumulators (`Scale`, zero point `Add`, `Min`, `Max`, `Cast`) and the int8 model ends up
/// several times *slower* than f32; with per-tensor scales the whole conv is one kernel.
/// Per-tensor weights are made almost as accurate as per-channel by cross-layer
/// equalization (see [`quantize`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WeightGranularity {
    /// One scale per output channel: most accurate, slow requantization in tract.
    PerChannel,
    /// One scale per tensor, after cross-layer equalization: fused, fast in tract.
    PerTensor,
    /// Per-tensor when its worst held-out image reaches `auto_min_cosine`, otherwise the
    /// more accurate of the two.
    Auto,
}

/// Knobs of [`quantize`]; the defaults are what the bundle exporter uses.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Candidate calibration methods; the best on the held-out images wins.
    pub methods: Vec<CalibrationMethod>,
    /// Fraction of the calibration images kept aside to score the candidates.
    pub holdout_fraction: f32,
    pub activation_type: ActivationType,
    /// Run MaxPool on the 8-bit tensors (tract accepts it) instead of in float.
    pub quantized_max_pool: bool,
    pub weight_granularity: WeightGranularity,
    /// Accuracy floor for [`WeightGranularity::Auto`] to settle for the fast per-tensor form:
    /// the lowest cosine to f32 of any held-out image. The bundle check demands 0.99 per image;
    /// the default keeps a margin because the held-out images are a sample.
    pub auto_min_cosine: f64,
    /// Histogram resolution for the percentile method.
    pub histogram_bins: usize,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            methods: vec![
                CalibrationMethod::MinMax,
                CalibrationMethod::Percentile(99.99),
                CalibrationMethod::Percentile(99.999),
                CalibrationMethod::Mse,
            ],
            holdout_fraction: 0.25,
            activation_type: ActivationType::I8,
            quantized_max_pool: true,
            weight_granularity: WeightGranularity::Auto,
            auto_min_cosine: 0.992,
            histogram_bins: 2048,
        }
    }
}

/// The int8 ONNX model and how it was obtained.
#[derive(Debug, Clone)]
pub struct QuantizedModel {
    pub onnx: Vec<u8>,
    pub report: QuantizeReport,
}

/// What the bundle manifest records about the quantization.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    pub method: CalibrationMethod,
    /// `PerChannel` or `PerTensor` (never `Auto`).
    pub weight_granularity: WeightGranularity,
    pub activation_type: ActivationType,
    /// Conv/MatMul pairs rescaled by cross-layer equalization (per-tensor form only).
    pub equalized_pairs: usize,
    /// Every candidate method with its held-out cosine scores.
    pub candidates: Vec<CandidateScore>,
    /// Mean cosine(int8, f32) of the chosen model on the held-out images.
    pub mean_cosine: f64,
    pub min_cosine: f64,
    pub calibration_images: usize,
    pub holdout_images: usize,
    /// False when the set was too small to hold images out (scores are then optimistic).
    pub holdout_disjoint: bool,
    pub layers: Vec<LayerReport>,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    /// `int8_bytes / f32_bytes`.
    pub size_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateScore {
    pub method: CalibrationMethod,
    pub weight_granularity: WeightGranularity,
    pub mean_cosine: f64,
    pub min_cosine: f64,
}

/// One quantized Conv or MatMul.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Name of the f32 node (or its output when unnamed).
    pub node: String,
    /// `QLinearConv`, `QLinearMatMul`, or `MatMul (int8 weights)` (the embedding head).
    pub op: String,
    /// `None` for the embedding head, whose input and output stay float.
    pub input: Option<TensorQuant>,
    pub output: Option<TensorQuant>,
    pub relu_fused: bool,
    pub weight_channels: usize,
    pub weight_scale_min: f32,
    pub weight_scale_max: f32,
}

/// Calibrated range and resulting affine parameters of one activation tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorQuant {
    pub tensor: String,
    pub min: f32,
    pub max: f32,
    pub scale: f32,
    pub zero_point: i32,
}

/// Single-thread median latency of one inference (batch 1) in tract.
#[derive(Debug, Clone, Copy)]
pub struct LatencyComparison {
    pub f32_median: Duration,
    pub int8_median: Duration,
    pub runs: usize,
}

impl LatencyComparison {
    /// f32 time over int8 time (> 1 means int8 is faster).
    pub fn speedup(&self) -> f64 {
        self.f32_median.as_secs_f64() / self.int8_median.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Quantizes the f32 embedding model to int8 (see the module docs for the why).
///
/// `calibration` holds preprocessed images of `input_hw.0 * input_hw.1` floats each, fed as
/// `[1, 1, H, W]`; part of them (`options.holdout_fraction`) only scores the candidate
/// calibration methods.
pub fn quantize(
    f32_model: &[u8],
    calibration: &[Vec<f32>],
    input_hw: (usize, usize),
    options: &QuantizeOptions,
) -> Result<QuantizedModel> {
    validate_options(options)?;
    let original = decode_model(f32_model)?;
    check_io(&original, input_hw)?;
    validate_images(calibration, input_hw)?;

    let (calib, holdout, holdout_disjoint) = split_holdout(calibration, options.holdout_fraction);
    let reference = engine::Runner::new(&original, input_hw, None)?;
    let expected = holdout.iter().map(|image| Ok(reference.run(image)?.swap_remove(0))).collect::<Result<Vec<_>>>()?;

    let granularities: &[WeightGranularity] = match options.weight_granularity {
        WeightGranularity::Auto => &[WeightGranularity::PerTensor, WeightGranularity::PerChannel],
        WeightGranularity::PerTensor => &[WeightGranularity::PerTensor],
        WeightGranularity::PerChannel => &[WeightGranularity::PerChannel],
    };
    // Best candidate per granularity, in `granularities` order.
    let mut finalists: Vec<Candidate> = Vec::new();
    let mut candidates = Vec::new();
    for &granularity in granularities {
        // Equalization only pays off when one scale must serve all channels; left out of the
        // per-channel form it keeps that form's activation ranges untouched.
        let equalize = granularity == WeightGranularity::PerTensor;
        let (canonical, equalized_pairs) = canonicalize(&original, equalize)?;
        let plan = plan(canonical_graph(&canonical)?)?;
        let tensors: Vec<String> = plan.calibrate.iter().cloned().collect();
        let ranges = calibrate(&canonical, &tensors, &calib, input_hw, options)?;
        let mut best: Option<Candidate> = None;
        for (method, method_ranges) in ranges {
            let (model, layers) = emit(&original, &canonical, &plan, &method_ranges, options, granularity)?;
            let runner = engine::Runner::new(&model, input_hw, None)?;
            let mut cosines = Vec::with_capacity(holdout.len());
            for (image, reference) in holdout.iter().zip(&expected) {
                let output = runner.run(image)?.swap_remove(0);
                cosines.push(cosine(&output, reference));
            }
            let score = CandidateScore {
                method,
                weight_granularity: granularity,
                mean_cosine: cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
                min_cosine: cosines.iter().copied().fold(f64::INFINITY, f64::min),
            };
            log::info!(
                "int8 {:?} weights, {:?} calibration: mean cosine {:.5}, min {:.5}",
                granularity,
                method,
                score.mean_cosine,
                score.min_cosine
            );
            candidates.push(score.clone());
            if best.as_ref().is_none_or(|b| score.mean_cosine > b.score.mean_cosine) {
                let onnx = model.encode_to_vec();
                best = Some(Candidate { onnx, layers, score, equalized_pairs });
            }
        }
        finalists.extend(best);
    }
    let fast_enough = |c: &Candidate| {
        c.score.weight_granularity == WeightGranularity::PerTensor && c.score.min_cosine >= options.auto_min_cosine
    };
    let chosen = match finalists.iter().position(fast_enough) {
        Some(index) => finalists.swap_remove(index),
        None => finalists
            .into_iter()
            .max_by(|a, b| a.score.mean_cosine.total_cmp(&b.score.mean_cosine))
            .ok_or_else(|| QuantizeError::InvalidOptions("no calibration method".into()))?,
    };
    let Candidate { onnx, layers, score, equalized_pairs } = chosen;
    let report = QuantizeReport {
        method: score.method,
        weight_granularity: score.weight_granularity,
        activation_type: options.activation_type,
        equalized_pairs,
        candidates,
        mean_cosine: score.mean_cosine,
        min_cosine: score.min_cosine,
        calibration_images: calib.len(),
        holdout_images: holdout.len(),
        holdout_disjoint,
        layers,
        f32_bytes: f32_model.len(),
        int8_bytes: onnx.len(),
        size_ratio: onnx.len() as f64 / f32_model.len().max(1) as f64,
    };
    Ok(QuantizedModel { onnx, report })
}

/// One scored int8 model.
struct Candidate {
    onnx: Vec<u8>,
    layers: Vec<LayerReport>,
    score: CandidateScore,
    equalized_pairs: usize,
}

/// Lists what tract actually executes for a model after `into_optimized()`, one line per
/// node in evaluation order (constants skipped): `op name -> output datum types | op info`.
///
/// Why: the only trustworthy proof that the int8 model runs integer kernels is tract's
/// optimized graph (e.g. `OptMatMul` with an `i32` kernel fed by an i8 `Im2col`).
pub fn describe_tract_ops(model_bytes: &[u8]) -> Result<Vec<String>> {
    engine::describe(model_bytes)
}

/// Median single-thread latency of tract on the f32 and the int8 model (batch 1, `runs`
/// timed runs after a warm-up). Informative only: wall-clock time is never asserted.
pub fn tract_latency_compare(
    f32_model: &[u8],
    int8_model: &[u8],
    input_hw: (usize, usize),
    runs: usize,
) -> Result<LatencyComparison> {
    let runs = runs.max(1);
    let image = synthetic_image(input_hw);
    let f32_runner = engine::Runner::new(&decode_model(f32_model)?, input_hw, None)?;
    let int8_runner = engine::Runner::new(&decode_model(int8_model)?, input_hw, None)?;
    Ok(LatencyComparison {
        f32_median: f32_runner.median_latency(&image, runs)?,
        int8_median: int8_runner.median_latency(&image, runs)?,
        runs,
    })
}

// ---------------------------------------------------------------------------------------
// Validation and helpers on the protobuf.

fn validate_options(options: &QuantizeOptions) -> Result<()> {
    if options.methods.is_empty() {
        return Err(QuantizeError::InvalidOptions("no calibration method given".into()));
    }
    for method in &options.methods {
        if let CalibrationMethod::Percentile(p) = method
            && !(*p > 50.0 && *p <= 100.0)
        {
            return Err(QuantizeError::InvalidOptions(format!("percentile {p} is outside (50, 100]")));
        }
    }
    if !(0.0..1.0).contains(&options.holdout_fraction) {
        return Err(QuantizeError::InvalidOptions(format!(
            "holdout fraction {} is outside [0, 1)",
            options.holdout_fraction
        )));
    }
    if options.histogram_bins < 16 {
        return Err(QuantizeError::InvalidOptions("at least 16 histogram bins".into()));
    }
    Ok(())
}

fn decode_model(bytes: &[u8]) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(QuantizeError::InvalidModel("empty model file".into()));
    }
    let model = ModelProto::decode(bytes)?;
    let graph = model.graph.as_ref().ok_or_else(|| QuantizeError::InvalidModel("no graph".into()))?;
    if graph.node.is_empty() {
        return Err(QuantizeError::InvalidModel("the graph has no nodes".into()));
    }
    Ok(model)
}

fn canonical_graph(model: &ModelProto) -> Result<&GraphProto> {
    model.graph.as_ref().ok_or_else(|| QuantizeError::InvalidModel("no graph".into()))
}

fn initializer_names(graph: &GraphProto) -> HashSet<&str> {
    graph.initializer.iter().map(|t| t.name.as_str()).collect()
}

/// The graph inputs that are fed at run time (older exporters also list initializers).
fn runtime_inputs(graph: &GraphProto) -> Vec<&tract_onnx::pb::ValueInfoProto> {
    let inits = initializer_names(graph);
    graph.input.iter().filter(|input| !inits.contains(input.name.as_str())).collect()
}

/// One float input `[N, 1, H, W]` and one output: the embedding network's contract.
fn check_io(model: &ModelProto, (h, w): (usize, usize)) -> Result<()> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto;
    let graph = canonical_graph(model)?;
    let inputs = runtime_inputs(graph);
    let [input] = inputs.as_slice() else {
        return Err(QuantizeError::Unsupported(format!("expected one model input, found {}", inputs.len())));
    };
    if graph.output.len() != 1 {
        return Err(QuantizeError::Unsupported(format!("expected one model output, found {}", graph.output.len())));
    }
    if h == 0 || w == 0 {
        return Err(QuantizeError::InvalidOptions(format!("input size {h}x{w}")));
    }
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Ok(()); // untyped input: tract gets the shape from us
    };
    if tensor.elem_type != DataType::Float as i32 {
        return Err(QuantizeError::Unsupported(format!("input `{}` is not float32", input.name)));
    }
    if let Some(shape) = &tensor.shape {
        if shape.dim.len() != 4 {
            return Err(QuantizeError::Unsupported(format!(
                "input `{}` has rank {}, expected [N, 1, H, W]",
                input.name,
                shape.dim.len()
            )));
        }
        for (axis, expected) in [(1, 1), (2, h), (3, w)] {
            if let Some(Value::DimValue(actual)) = shape.dim[axis].value
                && actual != expected as i64
            {
                return Err(QuantizeError::Unsupported(format!(
                    "input `{}` axis {axis} is {actual}, expected {expected}",
                    input.name
                )));
            }
        }
    }
    Ok(())
}

fn validate_images(images: &[Vec<f32>], (h, w): (usize, usize)) -> Result<()> {
    if images.is_empty() {
        return Err(QuantizeError::EmptyCalibration);
    }
    for (index, image) in images.iter().enumerate() {
        if image.len() != h * w {
            return Err(QuantizeError::ImageSize { index, expected: h * w, actual: image.len() });
        }
        if image.iter().any(|v| !v.is_finite()) {
            return Err(QuantizeError::NonFiniteImage { index });
        }
    }
    Ok(())
}

/// Interleaved split (every k-th image held out) so that ordered sets (by writer, by
/// session) are represented on both sides.
fn split_holdout(images: &[Vec<f32>], fraction: f32) -> (Vec<&[f32]>, Vec<&[f32]>, bool) {
    let all: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let wanted = (images.len() as f32 * fraction).round() as usize;
    if images.len() < 2 || wanted == 0 {
        return (all.clone(), all, false);
    }
    let step = (images.len() / wanted.min(images.len() / 2).max(1)).max(2);
    let (mut calib, mut holdout) = (Vec::new(), Vec::new());
    for (i, image) in all.into_iter().enumerate() {
        if i % step == step - 1 {
            holdout.push(image);
        } else {
            calib.push(image);
        }
    }
    (calib, holdout, true)
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

#[cfg(test)]
fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
fn float_attr(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: value, ..Default::default() }
}

fn make_node(
    op: &str,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto { op_type: op.into(), name, input: inputs, output: outputs, attribute, ..Default::default() }
}

fn raw_tensor(name: String, data_type: DataType, dims: &[i64], raw_data: Vec<u8>) -> TensorProto {
    TensorProto { name, data_type: data_type as i32, dims: dims.to_vec(), raw_data, ..Default::default() }
}

fn f32_tensor(name: String, dims: &[i64], data: &[f32]) -> TensorProto {
    raw_tensor(name, DataType::Float, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn i8_tensor(name: String, dims: &[i64], data: &[i8]) -> TensorProto {
    raw_tensor(name, DataType::Int8, dims, data.iter().map(|v| *v as u8).collect())
}

fn i32_tensor(name: String, dims: &[i64], data: &[i32]) -> TensorProto {
    raw_tensor(name, DataType::Int32, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Zero point tensor in the activation type.
fn zero_point_tensor(name: String, ty: ActivationType, dims: &[i64], value: i32) -> TensorProto {
    let count = dims.iter().product::<i64>().max(1) as usize;
    match ty {
        ActivationType::I8 => i8_tensor(name, dims, &vec![value as i8; count]),
        ActivationType::U8 => raw_tensor(name, DataType::Uint8, dims, vec![value as u8; count]),
    }
}

#[cfg(test)]
fn i64_tensor(name: String, dims: &[i64], data: &[i64]) -> TensorProto {
    raw_tensor(name, DataType::Int64, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Element count from dims, rejecting negative or overflowing shapes.
fn element_count(tensor: &TensorProto) -> Result<usize> {
    tensor.dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| QuantizeError::InvalidModel(format!("tensor `{}` has dims {:?}", tensor.name, tensor.dims)))
    })
}

/// Decodes a float32 initializer (raw little-endian or `float_data`).
fn tensor_f32(tensor: &TensorProto) -> Result<Vec<f32>> {
    if tensor.data_location == Some(1) || !tensor.external_data.is_empty() {
        return Err(QuantizeError::Unsupported(format!("initializer `{}` uses external data", tensor.name)));
    }
    if tensor.data_type != DataType::Float as i32 {
        return Err(QuantizeError::Unsupported(format!(
            "initializer `{}` has ONNX data type {}, expected float32",
            tensor.name, tensor.data_type
        )));
    }
    let count = element_count(tensor)?;
    let values: Vec<f32> = if !tensor.raw_data.is_empty() {
        tensor.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    } else {
        tensor.float_data.clone()
    };
    if values.len() != count || (!tensor.raw_data.is_empty() && tensor.raw_data.len() != count * 4) {
        return Err(QuantizeError::InvalidModel(format!(
            "initializer `{}` holds {} values for dims {:?}",
            tensor.name,
            values.len(),
            tensor.dims
        )));
    }
    Ok(values)
}

/// Hands out tensor/node names that collide with nothing in the graph.
struct NameGen {
    used: HashSet<String>,
}

impl NameGen {
    fn new(graph: &GraphProto) -> Self {
        let mut used = HashSet::new();
        for node in &graph.node {
            used.insert(node.name.clone());
            used.extend(node.input.iter().cloned());
            used.extend(node.output.iter().cloned());
        }
        used.extend(graph.initializer.iter().map(|t| t.name.clone()));
        used.extend(graph.input.iter().map(|v| v.name.clone()));
        used.extend(graph.output.iter().map(|v| v.name.clone()));
        Self { used }
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut counter = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{counter}");
            counter += 1;
        }
        self.used.insert(name.clone());
        name
    }
}

fn node_label(node: &NodeProto) -> String {
    if node.name.is_empty() { node.output.first().cloned().unwrap_or_default() } else { node.name.clone() }
}

// ---------------------------------------------------------------------------------------
// Canonicalization: the f32 graph the calibration runs on and the emitter reads.

/// Constant nodes to initializers, BatchNormalization folded into Conv, Gemm split into
/// MatMul + Add and, if asked, cross-layer equalization. The result computes the same
/// function as the input, in f32. Returns the number of equalized layer pairs.
fn canonicalize(model: &ModelProto, equalize: bool) -> Result<(ModelProto, usize)> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or_else(|| QuantizeError::InvalidModel("no graph".into()))?;
    // Intermediate type hints would go stale once tensors change type or disappear.
    graph.value_info.clear();
    constants_to_initializers(graph);
    fold_batch_norms(graph)?;
    split_gemms(graph)?;
    let pairs = if equalize { equalize_cross_layer(graph)? } else { 0 };
    Ok((model, pairs))
}

fn constants_to_initializers(graph: &mut GraphProto) {
    let mut kept = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let value = (node.op_type == "Constant" && node.output.len() == 1)
            .then(|| attr(&node, "value").and_then(|a| a.t.clone()))
            .flatten();
        match value {
            Some(mut tensor) => {
                tensor.name = node.output[0].clone();
                graph.initializer.push(tensor);
            }
            None => kept.push(node),
        }
    }
    graph.node = kept;
}

fn consumers(graph: &GraphProto) -> HashMap<&str, Vec<usize>> {
    let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            map.entry(input.as_str()).or_default().push(index);
        }
    }
    map
}

fn is_graph_output(graph: &GraphProto, name: &str) -> bool {
    graph.output.iter().any(|o| o.name == name)
}

/// Folds `Conv -> BatchNormalization` (inference form) into the Conv weights and bias, which
/// is what burn's Conv2d + BatchNorm export looks like.
fn fold_batch_norms(graph: &mut GraphProto) -> Result<()> {
    struct Fold {
        conv: usize,
        bn: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    }
    let mut folds = Vec::new();
    {
        let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let producers: HashMap<&str, usize> =
            graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
        let users = consumers(graph);
        for (bn_index, bn) in graph.node.iter().enumerate() {
            let single_output = bn.output.iter().skip(1).all(String::is_empty);
            if bn.op_type != "BatchNormalization" || bn.input.len() != 5 || !single_output {
                continue;
            }
            let Some(&conv_index) = producers.get(bn.input[0].as_str()) else { continue };
            let conv = &graph.node[conv_index];
            let exclusive =
                users.get(bn.input[0].as_str()).is_some_and(|u| u.len() == 1) && !is_graph_output(graph, &bn.input[0]);
            if conv.op_type != "Conv" || conv.output.len() != 1 || !exclusive {
                continue;
            }
            let Some(weight) = conv.input.get(1).and_then(|w| inits.get(w.as_str())) else {
                continue;
            };
            let params: Option<Vec<&TensorProto>> =
                bn.input[1..].iter().map(|name| inits.get(name.as_str()).copied()).collect();
            let Some(params) = params else { continue };
            let mut weight_values = tensor_f32(weight)?;
            let channels = weight.dims.first().copied().unwrap_or(0).max(0) as usize;
            let [gamma, beta, mean, var] = [0, 1, 2, 3].map(|i| tensor_f32(params[i]));
            let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
            if channels == 0
                || [&gamma, &beta, &mean, &var].iter().any(|p| p.len() != channels)
                || !weight_values.len().is_multiple_of(channels)
            {
                return Err(QuantizeError::InvalidModel(format!(
                    "BatchNormalization `{}` does not match Conv `{}` channels",
                    node_label(bn),
                    node_label(conv)
                )));
            }
            let mut bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
                Some(name) => match inits.get(name.as_str()) {
                    Some(bias) => tensor_f32(bias)?,
                    None => continue, // computed bias: leave the pair in float
                },
                None => vec![0.0; channels],
            };
            if bias.len() != channels {
                return Err(QuantizeError::InvalidModel(format!(
                    "Conv `{}` bias has {} values for {channels} channels",
                    node_label(conv),
                    bias.len()
                )));
            }
            let epsilon = attr_float(bn, "epsilon", 1e-5);
            let per_channel = weight_values.len() / channels;
            for c in 0..channels {
                let factor = gamma[c] / (var[c] + epsilon).sqrt();
                for w in &mut weight_values[c * per_channel..(c + 1) * per_channel] {
                    *w *= factor;
                }
                bias[c] = (bias[c] - mean[c]) * factor + beta[c];
            }
            folds.push(Fold { conv: conv_index, bn: bn_index, weight: weight_values, bias });
        }
    }
    let mut names = NameGen::new(graph);
    let mut removed = HashSet::new();
    for fold in folds {
        let conv_label = node_label(&graph.node[fold.conv]);
        let weight_dims = graph
            .initializer
            .iter()
            .find(|t| t.name == graph.node[fold.conv].input[1])
            .map(|t| t.dims.clone())
            .unwrap_or_default();
        let weight_name = names.fresh(&format!("{conv_label}.bn_folded.weight"));
        let bias_name = names.fresh(&format!("{conv_label}.bn_folded.bias"));
        graph.initializer.push(f32_tensor(weight_name.clone(), &weight_dims, &fold.weight));
        graph.initializer.push(f32_tensor(bias_name.clone(), &[fold.bias.len() as i64], &fold.bias));
        let bn_output = graph.node[fold.bn].output[0].clone();
        let conv = &mut graph.node[fold.conv];
        conv.input[1] = weight_name;
        conv.input.truncate(2);
        conv.input.push(bias_name);
        conv.output[0] = bn_output;
        removed.insert(fold.bn);
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !removed.contains(&(index - 1))
    });
    prune_initializers(graph);
    Ok(())
}

/// `Gemm(A, B, C)` with constant B and `transA = 0` becomes `MatMul(A, alpha*B') + beta*C`, so
/// that a single quantized-MatMul path covers both export styles.
fn split_gemms(graph: &mut GraphProto) -> Result<()> {
    let mut names = NameGen::new(graph);
    let nodes = std::mem::take(&mut graph.node);
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        if node.op_type != "Gemm" || attr_int(&node, "transA", 0) != 0 || node.output.len() != 1 {
            out.push(node);
            continue;
        }
        let find = |name: &String| graph.initializer.iter().find(|t| &t.name == name).cloned();
        let b = node.input.get(1).and_then(find);
        let c_name = node.input.get(2).filter(|c| !c.is_empty()).cloned();
        let c = c_name.as_ref().and_then(find);
        let beta = attr_float(&node, "beta", 1.0);
        let (Some(b), true) = (b, c_name.is_none() || c.is_some() || beta == 1.0) else {
            out.push(node);
            continue;
        };
        if b.dims.len() != 2 {
            out.push(node);
            continue;
        }
        let alpha = attr_float(&node, "alpha", 1.0);
        let values: Vec<f32> = tensor_f32(&b)?.iter().map(|v| v * alpha).collect();
        let (rows, cols) = (b.dims[0].max(0) as usize, b.dims[1].max(0) as usize);
        let (k, n, matrix) = if attr_int(&node, "transB", 0) != 0 {
            (cols, rows, transpose(&values, rows, cols))
        } else {
            (rows, cols, values)
        };
        let label = node_label(&node);
        let weight = names.fresh(&format!("{label}.matmul.weight"));
        graph.initializer.push(f32_tensor(weight.clone(), &[k as i64, n as i64], &matrix));
        let output = node.output[0].clone();
        let Some(c_name) = c_name else {
            out.push(make_node("MatMul", label, vec![node.input[0].clone(), weight], vec![output], vec![]));
            continue;
        };
        let bias = match c {
            Some(c) if beta != 1.0 => {
                let scaled: Vec<f32> = tensor_f32(&c)?.iter().map(|v| v * beta).collect();
                let name = names.fresh(&format!("{label}.bias"));
                graph.initializer.push(f32_tensor(name.clone(), &c.dims, &scaled));
                name
            }
            _ => c_name,
        };
        let product = names.fresh(&format!("{output}_matmul"));
        out.push(make_node(
            "MatMul",
            names.fresh(&format!("{label}_matmul")),
            vec![node.input[0].clone(), weight],
            vec![product.clone()],
            vec![],
        ));
        out.push(make_node("Add", names.fresh(&format!("{label}_bias")), vec![product, bias], vec![output], vec![]));
    }
    graph.node = out;
    prune_initializers(graph);
    Ok(())
}

/// A layer whose output channels feed, through channel-wise positive-homogeneous ops only,
/// the input channels of the next layer.
struct EqualizationPair {
    first_weight: String,
    first_bias: Option<String>,
    /// Conv `[O, C, ...]` or MatMul `[C, N]`.
    second_weight: String,
    second_is_conv: bool,
}

/// Sweeps of the pairwise equalization; a conv is second of one pair and first of the next,
/// so a few passes let the scales settle.
const EQUALIZATION_SWEEPS: usize = 4;

/// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"): for each pair,
/// output channel `c` of the first layer is divided by `s_c` and input channel `c` of the
/// second multiplied by it, with `s_c = sqrt(r1_c / r2_c)` equalizing both weight ranges.
/// Exact in f32 because ReLU, MaxPool, global average pooling and flattening commute with a
/// positive per-channel scale; it lets one per-tensor scale fit every channel.
fn equalize_cross_layer(graph: &mut GraphProto) -> Result<usize> {
    let pairs = equalization_pairs(graph);
    if pairs.is_empty() {
        return Ok(0);
    }
    let mut weights: HashMap<String, Vec<f32>> = HashMap::new();
    let mut dims: HashMap<String, Vec<i64>> = HashMap::new();
    for tensor in &graph.initializer {
        let wanted = pairs.iter().any(|p| {
            p.first_weight == tensor.name
                || p.second_weight == tensor.name
                || p.first_bias.as_ref() == Some(&tensor.name)
        });
        if wanted {
            weights.insert(tensor.name.clone(), tensor_f32(tensor)?);
            dims.insert(tensor.name.clone(), tensor.dims.clone());
        }
    }
    let missing = |name: &str| QuantizeError::InvalidModel(format!("missing initializer `{name}`"));
    for _ in 0..EQUALIZATION_SWEEPS {
        for pair in &pairs {
            let first = weights.get(&pair.first_weight).ok_or_else(|| missing(&pair.first_weight))?;
            let second = weights.get(&pair.second_weight).ok_or_else(|| missing(&pair.second_weight))?;
            let spatial = second_dims_len(&dims, &pair.second_weight);
            let channels = dims.get(&pair.first_weight).and_then(|d| d.first()).copied().unwrap_or(0) as usize;
            let divides = |len: usize| len >= channels && len.is_multiple_of(channels);
            if channels == 0 || !divides(first.len()) || !divides(second.len()) {
                continue;
            }
            let per_first = first.len() / channels;
            let max_abs = |it: &mut dyn Iterator<Item = f32>| it.fold(0.0f32, |m, v| m.max(v.abs()));
            let r1: Vec<f32> = first.chunks(per_first).map(|row| max_abs(&mut row.iter().copied())).collect();
            let r2: Vec<f32> = if pair.second_is_conv {
                // [O, C, spatial...]: input channel c is a strided slab.
                let outputs = second.len() / (channels * spatial);
                (0..channels)
                    .map(|c| {
                        max_abs(&mut (0..outputs).flat_map(|o| {
                            let start = (o * channels + c) * spatial;
                            second[start..start + spatial].iter().copied()
                        }))
                    })
                    .collect()
            } else {
                // [C, N]: input channel c is row c.
                second.chunks(second.len() / channels).map(|row| max_abs(&mut row.iter().copied())).collect()
            };
            let scales: Vec<f32> = r1
                .iter()
                .zip(&r2)
                .map(|(a, b)| {
                    let s = (a / b).sqrt();
                    if *a > 0.0 && *b > 0.0 && s.is_finite() { s } else { 1.0 }
                })
                .collect();
            let first = weights.get_mut(&pair.first_weight).ok_or_else(|| missing(&pair.first_weight))?;
            for (row, s) in first.chunks_mut(per_first).zip(&scales) {
                row.iter_mut().for_each(|v| *v /= s);
            }
            if let Some(bias) = &pair.first_bias {
                let bias = weights.get_mut(bias).ok_or_else(|| missing(bias))?;
                bias.iter_mut().zip(&scales).for_each(|(v, s)| *v /= s);
            }
            let second = weights.get_mut(&pair.second_weight).ok_or_else(|| missing(&pair.second_weight))?;
            if pair.second_is_conv {
                for (i, v) in second.iter_mut().enumerate() {
                    *v *= scales[(i / spatial) % channels];
                }
            } else {
                let per_row = second.len() / channels;
                for (row, s) in second.chunks_mut(per_row).zip(&scales) {
                    row.iter_mut().for_each(|v| *v *= s);
                }
            }
        }
    }
    for tensor in &mut graph.initializer {
        if let Some(values) = weights.remove(&tensor.name) {
            let dims = tensor.dims.clone();
            *tensor = f32_tensor(tensor.name.clone(), &dims, &values);
        }
    }
    Ok(pairs.len())
}

/// Product of the spatial dims of a conv weight (1 when absent).
fn second_dims_len(dims: &HashMap<String, Vec<i64>>, name: &str) -> usize {
    dims.get(name).map_or(1, |d| d.iter().skip(2).product::<i64>().max(1) as usize)
}

fn equalization_pairs(graph: &GraphProto) -> Vec<EqualizationPair> {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let users = consumers(graph);
    // Only weights read by this one node may be rescaled.
    let private_f32 = |name: &str, rank: Option<usize>| {
        users.get(name).is_some_and(|u| u.len() == 1)
            && !is_graph_output(graph, name)
            && inits
                .get(name)
                .is_some_and(|t| t.data_type == DataType::Float as i32 && rank.is_none_or(|r| t.dims.len() == r))
    };
    let plain_conv = |node: &NodeProto| {
        node.op_type == "Conv"
            && node.output.len() == 1
            && attr_int(node, "group", 1) == 1
            && node.input.get(1).is_some_and(|w| private_f32(w, Some(4)))
            && node.input.get(2).is_none_or(|b| b.is_empty() || private_f32(b, Some(1)))
    };
    let mut pairs = Vec::new();
    for node in &graph.node {
        if !plain_conv(node) {
            continue;
        }
        let channels = inits.get(node.input[1].as_str()).map_or(0, |t| t.dims[0]);
        let (mut tensor, mut pooled, mut flattened) = (node.output[0].as_str(), false, false);
        loop {
            // Shape readers (burn's dynamic Reshape) only see dims, which rescaling keeps.
            let value_users: Vec<usize> = users
                .get(tensor)
                .map(|u| u.iter().copied().filter(|&i| graph.node[i].op_type != "Shape").collect())
                .unwrap_or_default();
            let next = match value_users.as_slice() {
                [only] if !is_graph_output(graph, tensor) => &graph.node[*only],
                _ => break,
            };
            if next.input.first().map(String::as_str) != Some(tensor) {
                break;
            }
            let single = next.output.len() == 1;
            match next.op_type.as_str() {
                "Relu" | "MaxPool" if single && !flattened => {}
                "GlobalAveragePool" if single && !flattened => pooled = true,
                "Reshape" if single && pooled => flattened = true,
                "Flatten" if single && pooled && attr_int(next, "axis", 1) == 1 => flattened = true,
                "Conv" if !pooled && plain_conv(next) => {
                    let w = next.input[1].as_str();
                    if inits.get(w).is_some_and(|t| t.dims[1] == channels) {
                        pairs.push(EqualizationPair {
                            first_weight: node.input[1].clone(),
                            first_bias: node.input.get(2).filter(|b| !b.is_empty()).cloned(),
                            second_weight: w.to_string(),
                            second_is_conv: true,
                        });
                    }
                    break;
                }
                "MatMul" if flattened && next.input.get(1).is_some_and(|b| private_f32(b, Some(2))) => {
                    let b = next.input[1].as_str();
                    if inits.get(b).is_some_and(|t| t.dims[0] == channels) {
                        pairs.push(EqualizationPair {
                            first_weight: node.input[1].clone(),
                            first_bias: node.input.get(2).filter(|b| !b.is_empty()).cloned(),
                            second_weight: b.to_string(),
                            second_is_conv: false,
                        });
                    }
                    break;
                }
                _ => break,
            }
            tensor = next.output[0].as_str();
        }
    }
    pairs
}

/// Drops initializers no node reads any more (folded weights, BN statistics), and their
/// entries in `graph.input` (old-IR graphs list initializers as inputs too).
fn prune_initializers(graph: &mut GraphProto) {
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    let removed: HashSet<String> =
        graph.initializer.iter().filter(|t| !used.contains(&t.name)).map(|t| t.name.clone()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    graph.input.retain(|i| !removed.contains(&i.name));
}

// ---------------------------------------------------------------------------------------
// Planning: which nodes become integer ops and which tensors need a calibrated range.

struct Plan {
    /// Conv node index -> fused ReLU node index, if any.
    convs: HashMap<usize, Option<usize>>,
    matmuls: HashSet<usize>,
    /// ReLU nodes absorbed into a QLinearConv.
    fused_relus: HashSet<usize>,
    /// Tensors whose activation range the calibration must measure.
    calibrate: BTreeSet<String>,
}

fn plan(graph: &GraphProto) -> Result<Plan> {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let is_f32_const = |name: &str, rank: Option<usize>| {
        inits.get(name).is_some_and(|t| t.data_type == DataType::Float as i32 && rank.is_none_or(|r| t.dims.len() == r))
    };
    let users = consumers(graph);
    let mut plan = Plan {
        convs: HashMap::new(),
        matmuls: HashSet::new(),
        fused_relus: HashSet::new(),
        calibrate: BTreeSet::new(),
    };
    for (index, node) in graph.node.iter().enumerate() {
        let dynamic_input = node.input.first().is_some_and(|x| !x.is_empty() && !inits.contains_key(x.as_str()));
        match node.op_type.as_str() {
            "Conv"
                if dynamic_input
                    && node.output.len() == 1
                    && node.input.get(1).is_some_and(|w| {
                        is_f32_const(w, None) && inits.get(w.as_str()).is_some_and(|t| t.dims.len() >= 3)
                    })
                    && node.input.get(2).is_none_or(|b| b.is_empty() || is_f32_const(b, Some(1))) =>
            {
                let output = &node.output[0];
                let relu = users
                    .get(output.as_str())
                    .filter(|u| u.len() == 1 && !is_graph_output(graph, output))
                    .map(|u| u[0])
                    .filter(|&u| graph.node[u].op_type == "Relu" && graph.node[u].output.len() == 1);
                plan.calibrate.insert(node.input[0].clone());
                match relu {
                    Some(relu) => {
                        plan.calibrate.insert(graph.node[relu].output[0].clone());
                        plan.fused_relus.insert(relu);
                    }
                    None => {
                        plan.calibrate.insert(output.clone());
                    }
                }
                plan.convs.insert(index, relu);
            }
            "MatMul"
                if dynamic_input
                    && node.output.len() == 1
                    && node.input.get(1).is_some_and(|b| is_f32_const(b, Some(2))) =>
            {
                plan.calibrate.insert(node.input[0].clone());
                plan.calibrate.insert(node.output[0].clone());
                plan.matmuls.insert(index);
            }
            _ => {}
        }
    }
    if plan.convs.is_empty() && plan.matmuls.is_empty() {
        return Err(QuantizeError::NothingToQuantize);
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------
// Calibration.

#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    min: f32,
    max: f32,
}

/// Runs the canonical f32 model over the calibration images with the planned tensors as
/// outputs: pass 1 gathers min/max, pass 2 (only for percentile methods) histograms over that
/// span. Returns one range map per requested method.
fn calibrate(
    canonical: &ModelProto,
    tensors: &[String],
    images: &[&[f32]],
    input_hw: (usize, usize),
    options: &QuantizeOptions,
) -> Result<Vec<(CalibrationMethod, HashMap<String, Range>)>> {
    let runner = engine::Runner::new(canonical, input_hw, Some(tensors))?;
    let mut spans = vec![Range { min: f32::INFINITY, max: f32::NEG_INFINITY }; tensors.len()];
    for image in images {
        for (span, values) in spans.iter_mut().zip(runner.run(image)?) {
            for v in values {
                span.min = span.min.min(v);
                span.max = span.max.max(v);
            }
        }
    }
    for (span, name) in spans.iter().zip(tensors) {
        if !span.min.is_finite() || !span.max.is_finite() {
            return Err(QuantizeError::InvalidModel(format!(
                "tensor `{name}` is empty or not finite during calibration"
            )));
        }
    }
    let bins = options.histogram_bins;
    let needs_histogram = options.methods.iter().any(|m| !matches!(m, CalibrationMethod::MinMax));
    let mut histograms = vec![vec![0u64; bins]; if needs_histogram { tensors.len() } else { 0 }];
    if needs_histogram {
        for image in images {
            for ((histogram, span), values) in histograms.iter_mut().zip(&spans).zip(runner.run(image)?) {
                let width = (span.max - span.min).max(f32::MIN_POSITIVE);
                for v in values {
                    let bin = (((v - span.min) / width) * bins as f32) as usize;
                    histogram[bin.min(bins - 1)] += 1;
                }
            }
        }
    }
    let mut result = Vec::new();
    for &method in &options.methods {
        let ranges = match method {
            CalibrationMethod::MinMax => tensors.iter().cloned().zip(spans.iter().copied()).collect(),
            CalibrationMethod::Percentile(p) => tensors
                .iter()
                .zip(&spans)
                .zip(&histograms)
                .map(|((name, span), histogram)| (name.clone(), percentile_range(histogram, *span, p)))
                .collect(),
            CalibrationMethod::Mse => tensors
                .iter()
                .zip(&spans)
                .zip(&histograms)
                .map(|((name, span), histogram)| (name.clone(), mse_range(histogram, *span, options.activation_type)))
                .collect(),
        };
        result.push((method, ranges));
    }
    Ok(result)
}

/// Clips both tails of the histogrammed distribution at `percentile` (bin-edge resolution,
/// rounded outwards so that a clip never cuts inside its bin).
fn percentile_range(histogram: &[u64], span: Range, percentile: f64) -> Range {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return span;
    }
    let width = (span.max - span.min) / histogram.len() as f32;
    let tail = total as f64 * (1.0 - percentile / 100.0);
    let mut cumulative = 0u64;
    let mut lower = span.min;
    for (i, &count) in histogram.iter().enumerate() {
        cumulative += count;
        if cumulative as f64 > tail {
            lower = span.min + i as f32 * width;
            break;
        }
    }
    cumulative = 0;
    let mut upper = span.max;
    for (i, &count) in histogram.iter().enumerate().rev() {
        cumulative += count;
        if cumulative as f64 > tail {
            upper = span.min + (i + 1) as f32 * width;
            break;
        }
    }
    Range { min: lower.max(span.min), max: upper.min(span.max) }
}

/// Candidate clipping ranges [`mse_range`] tries: the observed span shrunk by
/// `k / MSE_STEPS`, for k from `MSE_STEPS / 10` to `MSE_STEPS`.
const MSE_STEPS: usize = 200;

/// The range, among the observed span shrunk towards zero in [`MSE_STEPS`] steps, whose affine
/// 8-bit quantization reproduces the histogrammed values (taken at bin centres) with the least
/// squared error. Both ends shrink together, so a one-sided (ReLU) tensor keeps its zero.
fn mse_range(histogram: &[u64], span: Range, ty: ActivationType) -> Range {
    let (qmin, qmax) = ty.bounds();
    let width = (span.max - span.min) / histogram.len() as f32;
    let error = |range: Range| -> f64 {
        let q = activation_params(range, ty);
        histogram
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(i, &count)| {
                let x = span.min + (i as f32 + 0.5) * width;
                let level = ((x / q.scale).round() as i32 + q.zero_point).clamp(qmin, qmax);
                let back = (level - q.zero_point) as f32 * q.scale;
                count as f64 * f64::from(x - back).powi(2)
            })
            .sum()
    };
    (MSE_STEPS / 10..=MSE_STEPS)
        .map(|k| {
            let f = k as f32 / MSE_STEPS as f32;
            Range { min: span.min * f, max: span.max * f }
        })
        .map(|range| (error(range), range))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(span, |(_, range)| range)
}

// ---------------------------------------------------------------------------------------
// Quantization arithmetic.

#[derive(Debug, Clone, Copy, PartialEq)]
struct QParams {
    scale: f32,
    zero_point: i32,
}

/// Asymmetric affine parameters covering `range` (widened to include 0, so that real zero —
/// the conv padding value — is exactly representable).
fn activation_params(range: Range, ty: ActivationType) -> QParams {
    let (qmin, qmax) = ty.bounds();
    let min = range.min.min(0.0);
    let max = range.max.max(0.0);
    let mut scale = (max - min) / (qmax - qmin) as f32;
    if !(scale.is_finite() && scale > 0.0) {
        scale = 1.0;
    }
    let zero_point = ((qmin as f32 - min / scale).round() as i32).clamp(qmin, qmax);
    QParams { scale, zero_point }
}

/// Symmetric per-row int8 quantization of a `[channels, rest]` matrix: one scale per row,
/// values in [-127, 127].
fn quantize_rows(values: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per_row = values.len() / channels.max(1);
    let mut scales = Vec::with_capacity(channels);
    let mut quantized = Vec::with_capacity(values.len());
    for row in values.chunks(per_row.max(1)) {
        let max_abs = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max_abs > 0.0 && max_abs.is_finite() { max_abs / 127.0 } else { 1.0 };
        quantized.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    (quantized, scales)
}

/// Weight quantization per `granularity`: `(values, scales)` with one scale per row or one
/// scale in total.
fn quantize_weights(values: &[f32], channels: usize, granularity: WeightGranularity) -> (Vec<i8>, Vec<f32>) {
    match granularity {
        WeightGranularity::PerChannel | WeightGranularity::Auto => quantize_rows(values, channels),
        WeightGranularity::PerTensor => quantize_rows(values, 1),
    }
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Emission of the int8 graph.

#[derive(Debug, Clone)]
struct QTensor {
    name: String,
    scale: String,
    zero_point: String,
    params: QParams,
    range: Range,
}

struct Emitter<'a> {
    options: &'a QuantizeOptions,
    granularity: WeightGranularity,
    ranges: &'a HashMap<String, Range>,
    inits: HashMap<String, &'a TensorProto>,
    names: NameGen,
    nodes: Vec<NodeProto>,
    new_inits: Vec<TensorProto>,
    float_ok: HashSet<String>,
    quant: HashMap<String, QTensor>,
    layers: Vec<LayerReport>,
}

impl<'a> Emitter<'a> {
    fn qtensor(&mut self, tensor: &str, range: Range) -> QTensor {
        let params = activation_params(range, self.options.activation_type);
        let name = self.names.fresh(&format!("{tensor}_quantized"));
        let scale = self.names.fresh(&format!("{tensor}_scale"));
        let zero_point = self.names.fresh(&format!("{tensor}_zero_point"));
        self.new_inits.push(f32_tensor(scale.clone(), &[], &[params.scale]));
        self.new_inits.push(zero_point_tensor(
            zero_point.clone(),
            self.options.activation_type,
            &[],
            params.zero_point,
        ));
        QTensor { name, scale, zero_point, params, range }
    }

    fn range(&self, tensor: &str) -> Result<Range> {
        self.ranges
            .get(tensor)
            .copied()
            .ok_or_else(|| QuantizeError::InvalidModel(format!("no calibration range for `{tensor}`")))
    }

    /// Float view of a tensor, dequantizing (once) when only the 8-bit one exists.
    fn ensure_float(&mut self, tensor: &str) -> Result<String> {
        if tensor.is_empty() || self.float_ok.contains(tensor) {
            return Ok(tensor.to_string());
        }
        let Some(q) = self.quant.get(tensor).cloned() else {
            return Err(QuantizeError::InvalidModel(format!("tensor `{tensor}` is read before it is produced")));
        };
        let node_name = self.names.fresh(&format!("{tensor}_dequantize"));
        self.nodes.push(make_node(
            "DequantizeLinear",
            node_name,
            vec![q.name, q.scale, q.zero_point],
            vec![tensor.to_string()],
            vec![],
        ));
        self.float_ok.insert(tensor.to_string());
        Ok(tensor.to_string())
    }

    /// 8-bit view of a tensor, quantizing (once) the float one with its calibrated range.
    fn ensure_quant(&mut self, tensor: &str) -> Result<QTensor> {
        if let Some(q) = self.quant.get(tensor) {
            return Ok(q.clone());
        }
        let float = self.ensure_float(tensor)?;
        let range = self.range(tensor)?;
        let q = self.qtensor(tensor, range);
        let node_name = self.names.fresh(&format!("{tensor}_quantize"));
        self.nodes.push(make_node(
            "QuantizeLinear",
            node_name,
            vec![float, q.scale.clone(), q.zero_point.clone()],
            vec![q.name.clone()],
            vec![],
        ));
        self.quant.insert(tensor.to_string(), q.clone());
        Ok(q)
    }

    fn weight(&self, name: &str) -> Result<(&'a TensorProto, Vec<f32>)> {
        let tensor = *self
            .inits
            .get(name)
            .ok_or_else(|| QuantizeError::InvalidModel(format!("missing initializer `{name}`")))?;
        Ok((tensor, tensor_f32(tensor)?))
    }

    fn tensor_quant(tensor: &str, q: &QTensor) -> TensorQuant {
        TensorQuant {
            tensor: tensor.to_string(),
            min: q.range.min,
            max: q.range.max,
            scale: q.params.scale,
            zero_point: q.params.zero_point,
        }
    }

    fn conv(&mut self, conv: &NodeProto, relu: Option<&NodeProto>) -> Result<()> {
        let label = node_label(conv);
        let x = self.ensure_quant(&conv.input[0])?;
        let (weight, values) = self.weight(&conv.input[1])?;
        let channels = weight.dims[0].max(0) as usize;
        if channels == 0 || !values.len().is_multiple_of(channels) {
            return Err(QuantizeError::InvalidModel(format!("Conv `{label}` weight dims {:?}", weight.dims)));
        }
        let (w_q, w_scales) = quantize_weights(&values, channels, self.granularity);
        let scale_dims: &[i64] = if w_scales.len() == 1 { &[] } else { &[channels as i64] };
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(name) => Some(self.weight(name)?.1),
            None => None,
        };
        if bias.as_ref().is_some_and(|b| b.len() != channels) {
            return Err(QuantizeError::InvalidModel(format!("Conv `{label}` bias length")));
        }
        let output = relu.map_or(&conv.output[0], |r| &r.output[0]).clone();
        let mut range = self.range(&output)?;
        if relu.is_some() {
            // Zero point at the type minimum: the requantization clamp performs the ReLU.
            range.min = 0.0;
        }
        let y = self.qtensor(&output, range);

        let w_name = self.names.fresh(&format!("{label}.weight_quantized"));
        let w_scale = self.names.fresh(&format!("{label}.weight_scale"));
        let w_zero = self.names.fresh(&format!("{label}.weight_zero_point"));
        self.new_inits.push(i8_tensor(w_name.clone(), &weight.dims, &w_q));
        self.new_inits.push(f32_tensor(w_scale.clone(), scale_dims, &w_scales));
        // A scalar (not per-channel) zero weight zero point lets tract drop the
        // `w_zero_point * sum(x)` correction and the per-pixel input sums it needs.
        self.new_inits.push(i8_tensor(w_zero.clone(), &[], &[0]));
        let mut inputs = vec![
            x.name.clone(),
            x.scale.clone(),
            x.zero_point.clone(),
            w_name,
            w_scale,
            w_zero,
            y.scale.clone(),
            y.zero_point.clone(),
        ];
        if let Some(bias) = bias {
            let b_q: Vec<i32> = bias
                .iter()
                .zip(w_scales.iter().cycle())
                .map(|(b, s)| {
                    (f64::from(*b) / (f64::from(x.params.scale) * f64::from(*s)))
                        .round()
                        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
                })
                .collect();
            let b_name = self.names.fresh(&format!("{label}.bias_quantized"));
            self.new_inits.push(i32_tensor(b_name.clone(), &[channels as i64], &b_q));
            inputs.push(b_name);
        }
        let node_name = self.names.fresh(&format!("{label}_qlinear"));
        self.nodes.push(make_node("QLinearConv", node_name, inputs, vec![y.name.clone()], conv.attribute.clone()));
        self.layers.push(LayerReport {
            node: label,
            op: "QLinearConv".into(),
            input: Some(Self::tensor_quant(&conv.input[0], &x)),
            output: Some(Self::tensor_quant(&output, &y)),
            relu_fused: relu.is_some(),
            weight_channels: channels,
            weight_scale_min: w_scales.iter().copied().fold(f32::INFINITY, f32::min),
            weight_scale_max: w_scales.iter().copied().fold(0.0, f32::max),
        });
        self.quant.insert(output, y);
        Ok(())
    }

    /// `QLinearMatMul`, or for the embedding head (`head`) a float MatMul over int8 weights.
    fn matmul(&mut self, matmul: &NodeProto, head: bool) -> Result<()> {
        let label = node_label(matmul);
        let (weight, values) = self.weight(&matmul.input[1])?;
        let (k, n) = (weight.dims[0].max(0) as usize, weight.dims[1].max(0) as usize);
        if k * n != values.len() || n == 0 {
            return Err(QuantizeError::InvalidModel(format!("MatMul `{label}` weight dims {:?}", weight.dims)));
        }
        // Per output column: quantize the transposed matrix by rows, then transpose back. The
        // head runs in float, where per-column scales cost nothing.
        let granularity = if head { WeightGranularity::PerChannel } else { self.granularity };
        let (q_t, scales) = quantize_weights(&transpose(&values, k, n), n, granularity);
        // QLinearMatMul wants b_scale and b_zero_point of the same rank.
        let scale_dims: &[i64] = if scales.len() == 1 { &[] } else { &[n as i64] };
        let mut w_q = vec![0i8; q_t.len()];
        for c in 0..n {
            for r in 0..k {
                w_q[r * n + c] = q_t[c * k + r];
            }
        }
        let output = matmul.output[0].clone();
        let w_name = self.names.fresh(&format!("{label}.weight_quantized"));
        self.new_inits.push(i8_tensor(w_name.clone(), &weight.dims, &w_q));
        let weight_scale_min = scales.iter().copied().fold(f32::INFINITY, f32::min);
        let weight_scale_max = scales.iter().copied().fold(0.0, f32::max);
        if head {
            return self.weight_only_head(matmul, w_name, &scales, (weight_scale_min, weight_scale_max));
        }
        let x = self.ensure_quant(&matmul.input[0])?;
        let range = self.range(&output)?;
        let y = self.qtensor(&output, range);
        let w_scale = self.names.fresh(&format!("{label}.weight_scale"));
        let w_zero = self.names.fresh(&format!("{label}.weight_zero_point"));
        self.new_inits.push(f32_tensor(w_scale.clone(), scale_dims, &scales));
        self.new_inits.push(i8_tensor(w_zero.clone(), scale_dims, &vec![0; scales.len()]));
        let node_name = self.names.fresh(&format!("{label}_qlinear"));
        self.nodes.push(make_node(
            "QLinearMatMul",
            node_name,
            vec![
                x.name.clone(),
                x.scale.clone(),
                x.zero_point.clone(),
                w_name,
                w_scale,
                w_zero,
                y.scale.clone(),
                y.zero_point.clone(),
            ],
            vec![y.name.clone()],
            vec![],
        ));
        self.layers.push(LayerReport {
            node: label,
            op: "QLinearMatMul".into(),
            input: Some(Self::tensor_quant(&matmul.input[0], &x)),
            output: Some(Self::tensor_quant(&output, &y)),
            relu_fused: false,
            weight_channels: n,
            weight_scale_min,
            weight_scale_max,
        });
        self.quant.insert(output, y);
        Ok(())
    }

    /// `y = x · DequantizeLinear(w_q)`: int8 weights in the file, float arithmetic, so neither
    /// the head's input nor the embedding is rounded to 8 bits (see [`embedding_head`]).
    fn weight_only_head(
        &mut self,
        matmul: &NodeProto,
        w_name: String,
        w_scales: &[f32],
        (weight_scale_min, weight_scale_max): (f32, f32),
    ) -> Result<()> {
        let label = node_label(matmul);
        let x = self.ensure_float(&matmul.input[0])?;
        let output = matmul.output[0].clone();
        let per_column = w_scales.len() > 1;
        let scale_dims: &[i64] = if per_column { &[w_scales.len() as i64] } else { &[] };
        let w_scale = self.names.fresh(&format!("{label}.weight_scale"));
        let w_zero = self.names.fresh(&format!("{label}.weight_zero_point"));
        self.new_inits.push(f32_tensor(w_scale.clone(), scale_dims, w_scales));
        self.new_inits.push(i8_tensor(w_zero.clone(), scale_dims, &vec![0; w_scales.len()]));
        let weight = self.names.fresh(&format!("{label}.weight_dequantized"));
        let node_name = self.names.fresh(&format!("{label}.weight_dequantize"));
        let axis = if per_column { vec![int_attr("axis", 1)] } else { vec![] };
        self.nodes.push(make_node(
            "DequantizeLinear",
            node_name,
            vec![w_name, w_scale, w_zero],
            vec![weight.clone()],
            axis,
        ));
        let node_name = self.names.fresh(&label);
        self.nodes.push(make_node("MatMul", node_name, vec![x, weight], vec![output.clone()], vec![]));
        self.layers.push(LayerReport {
            node: label,
            op: "MatMul (int8 weights)".into(),
            input: None,
            output: None,
            relu_fused: false,
            weight_channels: w_scales.len(),
            weight_scale_min,
            weight_scale_max,
        });
        self.float_ok.insert(output);
        Ok(())
    }

    /// Ops that commute with the affine 8-bit map run on the 8-bit tensor and keep its
    /// parameters: saves a dequantize/quantize pair per block.
    fn try_pass_through(&mut self, node: &NodeProto) -> bool {
        let movable = match node.op_type.as_str() {
            "MaxPool" => self.options.quantized_max_pool,
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity" => true,
            _ => false,
        };
        let Some(input) = node.input.first() else { return false };
        if !movable || node.output.len() != 1 || self.float_ok.contains(input) {
            return false;
        }
        let Some(q) = self.quant.get(input).cloned() else { return false };
        let mut inputs = node.input.clone();
        inputs[0] = q.name.clone();
        let output = node.output[0].clone();
        let name = self.names.fresh(&format!("{output}_quantized"));
        let mut moved = node.clone();
        moved.input = inputs;
        moved.output = vec![name.clone()];
        self.nodes.push(moved);
        self.quant.insert(output, QTensor { name, ..q });
        true
    }

    fn float_node(&mut self, node: &NodeProto) -> Result<()> {
        let mut moved = node.clone();
        for (i, input) in node.input.iter().enumerate() {
            // Shape only needs dims, which the 8-bit tensor shares.
            if node.op_type == "Shape"
                && i == 0
                && !self.float_ok.contains(input)
                && let Some(q) = self.quant.get(input)
            {
                moved.input[0] = q.name.clone();
                continue;
            }
            moved.input[i] = self.ensure_float(input)?;
        }
        self.float_ok.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        self.nodes.push(moved);
        Ok(())
    }
}

/// Builds the int8 model from the canonical graph and one set of activation ranges.
/// The embedding head: the last quantized node, when it is a MatMul. Its output is the
/// embedding itself (before the bias add and the L2 normalisation) and its input the pooled
/// features, so neither is rounded to 8 bits: the weights are stored int8 and dequantized
/// once at load (tract folds the constant), the product runs in float. It is one small
/// matrix-vector product, so this costs nothing measurable. Measured on an SVC2004 model
/// (real images, check-bundle): with an 8-bit head the worst per-image cosine to f32 was
/// 0.990 and only the slow per-channel form reached it; with this head the fused per-tensor
/// form reaches 0.995.
fn embedding_head(plan: &Plan) -> Option<usize> {
    let last_matmul = plan.matmuls.iter().copied().max()?;
    plan.convs.keys().all(|&conv| conv < last_matmul).then_some(last_matmul)
}

fn emit(
    original: &ModelProto,
    canonical: &ModelProto,
    plan: &Plan,
    ranges: &HashMap<String, Range>,
    options: &QuantizeOptions,
    granularity: WeightGranularity,
) -> Result<(ModelProto, Vec<LayerReport>)> {
    let graph = canonical_graph(canonical)?;
    let mut emitter = Emitter {
        options,
        granularity,
        ranges,
        inits: graph.initializer.iter().map(|t| (t.name.clone(), t)).collect(),
        names: NameGen::new(graph),
        nodes: Vec::new(),
        new_inits: Vec::new(),
        float_ok: graph
            .initializer
            .iter()
            .map(|t| t.name.clone())
            .chain(graph.input.iter().map(|i| i.name.clone()))
            .collect(),
        quant: HashMap::new(),
        layers: Vec::new(),
    };
    let head = embedding_head(plan);
    for (index, node) in graph.node.iter().enumerate() {
        if plan.fused_relus.contains(&index) {
            continue;
        }
        if let Some(relu) = plan.convs.get(&index) {
            emitter.conv(node, relu.map(|r| &graph.node[r]))?;
        } else if plan.matmuls.contains(&index) {
            emitter.matmul(node, head == Some(index))?;
        } else if !emitter.try_pass_through(node) {
            emitter.float_node(node)?;
        }
    }
    for output in &graph.output {
        emitter.ensure_float(&output.name)?;
    }

    let used: HashSet<&str> = emitter
        .nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    let mut initializer: Vec<TensorProto> =
        graph.initializer.iter().filter(|t| used.contains(t.name.as_str())).cloned().collect();
    initializer.extend(emitter.new_inits.iter().filter(|t| used.contains(t.name.as_str())).cloned());
    let kept: HashSet<&str> = initializer.iter().map(|t| t.name.as_str()).collect();
    let all_inits = initializer_names(graph);
    let input = graph
        .input
        .iter()
        .filter(|i| !all_inits.contains(i.name.as_str()) || kept.contains(i.name.as_str()))
        .cloned()
        .collect();
    let new_graph = GraphProto {
        node: emitter.nodes,
        name: graph.name.clone(),
        initializer,
        doc_string: graph.doc_string.clone(),
        input,
        output: graph.output.clone(),
        ..Default::default()
    };

    let mut model = original.clone();
    model.graph = Some(new_graph);
    let mut has_default = false;
    for opset in &mut model.opset_import {
        if opset.domain.is_empty() || opset.domain == "ai.onnx" {
            opset.version = opset.version.max(MIN_OPSET);
            has_default = true;
        }
    }
    if !has_default {
        model.opset_import.push(OperatorSetIdProto { domain: String::new(), version: MIN_OPSET });
    }
    model.metadata_props.push(StringStringEntryProto {
        key: "autograph.quantization".into(),
        value: format!("static int8 ({granularity:?} symmetric weights, {:?} activations)", options.activation_type),
    });
    Ok((model, emitter.layers))
}

// ---------------------------------------------------------------------------------------
// Scoring helpers.

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 || a.len() != b.len() {
        return if na == nb && a.len() == b.len() { 1.0 } else { 0.0 };
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Smooth deterministic stroke-like image for latency measurements.
fn synthetic_image((h, w): (usize, usize)) -> Vec<f32> {
    let mut image = vec![0.0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let (fy, fx) = (y as f32 / h as f32, x as f32 / w as f32);
            image[y * w + x] = (fx * 9.0 + (fy * 5.0).sin()).sin() * (fy * 3.0).cos();
        }
    }
    image
}

// ---------------------------------------------------------------------------------------
// tract glue, kept apart because its prelude shadows names used above.

mod engine {
    use std::time::{Duration, Instant};

    use tract_onnx::pb::ModelProto;
    use tract_onnx::prelude::*;

    use super::{QuantizeError, Result};

    fn tract<T>(stage: &'static str, result: TractResult<T>) -> Result<T> {
        result.map_err(|error| QuantizeError::Tract { stage, message: format!("{error:#}") })
    }

    /// An optimized batch-1 tract plan over `[1, 1, H, W]` float images.
    pub(super) struct Runner {
        plan: Arc<TypedRunnableModel>,
        hw: (usize, usize),
    }

    impl Runner {
        /// `outputs` replaces the model outputs (calibration taps on intermediate tensors).
        pub(super) fn new(model: &ModelProto, hw: (usize, usize), outputs: Option<&[String]>) -> Result<Self> {
            let mut inference = tract("load the ONNX model", onnx().model_for_proto_model(model))?;
            tract("set the input shape", inference.set_input_fact(0, f32::fact([1, 1, hw.0, hw.1]).into()))?;
            if let Some(outputs) = outputs {
                tract("expose calibration tensors", inference.select_outputs_by_name(outputs))?;
            }
            let typed = tract("optimize the model", inference.into_optimized())?;
            let plan = tract("plan the model", typed.into_runnable())?;
            Ok(Self { plan, hw })
        }

        /// One image in, every model output flattened to f32 out.
        pub(super) fn run(&self, image: &[f32]) -> Result<Vec<Vec<f32>>> {
            let input = tract("build the input tensor", Tensor::from_shape(&[1, 1, self.hw.0, self.hw.1], image))?;
            let outputs = tract("run the model", self.plan.run(tvec!(input.into_tvalue())))?;
            outputs
                .iter()
                .map(|o| {
                    let view = tract("read an output", o.to_plain_array_view::<f32>())?;
                    Ok(view.iter().copied().collect())
                })
                .collect()
        }

        pub(super) fn median_latency(&self, image: &[f32], runs: usize) -> Result<Duration> {
            let input = tract("build the input tensor", Tensor::from_shape(&[1, 1, self.hw.0, self.hw.1], image))?
                .into_tvalue();
            let mut state = tract("spawn a model state", self.plan.spawn())?;
            for _ in 0..3 {
                tract("run the model", state.run(tvec!(input.clone())))?;
            }
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let start = Instant::now();
                tract("run the model", state.run(tvec!(input.clone())))?;
                times.push(start.elapsed());
            }
            times.sort();
            Ok(times[times.len() / 2])
        }
    }

    /// Per-node cumulated eval time over `runs` batch-1 runs, slowest first (profiling aid).
    #[cfg(test)]
    pub(super) fn profile(
        model: &ModelProto,
        hw: (usize, usize),
        image: &[f32],
        runs: usize,
    ) -> Result<Vec<(String, Duration)>> {
        let runner = Runner::new(model, hw, None)?;
        let input = tract("build the input tensor", Tensor::from_shape(&[1, 1, hw.0, hw.1], image))?.into_tvalue();
        let mut state = tract("spawn", runner.plan.spawn())?;
        let mut times: std::collections::HashMap<String, Duration> = Default::default();
        for _ in 0..runs {
            tract(
                "run",
                state.run_plan_with_eval(tvec!(input.clone()), |ctx, op_state, node, inputs| {
                    let start = Instant::now();
                    let result = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    *times.entry(format!("{} {}", node.op.name(), node.name)).or_default() += start.elapsed();
                    result
                }),
            )?;
        }
        let mut times: Vec<_> = times.into_iter().map(|(k, v)| (k, v / runs as u32)).collect();
        times.sort_by_key(|t| std::cmp::Reverse(t.1));
        Ok(times)
    }

    pub(super) fn describe(model_bytes: &[u8]) -> Result<Vec<String>> {
        let proto = super::decode_model(model_bytes)?;
        let inference = tract("load the ONNX model", onnx().model_for_proto_model(&proto))?;
        let typed = tract("optimize the model", inference.into_optimized())?;
        let order = tract("order the model", typed.eval_order())?;
        let mut lines = Vec::new();
        for id in order {
            let node = typed.node(id);
            let name = node.op.name();
            if name == "Const" {
                continue;
            }
            let types: Vec<String> = node.outputs.iter().map(|o| format!("{:?}", o.fact.datum_type)).collect();
            let info = node.op.info().unwrap_or_default().join("; ");
            lines.push(format!("{name} {} -> {} | {info}", node.name, types.join(",")));
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
    use tract_onnx::pb::{TensorShapeProto, TypeProto, ValueInfoProto, type_proto};

    use super::*;

    const H: usize = 64;
    const W: usize = 128;
    const CHANNELS: [usize; 3] = [16, 32, 64];
    const EMBEDDING: usize = 128;

    /// SplitMix64: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        }
        fn normal(&mut self) -> f32 {
            let u1 = self.uniform(1e-7, 1.0);
            let u2 = self.uniform(0.0, 1.0);
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        }
    }

    fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Some(v) => dimension::Value::DimValue(*v),
                    None => dimension::Value::DimParam("batch".into()),
                }),
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
            }),
            doc_string: String::new(),
        }
    }

    fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        make_node(
            op,
            name.into(),
            inputs.iter().map(|s| s.to_string()).collect(),
            outputs.iter().map(|s| s.to_string()).collect(),
            attrs,
        )
    }

    /// The op structure burn-onnx 0.22 emits for the embedding net (checked against a real
    /// export of `model::EmbeddingNet`): [Conv -> BatchNormalization -> Relu -> MaxPool]
    /// blocks, GlobalAveragePool, a dynamic-batch Reshape built from Shape/Gather/Concat,
    /// Linear as MatMul -> Reshape -> Add, then the L2 normalisation (here in its clamped
    /// form x / max(sqrt(sum(x*x)), eps); burn's is x / sqrt(sum(x*x) + eps)).
    fn build_model(seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut nodes = Vec::new();
        let mut inits = Vec::new();
        let mut x = "input".to_string();
        let mut in_channels = 1;
        for (block, &out_channels) in CHANNELS.iter().enumerate() {
            let fan_in = (in_channels * 9) as f32;
            let weight: Vec<f32> =
                (0..out_channels * in_channels * 9).map(|_| rng.normal() * (2.0 / fan_in).sqrt()).collect();
            let c = out_channels as i64;
            let w_name = format!("conv{block}.weight");
            inits.push(f32_tensor(w_name.clone(), &[c, in_channels as i64, 3, 3], &weight));
            let mut conv_inputs = vec![x.as_str().to_string(), w_name];
            if block == 0 {
                // burn's Conv2d keeps its bias by default; the others have none.
                let bias: Vec<f32> = (0..out_channels).map(|_| rng.uniform(-0.1, 0.1)).collect();
                inits.push(f32_tensor(format!("conv{block}.bias"), &[c], &bias));
                conv_inputs.push(format!("conv{block}.bias"));
            }
            let conv_out = format!("conv{block}_out");
            nodes.push(make_node(
                "Conv",
                format!("conv{block}"),
                conv_inputs,
                vec![conv_out.clone()],
                vec![
                    ints_attr("strides", &[1, 1]),
                    ints_attr("dilations", &[1, 1]),
                    ints_attr("pads", &[1, 1, 1, 1]),
                    int_attr("group", 1),
                ],
            ));
            let bn: Vec<Vec<f32>> = [(0.8, 1.2), (-0.1, 0.1), (-0.1, 0.1), (0.5, 1.5)]
                .iter()
                .map(|&(lo, hi)| (0..out_channels).map(|_| rng.uniform(lo, hi)).collect())
                .collect();
            let bn_names: Vec<String> =
                ["gamma", "beta", "mean", "var"].iter().map(|p| format!("bn{block}.{p}")).collect();
            for (name, values) in bn_names.iter().zip(&bn) {
                inits.push(f32_tensor(name.clone(), &[c], values));
            }
            let bn_out = format!("bn{block}_out");
            let mut bn_inputs = vec![conv_out];
            bn_inputs.extend(bn_names);
            nodes.push(make_node(
                "BatchNormalization",
                format!("bn{block}"),
                bn_inputs,
                vec![bn_out.clone()],
                vec![float_attr("epsilon", 1e-5)],
            ));
            let relu_out = format!("relu{block}_out");
            nodes.push(node("Relu", &format!("relu{block}"), &[&bn_out], &[&relu_out], vec![]));
            let pool_out = format!("pool{block}_out");
            nodes.push(node(
                "MaxPool",
                &format!("pool{block}"),
                &[&relu_out],
                &[&pool_out],
                vec![
                    ints_attr("kernel_shape", &[2, 2]),
                    ints_attr("strides", &[2, 2]),
                    ints_attr("dilations", &[1, 1]),
                    ints_attr("pads", &[0, 0, 0, 0]),
                    int_attr("ceil_mode", 0),
                ],
            ));
            x = pool_out;
            in_channels = out_channels;
        }
        nodes.push(node("GlobalAveragePool", "gap", &[&x], &["gap_out"], vec![]));
        nodes.push(node("Shape", "reshape_source_shape", &["gap_out"], &["gap_shape"], vec![]));
        inits.push(i64_tensor("reshape_index".into(), &[1], &[0]));
        nodes.push(node(
            "Gather",
            "reshape_part_0",
            &["gap_shape", "reshape_index"],
            &["reshape_part_0"],
            vec![int_attr("axis", 0)],
        ));
        inits.push(i64_tensor("reshape_part_1".into(), &[1], &[in_channels as i64]));
        nodes.push(node(
            "Concat",
            "reshape_shape",
            &["reshape_part_0", "reshape_part_1"],
            &["reshape_shape"],
            vec![int_attr("axis", 0)],
        ));
        nodes.push(node("Reshape", "flatten", &["gap_out", "reshape_shape"], &["features"], vec![]));
        let fc: Vec<f32> =
            (0..in_channels * EMBEDDING).map(|_| rng.normal() * (1.0 / in_channels as f32).sqrt()).collect();
        inits.push(f32_tensor("fc.weight".into(), &[in_channels as i64, EMBEDDING as i64], &fc));
        let fc_bias: Vec<f32> = (0..EMBEDDING).map(|_| rng.uniform(-0.05, 0.05)).collect();
        inits.push(f32_tensor("fc.bias".into(), &[EMBEDDING as i64], &fc_bias));
        nodes.push(node("MatMul", "fc_matmul", &["features", "fc.weight"], &["fc_matmul"], vec![]));
        // burn reshapes the product before broadcasting the bias.
        inits.push(i64_tensor("fc_shape".into(), &[2], &[-1, EMBEDDING as i64]));
        nodes.push(node("Reshape", "fc_reshape", &["fc_matmul", "fc_shape"], &["fc_reshaped"], vec![]));
        nodes.push(node("Add", "fc_bias", &["fc_reshaped", "fc.bias"], &["fc_out"], vec![]));
        nodes.push(node("Mul", "l2_square", &["fc_out", "fc_out"], &["l2_sq"], vec![]));
        inits.push(i64_tensor("l2_axes".into(), &[1], &[1]));
        nodes.push(node("ReduceSum", "l2_sum", &["l2_sq", "l2_axes"], &["l2_sum"], vec![int_attr("keepdims", 1)]));
        nodes.push(node("Sqrt", "l2_sqrt", &["l2_sum"], &["l2_norm"], vec![]));
        inits.push(f32_tensor("l2_eps".into(), &[], &[1e-12]));
        nodes.push(node("Max", "l2_clamp", &["l2_norm", "l2_eps"], &["l2_clamped"], vec![]));
        nodes.push(node("Div", "l2_div", &["fc_out", "l2_clamped"], &["embedding"], vec![]));

        let graph = GraphProto {
            node: nodes,
            name: "burn_graph".into(),
            initializer: inits,
            input: vec![value_info("input", &[None, Some(1), Some(H as i64), Some(W as i64)])],
            output: vec![value_info("embedding", &[None, Some(EMBEDDING as i64)])],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            producer_name: "burn-onnx".into(),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 18 }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Smooth random "ink" images: a few random low-frequency waves through a soft threshold,
    /// then standardized like the preprocessing does.
    fn images(seed: u64, count: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng(seed);
        (0..count)
            .map(|_| {
                let waves: Vec<[f32; 4]> = (0..5)
                    .map(|_| {
                        [rng.uniform(1.0, 6.0), rng.uniform(1.0, 10.0), rng.uniform(0.0, 6.3), rng.uniform(0.3, 1.0)]
                    })
                    .collect();
                let mut image: Vec<f32> = (0..H * W)
                    .map(|i| {
                        let (y, x) = ((i / W) as f32 / H as f32, (i % W) as f32 / W as f32);
                        let v: f32 = waves
                            .iter()
                            .map(|[fy, fx, phase, amp]| amp * (fy * y * 6.3 + fx * x * 6.3 + phase).sin())
                            .sum();
                        1.0 / (1.0 + (-4.0 * (v - 0.8)).exp())
                    })
                    .collect();
                let mean = image.iter().sum::<f32>() / image.len() as f32;
                let var = image.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / image.len() as f32;
                let std = var.sqrt().max(1e-3);
                image.iter_mut().for_each(|v| *v = (*v - mean) / std);
                image
            })
            .collect()
    }

    struct Fixture {
        f32_model: Vec<u8>,
        quantized: QuantizedModel,
    }

    /// Quantizing is the slow part: do it once for all tests.
    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let f32_model = build_model(7);
            let calibration = images(11, 40);
            let quantized = quantize(&f32_model, &calibration, (H, W), &QuantizeOptions::default())
                .expect("quantization of the test model");
            Fixture { f32_model, quantized }
        })
    }

    fn run_all(model: &[u8], images: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let proto = decode_model(model).expect("decodable");
        let runner = engine::Runner::new(&proto, (H, W), None).expect("tract loads the model");
        images.iter().map(|i| runner.run(i).expect("tract runs").swap_remove(0)).collect()
    }

    #[test]
    fn quantize_int8_matches_f32_on_fresh_images() {
        let fixture = fixture();
        let report = &fixture.quantized.report;
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        assert!(report.mean_cosine >= 0.99, "held-out mean cosine {}", report.mean_cosine);
        // Auto settles for the fused per-tensor form when it is accurate enough.
        assert_eq!(report.weight_granularity, WeightGranularity::PerTensor);
        assert_eq!(report.equalized_pairs, CHANNELS.len());
        assert_eq!(report.candidates.len(), 8, "2 granularities x 4 calibration methods");
        assert_eq!(report.layers.iter().filter(|l| l.op == "QLinearConv").count(), CHANNELS.len());
        let head: Vec<&LayerReport> = report.layers.iter().filter(|l| l.output.is_none()).collect();
        assert_eq!(head.len(), 1, "the embedding head");
        assert!(head[0].input.is_none() && head[0].op.starts_with("MatMul"));
        assert!(report.layers.iter().filter(|l| l.op == "QLinearConv").all(|l| l.relu_fused));

        let fresh = images(99, 12);
        let reference = run_all(&fixture.f32_model, &fresh);
        let int8 = run_all(&fixture.quantized.onnx, &fresh);
        for (i, (a, b)) in int8.iter().zip(&reference).enumerate() {
            assert_eq!(a.len(), EMBEDDING);
            let c = cosine(a, b);
            println!("image {i}: cosine(int8, f32) = {c:.5}");
            assert!(c >= 0.99, "image {i}: cosine {c}");
        }
    }

    #[test]
    fn quantize_int8_file_is_under_40_percent() {
        let fixture = fixture();
        let ratio = fixture.quantized.onnx.len() as f64 / fixture.f32_model.len() as f64;
        println!(
            "f32 {} bytes, int8 {} bytes, ratio {ratio:.3}",
            fixture.f32_model.len(),
            fixture.quantized.onnx.len()
        );
        assert!(ratio < 0.40, "size ratio {ratio}");
        assert!((fixture.quantized.report.size_ratio - ratio).abs() < 1e-9);
    }

    #[test]
    fn quantize_int8_graph_uses_standard_integer_ops() {
        let model = decode_model(&fixture().quantized.onnx).expect("decodable");
        let graph = model.graph.expect("graph");
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        println!("int8 ONNX ops: {ops:?}");
        assert_eq!(ops.iter().filter(|o| **o == "QLinearConv").count(), CHANNELS.len());
        // The embedding head: a float MatMul over int8 weights.
        assert_eq!(ops.iter().filter(|o| **o == "MatMul").count(), 1);
        assert_eq!(
            graph.initializer.iter().filter(|t| t.data_type == DataType::Float as i32 && t.dims.len() == 2).count(),
            0
        );
        for absent in ["Conv", "BatchNormalization", "Relu", "Gemm"] {
            assert!(!ops.contains(&absent), "{absent} left in float");
        }
        assert!(graph.node.iter().all(|n| n.domain.is_empty()), "no com.microsoft ops");
    }

    #[test]
    fn quantize_tract_runs_convolutions_as_integer_ops() {
        let fixture = fixture();
        let int8_ops = describe_tract_ops(&fixture.quantized.onnx).expect("describe int8");
        let f32_ops = describe_tract_ops(&fixture.f32_model).expect("describe f32");
        println!("tract optimized int8 model:\n  {}", int8_ops.join("\n  "));
        println!("tract optimized f32 model:\n  {}", f32_ops.join("\n  "));
        let integer_matmuls = int8_ops.iter().filter(|l| l.starts_with("OptMatMul") && l.contains("i32")).count();
        // Every convolution; the embedding head is the one float matrix product.
        assert!(integer_matmuls >= CHANNELS.len(), "integer matmuls: {integer_matmuls}");
        let i8_im2col = int8_ops.iter().filter(|l| l.starts_with("Im2col")).count();
        assert!(i8_im2col >= CHANNELS.len() - 1, "im2col nodes: {i8_im2col}");
        let float_matmuls = int8_ops.iter().filter(|l| l.starts_with("OptMatMul ") && l.contains("f32")).count();
        assert!(float_matmuls <= 1, "only the head runs in float: {float_matmuls}");
        // Requantization fused into the integer kernels: no separate pass over i32 tensors.
        assert!(!int8_ops.iter().any(|l| l.starts_with("Scale ")), "unfused requantization");
    }

    #[test]
    fn quantize_int8_model_keeps_dynamic_batch() {
        use tract_onnx::prelude::*;
        let fixture = fixture();
        let batch = images(5, 3);
        let single = run_all(&fixture.quantized.onnx, &batch);
        let model = tract_onnx::onnx()
            .model_for_read(&mut fixture.quantized.onnx.as_slice())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .expect("symbolic-batch int8 model loads");
        let data: Vec<f32> = batch.concat();
        let input = Tensor::from_shape(&[3, 1, H, W], &data).expect("input");
        let output = model.run(tvec!(input.into_tvalue())).expect("batch run");
        let view = output[0].to_plain_array_view::<f32>().expect("f32 output");
        assert_eq!(view.shape(), &[3, EMBEDDING]);
        let flat: Vec<f32> = view.iter().copied().collect();
        for (row, expected) in flat.chunks(EMBEDDING).zip(&single) {
            assert!(cosine(row, expected) > 0.99999);
        }
    }

    #[test]
    fn quantize_bn_folding_preserves_f32_outputs() {
        let model = build_model(3);
        let proto = decode_model(&model).expect("decodable");
        let (canonical, pairs) = canonicalize(&proto, false).expect("canonicalize");
        assert_eq!(pairs, 0);
        let ops: Vec<String> =
            canonical.graph.as_ref().expect("graph").node.iter().map(|n| n.op_type.clone()).collect();
        assert!(!ops.iter().any(|o| o == "BatchNormalization"), "{ops:?}");
        let imgs = images(4, 3);
        let a = run_all(&model, &imgs);
        let b = run_all(&canonical.encode_to_vec(), &imgs);
        for (a, b) in a.iter().zip(&b) {
            let max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(max_diff < 1e-4, "max diff {max_diff}");
        }
    }

    /// Max/min ratio of the per-output-channel weight ranges of every Conv.
    fn channel_range_spread(model: &ModelProto) -> Vec<f32> {
        let graph = model.graph.as_ref().expect("graph");
        graph
            .node
            .iter()
            .filter(|n| n.op_type == "Conv")
            .map(|n| {
                let w = graph.initializer.iter().find(|t| t.name == n.input[1]).expect("weight");
                let values = tensor_f32(w).expect("f32");
                let ranges: Vec<f32> = values
                    .chunks(values.len() / w.dims[0] as usize)
                    .map(|r| r.iter().fold(0.0f32, |m, v| m.max(v.abs())))
                    .collect();
                ranges.iter().copied().fold(0.0, f32::max) / ranges.iter().copied().fold(f32::INFINITY, f32::min)
            })
            .collect()
    }

    #[test]
    fn quantize_cross_layer_equalization_is_exact_and_evens_channels() {
        let model = build_model(3);
        let proto = decode_model(&model).expect("decodable");
        let (plain, _) = canonicalize(&proto, false).expect("canonicalize");
        let (equalized, pairs) = canonicalize(&proto, true).expect("equalize");
        // conv0 -> conv1, conv1 -> conv2, conv2 -> (GAP, Reshape) -> MatMul.
        assert_eq!(pairs, CHANNELS.len());
        let before = channel_range_spread(&plain);
        let after = channel_range_spread(&equalized);
        println!("per-channel weight range max/min before {before:?}, after {after:?}");
        assert!(after[0] < before[0] && after[1] < before[1], "{before:?} -> {after:?}");
        let imgs = images(4, 3);
        let a = run_all(&model, &imgs);
        let b = run_all(&equalized.encode_to_vec(), &imgs);
        for (a, b) in a.iter().zip(&b) {
            let max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(max_diff < 1e-4, "max diff {max_diff}");
        }
    }

    #[test]
    fn quantize_gemm_is_split_into_matmul_and_add() {
        let mut graph = GraphProto::default();
        graph.initializer.push(f32_tensor("b".into(), &[3, 2], &[1., 2., 3., 4., 5., 6.]));
        graph.initializer.push(f32_tensor("c".into(), &[3], &[0.5, 0.5, 0.5]));
        graph.node.push(node(
            "Gemm",
            "fc",
            &["x", "b", "c"],
            &["y"],
            vec![int_attr("transB", 1), float_attr("alpha", 2.0)],
        ));
        split_gemms(&mut graph).expect("split");
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMul", "Add"]);
        let weight = graph.initializer.iter().find(|t| t.name == graph.node[0].input[1]).expect("matmul weight");
        assert_eq!(weight.dims, [2, 3]);
        assert_eq!(tensor_f32(weight).expect("f32"), [2., 6., 10., 4., 8., 12.]);
        assert_eq!(graph.node[1].output, ["y"]);
    }

    #[test]
    fn quantize_per_channel_weights_round_trip_within_half_a_step() {
        let mut rng = Rng(1);
        let values: Vec<f32> = (0..4 * 50).map(|i| rng.normal() * (1 + i / 50) as f32).collect();
        let (q, scales) = quantize_rows(&values, 4);
        assert_eq!(scales.len(), 4);
        for (row, (qrow, scale)) in values.chunks(50).zip(q.chunks(50).zip(&scales)) {
            assert!(qrow.iter().all(|v| *v >= -127));
            for (v, q) in row.iter().zip(qrow) {
                assert!((v - f32::from(*q) * scale).abs() <= scale * 0.5 + 1e-6);
            }
        }
        let p = activation_params(Range { min: 0.0, max: 6.0 }, ActivationType::I8);
        assert_eq!(p.zero_point, -128, "ReLU outputs start at the type minimum");
        let p = activation_params(Range { min: 0.5, max: 2.0 }, ActivationType::U8);
        assert_eq!(p.zero_point, 0, "ranges are widened to contain zero");
    }

    #[test]
    fn quantize_percentile_clips_outliers() {
        let mut histogram = vec![0u64; 100];
        histogram[10..20].iter_mut().for_each(|c| *c = 10_000);
        histogram[99] = 1;
        let range = percentile_range(&histogram, Range { min: 0.0, max: 100.0 }, 99.99);
        assert!(range.max <= 21.0 && range.min >= 9.0, "{range:?}");
        let full = percentile_range(&histogram, Range { min: 0.0, max: 100.0 }, 100.0);
        assert_eq!(full, Range { min: 10.0, max: 100.0 });
    }

    /// A bulk of values and one far outlier: MSE clips the outlier (unlike min/max) but keeps
    /// the bulk inside the range; a flat distribution keeps (almost) its full span.
    #[test]
    fn quantize_mse_balances_rounding_and_clipping() {
        let span = Range { min: 0.0, max: 100.0 };
        let mut histogram = vec![0u64; 1000];
        histogram[..100].iter_mut().for_each(|c| *c = 100_000);
        histogram[999] = 1;
        let range = mse_range(&histogram, span, ActivationType::I8);
        assert!(range.max >= 9.0 && range.max < 30.0, "{range:?}");
        assert_eq!(range.min, 0.0);
        let flat = vec![10u64; 1000];
        let range = mse_range(&flat, span, ActivationType::I8);
        assert!(range.max >= 98.0, "{range:?}");
    }

    #[test]
    fn quantize_malformed_models_are_typed_errors() {
        let model = build_model(1);
        let calibration = images(2, 2);
        let options = QuantizeOptions::default();
        for cut in [1, 7, model.len() / 3, model.len() - 1] {
            let result = quantize(&model[..cut], &calibration, (H, W), &options);
            assert!(
                matches!(result, Err(QuantizeError::Decode(_) | QuantizeError::InvalidModel(_))),
                "truncated at {cut}: {result:?}"
            );
        }
        for garbage in [&b""[..], b"not an onnx model at all", &[0xff; 64]] {
            let result = quantize(garbage, &calibration, (H, W), &options);
            assert!(matches!(result, Err(QuantizeError::Decode(_) | QuantizeError::InvalidModel(_))), "{result:?}");
        }
        let no_graph = ModelProto { ir_version: 8, ..Default::default() }.encode_to_vec();
        assert!(matches!(quantize(&no_graph, &calibration, (H, W), &options), Err(QuantizeError::InvalidModel(_))));
        assert!(describe_tract_ops(&model[..model.len() / 2]).is_err());
    }

    #[test]
    fn quantize_bad_calibration_and_options_are_typed_errors() {
        let model = build_model(1);
        let options = QuantizeOptions::default();
        assert!(matches!(quantize(&model, &[], (H, W), &options), Err(QuantizeError::EmptyCalibration)));
        let short = vec![vec![0.0; H * W - 1]];
        assert!(matches!(quantize(&model, &short, (H, W), &options), Err(QuantizeError::ImageSize { index: 0, .. })));
        let nan = vec![vec![f32::NAN; H * W]];
        assert!(matches!(quantize(&model, &nan, (H, W), &options), Err(QuantizeError::NonFiniteImage { index: 0 })));
        let wrong_hw = vec![vec![0.0; 32 * 32]];
        assert!(matches!(quantize(&model, &wrong_hw, (32, 32), &options), Err(QuantizeError::Unsupported(_))));
        let none = QuantizeOptions { methods: vec![], ..QuantizeOptions::default() };
        assert!(matches!(quantize(&model, &images(1, 1), (H, W), &none), Err(QuantizeError::InvalidOptions(_))));
    }

    #[test]
    #[ignore = "profiling aid"]
    fn quantize_profile_nodes() {
        let fixture = fixture();
        let image = synthetic_image((H, W));
        for (label, bytes) in [("f32", &fixture.f32_model), ("int8", &fixture.quantized.onnx)] {
            let proto = decode_model(bytes).expect("decodable");
            let times = engine::profile(&proto, (H, W), &image, 50).expect("profile");
            let total: Duration = times.iter().map(|t| t.1).sum();
            println!("{label}: total {total:?}");
            for (name, t) in times.iter().take(25) {
                println!("  {t:>10.1?} {name}");
            }
        }
    }

    #[test]
    #[ignore = "design experiment"]
    fn quantize_experiment_variants() {
        let f32_model = build_model(7);
        let calibration = images(11, 40);
        let fresh = images(99, 12);
        let reference = run_all(&f32_model, &fresh);
        let image = synthetic_image((H, W));
        let variants = [
            (
                "per-channel i8",
                QuantizeOptions { weight_granularity: WeightGranularity::PerChannel, ..Default::default() },
            ),
            (
                "per-tensor i8",
                QuantizeOptions { weight_granularity: WeightGranularity::PerTensor, ..Default::default() },
            ),
            (
                "per-channel u8",
                QuantizeOptions {
                    weight_granularity: WeightGranularity::PerChannel,
                    activation_type: ActivationType::U8,
                    ..Default::default()
                },
            ),
            (
                "per-tensor u8",
                QuantizeOptions {
                    weight_granularity: WeightGranularity::PerTensor,
                    activation_type: ActivationType::U8,
                    ..Default::default()
                },
            ),
            ("float maxpool", QuantizeOptions { quantized_max_pool: false, ..Default::default() }),
        ];
        for (label, options) in variants {
            let q = quantize(&f32_model, &calibration, (H, W), &options).expect("quantize");
            let int8 = run_all(&q.onnx, &fresh);
            let cosines: Vec<f64> = int8.iter().zip(&reference).map(|(a, b)| cosine(a, b)).collect();
            let min = cosines.iter().copied().fold(1.0, f64::min);
            let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
            let latency = tract_latency_compare(&f32_model, &q.onnx, (H, W), 50).expect("latency");
            let proto = decode_model(&q.onnx).expect("decodable");
            let times = engine::profile(&proto, (H, W), &image, 20).expect("profile");
            println!(
                "{label}: method {:?}, fresh cosine mean {mean:.5} min {min:.5}, f32 {:?} int8 {:?}",
                q.report.method, latency.f32_median, latency.int8_median
            );
            for (name, t) in times.iter().take(8) {
                println!("    {t:>10.1?} {name}");
            }
        }
    }

    /// Prints single-thread median latency; never asserts on time.
    /// `cargo test -p autograph-trainer --lib quantize_latency -- --ignored --nocapture`
    #[test]
    #[ignore = "timing report, run on demand"]
    fn quantize_latency_f32_vs_int8() {
        let fixture = fixture();
        let latency = tract_latency_compare(&fixture.f32_model, &fixture.quantized.onnx, (H, W), 50).expect("latency");
        println!(
            "tract single-thread median over {} runs, 1x1x{H}x{W}: f32 {:?}, int8 {:?}, speedup {:.2}x",
            latency.runs,
            latency.f32_median,
            latency.int8_median,
            latency.speedup()
        );
    }
}
