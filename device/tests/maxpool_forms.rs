//! Which way of writing the network's 2×2 max-pool tract runs fastest (a measurement, not a
//! test of behaviour; ignored):
//!
//! ```text
//! cargo test --release -p autograph-device --test maxpool_forms -- --ignored --nocapture
//! ```
//!
//! tract spends a third of the f32 embedding in `MaxPool` (README "Speed on the kiosk"). Each
//! form below computes the same values on the default network's four pooled shapes, f32 and i8:
//! the ONNX `MaxPool`, a `Reshape` to `[C, H/2, 2, W/2, 2]` and `ReduceMax`, and four strided
//! `Slice`s combined by `Max`. Measured in session 6 (x86_64, f32 / i8, all four pools): MaxPool
//! 0.60 / 0.22 ms, Slice+Max 1.07x / 4.1x that, Reshape+ReduceMax 37x / 87x: the graph keeps
//! `MaxPool`.

mod common;

use std::time::Instant;

use common::{int, ints, node, value_info};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto};
use tract_onnx::prelude::*;

const RUNS: usize = 200;
/// (channels, height, width) entering each of the default network's pools.
const SHAPES: [(i64, i64, i64); 4] = [(16, 64, 128), (32, 32, 64), (64, 16, 32), (128, 8, 16)];

fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn model(form: &str, (c, h, w): (i64, i64, i64), i8_input: bool) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut initializer = Vec::new();
    match form {
        "MaxPool" => {
            nodes.push(node("MaxPool", &["x"], "y", vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])]))
        }
        "Reshape+ReduceMax" => {
            initializer.push(int64s("shape6", &[1, c, h / 2, 2, w / 2, 2]));
            nodes.push(node("Reshape", &["x", "shape6"], "x6", vec![]));
            nodes.push(node("ReduceMax", &["x6"], "y", vec![ints("axes", &[3, 5]), int("keepdims", 0)]));
        }
        "Slice+Max" => {
            initializer.push(int64s("axes", &[2, 3]));
            initializer.push(int64s("steps", &[2, 2]));
            initializer.push(int64s("ends", &[h, w]));
            for (i, (y, x)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                initializer.push(int64s(&format!("starts{i}"), &[y, x]));
                let starts = format!("starts{i}");
                nodes.push(node("Slice", &["x", &starts, "ends", "axes", "steps"], &format!("s{i}"), vec![]));
            }
            nodes.push(node("Max", &["s0", "s1", "s2", "s3"], "y", vec![]));
        }
        other => panic!("unknown form {other}"),
    }
    let mut input = value_info("x", &[Some(1), Some(c), Some(h), Some(w)]);
    let mut output = value_info("y", &[Some(1), Some(c), Some(h / 2), Some(w / 2)]);
    if i8_input {
        for info in [&mut input, &mut output] {
            if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
                info.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.elem_type = DataType::Int8 as i32;
            }
        }
    }
    let graph = GraphProto {
        name: "pool".into(),
        node: nodes,
        initializer,
        input: vec![input],
        output: vec![output],
        ..Default::default()
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn run(bytes: &[u8], input: &Tensor) -> (f64, Tensor) {
    let plan = onnx().model_for_read(&mut &bytes[..]).and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable());
    let plan = plan.expect("plan");
    let mut state = plan.spawn().expect("state");
    let mut out = None;
    let mut ms: Vec<f64> = (0..RUNS + 5)
        .map(|_| {
            let t = Instant::now();
            out = Some(state.run(tvec!(input.clone().into_tvalue())).expect("run").remove(0));
            t.elapsed().as_secs_f64() * 1e3
        })
        .skip(5)
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[RUNS / 2], out.expect("ran").into_tensor())
}

#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn maxpool_forms() {
    for i8_input in [false, true] {
        let mut totals = [0.0f64; 3];
        for shape @ (c, h, w) in SHAPES {
            let n = (c * h * w) as usize;
            let input = if i8_input {
                let values: Vec<i8> = (0..n).map(|i| ((i * 7919) % 251) as i8).collect();
                Tensor::from_shape(&[1, c as usize, h as usize, w as usize], &values).expect("input")
            } else {
                let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1009) as f32 / 1009.0 - 0.5).collect();
                Tensor::from_shape(&[1, c as usize, h as usize, w as usize], &values).expect("input")
            };
            let (reference_ms, reference) = run(&model("MaxPool", shape, i8_input), &input);
            totals[0] += reference_ms;
            let mut line = format!("{c:>4}x{h:>3}x{w:>3} MaxPool {reference_ms:.4} ms");
            for (k, form) in ["Reshape+ReduceMax", "Slice+Max"].into_iter().enumerate() {
                let (ms, out) = run(&model(form, shape, i8_input), &input);
                assert_eq!(out, reference, "{form} computes another pool");
                totals[k + 1] += ms;
                line.push_str(&format!(", {form} {ms:.4} ms ({:.2}x)", ms / reference_ms));
            }
            eprintln!("{} {line}", if i8_input { "i8 " } else { "f32" });
        }
        eprintln!(
            "{} all four: MaxPool {:.4} ms, Reshape+ReduceMax {:.4} ms ({:.2}x), Slice+Max {:.4} ms ({:.2}x)",
            if i8_input { "i8 " } else { "f32" },
            totals[0],
            totals[1],
            totals[1] / totals[0],
            totals[2],
            totals[2] / totals[0]
        );
    }
}
