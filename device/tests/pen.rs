//! Pen captures through the `autograph` binary: `enroll --strokes` builds the writer's dynamic
//! template beside its image templates, and `verify --strokes` decides on the fused score when
//! the bundle calibrates fusion (issue #17). Recordings come from the synthetic signer, the
//! bundle's fusion is written by hand: what is checked is the plumbing and the rule, not the
//! accuracy (the trainer's `fuse` measures that on SVC2004).

mod common;

use std::path::{Path, PathBuf};

use autograph_device::store;
use autograph_shared::manifest::{FusionCalibration, FusionDecision, FusionProvenance};
use autograph_shared::online::{Fusion, ScoreStats};
use autograph_shared::protocol::{OperatingThresholds, Thresholds};
use autograph_shared::strokes::synth;
use common::{VERIFY_KEYS, assert_keys, autograph, write_bundle_with};

/// The fused score's thresholds written into the test bundle.
const FUSED: OperatingThresholds =
    OperatingThresholds { eer: -0.5, far_1pct: 0.5, far_0_1pct: 1.5, nearest_eer_far: None };

fn fusion() -> Fusion {
    Fusion {
        dynamic: ScoreStats { mean: 0.45, std: 0.1 },
        image: ScoreStats { mean: 0.6, std: 0.2 },
        w_dynamic: 1.5,
        w_image: 1.0,
        bias: 0.0,
    }
}

struct Setup {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    gallery: PathBuf,
}

