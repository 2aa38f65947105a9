//! Committing checkpoints: the checks before the put of `_metadata`, the
//! put, and the resolution of a put whose outcome is unknown.

use bytes::Bytes;
use state_api::{Result, StateError, StateScope};

use super::{CHECKPOINT_ID_KEY, CompletedCheckpointStore, is_in_dir};
use crate::layout;
use crate::metadata::{CompletedCheckpoint, MAX_METADATA_BYTES};

/// A checkpoint whose `_metadata` put failed in a way that may have stored
/// it.
#[derive(Debug)]
pub(super) struct PendingCommit {
    pub(super) checkpoint: CompletedCheckpoint,
    /// The encoded metadata, to compare with what storage holds.
    pub(super) bytes: Bytes,
}

/// The outcome of [`CompletedCheckpointStore::resolve_pending_commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No commit was pending.
    NothingPending,
    /// The checkpoint is committed and retained; tell the backends it
    /// completed and that `subsumed` were subsumed.
    Committed {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Checkpoints the retention removed, ascending.
        subsumed: Vec<u64>,
    },
    /// Another writer committed the id: this checkpoint never will be; tell
    /// the backends it was aborted.
    NotCommitted {
        /// The checkpoint.
        checkpoint_id: u64,
    },
}

impl CompletedCheckpointStore {
    /// Commits `checkpoint`: writes its `_metadata` (create-only), registers
    /// its shared files and subsumes the checkpoints beyond the retention,
    /// deleting their `chk-<n>/` directories and the shared files no
    /// retained checkpoint references. Returns the ids of the subsumed
    /// checkpoints, ascending. Savepoints are never subsumed (see the
    /// [module docs](self#retention)).
    ///
    /// The checkpoint's state files must already be written. Before the
    /// put, `add` checks the id and every file (see the
    /// [module docs](self#commit)); a refused checkpoint leaves the store
    /// and the storage as they were, and the caller should abort it
    /// ([`discard_pending`](Self::discard_pending)). Deletion failures after
    /// the commit do not fail the call; they stay pending, see
    /// [`pending_discards`](Self::pending_discards).
    ///
    /// # Errors
    /// Nothing is committed on any error except
    /// [`StateError::CommitOutcomeUnknown`]:
    /// * [`StateError::CommitOutcomeUnknown`] naming this checkpoint when the
    ///   put of `_metadata` failed after its retries: it may have been
    ///   stored. The checkpoint is then the store's *pending commit*: its
    ///   files are protected, no other checkpoint is added until it is
    ///   resolved ([`resolve_pending_commit`](Self::resolve_pending_commit)),
    ///   and the caller must tell its backends nothing about it yet;
    /// * [`StateError::Config`] with key `checkpoint-id` while an earlier
    ///   commit is pending (resolve it first);
    /// * [`StateError::CheckpointAlreadyExists`] when the id is retained or
    ///   another `_metadata` exists for it already;
    /// * [`StateError::Config`] with key `checkpoint-id` when the id is not
    ///   above the newest retained checkpoint, every pending discard and
    ///   every id this store committed or tried to (ids must increase and
    ///   are never reused);
    /// * [`StateError::Corrupt`] naming a file that lies outside its scope's
    ///   directory (exclusive: this checkpoint's `chk-<n>/`, shared:
    ///   `shared/`, task-owned: `taskowned/`), or whose path is not a
    ///   relative path in the job directory. The handles are inconsistent
    ///   with the layout, as a corrupt `_metadata` would be;
    /// * [`StateError::FileNotFound`] naming a shared file that no retained
    ///   checkpoint references and that does not exist in storage (for
    ///   example reused from a checkpoint subsumed in the meantime);
    /// * [`StateError::Codec`] or [`StateError::Storage`] when a check
    ///   fails.
    pub fn add(&mut self, checkpoint: CompletedCheckpoint) -> Result<Vec<u64>> {
        let id = checkpoint.checkpoint_id;
        if let Some(pending) = self.pending_commit() {
            // Its outcome decides what the retention deletes and what the
            // backends are told: it goes first.
            return Err(StateError::Config {
                key: CHECKPOINT_ID_KEY.into(),
                message: format!(
                    "checkpoint {id} cannot be added while the commit of checkpoint {pending} \
                     has an unknown outcome: resolve it first (resolve_pending_commit)"
                ),
            });
        }
        let path = layout::metadata_path(id);
        let exists = || StateError::CheckpointAlreadyExists {
            checkpoint_id: id,
            path: path.clone(),
        };
        if self.checkpoints.contains_key(&id) {
            return Err(exists());
        }
        self.check_id_increases(id)?;
        self.check_file_locations(&checkpoint)?;
        self.check_shared_files_exist(&checkpoint)?;
        let bytes = Bytes::from(checkpoint.encode()?);
        // From here on the id is used, whatever the put's outcome.
        self.highest_added = Some(self.highest_added.map_or(id, |h| h.max(id)));
        match self.storage.put_object(&path, bytes.clone(), true) {
            Ok(true) => Ok(self.adopt(checkpoint)),
            Ok(false) => Err(exists()),
            Err(source) => {
                // Protect what it references until the outcome is known:
                // a pending discard must not delete a shared file it reuses.
                self.registry.register(&checkpoint);
                self.pending_commit = Some(PendingCommit { checkpoint, bytes });
                Err(StateError::CommitOutcomeUnknown {
                    checkpoint_id: id,
                    source: Box::new(source),
                })
            }
        }
    }

