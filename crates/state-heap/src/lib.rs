//! # state-heap: the copy-on-write heap keyed state backend
//!
//! All keyed state lives in memory, organised as Flink's
//! `HashMapStateBackend` organises it (a `StateTable` of one
//! `CopyOnWriteStateMap` per key group):
//!
//! * `table`: per registered state and key group of the backend's range, a
//!   power-of-two number of hash-table pages of at most 1792 entries, keyed
//!   by the composite key `varint(len(key)) ++ key ++ namespace` (`key`).
//!   Each page is shared with snapshots through an `Arc` and copied on the
//!   first write to it after a snapshot (copy-on-write per page, so a write
//!   stalls for at most one page's copy). Map state stores an
//!   ordered user map per entry (`user_map`); everything else stores bytes
//!   (`bytes`), inline when small, lists in the list encoding so reads
//!   return them as they are and appends extend them.
//! * `backend`: [`HeapKeyedStateBackend`], the
//!   [`KeyedStateBackend`](state_api::KeyedStateBackend) implementation. The
//!   current key's key group is computed once per `set_current_key`; reads
//!   and in-place updates of small entries do not allocate, and short keys
//!   are copied and compared without libc calls (`state_api::short_bytes`).
//! * `snapshot`: the synchronous phase clones one `Arc` per page (about one
//!   per thousand entries) and never reads an entry; writes made afterwards
//!   copy the page they touch and never reach the snapshot.
//!   The asynchronous phase writes the key-group format of
//!   [`state_api::format::key_groups`], which every backend restores.
//! * `restore` and `factory`: [`HeapBackendFactory`] builds backends and
//!   restores key-group snapshots taken at any parallelism, reading only the
//!   backend's key groups and checking every restored key's key group.
//!
//! ```
//! use state_api::{KeyGroupRange, KeyedStateBackendExt, ListStateDescriptor};
//! use state_heap::HeapKeyedStateBackend;
//!
//! let mut backend = HeapKeyedStateBackend::new("op", 128, KeyGroupRange::all(128)?)?;
//! let events = backend.list_state(ListStateDescriptor::<String>::new("events"))?;
//! backend.set_key("user-1")?;
//! events.add(&mut backend, &"login".to_string())?;
//! assert_eq!(events.get(&mut backend)?, vec!["login".to_string()]);
//! # Ok::<(), state_api::StateError>(())
//! ```

mod backend;
mod bytes;
mod factory;
mod key;
mod restore;
mod snapshot;
mod table;
mod timers;
mod ttl;
mod user_map;

pub use backend::{BACKEND_NAME, HeapKeyedStateBackend};
pub use factory::HeapBackendFactory;
