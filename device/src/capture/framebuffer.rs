//! An embedded-graphics [`DrawTarget`] over memory laid out as a Linux framebuffer: rows of
//! `line_length` bytes (the stride, which drivers often pad past `width * bytes_per_pixel`),
//! pixels in native byte order as RGB565 or XRGB8888. The same type draws into the mapped
//! `/dev/fb0` and into the headless backend's buffer, so what the tests check is what a kiosk
//! shows. Padding bytes at the end of each row are never written.

use embedded_graphics::pixelcolor::raw::RawU16;
use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

/// How one pixel is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// 16 bits: red 5, green 6, blue 5 (red in the high bits); small panels.
    Rgb565,
    /// 32 bits: unused 8, red 8, green 8, blue 8 (blue in the low byte); HDMI and most DRM
    /// framebuffer emulations.
    Xrgb8888,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb565 => 2,
            PixelFormat::Xrgb8888 => 4,
        }
    }

    /// The stored bytes of `color`.
    fn encode(self, color: Rgb888, out: &mut [u8]) {
        match self {
            PixelFormat::Rgb565 => {
                let raw: u16 = Rgb565::from(color).into_storage();
                out.copy_from_slice(&raw.to_ne_bytes());
            }
            PixelFormat::Xrgb8888 => {
                let raw = u32::from(color.r()) << 16 | u32::from(color.g()) << 8 | u32::from(color.b());
                out.copy_from_slice(&raw.to_ne_bytes());
            }
        }
    }

    /// The colour stored in `bytes` (`bytes_per_pixel` of them).
    fn decode(self, bytes: &[u8]) -> Rgb888 {
        match self {
            PixelFormat::Rgb565 => {
                let raw = u16::from_ne_bytes([bytes[0], bytes[1]]);
                Rgb888::from(Rgb565::from(RawU16::new(raw)))
            }
            PixelFormat::Xrgb8888 => {
                let raw = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                Rgb888::new((raw >> 16) as u8, (raw >> 8) as u8, raw as u8)
            }
        }
    }

    /// What this format shows for `color` (RGB565 drops low bits).
    pub fn quantise(self, color: Rgb888) -> Rgb888 {
        let mut bytes = [0u8; 4];
        let n = self.bytes_per_pixel();
        self.encode(color, &mut bytes[..n]);
        self.decode(&bytes[..n])
    }
}

/// Why a buffer cannot be drawn into with the given geometry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the screen is {width}x{height}: both sides must be at least 1")]
    Empty { width: u32, height: u32 },
    #[error("line length {stride} bytes is shorter than {width} pixels of {bpp} bytes")]
    StrideTooShort { stride: usize, width: u32, bpp: usize },
    #[error("the buffer has {len} bytes; {height} lines of {stride} bytes need {needed}")]
    BufferTooShort { len: usize, height: u32, stride: usize, needed: usize },
}

/// Where the pixels are and how they are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// Bytes from the start of one row to the start of the next.
    pub stride: usize,
    pub format: PixelFormat,
}

impl Geometry {
    /// A geometry without row padding.
    pub fn packed(width: u32, height: u32, format: PixelFormat) -> Self {
        Self { width, height, stride: width as usize * format.bytes_per_pixel(), format }
    }

    /// Bytes a buffer needs: every full row but the last, which needs only its pixels.
    pub fn min_len(&self) -> usize {
        let rows = self.height.saturating_sub(1) as usize;
        rows * self.stride + self.width as usize * self.format.bytes_per_pixel()
    }

    /// Checks that the geometry makes sense and a buffer of `len` bytes holds it.
    pub fn check(&self, len: usize) -> Result<(), LayoutError> {
        let Geometry { width, height, stride, format } = *self;
        if width == 0 || height == 0 {
            return Err(LayoutError::Empty { width, height });
        }
        let bpp = format.bytes_per_pixel();
        if stride < width as usize * bpp {
            return Err(LayoutError::StrideTooShort { stride, width, bpp });
        }
        let needed = self.min_len();
        if len < needed {
            return Err(LayoutError::BufferTooShort { len, height, stride, needed });
        }
        Ok(())
    }

    fn offset(&self, x: u32, y: u32) -> usize {
        y as usize * self.stride + x as usize * self.format.bytes_per_pixel()
    }
}

/// Draws into framebuffer-layout memory. Pixels outside the screen are skipped, as
/// embedded-graphics expects of a display.
pub struct FramebufferTarget<'a> {
    buffer: &'a mut [u8],
    geometry: Geometry,
}

impl std::fmt::Debug for FramebufferTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramebufferTarget").field("geometry", &self.geometry).finish_non_exhaustive()
    }
}

impl<'a> FramebufferTarget<'a> {
    /// Checks that `buffer` holds `geometry.height` rows of `geometry.stride` bytes.
    pub fn new(buffer: &'a mut [u8], geometry: Geometry) -> Result<Self, LayoutError> {
        geometry.check(buffer.len())?;
        Ok(Self { buffer, geometry })
    }

