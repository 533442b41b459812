//! fio's nbd engine: one job per run, one connection. Every run is written as a job file
//! and its JSON output kept (`raw/NNNNN-….fio` / `.json` under the output directory), so
//! a reader can rerun exactly what was measured and re-read every figure fio printed. A
//! `Job` is either time-based (ramp, then `runtime` measured), one pass over its region
//! (first writes, fills) capped in time, or the replay of a trace (fio iolog). Random
//! offsets come from one fixed seed (`randseed`), so every engine and round sees the same
//! sequence.

use super::env;
use super::limits;
use super::results::IoSample;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// When a write case's data is made durable, and whether that is inside the timed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// No flush inside the run: the harness flushes after it, untimed.
    Untimed,
    /// fio's `fsync=N`: a FLUSH after every N writes, timed.
    EveryN(u32),
    /// fio's `end_fsync=1`: one FLUSH at the end of the run, timed.
    AtEnd,
    /// A trace: its own flushes (`sync` lines) are replayed and timed.
    InTrace,
}

impl Flush {
    /// The words of the tables' "flush" column.
    pub fn label(self) -> String {
        match self {
            Flush::Untimed => "untimed (after the run)".into(),
            Flush::EveryN(n) => format!("timed: fsync={n}"),
            Flush::AtEnd => "timed: end_fsync=1".into(),
            Flush::InTrace => "timed: the trace's own flushes".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    /// fio's rw=: randread, randwrite, read, write, or "write:60k" (sequential with holes).
    pub rw: String,
    pub bs_bytes: u64,
    pub iodepth: u32,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    /// Time-based (loops over the region for `runtime` after `ramp`), or one pass over
    /// the region that stops early at `runtime`.
    pub time_based: bool,
    pub ramp: Duration,
    pub runtime: Duration,
    /// Write cases: when the data is flushed (reads: ignored).
    pub flush: Flush,
    /// Replay this fio iolog instead of generating I/O (rw, bs, offset, size unused).
    pub iolog: Option<PathBuf>,
    /// fio's `randseed`: the same offsets for every engine and round.
    pub seed: u64,
    /// fio's `number_ios`: stop after this many I/Os (0: no limit).
    pub max_ios: u64,
}

impl Job {
    /// A time-based run: `ramp` of warm-up, then `runtime` measured.
    pub fn timed(
        rw: &str,
        bs: u64,
        qd: u32,
        off: u64,
        size: u64,
        ramp: Duration,
        runtime: Duration,
    ) -> Job {
        Job {
            rw: rw.into(),
            bs_bytes: bs,
            iodepth: qd,
            offset_bytes: off,
            size_bytes: size,
            time_based: true,
            ramp,
            runtime,
            flush: Flush::Untimed,
            iolog: None,
            seed: DEFAULT_SEED,
            max_ios: 0,
        }
    }

    /// One pass over the region (every block once), stopped after `cap` if not done.
    pub fn pass(rw: &str, bs: u64, qd: u32, off: u64, size: u64, cap: Duration) -> Job {
        Job {
            rw: rw.into(),
            bs_bytes: bs,
            iodepth: qd,
            offset_bytes: off,
            size_bytes: size,
            time_based: false,
            ramp: Duration::ZERO,
            runtime: cap,
            flush: Flush::Untimed,
            iolog: None,
            seed: DEFAULT_SEED,
            max_ios: 0,
        }
    }

    /// Replays the fio iolog `trace` once, as fast as the engine answers (capped at `cap`
    /// and, unless 0, at `max_ios` I/Os).
    pub fn replay(trace: &Path, cap: Duration, max_ios: u64) -> Job {
        let mut j = Job::pass("randrw", 4096, 1, 0, 0, cap);
        j.max_ios = max_ios;
        j.iolog = Some(trace.to_path_buf());
        j.flush = Flush::InTrace;
        j
    }

    /// The same job with its flush timed as `flush`.
    pub fn with_flush(mut self, flush: Flush) -> Job {
        self.flush = flush;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Job {
        self.seed = seed;
        self
    }

    /// Which figures are the headline: reads, writes, or (a trace) both.
    fn direction(&self) -> Direction {
        if self.iolog.is_some() {
            Direction::Both
        } else if self.rw.contains("read") {
            Direction::Read
        } else {
            Direction::Write
        }
    }

    /// Does this job write (so its flush matters)?
    pub fn writes(&self) -> bool {
        self.iolog.is_some() || self.rw.contains("write")
    }

    /// The job file: what fio runs, kept beside its JSON output.
    pub fn job_file(&self, uri: &str) -> String {
        let mut a = vec![
            "[bench]".to_string(),
            "ioengine=nbd".to_string(),
            format!("uri={uri}"),
            format!("iodepth={}", self.iodepth),
            "lat_percentiles=1".to_string(),
            format!("randseed={}", self.seed),
            format!("runtime={}ms", self.runtime.as_millis().max(1)),
        ];
        match &self.iolog {
            Some(trace) => {
                a.push(format!("read_iolog={}", trace.display()));
                a.push("replay_no_stall=1".into());
            }
            None => {
                a.push(format!("rw={}", self.rw));
                a.push(format!("bs={}", self.bs_bytes));
                a.push(format!("offset={}", self.offset_bytes));
                a.push(format!("size={}", self.size_bytes));
            }
        }
        if self.time_based {
            a.push("time_based=1".into());
        }
        if self.max_ios > 0 {
            a.push(format!("number_ios={}", self.max_ios));
        }
        if !self.ramp.is_zero() {
            a.push(format!("ramp_time={}ms", self.ramp.as_millis()));
        }
        match self.flush {
            Flush::Untimed | Flush::InTrace => {}
            Flush::EveryN(n) => a.push(format!("fsync={n}")),
            Flush::AtEnd => a.push("end_fsync=1".into()),
        }
        let mut text = a.join("\n");
        text.push('\n');
        text
    }

    fn time_limit(&self) -> Duration {
        self.ramp + self.runtime + limits::FIO_SLACK
    }
}

/// fio's `randseed` unless the configuration names another.
pub const DEFAULT_SEED: u64 = 0x7468_696e_6c79;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
    Both,
}

/// Runs `job` against `uri`, with its job file and JSON output kept as `raw.fio` and
/// `raw.json` (`raw` is a path stem); returns its figures and the command line.
/// With `home`, HOME is set for fio: libnbd takes a TLS client's certificates from
/// `$HOME/.pki/libnbd` (fio's nbd engine does not let a URI name a local file).
pub fn run(
    fio: &Path,
    job: &Job,
    uri: &str,
    raw: &Path,
    home: Option<&Path>,
) -> Result<(IoSample, String)> {
    let job_path = raw.with_extension("fio");
    let json_path = raw.with_extension("json");
    if let Some(dir) = raw.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&job_path, job.job_file(uri))
        .with_context(|| format!("writing {}", job_path.display()))?;
    let args = vec![
        "--output-format=json".to_string(),
        format!("--output={}", json_path.display()),
        job_path.display().to_string(),
    ];
    let mut shown = command_line(fio, &args);
    let mut cmd = Command::new(fio);
    cmd.args(&args);
    if let Some(h) = home {
        cmd.env("HOME", h);
        shown = format!("HOME={} {shown}", h.display());
    }
    let out = env::run_bounded(&mut cmd, job.time_limit())?;
    let json = std::fs::read_to_string(&json_path).unwrap_or_default();
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}\n{}",
            out.status,
            env::tail(&json),
            env::tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let mut sample = parse(&json, job.direction())
        .with_context(|| format!("parsing {} (from {shown})", json_path.display()))?;
    sample.seed = Some(job.seed);
    Ok((sample, shown))
}

