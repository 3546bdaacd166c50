//! The report directory of an evaluation:
//!
//! * `report.md`: tables for people, each under the protocol it was measured with, and our
//!   figures beside the published ones;
//! * `report.json`: every figure under readable keys (`verification.R5.test.skilled.eer`);
//! * `scores.json`: the raw test scores per R, to redraw or re-analyse without the model;
//! * `roc.png`, `det.png`, `scores_R<r>.png`: ROC, DET and score histograms.

pub mod plots;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autograph_shared::evaluation::{self, EvaluationReport, VerificationEntry};
use autograph_shared::protocol::ForgeryMetrics;

pub use plots::probit;

/// The files a report directory holds.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub dir: PathBuf,
    pub markdown: PathBuf,
    pub json: PathBuf,
    pub scores: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Writes `report.md`, `report.json`, `scores.json` and the plots into `dir` (created if needed).
/// A plot that cannot be drawn is named in the report instead of failing the evaluation.
pub fn write_report(report: &EvaluationReport, dir: &Path) -> Result<ReportFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut plots_made: Vec<(String, String)> = Vec::new();
    let mut plot_failures = Vec::new();
    if !report.scores.is_empty() {
        let subtitle = format!("{}, {} test writers", report.data.name, report.split.test.len());
        let mut attempt = |file: String, title: String, result: Result<()>| match result {
            Ok(()) => plots_made.push((title, file)),
            Err(e) => plot_failures.push(format!("{file}: {e:#}")),
        };
        attempt("roc.png".into(), "ROC".into(), plots::roc(&dir.join("roc.png"), &report.scores, &subtitle));
        attempt("det.png".into(), "DET".into(), plots::det(&dir.join("det.png"), &report.scores, &subtitle));
        for (r, scores) in &report.scores {
            let Some(entry) = report.verification_at(*r) else { continue };
            if scores.genuine.is_empty() {
                continue;
            }
            let file = format!("scores_R{r}.png");
            let title = format!("Test scores at R={r} ({subtitle})");
            let result = plots::histogram(&dir.join(&file), scores, &entry.thresholds, &title);
            attempt(file, format!("Score histograms, R={r}"), result);
        }
    }
    let json_path = dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let scores_path = dir.join("scores.json");
    let scores: std::collections::BTreeMap<String, _> =
        report.scores.iter().map(|(r, s)| (format!("R{r}"), s)).collect();
    std::fs::write(&scores_path, serde_json::to_string(&scores)? + "\n")
        .with_context(|| format!("writing {}", scores_path.display()))?;
    let markdown_path = dir.join("report.md");
    std::fs::write(&markdown_path, markdown(report, &plots_made, &plot_failures))
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    Ok(ReportFiles {
        dir: dir.to_path_buf(),
        markdown: markdown_path,
        json: json_path,
        scores: scores_path,
        plots: plots_made.iter().map(|(_, f)| dir.join(f)).collect(),
    })
}

fn pct(v: f64) -> String {
    if v.is_finite() { format!("{:.2}%", v * 100.0) } else { "n/a".into() }
}

fn eer_auc(m: Option<&ForgeryMetrics>) -> (String, String) {
    m.map_or_else(|| ("n/a".into(), "n/a".into()), |m| (pct(m.eer), format!("{:.4}", m.auc)))
}

