//! Runs one validated command against an `Export` and encodes the whole reply into a
//! buffer. No sockets: the connection sends the buffer with one write. Because the
//! reply is complete before anything is sent, an export error can never strike after
//! a success header went out (§6.3), and chunk order is under our control.

use crate::export::{Export, Extent, ZeroFlags, STATE_ZERO};
use crate::limits::{MAX_BLOCK_STATUS_QUERY_BYTES, MAX_EXTENTS_PER_CHUNK};
use crate::proto::reply::{self, ReplyTo};
use crate::proto::{Command, HeaderMode, MetaContext, NbdErrno, Session};

/// Executes `cmd` (with `payload` for WRITE) and appends its reply to `out`.
pub fn execute(
    export: &dyn Export,
    session: &Session,
    to: ReplyTo,
    cmd: Command,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let result = match cmd {
        Command::Read { offset, len, df } => return read(export, to, offset, len, df, out),
        Command::BlockStatus { offset, len, req_one } => {
            return block_status(export, session, to, offset, len, req_one, out)
        }
        Command::Write { offset, len, fua } => {
            debug_assert_eq!(payload.len() as u64, len);
            if len == 0 {
                Ok(())
            } else {
                export.write(offset, payload, fua)
            }
        }
        Command::Flush => export.flush(),
        Command::Trim { len: 0, .. } | Command::Cache { len: 0, .. } => Ok(()),
        Command::WriteZeroes { len: 0, .. } => Ok(()),
        Command::Trim { offset, len, fua } => export.trim(offset, len, fua),
        Command::Cache { offset, len } => export.cache(offset, len),
        Command::WriteZeroes { offset, len, may_trim, fast_only, fua } => {
            export.write_zeroes(offset, len, ZeroFlags { may_trim, fast_only, fua })
        }
    };
    match result {
        Ok(()) => reply::ok(out, to),
        Err(e) => reply::error(out, to, NbdErrno::from_io_error(&e)),
    }
}

/// A piece of a READ reply: data to read, or a hole that reads as zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    offset: u64,
    len: u64,
    hole: bool,
}

/// Splits a read into data and hole pieces using `block_status`. Ranges the export did
/// not describe (or an error) are data: that is always correct, only slower.
fn read_pieces(export: &dyn Export, offset: u64, len: u64) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut pos = offset;
    let end = offset + len;
    for ext in export.block_status(offset, len).unwrap_or_default() {
        if pos >= end || ext.length == 0 {
            break;
        }
        let n = ext.length.min(end - pos);
        let hole = ext.flags & STATE_ZERO != 0;
        match pieces.last_mut() {
            Some(p) if p.hole == hole => p.len += n,
            _ => pieces.push(Piece { offset: pos, len: n, hole }),
        }
        pos += n;
    }
    if pos < end {
        match pieces.last_mut() {
            Some(p) if !p.hole => p.len += end - pos,
            _ => pieces.push(Piece { offset: pos, len: end - pos, hole: false }),
        }
    }
    pieces
}

fn read(export: &dyn Export, to: ReplyTo, offset: u64, len: u64, df: bool, out: &mut Vec<u8>) {
    let start = out.len();
    let n = len as usize; // validate() capped len at MAX_PAYLOAD_BYTES
    if to.mode == HeaderMode::Compact {
        reply::simple(out, to.cookie, 0);
        let data_at = out.len();
        out.resize(data_at + n, 0);
        if let Err(e) = export.read(offset, &mut out[data_at..]) {
            out.truncate(start);
            reply::error(out, to, NbdErrno::from_io_error(&e));
        }
        return;
    }
    if len == 0 {
        return reply::ok(out, to);
    }
    let pieces = if df {
        vec![Piece { offset, len, hole: false }]
    } else {
        read_pieces(export, offset, len)
    };
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let done = i == last;
        if piece.hole {
            // Pieces are ≤ len ≤ MAX_PAYLOAD_BYTES, so they fit the 32-bit hole size.
            reply::offset_hole(out, to, done, piece.offset, piece.len as u32);
            continue;
        }
        reply::offset_data_header(out, to, done, piece.offset, piece.len);
        let data_at = out.len();
        out.resize(data_at + piece.len as usize, 0);
        if let Err(e) = export.read(piece.offset, &mut out[data_at..]) {
            // Nothing was sent yet: replace the whole reply by one error chunk.
            out.truncate(start);
            return reply::error(out, to, NbdErrno::from_io_error(&e));
        }
    }
}

/// Clips runs to `[0, len)` from the request offset, drops empty runs, merges equal
/// neighbours, and caps the count; REQ_ONE keeps only the first.
fn shape_extents(
    runs: impl IntoIterator<Item = (u64, u32)>,
    len: u64,
    req_one: bool,
) -> Vec<(u64, u32)> {
    let limit = if req_one { 1 } else { MAX_EXTENTS_PER_CHUNK };
    let mut out: Vec<(u64, u32)> = Vec::new();
    let mut covered = 0u64;
    for (run_len, flags) in runs {
        if covered >= len {
            break;
        }
        let n = run_len.min(len - covered);
        if n == 0 {
            continue;
        }
        covered += n;
        let full = out.len() == limit;
        match out.last_mut() {
            Some((l, f)) if *f == flags => *l += n,
            _ if full => break,
            _ => out.push((n, flags)),
        }
    }
    if out.is_empty() {
        // Status 0 is always a safe answer (§7.4).
        out.push((len, 0));
    }
    out
}

