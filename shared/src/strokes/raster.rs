//! Strokes to a grey image: dark ink on white paper, ready for
//! [`crate::preprocess::preprocess_gray`].
//!
//! Each stroke is smoothed with a Catmull-Rom spline through its points (a pen samples at
//! 100-200 Hz, so straight segments between samples would show as corners), then drawn as a chain
//! of round-capped segments whose width follows the pressure. Coverage is anti-aliased (how much
//! of a one-pixel disc around each pixel centre the pen covered) and overlapping segments take
//! the maximum, so ink never darkens where segments meet. Only IEEE f32 add, multiply, divide,
//! sqrt and rounding are used (no transcendental functions), so the same recording gives the
//! same pixels on x86_64 and ARM.

use image::GrayImage;

use super::{MAX_SIDE, Point, Recording, StrokeError};

/// How strokes become pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterConfig {
    /// Height of the output image; the box is scaled to it, keeping its aspect ratio. A fixed
    /// height makes the line width relative to the signature the same whatever screen it was
    /// captured on.
    pub height: u32,
    /// Line width in output pixels at pressure 0.
    pub min_width: f32,
    /// Line width in output pixels at pressure 1.
    pub max_width: f32,
    /// Pressure assumed for points without one (touch screens).
    pub default_pressure: f32,
}

impl Default for RasterConfig {
    /// About the stroke width of a ballpoint pen in a 300 dpi scan of a signature.
    fn default() -> Self {
        Self { height: 300, min_width: 1.5, max_width: 5.5, default_pressure: 0.5 }
    }
}

/// Longest pen path drawn, in output pixels (the chords between consecutive points). Drawing
/// time and the spline's samples grow with it: a valid recording of 200 000 points zigzagging
/// across an 8192-pixel box would take 800 MB and a minute. A signature at the default 300-pixel
/// height is a few thousand pixels long; this is 4 000 000 (under a second, 50 MB of samples).
pub const MAX_INK_LENGTH: f64 = 4_000_000.0;

/// Output pixels per box pixel, and the output size, for `recording` under `config`.
fn geometry(recording: &Recording, config: &RasterConfig) -> Result<(f32, u32, u32), StrokeError> {
    let scale = config.height as f32 / recording.height as f32;
    let width = (recording.width as f32 * scale).round().max(1.0);
    let height = config.height;
    if width > MAX_SIDE as f32 || height > MAX_SIDE || height == 0 {
        return Err(StrokeError::RasterTooLarge { width: width as u32, height });
    }
    Ok((scale, width as u32, height))
}

/// Draws `recording` (which is validated first) into a new white image.
pub fn rasterise(recording: &Recording, config: &RasterConfig) -> Result<GrayImage, StrokeError> {
    recording.validate()?;
    let (scale, width, height) = geometry(recording, config)?;
    let length = ink_length(recording, scale);
    if length > MAX_INK_LENGTH {
        return Err(StrokeError::TooMuchInk { length });
    }
    let mut canvas = Coverage::new(width, height);
    for stroke in &recording.strokes {
        let samples = smooth(stroke, scale, config);
        match samples.as_slice() {
            [] => {}
            [only] => canvas.segment(only, only),
            _ => {
                for pair in samples.windows(2) {
                    canvas.segment(&pair[0], &pair[1]);
                }
            }
        }
    }
    Ok(canvas.into_image())
}

/// Length of the pen path at output scale: the sum of the chords between consecutive points
/// (add, multiply and sqrt only, like the drawing).
fn ink_length(recording: &Recording, scale: f32) -> f64 {
    let chords = recording.strokes.iter().flat_map(|s| s.windows(2));
    let length: f64 = chords
        .map(|w| {
            let (dx, dy) = (f64::from(w[1].x - w[0].x), f64::from(w[1].y - w[0].y));
            (dx * dx + dy * dy).sqrt()
        })
        .sum();
    length * f64::from(scale)
}

/// A point of the smoothed pen path in output pixels, with the pen's radius there.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    x: f32,
    y: f32,
    radius: f32,
}

fn radius(point: &Point, config: &RasterConfig) -> f32 {
    let p = point.p.unwrap_or(config.default_pressure).clamp(0.0, 1.0);
    0.5 * (config.min_width + (config.max_width - config.min_width) * p)
}

