//! One signing session as a pure state machine: pen updates in, what to redraw and when a
//! signature was accepted out. No display, device or model here, so the kiosk's behaviour
//! (ink only inside the box, buttons fire on release over the same button, Clear, Accept only
//! with ink, enrolment "k of K") is tested with plain values.

use autograph_shared::strokes::{Point, Recording, Stroke};
use embedded_graphics::prelude::Point as ScreenPoint;

use super::input::PenUpdate;
use super::screen::{Button, Layout, Outcome, Screen};

/// What the session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Is this `user`'s signature?
    Verify { user: String },
    /// Who signed?
    Identify,
    /// Take `samples` reference signatures of `user`.
    Enroll { user: String, samples: usize },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Verify { .. } => "verify",
            Mode::Identify => "identify",
            Mode::Enroll { .. } => "enroll",
        }
    }

    pub fn user(&self) -> Option<&str> {
        match self {
            Mode::Verify { user } | Mode::Enroll { user, .. } => Some(user),
            Mode::Identify => None,
        }
    }
}

/// What a pen update changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing visible.
    Nothing,
    /// The last stroke grew by a point: draw its tail only.
    Ink,
    /// The frame must be redrawn.
    Redraw,
    /// Accept was touched with ink in the box: here is the signature, in box coordinates.
    Accept(Recording),
}

/// The state of one session.
#[derive(Debug, Clone)]
pub struct Session {
    layout: Layout,
    mode: Mode,
    header: String,
    ink: Vec<Stroke>,
    drawing: bool,
    /// Time of the first point of this signature; recordings start at 0.
    t0: Option<u32>,
    pressed: Option<Button>,
    notice: Option<String>,
    /// Enrolment: the signature being taken, from 1.
    sample: usize,
    outcome: Option<Outcome>,
}

