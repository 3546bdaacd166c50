//! The kiosk loop: prompt -> sign -> accept -> rasterise -> embed -> verify, identify, or enrol
//! -> result, over any [`Display`] and any source of pen updates (an evdev device, or recorded
//! strokes played back headlessly). The decision rules are the CLI's ([`crate::decision`]): the
//! replay guard first, then the writer's score under the bundle's rule against that rule's
//! threshold; identification by the nearest-reference similarity; enrolment (fitting the
//! writer model when the bundle has a cohort) through the store's locked read-modify-write.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use autograph_shared::adaptive::DecisionRule;
use autograph_shared::gallery::{KioskGallery, Template};
use autograph_shared::online::verifier::MIN_REFERENCES;
use autograph_shared::online::{DynamicTemplate, Trajectory};
use autograph_shared::preprocess::{PreprocessError, preprocess_gray};
use autograph_shared::strokes::Recording;
use autograph_shared::strokes::raster::{RasterConfig, rasterise};

use super::CaptureError;
use super::display::Display;
use super::input::{PenDevice, PenUpdate};
use super::playback::Playback;
use super::screen::{self, Outcome, Verdict};
use super::session::{Mode, Session, Step};
use crate::commands::enroll::{enroll_dynamic, enroll_fitted};
use crate::commands::{CommandError, OperatingPoint};
use crate::decision::{self, Decision, DynamicPart, Modality, Policy};
use crate::engine::Engine;
use crate::replay::ReplayCheck;
use crate::store;

/// Result-screen lines, shared with `autograph capture`'s previews.
pub const DETAIL_REPLAY: &str = "A copy of an enrolled signature";
pub const DETAIL_NOT_ENROLLED: &str = "No references for this writer";
pub const DETAIL_NOT_FOUND: &str = "No enrolled writer is close enough";
pub const DETAIL_EMPTY_GALLERY: &str = "Nobody is enrolled yet";
pub const DETAIL_ALREADY_ENROLLED: &str = "Already enrolled: nothing was added";

/// The enrolment result line.
pub fn detail_enrolled(taken: usize, total: usize) -> String {
    format!("{taken} signature(s) taken, {total} on file")
}

/// Where pen updates come from.
pub trait PenSource {
    /// The next batch of updates; `None` when the source has nothing more (a playback ran
    /// out). A real device blocks until the pen moves.
    fn next_batch(&mut self) -> Result<Option<Vec<PenUpdate>>, CaptureError>;
}

impl PenSource for Playback {
    fn next_batch(&mut self) -> Result<Option<Vec<PenUpdate>>, CaptureError> {
        Ok(Playback::next_batch(self))
    }
}

impl PenSource for PenDevice {
    fn next_batch(&mut self) -> Result<Option<Vec<PenUpdate>>, CaptureError> {
        Ok(Some(self.next_updates()?))
    }
}

/// What the judge decided, with the figures behind it.
#[derive(Debug, Clone)]
pub struct Decided {
    pub outcome: Outcome,
    pub replay: Option<ReplayCheck>,
    /// Enrolment: the writer's references and the gallery's writers afterwards.
    pub templates_total: Option<usize>,
    pub writers: Option<usize>,
    /// Verification: the nearest-reference similarity, the rule that decided, and why the
    /// bundle's rule was not used (a writer without a writer model).
    pub similarity: Option<f32>,
    pub rule: Option<DecisionRule>,
    pub fallback: Option<String>,
    /// The threshold the score was compared with (verification and identification).
    pub point: Option<OperatingPoint>,
    /// Enrolment: whether the writer has a writer model afterwards.
    pub writer_model: Option<bool>,
    /// Verification: whether the image or the fused image-and-pen score decided, and the pen
    /// trajectory's scores.
    pub modality: Option<Modality>,
    pub dynamic: Option<DynamicPart>,
    /// Enrolment: references of the writer's dynamic template afterwards.
    pub dynamic_references: Option<usize>,
}

impl Decided {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            replay: None,
            templates_total: None,
            writers: None,
            similarity: None,
            rule: None,
            fallback: None,
            point: None,
            writer_model: None,
            modality: None,
            dynamic: None,
            dynamic_references: None,
        }
    }
}

/// An accepted signature, embedded, or why it could not be.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedded {
    Template(Template),
    /// Shown to the writer, who signs again.
    Unusable(String),
}

/// Embeds accepted signatures with the bundle's model and decides against the gallery.
#[derive(Debug)]
pub struct Judge {
    engine: Engine,
    gallery_path: store::GalleryFile,
    gallery: Box<KioskGallery>,
    policy: Policy,
    replace: bool,
    raster: RasterConfig,
}

