//! train tiny -> export -> quantize -> check parity -> enrol -> verify, across the crates,
//! on synthetic writers drawn in the test (no real data needed).

use autograph_device::engine::{Bundle, Engine, EngineOptions};
use autograph_shared::gallery::KioskGallery;
use autograph_shared::manifest::{Manifest, Precision};
use autograph_tests::synthetic::{H, W, tiny_config, train_tiny, write_dataset};
use autograph_trainer::bundle::{check_bundle, export_bundle, quantize_bundle};
use burn::prelude::Device;

#[test]
fn train_export_quantize_enrol_verify() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    write_dataset(&data, "writer", 0..8, 6);
    let run = tmp.path().join("run");
    let config = tiny_config().with_epochs(3).with_steps_per_epoch(10).with_validation_references(2).with_seed(3);
    let split = train_tiny(&data, &run, (4, 2), &config);
    let device = Device::flex();

    // Export: thresholds from validation writers, figures on test writers, split recorded.
    let bundle_dir = tmp.path().join("bundle");
    let manifest = export_bundle(&run, &bundle_dir, None, &device).expect("export");
    assert_eq!(manifest.provenance.split.as_ref(), Some(&split));
    assert_eq!(manifest.input_shape, [1, H as u32, W as u32]);
    assert!(manifest.test_metrics["f32"]["random"]["eer"].is_number(), "{}", manifest.test_metrics);

    // Quantize: int8 file beside the f32 one, with its own calibration.
    let (manifest, summary) = quantize_bundle(&bundle_dir, std::slice::from_ref(&data)).expect("quantize");
    let int8 = manifest.int8_model.as_ref().expect("int8 model in manifest");
    assert!(int8.bytes < manifest.f32_model.bytes);
    assert!(!summary.tract_ops_int8.is_empty());

    // Parity: burn vs tract f32 and int8 vs f32 on the data set's images.
    let parity = check_bundle(&bundle_dir, std::slice::from_ref(&data), Some(&run), &device).expect("check");
    assert!(parity.images > 0);
    let diff = parity.burn_vs_tract_f32_max_abs.expect("burn compared");
    assert!(diff <= 1e-4, "burn vs tract {diff}");
    let cos = parity.int8_vs_f32_min_cosine.expect("int8 compared");
    assert!(cos >= 0.99, "int8 vs f32 cosine {cos}");

    // Device: enrol a test writer from genuine references and score held-out samples with
    // both precisions. A few seconds of training on drawn waves does not make a discriminating
    // model (real-data runs measure that); here the runtime path must work and f32 and int8
    // must agree.
    let mut scores = Vec::new();
    for precision in [Precision::F32, Precision::Int8] {
        let bundle = Bundle::open(&bundle_dir).expect("bundle");
        let options = EngineOptions { precision: Some(precision), ..Default::default() };
        let mut engine = Engine::open(bundle, options).expect("engine");
        let mut gallery = KioskGallery::new_boxed();
        let mut template = |w: &str, sub: &str, s: usize| {
            let p = engine.preprocess_file(&data.join(format!("{w}/{sub}/{s}.png"))).expect("preprocess");
            engine.template(&p).expect("embed")
        };
        let (target, other) = (&split.test[0], &split.test[1]);
        let refs: Vec<_> = (0..3).map(|s| template(target, "genuine", s)).collect();
        gallery.enroll(target, &refs, 0, false).expect("enrol");
        let other_refs: Vec<_> = (0..3).map(|s| template(other, "genuine", s)).collect();
        gallery.enroll(other, &other_refs, 0, false).expect("enrol");
        let probes = [template(target, "genuine", 5), template(target, "forged", 0), template(other, "genuine", 5)];
        let row: Vec<f32> = probes.iter().map(|p| gallery.verify_score(target, p).expect("enrolled")).collect();
        assert!(row.iter().all(|s| s.is_finite() && (-1.05..=1.05).contains(s)), "{precision:?}: {row:?}");
        assert_eq!(gallery.top_k::<2>(&probes[0]).len(), 2);
        scores.push(row);
    }
    for (f, q) in scores[0].iter().zip(&scores[1]) {
        assert!((f - q).abs() < 0.05, "f32 score {f} vs int8 score {q}");
    }

    // A tampered bundle is refused by the device with a hash mismatch.
    std::fs::write(bundle_dir.join("model.onnx"), b"tampered").expect("write");
    let reopened = Manifest::load(&bundle_dir).expect("manifest").read_model(&bundle_dir, Precision::F32);
    assert!(reopened.is_err());
}
