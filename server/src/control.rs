//! Management requests, and the control socket that carries them to a serving pool.
//!
//! Every management operation is a `Request`. The `thinly` command executes it on the pool
//! directly when no server has the pool open, or sends it as one JSON line to the server's
//! control socket (`<pool>/control.sock`) and prints the JSON line that comes back. Both
//! paths run `execute`, so online and offline behave the same.

use crate::guard;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thinly_engine::pool::{Pool, PoolError};
use thinly_nbd::ExportCloser;

/// The control socket's file name in the pool directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Longest request line accepted (a request is a few hundred bytes).
pub const MAX_REQUEST_BYTES: u64 = 64 << 10;
/// A client that sends nothing for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Control clients served at once (a thread each): the CLI uses one per command, so 16
/// is plenty, and 1 000 idle connections can no longer mean 1 000 threads.
const MAX_CONTROL_CLIENTS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Create {
        name: String,
        size_bytes: u64,
    },
    Snapshot {
        origin: String,
        name: String,
        read_only: bool,
    },
    /// Refused while a client has the volume open or snapshots name it as their origin,
    /// unless `force` (guardrails: `guard`).
    Delete {
        name: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Shrinking is refused unless `force`.
    Resize {
        name: String,
        size_bytes: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    List,
    Status,
    Extend {
        size_bytes: u64,
    },
    Message {
        text: String,
    },
    /// Changed ranges of `target` against `base` from `offset_bytes` (see `diff_json`).
    Diff {
        base: String,
        target: String,
        offset_bytes: u64,
        max_ranges: usize,
    },
}

/// Changed ranges one `Diff` request returns at most: one answer line stays ~2 MiB.
pub const MAX_DIFF_RANGES_PER_REQUEST: usize = 65_536;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// errno of the failure (ENOSPC, EEXIST, ENOENT …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(default)]
    pub result: serde_json::Value,
    /// What the user should know although the request succeeded (over-provisioning …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Response {
    fn from_result(r: Result<serde_json::Value, PoolError>) -> Response {
        match r {
            Ok(result) => Response { ok: true, result, ..Response::default() },
            Err(e) => Response {
                ok: false,
                errno: Some(crate::errno::errno(&e)),
                error: Some(e.to_string()),
                ..Response::default()
            },
        }
    }
}

/// Runs a request on an open pool (no server: nobody has a volume open but this process).
pub fn execute(pool: &Pool, req: &Request) -> Response {
    execute_served(pool, req, None)
}

/// Runs a request on a pool that a server serves: `closer` closes an export's connections
/// before a forced delete.
pub fn execute_served(pool: &Pool, req: &Request, closer: Option<&ExportCloser>) -> Response {
    let guarded = match req {
        Request::Create { name, size_bytes } => Some(guard::create(pool, name, *size_bytes)),
        Request::Snapshot { origin, name, read_only } => {
            Some(guard::snapshot(pool, origin, name, *read_only))
        }
        Request::Delete { name, force } => Some(guard::delete(pool, name, *force, closer)),
        Request::Resize { name, size_bytes, force } => {
            Some(guard::resize(pool, name, *size_bytes, *force))
        }
        _ => None,
    };
    if let Some(g) = guarded {
        return match g {
            Ok((result, warnings)) => {
                Response { ok: true, result, warnings, ..Response::default() }
            }
            Err(e) => Response::from_result(Err(e)),
        };
    }
    let r = (|| -> Result<serde_json::Value, PoolError> {
        Ok(match req {
            Request::Create { .. }
            | Request::Snapshot { .. }
            | Request::Delete { .. }
            | Request::Resize { .. } => serde_json::Value::Null,
            Request::List => {
                let mut vols = Vec::new();
                for (name, _) in pool.list() {
                    vols.push(pool.volume_status(&name)?);
                }
                serde_json::to_value(vols).unwrap_or_default()
            }
            Request::Status => status_json(pool)?,
            Request::Extend { size_bytes } => {
                pool.extend(*size_bytes)?;
                status_json(pool)?
            }
            Request::Message { text } => serde_json::Value::String(pool.message(text)?),
            Request::Diff { base, target, offset_bytes, max_ranges } => {
                diff_json(pool, base, target, *offset_bytes, *max_ranges)?
            }
        })
    })();
    Response::from_result(r)
}

fn status_json(pool: &Pool) -> Result<serde_json::Value, PoolError> {
    let status = pool.status();
    let mut volumes = Vec::new();
    for (name, _) in pool.list() {
        volumes.push(pool.volume_status(&name)?);
    }
    let pct = |used: u64, total: u64| {
        (total > 0).then(|| (used as f64 * 10_000.0 / total as f64).round() / 100.0)
    };
    Ok(serde_json::json!({
        "pool": status,
        "data_percent": pct(status.used_data_blocks, status.total_data_blocks),
        "metadata_percent": pct(status.used_metadata_blocks, status.total_metadata_blocks),
        "kernel_status": status.to_string(),
        "volumes": volumes,
    }))
}

