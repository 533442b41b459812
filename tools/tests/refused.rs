//! A refused command changes nothing (issue 13 §3): every management operation and dm
//! message, with every kind of bad argument and in every bad state, is sent offline (the
//! engine API, as `thinly` runs it on a pool no server holds) and online (JSON lines on a
//! serving pool's control socket); each must fail and leave the pool exactly as it was.

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thinly_engine::pool::{Pool, PoolError, PoolOptions, PoolSettings};

const BS: u64 = 64 << 10;

/// One refused request: what it tries, whether a metadata snapshot is held meanwhile, and
/// the request in the control socket's vocabulary.
struct Case {
    what: &'static str,
    held: bool,
    req: Value,
}

fn msg(what: &'static str, text: &str) -> Case {
    Case { what, held: false, req: json!({"op": "message", "text": text}) }
}

fn held(mut c: Case) -> Case {
    c.held = true;
    c
}

fn case(what: &'static str, req: Value) -> Case {
    Case { what, held: false, req }
}

/// The table. The pool holds volume `a` (device 1, one block written) and its snapshot `b`
/// (device 2); its transaction id is 2.
fn cases() -> Vec<Case> {
    let long = "x".repeat(129);
    vec![
        case("create: empty name", json!({"op": "create", "name": "", "size_bytes": 1 << 20})),
        case("create: slash", json!({"op": "create", "name": "a/b", "size_bytes": 1 << 20})),
        case("create: long name", json!({"op": "create", "name": long, "size_bytes": 1 << 20})),
        case("create: exists", json!({"op": "create", "name": "a", "size_bytes": 1 << 20})),
        case("create: size 0", json!({"op": "create", "name": "c", "size_bytes": 0})),
        case("create: size 1000", json!({"op": "create", "name": "c", "size_bytes": 1000})),
        case("create: huge", json!({"op": "create", "name": "c", "size_bytes": u64::MAX - 511})),
        case(
            "snapshot: no origin",
            json!({"op": "snapshot", "origin": "nope", "name": "c", "read_only": false}),
        ),
        case(
            "snapshot: name exists",
            json!({"op": "snapshot", "origin": "a", "name": "b", "read_only": false}),
        ),
        case(
            "snapshot: bad name",
            json!({"op": "snapshot", "origin": "a", "name": "../c", "read_only": true}),
        ),
        case("delete: no volume", json!({"op": "delete", "name": "nope"})),
        case("delete: empty name", json!({"op": "delete", "name": ""})),
        case("resize: no volume", json!({"op": "resize", "name": "nope", "size_bytes": 1 << 20})),
        case("resize: size 0", json!({"op": "resize", "name": "a", "size_bytes": 0})),
        case("resize: size 1000", json!({"op": "resize", "name": "a", "size_bytes": 1000})),
        case("resize: huge", json!({"op": "resize", "name": "a", "size_bytes": u64::MAX - 511})),
        case("extend: to 0", json!({"op": "extend", "size_bytes": 0})),
        case("extend: shrink", json!({"op": "extend", "size_bytes": 1 << 20})),
        case("extend: past the format", json!({"op": "extend", "size_bytes": 1u64 << 62})),
        case("extend: past the metadata", json!({"op": "extend", "size_bytes": 1u64 << 40})),
        msg("message: empty", ""),
        msg("message: unknown", "frobnicate 1"),
        msg("create_thin: no id", "create_thin"),
        msg("create_thin: not a number", "create_thin x"),
        msg("create_thin: negative", "create_thin -1"),
        msg("create_thin: extra argument", "create_thin 5 6"),
        msg("create_thin: id exists", "create_thin 1"),
        msg("create_thin: id past 24 bits", "create_thin 16777216"),
        msg("create_snap: no origin", "create_snap 9"),
        msg("create_snap: unknown origin", "create_snap 9 99"),
        msg("create_snap: id exists", "create_snap 2 1"),
        msg("create_snap: own origin", "create_snap 9 9"),
        msg("create_snap: not a number", "create_snap 9 x"),
        msg("delete: no id", "delete"),
        msg("delete: unknown id", "delete 99"),
        msg("delete: not a number", "delete x"),
        msg("set_transaction_id: wrong old", "set_transaction_id 999 1000"),
        msg("set_transaction_id: one argument", "set_transaction_id 2"),
        msg("set_transaction_id: not numbers", "set_transaction_id a b"),
        msg("reserve_metadata_snap: argument", "reserve_metadata_snap 1"),
        msg("release_metadata_snap: none held", "release_metadata_snap"),
        msg("release_metadata_snap: argument", "release_metadata_snap 1"),
        held(msg("reserve_metadata_snap: one held", "reserve_metadata_snap")),
        held(msg("create_thin: id exists, snapshot held", "create_thin 2")),
        held(msg("set_transaction_id: wrong old, snapshot held", "set_transaction_id 0 1")),
        held(case("delete: no volume, snapshot held", json!({"op": "delete", "name": "z"}))),
        held(case("extend: shrink, snapshot held", json!({"op": "extend", "size_bytes": 0}))),
    ]
}

