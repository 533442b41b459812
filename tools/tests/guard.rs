//! Guardrails (issue 15 §4) and usage (§5) through the `thinly` command: each refusal
//! leaves the pool exactly as it was (metadata dump, volume list, status line and
//! pool.json compared before and after), `--force` gets past it, over-provisioning warns
//! with its ratio or is refused by the pool's setting, a forced delete closes the volume's
//! NBD connection, dm messages keep the kernel's semantics, the thin_* tools refuse live
//! metadata without --force, and `list` shows Data%, Meta%, mapped / exclusive / shared
//! bytes as the real thin_ls counts them, with -o, --units, --bytes and --json.
//!
//! Servers listen on a unix socket in a temporary pool and are stopped (SIGTERM, waited
//! for) by the test; every client read is bounded by a timeout.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use thinly_engine::pool::{Pool, PoolOptions, PoolSettings};

fn thinly_ok(args: &[&str]) -> Output {
    let o = thinly_run(args);
    ok(&o, &format!("thinly {args:?}"));
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A refusal: exit 1, nothing on stdout, the reason on stderr.
fn refused(args: &[&str]) -> String {
    let o = thinly_run(args);
    assert_eq!(o.status.code(), Some(1), "thinly {args:?} was not refused: {}", stdout(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    stderr(&o)
}

/// Everything a refused operation must leave as it was: the metadata (dumped), the
/// volumes and their usage, the kernel status line, and pool.json.
fn state(dir: &Path) -> (String, String, String, String) {
    let d = s(dir);
    let dump = stdout(&thinly_ok(&["dump", s(&dir.join("metadata"))]));
    let list = stdout(&thinly_ok(&["list", "--json", "--pool", d]));
    let status = stdout(&thinly_ok(&["status", "--raw", "--pool", d]));
    let config = std::fs::read_to_string(dir.join("pool.json")).expect("pool.json");
    (dump, list, status, config)
}

/// A pool of 64 MiB data (64 KiB blocks) holding `a` (8 MiB) with its first 2 MiB written
/// and a snapshot `s` of it, in which the first 512 KiB were written again.
fn pool_with_snapshot(dir: &Path) {
    let opts = PoolOptions {
        data_size_bytes: 64 << 20,
        settings: PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() },
        ..PoolOptions::default()
    };
    let pool = Pool::create(dir, &opts).expect("create");
    let a = pool.create_volume("a", 8 << 20).expect("a");
    a.write(0, &vec![7u8; 2 << 20], false).expect("write a");
    drop(a);
    let snap = pool.snapshot("a", "s", false).expect("snapshot");
    snap.write(0, &vec![9u8; 512 << 10], false).expect("write s");
    drop(snap);
    pool.close().expect("close");
}

#[test]
fn deleting_an_origin_is_refused_unchanged_until_forced_then_its_snapshot_shows_it_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    pool_with_snapshot(&dir);
    let d = s(&dir);
    let before = state(&dir);
    let why = refused(&["delete", "a", "--pool", d]);
    assert!(why.contains("snapshot") && why.contains("--force"), "{why}");
    assert_eq!(state(&dir), before, "a refused delete changed the pool");
    // Shrinking is refused the same way; growing is not.
    let why = refused(&["resize", "a", "--size", "4M", "--pool", d]);
    assert!(why.contains("shrink"), "{why}");
    assert_eq!(state(&dir), before, "a refused shrink changed the pool");

    let o = thinly_ok(&["delete", "a", "--force", "--pool", d]);
    assert!(stderr(&o).contains("origin as deleted"), "{}", stderr(&o));
    let list: Value =
        serde_json::from_str(&stdout(&thinly_ok(&["list", "--json", "--pool", d]))).expect("JSON");
    assert_eq!(list[0]["name"], "s");
    assert_eq!(list[0]["snapshot_of"], Value::Null, "the old name is not shown");
    assert_eq!(list[0]["origin_deleted"], true);
    let table = stdout(&thinly_ok(&["list", "-o", "lv_name,origin", "--pool", d]));
    assert!(table.lines().any(|l| l.starts_with("s ") && l.ends_with("(deleted)")), "{table}");
    // A new volume of the old name is no origin of s.
    thinly_ok(&["create", "a", "--size", "1M", "--pool", d]);
    let table = stdout(&thinly_ok(&["list", "-o", "lv_name,origin", "--pool", d]));
    assert!(table.lines().any(|l| l.starts_with("s ") && l.ends_with("(deleted)")), "{table}");
    thinly_ok(&["resize", "a", "--size", "512K", "--force", "--pool", d]);
    thinly_ok(&["check", s(&dir.join("metadata"))]);
    if have_tools(&["thin_check"]) {
        ok(&run("thin_check", &[s(&dir.join("metadata"))]), "thin_check");
    }
}

#[test]
fn dm_messages_keep_the_kernels_semantics_without_guardrails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    pool_with_snapshot(&dir);
    let d = s(&dir);
    let list: Value =
        serde_json::from_str(&stdout(&thinly_ok(&["list", "--json", "--pool", d]))).expect("JSON");
    let id = list[0]["dev_id"].as_u64().expect("a's id").to_string();
    // `a` has a snapshot: `thinly delete a` refuses, the kernel's `delete ID` does not.
    refused(&["delete", "a", "--pool", d]);
    thinly_ok(&["message", &format!("delete {id}"), "--pool", d]);
    let table = stdout(&thinly_ok(&["list", "-o", "lv_name,origin", "--pool", d]));
    assert!(!table.lines().any(|l| l.starts_with("a ")), "{table}");
    assert!(table.contains("(deleted)"), "{table}");
}

