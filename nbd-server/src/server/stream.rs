//! One type for TCP, Unix-socket and TLS connections, so the connection code is
//! written once.
//!
//! A TLS stream is shared by the connection's reader and its workers: one OpenSSL
//! session behind a mutex over a non-blocking socket. Nobody holds the mutex while
//! waiting: a call that would block (`WANT_READ`/`WANT_WRITE`) lets go and polls the
//! socket, so a reader waiting for the next request never stalls a worker's reply.
//! Read and write timeouts are kept here and enforced by that poll.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use openssl::ssl::{ErrorCode, SslStream};

use crate::access::{Peer, TlsIdentity};

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP (loopback in tests).
    Tcp(TcpStream),
    /// Unix stream socket.
    Unix(UnixStream),
    /// TLS over one of the others, after STARTTLS.
    Tls(TlsStream),
}

impl Stream {
    /// Another handle to the same socket.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tls(s) => Stream::Tls(TlsStream { inner: Arc::clone(&s.inner) }),
        })
    }

    /// Shuts down one or both directions; wakes a reader blocked on the socket. For
    /// TLS, shutting down both first tries to send close_notify.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tls(s) => {
                if how != Shutdown::Read {
                    if let Ok(mut ssl) = s.inner.ssl.try_lock() {
                        let _ = ssl.shutdown();
                    }
                }
                s.inner.raw.shutdown(how)
            }
        }
    }

    /// `SO_RCVTIMEO`; `None` blocks forever.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tls(s) => {
                *s.inner.read_timeout.lock().unwrap_or_else(|e| e.into_inner()) = t;
                Ok(())
            }
        }
    }

    /// `SO_SNDTIMEO`; `None` blocks forever.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tls(s) => {
                *s.inner.write_timeout.lock().unwrap_or_else(|e| e.into_inner()) = t;
                Ok(())
            }
        }
    }

    /// Switches the socket between blocking and non-blocking.
    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tls(s) => s.inner.raw.set_nonblocking(on),
        }
    }

    /// Whether a read would return at once (data, end of stream or an error) — a
    /// non-blocking peek, for busy-polling.
    pub fn ready_to_read(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        if let Stream::Tls(s) = self {
            let pending = s.inner.ssl.try_lock().map(|ssl| ssl.ssl().pending() > 0);
            return pending.unwrap_or(false) || s.inner.raw.ready_to_read();
        }
        let mut byte = [0u8; 1];
        !matches!(
            recv(self.fd().as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Err(nix::errno::Errno::EAGAIN)
        )
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.inner.raw.fd(),
        }
    }

    /// A printable peer name for logs.
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => {
                s.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "tcp:?".into())
            }
            Stream::Unix(_) => "unix".into(),
            Stream::Tls(s) => s.inner.raw.peer(),
        }
    }

    /// The TLS client's identity (certificate DN or PSK username), if any.
    pub fn tls_identity(&self) -> Option<&TlsIdentity> {
        match self {
            Stream::Tls(s) => s.inner.identity.as_ref(),
            _ => None,
        }
    }

    /// The peer for an access policy: the TCP address, or the unix client's
    /// credentials as the kernel recorded them at connect (`SO_PEERCRED`).
    pub fn peer_info(&self) -> Peer {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Tcp).unwrap_or(Peer::Unknown),
            Stream::Unix(s) => {
                match nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials) {
                    Ok(c) => Peer::Unix { uid: c.uid(), gid: c.gid() },
                    Err(_) => Peer::Unknown,
                }
            }
            Stream::Tls(s) => s.inner.raw.peer_info(),
        }
    }
}

/// One TLS session shared by every handle of a connection (see the module doc).
pub struct TlsStream {
    inner: Arc<TlsInner>,
}

struct TlsInner {
    ssl: Mutex<SslStream<Stream>>,
    /// The same socket, for polling and shutdown without the session lock.
    raw: Stream,
    read_timeout: Mutex<Option<Duration>>,
    write_timeout: Mutex<Option<Duration>>,
    identity: Option<TlsIdentity>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("raw", &self.inner.raw).finish_non_exhaustive()
    }
}

impl TlsStream {
    /// Wraps a session whose handshake is done over `raw` (which becomes non-blocking).
    pub(crate) fn new(ssl: SslStream<Stream>, identity: Option<TlsIdentity>) -> io::Result<Self> {
        let raw = ssl.get_ref().try_clone()?;
        raw.set_nonblocking(true)?;
        let inner = TlsInner {
            ssl: Mutex::new(ssl),
            raw,
            read_timeout: Mutex::new(None),
            write_timeout: Mutex::new(None),
            identity,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    fn deadline(t: &Mutex<Option<Duration>>) -> Option<Instant> {
        t.lock().unwrap_or_else(|e| e.into_inner()).map(|t| Instant::now() + t)
    }

    /// Runs `op` on the session until it stops wanting socket readiness.
    fn drive<T>(
        &self,
        deadline: Option<Instant>,
        mut op: impl FnMut(&mut SslStream<Stream>) -> Result<T, openssl::ssl::Error>,
        on_eof: impl Fn() -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            let want = {
                let mut ssl = self.inner.ssl.lock().unwrap_or_else(|e| e.into_inner());
                match op(&mut ssl) {
                    Ok(v) => return Ok(v),
                    Err(e) => match e.code() {
                        ErrorCode::WANT_READ => PollFlags::POLLIN,
                        ErrorCode::WANT_WRITE => PollFlags::POLLOUT,
                        ErrorCode::ZERO_RETURN => return on_eof(),
                        ErrorCode::SYSCALL if e.io_error().is_none() => return on_eof(),
                        _ => return Err(e.into_io_error().unwrap_or_else(io::Error::other)),
                    },
                }
            };
            wait(self.inner.raw.fd(), want, deadline)?;
        }
    }
}

/// Waits until `fd` is ready for `flags` (or hung up), or `deadline` passes.
fn wait(fd: BorrowedFd<'_>, flags: PollFlags, deadline: Option<Instant>) -> io::Result<()> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS stream timed out"));
            }
            // Capped: the loop in `drive` comes back and checks the deadline again.
            PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
        }
    };
    let mut fds = [PollFd::new(fd, flags)];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => {
                if buf.is_empty() {
                    return Ok(0);
                }
                let deadline = TlsStream::deadline(&s.inner.read_timeout);
                s.drive(deadline, |ssl| ssl.ssl_read(buf), || Ok(0))
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => {
                if buf.is_empty() {
                    return Ok(0);
                }
                let deadline = TlsStream::deadline(&s.inner.write_timeout);
                let closed = || Err(io::Error::from(io::ErrorKind::BrokenPipe));
                s.drive(deadline, |ssl| ssl.ssl_write(buf), closed)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(_) => Ok(()),
        }
    }
}
