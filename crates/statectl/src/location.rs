//! What a location on the command line names: a checkpoint (`<job
//! dir>/chk-<n>`), a savepoint directory, either's `_metadata`, or a
//! directory to list.

use state_api::{Result, StateError};
use state_storage::layout::{self, METADATA_FILE_NAME};
use state_storage::restore::RestoreSource;
use state_storage::{CheckpointKind, CompletedCheckpoint, ObjectStoreCheckpointStorage};

/// A checkpoint or savepoint, opened.
pub type Snapshot = RestoreSource;

/// `"checkpoint"` or `"savepoint"`.
pub fn kind_name(kind: CheckpointKind) -> &'static str {
    match kind {
        CheckpointKind::Checkpoint => "checkpoint",
        CheckpointKind::Savepoint => "savepoint",
    }
}

/// Opens the checkpoint or savepoint at `location` (see
/// [`RestoreSource::open`]).
///
/// # Errors
/// As [`RestoreSource::open`].
pub fn open(location: &str) -> Result<Snapshot> {
    RestoreSource::open(location)
}

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
    /// `chk-<n>` directories without `_metadata` (in progress or failed).
    pub incomplete: Vec<String>,
}

/// Lists the checkpoints and savepoints in `dir`: a job directory
/// (`chk-<n>/`), a savepoint directory (`savepoint-…/`), a directory of
/// savepoints, or a checkpoint base directory holding job directories (one
/// level down). `progress(done, total)` is called per directory read.
///
/// # Errors
/// As [`ObjectStoreCheckpointStorage::open_dir`]; [`StateError::Corrupt`]
/// for a `_metadata` that does not decode; storage errors.
pub fn list(dir: &str, progress: &mut dyn FnMut(usize, usize)) -> Result<Listing> {
    let storage = ObjectStoreCheckpointStorage::open_dir(dir)?;
    let mut listing = Listing::default();
    if let Some(metadata) = read_metadata(&storage, METADATA_FILE_NAME)? {
        // The directory is itself a savepoint.
        listing.snapshots.push(Listed {
            metadata,
            path: ".".into(),
        });
        return Ok(listing);
    }
    let dirs = storage.list_dirs()?;
    for (done, name) in dirs.iter().enumerate() {
        progress(done + 1, dirs.len());
        if name == layout::SHARED_DIR || name == layout::TASK_OWNED_DIR {
            continue;
        }
        if layout::parse_checkpoint_dir(name).is_some() {
            collect(&storage, name, name, &mut listing)?;
            continue;
        }
        let metadata_path = format!("{name}/{METADATA_FILE_NAME}");
        if let Some(metadata) = read_metadata(&storage, &metadata_path)? {
            listing.snapshots.push(Listed {
                metadata,
                path: name.clone(),
            });
            continue;
        }
        // A job directory below a checkpoint base directory.
        let inner = ObjectStoreCheckpointStorage::open_dir(&format!(
            "{}/{name}",
            dir.trim_end_matches('/')
        ))?;
        for checkpoint_dir in inner.list_dirs()? {
            if layout::parse_checkpoint_dir(&checkpoint_dir).is_some() {
                collect(
                    &inner,
                    &checkpoint_dir,
                    &format!("{name}/{checkpoint_dir}"),
                    &mut listing,
                )?;
            }
        }
    }
    Ok(listing)
}

fn collect(
    storage: &ObjectStoreCheckpointStorage,
    checkpoint_dir: &str,
    shown: &str,
    listing: &mut Listing,
) -> Result<()> {
    let path = format!("{checkpoint_dir}/{METADATA_FILE_NAME}");
    match read_metadata(storage, &path)? {
        Some(metadata) => listing.snapshots.push(Listed {
            metadata,
            path: shown.to_string(),
        }),
        None => listing.incomplete.push(shown.to_string()),
    }
    Ok(())
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
