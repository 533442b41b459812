//! `thinly bench --quick`: the harness's smoke test. It runs every suite with tiny sizes
//! against every engine and checks that the outputs exist and parse and that each engine
//! produced numbers. No timing assertions. A missing peer (qemu-nbd, qemu-img, nbdkit)
//! skips that engine loudly, or fails the test when `CI` is set.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENGINES: [&str; 5] =
    ["thinly", "qemu-nbd raw", "qemu-nbd qcow2", "nbdkit file", "nbdkit null (ceiling)"];
/// `--quick` is meant to finish in under 2 minutes; a debug build gets more room.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs `thinly bench --quick --out OUT`, killing it past `LIMIT`.
fn run_quick_bench(out: &Path) -> std::process::Output {
    let mut child = Command::new(common::thinly())
        .args(["bench", "--quick", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting thinly bench");
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().expect("waiting for thinly bench").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("thinly bench --quick took longer than {} s", LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("collecting thinly bench's output")
}

fn has_numbers(row: &serde_json::Value) -> bool {
    let io = row["io"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x["iops"].as_f64().is_some_and(|v| v > 0.0)));
    let ms = row["time_ms"].as_array().is_some_and(|s| !s.is_empty());
    io || ms
}

#[test]
fn quick_bench_writes_parseable_tables_csv_json_and_plots_with_numbers_from_every_engine() {
    if !common::have_tools(&["fio"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let out = tmp.path().join("bench-out");
    let result = run_quick_bench(&out);
    common::ok(&result, "thinly bench --quick");

    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json exists");
    let v: serde_json::Value = serde_json::from_str(&json).expect("results.json parses");
    for key in ["machine", "tools", "config", "servers"] {
        assert!(!v[key].is_null(), "results.json records {key}");
    }
    let rows = v["rows"].as_array().expect("results.json has rows");
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .expect("results.json has skipped")
        .iter()
        .filter_map(|s| s[0].as_str())
        .collect();
    for engine in ENGINES {
        if skipped.contains(&engine) {
            common::missing(engine);
            continue;
        }
        assert!(
            rows.iter().any(|r| r["engine"] == engine && has_numbers(r)),
            "{engine} produced no numbers"
        );
    }
    for suite in ["basic", "depth", "cow", "snapshots"] {
        assert!(
            rows.iter().any(|r| r["suite"] == suite && r["engine"] == "thinly" && has_numbers(r)),
            "thinly produced no numbers in suite {suite}"
        );
    }

    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv exists");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("results.csv has a header").split(',').collect();
    assert_eq!(header.first(), Some(&"suite"));
    assert_eq!(lines.count(), rows.len(), "one CSV line per row");

    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md exists");
    assert!(md.contains("## Tables") && md.contains("| thinly |"), "results.md has the tables");
    assert!(md.contains("## Targets"), "results.md has the targets");

    let svgs: Vec<_> = std::fs::read_dir(&out)
        .expect("listing the output")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "svg"))
        .collect();
    assert!(!svgs.is_empty(), "plots were written");
    for s in svgs {
        let text = std::fs::read_to_string(s.path()).expect("reading a plot");
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    }
}
