//! cargo-fuzz target `api_batch`: see `smsgate::fuzzing::api_batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::api_batch(data));
