//! Automated data set setup: downloads a catalogue data set or a URL into a local cache,
//! resuming interrupted downloads, verifies sha256 checksums, unpacks archives safely and
//! publishes every data set atomically, so a data set directory in the cache is either
//! complete or absent.
//!
//! Cache layout (`<cache>` is [`default_cache_dir`] unless the caller names one):
//! - `<cache>/<name>/`: a published data set, never written again.
//! - `<cache>/.downloads/<name>/`: downloads in progress (`FILE.part`) and verified downloads
//!   waiting to be published; removed once the data set is published.
//! - `<cache>/.staging-<name>-*/`: a data set being assembled, renamed to `<cache>/<name>/`.
//!
//! The layout of a published Omniglot data set (`<cache>/omniglot/*.zip`) is the layout of
//! `shared/data/omniglot`, so the data loaders read either.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

/// Directory under the cache holding downloads that are not published yet.
const DOWNLOADS_DIR: &str = ".downloads";
/// Pause before the first retry of a dropped download; later retries wait longer.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Template of [`progress_bar`]; kept here so a test can check that it parses.
const BAR_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

// ---------------------------------------------------------------------------------------------
// Catalogue
// ---------------------------------------------------------------------------------------------

/// A data set the trainer knows how to obtain, by name.
#[derive(Debug)]
pub struct CatalogueEntry {
    /// Name given to [`fetch`]; also the directory name of the data set in the cache.
    pub name: &'static str,
    /// One line saying what the data set is, for listings.
    pub summary: &'static str,
    /// Whether the data set can be downloaded, and from where.
    pub availability: Availability,
}

