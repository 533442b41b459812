//! `thinly serve` against the real NBD clients: nbdinfo (--map, qemu:allocation-depth),
//! qemu-img, qemu-io, nbdcopy and fio's nbd engine; snapshots through the control socket
//! while the origin is written; management online and offline; hostile bytes; SIGTERM.
//! Every server here listens on a unix socket in a temporary pool (or, for the default
//! command, on 127.0.0.1), stops by itself at the end of its test, and every external
//! command is bounded in time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &["nbdinfo", "qemu-img", "qemu-io", "nbdcopy", "fio"];

use common::bounded;

fn ok(prog: &str, args: &[&str], secs: u64) -> String {
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

fn thinly(args: &[&str]) -> String {
    ok(common::thinly().to_str().unwrap(), args, 60)
}

/// A `thinly serve` process on a pool in a temporary directory.
struct Served {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    child: Option<Child>,
}

impl Served {
    fn start(extra: &[&str]) -> Served {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        let mut args = vec!["serve", "--pool", dir.to_str().unwrap(), "--create"];
        if !extra.contains(&"--listen") {
            args.extend_from_slice(&["--listen", "none"]);
        }
        args.extend_from_slice(extra);
        let child =
            Command::new(common::thinly()).args(&args).stderr(Stdio::piped()).spawn().unwrap();
        let s = Served { _tmp: tmp, dir, child: Some(child) };
        s.wait_for(&s.dir.join("control.sock"));
        s
    }

    fn wait_for(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(Instant::now() < deadline, "thinly serve did not create {}", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> String {
        self.dir.join("nbd.sock").to_str().unwrap().to_string()
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket())
    }

    fn pool(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// SIGTERM: the server must finish, commit and exit 0; then the metadata checks clean.
    fn stop(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "thinly serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "exit after SIGTERM\n{log}");
        let meta = self.dir.join("metadata");
        thinly(&["check", meta.to_str().unwrap()]);
        if let Some(tc) = thinly_test_support::require_tool("thin_check") {
            ok(tc.to_str().unwrap(), &[meta.to_str().unwrap()], 60);
        }
        log
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn have_clients() -> bool {
    common::have_tools(TOOLS)
}

fn map(uri: &str, context: Option<&str>) -> Vec<(u64, u64, u32)> {
    let arg = context.map_or("--map".to_string(), |c| format!("--map={c}"));
    let out = ok("nbdinfo", &[&arg, uri], 30);
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw", uri];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    ok("qemu-io", &args, 120)
}

const MIB: u64 = 1 << 20;
const K64: u64 = 64 << 10;

#[test]
fn nbdinfo_qemu_io_and_qemu_img_see_exactly_what_was_written() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&[]);
    let u = s.uri("vol0");
    let info = ok("nbdinfo", &["--json", &u], 30);
    assert!(info.contains("\"export-size\": 10737418240"), "{info}");
    assert!(info.contains("\"can_multi_conn\": true"), "{info}");
    // write -z -u may unmap (no NO_HOLE flag); plain write -z sends NO_HOLE: allocated zeros.
    qemu_io(
        &u,
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd 4M 64k",
            "write -P 0x11 8M 128k",
            "write -z -u 8M 128k",
            "write -P 0xee 12M 64k",
            "discard 12M 64k",
            "write -z 16M 64k",
            "flush",
        ],
    );
    qemu_io(
        &u,
        &[
            "read -P 0xab 0 1M",
            "read -P 0 1M 3M",
            "read -P 0xcd 4M 64k",
            "read -P 0 8M 128k",
            "read -P 0 12M 64k",
            "read -P 0 16M 64k",
        ],
    );
    // A wrong pattern fails, so the reads above can fail.
    assert!(!bounded("qemu-io", &["-f", "raw", &u, "-c", "read -P 0x01 0 4k"], 30)
        .status
        .success());
    // Exactly the written blocks are allocated; write -z and discard left holes.
    let m = map(&u, None);
    assert_eq!(
        &m[..6],
        &[
            (0, MIB, 0),
            (MIB, 3 * MIB, 3),
            (4 * MIB, K64, 0),
            (4 * MIB + K64, 12 * MIB - K64, 3),
            (16 * MIB, K64, 0),
            (16 * MIB + K64, (10 << 30) - 16 * MIB - K64, 3)
        ],
        "{m:?}"
    );
    assert_eq!(m.iter().map(|r| r.1).sum::<u64>(), 10 << 30);
    // A snapshot, then a write to the origin: depth 1 for its own block, 2 for shared ones.
    thinly(&["snapshot", "vol0", "snap", "--pool", s.pool()]);
    qemu_io(&u, &["write -P 0x22 0 4k"]);
    let d = map(&u, Some("qemu:allocation-depth"));
    assert_eq!(&d[..3], &[(0, K64, 1), (K64, MIB - K64, 2), (MIB, 3 * MIB, 0)], "{d:?}");
    let snap = s.uri("snap");
    qemu_io(&snap, &["read -P 0xab 0 1M"]);
    // qemu-img: info, map, convert out and back in, compare.
    let info = ok("qemu-img", &["info", "--output=json", &u], 30);
    assert!(info.contains("\"virtual-size\": 10737418240"), "{info}");
    let qmap = ok("qemu-img", &["map", "--output=json", &u], 60);
    assert!(qmap.contains("\"data\": true") && qmap.contains("\"data\": false"), "{qmap}");
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img.raw");
    thinly(&["create", "copy", "--size", "16M", "--pool", s.pool()]);
    let small = s.uri("copy");
    qemu_io(&small, &["write -P 0x5a 0 2M", "write -P 0x6b 10M 1M"]);
    ok("qemu-img", &["convert", "-O", "raw", &small, img.to_str().unwrap()], 60);
    thinly(&["create", "back", "--size", "16M", "--pool", s.pool()]);
    let back = s.uri("back");
    ok("qemu-img", &["convert", "-n", "-O", "raw", img.to_str().unwrap(), &back], 60);
    ok("qemu-img", &["compare", &small, &back], 60);
    ok("qemu-img", &["compare", img.to_str().unwrap(), &back], 60);
    qemu_io(&back, &["write -P 0x01 0 512"]);
    assert_eq!(bounded("qemu-img", &["compare", &small, &back], 60).status.code(), Some(1));
    s.stop();
}

fn random_file(path: &Path, bytes: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..bytes >> 20 {
        for c in buf.chunks_mut(8) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
}

#[test]
fn nbdcopy_round_trips_random_and_sparse_images() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("random"), tmp.path().join("out"));
    random_file(&src, 256 * MIB, 42);
    thinly(&["create", "r", "--size", "256M", "--pool", s.pool()]);
    ok("nbdcopy", &[src.to_str().unwrap(), &s.uri("r")], 300);
    ok("nbdcopy", &[&s.uri("r"), out.to_str().unwrap()], 300);
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&out).unwrap(),
        "256 MiB random image round trip"
    );
    // Sparse: data in three places of a 256 MiB image; holes stay holes.
    let sparse = tmp.path().join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(256 * MIB).unwrap();
        for (i, at) in [0u64, 100 * MIB, 255 * MIB].iter().enumerate() {
            f.write_all_at(&vec![i as u8 + 1; MIB as usize], *at).unwrap();
        }
    }
    thinly(&["create", "sp", "--size", "256M", "--pool", s.pool()]);
    ok("nbdcopy", &[sparse.to_str().unwrap(), &s.uri("sp")], 300);
    let data: u64 = map(&s.uri("sp"), None).iter().filter(|r| r.2 == 0).map(|r| r.1).sum();
    assert_eq!(data, 3 * MIB, "only the data ranges are allocated");
    ok("nbdcopy", &[&s.uri("sp"), out.to_str().unwrap()], 300);
    assert!(std::fs::read(&sparse).unwrap() == std::fs::read(&out).unwrap());
    s.stop();
}

