//! Fuzz target `records`: see `state_testkit::fuzz::records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::records(data));
