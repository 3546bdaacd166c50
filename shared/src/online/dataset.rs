//! Lists an on-line signature corpus as (user, genuine or forged, file) samples, so the
//! evaluation and the CLI never depend on a corpus's file naming.
//!
//! Two layouts are recognised: SVC2004 Task 2 (`U<u>S<s>.TXT`, s = 1..=20 genuine, 21..=40
//! skilled forgeries; the directory itself or its `Task2/`) and MCYT (`NNNN/NNNNvXX.fpg`
//! genuine, `NNNN/NNNNfXX.fpg` skilled forgeries of user NNNN). Other files are ignored.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::formats::Format;
use crate::dataset::{Label, natural_cmp};

/// SVC2004 sessions 1..=20 are genuine, 21..=40 skilled forgeries.
pub const SVC_GENUINE: std::ops::RangeInclusive<u32> = 1..=20;
pub const SVC_FORGED: std::ops::RangeInclusive<u32> = 21..=40;

/// One signature file of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnlineSample {
    /// The user whose signature this is (or imitates): `U7` for SVC2004, `0042` for MCYT.
    pub user: String,
    pub label: Label,
    pub path: PathBuf,
}

/// A corpus: its format and its samples, by user in natural order (genuine first).
#[derive(Debug, Clone, Serialize)]
pub struct OnlineDataset {
    pub format: Format,
    /// The directory the files were found in.
    pub root: PathBuf,
    pub samples: Vec<OnlineSample>,
}

/// Why a directory could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: no on-line signatures found (expected SVC2004 U<u>S<s>.TXT files, here or in Task2/, or MCYT NNNN/NNNNv00.fpg)",
        path.display()
    )]
    NotRecognised { path: PathBuf },
}

impl OnlineDataset {
    /// Distinct users, natural order.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.samples.iter().map(|s| s.user.clone()).collect();
        users.dedup();
        users
    }

    /// A short name for reports: the directory name (`Task2` is named by its parent).
    pub fn name(&self) -> String {
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let own = name(&self.root).unwrap_or_default();
        if own.eq_ignore_ascii_case("task2") {
            self.root.parent().and_then(name).map_or(own.clone(), |parent| format!("{parent}/{own}"))
        } else {
            own
        }
    }
}

/// Lists `dir` as SVC2004 or MCYT, whichever layout it holds.
pub fn list_online_dataset(dir: &Path) -> Result<OnlineDataset, ListError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ListError::Io { path, source }
    };
    for candidate in [dir.to_path_buf(), dir.join("Task2")] {
        if !candidate.is_dir() {
            continue;
        }
        let samples = svc_samples(&files_in(&candidate).map_err(io(&candidate))?);
        if !samples.is_empty() {
            return Ok(finish(Format::Svc2004, candidate, samples));
        }
    }
    let mut samples = mcyt_samples(&files_in(dir).map_err(io(dir))?);
    for sub in subdirectories(dir).map_err(io(dir))? {
        samples.extend(mcyt_samples(&files_in(&sub).map_err(io(&sub))?));
    }
    if samples.is_empty() {
        return Err(ListError::NotRecognised { path: dir.to_path_buf() });
    }
    Ok(finish(Format::Mcyt, dir.to_path_buf(), samples))
}

fn finish(format: Format, root: PathBuf, mut samples: Vec<OnlineSample>) -> OnlineDataset {
    let file = |s: &OnlineSample| s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    samples.sort_by(|a, b| {
        natural_cmp(&a.user, &b.user).then(a.label.cmp(&b.label)).then_with(|| natural_cmp(&file(a), &file(b)))
    });
    OnlineDataset { format, root, samples }
}

fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    entries(dir, |t| t.is_file())
}

fn subdirectories(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = entries(dir, |t| t.is_dir())?;
    dirs.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(dirs)
}

fn entries(dir: &Path, keep: impl Fn(&std::fs::FileType) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Follow symlinks: data directories are often linked in.
        let kind = std::fs::metadata(entry.path())?.file_type();
        if keep(&kind) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// `U<u>S<s>.TXT` (any case) -> (u, s).
fn svc_name(name: &str) -> Option<(u32, u32)> {
    let upper = name.to_ascii_uppercase();
    let stem = upper.strip_suffix(".TXT")?.strip_prefix('U')?;
    let (u, s) = stem.split_once('S')?;
    let all_digits = |t: &str| !t.is_empty() && t.len() <= 6 && t.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(u) && all_digits(s)) {
        return None;
    }
    Some((u.parse().ok()?, s.parse().ok()?))
}

