//! Image preprocessing: the one function the trainer and the device both call.
//!
//! bytes -> decode (with limits) -> grayscale -> background removal (Otsu) ->
//! contrast normalisation -> ink crop with margin -> aspect-preserving resize -> centre pad.
//!
//! The output is a `height x width` map of ink intensity in `[0, 1]`: background is exactly 0
//! whatever the scanner's paper level was (CEDAR's genuine scans are grey, its forgeries white),
//! and the darkest strokes sit near 1. Every step is scalar integer or IEEE f32 arithmetic with
//! no platform-specific SIMD, so the same bytes give the same tensor on x86_64 and ARM.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageBuffer, ImageError, ImageReader, Luma};
use serde::{Deserialize, Serialize};

/// Every preprocessing parameter. Stored verbatim in the model manifest so the device
/// preprocesses exactly as the trainer did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Output height in pixels.
    pub height: u32,
    /// Output width in pixels.
    pub width: u32,
    /// Margin kept around the ink bounding box, as a fraction of the box's longer side.
    pub margin: f32,
    /// Fraction of ink pixels ignored at each side when finding the bounding box, so that a
    /// stray speck far from the signature does not decide the crop.
    pub crop_trim: f32,
    /// Quantile of ink pixel values taken as "full ink" for contrast normalisation.
    pub ink_quantile: f32,
    /// Minimum difference between paper and ink grey levels (0-255); below it the page is blank.
    pub min_contrast: u8,
    /// Fewer ink pixels than this means the page holds no signature.
    pub min_ink_pixels: u32,
    /// Largest accepted input width or height; larger headers are refused before decoding.
    pub max_input_side: u32,
    /// Largest allocation the decoder may make, in bytes.
    pub max_decode_bytes: u64,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            height: 64,
            width: 128,
            margin: 0.04,
            crop_trim: 0.002,
            ink_quantile: 0.05,
            min_contrast: 24,
            min_ink_pixels: 20,
            max_input_side: 12_000,
            max_decode_bytes: 256 * 1024 * 1024,
        }
    }
}

impl PreprocessConfig {
    /// Checks the parameters themselves (a manifest may have been edited by hand).
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |what: &str| Err(PreprocessError::InvalidConfig(what.to_string()));
        if self.height == 0 || self.width == 0 || self.height > 1024 || self.width > 1024 {
            return bad("height and width must be between 1 and 1024");
        }
        if !(0.0..=1.0).contains(&self.margin) {
            return bad("margin must be within [0, 1]");
        }
        if !(0.0..0.5).contains(&self.crop_trim) {
            return bad("crop_trim must be within [0, 0.5)");
        }
        if !(0.0..1.0).contains(&self.ink_quantile) {
            return bad("ink_quantile must be within [0, 1)");
        }
        Ok(())
    }
}

/// A preprocessed image: `height * width` ink intensities, row-major, ink high.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    pub height: u32,
    pub width: u32,
    pub pixels: Vec<f32>,
}

/// Why an image could not be preprocessed.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("the file is empty")]
    Empty,
    #[error("unknown or unsupported image format")]
    UnknownFormat,
    #[error("the image data is truncated")]
    Truncated,
    #[error("the image is corrupt: {0}")]
    Corrupt(String),
    #[error("the image has zero width or height")]
    ZeroSize,
    #[error("the image header claims {width}x{height} pixels, over the limit of {limit} per side")]
    TooLarge { width: u32, height: u32, limit: u32 },
    #[error("decoding would need more memory than the limit of {limit} bytes")]
    MemoryLimit { limit: u64 },
    #[error("no ink found: the page is blank or has too little contrast")]
    NoInk,
    #[error("invalid preprocessing configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    InFile { path: PathBuf, source: Box<PreprocessError> },
}

impl PreprocessError {
    /// The underlying problem, without the file name wrapper.
    pub fn kind(&self) -> &PreprocessError {
        match self {
            PreprocessError::InFile { source, .. } => source.kind(),
            other => other,
        }
    }
}

/// Reads and preprocesses an image file; errors name the file.
pub fn preprocess_file(path: &Path, config: &PreprocessConfig) -> Result<Preprocessed, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Io { path: path.to_path_buf(), source })?;
    preprocess_bytes(&bytes, config)
        .map_err(|e| PreprocessError::InFile { path: path.to_path_buf(), source: Box::new(e) })
}

/// Decodes and preprocesses an encoded image (PNG, JPEG, TIFF, BMP).
pub fn preprocess_bytes(bytes: &[u8], config: &PreprocessConfig) -> Result<Preprocessed, PreprocessError> {
    let gray = decode_gray(bytes, config)?;
    preprocess_gray(&gray, config)
}

/// Decodes any supported image to 8-bit grayscale, refusing absurd headers before allocating.
pub fn decode_gray(bytes: &[u8], config: &PreprocessConfig) -> Result<GrayImage, PreprocessError> {
    decode_image(bytes, config).map(to_gray)
}

/// [`decode_gray`] without the grey conversion, which the benchmark times on its own.
fn decode_image(bytes: &[u8], config: &PreprocessConfig) -> Result<DynamicImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(PreprocessError::UnknownFormat)?;
    let (width, height) = reader_dimensions(bytes, format)?;
    check_dimensions(width, height, config)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(config.max_input_side);
    limits.max_image_height = Some(config.max_input_side);
    limits.max_alloc = Some(config.max_decode_bytes);
    reader.limits(limits);
    match reader.decode() {
        Ok(img) => Ok(img),
        Err(ImageError::Unsupported(_)) if format == image::ImageFormat::Tiff => {
            decode_palette_tiff(bytes, config).map(DynamicImage::ImageLuma8)
        }
        Err(e) => Err(map_image_error(e, config)),
    }
}

fn reader_dimensions(bytes: &[u8], format: image::ImageFormat) -> Result<(u32, u32), PreprocessError> {
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    match reader.into_dimensions() {
        Ok(dims) => Ok(dims),
        // Palette TIFFs are not understood by `image`; the TIFF path checks its own header.
        Err(ImageError::Unsupported(_)) if format == image::ImageFormat::Tiff => Ok((1, 1)),
        Err(e) => Err(map_image_error(e, &PreprocessConfig::default())),
    }
}

fn check_dimensions(width: u32, height: u32, config: &PreprocessConfig) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::ZeroSize);
    }
    if width > config.max_input_side || height > config.max_input_side {
        return Err(PreprocessError::TooLarge { width, height, limit: config.max_input_side });
    }
    Ok(())
}