impl Setup {
    /// A bundle with fusion calibrated for both precisions (`fused`), or none.
    fn new(fused: bool) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let bundle = dir.path().join("bundle");
        write_bundle_with(&bundle, 4, |m| {
            if fused {
                let calibration = FusionCalibration {
                    fusion: fusion(),
                    thresholds: Thresholds { skilled: Some(FUSED), random: FUSED },
                };
                m.fusion = Some(FusionDecision {
                    f32: Some(calibration.clone()),
                    int8: Some(calibration),
                    provenance: FusionProvenance {
                        online: "synthetic".into(),
                        images: "synthetic".into(),
                        validation_users: vec![],
                        test_users: vec![],
                        references: 3,
                        test_metrics: serde_json::Value::Null,
                    },
                });
            }
        });
        let gallery = dir.path().join("gallery.bin");
        Self { dir, bundle, gallery }
    }

    /// Writer `writer`'s `sample`-th signature as a kiosk recording file.
    fn recording(&self, writer: u64, sample: u64) -> PathBuf {
        let path = self.dir.path().join(format!("w{writer}-s{sample}.json"));
        let json = synth::signature(writer, sample, 600, 200).expect("synthetic signature").to_json();
        std::fs::write(&path, json).expect("write recording");
        path
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// `autograph <command> <rest> --bundle B --gallery G --json` (`rest` right after the
    /// command, so a trailing `--strokes` in `command` takes the files of `rest`).
    fn run(&self, command: &[&str], rest: &[&Path]) -> common::Run {
        let mut args: Vec<std::ffi::OsString> = command.iter().map(Into::into).collect();
        args.extend(rest.iter().map(|p| p.as_os_str().to_owned()));
        args.extend(["--bundle".into(), self.bundle.clone().into(), "--gallery".into(), self.gallery.clone().into()]);
        args.push("--json".into());
        autograph(args)
    }

    fn enroll_pen(&self, user: &str, writer: u64, samples: std::ops::Range<u64>) -> common::Run {
        let files: Vec<PathBuf> = samples.map(|s| self.recording(writer, s)).collect();
        let mut rest: Vec<&Path> = vec![Path::new("--strokes")];
        rest.extend(files.iter().map(PathBuf::as_path));
        self.run(&["enroll", "--user", user], &rest)
    }

    fn verify_pen(&self, user: &str, writer: u64, sample: u64) -> common::Run {
        let file = self.recording(writer, sample);
        self.run(&["verify", "--user", user, "--strokes"], &[&file])
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn pen_captures_enrol_dynamically_and_verify_on_the_fused_score() {
    let s = Setup::new(true);
    let run = s.enroll_pen("ada", 1, 0..3);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!((j["templates_added"].as_u64(), j["pen_captures_added"].as_u64()), (Some(3), Some(3)), "{j}");
    assert_eq!(j["dynamic_references"], 3);
    s.enroll_pen("ben", 2, 0..3);
    // The dynamic template is in the gallery file, beside the image templates.
    let gallery = store::load(&common::gallery_file(&s.gallery), None).expect("gallery loads");
    let ada = gallery.get("ada").expect("ada");
    assert_eq!((ada.templates().len(), ada.dynamic().map(|d| d.reference_count())), (3, Some(3)));

    // A fresh signature of ada's: rendered, embedded, and fused with its trajectory.
    let genuine = s.verify_pen("ada", 1, 7);
    let g = genuine.json();
    assert_keys(&g, &VERIFY_KEYS);
    assert_eq!(
        (g["modality"].as_str(), g["rule"].as_str(), g["image"].is_null()),
        (Some("fused"), Some("nearest"), true)
    );
    assert_eq!(g["score"], g["fused_score"]);
    let expected = fusion().score(f(&g["dynamic_score"]) as f32, f(&g["similarity"]) as f32);
    assert!((f(&g["score"]) - f64::from(expected)).abs() < 1e-5, "{g}");
    assert!((f(&g["threshold"]) - f64::from(FUSED.eer)).abs() < 1e-6, "{g}");
    assert_eq!(genuine.code, if g["accepted"] == true { 0 } else { 1 });
    // Ben's signature claimed as ada's: lower on both views, so lower fused.
    let impostor = s.verify_pen("ada", 2, 7).json();
    assert_eq!(impostor["modality"], "fused");
    assert!(f(&impostor["dynamic_score"]) < f(&g["dynamic_score"]), "{impostor} vs {g}");
    assert!(f(&impostor["score"]) < f(&g["score"]), "{impostor} vs {g}");

    // Appending pen captures extends the dynamic template; --replace starts it again.
    let more = s.enroll_pen("ada", 1, 3..5).json();
    assert_eq!((more["templates_total"].as_u64(), more["dynamic_references"].as_u64()), (Some(5), Some(5)), "{more}");
    let replaced =
        s.run(&["enroll", "--user", "ada", "--replace", "--strokes"], &[&s.recording(1, 10), &s.recording(1, 11)]);
    assert_eq!(replaced.code, 0, "{replaced:?}");
    assert_eq!(replaced.json()["dynamic_references"], 2);
}

#[test]
fn writers_without_pen_captures_and_bundles_without_fusion_decide_on_the_image() {
    // A writer enrolled from an image only: a pen capture is scored on the image, and says so.
    let s = Setup::new(true);
    let image = common::signature_file(s.dir.path(), "ada-image", &common::Writer::new(1), 0);
    let run = s.run(&["enroll", "--user", "ada"], &[&image]);
    assert_eq!((run.code, run.json()["dynamic_references"].as_u64()), (0, Some(0)), "{run:?}");
    let j = s.verify_pen("ada", 1, 7).json();
    assert_eq!((j["modality"].as_str(), j["dynamic_score"].is_null()), (Some("image"), true), "{j}");
    assert!(j["fallback"].as_str().is_some_and(|f| f.contains("without pen captures")), "{j}");

    // A bundle without fusion: the pen's score is shown, the image decides as the bundle's rule.
    let s = Setup::new(false);
    s.enroll_pen("ada", 1, 0..3);
    let j = s.verify_pen("ada", 1, 7).json();
    assert_eq!(
        (j["modality"].as_str(), j["fallback"].is_null(), j["fused_score"].is_null()),
        (Some("image"), true, true)
    );
    assert!(j["dynamic_score"].as_f64().is_some_and(|d| d > 0.0), "{j}");
    assert_eq!(j["score"], j["similarity"]);
}

#[test]
fn bad_pen_captures_are_refused_naming_the_file() {
    let s = Setup::new(true);
    // Not JSON, and JSON that is not a recording: exit 2, the file named, nothing enrolled.
    for (name, bytes) in [("garbage.json", &b"\x00\x01 not json"[..]), ("empty.json", b"{\"strokes\": []}")] {
        let bad = s.file(name, bytes);
        let run = s.run(&["enroll", "--user", "ada", "--strokes"], &[&bad, &s.recording(1, 1)]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(name), "{}", run.stderr);
        assert!(!s.gallery.exists(), "nothing was written");
    }
    // One pen capture cannot make a dynamic template for a new writer.
    let run = s.run(&["enroll", "--user", "ada", "--strokes"], &[&s.recording(1, 1)]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("at least 2"), "{}", run.stderr);
    assert!(!s.gallery.exists(), "nothing was written");
    // An unknown kind of file.
    let odd = s.file("pen.csv", b"1,2,3\n");
    let run = s.run(&["enroll", "--user", "ada", "--strokes"], &[&odd, &s.recording(1, 1)]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("pen.csv") && run.stderr.contains(".json"), "{}", run.stderr);
    // An SVC2004 file carries no image: verify needs the image too.
    s.enroll_pen("ada", 1, 0..3);
    let svc = s.file("U1S1.TXT", b"3\n100 100 0 1 0 0 500\n110 105 10 1 0 0 520\n120 112 20 1 0 0 530\n");
    let run = s.run(&["verify", "--user", "ada", "--strokes"], &[&svc]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("image too"), "{}", run.stderr);
}
