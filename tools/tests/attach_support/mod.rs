//! Shared by the attach and layer-flow tests: what they need from the host (root, FUSE,
//! loop devices, nbdfuse, e2fsprogs; a missing piece skips loudly, or fails under `CI`),
//! a `thinly serve` on a pool in a temporary directory, commands bounded in time, and a
//! guard whose Drop takes down every mount, loop device, FUSE mount and server the test
//! left behind, on success and on failure alike.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The programs every attach test runs.
pub const TOOLS: &[&str] = &["nbdfuse", "losetup", "mount", "umount", "mkfs.ext4", "e2fsck"];

/// True when this host can attach through FUSE and a loop device; else skips (or fails
/// under CI) naming what is missing.
pub fn host_can_attach() -> bool {
    if !is_root() {
        return thinly_test_support::skip_or_fail("root (for loop devices and mounts)");
    }
    for dev in ["/dev/fuse", "/dev/loop-control"] {
        if !Path::new(dev).exists() {
            return thinly_test_support::skip_or_fail(dev);
        }
    }
    thinly_test_support::require_tools(TOOLS)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a command, killing it (and failing the test) after `secs`.
pub fn bounded(prog: &str, args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("waiting for a child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{prog} {args:?} took longer than {secs} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collecting a child's output")
}

/// Runs a command that must succeed; its stdout.
pub fn ok(prog: &str, args: &[&str], secs: u64) -> String {
    let out = bounded(prog, args, secs);
    assert!(
        out.status.success(),
        "{prog} {args:?}: exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn thinly_bin() -> String {
    env!("CARGO_BIN_EXE_thinly").to_string()
}

/// `thinly ARGS`, which must succeed.
pub fn thinly(args: &[&str]) -> String {
    ok(&thinly_bin(), args, 120)
}

/// A pool in a temporary directory, its server, and everything attached or mounted from
/// it; Drop cleans all of it up.
pub struct Lab {
    pub dir: PathBuf,
    server: Option<Child>,
    mounts: Vec<PathBuf>,
    // Last: the directory goes after everything inside it is unmounted.
    tmp: tempfile::TempDir,
}

impl Lab {
    /// Creates a pool of `data_size` (K/M/G) and starts serving it.
    pub fn new(data_size: &str) -> Lab {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().join("pool");
        let d = dir.to_str().expect("UTF-8 path").to_string();
        thinly(&["pool", "create", "--pool", &d, "--size", data_size]);
        let mut lab =
            Lab { dir: dir.canonicalize().expect("pool dir"), server: None, mounts: vec![], tmp };
        lab.start_server();
        lab
    }

    pub fn pool(&self) -> &str {
        self.dir.to_str().expect("UTF-8 path")
    }

    /// A directory inside the temporary directory (a mount point).
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "a server is running already");
        let log = std::fs::File::create(self.tmp.path().join("serve.log")).expect("log");
        let child = Command::new(thinly_bin())
            .args(["serve", "--pool", self.pool(), "--listen", "none"])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting thinly serve");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(self.dir.join("control.sock").exists() && self.dir.join("nbd.sock").exists()) {
            assert!(Instant::now() < deadline, "thinly serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server dies with no chance to commit (what a crash looks like).
    pub fn kill_server(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("control.sock"));
    }

    /// SIGTERM: the server must commit and exit 0.
    pub fn stop_server(&mut self) {
        let mut c = self.server.take().expect("a running server");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "thinly serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(c.wait().expect("wait").code(), Some(0), "thinly serve exit after SIGTERM");
    }

    /// `thinly attach VOLUME`: the device.
    pub fn attach(&self, volume: &str) -> String {
        thinly(&["attach", volume, "--pool", self.pool()]).trim().to_string()
    }

    pub fn detach(&self, target: &str) {
        thinly(&["detach", target, "--pool", self.pool()]);
    }

    /// Mounts `device` on a fresh directory (with `opts` for mount -o); the mount point.
    pub fn mount(&mut self, device: &str, name: &str, opts: &str) -> PathBuf {
        let mnt = self.path(name);
        let m = mnt.to_str().expect("UTF-8 path");
        ok("mount", &["-o", opts, device, m], 60);
        self.mounts.push(mnt.clone());
        mnt
    }

    pub fn umount(&mut self, mnt: &Path) {
        ok("umount", &[mnt.to_str().expect("UTF-8 path")], 120);
        self.mounts.retain(|m| m != mnt);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            let _ = bounded("umount", &["-l", m.to_str().unwrap_or_default()], 60);
        }
        let pool = self.dir.to_str().unwrap_or_default().to_string();
        let records: Vec<serde_json::Value> = std::fs::read(self.dir.join("attachments.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for r in &records {
            let vol = r["volume"].as_str().unwrap_or_default();
            let out = bounded(&thinly_bin(), &["detach", vol, "--force", "--pool", &pool], 60);
            if out.status.success() {
                continue;
            }
            // Detach failed: take the pieces down by hand.
            let _ = bounded("losetup", &["-d", r["device"].as_str().unwrap_or_default()], 30);
            let _ = bounded("umount", &["-l", r["mountpoint"].as_str().unwrap_or_default()], 30);
            if let Some(pid) = r["helper_pid"].as_i64() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.kill_server();
    }
}