    /// Settles the pending commit, if there is one: reads its `_metadata`
    /// back, and adopts the checkpoint into the store when it holds the
    /// checkpoint's bytes. When there is none, the put is made again
    /// (create-only), so a request still under way cannot store it later
    /// behind the store's back: the outcome becomes *committed* as soon as
    /// storage answers. Only another writer's `_metadata` under the same id
    /// makes it *not committed*.
    ///
    /// Returns the outcome, which the caller passes on to its backends
    /// (complete and subsumed, or aborted), or
    /// [`Resolution::NothingPending`]. [`add`](Self::add) refuses other
    /// checkpoints while a commit is pending; a coordinator calls this
    /// before it adds the next one. A new process needs none of this:
    /// [`open`](Self::open) finds the `_metadata` or not.
    ///
    /// # Errors
    /// [`StateError::CommitOutcomeUnknown`] while storage still fails; the
    /// commit stays pending.
    pub fn resolve_pending_commit(&mut self) -> Result<Resolution> {
        let Some(pending) = self.pending_commit.take() else {
            return Ok(Resolution::NothingPending);
        };
        let id = pending.checkpoint.checkpoint_id;
        let path = layout::metadata_path(id);
        let stored = match self.storage.get_object_at_most(&path, MAX_METADATA_BYTES) {
            Ok(stored) => Ok(stored == pending.bytes),
            Err(StateError::FileNotFound { .. }) => {
                self.storage.put_object(&path, pending.bytes.clone(), true)
            }
            Err(e) => Err(e),
        };
        match stored {
            Ok(true) => Ok(Resolution::Committed {
                checkpoint_id: id,
                subsumed: self.adopt_registered(pending.checkpoint),
            }),
            Ok(false) => {
                // Another writer's metadata holds the id: ours never was.
                let _ = self.registry.unregister(&pending.checkpoint);
                Ok(Resolution::NotCommitted { checkpoint_id: id })
            }
            Err(source) => {
                self.pending_commit = Some(pending);
                Err(StateError::CommitOutcomeUnknown {
                    checkpoint_id: id,
                    source: Box::new(source),
                })
            }
        }
    }

    /// The id of the checkpoint whose commit has an unknown outcome, if any
    /// (see [`resolve_pending_commit`](Self::resolve_pending_commit)).
    pub fn pending_commit(&self) -> Option<u64> {
        self.pending_commit
            .as_ref()
            .map(|p| p.checkpoint.checkpoint_id)
    }

    /// The pending commit's checkpoint, if any.
    pub(crate) fn pending_commit_checkpoint(&self) -> Option<&CompletedCheckpoint> {
        self.pending_commit.as_ref().map(|p| &p.checkpoint)
    }

    /// A committed checkpoint joins the store: registered, retained, and
    /// the retention applied. Returns the subsumed ids.
    fn adopt(&mut self, checkpoint: CompletedCheckpoint) -> Vec<u64> {
        self.registry.register(&checkpoint);
        self.adopt_registered(checkpoint)
    }

