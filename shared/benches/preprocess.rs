//! Preprocessing speed per stage: the implementation before issue #16 (`preprocess::reference`,
//! kept verbatim) against the fast path, timed in the same run, plus the largest output
//! difference between the two over every image of the sets.
//!
//! `cargo bench -p autograph-shared --bench preprocess`
//!
//! Images: `svc2004` (JPEG), `cedar_half` and `bhsig260_hindi` (PNG) under
//! `$AUTOGRAPH_SHARED_DATA` (default `../shared/data` beside the checkout); synthetic pages of
//! the same sizes when the data is absent. `AUTOGRAPH_BENCH_IMAGES` images per set are timed
//! (default 40, spread over the set), each figure is the median of `AUTOGRAPH_BENCH_RUNS` passes
//! over them (default 15; reference and fast passes interleave, so load hits both alike), in ms
//! per image. `AUTOGRAPH_BENCH_QUICK=1` checks the differences on the timed images only.

use std::hint::black_box;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autograph_shared::preprocess::stages::{self, InkLevels};
use autograph_shared::preprocess::{
    PreprocessConfig, Preprocessed, decode_gray, preprocess_bytes, preprocess_gray, reference,
};
use image::{DynamicImage, GrayImage, ImageBuffer, Luma};

const SETS: [&str; 3] = ["svc2004", "cedar_half", "bhsig260_hindi"];

type Bbox = (u32, u32, u32, u32);
type FloatImage = ImageBuffer<Luma<f32>, Vec<f32>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

fn data_root() -> PathBuf {
    std::env::var_os("AUTOGRAPH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Every image file under `dir`, sorted.
fn image_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_lowercase);
            if path.is_dir() {
                stack.push(path);
            } else if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "tif" | "tiff" | "bmp")) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A looping pen trace on a page, encoded: stands in for the real sets when they are absent.
fn synthetic_page(w: u32, h: u32, seed: u32, format: image::ImageFormat) -> Vec<u8> {
    let mut img = GrayImage::from_pixel(w, h, Luma([245 - (seed % 20) as u8]));
    let s = seed as f32;
    for i in 0..20_000 {
        let t = i as f32 / 20_000.0;
        let x = w as f32 * (0.1 + 0.8 * t) + 0.04 * w as f32 * (t * (60.0 + s)).sin();
        let y = h as f32 * (0.5 + 0.25 * (t * (9.0 + s)).sin() + 0.1 * (t * 47.0).cos());
        for d in 0..3 {
            img.put_pixel((x as u32 + d).min(w - 1), (y as u32).min(h - 1), Luma([20 + (seed % 40) as u8]));
        }
    }
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode a synthetic page");
    out.into_inner()
}

/// One set: the encoded images to check and the ones to time.
struct Set {
    name: String,
    files: Vec<PathBuf>,
    synthetic: Vec<Vec<u8>>,
}

impl Set {
    fn count(&self) -> usize {
        self.files.len().max(self.synthetic.len())
    }

    fn bytes(&self, i: usize) -> Vec<u8> {
        match self.files.get(i) {
            Some(path) => std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            None => self.synthetic[i].clone(),
        }
    }
}

fn sets() -> Vec<Set> {
    let root = data_root();
    let real: Vec<Set> = SETS
        .iter()
        .map(|name| Set { name: name.to_string(), files: image_files(&root.join(name)), synthetic: Vec::new() })
        .filter(|s| !s.files.is_empty())
        .collect();
    if !real.is_empty() {
        return real;
    }
    eprintln!("no images under {}: timing synthetic pages instead", root.display());
    let make = |name: &str, w, h, format| Set {
        name: name.to_string(),
        files: Vec::new(),
        synthetic: (0..24).map(|seed| synthetic_page(w, h, seed, format)).collect(),
    };
    vec![
        make("synthetic JPEG 1030x482", 1030, 482, image::ImageFormat::Jpeg),
        make("synthetic PNG 300x156", 300, 156, image::ImageFormat::Png),
        make("synthetic PNG 1027x282", 1027, 282, image::ImageFormat::Png),
    ]
}

/// Largest |fast - reference| over the images `indices` of a set; panics when the two disagree
/// on whether an image can be preprocessed or differ by more than 1e-6.
struct Check {
    images: usize,
    identical: usize,
    refused: usize,
    max_diff: f32,
}

