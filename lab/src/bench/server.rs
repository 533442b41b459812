//! The engines under test and the NBD server processes that serve them. A `Server` owns
//! its child process: it is started on a unix socket in the workspace's short directory,
//! is not handed out until its socket exists (or fails with the reason: it exited — with
//! its stderr — or the socket never appeared), and is stopped on drop (SIGTERM, then
//! SIGKILL after `SERVER_STOP`), also when the harness errors or panics.

use super::env::{self, Tools, Workspace};
use super::limits;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// qemu-nbd's cache mode: the page cache with fdatasync on flush — the same caching class
/// as thinly (buffered I/O, fdatasync at commit) and nbdkit's file plugin.
pub const QEMU_CACHE: &str = "writeback";
/// qemu-nbd's AIO mode: io_uring (measured here 1.4-1.5x `threads` on 4 KiB random reads at
/// qd32 and about 1.1x on writes, with the page cache), so the peer runs at its best.
pub const QEMU_AIO: &str = "io_uring";

/// An engine: one NBD server program over one kind of backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Engine {
    Thinly,
    /// thinly's own NBD server over a null export: thinly's transport ceiling.
    ThinlyNull,
    QemuRaw,
    QemuQcow2,
    NbdkitFile,
    /// qemu-storage-daemon on a qcow2 file: live snapshots over QMP.
    QsdQcow2,
    /// nbdkit's null plugin: no storage at all; a peer's transport, not thinly's ceiling.
    /// Never the "best peer" in ratios.
    NbdkitNull,
}

impl Engine {
    pub fn label(self) -> &'static str {
        match self {
            Engine::Thinly => "thinly",
            Engine::ThinlyNull => "thinly null export (thinly's transport ceiling)",
            Engine::QemuRaw => "qemu-nbd raw",
            Engine::QemuQcow2 => "qemu-nbd qcow2",
            Engine::NbdkitFile => "nbdkit file",
            Engine::QsdQcow2 => "qemu-storage-daemon qcow2",
            Engine::NbdkitNull => "nbdkit null (a peer's transport, no storage)",
        }
    }

    /// No storage behind it: never the "best other" a ratio is taken against.
    pub fn is_ceiling(self) -> bool {
        matches!(self, Engine::NbdkitNull | Engine::ThinlyNull)
    }

    /// Why this engine cannot run here, if it cannot.
    pub fn missing(self, tools: &Tools) -> Option<String> {
        let need: &[(&str, bool)] = match self {
            Engine::Thinly | Engine::ThinlyNull => &[],
            Engine::QemuRaw => &[("qemu-nbd", tools.qemu_nbd.is_some())],
            Engine::QemuQcow2 => {
                &[("qemu-nbd", tools.qemu_nbd.is_some()), ("qemu-img", tools.qemu_img.is_some())]
            }
            Engine::NbdkitFile | Engine::NbdkitNull => &[("nbdkit", tools.nbdkit.is_some())],
            Engine::QsdQcow2 => &[
                ("qemu-storage-daemon", tools.qsd.is_some()),
                ("qemu-img", tools.qemu_img.is_some()),
            ],
        };
        let absent: Vec<&str> = need.iter().filter(|n| !n.1).map(|n| n.0).collect();
        (!absent.is_empty()).then(|| format!("missing: {} not installed", absent.join(", ")))
    }
}

/// The thinly pool settings a run uses, recorded with the results and passed to
/// `thinly pool create` explicitly (so a changed default cannot change the benchmark).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolSettings {
    pub block_size_bytes: u64,
    /// New blocks are zeroed before a partial first write (`--no-zeroing` when false).
    pub zeroing: bool,
    pub commit_interval_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings { block_size_bytes: 64 << 10, zeroing: true, commit_interval_ms: 1000 }
    }
}

