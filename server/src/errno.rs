//! The one mapping of engine errors to what clients see. A `PoolError` becomes an errno
//! here (the control socket's `errno` field, and the `io::Error` every `Export` method of
//! `export` returns); that errno becomes an NBD error in `thinly_nbd`'s errno table
//! (`NbdErrno::from_io_error`), the protocol crate's one place for it. Nothing else in the
//! workspace turns a `PoolError` into a number.

use std::io;
use thinly_engine::pool::PoolError;
use thinly_nbd::proto::NbdErrno;

/// The errno of a request that could not be parsed (control socket).
pub const BAD_REQUEST: i32 = nix::libc::EINVAL;

/// The errno a client sees for `e`: what a block device would return for the same failure.
pub fn errno(e: &PoolError) -> i32 {
    use thinly_engine::Error as Meta;
    match e {
        PoolError::NoSpace(_) => nix::libc::ENOSPC,
        PoolError::ReadOnly(_) => nix::libc::EPERM,
        PoolError::Invalid(_) => nix::libc::EINVAL,
        PoolError::NoVolume(_) => nix::libc::ENOENT,
        PoolError::VolumeExists(_) => nix::libc::EEXIST,
        PoolError::Busy(_) | PoolError::Refused(_) => nix::libc::EBUSY,
        // The filesystem's own errno (ENOSPC, EDQUOT …) passes through.
        PoolError::Io(e) => e.raw_os_error().unwrap_or(nix::libc::EIO),
        PoolError::Metadata(Meta::MetadataNoSpace { .. } | Meta::DataNoSpace { .. }) => {
            nix::libc::ENOSPC
        }
        PoolError::Metadata(_) => nix::libc::EIO,
        // A kind added to the engine later is an I/O error until it is mapped here.
        _ => nix::libc::EIO,
    }
}

/// `e` as the `io::Error` an `Export` method returns.
pub fn io_error(e: PoolError) -> io::Error {
    io::Error::from_raw_os_error(errno(&e))
}

/// The NBD error a client gets in its reply for `e`.
pub fn nbd_error(e: &PoolError) -> NbdErrno {
    NbdErrno::from_io_error(&io::Error::from_raw_os_error(errno(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_error_kind_reaches_the_nbd_error_a_block_device_would_give() {
        let s = || "x".to_string();
        let table = [
            (PoolError::NoSpace(s()), nix::libc::ENOSPC, NbdErrno::NoSpc),
            (PoolError::ReadOnly(s()), nix::libc::EPERM, NbdErrno::Perm),
            (PoolError::Invalid(s()), nix::libc::EINVAL, NbdErrno::Inval),
            (PoolError::NoVolume(s()), nix::libc::ENOENT, NbdErrno::Io),
            (PoolError::VolumeExists(s()), nix::libc::EEXIST, NbdErrno::Io),
            (PoolError::Busy(s()), nix::libc::EBUSY, NbdErrno::Io),
            (PoolError::Refused(s()), nix::libc::EBUSY, NbdErrno::Io),
            (
                PoolError::Io(io::Error::from_raw_os_error(nix::libc::EDQUOT)),
                nix::libc::EDQUOT,
                NbdErrno::NoSpc,
            ),
            (PoolError::Io(io::Error::other("no errno")), nix::libc::EIO, NbdErrno::Io),
            (
                PoolError::Metadata(thinly_engine::Error::MetadataNoSpace { nr_blocks: 1 }),
                nix::libc::ENOSPC,
                NbdErrno::NoSpc,
            ),
            (
                PoolError::Metadata(thinly_engine::Error::DataNoSpace { nr_blocks: 1 }),
                nix::libc::ENOSPC,
                NbdErrno::NoSpc,
            ),
        ];
        for (e, want_errno, want_nbd) in table {
            assert_eq!(errno(&e), want_errno, "{e}");
            assert_eq!(nbd_error(&e), want_nbd, "{e}");
            assert_eq!(io_error(e).raw_os_error(), Some(want_errno));
        }
    }
}
