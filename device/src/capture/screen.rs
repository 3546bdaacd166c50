//! The kiosk's screens, drawn with embedded-graphics on any RGB888 [`DrawTarget`].
//!
//! [`Layout::for_size`] places everything from the screen size alone (480x272 panels and
//! 800x480 and larger displays get different fonts and proportions), so one code path serves
//! every panel, and [`Layout::button_at`] answers where a touch landed with the same
//! rectangles that were drawn. [`draw`] renders a [`Screen`]: the signing screen (prompt text
//! while the box is empty, live ink once the writer signs, a baseline, Clear and Accept; with
//! the enrolment progress "k of K" when enrolling) or a result.

use autograph_shared::strokes::Stroke;
use embedded_graphics::mono_font::ascii::{FONT_9X15_BOLD, FONT_10X20};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle, PrimitiveStyleBuilder, Rectangle, RoundedRectangle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};
use serde::Serialize;

/// Colours of the kiosk (public so tests can look for them in rendered frames).
pub mod palette {
    use embedded_graphics::pixelcolor::Rgb888;

    pub const BACKGROUND: Rgb888 = Rgb888::new(0xEC, 0xEF, 0xF1);
    pub const HEADER: Rgb888 = Rgb888::new(0x26, 0x32, 0x38);
    pub const HEADER_TEXT: Rgb888 = Rgb888::new(0xFF, 0xFF, 0xFF);
    pub const TEXT: Rgb888 = Rgb888::new(0x26, 0x32, 0x38);
    pub const HINT: Rgb888 = Rgb888::new(0x60, 0x7D, 0x8B);
    pub const PAPER: Rgb888 = Rgb888::new(0xFF, 0xFF, 0xFF);
    pub const BOX_BORDER: Rgb888 = Rgb888::new(0x90, 0xA4, 0xAE);
    pub const BASELINE: Rgb888 = Rgb888::new(0x78, 0x90, 0x9C);
    pub const INK: Rgb888 = Rgb888::new(0x0D, 0x22, 0x6B);
    pub const CLEAR: Rgb888 = Rgb888::new(0x54, 0x6E, 0x7A);
    pub const ACCEPT: Rgb888 = Rgb888::new(0x2E, 0x7D, 0x32);
    pub const PRESSED: Rgb888 = Rgb888::new(0x1B, 0x2A, 0x30);
    pub const DISABLED: Rgb888 = Rgb888::new(0xB0, 0xBE, 0xC5);
    pub const BUTTON_TEXT: Rgb888 = Rgb888::new(0xFF, 0xFF, 0xFF);
    pub const NOTICE: Rgb888 = Rgb888::new(0xC6, 0x28, 0x28);
    pub const PROGRESS_DONE: Rgb888 = Rgb888::new(0x2E, 0x7D, 0x32);
    pub const PROGRESS_CURRENT: Rgb888 = Rgb888::new(0x15, 0x65, 0xC0);
    pub const PROGRESS_TODO: Rgb888 = Rgb888::new(0xB0, 0xBE, 0xC5);
    pub const ACCEPTED: Rgb888 = Rgb888::new(0x2E, 0x7D, 0x32);
    pub const REJECTED: Rgb888 = Rgb888::new(0xC6, 0x28, 0x28);
    pub const REPLAY: Rgb888 = Rgb888::new(0xE6, 0x51, 0x00);
    pub const NEUTRAL: Rgb888 = Rgb888::new(0x54, 0x6E, 0x7A);
    pub const ENROLLED: Rgb888 = Rgb888::new(0x15, 0x65, 0xC0);
}

/// Smallest screen the layout supports.
pub const MIN_SIZE: Size = Size::new(320, 200);

/// The screen is too small for the kiosk layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {}x{} screen is too small for the kiosk (at least {}x{})", size.width, size.height, MIN_SIZE.width, MIN_SIZE.height)]
pub struct ScreenTooSmall {
    pub size: Size,
}

