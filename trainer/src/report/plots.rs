//! PNG plots of an evaluation: ROC, DET and score histograms (genuine vs skilled vs random).
//!
//! Drawn with plotters into an RGB buffer and encoded with `image`, so nothing needs system
//! fonts or libraries: text uses DejaVu Sans, embedded from the `dejavu` crate.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use autograph_shared::metrics;
use autograph_shared::protocol::{Thresholds, VerificationScores};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 520;

/// Registers the embedded font once; plotters' `ab_glyph` text looks fonts up by family name.
fn fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(anyhow!("the embedded DejaVu Sans font could not be loaded")) }
}

/// A distinct colour for the i-th curve.
fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    COLOURS[i % COLOURS.len()]
}

/// Draws into an RGB buffer, then writes it as PNG.
fn render(
    path: &Path,
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    fonts()?;
    let mut buffer = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        draw(root.clone())?;
        root.present().map_err(|e| anyhow!("{e:?}"))?;
    }
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, buffer).context("plot buffer has the wrong size")?;
    image.save(path).with_context(|| format!("writing {}", path.display()))
}

/// The series legend, boxed, at `position`.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

fn skilled(s: &VerificationScores) -> &[f32] {
    &s.skilled
}

fn random(s: &VerificationScores) -> &[f32] {
    &s.random
}

/// Picks one kind of impostor score.
type ImpostorScores = fn(&VerificationScores) -> &[f32];

/// The two kinds of impostor, one panel each.
const KINDS: [(&str, ImpostorScores); 2] = [("skilled forgeries", skilled), ("random forgeries", random)];

/// ROC (true-accept rate against false-accept rate), one curve per reference count.
pub fn roc(path: &Path, scores: &BTreeMap<usize, VerificationScores>, subtitle: &str) -> Result<()> {
    render(path, |root| {
        let panels = root.split_evenly((1, 2));
        for (panel, (kind, impostor_of)) in panels.iter().zip(KINDS) {
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("ROC, {kind} ({subtitle})"), (FONT, 17))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(52)
                .build_cartesian_2d(0f64..1f64, 0f64..1f64)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("false-accept rate")
                .y_desc("true-accept rate (1 - FRR)")
                .label_style((FONT, 13))
                .light_line_style(WHITE)
                .draw()
                .map_err(err)?;
            for (i, (r, s)) in scores.iter().enumerate() {
                let impostor = impostor_of(s);
                if s.genuine.is_empty() || impostor.is_empty() {
                    continue;
                }
                let points: Vec<(f64, f64)> =
                    metrics::roc(&s.genuine, impostor).iter().map(|p| (p.far, 1.0 - p.frr)).collect();
                let auc = metrics::auc(&s.genuine, impostor);
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(points, c.stroke_width(2)))
                    .map_err(err)?
                    .label(format!("R={r} (AUC {auc:.3})"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            }
            chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))).map_err(err)?;
            legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        Ok(())
    })
}

/// Reads one validation figure of an epoch.
type EpochFigure = fn(&crate::train::EpochMetrics) -> Option<f64>;