fn map_image_error(e: ImageError, config: &PreprocessConfig) -> PreprocessError {
    match e {
        ImageError::Unsupported(_) => PreprocessError::UnknownFormat,
        ImageError::Limits(_) => PreprocessError::MemoryLimit { limit: config.max_decode_bytes },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => PreprocessError::Truncated,
        ImageError::Decoding(d) => {
            let msg = d.to_string();
            let lower = msg.to_lowercase();
            if lower.contains("eof") || lower.contains("unexpected end") || lower.contains("truncat") {
                PreprocessError::Truncated
            } else {
                PreprocessError::Corrupt(msg)
            }
        }
        ImageError::Parameter(p) if p.to_string().to_lowercase().contains("dimension") => PreprocessError::ZeroSize,
        other => PreprocessError::Corrupt(other.to_string()),
    }
}

fn to_gray(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(g) => g,
        // Flatten alpha onto white paper first: a transparent background is paper, not ink.
        other if other.color().has_alpha() => {
            let rgba = other.to_rgba8();
            let mut g = GrayImage::new(rgba.width(), rgba.height());
            for (dst, src) in g.pixels_mut().zip(rgba.pixels()) {
                let [r, gr, b, a] = src.0;
                let luma = (299 * r as u32 + 587 * gr as u32 + 114 * b as u32) / 1000;
                let a = a as u32;
                dst.0[0] = ((luma * a + 255 * (255 - a)) / 255) as u8;
            }
            g
        }
        other => other.to_luma8(),
    }
}

/// Neither `image` nor `tiff` 0.11 decodes palette TIFFs (5 files of the BHSig260 sample are
/// such: uncompressed, 8-bit, grey colour map), so we read their strips and look each index up
/// in the colour map. Compressed palette TIFFs are refused as unsupported.
fn decode_palette_tiff(bytes: &[u8], config: &PreprocessConfig) -> Result<GrayImage, PreprocessError> {
    use tiff::decoder::Decoder;
    use tiff::tags::Tag;
    let tiff_err = |e: tiff::TiffError| match e {
        tiff::TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => PreprocessError::Truncated,
        tiff::TiffError::LimitsExceeded => PreprocessError::MemoryLimit { limit: config.max_decode_bytes },
        other => PreprocessError::Corrupt(other.to_string()),
    };
    let mut decoder = Decoder::new(Cursor::new(bytes)).map_err(tiff_err)?;
    let (width, height) = decoder.dimensions().map_err(tiff_err)?;
    check_dimensions(width, height, config)?;
    let photometric = decoder.get_tag_u32(Tag::PhotometricInterpretation).map_err(tiff_err)?;
    let bits = decoder.get_tag_u32(Tag::BitsPerSample).map_err(tiff_err)?;
    let compression =
        decoder.find_tag(Tag::Compression).map_err(tiff_err)?.map(|v| v.into_u32()).transpose().map_err(tiff_err)?;
    if photometric != 3 || !matches!(bits, 1 | 2 | 4 | 8) || compression.unwrap_or(1) != 1 {
        return Err(PreprocessError::UnknownFormat);
    }
    let map = decoder.get_tag_u16_vec(Tag::ColorMap).map_err(tiff_err)?;
    let entries = 1usize << bits;
    if map.len() < 3 * entries {
        return Err(PreprocessError::Corrupt("TIFF colour map is shorter than its bit depth needs".into()));
    }
    let offsets = decoder.get_tag_u64_vec(Tag::StripOffsets).map_err(tiff_err)?;
    let counts = decoder.get_tag_u64_vec(Tag::StripByteCounts).map_err(tiff_err)?;
    if offsets.len() != counts.len() {
        return Err(PreprocessError::Corrupt("TIFF strip offsets and byte counts differ in length".into()));
    }
    let row_bytes = (width as usize * bits as usize).div_ceil(8);
    let needed = row_bytes * height as usize;
    if needed as u64 > config.max_decode_bytes {
        return Err(PreprocessError::MemoryLimit { limit: config.max_decode_bytes });
    }
    let mut indices = Vec::with_capacity(needed);
    for (&offset, &count) in offsets.iter().zip(&counts) {
        let start = usize::try_from(offset).map_err(|_| PreprocessError::Truncated)?;
        let end = start.checked_add(usize::try_from(count).map_err(|_| PreprocessError::Truncated)?);
        let strip = end.and_then(|end| bytes.get(start..end)).ok_or(PreprocessError::Truncated)?;
        // Strips may overlap or repeat: keep only the image's own bytes (a 110 KB file of 12 000
        // strips, each the whole file, asked for 1.3 GB; fuzz/src/seeds.rs).
        let wanted = needed - indices.len();
        indices.extend_from_slice(&strip[..strip.len().min(wanted)]);
    }
    if indices.len() < needed {
        return Err(PreprocessError::Truncated);
    }
    let lut: Vec<u8> = (0..entries)
        .map(|i| {
            let (r, g, b) = (map[i] as u32 >> 8, map[entries + i] as u32 >> 8, map[2 * entries + i] as u32 >> 8);
            ((299 * r + 587 * g + 114 * b) / 1000) as u8
        })
        .collect();
    let per_byte = 8 / bits as usize;
    let mask = ((1u16 << bits) - 1) as u8;
    let mut out = GrayImage::new(width, height);
    for (y, row) in indices.chunks_exact(row_bytes).take(height as usize).enumerate() {
        for x in 0..width as usize {
            let byte = row[x / per_byte];
            let shift = 8 - bits as usize * (x % per_byte + 1);
            let idx = (byte >> shift) & mask;
            out.put_pixel(x as u32, y as u32, Luma([lut[idx as usize]]));
        }
    }
    Ok(out)
}

/// Preprocesses an already decoded grayscale image (scans, or strokes rasterised on the device).
pub fn preprocess_gray(gray: &GrayImage, config: &PreprocessConfig) -> Result<Preprocessed, PreprocessError> {
    config.validate()?;
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return Err(PreprocessError::ZeroSize);
    }
    let levels = stages::ink_levels(gray.as_raw(), config)?;
    let bbox = stages::ink_bounding_box(gray, levels.threshold, config);
    let (nw, nh) = stages::output_size(bbox, config);
    let resized = stages::crop_resize(gray, &levels, bbox, nw, nh);
    Ok(stages::pad(&resized, nw, nh, config))
}

/// The stages of [`preprocess_gray`], public only so that `benches/preprocess.rs` can time each
/// one against [`mod@reference`]. Every stage gives bit-identical results to the reference's.
#[doc(hidden)]
pub mod stages {
    use super::*;

    /// Decodes without the grey conversion (palette TIFFs come back grey already).
    pub fn decode_image(bytes: &[u8], config: &PreprocessConfig) -> Result<DynamicImage, PreprocessError> {
        super::decode_image(bytes, config)
    }

    /// Grey conversion; a move for 8-bit grey inputs (every image of the real sets).
    pub fn to_gray(img: DynamicImage) -> GrayImage {
        super::to_gray(img)
    }

