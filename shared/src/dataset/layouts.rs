//! The directory layouts Autograph reads, and how each maps onto writers and labels.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DatasetError, ImageSource, Label, Sample, omniglot};

/// A supported data set layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// CEDAR's own: `full_org/original_<w>_<n>.png` and `full_forg/forgeries_<w>_<n>.png`.
    Cedar,
    /// `<writer>/genuine/*` and `<writer>/forged/*`, writers possibly nested
    /// (`<script>/<writer>/...` as in BHSig260). SVC2004 as provided uses it.
    GenuineForged,
    /// The original project's `Dataset/<class>/<images>`: one writer per folder, all genuine.
    ClassFolders,
    /// Omniglot's `images_background*.zip`, read without extracting; a class is a character.
    Omniglot,
    /// Several data sets combined by [`super::Dataset::merge`].
    Merged,
}

const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

/// Whether a path names an image file we can decode (by extension).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl Layout {
    /// Decides which layout `root` uses.
    pub fn detect(root: &Path) -> Result<Layout, DatasetError> {
        if root.join("full_org").is_dir() {
            return Ok(Layout::Cedar);
        }
        if !omniglot::background_zips(root)?.is_empty() {
            return Ok(Layout::Omniglot);
        }
        if !genuine_forged_writers(root, root)?.is_empty() {
            return Ok(Layout::GenuineForged);
        }
        let classes = sorted_entries(root)?;
        let has_class_with_images = classes
            .iter()
            .any(|d| d.is_dir() && sorted_entries(d).map(|files| files.iter().any(|f| is_image(f))).unwrap_or(false));
        if has_class_with_images {
            return Ok(Layout::ClassFolders);
        }
        Err(DatasetError::UnknownLayout {
            path: root.to_path_buf(),
            hint: "expected full_org/ + full_forg/ (CEDAR), <writer>/genuine/ + <writer>/forged/, \
                   <class>/<images>, or Omniglot's images_background*.zip"
                .to_string(),
        })
    }

    /// Lists every sample of `root` under this layout (unsorted; duplicates still in).
    pub fn list(self, root: &Path) -> Result<Vec<Sample>, DatasetError> {
        match self {
            Layout::Cedar => list_cedar(root),
            Layout::GenuineForged => list_genuine_forged(root),
            Layout::ClassFolders => list_class_folders(root),
            Layout::Omniglot => omniglot::list_background(root),
            Layout::Merged => Err(DatasetError::Layout {
                path: root.to_path_buf(),
                message: "a merged data set is built from its parts, not read from disk".into(),
            }),
        }
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let read = std::fs::read_dir(dir).map_err(|source| DatasetError::Io { path: dir.to_path_buf(), source })?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| DatasetError::Io { path: dir.to_path_buf(), source })?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn file_sample(writer: String, label: Label, path: PathBuf) -> Result<Sample, DatasetError> {
    let bytes = std::fs::read(&path).map_err(|source| DatasetError::Io { path: path.clone(), source })?;
    Ok(Sample { writer, label, sha256: crate::sha256_hex(&bytes), source: ImageSource::File(path) })
}

fn list_cedar(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let mut samples = Vec::new();
    for (dir, prefix, label) in [("full_org", "original_", Label::Genuine), ("full_forg", "forgeries_", Label::Forged)]
    {
        let dir = root.join(dir);
        if !dir.is_dir() {
            if label == Label::Forged {
                continue; // a CEDAR subset without forgeries is still usable
            }
            return Err(DatasetError::NotFound { path: dir });
        }
        for path in sorted_entries(&dir)? {
            if !is_image(&path) {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let writer = stem
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_once('_'))
                .filter(|(w, n)| w.parse::<u32>().is_ok() && n.parse::<u32>().is_ok())
                .map(|(w, _)| w.to_string())
                .ok_or_else(|| DatasetError::Layout {
                    path: path.clone(),
                    message: format!("expected a name like {prefix}<writer>_<n>"),
                })?;
            samples.push(file_sample(writer, label, path)?);
        }
    }
    Ok(samples)
}

/// Directories below `root` (depth ≤ 3) that hold a `genuine/` folder: one per writer.
fn genuine_forged_writers(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut writers = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        if d.join("genuine").is_dir() {
            writers.push(d);
            continue;
        }
        if depth >= 3 {
            continue;
        }
        for child in sorted_entries(&d)? {
            if child.is_dir() {
                stack.push((child, depth + 1));
            }
        }
    }
    writers.sort();
    let _ = root;
    Ok(writers)
}

fn list_genuine_forged(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let mut samples = Vec::new();
    for writer_dir in genuine_forged_writers(root, root)? {
        let writer = match writer_dir.strip_prefix(root) {
            Ok(rel) if !rel.as_os_str().is_empty() => {
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
            }
            _ => root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "writer".into()),
        };
        for (sub, label) in [("genuine", Label::Genuine), ("forged", Label::Forged)] {
            let dir = writer_dir.join(sub);
            if !dir.is_dir() {
                continue;
            }
            for path in sorted_entries(&dir)? {
                if is_image(&path) {
                    samples.push(file_sample(writer.clone(), label, path)?);
                }
            }
        }
    }
    Ok(samples)
}

