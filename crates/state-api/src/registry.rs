//! The registration rules every backend applies, in one place.
//!
//! A backend keeps its states in a [`StateRegistry`]: states restored from
//! snapshots are listed (and snapshotted again) but not usable until the
//! program registers them; registering a name again must match its kind and
//! types and returns the same id; the latest registration's fold function is
//! the one used. Each entry carries the backend's own part `T` (the heap
//! backend's table, the RocksDB backend's column family name).
//!
//! ```
//! use state_api::registry::StateRegistry;
//! use state_api::{StateRegistration, ValueStateDescriptor};
//!
//! let mut states: StateRegistry<Vec<u8>> = StateRegistry::default();
//! let meta = ValueStateDescriptor::<u64>::new("count").meta().clone();
//! let registration = StateRegistration::of(meta);
//! let id = states.register(registration.clone(), |_| Ok(Vec::new())).unwrap();
//! assert_eq!(states.register(registration, |_| Ok(Vec::new())).unwrap(), id);
//! assert!(states.get(id).is_ok());
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::StateId;
use crate::descriptor::{StateFunction, StateMeta, StateRegistration};
use crate::error::{Result, StateError};
use crate::ttl::StateTtlConfig;

/// One registered or restored state.
pub struct RegisteredState<T> {
    /// Name, kind and types, as registered or restored.
    pub meta: StateMeta,
    /// The fold of reducing and aggregating state; set on registration.
    pub function: Option<Arc<dyn StateFunction>>,
    /// The time to live with its clock and clean-up settings; set on
    /// registration (a restored state knows only `meta.ttl` until then).
    pub ttl: Option<StateTtlConfig>,
    /// Whether `register_state` handed out its id. Restored states stay
    /// inaccessible (and keep their data for the next snapshot) until then.
    pub registered: bool,
    /// The backend's own part.
    pub data: T,
}

/// A backend's states, indexed by [`StateId`] and by name.
pub struct StateRegistry<T> {
    states: Vec<RegisteredState<T>>,
    by_name: HashMap<String, usize>,
}

impl<T> Default for StateRegistry<T> {
    fn default() -> Self {
        Self {
            states: Vec::new(),
            by_name: HashMap::new(),
        }
    }
}

impl<T> StateRegistry<T> {
    /// Registers a state, as
    /// [`KeyedStateBackend::register_state`](crate::KeyedStateBackend::register_state)
    /// describes; `create` builds the backend's part of a state seen for the
    /// first time.
    ///
    /// # Errors
    /// Invalid registrations, kind or type mismatches with the state of
    /// that name, `create`'s errors.
    pub fn register(
        &mut self,
        registration: StateRegistration,
        create: impl FnOnce(&StateMeta) -> Result<T>,
    ) -> Result<StateId> {
        registration.validate()?;
        let StateRegistration {
            meta,
            function,
            ttl,
        } = registration;
        let index = match self.by_name.get(&meta.name).copied() {
            Some(index) => {
                let existing = &mut self.states[index];
                existing.meta.check_compatible(&meta)?;
                // As in Flink, the latest registration's function folds from
                // now on; for a restored state this is its first function.
                existing.function = function;
                // Another time to live applies from now on, and the next
                // snapshot records it.
                existing.meta.ttl = meta.ttl;
                existing.ttl = ttl;
                existing.registered = true;
                index
            }
            None => self.push(meta, function, ttl, true, create)?,
        };
        u32::try_from(index)
            .map(StateId)
            .map_err(|_| StateError::Config {
                key: "states".into(),
                message: "more than u32::MAX states".into(),
            })
    }

    /// Adds a state found in a snapshot, or checks it against the state of
    /// that name already known (from another handle); returns its index.
    ///
    /// # Errors
    /// Kind or type mismatches, `create`'s errors.
    pub fn restore(
        &mut self,
        meta: &StateMeta,
        create: impl FnOnce(&StateMeta) -> Result<T>,
    ) -> Result<usize> {
        match self.by_name.get(&meta.name) {
            Some(&index) => {
                self.states[index].meta.check_compatible(meta)?;
                Ok(index)
            }
            None => self.push(meta.clone(), None, None, false, create),
        }
    }

    fn push(
        &mut self,
        meta: StateMeta,
        function: Option<Arc<dyn StateFunction>>,
        ttl: Option<StateTtlConfig>,
        registered: bool,
        create: impl FnOnce(&StateMeta) -> Result<T>,
    ) -> Result<usize> {
        let data = create(&meta)?;
        let index = self.states.len();
        self.by_name.insert(meta.name.clone(), index);
        self.states.push(RegisteredState {
            meta,
            function,
            ttl,
            registered,
            data,
        });
        Ok(index)
    }

    /// The registered state `id`.
    ///
    /// # Errors
    /// [`StateError::UnknownState`] for ids never handed out.
    #[inline]
    pub fn get(&self, id: StateId) -> Result<&RegisteredState<T>> {
        self.states
            .get(id.0 as usize)
            .filter(|s| s.registered)
            .ok_or_else(|| StateError::UnknownState { state_id: id.0 })
    }

    /// The registered state `id`, for writing.
    ///
    /// # Errors
    /// [`StateError::UnknownState`] for ids never handed out.
    #[inline]
    pub fn get_mut(&mut self, id: StateId) -> Result<&mut RegisteredState<T>> {
        self.states
            .get_mut(id.0 as usize)
            .filter(|s| s.registered)
            .ok_or_else(|| StateError::UnknownState { state_id: id.0 })
    }

    /// The state at `index`, registered or only restored (for restore and
    /// snapshots).
    pub fn by_index_mut(&mut self, index: usize) -> Option<&mut RegisteredState<T>> {
        self.states.get_mut(index)
    }

    /// Every state, registered or only restored, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &RegisteredState<T>> {
        self.states.iter()
    }

    /// Metadata of every state, in id order.
    pub fn metas(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{ListStateDescriptor, ValueStateDescriptor};

    fn registration(meta: &StateMeta) -> StateRegistration {
        StateRegistration::of(meta.clone())
    }

    #[test]
    fn restored_states_are_hidden_until_registered() {
        let mut states: StateRegistry<u8> = StateRegistry::default();
        let meta = ValueStateDescriptor::<u64>::new("v").meta().clone();
        let index = states.restore(&meta, |_| Ok(7)).unwrap();
        assert!(matches!(
            states.get(StateId(index as u32)),
            Err(StateError::UnknownState { .. })
        ));
        assert_eq!(
            states.restore(&meta, |_| Ok(9)).unwrap(),
            index,
            "a second handle maps to the same state"
        );
        let id = states.register(registration(&meta), |_| Ok(1)).unwrap();
        assert_eq!(id, StateId(index as u32));
        assert_eq!(states.get(id).unwrap().data, 7, "the restored data is kept");
    }

    #[test]
    fn mismatches_are_errors() {
        let mut states: StateRegistry<()> = StateRegistry::default();
        let value = ValueStateDescriptor::<u64>::new("s").meta().clone();
        states.register(registration(&value), |_| Ok(())).unwrap();
        let list = ListStateDescriptor::<u64>::new("s").meta().clone();
        assert!(matches!(
            states.register(registration(&list), |_| Ok(())),
            Err(StateError::StateKindMismatch { .. })
        ));
        assert!(states.restore(&list, |_| Ok(())).is_err());
        assert_eq!(states.len(), 1);
    }
}
