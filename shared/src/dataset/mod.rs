//! Data sets: the layouts we read, duplicate removal, and writer-disjoint splits.
//!
//! A [`Dataset`] is a flat, deterministic list of [`Sample`]s: which writer, genuine or forged,
//! and where the bytes are. Images are not decoded here; [`crate::preprocess`] does that.

mod layouts;
pub mod links;
pub mod omniglot;
pub mod splits;
mod stats;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use layouts::Layout;
pub use stats::{DatasetStats, Unreadable, stats};

/// Whether a sample was written by its writer or forged by someone imitating them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Genuine,
    Forged,
}

/// Where a sample's encoded bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageSource {
    File(PathBuf),
    /// An entry of a zip archive (Omniglot is read straight from its zips).
    ZipEntry {
        archive: PathBuf,
        entry: String,
    },
}

impl ImageSource {
    /// Reads the encoded bytes.
    pub fn read(&self) -> Result<Vec<u8>, DatasetError> {
        match self {
            ImageSource::File(path) => {
                std::fs::read(path).map_err(|source| DatasetError::Io { path: path.clone(), source })
            }
            ImageSource::ZipEntry { archive, entry } => omniglot::read_zip_entry(archive, entry),
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::File(path) => write!(f, "{}", path.display()),
            ImageSource::ZipEntry { archive, entry } => write!(f, "{}!{}", archive.display(), entry),
        }
    }
}

/// One image of one writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Writer (or, for Omniglot, character class) identifier, unique within the data set.
    pub writer: String,
    pub label: Label,
    pub source: ImageSource,
    /// sha256 of the encoded bytes: duplicate detection and the data set's content hash.
    pub sha256: String,
}

/// A byte-identical duplicate that was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub kept: String,
    pub dropped: String,
}

/// A loaded data set: samples sorted by writer, label and source; duplicates already removed.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name, from the directory name (e.g. `svc2004`).
    pub name: String,
    pub root: PathBuf,
    pub layout: Layout,
    pub samples: Vec<Sample>,
    pub duplicates: Vec<Duplicate>,
    /// sha256 over every kept sample's writer, label and content hash, in order: names the
    /// exact data a model was trained on.
    pub content_hash: String,
    /// The data sets this one is made of, in the order given: one entry for a single set.
    /// Writers of a merged set are `name:writer` (see [`Dataset::set_of`]).
    pub sets: Vec<SetInfo>,
}

/// One constituent data set of a (possibly merged) [`Dataset`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetInfo {
    pub name: String,
    pub root: PathBuf,
    /// The set's own content hash, as if it had been loaded alone.
    pub content_hash: String,
}

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: no such directory")]
    NotFound { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a known data set layout ({hint})")]
    UnknownLayout { path: PathBuf, hint: String },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("{path}: no images found")]
    Empty { path: PathBuf },
    #[error("zip archive {path}: {message}")]
    Zip { path: PathBuf, message: String },
}

impl Dataset {
    /// Detects the layout of `root` and lists its samples (hashing every file once).
    pub fn load(root: &Path) -> Result<Dataset, DatasetError> {
        if !root.is_dir() {
            return Err(DatasetError::NotFound { path: root.to_path_buf() });
        }
        let layout = Layout::detect(root)?;
        let raw = layout.list(root)?;
        if raw.is_empty() {
            return Err(DatasetError::Empty { path: root.to_path_buf() });
        }
        let name = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dataset".to_string());
        Ok(Self::from_samples(name, root.to_path_buf(), layout, raw))
    }