    /// Otsu's threshold (ink <= threshold) and the paper and ink grey levels of one image.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InkLevels {
        pub threshold: u8,
        pub paper: u8,
        pub ink: u8,
    }

    impl InkLevels {
        /// Ink intensity of every grey level, so each pixel costs a lookup instead of a
        /// division. Same expression as the reference's per-pixel closure, hence same bits.
        pub fn table(&self) -> [f32; 256] {
            let span = (self.paper - self.ink) as f32;
            std::array::from_fn(|p| {
                let p = p as u8;
                if p > self.threshold { 0.0 } else { ((self.paper as f32 - p as f32) / span).clamp(0.0, 1.0) }
            })
        }
    }

    /// Histogram, Otsu's threshold, paper and ink levels; refuses pages without ink.
    pub fn ink_levels(pixels: &[u8], config: &PreprocessConfig) -> Result<InkLevels, PreprocessError> {
        let histogram = histogram(pixels);
        let threshold = otsu_threshold(&histogram);
        let ink_count: u64 = histogram[..=threshold as usize].iter().sum();
        let paper_count = pixels.len() as u64 - ink_count;
        if ink_count < config.min_ink_pixels as u64 || paper_count == 0 {
            return Err(PreprocessError::NoInk);
        }
        // Paper level: the median grey of the background class. Ink reference: a low quantile
        // of the ink class. Both come from the image itself, so scanner level and pen darkness
        // cancel.
        let paper = quantile_in(&histogram, threshold as usize + 1, 255, 0.5);
        let ink = quantile_in(&histogram, 0, threshold as usize, config.ink_quantile);
        if paper.saturating_sub(ink) < config.min_contrast {
            return Err(PreprocessError::NoInk);
        }
        Ok(InkLevels { threshold, paper, ink })
    }

    /// Grey-level counts. A block of 16 pixels equal to the current run's grey (paper, mostly)
    /// only lengthens the run, kept in a register; other pixels go to four interleaved tables, as
    /// with a single table every increment of equal pixels waits for the previous one.
    fn histogram(pixels: &[u8]) -> [u64; 256] {
        let mut total = [0u64; 256];
        // Blocks short enough that u32 counts cannot overflow.
        for block in pixels.chunks(1 << 28) {
            let mut parts = [[0u32; 256]; 4];
            const ONES: u128 = u128::MAX / 255; // 0x0101...01
            let (mut run_grey, mut run) = (0u8, 0u32);
            let (sixteens, rest) = block.as_chunks::<16>();
            for b in sixteens {
                let word = u128::from_le_bytes(*b);
                if word == u128::from(run_grey) * ONES {
                    run += 16;
                } else if word == word.rotate_left(8) {
                    parts[0][run_grey as usize] += run;
                    (run_grey, run) = (b[0], 16);
                } else {
                    for (i, &p) in b.iter().enumerate() {
                        parts[i % 4][p as usize] += 1;
                    }
                }
            }
            parts[0][run_grey as usize] += run;
            for &p in rest {
                parts[0][p as usize] += 1;
            }
            for part in &parts {
                for (t, &c) in total.iter_mut().zip(part) {
                    *t += u64::from(c);
                }
            }
        }
        total
    }

    /// Ink bounding box `(x0, x1, y0, y1)`, trimmed by `crop_trim` of the ink mass on each side,
    /// plus the margin. Ink per column is counted over row slices in u8 counters flushed every
    /// 255 rows (16 or 32 pixels per vector instruction); ink per row only for the rows the trim
    /// reaches from either end, a few rows of a page.
    pub fn ink_bounding_box(gray: &GrayImage, threshold: u8, config: &PreprocessConfig) -> (u32, u32, u32, u32) {
        let (w, h) = gray.dimensions();
        let rows: Vec<&[u8]> = gray.as_raw().chunks_exact(w as usize).take(h as usize).collect();
        let mut cols = vec![0u64; w as usize];
        let mut recent = vec![0u8; w as usize];
        for block in rows.chunks(255) {
            for row in block {
                for (c, &p) in recent.iter_mut().zip(*row) {
                    *c += u8::from(p <= threshold);
                }
            }
            for (c, r) in cols.iter_mut().zip(recent.iter_mut()) {
                *c += u64::from(*r);
                *r = 0;
            }
        }
        let total: u64 = cols.iter().sum();
        // u8 sums of at most 255 pixels vectorise 16 or 32 wide and cannot overflow.
        let ink_in_row = |y: usize| -> u64 {
            let ink_in = |c: &[u8]| c.iter().fold(0u8, |n, &p| n + u8::from(p <= threshold));
            rows[y].chunks(255).map(|c| u64::from(ink_in(c))).sum()
        };
        let (x0, x1) = trimmed_extent(cols.len(), total, config.crop_trim, |x| cols[x]);
        let (y0, y1) = trimmed_extent(rows.len(), total, config.crop_trim, ink_in_row);
        let margin = (config.margin * (x1 - x0 + 1).max(y1 - y0 + 1) as f32).round() as u32;
        (x0.saturating_sub(margin), (x1 + margin).min(w - 1), y0.saturating_sub(margin), (y1 + margin).min(h - 1))
    }

    /// First and last index once `trim` of `total` is passed from either end; `count(i)` is
    /// asked only for the indices the two scans reach.
    fn trimmed_extent(len: usize, total: u64, trim: f32, count: impl Fn(usize) -> u64) -> (u32, u32) {
        let cut = (total as f64 * trim as f64).floor() as u64;
        let mut acc = 0u64;
        let mut lo = 0usize;
        for i in 0..len {
            acc += count(i);
            if acc > cut {
                lo = i;
                break;
            }
        }
        acc = 0;
        let mut hi = len - 1;
        for i in (0..len).rev() {
            acc += count(i);
            if acc > cut {
                hi = i;
                break;
            }
        }
        (lo as u32, hi.max(lo) as u32)
    }

    /// The stretches of `row` that hold ink (a pixel `<= threshold`), in 16-pixel blocks, merged
    /// when adjacent; the rest is paper, whose ink value is exactly 0. Tests a block at a time,
    /// which vectorises.
    fn ink_runs(row: &[u8], threshold: u8, runs: &mut Vec<(usize, usize)>) {
        const BLOCK: usize = 16;
        let has_ink = |b: &[u8]| b.iter().fold(false, |a, &p| a | (p <= threshold));
        let push = |runs: &mut Vec<(usize, usize)>, a: usize, b: usize| match runs.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => runs.push((a, b)),
        };
        runs.clear();
        let (blocks, rest) = row.as_chunks::<BLOCK>();
        for (i, block) in blocks.iter().enumerate() {
            if has_ink(block) {
                push(runs, i * BLOCK, (i + 1) * BLOCK);
            }
        }
        if has_ink(rest) {
            push(runs, row.len() - rest.len(), row.len());
        }
    }

    /// Size of the resized crop: aspect kept, fitted into the output.
    pub fn output_size((x0, x1, y0, y1): (u32, u32, u32, u32), config: &PreprocessConfig) -> (u32, u32) {
        let (cw, ch) = (x1 - x0 + 1, y1 - y0 + 1);
        let scale = (config.width as f32 / cw as f32).min(config.height as f32 / ch as f32);
        let nw = ((cw as f32 * scale).round() as u32).clamp(1, config.width);
        let nh = ((ch as f32 * scale).round() as u32).clamp(1, config.height);
        (nw, nh)
    }

    /// Triangle-filter taps along one axis of `image::imageops::resize` (0.25): output `o` reads
    /// source `start[o]..` with `weights[offset[o]..offset[o + 1]]`. Same f32 operations in the
    /// same order as `image`, so the weights are bit-identical.
    struct Taps {
        start: Vec<usize>,
        offset: Vec<usize>,
        weights: Vec<f32>,
    }

    impl Taps {
        fn triangle(src: usize, dst: usize) -> Taps {
            let ratio = src as f32 / dst as f32;
            let sratio = if ratio < 1.0 { 1.0 } else { ratio };
            let support = sratio; // the triangle's support is 1, scaled by `sratio`
            let mut taps = Taps { start: Vec::with_capacity(dst), offset: vec![0], weights: Vec::new() };
            for out in 0..dst {
                let centre = (out as f32 + 0.5) * ratio;
                let left = ((centre - support).floor() as i64).clamp(0, src as i64 - 1);
                let right = ((centre + support).ceil() as i64).clamp(left + 1, src as i64);
                let centre = centre - 0.5;
                let first = taps.weights.len();
                let mut sum = 0.0f32;
                for i in left..right {
                    let x = (i as f32 - centre) / sratio;
                    let w = if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 };
                    taps.weights.push(w);
                    sum += w;
                }
                for w in &mut taps.weights[first..] {
                    *w /= sum;
                }
                taps.start.push(left as usize);
                taps.offset.push(taps.weights.len());
            }
            taps
        }

        fn of(&self, out: usize) -> (usize, &[f32]) {
            (self.start[out], &self.weights[self.offset[out]..self.offset[out + 1]])
        }
    }

    /// Crop to ink intensities and resize (triangle filter) in one pass, `nh * nw` values in
    /// [0, 1]. Bit-identical to cropping to an f32 image and calling `image::imageops::resize`:
    /// the same vertical-then-horizontal passes with the same sums in the same order, but on one
    /// channel instead of four, without the full-resolution float crop (each source row is
    /// converted once, through the table), and skipping 16-pixel blocks of paper, which would add
    /// exact zeros to non-negative sums and so change nothing.
    pub fn crop_resize(
        gray: &GrayImage,
        levels: &InkLevels,
        (x0, x1, y0, y1): (u32, u32, u32, u32),
        nw: u32,
        nh: u32,
    ) -> Vec<f32> {
        let table = levels.table();
        let (x0, y0, w) = (x0 as usize, y0 as usize, gray.width() as usize);
        let (cw, ch) = (x1 as usize - x0 + 1, y1 as usize - y0 + 1);
        let (nw, nh) = (nw as usize, nh as usize);
        let raw = gray.as_raw();

        // Vertical pass, cw x nh. Source rows are visited in order and added to every output row
        // whose window holds them, so each output sums its taps in the reference's order.
        let rows = Taps::triangle(ch, nh);
        let mut mid = vec![0f32; nh * cw];
        let mut line = vec![0f32; cw];
        let mut runs = Vec::new();
        let mut first = 0usize;
        for sy in 0..ch {
            let src = &raw[(y0 + sy) * w + x0..][..cw];
            ink_runs(src, levels.threshold, &mut runs);
            if runs.is_empty() {
                continue;
            }
            for &(a, b) in &runs {
                for (d, &p) in line[a..b].iter_mut().zip(&src[a..b]) {
                    *d = table[p as usize];
                }
            }
            // Windows move monotonically down the source: skip those that ended above `sy`.
            while first < nh && rows.start[first] + (rows.offset[first + 1] - rows.offset[first]) <= sy {
                first += 1;
            }
            for oy in first..nh {
                let (start, weights) = rows.of(oy);
                if start > sy {
                    break;
                }
                let wt = weights[sy - start];
                let acc = &mut mid[oy * cw..][..cw];
                for &(a, b) in &runs {
                    for (acc, &v) in acc[a..b].iter_mut().zip(&line[a..b]) {
                        *acc += v * wt;
                    }
                }
            }
        }

        // Horizontal pass, nw x nh, clamped to [0, 1] like `image` does for f32 pixels.
        let cols = Taps::triangle(cw, nw);
        let mut out = vec![0f32; nh * nw];
        for (src, dst) in mid.chunks_exact(cw).zip(out.chunks_exact_mut(nw)) {
            for (ox, d) in dst.iter_mut().enumerate() {
                let (start, weights) = cols.of(ox);
                let mut t = 0.0f32;
                for (&v, &wt) in src[start..].iter().zip(weights) {
                    t += v * wt;
                }
                *d = t.clamp(0.0, 1.0);
            }
        }
        out
    }

    /// Centres the `nw x nh` resized crop in the configured output, background 0.
    pub fn pad(resized: &[f32], nw: u32, nh: u32, config: &PreprocessConfig) -> Preprocessed {
        let (ow, oh) = (config.width as usize, config.height as usize);
        let mut out = vec![0f32; ow * oh];
        let (ox, oy) = ((ow - nw as usize) / 2, (oh - nh as usize) / 2);
        for (y, row) in resized.chunks_exact(nw as usize).enumerate() {
            let start = (oy + y) * ow + ox;
            for (dst, &v) in out[start..start + nw as usize].iter_mut().zip(row) {
                *dst = v.clamp(0.0, 1.0);
            }
        }
        Preprocessed { height: config.height, width: config.width, pixels: out }
    }
}