#[test]
fn over_provisioning_warns_with_its_ratio_or_is_refused_by_the_pools_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let (warn, strict) = (tmp.path().join("warn"), tmp.path().join("strict"));
    thinly_ok(&["pool", "create", "--pool", s(&warn), "--size", "1G"]);
    let o = thinly_ok(&["create", "a", "--size", "768M", "--pool", s(&warn)]);
    assert!(stderr(&o).is_empty(), "no warning within the pool: {}", stderr(&o));
    let o = thinly_ok(&["create", "b", "--size", "1G", "--pool", s(&warn)]);
    assert!(stderr(&o).contains("WARNING") && stderr(&o).contains("1.75:1"), "{}", stderr(&o));
    let o = thinly_ok(&["snapshot", "b", "c", "--pool", s(&warn)]);
    assert!(stderr(&o).contains("2.75:1"), "a snapshot counts too: {}", stderr(&o));
    let o = thinly_ok(&["resize", "a", "--size", "1G", "--pool", s(&warn)]);
    assert!(stderr(&o).contains("3.00:1"), "{}", stderr(&o));

    thinly_ok(&[
        "pool",
        "create",
        "--pool",
        s(&strict),
        "--size",
        "1G",
        "--overprovision",
        "error",
    ]);
    thinly_ok(&["create", "a", "--size", "1G", "--pool", s(&strict)]);
    let before = state(&strict);
    for args in [
        &["create", "b", "--size", "1M", "--pool", s(&strict)][..],
        &["snapshot", "a", "b", "--pool", s(&strict)],
        &["resize", "a", "--size", "2G", "--force", "--pool", s(&strict)],
    ] {
        let why = refused(args);
        assert!(why.contains("overprovision"), "{why}");
        assert_eq!(state(&strict), before, "{args:?} changed the pool");
    }
}

