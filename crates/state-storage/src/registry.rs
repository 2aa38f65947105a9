//! Reference tracking of shared files.
//!
//! Incremental checkpoints reference files in `shared/` that earlier
//! checkpoints uploaded. A shared file may be deleted only once no retained
//! checkpoint references it. The registry maps each shared file to the set
//! of retained checkpoints that use it; it is rebuilt from the retained
//! checkpoints' metadata on open, so it never needs to be stored itself
//! (the literal reference counting of Flink's 2018 design, with sets
//! instead of counters so registering a checkpoint twice is harmless).

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::CompletedCheckpoint;

/// Shared file path (relative to the job directory) → ids of the retained
/// checkpoints referencing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedStateRegistry {
    references: BTreeMap<String, BTreeSet<u64>>,
}

impl SharedStateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `checkpoint` references each of its shared files.
    pub fn register(&mut self, checkpoint: &CompletedCheckpoint) {
        for file in checkpoint.shared_files() {
            self.references
                .entry(file.path.clone())
                .or_default()
                .insert(checkpoint.checkpoint_id);
        }
    }

    /// Drops the references of `checkpoint` and returns the shared files no
    /// retained checkpoint references any more (to delete), in path order.
    pub fn unregister(&mut self, checkpoint: &CompletedCheckpoint) -> Vec<String> {
        let mut unused = Vec::new();
        for file in checkpoint.shared_files() {
            if let Some(users) = self.references.get_mut(&file.path) {
                users.remove(&checkpoint.checkpoint_id);
                if users.is_empty() {
                    self.references.remove(&file.path);
                    unused.push(file.path.clone());
                }
            }
        }
        unused
    }

    /// The retained checkpoints referencing `path`, ascending; empty for an
    /// unknown path.
    pub fn references(&self, path: &str) -> Vec<u64> {
        self.references
            .get(path)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether any retained checkpoint references `path`.
    pub fn is_referenced(&self, path: &str) -> bool {
        self.references.contains_key(path)
    }

    /// Every referenced shared file, in path order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.references.keys().map(String::as_str)
    }

    /// Number of referenced shared files.
    pub fn len(&self) -> usize {
        self.references.len()
    }

    /// Whether no shared file is referenced.
    pub fn is_empty(&self) -> bool {
        self.references.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use state_api::StateScope;

    use super::*;
    use crate::metadata::CheckpointKind;
    use crate::metadata::tests::{file, handle};

    fn checkpoint(id: u64, shared: &[&str]) -> CompletedCheckpoint {
        let handles = shared
            .iter()
            .map(|p| handle(id, file(p, StateScope::Shared, 1)))
            .chain([handle(
                id,
                file(&format!("chk-{id}/x"), StateScope::Exclusive, 1),
            )])
            .collect();
        CompletedCheckpoint::new("job", id, 0, CheckpointKind::Checkpoint)
            .with_operator("op", handles)
    }

    #[test]
    fn files_are_unused_after_their_last_user_goes() {
        let mut registry = SharedStateRegistry::new();
        let one = checkpoint(1, &["shared/a", "shared/b"]);
        let two = checkpoint(2, &["shared/b", "shared/c"]);
        registry.register(&one);
        registry.register(&two);
        assert_eq!(registry.references("shared/b"), [1, 2]);
        assert_eq!(registry.len(), 3);
        assert!(!registry.is_referenced("chk-1/x"));

        assert_eq!(registry.unregister(&one), ["shared/a"]);
        assert_eq!(registry.references("shared/b"), [2]);
        assert_eq!(registry.unregister(&two), ["shared/b", "shared/c"]);
        assert!(registry.is_empty());
        // Unregistering again finds nothing to delete.
        assert!(registry.unregister(&two).is_empty());
    }

    #[test]
    fn registering_twice_is_harmless() {
        let mut registry = SharedStateRegistry::new();
        let one = checkpoint(1, &["shared/a"]);
        registry.register(&one);
        registry.register(&one);
        assert_eq!(registry.unregister(&one), ["shared/a"]);
        assert_eq!(registry.paths().count(), 0);
    }
}
