//! MCYT on-line signatures: binary FPG files, a header then little-endian float32 rows of
//! `x y pressure azimuth elevation` at 100 Hz (Wacom Intuos, 1024 pressure levels).
//!
//! The corpus `Readme.txt` names the channels and the rate but not the header layout. The
//! layout below was read off the files; all 5,000 files of MCYT-100 agree on it, and every
//! field that says how to read the samples is checked, so a file of another layout is refused
//! rather than misread (offsets in bytes, integers little-endian):
//!
//! | offset | type | meaning (value in MCYT-100) |
//! |---|---|---|
//! | 0 | 4 bytes | magic `FPG ` |
//! | 4 | u16 | header length (60) |
//! | 16 | u16 | bits per value (32: float32) |
//! | 18 | u32 | data bytes (file length - header length) |
//! | 22, 26 | u32, u32 | channels (5, 5) |
//! | 30 | u32 | samples |
//! | 36 | u32 | sample rate in Hz (100) |
//!
//! Pen-up hover is recorded with zero pressure; those samples are dropped and mark lifts.

use std::path::Path;

use super::formats::{MAX_COORDINATE, MAX_FILE_BYTES, MAX_POINTS, ParseError, ReadError, read_with};
use super::trajectory::{PenSample, SAMPLE_PERIOD_MS, Timing, Trajectory};

/// Highest pressure level of the MCYT tablet (10 bits).
pub const MAX_PRESSURE: f32 = 1023.0;
/// Channels per sample, in file order.
pub const CHANNELS: [&str; 5] = ["x", "y", "pressure", "azimuth", "elevation"];
/// The shortest header holding every field this reader checks.
pub const MIN_HEADER_BYTES: usize = 40;
const RATE_HZ: u64 = 100;

/// Reads one MCYT `.fpg` signature file.
pub fn read_mcyt_fpg(path: &Path) -> Result<Trajectory, ReadError> {
    read_with(path, parse_mcyt_fpg)
}

/// Parses the bytes of one MCYT `.fpg` signature file.
pub fn parse_mcyt_fpg(bytes: &[u8]) -> Result<Trajectory, ParseError> {
    let len = bytes.len() as u64;
    if len > MAX_FILE_BYTES {
        return Err(ParseError::TooLarge { bytes: len });
    }
    if len == 0 {
        return Err(ParseError::Empty);
    }
    if bytes.len() < 4 || &bytes[..4] != b"FPG " {
        return Err(ParseError::BadMagic);
    }
    let header_len = usize::from(u16_at(bytes, 4)?);
    if header_len < MIN_HEADER_BYTES {
        return Err(ParseError::BadHeader {
            field: "header length",
            found: header_len as u64,
            expected: format!(">= {MIN_HEADER_BYTES}"),
        });
    }
    if bytes.len() < header_len {
        return Err(ParseError::Truncated { needed: header_len as u64, found: len });
    }
    let expect = |field: &'static str, found: u64, expected: u64| {
        if found == expected {
            Ok(())
        } else {
            Err(ParseError::BadHeader { field, found, expected: expected.to_string() })
        }
    };
    expect("bits per value", u64::from(u16_at(bytes, 16)?), 32)?;
    expect("channels", u64::from(u32_at(bytes, 22)?), CHANNELS.len() as u64)?;
    expect("channels (second copy)", u64::from(u32_at(bytes, 26)?), CHANNELS.len() as u64)?;
    expect("sample rate", u64::from(u32_at(bytes, 36)?), RATE_HZ)?;
    let samples = u64::from(u32_at(bytes, 30)?);
    if samples > MAX_POINTS as u64 {
        return Err(ParseError::TooManyPoints { count: samples });
    }
    let row_bytes = 4 * CHANNELS.len() as u64;
    let data_bytes = u64::from(u32_at(bytes, 18)?);
    expect("data bytes", data_bytes, samples * row_bytes)?;
    let present = len - header_len as u64;
    if present < data_bytes {
        return Err(ParseError::Truncated { needed: header_len as u64 + data_bytes, found: len });
    }
    if present > data_bytes {
        return Err(ParseError::CountMismatch { declared: samples, found: present / row_bytes });
    }

    let mut strokes: Vec<Vec<PenSample>> = Vec::new();
    let mut pen_was_down = false;
    for (i, row) in bytes[header_len..].chunks_exact(row_bytes as usize).enumerate() {
        let mut v = [0f32; 5];
        for (c, value) in v.iter_mut().enumerate() {
            let b = &row[4 * c..4 * c + 4];
            *value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !value.is_finite() {
                return Err(ParseError::NotFinite { row: i + 1, name: CHANNELS[c] });
            }
        }
        let [x, y, pressure, _, _] = v;
        for (name, value) in [("x", x), ("y", y)] {
            if f64::from(value).abs() > MAX_COORDINATE {
                return Err(ParseError::OutOfRange { row: i + 1, name, value: value.into(), range: "|v| <= 1e7" });
            }
        }
        if !(0.0..=MAX_PRESSURE).contains(&pressure) {
            return Err(ParseError::OutOfRange {
                row: i + 1,
                name: "pressure",
                value: pressure.into(),
                range: "0..=1023",
            });
        }
        let down = pressure > 0.0;
        if down {
            if !pen_was_down {
                strokes.push(Vec::new());
            }
            if let Some(stroke) = strokes.last_mut() {
                let t_ms = i as f64 * SAMPLE_PERIOD_MS;
                stroke.push(PenSample { x, y, t_ms, pressure: pressure / MAX_PRESSURE });
            }
        }
        pen_was_down = down;
    }
    Ok(Trajectory::from_strokes(&strokes, Timing::Timestamps, true)?)
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, ParseError> {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_le_bytes([a, b])),
        _ => Err(ParseError::Truncated { needed: (at + 2) as u64, found: bytes.len() as u64 }),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, ParseError> {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d])),
        _ => Err(ParseError::Truncated { needed: (at + 4) as u64, found: bytes.len() as u64 }),
    }
}

