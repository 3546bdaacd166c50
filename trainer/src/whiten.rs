//! Within-writer whitening: a linear map fitted on the training writers' embeddings after
//! training and folded into the network's projection, so what ships is one network.
//!
//! The triplet loss leaves some directions of the embedding carrying mostly how a writer's own
//! signatures vary (pen, scan, size), and they weigh in a cosine as much as the directions that
//! tell writers apart. Whitening by the within-writer covariance `C_w` of the genuine signatures
//! (`x -> x·C_w^{-1/2}`, then the usual L2 normalisation) shrinks the first and stretches the
//! second, as the within-class whitening of LDA and WCCN does in speaker and face verification.
//! `C_w` is shrunk towards a multiple of the identity first (`C_w + λ·tr(C_w)/d·I`), so that
//! directions the training writers barely use are not blown up.
//!
//! Measured on the standard split's validation writers (docs/evaluation.md): skilled EER lower on
//! SVC2004 and CEDAR and random EER lower on all three sets. Whether a run keeps it is decided
//! on that run's validation writers ([`crate::train::finalise`]).

use anyhow::{Result, ensure};
use nalgebra::{DMatrix, SymmetricEigen};

/// λ: the share of the mean eigenvalue added to every eigenvalue of `C_w` (0.03-1.0 measured
/// alike on validation writers; 0.3 is in the middle of that range).
pub const SHRINKAGE: f64 = 0.3;

/// `(C_w + λ·tr(C_w)/d·I)^{-1/2}`, times the square root of that matrix's mean eigenvalue so
/// that an isotropic spread maps to the identity (the scale does not change a cosine; it keeps
/// the projection's outputs in the range they were trained in). Row-major `d×d`, symmetric.
///
/// `writers`: each training writer's genuine embeddings (all of dimension `d`); writers with
/// fewer than two are skipped (they have no within-writer spread).
pub fn within_writer_whitening(writers: &[Vec<Vec<f32>>], shrinkage: f64) -> Result<Whitening> {
    ensure!(shrinkage > 0.0 && shrinkage.is_finite(), "the whitening shrinkage must be a positive number");
    let d = writers.iter().flatten().map(Vec::len).next().unwrap_or(0);
    ensure!(d > 0, "no embeddings to fit the whitening on");
    let mut covariance = DMatrix::<f64>::zeros(d, d);
    let (mut used_writers, mut images) = (0usize, 0usize);
    for embeddings in writers.iter().filter(|e| e.len() >= 2) {
        ensure!(embeddings.iter().all(|e| e.len() == d), "embeddings of different dimensions");
        let mut mean = vec![0f64; d];
        for e in embeddings {
            for (m, &v) in mean.iter_mut().zip(e) {
                *m += f64::from(v) / embeddings.len() as f64;
            }
        }
        for e in embeddings {
            let r = nalgebra::DVector::from_iterator(d, e.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m));
            covariance += &r * r.transpose();
        }
        used_writers += 1;
        images += embeddings.len();
    }
    ensure!(used_writers > 0, "no writer has two genuine embeddings to measure within-writer spread");
    covariance /= images as f64;
    let floor = shrinkage * covariance.trace() / d as f64;
    ensure!(floor > 0.0, "the within-writer covariance is zero: every writer's embeddings coincide");
    let eigen = SymmetricEigen::new(covariance + DMatrix::identity(d, d) * floor);
    let mean_eigenvalue = eigen.eigenvalues.mean();
    let scale = eigen.eigenvalues.map(|v| (mean_eigenvalue / v.max(f64::MIN_POSITIVE)).sqrt());
    let matrix = &eigen.eigenvectors * DMatrix::from_diagonal(&scale) * eigen.eigenvectors.transpose();
    ensure!(matrix.iter().all(|v| v.is_finite()), "the whitening matrix is not finite");
    let row_major = (0..d).flat_map(|r| (0..d).map(move |c| (r, c))).map(|(r, c)| matrix[(r, c)] as f32).collect();
    Ok(Whitening { dimension: d, matrix: row_major, writers: used_writers, images })
}

/// A fitted whitening: the matrix and what it was fitted on.
#[derive(Debug, Clone, PartialEq)]
pub struct Whitening {
    pub dimension: usize,
    /// Row-major `dimension × dimension`.
    pub matrix: Vec<f32>,
    pub writers: usize,
    pub images: usize,
}

impl Whitening {
    /// `x·M` for one row vector.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.dimension;
        (0..d).map(|c| (0..d).map(|r| x[r] * self.matrix[r * d + c]).sum()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers in 2-D whose signatures lie ±2 from their mean along x and ±1 along y, four
    /// each: `C_w` = diag(2, 0.5) (population), so with shrinkage λ the matrix is
    /// diag(sqrt(m / (2 + f)), sqrt(m / (0.5 + f))), f = λ·(2 + 0.5)/2, m the mean of the two.
    #[test]
    fn known_answer_on_an_axis_aligned_spread() {
        let writer =
            |cx: f32, cy: f32| vec![vec![cx + 2.0, cy], vec![cx - 2.0, cy], vec![cx, cy + 1.0], vec![cx, cy - 1.0]];
        let writers = vec![writer(10.0, 0.0), writer(-5.0, 3.0), vec![vec![1.0, 1.0]]];
        let lambda = 0.5;
        let w = within_writer_whitening(&writers, lambda).expect("fit");
        assert_eq!((w.dimension, w.writers, w.images), (2, 2, 8), "the one-image writer is skipped");
        let (vx, vy) = (2.0f64, 0.5f64);
        let f = lambda * (vx + vy) / 2.0;
        let m = (vx + f + vy + f) / 2.0;
        let expected = [(m / (vx + f)).sqrt(), 0.0, 0.0, (m / (vy + f)).sqrt()];
        for (got, want) in w.matrix.iter().zip(expected) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{:?} vs {expected:?}", w.matrix);
        }
        // Whitened, the writers' spread is the same along both axes (up to the shrinkage).
        let spread = |axis: usize| -> f64 {
            writers[..2]
                .iter()
                .flat_map(|e| {
                    let white: Vec<Vec<f32>> = e.iter().map(|x| w.apply(x)).collect();
                    let mean: f32 = white.iter().map(|v| v[axis]).sum::<f32>() / white.len() as f32;
                    white.into_iter().map(move |v| f64::from((v[axis] - mean).powi(2)))
                })
                .sum()
        };
        let before = vx / vy;
        let after = spread(0) / spread(1);
        assert!(after < before && (after - (vx * (vy + f)) / (vy * (vx + f))).abs() < 1e-4, "{after}");
    }

    #[test]
    fn refuses_what_cannot_be_whitened() {
        assert!(within_writer_whitening(&[], 0.3).is_err());
        assert!(within_writer_whitening(&[vec![vec![1.0, 0.0]]], 0.3).is_err(), "no writer with two images");
        assert!(within_writer_whitening(&[vec![vec![1.0, 0.0], vec![1.0, 0.0]]], 0.3).is_err(), "no spread");
        let ok = vec![vec![vec![1.0, 0.0], vec![0.0, 1.0]]];
        assert!(within_writer_whitening(&ok, 0.0).is_err());
        assert!(within_writer_whitening(&ok, f64::NAN).is_err());
        assert!(within_writer_whitening(&[vec![vec![1.0, 0.0], vec![1.0]]], 0.3).is_err(), "mixed dimensions");
    }
}
