//! Fixtures for the device tests: a model bundle built in code (an ONNX graph written with
//! tract-onnx's protobuf types, and a manifest whose hashes match), synthetic signature scans,
//! and a runner for the `autograph` binary.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autograph_shared::adaptive::{AdaptiveConfig, Cohort, DecisionRule, WriterModel};
use autograph_shared::gallery::Template;
use autograph_shared::manifest::{
    AdaptiveDecision, COHORT_FILE, Calibration, CohortFile, GraphIo, MANIFEST_FORMAT_VERSION, MODEL_F32_FILE,
    MODEL_INT8_FILE, Manifest, Precision, Provenance, describe_model_file,
};
use autograph_shared::preprocess::PreprocessConfig;
use autograph_shared::protocol::{OperatingThresholds, Thresholds};
use image::{GrayImage, Luma};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

pub const HEIGHT: u32 = 32;
pub const WIDTH: u32 = 64;
pub const DIM: usize = 128;
const CHANNELS: usize = 8;
const KERNEL: usize = 5;
const POOL: usize = 2;
const FEATURES: usize = CHANNELS * (HEIGHT as usize / POOL) * (WIDTH as usize / POOL);

/// Thresholds written into the test manifest (chosen from the scores these writers get; see
/// `scores_separate_writers` in tests/engine.rs).
/// Under the nearest-reference rule: genuine probes score at least 0.81, other writers at most
/// 0.57.
pub const SKILLED: OperatingThresholds =
    OperatingThresholds { eer: 0.68, far_1pct: 0.72, far_0_1pct: 0.76, nearest_eer_far: None };
pub const RANDOM: OperatingThresholds =
    OperatingThresholds { eer: 0.64, far_1pct: 0.68, far_0_1pct: 0.72, nearest_eer_far: None };
pub const REPLAY_SIMILARITY: f32 = 0.998;
/// Samples the tests enrol as references, and samples they verify as fresh signatures. No two
/// of them are near-copies (checked in tests/engine.rs), so only a re-submitted reference
/// trips the replay guard.
pub const REFERENCE_SAMPLES: std::ops::Range<u64> = 0..8;
pub const PROBE_SAMPLES: std::ops::Range<u64> = 20..40;
/// Writers the tests use (alice, bob, carol, and one never enrolled).
pub const TEST_WRITERS: [u64; 4] = [1, 2, 3, 9];

/// The calibration written for both model files.
pub fn calibration() -> Calibration {
    Calibration {
        references: 3,
        thresholds: Thresholds { skilled: Some(SKILLED), random: RANDOM },
        replay_similarity: REPLAY_SIMILARITY,
    }
}