/// A touchable button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Clear,
    Accept,
}

/// Where everything is, for one screen size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub size: Size,
    pub margin: u32,
    pub header: Rectangle,
    /// The enrolment progress band under the header.
    pub progress: Rectangle,
    /// The signing box; strokes are recorded in its coordinates.
    pub signing_box: Rectangle,
    /// Screen row of the baseline drawn in the box.
    pub baseline_y: i32,
    pub clear: Rectangle,
    pub accept: Rectangle,
    /// The result panel.
    pub panel: Rectangle,
    /// Header, buttons and body text.
    pub font: &'static MonoFont<'static>,
    /// Big text (the prompt, the verdict) is `font` magnified this many times.
    pub title_scale: u32,
}

impl Layout {
    /// The layout for a `size` screen: small panels (under 640x400) get a 9x15 font and
    /// double-size titles, larger ones 10x20 and triple.
    pub fn for_size(size: Size) -> Result<Self, ScreenTooSmall> {
        if size.width < MIN_SIZE.width || size.height < MIN_SIZE.height {
            return Err(ScreenTooSmall { size });
        }
        let (w, h) = (size.width, size.height);
        let large = w >= 640 && h >= 400;
        let font = if large { &FONT_10X20 } else { &FONT_9X15_BOLD };
        let margin = (h / 40).max(4);
        let header_h = font.character_size.height + 2 * margin;
        let header = Rectangle::new(Point::zero(), Size::new(w, header_h));
        let progress = Rectangle::new(
            Point::new(margin as i32, (header_h + margin / 4) as i32),
            Size::new(w - 2 * margin, margin / 2),
        );
        let button_h = (h / 7).max(32);
        let button_y = h - margin - button_h;
        let button_w = (w - 3 * margin) / 2;
        let clear = Rectangle::new(Point::new(margin as i32, button_y as i32), Size::new(button_w, button_h));
        let accept =
            Rectangle::new(Point::new((2 * margin + button_w) as i32, button_y as i32), Size::new(button_w, button_h));
        let box_y = header_h + margin;
        let signing_box = Rectangle::new(
            Point::new(margin as i32, box_y as i32),
            Size::new(w - 2 * margin, button_y - margin - box_y),
        );
        let baseline_y = (box_y + signing_box.size.height * 3 / 4) as i32;
        let panel_h = (h - header_h) * 2 / 5;
        let panel = Rectangle::new(
            Point::new((2 * margin) as i32, (header_h + 2 * margin) as i32),
            Size::new(w - 4 * margin, panel_h),
        );
        Ok(Self {
            size,
            margin,
            header,
            progress,
            signing_box,
            baseline_y,
            clear,
            accept,
            panel,
            font,
            title_scale: if large { 3 } else { 2 },
        })
    }

    /// The button under a screen point, if any.
    pub fn button_at(&self, point: Point) -> Option<Button> {
        if self.clear.contains(point) {
            Some(Button::Clear)
        } else if self.accept.contains(point) {
            Some(Button::Accept)
        } else {
            None
        }
    }

    /// Line width in pixels for the live ink at pressure `p` (absent: mid pressure).
    pub fn ink_width(&self, p: Option<f32>) -> u32 {
        let base = if self.title_scale >= 3 { 2.0 } else { 1.5 };
        (base + 3.0 * p.unwrap_or(0.5).clamp(0.0, 1.0)).round() as u32
    }
}

/// The decision shown on a result screen (and the kiosk's `--json` "decision").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    Rejected,
    PossibleReplay,
    NotEnrolled,
    Enrolled,
    Found,
    NotFound,
}

