//! `autograph-train eval-dynamic` on a small synthetic SVC2004 Task 2 corpus, and its refusals.

use std::path::Path;
use std::process::{Command, Output};

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autograph-train"))
        .arg("eval-dynamic")
        .args(args)
        .env_remove("AUTOGRAPH_DATA")
        .output()
        .expect("run autograph-train")
}

/// `users` writers, SVC2004 naming: S1..S8 genuine, S21..S24 skilled forgeries. Each user's
/// signature is a curve of its own; forgeries copy the shape with another rhythm and pressure.
fn write_corpus(dir: &Path, users: u32) {
    let task2 = dir.join("Task2");
    std::fs::create_dir_all(&task2).expect("mkdir");
    for u in 1..=users {
        for s in (1..=8).chain(21..=24) {
            let forged = s > 20;
            let n = 120 + 5 * (s % 7) + 7 * u;
            let wobble = (s % 8) as f32 * 0.05;
            let mut text = format!("{n}\n");
            for i in 0..n {
                let t = i as f32 / n as f32;
                let warp = if forged { t * t } else { t };
                let a = warp * std::f32::consts::TAU * (1.5 + 0.37 * u as f32);
                let x = 1000.0 + 800.0 * t + 150.0 * (a + wobble).cos();
                let y = 2000.0 + 200.0 * (a * 1.3).sin() + 40.0 * wobble;
                let p = if forged { 300.0 } else { 200.0 + 600.0 * (t * 6.0).sin().abs() };
                let button = u32::from(i > 0);
                text.push_str(&format!("{} {} {} {button} 1500 700 {}\n", x as i32, y as i32, 1000 + 10 * i, p as i32));
            }
            std::fs::write(task2.join(format!("U{u}S{s}.TXT")), text).expect("write");
        }
    }
}

#[test]
fn evaluates_a_synthetic_corpus_and_writes_the_report() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("svc");
    write_corpus(&data, 10);
    let out_dir = tmp.path().join("report");
    let data_arg = data.to_str().expect("utf-8");
    let out_arg = out_dir.to_str().expect("utf-8");
    let out = train(&["--data", data_arg, "--references", "3", "--timing-probes", "5", "--out", out_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("10 users (10 scored), 120 signatures"), "{stdout}");
    assert!(stdout.contains("skilled EER"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("dynamic.json")).expect("dynamic.json"))
            .expect("json");
    assert_eq!(report["folds"].as_array().map(Vec::len), Some(5));
    assert_eq!(report["options"]["references"], 3);
    let random = report["summary"]["random_eer"]["mean"].as_f64().expect("random EER");
    assert!(random < 0.1, "synthetic writers are easy to tell apart: {random}");
    let md = std::fs::read_to_string(out_dir.join("dynamic.md")).expect("dynamic.md");
    assert!(md.contains("| **mean ± std** |"), "{md}");

    // --json prints the same report.
    let out = train(&["--data", data_arg, "--references", "3", "--timing-probes", "0", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(json["users"], 10);
    assert!(json["timing"].is_null());
}

#[test]
fn bad_inputs_are_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let missing = tmp.path().join("nowhere");
    let out = train(&["--data", missing.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere: no such directory"), "{stderr}");

    // A directory without on-line signatures.
    std::fs::write(tmp.path().join("notes.txt"), "hello").expect("write");
    let out = train(&["--data", tmp.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no on-line signatures found"), "{stderr}");

    // Fusion with a directory that holds no k-fold run.
    let data = tmp.path().join("svc");
    write_corpus(&data, 3);
    let out = train(&["--data", data.to_str().expect("utf-8"), "--fuse-with", tmp.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no fold<i>/run.json found"), "{stderr}");

    // One reference cannot make a dynamic template.
    let out = train(&["--data", data.to_str().expect("utf-8"), "--references", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--references must be between"));

    // The help explains the protocol.
    let out = train(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["writer-disjoint", "validation users only", "--fuse-with", "same sample numbers"] {
        assert!(help.contains(needle), "the help lacks {needle:?}: {help}");
    }
}