/// Training curves, one point per epoch: the loss, and the validation EER against skilled and
/// random forgeries (the figures that pick the best checkpoint).
pub fn training_curves(path: &Path, epochs: &[crate::train::EpochMetrics]) -> Result<()> {
    let last = epochs.iter().map(|m| m.epoch).max().unwrap_or(1).max(2) as f64;
    render(path, |root| {
        let panels = root.split_evenly((1, 2));
        let loss: Vec<(f64, f64)> =
            epochs.iter().filter(|m| m.loss.is_finite()).map(|m| (m.epoch as f64, m.loss)).collect();
        let top = loss.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-6) * 1.1;
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("training loss", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(1f64..last, 0f64..top)
            .map_err(err)?;
        chart.configure_mesh().x_desc("epoch").y_desc("mean loss").label_style((FONT, 13)).draw().map_err(err)?;
        chart.draw_series(LineSeries::new(loss.clone(), colour(0).stroke_width(2))).map_err(err)?;
        chart.draw_series(loss.iter().map(|&p| Circle::new(p, 3, colour(0).filled()))).map_err(err)?;

        let mut chart = ChartBuilder::on(&panels[1])
            .caption("validation EER (validation writers)", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(1f64..last, 0f64..50f64)
            .map_err(err)?;
        chart.configure_mesh().x_desc("epoch").y_desc("EER (%)").label_style((FONT, 13)).draw().map_err(err)?;
        let curves: [(&str, EpochFigure); 2] =
            [("skilled forgeries", |m| m.val_eer_skilled), ("random forgeries", |m| m.val_eer_random)];
        for (i, (label, field)) in curves.into_iter().enumerate() {
            let points: Vec<(f64, f64)> =
                epochs.iter().filter_map(|m| field(m).map(|v| (m.epoch as f64, 100.0 * v))).collect();
            let c = colour(i + 1);
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// An axis on the normal-deviate (probit) scale, as DET plots use, over error rates.
#[derive(Debug, Clone, Copy)]
struct Probit {
    lo: f64,
    hi: f64,
}

const DET_TICKS: [f64; 10] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8];

impl Ranged for Probit {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (probit(self.lo), probit(self.hi));
        let v = probit(value.clamp(self.lo, self.hi));
        let t = (v - a) / (b - a);
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        DET_TICKS.iter().copied().filter(|t| (self.lo..=self.hi).contains(t)).collect()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// The inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9).
#[allow(clippy::excessive_precision)] // Acklam's published coefficients, kept as published
pub fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// DET (FRR against FAR on normal-deviate axes), one curve per reference count. Points with a
/// rate outside 0.1%..80% cannot be placed on these axes and are left out.
pub fn det(path: &Path, scores: &BTreeMap<usize, VerificationScores>, subtitle: &str) -> Result<()> {
    let axis = Probit { lo: 0.001, hi: 0.8 };
    let inside = |v: f64| (axis.lo..=axis.hi).contains(&v);
    render(path, |root| {
        let panels = root.split_evenly((1, 2));
        for (panel, (kind, impostor_of)) in panels.iter().zip(KINDS) {
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("DET, {kind} ({subtitle})"), (FONT, 17))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(52)
                .build_cartesian_2d(axis, axis)
                .map_err(err)?;
            let label = |v: &f64| {
                if *v < 0.01 { format!("{:.1}%", v * 100.0) } else { format!("{:.0}%", v * 100.0) }
            };
            chart
                .configure_mesh()
                .x_desc("false-accept rate")
                .y_desc("false-reject rate")
                .x_label_formatter(&label)
                .y_label_formatter(&label)
                .label_style((FONT, 13))
                .light_line_style(WHITE)
                .draw()
                .map_err(err)?;
            for (i, (r, s)) in scores.iter().enumerate() {
                let impostor = impostor_of(s);
                if s.genuine.is_empty() || impostor.is_empty() {
                    continue;
                }
                let points: Vec<(f64, f64)> = metrics::roc(&s.genuine, impostor)
                    .iter()
                    .map(|p| (p.far, p.frr))
                    .filter(|&(far, frr)| inside(far) && inside(frr))
                    .collect();
                let eer = metrics::eer(&s.genuine, impostor).eer;
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(points, c.stroke_width(2)))
                    .map_err(err)?
                    .label(format!("R={r} (EER {:.1}%)", eer * 100.0))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            }
            chart
                .draw_series(LineSeries::new([(axis.lo, axis.lo), (axis.hi, axis.hi)], BLACK.mix(0.3)))
                .map_err(err)?;
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}

/// Densities of the score kinds over `bins` equal bins spanning `range`.
fn density(values: &[f32], range: (f64, f64), bins: usize) -> Vec<f64> {
    let mut counts = vec![0usize; bins];
    let width = (range.1 - range.0) / bins as f64;
    for &v in values.iter().filter(|v| v.is_finite()) {
        let i = (((v as f64 - range.0) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let n = values.len().max(1) as f64;
    counts.iter().map(|&c| c as f64 / (n * width)).collect()
}

/// Score histograms at one reference count: genuine vs skilled vs random (each normalised to
/// unit area, since random scores far outnumber the others), with the decision thresholds.
pub fn histogram(path: &Path, scores: &VerificationScores, thresholds: &Thresholds, title: &str) -> Result<()> {
    const BINS: usize = 50;
    let all = scores.genuine.iter().chain(&scores.skilled).chain(&scores.random).copied().filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v as f64), hi.max(v as f64)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo - 0.02, hi + 0.02) } else { (-1.0, 1.0) };
    let kinds: [(&str, &[f32], RGBColor); 3] = [
        ("genuine", &scores.genuine, colour(2)),
        ("skilled forgeries", &scores.skilled, colour(1)),
        ("random forgeries", &scores.random, colour(0)),
    ];
    let densities: Vec<Vec<f64>> = kinds.iter().map(|(_, v, _)| density(v, (lo, hi), BINS)).collect();
    let top = densities.iter().flatten().copied().fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let width = (hi - lo) / BINS as f64;
    render(path, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..hi, 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("score (int8 similarity to the nearest reference)")
            .y_desc("density")
            .label_style((FONT, 13))
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        for ((name, values, c), d) in kinds.iter().zip(&densities) {
            if values.is_empty() {
                continue;
            }
            let c = *c;
            let bars = d.iter().enumerate().map(move |(i, &h)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, h)], c.mix(0.35).filled())
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(format!("{name} ({})", values.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.mix(0.6).filled()));
        }
        let mut lines = vec![("random EER threshold", thresholds.random.eer, colour(0))];
        if let Some(s) = thresholds.skilled {
            lines.push(("skilled EER threshold", s.eer, colour(1)));
        }
        for (name, t, c) in lines {
            let t = t as f64;
            if !t.is_finite() {
                continue;
            }
            chart
                .draw_series(DashedLineSeries::new([(t, 0.0), (t, top)], 8, 5, c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{name} {t:.3}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_matches_known_quantiles() {
        assert!(probit(0.5).abs() < 1e-9);
        assert!((probit(0.975) - 1.959964).abs() < 1e-5);
        assert!((probit(0.001) + 3.090232).abs() < 1e-5);
        assert!(probit(0.2) < probit(0.4));
    }

    #[test]
    fn plots_are_written_as_png() {
        let dir = tempfile::tempdir().expect("tmp");
        let scores = VerificationScores {
            genuine: (0..40).map(|i| 0.6 + i as f32 * 0.008).collect(),
            skilled: (0..30).map(|i| 0.4 + i as f32 * 0.01).collect(),
            random: (0..200).map(|i| -0.2 + i as f32 * 0.003).collect(),
            writers: 4,
            max_genuine_pair_similarity: 0.95,
            ..Default::default()
        };
        let by_r: BTreeMap<usize, VerificationScores> = [(1, scores.clone()), (5, scores.clone())].into();
        let t = autograph_shared::protocol::OperatingThresholds {
            eer: 0.6,
            far_1pct: 0.7,
            far_0_1pct: 0.75,
            nearest_eer_far: None,
        };
        let thresholds = Thresholds { skilled: Some(t), random: t };
        let epochs: Vec<crate::train::EpochMetrics> = (1..=4)
            .map(|epoch| crate::train::EpochMetrics {
                epoch,
                loss: 1.0 / epoch as f64,
                lr: 1e-3,
                val_eer_skilled: Some(0.4 - 0.05 * epoch as f64),
                val_eer_random: Some(0.1 - 0.01 * epoch as f64),
                val_sets: Vec::new(),
                val_score: None,
                images_per_second: 50.0,
                seconds: 60.0,
                skipped_steps: 0,
                improved: true,
            })
            .collect();
        for (name, result) in [
            ("roc.png", roc(&dir.path().join("roc.png"), &by_r, "test")),
            ("det.png", det(&dir.path().join("det.png"), &by_r, "test")),
            ("h.png", histogram(&dir.path().join("h.png"), &scores, &thresholds, "scores")),
            ("t.png", training_curves(&dir.path().join("t.png"), &epochs)),
        ] {
            result.expect("plot");
            let img = image::open(dir.path().join(name)).expect("decodes").to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
            // Something besides the white background was drawn.
            assert!(img.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 1000, "{name} is blank");
        }
    }
}
