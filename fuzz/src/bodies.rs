//! One function per fuzz target: what the kiosk does with the bytes of one input, plus the
//! invariants its output must keep. A body returns quietly on any error the library reports;
//! a panic (a failed invariant, an index out of bounds, an overflow under debug assertions) is
//! a crash.
//!
//! This file is compiled twice: into the `autograph-fuzz` crate (the libFuzzer targets) and,
//! through `#[path]`, into tests/tests/fuzz_replay.rs, which replays the seeds of `seeds.rs`
//! and `fuzz/regressions/<target>/` on stable. So it uses only crates both have:
//! autograph_shared, autograph_device, embedded_graphics, evdev, libc, serde_json, tempfile.

use std::path::Path;

pub use autograph_device::capture::input::AxisRange;
use autograph_device::capture::input::{PenAxes, strokes_from_events, updates_from_events};
use autograph_device::capture::screen::Layout;
use autograph_device::capture::session::{Mode, Session, Step};
use autograph_device::crypt;
use autograph_device::engine::{Bundle, Engine, EngineOptions};
use autograph_shared::adaptive::{Cohort, DecisionRule};
use autograph_shared::gallery::{EMBEDDING_DIM, KioskGallery, Template};
use autograph_shared::manifest::Manifest;
use autograph_shared::online::{DynamicSettings, DynamicTemplate, Trajectory, parse_mcyt_fpg, parse_svc2004};
use autograph_shared::preprocess::{PreprocessConfig, Preprocessed, decode_gray, preprocess_bytes, preprocess_gray};
use autograph_shared::strokes::Recording;
use autograph_shared::strokes::raster::{RasterConfig, rasterise};
use embedded_graphics::prelude::Size;
use evdev::InputEvent;

/// What a target runs on one input.
pub type Body = fn(&[u8]);

/// Every target, by name: the directory names of its seeds and under fuzz/regressions.
pub const TARGETS: [(&str, Body); 11] = [
    ("preprocess", preprocess),
    ("palette_tiff", palette_tiff),
    ("strokes", strokes),
    ("manifest", manifest),
    ("bundle", bundle),
    ("gallery", gallery),
    ("cohort", cohort),
    ("evdev", evdev),
    ("svc2004", svc2004),
    ("mcyt", mcyt),
    ("dynamic_template", dynamic_template),
];

/// Targets that run tract on every input (a model load and an embedding): slow.
pub const SLOW_TARGETS: [&str; 1] = ["bundle"];

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// What every preprocessed image satisfies, whatever the input.
fn check_preprocessed(p: &Preprocessed, config: &PreprocessConfig) {
    assert_eq!((p.height, p.width), (config.height, config.width), "output size");
    assert_eq!(p.pixels.len(), config.height as usize * config.width as usize, "output length");
    assert!(p.pixels.iter().all(|v| (0.0..=1.0).contains(v)), "a pixel outside [0, 1]");
}

/// `shared::preprocess` on arbitrary bytes: PNG, JPEG, TIFF, BMP, or anything else.
pub fn preprocess(data: &[u8]) {
    let config = PreprocessConfig::default();
    if let Ok(p) = preprocess_bytes(data, &config) {
        check_preprocessed(&p, &config);
    }
}

/// TIFF files only, so the fuzzer spends its time in the TIFF decoders and our palette path
/// (`image` refuses palette TIFFs; `preprocess` reads their strips through the colour map).
pub fn palette_tiff(data: &[u8]) {
    if !(data.starts_with(b"II*\0") || data.starts_with(b"MM\0*")) {
        return;
    }
    let config = PreprocessConfig::default();
    let Ok(gray) = decode_gray(data, &config) else { return };
    let (w, h) = gray.dimensions();
    assert!(w > 0 && h > 0 && w <= config.max_input_side && h <= config.max_input_side, "{w}x{h} decoded");
    if let Ok(p) = preprocess_gray(&gray, &config) {
        check_preprocessed(&p, &config);
    }
}

// ---------------------------------------------------------------------------------------------
// Pen strokes and trajectories
// ---------------------------------------------------------------------------------------------

/// A stroke recording (`recording.json`, `--replay`): load, write back, rasterise, preprocess,
/// and the on-line path (trajectory, features, a template).
pub fn strokes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(recording) = Recording::from_json(text) else { return };
    let again = Recording::from_json(&recording.to_json()).expect("a loaded recording reads back");
    assert_eq!(again, recording, "to_json / from_json round trip");
    signature_pipeline(&recording);
}

