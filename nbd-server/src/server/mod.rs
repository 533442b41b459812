//! The NBD server: listeners (TCP and Unix sockets), one thread per connection plus a
//! few workers each (see `conn`), and graceful shutdown.
//!
//! Life cycle: `Server::new` → `listen_tcp` / `listen_unix` → `start` (spawns the
//! accept loop) → `ServerHandle::shutdown`, which drains (§9.4): stop accepting; answer
//! new requests `ESHUTDOWN` (the client should then disconnect); close every connection
//! as soon as it has nothing in flight, letting in-flight requests finish and their
//! replies go out; at the drain time limit (`ServerConfig::drain_timeout`) hard-close
//! what is left, so a client that keeps sending cannot hold the server; join every
//! thread, remove our Unix socket files, and return. The caller then commits.

mod budget;
mod conn;
pub mod dispatch;
mod stream;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{info, warn};

pub use self::budget::Budget;
pub use self::stream::Stream;
pub use self::tls::{Tls, TlsError, TlsSettings};
use crate::access::{Access, AccessPolicy, Client};
use crate::export::ExportRegistry;
use crate::limits::{
    ACCEPT_POLL_INTERVAL_MS, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DRAIN_POLL_INTERVAL, LOG_RATE_INTERVAL, MAX_CONNECTIONS,
    MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_REQUESTS, MAX_SERVER_IN_FLIGHT_BYTES,
    WORKERS_PER_CONNECTION,
};
use crate::proto::TlsMode;

/// Tunables of a server; `Default` gives the values in `limits`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time allowed from accept to the end of option haggling; `None`: no limit (for
    /// clients that connect long before they speak, like a VM's virtio-serial port).
    pub handshake_timeout: Option<Duration>,
    /// Close connections idle (nothing in flight, nothing received) this long.
    pub idle_timeout: Option<Duration>,
    /// Worker threads per connection.
    pub workers_per_connection: usize,
    /// Connections served at once by each listener (counted per listener, so a flood on
    /// TCP cannot lock out the unix socket's clients).
    pub max_connections: usize,
    /// Busy-poll: a connection's reader, finding nothing to read and nothing in flight,
    /// polls the socket up to this long before it sleeps. Saves the wake-up of a sleeping
    /// thread from each request of a client that waits for every reply (queue depth 1) at
    /// the price of a spinning CPU. The budget adapts per connection: it halves while
    /// requests come later than the maximum, down to no polling, and grows back while
    /// they come within it. `None` (the default): never spin.
    pub busy_poll: Option<Duration>,
    /// Certificates and keys for listeners whose TLS mode is not `Off`.
    pub tls: Option<Arc<Tls>>,
    /// Who may list, open and write which export (see `crate::access`); `None`: every
    /// client may do everything.
    pub access: Option<Arc<dyn AccessPolicy>>,
    /// How long shutdown waits for connections with requests in flight before it
    /// closes them anyway.
    pub drain_timeout: Duration,
    /// Bytes of request payload and reply data in flight over all connections (at
    /// least one connection's worth); a reader waits for room, so clients that do not
    /// read their replies get back-pressure, not server memory.
    pub max_server_in_flight_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            workers_per_connection: WORKERS_PER_CONNECTION,
            max_connections: MAX_CONNECTIONS,
            busy_poll: None,
            tls: None,
            access: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_server_in_flight_bytes: MAX_SERVER_IN_FLIGHT_BYTES,
        }
    }
}

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    registry: Arc<dyn ExportRegistry>,
    config: ServerConfig,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
    /// A second handle to each live connection and its in-flight budget, so shutdown
    /// can see which are idle and stop their readers.
    live: Mutex<HashMap<u64, LiveConn>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Warnings about refused connections, at most one a second.
    refusals: RateLimit,
    /// Bytes in flight over all connections (see `ServerConfig::max_server_in_flight_bytes`).
    server_budget: Arc<Budget>,
}

