//! State time-to-live, as Flink's `StateTtlConfig`: entries expire a fixed
//! time after they were written (or read), and are never returned or
//! snapshotted once expired.
//!
//! TTL is set on a descriptor (`with_ttl`) of any kind and applies per
//! value, per list element and per map entry. The typed handles stamp every
//! stored value with its last-access time (8 bytes, big-endian ms, before
//! the value bytes, as Flink's `TtlValue`), check it on every read and
//! clean up what they find expired; backends clean up entries nobody reads
//! (see each backend's docs). The stamp is part of the stored bytes, so
//! snapshots, savepoints and change logs carry it and a restore or a replay
//! never refreshes it.
//!
//! Whether a state has TTL is recorded in its [`StateMeta`](crate::StateMeta)
//! ([`TtlMeta`]): restoring with another time to live works (the new one
//! applies from then on), restoring with TTL turned on or off fails with an
//! error naming the state, since the stored bytes are laid out differently.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use state_api::ttl::{ManualClock, StateTtlConfig};
//! use state_api::{KeyGroupRange, KeyedStateBackendExt, ValueStateDescriptor};
//! # fn demo(backend: &mut dyn state_api::KeyedStateBackend) -> state_api::Result<()> {
//! let clock = Arc::new(ManualClock::new(0));
//! let ttl = StateTtlConfig::new(Duration::from_secs(10)).with_clock(clock.clone());
//! let last_seen = backend.value_state(ValueStateDescriptor::<u64>::new("last-seen").with_ttl(ttl))?;
//! backend.set_key(&1u64)?;
//! last_seen.update(backend, &7)?;
//! clock.advance(Duration::from_secs(9));
//! assert_eq!(last_seen.value(backend)?, Some(7));
//! clock.advance(Duration::from_secs(1));
//! assert_eq!(last_seen.value(backend)?, None); // expired, and cleaned up
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub(crate) mod access;

use crate::descriptor::StateFunction;
use crate::error::{Result, StateError};

/// Bytes of the last-access stamp before every stored value.
pub const STAMP_LEN: usize = 8;

/// Where "now" comes from (Flink's `TtlTimeProvider`).
pub trait TtlClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl TtlClock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The system clock read at most every [`CoarseClock::RESOLUTION`]: one
/// atomic load per read instead of a system call (the default clock: a
/// time to live is seconds or more, and state accesses read the clock once
/// or twice each). A process-wide thread, started on first use, refreshes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock;

impl CoarseClock {
    /// How stale a read may be, at most (plus scheduling delays).
    pub const RESOLUTION: Duration = Duration::from_millis(5);

    fn now() -> &'static AtomicI64 {
        static NOW: std::sync::OnceLock<&'static AtomicI64> = std::sync::OnceLock::new();
        NOW.get_or_init(|| {
            let now: &'static AtomicI64 = Box::leak(Box::new(AtomicI64::new(SystemClock.now_ms())));
            let spawned = std::thread::Builder::new()
                .name("ttl-clock".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Self::RESOLUTION);
                        now.store(SystemClock.now_ms(), Ordering::Relaxed);
                    }
                });
            if spawned.is_err() {
                // No thread: the time stays where it was. Better stale
                // expiry than none: fall back to the precise clock.
                now.store(i64::MIN, Ordering::Relaxed);
            }
            now
        })
    }
}

impl TtlClock for CoarseClock {
    #[inline]
    fn now_ms(&self) -> i64 {
        match Self::now().load(Ordering::Relaxed) {
            i64::MIN => SystemClock.now_ms(),
            now => now,
        }
    }
}

/// A clock that moves only when told to (tests, benchmarks, replays).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self(AtomicI64::new(now_ms))
    }

    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            })
            .ok();
    }
}

impl TtlClock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// When the last-access stamp is refreshed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TtlUpdateType {
    /// On every write (Flink's default `OnCreateAndWrite`).
    #[default]
    OnCreateAndWrite,
    /// On every write and every read that finds the entry alive.
    OnReadAndWrite,
}

/// Whether reads may return expired entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TtlVisibility {
    /// Never (Flink's default).
    #[default]
    NeverReturnExpired,
    /// An expired entry read before clean-up removed it is returned once,
    /// and removed.
    ReturnExpiredIfNotCleanedUp,
}

