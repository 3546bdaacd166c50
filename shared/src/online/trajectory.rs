//! [`Trajectory`]: one signature's pen-down samples at a common 100 Hz, whatever recorded it.
//!
//! Tablets, data sets and the kiosk sample at different rates and some clocks jitter, so every
//! source is resampled to [`SAMPLE_RATE_HZ`] here, once; features and DTW then compare like
//! with like. Pen-up time is not kept as samples (hover positions are device-specific and
//! often missing) but stroke starts are, so derivatives never span a pen lift.

use std::ops::Range;

use crate::strokes::{Point, Recording, StrokeError};

/// The common sample rate: MCYT's and SVC2004's native rate, enough for handwriting (< 20 Hz).
pub const SAMPLE_RATE_HZ: f32 = 100.0;
/// Milliseconds between samples at [`SAMPLE_RATE_HZ`].
pub const SAMPLE_PERIOD_MS: f64 = 10.0;
/// Most samples one trajectory may hold after resampling (1000 s of writing): bounds memory
/// for any input, including a stroke whose timestamps span hours.
pub const MAX_SAMPLES: usize = 100_000;

/// One raw pen-down sample as a reader or the kiosk sees it, before resampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PenSample {
    pub x: f32,
    pub y: f32,
    /// Milliseconds on any clock that does not run backwards within a stroke.
    pub t_ms: f64,
    /// Pressure in `0..=1` (ignored when the source reports none).
    pub pressure: f32,
}

/// How far a source's timestamps can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Interpolate at 10 ms steps on the timestamps; samples whose time does not advance are
    /// dropped. A stroke whose time never advances is taken as sampled at 100 Hz.
    Timestamps,
    /// Samples are evenly spaced within each stroke and only the stroke's first and last
    /// timestamps give its duration: for coarse or jittery clocks (SVC2004 repeats and even
    /// reverses timestamps between consecutive samples).
    EvenWithinStroke,
}

/// A signature as pen-down samples at [`SAMPLE_RATE_HZ`], in the source's own units for x and
/// y (only shape matters: features are normalised per signature), pressure in `0..=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    x: Vec<f32>,
    y: Vec<f32>,
    pressure: Option<Vec<f32>>,
    /// Index of each stroke's first sample; `stroke_starts[0] == 0`, strictly increasing.
    stroke_starts: Vec<u32>,
}

/// Why samples could not become a trajectory. Stroke and sample indices count from 0.
#[derive(Debug, thiserror::Error)]
pub enum TrajectoryError {
    #[error("no pen-down samples")]
    Empty,
    #[error("at 100 Hz the signature would have {samples} samples, more than the limit of {MAX_SAMPLES}")]
    TooLong { samples: u64 },
    #[error("stroke {stroke} sample {sample}: a coordinate, time or pressure is not finite")]
    NotFinite { stroke: usize, sample: usize },
    #[error("stroke {stroke} sample {sample}: pressure {pressure} is not within 0..=1")]
    BadPressure { stroke: usize, sample: usize, pressure: f32 },
    #[error("stroke {stroke} sample {sample}: time goes back from {previous} ms to {t} ms")]
    TimeGoesBack { stroke: usize, sample: usize, t: f64, previous: f64 },
}

impl Trajectory {
    /// Resamples strokes of raw samples to 100 Hz. Empty strokes are skipped; `has_pressure`
    /// says whether the source measures pressure at all.
    pub fn from_strokes(
        strokes: &[Vec<PenSample>],
        timing: Timing,
        has_pressure: bool,
    ) -> Result<Self, TrajectoryError> {
        let mut plans = Vec::with_capacity(strokes.len());
        let mut total: u64 = 0;
        for (s, stroke) in strokes.iter().enumerate() {
            check_stroke(s, stroke, timing, has_pressure)?;
            if stroke.is_empty() {
                continue;
            }
            let plan = plan_stroke(stroke, timing);
            total = total.saturating_add(plan.count);
            // Checked before anything is allocated for the resampled samples.
            if total > MAX_SAMPLES as u64 {
                return Err(TrajectoryError::TooLong { samples: total });
            }
            plans.push((stroke, plan));
        }
        if total == 0 {
            return Err(TrajectoryError::Empty);
        }
        let n = total as usize;
        let mut out = Self {
            x: Vec::with_capacity(n),
            y: Vec::with_capacity(n),
            pressure: has_pressure.then(|| Vec::with_capacity(n)),
            stroke_starts: Vec::with_capacity(plans.len()),
        };
        for (stroke, plan) in plans {
            out.stroke_starts.push(out.x.len() as u32);
            out.push_resampled(stroke, &plan);
        }
        Ok(out)
    }

