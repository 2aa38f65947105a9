//! The state schedules write: every kind of state
//! ([`StandardStates`]), and its canonical contents ([`Dump`]) as the model
//! a restored backend is compared with.

use state_api::conformance::{Dump, StandardStates, dump};
use state_api::{KeyedStateBackend, KeyedStateBackendExt, Result};

/// Writes the initial entries of keys `0..keys`.
///
/// # Panics
/// When a write fails.
pub fn populate(backend: &mut dyn KeyedStateBackend, keys: u64) -> StandardStates {
    let mut states = StandardStates::register(backend);
    for key in 0..keys {
        states.populate(backend, key);
    }
    states
}

/// One change to `key`: an update, a list clear, a map put, a fold or a
/// windowed update, chosen by `key` and `round`.
///
/// # Errors
/// The backend's errors.
pub fn change(
    backend: &mut dyn KeyedStateBackend,
    states: &mut StandardStates,
    key: u64,
    round: u64,
) -> Result<()> {
    backend.set_key(&key)?;
    match (key + round) % 5 {
        0 => states.value.update(backend, &(key * 7 + round)),
        1 => states.list.clear(backend),
        2 => states.map.put(backend, &42, &format!("v{key}-{round}")),
        3 => states.sum.add(backend, &3),
        _ => {
            states.windowed.set_namespace(&(round % 4))?;
            states.windowed.update(backend, &round)
        }
    }
}

/// The backend's contents, registering the standard states on it first
/// (a restored backend knows them only as restored).
pub fn contents(backend: &mut dyn KeyedStateBackend) -> Dump {
    let states = StandardStates::register(backend);
    dump(backend, &states.ids())
}