fn fio(uri_export: &str, socket: &str, extra: &[&str]) -> String {
    let uri = format!("--uri=nbd+unix:///{uri_export}?socket={socket}");
    let mut args = vec![
        "--name=t",
        "--ioengine=nbd",
        uri.as_str(),
        "--rw=randwrite",
        "--bs=4k",
        "--size=64M",
        "--iodepth=16",
        "--numjobs=2",
        "--verify=crc32c",
        "--verify_state_save=0",
        "--group_reporting",
        "--output-format=terse",
    ];
    args.extend_from_slice(extra);
    ok("fio", &args, 300)
}

#[test]
fn fio_random_writes_verify_on_two_connections_and_a_snapshot_taken_meanwhile_is_consistent() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&[]);
    thinly(&["create", "f", "--size", "128M", "--pool", s.pool()]);
    // fio writes (2 connections) and verifies; a snapshot is taken in the middle of it.
    let socket = s.socket();
    let writer = {
        let socket = socket.clone();
        std::thread::spawn(move || fio("f", &socket, &["--offset_increment=64M"]))
    };
    std::thread::sleep(Duration::from_millis(300));
    thinly(&["snapshot", "f", "f-snap", "--pool", s.pool()]);
    writer.join().unwrap();
    // The snapshot's contents are a consistent point of a sequential writer: prove it with
    // qemu-io writing numbered blocks one after another while another snapshot is taken.
    thinly(&["create", "seq", "--size", "64M", "--pool", s.pool()]);
    let u = s.uri("seq");
    let cmds: Vec<String> =
        (0..512).map(|i| format!("write -P {} {} 64k", i % 250 + 1, i * K64)).collect();
    let seq = {
        let u = u.clone();
        std::thread::spawn(move || {
            let refs: Vec<&str> = cmds.iter().map(|c| c.as_str()).collect();
            qemu_io(&u, &refs)
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    thinly(&["snapshot", "seq", "seq-snap", "--pool", s.pool()]);
    seq.join().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("snap.raw");
    ok("nbdcopy", &[&s.uri("seq-snap"), img.to_str().unwrap()], 120);
    let bytes = std::fs::read(&img).unwrap();
    let mut prefix = 0;
    for (i, block) in bytes.chunks(K64 as usize).enumerate() {
        let want = (i % 250 + 1) as u8;
        if block.iter().all(|&b| b == want) {
            assert_eq!(prefix, i, "block {i} written but an earlier one is not in the snapshot");
            prefix += 1;
        } else {
            assert!(block.iter().all(|&b| b == 0), "block {i} of the snapshot is torn");
        }
    }
    // Later writes on either side stay on their side.
    qemu_io(&s.uri("seq-snap"), &["write -P 0xfe 0 64k"]);
    qemu_io(&u, &["read -P 1 0 64k"]);
    qemu_io(&u, &["write -P 0xfd 64k 64k"]);
    if prefix > 1 {
        qemu_io(&s.uri("seq-snap"), &["read -P 2 64k 64k"]);
    }
    eprintln!("snapshot held the first {prefix} of 512 sequential writes");
    s.stop();
}

#[test]
fn volumes_created_and_deleted_online_appear_and_disappear_as_exports() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&[]);
    let list = || ok("nbdinfo", &["--list", "--json", &s.uri("")], 30);
    assert!(list().contains("\"vol0\""));
    thinly(&["create", "extra", "--size", "1G", "--pool", s.pool()]);
    assert!(list().contains("\"extra\""));
    ok("nbdinfo", &[&s.uri("extra")], 30);
    thinly(&["delete", "extra", "--pool", s.pool()]);
    assert!(!list().contains("\"extra\""));
    assert!(!bounded("nbdinfo", &[&s.uri("extra")], 30).status.success());
    // The kernel's message vocabulary works online too.
    let name = thinly(&["message", "create_thin 77", "--json", "--pool", s.pool()]);
    assert_eq!(serde_json::from_str::<String>(&name).unwrap(), "thin77");
    assert!(list().contains("\"thin77\""));
    let status = thinly(&["status", "--json", "--pool", s.pool()]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["pool"]["mode"], "rw");
    assert_eq!(v["volumes"].as_array().unwrap().len(), 2);
    // Bad requests are refused with a message and a non-zero exit, never a crash.
    let bad = bounded(
        common::thinly().to_str().unwrap(),
        &["snapshot", "nosuch", "x", "--pool", s.pool()],
        30,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nosuch"));
    s.stop();
}

#[test]
fn hostile_bytes_close_one_connection_and_the_server_keeps_serving() {
    if !have_clients() {
        return;
    }
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let mut s = Served::start(&[]);
    let u = s.uri("vol0");
    qemu_io(&u, &["write -P 0x42 0 64k", "flush"]);
    let junk: [&[u8]; 4] = [b"", b"\x00\x00\x00\x03", &[0xFFu8; 4096], b"NBDMAGIC"];
    for bytes in junk {
        let mut c = UnixStream::connect(s.socket()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).unwrap();
        let _ = c.write_all(bytes);
        drop(c);
    }
    qemu_io(&u, &["read -P 0x42 0 64k"]);
    s.stop();
}

#[test]
fn handshake_timeout_and_busy_poll_flags_take_effect() {
    if !have_clients() {
        return;
    }
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let mut s = Served::start(&["--handshake-timeout", "1", "--busy-poll-us", "0"]);
    // A client that never finishes its handshake is dropped after the timeout: the
    // server closes, so the read ends (EOF or reset) before our own 5 s guard, which
    // the default timeout (10 s) would not.
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 18];
    c.read_exact(&mut greeting).unwrap();
    let mut rest = Vec::new();
    let r = c.read_to_end(&mut rest);
    assert!(
        r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server kept a silent client past --handshake-timeout: {r:?}"
    );
    // A server that never polls serves as well (the default polls).
    let u = s.uri("vol0");
    qemu_io(&u, &["write -P 0x5a 1M 192k", "flush", "read -P 0x5a 1M 192k", "read -P 0 0 1M"]);
    s.stop();
}