/// What shutdown and the connection caps need of a live connection.
struct LiveConn {
    stream: Stream,
    budget: Arc<Budget>,
    /// Index of the listener that accepted it.
    listener: usize,
    /// The export it negotiated (set when the handshake ends), for `close_export`.
    export: Option<String>,
    /// Once in transmission under a policy: the client, the export's name and what was
    /// granted, for `ServerHandle::recheck_access`.
    opened: Option<(Client, String, Access)>,
}

/// Lets a repeated warning through at most once per `LOG_RATE_INTERVAL`, counting the
/// ones it held back, so a client reconnecting in a loop cannot flood the log.
pub(crate) struct RateLimit {
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimit {
    fn new() -> Self {
        Self { state: Mutex::new((None, 0)) }
    }

    /// `Some(n)`: log now, `n` similar events were suppressed since the last line.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < LOG_RATE_INTERVAL => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

impl Shared {
    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Records the export connection `id` negotiated.
    pub(crate) fn set_export(&self, id: u64, name: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = live.get_mut(&id) {
            c.export = Some(name.to_string());
        }
    }

    /// Records what connection `id` opened, for `ServerHandle::recheck_access`.
    fn record_opened(&self, id: u64, opened: (Client, String, Access)) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = live.get_mut(&id) {
            conn.opened = Some(opened);
        }
    }
}

enum Listener {
    Tcp(TcpListener, TlsMode),
    /// The path is removed at shutdown (None: someone else owns it, e.g. systemd).
    Unix(UnixListener, Option<PathBuf>, TlsMode),
}

/// A server being configured.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl Server {
    /// A server for the exports in `registry`.
    pub fn new(registry: Arc<dyn ExportRegistry>, config: ServerConfig) -> Self {
        let shared = Shared {
            registry,
            config: config.clone(),
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            refusals: RateLimit::new(),
            server_budget: Arc::new(Budget::new(
                config.max_server_in_flight_bytes.max(MAX_IN_FLIGHT_BYTES),
                usize::MAX,
            )),
        };
        Self { shared: Arc::new(shared), listeners: Vec::new() }
    }

    /// Listens on a TCP address (port 0 picks one) without TLS; returns the bound address.
    pub fn listen_tcp(&mut self, addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
        self.listen_tcp_tls(addr, TlsMode::Off)
    }

    /// Listens on a TCP address with a TLS mode (not `Off` needs `ServerConfig::tls`).
    pub fn listen_tcp_tls(
        &mut self,
        addr: impl ToSocketAddrs,
        tls: TlsMode,
    ) -> io::Result<SocketAddr> {
        self.check_tls(tls)?;
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let bound = l.local_addr()?;
        self.listeners.push(Listener::Tcp(l, tls));
        Ok(bound)
    }

    /// Listens on a Unix socket at `path` (which must not exist) without TLS; removed at
    /// shutdown.
    pub fn listen_unix(&mut self, path: &Path) -> io::Result<()> {
        self.listen_unix_tls(path, TlsMode::Off)
    }

    /// Listens on a Unix socket with a TLS mode (not `Off` needs `ServerConfig::tls`).
    pub fn listen_unix_tls(&mut self, path: &Path, tls: TlsMode) -> io::Result<()> {
        self.check_tls(tls)?;
        let l = UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        self.listeners.push(Listener::Unix(l, Some(path.to_owned()), tls));
        Ok(())
    }

    /// Serves on a TCP listener made elsewhere (systemd socket activation).
    pub fn add_tcp_listener(&mut self, l: TcpListener, tls: TlsMode) -> io::Result<SocketAddr> {
        self.check_tls(tls)?;
        l.set_nonblocking(true)?;
        let bound = l.local_addr()?;
        self.listeners.push(Listener::Tcp(l, tls));
        Ok(bound)
    }

    /// Serves on a Unix listener made elsewhere; its file is left alone at shutdown.
    pub fn add_unix_listener(&mut self, l: UnixListener, tls: TlsMode) -> io::Result<()> {
        self.check_tls(tls)?;
        l.set_nonblocking(true)?;
        self.listeners.push(Listener::Unix(l, None, tls));
        Ok(())
    }

