//! `autograph gallery list|remove|export|import|check|refit`: look after the gallery file.
//!
//! Every subcommand is tied to the bundle: a gallery made with another model or another
//! preprocessing is refused (`check` reports it instead). `list` and `check` show the writers
//! without a writer model (enrolled before the bundle had a cohort: the nearest rule decides
//! for them); `refit` fits their models from their stored references.

use std::path::{Path, PathBuf};

use autograph_shared::gallery::{KioskGallery, similarity, validate_id};
use serde::Serialize;

use super::{BundleArgs, CommandError, Exit, GalleryArgs, Report};
use crate::store::{self, StoreError};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GalleryCommand {
    /// List the enrolled writers.
    List(Common),
    /// Remove a writer and all their templates (exit 1 if not enrolled).
    Remove {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        user: String,
    },
    /// Copy the gallery, checked, to another file (written atomically, mode 0600).
    Export {
        #[command(flatten)]
        common: Common,
        /// Destination file.
        #[arg(value_name = "FILE")]
        to: PathBuf,
        /// Overwrite the destination if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replace the gallery with a checked copy of another gallery file made with this bundle.
    Import {
        #[command(flatten)]
        common: Common,
        /// Source file.
        #[arg(value_name = "FILE")]
        from: PathBuf,
        /// Overwrite a gallery that has writers (or is damaged).
        #[arg(long)]
        replace: bool,
    },
    /// Check the file's integrity and that it was made with this bundle's model (exit 1 if not);
    /// also counts the writers without a writer model.
    Check(Common),
    /// Fit the writer models of writers enrolled without one, from their stored references.
    ///
    /// A bundle with a cohort (an "adaptive" section in its manifest) fits each writer's model
    /// at enrolment; writers enrolled before (with an older bundle of the same model, or from a
    /// version-1 gallery file) have none and are decided by the nearest rule until this runs
    /// (or until their next enrolment, which fits their model). One locked, atomic update of
    /// the gallery file; the templates are not changed.
    Refit {
        #[command(flatten)]
        common: Common,
        /// Refit every writer, not only those without a model (e.g. after a new cohort).
        #[arg(long)]
        all: bool,
    },
}

/// `--bundle` and `--gallery`.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub gallery: GalleryArgs,
}

impl Common {
    fn path(&self) -> &Path {
        &self.gallery.gallery
    }
}

pub fn run(command: &GalleryCommand) -> Result<Report, CommandError> {
    match command {
        GalleryCommand::List(common) => list(common),
        GalleryCommand::Remove { common, user } => remove(common, user),
        GalleryCommand::Export { common, to, force } => export(common, to, *force),
        GalleryCommand::Import { common, from, replace } => import(common, from, *replace),
        GalleryCommand::Check(common) => check(common),
        GalleryCommand::Refit { common, all } => refit(common, *all),
    }
}

/// One writer in `gallery list`.
#[derive(Debug, Serialize)]
pub struct WriterJson {
    pub user: String,
    pub templates: usize,
    pub enrolled_at: u64,
    pub updated_at: u64,
    /// Mean / standard deviation of the similarities among the writer's references (`null`
    /// with one reference): a low mean flags an inconsistent enrolment.
    pub self_similarity: Option<SelfSimilarity>,
    /// Whether the writer has a writer model (without one the nearest rule decides).
    pub writer_model: bool,
}

#[derive(Debug, Serialize)]
pub struct SelfSimilarity {
    pub mean: f32,
    pub std: f32,
    pub pairs: u32,
}

#[derive(Debug, Serialize)]
pub struct ListJson {
    pub command: &'static str,
    pub gallery: PathBuf,
    pub writers: Vec<WriterJson>,
    pub templates: usize,
    /// Writers without a writer model.
    pub writers_without_model: usize,
    pub writer_capacity: usize,
    pub template_capacity: usize,
}

fn list(common: &Common) -> Result<Report, CommandError> {
    let bundle = common.bundle.open()?;
    let g = store::load(common.path(), Some(&bundle.model_identity()))?;
    let writers: Vec<WriterJson> = g
        .writers()
        .map(|w| WriterJson {
            user: w.id().to_string(),
            templates: w.templates().len(),
            enrolled_at: w.enrolled_at(),
            updated_at: w.updated_at(),
            self_similarity: w.stats().map(|s| SelfSimilarity { mean: s.mean, std: s.std, pairs: s.pairs }),
            writer_model: w.model().is_some(),
        })
        .collect();
    let mut text = format!(
        "{} writer(s), {} template(s) (capacity {} writers x {} templates)\n",
        g.len(),
        g.template_count(),
        KioskGallery::WRITER_CAPACITY,
        KioskGallery::TEMPLATE_CAPACITY
    );
    for w in &writers {
        let sim = w
            .self_similarity
            .as_ref()
            .map_or_else(String::new, |s| format!("  self-similarity {:.3}±{:.3}", s.mean, s.std));
        let model = if w.writer_model { "" } else { "  (no writer model)" };
        text.push_str(&format!("  {:<32} {} template(s){sim}{model}\n", w.user, w.templates));
    }
    text.push_str(&without_model_note(g.writers_without_model(), bundle.cohort().is_some()));
    let json = ListJson {
        command: "gallery list",
        gallery: common.path().to_path_buf(),
        templates: g.template_count(),
        writers_without_model: g.writers_without_model(),
        writers,
        writer_capacity: KioskGallery::WRITER_CAPACITY,
        template_capacity: KioskGallery::TEMPLATE_CAPACITY,
    };
    Ok(Report::new(Exit::Ok, &json, text.trim_end().to_string()))
}

