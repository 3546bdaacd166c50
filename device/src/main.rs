//! `autograph`: enrol, verify and identify handwritten signatures on the kiosk.
//!
//! Exit status: 0 accepted / found / done, 1 rejected / not found / check failed, 2 error.
//! With `--json` every command prints one JSON object on stdout, errors included.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use autograph_device::capture::cli::{CaptureArgs, KioskArgs};
use autograph_device::commands::{
    self, CommandError, Exit, Report, bench::BenchArgs, enroll::EnrollArgs, eval::EvalArgs, gallery::GalleryCommand,
    identify::IdentifyArgs, verify::VerifyArgs,
};
use clap::{Parser, Subcommand};

const ABOUT: &str = "Offline handwritten-signature verification: enrol writers, verify and identify signatures.";

const LONG_ABOUT: &str = "\
Offline handwritten-signature verification: enrol writers, verify and identify signatures.

A model bundle (--bundle DIR: manifest.json, model.onnx, model.int8.onnx) embeds each
signature image; the gallery file (--gallery FILE) keeps up to 8 int8 templates for each of
up to 1024 writers, and is tied to the bundle's model: a gallery from another bundle is
refused. A signature's score is its similarity to the writer's nearest reference, compared with
a threshold calibrated on validation writers (see --far, --against, --threshold).

Writer-adaptive decisions: a bundle whose manifest has an \"adaptive\" section ships a cohort
(cohort.bin: templates of training writers, hash-checked). Enrolment then also fits a small
model per writer against it, and verify scores by the bundle's rule (a per-writer normalised
score, or the writer's classifier) against that rule's threshold. Writers enrolled without a
model are decided by the nearest rule until `autograph gallery refit` (or their next
enrolment) fits one; verify --json reports the rule used.

The gallery file is encrypted at rest (XChaCha20-Poly1305) under a device key: the key file
given by --gallery-key or AUTOGRAPH_GALLERY_KEY, by default
$XDG_CONFIG_HOME/autograph/gallery.key (else ~/.config/autograph/gallery.key). It is created
(32 random bytes, mode 0600) when the first gallery is written; back it up apart from the
gallery: without it the gallery cannot be read. A wrong key, a modified or truncated gallery,
or a key file others can read is refused (exit 2) and nothing is changed. A gallery written
before encryption is refused until `autograph gallery encrypt`; `autograph gallery rekey`
moves the gallery to another key.

Exit status: 0 accepted / found / done; 1 rejected, possible replay, not found, or check
failed; 2 error (bad arguments, unreadable or blank images, damaged bundle or gallery).";

#[derive(Debug, Parser)]
#[command(name = "autograph", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Print one JSON object on stdout instead of text (errors too).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol 1-8 reference signatures of a writer (all images must be usable, or none is kept).
    ///
    /// With a bundle that has a cohort, the writer's model is fitted on their references in the
    /// same atomic gallery update.
    Enroll(EnrollArgs),
    /// Decide whether a signature is by the claimed writer (exit 0 accepted, 1 rejected).
    ///
    /// A probe that is a copy of an enrolled reference is reported as a possible replay and
    /// rejected. The score is the bundle's rule's (see "rule" in --json); a writer without a
    /// writer model is decided by the nearest rule (see `gallery refit`).
    Verify(VerifyArgs),
    /// Rank the enrolled writers by similarity to a signature (exit 0 if the best reaches the
    /// threshold).
    Identify(IdentifyArgs),
    /// List, remove, export, import, check, refit, encrypt or rekey the gallery.
    #[command(subcommand)]
    Gallery(GalleryCommand),
    /// Print the embedding and int8 template of each image (nothing is stored).
    Embed(commands::embed::EmbedArgs),
    /// Measure preprocessing, embedding (each runtime and precision), end-to-end verification
    /// and KNN latency on one thread.
    Bench(BenchArgs),
    /// Evaluate the bundle on a data set with this runtime (int8 by default) through the shared
    /// protocols: verification at R = 1, 3, 5, 10, identification, leakage check, Omniglot runs.
    Eval(EvalArgs),
    /// Render one kiosk screen to PNG, replaying a stroke recording (no display needed).
    Capture(CaptureArgs),
    /// The signing kiosk: prompt, sign, accept, then verify, identify or enrol (framebuffer and
    /// pen, or --headless with --replay recordings).
    Kiosk(KioskArgs),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Enroll(_) => "enroll",
            Command::Verify(_) => "verify",
            Command::Identify(_) => "identify",
            Command::Gallery(GalleryCommand::List(_)) => "gallery list",
            Command::Gallery(GalleryCommand::Remove { .. }) => "gallery remove",
            Command::Gallery(GalleryCommand::Export { .. }) => "gallery export",
            Command::Gallery(GalleryCommand::Import { .. }) => "gallery import",
            Command::Gallery(GalleryCommand::Check(_)) => "gallery check",
            Command::Gallery(GalleryCommand::Refit { .. }) => "gallery refit",
            Command::Gallery(GalleryCommand::Encrypt { .. }) => "gallery encrypt",
            Command::Gallery(GalleryCommand::Rekey { .. }) => "gallery rekey",
            Command::Embed(_) => "embed",
            Command::Bench(_) => "bench",
            Command::Capture(_) => "capture",
            Command::Kiosk(_) => "kiosk",
            Command::Eval(_) => "eval",
        }
    }

    fn run(&self) -> Result<Report, CommandError> {
        match self {
            Command::Enroll(args) => commands::enroll::run(args),
            Command::Verify(args) => commands::verify::run(args),
            Command::Identify(args) => commands::identify::run(args),
            Command::Gallery(command) => commands::gallery::run(command),
            Command::Embed(args) => commands::embed::run(args),
            Command::Bench(args) => commands::bench::run(args),
            Command::Capture(args) => autograph_device::capture::cli::run_capture(args),
            Command::Kiosk(args) => autograph_device::capture::cli::run_kiosk(args),
            Command::Eval(args) => commands::eval::run(args),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 2 (clap's convention and ours); --help and --version exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Error as u8 } else { 0 });
        }
    };
    // A panic inside a runtime on a strange model must still end as "error, exit 2", also in the
    // kiosk build, which aborts instead of unwinding (Cargo.toml's `kiosk` profile).
    let (command, json) = (cli.command.name(), cli.json);
    std::panic::set_hook(Box::new(move |info| {
        let error = CommandError::Usage(format!("internal error ({info}); please report it"));
        print_error(command, &error, json);
        std::process::exit(Exit::Error as i32);
    }));
    let exit = match cli.command.run() {
        Ok(report) => match print_report(&report, cli.json) {
            Ok(()) => report.exit,
            Err(e) => {
                eprintln!("autograph: {e:#}");
                Exit::Error
            }
        },
        Err(error) => {
            print_error(cli.command.name(), &error, cli.json);
            Exit::Error
        }
    };
    ExitCode::from(exit as u8)
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &report.json).context("cannot write the JSON output")?;
        writeln!(out).context("cannot write to stdout")?;
    } else {
        writeln!(out, "{}", report.text).context("cannot write to stdout")?;
    }
    Ok(())
}

/// The message on stderr always; with `--json` also an object on stdout.
fn print_error(command: &str, error: &CommandError, json: bool) {
    eprintln!("autograph {command}: error: {error}");
    if json {
        let value = serde_json::json!({
            "command": command,
            "status": "error",
            "error": error.to_string(),
            "rejected": error.rejected_images(),
        });
        println!("{value}");
    }
}
