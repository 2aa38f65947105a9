//! A series of incremental RocksDB checkpoints under steady updates, with
//! the compactions the updates cause: how much each checkpoint uploads and
//! how long it takes.
//!
//! `CHECKPOINT_KEYS` (default 5M) value-state keys are loaded and
//! checkpointed once; then `CHECKPOINTS` (default 20) times, 1% of the keys
//! (random) are updated and a checkpoint is taken and confirmed. Checkpoint
//! storage is a local directory. Printed (and written to
//! `target/state-bench/checkpoint_series.md` or `BENCH_REPORT_DIR`): per
//! checkpoint its time (both phases) and uploaded bytes, then the total
//! uploaded over the series against the state size, and the p50 / p90 /
//! max checkpoint time.
//!
//! Run with `cargo bench --bench checkpoint_series`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::{
    CheckpointStorageAccess, KeyedStateBackend, KeyedStateBackendExt, SnapshotOptions,
};
use state_benches::backends::{rocksdb_config, value_backend};
use state_benches::{env_or, report_dir};
use state_rocksdb::RocksDbBackendFactory;
use state_storage::ObjectStoreCheckpointStorage;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() -> std::io::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(()); // built by `cargo test --benches`; runs only with --bench
    }
    let keys = env_or("CHECKPOINT_KEYS", 5_000_000);
    let checkpoints = env_or("CHECKPOINTS", 20);
    let dir = tempfile::tempdir()?;
    let storage: Arc<dyn CheckpointStorageAccess> = Arc::new(
        ObjectStoreCheckpointStorage::local(dir.path().join("checkpoints"), "series")
            .expect("storage"),
    );
    let factory = RocksDbBackendFactory::new(rocksdb_config(&dir.path().join("db")));
    let (mut backend, state) = value_backend(&factory, Arc::clone(&storage));
    let b = &mut *backend;
    for key in 0..keys {
        b.set_key(&key).expect("key");
        state.update(b, &key).expect("write");
    }
    let checkpoint = |b: &mut dyn KeyedStateBackend, id: u64| {
        let start = Instant::now();
        let result = b
            .snapshot(id, &SnapshotOptions::checkpoint(0), Arc::clone(&storage))
            .expect("sync phase")
            .run()
            .expect("async phase");
        let took = start.elapsed();
        b.notify_checkpoint_complete(id).expect("notify");
        (result, took)
    };
    let (first, took) = checkpoint(b, 1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{keys} keys; checkpoint 1 (everything): {:.1} MiB uploaded in {:.0} ms\n",
        mib(first.uploaded_bytes),
        took.as_secs_f64() * 1000.0
    );
    let _ = writeln!(out, "| checkpoint | time ms | uploaded MiB | state MiB |");
    let _ = writeln!(out, "|---:|---:|---:|---:|");
    let mut times: Vec<Duration> = Vec::new();
    let mut uploaded = 0u64;
    let mut state_size = first.handle.state_size();
    let mut random = 0x2545_F491_4F6C_DD1D_u64;
    for id in 2..=checkpoints + 1 {
        for _ in 0..keys / 100 {
            random ^= random >> 12;
            random ^= random << 25;
            random ^= random >> 27;
            let key = random.wrapping_mul(0x2545_F491_4F6C_DD1D) % keys;
            b.set_key(&key).expect("key");
            state.update(b, &(key ^ id)).expect("write");
        }
        let (result, took) = checkpoint(b, id);
        uploaded += result.uploaded_bytes;
        state_size = result.handle.state_size();
        times.push(took);
        let _ = writeln!(
            out,
            "| {id} | {:.0} | {:.2} | {:.1} |",
            took.as_secs_f64() * 1000.0,
            mib(result.uploaded_bytes),
            mib(state_size)
        );
    }
    let mut sorted = times.clone();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    let _ = writeln!(
        out,
        "\nOver {checkpoints} checkpoints at 1% updates: uploaded {:.1} MiB = {:.2}x the state ({:.1} MiB); \
         time p50 {:.0} ms, p90 {:.0} ms (p90/p50 {:.2}), max {:.0} ms",
        mib(uploaded),
        uploaded as f64 / state_size.max(1) as f64,
        mib(state_size),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.9).as_secs_f64() * 1000.0,
        at(0.9).as_secs_f64() / at(0.5).as_secs_f64(),
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    println!("{out}");
    std::fs::write(report_dir()?.join("checkpoint_series.md"), out)
}
