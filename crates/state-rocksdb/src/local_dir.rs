//! Local working directories and their owners.
//!
//! Each backend works in a fresh directory `<local dir>/<name>`, owned
//! through a lock file beside it, `<name>.owner`, that the process holds
//! locked while it lives (the OS releases the lock when the process dies,
//! however it dies). The lock file is created before the directory and
//! removed after it, so a directory never exists without its lock file and
//! a process killed at any moment leaves something the next sweep
//! recognizes:
//!
//! | killed while | left behind | the sweep |
//! |---|---|---|
//! | creating the lock file | `<name>.owner.new`, unlocked | removes it |
//! | between lock file and directory | `<name>.owner` | removes it |
//! | working, or removing the directory | `<name>.owner` and (part of) `<name>` | removes both, lock file last |
//! | after removing the directory | `<name>.owner` | removes it |
//!
//! A lock that can be taken belongs to a process that is gone. Entries
//! without a lock file are not a backend's and stay, except directories of
//! the earlier layout (lock file `owner.lock` inside), swept the same way.

use std::path::{Path, PathBuf};

use state_api::Result;

use crate::backend::local_error;

/// Suffix of a working directory's lock file, beside the directory.
const OWNER_SUFFIX: &str = ".owner";
/// Suffix of a lock file being created (locked, then renamed).
const NEW_SUFFIX: &str = ".new";
/// The lock file inside a working directory, in the layout before the lock
/// moved beside it.
const LEGACY_OWNER_LOCK: &str = "owner.lock";

/// A local directory removed (recursively) when dropped: a backend's
/// working directory ([`LocalDir::create`]) or a temporary directory inside
/// one ([`LocalDir::adopt`]).
#[derive(Debug)]
pub(crate) struct LocalDir {
    path: PathBuf,
    /// The locked lock file of a working directory: held while the process
    /// lives, released by the OS when it dies.
    owner: Option<std::fs::File>,
}

impl LocalDir {
    /// Creates `path` as a backend's working directory, owned by this
    /// process (see the module docs).
    ///
    /// # Errors
    /// [`StateError::Backend`](state_api::StateError::Backend) when the
    /// directory or its lock file cannot be created.
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        let parent = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| local_error("create directory", parent, e))?;
        let lock = with_suffix(&path, OWNER_SUFFIX);
        // Locked under a temporary name, then renamed: the lock file never
        // exists unlocked while its owner lives, so a sweep cannot take it.
        // A sweep may take the temporary file in the instant before it is
        // locked; the rename then fails and creation starts over.
        let temporary = with_suffix(&lock, NEW_SUFFIX);
        let mut attempt = 0;
        let owner = loop {
            attempt += 1;
            let owner = std::fs::File::create(&temporary)
                .map_err(|e| local_error("create lock file", &temporary, e))?;
            owner.try_lock().map_err(|e| {
                local_error("lock", &temporary, std::io::Error::other(e.to_string()))
            })?;
            match std::fs::rename(&temporary, &lock) {
                Ok(()) => break owner,
                Err(_) if attempt < 3 => continue,
                Err(e) => return Err(local_error("rename", &lock, e)),
            }
        };
        std::fs::create_dir(&path).map_err(|e| local_error("create directory", &path, e))?;
        Ok(Self {
            path,
            owner: Some(owner),
        })
    }

    /// Takes charge of `path`, inside a working directory, without creating
    /// it (RocksDB will).
    pub(crate) fn adopt(path: PathBuf) -> Self {
        Self { path, owner: None }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory wastes disk but loses nothing,
        // and the next sweep removes a working directory's rest.
        if self.owner.is_some() {
            let _ = remove_owned_dir(&self.path);
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Removes a working directory, then its lock file.
fn remove_owned_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_file(with_suffix(dir, OWNER_SUFFIX)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether the lock file at `path` exists and can be locked: its owner is
/// gone.
fn abandoned(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|file| file.try_lock().is_ok())
}

/// Removes what backends of processes that are gone (killed, crashed) left
/// in `local_dir` (see the module docs). Directories of live backends, of
/// this process or another, stay locked; entries without a lock file are
/// not a backend's and stay too. Returns how many working directories and
/// stray lock files were removed. Best effort: errors are skipped.
pub(crate) fn sweep_abandoned(local_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(local_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let swept = if let Some(dir) = name.strip_suffix(OWNER_SUFFIX) {
            abandoned(&path) && remove_owned_dir(&local_dir.join(dir)).is_ok()
        } else if name.ends_with(&format!("{OWNER_SUFFIX}{NEW_SUFFIX}")) {
            abandoned(&path) && std::fs::remove_file(&path).is_ok()
        } else {
            let legacy = path.join(LEGACY_OWNER_LOCK);
            abandoned(&legacy) && std::fs::remove_dir_all(&path).is_ok()
        };
        removed += usize::from(swept);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a process killed at any moment leaves is swept; live
    /// directories and foreign entries stay.
    #[test]
    fn every_leftover_of_a_killed_process_is_swept() {
        let local = tempfile::tempdir().unwrap();
        let root = local.path();
        let live = LocalDir::create(root.join("op-live")).unwrap();
        std::fs::write(live.path().join("CURRENT"), b"x").unwrap();
        // Killed while working: directory and lock file (unlocked).
        std::fs::create_dir_all(root.join("op-dead/db")).unwrap();
        std::fs::write(root.join("op-dead/db/000012.sst"), [0u8; 64]).unwrap();
        std::fs::write(root.join("op-dead.owner"), b"").unwrap();
        // Killed before creating the directory, or after removing it.
        std::fs::write(root.join("op-gone.owner"), b"").unwrap();
        // Killed while creating the lock file.
        std::fs::write(root.join("op-new.owner.new"), b"").unwrap();
        // The earlier layout: the lock file inside.
        std::fs::create_dir_all(root.join("op-legacy")).unwrap();
        std::fs::write(root.join("op-legacy/owner.lock"), b"").unwrap();
        // Not a backend's.
        std::fs::create_dir_all(root.join("foreign")).unwrap();
        std::fs::write(root.join("foreign-file"), b"").unwrap();

        assert_eq!(sweep_abandoned(root), 4);
        let mut left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["foreign", "foreign-file", "op-live", "op-live.owner"]
        );
        assert!(live.path().join("CURRENT").exists());

        drop(live);
        let left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn adopted_directories_are_removed_without_a_lock() {
        let local = tempfile::tempdir().unwrap();
        let dir = local.path().join("restore-0");
        std::fs::create_dir_all(&dir).unwrap();
        drop(LocalDir::adopt(dir.clone()));
        assert!(!dir.exists());
    }
}