impl Verdict {
    pub fn title(self) -> &'static str {
        match self {
            Verdict::Accepted => "ACCEPTED",
            Verdict::Rejected => "REJECTED",
            Verdict::PossibleReplay => "POSSIBLE REPLAY",
            Verdict::NotEnrolled => "NOT ENROLLED",
            Verdict::Enrolled => "ENROLLED",
            Verdict::Found => "FOUND",
            Verdict::NotFound => "NOT FOUND",
        }
    }

    pub fn color(self) -> Rgb888 {
        match self {
            Verdict::Accepted | Verdict::Found => palette::ACCEPTED,
            Verdict::Rejected => palette::REJECTED,
            Verdict::PossibleReplay => palette::REPLAY,
            Verdict::NotEnrolled | Verdict::NotFound => palette::NEUTRAL,
            Verdict::Enrolled => palette::ENROLLED,
        }
    }

    /// Good news (exit status 0).
    pub fn is_success(self) -> bool {
        matches!(self, Verdict::Accepted | Verdict::Enrolled | Verdict::Found)
    }
}

/// What a result screen says.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The claimed writer, or the one found.
    pub user: Option<String>,
    pub score: Option<f32>,
    pub threshold: Option<f32>,
    /// One more line, e.g. "3 signatures enrolled".
    pub detail: Option<String>,
}

/// One frame of the kiosk.
#[derive(Debug, Clone, Copy)]
pub enum Screen<'a> {
    /// The signing box. Empty, it is the prompt ("Sign in the box"); with ink, the signing
    /// screen with live ink and active buttons.
    Sign {
        /// Header text: who is signing and for what.
        header: &'a str,
        /// Enrolment: signature `k` of `K` (1-based).
        progress: Option<(usize, usize)>,
        /// Strokes in signing-box coordinates.
        ink: &'a [Stroke],
        pressed: Option<Button>,
        /// A line under the prompt, e.g. why the last signature was not taken.
        notice: Option<&'a str>,
    },
    Result {
        header: &'a str,
        outcome: &'a Outcome,
    },
}

impl Screen<'_> {
    /// `prompt`, `signing`, `enroll` or `result`: the name of its screenshot.
    pub fn name(&self) -> &'static str {
        match self {
            Screen::Sign { progress: Some(_), .. } => "enroll",
            Screen::Sign { ink: [], .. } => "prompt",
            Screen::Sign { .. } => "signing",
            Screen::Result { .. } => "result",
        }
    }
}

/// Draws a whole frame.
pub fn draw<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    screen: &Screen<'_>,
) -> Result<(), D::Error> {
    target.clear(palette::BACKGROUND)?;
    match *screen {
        Screen::Sign { header, progress, ink, pressed, notice } => {
            draw_header(target, layout, header)?;
            if let Some((k, of)) = progress {
                draw_progress(target, layout, k, of)?;
            }
            draw_box(target, layout)?;
            if ink.is_empty() {
                draw_prompt(target, layout, notice)?;
            }
            for stroke in ink {
                draw_stroke(target, layout, stroke)?;
            }
            let enabled = !ink.is_empty();
            draw_button(
                target,
                layout,
                layout.clear,
                "Clear",
                palette::CLEAR,
                enabled,
                pressed == Some(Button::Clear),
            )?;
            draw_button(
                target,
                layout,
                layout.accept,
                "Accept",
                palette::ACCEPT,
                enabled,
                pressed == Some(Button::Accept),
            )
        }
        Screen::Result { header, outcome } => {
            draw_header(target, layout, header)?;
            draw_result(target, layout, outcome)
        }
    }
}

/// Draws one new piece of ink (the segment from the stroke's previous point to its last), so
/// live ink costs a few pixels per pen report instead of a frame.
pub fn draw_ink_tail<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    stroke: &[autograph_shared::strokes::Point],
) -> Result<(), D::Error> {
    match stroke {
        [.., a, b] => draw_segment(target, layout, a, b),
        [only] => draw_segment(target, layout, only, only),
        [] => Ok(()),
    }
}

