//! A SigNet-sized bundle for `autograph bench` (not a test of behaviour; ignored by default):
//!
//! ```text
//! AUTOGRAPH_BENCH_BUNDLE=/tmp/signet cargo test -p autograph-device --test bench_bundle -- --ignored
//! autograph bench --bundle /tmp/signet
//! ```
//!
//! The network has the shape of the prototype measured in STACK.md: 4 x [conv 3x3 (BatchNorm
//! folded into the conv) -> ReLU -> max-pool 2x2] with 32, 64, 96, 128 channels on a 96x192
//! input, global average pool, a 128x128 projection and L2 normalisation (~0.2 M parameters,
//! ~370 MFLOP per image). Weights are random: only the latency is meaningful.

mod common;

use autograph_shared::preprocess::PreprocessConfig;
use common::{int, ints, node, quantize, tensor_f32, tensor_i8, value_info};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{GraphProto, ModelProto, OperatorSetIdProto};

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
    let mut input = "image".to_string();
    let mut in_ch = 1i64;
    for (i, &out_ch) in CHANNELS.iter().enumerate() {
        let (w, b) = (format!("conv{i}_w"), format!("conv{i}_b"));
        let fan_in = (in_ch * 9) as usize;
        add_weight(
            &mut initializer,
            &mut nodes,
            &w,
            &[out_ch, in_ch, 3, 3],
            weights((out_ch * in_ch * 9) as usize, fan_in),
        );
        initializer.push(tensor_f32(&b, &[out_ch], vec![0.01; out_ch as usize]));
        let (conv, relu, pool) = (format!("conv{i}"), format!("relu{i}"), format!("pool{i}"));
        nodes.push(node(
            "Conv",
            &[&input, &w, &b],
            &conv,
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        ));
        nodes.push(node("Relu", &[&conv], &relu, vec![]));
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
