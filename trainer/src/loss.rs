//! The three metric-learning losses: contrastive (margin), BCE on the pair head, and triplet with
//! in-batch hard or semi-hard mining.
//!
//! Conventions shared by all of them:
//! - distances are Euclidean, `sqrt(sum((a-b)²) + eps)`; the `eps` keeps the gradient finite
//!   when two embeddings coincide;
//! - a *positive* of an anchor is another **genuine** image of the same writer; a *negative* is
//!   anything else: another writer's image, or a skilled forgery of the anchor's own writer.
//!   Forgeries are never anchors and never positives.
//!
//! Triplet mining is a selection, not a differentiable operation, so it runs on the host over the
//! distance matrix (N×N floats, tiny) and the loss then gathers the chosen distances from the
//! differentiable matrix.

use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

/// Added under square roots of squared distances.
pub const DISTANCE_EPS: f64 = 1e-12;

/// Which negatives the triplet loss picks for each anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mining {
    /// Batch-hard (Hermans et al. 2017): per anchor, the farthest positive and the closest
    /// negative; one triplet per anchor.
    Hard,
    /// FaceNet semi-hard (Schroff et al. 2015), as TensorFlow Addons defines it: for every
    /// anchor-positive pair, the closest negative that is still farther than the positive; if
    /// none is, the farthest negative.
    SemiHard,
}

/// `sqrt(sum((a-b)², dim 1) + eps)` for row pairs: `[P, d] x [P, d] -> [P]`.
pub fn pair_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [pairs, _] = a.dims();
    let diff = a - b;
    (diff.clone() * diff).sum_dim(1).add_scalar(DISTANCE_EPS).sqrt().reshape([pairs])
}

/// Contrastive loss (Hadsell, Chopra, LeCun 2006) on pair distances `d`, averaged over pairs:
/// `mean( y·d² + (1-y)·max(0, margin - d)² )` with `y = 1` for same-writer genuine pairs.
pub fn contrastive_loss(a: Tensor<2>, b: Tensor<2>, same: Tensor<1>, margin: f32) -> Tensor<1> {
    let distance = pair_distances(a, b);
    let positive = same.clone() * distance.clone() * distance.clone();
    let gap = relu(distance.neg().add_scalar(margin));
    let negative = same.neg().add_scalar(1.0) * gap.clone() * gap;
    (positive + negative).mean()
}

/// Binary cross-entropy on logits, averaged: `mean( softplus(z) - y·z )`, computed as
/// `max(z, 0) - y·z + ln(1 + exp(-|z|))` so it never overflows.
pub fn bce_with_logits(logits: Tensor<1>, targets: Tensor<1>) -> Tensor<1> {
    let softplus = relu(logits.clone()) + logits.clone().abs().neg().exp().log1p();
    (softplus - targets * logits).mean()
}

/// Euclidean distance matrix of the rows of `x`: `[N, d] -> [N, N]`.
pub fn pairwise_distances(x: Tensor<2>) -> Tensor<2> {
    let squared = (x.clone() * x.clone()).sum_dim(1); // [N, 1]
    let gram = x.clone().matmul(x.transpose()); // [N, N]
    let d2 = squared.clone() + squared.transpose() - gram.mul_scalar(2.0);
    d2.clamp_min(0.0).add_scalar(DISTANCE_EPS).sqrt()
}

/// One mined triplet: indices of anchor, positive and negative within the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    pub anchor: usize,
    pub positive: usize,
    pub negative: usize,
}

/// Writer identity and genuine/forged flag of every image of a batch, index-aligned.
#[derive(Debug, Clone, Copy)]
pub struct BatchLabels<'a> {
    pub writers: &'a [usize],
    pub forged: &'a [bool],
}

impl BatchLabels<'_> {
    fn len(&self) -> usize {
        self.writers.len()
    }

    /// `j` is a positive of anchor `i`: another genuine image of the same writer.
    fn is_positive(&self, i: usize, j: usize) -> bool {
        i != j && !self.forged[i] && !self.forged[j] && self.writers[i] == self.writers[j]
    }

    /// `j` is a negative of anchor `i`: another writer, or a forgery of `i`'s writer.
    fn is_negative(&self, i: usize, j: usize) -> bool {
        self.writers[i] != self.writers[j] || self.forged[j]
    }
}

