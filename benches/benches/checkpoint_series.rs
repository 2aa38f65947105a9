//! A series of incremental RocksDB checkpoints under steady updates, with
//! the compactions the updates cause: how much each checkpoint uploads and
//! how long it takes, without and with the eager upload of SST files.
//!
//! `CHECKPOINT_KEYS` (default 5M) value-state keys are loaded and
//! checkpointed once; then `CHECKPOINTS` (default 20) times, 1% of the keys
//! (random) are updated, the rest of the checkpoint interval
//! (`CHECKPOINT_INTERVAL_MS`, default 2000: long enough here for a
//! compaction of the whole state and its eager upload; Flink jobs usually
//! checkpoint every tens of seconds or minutes) passes, and a checkpoint is
//! taken and confirmed. The whole series runs four times in one process:
//! leveled compaction (Flink's default) and universal compaction, each with
//! eager upload off and on. Checkpoint storage is a local directory beside
//! the DB, or under `CHECKPOINT_STORAGE_DIR` (e.g. a tmpfs, standing in for
//! remote storage: on one disk, the eager upload's writes and the next
//! checkpoint's flush wait for each other).
//! Printed (and written to `target/state-bench/checkpoint_series.md` or
//! `BENCH_REPORT_DIR`): per checkpoint its time (both phases) and the bytes
//! its asynchronous phase uploaded, then per mode the bytes uploaded over
//! the series (eager uploads included) against the state size, and the
//! p50 / p90 / max checkpoint time.
//!
//! Run with `cargo bench --bench checkpoint_series`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::{
    CheckpointStorageAccess, KeyedStateBackend, KeyedStateBackendExt, SnapshotOptions,
    ValueStateDescriptor,
};
use state_benches::backends::{fresh_context, rocksdb_config};
use state_benches::{env_or, report_dir};
use state_rocksdb::{CompactionStyle, RocksDbBackendFactory, RocksDbKeyedStateBackend};
use state_storage::ObjectStoreCheckpointStorage;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One checkpoint of the series.
struct Step {
    took: Duration,
    /// Of which the synchronous phase (flush and hard links).
    sync: Duration,
    /// Bytes the asynchronous phase uploaded itself.
    uploaded_by_checkpoint: u64,
}

/// One run of the series.
struct Series {
    first: Step,
    steps: Vec<Step>,
    /// Bytes written to checkpoint storage after the first checkpoint, by
    /// checkpoints and by the eager uploader.
    uploaded: u64,
    /// Eager uploads deleted because no checkpoint needed them.
    discarded: u64,
    state_size: u64,
}

fn series(
    keys: u64,
    checkpoints: u64,
    interval: Duration,
    compaction: CompactionStyle,
    eager: bool,
) -> Series {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = storage_dir(&dir, compaction, eager);
    let storage: Arc<dyn CheckpointStorageAccess> =
        Arc::new(ObjectStoreCheckpointStorage::local(root.clone(), "series").expect("storage"));
    let factory = RocksDbBackendFactory::new(
        rocksdb_config(&dir.path().join("db"))
            .with_eager_upload(eager)
            .with_compaction_style(compaction),
    );
    let mut backend = factory
        .create_backend(fresh_context("series", Arc::clone(&storage)))
        .expect("backend");
    let state = backend
        .value_state(ValueStateDescriptor::<u64>::new("value"))
        .expect("register");
    for key in 0..keys {
        backend.set_key(&key).expect("key");
        state.update(&mut backend, &key).expect("write");
    }
    let adopted = |b: &RocksDbKeyedStateBackend| b.eager_upload_stats().unwrap_or_default();
    let checkpoint = |b: &mut RocksDbKeyedStateBackend, id: u64| {
        let before = adopted(b).bytes_adopted;
        let start = Instant::now();
        let task = b
            .snapshot(id, &SnapshotOptions::checkpoint(0), Arc::clone(&storage))
            .expect("sync phase");
        let sync = start.elapsed();
        let result = task.run().expect("async phase");
        let took = start.elapsed();
        b.notify_checkpoint_complete(id).expect("notify");
        let step = Step {
            took,
            sync,
            uploaded_by_checkpoint: result.uploaded_bytes - (adopted(b).bytes_adopted - before),
        };
        (step, result.handle.state_size())
    };
    let (first, _) = checkpoint(&mut backend, 1);
    let eager_before = adopted(&backend).bytes_uploaded;
    let mut steps = Vec::new();
    let mut state_size = 0;
    let mut random = 0x2545_F491_4F6C_DD1D_u64;
    for id in 2..=checkpoints + 1 {
        let interval_start = Instant::now();
        for _ in 0..keys / 100 {
            random ^= random >> 12;
            random ^= random << 25;
            random ^= random >> 27;
            let key = random.wrapping_mul(0x2545_F491_4F6C_DD1D) % keys;
            backend.set_key(&key).expect("key");
            state.update(&mut backend, &(key ^ id)).expect("write");
        }
        std::thread::sleep(interval.saturating_sub(interval_start.elapsed()));
        let (step, size) = checkpoint(&mut backend, id);
        state_size = size;
        steps.push(step);
    }
    let stats = adopted(&backend);
    let by_checkpoints: u64 = steps.iter().map(|s| s.uploaded_by_checkpoint).sum();
    drop(backend);
    let _ = std::fs::remove_dir_all(&root);
    Series {
        first,
        steps,
        uploaded: by_checkpoints + stats.bytes_uploaded - eager_before,
        discarded: stats.bytes_discarded,
        state_size,
    }
}

