//! Pen and touch input from evdev: raw events to pen updates in screen pixels.
//!
//! [`PenTracker`] is a pure state machine fed one [`InputEvent`] at a time (so tests build
//! event sequences with `InputEvent::new`): ABS_X / ABS_Y are scaled from the device's axis
//! ranges to the screen, ABS_PRESSURE to `0..=1` where the device reports it, BTN_TOUCH (or,
//! for pens that only report proximity, BTN_TOOL_PEN) is contact, and nothing is decided until
//! SYN_REPORT closes a frame, because a frame's X, Y and touch belong together. After
//! SYN_DROPPED the rest of the damaged frame is skipped. [`PenDevice`] opens the device (given,
//! or the first one with ABS_X and ABS_Y) and feeds the tracker.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use autograph_shared::strokes::{Point, Stroke};
use embedded_graphics::prelude::Size;
use evdev::{AbsoluteAxisCode, Device, EventType, InputEvent, KeyCode, SynchronizationCode};

/// The raw range of one absolute axis, from the device's `input_absinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisRange {
    pub min: i32,
    pub max: i32,
}

impl AxisRange {
    pub fn new(min: i32, max: i32) -> Self {
        Self { min, max }
    }

    /// `value` as a fraction of the range, clamped to `0..=1`; 0 for an empty range.
    fn fraction(&self, value: i32) -> f32 {
        let span = self.max as f64 - self.min as f64;
        if span <= 0.0 {
            return 0.0;
        }
        ((value as f64 - self.min as f64) / span).clamp(0.0, 1.0) as f32
    }
}

/// What the tracker needs to know about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PenAxes {
    pub x: AxisRange,
    pub y: AxisRange,
    /// `None`: the device reports no pressure (most touch screens).
    pub pressure: Option<AxisRange>,
    /// The device reports BTN_TOUCH. Pens without it count as touching while BTN_TOOL_PEN is
    /// down (in proximity), which is the best such a pen can tell us.
    pub touch_key: bool,
}

/// One change of the pen, in screen pixels and milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PenUpdate {
    Down(Point),
    Move(Point),
    Up(Point),
}

impl PenUpdate {
    pub fn point(&self) -> Point {
        match *self {
            PenUpdate::Down(p) | PenUpdate::Move(p) | PenUpdate::Up(p) => p,
        }
    }
}

/// Turns evdev events into [`PenUpdate`]s for a screen of `screen` pixels.
#[derive(Debug, Clone)]
pub struct PenTracker {
    axes: PenAxes,
    screen: Size,
    raw_x: i32,
    raw_y: i32,
    raw_pressure: Option<i32>,
    touch: bool,
    tool_pen: bool,
    /// In contact as of the last SYN_REPORT.
    down: bool,
    last: Option<Point>,
    /// Skipping events up to the next SYN_REPORT after a SYN_DROPPED.
    dropping: bool,
}

impl PenTracker {
    pub fn new(axes: PenAxes, screen: Size) -> Self {
        Self {
            axes,
            screen,
            raw_x: axes.x.min,
            raw_y: axes.y.min,
            raw_pressure: None,
            touch: false,
            tool_pen: false,
            down: false,
            last: None,
            dropping: false,
        }
    }

    /// Starts from the device's current axis values. The kernel reports a value only when it
    /// changes, so a pen that touches down where it last was sends no ABS_X or ABS_Y at all.
    pub fn set_raw_position(&mut self, x: i32, y: i32, pressure: Option<i32>) {
        (self.raw_x, self.raw_y, self.raw_pressure) = (x, y, pressure);
    }

    /// Feeds one event that happened at `t_ms`; returns the pen's change when the event closes
    /// a frame (SYN_REPORT) in which contact, position or pressure changed.
    pub fn feed(&mut self, event: &InputEvent, t_ms: u32) -> Option<PenUpdate> {
        let (kind, code, value) = (event.event_type(), event.code(), event.value());
        if kind == EventType::SYNCHRONIZATION {
            if code == SynchronizationCode::SYN_DROPPED.0 {
                self.dropping = true;
                return None;
            }
            if code == SynchronizationCode::SYN_REPORT.0 {
                if std::mem::take(&mut self.dropping) {
                    return None;
                }
                return self.frame(t_ms);
            }
            return None;
        }
        if self.dropping {
            return None;
        }
        if kind == EventType::ABSOLUTE {
            match AbsoluteAxisCode(code) {
                AbsoluteAxisCode::ABS_X => self.raw_x = value,
                AbsoluteAxisCode::ABS_Y => self.raw_y = value,
                AbsoluteAxisCode::ABS_PRESSURE => self.raw_pressure = Some(value),
                _ => {}
            }
        } else if kind == EventType::KEY {
            match KeyCode(code) {
                KeyCode::BTN_TOUCH => self.touch = value != 0,
                KeyCode::BTN_TOOL_PEN => self.tool_pen = value != 0,
                _ => {}
            }
        }
        None
    }

