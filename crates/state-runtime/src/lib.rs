//! The checkpoint protocol around the keyed state backends, as a library a
//! stream runtime embeds (Flink's checkpoint coordinator, barriers and
//! barrier alignment):
//!
//! * [`coordinator`]: triggers checkpoints on Flink's schedule, collects the
//!   tasks' acknowledgements, commits completed checkpoints through the
//!   completed-checkpoint store (resolving unclear commits by reading back)
//!   and tells tasks the outcome, through a transport-agnostic
//!   [`TaskGateway`](coordinator::TaskGateway);
//! * [`barrier`]: the barriers that travel with the records and their
//!   options (aligned, unaligned, at least once, alignment timeout);
//! * [`input`]: the barrier handler of a task with several input channels,
//!   a state machine that says when to snapshot, which channels to block
//!   and which in-flight records to persist;
//! * [`channel`]: in-process bounded channels with back-pressure, whose
//!   barriers can overtake queued records;
//! * [`channel_state`]: the in-flight records of unaligned checkpoints,
//!   persisted and recovered (re-routed by key group at another
//!   parallelism);
//! * [`operator_state`]: non-keyed state of sources and sinks (list state
//!   split or unioned, broadcast state).
//!
//! # Embedding it
//! One source and one downstream task in a single thread, driven by hand
//! where a runtime would use threads and RPC:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use parking_lot::Mutex;
//! use state_runtime::CheckpointBarrier;
//! use state_runtime::channel::{InputGate, Received};
//! use state_runtime::coordinator::{
//!     CheckpointConfig, CheckpointCoordinator, CheckpointEvent, Notification, TaskGateway,
//!     TaskId, TaskSnapshot,
//! };
//! use state_runtime::input::{BarrierHandler, HandlerAction};
//! use state_storage::{CompletedCheckpointStore, ObjectStoreCheckpointStorage};
//!
//! /// Triggers wait here for the source (a runtime would send an RPC).
//! #[derive(Clone, Default)]
//! struct Inbox(Arc<Mutex<Vec<CheckpointBarrier>>>);
//!
//! impl TaskGateway for Inbox {
//!     fn trigger(&mut self, _task: &TaskId, barrier: CheckpointBarrier) {
//!         self.0.lock().push(barrier);
//!     }
//!     fn notify(&mut self, task: &TaskId, notification: Notification) {
//!         // A task passes it on to its backends' notify_checkpoint_* calls.
//!         println!("{task}: {notification:?}");
//!     }
//! }
//!
//! let storage = Arc::new(ObjectStoreCheckpointStorage::in_memory("job")?);
//! let store = CompletedCheckpointStore::open(storage, 1)?;
//! let inbox = Inbox::default();
//! let (source, counter) = (TaskId::new("source", 0), TaskId::new("counter", 0));
//! let mut coordinator = CheckpointCoordinator::new(
//!     CheckpointConfig::every(Duration::from_secs(1)),
//!     "job",
//!     [source.clone(), counter.clone()],
//!     [source.clone()],
//!     store,
//!     Box::new(inbox.clone()),
//! )?;
//! coordinator.start(Duration::ZERO, Duration::from_secs(1));
//!
//! let (gate, senders) = InputGate::<u64>::new(1, 64);
//! let mut handler = BarrierHandler::new(1);
//! let now = Duration::from_secs(1);
//! coordinator.tick(now); // checkpoint 1 is triggered at the source
//! for record in 0..10 {
//!     senders[0].send(record).unwrap();
//! }
//! let triggered: Vec<CheckpointBarrier> = inbox.0.lock().drain(..).collect();
//! for barrier in triggered {
//!     // The source snapshots (its offset), acknowledges, emits the barrier.
//!     coordinator.acknowledge(&source, barrier.id, TaskSnapshot::default(), Default::default(), now);
//!     senders[0].send_barrier(barrier).unwrap();
//! }
//! let mut sum = 0;
//! let mut completed = Vec::new();
//! while let Some((channel, item)) = gate.recv(|c| !handler.is_blocked(c), Some(Instant::now())) {
//!     match item {
//!         Received::Record(value) => sum += value,
//!         Received::Barrier { barrier, .. } => {
//!             for action in handler.on_barrier(channel, &barrier, now) {
//!                 if let HandlerAction::Trigger(trigger) = action {
//!                     // Snapshot the keyed backends here; acknowledge with
//!                     // their handles once the asynchronous phase is done.
//!                     completed.extend(coordinator.acknowledge(
//!                         &counter,
//!                         trigger.barrier.id,
//!                         TaskSnapshot::default(),
//!                         Default::default(),
//!                         now,
//!                     ));
//!                 }
//!             }
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(sum, 45);
//! assert!(matches!(&completed[..], [CheckpointEvent::Completed(c)] if c.id == 1));
//! assert_eq!(coordinator.store().latest().unwrap().checkpoint_id, 1);
//! # Ok::<(), state_api::StateError>(())
//! ```

pub mod barrier;
pub mod channel;
pub mod channel_state;
pub mod coordinator;
pub mod input;
pub mod operator_state;

pub use barrier::{AlignmentType, CheckpointBarrier, CheckpointOptions, CheckpointingMode};

/// Writes `bytes` as one exclusive file of checkpoint `checkpoint_id`,
/// starting over on storage errors ([`state_api::storage::write_with_retries`]).
fn write_exclusive(
    storage: &dyn state_api::CheckpointStorageAccess,
    checkpoint_id: u64,
    name_hint: &str,
    bytes: &[u8],
) -> state_api::Result<state_api::FileHandle> {
    use std::io::Write as _;
    state_api::storage::write_with_retries(|| {
        let mut out =
            storage.create_output(checkpoint_id, state_api::StateScope::Exclusive, name_hint)?;
        out.write_all(bytes)
            .map_err(|e| state_api::StateError::storage("write", name_hint.to_string(), e))?;
        out.close()
    })
}
