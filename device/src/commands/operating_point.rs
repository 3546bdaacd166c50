//! Which calibrated threshold a decision uses: `--against skilled|random` picks the calibration
//! (forgeries of the writer, or other writers' signatures), `--far` the point on it, and
//! `--threshold` overrides both.

use std::fmt;

use autograph_shared::protocol::{OperatingThresholds, Thresholds};
use serde::Serialize;

use super::CommandError;

/// The kind of impostor a threshold was calibrated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    /// Skilled forgeries of the claimed writer.
    Skilled,
    /// Genuine signatures of other writers.
    Random,
}

/// A point on the calibration curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Point {
    /// Equal error rate (the default).
    #[default]
    Eer,
    /// False-accept rate 1%.
    #[serde(rename = "far_1pct")]
    Far1pct,
    /// False-accept rate 0.1%.
    #[serde(rename = "far_0_1pct")]
    Far0_1pct,
    /// The bundle's adaptive rule where, on validation writers, it accepts forgeries as often
    /// as the nearest-reference rule does at its EER point: more genuine signatures accepted
    /// (on new writers, sometimes more forgeries too). For the nearest rule itself this is its
    /// EER point.
    NearestEerFar,
    /// `--threshold` given by the operator.
    Manual,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Point::Eer => "EER point",
            Point::Far1pct => "FAR 1% point",
            Point::Far0_1pct => "FAR 0.1% point",
            Point::NearestEerFar => "nearest rule's FAR point",
            Point::Manual => "manual threshold",
        })
    }
}

/// `--far`, `--threshold`, `--against`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatingPointArgs {
    /// Calibrated point to decide at: `eer` (false accepts = false rejects, the default),
    /// `nearest-eer` (the bundle's writer-adaptive rule where, on validation writers, it
    /// accepts forgeries as often as the nearest-reference rule does at its EER point: more
    /// genuine signatures accepted, and on new writers sometimes more forgeries too; see the
    /// README), or a false-accept rate, 0.01 or 0.001.
    #[arg(long, value_parser = parse_far, conflicts_with = "threshold")]
    pub far: Option<Point>,
    /// Decide at this score instead of a calibrated threshold (in the units of the rule that
    /// decides: a similarity for the nearest rule, a normalised score or log-odds for the
    /// bundle's adaptive rule; see "rule" in --json).
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// Calibration to use [default: skilled when the bundle has it, else random;
    /// identify: random].
    #[arg(long, value_enum)]
    pub against: Option<Against>,
}

fn parse_far(s: &str) -> Result<Point, String> {
    match (s.trim(), s.trim().parse::<f64>()) {
        ("eer", _) => Ok(Point::Eer),
        ("nearest-eer", _) => Ok(Point::NearestEerFar),
        (_, Ok(v)) if (v - 0.01).abs() < 1e-12 => Ok(Point::Far1pct),
        (_, Ok(v)) if (v - 0.001).abs() < 1e-12 => Ok(Point::Far0_1pct),
        _ => Err("the bundle is calibrated at eer, nearest-eer, and FAR 0.01 and 0.001; use one of those".into()),
    }
}

/// The threshold a decision is made with, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// `None` for a manual threshold.
    pub against: Option<Against>,
    pub point: Point,
    pub threshold: f32,
}

impl fmt::Display for OperatingPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.against {
            Some(a) => write!(f, "{:.4} ({}, {} forgeries)", self.threshold, self.point, serde_name(a)),
            None => write!(f, "{:.4} ({})", self.threshold, self.point),
        }
    }
}

fn serde_name(a: Against) -> &'static str {
    match a {
        Against::Skilled => "skilled",
        Against::Random => "random",
    }
}

