#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| thinly_engine_fuzz::metadata_open(data));
