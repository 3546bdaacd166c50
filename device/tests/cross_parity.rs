//! The same embeddings from a cross-built `autograph` (run under qemu-user) as from this host's
//! build: f32 within 1e-5, int8 gallery templates identical. `scripts/cross-test` runs it:
//!
//! ```text
//! AUTOGRAPH_CROSS_BINARY=target/aarch64-unknown-linux-gnu/debug/autograph \
//! AUTOGRAPH_CROSS_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
//! [AUTOGRAPH_PARITY_BUNDLE=DIR AUTOGRAPH_PARITY_IMAGES=DIR] \
//!     cargo test -p autograph-device --test cross_parity -- --ignored --nocapture
//! ```
//!
//! Always checked on the bundle built in code; also on a trained bundle and real images when
//! `AUTOGRAPH_PARITY_BUNDLE` and `AUTOGRAPH_PARITY_IMAGES` name them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Writer, signature_file, write_bundle};

/// Largest f32 difference accepted between the two builds.
const F32_TOLERANCE: f32 = 1e-5;
/// Real images taken from `AUTOGRAPH_PARITY_IMAGES` (sorted by name).
const MAX_REAL_IMAGES: usize = 16;

struct Embeddings {
    embeddings: Vec<Vec<f32>>,
    templates: Vec<Vec<i8>>,
}

fn embed(mut command: Command, bundle: &Path, precision: &str, images: &[PathBuf]) -> Embeddings {
    let out = command
        .arg("embed")
        .arg("--bundle")
        .arg(bundle)
        .args(["--precision", precision, "--json"])
        .args(images)
        .output()
        .expect("run autograph embed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("embed --json");
    let list = json["embeddings"].as_array().expect("embeddings");
    let field = |key: &str| list.iter().map(|e| e[key].clone()).collect::<Vec<_>>();
    Embeddings {
        embeddings: field("embedding").into_iter().map(|v| serde_json::from_value(v).expect("f32s")).collect(),
        templates: field("template").into_iter().map(|v| serde_json::from_value(v).expect("i8s")).collect(),
    }
}

/// Compares both builds on `bundle` at both precisions, printing the largest f32 difference.
fn compare(label: &str, binary: &Path, bundle: &Path, images: &[PathBuf]) {
    for precision in ["f32", "int8"] {
        let host = embed(Command::new(env!("CARGO_BIN_EXE_autograph")), bundle, precision, images);
        let cross = embed(common::command_under("AUTOGRAPH_CROSS_RUNNER", binary), bundle, precision, images);
        assert_eq!(host.embeddings.len(), images.len());
        assert_eq!(cross.embeddings.len(), images.len());
        let mut max_diff = 0f32;
        for (a, b) in host.embeddings.iter().zip(&cross.embeddings) {
            assert_eq!(a.len(), b.len());
            max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
        }
        let identical = host.templates.iter().zip(&cross.templates).filter(|(a, b)| a == b).count();
        eprintln!(
            "{label}, {precision} model, {} images: max |host - cross| {max_diff:.2e}, templates identical {identical}/{}",
            images.len(),
            images.len()
        );
        assert!(max_diff <= F32_TOLERANCE, "{label} {precision}: embeddings differ by {max_diff:e}");
        assert_eq!(identical, images.len(), "{label} {precision}: int8 templates differ");
    }
}

#[test]
#[ignore = "needs a cross-built binary: scripts/cross-test"]
fn cross_build_computes_the_same_embeddings() {
    let binary = PathBuf::from(std::env::var_os("AUTOGRAPH_CROSS_BINARY").expect("set AUTOGRAPH_CROSS_BINARY"));
    assert!(binary.is_file(), "{} not found", binary.display());

    let dir = tempfile::tempdir().expect("tmp");
    let bundle = dir.path().join("bundle");
    write_bundle(&bundle, 7);
    let images: Vec<PathBuf> = (1..=4u64)
        .flat_map(|w| (0..3u64).map(move |s| (w, s)))
        .map(|(w, s)| signature_file(dir.path(), &format!("w{w}-s{s}"), &Writer::new(w), s))
        .collect();
    compare("bundle built in code", &binary, &bundle, &images);

    if let (Some(real), Some(image_dir)) =
        (std::env::var_os("AUTOGRAPH_PARITY_BUNDLE"), std::env::var_os("AUTOGRAPH_PARITY_IMAGES"))
    {
        let mut images: Vec<PathBuf> = std::fs::read_dir(&image_dir)
            .expect("AUTOGRAPH_PARITY_IMAGES")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .collect();
        images.sort();
        images.truncate(MAX_REAL_IMAGES);
        assert!(!images.is_empty(), "no images in {}", PathBuf::from(image_dir).display());
        compare("trained bundle", &binary, Path::new(&real), &images);
    }
}
