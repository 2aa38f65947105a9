//! How the typed handles read and write the stamped values of states with a
//! time to live: expiry on read (the expired entry is removed, and
//! returned only with [`TtlVisibility::ReturnExpiredIfNotCleanedUp`]), the
//! stamp refreshed on write (and on read with
//! [`TtlUpdateType::OnReadAndWrite`]), per value, per list element and per
//! map entry.

use std::ops::ControlFlow;

use super::{STAMP_LEN, StateTtlConfig, TtlUpdateType, TtlVisibility, unstamp};
use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{InlineBytes, ListElements, write_len_prefixed};
use crate::error::Result;

impl StateTtlConfig {
    fn returns_expired(&self) -> bool {
        self.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp
    }

    fn refreshes_on_read(&self) -> bool {
        self.update_type == TtlUpdateType::OnReadAndWrite
    }
}

/// `bytes` stamped with `now`, inline for small values.
fn stamp_inline(now: i64, bytes: &[u8]) -> InlineBytes {
    let mut out = InlineBytes::with_capacity(STAMP_LEN + bytes.len());
    out.extend_from_slice(&now.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Encodes `value` after a stamp of now, on the stack for small values
/// (the hot path of `ValueState::update` with a time to live: one copy
/// less than stamping encoded bytes).
pub(crate) fn put_value<B: KeyedStateBackend + ?Sized, V: serde::Serialize + ?Sized>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    value: &V,
) -> Result<()> {
    let mut buffer = [0u8; 72];
    let (stamp, rest) = buffer.split_at_mut(STAMP_LEN);
    stamp.copy_from_slice(&ttl.now_ms().to_be_bytes());
    match postcard::to_slice(value, rest) {
        Ok(encoded) => {
            let len = STAMP_LEN + encoded.len();
            backend.put(id, namespace, &buffer[..len])
        }
        Err(postcard::Error::SerializeBufferFull) => {
            let encoded = crate::codec::encode(value)?;
            put(backend, ttl, id, namespace, &encoded)
        }
        Err(e) => Err(crate::StateError::codec("encode", e)),
    }
}

/// Writes `encoded` stamped with now (value, reducing and aggregating
/// state).
pub(crate) fn put<B: KeyedStateBackend + ?Sized>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    encoded: &[u8],
) -> Result<()> {
    backend.put(id, namespace, &stamp_inline(ttl.now_ms(), encoded))
}

/// What a read of one stamped value found.
enum Found<T> {
    /// Alive; nothing to write.
    Alive(T),
    /// Alive, and to be written back with this fresh stamp.
    Restamp(T, InlineBytes),
    /// Expired: to be removed; returned only if expired ones are visible.
    Expired(T),
}

/// Checks and decodes stamped `stored` at `now` (one place for the rules
/// of single values and map entries).
fn check<T>(
    ttl: &StateTtlConfig,
    now: i64,
    stored: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<Found<T>> {
    let (stamp, value) = unstamp(stored)?;
    if ttl.is_expired(stamp, now) {
        return decode(value).map(Found::Expired);
    }
    if !ttl.refreshes_on_read() {
        // The common case: decoded in place, nothing written.
        return decode(value).map(Found::Alive);
    }
    let restamped = stamp_inline(now, value);
    Ok(Found::Restamp(decode(value)?, restamped))
}

/// Reads and decodes a single stamped value; `None` when absent or expired
/// (expired ones are cleared).
pub(crate) fn get<B: KeyedStateBackend + ?Sized, T>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<Option<T>> {
    let now = ttl.now_ms();
    let Some(stored) = backend.get(id, namespace)? else {
        return Ok(None);
    };
    match check(ttl, now, stored, decode)? {
        Found::Alive(value) => Ok(Some(value)),
        Found::Restamp(value, restamped) => {
            backend.put(id, namespace, &restamped)?;
            Ok(Some(value))
        }
        Found::Expired(value) => {
            backend.clear(id, namespace)?;
            Ok(ttl.returns_expired().then_some(value))
        }
    }
}

/// Frames each element of `encoded` (the list encoding) stamped with now.
pub(crate) fn stamp_list(ttl: &StateTtlConfig, elements: &[&[u8]]) -> Vec<u8> {
    let now = ttl.now_ms();
    let mut out = Vec::new();
    for element in elements {
        write_len_prefixed(&mut out, &stamp_inline(now, element));
    }
    out
}

/// Reads a list of stamped elements and decodes the ones to return; the
/// expired ones are removed from the stored list (and the rest restamped
/// on read when configured).
pub(crate) fn get_list<B: KeyedStateBackend + ?Sized, T>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    mut decode: impl FnMut(&[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    let now = ttl.now_ms();
    let Some(stored) = backend.get(id, namespace)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut kept = Vec::new();
    let mut changed = ttl.refreshes_on_read();
    for element in ListElements::new(stored) {
        let (stamp, value) = unstamp(element?)?;
        if ttl.is_expired(stamp, now) {
            changed = true;
            if ttl.returns_expired() {
                out.push(decode(value)?);
            }
            continue;
        }
        out.push(decode(value)?);
        let stamp = if ttl.refreshes_on_read() { now } else { stamp };
        write_len_prefixed(&mut kept, &stamp_inline(stamp, value));
    }
    if changed {
        // An empty list clears the entry.
        backend.put(id, namespace, &kept)?;
    }
    Ok(out)
}

/// Reads one stamped map entry; `None` when absent or expired (expired ones
/// are removed).
pub(crate) fn map_get<B: KeyedStateBackend + ?Sized, T>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    user_key: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<Option<T>> {
    let now = ttl.now_ms();
    let Some(stored) = backend.map_get(id, namespace, user_key)? else {
        return Ok(None);
    };
    match check(ttl, now, stored, decode)? {
        Found::Alive(value) => Ok(Some(value)),
        Found::Restamp(value, restamped) => {
            backend.map_put(id, namespace, user_key, &restamped)?;
            Ok(Some(value))
        }
        Found::Expired(value) => {
            backend.map_remove(id, namespace, user_key)?;
            Ok(ttl.returns_expired().then_some(value))
        }
    }
}

/// Writes one map entry stamped with now.
pub(crate) fn map_put<B: KeyedStateBackend + ?Sized>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    user_key: &[u8],
    encoded: &[u8],
) -> Result<()> {
    let stamped = stamp_inline(ttl.now_ms(), encoded);
    backend.map_put(id, namespace, user_key, &stamped)
}

/// Visits the map's entries that are to be returned, removing the expired
/// ones (and restamping the rest on read when configured).
pub(crate) fn map_entries<B: KeyedStateBackend + ?Sized>(
    backend: &mut B,
    ttl: &StateTtlConfig,
    id: StateId,
    namespace: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let now = ttl.now_ms();
    let mut expired: Vec<Vec<u8>> = Vec::new();
    let mut restamped: Vec<(Vec<u8>, InlineBytes)> = Vec::new();
    backend.map_for_each(id, namespace, &mut |user_key, stored| {
        let (stamp, value) = unstamp(stored)?;
        if ttl.is_expired(stamp, now) {
            expired.push(user_key.to_vec());
            if ttl.returns_expired() {
                visit(user_key, value)?;
            }
        } else {
            visit(user_key, value)?;
            if ttl.refreshes_on_read() {
                restamped.push((user_key.to_vec(), stamp_inline(now, value)));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    for user_key in expired {
        backend.map_remove(id, namespace, &user_key)?;
    }
    for (user_key, stored) in restamped {
        backend.map_put(id, namespace, &user_key, &stored)?;
    }
    Ok(())
}
