//! Signature capture: rendered screens checked pixel by pixel (in the manner of
//! embedded-graphics' MockDisplay, but on the real framebuffer layout), evdev event sequences to
//! strokes, replay -> raster -> preprocess determinism, the committed sample recordings, and
//! the `capture` and `kiosk` commands end to end (the kiosk headless, on a bundle built here).

mod common;

use std::path::{Path, PathBuf};

use autograph_device::capture::display::{Display, Headless};
use autograph_device::capture::framebuffer::{FramebufferTarget, Geometry, PixelFormat, read_pixel};
use autograph_device::capture::input::{AxisRange, PenAxes, PenUpdate, strokes_from_events, updates_from_events};
use autograph_device::capture::kiosk::render;
use autograph_device::capture::playback::{Playback, accept_tap, strokes_as_updates};
use autograph_device::capture::screen::{self, Layout, Verdict, palette};
use autograph_device::capture::session::{Mode, Session, Step};
use autograph_device::capture::{load_recording, screen::Outcome};
use autograph_shared::preprocess::{PreprocessConfig, preprocess_gray};
use autograph_shared::strokes::raster::{RasterConfig, rasterise};
use autograph_shared::strokes::{Recording, synth};
use common::{assert_keys, autograph};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::{Point, Size};
use evdev::{AbsoluteAxisCode, EventType, InputEvent, KeyCode, SynchronizationCode};

// ---------------------------------------------------------------------------------------------
// Sample recordings
// ---------------------------------------------------------------------------------------------

/// The committed recordings: (file, synthetic writer, sample). Ada has four signatures (three
/// to enrol, one to verify), Ben two.
const SAMPLES: [(&str, u64, u64); 6] = [
    ("ada-1.json", 1, 1),
    ("ada-2.json", 1, 2),
    ("ada-3.json", 1, 3),
    ("ada-4.json", 1, 4),
    ("ben-1.json", 2, 1),
    ("ben-2.json", 2, 2),
];
/// The signing box of the 800x480 layout, where the samples were "signed".
const SAMPLE_BOX: (u32, u32) = (776, 332);

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/strokes")
}

fn sample(name: &str) -> PathBuf {
    samples_dir().join(name)
}