/// Chooses triplets from a row-major `n×n` distance matrix (see [`Mining`]).
///
/// Anchors are genuine images that have at least one positive and one negative in the batch.
pub fn mine_triplets(distances: &[f32], labels: BatchLabels<'_>, mining: Mining) -> Vec<Triplet> {
    let n = labels.len();
    debug_assert_eq!(distances.len(), n * n);
    let d = |i: usize, j: usize| distances[i * n + j];
    let mut triplets = Vec::new();
    for anchor in 0..n {
        if labels.forged[anchor] {
            continue;
        }
        let positives: Vec<usize> = (0..n).filter(|&j| labels.is_positive(anchor, j)).collect();
        let negatives: Vec<usize> = (0..n).filter(|&j| labels.is_negative(anchor, j)).collect();
        if positives.is_empty() || negatives.is_empty() {
            continue;
        }
        // Ties break towards the lower index, so mining is deterministic.
        let closest = |candidates: &mut dyn Iterator<Item = usize>| {
            candidates.min_by(|&a, &b| d(anchor, a).total_cmp(&d(anchor, b)).then(a.cmp(&b)))
        };
        let farthest = |candidates: &mut dyn Iterator<Item = usize>| {
            candidates.max_by(|&a, &b| d(anchor, a).total_cmp(&d(anchor, b)).then(b.cmp(&a)))
        };
        match mining {
            Mining::Hard => {
                if let (Some(positive), Some(negative)) =
                    (farthest(&mut positives.iter().copied()), closest(&mut negatives.iter().copied()))
                {
                    triplets.push(Triplet { anchor, positive, negative });
                }
            }
            Mining::SemiHard => {
                for &positive in &positives {
                    let d_ap = d(anchor, positive);
                    let negative = closest(&mut negatives.iter().copied().filter(|&k| d(anchor, k) > d_ap))
                        .or_else(|| farthest(&mut negatives.iter().copied()));
                    if let Some(negative) = negative {
                        triplets.push(Triplet { anchor, positive, negative });
                    }
                }
            }
        }
    }
    triplets
}

/// A triplet loss value with what the mining found.
#[derive(Debug, Clone)]
pub struct TripletLoss {
    /// `mean( max(0, d(a,p) - d(a,n) + margin) )` over the mined triplets, shape `[1]`.
    pub loss: Tensor<1>,
    /// Number of mined triplets.
    pub triplets: usize,
}