#[test]
fn list_shows_usage_as_lvs_does_and_exclusive_matches_thin_ls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    pool_with_snapshot(&dir);
    let d = s(&dir);
    let list: Value =
        serde_json::from_str(&stdout(&thinly_ok(&["list", "--json", "--pool", d]))).expect("JSON");
    let by_name =
        |n: &str| list.as_array().unwrap().iter().find(|v| v["name"] == n).unwrap().clone();
    let (a, snap) = (by_name("a"), by_name("s"));
    // a: 32 blocks, 8 of which s rewrote, so 8 are a's alone; s: 8 own, 24 shared.
    assert_eq!(a["mapped_bytes"], 2 << 20);
    assert_eq!(a["exclusive_bytes"], 512 << 10);
    assert_eq!(a["shared_bytes"], (2 << 20) - (512 << 10));
    assert_eq!(snap["exclusive_bytes"], 512 << 10);
    assert_eq!(snap["snapshot_of"], "a");
    let table = stdout(&thinly_ok(&["list", "--bytes", "--pool", d]));
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[0],
        ["LV", "ThId", "LSize", "Data%", "Meta%", "Mapped", "Excl", "Shared", "Origin"]
    );
    // The pool: 40 of 1024 blocks used (2.5 MiB of 64 MiB); its metadata percentage.
    assert_eq!(rows[1][0..3], ["[pool]", "67108864", "3.91"]);
    assert!(rows[1][3].parse::<f64>().is_ok_and(|m| m > 0.0 && m < 100.0), "{table}");
    assert_eq!(rows[2], ["a", "1", "8388608", "25.00", "2097152", "524288", "1572864"]);
    assert_eq!(rows[3], ["s", "2", "8388608", "25.00", "2097152", "524288", "1572864", "a"]);
    let t = stdout(&thinly_ok(&["list", "-o", "lv_name,exclusive", "--units", "k", "--pool", d]));
    assert!(t.lines().any(|l| l.split_whitespace().eq(["a", "512.00k"])), "{t}");
    let t = stdout(&thinly_ok(&["status", "-o", "lv_name,lv_size", "--units", "M", "--pool", d]));
    assert!(
        t.contains("Data%") && t.lines().any(|l| l.split_whitespace().eq(["a", "8.39M"])),
        "{t}"
    );
    let j: Value = serde_json::from_str(&stdout(&thinly_ok(&[
        "list",
        "--json",
        "-o",
        "lv_name,data_percent,shared",
        "--pool",
        d,
    ])))
    .expect("JSON");
    assert_eq!(j[0], serde_json::json!({"lv_name": "a", "data_percent": 25.0, "shared": 1572864}));
    let o = thinly_run(&["list", "-o", "lv_name,bogus", "--pool", d]);
    assert_eq!(o.status.code(), Some(1), "an unknown field is an error");
    // The real thin_ls counts the same exclusive and shared blocks.
    if have_tools(&["thin_ls"]) {
        let o = run(
            "thin_ls",
            &["-o", "DEV,EXCLUSIVE_BLOCKS,SHARED_BLOCKS", "--no-headers", s(&dir.join("metadata"))],
        );
        ok(&o, "thin_ls");
        let got: Vec<Vec<String>> = stdout(&o)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        assert_eq!(got, [["1", "8", "24"], ["2", "8", "24"]], "thin_ls");
    }
}

/// A `thinly serve` on a new pool (vol0) in a temporary directory, listening on its unix
/// socket only.
struct Served {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    child: Option<Child>,
}

