//! cargo-fuzz target `countries`: see `smsgate::fuzzing::countries`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::countries(data));
