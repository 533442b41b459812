//! `thinly serve --metrics ADDR`: the pool's statistics as Prometheus text on
//! `GET /metrics` (see `thinly_engine::pool::metrics` for the names).
//!
//! A deliberately tiny HTTP/1.x responder: one connection at a time on one thread (a
//! scraper asks every few seconds), each bounded in bytes (`MAX_REQUEST_BYTES`) and in time
//! (`CONNECTION_DEADLINE`), answered and closed. Anything but `GET /metrics` gets 404 or
//! 405. The address is loopback unless the operator names another one (`--metrics
//! 0.0.0.0:9109`), which is logged: the figures tell volume names and activity.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thinly_engine::pool::{metrics, Pool};

/// The address `--metrics` takes when given without one.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9109";
/// Longest request head read (a scraper's GET is a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 8 << 10;
/// A connection is answered (or dropped) within this time, however slowly it sends.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// How often the accept loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Serves GET /metrics until stopped.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and serves `pool`'s statistics labelled `label`.
    pub fn start(pool: Pool, addr: &str, label: String) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "metrics endpoint beyond loopback (asked for explicitly)");
        }
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("thinly-metrics".into()).spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = answer(&pool, &label, stream) {
                                tracing::debug!("metrics client: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(POLL)
                        }
                        Err(e) => {
                            tracing::warn!("metrics socket: {e}");
                            std::thread::sleep(POLL)
                        }
                    }
                }
            })?
        };
        Ok(MetricsServer { stop, thread: Some(thread), addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and answers it; the connection is closed after.
fn answer(pool: &Pool, label: &str, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + CONNECTION_DEADLINE;
    let head = read_head(&mut stream, deadline)?;
    let line = head.lines().next().unwrap_or("");
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            ("200 OK", metrics::CONTENT_TYPE, metrics::render(&pool.stats(), label))
        }
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
    };
    let remaining =
        deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(remaining))?;
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(reply.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The request up to its blank line, at most `MAX_REQUEST_BYTES`, before `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request too slow"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request too long"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
