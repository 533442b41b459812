//! The access-policy seam: who a client is (`Client`: its peer and its TLS identity) and
//! what it may do with each export (`Access`), decided by an `AccessPolicy` the embedding
//! server supplies. This crate knows no rule language: it asks the policy and enforces
//! the answer.
//!
//! Enforcement (in `proto::handshake` and `server`):
//! - `NBD_OPT_LIST` shows only exports the client may open (`Access::Read` or more).
//! - INFO, GO, and the meta-context options on an export the client may not open are
//!   answered `ERR_UNKNOWN`, exactly as for a name that does not exist, so a client
//!   cannot learn which names exist. A client that the policy admits to no export at all
//!   gets `ERR_POLICY` instead (to LIST too), which tells it that it was refused; and on
//!   a listener where TLS is offered but not yet started, a refused INFO/GO gets
//!   `ERR_TLS_REQD` (§4.4.3 allows it), since the client's certificate or key may be what
//!   it lacks. `EXPORT_NAME` has no error reply: a refusal is a hard disconnect.
//! - `Access::Read` serves the export through `ReadOnly`: `NBD_FLAG_READ_ONLY` is
//!   advertised and WRITE, TRIM and WRITE_ZEROES are refused with `EPERM`.
//! - Decisions are taken per option, with the identity of that moment (a STARTTLS in
//!   between changes it). A connection in transmission keeps what it opened; the
//!   server re-asks the policy for live connections when told to
//!   (`ServerHandle::recheck_access`, on a reload) and closes those that lost access.
//!
//! Without a policy (`ServerConfig::access` is `None`) every client may list, open and
//! write every export the registry offers.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::export::{Export, Extent, ZeroFlags};

/// Where a connection comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client at this address.
    Tcp(SocketAddr),
    /// A unix-socket client with these credentials (`SO_PEERCRED`, taken at connect).
    Unix {
        /// Effective user id of the connecting process.
        uid: u32,
        /// Effective group id of the connecting process.
        gid: u32,
    },
    /// The kernel would not say (a unix socket without credentials).
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix { uid, gid } => write!(f, "unix(uid={uid},gid={gid})"),
            Peer::Unknown => write!(f, "unix(?)"),
        }
    }
}

/// Who a TLS client proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsIdentity {
    /// The subject DN of a client certificate the server verified (`CN=…,O=…`, in the
    /// certificate's order).
    Certificate(String),
    /// The username of the pre-shared key the client used.
    PskUser(String),
}

impl fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsIdentity::Certificate(dn) => f.write_str(dn),
            TlsIdentity::PskUser(user) => f.write_str(user),
        }
    }
}

/// What a policy sees of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The socket's other end.
    pub peer: Peer,
    /// Set once TLS is up with a verified certificate or a PSK.
    pub tls: Option<TlsIdentity>,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tls {
            Some(id) => write!(f, "{} ({id})", self.peer),
            None => write!(f, "{} (no TLS identity)", self.peer),
        }
    }
}

/// What a client may do with one export; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Neither listed nor opened.
    None,
    /// Listed and opened read-only.
    Read,
    /// Listed, opened and written (unless the export itself is read-only).
    Write,
}

/// Decides access; implemented by the server layer. Called from connection threads,
/// during the handshake and at `recheck_access`, so it must be cheap and must not block.
pub trait AccessPolicy: Send + Sync + fmt::Debug {
    /// What `client` may do with the export called `export` (its real name: the
    /// default export is resolved first).
    fn access(&self, client: &Client, export: &str) -> Access;
    /// Whether `client` may open any export at all (false: it is refused outright and
    /// told so with `ERR_POLICY`).
    fn admits(&self, client: &Client) -> bool;
}

/// Serves an export read-only: reads pass through, `read_only()` is true, so the
/// handshake advertises `NBD_FLAG_READ_ONLY` and validation refuses every write with
/// `EPERM` before it could reach the inner export. The write methods refuse too, in
/// case a caller skips validation.
pub struct ReadOnly(pub Arc<dyn Export>);

fn eperm() -> io::Error {
    io::Error::from_raw_os_error(nix::libc::EPERM)
}

impl Export for ReadOnly {
    fn size_bytes(&self) -> u64 {
        self.0.size_bytes()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn can_multi_conn(&self) -> bool {
        self.0.can_multi_conn()
    }
    fn preferred_block_size(&self) -> u32 {
        self.0.preferred_block_size()
    }
    fn min_block_size(&self) -> u32 {
        self.0.min_block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, buf)
    }
    fn read_sparse(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<Vec<Extent>> {
        self.0.read_sparse(offset, len, out)
    }
    fn write(&self, _: u64, _: &[u8], _: bool) -> io::Result<()> {
        Err(eperm())
    }
    fn write_zeroes(&self, _: u64, _: u64, _: ZeroFlags) -> io::Result<()> {
        Err(eperm())
    }
    fn trim(&self, _: u64, _: u64, _: bool) -> io::Result<()> {
        Err(eperm())
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.cache(offset, len)
    }
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.0.block_status(offset, len)
    }
    fn allocation_depth(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        self.0.allocation_depth(offset, len)
    }
    fn extra_meta_contexts(&self) -> Vec<String> {
        self.0.extra_meta_contexts()
    }
    fn extra_meta_status(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        max_runs: usize,
    ) -> io::Result<Vec<(u64, u32)>> {
        self.0.extra_meta_status(name, offset, len, max_runs)
    }
}
