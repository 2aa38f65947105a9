//! Timers: event-time and processing-time timers on (key, namespace,
//! timestamp), held by the keyed backend with the rest of the keyed state.
//!
//! As in Flink, a timer belongs to the key that was current when it was
//! registered, so it lives in that key's key group: it is snapshotted with
//! it, moves with it when the job rescales, and goes into savepoints. A
//! [`TimerService`] holds two timer states of the backend,
//! `_timer_state/event_<name>` and `_timer_state/processing_<name>`
//! ([`StateKind::Timers`]), and fires their timers in timestamp order when
//! the watermark or the processing clock passes them, with the timer's key
//! as the current key.
//!
//! # The backend contract
//! * A timer is identified by (key, namespace, timestamp): adding one that
//!   exists changes nothing ([`KeyedStateBackend::timer_add`] returns
//!   `false`), so a timer fires once however often it was registered.
//! * [`KeyedStateBackend::timer_poll`] removes and returns the earliest
//!   timer over all key groups of the backend. Timers with equal timestamps
//!   come in the same order on every backend: by key group, then by key
//!   (its length, then its bytes), then by namespace bytes
//!   ([`same_time_order`]).
//! * In key-group files and change logs a timer state has the form of a map
//!   state: per (key, namespace) one entry per timer, whose user key is
//!   [`encode_timestamp`] of its timestamp and whose value is empty. Byte
//!   order of the encoded timestamps is time order.
//! * [`map_for_each`](KeyedStateBackend::map_for_each) on a timer state
//!   visits the current key's timers in a namespace in that form, and
//!   [`for_each_key_and_namespace`](KeyedStateBackend::for_each_key_and_namespace)
//!   every (key, namespace) with a timer, so dumps see timers like any state.
//!   The other state operations reject a timer state.
//!
//! ```
//! # fn demo(backend: &mut dyn state_api::KeyedStateBackend) -> state_api::Result<()> {
//! use state_api::KeyedStateBackendExt;
//! use state_api::timers::TimerService;
//!
//! let mut timers = TimerService::<u64>::register(backend, "windows")?;
//! backend.set_key("user-1")?;
//! timers.register_event_time_timer(backend, &7, 1_000)?;
//! timers.register_event_time_timer(backend, &7, 1_000)?; // the same timer
//! let fired = timers.advance_watermark(backend, 1_000, |backend, timer| {
//!     assert_eq!(backend.current_key_as::<String>()?, "user-1");
//!     assert_eq!((timer.timestamp, timer.namespace), (1_000, 7));
//!     Ok(())
//! })?;
//! assert_eq!(fired, 1);
//! # Ok(()) }
//! ```

use std::any::type_name;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode, with_encoded};
use crate::descriptor::{StateKind, StateMeta, StateRegistration};
use crate::error::{Result, StateError};

/// The prefix of the names of timer states.
pub const TIMER_STATE_PREFIX: &str = "_timer_state/";

/// The value type recorded in a timer state's [`StateMeta`].
pub const TIMER_VALUE_TYPE: &str = "timer";

/// The 8 bytes a timestamp is stored as: big-endian with the sign bit
/// flipped, so that byte order is time order (as Flink's `TimerSerializer`).
///
/// ```
/// use state_api::timers::{decode_timestamp, encode_timestamp};
/// assert!(encode_timestamp(-1) < encode_timestamp(0));
/// assert_eq!(decode_timestamp(&encode_timestamp(i64::MIN)), Some(i64::MIN));
/// ```
#[inline]
pub fn encode_timestamp(timestamp: i64) -> [u8; 8] {
    ((timestamp as u64) ^ (1 << 63)).to_be_bytes()
}

/// The timestamp [`encode_timestamp`] wrote; `None` unless `bytes` is 8
/// bytes long.
#[inline]
pub fn decode_timestamp(bytes: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// The error for a stored timer whose timestamp is not 8 bytes.
#[cold]
pub fn malformed_timestamp(location: &str) -> StateError {
    StateError::corrupt(location, "a timer's timestamp is not 8 bytes long")
}

/// A timer as a backend returns it from
/// [`timer_poll`](KeyedStateBackend::timer_poll).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it fires (ms; event time or processing time).
    pub timestamp: i64,
    /// The encoded key it was registered under.
    pub key: Vec<u8>,
    /// The encoded namespace.
    pub namespace: Vec<u8>,
}

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches its timestamp.
    EventTime,
    /// Fires when the processing clock reaches its timestamp.
    ProcessingTime,
}

/// A timer being fired: the current key is its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredTimer<N> {
    /// Its timestamp.
    pub timestamp: i64,
    /// Its namespace.
    pub namespace: N,
    /// Its clock.
    pub domain: TimeDomain,
}

/// Event-time and processing-time timers of one operator, in a namespace
/// type `N`, stored in the keyed backend. See the [module docs](self).
#[derive(Debug)]
pub struct TimerService<N = crate::VoidNamespace> {
    event: StateId,
    processing: StateId,
    watermark: i64,
    _namespace: PhantomData<fn() -> N>,
}

/// The registration of timer state `name` with namespaces of `namespace_type`.
pub fn timer_state_registration(name: String, namespace_type: &str) -> StateRegistration {
    StateRegistration::of(StateMeta {
        name,
        kind: StateKind::Timers,
        namespace_type: namespace_type.to_string(),
        value_type: TIMER_VALUE_TYPE.to_string(),
        user_key_type: None,
        ttl: None,
    })
}

