//! Finding checkpoints and savepoints below a directory (`statectl list`).
//! Single locations open with
//! [`RestoreSource::open`](state_storage::restore::RestoreSource::open).

use state_api::{Result, StateError};
use state_storage::layout::{self, METADATA_FILE_NAME};
use state_storage::{CompletedCheckpoint, ObjectStoreCheckpointStorage};

/// One completed checkpoint or savepoint found by [`list`].
pub struct Listed {
    /// Its metadata.
    pub metadata: CompletedCheckpoint,
    /// Its directory relative to the listed directory (`chk-3`,
    /// `job-1/chk-3`, `savepoint-ab12cd-…`).
    pub path: String,
}

/// What [`list`] found.
#[derive(Default)]
pub struct Listing {
    /// Completed checkpoints and savepoints, in path order.
    pub snapshots: Vec<Listed>,
    /// `chk-<n>` and `savepoint-…` directories without `_metadata` (in
    /// progress, failed or aborted).
    pub incomplete: Vec<String>,
    /// Directories whose `_metadata` does not decode, or that cannot be
    /// read, and why.
    pub unreadable: Vec<(String, String)>,
}

/// How deep [`list`] looks below the given directory: a checkpoint base
/// directory holds job directories holding `chk-<n>`; a directory above
/// `checkpoints/` and `savepoints/` holds those.
const MAX_DEPTH: usize = 3;

/// Lists the checkpoints and savepoints in `dir` and below it (up to three
/// levels: a checkpoint base directory, a job directory, a directory of
/// savepoints, a savepoint directory, or a directory holding those).
/// `progress(done, total)` is called per top-level directory. Damaged or
/// unreadable entries are reported, not fatal.
///
/// # Errors
/// As [`ObjectStoreCheckpointStorage::open_dir`]; listing failures of
/// `dir` itself.
pub fn list(dir: &str, progress: &mut dyn FnMut(usize, usize)) -> Result<Listing> {
    let storage = ObjectStoreCheckpointStorage::open_dir(dir)?;
    let mut listing = Listing::default();
    if visit(&storage, None, ".", &mut listing) {
        return Ok(listing); // the directory is itself a savepoint
    }
    let dirs = storage.list_dirs()?;
    for (done, path) in dirs.iter().enumerate() {
        progress(done + 1, dirs.len());
        scan(&storage, path, 1, &mut listing);
    }
    Ok(listing)
}

/// Records the snapshot in directory `path` (`None`: the root); whether
/// there was one (or a damaged one).
fn visit(
    storage: &ObjectStoreCheckpointStorage,
    path: Option<&str>,
    shown: &str,
    listing: &mut Listing,
) -> bool {
    let metadata = path.map_or_else(
        || METADATA_FILE_NAME.to_string(),
        |p| format!("{p}/{METADATA_FILE_NAME}"),
    );
    match read_metadata(storage, &metadata) {
        Ok(Some(metadata)) => {
            listing.snapshots.push(Listed {
                metadata,
                path: shown.to_string(),
            });
            true
        }
        Ok(None) => false,
        Err(e) => {
            listing.unreadable.push((shown.to_string(), e.to_string()));
            true
        }
    }
}

fn scan(storage: &ObjectStoreCheckpointStorage, path: &str, depth: usize, listing: &mut Listing) {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name == layout::SHARED_DIR || name == layout::TASK_OWNED_DIR {
        return;
    }
    if visit(storage, Some(path), path, listing) {
        return;
    }
    if layout::parse_checkpoint_dir(name).is_some()
        || name.starts_with(layout::SAVEPOINT_DIR_PREFIX)
    {
        listing.incomplete.push(path.to_string());
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    match storage.list_dirs_in(Some(path)) {
        Ok(children) => {
            for child in children {
                scan(storage, &child, depth + 1, listing);
            }
        }
        Err(e) => listing.unreadable.push((path.to_string(), e.to_string())),
    }
}

fn read_metadata(
    storage: &ObjectStoreCheckpointStorage,
    relative: &str,
) -> Result<Option<CompletedCheckpoint>> {
    match storage.get_object(relative) {
        Ok(bytes) => CompletedCheckpoint::decode(relative, &bytes).map(Some),
        Err(StateError::FileNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
