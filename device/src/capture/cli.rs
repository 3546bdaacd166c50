//! `autograph capture` (render one kiosk screen to PNG, replaying a recording) and
//! `autograph kiosk` (the signing loop on a framebuffer and pen, or headless on recordings).

use std::path::PathBuf;
use std::time::Duration;

use autograph_shared::adaptive::DecisionRule;
use autograph_shared::gallery::validate_id;
use autograph_shared::strokes::Recording;
use embedded_graphics::prelude::Size;
use serde::Serialize;

use super::display::{Display, Headless, LinuxFramebuffer};
use super::framebuffer::PixelFormat;
use super::input::PenDevice;
use super::kiosk::{self, Judge, PenSource};
use super::playback::{Playback, strokes_as_updates};
use super::screen::{Layout, Outcome, Verdict};
use super::session::{Mode, Session};
use super::{CaptureError, load_recording};
use crate::commands::{
    Against, BundleArgs, CommandError, Exit, GalleryArgs, ModelUsed, OperatingPoint, OperatingPointArgs, Report,
    RuntimeArgs,
};
use crate::decision::{Modality, Policy};
use crate::engine::Engine;
use crate::replay::ReplayCheck;
use crate::store;

/// Most reference signatures a writer can have (the gallery's capacity per writer).
const MAX_SAMPLES: usize = autograph_shared::gallery::KioskGallery::TEMPLATE_CAPACITY;

/// `WxH`, e.g. `800x480`.
fn parse_size(s: &str) -> Result<Size, String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT, e.g. 800x480")?;
    let w: u32 = w.trim().parse().map_err(|_| format!("bad width {w:?}"))?;
    let h: u32 = h.trim().parse().map_err(|_| format!("bad height {h:?}"))?;
    Ok(Size::new(w, h))
}

/// `K/N`: signature K of N.
fn parse_progress(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 2/3")?;
    let k: usize = k.trim().parse().map_err(|_| format!("bad K {k:?}"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("bad N {n:?}"))?;
    if k == 0 || k > n || n > MAX_SAMPLES {
        return Err(format!("need 1 <= K <= N <= {MAX_SAMPLES}"));
    }
    Ok((k, n))
}

/// Which screen `autograph capture` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScreenKind {
    /// The empty signing box with the instruction.
    Prompt,
    /// The signing box with the replayed ink.
    Signing,
    /// Enrolment: the signing box with "K of N" progress.
    Enroll,
    /// A result (see --decision, --score, --threshold).
    Result,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Stroke recording to replay into the signing box (e.g. samples/strokes/ada-1.json);
    /// needed by --screen signing and enroll.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// PNG file to write.
    #[arg(long, value_name = "OUT.png")]
    pub screenshot: PathBuf,
    /// Screen size in pixels.
    #[arg(long, default_value = "800x480", value_parser = parse_size, value_name = "WxH")]
    pub size: Size,
    #[arg(long, value_enum, default_value_t = ScreenKind::Signing)]
    pub screen: ScreenKind,
    /// Writer id shown in the header.
    #[arg(long, default_value = "ada")]
    pub user: String,
    /// Enrolment progress for --screen enroll: signature K of N.
    #[arg(long, default_value = "2/3", value_parser = parse_progress, value_name = "K/N")]
    pub progress: (usize, usize),
    /// The decision --screen result shows.
    #[arg(long, value_enum, default_value_t = Verdict::Accepted)]
    pub decision: Verdict,
    /// Score --screen result shows.
    #[arg(long, allow_negative_numbers = true)]
    pub score: Option<f32>,
    /// Threshold --screen result shows.
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// Pixel format the frame is rendered in before it is decoded to PNG (RGB565 shows its
    /// colour banding).
    #[arg(long, value_enum, default_value_t = PixelFormat::Xrgb8888)]
    pub pixel_format: PixelFormat,
}

/// `--json` output of `capture`.
#[derive(Debug, Serialize)]
pub struct CaptureJson {
    pub command: &'static str,
    pub screen: ScreenKind,
    pub width: u32,
    pub height: u32,
    pub pixel_format: PixelFormat,
    pub screenshot: PathBuf,
    pub replay: Option<PathBuf>,
    pub strokes: usize,
    pub points: usize,
}

