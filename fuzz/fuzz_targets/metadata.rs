//! Fuzz target `metadata`: see `state_testkit::fuzz::metadata`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::metadata(data));
