//! Benchmarks of the state backends; the code is in `benches/`.
//!
//! `cargo bench -p state-benches --bench heap` measures the heap backend's
//! per-operation cost beside plain `std` and `im` hash maps with the same
//! keys, and its synchronous snapshot phase at several state sizes.
