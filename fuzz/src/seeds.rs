//! The seed corpora, made in code: synthetic signatures (`shared::strokes::synth`), never a
//! file of the research data sets. Not committed: the replay test runs them from memory, and
//! `scripts/fuzz` writes them to `fuzz/work/seeds/<target>/` with
//!
//! ```sh
//! AUTOGRAPH_SEED_DIR=fuzz/work/seeds cargo test -p autograph-tests --test fuzz_replay -- --ignored write_seed_corpus
//! ```
//!
//! Included by tests/tests/fuzz_replay.rs next to `bodies.rs` (it needs prost and tract's
//! ONNX protobuf types, which the fuzz crate does not).

use std::io::Cursor;

use autograph_device::capture::screen::Layout;
use autograph_device::engine::{Bundle, Engine, EngineOptions};
use autograph_shared::adaptive::{AdaptiveConfig, Cohort, WriterModel};
use autograph_shared::gallery::{EMBEDDING_DIM, KioskGallery, Template};
use autograph_shared::online::{DynamicSettings, DynamicTemplate, ScoreNormalisation, Trajectory};
use autograph_shared::preprocess::{PreprocessConfig, preprocess_bytes};
use autograph_shared::strokes::raster::{RasterConfig, rasterise};
use autograph_shared::strokes::{Point, Recording, synth};
use embedded_graphics::prelude::Size;
use evdev::{AbsoluteAxisCode, EventType, KeyCode, SynchronizationCode};
use image::{DynamicImage, GrayImage, ImageFormat};
use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

use super::bodies::{self, AxisRange, EvdevInput, RawEvent};

