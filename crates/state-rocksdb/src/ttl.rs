//! Time-to-live clean-up on RocksDB: a compaction filter per column family
//! that drops expired values (Flink's `FlinkCompactionFilter`), and a
//! periodic compaction of the files that have lived longer than the time to
//! live, so that expired entries are gone within about twice the time to
//! live even in files no other compaction would touch (Flink relies on
//! RocksDB's `periodic_compaction_seconds`, 30 days by default).
//!
//! Values of states with a time to live carry an 8-byte stamp
//! ([`state_api::ttl`]); the filter drops a value whose stamp expired, a
//! list whose elements all expired and a map entry whose value expired. A
//! list some of whose elements expired is kept whole (the filter could only
//! replace it through a `'static` slice); reads drop those elements. Merge
//! operands (list appends not merged yet) are not filtered by RocksDB; a
//! later compaction of their merged value is.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rocksdb::compaction_filter::Decision;
use rocksdb::{BottommostLevelCompaction, CompactOptions, Options};
use state_api::StateKind;
use state_api::ttl::{StateTtlConfig, alive_part};

use crate::backend::Db;

/// What the filter of one column family needs.
#[derive(Clone, Debug)]
struct TtlSpec {
    kind: StateKind,
    ttl: StateTtlConfig,
}

/// The time to live of each column family's state, shared by the
/// compaction filters RocksDB runs on its threads.
#[derive(Debug, Default)]
pub(crate) struct TtlFilters {
    specs: RwLock<HashMap<String, TtlSpec>>,
}

impl TtlFilters {
    /// From now on, compactions of `column_family` drop what expired under
    /// `ttl` (when its compaction-filter clean-up is on).
    pub(crate) fn set(&self, column_family: &str, kind: StateKind, ttl: Option<&StateTtlConfig>) {
        let mut specs = self.specs.write();
        match ttl.filter(|t| t.cleanup.compaction_filter) {
            Some(ttl) => {
                specs.insert(
                    column_family.to_string(),
                    TtlSpec {
                        kind,
                        ttl: ttl.clone(),
                    },
                );
            }
            None => {
                specs.remove(column_family);
            }
        }
    }

    fn decide(&self, column_family: &str, value: &[u8]) -> Decision {
        let specs = self.specs.read();
        let Some(spec) = specs.get(column_family) else {
            return Decision::Keep;
        };
        // A map entry's value is stamped like a single value.
        let kind = if spec.kind == StateKind::List {
            StateKind::List
        } else {
            StateKind::Value
        };
        match alive_part(kind, &spec.ttl, spec.ttl.now_ms(), value) {
            None => Decision::Remove,
            Some(_) => Decision::Keep,
        }
    }

    /// The column families with a time to live, and how long their files
    /// may live before they are compacted.
    fn periods(&self) -> Vec<(String, Duration)> {
        self.specs
            .read()
            .iter()
            .map(|(cf, spec)| {
                let period = spec.ttl.cleanup.periodic_compaction.unwrap_or(spec.ttl.ttl);
                (cf.clone(), period)
            })
            .collect()
    }
}

/// The options of a backend's DB and of each of its column families (the
/// base options plus the column family's compaction filter).
#[derive(Clone)]
pub(crate) struct DbOptions {
    /// The options every column family starts from.
    pub(crate) base: Options,
    /// The filters' shared table.
    pub(crate) ttl: Arc<TtlFilters>,
    /// The options of column families created after the DB opened: the
    /// `rocksdb` crate keeps the compaction filter of options given at open
    /// alive with the DB, but not of options given to `create_cf`, so they
    /// are kept here (the backend drops its DB first).
    created: Arc<parking_lot::Mutex<Vec<Options>>>,
}

impl DbOptions {
    /// Options from `base`, with the TTL compaction filters.
    pub(crate) fn new(base: Options) -> Self {
        Self {
            base,
            ttl: Arc::default(),
            created: Arc::default(),
        }
    }

    /// The options to create `column_family` with, kept alive with these.
    pub(crate) fn for_new_cf(&self, column_family: &str) -> Options {
        let options = self.for_cf(column_family);
        self.created.lock().push(options.clone());
        options
    }

    /// The options of `column_family`.
    pub(crate) fn for_cf(&self, column_family: &str) -> Options {
        let mut options = self.base.clone();
        let filters = Arc::clone(&self.ttl);
        let name = column_family.to_string();
        options.set_compaction_filter("state-ttl", move |_level, _key, value| {
            filters.decide(&name, value)
        });
        options
    }
}

/// A file to compact: its column family and key range.
type DueFile = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// Compacts, on a thread of its own, the files of time-to-live column
/// families that have lived longer than their period.
#[derive(Debug, Default)]
pub(crate) struct TtlCompactor {
    /// When each live file was first seen.
    first_seen: HashMap<String, Instant>,
    last_check: Option<Instant>,
    running: Option<JoinHandle<()>>,
}

impl TtlCompactor {
    /// Starts a compaction of the files older than their column family's
    /// period, unless one runs or the last look was recent.
    pub(crate) fn maybe_start(&mut self, db: &Arc<Db>, filters: &TtlFilters) {
        let periods = filters.periods();
        let Some(shortest) = periods.iter().map(|(_, p)| *p).min() else {
            return;
        };
        let now = Instant::now();
        if self.running.as_ref().is_some_and(|t| !t.is_finished())
            || self
                .last_check
                .is_some_and(|last| now < last + shortest / 4)
        {
            return;
        }
        self.join();
        self.last_check = Some(now);
        let Ok(files) = db.live_files() else {
            return;
        };
        self.first_seen
            .retain(|name, _| files.iter().any(|f| &f.name == name));
        let mut due: Vec<DueFile> = Vec::new();
        for file in files {
            let seen = *self.first_seen.entry(file.name.clone()).or_insert(now);
            let period = periods
                .iter()
                .find(|(cf, _)| *cf == file.column_family_name)
                .map(|(_, p)| *p);
            if period.is_some_and(|period| now >= seen + period) {
                due.push((file.column_family_name, file.start_key, file.end_key));
            }
        }
        if due.is_empty() {
            return;
        }
        let db = Arc::clone(db);
        self.running = std::thread::Builder::new()
            .name("rocksdb-ttl-compaction".into())
            .spawn(move || {
                let mut options = CompactOptions::default();
                // The bottommost level too: that is where untouched data sits.
                options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
                for (cf, start, end) in due {
                    if let Some(handle) = db.cf_handle(&cf) {
                        db.compact_range_cf_opt(handle, start, end, &options);
                    }
                }
            })
            .ok();
    }

    /// Waits for a running compaction.
    pub(crate) fn join(&mut self) {
        if let Some(thread) = self.running.take() {
            let _ = thread.join();
        }
    }
}
