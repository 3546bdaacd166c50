//! Pen strokes: the kiosk's captured signatures and their JSON recording format.
//!
//! A captured signature is a list of strokes (pen down .. pen up), each a list of points in the
//! signing box's own pixel coordinates (origin top left, `0..=width`, `0..=height`), with a time
//! in milliseconds since the recording started and, where the pen reports it, a pressure in
//! `0..=1`. [`raster::rasterise`] turns a recording into a grey image (dark ink on white paper),
//! which then goes through [`crate::preprocess::preprocess_gray`] like any scan, so captured and
//! scanned signatures meet in one pipeline.
//!
//! The file format is versioned and checked on load; a recording that could not have come from
//! a pen (points outside the box, time running backwards, pressure above 1, NaN) is refused
//! with an error that says which stroke and point is wrong.
//!
//! ```json
//! { "format": "autograph-strokes", "version": 1, "width": 780, "height": 330,
//!   "strokes": [[{"x": 12.5, "y": 40, "t": 0, "p": 0.4}, ...], ...] }
//! ```

pub mod raster;
pub mod synth;

use serde::{Deserialize, Serialize};

/// The `format` field of every recording.
pub const FORMAT: &str = "autograph-strokes";
/// The recording format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Largest accepted box width or height (a screen is never larger; bounds the raster size).
pub const MAX_SIDE: u32 = 8192;
/// Largest accepted number of points in one recording (a minute of a 1 kHz pen is 60 000).
pub const MAX_POINTS: usize = 200_000;
/// Largest accepted recording text, in bytes, checked before parsing so that a huge file cannot
/// make the parser allocate without bound. [`MAX_POINTS`] points as [`Recording::to_json`] writes
/// them (about 60 bytes each at most) fit with room to spare.
pub const MAX_JSON_LEN: usize = 16 * 1024 * 1024;

/// One pen sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Box pixels from the left edge.
    pub x: f32,
    /// Box pixels from the top edge.
    pub y: f32,
    /// Milliseconds since the recording started.
    pub t: u32,
    /// Pen pressure in `0..=1`; absent for touch screens and pens that do not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f32>,
}

impl Point {
    pub fn new(x: f32, y: f32, t: u32, p: Option<f32>) -> Self {
        Self { x, y, t, p }
    }
}

/// One stroke: the points between pen down and pen up.
pub type Stroke = Vec<Point>;

/// A recorded signature: what `recording.json` files hold. Build one with [`Recording::new`]
/// (which validates) or read one with [`Recording::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for recordings this build writes.
    pub version: u32,
    /// Width of the signing box the points are in, in pixels.
    pub width: u32,
    /// Height of the signing box, in pixels.
    pub height: u32,
    pub strokes: Vec<Stroke>,
}

/// Why a recording was refused. Stroke and point indices count from 0.
#[derive(Debug, thiserror::Error)]
pub enum StrokeError {
    #[error("not a valid stroke recording: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a stroke recording: the format field is {found:?}, expected {FORMAT:?}")]
    WrongFormat { found: String },
    #[error("stroke recording version {found} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("the signing box is {width}x{height}; each side must be between 1 and {MAX_SIDE}")]
    BadSize { width: u32, height: u32 },
    #[error("the recording has no strokes")]
    NoStrokes,
    #[error("stroke {stroke} has no points")]
    EmptyStroke { stroke: usize },
    #[error("the recording has {count} points, more than the limit of {MAX_POINTS}")]
    TooManyPoints { count: usize },
    #[error("the recording is {len} bytes, more than the limit of {MAX_JSON_LEN} bytes")]
    TooLarge { len: usize },
    #[error(
        "stroke {stroke} point {point}: coordinates ({x}, {y}) are not finite or lie outside the {width}x{height} box"
    )]
    OutOfBox { stroke: usize, point: usize, x: f32, y: f32, width: u32, height: u32 },
    #[error("stroke {stroke} point {point}: pressure {p} is not within 0..=1")]
    BadPressure { stroke: usize, point: usize, p: f32 },
    #[error("stroke {stroke} point {point}: time {t} ms is earlier than the point before ({previous} ms)")]
    TimeGoesBack { stroke: usize, point: usize, t: u32, previous: u32 },
    #[error("cannot rasterise at {width}x{height} pixels: over the limit of {MAX_SIDE} per side")]
    RasterTooLarge { width: u32, height: u32 },
    #[error(
        "the strokes are {length:.0} pixels long at raster size, over the limit of {}: not a signature",
        raster::MAX_INK_LENGTH
    )]
    TooMuchInk { length: f64 },
}