pub fn preprocess_config() -> PreprocessConfig {
    PreprocessConfig { height: HEIGHT, width: WIDTH, ..PreprocessConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// The ONNX model
// ---------------------------------------------------------------------------------------------

pub fn tensor_f32(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values,
        ..Default::default()
    }
}

pub fn tensor_i8(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        raw_data: values.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

pub fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

pub fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
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

/// Weights of the test network, from a seed.
pub struct Weights {
    pub conv_w: Vec<f32>,
    pub conv_b: Vec<f32>,
    pub gemm_w: Vec<f32>,
    pub gemm_b: Vec<f32>,
}

impl Weights {
    /// Random weights from `seed`. The gemm bias centres the features: it subtracts the
    /// projection of the mean pooled feature of a few reference writers, so embeddings spread
    /// over the sphere instead of all sharing the large positive component that ReLU features
    /// have (without it any two signatures have cosine ~0.9).
    pub fn seeded(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = move |scale: f32| {
            // Sum of uniforms: close enough to Gaussian for a random projection.
            (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * scale
        };
        let conv_w = (0..CHANNELS * KERNEL * KERNEL).map(|_| normal(0.2)).collect();
        let conv_b = (0..CHANNELS).map(|_| normal(0.05)).collect();
        let gemm_w: Vec<f32> = (0..DIM * FEATURES).map(|_| normal(0.1)).collect();
        let mut weights = Self { conv_w, conv_b, gemm_w, gemm_b: vec![0.0; DIM] };

        let mut mean = vec![0f32; FEATURES];
        let samples: Vec<Vec<f32>> = (1000..1016u64)
            .map(|w| {
                let png = Writer::new(w).signature_png(0);
                let image = autograph_shared::preprocess_bytes(&png, &preprocess_config()).expect("preprocess");
                weights.pooled_features(&image.pixels)
            })
            .collect();
        for f in &samples {
            for (m, v) in mean.iter_mut().zip(f) {
                *m += v / samples.len() as f32;
            }
        }
        weights.gemm_b = weights
            .gemm_w
            .chunks_exact(FEATURES)
            .map(|row| -row.iter().zip(&mean).map(|(w, m)| w * m).sum::<f32>())
            .collect();
        weights
    }

    /// Conv -> Relu -> AveragePool -> Flatten, computed directly (as the graph does).
    fn pooled_features(&self, pixels: &[f32]) -> Vec<f32> {
        let (h, w) = (HEIGHT as usize, WIDTH as usize);
        let (ph, pw) = (h / POOL, w / POOL);
        let half = KERNEL / 2;
        let mut out = vec![0f32; FEATURES];
        for c in 0..CHANNELS {
            for y in 0..h {
                for x in 0..w {
                    let mut s = self.conv_b[c];
                    for ky in 0..KERNEL {
                        for kx in 0..KERNEL {
                            let (iy, ix) = ((y + ky).wrapping_sub(half), (x + kx).wrapping_sub(half));
                            if iy < h && ix < w {
                                s += self.conv_w[(c * KERNEL + ky) * KERNEL + kx] * pixels[iy * w + ix];
                            }
                        }
                    }
                    out[(c * ph + y / POOL) * pw + x / POOL] += s.max(0.0) / (POOL * POOL) as f32;
                }
            }
        }
        out
    }
}

/// Symmetric per-tensor int8 quantisation: values and scale.
pub fn quantize(values: &[f32]) -> (Vec<i8>, f32) {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let scale = max / 127.0;
    (values.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// The embedding network as ONNX bytes:
/// `image [N,1,H,W] -> Conv 5x5 (8) -> Relu -> AveragePool 4x4 -> Flatten -> Gemm (128)
/// -> x / ReduceL2(x) -> embedding [N,128]`.
///
/// Average pooling over an 8x16 grid (rather than a global pool) keeps where the ink lies, so
/// differently shaped signatures embed far apart even with random weights. With `int8`, the
/// conv and gemm weights are stored as int8 behind `DequantizeLinear` (a weight-only QDQ
/// graph, the form tract runs).
pub fn onnx_model(weights: &Weights, int8: bool) -> Vec<u8> {
    let (h, w) = (i64::from(HEIGHT), i64::from(WIDTH));
    let mut initializer = vec![
        tensor_f32("conv_b", &[CHANNELS as i64], weights.conv_b.clone()),
        tensor_f32("gemm_b", &[DIM as i64], weights.gemm_b.clone()),
    ];
    let mut nodes = Vec::new();
    let conv_dims = [CHANNELS as i64, 1, KERNEL as i64, KERNEL as i64];
    let gemm_dims = [DIM as i64, FEATURES as i64];
    if int8 {
        for (name, values, dims) in
            [("conv_w", &weights.conv_w, &conv_dims[..]), ("gemm_w", &weights.gemm_w, &gemm_dims[..])]
        {
            let (q, scale) = quantize(values);
            initializer.push(tensor_i8(&format!("{name}_q"), dims, &q));
            initializer.push(tensor_f32(&format!("{name}_scale"), &[], vec![scale]));
            initializer.push(tensor_i8(&format!("{name}_zero"), &[], &[0]));
            nodes.push(node(
                "DequantizeLinear",
                &[&format!("{name}_q"), &format!("{name}_scale"), &format!("{name}_zero")],
                name,
                vec![],
            ));
        }
    } else {
        initializer.push(tensor_f32("conv_w", &conv_dims, weights.conv_w.clone()));
        initializer.push(tensor_f32("gemm_w", &gemm_dims, weights.gemm_w.clone()));
    }
    let half = (KERNEL / 2) as i64;
    nodes.extend([
        node(
            "Conv",
            &["image", "conv_w", "conv_b"],
            "conv",
            vec![
                ints("kernel_shape", &[KERNEL as i64, KERNEL as i64]),
                ints("pads", &[half, half, half, half]),
                ints("strides", &[1, 1]),
            ],
        ),
        node("Relu", &["conv"], "relu", vec![]),
        node(
            "AveragePool",
            &["relu"],
            "pool",
            vec![ints("kernel_shape", &[POOL as i64, POOL as i64]), ints("strides", &[POOL as i64, POOL as i64])],
        ),
        node("Flatten", &["pool"], "flat", vec![int("axis", 1)]),
        node("Gemm", &["flat", "gemm_w", "gemm_b"], "gemm", vec![int("transB", 1)]),
        node("ReduceL2", &["gemm"], "norm", vec![ints("axes", &[1]), int("keepdims", 1)]),
        node("Div", &["gemm", "norm"], "embedding", vec![]),
    ]);
    let graph = GraphProto {
        name: "autograph-test".into(),
        node: nodes,
        initializer,
        input: vec![value_info("image", &[None, Some(1), Some(h), Some(w)])],
        output: vec![value_info("embedding", &[None, Some(DIM as i64)])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "autograph-device tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// Writes a complete bundle (f32 and int8 models, manifest with matching hashes) into `dir`.
pub fn write_bundle(dir: &Path, seed: u64) -> Manifest {
    write_bundle_with(dir, seed, |_| {})
}

/// [`write_bundle`], letting the caller adjust the manifest before it is saved.
pub fn write_bundle_with(dir: &Path, seed: u64, edit: impl FnOnce(&mut Manifest)) -> Manifest {
    let weights = Weights::seeded(seed);
    let models = (onnx_model(&weights, false), onnx_model(&weights, true));
    write_bundle_files(dir, preprocess_config(), &models, seed, edit)
}

// ---------------------------------------------------------------------------------------------
// Writer-adaptive bundles
// ---------------------------------------------------------------------------------------------

/// Background writers of the test cohort (never the test writers, nor the calibration ones).
pub const COHORT_WRITERS: std::ops::Range<u64> = 100..160;
/// Samples of each cohort writer: 60 writers x 5 = 300 templates.
pub const COHORT_SAMPLES: std::ops::Range<u64> = 0..5;
/// "Validation" writers the adaptive thresholds are calibrated on (as the trainer does).
pub const CALIBRATION_WRITERS: std::ops::Range<u64> = 200..216;

/// What [`write_adaptive_bundle`] adds to a bundle of seed `seed`: the cohort's bytes and the
/// thresholds of each adaptive rule, calibrated on [`CALIBRATION_WRITERS`] (3 references each;
/// genuine probes against the other calibration writers' probes: no skilled forgeries here, so
/// only random-forgery thresholds).
#[derive(Debug, Clone)]
pub struct AdaptiveFixture {
    pub cohort: Cohort,
    pub normalised: Thresholds,
    pub classifier: Thresholds,
    pub consistency: Thresholds,
    pub subspace: Thresholds,
}

/// The int8 templates of `(writer, sample)` pairs, embedded by the f32 model of bundle `seed`
/// with the device's engine (tract), exactly as `autograph enroll` would.
pub fn templates_of(seed: u64, samples: &[(u64, u64)]) -> Vec<Template> {
    use autograph_device::engine::{Bundle, Engine, EngineOptions};
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), seed);
    let bundle = Bundle::open(dir.path()).expect("bundle");
    let mut engine = Engine::open(bundle, EngineOptions::default()).expect("engine");
    samples
        .iter()
        .map(|&(w, s)| {
            let image = engine.preprocess_bytes(&Writer::new(w).signature_png(s)).expect("preprocess");
            engine.template(&image).expect("template")
        })
        .collect()
}

/// [`AdaptiveFixture`] of bundle `seed`, computed once per test process.
pub fn adaptive_fixture(seed: u64) -> AdaptiveFixture {
    static CACHE: std::sync::Mutex<Vec<(u64, AdaptiveFixture)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, f)) = cache.iter().find(|(s, _)| *s == seed) {
        return f.clone();
    }
    let cohort_pairs: Vec<(u64, u64)> = COHORT_WRITERS.flat_map(|w| COHORT_SAMPLES.map(move |s| (w, s))).collect();
    let cohort = Cohort::new(templates_of(seed, &cohort_pairs)).expect("cohort");
    let (refs, probes) = (0..3u64, 20..26u64);
    let pairs: Vec<(u64, u64)> =
        CALIBRATION_WRITERS.flat_map(|w| refs.clone().chain(probes.clone()).map(move |s| (w, s))).collect();
    let templates = templates_of(seed, &pairs);
    let per_writer = refs.end as usize + probes.clone().count();
    let writers: Vec<(&[Template], &[Template])> =
        templates.chunks_exact(per_writer).map(|t| t.split_at(refs.end as usize)).collect();
    let config = AdaptiveConfig::default();
    let thresholds = |rule: DecisionRule| {
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for (i, (refs, _)) in writers.iter().enumerate() {
            let model = WriterModel::fit(refs, &cohort, &config).expect("fit");
            for (j, (_, probes)) in writers.iter().enumerate() {
                let scores = probes.iter().map(|p| model.score(rule, refs, p, Some(&cohort)));
                if i == j { genuine.extend(scores) } else { impostor.extend(scores.take(2)) }
            }
        }
        // These writers are separable: the EER threshold would sit on the lowest genuine score
        // of the calibration writers, so the test writers' genuine scores would straddle it.
        // Take the middle of the gap then, as a margin-maximising calibration would.
        let lowest_genuine = genuine.iter().copied().fold(f32::INFINITY, f32::min);
        let highest_impostor = impostor.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let eer = if highest_impostor < lowest_genuine {
            (lowest_genuine + highest_impostor) / 2.0
        } else {
            autograph_shared::metrics::eer(&genuine, &impostor).threshold
        };
        Thresholds {
            skilled: None,
            random: OperatingThresholds {
                eer,
                far_1pct: autograph_shared::metrics::threshold_at_far(&impostor, 0.01),
                far_0_1pct: autograph_shared::metrics::threshold_at_far(&impostor, 0.001),
                nearest_eer_far: None,
            },
        }
    };
    let fixture = AdaptiveFixture {
        normalised: thresholds(DecisionRule::Normalised),
        classifier: thresholds(DecisionRule::Classifier),
        consistency: thresholds(DecisionRule::Consistency),
        subspace: thresholds(DecisionRule::Subspace),
        cohort,
    };
    cache.push((seed, fixture.clone()));
    fixture
}

/// [`write_bundle`] plus a cohort (`cohort.bin`) and an `adaptive` manifest section deciding by
/// `rule` (its thresholds from [`adaptive_fixture`]; f32 and int8 alike).
pub fn write_adaptive_bundle(dir: &Path, seed: u64, rule: DecisionRule) -> Manifest {
    write_adaptive_bundle_with(dir, seed, rule, |_| {})
}

/// [`write_adaptive_bundle`], letting the caller adjust the manifest before it is saved.
pub fn write_adaptive_bundle_with(
    dir: &Path,
    seed: u64,
    rule: DecisionRule,
    edit: impl FnOnce(&mut Manifest),
) -> Manifest {
    let fixture = adaptive_fixture(seed);
    std::fs::create_dir_all(dir).expect("bundle dir");
    let bytes = fixture.cohort.to_bytes();
    std::fs::write(dir.join(COHORT_FILE), &bytes).expect("write cohort");
    let thresholds = match rule {
        DecisionRule::Normalised => fixture.normalised,
        DecisionRule::Classifier => fixture.classifier,
        DecisionRule::Consistency => fixture.consistency,
        DecisionRule::Subspace => fixture.subspace,
        DecisionRule::Nearest => calibration().thresholds,
    };
    write_bundle_with(dir, seed, |m| {
        m.adaptive = Some(AdaptiveDecision {
            cohort: CohortFile {
                path: COHORT_FILE.into(),
                sha256: autograph_shared::sha256_hex(&bytes),
                bytes: bytes.len() as u64,
                templates: fixture.cohort.len(),
                writers: COHORT_WRITERS.count(),
            },
            rule,
            f32_thresholds: thresholds,
            int8_thresholds: Some(thresholds),
            config: AdaptiveConfig::default(),
        });
        edit(m);
    })
}

/// Writes `models` (f32, int8) and a manifest describing them into `dir`.
pub fn write_bundle_files(
    dir: &Path,
    preprocess: PreprocessConfig,
    models: &(Vec<u8>, Vec<u8>),
    seed: u64,
    edit: impl FnOnce(&mut Manifest),
) -> Manifest {
    std::fs::create_dir_all(dir).expect("bundle dir");
    std::fs::write(dir.join(MODEL_F32_FILE), &models.0).expect("write f32 model");
    std::fs::write(dir.join(MODEL_INT8_FILE), &models.1).expect("write int8 model");
    let mut manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        input_shape: [1, preprocess.height, preprocess.width],
        preprocess,
        embedding_dim: DIM as u32,
        io: GraphIo { input: "image".into(), output: "embedding".into() },
        f32_model: describe_model_file(dir, MODEL_F32_FILE, calibration()).expect("describe f32"),
        int8_model: Some(describe_model_file(dir, MODEL_INT8_FILE, calibration()).expect("describe int8")),
        default_precision: Precision::F32,
        target_precision: Default::default(),
        provenance: Provenance {
            dataset: "synthetic".into(),
            dataset_content_hash: "00".into(),
            training_config: serde_json::json!({ "seed": seed }),
            created_unix: 0,
            trainer_version: "device tests".into(),
            split: None,
        },
        test_metrics: serde_json::Value::Null,
        adaptive: None,
        fusion: None,
    };
    edit(&mut manifest);
    manifest.save(dir).expect("save manifest");
    manifest
}

// ---------------------------------------------------------------------------------------------
// Synthetic signatures
// ---------------------------------------------------------------------------------------------

/// The per-sample variation sequence steps by the square roots of these primes (irrational,
/// and independent of each other).
const KRONECKER_PRIMES: [u32; 5] = [2, 3, 5, 7, 11];

/// A writer's habitual signature: a pen path `y = sum of sines of x`, plus loops.
#[derive(Debug, Clone)]
pub struct Writer {
    waves: Vec<(f32, f32, f32)>, // amplitude, frequency, phase
    loops: Vec<(f32, f32)>,      // position along the line, radius
    slant: f32,
}

impl Writer {
    // 6.28 rather than TAU: the writers (and the thresholds in this file) were tuned with it.
    #[allow(clippy::approx_constant)]
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let waves = (0..3)
            .map(|_| (rng.random_range(0.05..0.3), rng.random_range(1.0..12.0), rng.random_range(0.0..6.28)))
            .collect();
        let loops =
            (0..rng.random_range(1..4)).map(|_| (rng.random_range(0.1..0.9), rng.random_range(0.08..0.25))).collect();
        Self { waves, loops, slant: rng.random_range(-0.4..0.4) }
    }

    /// One signature by this writer: the habitual path with the natural variation of sample
    /// `sample` (jitter in shape, size, position, pen width), as a grey-paper PNG.
    pub fn signature_png(&self, sample: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(sample.wrapping_mul(7919).wrapping_add(13));
        // The shape's variation comes from a Kronecker sequence rather than the RNG: samples
        // then differ from each other by design, where random draws occasionally give two
        // near-identical signatures (which the replay guard rightly flags).
        let spread =
            |k: usize| ((sample as f64 + 1.0) * f64::from(KRONECKER_PRIMES[k]).sqrt()).fract() as f32 * 2.0 - 1.0;
        let waves: Vec<(f32, f32, f32)> =
            self.waves.iter().enumerate().map(|(k, &(a, f, p))| (a, f, p + 0.35 * spread(2 + k))).collect();
        let (width, height) = (rng.random_range(400..420u32), rng.random_range(150..160u32));
        let (w, h) = (width as f32, height as f32);
        let (x0, x1) = (w * rng.random_range(0.07..0.09), w * rng.random_range(0.89..0.91));
        let yc = h * rng.random_range(0.48..0.52);
        let amp = h * 0.35 * (1.0 + 0.15 * spread(0));
        let slant = self.slant + 0.08 * spread(1);
        let pen = rng.random_range(1.5f32..3.5);
        let mut img = GrayImage::from_pixel(width, height, Luma([228]));
        let mut dot = |x: f32, y: f32| {
            let r = pen.ceil() as i32;
            for dy in -r..=r {
                for dx in -r..=r {
                    if (dx * dx + dy * dy) as f32 <= pen * pen {
                        let (px, py) = (x as i32 + dx, y as i32 + dy);
                        if px >= 0 && py >= 0 && (px as u32) < width && (py as u32) < height {
                            img.put_pixel(px as u32, py as u32, Luma([35]));
                        }
                    }
                }
            }
        };
        let steps = 3000;
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let dy: f32 = waves.iter().map(|&(a, f, p)| a * (f * t * std::f32::consts::TAU / 4.0 + p).sin()).sum();
            let y = yc + amp * dy;
            let x = x0 + (x1 - x0) * t + slant * (y - yc);
            dot(x, y);
        }
        for &(pos, radius) in &self.loops {
            let cx = x0 + (x1 - x0) * pos;
            let r = h * radius;
            for i in 0..=600 {
                let a = i as f32 / 600.0 * std::f32::consts::TAU;
                dot(cx + r * a.cos() + slant * r * a.sin(), yc + r * a.sin());
            }
        }
        png(&img)
    }
}

pub fn png(img: &GrayImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

/// A blank page (paper only, slight noise).
pub fn blank_png() -> Vec<u8> {
    png(&GrayImage::from_fn(300, 120, |x, y| Luma([226 + ((x * 7 + y * 3) % 5) as u8])))
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write file");
    path
}

/// Writes signature `sample` of `writer` as `dir/<name>.png`.
pub fn signature_file(dir: &Path, name: &str, writer: &Writer, sample: u64) -> PathBuf {
    write_file(dir, &format!("{name}.png"), &writer.signature_png(sample))
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// What a run of `autograph` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A command running `program`, under the emulator in `AUTOGRAPH_TEST_RUNNER` when one is set:
/// `scripts/cross-test` runs these tests for aarch64 under qemu-user, where a test binary cannot
/// start another ARM binary by itself (no binfmt handler in containers).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    command_under("AUTOGRAPH_TEST_RUNNER", program)
}

/// A command running `program` under the emulator command line in the environment variable
/// `runner_var` (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`), or directly when it is unset.
pub fn command_under(runner_var: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let runner = std::env::var(runner_var).unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut command = Command::new(emulator);
            command.args(words).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// The device key the tests' galleries are encrypted under: one key file in Cargo's scratch
/// directory for integration tests (`target/tmp`), created (mode 0600) by the first test that
/// needs it. [`autograph`] passes it as `AUTOGRAPH_GALLERY_KEY`, so no test reads or writes a
/// key under `$HOME`.
pub fn test_key() -> PathBuf {
    static KEY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("autograph-test-gallery.key");
        autograph_device::crypt::KeyFile::new(&path).read_or_create().expect("the tests' gallery key");
        path
    })
    .clone()
}

/// `path` as a gallery encrypted under [`test_key`], for tests that use the store directly.
pub fn gallery_file(path: &Path) -> autograph_device::store::GalleryFile {
    autograph_device::store::GalleryFile::new(path, autograph_device::crypt::KeyFile::new(test_key()))
}

/// Runs `autograph` with `args` (strings or paths), galleries under [`test_key`].
pub fn autograph<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    autograph_with(args, |_| {})
}

