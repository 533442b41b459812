//! `thinly` on pools whose data and metadata are block devices (real loop devices), and
//! metadata that grows while the pool is served: `pool create --data/--metadata`, the
//! second opener's error, `pool extend` after the devices grew, `pool extend
//! --metadata-size` through the control socket, the real thin_check on the result.
//!
//! Needs root and losetup (and qemu-io for the served data): skips loudly without, fails
//! when `CI` is set. Every loop device is detached when its `LoopDevice` drops.

mod common;

use common::s;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use thinly_test_support::{require_tool, LoopDevice};

const DATA_BYTES: u64 = 64 << 20;
const META_BYTES: u64 = 8 << 20;

fn thinly(args: &[&str]) -> Output {
    common::thinly_run(args)
}

fn ok(out: Output, what: &str) -> String {
    common::ok(&out, what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(dir: &Path) -> serde_json::Value {
    let out = ok(thinly(&["pool", "status", "--json", "--pool", s(dir)]), "pool status");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    v["pool"].clone()
}

fn garbage(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    for off in (0..len).step_by(chunk.len()) {
        f.write_all_at(&chunk, off).unwrap();
    }
    f.sync_all().unwrap();
}

fn thin_check(meta: &Path) {
    ok(thinly(&["check", s(meta)]), "thinly check");
    if let Some(tc) = require_tool("thin_check") {
        common::ok(&common::run(&tc, &[s(meta)]), "thin_check");
    }
}

/// A device pool created by the CLI in a fresh directory.
struct DevicePool {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    data: LoopDevice,
    meta: LoopDevice,
}

fn device_pool() -> Option<DevicePool> {
    let data = LoopDevice::new(DATA_BYTES)?;
    let meta = LoopDevice::new(META_BYTES)?;
    garbage(data.path(), DATA_BYTES);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let out = thinly(&[
        "pool",
        "create",
        "--pool",
        s(&dir),
        "--data",
        s(data.path()),
        "--metadata",
        s(meta.path()),
        "--out-of-space",
        "error",
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("zeroing"), "no bar off a terminal");
    ok(out, "pool create on loop devices");
    Some(DevicePool { _tmp: tmp, dir, data, meta })
}

#[test]
fn pool_create_on_loop_devices_records_them_and_sizes_from_the_devices() {
    let Some(p) = device_pool() else { return };
    let json = std::fs::read_to_string(p.dir.join("pool.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(config["data_path"].as_str(), Some(s(p.data.path())));
    assert_eq!(config["metadata_path"].as_str(), Some(s(p.meta.path())));
    assert!(!p.dir.join("data").exists() && !p.dir.join("metadata").exists());
    let st = status(&p.dir);
    assert_eq!(st["total_data_blocks"].as_u64(), Some(DATA_BYTES / (64 << 10)));
    assert_eq!(st["total_metadata_blocks"].as_u64(), Some(META_BYTES / 4096));
    ok(thinly(&["create", "v", "--size", "16M", "--pool", s(&p.dir)]), "create");
    // A size that is not the device's is refused, and leaves nothing behind.
    let other = p._tmp.path().join("other");
    let out = thinly(&[
        "pool",
        "create",
        "--pool",
        s(&other),
        "--data",
        s(p.data.path()),
        "--size",
        "32M",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("block device"), "{out:?}");
    assert!(!other.join("pool.json").exists());
    // The kernel's tables for this pool name the devices themselves, not loop files.
    let script = ok(thinly(&["kernel-script", s(&p.dir)]), "kernel-script");
    let meta_line = format!("META={}", s(p.meta.path()));
    assert!(script.contains(&meta_line), "{script}");
    assert!(script.contains("blockdev --getsize64"), "{script}");
    assert!(!script.contains("losetup --find"), "{script}");
    thin_check(p.meta.path());
}

/// `thinly serve` on `dir`, unix socket only; killed on drop.
struct Served(Child);

impl Served {
    fn start(dir: &Path) -> Served {
        let child = Command::new(common::thinly())
            .args(["serve", "--pool", s(dir), "--listen", "none"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("control.sock").exists() {
            assert!(Instant::now() < deadline, "thinly serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served(child)
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "thinly serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_io(dir: &Path, export: &str, cmd: &str) {
    let qemu_io = require_tool("qemu-io").expect("checked by the caller");
    let uri = format!("nbd+unix:///{export}?socket={}", s(&dir.join("nbd.sock")));
    let out = common::run(&qemu_io, &["-f", "raw", "-c", cmd, &uri]);
    common::ok(&out, cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Pattern verification failed"), "{cmd}: {text}");
}

#[test]
fn a_second_process_is_told_the_devices_are_in_use() {
    let Some(p) = device_pool() else { return };
    let served = Served::start(&p.dir);
    let other = p._tmp.path().join("other");
    let out = thinly(&[
        "pool",
        "create",
        "--pool",
        s(&other),
        "--data",
        s(p.data.path()),
        "--metadata",
        s(p.meta.path()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(!other.join("pool.json").exists());
    served.stop();
    thin_check(p.meta.path());
}

#[test]
fn served_device_pool_takes_in_grown_devices_with_its_data_intact() {
    if require_tool("qemu-io").is_none() {
        return;
    }
    let Some(p) = device_pool() else { return };
    ok(thinly(&["create", "v", "--size", "256M", "--pool", s(&p.dir)]), "create");
    let served = Served::start(&p.dir);
    qemu_io(&p.dir, "v", "write -P 0xab 0 8M");
    let out = thinly(&["pool", "extend", "--pool", s(&p.dir)]);
    assert!(!out.status.success(), "nothing has grown yet");
    let out = thinly(&["pool", "extend", "--metadata-size", "16M", "--pool", s(&p.dir)]);
    assert!(!out.status.success(), "the metadata device is still 8M");
    p.data.grow(2 * DATA_BYTES);
    p.meta.grow(2 * META_BYTES);
    ok(thinly(&["pool", "extend", "--pool", s(&p.dir)]), "extend after losetup -c");
    let st = status(&p.dir);
    assert_eq!(st["total_data_blocks"].as_u64(), Some(2 * DATA_BYTES / (64 << 10)));
    assert_eq!(st["total_metadata_blocks"].as_u64(), Some(2 * META_BYTES / 4096));
    qemu_io(&p.dir, "v", "write -P 0xcd 100M 8M");
    qemu_io(&p.dir, "v", "read -P 0xab 0 8M");
    qemu_io(&p.dir, "v", "read -P 0xcd 100M 8M");
    qemu_io(&p.dir, "v", "read -P 0 8M 1M");
    served.stop();
    thin_check(p.meta.path());
}

#[test]
fn metadata_of_a_served_file_pool_grows_through_the_control_socket() {
    if require_tool("qemu-io").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    ok(
        thinly(&["pool", "create", "--pool", s(&dir), "--size", "1G", "--metadata-size", "2M"]),
        "pool create",
    );
    ok(thinly(&["create", "v", "--size", "64M", "--pool", s(&dir)]), "create");
    let served = Served::start(&dir);
    qemu_io(&dir, "v", "write -P 0x3c 0 16M");
    let out = ok(
        thinly(&["pool", "extend", "--metadata-size", "6M", "--pool", s(&dir)]),
        "extend --metadata-size",
    );
    assert!(out.contains("6MiB of metadata") || out.contains("metadata (1536 blocks)"), "{out}");
    assert_eq!(std::fs::metadata(dir.join("metadata")).unwrap().len(), 6 << 20);
    qemu_io(&dir, "v", "write -P 0x3d 16M 16M");
    qemu_io(&dir, "v", "read -P 0x3c 0 16M");
    qemu_io(&dir, "v", "read -P 0x3d 16M 16M");
    let out = thinly(&["pool", "extend", "--metadata-size", "4M", "--pool", s(&dir)]);
    assert!(!out.status.success(), "metadata never shrinks");
    served.stop();
    assert_eq!(status(&dir)["total_metadata_blocks"].as_u64(), Some(1536));
    thin_check(&dir.join("metadata"));
}

/// On a terminal (`script` gives the command one), zeroing a data device shows a bar with
/// its total; `--no-zeroing` shows none.
#[test]
fn pool_create_on_a_device_shows_a_zeroing_bar_on_a_terminal() {
    let Some(script) = require_tool("script") else { return };
    let Some(data) = LoopDevice::new(DATA_BYTES) else { return };
    let Some(meta) = LoopDevice::new(META_BYTES) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let create = |dir: &Path, extra: &str| {
        let cmd = format!(
            "{} pool create --pool {} --data {} --metadata {} {extra}",
            s(&common::thinly()),
            s(dir),
            s(data.path()),
            s(meta.path())
        );
        let out = common::run(&script, &["-qec", &cmd, "/dev/null"]);
        common::ok(&out, "pool create under script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = create(&tmp.path().join("a"), "");
    assert!(shown.contains("zeroing the data device"), "{shown}");
    assert!(shown.contains("64MiB"), "the bar shows its total: {shown}");
    let shown = create(&tmp.path().join("b"), "--no-zeroing");
    assert!(!shown.contains("zeroing the data device"), "{shown}");
}