/// The implementation before issue #16 (per-pixel closure, `get_pixel`, a full-resolution f32
/// crop and `image::imageops::resize`), kept verbatim and split into the same stages, so that
/// tests and `benches/preprocess.rs` check and time [`preprocess_gray`] against it in one run.
/// Not for production use.
#[doc(hidden)]
pub mod reference {
    use super::stages::InkLevels;
    use super::*;

    pub fn preprocess_gray(gray: &GrayImage, config: &PreprocessConfig) -> Result<Preprocessed, PreprocessError> {
        config.validate()?;
        let (w, h) = gray.dimensions();
        if w == 0 || h == 0 {
            return Err(PreprocessError::ZeroSize);
        }
        let levels = ink_levels(gray.as_raw(), config)?;
        let bbox = ink_bounding_box(gray, levels.threshold, config);
        let crop = crop(gray, &levels, bbox);
        let (nw, nh) = resized_size(crop.width(), crop.height(), config);
        let resized = resize(&crop, nw, nh);
        Ok(pad(&resized, config))
    }

    pub fn ink_levels(pixels: &[u8], config: &PreprocessConfig) -> Result<InkLevels, PreprocessError> {
        let histogram = histogram(pixels);
        let threshold = otsu_threshold(&histogram);
        let ink_count: u64 = histogram[..=threshold as usize].iter().sum();
        let paper_count = pixels.len() as u64 - ink_count;
        if ink_count < config.min_ink_pixels as u64 || paper_count == 0 {
            return Err(PreprocessError::NoInk);
        }
        let paper = quantile_in(&histogram, threshold as usize + 1, 255, 0.5);
        let ink = quantile_in(&histogram, 0, threshold as usize, config.ink_quantile);
        if paper.saturating_sub(ink) < config.min_contrast {
            return Err(PreprocessError::NoInk);
        }
        Ok(InkLevels { threshold, paper, ink })
    }

