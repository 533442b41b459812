//! Runs one validated command against an `Export` and encodes the whole reply into a
//! buffer. No sockets: the connection sends the buffer with one write. Because the
//! reply is complete before anything is sent, an export error can never strike after
//! a success header went out (§6.3), and chunk order is under our control.

use crate::export::{zero_pieces, Export, Extent, ZeroFlags};
use crate::limits::{MAX_BLOCK_STATUS_QUERY_BYTES, MAX_EXTENTS_PER_CHUNK};
use crate::proto::consts::REPLY_TYPE_NONE;
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

/// Reads straight into the reply. Compact mode: a simple reply and the bytes. Structured
/// or extended: one OFFSET_DATA chunk covering the request, rebuilt into data and
/// OFFSET_HOLE chunks (in offset order, DONE on the last) only when the export reports
/// `STATE_ZERO` runs; DF asks for a single data chunk (§6.4), so it uses a plain `read`.
/// An error replaces the whole reply by one error chunk.
fn read(export: &dyn Export, to: ReplyTo, offset: u64, len: u64, df: bool, out: &mut Vec<u8>) {
    let start = out.len();
    let n = len as usize; // validate() capped len at MAX_PAYLOAD_BYTES
    match to.mode {
        HeaderMode::Compact => reply::simple(out, to.cookie, 0),
        // Chunked modes answer READ with chunks only, even with no data (§6.4): a NONE
        // chunk with DONE.
        _ if len == 0 => return reply::chunk_header(out, to, true, REPLY_TYPE_NONE, 0),
        _ => reply::offset_data_header(out, to, true, offset, len),
    }
    let data_at = out.len();
    let result = if to.mode == HeaderMode::Compact || df {
        out.resize(data_at + n, 0);
        export.read(offset, &mut out[data_at..]).map(|()| None)
    } else {
        export.read_sparse(offset, len, out).map(Some)
    };
    let result = match result {
        Ok(Some(runs)) => split_holes(out, to, start, data_at, offset, len, &runs),
        Ok(None) => Ok(()),
        Err(e) => Err(NbdErrno::from_io_error(&e)),
    };
    if let Err(errno) = result {
        // Nothing was sent yet: replace the whole reply by one error chunk.
        out.truncate(start);
        reply::error(out, to, errno);
    }
}

