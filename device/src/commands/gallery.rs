//! `autograph gallery list|remove|export|import|check|refit|encrypt|rekey`: look after the
//! gallery file.
//!
//! Every subcommand but `encrypt` and `rekey` is tied to the bundle: a gallery made with another
//! model or another preprocessing is refused (`check` reports it instead). `list` and `check`
//! show the writers without a writer model (enrolled before the bundle had a cohort: the nearest
//! rule decides for them); `refit` fits their models from their stored references.
//!
//! The file is encrypted under the device key ([`crate::crypt`]); `export` writes a copy
//! encrypted under the same key. `encrypt` migrates a gallery written before encryption at
//! rest, `rekey` moves the gallery to another key; both work on the bytes (no bundle needed),
//! check the gallery whole first, and replace the file atomically under its lock.

use std::path::{Path, PathBuf};

use autograph_shared::gallery::{KioskGallery, similarity, validate_id};
use serde::Serialize;

use super::{BundleArgs, CommandError, Exit, GalleryArgs, Report};
use crate::crypt::KeyFile;
use crate::store::{self, GalleryFile, StoreError};

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
    /// Encrypt a gallery written before encryption at rest, in place, under the key file
    /// (created if missing: back it up).
    ///
    /// The gallery's checksum is verified first; its writers and format are kept exactly. One
    /// atomic replacement under the gallery's lock; a gallery that is encrypted already is only
    /// checked. Other commands refuse a plain gallery until this has run. The plaintext may
    /// survive in the storage's free blocks and in old back-ups.
    Encrypt {
        #[command(flatten)]
        gallery: GalleryArgs,
    },
    /// Re-encrypt the gallery under another key file (created if missing), e.g. to rotate the
    /// key or after it may have leaked.
    ///
    /// The gallery must open with its current key (--gallery-key) and be whole. One atomic
    /// replacement under the gallery's lock; afterwards only the new key opens it, so point
    /// --gallery-key (or AUTOGRAPH_GALLERY_KEY, or the default key file) at the new key.
    /// Back-ups made before still need the old key.
    Rekey {
        #[command(flatten)]
        gallery: GalleryArgs,
        /// The key file to encrypt the gallery under from now on.
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
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

    fn file(&self) -> Result<GalleryFile, CommandError> {
        self.gallery.file()
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
        GalleryCommand::Encrypt { gallery } => encrypt(gallery),
        GalleryCommand::Rekey { gallery, new_key } => rekey(gallery, new_key),
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
    /// References of the writer's dynamic template (0: enrolled without pen captures, so pen
    /// captures are decided on the image alone).
    pub dynamic_references: usize,
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
    let g = store::load(&common.file()?, Some(&bundle.model_identity()))?;
    let writers: Vec<WriterJson> = g
        .writers()
        .map(|w| WriterJson {
            user: w.id().to_string(),
            templates: w.templates().len(),
            enrolled_at: w.enrolled_at(),
            updated_at: w.updated_at(),
            self_similarity: w.stats().map(|s| SelfSimilarity { mean: s.mean, std: s.std, pairs: s.pairs }),
            writer_model: w.model().is_some(),
            dynamic_references: w.dynamic().map_or(0, |d| d.reference_count()),
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
        let pen = match w.dynamic_references {
            0 => String::new(),
            n => format!(", {n} pen capture(s)"),
        };
        text.push_str(&format!("  {:<32} {} template(s){pen}{sim}{model}\n", w.user, w.templates));
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
        store::update(&common.file()?, &bundle.model_identity(), |g| Ok::<_, CommandError>((g.remove(user), g.len())))?;
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
    let file = common.file()?;
    let g = store::load(&file, Some(&identity))?;
    if to.exists() && !force {
        return Err(CommandError::Usage(format!("{} exists; pass --force to overwrite it", to.display())));
    }
    // The copy is encrypted under the same key: restoring it needs the key's back-up too.
    store::save(&GalleryFile::new(to, file.key_file().clone()), &g, &identity)?;
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
    let file = common.file()?;
    let g = store::load(&GalleryFile::new(from, file.key_file().clone()), Some(&identity))?;
    let path = common.path();
    if !replace {
        match store::load(&file, Some(&identity)) {
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
    store::save(&file, &g, &identity)?;
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
    /// The bundle decides by a rule that uses writer models and some writers have none:
    /// `gallery refit` fits them.
    pub refit_advised: bool,
    /// Id of the key the gallery opened with (hex; see `autograph gallery encrypt --help`),
    /// when it did.
    pub key_id: Option<String>,
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
        key_id: None,
    };
    let file = common.file()?;
    match store::load_with_header(&file, None) {
        Ok((g, header)) => {
            json.version = Some(header.version);
            json.writers = Some(g.len());
            json.templates = Some(g.template_count());
            json.model = Some(hex::encode(header.model_sha256));
            let abnormal =
                g.writers().flat_map(|w| w.templates()).filter(|t| (similarity(t, t) - 1.0).abs() > 0.05).count();
            json.abnormal_templates = Some(abnormal);
            json.writers_without_model = Some(g.writers_without_model());
            // Only when the bundle's rule uses writer models (the consistency rule does not).
            let rule_uses_models = bundle.manifest().adaptive.as_ref().is_some_and(|a| a.rule.method().needs_model());
            json.refit_advised = rule_uses_models && bundle.cohort().is_some() && g.writers_without_model() > 0;
            json.key_id = file.key_file().read().ok().map(|key| key.id().to_string());
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
        // The file's own bytes are damaged: that is what `check` reports (exit 1). A wrong or
        // missing key, a plain gallery or an unreadable file is an error (exit 2).
        Err(e) if e.is_damage() => json.problem = Some(e.to_string()),
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
    let (fitted, writers, without) = store::update(&common.file()?, &bundle.model_identity(), |g| {
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

/// `--json` output of `gallery encrypt`.
#[derive(Debug, Serialize)]
pub struct EncryptJson {
    pub command: &'static str,
    pub gallery: PathBuf,
    pub key_file: PathBuf,
    /// Id of the key the gallery is encrypted under (hex).
    pub key_id: String,
    /// The key file did not exist and was created (back it up).
    pub created_key: bool,
    /// The gallery was encrypted already; nothing was written.
    pub already_encrypted: bool,
    /// The gallery's (plaintext) format version, kept as it was.
    pub version: u32,
    pub writers: u32,
}

fn encrypt(args: &GalleryArgs) -> Result<Report, CommandError> {
    let file = args.file()?;
    let done = store::encrypt(&file)?;
    let key_file = file.key_file().path();
    let mut text = if done.already {
        format!(
            "{} is encrypted already, under key {} ({}); nothing was written",
            file.path().display(),
            done.key_id,
            key_file.display()
        )
    } else {
        format!(
            "encrypted {} ({} writer(s)) under key {} ({})",
            file.path().display(),
            done.header.writer_count,
            done.key_id,
            key_file.display()
        )
    };
    if done.created_key {
        text.push_str(&format!(
            "\ncreated the key file {}: back it up apart from the gallery; without it the gallery cannot be read",
            key_file.display()
        ));
    }
    let json = EncryptJson {
        command: "gallery encrypt",
        gallery: file.path().to_path_buf(),
        key_file: key_file.to_path_buf(),
        key_id: done.key_id.to_string(),
        created_key: done.created_key,
        already_encrypted: done.already,
        version: done.header.version,
        writers: done.header.writer_count,
    };
    Ok(Report::new(Exit::Ok, &json, text))
}

/// `--json` output of `gallery rekey`.
#[derive(Debug, Serialize)]
pub struct RekeyJson {
    pub command: &'static str,
    pub gallery: PathBuf,
    pub old_key_file: PathBuf,
    pub old_key_id: String,
    pub new_key_file: PathBuf,
    pub new_key_id: String,
    /// The new key file did not exist and was created (back it up).
    pub created_key: bool,
    pub writers: u32,
}

fn rekey(args: &GalleryArgs, new_key: &Path) -> Result<Report, CommandError> {
    let file = args.file()?;
    let new_key = KeyFile::new(new_key);
    let done = store::rekey(&file, &new_key)?;
    let text = format!(
        "re-encrypted {} ({} writer(s)) from key {} ({}) to key {} ({}{})\n\
         from now on give --gallery-key {} (or AUTOGRAPH_GALLERY_KEY, or put it at the default key location); \
         keep the old key as long as back-ups made with it are kept",
        file.path().display(),
        done.header.writer_count,
        done.old_key_id,
        file.key_file().path().display(),
        done.new_key_id,
        new_key.path().display(),
        if done.created_key { ", created: back it up" } else { "" },
        new_key.path().display()
    );
    let json = RekeyJson {
        command: "gallery rekey",
        gallery: file.path().to_path_buf(),
        old_key_file: file.key_file().path().to_path_buf(),
        old_key_id: done.old_key_id.to_string(),
        new_key_file: new_key.path().to_path_buf(),
        new_key_id: done.new_key_id.to_string(),
        created_key: done.created_key,
        writers: done.header.writer_count,
    };
    Ok(Report::new(Exit::Ok, &json, text))
}