/// Runs a request on the engine API as `thinly`'s `execute` does.
fn offline(pool: &Pool, req: &Value) -> Result<(), PoolError> {
    let s = |k: &str| req[k].as_str().expect("string field").to_string();
    let n = |k: &str| req[k].as_u64().expect("number field");
    match req["op"].as_str().expect("op") {
        "create" => pool.create_volume(&s("name"), n("size_bytes")).map(drop),
        "snapshot" => {
            let ro = req["read_only"].as_bool().unwrap_or(false);
            pool.snapshot(&s("origin"), &s("name"), ro).map(drop)
        }
        "delete" => pool.delete_volume(&s("name")),
        "resize" => pool.resize_volume(&s("name"), n("size_bytes")),
        "extend" => pool.extend(n("size_bytes")),
        "message" => pool.message(&s("text")).map(drop),
        op => panic!("no such op {op}"),
    }
}

/// Everything a refused command must leave alone.
#[derive(Debug, PartialEq)]
struct State {
    metadata: Option<Vec<u8>>,
    pool_json: Vec<u8>,
    journal: Option<Vec<u8>>,
    data_len: u64,
    status: Value,
    list: Value,
}

/// The files' part of the state (status and list left null).
fn files(dir: &Path, metadata: bool) -> State {
    State {
        metadata: metadata.then(|| std::fs::read(dir.join("metadata")).expect("metadata")),
        pool_json: std::fs::read(dir.join("pool.json")).expect("pool.json"),
        journal: std::fs::read(dir.join("pool.log")).ok(),
        data_len: std::fs::metadata(dir.join("data")).expect("data").len(),
        status: Value::Null,
        list: Value::Null,
    }
}

fn offline_state(pool: &Pool, dir: &Path) -> State {
    pool.commit().expect("a commit after the case");
    let list: Vec<Value> = pool
        .list()
        .into_iter()
        .map(|(n, v)| json!({"name": n, "config": v, "status": pool.volume_status(&n).ok()}))
        .collect();
    State {
        status: serde_json::to_value(pool.status()).expect("status"),
        list: Value::Array(list),
        ..files(dir, true)
    }
}

fn make_pool(dir: &Path) -> Pool {
    let settings = PoolSettings { commit_interval_ms: 0, ..PoolSettings::default() };
    let opts = PoolOptions { data_size_bytes: 16 << 20, settings, ..PoolOptions::default() };
    let pool = Pool::create(dir, &opts).expect("create pool");
    let a = pool.create_volume("a", 4 << 20).expect("create a");
    a.write(BS, &vec![0xa5; BS as usize], false).expect("write a");
    pool.snapshot("a", "b", false).expect("snapshot b");
    // The transaction id is the user's (only set_transaction_id moves it), as in dm-thin.
    pool.message("set_transaction_id 0 2").expect("set the transaction id");
    assert_eq!(pool.status().transaction_id, 2, "the table's transaction id");
    pool
}

