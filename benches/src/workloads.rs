//! The workloads of Flink's state micro-benchmarks (`flink-benchmarks`,
//! package `state`: `ValueStateBenchmark`, `ListStateBenchmark`,
//! `MapStateBenchmark`), as one enum every contestant runs.
//!
//! The set-up follows Flink's: `setup_keys` keys (500k), each with a value,
//! a one-element list and a map of [`MAP_ENTRIES`] entries; operations on
//! "new" keys take keys that were never written. Each operation sets the
//! current key and does one state call, as a Flink benchmark method does.

/// User keys per map (Flink's `mapKeyCount`).
pub const MAP_ENTRIES: u64 = 10;
/// Elements `add_all` appends and the long lists hold (Flink's
/// `listValueCount`).
pub const LIST_ELEMENTS: u64 = 100;

/// What a contestant's states hold before the measured rounds, and which
/// keys each workload takes.
#[derive(Clone, Debug)]
pub struct KeySet {
    /// Written in set-up, in the random order operations take them.
    pub setup: Vec<u64>,
    /// Never written in set-up (`setup.len()..2 * setup.len()`, random
    /// order): the targets of the `*_add` workloads.
    pub new: Vec<u64>,
    /// The keys whose list holds [`LIST_ELEMENTS`] elements (a tenth of the
    /// set-up keys, random order), for [`Workload::ListGetLong`].
    pub long_lists: Vec<u64>,
}

impl KeySet {
    /// `n` set-up keys, `n` new keys and `n / 10` (at least 1) keys with
    /// long lists.
    ///
    /// ```
    /// let keys = state_benches::workloads::KeySet::new(100);
    /// assert_eq!((keys.setup.len(), keys.new.len(), keys.long_lists.len()), (100, 100, 10));
    /// assert!(keys.new.iter().all(|k| *k >= 100));
    /// ```
    pub fn new(n: usize) -> Self {
        let setup = crate::shuffled_keys(n);
        let new = crate::shuffled_keys(n)
            .into_iter()
            .map(|k| k + n as u64)
            .collect();
        let long = (n / 10).max(1);
        let long_lists = crate::shuffled_keys(long);
        Self {
            setup,
            new,
            long_lists,
        }
    }

    /// The keys `workload` takes.
    pub fn for_workload(&self, workload: Workload) -> &[u64] {
        match workload {
            Workload::ValueAdd | Workload::ListAdd | Workload::MapAdd => &self.new,
            Workload::ListGetLong => &self.long_lists,
            _ => &self.setup,
        }
    }
}

/// Which state a workload uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFamily {
    /// `ValueState<u64>`.
    Value,
    /// `ListState<u64>`.
    List,
    /// `MapState<u64, u64>`.
    Map,
}

/// One benchmark operation: the name is Flink's benchmark method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `valueGet`: read the value of a set-up key.
    ValueGet,
    /// `valueUpdate`: overwrite the value of a set-up key.
    ValueUpdate,
    /// `valueAdd`: write the value of a new key.
    ValueAdd,
    /// `listGet`: read a set-up key's (one-element) list.
    ListGet,
    /// `listUpdate`: replace a set-up key's list by one element.
    ListUpdate,
    /// `listAdd`: replace a new key's list by one element.
    ListAdd,
    /// `listAppend`: append one element.
    ListAppend,
    /// `listAddAll`: append [`LIST_ELEMENTS`] elements.
    ListAddAll,
    /// `listGet` of a list of [`LIST_ELEMENTS`] elements.
    ListGetLong,
    /// `mapGet`: read one entry.
    MapGet,
    /// `mapContains`: look up an absent user key.
    MapContains,
    /// `mapIsEmpty`.
    MapIsEmpty,
    /// `mapIterator` / `mapEntries`: decode all entries.
    MapIterator,
    /// `mapKeys`: decode all user keys.
    MapKeys,
    /// `mapValues`: decode all values.
    MapValues,
    /// `mapUpdate`: overwrite one entry.
    MapUpdate,
    /// `mapAdd`: put one entry under a new key.
    MapAdd,
    /// `mapPutAll`: put [`MAP_ENTRIES`] entries.
    MapPutAll,
    /// `mapRemove`: remove one entry.
    MapRemove,
}