fn draw_header<D: DrawTarget<Color = Rgb888>>(target: &mut D, layout: &Layout, text: &str) -> Result<(), D::Error> {
    target.fill_solid(&layout.header, palette::HEADER)?;
    let style = MonoTextStyle::new(layout.font, palette::HEADER_TEXT);
    let left = Point::new(layout.margin as i32, layout.header.center().y);
    let brand = "Autograph";
    Text::with_baseline(brand, left, style, Baseline::Middle).draw(target)?;
    let char_w = layout.font.character_size.width + layout.font.character_spacing;
    let room = (layout.size.width - 3 * layout.margin) / char_w;
    let text = fit(text, room.saturating_sub(brand.len() as u32 + 1) as usize);
    let right = Point::new((layout.size.width - layout.margin) as i32, layout.header.center().y);
    let aligned = TextStyleBuilder::new().alignment(Alignment::Right).baseline(Baseline::Middle).build();
    Text::with_text_style(&text, right, style, aligned).draw(target)?;
    Ok(())
}

/// `K` segments: done in green, the current one in blue, the rest grey.
fn draw_progress<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    k: usize,
    of: usize,
) -> Result<(), D::Error> {
    let of = of.max(1) as u32;
    let gap = layout.margin / 2;
    let band = layout.progress;
    let seg_w = (band.size.width - gap * (of - 1)) / of;
    for i in 0..of {
        let color = match (i as usize + 1).cmp(&k) {
            std::cmp::Ordering::Less => palette::PROGRESS_DONE,
            std::cmp::Ordering::Equal => palette::PROGRESS_CURRENT,
            std::cmp::Ordering::Greater => palette::PROGRESS_TODO,
        };
        let x = band.top_left.x + (i * (seg_w + gap)) as i32;
        target.fill_solid(
            &Rectangle::new(Point::new(x, band.top_left.y), Size::new(seg_w, band.size.height.max(2))),
            color,
        )?;
    }
    Ok(())
}

fn draw_box<D: DrawTarget<Color = Rgb888>>(target: &mut D, layout: &Layout) -> Result<(), D::Error> {
    let b = layout.signing_box;
    b.into_styled(
        PrimitiveStyleBuilder::new()
            .fill_color(palette::PAPER)
            .stroke_color(palette::BOX_BORDER)
            .stroke_width(2)
            .build(),
    )
    .draw(target)?;
    let inset = (layout.margin * 2) as i32;
    let x0 = b.top_left.x + inset;
    let x1 = b.top_left.x + b.size.width as i32 - 1 - inset;
    Line::new(Point::new(x0, layout.baseline_y), Point::new(x1, layout.baseline_y))
        .into_styled(PrimitiveStyle::with_stroke(palette::BASELINE, 2))
        .draw(target)?;
    // The "sign here" cross at the start of the baseline.
    let s = (layout.margin as i32).max(5);
    let (cx, cy) = (x0 + s, layout.baseline_y - s - 4);
    let cross = PrimitiveStyle::with_stroke(palette::BASELINE, 2);
    Line::new(Point::new(cx - s / 2, cy - s / 2), Point::new(cx + s / 2, cy + s / 2))
        .into_styled(cross)
        .draw(target)?;
    Line::new(Point::new(cx - s / 2, cy + s / 2), Point::new(cx + s / 2, cy - s / 2))
        .into_styled(cross)
        .draw(target)?;
    Ok(())
}

fn draw_prompt<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    notice: Option<&str>,
) -> Result<(), D::Error> {
    let b = layout.signing_box;
    let centre = Point::new(b.center().x, b.top_left.y + b.size.height as i32 * 3 / 10);
    draw_big_text(target, layout, "Sign in the box", centre, palette::TEXT)?;
    let line_h = layout.font.character_size.height as i32;
    let below = centre + Point::new(0, line_h * layout.title_scale as i32 / 2 + line_h);
    let centred = TextStyleBuilder::new().alignment(Alignment::Center).baseline(Baseline::Middle).build();
    let hint = "then touch Accept";
    Text::with_text_style(hint, below, MonoTextStyle::new(layout.font, palette::HINT), centred).draw(target)?;
    if let Some(notice) = notice {
        let room = (b.size.width / (layout.font.character_size.width + layout.font.character_spacing)) as usize;
        let at = below + Point::new(0, line_h + line_h / 2);
        Text::with_text_style(
            &fit(notice, room.saturating_sub(2)),
            at,
            MonoTextStyle::new(layout.font, palette::NOTICE),
            centred,
        )
        .draw(target)?;
    }
    Ok(())
}

