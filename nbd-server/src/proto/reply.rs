//! Reply encoding (§6.3–§6.6): simple replies, structured and extended chunks. Each
//! function appends one complete reply or chunk to `out`; the caller sends a whole
//! reply with one write under the connection's send lock (§10), so replies never
//! interleave inside a chunk.

use super::consts::*;
use super::error::NbdErrno;
use super::request::HeaderMode;
use super::wire::{put_u16, put_u32, put_u64};

/// Who a reply answers: the mode decides the framing; the cookie and (extended mode)
/// the request offset are echoed in every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// Negotiated header mode.
    pub mode: HeaderMode,
    /// The request's cookie.
    pub cookie: u64,
    /// The request's offset (echoed by extended chunks, §6.5).
    pub offset: u64,
}

/// A simple reply header (§6.3); READ data, if any, is appended by the caller.
pub fn simple(out: &mut Vec<u8>, cookie: u64, error: u32) {
    put_u32(out, SIMPLE_REPLY_MAGIC);
    put_u32(out, error);
    put_u64(out, cookie);
}

/// A structured or extended chunk header for a payload of `len` bytes.
pub fn chunk_header(out: &mut Vec<u8>, to: ReplyTo, done: bool, chunk_type: u16, len: u64) {
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    match to.mode {
        HeaderMode::Extended => {
            put_u32(out, EXTENDED_REPLY_MAGIC);
            put_u16(out, flags);
            put_u16(out, chunk_type);
            put_u64(out, to.cookie);
            put_u64(out, to.offset);
            put_u64(out, len);
        }
        _ => {
            debug_assert!(len <= u64::from(u32::MAX));
            put_u32(out, STRUCTURED_REPLY_MAGIC);
            put_u16(out, flags);
            put_u16(out, chunk_type);
            put_u64(out, to.cookie);
            put_u32(out, len as u32);
        }
    }
}

/// Success of a command without reply payload: a simple reply, or in extended mode a
/// NONE chunk with DONE (extended mode never uses simple replies).
pub fn ok(out: &mut Vec<u8>, to: ReplyTo) {
    match to.mode {
        HeaderMode::Extended => chunk_header(out, to, true, REPLY_TYPE_NONE, 0),
        _ => simple(out, to.cookie, 0),
    }
}

/// A failed request: a simple reply in compact mode, else an ERROR chunk with DONE.
pub fn error(out: &mut Vec<u8>, to: ReplyTo, errno: NbdErrno) {
    match to.mode {
        HeaderMode::Compact => simple(out, to.cookie, errno.code()),
        _ => {
            let msg = errno.message().as_bytes();
            chunk_header(out, to, true, REPLY_TYPE_ERROR, 6 + msg.len() as u64);
            put_u32(out, errno.code());
            put_u16(out, msg.len() as u16);
            out.extend_from_slice(msg);
        }
    }
}

/// An OFFSET_DATA chunk header for `len` data bytes at absolute `data_offset`; the
/// caller appends exactly `len` bytes.
pub fn offset_data_header(out: &mut Vec<u8>, to: ReplyTo, done: bool, data_offset: u64, len: u64) {
    chunk_header(out, to, done, REPLY_TYPE_OFFSET_DATA, 8 + len);
    put_u64(out, data_offset);
}

/// An OFFSET_HOLE chunk: `len` (≠ 0) bytes at `hole_offset` read as zeroes.
pub fn offset_hole(out: &mut Vec<u8>, to: ReplyTo, done: bool, hole_offset: u64, len: u32) {
    debug_assert!(len != 0);
    chunk_header(out, to, done, REPLY_TYPE_OFFSET_HOLE, 12);
    put_u64(out, hole_offset);
    put_u32(out, len);
}

