//! `autograph-train fuse`: calibrates a bundle's fusion of the on-line (pen trajectory) score
//! with its image model, so the kiosk decides pen captures on both (issue #17).
//!
//! The users are the SVC2004 writers the bundle's model never trained on, in the roles its
//! split gave them: validation writers fit the fusion (logistic regression on z-scored dynamic
//! and image scores) and its thresholds; test writers only measure it. Each precision the
//! bundle has (f32, int8) is calibrated with its own model file run through tract, as the
//! kiosk runs it, and the kiosk's arithmetic: int8 templates and the nearest-reference
//! similarity for the image, [`DynamicTemplate`] with the default settings for the pen. The
//! result is `manifest.json`'s `fusion` section; the model files and their hashes are not
//! touched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use autograph_shared::dataset::splits::WriterSplit;
use autograph_shared::gallery::{Template, writer_score};
use autograph_shared::manifest::{FusionCalibration, FusionDecision, FusionProvenance, Manifest, Precision};
use autograph_shared::online::dtw::DtwScratch;
use autograph_shared::online::features::FeatureSequence;
use autograph_shared::online::verifier::{MAX_REFERENCES, MIN_REFERENCES};
use autograph_shared::online::{DynamicSettings, DynamicTemplate, Format, list_online_dataset};
use serde::Serialize;

use crate::dynamic::{
    FoldRoles, Images, METHODS, MethodFold, PairScore, ScoreCounts, UserPlan, compare, embed_images, load_trajectories,
    pct, pick_roles, plan_users, probe_keys, score_group,
};
use crate::export::TractEmbedder;
use autograph_device::engine::precision_name;

/// Calibrate the fusion of pen-trajectory and image scores for a bundle (SVC2004 Task 2).
///
/// Protocol: the SVC2004 writers of the bundle's recorded split that the model never trained
/// on. Validation writers fit the fusion weights and pick its thresholds; test writers are
/// only measured (image-only, dynamic-only and fused EERs are printed and stored in the
/// manifest). Each writer enrols the same R genuine sample numbers in both modalities;
/// probes are its other genuine signatures, its skilled forgeries and --random-per-writer
/// genuine signatures of every other writer of the same role.
#[derive(clap::Args, Debug)]
#[command(long_about)]
pub struct FuseArgs {
    /// The bundle to calibrate (its manifest.json gains a `fusion` section).
    #[arg(long)]
    pub bundle: PathBuf,
    /// SVC2004 Task 2 trajectories (`U<u>S<s>.TXT`, here or in `Task2/`).
    #[arg(long)]
    pub online: PathBuf,
    /// The SVC2004 images the bundle was trained with (`user<N>/genuine|forged/U<N>S<k>.jpg`)
    /// [default: `svc2004` beside the --online directory].
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Genuine signatures each writer enrols (R).
    #[arg(long, default_value_t = 5)]
    pub references: usize,
    /// Random-forgery probes taken from each other writer of the same role.
    #[arg(long, default_value_t = 2)]
    pub random_per_writer: usize,
    /// Seed of the reference and random-forgery choices.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One precision's calibration and figures.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionReport {
    pub precision: Precision,
    pub validation_scores: ScoreCounts,
    pub test_scores: ScoreCounts,
    /// Image-only, dynamic-only, fused (logistic: the one stored) and fused (z-sum).
    pub methods: Vec<MethodFold>,
}

/// What `fuse` did.
#[derive(Debug, Clone, Serialize)]
pub struct FuseReport {
    pub bundle: PathBuf,
    pub online: PathBuf,
    pub images: PathBuf,
    pub validation_users: Vec<String>,
    pub test_users: Vec<String>,
    /// Held-out writers without usable samples in both modalities.
    pub skipped_users: Vec<String>,
    /// Signatures present in only one modality (or unreadable in one).
    pub unpaired: usize,
    pub references: usize,
    pub precisions: Vec<PrecisionReport>,
}