    fn frame(&mut self, t: u32) -> Option<PenUpdate> {
        let contact = if self.axes.touch_key { self.touch } else { self.tool_pen };
        let point = self.point(t);
        let update = match (self.down, contact) {
            (false, true) => Some(PenUpdate::Down(point)),
            (true, true) => {
                let moved = self.last.is_none_or(|l| (l.x, l.y, l.p) != (point.x, point.y, point.p));
                moved.then_some(PenUpdate::Move(point))
            }
            // Lift-off: the last position, the pen reports none once it leaves.
            (true, false) => Some(PenUpdate::Up(Point { t, ..self.last.unwrap_or(point) })),
            (false, false) => None,
        };
        self.down = contact;
        if let Some(u) = update {
            self.last = Some(u.point());
        }
        update
    }

    fn point(&self, t: u32) -> Point {
        let x = self.axes.x.fraction(self.raw_x) * self.screen.width.saturating_sub(1) as f32;
        let y = self.axes.y.fraction(self.raw_y) * self.screen.height.saturating_sub(1) as f32;
        let p = match (self.axes.pressure, self.raw_pressure) {
            (Some(range), Some(raw)) => Some(range.fraction(raw)),
            _ => None,
        };
        Point::new(x, y, t, p)
    }
}

/// Milliseconds from `origin` to the event's kernel timestamp (0 if earlier).
pub fn event_ms(event: &InputEvent, origin: SystemTime) -> u32 {
    event.timestamp().duration_since(origin).map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
}

/// The pen updates of a whole event sequence; times count from the first event.
pub fn updates_from_events(events: &[InputEvent], axes: PenAxes, screen: Size) -> Vec<PenUpdate> {
    let Some(origin) = events.first().map(InputEvent::timestamp) else { return Vec::new() };
    let mut tracker = PenTracker::new(axes, screen);
    events.iter().filter_map(|e| tracker.feed(e, event_ms(e, origin))).collect()
}

/// The strokes (pen down .. pen up, screen pixels) of an event sequence. A stroke still down
/// at the end is kept.
pub fn strokes_from_events(events: &[InputEvent], axes: PenAxes, screen: Size) -> Vec<Stroke> {
    let mut strokes: Vec<Stroke> = Vec::new();
    let mut open = false;
    for update in updates_from_events(events, axes, screen) {
        match update {
            PenUpdate::Down(p) => {
                strokes.push(vec![p]);
                open = true;
            }
            PenUpdate::Move(p) | PenUpdate::Up(p) if open => {
                if let Some(s) = strokes.last_mut() {
                    // An Up without movement repeats the last point; keep one.
                    if s.last().is_none_or(|l| (l.x, l.y) != (p.x, p.y) || matches!(update, PenUpdate::Move(_))) {
                        s.push(p);
                    }
                }
                open = !matches!(update, PenUpdate::Up(_));
            }
            _ => {}
        }
    }
    strokes
}

/// Why the pen or touch device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open {}: {source} (is the user in the `input` group?)", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "no pen or touch device found in /dev/input (none readable reports ABS_X and ABS_Y; \
         is the user in the `input` group?); name one with --input"
    )]
    NoDevice,
    #[error("{} is not a pen or touch screen: it reports no ABS_X and ABS_Y", path.display())]
    NotAPen { path: PathBuf },
    #[error("{}: cannot read the axis ranges: {source}", path.display())]
    AxisInfo { path: PathBuf, source: std::io::Error },
    #[error("cannot read events from {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

/// An opened pen or touch device and its tracker.
pub struct PenDevice {
    device: Device,
    path: PathBuf,
    tracker: PenTracker,
    origin: Option<SystemTime>,
}

impl std::fmt::Debug for PenDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PenDevice").field("path", &self.path).field("tracker", &self.tracker).finish_non_exhaustive()
    }
}

