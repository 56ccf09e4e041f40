//! See `spool::fuzzing::frame_reader_target` for the input layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| spool::fuzzing::frame_reader_target(input));
