//! Shortcut detection: can scanning conditions alone tell genuine from forged?
//!
//! CEDAR's genuine scans have grey paper and its forgeries white paper. A "classifier" that
//! sees only background statistics must sit near 50% EER after preprocessing; every report
//! prints this figure so a shortcut cannot hide behind a good number.

use crate::metrics;
use crate::preprocess::Preprocessed;

/// Names of the features [`background_features`] returns, in order.
pub const BACKGROUND_FEATURES: [&str; 3] = ["border_mean", "faint_mean", "faint_fraction"];

/// Statistics of the background only: the mean of the outer 4-pixel frame, and the mean and
/// share of faint pixels (0 < v < 0.1) that are paper texture or scanner noise, not strokes.
pub fn background_features(p: &Preprocessed) -> [f32; 3] {
    let (w, h) = (p.width as usize, p.height as usize);
    let frame = 4.min(w / 2).min(h / 2);
    let (mut border_sum, mut border_n) = (0f64, 0usize);
    for y in 0..h {
        for x in 0..w {
            if x < frame || y < frame || x >= w - frame || y >= h - frame {
                border_sum += p.pixels[y * w + x] as f64;
                border_n += 1;
            }
        }
    }
    let faint: Vec<f32> = p.pixels.iter().copied().filter(|&v| v > 0.0 && v < 0.1).collect();
    let faint_mean = if faint.is_empty() { 0.0 } else { faint.iter().sum::<f32>() / faint.len() as f32 };
    [(border_sum / border_n.max(1) as f64) as f32, faint_mean, faint.len() as f32 / p.pixels.len().max(1) as f32]
}

/// EER of the best single-feature threshold classifier (either direction) separating the two
/// groups: 0.5 means the feature says nothing; near 0 means a shortcut.
pub fn single_feature_eer(a: &[f32], b: &[f32]) -> f64 {
    let forward = metrics::eer(a, b).eer;
    let negate = |v: &[f32]| v.iter().map(|x| -x).collect::<Vec<_>>();
    let backward = metrics::eer(&negate(a), &negate(b)).eer;
    forward.min(backward)
}

/// The most revealing background feature's EER between genuine and forged images
/// (`genuine[i]` / `forged[i]` are feature vectors of [`background_features`]).
pub fn background_only_eer(genuine: &[[f32; 3]], forged: &[[f32; 3]]) -> f64 {
    (0..BACKGROUND_FEATURES.len())
        .map(|f| {
            let g: Vec<f32> = genuine.iter().map(|v| v[f]).collect();
            let k: Vec<f32> = forged.iter().map(|v| v[f]).collect();
            single_feature_eer(&g, &k)
        })
        .fold(f64::NAN, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(border: f32) -> Preprocessed {
        let mut pixels = vec![0.0f32; 16 * 32];
        pixels[0] = border;
        pixels[200] = 0.9;
        Preprocessed { height: 16, width: 32, pixels }
    }

    #[test]
    fn a_background_shortcut_is_caught() {
        let g: Vec<[f32; 3]> = (0..20).map(|i| background_features(&image(0.05 + i as f32 * 1e-3))).collect();
        let f: Vec<[f32; 3]> = (0..20).map(|_| background_features(&image(0.0))).collect();
        assert!(background_only_eer(&g, &f) < 0.05);
    }

    #[test]
    fn identical_backgrounds_sit_at_chance() {
        let g: Vec<[f32; 3]> = (0..20).map(|_| background_features(&image(0.0))).collect();
        let f = g.clone();
        assert!((background_only_eer(&g, &f) - 0.5).abs() < 1e-9);
    }
}
