//! A SigNet-sized bundle for `autograph bench` (not a test of behaviour; ignored by default):
//!
//! ```text
//! AUTOGRAPH_BENCH_BUNDLE=/tmp/signet cargo test -p autograph-device --test bench_bundle -- --ignored
//! autograph bench --bundle /tmp/signet
//! AUTOGRAPH_ADAPTIVE_BUNDLE=/tmp/adaptive cargo test -p autograph-device --test bench_bundle -- --ignored
//! ```
//!
//! The network has the shape of the prototype measured in STACK.md: 4 x [conv 3x3 (BatchNorm
//! folded into the conv) -> ReLU -> max-pool 2x2] with 32, 64, 96, 128 channels on a 96x192
//! input, global average pool, a 128x128 projection and L2 normalisation (~0.2 M parameters,
//! ~370 MFLOP per image). The int8 model is QDQ: int8 weights, and int8 Quantize/Dequantize
//! pairs on every convolution's input and output. Weights are random: only latency is
//! meaningful.

mod common;

use autograph_shared::preprocess::PreprocessConfig;
use common::{int, ints, node, quantize, tensor_f32, tensor_i8, value_info};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};

const HEIGHT: i64 = 96;
const WIDTH: i64 = 192;
const CHANNELS: [i64; 4] = [32, 64, 96, 128];

fn signet_like(int8: bool) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut weights = |n: usize, fan_in: usize| -> Vec<f32> {
        let scale = (2.0 / fan_in as f32).sqrt();
        (0..n).map(|_| rng.random_range(-1.0f32..1.0) * scale).collect()
    };
    let (mut initializer, mut nodes) = (Vec::new(), Vec::new());
    // Weights: int8 behind DequantizeLinear in the int8 model.
    let add_weight = |initializer: &mut Vec<_>, nodes: &mut Vec<_>, name: &str, dims: &[i64], values: Vec<f32>| {
        if int8 {
            let (q, scale) = quantize(&values);
            initializer.push(tensor_i8(&format!("{name}_q"), dims, &q));
            initializer.push(tensor_f32(&format!("{name}_scale"), &[], vec![scale]));
            initializer.push(tensor_i8(&format!("{name}_zero"), &[], &[0]));
            nodes.push(node(
                "DequantizeLinear",
                &[&format!("{name}_q"), &format!("{name}_scale"), &format!("{name}_zero")],
                name,
                vec![],
            ));
        } else {
            initializer.push(tensor_f32(name, dims, values));
        }
    };
    // Activations: QuantizeLinear -> DequantizeLinear (int8, fixed scale) in the int8 model, the
    // QDQ form a static quantiser emits, which ONNX Runtime fuses into integer convolutions.
    let qdq = |initializer: &mut Vec<_>, nodes: &mut Vec<NodeProto>, x: &str, scale: f32| -> String {
        if !int8 {
            return x.to_string();
        }
        initializer.push(tensor_f32(&format!("{x}_s"), &[], vec![scale]));
        initializer.push(tensor_i8(&format!("{x}_z"), &[], &[0]));
        let (s, z, q, dq) = (format!("{x}_s"), format!("{x}_z"), format!("{x}_q"), format!("{x}_dq"));
        nodes.push(node("QuantizeLinear", &[x, &s, &z], &q, vec![]));
        nodes.push(node("DequantizeLinear", &[&q, &s, &z], &dq, vec![]));
        dq
    };
    let mut input = "image".to_string();
    let mut in_ch = 1i64;
    for (i, &out_ch) in CHANNELS.iter().enumerate() {
        let w = format!("conv{i}_w");
        let fan_in = (in_ch * 9) as usize;
        add_weight(
            &mut initializer,
            &mut nodes,
            &w,
            &[out_ch, in_ch, 3, 3],
            weights((out_ch * in_ch * 9) as usize, fan_in),
        );
        let x = qdq(&mut initializer, &mut nodes, &input, if i == 0 { 1.0 / 127.0 } else { 4.0 / 127.0 });
        let (conv, relu, pool) = (format!("conv{i}"), format!("relu{i}"), format!("pool{i}"));
        // No bias: BatchNorm's shift would be folded into one; irrelevant to latency.
        nodes.push(node("Conv", &[&x, &w], &conv, vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])]));
        let y = qdq(&mut initializer, &mut nodes, &conv, 4.0 / 127.0);
        nodes.push(node("Relu", &[&y], &relu, vec![]));
        nodes.push(node("MaxPool", &[&relu], &pool, vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])]));
        input = pool;
        in_ch = out_ch;
    }
    add_weight(&mut initializer, &mut nodes, "fc_w", &[128, in_ch], weights((128 * in_ch) as usize, in_ch as usize));
    initializer.push(tensor_f32("fc_b", &[128], vec![0.0; 128]));
    nodes.extend([
        node("GlobalAveragePool", &[&input], "gap", vec![]),
        node("Flatten", &["gap"], "flat", vec![int("axis", 1)]),
        node("Gemm", &["flat", "fc_w", "fc_b"], "fc", vec![int("transB", 1)]),
        node("ReduceL2", &["fc"], "norm", vec![ints("axes", &[1]), int("keepdims", 1)]),
        node("Div", &["fc", "norm"], "embedding", vec![]),
    ]);
    let graph = GraphProto {
        name: "signet-like".into(),
        node: nodes,
        initializer,
        input: vec![value_info("image", &[None, Some(1), Some(HEIGHT), Some(WIDTH)])],
        output: vec![value_info("embedding", &[None, Some(128)])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "autograph-device bench".into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
#[ignore = "writes a benchmark bundle to $AUTOGRAPH_BENCH_BUNDLE"]
fn write_signet_like_bundle() {
    let Some(dir) = std::env::var_os("AUTOGRAPH_BENCH_BUNDLE") else {
        eprintln!("set AUTOGRAPH_BENCH_BUNDLE to the directory to write");
        return;
    };
    let preprocess = PreprocessConfig { height: HEIGHT as u32, width: WIDTH as u32, ..PreprocessConfig::default() };
    let models = (signet_like(false), signet_like(true));
    common::write_bundle_files(std::path::Path::new(&dir), preprocess, &models, 42, |_| {});
}

/// The small bundle the CLI tests build (32x64 input), for `autograph bench` on it.
#[test]
#[ignore = "writes the tests' bundle to $AUTOGRAPH_TEST_BUNDLE"]
fn write_test_bundle() {
    let Some(dir) = std::env::var_os("AUTOGRAPH_TEST_BUNDLE") else {
        eprintln!("set AUTOGRAPH_TEST_BUNDLE to the directory to write");
        return;
    };
    common::write_bundle(std::path::Path::new(&dir), 1);
}

/// The tests' bundle with a cohort and the classifier rule, for `autograph bench` on the
/// writer-adaptive path with a real cohort.
#[test]
#[ignore = "writes the tests' adaptive bundle to $AUTOGRAPH_ADAPTIVE_BUNDLE"]
fn write_adaptive_test_bundle() {
    let Some(dir) = std::env::var_os("AUTOGRAPH_ADAPTIVE_BUNDLE") else {
        eprintln!("set AUTOGRAPH_ADAPTIVE_BUNDLE to the directory to write");
        return;
    };
    common::write_adaptive_bundle(std::path::Path::new(&dir), 1, autograph_shared::adaptive::DecisionRule::Classifier);
}
