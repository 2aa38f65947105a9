//! Fuzz target `state_files`: see `state_testkit::fuzz::state_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::state_files(data));