    fn push_resampled(&mut self, stroke: &[PenSample], plan: &StrokePlan) {
        let times = &plan.times;
        let mut seg = 0usize;
        for k in 0..plan.count {
            let t = k as f64 * SAMPLE_PERIOD_MS;
            while seg + 2 < times.len() && times[seg + 1] <= t {
                seg += 1;
            }
            let (a, b) = (stroke[plan.kept[seg]], stroke[plan.kept[(seg + 1).min(plan.kept.len() - 1)]]);
            let (ta, tb) = (times[seg], times[(seg + 1).min(times.len() - 1)]);
            let w = if tb > ta { ((t - ta) / (tb - ta)).clamp(0.0, 1.0) as f32 } else { 0.0 };
            let lerp = |u: f32, v: f32| u + (v - u) * w;
            self.x.push(lerp(a.x, b.x));
            self.y.push(lerp(a.y, b.y));
            if let Some(p) = &mut self.pressure {
                p.push(lerp(a.pressure, b.pressure));
            }
        }
    }

    /// Samples (all strokes together).
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Never true for a constructed trajectory; here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    pub fn x(&self) -> &[f32] {
        &self.x
    }

    pub fn y(&self) -> &[f32] {
        &self.y
    }

    /// Pressure in `0..=1`, or `None` when the source does not measure it.
    pub fn pressure(&self) -> Option<&[f32]> {
        self.pressure.as_deref()
    }

    /// Index of each stroke's first sample: a pen-up gap lies before every start but the first.
    pub fn stroke_starts(&self) -> &[u32] {
        &self.stroke_starts
    }

    /// Sample ranges of the strokes, in order.
    pub fn strokes(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let ends = self.stroke_starts.iter().skip(1).map(|&s| s as usize).chain(std::iter::once(self.len()));
        self.stroke_starts.iter().map(|&s| s as usize).zip(ends).map(|(a, b)| a..b)
    }

    /// Pen-down writing time.
    pub fn duration_ms(&self) -> f64 {
        self.len() as f64 * SAMPLE_PERIOD_MS
    }

    /// The pen path as a kiosk [`Recording`], so that a tablet corpus can be drawn by the kiosk's
    /// own rasteriser ([`crate::strokes::raster`]) into training images. The box is the path's
    /// bounding box plus a 2% margin, scaled so that its longer side is [`RECORDING_SIDE`] pixels;
    /// `y_up` flips tablets whose y axis points up (a recording's points down). Times are the
    /// 100 Hz sample clock; pressure is kept where the source measures it.
    pub fn to_recording(&self, y_up: bool) -> Result<Recording, StrokeError> {
        let bounds =
            |v: &[f32]| v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let ((x0, x1), (y0, y1)) = (bounds(&self.x), bounds(&self.y));
        let extent = (x1 - x0).max(y1 - y0);
        let margin = 0.02 * RECORDING_SIDE as f32;
        // A single dot has no extent (an infinite scale): any scale draws it.
        let scale = Some((RECORDING_SIDE as f32 - 2.0 * margin) / extent).filter(|s| s.is_finite()).unwrap_or(1.0);
        let width = ((x1 - x0) * scale + 2.0 * margin).ceil() as u32;
        let height = ((y1 - y0) * scale + 2.0 * margin).ceil() as u32;
        let point = |i: usize| {
            let x = (self.x[i] - x0) * scale + margin;
            let y = if y_up { (y1 - self.y[i]) * scale + margin } else { (self.y[i] - y0) * scale + margin };
            let t = (i as f64 * SAMPLE_PERIOD_MS) as u32;
            Point::new(x.clamp(0.0, width as f32), y.clamp(0.0, height as f32), t, self.pressure.as_ref().map(|p| p[i]))
        };
        Recording::new(width, height, self.strokes().map(|r| r.map(point).collect()).collect())
    }
}

