//! The state schedules write: every kind of state
//! ([`StandardStates`]) and timers, and their canonical contents ([`Dump`])
//! as the model a restored backend is compared with.

use state_api::conformance::{Dump, StandardStates, dump};
use state_api::timers::TimerService;
use state_api::{KeyedStateBackend, KeyedStateBackendExt, Result, StateKind};

/// The name of the schedules' timer service.
pub const TIMERS: &str = "schedule";

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

/// One change to `key`'s timers: a timer at `round` (namespace `round % 3`),
/// the one set three rounds earlier deleted, and every tenth round the
/// timers up to `round - 10` fired (each firing is a removal the backend
/// must persist).
///
/// # Errors
/// The backend's errors.
pub fn change_timers(backend: &mut dyn KeyedStateBackend, key: u64, round: u64) -> Result<()> {
    let mut timers = TimerService::<u64>::register(backend, TIMERS)?;
    backend.set_key(&key)?;
    let at = i64::try_from(round).unwrap_or(i64::MAX);
    timers.register_event_time_timer(backend, &(round % 3), at)?;
    timers.delete_event_time_timer(backend, &(round % 3), at - 3)?;
    if round.is_multiple_of(10) {
        timers.advance_watermark(backend, at - 10, |_, _| Ok(()))?;
    }
    Ok(())
}

/// [`contents`] with the timers of the schedules' timer service.
pub fn contents_with_timers(backend: &mut dyn KeyedStateBackend) -> Result<Dump> {
    let mut all = contents(backend);
    let timers = TimerService::<u64>::register(backend, TIMERS)?;
    let [event, processing] = timers.state_ids();
    all.extend(dump(
        backend,
        &[
            ("event-timers", event, StateKind::Timers),
            ("processing-timers", processing, StateKind::Timers),
        ],
    ));
    Ok(all)
}
