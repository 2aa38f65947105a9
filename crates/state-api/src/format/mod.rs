//! Snapshot file formats shared by all backends.
//!
//! [`key_groups`] is the full-snapshot format: the heap backend's checkpoints,
//! full RocksDB snapshots and canonical savepoints all use it, so a snapshot
//! written by one backend restores into any other.
//!
//! [`elements`] is the file of length-prefixed elements that operator
//! state and channel state files use.
//!
//! [`evolving`] is how every stored structure is encoded (and the policy
//! that keeps old files readable); [`v1`] keeps version 1 readable.

pub mod elements;
pub mod evolving;
pub mod key_groups;
pub mod v1;
