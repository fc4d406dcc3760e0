//! cargo-fuzz target `mo_reassembly`: see `smsgate::fuzzing::mo_reassembly`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::mo_reassembly(data));
