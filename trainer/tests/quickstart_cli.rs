//! `autograph-train quickstart` without data fails fast (exit 2) and says how to get data.

use std::process::Command;

#[test]
fn quickstart_without_data_exits_2_with_help() {
    // A working directory with no ../shared/data/svc2004 beside it, and no AUTOGRAPH_DATA.
    let tmp = tempfile::tempdir().expect("tmp");
    let cwd = tmp.path().join("checkout");
    std::fs::create_dir(&cwd).expect("mkdir");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_autograph-train"))
        .arg("quickstart")
        .current_dir(&cwd)
        .env_remove("AUTOGRAPH_DATA")
        .output()
        .expect("run autograph-train");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for needle in ["no data set found", "--data", "AUTOGRAPH_DATA", "data fetch omniglot", "data list"] {
        assert!(stderr.contains(needle), "the message lacks {needle:?}: {stderr}");
    }
    assert!(started.elapsed().as_secs() < 30, "it must fail fast");
    assert!(!cwd.join("runs").exists(), "nothing is written without data");

    // A --data that does not exist is named.
    let out = Command::new(env!("CARGO_BIN_EXE_autograph-train"))
        .args(["quickstart", "--data", "nowhere"])
        .current_dir(&cwd)
        .env_remove("AUTOGRAPH_DATA")
        .output()
        .expect("run autograph-train");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data nowhere: no such directory"));
}