    /// Sorts, drops byte-identical duplicates (keeping the first in sort order, with a warning)
    /// and computes the content hash.
    pub fn from_samples(name: String, root: PathBuf, layout: Layout, mut samples: Vec<Sample>) -> Dataset {
        samples.sort_by(|a, b| {
            natural_cmp(&a.writer, &b.writer)
                .then(a.label.cmp(&b.label))
                .then_with(|| natural_cmp(&a.source.to_string(), &b.source.to_string()))
        });
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut duplicates = Vec::new();
        samples.retain(|s| match seen.get(&s.sha256) {
            Some(kept) => {
                duplicates.push(Duplicate { kept: kept.clone(), dropped: s.source.to_string() });
                false
            }
            None => {
                seen.insert(s.sha256.clone(), s.source.to_string());
                true
            }
        });
        for d in duplicates.iter().take(3) {
            log::warn!("{name}: dropping {}: byte-identical to {}", d.dropped, d.kept);
        }
        if duplicates.len() > 3 {
            log::warn!(
                "{name}: {} more byte-identical duplicates dropped (all are listed by `data stats --json`)",
                duplicates.len() - 3
            );
        }
        let mut hasher_input = String::new();
        for s in &samples {
            hasher_input.push_str(&format!("{}\t{:?}\t{}\n", s.writer, s.label, s.sha256));
        }
        let content_hash = crate::sha256_hex(hasher_input.as_bytes());
        let sets = vec![SetInfo { name: name.clone(), root: root.clone(), content_hash: content_hash.clone() }];
        Dataset { name, root, layout, samples, duplicates, content_hash, sets }
    }

    /// Combines data sets into one; writer ids become `name:writer` so they stay distinct.
    pub fn merge(parts: Vec<Dataset>) -> Dataset {
        if parts.len() == 1 {
            return parts.into_iter().next().unwrap_or_else(|| unreachable!());
        }
        let name = parts.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join("+");
        let root = parts.first().map(|d| d.root.clone()).unwrap_or_default();
        let mut samples = Vec::new();
        let mut duplicates = Vec::new();
        let mut sets = Vec::new();
        for part in parts {
            sets.extend(part.sets);
            duplicates.extend(part.duplicates);
            samples.extend(part.samples.into_iter().map(|mut s| {
                s.writer = format!("{}:{}", part.name, s.writer);
                s
            }));
        }
        let mut merged = Self::from_samples(name, root, Layout::Merged, samples);
        duplicates.append(&mut merged.duplicates);
        merged.duplicates = duplicates;
        merged.sets = sets;
        merged
    }

    /// The name of the constituent set a writer belongs to (the set's own name when the data
    /// set is not merged).
    pub fn set_of<'a>(&'a self, writer: &'a str) -> &'a str {
        if self.sets.len() > 1
            && let Some((set, _)) = writer.split_once(':')
            && self.sets.iter().any(|s| s.name == set)
        {
            return set;
        }
        &self.name
    }

    /// Writers grouped by constituent set, in the sets' order; writers in natural order.
    pub fn writers_by_set(&self) -> Vec<(String, Vec<String>)> {
        let all = self.writers();
        if self.sets.len() <= 1 {
            return vec![(self.name.clone(), all)];
        }
        self.sets
            .iter()
            .map(|set| (set.name.clone(), all.iter().filter(|w| self.set_of(w) == set.name).cloned().collect()))
            .collect()
    }

    /// Writer ids in natural order (`user2` before `user10`).
    pub fn writers(&self) -> Vec<String> {
        let mut writers: Vec<String> = self.samples.iter().map(|s| s.writer.clone()).collect();
        writers.dedup();
        writers.sort_by(|a, b| natural_cmp(a, b));
        writers.dedup();
        writers
    }

    /// Whether the set has skilled forgeries (CEDAR, SVC2004, BHSig260 do; Omniglot does not).
    pub fn has_forgeries(&self) -> bool {
        self.samples.iter().any(|s| s.label == Label::Forged)
    }

    /// Samples of the given writers only.
    pub fn samples_of<'a>(&'a self, writers: &'a [String]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| writers.contains(&s.writer))
    }
}

/// Compares strings treating digit runs as numbers, so `user2 < user10` and `_2 < _10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then(na.cmp(nb)).then(da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().position(|&d| d != b'0').unwrap_or(digits.len());
    &digits[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["user10", "user2", "user1", "a_10", "a_9"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["a_9", "a_10", "user1", "user2", "user10"]);
    }
}
