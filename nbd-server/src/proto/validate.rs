//! Request validation: the one place where a decoded header becomes a `Command` or an
//! error reply (§10 step 4, §7.6). The order of checks is the spec's: command known
//! and advertised; flags allowed; read-only; range; alignment; meta contexts.
//! DISC never gets here: the reader stops at it.

use super::consts::*;
use super::error::NbdErrno;
use super::handshake::Negotiated;
use super::meta::MetaContext;
use super::request::{HeaderMode, RequestHeader};
use crate::limits::{MAX_DF_READ_BYTES, MAX_PAYLOAD_BYTES};

/// What validation needs to know about a connection in transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Header mode.
    pub mode: HeaderMode,
    /// Export size, fixed for the connection.
    pub size_bytes: u64,
    /// Transmission flags advertised.
    pub transmission_flags: u16,
    /// Minimum block size the client promised to obey, if it asked for it.
    pub enforced_min_block: Option<u32>,
    /// Selected meta contexts.
    pub contexts: Vec<MetaContext>,
}

impl Session {
    /// The session of a finished handshake.
    pub fn from_negotiated(n: &Negotiated) -> Self {
        Self {
            mode: n.mode,
            size_bytes: n.export.size_bytes(),
            transmission_flags: n.transmission_flags,
            enforced_min_block: n.block_size_acked.then_some(n.block_sizes.minimum),
            contexts: n.contexts.clone(),
        }
    }

    fn advertised(&self, flag: u16) -> bool {
        self.transmission_flags & flag != 0
    }
}

/// A validated request, ready for the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `len` bytes; `df`: answer in one content chunk.
    Read { offset: u64, len: u64, df: bool },
    /// Write the payload at `offset`.
    Write { offset: u64, len: u64, fua: bool },
    /// Make completed writes durable.
    Flush,
    /// Discard hint.
    Trim { offset: u64, len: u64, fua: bool },
    /// Prefetch hint.
    Cache { offset: u64, len: u64 },
    /// Make the range read as zeroes.
    WriteZeroes { offset: u64, len: u64, may_trim: bool, fast_only: bool, fua: bool },
    /// Report status for each selected context.
    BlockStatus { offset: u64, len: u64, req_one: bool },
}

/// Flags each command may carry (FUA is allowed everywhere once advertised, §7.2).
fn allowed_flags(command: u16, s: &Session) -> u16 {
    let fua = if s.advertised(FLAG_SEND_FUA) { CMD_FLAG_FUA } else { 0 };
    let ext = if s.mode == HeaderMode::Extended { CMD_FLAG_PAYLOAD_LEN } else { 0 };
    fua | match command {
        CMD_READ if s.advertised(FLAG_SEND_DF) => CMD_FLAG_DF,
        CMD_WRITE => ext,
        CMD_WRITE_ZEROES if s.advertised(FLAG_SEND_FAST_ZERO) => {
            CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO
        }
        CMD_WRITE_ZEROES => CMD_FLAG_NO_HOLE,
        CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
        _ => 0,
    }
}