impl Judge {
    /// `gallery` is the gallery at `gallery_path` as loaded at start-up: verification and
    /// identification read it; enrolment re-reads the file under the store's lock. `policy`
    /// decides verifications; identification uses its nearest-rule threshold.
    pub fn new(
        engine: Engine,
        gallery_path: store::GalleryFile,
        gallery: Box<KioskGallery>,
        policy: Policy,
        replace: bool,
    ) -> Self {
        Self { engine, gallery_path, gallery, policy, replace, raster: RasterConfig::default() }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Rasterises, preprocesses exactly like a scan (the bundle's settings), and embeds.
    pub fn embed(&mut self, recording: &Recording) -> Result<Embedded, CommandError> {
        let image = match rasterise(recording, &self.raster) {
            Ok(image) => image,
            Err(e) => return Ok(Embedded::Unusable(format!("Please sign again ({e})"))),
        };
        match preprocess_gray(&image, &self.engine.manifest().preprocess) {
            Ok(pre) => Ok(Embedded::Template(self.engine.template(&pre)?)),
            Err(PreprocessError::NoInk) => Ok(Embedded::Unusable("Too little ink: please sign again".into())),
            Err(e) => Ok(Embedded::Unusable(format!("Please sign again ({e})"))),
        }
    }

    /// Is `probe`, with the capture's pen `trajectory`, by `user`? The replay guard runs first,
    /// and the fused score decides when the writer and the bundle allow, as in `autograph
    /// verify --strokes`.
    pub fn verify(&self, user: &str, probe: &Template, trajectory: Option<&Trajectory>) -> Decided {
        let checked = decision::verify_with_pen(&self.gallery, user, probe, trajectory, &self.policy);
        let (verdict, detail) = match checked.decision {
            Decision::Accepted => (Verdict::Accepted, None),
            Decision::Rejected => (Verdict::Rejected, None),
            Decision::PossibleReplay => (Verdict::PossibleReplay, Some(DETAIL_REPLAY.to_string())),
            Decision::NotEnrolled => (Verdict::NotEnrolled, Some(DETAIL_NOT_ENROLLED.to_string())),
        };
        let threshold = Some(checked.point.threshold);
        let outcome = Outcome { verdict, user: Some(user.into()), score: checked.score, threshold, detail };
        Decided {
            replay: checked.replay,
            similarity: checked.similarity,
            rule: Some(checked.rule),
            fallback: checked.fallback,
            point: Some(checked.point),
            modality: Some(checked.modality),
            dynamic: checked.dynamic,
            ..Decided::of(outcome)
        }
    }

    /// Who among the enrolled writers is closest, if close enough.
    pub fn identify(&self, probe: &Template) -> Decided {
        let best = self.gallery.top_k::<1>(probe).first().map(|m| (m.id.to_string(), m.score));
        let threshold = self.policy.nearest_point.threshold;
        let outcome = match best {
            Some((user, score)) if score >= threshold => Outcome {
                verdict: Verdict::Found,
                user: Some(user),
                score: Some(score),
                threshold: Some(threshold),
                detail: None,
            },
            Some((_, score)) => Outcome {
                verdict: Verdict::NotFound,
                user: None,
                score: Some(score),
                threshold: Some(threshold),
                detail: Some(DETAIL_NOT_FOUND.into()),
            },
            None => Outcome {
                verdict: Verdict::NotFound,
                user: None,
                score: None,
                threshold: Some(threshold),
                detail: Some(DETAIL_EMPTY_GALLERY.into()),
            },
        };
        Decided { point: Some(self.policy.nearest_point), ..Decided::of(outcome) }
    }

    /// Adds `templates` to `user`'s references in one locked update of the gallery file. A
    /// template the writer already has (a replayed file, not a new signature) enrols nothing.
    /// With a bundle that has a cohort, the writer's model is fitted in the same update, and
    /// with the signatures' pen `trajectories` (two or more) its dynamic template is built.
    pub fn enroll(
        &self,
        user: &str,
        templates: &[Template],
        trajectories: &[Trajectory],
    ) -> Result<Decided, CommandError> {
        let bundle = self.engine.bundle();
        let (identity, config) = (bundle.model_identity(), bundle.adaptive_config());
        let now = crate::commands::now_unix();
        let replace = self.replace;
        let result = store::update(&self.gallery_path, &identity, |g| {
            let copies = !replace && g.get(user).is_some_and(|w| templates.iter().any(|t| w.templates().contains(t)));
            if copies {
                return Ok::<_, CommandError>(None);
            }
            let enrolled = enroll_fitted(g, user, templates, now, replace, bundle.cohort(), &config)?;
            // One pen capture cannot make a dynamic template (its spread needs a pair), and
            // captures the dynamic verifier cannot use must not cost the writer its enrolment:
            // the writer is then verified on the image alone, and `dynamic_references` says so.
            let has_dynamic = g.get(user).is_some_and(|w| w.dynamic().is_some());
            if trajectories.len() >= MIN_REFERENCES || (has_dynamic && !trajectories.is_empty()) {
                let _ = enroll_dynamic(g, user, trajectories);
            }
            let writer = g.get(user);
            let total = writer.map_or(0, |w| w.templates().len());
            let dynamic = writer.and_then(|w| w.dynamic()).map_or(0, DynamicTemplate::reference_count);
            Ok(Some((total, g.len(), enrolled.writer_model, dynamic)))
        })?;
        let decided = match result {
            None => Decided::of(Outcome {
                verdict: Verdict::PossibleReplay,
                user: Some(user.into()),
                score: None,
                threshold: None,
                detail: Some(DETAIL_ALREADY_ENROLLED.into()),
            }),
            Some((total, writers, writer_model, dynamic)) => Decided {
                templates_total: Some(total),
                writers: Some(writers),
                writer_model: Some(writer_model),
                dynamic_references: Some(dynamic),
                ..Decided::of(Outcome {
                    verdict: Verdict::Enrolled,
                    user: Some(user.into()),
                    score: None,
                    threshold: None,
                    detail: Some(detail_enrolled(templates.len(), total)),
                })
            },
        };
        Ok(decided)
    }
}

/// How a session went.
#[derive(Debug, Clone)]
pub struct SessionReport {
    pub decided: Decided,
    /// The signatures that were taken (accepted and usable).
    pub signatures: Vec<Recording>,
    /// Accepted signatures that had to be given again.
    pub retries: usize,
    /// Headless screenshots.
    pub screens: Vec<PathBuf>,
    /// Recordings saved with `--record`.
    pub saved: Vec<PathBuf>,
}

/// Draws the session's current frame and shows it.
pub fn render(display: &mut dyn Display, session: &Session, name: Option<&str>) -> Result<(), CaptureError> {
    let mut target = display.target();
    let Ok(()) = screen::draw(&mut target, session.layout(), &session.screen());
    display.present(name)?;
    Ok(())
}

/// Runs one session to its result. `record_dir`: also save each taken signature there.
pub fn run(
    display: &mut dyn Display,
    input: &mut dyn PenSource,
    session: &mut Session,
    judge: &mut Judge,
    record_dir: Option<&Path>,
) -> Result<SessionReport, CommandError> {
    render(display, session, Some(&session.screen_key()))?;
    let mut templates: Vec<Template> = Vec::new();
    let mut signatures = Vec::new();
    let mut saved = Vec::new();
    let mut retries = 0;
    loop {
        let Some(batch) = input.next_batch()? else {
            let taken = signatures.len();
            return Err(CaptureError::InputEnded(format!("{taken} signature(s) taken, {retries} refused")).into());
        };
        let mut redraw = false;
        let mut ink = false;
        for update in &batch {
            match session.handle(update) {
                Step::Nothing => {}
                Step::Redraw => redraw = true,
                Step::Ink => {
                    let mut target = display.target();
                    if let Some(stroke) = session.ink().last() {
                        let Ok(()) = screen::draw_ink_tail(&mut target, session.layout(), stroke);
                    }
                    ink = true;
                }
                Step::Accept(recording) => {
                    render(display, session, Some(&session.screen_key()))?;
                    let template = match judge.embed(&recording)? {
                        Embedded::Unusable(notice) => {
                            retries += 1;
                            session.retry(notice);
                            render(display, session, Some(&session.screen_key()))?;
                            continue;
                        }
                        Embedded::Template(t) => t,
                    };
                    if templates.contains(&template) {
                        retries += 1;
                        session.retry("The same signature twice: please sign again");
                        render(display, session, Some(&session.screen_key()))?;
                        continue;
                    }
                    if let Some(dir) = record_dir {
                        saved.push(save_recording(dir, &recording, signatures.len() + 1)?);
                    }
                    templates.push(template);
                    signatures.push(recording);
                    let decided = match session.mode().clone() {
                        Mode::Verify { user } => {
                            let trajectory = signatures.last().and_then(|r| Trajectory::try_from(r).ok());
                            judge.verify(&user, &template, trajectory.as_ref())
                        }
                        Mode::Identify => judge.identify(&template),
                        Mode::Enroll { user, samples } if templates.len() >= samples => {
                            // Every capture's trajectory, or none: a dynamic template from
                            // some of the signatures would not describe the writer's references.
                            let trajectories: Vec<Trajectory> = signatures
                                .iter()
                                .map(Trajectory::try_from)
                                .collect::<Result<_, _>>()
                                .unwrap_or_default();
                            judge.enroll(&user, &templates, &trajectories)?
                        }
                        Mode::Enroll { .. } => {
                            session.next_sample();
                            render(display, session, Some(&session.screen_key()))?;
                            continue;
                        }
                    };
                    session.finish(decided.outcome.clone());
                    render(display, session, Some(&session.screen_key()))?;
                    let screens = display.written().to_vec();
                    return Ok(SessionReport { decided, signatures, retries, screens, saved });
                }
            }
        }
        if redraw {
            render(display, session, None)?;
        } else if ink {
            display.present(None).map_err(CaptureError::from)?;
        }
    }
}

/// Writes a taken signature as `<dir>/<unix time>-<n>.json`, readable by the owner only (it
/// is biometric data, like the gallery).
fn save_recording(dir: &Path, recording: &Recording, n: usize) -> Result<PathBuf, CaptureError> {
    std::fs::create_dir_all(dir).map_err(|source| CaptureError::Write { path: dir.to_path_buf(), source })?;
    let path = dir.join(format!("{}-{n}.json", crate::commands::now_unix()));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(recording.to_json().as_bytes())?;
        file.sync_all()
    };
    write().map_err(|source| CaptureError::Write { path: path.clone(), source })?;
    Ok(path)
}