impl<N: Serialize + DeserializeOwned> TimerService<N> {
    /// Registers (or re-opens, after a restore) the timer states of service
    /// `name`. The watermark starts at `i64::MIN`: like Flink, the service
    /// does not snapshot it; the first watermark after a restore fires
    /// every timer it passed.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`]: the name was restored with
    /// another namespace type.
    pub fn register<B: KeyedStateBackend + ?Sized>(backend: &mut B, name: &str) -> Result<Self> {
        let namespace_type = type_name::<N>();
        let event = backend.register_state(timer_state_registration(
            format!("{TIMER_STATE_PREFIX}event_{name}"),
            namespace_type,
        ))?;
        let processing = backend.register_state(timer_state_registration(
            format!("{TIMER_STATE_PREFIX}processing_{name}"),
            namespace_type,
        ))?;
        Ok(Self {
            event,
            processing,
            watermark: i64::MIN,
            _namespace: PhantomData,
        })
    }

    /// The ids of its timer states (event time, processing time), e.g. to
    /// dump them.
    pub fn state_ids(&self) -> [StateId; 2] {
        [self.event, self.processing]
    }

    /// The last watermark [`advance_watermark`](Self::advance_watermark)
    /// reached.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    fn state(&self, domain: TimeDomain) -> StateId {
        match domain {
            TimeDomain::EventTime => self.event,
            TimeDomain::ProcessingTime => self.processing,
        }
    }

    /// Sets a timer for the current key at `timestamp` in `namespace`;
    /// returns whether it is new.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`]; codec and backend errors.
    pub fn register_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        let state = self.state(domain);
        with_encoded(namespace, |ns| backend.timer_add(state, ns, timestamp))
    }

    /// Deletes the current key's timer at `timestamp` in `namespace`;
    /// returns whether there was one.
    ///
    /// # Errors
    /// As [`register_timer`](Self::register_timer).
    pub fn delete_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        let state = self.state(domain);
        with_encoded(namespace, |ns| backend.timer_remove(state, ns, timestamp))
    }

    /// [`register_timer`](Self::register_timer) in event time.
    ///
    /// # Errors
    /// As [`register_timer`](Self::register_timer).
    pub fn register_event_time_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.register_timer(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`delete_timer`](Self::delete_timer) in event time.
    ///
    /// # Errors
    /// As [`register_timer`](Self::register_timer).
    pub fn delete_event_time_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.delete_timer(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`register_timer`](Self::register_timer) in processing time.
    ///
    /// # Errors
    /// As [`register_timer`](Self::register_timer).
    pub fn register_processing_time_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.register_timer(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// [`delete_timer`](Self::delete_timer) in processing time.
    ///
    /// # Errors
    /// As [`register_timer`](Self::register_timer).
    pub fn delete_processing_time_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        self.delete_timer(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// When the earliest timer of `domain` fires (a runtime arms its
    /// processing-time wake-up with it).
    ///
    /// # Errors
    /// Backend errors.
    pub fn next_timer<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
    ) -> Result<Option<i64>> {
        backend.timer_peek(self.state(domain))
    }

    /// Advances the watermark to `watermark` and fires every event-time
    /// timer at or before it, in order, with its key as the current key;
    /// timers that `on_timer` registers at or before the watermark fire in
    /// the same call. Returns how many fired. A watermark below the current
    /// one changes nothing.
    ///
    /// # Errors
    /// `on_timer`'s error stops the firing (the timer that failed is gone,
    /// as in Flink, where the failure fails the task); backend and codec
    /// errors.
    pub fn advance_watermark<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        watermark: i64,
        on_timer: impl FnMut(&mut B, FiredTimer<N>) -> Result<()>,
    ) -> Result<u64> {
        if watermark < self.watermark {
            return Ok(0);
        }
        self.watermark = watermark;
        fire(
            backend,
            self.event,
            TimeDomain::EventTime,
            watermark,
            on_timer,
        )
    }

    /// Fires every processing-time timer at or before `now`, as
    /// [`advance_watermark`](Self::advance_watermark) does for event time.
    ///
    /// # Errors
    /// As [`advance_watermark`](Self::advance_watermark).
    pub fn advance_processing_time<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        now: i64,
        on_timer: impl FnMut(&mut B, FiredTimer<N>) -> Result<()>,
    ) -> Result<u64> {
        fire(
            backend,
            self.processing,
            TimeDomain::ProcessingTime,
            now,
            on_timer,
        )
    }
}

fn fire<B: KeyedStateBackend + ?Sized, N: DeserializeOwned>(
    backend: &mut B,
    state: StateId,
    domain: TimeDomain,
    up_to: i64,
    mut on_timer: impl FnMut(&mut B, FiredTimer<N>) -> Result<()>,
) -> Result<u64> {
    let mut fired = 0;
    while let Some(timer) = backend.timer_poll(state, up_to)? {
        backend.set_current_key(&timer.key)?;
        let namespace = decode(&timer.namespace)?;
        on_timer(
            backend,
            FiredTimer {
                timestamp: timer.timestamp,
                namespace,
                domain,
            },
        )?;
        fired += 1;
    }
    Ok(fired)
}

/// The order [`timer_poll`](KeyedStateBackend::timer_poll) returns timers
/// with equal timestamps in, within one key group, given (key, namespace)
/// of each: the key by length, then by bytes, then the namespace by bytes.
///
/// ```
/// use std::cmp::Ordering;
/// use state_api::timers::same_time_order;
/// assert_eq!(same_time_order((b"b", b""), (b"aa", b"")), Ordering::Less);
/// assert_eq!(same_time_order((b"a", b"2"), (b"a", b"10")), Ordering::Greater);
/// ```
#[inline]
pub fn same_time_order(a: (&[u8], &[u8]), b: (&[u8], &[u8])) -> std::cmp::Ordering {
    (a.0.len(), a.0, a.1).cmp(&(b.0.len(), b.0, b.1))
}