impl PoolSettings {
    fn create_args(&self) -> Vec<String> {
        let mut a = vec![
            "--block-size".to_string(),
            self.block_size_bytes.to_string(),
            "--commit-interval-ms".into(),
            self.commit_interval_ms.to_string(),
        ];
        if !self.zeroing {
            a.push("--no-zeroing".into());
        }
        a
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Serving on loopback TCP instead of a unix socket (the `tls` suite): the port, and with
/// TLS (server directory: `ca-cert.pem`, `server-cert.pem`, `server-key.pem`; client HOME,
/// whose `.pki/libnbd/ca-cert.pem` libnbd reads, as fio cannot name it in the URI).
#[derive(Debug, Clone)]
pub struct Net {
    pub port: u16,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Net {
    /// Loopback TCP on a port free now, with TLS from (server dir, client HOME) if given.
    pub fn loopback(tls: Option<(PathBuf, PathBuf)>) -> Result<Net> {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let port = probe.local_addr()?.port();
        Ok(Net { port, tls })
    }

    fn uri(&self, export: &str) -> String {
        let scheme = if self.tls.is_some() { "nbds" } else { "nbd" };
        format!("{scheme}://127.0.0.1:{}/{export}", self.port)
    }
}

/// A running NBD server.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub socket: PathBuf,
    /// The command line it was started with (recorded with the results).
    pub command: String,
    /// thinly only: the control socket.
    pub control: Option<PathBuf>,
    log: PathBuf,
    /// thinly only: a short symlink to the pool directory, so the control socket's path
    /// stays under the unix socket length limit whatever --dir is.
    link: Option<PathBuf>,
    /// Served on loopback TCP (and clients use it) rather than on `socket`.
    pub net: Option<Net>,
}

impl Server {
    /// `thinly serve` on the pool in `pool_dir` (created first if it does not exist yet,
    /// by `thinly pool create` with `settings`, every one of them spelled out).
    pub fn thinly(
        tools: &Tools,
        ws: &Workspace,
        pool_dir: &Path,
        settings: &PoolSettings,
    ) -> Result<Server> {
        Server::thinly_on(tools, ws, pool_dir, settings, None)
    }

    /// `thinly serve` as `thinly`, also on loopback TCP (with TLS required there) if `net`.
    pub fn thinly_on(
        tools: &Tools,
        ws: &Workspace,
        pool_dir: &Path,
        settings: &PoolSettings,
        net: Option<&Net>,
    ) -> Result<Server> {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let link = ws.socket(&format!("pool{id}"))?;
        let _ = std::fs::remove_file(&link);
        // `thinly pool create` follows the link only to an existing directory.
        std::fs::create_dir_all(pool_dir)
            .with_context(|| format!("creating {}", pool_dir.display()))?;
        std::os::unix::fs::symlink(pool_dir, &link)
            .with_context(|| format!("linking {} to {}", link.display(), pool_dir.display()))?;
        if !pool_dir.join("metadata").exists() {
            env::run_ok(
                Command::new(&tools.thinly)
                    .args(["pool", "create", "--size"])
                    .arg(limits::POOL_DATA_BYTES.to_string())
                    .args(settings.create_args())
                    .arg("--pool")
                    .arg(&link),
                limits::TOOL_SHORT,
            )
            .context("creating a thinly pool")?;
        }
        let socket = ws.socket(&format!("thinly{id}.sock"))?;
        let control = link.join("control.sock");
        let mut cmd = Command::new(&tools.thinly);
        cmd.arg("serve").arg("--pool").arg(&link).arg("--socket").arg(&socket);
        match net {
            None => cmd.args(["--listen", "none"]),
            Some(n) => cmd.arg("--listen").arg(format!("127.0.0.1:{}", n.port)),
        };
        if let Some((server_dir, _)) = net.and_then(|n| n.tls.as_ref()) {
            cmd.args(["--tls", "require", "--tls-certificates"]).arg(server_dir);
        }
        let (also, net) = (std::slice::from_ref(&control), net.cloned());
        let mut s = Server::start("thinly", cmd, socket, also, net, ws)?;
        s.control = Some(control);
        s.link = Some(link);
        Ok(s)
    }

    /// thinly's NBD server over a null export of `size_bytes` (`thinly bench serve-null`).
    pub fn thinly_null(tools: &Tools, ws: &Workspace, size_bytes: u64) -> Result<Server> {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let socket = ws.socket(&format!("null{id}.sock"))?;
        let mut cmd = Command::new(&tools.thinly);
        cmd.args(["bench", "serve-null", "--name", "bench", "--size"]).arg(size_bytes.to_string());
        cmd.arg("--socket").arg(&socket);
        Server::start("thinly bench serve-null", cmd, socket, &[], None, ws)
    }

    /// qemu-storage-daemon exporting the qcow2 `file` over NBD (export `bench`, node
    /// `top0`) with a QMP monitor on `qmp`, for live snapshots (`blockdev-snapshot-sync`).
    pub fn qsd(tools: &Tools, ws: &Workspace, file: &Path) -> Result<(Server, PathBuf)> {
        let prog = tools.qsd.as_ref().context("qemu-storage-daemon is not installed")?;
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let socket = ws.socket(&format!("qsd{id}.sock"))?;
        let qmp = ws.socket(&format!("qmp{id}.sock"))?;
        let mut cmd = Command::new(prog);
        cmd.arg("--blockdev").arg(format!(
            "driver=file,node-name=file0,filename={},cache.direct=off,aio={QEMU_AIO}",
            file.display()
        ));
        cmd.args(["--blockdev", "driver=qcow2,node-name=top0,file=file0"]);
        cmd.arg("--nbd-server").arg(format!("addr.type=unix,addr.path={}", socket.display()));
        cmd.args(["--export", "type=nbd,id=exp0,node-name=top0,name=bench,writable=on"]);
        cmd.arg("--chardev")
            .arg(format!("socket,id=qmp0,path={},server=on,wait=off", qmp.display()));
        cmd.args(["--monitor", "chardev=qmp0"]);
        let s = Server::start(
            "qemu-storage-daemon",
            cmd,
            socket,
            std::slice::from_ref(&qmp),
            None,
            ws,
        )?;
        Ok((s, qmp))
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// qemu-nbd serving `file` in `format` ("raw" or "qcow2").
    pub fn qemu_nbd(tools: &Tools, ws: &Workspace, format: &str, file: &Path) -> Result<Server> {
        Server::qemu_nbd_on(tools, ws, format, file, None)
    }

    /// qemu-nbd as `qemu_nbd`, but on loopback TCP if `net` (with `tls-creds-x509` when it
    /// has TLS); it is ready when its pid file exists and the port answers.
    pub fn qemu_nbd_on(
        tools: &Tools,
        ws: &Workspace,
        format: &str,
        file: &Path,
        net: Option<&Net>,
    ) -> Result<Server> {
        let prog = tools.qemu_nbd.as_ref().context("qemu-nbd is not installed")?;
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let socket = ws.socket(&format!("qemu{id}.sock"))?;
        let mut cmd = Command::new(prog);
        cmd.args(["-f", format, "-x", "bench", "-t"])
            .arg(format!("--shared={}", limits::QEMU_NBD_SHARED))
            .arg(format!("--cache={QEMU_CACHE}"))
            .arg(format!("--aio={QEMU_AIO}"));
        match net {
            None => cmd.arg("-k").arg(&socket),
            Some(n) => cmd.arg(format!("--pid-file={}", socket.display())).args([
                "-b".to_string(),
                "127.0.0.1".into(),
                "-p".into(),
                n.port.to_string(),
            ]),
        };
        if let Some((server_dir, _)) = net.and_then(|n| n.tls.as_ref()) {
            let creds = format!(
                "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,dir={}",
                server_dir.display()
            );
            cmd.args(["--object", &creds, "--tls-creds", "tls0"]);
        }
        cmd.arg(file);
        Server::start("qemu-nbd", cmd, socket, &[], net.cloned(), ws)
    }

    /// nbdkit's file plugin on `file`, or (file `None`) its null plugin of `size_bytes`.
    pub fn nbdkit(
        tools: &Tools,
        ws: &Workspace,
        file: Option<&Path>,
        size_bytes: u64,
    ) -> Result<Server> {
        let prog = tools.nbdkit.as_ref().context("nbdkit is not installed")?;
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let socket = ws.socket(&format!("nbdkit{id}.sock"))?;
        let mut cmd = Command::new(prog);
        cmd.args(["--exit-with-parent", "--foreground", "--unix"]).arg(&socket);
        cmd.args(["-e", "bench"]);
        match file {
            Some(f) => cmd.arg("file").arg(format!("file={}", f.display())),
            None => cmd.arg("null").arg(format!("size={size_bytes}")),
        };
        Server::start("nbdkit", cmd, socket, &[], None, ws)
    }

    fn start(
        what: &str,
        mut cmd: Command,
        socket: PathBuf,
        also: &[PathBuf],
        net: Option<Net>,
        ws: &Workspace,
    ) -> Result<Server> {
        let command = format!("{cmd:?}");
        let name = socket.file_stem().and_then(|s| s.to_str()).unwrap_or(what).to_string();
        let log = ws.data.join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {what}: {command}"))?;
        let mut server =
            Server { child: Some(child), socket, command, control: None, log, link: None, net };
        server.wait_ready(what, also)?;
        Ok(server)
    }

    fn wait_ready(&mut self, what: &str, also: &[PathBuf]) -> Result<()> {
        let deadline = Instant::now() + limits::SERVER_START;
        loop {
            let answers = |n: &Net| std::net::TcpStream::connect(("127.0.0.1", n.port)).is_ok();
            if std::iter::once(&self.socket).chain(also).all(|p| p.exists())
                && self.net.as_ref().is_none_or(answers)
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for the server")? {
                    self.child = None;
                    bail!(
                        "{what} did not start: it exited ({status}) before creating {}; its \
                         stderr:\n{}",
                        self.socket.display(),
                        self.stderr()
                    );
                }
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "{what} did not start: {} never appeared within {} s; its stderr:\n{}",
                    self.socket.display(),
                    limits::SERVER_START.as_secs(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The fio/libnbd URI of the export.
    pub fn uri(&self, export: &str) -> String {
        match &self.net {
            Some(n) => n.uri(export),
            None => format!("nbd+unix:///{export}?socket={}", self.socket.display()),
        }
    }

    /// The HOME a TLS client of this server needs (see `Net`).
    pub fn client_home(&self) -> Option<&Path> {
        self.net.as_ref().and_then(|n| n.tls.as_ref()).map(|(_, home)| home.as_path())
    }

    /// Why the server is gone, if it has exited (it crashed under a client, say).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(format!("the server exited ({status}); its stderr:\n{}", self.stderr()))
    }

    /// The tail of the server's stderr.
    pub fn stderr(&self) -> String {
        env::tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited in `SERVER_STOP`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + limits::SERVER_STOP;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("thinly bench: {} ignored SIGTERM; killing it", self.command);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        if let Some(link) = self.link.take() {
            let _ = std::fs::remove_file(link);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