fn svc_samples(files: &[PathBuf]) -> Vec<OnlineSample> {
    files
        .iter()
        .filter_map(|path| {
            let (u, s) = svc_name(&path.file_name()?.to_string_lossy())?;
            let label = if SVC_GENUINE.contains(&s) {
                Label::Genuine
            } else if SVC_FORGED.contains(&s) {
                Label::Forged
            } else {
                return None;
            };
            Some(OnlineSample { user: format!("U{u}"), label, path: path.clone() })
        })
        .collect()
}

/// `<user digits><v|f><digits>.fpg` (any case) -> (user, label).
fn mcyt_name(name: &str) -> Option<(String, Label)> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".fpg")?;
    let split = stem.find(['v', 'f'])?;
    let (user, rest) = stem.split_at(split);
    let number = &rest[1..];
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !(digits(user) && digits(number)) {
        return None;
    }
    let label = if rest.starts_with('v') { Label::Genuine } else { Label::Forged };
    Some((user.to_string(), label))
}

fn mcyt_samples(files: &[PathBuf]) -> Vec<OnlineSample> {
    files
        .iter()
        .filter_map(|path| {
            let (user, label) = mcyt_name(&path.file_name()?.to_string_lossy())?;
            Some(OnlineSample { user, label, path: path.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, b"").expect("write");
    }

    #[test]
    fn names_are_recognised() {
        assert_eq!(svc_name("U12S3.TXT"), Some((12, 3)));
        assert_eq!(svc_name("u1s40.txt"), Some((1, 40)));
        assert_eq!(svc_name("U1S.TXT"), None);
        assert_eq!(svc_name("README.TXT"), None);
        assert_eq!(mcyt_name("0042v07.fpg"), Some(("0042".into(), Label::Genuine)));
        assert_eq!(mcyt_name("0042F24.FPG"), Some(("0042".into(), Label::Forged)));
        assert_eq!(mcyt_name("0042x07.fpg"), None);
        assert_eq!(mcyt_name("Readme.txt"), None);
    }

    #[test]
    fn lists_svc2004_in_natural_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["U10S1.TXT", "U2S21.TXT", "U2S10.TXT", "U2S2.TXT", "U2S41.TXT", "notes.txt"] {
            touch(&dir.path().join("Task2").join(name));
        }
        let ds = list_online_dataset(dir.path()).expect("list");
        assert_eq!(ds.format, Format::Svc2004);
        let got: Vec<(String, Label, String)> = ds
            .samples
            .iter()
            .map(|s| (s.user.clone(), s.label, s.path.file_name().expect("name").to_string_lossy().into_owned()))
            .collect();
        let want = [
            ("U2", Label::Genuine, "U2S2.TXT"),
            ("U2", Label::Genuine, "U2S10.TXT"),
            ("U2", Label::Forged, "U2S21.TXT"),
            ("U10", Label::Genuine, "U10S1.TXT"),
        ];
        assert_eq!(got, want.map(|(u, l, f)| (u.to_string(), l, f.to_string())));
        assert_eq!(ds.users(), vec!["U2", "U10"]);
        assert!(ds.name().ends_with("/Task2"));
    }

    #[test]
    fn lists_mcyt_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["0001/0001f00.fpg", "0001/0001v10.fpg", "0001/0001v2.fpg", "0000/0000v00.fpg", "Readme.txt"] {
            touch(&dir.path().join(name));
        }
        let ds = list_online_dataset(dir.path()).expect("list");
        assert_eq!(ds.format, Format::Mcyt);
        let files: Vec<String> =
            ds.samples.iter().map(|s| s.path.file_name().expect("name").to_string_lossy().into_owned()).collect();
        assert_eq!(files, ["0000v00.fpg", "0001v2.fpg", "0001v10.fpg", "0001f00.fpg"]);
        assert_eq!(ds.users(), vec!["0000", "0001"]);
    }

    #[test]
    fn other_directories_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a/b.png"));
        assert!(matches!(list_online_dataset(dir.path()), Err(ListError::NotRecognised { .. })));
        assert!(matches!(list_online_dataset(&dir.path().join("missing")), Err(ListError::Io { .. })));
    }
}
