//! cargo-fuzz target `encoding`: see `smsgate::fuzzing::encoding`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::encoding(data));
