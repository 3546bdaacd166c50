//! Where tract spends its time on a bundle's model (not a test of behaviour; ignored):
//!
//! ```text
//! AUTOGRAPH_BENCH_BUNDLE=/tmp/signet cargo test --release -p autograph-device \
//!     --test tract_profile -- --ignored --nocapture
//! ```
//!
//! Compares, on one thread: load time and latency of the optimised model with a concrete
//! `[1, 1, H, W]` input (what `autograph` runs), with a symbolic batch, decluttered but not
//! optimised, and reloaded from tract's NNEF form; then the time per operator kind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use autograph_shared::manifest::{Manifest, Precision};
use tract_onnx::WithOnnx;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

const RUNS: usize = 60;

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[RUNS / 2]
}

fn run_ms(plan: &Arc<TypedSimplePlan>, input: &Tensor) -> f64 {
    let mut state = plan.spawn().expect("spawn");
    median_ms(|| {
        state.run(tvec!(input.clone().into_tvalue())).expect("run");
    })
}

#[test]
#[ignore = "profiles tract on the bundle in $AUTOGRAPH_BENCH_BUNDLE"]
fn profile_tract() {
    let Some(dir) = std::env::var_os("AUTOGRAPH_BENCH_BUNDLE").map(PathBuf::from) else {
        eprintln!("set AUTOGRAPH_BENCH_BUNDLE");
        return;
    };
    let manifest = Manifest::load(&dir).expect("manifest");
    let (h, w) = (manifest.preprocess.height as usize, manifest.preprocess.width as usize);
    let input = Tensor::from_shape(&[1, 1, h, w], &vec![0.1f32; h * w]).expect("input");
    eprintln!("debug assertions: {}", cfg!(debug_assertions));

    for precision in [Precision::F32, Precision::Int8] {
        let Ok(bytes) = manifest.read_model(&dir, precision) else { continue };
        eprintln!("== {precision:?} ==");
        let t = Instant::now();
        let concrete = onnx()
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 1, h, w]).into()))
            .and_then(|m| m.into_optimized())
            .expect("concrete");
        let load_onnx = t.elapsed().as_secs_f64() * 1e3;
        let plan = concrete.clone().into_runnable().expect("plan");
        eprintln!("concrete [1,1,{h},{w}], optimised: run {:.3} ms, load {:.1} ms", run_ms(&plan, &input), load_onnx);

        let mut symbolic = onnx().model_for_read(&mut &bytes[..]).expect("parse");
        let n = symbolic.symbols.sym("N");
        let fact = f32::fact(&[n.to_dim(), 1.to_dim(), h.to_dim(), w.to_dim()]);
        symbolic.set_input_fact(0, fact.into()).expect("fact");
        let symbolic = symbolic.into_optimized().expect("symbolic").into_runnable().expect("plan");
        eprintln!("symbolic batch N, optimised:        run {:.3} ms", run_ms(&symbolic, &input));

        let decluttered = onnx()
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 1, h, w]).into()))
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .expect("decluttered");
        let plan = decluttered.clone().into_runnable().expect("plan");
        eprintln!("concrete, decluttered only:         run {:.3} ms", run_ms(&plan, &input));

        let nnef = tract_nnef::nnef().with_onnx();
        let mut tar = Vec::new();
        match nnef.write_to_tar(&decluttered, &mut tar) {
            Ok(_) => {
                let t = Instant::now();
                let reloaded = nnef.model_for_read(&mut &tar[..]).and_then(|m| m.into_optimized()).expect("nnef");
                let load_nnef = t.elapsed().as_secs_f64() * 1e3;
                let plan = reloaded.into_runnable().expect("plan");
                eprintln!(
                    "NNEF ({} KiB tar), optimised:       run {:.3} ms, load {:.1} ms",
                    tar.len() / 1024,
                    run_ms(&plan, &input),
                    load_nnef
                );
            }
            Err(e) => eprintln!("NNEF: cannot write this model: {}", e.root_cause()),
        }

        // Time per operator kind in the plan autograph runs.
        let plan = concrete.into_runnable().expect("plan");
        let mut state = plan.spawn().expect("spawn");
        let mut per_op: BTreeMap<String, f64> = BTreeMap::new();
        for _ in 0..RUNS {
            state
                .run_plan_with_eval(tvec!(input.clone().into_tvalue()), |ctx, op_state, node, inputs| {
                    let t = Instant::now();
                    let out = eval(ctx, op_state, node, inputs);
                    *per_op.entry(node.op().name().to_string()).or_default() += t.elapsed().as_secs_f64() * 1e3;
                    out
                })
                .expect("run");
        }
        let mut rows: Vec<(String, f64)> = per_op.into_iter().map(|(k, v)| (k, v / RUNS as f64)).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (op, ms) in rows.iter().take(8) {
            eprintln!("    {op:<28} {ms:.3} ms");
        }
    }
}
