//! The `autograph` binary end to end, on a bundle built in the test: enrol, verify, identify,
//! gallery maintenance, exit codes, JSON shapes, and refusal of damaged inputs.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use autograph_device::store;
use autograph_shared::gallery::{EMBEDDING_DIM, KioskGallery, Template};
use autograph_shared::manifest::{MANIFEST_FILE, MODEL_F32_FILE, Manifest};
use common::{VERIFY_KEYS, Writer, assert_keys, autograph, bench_json, signature_file, write_bundle, write_file};

/// A bundle, a gallery path and a scratch directory for images.
struct Kiosk {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    gallery: PathBuf,
    images: PathBuf,
}

impl Kiosk {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let bundle = dir.path().join("bundle");
        write_bundle(&bundle, 1);
        let images = dir.path().join("images");
        std::fs::create_dir(&images).expect("images dir");
        Self { gallery: dir.path().join("gallery.bin"), bundle, images, _dir: dir }
    }

    /// Signature `sample` of writer `writer` as a file.
    fn sig(&self, writer: u64, sample: u64) -> PathBuf {
        signature_file(&self.images, &format!("w{writer}-s{sample}"), &Writer::new(writer), sample)
    }

    /// `autograph <command> --bundle B --gallery G --json <rest>`.
    fn run(&self, command: &[&str], rest: &[&Path]) -> common::Run {
        self.run_with(command, true, rest)
    }

    /// The same without `--json`: the human-readable output.
    fn run_text(&self, command: &[&str], rest: &[&Path]) -> common::Run {
        self.run_with(command, false, rest)
    }

    fn run_with(&self, command: &[&str], json: bool, rest: &[&Path]) -> common::Run {
        let mut args: Vec<std::ffi::OsString> = command.iter().map(Into::into).collect();
        args.extend(["--bundle".into(), self.bundle.clone().into(), "--gallery".into(), self.gallery.clone().into()]);
        if json {
            args.push("--json".into());
        }
        args.extend(rest.iter().map(|p| p.as_os_str().to_owned()));
        autograph(args)
    }

    fn enroll(&self, user: &str, writer: u64, samples: std::ops::Range<u64>) -> common::Run {
        let files: Vec<PathBuf> = samples.map(|s| self.sig(writer, s)).collect();
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        self.run(&["enroll", "--user", user], &refs)
    }
}

const MODEL_KEYS: [&str; 2] = ["runtime", "precision"];

fn keys<'a>(specific: &[&'a str]) -> Vec<&'a str> {
    specific.iter().copied().chain(MODEL_KEYS).collect()
}