#[test]
fn sigterm_commits_what_was_written_and_a_restart_reads_it() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&[]);
    let u = s.uri("vol0");
    // No flush: the shutdown's commit must keep it.
    qemu_io(&u, &["write -P 0x33 5M 192k"]);
    s.stop();
    let dir = s.dir.clone();
    let child = Command::new(common::thinly())
        .args(["serve", "--pool", dir.to_str().unwrap(), "--listen", "none"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.child = Some(child);
    let _ = std::fs::remove_file(dir.join("control.sock"));
    s.wait_for(&dir.join("control.sock"));
    qemu_io(&u, &["read -P 0x33 5M 192k"]);
    s.stop();
}

#[test]
fn the_low_water_hook_runs_with_the_pools_figures() {
    if !have_clients() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let marker = tmp.path().join("hook.env");
    thinly(&[
        "pool",
        "create",
        "--pool",
        dir.to_str().unwrap(),
        "--size",
        "8M",
        "--low-water-mark",
        "100",
    ]);
    thinly(&["create", "v", "--size", "8M", "--pool", dir.to_str().unwrap()]);
    let hook = format!("env | grep ^THINLY_ > {}", marker.display());
    let child = Command::new(common::thinly())
        .args([
            "serve",
            "--pool",
            dir.to_str().unwrap(),
            "--listen",
            "none",
            "--on-low-water",
            &hook,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = Served { _tmp: tmp, dir: dir.clone(), child: Some(child) };
    s.wait_for(&dir.join("control.sock"));
    // 128 blocks of 64 KiB; the mark is 100 free: the 28th new block crosses it.
    qemu_io(&s.uri("v"), &["write -P 1 0 2M"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the low-water hook did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let env = std::fs::read_to_string(&marker).unwrap();
    assert!(env.contains("THINLY_EVENT=low_water_mark"), "{env}");
    assert!(env.contains("THINLY_TOTAL_BLOCKS=128"), "{env}");
    assert!(env.contains("THINLY_FREE_BLOCKS=100"), "{env}");
    assert!(env.contains("THINLY_BLOCK_SIZE=65536"), "{env}");
    s.stop();
}

#[test]
fn serve_with_no_arguments_creates_the_default_pool_and_serves_it_on_10809() {
    if !have_clients() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(common::thinly())
        .arg("serve")
        .current_dir(tmp.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = tmp.path().join("thinly-pool");
    let mut s = Served { _tmp: tmp, dir: dir.clone(), child: Some(child) };
    s.wait_for(&dir.join("control.sock"));
    let info = ok("nbdinfo", &["--json", "nbd://127.0.0.1:10809/vol0"], 30);
    assert!(info.contains("\"export-size\": 10737418240"), "{info}");
    let status = thinly(&["pool", "status", "--json", "--pool", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["pool"]["total_data_blocks"], 16u64 << 30 >> 16, "a 16 GiB data file");
    let log = s.stop();
    assert!(log.contains("127.0.0.1:10809"), "{log}");
}

#[test]
fn pool_create_keeps_its_settings_in_pool_json() {
    let tmp = tempfile::tempdir().unwrap();
    let read = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("pool.json")).unwrap()).unwrap()
    };
    let dir = tmp.path().join("default");
    thinly(&["pool", "create", "--pool", dir.to_str().unwrap(), "--size", "1G"]);
    assert_eq!(read(&dir)["settings"]["snapshot_cache"], "auto");
    let dir = tmp.path().join("keep");
    let d = dir.to_str().unwrap();
    thinly(&["pool", "create", "--pool", d, "--size", "1G", "--snapshot-cache", "keep"]);
    thinly(&["create", "a", "--size", "1M", "--pool", d]);
    let v = read(&dir);
    assert_eq!(v["settings"]["snapshot_cache"], "keep", "{v}");
}

#[test]
fn management_works_offline_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.to_str().unwrap();
    thinly(&["pool", "create", "--pool", d, "--size", "1G"]);
    thinly(&["create", "a", "--size", "100M", "--pool", d]);
    thinly(&["snapshot", "a", "b", "--read-only", "--pool", d]);
    thinly(&["resize", "a", "--size", "200M", "--pool", d]);
    thinly(&["pool", "extend", "--size", "2G", "--pool", d]);
    let list = thinly(&["list", "--json", "--pool", d]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["name"], "a");
    assert_eq!(v[0]["size_bytes"], 200u64 << 20);
    assert_eq!(v[1]["read_only"], true);
    let status = thinly(&["pool", "status", "--raw", "--pool", d]);
    let fields: Vec<&str> = status.split_whitespace().collect();
    assert_eq!(fields[2], format!("0/{}", 2u64 << 30 >> 16), "{status}");
    assert_eq!(thinly(&["pool", "status", "--kernel", "--pool", d]), status);
    assert!(thinly(&["message", "reserve_metadata_snap", "--pool", d])
        .trim()
        .parse::<u64>()
        .is_ok());
    thinly(&["message", "release_metadata_snap", "--pool", d]);
    thinly(&["delete", "b", "--pool", d]);
    thinly(&["check", dir.join("metadata").to_str().unwrap()]);
    let out = bounded(
        common::thinly().to_str().unwrap(),
        &["create", "x", "--size", "12Q", "--pool", d],
        30,
    );
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");
    let out = bounded(common::thinly().to_str().unwrap(), &["list", "--pool", "/nonexistent"], 30);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pool"));
}

/// True when `text` has a size in a style other than the one formatter's (`10G`, `1.50M`).
fn has_short_unit_size(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || "(),;:".contains(c)).any(|w| {
        let digits = w.trim_end_matches(['K', 'M', 'G', 'T']);
        digits.len() < w.len() && !digits.is_empty() && digits.parse::<f64>().is_ok()
    })
}

#[test]
fn pool_commands_say_what_they_did_with_one_size_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.to_str().unwrap();
    let said = thinly(&["pool", "create", "--pool", d, "--size", "1G"]);
    assert!(said.contains("1GiB of data") && said.contains("64KiB"), "{said}");
    let said = thinly(&["create", "a", "--size", "100M", "--pool", d]);
    assert_eq!(said.trim(), "created volume a: 100MiB, device 1, read-write");
    let said = thinly(&["snapshot", "a", "b", "--read-only", "--pool", d]);
    assert_eq!(said.trim(), "created snapshot b: 100MiB, device 2, read-only, snapshot of a");
    let said = thinly(&["resize", "a", "--size", "150M", "--pool", d]);
    assert!(said.starts_with("resized volume a: 150MiB"), "{said}");
    // A kernel message names the export it adds and the size it got (the data size).
    let said = thinly(&["message", "create_thin 7", "--pool", d]);
    assert!(said.contains("added the export thin7 (1GiB, device 7"), "{said}");
    let status = thinly(&["status", "--pool", d]);
    for label in ["transaction id", "data", "metadata", "mode", "needs check"] {
        assert!(status.contains(&format!("  {label} ")), "no {label:?} in {status}");
    }
    assert!(status.contains("0 of 16384 blocks used (0B of 1GiB, 64KiB blocks)"), "{status}");
    assert!(status.contains("thin7") && status.contains("Origin"), "{status}");
    let said = thinly(&["delete", "b", "--pool", d]);
    assert_eq!(said.trim(), "deleted volume b");
    let said = thinly(&["pool", "extend", "--size", "2G", "--pool", d]);
    assert!(said.contains("2GiB"), "{said}");
    let list = thinly(&["list", "--pool", d]);
    for text in [&status, &list] {
        assert!(!has_short_unit_size(text), "a size outside the one format: {text}");
    }
    assert!(has_short_unit_size("mapped 234.44M of 16G"), "the check can fail");
}

/// A self-signed server certificate for localhost in `dir` (server-cert.pem,
/// server-key.pem, and itself as ca-cert.pem), and a client directory trusting it.
fn self_signed(dir: &Path, client: &Path) -> bool {
    let Some(openssl) = thinly_test_support::find_tool("openssl") else {
        return common::missing("openssl");
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::create_dir_all(client).unwrap();
    let (key, cert) = (dir.join("server-key.pem"), dir.join("server-cert.pem"));
    let args = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ];
    ok(openssl.to_str().unwrap(), &args, 60);
    std::fs::copy(&cert, dir.join("ca-cert.pem")).unwrap();
    std::fs::copy(&cert, client.join("ca-cert.pem")).unwrap();
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_off_loopback_without_certificates_refuses_before_touching_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let args = ["serve", "--pool", dir.to_str().unwrap(), "--listen", "0.0.0.0:0"];
    let out = bounded(common::thinly().to_str().unwrap(), &args, 30);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.exists(), "a refused serve created the pool");
}