/// One bounded step of a diff: {"ranges": [[offset, length], …], "complete_to_bytes",
/// "size_bytes"} over the larger of the two volumes' sizes from `offset`; the caller asks
/// again from `complete_to_bytes` until it reaches `size_bytes`.
fn diff_json(
    pool: &Pool,
    base: &str,
    target: &str,
    offset: u64,
    max_ranges: usize,
) -> Result<serde_json::Value, PoolError> {
    let vols = pool.list();
    let size_of = |name: &str| {
        let v = vols.iter().find(|(n, _)| n == name);
        v.map(|(_, v)| v.size_bytes).ok_or_else(|| PoolError::NoVolume(name.to_string()))
    };
    let size = size_of(base)?.max(size_of(target)?);
    let max = max_ranges.clamp(1, MAX_DIFF_RANGES_PER_REQUEST);
    let len = size.saturating_sub(offset);
    let ch = pool.changed_ranges(target, base, offset.min(size), len, max)?;
    Ok(serde_json::json!({
        "ranges": ch.ranges,
        "complete_to_bytes": ch.complete_to_bytes,
        "size_bytes": size,
    }))
}

/// Serves the control socket until `stop` is set.
pub struct ControlServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: std::path::PathBuf,
}

impl ControlServer {
    /// `closer`: the NBD server's, for forced deletes of open volumes.
    pub fn start(
        pool: Pool,
        dir: &Path,
        closer: Option<ExportCloser>,
    ) -> std::io::Result<ControlServer> {
        let path = dir.join(CONTROL_SOCKET);
        if path.exists() {
            // A stale socket from a server that did not exit cleanly: we hold the pool's
            // lock, so nobody else is serving it.
            std::fs::remove_file(&path)?;
        }
        // Owner-only from the first moment (umask 077), whatever the caller's umask.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let bound = UnixListener::bind(&path);
        nix::sys::stat::umask(old);
        let listener = bound?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let nr_clients = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("thinly-control".into()).spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => admit(&pool, closer.as_ref(), stream, &nr_clients),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => {
                            tracing::warn!("control socket: {e}");
                            std::thread::sleep(Duration::from_millis(50))
                        }
                    }
                }
            })?
        };
        Ok(ControlServer { stop, thread: Some(thread), path })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves a control client on its own thread if it may manage the pool (same user as
/// the server, or root: SO_PEERCRED) and fewer than `MAX_CONTROL_CLIENTS` are connected.
fn admit(
    pool: &Pool,
    closer: Option<&ExportCloser>,
    stream: UnixStream,
    nr_clients: &Arc<AtomicUsize>,
) {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(&stream, PeerCredentials) {
        Ok(c) if c.uid() == me || c.uid() == 0 => {}
        Ok(c) => {
            tracing::warn!(uid = c.uid(), pid = c.pid(), "control socket: refused another user");
            return;
        }
        Err(e) => {
            tracing::warn!("control socket: no peer credentials: {e}");
            return;
        }
    }
    if nr_clients.fetch_add(1, Ordering::SeqCst) >= MAX_CONTROL_CLIENTS {
        nr_clients.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(
            limit = MAX_CONTROL_CLIENTS,
            "control socket: too many clients; refused one"
        );
        return;
    }
    let pool = pool.clone();
    let closer = closer.cloned();
    let count = Arc::clone(nr_clients);
    let spawned =
        std::thread::Builder::new().name("thinly-control-client".into()).spawn(move || {
            serve_client(&pool, closer.as_ref(), stream);
            count.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        nr_clients.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_client(pool: &Pool, closer: Option<&ExportCloser>, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let Ok(writer) = stream.try_clone() else { return };
    serve_lines(pool, closer, BufReader::new(stream), writer);
}

/// The control protocol over any byte stream: reads request lines (at most
/// `MAX_REQUEST_BYTES` each) and writes one response line for each, until the reader ends,
/// fails or sends bytes that are not UTF-8, or the writer fails.
pub fn serve_lines(
    pool: &Pool,
    closer: Option<&ExportCloser>,
    mut reader: impl BufRead,
    mut writer: impl Write,
) {
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST_BYTES).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut out = serde_json::to_string(&answer(pool, closer, &line))
            .unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// The response to one request line: the request's, or a bad-request error when the line
/// is not a request.
pub fn answer(pool: &Pool, closer: Option<&ExportCloser>, line: &str) -> Response {
    match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => {
            tracing::info!(?req, "control request");
            execute_served(pool, &req, closer)
        }
        Err(e) => Response {
            ok: false,
            error: Some(format!("bad request: {e}")),
            errno: Some(crate::errno::BAD_REQUEST),
            ..Response::default()
        },
    }
}

/// Sends one request to a serving pool; `None` if nobody answers on the socket.
pub fn send(dir: &Path, req: &Request) -> Option<std::io::Result<Response>> {
    let path = dir.join(CONTROL_SOCKET);
    let mut stream = UnixStream::connect(path).ok()?;
    Some((|| {
        let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(&mut stream).take(16 << 20).read_line(&mut answer)?;
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    })())
}