fn block_status(
    export: &dyn Export,
    session: &Session,
    to: ReplyTo,
    offset: u64,
    len: u64,
    req_one: bool,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let query = len.min(MAX_BLOCK_STATUS_QUERY_BYTES);
    let last = session.contexts.len().saturating_sub(1);
    for (i, ctx) in session.contexts.iter().enumerate() {
        let runs = match ctx {
            MetaContext::BaseAllocation => export.block_status(offset, query).map(|v| {
                v.into_iter().map(|Extent { length, flags }| (length, flags)).collect::<Vec<_>>()
            }),
            MetaContext::AllocationDepth => export.allocation_depth(offset, query),
        };
        match runs {
            Ok(runs) => {
                let extents = shape_extents(runs, query, req_one);
                reply::block_status(out, to, i == last, ctx.id(), &extents);
            }
            Err(e) => {
                out.truncate(start);
                return reply::error(out, to, NbdErrno::from_io_error(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_export::MemExport;
    use crate::proto::consts::*;

    fn session(mode: HeaderMode) -> Session {
        Session {
            mode,
            size_bytes: 1 << 20,
            transmission_flags: 0x0ded,
            enforced_min_block: None,
            contexts: vec![MetaContext::BaseAllocation, MetaContext::AllocationDepth],
        }
    }

    fn chunk_types(mut buf: &[u8]) -> Vec<(u16, u16)> {
        let mut v = Vec::new();
        while buf.len() >= 20 {
            let flags = u16::from_be_bytes([buf[4], buf[5]]);
            let ty = u16::from_be_bytes([buf[6], buf[7]]);
            let len = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
            v.push((ty, flags));
            buf = &buf[20 + len..];
        }
        assert!(buf.is_empty());
        v
    }

    #[test]
    fn structured_read_of_a_sparse_range_sends_holes_and_data() {
        let m = MemExport::new(1 << 20);
        m.write(8192, &[7u8; 4096], false).unwrap();
        let to = ReplyTo { mode: HeaderMode::Structured, cookie: 1, offset: 0 };
        let mut out = Vec::new();
        let cmd = Command::Read { offset: 0, len: 16384, df: false };
        execute(&m, &session(HeaderMode::Structured), to, cmd, &[], &mut out);
        let d = (REPLY_TYPE_OFFSET_DATA, 0);
        let h = (REPLY_TYPE_OFFSET_HOLE, 0);
        assert_eq!(chunk_types(&out), vec![h, d, (REPLY_TYPE_OFFSET_HOLE, REPLY_FLAG_DONE)]);
    }

    #[test]
    fn df_read_is_one_data_chunk() {
        let m = MemExport::new(1 << 20);
        let to = ReplyTo { mode: HeaderMode::Structured, cookie: 1, offset: 0 };
        let mut out = Vec::new();
        let cmd = Command::Read { offset: 0, len: 16384, df: true };
        execute(&m, &session(HeaderMode::Structured), to, cmd, &[], &mut out);
        assert_eq!(chunk_types(&out), vec![(REPLY_TYPE_OFFSET_DATA, REPLY_FLAG_DONE)]);
        assert_eq!(out.len(), 20 + 8 + 16384);
    }

    #[test]
    fn block_status_answers_one_chunk_per_context_with_done_last() {
        let m = MemExport::new(1 << 20);
        m.write(0, &[1u8; 4096], false).unwrap();
        let to = ReplyTo { mode: HeaderMode::Structured, cookie: 1, offset: 0 };
        let mut out = Vec::new();
        let cmd = Command::BlockStatus { offset: 0, len: 1 << 20, req_one: false };
        execute(&m, &session(HeaderMode::Structured), to, cmd, &[], &mut out);
        let types = chunk_types(&out);
        assert_eq!(
            types,
            vec![(REPLY_TYPE_BLOCK_STATUS, 0), (REPLY_TYPE_BLOCK_STATUS, REPLY_FLAG_DONE)]
        );
    }

    #[test]
    fn extents_are_clipped_merged_and_req_one_keeps_the_first() {
        let runs = vec![(100, 3), (0, 0), (50, 3), (200, 0)];
        assert_eq!(shape_extents(runs.clone(), 300, false), vec![(150, 3), (150, 0)]);
        assert_eq!(shape_extents(runs, 300, true), vec![(150, 3)]);
        assert_eq!(shape_extents(Vec::new(), 300, true), vec![(300, 0)]);
    }

    #[test]
    fn export_errors_become_nbd_error_replies() {
        let m = MemExport::new(1 << 20).with_capacity_bytes(0);
        let to = ReplyTo { mode: HeaderMode::Compact, cookie: 9, offset: 0 };
        let mut out = Vec::new();
        let cmd = Command::Write { offset: 0, len: 4, fua: false };
        execute(&m, &session(HeaderMode::Compact), to, cmd, &[1, 2, 3, 4], &mut out);
        assert_eq!(&out[4..8], &28u32.to_be_bytes());
    }
}