fn check(set: &Set, indices: impl Iterator<Item = usize>, cfg: &PreprocessConfig) -> Check {
    let mut c = Check { images: 0, identical: 0, refused: 0, max_diff: 0.0 };
    for i in indices {
        c.images += 1;
        let bytes = set.bytes(i);
        let (new, old) = match decode_gray(&bytes, cfg) {
            Ok(gray) => (preprocess_gray(&gray, cfg), reference::preprocess_gray(&gray, cfg)),
            Err(_) => {
                c.refused += 1;
                continue;
            }
        };
        match (new, old) {
            (Ok(new), Ok(old)) => {
                let diff = new.pixels.iter().zip(&old.pixels).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                c.max_diff = c.max_diff.max(diff);
                c.identical += usize::from(new == old);
            }
            (Err(a), Err(b)) if format!("{a:?}") == format!("{b:?}") => c.refused += 1,
            (a, b) => panic!("{} image {i}: fast {:?}, reference {:?}", set.name, a.err(), b.err()),
        }
    }
    assert!(c.max_diff <= 1e-6, "{}: max abs difference {} over 1e-6", set.name, c.max_diff);
    c
}

/// The timed images of a set with every stage's input prepared, so each stage is timed alone.
struct Prepared {
    /// `0..n`, for stages that read several of the vectors below.
    idx: Vec<usize>,
    bytes: Vec<Vec<u8>>,
    decoded: Vec<DynamicImage>,
    gray: Vec<GrayImage>,
    levels: Vec<InkLevels>,
    bbox: Vec<Bbox>,
    size: Vec<(u32, u32)>,
    crop: Vec<FloatImage>,
    resized_ref: Vec<FloatImage>,
    resized_new: Vec<Vec<f32>>,
}

fn prepare(set: &Set, want: usize, cfg: &PreprocessConfig) -> Prepared {
    let n = set.count();
    let step = (n / want).max(1);
    let mut p = Prepared {
        idx: Vec::new(),
        bytes: Vec::new(),
        decoded: Vec::new(),
        gray: Vec::new(),
        levels: Vec::new(),
        bbox: Vec::new(),
        size: Vec::new(),
        crop: Vec::new(),
        resized_ref: Vec::new(),
        resized_new: Vec::new(),
    };
    for i in (0..n).step_by(step).take(want) {
        let bytes = set.bytes(i);
        let Ok(decoded) = stages::decode_image(&bytes, cfg) else { continue };
        let gray = stages::to_gray(decoded.clone());
        let Ok(levels) = stages::ink_levels(gray.as_raw(), cfg) else { continue };
        let bbox = stages::ink_bounding_box(&gray, levels.threshold, cfg);
        let size = stages::output_size(bbox, cfg);
        let crop = reference::crop(&gray, &levels, bbox);
        p.resized_ref.push(reference::resize(&crop, size.0, size.1));
        p.resized_new.push(stages::crop_resize(&gray, &levels, bbox, size.0, size.1));
        p.idx.push(p.idx.len());
        p.crop.push(crop);
        p.bytes.push(bytes);
        p.decoded.push(decoded);
        p.gray.push(gray);
        p.levels.push(levels);
        p.bbox.push(bbox);
        p.size.push(size);
    }
    p
}

/// One pass of a stage over all timed images; returns the time spent in the stage itself.
type Pass<'a> = Box<dyn FnMut() -> Duration + 'a>;

fn pass<'a, T: 'a, R>(inputs: &'a [T], mut f: impl FnMut(&'a T) -> R + 'a) -> Pass<'a> {
    Box::new(move || {
        let t = Instant::now();
        for x in inputs {
            black_box(f(black_box(x)));
        }
        t.elapsed()
    })
}

struct Stage<'a> {
    name: &'static str,
    reference: Pass<'a>,
    /// `None`: the fast path does this stage inside another one.
    fast: Option<Pass<'a>>,
}

