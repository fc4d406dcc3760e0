//! cargo-fuzz target `dlr_receipt`: see `smsgate::fuzzing::dlr_receipt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate::fuzzing::dlr_receipt(data));