pub fn run_cli(args: FuseArgs) -> Result<ExitCode> {
    ensure!(
        (MIN_REFERENCES..=MAX_REFERENCES).contains(&args.references),
        "--references must be between {MIN_REFERENCES} and {MAX_REFERENCES}, got {}",
        args.references
    );
    let report = calibrate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The roles of `set`'s writers in a bundle's recorded split: the writers prefixed `set:` in a
/// multi-set split, or the whole split of a single-set bundle trained on `set`.
pub fn roles_in(split: &WriterSplit, trained_on: &str, set: &str) -> Result<FoldRoles> {
    let prefix = format!("{set}:");
    let prefixed = |ws: &[String]| -> Vec<String> {
        ws.iter().filter_map(|w| w.strip_prefix(&prefix)).map(str::to_string).collect()
    };
    let all = || split.train.iter().chain(&split.validation).chain(&split.test);
    let roles = if all().any(|w| w.starts_with(&prefix)) {
        FoldRoles {
            validation: prefixed(&split.validation),
            test: prefixed(&split.test),
            train: prefixed(&split.train),
        }
    } else if trained_on == set && !all().any(|w| w.contains(':')) {
        FoldRoles { validation: split.validation.clone(), test: split.test.clone(), train: split.train.clone() }
    } else {
        bail!(
            "the bundle was not trained with the {set} data set (trained on {trained_on}); its split has no {set} writers"
        )
    };
    if let Some(w) = roles.test.iter().chain(&roles.validation).find(|w| roles.train.contains(w)) {
        bail!("writer {w} is both a training and a held-out writer of the bundle: the split is not writer-disjoint");
    }
    Ok(roles)
}

/// Fits and stores the fusion; returns what it measured.
pub fn calibrate(args: &FuseArgs) -> Result<FuseReport> {
    let mut manifest = Manifest::load(&args.bundle).with_context(|| format!("loading {}", args.bundle.display()))?;
    let online = list_online_dataset(&args.online).context("listing the --online directory")?;
    ensure!(
        online.format == Format::Svc2004,
        "--online must be SVC2004 Task 2 (its images and trajectories are the same signatures); {} is {:?}",
        online.root.display(),
        online.format
    );
    let images_dir = match &args.images {
        Some(dir) => dir.clone(),
        None => args.online.parent().map(|p| p.join("svc2004")).unwrap_or_else(|| PathBuf::from("svc2004")),
    };
    let images = Images::load(&images_dir)?;
    let split = manifest
        .provenance
        .split
        .clone()
        .context("the bundle records no writer split, so its held-out writers are unknown")?;
    let roles = roles_in(&split, &manifest.provenance.dataset, &images.dataset.name)?;

    let settings = DynamicSettings::default();
    let mut unpaired = Vec::new();
    let trajectories = load_trajectories(&online, &settings, &mut unpaired);
    let plans = plan_users(&images, &trajectories, args.references, args.random_per_writer, args.seed);
    let (validation, test, skipped) = pick_roles(&roles, &images, &plans)?;
    let keys = probe_keys(validation.iter().chain(&test).copied());
    let mut dynamic: HashMap<u32, DynamicTemplate> = HashMap::new();
    for plan in validation.iter().chain(&test) {
        let refs: Vec<FeatureSequence> =
            plan.references.iter().map(|&s| trajectories.features[&(plan.user, s)].clone()).collect();
        let template = DynamicTemplate::from_features(refs, &settings)
            .with_context(|| format!("enrolling U{} dynamically", plan.user))?;
        dynamic.insert(plan.user, template);
    }

    let (height, width) = (manifest.preprocess.height as usize, manifest.preprocess.width as usize);
    let mut precisions = Vec::new();
    let mut decision = FusionDecision {
        f32: None,
        int8: None,
        provenance: FusionProvenance {
            online: online.root.display().to_string(),
            images: images_dir.display().to_string(),
            validation_users: validation.iter().map(|p| format!("U{}", p.user)).collect(),
            test_users: test.iter().map(|p| format!("U{}", p.user)).collect(),
            references: args.references,
            test_metrics: serde_json::Value::Null,
        },
    };
    for precision in [Precision::F32, Precision::Int8] {
        if manifest.model(precision).is_none() {
            continue;
        }
        let bytes = manifest.read_model(&args.bundle, precision)?;
        let mut embedder = TractEmbedder::new(&bytes, height, width)?;
        let label = format!("{} model: embedding images", precision_name(precision));
        let templates = embed_images(&mut embedder, &manifest.preprocess, &images, &keys, &label)?;
        let image: HashMap<u32, Vec<Template>> = validation
            .iter()
            .chain(&test)
            .map(|p| (p.user, p.references.iter().map(|&s| templates[&(p.user, s)]).collect()))
            .collect();
        let mut scratch = DtwScratch::default();
        let mut score = |plan: &UserPlan, probe: (u32, u32)| -> Result<PairScore> {
            Ok(PairScore {
                dynamic: dynamic[&plan.user].score_features(&trajectories.features[&probe], &mut scratch).score,
                image: writer_score(&image[&plan.user], &templates[&probe]),
            })
        };
        let validation_scores = score_group(&validation, &mut score)?;
        let test_scores = score_group(&test, &mut score)?;
        let (logistic, _z_sum, methods) = compare(&validation_scores, &test_scores, args.references)?;
        let fused = methods.iter().find(|m| m.method == METHODS[2]).context("the logistic fusion's figures")?;
        let calibration = FusionCalibration { fusion: logistic, thresholds: fused.thresholds };
        match precision {
            Precision::F32 => decision.f32 = Some(calibration),
            Precision::Int8 => decision.int8 = Some(calibration),
        }
        precisions.push(PrecisionReport {
            precision,
            validation_scores: (&validation_scores).into(),
            test_scores: (&test_scores).into(),
            methods,
        });
    }
    decision.provenance.test_metrics = serde_json::to_value(
        precisions
            .iter()
            .map(|p| (precision_name(p.precision), p.methods.iter().map(|m| (m.method.clone(), &m.test)).collect()))
            .collect::<BTreeMap<&str, BTreeMap<String, _>>>(),
    )?;
    manifest.fusion = Some(decision);
    manifest.save(&args.bundle).with_context(|| format!("writing {}", args.bundle.display()))?;
    Ok(FuseReport {
        bundle: args.bundle.clone(),
        online: online.root.clone(),
        images: images_dir,
        validation_users: roles.validation,
        test_users: roles.test,
        skipped_users: skipped,
        unpaired: unpaired.len(),
        references: args.references,
        precisions,
    })
}

/// The table `fuse` prints: test writers' EERs per precision and method.
pub fn markdown(report: &FuseReport) -> String {
    let mut out = format!(
        "fusion calibrated on {} validation writers, measured on {} test writers (R = {}); written to {}\n\n",
        report.validation_users.len(),
        report.test_users.len(),
        report.references,
        Path::new(&report.bundle).join(autograph_shared::manifest::MANIFEST_FILE).display()
    );
    out.push_str("| model | method | skilled EER | random EER | FRR / FAR (skilled) at the validation threshold |\n");
    out.push_str("|---|---|---|---|---|\n");
    for p in &report.precisions {
        for m in &p.methods {
            let skilled = m.test.skilled.as_ref();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} / {} |\n",
                precision_name(p.precision),
                m.method,
                pct(skilled.map_or(f64::NAN, |s| s.eer)),
                pct(m.test.random.as_ref().map_or(f64::NAN, |r| r.eer)),
                pct(skilled.map_or(f64::NAN, |s| s.at_validation_eer_threshold.frr)),
                pct(skilled.map_or(f64::NAN, |s| s.at_validation_eer_threshold.far)),
            ));
        }
    }
    if !report.skipped_users.is_empty() {
        out.push_str(&format!("\nskipped (no samples in both modalities): {}\n", report.skipped_users.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(train: &[&str], validation: &[&str], test: &[&str]) -> WriterSplit {
        let v = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect();
        WriterSplit { train: v(train), validation: v(validation), test: v(test) }
    }

    #[test]
    fn roles_come_from_the_bundles_split() {
        let multi = split(&["cedar:1", "svc2004:user1"], &["svc2004:user2", "cedar:2"], &["svc2004:user3"]);
        let roles = roles_in(&multi, "cedar+svc2004", "svc2004").expect("roles");
        assert_eq!(
            (roles.train, roles.validation, roles.test),
            (vec!["user1".into()], vec!["user2".into()], vec!["user3".into()])
        );
        let single = split(&["user1"], &["user2"], &["user3"]);
        assert_eq!(roles_in(&single, "svc2004", "svc2004").expect("single").test, vec!["user3".to_string()]);
        assert!(roles_in(&single, "cedar_half", "svc2004").is_err(), "not trained on svc2004");
        let leaky = split(&["svc2004:user1"], &["svc2004:user1"], &["svc2004:user3"]);
        assert!(roles_in(&leaky, "x", "svc2004").is_err(), "a training writer held out");
    }
}
