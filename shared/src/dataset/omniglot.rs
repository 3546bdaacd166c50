//! Omniglot, read straight from its zip files: the background sets as a data set whose
//! classes are characters, and the official 20-way one-shot runs of `all_runs.zip`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DatasetError, ImageSource, Label, Sample};

/// Largest single entry we decompress: Omniglot images are ~1 KB; this only stops a zip bomb.
const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

/// `images_background*.zip` (and `images_evaluation*.zip`) files directly in `root`, sorted.
pub fn background_zips(root: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let read = std::fs::read_dir(root).map_err(|source| DatasetError::Io { path: root.to_path_buf(), source })?;
    let mut zips = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| DatasetError::Io { path: root.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with("images_background") || name.starts_with("images_evaluation")) && name.ends_with(".zip") {
            zips.push(entry.path());
        }
    }
    zips.sort();
    Ok(zips)
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<File>, DatasetError> {
    let file = File::open(path).map_err(|source| DatasetError::Io { path: path.to_path_buf(), source })?;
    zip::ZipArchive::new(file).map_err(|e| DatasetError::Zip { path: path.to_path_buf(), message: e.to_string() })
}

fn read_entry(archive: &mut zip::ZipArchive<File>, path: &Path, name: &str) -> Result<Vec<u8>, DatasetError> {
    let zip_err = |message: String| DatasetError::Zip { path: path.to_path_buf(), message };
    let entry = archive.by_name(name).map_err(|e| zip_err(format!("{name}: {e}")))?;
    if entry.size() > MAX_ENTRY_BYTES {
        return Err(zip_err(format!("{name}: entry of {} bytes is over the limit", entry.size())));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).map_err(|e| zip_err(format!("{name}: {e}")))?;
    Ok(bytes)
}

/// Reads one entry of a zip archive.
pub fn read_zip_entry(archive: &Path, entry: &str) -> Result<Vec<u8>, DatasetError> {
    let mut zip = open_zip(archive)?;
    read_entry(&mut zip, archive, entry)
}

/// Every character image of the background zips; class id = `alphabet/character`.
pub fn list_background(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let mut samples = Vec::new();
    for path in background_zips(root)? {
        let mut zip = open_zip(&path)?;
        let names: Vec<String> = zip.file_names().map(str::to_string).collect();
        for name in names {
            if !name.to_ascii_lowercase().ends_with(".png") {
                continue;
            }
            // <set>/<alphabet>/<character>/<file>.png
            let parts: Vec<&str> = name.split('/').collect();
            let [.., alphabet, character, _file] = parts.as_slice() else {
                return Err(DatasetError::Zip {
                    path: path.clone(),
                    message: format!("{name}: expected <set>/<alphabet>/<character>/<file>.png"),
                });
            };
            let writer = format!("{alphabet}/{character}");
            let bytes = read_entry(&mut zip, &path, &name)?;
            samples.push(Sample {
                writer,
                label: Label::Genuine,
                sha256: crate::sha256_hex(&bytes),
                source: ImageSource::ZipEntry { archive: path.clone(), entry: name },
            });
        }
    }
    Ok(samples)
}

/// One official 20-way one-shot run: 20 training images (one per class), 20 test images,
/// and for each test image the training image of its class.
#[derive(Debug, Clone)]
pub struct OneShotRun {
    pub name: String,
    /// (entry name, encoded bytes), in entry-name order.
    pub training: Vec<(String, Vec<u8>)>,
    pub test: Vec<(String, Vec<u8>)>,
    /// (test entry, its correct training entry), as listed in `class_labels.txt`.
    pub answers: Vec<(String, String)>,
}