/// Turns the OFFSET_DATA chunk at `out[start..]` — the data of the `len` bytes read at
/// `offset`, from `data_at` on, without the `STATE_ZERO` runs of `runs` — into data and
/// OFFSET_HOLE chunks; leaves it alone if there are no such runs. `EIO` if the export
/// appended a different number of bytes than its runs say (a bug in the export).
fn split_holes(
    out: &mut Vec<u8>,
    to: ReplyTo,
    start: usize,
    data_at: usize,
    offset: u64,
    len: u64,
    runs: &[Extent],
) -> Result<(), NbdErrno> {
    let pieces = zero_pieces(runs, len);
    let data_len: u64 = pieces.iter().filter(|&&(_, zero)| !zero).map(|&(n, _)| n).sum();
    if (out.len() - data_at) as u64 != data_len {
        return Err(NbdErrno::Io);
    }
    if data_len == len {
        return Ok(()); // all data: the chunk is already complete
    }
    let data = out.split_off(data_at);
    out.truncate(start);
    let (mut at, mut data_pos, last) = (offset, 0usize, pieces.len() - 1);
    for (i, &(piece_len, zero)) in pieces.iter().enumerate() {
        let done = i == last;
        if zero {
            // Pieces are ≤ len ≤ MAX_PAYLOAD_BYTES, so they fit the 32-bit hole size.
            reply::offset_hole(out, to, done, at, piece_len as u32);
        } else {
            reply::offset_data_header(out, to, done, at, piece_len);
            out.extend_from_slice(&data[data_pos..data_pos + piece_len as usize]);
            data_pos += piece_len as usize;
        }
        at += piece_len;
    }
    Ok(())
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
            MetaContext::Extra { name, .. } => {
                let max_runs = if req_one { 1 } else { MAX_EXTENTS_PER_CHUNK };
                export.extra_meta_status(name, offset, query, max_runs)
            }
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

    fn chunk_types(buf: &[u8]) -> Vec<(u16, u16)> {
        chunks(buf).into_iter().map(|(ty, flags, _)| (ty, flags)).collect()
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

    /// Every chunk of a structured reply as (type, flags, payload).
    fn chunks(mut buf: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
        let mut v = Vec::new();
        while buf.len() >= 20 {
            let flags = u16::from_be_bytes([buf[4], buf[5]]);
            let ty = u16::from_be_bytes([buf[6], buf[7]]);
            let len = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
            v.push((ty, flags, buf[20..20 + len].to_vec()));
            buf = &buf[20 + len..];
        }
        assert!(buf.is_empty());
        v
    }

    /// An export with a fixed layout — `STATE_ZERO` at the `[from, to)` ranges of `holes`,
    /// bytes `0xAB` elsewhere — that counts its calls; `fail` makes reads fail with EIO.
    #[derive(Default)]
    struct Layout {
        holes: Vec<(u64, u64)>,
        fail: bool,
        /// Bytes appended beyond the data (a buggy export).
        nr_extra_bytes: usize,
        nr_sparse_reads: std::sync::atomic::AtomicU32,
        nr_other_calls: std::sync::atomic::AtomicU32,
    }

    impl Layout {
        fn other_call(&self) {
            self.nr_other_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Export for Layout {
        fn size_bytes(&self) -> u64 {
            1 << 20
        }
        fn read_only(&self) -> bool {
            true
        }
        fn can_multi_conn(&self) -> bool {
            true
        }
        fn preferred_block_size(&self) -> u32 {
            4096
        }
        fn read(&self, _offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.other_call();
            buf.fill(0xAB);
            Ok(())
        }
        fn read_sparse(
            &self,
            offset: u64,
            len: u64,
            out: &mut Vec<u8>,
        ) -> std::io::Result<Vec<Extent>> {
            self.nr_sparse_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fail {
                out.extend_from_slice(&[0xAB; 10]); // a partial read, which must not leak
                return Err(std::io::Error::from_raw_os_error(nix::errno::Errno::EIO as i32));
            }
            let mut runs = Vec::new();
            for pos in offset..offset + len {
                let hole = self.holes.iter().any(|&(from, to)| (from..to).contains(&pos));
                if !hole {
                    out.push(0xAB);
                }
                let flags = if hole { STATE_HOLE | STATE_ZERO } else { 0 };
                runs.push(Extent { length: 1, flags });
            }
            out.resize(out.len() + self.nr_extra_bytes, 0);
            Ok(runs)
        }
        fn write(&self, _: u64, _: &[u8], _: bool) -> std::io::Result<()> {
            unreachable!("read-only")
        }
        fn write_zeroes(&self, _: u64, _: u64, _: ZeroFlags) -> std::io::Result<()> {
            unreachable!("read-only")
        }
        fn trim(&self, _: u64, _: u64, _: bool) -> std::io::Result<()> {
            unreachable!("read-only")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn block_status(&self, _: u64, _: u64) -> std::io::Result<Vec<Extent>> {
            self.other_call();
            Ok(Vec::new())
        }
        fn allocation_depth(&self, _: u64, _: u64) -> std::io::Result<Vec<(u64, u32)>> {
            self.other_call();
            Ok(Vec::new())
        }
    }

    fn structured_read(export: &dyn Export, offset: u64, len: u64, df: bool) -> Vec<u8> {
        let to = ReplyTo { mode: HeaderMode::Structured, cookie: 1, offset };
        let mut out = Vec::new();
        let cmd = Command::Read { offset, len, df };
        execute(export, &session(HeaderMode::Structured), to, cmd, &[], &mut out);
        out
    }

    #[test]
    fn a_read_over_data_and_holes_is_answered_in_one_export_call_with_chunks_in_order() {
        let e = Layout { holes: vec![(1000, 3000), (5000, 6000)], ..Layout::default() };
        let out = structured_read(&e, 500, 6000, false);
        assert_eq!(e.nr_sparse_reads.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(e.nr_other_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let data = |at: u64, n: usize, flags: u16| {
            let mut p = at.to_be_bytes().to_vec();
            p.resize(8 + n, 0xAB);
            (REPLY_TYPE_OFFSET_DATA, flags, p)
        };
        let hole = |at: u64, n: u32| {
            let mut p = at.to_be_bytes().to_vec();
            p.extend_from_slice(&n.to_be_bytes());
            (REPLY_TYPE_OFFSET_HOLE, 0, p)
        };
        let expected = vec![
            data(500, 500, 0),
            hole(1000, 2000),
            data(3000, 2000, 0),
            hole(5000, 1000),
            data(6000, 500, REPLY_FLAG_DONE),
        ];
        assert_eq!(chunks(&out), expected);
    }

    #[test]
    fn a_read_that_is_all_data_or_all_hole_is_one_chunk() {
        let e = Layout { holes: vec![(8192, 16384)], ..Layout::default() };
        let out = structured_read(&e, 0, 8192, false);
        assert_eq!(chunk_types(&out), vec![(REPLY_TYPE_OFFSET_DATA, REPLY_FLAG_DONE)]);
        assert_eq!(out.len(), 20 + 8 + 8192);
        let out = structured_read(&e, 8192, 8192, false);
        assert_eq!(chunk_types(&out), vec![(REPLY_TYPE_OFFSET_HOLE, REPLY_FLAG_DONE)]);
        assert_eq!(out.len(), 20 + 12);
    }

    #[test]
    fn a_df_read_over_data_and_holes_is_one_data_chunk_with_the_zeroes() {
        let m = MemExport::new(1 << 20);
        m.write(4096, &[7u8; 4096], false).unwrap();
        let out = structured_read(&m, 0, 12288, true);
        let c = chunks(&out);
        assert_eq!(c.len(), 1);
        let (ty, flags, payload) = &c[0];
        assert_eq!((*ty, *flags), (REPLY_TYPE_OFFSET_DATA, REPLY_FLAG_DONE));
        let mut expected = 0u64.to_be_bytes().to_vec();
        expected.extend([0u8; 4096].iter().chain(&[7u8; 4096]).chain(&[0u8; 4096]));
        assert_eq!(payload, &expected);
    }

    #[test]
    fn a_failed_read_is_a_single_error_chunk() {
        let e = Layout { holes: vec![(0, 100)], fail: true, ..Layout::default() };
        let out = structured_read(&e, 0, 4096, false);
        let c = chunks(&out);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].0, c[0].1), (REPLY_TYPE_ERROR, REPLY_FLAG_DONE));
        assert_eq!(&c[0].2[..4], &NbdErrno::Io.code().to_be_bytes());
    }

    #[test]
    fn an_export_appending_other_than_its_data_gets_an_error_reply_not_a_bad_one() {
        let e = Layout { holes: vec![(100, 200)], nr_extra_bytes: 1, ..Layout::default() };
        let c = chunks(&structured_read(&e, 0, 300, false));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].0, c[0].1), (REPLY_TYPE_ERROR, REPLY_FLAG_DONE));
        assert_eq!(&c[0].2[..4], &NbdErrno::Io.code().to_be_bytes());
    }

    #[test]
    fn a_zero_length_read_in_structured_mode_is_one_none_chunk_not_a_simple_reply() {
        let m = MemExport::new(1 << 20);
        let out = structured_read(&m, 4096, 0, false);
        assert_eq!(chunks(&out), vec![(REPLY_TYPE_NONE, REPLY_FLAG_DONE, Vec::new())]);
        let to = ReplyTo { mode: HeaderMode::Extended, cookie: 1, offset: 0 };
        let mut out = Vec::new();
        let cmd = Command::Read { offset: 0, len: 0, df: false };
        execute(&m, &session(HeaderMode::Extended), to, cmd, &[], &mut out);
        assert_eq!(&out[..4], &EXTENDED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), REPLY_TYPE_NONE);
    }

    #[test]
    fn a_compact_read_is_the_bytes_after_a_simple_reply() {
        let e = Layout { holes: vec![(100, 200)], ..Layout::default() };
        let to = ReplyTo { mode: HeaderMode::Compact, cookie: 3, offset: 0 };
        let mut out = Vec::new();
        let cmd = Command::Read { offset: 0, len: 300, df: false };
        execute(&e, &session(HeaderMode::Compact), to, cmd, &[], &mut out);
        assert_eq!(out.len(), 16 + 300);
        assert_eq!(&out[4..8], &0u32.to_be_bytes());
        assert_eq!(e.nr_sparse_reads.load(std::sync::atomic::Ordering::SeqCst), 0);
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

    #[test]
    fn an_extra_context_is_answered_by_the_export_and_a_vanished_one_is_an_error_reply() {
        let e = crate::export::WithBitmaps(MemExport::new(1 << 20));
        let extra = |id, name: &str| MetaContext::Extra { id, name: name.into() };
        let mut s = session(HeaderMode::Structured);
        s.contexts = vec![MetaContext::BaseAllocation, extra(17, "qemu:dirty-bitmap:s1")];
        let to = ReplyTo { mode: HeaderMode::Structured, cookie: 1, offset: 0 };
        let cmd = Command::BlockStatus { offset: 0, len: 8192, req_one: false };
        let mut out = Vec::new();
        execute(&e, &s, to, cmd, &[], &mut out);
        let types = chunk_types(&out);
        assert_eq!(types[1], (REPLY_TYPE_BLOCK_STATUS, REPLY_FLAG_DONE));
        // The second chunk: header (20 bytes), id 17, one extent of 8192 bytes, dirty.
        let second = &out[out.len() - 12..];
        assert_eq!(
            second,
            [&17u32.to_be_bytes()[..], &8192u32.to_be_bytes(), &1u32.to_be_bytes()].concat()
        );
        s.contexts.push(extra(18, "qemu:dirty-bitmap:gone"));
        let mut out = Vec::new();
        execute(&e, &s, to, cmd, &[], &mut out);
        let types = chunk_types(&out);
        assert_eq!(types.len(), 1, "one error chunk replaces the whole reply");
        assert_eq!(types[0].1, REPLY_FLAG_DONE);
        assert_ne!(types[0].0 & 0x8000, 0, "an error chunk");
    }
}
