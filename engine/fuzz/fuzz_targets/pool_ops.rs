#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| thinly_engine_fuzz::pool_ops(data));