/// How expired entries nobody reads are removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlCleanup {
    /// Heap: entries (buckets) of the state checked per access to it
    /// (Flink's `cleanupIncrementally(5, false)`; the heap backend checks
    /// eight accesses' share every eighth access); 0 turns it off.
    pub incremental_entries: usize,
    /// Heap: also check `incremental_entries` on every record (every
    /// `set_current_key`), not only on accesses to the state.
    pub incremental_on_every_record: bool,
    /// Full snapshots and savepoints leave expired entries out.
    pub full_snapshot: bool,
    /// RocksDB: a compaction filter drops expired entries from the files
    /// compactions rewrite.
    pub compaction_filter: bool,
    /// RocksDB: files older than this are compacted even when no other
    /// compaction would touch them (`None`: the time to live itself), so
    /// expired entries are gone within about twice the time to live.
    pub periodic_compaction: Option<Duration>,
}

impl Default for TtlCleanup {
    fn default() -> Self {
        Self {
            incremental_entries: 5,
            incremental_on_every_record: false,
            full_snapshot: true,
            compaction_filter: true,
            periodic_compaction: None,
        }
    }
}

/// The time to live of a state. See the [module docs](self).
#[derive(Clone)]
pub struct StateTtlConfig {
    /// How long an entry lives after its last stamped access.
    pub ttl: Duration,
    /// Which accesses refresh the stamp.
    pub update_type: TtlUpdateType,
    /// Whether expired entries may be read.
    pub visibility: TtlVisibility,
    /// How unread expired entries go.
    pub cleanup: TtlCleanup,
    clock: Arc<dyn TtlClock>,
}

impl fmt::Debug for StateTtlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateTtlConfig")
            .field("ttl", &self.ttl)
            .field("update_type", &self.update_type)
            .field("visibility", &self.visibility)
            .field("cleanup", &self.cleanup)
            .finish_non_exhaustive()
    }
}