pub fn run_capture(args: &CaptureArgs) -> Result<Report, CommandError> {
    validate_id(&args.user).map_err(|e| CommandError::Usage(e.to_string()))?;
    let layout = Layout::for_size(args.size).map_err(CaptureError::from)?;
    let recording = args.replay.as_deref().map(load_recording).transpose()?;
    let (k, of) = args.progress;
    let user = args.user.clone();
    let mode = match (args.screen, args.decision) {
        (ScreenKind::Enroll, _) | (ScreenKind::Result, Verdict::Enrolled) => Mode::Enroll { user, samples: of },
        (ScreenKind::Result, Verdict::Found | Verdict::NotFound) => Mode::Identify,
        _ => Mode::Verify { user },
    };
    let mut session = Session::new(layout, mode);
    match args.screen {
        ScreenKind::Prompt => {}
        ScreenKind::Signing | ScreenKind::Enroll => {
            let Some(recording) = &recording else {
                return Err(CommandError::Usage("--screen signing and enroll need --replay FILE".into()));
            };
            for _ in 1..k.min(of) {
                session.next_sample();
            }
            for update in strokes_as_updates(recording, &layout, 0) {
                session.handle(&update);
            }
        }
        ScreenKind::Result => session.finish(preview_outcome(args)),
    }
    let mut display = Headless::new(args.size, args.pixel_format, None).map_err(CaptureError::from)?;
    kiosk::render(&mut display, &session, None)?;
    display.save_png(&args.screenshot).map_err(CaptureError::from)?;

    let json = CaptureJson {
        command: "capture",
        screen: args.screen,
        width: args.size.width,
        height: args.size.height,
        pixel_format: args.pixel_format,
        screenshot: args.screenshot.clone(),
        replay: args.replay.clone(),
        strokes: session.ink().len(),
        points: session.ink().iter().map(Vec::len).sum(),
    };
    let text = format!(
        "wrote {} ({} screen, {}x{}, {:?})",
        args.screenshot.display(),
        session.screen().name(),
        args.size.width,
        args.size.height,
        args.pixel_format
    );
    Ok(Report::new(Exit::Ok, &json, text))
}

/// The result screen `capture --screen result` previews, worded as the kiosk words it.
fn preview_outcome(args: &CaptureArgs) -> Outcome {
    let of = args.progress.1;
    let detail = match args.decision {
        Verdict::PossibleReplay => Some(kiosk::DETAIL_REPLAY.to_string()),
        Verdict::NotEnrolled => Some(kiosk::DETAIL_NOT_ENROLLED.to_string()),
        Verdict::NotFound => Some(kiosk::DETAIL_NOT_FOUND.to_string()),
        Verdict::Enrolled => Some(kiosk::detail_enrolled(of, of)),
        Verdict::Accepted | Verdict::Rejected | Verdict::Found => None,
    };
    let user = (args.decision != Verdict::NotFound).then(|| args.user.clone());
    Outcome { verdict: args.decision, user, score: args.score, threshold: args.threshold, detail }
}

#[derive(Debug, Clone, clap::Args)]
pub struct KioskArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    /// The writer signing. Without it (and without --enroll) the kiosk identifies the writer.
    #[arg(long)]
    pub user: Option<String>,
    /// Take reference signatures of --user instead of verifying.
    #[arg(long, requires = "user")]
    pub enroll: bool,
    /// Signatures to take when enrolling [default: the number of --replay files, else 3].
    #[arg(long, requires = "enroll", value_parser = clap::value_parser!(u8).range(1..=MAX_SAMPLES as i64))]
    pub samples: Option<u8>,
    /// Enrolling: replace the writer's references instead of adding to them.
    #[arg(long, requires = "enroll")]
    pub replace: bool,
    /// Stroke recordings to play as the pen's input, one signature each, in order (instead of
    /// reading --input).
    #[arg(long, value_name = "FILE")]
    pub replay: Vec<PathBuf>,
    /// Render into memory instead of --fb and write each screen to OUT_DIR as NN-name.png
    /// (needs --replay).
    #[arg(long, value_name = "OUT_DIR", requires = "replay")]
    pub headless: Option<PathBuf>,
    /// Headless screen size.
    #[arg(long, default_value = "800x480", value_parser = parse_size, value_name = "WxH")]
    pub size: Size,
    /// Headless pixel format.
    #[arg(long, value_enum, default_value_t = PixelFormat::Xrgb8888)]
    pub pixel_format: PixelFormat,
    /// Framebuffer device.
    #[arg(long, default_value = "/dev/fb0", value_name = "DEVICE")]
    pub fb: PathBuf,
    /// Pen or touch device [default: the first /dev/input/event* with ABS_X and ABS_Y].
    #[arg(long, value_name = "DEVICE")]
    pub input: Option<PathBuf>,
    /// Seconds the result stays on a real screen before the command exits.
    #[arg(long, default_value_t = 4)]
    pub hold: u64,
    /// Also save each signature taken as a stroke recording in DIR (mode 0600: biometric data).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub point: OperatingPointArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `--json` output of `kiosk`.
