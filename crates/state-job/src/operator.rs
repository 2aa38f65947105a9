//! The job's keyed operator: per-key aggregates in every kind of state,
//! per-key tumbling-window counts closed by event-time timers, and the sum
//! of a second input's adjustments.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::time::Duration;

use state_api::timers::TimerService;
use state_api::ttl::StateTtlConfig;
use state_api::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedStateBackend,
    KeyedStateBackendExt, ListState, ListStateDescriptor, MapState, MapStateDescriptor,
    ReducingState, ReducingStateDescriptor, Result, ValueState, ValueStateDescriptor,
};

use crate::events::Event;

/// Length of the tumbling windows, in event-time ms.
pub const WINDOW_MS: u64 = 10_000;

/// The last event-time ms of `window`: its timer's timestamp.
fn window_end(window: u64) -> i64 {
    i64::try_from((window + 1).saturating_mul(WINDOW_MS) - 1).unwrap_or(i64::MAX)
}

/// The time to live of `recent-count`.
const RECENT_TTL: Duration = Duration::from_secs(3600);

/// How many of its largest values the list state keeps per key.
const TOP: usize = 4;

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
    /// The four largest values, ascending.
    pub top_values: Vec<u64>,
    /// Events per value bucket (value / 100).
    pub buckets: Vec<(u8, u64)>,
    /// Counts of windows not closed yet: (window, events).
    pub open_windows: Vec<(u64, u64)>,
    /// Mean events per closed window.
    pub mean_window_size: Option<f64>,
    /// Adjustments (the second input) seen.
    pub adjustment_count: u64,
    /// Sum of the adjustments' values.
    pub adjustments: u64,
    /// Events counted in a state with a time to live (one hour: it does not
    /// expire during a run, and its stamps survive failovers).
    pub recent_count: u64,
}

/// What closing a window on one instance produced: the sink's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// The window.
    pub window: u64,
    /// Keys that had events in it.
    pub keys: u64,
    /// Events in it over those keys.
    pub events: u64,
}

/// The operator's state handles; one instance per subtask.
pub struct KeyedAggregator {
    count: ValueState<u64>,
    sum: ReducingState<u64>,
    max: ReducingState<u64>,
    top_values: ListState<u64>,
    buckets: MapState<u8, u64>,
    window_count: ValueState<u64, u64>,
    closed_windows: AggregatingState<MeanWindowSize>,
    adjustment_count: ValueState<u64>,
    adjustments: ReducingState<u64>,
    /// One event-time timer per (key, window) at the window's last ms.
    window_timers: TimerService<u64>,
    recent_count: ValueState<u64>,
}

