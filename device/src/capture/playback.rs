//! Recorded strokes played back as pen input: what a writer's hand would have sent, so the
//! headless kiosk and `autograph capture` go through the same session code as a real pen.
//!
//! A recording made in one box size is scaled uniformly (aspect kept) and centred into the
//! current layout's signing box, so recordings from an 800x480 kiosk replay on a 480x272 one.

use std::collections::VecDeque;

use autograph_shared::strokes::{Point, Recording};

use super::input::PenUpdate;
use super::screen::Layout;

/// Pause between the last stroke and the touch on Accept.
const ACCEPT_DELAY_MS: u32 = 400;

/// The pen updates that draw `recording` into `layout`'s signing box, times shifted by
/// `start_ms`. Without the Accept touch: see [`accept_tap`].
pub fn strokes_as_updates(recording: &Recording, layout: &Layout, start_ms: u32) -> Vec<PenUpdate> {
    let b = layout.signing_box;
    let (bw, bh) = (b.size.width as f32, b.size.height as f32);
    let scale = (bw / recording.width as f32).min(bh / recording.height as f32);
    let dx = b.top_left.x as f32 + (bw - recording.width as f32 * scale) * 0.5;
    let dy = b.top_left.y as f32 + (bh - recording.height as f32 * scale) * 0.5;
    let place = |p: &Point| Point::new(dx + p.x * scale, dy + p.y * scale, start_ms.saturating_add(p.t), p.p);
    let mut out = Vec::with_capacity(recording.point_count() + 2 * recording.strokes.len());
    for stroke in &recording.strokes {
        let Some((first, rest)) = stroke.split_first() else { continue };
        out.push(PenUpdate::Down(place(first)));
        out.extend(rest.iter().map(|p| PenUpdate::Move(place(p))));
        out.push(PenUpdate::Up(place(rest.last().unwrap_or(first))));
    }
    out
}

/// A touch on the Accept button at `t_ms`.
pub fn accept_tap(layout: &Layout, t_ms: u32) -> [PenUpdate; 2] {
    let c = layout.accept.center();
    let at = |t| Point::new(c.x as f32, c.y as f32, t, None);
    [PenUpdate::Down(at(t_ms)), PenUpdate::Up(at(t_ms.saturating_add(80)))]
}

/// Recordings played one after another, each signed and then accepted, as batches of updates.
#[derive(Debug)]
pub struct Playback {
    batches: VecDeque<Vec<PenUpdate>>,
}

impl Playback {
    pub fn new(recordings: &[Recording], layout: &Layout) -> Self {
        let mut clock = 0u32;
        let mut batches = VecDeque::new();
        for recording in recordings {
            let mut batch = strokes_as_updates(recording, layout, clock);
            let end = batch.last().map_or(clock, |u| u.point().t);
            batch.extend(accept_tap(layout, end.saturating_add(ACCEPT_DELAY_MS)));
            clock = end.saturating_add(2 * ACCEPT_DELAY_MS);
            batches.push_back(batch);
        }
        Self { batches }
    }

    /// The next recording's updates, or `None` when all were played.
    pub fn next_batch(&mut self) -> Option<Vec<PenUpdate>> {
        self.batches.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::prelude::{Point as ScreenPoint, Size};

    #[test]
    fn recordings_are_fitted_into_the_box() {
        let layout = Layout::for_size(Size::new(480, 272)).expect("layout");
        let b = layout.signing_box;
        // A recording wider than the box's aspect: it spans the box's width, centred vertically.
        let stroke = vec![Point::new(0.0, 50.0, 0, None), Point::new(400.0, 50.0, 30, Some(0.7))];
        let r = Recording::new(400, 100, vec![stroke]).expect("valid");
        let updates = strokes_as_updates(&r, &layout, 1000);
        assert_eq!(updates.len(), 3);
        let (first, last) = (updates[0].point(), updates[2].point());
        assert!(matches!(updates[0], PenUpdate::Down(_)) && matches!(updates[2], PenUpdate::Up(_)));
        assert!((first.x - b.top_left.x as f32).abs() < 1e-3, "{first:?}");
        assert!((last.x - (b.top_left.x + b.size.width as i32) as f32).abs() < 1e-3, "{last:?}");
        assert!((first.y - b.center().y as f32).abs() <= 1.0, "{first:?} vs {:?}", b.center());
        assert_eq!((first.t, last.t, last.p), (1000, 1030, Some(0.7)));
        let mut playback = Playback::new(&[r.clone(), r], &layout);
        let one = playback.next_batch().expect("first");
        assert_eq!(one.len(), 5);
        let tap = one[3].point();
        assert_eq!(
            layout.button_at(ScreenPoint::new(tap.x as i32, tap.y as i32)),
            Some(super::super::screen::Button::Accept)
        );
        let two = playback.next_batch().expect("second");
        assert!(two[0].point().t > one[4].point().t, "time runs on");
        assert!(playback.next_batch().is_none());
    }
}
