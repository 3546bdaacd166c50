//! The engine on a bundle built in the test: loading, the f32/int8 models, and that the
//! synthetic writers separate the way the CLI tests rely on.

mod common;

use autograph_device::engine::{Bundle, Engine, EngineError, EngineOptions, Runtime};
use autograph_shared::gallery::{Template, similarity, writer_score};
use autograph_shared::manifest::Precision;
use autograph_shared::preprocess_bytes;
use common::{Writer, preprocess_config, write_bundle};

fn engine(dir: &std::path::Path, runtime: Runtime, precision: Precision) -> Result<Engine, EngineError> {
    let bundle = Bundle::open(dir)?;
    Engine::open(bundle, EngineOptions { runtime, precision: Some(precision), threads: 1 })
}

fn embed(engine: &mut Engine, png: &[u8]) -> Vec<f32> {
    let image = preprocess_bytes(png, &preprocess_config()).expect("preprocess");
    engine.embed_one(&image).expect("embed")
}

#[test]
fn embeddings_are_unit_vectors_and_int8_agrees_with_f32() {
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    let mut f32_engine = engine(dir.path(), Runtime::Tract, Precision::F32).expect("f32");
    let mut int8_engine = engine(dir.path(), Runtime::Tract, Precision::Int8).expect("int8");
    for w in 0..4 {
        let png = Writer::new(w).signature_png(0);
        let a = embed(&mut f32_engine, &png);
        let b = embed(&mut int8_engine, &png);
        assert_eq!(a.len(), 128);
        let norm = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.99, "int8 vs f32 cosine {cos}");
        // Deterministic: the same image gives the same template (what the replay guard uses).
        let again = embed(&mut f32_engine, &png);
        assert_eq!(Template::from_embedding(&a).ok(), Template::from_embedding(&again).ok());
    }
}

/// Scores of the synthetic writers the CLI tests use: genuine samples score above the
/// manifest's thresholds, other writers below. The thresholds in `common` were chosen from
/// these figures (random weights do not separate every pair of synthetic writers this well).
#[test]
fn scores_separate_writers() {
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    let mut e = engine(dir.path(), Runtime::Tract, Precision::F32).expect("engine");
    let writers: Vec<Writer> = common::TEST_WRITERS.into_iter().map(Writer::new).collect();
    let template =
        |e: &mut Engine, w: &Writer, s: u64| Template::from_embedding(&embed(e, &w.signature_png(s))).expect("t");
    let refs: Vec<Vec<Template>> = writers.iter().map(|w| (0..3).map(|s| template(&mut e, w, s)).collect()).collect();
    let (mut genuine_min, mut impostor_max, mut pair_max) = (f32::MAX, f32::MIN, f32::MIN);
    for (i, w) in writers.iter().enumerate() {
        for s in common::PROBE_SAMPLES {
            let probe = template(&mut e, w, s);
            genuine_min = genuine_min.min(writer_score(&refs[i], &probe));
            for r in &refs[i] {
                pair_max = pair_max.max(similarity(r, &probe));
            }
            for (j, other) in refs.iter().enumerate() {
                if j != i {
                    impostor_max = impostor_max.max(writer_score(other, &probe));
                }
            }
        }
    }
    eprintln!("genuine min {genuine_min:.4}, impostor max {impostor_max:.4}, genuine pair max {pair_max:.4}");
    assert!(genuine_min > common::SKILLED.far_0_1pct + 0.02, "genuine min {genuine_min}");
    assert!(impostor_max < common::RANDOM.eer - 0.05, "impostor max {impostor_max}");
    assert!(pair_max < common::REPLAY_SIMILARITY, "genuine pair max {pair_max}");
}

/// No two distinct samples of the writers the CLI tests use come near the replay limit, so
/// only a re-submitted reference trips the replay guard there.
#[test]
fn distinct_genuine_samples_stay_below_the_replay_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    let mut e = engine(dir.path(), Runtime::Tract, Precision::F32).expect("engine");
    let mut pair_max = f32::MIN;
    for w in common::TEST_WRITERS {
        let writer = Writer::new(w);
        let templates: Vec<Template> = common::REFERENCE_SAMPLES
            .chain(common::PROBE_SAMPLES)
            .map(|s| Template::from_embedding(&embed(&mut e, &writer.signature_png(s))).expect("t"))
            .collect();
        for (i, a) in templates.iter().enumerate() {
            for b in &templates[i + 1..] {
                pair_max = pair_max.max(similarity(a, b));
            }
        }
    }
    eprintln!("max similarity of two distinct genuine samples: {pair_max:.4}");
    assert!(pair_max < common::REPLAY_SIMILARITY, "{pair_max}");
}

#[test]
fn model_must_match_the_manifest() {
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    // The manifest names an output the graph does not have.
    let mut manifest = autograph_shared::manifest::Manifest::load(dir.path()).expect("load");
    manifest.io.output = "logits".into();
    manifest.save(dir.path()).expect("save");
    let err = engine(dir.path(), Runtime::Tract, Precision::F32).expect_err("mismatch");
    assert!(matches!(err, EngineError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("model.onnx") && err.to_string().contains("logits"), "{err}");
}

#[cfg(not(feature = "ort"))]
#[test]
fn ort_is_reported_unavailable_without_the_feature() {
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    let err = engine(dir.path(), Runtime::Ort, Precision::F32).expect_err("no ort");
    assert!(err.to_string().contains("--features ort"), "{err}");
}

/// tract and ONNX Runtime agree on both models (run when `ORT_DYLIB_PATH` is set).
#[cfg(feature = "ort")]
#[test]
fn tract_and_ort_agree() {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        eprintln!("ORT_DYLIB_PATH not set; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    write_bundle(dir.path(), 1);
    for precision in [Precision::F32, Precision::Int8] {
        let mut t = engine(dir.path(), Runtime::Tract, precision).expect("tract");
        let mut o = engine(dir.path(), Runtime::Ort, precision).expect("ort");
        for w in 0..3 {
            let png = Writer::new(w).signature_png(1);
            let (a, b) = (embed(&mut t, &png), embed(&mut o, &png));
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            // f32: the same graph in two runtimes (issue #4 asks for 1e-5); int8: integer
            // kernels may round a requantization step differently, so a looser bound.
            let limit = if precision == Precision::F32 { 1e-5 } else { 1e-4 };
            assert!(diff <= limit, "{precision:?}: max abs difference {diff} over {limit}");
        }
    }
}