/// What the kiosk does with an accepted recording: raster image to the model's input, and
/// the trajectory to the dynamic verifier.
fn signature_pipeline(recording: &Recording) {
    if let Ok(image) = rasterise(recording, &RasterConfig::default()) {
        let config = PreprocessConfig::default();
        if let Ok(p) = preprocess_gray(&image, &config) {
            check_preprocessed(&p, &config);
        }
    }
    if let Ok(trajectory) = Trajectory::try_from(recording) {
        check_trajectory(&trajectory);
    }
}

/// A trajectory through the dynamic verifier: features, a template of two copies of it, its
/// score against itself, and the template's byte round trip.
fn check_trajectory(trajectory: &Trajectory) {
    assert!(!trajectory.is_empty(), "an empty trajectory was accepted");
    let n = trajectory.len();
    assert!(trajectory.x().len() == n && trajectory.y().len() == n, "column lengths");
    let settings = DynamicSettings::default();
    let references = [trajectory.clone(), trajectory.clone()];
    let Ok(template) = DynamicTemplate::enrol(&references, &settings) else { return };
    let score = template.verify(trajectory).expect("a trajectory that enrolled verifies");
    assert!((0.0..=1.0).contains(&score.score), "score {score:?}");
    let bytes = template.to_bytes();
    let back = DynamicTemplate::from_bytes(&bytes).expect("a written template reads back");
    assert_eq!(back.to_bytes(), bytes, "template byte round trip");
}

/// An SVC2004 Task 2 text file.
pub fn svc2004(data: &[u8]) {
    if let Ok(t) = parse_svc2004(data) {
        check_trajectory(&t);
    }
}

/// An MCYT binary FPG file.
pub fn mcyt(data: &[u8]) {
    if let Ok(t) = parse_mcyt_fpg(data) {
        check_trajectory(&t);
    }
}

/// A stored dynamic template (what a gallery entry will hold): read, write back, score a
/// synthetic probe.
pub fn dynamic_template(data: &[u8]) {
    let Ok(template) = DynamicTemplate::from_bytes(data) else { return };
    // Byte for byte: what reads is what was written (a stored -128, which `to_bytes` never
    // writes, is refused: regressions/dynamic_template).
    let written = template.to_bytes();
    assert_eq!(written, data, "from_bytes / to_bytes round trip");
    let back = DynamicTemplate::from_bytes(&written).expect("a written template reads back");
    assert_eq!(back.to_bytes(), written, "to_bytes / from_bytes round trip");
    if let Ok(score) = template.verify(probe_trajectory()) {
        assert!((0.0..=1.0).contains(&score.score), "score {score:?}");
    }
}

/// A fixed synthetic signature with pressure, as a probe.
fn probe_trajectory() -> &'static Trajectory {
    static PROBE: std::sync::OnceLock<Trajectory> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        let recording = autograph_shared::strokes::synth::signature(7, 1, 400, 160).expect("synthetic signature");
        Trajectory::try_from(&recording).expect("synthetic trajectory")
    })
}

// ---------------------------------------------------------------------------------------------
// Bundle: manifest, ONNX through tract, cohort
// ---------------------------------------------------------------------------------------------

/// `manifest.json` alone: parse and check, identity, and a save / load round trip.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("manifest.json");
    let Ok(m) = Manifest::from_json(text, path) else { return };
    let _ = m.model_identity();
    let saved = serde_json::to_string_pretty(&m).expect("a manifest serialises");
    let back = Manifest::from_json(&saved, path).expect("a saved manifest loads");
    assert_eq!(back, m, "save / load round trip");
}

/// Splits `[u16 LE length][manifest][ONNX]` (the `bundle` target's input); a short or
/// overlong length takes what is there.
pub fn split_bundle_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return (data, &[]) };
    rest.split_at((u16::from_le_bytes(*len) as usize).min(rest.len()))
}

/// The `bundle` target's input for a manifest and a model.
pub fn join_bundle_input(manifest: &[u8], onnx: &[u8]) -> Vec<u8> {
    let len = u16::try_from(manifest.len()).expect("a seed manifest under 64 KiB");
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(manifest);
    out.extend_from_slice(onnx);
    out
}