    fn adopt_registered(&mut self, checkpoint: CompletedCheckpoint) -> Vec<u64> {
        self.checkpoints
            .insert(checkpoint.checkpoint_id, checkpoint);
        // Earlier failed deletions first (best effort; whatever fails again
        // stays pending), then this checkpoint's subsumption.
        let _ = self.retry_pending_discards();
        self.subsume()
    }

    /// The lowest id [`add`](Self::add) accepts now: above every id the
    /// store retains, is discarding, found damaged or committed (or tried
    /// to). A coordinator starts its ids here.
    pub fn next_checkpoint_id(&self) -> u64 {
        self.id_floor()
            .map_or(1, |(floor, _)| floor.saturating_add(1))
    }

    /// The highest id the store knows, and what it is.
    fn id_floor(&self) -> Option<(u64, &'static str)> {
        let retained = self.checkpoints.keys().next_back().copied();
        let pending = self.pending.iter().map(|d| d.checkpoint_id).max();
        let damaged = self.damaged.keys().next_back().copied();
        let known = [
            (retained, "the newest retained checkpoint"),
            (pending, "a checkpoint whose discard is still pending"),
            (damaged, "a checkpoint whose _metadata is damaged"),
            (
                self.highest_added,
                "the newest checkpoint this store committed",
            ),
        ];
        known
            .into_iter()
            .filter_map(|(known, what)| known.map(|k| (k, what)))
            .max_by_key(|(known, _)| *known)
    }

    /// Refuses an id at or below one the store knows.
    fn check_id_increases(&self, id: u64) -> Result<()> {
        let Some((floor, what)) = self.id_floor() else {
            return Ok(());
        };
        if id > floor {
            return Ok(());
        }
        Err(StateError::Config {
            key: CHECKPOINT_ID_KEY.into(),
            message: format!(
                "checkpoint {id} is not newer than checkpoint {floor}, {what}: checkpoint ids \
                 must increase and are never reused (an older id would be subsumed at once, a \
                 reused one could be deleted by an earlier discard of the same id)"
            ),
        })
    }

    /// Refuses files outside the directory of their scope.
    fn check_file_locations(&self, checkpoint: &CompletedCheckpoint) -> Result<()> {
        let id = checkpoint.checkpoint_id;
        // Every handle's files, not the deduplicated view: a path must not
        // escape its directory under any of the scopes it is claimed with.
        for file in checkpoint.handle_files() {
            // Rejects `..`, empty segments and absolute paths.
            layout::resolve(self.storage.root(), &file.path)?;
            let rule = match file.scope {
                StateScope::Exclusive => match layout::parse_checkpoint_file(&file.path) {
                    Some((owner, false)) if owner == id => None,
                    Some((owner, true)) if owner == id => Some(format!(
                        "'{}' is the commit marker of checkpoint {id}, not a state file",
                        layout::METADATA_FILE_NAME
                    )),
                    _ => Some(format!(
                        "exclusive files must lie in {}/, the directory of the checkpoint \
                         referencing them (another checkpoint's directory is deleted with that \
                         checkpoint)",
                        layout::checkpoint_dir(id)
                    )),
                },
                StateScope::Shared => (!is_in_dir(&file.path, layout::SHARED_DIR)).then(|| {
                    format!(
                        "shared files must lie in {}/ (only there does reference counting \
                         protect them)",
                        layout::SHARED_DIR
                    )
                }),
                StateScope::TaskOwned => {
                    (!is_in_dir(&file.path, layout::TASK_OWNED_DIR)).then(|| {
                        format!(
                            "task-owned files must lie in {}/ (only there are they never \
                             deleted)",
                            layout::TASK_OWNED_DIR
                        )
                    })
                }
            };
            if let Some(rule) = rule {
                return Err(StateError::corrupt(
                    file.path.clone(),
                    format!(
                        "checkpoint {id} references it as a {:?} file, but {rule}",
                        file.scope
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses shared files that no retained checkpoint protects and that
    /// are gone from storage.
    fn check_shared_files_exist(&self, checkpoint: &CompletedCheckpoint) -> Result<()> {
        let unprotected: Vec<String> = checkpoint
            .shared_files()
            .into_iter()
            .filter(|file| !self.registry.is_referenced(&file.path))
            .map(|file| file.path.clone())
            .collect();
        match self
            .storage
            .missing_objects(unprotected)?
            .into_iter()
            .next()
        {
            Some(path) => Err(StateError::FileNotFound { path }),
            None => Ok(()),
        }
    }
}
