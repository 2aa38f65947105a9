//! The job's keyed operator: per-key aggregates in every kind of state, and
//! per-key tumbling-window counts closed by the event-time clock.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use state_api::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedStateBackend,
    KeyedStateBackendExt, ListState, ListStateDescriptor, MapState, MapStateDescriptor,
    ReducingState, ReducingStateDescriptor, Result, ValueState, ValueStateDescriptor,
};

use crate::events::Event;

/// Length of the tumbling windows, in event-time ms.
pub const WINDOW_MS: u64 = 10_000;

/// How many recent values the list state keeps per key.
const RECENT: usize = 4;

/// Mean number of events per closed window: accumulator (windows, events).
#[derive(Clone, Copy, Debug, Default)]
pub struct MeanWindowSize;

impl AggregateFunction for MeanWindowSize {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;

    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }

    fn add(&self, events: &u64, (windows, total): (u64, u64)) -> (u64, u64) {
        (windows + 1, total + events)
    }

    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }

    fn get_result(&self, (windows, total): &(u64, u64)) -> f64 {
        if *windows == 0 {
            0.0
        } else {
            *total as f64 / *windows as f64
        }
    }
}

/// Everything the job keeps for one key, as read back at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySummary {
    /// Events seen.
    pub count: u64,
    /// Sum of values.
    pub sum: u64,
    /// Largest value.
    pub max: Option<u64>,
    /// The last few values, oldest first.
    pub recent: Vec<u64>,
    /// Events per value bucket (value / 100).
    pub buckets: Vec<(u8, u64)>,
    /// Counts of windows not closed yet: (window, events).
    pub open_windows: Vec<(u64, u64)>,
    /// Mean events per closed window.
    pub mean_window_size: Option<f64>,
}

/// The operator's state handles; one instance per subtask.
pub struct KeyedAggregator {
    count: ValueState<u64>,
    sum: ReducingState<u64>,
    max: ReducingState<u64>,
    recent: ListState<u64>,
    buckets: MapState<u8, u64>,
    window_count: ValueState<u64, u64>,
    closed_windows: AggregatingState<MeanWindowSize>,
}

impl KeyedAggregator {
    /// The names of the states the operator registers: what a restore
    /// checks a savepoint's states against.
    pub const STATE_NAMES: [&'static str; 7] = [
        "count",
        "sum",
        "max",
        "recent",
        "buckets",
        "window-count",
        "closed-windows",
    ];

    /// Registers (or, after a restore, re-opens) the operator's states.
    ///
    /// # Errors
    /// Registration errors, e.g. a restored state with other types.
    pub fn register(backend: &mut dyn KeyedStateBackend) -> Result<Self> {
        Ok(Self {
            count: backend.value_state(ValueStateDescriptor::new("count").with_default(0))?,
            sum: backend
                .reducing_state(ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| {
                    a + b
                }))?,
            max: backend
                .reducing_state(ReducingStateDescriptor::new("max", |a: &u64, b: &u64| {
                    *a.max(b)
                }))?,
            recent: backend.list_state(ListStateDescriptor::new("recent"))?,
            buckets: backend.map_state(MapStateDescriptor::new("buckets"))?,
            window_count: backend
                .value_state(ValueStateDescriptor::new("window-count").with_default(0))?,
            closed_windows: backend.aggregating_state(AggregatingStateDescriptor::new(
                "closed-windows",
                MeanWindowSize,
            ))?,
        })
    }

    /// Processes one event of a key this subtask owns.
    ///
    /// # Errors
    /// State errors.
    pub fn process(&mut self, backend: &mut dyn KeyedStateBackend, event: &Event) -> Result<()> {
        backend.set_key(&event.key)?;
        let count = self.count.value(backend)?.unwrap_or(0);
        self.count.update(backend, &(count + 1))?;
        self.sum.add(backend, &event.value)?;
        self.max.add(backend, &event.value)?;
        let mut recent = self.recent.get(backend)?;
        if recent.len() >= RECENT {
            recent.drain(..=recent.len() - RECENT);
            recent.push(event.value);
            self.recent.update(backend, &recent)?;
        } else {
            self.recent.add(backend, &event.value)?;
        }
        let bucket = (event.value / 100) as u8;
        let in_bucket = self.buckets.get(backend, &bucket)?.unwrap_or(0);
        self.buckets.put(backend, &bucket, &(in_bucket + 1))?;
        self.window_count
            .set_namespace(&(event.timestamp_ms / WINDOW_MS))?;
        let in_window = self.window_count.value(backend)?.unwrap_or(0);
        self.window_count.update(backend, &(in_window + 1))
    }

    /// Closes `window` for every key that has it: folds its count into the
    /// closed-window statistics and clears it (window clean-up).
    ///
    /// # Errors
    /// State errors.
    pub fn close_window(&mut self, backend: &mut dyn KeyedStateBackend, window: u64) -> Result<()> {
        self.window_count.set_namespace(&window)?;
        let (window_count, closed) = (&self.window_count, &self.closed_windows);
        backend.apply_to_all_keys(window_count.id(), &window, |b| {
            let events = window_count.value(b)?.unwrap_or(0);
            closed.add(b, &events)?;
            window_count.clear(b)
        })
    }

    /// Reads back everything kept for every key of this subtask.
    ///
    /// # Errors
    /// State errors.
    pub fn summarize(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<BTreeMap<u64, KeySummary>> {
        let mut windows: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        backend.for_each_key_and_namespace(self.window_count.id(), &mut |key, ns| {
            let key: u64 = state_api::codec::decode(key)?;
            windows
                .entry(key)
                .or_default()
                .push(state_api::codec::decode(ns)?);
            Ok(ControlFlow::Continue(()))
        })?;
        let keys: Vec<u64> = backend.keys(self.count.id(), &state_api::VoidNamespace)?;
        let mut out = BTreeMap::new();
        for key in keys {
            backend.set_key(&key)?;
            let mut open_windows = Vec::new();
            for window in windows.remove(&key).unwrap_or_default() {
                self.window_count.set_namespace(&window)?;
                open_windows.push((window, self.window_count.value(backend)?.unwrap_or(0)));
            }
            open_windows.sort_unstable();
            let summary = KeySummary {
                count: self.count.value(backend)?.unwrap_or(0),
                sum: self.sum.get(backend)?.unwrap_or(0),
                max: self.max.get(backend)?,
                recent: self.recent.get(backend)?,
                buckets: self.buckets.entries(backend)?,
                open_windows,
                mean_window_size: self.closed_windows.get(backend)?,
            };
            out.insert(key, summary);
        }
        Ok(out)
    }
}
