//! One client connection: the handshake (driving `proto::Handshake`), then
//! transmission with a reader thread, a few workers and one send lock.
//!
//! The reader (this connection's thread) reads each header and its whole payload,
//! validates, and queues the job; invalid requests are answered at once. Workers run
//! jobs concurrently and send complete replies under the send lock, so replies go out
//! in completion order and never interleave. On DISC, EOF, a protocol error, or a
//! server shutdown, the reader stops reading; the workers finish every queued request
//! and send its reply; then the socket is closed. A failed send shuts the socket down,
//! which also stops the reader.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::budget::Budget;
use super::dispatch::execute;
use super::stream::Stream;
use super::{tls, Shared};
use crate::access::Client;
use crate::export::Export;
use crate::limits::{READ_BUFFER_BYTES, WRITE_TIMEOUT};
use crate::proto::consts::{CMD_DISC, CMD_READ};
use crate::proto::{
    reply, validate, Command, Handshake, NbdErrno, Negotiated, ReplyTo, RequestHeader, Session,
    Status, TlsMode,
};

/// Largest READ or WRITE the reader serves itself (larger ones overlap better on workers).
const INLINE_MAX_BYTES: u64 = 256 << 10;

/// A request ready for a worker.
struct Job {
    to: ReplyTo,
    command: Command,
    payload: Vec<u8>,
    charged: u64,
}

/// What every thread of one connection shares.
struct Conn {
    export: Arc<dyn Export>,
    session: Session,
    writer: Mutex<Stream>,
    budget: Arc<Budget>,
    /// The whole server's budget of bytes in flight, shared by every connection.
    server_budget: Arc<Budget>,
    broken: AtomicBool,
}

impl Conn {
    /// Takes `cost` from this connection's budget, then from the server's (in that
    /// order, everywhere, so no cycle of waiting can form); returns the charge.
    fn acquire(&self, cost: u64) -> u64 {
        let charged = self.budget.acquire(cost);
        let server = self.server_budget.acquire(charged);
        debug_assert_eq!(server, charged, "the server budget is the larger one");
        charged
    }

    /// Returns what `acquire` took.
    fn release(&self, charged: u64) {
        self.server_budget.release(charged);
        self.budget.release(charged);
    }

