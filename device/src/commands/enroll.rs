//! `autograph enroll`: add reference signatures of a writer to the gallery.
//!
//! All images are embedded before the gallery is touched; if any is unusable (blank, not an
//! image, a duplicate), each is reported with its reason and nothing is enrolled. The gallery
//! change itself is one locked read-modify-write ([`crate::store::update`]).
//!
//! With a bundle that has a cohort, the writer's model (z-norm statistics and a linear
//! classifier, [`autograph_shared::adaptive::WriterModel`]) is fitted inside that update on the
//! writer's references after enrolment (the old and new ones when appending), so the model and
//! the templates it describes are written together.
//!
//! With `--strokes` the writer's pen captures also build (or, when appending, extend) its
//! dynamic template ([`autograph_shared::online::DynamicTemplate`]) in the same update; kiosk
//! recordings given without images are rendered into the reference images as the kiosk does.

use std::path::PathBuf;

use autograph_shared::adaptive::{AdaptiveConfig, Cohort};
use autograph_shared::gallery::{EnrollOutcome, GalleryError, KioskGallery, Template, validate_id};
use autograph_shared::online::verifier::MIN_REFERENCES;
use autograph_shared::online::{DynamicSettings, DynamicTemplate, Trajectory};
use serde::Serialize;

use super::{BundleArgs, CommandError, Exit, GalleryArgs, ModelUsed, RejectedImage, Report, RuntimeArgs, now_unix};
use crate::engine::Engine;
use crate::store::{self, StoreError};

#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    /// Writer id (1-64 bytes, no control characters).
    #[arg(long)]
    pub user: String,
    /// Reference signature images (PNG, JPEG, TIFF, BMP), 1 to 8 per writer in all. Optional
    /// when every `--strokes` file is a kiosk recording: those are rendered as the kiosk does.
    #[arg(value_name = "IMG", required_unless_present = "strokes")]
    pub images: Vec<PathBuf>,
    /// The references' pen captures (kiosk recordings .json, SVC2004 Task 2 .TXT, MCYT .fpg),
    /// for verification from a pen: they build the writer's dynamic template (at least 2 for a
    /// new one; with `--replace` or appending, as for images).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub strokes: Vec<PathBuf>,
    /// Replace the writer's references instead of adding to them.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `--json` output of `enroll`.
#[derive(Debug, Serialize)]
pub struct EnrollJson {
    pub command: &'static str,
    pub user: String,
    /// `created`, `appended` or `replaced`.
    pub outcome: &'static str,
    pub templates_added: usize,
    /// The writer's templates after enrolment.
    pub templates_total: usize,
    /// Writers in the gallery after enrolment.
    pub writers: usize,
    /// Whether the writer has a writer model now (fitted at this enrolment; always false with a
    /// bundle without a cohort).
    pub writer_model: bool,
    /// Why no writer model was fitted although the bundle has a cohort, else `null`.
    pub writer_model_problem: Option<String>,
    /// Writers in the gallery without a writer model (decided by the nearest rule; `autograph
    /// gallery refit` fits them when the bundle has a cohort).
    pub writers_without_model: usize,
    /// Pen captures added to the writer's dynamic template by this enrolment.
    pub pen_captures_added: usize,
    /// References of the writer's dynamic template afterwards (0: none; pen captures cannot
    /// then be fused for this writer).
    pub dynamic_references: usize,
    pub gallery: PathBuf,
    #[serde(flatten)]
    pub model: ModelUsed,
}

