//! `thinly bench --quick`: the harness's smoke test. It runs every suite with tiny sizes
//! against every engine and checks that the outputs exist and parse (JSON, CSV by the csv
//! crate, raw fio files, config.toml, SVG), that each engine produced numbers, and that
//! `thinly bench compare` reads the run back. No timing assertions. A missing peer (qemu-nbd, qemu-img, nbdkit)
//! skips that engine loudly, or fails the test when `CI` is set.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENGINES: [&str; 7] = [
    "thinly",
    "thinly null export (thinly's transport ceiling)",
    "qemu-nbd raw",
    "qemu-nbd qcow2",
    "qemu-storage-daemon qcow2",
    "nbdkit file",
    "nbdkit null (a peer's transport, no storage)",
];
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
    for suite in ["basic", "depth", "cow", "snapshots", "sweep", "trace", "tls"] {
        assert!(
            rows.iter().any(|r| r["suite"] == suite && r["engine"] == "thinly" && has_numbers(r)),
            "thinly produced no numbers in suite {suite}"
        );
    }

    let mut csv = csv::Reader::from_path(out.join("results.csv")).expect("results.csv exists");
    let header = csv.headers().expect("results.csv has a header").clone();
    assert_eq!(header.get(0), Some("suite"));
    assert!(header.iter().any(|h| h == "ratio_ci_lo") && header.iter().any(|h| h == "lat_p999_us"));
    let records: Vec<_> = csv.records().collect::<Result<_, _>>().expect("results.csv parses");
    assert_eq!(records.len(), rows.len(), "one CSV record per row");

    // Every fio run kept its job file and JSON output, and rows point at them.
    let raw = rows
        .iter()
        .flat_map(|r| r["io"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["raw"].as_str().map(String::from))
        .collect::<Vec<_>>();
    assert!(!raw.is_empty(), "samples name their raw files");
    for stem in raw.iter().take(20) {
        let json = std::fs::read_to_string(out.join(format!("{stem}.json"))).expect("raw JSON");
        assert!(json.contains("\"jobs\""), "{stem}.json is fio's JSON");
        assert!(out.join(format!("{stem}.fio")).exists(), "{stem}.fio exists");
    }
    assert!(!v["git_commit"].as_str().unwrap_or("").is_empty(), "the git commit is recorded");
    assert!(v["config"]["pool"]["block_size_bytes"].as_u64().is_some(), "pool settings recorded");
    assert!(out.join("config.toml").exists(), "the effective settings are written");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains('\u{1b}'), "no progress bar when stderr is not a terminal");

    // compare: the run against itself, every row present, none better or worse.
    let cmp = common::thinly_run(&["bench", "compare", common::s(&out), common::s(&out)]);
    common::ok(&cmp, "thinly bench compare");
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert!(table.lines().filter(|l| l.starts_with("| ")).count() > rows.len());
    assert!(!table.contains("| better |") && !table.contains("| worse |"));

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

#[test]
fn a_config_file_with_an_unknown_setting_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let cfg = tmp.path().join("bench.toml");
    std::fs::write(&cfg, "repeats = 3\n").expect("writing the config");
    let out = tmp.path().join("out");
    let r = common::thinly_run(&["bench", "--config", common::s(&cfg), "--out", common::s(&out)]);
    assert!(!r.status.success(), "an unknown key is an error");
    assert!(!out.join("results.json").exists(), "nothing ran");
}
