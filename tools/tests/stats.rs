//! `thinly stats` and `thinly serve --metrics` on a served pool: a real NBD client
//! (qemu-io) writes, the CLI's JSON gives the exact figures, and the metrics endpoint's
//! text is read by a real Prometheus-format parser (the prometheus-parse crate). Servers
//! listen on a unix socket and loopback only, stop at the end of their test, and every
//! command is bounded in time.

mod common;

use prometheus_parse::{Scrape, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const K64: u64 = 64 << 10;

use common::bounded;

fn ok(prog: &str, args: &[&str]) -> String {
    let out = bounded(prog, args, 60);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{prog} {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn thinly(args: &[&str]) -> String {
    ok(common::thinly().to_str().unwrap(), args)
}

/// `thinly serve --metrics 127.0.0.1:0` on a new pool; knows the endpoint's address.
struct Served {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    child: Child,
    metrics: String,
}

impl Served {
    fn start() -> Served {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        let args = ["serve", "--pool", dir.to_str().unwrap(), "--create", "--listen", "none"];
        let mut child = Command::new(common::thinly())
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The server's log, line by line, until it names the endpoint (then drained).
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("thinly: metrics on http://") {
                    let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
                }
            }
        });
        let metrics = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("thinly serve did not announce its metrics endpoint");
            }
        };
        let s = Served { _tmp: tmp, dir, child, metrics };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.dir.join("control.sock").exists() || !s.dir.join("nbd.sock").exists() {
            assert!(Instant::now() < deadline, "thinly serve did not create its sockets");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn pool(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///vol0?socket={}", self.dir.join("nbd.sock").display())
    }

    /// One HTTP exchange with the endpoint: (status line, body).
    fn http(&self, request: &str) -> (String, String) {
        let mut s = TcpStream::connect(&self.metrics).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        (head.lines().next().unwrap_or("").to_string(), body.to_string())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stats_json(pool: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["stats", "--json", "--pool", pool];
    args.extend_from_slice(extra);
    serde_json::from_str(&thinly(&args)).unwrap()
}

/// The one sample of `metric` whose labels include every pair of `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Value {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {} samples", found.len());
    found[0].value.clone()
}

fn number(v: Value) -> f64 {
    match v {
        Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => n,
        v => panic!("not a number: {v:?}"),
    }
}

#[test]
fn a_cow_break_shows_exactly_in_thinly_stats_and_in_the_parsed_metrics() {
    let Some(qemu_io) = thinly_test_support::require_tool("qemu-io") else { return };
    let qemu_io = qemu_io.to_str().unwrap().to_string();
    let s = Served::start();
    let uri = s.uri();
    ok(&qemu_io, &["-f", "raw", &uri, "-c", "write -P 1 0 64k", "-c", "flush"]);
    thinly(&["snapshot", "vol0", "snap", "--pool", s.pool()]);
    thinly(&["stats", "--reset", "--pool", s.pool()]);
    ok(&qemu_io, &["-f", "raw", &uri, "-c", "write -P 2 4k 4k"]);

    let j = stats_json(s.pool(), &["vol0"]);
    let v = &j["volumes"]["vol0"];
    assert_eq!(v["write_requests"], 1);
    assert_eq!(v["write_bytes"], 4096);
    assert_eq!(v["cow_breaks"], 1);
    assert_eq!(v["blocks_provisioned"], 1);
    assert_eq!(v["data_written_client_bytes"], 4096);
    assert_eq!(v["data_written_cow_bytes"], K64 - 4096);
    assert_eq!(v["data_written_zeroing_bytes"], 0);
    assert_eq!(j["derived"]["write_amplification"], 16.0);
    assert_eq!(j["latency_us"]["write"]["count"], 1);

    let (status, body) = s.http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let vol0 = [("volume", "vol0")];
    assert_eq!(
        number(value(&scrape, "thinly_volume_data_written_cow_bytes_total", &vol0)),
        61440.0
    );
    assert_eq!(number(value(&scrape, "thinly_cow_breaks_total", &[])), 1.0);
    assert_eq!(number(value(&scrape, "thinly_write_amplification", &[])), 16.0);
    assert_eq!(
        number(value(&scrape, "thinly_volume_cow_breaks_total", &[("volume", "snap")])),
        0.0
    );
    let write = [("op", "write")];
    match value(&scrape, "thinly_request_latency_seconds", &write) {
        Value::Summary(q) => {
            let quantiles: Vec<f64> = q.iter().map(|c| c.quantile).collect();
            assert_eq!(quantiles, [0.5, 0.9, 0.99, 0.999]);
            assert!(q.iter().all(|c| c.count > 0.0), "{q:?}");
        }
        v => panic!("latency is not a summary: {v:?}"),
    }
    assert_eq!(number(value(&scrape, "thinly_request_latency_seconds_count", &write)), 1.0);
    // Every family is documented, and every line is a comment or a sample the parser took.
    for sample in &scrape.samples {
        let family = sample.metric.trim_end_matches("_sum").trim_end_matches("_count");
        assert!(scrape.docs.contains_key(family), "no HELP for {}", sample.metric);
    }
    let lines = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let quantile_lines = body.lines().filter(|l| l.contains("quantile=")).count();
    let summaries = scrape.samples.iter().filter(|s| matches!(s.value, Value::Summary(_))).count();
    assert_eq!(lines, scrape.samples.len() - summaries + quantile_lines);

    assert_eq!(s.http("GET /other HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(s.http("POST /metrics HTTP/1.1\r\n\r\n").0, "HTTP/1.1 405 Method Not Allowed");
}

#[test]
fn stats_watch_reports_count_times_reset_zeroes_and_an_unknown_volume_is_refused() {
    let s = Served::start();
    let out = thinly(&["stats", "--json", "--watch", "0.05", "--count", "3", "--pool", s.pool()]);
    let reports: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| r["pool"]["commits_management"].is_u64()));
    let text = thinly(&["stats", "--pool", s.pool()]);
    assert!(text.starts_with("pool: "), "{text}");
    assert!(text.contains("write amplification"), "{text}");
    let before = stats_json(s.pool(), &["--reset"]);
    assert!(before["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(before["pool"]["commits_management"], 1, "creating vol0 at the start");
    let after = stats_json(s.pool(), &[]);
    assert!(after["pool"].as_object().unwrap().values().all(|n| n == 0), "{after}");
    let out =
        bounded(common::thinly().to_str().unwrap(), &["stats", "--pool", s.pool(), "nosuch"], 60);
    assert!(!out.status.success(), "stats of a missing volume succeeded");
}