#[test]
fn serve_with_tls_required_serves_nbds_refuses_plain_and_reloads_certificates_on_sighup() {
    let Some(nbdinfo) = thinly_test_support::find_tool("nbdinfo") else {
        common::missing("nbdinfo");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (certs, client) = (tmp.path().join("certs"), tmp.path().join("client"));
    let (certs2, client2) = (tmp.path().join("certs2"), tmp.path().join("client2"));
    if !self_signed(&certs, &client) || !self_signed(&certs2, &client2) {
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut s = Served::start(&[
        "--listen",
        &listen,
        "--tls",
        "require",
        "--tls-certificates",
        certs.to_str().unwrap(),
    ]);
    let size = |uri: &str| bounded(nbdinfo.to_str().unwrap(), &["--size", uri], 60);
    let nbds = |c: &Path| format!("nbds://127.0.0.1:{port}/vol0?tls-certificates={}", c.display());
    assert!(size(&nbds(&client)).status.success());
    assert!(!size(&format!("nbd://127.0.0.1:{port}/vol0")).status.success(), "plain TCP");
    let unix =
        format!("nbds+unix:///vol0?socket={}&tls-certificates={}", s.socket(), client.display());
    assert!(size(&unix).status.success(), "--tls applies to the unix socket too");
    for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        std::fs::copy(certs2.join(f), certs.join(f)).unwrap();
    }
    let pid = nix::unistd::Pid::from_raw(s.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !size(&nbds(&client2)).status.success() {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the certificates");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!size(&nbds(&client)).status.success(), "the old certificate is gone");
    let log = s.stop();
    assert!(log.contains("reloaded"), "{log}");
}

#[test]
fn the_minimum_block_size_is_one_byte_and_unaligned_io_keeps_snapshots_intact() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&[]);
    let u = s.uri("vol0");
    let info = ok("nbdinfo", &["--json", &u], 30);
    assert!(info.contains("\"block_size_minimum\": 1,"), "{info}");
    qemu_io(&u, &["write -P 0xab 0 192k", "flush"]);
    thinly(&["snapshot", "vol0", "snap", "--pool", s.pool()]);
    // Odd ranges, one straddling a data block boundary (64 KiB): copy-on-write of two
    // shared blocks by a 3-byte write, then unaligned zeroing and discard.
    qemu_io(
        &u,
        &[
            "write -P 0x11 65535 3",
            "write -P 0x22 1001 7",
            "write -z 131075 5",
            "discard 140001 3",
            "flush",
        ],
    );
    qemu_io(
        &u,
        &[
            "read -P 0xab 0 1001",
            "read -P 0x22 1001 7",
            "read -P 0xab 1008 64527",
            "read -P 0x11 65535 3",
            "read -P 0xab 65538 65537",
            "read -P 0 131075 5",
            "read -P 0xab 131080 8921",
        ],
    );
    qemu_io(&s.uri("snap"), &["read -P 0xab 0 192k"]);
    s.stop();
}

#[test]
fn a_config_file_sets_serve_flags_and_the_command_line_overrides_it() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("thinly.toml");
    let pool = tmp.path().join("pool");
    let text = format!("pool = {:?}\nlisten = \"0.0.0.0:0\"\n", pool.to_str().unwrap());
    std::fs::write(&conf, text).unwrap();
    // From the file alone: a non-loopback address without TLS keys is refused.
    let args = ["serve", "--config", conf.to_str().unwrap()];
    let out = bounded(common::thinly().to_str().unwrap(), &args, 30);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!pool.exists());
    // The command line's --listen and --pool (Served passes one) win.
    let mut s = Served::start(&["--config", conf.to_str().unwrap(), "--listen", "none"]);
    assert!(!pool.exists(), "the file's pool was overridden");
    s.stop();
}