/// How a catalogue data set is obtained.
#[derive(Debug)]
pub enum Availability {
    /// Public files, downloaded, verified and published together into one directory.
    Download(&'static [RemoteFile]),
    /// Distributed by its owners on request only; the text says how to obtain it and the
    /// directory layout the loaders expect.
    OnRequest {
        /// How to obtain the data and how to lay it out.
        instructions: &'static str,
    },
}

/// One downloadable file of a catalogue data set, pinned by its checksum.
#[derive(Debug)]
pub struct RemoteFile {
    /// Where the file is downloaded from.
    pub url: &'static str,
    /// Name of the file in the data set directory (or of the archive unpacked there).
    pub file_name: &'static str,
    /// Expected sha256 of the file, lowercase hex: a download that differs is refused.
    pub sha256: &'static str,
    /// Whether the archive is unpacked into the data set directory; `false` keeps the file
    /// as downloaded (the Omniglot loader reads its zips directly).
    pub unpack: bool,
}

/// The five Omniglot files of `brendenlake/omniglot`, checksums as in
/// `shared/data/omniglot/MANIFEST.sha256`.
static OMNIGLOT_FILES: [RemoteFile; 5] = [
    RemoteFile {
        url: "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background_small1.zip",
        file_name: "images_background_small1.zip",
        sha256: "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
        unpack: false,
    },
    RemoteFile {
        url: "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background_small2.zip",
        file_name: "images_background_small2.zip",
        sha256: "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
        unpack: false,
    },
    RemoteFile {
        url: "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/all_runs.zip",
        file_name: "all_runs.zip",
        sha256: "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
        unpack: false,
    },
    RemoteFile {
        url: "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/strokes_background_small1.zip",
        file_name: "strokes_background_small1.zip",
        sha256: "8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2",
        unpack: false,
    },
    RemoteFile {
        url: "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/strokes_background_small2.zip",
        file_name: "strokes_background_small2.zip",
        sha256: "345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78",
        unpack: false,
    },
];

const CEDAR_INSTRUCTIONS: &str = "\
CEDAR signature database (Kalera, Srihari and Xu, 2004): 55 writers, 24 genuine signatures and \
24 skilled forgeries each. It is distributed for research by CEDAR, University at Buffalo \
(cedar.buffalo.edu); obtain it there or use a copy you are entitled to use.
Expected layout: full_org/original_<w>_<n>.png (genuine) and full_forg/forgeries_<w>_<n>.png \
(skilled forgeries), w = 1..55, n = 1..24, as in the original archive.";

const SVC2004_INSTRUCTIONS: &str = "\
SVC2004, the First International Signature Verification Competition (Yeung et al., ICBA 2004): \
40 public users, 20 genuine signatures and 20 skilled forgeries each, captured on a tablet. \
The organisers released these data for research; use them rendered as images.
Expected layout: <writer>/genuine/* and <writer>/forged/*, e.g. user1/genuine/U1S1.jpg and \
user1/forged/U1S21.jpg.";

const BHSIG260_INSTRUCTIONS: &str = "\
BHSig260 (Pal, Alaei, Pal and Blumenstein, ICPR 2016): 100 Bengali and 160 Hindi writers, \
24 genuine signatures and 30 skilled forgeries each. Its authors distribute it for research \
on request.
Expected layout: <writer>/genuine/* and <writer>/forged/*, e.g. 001/genuine/B-S-1-G-01.tif and \
001/forged/B-S-1-F-01.tif.";

const GPDS_INSTRUCTIONS: &str = "\
GPDS signature corpora (GPDS group, Universidad de Las Palmas de Gran Canaria) are licensed \
for research under an agreement with the group; obtain a copy through them.
Expected layout: <writer>/genuine/* and <writer>/forged/*.";

static CATALOGUE: [CatalogueEntry; 5] = [
    CatalogueEntry {
        name: "omniglot",
        summary: "Omniglot small background sets, their strokes and the 20 official one-shot runs \
                  (Lake et al.; MIT licence)",
        availability: Availability::Download(&OMNIGLOT_FILES),
    },
    CatalogueEntry {
        name: "cedar",
        summary: "CEDAR offline signatures: 55 writers, genuine and skilled forgeries (on request)",
        availability: Availability::OnRequest { instructions: CEDAR_INSTRUCTIONS },
    },
    CatalogueEntry {
        name: "svc2004",
        summary: "SVC2004 signatures: 40 writers, genuine and skilled forgeries (on request)",
        availability: Availability::OnRequest { instructions: SVC2004_INSTRUCTIONS },
    },
    CatalogueEntry {
        name: "bhsig260",
        summary: "BHSig260 Bengali and Hindi signatures: 260 writers (on request)",
        availability: Availability::OnRequest { instructions: BHSIG260_INSTRUCTIONS },
    },
    CatalogueEntry {
        name: "gpds",
        summary: "GPDS signature corpora (licensed on request)",
        availability: Availability::OnRequest { instructions: GPDS_INSTRUCTIONS },
    },
];

/// Every data set [`fetch`] knows by name, for listings and `--help`.
pub fn catalogue() -> &'static [CatalogueEntry] {
    &CATALOGUE
}

/// The catalogue entry called `name` (case-insensitive), if any.
pub fn find_entry(name: &str) -> Option<&'static CatalogueEntry> {
    CATALOGUE.iter().find(|entry| entry.name.eq_ignore_ascii_case(name))
}

// ---------------------------------------------------------------------------------------------
// Request, result and errors
// ---------------------------------------------------------------------------------------------

/// What to fetch and where. Build it with [`FetchRequest::new`], then adjust the fields.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// A catalogue name (see [`catalogue`]) or an `http://` / `https://` URL.
    pub target: String,
    /// Expected sha256 (hex) of the file at a URL target. Catalogue data sets pin their own
    /// checksums, so this is ignored for them.
    pub sha256: Option<String>,
    /// Cache directory; `None` means [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Caps that make a hostile archive fail instead of filling the disk.
    pub limits: ExtractLimits,
    /// How many times a dropped download is resumed before giving up. Whatever is left,
    /// the partial file stays in the cache and the next fetch resumes it.
    pub retries: u32,
}

impl FetchRequest {
    /// A request for `target` (catalogue name or URL) with default cache, limits and retries.
    pub fn new(target: impl Into<String>) -> Self {
        Self { target: target.into(), sha256: None, cache_dir: None, limits: ExtractLimits::default(), retries: 3 }
    }
}

/// Caps on what one archive may unpack to; they defeat zip bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes written for all entries of one archive.
    pub max_total_bytes: u64,
    /// Number of entries (files, directories, links) of one archive.
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    /// Generous for signature data sets (a few GB, some 100 000 files), small next to a bomb.
    fn default() -> Self {
        Self { max_total_bytes: 16 << 30, max_entries: 1_000_000 }
    }
}

/// A data set present in the cache after [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedDataset {
    /// Data set name: the catalogue name, or the URL's file name without archive extension.
    pub name: String,
    /// The published directory.
    pub path: PathBuf,
    /// Whether this call published it or found it already there.
    pub outcome: FetchOutcome,
    /// The files downloaded by this call (none when the data set was already present).
    pub files: Vec<DownloadedFile>,
}

/// What [`fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Downloaded, verified and published by this call.
    Published,
    /// Already published earlier: nothing was downloaded or written.
    AlreadyPresent,
}

/// A file downloaded for a data set, with the checksum it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedFile {
    /// Where it came from.
    pub url: String,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Whether the checksum was compared with an expected one; `false` for a URL fetched
    /// without `--sha256`, whose checksum is reported so that it can be pinned next time.
    pub verified: bool,
}

impl fmt::Display for FetchedDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            FetchOutcome::Published => write!(f, "{}: published at {}", self.name, self.path.display())?,
            FetchOutcome::AlreadyPresent => {
                write!(f, "{}: already present at {}; nothing to do", self.name, self.path.display())?
            }
        }
        for file in self.files.iter().filter(|file| !file.verified) {
            write!(
                f,
                "\n  {}: sha256 {} (not verified; pass --sha256 {} to pin it)",
                file.url, file.sha256, file.sha256
            )?;
        }
        Ok(())
    }
}

/// Why a fetch failed. Every message names the URL, archive or file concerned and includes
/// its cause, so it reads completely on one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The target is neither a catalogue name nor a URL.
    #[error("unknown data set `{name}`; known data sets: {known}; or give an http(s) URL")]
    UnknownDataset { name: String, known: String },

    /// The data set cannot be downloaded; the message says how to obtain it and where to
    /// put it.
    #[error(
        "{name} is distributed on request only and cannot be downloaded automatically.\n\
         {instructions}\nPut the data at {}.",
        .destination.display()
    )]
    RequestOnly { name: &'static str, instructions: &'static str, destination: PathBuf },

    /// The URL cannot be fetched (scheme, or no file name to name the data set after).
    #[error("{url}: {reason}")]
    UnsupportedUrl { url: String, reason: &'static str },

    /// The checksum given with a URL is not 64 hex digits.
    #[error("`{value}` is not a sha256 checksum: expected 64 hexadecimal digits")]
    InvalidChecksum { value: String },

    /// No cache directory was given and none can be derived from the environment.
    #[error("no cache directory: set AUTOGRAPH_CACHE, XDG_CACHE_HOME or HOME, or name one")]
    NoCacheDir,

    /// The server answered with a status that is neither the file nor part of it.
    #[error("{url}: server answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },

    /// Connecting or receiving failed; the partial download is kept for the next fetch.
    #[error("{url}: download failed: {cause} (fetching again resumes it)")]
    Network { url: String, cause: ureq::Error },

    /// The downloaded file is not the pinned one; it was deleted.
    #[error("{url}: checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { url: String, expected: String, actual: String },

    /// An archive entry would write outside the data set directory, or is a device file,
    /// FIFO or other special file.
    #[error("{}: refusing entry `{entry}`: {reason}", .archive.display())]
    UnsafeEntry { archive: PathBuf, entry: String, reason: String },

    /// The archive unpacks to more bytes or entries than [`ExtractLimits`] allow.
    #[error("{}: entry `{entry}` goes over the limit of {limit}", .archive.display())]
    LimitExceeded { archive: PathBuf, entry: String, limit: String },

    /// The archive is damaged or uses a feature the readers do not support.
    #[error("{}: cannot read the archive{}: {cause}", .archive.display(), at_entry(.entry))]
    BadArchive { archive: PathBuf, entry: Option<String>, cause: Box<dyn std::error::Error + Send + Sync> },

    /// Reading or writing a local file failed.
    #[error("{}: {cause}", .path.display())]
    Io { path: PathBuf, cause: io::Error },
}

fn at_entry(entry: &Option<String>) -> String {
    entry.as_deref().map(|name| format!(" at entry `{name}`")).unwrap_or_default()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |cause| FetchError::Io { path: path.to_path_buf(), cause }
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// The cache used when the caller names none: `$AUTOGRAPH_CACHE`, else
/// `$XDG_CACHE_HOME/autograph`, else `~/.cache/autograph`.
pub fn default_cache_dir() -> Result<PathBuf, FetchError> {
    cache_dir_from(|name| std::env::var_os(name)).ok_or(FetchError::NoCacheDir)
}

/// [`default_cache_dir`] over an environment lookup, so the precedence is testable without
/// touching the process environment. Empty and (for XDG) relative values are ignored.
fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |name: &str| var(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    non_empty("AUTOGRAPH_CACHE")
        .or_else(|| non_empty("XDG_CACHE_HOME").filter(|dir| dir.is_absolute()).map(|dir| dir.join("autograph")))
        .or_else(|| non_empty("HOME").map(|home| home.join(".cache").join("autograph")))
}

/// A download bar on stderr for [`fetch`]; indicatif hides it when stderr is not a terminal.
/// Callers that want no bar at all pass `ProgressBar::hidden()` instead.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Makes the requested data set present in the cache: downloads its files (resuming any
/// partial download), verifies their checksums, unpacks archives safely and publishes the
/// directory atomically. A data set already published is left alone and reported as
/// [`FetchOutcome::AlreadyPresent`] (delete its directory to fetch it again). `progress`
/// shows each download; pass [`progress_bar`] or `ProgressBar::hidden()`.
pub fn fetch(request: &FetchRequest, progress: &ProgressBar) -> Result<FetchedDataset, FetchError> {
    fetch_with(request, progress, &http_agent(true))
}

/// [`fetch`] over a given HTTP agent (tests use one that ignores proxy settings).
fn fetch_with(
    request: &FetchRequest,
    progress: &ProgressBar,
    agent: &ureq::Agent,
) -> Result<FetchedDataset, FetchError> {
    let cache = match &request.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    let plan = plan_for(request, &cache)?;
    let settings = Settings { cache: &cache, limits: request.limits, retries: request.retries, agent, progress };
    execute(&plan, &settings)
}

/// The HTTP client: statuses come back as responses (206 and 416 are part of resuming), no
/// transparent compression (byte ranges must address the file itself), and timeouts so a
/// stalled connection fails and is resumed instead of hanging.
fn http_agent(proxy_from_env: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .accept_encoding("identity")
        .user_agent(concat!("autograph-trainer/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)));
    if !proxy_from_env {
        config = config.proxy(None);
    }
    config.build().new_agent()
}

// ---------------------------------------------------------------------------------------------
// Planning: what a request means
// ---------------------------------------------------------------------------------------------

/// A data set to assemble: its name and the files that make it up.
#[derive(Debug)]
struct Plan {
    name: String,
    files: Vec<FileSpec>,
}

/// One file of a plan.
#[derive(Debug)]
struct FileSpec {
    url: String,
    file_name: String,
    sha256: Option<String>,
    /// Unpacked into the data set directory when set, kept as the file otherwise.
    unpack: Option<ArchiveKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Zip,
    TarGz,
    Tar,
}

impl ArchiveKind {
    const EXTENSIONS: [(&'static str, ArchiveKind); 4] = [
        (".zip", ArchiveKind::Zip),
        (".tar.gz", ArchiveKind::TarGz),
        (".tgz", ArchiveKind::TarGz),
        (".tar", ArchiveKind::Tar),
    ];

    /// The archive kind a file name announces, and the name without that extension.
    fn split(file_name: &str) -> Option<(ArchiveKind, &str)> {
        let lower = file_name.to_ascii_lowercase();
        Self::EXTENSIONS.iter().find_map(|&(extension, kind)| {
            lower.ends_with(extension).then(|| (kind, &file_name[..file_name.len() - extension.len()]))
        })
    }
}

/// Turns a request into a plan: a catalogue entry's files, or the one file at a URL.
fn plan_for(request: &FetchRequest, cache: &Path) -> Result<Plan, FetchError> {
    let target = request.target.trim();
    if target.contains("://") {
        let sha256 = request.sha256.as_deref().map(parse_sha256).transpose()?;
        return plan_for_url(target, sha256);
    }
    let entry = find_entry(target).ok_or_else(|| FetchError::UnknownDataset {
        name: target.to_owned(),
        known: CATALOGUE.iter().map(|entry| entry.name).collect::<Vec<_>>().join(", "),
    })?;
    if request.sha256.is_some() {
        log::warn!("{}: the catalogue pins its checksums; ignoring --sha256", entry.name);
    }
    plan_for_entry(entry, cache)
}

fn plan_for_entry(entry: &'static CatalogueEntry, cache: &Path) -> Result<Plan, FetchError> {
    match entry.availability {
        Availability::Download(files) => Ok(Plan {
            name: entry.name.to_owned(),
            files: files
                .iter()
                .map(|file| FileSpec {
                    url: file.url.to_owned(),
                    file_name: file.file_name.to_owned(),
                    sha256: Some(file.sha256.to_owned()),
                    unpack: if file.unpack { ArchiveKind::split(file.file_name).map(|(kind, _)| kind) } else { None },
                })
                .collect(),
        }),
        Availability::OnRequest { instructions } => {
            Err(FetchError::RequestOnly { name: entry.name, instructions, destination: cache.join(entry.name) })
        }
    }
}

/// A URL names one file; an archive is unpacked into a data set named after it.
fn plan_for_url(url: &str, sha256: Option<String>) -> Result<Plan, FetchError> {
    let unsupported = |reason| FetchError::UnsupportedUrl { url: url.to_owned(), reason };
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(unsupported("only http:// and https:// URLs can be fetched"));
    }
    let file_name = file_name_of_url(url).ok_or_else(|| unsupported("the URL does not end with a file name"))?;
    let (unpack, name) = match ArchiveKind::split(&file_name) {
        Some((kind, stem)) if !stem.is_empty() => (Some(kind), stem.to_owned()),
        _ => (None, file_name.clone()),
    };
    Ok(Plan { name, files: vec![FileSpec { url: url.to_owned(), file_name, sha256, unpack }] })
}

/// The last path segment of a URL, reduced to characters safe in a file name.
fn file_name_of_url(url: &str) -> Option<String> {
    let without_query = url.split(['?', '#']).next()?;
    let (_, after_scheme) = without_query.split_once("://")?;
    let (_, path) = after_scheme.split_once('/')?;
    let last = path.rsplit('/').next()?;
    let cleaned: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let cleaned = cleaned.trim_start_matches('.');
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

/// Lowercase hex of a sha256 given by a user, or an error saying what is wrong with it.
fn parse_sha256(value: &str) -> Result<String, FetchError> {
    let trimmed = value.trim();
    if trimmed.len() == 64 && trimmed.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(trimmed.to_ascii_lowercase())
    } else {
        Err(FetchError::InvalidChecksum { value: value.to_owned() })
    }
}

// ---------------------------------------------------------------------------------------------
// Execution: download, stage, publish
// ---------------------------------------------------------------------------------------------

/// What every step of a fetch shares.
struct Settings<'a> {
    cache: &'a Path,
    limits: ExtractLimits,
    retries: u32,
    agent: &'a ureq::Agent,
    progress: &'a ProgressBar,
}

/// Carries out a plan: nothing is done when the data set is published already; otherwise
/// every file is downloaded first, then the data set is staged and published.
fn execute(plan: &Plan, settings: &Settings<'_>) -> Result<FetchedDataset, FetchError> {
    let final_dir = settings.cache.join(&plan.name);
    let result = |outcome, files| FetchedDataset { name: plan.name.clone(), path: final_dir.clone(), outcome, files };
    if final_dir.is_dir() {
        log::info!("{}: already present at {}", plan.name, final_dir.display());
        return Ok(result(FetchOutcome::AlreadyPresent, Vec::new()));
    }
    let downloads = settings.cache.join(DOWNLOADS_DIR).join(&plan.name);
    fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;

    let mut local_files = Vec::with_capacity(plan.files.len());
    let mut downloaded = Vec::with_capacity(plan.files.len());
    for spec in &plan.files {
        let (path, sha256) = obtain(spec, &downloads, settings)?;
        local_files.push(path);
        downloaded.push(DownloadedFile { url: spec.url.clone(), sha256, verified: spec.sha256.is_some() });
    }

    let staging = tempfile::Builder::new()
        .prefix(&format!(".staging-{}-", plan.name))
        .tempdir_in(settings.cache)
        .map_err(io_error(settings.cache))?;
    for (spec, path) in plan.files.iter().zip(&local_files) {
        stage(spec, path, staging.path(), settings.limits)?;
    }
    let outcome = publish(staging, &final_dir)?;
    remove_downloads(&downloads);
    log::info!("{}: published at {}", plan.name, final_dir.display());
    Ok(result(outcome, downloaded))
}

/// Puts one downloaded file into the staging directory: unpacked, or kept as the file.
/// An archive that cannot be unpacked is deleted, so the next fetch downloads it afresh.
fn stage(spec: &FileSpec, path: &Path, staging: &Path, limits: ExtractLimits) -> Result<(), FetchError> {
    match spec.unpack {
        Some(kind) => extract(path, kind, staging, limits).inspect_err(|_| {
            let _ = fs::remove_file(path);
        }),
        None => link_or_copy(path, &staging.join(&spec.file_name)),
    }
}

/// Hard-links (same file system, no copy) or else copies, keeping the download in place so
/// that a publish interrupted now does not cost a new download.
fn link_or_copy(source: &Path, destination: &Path) -> Result<(), FetchError> {
    fs::hard_link(source, destination)
        .or_else(|_| fs::copy(source, destination).map(|_| ()))
        .map_err(io_error(destination))
}

/// Renames the staged directory to its final name: the data set appears whole or not at
/// all. Losing a race against a concurrent fetch of the same data set is not an error.
fn publish(staging: tempfile::TempDir, final_dir: &Path) -> Result<FetchOutcome, FetchError> {
    match fs::rename(staging.path(), final_dir) {
        Ok(()) => {
            let _ = staging.keep();
            if let Some(parent) = final_dir.parent() {
                sync_dir(parent);
            }
            Ok(FetchOutcome::Published)
        }
        Err(_) if final_dir.is_dir() => Ok(FetchOutcome::AlreadyPresent),
        Err(cause) => Err(FetchError::Io { path: final_dir.to_path_buf(), cause }),
    }
}

/// Makes a rename durable; best effort, since not every platform can open a directory.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Drops the downloads of a published data set; failing to is only worth a warning.
fn remove_downloads(downloads: &Path) {
    if let Err(cause) = fs::remove_dir_all(downloads) {
        log::warn!("cannot remove {}: {cause}", downloads.display());
    }
    if let Some(parent) = downloads.parent() {
        let _ = fs::remove_dir(parent); // only succeeds when no other download is pending
    }
}

// ---------------------------------------------------------------------------------------------
// Downloading
// ---------------------------------------------------------------------------------------------

/// A verified local copy of `spec` in `downloads` and its sha256: reused when an earlier
/// fetch left it there, downloaded (resuming `FILE.part`) otherwise. A download whose
/// checksum is wrong is deleted, so the next fetch starts from scratch.
fn obtain(spec: &FileSpec, downloads: &Path, settings: &Settings<'_>) -> Result<(PathBuf, String), FetchError> {
    let complete = downloads.join(&spec.file_name);
    if complete.is_file() {
        let actual = sha256_of(&complete)?;
        if spec.sha256.as_deref().is_none_or(|expected| expected == actual) {
            return Ok((complete, actual));
        }
        fs::remove_file(&complete).map_err(io_error(&complete))?;
    }
    let part = downloads.join(format!("{}.part", spec.file_name));
    settings.progress.reset();
    settings.progress.set_message(spec.file_name.clone());
    let downloaded = download_resuming(&spec.url, &part, settings);
    settings.progress.finish_and_clear();
    downloaded?;

    let actual = sha256_of(&part)?;
    if let Some(expected) = &spec.sha256
        && *expected != actual
    {
        let _ = fs::remove_file(&part);
        return Err(FetchError::ChecksumMismatch { url: spec.url.clone(), expected: expected.clone(), actual });
    }
    fs::rename(&part, &complete).map_err(io_error(&complete))?;
    Ok((complete, actual))
}

/// How one HTTP exchange ended.
#[derive(Debug, PartialEq, Eq)]
enum Transfer {
    /// `part` now holds the whole file.
    Complete,
    /// The partial file cannot be resumed; delete it and download from the start.
    Restart,
}

/// Downloads `url` into `part`, resuming from what `part` already holds, and resuming again
/// after a dropped connection up to `settings.retries` times.
fn download_resuming(url: &str, part: &Path, settings: &Settings<'_>) -> Result<(), FetchError> {
    let mut attempt = 0;
    loop {
        match transfer(settings.agent, url, part, settings.progress) {
            Ok(Transfer::Complete) => return Ok(()),
            Ok(Transfer::Restart) => {
                log::info!("{url}: cannot resume {}; downloading from the start", part.display());
                fs::remove_file(part).map_err(io_error(part))?;
            }
            Err(error @ FetchError::Network { .. }) if attempt < settings.retries => {
                attempt += 1;
                log::warn!("{error}; resuming (retry {attempt} of {})", settings.retries);
                std::thread::sleep(RETRY_PAUSE * attempt);
            }
            Err(error) => return Err(error),
        }
    }
}

/// One HTTP exchange: asks for the bytes `part` lacks and appends them, or takes the whole
/// file when the server ignores the range (200). A `Restart` is only ever returned when
/// `part` is not empty, so the caller's loop cannot restart forever.
fn transfer(agent: &ureq::Agent, url: &str, part: &Path, progress: &ProgressBar) -> Result<Transfer, FetchError> {
    let have = partial_len(part)?;
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|cause| FetchError::Network { url: url.to_owned(), cause })?;
    let range = ContentRange::of(&response);
    match response.status().as_u16() {
        200 => {
            if have > 0 {
                log::info!("{url}: the server ignored the range request; downloading from the start");
            }
            receive(&mut response, url, part, 0, progress)
        }
        206 if range.start == Some(have) => receive(&mut response, url, part, have, progress),
        206 if have > 0 => Ok(Transfer::Restart),
        416 if have > 0 && range.total == Some(have) => Ok(Transfer::Complete),
        416 if have > 0 => Ok(Transfer::Restart),
        status => Err(FetchError::HttpStatus { url: url.to_owned(), status }),
    }
}

/// Size of the partial download, zero when there is none.
fn partial_len(part: &Path) -> Result<u64, FetchError> {
    match fs::metadata(part) {
        Ok(metadata) => Ok(metadata.len()),
        Err(cause) if cause.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(cause) => Err(FetchError::Io { path: part.to_path_buf(), cause }),
    }
}

/// The parts of a `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`) header.
#[derive(Debug, Default, PartialEq, Eq)]
struct ContentRange {
    start: Option<u64>,
    total: Option<u64>,
}

impl ContentRange {
    fn of(response: &ureq::http::Response<ureq::Body>) -> Self {
        response
            .headers()
            .get("content-range")
            .and_then(|value| value.to_str().ok())
            .map(Self::parse)
            .unwrap_or_default()
    }

    fn parse(value: &str) -> Self {
        let Some(spec) = value.trim().strip_prefix("bytes") else {
            return Self::default();
        };
        let (range, total) = spec.trim().split_once('/').unwrap_or((spec.trim(), "*"));
        Self {
            start: range.split_once('-').and_then(|(start, _)| start.trim().parse().ok()),
            total: total.trim().parse().ok(),
        }
    }
}

/// Streams the response body into `part` at `offset` (0 truncates), advancing `progress`.
/// Bytes received before a dropped connection stay in `part` for the next attempt.
fn receive(
    response: &mut ureq::http::Response<ureq::Body>,
    url: &str,
    part: &Path,
    offset: u64,
    progress: &ProgressBar,
) -> Result<Transfer, FetchError> {
    match response.body().content_length() {
        Some(length) => progress.set_length(offset + length),
        None => progress.unset_length(),
    }
    progress.set_position(offset);
    let mut file = open_part(part, offset)?;
    let mut body = response.body_mut().as_reader();
    let copied = pump(&mut body, &mut file, u64::MAX, &mut |bytes| progress.inc(bytes));
    let synced = file.sync_all();
    match copied {
        Ok(_) => {}
        Err(PumpError::Read(cause)) => {
            return Err(FetchError::Network { url: url.to_owned(), cause: ureq::Error::Io(cause) });
        }
        Err(PumpError::Write(cause)) => return Err(io_error(part)(cause)),
        Err(PumpError::TooLarge) => unreachable!("downloads are not size-limited"),
    }
    synced.map_err(io_error(part))?;
    Ok(Transfer::Complete)
}

/// The partial file, truncated when the download starts over, appended to when it resumes.
fn open_part(part: &Path, offset: u64) -> Result<File, FetchError> {
    let opened = if offset == 0 { File::create(part) } else { OpenOptions::new().append(true).open(part) };
    opened.map_err(io_error(part))
}

/// Why [`pump`] stopped early.
#[derive(Debug)]
enum PumpError {
    Read(io::Error),
    Write(io::Error),
    TooLarge,
}

/// Copies `reader` into `writer`, at most `limit` bytes, telling `on_chunk` each chunk's size.
/// Every chunk is written before the next read, so an interrupted copy keeps what it got.
fn pump(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    limit: u64,
    on_chunk: &mut dyn FnMut(u64),
) -> Result<u64, PumpError> {
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut total = 0_u64;
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(count) => count,
            Err(cause) if cause.kind() == io::ErrorKind::Interrupted => continue,
            Err(cause) => return Err(PumpError::Read(cause)),
        };
        total += count as u64;
        if total > limit {
            return Err(PumpError::TooLarge);
        }
        writer.write_all(&buffer[..count]).map_err(PumpError::Write)?;
        on_chunk(count as u64);
    }
}

/// Lowercase hex sha256 of a file's contents.
fn sha256_of(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_error(path))?;
    Ok(hex::encode(hasher.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Safe extraction
// ---------------------------------------------------------------------------------------------

/// Unpacks `archive` into `root`, refusing any entry that could write outside it and any
/// archive that goes over `limits`.
fn extract(archive: &Path, kind: ArchiveKind, root: &Path, limits: ExtractLimits) -> Result<(), FetchError> {
    let mut out = Extractor::new(archive, root, limits);
    match kind {
        ArchiveKind::Zip => extract_zip(&mut out)?,
        ArchiveKind::TarGz => extract_tar(GzDecoder::new(open_archive(archive)?), &mut out)?,
        ArchiveKind::Tar => extract_tar(open_archive(archive)?, &mut out)?,
    }
    out.finish()
}

fn open_archive(archive: &Path) -> Result<BufReader<File>, FetchError> {
    File::open(archive).map(BufReader::new).map_err(io_error(archive))
}

/// What an archive entry is, in the terms extraction cares about.
#[derive(Debug, PartialEq, Eq)]
enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    /// Archive bookkeeping (pax global header), skipped.
    Metadata,
    /// Never extracted: device files, FIFOs, sockets, sparse or unknown entries.
    Refused(&'static str),
}

fn extract_zip(out: &mut Extractor<'_>) -> Result<(), FetchError> {
    let mut zip = zip::ZipArchive::new(open_archive(out.archive)?).map_err(|cause| out.bad_archive(None, cause))?;
    for index in 0..zip.len() {
        let name = zip.name_for_index(index).unwrap_or_default().to_owned();
        let mut entry = zip.by_index(index).map_err(|cause| out.bad_archive(Some(&name), cause))?;
        out.count_entry(&name)?;
        match zip_entry_kind(&entry) {
            EntryKind::Dir => out.make_dir(&name)?,
            EntryKind::File => out.write_file(&name, &mut entry)?,
            EntryKind::Symlink => {
                let target = read_link_target(&mut entry).map_err(|cause| out.bad_archive(Some(&name), cause))?;
                out.add_symlink(&name, &target)?;
            }
            EntryKind::HardLink | EntryKind::Metadata => {
                return Err(out.unsafe_entry(&name, "unexpected entry type"));
            }
            EntryKind::Refused(what) => {
                return Err(out.unsafe_entry(&name, format!("{what} are not extracted")));
            }
        }
    }
    Ok(())
}

/// Zip stores the file type in the Unix mode bits, when it stores a mode at all.
fn zip_entry_kind<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> EntryKind {
    const S_IFMT: u32 = 0o170_000;
    if entry.is_dir() {
        return EntryKind::Dir;
    }
    match entry.unix_mode().map(|mode| mode & S_IFMT) {
        None | Some(0) | Some(0o100_000) => EntryKind::File,
        Some(0o040_000) => EntryKind::Dir,
        Some(0o120_000) => EntryKind::Symlink,
        Some(0o020_000 | 0o060_000) => EntryKind::Refused("device files"),
        Some(0o010_000) => EntryKind::Refused("FIFOs"),
        Some(0o140_000) => EntryKind::Refused("sockets"),
        Some(_) => EntryKind::Refused("entries of unknown type"),
    }
}

/// A zip symlink's target is its content; anything longer than a path is not a link.
fn read_link_target(entry: &mut dyn Read) -> io::Result<String> {
    let mut target = String::new();
    entry.take(4096).read_to_string(&mut target)?;
    Ok(target)
}

fn extract_tar(reader: impl Read, out: &mut Extractor<'_>) -> Result<(), FetchError> {
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(|cause| out.bad_archive(None, cause))?;
    for entry in entries {
        let mut entry = entry.map_err(|cause| out.bad_archive(None, cause))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = tar_entry_kind(entry.header().entry_type());
        if kind == EntryKind::Metadata {
            continue;
        }
        out.count_entry(&name)?;
        let link_target =
            || entry.link_name_bytes().map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
        match kind {
            EntryKind::Dir => out.make_dir(&name)?,
            EntryKind::Symlink => out.add_symlink(&name, &link_target())?,
            EntryKind::HardLink => out.add_hard_link(&name, &link_target())?,
            EntryKind::File => out.write_file(&name, &mut entry)?,
            EntryKind::Metadata => {}
            EntryKind::Refused(what) => {
                return Err(out.unsafe_entry(&name, format!("{what} are not extracted")));
            }
        }
    }
    Ok(())
}

fn tar_entry_kind(entry_type: tar::EntryType) -> EntryKind {
    use tar::EntryType;
    match entry_type {
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Dir,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::HardLink,
        EntryType::XGlobalHeader => EntryKind::Metadata,
        EntryType::Char | EntryType::Block => EntryKind::Refused("device files"),
        EntryType::Fifo => EntryKind::Refused("FIFOs"),
        EntryType::GNUSparse => EntryKind::Refused("sparse files"),
        _ => EntryKind::Refused("entries of unknown type"),
    }
}

/// A symbolic link whose creation waits until every file and directory is written, so no
/// entry is ever written through a link.
#[derive(Debug)]
struct PendingLink {
    entry: String,
    path: PathBuf,
    target: String,
}

/// Writes checked entries of one archive under `root` and keeps the tally for the limits.
struct Extractor<'a> {
    archive: &'a Path,
    root: &'a Path,
    limits: ExtractLimits,
    entries: u64,
    bytes: u64,
    links: Vec<PendingLink>,
}

impl<'a> Extractor<'a> {
    fn new(archive: &'a Path, root: &'a Path, limits: ExtractLimits) -> Self {
        Self { archive, root, limits, entries: 0, bytes: 0, links: Vec::new() }
    }

    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> FetchError {
        FetchError::UnsafeEntry { archive: self.archive.to_path_buf(), entry: entry.to_owned(), reason: reason.into() }
    }

    fn over_limit(&self, entry: &str, limit: String) -> FetchError {
        FetchError::LimitExceeded { archive: self.archive.to_path_buf(), entry: entry.to_owned(), limit }
    }

    fn bad_archive(&self, entry: Option<&str>, cause: impl std::error::Error + Send + Sync + 'static) -> FetchError {
        FetchError::BadArchive {
            archive: self.archive.to_path_buf(),
            entry: entry.map(str::to_owned),
            cause: Box::new(cause),
        }
    }

    fn count_entry(&mut self, entry: &str) -> Result<(), FetchError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.over_limit(entry, format!("{} entries", self.limits.max_entries)));
        }
        Ok(())
    }

    /// The entry's path relative to the root, or why it may not be extracted.
    fn checked_path(&self, entry: &str) -> Result<PathBuf, FetchError> {
        match safe_relative_path(entry) {
            Ok(path) if path.as_os_str().is_empty() => Err(self.unsafe_entry(entry, "empty name")),
            Ok(path) => Ok(path),
            Err(reason) => Err(self.unsafe_entry(entry, reason)),
        }
    }

    fn make_dir(&self, entry: &str) -> Result<(), FetchError> {
        match safe_relative_path(entry) {
            Ok(path) => {
                let dir = self.root.join(path);
                fs::create_dir_all(&dir).map_err(io_error(&dir))
            }
            Err(reason) => Err(self.unsafe_entry(entry, reason)),
        }
    }

    /// Writes a regular file, counting its bytes against the limit as they arrive (declared
    /// sizes can lie).
    fn write_file(&mut self, entry: &str, content: &mut dyn Read) -> Result<(), FetchError> {
        let destination = self.root.join(self.checked_path(entry)?);
        create_parent(&destination)?;
        let mut file = File::create(&destination).map_err(io_error(&destination))?;
        let budget = self.limits.max_total_bytes.saturating_sub(self.bytes);
        match pump(content, &mut file, budget, &mut |_| {}) {
            Ok(written) => {
                self.bytes += written;
                Ok(())
            }
            Err(PumpError::Read(cause)) => Err(self.bad_archive(Some(entry), cause)),
            Err(PumpError::Write(cause)) => Err(io_error(&destination)(cause)),
            Err(PumpError::TooLarge) => {
                Err(self.over_limit(entry, format!("{} bytes in all", self.limits.max_total_bytes)))
            }
        }
    }

    /// A tar hard link names an earlier entry of the archive; it becomes a copy of that file
    /// (counted against the limit), so it can never reach a file outside.
    fn add_hard_link(&mut self, entry: &str, target: &str) -> Result<(), FetchError> {
        let source = match safe_relative_path(target) {
            Ok(path) if !path.as_os_str().is_empty() => self.root.join(path),
            Ok(_) => return Err(self.unsafe_entry(entry, "hard link with an empty target")),
            Err(reason) => {
                return Err(self.unsafe_entry(entry, format!("hard link to `{target}`: {reason}")));
            }
        };
        let is_file = fs::symlink_metadata(&source).is_ok_and(|metadata| metadata.is_file());
        if !is_file {
            return Err(
                self.unsafe_entry(entry, format!("hard link to `{target}`, which is not a file extracted before it"))
            );
        }
        let mut content = File::open(&source).map_err(io_error(&source))?;
        self.write_file(entry, &mut content)
    }

    /// Accepts a relative symbolic link that stays inside the archive; it is created by
    /// [`Extractor::finish`].
    fn add_symlink(&mut self, entry: &str, target: &str) -> Result<(), FetchError> {
        let path = self.checked_path(entry)?;
        if !link_target_inside(&path, target) {
            return Err(self.unsafe_entry(entry, format!("symbolic link to `{target}` points outside the archive")));
        }
        self.links.push(PendingLink { entry: entry.to_owned(), path, target: target.to_owned() });
        Ok(())
    }

    /// Creates the symbolic links, checking each on disk as soon as it exists: it must
    /// resolve to something inside the root. A dangling link is refused too.
    fn finish(self) -> Result<(), FetchError> {
        if self.links.is_empty() {
            return Ok(());
        }
        let root = fs::canonicalize(self.root).map_err(io_error(self.root))?;
        for link in &self.links {
            self.create_symlink(link, &root)?;
        }
        Ok(())
    }

    #[cfg(unix)]
    fn create_symlink(&self, link: &PendingLink, canonical_root: &Path) -> Result<(), FetchError> {
        let location = self.root.join(&link.path);
        create_parent(&location)?;
        std::os::unix::fs::symlink(&link.target, &location).map_err(io_error(&location))?;
        let reason = match fs::canonicalize(&location) {
            Ok(resolved) if resolved.starts_with(canonical_root) => return Ok(()),
            Ok(_) => format!("symbolic link to `{}` resolves outside the archive", link.target),
            Err(_) => format!("symbolic link to `{}` is dangling or loops", link.target),
        };
        let _ = fs::remove_file(&location);
        Err(self.unsafe_entry(&link.entry, reason))
    }

    #[cfg(not(unix))]
    fn create_symlink(&self, link: &PendingLink, _canonical_root: &Path) -> Result<(), FetchError> {
        Err(self.unsafe_entry(&link.entry, "symbolic links are only extracted on Unix"))
    }
}

fn create_parent(path: &Path) -> Result<(), FetchError> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(io_error(parent)),
        None => Ok(()),
    }
}

/// An archive entry name as a relative path with no `..`, or why it is unsafe. Both `/`
/// and `\` separate components (zip files written on Windows use `\`). The empty path
/// stands for the root itself (tar's `./`).
fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("name contains a NUL byte");
    }
    if name.starts_with(['/', '\\']) {
        return Err("absolute path");
    }
    let mut path = PathBuf::new();
    for (index, component) in name.split(['/', '\\']).enumerate() {
        match component {
            "" | "." => {}
            ".." => return Err("`..` component"),
            _ if index == 0 && is_drive_prefix(component) => {
                return Err("absolute path (drive letter)");
            }
            _ => path.push(component),
        }
    }
    Ok(path)
}

fn is_drive_prefix(component: &str) -> bool {
    let bytes = component.as_bytes();
    bytes.len() == 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Whether a symbolic link at `link` (relative to the root) with this target stays inside
/// the root when read lexically: relative, and never climbing above the root.
fn link_target_inside(link: &Path, target: &str) -> bool {
    if target.is_empty() || target.contains('\0') || target.starts_with(['/', '\\']) {
        return false;
    }
    let mut depth = link.components().count().saturating_sub(1);
    for (index, component) in target.split(['/', '\\']).enumerate() {
        match component {
            "" | "." => {}
            ".." if depth == 0 => return false,
            ".." => depth -= 1,
            _ if index == 0 && is_drive_prefix(component) => return false,
            _ => depth += 1,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, Cursor};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    // ---- a tiny HTTP/1.1 server on 127.0.0.1 ------------------------------------------------

    /// How the test server misbehaves for one file.
    #[derive(Debug, Clone, Copy, Default)]
    struct Quirks {
        /// On the first request only: send the headers of the whole answer, then this many
        /// body bytes, then close the connection.
        drop_first_after: Option<usize>,
        /// Answer every request with 200 and the whole file, as servers without range
        /// support do.
        ignore_range: bool,
    }

    /// One request the server answered.
    #[derive(Debug, Clone)]
    struct Logged {
        path: String,
        range: Option<String>,
        status: u16,
    }

    struct TestServer {
        base: String,
        log: Arc<Mutex<Vec<Logged>>>,
    }

    type Files = HashMap<String, (Vec<u8>, Quirks)>;

    impl TestServer {
        /// Serves `files` (name, bytes, quirks) at `/name`, one connection at a time, until
        /// the test process ends.
        fn start(files: Vec<(&str, Vec<u8>, Quirks)>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let base = format!("http://{}", listener.local_addr().expect("local address"));
            let files: Files =
                files.into_iter().map(|(name, bytes, quirks)| (format!("/{name}"), (bytes, quirks))).collect();
            let log = Arc::new(Mutex::new(Vec::new()));
            let server_log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut seen: HashMap<String, usize> = HashMap::new();
                for stream in listener.incoming().flatten() {
                    serve(stream, &files, &mut seen, &server_log);
                }
            });
            Self { base, log }
        }

        fn url(&self, name: &str) -> String {
            format!("{}/{name}", self.base)
        }

        fn requests(&self) -> Vec<Logged> {
            self.log.lock().expect("server log").clone()
        }
    }

    fn serve(mut stream: TcpStream, files: &Files, seen: &mut HashMap<String, usize>, log: &Mutex<Vec<Logged>>) {
        let Some((path, range)) = read_request(&stream) else {
            return;
        };
        let count = seen.entry(path.clone()).or_default();
        *count += 1;
        let first = *count == 1;
        let Some((body, quirks)) = files.get(&path) else {
            log_request(log, &path, range, 404);
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        };
        let start = if quirks.ignore_range {
            None
        } else {
            range.as_deref().and_then(|value| value.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok())
        };
        let (status, headers, content): (u16, String, &[u8]) = match start {
            Some(start) if start >= body.len() => (416, format!("Content-Range: bytes */{}\r\n", body.len()), &[]),
            Some(start) => {
                (206, format!("Content-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len()), &body[start..])
            }
            None => (200, String::new(), &body[..]),
        };
        log_request(log, &path, range, status);
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
            content.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let sent = match quirks.drop_first_after {
            Some(cut) if first => &content[..cut.min(content.len())],
            _ => content,
        };
        let _ = stream.write_all(sent);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
    }

