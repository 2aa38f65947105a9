//! Scale: how far each backend goes on one machine, and how fast a large
//! state comes back.
//!
//! * `rocksdb`: `SCALE_ROCKSDB_KEYS` (default 100M) `u64` keys with `u64`
//!   values through the typed API into a RocksDB backend whose managed
//!   memory is 1 GiB (block cache and write buffers), then 1M reads of
//!   random keys: load and read throughput, and the process's peak
//!   resident memory.
//! * `heap`: `SCALE_HEAP_KEYS` (default 20M) keys into the heap backend:
//!   bytes of resident memory per entry, and peak resident memory.
//! * `restore`: a full checkpoint of `SCALE_RESTORE_KEYS` (default 5M) heap
//!   keys (in-memory storage), restored into a fresh heap backend (median
//!   of 3), beside decoding the same file alone.
//!
//! Each runs in a child process of its own, so peak memory is its own.
//! `cargo bench --bench scale` prints a markdown table and writes it to
//! `target/state-bench/scale.md` (or `BENCH_REPORT_DIR`);
//! `SCALE_ONLY=heap,restore` picks some.

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::{
    CheckpointStorageAccess, KeyedStateBackendExt, SnapshotOptions, StateBackendFactory,
};
use state_benches::backends::{fresh_context, value_backend};
use state_benches::{dir_bytes, env_or, report_dir};
use state_heap::HeapBackendFactory;
use state_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbMemory};
use state_storage::ObjectStoreCheckpointStorage;

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`), Linux only.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// A bijection of `0..2^64` that scatters consecutive indices (odd
/// multiplier), so reads hit random keys.
fn scatter(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn storage() -> Arc<dyn CheckpointStorageAccess> {
    Arc::new(ObjectStoreCheckpointStorage::in_memory("scale").expect("storage"))
}

/// Loads `n` keys `0..n` (values = keys), then reads 1M random ones.
fn rocksdb(n: u64) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RocksDbConfig::new(dir.path())
        .with_memory(RocksDbMemory::new(1 << 30).expect("valid memory budget"));
    let (mut backend, state) = value_backend(&RocksDbBackendFactory::new(config), storage());
    let b = &mut *backend;
    let start = Instant::now();
    let mut lines = Vec::new();
    let step = (n / 10).max(1);
    let mut last = Instant::now();
    for i in 0..n {
        b.set_key(&i).expect("key");
        state.update(b, &i).expect("write");
        if (i + 1) % step == 0 {
            eprintln!(
                "  rocksdb: {} keys, {:.0} ops/s over the last {step}, RSS {}",
                i + 1,
                step as f64 / last.elapsed().as_secs_f64(),
                gib(status_bytes("VmRSS:").unwrap_or(0))
            );
            last = Instant::now();
        }
    }
    let load = start.elapsed();
    let reads = 1_000_000u64;
    let start = Instant::now();
    let mut found = 0u64;
    for i in 0..reads {
        let key = scatter(i) % n;
        b.set_key(&key).expect("key");
        found += u64::from(state.value(b).expect("read").is_some());
    }
    let read = start.elapsed();
    assert_eq!(found, reads, "every key written is read back");
    lines.push(format!(
        "| RocksDB, 1 GiB managed memory | {n} | {:.0} | {:.0} | {} | {} |",
        n as f64 / load.as_secs_f64(),
        reads as f64 / read.as_secs_f64(),
        gib(status_bytes("VmHWM:").unwrap_or(0)),
        gib(dir_bytes(dir.path()))
    ));
    lines
}

/// Loads `n` keys into the heap backend: resident bytes per entry.
fn heap(n: u64) -> Vec<String> {
    let before = status_bytes("VmRSS:").unwrap_or(0);
    let (mut backend, state) = value_backend(&HeapBackendFactory::new(), storage());
    let b = &mut *backend;
    let start = Instant::now();
    for i in 0..n {
        b.set_key(&i).expect("key");
        state.update(b, &i).expect("write");
    }
    let load = start.elapsed();
    let after = status_bytes("VmRSS:").unwrap_or(0);
    let reads = 1_000_000u64;
    let start = Instant::now();
    for i in 0..reads {
        b.set_key(&(scatter(i) % n)).expect("key");
        black_box(state.value(b).expect("read"));
    }
    let read = start.elapsed();
    vec![format!(
        "| heap | {n} | {:.0} | {:.0} | {} ({} bytes per entry) | - |",
        n as f64 / load.as_secs_f64(),
        reads as f64 / read.as_secs_f64(),
        gib(status_bytes("VmHWM:").unwrap_or(0)),
        after.saturating_sub(before) / n.max(1)
    )]
}

/// A full checkpoint of `n` heap keys, restored three times.
fn restore(n: u64) -> Vec<String> {
    let storage = storage();
    let factory = HeapBackendFactory::new();
    let (mut backend, state) = value_backend(&factory, Arc::clone(&storage));
    let b = &mut *backend;
    for i in 0..n {
        b.set_key(&i).expect("key");
        state.update(b, &i).expect("write");
    }
    let result = b
        .snapshot(1, &SnapshotOptions::checkpoint(0), Arc::clone(&storage))
        .expect("sync phase")
        .run()
        .expect("async phase");
    drop(backend);
    let mut times = Vec::new();
    let mut read_times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for file in result.handle.files() {
            black_box(storage.read(file).expect("read"));
        }
        read_times.push(start.elapsed());
        let mut context = fresh_context("scale", Arc::clone(&storage));
        context.restore = vec![result.handle.clone()];
        let start = Instant::now();
        let restored = factory.create(context).expect("restore");
        times.push(start.elapsed());
        drop(restored);
    }
    times.sort();
    read_times.sort();
    vec![format!(
        "| heap restore, full checkpoint | {n} | restore {:.0} ms (median of 3; reading the file alone {:.0} ms) | | {} | {:.1} MiB |",
        ms(times[1]),
        ms(read_times[1]),
        gib(status_bytes("VmHWM:").unwrap_or(0)),
        result.handle.state_size() as f64 / (1 << 20) as f64
    )]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let lines = match args.get(i + 1).map(String::as_str) {
            Some("rocksdb") => rocksdb(env_or("SCALE_ROCKSDB_KEYS", 100_000_000)),
            Some("heap") => heap(env_or("SCALE_HEAP_KEYS", 20_000_000)),
            Some("restore") => restore(env_or("SCALE_RESTORE_KEYS", 5_000_000)),
            other => panic!("unknown child {other:?}"),
        };
        for line in lines {
            println!("{line}");
        }
        return Ok(());
    }
    if !args.iter().any(|a| a == "--bench") {
        return Ok(()); // built by `cargo test --benches`; runs only with --bench
    }
    let only = std::env::var("SCALE_ONLY").unwrap_or_else(|_| "heap,restore,rocksdb".into());
    let mut table = vec![
        "| backend | keys | load ops/s | random read ops/s | peak RSS | on disk / checkpoint |"
            .to_string(),
        "|---|---:|---:|---:|---:|---:|".to_string(),
    ];
    for child in only.split(',').map(str::trim) {
        eprintln!("scale: {child}");
        let output = Command::new(std::env::current_exe()?)
            .args(["--child", child])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !output.status.success() {
            eprintln!("scale: {child} failed: {}", output.status);
            continue;
        }
        table.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(String::from),
        );
    }
    let report = table.join("\n") + "\n";
    println!("{report}");
    std::fs::write(report_dir()?.join("scale.md"), report)
}