    /// Sends one complete reply. A failure marks the connection broken and shuts the
    /// socket down so the reader stops too.
    fn send(&self, bytes: &[u8]) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.write_all(bytes) {
            debug!(error = %e, "sending a reply failed; closing the connection");
            self.broken.store(true, Ordering::Relaxed);
            let _ = w.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one accepted connection until it ends.
pub(super) fn serve(id: u64, stream: Stream, tls: TlsMode, budget: Arc<Budget>, shared: &Shared) {
    let peer = stream.peer();
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let started = Instant::now();
    match handshake(stream, tls, shared) {
        Ok(Some((stream, negotiated, leftover, client))) => {
            let identity = stream.tls_identity().map_or_else(|| "-".to_owned(), |i| i.to_string());
            if let Some(client) = client {
                let name = negotiated.resolved_name.clone();
                shared.record_opened(id, (client, name, negotiated.access));
            }
            let tls = matches!(stream, Stream::Tls(_));
            let export = negotiated.export_name.clone();
            // The volume it got (the default export resolved), which a forced delete names.
            shared.set_export(id, &negotiated.resolved_name);
            debug!(%peer, %identity, tls, %export, mode = ?negotiated.mode, "client connected");
            match transmission(stream, negotiated, leftover, budget, shared) {
                // The one line per connection: who, what, how much, how long.
                Ok(t) => info!(
                    %peer, %identity, tls, %export,
                    read_bytes = t.read_bytes, written_bytes = t.written_bytes,
                    nr_requests = t.nr_requests, duration_ms = started.elapsed().as_millis() as u64,
                    "connection closed"
                ),
                Err(e) => debug!(%peer, error = %e, "connection setup failed"),
            }
        }
        Ok(None) => debug!(%peer, "handshake ended without an export"),
        Err(e) => {
            if let Some(suppressed) = shared.refusals.admit() {
                info!(%peer, error = %e, suppressed, "handshake failed; disconnecting");
            }
        }
    }
}

/// What a finished handshake hands to transmission: the stream (TLS after STARTTLS),
/// the negotiated state, any bytes already read past the handshake, and the client as
/// the access policy saw it (if there is one).
type Handshaken = (Stream, Negotiated, Vec<u8>, Option<Client>);

/// Logs the policy's first refusal on this connection (once per connection), with the
/// client's identity; later ones are only counted at debug level.
fn log_denials(hs: &mut Handshake, logged: &mut bool) {
    let denied = hs.take_denials();
    if denied.is_empty() {
        return;
    }
    let client = hs.client().map_or_else(|| "?".to_owned(), |c| c.to_string());
    if *logged {
        debug!(%client, ?denied, "access denied by policy (again)");
    } else {
        warn!(%client, ?denied, "access denied by policy");
        *logged = true;
    }
}

/// Drives the handshake state machine over the socket, within the handshake timeout,
/// upgrading the stream to TLS on an acknowledged STARTTLS.
fn handshake(mut stream: Stream, tls: TlsMode, shared: &Shared) -> io::Result<Option<Handshaken>> {
    let deadline = shared.config.handshake_timeout.map(|t| Instant::now() + t);
    let mut hs = Handshake::new(Arc::clone(&shared.registry));
    hs.set_tls_mode(tls);
    if let Some(policy) = &shared.config.access {
        hs.set_access(Arc::clone(policy), Client { peer: stream.peer_info(), tls: None });
    }
    let mut denial_logged = false;
    let mut rd = stream.try_clone()?;
    let mut wr = stream.try_clone()?;
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut pending = 0; // bytes of `buf` read but not yet consumed by `hs`
    loop {
        let out = hs.take_output();
        if !out.is_empty() {
            wr.write_all(&out)?;
        }
        if hs.status() == Status::StartTls {
            // The client must wait for our ACK before its TLS hello: bytes already
            // here are not TLS (garbage after STARTTLS).
            if pending > 0 {
                let msg = "bytes after STARTTLS before its reply";
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            let config = shared.config.tls.as_ref().ok_or_else(|| io::Error::other("no TLS"))?;
            stream = tls::accept(config, stream, deadline)?;
            rd = stream.try_clone()?;
            wr = stream.try_clone()?;
            hs.tls_started();
            hs.set_tls_identity(stream.tls_identity().cloned());
            continue;
        }
        if hs.status() != Status::NeedInput {
            return Ok(None);
        }
        if shared.shutting_down() {
            hs.set_shutting_down();
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"));
        }
        stream.set_read_timeout(left)?;
        let n = rd.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let received = hs.receive(&buf[..n]);
        log_denials(&mut hs, &mut denial_logged);
        let used = received.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        pending = n - used;
        if hs.status() == Status::Finished {
            let out = hs.take_output();
            wr.write_all(&out)?;
            let leftover = buf[used..n].to_vec();
            let client = hs.client().cloned();
            return Ok(hs.into_negotiated().map(|n| (stream, n, leftover, client)));
        }
    }
}

fn transmission(
    stream: Stream,
    negotiated: Negotiated,
    leftover: Vec<u8>,
    budget: Arc<Budget>,
    shared: &Shared,
) -> io::Result<Traffic> {
    stream.set_read_timeout(shared.config.idle_timeout)?;
    let conn = Conn {
        export: Arc::clone(&negotiated.export),
        session: Session::from_negotiated(&negotiated),
        writer: Mutex::new(stream.try_clone()?),
        budget,
        server_budget: Arc::clone(&shared.server_budget),
        broken: AtomicBool::new(false),
    };
    let reader = io::Cursor::new(leftover).chain(stream.try_clone()?);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Mutex::new(rx);
    let traffic = std::thread::scope(|s| {
        for _ in 0..shared.config.workers_per_connection.max(1) {
            s.spawn(|| worker(&conn, &rx));
        }
        let poll = shared.config.busy_poll.map(|budget| (&stream, budget));
        read_requests(&mut reader, &conn, tx, poll, &shared.shutting_down)
    });
    let _ = stream.shutdown(Shutdown::Both);
    Ok(traffic)
}

/// What a connection did, for its closing log line.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    /// Bytes asked for by valid READs.
    read_bytes: u64,
    /// Bytes carried by valid WRITEs.
    written_bytes: u64,
    nr_requests: u64,
}

fn worker(conn: &Conn, rx: &Mutex<Receiver<Job>>) {
    let mut out = Vec::new();
    loop {
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        out.clear();
        execute(conn.export.as_ref(), &conn.session, job.to, job.command, &job.payload, &mut out);
        drop(job.payload);
        conn.send(&out);
        conn.release(job.charged);
        if out.capacity() > READ_BUFFER_BYTES {
            out = Vec::new();
        }
    }
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    Disconnect,
    Eof,
    Idle,
    Broken,
    Error(String),
}

/// The reader loop. Returns when the client is done or the stream is lost; dropping
/// `tx` then lets the workers drain the queue and exit.
/// With `poll`, an empty buffer is first polled for (stream, budget) before the blocking
/// read (see `ServerConfig::busy_poll`).
fn read_requests<R: Read>(
    reader: &mut BufReader<R>,
    conn: &Conn,
    tx: Sender<Job>,
    poll: Option<(&Stream, Duration)>,
    draining: &AtomicBool,
) -> Traffic {
    let mode = conn.session.mode;
    let mut traffic = Traffic::default();
    let mut poller = poll.map(|(stream, max)| Poller::new(stream, max));
    let end = loop {
        if conn.broken.load(Ordering::Relaxed) {
            break End::Broken;
        }
        // Poll only for a client waiting on nothing (queue depth 1): with requests in
        // flight, the workers need the CPU more than the reader needs a head start.
        let waiting = reader.buffer().is_empty() && conn.budget.requests_in_flight() == 0;
        let polled = poller.as_mut().filter(|_| waiting).map(|p| p.poll());
        let filled = reader.fill_buf().map(|b| b.is_empty());
        if let (Some(p), Some(started)) = (poller.as_mut(), polled) {
            p.adapt(started.elapsed());
        }
        match filled {
            Ok(true) => break End::Eof,
            Ok(false) => {}
            Err(e) if is_timeout(&e) && conn.budget.requests_in_flight() > 0 => continue,
            Err(e) if is_timeout(&e) => break End::Idle,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break End::Error(e.to_string()),
        }
        let mut hdr = [0u8; 32];
        let hdr = &mut hdr[..mode.request_header_len()];
        if let Err(e) = reader.read_exact(hdr) {
            break End::Error(format!("truncated request header: {e}"));
        }
        let header = match RequestHeader::decode(mode, hdr) {
            Ok(h) => h,
            Err(e) => break End::Error(e.to_string()),
        };
        if header.command == CMD_DISC {
            break End::Disconnect;
        }
        let payload_len = match header.checked_payload_len(mode) {
            Ok(n) => n,
            Err(e) => break End::Error(e.to_string()),
        };
        let reply_len = if header.command == CMD_READ { header.length } else { 0 };
        let charged = conn.acquire((payload_len as u64).saturating_add(reply_len));
        let mut payload = vec![0u8; payload_len];
        if let Err(e) = reader.read_exact(&mut payload) {
            conn.release(charged);
            break End::Error(format!("truncated payload: {e}"));
        }
        let to = ReplyTo { mode, cookie: header.cookie, offset: header.offset };
        if draining.load(Ordering::Relaxed) {
            // §9.4: new requests during a drain are answered ESHUTDOWN.
            let mut out = Vec::new();
            reply::error(&mut out, to, NbdErrno::Shutdown);
            conn.send(&out);
            conn.release(charged);
            continue;
        }
        traffic.nr_requests += 1;
        let validated = validate(&header, &conn.session);
        match &validated {
            Ok(Command::Read { len, .. }) => traffic.read_bytes += len,
            Ok(Command::Write { len, .. }) => traffic.written_bytes += len,
            _ => {}
        }
        match validated {
            Ok(command) if serve_inline(&command, conn, reader.buffer().is_empty()) => {
                // The client waits for this reply (nothing else in flight, nothing more
                // received): answer it here rather than hand it to a worker and back.
                let mut out = Vec::new();
                execute(conn.export.as_ref(), &conn.session, to, command, &payload, &mut out);
                drop(payload);
                conn.send(&out);
                conn.release(charged);
            }
            Ok(command) => {
                if let Err(mpsc::SendError(job)) = tx.send(Job { to, command, payload, charged }) {
                    conn.release(job.charged);
                    break End::Broken;
                }
            }
            Err(errno) => {
                debug!(?header, ?errno, "request refused");
                let mut out = Vec::new();
                reply::error(&mut out, to, errno);
                conn.send(&out);
                conn.release(charged);
            }
        }
    };
    match end {
        End::Error(e) => {
            warn!(error = %e, "protocol error; disconnecting after in-flight requests")
        }
        End::Idle => info!("idle timeout: nothing in flight and nothing received; closing"),
        other => debug!(end = ?other, "client finished"),
    }
    traffic
}

/// Adaptive busy-polling of one connection's socket (as QEMU's event loop polls): the
/// budget grows back to `max` while requests come within it and halves (down to none)
/// while they do not, so a connection that goes quiet soon stops costing CPU.
struct Poller<'a> {
    stream: &'a Stream,
    max: Duration,
    budget: Duration,
}

impl<'a> Poller<'a> {
    fn new(stream: &'a Stream, max: Duration) -> Self {
        Poller { stream, max, budget: max }
    }

