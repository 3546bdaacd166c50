//! Preprocessing speed on a ~1000x500 signature JPEG (the size of an SVC2004 pad render):
//! decoding alone against the whole pipeline, in the same run, with the ratio.
//! `cargo bench -p autograph-shared --bench preprocess`; set AUTOGRAPH_SHARED_DATA to also
//! time a real SVC2004 file.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use autograph_shared::preprocess::{PreprocessConfig, decode_gray, preprocess_bytes, preprocess_gray};
use image::{GrayImage, Luma};

fn synthetic_jpeg() -> Vec<u8> {
    let (w, h) = (1030u32, 500u32);
    let mut img = GrayImage::from_pixel(w, h, Luma([250]));
    // A looping pen trace across the page, 3 px wide.
    for i in 0..20_000 {
        let t = i as f32 / 20_000.0;
        let x = 100.0 + 800.0 * t + 40.0 * (t * 60.0).sin();
        let y = 250.0 + 120.0 * (t * 9.0).sin() + 50.0 * (t * 47.0).cos();
        for d in 0..3 {
            img.put_pixel((x as u32 + d).min(w - 1), (y as u32).min(h - 1), Luma([20]));
        }
    }
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encode");
    out.into_inner()
}

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn report(label: &str, bytes: &[u8]) {
    let cfg = PreprocessConfig::default();
    let gray = decode_gray(bytes, &cfg).expect("decode");
    let decode = median_ms(|| drop(black_box(decode_gray(black_box(bytes), &cfg))), 50);
    let rest = median_ms(|| drop(black_box(preprocess_gray(black_box(&gray), &cfg))), 50);
    let full = median_ms(|| drop(black_box(preprocess_bytes(black_box(bytes), &cfg))), 50);
    println!(
        "{label} ({}x{}, {} KB): decode {decode:.2} ms | preprocess after decode {rest:.2} ms | full {full:.2} ms | decode share {:.0}%",
        gray.width(),
        gray.height(),
        bytes.len() / 1024,
        100.0 * decode / full
    );
}

fn main() {
    report("synthetic JPEG", &synthetic_jpeg());
    if let Some(root) = std::env::var_os("AUTOGRAPH_SHARED_DATA") {
        let path = std::path::Path::new(&root).join("svc2004/user1/genuine/U1S1.jpg");
        match std::fs::read(&path) {
            Ok(bytes) => report("SVC2004 U1S1.jpg", &bytes),
            Err(e) => eprintln!("skipping {}: {e}", path.display()),
        }
    }
}