    fn histogram(pixels: &[u8]) -> [u64; 256] {
        let mut h = [0u64; 256];
        for &p in pixels {
            h[p as usize] += 1;
        }
        h
    }

    pub fn ink_bounding_box(gray: &GrayImage, threshold: u8, config: &PreprocessConfig) -> (u32, u32, u32, u32) {
        let (w, h) = gray.dimensions();
        let mut cols = vec![0u64; w as usize];
        let mut rows = vec![0u64; h as usize];
        for (x, y, p) in gray.enumerate_pixels() {
            if p.0[0] <= threshold {
                cols[x as usize] += 1;
                rows[y as usize] += 1;
            }
        }
        let (x0, x1) = trimmed_extent(&cols, config.crop_trim);
        let (y0, y1) = trimmed_extent(&rows, config.crop_trim);
        let margin = (config.margin * (x1 - x0 + 1).max(y1 - y0 + 1) as f32).round() as u32;
        (x0.saturating_sub(margin), (x1 + margin).min(w - 1), y0.saturating_sub(margin), (y1 + margin).min(h - 1))
    }

    pub fn crop(
        gray: &GrayImage,
        levels: &InkLevels,
        (x0, x1, y0, y1): (u32, u32, u32, u32),
    ) -> ImageBuffer<Luma<f32>, Vec<f32>> {
        let InkLevels { threshold, paper, ink } = *levels;
        let span = (paper - ink) as f32;
        let ink_value =
            |p: u8| -> f32 { if p > threshold { 0.0 } else { ((paper as f32 - p as f32) / span).clamp(0.0, 1.0) } };
        let (cw, ch) = (x1 - x0 + 1, y1 - y0 + 1);
        ImageBuffer::from_fn(cw, ch, |x, y| Luma([ink_value(gray.get_pixel(x0 + x, y0 + y).0[0])]))
    }

    pub fn resized_size(cw: u32, ch: u32, config: &PreprocessConfig) -> (u32, u32) {
        let scale = (config.width as f32 / cw as f32).min(config.height as f32 / ch as f32);
        let nw = ((cw as f32 * scale).round() as u32).clamp(1, config.width);
        let nh = ((ch as f32 * scale).round() as u32).clamp(1, config.height);
        (nw, nh)
    }

    pub fn resize(crop: &ImageBuffer<Luma<f32>, Vec<f32>>, nw: u32, nh: u32) -> ImageBuffer<Luma<f32>, Vec<f32>> {
        image::imageops::resize(crop, nw, nh, FilterType::Triangle)
    }

    fn trimmed_extent(counts: &[u64], trim: f32) -> (u32, u32) {
        let total: u64 = counts.iter().sum();
        let cut = (total as f64 * trim as f64).floor() as u64;
        let mut acc = 0u64;
        let mut lo = 0usize;
        for (i, &c) in counts.iter().enumerate() {
            acc += c;
            if acc > cut {
                lo = i;
                break;
            }
        }
        acc = 0;
        let mut hi = counts.len() - 1;
        for (i, &c) in counts.iter().enumerate().rev() {
            acc += c;
            if acc > cut {
                hi = i;
                break;
            }
        }
        (lo as u32, hi.max(lo) as u32)
    }

    pub fn pad(resized: &ImageBuffer<Luma<f32>, Vec<f32>>, config: &PreprocessConfig) -> Preprocessed {
        let nw = resized.width();
        let (ow, oh) = (config.width as usize, config.height as usize);
        let mut out = vec![0f32; ow * oh];
        let (ox, oy) = ((ow - nw as usize) / 2, (oh - resized.height() as usize) / 2);
        for (y, row) in resized.as_raw().chunks_exact(nw as usize).enumerate() {
            let start = (oy + y) * ow + ox;
            for (dst, &v) in out[start..start + nw as usize].iter_mut().zip(row) {
                *dst = v.clamp(0.0, 1.0);
            }
        }
        Preprocessed { height: config.height, width: config.width, pixels: out }
    }
}

