//! Where frames go: the Linux framebuffer (`/dev/fb0`) on a kiosk, or a memory buffer saved as
//! PNG files when headless. Both draw through [`FramebufferTarget`] into framebuffer-layout
//! memory, so a headless screenshot is byte for byte what the panel would get.

use std::path::{Path, PathBuf};

use embedded_graphics::prelude::*;
use image::RgbImage;

use super::framebuffer::{FramebufferTarget, Geometry, LayoutError, PixelFormat, read_pixel};

/// Why a display cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("cannot open the framebuffer {}: {details} (is the user in the `video` group?)", path.display())]
    Open { path: PathBuf, details: String },
    #[error(
        "{}: {bits} bits per pixel with red at bit {red}, green at {green}, blue at {blue} is not supported \
         (RGB565 and XRGB8888 are; try `fbset -depth 32` or `-depth 16`)",
        path.display()
    )]
    Unsupported { path: PathBuf, bits: u32, red: u32, green: u32, blue: u32 },
    #[error("{}: {source}", path.display())]
    Layout { path: PathBuf, source: LayoutError },
    #[error("cannot write {}: {source}", path.display())]
    Save { path: PathBuf, source: image::ImageError },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
}

/// A screen the kiosk draws on.
pub trait Display {
    fn size(&self) -> Size;
    /// The frame to draw into.
    fn target(&mut self) -> FramebufferTarget<'_>;
    /// Shows the frame. `name` marks a screen worth keeping (prompt, signing, result): the
    /// headless backend saves those as numbered PNG files; live updates pass `None`.
    fn present(&mut self, name: Option<&str>) -> Result<(), DisplayError>;
    /// Files written so far (headless screenshots).
    fn written(&self) -> &[PathBuf] {
        &[]
    }
}

/// Frames in memory, saved as PNG.
#[derive(Debug)]
pub struct Headless {
    buffer: Vec<u8>,
    geometry: Geometry,
    out_dir: Option<PathBuf>,
    written: Vec<PathBuf>,
}

impl Headless {
    /// A `size` screen in `format` without row padding; named frames go to `out_dir` (created
    /// if missing) as `NN-name.png`.
    pub fn new(size: Size, format: PixelFormat, out_dir: Option<PathBuf>) -> Result<Self, DisplayError> {
        Self::with_geometry(Geometry::packed(size.width, size.height, format), out_dir)
    }

    /// Like [`Headless::new`] with any layout, e.g. a padded stride as some drivers use.
    pub fn with_geometry(geometry: Geometry, out_dir: Option<PathBuf>) -> Result<Self, DisplayError> {
        geometry
            .check(geometry.min_len())
            .map_err(|source| DisplayError::Layout { path: "(memory)".into(), source })?;
        let buffer = vec![0u8; geometry.min_len()];
        if let Some(dir) = &out_dir {
            std::fs::create_dir_all(dir).map_err(|source| DisplayError::CreateDir { path: dir.clone(), source })?;
        }
        Ok(Self { buffer, geometry, out_dir, written: Vec::new() })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The raw framebuffer bytes.
    pub fn buffer(&self) -> &[u8] {
        &self.buffer
    }

    /// The frame as an RGB image, decoded from the stored pixel format.
    pub fn to_image(&self) -> RgbImage {
        RgbImage::from_fn(self.geometry.width, self.geometry.height, |x, y| {
            let c = read_pixel(&self.buffer, &self.geometry, x, y).unwrap_or_default();
            image::Rgb([c.r(), c.g(), c.b()])
        })
    }

    /// Writes the frame as a PNG file. The PNG encoder is named directly rather than through
    /// `save_with_format`, whose format switch links every encoder `image` has (the kiosk
    /// binary's size budget).
    pub fn save_png(&self, path: &Path) -> Result<(), DisplayError> {
        use image::ImageEncoder;
        let save_err = |source| DisplayError::Save { path: path.to_path_buf(), source };
        let image = self.to_image();
        let file = std::fs::File::create(path).map_err(|e| save_err(image::ImageError::IoError(e)))?;
        let mut writer = std::io::BufWriter::new(file);
        image::codecs::png::PngEncoder::new(&mut writer)
            .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
            .map_err(save_err)?;
        std::io::Write::flush(&mut writer).map_err(|e| save_err(image::ImageError::IoError(e)))
    }
}

impl Display for Headless {
    fn size(&self) -> Size {
        Size::new(self.geometry.width, self.geometry.height)
    }