pub fn run(args: &EnrollArgs) -> Result<Report, CommandError> {
    validate_id(&args.user).map_err(|e| CommandError::Usage(e.to_string()))?;
    for (what, n) in [("images", args.images.len()), ("pen captures", args.strokes.len())] {
        if n > KioskGallery::TEMPLATE_CAPACITY {
            return Err(CommandError::Usage(format!(
                "{n} {what} given; a writer has at most {} references",
                KioskGallery::TEMPLATE_CAPACITY
            )));
        }
    }
    let pens = args.strokes.iter().map(|p| super::read_pen_capture(p)).collect::<Result<Vec<_>, _>>()?;
    let bundle = args.bundle.open()?;
    let identity = bundle.model_identity();
    let (cohort, config) = (bundle.cohort_arc(), bundle.adaptive_config());
    let mut engine = Engine::open(bundle, args.runtime.options())?;
    let (templates, sources) = if args.images.is_empty() {
        let templates = embed_recordings(&mut engine, &pens)?;
        (templates, args.strokes.clone())
    } else {
        (embed_references(&mut engine, &args.images)?, args.images.clone())
    };
    let trajectories: Vec<Trajectory> = pens.into_iter().map(|p| p.trajectory).collect();

    let now = now_unix();
    let (enrolled, templates_total, writers, writers_without_model, dynamic_references) =
        store::update(&args.gallery.file()?, &identity, |g| {
            if !args.replace {
                reject_enrolled_copies(g, &args.user, &templates, &sources)?;
            }
            let enrolled = enroll_fitted(g, &args.user, &templates, now, args.replace, cohort.as_deref(), &config)?;
            if !trajectories.is_empty() {
                enroll_dynamic(g, &args.user, &trajectories)?;
            }
            let writer = g.get(&args.user);
            let total = writer.map_or(0, |w| w.templates().len());
            let dynamic = writer.and_then(|w| w.dynamic()).map_or(0, DynamicTemplate::reference_count);
            Ok::<_, CommandError>((enrolled, total, g.len(), g.writers_without_model(), dynamic))
        })?;
    let Enrolled { outcome, writer_model, problem } = enrolled;

    let outcome = match outcome {
        EnrollOutcome::Created => "created",
        EnrollOutcome::Appended => "appended",
        EnrollOutcome::Replaced => "replaced",
    };
    let json = EnrollJson {
        command: "enroll",
        user: args.user.clone(),
        outcome,
        templates_added: templates.len(),
        templates_total,
        writers,
        writer_model,
        writer_model_problem: problem.clone(),
        writers_without_model,
        pen_captures_added: trajectories.len(),
        dynamic_references,
        gallery: args.gallery.gallery.clone(),
        model: ModelUsed::of(&engine),
    };
    let mut text = format!(
        "enrolled {:?}: {} reference(s) {outcome}, {templates_total} in all; the gallery has {writers} writer(s)",
        args.user,
        templates.len()
    );
    if writer_model {
        text.push_str("; writer model fitted");
    }
    if !trajectories.is_empty() {
        text.push_str(&format!("; dynamic template of {dynamic_references} pen capture(s)"));
    }
    if let Some(problem) = problem {
        text.push_str(&format!("\nwarning: no writer model was fitted ({problem}); the nearest rule decides"));
    }
    if cohort.is_some() && writers_without_model > 0 {
        text.push_str(&format!(
            "\nnote: {writers_without_model} writer(s) have no writer model and are decided by the nearest rule; \
             `autograph gallery refit` fits them"
        ));
    }
    Ok(Report::new(Exit::Ok, &json, text))
}

/// What [`enroll_fitted`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub outcome: EnrollOutcome,
    /// The writer has a writer model after enrolment.
    pub writer_model: bool,
    /// Why no model was fitted although there is a cohort.
    pub problem: Option<String>,
}