fn draw_button<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    area: Rectangle,
    label: &str,
    color: Rgb888,
    enabled: bool,
    pressed: bool,
) -> Result<(), D::Error> {
    let fill = match (enabled, pressed) {
        (false, _) => palette::DISABLED,
        (true, true) => palette::PRESSED,
        (true, false) => color,
    };
    let radius = Size::new_equal(layout.margin);
    RoundedRectangle::with_equal_corners(area, radius).into_styled(PrimitiveStyle::with_fill(fill)).draw(target)?;
    let centred = TextStyleBuilder::new().alignment(Alignment::Center).baseline(Baseline::Middle).build();
    Text::with_text_style(label, area.center(), MonoTextStyle::new(layout.font, palette::BUTTON_TEXT), centred)
        .draw(target)?;
    Ok(())
}

fn draw_stroke<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    stroke: &Stroke,
) -> Result<(), D::Error> {
    match stroke.as_slice() {
        [only] => draw_segment(target, layout, only, only),
        points => {
            for pair in points.windows(2) {
                draw_segment(target, layout, &pair[0], &pair[1])?;
            }
            Ok(())
        }
    }
}

/// A round-capped segment between two box-coordinate points.
fn draw_segment<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    a: &autograph_shared::strokes::Point,
    b: &autograph_shared::strokes::Point,
) -> Result<(), D::Error> {
    let origin = layout.signing_box.top_left;
    let to_screen = |p: &autograph_shared::strokes::Point| origin + Point::new(p.x.round() as i32, p.y.round() as i32);
    let (pa, pb) = (to_screen(a), to_screen(b));
    let width = layout.ink_width(b.p.or(a.p));
    if pa != pb {
        Line::new(pa, pb).into_styled(PrimitiveStyle::with_stroke(palette::INK, width)).draw(target)?;
    }
    // Round joints and caps, so fast strokes do not show notches.
    Circle::with_center(pb, width).into_styled(PrimitiveStyle::with_fill(palette::INK)).draw(target)?;
    Ok(())
}

fn draw_result<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    outcome: &Outcome,
) -> Result<(), D::Error> {
    let panel = layout.panel;
    RoundedRectangle::with_equal_corners(panel, Size::new_equal(layout.margin * 2))
        .into_styled(PrimitiveStyle::with_fill(outcome.verdict.color()))
        .draw(target)?;
    draw_big_text(target, layout, outcome.verdict.title(), panel.center(), palette::HEADER_TEXT)?;

    let mut lines: Vec<String> = Vec::new();
    if let Some(user) = &outcome.user {
        lines.push(format!("Writer: {user}"));
    }
    match (outcome.score, outcome.threshold) {
        (Some(s), Some(t)) => lines.push(format!("Score {s:.4}  (threshold {t:.4})")),
        (Some(s), None) => lines.push(format!("Score {s:.4}")),
        _ => {}
    }
    lines.extend(outcome.detail.clone());
    let line_h = (layout.font.character_size.height * 3 / 2) as i32;
    let room = (layout.size.width / (layout.font.character_size.width + layout.font.character_spacing)) as usize;
    let centred = TextStyleBuilder::new().alignment(Alignment::Center).baseline(Baseline::Middle).build();
    let mut at = Point::new(panel.center().x, panel.top_left.y + panel.size.height as i32 + line_h);
    for line in &lines {
        Text::with_text_style(
            &fit(line, room.saturating_sub(2)),
            at,
            MonoTextStyle::new(layout.font, palette::TEXT),
            centred,
        )
        .draw(target)?;
        at.y += line_h;
    }
    Ok(())
}