    fn target(&mut self) -> FramebufferTarget<'_> {
        // Sized and checked for the geometry in `with_geometry`.
        FramebufferTarget::checked_before(&mut self.buffer, self.geometry)
    }

    fn present(&mut self, name: Option<&str>) -> Result<(), DisplayError> {
        if let (Some(name), Some(dir)) = (name, &self.out_dir) {
            let path = dir.join(format!("{:02}-{name}.png", self.written.len() + 1));
            self.save_png(&path)?;
            self.written.push(path);
        }
        Ok(())
    }

    fn written(&self) -> &[PathBuf] {
        &self.written
    }
}

/// The Linux framebuffer device, mapped. Frames are drawn into a private copy of the visible
/// area and copied row by row on [`Display::present`], so a redraw never flickers and the
/// driver's row padding is left alone.
pub struct LinuxFramebuffer {
    fb: framebuffer::Framebuffer,
    path: PathBuf,
    geometry: Geometry,
    /// Byte offset of the visible area (the panned position) in the mapping.
    offset: usize,
    shadow: Vec<u8>,
}

impl std::fmt::Debug for LinuxFramebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxFramebuffer")
            .field("path", &self.path)
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

impl LinuxFramebuffer {
    /// Maps `path` and reads its resolution, pixel format and line length.
    pub fn open(path: &Path) -> Result<Self, DisplayError> {
        let fb = framebuffer::Framebuffer::new(path)
            .map_err(|e| DisplayError::Open { path: path.to_path_buf(), details: e.details })?;
        let var = &fb.var_screen_info;
        let (bits, red, green, blue) = (var.bits_per_pixel, var.red.offset, var.green.offset, var.blue.offset);
        let format = match (bits, red, green, blue) {
            (16, 11, 5, 0) => PixelFormat::Rgb565,
            (32, 16, 8, 0) => PixelFormat::Xrgb8888,
            _ => return Err(DisplayError::Unsupported { path: path.to_path_buf(), bits, red, green, blue }),
        };
        let stride = fb.fix_screen_info.line_length as usize;
        let geometry = Geometry { width: var.xres, height: var.yres, stride, format };
        let offset = var.yoffset as usize * stride + var.xoffset as usize * format.bytes_per_pixel();
        let visible = fb.frame.get(offset..).unwrap_or(&[]);
        geometry.check(visible.len()).map_err(|source| DisplayError::Layout { path: path.to_path_buf(), source })?;
        let shadow = visible[..geometry.min_len()].to_vec();
        Ok(Self { path: path.to_path_buf(), geometry, offset, shadow, fb })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
}

impl Display for LinuxFramebuffer {
    fn size(&self) -> Size {
        Size::new(self.geometry.width, self.geometry.height)
    }

    fn target(&mut self) -> FramebufferTarget<'_> {
        // Sized and checked for the geometry in `open`.
        FramebufferTarget::checked_before(&mut self.shadow, self.geometry)
    }

    fn present(&mut self, _name: Option<&str>) -> Result<(), DisplayError> {
        let row = self.geometry.width as usize * self.geometry.format.bytes_per_pixel();
        let frame = &mut self.fb.frame[self.offset..];
        for y in 0..self.geometry.height as usize {
            let at = y * self.geometry.stride;
            frame[at..at + row].copy_from_slice(&self.shadow[at..at + row]);
        }
        Ok(())
    }
}