/// Catmull-Rom spline through the stroke's points, sampled at most a pixel apart. The end
/// points are repeated as their own neighbours, so the curve starts and ends on the pen.
fn smooth(stroke: &[Point], scale: f32, config: &RasterConfig) -> Vec<Sample> {
    let at = |i: usize| {
        let p = &stroke[i.min(stroke.len() - 1)];
        (p.x * scale, p.y * scale, radius(p, config))
    };
    let Some(first) = stroke.first() else { return Vec::new() };
    let mut out = vec![Sample { x: first.x * scale, y: first.y * scale, radius: radius(first, config) }];
    for i in 0..stroke.len().saturating_sub(1) {
        let (p0, p1, p2, p3) = (at(i.saturating_sub(1)), at(i), at(i + 1), at(i + 2));
        let (dx, dy) = (p2.0 - p1.0, p2.1 - p1.1);
        let steps = (dx * dx + dy * dy).sqrt().ceil().clamp(1.0, 256.0) as u32;
        for s in 1..=steps {
            let t = s as f32 / steps as f32;
            let x = catmull_rom(p0.0, p1.0, p2.0, p3.0, t);
            let y = catmull_rom(p0.1, p1.1, p2.1, p3.1, t);
            out.push(Sample { x, y, radius: p1.2 + (p2.2 - p1.2) * t });
        }
    }
    out
}

/// Uniform Catmull-Rom between `b` and `c` at `t` in `0..=1`.
fn catmull_rom(a: f32, b: f32, c: f32, d: f32, t: f32) -> f32 {
    let t2 = t * t;
    let t3 = t2 * t;
    0.5 * (2.0 * b + (c - a) * t + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2 + (3.0 * b - a - 3.0 * c + d) * t3)
}

/// Ink coverage in `0..=1` per pixel.
struct Coverage {
    width: u32,
    height: u32,
    values: Vec<f32>,
}

impl Coverage {
    fn new(width: u32, height: u32) -> Self {
        Self { width, height, values: vec![0.0; width as usize * height as usize] }
    }

    /// A round-capped segment from `a` to `b` whose radius goes linearly from `a`'s to `b`'s.
    fn segment(&mut self, a: &Sample, b: &Sample) {
        let reach = a.radius.max(b.radius) + 1.0;
        let x0 = (a.x.min(b.x) - reach).floor().max(0.0) as u32;
        let y0 = (a.y.min(b.y) - reach).floor().max(0.0) as u32;
        let x1 = ((a.x.max(b.x) + reach).ceil().max(0.0) as u32).min(self.width);
        let y1 = ((a.y.max(b.y) + reach).ceil().max(0.0) as u32).min(self.height);
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let length2 = dx * dx + dy * dy;
        for y in y0..y1 {
            let cy = y as f32 + 0.5;
            for x in x0..x1 {
                let cx = x as f32 + 0.5;
                let t =
                    if length2 > 0.0 { (((cx - a.x) * dx + (cy - a.y) * dy) / length2).clamp(0.0, 1.0) } else { 0.0 };
                let (ex, ey) = (cx - (a.x + dx * t), cy - (a.y + dy * t));
                let distance = (ex * ex + ey * ey).sqrt();
                let r = a.radius + (b.radius - a.radius) * t;
                let c = (r + 0.5 - distance).clamp(0.0, 1.0);
                let slot = &mut self.values[y as usize * self.width as usize + x as usize];
                if c > *slot {
                    *slot = c;
                }
            }
        }
    }