/// One seed file: its target, its file name, its bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, bytes: Vec<u8>) -> Seed {
    Seed { target, name: name.into(), bytes }
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    out.extend(images());
    out.extend(palette_tiffs());
    out.extend(strokes());
    out.extend(bundles());
    out.extend(galleries());
    out.extend(cohorts());
    out.extend(evdev_streams());
    out.extend(svc2004_files());
    out.extend(mcyt_files());
    out.extend(dynamic_templates());
    out
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// A synthetic writer's signature as a small grey scan: dark ink on light paper.
fn scan(writer: u64, sample: u64, height: u32, paper: u8) -> GrayImage {
    let recording = synth::signature(writer, sample, 400, 160).expect("synthetic signature");
    let config = RasterConfig { height, min_width: 1.0, max_width: 2.5, default_pressure: 0.5 };
    let mut image = rasterise(&recording, &config).expect("raster");
    for p in image.pixels_mut() {
        // Paper at `paper`, ink kept dark: a scanner's grey page.
        p.0[0] = (u32::from(p.0[0]) * u32::from(paper) / 255) as u8;
    }
    image
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn images() -> Vec<Seed> {
    let gray = scan(1, 0, 32, 235);
    let luma = DynamicImage::ImageLuma8(gray.clone());
    let rgb = DynamicImage::ImageRgb8(luma.to_rgb8());
    // Transparent paper, opaque ink: flattened onto white by preprocessing.
    let mut rgba = luma.to_rgba8();
    for p in rgba.pixels_mut() {
        p.0[3] = 255 - p.0[0].min(200);
    }
    let rgba = DynamicImage::ImageRgba8(rgba);
    let luma16 = DynamicImage::ImageLuma16(luma.to_luma16());
    let small = DynamicImage::ImageLuma8(scan(2, 1, 24, 250));
    let seeds = vec![
        seed("preprocess", "gray.png", encode(&luma, ImageFormat::Png)),
        seed("preprocess", "rgb.png", encode(&rgb, ImageFormat::Png)),
        seed("preprocess", "rgba.png", encode(&rgba, ImageFormat::Png)),
        seed("preprocess", "gray16.png", encode(&luma16, ImageFormat::Png)),
        seed("preprocess", "gray.jpg", encode(&luma, ImageFormat::Jpeg)),
        seed("preprocess", "rgb.jpg", encode(&rgb, ImageFormat::Jpeg)),
        seed("preprocess", "gray.tif", encode(&small, ImageFormat::Tiff)),
        seed("preprocess", "rgb.tif", encode(&DynamicImage::ImageRgb8(small.to_rgb8()), ImageFormat::Tiff)),
        seed("preprocess", "gray.bmp", encode(&small, ImageFormat::Bmp)),
        seed("preprocess", "rgb.bmp", encode(&DynamicImage::ImageRgb8(small.to_rgb8()), ImageFormat::Bmp)),
        seed("preprocess", "palette8.tif", palette_tiff(&scan(3, 0, 24, 240), 8, 24, false)),
    ];
    for s in &seeds {
        preprocess_bytes(&s.bytes, &PreprocessConfig::default()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    seeds
}

/// An uncompressed palette TIFF (PhotometricInterpretation 3) of `image` at `bits` per pixel,
/// `rows_per_strip` rows a strip, little- or big-endian: the files `image` cannot read.
pub fn palette_tiff(image: &GrayImage, bits: u16, rows_per_strip: u32, big_endian: bool) -> Vec<u8> {
    let (w, h) = image.dimensions();
    let levels = 1u32 << bits;
    let per_byte = 8 / u32::from(bits);
    let row_bytes = w.div_ceil(per_byte);
    let mut pixels = Vec::new();
    for y in 0..h {
        let mut row = vec![0u8; row_bytes as usize];
        for x in 0..w {
            let index = (u32::from(image.get_pixel(x, y).0[0]) * (levels - 1) + 127) / 255;
            let shift = 8 - u32::from(bits) * (x % per_byte + 1);
            row[(x / per_byte) as usize] |= (index << shift) as u8;
        }
        pixels.extend(row);
    }
    let colormap: Vec<u16> = (0..3).flat_map(|_| (0..levels).map(move |i| (i * 65535 / (levels - 1)) as u16)).collect();
    let strips = h.div_ceil(rows_per_strip);
    let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };

    let entries = 9u16;
    let ifd_at = 8u32;
    let cmap_at = ifd_at + 2 + u32::from(entries) * 12 + 4;
    let offsets_at = cmap_at + colormap.len() as u32 * 2;
    let counts_at = offsets_at + strips * 4;
    let data_at = counts_at + strips * 4;
    let strip_len = |s: u32| (rows_per_strip.min(h - s * rows_per_strip)) * row_bytes;

    let mut out = Vec::new();
    out.extend_from_slice(if big_endian { b"MM\0*" } else { b"II*\0" });
    out.extend_from_slice(&u32b(ifd_at));
    out.extend_from_slice(&u16b(entries));
    let mut entry = |tag: u16, kind: u16, count: u32, value: u32| {
        out.extend_from_slice(&u16b(tag));
        out.extend_from_slice(&u16b(kind));
        out.extend_from_slice(&u32b(count));
        if kind == 3 && count == 1 {
            // A SHORT value sits left-justified in the 4-byte field.
            out.extend_from_slice(&u16b(value as u16));
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&u32b(value));
        }
    };
    entry(256, 4, 1, w);
    entry(257, 4, 1, h);
    entry(258, 3, 1, u32::from(bits));
    entry(259, 3, 1, 1);
    entry(262, 3, 1, 3);
    entry(273, 4, strips, if strips == 1 { data_at } else { offsets_at });
    entry(278, 4, 1, rows_per_strip);
    entry(279, 4, strips, if strips == 1 { strip_len(0) } else { counts_at });
    entry(320, 3, colormap.len() as u32, cmap_at);
    out.extend_from_slice(&u32b(0));
    for v in &colormap {
        out.extend_from_slice(&u16b(*v));
    }
    let mut at = data_at;
    for s in 0..strips {
        out.extend_from_slice(&u32b(at));
        at += strip_len(s);
    }
    for s in 0..strips {
        out.extend_from_slice(&u32b(strip_len(s)));
    }
    out.extend(pixels);
    out
}

fn palette_tiffs() -> Vec<Seed> {
    let image = scan(4, 2, 24, 245);
    let seeds = vec![
        seed("palette_tiff", "palette8-le.tif", palette_tiff(&image, 8, 24, false)),
        seed("palette_tiff", "palette8-be-strips.tif", palette_tiff(&image, 8, 5, true)),
        seed("palette_tiff", "palette4.tif", palette_tiff(&image, 4, 7, false)),
        seed("palette_tiff", "palette2-be.tif", palette_tiff(&image, 2, 24, true)),
        seed("palette_tiff", "palette1.tif", palette_tiff(&image, 1, 3, false)),
        seed("palette_tiff", "gray.tif", encode(&DynamicImage::ImageLuma8(image), ImageFormat::Tiff)),
    ];
    for s in &seeds[..5] {
        autograph_shared::preprocess::decode_gray(&s.bytes, &PreprocessConfig::default())
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// Strokes
// ---------------------------------------------------------------------------------------------

/// A synthetic recording thinned to every `keep`-th point (stroke ends kept), coordinates to
/// a tenth of a pixel: small seeds with the shape of a real one.
fn thin_recording(writer: u64, sample: u64, keep: usize, pressure: bool) -> Recording {
    let r = synth::signature(writer, sample, 300, 120).expect("synthetic signature");
    let strokes = r
        .strokes
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .filter(|(i, _)| i % keep == 0 || *i == s.len() - 1)
                .map(|(_, p)| {
                    let round = |v: f32| (v * 10.0).round() / 10.0;
                    Point::new(round(p.x), round(p.y), p.t, if pressure { p.p.map(round) } else { None })
                })
                .collect()
        })
        .collect();
    Recording::new(r.width, r.height, strokes).expect("thinned recording")
}

fn strokes() -> Vec<Seed> {
    let dot = Recording::new(50, 20, vec![vec![Point::new(25.0, 10.0, 0, Some(1.0))]]).expect("dot");
    vec![
        seed("strokes", "pressure.json", serde_json::to_vec(&thin_recording(5, 0, 6, true)).expect("json")),
        seed("strokes", "touch.json", thin_recording(6, 1, 8, false).to_json().into_bytes()),
        seed("strokes", "dot.json", dot.to_json().into_bytes()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Bundles: a tiny ONNX model and manifests
// ---------------------------------------------------------------------------------------------

const MODEL_H: u32 = 8;
const MODEL_W: u32 = 16;

fn tensor_f32(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values,
        ..Default::default()
    }
}

fn tensor_i8(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        raw_data: values.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
            }),
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

/// Deterministic weights in about [-0.5, 0.5].
fn weights(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + salt * 104_729) % 1000) as f32 / 1000.0) - 0.5).collect()
}

