//! The conformance suite every backend and wrapper runs (feature
//! `conformance`).
//!
//! Not a stable API: it changes with the contracts it checks.

use crate::error::Result;
use crate::snapshot::FileHandle;

/// Damages stored checkpoint files, so the suite can check that restores fail
/// with a clear error instead of panicking or losing data. Implemented by
/// checkpoint storage implementations for their tests.
pub trait FaultInjector: Send + Sync {
    /// Flips every bit of the byte at `payload_offset` of the stored file.
    ///
    /// # Errors
    /// Storage errors.
    fn corrupt_byte(&self, file: &FileHandle, payload_offset: u64) -> Result<()>;

    /// Cuts the stored object to its first `keep_bytes` bytes (counting the
    /// whole stored object, including any framing).
    ///
    /// # Errors
    /// Storage errors.
    fn truncate(&self, file: &FileHandle, keep_bytes: u64) -> Result<()>;

    /// Deletes the stored file.
    ///
    /// # Errors
    /// Storage errors.
    fn remove(&self, file: &FileHandle) -> Result<()>;
}