/// Otsu's threshold: the grey level that best separates ink (<= t) from paper (> t).
pub fn otsu_threshold(histogram: &[u64; 256]) -> u8 {
    let total: u64 = histogram.iter().sum();
    let sum_all: u64 = histogram.iter().enumerate().map(|(i, &c)| i as u64 * c).sum();
    let (mut w0, mut sum0) = (0u64, 0u64);
    let (mut best, mut best_t) = (-1.0f64, 0u8);
    for (t, &count) in histogram.iter().enumerate().take(255) {
        w0 += count;
        sum0 += t as u64 * count;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 as f64 / w0 as f64;
        let m1 = (sum_all - sum0) as f64 / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// The grey level at quantile `q` of the histogram restricted to `lo..=hi`.
fn quantile_in(histogram: &[u64; 256], lo: usize, hi: usize, q: f32) -> u8 {
    let total: u64 = histogram[lo..=hi].iter().sum();
    let target = ((total as f64) * q as f64).floor() as u64;
    let mut seen = 0u64;
    for (level, &count) in histogram.iter().enumerate().take(hi + 1).skip(lo) {
        seen += count;
        if seen > target {
            return level as u8;
        }
    }
    hi as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic "signature": a dark diagonal stroke and a loop on paper of the given level.
    pub(crate) fn synthetic_signature(w: u32, h: u32, paper: u8, ink: u8) -> GrayImage {
        let mut img = GrayImage::from_pixel(w, h, Luma([paper]));
        for x in w / 5..4 * w / 5 {
            let y = h / 3 + (x - w / 5) * (h / 3) / (3 * w / 5);
            for dy in 0..3 {
                img.put_pixel(x, (y + dy).min(h - 1), Luma([ink]));
            }
        }
        let (cx, cy, r) = (w as f32 * 0.3, h as f32 * 0.6, h as f32 * 0.15);
        for i in 0..360 {
            let a = (i as f32).to_radians();
            let (x, y) = ((cx + r * a.cos()) as u32, (cy + r * a.sin()) as u32);
            img.put_pixel(x.min(w - 1), y.min(h - 1), Luma([ink]));
        }
        img
    }

    /// Runs the fast path and the reference on one image: same error, or outputs within 1e-6.
    /// Returns the largest difference, `None` when both refused the image.
    fn check_against_reference(img: &GrayImage, cfg: &PreprocessConfig, what: &str) -> Option<f32> {
        match (preprocess_gray(img, cfg), reference::preprocess_gray(img, cfg)) {
            (Ok(new), Ok(old)) => {
                assert_eq!(
                    (new.width, new.height, new.pixels.len()),
                    (old.width, old.height, old.pixels.len()),
                    "{what}"
                );
                let diff = new.pixels.iter().zip(&old.pixels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(diff <= 1e-6, "{what}: max abs difference {diff}");
                Some(diff)
            }
            (Err(new), Err(old)) => {
                assert_eq!(format!("{new:?}"), format!("{old:?}"), "{what}");
                None
            }
            (new, old) => panic!("{what}: fast path {:?}, reference {:?}", new.err(), old.err()),
        }
    }

    /// The fast path against the verbatim reference on synthetic pages of many shapes, contrasts
    /// and sizes, including the corner cases of the crop and the resize.
    #[test]
    fn fast_path_matches_reference_on_synthetic_images() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let configs = [
            PreprocessConfig::default(),
            PreprocessConfig { height: 96, width: 192, ..Default::default() },
            PreprocessConfig { height: 8, width: 16, margin: 0.0, min_ink_pixels: 1, ..Default::default() },
            PreprocessConfig {
                height: 1,
                width: 1,
                margin: 0.0,
                crop_trim: 0.0,
                min_ink_pixels: 1,
                ..Default::default()
            },
            PreprocessConfig { height: 300, width: 7, margin: 0.5, crop_trim: 0.2, ..Default::default() },
            PreprocessConfig { height: 1024, width: 1024, margin: 1.0, ..Default::default() },
            PreprocessConfig { margin: 0.0, crop_trim: 0.0, ..Default::default() },
        ];
        let mut images: Vec<(String, GrayImage)> = Vec::new();
        for &(w, h) in &[(400, 200), (1030, 482), (300, 156), (1027, 282), (37, 23), (640, 640), (129, 65)] {
            for &(paper, ink) in &[(235u8, 30u8), (253, 40), (200, 170), (255, 0), (140, 120)] {
                images.push((
                    format!("signature {w}x{h} paper {paper} ink {ink}"),
                    synthetic_signature(w, h, paper, ink),
                ));
            }
        }
        // One-pixel-wide and one-pixel-high strokes, and huge aspect ratios either way.
        for &(w, h) in &[(1, 300), (300, 1), (2000, 3), (3, 2000), (5000, 2), (2, 900)] {
            let mut img = GrayImage::from_pixel(w, h, Luma([250]));
            for (i, p) in img.pixels_mut().enumerate() {
                if i % 3 != 0 {
                    p.0[0] = 10 + (i % 50) as u8;
                }
            }
            images.push((format!("strip {w}x{h}"), img));
        }
        for &(w, h, x) in &[(500, 300, 250), (500, 300, 0), (500, 300, 499), (64, 64, 10)] {
            let mut img = GrayImage::from_pixel(w, h, Luma([245]));
            for y in h / 4..3 * h / 4 {
                img.put_pixel(x, y, Luma([15]));
            }
            images.push((format!("one-pixel-wide line at x={x} in {w}x{h}"), img));
            let mut img = GrayImage::from_pixel(h, w, Luma([245]));
            for y in h / 4..3 * h / 4 {
                img.put_pixel(y, x, Luma([15]));
            }
            images.push((format!("one-pixel-high line at y={x} in {h}x{w}"), img));
        }
        // All ink but one pixel, and all ink but one row.
        for &(w, h) in &[(200, 100), (31, 7)] {
            let mut img = GrayImage::from_fn(w, h, |x, y| Luma([20 + ((x * 7 + y * 13) % 40) as u8]));
            img.put_pixel(w / 2, h / 2, Luma([250]));
            images.push((format!("all ink but one pixel {w}x{h}"), img.clone()));
            for x in 0..w {
                img.put_pixel(x, 0, Luma([250]));
            }
            images.push((format!("all ink but one row {w}x{h}"), img));
        }
        // A crop of exactly the output size (`image` then copies instead of resampling), and
        // up-sampling.
        let mut exact = GrayImage::from_pixel(300, 200, Luma([250]));
        for y in 50..114 {
            for x in 60..188 {
                exact.put_pixel(x, y, Luma([((x * 3 + y) % 100) as u8]));
            }
        }
        let unpadded = &configs[6];
        let levels = stages::ink_levels(exact.as_raw(), unpadded).expect("ink");
        let bbox = stages::ink_bounding_box(&exact, levels.threshold, unpadded);
        assert_eq!((bbox, stages::output_size(bbox, unpadded)), ((60, 187, 50, 113), (128, 64)));
        images.push(("crop of the output size".into(), exact));
        images.push(("tiny page, up-sampled".into(), synthetic_signature(12, 9, 240, 10)));
        // Random pages: noise, blobs, gradients, specks; blank and low-contrast ones must fail alike.
        for i in 0..60 {
            let (w, h) = (rng.random_range(1..700u32), rng.random_range(1..400u32));
            let paper = rng.random_range(100..=255u8);
            let mut img = GrayImage::from_pixel(w, h, Luma([paper]));
            match i % 4 {
                0 => img.pixels_mut().for_each(|p| p.0[0] = rng.random()),
                1 => {
                    for _ in 0..rng.random_range(0..40) {
                        let (cx, cy, r) = (rng.random_range(0..w), rng.random_range(0..h), rng.random_range(0..12u32));
                        let ink = rng.random_range(0..paper);
                        for y in cy.saturating_sub(r)..(cy + r + 1).min(h) {
                            for x in cx.saturating_sub(r)..(cx + r + 1).min(w) {
                                img.put_pixel(x, y, Luma([ink]));
                            }
                        }
                    }
                }
                2 => img = GrayImage::from_fn(w, h, |x, y| Luma([(((x * 255) / w) ^ ((y * 97) / h)) as u8])),
                _ => {
                    for _ in 0..rng.random_range(0..300) {
                        let (x, y) = (rng.random_range(0..w), rng.random_range(0..h));
                        img.put_pixel(x, y, Luma([rng.random_range(0..=paper)]));
                    }
                }
            }
            images.push((format!("random page {i} ({w}x{h})"), img));
        }
        let (mut preprocessed, mut refused, mut max_diff) = (0, 0, 0.0f32);
        for (what, img) in &images {
            for (c, cfg) in configs.iter().enumerate() {
                match check_against_reference(img, cfg, &format!("{what}, config {c}")) {
                    Some(diff) => (preprocessed, max_diff) = (preprocessed + 1, max_diff.max(diff)),
                    None => refused += 1,
                }
            }
        }
        println!("{preprocessed} preprocessed, {refused} refused alike, max abs difference {max_diff:e}");
        assert!(preprocessed > 500 && refused > 20, "{preprocessed} preprocessed, {refused} refused");
    }

    /// The stages themselves agree with the reference's, not only the final tensor.
    #[test]
    fn fast_stages_match_reference_stages() {
        let cfg = PreprocessConfig::default();
        for img in [synthetic_signature(400, 200, 235, 30), synthetic_signature(1030, 482, 250, 60)] {
            let levels = stages::ink_levels(img.as_raw(), &cfg).expect("ink");
            assert_eq!(levels, reference::ink_levels(img.as_raw(), &cfg).expect("ink"));
            let bbox = stages::ink_bounding_box(&img, levels.threshold, &cfg);
            assert_eq!(bbox, reference::ink_bounding_box(&img, levels.threshold, &cfg));
            let (nw, nh) = stages::output_size(bbox, &cfg);
            let crop = reference::crop(&img, &levels, bbox);
            assert_eq!((nw, nh), reference::resized_size(crop.width(), crop.height(), &cfg));
            let old = reference::resize(&crop, nw, nh);
            let new = stages::crop_resize(&img, &levels, bbox, nw, nh);
            // Clamped by the reference only when padding; the values are in [0, 1] either way.
            let old: Vec<f32> = old.as_raw().iter().map(|v| v.clamp(0.0, 1.0)).collect();
            assert_eq!(new, old, "the resize is bit-identical");
        }
    }

    fn encode(img: &GrayImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    #[test]
    fn output_has_configured_shape_and_range() {
        let cfg = PreprocessConfig::default();
        let p = preprocess_gray(&synthetic_signature(400, 200, 235, 30), &cfg).expect("ink");
        assert_eq!((p.height, p.width, p.pixels.len()), (64, 128, 64 * 128));
        assert!(p.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        let max = p.pixels.iter().cloned().fold(0.0, f32::max);
        assert!(max > 0.9, "darkest strokes should be near 1, got {max}");
    }

    #[test]
    fn paper_level_does_not_change_the_result_much() {
        // The CEDAR trap: same strokes, grey paper vs white paper.
        let cfg = PreprocessConfig::default();
        let grey = preprocess_gray(&synthetic_signature(400, 200, 240, 40), &cfg).expect("ink");
        let white = preprocess_gray(&synthetic_signature(400, 200, 253, 40), &cfg).expect("ink");
        let max_diff = grey.pixels.iter().zip(&white.pixels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max_diff < 1e-6, "paper level leaked into the output: {max_diff}");
        let zeros = |p: &Preprocessed| p.pixels.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros(&grey), zeros(&white));
    }

    #[test]
    fn crop_removes_position_on_the_page() {
        let cfg = PreprocessConfig::default();
        let small = synthetic_signature(300, 150, 250, 20);
        let mut page = GrayImage::from_pixel(900, 600, Luma([250]));
        image::imageops::replace(&mut page, &small, 500, 400);
        let a = preprocess_gray(&small, &cfg).expect("ink");
        let b = preprocess_gray(&page, &cfg).expect("ink");
        let diff: f32 = a.pixels.iter().zip(&b.pixels).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.pixels.len() as f32;
        assert!(diff < 0.02, "mean abs diff {diff}");
    }

    #[test]
    fn golden_values_are_stable() {
        // A tiny image whose result is easy to reason about: a 4x2 block of full ink on white.
        let mut img = GrayImage::from_pixel(40, 20, Luma([255]));
        for y in 8..12 {
            for x in 10..30 {
                img.put_pixel(x, y, Luma([0]));
            }
        }
        let cfg = PreprocessConfig { height: 8, width: 16, margin: 0.0, min_ink_pixels: 1, ..Default::default() };
        let p = preprocess_gray(&img, &cfg).expect("ink");
        // The 20x4 box scales by min(16/20, 8/4) = 0.8 to 16x3 (rounded 3.2 -> 3), centred at row 2.
        let rows: Vec<f32> = (0..8).map(|y| p.pixels[y * 16..(y + 1) * 16].iter().sum::<f32>().round()).collect();
        assert_eq!(rows, vec![0.0, 0.0, 16.0, 16.0, 16.0, 0.0, 0.0, 0.0]);
        let checksum: f64 = p.pixels.iter().enumerate().map(|(i, &v)| i as f64 * v as f64).sum();
        let expected = (32..80).map(|i| i as f64).sum::<f64>();
        assert!((checksum - expected).abs() < 1e-3, "{checksum} vs {expected}");
    }

    #[test]
    fn same_bytes_same_tensor_across_formats_that_are_lossless() {
        let cfg = PreprocessConfig::default();
        let img = synthetic_signature(300, 140, 245, 10);
        let png = preprocess_bytes(&encode(&img, image::ImageFormat::Png), &cfg).expect("png");
        let bmp = preprocess_bytes(&encode(&img, image::ImageFormat::Bmp), &cfg).expect("bmp");
        let tif = preprocess_bytes(&encode(&img, image::ImageFormat::Tiff), &cfg).expect("tiff");
        assert_eq!(png, bmp);
        assert_eq!(png, tif);
        let jpg = preprocess_bytes(&encode(&img, image::ImageFormat::Jpeg), &cfg).expect("jpeg");
        assert_eq!(jpg.pixels.len(), png.pixels.len());
    }

    #[test]
    fn rgb_and_rgba_and_16_bit_inputs_decode() {
        let cfg = PreprocessConfig::default();
        let gray = synthetic_signature(200, 100, 250, 20);
        let rgb = DynamicImage::ImageLuma8(gray.clone()).to_rgb8();
        let mut out = Cursor::new(Vec::new());
        rgb.write_to(&mut out, image::ImageFormat::Png).expect("encode");
        let a = preprocess_bytes(out.get_ref(), &cfg).expect("rgb");
        let rgba = DynamicImage::ImageLuma8(gray.clone()).to_rgba8();
        let mut out = Cursor::new(Vec::new());
        rgba.write_to(&mut out, image::ImageFormat::Png).expect("encode");
        let b = preprocess_bytes(out.get_ref(), &cfg).expect("rgba");
        let l16 = DynamicImage::ImageLuma8(gray).to_luma16();
        let mut out = Cursor::new(Vec::new());
        l16.write_to(&mut out, image::ImageFormat::Png).expect("encode");
        let c = preprocess_bytes(out.get_ref(), &cfg).expect("16-bit");
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn palette_tiff_decodes_through_its_colour_map() {
        // An 8-bit palette TIFF written by hand: index 0 = white, index 1 = black.
        let (w, h) = (64u32, 32u32);
        let mut pixels = vec![0u8; (w * h) as usize];
        for y in 10..20 {
            for x in 5..60 {
                pixels[(y * w + x) as usize] = 1;
            }
        }
        let mut colormap = vec![0u16; 3 * 256];
        for c in 0..3 {
            colormap[c * 256] = 0xFFFF;
        }
        let bytes = palette_tiff(w, h, &pixels, &colormap);
        let gray = match decode_gray(&bytes, &PreprocessConfig::default()) {
            Ok(g) => g,
            Err(e) => panic!("palette tiff: {e}"),
        };
        assert_eq!(gray.get_pixel(0, 0).0[0], 255);
        assert_eq!(gray.get_pixel(10, 15).0[0], 0);
    }

    #[test]
    fn repeated_palette_strips_are_read_up_to_the_image_size() {
        // One strip per row, each claiming the whole pixel block: the rows are the block's first
        // bytes, as in the single-strip file. (That nothing past them is copied, the memory bug
        // this guards, is checked under a heap budget by tests/tests/fuzz_replay.rs.)
        let (w, h) = (8u32, 4u32);
        let pixels: Vec<u8> = (0..w * h).map(|i| (i % 3 == 0) as u8).collect();
        let mut colormap = vec![0u16; 3 * 256];
        for c in 0..3 {
            colormap[c * 256] = 0xFFFF;
        }
        let single = palette_tiff(w, h, &pixels, &colormap);
        let head = single.len() - pixels.len();
        let (arrays, pixel_data) = (head as u32, head as u32 + 8 * h);
        let mut repeated = single[..head].to_vec();
        repeated.extend((0..h).flat_map(|_| pixel_data.to_le_bytes()));
        repeated.extend((0..h).flat_map(|_| (w * h).to_le_bytes()));
        repeated.extend_from_slice(&pixels);
        // StripOffsets, RowsPerStrip and StripByteCounts are the 6th to 8th IFD entries.
        for (i, count, value) in [(5, h, arrays), (6, 1, 1), (7, h, arrays + 4 * h)] {
            let at = 8 + 2 + 12 * i + 4;
            repeated[at..at + 8].copy_from_slice(&[count.to_le_bytes(), value.to_le_bytes()].concat());
        }
        let config = PreprocessConfig::default();
        let (a, b) = (decode_gray(&single, &config), decode_gray(&repeated, &config));
        assert_eq!(a.expect("single strip"), b.expect("repeated strips"));
    }

    /// Minimal little-endian baseline TIFF with PhotometricInterpretation = 3 (palette).
    fn palette_tiff(w: u32, h: u32, pixels: &[u8], colormap: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"II*\0");
        let ifd_offset = 8u32;
        out.extend_from_slice(&ifd_offset.to_le_bytes());
        let entries: u16 = 9;
        let ifd_len = 2 + entries as u32 * 12 + 4;
        let cmap_offset = ifd_offset + ifd_len;
        let data_offset = cmap_offset + colormap.len() as u32 * 2;
        let entry = |out: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        };
        out.extend_from_slice(&entries.to_le_bytes());
        entry(&mut out, 256, 4, 1, w); // ImageWidth
        entry(&mut out, 257, 4, 1, h); // ImageLength
        entry(&mut out, 258, 3, 1, 8); // BitsPerSample
        entry(&mut out, 259, 3, 1, 1); // Compression: none
        entry(&mut out, 262, 3, 1, 3); // Photometric: palette
        entry(&mut out, 273, 4, 1, data_offset); // StripOffsets
        entry(&mut out, 278, 4, 1, h); // RowsPerStrip
        entry(&mut out, 279, 4, 1, w * h); // StripByteCounts
        entry(&mut out, 320, 3, colormap.len() as u32, cmap_offset); // ColorMap
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in colormap {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(pixels);
        out
    }

    #[test]
    fn bad_inputs_get_typed_errors() {
        let cfg = PreprocessConfig::default();
        assert!(matches!(preprocess_bytes(&[], &cfg), Err(PreprocessError::Empty)));
        assert!(matches!(preprocess_bytes(b"hello, not an image", &cfg), Err(PreprocessError::UnknownFormat)));

        let png = encode(&synthetic_signature(200, 100, 250, 20), image::ImageFormat::Png);
        let truncated = preprocess_bytes(&png[..png.len() / 2], &cfg);
        assert!(matches!(truncated, Err(PreprocessError::Truncated | PreprocessError::Corrupt(_))), "{truncated:?}");

        let blank = encode(&GrayImage::from_pixel(200, 100, Luma([250])), image::ImageFormat::Png);
        assert!(matches!(preprocess_bytes(&blank, &cfg), Err(PreprocessError::NoInk)));
        // Scanner noise alone is not ink.
        let mut noisy = GrayImage::from_pixel(200, 100, Luma([240]));
        for (i, p) in noisy.pixels_mut().enumerate() {
            p.0[0] = 236 + (i * 7919 % 9) as u8;
        }
        assert!(matches!(preprocess_gray(&noisy, &cfg), Err(PreprocessError::NoInk)));
    }

    #[test]
    fn absurd_header_is_refused_before_allocation() {
        // A PNG whose IHDR claims 100000 x 100000 pixels.
        let mut png = encode(&GrayImage::from_pixel(4, 4, Luma([0])), image::ImageFormat::Png);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = preprocess_bytes(&png, &PreprocessConfig::default()).expect_err("must refuse");
        assert!(matches!(err, PreprocessError::TooLarge { width: 100_000, .. }), "{err:?}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\n garbage").expect("write");
        let err = preprocess_file(&path, &PreprocessConfig::default()).expect_err("broken");
        assert!(err.to_string().contains("broken.png"), "{err}");
        let missing = preprocess_file(&dir.path().join("missing.png"), &PreprocessConfig::default());
        assert!(matches!(missing, Err(PreprocessError::Io { .. })));
    }

    #[test]
    fn invalid_config_is_refused() {
        let cfg = PreprocessConfig { height: 0, ..Default::default() };
        assert!(matches!(
            preprocess_gray(&synthetic_signature(100, 50, 250, 0), &cfg),
            Err(PreprocessError::InvalidConfig(_))
        ));
    }
}