/// Where checkpoint storage goes: under `CHECKPOINT_STORAGE_DIR` when set
/// (another device, as remote storage would be), else beside the DB.
fn storage_dir(dir: &tempfile::TempDir, compaction: CompactionStyle, eager: bool) -> PathBuf {
    match std::env::var_os("CHECKPOINT_STORAGE_DIR") {
        Some(root) => PathBuf::from(root).join(format!(
            "series-{}-{compaction:?}-{eager}",
            std::process::id()
        )),
        None => dir.path().join("checkpoints"),
    }
}

/// (p50, p90, max) of the checkpoint times.
fn quantiles(steps: &[Step]) -> (Duration, Duration, Duration) {
    let mut sorted: Vec<Duration> = steps.iter().map(|s| s.took).collect();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), sorted.last().copied().unwrap_or_default())
}

fn main() -> std::io::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(()); // built by `cargo test --benches`; runs only with --bench
    }
    let keys = env_or("CHECKPOINT_KEYS", 5_000_000);
    let checkpoints = env_or("CHECKPOINTS", 20);
    let interval = Duration::from_millis(env_or("CHECKPOINT_INTERVAL_MS", 2000));
    let configurations = [
        ("leveled, eager upload off", CompactionStyle::Level, false),
        ("leveled, eager upload on", CompactionStyle::Level, true),
        (
            "universal, eager upload off",
            CompactionStyle::Universal,
            false,
        ),
        (
            "universal, eager upload on",
            CompactionStyle::Universal,
            true,
        ),
    ];
    let runs: Vec<Series> = configurations
        .iter()
        .map(|(_, compaction, eager)| series(keys, checkpoints, interval, *compaction, *eager))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{keys} keys, {checkpoints} checkpoints at 1% updates, one every {} ms; checkpoint \
         storage {}. Per checkpoint: its time in ms (both phases) / the MiB its asynchronous \
         phase uploaded itself.\n",
        interval.as_millis(),
        match std::env::var("CHECKPOINT_STORAGE_DIR") {
            Ok(root) => format!("under {root}"),
            Err(_) => "on the DB's disk".to_string(),
        },
    );
    let mut header = String::from("| checkpoint |");
    let mut rule = String::from("|---:|");
    for (name, _, _) in &configurations {
        let _ = write!(header, " {name} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let _ = write!(out, "| 1 (all) |");
    for run in &runs {
        let _ = write!(
            out,
            " {:.0} / {:.1} |",
            ms(run.first.took),
            mib(run.first.uploaded_by_checkpoint)
        );
    }
    let _ = writeln!(out);
    for index in 0..checkpoints as usize {
        let _ = write!(out, "| {} |", index + 2);
        for run in &runs {
            let step = &run.steps[index];
            let _ = write!(
                out,
                " {:.0} / {:.2} |",
                ms(step.took),
                mib(step.uploaded_by_checkpoint)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    for ((name, _, _), run) in configurations.iter().zip(&runs) {
        let (p50, p90, max) = quantiles(&run.steps);
        let _ = writeln!(
            out,
            "- {name}: uploaded {:.1} MiB = {:.2}x the state ({:.1} MiB){}; time p50 {:.0} ms, \
             p90 {:.0} ms (p90/p50 {:.2}), max {:.0} ms (max/p50 {:.1}); longest synchronous \
             phase {:.0} ms",
            mib(run.uploaded),
            run.uploaded as f64 / run.state_size.max(1) as f64,
            mib(run.state_size),
            if run.discarded > 0 {
                format!(", of which {:.1} MiB deleted unused", mib(run.discarded))
            } else {
                String::new()
            },
            ms(p50),
            ms(p90),
            p90.as_secs_f64() / p50.as_secs_f64(),
            ms(max),
            max.as_secs_f64() / p50.as_secs_f64(),
            run.steps.iter().map(|s| ms(s.sync)).fold(0.0, f64::max),
        );
    }
    println!("{out}");
    std::fs::write(report_dir()?.join("checkpoint_series.md"), out)
}