impl Workload {
    /// Every workload, in the order the suite runs them: reads of a state
    /// before the writes that change its sizes (`add_all` lengthens lists,
    /// `remove` shortens maps).
    pub const ALL: [Workload; 19] = [
        Workload::ValueGet,
        Workload::ValueUpdate,
        Workload::ValueAdd,
        Workload::ListGet,
        Workload::ListUpdate,
        Workload::ListAdd,
        Workload::ListAppend,
        Workload::ListAddAll,
        Workload::ListGetLong,
        Workload::MapGet,
        Workload::MapContains,
        Workload::MapIsEmpty,
        Workload::MapIterator,
        Workload::MapKeys,
        Workload::MapValues,
        Workload::MapUpdate,
        Workload::MapAdd,
        Workload::MapPutAll,
        Workload::MapRemove,
    ];

    /// Flink's name of the benchmark.
    pub fn name(self) -> &'static str {
        match self {
            Workload::ValueGet => "valueGet",
            Workload::ValueUpdate => "valueUpdate",
            Workload::ValueAdd => "valueAdd",
            Workload::ListGet => "listGet",
            Workload::ListUpdate => "listUpdate",
            Workload::ListAdd => "listAdd",
            Workload::ListAppend => "listAppend",
            Workload::ListAddAll => "listAddAll",
            Workload::ListGetLong => "listGet(100)",
            Workload::MapGet => "mapGet",
            Workload::MapContains => "mapContains",
            Workload::MapIsEmpty => "mapIsEmpty",
            Workload::MapIterator => "mapIterator",
            Workload::MapKeys => "mapKeys",
            Workload::MapValues => "mapValues",
            Workload::MapUpdate => "mapUpdate",
            Workload::MapAdd => "mapAdd",
            Workload::MapPutAll => "mapPutAll",
            Workload::MapRemove => "mapRemove",
        }
    }

    /// The state it uses.
    pub fn family(self) -> StateFamily {
        match self {
            Workload::ValueGet | Workload::ValueUpdate | Workload::ValueAdd => StateFamily::Value,
            Workload::ListGet
            | Workload::ListUpdate
            | Workload::ListAdd
            | Workload::ListAppend
            | Workload::ListAddAll
            | Workload::ListGetLong => StateFamily::List,
            _ => StateFamily::Map,
        }
    }

    /// Whether it changes state (the changelog logs these).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Workload::ValueUpdate
                | Workload::ValueAdd
                | Workload::ListUpdate
                | Workload::ListAdd
                | Workload::ListAppend
                | Workload::ListAddAll
                | Workload::MapUpdate
                | Workload::MapAdd
                | Workload::MapPutAll
                | Workload::MapRemove
        )
    }

    /// The user key operation `i` of a round uses (all present in set-up).
    pub fn user_key(i: usize) -> u64 {
        i as u64 % MAP_ENTRIES
    }

    /// A user key that is never present (`mapContains` looks it up).
    pub fn absent_user_key(i: usize) -> u64 {
        MAP_ENTRIES + i as u64 % MAP_ENTRIES
    }
}

/// Something the suite measures: a backend, or a raw baseline doing the
/// same storage work.
pub trait Contestant {
    /// The name in the report.
    fn name(&self) -> String;

    /// Writes the set-up state of `keys`.
    fn populate(&mut self, keys: &KeySet);

    /// Runs `workload` once per key of `keys` (operation `i` of the slice
    /// gets index `first + i`, which picks user keys).
    fn run(&mut self, workload: Workload, keys: &[u64], first: usize);
}
