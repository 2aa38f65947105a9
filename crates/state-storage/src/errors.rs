//! Mapping `object_store` errors into [`StateError`].

use state_api::StateError;

/// Maps an `object_store` error of `operation` on `path` (relative to the
/// job directory): a missing object becomes [`StateError::FileNotFound`],
/// everything else [`StateError::Storage`] carrying the store's error.
pub(crate) fn from_store(
    operation: &'static str,
    path: &str,
    error: object_store::Error,
) -> StateError {
    match error {
        object_store::Error::NotFound { .. } => StateError::FileNotFound {
            path: path.to_string(),
        },
        other => StateError::storage(operation, path, other),
    }
}
