//! `autograph-train`: data sets, training, export, quantization and evaluation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use autograph_shared::dataset::{self, Dataset};
use autograph_trainer::fetch;

/// Train and ship the Autograph signature embedding model.
///
/// Data sets are read from directories (CEDAR's own layout, `<writer>/genuine|forged/`,
/// `<class>/<images>`, or Omniglot's zips); `AUTOGRAPH_DATA` names the default one.
#[derive(Parser, Debug)]
#[command(name = "autograph-train", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect and fetch data sets.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Writers, genuine and forged counts, duplicates, image sizes and unreadable files.
    Stats(StatsArgs),
    /// Download a catalogued data set (or any zip / tar.gz URL) into the cache, verified
    /// and published atomically; for request-only data sets, say how to obtain them.
    Fetch(FetchArgs),
    /// List the built-in catalogue of data sets.
    List,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Data set directory (repeat for several); defaults to $AUTOGRAPH_DATA.
    #[arg(long = "data", env = "AUTOGRAPH_DATA", value_delimiter = ',', required = true)]
    data: Vec<PathBuf>,
    /// Print machine-readable JSON (one object per data set, in an array).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FetchArgs {
    /// A catalogue name (see `data list`) or an http(s) URL of a zip or tar.gz archive.
    target: String,
    /// Expected sha256 of the download (required for trust in a URL; catalogue entries
    /// carry their own).
    #[arg(long)]
    sha256: Option<String>,
    /// Cache directory (default: $AUTOGRAPH_CACHE, else $XDG_CACHE_HOME/autograph, else ~/.cache/autograph).
    #[arg(long, env = "AUTOGRAPH_CACHE")]
    cache: Option<PathBuf>,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    // Warnings (such as dropped duplicates) go to stderr; RUST_LOG is not needed for them.
    struct StderrLogger;
    impl log::Log for StderrLogger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                eprintln!("{}: {}", record.level().as_str().to_lowercase(), record.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Data(DataCommand::Stats(args)) => data_stats(args),
        Command::Data(DataCommand::Fetch(args)) => data_fetch(args),
        Command::Data(DataCommand::List) => data_list(),
    }
}

fn data_stats(args: StatsArgs) -> Result<ExitCode> {
    let mut all = Vec::new();
    for dir in &args.data {
        let ds = Dataset::load(dir).with_context(|| format!("loading data set {}", dir.display()))?;
        let bar = autograph_trainer::progress::bar(ds.samples.len() as u64, &format!("decoding {}", ds.name));
        let stats = dataset::stats(&ds, &mut |done, _| bar.set_position(done as u64));
        bar.finish_and_clear();
        if !args.json {
            print_stats(&stats);
        }
        all.push(stats);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stats(s: &dataset::DatasetStats) {
    println!("{} ({:?} layout)", s.name, s.layout);
    println!("  writers     {}", s.writers);
    println!("  genuine     {}", s.genuine);
    println!("  forged      {}", s.forged);
    if let (Some(w), Some(h)) = (s.width_range, s.height_range) {
        println!("  width       {}..{} px", w.0, w.1);
        println!("  height      {}..{} px", h.0, h.1);
    }
    println!("  duplicates  {} (dropped before scoring)", s.duplicates.len());
    for d in &s.duplicates {
        println!("    {} == {}", d.dropped, d.kept);
    }
    println!("  unreadable  {}", s.unreadable.len());
    for u in &s.unreadable {
        println!("    {}: {}", u.file, u.reason);
    }
    println!("  content     sha256:{}", s.content_hash);
}

fn data_fetch(args: FetchArgs) -> Result<ExitCode> {
    let mut request = fetch::FetchRequest::new(args.target);
    request.sha256 = args.sha256;
    request.cache_dir = args.cache;
    let fetched = fetch::fetch(&request, &fetch::progress_bar())?;
    println!("{fetched}");
    Ok(ExitCode::SUCCESS)
}

fn data_list() -> Result<ExitCode> {
    for entry in fetch::catalogue() {
        let how = match entry.availability {
            fetch::Availability::Download(files) => format!("download, {} files", files.len()),
            fetch::Availability::OnRequest { .. } => "on request".to_string(),
        };
        println!("{:<10} {} [{}]", entry.name, entry.summary.split_whitespace().collect::<Vec<_>>().join(" "), how);
    }
    Ok(ExitCode::SUCCESS)
}
