//! The transaction id through `thinly message` and `thinly pool status`, as Docker's
//! devicemapper driver drives a dm-thin pool: offline (each command opens and closes the
//! pool) and online (through a `thinly serve` control socket, the server restarted between
//! layers); only `set_transaction_id` moves the id, as in the kernel. Sizes given in
//! sectors, as dmsetup and Docker write them. Servers listen on nothing but their control
//! socket in a temporary directory, and every command is bounded in time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `thinly <args>`, killing it after `secs`.
fn thinly_bounded(args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(common::thinly())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running thinly");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("waiting for thinly").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("thinly {args:?} took longer than {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("thinly's output")
}

fn thinly(args: &[&str]) -> String {
    let out = thinly_bounded(args, 60);
    common::ok(&out, &format!("thinly {args:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The transaction id `thinly pool status` reports (its first field, as dmsetup's).
fn tid(pool: &str) -> u64 {
    let status = thinly(&["pool", "status", "--raw", "--pool", pool]);
    let first = status.split_whitespace().next().expect("a status line");
    first.parse().unwrap_or_else(|_| panic!("status {status:?}"))
}

/// A `thinly serve` on `dir`, reachable only through its control socket.
struct Server {
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let sock = dir.join("control.sock");
        // A control socket left by the previous server would look like this one's.
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(common::thinly())
            .args(["serve", "--pool", dir.to_str().expect("utf-8"), "--listen", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting thinly serve");
        let server = Server { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "thinly serve made no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// SIGTERM, and the server must exit 0 within 30 s.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("waiting for the server").is_none() {
            assert!(Instant::now() < deadline, "thinly serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(child.wait().expect("exit status").code(), Some(0));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `text` and checks the transaction id the kernel would then report.
fn step(pool: &str, text: &str, want: u64) {
    thinly(&["message", text, "--pool", pool]);
    assert_eq!(tid(pool), want, "after {text:?}");
}

/// Docker's devicemapper sequence (see engine/tests/pool_transaction_id.rs); `restart`
/// runs between layers.
fn docker_sequence(dir: &Path, restart: &mut dyn FnMut()) {
    let pool = dir.to_str().expect("utf-8");
    let mut want = 0;
    step(pool, "create_thin 0", want);
    step(pool, "set_transaction_id 0 1", 1);
    want += 1;
    for layer in 1..=5u64 {
        // The parent layer, or the base device when the parent was deleted.
        let base = if (layer - 1) % 2 == 1 { layer - 1 } else { 0 };
        step(pool, &format!("create_snap {layer} {base}"), want);
        step(pool, &format!("set_transaction_id {want} {}", want + 1), want + 1);
        want += 1;
        if layer % 2 == 0 {
            step(pool, &format!("delete {layer}"), want);
            step(pool, &format!("set_transaction_id {want} {}", want + 1), want + 1);
            want += 1;
        }
        // A stale counter is refused (exit 1) and changes nothing.
        let stale = format!("set_transaction_id {} {}", want - 1, want + 5);
        let out = thinly_bounded(&["message", &stale, "--pool", pool], 60);
        assert_eq!(out.status.code(), Some(1), "{stale:?} was not refused");
        assert_eq!(tid(pool), want);
        restart();
        assert_eq!(tid(pool), want, "after the restart following layer {layer}");
    }
    // thinly's own management leaves the id alone too.
    thinly(&["create", "named", "--size", "2048s", "--pool", pool]);
    thinly(&["resize", "named", "--size", "4096s", "--pool", pool]);
    thinly(&["delete", "named", "--pool", pool]);
    assert_eq!(tid(pool), want);
}

fn new_pool(tmp: &Path) -> PathBuf {
    let dir = tmp.join("pool");
    let d = dir.to_str().expect("utf-8");
    // 1 GiB of data in 64 KiB blocks, both in sectors as a dm table gives them.
    thinly(&["pool", "create", "--pool", d, "--size", "2097152s", "--block-size", "128s"]);
    dir
}

fn assert_checks_clean(dir: &Path) {
    let meta = dir.join("metadata");
    let meta = meta.to_str().expect("utf-8");
    thinly(&["check", meta]);
    if let Some(tc) = thinly_test_support::require_tool("thin_check") {
        let out = common::run(tc, &[meta]);
        common::ok(&out, "thin_check");
    }
}

#[test]
fn dockers_message_sequence_offline_sees_the_kernels_transaction_ids() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = new_pool(tmp.path());
    let status = thinly(&["pool", "status", "--raw", "--pool", dir.to_str().expect("utf-8")]);
    let total = status.split_whitespace().nth(2).expect("data blocks field");
    assert_eq!(total, "0/16384", "2097152s in 128s blocks: {status}");
    docker_sequence(&dir, &mut || {});
    assert_checks_clean(&dir);
}

#[test]
fn dockers_message_sequence_online_sees_the_kernels_transaction_ids_across_restarts() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = new_pool(tmp.path());
    let mut server = Some(Server::start(&dir));
    docker_sequence(&dir, &mut || {
        server.take().expect("a server").stop();
        server = Some(Server::start(&dir));
    });
    server.take().expect("a server").stop();
    assert_checks_clean(&dir);
}

#[test]
fn volume_sizes_in_sectors_are_bytes_times_512() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = new_pool(tmp.path());
    let d = dir.to_str().expect("utf-8");
    thinly(&["create", "v", "--size", "20971520s", "--pool", d]);
    let list = thinly(&["list", "--json", "--pool", d]);
    let v: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(v[0]["size_bytes"], 10u64 << 30, "{v}");
    let out = thinly_bounded(&["create", "w", "--size", "12q", "--pool", d], 30);
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");
}
