//! Synthetic signatures as pen recordings: the project's own sample recordings
//! (`samples/strokes/`), demos, and tests, without any real person's signature.
//!
//! A "writer" is a seed that fixes a name (a few cursive letters from a small alphabet of
//! control-point shapes), a slant, letter proportions and pen pressure; a "sample" is a seed
//! that jitters every control point, the slant, the size and the position a little, as two
//! signatures by one person differ. The shapes are smoothed with the same Catmull-Rom spline
//! the rasteriser uses and sampled as a 100 Hz pen would. Arithmetic only (no sin/cos), so a
//! seed gives the same recording on every platform.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Point, Recording, Stroke, StrokeError};

/// Control points of lowercase letters, in units of the x-height, y up, from the letter's
/// origin on the baseline; and the advance to the next letter.
const LETTERS: [(&[(f32, f32)], f32); 7] = [
    // n
    (&[(0.0, 0.1), (0.15, 0.9), (0.25, 0.3), (0.35, 0.05), (0.5, 0.95), (0.75, 0.85), (0.85, 0.05)], 0.95),
    // e
    (&[(0.0, 0.2), (0.55, 0.55), (0.55, 0.95), (0.25, 0.9), (0.1, 0.4), (0.4, 0.0), (0.8, 0.15)], 0.85),
    // l
    (&[(0.0, 0.2), (0.45, 1.5), (0.5, 2.3), (0.25, 2.2), (0.2, 1.1), (0.3, 0.05), (0.6, 0.2)], 0.65),
    // o
    (&[(0.0, 0.3), (0.35, 1.0), (0.05, 0.8), (0.1, 0.1), (0.5, 0.05), (0.6, 0.8), (0.35, 1.0), (0.9, 0.8)], 0.95),
    // u
    (&[(0.0, 0.9), (0.05, 0.2), (0.3, 0.0), (0.55, 0.4), (0.6, 0.95), (0.65, 0.2), (0.9, 0.05)], 0.95),
    // a
    (&[(0.0, 0.4), (0.55, 0.9), (0.2, 0.95), (0.0, 0.4), (0.3, 0.0), (0.6, 0.6), (0.6, 0.1), (0.85, 0.05)], 0.95),
    // r
    (&[(0.0, 0.1), (0.2, 0.9), (0.25, 0.5), (0.45, 0.85), (0.6, 0.8), (0.7, 0.05)], 0.8),
];

/// A capital: a tall loop with a crossing stroke, its own pen stroke.
const CAPITAL: &[(f32, f32)] =
    &[(0.0, 0.0), (0.3, 1.6), (0.55, 2.6), (0.8, 2.3), (0.5, 1.2), (0.0, 0.9), (0.9, 1.1), (1.2, 0.4), (1.1, 0.0)];

/// Milliseconds between pen samples (a 100 Hz digitiser).
const SAMPLE_MS: u32 = 10;
/// Pen-up time between strokes.
const PAUSE_MS: u32 = 180;
/// Spline samples per control-point interval.
const SUBDIVISION: usize = 5;

/// The `sample`-th signature of synthetic writer `writer`, fitted into a `width` x `height` box
/// (an error only for a box size no recording may have).
pub fn signature(writer: u64, sample: u64, width: u32, height: u32) -> Result<Recording, StrokeError> {
    let mut style = ChaCha8Rng::seed_from_u64(writer);
    let mut jitter = ChaCha8Rng::seed_from_u64(writer.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ sample.wrapping_add(1));

    // The writer: a name of 4-7 letters, slant, letter width, pressure.
    let letters: Vec<usize> = (0..style.random_range(4..=7)).map(|_| style.random_range(0..LETTERS.len())).collect();
    let slant = style.random_range(-0.1f32..0.45);
    let stretch = style.random_range(0.8f32..1.3);
    let pressure = style.random_range(0.35f32..0.7);
    let flourish = style.random_bool(0.6);

    // The sample: the same hand, not the same pixels.
    let slant = slant + jitter.random_range(-0.05f32..0.05);
    let stretch = stretch * jitter.random_range(0.95f32..1.05);
    let mut wobble = |v: f32| v + jitter.random_range(-0.06f32..0.06);

    let mut shapes: Vec<Vec<(f32, f32)>> = Vec::new();
    shapes.push(CAPITAL.iter().map(|&(x, y)| (wobble(x * stretch), wobble(y))).collect());
    let mut origin = 1.3 * stretch;
    let mut word = Vec::new();
    for &letter in &letters {
        let (points, advance) = LETTERS[letter];
        word.extend(points.iter().map(|&(x, y)| (wobble(origin + x * stretch), wobble(y))));
        origin += advance * stretch;
    }
    shapes.push(word);
    if flourish {
        let (y, end) = (wobble(-0.45), origin);
        shapes.push(vec![(0.2, wobble(-0.2)), (end * 0.4, y), (end * 0.8, y + 0.05), (end, wobble(0.0))]);
    }
    // Slant: x grows with height.
    for shape in &mut shapes {
        for (x, y) in shape.iter_mut() {
            *x += slant * *y;
        }
    }
    let placement = Placement::fit(&shapes, width, height, jitter.random_range(0.8f32..0.9), &mut jitter);

    let mut strokes: Vec<Stroke> = Vec::new();
    let mut t = 0u32;
    for shape in &shapes {
        let path = spline(shape);
        let last = path.len().saturating_sub(1).max(1) as f32;
        let stroke = path
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| {
                // Pressure rises after touch-down and falls before lift-off: 4u(1-u).
                let u = i as f32 / last;
                let p = (pressure * (0.45 + 2.2 * u * (1.0 - u))).clamp(0.05, 1.0);
                let (sx, sy) = placement.apply(x, y);
                let point = Point::new(round1(sx), round1(sy), t, Some(round2(p)));
                t += SAMPLE_MS;
                point
            })
            .collect();
        strokes.push(stroke);
        t += PAUSE_MS;
    }
    // The placement clamps every point into the box.
    Recording::new(width, height, strokes)
}