fn stages_of<'a>(p: &'a Prepared, cfg: &'a PreprocessConfig) -> Vec<Stage<'a>> {
    let idx = &p.idx;
    // The grey conversion consumes its input: clone before and free after the timed loop (for
    // grey inputs it is a move, and freeing the image is not its cost).
    let to_gray = || -> Pass<'a> {
        Box::new(move || {
            let decoded = p.decoded.clone();
            let mut out = Vec::with_capacity(decoded.len());
            let t = Instant::now();
            for img in decoded {
                out.push(stages::to_gray(black_box(img)));
            }
            let elapsed = t.elapsed();
            black_box(out);
            elapsed
        })
    };
    let decode = || pass(&p.bytes, move |b| stages::decode_image(b, cfg));
    vec![
        Stage { name: "decode (shared, unchanged)", reference: decode(), fast: Some(decode()) },
        Stage { name: "to grey (shared, unchanged)", reference: to_gray(), fast: Some(to_gray()) },
        Stage {
            name: "histogram + Otsu + levels",
            reference: pass(&p.gray, move |g| reference::ink_levels(g.as_raw(), cfg)),
            fast: Some(pass(&p.gray, move |g| stages::ink_levels(g.as_raw(), cfg))),
        },
        Stage {
            name: "bounding box",
            reference: pass(idx, move |&i| reference::ink_bounding_box(&p.gray[i], p.levels[i].threshold, cfg)),
            fast: Some(pass(idx, move |&i| stages::ink_bounding_box(&p.gray[i], p.levels[i].threshold, cfg))),
        },
        Stage {
            name: "crop to f32",
            reference: pass(idx, move |&i| reference::crop(&p.gray[i], &p.levels[i], p.bbox[i])),
            fast: None,
        },
        Stage {
            name: "resize (fast: crop + resize)",
            reference: pass(idx, move |&i| reference::resize(&p.crop[i], p.size[i].0, p.size[i].1)),
            fast: Some(pass(idx, move |&i| {
                stages::crop_resize(&p.gray[i], &p.levels[i], p.bbox[i], p.size[i].0, p.size[i].1)
            })),
        },
        Stage {
            name: "pad",
            reference: pass(&p.resized_ref, move |r| reference::pad(r, cfg)),
            fast: Some(pass(idx, move |&i| stages::pad(&p.resized_new[i], p.size[i].0, p.size[i].1, cfg))),
        },
        Stage {
            name: "preprocess_gray (after decode)",
            reference: pass(&p.gray, move |g| reference::preprocess_gray(g, cfg)),
            fast: Some(pass(&p.gray, move |g| preprocess_gray(g, cfg))),
        },
        Stage {
            name: "preprocess_bytes (end to end)",
            reference: pass(&p.bytes, move |b| -> Option<Preprocessed> {
                decode_gray(b, cfg).ok().and_then(|g| reference::preprocess_gray(&g, cfg).ok())
            }),
            fast: Some(pass(&p.bytes, move |b| preprocess_bytes(b, cfg))),
        },
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per stage: median ms per image, reference and fast.
fn time_set(p: &Prepared, cfg: &PreprocessConfig, runs: usize) -> Vec<(&'static str, f64, Option<f64>)> {
    let mut stages = stages_of(p, cfg);
    let per_image = |d: Duration| d.as_secs_f64() * 1e3 / p.gray.len() as f64;
    // Each side runs twice in a row and only the second pass counts: the first one after
    // another stage runs with caches and branch predictors still set for that stage, which would
    // favour whichever side goes second. Which side goes first alternates.
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = stages.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for run in 0..runs {
        for (s, (r, f)) in stages.iter_mut().zip(&mut times) {
            for side in [run % 2, 1 - run % 2] {
                match (side, &mut s.fast) {
                    (0, _) => {
                        (s.reference)();
                        r.push(per_image((s.reference)()));
                    }
                    (_, Some(fast)) => {
                        fast();
                        f.push(per_image(fast()));
                    }
                    (_, None) => {}
                }
            }
        }
    }
    stages.iter().zip(times).map(|(s, (r, f))| (s.name, median(r), (!f.is_empty()).then(|| median(f)))).collect()
}

fn print_table(title: &str, rows: &[(&'static str, f64, Option<f64>)]) {
    println!("\n{title}");
    println!("| stage | reference ms | fast ms | fast / reference |");
    println!("|---|---:|---:|---:|");
    for &(name, r, f) in rows {
        match f {
            Some(f) => println!("| {name} | {r:.3} | {f:.3} | {:.2} |", f / r),
            None => println!("| {name} | {r:.3} | (in resize) | |"),
        }
    }
}

fn main() {
    let cfg = PreprocessConfig::default();
    let (want, runs) = (env_usize("AUTOGRAPH_BENCH_IMAGES", 40), env_usize("AUTOGRAPH_BENCH_RUNS", 15));
    let quick = std::env::var("AUTOGRAPH_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut all: Vec<Vec<(&'static str, f64, Option<f64>)>> = Vec::new();
    for set in sets() {
        let p = prepare(&set, want, &cfg);
        if p.gray.is_empty() {
            eprintln!("{}: no image preprocesses, skipped", set.name);
            continue;
        }
        let rows = time_set(&p, &cfg, runs);
        let (w, h) = p.gray.iter().fold((0, 0), |(w, h), g| (w + g.width(), h + g.height()));
        let n = p.gray.len() as u32;
        print_table(
            &format!("{}: {n} images (mean {}x{}), median of {runs} passes, ms per image", set.name, w / n, h / n),
            &rows,
        );
        all.push(rows);
        let c = if quick {
            let step = (set.count() / want).max(1);
            check(&set, (0..set.count()).step_by(step).take(want), &cfg)
        } else {
            check(&set, 0..set.count(), &cfg)
        };
        println!(
            "{}: {} images checked, {} bit-identical, {} refused by both alike, max |fast - reference| = {:e}",
            set.name, c.images, c.identical, c.refused, c.max_diff
        );
    }
    if all.len() > 1 {
        let k = all.len() as f64;
        let mean: Vec<_> = (0..all[0].len())
            .map(|i| {
                let r = all.iter().map(|rows| rows[i].1).sum::<f64>() / k;
                let f = all.iter().map(|rows| rows[i].2).sum::<Option<f64>>().map(|f| f / k);
                (all[0][i].0, r, f)
            })
            .collect();
        print_table("mean of the sets above, ms per image", &mean);
    }
}
