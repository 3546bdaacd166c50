//! Fusing the on-line (DTW) score with the image model's similarity: two views of one
//! signature whose errors are partly independent, so together they reject forgeries either
//! alone accepts.
//!
//! Both scores are z-scored with statistics from validation writers (their scales differ:
//! cosine similarity vs `1 / (1 + distance)`), then combined linearly. Weights are either equal
//! ([`Fusion::z_sum`]) or fitted by logistic regression on validation writers
//! ([`Fusion::fit_logistic`]); never on test writers. The fused score is a logit: higher =
//! more genuine, thresholded like any other score.

use serde::{Deserialize, Serialize};

/// Mean and standard deviation of one score on validation data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    pub mean: f32,
    pub std: f32,
}

impl ScoreStats {
    /// Statistics of finite scores; `None` with fewer than two or no spread.
    pub fn of(scores: &[f32]) -> Option<Self> {
        let finite: Vec<f64> = scores.iter().filter(|s| s.is_finite()).map(|&s| f64::from(s)).collect();
        if finite.len() < 2 {
            return None;
        }
        let n = finite.len() as f64;
        let mean = finite.iter().sum::<f64>() / n;
        let std = (finite.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
        (std > 1e-12).then_some(Self { mean: mean as f32, std: std as f32 })
    }

    pub fn z(&self, score: f32) -> f32 {
        (score - self.mean) / self.std
    }
}

/// A linear fusion of z-scored dynamic and image scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fusion {
    pub dynamic: ScoreStats,
    pub image: ScoreStats,
    pub w_dynamic: f32,
    pub w_image: f32,
    pub bias: f32,
}

/// Why a fusion could not be fitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FusionError {
    #[error("{dynamic} dynamic scores, {image} image scores and {labels} labels: they must pair up")]
    LengthMismatch { dynamic: usize, image: usize, labels: usize },
    #[error("the {which} scores have fewer than two finite values or no spread")]
    Degenerate { which: &'static str },
    #[error("fitting needs both genuine and impostor examples")]
    OneClass,
}

impl Fusion {
    /// Equal weights on the z-scored scores (statistics over all given validation scores).
    pub fn z_sum(dynamic: &[f32], image: &[f32]) -> Result<Self, FusionError> {
        let (dynamic, image) = stats(dynamic, image)?;
        Ok(Self { dynamic, image, w_dynamic: 0.5, w_image: 0.5, bias: 0.0 })
    }

    /// Logistic regression of `genuine` on the z-scored scores (Newton's method, classes
    /// weighted equally, a little L2 so separable data still converges).
    pub fn fit_logistic(dynamic: &[f32], image: &[f32], genuine: &[bool]) -> Result<Self, FusionError> {
        if dynamic.len() != image.len() || dynamic.len() != genuine.len() {
            return Err(FusionError::LengthMismatch {
                dynamic: dynamic.len(),
                image: image.len(),
                labels: genuine.len(),
            });
        }
        let (ds, is) = stats(dynamic, image)?;
        let positives = genuine.iter().filter(|&&g| g).count();
        if positives == 0 || positives == genuine.len() {
            return Err(FusionError::OneClass);
        }
        let (wp, wn) = (0.5 / positives as f64, 0.5 / (genuine.len() - positives) as f64);
        let rows: Vec<([f64; 3], f64, f64)> = dynamic
            .iter()
            .zip(image)
            .zip(genuine)
            .filter(|((d, i), _)| d.is_finite() && i.is_finite())
            .map(|((&d, &i), &g)| {
                ([1.0, f64::from(ds.z(d)), f64::from(is.z(i))], if g { 1.0 } else { 0.0 }, if g { wp } else { wn })
            })
            .collect();
        const L2: f64 = 1e-3;
        let mut w = [0.0f64; 3];
        for _ in 0..50 {
            let mut grad = [0.0f64; 3];
            let mut hess = [[0.0f64; 3]; 3];
            for (x, y, weight) in &rows {
                let z: f64 = (0..3).map(|k| w[k] * x[k]).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                for a in 0..3 {
                    grad[a] += weight * (p - y) * x[a];
                    for b in 0..3 {
                        hess[a][b] += weight * p * (1.0 - p) * x[a] * x[b];
                    }
                }
            }
            for k in 1..3 {
                grad[k] += L2 * w[k];
                hess[k][k] += L2;
            }
            hess[0][0] += 1e-9;
            let Some(step) = solve3(hess, grad) else { break };
            for k in 0..3 {
                w[k] -= step[k];
            }
            if step.iter().map(|s| s.abs()).sum::<f64>() < 1e-9 {
                break;
            }
        }
        Ok(Self { dynamic: ds, image: is, w_dynamic: w[1] as f32, w_image: w[2] as f32, bias: w[0] as f32 })
    }