/// The figures of fio's JSON output. fio may print notes before the JSON ("fio: …"), so
/// parsing starts at the first '{'. A trace (`Both`) counts reads and writes together;
/// its latencies are those of the direction with more I/Os.
fn parse(stdout: &str, dir: Direction) -> Result<IoSample> {
    let start = stdout.find('{').context("fio printed no JSON")?;
    let v: Value = serde_json::from_str(&stdout[start..]).context("fio's JSON does not parse")?;
    let job = v["jobs"].get(0).context("fio's JSON has no jobs")?;
    if let Some(e) = job["error"].as_i64().filter(|e| *e != 0) {
        bail!("fio reported error {e}");
    }
    let num =
        |v: &Value, what: &str| v.as_f64().with_context(|| format!("fio's JSON has no {what}"));
    let ios = |d: &str| job[d]["total_ios"].as_f64().unwrap_or(0.0);
    let (main, total_ios, iops, bw) = match dir {
        Direction::Read | Direction::Write => {
            let d = if dir == Direction::Read { "read" } else { "write" };
            (
                d,
                num(&job[d]["total_ios"], "total_ios")?,
                num(&job[d]["iops"], "iops")?,
                num(&job[d]["bw_bytes"], "bw_bytes")?,
            )
        }
        Direction::Both => {
            let main = if ios("read") >= ios("write") { "read" } else { "write" };
            let sum = |k: &str| {
                job["read"][k].as_f64().unwrap_or(0.0) + job["write"][k].as_f64().unwrap_or(0.0)
            };
            (main, ios("read") + ios("write"), sum("iops"), sum("bw_bytes"))
        }
    };
    if total_ios <= 0.0 {
        bail!("fio did no I/O");
    }
    let d = &job[main];
    let lat = if d["lat_ns"]["percentile"].is_object() { &d["lat_ns"] } else { &d["clat_ns"] };
    let pct = |k: &str, what: &str| num(&lat["percentile"][k], what).map(|ns| ns / 1000.0);
    Ok(IoSample {
        iops,
        mib_s: bw / (1u64 << 20) as f64,
        lat_p50_us: pct("50.000000", "a p50 latency")?,
        lat_p90_us: pct("90.000000", "a p90 latency").ok(),
        lat_p99_us: pct("99.000000", "a p99 latency")?,
        lat_p999_us: pct("99.900000", "a p99.9 latency").ok(),
        lat_max_us: lat["max"].as_f64().map(|ns| ns / 1000.0),
        total_ios: Some(total_ios as u64),
        write_bytes: job["write"]["io_bytes"].as_u64().unwrap_or(0),
        server_cpu_us_per_io: None,
        seed: None,
        raw: None,
    })
}

