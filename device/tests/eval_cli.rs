//! `autograph eval --gallery-free` on a bundle built in the test and a data set of synthetic
//! writers: exit codes, the JSON report's keys, and that no gallery is involved.

mod common;

use common::{Run, Writer, autograph, write_bundle, write_file};

/// `autograph eval ARGS`.
fn eval(args: &[&str]) -> Run {
    autograph(std::iter::once("eval").chain(args.iter().copied()))
}

/// `<writer>/genuine/*` and `<writer>/forged/*`; forgeries are another writer's hand.
fn write_dataset(root: &std::path::Path) {
    for w in 1..=4u64 {
        for (sub, hand, samples) in [("genuine", w, 0..6u64), ("forged", w + 100, 0..2)] {
            let dir = root.join(format!("writer{w}/{sub}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            for s in samples {
                write_file(&dir, &format!("{s}.png"), &Writer::new(hand).signature_png(s));
            }
        }
    }
}

#[test]
fn eval_reports_the_shared_protocols_as_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("bundle");
    write_bundle(&bundle, 1);
    let data = tmp.path().join("writers");
    write_dataset(&data);
    let out = tmp.path().join("report");
    let (bundle_s, data_s, out_s) =
        (bundle.display().to_string(), data.display().to_string(), out.display().to_string());
    let run = eval(&[
        "--bundle",
        &bundle_s,
        "--gallery-free",
        "--data",
        &data_s,
        "--references",
        "1,3",
        "--trials",
        "50",
        "--out",
        &out_s,
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let json = run.json();
    assert_eq!(json["command"], "eval");
    // The test bundle records no split and another data set name: all writers are test writers.
    assert_eq!(json["split"]["mode"], "cross-dataset");
    assert_eq!(json["precision"], "int8", "int8 is the kiosk's default when the bundle has it");
    assert_eq!(json["runtime"], "tract");
    for r in ["R1", "R3"] {
        for kind in ["skilled", "random"] {
            assert!(json["verification"][r]["test"][kind]["eer"].is_number(), "{r}.{kind}: {json}");
            assert!(json["verification"][r]["test"][kind]["at_validation_eer_threshold"]["far"].is_number());
        }
    }
    assert!(json["identification"]["allway_1shot"]["accuracy"].is_number());
    assert!(json["leakage"]["background_only_eer"].is_number());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json")).expect("json");
    assert_eq!(written["verification"], json["verification"]);
    assert!(!tmp.path().join("gallery.bin").exists());

    // Text output names the figures.
    let text = eval(&[
        "--bundle",
        &bundle_s,
        "--gallery-free",
        "--data",
        &data_s,
        "--protocol",
        "verification",
        "--references",
        "3",
    ]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("skilled EER"), "{}", text.stdout);
    assert!(!text.stdout.contains("identification"), "only verification was asked for");
}

#[test]
fn eval_usage_errors_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("bundle");
    write_bundle(&bundle, 1);
    let (bundle_s, tmp_s) = (bundle.display().to_string(), tmp.path().display().to_string());
    // --gallery-free is required.
    let run = eval(&["--bundle", &bundle_s, "--data", &tmp_s]);
    assert_eq!(run.code, 2, "{run:?}");
    // A data set that is not there is named.
    let missing_s = tmp.path().join("missing").display().to_string();
    let run = eval(&["--bundle", &bundle_s, "--gallery-free", "--data", &missing_s]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
    // Omniglot's runs need all_runs.zip.
    let data = tmp.path().join("writers");
    write_dataset(&data);
    let data_s = data.display().to_string();
    let run = eval(&["--bundle", &bundle_s, "--gallery-free", "--data", &data_s, "--protocol", "omniglot"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("all_runs.zip"), "{}", run.stderr);
}
