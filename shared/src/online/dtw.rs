//! Dynamic time warping between two feature sequences: the classic on-line signature matcher,
//! which needs no training and tolerates a writer's natural variation in rhythm.
//!
//! O(n·m) at most, less with a Sakoe-Chiba band around the (length-scaled) diagonal, which
//! also stops pathological warps (a genuine signature never maps its start onto its end).
//! Two rows of flat `f32` buffers, reused through [`DtwScratch`], so a verification allocates
//! nothing per reference.

use serde::Serialize;

use super::features::FeatureSequence;

/// Local cost between two feature vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Sum of absolute differences: robust to one feature's outlier.
    L1,
    Euclidean,
}

impl Metric {
    #[inline]
    fn cost(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L1 => a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum(),
            Metric::Euclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt(),
        }
    }
}

/// Reusable row buffers.
#[derive(Debug, Default, Clone)]
pub struct DtwScratch {
    cost: [Vec<f32>; 2],
    steps: [Vec<f32>; 2],
}

/// The DTW distance of `a` and `b`: the cheapest warping path's summed cost divided by its
/// number of steps (so long and short signatures score on one scale).
///
/// `band` is the Sakoe-Chiba half-width as a fraction of the longer length (`>= 1`: none); it
/// is widened when needed so the end stays reachable. Empty sequences, or sequences of
/// different dimension, are infinitely far apart.
pub fn dtw(a: &FeatureSequence, b: &FeatureSequence, band: f32, metric: Metric, scratch: &mut DtwScratch) -> f32 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 || a.dim() != b.dim() {
        return f32::INFINITY;
    }
    let longer = n.max(m);
    // The diagonal advances up to m/n columns a row; a narrower band could not connect.
    let slope = m.div_ceil(n).max(n.div_ceil(m));
    let radius = if band.is_finite() && band < 1.0 {
        ((f64::from(band.max(0.0)) * longer as f64).ceil() as usize).max(slope)
    } else {
        longer
    };
    let bounds = |i: usize| -> (usize, usize) {
        let centre = if n > 1 { (i as f64 * (m - 1) as f64 / (n - 1) as f64).round() as usize } else { 0 };
        (centre.saturating_sub(radius), (centre + radius).min(m - 1))
    };

    let [c0, c1] = &mut scratch.cost;
    let [s0, s1] = &mut scratch.steps;
    let (mut prev, mut cur, mut prev_steps, mut cur_steps) = (c0, c1, s0, s1);
    for buf in [&mut *prev, &mut *cur, &mut *prev_steps, &mut *cur_steps] {
        buf.clear();
        buf.resize(m, f32::INFINITY);
    }
    for i in 0..n {
        let (lo, hi) = bounds(i);
        let next_hi = if i + 1 < n { bounds(i + 1).1 } else { hi };
        // What the next row may read outside this row's band must be "unreachable".
        cur[lo.saturating_sub(1)..=hi.max(next_hi)].fill(f32::INFINITY);
        let ai = a.row(i);
        for j in lo..=hi {
            let d = metric.cost(ai, b.row(j));
            if i == 0 && j == 0 {
                cur[0] = d;
                cur_steps[0] = 1.0;
                continue;
            }
            // Diagonal first, so ties take the shorter path.
            let (mut best, mut steps) = if j > 0 { (prev[j - 1], prev_steps[j - 1]) } else { (f32::INFINITY, 0.0) };
            if prev[j] < best {
                (best, steps) = (prev[j], prev_steps[j]);
            }
            if j > 0 && cur[j - 1] < best {
                (best, steps) = (cur[j - 1], cur_steps[j - 1]);
            }
            cur[j] = best + d;
            cur_steps[j] = steps + 1.0;
        }
        std::mem::swap(&mut prev, &mut cur);
        std::mem::swap(&mut prev_steps, &mut cur_steps);
    }
    prev[m - 1] / prev_steps[m - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(values: &[f32]) -> FeatureSequence {
        FeatureSequence::new(1, values.to_vec()).expect("sequence")
    }

    /// Unbanded DTW by the textbook recurrence on a full matrix, for comparison.
    fn reference(a: &[f32], b: &[f32]) -> f32 {
        let (n, m) = (a.len(), b.len());
        let mut d = vec![vec![(f32::INFINITY, 0.0f32); m]; n];
        for i in 0..n {
            for j in 0..m {
                let c = (a[i] - b[j]).abs();
                if i == 0 && j == 0 {
                    d[i][j] = (c, 1.0);
                    continue;
                }
                let mut best = (f32::INFINITY, 0.0);
                for (pi, pj) in [(i.wrapping_sub(1), j.wrapping_sub(1)), (i.wrapping_sub(1), j), (i, j.wrapping_sub(1))]
                {
                    if pi < n && pj < m && d[pi][pj].0 < best.0 {
                        best = d[pi][pj];
                    }
                }
                d[i][j] = (best.0 + c, best.1 + 1.0);
            }
        }
        d[n - 1][m - 1].0 / d[n - 1][m - 1].1
    }

    #[test]
    fn identical_and_warped_sequences_are_close() {
        let mut s = DtwScratch::default();
        let a = seq(&[0.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(dtw(&a, &a, 0.1, Metric::L1, &mut s), 0.0);
        // The same shape at half speed: still a perfect match.
        let slow = seq(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0]);
        assert_eq!(dtw(&a, &slow, 1.0, Metric::L1, &mut s), 0.0);
        assert_eq!(dtw(&slow, &a, 0.1, Metric::L1, &mut s), 0.0);
        let other = seq(&[3.0, 2.0, 1.0, 0.0, 1.0, 2.0]);
        assert!(dtw(&a, &other, 1.0, Metric::L1, &mut s) > 0.5);
    }

    #[test]
    fn unbanded_matches_the_textbook_recurrence() {
        let mut s = DtwScratch::default();
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let b: Vec<f32> = (0..23).map(|i| (i as f32 * 0.55 + 0.3).sin() * 1.7).collect();
        let got = dtw(&seq(&a), &seq(&b), 1.0, Metric::L1, &mut s);
        assert!((got - reference(&a, &b)).abs() < 1e-5, "{got} vs {}", reference(&a, &b));
        // A band can only make the path dearer, and the narrowest band is still finite.
        let banded = dtw(&seq(&a), &seq(&b), 0.0, Metric::L1, &mut s);
        assert!(banded.is_finite() && banded >= got - 1e-6);
        assert!(dtw(&seq(&a), &seq(&b), 0.2, Metric::L1, &mut s) >= got - 1e-6);
    }

    #[test]
    fn metrics_and_degenerate_inputs() {
        let mut s = DtwScratch::default();
        let a = FeatureSequence::new(2, vec![0.0, 0.0]).expect("seq");
        let b = FeatureSequence::new(2, vec![3.0, 4.0]).expect("seq");
        assert_eq!(dtw(&a, &b, 1.0, Metric::Euclidean, &mut s), 5.0);
        assert_eq!(dtw(&a, &b, 1.0, Metric::L1, &mut s), 7.0);
        let empty = FeatureSequence::new(2, vec![]).expect("seq");
        assert_eq!(dtw(&a, &empty, 1.0, Metric::L1, &mut s), f32::INFINITY);
        assert_eq!(dtw(&a, &seq(&[1.0]), 1.0, Metric::L1, &mut s), f32::INFINITY);
        // One row against many: the path runs along the row.
        assert_eq!(dtw(&seq(&[1.0]), &seq(&[1.0, 2.0, 3.0]), 0.1, Metric::L1, &mut s), 1.0);
    }
}
