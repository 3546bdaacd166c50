//! The evaluation suite end to end on synthetic writers drawn in the test: a tiny trained bundle,
//! `autograph-train eval`'s report directory (keys, figures consistent with the raw scores and
//! with the manifest), the kiosk's `autograph eval` on the same bundle, a cross-data-set run,
//! and `--kfold` with a tiny configuration.

use std::path::{Path, PathBuf};

use autograph_device::commands::PrecisionArg as DevicePrecision;
use autograph_device::commands::eval::EvalArgs as DeviceEvalArgs;
use autograph_device::commands::{BundleArgs, Exit};
use autograph_device::engine::Runtime;
use autograph_shared::dataset::splits::WriterSplit;
use autograph_shared::evaluation::Mode;
use autograph_shared::manifest::{Manifest, Precision};
use autograph_shared::metrics;
use autograph_tests::synthetic::{tiny_config, train_tiny, write_dataset};
use autograph_trainer::bundle::{export_bundle, quantize_bundle};
use autograph_trainer::eval::{EvalRequest, run as run_eval};
use autograph_trainer::kfold::{KFoldOptions, run_kfold};
use burn::prelude::Device;
use serde_json::Value;

/// Trains a tiny model on `data` and builds its bundle (f32 + int8).
fn tiny_bundle(tmp: &Path, data: &Path) -> (PathBuf, WriterSplit) {
    let run = tmp.join("run");
    let split = train_tiny(data, &run, (4, 3), &tiny_config());
    let device = Device::flex();
    let bundle = tmp.join("bundle");
    export_bundle(&run, &bundle, None, &device).expect("export");
    quantize_bundle(&bundle, &[data.to_path_buf()]).expect("quantize");
    (bundle, split)
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("{pointer} is not a number in the report"))
}

fn scores(v: &Value, key: &str, kind: &str) -> Vec<f32> {
    v[key][kind].as_array().expect("scores").iter().map(|x| x.as_f64().expect("score") as f32).collect()
}

