//! Verification metrics over similarity scores (higher = more alike; accept when
//! `score >= threshold`): FAR/FRR, ROC, EER, AUC, and thresholds at a target FAR.

use serde::{Deserialize, Serialize};

/// FAR and FRR at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub threshold: f32,
    /// Fraction of impostor scores accepted (`>= threshold`).
    pub far: f64,
    /// Fraction of genuine scores rejected (`< threshold`).
    pub frr: f64,
}

/// FAR and FRR of a fixed threshold.
pub fn rates_at(genuine: &[f32], impostor: &[f32], threshold: f32) -> OperatingPoint {
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let rejected = genuine.iter().filter(|&&s| s < threshold).count();
    let accepted = impostor.iter().filter(|&&s| s >= threshold).count();
    OperatingPoint { threshold, far: frac(accepted, impostor.len()), frr: frac(rejected, genuine.len()) }
}

/// Every distinct operating point, thresholds ascending (FAR falls, FRR rises).
pub fn roc(genuine: &[f32], impostor: &[f32]) -> Vec<OperatingPoint> {
    let mut thresholds: Vec<f32> = genuine.iter().chain(impostor).copied().filter(|s| s.is_finite()).collect();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let mut g = genuine.to_vec();
    let mut i = impostor.to_vec();
    g.sort_by(f32::total_cmp);
    i.sort_by(f32::total_cmp);
    let (ng, ni) = (g.len().max(1) as f64, i.len().max(1) as f64);
    let mut points = Vec::with_capacity(thresholds.len() + 1);
    for &t in &thresholds {
        let rejected = g.partition_point(|&s| s < t);
        let accepted = i.len() - i.partition_point(|&s| s < t);
        points.push(OperatingPoint { threshold: t, far: accepted as f64 / ni, frr: rejected as f64 / ng });
    }
    // Above every score: nothing accepted.
    let top = thresholds.last().map_or(1.0, |t| next_up(*t));
    points.push(OperatingPoint { threshold: top, far: 0.0, frr: if g.is_empty() { 0.0 } else { 1.0 } });
    points
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let next = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(next)
}

/// The equal error rate and the threshold where FAR and FRR cross.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Eer {
    pub eer: f64,
    pub threshold: f32,
}

/// Equal error rate: at the ROC point where |FAR − FRR| is smallest, their mean.
/// Empty inputs give `eer = NaN` rather than a flattering number.
pub fn eer(genuine: &[f32], impostor: &[f32]) -> Eer {
    if genuine.is_empty() || impostor.is_empty() {
        return Eer { eer: f64::NAN, threshold: f32::NAN };
    }
    let points = roc(genuine, impostor);
    let best = points
        .iter()
        .min_by(|a, b| (a.far - a.frr).abs().total_cmp(&(b.far - b.frr).abs()))
        .copied()
        .unwrap_or(OperatingPoint { threshold: f32::NAN, far: f64::NAN, frr: f64::NAN });
    Eer { eer: (best.far + best.frr) / 2.0, threshold: best.threshold }
}

/// The lowest threshold whose FAR on these impostor scores is at most `target_far`
/// (so FRR is as low as that FAR allows).
pub fn threshold_at_far(impostor: &[f32], target_far: f64) -> f32 {
    let mut i: Vec<f32> = impostor.iter().copied().filter(|s| s.is_finite()).collect();
    if i.is_empty() {
        return f32::NAN;
    }
    i.sort_by(f32::total_cmp);
    let allowed = (target_far * i.len() as f64).floor() as usize;
    // Accepting the `allowed` highest scores: threshold just above the next one down.
    let idx = i.len() - allowed; // first accepted index
    if idx == 0 {
        return i[0];
    }
    let below = i[idx - 1];
    if idx < i.len() && i[idx] > below { i[idx] } else { next_up(below) }
}

/// Area under the ROC curve: the probability that a genuine score beats an impostor score
/// (ties count half).
pub fn auc(genuine: &[f32], impostor: &[f32]) -> f64 {
    if genuine.is_empty() || impostor.is_empty() {
        return f64::NAN;
    }
    let mut i = impostor.to_vec();
    i.sort_by(f32::total_cmp);
    let mut wins = 0.0f64;
    for &g in genuine {
        let below = i.partition_point(|&s| s < g);
        let ties = i.partition_point(|&s| s <= g) - below;
        wins += below as f64 + ties as f64 / 2.0;
    }
    wins / (genuine.len() as f64 * impostor.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_scores_have_zero_eer_and_unit_auc() {
        let g = [0.9, 0.8, 0.85];
        let i = [0.1, 0.2, 0.3, 0.4];
        let e = eer(&g, &i);
        assert_eq!(e.eer, 0.0);
        assert!(e.threshold > 0.4 && e.threshold <= 0.8);
        assert_eq!(auc(&g, &i), 1.0);
    }

    #[test]
    fn hand_computed_eer() {
        // genuine 0.2,0.7,0.8,0.9 ; impostor 0.1,0.3,0.5,0.85
        // t=0.5: FRR 1/4, FAR 2/4; t=0.7: FRR 1/4 (0.2), FAR 1/4 (0.85) -> EER 0.25; t=0.8: FRR 2/4
        let g = [0.2, 0.7, 0.8, 0.9];
        let i = [0.1, 0.3, 0.5, 0.85];
        let e = eer(&g, &i);
        assert_eq!(e.eer, 0.25);
        assert_eq!(e.threshold, 0.7);
        let p = rates_at(&g, &i, 0.7);
        assert_eq!((p.far, p.frr), (0.25, 0.25));
        // AUC: pairs (g > i): 0.2>0.1 ; 0.7>3 ; 0.8>3 ; 0.9>4 = 11/16
        assert_eq!(auc(&g, &i), 11.0 / 16.0);
    }

    #[test]
    fn threshold_at_far_respects_the_target() {
        let impostor: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_at_far(&impostor, 0.01);
        let far = rates_at(&[], &impostor, t).far;
        assert!(far <= 0.01, "far {far}");
        assert!(far >= 0.009, "far {far} is needlessly strict");
        let t0 = threshold_at_far(&impostor, 0.0);
        assert_eq!(rates_at(&[], &impostor, t0).far, 0.0);
    }

    #[test]
    fn empty_inputs_are_nan_not_perfect() {
        assert!(eer(&[], &[0.5]).eer.is_nan());
        assert!(auc(&[0.5], &[]).is_nan());
    }

    #[test]
    fn roc_is_monotone() {
        let g = [0.5, 0.7, 0.7, 0.9];
        let i = [0.1, 0.5, 0.6];
        let r = roc(&g, &i);
        for w in r.windows(2) {
            assert!(w[0].far >= w[1].far && w[0].frr <= w[1].frr);
        }
        assert_eq!(r.last().map(|p| p.far), Some(0.0));
    }
}
