//! What flows between the job's tasks, and how it is encoded when an
//! unaligned checkpoint persists it as channel state.
//!
//! Record encoding (little endian), version 1 of the job's channel state:
//! * source → keyed operator: `tag (1 = event, 2 = adjustment)`, offset,
//!   key, value, timestamp (33 bytes), with the key group of the key;
//! * keyed operator → sink: window, keys, events (24 bytes), no key group
//!   (the sink always runs as one instance).
//!
//! Watermarks are not channel state: the sources emit newer ones after a
//! restore, and a watermark cannot be re-routed by key group.

use state_api::key_group::assign_to_key_group;
use state_api::{Result, StateError};

use crate::events::Event;
use crate::operator::WindowTotals;

/// Which input stream a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The main stream: counted, aggregated and windowed.
    Events,
    /// The second input: summed per key.
    Adjustments,
}

impl StreamKind {
    /// The job vertex of this stream's source.
    pub fn source_vertex(self) -> &'static str {
        match self {
            StreamKind::Events => "source-events",
            StreamKind::Adjustments => "source-adjustments",
        }
    }

    fn tag(self) -> u8 {
        match self {
            StreamKind::Events => 1,
            StreamKind::Adjustments => 2,
        }
    }
}

/// An element on a source → keyed operator channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyedInput {
    /// A record of one of the two streams.
    Record(StreamKind, Event),
    /// The source's event time: no later record of it is older.
    Watermark(u64),
}

/// Bytes of an encoded [`KeyedInput::Record`].
const RECORD_LEN: usize = 33;
/// Bytes of encoded [`WindowTotals`].
const TOTALS_LEN: usize = 24;
/// How corrupt in-flight records are named in errors.
const CHANNEL_STATE: &str = "channel state";

/// The key group of `key`, as `keyBy` assigns it; `scratch` holds the
/// key's bytes (reused from record to record).
///
/// # Errors
/// Codec errors; an invalid max parallelism.
pub fn key_group_of(key: u64, max_parallelism: u32, scratch: &mut Vec<u8>) -> Result<u32> {
    scratch.clear();
    state_api::codec::encode_into(&key, scratch)?;
    assign_to_key_group(scratch, max_parallelism)
}

impl KeyedInput {
    /// The element as channel state: `None` for a watermark.
    ///
    /// # Errors
    /// An invalid max parallelism.
    pub fn encode(&self, max_parallelism: u32) -> Result<Option<(Option<u32>, Vec<u8>)>> {
        let KeyedInput::Record(kind, event) = self else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(RECORD_LEN);
        bytes.push(kind.tag());
        for field in [event.offset, event.key, event.value, event.timestamp_ms] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        let key_group = key_group_of(event.key, max_parallelism, &mut Vec::new())?;
        Ok(Some((Some(key_group), bytes)))
    }

    /// A record from its channel state bytes.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] for bytes no record encodes to.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != RECORD_LEN {
            return Err(StateError::corrupt(
                CHANNEL_STATE,
                format!("a record of {} bytes, expected {RECORD_LEN}", bytes.len()),
            ));
        }
        let kind = match bytes[0] {
            1 => StreamKind::Events,
            2 => StreamKind::Adjustments,
            tag => {
                return Err(StateError::corrupt(
                    CHANNEL_STATE,
                    format!("unknown record tag {tag}"),
                ));
            }
        };
        let [offset, key, value, timestamp_ms] = words(&bytes[1..]);
        Ok(KeyedInput::Record(
            kind,
            Event {
                offset,
                key,
                value,
                timestamp_ms,
            },
        ))
    }
}

/// Window totals as channel state (no key group).
pub fn encode_totals(totals: &WindowTotals) -> Vec<u8> {
    [totals.window, totals.keys, totals.events]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Window totals from their channel state bytes.
///
/// # Errors
/// [`StateError::Corrupt`] for bytes of the wrong length.
pub fn decode_totals(bytes: &[u8]) -> Result<WindowTotals> {
    if bytes.len() != TOTALS_LEN {
        return Err(StateError::corrupt(
            CHANNEL_STATE,
            format!(
                "window totals of {} bytes, expected {TOTALS_LEN}",
                bytes.len()
            ),
        ));
    }
    let [window, keys, events] = words(bytes);
    Ok(WindowTotals {
        window,
        keys,
        events,
    })
}

/// `N` little-endian u64 words of `bytes` (whose length the caller checked).
fn words<const N: usize>(bytes: &[u8]) -> [u64; N] {
    std::array::from_fn(|i| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_watermarks_are_not_channel_state() {
        let event = Event {
            offset: 7,
            key: 42,
            value: 999,
            timestamp_ms: 70,
        };
        for kind in [StreamKind::Events, StreamKind::Adjustments] {
            let record = KeyedInput::Record(kind, event);
            let (group, bytes) = record.encode(128).unwrap().unwrap();
            assert_eq!(group, Some(key_group_of(42, 128, &mut Vec::new()).unwrap()));
            assert_eq!(KeyedInput::decode(&bytes).unwrap(), record);
        }
        assert_eq!(KeyedInput::Watermark(5).encode(128).unwrap(), None);
        let totals = WindowTotals {
            window: 3,
            keys: 4,
            events: 5,
        };
        assert_eq!(decode_totals(&encode_totals(&totals)).unwrap(), totals);
    }

    #[test]
    fn corrupt_records_are_errors() {
        assert!(matches!(
            KeyedInput::decode(&[1, 2, 3]),
            Err(StateError::Corrupt { .. })
        ));
        let mut bytes = vec![9u8];
        bytes.extend([0u8; 32]);
        let err = KeyedInput::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("unknown record tag 9"), "{err}");
        assert!(decode_totals(&[0; 5]).is_err());
    }
}
