//! Fuzzes the control-socket protocol with one client byte stream: line framing, the JSON
//! request parser and dispatch against an in-memory pool, with the oracles of
//! `thinly_server::fuzzing::control_session`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thinly_server::fuzzing::control_session(data);
});
