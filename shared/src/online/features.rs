//! Per-sample feature sequences for DTW, the function-based features of the on-line
//! literature (Kholmatov & Yanikoglu 2005; Fierrez-Aguilar et al. 2005): position, first
//! derivatives, speed, path-tangent direction, pressure and its derivative, acceleration.
//!
//! Every column is z-normalised per signature, so a signature written larger, faster or
//! harder than its references still lines up by shape and rhythm, and no feature's unit
//! outweighs another's in the distance.

use serde::{Serialize, Serializer};

use super::trajectory::Trajectory;

/// One feature; [`Feature::Direction`] takes two columns (cos, sin of the tangent angle: an
/// angle itself wraps and would make a distance jump at ±π).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    X,
    Y,
    Dx,
    Dy,
    Speed,
    Direction,
    Pressure,
    DPressure,
    Acceleration,
}

impl Feature {
    /// In column order.
    pub const ALL: [Feature; 9] = [
        Feature::X,
        Feature::Y,
        Feature::Dx,
        Feature::Dy,
        Feature::Speed,
        Feature::Direction,
        Feature::Pressure,
        Feature::DPressure,
        Feature::Acceleration,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn columns(self) -> usize {
        if self == Feature::Direction { 2 } else { 1 }
    }

    fn needs_pressure(self) -> bool {
        matches!(self, Feature::Pressure | Feature::DPressure)
    }
}

/// A set of features (a bit mask, so templates store it in two bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureSet(u16);

impl FeatureSet {
    /// Every feature.
    pub const ALL: FeatureSet = FeatureSet((1 << Feature::ALL.len()) - 1);

    pub fn of(features: &[Feature]) -> Self {
        Self(features.iter().fold(0, |m, f| m | f.bit()))
    }

    pub fn contains(self, f: Feature) -> bool {
        self.0 & f.bit() != 0
    }

    pub fn features(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |&f| self.contains(f))
    }

    /// Columns per sample.
    pub fn dim(self) -> usize {
        self.features().map(Feature::columns).sum()
    }

    pub fn needs_pressure(self) -> bool {
        self.features().any(Feature::needs_pressure)
    }

    /// The same set without the pressure features (for pens that do not measure pressure).
    pub fn without_pressure(self) -> Self {
        Self(self.0 & !(Feature::Pressure.bit() | Feature::DPressure.bit()))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    /// The set of a stored bit mask; `None` when it names features this build does not know.
    pub fn from_bits(bits: u16) -> Option<Self> {
        (bits & !Self::ALL.0 == 0).then_some(Self(bits))
    }
}

impl Serialize for FeatureSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.features())
    }
}

/// A feature sequence: `len` rows of `dim` columns, row-major in one flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSequence {
    dim: usize,
    data: Vec<f32>,
}

impl FeatureSequence {
    /// `data.len()` must be a multiple of `dim` (`dim > 0`); `None` otherwise.
    pub fn new(dim: usize, data: Vec<f32>) -> Option<Self> {
        (dim > 0 && data.len().is_multiple_of(dim)).then_some(Self { dim, data })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows (samples).
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
}

/// Why features could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    #[error("the features include pressure but this pen does not measure it")]
    PressureMissing,
    #[error("no features selected")]
    NoFeatures,
}

/// Computes `set` for `trajectory`, z-normalised per column, then averages groups of
/// `downsample` samples (or more, so that at most `max_len` rows remain: DTW time grows with
/// the product of the lengths, and 50 Hz still resolves handwriting).
pub fn extract(
    trajectory: &Trajectory,
    set: FeatureSet,
    downsample: usize,
    max_len: usize,
) -> Result<FeatureSequence, FeatureError> {
    if set.is_empty() {
        return Err(FeatureError::NoFeatures);
    }
    let pressure = match (set.needs_pressure(), trajectory.pressure()) {
        (true, None) => return Err(FeatureError::PressureMissing),
        (_, p) => p,
    };
    let n = trajectory.len();
    let strokes: Vec<std::ops::Range<usize>> = trajectory.strokes().collect();
    let (x, y) = (trajectory.x(), trajectory.y());
    let dx = derivative(x, &strokes);
    let dy = derivative(y, &strokes);
    let mut columns: Vec<Vec<f32>> = Vec::with_capacity(set.dim());
    for feature in set.features() {
        match feature {
            Feature::X => columns.push(x.to_vec()),
            Feature::Y => columns.push(y.to_vec()),
            Feature::Dx => columns.push(dx.clone()),
            Feature::Dy => columns.push(dy.clone()),
            Feature::Speed => columns.push(dx.iter().zip(&dy).map(|(a, b)| a.hypot(*b)).collect()),
            Feature::Direction => {
                let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
                let (mut c, mut s) = (1.0f32, 0.0f32);
                for (a, b) in dx.iter().zip(&dy) {
                    let v = a.hypot(*b);
                    // A resting pen keeps its last direction rather than jumping to 0 rad.
                    if v > 1e-6 {
                        (c, s) = (a / v, b / v);
                    }
                    cos.push(c);
                    sin.push(s);
                }
                columns.push(cos);
                columns.push(sin);
            }
            Feature::Pressure => columns.push(pressure.map(<[f32]>::to_vec).unwrap_or_default()),
            Feature::DPressure => columns.push(pressure.map(|p| derivative(p, &strokes)).unwrap_or_default()),
            Feature::Acceleration => {
                let (ddx, ddy) = (derivative(&dx, &strokes), derivative(&dy, &strokes));
                columns.push(ddx.iter().zip(&ddy).map(|(a, b)| a.hypot(*b)).collect());
            }
        }
    }
    for column in &mut columns {
        z_normalise(column);
    }
    let stride = downsample.max(1).max(n.div_ceil(max_len.max(1)));
    let rows = n.div_ceil(stride);
    let dim = columns.len();
    let mut data = vec![0f32; rows * dim];
    for r in 0..rows {
        let (lo, hi) = (r * stride, ((r + 1) * stride).min(n));
        let inv = 1.0 / (hi - lo) as f32;
        for (c, column) in columns.iter().enumerate() {
            data[r * dim + c] = column[lo..hi].iter().sum::<f32>() * inv;
        }
    }
    Ok(FeatureSequence { dim, data })
}

