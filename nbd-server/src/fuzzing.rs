//! A whole NBD session driven from one byte string, without sockets: the bytes are
//! the client's side of the conversation. Used by the cargo-fuzz target and by the
//! random-bytes property test, so both exercise exactly the code the server runs
//! (handshake, header decoding, validation, dispatch against a `MemExport`, reply
//! encoding). It must never panic, whatever the input.

use std::sync::Arc;

use crate::export::ExportTable;
use crate::mem_export::MemExport;
use crate::proto::{reply, validate, Handshake, ReplyTo, RequestHeader, Session, Status};
use crate::server::dispatch::execute;

/// Size of the fuzzed exports: small, so that any valid READ stays cheap.
const FUZZ_EXPORT_BYTES: u64 = 256 << 10;

/// What a session did, for assertions in tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Bytes the server would have sent.
    pub bytes_out: usize,
    /// The handshake reached transmission.
    pub transmission: bool,
    /// Requests answered in transmission.
    pub nr_requests: usize,
}

/// Runs the server side of a session over `input`. The first byte picks how the input
/// is chunked (the handshake must not depend on chunk boundaries).
pub fn run_session(input: &[u8]) -> SessionSummary {
    let table = ExportTable::new();
    table.insert("", "default", Arc::new(MemExport::new(FUZZ_EXPORT_BYTES)));
    let ro = MemExport::new(FUZZ_EXPORT_BYTES).with_read_only(true);
    table.insert("ro", "read-only", Arc::new(ro));
    let mut summary = SessionSummary::default();
    let (chunk, input) = match input.split_first() {
        Some((c, rest)) => (usize::from(*c).max(1), rest),
        None => return summary,
    };
    let mut hs = Handshake::new(Arc::new(table));
    let mut pos = 0;
    while hs.status() == Status::NeedInput && pos < input.len() {
        let end = (pos + chunk).min(input.len());
        match hs.receive(&input[pos..end]) {
            Ok(n) => {
                assert!(n <= end - pos);
                assert!(n == end - pos || hs.status() != Status::NeedInput);
                pos += n;
            }
            Err(_) => return summary,
        }
        summary.bytes_out += hs.take_output().len();
    }
    summary.bytes_out += hs.take_output().len();
    let Some(negotiated) = hs.into_negotiated() else {
        return summary;
    };
    summary.transmission = true;
    let session = Session::from_negotiated(&negotiated);
    let mode = session.mode;
    let mut rest = &input[pos..];
    let mut out = Vec::new();
    while rest.len() >= mode.request_header_len() {
        let Ok(header) = RequestHeader::decode(mode, rest) else {
            break;
        };
        rest = &rest[mode.request_header_len()..];
        if header.command == crate::proto::consts::CMD_DISC {
            break;
        }
        let Ok(n) = header.checked_payload_len(mode) else {
            break;
        };
        if rest.len() < n {
            break;
        }
        let (payload, tail) = rest.split_at(n);
        rest = tail;
        let to = ReplyTo { mode, cookie: header.cookie, offset: header.offset };
        out.clear();
        match validate(&header, &session) {
            Ok(cmd) => execute(negotiated.export.as_ref(), &session, to, cmd, payload, &mut out),
            Err(errno) => reply::error(&mut out, to, errno),
        }
        assert!(!out.is_empty(), "every request gets a reply");
        summary.bytes_out += out.len();
        summary.nr_requests += 1;
    }
    summary
}
