//! Augmentation that keeps a signature a signature, on the preprocessed `H×W` map (ink high,
//! background 0): a small affine jitter (rotation, scale, shear, translation) sampled bilinearly,
//! then a sub-pixel stroke-width change (a blend towards a 3×3 grey dilation or erosion, i.e. at
//! most one pixel). Everything is drawn from the caller's seeded generator.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Ranges of the random transform; each parameter is drawn uniformly in `[-max, max]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Rotation, degrees.
    pub max_rotation_deg: f32,
    /// Relative scale change (0.1 = ±10 %).
    pub max_scale: f32,
    /// Horizontal shear factor (x += shear · y); 0.15 ≈ ±8.5° of slant.
    pub max_shear: f32,
    /// Translation as a fraction of the image side.
    pub max_translate: f32,
    /// Largest thickening: the share (at most 1) of a 3×3 dilation blended in, i.e. ≤ 1 px.
    pub max_dilate: f32,
    /// Largest thinning: the share of a 3×3 erosion blended in. Kept at half by default: at
    /// 64×128 many strokes are one pixel wide, and a full erosion would erase them.
    pub max_erode: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            max_rotation_deg: 5.0,
            max_scale: 0.10,
            max_shear: 0.15,
            max_translate: 0.04,
            max_dilate: 1.0,
            max_erode: 0.5,
        }
    }
}

/// One concrete transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentParams {
    pub rotation_rad: f32,
    /// Multiplicative scale (1 = unchanged).
    pub scale: f32,
    pub shear: f32,
    /// Translation in pixels.
    pub translate_x: f32,
    pub translate_y: f32,
    /// In [-1, 1]: share of the dilated (> 0) or eroded (< 0) map blended in.
    pub stroke: f32,
}

impl AugmentParams {
    /// The transform that changes nothing.
    pub const IDENTITY: Self =
        Self { rotation_rad: 0.0, scale: 1.0, shear: 0.0, translate_x: 0.0, translate_y: 0.0, stroke: 0.0 };

    /// Draws a transform for an `height × width` image.
    pub fn sample<R: Rng + ?Sized>(config: &AugmentConfig, height: usize, width: usize, rng: &mut R) -> Self {
        let mut symmetric = |max: f32| if max > 0.0 { rng.random_range(-max..=max) } else { 0.0 };
        Self {
            rotation_rad: symmetric(config.max_rotation_deg).to_radians(),
            scale: 1.0 + symmetric(config.max_scale),
            shear: symmetric(config.max_shear),
            translate_x: symmetric(config.max_translate) * width as f32,
            translate_y: symmetric(config.max_translate) * height as f32,
            stroke: {
                let (erode, dilate) = (config.max_erode.clamp(0.0, 1.0), config.max_dilate.clamp(0.0, 1.0));
                if erode + dilate > 0.0 { rng.random_range(-erode..=dilate) } else { 0.0 }
            },
        }
    }
}

/// Applies `params` to a row-major `height × width` map, returning a new map in [0, 1].
pub fn apply(pixels: &[f32], height: usize, width: usize, params: &AugmentParams) -> Vec<f32> {
    assert_eq!(pixels.len(), height * width, "pixel count must be height × width");
    let warped = warp_affine(pixels, height, width, params);
    let mut out = change_stroke(&warped, height, width, params.stroke);
    for v in &mut out {
        *v = v.clamp(0.0, 1.0);
    }
    out
}

/// Draws a transform and applies it.
pub fn augment<R: Rng + ?Sized>(
    pixels: &[f32],
    height: usize,
    width: usize,
    config: &AugmentConfig,
    rng: &mut R,
) -> Vec<f32> {
    let params = AugmentParams::sample(config, height, width, rng);
    apply(pixels, height, width, &params)
}

/// Output pixel `p` takes the input at `A⁻¹ (p - c - t) + c`, where `A = R·Sh·S` about the centre
/// `c`. Outside the input is background (0).
fn warp_affine(pixels: &[f32], height: usize, width: usize, params: &AugmentParams) -> Vec<f32> {
    let (sin, cos) = params.rotation_rad.sin_cos();
    let s = params.scale;
    // A = R · Sh · S with Sh = [[1, k], [0, 1]]:  A = s · [[cos, cos·k - sin], [sin, sin·k + cos]].
    let k = params.shear;
    let a = [[s * cos, s * (cos * k - sin)], [s * sin, s * (sin * k + cos)]];
    let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    let inv = [[a[1][1] / det, -a[0][1] / det], [-a[1][0] / det, a[0][0] / det]];
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let mut out = vec![0.0; height * width];
    for y in 0..height {
        for x in 0..width {
            // Pixel centres at +0.5.
            let dx = x as f32 + 0.5 - cx - params.translate_x;
            let dy = y as f32 + 0.5 - cy - params.translate_y;
            let sx = inv[0][0] * dx + inv[0][1] * dy + cx - 0.5;
            let sy = inv[1][0] * dx + inv[1][1] * dy + cy - 0.5;
            out[y * width + x] = bilinear(pixels, height, width, sx, sy);
        }
    }
    out
}