#[test]
fn each_connection_ends_with_one_json_log_line_naming_peer_export_bytes_and_duration() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&["--log-format", "json"]);
    qemu_io(&s.uri("vol0"), &["write -P 0x5a 0 64k", "read -P 0x5a 0 64k"]);
    let log = s.stop();
    let closed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "connection closed")
        .collect();
    assert_eq!(closed.len(), 1, "{log}");
    let line = &closed[0];
    assert_eq!(line["export"], "vol0");
    assert_eq!(line["peer"], "unix");
    assert_eq!(line["identity"], "-");
    assert!(line["written_bytes"].as_u64() >= Some(65536), "{line}");
    assert!(line["read_bytes"].as_u64() >= Some(65536), "{line}");
    assert!(line["duration_ms"].is_u64(), "{line}");
}

#[test]
fn socket_activation_serves_the_passed_sockets_and_notifies_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let (Some(activate), Some(nbdinfo)) = (
        thinly_test_support::find_tool("systemd-socket-activate"),
        thinly_test_support::find_tool("nbdinfo"),
    ) else {
        common::missing("systemd-socket-activate or nbdinfo");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (pool, sock, notify) =
        (tmp.path().join("pool"), tmp.path().join("act.sock"), tmp.path().join("notify"));
    let ready = UnixDatagram::bind(&notify).unwrap();
    ready.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}");
    let child = Command::new(activate)
        .args(["-l", &tcp, "-l", sock.to_str().unwrap(), "-E", "NOTIFY_SOCKET"])
        .arg(common::thinly())
        .args(["serve", "--pool", pool.to_str().unwrap(), "--create"])
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = Served { _tmp: tmp, dir: pool.clone(), child: Some(child) };
    // systemd-socket-activate binds both, then waits for the first connection before it
    // starts thinly.
    s.wait_for(&sock);
    let size = |uri: &str| bounded(nbdinfo.to_str().unwrap(), &["--size", uri], 60);
    let by_tcp = std::thread::spawn({
        let uri = format!("nbd://{tcp}/vol0");
        let nbdinfo = nbdinfo.clone();
        move || bounded(nbdinfo.to_str().unwrap(), &["--size", &uri], 60)
    });
    let mut buf = [0u8; 256];
    let n = ready.recv(&mut buf).expect("READY=1 within 60 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(by_tcp.join().unwrap().status.success(), "the activated TCP socket serves");
    let unix = format!("nbd+unix:///vol0?socket={}", sock.display());
    assert!(size(&unix).status.success(), "the activated unix socket serves");
    assert!(!pool.join("nbd.sock").exists(), "no socket of its own under activation");
    let log = s.stop();
    let n = ready.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"), "{log}");
}