#[derive(Debug, Serialize)]
pub struct KioskJson {
    pub command: &'static str,
    /// `verify`, `identify` or `enroll`.
    pub mode: &'static str,
    /// The claimed writer, the enrolled one, or the one found.
    pub user: Option<String>,
    pub decision: Verdict,
    /// Accepted, enrolled or found.
    pub accepted: bool,
    /// The score of `rule` (verify), or the best writer's similarity (identify).
    pub score: Option<f32>,
    /// Verify: the nearest-reference similarity (the replay guard's).
    pub similarity: Option<f32>,
    /// Verify: the rule that decided (`nearest`, `normalised`, `classifier`).
    pub rule: Option<DecisionRule>,
    /// Verify: why the bundle's rule was not used (a writer without a writer model), or why
    /// the pen trajectory was not fused.
    pub fallback: Option<String>,
    /// Verify: `image` or `fused` (the image and the pen trajectory's scores together).
    pub modality: Option<Modality>,
    /// Verify: the pen trajectory's score against the writer's dynamic template.
    pub dynamic_score: Option<f32>,
    /// Verify: the fused score, when the bundle calibrates fusion.
    pub fused_score: Option<f32>,
    pub threshold: Option<f32>,
    pub operating_point: OperatingPoint,
    pub replay: Option<ReplayCheck>,
    /// Enrolment: whether the writer has a writer model afterwards.
    pub writer_model: Option<bool>,
    /// Enrolment: the writer's references afterwards.
    pub templates_total: Option<usize>,
    /// Enrolment: writers in the gallery afterwards.
    pub writers: Option<usize>,
    /// Enrolment: references of the writer's dynamic template afterwards (0: enrolled without
    /// a usable pen trajectory, verified on the image alone).
    pub dynamic_references: Option<usize>,
    /// Signatures taken.
    pub signatures: usize,
    /// Accepted signatures refused as unusable (too little ink, the same twice).
    pub retries: usize,
    pub strokes: usize,
    pub points: usize,
    /// Headless screenshots, in order.
    pub screens: Vec<PathBuf>,
    /// Recordings saved with --record.
    pub recordings: Vec<PathBuf>,
    #[serde(flatten)]
    pub model: ModelUsed,
}

