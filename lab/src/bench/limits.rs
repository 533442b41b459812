//! Every bound the bench harness relies on, with the reason beside it.

use std::time::Duration;

/// Longest `--runtime`/`--ramp` accepted: a run is meant to finish in minutes.
pub const MAX_RUNTIME_SECS: f64 = 600.0;

/// Most rounds accepted by `--repeat`.
pub const MAX_REPEAT: u32 = 100;

/// How long a server may take to create its socket. qemu-nbd opening a 1000-deep qcow2
/// chain takes well under a second; anything near this is a hang.
pub const SERVER_START: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM (thinly commits) before SIGKILL.
pub const SERVER_STOP: Duration = Duration::from_secs(30);

/// Slack added to a fio run's own time limit before it is killed (connect, setup, exit).
pub const FIO_SLACK: Duration = Duration::from_secs(60);

/// Cap on one non-time-based fio pass (a first-write pass over a region).
pub const FIO_PASS_MAX: Duration = Duration::from_secs(120);

/// A short management command (qemu-img create, thinly pool create, du).
pub const TOOL_SHORT: Duration = Duration::from_secs(120);

/// Snapshot/commit of a deep qcow2 chain; past this the point is reported as timed out.
pub const QEMU_DEEP_OP: Duration = Duration::from_secs(180);

/// Reply time of one control-socket request (a snapshot commits: a few fdatasyncs).
pub const CONTROL_REPLY: Duration = Duration::from_secs(120);

/// The thinly server drops a control client idle for 30 s; reconnect before that.
pub const CONTROL_IDLE: Duration = Duration::from_secs(20);

/// Longest unix socket path (sun_path is 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Clients qemu-nbd accepts at once (`--shared`).
pub const QEMU_NBD_SHARED: u32 = 8;

/// Size of the thinly pools' (sparse) data files; far more than any suite writes.
pub const POOL_DATA_BYTES: u64 = 32 << 30;

/// Bytes of a stderr log shown in an error.
pub const STDERR_TAIL: usize = 4000;

/// Time budget of the live qcow2 snapshot chain (QMP, one overlay per snapshot, every one
/// kept open by qemu-storage-daemon): past it the remaining points are reported as not
/// reached instead of holding up the run.
pub const QSD_LIVE_BUDGET: Duration = Duration::from_secs(600);

/// Busy-poll budget of the null export's server: the default of `thinly serve
/// --busy-poll-us`, so the ceiling runs the server loop exactly as thinly's volumes get it.
pub const NULL_BUSY_POLL: Duration = Duration::from_micros(50);
