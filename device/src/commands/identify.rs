//! `autograph identify`: which enrolled writers is this signature closest to?
//!
//! Ranks every writer by the gallery's KNN rule (similarity to the writer's nearest reference,
//! ties by id). "Found" means the best match reaches the threshold, by default the one
//! calibrated against random forgeries: identification tells writers apart.

use std::path::PathBuf;

use serde::Serialize;

use super::{
    Against, BundleArgs, CommandError, Exit, GalleryArgs, ModelUsed, OperatingPoint, OperatingPointArgs, Report,
    RuntimeArgs,
};
use crate::engine::Engine;
use crate::store;

/// Largest `--k`: the match list is a fixed-capacity buffer.
pub const MAX_K: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct IdentifyArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    #[command(flatten)]
    pub gallery: GalleryArgs,
    /// The signature image.
    #[arg(value_name = "IMG")]
    pub image: PathBuf,
    /// Number of best matches to report (1-64).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=MAX_K as i64))]
    pub k: u8,
    #[command(flatten)]
    pub point: OperatingPointArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// One ranked writer.
#[derive(Debug, Serialize)]
pub struct MatchJson {
    pub rank: usize,
    pub user: String,
    pub score: f32,
    /// `score >= threshold`.
    pub above_threshold: bool,
}

/// `--json` output of `identify`.
#[derive(Debug, Serialize)]
pub struct IdentifyJson {
    pub command: &'static str,
    pub image: PathBuf,
    pub k: usize,
    /// Best first.
    pub matches: Vec<MatchJson>,
    /// The best match's id when it reaches the threshold, else `null`.
    pub found: Option<String>,
    pub threshold: f32,
    pub operating_point: OperatingPoint,
    /// Writers searched.
    pub writers: usize,
    #[serde(flatten)]
    pub model: ModelUsed,
}

pub fn run(args: &IdentifyArgs) -> Result<Report, CommandError> {
    let bundle = args.bundle.open()?;
    let options = args.runtime.options();
    let calibration = *bundle.calibration(bundle.precision_or_default(options.precision))?;
    let point = args.point.resolve(&calibration.thresholds, Against::Random)?;
    let gallery = store::load(&args.gallery.file()?, Some(&bundle.model_identity()))?;
    let mut engine = Engine::open(bundle, options)?;
    let probe = super::template_of(&mut engine, &args.image)?;

    let top = gallery.top_k::<MAX_K>(&probe);
    let matches: Vec<MatchJson> = top
        .iter()
        .take(usize::from(args.k))
        .enumerate()
        .map(|(i, m)| MatchJson {
            rank: i + 1,
            user: m.id.to_string(),
            score: m.score,
            above_threshold: m.score >= point.threshold,
        })
        .collect();
    let found = matches.first().filter(|m| m.above_threshold).map(|m| m.user.clone());

    let mut text = match &found {
        Some(id) => format!("FOUND {id:?} (threshold {point})\n"),
        None if gallery.is_empty() => "NOT FOUND: the gallery is empty\n".to_string(),
        None => format!("NOT FOUND: no writer reaches the threshold {point}\n"),
    };
    for m in &matches {
        text.push_str(&format!(
            "{:>3}. {:<32} {:.4}{}\n",
            m.rank,
            m.user,
            m.score,
            if m.above_threshold { "" } else { "  (below)" }
        ));
    }
    let exit = if found.is_some() { Exit::Ok } else { Exit::No };
    let json = IdentifyJson {
        command: "identify",
        image: args.image.clone(),
        k: usize::from(args.k),
        matches,
        found,
        threshold: point.threshold,
        operating_point: point,
        writers: gallery.len(),
        model: ModelUsed::of(&engine),
    };
    Ok(Report::new(exit, &json, text.trim_end().to_string()))
}
