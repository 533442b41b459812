//! Every bound of `thinly attach` / `thinly detach`, with its reason.

use std::time::Duration;

/// How long attach waits for the FUSE helper to mount and write its pid file. nbdfuse
/// connects and mounts in well under a second; ten leaves room for a loaded machine.
pub const HELPER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long detach waits for the loop driver to let go of its backing file after
/// `losetup -d` (the release is asynchronous: the last opener's close finishes it).
pub const LOOP_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long detach retries unmounting the FUSE mount while the kernel still holds it busy.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long detach waits for the helper to exit once its mount is gone, before SIGTERM.
pub const HELPER_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an attach or detach waits for another one on the same pool to finish.
pub const RECORDS_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling step of the waits above.
pub const POLL_STEP: Duration = Duration::from_millis(20);
/// The kernel NBD client's request timeout (NBD_SET_TIMEOUT): a request the server has
/// not answered in this time fails with EIO, so a hung server cannot hang the host's I/O
/// forever. Long enough for a commit of a large transaction on a slow disk.
pub const NBD_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections the kernel NBD client gets to an export that allows several
/// (NBD_FLAG_CAN_MULTI_CONN): the kernel maps its hardware queues onto them, so requests
/// from several CPUs proceed side by side; four is what `nbd-client -C` users commonly pick.
pub const NBD_CONNECTIONS: usize = 4;