    fn check_tls(&self, tls: TlsMode) -> io::Result<()> {
        if tls != TlsMode::Off && self.shared.config.tls.is_none() {
            let msg = "a TLS listener needs certificates or a PSK file";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        Ok(())
    }

    /// Starts accepting connections on a background thread.
    pub fn start(self) -> io::Result<ServerHandle> {
        if self.listeners.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "server has no listener"));
        }
        let shared = Arc::clone(&self.shared);
        let listeners = self.listeners;
        let paths = listeners
            .iter()
            .filter_map(|l| match l {
                Listener::Unix(_, p, _) => p.clone(),
                Listener::Tcp(..) => None,
            })
            .collect();
        let accept = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(&shared, &listeners))?;
        Ok(ServerHandle { shared: self.shared, accept: Some(accept), unix_paths: paths })
    }
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    unix_paths: Vec<PathBuf>,
}

impl ServerHandle {
    /// Connections alive now.
    pub fn nr_connections(&self) -> usize {
        self.shared.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A handle that closes the connections of one export (see `ExportCloser`).
    pub fn export_closer(&self) -> ExportCloser {
        ExportCloser { shared: Arc::clone(&self.shared) }
    }

    /// Asks the access policy again about every connection in transmission (after the
    /// policy was reloaded) and closes those whose access to their export shrank —
    /// revoked, or cut from write to read (its flags cannot change mid-connection).
    /// Closing is graceful, as in a drain: the reader stops, requests in flight finish
    /// and get their replies, then the socket closes. Returns how many were closed.
    pub fn recheck_access(&self) -> usize {
        let Some(policy) = &self.shared.config.access else {
            return 0;
        };
        let live = self.shared.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut nr_closed = 0;
        for conn in live.values() {
            let Some((client, export, granted)) = &conn.opened else { continue };
            let now = policy.access(client, export);
            if now < *granted {
                warn!(%client, %export, ?granted, ?now, "access revoked by a policy reload; closing");
                let _ = conn.stream.shutdown(Shutdown::Read);
                nr_closed += 1;
            }
        }
        nr_closed
    }

    /// Starts draining without waiting: from now on new requests get `ESHUTDOWN` and
    /// handshakes `ERR_SHUTDOWN`. `shutdown` finishes the job.
    pub fn begin_shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Graceful shutdown (see the module doc): drain within the time limit, close every
    /// connection, and return once every thread has ended.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.begin_shutdown();
        if let Some(accept) = self.accept.take() {
            if accept.join().is_err() {
                warn!("accept thread panicked");
            }
        }
        self.drain();
        let threads =
            std::mem::take(&mut *self.shared.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                warn!("connection thread panicked");
            }
        }
        for p in self.unix_paths.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        info!("server stopped");
    }
}

impl ServerHandle {
    /// Closes each connection once nothing is in flight on it; at the time limit,
    /// closes the rest both ways (a blocked reply send then fails at once).
    fn drain(&self) {
        let deadline = std::time::Instant::now() + self.shared.config.drain_timeout;
        loop {
            let live = self.shared.live.lock().unwrap_or_else(|e| e.into_inner());
            if live.is_empty() {
                return;
            }
            let late = std::time::Instant::now() >= deadline;
            if late {
                warn!(nr_connections = live.len(), "drain time limit reached; closing");
            }
            for LiveConn { stream, budget, .. } in live.values() {
                if late {
                    let _ = stream.shutdown(Shutdown::Both);
                } else if budget.requests_in_flight() == 0 {
                    let _ = stream.shutdown(Shutdown::Read);
                }
            }
            drop(live);
            if late {
                return;
            }
            std::thread::sleep(DRAIN_POLL_INTERVAL);
        }
    }
}

/// Closes the connections that negotiated a given export, as a drain does for all: a
/// connection stops reading at once, its workers finish and answer every request already
/// received, then its socket closes. For a server that removes an export under its clients
/// (a forced delete): clients see their connection end, not errors on every request.
#[derive(Clone)]
pub struct ExportCloser {
    shared: Arc<Shared>,
}

