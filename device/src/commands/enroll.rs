//! `autograph enroll`: add reference signatures of a writer to the gallery.
//!
//! All images are embedded before the gallery is touched; if any is unusable (blank, not an
//! image, a duplicate), each is reported with its reason and nothing is enrolled. The gallery
//! change itself is one locked read-modify-write ([`crate::store::update`]).

use std::path::PathBuf;

use autograph_shared::gallery::{EnrollOutcome, KioskGallery, Template, validate_id};
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
    /// Reference signature images (PNG, JPEG, TIFF, BMP), 1 to 8 per writer in all.
    #[arg(required = true, value_name = "IMG")]
    pub images: Vec<PathBuf>,
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
    pub gallery: PathBuf,
    #[serde(flatten)]
    pub model: ModelUsed,
}

pub fn run(args: &EnrollArgs) -> Result<Report, CommandError> {
    validate_id(&args.user).map_err(|e| CommandError::Usage(e.to_string()))?;
    if args.images.len() > KioskGallery::TEMPLATE_CAPACITY {
        return Err(CommandError::Usage(format!(
            "{} images given; a writer has at most {} references",
            args.images.len(),
            KioskGallery::TEMPLATE_CAPACITY
        )));
    }
    let bundle = args.bundle.open()?;
    let identity = bundle.model_identity();
    let mut engine = Engine::open(bundle, args.runtime.options())?;
    let templates = embed_references(&mut engine, &args.images)?;

    let now = now_unix();
    let (outcome, templates_total, writers) = store::update(&args.gallery.gallery, &identity, |g| {
        if !args.replace {
            reject_enrolled_copies(g, &args.user, &templates, &args.images)?;
        }
        let outcome = g.enroll(&args.user, &templates, now, args.replace).map_err(StoreError::from)?;
        let total = g.get(&args.user).map_or(0, |w| w.templates().len());
        Ok::<_, CommandError>((outcome, total, g.len()))
    })?;

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
        gallery: args.gallery.gallery.clone(),
        model: ModelUsed::of(&engine),
    };
    let text = format!(
        "enrolled {:?}: {} reference(s) {outcome}, {templates_total} in all; the gallery has {writers} writer(s)",
        args.user,
        templates.len()
    );
    Ok(Report::new(Exit::Ok, &json, text))
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