/// The files in samples/strokes/ are exactly what the generator makes. To regenerate them:
/// `AUTOGRAPH_WRITE_SAMPLES=1 cargo test -p autograph-device --test capture committed_samples`.
#[test]
fn committed_samples_are_what_the_generator_makes() {
    let layout = Layout::for_size(Size::new(800, 480)).expect("layout");
    assert_eq!((layout.signing_box.size.width, layout.signing_box.size.height), SAMPLE_BOX);
    let write = std::env::var_os("AUTOGRAPH_WRITE_SAMPLES").is_some();
    for (file, writer, n) in SAMPLES {
        let json = synth::signature(writer, n, SAMPLE_BOX.0, SAMPLE_BOX.1).expect("valid").to_json();
        let path = sample(file);
        if write {
            std::fs::create_dir_all(samples_dir()).expect("samples dir");
            std::fs::write(&path, &json).expect("write sample");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(committed, json, "{file} differs from the generator's output");
        assert!(Recording::from_json(&committed).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Rendered screens
// ---------------------------------------------------------------------------------------------

/// A session of `mode` on a `size` screen with `recording` signed into it (not accepted).
fn signed(size: Size, mode: Mode, recording: Option<&Recording>) -> Session {
    let layout = Layout::for_size(size).expect("layout");
    let mut session = Session::new(layout, mode);
    for update in recording.map(|r| strokes_as_updates(r, &layout, 0)).unwrap_or_default() {
        session.handle(&update);
    }
    session
}

fn frame(session: &Session, format: PixelFormat) -> Headless {
    let mut display = Headless::new(session.layout().size, format, None).expect("display");
    render(&mut display, session, None).expect("render");
    display
}

fn pixel(display: &Headless, p: Point) -> Rgb888 {
    read_pixel(display.buffer(), &display.geometry(), p.x as u32, p.y as u32).expect("on screen")
}

fn count(display: &Headless, color: Rgb888) -> usize {
    let g = display.geometry();
    (0..g.height)
        .flat_map(|y| (0..g.width).map(move |x| (x, y)))
        .filter(|&(x, y)| read_pixel(display.buffer(), &g, x, y) == Some(color))
        .count()
}

/// A point inside a button, clear of its label and rounded corners.
fn button_body(r: embedded_graphics::primitives::Rectangle, margin: u32) -> Point {
    Point::new(r.top_left.x + 2 * margin as i32, r.center().y)
}

#[test]
fn signing_screen_shows_ink_where_the_strokes_were_and_active_buttons() {
    let recording = load_recording(&sample("ada-1.json")).expect("sample");
    for size in [Size::new(800, 480), Size::new(480, 272)] {
        let session = signed(size, Mode::Verify { user: "ada".into() }, Some(&recording));
        let l = *session.layout();
        let d = frame(&session, PixelFormat::Xrgb8888);
        assert_eq!(session.screen().name(), "signing");
        // Every replayed point is inked, at the screen position the replay put it.
        for update in strokes_as_updates(&recording, &l, 0) {
            let p = update.point();
            let at = Point::new(p.x.round() as i32, p.y.round() as i32);
            assert_eq!(pixel(&d, at), palette::INK, "{size:?}: no ink at {at:?}");
        }
        // Ink stays inside the box.
        let g = d.geometry();
        for y in 0..g.height {
            for x in 0..g.width {
                if read_pixel(d.buffer(), &g, x, y) == Some(palette::INK) {
                    assert!(
                        l.signing_box.contains(Point::new(x as i32, y as i32)),
                        "{size:?}: ink outside the box at ({x}, {y})"
                    );
                }
            }
        }
        assert_eq!(pixel(&d, button_body(l.accept, l.margin)), palette::ACCEPT, "{size:?}");
        assert_eq!(pixel(&d, button_body(l.clear, l.margin)), palette::CLEAR, "{size:?}");
        assert_eq!(pixel(&d, Point::new(l.size.width as i32 / 2, 1)), palette::HEADER, "{size:?}");
        assert_eq!(pixel(&d, Point::new(l.signing_box.center().x, l.baseline_y)), palette::BASELINE, "{size:?}");
        // Paper in the box's top-right corner, background between the buttons.
        let corner = l.signing_box.top_left + Point::new(l.signing_box.size.width as i32 - 6, 6);
        assert_eq!(pixel(&d, corner), palette::PAPER, "{size:?}");
        assert_eq!(
            pixel(&d, Point::new(l.size.width as i32 / 2, l.accept.center().y)),
            palette::BACKGROUND,
            "{size:?}"
        );
    }
}

#[test]
fn prompt_has_no_ink_and_disabled_buttons_and_enrolment_shows_progress() {
    let prompt = signed(Size::new(800, 480), Mode::Verify { user: "ada".into() }, None);
    let l = *prompt.layout();
    let d = frame(&prompt, PixelFormat::Xrgb8888);
    assert_eq!(prompt.screen().name(), "prompt");
    assert_eq!(count(&d, palette::INK), 0);
    assert_eq!(pixel(&d, button_body(l.accept, l.margin)), palette::DISABLED);
    assert_eq!(pixel(&d, button_body(l.clear, l.margin)), palette::DISABLED);
    assert!(count(&d, palette::TEXT) > 500, "the big prompt text");

    let recording = load_recording(&sample("ada-2.json")).expect("sample");
    let mut enrol = Session::new(l, Mode::Enroll { user: "ada".into(), samples: 3 });
    enrol.next_sample();
    for update in strokes_as_updates(&recording, &l, 0) {
        enrol.handle(&update);
    }
    assert_eq!(enrol.screen().name(), "enroll");
    let d = frame(&enrol, PixelFormat::Xrgb8888);
    // Three segments: the first done, the second current, the third to do.
    let band = l.progress;
    let third = band.size.width as i32 / 3;
    let y = band.center().y;
    assert_eq!(pixel(&d, Point::new(band.top_left.x + third / 2, y)), palette::PROGRESS_DONE);
    assert_eq!(pixel(&d, Point::new(band.top_left.x + third + third / 2, y)), palette::PROGRESS_CURRENT);
    assert_eq!(pixel(&d, Point::new(band.top_left.x + 2 * third + third / 2, y)), palette::PROGRESS_TODO);
    assert!(count(&d, palette::INK) > 500);
}

#[test]
fn result_screens_use_the_verdicts_colour() {
    for (verdict, color) in [
        (Verdict::Accepted, palette::ACCEPTED),
        (Verdict::Rejected, palette::REJECTED),
        (Verdict::PossibleReplay, palette::REPLAY),
        (Verdict::Enrolled, palette::ENROLLED),
        (Verdict::NotFound, palette::NEUTRAL),
    ] {
        let mut s = signed(Size::new(480, 272), Mode::Verify { user: "ada".into() }, None);
        s.finish(Outcome { verdict, user: Some("ada".into()), score: Some(0.61), threshold: Some(0.58), detail: None });
        let d = frame(&s, PixelFormat::Rgb565);
        let l = s.layout();
        let inside = l.panel.top_left + Point::new(2 * l.margin as i32 + 4, l.panel.size.height as i32 / 2);
        assert_eq!(pixel(&d, inside), PixelFormat::Rgb565.quantise(color), "{verdict:?}");
        assert_eq!(count(&d, PixelFormat::Rgb565.quantise(palette::INK)), 0);
        // The white verdict text is inside the panel.
        assert!(count(&d, palette::HEADER_TEXT) > 200, "{verdict:?}");
    }
}

#[test]
fn rgb565_and_xrgb8888_encode_the_same_screen() {
    let recording = load_recording(&sample("ben-1.json")).expect("sample");
    let session = signed(Size::new(480, 272), Mode::Identify, Some(&recording));
    let wide = frame(&session, PixelFormat::Xrgb8888);
    let narrow = frame(&session, PixelFormat::Rgb565);
    assert_eq!(wide.buffer().len(), 480 * 272 * 4);
    assert_eq!(narrow.buffer().len(), 480 * 272 * 2);
    let (gw, gn) = (wide.geometry(), narrow.geometry());
    for y in 0..272 {
        for x in 0..480 {
            let c = read_pixel(wide.buffer(), &gw, x, y).expect("pixel");
            assert_eq!(read_pixel(narrow.buffer(), &gn, x, y), Some(PixelFormat::Rgb565.quantise(c)), "({x}, {y})");
        }
    }
    // The raw words: the accept button's green in each format.
    let l = session.layout();
    let p = button_body(l.accept, l.margin);
    let at = |g: &Geometry| p.y as usize * g.stride + p.x as usize * g.format.bytes_per_pixel();
    let (a, b) = (at(&gw), at(&gn));
    let xrgb = u32::from_ne_bytes(wide.buffer()[a..a + 4].try_into().expect("4 bytes"));
    assert_eq!(xrgb, 0x002E_7D32);
    let rgb565 = u16::from_ne_bytes(narrow.buffer()[b..b + 2].try_into().expect("2 bytes"));
    assert_eq!(
        rgb565,
        (((0x2E * 31 + 127) / 255) << 11) | (((0x7D * 63 + 127) / 255) << 5) | ((0x32 * 31 + 127) / 255)
    );
}

#[test]
fn padded_stride_leaves_padding_alone_and_draws_the_same_pixels() {
    let recording = load_recording(&sample("ada-3.json")).expect("sample");
    let session = signed(Size::new(800, 480), Mode::Verify { user: "ada".into() }, Some(&recording));
    let packed = frame(&session, PixelFormat::Rgb565);
    // 800 RGB565 pixels are 1600 bytes; drivers pad lines to e.g. 1664 (a multiple of 64 + 64).
    let geometry = Geometry { width: 800, height: 480, stride: 1664, format: PixelFormat::Rgb565 };
    let mut memory = vec![0xA5u8; 1664 * 480];
    let mut target = FramebufferTarget::new(&mut memory, geometry).expect("layout");
    let Ok(()) = screen::draw(&mut target, session.layout(), &session.screen());
    for (y, row) in memory.chunks(1664).enumerate() {
        assert!(row[1600..].iter().all(|&b| b == 0xA5), "row {y}: padding written");
        assert_eq!(&row[..1600], &packed.buffer()[y * 1600..(y + 1) * 1600], "row {y}");
    }
}

// ---------------------------------------------------------------------------------------------
// evdev events to strokes
// ---------------------------------------------------------------------------------------------

fn abs(axis: AbsoluteAxisCode, value: i32) -> InputEvent {
    InputEvent::new(EventType::ABSOLUTE.0, axis.0, value)
}

fn key(code: KeyCode, down: bool) -> InputEvent {
    InputEvent::new(EventType::KEY.0, code.0, i32::from(down))
}

fn syn() -> InputEvent {
    InputEvent::new(EventType::SYNCHRONIZATION.0, SynchronizationCode::SYN_REPORT.0, 0)
}

fn dropped() -> InputEvent {
    InputEvent::new(EventType::SYNCHRONIZATION.0, SynchronizationCode::SYN_DROPPED.0, 0)
}

const TOUCH: PenAxes =
    PenAxes { x: AxisRange { min: 0, max: 4095 }, y: AxisRange { min: 0, max: 4095 }, pressure: None, touch_key: true };

#[test]
fn touch_screen_events_become_strokes_in_screen_pixels() {
    use AbsoluteAxisCode as A;
    let screen = Size::new(801, 481);
    let events = [
        // Hover-free touch screen: BTN_TOUCH with the first position, in one frame.
        key(KeyCode::BTN_TOUCH, true),
        abs(A::ABS_X, 0),
        abs(A::ABS_Y, 4095),
        syn(),
        abs(A::ABS_X, 2048),
        // Not applied until SYN_REPORT: still one point so far.
        syn(),
        abs(A::ABS_Y, 0),
        syn(),
        // A frame that changes nothing yields nothing.
        syn(),
        key(KeyCode::BTN_TOUCH, false),
        syn(),
        // Second stroke.
        key(KeyCode::BTN_TOUCH, true),
        abs(A::ABS_X, 4095),
        abs(A::ABS_Y, 4095),
        syn(),
        key(KeyCode::BTN_TOUCH, false),
        syn(),
    ];
    let updates = updates_from_events(&events, TOUCH, screen);
    let kinds: Vec<&str> = updates
        .iter()
        .map(|u| match u {
            PenUpdate::Down(_) => "down",
            PenUpdate::Move(_) => "move",
            PenUpdate::Up(_) => "up",
        })
        .collect();
    assert_eq!(kinds, ["down", "move", "move", "up", "down", "up"]);
    let strokes = strokes_from_events(&events, TOUCH, screen);
    assert_eq!(strokes.len(), 2);
    let xy: Vec<(f32, f32)> = strokes[0].iter().map(|p| (p.x.round(), p.y.round())).collect();
    assert_eq!(xy, [(0.0, 480.0), (400.0, 480.0), (400.0, 0.0)]);
    assert_eq!(strokes[1].len(), 1, "a tap is a one-point stroke");
    assert_eq!((strokes[1][0].x, strokes[1][0].y), (800.0, 480.0));
    assert!(strokes.iter().flatten().all(|p| p.p.is_none()), "touch screens report no pressure");
}

#[test]
fn pen_events_carry_pressure_and_survive_dropped_frames() {
    use AbsoluteAxisCode as A;
    let pen = PenAxes {
        x: AxisRange::new(-1000, 1000),
        y: AxisRange::new(0, 1000),
        pressure: Some(AxisRange::new(0, 2047)),
        touch_key: true,
    };
    let screen = Size::new(201, 101);
    let events = [
        // In proximity, hovering: no ink.
        key(KeyCode::BTN_TOOL_PEN, true),
        abs(A::ABS_X, 0),
        abs(A::ABS_Y, 500),
        syn(),
        // Touch down with pressure.
        key(KeyCode::BTN_TOUCH, true),
        abs(A::ABS_PRESSURE, 512),
        syn(),
        abs(A::ABS_X, 500),
        abs(A::ABS_PRESSURE, 2047),
        syn(),
        // The kernel dropped events: the rest of this frame is not trusted.
        abs(A::ABS_X, 900),
        dropped(),
        abs(A::ABS_X, -900),
        syn(),
        abs(A::ABS_X, 1000),
        abs(A::ABS_PRESSURE, 0),
        syn(),
        key(KeyCode::BTN_TOUCH, false),
        syn(),
        key(KeyCode::BTN_TOOL_PEN, false),
        syn(),
    ];
    let strokes = strokes_from_events(&events, pen, screen);
    assert_eq!(strokes.len(), 1);
    let got: Vec<(f32, f32, Option<f32>)> =
        strokes[0].iter().map(|p| (p.x, p.y, p.p.map(|p| (p * 100.0).round() / 100.0))).collect();
    assert_eq!(got, [(100.0, 50.0, Some(0.25)), (150.0, 50.0, Some(1.0)), (200.0, 50.0, Some(0.0))]);
    // A pen that reports proximity but no BTN_TOUCH draws while in proximity.
    let proximity_only = PenAxes { touch_key: false, ..pen };
    let events = [
        key(KeyCode::BTN_TOOL_PEN, true),
        abs(A::ABS_X, 0),
        syn(),
        abs(A::ABS_X, 1000),
        syn(),
        key(KeyCode::BTN_TOOL_PEN, false),
        syn(),
    ];
    let strokes = strokes_from_events(&events, proximity_only, screen);
    assert_eq!(strokes.len(), 1);
    assert_eq!(strokes[0].len(), 2);
}

#[test]
fn evdev_strokes_drive_the_session_like_a_pen() {
    use AbsoluteAxisCode as A;
    let layout = Layout::for_size(Size::new(800, 480)).expect("layout");
    let mut session = Session::new(layout, Mode::Verify { user: "ada".into() });
    // Raw values are screen pixels here (axes 0..799, 0..479).
    let axes = PenAxes { x: AxisRange::new(0, 799), y: AxisRange::new(0, 479), pressure: None, touch_key: true };
    let (bx, by) = (layout.signing_box.center().x, layout.signing_box.center().y);
    let (ax, ay) = (layout.accept.center().x, layout.accept.center().y);
    let mut events = vec![key(KeyCode::BTN_TOUCH, true), abs(A::ABS_X, bx - 100), abs(A::ABS_Y, by), syn()];
    for i in 1..=20 {
        events.extend([abs(A::ABS_X, bx - 100 + 10 * i), abs(A::ABS_Y, by + (i % 5) * 4), syn()]);
    }
    events.extend([key(KeyCode::BTN_TOUCH, false), syn()]);
    events.extend([
        key(KeyCode::BTN_TOUCH, true),
        abs(A::ABS_X, ax),
        abs(A::ABS_Y, ay),
        syn(),
        key(KeyCode::BTN_TOUCH, false),
        syn(),
    ]);
    let steps: Vec<Step> = updates_from_events(&events, axes, layout.size).iter().map(|u| session.handle(u)).collect();
    let Some(Step::Accept(recording)) = steps.last() else { panic!("accept expected, got {steps:?}") };
    assert_eq!(recording.strokes.len(), 1);
    assert_eq!(recording.strokes[0].len(), 21);
    assert!(recording.validate().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Replay -> raster -> preprocess
// ---------------------------------------------------------------------------------------------

/// Plays `recording` into a fresh session and accepts it: the recording the kiosk would embed.
fn accepted(recording: &Recording, size: Size) -> Recording {
    let layout = Layout::for_size(size).expect("layout");
    let mut session = Session::new(layout, Mode::Verify { user: "ada".into() });
    let mut playback = Playback::new(std::slice::from_ref(recording), &layout);
    let batch = playback.next_batch().expect("one batch");
    batch
        .iter()
        .map(|u| session.handle(u))
        .find_map(|s| if let Step::Accept(r) = s { Some(r) } else { None })
        .expect("accepted")
}

#[test]
fn replay_raster_preprocess_is_deterministic() {
    let config = PreprocessConfig::default();
    for (file, _, _) in SAMPLES {
        let recording = load_recording(&sample(file)).expect("sample");
        let (a, b) = (accepted(&recording, Size::new(800, 480)), accepted(&recording, Size::new(800, 480)));
        assert_eq!(a, b, "{file}");
        // On the layout it was made for, the replay is the recording itself (up to f32 rounding).
        for (pa, pb) in a.strokes.iter().flatten().zip(recording.strokes.iter().flatten()) {
            assert!((pa.x - pb.x).abs() < 1e-3 && (pa.y - pb.y).abs() < 1e-3 && pa.t == pb.t && pa.p == pb.p, "{file}");
        }
        let ra = rasterise(&a, &RasterConfig::default()).expect("raster");
        let rb = rasterise(&b, &RasterConfig::default()).expect("raster");
        assert_eq!(ra, rb, "{file}");
        let (ta, tb) =
            (preprocess_gray(&ra, &config).expect("preprocess"), preprocess_gray(&rb, &config).expect("preprocess"));
        assert_eq!(ta.pixels, tb.pixels, "{file}");
        assert!(ta.pixels.iter().any(|&v| v > 0.5), "{file}: no ink in the tensor");
    }
}

#[test]
fn the_same_signature_on_a_small_screen_preprocesses_alike() {
    // Captured on an 800x480 kiosk or replayed on a 480x272 one: after the ink crop and resize
    // the tensors are close (not identical: the box is smaller, so the pen is relatively wider).
    let recording = load_recording(&sample("ada-1.json")).expect("sample");
    let config = PreprocessConfig::default();
    let tensor = |size| {
        let r = accepted(&recording, size);
        preprocess_gray(&rasterise(&r, &RasterConfig::default()).expect("raster"), &config).expect("preprocess").pixels
    };
    let (big, small) = (tensor(Size::new(800, 480)), tensor(Size::new(480, 272)));
    let dot: f32 = big.iter().zip(&small).map(|(a, b)| a * b).sum();
    let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
    let cosine = dot / (norm(&big) * norm(&small));
    assert!(cosine > 0.8, "cosine {cosine}");
}

// ---------------------------------------------------------------------------------------------
// The commands
// ---------------------------------------------------------------------------------------------

#[test]
fn capture_writes_a_png_of_the_requested_size() {
    let dir = tempfile::tempdir().expect("tmp");
    for (size, screen, expected) in [
        ("800x480", "signing", (800, 480)),
        ("480x272", "enroll", (480, 272)),
        ("480x272", "prompt", (480, 272)),
        ("1024x600", "result", (1024, 600)),
    ] {
        let out = dir.path().join(format!("{screen}-{size}.png"));
        let ada = sample("ada-1.json");
        let run = autograph([
            "capture".as_ref(),
            "--replay".as_ref(),
            ada.as_os_str(),
            "--screenshot".as_ref(),
            out.as_os_str(),
            "--size".as_ref(),
            size.as_ref(),
            "--screen".as_ref(),
            screen.as_ref(),
            "--json".as_ref(),
        ]);
        assert_eq!(run.code, 0, "{run:?}");
        let j = run.json();
        assert_keys(
            &j,
            &["command", "screen", "width", "height", "pixel_format", "screenshot", "replay", "strokes", "points"],
        );
        assert_eq!(j["screen"], screen);
        let png = image::open(&out).expect("a PNG");
        assert_eq!((png.width(), png.height()), expected, "{screen} {size}");
        if screen == "signing" {
            assert_eq!(j["strokes"].as_u64(), Some(load_recording(&ada).expect("sample").strokes.len() as u64));
        }
    }
    // Refusals: a too-small screen, a damaged recording, a signing screen without strokes.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"format":"autograph-strokes","version":9,"width":1,"height":1,"strokes":[]}"#)
        .expect("write");
    let out = dir.path().join("x.png");
    for args in [
        vec!["--size", "200x100", "--screen", "prompt"],
        vec!["--replay", bad.to_str().expect("utf-8"), "--screen", "signing"],
        vec!["--screen", "signing"],
    ] {
        let mut all = vec!["capture", "--screenshot", out.to_str().expect("utf-8")];
        all.extend(args);
        let run = autograph(&all);
        assert_eq!(run.code, 2, "{all:?}: {run:?}");
    }
    let run =
        autograph(["capture", "--screenshot", out.to_str().expect("utf-8"), "--replay", bad.to_str().expect("utf-8")]);
    assert!(run.stderr.contains("version 9"), "{}", run.stderr);
}

/// `autograph kiosk --bundle B --gallery G --json --headless OUT <args>`.
fn kiosk(bundle: &Path, gallery: &Path, out: &Path, args: &[&str]) -> common::Run {
    let mut all: Vec<std::ffi::OsString> =
        vec!["kiosk".into(), "--bundle".into(), bundle.into(), "--gallery".into(), gallery.into()];
    all.extend(["--json".into(), "--headless".into(), out.into()]);
    all.extend(args.iter().map(Into::into));
    autograph(all)
}

fn names(run: &common::Run) -> Vec<String> {
    run.json()["screens"]
        .as_array()
        .expect("screens")
        .iter()
        .map(|p| Path::new(p.as_str().expect("path")).file_name().expect("name").to_string_lossy().into_owned())
        .collect()
}

#[test]
fn kiosk_headless_enrols_verifies_and_identifies() {
    let dir = tempfile::tempdir().expect("tmp");
    let bundle = dir.path().join("bundle");
    common::write_bundle(&bundle, 1);
    let gallery = dir.path().join("gallery.bin");
    let s = |f: &str| sample(f).to_string_lossy().into_owned();
    let (a1, a2, a3, a4, b1, b2) =
        (s("ada-1.json"), s("ada-2.json"), s("ada-3.json"), s("ada-4.json"), s("ben-1.json"), s("ben-2.json"));

    // Enrol ada with three signatures: one screen per step, then the result.
    let out = dir.path().join("enrol-ada");
    let run = kiosk(
        &bundle,
        &gallery,
        &out,
        &["--user", "ada", "--enroll", "--replay", &a1, "--replay", &a2, "--replay", &a3],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(
        &j,
        &[
            "command",
            "mode",
            "user",
            "decision",
            "accepted",
            "score",
            "similarity",
            "rule",
            "fallback",
            "modality",
            "dynamic_score",
            "fused_score",
            "threshold",
            "operating_point",
            "replay",
            "writer_model",
            "templates_total",
            "writers",
            "dynamic_references",
            "signatures",
            "retries",
            "strokes",
            "points",
            "screens",
            "recordings",
            "runtime",
            "precision",
        ],
    );
    assert_eq!(
        (j["mode"].as_str(), j["decision"].as_str(), j["templates_total"].as_u64()),
        (Some("enroll"), Some("enrolled"), Some(3))
    );
    // A pen gives trajectories: the kiosk enrols them too, by default.
    assert_eq!(j["dynamic_references"], 3, "{j}");
    assert_eq!(
        names(&run),
        [
            "01-enroll-1-prompt.png",
            "02-enroll-1-signing.png",
            "03-enroll-2-prompt.png",
            "04-enroll-2-signing.png",
            "05-enroll-3-prompt.png",
            "06-enroll-3-signing.png",
            "07-result.png"
        ]
    );
    for name in names(&run) {
        let png = image::open(out.join(&name)).expect("png");
        assert_eq!((png.width(), png.height()), (800, 480), "{name}");
    }
    let run = kiosk(
        &bundle,
        &gallery,
        &dir.path().join("enrol-ben"),
        &["--user", "ben", "--enroll", "--replay", &b1, "--size", "480x272"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["writers"], 2);

    // A fresh signature: a decision with a score against the calibrated threshold.
    let run = kiosk(&bundle, &gallery, &dir.path().join("verify"), &["--user", "ada", "--replay", &a4]);
    let decision = run.json()["decision"].as_str().map(str::to_owned);
    assert!(matches!(decision.as_deref(), Some("accepted" | "rejected")), "{run:?}");
    assert_eq!(run.code, if decision.as_deref() == Some("accepted") { 0 } else { 1 });
    assert!(run.json()["score"].as_f64().is_some());
    // A bundle without a cohort: the nearest rule, the score is the similarity.
    assert_eq!((run.json()["rule"].as_str(), run.json()["fallback"].is_null()), (Some("nearest"), true));
    assert_eq!(run.json()["score"], run.json()["similarity"]);
    // Nor fusion: the pen's score is shown, the image decides (tests/pen.rs fuses).
    assert_eq!(run.json()["modality"], "image");
    assert!(run.json()["dynamic_score"].as_f64().is_some_and(|d| d > 0.0 && d <= 1.0), "{run:?}");
    assert!(run.json()["fused_score"].is_null());
    assert_eq!(
        run.json()["threshold"].as_f64().map(|t| (t * 100.0).round()),
        Some(f64::from(common::SKILLED.eer * 100.0).round())
    );
    assert_eq!(names(&run), ["01-prompt.png", "02-signing.png", "03-result.png"]);

    // Replaying an enrolled recording is a copy, not a signature.
    let run = kiosk(&bundle, &gallery, &dir.path().join("replayed"), &["--user", "ada", "--replay", &a2]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["decision"], "possible_replay");
    assert_eq!(run.json()["replay"]["identical_template"], true);

    // Unknown writer, and identification without --user.
    let run = kiosk(&bundle, &gallery, &dir.path().join("zed"), &["--user", "zed", "--replay", &a4]);
    assert_eq!((run.code, run.json()["decision"].as_str()), (1, Some("not_enrolled")));
    let run = kiosk(&bundle, &gallery, &dir.path().join("who"), &["--replay", &b2]);
    assert_eq!(run.json()["mode"], "identify");
    assert!(matches!(run.json()["decision"].as_str(), Some("found" | "not_found")), "{run:?}");

    // The gallery is the one `autograph gallery list` reads.
    let run = autograph([
        "gallery".as_ref(),
        "list".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--gallery".as_ref(),
        gallery.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn kiosk_refuses_bad_setups() {
    let dir = tempfile::tempdir().expect("tmp");
    let bundle = dir.path().join("bundle");
    common::write_bundle(&bundle, 1);
    let gallery = dir.path().join("gallery.bin");
    let out = dir.path().join("out");
    let a1 = sample("ada-1.json").to_string_lossy().into_owned();
    // Three signatures asked for, one given.
    let run = kiosk(&bundle, &gallery, &out, &["--user", "ada", "--enroll", "--samples", "3", "--replay", &a1]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("takes 3 signature(s)"), "{}", run.stderr);
    // Verifying against a gallery that does not exist yet.
    let run = kiosk(&bundle, &gallery, &out, &["--user", "ada", "--replay", &a1]);
    assert_eq!(run.code, 2, "{run:?}");
    // --headless needs recordings to play.
    let run = autograph([
        "kiosk".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--gallery".as_ref(),
        gallery.as_os_str(),
        "--headless".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    // No framebuffer here: the device is named, and nothing was enrolled.
    let run = autograph([
        "kiosk".as_ref(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--gallery".as_ref(),
        gallery.as_os_str(),
        "--user".as_ref(),
        "ada".as_ref(),
        "--enroll".as_ref(),
        "--replay".as_ref(),
        a1.as_ref(),
        "--fb".as_ref(),
        "/nonexistent/fb0".as_ref(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("/nonexistent/fb0") && run.stderr.contains("video"), "{}", run.stderr);
    assert!(!gallery.exists());
    // A recording that is not one.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"format\": \"svg\"}").expect("write");
    let run = kiosk(&bundle, &gallery, &out, &["--user", "ada", "--enroll", "--replay", bad.to_str().expect("utf-8")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("bad.json"), "{}", run.stderr);
}

/// The README's screenshots are what `scripts/screens.sh` renders with this build (compared
/// pixel by pixel, so a PNG encoder change does not matter). After a deliberate change of the
/// screens: `scripts/screens.sh target/debug/autograph`.
#[test]
fn readme_screenshots_are_rendered_by_the_named_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tmp");
    let runner = std::env::var("AUTOGRAPH_TEST_RUNNER").unwrap_or_default();
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/screens.sh"))
        .args(runner.split_whitespace())
        .arg(env!("CARGO_BIN_EXE_autograph"))
        .env("SCREENS_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/screens.sh");
    assert!(status.success());
    let mut rendered: Vec<PathBuf> =
        std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").path()).collect();
    rendered.sort();
    assert!(rendered.len() >= 8, "{rendered:?}");
    for path in rendered {
        let name = path.file_name().expect("name");
        let committed = root.join("docs/screens").join(name);
        let a = image::open(&path).expect("rendered").to_rgb8();
        let b = image::open(&committed).unwrap_or_else(|e| panic!("{}: {e}", committed.display())).to_rgb8();
        assert!(a == b, "{} is not what scripts/screens.sh renders now", committed.display());
    }
}

#[test]
fn accept_tap_lands_on_accept() {
    let layout = Layout::for_size(Size::new(480, 272)).expect("layout");
    for update in accept_tap(&layout, 10) {
        let p = update.point();
        assert_eq!(layout.button_at(Point::new(p.x as i32, p.y as i32)), Some(screen::Button::Accept));
    }
    // Headless displays write numbered files only for named frames.
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = Headless::new(layout.size, PixelFormat::Rgb565, Some(dir.path().join("shots"))).expect("display");
    d.present(None).expect("present");
    d.present(Some("prompt")).expect("present");
    assert_eq!(d.written(), [dir.path().join("shots/01-prompt.png")]);
}
