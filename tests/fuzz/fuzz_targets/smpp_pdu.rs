//! cargo-fuzz target `smpp_pdu`: see `smsgate::fuzzing::smpp_pdu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::smpp_pdu(data));