impl ExportCloser {
    /// Closes the connections of export `name` and waits (at most `timeout`) until they
    /// have ended; returns how many were still open when it gave up (0: all closed).
    pub fn close_export(&self, name: &str, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let live = self.shared.live.lock().unwrap_or_else(|e| e.into_inner());
            let mine: Vec<&LiveConn> =
                live.values().filter(|c| c.export.as_deref() == Some(name)).collect();
            if mine.is_empty() {
                return 0;
            }
            let late = std::time::Instant::now() >= deadline;
            for c in &mine {
                // Read side only: the workers still send the replies of queued requests.
                let _ = c.stream.shutdown(if late { Shutdown::Both } else { Shutdown::Read });
            }
            if late {
                warn!(export = name, nr_connections = mine.len(), "closing an export timed out");
                return mine.len();
            }
            drop(mine);
            drop(live);
            std::thread::sleep(DRAIN_POLL_INTERVAL);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listeners: &[Listener]) {
    while !shared.shutting_down() {
        let mut fds: Vec<PollFd> = listeners
            .iter()
            .map(|l| match l {
                Listener::Tcp(l, _) => PollFd::new(l.as_fd(), PollFlags::POLLIN),
                Listener::Unix(l, _, _) => PollFd::new(l.as_fd(), PollFlags::POLLIN),
            })
            .collect();
        if let Err(e) = poll(&mut fds, PollTimeout::from(ACCEPT_POLL_INTERVAL_MS)) {
            if e != nix::errno::Errno::EINTR {
                warn!(error = %e, "poll on listeners failed");
                std::thread::sleep(Duration::from_millis(u64::from(ACCEPT_POLL_INTERVAL_MS)));
            }
            continue;
        }
        for (i, l) in listeners.iter().enumerate() {
            while let Some((stream, tls)) = accept_one(l) {
                spawn_connection(shared, stream, tls, i);
            }
        }
        reap_finished(shared);
    }
}

/// Accepts one pending connection, if any, as a blocking stream, with its listener's
/// TLS mode.
fn accept_one(l: &Listener) -> Option<(Stream, TlsMode)> {
    let accepted = match l {
        Listener::Tcp(l, tls) => l.accept().and_then(|(s, _)| {
            s.set_nodelay(true)?;
            s.set_nonblocking(false)?;
            Ok((Stream::Tcp(s), *tls))
        }),
        Listener::Unix(l, _, tls) => l.accept().and_then(|(s, _)| {
            s.set_nonblocking(false)?;
            Ok((Stream::Unix(s), *tls))
        }),
    };
    match accepted {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => {
            warn!(error = %e, "accept failed");
            None
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: Stream, tls: TlsMode, listener: usize) {
    let mut live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
    let nr_here = live.values().filter(|c| c.listener == listener).count();
    if nr_here >= shared.config.max_connections {
        if let Some(suppressed) = shared.refusals.admit() {
            let peer = stream.peer();
            let limit = shared.config.max_connections;
            warn!(%peer, limit, suppressed, "too many connections on this listener; refusing");
        }
        return;
    }
    let Ok(handle) = stream.try_clone() else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let budget = Arc::new(Budget::new(MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_REQUESTS));
    live.insert(
        id,
        LiveConn { stream: handle, budget: Arc::clone(&budget), listener, export: None, opened: None },
    );
    drop(live);
    let sh = Arc::clone(shared);
    let spawned = std::thread::Builder::new().name(format!("nbd-conn-{id}")).spawn(move || {
        conn::serve(id, stream, tls, budget, &sh);
        sh.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    });
    match spawned {
        Ok(t) => shared.threads.lock().unwrap_or_else(|e| e.into_inner()).push(t),
        Err(e) => {
            warn!(error = %e, "cannot spawn a connection thread");
            shared.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }
}

fn reap_finished(shared: &Shared) {
    let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
    let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
    *threads = running;
    drop(threads);
    for t in done {
        if t.join().is_err() {
            warn!("connection thread panicked");
        }
    }
}