/// Checks a request against the session. `Err` is the error to send; any payload has
/// already been read, so the stream stays in sync whatever happens here.
pub fn validate(h: &RequestHeader, s: &Session) -> Result<Command, NbdErrno> {
    use NbdErrno::{Inval, NoSpc, Perm};
    let writes = matches!(h.command, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    let read_only = s.advertised(FLAG_READ_ONLY);
    // 1. Known and advertised. Read-only is checked first for write-type commands so
    // that they fail with EPERM, as §7.3 suggests, though TRIM/ZEROES are not
    // advertised on read-only exports.
    if writes && read_only {
        return Err(Perm);
    }
    let advertised = match h.command {
        CMD_READ | CMD_WRITE | CMD_CACHE => true,
        CMD_FLUSH => s.advertised(FLAG_SEND_FLUSH),
        CMD_TRIM => s.advertised(FLAG_SEND_TRIM),
        CMD_WRITE_ZEROES => s.advertised(FLAG_SEND_WRITE_ZEROES),
        CMD_BLOCK_STATUS => s.mode.chunked(),
        _ => false,
    };
    if !advertised {
        return Err(Inval);
    }
    // 2. Flags. In extended mode only WRITE may carry PAYLOAD_LEN (we do not
    // advertise BLOCK_STAT_PAYLOAD); WRITE without it is tolerated (see
    // `RequestHeader::payload_len`).
    if h.flags & !allowed_flags(h.command, s) != 0 {
        return Err(Inval);
    }
    let fua = h.flags & CMD_FLAG_FUA != 0;
    let (offset, len) = (h.offset, h.length);
    if h.command == CMD_FLUSH {
        return if offset == 0 && len == 0 { Ok(Command::Flush) } else { Err(Inval) };
    }
    // 4. Range (3, read-only, was done above).
    let in_range = offset.checked_add(len).is_some_and(|end| end <= s.size_bytes);
    if !in_range {
        return Err(if matches!(h.command, CMD_WRITE | CMD_WRITE_ZEROES) { NoSpc } else { Inval });
    }
    // 5. Alignment, only if the client promised it (else the export copes, §5).
    if let Some(min) = s.enforced_min_block {
        let min = u64::from(min);
        if offset % min != 0 || len % min != 0 {
            return Err(Inval);
        }
    }
    match h.command {
        CMD_READ => {
            let df = h.flags & CMD_FLAG_DF != 0;
            if df && len > MAX_DF_READ_BYTES {
                return Err(NbdErrno::Overflow);
            }
            if len > MAX_PAYLOAD_BYTES {
                return Err(Inval);
            }
            Ok(Command::Read { offset, len, df })
        }
        CMD_WRITE => Ok(Command::Write { offset, len, fua }),
        CMD_TRIM => Ok(Command::Trim { offset, len, fua }),
        CMD_CACHE => Ok(Command::Cache { offset, len }),
        CMD_WRITE_ZEROES => Ok(Command::WriteZeroes {
            offset,
            len,
            may_trim: h.flags & CMD_FLAG_NO_HOLE == 0,
            fast_only: h.flags & CMD_FLAG_FAST_ZERO != 0,
            fua,
        }),
        // 6. Contexts; a zero length cannot be answered with a non-empty extent.
        _ => {
            if s.contexts.is_empty() || len == 0 {
                return Err(Inval);
            }
            Ok(Command::BlockStatus { offset, len, req_one: h.flags & CMD_FLAG_REQ_ONE != 0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(mode: HeaderMode, flags: u16) -> Session {
        Session {
            mode,
            size_bytes: 1 << 20,
            transmission_flags: flags,
            enforced_min_block: Some(512),
            contexts: vec![MetaContext::BaseAllocation],
        }
    }

    const RW: u16 = 0x0ded;

    fn req(command: u16, flags: u16, offset: u64, length: u64) -> RequestHeader {
        RequestHeader { flags, command, cookie: 1, offset, length }
    }

    #[test]
    fn reads_and_writes_inside_the_export_are_accepted() {
        let s = session(HeaderMode::Structured, RW);
        let r = validate(&req(CMD_READ, CMD_FLAG_DF, 0, 4096), &s);
        assert_eq!(r, Ok(Command::Read { offset: 0, len: 4096, df: true }));
        let w = validate(&req(CMD_WRITE, CMD_FLAG_FUA, 512, 512), &s);
        assert_eq!(w, Ok(Command::Write { offset: 512, len: 512, fua: true }));
    }

    #[test]
    fn out_of_range_writes_are_enospc_and_reads_einval() {
        let s = session(HeaderMode::Structured, RW);
        assert_eq!(validate(&req(CMD_WRITE, 0, 1 << 20, 512), &s), Err(NbdErrno::NoSpc));
        assert_eq!(validate(&req(CMD_WRITE_ZEROES, 0, u64::MAX, 512), &s), Err(NbdErrno::NoSpc));
        assert_eq!(validate(&req(CMD_READ, 0, (1 << 20) - 512, 1024), &s), Err(NbdErrno::Inval));
        assert_eq!(validate(&req(CMD_TRIM, 0, u64::MAX - 1, 2), &s), Err(NbdErrno::Inval));
    }

    #[test]
    fn unknown_commands_and_flags_are_einval() {
        let s = session(HeaderMode::Structured, RW);
        assert_eq!(validate(&req(99, 0, 0, 0), &s), Err(NbdErrno::Inval));
        assert_eq!(validate(&req(CMD_RESIZE, 0, 0, 0), &s), Err(NbdErrno::Inval));
        assert_eq!(validate(&req(CMD_READ, CMD_FLAG_NO_HOLE, 0, 512), &s), Err(NbdErrno::Inval));
        assert_eq!(
            validate(&req(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 0, 512), &s),
            Err(NbdErrno::Inval)
        );
        assert_eq!(validate(&req(CMD_FLUSH, 0, 0, 1), &s), Err(NbdErrno::Inval));
    }

    #[test]
    fn df_is_refused_when_not_advertised() {
        let s = session(HeaderMode::Compact, RW & !FLAG_SEND_DF);
        assert_eq!(validate(&req(CMD_READ, CMD_FLAG_DF, 0, 512), &s), Err(NbdErrno::Inval));
    }

    #[test]
    fn write_type_commands_on_read_only_exports_are_eperm() {
        let ro = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH | FLAG_SEND_FUA;
        let s = session(HeaderMode::Structured, ro);
        for cmd in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
            assert_eq!(validate(&req(cmd, 0, 0, 512), &s), Err(NbdErrno::Perm));
        }
        assert!(validate(&req(CMD_READ, 0, 0, 512), &s).is_ok());
    }

    #[test]
    fn misaligned_requests_fail_only_when_the_client_promised_alignment() {
        let mut s = session(HeaderMode::Structured, RW);
        assert_eq!(validate(&req(CMD_READ, 0, 1, 512), &s), Err(NbdErrno::Inval));
        s.enforced_min_block = None;
        assert!(validate(&req(CMD_READ, 0, 1, 512), &s).is_ok());
    }

    #[test]
    fn block_status_needs_a_context_and_a_length() {
        let mut s = session(HeaderMode::Structured, RW);
        assert_eq!(validate(&req(CMD_BLOCK_STATUS, 0, 0, 0), &s), Err(NbdErrno::Inval));
        assert!(validate(&req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 512), &s).is_ok());
        s.contexts.clear();
        assert_eq!(validate(&req(CMD_BLOCK_STATUS, 0, 0, 512), &s), Err(NbdErrno::Inval));
    }

    #[test]
    fn extended_writes_may_carry_payload_len_and_others_must_not() {
        let s = session(HeaderMode::Extended, RW);
        assert!(validate(&req(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 0, 512), &s).is_ok());
        assert!(validate(&req(CMD_WRITE, 0, 0, 512), &s).is_ok());
        let bs = req(CMD_BLOCK_STATUS, CMD_FLAG_PAYLOAD_LEN, 0, 512);
        assert_eq!(validate(&bs, &s), Err(NbdErrno::Inval));
    }

    #[test]
    fn zero_length_reads_are_valid() {
        let s = session(HeaderMode::Compact, RW & !FLAG_SEND_DF);
        assert_eq!(
            validate(&req(CMD_READ, 0, 0, 0), &s),
            Ok(Command::Read { offset: 0, len: 0, df: false })
        );
    }
}
