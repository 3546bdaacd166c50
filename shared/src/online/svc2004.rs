//! SVC2004 Task 2 text files: the point count on the first line, then one point a line,
//! `x y timestamp_ms button azimuth altitude pressure`.
//!
//! What the files show (all 1,600 of Task 2, checked when this reader was written): pen-up
//! movement is not recorded; the first point after a lift has `button` 0 and a time gap of
//! 20 ms or more, the rest of a stroke `button` 1 (a few files use 2..5 for the pen's side
//! switch; those with zero pressure are pen-up). The clock is coarse: consecutive samples
//! 10 ms apart sometimes share a timestamp or step back by 9 ms, so strokes are resampled as
//! evenly spaced between their first and last times ([`Timing::EvenWithinStroke`]).
//! Pressure is the tablet's 10-bit level, `0..=1023`.

use std::path::Path;

use super::formats::{MAX_COORDINATE, MAX_FILE_BYTES, MAX_POINTS, ParseError, ReadError, read_with};
use super::trajectory::{PenSample, Timing, Trajectory};

/// Highest pressure level of the SVC2004 tablet (10 bits).
pub const MAX_PRESSURE: f64 = 1023.0;
/// A time step longer than this inside what the `button` column calls one stroke is a lift
/// anyway (genuine steps are 10 ms, the largest jitter seen 36 ms).
pub const MAX_STEP_MS: f64 = 50.0;

const FIELDS: [&str; 7] = ["x", "y", "timestamp", "button", "azimuth", "altitude", "pressure"];

/// Reads one SVC2004 signature file.
pub fn read_svc2004(path: &Path) -> Result<Trajectory, ReadError> {
    read_with(path, parse_svc2004)
}

/// Parses the bytes of one SVC2004 signature file.
pub fn parse_svc2004(bytes: &[u8]) -> Result<Trajectory, ParseError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ParseError::TooLarge { bytes: bytes.len() as u64 });
    }
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty());
    let (count_line, count_text) = lines.next().ok_or(ParseError::Empty)?;
    let count_text = text(count_line, count_text)?;
    let declared: u64 = count_text.parse().map_err(|_| ParseError::BadCount { text: count_text.to_string() })?;
    if declared > MAX_POINTS as u64 {
        return Err(ParseError::TooManyPoints { count: declared });
    }

    let mut strokes: Vec<Vec<PenSample>> = Vec::new();
    let mut pen_was_down = false;
    let mut previous_t = f64::NAN;
    let mut found: u64 = 0;
    for (line, raw) in lines {
        found += 1;
        if found > declared {
            // Count the rest for the message; the file size bounds this loop.
            continue;
        }
        let row = parse_row(line, text(line, raw)?)?;
        let [x, y, t, button, _, _, pressure] = row;
        let down = pressure > 0.0;
        if down {
            let lifted = !pen_was_down || button == 0.0 || (t - previous_t).abs() > MAX_STEP_MS;
            if lifted || strokes.is_empty() {
                strokes.push(Vec::new());
            }
            if let Some(stroke) = strokes.last_mut() {
                stroke.push(PenSample {
                    x: x as f32,
                    y: y as f32,
                    t_ms: t,
                    pressure: (pressure / MAX_PRESSURE) as f32,
                });
            }
        }
        pen_was_down = down;
        previous_t = t;
    }
    if found != declared {
        return Err(ParseError::CountMismatch { declared, found });
    }
    Ok(Trajectory::from_strokes(&strokes, Timing::EvenWithinStroke, true)?)
}

fn text(line: usize, bytes: &[u8]) -> Result<&str, ParseError> {
    if !bytes.is_ascii() {
        return Err(ParseError::NotText { line });
    }
    std::str::from_utf8(bytes).map_err(|_| ParseError::NotText { line })
}

