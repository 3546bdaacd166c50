//! Training throughput on the CPU (burn's flex backend), with PyTorch on the same network and
//! batch measured in the same run for the ratio the trainer issue asks for:
//!
//! ```text
//! AUTOGRAPH_TORCH_PYTHON=/path/to/venv/bin/python cargo bench -p autograph-trainer --bench train_step
//! ```
//!
//! One step: forward over 64 images (8 writers x 6 genuine + 2 forged), triplet loss with
//! semi-hard in-batch mining, backward, AdamW. Random pixels (throughput does not depend on
//! them). Without AUTOGRAPH_TORCH_PYTHON only burn is measured. `bench/pytorch_train_step.py`
//! is the PyTorch side.

use std::process::Command;
use std::time::Instant;

use autograph_trainer::loss::{BatchLabels, Mining, triplet_loss};
use autograph_trainer::model::ModelConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WRITERS: usize = 8;
const GENUINE: usize = 6;
const FORGED: usize = 2;
/// Untimed steps first, on both sides. Ten, not two: burn's first steps also grow the allocator's
/// arenas, and the kernel clears each fresh huge page (perf: 10% of a run with two warm-up steps,
/// 5% with twelve); a 600-step training run pays that once, so it is start-up, not step cost.
const WARMUP: usize = 10;
const STEPS: usize = 5;

struct Net {
    label: &'static str,
    height: usize,
    width: usize,
    channels: Vec<usize>,
}

/// Seconds per training step of `net` with burn on the CPU.
fn burn_seconds_per_step(net: &Net) -> f64 {
    let device = Device::flex().autodiff();
    let config = ModelConfig::new().with_height(net.height).with_width(net.width).with_channels(net.channels.clone());
    let mut model = config.init_siamese_seeded(&device, 7).expect("valid config");
    let mut optimizer = AdamWConfig::new().with_weight_decay(1e-4).init();
    let n = WRITERS * (GENUINE + FORGED);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pixels: Vec<f32> = (0..n * net.height * net.width).map(|_| rng.random::<f32>()).collect();
    let writers: Vec<usize> = (0..n).map(|i| i / (GENUINE + FORGED)).collect();
    let forged: Vec<bool> = (0..n).map(|i| i % (GENUINE + FORGED) >= GENUINE).collect();
    let mut start = Instant::now();
    for step in 0..WARMUP + STEPS {
        if step == WARMUP {
            start = Instant::now();
        }
        let images = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [n, 1, net.height, net.width]), &device);
        let embeddings = model.embedding.forward(images);
        let labels = BatchLabels { writers: &writers, forged: &forged };
        let loss = triplet_loss(embeddings, labels, 0.5, Mining::SemiHard).expect("the batch has triplets").loss;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-3, model, grads);
    }
    start.elapsed().as_secs_f64() / STEPS as f64
}

/// Seconds per step of the same network in PyTorch, or why it was not measured.
fn torch_seconds_per_step(net: &Net) -> Result<f64, String> {
    let python = std::env::var("AUTOGRAPH_TORCH_PYTHON").map_err(|_| "AUTOGRAPH_TORCH_PYTHON not set".to_string())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pytorch_train_step.py");
    let channels: Vec<String> = net.channels.iter().map(ToString::to_string).collect();
    let out = Command::new(&python)
        .arg(script)
        .args(["--height", &net.height.to_string(), "--width", &net.width.to_string()])
        .args(["--channels", &channels.join(",")])
        .args(["--writers", &WRITERS.to_string(), "--per-writer", &(GENUINE + FORGED).to_string()])
        .args(["--steps", &STEPS.to_string(), "--warmup", &WARMUP.to_string(), "--threads", "2"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line)
        .map_err(|_| format!("no result from PyTorch: {}", String::from_utf8_lossy(&out.stderr)))?;
    json["seconds_per_step"].as_f64().ok_or_else(|| format!("unexpected PyTorch output {line}"))
}

/// Rounds of (burn, PyTorch) per network; `AUTOGRAPH_BENCH_ROUNDS` overrides. The two are
/// interleaved so that a slow patch of this shared machine hits both, and the ratio reported is
/// the median of the per-round ratios.
fn rounds() -> usize {
    std::env::var("AUTOGRAPH_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).filter(|&r| r > 0).unwrap_or(3)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn main() {
    // SAFETY: first thing in main, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        autograph_trainer::keep_freed_memory();
    }
    let nets = [
        Net { label: "default 16-32-64-128 @ 64x128", height: 64, width: 128, channels: vec![16, 32, 64, 128] },
        Net { label: "prototype 32-64-128-128 @ 96x192", height: 96, width: 192, channels: vec![32, 64, 128, 128] },
    ];
    let n = (WRITERS * (GENUINE + FORGED)) as f64;
    let rounds = rounds();
    println!(
        "training step, {n} images, CPU ({STEPS} timed steps after {WARMUP} warm-up; {rounds} interleaved rounds)"
    );
    println!("{:<36} {:>5} {:>12} {:>14} {:>16}", "network", "round", "burn img/s", "PyTorch img/s", "burn / PyTorch");
    for net in &nets {
        let (mut burn_rates, mut torch_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            let burn = burn_seconds_per_step(net);
            burn_rates.push(n / burn);
            let (torch, ratio) = match torch_seconds_per_step(net) {
                Ok(t) => {
                    torch_rates.push(n / t);
                    ratios.push(t / burn);
                    (format!("{:.1}", n / t), format!("{:.3}", t / burn))
                }
                Err(why) => (format!("- ({why})"), "-".into()),
            };
            println!("{:<36} {:>5} {:>12.1} {:>14} {:>16}", net.label, round, n / burn, torch, ratio);
        }
        let torch = if torch_rates.is_empty() { "-".to_string() } else { format!("{:.1}", median(torch_rates)) };
        let ratio = if ratios.is_empty() { "-".to_string() } else { format!("{:.3}", median(ratios)) };
        println!("{:<36} {:>5} {:>12.1} {:>14} {:>16}", net.label, "med", median(burn_rates), torch, ratio);
    }
}
