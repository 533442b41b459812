//! The two kinds of failure in the protocol: an `NbdErrno` answers one request and the
//! connection goes on; a `ProtocolError` means the stream is lost or the peer broke a
//! MUST, and the connection is hard-disconnected.
//!
//! `NbdErrno::from_io_error` is the one place where host errors become NBD errors
//! (§7.5: never send a raw host errno).

use std::io;

use nix::errno::Errno;

use super::request::HeaderMode;

/// An NBD error value as sent in a simple reply or an error chunk (§7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NbdErrno {
    /// Write-type command on a read-only export; a refused operation.
    Perm,
    /// The backing store failed.
    Io,
    /// Out of memory; avoided where possible.
    NoMem,
    /// Bad request: out of range, unaligned, unknown command or flag.
    Inval,
    /// Write past the end, or the pool is out of space.
    NoSpc,
    /// A DF read or payload-less command too large to serve.
    Overflow,
    /// FAST_ZERO that cannot be fast.
    NotSup,
    /// The server is shutting down.
    Shutdown,
}

impl NbdErrno {
    /// The value on the wire.
    pub fn code(self) -> u32 {
        match self {
            NbdErrno::Perm => 1,
            NbdErrno::Io => 5,
            NbdErrno::NoMem => 12,
            NbdErrno::Inval => 22,
            NbdErrno::NoSpc => 28,
            NbdErrno::Overflow => 75,
            NbdErrno::NotSup => 95,
            NbdErrno::Shutdown => 108,
        }
    }

    /// Decodes a wire value; unknown values are `EINVAL`, as a client must treat them.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => NbdErrno::Perm,
            5 => NbdErrno::Io,
            12 => NbdErrno::NoMem,
            28 => NbdErrno::NoSpc,
            75 => NbdErrno::Overflow,
            95 => NbdErrno::NotSup,
            108 => NbdErrno::Shutdown,
            _ => NbdErrno::Inval,
        }
    }

    /// The errno → NBD error mapping, in one place. Host errnos are matched first; an
    /// error without one (built by an `Export` from an `ErrorKind`) by its kind.
    /// Anything unknown is `EIO`: the safe statement "the backing store failed".
    pub fn from_io_error(err: &io::Error) -> Self {
        if let Some(raw) = err.raw_os_error() {
            return match Errno::from_raw(raw) {
                Errno::EPERM | Errno::EROFS | Errno::EACCES => NbdErrno::Perm,
                Errno::EIO => NbdErrno::Io,
                Errno::ENOMEM => NbdErrno::NoMem,
                Errno::EINVAL => NbdErrno::Inval,
                // §7.4 WRITE: EDQUOT/EFBIG from the backing store map to ENOSPC.
                Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG => NbdErrno::NoSpc,
                Errno::EOVERFLOW => NbdErrno::Overflow,
                Errno::ENOTSUP => NbdErrno::NotSup,
                Errno::ESHUTDOWN => NbdErrno::Shutdown,
                _ => NbdErrno::Io,
            };
        }
        match err.kind() {
            io::ErrorKind::PermissionDenied => NbdErrno::Perm,
            io::ErrorKind::InvalidInput => NbdErrno::Inval,
            io::ErrorKind::OutOfMemory => NbdErrno::NoMem,
            io::ErrorKind::Unsupported => NbdErrno::NotSup,
            _ => NbdErrno::Io,
        }
    }

    /// A short human-readable message for error chunks.
    pub fn message(self) -> &'static str {
        match self {
            NbdErrno::Perm => "operation not permitted",
            NbdErrno::Io => "input/output error",
            NbdErrno::NoMem => "out of memory",
            NbdErrno::Inval => "invalid request",
            NbdErrno::NoSpc => "no space left",
            NbdErrno::Overflow => "request too large",
            NbdErrno::NotSup => "operation not supported",
            NbdErrno::Shutdown => "server shutting down",
        }
    }
}

/// Reasons to hard-disconnect a client (§1, §4.3, §7.6).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The client set client-flag bits the server did not offer.
    #[error("client flags {0:#x} contain bits the server did not offer")]
    BadClientFlags(u32),
    /// An option request did not start with IHAVEOPT: the stream is out of sync.
    #[error("option magic {0:#018x} is not IHAVEOPT")]
    BadOptionMagic(u64),
    /// An option carried more data than `MAX_OPTION_BYTES`.
    #[error("option {option} carries {len} bytes, over the limit of {max}")]
    OptionTooLong {
        /// The option number.
        option: u32,
        /// Its announced data length.
        len: u32,
        /// Our limit.
        max: u32,
    },
    /// More options than `MAX_OPTIONS_PER_CONNECTION`.
    #[error("client sent more than {0} options")]
    TooManyOptions(u32),
    /// EXPORT_NAME failed; the protocol has no way to report it (§4.4.1).
    #[error("NBD_OPT_EXPORT_NAME failed for export {name:?}: {reason}")]
    ExportNameFailed {
        /// The requested export name (lossily decoded).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A request header with the wrong magic for the negotiated mode (§7.6).
    #[error("request magic {magic:#010x} is wrong for {mode:?} headers")]
    BadRequestMagic {
        /// The magic received.
        magic: u32,
        /// The negotiated header mode.
        mode: HeaderMode,
    },
    /// A request payload longer than `MAX_PAYLOAD_BYTES` (§7.6).
    #[error("request payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLong {
        /// Announced payload length.
        len: u64,
        /// Our limit.
        max: u64,
    },
    /// A header buffer shorter than the header.
    #[error("request header needs {need} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errnos_map_to_the_matching_nbd_errors() {
        let cases = [
            (Errno::EPERM, NbdErrno::Perm),
            (Errno::EROFS, NbdErrno::Perm),
            (Errno::EIO, NbdErrno::Io),
            (Errno::EINVAL, NbdErrno::Inval),
            (Errno::ENOSPC, NbdErrno::NoSpc),
            (Errno::EDQUOT, NbdErrno::NoSpc),
            (Errno::EFBIG, NbdErrno::NoSpc),
            (Errno::ENOTSUP, NbdErrno::NotSup),
            (Errno::EBADF, NbdErrno::Io),
        ];
        for (errno, nbd) in cases {
            let err = io::Error::from_raw_os_error(errno as i32);
            assert_eq!(NbdErrno::from_io_error(&err), nbd, "{errno}");
        }
    }

    #[test]
    fn error_kinds_without_errno_map_by_kind() {
        let err = io::Error::new(io::ErrorKind::InvalidInput, "x");
        assert_eq!(NbdErrno::from_io_error(&err), NbdErrno::Inval);
        let err = io::Error::other("x");
        assert_eq!(NbdErrno::from_io_error(&err), NbdErrno::Io);
    }

    #[test]
    fn wire_codes_round_trip() {
        for e in [
            NbdErrno::Perm,
            NbdErrno::Io,
            NbdErrno::NoMem,
            NbdErrno::Inval,
            NbdErrno::NoSpc,
            NbdErrno::Overflow,
            NbdErrno::NotSup,
            NbdErrno::Shutdown,
        ] {
            assert_eq!(NbdErrno::from_code(e.code()), e);
        }
        assert_eq!(NbdErrno::from_code(9999), NbdErrno::Inval);
    }
}