fn parse_row(line: usize, text: &str) -> Result<[f64; 7], ParseError> {
    let mut row = [0.0; 7];
    let mut n = 0;
    for (i, field) in text.split_ascii_whitespace().enumerate() {
        n += 1;
        if i >= FIELDS.len() {
            continue;
        }
        let value: f64 = field.parse().map_err(|_| ParseError::BadNumber {
            line,
            field: i + 1,
            name: FIELDS[i],
            text: field.chars().take(32).collect(),
        })?;
        if !value.is_finite() {
            return Err(ParseError::NotFinite { row: line, name: FIELDS[i] });
        }
        row[i] = value;
    }
    if n != FIELDS.len() {
        return Err(ParseError::BadLine { line, found: n, expected: FIELDS.len() });
    }
    for i in [0, 1] {
        if row[i].abs() > MAX_COORDINATE {
            return Err(ParseError::OutOfRange { row: line, name: FIELDS[i], value: row[i], range: "|v| <= 1e7" });
        }
    }
    if !(0.0..=MAX_PRESSURE).contains(&row[6]) {
        return Err(ParseError::OutOfRange { row: line, name: "pressure", value: row[6], range: "0..=1023" });
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "7\n\
        100 200 5000 0 1550 710 100\n\
        110 210 5010 1 1480 770 200\n\
        120 220 5010 1 1350 830 300\n\
        130 230 5030 1 1350 800 400\n\
        500 500 5200 0 1320 580 1023\n\
        510 490 5210 1 1310 560 512\n\
        999 999 5220 2 1310 560 0\n";

    #[test]
    fn parses_strokes_and_pressure() {
        let t = parse_svc2004(SMALL.as_bytes()).expect("parse");
        // Stroke 1: four points spread over 30 ms; stroke 2 starts at button 0; the zero
        // pressure point is pen-up and dropped.
        assert_eq!(t.stroke_starts(), &[0, 4]);
        assert_eq!(t.x(), &[100.0, 110.0, 120.0, 130.0, 500.0, 510.0]);
        let p = t.pressure().expect("pressure");
        assert!((p[4] - 1.0).abs() < 1e-6 && (p[0] - 100.0 / 1023.0).abs() < 1e-6);
    }

    #[test]
    fn crlf_and_blank_lines_are_fine() {
        let t = parse_svc2004(SMALL.replace('\n', "\r\n\r\n").as_bytes()).expect("parse");
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn long_step_splits_a_stroke() {
        let text = "3\n0 0 0 1 0 0 10\n1 1 10 1 0 0 10\n2 2 500 1 0 0 10\n";
        assert_eq!(parse_svc2004(text.as_bytes()).expect("parse").stroke_starts(), &[0, 2]);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |text: &str| parse_svc2004(text.as_bytes()).expect_err(text);
        assert!(matches!(err(""), ParseError::Empty));
        assert!(matches!(err("abc\n"), ParseError::BadCount { .. }));
        assert!(matches!(err("999999999\n"), ParseError::TooManyPoints { .. }));
        assert!(matches!(err("2\n1 2 3 1 0 0 5\n"), ParseError::CountMismatch { declared: 2, found: 1 }));
        assert!(matches!(
            err("1\n1 2 3 1 0 0 5\n1 2 3 1 0 0 5\n"),
            ParseError::CountMismatch { declared: 1, found: 2 }
        ));
        assert!(matches!(err("1\n1 2 3 1 0 0\n"), ParseError::BadLine { line: 2, found: 6, expected: 7 }));
        assert!(matches!(err("1\n1 2 x 1 0 0 5\n"), ParseError::BadNumber { line: 2, field: 3, .. }));
        assert!(matches!(err("1\n1 NaN 3 1 0 0 5\n"), ParseError::NotFinite { row: 2, name: "y" }));
        assert!(matches!(err("1\n1 2 3 1 0 0 5000\n"), ParseError::OutOfRange { name: "pressure", .. }));
        assert!(matches!(err("1\n1e30 2 3 1 0 0 5\n"), ParseError::OutOfRange { name: "x", .. }));
        assert!(matches!(err("1\n1 2 3 1 0 0 0\n"), ParseError::Trajectory(_)));
        assert!(matches!(err("1\n1 2 3 1 0 \u{e9} 0\n"), ParseError::NotText { line: 2 }));
        let msg = err("1\n1 2 x 1 0 0 5\n").to_string();
        assert!(msg.contains("line 2") && msg.contains("timestamp"), "{msg}");
    }
}
