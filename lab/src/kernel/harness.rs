//! The kernel tests' harness: boots the kernel lab's guest (shared/kernel-lab/run-guest.sh)
//! with disks, NBD disks and virtio-serial ports, runs a guest script, and gives back its
//! exit status and console; finds the `thinly` binary and runs `thinly serve`.
//!
//! A test calls [`lab_ready`] first: when the lab is not set up it skips with a loud message,
//! unless `CI` is set, where it fails. Work directories live outside the checkout (under
//! the lab's cache, `run/`) and are removed after a passing test, kept after a failing one.
//! The guest never gets a network device: run-guest.sh passes `-nic none`, and nothing here
//! adds one; everything travels through virtio disks, 9p and unix sockets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The guest helpers every guest script starts with.
pub const GUEST_LIB: &str = include_str!("guest-lib.sh");

/// The kernel lab kit: $THINLY_KERNEL_LAB_KIT, else ../shared/kernel-lab beside the checkout.
pub fn kit_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("THINLY_KERNEL_LAB_KIT") {
        return PathBuf::from(p);
    }
    // This crate sits one level inside the checkout.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kernel-lab")
}

/// The lab's cache directory (where run-guest.sh looks).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("THINLY_KERNEL_LAB").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/thinly-kernel-lab")
    })
}

fn skip_or_fail(why: &str) -> bool {
    thinly_test_support::skip_or_fail(&format!(
        "the kernel lab (run shared/kernel-lab/setup.sh as root to enable the kernel tests; \
         not ready: {why})"
    ))
}

/// True when run-guest.sh -C says the lab is ready; else skips loudly (fails under CI).
pub fn lab_ready() -> bool {
    let runner = kit_dir().join("run-guest.sh");
    if !runner.exists() {
        return skip_or_fail(&format!("{} does not exist", runner.display()));
    }
    match Command::new(&runner).arg("-C").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => skip_or_fail(String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => skip_or_fail(&format!("running {}: {e}", runner.display())),
    }
}

/// Heavier variants run only with THINLY_KERNEL_HEAVY=1.
pub fn heavy() -> bool {
    std::env::var("THINLY_KERNEL_HEAVY").is_ok_and(|v| v == "1")
}

/// A work directory under the lab's cache: removed on drop unless the test is failing.
pub struct Work {
    pub dir: PathBuf,
}

