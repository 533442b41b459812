//! Every bound the NBD protocol core and server rely on, with the reason beside it.
//!
//! Section numbers refer to `spec/nbd-protocol.md`.

use std::time::Duration;

/// Largest WRITE payload and largest READ reply data: 32 MiB (2^25). Spec §5: servers
/// are expected to accept it, and qemu, the kernel and libnbd's tools never send more
/// per request. Anything larger in a payload is a hard disconnect (§7.6).
pub const MAX_PAYLOAD_BYTES: u64 = 32 << 20;

/// Largest option data (*L*) we accept at all during the handshake; above it we
/// hard-disconnect (§4.3 "our rule"). Well-formed options are a few KiB at most.
pub const MAX_OPTION_BYTES: u32 = 1 << 20;

/// Largest option data we buffer and parse. A known option with more data is skipped
/// and answered `ERR_TOO_BIG`; unknown options are always skipped without buffering.
/// 64 KiB holds a 4 KiB export name plus a dozen 4 KiB meta-context queries.
pub const MAX_PARSED_OPTION_BYTES: u32 = 64 << 10;

/// Options per connection before we call the client hostile and hard-disconnect.
/// `nbdinfo --list` sends a few per export; nbdkit's 32 is too tight for many exports.
pub const MAX_OPTIONS_PER_CONNECTION: u32 = 1024;

/// Longest string on the wire (names, descriptions, queries): a MUST of §1.
pub const MAX_STRING_BYTES: usize = 4096;

/// Extra meta contexts (`Export::extra_meta_contexts`) one export may offer; the rest are
/// neither listed nor selectable. Bounds a LIST reply to ~4 MiB with maximum-length names
/// (a pool with more snapshots of one volume line than this is not a backup setup).
pub const MAX_EXTRA_META_CONTEXTS: usize = 1024;

/// Exports listed by `NBD_OPT_LIST` before we stop: bounds the reply to ~4 MiB even with
/// maximum-length names.
pub const MAX_LISTED_EXPORTS: usize = 1024;

/// Bytes of request payload plus expected reply data in flight per connection. Two
/// maximum-size requests fit, so a client pipelining 32 MiB writes still overlaps I/O;
/// the reader stops reading from the socket while the budget is spent.
pub const MAX_IN_FLIGHT_BYTES: u64 = 2 * MAX_PAYLOAD_BYTES;

/// Bytes in flight (request payloads plus expected reply data) over all connections:
/// 512 MiB, eight connections' full budgets. Without it, clients that never read their
/// replies could pin 64 MiB each (16 GiB at the connection cap); with it they wait.
pub const MAX_SERVER_IN_FLIGHT_BYTES: u64 = 8 * MAX_IN_FLIGHT_BYTES;

/// Requests in flight per connection. fio runs iodepth 32+, nbdcopy 64 × 256 KiB; 128
/// keeps them all busy while bounding per-request bookkeeping.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 128;

/// Worker threads per connection executing requests against the export. The backing
/// store is I/O bound; a few let independent requests overlap without flooding a
/// 2-core machine with threads when many clients connect.
pub const WORKERS_PER_CONNECTION: usize = 4;

/// Connections served at once per listener; more are accepted and closed at once, so
/// one client opening sockets in a loop cannot exhaust threads and memory, and a flood
/// on one listener (TCP) leaves the others (the unix socket) usable.
pub const MAX_CONNECTIONS: usize = 256;

/// Warnings about refused or failed connections are logged at most once per this
/// interval (with a count of those held back): a client reconnecting in a loop must not
/// flood the log.
pub const LOG_RATE_INTERVAL: Duration = Duration::from_secs(1);

/// Extents per block-status chunk. The spec allows up to 2^20 (§7.4); 2^16 keeps a reply
/// under 1 MiB, and clients continue from where a reply stopped.
pub const MAX_EXTENTS_PER_CHUNK: usize = 1 << 16;

/// Length of the range we ask an export about for one BLOCK_STATUS. qemu asks for the
/// whole rest of the disk with REQ_ONE; answering a prefix is allowed (§7.4) and bounds
/// the work one request can cause. 2 GiB fits the 32-bit extent length of compact mode.
pub const MAX_BLOCK_STATUS_QUERY_BYTES: u64 = 2 << 30;

/// Time a client has from accept to the end of option haggling. qemu-nbd uses 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection with nothing in flight that sends nothing for this long is closed.
/// Off by default: a VM's idle disk stays connected for hours, legitimately.
pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = None;

/// A reply that cannot be written for this long means the client stopped reading;
/// the connection is dropped so shutdown never waits on it forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a shutdown waits for connections with requests in flight (new requests
/// get ESHUTDOWN meanwhile) before it closes them: a client that keeps sending, or
/// stops reading its replies, must not hold a SIGTERM forever. 30 s covers a commit of
/// a large dirty cache; systemd's default stop timeout is 90 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a draining shutdown looks for connections that became idle.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How often the accept loop wakes to notice a shutdown request.
pub const ACCEPT_POLL_INTERVAL_MS: u16 = 100;

/// Bytes read from the socket at once during the handshake and for request headers.
pub const READ_BUFFER_BYTES: usize = 128 << 10;

/// Reads that must be answered in one OFFSET_DATA chunk with DF set: the spec demands
/// 64 KiB; we serve DF up to the full payload limit.
pub const MAX_DF_READ_BYTES: u64 = MAX_PAYLOAD_BYTES;

/// Keys read from a `--tls-psk` file: a site keeps a key per client, and the file is
/// read whole into memory at start and on every reload.
pub const MAX_PSK_KEYS: usize = 65536;
