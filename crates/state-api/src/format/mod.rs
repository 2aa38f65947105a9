//! Snapshot file formats shared by all backends.
//!
//! [`key_groups`] is the full-snapshot format: the heap backend's checkpoints,
//! full RocksDB snapshots and canonical savepoints all use it, so a snapshot
//! written by one backend restores into any other.

pub mod key_groups;