impl OperatingPointArgs {
    /// Picks the threshold. `default` is the calibration used when `--against` is not given and
    /// the bundle has it (verify: skilled; identify: random).
    pub fn resolve(&self, thresholds: &Thresholds, default: Against) -> Result<OperatingPoint, CommandError> {
        if let Some(threshold) = self.threshold {
            if !threshold.is_finite() {
                return Err(CommandError::Usage(format!("--threshold {threshold} is not a number")));
            }
            return Ok(OperatingPoint { against: None, point: Point::Manual, threshold });
        }
        let (against, table): (Against, OperatingThresholds) = match (self.against, thresholds.skilled) {
            (Some(Against::Skilled), None) => {
                return Err(CommandError::Usage(
                    "--against skilled: the bundle has no skilled-forgery calibration (its data set has no \
                     forgeries); use --against random"
                        .into(),
                ));
            }
            (Some(Against::Skilled), Some(t)) => (Against::Skilled, t),
            (Some(Against::Random), _) => (Against::Random, thresholds.random),
            (None, Some(t)) if default == Against::Skilled => (Against::Skilled, t),
            (None, _) => (Against::Random, thresholds.random),
        };
        let point = self.far.unwrap_or(Point::Eer);
        let threshold = match point {
            Point::Far1pct => table.far_1pct,
            Point::Far0_1pct => table.far_0_1pct,
            Point::NearestEerFar => table.nearest_eer_far.ok_or_else(|| {
                CommandError::Usage(
                    "--far nearest-eer: the bundle has no threshold at the nearest rule's false-accept rate for this \
                     score (it was exported before that point was calibrated, or the score is not a \
                     writer-adaptive rule's); re-export the bundle or use --far eer"
                        .into(),
                )
            })?,
            Point::Eer | Point::Manual => table.eer,
        };
        Ok(OperatingPoint { against: Some(against), point, threshold })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKILLED: OperatingThresholds =
        OperatingThresholds { eer: 0.7, far_1pct: 0.8, far_0_1pct: 0.9, nearest_eer_far: None };
    const RANDOM: OperatingThresholds =
        OperatingThresholds { eer: 0.4, far_1pct: 0.5, far_0_1pct: 0.6, nearest_eer_far: None };

    fn args(far: Option<Point>, threshold: Option<f32>, against: Option<Against>) -> OperatingPointArgs {
        OperatingPointArgs { far, threshold, against }
    }

    #[test]
    fn picks_calibrated_points() {
        let both = Thresholds { skilled: Some(SKILLED), random: RANDOM };
        let random_only = Thresholds { skilled: None, random: RANDOM };
        let r = |a: OperatingPointArgs, t: &Thresholds, d| a.resolve(t, d).map(|p| (p.against, p.point, p.threshold));
        assert_eq!(
            r(args(None, None, None), &both, Against::Skilled).ok(),
            Some((Some(Against::Skilled), Point::Eer, 0.7))
        );
        assert_eq!(
            r(args(None, None, None), &both, Against::Random).ok(),
            Some((Some(Against::Random), Point::Eer, 0.4))
        );
        assert_eq!(
            r(args(None, None, None), &random_only, Against::Skilled).ok(),
            Some((Some(Against::Random), Point::Eer, 0.4))
        );
        assert_eq!(
            r(args(Some(Point::Far0_1pct), None, Some(Against::Random)), &both, Against::Skilled).ok(),
            Some((Some(Against::Random), Point::Far0_1pct, 0.6))
        );
        assert_eq!(r(args(Some(Point::Far1pct), None, None), &both, Against::Skilled).ok().map(|p| p.2), Some(0.8));
        assert_eq!(r(args(None, Some(0.33), None), &both, Against::Skilled).ok(), Some((None, Point::Manual, 0.33)));
        assert!(args(None, None, Some(Against::Skilled)).resolve(&random_only, Against::Skilled).is_err());
        assert!(args(None, Some(f32::NAN), None).resolve(&both, Against::Skilled).is_err());
    }

    #[test]
    fn the_nearest_eer_point_is_picked_on_request() {
        let adaptive = OperatingThresholds { nearest_eer_far: Some(0.75), ..SKILLED };
        let both = Thresholds { skilled: Some(adaptive), random: RANDOM };
        let r = |a: OperatingPointArgs| a.resolve(&both, Against::Skilled).map(|p| (p.point, p.threshold)).ok();
        assert_eq!(r(args(None, None, None)), Some((Point::Eer, 0.7)));
        assert_eq!(r(args(Some(Point::Eer), None, None)), Some((Point::Eer, 0.7)));
        assert_eq!(r(args(Some(Point::NearestEerFar), None, None)), Some((Point::NearestEerFar, 0.75)));
        // The random table was not calibrated there: asking for the point is an error that
        // says what to do.
        let err = args(Some(Point::NearestEerFar), None, Some(Against::Random)).resolve(&both, Against::Skilled);
        assert!(matches!(err, Err(CommandError::Usage(m)) if m.contains("--far eer")));
    }

    #[test]
    fn far_values() {
        assert_eq!(parse_far("eer"), Ok(Point::Eer));
        assert_eq!(parse_far("nearest-eer"), Ok(Point::NearestEerFar));
        assert_eq!(parse_far("0.01"), Ok(Point::Far1pct));
        assert_eq!(parse_far("1e-3"), Ok(Point::Far0_1pct));
        assert!(parse_far("0.05").is_err());
        assert!(parse_far("x").is_err());
    }
}