/// Longer side, in pixels, of the box [`Trajectory::to_recording`] draws a path in.
pub const RECORDING_SIDE: u32 = 1024;

/// Where a stroke's samples sit in time (relative to its first kept sample) and how many
/// 100 Hz samples it becomes.
struct StrokePlan {
    kept: Vec<usize>,
    times: Vec<f64>,
    count: u64,
}

fn check_stroke(s: usize, stroke: &[PenSample], timing: Timing, has_pressure: bool) -> Result<(), TrajectoryError> {
    let mut previous = f64::NEG_INFINITY;
    for (i, p) in stroke.iter().enumerate() {
        if !(p.x.is_finite() && p.y.is_finite() && p.t_ms.is_finite() && p.pressure.is_finite()) {
            return Err(TrajectoryError::NotFinite { stroke: s, sample: i });
        }
        if has_pressure && !(0.0..=1.0).contains(&p.pressure) {
            return Err(TrajectoryError::BadPressure { stroke: s, sample: i, pressure: p.pressure });
        }
        // Jittery clocks may step back a little; only trusted timestamps must not.
        if timing == Timing::Timestamps && p.t_ms < previous {
            return Err(TrajectoryError::TimeGoesBack { stroke: s, sample: i, t: p.t_ms, previous });
        }
        previous = previous.max(p.t_ms);
    }
    Ok(())
}

fn plan_stroke(stroke: &[PenSample], timing: Timing) -> StrokePlan {
    let n = stroke.len();
    let even = |duration: f64| -> Vec<f64> {
        if n == 1 { vec![0.0] } else { (0..n).map(|i| i as f64 * duration / (n - 1) as f64).collect() }
    };
    let (kept, times) = match timing {
        Timing::Timestamps => {
            let t0 = stroke[0].t_ms;
            let mut kept = vec![0];
            for (i, p) in stroke.iter().enumerate().skip(1) {
                if p.t_ms > stroke[kept[kept.len() - 1]].t_ms {
                    kept.push(i);
                }
            }
            if kept.len() == 1 && n > 1 {
                // No clock at all (every time equal): take the samples as 100 Hz.
                ((0..n).collect(), even((n - 1) as f64 * SAMPLE_PERIOD_MS))
            } else {
                let times = kept.iter().map(|&i| stroke[i].t_ms - t0).collect();
                (kept, times)
            }
        }
        Timing::EvenWithinStroke => {
            let span = stroke[n - 1].t_ms - stroke[0].t_ms;
            let duration = if span > 0.0 { span } else { (n - 1) as f64 * SAMPLE_PERIOD_MS };
            ((0..n).collect(), even(duration))
        }
    };
    let last = times.last().copied().unwrap_or(0.0);
    // Float-to-int `as` saturates, so an absurd span cannot wrap; the caller checks the limit.
    let count = (last / SAMPLE_PERIOD_MS + 1e-9).floor() as u64 + 1;
    StrokePlan { kept, times, count }
}

/// The kiosk's recordings: timestamps are trusted (pointer events carry real times); pressure
/// is used only when every point reports it.
impl TryFrom<&Recording> for Trajectory {
    type Error = TrajectoryError;