/// A status chunk for `context_id`: BLOCK_STATUS (32-bit lengths) in structured
/// mode, BLOCK_STATUS_EXT in extended mode. `extents` is non-empty, lengths ≠ 0, and
/// in structured mode each length fits 32 bits (the caller clips to the request).
pub fn block_status(
    out: &mut Vec<u8>,
    to: ReplyTo,
    done: bool,
    context_id: u32,
    extents: &[(u64, u32)],
) {
    debug_assert!(!extents.is_empty());
    let n = extents.len() as u64;
    match to.mode {
        HeaderMode::Extended => {
            chunk_header(out, to, done, REPLY_TYPE_BLOCK_STATUS_EXT, 8 + 16 * n);
            put_u32(out, context_id);
            put_u32(out, n as u32);
            for &(len, flags) in extents {
                put_u64(out, len);
                put_u64(out, u64::from(flags));
            }
        }
        _ => {
            chunk_header(out, to, done, REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n);
            put_u32(out, context_id);
            for &(len, flags) in extents {
                debug_assert!(len <= u64::from(u32::MAX));
                put_u32(out, len as u32);
                put_u32(out, flags);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRUCT: ReplyTo = ReplyTo { mode: HeaderMode::Structured, cookie: 7, offset: 4096 };
    const EXT: ReplyTo = ReplyTo { mode: HeaderMode::Extended, cookie: 7, offset: 4096 };

    #[test]
    fn simple_reply_is_sixteen_bytes() {
        let mut out = Vec::new();
        simple(&mut out, 0x0102_0304_0506_0708, 22);
        assert_eq!(out.len(), SIMPLE_REPLY_LEN);
        assert_eq!(&out[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[4..8], &22u32.to_be_bytes());
        assert_eq!(&out[8..], &0x0102_0304_0506_0708u64.to_be_bytes());
    }

    #[test]
    fn extended_success_is_a_none_chunk_with_done() {
        let mut out = Vec::new();
        ok(&mut out, EXT);
        assert_eq!(out.len(), EXTENDED_CHUNK_HEADER_LEN);
        assert_eq!(&out[..4], &EXTENDED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[4..6], &REPLY_FLAG_DONE.to_be_bytes());
        assert_eq!(&out[6..8], &REPLY_TYPE_NONE.to_be_bytes());
        assert_eq!(&out[16..24], &4096u64.to_be_bytes());
        assert_eq!(&out[24..32], &0u64.to_be_bytes());
    }

    #[test]
    fn error_chunk_carries_errno_and_message_length() {
        let mut out = Vec::new();
        error(&mut out, STRUCT, NbdErrno::NoSpc);
        let len = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
        assert_eq!(out.len(), STRUCTURED_CHUNK_HEADER_LEN + len);
        assert_eq!(&out[6..8], &REPLY_TYPE_ERROR.to_be_bytes());
        assert_eq!(&out[20..24], &28u32.to_be_bytes());
        let m = u16::from_be_bytes(out[24..26].try_into().unwrap()) as usize;
        assert_eq!(m + 6, len);
    }

    #[test]
    fn block_status_chunks_have_the_documented_lengths() {
        let mut out = Vec::new();
        block_status(&mut out, STRUCT, true, 1, &[(4096, 3), (512, 0)]);
        assert_eq!(out.len(), STRUCTURED_CHUNK_HEADER_LEN + 4 + 16);
        let mut out = Vec::new();
        block_status(&mut out, EXT, true, 1, &[(4096, 3), (512, 0)]);
        assert_eq!(out.len(), EXTENDED_CHUNK_HEADER_LEN + 8 + 32);
        assert_eq!(&out[6..8], &REPLY_TYPE_BLOCK_STATUS_EXT.to_be_bytes());
    }

    #[test]
    fn hole_chunk_payload_is_twelve_bytes() {
        let mut out = Vec::new();
        offset_hole(&mut out, STRUCT, false, 8192, 4096);
        assert_eq!(out.len(), STRUCTURED_CHUNK_HEADER_LEN + 12);
        assert_eq!(&out[4..6], &0u16.to_be_bytes());
    }
}
