//! Checkpoint storage on `object_store` (work in progress).