#[test]
fn enroll_verify_identify_round_trip() {
    let k = Kiosk::new();
    for (user, writer) in [("alice", 1), ("bob", 2), ("carol", 3)] {
        let run = k.enroll(user, writer, 0..3);
        assert_eq!(run.code, 0, "{run:?}");
        let j = run.json();
        assert_keys(
            &j,
            &keys(&[
                "command",
                "user",
                "outcome",
                "templates_added",
                "templates_total",
                "writers",
                "writer_model",
                "writer_model_problem",
                "writers_without_model",
                "pen_captures_added",
                "dynamic_references",
                "gallery",
            ]),
        );
        // This bundle has no cohort: no writer model, nothing wrong.
        assert_eq!((j["writer_model"].as_bool(), j["writer_model_problem"].is_null()), (Some(false), true));
        assert_eq!((j["outcome"].as_str(), j["templates_added"].as_u64()), (Some("created"), Some(3)));
        assert_eq!(j["runtime"], "tract");
        assert_eq!(j["precision"], "f32");
    }
    // Appending one more reference.
    let run = k.run(&["enroll", "--user", "alice"], &[&k.sig(1, 3)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((run.json()["outcome"].as_str(), run.json()["templates_total"].as_u64()), (Some("appended"), Some(4)));

    // A fresh genuine signature is accepted.
    let run = k.run(&["verify", "--user", "alice"], &[&k.sig(1, 20)]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(&j, &VERIFY_KEYS);
    assert_eq!((j["decision"].as_str(), j["accepted"].as_bool()), (Some("accepted"), Some(true)));
    // A bundle without a cohort decides by the nearest rule: the score is the similarity.
    assert_eq!((j["rule"].as_str(), j["fallback"].is_null(), j["normalised"].is_null()), (Some("nearest"), true, true));
    assert_eq!(j["score"], j["similarity"]);
    assert_keys(&j["operating_point"], &["against", "point", "threshold"]);
    assert_eq!(
        (j["operating_point"]["against"].as_str(), j["operating_point"]["point"].as_str()),
        (Some("skilled"), Some("eer"))
    );
    assert!((j["threshold"].as_f64().expect("threshold") - f64::from(common::SKILLED.eer)).abs() < 1e-6);
    assert_keys(
        &j["replay"],
        &["max_reference_similarity", "identical_template", "replay_similarity", "possible_replay"],
    );
    assert_eq!(j["replay"]["possible_replay"], false);
    assert_eq!(j["references"], 4);

    // Another writer's signature is rejected (exit 1), and so is an unknown user.
    let run = k.run(&["verify", "--user", "alice"], &[&k.sig(2, 21)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!((run.json()["decision"].as_str(), run.json()["accepted"].as_bool()), (Some("rejected"), Some(false)));
    assert!(run.json()["score"].as_f64() < run.json()["threshold"].as_f64());
    let run = k.run(&["verify", "--user", "dave"], &[&k.sig(1, 22)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["decision"], "not_enrolled");
    assert!(run.json()["score"].is_null());

    // Text output says the same.
    let run = k.run_text(&["verify", "--user", "bob"], &[&k.sig(2, 23)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("ACCEPTED"), "{run:?}");

    // Identification ranks the true writer first.
    let run = k.run(&["identify", "--k", "2"], &[&k.sig(3, 24)]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(&j, &keys(&["command", "image", "k", "matches", "found", "threshold", "operating_point", "writers"]));
    assert_eq!(j["found"], "carol");
    assert_eq!(j["writers"], 3);
    let matches = j["matches"].as_array().expect("matches");
    assert_eq!(matches.len(), 2);
    assert_keys(&matches[0], &["rank", "user", "score", "above_threshold"]);
    assert_eq!((matches[0]["rank"].as_u64(), matches[0]["user"].as_str()), (Some(1), Some("carol")));
    assert!(matches[0]["score"].as_f64() > matches[1]["score"].as_f64());
    assert_eq!(j["operating_point"]["against"], "random");

    // A signature by nobody enrolled is not found (exit 1), but still ranked.
    let run = k.run(&["identify"], &[&k.sig(9, 20)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.json()["found"].is_null());
    assert_eq!(run.json()["matches"].as_array().map(Vec::len), Some(3));

    // The int8 model gives the same decisions.
    let run = k.run(&["verify", "--precision", "int8", "--user", "alice"], &[&k.sig(1, 25)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["precision"], "int8");
}

#[test]
fn operating_points() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..3).code, 0);
    let probe = k.sig(1, 30);
    let threshold = |extra: &[&str]| {
        let mut cmd = vec!["verify", "--user", "alice"];
        cmd.extend_from_slice(extra);
        let run = k.run(&cmd, &[&probe]);
        assert!(run.code == 0 || run.code == 1, "{run:?}");
        let j = run.json();
        (j["threshold"].as_f64().expect("threshold") as f32, j["operating_point"]["point"].as_str().map(str::to_owned))
    };
    assert_eq!(threshold(&["--far", "0.01"]), (common::SKILLED.far_1pct, Some("far_1pct".into())));
    assert_eq!(threshold(&["--far", "0.001"]), (common::SKILLED.far_0_1pct, Some("far_0_1pct".into())));
    assert_eq!(threshold(&["--against", "random"]), (common::RANDOM.eer, Some("eer".into())));
    assert_eq!(threshold(&["--threshold", "0.999"]), (0.999, Some("manual".into())));
    // A manual threshold above any score rejects; exit 1.
    let run = k.run(&["verify", "--user", "alice", "--threshold", "1.5"], &[&probe]);
    assert_eq!((run.code, run.json()["decision"].as_str()), (1, Some("rejected")), "{run:?}");
    // Not a calibrated rate: a usage error.
    let run = k.run(&["verify", "--user", "alice", "--far", "0.05"], &[&probe]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("0.01"), "{run:?}");

    // A bundle calibrated without skilled forgeries falls back to random; asking for skilled
    // is an error.
    let dir = tempfile::tempdir().expect("tmp");
    common::write_bundle_with(dir.path(), 1, |m| {
        m.f32_model.calibration.thresholds.skilled = None;
    });
    let run = autograph([
        "verify".as_ref(),
        "--json".as_ref(),
        "--bundle".as_ref(),
        dir.path().as_os_str(),
        "--gallery".as_ref(),
        k.gallery.as_os_str(),
        "--user".as_ref(),
        "alice".as_ref(),
        probe.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["operating_point"]["against"], "random");
    let run = autograph([
        "verify".as_ref(),
        "--bundle".as_ref(),
        dir.path().as_os_str(),
        "--gallery".as_ref(),
        k.gallery.as_os_str(),
        "--user".as_ref(),
        "alice".as_ref(),
        "--against".as_ref(),
        "skilled".as_ref(),
        probe.as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no skilled-forgery calibration"), "{run:?}");
}

#[test]
fn resubmitted_reference_is_a_possible_replay() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..3).code, 0);
    let reference = k.sig(1, 1); // the very file enrolled
    let run = k.run(&["verify", "--user", "alice"], &[&reference]);
    assert_eq!(run.code, 1, "{run:?}");
    let j = run.json();
    assert_eq!((j["decision"].as_str(), j["accepted"].as_bool()), (Some("possible_replay"), Some(false)));
    assert_eq!(j["replay"]["identical_template"], true);
    assert_eq!(j["replay"]["possible_replay"], true);
    // It would have passed on score alone.
    assert!(j["score"].as_f64() > j["threshold"].as_f64(), "{j}");

    // The same image re-encoded (another size on disk, same pixels) is caught too.
    let pixels = image::load_from_memory(&std::fs::read(&reference).expect("read")).expect("decode").to_luma8();
    let bmp = k.images.join("copy.bmp");
    pixels.save(&bmp).expect("save bmp");
    let run = k.run(&["verify", "--user", "alice"], &[&bmp]);
    assert_eq!((run.code, run.json()["decision"].as_str()), (1, Some("possible_replay")), "{run:?}");

    // Text output explains.
    let run = k.run_text(&["verify", "--user", "alice"], &[&reference]);
    assert!(run.stdout.contains("possible replay"), "{run:?}");
}

#[test]
fn unusable_references_enrol_nothing() {
    let k = Kiosk::new();
    let good = k.sig(1, 0);
    let blank = write_file(&k.images, "blank.png", &common::blank_png());
    let garbage = write_file(&k.images, "notes.png", b"this is not an image");
    let missing = k.images.join("missing.png");
    let run = k.run(&["enroll", "--user", "alice"], &[&good, &blank, &garbage, &missing]);
    assert_eq!(run.code, 2, "{run:?}");
    for (file, reason) in [("blank.png", "no ink"), ("notes.png", "format"), ("missing.png", "cannot read")] {
        assert!(run.stderr.lines().any(|l| l.contains(file) && l.contains(reason)), "{file}: {run:?}");
    }
    assert!(run.stderr.contains("nothing was enrolled"), "{run:?}");
    let j = run.json();
    assert_keys(&j, &["command", "status", "error", "rejected"]);
    assert_eq!(j["status"], "error");
    let rejected = j["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 3);
    assert_keys(&rejected[0], &["file", "reason"]);
    assert!(!k.gallery.exists(), "no gallery was created");

    // The same image twice in one enrolment is refused; so is re-enrolling an enrolled image.
    let run = k.run(&["enroll", "--user", "alice"], &[&good, &good]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("copy of"), "{run:?}");
    assert_eq!(k.run(&["enroll", "--user", "alice"], &[&good]).code, 0);
    let run = k.run(&["enroll", "--user", "alice"], &[&good]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("already enrolled"), "{run:?}");

    // Invalid ids and a blank probe are errors too.
    let run = k.run(&["enroll", "--user", " alice"], &[&good]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = k.run(&["verify", "--user", "alice"], &[&blank]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("blank.png") && run.stderr.contains("no ink"), "{run:?}");
}

#[test]
fn damaged_gallery_is_refused_and_left_untouched() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..2).code, 0);
    let mut bytes = std::fs::read(&k.gallery).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&k.gallery, &bytes).expect("damage");

    let probe = k.sig(1, 5);
    for (command, rest) in [
        (vec!["verify", "--user", "alice"], vec![probe.as_path()]),
        (vec!["identify"], vec![probe.as_path()]),
        (vec!["enroll", "--user", "bob"], vec![probe.as_path()]),
        (vec!["gallery", "list"], vec![]),
        (vec!["gallery", "remove", "--user", "alice"], vec![]),
    ] {
        let run = k.run(&command, &rest);
        assert_eq!(run.code, 2, "{command:?}: {run:?}");
        assert!(
            run.stderr.contains("gallery.bin") && run.stderr.contains("authentication failed"),
            "{command:?}: {run:?}"
        );
        assert_eq!(run.json()["status"], "error");
        assert_eq!(std::fs::read(&k.gallery).expect("read"), bytes, "{command:?} left the file as it was");
    }
    let run = k.run(&["gallery", "check"], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let j = run.json();
    assert_keys(
        &j,
        &[
            "command",
            "gallery",
            "ok",
            "problem",
            "version",
            "writers",
            "templates",
            "model",
            "expected_model",
            "abnormal_templates",
            "writers_without_model",
            "refit_advised",
            "key_id",
        ],
    );
    assert_eq!(j["ok"], false);
    assert!(j["problem"].as_str().is_some_and(|p| p.contains("authentication failed")), "{j}");

    // A missing gallery is an error for verify (not an empty gallery).
    std::fs::remove_file(&k.gallery).expect("rm");
    let run = k.run(&["verify", "--user", "alice"], &[&probe]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("does not exist"), "{run:?}");
}

#[test]
fn gallery_of_another_bundle_is_refused() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..2).code, 0);
    let other = k.images.join("other-bundle");
    write_bundle(&other, 2); // other weights
    let before = std::fs::read(&k.gallery).expect("read");
    let run = autograph([
        "verify".as_ref(),
        "--bundle".as_ref(),
        other.as_os_str(),
        "--gallery".as_ref(),
        k.gallery.as_os_str(),
        "--user".as_ref(),
        "alice".as_ref(),
        k.sig(1, 9).as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("enrolled again"), "{run:?}");
    let run = autograph([
        "gallery".as_ref(),
        "check".as_ref(),
        "--json".as_ref(),
        "--bundle".as_ref(),
        other.as_os_str(),
        "--gallery".as_ref(),
        k.gallery.as_os_str(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["ok"], false);
    assert_ne!(run.json()["model"], run.json()["expected_model"]);
    assert_eq!(std::fs::read(&k.gallery).expect("read"), before);
}

#[test]
fn damaged_bundles_exit_2_naming_the_file() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..2).code, 0);
    let probe = k.sig(1, 7);
    let verify = |bundle: &Path| {
        autograph([
            "verify".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            "--gallery".as_ref(),
            k.gallery.as_os_str(),
            "--user".as_ref(),
            "alice".as_ref(),
            probe.as_os_str(),
        ])
    };
    let fresh = |name: &str| {
        let dir = k.images.join(name);
        write_bundle(&dir, 1);
        dir
    };

    // A model file whose bytes changed: the hash check refuses it.
    let dir = fresh("tampered");
    let model = dir.join(MODEL_F32_FILE);
    let mut bytes = std::fs::read(&model).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, &bytes).expect("write");
    let run = verify(&dir);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("model.onnx") && run.stderr.contains("sha256 mismatch"), "{run:?}");

    // A truncated model whose manifest hash was updated: tract cannot parse it.
    let dir = fresh("truncated");
    let model = dir.join(MODEL_F32_FILE);
    let bytes = std::fs::read(&model).expect("read");
    std::fs::write(&model, &bytes[..bytes.len() / 3]).expect("truncate");
    let mut manifest = Manifest::load(&dir).expect("manifest");
    manifest.f32_model.sha256 = autograph_shared::sha256_hex(&bytes[..bytes.len() / 3]);
    manifest.save(&dir).expect("save");
    // (enrol into a new gallery: the gallery check would otherwise come first, as the
    // model's hash, and so the bundle's identity, changed.)
    let run = autograph([
        "enroll".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        "--gallery".as_ref(),
        k.images.join("new-gallery.bin").as_os_str(),
        "--user".as_ref(),
        "alice".as_ref(),
        probe.as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("model.onnx") && run.stderr.contains("tract cannot load"), "{run:?}");
    assert!(!k.images.join("new-gallery.bin").exists());

    // A manifest of another format version.
    let dir = fresh("future");
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("\"format_version\": 1", "\"format_version\": 2")).expect("write");
    let run = verify(&dir);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("manifest.json") && run.stderr.contains("format version 2"), "{run:?}");

    // A manifest far larger than any manifest is refused before it is parsed.
    let dir = fresh("huge-manifest");
    let path = dir.join(MANIFEST_FILE);
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str(&" ".repeat(1024 * 1024));
    std::fs::write(&path, text).expect("write");
    let run = verify(&dir);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("manifest.json") && run.stderr.contains("1048576 bytes"), "{run:?}");

    // No bundle at all.
    let run = verify(&k.images.join("nowhere"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("manifest.json"), "{run:?}");

    // A missing int8 model when int8 is asked for.
    let dir = fresh("no-int8");
    std::fs::remove_file(dir.join("model.int8.onnx")).expect("rm");
    let run = autograph([
        "verify".as_ref(),
        "--precision".as_ref(),
        "int8".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        "--gallery".as_ref(),
        k.gallery.as_os_str(),
        "--user".as_ref(),
        "alice".as_ref(),
        probe.as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("model.int8.onnx"), "{run:?}");
}

/// A template that is a unit vector along axis `i`.
fn unit(i: usize) -> Template {
    let mut v = vec![0.0f32; EMBEDDING_DIM];
    v[i % EMBEDDING_DIM] = 1.0;
    v[(i / EMBEDDING_DIM + 1) % EMBEDDING_DIM] += 0.5;
    Template::from_embedding(&v).expect("template")
}

#[test]
fn full_gallery_and_full_writer_are_errors() {
    let k = Kiosk::new();
    let identity = Manifest::load(&k.bundle).expect("manifest").model_identity();
    let mut g = KioskGallery::new_boxed();
    for i in 0..KioskGallery::WRITER_CAPACITY {
        g.enroll(&format!("writer-{i:04}"), &[unit(i)], 0, false).expect("enroll");
    }
    store::save(&common::gallery_file(&k.gallery), &g, &identity).expect("save");
    let before = std::fs::read(&k.gallery).expect("read");
    let run = k.enroll("newcomer", 1, 0..1);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("full"), "{run:?}");
    assert_eq!(std::fs::read(&k.gallery).expect("read"), before);

    // An existing writer can still be given references, up to 8.
    let files: Vec<PathBuf> = (0..8).map(|s| k.sig(1, s)).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let run = k.run(&["enroll", "--user", "writer-0001"], &refs[..7]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = k.run(&["enroll", "--user", "writer-0001"], &refs[7..]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("at most 8"), "{run:?}");
    // Nine images at once are refused before anything is read.
    let nine: Vec<&Path> = refs.iter().copied().chain([refs[0]]).collect();
    let run = k.run(&["enroll", "--user", "someone"], &nine);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn gallery_maintenance() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..3).code, 0);
    assert_eq!(k.enroll("bob", 2, 0..1).code, 0);

    let run = k.run(&["gallery", "list"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(
        &j,
        &[
            "command",
            "gallery",
            "writers",
            "templates",
            "writers_without_model",
            "writer_capacity",
            "template_capacity",
        ],
    );
    let writers = j["writers"].as_array().expect("writers");
    assert_eq!(writers.len(), 2);
    assert_keys(
        &writers[0],
        &["user", "templates", "enrolled_at", "updated_at", "self_similarity", "writer_model", "dynamic_references"],
    );
    assert_eq!((writers[0]["writer_model"].as_bool(), j["writers_without_model"].as_u64()), (Some(false), Some(2)));
    assert_eq!((writers[0]["user"].as_str(), writers[0]["templates"].as_u64()), (Some("alice"), Some(3)));
    assert_keys(&writers[0]["self_similarity"], &["mean", "std", "pairs"]);
    assert!(writers[1]["self_similarity"].is_null());
    assert_eq!(j["templates"], 4);

    let run = k.run(&["gallery", "check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!(
        (j["ok"].as_bool(), j["writers"].as_u64(), j["abnormal_templates"].as_u64()),
        (Some(true), Some(2), Some(0))
    );
    assert_eq!(j["model"], j["expected_model"]);

    // Export, then import into a new gallery.
    let exported = k.images.join("backup.bin");
    let run = k.run(&["gallery", "export"], &[&exported]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_keys(&run.json(), &["command", "from", "to", "writers", "templates"]);
    assert_eq!(run.json()["writers"], 2);
    let run = k.run(&["gallery", "export"], &[&exported]);
    assert_eq!(run.code, 2, "refuses to overwrite without --force: {run:?}");

    let run = k.run(&["gallery", "remove", "--user", "bob"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_keys(&run.json(), &["command", "gallery", "user", "removed", "writers"]);
    assert_eq!((run.json()["removed"].as_bool(), run.json()["writers"].as_u64()), (Some(true), Some(1)));
    let run = k.run(&["gallery", "remove", "--user", "bob"], &[]);
    assert_eq!((run.code, run.json()["removed"].as_bool()), (1, Some(false)), "{run:?}");

    // Import refuses to overwrite writers without --replace, then restores bob.
    let run = k.run(&["gallery", "import"], &[&exported]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--replace"), "{run:?}");
    let run = k.run(&["gallery", "import", "--replace"], &[&exported]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["writers"], 2);
    let run = k.run(&["verify", "--user", "bob"], &[&k.sig(2, 39)]);
    assert_eq!(run.code, 0, "{run:?}");

    // Importing a damaged file is refused and the gallery is kept.
    let before = std::fs::read(&k.gallery).expect("read");
    let mut damaged = std::fs::read(&exported).expect("read");
    damaged.truncate(damaged.len() - 10);
    let damaged_path = write_file(&k.images, "damaged.bin", &damaged);
    let run = k.run(&["gallery", "import", "--replace"], &[&damaged_path]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("damaged.bin") && run.stderr.contains("truncated"), "{run:?}");
    assert_eq!(std::fs::read(&k.gallery).expect("read"), before);
}

/// `embed` prints the unit embedding and exactly the template `enroll` stores; an unreadable
/// image fails naming the file.
#[test]
fn embed_prints_what_enroll_stores() {
    let k = Kiosk::new();
    let (a, b) = (k.sig(1, 0), k.sig(2, 0));
    let mut args: Vec<std::ffi::OsString> = vec!["embed".into(), "--bundle".into(), k.bundle.clone().into()];
    args.extend(["--json".into(), a.clone().into(), b.into()]);
    let run = autograph(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(&j, &keys(&["command", "embeddings"]));
    let first = &j["embeddings"][0];
    assert_keys(first, &["image", "embedding", "template"]);
    let embedding: Vec<f32> = serde_json::from_value(first["embedding"].clone()).expect("f32 list");
    let template: Vec<i8> = serde_json::from_value(first["template"].clone()).expect("i8 list");
    assert_eq!(embedding.len(), EMBEDDING_DIM);
    let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    assert_eq!(template.as_slice(), Template::from_embedding(&embedding).expect("template").as_i8());

    assert_eq!(k.enroll("alice", 1, 0..1).code, 0);
    let gallery = store::load(&common::gallery_file(&k.gallery), None).expect("gallery");
    let stored = gallery.get("alice").expect("alice").templates()[0];
    assert_eq!(stored.as_i8().as_slice(), template.as_slice());

    let broken = write_file(&k.images, "broken.png", b"not a png");
    let run = autograph([OsStr::new("embed"), OsStr::new("--bundle"), k.bundle.as_os_str(), broken.as_os_str()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("broken.png"), "{}", run.stderr);
}

#[test]
fn help_and_usage_errors() {
    let run = autograph(["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for word in ["enroll", "verify", "identify", "gallery", "bench", "Exit status", "--json"] {
        assert!(run.stdout.contains(word), "{word}: {}", run.stdout);
    }
    let run = autograph(["verify", "--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for word in ["--far", "--against", "--threshold", "--runtime", "--precision", "replay", "refit"] {
        assert!(run.stdout.contains(word), "{word}: {}", run.stdout);
    }
    let run = autograph(["gallery", "--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for word in ["refit", "encrypt", "rekey"] {
        assert!(run.stdout.contains(word), "{word}: {}", run.stdout);
    }
    let run = autograph(["enroll", "--help"]);
    assert!(run.stdout.contains("--gallery-key") && run.stdout.contains("AUTOGRAPH_GALLERY_KEY"), "{}", run.stdout);
    let run = autograph(["gallery", "refit", "--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for word in ["cohort", "--all", "nearest", "enrolment"] {
        assert!(run.stdout.contains(word), "{word}: {}", run.stdout);
    }
    assert_eq!(autograph(["verify"]).code, 2);
    assert_eq!(autograph(["frobnicate"]).code, 2);
    assert_eq!(autograph(["identify", "--k", "0", "--bundle", "b", "--gallery", "g", "x.png"]).code, 2);
}

#[test]
fn bench_reports_every_figure() {
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    let run = bench_json(dir.path());
    let j = run.json();
    assert_keys(
        &j,
        &[
            "command",
            "runs",
            "threads",
            "input",
            "image",
            "preprocess_ms",
            "embed_ms",
            "verify_ms",
            "knn_ms",
            "unavailable",
            "adaptive",
            "gallery_file",
            "pen",
            "target_keys",
            "default_precision",
            "default_precision_from",
        ],
    );
    assert_eq!(j["threads"], 1);
    // The test bundle records no per-CPU choice: the manifest's default, named as such.
    assert_eq!(
        j["target_keys"].as_array().and_then(|k| k.last()).and_then(|k| k.as_str()),
        Some(std::env::consts::ARCH)
    );
    assert_eq!(j["default_precision"], "f32");
    assert!(j["default_precision_from"].is_null(), "{j}");
    assert_keys(
        &j["pen"],
        &["references", "samples_per_signature", "enroll_dynamic_ms", "decide_ms", "ratio_fused_vs_image"],
    );
    assert!(j["pen"]["decide_ms"]["fused"]["median"].as_f64().is_some_and(|v| v > 0.0), "{j}");
    for map in ["embed_ms", "verify_ms"] {
        for key in ["tract_f32", "tract_int8"] {
            assert_keys(&j[map][key], &["median", "p95"]);
            assert!(j[map][key]["median"].as_f64().is_some_and(|v| v > 0.0), "{map}.{key}: {j}");
        }
    }
    for size in ["1000", "10000"] {
        assert_keys(&j["knn_ms"][size], &["median", "p95"]);
    }
    #[cfg(not(feature = "ort"))]
    assert!(j["unavailable"]["ort_f32"].as_str().is_some_and(|s| s.contains("--features ort")), "{j}");

    let run =
        autograph(["bench".as_ref(), "--runs".as_ref(), "2".as_ref(), "--bundle".as_ref(), dir.path().as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("embed tract_f32")
            && run.stdout.contains("default precision here f32 (the manifest's default_precision)")
            && run.stdout.contains("knn top-5, 10000 templates")
            && run.stdout.contains("decide, classifier rule")
            && run.stdout.contains("decide, fused with the pen"),
        "{}",
        run.stdout
    );
}

/// `--runtime ort` decides like tract, and a missing library is an error naming the variable.
#[cfg(feature = "ort")]
#[test]
fn ort_runtime() {
    let k = Kiosk::new();
    assert_eq!(k.enroll("alice", 1, 0..3).code, 0);
    let probe = k.sig(1, 26);
    let without_library = k.run_text(&["verify", "--runtime", "ort", "--user", "alice"], &[&probe]);
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        assert_eq!(without_library.code, 2, "{without_library:?}");
        assert!(without_library.stderr.contains("ORT_DYLIB_PATH"), "{without_library:?}");
        eprintln!("ORT_DYLIB_PATH not set; the rest is skipped");
        return;
    }
    let tract = k.run(&["verify", "--user", "alice"], &[&probe]);
    let ort = k.run(&["verify", "--runtime", "ort", "--user", "alice"], &[&probe]);
    assert_eq!((tract.code, ort.code), (0, 0), "{tract:?} {ort:?}");
    assert_eq!(ort.json()["runtime"], "ort");
    let (a, b) = (tract.json()["score"].as_f64().expect("score"), ort.json()["score"].as_f64().expect("score"));
    assert!((a - b).abs() < 0.01, "tract {a} vs ort {b}");
}