/// Reads every run of `all_runs.zip` (`runNN/class_labels.txt`, `runNN/training/*.png`,
/// `runNN/test/*.png`).
pub fn load_runs(all_runs_zip: &Path) -> Result<Vec<OneShotRun>, DatasetError> {
    let mut zip = open_zip(all_runs_zip)?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let mut run_names: Vec<String> =
        names.iter().filter_map(|n| n.strip_suffix("/class_labels.txt")).map(str::to_string).collect();
    run_names.sort();
    let mut runs = Vec::new();
    for run in run_names {
        let labels_name = format!("{run}/class_labels.txt");
        let labels = String::from_utf8(read_entry(&mut zip, all_runs_zip, &labels_name)?).map_err(|_| {
            DatasetError::Zip { path: all_runs_zip.to_path_buf(), message: format!("{labels_name}: not UTF-8") }
        })?;
        let mut answers = Vec::new();
        for line in labels.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(test), Some(train), None) => answers.push((test.to_string(), train.to_string())),
                _ => {
                    return Err(DatasetError::Zip {
                        path: all_runs_zip.to_path_buf(),
                        message: format!("{labels_name}: bad line {line:?}"),
                    });
                }
            }
        }
        let mut collect = |folder: &str| -> Result<Vec<(String, Vec<u8>)>, DatasetError> {
            let prefix = format!("{run}/{folder}/");
            let mut entries: Vec<&String> =
                names.iter().filter(|n| n.starts_with(&prefix) && n.to_ascii_lowercase().ends_with(".png")).collect();
            entries.sort();
            entries.into_iter().map(|n| Ok((n.clone(), read_entry(&mut zip, all_runs_zip, n)?))).collect()
        };
        let training = collect("training")?;
        let test = collect("test")?;
        for (t, c) in &answers {
            let known = test.iter().any(|(n, _)| n == t) && training.iter().any(|(n, _)| n == c);
            if !known {
                return Err(DatasetError::Zip {
                    path: all_runs_zip.to_path_buf(),
                    message: format!("{labels_name}: {t} -> {c} names an image that is not in the archive"),
                });
            }
        }
        runs.push(OneShotRun { name: run, training, test, answers });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(path: &Path, entries: &[(&str, &[u8])]) {
        let file = File::create(path).expect("create");
        let mut zip = zip::ZipWriter::new(file);
        for (name, bytes) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).expect("start");
            zip.write_all(bytes).expect("write");
        }
        zip.finish().expect("finish");
    }

    #[test]
    fn background_zip_lists_characters() {
        let dir = tempfile::tempdir().expect("tmp");
        zip_with(
            &dir.path().join("images_background_small1.zip"),
            &[
                ("images_background_small1/Latin/character01/0001_01.png", b"a"),
                ("images_background_small1/Latin/character01/0001_02.png", b"b"),
                ("images_background_small1/Latin/character02/0002_01.png", b"c"),
            ],
        );
        let ds = super::super::Dataset::load(dir.path()).expect("load");
        assert_eq!(ds.layout, super::super::Layout::Omniglot);
        assert_eq!(ds.writers(), vec!["Latin/character01", "Latin/character02"]);
        let bytes = ds.samples[2].source.read().expect("read");
        assert_eq!(bytes, b"c");
    }

    #[test]
    fn runs_parse_and_bad_labels_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("all_runs.zip");
        zip_with(
            &path,
            &[
                ("run01/class_labels.txt", b"run01/test/item01.png run01/training/class02.png\nrun01/test/item02.png run01/training/class01.png\n"),
                ("run01/training/class01.png", b"t1"),
                ("run01/training/class02.png", b"t2"),
                ("run01/test/item01.png", b"x1"),
                ("run01/test/item02.png", b"x2"),
            ],
        );
        let runs = load_runs(&path).expect("runs");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].training.len(), 2);
        assert_eq!(runs[0].answers[0], ("run01/test/item01.png".into(), "run01/training/class02.png".into()));

        zip_with(&path, &[("run01/class_labels.txt", b"run01/test/item09.png run01/training/class01.png\n")]);
        assert!(load_runs(&path).is_err());
    }
}
