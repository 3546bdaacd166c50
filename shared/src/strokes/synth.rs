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
    let hand = Hand::of_writer(&mut style);
    draw(&hand, None, &mut jitter, width, height)
}

/// A skilled forgery of synthetic writer `writer` by forger `forger` (its `sample`-th attempt),
/// fitted into a `width` x `height` box.
///
/// The forger has seen the writer's signatures and copies their letters, capital and flourish,
/// but not the hand behind them: the slant and the width of the letters are off by the forger's
/// own habits, each letter's height and baseline a little more (proportion errors), the line
/// trembles (a copied signature is drawn slowly), its pressure is heavier and more even, and
/// the attempts vary more than the writer's own signatures do. The forger's habits are fixed by
/// `forger`, the attempt's variation by `sample`.
pub fn skilled_forgery(
    writer: u64,
    forger: u64,
    sample: u64,
    width: u32,
    height: u32,
) -> Result<Recording, StrokeError> {
    let mut style = ChaCha8Rng::seed_from_u64(writer);
    let hand = Hand::of_writer(&mut style);
    let mut habits = ChaCha8Rng::seed_from_u64(forger.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ writer);
    let copy = Copying::of_forger(&mut habits, hand.letters.len());
    let mut jitter = ChaCha8Rng::seed_from_u64(
        forger.wrapping_mul(0x94D0_49BB_1331_11EB) ^ writer.rotate_left(17) ^ sample.wrapping_add(1),
    );
    draw(&hand, Some(&copy), &mut jitter, width, height)
}

/// What fixes a synthetic writer's signature: the name, slant, letter width and pen pressure.
struct Hand {
    letters: Vec<usize>,
    slant: f32,
    stretch: f32,
    pressure: f32,
    flourish: bool,
}

impl Hand {
    fn of_writer(style: &mut ChaCha8Rng) -> Self {
        // A name of 4-7 letters, slant, letter width, pressure.
        let letters: Vec<usize> =
            (0..style.random_range(4..=7)).map(|_| style.random_range(0..LETTERS.len())).collect();
        let slant = style.random_range(-0.1f32..0.45);
        let stretch = style.random_range(0.8f32..1.3);
        let pressure = style.random_range(0.35f32..0.7);
        let flourish = style.random_bool(0.6);
        Self { letters, slant, stretch, pressure, flourish }
    }
}

/// How one forger copies a hand (see [`skilled_forgery`]).
struct Copying {
    slant: f32,
    stretch: f32,
    /// Height and baseline shift of each letter, in x-heights.
    letter_scale: Vec<f32>,
    letter_shift: Vec<f32>,
    /// Amplitude of the tremor, in x-heights.
    tremor: f32,
    pressure: f32,
    /// Control-point jitter of an attempt (the writer's own is 0.06).
    wobble: f32,
}

impl Copying {
    fn of_forger(habits: &mut ChaCha8Rng, letters: usize) -> Self {
        Self {
            slant: habits.random_range(-0.15f32..0.15),
            stretch: habits.random_range(0.85f32..1.2),
            letter_scale: (0..letters).map(|_| habits.random_range(0.8f32..1.25)).collect(),
            letter_shift: (0..letters).map(|_| habits.random_range(-0.12f32..0.12)).collect(),
            tremor: habits.random_range(0.01f32..0.035),
            pressure: habits.random_range(1.05f32..1.35),
            wobble: habits.random_range(0.07f32..0.11),
        }
    }
}

