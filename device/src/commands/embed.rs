//! `autograph embed`: the embedding and gallery template of each image, as the device computes
//! them. For integration and for checking that two builds (x86_64 and an ARM cross build, say)
//! compute the same numbers; nothing is stored.

use std::path::PathBuf;

use autograph_shared::gallery::Template;
use serde::Serialize;

use super::{BundleArgs, CommandError, Exit, ModelUsed, Report, RuntimeArgs};
use crate::engine::Engine;

#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// Signature images (each must be usable, or the command fails naming the file).
    #[arg(value_name = "IMG", required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// One image's numbers.
#[derive(Debug, Serialize)]
pub struct EmbeddingJson {
    pub image: PathBuf,
    /// The model's output (unit length), f32.
    pub embedding: Vec<f32>,
    /// The int8 gallery template made from it (what `enroll` stores).
    pub template: Vec<i8>,
}

/// `--json` output of `embed`.
#[derive(Debug, Serialize)]
pub struct EmbedJson {
    pub command: &'static str,
    pub embeddings: Vec<EmbeddingJson>,
    #[serde(flatten)]
    pub model: ModelUsed,
}

pub fn run(args: &EmbedArgs) -> Result<Report, CommandError> {
    let bundle = args.bundle.open()?;
    let mut engine = Engine::open(bundle, args.runtime.options())?;
    let mut embeddings = Vec::with_capacity(args.images.len());
    let mut text = String::new();
    for path in &args.images {
        let embedding = super::embedding_of(&mut engine, path)?;
        let template = Template::from_embedding(&embedding).map_err(crate::engine::EngineError::from)?;
        let head: Vec<String> = embedding.iter().take(4).map(|v| format!("{v:+.5}")).collect();
        text.push_str(&format!("{}: [{}, ...] ({} values)\n", path.display(), head.join(", "), embedding.len()));
        embeddings.push(EmbeddingJson { image: path.clone(), embedding, template: template.as_i8().to_vec() });
    }
    let json = EmbedJson { command: "embed", embeddings, model: ModelUsed::of(&engine) };
    Ok(Report::new(Exit::Ok, &json, text.trim_end().to_string()))
}
