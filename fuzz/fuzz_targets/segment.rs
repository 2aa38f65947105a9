//! Fuzz target `segment`: see `state_testkit::fuzz::segment`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::segment(data));