    /// For buffers whose length was checked against `geometry` when they were made.
    pub(super) fn checked_before(buffer: &'a mut [u8], geometry: Geometry) -> Self {
        debug_assert!(geometry.check(buffer.len()).is_ok());
        Self { buffer, geometry }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The colour at `(x, y)`, as stored; `None` outside the screen.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb888> {
        read_pixel(self.buffer, &self.geometry, x, y)
    }

    fn put(&mut self, x: u32, y: u32, color: Rgb888) {
        let at = self.geometry.offset(x, y);
        let n = self.geometry.format.bytes_per_pixel();
        self.geometry.format.encode(color, &mut self.buffer[at..at + n]);
    }
}

/// The colour at `(x, y)` of a buffer in `geometry`'s layout; `None` outside it or the buffer.
pub fn read_pixel(buffer: &[u8], geometry: &Geometry, x: u32, y: u32) -> Option<Rgb888> {
    if x >= geometry.width || y >= geometry.height {
        return None;
    }
    let at = geometry.offset(x, y);
    buffer.get(at..at + geometry.format.bytes_per_pixel()).map(|b| geometry.format.decode(b))
}

impl OriginDimensions for FramebufferTarget<'_> {
    fn size(&self) -> Size {
        Size::new(self.geometry.width, self.geometry.height)
    }
}

impl DrawTarget for FramebufferTarget<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = (self.geometry.width, self.geometry.height);
        for Pixel(point, color) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y))
                && x < w
                && y < h
            {
                self.put(x, y, color);
            }
        }
        Ok(())
    }

    /// Row by row: backgrounds and panels are most of every frame.
    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let Some(bottom_right) = area.bottom_right() else { return Ok(()) };
        let n = self.geometry.format.bytes_per_pixel();
        let mut pixel = [0u8; 4];
        self.geometry.format.encode(color, &mut pixel[..n]);
        // Inside the screen after the intersection, so the coordinates are not negative.
        let (x0, x1) = (area.top_left.x as u32, bottom_right.x as u32);
        for y in area.top_left.y as u32..=bottom_right.y as u32 {
            let start = self.geometry.offset(x0, y);
            let end = self.geometry.offset(x1, y) + n;
            for chunk in self.buffer[start..end].chunks_exact_mut(n) {
                chunk.copy_from_slice(&pixel[..n]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};

    const PAD: u8 = 0xA5;

    #[test]
    fn geometry_is_checked() {
        let g = Geometry { width: 4, height: 2, stride: 20, format: PixelFormat::Xrgb8888 };
        assert_eq!(g.min_len(), 36);
        assert!(FramebufferTarget::new(&mut [0u8; 36], g).is_ok());
        assert!(matches!(FramebufferTarget::new(&mut [0u8; 35], g), Err(LayoutError::BufferTooShort { .. })));
        let short = Geometry { stride: 15, ..g };
        assert!(matches!(FramebufferTarget::new(&mut [0u8; 64], short), Err(LayoutError::StrideTooShort { .. })));
        let empty = Geometry { width: 0, ..g };
        assert!(matches!(FramebufferTarget::new(&mut [0u8; 64], empty), Err(LayoutError::Empty { .. })));
    }

    #[test]
    fn both_formats_store_the_same_colour_and_keep_padding() {
        let color = Rgb888::new(0xFF, 0x80, 0x10);
        for (format, stride) in [(PixelFormat::Rgb565, 2 * 5 + 6), (PixelFormat::Xrgb8888, 4 * 5 + 12)] {
            let g = Geometry { width: 5, height: 3, stride, format };
            let mut buffer = vec![PAD; stride * 3];
            let mut target = FramebufferTarget::new(&mut buffer, g).expect("layout");
            target.clear(Rgb888::WHITE).expect("infallible");
            Rectangle::new(Point::new(1, 1), Size::new(3, 1))
                .into_styled(PrimitiveStyle::with_fill(color))
                .draw(&mut target)
                .expect("infallible");
            Pixel(Point::new(4, 2), color).draw(&mut target).expect("infallible");
            // Off-screen pixels are ignored, not wrapped into the next row or the padding.
            Pixel(Point::new(5, 0), color).draw(&mut target).expect("infallible");
            Pixel(Point::new(-1, 1), color).draw(&mut target).expect("infallible");
            assert_eq!(target.pixel(2, 1), Some(format.quantise(color)));
            assert_eq!(target.pixel(4, 2), Some(format.quantise(color)));
            assert_eq!(target.pixel(0, 1), Some(Rgb888::WHITE));
            assert_eq!(target.pixel(5, 0), None);
            let bpp = format.bytes_per_pixel();
            for row in buffer.chunks(stride) {
                assert!(row[5 * bpp..].iter().all(|&b| b == PAD), "{format:?}: padding was written");
            }
            let at = stride + 2 * bpp;
            match format {
                PixelFormat::Rgb565 => {
                    assert_eq!(u16::from_ne_bytes([buffer[at], buffer[at + 1]]), (31 << 11) | (32 << 5) | 2);
                }
                PixelFormat::Xrgb8888 => {
                    let raw = u32::from_ne_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]]);
                    assert_eq!(raw, 0x00FF_8010);
                }
            }
        }
        assert_eq!(PixelFormat::Rgb565.quantise(Rgb888::new(0xFF, 0x80, 0x10)), Rgb888::new(0xFF, 0x82, 0x10));
        assert_eq!(PixelFormat::Xrgb8888.quantise(Rgb888::new(1, 2, 3)), Rgb888::new(1, 2, 3));
    }
}