/// [`autograph`], letting the caller adjust the command (environment, ...) before it runs.
pub fn autograph_with<I, S>(args: I, adjust: impl FnOnce(&mut Command)) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = autograph_command(args);
    adjust(&mut cmd);
    run_output(cmd.output().expect("run autograph"))
}

/// The `autograph` command [`autograph`] runs: bundle and gallery only from the arguments, the
/// gallery key [`test_key`], and no configuration directory of the user's.
pub fn autograph_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = command(env!("CARGO_BIN_EXE_autograph"));
    cmd.args(args)
        .env_remove("AUTOGRAPH_BUNDLE")
        .env_remove("AUTOGRAPH_GALLERY")
        .env("AUTOGRAPH_GALLERY_KEY", test_key())
        .env("XDG_CONFIG_HOME", Path::new(env!("CARGO_TARGET_TMPDIR")).join("autograph-test-config"));
    cmd
}

/// A finished process as a [`Run`].
pub fn run_output(Output { status, stdout, stderr }: Output) -> Run {
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Asserts that `value` is an object with exactly `keys` (a schema check of the JSON output).
pub fn assert_keys(value: &serde_json::Value, keys: &[&str]) {
    let obj = value.as_object().unwrap_or_else(|| panic!("not an object: {value}"));
    let mut found: Vec<&str> = obj.keys().map(String::as_str).collect();
    found.sort_unstable();
    let mut expected = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(found, expected, "keys of {value}");
}

/// Keys of `autograph verify --json` (the runtime's `runtime` and `precision` included).
#[allow(dead_code)]
pub const VERIFY_KEYS: [&str; 20] = [
    "command",
    "user",
    "image",
    "strokes",
    "modality",
    "dynamic_score",
    "fused_score",
    "decision",
    "accepted",
    "similarity",
    "score",
    "normalised",
    "rule",
    "fallback",
    "threshold",
    "operating_point",
    "references",
    "replay",
    "runtime",
    "precision",
];

/// `autograph bench --json --runs 3 --bundle DIR`, checked to succeed.
#[allow(dead_code)]
pub fn bench_json(bundle: &Path) -> Run {
    let run = autograph([
        "bench".as_ref(),
        "--json".as_ref(),
        "--runs".as_ref(),
        "3".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    run
}
