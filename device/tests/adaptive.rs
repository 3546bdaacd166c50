//! Writer-adaptive decisions through the `autograph` binary: a bundle with a cohort fits each
//! writer's model at enrolment and verifies by its rule; writers enrolled without a model fall
//! back to the nearest rule until `gallery refit`; a damaged cohort is refused; bundles without
//! an `adaptive` section work as before.

mod common;

use std::path::{Path, PathBuf};

use autograph_device::store;
use autograph_shared::adaptive::DecisionRule;
use autograph_shared::manifest::{COHORT_FILE, Manifest};
use common::{
    VERIFY_KEYS, Writer, adaptive_fixture, assert_keys, autograph, bench_json, signature_file, write_adaptive_bundle,
    write_adaptive_bundle_with, write_bundle,
};

/// A scratch directory with images, bundles and a gallery.
struct Setup {
    dir: tempfile::TempDir,
    gallery: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("images")).expect("images dir");
        Self { gallery: dir.path().join("gallery.bin"), dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sig(&self, writer: u64, sample: u64) -> PathBuf {
        signature_file(&self.path("images"), &format!("w{writer}-s{sample}"), &Writer::new(writer), sample)
    }

    /// `autograph <command> --bundle B --gallery G --json <rest>`.
    fn run(&self, bundle: &Path, command: &[&str], rest: &[&Path]) -> common::Run {
        let mut args: Vec<std::ffi::OsString> = command.iter().map(Into::into).collect();
        args.extend(["--bundle".into(), bundle.into(), "--gallery".into(), self.gallery.clone().into()]);
        args.push("--json".into());
        args.extend(rest.iter().map(|p| p.as_os_str().to_owned()));
        autograph(args)
    }

    fn enroll(&self, bundle: &Path, user: &str, writer: u64, samples: std::ops::Range<u64>) -> common::Run {
        let files: Vec<PathBuf> = samples.map(|s| self.sig(writer, s)).collect();
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let run = self.run(bundle, &["enroll", "--user", user], &refs);
        assert_eq!(run.code, 0, "{run:?}");
        run
    }

    fn verify(&self, bundle: &Path, user: &str, writer: u64, sample: u64) -> common::Run {
        let run = self.run(bundle, &["verify", "--user", user], &[&self.sig(writer, sample)]);
        assert!(run.code == 0 || run.code == 1, "{run:?}");
        run
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const WRITERS: [(&str, u64); 3] = [("alice", 1), ("bob", 2), ("carol", 3)];

#[test]
fn adaptive_bundle_fits_at_enrolment_and_verifies_by_its_rule() {
    for (rule, name) in [
        (DecisionRule::Classifier, "classifier"),
        (DecisionRule::Normalised, "normalised"),
        (DecisionRule::Consistency, "consistency"),
        (DecisionRule::Subspace, "subspace"),
    ] {
        let s = Setup::new();
        let bundle = s.path("bundle");
        write_adaptive_bundle(&bundle, 1, rule);
        let fixture = adaptive_fixture(1);
        let thresholds = match rule {
            DecisionRule::Classifier => fixture.classifier,
            DecisionRule::Consistency => fixture.consistency,
            DecisionRule::Subspace => fixture.subspace,
            _ => fixture.normalised,
        };

        for (user, writer) in WRITERS {
            let j = s.enroll(&bundle, user, writer, 0..3).json();
            assert_eq!(j["writer_model"], true, "{j}");
            assert!(j["writer_model_problem"].is_null(), "{j}");
            assert_eq!(j["writers_without_model"], 0, "{j}");
        }
        let gallery = store::load(&common::gallery_file(&s.gallery), None).expect("gallery");
        assert!(gallery.writers().all(|w| w.model().is_some()));
        let list = s.run(&bundle, &["gallery", "list"], &[]).json();
        assert_eq!(list["writers_without_model"], 0);
        assert!(list["writers"].as_array().expect("writers").iter().all(|w| w["writer_model"] == true), "{list}");

        // Fresh genuine signatures are accepted by the bundle's rule, at its threshold.
        let mut genuine = Vec::new();
        for (user, writer) in WRITERS {
            for sample in 20..24 {
                let run = s.verify(&bundle, user, writer, sample);
                let j = run.json();
                assert_keys(&j, &VERIFY_KEYS);
                assert_eq!((j["rule"].as_str(), j["fallback"].is_null()), (Some(name), true), "{j}");
                assert!((f(&j["threshold"]) - f64::from(thresholds.random.eer)).abs() < 1e-6, "{j}");
                assert_eq!(j["operating_point"]["against"], "random", "no skilled calibration: {j}");
                let similarity = f(&j["similarity"]);
                assert!(similarity > 0.5 && similarity <= 1.0, "{j}");
                assert!(f(&j["replay"]["max_reference_similarity"]) == similarity, "{j}");
                assert!(j["normalised"].is_number(), "{j}");
                if rule == DecisionRule::Normalised {
                    assert_eq!(j["score"], j["normalised"]);
                } else {
                    assert_ne!(j["score"], j["similarity"]);
                }
                assert_eq!((run.code, j["decision"].as_str()), (0, Some("accepted")), "{user} sample {sample}: {j}");
                genuine.push(f(&j["score"]));
            }
        }
        // Other writers' signatures are rejected, with lower scores than every genuine one.
        let mut impostor = Vec::new();
        for (user, writer) in WRITERS {
            for (other, _) in WRITERS.iter().filter(|(_, w)| *w != writer).map(|&(u, w)| (w, u)) {
                for sample in [21, 30] {
                    let run = s.verify(&bundle, user, other, sample);
                    let j = run.json();
                    assert_eq!((run.code, j["decision"].as_str()), (1, Some("rejected")), "{user} by {other}: {j}");
                    assert_eq!(j["rule"], name);
                    impostor.push(f(&j["score"]));
                }
            }
        }
        let (lowest_genuine, highest_impostor) =
            (genuine.iter().copied().fold(f64::INFINITY, f64::min), impostor.iter().copied().fold(f64::MIN, f64::max));
        assert!(lowest_genuine > highest_impostor, "{name}: {genuine:?} vs {impostor:?}");
        eprintln!("{name}: genuine {lowest_genuine:.3}.., impostor ..{highest_impostor:.3}");

        // The replay guard comes first, on the raw similarity.
        let j = s.verify(&bundle, "alice", 1, 1).json();
        assert_eq!(
            (j["decision"].as_str(), j["replay"]["identical_template"].as_bool()),
            (Some("possible_replay"), Some(true))
        );
        assert_eq!(j["rule"], name);

        // Text output names the rule.
        let mut args: Vec<std::ffi::OsString> = vec!["verify".into(), "--bundle".into(), bundle.clone().into()];
        args.extend(["--gallery".into(), s.gallery.clone().into(), "--user".into(), "bob".into()]);
        args.push(s.sig(2, 25).into());
        let run = autograph(args);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.starts_with("ACCEPTED") && run.stdout.contains(&format!("{name} score")), "{run:?}");

        // int8 uses the same rule (the fixture writes int8 thresholds too).
        let run = s.run(&bundle, &["verify", "--precision", "int8", "--user", "carol"], &[&s.sig(3, 26)]);
        assert_eq!((run.code, run.json()["rule"].as_str()), (0, Some(name)), "{run:?}");
    }
}

/// The consistency rule needs only the references: writers enrolled before the bundle had a
/// cohort are decided by it as they are; a writer with a single reference falls back to the
/// nearest rule, and the output says why.
#[test]
fn consistency_needs_two_references_and_no_writer_model() {
    let s = Setup::new();
    let (old, new) = (s.path("old-bundle"), s.path("new-bundle"));
    write_bundle(&old, 1);
    write_adaptive_bundle(&new, 1, DecisionRule::Consistency);
    let j = s.enroll(&old, "alice", 1, 0..3).json();
    assert_eq!(j["writer_model"], false, "{j}");
    s.enroll(&old, "bob", 2, 0..1);

    let run = s.verify(&new, "alice", 1, 20);
    let j = run.json();
    assert_eq!((run.code, j["rule"].as_str(), j["fallback"].is_null()), (0, Some("consistency"), true), "{j}");
    let threshold = f64::from(adaptive_fixture(1).consistency.random.eer);
    assert!((f(&j["threshold"]) - threshold).abs() < 1e-6, "{j}");
    // score = similarity − ½·consistency of alice's three references, so below the similarity.
    let gallery = store::load(&common::gallery_file(&s.gallery), None).expect("gallery");
    let refs = gallery.get("alice").expect("alice").templates();
    let c = f64::from(autograph_shared::adaptive::consistency(refs).expect("three references"));
    assert!((f(&j["similarity"]) - 0.5 * c - f(&j["score"])).abs() < 1e-5, "{j}");

    let run = s.verify(&new, "bob", 2, 20);
    let j = run.json();
    assert_eq!(j["rule"], "nearest", "{j}");
    assert!(j["fallback"].as_str().is_some_and(|f| f.contains("single reference")), "{j}");
    assert!((f(&j["threshold"]) - f64::from(common::SKILLED.eer)).abs() < 1e-6, "the nearest threshold: {j}");
    assert_eq!(j["score"], j["similarity"]);
    // Writer models are not needed by this rule: no refit is advised for the writers without one.
    let check = s.run(&new, &["gallery", "check"], &[]).json();
    assert_eq!((check["writers_without_model"].as_u64(), check["refit_advised"].as_bool()), (Some(2), Some(false)));
}

/// A bundle that calibrates the nearest-eer point decides there with `--far nearest-eer` and
/// says so; the default stays the rule's own EER point; a writer decided by the nearest rule
/// (fallback) gets the nearest rule's EER point, which is that acceptance; a bundle without the
/// point, asked for it, says to re-export.
#[test]
fn the_nearest_eer_point_on_request() {
    let s = Setup::new();
    let (old, new) = (s.path("old-bundle"), s.path("new-bundle"));
    let own_eer = adaptive_fixture(1).subspace.random.eer;
    let matched = own_eer - 0.25;
    write_adaptive_bundle(&old, 1, DecisionRule::Subspace);
    write_adaptive_bundle_with(&new, 1, DecisionRule::Subspace, |m| {
        let a = m.adaptive.as_mut().expect("adaptive section");
        a.f32_thresholds.random.nearest_eer_far = Some(matched);
        a.int8_thresholds = Some(a.f32_thresholds);
    });
    s.enroll(&new, "alice", 1, 0..3);
    s.enroll(&new, "bob", 2, 0..1);
    let probe = s.sig(1, 20);
    let point = |bundle: &Path, user: &str, far: &[&str]| {
        let mut cmd = vec!["verify", "--user", user];
        cmd.extend_from_slice(far);
        let run = s.run(bundle, &cmd, &[&probe]);
        let j = run.json();
        (run.code, j["operating_point"]["point"].as_str().map(str::to_owned), j["threshold"].as_f64().map(|t| t as f32))
    };
    let matched_point = point(&new, "alice", &["--far", "nearest-eer"]);
    assert_eq!(matched_point.1.as_deref(), Some("nearest_eer_far"));
    assert!(matched_point.2.is_some_and(|t| (t - matched).abs() < 1e-6), "{matched_point:?}");
    for far in [&[][..], &["--far", "eer"][..]] {
        let eer = point(&new, "alice", far);
        assert_eq!(eer.1.as_deref(), Some("eer"));
        assert!(eer.2.is_some_and(|t| (t - own_eer).abs() < 1e-6), "{eer:?}");
    }
    // Bob has one reference: the nearest rule decides, at its own EER point.
    let bob = point(&new, "bob", &["--far", "nearest-eer"]);
    assert!(bob.2.is_some_and(|t| (t - common::SKILLED.eer).abs() < 1e-6), "{bob:?}");
    // The older bundle cannot be asked for the new point.
    let run = s.run(&old, &["verify", "--user", "alice", "--far", "nearest-eer"], &[&probe]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("re-export"), "{run:?}");
}

/// The subspace rule, like consistency, needs only the references: its score is
/// `WriterSubspace::score` of the enrolled templates, and a single reference falls back.
#[test]
fn subspace_scores_from_the_references_and_needs_two() {
    let s = Setup::new();
    let (old, new) = (s.path("old-bundle"), s.path("new-bundle"));
    write_bundle(&old, 1);
    write_adaptive_bundle(&new, 1, DecisionRule::Subspace);
    s.enroll(&old, "alice", 1, 0..3);
    s.enroll(&old, "bob", 2, 0..1);

    let run = s.verify(&new, "alice", 1, 20);
    let j = run.json();
    assert_eq!((run.code, j["rule"].as_str(), j["fallback"].is_null()), (0, Some("subspace"), true), "{j}");
    let threshold = f64::from(adaptive_fixture(1).subspace.random.eer);
    assert!((f(&j["threshold"]) - threshold).abs() < 1e-6, "{j}");
    let gallery = store::load(&common::gallery_file(&s.gallery), None).expect("gallery");
    let refs = gallery.get("alice").expect("alice").templates();
    let probe = common::templates_of(1, &[(1, 20)])[0];
    let expected = autograph_shared::adaptive::subspace_score(refs, &probe).expect("three references");
    assert!((f(&j["score"]) - f64::from(expected)).abs() < 1e-6, "{j} vs {expected}");

    let run = s.verify(&new, "bob", 2, 20);
    let j = run.json();
    assert_eq!(j["rule"], "nearest", "{j}");
    assert!(j["fallback"].as_str().is_some_and(|f| f.contains("the subspace rule needs two")), "{j}");
    assert_eq!(j["score"], j["similarity"]);
}

#[test]
fn writers_without_a_model_fall_back_until_refit() {
    let s = Setup::new();
    let (old, new) = (s.path("old-bundle"), s.path("new-bundle"));
    write_bundle(&old, 1);
    write_adaptive_bundle(&new, 1, DecisionRule::Classifier);
    // The same model: the cohort does not change the gallery's identity.
    assert_eq!(
        Manifest::load(&old).expect("old").model_identity(),
        Manifest::load(&new).expect("new").model_identity()
    );

    // Enrolled with the bundle before it had a cohort: no writer models.
    for (user, writer) in &WRITERS[..2] {
        let j = s.enroll(&old, user, *writer, 0..3).json();
        assert_eq!(j["writer_model"], false, "{j}");
    }
    let run = s.verify(&new, "alice", 1, 20);
    let j = run.json();
    assert_keys(&j, &VERIFY_KEYS);
    assert_eq!((run.code, j["rule"].as_str()), (0, Some("nearest")), "{j}");
    assert!(j["fallback"].as_str().is_some_and(|f| f.contains("no writer model") && f.contains("refit")), "{j}");
    assert!((f(&j["threshold"]) - f64::from(common::SKILLED.eer)).abs() < 1e-6, "the nearest threshold: {j}");
    assert_eq!(j["operating_point"]["against"], "skilled");
    assert_eq!(j["score"], j["similarity"]);
    assert!(j["normalised"].is_null(), "{j}");
    let mut args: Vec<std::ffi::OsString> = vec!["verify".into(), "--bundle".into(), new.clone().into()];
    args.extend(["--gallery".into(), s.gallery.clone().into(), "--user".into(), "alice".into()]);
    args.push(s.sig(1, 21).into());
    let run = autograph(args);
    assert!(run.stdout.contains("note:") && run.stdout.contains("gallery refit"), "{run:?}");

    // check and list say so; the old bundle has nothing to advise.
    let run = s.run(&new, &["gallery", "check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!((j["writers_without_model"].as_u64(), j["refit_advised"].as_bool()), (Some(2), Some(true)), "{j}");
    assert_eq!(s.run(&old, &["gallery", "check"], &[]).json()["refit_advised"], false);
    let list = s.run(&new, &["gallery", "list"], &[]).json();
    assert_eq!(list["writers"][0]["writer_model"], false);

    // A new writer gets a model; so does an existing one at their next enrolment.
    let j = s.enroll(&new, "carol", 3, 0..3).json();
    assert_eq!((j["writer_model"].as_bool(), j["writers_without_model"].as_u64()), (Some(true), Some(2)), "{j}");
    let j = s.enroll(&new, "alice", 1, 3..4).json();
    assert_eq!((j["outcome"].as_str(), j["writer_model"].as_bool()), (Some("appended"), Some(true)), "{j}");
    assert_eq!(j["writers_without_model"], 1);
    assert_eq!(s.verify(&new, "alice", 1, 22).json()["rule"], "classifier");
    assert_eq!(s.verify(&new, "bob", 2, 22).json()["rule"], "nearest");

    // `gallery refit` fits the rest; --all refits everyone; the templates are untouched.
    let before = store::load(&common::gallery_file(&s.gallery), None).expect("gallery");
    let run = s.run(&new, &["gallery", "refit"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(&j, &["command", "gallery", "fitted", "writers", "writers_without_model", "cohort_templates"]);
    assert_eq!((j["fitted"].as_u64(), j["writers_without_model"].as_u64()), (Some(1), Some(0)), "{j}");
    assert_eq!(j["cohort_templates"], 300);
    let after = store::load(&common::gallery_file(&s.gallery), None).expect("gallery");
    for (a, b) in before.writers().zip(after.writers()) {
        assert_eq!((a.id(), a.templates()), (b.id(), b.templates()));
        if a.model().is_some() {
            assert_eq!(a.model(), b.model(), "an existing model is kept without --all");
        }
    }
    let run = s.run(&new, &["gallery", "refit", "--all"], &[]);
    assert_eq!(run.json()["fitted"], 3, "{run:?}");
    let j = s.verify(&new, "bob", 2, 22).json();
    assert_eq!(
        (j["rule"].as_str(), j["decision"].as_str(), j["fallback"].is_null()),
        (Some("classifier"), Some("accepted"), true)
    );
    assert!(s.run(&new, &["gallery", "check"], &[]).json()["refit_advised"] == false);

    // The old bundle keeps deciding by the nearest rule on a gallery with models.
    let run = s.verify(&old, "bob", 2, 22);
    let j = run.json();
    assert_eq!((run.code, j["rule"].as_str(), j["fallback"].is_null()), (0, Some("nearest"), true), "{j}");
    assert!(j["normalised"].is_null());
    // ... and cannot refit: it has no cohort.
    let run = s.run(&old, &["gallery", "refit"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no cohort"), "{run:?}");
    // Refitting a gallery that does not exist is an error, and creates nothing.
    let missing = s.path("none.bin");
    let run = autograph([
        "gallery".as_ref(),
        "refit".as_ref(),
        "--bundle".as_ref(),
        new.as_os_str(),
        "--gallery".as_ref(),
        missing.as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!missing.exists());
}

#[test]
fn damaged_cohort_is_refused_naming_the_file() {
    let s = Setup::new();
    let bundle = s.path("bundle");
    write_adaptive_bundle(&bundle, 1, DecisionRule::Classifier);
    s.enroll(&bundle, "alice", 1, 0..2);
    let gallery_before = std::fs::read(&s.gallery).expect("read");
    let probe = s.sig(1, 20);
    let cohort = bundle.join(COHORT_FILE);
    let good = std::fs::read(&cohort).expect("read cohort");

    let expect_refused = |what: &str, words: &[&str]| {
        for (command, rest) in [
            (vec!["verify", "--user", "alice"], vec![probe.as_path()]),
            (vec!["enroll", "--user", "bob"], vec![probe.as_path()]),
            (vec!["gallery", "list"], vec![]),
            (vec!["gallery", "refit"], vec![]),
        ] {
            let run = s.run(&bundle, &command, &rest);
            assert_eq!(run.code, 2, "{what}, {command:?}: {run:?}");
            assert!(run.stderr.contains("cohort.bin"), "{what}, {command:?}: {run:?}");
            for word in words {
                assert!(run.stderr.contains(word), "{what}, {command:?}: {word}: {run:?}");
            }
            assert_eq!(run.json()["status"], "error");
            assert_eq!(std::fs::read(&s.gallery).expect("read"), gallery_before, "{what}: the gallery is untouched");
        }
    };

    // One bit changed: the manifest's hash refuses it.
    let mut bytes = good.clone();
    bytes[100] ^= 0x01;
    std::fs::write(&cohort, &bytes).expect("write");
    expect_refused("tampered", &["sha256 mismatch"]);

    // Missing.
    std::fs::remove_file(&cohort).expect("rm");
    expect_refused("missing", &["cannot read"]);

    // Not a cohort, with a matching hash in the manifest: the format check refuses it.
    let garbage = b"this is not a cohort file, though its hash was recorded".to_vec();
    std::fs::write(&cohort, &garbage).expect("write");
    let mut manifest = Manifest::load(&bundle).expect("manifest");
    let adaptive = manifest.adaptive.as_mut().expect("adaptive");
    adaptive.cohort.sha256 = autograph_shared::sha256_hex(&garbage);
    manifest.save(&bundle).expect("save");
    expect_refused("corrupt", &["magic"]);

    // The right file, but the manifest counts other templates.
    std::fs::write(&cohort, &good).expect("write");
    let mut manifest = Manifest::load(&bundle).expect("manifest");
    let adaptive = manifest.adaptive.as_mut().expect("adaptive");
    adaptive.cohort.sha256 = autograph_shared::sha256_hex(&good);
    adaptive.cohort.templates += 1;
    manifest.save(&bundle).expect("save");
    expect_refused("miscounted", &["301"]);

    // Restored, it works again.
    let mut manifest = Manifest::load(&bundle).expect("manifest");
    manifest.adaptive.as_mut().expect("adaptive").cohort.templates -= 1;
    manifest.save(&bundle).expect("save");
    assert_eq!(s.verify(&bundle, "alice", 1, 20).code, 0);
}

#[test]
fn bundles_without_adaptive_section_decide_by_the_nearest_rule() {
    let s = Setup::new();
    let bundle = s.path("bundle");
    let manifest = write_bundle(&bundle, 1);
    assert!(manifest.adaptive.is_none());
    let text = std::fs::read_to_string(bundle.join("manifest.json")).expect("read");
    assert!(!text.contains("adaptive"), "older manifests have no such key");
    assert!(!bundle.join(COHORT_FILE).exists());

    let j = s.enroll(&bundle, "alice", 1, 0..3).json();
    assert_eq!((j["writer_model"].as_bool(), j["writer_model_problem"].is_null()), (Some(false), true), "{j}");
    let run = s.verify(&bundle, "alice", 1, 20);
    let j = run.json();
    assert_keys(&j, &VERIFY_KEYS);
    assert_eq!((run.code, j["rule"].as_str()), (0, Some("nearest")), "{j}");
    assert!(j["fallback"].is_null() && j["normalised"].is_null(), "{j}");
    assert_eq!(j["score"], j["similarity"]);
    assert!((f(&j["threshold"]) - f64::from(common::SKILLED.eer)).abs() < 1e-6);
    let check = s.run(&bundle, &["gallery", "check"], &[]).json();
    assert_eq!((check["writers_without_model"].as_u64(), check["refit_advised"].as_bool()), (Some(1), Some(false)));
}

/// The kiosk enrols with a writer model and verifies by the bundle's rule (the same
/// [`autograph_device::decision`] as `autograph verify`).
#[test]
fn kiosk_uses_the_bundle_rule() {
    let s = Setup::new();
    let bundle = s.path("bundle");
    write_adaptive_bundle(&bundle, 1, DecisionRule::Classifier);
    let sample = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/strokes").join(name).to_string_lossy().into_owned()
    };
    let kiosk = |out: &str, rest: &[String]| {
        let mut args: Vec<std::ffi::OsString> = vec!["kiosk".into(), "--json".into(), "--bundle".into()];
        args.extend([bundle.clone().into(), "--gallery".into(), s.gallery.clone().into(), "--headless".into()]);
        args.push(s.path(out).into());
        args.extend(rest.iter().map(Into::into));
        autograph(args)
    };
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (a1, a2, a3, a4) = (sample("ada-1.json"), sample("ada-2.json"), sample("ada-3.json"), sample("ada-4.json"));
    let run = kiosk("enrol", &words(&["--user", "ada", "--enroll", "--replay", &a1, "--replay", &a2, "--replay", &a3]));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((run.json()["decision"].as_str(), run.json()["writer_model"].as_bool()), (Some("enrolled"), Some(true)));
    assert!(
        store::load(&common::gallery_file(&s.gallery), None)
            .expect("gallery")
            .get("ada")
            .is_some_and(|w| w.model().is_some())
    );

    let run = kiosk("verify", &words(&["--user", "ada", "--replay", &a4]));
    let j = run.json();
    assert!(matches!(j["decision"].as_str(), Some("accepted" | "rejected")), "{run:?}");
    assert_eq!((j["rule"].as_str(), j["fallback"].is_null()), (Some("classifier"), true), "{j}");
    assert!(j["similarity"].is_number() && j["score"].is_number(), "{j}");
    let threshold = f64::from(adaptive_fixture(1).classifier.random.eer);
    assert!((f(&j["threshold"]) - threshold).abs() < 1e-6, "{j}");
    assert!((f(&j["operating_point"]["threshold"]) - threshold).abs() < 1e-6, "{j}");
}

#[test]
fn bench_measures_the_adaptive_rules() {
    for adaptive in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        if adaptive {
            write_adaptive_bundle(dir.path(), 1, DecisionRule::Classifier);
        } else {
            write_bundle(dir.path(), 1);
        }
        let run = bench_json(dir.path());
        let a = &run.json()["adaptive"];
        assert_keys(a, &["cohort", "cohort_templates", "references", "enroll_ms", "decide_ms", "ratio_vs_nearest"]);
        assert_eq!(a["cohort"], if adaptive { "bundle" } else { "synthetic" });
        assert_eq!((a["cohort_templates"].as_u64(), a["references"].as_u64()), (Some(300), Some(5)));
        assert_keys(&a["enroll_ms"], &["nearest", "fitted"]);
        assert_keys(&a["decide_ms"], &["nearest", "normalised", "classifier", "consistency", "subspace"]);
        assert_keys(
            &a["ratio_vs_nearest"],
            &["enroll_fitted", "decide_normalised", "decide_classifier", "decide_consistency", "decide_subspace"],
        );
        // Figures only: positive and finite (no wall-clock assertion).
        for v in a["ratio_vs_nearest"].as_object().expect("ratios").values() {
            assert!(v.as_f64().is_some_and(|r| r.is_finite() && r > 0.0), "{a}");
        }
    }
}