/// A manifest and ONNX bytes opened as a bundle directory, the model loaded into tract and one
/// image embedded. The fuzzer cannot forge sha256, so the manifest's model and cohort hashes
/// are set to those of the bytes written (a hand-edited manifest can carry any hash), and a
/// fixed valid cohort is written (its parser has its own target).
pub fn bundle(data: &[u8]) {
    let (manifest, onnx) = split_bundle_input(data);
    let cohort = fixed_cohort().to_bytes();
    BUNDLE_DIR.with(|dir| {
        let dir = dir.path();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let (text, files) = patch_manifest(manifest, onnx, &cohort);
        std::fs::write(dir.join("manifest.json"), text).expect("write manifest");
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("write bundle file");
        }
        let Ok(bundle) = Bundle::open(dir) else { return };
        let Ok(mut engine) = Engine::open(bundle, EngineOptions::default()) else { return };
        let config = engine.manifest().preprocess.clone();
        let (h, w) = (config.height as usize, config.width as usize);
        let image = Preprocessed {
            height: config.height,
            width: config.width,
            pixels: (0..h * w).map(|i| if i % 7 == 0 { 1.0 } else { 0.0 }).collect(),
        };
        if let Ok(embedding) = engine.embed_one(&image) {
            assert_eq!(embedding.len(), engine.manifest().embedding_dim as usize, "embedding length");
            let _ = Template::from_embedding(&embedding);
        }
    });
}

thread_local! {
    /// One bundle directory per thread, rewritten for every input.
    static BUNDLE_DIR: tempfile::TempDir = tempfile::tempdir().expect("temp dir");
}

/// The manifest with its hashes made to match, and the files to write beside it (only under
/// plain file names: a manifest naming `../x` or `/dev/zero` is left to the loader to refuse).
fn patch_manifest<'a>(manifest: &[u8], onnx: &'a [u8], cohort: &'a [u8]) -> (Vec<u8>, Vec<(String, &'a [u8])>) {
    let mut files = Vec::new();
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return (manifest.to_vec(), files);
    };
    let mut point = |entry: Option<&mut serde_json::Value>, bytes: &'a [u8]| {
        let Some(entry) = entry.and_then(serde_json::Value::as_object_mut) else { return };
        entry.insert("sha256".into(), autograph_shared::sha256_hex(bytes).into());
        if let Some(name) = entry.get("path").and_then(serde_json::Value::as_str).filter(|n| plain_file_name(n)) {
            files.push((name.to_string(), bytes));
        }
    };
    point(value.get_mut("f32_model"), onnx);
    point(value.get_mut("int8_model"), onnx);
    point(value.get_mut("adaptive").and_then(|a| a.get_mut("cohort")), cohort);
    (serde_json::to_vec(&value).unwrap_or_else(|_| manifest.to_vec()), files)
}

fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "manifest.json"
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

/// A small valid cohort (the bundle's `cohort.bin`, and the t-norm side of gallery scoring).
pub fn fixed_cohort() -> &'static Cohort {
    static COHORT: std::sync::OnceLock<Cohort> = std::sync::OnceLock::new();
    COHORT.get_or_init(|| {
        let templates = (0..4).map(probe_template).collect();
        Cohort::new(templates).expect("a valid cohort")
    })
}

/// A deterministic template with a varied pattern.
fn probe_template(k: u8) -> Template {
    let mut v = [0i8; EMBEDDING_DIM];
    for (i, x) in v.iter_mut().enumerate() {
        *x = ((i as i32 * (7 + k as i32 * 3)) % 61 - 30) as i8;
    }
    Template::from_i8(v)
}

/// `cohort.bin`: as given, then with a correct count and checksum so the fuzzer reaches the
/// templates; what reads must write back identically and score.
pub fn cohort(data: &[u8]) {
    cohort_bytes(data);
    if let Some(fixed) = with_cohort_checksum(data) {
        cohort_bytes(&fixed);
    }
}

fn cohort_bytes(data: &[u8]) {
    let Ok(cohort) = Cohort::from_bytes(data) else { return };
    assert_eq!(cohort.to_bytes(), data, "from_bytes / to_bytes round trip");
    let stats = cohort.probe_stats(&probe_template(1));
    assert!(stats.mean.is_finite() && stats.std.is_finite(), "{stats:?}");
}

