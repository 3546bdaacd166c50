//! A new directory written whole or not at all: filled in a hidden temporary sibling (removed
//! on any error or panic by `tempfile`), then renamed into place. A half-written data set is
//! never mistaken for a whole one, and an existing directory is never touched.

use std::path::Path;

use anyhow::{Context, Result, ensure};

/// Creates `out` (which must not exist) with what `fill` writes into the directory it is given.
pub fn write_new_dir<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    ensure!(!out.exists(), "{} already exists: choose a new directory", out.display());
    let name = out.file_name().with_context(|| format!("{} has no directory name", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.tmp-", name.to_string_lossy()))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let value = fill(staging.path())?;
    std::fs::rename(staging.path(), out)
        .with_context(|| format!("cannot move {} to {}", staging.path().display(), out.display()))?;
    // Renamed: nothing is left at the temporary path for the guard to remove.
    let _ = staging.keep();
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("set");
        let n = write_new_dir(&out, |tmp| Ok(std::fs::write(tmp.join("a"), "1").map(|()| 7)?)).expect("written");
        assert_eq!((n, std::fs::read_to_string(out.join("a")).expect("read")), (7, "1".to_string()));
        assert!(write_new_dir(&out, |_| Ok(())).is_err(), "an existing directory is refused");
        let failed = dir.path().join("failed");
        let err = write_new_dir(&failed, |tmp| -> Result<()> {
            std::fs::write(tmp.join("half"), "x")?;
            anyhow::bail!("stopped half-way")
        });
        assert!(err.is_err() && !failed.exists());
        let left: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, ["set"], "no staging directory is left behind");
    }
}
