//! Fuzzes the whole server-side protocol core with one client byte stream: handshake
//! state machine, request decoding, validation, dispatch against a MemExport and reply
//! encoding (see `thinly_nbd::fuzzing::run_session`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thinly_nbd::fuzzing::run_session(data);
});