/// Cohort header: magic (8), version, dim, count (u32 each).
const COHORT_HEADER: usize = 20;

/// `data` without its last 32 bytes, its count set to what the length holds, re-checksummed.
pub fn with_cohort_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let content = data.len().checked_sub(32).filter(|&n| n >= COHORT_HEADER)?;
    let count = (content - COHORT_HEADER) / EMBEDDING_DIM;
    let mut out = data[..COHORT_HEADER + count * EMBEDDING_DIM].to_vec();
    out[16..20].copy_from_slice(&u32::try_from(count).ok()?.to_le_bytes());
    out.extend_from_slice(&sha256(&out));
    Some(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let hex = autograph_shared::sha256_hex(bytes);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
        *o = digit(pair[0]) << 4 | digit(pair[1]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Gallery
// ---------------------------------------------------------------------------------------------

/// The gallery file. On disk it is an envelope encrypted under the device key
/// (`autograph_device::crypt`): envelopes go through its header checks and decryption. Plain
/// gallery bytes go through the reader as given, then with a correct length and checksum so the
/// fuzzer reaches the writer entries, and through a seal / open round trip. What reads must
/// write back and score under every rule.
pub fn gallery(data: &[u8]) {
    let key = gallery_key();
    if crypt::looks_encrypted(data) {
        let _ = crypt::key_id_of(data);
        if let Ok(plain) = crypt::open(&key, data) {
            gallery_bytes(&plain);
        }
        return;
    }
    gallery_bytes(data);
    if let Some(fixed) = with_gallery_checksum(data) {
        gallery_bytes(&fixed);
        let sealed = crypt::seal(&key, &fixed).expect("seal");
        assert_eq!(crypt::open(&key, &sealed).expect("open what was sealed"), fixed, "envelope round trip");
    }
}

/// The fuzz targets' device key.
pub fn gallery_key() -> crypt::GalleryKey {
    crypt::GalleryKey::from_bytes([0x42; 32])
}

fn gallery_bytes(data: &[u8]) {
    let Ok((g, header)) = KioskGallery::from_bytes(data, None) else { return };
    let written = g.to_bytes(&header.model_sha256);
    let (again, _) = KioskGallery::from_bytes(&written, Some(&header.model_sha256)).expect("a written gallery reads");
    assert_eq!(again.to_bytes(&header.model_sha256), written, "to_bytes / from_bytes round trip");
    let probe = probe_template(0);
    let _ = g.top_k::<5>(&probe);
    for writer in g.writers() {
        for rule in [DecisionRule::Nearest, DecisionRule::Normalised, DecisionRule::Classifier] {
            let _ = writer.score_with(rule, &probe, Some(fixed_cohort()));
            let _ = writer.score_with(rule, &probe, None);
        }
    }
}

/// Gallery header length, and where its total length field sits.
const GALLERY_HEADER: usize = 68;
const GALLERY_TOTAL_LEN_AT: usize = 12;

/// `data` without its last 32 bytes, its length field set, re-checksummed.
pub fn with_gallery_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let content = data.len().checked_sub(32).filter(|&n| n >= GALLERY_HEADER)?;
    let mut out = data[..content].to_vec();
    let total = (content + 32) as u64;
    out[GALLERY_TOTAL_LEN_AT..GALLERY_TOTAL_LEN_AT + 8].copy_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&sha256(&out));
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// evdev
// ---------------------------------------------------------------------------------------------

/// The `evdev` target's input: what the kernel tells the kiosk about its pen (axis ranges,
/// whether it has BTN_TOUCH), the screen, then `struct input_event`s.
#[derive(Debug, Clone, PartialEq)]
pub struct EvdevInput {
    pub touch_key: bool,
    pub x: AxisRange,
    pub y: AxisRange,
    pub pressure: Option<AxisRange>,
    pub screen: Size,
    pub events: Vec<RawEvent>,
}

/// One `struct input_event`: seconds, microseconds (below 10^6, as the kernel writes them),
/// type, code, value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    pub sec: u32,
    pub usec: u32,
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

/// flags (1), screen width and height (u16 each), x, y, pressure ranges (2 x i32 each).
const EVDEV_HEADER: usize = 1 + 4 + 24;
const EVENT_BYTES: usize = 16;
/// Screen sizes the kiosk supports: from its minimum (320x200) to 1920x1080.
const SCREEN_MIN: (u32, u32) = (320, 200);
const SCREEN_SPAN: (u32, u32) = (1601, 881);

impl RawEvent {
    pub fn new(t_ms: u32, kind: u16, code: u16, value: i32) -> Self {
        Self { sec: 1_700_000_000 + t_ms / 1000, usec: t_ms % 1000 * 1000, kind, code, value }
    }

    fn to_event(self) -> InputEvent {
        InputEvent::from(libc::input_event {
            // Non-negative seconds on every target (time_t is 32-bit on armv7).
            time: libc::timeval {
                tv_sec: (self.sec & 0x7fff_ffff) as libc::time_t,
                tv_usec: (self.usec % 1_000_000) as libc::suseconds_t,
            },
            type_: self.kind,
            code: self.code,
            value: self.value,
        })
    }
}

impl EvdevInput {
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (header, body) = data.split_at_checked(EVDEV_HEADER)?;
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let i32_at = |at: usize| i32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let range = |at: usize| AxisRange::new(i32_at(at), i32_at(at + 4));
        let flags = header[0];
        let events = body
            .chunks_exact(EVENT_BYTES)
            .map(|e| RawEvent {
                sec: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                usec: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                kind: u16::from_le_bytes([e[8], e[9]]),
                code: u16::from_le_bytes([e[10], e[11]]),
                value: i32::from_le_bytes([e[12], e[13], e[14], e[15]]),
            })
            .collect();
        Some(Self {
            touch_key: flags & 1 != 0,
            x: range(5),
            y: range(13),
            pressure: (flags & 2 != 0).then(|| range(21)),
            screen: Size::new(
                SCREEN_MIN.0 + u32::from(u16_at(1)) % SCREEN_SPAN.0,
                SCREEN_MIN.1 + u32::from(u16_at(3)) % SCREEN_SPAN.1,
            ),
            events,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.touch_key) | u8::from(self.pressure.is_some()) << 1];
        out.extend_from_slice(&((self.screen.width - SCREEN_MIN.0) as u16).to_le_bytes());
        out.extend_from_slice(&((self.screen.height - SCREEN_MIN.1) as u16).to_le_bytes());
        for r in [self.x, self.y, self.pressure.unwrap_or(AxisRange::new(0, 0))] {
            out.extend_from_slice(&r.min.to_le_bytes());
            out.extend_from_slice(&r.max.to_le_bytes());
        }
        for e in &self.events {
            out.extend_from_slice(&e.sec.to_le_bytes());
            out.extend_from_slice(&e.usec.to_le_bytes());
            out.extend_from_slice(&e.kind.to_le_bytes());
            out.extend_from_slice(&e.code.to_le_bytes());
            out.extend_from_slice(&e.value.to_le_bytes());
        }
        out
    }
}