    fn try_from(recording: &Recording) -> Result<Self, Self::Error> {
        let has_pressure = recording.strokes.iter().flatten().all(|p| p.p.is_some());
        let strokes: Vec<Vec<PenSample>> = recording
            .strokes
            .iter()
            .map(|stroke| {
                stroke
                    .iter()
                    .map(|p| PenSample { x: p.x, y: p.y, t_ms: f64::from(p.t), pressure: p.p.unwrap_or(0.0) })
                    .collect()
            })
            .collect();
        Self::from_strokes(&strokes, Timing::Timestamps, has_pressure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(x: f32, t: f64) -> PenSample {
        PenSample { x, y: -x, t_ms: t, pressure: 0.5 }
    }

    #[test]
    fn timestamps_are_resampled_to_100_hz() {
        // 200 Hz input over 40 ms -> 5 samples at 0, 10, .., 40 ms.
        let stroke: Vec<PenSample> = (0..9).map(|i| sample(i as f32, i as f64 * 5.0)).collect();
        let t = Trajectory::from_strokes(&[stroke], Timing::Timestamps, true).expect("trajectory");
        assert_eq!(t.x(), &[0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(t.y(), &[0.0, -2.0, -4.0, -6.0, -8.0]);
        assert_eq!(t.pressure().map(<[f32]>::len), Some(5));
    }

    #[test]
    fn slower_input_is_interpolated() {
        let stroke = vec![sample(0.0, 100.0), sample(3.0, 130.0)];
        let t = Trajectory::from_strokes(&[stroke], Timing::Timestamps, false).expect("trajectory");
        assert_eq!(t.x(), &[0.0, 1.0, 2.0, 3.0]);
        assert!(t.pressure().is_none());
    }

    #[test]
    fn strokes_are_marked_and_empty_ones_skipped() {
        let a = vec![sample(0.0, 0.0), sample(1.0, 10.0)];
        let b = vec![sample(5.0, 500.0)];
        let t = Trajectory::from_strokes(&[a, vec![], b], Timing::Timestamps, true).expect("trajectory");
        assert_eq!(t.stroke_starts(), &[0, 2]);
        assert_eq!(t.strokes().collect::<Vec<_>>(), vec![0..2, 2..3]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn jittery_clocks_are_spread_evenly() {
        // SVC2004-like: times 0, 10, 10, 20, 30 for five samples 10 ms apart.
        let stroke: Vec<PenSample> =
            [0.0, 10.0, 10.0, 20.0, 40.0].iter().enumerate().map(|(i, &t)| sample(i as f32, t)).collect();
        let t = Trajectory::from_strokes(&[stroke], Timing::EvenWithinStroke, true).expect("trajectory");
        assert_eq!(t.x(), &[0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn no_clock_means_100_hz() {
        let stroke: Vec<PenSample> = (0..4).map(|i| sample(i as f32, 7.0)).collect();
        let t = Trajectory::from_strokes(&[stroke], Timing::Timestamps, true).expect("trajectory");
        assert_eq!(t.x(), &[0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn bad_input_is_refused() {
        let empty: Vec<Vec<PenSample>> = vec![vec![]];
        assert!(matches!(Trajectory::from_strokes(&empty, Timing::Timestamps, true), Err(TrajectoryError::Empty)));
        let nan = vec![vec![sample(f32::NAN, 0.0)]];
        assert!(matches!(
            Trajectory::from_strokes(&nan, Timing::Timestamps, true),
            Err(TrajectoryError::NotFinite { stroke: 0, sample: 0 })
        ));
        let back = vec![vec![sample(0.0, 10.0), sample(1.0, 5.0)]];
        assert!(matches!(
            Trajectory::from_strokes(&back, Timing::Timestamps, true),
            Err(TrajectoryError::TimeGoesBack { sample: 1, .. })
        ));
        let mut pressed = sample(0.0, 0.0);
        pressed.pressure = 1.5;
        assert!(matches!(
            Trajectory::from_strokes(&[vec![pressed]], Timing::Timestamps, true),
            Err(TrajectoryError::BadPressure { .. })
        ));
        // Hours between two samples of one stroke: refused before allocating.
        let long = vec![vec![sample(0.0, 0.0), sample(1.0, 1e12)]];
        assert!(matches!(
            Trajectory::from_strokes(&long, Timing::Timestamps, true),
            Err(TrajectoryError::TooLong { .. })
        ));
    }

    #[test]
    fn recordings_convert() {
        let strokes = vec![
            vec![Point::new(1.0, 2.0, 0, Some(0.2)), Point::new(3.0, 4.0, 20, Some(0.4))],
            vec![Point::new(5.0, 6.0, 100, Some(1.0))],
        ];
        let recording = Recording::new(10, 10, strokes).expect("recording");
        let t = Trajectory::try_from(&recording).expect("trajectory");
        assert_eq!(t.x(), &[1.0, 2.0, 3.0, 5.0]);
        assert_eq!(t.y(), &[2.0, 3.0, 4.0, 6.0]);
        assert_eq!(t.stroke_starts(), &[0, 3]);
        let p = t.pressure().expect("pressure");
        assert!((p[1] - 0.3).abs() < 1e-6);

        let no_pressure = Recording::new(10, 10, vec![vec![Point::new(1.0, 1.0, 0, None)]]).expect("recording");
        assert!(Trajectory::try_from(&no_pressure).expect("trajectory").pressure().is_none());
    }

    #[test]
    fn a_tablet_path_becomes_a_drawable_recording() {
        // A bar along y = 0 then a stem from y = 50 to y = 100, in tablet units 100 wide.
        let bar: Vec<PenSample> =
            (0..=10).map(|i| PenSample { x: i as f32 * 10.0, y: 0.0, t_ms: i as f64 * 10.0, pressure: 0.5 }).collect();
        let stem: Vec<PenSample> = (0..=5)
            .map(|i| PenSample { x: 50.0, y: 50.0 + i as f32 * 10.0, t_ms: 200.0 + i as f64 * 10.0, pressure: 0.5 })
            .collect();
        let t = Trajectory::from_strokes(&[bar, stem], Timing::Timestamps, true).expect("trajectory");
        for y_up in [false, true] {
            let r = t.to_recording(y_up).expect("recording");
            assert_eq!((r.width, r.height), (RECORDING_SIDE, RECORDING_SIDE), "a square path fills the box");
            assert_eq!(r.strokes.len(), 2);
            assert_eq!(r.point_count(), t.len());
            assert!(r.strokes.iter().flatten().all(|p| p.p == Some(0.5)), "pressure is kept");
            let times: Vec<u32> = r.strokes.iter().flatten().map(|p| p.t).collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "the 100 Hz clock runs on: {times:?}");
            // The bar is at the top with y pointing down, at the bottom once flipped.
            let bar_y = r.strokes[0][0].y;
            assert_eq!(bar_y < RECORDING_SIDE as f32 / 2.0, !y_up, "bar at y = {bar_y}");
            let margin = 0.02 * RECORDING_SIDE as f32;
            assert!(
                r.strokes
                    .iter()
                    .flatten()
                    .all(|p| p.x >= margin - 1e-3 && p.x <= RECORDING_SIDE as f32 - margin + 1e-3)
            );
            let image = crate::strokes::raster::rasterise(&r, &Default::default()).expect("drawn");
            assert_eq!(image.height(), 300);
            assert!(image.pixels().any(|p| p.0[0] < 128), "ink on the page");
        }
        // One sample: a dot in a box of its margins, still drawable.
        let dot = Trajectory::from_strokes(
            &[vec![PenSample { x: 3.0, y: 4.0, t_ms: 0.0, pressure: 1.0 }]],
            Timing::Timestamps,
            false,
        )
        .expect("dot");
        let r = dot.to_recording(true).expect("recording");
        assert!(r.width >= 1 && r.height >= 1 && r.strokes[0][0].p.is_none());
        crate::strokes::raster::rasterise(&r, &Default::default()).expect("drawn");
    }
}