impl Session {
    pub fn new(layout: Layout, mode: Mode) -> Self {
        let mut session = Self {
            layout,
            mode,
            header: String::new(),
            ink: Vec::new(),
            drawing: false,
            t0: None,
            pressed: None,
            notice: None,
            sample: 1,
            outcome: None,
        };
        session.header = session.header_text();
        session
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Strokes in the box so far, in box coordinates.
    pub fn ink(&self) -> &[Stroke] {
        &self.ink
    }

    /// Enrolment: the signature being taken (1-based); 1 otherwise.
    pub fn sample(&self) -> usize {
        self.sample
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    fn header_text(&self) -> String {
        match &self.mode {
            Mode::Verify { user } => format!("Verify: {user}"),
            Mode::Identify => "Identify".to_string(),
            Mode::Enroll { user, samples } => format!("Enrol {user}: {} of {samples}", self.sample),
        }
    }

    /// The frame to show now.
    pub fn screen(&self) -> Screen<'_> {
        if let Some(outcome) = &self.outcome {
            return Screen::Result { header: &self.header, outcome };
        }
        let progress = match self.mode {
            Mode::Enroll { samples, .. } => Some((self.sample, samples)),
            _ => None,
        };
        Screen::Sign {
            header: &self.header,
            progress,
            ink: &self.ink,
            pressed: self.pressed,
            notice: self.notice.as_deref(),
        }
    }

    /// The name a screenshot of the current frame gets: `prompt`, `signing`, `result`, or
    /// `enroll-K-prompt` / `enroll-K-signing` while enrolling.
    pub fn screen_key(&self) -> String {
        let phase = match self.screen() {
            Screen::Result { .. } => return "result".into(),
            Screen::Sign { ink: [], .. } => "prompt",
            Screen::Sign { .. } => "signing",
        };
        match self.mode {
            Mode::Enroll { .. } => format!("enroll-{}-{phase}", self.sample),
            _ => phase.into(),
        }
    }

    /// Applies one pen update.
    pub fn handle(&mut self, update: &PenUpdate) -> Step {
        if self.outcome.is_some() {
            return Step::Nothing;
        }
        let p = update.point();
        let on_screen = ScreenPoint::new(p.x.round() as i32, p.y.round() as i32);
        match update {
            PenUpdate::Down(_) => {
                if self.in_box(&p) {
                    let redraw = self.ink.is_empty() || self.notice.is_some();
                    self.notice = None;
                    self.drawing = true;
                    let point = self.box_point(&p);
                    self.ink.push(vec![point]);
                    if redraw { Step::Redraw } else { Step::Ink }
                } else if let Some(button) = self.layout.button_at(on_screen).filter(|_| !self.ink.is_empty()) {
                    self.pressed = Some(button);
                    Step::Redraw
                } else {
                    Step::Nothing
                }
            }
            PenUpdate::Move(_) if self.drawing => {
                let point = self.box_point(&p);
                if let Some(stroke) = self.ink.last_mut() {
                    stroke.push(point);
                }
                Step::Ink
            }
            PenUpdate::Move(_) => Step::Nothing,
            PenUpdate::Up(_) if self.drawing => {
                self.drawing = false;
                let point = self.box_point(&p);
                match self.ink.last_mut() {
                    Some(stroke) if stroke.last().is_some_and(|l| (l.x, l.y) != (point.x, point.y)) => {
                        stroke.push(point);
                        Step::Ink
                    }
                    _ => Step::Nothing,
                }
            }
            PenUpdate::Up(_) => match self.pressed.take() {
                // A button fires when released over itself, as on any touch screen.
                Some(button) if self.layout.button_at(on_screen) == Some(button) => self.press(button),
                Some(_) => Step::Redraw,
                None => Step::Nothing,
            },
        }
    }

    fn press(&mut self, button: Button) -> Step {
        match button {
            Button::Clear => {
                self.clear();
                Step::Redraw
            }
            Button::Accept => {
                let size = self.layout.signing_box.size;
                match Recording::new(size.width, size.height, self.ink.clone()) {
                    Ok(recording) => Step::Accept(recording),
                    // Points are clamped into the box, so this is not expected; start over.
                    Err(e) => {
                        self.retry(format!("Please sign again ({e})"));
                        Step::Redraw
                    }
                }
            }
        }
    }

    /// Inside the box, its far edges included (recordings may put points exactly on them).
    fn in_box(&self, p: &Point) -> bool {
        let b = self.layout.signing_box;
        let (x, y) = (p.x - b.top_left.x as f32, p.y - b.top_left.y as f32);
        (0.0..=b.size.width as f32).contains(&x) && (0.0..=b.size.height as f32).contains(&y)
    }

    /// A screen point in box coordinates, clamped into the box, with the time since the
    /// signature's first point.
    fn box_point(&mut self, p: &Point) -> Point {
        let b = self.layout.signing_box;
        let t0 = *self.t0.get_or_insert(p.t);
        Point::new(
            (p.x - b.top_left.x as f32).clamp(0.0, b.size.width as f32),
            (p.y - b.top_left.y as f32).clamp(0.0, b.size.height as f32),
            p.t.saturating_sub(t0),
            p.p,
        )
    }

    fn clear(&mut self) {
        self.ink.clear();
        self.drawing = false;
        self.t0 = None;
        self.pressed = None;
    }

    /// The signature was not usable: empty the box and say why.
    pub fn retry(&mut self, notice: impl Into<String>) {
        self.clear();
        self.notice = Some(notice.into());
    }

    /// Enrolment: the signature was taken; ask for the next one.
    pub fn next_sample(&mut self) {
        self.clear();
        self.notice = None;
        self.sample += 1;
        self.header = self.header_text();
    }

    /// Shows the result; later input is ignored.
    pub fn finish(&mut self, outcome: Outcome) {
        self.clear();
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::screen::Verdict;
    use embedded_graphics::prelude::Size;

    fn layout() -> Layout {
        Layout::for_size(Size::new(800, 480)).expect("layout")
    }

    fn at(p: ScreenPoint, t: u32) -> Point {
        Point::new(p.x as f32, p.y as f32, t, None)
    }

    fn tap(session: &mut Session, p: ScreenPoint) -> Step {
        session.handle(&PenUpdate::Down(at(p, 900)));
        session.handle(&PenUpdate::Up(at(p, 950)))
    }

    fn sign(session: &mut Session) {
        let b = layout().signing_box;
        let start = b.top_left + ScreenPoint::new(50, 60);
        assert_eq!(session.handle(&PenUpdate::Down(at(start, 100))), Step::Redraw, "first ink leaves the prompt");
        for i in 1..=10 {
            assert_eq!(
                session.handle(&PenUpdate::Move(at(start + ScreenPoint::new(10 * i, i), 100 + 10 * i as u32))),
                Step::Ink
            );
        }
        assert_eq!(session.handle(&PenUpdate::Up(at(start + ScreenPoint::new(100, 10), 220))), Step::Nothing);
    }

    #[test]
    fn ink_goes_into_the_box_in_box_coordinates() {
        let mut s = Session::new(layout(), Mode::Verify { user: "ada".into() });
        assert_eq!(s.screen_key(), "prompt");
        // Touching outside the box, or a button without ink, does nothing.
        assert_eq!(s.handle(&PenUpdate::Down(at(ScreenPoint::new(5, 5), 0))), Step::Nothing);
        assert_eq!(s.handle(&PenUpdate::Up(at(ScreenPoint::new(5, 5), 0))), Step::Nothing);
        assert_eq!(tap(&mut s, layout().accept.center()), Step::Nothing);
        sign(&mut s);
        assert_eq!(s.screen_key(), "signing");
        assert_eq!(s.ink().len(), 1);
        let stroke = &s.ink()[0];
        assert_eq!(stroke.len(), 11);
        assert_eq!((stroke[0].x, stroke[0].y, stroke[0].t), (50.0, 60.0, 0));
        assert_eq!((stroke[10].x, stroke[10].y, stroke[10].t), (150.0, 70.0, 100));
    }

    #[test]
    fn clear_empties_and_accept_hands_over_the_recording() {
        let l = layout();
        let mut s = Session::new(l, Mode::Verify { user: "ada".into() });
        sign(&mut s);
        // Pressing Clear and sliding off it cancels.
        s.handle(&PenUpdate::Down(at(l.clear.center(), 300)));
        assert!(matches!(s.screen(), Screen::Sign { pressed: Some(Button::Clear), .. }));
        assert_eq!(s.handle(&PenUpdate::Up(at(l.accept.center(), 310))), Step::Redraw);
        assert_eq!(s.ink().len(), 1);
        assert_eq!(tap(&mut s, l.clear.center()), Step::Redraw);
        assert!(s.ink().is_empty());
        sign(&mut s);
        let Step::Accept(recording) = tap(&mut s, l.accept.center()) else { panic!("accept") };
        assert_eq!((recording.width, recording.height), (l.signing_box.size.width, l.signing_box.size.height));
        assert_eq!(recording.strokes, s.ink());
        assert!(recording.validate().is_ok());
        // Strokes leaving the box are clamped to its edge.
        let mut s = Session::new(l, Mode::Identify);
        s.handle(&PenUpdate::Down(at(l.signing_box.center(), 0)));
        s.handle(&PenUpdate::Move(at(ScreenPoint::new(-40, 2000), 10)));
        let last = s.ink()[0][1];
        assert_eq!((last.x, last.y), (0.0, l.signing_box.size.height as f32));
    }

    #[test]
    fn enrolment_counts_and_results_stop_input() {
        let l = layout();
        let mut s = Session::new(l, Mode::Enroll { user: "ada".into(), samples: 3 });
        assert_eq!(s.screen_key(), "enroll-1-prompt");
        sign(&mut s);
        assert_eq!(s.screen_key(), "enroll-1-signing");
        assert!(matches!(s.screen(), Screen::Sign { progress: Some((1, 3)), .. }));
        s.next_sample();
        assert_eq!(s.screen_key(), "enroll-2-prompt");
        assert!(matches!(s.screen(), Screen::Sign { header: "Enrol ada: 2 of 3", progress: Some((2, 3)), .. }));
        s.retry("Too little ink");
        assert!(matches!(s.screen(), Screen::Sign { notice: Some("Too little ink"), ink: [], .. }));
        s.finish(Outcome {
            verdict: Verdict::Enrolled,
            user: Some("ada".into()),
            score: None,
            threshold: None,
            detail: None,
        });
        assert_eq!(s.screen_key(), "result");
        assert_eq!(s.handle(&PenUpdate::Down(at(l.signing_box.center(), 0))), Step::Nothing);
    }
}