#[test]
fn every_refused_command_offline_leaves_the_pool_exactly_as_it_was() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    let pool = make_pool(&dir);
    let mut cases = cases();
    cases.sort_by_key(|c| c.held);
    let mut is_held = false;
    for c in &cases {
        if c.held != is_held {
            let m = if c.held { "reserve_metadata_snap" } else { "release_metadata_snap" };
            pool.message(m).expect("toggling the metadata snapshot");
            is_held = c.held;
        }
        let before = offline_state(&pool, &dir);
        let r = offline(&pool, &c.req);
        assert!(r.is_err(), "{}: {} was not refused", c.what, c.req);
        assert_eq!(offline_state(&pool, &dir), before, "{}: {} changed the pool", c.what, c.req);
    }
    if is_held {
        pool.message("release_metadata_snap").expect("release");
    }
    pool.close().expect("close");
    drop(pool);
    let out = common::thinly_run(&["check", dir.join("metadata").to_str().expect("utf-8")]);
    common::ok(&out, "thinly check after the refused commands");
}

/// A `thinly serve` of a pool, stopped (SIGTERM, then kill) when dropped.
struct Served {
    child: Option<Child>,
    dir: PathBuf,
}

impl Served {
    fn start(dir: &Path, log: &Path) -> Served {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(common::thinly())
            .args(["serve", "--pool", dir.to_str().expect("utf-8"), "--listen", "none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn thinly serve");
        let s = Served { child: Some(child), dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(dir.join("control.sock")).is_err() {
            assert!(Instant::now() < deadline, "thinly serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Sends one line, returns the parsed answer.
    fn send(&self, line: &str) -> Value {
        let mut s = UnixStream::connect(self.dir.join("control.sock")).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        s.write_all(format!("{line}\n").as_bytes()).expect("send");
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).expect("answer");
        serde_json::from_str(&answer).expect("JSON answer")
    }

    fn state(&self) -> State {
        let status = self.send(r#"{"op":"status"}"#);
        let list = self.send(r#"{"op":"list"}"#);
        assert_eq!(status["ok"], true, "status: {status}");
        State { status, list, ..files(&self.dir, false) }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let status = child.wait().expect("wait");
        assert!(status.success(), "thinly serve exit: {status}");
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

#[test]
fn every_refused_command_online_leaves_the_served_pool_exactly_as_it_was() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pool");
    make_pool(&dir).close().expect("close");
    let mut served = Served::start(&dir, &tmp.path().join("serve.log"));
    let mut lines: Vec<(String, bool, String)> =
        cases().into_iter().map(|c| (c.what.to_string(), c.held, c.req.to_string())).collect();
    for bad in ["garbage", r#"{"op":"nope"}"#, r#"{"op":"create"}"#, r#"{"op":"delete","name":7}"#]
    {
        lines.push((format!("bad request {bad}"), false, bad.to_string()));
    }
    lines.sort_by_key(|l| l.1);
    let mut is_held = false;
    for (what, want_held, line) in &lines {
        if *want_held != is_held {
            let m = if *want_held { "reserve_metadata_snap" } else { "release_metadata_snap" };
            let r = served.send(&json!({"op": "message", "text": m}).to_string());
            assert_eq!(r["ok"], true, "toggling the metadata snapshot: {r}");
            is_held = *want_held;
        }
        let before = served.state();
        let r = served.send(line);
        assert_eq!(r["ok"], false, "{what}: {line} was not refused: {r}");
        assert_eq!(served.state(), before, "{what}: {line} changed the served pool");
    }
    if is_held {
        let r = served.send(&json!({"op": "message", "text": "release_metadata_snap"}).to_string());
        assert_eq!(r["ok"], true, "release: {r}");
    }
    served.stop();
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    let out = common::thinly_run(&["check", dir.join("metadata").to_str().expect("utf-8")]);
    assert!(out.status.success(), "thinly check after serving\n{log}");
}