#[derive(Debug, Serialize)]
pub struct RemoveJson {
    pub command: &'static str,
    pub gallery: PathBuf,
    pub user: String,
    pub removed: bool,
    pub writers: usize,
}

fn remove(common: &Common, user: &str) -> Result<Report, CommandError> {
    validate_id(user).map_err(|e| CommandError::Usage(e.to_string()))?;
    let bundle = common.bundle.open()?;
    let path = common.path();
    // `update` would create a missing gallery; removing from nothing is an error.
    if !path.exists() {
        return Err(StoreError::NotFound { path: path.to_path_buf() }.into());
    }
    let (removed, writers) =
        store::update(path, &bundle.model_identity(), |g| Ok::<_, CommandError>((g.remove(user), g.len())))?;
    let text = if removed {
        format!("removed {user:?}; {writers} writer(s) left")
    } else {
        format!("{user:?} is not enrolled; nothing removed")
    };
    let json =
        RemoveJson { command: "gallery remove", gallery: path.to_path_buf(), user: user.to_string(), removed, writers };
    Ok(Report::new(if removed { Exit::Ok } else { Exit::No }, &json, text))
}

#[derive(Debug, Serialize)]
pub struct CopyJson {
    pub command: &'static str,
    pub from: PathBuf,
    pub to: PathBuf,
    pub writers: usize,
    pub templates: usize,
}

fn export(common: &Common, to: &Path, force: bool) -> Result<Report, CommandError> {
    let bundle = common.bundle.open()?;
    let identity = bundle.model_identity();
    let g = store::load(common.path(), Some(&identity))?;
    if to.exists() && !force {
        return Err(CommandError::Usage(format!("{} exists; pass --force to overwrite it", to.display())));
    }
    store::save(to, &g, &identity)?;
    let json = CopyJson {
        command: "gallery export",
        from: common.path().to_path_buf(),
        to: to.to_path_buf(),
        writers: g.len(),
        templates: g.template_count(),
    };
    let text = format!("exported {} writer(s) to {}", g.len(), to.display());
    Ok(Report::new(Exit::Ok, &json, text))
}

fn import(common: &Common, from: &Path, replace: bool) -> Result<Report, CommandError> {
    let bundle = common.bundle.open()?;
    let identity = bundle.model_identity();
    let g = store::load(from, Some(&identity))?;
    let path = common.path();
    if !replace {
        match store::load(path, Some(&identity)) {
            Err(StoreError::NotFound { .. }) => {}
            Ok(existing) if existing.is_empty() => {}
            Ok(existing) => {
                return Err(CommandError::Usage(format!(
                    "{} has {} writer(s); pass --replace to overwrite it",
                    path.display(),
                    existing.len()
                )));
            }
            Err(e) => {
                return Err(CommandError::Usage(format!("{e}; pass --replace to overwrite it")));
            }
        }
    }
    store::save(path, &g, &identity)?;
    let json = CopyJson {
        command: "gallery import",
        from: from.to_path_buf(),
        to: path.to_path_buf(),
        writers: g.len(),
        templates: g.template_count(),
    };
    let text = format!("imported {} writer(s) from {} into {}", g.len(), from.display(), path.display());
    Ok(Report::new(Exit::Ok, &json, text))
}

/// `--json` output of `gallery check`.
#[derive(Debug, Serialize)]
pub struct CheckJson {
    pub command: &'static str,
    pub gallery: PathBuf,
    pub ok: bool,
    /// What is wrong, when not ok.
    pub problem: Option<String>,
    /// Format version, when the header could be read.
    pub version: Option<u32>,
    pub writers: Option<usize>,
    pub templates: Option<usize>,
    /// The model identity the file is stamped with (hex), when readable.
    pub model: Option<String>,
    /// This bundle's model identity (hex).
    pub expected_model: String,
    /// Templates that are not unit vectors (the model L2-normalises; anything else is damage
    /// that happens to carry a valid checksum).
    pub abnormal_templates: Option<usize>,
    /// Writers without a writer model, when readable (not a problem: the nearest rule decides
    /// for them).
    pub writers_without_model: Option<usize>,
    /// The bundle has a cohort and some writers have no writer model: `gallery refit` fits them.
    pub refit_advised: bool,
}