fn list_class_folders(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let mut samples = Vec::new();
    for class_dir in sorted_entries(root)? {
        if !class_dir.is_dir() {
            continue;
        }
        let writer = class_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for path in sorted_entries(&class_dir)? {
            if is_image(&path) {
                samples.push(file_sample(writer.clone(), Label::Genuine, path)?);
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::super::Dataset;
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn cedar_layout() {
        let dir = tempfile::tempdir().expect("tmp");
        for w in [1, 2, 10] {
            for n in 1..=3 {
                write(&dir.path().join(format!("full_org/original_{w}_{n}.png")), format!("g{w}{n}").as_bytes());
                write(&dir.path().join(format!("full_forg/forgeries_{w}_{n}.png")), format!("f{w}{n}").as_bytes());
            }
        }
        write(&dir.path().join("full_org/Thumbs.db"), b"ignored");
        let ds = Dataset::load(dir.path()).expect("load");
        assert_eq!(ds.layout, Layout::Cedar);
        assert_eq!(ds.writers(), vec!["1", "2", "10"]);
        assert_eq!(ds.samples.iter().filter(|s| s.label == Label::Genuine).count(), 9);
        assert_eq!(ds.samples.iter().filter(|s| s.label == Label::Forged).count(), 9);
        // Sorted by writer, then genuine before forged.
        assert_eq!(ds.samples[0].writer, "1");
        assert_eq!(ds.samples[0].label, Label::Genuine);
        assert_eq!(ds.samples[3].label, Label::Forged);
    }

    #[test]
    fn cedar_misnamed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("full_org/original_1_1.png"), b"a");
        write(&dir.path().join("full_org/scan_7.png"), b"b");
        let err = Dataset::load(dir.path()).expect_err("bad name");
        assert!(err.to_string().contains("scan_7.png"), "{err}");
    }

    #[test]
    fn nested_genuine_forged_with_duplicate() {
        let dir = tempfile::tempdir().expect("tmp");
        for script in ["Bengali", "Hindi"] {
            for w in ["001", "002"] {
                for n in 1..=2 {
                    write(
                        &dir.path().join(format!("{script}/{w}/genuine/G-{n}.tif")),
                        format!("{script}{w}g{n}").as_bytes(),
                    );
                    write(
                        &dir.path().join(format!("{script}/{w}/forged/F-{n}.tif")),
                        format!("{script}{w}f{n}").as_bytes(),
                    );
                }
            }
        }
        // A byte-identical copy, as in the real BHSig260 sample.
        write(&dir.path().join("Bengali/001/genuine/G-3.tif"), b"Bengali001g1");
        let ds = Dataset::load(dir.path()).expect("load");
        assert_eq!(ds.layout, Layout::GenuineForged);
        assert_eq!(ds.writers(), vec!["Bengali/001", "Bengali/002", "Hindi/001", "Hindi/002"]);
        assert_eq!(ds.duplicates.len(), 1);
        assert!(ds.duplicates[0].dropped.ends_with("G-3.tif"), "{:?}", ds.duplicates);
        assert_eq!(ds.samples.len(), 16);
    }

    #[test]
    fn flat_genuine_forged_and_class_folders() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("user1/genuine/a.jpg"), b"1");
        write(&dir.path().join("user1/forged/b.jpg"), b"2");
        write(&dir.path().join("user2/genuine/a.jpg"), b"3");
        let ds = Dataset::load(dir.path()).expect("load");
        assert_eq!(ds.layout, Layout::GenuineForged);
        assert_eq!(ds.writers(), vec!["user1", "user2"]);
        assert!(ds.has_forgeries());

        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("alice/1.png"), b"1");
        write(&dir.path().join("alice/2.png"), b"2");
        write(&dir.path().join("bob/1.png"), b"3");
        write(&dir.path().join("README.txt"), b"not a class");
        let ds = Dataset::load(dir.path()).expect("load");
        assert_eq!(ds.layout, Layout::ClassFolders);
        assert_eq!(ds.writers(), vec!["alice", "bob"]);
        assert!(!ds.has_forgeries());
    }

    #[test]
    fn unknown_layout_and_missing_dir() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("notes.txt"), b"x");
        assert!(matches!(Dataset::load(dir.path()), Err(DatasetError::UnknownLayout { .. })));
        assert!(matches!(Dataset::load(&dir.path().join("nope")), Err(DatasetError::NotFound { .. })));
    }

    #[test]
    fn content_hash_changes_with_content_not_with_location() {
        let make = |payload: &[u8]| {
            let dir = tempfile::tempdir().expect("tmp");
            write(&dir.path().join("w1/genuine/a.png"), payload);
            write(&dir.path().join("w2/genuine/a.png"), b"other");
            let ds = Dataset::load(dir.path()).expect("load");
            (dir, ds.content_hash)
        };
        let (_a, h1) = make(b"one");
        let (_b, h2) = make(b"one");
        let (_c, h3) = make(b"two");
        assert_eq!(h1, h2);
        assert_ne!(h1, h3);
    }

    #[test]
    fn merge_prefixes_writers() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("a/w1/genuine/x.png"), b"1");
        write(&dir.path().join("b/w1/genuine/x.png"), b"2");
        let a = Dataset::load(&dir.path().join("a")).expect("a");
        let b = Dataset::load(&dir.path().join("b")).expect("b");
        let m = Dataset::merge(vec![a, b]);
        assert_eq!(m.writers(), vec!["a:w1", "b:w1"]);
        assert_eq!(m.name, "a+b");
    }
}
