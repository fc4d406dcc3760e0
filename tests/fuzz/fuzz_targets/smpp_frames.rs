//! cargo-fuzz target `smpp_frames`: see `smsgate::fuzzing::smpp_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::smpp_frames(data));