impl StateTtlConfig {
    /// Entries live `ttl` after their last write, expired ones are never
    /// returned, on the system clock (read through [`CoarseClock`]), with
    /// the default clean-up.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            update_type: TtlUpdateType::default(),
            visibility: TtlVisibility::default(),
            cleanup: TtlCleanup::default(),
            clock: Arc::new(CoarseClock),
        }
    }

    /// Sets which accesses refresh the stamp.
    pub fn with_update_type(mut self, update_type: TtlUpdateType) -> Self {
        self.update_type = update_type;
        self
    }

    /// Sets whether expired entries may be read.
    pub fn with_visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Sets the clean-up strategies.
    pub fn with_cleanup(mut self, cleanup: TtlCleanup) -> Self {
        self.cleanup = cleanup;
        self
    }

    /// Uses `clock` for "now".
    pub fn with_clock(mut self, clock: Arc<dyn TtlClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, on the configured clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The time to live in ms.
    pub fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether an entry stamped at `stamp` is expired at `now` (as Flink:
    /// `stamp + ttl <= now`, the sum saturating).
    #[inline]
    pub fn is_expired(&self, stamp: i64, now: i64) -> bool {
        stamp.saturating_add(self.ttl_ms()) <= now
    }

    /// What the state's metadata records.
    pub fn meta(&self) -> TtlMeta {
        TtlMeta {
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// What a state's metadata records about its TTL: that its stored values
/// carry a stamp, and the time to live it was written with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlMeta {
    /// The time to live in ms.
    pub ttl_ms: u64,
}

/// Appends `bytes` stamped with `stamp` to `out`.
#[inline]
pub fn stamp_into(out: &mut Vec<u8>, stamp: i64, bytes: &[u8]) {
    out.reserve(STAMP_LEN + bytes.len());
    out.extend_from_slice(&stamp.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `bytes` stamped with `stamp`.
#[inline]
pub fn stamped(stamp: i64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STAMP_LEN + bytes.len());
    stamp_into(&mut out, stamp, bytes);
    out
}

/// The stamp and the value bytes of a stored value; `None` if it is shorter
/// than a stamp.
#[inline]
pub fn split_stamp(stored: &[u8]) -> Option<(i64, &[u8])> {
    let (stamp, value) = stored.split_at_checked(STAMP_LEN)?;
    Some((i64::from_be_bytes(stamp.try_into().ok()?), value))
}

/// The error for a stored value of a TTL state without its stamp.
#[cold]
pub fn missing_stamp(location: &str) -> StateError {
    StateError::corrupt(
        location,
        "a value of a state with a time to live has no last-access stamp",
    )
}

/// The stamp and value of `stored`, or a corruption error.
///
/// # Errors
/// [`StateError::Corrupt`] when `stored` is shorter than a stamp.
#[inline]
pub fn unstamp(stored: &[u8]) -> Result<(i64, &[u8])> {
    split_stamp(stored).ok_or_else(|| missing_stamp("<state value>"))
}

/// What of a stored value of a state of `kind` with time to live `ttl` is
/// alive at `now`: all of it (borrowed), nothing (`None`), or, for a list
/// some of whose elements expired, the live elements. Malformed values are
/// kept whole (reads report them). Backends use it to leave expired
/// entries out of snapshots and to clean them up.
pub fn alive_part<'v>(
    kind: crate::StateKind,
    ttl: &StateTtlConfig,
    now: i64,
    stored: &'v [u8],
) -> Option<std::borrow::Cow<'v, [u8]>> {
    use std::borrow::Cow;
    let expired =
        |bytes: &[u8]| split_stamp(bytes).is_some_and(|(stamp, _)| ttl.is_expired(stamp, now));
    if kind != crate::StateKind::List {
        return (!expired(stored)).then_some(Cow::Borrowed(stored));
    }
    let mut alive = Vec::new();
    let mut dropped = false;
    for element in crate::codec::ListElements::new(stored) {
        match element {
            Ok(element) if expired(element) => dropped = true,
            Ok(element) => crate::codec::write_len_prefixed(&mut alive, element),
            Err(_) => return Some(Cow::Borrowed(stored)),
        }
    }
    match (dropped, alive.is_empty()) {
        (false, _) => Some(Cow::Borrowed(stored)),
        (true, true) => None,
        (true, false) => Some(Cow::Owned(alive)),
    }
}

/// A fold function over stamped accumulators: an expired accumulator
/// counts as none, and the result is stamped with now (reducing and
/// aggregating states with TTL).
pub(crate) struct TtlFunction {
    pub(crate) inner: Arc<dyn StateFunction>,
    pub(crate) ttl: StateTtlConfig,
}

impl StateFunction for TtlFunction {
    fn add(&self, accumulator: Option<&[u8]>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let now = self.ttl.now_ms();
        let alive = match accumulator {
            Some(stored) => {
                let (stamp, value) = unstamp(stored)?;
                (!self.ttl.is_expired(stamp, now)).then_some(value)
            }
            None => None,
        };
        let mut folded = Vec::new();
        self.inner.add(alive, input, &mut folded)?;
        stamp_into(out, now, &folded);
        Ok(())
    }

    fn merge(&self, a: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let now = self.ttl.now_ms();
        let (stamp_a, a) = unstamp(a)?;
        let (stamp_b, b) = unstamp(b)?;
        let alive_a = !self.ttl.is_expired(stamp_a, now);
        let alive_b = !self.ttl.is_expired(stamp_b, now);
        match (alive_a, alive_b) {
            (true, true) => {
                let mut merged = Vec::new();
                self.inner.merge(a, b, &mut merged)?;
                stamp_into(out, stamp_a.max(stamp_b), &merged);
            }
            (true, false) => stamp_into(out, stamp_a, a),
            (false, true) => stamp_into(out, stamp_b, b),
            // Both expired: keep the later one; reads and clean-up drop it.
            (false, false) if stamp_a >= stamp_b => stamp_into(out, stamp_a, a),
            (false, false) => stamp_into(out, stamp_b, b),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_expiry_saturates() {
        let stored = stamped(-5, b"value");
        assert_eq!(split_stamp(&stored), Some((-5, &b"value"[..])));
        assert_eq!(split_stamp(b"short"), None);
        let ttl = StateTtlConfig::new(Duration::from_millis(10));
        assert!(!ttl.is_expired(100, 109));
        assert!(ttl.is_expired(100, 110));
        assert!(!ttl.is_expired(i64::MAX, i64::MAX - 1), "no overflow");
    }

    #[test]
    fn the_coarse_clock_follows_the_system_clock() {
        let coarse = CoarseClock.now_ms();
        let precise = SystemClock.now_ms();
        assert!((precise - coarse).abs() < 1_000, "{coarse} vs {precise}");
    }

    #[test]
    fn the_manual_clock_moves_when_told() {
        let clock = ManualClock::new(5);
        clock.advance(Duration::from_millis(10));
        assert_eq!(clock.now_ms(), 15);
        clock.set(1);
        assert_eq!(clock.now_ms(), 1);
    }
}
