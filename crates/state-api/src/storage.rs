//! What backends need from checkpoint storage.
//!
//! Backends write snapshot files through [`CheckpointStorageAccess`] and read
//! them back on restore; they never see object-store paths, credentials or
//! runtimes. The `state-storage` crate implements this on the `object_store`
//! crate (local disk, memory, S3, GCS, Azure).
//!
//! The calls are blocking: the asynchronous snapshot phase already runs off
//! the task thread, and blocking calls keep the backends independent of any
//! async runtime.
//!
//! # Contract
//! * A file is written once through a [`CheckpointOutputStream`] and becomes
//!   visible only when [`close`](CheckpointOutputStream::close) returns its
//!   [`FileHandle`]; a stream dropped without `close` leaves no readable file.
//! * [`read`](CheckpointStorageAccess::read) MUST verify the handle's size and
//!   CRC-32C and fail with [`StateError::Corrupt`](crate::StateError::Corrupt)
//!   on any difference, or [`StateError::FileNotFound`](crate::StateError::FileNotFound).
//! * [`read_range`](CheckpointStorageAccess::read_range) reads part of a file
//!   without verifying the whole; formats that read ranges carry their own
//!   block checksums.

use std::io::Write;
use std::ops::Range;

use bytes::Bytes;

use crate::error::{Result, StateError};
use crate::snapshot::{FileHandle, StateScope};

/// Blocking access to checkpoint storage for snapshot writing and restore.
pub trait CheckpointStorageAccess: Send + Sync {
    /// Opens a new file for checkpoint `checkpoint_id` in `scope`. The name
    /// is chosen by the storage (unique); `name_hint` becomes part of it.
    ///
    /// # Errors
    /// [`StateError::Storage`](crate::StateError::Storage) when the storage
    /// cannot start the upload.
    fn create_output(
        &self,
        checkpoint_id: u64,
        scope: StateScope,
        name_hint: &str,
    ) -> Result<Box<dyn CheckpointOutputStream>>;

    /// Reads a whole file, verifying its size and checksum.
    ///
    /// # Errors
    /// [`StateError::FileNotFound`](crate::StateError::FileNotFound),
    /// [`StateError::Corrupt`](crate::StateError::Corrupt),
    /// [`StateError::Storage`](crate::StateError::Storage).
    fn read(&self, file: &FileHandle) -> Result<Bytes>;

    /// Reads bytes `range` of a file's payload. The range must lie within
    /// the handle's size.
    ///
    /// # Errors
    /// As [`read`](Self::read); [`StateError::Corrupt`](crate::StateError::Corrupt)
    /// for a range beyond the handle's size or a file shorter than the handle says.
    fn read_range(&self, file: &FileHandle, range: Range<u64>) -> Result<Bytes>;

    /// Deletes a file; deleting a missing file is not an error.
    ///
    /// # Errors
    /// [`StateError::Storage`](crate::StateError::Storage).
    fn delete(&self, file: &FileHandle) -> Result<()>;

    /// Where this storage points (a URL or path), for messages.
    fn location(&self) -> String;
}

/// A file being written to checkpoint storage.
pub trait CheckpointOutputStream: Write + Send {
    /// Bytes written so far (the offset of the next byte).
    fn position(&self) -> u64;

    /// Finishes the file and makes it visible.
    ///
    /// # Errors
    /// [`StateError::Storage`](crate::StateError::Storage) when the upload fails.
    fn close(self: Box<Self>) -> Result<FileHandle>;
}

/// Attempts of [`write_with_retries`] in all.
pub const FILE_WRITE_ATTEMPTS: u32 = 4;

/// Runs `write` (which writes one or more whole files and returns their
/// handles) again when it fails with [`StateError::Storage`], up to
/// [`FILE_WRITE_ATTEMPTS`] times with a growing pause (50 ms, 100 ms, ...).
///
/// Storages retry single requests themselves; this covers what they cannot
/// repeat, such as a multipart upload whose part failed. `write` must start
/// over with new files each time (a failed output stream leaves nothing
/// readable). Other errors (corrupt local data, a cancelled snapshot) are
/// returned at once.
///
/// ```
/// use state_api::{StateError, storage::write_with_retries};
/// let mut calls = 0;
/// let result = write_with_retries(|| {
///     calls += 1;
///     if calls < 2 { Err(StateError::storage("put", "f", "flaky")) } else { Ok(calls) }
/// });
/// assert_eq!(result.unwrap(), 2);
/// ```
///
/// # Errors
/// The last error.
pub fn write_with_retries<T>(mut write: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match write() {
            Err(StateError::Storage { .. }) if attempt < FILE_WRITE_ATTEMPTS => {
                std::thread::sleep(std::time::Duration::from_millis(50 << (attempt - 1)));
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `_`, so
/// names such as operator names can go into file and directory names
/// without adding path segments.
///
/// ```
/// assert_eq!(state_api::storage::file_name_safe("a/b c"), "a_b_c");
/// ```
pub fn file_name_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::file_name_safe;

    #[test]
    fn file_names_are_sanitized() {
        assert_eq!(file_name_safe("map-1.x_y"), "map-1.x_y");
        assert_eq!(file_name_safe("a/b c\\..é"), "a_b_c_.._");
    }
}
