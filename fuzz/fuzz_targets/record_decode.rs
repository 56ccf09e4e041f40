//! See `spool::fuzzing::record_decode_target` for the input layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| spool::fuzzing::record_decode_target(input));
