//! Fuzz target `config`: see `state_testkit::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::config(data));