#[test]
fn the_nbd_socket_is_owner_only_by_default_and_a_live_server_is_not_taken_over() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Served::start(&[]);
    let mode = std::fs::metadata(s.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second server on the same socket path refuses and leaves the first serving.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    let args = ["serve", "--pool", other.to_str().unwrap(), "--listen", "none", "--socket"];
    let mut args = args.to_vec();
    let socket = s.socket();
    args.push(&socket);
    let out = bounded(common::thinly().to_str().unwrap(), &args, 60);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::os::unix::net::UnixStream::connect(s.socket()).is_ok(), "still served");
    s.stop();
    let mut s = Served::start(&["--socket-mode", "660", "--socket-group", "65534"]);
    let meta = std::fs::metadata(s.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), 65534, "--socket-group");
    s.stop();
}

#[test]
fn the_control_socket_is_owner_only_under_any_umask_capped_and_checks_its_peer() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pool");
    let cmd = format!(
        "umask 000; exec {} serve --pool {} --listen none --create",
        common::thinly().display(),
        dir.display()
    );
    let child = Command::new("sh").args(["-c", &cmd]).stderr(Stdio::piped()).spawn().unwrap();
    let mut s = Served { _tmp: tmp, dir: dir.clone(), child: Some(child) };
    let control = dir.join("control.sock");
    s.wait_for(&control);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&control), 0o600, "control socket under umask 000");
    assert_eq!(mode(&dir.join("nbd.sock")), 0o600, "NBD socket under umask 000");
    // Sixteen idle clients are held; the seventeenth is closed at once.
    let idle: Vec<UnixStream> = (0..16).map(|_| UnixStream::connect(&control).unwrap()).collect();
    let mut extra = UnixStream::connect(&control).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "closed without an answer");
    drop(idle);
    // Another user, even with the socket opened up to everyone, is refused.
    if let Some(setpriv) = thinly_test_support::find_tool("setpriv") {
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
        for d in [dir.parent().unwrap(), &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = bounded(
            setpriv.to_str().unwrap(),
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                common::thinly().to_str().unwrap(),
                "delete",
                "vol0",
                "--pool",
                dir.to_str().unwrap(),
            ],
            60,
        );
        assert!(!out.status.success(), "another user deleted a volume");
    } else {
        common::missing("setpriv");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The owner is served again once the idle clients are gone.
        let out = bounded(common::thinly().to_str().unwrap(), &["list", "--pool", s.pool()], 60);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("vol0"));
            break;
        }
        assert!(Instant::now() < deadline, "the control socket did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.stop();
    assert!(log.contains("too many clients"), "{log}");
    if thinly_test_support::find_tool("setpriv").is_some() {
        assert!(log.contains("refused another user"), "{log}");
    }
}