impl PenDevice {
    /// Opens `path`, or the first device under /dev/input with ABS_X and ABS_Y.
    pub fn open(path: Option<&Path>, screen: Size) -> Result<Self, InputError> {
        let (path, device) = match path {
            Some(p) => {
                let device = Device::open(p).map_err(|source| InputError::Open { path: p.to_path_buf(), source })?;
                if !is_pen(&device) {
                    return Err(InputError::NotAPen { path: p.to_path_buf() });
                }
                (p.to_path_buf(), device)
            }
            None => discover()?,
        };
        let (axes, (x, y, pressure)) = axes_of(&device, &path)?;
        let mut tracker = PenTracker::new(axes, screen);
        tracker.set_raw_position(x, y, pressure);
        Ok(Self { device, path, tracker, origin: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until the device reports, then returns the pen updates of what it reported
    /// (often none: a frame without change).
    pub fn next_updates(&mut self) -> Result<Vec<PenUpdate>, InputError> {
        let events =
            self.device.fetch_events().map_err(|source| InputError::Read { path: self.path.clone(), source })?;
        let mut out = Vec::new();
        for event in events {
            let origin = *self.origin.get_or_insert_with(|| event.timestamp());
            out.extend(self.tracker.feed(&event, event_ms(&event, origin)));
        }
        Ok(out)
    }
}

fn is_pen(device: &Device) -> bool {
    device
        .supported_absolute_axes()
        .is_some_and(|axes| axes.contains(AbsoluteAxisCode::ABS_X) && axes.contains(AbsoluteAxisCode::ABS_Y))
}

/// The first readable device with ABS_X and ABS_Y, in /dev/input/eventN order; devices that
/// also report BTN_TOUCH or BTN_TOOL_PEN come first, so a joystick or an accelerometer (which
/// have X and Y axes too) is taken only when nothing else is there.
fn discover() -> Result<(PathBuf, Device), InputError> {
    let mut found: Vec<(PathBuf, Device)> = evdev::enumerate().filter(|(_, d)| is_pen(d)).collect();
    found.sort_by_key(|(path, device)| (!has_contact_key(device), event_number(path)));
    found.into_iter().next().ok_or(InputError::NoDevice)
}

fn has_contact_key(device: &Device) -> bool {
    device.supported_keys().is_some_and(|k| k.contains(KeyCode::BTN_TOUCH) || k.contains(KeyCode::BTN_TOOL_PEN))
}

/// `N` of `/dev/input/eventN`, so event2 sorts before event10.
fn event_number(path: &Path) -> u32 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("event"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The axis ranges, and the current raw X, Y and pressure.
type AxesNow = (PenAxes, (i32, i32, Option<i32>));

fn axes_of(device: &Device, path: &Path) -> Result<AxesNow, InputError> {
    let err = |source| InputError::AxisInfo { path: path.to_path_buf(), source };
    let (mut x, mut y, mut pressure) = (None, None, None);
    for (code, info) in device.get_absinfo().map_err(err)? {
        let range = AxisRange::new(info.minimum(), info.maximum());
        match code {
            AbsoluteAxisCode::ABS_X => x = Some((range, info.value())),
            AbsoluteAxisCode::ABS_Y => y = Some((range, info.value())),
            // A pressure axis with no range is as good as none.
            AbsoluteAxisCode::ABS_PRESSURE if range.max > range.min => pressure = Some((range, info.value())),
            _ => {}
        }
    }
    let (Some((x, x_now)), Some((y, y_now))) = (x, y) else {
        return Err(InputError::NotAPen { path: path.to_path_buf() });
    };
    let touch_key = device.supported_keys().is_some_and(|keys| keys.contains(KeyCode::BTN_TOUCH));
    let axes = PenAxes { x, y, pressure: pressure.map(|(r, _)| r), touch_key };
    Ok((axes, (x_now, y_now, pressure.map(|(_, v)| v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_fraction_clamps() {
        let r = AxisRange::new(-100, 100);
        assert_eq!((r.fraction(-100), r.fraction(0), r.fraction(100), r.fraction(500)), (0.0, 0.5, 1.0, 1.0));
        assert_eq!(AxisRange::new(5, 5).fraction(5), 0.0);
        assert_eq!(event_number(Path::new("/dev/input/event12")), 12);
        assert_eq!(event_number(Path::new("/dev/input/mouse0")), u32::MAX);
    }

    #[test]
    fn devices_that_cannot_be_opened_are_named() {
        for path in ["/nonexistent/event0", "/dev/null"] {
            match PenDevice::open(Some(Path::new(path)), Size::new(800, 480)) {
                Err(e @ InputError::Open { .. }) => assert!(e.to_string().contains(path), "{e}"),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn touch_down_without_coordinates_uses_the_devices_position() {
        let axes = PenAxes { x: AxisRange::new(0, 100), y: AxisRange::new(0, 100), pressure: None, touch_key: true };
        let mut tracker = PenTracker::new(axes, Size::new(101, 51));
        tracker.set_raw_position(50, 100, None);
        assert_eq!(tracker.feed(&InputEvent::new(EventType::KEY.0, KeyCode::BTN_TOUCH.0, 1), 7), None);
        let sync = InputEvent::new(EventType::SYNCHRONIZATION.0, SynchronizationCode::SYN_REPORT.0, 0);
        assert_eq!(tracker.feed(&sync, 8), Some(PenUpdate::Down(Point::new(50.0, 50.0, 8, None))));
    }
}