pub fn run_kiosk(args: &KioskArgs) -> Result<Report, CommandError> {
    if let Some(user) = &args.user {
        validate_id(user).map_err(|e| CommandError::Usage(e.to_string()))?;
    }
    let recordings: Vec<Recording> = args.replay.iter().map(|p| load_recording(p)).collect::<Result<_, _>>()?;
    let mode = match (&args.user, args.enroll) {
        (Some(user), true) => {
            let default = if recordings.is_empty() { 3 } else { recordings.len().min(MAX_SAMPLES) };
            Mode::Enroll { user: user.clone(), samples: args.samples.map_or(default, usize::from) }
        }
        (Some(user), false) => Mode::Verify { user: user.clone() },
        (None, _) => Mode::Identify,
    };
    let needed = match mode {
        Mode::Enroll { samples, .. } => samples,
        _ => 1,
    };
    if args.headless.is_some() && recordings.len() < needed {
        return Err(CommandError::Usage(format!(
            "{} mode takes {needed} signature(s); --replay gave {}",
            mode.name(),
            recordings.len()
        )));
    }

    let bundle = args.bundle.open()?;
    let options = args.runtime.options();
    let against = if matches!(mode, Mode::Identify) { Against::Random } else { Against::Skilled };
    let policy = Policy::resolve(&bundle, bundle.precision_or_default(options.precision), &args.point, against)?;
    // Verification: the bundle's rule's threshold (a writer without a model may fall back to the
    // nearest rule's, reported with the decision); identification: the nearest rule's.
    let point = if matches!(mode, Mode::Verify { .. }) { policy.point } else { policy.nearest_point };
    let identity = bundle.model_identity();
    // Fail before the writer signs, not after: a damaged or foreign gallery is refused now.
    let gallery_file = args.gallery.file()?;
    let gallery = match mode {
        Mode::Enroll { .. } => store::load_or_empty(&gallery_file, &identity)?,
        _ => store::load(&gallery_file, Some(&identity))?,
    };
    let engine = Engine::open(bundle, options)?;
    let model = ModelUsed::of(&engine);
    let mut judge = Judge::new(engine, gallery_file, gallery, policy, args.replace);

    let mut display: Box<dyn Display> = match &args.headless {
        Some(dir) => {
            Box::new(Headless::new(args.size, args.pixel_format, Some(dir.clone())).map_err(CaptureError::from)?)
        }
        None => Box::new(LinuxFramebuffer::open(&args.fb).map_err(CaptureError::from)?),
    };
    let layout = Layout::for_size(display.size()).map_err(CaptureError::from)?;
    let mut input: Box<dyn PenSource> = if recordings.is_empty() {
        Box::new(PenDevice::open(args.input.as_deref(), display.size()).map_err(CaptureError::from)?)
    } else {
        Box::new(Playback::new(&recordings, &layout))
    };
    let mut session = Session::new(layout, mode.clone());
    let report = kiosk::run(display.as_mut(), input.as_mut(), &mut session, &mut judge, args.record.as_deref())?;
    if args.headless.is_none() {
        std::thread::sleep(Duration::from_secs(args.hold));
    }

    let outcome = &report.decided.outcome;
    let verdict = outcome.verdict;
    let point = report.decided.point.unwrap_or(point);
    let json = KioskJson {
        command: "kiosk",
        mode: mode.name(),
        user: outcome.user.clone(),
        decision: verdict,
        accepted: verdict.is_success(),
        score: outcome.score,
        similarity: report.decided.similarity,
        rule: report.decided.rule,
        fallback: report.decided.fallback.clone(),
        modality: report.decided.modality,
        dynamic_score: report.decided.dynamic.map(|d| d.score),
        fused_score: report.decided.dynamic.and_then(|d| d.fused),
        threshold: outcome.threshold,
        operating_point: point,
        replay: report.decided.replay,
        writer_model: report.decided.writer_model,
        templates_total: report.decided.templates_total,
        writers: report.decided.writers,
        dynamic_references: report.decided.dynamic_references,
        signatures: report.signatures.len(),
        retries: report.retries,
        strokes: report.signatures.iter().map(|r| r.strokes.len()).sum(),
        points: report.signatures.iter().map(Recording::point_count).sum(),
        screens: report.screens.clone(),
        recordings: report.saved.clone(),
        model,
    };
    let mut text = verdict.title().to_string();
    if let Some(user) = &outcome.user {
        text.push_str(&format!(" {user:?}"));
    }
    if let Some(score) = outcome.score {
        text.push_str(&format!(": score {score:.4}, threshold {point}"));
    }
    if let (Some(Modality::Fused), Some(d)) = (report.decided.modality, report.decided.dynamic) {
        text.push_str(&format!(
            " [fused: image similarity {:.4}, pen {:.4}]",
            report.decided.similarity.unwrap_or(f32::NAN),
            d.score
        ));
    } else if let Some(rule) = report.decided.rule.filter(|&r| r != DecisionRule::Nearest) {
        text.push_str(&format!(
            " [{} rule; similarity {:.4}]",
            crate::engine::rule_name(rule),
            report.decided.similarity.unwrap_or(f32::NAN)
        ));
    }
    if let Some(detail) = &outcome.detail {
        text.push_str(&format!(" ({detail})"));
    }
    if let Some(why) = &report.decided.fallback {
        text.push_str(&format!("\nnote: {why}"));
    }
    if let Some(n) = report.decided.dynamic_references.filter(|&n| n > 0) {
        text.push_str(&format!("\ndynamic template of {n} pen capture(s)"));
    }
    if let Some(dir) = &args.headless {
        text.push_str(&format!("\n{} screen(s) written to {}", report.screens.len(), dir.display()));
    }
    Ok(Report::new(if verdict.is_success() { Exit::Ok } else { Exit::No }, &json, text))
}
