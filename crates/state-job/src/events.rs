//! The generated event stream: deterministic, replayable from any offset.

/// One input record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the stream; what a checkpoint records as the source offset.
    pub offset: u64,
    /// The record's key.
    pub key: u64,
    /// The record's value.
    pub value: u64,
    /// Event time in ms; increases with the offset.
    pub timestamp_ms: u64,
}

/// A seeded stream of `len` events over `keys` keys, skewed so that some keys
/// are hot (as real keyed streams are). Event `n` is a pure function of
/// `(seed, n)`, so a source can restart from any offset.
#[derive(Clone, Debug)]
pub struct EventStream {
    seed: u64,
    keys: u64,
    len: u64,
    time_step_ms: u64,
}

impl EventStream {
    /// A stream of `len` events over `keys` keys.
    pub fn new(seed: u64, keys: u64, len: u64) -> Self {
        Self {
            seed,
            keys: keys.max(1),
            len,
            time_step_ms: 10,
        }
    }

    /// The same stream with `step` ms of event time between events
    /// (default 10), so that streams of different lengths span the same
    /// event time.
    pub fn with_time_step(mut self, step_ms: u64) -> Self {
        self.time_step_ms = step_ms.max(1);
        self
    }

    /// The offsets of split `split` of `splits`: `split`, `split + splits`,
    /// ... (a partition of the stream, as a source reads it).
    pub fn first_offset_of_split(split: u32, splits: u32, from: u64) -> u64 {
        let (split, splits) = (u64::from(split), u64::from(splits.max(1)));
        // The smallest offset >= from with offset % splits == split.
        let base = from - from % splits + split;
        if base >= from { base } else { base + splits }
    }

    /// Number of events.
    pub fn event_count(&self) -> u64 {
        self.len
    }

    /// The event at `offset`.
    pub fn event(&self, offset: u64) -> Event {
        let r = splitmix64(self.seed ^ offset.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Half of the events go to the first 1/16 of the keys: a hot set.
        let key_space = if r & 1 == 0 {
            (self.keys / 16).max(1)
        } else {
            self.keys
        };
        Event {
            offset,
            key: (r >> 8) % key_space,
            value: (r >> 40) % 1_000,
            timestamp_ms: offset * self.time_step_ms,
        }
    }

    /// Events from `offset` to the end.
    pub fn from_offset(&self, offset: u64) -> impl Iterator<Item = Event> + '_ {
        (offset..self.len).map(|o| self.event(o))
    }
}

/// SplitMix64: a small, well-mixed, dependency-free generator step.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_from_an_offset_gives_the_same_events() {
        let stream = EventStream::new(7, 100, 1_000);
        let all: Vec<Event> = stream.from_offset(0).collect();
        let tail: Vec<Event> = stream.from_offset(600).collect();
        assert_eq!(&all[600..], &tail[..]);
        assert!(all.iter().all(|e| e.key < 100));
    }

    #[test]
    fn a_split_starts_at_its_first_offset_at_or_after_a_position() {
        assert_eq!(EventStream::first_offset_of_split(3, 8, 0), 3);
        assert_eq!(EventStream::first_offset_of_split(3, 8, 3), 3);
        assert_eq!(EventStream::first_offset_of_split(3, 8, 4), 11);
        assert_eq!(EventStream::first_offset_of_split(0, 8, 17), 24);
    }
}