/// Maps signature units (y up) into the box (y down), scaled to fill `fill` of it and shifted a
/// little at random, clamped inside.
struct Placement {
    scale: f32,
    dx: f32,
    dy: f32,
    width: f32,
    height: f32,
}

impl Placement {
    fn fit(shapes: &[Vec<(f32, f32)>], width: u32, height: u32, fill: f32, rng: &mut ChaCha8Rng) -> Self {
        let all = shapes.iter().flatten();
        let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for &(x, y) in all {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        let (w, h) = (width as f32, height as f32);
        let scale = (w * fill / (x1 - x0).max(1e-3)).min(h * fill / (y1 - y0).max(1e-3));
        let shift_x = rng.random_range(-0.03f32..0.03) * w;
        let shift_y = rng.random_range(-0.03f32..0.03) * h;
        let dx = (w - (x1 - x0) * scale) * 0.5 - x0 * scale + shift_x;
        // y up: the top of the shapes (y1) goes to the top margin.
        let dy = (h - (y1 - y0) * scale) * 0.5 + y1 * scale + shift_y;
        Self { scale, dx, dy, width: w, height: h }
    }

    fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        ((x * self.scale + self.dx).clamp(0.0, self.width), (self.dy - y * self.scale).clamp(0.0, self.height))
    }
}

/// Catmull-Rom through the control points, [`SUBDIVISION`] samples per interval.
fn spline(points: &[(f32, f32)]) -> Vec<(f32, f32)> {
    let n = points.len();
    let Some(&first) = points.first() else { return Vec::new() };
    let at = |i: usize| points[i.min(n - 1)];
    let mut out = vec![first];
    for i in 0..n.saturating_sub(1) {
        let (a, b, c, d) = (at(i.saturating_sub(1)), at(i), at(i + 1), at(i + 2));
        for s in 1..=SUBDIVISION {
            let t = s as f32 / SUBDIVISION as f32;
            let (t2, t3) = (t * t, t * t * t);
            let f = |a: f32, b: f32, c: f32, d: f32| {
                0.5 * (2.0 * b
                    + (c - a) * t
                    + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
                    + (3.0 * b - a - 3.0 * c + d) * t3)
            };
            out.push((f(a.0, b.0, c.0, d.0), f(a.1, b.1, c.1, d.1)));
        }
    }
    out
}

/// One decimal: a digitiser's resolution, and short JSON.
fn round1(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_valid_reproducible_and_vary() {
        let a = signature(1, 0, 780, 330).expect("valid");
        assert!(a.validate().is_ok());
        assert_eq!(a, signature(1, 0, 780, 330).expect("valid"));
        assert!(a.strokes.len() >= 2 && a.point_count() > 100, "{} strokes", a.strokes.len());
        assert_ne!(a, signature(1, 1, 780, 330).expect("valid"), "samples differ");
        assert_ne!(a.strokes[1].len(), 0);
        // Fills most of the box.
        let xs: Vec<f32> = a.strokes.iter().flatten().map(|p| p.x).collect();
        let (lo, hi) = xs.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(hi - lo > 0.6 * 780.0, "{lo}..{hi}");
        // Time runs forward across strokes; pressure is reported.
        assert!(a.duration_ms() > 1000);
        assert!(a.strokes.iter().flatten().all(|p| p.p.is_some_and(|p| p > 0.0)));
        for size in [(100, 40), (468, 190), (1, 1)] {
            assert!(signature(7, 3, size.0, size.1).is_ok_and(|r| r.validate().is_ok()), "{size:?}");
        }
        assert!(signature(1, 1, 0, 10).is_err());
    }
}