impl Served {
    fn start() -> Served {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        let args = ["serve", "--pool", s(&dir), "--create", "--listen", "none"];
        let child = Command::new(thinly()).args(args).stderr(Stdio::null()).spawn().unwrap();
        let served = Served { _tmp: tmp, dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !served.dir.join("control.sock").exists() || !served.dir.join("nbd.sock").exists() {
            assert!(Instant::now() < deadline, "thinly serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("thinly serve did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// An NBD client that has `export` open (fixed newstyle, NBD_OPT_EXPORT_NAME with
/// NO_ZEROES), then sends nothing.
fn open_export(socket: &Path, export: &str) -> UnixStream {
    let mut c = UnixStream::connect(socket).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut greeting = [0u8; 18];
    c.read_exact(&mut greeting).expect("greeting");
    assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
    c.write_all(&3u32.to_be_bytes()).unwrap(); // FIXED_NEWSTYLE | NO_ZEROES
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend(1u32.to_be_bytes()); // NBD_OPT_EXPORT_NAME
    opt.extend((export.len() as u32).to_be_bytes());
    opt.extend(export.as_bytes());
    c.write_all(&opt).unwrap();
    let mut reply = [0u8; 10]; // size, transmission flags
    c.read_exact(&mut reply).expect("the export opened");
    c
}

#[test]
fn deleting_an_open_volume_is_refused_and_forcing_it_closes_the_connection() {
    let mut served = Served::start();
    let d = served.dir.clone();
    let pool = s(&d);
    thinly_ok(&["create", "v", "--size", "1M", "--pool", pool]);
    let mut client = open_export(&d.join("nbd.sock"), "v");
    let before = (
        stdout(&thinly_ok(&["list", "--json", "--pool", pool])),
        stdout(&thinly_ok(&["status", "--raw", "--pool", pool])),
    );
    let why = refused(&["delete", "v", "--pool", pool]);
    assert!(why.contains("open"), "{why}");
    let after = (
        stdout(&thinly_ok(&["list", "--json", "--pool", pool])),
        stdout(&thinly_ok(&["status", "--raw", "--pool", pool])),
    );
    assert_eq!(after, before, "a refused delete changed the pool");
    // The live metadata: the tools refuse it unless forced, or through the metadata snapshot.
    let meta = d.join("metadata");
    let o = thinly_run(&["check", s(&meta)]);
    assert!(!o.status.success() && stderr(&o).contains("in use"), "{}", stderr(&o));
    let o = thinly_run(&["dump", s(&meta)]);
    assert!(!o.status.success() && stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = thinly_run(&["check", "--force", s(&meta)]);
    assert!(stderr(&o).contains("WARNING"), "{}", stderr(&o));
    thinly_ok(&["message", "reserve_metadata_snap", "--pool", pool]);
    thinly_ok(&["dump", "-m", s(&meta)]);
    thinly_ok(&["message", "release_metadata_snap", "--pool", pool]);

    let o = thinly_ok(&["delete", "v", "--force", "--pool", pool]);
    assert!(stderr(&o).contains("closed the NBD connections of v"), "{}", stderr(&o));
    let mut buf = [0u8; 1];
    // The server closed the connection: EOF (not a timeout, which fails here).
    assert_eq!(client.read(&mut buf).expect("EOF, not a timeout"), 0);
    let list = stdout(&thinly_ok(&["list", "--json", "--pool", pool]));
    assert!(!list.contains("\"v\""), "{list}");
    served.stop();
    thinly_ok(&["check", s(&meta)]);
}

#[test]
fn a_forced_delete_closes_a_client_that_opened_the_default_export() {
    let mut served = Served::start();
    let d = served.dir.clone();
    let pool = s(&d);
    thinly_ok(&["create", "v", "--size", "1M", "--pool", pool]);
    // The export "" is the server's default volume: vol0 when serve created one, else the
    // first volume.
    let list = stdout(&thinly_ok(&["list", "--json", "--pool", pool]));
    let target = if list.contains("\"vol0\"") { "vol0" } else { "v" };
    let mut client = open_export(&d.join("nbd.sock"), "");
    let why = refused(&["delete", target, "--pool", pool]);
    assert!(why.contains("open"), "{why}");
    let o = thinly_ok(&["delete", target, "--force", "--pool", pool]);
    assert!(
        stderr(&o).contains(&format!("closed the NBD connections of {target}")),
        "{}",
        stderr(&o)
    );
    let mut buf = [0u8; 1];
    // The server closed the connection: EOF (not a timeout, which fails here).
    assert_eq!(client.read(&mut buf).expect("EOF, not a timeout"), 0);
    served.stop();
}