#[test]
fn eval_reports_every_figure_consistently_and_the_kiosk_agrees() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("scribes");
    write_dataset(&data, "writer", 0..10, 12);
    let (bundle, split) = tiny_bundle(tmp.path(), &data);
    let manifest = Manifest::load(&bundle).expect("manifest");

    let out = tmp.path().join("report");
    let mut request = EvalRequest::new(bundle.clone(), vec![data.clone()]);
    request.options.trials = 200;
    request.out = Some(out.clone());
    let outcome = run_eval(&request).expect("eval");
    let report = &outcome.report;
    assert_eq!(report.split.mode, Mode::InDomain);
    assert_eq!(report.split.test, split.test);

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json")).expect("json");
    let raw: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).expect("scores.json")).expect("json");
    for r in [1, 3, 5, 10] {
        let key = format!("R{r}");
        for kind in ["skilled", "random"] {
            let base = format!("/verification/{key}/test/{kind}");
            let eer = number(&json, &format!("{base}/eer"));
            let auc = number(&json, &format!("{base}/auc"));
            assert!((0.0..=1.0).contains(&eer) && (0.0..=1.0).contains(&auc), "{base}: eer {eer} auc {auc}");
            // The figures are the raw scores' figures, at the recorded thresholds.
            let genuine = scores(&raw, &key, "genuine");
            let impostor = scores(&raw, &key, kind);
            assert_eq!(number(&json, &format!("{base}/genuine_scores")) as usize, genuine.len());
            assert_eq!(number(&json, &format!("{base}/impostor_scores")) as usize, impostor.len());
            let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
            assert!(close(eer, metrics::eer(&genuine, &impostor).eer), "{base}");
            let threshold = number(&json, &format!("/verification/{key}/thresholds/{kind}/eer")) as f32;
            let at = metrics::rates_at(&genuine, &impostor, threshold);
            assert!(close(number(&json, &format!("{base}/at_validation_eer_threshold/far")), at.far), "{base}");
            assert!(close(number(&json, &format!("{base}/at_validation_eer_threshold/frr")), at.frr), "{base}");
        }
        // 3 test writers, 12 genuine each: R references, 12 - R genuine probes per writer.
        assert_eq!(number(&json, &format!("/verification/{key}/test/writers")) as usize, 3);
        assert_eq!(scores(&raw, &key, "genuine").len(), 3 * (12 - r));
        assert_eq!(scores(&raw, &key, "skilled").len(), 3 * 3);
    }
    // R=3 is the manifest's R: its thresholds are the manifest's, and its figures are the ones
    // `quantize` measured with tract f32 on the same split and seed.
    let r3 = report.verification_at(3).expect("R3");
    assert_eq!(r3.thresholds, manifest.f32_model.calibration.thresholds);
    for kind in ["skilled", "random"] {
        for figure in ["eer", "auc", "genuine_scores", "impostor_scores"] {
            let ours = &json["verification"]["R3"]["test"][kind][figure];
            assert_eq!(ours, &manifest.test_metrics["f32_tract"][kind][figure], "{kind}.{figure}");
        }
    }
    // Other R are calibrated on the validation writers, never on the test writers.
    let r1 = report.verification_at(1).expect("R1");
    assert!(r1.threshold_source.contains("validation writers"), "{}", r1.threshold_source);
    for key in ["5way_1shot", "5way_5shot", "allway_1shot", "allway_5shot"] {
        assert!(json["identification"][key].is_object(), "identification.{key}");
    }
    assert_eq!(number(&json, "/identification/allway_1shot/n_way") as usize, 3);
    assert!(json["identification"]["5way_1shot"]["accuracy"].is_null(), "only 3 test writers");
    let accuracy = number(&json, "/identification/allway_5shot/accuracy");
    assert!((0.0..=1.0).contains(&accuracy));
    let leakage = number(&json, "/leakage/background_only_eer");
    assert!((0.0..=0.5).contains(&leakage));
    assert_eq!(json["anchors"].as_array().map(Vec::len), Some(4));

    let files = outcome.files.expect("report files");
    assert_eq!(files.plots.len(), 2 + 4, "roc, det and one histogram per R: {:?}", files.plots);
    for plot in &files.plots {
        let img = image::open(plot).unwrap_or_else(|e| panic!("{}: {e}", plot.display()));
        assert!(img.width() > 100 && img.height() > 100);
    }
    let md = std::fs::read_to_string(&files.markdown).expect("report.md");
    for needle in
        ["## Verification", "Protocol: verification, R=3", "2.84%", "SigNet", "Koch", "Leakage check", "roc.png"]
    {
        assert!(md.contains(needle), "report.md lacks {needle:?}");
    }

    // The kiosk's `autograph eval` runs the same protocol: with the same runtime and precision
    // it gives the same figures; by default it runs the int8 model.
    let device_args = |precision| DeviceEvalArgs {
        bundle: BundleArgs { bundle: bundle.clone() },
        gallery_free: true,
        data: data.clone(),
        protocol: Vec::new(),
        references: vec![1, 3, 5, 10],
        runtime: Runtime::Tract,
        precision,
        threads: 1,
        trials: 200,
        out: None,
    };
    let kiosk = autograph_device::commands::eval::run(&device_args(Some(DevicePrecision::F32))).expect("device eval");
    assert_eq!(kiosk.exit, Exit::Ok);
    assert_eq!(kiosk.json["command"], "eval");
    let trainer = serde_json::to_value(report).expect("json");
    assert_eq!(kiosk.json["verification"], trainer["verification"]);
    assert_eq!(kiosk.json["identification"], trainer["identification"]);
    assert_eq!(kiosk.json["leakage"], trainer["leakage"]);
    let int8 = autograph_device::commands::eval::run(&device_args(None)).expect("device eval int8");
    assert_eq!(int8.json["precision"], "int8");
    assert_eq!(
        int8.json["verification"]["R3"]["thresholds"],
        serde_json::to_value(manifest.model(Precision::Int8).expect("int8").calibration.thresholds).expect("json")
    );
    assert!(int8.json["verification"]["R3"]["test"]["skilled"]["eer"].is_number());

    // Another data set: every writer is a test writer, thresholds stay the bundle's.
    let other = tmp.path().join("strangers");
    write_dataset(&other, "stranger", 20..24, 8);
    let mut request = EvalRequest::new(bundle.clone(), vec![other]);
    request.options.references = vec![1, 3];
    request.options.trials = 50;
    let cross = run_eval(&request).expect("cross eval").report;
    assert_eq!(cross.split.mode, Mode::CrossDataset);
    assert_eq!(cross.split.test.len(), 4);
    for r in [1, 3] {
        let entry = cross.verification_at(r).expect("entry");
        assert_eq!(entry.thresholds, manifest.f32_model.calibration.thresholds);
        assert_eq!(entry.test.map(|m| m.writers), Some(4));
    }
}

#[test]
fn kfold_trains_every_fold_and_reports_mean_and_std() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("folds");
    write_dataset(&data, "writer", 0..10, 6);
    let options = KFoldOptions {
        folds: 2,
        validation: 0.4,
        seed: 3,
        config: tiny_config().with_epochs(1).with_steps_per_epoch(2),
        out: tmp.path().join("kfold"),
    };
    let report = run_kfold(&[data], &options, &Device::flex()).expect("kfold");
    assert_eq!(report.folds.len(), 2);
    let mut tested: Vec<String> = report.folds.iter().flat_map(|f| f.test_writers.clone()).collect();
    tested.sort();
    tested.dedup();
    assert_eq!(tested.len(), 10, "every writer is tested exactly once");
    let skilled = report.skilled_eer.expect("skilled EER");
    assert_eq!(skilled.folds, 2);
    let eers: Vec<f64> = report.folds.iter().filter_map(|f| f.test.skilled.map(|s| s.eer)).collect();
    assert!((skilled.mean - (eers[0] + eers[1]) / 2.0).abs() < 1e-12);
    assert!(options.out.join("kfold.json").is_file() && options.out.join("kfold.md").is_file());
    assert_eq!(report.folds_planned, 2);
    let md = autograph_trainer::kfold::markdown(&report);
    assert!(md.starts_with("# 2-fold") && !md.contains("Partial"), "{md}");
    // The report is rewritten after each fold: one read while a longer run is going says so.
    let partial = autograph_trainer::kfold::KFoldReport { folds_planned: 5, ..report };
    assert!(autograph_trainer::kfold::markdown(&partial).contains("Partial: 2 of 5 folds"));
}