impl KeyedAggregator {
    /// The names of the states the operator registers: what a restore
    /// checks a savepoint's states against.
    pub const STATE_NAMES: [&'static str; 12] = [
        "count",
        "sum",
        "max",
        "top-values",
        "buckets",
        "window-count",
        "closed-windows",
        "adjustment-count",
        "adjustments",
        "_timer_state/event_windows",
        "_timer_state/processing_windows",
        "recent-count",
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
            top_values: backend.list_state(ListStateDescriptor::new("top-values"))?,
            buckets: backend.map_state(MapStateDescriptor::new("buckets"))?,
            window_count: backend
                .value_state(ValueStateDescriptor::new("window-count").with_default(0))?,
            closed_windows: backend.aggregating_state(AggregatingStateDescriptor::new(
                "closed-windows",
                MeanWindowSize,
            ))?,
            adjustment_count: backend
                .value_state(ValueStateDescriptor::new("adjustment-count").with_default(0))?,
            adjustments: backend.reducing_state(ReducingStateDescriptor::new(
                "adjustments",
                |a: &u64, b: &u64| a + b,
            ))?,
            window_timers: TimerService::register(backend, "windows")?,
            recent_count: backend.value_state(
                ValueStateDescriptor::new("recent-count").with_ttl(StateTtlConfig::new(RECENT_TTL)),
            )?,
        })
    }

    /// Processes one record of the second input (an adjustment of its
    /// key): counts it and adds its value.
    ///
    /// # Errors
    /// State errors.
    pub fn adjust(&mut self, backend: &mut dyn KeyedStateBackend, event: &Event) -> Result<()> {
        backend.set_key(&event.key)?;
        let count = self.adjustment_count.value(backend)?.unwrap_or(0);
        self.adjustment_count.update(backend, &(count + 1))?;
        self.adjustments.add(backend, &event.value)
    }

    /// Processes one event of a key this subtask owns.
    ///
    /// # Errors
    /// State errors.
    pub fn process(&mut self, backend: &mut dyn KeyedStateBackend, event: &Event) -> Result<()> {
        backend.set_key(&event.key)?;
        let count = self.count.value(backend)?.unwrap_or(0);
        self.count.update(backend, &(count + 1))?;
        let recent = self.recent_count.value(backend)?.unwrap_or(0);
        self.recent_count.update(backend, &(recent + 1))?;
        self.sum.add(backend, &event.value)?;
        self.max.add(backend, &event.value)?;
        // The largest values, not the latest: records of one key come from
        // several source instances, whose interleaving differs from run to
        // run, and the result must not depend on it.
        let mut top = self.top_values.get(backend)?;
        if top.len() < TOP {
            self.top_values.add(backend, &event.value)?;
        } else {
            top.sort_unstable();
            if top[0] < event.value {
                top[0] = event.value;
                self.top_values.update(backend, &top)?;
            }
        }
        let bucket = (event.value / 100) as u8;
        let in_bucket = self.buckets.get(backend, &bucket)?.unwrap_or(0);
        self.buckets.put(backend, &bucket, &(in_bucket + 1))?;
        let window = event.timestamp_ms / WINDOW_MS;
        self.window_count.set_namespace(&window)?;
        let in_window = self.window_count.value(backend)?.unwrap_or(0);
        if in_window == 0 {
            // The key's first event in the window: the window closes for
            // it when the watermark passes the window's last ms.
            self.window_timers
                .register_event_time_timer(backend, &window, window_end(window))?;
        }
        self.window_count.update(backend, &(in_window + 1))
    }

    /// Advances the event-time clock to `watermark`: every (key, window)
    /// whose timer it passed closes, its count folded into the
    /// closed-window statistics and cleared (window clean-up). Returns what
    /// closed, per window.
    ///
    /// # Errors
    /// State errors.
    pub fn advance_watermark(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        watermark: u64,
    ) -> Result<Vec<WindowTotals>> {
        let mut closed: BTreeMap<u64, WindowTotals> = BTreeMap::new();
        let (window_count, closed_windows) = (&mut self.window_count, &self.closed_windows);
        let watermark = i64::try_from(watermark).unwrap_or(i64::MAX);
        self.window_timers
            .advance_watermark(backend, watermark, |b, timer| {
                let window = timer.namespace;
                window_count.set_namespace(&window)?;
                let events = window_count.value(b)?.unwrap_or(0);
                closed_windows.add(b, &events)?;
                window_count.clear(b)?;
                let totals = closed.entry(window).or_insert(WindowTotals {
                    window,
                    ..WindowTotals::default()
                });
                totals.keys += 1;
                totals.events += events;
                Ok(())
            })?;
        Ok(closed.into_values().collect())
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
        // A key may have adjustments and no events yet, or the reverse.
        let mut keys: BTreeSet<u64> = backend
            .keys(self.count.id(), &state_api::VoidNamespace)?
            .into_iter()
            .collect();
        let adjusted: Vec<u64> =
            backend.keys(self.adjustment_count.id(), &state_api::VoidNamespace)?;
        keys.extend(adjusted);
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
                top_values: {
                    let mut top = self.top_values.get(backend)?;
                    top.sort_unstable();
                    top
                },
                buckets: self.buckets.entries(backend)?,
                open_windows,
                mean_window_size: self.closed_windows.get(backend)?,
                adjustment_count: self.adjustment_count.value(backend)?.unwrap_or(0),
                adjustments: self.adjustments.get(backend)?.unwrap_or(0),
                recent_count: self.recent_count.value(backend)?.unwrap_or(0),
            };
            out.insert(key, summary);
        }
        Ok(out)
    }
}