/// One signature of `hand`, or a forger's copy of it, as a pen recording in the box.
fn draw(
    hand: &Hand,
    copy: Option<&Copying>,
    jitter: &mut ChaCha8Rng,
    width: u32,
    height: u32,
) -> Result<Recording, StrokeError> {
    let (mut slant, mut stretch, mut pressure) = (hand.slant, hand.stretch, hand.pressure);
    if let Some(c) = copy {
        slant += c.slant;
        stretch *= c.stretch;
        pressure = (pressure * c.pressure).min(0.95);
    }
    let wobble_by = copy.map_or(0.06, |c| c.wobble);

    // The sample: the same hand, not the same pixels.
    let slant = slant + jitter.random_range(-0.05f32..0.05);
    let stretch = stretch * jitter.random_range(0.95f32..1.05);
    let mut wobble = |v: f32| v + jitter.random_range(-wobble_by..wobble_by);

    let mut shapes: Vec<Vec<(f32, f32)>> = Vec::new();
    shapes.push(CAPITAL.iter().map(|&(x, y)| (wobble(x * stretch), wobble(y))).collect());
    let mut origin = 1.3 * stretch;
    let mut word = Vec::new();
    for (k, &letter) in hand.letters.iter().enumerate() {
        let (points, advance) = LETTERS[letter];
        let (scale, shift) = copy.map_or((1.0, 0.0), |c| (c.letter_scale[k], c.letter_shift[k]));
        word.extend(points.iter().map(|&(x, y)| (wobble(origin + x * stretch), wobble(y * scale + shift))));
        origin += advance * stretch;
    }
    shapes.push(word);
    if hand.flourish {
        let (y, end) = (wobble(-0.45), origin);
        shapes.push(vec![(0.2, wobble(-0.2)), (end * 0.4, y), (end * 0.8, y + 0.05), (end, wobble(0.0))]);
    }
    // Slant: x grows with height.
    for shape in &mut shapes {
        for (x, y) in shape.iter_mut() {
            *x += slant * *y;
        }
    }
    let mut paths: Vec<Vec<(f32, f32)>> = shapes.iter().map(|s| spline(s)).collect();
    if let Some(c) = copy {
        for path in &mut paths {
            tremble(path, c.tremor, jitter);
        }
    }
    let placement = Placement::fit(&shapes, width, height, jitter.random_range(0.8f32..0.9), jitter);

    let mut strokes: Vec<Stroke> = Vec::new();
    let mut t = 0u32;
    for path in &paths {
        let last = path.len().saturating_sub(1).max(1) as f32;
        // A forger draws slowly and presses evenly: less rise and fall of the pressure.
        let swing = if copy.is_some() { 0.8 } else { 2.2 };
        let stroke = path
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| {
                // Pressure rises after touch-down and falls before lift-off: 4u(1-u).
                let u = i as f32 / last;
                let p = (pressure * (0.45 + swing * u * (1.0 - u))).clamp(0.05, 1.0);
                let (sx, sy) = placement.apply(x, y);
                let point = Point::new(round1(sx), round1(sy), t, Some(round2(p)));
                t += if copy.is_some() { 2 * SAMPLE_MS } else { SAMPLE_MS };
                point
            })
            .collect();
        strokes.push(stroke);
        t += PAUSE_MS;
    }
    // The placement clamps every point into the box.
    Recording::new(width, height, strokes)
}

/// Adds a slow tremor to a path: a smoothed random walk (each step keeps 80% of the last
/// offset), `amplitude` x-heights at most.
fn tremble(path: &mut [(f32, f32)], amplitude: f32, rng: &mut ChaCha8Rng) {
    let (mut dx, mut dy) = (0.0f32, 0.0f32);
    for (x, y) in path.iter_mut() {
        dx = 0.8 * dx + 0.2 * rng.random_range(-1.0f32..1.0);
        dy = 0.8 * dy + 0.2 * rng.random_range(-1.0f32..1.0);
        *x += amplitude * 2.5 * dx;
        *y += amplitude * 2.5 * dy;
    }
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

    /// Mean absolute pixel difference of two preprocessed images.
    fn distance(a: &crate::preprocess::Preprocessed, b: &crate::preprocess::Preprocessed) -> f32 {
        a.pixels.iter().zip(&b.pixels).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.pixels.len() as f32
    }

    fn preprocessed(recording: &Recording) -> crate::preprocess::Preprocessed {
        let image = crate::strokes::raster::rasterise(recording, &crate::strokes::raster::RasterConfig::default())
            .expect("rasterised");
        crate::preprocess::preprocess_gray(&image, &crate::PreprocessConfig::default()).expect("preprocess accepts it")
    }

    #[test]
    fn skilled_forgeries_are_valid_reproducible_and_between_the_writer_and_others() {
        let f = skilled_forgery(1, 9, 0, 780, 330).expect("valid");
        assert!(f.validate().is_ok());
        assert_eq!(f, skilled_forgery(1, 9, 0, 780, 330).expect("valid"));
        assert_ne!(f, skilled_forgery(1, 9, 1, 780, 330).expect("valid"), "attempts differ");
        assert_ne!(f, skilled_forgery(1, 10, 0, 780, 330).expect("valid"), "forgers differ");
        // Same letters and strokes as the writer's signature, drawn more slowly.
        let g = signature(1, 0, 780, 330).expect("valid");
        assert_eq!(f.strokes.len(), g.strokes.len());
        assert!(f.duration_ms() > g.duration_ms());

        // In the preprocessed images the kiosk sees: a forgery is farther from the writer's
        // signatures than they are from each other, and nearer than another writer's signature.
        let (mut genuine, mut forged, mut other) = (0.0, 0.0, 0.0);
        for writer in 0..12u64 {
            let refs: Vec<_> = (0..3).map(|s| preprocessed(&signature(writer, s, 780, 330).expect("valid"))).collect();
            let g = preprocessed(&signature(writer, 3, 780, 330).expect("valid"));
            let f = preprocessed(&skilled_forgery(writer, 100 + writer, 0, 780, 330).expect("valid"));
            let o = preprocessed(&signature(writer + 1000, 0, 780, 330).expect("valid"));
            for r in &refs {
                genuine += distance(r, &g);
                forged += distance(r, &f);
                other += distance(r, &o);
            }
        }
        assert!(genuine < forged && forged < other, "genuine {genuine}, forged {forged}, other {other}");
        for size in [(100, 40), (1, 1)] {
            assert!(skilled_forgery(7, 3, 1, size.0, size.1).is_ok_and(|r| r.validate().is_ok()), "{size:?}");
        }
    }
}