/// A command line as a shell would take it back.
pub fn command_line(prog: &Path, args: &[String]) -> String {
    let mut s = prog.display().to_string();
    for a in args {
        s.push(' ');
        if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,+".contains(c)) {
            s.push_str(a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json_after_a_note_parses_into_figures() {
        let out = r#"fio: Any use of blockalign= turns off randommap
{"jobs":[{"error":0,"read":{"total_ios":10,"iops":1000.5,"bw_bytes":4194304,
"lat_ns":{"percentile":{"50.000000":2000,"99.000000":9000}}},"write":{"io_bytes":0}}]}"#;
        let s = parse(out, Direction::Read).expect("parses");
        assert_eq!(s.iops, 1000.5);
        assert_eq!(s.mib_s, 4.0);
        assert_eq!(s.lat_p50_us, 2.0);
        assert_eq!(s.lat_p99_us, 9.0);
        assert_eq!((s.lat_p90_us, s.lat_p999_us, s.lat_max_us), (None, None, None));
        assert_eq!(s.total_ios, Some(10));
    }

    #[test]
    fn fio_output_without_io_or_json_is_an_error() {
        assert!(parse("fio: nothing", Direction::Read).is_err());
        let none = r#"{"jobs":[{"error":0,"read":{"total_ios":0}}]}"#;
        assert!(parse(none, Direction::Read).is_err());
    }

    #[test]
    fn a_trace_counts_reads_and_writes_and_takes_the_busier_directions_tail() {
        let out = r#"{"jobs":[{"error":0,
"read":{"total_ios":30,"iops":300,"bw_bytes":1048576,"lat_ns":{"max":80000,"percentile":{"50.000000":1000,"90.000000":3000,"99.000000":5000,"99.900000":7000}}},
"write":{"total_ios":10,"iops":100,"bw_bytes":1048576,"io_bytes":40960,"lat_ns":{"max":1,"percentile":{"50.000000":1,"99.000000":1}}}}]}"#;
        let s = parse(out, Direction::Both).expect("parses");
        assert_eq!((s.iops, s.mib_s, s.total_ios), (400.0, 2.0, Some(40)));
        assert_eq!((s.lat_p50_us, s.lat_p90_us, s.lat_p99_us), (1.0, Some(3.0), 5.0));
        assert_eq!((s.lat_p999_us, s.lat_max_us, s.write_bytes), (Some(7.0), Some(80.0), 40960));
    }

    #[test]
    fn a_job_file_states_its_seed_and_its_timed_flush() {
        let j =
            Job::timed("randwrite", 4096, 1, 0, 1 << 20, Duration::ZERO, Duration::from_secs(1))
                .with_flush(Flush::EveryN(1))
                .with_seed(42);
        let text = j.job_file("nbd+unix:///vol?socket=/tmp/s");
        for line in ["ioengine=nbd", "rw=randwrite", "randseed=42", "fsync=1", "time_based=1"] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        let end = Job::pass("write", 1 << 20, 8, 0, 1 << 20, Duration::from_secs(1))
            .with_flush(Flush::AtEnd);
        assert!(end.job_file("u").lines().any(|l| l == "end_fsync=1"));
        assert!(!end.job_file("u").contains("time_based"));
        let r = Job::replay(Path::new("/t/a.iolog"), Duration::from_secs(1), 5).job_file("u");
        assert!(r.contains("read_iolog=/t/a.iolog") && !r.contains("rw="));
        assert!(r.lines().any(|l| l == "number_ios=5"));
    }
}