    /// The fused score (a logit): higher = more genuine.
    pub fn score(&self, dynamic: f32, image: f32) -> f32 {
        self.bias + self.w_dynamic * self.dynamic.z(dynamic) + self.w_image * self.image.z(image)
    }

    /// The fused score as a probability-like value in `(0, 1)` (calibrated only for a
    /// logistic fit, and only for the class balance it was fitted with: equal).
    pub fn probability(&self, dynamic: f32, image: f32) -> f32 {
        1.0 / (1.0 + (-self.score(dynamic, image)).exp())
    }
}

fn stats(dynamic: &[f32], image: &[f32]) -> Result<(ScoreStats, ScoreStats), FusionError> {
    let d = ScoreStats::of(dynamic).ok_or(FusionError::Degenerate { which: "dynamic" })?;
    let i = ScoreStats::of(image).ok_or(FusionError::Degenerate { which: "image" })?;
    Ok((d, i))
}

/// Solves a 3x3 system by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() < 1e-15 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..3 {
            let f = a[r][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::eer;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Genuine and impostor scores on different scales, each view noisy on its own.
    fn data() -> (Vec<f32>, Vec<f32>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut d, mut i, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..2000 {
            let genuine = k % 3 == 0;
            let shift = if genuine { 1.0 } else { 0.0 };
            d.push(0.3 + 0.1 * shift + 0.15 * rng.random::<f32>());
            i.push(0.5 + 0.2 * shift + 0.35 * rng.random::<f32>());
            g.push(genuine);
        }
        (d, i, g)
    }

    fn split(s: &[f32], g: &[bool]) -> (Vec<f32>, Vec<f32>) {
        let pos = s.iter().zip(g).filter(|(_, g)| **g).map(|(s, _)| *s).collect();
        let neg = s.iter().zip(g).filter(|(_, g)| !**g).map(|(s, _)| *s).collect();
        (pos, neg)
    }

    #[test]
    fn logistic_fusion_beats_either_score() {
        let (d, i, g) = data();
        let fusion = Fusion::fit_logistic(&d, &i, &g).expect("fit");
        assert!(fusion.w_dynamic > 0.0 && fusion.w_image > 0.0, "{fusion:?}");
        // The dynamic score separates better here, so it weighs more.
        assert!(fusion.w_dynamic > fusion.w_image, "{fusion:?}");
        let fused: Vec<f32> = d.iter().zip(&i).map(|(&a, &b)| fusion.score(a, b)).collect();
        let e = |s: &[f32]| {
            let (p, n) = split(s, &g);
            eer(&p, &n).eer
        };
        assert!(e(&fused) < e(&d) && e(&fused) < e(&i), "{} {} {}", e(&fused), e(&d), e(&i));
        let p = fusion.probability(0.5, 0.9);
        assert!(p > 0.5 && p < 1.0);
    }

    #[test]
    fn z_sum_is_equal_weights() {
        let (d, i, _) = data();
        let f = Fusion::z_sum(&d, &i).expect("fit");
        assert_eq!((f.w_dynamic, f.w_image, f.bias), (0.5, 0.5, 0.0));
        assert!(f.score(f.dynamic.mean, f.image.mean).abs() < 1e-6);
        assert!(f.score(f.dynamic.mean + f.dynamic.std, f.image.mean) > 0.49);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(
            Fusion::fit_logistic(&[1.0, 2.0], &[1.0], &[true, false]),
            Err(FusionError::LengthMismatch { .. })
        ));
        assert_eq!(Fusion::z_sum(&[1.0, 1.0], &[0.0, 1.0]), Err(FusionError::Degenerate { which: "dynamic" }));
        assert_eq!(Fusion::fit_logistic(&[0.0, 1.0], &[0.0, 1.0], &[true, true]), Err(FusionError::OneClass));
    }
}
