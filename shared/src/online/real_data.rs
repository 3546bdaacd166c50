//! Checks against the real on-line corpora in `../shared/data` beside the workspace (or
//! `$AUTOGRAPH_SHARED_DATA`), as the workspace's other real-data tests find them. Ignored by
//! default: a clone without the data still passes `cargo test`; run them with `--ignored`.

use std::path::PathBuf;

use super::dataset::list_online_dataset;
use super::evaluation::{OnlineEvalOptions, evaluate_online};
use super::formats::{Format, read_trajectory};
use crate::dataset::Label;

fn shared_data() -> PathBuf {
    std::env::var_os("AUTOGRAPH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

#[test]
#[ignore = "needs ../shared/data"]
fn every_online_signature_reads() {
    for (set, format, users, per_user) in
        [("svc2004_online", Format::Svc2004, 40, [20, 20]), ("mcyt100_online", Format::Mcyt, 100, [25, 25])]
    {
        let ds = list_online_dataset(&shared_data().join(set)).expect("list");
        assert_eq!(ds.format, format, "{set}");
        assert_eq!(ds.users().len(), users, "{set}");
        for user in ds.users() {
            let count = |label| ds.samples.iter().filter(|s| s.user == user && s.label == label).count();
            assert_eq!([count(Label::Genuine), count(Label::Forged)], per_user, "{set} {user}");
        }
        let mut failures = Vec::new();
        for sample in &ds.samples {
            match read_trajectory(&sample.path) {
                Ok(t) => {
                    let p = t.pressure().expect("both corpora measure pressure");
                    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
                    assert!(t.len() >= 20 && !t.stroke_starts().is_empty(), "{}", sample.path.display());
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        assert!(failures.is_empty(), "{set}: {failures:#?}");
    }
}

/// The protocol end to end on SVC2004 with the default settings; a loose bound (the measured
/// figures are several times lower), so only a real regression fails.
#[test]
#[ignore = "needs ../shared/data"]
fn svc2004_default_settings_verify() {
    let ds = list_online_dataset(&shared_data().join("svc2004_online")).expect("list");
    let options = OnlineEvalOptions { timing_probes: 0, ..OnlineEvalOptions::default() };
    let report = evaluate_online(&ds, &options, &mut |_| {}).expect("evaluate");
    let summary = report.summary.expect("summary");
    assert!(summary.skilled_eer.mean < 0.10, "{summary:?}");
    assert!(summary.random_eer.mean < 0.03, "{summary:?}");
}