/// Pen events through the kiosk: the tracker's strokes stay on the screen, and the signing
/// session turns them into recordings that rasterise and preprocess.
pub fn evdev(data: &[u8]) {
    evdev_accepts(data);
}

/// [`evdev`], saying whether the session accepted a signature (the seeds must reach it).
pub fn evdev_accepts(data: &[u8]) -> bool {
    let Some(input) = EvdevInput::parse(data) else { return false };
    let events: Vec<InputEvent> = input.events.iter().map(|e| e.to_event()).collect();
    let axes = PenAxes { x: input.x, y: input.y, pressure: input.pressure, touch_key: input.touch_key };
    let screen = input.screen;
    let (max_x, max_y) = ((screen.width - 1) as f32, (screen.height - 1) as f32);
    for p in strokes_from_events(&events, axes, screen).iter().flatten() {
        assert!((0.0..=max_x).contains(&p.x) && (0.0..=max_y).contains(&p.y), "{p:?} off a {screen:?} screen");
        assert!(p.p.is_none_or(|p| (0.0..=1.0).contains(&p)), "pressure {p:?}");
    }
    let Ok(layout) = Layout::for_size(screen) else { return false };
    let mut session = Session::new(layout, Mode::Verify { user: "fuzz".into() });
    let mut accepted = false;
    for update in updates_from_events(&events, axes, screen) {
        if let Step::Accept(recording) = session.handle(&update) {
            recording.validate().expect("an accepted recording is valid");
            signature_pipeline(&recording);
            session.retry("next");
            accepted = true;
        }
    }
    accepted
}
