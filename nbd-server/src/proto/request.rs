//! Transmission request headers (§6.2): decoding, payload length, and (for tests and
//! fuzzing) encoding. Pure functions over byte slices.

use super::consts::*;
use super::error::ProtocolError;
use super::wire::{put_u16, put_u32, put_u64, Cursor};
use crate::limits::MAX_PAYLOAD_BYTES;

/// Which header formats the connection negotiated (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMode {
    /// Nothing negotiated: compact requests, simple replies only.
    Compact,
    /// `NBD_OPT_STRUCTURED_REPLY`: compact requests, structured chunks.
    Structured,
    /// `NBD_OPT_EXTENDED_HEADERS`: 32-byte requests, extended chunks only.
    Extended,
}

impl HeaderMode {
    /// Length of one request header in this mode.
    pub fn request_header_len(self) -> usize {
        match self {
            HeaderMode::Compact | HeaderMode::Structured => COMPACT_REQUEST_LEN,
            HeaderMode::Extended => EXTENDED_REQUEST_LEN,
        }
    }

    /// Whether replies with payloads are chunked (structured or extended).
    pub fn chunked(self) -> bool {
        self != HeaderMode::Compact
    }
}

/// A decoded request header. Nothing in it is validated beyond the magic; see
/// `validate` for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`CMD_*`), possibly unknown.
    pub command: u16,
    /// Opaque client cookie, echoed in every reply chunk.
    pub cookie: u64,
    /// Byte offset (the new size for RESIZE).
    pub offset: u64,
    /// Compact: 32-bit length. Extended: payload length if `PAYLOAD_LEN`, else effect
    /// length.
    pub length: u64,
}

impl RequestHeader {
    /// Decodes one header. A wrong magic for `mode` means the stream is lost.
    pub fn decode(mode: HeaderMode, buf: &[u8]) -> Result<Self, ProtocolError> {
        let need = mode.request_header_len();
        if buf.len() < need {
            return Err(ProtocolError::Truncated { need, got: buf.len() });
        }
        let mut c = Cursor::new(&buf[..need]);
        let truncated = ProtocolError::Truncated { need, got: buf.len() };
        let magic = c.u32().ok_or(truncated.clone())?;
        let expected = match mode {
            HeaderMode::Extended => EXTENDED_REQUEST_MAGIC,
            _ => REQUEST_MAGIC,
        };
        if magic != expected {
            return Err(ProtocolError::BadRequestMagic { magic, mode });
        }
        let flags = c.u16().ok_or(truncated.clone())?;
        let command = c.u16().ok_or(truncated.clone())?;
        let cookie = c.u64().ok_or(truncated.clone())?;
        let offset = c.u64().ok_or(truncated.clone())?;
        let length = match mode {
            HeaderMode::Extended => c.u64(),
            _ => c.u32().map(u64::from),
        }
        .ok_or(truncated)?;
        Ok(Self { flags, command, cookie, offset, length })
    }

    /// Bytes of payload that follow this header on the wire (§10 step 2): `length`
    /// for WRITE in every mode; in extended mode also for any command with
    /// `PAYLOAD_LEN`. (§6.2 says extended WRITE must carry `PAYLOAD_LEN`, but qemu 10
    /// sends WRITE with data and without the flag, as the final upstream text allows:
    /// a WRITE's length is always its payload length.)
    pub fn payload_len(&self, mode: HeaderMode) -> u64 {
        match mode {
            _ if self.command == CMD_WRITE => self.length,
            HeaderMode::Extended if self.flags & CMD_FLAG_PAYLOAD_LEN != 0 => self.length,
            _ => 0,
        }
    }

    /// `payload_len`, or the hard-disconnect error if it is over `MAX_PAYLOAD_BYTES`.
    pub fn checked_payload_len(&self, mode: HeaderMode) -> Result<usize, ProtocolError> {
        let len = self.payload_len(mode);
        if len > MAX_PAYLOAD_BYTES {
            return Err(ProtocolError::PayloadTooLong { len, max: MAX_PAYLOAD_BYTES });
        }
        usize::try_from(len)
            .map_err(|_| ProtocolError::PayloadTooLong { len, max: MAX_PAYLOAD_BYTES })
    }

    /// Encodes the header as a client would (tests, fuzzing). In compact modes the
    /// length is truncated to 32 bits.
    pub fn encode(&self, mode: HeaderMode, out: &mut Vec<u8>) {
        match mode {
            HeaderMode::Extended => put_u32(out, EXTENDED_REQUEST_MAGIC),
            _ => put_u32(out, REQUEST_MAGIC),
        }
        put_u16(out, self.flags);
        put_u16(out, self.command);
        put_u64(out, self.cookie);
        put_u64(out, self.offset);
        match mode {
            HeaderMode::Extended => put_u64(out, self.length),
            _ => put_u32(out, self.length as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(command: u16, flags: u16, length: u64) -> RequestHeader {
        RequestHeader { flags, command, cookie: 0xdead_beef_0102_0304, offset: 4096, length }
    }

    #[test]
    fn compact_and_extended_headers_round_trip() {
        for mode in [HeaderMode::Compact, HeaderMode::Structured, HeaderMode::Extended] {
            let h = header(CMD_WRITE, CMD_FLAG_FUA, 65536);
            let mut buf = Vec::new();
            h.encode(mode, &mut buf);
            assert_eq!(buf.len(), mode.request_header_len());
            assert_eq!(RequestHeader::decode(mode, &buf), Ok(h));
        }
    }

    #[test]
    fn extended_magic_in_compact_mode_is_a_protocol_error() {
        let mut buf = Vec::new();
        header(CMD_READ, 0, 512).encode(HeaderMode::Extended, &mut buf);
        let err = RequestHeader::decode(HeaderMode::Compact, &buf).unwrap_err();
        assert!(matches!(err, ProtocolError::BadRequestMagic { .. }));
    }

    #[test]
    fn short_buffers_are_truncated_not_panics() {
        for n in 0..32 {
            let buf = vec![0x25; n];
            assert!(RequestHeader::decode(HeaderMode::Extended, &buf).is_err());
        }
    }

    #[test]
    fn only_write_has_a_payload_in_compact_mode() {
        assert_eq!(header(CMD_WRITE, 0, 100).payload_len(HeaderMode::Compact), 100);
        assert_eq!(header(CMD_READ, 0, 100).payload_len(HeaderMode::Structured), 0);
        assert_eq!(header(CMD_WRITE, 0, 100).payload_len(HeaderMode::Extended), 100);
        assert_eq!(header(CMD_READ, 0, 100).payload_len(HeaderMode::Extended), 0);
        let h = header(CMD_BLOCK_STATUS, CMD_FLAG_PAYLOAD_LEN, 12);
        assert_eq!(h.payload_len(HeaderMode::Extended), 12);
    }

    #[test]
    fn payloads_over_the_limit_are_refused() {
        let h = header(CMD_WRITE, 0, MAX_PAYLOAD_BYTES + 1);
        assert!(h.checked_payload_len(HeaderMode::Compact).is_err());
        let h = header(CMD_WRITE, 0, MAX_PAYLOAD_BYTES);
        assert_eq!(h.checked_payload_len(HeaderMode::Compact), Ok(MAX_PAYLOAD_BYTES as usize));
    }
}
