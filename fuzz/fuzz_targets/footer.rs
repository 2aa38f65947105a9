//! Fuzz target `footer`: see `state_testkit::fuzz::footer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_testkit::fuzz::footer(data));