/// `text` centred on `centre`, in the layout's font magnified `title_scale` times (the built-in
/// fonts stop at 10x20, too small to read at arm's length on a 7" panel).
fn draw_big_text<D: DrawTarget<Color = Rgb888>>(
    target: &mut D,
    layout: &Layout,
    text: &str,
    centre: Point,
    color: Rgb888,
) -> Result<(), D::Error> {
    let mut big = Magnify { target, scale: layout.title_scale.max(1), origin: centre };
    let centred = TextStyleBuilder::new().alignment(Alignment::Center).baseline(Baseline::Middle).build();
    Text::with_text_style(text, Point::zero(), MonoTextStyle::new(layout.font, color), centred).draw(&mut big)?;
    Ok(())
}

/// Draws each pixel as a `scale` x `scale` square around `origin`.
struct Magnify<'t, D> {
    target: &'t mut D,
    scale: u32,
    origin: Point,
}

impl<D> Dimensions for Magnify<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        // Text is placed around (0, 0); the real target clips.
        Rectangle::new(Point::new_equal(-4096), Size::new_equal(8192))
    }
}

impl<D: DrawTarget<Color = Rgb888>> DrawTarget for Magnify<'_, D> {
    type Color = Rgb888;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let s = self.scale as i32;
        for Pixel(p, color) in pixels {
            let square = Rectangle::new(self.origin + Point::new(p.x * s, p.y * s), Size::new_equal(self.scale));
            self.target.fill_solid(&square, color)?;
        }
        Ok(())
    }
}

/// `text` cut to `max` characters with "..." (the mono fonts have no ellipsis glyph).
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let keep: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{keep}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_fit_their_screens() {
        for (w, h) in [(320, 200), (480, 272), (800, 480), (1024, 600), (1920, 1080)] {
            let l = Layout::for_size(Size::new(w, h)).expect("layout");
            let screen = Rectangle::new(Point::zero(), l.size);
            for r in [l.header, l.progress, l.signing_box, l.clear, l.accept, l.panel] {
                assert_eq!(screen.intersection(&r), r, "{w}x{h}: {r:?} leaves the screen");
            }
            // Nothing touchable overlaps.
            assert!(l.signing_box.intersection(&l.clear).is_zero_sized(), "{w}x{h}");
            assert!(l.clear.intersection(&l.accept).is_zero_sized(), "{w}x{h}");
            assert!(l.signing_box.size.height >= h / 2, "{w}x{h}: box too small");
            assert!(l.baseline_y > l.signing_box.top_left.y && l.baseline_y < l.clear.top_left.y);
            assert_eq!(l.button_at(l.accept.center()), Some(Button::Accept));
            assert_eq!(l.button_at(l.clear.center()), Some(Button::Clear));
            assert_eq!(l.button_at(l.signing_box.center()), None);
            // The longest big text fits.
            let big = (l.font.character_size.width + l.font.character_spacing) * l.title_scale * 15;
            assert!(big < l.signing_box.size.width, "{w}x{h}");
        }
        assert!(Layout::for_size(Size::new(319, 240)).is_err());
    }

    #[test]
    fn names_and_fitting() {
        let ink = vec![vec![autograph_shared::strokes::Point::new(1.0, 1.0, 0, None)]];
        fn sign(ink: &[Stroke], progress: Option<(usize, usize)>) -> Screen<'_> {
            Screen::Sign { header: "", progress, ink, pressed: None, notice: None }
        }
        assert_eq!(sign(&[], None).name(), "prompt");
        assert_eq!(sign(&ink, None).name(), "signing");
        assert_eq!(sign(&ink, Some((1, 3))).name(), "enroll");
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdefg", 6), "abc...");
    }
}