/// Bilinear sample at continuous pixel coordinates; 0 outside the image.
fn bilinear(pixels: &[f32], height: usize, width: usize, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| -> f32 {
        if xi < 0.0 || yi < 0.0 || xi >= width as f32 || yi >= height as f32 {
            0.0
        } else {
            pixels[yi as usize * width + xi as usize]
        }
    };
    let top = at(x0, y0) * (1.0 - fx) + if fx > 0.0 { at(x0 + 1.0, y0) * fx } else { 0.0 };
    if fy > 0.0 {
        let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + if fx > 0.0 { at(x0 + 1.0, y0 + 1.0) * fx } else { 0.0 };
        top * (1.0 - fy) + bottom * fy
    } else {
        top
    }
}

/// Blends towards the 3×3 max (`amount > 0`, thicker strokes) or min (`amount < 0`, thinner).
fn change_stroke(pixels: &[f32], height: usize, width: usize, amount: f32) -> Vec<f32> {
    if amount == 0.0 {
        return pixels.to_vec();
    }
    let dilate = amount > 0.0;
    let t = amount.abs().min(1.0);
    let mut out = vec![0.0; pixels.len()];
    for y in 0..height {
        for x in 0..width {
            let mut extreme = pixels[y * width + x];
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let v = pixels[ny * width + nx];
                    extreme = if dilate { extreme.max(v) } else { extreme.min(v) };
                }
            }
            let v = pixels[y * width + x];
            out[y * width + x] = v + (extreme - v) * t;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A 16×32 map with a diagonal stroke and a horizontal bar, values in [0, 1].
    fn stroke_map() -> (Vec<f32>, usize, usize) {
        let (h, w) = (16, 32);
        let mut map = vec![0.0; h * w];
        for i in 2..14 {
            map[i * w + 2 * i] = 1.0;
            map[i * w + 2 * i + 1] = 0.6;
        }
        for x in 5..28 {
            map[8 * w + x] = 0.9;
        }
        (map, h, w)
    }

    #[test]
    fn identity_params_give_identical_output() {
        let (map, h, w) = stroke_map();
        assert_eq!(apply(&map, h, w, &AugmentParams::IDENTITY), map);
    }

    #[test]
    fn integer_translation_moves_pixels_exactly() {
        let (map, h, w) = stroke_map();
        let shifted = warp_affine(&map, h, w, &AugmentParams { translate_x: 1.0, ..AugmentParams::IDENTITY });
        for y in 0..h {
            assert_eq!(shifted[y * w], 0.0);
            for x in 1..w {
                assert_eq!(shifted[y * w + x], map[y * w + x - 1]);
            }
        }
    }

    #[test]
    fn output_stays_in_unit_range_and_keeps_ink() {
        let (map, h, w) = stroke_map();
        let ink: f32 = map.iter().sum();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let config = AugmentConfig::default();
        for _ in 0..50 {
            let out = augment(&map, h, w, &config, &mut rng);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
            let out_ink: f32 = out.iter().sum();
            assert!(out_ink > 0.3 * ink && out_ink < 4.0 * ink, "ink {ink} -> {out_ink}");
        }
    }

    #[test]
    fn seeded_augmentation_is_reproducible() {
        let (map, h, w) = stroke_map();
        let config = AugmentConfig::default();
        let a = augment(&map, h, w, &config, &mut ChaCha8Rng::seed_from_u64(9));
        let b = augment(&map, h, w, &config, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
    }

    #[test]
    fn sampled_params_stay_within_the_configured_ranges() {
        let config = AugmentConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..200 {
            let p = AugmentParams::sample(&config, 64, 128, &mut rng);
            assert!(p.rotation_rad.abs() <= 5f32.to_radians() + 1e-6);
            assert!((p.scale - 1.0).abs() <= 0.1 + 1e-6);
            assert!(p.shear.abs() <= 0.15 + 1e-6);
            assert!(p.translate_x.abs() <= 0.04 * 128.0 + 1e-4 && p.translate_y.abs() <= 0.04 * 64.0 + 1e-4);
            assert!((-0.5..=1.0).contains(&p.stroke));
        }
    }

    #[test]
    fn dilation_thickens_and_erosion_thins() {
        let (map, h, w) = stroke_map();
        let sum = |m: &[f32]| m.iter().sum::<f32>();
        let thick = apply(&map, h, w, &AugmentParams { stroke: 1.0, ..AugmentParams::IDENTITY });
        let thin = apply(&map, h, w, &AugmentParams { stroke: -0.5, ..AugmentParams::IDENTITY });
        assert!(sum(&thick) > sum(&map) && sum(&thin) < sum(&map));
    }
}