/// Enrols `templates` for `user` in `gallery`, fitting the writer's model against `cohort`
/// (when there is one) on the writer's references afterwards; the enrolment of `autograph
/// enroll` and of the kiosk. A fit that fails (it should not: the problem is strictly convex)
/// does not lose the enrolment: the writer is enrolled without a model, decided by the nearest
/// rule until a refit, and `problem` says why. On error the gallery is unchanged.
pub fn enroll_fitted(
    gallery: &mut KioskGallery,
    user: &str,
    templates: &[Template],
    now: u64,
    replace: bool,
    cohort: Option<&Cohort>,
    config: &AdaptiveConfig,
) -> Result<Enrolled, StoreError> {
    let (outcome, problem) = match gallery.enroll_fitted(user, templates, now, replace, cohort, config) {
        Ok(outcome) => (outcome, None),
        Err(GalleryError::Adaptive(e)) => (gallery.enroll(user, templates, now, replace)?, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let writer_model = gallery.get(user).is_some_and(|w| w.model().is_some());
    Ok(Enrolled { outcome, writer_model, problem })
}

/// Builds the writer's dynamic template from `trajectories` (the writer is enrolled: this runs
/// after its images in the same update). A replacing enrolment has dropped the old template, so
/// the writer gets a new one; an appending enrolment extends the one it has.
pub fn enroll_dynamic(gallery: &mut KioskGallery, user: &str, trajectories: &[Trajectory]) -> Result<(), CommandError> {
    let existing = gallery.get(user).and_then(|w| w.dynamic());
    let template = match existing {
        Some(t) => t.extended(trajectories),
        None if trajectories.len() < MIN_REFERENCES => {
            return Err(CommandError::Usage(format!(
                "{} pen capture(s) given; a writer's dynamic template needs at least {MIN_REFERENCES}",
                trajectories.len()
            )));
        }
        None => DynamicTemplate::enrol(trajectories, &DynamicSettings::default()),
    }
    .map_err(|e| CommandError::Usage(format!("the pen captures cannot be enrolled: {e}")))?;
    gallery.set_dynamic(user, Some(template))?;
    Ok(())
}

/// Renders and embeds kiosk recordings; every pen capture must be one (other formats carry no
/// image the kiosk would draw). Collects every unusable one before failing.
fn embed_recordings(engine: &mut Engine, pens: &[super::PenCapture]) -> Result<Vec<Template>, CommandError> {
    let mut templates: Vec<Template> = Vec::with_capacity(pens.len());
    let mut rejected = Vec::new();
    for pen in pens {
        let Some(recording) = &pen.recording else {
            return Err(CommandError::Usage(format!(
                "{}: not a kiosk recording, so there is no image to render; give the reference images too",
                pen.path.display()
            )));
        };
        match super::template_of_recording(engine, &pen.path, recording) {
            Ok(t) if templates.contains(&t) => rejected.push(RejectedImage {
                file: pen.path.clone(),
                reason: "a copy of another reference (identical template)".into(),
            }),
            Ok(t) => templates.push(t),
            Err(CommandError::Image(r)) => rejected.push(r),
            Err(other) => return Err(other),
        }
    }
    if !rejected.is_empty() {
        return Err(CommandError::References { rejected, total: pens.len() });
    }
    Ok(templates)
}

/// Embeds every reference; collects every unusable image (blank, unreadable, or a copy of
/// another reference given in the same call) before failing.
fn embed_references(engine: &mut Engine, images: &[PathBuf]) -> Result<Vec<Template>, CommandError> {
    let mut templates = Vec::with_capacity(images.len());
    let mut rejected = Vec::new();
    for (i, path) in images.iter().enumerate() {
        match super::template_of(engine, path) {
            Ok(t) => match templates.iter().position(|&(_, u)| u == t) {
                Some(first) => rejected.push(RejectedImage {
                    file: path.clone(),
                    reason: format!(
                        "a copy of {} (identical template): two references must be two signatures",
                        images[first].display()
                    ),
                }),
                None => templates.push((i, t)),
            },
            Err(CommandError::Image(r)) => rejected.push(r),
            Err(other) => return Err(other),
        }
    }
    if !rejected.is_empty() {
        return Err(CommandError::References { rejected, total: images.len() });
    }
    Ok(templates.into_iter().map(|(_, t)| t).collect())
}

/// Refuses references identical to a template the writer already has (the same scan enrolled
/// twice would make the replay guard reject a later re-scan less reliably and skew the mean).
fn reject_enrolled_copies(
    gallery: &KioskGallery,
    user: &str,
    templates: &[Template],
    images: &[PathBuf],
) -> Result<(), CommandError> {
    let Some(writer) = gallery.get(user) else { return Ok(()) };
    let rejected: Vec<RejectedImage> = templates
        .iter()
        .zip(images)
        .filter(|(t, _)| writer.templates().contains(t))
        .map(|(_, path)| RejectedImage {
            file: path.clone(),
            reason: format!("already enrolled for {user:?} (identical template)"),
        })
        .collect();
    if rejected.is_empty() { Ok(()) } else { Err(CommandError::References { rejected, total: images.len() }) }
}
