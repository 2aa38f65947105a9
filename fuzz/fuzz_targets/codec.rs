//! Fuzz target `codec`: see `state_testkit::fuzz::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::codec(data));
