//! Fuzz target `key_groups`: see `state_testkit::fuzz::key_groups`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::key_groups(data));