/// Regression derivative over ±2 samples (less noisy than a difference), per 10 ms, computed
/// within each stroke so a pen lift is not a jump.
fn derivative(v: &[f32], strokes: &[std::ops::Range<usize>]) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for stroke in strokes {
        let (a, b) = (stroke.start, stroke.end);
        for i in a..b {
            let at = |j: isize| v[(j.max(a as isize) as usize).min(b - 1)];
            let i = i as isize;
            let d = (at(i + 1) - at(i - 1)) + 2.0 * (at(i + 2) - at(i - 2));
            out[i as usize] = d / 10.0;
        }
    }
    out
}

/// Zero mean, unit standard deviation; a constant column becomes zeros (it carries nothing).
fn z_normalise(v: &mut [f32]) {
    if v.is_empty() {
        return;
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    let scale = if std > 1e-9 { 1.0 / std } else { 0.0 };
    for x in v {
        *x = ((f64::from(*x) - mean) * scale) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::trajectory::{PenSample, Timing};

    fn line(n: usize, pressure: bool) -> Trajectory {
        let stroke: Vec<PenSample> = (0..n)
            .map(|i| PenSample { x: i as f32 * 2.0, y: (i as f32 * 0.3).sin(), t_ms: i as f64 * 10.0, pressure: 0.5 })
            .collect();
        Trajectory::from_strokes(&[stroke], Timing::Timestamps, pressure).expect("trajectory")
    }

    #[test]
    fn sets_and_dimensions() {
        assert_eq!(FeatureSet::ALL.dim(), 10);
        assert!(FeatureSet::ALL.needs_pressure());
        assert!(!FeatureSet::ALL.without_pressure().needs_pressure());
        assert_eq!(FeatureSet::ALL.without_pressure().dim(), 8);
        let s = FeatureSet::of(&[Feature::X, Feature::Direction]);
        assert_eq!(s.dim(), 3);
        assert_eq!(FeatureSet::from_bits(s.bits()), Some(s));
        assert_eq!(FeatureSet::from_bits(1 << 15), None);
        assert_eq!(serde_json::to_string(&s).expect("json"), r#"["x","direction"]"#);
    }

    #[test]
    fn columns_are_z_normalised() {
        let f = extract(&line(50, true), FeatureSet::of(&[Feature::X, Feature::Y]), 1, 10_000).expect("features");
        assert_eq!((f.len(), f.dim()), (50, 2));
        for c in 0..2 {
            let col: Vec<f32> = (0..f.len()).map(|i| f.row(i)[c]).collect();
            let mean = col.iter().sum::<f32>() / 50.0;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 50.0;
            assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "column {c}: {mean} {var}");
        }
        // Constant pressure carries nothing: zeros, not NaN.
        let p = extract(&line(20, true), FeatureSet::of(&[Feature::Pressure]), 1, 10_000).expect("features");
        assert!(p.as_slice().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn derivative_is_exact_on_a_line_and_stays_in_its_stroke() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, 102.0, 104.0, 106.0, 108.0];
        let d = derivative(&v, &[0..5, 5..10]);
        assert!((d[2] - 1.0).abs() < 1e-6);
        assert!((d[7] - 2.0).abs() < 1e-6);
        // Near the lift the window is clamped to the stroke, never reaching 100.
        assert!(d[4] < 1.0 && d[5] < 2.0);
    }

    #[test]
    fn downsampling_and_length_cap() {
        let t = line(101, true);
        assert_eq!(extract(&t, FeatureSet::ALL, 2, 10_000).expect("features").len(), 51);
        assert_eq!(extract(&t, FeatureSet::ALL, 1, 30).expect("features").len(), 26);
        let f = extract(&t, FeatureSet::ALL, 1, 10_000).expect("features");
        assert_eq!(f.dim(), 10);
        assert!(f.as_slice().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn pressure_features_need_pressure() {
        let t = line(10, false);
        assert_eq!(extract(&t, FeatureSet::ALL, 1, 100), Err(FeatureError::PressureMissing));
        assert!(extract(&t, FeatureSet::ALL.without_pressure(), 1, 100).is_ok());
        assert_eq!(extract(&t, FeatureSet::of(&[]), 1, 100), Err(FeatureError::NoFeatures));
    }
}
