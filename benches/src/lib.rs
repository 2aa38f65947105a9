//! Benchmarks of the state backends; the code is in `benches/`.
//!
//! `cargo bench -p state-benches --bench heap` measures the heap backend's
//! per-operation cost beside plain `std` and `im` hash maps with the same
//! keys, and its synchronous snapshot phase at several state sizes;
//! `--bench rocksdb` measures the RocksDB backend beside raw `rocksdb`
//! calls; `--bench changelog` measures the changelog wrapper's overhead on
//! state operations over both, and checkpoint cost against state size with
//! and without it; `--bench savepoint` prints the cost of native and
//! canonical savepoints and their restores (also across backends) beside
//! raw baselines. This library holds what they share.

/// `0..n` in a fixed pseudo-random order (Fisher-Yates with xorshift64*), so
/// every benchmark touches keys in the same random order.
///
/// ```
/// let keys = state_benches::shuffled_keys(10);
/// assert_eq!(keys.len(), 10);
/// assert_ne!(keys, (0..10).collect::<Vec<u64>>());
/// ```
pub fn shuffled_keys(n: usize) -> Vec<u64> {
    let mut keys: Vec<u64> = (0..n as u64).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..n).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let random = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        keys.swap(i, (random % (i as u64 + 1)) as usize);
    }
    keys
}
