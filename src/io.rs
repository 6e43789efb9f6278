//! Durable, atomic file writes: the one way the crate (and its examples) write files.
//!
//! [`AtomicFile`] writes into a temporary file of a unique name in the target's folder; only
//! [`AtomicFile::commit`] makes it the target, after every byte was written and synced to disk
//! (`sync_all`), by a rename followed by a sync of the folder. Until then the target keeps its
//! previous content, whatever happens: an error (a full disk, a quota, a file-size limit), a
//! crash, or another process or thread writing the same target (each writer has its own
//! temporary file, named with the process id and a process-wide counter). A writer dropped
//! without a commit removes its temporary file. [`write_atomic`] does all of it for bytes held
//! in memory.
//!
//! ```
//! use std::io::Write;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("numbers.txt");
//! burn_qnn::io::write_atomic(&path, b"1 2 3")?;
//!
//! let mut file = burn_qnn::io::AtomicFile::create(&path)?;
//! file.write_all(b"4 5 6")?;
//! // Not committed yet: the target still holds the previous content.
//! assert_eq!(std::fs::read(&path)?, b"1 2 3");
//! file.commit()?;
//! assert_eq!(std::fs::read(&path)?, b"4 5 6");
//! assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temporary files of this process, so that no two writers share one.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temporary name next to its target, which it replaces
/// atomically and durably on [`AtomicFile::commit`]; see the [module documentation](self).
#[derive(Debug)]
pub struct AtomicFile {
    /// Open until committed or dropped.
    file: Option<File>,
    /// The temporary file, in the target's folder.
    temporary: PathBuf,
    /// The file to replace.
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing `target`: creates a new temporary file in its folder (which must exist).
    ///
    /// # Errors
    /// If `target` has no file name or the temporary file cannot be created.
    pub fn create(target: impl AsRef<Path>) -> io::Result<Self> {
        let target = target.as_ref().to_path_buf();
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", target.display()),
            )
        })?;
        loop {
            let temporary = temporary_name(&target, name);
            // `create_new`: a file left behind by a crashed process of the same id is never
            // reused (nor truncated); the next number is tried.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)
            {
                Ok(file) => {
                    return Ok(Self {
                        file: Some(file),
                        temporary,
                        target,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The file this one replaces on [`commit`](Self::commit).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the written bytes to disk, renames the temporary file to the target (replacing
    /// it) and syncs the folder, so that the rename survives a crash too.
    ///
    /// # Errors
    /// If syncing or renaming fails; the temporary file is then removed and the target is
    /// untouched (unless only the folder's sync failed, after the rename).
    pub fn commit(mut self) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            unreachable!("an AtomicFile is open until committed or dropped")
        };
        let result = file.sync_all().and_then(|()| {
            drop(file);
            std::fs::rename(&self.temporary, &self.target)
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&self.temporary);
            return Err(e);
        }
        sync_folder(&self.target)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.open()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.open()?.flush()
    }
}

impl AtomicFile {
    fn open(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file was already committed"))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: best effort, the error that matters is the caller's.
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Writes `bytes` to `path` through an [`AtomicFile`]: afterwards `path` holds exactly `bytes`,
/// synced to disk; on any error it holds what it held before and no temporary file is left.
///
/// # Errors
/// The first error of creating, writing, syncing or renaming the temporary file.
pub fn write_atomic(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes.as_ref())?;
    file.commit()
}

/// `.NAME.PID-N.tmp` next to `target` (whose file name is `name`), `N` this process's next
/// number: no two calls of one process, nor two processes, get the same name.
fn temporary_name(target: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let mut temporary = OsString::from(".");
    temporary.push(name);
    temporary.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    target.with_file_name(temporary)
}

/// Creates a new, empty folder of a unique temporary name next to `target` (a folder to be
/// filled and then renamed to `target`), as [`AtomicFile`] names its files.
#[cfg_attr(not(feature = "download"), allow(dead_code))]
pub(crate) fn create_temporary_dir(target: &Path) -> io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", target.display()),
        )
    })?;
    loop {
        let temporary = temporary_name(target, name);
        match std::fs::create_dir(&temporary) {
            Ok(()) => return Ok(temporary),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Syncs the folder holding `path`, so that a rename into it is durable.
fn sync_folder(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Syncs the folder `dir` (its entries: names created, renamed or removed in it). Only on
/// Unix, where a folder can be opened and synced; file systems that cannot sync a folder are
/// not an error.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir).and_then(|f| f.sync_all()) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers of one target never share a temporary file, and the one committed last wins
    /// with its whole content.
    #[test]
    fn concurrent_writers_have_their_own_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shared.bin");
        let mut first = AtomicFile::create(&target).unwrap();
        let mut second = AtomicFile::create(&target).unwrap();
        assert_ne!(first.temporary, second.temporary);
        first.write_all(&[1; 1000]).unwrap();
        second.write_all(&[2; 10]).unwrap();
        first.write_all(&[1; 1000]).unwrap();
        second.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), [2; 10]);
        first.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), [1; 2000]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A writer dropped before its commit removes its temporary file and leaves the target.
    #[test]
    fn dropped_writer_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("kept.txt");
        write_atomic(&target, "old").unwrap();
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new, never committed").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A stale temporary file of the same name (a crashed process with the same id) is neither
    /// reused nor truncated.
    #[test]
    fn existing_temporary_names_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let next = COUNTER.load(Ordering::Relaxed);
        // Every name the next few writers of this process could take.
        let stale: Vec<PathBuf> = (next..next + 64)
            .map(|n| {
                dir.path()
                    .join(format!(".t.{}-{n}.tmp", std::process::id()))
            })
            .collect();
        for path in &stale {
            std::fs::write(path, "stale").unwrap();
        }
        write_atomic(&target, "fresh").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "fresh");
        let untouched = stale
            .iter()
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|s| s == "stale"))
            .count();
        assert_eq!(untouched, stale.len());
    }

    /// A target in a missing folder is an error, not a panic, and creates nothing.
    #[test]
    fn missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = write_atomic(dir.path().join("absent/file"), "x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