    /// Spins until the socket is readable or the budget is spent; returns when it began.
    fn poll(&self) -> Instant {
        let start = Instant::now();
        while !self.budget.is_zero() && start.elapsed() < self.budget {
            if self.stream.ready_to_read() {
                break;
            }
            std::hint::spin_loop();
        }
        start
    }

    /// `waited`: from the start of polling until a request (or EOF) arrived.
    fn adapt(&mut self, waited: Duration) {
        if waited <= self.budget {
            return;
        }
        self.budget = if waited <= self.max {
            (self.budget * 2).max(Duration::from_micros(1)).min(self.max)
        } else if self.budget > Duration::from_micros(1) {
            self.budget / 2
        } else {
            Duration::ZERO
        };
    }
}

/// Whether the reader serves a request itself: only when it is the one request in flight
/// and no other is waiting in the buffer (a client at queue depth 1), and only short work —
/// a flush may take a commit's time and must not keep the reader from later requests.
fn serve_inline(command: &Command, conn: &Conn, nothing_buffered: bool) -> bool {
    let short = match command {
        Command::Flush => false,
        Command::Read { len, .. } | Command::Write { len, .. } => *len <= INLINE_MAX_BYTES,
        Command::Trim { fua, .. } | Command::WriteZeroes { fua, .. } => !fua,
        Command::Cache { .. } | Command::BlockStatus { .. } => true,
    };
    short && nothing_buffered && conn.budget.requests_in_flight() == 1
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_poll_budget_halves_to_nothing_for_late_requests_and_grows_back() {
        let (a, _b) = UnixStream::pair().unwrap();
        let stream = Stream::Unix(a);
        let max = Duration::from_micros(50);
        let mut p = Poller::new(&stream, max);
        p.adapt(Duration::from_micros(10));
        assert_eq!(p.budget, max, "a request within the budget changes nothing");
        let mut steps = 0;
        while !p.budget.is_zero() {
            p.adapt(Duration::from_millis(5));
            steps += 1;
            assert!(steps < 10, "the budget never reached zero");
        }
        p.adapt(Duration::from_micros(40));
        assert_eq!(p.budget, Duration::from_micros(1));
        for _ in 0..10 {
            p.adapt(Duration::from_micros(40));
        }
        assert_eq!(p.budget, max, "grows back to the maximum, no further");
    }

    #[test]
    fn polling_stops_at_once_when_a_request_is_there() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let stream = Stream::Unix(a);
        b.write_all(b"x").unwrap();
        let p = Poller::new(&stream, Duration::from_secs(60));
        // Would spin a minute if it missed the byte waiting in the socket.
        assert!(p.poll().elapsed() < Duration::from_secs(30));
    }
}