    /// White paper (255), full coverage black (0).
    fn into_image(self) -> GrayImage {
        let pixels = self.values.iter().map(|&c| (255.0 - 255.0 * c).round() as u8).collect();
        // The buffer has exactly width * height values by construction.
        GrayImage::from_raw(self.width, self.height, pixels).unwrap_or_else(|| GrayImage::new(1, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{PreprocessConfig, preprocess_gray};

    fn horizontal(p: Option<f32>) -> Recording {
        let stroke = (0..=8).map(|i| Point::new(10.0 + 10.0 * i as f32, 50.0, 10 * i, p)).collect();
        Recording::new(100, 100, vec![stroke]).expect("valid")
    }

    fn config() -> RasterConfig {
        RasterConfig { height: 100, ..RasterConfig::default() }
    }

    fn dark(image: &GrayImage) -> usize {
        image.pixels().filter(|p| p.0[0] < 128).count()
    }

    #[test]
    fn ink_lies_on_the_stroke_and_nowhere_else() {
        let image = rasterise(&horizontal(Some(0.5)), &config()).expect("raster");
        assert_eq!(image.dimensions(), (100, 100));
        for x in 12..88 {
            assert_eq!(image.get_pixel(x, 50).0[0], 0, "centre of the line at x={x}");
        }
        // Width 3.5 at p = 0.5: rows 48..=51 are inked (pixel centres within 1.75 + 0.5).
        assert!(image.get_pixel(50, 48).0[0] < 128 && image.get_pixel(50, 51).0[0] < 128);
        for (x, y) in image.enumerate_pixels().filter(|(_, _, p)| p.0[0] < 255).map(|(x, y, _)| (x, y)) {
            assert!((46..=53).contains(&y) && (6..=94).contains(&x), "stray ink at ({x}, {y})");
        }
        // Anti-aliased edge: some pixels are neither paper nor full ink.
        assert!(image.pixels().any(|p| p.0[0] > 0 && p.0[0] < 255));
    }

    #[test]
    fn pressure_widens_the_line() {
        let light = dark(&rasterise(&horizontal(Some(0.05)), &config()).expect("raster"));
        let heavy = dark(&rasterise(&horizontal(Some(1.0)), &config()).expect("raster"));
        let none = dark(&rasterise(&horizontal(None), &config()).expect("raster"));
        assert!(light < none && none < heavy, "{light} {none} {heavy}");
        assert!(heavy as f32 > 2.5 * light as f32, "{light} {heavy}");
    }

    #[test]
    fn smoothing_rounds_corners_and_a_dot_is_drawn() {
        let corner =
            vec![Point::new(10.0, 10.0, 0, None), Point::new(50.0, 50.0, 10, None), Point::new(90.0, 10.0, 20, None)];
        let dot = vec![Point::new(50.0, 90.0, 30, None)];
        let image = rasterise(&Recording::new(100, 100, vec![corner, dot]).expect("valid"), &config()).expect("raster");
        assert_eq!(image.get_pixel(50, 90).0[0], 0, "dot");
        // The spline passes through its points.
        assert!(image.get_pixel(50, 49).0[0] < 128 && image.get_pixel(10, 10).0[0] < 128);
        // Between samples the curve is not the straight chord y = x: the spline passes near
        // (27.5, 32.5) at the segment's middle, and the chord's pixel (30, 30) stays paper.
        assert!(image.get_pixel(27, 32).0[0] < 128);
        assert!(image.get_pixel(30, 30).0[0] > 200);
    }

    #[test]
    fn a_pen_path_no_signature_has_is_refused_before_drawing() {
        // Found under the fuzz targets' heap budget (fuzz/src/seeds.rs): a valid recording whose
        // 200 000 points zigzag across an 8192-pixel box made the spline allocate 800 MB and
        // take a minute.
        let zigzag = (0..crate::strokes::MAX_POINTS as u32)
            .map(|i| Point::new(if i % 2 == 0 { 0.0 } else { 8192.0 }, (i % 300) as f32, i, None))
            .collect();
        let recording = Recording::new(8192, 300, vec![zigzag]).expect("valid");
        let start = std::time::Instant::now();
        let err = rasterise(&recording, &RasterConfig::default()).expect_err("too much ink");
        assert!(matches!(err, StrokeError::TooMuchInk { length } if length > MAX_INK_LENGTH), "{err}");
        assert!(start.elapsed().as_secs_f32() < 1.0, "{:?}", start.elapsed());
        // Real signatures are far from the limit.
        let real = super::super::synth::signature(3, 1, 780, 330).expect("valid");
        let scale = RasterConfig::default().height as f32 / real.height as f32;
        assert!(ink_length(&real, scale) < MAX_INK_LENGTH / 100.0, "{}", ink_length(&real, scale));
    }

    #[test]
    fn raster_scales_to_the_configured_height_and_is_deterministic() {
        let r = super::super::synth::signature(3, 1, 780, 330).expect("valid");
        let cfg = RasterConfig::default();
        let a = rasterise(&r, &cfg).expect("raster");
        let b = rasterise(&r, &cfg).expect("raster");
        assert_eq!(a.dimensions(), ((780.0f32 * 300.0 / 330.0).round() as u32, 300));
        assert_eq!(a, b);
        let pre = PreprocessConfig::default();
        let (pa, pb) = (preprocess_gray(&a, &pre).expect("pre"), preprocess_gray(&b, &pre).expect("pre"));
        assert_eq!(pa.pixels, pb.pixels);
        let inked = pa.pixels.iter().filter(|&&v| v > 0.5).count();
        // Thin pen lines shrink to about a pixel at 64x128, as they do in scans.
        assert!(inked > 50, "the signature has ink: {inked}");
        let too_big = RasterConfig { height: MAX_SIDE + 1, ..cfg };
        assert!(matches!(rasterise(&r, &too_big), Err(StrokeError::RasterTooLarge { .. })));
    }
}