impl Work {
    pub fn new(tag: &str) -> Work {
        let run = cache_dir().join("run");
        std::fs::create_dir_all(&run).expect("creating the lab's run directory");
        let d =
            tempfile::Builder::new().prefix(&format!("{tag}.")).tempdir_in(&run).expect("work dir");
        Work { dir: d.keep() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A subdirectory (created).
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::create_dir_all(&p).expect("creating a work subdirectory");
        p
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("THINLY_KERNEL_KEEP").is_some() {
            eprintln!("kept work directory {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A short directory for unix sockets (paths are limited to 107 bytes).
pub fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("tk").tempdir_in("/tmp").expect("socket dir")
}

/// Makes a sparse file of `bytes`.
pub fn sparse_file(path: &Path, bytes: u64) {
    std::fs::File::create(path).and_then(|f| f.set_len(bytes)).expect("creating a sparse file");
}

/// An ext4 image of `bytes` holding the tree at `root`, made without mounting (`mkfs.ext4
/// -d`): how a test gives the guest a pool on a real filesystem of its own.
pub fn ext4_image(root: &Path, image: &Path, bytes: u64) {
    sparse_file(image, bytes);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(root)
        .arg(image)
        .output()
        .expect("running mkfs.ext4");
    assert!(out.status.success(), "mkfs.ext4 -d: {}", String::from_utf8_lossy(&out.stderr));
}

/// Puts the `thinly` binary into a guest's share as `share/thinly` (a hard link when the
/// share is on the same filesystem, else a copy): the guest runs the host's binary.
pub fn ship_thinly(bin: &Path, share: &Path) {
    if std::fs::hard_link(bin, share.join("thinly")).is_err() {
        std::fs::copy(bin, share.join("thinly")).expect("copying thinly into the share");
    }
}

/// One boot of the guest.
#[derive(Default)]
pub struct Guest {
    disks: Vec<PathBuf>,
    nbds: Vec<String>,
    ports: Vec<String>,
    fio: bool,
    timeout_s: u64,
    memory: Option<String>,
}

/// What a guest run left.
pub struct GuestRun {
    pub status: i32,
    pub console: String,
    pub wall: Duration,
}

impl GuestRun {
    /// Panics with the console's tail unless the script exited 0.
    pub fn expect_ok(&self, what: &str) {
        if self.status != 0 {
            let tail: Vec<&str> = self.console.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("{what}: guest exit {}\n--- console tail ---\n{}", self.status, tail.join("\n"));
        }
    }
}

impl Guest {
    /// A guest with a 900 s bound: only a hang should reach it. The guests of
    /// `tests/kernel.rs` run side by side, beside test.sh's other lane; on a 2-core host
    /// under a load average of 28 one boot alone took 175 s.
    pub fn new() -> Guest {
        Guest { timeout_s: 900, ..Default::default() }
    }
    /// A raw file as a virtio disk (its serial is the file's base name).
    pub fn disk(mut self, p: &Path) -> Guest {
        self.disks.push(p.to_path_buf());
        self
    }
    /// A virtio disk through QEMU's NBD client (serial nbd<N>).
    pub fn nbd(mut self, socket: &Path, export: &str) -> Guest {
        self.nbds.push(format!("{}:{export}", socket.display()));
        self
    }
    /// A virtio-serial port NAME whose host end connects to `socket`.
    pub fn port(mut self, socket: &Path, name: &str) -> Guest {
        self.ports.push(format!("{}:{name}", socket.display()));
        self
    }
    pub fn fio(mut self) -> Guest {
        self.fio = true;
        self
    }
    pub fn timeout(mut self, s: u64) -> Guest {
        self.timeout_s = s;
        self
    }
    pub fn memory(mut self, m: &str) -> Guest {
        self.memory = Some(m.to_string());
        self
    }

    /// Writes `script` (after the guest library) into `share` as NAME and boots the guest.
    pub fn run(self, share: &Path, name: &str, script: &str) -> GuestRun {
        let script_path = share.join(name);
        std::fs::write(&script_path, format!("{GUEST_LIB}\n{script}"))
            .expect("writing the guest script");
        let mut cmd = Command::new(kit_dir().join("run-guest.sh"));
        cmd.arg("-q").arg("-t").arg(self.timeout_s.to_string()).arg("-w").arg(share);
        for d in &self.disks {
            cmd.arg("-d").arg(d);
        }
        for n in &self.nbds {
            cmd.arg("-n").arg(n);
        }
        for p in &self.ports {
            cmd.arg("-p").arg(p);
        }
        if self.fio {
            cmd.arg("-f");
        }
        if let Some(m) = &self.memory {
            cmd.arg("-m").arg(m);
        }
        cmd.arg(&script_path);
        let t0 = Instant::now();
        let out = cmd.output().expect("running run-guest.sh");
        let wall = t0.elapsed();
        let console = std::fs::read_to_string(share.join("console.log")).unwrap_or_default();
        let status = out.status.code().unwrap_or(-1);
        eprintln!(
            "guest {name}: exit {status} in {:.1} s\n{}",
            wall.as_secs_f64(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        GuestRun { status, console, wall }
    }
}

/// The `thinly` binary: $THINLY_BIN, else the one cargo built beside this test
/// (`cargo test --workspace` builds it; so does `cargo build -p thinly-tools`).
pub fn thinly_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("THINLY_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("thinly");
    let modified = |f: &Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    if let (Some(bin), Some(test)) = (modified(&p), modified(&exe)) {
        if bin < test {
            eprintln!(
                "warning: {} is older than this test; `cargo build -p thinly-tools` if it is stale",
                p.display()
            );
        }
    }
    p.exists().then_some(p)
}

/// The thinly binary, or a loud skip (a failure under CI).
pub fn require_thinly() -> Option<PathBuf> {
    match thinly_bin() {
        Some(p) => Some(p),
        None => {
            skip_or_fail(
                "no thinly binary (build it: cargo build -p thinly-tools, or set THINLY_BIN)",
            );
            None
        }
    }
}

/// Runs `thinly ARGS`, panicking on failure; returns stdout.
pub fn thinly(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("running thinly");
    assert!(
        out.status.success(),
        "thinly {args:?}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `thinly serve` on a unix socket (no TCP), stopped by pid (SIGTERM) on drop.
pub struct Server {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Server {
    pub fn start(bin: &Path, pool: &Path, socket: &Path) -> Server {
        Self::start_with(bin, pool, socket, &[])
    }

    /// As `start`, with more `thinly serve` arguments.
    pub fn start_with(bin: &Path, pool: &Path, socket: &Path, extra: &[&str]) -> Server {
        let log = pool.with_extension("serve.log");
        let f = std::fs::File::create(&log).expect("serve log");
        let child = Command::new(bin)
            .args(["serve", "--listen", "none", "--pool"])
            .arg(pool)
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("starting thinly serve");
        let t0 = Instant::now();
        while !(socket.exists() && pool.join("control.sock").exists()) {
            assert!(t0.elapsed() < Duration::from_secs(20), "thinly serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, socket: socket.to_path_buf(), log }
    }

    /// Stops the server (SIGTERM: it finishes in-flight requests and commits) and checks it
    /// exited 0.
    pub fn stop(mut self) {
        let ok = self.terminate();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(ok, "thinly serve did not exit cleanly:\n{log}");
    }

    fn terminate(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A relay for the guest kernel's nbd-client over a virtio-serial port: QEMU connects to
/// `listen` at start-up, but the guest speaks only much later, so the relay connects to the
/// NBD server only when the guest sends its first line, "CONNECT\n". Connecting the server
/// straight to the port cannot work: an NBD server greets first, and the guest's
/// virtio-console driver drops bytes that arrive before the guest opens the port (nbd-client
/// then reports "INIT_PASSWD bad"), whatever the handshake timeout. Then it copies bytes both
/// ways until either side closes.
pub struct PortRelay {
    pub listen: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PortRelay {
    pub fn start(listen: &Path, server: &Path) -> PortRelay {
        let l = UnixListener::bind(listen).expect("binding the relay socket");
        let server = server.to_path_buf();
        let thread = std::thread::spawn(move || {
            let Ok((mut guest, _)) = l.accept() else { return };
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while guest.read(&mut b).is_ok_and(|n| n == 1) {
                if b[0] == b'\n' {
                    break;
                }
                line.push(b[0]);
            }
            if line != b"CONNECT" {
                eprintln!("relay: unexpected first line {:?}", String::from_utf8_lossy(&line));
                return;
            }
            let Ok(nbd) = UnixStream::connect(&server) else {
                eprintln!("relay: cannot connect to {}", server.display());
                return;
            };
            let (mut g2, mut n2) =
                (guest.try_clone().expect("clone"), nbd.try_clone().expect("clone"));
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut g2, &mut n2);
                let _ = n2.shutdown(std::net::Shutdown::Write);
            });
            let (mut n, mut g) = (nbd, guest);
            let _ = std::io::copy(&mut n, &mut g);
            let _ = g.flush();
            let _ = g.shutdown(std::net::Shutdown::Both);
            let _ = up.join();
        });
        PortRelay { listen: listen.to_path_buf(), thread: Some(thread) }
    }
}

impl Drop for PortRelay {
    fn drop(&mut self) {
        // The thread ends when the guest (QEMU) goes; a relay QEMU never used is left to
        // the process's end.
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Runs the real thin_check on a metadata file: Some(clean) or None when the tool is
/// missing (skipped loudly; fails under CI).
pub fn real_thin_check(meta: &Path) -> Option<(bool, String)> {
    let tool = thinly_test_support::require_tool("thin_check")?;
    let o = Command::new(tool).arg(meta).output().expect("running thin_check");
    Some((
        o.status.success(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    ))
}

/// The engine's own checker on a metadata file: the problems, if any.
pub fn engine_check(meta: &Path) -> Vec<String> {
    use std::sync::Arc;
    use thinly_engine::io::{BlockDevice, FileDevice};
    let dev: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(meta, true).expect("opening metadata"));
    let r =
        thinly_engine::thin::check(dev, Default::default()).expect("running the engine's check");
    r.problems.iter().map(|p| format!("{p:?}")).collect()
}