/// An FPG file as MCYT-100 writes them, for tests of this reader and of code that lists data.
#[cfg(test)]
pub(crate) fn fpg_bytes(rows: &[[f32; 5]]) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    b[..4].copy_from_slice(b"FPG ");
    b[4..6].copy_from_slice(&60u16.to_le_bytes());
    b[6..8].copy_from_slice(&4u16.to_le_bytes());
    b[10..12].copy_from_slice(&1u16.to_le_bytes());
    b[12..16].copy_from_slice(&10_000_000u32.to_le_bytes());
    b[16..18].copy_from_slice(&32u16.to_le_bytes());
    b[18..22].copy_from_slice(&(rows.len() as u32 * 20).to_le_bytes());
    b[22..26].copy_from_slice(&5u32.to_le_bytes());
    b[26..30].copy_from_slice(&5u32.to_le_bytes());
    b[30..34].copy_from_slice(&(rows.len() as u32).to_le_bytes());
    b[34..36].copy_from_slice(&1u16.to_le_bytes());
    b[36..40].copy_from_slice(&100u32.to_le_bytes());
    b[40..44].copy_from_slice(&1u32.to_le_bytes());
    b[48..52].copy_from_slice(&31u32.to_le_bytes());
    for row in rows {
        for v in row {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<[f32; 5]> {
        vec![
            [0.0, 0.0, 0.0, 0.0, 45.0], // hover before the first stroke
            [10.0, 20.0, 1023.0, 0.0, 45.0],
            [11.0, 21.0, 512.0, 0.0, 45.0],
            [12.0, 22.0, 0.0, 0.0, 45.0], // lift
            [30.0, 40.0, 100.0, 0.0, 45.0],
        ]
    }

    #[test]
    fn parses_samples_and_lifts() {
        let t = parse_mcyt_fpg(&fpg_bytes(&rows())).expect("parse");
        assert_eq!(t.x(), &[10.0, 11.0, 30.0]);
        assert_eq!(t.y(), &[20.0, 21.0, 40.0]);
        assert_eq!(t.stroke_starts(), &[0, 2]);
        let p = t.pressure().expect("pressure");
        assert!((p[0] - 1.0).abs() < 1e-6 && (p[1] - 512.0 / 1023.0).abs() < 1e-6);
    }

    #[test]
    fn header_and_size_problems_are_named() {
        let good = fpg_bytes(&rows());
        let err = |bytes: &[u8]| parse_mcyt_fpg(bytes).expect_err("should fail");
        assert!(matches!(err(&[]), ParseError::Empty));
        assert!(matches!(err(b"PNG whatever"), ParseError::BadMagic));
        assert!(matches!(err(&good[..5]), ParseError::Truncated { .. }));
        assert!(matches!(err(&good[..30]), ParseError::Truncated { .. }));
        assert!(matches!(err(&good[..good.len() - 3]), ParseError::Truncated { .. }));

        let mut short_header = good.clone();
        short_header[4..6].copy_from_slice(&8u16.to_le_bytes());
        assert!(matches!(err(&short_header), ParseError::BadHeader { field: "header length", .. }));

        let mut channels = good.clone();
        channels[22..26].copy_from_slice(&7u32.to_le_bytes());
        let e = err(&channels);
        assert!(matches!(e, ParseError::BadHeader { field: "channels", found: 7, .. }), "{e}");

        let mut bits = good.clone();
        bits[16..18].copy_from_slice(&16u16.to_le_bytes());
        assert!(matches!(err(&bits), ParseError::BadHeader { field: "bits per value", .. }));

        let mut rate = good.clone();
        rate[36..40].copy_from_slice(&200u32.to_le_bytes());
        assert!(matches!(err(&rate), ParseError::BadHeader { field: "sample rate", .. }));

        let mut absurd = good.clone();
        absurd[30..34].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(err(&absurd), ParseError::TooManyPoints { .. }));

        let mut count = good.clone();
        count[30..34].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(err(&count), ParseError::BadHeader { field: "data bytes", .. }));

        let mut extra = good.clone();
        extra.extend_from_slice(&[0u8; 20]);
        assert!(matches!(err(&extra), ParseError::CountMismatch { declared: 5, found: 6 }));
    }

    #[test]
    fn bad_values_are_refused() {
        let mut r = rows();
        r[2][1] = f32::NAN;
        assert!(matches!(parse_mcyt_fpg(&fpg_bytes(&r)), Err(ParseError::NotFinite { row: 3, name: "y" })));
        let mut r = rows();
        r[1][2] = 2000.0;
        assert!(matches!(parse_mcyt_fpg(&fpg_bytes(&r)), Err(ParseError::OutOfRange { name: "pressure", .. })));
        let hover: Vec<[f32; 5]> = vec![[1.0, 1.0, 0.0, 0.0, 0.0]; 3];
        assert!(matches!(parse_mcyt_fpg(&fpg_bytes(&hover)), Err(ParseError::Trajectory(_))));
    }
}