fn check(common: &Common) -> Result<Report, CommandError> {
    let bundle = common.bundle.open()?;
    let identity = bundle.model_identity();
    let path = common.path();
    let mut json = CheckJson {
        command: "gallery check",
        gallery: path.to_path_buf(),
        ok: false,
        problem: None,
        version: None,
        writers: None,
        templates: None,
        model: None,
        expected_model: hex::encode(identity),
        abnormal_templates: None,
        writers_without_model: None,
        refit_advised: false,
    };
    match store::load_with_header(path, None) {
        Ok((g, header)) => {
            json.version = Some(header.version);
            json.writers = Some(g.len());
            json.templates = Some(g.template_count());
            json.model = Some(hex::encode(header.model_sha256));
            let abnormal =
                g.writers().flat_map(|w| w.templates()).filter(|t| (similarity(t, t) - 1.0).abs() > 0.05).count();
            json.abnormal_templates = Some(abnormal);
            json.writers_without_model = Some(g.writers_without_model());
            json.refit_advised = bundle.cohort().is_some() && g.writers_without_model() > 0;
            if header.model_sha256 != identity {
                json.problem = Some(format!(
                    "the gallery was made with model {}, this bundle is {}; its writers must be enrolled again",
                    hex::encode(header.model_sha256),
                    hex::encode(identity)
                ));
            } else if abnormal > 0 {
                json.problem = Some(format!("{abnormal} template(s) are not unit vectors"));
            }
        }
        Err(e @ StoreError::Invalid { .. }) | Err(e @ StoreError::TooLarge { .. }) => {
            json.problem = Some(e.to_string())
        }
        Err(e) => return Err(e.into()),
    }
    json.ok = json.problem.is_none();
    let mut text = match &json.problem {
        None => format!(
            "OK: {} ({} writer(s), {} template(s), made with this bundle's model)",
            path.display(),
            json.writers.unwrap_or(0),
            json.templates.unwrap_or(0)
        ),
        Some(p) => format!("NOT OK: {p}"),
    };
    if json.problem.is_none() {
        text.push_str(&without_model_note(json.writers_without_model.unwrap_or(0), bundle.cohort().is_some()));
    }
    Ok(Report::new(if json.ok { Exit::Ok } else { Exit::No }, &json, text.trim_end().to_string()))
}

/// A line on writers without a writer model, when the bundle could fit them.
fn without_model_note(without: usize, cohort: bool) -> String {
    if cohort && without > 0 {
        format!(
            "\n{without} writer(s) have no writer model and are decided by the nearest rule; \
             `autograph gallery refit` fits them"
        )
    } else {
        String::new()
    }
}

/// `--json` output of `gallery refit`.
#[derive(Debug, Serialize)]
pub struct RefitJson {
    pub command: &'static str,
    pub gallery: PathBuf,
    /// Writer models fitted.
    pub fitted: usize,
    pub writers: usize,
    /// Writers still without a model afterwards (0).
    pub writers_without_model: usize,
    /// Templates in the bundle's cohort.
    pub cohort_templates: usize,
}

fn refit(common: &Common, all: bool) -> Result<Report, CommandError> {
    let bundle = common.bundle.open()?;
    let Some(cohort) = bundle.cohort() else {
        return Err(CommandError::Usage(format!(
            "the bundle {} has no cohort (its manifest has no \"adaptive\" section): writer models cannot be \
             fitted, and verification uses the nearest rule",
            bundle.dir().display()
        )));
    };
    let config = bundle.adaptive_config();
    let path = common.path();
    // `update` would create a missing gallery; there is nothing to refit in nothing.
    if !path.exists() {
        return Err(StoreError::NotFound { path: path.to_path_buf() }.into());
    }
    let (fitted, writers, without) = store::update(path, &bundle.model_identity(), |g| {
        let fitted = g.fit_models(cohort, &config, all).map_err(StoreError::from)?;
        Ok::<_, CommandError>((fitted, g.len(), g.writers_without_model()))
    })?;
    let json = RefitJson {
        command: "gallery refit",
        gallery: path.to_path_buf(),
        fitted,
        writers,
        writers_without_model: without,
        cohort_templates: cohort.len(),
    };
    let text = format!(
        "fitted {fitted} writer model(s) against the bundle's cohort ({} templates); {writers} writer(s), \
         {without} without a model",
        cohort.len()
    );
    Ok(Report::new(Exit::Ok, &json, text))
}