/// Triplet loss with in-batch mining over `embeddings` (`[N, d]`).
///
/// Returns `None` when the batch holds no valid triplet (no writer with two genuine images, or a
/// single writer without forgeries): the caller skips such a batch.
pub fn triplet_loss(
    embeddings: Tensor<2>,
    labels: BatchLabels<'_>,
    margin: f32,
    mining: Mining,
) -> Option<TripletLoss> {
    let [n, _] = embeddings.dims();
    assert_eq!(n, labels.len(), "one label per embedding");
    assert_eq!(n, labels.forged.len(), "one forged flag per embedding");
    let distances = pairwise_distances(embeddings);
    let host: Vec<f32> = distances.clone().detach().try_into_vec_as::<f32>().ok()?;
    let triplets = mine_triplets(&host, labels, mining);
    if triplets.is_empty() {
        return None;
    }
    let device = distances.device();
    let flat = distances.reshape([n * n]);
    let index = |pick: fn(&Triplet) -> usize| -> Tensor<1, Int> {
        let idx: Vec<i64> = triplets.iter().map(|t| (t.anchor * n + pick(t)) as i64).collect();
        let len = idx.len();
        Tensor::from_data(TensorData::new(idx, [len]), &device)
    };
    let d_ap = flat.clone().select(0, index(|t| t.positive));
    let d_an = flat.select(0, index(|t| t.negative));
    let loss = relu((d_ap - d_an).add_scalar(margin)).mean();
    Some(TripletLoss { loss, triplets: triplets.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    fn close(actual: f32, expected: f32) {
        assert!((actual - expected).abs() < 1e-5, "expected {expected}, got {actual}");
    }

    #[test]
    fn contrastive_matches_hand_computation() {
        let dev = device();
        // Pair 0: distance 5 (3-4-5), same writer      -> 25
        // Pair 1: distance 1, different, margin 2      -> (2-1)² = 1
        // Pair 2: distance 5, different, beyond margin -> 0
        let a = Tensor::<2>::from_floats([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], &dev);
        let b = Tensor::<2>::from_floats([[3.0, 4.0], [0.0, 0.0], [3.0, 4.0]], &dev);
        let same = Tensor::<1>::from_floats([1.0, 0.0, 0.0], &dev);
        close(scalar(contrastive_loss(a, b, same, 2.0)), 26.0 / 3.0);
    }

    #[test]
    fn contrastive_is_zero_for_identical_positives() {
        let dev = device();
        let a = Tensor::<2>::from_floats([[0.6, 0.8]], &dev);
        let same = Tensor::<1>::from_floats([1.0], &dev);
        close(scalar(contrastive_loss(a.clone(), a, same, 1.0)), 0.0);
    }

    #[test]
    fn bce_matches_hand_computation() {
        let dev = device();
        // z = 0, y = 1: ln 2.  z = 2, y = 0: ln(1+e²) = 2.126928.  z = -3, y = 0: ln(1+e⁻³) = 0.048587.
        let logits = Tensor::<1>::from_floats([0.0, 2.0, -3.0], &dev);
        let targets = Tensor::<1>::from_floats([1.0, 0.0, 0.0], &dev);
        let expected = (2f32.ln() + (1.0 + 2f32.exp()).ln() + (1.0 + (-3f32).exp()).ln()) / 3.0;
        close(scalar(bce_with_logits(logits, targets)), expected);
        // The three terms by hand: ln 2, ln(1 + e^2), ln(1 + e^-3).
        close(expected, (std::f32::consts::LN_2 + 2.126_928 + 0.048_587) / 3.0);
    }

    #[test]
    fn bce_does_not_overflow_on_large_logits() {
        let dev = device();
        let logits = Tensor::<1>::from_floats([100.0, -100.0], &dev);
        let targets = Tensor::<1>::from_floats([0.0, 1.0], &dev);
        close(scalar(bce_with_logits(logits, targets)), 100.0);
    }

    #[test]
    fn pairwise_distances_are_euclidean() {
        let dev = device();
        let x = Tensor::<2>::from_floats([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], &dev);
        let d: Vec<f32> = pairwise_distances(x).try_into_vec_as::<f32>().expect("f32");
        let expected = [0.0, 5.0, 1.0, 5.0, 0.0, 18f32.sqrt(), 1.0, 18f32.sqrt(), 0.0];
        for (a, e) in d.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{d:?}");
        }
    }

    /// Points on a line: writer 0 genuine at x=0 and x=1, writer 0's forgery at x=0.5,
    /// writer 1 genuine at x=3 and x=2.
    fn line_batch() -> (Vec<[f32; 1]>, Vec<usize>, Vec<bool>) {
        (vec![[0.0], [1.0], [0.5], [3.0], [2.0]], vec![0, 0, 0, 1, 1], vec![false, false, true, false, false])
    }

    fn host_distances(points: &[[f32; 1]]) -> Vec<f32> {
        points.iter().flat_map(|a| points.iter().map(move |b| (a[0] - b[0]).abs())).collect()
    }

    #[test]
    fn forgeries_are_never_anchors_or_positives() {
        let (points, writers, forged) = line_batch();
        let labels = BatchLabels { writers: &writers, forged: &forged };
        for mining in [Mining::Hard, Mining::SemiHard] {
            for t in mine_triplets(&host_distances(&points), labels, mining) {
                assert!(!forged[t.anchor] && !forged[t.positive]);
                assert_eq!(writers[t.anchor], writers[t.positive]);
                assert_ne!(t.anchor, t.positive);
            }
        }
    }

    #[test]
    fn hard_mining_picks_farthest_positive_and_closest_negative() {
        let (points, writers, forged) = line_batch();
        let labels = BatchLabels { writers: &writers, forged: &forged };
        let triplets = mine_triplets(&host_distances(&points), labels, Mining::Hard);
        let t = |anchor, positive, negative| Triplet { anchor, positive, negative };
        // anchor 0 (x=0): positive 1 (d 1); negatives 2 (0.5), 3 (3), 4 (2) -> forgery 2.
        // anchor 1 (x=1): positive 0 (d 1); negatives 2 (0.5), 3 (2), 4 (1) -> 2.
        // anchor 3 (x=3): positive 4 (d 1); negatives 0 (3), 1 (2), 2 (2.5) -> 1.
        // anchor 4 (x=2): positive 3 (d 1); negatives 0 (2), 1 (1), 2 (1.5) -> 1.
        assert_eq!(triplets, vec![t(0, 1, 2), t(1, 0, 2), t(3, 4, 1), t(4, 3, 1)]);
    }

    #[test]
    fn semi_hard_mining_picks_closest_negative_beyond_the_positive() {
        let (points, writers, forged) = line_batch();
        let labels = BatchLabels { writers: &writers, forged: &forged };
        let triplets = mine_triplets(&host_distances(&points), labels, Mining::SemiHard);
        let t = |anchor, positive, negative| Triplet { anchor, positive, negative };
        // anchor 0: d_ap 1; negatives farther than 1: 3 (3), 4 (2) -> 4.
        // anchor 1: d_ap 1; farther than 1: 3 (2) -> 3 (4 is at exactly 1, not beyond).
        // anchor 3: d_ap 1; farther: 0 (3), 1 (2), 2 (2.5) -> 1.
        // anchor 4: d_ap 1; farther: 0 (2), 2 (1.5) -> 2.
        assert_eq!(triplets, vec![t(0, 1, 4), t(1, 0, 3), t(3, 4, 1), t(4, 3, 2)]);
    }

    #[test]
    fn semi_hard_falls_back_to_the_farthest_negative() {
        // Writer 0 at 0 and 10; writer 1 at 1 and 2: nothing is beyond d_ap = 10 for anchor 0.
        let points = [[0.0], [10.0], [1.0], [2.0]];
        let writers = [0, 0, 1, 1];
        let forged = [false; 4];
        let labels = BatchLabels { writers: &writers, forged: &forged };
        let triplets = mine_triplets(&host_distances(&points), labels, Mining::SemiHard);
        assert_eq!(triplets[0], Triplet { anchor: 0, positive: 1, negative: 3 });
    }

    #[test]
    fn triplet_loss_matches_hand_computation() {
        let dev = device();
        let (points, writers, forged) = line_batch();
        let x = Tensor::<2>::from_floats(
            [[points[0][0], 0.0], [points[1][0], 0.0], [points[2][0], 0.0], [points[3][0], 0.0], [points[4][0], 0.0]],
            &dev,
        );
        let labels = BatchLabels { writers: &writers, forged: &forged };
        // Hard triplets (see above), margin 1:
        // (0,1,2): 1 - 0.5 + 1 = 1.5 ; (1,0,2): 1.5 ; (3,4,1): 1 - 2 + 1 = 0 ; (4,3,1): 1 - 1 + 1 = 1
        let hard = triplet_loss(x.clone(), labels, 1.0, Mining::Hard).expect("has triplets");
        assert_eq!(hard.triplets, 4);
        close(scalar(hard.loss), (1.5 + 1.5 + 0.0 + 1.0) / 4.0);
        // Semi-hard, margin 1: (0,1,4): 1-2+1 = 0 ; (1,0,3): 0 ; (3,4,1): 0 ; (4,3,2): 1-1.5+1 = 0.5
        let semi = triplet_loss(x, labels, 1.0, Mining::SemiHard).expect("has triplets");
        close(scalar(semi.loss), 0.5 / 4.0);
    }

    #[test]
    fn triplet_loss_is_none_without_positives() {
        let dev = device();
        let x = Tensor::<2>::from_floats([[0.0], [1.0]], &dev);
        let labels = BatchLabels { writers: &[0, 1], forged: &[false, false] };
        assert!(triplet_loss(x, labels, 1.0, Mining::Hard).is_none());
    }

    #[test]
    fn triplet_loss_has_finite_gradients_with_coincident_embeddings() {
        let dev = device().autodiff();
        let x = Tensor::<2>::from_floats([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], &dev).require_grad();
        let labels = BatchLabels { writers: &[0, 0, 1], forged: &[false, false, false] };
        let loss = triplet_loss(x.clone(), labels, 0.5, Mining::Hard).expect("has triplets");
        let grads = loss.loss.backward();
        let g: Vec<f32> = x.grad(&grads).expect("grad").try_into_vec_as::<f32>().expect("f32");
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }
}