/// `image [N,1,8,16]` to a 128-value unit embedding. With `conv`: Conv 3x3 (2 channels), Relu,
/// AveragePool 4x4, Flatten, Gemm; without: AveragePool 4x4, Flatten, Gemm. With `int8`, the
/// Gemm weights are int8 behind DequantizeLinear (the weight-only QDQ form tract runs).
fn tiny_onnx(conv: bool, int8: bool) -> Vec<u8> {
    let dim = EMBEDDING_DIM as i64;
    let channels = if conv { 2 } else { 1 };
    let features = channels * i64::from(MODEL_H / 4) * i64::from(MODEL_W / 4);
    let gemm_w = weights((dim * features) as usize, 1);
    let mut initializer = vec![tensor_f32("gemm_b", &[dim], weights(dim as usize, 2))];
    let mut nodes = Vec::new();
    if int8 {
        let q: Vec<i8> = gemm_w.iter().map(|v| (v * 254.0).round().clamp(-127.0, 127.0) as i8).collect();
        initializer.push(tensor_i8("gemm_w_q", &[dim, features], &q));
        initializer.push(tensor_f32("gemm_w_scale", &[], vec![1.0 / 254.0]));
        initializer.push(tensor_i8("gemm_w_zero", &[], &[0]));
        nodes.push(node("DequantizeLinear", &["gemm_w_q", "gemm_w_scale", "gemm_w_zero"], "gemm_w", vec![]));
    } else {
        initializer.push(tensor_f32("gemm_w", &[dim, features], gemm_w));
    }
    let mut pooled_input = "image";
    if conv {
        initializer.push(tensor_f32("conv_w", &[2, 1, 3, 3], weights(18, 3)));
        initializer.push(tensor_f32("conv_b", &[2], vec![0.01, -0.01]));
        nodes.push(node(
            "Conv",
            &["image", "conv_w", "conv_b"],
            "conv",
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1]), ints("strides", &[1, 1])],
        ));
        nodes.push(node("Relu", &["conv"], "relu", vec![]));
        pooled_input = "relu";
    }
    nodes.extend([
        node("AveragePool", &[pooled_input], "pool", vec![ints("kernel_shape", &[4, 4]), ints("strides", &[4, 4])]),
        node("Flatten", &["pool"], "flat", vec![int("axis", 1)]),
        node("Gemm", &["flat", "gemm_w", "gemm_b"], "gemm", vec![int("transB", 1)]),
        node("ReduceL2", &["gemm"], "norm", vec![ints("axes", &[1]), int("keepdims", 1)]),
        node("Div", &["gemm", "norm"], "embedding", vec![]),
    ]);
    let graph = GraphProto {
        name: "autograph-fuzz-seed".into(),
        node: nodes,
        initializer,
        input: vec![value_info("image", &[None, Some(1), Some(i64::from(MODEL_H)), Some(i64::from(MODEL_W))])],
        output: vec![value_info("embedding", &[None, Some(dim)])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "autograph fuzz seeds".into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A manifest for the tiny model as JSON text (written by hand, not from the struct, so that
/// fields added to `Manifest` later with defaults do not change the seeds).
fn manifest_json(onnx: &[u8], int8: bool, cohort: Option<&[u8]>) -> String {
    let thresholds = serde_json::json!({
        "skilled": {"eer": 0.7, "far_1pct": 0.75, "far_0_1pct": 0.8},
        "random": {"eer": 0.6, "far_1pct": 0.65, "far_0_1pct": 0.7}
    });
    let model = |path: &str| {
        serde_json::json!({
            "path": path,
            "sha256": autograph_shared::sha256_hex(onnx),
            "bytes": onnx.len(),
            "calibration": {"references": 3, "thresholds": thresholds, "replay_similarity": 0.995}
        })
    };
    let mut manifest = serde_json::json!({
        "format_version": 1,
        "preprocess": PreprocessConfig { height: MODEL_H, width: MODEL_W, ..PreprocessConfig::default() },
        "input_shape": [1, MODEL_H, MODEL_W],
        "embedding_dim": EMBEDDING_DIM,
        "io": {"input": "image", "output": "embedding"},
        "f32_model": model("model.onnx"),
        "int8_model": if int8 { model("model.int8.onnx") } else { serde_json::Value::Null },
        "default_precision": if int8 { "int8" } else { "f32" },
        "provenance": {
            "dataset": "synthetic",
            "dataset_content_hash": "00",
            "training_config": {"epochs": 1},
            "created_unix": 0,
            "trainer_version": "fuzz-seed",
            "split": {"train": ["a", "b"], "validation": ["c"], "test": ["d"]}
        },
        "test_metrics": {"f32": {"skilled_eer": 0.2}}
    });
    if let Some(cohort) = cohort {
        manifest["adaptive"] = serde_json::json!({
            "cohort": {
                "path": "cohort.bin",
                "sha256": autograph_shared::sha256_hex(cohort),
                "bytes": cohort.len(),
                "templates": (cohort.len() - 52) / EMBEDDING_DIM,
                "writers": 2
            },
            "rule": "classifier",
            "f32_thresholds": thresholds,
            "config": AdaptiveConfig::default()
        });
    }
    serde_json::to_string_pretty(&manifest).expect("json")
}

fn bundles() -> Vec<Seed> {
    let cohort = bodies::fixed_cohort().to_bytes();
    let variants = [
        ("conv-f32", tiny_onnx(true, false), false, false),
        ("pool-int8", tiny_onnx(false, true), true, false),
        ("pool-f32-adaptive", tiny_onnx(false, false), false, true),
    ];
    let mut out = Vec::new();
    for (name, onnx, int8, adaptive) in variants {
        let manifest = manifest_json(&onnx, int8, adaptive.then_some(&cohort[..]));
        check_bundle_seed(&manifest, &onnx, &cohort, name);
        out.push(seed("manifest", format!("{name}.json"), manifest.clone().into_bytes()));
        out.push(seed("bundle", format!("{name}.bin"), bodies::join_bundle_input(manifest.as_bytes(), &onnx)));
    }
    out
}

/// A bundle seed must go all the way: manifest, tract load, an embedding.
fn check_bundle_seed(manifest: &str, onnx: &[u8], cohort: &[u8], name: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("manifest.json"), manifest).expect("write");
    for file in ["model.onnx", "model.int8.onnx"] {
        std::fs::write(dir.path().join(file), onnx).expect("write");
    }
    std::fs::write(dir.path().join("cohort.bin"), cohort).expect("write");
    let bundle = Bundle::open(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut engine = Engine::open(bundle, EngineOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let pixels = (0..MODEL_H * MODEL_W).map(|i| (i % 5) as f32 / 4.0).collect();
    let image = autograph_shared::Preprocessed { height: MODEL_H, width: MODEL_W, pixels };
    let embedding = engine.embed_one(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(embedding.len(), EMBEDDING_DIM, "{name}");
}

// ---------------------------------------------------------------------------------------------
// Gallery and cohort
// ---------------------------------------------------------------------------------------------

fn template(writer: u64, sample: u64) -> Template {
    let v: Vec<f32> =
        (0..EMBEDDING_DIM as u64).map(|i| (((i * 31 + writer * 17 + sample * 5) % 23) as f32) - 11.0).collect();
    Template::from_embedding(&v).expect("template")
}

fn galleries() -> Vec<Seed> {
    let model = [7u8; 32];
    let cohort = bodies::fixed_cohort();
    let config = AdaptiveConfig::default();
    let (ada, bob, carol) =
        ([template(1, 0), template(1, 1), template(1, 2)], [template(2, 0)], [template(3, 0), template(3, 1)]);
    let mut plain = KioskGallery::new_boxed();
    plain.enroll("ada", &ada[..2], 1_700_000_000, false).expect("enroll");
    plain.enroll("bob", &bob, 1_700_000_100, false).expect("enroll");
    let mut fitted = KioskGallery::new_boxed();
    fitted.enroll("ada", &ada, 1_700_000_000, false).expect("enroll");
    fitted.enroll_fitted("carol", &carol, 1_700_000_200, false, Some(cohort), &config).expect("enroll");
    let carol_model = WriterModel::fit(&carol, cohort, &config).expect("fit");
    vec![
        seed("gallery", "two-writers.gal", plain.to_bytes(&model)),
        seed("gallery", "writer-model.gal", fitted.to_bytes(&model)),
        seed("gallery", "empty.gal", KioskGallery::new_boxed().to_bytes(&model)),
        seed("gallery", "format1.gal", old_gallery(1, &[("ada", &ada[..2], None), ("bob", &bob, None)])),
        seed("gallery", "format2.gal", old_gallery(2, &[("ada", &ada, None), ("carol", &carol, Some(carol_model))])),
        seed("gallery", "envelope.gal", envelope(&plain.to_bytes(&model))),
    ]
}

/// An encrypted-gallery envelope around `plaintext` with the fuzz key's id and a zero nonce,
/// its body not encrypted and its tag zero (`seal` draws a random nonce, and a seed must be the
/// same every time): it passes the header checks and fails authentication.
fn envelope(plaintext: &[u8]) -> Vec<u8> {
    use autograph_device::crypt;
    let mut out = crypt::MAGIC.to_vec();
    out.extend_from_slice(&crypt::VERSION.to_le_bytes());
    out.extend_from_slice(&bodies::gallery_key().id().0);
    out.extend_from_slice(&[0u8; 24]);
    out.extend_from_slice(&((plaintext.len() + 16) as u64).to_le_bytes());
    assert_eq!(out.len(), crypt::HEADER_LEN);
    out.extend_from_slice(plaintext);
    out.extend_from_slice(&[0u8; 16]);
    let key_id = crypt::key_id_of(&out).expect("a valid header");
    assert_eq!(key_id, bodies::gallery_key().id());
    out
}

/// A gallery file of format 1 or 2, written byte by byte (module docs of shared::gallery):
/// those formats never change, while `to_bytes` writes the newest.
fn old_gallery(version: u32, writers: &[(&str, &[Template], Option<WriterModel>)]) -> Vec<u8> {
    let mut out = b"AGGALLRY".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // the length, set below
    out.extend_from_slice(&[7u8; 32]);
    for v in [EMBEDDING_DIM as u32, 1024, 8, writers.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (id, templates, model) in writers {
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&1_700_000_000u64.to_le_bytes());
        out.extend_from_slice(&1_700_000_000u64.to_le_bytes());
        out.extend_from_slice(&(templates.len() as u16).to_le_bytes());
        for t in *templates {
            out.extend(t.as_i8().iter().map(|&v| v as u8));
        }
        if version >= 2 {
            match model {
                None => out.push(0),
                Some(m) => {
                    out.push(1);
                    out.extend_from_slice(&m.to_bytes());
                }
            }
        }
    }
    out.extend_from_slice(&[0u8; 32]);
    let file = bodies::with_gallery_checksum(&out).expect("a header");
    KioskGallery::from_bytes(&file, None).unwrap_or_else(|e| panic!("format {version}: {e}"));
    file
}

fn cohorts() -> Vec<Seed> {
    let two = Cohort::new(vec![template(9, 0), template(9, 1)]).expect("cohort");
    vec![seed("cohort", "four.bin", bodies::fixed_cohort().to_bytes()), seed("cohort", "two.bin", two.to_bytes())]
}

// ---------------------------------------------------------------------------------------------
// evdev
// ---------------------------------------------------------------------------------------------

/// A signature drawn in the signing box, then a tap on Accept, as a pen's event stream.
/// `scale` is the raw axis maximum (the screen's own pixels when `None`).
fn evdev_signature(
    screen: Size,
    writer: u64,
    touch_key: bool,
    pressure: bool,
    scale: Option<i32>,
    dropped: bool,
) -> Vec<u8> {
    let layout = Layout::for_size(screen).expect("layout");
    let b = layout.signing_box;
    let recording = thin_recording(writer, 0, 10, pressure);
    let (sx, sy) = (b.size.width as f32 / recording.width as f32, b.size.height as f32 / recording.height as f32);
    let max = |side: u32| scale.unwrap_or(side as i32 - 1);
    let x_range = AxisRange::new(0, max(screen.width));
    let y_range = AxisRange::new(0, max(screen.height));
    // The tracker maps `min..=max` onto `0..=side - 1` screen pixels; this is its inverse.
    let raw = |v: f32, side: u32, range: AxisRange| {
        (range.min as f32 + v / (side - 1) as f32 * (range.max - range.min) as f32).round() as i32
    };
    let contact = if touch_key { KeyCode::BTN_TOUCH.0 } else { KeyCode::BTN_TOOL_PEN.0 };
    let (abs, key, syn) = (EventType::ABSOLUTE.0, EventType::KEY.0, EventType::SYNCHRONIZATION.0);
    let mut events = Vec::new();
    let push_point = |events: &mut Vec<RawEvent>, t: u32, x: f32, y: f32, p: Option<f32>| {
        events.push(RawEvent::new(t, abs, AbsoluteAxisCode::ABS_X.0, raw(x, screen.width, x_range)));
        events.push(RawEvent::new(t, abs, AbsoluteAxisCode::ABS_Y.0, raw(y, screen.height, y_range)));
        if let Some(p) = p {
            events.push(RawEvent::new(t, abs, AbsoluteAxisCode::ABS_PRESSURE.0, (p * 1023.0) as i32));
        }
    };
    let sync = |t: u32| RawEvent::new(t, syn, SynchronizationCode::SYN_REPORT.0, 0);
    let mut t = 0;
    for (s, stroke) in recording.strokes.iter().enumerate() {
        for (i, p) in stroke.iter().enumerate() {
            t = p.t;
            let (x, y) = (b.top_left.x as f32 + p.x * sx, b.top_left.y as f32 + p.y * sy);
            push_point(&mut events, t, x, y, p.p.or(pressure.then_some(0.5)));
            if i == 0 {
                events.push(RawEvent::new(t, key, contact, 1));
            }
            if dropped && s == 0 && i == 2 {
                events.push(RawEvent::new(t, syn, SynchronizationCode::SYN_DROPPED.0, 0));
            }
            events.push(sync(t));
        }
        events.push(RawEvent::new(t, key, contact, 0));
        events.push(sync(t));
    }
    let accept = layout.accept.center();
    for (dt, down) in [(300, 1), (380, 0)] {
        push_point(&mut events, t + dt, accept.x as f32, accept.y as f32, pressure.then_some(0.6));
        events.push(RawEvent::new(t + dt, key, contact, down));
        events.push(sync(t + dt));
    }
    let pressure_range = pressure.then(|| AxisRange::new(0, 1023));
    EvdevInput { touch_key, x: x_range, y: y_range, pressure: pressure_range, screen, events }.to_bytes()
}

fn evdev_streams() -> Vec<Seed> {
    let seeds = vec![
        seed("evdev", "touch-800x480.bin", evdev_signature(Size::new(800, 480), 1, true, false, None, false)),
        seed(
            "evdev",
            "pen-tablet-480x272.bin",
            evdev_signature(Size::new(480, 272), 2, false, true, Some(32767), false),
        ),
        seed("evdev", "dropped-1024x600.bin", evdev_signature(Size::new(1024, 600), 3, true, true, Some(4095), true)),
    ];
    for s in &seeds {
        assert!(bodies::evdev_accepts(&s.bytes), "{} reaches Accept", s.name);
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// On-line formats and dynamic templates
// ---------------------------------------------------------------------------------------------

/// SVC2004 Task 2 text of a synthetic signature: tablet units, a pen-up row between strokes,
/// `button` 0 at each stroke's first point.
fn svc2004_text(writer: u64, side_switch: bool) -> Vec<u8> {
    let r = thin_recording(writer, 0, 3, true);
    let mut rows = Vec::new();
    let t0 = 1_000_000u64;
    for stroke in &r.strokes {
        for (i, p) in stroke.iter().enumerate() {
            let button = if i == 0 {
                0
            } else if side_switch && i % 9 == 0 {
                2
            } else {
                1
            };
            let pressure = (p.p.unwrap_or(0.5) * 1023.0).round().max(1.0);
            let t = t0 + u64::from(p.t);
            rows.push(format!(
                "{} {} {t} {button} {} {} {pressure}",
                (p.x * 20.0) as i64,
                (p.y * 20.0) as i64,
                900 + i % 50,
                500 + i % 30
            ));
        }
        let last = stroke.last().expect("stroke");
        rows.push(format!(
            "{} {} {} 0 900 500 0",
            (last.x * 20.0) as i64,
            (last.y * 20.0) as i64,
            t0 + u64::from(last.t) + 10
        ));
    }
    format!("{}\n{}\n", rows.len(), rows.join("\n")).into_bytes()
}

fn svc2004_files() -> Vec<Seed> {
    // Named unlike the data set's `U<u>S<s>.TXT`: these are synthetic, never copies of it.
    let seeds = vec![
        seed("svc2004", "synthetic-11.TXT", svc2004_text(11, false)),
        seed("svc2004", "synthetic-12-side-switch.TXT", svc2004_text(12, true)),
    ];
    for s in &seeds {
        autograph_shared::online::parse_svc2004(&s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    seeds
}

/// An MCYT FPG file of a synthetic signature: the 60-byte header, then x, y, pressure,
/// azimuth, elevation as f32 at 100 Hz, zero pressure between strokes.
fn mcyt_fpg(writer: u64) -> Vec<u8> {
    let r = thin_recording(writer, 0, 2, true);
    let mut rows: Vec<[f32; 5]> = Vec::new();
    for stroke in &r.strokes {
        for p in stroke {
            rows.push([p.x * 10.0, p.y * 10.0, (p.p.unwrap_or(0.5) * 1023.0).max(1.0), 1200.0, 600.0]);
        }
        let last = stroke.last().expect("stroke");
        rows.push([last.x * 10.0, last.y * 10.0, 0.0, 1200.0, 600.0]);
    }
    let data_bytes = (rows.len() * 20) as u32;
    let mut header = vec![0u8; 60];
    header[..4].copy_from_slice(b"FPG ");
    header[4..6].copy_from_slice(&60u16.to_le_bytes());
    header[16..18].copy_from_slice(&32u16.to_le_bytes());
    header[18..22].copy_from_slice(&data_bytes.to_le_bytes());
    header[22..26].copy_from_slice(&5u32.to_le_bytes());
    header[26..30].copy_from_slice(&5u32.to_le_bytes());
    header[30..34].copy_from_slice(&(rows.len() as u32).to_le_bytes());
    header[36..40].copy_from_slice(&100u32.to_le_bytes());
    header.extend(rows.iter().flatten().flat_map(|v| v.to_le_bytes()));
    header
}

fn mcyt_files() -> Vec<Seed> {
    // Named unlike the data set's `NNNNvNN.fpg`: synthetic, never copies of it.
    let seeds = vec![seed("mcyt", "synthetic-21.fpg", mcyt_fpg(21)), seed("mcyt", "synthetic-22.fpg", mcyt_fpg(22))];
    for s in &seeds {
        autograph_shared::online::parse_mcyt_fpg(&s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    seeds
}

fn dynamic_templates() -> Vec<Seed> {
    let trajectories = |writer: u64, pressure: bool| -> Vec<Trajectory> {
        (0..3).map(|s| Trajectory::try_from(&thin_recording(writer, s, 1, pressure)).expect("trajectory")).collect()
    };
    let small = DynamicSettings { max_len: 48, ..DynamicSettings::default() };
    let other = DynamicSettings {
        max_len: 32,
        downsample: 3,
        band: 1.0,
        metric: autograph_shared::online::dtw::Metric::Euclidean,
        normalisation: ScoreNormalisation::Mean,
        ..DynamicSettings::default()
    };
    let template = |t: &[Trajectory], s: &DynamicSettings| DynamicTemplate::enrol(t, s).expect("enrol").to_bytes();
    vec![
        seed("dynamic_template", "pressure.agdt", template(&trajectories(31, true), &small)),
        seed("dynamic_template", "touch.agdt", template(&trajectories(32, false), &small)),
        seed("dynamic_template", "euclidean-mean.agdt", template(&trajectories(33, true)[..2], &other)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Worst cases too large to commit
// ---------------------------------------------------------------------------------------------

/// An input made in code, for a case whose file would be too large to commit.
pub type Made = (&'static str, &'static str, fn() -> Vec<u8>);

/// Reproducers of budget violations that are megabytes long: replayed by
/// tests/tests/fuzz_replay.rs like `fuzz/regressions/`.
pub fn large_regressions() -> Vec<Made> {
    vec![
        ("strokes", "zigzag-200000-points.json", zigzag_recording),
        ("palette_tiff", "repeated-strips-12000.tif", repeated_strips_tiff),
    ]
}

/// A 110 KB palette TIFF, 1 pixel wide and 12 000 rows high, whose 12 000 one-row strips each
/// claim the whole file: the palette reader copied every strip (1.3 GB) before keeping only
/// the image's 12 000 bytes.
fn repeated_strips_tiff() -> Vec<u8> {
    let rows = 12_000u32;
    let cmap_at = 8 + 2 + 9 * 12 + 4;
    let offsets_at = cmap_at + 3 * 256 * 2;
    let counts_at = offsets_at + 4 * rows;
    let total = counts_at + 4 * rows + rows;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&9u16.to_le_bytes());
    let entries: [(u16, u16, u32, u32); 9] = [
        (256, 4, 1, 1),
        (257, 4, 1, rows),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 3),
        (273, 4, rows, offsets_at),
        (278, 4, 1, 1),
        (279, 4, rows, counts_at),
        (320, 3, 3 * 256, cmap_at),
    ];
    for (tag, kind, count, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend((0..3 * 256u32).flat_map(|i| ((i % 256) as u16 * 257).to_le_bytes()));
    out.extend((0..rows).flat_map(|_| 0u32.to_le_bytes()));
    out.extend((0..rows).flat_map(|_| total.to_le_bytes()));
    out.extend((0..rows).map(|i| (i % 251) as u8));
    assert_eq!(out.len(), total as usize);
    out
}

/// Worst cases of the image path at the decoder's size limit (several seconds in a debug
/// build): replayed by an ignored test (`.ci/run` runs ignored tests).
pub fn slow_worst_cases() -> Vec<Made> {
    vec![("preprocess", "stripes-12000x12000.png", stripes_png)]
}

/// A valid recording whose 200 000 points zigzag across an 8192-pixel box: the rasteriser's
/// spline took 800 MB and a minute before its ink length was bounded (6 MB of JSON).
fn zigzag_recording() -> Vec<u8> {
    let points = (0..autograph_shared::strokes::MAX_POINTS as u32)
        .map(|i| Point::new(if i % 2 == 0 { 0.0 } else { 8192.0 }, (i * 37 % 300) as f32, i, None))
        .collect();
    let recording = Recording::new(8192, 300, vec![points]).expect("valid recording");
    serde_json::to_vec(&recording).expect("json")
}

/// A 12000x12000 (the largest side accepted) PNG of ink and paper stripes, 230 KB: ink spans
/// the whole page, so the crop is the whole image (a full-size f32 crop would be 576 MB).
fn stripes_png() -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let side = 12_000u32;
    let row: Vec<u8> = (0..side).map(|x| if x / 3 % 2 == 0 { 0 } else { 255 }).collect();
    let pixels = row.repeat(side as usize);
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Up)
        .write_image(&pixels, side, side, image::ExtendedColorType::L8)
        .expect("encode");
    out
}