    fn log_request(log: &Mutex<Vec<Logged>>, path: &str, range: Option<String>, status: u16) {
        log.lock().expect("server log").push(Logged { path: path.to_owned(), range, status });
    }

    /// The path and the Range header of a GET request.
    fn read_request(stream: &TcpStream) -> Option<(String, Option<String>)> {
        let mut reader = io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let path = line.split_whitespace().nth(1)?.to_owned();
        let mut range = None;
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                return Some((path, range));
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_owned());
            }
        }
    }

    // ---- fixtures ---------------------------------------------------------------------------

    fn sha_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Deterministic bytes that do not compress, so archives are big enough to cut.
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in entries {
            writer.start_file(*name, options).expect("zip entry");
            writer.write_all(content).expect("zip content");
        }
        writer.finish().expect("zip finish").into_inner()
    }

    type TarBuilder = tar::Builder<flate2::write::GzEncoder<Vec<u8>>>;

    fn tar_gz_bytes(build: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(encoder);
        build(&mut builder);
        builder.into_inner().expect("tar finish").finish().expect("gzip finish")
    }

    fn tar_header(entry_type: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_size(size);
        header.set_mode(0o644);
        header
    }

    fn add_file(builder: &mut TarBuilder, path: &str, content: &[u8]) {
        let mut header = tar_header(tar::EntryType::Regular, content.len() as u64);
        builder.append_data(&mut header, path, content).expect("tar file");
    }

    fn add_link(builder: &mut TarBuilder, entry_type: tar::EntryType, path: &str, target: &str) {
        let mut header = tar_header(entry_type, 0);
        builder.append_link(&mut header, path, target).expect("tar link");
    }

    // ---- helpers ----------------------------------------------------------------------------

    /// A scratch root holding the cache (`root/cache`) and a directory outside it
    /// (`root/outside`) that no fetch may write into.
    struct Scratch {
        dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            fs::create_dir(dir.path().join("outside")).expect("outside dir");
            Self { dir }
        }

        fn cache(&self) -> PathBuf {
            self.dir.path().join("cache")
        }

        fn outside(&self) -> PathBuf {
            self.dir.path().join("outside")
        }

        fn request(&self, target: &str, sha256: Option<&str>) -> FetchRequest {
            FetchRequest {
                sha256: sha256.map(str::to_owned),
                cache_dir: Some(self.cache()),
                retries: 0,
                ..FetchRequest::new(target)
            }
        }

        fn fetch(&self, request: &FetchRequest) -> Result<FetchedDataset, FetchError> {
            fetch_with(request, &ProgressBar::hidden(), &http_agent(false))
        }

        /// Names at the top of the cache, sorted, for asserting what a fetch left behind.
        fn cache_listing(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.cache())
                .map(|dir| dir.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            names.sort();
            names
        }

        fn assert_nothing_outside(&self) {
            let outside: Vec<_> = fs::read_dir(self.outside()).expect("outside dir").collect();
            assert!(outside.is_empty(), "files written outside the cache: {outside:?}");
            assert!(!self.dir.path().join("evil").exists(), "../evil escaped the cache");
        }
    }

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    // ---- download, verify, publish ----------------------------------------------------------

    #[test]
    fn zip_and_tar_gz_are_verified_extracted_and_published() {
        let zip = zip_bytes(&[("images/a.png", b"alpha"), ("images/sub/b.png", b"beta"), ("README", b"read me")]);
        let tar_gz = tar_gz_bytes(|builder| {
            add_file(builder, "set/genuine/1.png", b"one");
            add_file(builder, "set/forged/2.png", b"two");
            add_link(builder, tar::EntryType::Symlink, "set/latest.png", "genuine/1.png");
            add_link(builder, tar::EntryType::Link, "set/copy.png", "set/forged/2.png");
        });
        let server = TestServer::start(vec![
            ("pack.zip", zip.clone(), Quirks::default()),
            ("sigs.tar.gz", tar_gz.clone(), Quirks::default()),
        ]);
        let scratch = Scratch::new();

        let fetched = scratch
            .fetch(&scratch.request(&server.url("pack.zip"), Some(&sha_hex(&zip).to_uppercase())))
            .expect("zip fetch");
        assert_eq!(fetched.name, "pack");
        assert_eq!(fetched.outcome, FetchOutcome::Published);
        assert_eq!(fetched.path, scratch.cache().join("pack"));
        assert_eq!(read(&fetched.path.join("images/a.png")), b"alpha");
        assert_eq!(read(&fetched.path.join("images/sub/b.png")), b"beta");
        assert_eq!(read(&fetched.path.join("README")), b"read me");
        assert_eq!(
            fetched.files,
            vec![DownloadedFile { url: server.url("pack.zip"), sha256: sha_hex(&zip), verified: true }]
        );

        let fetched =
            scratch.fetch(&scratch.request(&server.url("sigs.tar.gz"), Some(&sha_hex(&tar_gz)))).expect("tar.gz fetch");
        assert_eq!(fetched.name, "sigs");
        assert_eq!(read(&fetched.path.join("set/genuine/1.png")), b"one");
        assert_eq!(read(&fetched.path.join("set/forged/2.png")), b"two");
        assert_eq!(read(&fetched.path.join("set/copy.png")), b"two");
        #[cfg(unix)]
        {
            assert_eq!(read(&fetched.path.join("set/latest.png")), b"one");
            let target = fs::read_link(fetched.path.join("set/latest.png")).expect("symlink");
            assert_eq!(target, Path::new("genuine/1.png"));
        }

        // Downloads and staging directories are gone once published.
        assert_eq!(scratch.cache_listing(), vec!["pack", "sigs"]);
        scratch.assert_nothing_outside();
    }

    #[test]
    fn url_without_checksum_reports_the_checksum_to_pin() {
        let zip = zip_bytes(&[("a.txt", b"a")]);
        let server = TestServer::start(vec![("data.zip", zip.clone(), Quirks::default())]);
        let scratch = Scratch::new();
        let fetched = scratch.fetch(&scratch.request(&server.url("data.zip"), None)).expect("fetch");
        assert!(!fetched.files[0].verified);
        assert_eq!(fetched.files[0].sha256, sha_hex(&zip));
        assert!(fetched.to_string().contains(&format!("--sha256 {}", sha_hex(&zip))));
    }

    #[test]
    fn wrong_checksum_is_refused_and_nothing_is_published() {
        let zip = zip_bytes(&[("a.txt", b"a")]);
        let server = TestServer::start(vec![("data.zip", zip.clone(), Quirks::default())]);
        let scratch = Scratch::new();
        let wrong = "0".repeat(64);
        let error =
            scratch.fetch(&scratch.request(&server.url("data.zip"), Some(&wrong))).expect_err("checksum must fail");
        match &error {
            FetchError::ChecksumMismatch { url, expected, actual } => {
                assert_eq!(url, &server.url("data.zip"));
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &sha_hex(&zip));
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
        assert!(error.to_string().contains(&server.url("data.zip")));
        assert!(!scratch.cache().join("data").exists());
        // The bad download is gone too, so the next fetch starts from scratch.
        assert_eq!(scratch.cache_listing(), vec![DOWNLOADS_DIR]);
        assert!(!scratch.cache().join(DOWNLOADS_DIR).join("data").join("data.zip.part").exists());
        assert!(!scratch.cache().join(DOWNLOADS_DIR).join("data").join("data.zip").exists());
    }

    #[test]
    fn malformed_checksum_is_refused_before_downloading() {
        let scratch = Scratch::new();
        let error = scratch.fetch(&scratch.request("http://127.0.0.1:9/x.zip", Some("abc"))).expect_err("bad checksum");
        assert!(matches!(error, FetchError::InvalidChecksum { ref value } if value == "abc"), "{error:?}");
    }

    #[test]
    fn interrupted_download_resumes_with_a_range_request() {
        let zip = zip_bytes(&[("big.bin", &noise(200_000, 1))]);
        let cut = 70_000;
        let server = TestServer::start(vec![(
            "big.zip",
            zip.clone(),
            Quirks { drop_first_after: Some(cut), ..Quirks::default() },
        )]);
        let scratch = Scratch::new();
        let request = scratch.request(&server.url("big.zip"), Some(&sha_hex(&zip)));

        let error = scratch.fetch(&request).expect_err("the first attempt is cut");
        assert!(matches!(error, FetchError::Network { .. }), "{error:?}");
        assert!(error.to_string().contains(&server.url("big.zip")));
        let part = scratch.cache().join(DOWNLOADS_DIR).join("big").join("big.zip.part");
        assert_eq!(read(&part), &zip[..cut], "the partial file keeps what arrived");
        assert!(!scratch.cache().join("big").exists(), "nothing is published after a cut");

        let fetched = scratch.fetch(&request).expect("resumed fetch");
        assert_eq!(read(&fetched.path.join("big.bin")), noise(200_000, 1));
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests.iter().all(|logged| logged.path == "/big.zip"), "{requests:?}");
        assert_eq!(requests[0].range, None);
        assert_eq!(requests[1].range.as_deref(), Some(format!("bytes={cut}-").as_str()));
        assert_eq!(requests[1].status, 206);
    }

    #[test]
    fn dropped_connection_is_resumed_within_one_fetch_when_retries_allow() {
        let zip = zip_bytes(&[("big.bin", &noise(100_000, 2))]);
        let server = TestServer::start(vec![(
            "big.zip",
            zip.clone(),
            Quirks { drop_first_after: Some(30_000), ..Quirks::default() },
        )]);
        let scratch = Scratch::new();
        let request = FetchRequest { retries: 1, ..scratch.request(&server.url("big.zip"), Some(&sha_hex(&zip))) };
        let fetched = scratch.fetch(&request).expect("one fetch suffices");
        assert_eq!(read(&fetched.path.join("big.bin")), noise(100_000, 2));
        let ranges: Vec<_> = server.requests().into_iter().map(|logged| logged.range).collect();
        assert_eq!(ranges, vec![None, Some("bytes=30000-".to_owned())]);
    }

    #[test]
    fn server_ignoring_the_range_restarts_the_download_cleanly() {
        let zip = zip_bytes(&[("big.bin", &noise(150_000, 3))]);
        let server = TestServer::start(vec![(
            "big.zip",
            zip.clone(),
            Quirks { drop_first_after: Some(50_000), ignore_range: true },
        )]);
        let scratch = Scratch::new();
        let request = scratch.request(&server.url("big.zip"), Some(&sha_hex(&zip)));
        scratch.fetch(&request).expect_err("the first attempt is cut");

        let fetched = scratch.fetch(&request).expect("restarted fetch");
        assert_eq!(read(&fetched.path.join("big.bin")), noise(150_000, 3));
        let requests = server.requests();
        assert_eq!(requests[1].range.as_deref(), Some("bytes=50000-"));
        assert_eq!(requests[1].status, 200, "the server answered the whole file");
    }

    #[test]
    fn complete_partial_file_answered_416_is_accepted() {
        let zip = zip_bytes(&[("a.txt", b"whole")]);
        let server = TestServer::start(vec![("data.zip", zip.clone(), Quirks::default())]);
        let scratch = Scratch::new();
        let downloads = scratch.cache().join(DOWNLOADS_DIR).join("data");
        fs::create_dir_all(&downloads).expect("downloads dir");
        fs::write(downloads.join("data.zip.part"), &zip).expect("part file");

        let fetched = scratch.fetch(&scratch.request(&server.url("data.zip"), Some(&sha_hex(&zip)))).expect("fetch");
        assert_eq!(read(&fetched.path.join("a.txt")), b"whole");
        let statuses: Vec<_> = server.requests().into_iter().map(|logged| logged.status).collect();
        assert_eq!(statuses, vec![416]);
    }

    #[test]
    fn oversized_partial_file_answered_416_restarts_from_scratch() {
        let zip = zip_bytes(&[("a.txt", b"whole")]);
        let server = TestServer::start(vec![("data.zip", zip.clone(), Quirks::default())]);
        let scratch = Scratch::new();
        let downloads = scratch.cache().join(DOWNLOADS_DIR).join("data");
        fs::create_dir_all(&downloads).expect("downloads dir");
        fs::write(downloads.join("data.zip.part"), noise(zip.len() + 100, 4)).expect("part file");

        let fetched = scratch.fetch(&scratch.request(&server.url("data.zip"), Some(&sha_hex(&zip)))).expect("fetch");
        assert_eq!(read(&fetched.path.join("a.txt")), b"whole");
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!((requests[0].status, requests[1].status), (416, 200));
        assert_eq!(requests[1].range, None);
    }

    #[test]
    fn http_error_names_the_url_and_status() {
        let server = TestServer::start(vec![]);
        let scratch = Scratch::new();
        let url = server.url("missing.zip");
        let error = scratch.fetch(&scratch.request(&url, None)).expect_err("404");
        assert!(matches!(error, FetchError::HttpStatus { status: 404, .. }), "{error:?}");
        assert_eq!(error.to_string(), format!("{url}: server answered HTTP 404"));
        assert!(!scratch.cache().join("missing").exists());
    }

    #[test]
    fn second_fetch_of_a_published_data_set_is_a_no_op() {
        let zip = zip_bytes(&[("a.txt", b"a")]);
        let server = TestServer::start(vec![("data.zip", zip.clone(), Quirks::default())]);
        let scratch = Scratch::new();
        let request = scratch.request(&server.url("data.zip"), Some(&sha_hex(&zip)));
        let first = scratch.fetch(&request).expect("first fetch");
        assert_eq!(first.outcome, FetchOutcome::Published);

        let second = scratch.fetch(&request).expect("second fetch");
        assert_eq!(second.outcome, FetchOutcome::AlreadyPresent);
        assert_eq!(second.path, first.path);
        assert!(second.files.is_empty());
        assert!(second.to_string().contains("already present"), "{second}");
        assert_eq!(server.requests().len(), 1, "the second fetch downloads nothing");
    }

    #[test]
    fn files_kept_as_downloaded_are_published_together() {
        let first = zip_bytes(&[("alphabet/char/1.png", b"1")]);
        let second = b"not an archive".to_vec();
        let server = TestServer::start(vec![
            ("first.zip", first.clone(), Quirks::default()),
            ("runs.txt", second.clone(), Quirks::default()),
        ]);
        let scratch = Scratch::new();
        let plan = Plan {
            name: "omniglot-like".to_owned(),
            files: vec![
                FileSpec {
                    url: server.url("first.zip"),
                    file_name: "first.zip".to_owned(),
                    sha256: Some(sha_hex(&first)),
                    unpack: None,
                },
                FileSpec {
                    url: server.url("runs.txt"),
                    file_name: "runs.txt".to_owned(),
                    sha256: Some(sha_hex(&second)),
                    unpack: None,
                },
            ],
        };
        let cache = scratch.cache();
        fs::create_dir_all(&cache).expect("cache dir");
        let agent = http_agent(false);
        let progress = ProgressBar::hidden();
        let settings = Settings {
            cache: &cache,
            limits: ExtractLimits::default(),
            retries: 0,
            agent: &agent,
            progress: &progress,
        };
        let fetched = execute(&plan, &settings).expect("fetch");
        assert_eq!(read(&fetched.path.join("first.zip")), first, "zips are kept, not extracted");
        assert_eq!(read(&fetched.path.join("runs.txt")), second);
        assert!(!fetched.path.join("alphabet").exists());
        assert_eq!(fetched.files.len(), 2);
    }

    // ---- hostile archives -------------------------------------------------------------------

    /// Fetches `bytes` served as `name` and returns the error, checking that nothing was
    /// published, no staging directory is left and nothing was written outside the cache.
    fn refused(name: &str, bytes: Vec<u8>, limits: ExtractLimits) -> (FetchError, Scratch) {
        let sha = sha_hex(&bytes);
        let server = TestServer::start(vec![(name, bytes, Quirks::default())]);
        let scratch = Scratch::new();
        let request = FetchRequest { limits, ..scratch.request(&server.url(name), Some(&sha)) };
        let error = scratch.fetch(&request).expect_err("hostile archive must be refused");
        let dataset = ArchiveKind::split(name).map_or(name, |(_, stem)| stem);
        assert!(!scratch.cache().join(dataset).exists(), "nothing is published");
        assert_eq!(scratch.cache_listing(), vec![DOWNLOADS_DIR], "no staging directory is left");
        scratch.assert_nothing_outside();
        (error, scratch)
    }

    fn assert_unsafe(error: &FetchError, archive_name: &str, entry_name: &str) {
        match error {
            FetchError::UnsafeEntry { archive, entry, .. } => {
                assert!(archive.ends_with(archive_name), "{}", archive.display());
                assert_eq!(entry, entry_name);
                let message = error.to_string();
                assert!(message.contains(archive_name) && message.contains(entry_name), "{message}");
            }
            other => panic!("expected an unsafe entry, got {other:?}"),
        }
    }

    #[test]
    fn zip_with_parent_directory_entry_is_refused() {
        let zip = zip_bytes(&[("fine.txt", b"ok"), ("../evil", b"pwned")]);
        let (error, scratch) = refused("evil.zip", zip, ExtractLimits::default());
        assert_unsafe(&error, "evil.zip", "../evil");
        assert!(!scratch.cache().join("evil").exists());
    }

    #[test]
    fn tar_with_absolute_path_is_refused() {
        let scratch_outside = Scratch::new();
        let target = scratch_outside.outside().join("evil");
        let absolute = target.to_string_lossy().into_owned();
        let tar_gz = tar_gz_bytes(|builder| {
            let mut header = tar_header(tar::EntryType::Regular, 5);
            header.set_path_absolute(&target).expect("absolute path");
            header.set_cksum();
            builder.append(&header, &b"pwned"[..]).expect("tar entry");
        });
        let (error, _scratch) = refused("abs.tar.gz", tar_gz, ExtractLimits::default());
        assert_unsafe(&error, "abs.tar.gz", &absolute);
        assert!(!target.exists(), "the absolute path was written");
    }

    #[test]
    fn tar_with_symlink_to_etc_is_refused_before_anything_goes_through_it() {
        let tar_gz = tar_gz_bytes(|builder| {
            add_link(builder, tar::EntryType::Symlink, "etc", "/etc");
            add_file(builder, "etc/autograph-test-pwned", b"pwned");
        });
        let (error, _scratch) = refused("etc.tar.gz", tar_gz, ExtractLimits::default());
        assert_unsafe(&error, "etc.tar.gz", "etc");
        assert!(error.to_string().contains("/etc"));
        assert!(!Path::new("/etc/autograph-test-pwned").exists());
    }

    #[test]
    fn tar_with_relative_symlink_escaping_the_archive_is_refused() {
        // From `<cache>/.staging-*/a/`, three levels up is the scratch root, which holds
        // `outside/`: the directory `refused` checks stays empty.
        let tar_gz = tar_gz_bytes(|builder| {
            add_link(builder, tar::EntryType::Symlink, "a/escape", "../../../outside");
            add_file(builder, "a/escape/pwned", b"pwned");
        });
        let (error, _scratch) = refused("rel.tar.gz", tar_gz, ExtractLimits::default());
        assert_unsafe(&error, "rel.tar.gz", "a/escape");
    }

    #[test]
    fn tar_symlink_chain_that_resolves_outside_is_refused() {
        // Lexically `s/sub/../..` stays inside, but `s` is a link to `.`, so on disk it
        // climbs out of the root: only the on-disk check catches it.
        let tar_gz = tar_gz_bytes(|builder| {
            let mut header = tar_header(tar::EntryType::Directory, 0);
            builder.append_data(&mut header, "sub/", io::empty()).expect("tar dir");
            add_link(builder, tar::EntryType::Symlink, "s", ".");
            add_link(builder, tar::EntryType::Symlink, "t", "s/sub/../..");
        });
        let (error, _scratch) = refused("chain.tar.gz", tar_gz, ExtractLimits::default());
        assert_unsafe(&error, "chain.tar.gz", "t");
    }

    #[test]
    fn tar_hard_link_to_a_file_outside_is_refused() {
        let tar_gz = tar_gz_bytes(|builder| {
            add_link(builder, tar::EntryType::Link, "passwd", "/etc/passwd");
        });
        let (error, _scratch) = refused("hard.tar.gz", tar_gz, ExtractLimits::default());
        assert_unsafe(&error, "hard.tar.gz", "passwd");
    }

    #[test]
    fn tar_device_file_is_refused() {
        let tar_gz = tar_gz_bytes(|builder| {
            let mut header = tar_header(tar::EntryType::Char, 0);
            builder.append_data(&mut header, "null", io::empty()).expect("tar device");
        });
        let (error, _scratch) = refused("dev.tar.gz", tar_gz, ExtractLimits::default());
        assert_unsafe(&error, "dev.tar.gz", "null");
        assert!(error.to_string().contains("device files"));
    }

    #[test]
    fn zip_bomb_stops_at_the_size_limit() {
        let zip = zip_bytes(&[("zeros.bin", &vec![0_u8; 1 << 20])]);
        assert!(zip.len() < 10_000, "the fixture compresses like a bomb");
        let limits = ExtractLimits { max_total_bytes: 100_000, ..ExtractLimits::default() };
        let (error, _scratch) = refused("bomb.zip", zip, limits);
        match &error {
            FetchError::LimitExceeded { entry, limit, .. } => {
                assert_eq!(entry, "zeros.bin");
                assert!(limit.contains("100000 bytes"), "{limit}");
            }
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn archive_with_too_many_entries_is_refused() {
        let names: Vec<String> = (0..10).map(|index| format!("f{index}")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|name| (name.as_str(), &b"x"[..])).collect();
        let limits = ExtractLimits { max_entries: 5, ..ExtractLimits::default() };
        let (error, _scratch) = refused("many.zip", zip_bytes(&entries), limits);
        assert!(matches!(&error, FetchError::LimitExceeded { entry, .. } if entry == "f5"), "{error:?}");
    }

    // ---- catalogue --------------------------------------------------------------------------

    #[test]
    fn request_only_data_sets_explain_how_to_obtain_them() {
        let scratch = Scratch::new();
        let error = scratch.fetch(&scratch.request("CEDAR", None)).expect_err("cedar is on request");
        let message = error.to_string();
        assert!(matches!(error, FetchError::RequestOnly { name: "cedar", .. }), "{error:?}");
        assert!(message.contains("full_org/original_<w>_<n>.png"), "{message}");
        assert!(message.contains("full_forg/forgeries_<w>_<n>.png"), "{message}");
        assert!(message.contains(&scratch.cache().join("cedar").display().to_string()), "{message}");

        for name in ["svc2004", "bhsig260", "gpds"] {
            let message = scratch.fetch(&scratch.request(name, None)).expect_err("on request").to_string();
            assert!(message.contains("<writer>/genuine/*") && message.contains("<writer>/forged/*"), "{message}");
        }
        assert!(!scratch.cache().exists(), "a request-only fetch writes nothing");
    }

    #[test]
    fn unknown_name_lists_the_catalogue() {
        let scratch = Scratch::new();
        let message = scratch.fetch(&scratch.request("mnist", None)).expect_err("unknown").to_string();
        assert!(message.contains("`mnist`") && message.contains("omniglot") && message.contains("cedar"), "{message}");
    }

    #[test]
    fn non_http_url_is_refused() {
        let scratch = Scratch::new();
        let error = scratch.fetch(&scratch.request("ftp://example.invalid/x.zip", None)).expect_err("ftp");
        assert!(matches!(error, FetchError::UnsupportedUrl { .. }), "{error:?}");
    }

    #[test]
    fn omniglot_is_pinned_and_kept_as_zips() {
        let entry = find_entry("omniglot").expect("omniglot entry");
        let Availability::Download(files) = entry.availability else {
            panic!("omniglot must be downloadable");
        };
        let names: Vec<_> = files.iter().map(|file| file.file_name).collect();
        assert_eq!(
            names,
            [
                "images_background_small1.zip",
                "images_background_small2.zip",
                "all_runs.zip",
                "strokes_background_small1.zip",
                "strokes_background_small2.zip"
            ]
        );
        let all_runs = files.iter().find(|file| file.file_name == "all_runs.zip").expect("all_runs");
        assert_eq!(all_runs.sha256, "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325");
        for file in files {
            assert_eq!(
                file.url,
                format!("https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}", file.file_name)
            );
            assert!(!file.unpack, "the loader reads the zips directly");
        }
    }

    #[test]
    fn catalogue_entries_are_well_formed() {
        let mut names: Vec<_> = catalogue().iter().map(|entry| entry.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), catalogue().len(), "names are unique");
        for entry in catalogue() {
            assert!(safe_relative_path(entry.name).is_ok_and(|path| path == Path::new(entry.name)));
            match entry.availability {
                Availability::Download(files) => {
                    for file in files {
                        assert_eq!(parse_sha256(file.sha256).ok().as_deref(), Some(file.sha256), "{}", file.url);
                        assert!(file.url.starts_with("https://"), "{}", file.url);
                        assert!(!file.unpack || ArchiveKind::split(file.file_name).is_some());
                    }
                }
                Availability::OnRequest { instructions } => {
                    assert!(instructions.contains("Expected layout"), "{}", entry.name);
                }
            }
        }
    }

    // ---- small pieces -----------------------------------------------------------------------

    #[test]
    fn entry_names_are_checked() {
        assert_eq!(safe_relative_path("a/./b\\c.png"), Ok(PathBuf::from("a/b/c.png")));
        assert_eq!(safe_relative_path("./"), Ok(PathBuf::new()));
        assert_eq!(safe_relative_path("/etc/passwd"), Err("absolute path"));
        assert_eq!(safe_relative_path("\\windows"), Err("absolute path"));
        assert_eq!(safe_relative_path("C:/windows"), Err("absolute path (drive letter)"));
        assert_eq!(safe_relative_path("a/../../b"), Err("`..` component"));
        assert_eq!(safe_relative_path("a\\..\\b"), Err("`..` component"));
        assert_eq!(safe_relative_path("a\0b"), Err("name contains a NUL byte"));
    }

    #[test]
    fn link_targets_are_checked_lexically() {
        assert!(link_target_inside(Path::new("a/link"), "b"));
        assert!(link_target_inside(Path::new("a/link"), "../c/d"));
        assert!(!link_target_inside(Path::new("a/link"), "../../c"));
        assert!(!link_target_inside(Path::new("link"), ".."));
        assert!(!link_target_inside(Path::new("link"), "/etc"));
        assert!(!link_target_inside(Path::new("link"), ""));
    }

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(ContentRange::parse("bytes 100-199/200"), ContentRange { start: Some(100), total: Some(200) });
        assert_eq!(ContentRange::parse("bytes */200"), ContentRange { start: None, total: Some(200) });
        assert_eq!(ContentRange::parse("items 1-2/3"), ContentRange::default());
    }

    #[test]
    fn names_come_from_the_url() {
        assert_eq!(file_name_of_url("https://h/p/data.tar.gz?x=1#y").as_deref(), Some("data.tar.gz"));
        assert_eq!(file_name_of_url("https://h/p/a b.zip").as_deref(), Some("a_b.zip"));
        assert_eq!(file_name_of_url("https://h/"), None);
        assert_eq!(file_name_of_url("https://h"), None);
        assert_eq!(file_name_of_url("https://h/..").as_deref(), None);
        let plan = plan_for_url("https://h/p/Data.TGZ", None).expect("plan");
        assert_eq!((plan.name.as_str(), plan.files[0].unpack), ("Data", Some(ArchiveKind::TarGz)));
        let plan = plan_for_url("https://h/p/model.onnx", None).expect("plan");
        assert_eq!((plan.name.as_str(), plan.files[0].unpack), ("model.onnx", None));
    }

    #[test]
    fn cache_dir_follows_the_documented_precedence() {
        fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| OsString::from(value))
        }
        let all = [("AUTOGRAPH_CACHE", "/a"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(lookup(&all)), Some(PathBuf::from("/a")));
        let no_autograph = [("AUTOGRAPH_CACHE", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(lookup(&no_autograph)), Some(PathBuf::from("/x/autograph")));
        let relative_xdg = [("XDG_CACHE_HOME", "relative"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(lookup(&relative_xdg)), Some(PathBuf::from("/h/.cache/autograph")));
        assert_eq!(cache_dir_from(lookup(&[])), None);
    }

    #[test]
    fn progress_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