fn far_frr(m: Option<&ForgeryMetrics>, at_far_1pct: bool) -> String {
    m.map_or_else(
        || "n/a".into(),
        |m| {
            let p = if at_far_1pct { m.at_validation_far_1pct_threshold } else { m.at_validation_eer_threshold };
            format!("{} / {}", pct(p.far), pct(p.frr))
        },
    )
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown report. `plots` are (title, file name) pairs inside the report directory.
pub fn markdown(report: &EvaluationReport, plots: &[(String, String)], plot_failures: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Evaluation: {} on {}\n", report.bundle.dir.display(), report.data.name);
    let _ = writeln!(
        md,
        "Model: `{}` ({}, sha256 `{}`), run with {}; trained on {}; input {}x{}.  ",
        report.bundle.dir.display(),
        evaluation::precision_name(report.precision),
        report.bundle.model_sha256.get(..16).unwrap_or(&report.bundle.model_sha256),
        report.runtime,
        report.bundle.trained_on,
        report.bundle.input_height,
        report.bundle.input_width
    );
    let d = &report.data;
    let _ = writeln!(
        md,
        "Data: {} (`{}`, {} layout): {} writers, {} genuine, {} forged; {} byte-identical duplicates dropped \
         before scoring; content sha256 `{}`.  ",
        d.name,
        d.root.display(),
        d.layout,
        d.writers,
        d.genuine,
        d.forged,
        d.duplicates_dropped,
        d.content_hash.get(..16).unwrap_or(&d.content_hash)
    );
    let _ = writeln!(md, "Mode: {}.\n", report.split.source);

    let _ = writeln!(md, "## Our figures beside the published ones\n");
    let _ = writeln!(md, "| Benchmark | Published | Their protocol | Ours | Our protocol |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for a in &report.anchors {
        let ours = a.ours.clone().unwrap_or_else(|| "not measured in this report".into());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(&a.benchmark),
            cell(&a.published),
            cell(&a.published_protocol),
            cell(&ours),
            cell(&a.our_protocol)
        );
    }
    let _ = writeln!(
        md,
        "\nPublished figures chosen with thresholds tuned on the test data, or on scans whose background \
         separates genuine from forged, are upper bounds of what such a system would do on new writers; ours use \
         thresholds that never saw a test writer.\n"
    );

    if !report.verification.is_empty() {
        write_verification(&mut md, report);
    }
    if !report.identification.is_empty() {
        let _ = writeln!(md, "## Identification (N-way K-shot)\n");
        if let Some(first) = report.identification.values().next() {
            let _ = writeln!(md, "Protocol: {}.\n", first.protocol);
        }
        let _ = writeln!(md, "| Task | Accuracy | Chance | Trials | Eligible test writers |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for e in report.identification.values() {
            let _ = writeln!(
                md,
                "| {}-way {}-shot | {} | {} | {} | {} |",
                e.n_way,
                e.k_shot,
                e.accuracy.map_or_else(|| "n/a (too few writers)".into(), pct),
                pct(e.chance),
                e.trials,
                e.eligible_writers
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Leakage check (background only)\n");
    match &report.leakage {
        Some(l) => {
            let _ = writeln!(md, "Protocol: {}.\n", l.protocol);
            let _ = writeln!(
                md,
                "Background-only EER: **{}** over {} genuine and {} forged test images: {}.\n",
                pct(l.background_only_eer),
                l.genuine_images,
                l.forged_images,
                if l.near_chance { l.verdict().to_string() } else { format!("**{}**", l.verdict()) }
            );
            let _ = writeln!(md, "| Feature | EER |");
            let _ = writeln!(md, "|---|---|");
            for (name, eer) in &l.per_feature {
                let _ = writeln!(md, "| {name} | {} |", pct(*eer));
            }
            md.push('\n');
        }
        None => {
            let _ = writeln!(md, "Not measured: the data has no forgeries, or the check was not requested.\n");
        }
    }
    if let Some(o) = &report.omniglot {
        let _ = writeln!(md, "## Omniglot one-shot runs\n");
        let _ = writeln!(md, "Protocol: {}.\n", o.protocol);
        let _ = writeln!(md, "Mean accuracy **{}** (error {}).\n", pct(o.mean_accuracy), pct(o.error_rate));
        let _ = writeln!(md, "| Run | Correct | Accuracy |");
        let _ = writeln!(md, "|---|---|---|");
        for r in &o.runs {
            let _ = writeln!(md, "| {} | {}/{} | {} |", r.run, r.correct, r.total, pct(r.accuracy));
        }
        md.push('\n');
    }
    if !plots.is_empty() || !plot_failures.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        for (title, file) in plots {
            let _ = writeln!(md, "### {title}\n\n![{title}]({file})\n");
        }
        for f in plot_failures {
            let _ = writeln!(md, "- could not draw {f}");
        }
        md.push('\n');
    }
    if !report.notes.is_empty() || !report.skipped.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        for n in &report.notes {
            let _ = writeln!(md, "- {n}");
        }
        for s in &report.skipped {
            let _ = writeln!(md, "- skipped `{}`: {}", s.file, s.reason);
        }
        md.push('\n');
    }
    md
}

fn write_verification(md: &mut String, report: &EvaluationReport) {
    let _ = writeln!(md, "## Verification\n");
    let mut entries: Vec<&VerificationEntry> = report.verification.values().collect();
    entries.sort_by_key(|e| e.references);
    if let Some(primary) = entries.iter().find(|e| e.references == report.primary_references).or(entries.first()) {
        let _ = writeln!(md, "Protocol: {}.\n", primary.protocol);
    }
    let _ = writeln!(
        md,
        "EER and AUC are measured on the test scores (the EER's own threshold is reported, never used to decide). \
         FAR / FRR are the error rates on test writers at thresholds calibrated elsewhere: at the validation EER \
         point and at the validation FAR-1% point. Skilled and random forgeries have separate thresholds.\n"
    );
    let _ = writeln!(
        md,
        "| R | Test writers | Skilled EER | Skilled AUC | Skilled FAR / FRR (EER thr.) | Skilled FAR / FRR (FAR-1% thr.) \
         | Random EER | Random AUC | Random FAR / FRR (EER thr.) | Random FAR / FRR (FAR-1% thr.) | Validation EER skilled / random |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for e in &entries {
        let Some(m) = e.test else {
            let _ = writeln!(
                md,
                "| {} | 0 | no test writer has more than {} genuine signatures | | | | | | | | |",
                e.references, e.references
            );
            continue;
        };
        let (s_eer, s_auc) = eer_auc(m.skilled.as_ref());
        let (r_eer, r_auc) = eer_auc(m.random.as_ref());
        let validation = e.validation.map_or_else(
            || "n/a".into(),
            |v| {
                format!(
                    "{} / {}",
                    v.skilled_eer.map_or_else(|| "n/a".into(), pct),
                    v.random_eer.map_or_else(|| "n/a".into(), pct)
                )
            },
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            e.references,
            m.writers,
            s_eer,
            s_auc,
            far_frr(m.skilled.as_ref(), false),
            far_frr(m.skilled.as_ref(), true),
            r_eer,
            r_auc,
            far_frr(m.random.as_ref(), false),
            far_frr(m.random.as_ref(), true),
            validation
        );
    }
    let _ = writeln!(md, "\nThresholds per R:\n");
    for e in &entries {
        let t = &e.thresholds;
        let skilled =
            t.skilled.map_or_else(|| "none".into(), |s| format!("EER point {:.4}, FAR-1% {:.4}", s.eer, s.far_1pct));
        let _ = writeln!(
            md,
            "- R={}: skilled {skilled}; random EER point {:.4}, FAR-1% {:.4}. Source: {}.",
            e.references, t.random.eer, t.random.far_1pct, e.threshold_source
        );
    }
    md.push('\n');
}
