//! `autograph-train check-bundle` refuses damaged bundles with exit code 2 and a clear message.

use std::path::Path;
use std::process::Command;

use autograph_shared::manifest::{
    Calibration, GraphIo, MANIFEST_FORMAT_VERSION, MODEL_F32_FILE, Manifest, Precision, Provenance, describe_model_file,
};
use autograph_shared::preprocess::PreprocessConfig;
use autograph_shared::protocol::{OperatingThresholds, Thresholds};
use autograph_trainer::export::{INPUT_NAME, OUTPUT_NAME, export_onnx};
use autograph_trainer::model::ModelConfig;
use burn::prelude::Device;

fn write_bundle(dir: &Path) {
    let device = Device::flex();
    let config = ModelConfig::new().with_height(16).with_width(32).with_channels(vec![4, 8]);
    let model = config.init(&device).expect("model");
    std::fs::write(dir.join(MODEL_F32_FILE), export_onnx(&model, &config, &device).expect("export")).expect("write");
    let t = OperatingThresholds { eer: 0.5, far_1pct: 0.6, far_0_1pct: 0.7, nearest_eer_far: None };
    let calibration =
        Calibration { references: 2, thresholds: Thresholds { skilled: Some(t), random: t }, replay_similarity: 0.99 };
    let preprocess = PreprocessConfig { height: 16, width: 32, ..PreprocessConfig::default() };
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        input_shape: [1, 16, 32],
        preprocess,
        embedding_dim: 128,
        io: GraphIo { input: INPUT_NAME.into(), output: OUTPUT_NAME.into() },
        f32_model: describe_model_file(dir, MODEL_F32_FILE, calibration).expect("describe"),
        int8_model: None,
        default_precision: Precision::F32,
        target_precision: Default::default(),
        provenance: Provenance {
            dataset: "test".into(),
            dataset_content_hash: "0".into(),
            training_config: serde_json::json!({}),
            created_unix: 0,
            trainer_version: "test".into(),
            split: None,
        },
        test_metrics: serde_json::Value::Null,
        adaptive: None,
        fusion: None,
    }
    .save(dir)
    .expect("manifest");
}

fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_autograph-train")).arg("check-bundle").arg(dir).output().expect("run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_good_bundle_passes_and_damaged_ones_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_bundle(dir);
    assert_eq!(check(dir).0, 0, "{}", check(dir).1);

    // Truncated model file: the hash no longer matches.
    let model = std::fs::read(dir.join(MODEL_F32_FILE)).expect("read");
    std::fs::write(dir.join(MODEL_F32_FILE), &model[..model.len() / 2]).expect("truncate");
    let (code, err) = check(dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sha256 mismatch") && err.contains("model.onnx"), "{err}");
    std::fs::write(dir.join(MODEL_F32_FILE), &model).expect("restore");

    // A manifest of another format version.
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).expect("manifest");
    std::fs::write(&manifest_path, text.replace("\"format_version\": 1", "\"format_version\": 7")).expect("write");
    let (code, err) = check(dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("format version 7"), "{err}");

    // A missing bundle.
    let (code, err) = check(&dir.join("nope"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
}

fn target_precision(dir: &Path, target: &str, precision: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_autograph-train"))
        .args(["target-precision", "--bundle"])
        .arg(dir)
        .args(["--target", target, "--precision", precision, "--measured", "qemu cortex-a72: f32 29 M, int8 32 M"])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn target_precision_is_recorded_with_its_measurement_and_checked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_bundle(dir);
    let (code, out) = target_precision(dir, "aarch64", "f32");
    assert_eq!(code, 0, "{out}");
    let manifest = Manifest::load(dir).expect("manifest");
    let entry = &manifest.target_precision["aarch64"];
    assert_eq!(entry.precision, Precision::F32);
    assert!(entry.measured.contains("cortex-a72"), "{entry:?}");
    let keys = vec!["aarch64".to_string()];
    assert_eq!(manifest.precision_for(&keys), (Precision::F32, Some("aarch64")));

    // No int8 model in this bundle: refused, and the manifest is unchanged.
    let (code, out) = target_precision(dir, "aarch64+dotprod", "int8");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no Int8 model"), "{out}");
    // Not a CPU name.
    let (code, out) = target_precision(dir, "../arm", "f32");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not a CPU name"), "{out}");
    assert_eq!(Manifest::load(dir).expect("manifest"), manifest);
}
