//! cargo-fuzz target `api_send`: see `smsgate::fuzzing::api_send`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::api_send(data));