/// Only the fields that say which format this is, read before the rest so that a newer version
/// is reported as such and not as a confusing field error.
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

impl Recording {
    /// A checked recording of `strokes` in a `width` x `height` box.
    pub fn new(width: u32, height: u32, strokes: Vec<Stroke>) -> Result<Self, StrokeError> {
        let recording = Self { format: FORMAT.to_string(), version: VERSION, width, height, strokes };
        recording.validate()?;
        Ok(recording)
    }

    /// Parses and validates a recording. Text longer than [`MAX_JSON_LEN`] is refused unparsed.
    pub fn from_json(text: &str) -> Result<Self, StrokeError> {
        if text.len() > MAX_JSON_LEN {
            return Err(StrokeError::TooLarge { len: text.len() });
        }
        let header: Header = serde_json::from_str(text)?;
        if header.format != FORMAT {
            return Err(StrokeError::WrongFormat { found: header.format });
        }
        if header.version != VERSION {
            return Err(StrokeError::UnsupportedVersion { found: header.version });
        }
        let recording: Self = serde_json::from_str(text)?;
        recording.validate()?;
        Ok(recording)
    }

    /// The recording as pretty JSON, one point per line (diffable when committed).
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\n  \"format\": {},\n  \"version\": {},\n  \"width\": {},\n  \"height\": {},\n  \"strokes\": [",
            json_string(&self.format),
            self.version,
            self.width,
            self.height
        );
        for (s, stroke) in self.strokes.iter().enumerate() {
            out.push_str(if s == 0 { "\n    [" } else { ",\n    [" });
            for (i, point) in stroke.iter().enumerate() {
                out.push_str(if i == 0 { "\n      " } else { ",\n      " });
                // A Point of plain numbers always serialises.
                out.push_str(&serde_json::to_string(point).unwrap_or_default());
            }
            out.push_str("\n    ]");
        }
        out.push_str("\n  ]\n}\n");
        out
    }

    /// Checks everything [`Recording::from_json`] checks.
    pub fn validate(&self) -> Result<(), StrokeError> {
        if self.format != FORMAT {
            return Err(StrokeError::WrongFormat { found: self.format.clone() });
        }
        if self.version != VERSION {
            return Err(StrokeError::UnsupportedVersion { found: self.version });
        }
        let (width, height) = (self.width, self.height);
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(StrokeError::BadSize { width, height });
        }
        if self.strokes.is_empty() {
            return Err(StrokeError::NoStrokes);
        }
        let count = self.point_count();
        if count > MAX_POINTS {
            return Err(StrokeError::TooManyPoints { count });
        }
        let mut previous = 0u32;
        for (stroke, points) in self.strokes.iter().enumerate() {
            if points.is_empty() {
                return Err(StrokeError::EmptyStroke { stroke });
            }
            for (point, &Point { x, y, t, p }) in points.iter().enumerate() {
                // Negated comparisons so that NaN fails too.
                if !(x >= 0.0 && x <= width as f32 && y >= 0.0 && y <= height as f32) {
                    return Err(StrokeError::OutOfBox { stroke, point, x, y, width, height });
                }
                if let Some(p) = p
                    && !(0.0..=1.0).contains(&p)
                {
                    return Err(StrokeError::BadPressure { stroke, point, p });
                }
                if t < previous {
                    return Err(StrokeError::TimeGoesBack { stroke, point, t, previous });
                }
                previous = t;
            }
        }
        Ok(())
    }

    /// Points in all strokes.
    pub fn point_count(&self) -> usize {
        self.strokes.iter().map(Vec::len).sum()
    }

    /// Time from the first to the last point, in milliseconds.
    pub fn duration_ms(&self) -> u32 {
        let first = self.strokes.first().and_then(|s| s.first()).map_or(0, |p| p.t);
        let last = self.strokes.last().and_then(|s| s.last()).map_or(0, |p| p.t);
        last.saturating_sub(first)
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(y: f32) -> Stroke {
        (0..5).map(|i| Point::new(10.0 + 10.0 * i as f32, y, 10 * i, Some(0.5))).collect()
    }

    fn sample() -> Recording {
        let mut second = line(40.0);
        for p in &mut second {
            p.t += 100;
            p.p = None;
        }
        Recording::new(100, 60, vec![line(20.0), second]).expect("valid")
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let text = r.to_json();
        let back = Recording::from_json(&text).expect("parse");
        assert_eq!(back, r);
        // The compact serde form reads back too, and absent pressure stays absent.
        let compact = serde_json::to_string(&r).expect("json");
        assert_eq!(Recording::from_json(&compact).expect("parse"), r);
        assert!(!compact.contains("null"), "{compact}");
        assert_eq!(r.point_count(), 10);
        assert_eq!(r.duration_ms(), 140);
    }

    #[test]
    fn size_limits_are_enforced_and_leave_room_for_real_recordings() {
        // The largest recording allowed, with long numbers everywhere, fits the text limit.
        let stroke: Stroke =
            (0..MAX_POINTS as u32).map(|i| Point::new(8191.123, 8191.877, 4_000_000 + i, Some(0.12345679))).collect();
        let largest = Recording::new(MAX_SIDE, MAX_SIDE, vec![stroke]).expect("valid");
        let text = largest.to_json();
        assert!(text.len() <= MAX_JSON_LEN, "{} bytes", text.len());
        assert_eq!(Recording::from_json(&text).expect("parse").point_count(), MAX_POINTS);

        // One point more is refused by count, naming the limit.
        let mut over = largest.clone();
        over.strokes[0].push(Point::new(1.0, 1.0, u32::MAX, None));
        let err = Recording::from_json(&over.to_json()).expect_err("too many points");
        assert!(matches!(err, StrokeError::TooManyPoints { count } if count == MAX_POINTS + 1), "{err}");
        assert!(err.to_string().contains(&MAX_POINTS.to_string()), "{err}");

        // Text over the size limit is refused before parsing (white space is valid JSON).
        let padded = format!("{}{}", sample().to_json(), " ".repeat(MAX_JSON_LEN));
        let err = Recording::from_json(&padded).expect_err("too large");
        assert!(matches!(err, StrokeError::TooLarge { len } if len == padded.len()), "{err}");
        assert!(err.to_string().contains(&MAX_JSON_LEN.to_string()), "{err}");
    }

    #[test]
    fn bad_recordings_are_rejected() {
        let good = sample().to_json();
        let edit = |from: &str, to: &str| Recording::from_json(&good.replacen(from, to, 1));
        assert!(matches!(edit("autograph-strokes", "svg"), Err(StrokeError::WrongFormat { .. })));
        assert!(matches!(edit("\"version\": 1", "\"version\": 2"), Err(StrokeError::UnsupportedVersion { found: 2 })));
        assert!(matches!(edit("\"width\": 100", "\"width\": 0"), Err(StrokeError::BadSize { .. })));
        assert!(matches!(edit("\"x\":10.0", "\"x\":-1.0"), Err(StrokeError::OutOfBox { stroke: 0, point: 0, .. })));
        assert!(matches!(edit("\"x\":50.0", "\"x\":100.5"), Err(StrokeError::OutOfBox { stroke: 0, point: 4, .. })));
        assert!(matches!(edit("\"p\":0.5", "\"p\":1.5"), Err(StrokeError::BadPressure { .. })));
        assert!(matches!(edit("\"t\":110", "\"t\":5"), Err(StrokeError::TimeGoesBack { stroke: 1, point: 1, .. })));
        assert!(matches!(edit("\"p\":0.5", "\"pressure\":0.5"), Err(StrokeError::Json(_))));
        assert!(matches!(Recording::from_json("{"), Err(StrokeError::Json(_))));
        assert!(matches!(Recording::from_json("[]"), Err(StrokeError::Json(_))));
        assert!(matches!(Recording::new(10, 10, vec![]), Err(StrokeError::NoStrokes)));
        assert!(matches!(Recording::new(10, 10, vec![vec![]]), Err(StrokeError::EmptyStroke { stroke: 0 })));
        let nan = vec![vec![Point::new(f32::NAN, 1.0, 0, None)]];
        assert!(matches!(Recording::new(10, 10, nan), Err(StrokeError::OutOfBox { .. })));
        let many = vec![vec![Point::new(1.0, 1.0, 0, None); MAX_POINTS + 1]];
        assert!(matches!(Recording::new(10, 10, many), Err(StrokeError::TooManyPoints { .. })));
    }
}