#[test]
fn idle_timeout_closes_a_quiet_handshaked_connection_with_a_log_line() {
    use std::io::Read;
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&["--idle-timeout", "1"]);
    // A handshaked client that then sends nothing is closed: the read ends before our
    // own 20 s guard.
    let mut c = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut greeting = [0u8; 18];
    c.read_exact(&mut greeting).unwrap();
    use std::io::Write;
    c.write_all(&3u32.to_be_bytes()).unwrap(); // fixed newstyle, no zeroes
    let mut export_name = 0x4948_4156_454F_5054u64.to_be_bytes().to_vec(); // IHAVEOPT
    export_name.extend_from_slice(&1u32.to_be_bytes());
    export_name.extend_from_slice(&4u32.to_be_bytes());
    export_name.extend_from_slice(b"vol0");
    c.write_all(&export_name).unwrap();
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).unwrap(); // size and flags: transmission begins
    let mut rest = Vec::new();
    let r = c.read_to_end(&mut rest);
    assert!(
        r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "an idle connection outlived --idle-timeout: {r:?}"
    );
    let log = s.stop();
    assert!(log.contains("idle timeout"), "{log}");
}

#[test]
fn export_flags_serve_only_the_named_volumes() {
    if !have_clients() {
        return;
    }
    let mut s = Served::start(&["--export", "vol0", "--export", "data"]);
    thinly(&["create", "data", "--size", "1M", "--pool", s.pool()]);
    thinly(&["create", "secret", "--size", "1M", "--pool", s.pool()]);
    let list = ok("nbdinfo", &["--list", "--json", &s.uri("")], 30);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut names: Vec<&str> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["data", "vol0"]);
    assert!(bounded("nbdinfo", &["--size", &s.uri("data")], 30).status.success());
    assert!(!bounded("nbdinfo", &["--size", &s.uri("secret")], 30).status.success());
    s.stop();
}
